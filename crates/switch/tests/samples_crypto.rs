//! The cryptography of two real messages (data/cup-samples) checked against the keys their
//! public sources publish: the MAC a terminal put on its reversal, and the PIN block a
//! terminal built for its purchase. Every other vector the project checks comes from its own
//! reference computations; these two come from systems outside it.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use iso8583::{Frame, Message};
use paycrypto::{Key, KeyAlgorithm, MacAlgorithm, PanDigits};

fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/cup-samples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Ajsgn/Java8583's DateTest: the reversal's field 64 is the ANSI X9.19 MAC, under the MAK its
/// sign-in issued, of the message from the MTI to field 61.
#[test]
fn the_reversal_samples_mac_verifies_under_its_published_mak() {
    let wire = sample("ajsgn_datetest_0400_reversal.hex");
    let frame = Frame::decode_unprefixed(&wire).unwrap();
    let m = &frame.message;
    let mak = Key::from_hex(KeyAlgorithm::Des, "73FE29329283FDF12540B6F80437C107").unwrap();
    let mac = paycrypto::mac::compute(MacAlgorithm::X919, &mak, m.mac_input()).unwrap();
    assert_eq!(&mac[..], m.mac().unwrap());
    assert!(
        paycrypto::mac::verify(MacAlgorithm::X919, &mak, m.mac_input(), m.mac().unwrap()).is_ok()
    );
    // One bit of the input changed: the MAC no longer verifies.
    let mut altered = m.mac_input().to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(paycrypto::mac::verify(MacAlgorithm::X919, &mak, &altered, m.mac().unwrap()).is_err());
}

/// chfenix/iso8583's TestUtil: field 52 is PIN 123456 in ISO 9564 format 0, bound to the card
/// number of track 2 (there is no field 2), under the PIK its test unwraps.
#[test]
fn the_purchase_samples_pin_block_is_pin_123456_under_its_published_pik() {
    let wire = sample("chfenix_0200_purchase_mab.hex");
    let m = Message::decode_mac_input(&wire).unwrap();
    let track2 = m.digits(35).unwrap().to_string();
    let pan = PanDigits::from_track2(&track2).unwrap();
    let pik = Key::from_hex(KeyAlgorithm::Des, "4567C298FB0B045DAB54BF499E10EFCD").unwrap();
    let block = paycrypto::pin::encrypt(&pik, "123456", &pan).unwrap();
    assert_eq!(block.as_bytes(), m.bytes(52).unwrap());
    let other = paycrypto::pin::encrypt(&pik, "123457", &pan).unwrap();
    assert_ne!(other.as_bytes(), m.bytes(52).unwrap());
}
