//! Round trips over generated messages: every field of the table, every format and length rule,
//! set through the typed setters, encoded, decoded and compared value by value; and the
//! sub-field structures through compose → parse.
#![cfg(test)]

use iso8583::spec::{Align, LenRule};
use iso8583::{
    BatchRecord, BatchUpload, BatchUploadEnd, CUP_POS, CardOrganisation, EncodeError, ExtraDigits,
    Field48, Field60, Field61, FieldError, Format, Frame, FrameHead, Header, Message,
    MessageBuilder, Mti, SecurityControl, SettleResult, SettlementTotals, Totals, Tpdu,
    WorkingKeys,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Value {
    Digits(String),
    Track(String),
    Bytes(Vec<u8>),
}

fn len_range(spec: &iso8583::FieldSpec) -> std::ops::RangeInclusive<usize> {
    let max = usize::from(spec.max);
    if spec.len == LenRule::Fixed {
        max..=max
    } else {
        0..=max
    }
}

fn value_strategy(number: u8) -> BoxedStrategy<Option<(u8, Value)>> {
    let spec = *CUP_POS.field(number).unwrap();
    let lens = len_range(&spec);
    let value = match spec.format {
        Format::N => proptest::collection::vec(0u8..10, lens)
            .prop_map(|d| Value::Digits(d.iter().map(|x| char::from(b'0' + x)).collect()))
            .boxed(),
        Format::Z => {
            proptest::collection::vec(prop::sample::select(b"0123456789ABC=EF".to_vec()), lens)
                .prop_map(|d| Value::Track(String::from_utf8(d).unwrap()))
                .boxed()
        }
        Format::An => proptest::collection::vec(0x20u8..0x7F, lens)
            .prop_map(Value::Bytes)
            .boxed(),
        Format::Ans | Format::B => proptest::collection::vec(any::<u8>(), lens)
            .prop_map(Value::Bytes)
            .boxed(),
    };
    proptest::option::of(value.prop_map(move |v| (number, v))).boxed()
}

fn message_strategy() -> impl Strategy<Value = (u16, Vec<(u8, Value)>)> {
    let fields: Vec<_> = (2u8..=64)
        .filter(|n| CUP_POS.field(*n).is_some())
        .map(value_strategy)
        .collect();
    (0u16..=9999, fields).prop_map(|(mti, v)| (mti, v.into_iter().flatten().collect()))
}

fn build(mti: u16, values: &[(u8, Value)]) -> MessageBuilder {
    let mut b = MessageBuilder::new(Mti::new(mti).unwrap());
    for (n, v) in values {
        match v {
            Value::Digits(d) => b.set_digits(*n, d),
            Value::Track(t) => b.set_track(*n, t),
            Value::Bytes(x) => b.set_bytes(*n, x),
        }
        .unwrap();
    }
    b
}

fn check(m: &Message<'_>, values: &[(u8, Value)]) {
    let present: Vec<u8> = m.fields().map(|f| f.number()).collect();
    let expected: Vec<u8> = values.iter().map(|(n, _)| *n).collect();
    assert_eq!(present, expected);
    for (n, v) in values {
        match v {
            Value::Digits(d) => {
                assert_eq!(m.digits(*n).unwrap().to_string(), *d, "field {n}");
                if d.len() <= 19 && !d.is_empty() {
                    assert_eq!(m.number(*n), Some(d.parse().unwrap()));
                }
            }
            Value::Track(t) => {
                let view = m.digits(*n).unwrap();
                assert!(view.eq_str(t), "field {n}: {view} vs {t}");
                assert_eq!(view.to_string(), t.replace('D', "="));
            }
            Value::Bytes(x) => assert_eq!(m.bytes(*n).unwrap(), &x[..], "field {n}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_round_trip((mti, values) in message_strategy()) {
        let b = build(mti, &values);
        let mut wire = Vec::new();
        b.encode(&mut wire);
        let m = Message::decode(&wire).unwrap();
        prop_assert_eq!(m.mti().value(), mti);
        check(&m, &values);
        // decode ∘ encode = id on the bytes as well.
        let mut again = Vec::new();
        MessageBuilder::from_message(&m).encode(&mut again);
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn frame_round_trip(
        (mti, values) in message_strategy(),
        dest in any::<[u8; 2]>(),
        src in any::<[u8; 2]>(),
        header in proptest::collection::vec(0u8..100, 6),
    ) {
        let b = build(mti, &values);
        let header: Vec<u8> = header.iter().map(|v| ((v / 10) << 4) | (v % 10)).collect();
        let head = FrameHead {
            tpdu: Tpdu { destination: dest, source: src },
            header: Header::from_bytes(header.try_into().unwrap()).unwrap(),
        };
        let mut wire = vec![0xEE]; // encoding appends: earlier bytes stay
        b.encode_frame(&head, &mut wire).unwrap();
        prop_assert_eq!(wire[0], 0xEE);
        let frame = Frame::decode(&wire[1..]).unwrap();
        prop_assert_eq!(frame.head, head);
        prop_assert_eq!(frame.head.reply().tpdu, Tpdu { destination: src, source: dest });
        check(&frame.message, &values);
    }

    #[test]
    fn mac_closure_sees_exactly_the_mac_input((mti, values) in message_strategy()) {
        let b = build(mti, &values);
        let head = FrameHead {
            tpdu: Tpdu { destination: [0, 1], source: [0, 2] },
            header: Header::from_bytes([0x60, 0x31, 0, 0, 0, 0]).unwrap(),
        };
        let mut seen = Vec::new();
        let mut wire = Vec::new();
        b.encode_frame_with_mac(&head, &mut wire, |input| {
            seen = input.to_vec();
            Ok::<_, EncodeError>([7u8; 8])
        }).unwrap();
        let frame = Frame::decode(&wire).unwrap();
        prop_assert_eq!(frame.message.mac_input(), &seen[..]);
        prop_assert_eq!(frame.message.mac(), Some(&[7u8; 8]));
    }

    #[test]
    fn encode_refuses_too_long(number in 2u8..=64, extra in 1usize..4) {
        let Some(spec) = CUP_POS.field(number) else { return Ok(()) };
        let len = usize::from(spec.max) + extra;
        let mut b = MessageBuilder::new(Mti::FINANCIAL);
        let err = match spec.format {
            Format::N => b.set_digits(number, &"1".repeat(len)).unwrap_err(),
            Format::Z => b.set_track(number, &"1".repeat(len)).unwrap_err(),
            _ => b.set_bytes(number, &vec![b'A'; len]).unwrap_err(),
        };
        let expected = if spec.len == LenRule::Fixed {
            FieldError::WrongLength { len, expected: spec.max }
        } else {
            FieldError::TooLong { len, max: spec.max }
        };
        prop_assert_eq!(err, EncodeError::Field { field: number, error: expected });
        prop_assert!(!b.has(number));
    }

    #[test]
    fn field60_round_trip(
        mt in 0u8..100, batch in 0u32..1_000_000, code in 0u16..1000,
        read in 0u8..10, ic in 0u8..10, depth in 0usize..6, extra in "[0-9]{0,4}",
    ) {
        let f = Field60 {
            message_type: mt,
            batch: (depth >= 1).then_some(batch),
            network_code: (depth >= 2).then_some(code),
            read_capability: (depth >= 3).then_some(read),
            ic_condition: (depth >= 4).then_some(ic),
            extra: if depth >= 5 { ExtraDigits::new(&extra).unwrap() } else { ExtraDigits::EMPTY },
        };
        let m = compose_and_decode(&f);
        prop_assert_eq!(m.field60_of(), Some(f));
    }

    #[test]
    fn field61_round_trip(
        batch in 0u32..1_000_000, trace in 0u32..1_000_000, date in 0u16..10_000,
        depth in 0usize..4, extra in "[0-9]{0,13}",
    ) {
        let f = Field61 {
            batch,
            trace: (depth >= 1).then_some(trace),
            date: (depth >= 2).then_some(date),
            extra: if depth >= 3 { ExtraDigits::new(&extra).unwrap() } else { ExtraDigits::EMPTY },
        };
        let m = compose_and_decode(&f);
        prop_assert_eq!(m.field61_of(), Some(f));
    }

    #[test]
    fn field48_round_trip(
        totals in any::<[(u64, u16, u64, u16, u8); 2]>(),
        records in proptest::collection::vec(
            (0u8..100, 0u32..1_000_000, "[1-9][0-9]{0,19}", 0u64..1_000_000_000_000), 0..=8),
        end in 0u16..10_000,
    ) {
        let half = |(a, c, b, d, r): (u64, u16, u64, u16, u8)| Totals {
            debit_amount: a % 1_000_000_000_000, debit_count: c % 1000,
            credit_amount: b % 1_000_000_000_000, credit_count: d % 1000,
            result: SettleResult(r % 10),
        };
        let t = SettlementTotals { domestic: half(totals[0]), foreign: half(totals[1]) };
        prop_assert_eq!(compose_and_decode(&t).field48_of(), Some(Field48::Totals(t)));

        let mut upload = BatchUpload::new();
        for (org, trace, pan, amount) in &records {
            let r = BatchRecord::new(CardOrganisation(*org), *trace, pan, *amount).unwrap();
            prop_assert_eq!(r.pan(), pan.as_str());
            upload.push(r).unwrap();
        }
        prop_assert_eq!(compose_and_decode(&upload).field48_of(), Some(Field48::Upload(upload)));

        let e = BatchUploadEnd { count: end };
        prop_assert_eq!(compose_and_decode(&e).field48_of(), Some(Field48::UploadEnd(e)));
    }

    #[test]
    fn field53_and_62_round_trip(
        pin in 0u8..10, key in 0u8..10, track in any::<bool>(), reserved in 0u64..10_000_000_000_000,
        keys in proptest::collection::vec(any::<u8>(), 60), layout in 0usize..3,
    ) {
        let sc = SecurityControl { pin_format: pin, key_type: key, track_encrypted: track, reserved };
        prop_assert_eq!(compose_and_decode(&sc).security_control().unwrap(), Some(sc));

        let key_len = if layout == 0 { 8 } else { 16 };
        let slot = |i: usize| iso8583::KeySlot {
            key: &keys[i * 16..i * 16 + key_len],
            kcv: [keys[i * 4], keys[i * 4 + 1], 0xAB, 0xCD],
        };
        let wk = WorkingKeys { pik: slot(0), mak: slot(1), tdk: (layout == 2).then(|| slot(2)) };
        let mut b = MessageBuilder::new(Mti::NETWORK_RESPONSE);
        b.set_composed(&wk).unwrap();
        let mut wire = Vec::new();
        b.encode(&mut wire);
        let m = Message::decode(&wire).unwrap();
        prop_assert_eq!(m.working_keys().unwrap(), Some(wk));
    }
}

/// Owned wire bytes of a message holding one composed field, with typed re-readers.
struct Wire(Vec<u8>);

impl Wire {
    fn msg(&self) -> Message<'_> {
        Message::decode(&self.0).unwrap()
    }
    fn field60_of(&self) -> Option<Field60> {
        self.msg().field60().unwrap()
    }
    fn field61_of(&self) -> Option<Field61> {
        self.msg().field61().unwrap()
    }
    fn field48_of(&self) -> Option<Field48> {
        self.msg().field48().unwrap()
    }
    fn security_control(&self) -> Result<Option<SecurityControl>, iso8583::DecodeError> {
        self.msg().security_control()
    }
}

fn compose_and_decode<C: iso8583::Compose>(value: &C) -> Wire {
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_composed(value).unwrap();
    let mut wire = Vec::new();
    b.encode(&mut wire);
    Wire(wire)
}

#[test]
fn alignment_follows_the_table() {
    // Field 22 is the only left-aligned fixed numeric field; variable numeric ones are left.
    for n in 2u8..=64 {
        let Some(spec) = CUP_POS.field(n) else {
            continue;
        };
        if spec.format == Format::N && spec.len == LenRule::Fixed {
            let left = n == 22;
            assert_eq!(spec.align == Align::Left, left, "field {n}");
        }
    }
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_digits(22, "021")
        .unwrap()
        .set_digits(23, "001")
        .unwrap()
        .set_digits(2, "123")
        .unwrap();
    assert_eq!(b.data(22), Some(&[0x02, 0x10][..]));
    assert_eq!(b.data(23), Some(&[0x00, 0x01][..]));
    assert_eq!(b.data(2), Some(&[0x12, 0x30][..]));
    b.set_track(35, "12=3")
        .unwrap()
        .set_track(36, "1=2")
        .unwrap();
    assert_eq!(b.data(35), Some(&[0x12, 0xD3][..]));
    assert_eq!(b.data(36), Some(&[0x1D, 0x2F][..]));
}

#[test]
fn setters_check_format_and_content() {
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    let e = b.set_digits(3, "00000A").unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 3: character 'A' at 5 is not allowed in format n"
    );
    let e = b.set_binary(41, b"12345678").unwrap_err();
    assert_eq!(e.to_string(), "field 41: format ans cannot take binary");
    let e = b.set_text(39, "0\u{7}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 39: byte 0x07 at offset 1 is not allowed in format an"
    );
    let e = b.set_digits(5, "1").unwrap_err();
    assert_eq!(e.to_string(), "field 5: not defined in this dialect");
    let e = b.set_amount(1_000_000_000_000).unwrap_err();
    assert_eq!(e.to_string(), "field 4: length 13, must be exactly 12");
    b.set_amount(7).unwrap();
    assert_eq!(b.data(4), Some(&[0, 0, 0, 0, 0, 7][..]));
    b.set_number(32, 48_023_310).unwrap();
    assert_eq!(b.data(32), Some(&[0x48, 0x02, 0x33, 0x10][..]));
    let e = b.set_track(35, "1234?").unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 35: character '?' at 4 is not allowed in format z"
    );
    let e = Field60 {
        message_type: 22,
        batch: None,
        network_code: Some(1),
        ..Field60::default()
    };
    assert_eq!(
        b.set_composed(&e).unwrap_err().to_string(),
        "field 60: sub-field 60: sub-field after a gap"
    );
    let e = Field60 {
        message_type: 22,
        batch: Some(1_000_000),
        ..Field60::default()
    };
    assert_eq!(
        b.set_composed(&e).unwrap_err().to_string(),
        "field 60: sub-field 60.2: 1000000 does not fit in 6 digits"
    );
}

#[test]
fn subfield_errors_name_the_field() {
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_digits(60, "2200")
        .unwrap()
        .set_digits(61, "1234567")
        .unwrap();
    b.set_digits(53, "2620000000000000")
        .unwrap()
        .set_binary(62, &[0; 30])
        .unwrap();
    b.set_digits(48, "09").unwrap();
    let mut wire = Vec::new();
    b.encode(&mut wire);
    let m = Message::decode(&wire).unwrap();
    let msg = |e: iso8583::DecodeError| e.to_string();
    assert_eq!(
        msg(m.field60().unwrap_err()),
        "field 60: length 4 is not 2, 8, 11, 12 or 13-17 digits"
    );
    assert_eq!(
        msg(m.field61().unwrap_err()),
        "field 61: length 7 is not 6, 12 or 16-29 digits"
    );
    assert_eq!(
        msg(m.security_control().unwrap_err()),
        "field 53: sub-field 53.3: not 0 or 1"
    );
    assert_eq!(
        msg(m.working_keys().unwrap_err()),
        "field 62: length 30 is not 24, 40 or 60 bytes"
    );
    assert_eq!(
        msg(m.field48().unwrap_err()),
        "field 48: record count 9 exceeds max 8"
    );
    assert_eq!(m.txn_kind(), None);
}
