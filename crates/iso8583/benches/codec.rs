//! Decode and encode of a typical 0200 purchase frame (fields 2, 3, 4, 11, 14, 22, 25, 26, 35,
//! 41, 42, 49, 52, 53, 60, 64): the per-authorisation codec cost of the switch.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use iso8583::{EncodeError, Field60, Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};

fn purchase() -> Result<(FrameHead, MessageBuilder), EncodeError> {
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_digits(2, "6222021234567890123")?
        .set_digits(3, "000000")?
        .set_amount(12_345)?
        .set_stan(1_234)?
        .set_digits(14, "2912")?
        .set_digits(22, "021")?
        .set_digits(25, "00")?
        .set_digits(26, "12")?
        .set_track(35, "6222021234567890123=29121010000012300")?
        .set_text(41, "12345678")?
        .set_text(42, "123456789012345")?
        .set_text(49, "156")?
        .set_binary(52, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])?
        .set_digits(53, "2600000000000000")?
        .set_composed(&Field60 {
            message_type: 22,
            batch: Some(1),
            network_code: Some(0),
            read_capability: Some(5),
            ic_condition: Some(0),
            ..Field60::default()
        })?
        .set_binary(64, &[0xA5; 8])?;
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0x00, 0x01],
            source: [0x00, 0x00],
        },
        header: Header::from_bytes([0x60, 0x22, 0x00, 0x00, 0x00, 0x00])
            .map_err(|_| EncodeError::Header("not BCD"))?,
    };
    Ok((head, b))
}

fn codec(c: &mut Criterion) {
    let Ok((head, builder)) = purchase() else {
        eprintln!("could not build the benchmark message");
        return;
    };
    let mut wire = Vec::with_capacity(512);
    if builder.encode_frame(&head, &mut wire).is_err() {
        eprintln!("could not encode the benchmark message");
        return;
    }

    c.bench_function("decode 0200 purchase frame", |b| {
        b.iter(|| {
            let frame = Frame::decode(black_box(&wire));
            black_box(frame.map(|f| f.message.amount()).ok())
        })
    });

    c.bench_function("decode 0200 + read 2,4,11,35,60 + MAC input", |b| {
        b.iter(|| {
            let Ok(frame) = Frame::decode(black_box(&wire)) else {
                return 0;
            };
            let m = &frame.message;
            let pan_len = m.digits(2).map_or(0, |d| d.len());
            let f60 = m.field60().ok().flatten().map_or(0, |f| f.message_type);
            let track = m.digits(35).map_or(0, |d| d.len());
            black_box((
                m.amount(),
                m.stan(),
                pan_len,
                f60,
                track,
                m.mac_input().len(),
            ));
            m.wire().len()
        })
    });

    let mut out = Vec::with_capacity(512);
    c.bench_function("encode 0200 purchase frame", |b| {
        b.iter(|| {
            out.clear();
            let _ = black_box(&builder).encode_frame(&head, &mut out);
            black_box(out.len())
        })
    });

    let mut reused = MessageBuilder::new(Mti::FINANCIAL);
    c.bench_function("build + encode 0200 purchase frame (reused builder)", |b| {
        b.iter(|| {
            reused.clear(Mti::FINANCIAL);
            let _ = reused
                .set_digits(2, black_box("6222021234567890123"))
                .and_then(|r| r.set_digits(3, "000000"))
                .and_then(|r| r.set_amount(black_box(12_345)))
                .and_then(|r| r.set_stan(1_234))
                .and_then(|r| r.set_digits(14, "2912"))
                .and_then(|r| r.set_digits(22, "021"))
                .and_then(|r| r.set_digits(25, "00"))
                .and_then(|r| r.set_digits(26, "12"))
                .and_then(|r| r.set_track(35, "6222021234567890123=29121010000012300"))
                .and_then(|r| r.set_text(41, "12345678"))
                .and_then(|r| r.set_text(42, "123456789012345"))
                .and_then(|r| r.set_text(49, "156"))
                .and_then(|r| r.set_binary(52, &[0x11; 8]))
                .and_then(|r| r.set_digits(53, "2600000000000000"))
                .and_then(|r| r.set_digits(60, "22000001000"))
                .and_then(|r| r.set_binary(64, &[0xA5; 8]));
            out.clear();
            let _ = reused.encode_frame(&head, &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
