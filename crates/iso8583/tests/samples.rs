//! Every message in data/cup-samples decodes exactly as its README says; values below were read
//! from the hex by hand.
#![cfg(test)]

mod common;

use common::{hex, sample};
use iso8583::{
    DecodeError, Field48, FieldError, Financial, Frame, KeyLayout, Message, MessageBuilder, Mti,
    ResponseCode, SignInKeys, TxnKind,
};

fn fields(m: &Message<'_>) -> Vec<u8> {
    m.fields().map(|f| f.number()).collect()
}

fn digits(m: &Message<'_>, n: u8) -> String {
    m.digits(n)
        .unwrap_or_else(|| panic!("field {n} absent"))
        .to_string()
}

/// Re-encoding a decoded message (and frame) gives back the same bytes.
fn assert_reencodes(frame: &Frame<'_>, input: &[u8]) {
    let builder = MessageBuilder::from_message(&frame.message);
    let mut out = Vec::new();
    builder.encode_frame(&frame.head, &mut out).unwrap();
    assert_eq!(hex(&out), hex(input));
}

#[test]
fn signin_request_0800() {
    let wire = sample("ajsgn_quickstart_0800_signin_request.hex");
    let frame = Frame::decode(&wire).unwrap();
    assert_eq!(frame.head.tpdu.to_string(), "6000000000");
    assert_eq!(frame.head.header.to_string(), "602200000000");
    assert_eq!(frame.head.header.application_type(), 60);
    assert_eq!(frame.head.header.software_version(), 22);
    assert!(frame.routing.is_none());
    let m = &frame.message;
    assert_eq!(m.mti(), Mti::NETWORK);
    assert_eq!(fields(m), [11, 12, 13, 41, 42, 60, 63]);
    assert_eq!(m.stan(), Some(172));
    assert_eq!(digits(m, 12), "170510");
    assert_eq!(digits(m, 13), "0510");
    assert_eq!(m.text(41), Some("50080001"));
    assert_eq!(m.text(42), Some("309310083985008"));
    assert_eq!(m.text(63), Some("CUP"));
    assert_eq!(digits(m, 60), "00000172003");
    let f60 = m.field60().unwrap().unwrap();
    assert_eq!(
        (f60.message_type, f60.batch, f60.network_code),
        (0, Some(172), Some(3))
    );
    assert_eq!(f60.read_capability, None);
    assert_eq!(m.txn_kind(), Some(TxnKind::SignIn(SignInKeys::Double)));
    assert_eq!(m.mac(), None);
    assert_eq!(m.mac_input(), m.wire());
    assert_eq!(m.wire().len(), wire.len() - 13);
    assert_reencodes(&frame, &wire);
}

#[test]
fn signin_response_0810_with_40_byte_keys() {
    let wire = sample("ajsgn_quickstart_0810_signin_response.hex");
    let frame = Frame::decode(&wire).unwrap();
    let m = &frame.message;
    assert_eq!(m.mti(), Mti::NETWORK_RESPONSE);
    assert!(Mti::NETWORK.check_reply(m.mti()).is_ok());
    assert_eq!(fields(m), [11, 12, 13, 32, 37, 39, 41, 42, 60, 62]);
    assert_eq!(digits(m, 12), "100141");
    assert_eq!(digits(m, 32), "03099988");
    assert_eq!(m.text(37), Some("051000000203"));
    assert_eq!(m.response_code(), Some(ResponseCode::APPROVED));
    let f60 = m.field60().unwrap().unwrap();
    assert_eq!(
        (f60.message_type, f60.batch, f60.network_code),
        (0, Some(42), Some(3))
    );
    let keys = m.working_keys().unwrap().unwrap();
    assert_eq!(keys.layout(), KeyLayout::Double);
    assert_eq!(hex(keys.pik.key), "51DBA323AF60599287F61C7E5A9484AE");
    assert_eq!(hex(&keys.pik.kcv), "EF8DE29B");
    assert_eq!(hex(keys.mak.key), "D3E614FCB51122D4E9B84E2A608CD9C2");
    assert_eq!(hex(&keys.mak.kcv), "A4DAABF2");
    assert_eq!(keys.mak.effective_key().len(), 16);
    assert!(keys.tdk.is_none());
    assert_eq!(m.txn_kind(), Some(TxnKind::SignIn(SignInKeys::Double)));
    assert_reencodes(&frame, &wire);
}

#[test]
fn signin_response_0810_with_8_byte_mak() {
    let wire = sample("ajsgn_maintest2_0810_signin_response.hex");
    let frame = Frame::decode(&wire).unwrap();
    let m = &frame.message;
    assert_eq!(m.stan(), Some(5855));
    assert_eq!(digits(m, 12), "174204");
    assert_eq!(digits(m, 13), "0711");
    assert_eq!(digits(m, 32), "48023310");
    assert_eq!(m.text(37), Some("000110172332"));
    assert_eq!(m.text(41), Some("11111115"));
    assert_eq!(m.text(42), Some("103290070111234"));
    assert_eq!(m.field60().unwrap().unwrap().batch, Some(116));
    let keys = m.working_keys().unwrap().unwrap();
    assert_eq!(hex(keys.pik.key), "77264C5EBA2E461248D2A773277A79EA");
    assert_eq!(hex(&keys.pik.kcv), "12922DDE");
    assert_eq!(hex(keys.mak.key), "C0DF5A74CE24FDB00000000000000000");
    assert_eq!(hex(keys.mak.effective_key()), "C0DF5A74CE24FDB0");
    assert_eq!(hex(&keys.mak.kcv), "DCF475D3");
    assert_reencodes(&frame, &wire);
}

#[test]
fn reversal_0400_from_tpdu() {
    let wire = sample("ajsgn_datetest_0400_reversal.hex");
    assert!(
        Frame::decode(&wire).is_err(),
        "no length prefix in this sample"
    );
    let frame = Frame::decode_unprefixed(&wire).unwrap();
    assert_eq!(frame.head.tpdu.to_string(), "6010120000");
    assert_eq!(frame.head.tpdu.reply().to_string(), "6000001012");
    let m = &frame.message;
    assert_eq!(m.mti(), Mti::REVERSAL);
    assert_eq!(
        fields(m),
        [2, 3, 4, 11, 12, 13, 22, 25, 39, 41, 42, 49, 60, 61, 64]
    );
    assert_eq!(digits(m, 2), "1234567890123456");
    assert_eq!(digits(m, 3), "000000");
    assert_eq!(m.amount(), Some(500));
    assert_eq!(m.stan(), Some(681_186));
    assert_eq!(digits(m, 12), "233521");
    assert_eq!(digits(m, 13), "0529");
    assert_eq!(digits(m, 22), "021");
    assert_eq!(digits(m, 25), "65");
    assert_eq!(m.response_code(), Some(ResponseCode::ISSUER_TIMEOUT));
    assert_eq!(m.text(41), Some("axtest3-"));
    assert_eq!(m.text(42), Some("306581054990003"));
    assert_eq!(m.text(49), Some("156"));
    let f60 = m.field60().unwrap().unwrap();
    assert_eq!(
        (f60.message_type, f60.batch, f60.network_code),
        (22, Some(160_529), None)
    );
    let f61 = m.field61().unwrap().unwrap();
    assert_eq!(
        (f61.batch, f61.trace, f61.date),
        (233_415, Some(681_186), Some(529))
    );
    assert_eq!(hex(m.mac().unwrap()), "284C79DC9A2E50FC");
    assert_eq!(m.mac_input(), &m.wire()[..m.wire().len() - 8]);
    // F25 = 65 is not a condition code of the table: the sample is a test fixture.
    assert_eq!(m.txn_kind(), None);
    let mut out = Vec::new();
    MessageBuilder::from_message(m)
        .encode_frame(&frame.head, &mut out)
        .unwrap();
    assert_eq!(hex(&out[2..]), hex(&wire));
}

fn with_mti(mti: &str, body: &[u8]) -> Vec<u8> {
    let mut v = common::unhex(mti);
    v.extend_from_slice(body);
    v
}

#[test]
fn purchase_request_0200_body_with_encrypted_track() {
    let wire = with_mti("0200", &sample("soloicesky_0200_purchase_request_body.hex"));
    let m = Message::decode(&wire).unwrap();
    assert_eq!(fields(&m), [3, 4, 11, 22, 25, 35, 41, 42, 49, 53, 60, 64]);
    assert_eq!(m.amount(), Some(1));
    assert_eq!(m.stan(), Some(139));
    assert_eq!(digits(&m, 22), "022");
    assert_eq!(digits(&m, 25), "00");
    let track = m.digits(35).unwrap();
    assert_eq!(track.len(), 37);
    assert_eq!(track.to_string(), "6013822000594988787=B26C2C1903514=890");
    assert_eq!(m.text(41), Some("12345678"));
    assert_eq!(m.text(42), Some("123456789012345"));
    let sc = m.security_control().unwrap().unwrap();
    assert_eq!(
        (sc.pin_format, sc.key_type, sc.track_encrypted),
        (0, 6, true)
    );
    let f60 = m.field60().unwrap().unwrap();
    assert_eq!(
        (f60.message_type, f60.batch, f60.network_code),
        (22, Some(49), Some(0))
    );
    assert_eq!((f60.read_capability, f60.ic_condition), (Some(5), Some(0)));
    assert_eq!(f60.extra.as_str(), "1");
    assert_eq!(m.bytes(64), Some(&b"52A6DBEC"[..]));
    assert_eq!(m.txn_kind(), Some(TxnKind::Financial(Financial::Purchase)));
    let mut out = Vec::new();
    MessageBuilder::from_message(&m).encode(&mut out);
    assert_eq!(out, wire);
}

#[test]
fn purchase_response_0210_body() {
    let wire = with_mti(
        "0210",
        &sample("soloicesky_0210_purchase_response_body.hex"),
    );
    let m = Message::decode(&wire).unwrap();
    assert_eq!(
        fields(&m),
        [
            2, 3, 4, 11, 12, 13, 14, 15, 25, 32, 37, 38, 39, 41, 42, 44, 49, 53, 60, 63, 64
        ]
    );
    assert_eq!(digits(&m, 2), "6013822000594988787");
    assert_eq!(m.stan(), Some(135));
    assert_eq!(digits(&m, 14), "4912");
    assert_eq!(digits(&m, 15), "1231");
    assert_eq!(digits(&m, 32), "12345678");
    assert_eq!(m.text(37), Some("000000004808"));
    assert_eq!(m.text(38), Some("002098"));
    assert_eq!(m.response_code(), Some(ResponseCode::APPROVED));
    assert_eq!(m.text(44), Some("8888888888866666666666"));
    assert_eq!(m.text(63), Some("CUP"));
    assert_eq!(m.bytes(64), Some(&b"3C3405B9"[..]));
    assert_eq!(m.txn_kind(), Some(TxnKind::Financial(Financial::Purchase)));
    assert!(Mti::FINANCIAL.check_reply(m.mti()).is_ok());
}

#[test]
fn purchase_mac_input_block() {
    let wire = sample("chfenix_0200_purchase_mab.hex");
    // Bit 64 is set but the MAC is absent: a strict decode says so, by field.
    assert_eq!(
        Message::decode(&wire).unwrap_err(),
        DecodeError::Field {
            field: 64,
            error: FieldError::Truncated {
                needed: 8,
                available: 0
            }
        }
    );
    let m = Message::decode_mac_input(&wire).unwrap();
    assert!(m.has(64) && m.mac().is_none());
    assert_eq!(m.mac_input(), &wire[..]);
    assert_eq!(
        fields(&m),
        [3, 4, 11, 22, 25, 26, 35, 41, 42, 49, 52, 53, 60]
    );
    assert_eq!(m.amount(), Some(1));
    assert_eq!(m.stan(), Some(13_867));
    assert_eq!(digits(&m, 22), "021");
    assert_eq!(digits(&m, 26), "06");
    assert_eq!(
        m.digits(35).unwrap().to_string(),
        "9001100000000027=00000000000000000000"
    );
    assert_eq!(m.text(41), Some("11115007"));
    assert_eq!(m.text(42), Some("123456789111115"));
    assert_eq!(hex(m.bytes(52).unwrap()), "3D87C8B8FA17C67C");
    let sc = m.security_control().unwrap().unwrap();
    assert_eq!(
        (sc.pin_format, sc.key_type, sc.track_encrypted),
        (2, 6, false)
    );
    let f60 = m.field60().unwrap().unwrap();
    assert_eq!(
        (f60.message_type, f60.batch, f60.network_code),
        (22, Some(1437), Some(0))
    );
    assert_eq!(m.txn_kind(), Some(TxnKind::Financial(Financial::Purchase)));
    // Building the same message and asking for its MAC input gives the same block.
    let mut out = Vec::new();
    MessageBuilder::from_message(&m).encode_mac_input(&mut out);
    assert_eq!(out, wire);
}

#[test]
fn inconsistent_0100_is_a_typed_error_naming_field_62() {
    let wire = sample("ajsgn_main_0100_inconsistent.hex");
    let err = Frame::decode(&wire).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TrailingBytes {
            count: 3,
            after: 64,
            last_variable: Some(62)
        }
    );
    assert_eq!(err.field(), Some(62));
    assert_eq!(
        err.to_string(),
        "3 bytes left over after field 64 (the length prefix of field 62 disagrees with its data?)"
    );
}

/// What can be read of a frame that does not decode whole: the broken sample's fields (only
/// bytes past its last are wrong), a message cut inside a field up to that field, and nothing
/// without a readable MTI.
#[test]
fn the_readable_part_of_a_broken_frame() {
    let wire = sample("ajsgn_main_0100_inconsistent.hex");
    let part = Frame::decode_readable_part(&wire[2..]).unwrap();
    assert_eq!(part.message.mti(), Mti::AUTHORISATION);
    assert!(part.message.stan().is_some());
    assert!(part.message.text(41).is_some());

    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_digits(3, "000000").unwrap();
    b.set_stan(4242).unwrap();
    b.set_text(41, "10000001").unwrap();
    b.set_text(42, "898110048990001").unwrap();
    b.set_digits(60, "22000001000").unwrap();
    let mut whole = Vec::new();
    b.encode(&mut whole);
    // Cut inside field 60 (its length says 11 digits, 6 bytes; 2 are left).
    let cut = &whole[..whole.len() - 4];
    assert!(Message::decode(cut).is_err());
    let part = Message::decode_readable_part(cut).unwrap();
    assert_eq!(fields(&part), vec![3, 11, 41, 42]);
    assert!(!part.has(60));
    assert_eq!(part.stan(), Some(4242));
    assert_eq!(part.text(42), Some("898110048990001"));
    // A field of letters where digits belong: it and what follows are not read.
    let mut bad = whole.clone();
    let stan_at = 2 + 8 + 3;
    bad[stan_at] = 0xAB;
    let part = Message::decode_readable_part(&bad).unwrap();
    assert_eq!(fields(&part), vec![3]);
    // No MTI, no bitmap: nothing.
    assert!(Message::decode_readable_part(&[0x02]).is_none());
    assert!(Message::decode_readable_part(&[0xAB, 0xCD, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    // A whole message reads whole.
    let part = Message::decode_readable_part(&whole).unwrap();
    assert_eq!(fields(&part), vec![3, 11, 41, 42, 60]);
    // A 16-byte PIN block (SM4) before the bad field is read as one, not as 8 bytes and a
    // field 53 of cipher text.
    let mut b = MessageBuilder::with_dialect(&iso8583::CUP_POS_SM4, Mti::FINANCIAL);
    b.set_digits(3, "000000").unwrap();
    b.set_stan(4243).unwrap();
    b.set_text(41, "10000001").unwrap();
    b.set_text(42, "898110048990001").unwrap();
    b.set_binary(52, &[0xA5; 16]).unwrap();
    b.set_digits(53, "2600000000000000").unwrap();
    b.set_digits(60, "22000001000").unwrap();
    let mut sm4 = Vec::new();
    b.encode(&mut sm4);
    let at = sm4.len() - 2;
    sm4[at] = 0xAB;
    let part = Message::decode_readable_part(&sm4).unwrap();
    assert_eq!(fields(&part), vec![3, 11, 41, 42, 52, 53]);
    assert_eq!(part.bytes(52).map(<[u8]>::len), Some(16));
}

#[test]
fn field48_is_not_in_any_sample_but_parses_by_length() {
    // Guard that the dispatcher does not confuse the shapes (62 vs 4 vs 2 + 40k digits).
    let mut b = MessageBuilder::new(Mti::SETTLEMENT);
    b.set_digits(48, &"0".repeat(62)).unwrap();
    let mut wire = Vec::new();
    b.encode(&mut wire);
    let m = Message::decode(&wire).unwrap();
    assert!(matches!(m.field48().unwrap(), Some(Field48::Totals(_))));
}
