//! Packed BCD: a borrowed view over the digits of an n/z field, and the packer used to encode.
//! The view never copies: it walks nibbles of the input in place.

use core::fmt;

use crate::spec::{Align, Format};

/// The `i`-th nibble of `bytes` (high nibble first); 0 past the end, which callers never reach
/// because every view is built over a slice whose length was checked.
#[inline]
pub(crate) fn nibble(bytes: &[u8], i: usize) -> u8 {
    match bytes.get(i / 2) {
        Some(b) if i.is_multiple_of(2) => b >> 4,
        Some(b) => b & 0x0F,
        None => 0,
    }
}

/// How a nibble reads as a character: digits, `=` for track separator D, else hex.
#[inline]
pub(crate) fn nibble_char(format: Format, n: u8) -> char {
    match n {
        0..=9 => char::from(b'0' + n),
        0xD if format == Format::Z => '=',
        _ => char::from(b'A' + (n - 10)),
    }
}

/// The digits of a decoded n or z field, borrowed from the input.
///
/// Display writes the digits (`=` for the track separator). Debug shows only the length, since
/// a view may hold a PAN or track data.
#[derive(Clone, Copy)]
pub struct Digits<'a> {
    bytes: &'a [u8],
    first: usize,
    len: usize,
    format: Format,
}

impl<'a> Digits<'a> {
    /// A view of `len` digits starting at nibble `first` of `bytes`. Callers guarantee the
    /// range lies inside `bytes`.
    pub(crate) fn new(bytes: &'a [u8], first: usize, len: usize, format: Format) -> Self {
        Self {
            bytes,
            first,
            len,
            format,
        }
    }

    /// The view of a field's data bytes holding `len` digits with the given alignment.
    pub(crate) fn of_field(bytes: &'a [u8], len: usize, align: Align, format: Format) -> Self {
        let first = match align {
            Align::Right if len % 2 == 1 => 1,
            _ => 0,
        };
        Self::new(bytes, first, len, format)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The nibble values, 0-15 (only 0-9 in an n field).
    pub fn nibbles(&self) -> impl Iterator<Item = u8> + 'a {
        let bytes = self.bytes;
        (self.first..self.first + self.len).map(move |i| nibble(bytes, i))
    }

    /// The characters: `0`-`9`, `=` for D in track data, `A`-`F` otherwise.
    pub fn chars(&self) -> impl Iterator<Item = char> + 'a {
        let format = self.format;
        self.nibbles().map(move |n| nibble_char(format, n))
    }

    /// `len` digits starting at digit `start`, or `None` past the end.
    pub fn sub(&self, start: usize, len: usize) -> Option<Digits<'a>> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| Self::new(self.bytes, self.first + start, len, self.format))
    }

    /// The digits from `start` to the end, or `None` past the end.
    pub fn tail(&self, start: usize) -> Option<Digits<'a>> {
        self.sub(start, self.len.checked_sub(start)?)
    }

    /// The number the digits spell; `None` if there are more than 19 or a nibble is not 0-9.
    pub fn value(&self) -> Option<u64> {
        if self.len > 19 {
            return None;
        }
        self.nibbles()
            .try_fold(0u64, |acc, n| (n <= 9).then(|| acc * 10 + u64::from(n)))
    }

    /// Whether the digits spell exactly `s` (`=` or `D` both match the track separator).
    pub fn eq_str(&self, s: &str) -> bool {
        s.len() == self.len
            && self
                .chars()
                .zip(s.chars())
                .all(|(a, b)| a == b || (a == '=' && b == 'D'))
    }

    /// Writes the characters to `w` (a `String`, a formatter, a fixed buffer).
    pub fn write_to<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        self.chars().try_for_each(|c| w.write_char(c))
    }
}

impl fmt::Display for Digits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl fmt::Debug for Digits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digits({} {}, not shown)", self.len, self.format)
    }
}

impl PartialEq<str> for Digits<'_> {
    fn eq(&self, other: &str) -> bool {
        self.eq_str(other)
    }
}

impl PartialEq<&str> for Digits<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.eq_str(other)
    }
}

/// Appends `nibbles` (count `len`) packed two a byte, with `pad` filling the odd nibble on the
/// side `align` says.
pub(crate) fn pack(
    out: &mut Vec<u8>,
    nibbles: impl Iterator<Item = u8>,
    len: usize,
    align: Align,
    pad: u8,
) {
    let odd = len % 2 == 1;
    let mut high: Option<u8> = if odd && align == Align::Right {
        Some(pad)
    } else {
        None
    };
    for n in nibbles {
        match high.take() {
            Some(h) => out.push((h << 4) | (n & 0x0F)),
            None => high = Some(n & 0x0F),
        }
    }
    if let Some(h) = high {
        out.push((h << 4) | (pad & 0x0F));
    }
}

/// The value of one BCD byte, if both nibbles are digits.
#[inline]
pub(crate) fn bcd_byte(b: u8) -> Option<u8> {
    let (h, l) = (b >> 4, b & 0x0F);
    (h <= 9 && l <= 9).then_some(h * 10 + l)
}

/// `value` as one BCD byte (value < 100).
#[inline]
pub(crate) fn to_bcd_byte(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// Writes `value` as exactly `width` ASCII digits, zero-filled, into `out`; `None` if it does
/// not fit in `width` digits or `out`.
pub(crate) fn ascii_digits(value: u64, width: usize, out: &mut [u8]) -> Option<&[u8]> {
    let buf = out.get_mut(..width)?;
    let mut v = value;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + u8::try_from(v % 10).ok()?;
        v /= 10;
    }
    (v == 0).then_some(&*buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_aligns_odd_counts() {
        let mut out = Vec::new();
        pack(&mut out, [0u8, 2, 1].into_iter(), 3, Align::Left, 0);
        assert_eq!(out, [0x02, 0x10]);
        out.clear();
        pack(&mut out, [0u8, 2, 1].into_iter(), 3, Align::Right, 0);
        assert_eq!(out, [0x00, 0x21]);
        out.clear();
        pack(&mut out, [1u8, 0xD, 2].into_iter(), 3, Align::Left, 0xF);
        assert_eq!(out, [0x1D, 0x2F]);
    }

    #[test]
    fn view_reads_both_alignments() {
        let d = Digits::of_field(&[0x02, 0x10], 3, Align::Left, Format::N);
        assert_eq!(d.to_string(), "021");
        let d = Digits::of_field(&[0x00, 0x21], 3, Align::Right, Format::N);
        assert_eq!(d.to_string(), "021");
        assert_eq!(d.value(), Some(21));
        let t = Digits::of_field(&[0x12, 0xD3, 0x4F], 5, Align::Left, Format::Z);
        assert_eq!(t.to_string(), "12=34");
        assert!(t.eq_str("12D34") && t.eq_str("12=34") && !t.eq_str("12=3"));
        assert_eq!(t.value(), None);
        assert_eq!(t.sub(3, 2).map(|s| s.to_string()), Some("34".into()));
        assert!(t.sub(4, 2).is_none());
        assert_eq!(format!("{t:?}"), "Digits(5 z, not shown)");
    }

    #[test]
    fn ascii_digits_zero_fills_and_refuses_overflow() {
        let mut buf = [0u8; 20];
        assert_eq!(ascii_digits(42, 6, &mut buf), Some(&b"000042"[..]));
        assert_eq!(ascii_digits(1_000_000, 6, &mut buf), None);
        assert_eq!(
            ascii_digits(u64::MAX, 20, &mut buf),
            Some(&b"18446744073709551615"[..])
        );
    }
}
