//! PIN blocks: ISO 9564-1 format 0 (ANSI X9.8) for DES keys, its 16-byte widening for SM4 keys,
//! and translation from one key to another with the clear block confined to one function.
//!
//! Layouts (nibbles, left to right), PIN field XOR account field:
//! - **Format 0, 8 bytes** (DES/TDES): PIN field `0` `L` PIN digits, `F` fill to 16 nibbles;
//!   account field `0000` + the 12 PAN digits left of the check digit.
//! - **SM4, 16 bytes** (scheme 006): the same two fields widened to 32 nibbles — PIN field `0` `L`
//!   PIN digits, `F` fill to 32 nibbles; account field 20 zero nibbles + the same 12 PAN digits.
//!   This is the layout SM4 PIN pads in China commonly use ("PIN 与主账号按位异或, 32 位"); it
//!   is not ISO 9564 format 4. An SM4 field 52 therefore carries 16 bytes.
//!
//! A PAN shorter than 13 digits is left-padded with zeros to give 12 digits, as ISO 9564 says.

use core::fmt;

use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::key::{DES_BLOCK_LEN, Key, KeyError, SM4_BLOCK_LEN};

/// Shortest and longest PIN a format-0 block can hold.
pub const PIN_LEN_MIN: usize = 4;
pub const PIN_LEN_MAX: usize = 12;
/// Shortest and longest PAN accepted (ISO/IEC 7812).
pub const PAN_LEN_MIN: usize = 8;
pub const PAN_LEN_MAX: usize = 19;
const PAN_DIGITS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PinError {
    #[error("a PIN is {PIN_LEN_MIN} to {PIN_LEN_MAX} decimal digits")]
    BadPin,
    #[error("a card number is {PAN_LEN_MIN} to {PAN_LEN_MAX} decimal digits")]
    BadPan,
    #[error("track 2 data must hold the card number before a '=' or 'D' separator")]
    BadTrack2,
    /// Deliberately one variant for every way a decrypted block can be wrong: telling the cases
    /// apart would hand an attacker a PIN-block oracle. The switch answers 99.
    #[error("PIN block is not a valid format-0 block for this key and card number")]
    Format,
    #[error("an encrypted PIN block is 8 bytes (DES) or 16 bytes (SM4), this one is {actual}")]
    BlockLength { actual: usize },
    #[error("a {expected}-byte PIN block does not fit this key's {block}-byte cipher block")]
    KeyMismatch { expected: usize, block: usize },
    #[error("a PIN under a stronger key is not re-encrypted under a single-length DES key")]
    WeakerKey,
}

impl From<KeyError> for PinError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NotBlockAligned { len, block } => Self::KeyMismatch {
                expected: len,
                block,
            },
            KeyError::BadLength { .. } | KeyError::Hex(_) => Self::Format,
        }
    }
}

/// The 12 PAN digits a PIN block is bound to (right-most 12 left of the check digit), one digit
/// per byte. Zeroised on drop; `Debug` shows nothing of the number.
#[derive(Clone)]
pub struct PanDigits([u8; PAN_DIGITS]);

impl PanDigits {
    /// From a card number (field 2): 8 to 19 decimal digits.
    pub fn from_pan(pan: &str) -> Result<Self, PinError> {
        let bytes = pan.as_bytes();
        if !(PAN_LEN_MIN..=PAN_LEN_MAX).contains(&bytes.len())
            || !bytes.iter().all(u8::is_ascii_digit)
        {
            return Err(PinError::BadPan);
        }
        let mut digits = [0u8; PAN_DIGITS];
        // Right-most 12 digits before the check digit, right-aligned, zero-filled on the left.
        let without_check = bytes.iter().rev().skip(1).take(PAN_DIGITS);
        for (slot, c) in digits.iter_mut().rev().zip(without_check) {
            *slot = c - b'0';
        }
        Ok(Self(digits))
    }

    /// From track 2 data (field 35): the card number is what precedes '=' (or 'D', as BCD track
    /// data decodes). A leading ';' start sentinel is skipped.
    pub fn from_track2(track2: &str) -> Result<Self, PinError> {
        let track = track2.strip_prefix(';').unwrap_or(track2);
        let end = track.find(['=', 'D', 'd']).ok_or(PinError::BadTrack2)?;
        let pan = track.get(..end).ok_or(PinError::BadTrack2)?;
        Self::from_pan(pan).map_err(|_| PinError::BadTrack2)
    }

    /// A card number, or track 2 data when the text has a separator.
    pub fn from_pan_or_track2(text: &str) -> Result<Self, PinError> {
        if text.contains(['=', 'D', 'd']) {
            Self::from_track2(text)
        } else {
            Self::from_pan(text)
        }
    }

    /// Writes the account field: the 12 digits packed into the last 6 bytes of `field`.
    fn write_account_field(&self, field: &mut [u8]) {
        field.fill(0);
        let tail = field.len().saturating_sub(PAN_DIGITS / 2);
        for (slot, pair) in field.iter_mut().skip(tail).zip(self.0.chunks_exact(2)) {
            *slot = pair.iter().fold(0u8, |acc, d| (acc << 4) | d);
        }
    }
}

impl Drop for PanDigits {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PanDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanDigits(..)")
    }
}

/// A clear PIN, 4 to 12 ASCII digits. Only produced inside this crate (decoding, for PIN
/// verification); zeroised on drop; no `Display`, a `Debug` that shows nothing.
pub struct ClearPin {
    digits: [u8; PIN_LEN_MAX],
    len: usize,
}

impl ClearPin {
    pub(crate) fn parse(pin: &str) -> Result<Self, PinError> {
        let bytes = pin.as_bytes();
        if !(PIN_LEN_MIN..=PIN_LEN_MAX).contains(&bytes.len())
            || !bytes.iter().all(u8::is_ascii_digit)
        {
            return Err(PinError::BadPin);
        }
        let mut digits = [0u8; PIN_LEN_MAX];
        for (d, s) in digits.iter_mut().zip(bytes) {
            *d = *s;
        }
        Ok(Self {
            digits,
            len: bytes.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a PIN has at least four digits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The PIN's ASCII digits.
    pub(crate) fn expose(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or_default()
    }
}

impl Drop for ClearPin {
    fn drop(&mut self) {
        self.digits.zeroize();
        self.len = 0;
    }
}

impl fmt::Debug for ClearPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClearPin(..)")
    }
}

/// A clear PIN block (8-byte format 0 or the 16-byte SM4 layout). Zeroised on drop; a `Debug`
/// that shows only its length. Exists for terminals and tools; the host never builds one
/// outside [`translate`] and PIN verification.
pub struct ClearPinBlock {
    bytes: [u8; SM4_BLOCK_LEN],
    len: usize,
}

impl ClearPinBlock {
    /// ISO 9564 format 0 (ANSI X9.8), 8 bytes.
    pub fn format0(pin: &str, pan: &PanDigits) -> Result<Self, PinError> {
        Ok(Self::build(&ClearPin::parse(pin)?, pan, DES_BLOCK_LEN))
    }

    /// The 16-byte SM4 layout (see the module note).
    pub fn sm4(pin: &str, pan: &PanDigits) -> Result<Self, PinError> {
        Ok(Self::build(&ClearPin::parse(pin)?, pan, SM4_BLOCK_LEN))
    }

    fn build(pin: &ClearPin, pan: &PanDigits, len: usize) -> Self {
        let mut block = Self {
            bytes: [0xff; SM4_BLOCK_LEN],
            len,
        };
        let mut account = Zeroizing::new([0u8; SM4_BLOCK_LEN]);
        if let (Some(field), Some(account)) = (block.bytes.get_mut(..len), account.get_mut(..len)) {
            // PIN field: control nibble 0 and the length, then the digits over the F fill.
            if let Some(first) = field.first_mut() {
                *first = u8::try_from(pin.len()).unwrap_or(0);
            }
            for (index, digit) in pin.expose().iter().enumerate() {
                set_nibble(field, index + 2, digit - b'0');
            }
            pan.write_account_field(account);
            for (b, a) in field.iter_mut().zip(account.iter()) {
                *b ^= a;
            }
        }
        block
    }

    /// The PIN this block holds, if it is a well-formed block for `pan`.
    pub(crate) fn decode(&self, pan: &PanDigits) -> Result<ClearPin, PinError> {
        let mut field = Zeroizing::new([0u8; SM4_BLOCK_LEN]);
        let field = field.get_mut(..self.len).ok_or(PinError::Format)?;
        pan.write_account_field(field);
        for (f, b) in field.iter_mut().zip(self.as_bytes()) {
            *f ^= b;
        }
        let len = usize::from(field.first().copied().ok_or(PinError::Format)?);
        if !(PIN_LEN_MIN..=PIN_LEN_MAX).contains(&len) {
            return Err(PinError::Format);
        }
        let mut pin = ClearPin {
            digits: [0u8; PIN_LEN_MAX],
            len,
        };
        let mut well_formed = true;
        for index in 2..field.len() * 2 {
            let nibble = nibble_at(field, index);
            match pin.digits.get_mut(index - 2) {
                Some(slot) if index - 2 < len => {
                    well_formed &= nibble <= 9;
                    *slot = b'0' + nibble;
                }
                Some(_) | None => well_formed &= nibble == 0xf,
            }
        }
        if well_formed {
            Ok(pin)
        } else {
            Err(PinError::Format)
        }
    }

    /// The block's bytes (8 or 16). Secret: show it to an operator only when asked.
    pub fn expose(&self) -> &[u8] {
        self.as_bytes()
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Encrypts under `key`: an 8-byte block needs a DES key, a 16-byte block an SM4 key.
    pub fn encrypt(&self, key: &Key) -> Result<EncryptedPinBlock, PinError> {
        // Checked before the clear block is copied anywhere; the copy is wiped however this
        // ends.
        if key.block_len() != self.len {
            return Err(PinError::KeyMismatch {
                expected: self.len,
                block: key.block_len(),
            });
        }
        let mut buffer = zeroize::Zeroizing::new([0u8; SM4_BLOCK_LEN]);
        let out = buffer.get_mut(..self.len).ok_or(PinError::Format)?;
        out.copy_from_slice(self.as_bytes());
        key.encrypt_ecb(out)?;
        EncryptedPinBlock::from_bytes(out)
    }

    fn decrypt(key: &Key, block: &EncryptedPinBlock) -> Result<Self, PinError> {
        let len = block.as_bytes().len();
        if key.block_len() != len {
            return Err(PinError::KeyMismatch {
                expected: len,
                block: key.block_len(),
            });
        }
        let mut clear = Self {
            bytes: [0u8; SM4_BLOCK_LEN],
            len,
        };
        let bytes = clear.bytes.get_mut(..len).ok_or(PinError::Format)?;
        bytes.copy_from_slice(block.as_bytes());
        key.decrypt_ecb(bytes)?;
        Ok(clear)
    }
}

impl Drop for ClearPinBlock {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for ClearPinBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClearPinBlock({} bytes)", self.len)
    }
}

fn set_nibble(bytes: &mut [u8], index: usize, value: u8) {
    if let Some(byte) = bytes.get_mut(index / 2) {
        *byte = if index.is_multiple_of(2) {
            (*byte & 0x0f) | (value << 4)
        } else {
            (*byte & 0xf0) | (value & 0x0f)
        };
    }
}

fn nibble_at(bytes: &[u8], index: usize) -> u8 {
    let byte = bytes.get(index / 2).copied().unwrap_or(0);
    if index.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0f
    }
}

/// An encrypted PIN block as field 52 carries it: 8 bytes under DES/TDES, 16 under SM4.
#[derive(Clone, PartialEq, Eq)]
pub enum EncryptedPinBlock {
    Des([u8; DES_BLOCK_LEN]),
    Sm4([u8; SM4_BLOCK_LEN]),
}

impl EncryptedPinBlock {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PinError> {
        if let Ok(block) = <[u8; DES_BLOCK_LEN]>::try_from(bytes) {
            Ok(Self::Des(block))
        } else if let Ok(block) = <[u8; SM4_BLOCK_LEN]>::try_from(bytes) {
            Ok(Self::Sm4(block))
        } else {
            Err(PinError::BlockLength {
                actual: bytes.len(),
            })
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Des(b) => b,
            Self::Sm4(b) => b,
        }
    }
}

impl fmt::Debug for EncryptedPinBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedPinBlock({} bytes)", self.as_bytes().len())
    }
}

/// Builds and encrypts the PIN block a terminal sends: format 0 under a DES key, the 16-byte
/// layout under an SM4 key.
pub fn encrypt(key: &Key, pin: &str, pan: &PanDigits) -> Result<EncryptedPinBlock, PinError> {
    let pin = ClearPin::parse(pin)?;
    ClearPinBlock::build(&pin, pan, key.block_len()).encrypt(key)
}

/// Decrypts and decodes a PIN block. Crate-private: only PIN verification needs the clear PIN.
pub(crate) fn decrypt(
    key: &Key,
    block: &EncryptedPinBlock,
    pan: &PanDigits,
) -> Result<ClearPin, PinError> {
    ClearPinBlock::decrypt(key, block)?.decode(pan)
}

/// Re-encrypts a PIN block from one key to another (PIK → ZPK), checking it is well formed for
/// `pan` on the way. The layout follows each key's family, so an SM4 terminal's block can go to
/// a DES zone. The clear PIN exists only in zeroised buffers inside this call.
pub fn translate(
    from: &Key,
    to: &Key,
    block: &EncryptedPinBlock,
    pan: &PanDigits,
) -> Result<EncryptedPinBlock, PinError> {
    // Checked before anything is decrypted: 56-bit DES would undo the stronger key's
    // protection (a PIN a triple-DES or SM4 terminal entered, exposed to a DES search).
    if to.is_single_des() && !from.is_single_des() {
        return Err(PinError::WeakerKey);
    }
    let pin = decrypt(from, block, pan)?;
    ClearPinBlock::build(&pin, pan, to.block_len()).encrypt(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use crate::key::{DesKey, Sm4Key};

    fn pan(text: &str) -> PanDigits {
        PanDigits::from_pan_or_track2(text).unwrap()
    }

    #[test]
    fn protocol_known_answers() {
        let block = ClearPinBlock::format0("123456", &pan("1234567890123456")).unwrap();
        assert_eq!(hex::encode(block.expose()), "0612713176FEDCBA");
        let block = ClearPinBlock::format0("123456", &pan("123456789012345678")).unwrap();
        assert_eq!(hex::encode(block.expose()), "061253DFFEDCBA98");
    }

    #[test]
    fn sm4_layout_known_answer() {
        // Worked example of the 32-nibble layout: PIN 123654, PAN 6230606601007726888.
        let block = ClearPinBlock::sm4("123654", &pan("6230606601007726888")).unwrap();
        assert_eq!(
            hex::encode(block.expose()),
            "06123654FFFFFFFFFFFF99FEFF88D977"
        );
    }

    #[test]
    fn track2_and_short_pans() {
        let from_track = pan(";1234567890123456=25121011234?");
        let from_bcd_track = pan("1234567890123456D25121011234");
        let block =
            |p: &PanDigits| hex::encode(ClearPinBlock::format0("123456", p).unwrap().expose());
        assert_eq!(block(&from_track), "0612713176FEDCBA");
        assert_eq!(block(&from_bcd_track), "0612713176FEDCBA");
        // 9-digit PAN: 8 digits before the check digit, zero-filled on the left.
        assert_eq!(block(&pan("123456789")), "06123456EDCBA987");
        assert!(matches!(
            PanDigits::from_pan("1234567"),
            Err(PinError::BadPan)
        ));
    }

    #[test]
    fn input_errors() {
        assert!(matches!(
            PanDigits::from_pan("12345678901234567890"),
            Err(PinError::BadPan)
        ));
        assert!(matches!(
            PanDigits::from_pan("123456789012345a"),
            Err(PinError::BadPan)
        ));
        assert!(matches!(
            PanDigits::from_track2("1234567890123456"),
            Err(PinError::BadTrack2)
        ));
        assert!(matches!(
            PanDigits::from_track2("=2512"),
            Err(PinError::BadTrack2)
        ));
        let p = pan("1234567890123456");
        assert!(matches!(
            ClearPinBlock::format0("123", &p),
            Err(PinError::BadPin)
        ));
        assert!(matches!(
            ClearPinBlock::format0("1234567890123", &p),
            Err(PinError::BadPin)
        ));
        assert!(matches!(
            ClearPinBlock::format0("12a4", &p),
            Err(PinError::BadPin)
        ));
        assert!(matches!(
            EncryptedPinBlock::from_bytes(&[0; 9]),
            Err(PinError::BlockLength { actual: 9 })
        ));
    }

    #[test]
    fn decode_round_trips_and_rejects_malformed_blocks() {
        let p = pan("6222021234567890123");
        for pin in ["1234", "123456", "000000000000"] {
            for block in [
                ClearPinBlock::format0(pin, &p).unwrap(),
                ClearPinBlock::sm4(pin, &p).unwrap(),
            ] {
                assert_eq!(block.decode(&p).unwrap().expose(), pin.as_bytes());
                // Bound to the PAN: another card number makes the fill nibbles wrong.
                assert!(matches!(
                    block.decode(&pan("6222021234567890131")),
                    Err(PinError::Format)
                ));
            }
        }
        let mut bad = ClearPinBlock::format0("123456", &p).unwrap();
        bad.bytes[0] = 0x16; // control nibble 1
        assert!(matches!(bad.decode(&p), Err(PinError::Format)));
        let mut bad = ClearPinBlock::format0("123456", &p).unwrap();
        bad.bytes[0] = 0x03; // length 3
        assert!(matches!(bad.decode(&p), Err(PinError::Format)));
    }

    #[test]
    fn translate_between_key_families() {
        let p = pan("6222021234567890123");
        let pik = Key::Des(DesKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap());
        let zpk = Key::Des(DesKey::from_hex("11111111111111112222222222222222").unwrap());
        let sm4 = Key::Sm4(Sm4Key::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap());
        let under_pik = encrypt(&pik, "654321", &p).unwrap();
        let under_zpk = translate(&pik, &zpk, &under_pik, &p).unwrap();
        assert_eq!(under_zpk, encrypt(&zpk, "654321", &p).unwrap());
        let under_sm4 = encrypt(&sm4, "654321", &p).unwrap();
        assert_eq!(under_sm4.as_bytes().len(), 16);
        assert_eq!(translate(&sm4, &zpk, &under_sm4, &p).unwrap(), under_zpk);
        assert!(matches!(
            translate(&zpk, &pik, &under_pik, &p),
            Err(PinError::Format)
        ));
        assert!(matches!(
            translate(&sm4, &zpk, &under_pik, &p),
            Err(PinError::KeyMismatch {
                expected: 8,
                block: 16
            })
        ));
    }
}
