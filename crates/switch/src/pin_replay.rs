//! Encrypted PIN blocks a terminal sent lately, with the card each came with.
//!
//! A format-0 PIN block is the PIN xor the card number, and the host decodes it against the
//! card number the request names. Someone able to send MACed requests (malware in a POS
//! application, which sees field 52 and can ask the terminal for MACs) can resend one captured
//! block with the card number changed a digit at a time: whether the host answers 99 (the
//! block does not decode) or goes on to the issuer tells them whether that PIN digit xor the
//! change is above 9, and a few dozen requests narrow the PIN to a handful of values. A block
//! is only ever the cardholder's for one card: the same encrypted block with another card is
//! refused before it is decoded, so such probing learns nothing. A new sign-in brings a new
//! PIK, under which no captured block decodes; a terminal's memory starts again with it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use paycrypto::KeyHandle;

/// Blocks remembered per terminal: a captured block is probed within minutes of its capture.
pub const BLOCKS_PER_TERMINAL: usize = 64;

#[derive(Default)]
struct Seen {
    pik: Option<KeyHandle>,
    /// (block key, card key), oldest first.
    blocks: VecDeque<(u64, u64)>,
}

/// What each terminal's recent PIN blocks came with. About 1 KB per terminal that sends PINs.
pub struct PinBlocks {
    terminals: Mutex<HashMap<String, Seen>>,
    hasher: RandomState,
}

impl Default for PinBlocks {
    fn default() -> Self {
        PinBlocks {
            terminals: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }
}

impl PinBlocks {
    /// Records that terminal `tid` sent encrypted `block` under `pik` with the card whose
    /// fingerprint is `card`; `false` if it sent the same block under the same PIK with another
    /// card (then nothing is recorded).
    pub fn admit(&self, tid: &str, pik: KeyHandle, block: &[u8], card: &[u8]) -> bool {
        let block_key = self.hasher.hash_one(block);
        let card_key = self.hasher.hash_one(card);
        let mut terminals = self
            .terminals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seen = terminals.entry(tid.to_owned()).or_default();
        if seen.pik != Some(pik) {
            seen.pik = Some(pik);
            seen.blocks.clear();
        }
        match seen.blocks.iter().find(|(b, _)| *b == block_key) {
            Some(&(_, with)) => with == card_key,
            None => {
                if seen.blocks.len() == BLOCKS_PER_TERMINAL {
                    seen.blocks.pop_front();
                }
                seen.blocks.push_back((block_key, card_key));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_comes_with_one_card_until_the_terminal_signs_in_again() {
        let seen = PinBlocks::default();
        let (pik, next_pik) = (KeyHandle::from_raw(1), KeyHandle::from_raw(2));
        assert!(seen.admit("T1", pik, b"block-a", b"card-1"));
        // The same card again (a retry, a second purchase with the same PIN): fine.
        assert!(seen.admit("T1", pik, b"block-a", b"card-1"));
        assert!(!seen.admit("T1", pik, b"block-a", b"card-2"));
        // Another terminal's memory is its own.
        assert!(seen.admit("T2", pik, b"block-a", b"card-2"));
        // A new PIK: the old blocks mean nothing under it.
        assert!(seen.admit("T1", next_pik, b"block-a", b"card-2"));
        assert!(!seen.admit("T1", next_pik, b"block-a", b"card-1"));
    }

    #[test]
    fn a_terminal_remembers_its_latest_blocks_only() {
        let seen = PinBlocks::default();
        let pik = KeyHandle::from_raw(1);
        assert!(seen.admit("T1", pik, b"first", b"card-1"));
        for n in 0..BLOCKS_PER_TERMINAL {
            assert!(seen.admit("T1", pik, format!("b{n}").as_bytes(), b"card-1"));
        }
        // Pushed out by the later ones.
        assert!(seen.admit("T1", pik, b"first", b"card-2"));
    }
}
