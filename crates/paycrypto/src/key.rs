//! DES/TDES and SM4 keys with their key schedules built once, and key check values (KCV).
//! Clear key bytes stay inside this crate: no `Display`, a `Debug` that shows only the KCV.
//!
//! DES parity: keys are accepted whether or not every byte has odd parity. Terminals and test
//! tools routinely send keys without it, DES ignores the parity bits, and a check value already
//! proves the key arrived intact. Keys this crate generates are given odd parity, as an HSM would.

use core::fmt;
use core::str::FromStr;

use cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use sm4::Sm4;
use thiserror::Error;
use zeroize::Zeroize;

use crate::dea::{Dea, Tdea};
use crate::hex::{self, HexError};
use crate::random::{RandomError, RandomSource};

/// DES block length in bytes.
pub const DES_BLOCK_LEN: usize = 8;
/// SM4 block length in bytes.
pub const SM4_BLOCK_LEN: usize = 16;
/// SM4 key length in bytes.
pub const SM4_KEY_LEN: usize = 16;
/// Length of a key check value as field 62 carries it.
pub const KCV_LEN: usize = 4;

/// The two cipher families a POS key can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// DES (8-byte keys) or two/three-key TDES (16/24-byte keys).
    Des,
    Sm4,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Des => "DES/3DES",
            Self::Sm4 => "SM4",
        })
    }
}

/// Why key material was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("a {algorithm} key must be {expected} bytes, this one is {actual}")]
    BadLength {
        algorithm: KeyAlgorithm,
        expected: &'static str,
        actual: usize,
    },
    #[error("key is not valid hex: {0}")]
    Hex(#[from] HexError),
    #[error("data to encrypt is {len} bytes, not a multiple of the {block}-byte block")]
    NotBlockAligned { len: usize, block: usize },
}

/// DES key length: single (DES), double (two-key TDES, K1 K2 K1), triple (three-key TDES).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesKeyLength {
    Single,
    Double,
    Triple,
}

impl DesKeyLength {
    pub const fn bytes(self) -> usize {
        match self {
            Self::Single => 8,
            Self::Double => 16,
            Self::Triple => 24,
        }
    }

    pub const fn from_bytes(len: usize) -> Option<Self> {
        match len {
            8 => Some(Self::Single),
            16 => Some(Self::Double),
            24 => Some(Self::Triple),
            _ => None,
        }
    }
}

impl fmt::Display for DesKeyLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single => "single-length DES",
            Self::Double => "double-length 3DES",
            Self::Triple => "triple-length 3DES",
        })
    }
}

/// A key check value: the first four bytes of the key encrypting a zero block. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kcv([u8; KCV_LEN]);

impl Kcv {
    pub const fn from_bytes(bytes: [u8; KCV_LEN]) -> Self {
        Self(bytes)
    }

    /// The check value as received in field 62; `None` unless exactly four bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KCV_LEN]>::try_from(bytes).ok().map(Self)
    }

    pub const fn as_bytes(&self) -> &[u8; KCV_LEN] {
        &self.0
    }

    fn from_block(block: &[u8]) -> Self {
        let mut kcv = [0u8; KCV_LEN];
        for (d, s) in kcv.iter_mut().zip(block) {
            *d = *s;
        }
        Self(kcv)
    }
}

impl fmt::Display for Kcv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Kcv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kcv({self})")
    }
}

impl FromStr for Kcv {
    type Err = HexError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut kcv = [0u8; KCV_LEN];
        hex::decode_into(text, &mut kcv)?;
        Ok(Self(kcv))
    }
}

// Not boxed: the schedules are read on every MAC and PIN operation, and a key is a long-lived value.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum DesSchedule {
    Single(Dea),
    Multiple(Tdea),
}

/// A DES or TDES key with its key schedule ready. Zeroised on drop (the schedules by their own
/// `Drop`, the bytes here).
#[derive(Clone)]
pub struct DesKey {
    bytes: [u8; 24],
    length: DesKeyLength,
    schedule: DesSchedule,
}

impl DesKey {
    /// A key from 8, 16 or 24 clear bytes. Parity is not checked (see the module note).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad_length = || KeyError::BadLength {
            algorithm: KeyAlgorithm::Des,
            expected: "8, 16 or 24",
            actual: bytes.len(),
        };
        let length = DesKeyLength::from_bytes(bytes.len()).ok_or_else(bad_length)?;
        let mut buf = [0u8; 24];
        for (d, s) in buf.iter_mut().zip(bytes) {
            *d = *s;
        }
        let schedule = match Tdea::new(bytes) {
            Some(ede) => DesSchedule::Multiple(ede),
            None => DesSchedule::Single(Dea::of_bytes(bytes).ok_or_else(bad_length)?),
        };
        Ok(Self {
            bytes: buf,
            length,
            schedule,
        })
    }

    /// A key from 16, 32 or 48 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let len = hex::decoded_len(text)?;
        if DesKeyLength::from_bytes(len).is_none() {
            return Err(KeyError::BadLength {
                algorithm: KeyAlgorithm::Des,
                expected: "8, 16 or 24",
                actual: len,
            });
        }
        let mut buf = [0u8; 24];
        let result = match buf.get_mut(..len) {
            Some(slot) => hex::decode_into(text, slot)
                .map_err(KeyError::from)
                .and_then(|()| Self::from_bytes(slot)),
            None => Err(KeyError::BadLength {
                algorithm: KeyAlgorithm::Des,
                expected: "8, 16 or 24",
                actual: len,
            }),
        };
        buf.zeroize();
        result
    }

    /// A fresh random key with odd parity in every byte.
    pub fn generate(length: DesKeyLength, rng: &dyn RandomSource) -> Result<Self, RandomError> {
        let mut buf = [0u8; 24];
        let slot = buf.get_mut(..length.bytes()).ok_or(RandomError)?;
        rng.fill(slot)?;
        for byte in slot.iter_mut() {
            *byte = with_odd_parity(*byte);
        }
        let key = Self::from_bytes(slot).map_err(|_| RandomError);
        buf.zeroize();
        key
    }

    pub const fn length(&self) -> DesKeyLength {
        self.length
    }

    /// True when every byte has odd parity (informational: parity is never enforced).
    pub fn has_odd_parity(&self) -> bool {
        self.expose().iter().all(|b| b.count_ones() % 2 == 1)
    }

    /// Encrypts one block in place: DES for single-length keys, TDES EDE otherwise.
    pub fn encrypt_block(&self, block: &mut [u8; DES_BLOCK_LEN]) {
        let x = u64::from_be_bytes(*block);
        let y = match &self.schedule {
            DesSchedule::Single(c) => c.encrypt(x),
            DesSchedule::Multiple(ede) => ede.encrypt(x),
        };
        *block = y.to_be_bytes();
    }

    pub fn decrypt_block(&self, block: &mut [u8; DES_BLOCK_LEN]) {
        let x = u64::from_be_bytes(*block);
        let y = match &self.schedule {
            DesSchedule::Single(c) => c.decrypt(x),
            DesSchedule::Multiple(ede) => ede.decrypt(x),
        };
        *block = y.to_be_bytes();
    }

    /// Single DES under K1 alone (all of the key when single-length).
    pub(crate) fn encrypt_block_k1(&self, block: &mut [u8; DES_BLOCK_LEN]) {
        let x = u64::from_be_bytes(*block);
        let y = match &self.schedule {
            DesSchedule::Single(c) => c.encrypt(x),
            DesSchedule::Multiple(ede) => ede.k1().encrypt(x),
        };
        *block = y.to_be_bytes();
    }

    /// KCV: single DES for an 8-byte key, TDES for 16/24 bytes.
    pub fn kcv(&self) -> Kcv {
        let mut block = [0u8; DES_BLOCK_LEN];
        self.encrypt_block(&mut block);
        Kcv::from_block(&block)
    }

    /// ECB over whole blocks, in place.
    pub fn encrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        for block in blocks_mut::<DES_BLOCK_LEN>(data)? {
            self.encrypt_block(block);
        }
        Ok(())
    }

    pub fn decrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        for block in blocks_mut::<DES_BLOCK_LEN>(data)? {
            self.decrypt_block(block);
        }
        Ok(())
    }

    /// The clear key bytes, for wrapping under another key inside this crate.
    pub(crate) fn expose(&self) -> &[u8] {
        self.bytes.get(..self.length.bytes()).unwrap_or(&[])
    }
}

/// The whole blocks of `data`, or an error when its length is not a multiple of `N`.
fn blocks_mut<const N: usize>(
    data: &mut [u8],
) -> Result<impl Iterator<Item = &mut [u8; N]>, KeyError> {
    if !data.len().is_multiple_of(N) {
        return Err(KeyError::NotBlockAligned {
            len: data.len(),
            block: N,
        });
    }
    Ok(data
        .chunks_exact_mut(N)
        .filter_map(|chunk| <&mut [u8; N]>::try_from(chunk).ok()))
}

pub(crate) fn with_odd_parity(byte: u8) -> u8 {
    if (byte & 0xfe).count_ones().is_multiple_of(2) {
        byte | 1
    } else {
        byte & 0xfe
    }
}

impl Drop for DesKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for DesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesKey")
            .field("length", &self.length)
            .field("kcv", &self.kcv())
            .finish_non_exhaustive()
    }
}

/// An SM4 key (16 bytes) with its round keys ready. Zeroised on drop.
#[derive(Clone)]
pub struct Sm4Key {
    bytes: [u8; SM4_KEY_LEN],
    cipher: Sm4,
}

impl Sm4Key {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes = <[u8; SM4_KEY_LEN]>::try_from(bytes).map_err(|_| KeyError::BadLength {
            algorithm: KeyAlgorithm::Sm4,
            expected: "16",
            actual: bytes.len(),
        })?;
        Ok(Self {
            cipher: Sm4::new((&bytes).into()),
            bytes,
        })
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let len = hex::decoded_len(text)?;
        if len != SM4_KEY_LEN {
            return Err(KeyError::BadLength {
                algorithm: KeyAlgorithm::Sm4,
                expected: "16",
                actual: len,
            });
        }
        let mut buf = [0u8; SM4_KEY_LEN];
        let result = hex::decode_into(text, &mut buf)
            .map_err(KeyError::from)
            .and_then(|()| Self::from_bytes(&buf));
        buf.zeroize();
        result
    }

    pub fn generate(rng: &dyn RandomSource) -> Result<Self, RandomError> {
        let mut buf = [0u8; SM4_KEY_LEN];
        rng.fill(&mut buf)?;
        let key = Self::from_bytes(&buf).map_err(|_| RandomError);
        buf.zeroize();
        key
    }

    pub fn encrypt_block(&self, block: &mut [u8; SM4_BLOCK_LEN]) {
        let b: &mut Block<Sm4> = block.into();
        self.cipher.encrypt_block(b);
    }

    pub fn decrypt_block(&self, block: &mut [u8; SM4_BLOCK_LEN]) {
        let b: &mut Block<Sm4> = block.into();
        self.cipher.decrypt_block(b);
    }

    /// KCV: first four bytes of SM4(key, 16 zero bytes).
    pub fn kcv(&self) -> Kcv {
        let mut block = [0u8; SM4_BLOCK_LEN];
        self.encrypt_block(&mut block);
        Kcv::from_block(&block)
    }

    pub fn encrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        for block in blocks_mut::<SM4_BLOCK_LEN>(data)? {
            self.encrypt_block(block);
        }
        Ok(())
    }

    pub fn decrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        for block in blocks_mut::<SM4_BLOCK_LEN>(data)? {
            self.decrypt_block(block);
        }
        Ok(())
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Sm4Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for Sm4Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm4Key")
            .field("kcv", &self.kcv())
            .finish_non_exhaustive()
    }
}

/// Any key a POS key hierarchy uses: DES/TDES for schemes 001/003/004, SM4 for 006.
// Not boxed, for the same reason as `DesSchedule`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Key {
    Des(DesKey),
    Sm4(Sm4Key),
}

/// The weak and semi-weak single DES keys (FIPS 74 / NIST SP 800-67), with odd parity.
const WEAK_DES_KEYS: [[u8; 8]; 16] = [
    // Weak: encryption is its own inverse.
    [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
    [0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE],
    [0xE0, 0xE0, 0xE0, 0xE0, 0xF1, 0xF1, 0xF1, 0xF1],
    [0x1F, 0x1F, 0x1F, 0x1F, 0x0E, 0x0E, 0x0E, 0x0E],
    // Semi-weak, in pairs: each decrypts what the other encrypts.
    [0x01, 0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E],
    [0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E, 0x01],
    [0x01, 0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1],
    [0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1, 0x01],
    [0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE],
    [0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01],
    [0x1F, 0xE0, 0x1F, 0xE0, 0x0E, 0xF1, 0x0E, 0xF1],
    [0xE0, 0x1F, 0xE0, 0x1F, 0xF1, 0x0E, 0xF1, 0x0E],
    [0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E, 0xFE],
    [0xFE, 0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E],
    [0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1, 0xFE],
    [0xFE, 0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1],
];

impl Key {
    /// Parses hex as the given algorithm (a 16-byte key is either 3DES or SM4: the caller says).
    pub fn from_hex(algorithm: KeyAlgorithm, text: &str) -> Result<Self, KeyError> {
        match algorithm {
            KeyAlgorithm::Des => DesKey::from_hex(text).map(Self::Des),
            KeyAlgorithm::Sm4 => Sm4Key::from_hex(text).map(Self::Sm4),
        }
    }

    pub fn from_bytes(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        match algorithm {
            KeyAlgorithm::Des => DesKey::from_bytes(bytes).map(Self::Des),
            KeyAlgorithm::Sm4 => Sm4Key::from_bytes(bytes).map(Self::Sm4),
        }
    }

    pub const fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Des(_) => KeyAlgorithm::Des,
            Self::Sm4(_) => KeyAlgorithm::Sm4,
        }
    }

    /// Whether this DES key is single DES in strength (56 bits): too weak to carry or protect
    /// anything that came under a stronger one. An 8-byte key, and a longer one whose halves
    /// (or, of three, whose neighbouring thirds) are equal: triple DES under K1 = K2 is single
    /// DES under K3, whatever its length says. DES ignores each byte's lowest (parity) bit,
    /// so parts that differ only there are equal.
    pub fn is_single_des(&self) -> bool {
        if !matches!(self, Self::Des(_)) {
            return false;
        }
        let bytes = self.expose();
        let same = |a: usize, b: usize| match (
            bytes.get(a * 8..(a + 1) * 8),
            bytes.get(b * 8..(b + 1) * 8),
        ) {
            (Some(x), Some(y)) => x.iter().zip(y).all(|(p, q)| p & 0xFE == q & 0xFE),
            _ => false,
        };
        match bytes.len() {
            8 => true,
            16 => same(0, 1),
            24 => same(0, 1) || same(1, 2),
            _ => false,
        }
    }

    /// Whether a part of this DES key (each 8 bytes) is one of the 4 weak or 12 semi-weak DES
    /// keys (FIPS 74, parity bits ignored): a key an operator types in is refused for it
    /// ([`crate::Hsm::import_key`]); one drawn at random is one of them with odds of 2^-52.
    pub fn has_weak_des_part(&self) -> bool {
        if !matches!(self, Self::Des(_)) {
            return false;
        }
        self.expose().chunks(8).any(|part| {
            WEAK_DES_KEYS
                .iter()
                .any(|weak| part.iter().zip(weak).all(|(p, w)| p & 0xFE == w & 0xFE))
        })
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// Always false: no cipher has empty keys. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    pub fn kcv(&self) -> Kcv {
        match self {
            Self::Des(k) => k.kcv(),
            Self::Sm4(k) => k.kcv(),
        }
    }

    pub const fn block_len(&self) -> usize {
        match self {
            Self::Des(_) => DES_BLOCK_LEN,
            Self::Sm4(_) => SM4_BLOCK_LEN,
        }
    }

    pub fn encrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        match self {
            Self::Des(k) => k.encrypt_ecb(data),
            Self::Sm4(k) => k.encrypt_ecb(data),
        }
    }

    pub fn decrypt_ecb(&self, data: &mut [u8]) -> Result<(), KeyError> {
        match self {
            Self::Des(k) => k.decrypt_ecb(data),
            Self::Sm4(k) => k.decrypt_ecb(data),
        }
    }

    pub(crate) fn expose(&self) -> &[u8] {
        match self {
            Self::Des(k) => k.expose(),
            Self::Sm4(k) => k.expose(),
        }
    }
}

impl From<DesKey> for Key {
    fn from(key: DesKey) -> Self {
        Self::Des(key)
    }
}

impl From<Sm4Key> for Key {
    fn from(key: Sm4Key) -> Self {
        Self::Sm4(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is what it says: each weak key's encryption is its own inverse, and each
    /// semi-weak key's encryption is undone by encryption under its partner (the next one).
    #[test]
    fn the_weak_des_keys_undo_themselves_or_their_partners() {
        let encrypt = |key: &[u8; 8], block: [u8; 8]| {
            crate::dea::Dea::new(key)
                .encrypt(u64::from_be_bytes(block))
                .to_be_bytes()
        };
        let plain = [0x41, 0x43, 0x51, 0x55, 0x49, 0x52, 0x45, 0x21];
        for (i, key) in WEAK_DES_KEYS.iter().enumerate() {
            let undone_by = match i {
                0..4 => key,
                _ => WEAK_DES_KEYS.get(i ^ 1).unwrap(),
            };
            assert_eq!(encrypt(undone_by, encrypt(key, plain)), plain, "key {i}");
        }
        // A double-length key with a weak half, or a semi-weak pair for halves, has one;
        // parity bits do not hide it; an ordinary key has none.
        let weak = |hex: &str| {
            Key::from_hex(KeyAlgorithm::Des, hex)
                .unwrap()
                .has_weak_des_part()
        };
        assert!(weak("01FE01FE01FE01FEFE01FE01FE01FE01"));
        assert!(weak("00FF00FF00FF00FF0123456789ABCDEF"));
        assert!(weak("0123456789ABCDEF1F1F1F1F0E0E0E0E"));
        assert!(!weak("0123456789ABCDEFFEDCBA9876543210"));
        assert!(
            !Key::from_hex(KeyAlgorithm::Sm4, "0101010101010101FEFEFEFEFEFEFEFE")
                .unwrap()
                .has_weak_des_part()
        );
    }

    fn des(hex: &str) -> DesKey {
        DesKey::from_hex(hex).unwrap()
    }

    fn block(hex: &str) -> [u8; 8] {
        let mut b = [0u8; 8];
        hex::decode_into(hex, &mut b).unwrap();
        b
    }

    // FIPS 81 / the classic DES worked example: key 133457799BBCDFF1, plain 0123456789ABCDEF.
    #[test]
    fn des_known_answer() {
        let key = des("133457799BBCDFF1");
        let mut b = block("0123456789ABCDEF");
        key.encrypt_block(&mut b);
        assert_eq!(hex::encode(&b), "85E813540F0AB405");
        key.decrypt_block(&mut b);
        assert_eq!(hex::encode(&b), "0123456789ABCDEF");
    }

    // NIST SP 800-20 variable-plaintext known-answer test: key 0101…01 (all parity bits), the first
    // entries of table A.1.
    #[test]
    fn des_sp800_20_variable_plaintext() {
        let key = des("0101010101010101");
        for (plain, cipher) in [
            ("8000000000000000", "95F8A5E5DD31D900"),
            ("4000000000000000", "DD7F121CA5015619"),
            ("2000000000000000", "2E8653104F3834EA"),
            ("0000000000000001", "166B40B44ABA4BD6"),
        ] {
            let mut b = block(plain);
            key.encrypt_block(&mut b);
            assert_eq!(hex::encode(&b), cipher, "plain {plain}");
        }
    }

    // NIST SP 800-67 rev.1 example: three-key TDES, "The qufck brown fox jump".
    #[test]
    fn tdes_sp800_67_example() {
        let key = des("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123");
        let mut data = *b"The qufck brown fox jump";
        key.encrypt_ecb(&mut data).unwrap();
        assert_eq!(
            hex::encode(&data),
            "A826FD8CE53B855FCCE21C8112256FE668D5C05DD9B6B900"
        );
        key.decrypt_ecb(&mut data).unwrap();
        assert_eq!(&data, b"The qufck brown fox jump");
    }

    #[test]
    fn double_length_with_equal_halves_is_single_des() {
        let single = des("0123456789ABCDEF");
        let double = des("0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(single.kcv(), double.kcv());
        assert_eq!(double.length(), DesKeyLength::Double);
        // Its strength is single DES's, whatever its length says.
        let of = |hex: &str| Key::from_hex(KeyAlgorithm::Des, hex).unwrap();
        assert!(of("0123456789ABCDEF0123456789ABCDEF").is_single_des());
        assert!(of("0123456789ABCDEF0123456789ABCDEFFEDCBA9876543210").is_single_des());
        assert!(of("FEDCBA98765432100123456789ABCDEF0123456789ABCDEF").is_single_des());
        assert!(!of("0123456789ABCDEFFEDCBA9876543210").is_single_des());
        // Halves that differ only in parity bits are the same DES key.
        assert!(of("0123456789ABCDEF0023456789ABCDEF").is_single_des());
        // Two-key triple DES (K1 = K3) is double length in strength.
        assert!(!of("0123456789ABCDEFFEDCBA98765432100123456789ABCDEF").is_single_des());
        assert!(
            !Key::from_hex(KeyAlgorithm::Sm4, "0123456789ABCDEF0123456789ABCDEF")
                .unwrap()
                .is_single_des()
        );
    }

    // GB/T 32907-2016 appendix A, example 1.
    #[test]
    fn sm4_known_answer() {
        let key = Sm4Key::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let mut b = [0u8; 16];
        hex::decode_into("0123456789ABCDEFFEDCBA9876543210", &mut b).unwrap();
        key.encrypt_block(&mut b);
        assert_eq!(hex::encode(&b), "681EDF34D206965E86B3E94F536E4246");
        key.decrypt_block(&mut b);
        assert_eq!(hex::encode(&b), "0123456789ABCDEFFEDCBA9876543210");
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!(
            DesKey::from_hex("0123").unwrap_err(),
            KeyError::BadLength {
                algorithm: KeyAlgorithm::Des,
                expected: "8, 16 or 24",
                actual: 2
            }
        );
        assert_eq!(
            DesKey::from_hex("0123456789ABCDEZ").unwrap_err(),
            KeyError::Hex(HexError::BadDigit { position: 15 })
        );
        assert_eq!(
            DesKey::from_hex("012").unwrap_err(),
            KeyError::Hex(HexError::OddLength { digits: 3 })
        );
        assert!(matches!(
            Sm4Key::from_hex("0123456789ABCDEF").unwrap_err(),
            KeyError::BadLength {
                algorithm: KeyAlgorithm::Sm4,
                actual: 8,
                ..
            }
        ));
        assert!(matches!(
            DesKey::from_bytes(&[0; 9]).unwrap_err(),
            KeyError::BadLength { actual: 9, .. }
        ));
        let key = des("0123456789ABCDEF");
        assert_eq!(
            key.encrypt_ecb(&mut [0u8; 12]).unwrap_err(),
            KeyError::NotBlockAligned { len: 12, block: 8 }
        );
    }

    #[test]
    fn debug_shows_only_the_check_value() {
        let key = des("0123456789ABCDEFFEDCBA9876543210");
        let text = format!("{:?}", Key::Des(key));
        assert!(text.contains("kcv"), "{text}");
        assert!(!text.contains("0123456789ABCDEF"), "{text}");
        assert!(!text.to_ascii_uppercase().contains("0123"), "{text}");
    }

    #[test]
    fn parity_is_reported_not_enforced_and_generated_keys_have_it() {
        assert!(!des("0000000000000000").has_odd_parity());
        assert!(des("0101010101010101").has_odd_parity());
        let rng = crate::random::DeterministicRandom::new(1);
        for length in [
            DesKeyLength::Single,
            DesKeyLength::Double,
            DesKeyLength::Triple,
        ] {
            let key = DesKey::generate(length, &rng).unwrap();
            assert!(key.has_odd_parity());
            assert_eq!(key.length(), length);
        }
        for b in 0..=255u8 {
            let p = with_odd_parity(b);
            assert_eq!(p & 0xfe, b & 0xfe);
            assert_eq!(p.count_ones() % 2, 1);
        }
    }

    #[test]
    fn kcv_text_round_trips() {
        let kcv: Kcv = "82E13665".parse().unwrap();
        assert_eq!(kcv.to_string(), "82E13665");
        assert_eq!(format!("{kcv:?}"), "Kcv(82E13665)");
        assert!("82E136".parse::<Kcv>().is_err());
    }
}
