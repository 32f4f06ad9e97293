//! Terminal health over real TCP: the header's software version and the clock drift of fields
//! 12/13 reach the store, written when they change and not on every request; chip-to-magstripe
//! fallbacks (60.5 = 2) are counted per terminal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use iso8583::{FrameHead, Header, MessageBuilder, Mti, Tpdu};
use switch::{Clock, LocalTime, SystemClock};

/// A sign-in from an IC terminal on software 31, sub-version 202611, whose clock reads
/// `offset_s` ahead of China time.
fn sign_in_frame(offset_s: i64) -> Vec<u8> {
    let local = LocalTime::from_ms(SystemClock.now_ms() + offset_s * 1_000);
    let mut out = MessageBuilder::new(Mti::NETWORK);
    out.set_stan(1).unwrap();
    out.set_digits(12, &local.hhmmss()).unwrap();
    out.set_digits(13, &local.mmdd()).unwrap();
    out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    out.set_digits(60, "00000001003").unwrap();
    out.set_text(63, "001").unwrap();
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x61, 0x31, 0x00, 0x20, 0x26, 0x11]).unwrap(),
    };
    let mut bytes = Vec::new();
    out.encode_frame(&head, &mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_version_and_clock_drift_reach_the_store_on_change_only() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert!(h.store.terminal_health().unwrap().is_empty());

    assert_eq!(t.exchange(&sign_in_frame(600)).await.code(), "00");
    let rows = h.store.terminal_health().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let first = rows.first().unwrap().clone();
    assert_eq!(first.tid, TID);
    assert_eq!(
        (
            first.application_type,
            first.software_version,
            first.sub_version
        ),
        (61, 31, 202_611)
    );
    let drift = first.clock_drift_s.unwrap();
    assert!((595..=605).contains(&drift), "drift {drift}");

    // The same version and clock again: nothing new is written.
    assert_eq!(t.exchange(&sign_in_frame(600)).await.code(), "00");
    assert_eq!(h.store.terminal_health().unwrap(), vec![first.clone()]);

    // The clock put right: the drift is written again, near zero.
    assert_eq!(t.exchange(&sign_in_frame(0)).await.code(), "00");
    let fixed = h.store.terminal_health().unwrap().pop().unwrap();
    assert!(fixed.clock_drift_s.unwrap().abs() <= 5, "{fixed:?}");

    // A request with another header and no 12/13: the version changes, the drift is kept.
    assert_eq!(t.sign_in().await.code(), "00");
    let row = h.store.terminal_health().unwrap().pop().unwrap();
    assert_eq!(
        (row.application_type, row.software_version, row.sub_version),
        (60, 22, 0)
    );
    assert_eq!(row.clock_drift_s, fixed.clock_drift_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chip_to_magstripe_fallbacks_are_counted_per_terminal() {
    let mut h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    // A chip read (60.5 = 0) counts nothing; each fallback (60.5 = 2) counts one.
    let chip = Req {
        f60_tail: "00050",
        ..Req::purchase(&pan, 1_000, 2)
    };
    assert_eq!(t.send(&chip).await.code(), "00");
    assert_eq!(fallbacks(&h), 0);
    for stan in 3..5 {
        let fallback = Req {
            f60_tail: "00052",
            ..Req::purchase(&pan, 1_000, stan)
        };
        assert_eq!(t.send(&fallback).await.code(), "00");
    }
    assert_eq!(fallbacks(&h), 2);

    // The count carries on across a restart of the switch.
    drop(t);
    h.stop().await;
    h.start().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let fallback = Req {
        f60_tail: "00052",
        ..Req::purchase(&pan, 1_000, 5)
    };
    assert_eq!(t.send(&fallback).await.code(), "00");
    assert_eq!(fallbacks(&h), 3);

    // A frame that names the terminal but fails its MAC (anyone can send one) is answered A0
    // and counts nothing: only the terminal can add to its own record.
    let forged = Req {
        f60_tail: "00052",
        ..Req::purchase(&pan, 1_000, 6)
    };
    assert_eq!(t.exchange(&t.encode(&forged, true)).await.code(), "A0");
    assert_eq!(fallbacks(&h), 3);
}

/// The fallback count the store holds for `TID`.
fn fallbacks(h: &Harness) -> u32 {
    h.store
        .terminal_health()
        .unwrap()
        .iter()
        .find(|r| r.tid == TID)
        .map_or(0, |r| r.fallbacks)
}
