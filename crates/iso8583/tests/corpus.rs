//! Hostile input: the committed corpus (each file says what it must give), every truncation and
//! every single-bit flip of every sample. Each input must give a typed error or a valid decode
//! that re-encodes to the same bytes; a panic fails the test.
#![cfg(test)]

mod common;

use std::path::PathBuf;

use common::{all_samples, samples_on_disk, unhex};
use iso8583::{DecodeError, Frame, FrameHead, Header, Message, MessageBuilder, Tpdu};

/// A valid decode must re-encode byte for byte (pad nibbles aside, which we copy raw).
fn check_frame(input: &[u8]) -> Result<(), DecodeError> {
    // What can be read of it (for a 30), whatever it is, never panics either: its accessors,
    // and its re-encoding (what an answer copies from it).
    if let Some(part) = input.get(2..).and_then(Frame::decode_readable_part) {
        let m = &part.message;
        let _ = (m.field60(), m.field61(), m.txn_kind(), m.amount(), m.stan());
        for field in m.fields() {
            assert!(m.has(field.number()));
            let _ = (field.digits().map(|d| d.to_string()), field.text());
        }
        let mut out = Vec::new();
        MessageBuilder::from_message(m).encode(&mut out);
    }
    let frame = Frame::decode(input)?;
    let mut out = Vec::new();
    if frame.routing.is_none() {
        MessageBuilder::from_message(&frame.message)
            .encode_frame(&frame.head, &mut out)
            .unwrap();
        assert_eq!(out, input, "valid decode did not re-encode to its input");
    }
    // Accessors over any valid decode never panic either.
    let m = &frame.message;
    let _ = (
        m.field48(),
        m.field60(),
        m.field61(),
        m.security_control(),
        m.working_keys(),
    );
    let _ = (
        m.txn_kind(),
        m.amount(),
        m.response_code(),
        m.mac_input(),
        m.processing_code(),
    );
    for field in m.fields() {
        let _ = (field.digits().map(|d| d.to_string()), field.text());
    }
    Ok(())
}

fn check_message(input: &[u8]) -> Result<(), DecodeError> {
    let m = Message::decode(input)?;
    let mut out = Vec::new();
    MessageBuilder::from_message(&m).encode(&mut out);
    assert_eq!(out, input);
    let _ = (
        m.field48(),
        m.field60(),
        m.field61(),
        m.security_control(),
        m.working_keys(),
    );
    Ok(())
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    files.sort();
    files
}

#[test]
fn committed_corpus_gives_what_each_file_says() {
    let files = corpus_files();
    assert!(
        files.len() >= 20,
        "corpus went missing: {} files",
        files.len()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = check_frame(&unhex(&text));
        if let Some(message) = expect.strip_prefix("error: ") {
            match result {
                Err(e) => assert_eq!(e.to_string(), message, "{name}"),
                Ok(()) => panic!("{name}: decoded, expected {message:?}"),
            }
        } else if expect.starts_with("ok:") {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert!(
                expect.starts_with("any:"),
                "{name}: unknown expectation {expect:?}"
            );
        }
    }
}

#[test]
fn routing_block_is_skipped() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ok_routing_block_signin.hex");
    let wire = unhex(&std::fs::read_to_string(path).unwrap());
    let frame = Frame::decode(&wire).unwrap();
    let routing = frame.routing.unwrap();
    assert_eq!(routing.len(), 5 + 0x1C);
    assert_eq!(&routing[..5], b"LRI\x00\x1C");
    assert_eq!(frame.head.header.to_string(), "602200000000");
    assert_eq!(frame.message.stan(), Some(172));
}

#[test]
fn every_sample_on_disk_is_tested() {
    let mut tested: Vec<String> = all_samples()
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .collect();
    tested.sort();
    assert_eq!(samples_on_disk(), tested);
}

#[test]
fn a_frame_prints_its_routing_block_by_length_only() {
    let mut wire = Vec::new();
    let mut message = iso8583::MessageBuilder::new(iso8583::Mti::NETWORK);
    message.set_stan(1).unwrap();
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    };
    message.encode_frame(&head, &mut wire).unwrap();
    // A gateway's routing block between TPDU and header (tag, length 8), carrying a number.
    let mut routed = wire[..7].to_vec();
    routed.extend_from_slice(b"LRI\x00\x08");
    routed.extend_from_slice(b"13912345");
    routed.extend_from_slice(&wire[7..]);
    let len = u16::try_from(routed.len() - 2).unwrap().to_be_bytes();
    routed[..2].copy_from_slice(&len);
    let frame = Frame::decode(&routed).unwrap();
    assert!(frame.routing.is_some());
    let printed = format!("{frame:?}");
    assert!(
        !printed.contains("13912345") && !printed.contains("49, 51"),
        "{printed}"
    );
    assert!(printed.contains("routing_len: Some(13)"), "{printed}");
}

/// The samples as frames (length-prefixed) and as bare messages.
fn inputs() -> Vec<(String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for (name, bytes) in all_samples() {
        match name {
            n if n.starts_with("soloicesky_0200") => {
                out.push((name.into(), [&[0x02, 0x00][..], &bytes].concat(), false))
            }
            n if n.starts_with("soloicesky_0210") => {
                out.push((name.into(), [&[0x02, 0x10][..], &bytes].concat(), false))
            }
            n if n.starts_with("chfenix") => out.push((name.into(), bytes, false)),
            n if n.contains("0400_reversal") => {
                let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
                out.push((name.into(), [&len[..], &bytes].concat(), true))
            }
            _ => out.push((name.into(), bytes, true)),
        }
    }
    out
}

fn check(input: &[u8], framed: bool) -> Result<(), DecodeError> {
    if framed {
        check_frame(input)
    } else {
        check_message(input)
    }
}

#[test]
fn every_truncation_of_every_sample_is_an_error() {
    for (name, bytes, framed) in inputs() {
        for cut in 0..bytes.len() {
            let result = check(&bytes[..cut], framed);
            assert!(result.is_err(), "{name} cut at {cut} decoded");
        }
        // The length-prefixed ones also with the prefix fixed up to the cut.
        if framed {
            for cut in 2..bytes.len() {
                let mut v = bytes[..cut].to_vec();
                let len = u16::try_from(cut - 2).unwrap().to_be_bytes();
                v[..2].copy_from_slice(&len);
                let _ = check(&v, true);
            }
        }
    }
}

#[test]
fn every_bit_flip_of_every_sample_is_handled() {
    let mut decoded = 0;
    let mut errors = 0;
    for (_, bytes, framed) in inputs() {
        for bit in 0..bytes.len() * 8 {
            let mut v = bytes.clone();
            v[bit / 8] ^= 0x80 >> (bit % 8);
            match check(&v, framed) {
                Ok(()) => decoded += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
            }
        }
    }
    // Both outcomes happen: flips in values decode, flips in lengths and bitmaps do not.
    assert!(
        decoded > 100 && errors > 100,
        "decoded {decoded}, errors {errors}"
    );
}

#[test]
fn oversized_and_extended_inputs_are_errors() {
    for (name, bytes, framed) in inputs() {
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0u8; 5]);
        assert!(
            check(&longer, framed).is_err(),
            "{name} with trailing bytes decoded"
        );
    }
    let big = vec![0x60u8; iso8583::FRAME_LEN_MAX + 1];
    assert!(matches!(
        Frame::decode_unprefixed(&big),
        Err(DecodeError::FrameTooLong { .. })
    ));
}
