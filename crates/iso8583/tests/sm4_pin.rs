//! Field 52 in both dialects: a 16-byte SM4 PIN block decodes by the fallback rule of
//! `Message::decode`, an 8-byte DES one still with the standard table, and each builder refuses
//! the other's length.
#![cfg(test)]

use iso8583::{
    CUP_POS, CUP_POS_SM4, DecodeError, EncodeError, Frame, FrameHead, Header, Message,
    MessageBuilder, Mti, ProcessingCode, Tpdu,
};
use proptest::prelude::*;

fn purchase(dialect: &'static iso8583::Dialect, pin: &[u8], tid: &str, stan: u32) -> Vec<u8> {
    let mut b = MessageBuilder::with_dialect(dialect, Mti::FINANCIAL);
    b.set_digits(2, "6222021234567890123").unwrap();
    b.set_processing_code(ProcessingCode::PURCHASE).unwrap();
    b.set_amount(12_345).unwrap();
    b.set_stan(stan).unwrap();
    b.set_digits(22, "021").unwrap();
    b.set_digits(25, "00").unwrap();
    b.set_digits(26, "12").unwrap();
    b.set_text(41, tid).unwrap();
    b.set_text(42, "123456789012345").unwrap();
    b.set_text(49, "156").unwrap();
    b.set_binary(52, pin).unwrap();
    b.set_digits(53, "2600000000000000").unwrap();
    b.set_digits(60, "22000001000").unwrap();
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 2],
        },
        header: Header::from_bytes([0x60, 0x31, 0, 0, 0, 0]).unwrap(),
    };
    let mut wire = Vec::new();
    b.encode_frame_with_mac(&head, &mut wire, |_| Ok::<_, EncodeError>([9u8; 8]))
        .unwrap();
    wire
}

fn reencoded(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    MessageBuilder::from_message(m).encode(&mut out);
    out
}

#[test]
fn sm4_purchase_round_trips() {
    let pin: Vec<u8> = (0x10..0x20).collect();
    let wire = purchase(&CUP_POS_SM4, &pin, "10000005", 42);
    let frame = Frame::decode(&wire).unwrap();
    let m = &frame.message;
    assert_eq!(m.dialect(), &CUP_POS_SM4);
    assert_eq!(m.pin_block_len(), Some(16));
    assert_eq!(m.bytes(52), Some(&pin[..]));
    assert_eq!(m.text(41), Some("10000005"));
    assert_eq!(m.stan(), Some(42));
    assert_eq!(m.amount(), Some(12_345));
    assert_eq!(m.mac(), Some(&[9u8; 8]));
    // The builder keeps the dialect it was decoded with: same bytes back.
    assert_eq!(reencoded(m), m.wire());
    // The MAC input block decodes by the same rule.
    let mac_input = Message::decode_mac_input(m.mac_input()).unwrap();
    assert_eq!(mac_input.pin_block_len(), Some(16));
    assert_eq!(mac_input.bytes(52), Some(&pin[..]));
    // Strict decoding with the standard table refuses it.
    assert!(Frame::decode_with(&CUP_POS, &wire).is_err());
    assert!(Frame::decode_with(&CUP_POS_SM4, &wire).is_ok());
}

#[test]
fn des_purchase_still_decodes_with_the_standard_dialect() {
    let pin = [0xA5u8; 8];
    let wire = purchase(&CUP_POS, &pin, "10000001", 7);
    let frame = Frame::decode(&wire).unwrap();
    assert_eq!(frame.message.dialect(), &CUP_POS);
    assert_eq!(frame.message.pin_block_len(), Some(8));
    assert_eq!(frame.message.bytes(52), Some(&pin[..]));
    assert_eq!(reencoded(&frame.message), frame.message.wire());
    assert!(Frame::decode_with(&CUP_POS_SM4, &wire).is_err());
}

#[test]
fn each_builder_refuses_the_other_length() {
    let mut des = MessageBuilder::new(Mti::FINANCIAL);
    let err = des.set_binary(52, &[0; 16]).unwrap_err();
    assert!(
        matches!(err, EncodeError::Field { field: 52, .. }),
        "{err:?}"
    );
    let mut sm4 = MessageBuilder::with_dialect(&CUP_POS_SM4, Mti::FINANCIAL);
    let err = sm4.set_binary(52, &[0; 8]).unwrap_err();
    assert!(
        matches!(err, EncodeError::Field { field: 52, .. }),
        "{err:?}"
    );
    sm4.set_binary(52, &[0; 16]).unwrap();
    assert_eq!(CUP_POS.pin_block_len(), Some(8));
    assert_eq!(CUP_POS_SM4.pin_block_len(), Some(16));
}

#[test]
fn the_dialects_differ_only_in_field_52() {
    for n in 0..=64u8 {
        if n != 52 {
            assert_eq!(CUP_POS.field(n), CUP_POS_SM4.field(n), "field {n}");
        }
    }
    assert_ne!(CUP_POS.field(52), CUP_POS_SM4.field(52));
}

#[test]
fn a_block_of_neither_length_reports_the_standard_error() {
    // 12 bytes of PIN block: neither table reads it; the error is the standard table's.
    let mut wire = purchase(&CUP_POS, &[0x11; 8], "10000001", 7);
    let body = wire.split_off(2 + 5 + 6);
    assert!(Message::decode(&body).is_ok());
    let start = body.windows(8).position(|w| w == [0x11; 8]).unwrap();
    let mut bad = body.clone();
    bad.splice(start..start, [0x11; 4]);
    let standard = Message::decode_with(&CUP_POS, &bad).unwrap_err();
    let either = Message::decode(&bad).unwrap_err();
    assert_eq!(either, standard);
    // And a message without field 52 never falls back.
    let mut no_pin = MessageBuilder::new(Mti::FINANCIAL);
    no_pin.set_stan(1).unwrap();
    let mut bytes = Vec::new();
    no_pin.encode(&mut bytes);
    bytes.push(0);
    assert!(matches!(
        Message::decode(&bytes),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_pin_block_decodes_with_the_dialect_it_was_built_with(
        pin in proptest::collection::vec(any::<u8>(), 16),
        stan in 0u32..1_000_000,
        sm4 in any::<bool>(),
    ) {
        let (dialect, pin) = if sm4 { (&CUP_POS_SM4, &pin[..]) } else { (&CUP_POS, &pin[..8]) };
        let wire = purchase(dialect, pin, "10000005", stan);
        let frame = Frame::decode(&wire).unwrap();
        prop_assert_eq!(frame.message.dialect(), dialect);
        prop_assert_eq!(frame.message.bytes(52), Some(pin));
        prop_assert_eq!(frame.message.stan(), Some(stan));
        prop_assert_eq!(frame.message.text(41), Some("10000005"));
    }
}
