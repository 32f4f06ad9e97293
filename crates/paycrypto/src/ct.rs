//! Constant-time comparison for MACs, check values and PIN verification values.
//! Hand-rolled rather than a dependency: one loop, and `black_box` keeps the optimiser honest.

use core::hint::black_box;

/// True when `a == b`, taking time that depends only on the lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= black_box(x ^ y);
    }
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn compares_contents_and_lengths() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"12345678", b"12345678"));
        assert!(!ct_eq(b"12345678", b"12345679"));
        assert!(!ct_eq(b"\x80", b"\x00"));
        assert!(!ct_eq(b"1234567", b"12345678"));
    }
}
