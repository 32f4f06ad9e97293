//! Issuer faults against the real switch and two real issuer simulators (ICBC, CCB): an issuer
//! that stops answering, answers too slowly, or drops its link. The terminal gets 98 (sent, no
//! answer) or 91 (not sent) within the configured timeout, the other bank's purchase sent after
//! it is answered first, reversals wait in the queue and are delivered once the issuer is back,
//! and the audit finds every issuer approval completed or reversed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../switch/tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use issuer_sim::{DemoCard, TxnState as IssuerState};
use store::{SafState, Store, TxnState};
use support::{ISSUER_TIMEOUT, World, impatient_with, runtime, start};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Slack on top of the issuer timeout for the journal write and the reply (debug build, 2
/// shared cores): a bound, not a speed claim.
const ANSWER_SLACK: Duration = Duration::from_secs(3);

/// Sends a purchase on the faulty bank's card, then one on the healthy bank's, on one
/// connection without waiting; returns (faulty's code, healthy's code, healthy answered first,
/// time until the faulty one was answered, faulty's RRN).
async fn faulty_then_healthy(
    w: &mut World,
    faulty: &DemoCard,
    healthy: &DemoCard,
) -> (String, String, bool, Duration, Option<String>) {
    let a = w.purchase(faulty, 100);
    let b = w.purchase(healthy, 100);
    let mut bytes = w.t.encode(&a, false);
    bytes.extend(w.t.encode(&b, false));
    let sent = Instant::now();
    w.t.stream.write_all(&bytes).await.unwrap();
    let first = w.t.read().await;
    let second = w.t.read().await;
    let elapsed = sent.elapsed();
    let stan = |r: &common::Response| r.frame().message.stan().unwrap();
    let healthy_first = stan(&first) == b.stan;
    let (fa, ok) = if healthy_first {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(stan(&fa), a.stan);
    assert_eq!(stan(&ok), b.stan);
    (fa.code(), ok.code(), healthy_first, elapsed, fa.text(37))
}

#[test]
fn silent_or_slow_issuer_is_answered_98_in_time_others_unaffected_reversed_once_back() {
    runtime().block_on(async {
        let mut w = start(&["ICBC", "CCB"], |c| impatient_with(c, "ICBC")).await;
        let icbc = w.bank("ICBC").healthy(0).clone();
        let ccb = w.bank("CCB").healthy(0).clone();
        let faults = w.bank("ICBC").faults();

        for fault in ["silent", "slow"] {
            match fault {
                // The issuer acts on the request (debits) and never answers.
                "silent" => faults.drop_fraction(1.0),
                // It answers, three timeouts too late.
                _ => faults.set_latency(ISSUER_TIMEOUT * 3, ISSUER_TIMEOUT * 3),
            }
            let asked = faults.stats().requests;
            let (code, other, other_first, elapsed, rrn) =
                faulty_then_healthy(&mut w, &icbc, &ccb).await;
            assert_eq!(code, "98", "{fault}");
            assert_eq!(other, "00", "{fault}: CCB must be unaffected");
            assert!(other_first, "{fault}: CCB answered after the stalled ICBC");
            assert!(
                elapsed < ISSUER_TIMEOUT + ANSWER_SLACK,
                "{fault}: answered after {elapsed:?}"
            );
            // Timed out in the journal, with its reversal queued in the same commit.
            let row = w.store.txn_by_rrn(&rrn.unwrap()).unwrap().unwrap();
            assert_eq!(row.state, TxnState::TimedOut, "{fault}");
            let reversal = w.store.reversal(row.id).unwrap().unwrap();
            assert_eq!(reversal.state, SafState::Pending, "{fault}");
            // While the fault lasts the reversal is sent (the issuer sees it after the
            // request: it is sent at once), and kept, not given up.
            let stats = faults.clone();
            assert!(
                w.h.eventually(10, || stats.stats().requests >= asked + 2)
                    .await,
                "{fault}: no reversal reached the issuer during the fault"
            );
            let reversal = w.store.reversal(row.id).unwrap().unwrap();
            assert_eq!(reversal.state, SafState::Pending, "{fault}");
            faults.clear();
            assert!(
                w.reversals_delivered(20).await,
                "{fault}: reversal not delivered"
            );
            let row = w.store.txn(row.id).unwrap().unwrap();
            assert_eq!(row.state, TxnState::Reversed, "{fault}");
            // The issuer acted on the request and then on its reversal: it has it reversed.
            assert_eq!(
                w.issuer_state("ICBC", row.rrn.as_deref().unwrap()),
                Some(IssuerState::Reversed),
                "{fault}: the issuer never had the request, or has it otherwise"
            );
            // And the issuer is usable again.
            let again = w.purchase(&icbc, 100);
            assert_eq!(w.t.send(&again).await.code(), "00", "{fault}");
        }
        let m = w.metrics();
        assert!(
            m.requests
                .iter()
                .any(|r| r.kind == "purchase" && r.response_code == "98"),
            "{m:?}"
        );
        assert!(w.audit() >= 4);
    });
}

#[test]
fn dropped_link_is_answered_in_time_then_reconnects_and_delivers_reversals() {
    runtime().block_on(async {
        let mut w = start(&["ICBC", "CCB"], |c| impatient_with(c, "ICBC")).await;
        let icbc = w.bank("ICBC").healthy(1).clone();
        let ccb = w.bank("CCB").healthy(1).clone();
        let faults = w.bank("ICBC").faults();

        // The issuer acts on the request (debits the card), then the link drops before its
        // answer: sent, no answer, as uncertain as a timeout.
        faults.drop_next(1);
        let asked = faults.stats().requests;
        let cut = async {
            // Counted before it is handled, and handled before the link task looks at a cut.
            while faults.stats().requests == asked {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            faults.disconnect_all();
        };
        let ((code, other, _, elapsed, rrn), ()) =
            tokio::join!(faulty_then_healthy(&mut w, &icbc, &ccb), cut);
        assert_eq!(code, "98");
        assert_eq!(other, "00");
        assert!(elapsed < ISSUER_TIMEOUT + ANSWER_SLACK, "{elapsed:?}");
        assert!(faults.stats().disconnects >= 1);
        let lost = w.store.txn_by_rrn(&rrn.unwrap()).unwrap().unwrap();
        assert!(w.store.reversal(lost.id).unwrap().is_some(), "{lost:?}");
        // The switch reconnects and reverses it: the issuer's approval is undone.
        assert!(w.reversals_delivered(20).await, "reversal not delivered");
        assert_eq!(
            w.store.txn(lost.id).unwrap().unwrap().state,
            TxnState::Reversed
        );
        assert_eq!(
            w.issuer_state("ICBC", lost.rrn.as_deref().unwrap()),
            Some(IssuerState::Reversed),
            "the issuer acted on the request, and has it reversed"
        );

        // The issuer host goes away: nothing can be sent, so 91 at once, and nothing to reverse.
        let bank = w.banks.iter_mut().find(|b| b.code == "ICBC").unwrap();
        let addr = bank.addr;
        bank.server.take().unwrap().shutdown().await;
        let switch = w.h.switch.as_ref().unwrap();
        assert!(
            w.h.eventually(5, || !switch.issuer_connected("ICBC")).await,
            "link still up"
        );
        let (code, other, other_first, elapsed, _) = faulty_then_healthy(&mut w, &icbc, &ccb).await;
        assert_eq!(code, "91");
        assert_eq!(other, "00");
        assert!(other_first || elapsed < ISSUER_TIMEOUT);
        assert!(elapsed < ISSUER_TIMEOUT + ANSWER_SLACK, "{elapsed:?}");
        // Never sent: its row is not left in doubt and no reversal is queued for it (the
        // faulty request's trace is the one before the healthy one's).
        let unsent = w.store.txns_by_key(&w.t.tid, 1, w.stan - 1).unwrap();
        let unsent = unsent.first().unwrap();
        assert_eq!(unsent.state, TxnState::Failed, "{unsent:?}");
        assert!(unsent.issuer_answered_at_ms.is_none(), "{unsent:?}");
        assert!(w.store.reversal(unsent.id).unwrap().is_none(), "{unsent:?}");
        let m = w.metrics();
        let state = m.issuers.iter().find(|i| i.bank == "ICBC").unwrap();
        assert!(!state.connected, "{m:?}");

        // Back on the same address: the link reconnects by itself, and the issuer is used
        // again.
        let bank = w.banks.iter_mut().find(|b| b.code == "ICBC").unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        bank.server = Some(bank.sim.serve(listener).unwrap());
        let switch = w.h.switch.as_ref().unwrap();
        assert!(
            w.h.eventually(10, || switch.issuer_connected("ICBC")).await,
            "link did not come back"
        );
        let again = w.purchase(&icbc, 100);
        assert_eq!(w.t.send(&again).await.code(), "00");
        w.audit();
    });
}
