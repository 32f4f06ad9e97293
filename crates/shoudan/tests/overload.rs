//! Overload at twice the switch's capacity, against the real switch and issuer simulator. The
//! capacity is made small and known: at most `IN_FLIGHT` requests at once (the admission bound,
//! `SwitchConfig::requests_in_flight`) against an issuer that takes `ISSUER_LATENCY` per answer,
//! so at most IN_FLIGHT / ISSUER_LATENCY requests per second. Offered twice that, open loop: every
//! request is answered, the excess with 96 at once (before any issuer could have answered), the
//! in-flight count never passes the bound (memory stays bounded), and once the load drops every
//! purchase is approved again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../switch/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use iso8583::Frame;
use support::{runtime, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IN_FLIGHT: usize = 8;
const ISSUER_LATENCY: Duration = Duration::from_millis(250);
/// Requests offered: twice the capacity for `OFFERED / (2 * capacity)` = 2 seconds.
const OFFERED: u32 = 128;

#[test]
fn twice_the_capacity_is_refused_96_at_once_bounded_and_recovers() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |c| c.requests_in_flight = IN_FLIGHT).await;
        let cards: Vec<_> = (0..4).map(|i| w.bank("ICBC").healthy(i).clone()).collect();
        // Capacity: IN_FLIGHT per ISSUER_LATENCY; offered: twice that.
        let capacity_per_s = IN_FLIGHT as f64 / ISSUER_LATENCY.as_secs_f64();
        let interval = Duration::from_secs_f64(1.0 / (2.0 * capacity_per_s));
        w.bank("ICBC")
            .faults()
            .set_latency(ISSUER_LATENCY, ISSUER_LATENCY);

        let mut frames = Vec::new();
        for i in 0..OFFERED {
            let req = w.purchase(&cards[i as usize % cards.len()], 100);
            frames.push((req.stan, w.t.encode(&req, false)));
        }
        let switch = w.h.switch.as_ref().unwrap();
        let (mut reader, mut writer) = w.t.stream.split();
        let start = Instant::now();
        let send = async {
            let mut sent_at = HashMap::new();
            for (i, (stan, bytes)) in frames.iter().enumerate() {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                sent_at.insert(*stan, Instant::now());
                writer.write_all(bytes).await.unwrap();
            }
            sent_at
        };
        let receive = async {
            let mut answers = Vec::new();
            let mut in_flight_peak = 0;
            while answers.len() < OFFERED as usize {
                let mut prefix = [0u8; 2];
                tokio::time::timeout(Duration::from_secs(20), reader.read_exact(&mut prefix))
                    .await
                    .expect("requests left unanswered")
                    .unwrap();
                let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
                reader.read_exact(&mut body).await.unwrap();
                let at = Instant::now();
                let frame = Frame::decode_unprefixed(&body).unwrap();
                let stan = frame.message.stan().unwrap();
                let code = frame.message.text(39).unwrap().to_owned();
                answers.push((stan, code, at));
                in_flight_peak = in_flight_peak.max(switch.metrics().in_flight);
            }
            (answers, in_flight_peak)
        };
        // The in-flight count sampled every millisecond while the load runs: it must reach
        // the bound (the excess is refused because the bound is full) and never pass it.
        let done = std::sync::atomic::AtomicBool::new(false);
        let sample = async {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(switch.metrics().in_flight);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            peak
        };
        let load = async {
            let both = tokio::join!(send, receive);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            both
        };
        let ((sent_at, (answers, in_flight_peak)), sampled_peak) = tokio::join!(load, sample);
        let in_flight_peak = in_flight_peak.max(sampled_peak);

        let mut approved = 0;
        let mut refused = 0;
        let mut refusal_latency_max = Duration::ZERO;
        for (stan, code, at) in &answers {
            match code.as_str() {
                "00" => approved += 1,
                "96" => {
                    refused += 1;
                    refusal_latency_max = refusal_latency_max.max(at.duration_since(sent_at[stan]));
                }
                other => panic!("unexpected {other}"),
            }
        }
        let m = switch.metrics();
        eprintln!(
            "overload: offered {OFFERED} at {:.0}/s against a capacity of {capacity_per_s:.0}/s: \
             {approved} approved, {refused} refused 96 (slowest refusal {refusal_latency_max:?}), \
             in flight peak {in_flight_peak} of {}",
            2.0 * capacity_per_s,
            m.in_flight_max
        );
        // About half is refused; the admitted half keeps the issuer busy.
        assert!(refused >= OFFERED / 4, "{refused} refused");
        assert!(approved >= OFFERED / 4, "{approved} approved");
        assert_eq!(m.refused_overload, u64::from(refused));
        assert_eq!(m.in_flight_max, IN_FLIGHT as u64);
        assert_eq!(in_flight_peak, IN_FLIGHT as u64);
        // What the bound lets through, counted at the issuer's side: each admitted request
        // holds its place for ISSUER_LATENCY, so over the time the load was sent at most
        // IN_FLIGHT per ISSUER_LATENCY (and those in flight when it began) can be approved. A
        // bound not kept would approve more.
        let window = sent_at.values().max().unwrap().duration_since(start);
        let turns = (window.as_secs_f64() / ISSUER_LATENCY.as_secs_f64()).ceil() as u32;
        let admitted_max = IN_FLIGHT as u32 * (turns + 1);
        assert!(
            approved <= admitted_max,
            "{approved} approved in {window:?}: the bound of {IN_FLIGHT} admits {admitted_max}"
        );
        // Refused at once: a refusal never waits for an issuer, so each is back before an
        // issuer answer could have been.
        assert!(
            refusal_latency_max < ISSUER_LATENCY,
            "{refusal_latency_max:?}"
        );

        // Load drops (and the issuer is quick again): every purchase is approved.
        w.bank("ICBC").faults().clear();
        for i in 0..20 {
            let req = w.purchase(&cards[i % cards.len()], 100);
            assert_eq!(w.t.send(&req).await.code(), "00");
        }
        assert_eq!(w.metrics().in_flight, 0);
        assert!(w.reversals_delivered(10).await);
        w.audit();
    });
}

/// One issuer that stops answering (its link up) cannot take the switch's places from the
/// others: its requests beyond its share (half of `requests_in_flight` when there are other
/// links) are answered 91 at once, and another bank's card is still approved while it holds
/// its share. (A single issuer link has the whole bound: the overload test above.)
#[test]
fn a_silent_issuer_takes_at_most_half_the_switch() {
    runtime().block_on(async {
        // The slow bank's requests hold their places until it answers, inside the timeout.
        let mut w = start(&["ICBC", "CCB"], |c| {
            c.requests_in_flight = IN_FLIGHT;
            for endpoint in c.issuers.values_mut() {
                endpoint.timeout = Duration::from_secs(10);
            }
        })
        .await;
        let slow = w.bank("ICBC").healthy(0).clone();
        let other = w.bank("CCB").healthy(0).clone();
        // Longer than the test waits for any answer below: the bank is as good as silent.
        let stall = Duration::from_millis(1_500);
        w.bank("ICBC").faults().set_latency(stall, stall);
        let mut frames = Vec::new();
        for _ in 0..IN_FLIGHT {
            let req = w.purchase(&slow, 100);
            frames.push(w.t.encode(&req, false));
        }
        let started = Instant::now();
        for bytes in &frames {
            w.t.stream.write_all(bytes).await.unwrap();
        }
        // The excess over the slow bank's share comes back at once, 91.
        let mut codes = Vec::new();
        for _ in 0..IN_FLIGHT / 2 {
            let mut prefix = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(2), w.t.stream.read_exact(&mut prefix))
                .await
                .expect("the slow bank's excess was not answered at once")
                .unwrap();
            let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
            w.t.stream.read_exact(&mut body).await.unwrap();
            let frame = Frame::decode_unprefixed(&body).unwrap();
            codes.push(frame.message.text(39).unwrap().to_owned());
        }
        assert!(codes.iter().all(|c| c == "91"), "{codes:?}");
        assert!(started.elapsed() < stall);
        // Half the switch is still the other banks'.
        let req = w.purchase(&other, 100);
        let bytes = w.t.encode(&req, false);
        w.t.stream.write_all(&bytes).await.unwrap();
        let code = loop {
            let mut prefix = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(2), w.t.stream.read_exact(&mut prefix))
                .await
                .expect("the other bank's card was not answered")
                .unwrap();
            let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
            w.t.stream.read_exact(&mut body).await.unwrap();
            let frame = Frame::decode_unprefixed(&body).unwrap();
            if frame.message.stan() == Some(req.stan) {
                break frame.message.text(39).unwrap().to_owned();
            }
        };
        assert_eq!(code, "00");
        assert!(started.elapsed() < stall);
        // The slow bank's share is answered when it answers.
        let mut late = Vec::new();
        while late.len() < IN_FLIGHT / 2 {
            let mut prefix = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), w.t.stream.read_exact(&mut prefix))
                .await
                .expect("the slow bank's share was not answered")
                .unwrap();
            let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
            w.t.stream.read_exact(&mut body).await.unwrap();
            let frame = Frame::decode_unprefixed(&body).unwrap();
            late.push(frame.message.text(39).unwrap().to_owned());
        }
        assert!(late.iter().all(|c| c == "00"), "{late:?}");
        w.bank("ICBC").faults().clear();
        w.audit();
    });
}

/// A response MTI from a terminal (a 0210) that comes while the switch is full is not a
/// request, as at any other time: it is not answered (with a "response" to a response) but
/// closes the connection, and the request admitted before it is still answered.
#[test]
fn a_response_sent_while_full_is_not_answered() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |c| c.requests_in_flight = 1).await;
        let card = w.bank("ICBC").healthy(0).clone();
        w.bank("ICBC")
            .faults()
            .set_latency(ISSUER_LATENCY, ISSUER_LATENCY);
        let held = w.purchase(&card, 100);
        let held_frame = w.t.encode(&held, false);
        let odd = w.purchase(&card, 100);
        let mut odd_frame = w.t.encode(&odd, false);
        // Length prefix (2), TPDU (5), header (6), then the MTI: 0200 made 0210.
        assert_eq!(odd_frame[13..15], [0x02, 0x00]);
        odd_frame[14] = 0x10;
        let (mut reader, mut writer) = w.t.stream.split();
        writer.write_all(&held_frame).await.unwrap();
        // The purchase holds the switch's one place at the issuer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.write_all(&odd_frame).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest))
            .await
            .expect("the connection stayed open")
            .unwrap();
        let mut answered = Vec::new();
        let mut at = rest.as_slice();
        while let Some((prefix, body)) = at.split_first_chunk::<2>() {
            let len = usize::from(u16::from_be_bytes(*prefix));
            let frame = Frame::decode_unprefixed(&body[..len]).unwrap();
            answered.push((
                frame.message.stan().unwrap(),
                frame.message.text(39).unwrap().to_owned(),
            ));
            at = &body[len..];
        }
        assert_eq!(answered, vec![(held.stan, "00".to_owned())]);
    });
}

/// A terminal retrying into a full switch names itself in every refused frame: its connection
/// is one of ours, not let go at the first-frame time while the switch is busy.
#[test]
fn a_terminal_refused_while_full_keeps_its_connection() {
    runtime().block_on(async {
        let first_frame = Duration::from_millis(800);
        let latency = Duration::from_millis(2_500);
        let mut w = start(&["ICBC"], |c| {
            c.requests_in_flight = 1;
            c.first_frame_timeout = first_frame;
            // The issuer takes its time and is waited for: the place stays held.
            for issuer in c.issuers.values_mut() {
                issuer.timeout = 2 * latency;
            }
        })
        .await;
        let card = w.bank("ICBC").healthy(0).clone();
        w.bank("ICBC").faults().set_latency(latency, latency);
        // The one place held by a purchase at the slow issuer.
        let held = w.purchase(&card, 100);
        let held_frame = w.t.encode(&held, false);
        w.t.stream.write_all(&held_frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another connection of the terminal, refused while the place is held.
        let mut retrying = w.h.terminal().await;
        let began = Instant::now();
        let mut refused = 0;
        while began.elapsed() < 3 * first_frame {
            let r = retrying.sign_in().await;
            if r.code() == "96" {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            refused > 2,
            "the switch was not full throughout: {refused} refused"
        );
        assert_eq!(w.metrics().refused_overload, refused);
        // The place is given back: the same connection is served.
        assert_eq!(w.t.read().await.code(), "00");
        assert_eq!(retrying.sign_in().await.code(), "00");
    });
}
