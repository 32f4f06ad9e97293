//! Encrypted PIN blocks a terminal sent lately, with the card each came with.
//!
//! A format-0 PIN block is the PIN xor the card number, and the host decodes it against the
//! card number the request names. Someone able to send MACed requests (malware in a POS
//! application, which sees field 52 and can ask the terminal for MACs) can resend one captured
//! block with the card number changed a digit at a time: whether the host answers 99 (the
//! block does not decode) or goes on to the issuer tells them whether that PIN digit xor the
//! change is above 9, and a few dozen requests narrow the PIN to a handful of values. A block
//! is only ever the cardholder's for one card: the same encrypted block with another card is
//! refused before it is decoded. The memory is bounded (the latest blocks per terminal, on
//! each node), so a prober could push a block out with other requests first: a terminal's
//! PIN blocks that do not decode are also counted, and after [`FORMAT_FAILURES_MAX`] under one
//! PIK every PIN block is refused until it signs in again (99, told to sign in). A new sign-in
//! brings a new PIK, under which no captured block decodes; a terminal's memory starts again
//! with it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use paycrypto::KeyHandle;

/// Blocks remembered per terminal: a captured block is probed within minutes of its capture.
pub const BLOCKS_PER_TERMINAL: usize = 64;
/// PIN blocks that did not decode (answered 99) under one PIK before the terminal's PIN blocks
/// are refused until it signs in again: a PIN pad out of step with its keys fails every one
/// at once, and a prober learns little from so few.
pub const FORMAT_FAILURES_MAX: u32 = 5;

#[derive(Default)]
struct Seen {
    pik: Option<KeyHandle>,
    /// (block key, card key), oldest first.
    blocks: VecDeque<(u64, u64)>,
    /// PIN blocks that did not decode under `pik`.
    format_failures: u32,
    /// PIN blocks admitted and not yet settled (`settled`): counted as failures until they
    /// are, so requests sent at once on several connections cannot all pass the limit.
    in_flight: u32,
}

/// Whether a PIN block may be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Sent before by this terminal, under this PIK, with another card.
    Replayed,
    /// This terminal's PIN blocks failed to decode [`FORMAT_FAILURES_MAX`] times under this
    /// PIK: refused until it signs in again.
    Exhausted,
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
    /// fingerprint is `card`, if it may be decoded: not if it sent the same block under the
    /// same PIK with another card, nor once its blocks failed to decode too often under it
    /// (then nothing is recorded).
    pub fn admit(&self, tid: &str, pik: KeyHandle, block: &[u8], card: &[u8]) -> Admission {
        let block_key = self.hasher.hash_one(block);
        let card_key = self.hasher.hash_one(card);
        let mut terminals = self.lock();
        // The terminal's name is copied only the first time: this is on every PIN request.
        if !terminals.contains_key(tid) {
            terminals.insert(tid.to_owned(), Seen::default());
        }
        let Some(seen) = terminals.get_mut(tid) else {
            return Admission::Admitted;
        };
        if seen.pik != Some(pik) {
            *seen = Seen {
                pik: Some(pik),
                ..Seen::default()
            };
        }
        if seen.format_failures.saturating_add(seen.in_flight) >= FORMAT_FAILURES_MAX {
            return Admission::Exhausted;
        }
        let admitted = match seen.blocks.iter().find(|(b, _)| *b == block_key) {
            Some(&(_, with)) if with == card_key => Admission::Admitted,
            Some(_) => Admission::Replayed,
            None => {
                if seen.blocks.len() == BLOCKS_PER_TERMINAL {
                    seen.blocks.pop_front();
                }
                seen.blocks.push_back((block_key, card_key));
                Admission::Admitted
            }
        };
        if admitted == Admission::Admitted {
            seen.in_flight = seen.in_flight.saturating_add(1);
        }
        admitted
    }

    /// What became of a PIN block [`Self::admit`] admitted (or refused) for terminal `tid`
    /// under `pik`: `decoded`, or it did not decode (or was refused), which counts.
    pub fn settled(&self, tid: &str, pik: KeyHandle, admitted: bool, decoded: bool) {
        let mut terminals = self.lock();
        if let Some(seen) = terminals.get_mut(tid).filter(|s| s.pik == Some(pik)) {
            if admitted {
                seen.in_flight = seen.in_flight.saturating_sub(1);
            }
            if !decoded {
                seen.format_failures = seen.format_failures.saturating_add(1);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.terminals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_comes_with_one_card_until_the_terminal_signs_in_again() {
        let seen = PinBlocks::default();
        let (pik, next_pik) = (KeyHandle::from_raw(1), KeyHandle::from_raw(2));
        let admit = |tid, pik, block: &[u8], card: &[u8]| seen.admit(tid, pik, block, card);
        assert_eq!(admit("T1", pik, b"block-a", b"card-1"), Admission::Admitted);
        // The same card again (a retry, a second purchase with the same PIN): fine.
        assert_eq!(admit("T1", pik, b"block-a", b"card-1"), Admission::Admitted);
        assert_eq!(admit("T1", pik, b"block-a", b"card-2"), Admission::Replayed);
        // Another terminal's memory is its own.
        assert_eq!(admit("T2", pik, b"block-a", b"card-2"), Admission::Admitted);
        // A new PIK: the old blocks mean nothing under it.
        assert_eq!(
            admit("T1", next_pik, b"block-a", b"card-2"),
            Admission::Admitted
        );
        assert_eq!(
            admit("T1", next_pik, b"block-a", b"card-1"),
            Admission::Replayed
        );
    }

    #[test]
    fn a_terminal_remembers_its_latest_blocks_only() {
        let seen = PinBlocks::default();
        let pik = KeyHandle::from_raw(1);
        assert_eq!(
            seen.admit("T1", pik, b"first", b"card-1"),
            Admission::Admitted
        );
        seen.settled("T1", pik, true, true);
        for n in 0..BLOCKS_PER_TERMINAL {
            let block = format!("b{n}");
            assert_eq!(
                seen.admit("T1", pik, block.as_bytes(), b"card-1"),
                Admission::Admitted
            );
            seen.settled("T1", pik, true, true);
        }
        // Pushed out by the later ones.
        assert_eq!(
            seen.admit("T1", pik, b"first", b"card-2"),
            Admission::Admitted
        );
    }

    #[test]
    fn blocks_that_fail_too_often_stop_pin_requests_until_a_new_sign_in() {
        let seen = PinBlocks::default();
        let (pik, next_pik) = (KeyHandle::from_raw(1), KeyHandle::from_raw(2));
        for n in 0..FORMAT_FAILURES_MAX {
            let block = format!("bad{n}");
            assert_eq!(
                seen.admit("T1", pik, block.as_bytes(), b"card-1"),
                Admission::Admitted
            );
            seen.settled("T1", pik, true, false);
        }
        assert_eq!(
            seen.admit("T1", pik, b"good", b"card-1"),
            Admission::Exhausted
        );
        // Another terminal is not held up; the same one is once it has signed in again.
        assert_eq!(
            seen.admit("T2", pik, b"good", b"card-1"),
            Admission::Admitted
        );
        assert_eq!(
            seen.admit("T1", next_pik, b"good", b"card-1"),
            Admission::Admitted
        );
    }
}
