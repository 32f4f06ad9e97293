//! Hex text to bytes and back, for keys and test vectors typed by people.
//! Decoding into fixed buffers keeps clear keys out of heap allocations.

use thiserror::Error;

/// Why a hex string was rejected. Never carries the offending text: it may be key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("hex text has an odd number of digits ({digits})")]
    OddLength { digits: usize },
    #[error("not a hex digit at position {position}")]
    BadDigit { position: usize },
    #[error("hex text is {bytes} bytes long, expected {expected}")]
    WrongLength { bytes: usize, expected: usize },
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Number of bytes `text` decodes to, or why it cannot decode.
pub fn decoded_len(text: &str) -> Result<usize, HexError> {
    let digits = text.len();
    if !digits.is_multiple_of(2) {
        return Err(HexError::OddLength { digits });
    }
    Ok(digits / 2)
}

/// Decodes `text` into `out`, which must be exactly `text.len() / 2` bytes.
pub fn decode_into(text: &str, out: &mut [u8]) -> Result<(), HexError> {
    let bytes = decoded_len(text)?;
    if bytes != out.len() {
        return Err(HexError::WrongLength {
            bytes,
            expected: out.len(),
        });
    }
    for (index, (pair, slot)) in text
        .as_bytes()
        .chunks_exact(2)
        .zip(out.iter_mut())
        .enumerate()
    {
        let mut value = 0u8;
        for (offset, &c) in pair.iter().enumerate() {
            let n = nibble(c).ok_or(HexError::BadDigit {
                position: index * 2 + offset,
            })?;
            value = (value << 4) | n;
        }
        *slot = value;
    }
    Ok(())
}

/// Decodes hex text of any even length. Not for keys: use the key types' `from_hex`.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = vec![0u8; decoded_len(text)?];
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Writes the upper-case hex of `bytes` into `out` (`2 * bytes.len()` long) without allocating.
/// Extra room in `out` is left untouched; too little room truncates.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        for (slot, shift) in pair.iter_mut().zip([4u8, 0]) {
            *slot = UPPER
                .get(usize::from((byte >> shift) & 0x0f))
                .copied()
                .unwrap_or(b'0');
        }
    }
}

/// Upper-case hex, the way POS tools print keys, check values and MACs.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for shift in [4u8, 0] {
            out.push(char::from(
                UPPER
                    .get(usize::from((byte >> shift) & 0x0f))
                    .copied()
                    .unwrap_or(b'0'),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_errors() {
        assert_eq!(decode("00aFfF10").unwrap(), vec![0x00, 0xaf, 0xff, 0x10]);
        assert_eq!(encode(&[0x00, 0xaf, 0xff, 0x10]), "00AFFF10");
        assert_eq!(decode("abc"), Err(HexError::OddLength { digits: 3 }));
        assert_eq!(decode("0g"), Err(HexError::BadDigit { position: 1 }));
        assert_eq!(decode("é"), Err(HexError::BadDigit { position: 0 }));
        let mut out = [0u8; 2];
        assert_eq!(
            decode_into("001122", &mut out),
            Err(HexError::WrongLength {
                bytes: 3,
                expected: 2
            })
        );
        let mut text = [0u8; 4];
        encode_into(&[0x1f, 0xe0], &mut text);
        assert_eq!(&text, b"1FE0");
    }
}
