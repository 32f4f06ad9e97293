//! Field 64 MACs over a message's bytes (MTI through the last field before 64), zero-padded:
//! "CUP ECB", ANSI X9.19 retail MAC (X9.9 with a single-length key) and an SM4 fold.
//! Every function works on the caller's slice with fixed-size stack buffers: no allocation.
//!
//! Exact definitions, since hosts differ:
//! - **CUP ECB**: zero-pad to a multiple of 8; XOR all 8-byte blocks; write the result as 16
//!   upper-case ASCII hex characters; encrypt the first 8 characters with the MAK (DES or TDES by
//!   key length); XOR with the last 8 characters; encrypt again; write as 16 upper-case hex
//!   characters; the MAC is the first 8 characters, as 8 ASCII bytes.
//! - **X9.19**: CBC-MAC with single DES under K1 over every block, the last block finished with
//!   the whole key (E K1 · D K2 · E K1, i.e. TDES; K3 for a triple-length key). A single-length
//!   key makes it plain CBC-MAC, which is ANSI X9.9. The MAC is the 8-byte result.
//! - **SM4** (our choice among the "SM4 fold" variants — CUP ECB carried over to 16-byte blocks):
//!   zero-pad to a multiple of 16; XOR all 16-byte blocks; 32 upper-case hex characters; SM4 the
//!   first 16; XOR with the last 16; SM4 again; 32 hex characters; the MAC is the first 8, as
//!   8 ASCII bytes.
//!
//! Empty input counts as one block of zeros in all three.

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::ct::ct_eq;
use crate::hex;
use crate::key::{DesKey, Key, KeyAlgorithm, Sm4Key};

/// Field 64 length.
pub const MAC_LEN: usize = 8;

/// Which MAC a terminal uses (configured per terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    CupEcb,
    X919,
    Sm4,
}

impl MacAlgorithm {
    pub const ALL: [Self; 3] = [Self::CupEcb, Self::X919, Self::Sm4];

    /// The name used in configuration and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CupEcb => "cup-ecb",
            Self::X919 => "x919",
            Self::Sm4 => "sm4",
        }
    }

    /// The key family the MAK must belong to.
    pub const fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::CupEcb | Self::X919 => KeyAlgorithm::Des,
            Self::Sm4 => KeyAlgorithm::Sm4,
        }
    }
}

impl fmt::Display for MacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MacAlgorithm {
    type Err = MacError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(text))
            .ok_or(MacError::UnknownAlgorithm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MacError {
    #[error("unknown MAC algorithm (expected cup-ecb, x919 or sm4)")]
    UnknownAlgorithm,
    #[error("the {algorithm} MAC needs a {expected} key, this is a {actual} key")]
    WrongKeyType {
        algorithm: MacAlgorithm,
        expected: KeyAlgorithm,
        actual: KeyAlgorithm,
    },
    #[error("a MAC is 8 bytes, this one is {len}")]
    BadLength { len: usize },
    #[error("MAC does not match")]
    Mismatch,
}

/// Computes the MAC of `data` under `key`.
pub fn compute(algorithm: MacAlgorithm, key: &Key, data: &[u8]) -> Result<[u8; MAC_LEN], MacError> {
    match (algorithm, key) {
        (MacAlgorithm::CupEcb, Key::Des(k)) => Ok(cup_ecb(k, data)),
        (MacAlgorithm::X919, Key::Des(k)) => Ok(x919(k, data)),
        (MacAlgorithm::Sm4, Key::Sm4(k)) => Ok(sm4_fold(k, data)),
        (MacAlgorithm::CupEcb | MacAlgorithm::X919 | MacAlgorithm::Sm4, _) => {
            Err(MacError::WrongKeyType {
                algorithm,
                expected: algorithm.key_algorithm(),
                actual: key.algorithm(),
            })
        }
    }
}

/// Checks a received MAC in constant time.
pub fn verify(algorithm: MacAlgorithm, key: &Key, data: &[u8], mac: &[u8]) -> Result<(), MacError> {
    if mac.len() != MAC_LEN {
        return Err(MacError::BadLength { len: mac.len() });
    }
    let expected = compute(algorithm, key, data)?;
    if ct_eq(&expected, mac) {
        Ok(())
    } else {
        Err(MacError::Mismatch)
    }
}

/// XOR of all `N`-byte blocks of `data`, the last one zero-padded.
fn xor_fold<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut acc = [0u8; N];
    for chunk in data.chunks(N) {
        xor_into(&mut acc, chunk);
    }
    acc
}

fn xor_into(acc: &mut [u8], other: &[u8]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// "CUP ECB" MAC (see the module note).
pub fn cup_ecb(key: &DesKey, data: &[u8]) -> [u8; MAC_LEN] {
    hex_halves_mac::<8>(data, |block| key.encrypt_block(block))
}

/// The construction CUP ECB and SM4 fold share, over an `N`-byte block cipher: XOR-fold the
/// data, hex-encode the two halves, encrypt the left, XOR the right, encrypt again, and send
/// the hex of the first 4 bytes.
fn hex_halves_mac<const N: usize>(data: &[u8], encrypt: impl Fn(&mut [u8; N])) -> [u8; MAC_LEN] {
    let folded: [u8; N] = xor_fold(data);
    let (left, right) = folded.split_at(N / 2);
    let mut block = [0u8; N];
    let mut right_hex = [0u8; N];
    hex::encode_into(left, &mut block);
    hex::encode_into(right, &mut right_hex);
    encrypt(&mut block);
    xor_into(&mut block, &right_hex);
    encrypt(&mut block);
    let mut mac = [0u8; MAC_LEN];
    hex::encode_into(block.get(..4).unwrap_or_default(), &mut mac);
    mac
}

/// ANSI X9.19 retail MAC; with a single-length key, ANSI X9.9 (see the module note).
pub fn x919(key: &DesKey, data: &[u8]) -> [u8; MAC_LEN] {
    let mut state = [0u8; 8];
    let mut chunks = data.chunks(8);
    let mut current = chunks.next();
    loop {
        xor_into(&mut state, current.unwrap_or_default());
        current = chunks.next();
        if current.is_none() {
            key.encrypt_block(&mut state);
            return state;
        }
        key.encrypt_block_k1(&mut state);
    }
}

/// SM4 fold MAC (see the module note).
pub fn sm4_fold(key: &Sm4Key, data: &[u8]) -> [u8; MAC_LEN] {
    hex_halves_mac::<16>(data, |block| key.encrypt_block(block))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::DesKey;

    fn des(hex: &str) -> Key {
        Key::Des(DesKey::from_hex(hex).unwrap())
    }

    #[test]
    fn names_parse_and_print() {
        for alg in MacAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<MacAlgorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!("X919".parse::<MacAlgorithm>().unwrap(), MacAlgorithm::X919);
        assert_eq!(
            "cbc".parse::<MacAlgorithm>(),
            Err(MacError::UnknownAlgorithm)
        );
    }

    // ISO/IEC 9797-1 / ANSI X9.9 worked example (FIPS 113): key 0123456789ABCDEF,
    // "7654321 Now is the time for " → F1D30F68.
    #[test]
    fn x99_known_answer() {
        let key = DesKey::from_hex("0123456789ABCDEF").unwrap();
        let mac = x919(&key, b"7654321 Now is the time for ");
        assert_eq!(hex::encode(mac.get(..4).unwrap()), "F1D30F68");
    }

    // X9.19 with K1 == K2 degenerates to X9.9: the final D K2 · E K1 cancel.
    #[test]
    fn x919_with_equal_halves_is_x99() {
        let single = DesKey::from_hex("0123456789ABCDEF").unwrap();
        let double = DesKey::from_hex("0123456789ABCDEF0123456789ABCDEF").unwrap();
        for data in [&b""[..], b"1", b"12345678", b"123456789"] {
            assert_eq!(x919(&single, data), x919(&double, data));
        }
        let other = DesKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap();
        assert_ne!(x919(&single, b"12345678"), x919(&other, b"12345678"));
    }

    #[test]
    fn zero_padding_and_empty_input() {
        let key = des("0123456789ABCDEFFEDCBA9876543210");
        for alg in [MacAlgorithm::CupEcb, MacAlgorithm::X919] {
            assert_eq!(
                compute(alg, &key, b"\x01\x02\x03").unwrap(),
                compute(alg, &key, b"\x01\x02\x03\0\0\0\0\0").unwrap()
            );
            assert_eq!(
                compute(alg, &key, b"").unwrap(),
                compute(alg, &key, &[0; 8]).unwrap()
            );
        }
    }

    #[test]
    fn cup_ecb_output_is_ascii_hex() {
        let key = des("0123456789ABCDEFFEDCBA9876543210");
        let mac = compute(MacAlgorithm::CupEcb, &key, b"any message at all").unwrap();
        assert!(
            mac.iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }

    #[test]
    fn verify_is_strict() {
        let key = des("0123456789ABCDEF");
        let data = b"0200 message";
        let mac = compute(MacAlgorithm::X919, &key, data).unwrap();
        assert_eq!(verify(MacAlgorithm::X919, &key, data, &mac), Ok(()));
        let mut bad = mac;
        bad[7] ^= 1;
        assert_eq!(
            verify(MacAlgorithm::X919, &key, data, &bad),
            Err(MacError::Mismatch)
        );
        assert_eq!(
            verify(MacAlgorithm::X919, &key, data, &mac[..4]),
            Err(MacError::BadLength { len: 4 })
        );
        assert_eq!(
            compute(MacAlgorithm::Sm4, &key, data),
            Err(MacError::WrongKeyType {
                algorithm: MacAlgorithm::Sm4,
                expected: KeyAlgorithm::Sm4,
                actual: KeyAlgorithm::Des
            })
        );
    }
}
