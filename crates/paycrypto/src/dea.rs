//! The DES block cipher (FIPS 46-3) and its two- and three-key EDE form (ANSI X9.52), as the
//! keys of this crate run it on every MAC and PIN block.
//!
//! Written here for speed: an authorisation runs about eight X9.19 MACs (terminal and issuer
//! legs, both ways, plus the simulators and the load generator), some 150 DES blocks, and the
//! generic `des` crate spent over 200 ns on each (13 % of a loaded run's CPU, `perf`). Here the
//! S-boxes are merged with the P permutation into eight 64-entry tables (`SP`), the expansion
//! E is two rotations of R (its even and its odd six-bit groups), and the initial and final
//! permutations are a byte swap, a bit-matrix transpose and a row shuffle, all without tables.
//! The tables are built at compile time from the standard's own S and P tables below (PC-1 and
//! PC-2 are applied as written), so what is written here is the standard, not derived numbers. Checked against the standard's known answers and, on random
//! keys and blocks, against the `des` crate (tests).
//!
//! Timing: the S-box lookups are indexed by key and data bits, as in the `des` crate and most
//! software DES; IP, FP and the key schedule do no table lookups and no data-dependent branches.

use zeroize::Zeroize;

/// The eight S-boxes, row by row (FIPS 46-3).
#[rustfmt::skip]
const S: [[u8; 64]; 8] = [
    [14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7,
     0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
     4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0,
     15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13],
    [15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10,
     3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
     0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15,
     13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9],
    [10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8,
     13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
     13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7,
     1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12],
    [7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15,
     13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
     10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4,
     3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14],
    [2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9,
     14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
     4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14,
     11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3],
    [12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11,
     10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
     9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6,
     4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13],
    [4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1,
     13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
     1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2,
     6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12],
    [13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7,
     1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
     7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8,
     2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11],
];

/// The permutation P of the S-boxes' 32 output bits (bit 1 is the most significant).
#[rustfmt::skip]
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
    2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];

/// The initial permutation IP (tests check the transpose form against it).
#[cfg(test)]
#[rustfmt::skip]
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4,
    62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8,
    57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
    61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

/// Permuted choice 1: the key's 56 bits that are not parity, as C (first 28) and D.
#[rustfmt::skip]
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18,
    10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36,
    63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22,
    14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

/// Permuted choice 2: a round key's 48 bits from C and D.
#[rustfmt::skip]
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10,
    23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2,
    41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48,
    44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

/// Left rotations of C and D before each round.
const SHIFTS: [u32; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

/// `SP[j][x]`: S-box j+1 on the six bits `x` (row from the outer two, column from the inner
/// four), placed at output bits 4j+1..4j+4 and permuted by P. The round function ORs eight of
/// these.
const SP: [[u32; 64]; 8] = sp_tables();

#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build, never a run"
)]
const fn sp_tables() -> [[u32; 64]; 8] {
    let mut tables = [[0u32; 64]; 8];
    let mut j = 0;
    while j < 8 {
        let mut x = 0;
        while x < 64 {
            let row = ((x >> 4) & 2) | (x & 1);
            let column = (x >> 1) & 0xF;
            let s = S[j][row * 16 + column] as u32;
            // Bit 1 (the most significant) is bit 31 of the word.
            let placed = s << (28 - 4 * j);
            let mut permuted = 0u32;
            let mut i = 0;
            while i < 32 {
                let from = P[i] as u32;
                if placed & (1 << (32 - from)) != 0 {
                    permuted |= 1 << (31 - i);
                }
                i += 1;
            }
            tables[j][x] = permuted;
            x += 1;
        }
        j += 1;
    }
    tables
}

/// Bits of `input` (its `width` low bits, bit 1 the most significant) picked by `table`, as a
/// `table.len()`-bit number. Key schedule only: no lookups, no branches on the bits.
fn permute(input: u64, width: u32, table: &[u8]) -> u64 {
    let mut out = 0u64;
    for &from in table {
        out = (out << 1) | ((input >> (width - u32::from(from))) & 1);
    }
    out
}

/// Swaps the bits of `x` at the positions in `mask` with those `delta` places higher.
const fn delta_swap(x: u64, delta: u32, mask: u64) -> u64 {
    let t = ((x >> delta) ^ x) & mask;
    x ^ t ^ (t << delta)
}

/// The 8×8 bit matrix of a block (byte r is row r, most significant byte first; its most
/// significant bit is column 0), one of the three swap masks of its transpose: the lower-left
/// k×k quarter of every 2k×2k block, which trades places with the upper-right one 7k bits up.
const fn transpose_mask(k: usize) -> u64 {
    let mut mask = 0u64;
    let mut r = 0;
    while r < 8 {
        let mut c = 0;
        while c < 8 {
            if r % (2 * k) >= k && c % (2 * k) < k {
                mask |= 1 << (63 - 8 * r - c);
            }
            c += 1;
        }
        r += 1;
    }
    mask
}

const TRANSPOSE_1: u64 = transpose_mask(1);
const TRANSPOSE_2: u64 = transpose_mask(2);
const TRANSPOSE_4: u64 = transpose_mask(4);

fn transpose(x: u64) -> u64 {
    let x = delta_swap(x, 7, TRANSPOSE_1);
    let x = delta_swap(x, 14, TRANSPOSE_2);
    delta_swap(x, 28, TRANSPOSE_4)
}

/// Row r of IP's output is the input's bit column `IP_ROWS[r]`, read from the last byte up:
/// IP is the transpose of the block with its bytes reversed, rows then taken in this order.
const IP_ROWS: [u32; 8] = [1, 3, 5, 7, 0, 2, 4, 6];

fn byte(x: u64, row: u32) -> u64 {
    (x >> (56 - 8 * row)) & 0xFF
}

fn initial_permutation(block: u64) -> u64 {
    let t = transpose(block.swap_bytes());
    let mut out = 0u64;
    for (r, &from) in (0u32..).zip(IP_ROWS.iter()) {
        out |= byte(t, from) << (56 - 8 * r);
    }
    out
}

fn final_permutation(block: u64) -> u64 {
    let mut t = 0u64;
    for (r, &to) in (0u32..).zip(IP_ROWS.iter()) {
        t |= byte(block, r) << (56 - 8 * to);
    }
    transpose(t).swap_bytes()
}

/// The round function. E expands R into eight overlapping six-bit groups, group j being R's
/// bits 4j..4j+5 (bit 0 is bit 32). The even groups do not overlap one another, nor do the odd
/// ones: R rotated right by one has the even groups at bits 26, 18, 10 and 2 (counting from
/// the least significant), R rotated left by three the odd ones, so each half of the round key
/// (`RoundKey`) is one XOR and four lookups.
#[inline(always)]
fn f(r: u32, key: RoundKey) -> u32 {
    let even = r.rotate_right(1) ^ key.even;
    let odd = r.rotate_left(3) ^ key.odd;
    let [sp0, sp1, sp2, sp3, sp4, sp5, sp6, sp7] = &SP;
    sbox(sp0, even, 26)
        | sbox(sp2, even, 18)
        | sbox(sp4, even, 10)
        | sbox(sp6, even, 2)
        | sbox(sp1, odd, 26)
        | sbox(sp3, odd, 18)
        | sbox(sp5, odd, 10)
        | sbox(sp7, odd, 2)
}

/// The table's entry for the six bits of `x` at `shift` (always in range: the compiler drops
/// the `get`'s check).
#[inline(always)]
fn sbox(table: &[u32; 64], x: u32, shift: u32) -> u32 {
    table
        .get(((x >> shift) & 0x3F) as usize)
        .copied()
        .unwrap_or(0)
}

/// A round's 48 key bits where `f` wants them: groups 0, 2, 4, 6 at bits 26, 18, 10, 2 of
/// `even`, groups 1, 3, 5, 7 likewise in `odd`.
#[derive(Clone, Copy, Default, Zeroize)]
struct RoundKey {
    even: u32,
    odd: u32,
}

/// One DES key's sixteen round keys.
#[derive(Clone)]
pub(crate) struct Dea {
    rounds: [RoundKey; 16],
}

impl Dea {
    /// The key schedule of an 8-byte key (parity bits ignored).
    pub(crate) fn new(key: &[u8; 8]) -> Dea {
        let mut cd = permute(u64::from_be_bytes(*key), 64, &PC1);
        let mut rounds = [RoundKey::default(); 16];
        for (round, &shift) in rounds.iter_mut().zip(SHIFTS.iter()) {
            let c = rotate28(cd >> 28, shift);
            let d = rotate28(cd & 0x0FFF_FFFF, shift);
            cd = (c << 28) | d;
            let mut bits = permute(cd, 56, &PC2);
            for j in 0..8u32 {
                let group = ((bits >> (42 - 6 * j)) & 0x3F) as u32;
                let half = if j % 2 == 0 {
                    &mut round.even
                } else {
                    &mut round.odd
                };
                *half |= group << (26 - 8 * (j / 2));
            }
            bits.zeroize();
        }
        cd.zeroize();
        Dea { rounds }
    }

    /// The key schedule of exactly 8 bytes (copied aside and wiped after); `None` for any
    /// other length.
    pub(crate) fn of_bytes(key: &[u8]) -> Option<Dea> {
        let mut k: [u8; 8] = key.try_into().ok()?;
        let dea = Dea::new(&k);
        k.zeroize();
        Some(dea)
    }

    /// The sixteen rounds between IP and FP, forwards (encryption) or backwards; the result
    /// has its halves swapped, as FP expects.
    #[inline(always)]
    fn rounds(&self, block: u64, forwards: bool) -> u64 {
        if forwards {
            sixteen_rounds(block, self.rounds.iter())
        } else {
            sixteen_rounds(block, self.rounds.iter().rev())
        }
    }

    pub(crate) fn encrypt(&self, block: u64) -> u64 {
        final_permutation(self.rounds(initial_permutation(block), true))
    }

    pub(crate) fn decrypt(&self, block: u64) -> u64 {
        final_permutation(self.rounds(initial_permutation(block), false))
    }
}

#[inline(always)]
fn sixteen_rounds<'a>(block: u64, keys: impl Iterator<Item = &'a RoundKey>) -> u64 {
    let mut l = (block >> 32) as u32;
    let mut r = block as u32;
    for &key in keys {
        let next = l ^ f(r, key);
        l = r;
        r = next;
    }
    (u64::from(r) << 32) | u64::from(l)
}

fn rotate28(half: u64, shift: u32) -> u64 {
    ((half << shift) | (half >> (28 - shift))) & 0x0FFF_FFFF
}

impl Drop for Dea {
    fn drop(&mut self) {
        self.rounds.zeroize();
    }
}

/// TDES EDE: encryption is E(K3, D(K2, E(K1, x))); a two-key TDES has K3 = K1. Between the
/// three passes FP and IP cancel, so they run once each.
#[derive(Clone)]
pub(crate) struct Tdea {
    k1: Dea,
    k2: Dea,
    k3: Option<Dea>,
}

impl Tdea {
    /// From 16 bytes (K1 K2) or 24 (K1 K2 K3); `None` for any other length.
    pub(crate) fn new(key: &[u8]) -> Option<Tdea> {
        let part = |i: usize| Dea::of_bytes(key.get(8 * i..8 * i + 8)?);
        let k3 = match key.len() {
            16 => None,
            24 => Some(part(2)?),
            _ => return None,
        };
        Some(Tdea {
            k1: part(0)?,
            k2: part(1)?,
            k3,
        })
    }

    /// K1 alone: the X9.19 MAC runs single DES under it over all but the last block.
    pub(crate) fn k1(&self) -> &Dea {
        &self.k1
    }

    fn k3(&self) -> &Dea {
        self.k3.as_ref().unwrap_or(&self.k1)
    }

    pub(crate) fn encrypt(&self, block: u64) -> u64 {
        let x = self.k1.rounds(initial_permutation(block), true);
        let x = self.k2.rounds(x, false);
        final_permutation(self.k3().rounds(x, true))
    }

    pub(crate) fn decrypt(&self, block: u64) -> u64 {
        let x = self.k3().rounds(initial_permutation(block), false);
        let x = self.k2.rounds(x, true);
        final_permutation(self.k1.rounds(x, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
    use proptest::prelude::*;

    fn hex64(text: &str) -> u64 {
        u64::from_str_radix(text, 16).unwrap()
    }

    #[test]
    fn the_transpose_form_of_ip_and_fp_is_the_standards_table() {
        let mut x = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..200 {
            assert_eq!(initial_permutation(x), permute(x, 64, &IP), "{x:016X}");
            assert_eq!(final_permutation(initial_permutation(x)), x);
            x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0x5555;
        }
    }

    /// Known answers: the worked example of DES found in textbooks, and two of NIST SP 800-20's
    /// variable-plaintext and variable-key tests.
    #[test]
    fn known_answers() {
        let cases = [
            ("133457799BBCDFF1", "0123456789ABCDEF", "85E813540F0AB405"),
            ("0101010101010101", "8000000000000000", "95F8A5E5DD31D900"),
            ("8001010101010101", "0000000000000000", "95A8D72813DAA94D"),
        ];
        for (key, plain, cipher) in cases {
            let dea = Dea::new(&hex64(key).to_be_bytes());
            assert_eq!(dea.encrypt(hex64(plain)), hex64(cipher), "key {key}");
            assert_eq!(dea.decrypt(hex64(cipher)), hex64(plain), "key {key}");
        }
    }

    proptest! {
        /// Against the `des` crate, on random keys and blocks: DES, and TDES with two and three
        /// keys, both ways.
        #[test]
        fn agrees_with_the_des_crate(key in any::<[u8; 24]>(), block in any::<u64>()) {
            let k1: [u8; 8] = key[..8].try_into().unwrap();
            let k2: [u8; 16] = key[..16].try_into().unwrap();
            let theirs = |c: &dyn Fn(&mut Block<des::Des>), x: u64| {
                let mut b = Block::<des::Des>::from(x.to_be_bytes());
                c(&mut b);
                u64::from_be_bytes(b.into())
            };
            let single = des::Des::new(&k1.into());
            let ours = Dea::new(&k1);
            prop_assert_eq!(ours.encrypt(block), theirs(&|b| single.encrypt_block(b), block));
            prop_assert_eq!(ours.decrypt(block), theirs(&|b| single.decrypt_block(b), block));
            let two = des::TdesEde2::new(&k2.into());
            let ours = Tdea::new(&k2).unwrap();
            prop_assert_eq!(ours.encrypt(block), theirs(&|b| two.encrypt_block(b), block));
            prop_assert_eq!(ours.decrypt(block), theirs(&|b| two.decrypt_block(b), block));
            let three = des::TdesEde3::new(&key.into());
            let ours = Tdea::new(&key).unwrap();
            prop_assert_eq!(ours.encrypt(block), theirs(&|b| three.encrypt_block(b), block));
            prop_assert_eq!(ours.decrypt(block), theirs(&|b| three.decrypt_block(b), block));
        }
    }
}
