//! Where key material and nonces come from: the operating system in production, a seeded
//! generator in simulations so a whole run can be replayed.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroize;

/// The source of randomness failed; nothing was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the random number source failed")]
pub struct RandomError;

/// Fills buffers with unpredictable bytes. Object-safe so an HSM can hold `Box<dyn RandomSource>`.
pub trait RandomSource: Send + Sync {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's generator (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(dest).map_err(|_| RandomError)
    }
}

/// Reproducible bytes from a seed: SHA-256(seed ‖ counter) blocks. For simulations and tests only —
/// anyone who knows the seed knows every key it produced, and a SoftHsm restarted with the same
/// seed and master key would repeat AES-GCM nonces.
pub struct DeterministicRandom {
    state: Mutex<SeededState>,
}

struct SeededState {
    seed: [u8; 32],
    counter: u64,
}

impl Drop for SeededState {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl DeterministicRandom {
    pub fn new(seed: u64) -> Self {
        let seed: [u8; 32] = Sha256::digest(seed.to_be_bytes()).into();
        Self {
            state: Mutex::new(SeededState { seed, counter: 0 }),
        }
    }
}

impl RandomSource for DeterministicRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        // A poisoned lock only means another thread panicked mid-call; the state is two plain
        // integers that are always consistent, so carrying on is safe.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for chunk in dest.chunks_mut(32) {
            let mut hasher = Sha256::new();
            hasher.update(state.seed);
            hasher.update(state.counter.to_be_bytes());
            state.counter = state.counter.wrapping_add(1);
            let mut block: [u8; 32] = hasher.finalize().into();
            for (d, s) in chunk.iter_mut().zip(block.iter()) {
                *d = *s;
            }
            block.zeroize();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_source_is_reproducible_and_seed_dependent() {
        let (a, b, c) = (
            DeterministicRandom::new(7),
            DeterministicRandom::new(7),
            DeterministicRandom::new(8),
        );
        let (mut x, mut y, mut z) = ([0u8; 40], [0u8; 40], [0u8; 40]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
        a.fill(&mut y).unwrap();
        assert_ne!(x, y, "the stream advances");
    }

    #[test]
    fn os_source_fills() {
        let mut x = [0u8; 32];
        OsRandom.fill(&mut x).unwrap();
        assert_ne!(x, [0u8; 32]);
    }
}
