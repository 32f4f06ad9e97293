//! Track data encryption under a terminal's track key (TDK, issued at a scheme-004 sign-in;
//! field 53.3 = 1 says a request's tracks are encrypted).
//!
//! The CUP terminal scheme encrypts only the card issuer's data at the end of a track: the track
//! is packed two digits a byte (the separator as nibble D, an odd track padded), and the block
//! of the key's cipher length (8 bytes for 3DES, 16 for SM4) that ends just before the track's
//! last byte, the track data block, is encrypted in ECB and put back in its place. A track too
//! short to hold a block and a last byte is refused. The result is written back as the track's
//! characters: digits, `=` for nibble D, and for an encrypted track the other hex letters.

use zeroize::{Zeroize, Zeroizing};

use crate::key::{Key, KeyError};

/// Characters of a track at most (track 3: 104).
pub const TRACK_LEN_MAX: usize = 104;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error(
        "track of {len} characters: too short to hold an encrypted block, or over {TRACK_LEN_MAX}"
    )]
    Length { len: usize },
    #[error("track holds a character that is not a digit, separator or hex letter")]
    BadChar,
    /// After decryption: not digits with separators (another key, or not encrypted).
    #[error("track does not decrypt to digits and separators")]
    NotClear,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Encrypts `track`'s data block under `key`.
pub fn encrypt(key: &Key, track: &str) -> Result<Zeroizing<String>, TrackError> {
    apply(key, track, true)
}

/// Which track a request carries: they differ in how many separators a clear one has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Field 35: one separator, after the card number.
    Two,
    /// Field 36: a separator after the card number, and more between its later fields.
    Three,
}

/// Decrypts `track`'s data block under `key`; the result must be a clear track of its `kind`:
/// digits and separators (`=`), exactly one for track 2, one at least for track 3. Anything
/// else means another key (or a track that was never encrypted).
pub fn decrypt(key: &Key, kind: Track, track: &str) -> Result<Zeroizing<String>, TrackError> {
    let clear = apply(key, track, false)?;
    let separators = clear.bytes().filter(|&b| b == b'=').count();
    let separators_fit = match kind {
        Track::Two => separators == 1,
        Track::Three => separators >= 1,
    };
    if !separators_fit || !clear.bytes().all(|b| b.is_ascii_digit() || b == b'=') {
        return Err(TrackError::NotClear);
    }
    Ok(clear)
}

fn nibble_of(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' | b'D' | b'd' => Some(0xD),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn char_of(n: u8) -> char {
    match n {
        0..=9 => char::from(b'0' + n),
        0xD => '=',
        _ => char::from(b'A' + (n - 10)),
    }
}

/// Where the encrypted block of a track of `len` characters starts, in characters, for a cipher
/// of `block_len` bytes: what comes before it stays clear. `None` for a track too short to
/// hold a block and a last byte.
pub fn block_start(len: usize, block_len: usize) -> Option<usize> {
    Some(len.div_ceil(2).checked_sub(1 + block_len)? * 2)
}

fn apply(key: &Key, track: &str, encrypt: bool) -> Result<Zeroizing<String>, TrackError> {
    let chars = track.as_bytes();
    let len = chars.len();
    let block = key.block_len();
    let start = block_start(len, block).filter(|_| len <= TRACK_LEN_MAX);
    let Some(start) = start else {
        return Err(TrackError::Length { len });
    };
    let mut packed = Zeroizing::new([0u8; TRACK_LEN_MAX / 2]);
    for (i, &c) in chars.iter().enumerate() {
        let mut n = nibble_of(c).ok_or(TrackError::BadChar)?;
        if let Some(byte) = packed.get_mut(i / 2) {
            *byte |= if i % 2 == 0 { n << 4 } else { n };
        }
        n.zeroize();
    }
    if len % 2 == 1
        && let Some(last) = packed.get_mut(len / 2)
    {
        *last |= 0x0F;
    }
    // The block that ends just before the last byte.
    let tdb = packed
        .get_mut(start / 2..start / 2 + block)
        .ok_or(TrackError::Length { len })?;
    if encrypt {
        key.encrypt_ecb(tdb)?;
    } else {
        key.decrypt_ecb(tdb)?;
    }
    let mut out = Zeroizing::new(String::with_capacity(len));
    for i in 0..len {
        let byte = packed.get(i / 2).copied().unwrap_or(0);
        let n = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
        out.push(char_of(n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyAlgorithm;

    fn tdk() -> Key {
        Key::from_hex(KeyAlgorithm::Des, "0123456789ABCDEFFEDCBA9876543210").unwrap()
    }

    /// The CUP terminal scheme's example: track 2 `1234567890123456789=0508201781999168302`
    /// packs into 20 bytes, and its data block is `08 20 17 81 99 91 68 30` (bytes 11 to 18):
    /// that block, encrypted in ECB, replaces it; the rest, the last byte included, is clear.
    #[test]
    fn the_schemes_example_block_is_encrypted_in_place_and_comes_back() {
        let track = "1234567890123456789=0508201781999168302";
        let key = tdk();
        let sealed = encrypt(&key, track).unwrap();
        assert_eq!(sealed.len(), track.len());
        let (start, end) = (22, 38);
        assert_eq!(&track[start..end], "0820178199916830");
        let mut block = [0u8; 8];
        crate::hex::decode_into(&track[start..end], &mut block).unwrap();
        key.encrypt_ecb(&mut block).unwrap();
        let expected = crate::hex::encode(&block).replace('D', "=");
        assert_eq!(&sealed[start..end], expected.as_str());
        assert_eq!(&sealed[..start], &track[..start]);
        assert_eq!(&sealed[end..], &track[end..]);
        assert_eq!(decrypt(&key, Track::Two, &sealed).unwrap().as_str(), track);
    }

    #[test]
    fn odd_and_short_tracks() {
        let key = tdk();
        // Odd: the last byte holds the last digit and the pad.
        let track = "6222020000000000003=25121011234567891";
        assert_eq!(track.len() % 2, 1);
        let sealed = encrypt(&key, track).unwrap();
        assert_eq!(decrypt(&key, Track::Two, &sealed).unwrap().as_str(), track);
        // 17 characters pack into 9 bytes: the shortest track with a block and a last byte.
        assert!(encrypt(&key, "62220200000=25121").is_ok());
        assert_eq!(
            encrypt(&key, "6222020000=25121"),
            Err(TrackError::Length { len: 16 })
        );
        assert_eq!(
            encrypt(&key, "6222x20000000000003=2512"),
            Err(TrackError::BadChar)
        );
        // Decrypted under another key: not a clear track.
        let other = Key::from_hex(KeyAlgorithm::Des, "11111111111111112222222222222222").unwrap();
        assert_eq!(
            decrypt(&other, Track::Two, &sealed),
            Err(TrackError::NotClear)
        );
        // Track 3: a format code, the card number and several separators.
        let track3 = "996222020000000000003=1561560000000000000000003000000=000000000000=0000";
        let sealed = encrypt(&key, track3).unwrap();
        assert_ne!(sealed.as_str(), track3);
        assert_eq!(
            decrypt(&key, Track::Three, &sealed).unwrap().as_str(),
            track3
        );
        // Its several separators are not a track 2's.
        assert_eq!(
            decrypt(&key, Track::Two, &sealed),
            Err(TrackError::NotClear)
        );
    }
}
