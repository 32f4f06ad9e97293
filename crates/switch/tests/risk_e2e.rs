//! Merchant onboarding and risk rules end to end: the switch against the real issuer simulator
//! over loopback TCP, merchants reviewed through `risk::ops` on the real SQLite store, rules
//! from a JSON rules file. Declines must carry the code and a timeline line naming the rule.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use iso8583::{MessageBuilder, Mti};
use issuer_sim::{DemoCard, HsmPinVerifier, IssuerSim, LedgerLocation, ServerHandle, demo_issuer};
use paycrypto::{Hsm, Key, KeyAlgorithm, KeyScheme, MacAlgorithm};
use risk::RuleBook;
use risk::ops::{Actor, AlertResponse};
use store::risk::{AlertState, MerchantState};
use store::{Record, Status, Store, TxnRow, TxnState};
use switch::{Switch, SystemClock};
use tokio::net::TcpListener;

/// A second merchant, reviewed through the lifecycle, with its own terminal.
const MID2: &str = "898110048990002";
const TID2: &str = "20000002";

const RULES: &str = r#"{
  "default": [
    {"id": "testing", "kind": "card-testing", "window_s": 600, "small_fen": 1000,
     "declines_max": 3}
  ],
  "merchants": {
    "898110048990001": [
      {"id": "domestic-only", "kind": "card-types",
       "accept": ["domestic-debit", "domestic-credit"]},
      {"id": "testing", "kind": "card-testing", "window_s": 600, "small_fen": 1000,
       "declines_max": 3}
    ]
  }
}"#;

struct World {
    h: Harness,
    sim: IssuerSim,
    _server: ServerHandle,
    cards: Vec<DemoCard>,
    _ledger_dir: tempfile::TempDir,
}

fn actor(operator: &str) -> Actor<'_> {
    Actor {
        operator,
        now_ms: SystemClock.now_ms(),
    }
}

use switch::Clock;

/// The switch with the rules file, the issuer simulator, merchant 1 (provisioned, so approved)
/// and merchant 2 (applied, not yet approved) with terminal `TID2`.
async fn world() -> World {
    world_with(RULES).await
}

/// Starts the harness's switch (stopped) with the risk rules `rules`.
async fn start_with_rules(h: &mut Harness, rules: &str) {
    start_with_rules_and_gate(h, rules, None).await;
}

/// The same, with `SwitchConfig::risk_check_gate` set to `gate`.
async fn start_with_rules_and_gate(
    h: &mut Harness,
    rules: &str,
    gate: Option<Arc<switch::TestGate>>,
) {
    let mut config = h.config();
    config.risk_check_gate = gate;
    config.risk_rules = Arc::new(RuleBook::from_json(rules).unwrap());
    config.risk_refresh = Duration::from_millis(50);
    let handle = Switch::start(
        config,
        Arc::clone(&h.store) as Arc<dyn Store>,
        Arc::clone(&h.hsm) as Arc<dyn Hsm>,
        Arc::clone(&h.directory),
        Arc::clone(&h.clock) as Arc<dyn switch::Clock>,
    )
    .await
    .unwrap();
    for _ in 0..100 {
        if handle.issuer_connected("SIM") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.switch = Some(handle);
}

/// The demo merchant's daily limit of 50,000 fen.
const DAILY: &str = r#"{"merchants": {"898110048990001": [
    {"id": "day", "kind": "daily-amount-max", "max_fen": 50000}]}}"#;

/// The harness's switch stopped and started again with `rules`, and a terminal signed in to it.
async fn restarted_with_rules(h: &mut Harness, rules: &str) -> Terminal {
    h.stop().await;
    start_with_rules(h, rules).await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    t
}

async fn world_with(rules: &str) -> World {
    let (hsm, zpk) = new_hsm();
    let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
    let ledger_dir = tempfile::tempdir().unwrap();
    let (issuer, cards) = demo_issuer(
        "ICBC",
        4,
        pins,
        LedgerLocation::File(ledger_dir.path().join("issuer.db")),
        Arc::new(issuer_sim::SystemClock),
    )
    .unwrap();
    let sim = IssuerSim::new(Arc::new(issuer), 7);
    let server = sim
        .serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let mut h = Harness::with_hsm(server.local_addr(), Arc::default(), hsm, zpk).await;
    h.stop().await;
    // Merchant 2 applies with its qualification data; its terminal is provisioned.
    let qualification = risk::Qualification {
        licence_no: "91310000MA1FL0002Y".into(),
        legal_person: "Li Si".into(),
        mcc: "5411".into(),
        address: "2 Huaihai Road, Shanghai".into(),
    };
    let store: &dyn Store = h.store.as_ref();
    risk::ops::apply(
        store,
        MID2,
        "Corner Shop",
        &qualification,
        actor("applicant"),
    )
    .await
    .unwrap();
    h.register_terminal(TID2, MID2).await;
    start_with_rules(&mut h, rules).await;
    World {
        h,
        sim,
        _server: server,
        cards,
        _ledger_dir: ledger_dir,
    }
}

fn head() -> iso8583::FrameHead {
    iso8583::FrameHead {
        tpdu: iso8583::Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: iso8583::Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    }
}

/// Signs `t` in as `tid` of `mid`.
async fn sign_in_as(t: &mut Terminal, tid: &str, mid: &str) -> String {
    let mut out = MessageBuilder::new(Mti::NETWORK);
    out.set_stan(1).unwrap();
    out.set_text(41, tid).unwrap().set_text(42, mid).unwrap();
    out.set_digits(60, "00000001003").unwrap();
    out.set_text(63, "001").unwrap();
    let mut bytes = Vec::new();
    out.encode_frame(&head(), &mut bytes).unwrap();
    let response = t.exchange(&bytes).await;
    if response.code() == "00" {
        let f62 = response.frame().message.bytes(62).unwrap().to_vec();
        let tmk = Key::from_hex(KeyAlgorithm::Des, TMK_HEX).unwrap();
        t.keys = Some(paycrypto::decode_field62(&tmk, KeyScheme::Double, &f62).unwrap());
    }
    response.code()
}

/// A purchase (or inquiry) from terminal `tid` naming merchant `mid` in field 42, MACed.
async fn send_as(t: &mut Terminal, req: &Req, tid: &str, mid: &str) -> Response {
    let mut out = MessageBuilder::new(req.mti);
    out.set_digits(2, &req.pan).unwrap();
    out.set_digits(3, req.processing).unwrap();
    out.set_amount(req.amount).unwrap();
    out.set_stan(req.stan).unwrap();
    out.set_digits(22, if req.pin.is_some() { "021" } else { "022" })
        .unwrap();
    out.set_digits(25, req.condition).unwrap();
    if let Some(pin) = &req.pin {
        let pik = &t.keys.as_ref().unwrap().pik;
        let digits = paycrypto::PanDigits::from_pan(&req.pan).unwrap();
        let block = paycrypto::pin::encrypt(pik, pin, &digits).unwrap();
        out.set_binary(52, block.as_bytes()).unwrap();
        out.set_digits(53, "2600000000000000").unwrap();
    }
    if let Some(rrn) = &req.rrn {
        out.set_text(37, rrn).unwrap();
    }
    out.set_text(41, tid).unwrap().set_text(42, mid).unwrap();
    out.set_text(49, "156").unwrap();
    out.set_digits(60, &format!("{}{:06}", req.message_type, t.batch))
        .unwrap();
    if let Some(f61) = &req.f61 {
        out.set_digits(61, f61).unwrap();
    }
    let mak = t.keys.as_ref().unwrap().mak.clone();
    let mut bytes = Vec::new();
    out.encode_frame_with_mac(&head(), &mut bytes, |data| {
        Ok::<_, iso8583::EncodeError>(
            paycrypto::mac::compute(MacAlgorithm::CupEcb, &mak, data).unwrap(),
        )
    })
    .unwrap();
    let response = t.exchange(&bytes).await;
    assert!(t.mac_ok(&response), "response MAC must verify");
    response
}

fn paid_with_pin(card: &DemoCard, amount: u64, stan: u32) -> Req {
    Req {
        pin: Some(card.pin().to_owned()),
        ..Req::purchase(card.pan.expose_digits(), amount, stan)
    }
}

/// A pre-authorisation of `amount` with the card's PIN.
fn held_with_pin(card: &DemoCard, amount: u64, stan: u32) -> Req {
    Req {
        mti: iso8583::Mti::AUTHORISATION,
        processing: "030000",
        condition: "06",
        message_type: "10",
        ..paid_with_pin(card, amount, stan)
    }
}

/// The journal row of a response, by its RRN, and its timeline in one string.
fn journalled(h: &Harness, response: &Response) -> (TxnRow, String) {
    let rrn = response
        .text(37)
        .expect("a journalled answer carries an RRN");
    let row = h.store.txn_by_rrn(rrn.trim()).unwrap().unwrap();
    let timeline = h
        .store
        .events(row.id)
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect::<Vec<_>>()
        .join("\n");
    (row, timeline)
}

#[test]
fn an_unapproved_merchant_is_declined_03_until_approved() {
    runtime().block_on(async {
        let w = world().await;
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let mut t = w.h.terminal().await;
        assert_eq!(sign_in_as(&mut t, TID2, MID2).await, "00");

        let r = send_as(&mut t, &paid_with_pin(healthy, 1_000, 2), TID2, MID2).await;
        assert_eq!(r.code(), "03");
        let (row, timeline) = journalled(&w.h, &r);
        assert_eq!(row.response_code.as_deref(), Some("03"));
        assert_eq!(row.mid, MID2);
        assert!(
            timeline.contains(switch::MERCHANT_NOT_APPROVED),
            "{timeline}"
        );
        assert!(timeline.contains("merchant-not-approved"), "{timeline}");

        // An operator reviews and approves; the running switch picks it up.
        let store: &dyn Store = w.h.store.as_ref();
        let profile = risk::ops::approve(store, MID2, "documents checked", actor("reviewer-1"))
            .await
            .unwrap();
        assert_eq!(profile.state, MerchantState::Approved);
        assert_eq!(profile.reviewed_by.as_deref(), Some("reviewer-1"));
        let reviews = store.merchant_reviews(MID2).unwrap();
        assert_eq!(
            reviews
                .iter()
                .map(|r| r.action.as_str())
                .collect::<Vec<_>>(),
            ["apply", "approve"]
        );
        let mut approved = None;
        for stan in 3..60 {
            let r = send_as(&mut t, &paid_with_pin(healthy, 1_000, stan), TID2, MID2).await;
            if r.code() != "03" {
                approved = Some((r.code(), stan, r.text(37).unwrap_or_default()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (code, sale_stan, sale_rrn) = approved.unwrap();
        assert_eq!(code, "00");

        // Suspended: declined 03 again. Approving twice is an illegal transition.
        risk::ops::suspend(store, MID2, "licence expired", actor("reviewer-2"))
            .await
            .unwrap();
        let twice = risk::ops::suspend(store, MID2, "", actor("reviewer-2")).await;
        assert!(matches!(twice, Err(risk::ops::OpsError::Transition(_))));
        let mut declined = false;
        for stan in 60..120 {
            let r = send_as(&mut t, &paid_with_pin(healthy, 1_000, stan), TID2, MID2).await;
            if r.code() == "03" {
                declined = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            declined,
            "a suspended merchant's purchase must be declined 03"
        );
        // It may still give money back: its sale is voided.
        let pan = healthy.pan.expose_digits();
        let void = Req::void(pan, 1_000, 200, sale_stan, &sale_rrn);
        assert_eq!(send_as(&mut t, &void, TID2, MID2).await.code(), "00");
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_terminal_sending_another_merchants_mid_is_declined_and_alerted() {
    runtime().block_on(async {
        let w = world().await;
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        // Terminal 1 belongs to merchant 1 but names merchant 2 (an approved one would be no
        // better: one terminal, one merchant).
        let asked_before = w.sim.faults().stats().requests;
        let r = send_as(&mut t, &paid_with_pin(healthy, 1_000, 2), TID, MID2).await;
        assert_eq!(r.code(), "03");
        assert_eq!(
            w.sim.faults().stats().requests,
            asked_before,
            "the issuer was asked"
        );
        let store = Arc::clone(&w.h.store);
        let alerted =
            w.h.eventually(5, || {
                store
                    .risk_alerts(Some(AlertState::Open), 10)
                    .unwrap()
                    .iter()
                    .any(|a| a.kind == "merchant-id-mismatch" && a.tid == TID && a.mid == MID)
            })
            .await;
        assert!(alerted, "a merchant ID mismatch raises an alert");
        // Sent again and again (a terminal set up for another merchant): declined each time,
        // alerted once, not once per request.
        for stan in 10..15 {
            let again = send_as(&mut t, &paid_with_pin(healthy, 1_000, stan), TID, MID2).await;
            assert_eq!(again.code(), "03");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mismatches = store
            .risk_alerts(Some(AlertState::Open), 50)
            .unwrap()
            .iter()
            .filter(|a| a.kind == "merchant-id-mismatch" && a.tid == TID)
            .count();
        assert_eq!(mismatches, 1);
        // Nothing was journalled, as a purchase of merchant 2 or at all.
        assert!(store.txns_by_batch(TID, 1).unwrap().is_empty());
        // The right MID still works, and the response names the registered merchant.
        let ok = t.send(&paid_with_pin(healthy, 1_000, 3)).await;
        assert_eq!(ok.code(), "00");
        assert_eq!(ok.text(63).as_deref(), Some("CUPTeahouse"));
        assert_eq!(
            w.h.switch.as_ref().unwrap().merchant_name(MID).as_deref(),
            Some("Teahouse")
        );
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_card_testing_burst_raises_an_alert_then_declines() {
    runtime().block_on(async {
        let w = world().await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        // Three small attempts with card numbers the issuer does not know: declined by the
        // issuer (14), each a different card.
        let mut declined_ids = Vec::new();
        for (i, prefix) in ["62220299", "62220298", "62220297"].into_iter().enumerate() {
            let stan = 10 + u32::try_from(i).unwrap();
            let r = t.send(&Req::purchase(&card(prefix), 100, stan)).await;
            assert_eq!(r.code(), "14", "the issuer declines an unknown card");
            declined_ids.push(journalled(&w.h, &r).0.id);
        }
        let store = Arc::clone(&w.h.store);
        let found =
            w.h.eventually(5, || {
                store
                    .risk_alerts(Some(AlertState::Open), 10)
                    .unwrap()
                    .iter()
                    .any(|a| a.kind == "card-testing")
            })
            .await;
        assert!(found, "the burst raises a card-testing alert");
        let alert = store
            .risk_alerts(Some(AlertState::Open), 10)
            .unwrap()
            .into_iter()
            .find(|a| a.kind == "card-testing")
            .unwrap();
        assert_eq!(alert.txn_ids, declined_ids, "the transactions behind it");
        assert_eq!(alert.tid, TID);
        // The outbox tails alerts by id.
        assert!(
            store
                .risk_alerts_after(0, 100)
                .unwrap()
                .iter()
                .any(|a| a.id == alert.id)
        );

        // The next small attempt, even with a good card, is declined by the rule.
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let r = t.send(&paid_with_pin(healthy, 500, 20)).await;
        assert_eq!(r.code(), "59");
        let (row, timeline) = journalled(&w.h, &r);
        assert_eq!(row.response_code.as_deref(), Some("59"));
        assert!(timeline.contains("card-testing"), "{timeline}");
        assert!(
            timeline.contains("\"testing\""),
            "names the rule: {timeline}"
        );
        // The form the explanation reads the rule's diagnosis from (resolve::explain).
        assert!(timeline.ends_with("(diagnosis card-testing)"), "{timeline}");
        // A real sale above the probing size still goes through.
        let big_sale = paid_with_pin(healthy, 25_000, 21);
        let big = t.send(&big_sale).await;
        assert_eq!(big.code(), "00");
        let other_sale = paid_with_pin(healthy, 26_000, 22);
        let other = t.send(&other_sale).await;
        assert_eq!(other.code(), "00");

        // The operator acts: the terminal is suspended, and the switch refuses it (58).
        let store_dyn: &dyn Store = w.h.store.as_ref();
        let acted = risk::ops::resolve_alert(
            store_dyn,
            alert.id,
            AlertResponse::SuspendTerminal,
            "confirmed card testing",
            actor("risk-1"),
        )
        .await
        .unwrap();
        assert_eq!(acted.state, AlertState::Acted);
        assert_eq!(
            w.h.store.terminal(TID).unwrap().unwrap().status,
            Status::Suspended
        );
        let again = risk::ops::resolve_alert(
            store_dyn,
            alert.id,
            AlertResponse::Clear,
            "",
            actor("risk-1"),
        )
        .await;
        assert!(matches!(
            again,
            Err(risk::ops::OpsError::AlertClosed { .. })
        ));
        let mut refused = false;
        for stan in 30..90 {
            let r = t.send(&paid_with_pin(healthy, 25_000, stan)).await;
            if r.code() == "58" {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "a suspended terminal is refused");
        // Except its reversals: a sale whose answer it never saw must still be given back to
        // the cardholder (the issuer's approval would stand, and the merchant be paid for it).
        let reversed = t.send(&Req::reversal_of(&big_sale)).await;
        assert_eq!(reversed.code(), "00", "a suspended terminal may reverse");
        let (row, _) = journalled(&w.h, &big);
        assert_eq!(row.state, TxnState::Reversed);
        assert!(
            w.h.store.reversal(row.id).unwrap().is_some(),
            "queued to the issuer"
        );
        // Signed in again (after a power cycle, or told to by an A0), it gets keys for its
        // reversals still, and no new business.
        assert_eq!(
            t.sign_in().await.code(),
            "00",
            "a suspended terminal signs in"
        );
        let r = t.send(&paid_with_pin(healthy, 25_000, 95)).await;
        assert_eq!(r.code(), "58");
        // MACed, as any answer after the MAC check: a terminal that finds no MAC on an answer
        // reverses the request.
        assert!(t.mac_ok(&r), "the refusal's MAC");
        // A request whose MAC fails is told so (A0), not that the terminal is suspended.
        let forged = t.encode(&paid_with_pin(healthy, 25_000, 96), true);
        assert_eq!(t.exchange(&forged).await.code(), "A0");
        let reversed = t.send(&Req::reversal_of(&other_sale)).await;
        assert_eq!(reversed.code(), "00", "reversed after signing in again");
        let (row, _) = journalled(&w.h, &other);
        assert_eq!(row.state, TxnState::Reversed);
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_foreign_card_at_a_domestic_only_merchant_is_declined_with_its_diagnosis() {
    runtime().block_on(async {
        let w = world().await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let visa = card("41111111");
        let r = t.send(&Req::purchase(&visa, 10_000, 2)).await;
        assert_eq!(r.code(), "58");
        let (row, timeline) = journalled(&w.h, &r);
        assert_eq!(row.state, store::TxnState::Declined);
        assert!(timeline.contains("card-not-accepted"), "{timeline}");
        assert!(timeline.contains("domestic-only"), "{timeline}");
        assert!(timeline.contains("foreign"), "{timeline}");
        let diagnosis = domain::diagnose_failure(domain::FailureKind::CardNotAccepted);
        assert!(!diagnosis.contact_issuer.recommended());
        // A domestic card at the same merchant is fine.
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        assert_eq!(
            t.send(&paid_with_pin(healthy, 10_000, 3)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

/// A sale received before China's midnight and checked after it (held between the two: a busy
/// switch, a slow journal read) is judged in the day it was received: that day's sales filled
/// the daily limit, so it is refused, though the next day has room. A check on the clock's day
/// after the wait would approve it against the new day's empty total, and count it in neither.
#[test]
fn a_sale_received_before_midnight_and_checked_after_it_is_judged_in_its_own_day() {
    runtime().block_on(async {
        let mut w = world_with(DAILY).await;
        w.h.stop().await;
        // The switch's clock half a minute before China's midnight (UTC+8).
        let (day, china) = (86_400_000_i64, 8 * 3_600_000_i64);
        let now = w.h.clock.now_ms();
        w.h.clock
            .shift_ms(day - (now + china).rem_euclid(day) - 30_000);
        let gate = Arc::new(switch::TestGate::default());
        start_with_rules_and_gate(&mut w.h, DAILY, Some(Arc::clone(&gate))).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        assert_eq!(
            t.send(&paid_with_pin(healthy, 50_000, 2)).await.code(),
            "00"
        );
        gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let after_the_limit = paid_with_pin(healthy, 100, 3);
        let held = tokio::spawn(async move {
            let answer = t.send(&after_the_limit).await;
            (t, answer)
        });
        let five = Duration::from_secs(5);
        tokio::time::timeout(five, gate.reached.notified())
            .await
            .expect("the sale never reached its risk check");
        w.h.clock.shift_ms(60_000);
        gate.release.notify_one();
        let (mut t, late) = tokio::time::timeout(five, held).await.unwrap().unwrap();
        assert_eq!(late.code(), "61");
        let (row, timeline) = journalled(&w.h, &late);
        assert!(timeline.contains("daily limit"), "{timeline}");
        assert!(
            (row.received_at_ms + china).rem_euclid(day) > day - 60_000,
            "received before midnight"
        );
        // The new day has room.
        assert_eq!(
            t.send(&paid_with_pin(healthy, 50_000, 4)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_daily_limit_counts_what_stands_and_frees_what_a_reversal_takes_back() {
    runtime().block_on(async {
        let w = world_with(DAILY).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let first = paid_with_pin(healthy, 30_000, 2);
        assert_eq!(t.send(&first).await.code(), "00");
        let over = t.send(&paid_with_pin(healthy, 30_000, 3)).await;
        assert_eq!(over.code(), "61");
        let (_, timeline) = journalled(&w.h, &over);
        assert!(timeline.contains("daily limit"), "{timeline}");
        // The terminal reverses the first sale: it no longer counts.
        assert_eq!(t.send(&Req::reversal_of(&first)).await.code(), "00");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 30_000, 4)).await.code(),
            "00"
        );
        // A sale the switch refuses after the checks passed it (here, a PIN block that does
        // not decrypt to one) holds nothing: the room it would have taken is still there.
        let bad_pin = Req {
            pin_block: Some([0x5A; 8]),
            ..Req::purchase(healthy.pan.expose_digits(), 20_000, 5)
        };
        let refused = t.send(&bad_pin).await;
        assert_eq!(refused.code(), "99");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 20_000, 6)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_terminal_that_moved_is_declined_alerted_once_and_let_in_once_an_operator_clears_it() {
    const MOVED: &str = r#"{"merchants": {"898110048990001": [
        {"id": "moved", "kind": "peer-change", "action": "decline"}]}}"#;
    runtime().block_on(async {
        let mut w = world_with(MOVED).await;
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        assert_eq!(t.send(&paid_with_pin(healthy, 1_000, 2)).await.code(), "00");
        drop(t);
        let addr = w.h.switch.as_ref().unwrap().local_addr();
        let elsewhere = "127.1.0.2".parse().unwrap();
        let mut moved = Terminal::connect_from(addr, TID, elsewhere).await;
        assert_eq!(moved.sign_in().await.code(), "00");
        for stan in 3..6 {
            let r = moved.send(&paid_with_pin(healthy, 1_000, stan)).await;
            assert_eq!(r.code(), "59", "request {stan}");
        }
        let store: &dyn Store = w.h.store.as_ref();
        // Alerts are written on a task of their own: wait for the first, then a little more
        // for any the later declines might have raised.
        for _ in 0..100 {
            if !store
                .risk_alerts(Some(AlertState::Open), 10)
                .unwrap()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open = store.risk_alerts(Some(AlertState::Open), 10).unwrap();
        assert_eq!(open.len(), 1, "one alert for the move, not one per decline");
        assert_eq!(open[0].kind, "peer-change");
        assert!(
            open[0].detail.contains("127.1.0.0/24"),
            "{}",
            open[0].detail
        );
        let zh = open[0].detail_zh.as_deref().unwrap_or_default();
        assert!(zh.contains("现从 127.1.0.0/24 接入"), "{zh}");
        // A restart does not let it in unlooked-at (its usual network was only in memory),
        // nor raise the alert again; however many newer alerts of other kinds are open (a
        // page of the thousand newest lost it).
        let newer: Vec<Record> = (0..1_001)
            .map(|n| {
                Record::Risk(store::risk::RiskRecord::Alert(Box::new(
                    store::risk::RiskAlertRow {
                        id: 1_000_000 + n,
                        kind: "mcc-profile".into(),
                        rule_id: "profile".into(),
                        action: store::risk::AlertAction::Alert,
                        mid: MID.into(),
                        tid: TID.into(),
                        detail: "a sale outside the profile".into(),
                        detail_zh: None,
                        txn_ids: Vec::new(),
                        raised_at_ms: open[0].raised_at_ms + 1 + n,
                        state: AlertState::Open,
                        resolved_by: None,
                        resolved_at_ms: None,
                        resolution: None,
                    },
                )))
            })
            .collect();
        w.h.store.submit(newer).unwrap().await.unwrap();
        drop(moved);
        w.h.stop().await;
        start_with_rules(&mut w.h, MOVED).await;
        let addr = w.h.switch.as_ref().unwrap().local_addr();
        let mut moved = Terminal::connect_from(addr, TID, elsewhere).await;
        assert_eq!(moved.sign_in().await.code(), "00");
        let r = moved.send(&paid_with_pin(healthy, 1_000, 7)).await;
        assert_eq!(r.code(), "59");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let store: &dyn Store = w.h.store.as_ref();
        assert_eq!(
            store.risk_open_declining("peer-change").unwrap(),
            [(MID.to_owned(), TID.to_owned())]
        );
        let peer_alerts = store
            .risk_alerts(Some(AlertState::Open), 2_000)
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "peer-change")
            .count();
        assert!(peer_alerts <= 1, "{peer_alerts}");
        risk::ops::resolve_alert(
            store,
            open[0].id,
            risk::ops::AlertResponse::Clear,
            "the shop moved to a new building",
            actor("risk-1"),
        )
        .await
        .unwrap();
        let mut let_in = false;
        for stan in 10..60 {
            let r = moved.send(&paid_with_pin(healthy, 1_000, stan)).await;
            if r.code() == "00" {
                let_in = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(let_in, "cleared, the new network is learnt");
        let mut h = w.h;
        h.stop().await;
    });
}

#[test]
fn a_record_written_to_the_store_reaches_the_switch() {
    // Guards the refresh path independently of the lifecycle: a merchant closed by a direct
    // store write is refused too.
    runtime().block_on(async {
        let w = world().await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        w.h.store
            .submit(vec![Record::Risk(
                store::risk::RiskRecord::MerchantStatus {
                    mid: MID.into(),
                    status: Status::Closed,
                },
            )])
            .unwrap()
            .await
            .unwrap();
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let mut refused = false;
        for stan in 2..60 {
            if t.send(&paid_with_pin(healthy, 1_000, stan)).await.code() == "03" {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused);
        // Nor does a closed merchant's terminal get working keys.
        let mut again = w.h.terminal().await;
        assert_eq!(again.sign_in().await.code(), "03");
        let mut h = w.h;
        h.stop().await;
    });
}

/// A void of an earlier day's pre-authorisation, reversed by its terminal: the amount goes back
/// to the pre-authorisation's day, not today's, which it never counted in. Before, today got
/// it, and the merchant's sales were declined 61 for the rest of the day.
#[test]
fn reversing_a_void_of_an_earlier_days_pre_authorisation_leaves_today_alone() {
    runtime().block_on(async {
        let w = world_with(DAILY).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let pan = healthy.pan.expose_digits();
        let pre_auth = held_with_pin(healthy, 30_000, 2);
        let held = t.send(&pre_auth).await;
        assert_eq!(held.code(), "00");
        w.h.clock.shift_days(1);
        let void = Req {
            mti: iso8583::Mti::AUTHORISATION,
            processing: "200000",
            condition: "06",
            message_type: "11",
            rrn: Some(held.text(37).unwrap()),
            f61: Some(format!("{:06}{:06}", 1, 2)),
            ..Req::purchase(pan, 30_000, 3)
        };
        assert_eq!(t.send(&void).await.code(), "00");
        assert_eq!(t.send(&Req::reversal_of(&void)).await.code(), "00");
        // Today has sold nothing: the whole limit is there.
        assert_eq!(
            t.send(&paid_with_pin(healthy, 50_000, 4)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

/// A sale made before a restart and reversed by its terminal after it comes back out of the
/// day: the start counted it from the journal, and its entry says so.
#[test]
fn a_sale_reversed_after_a_restart_comes_back_out_of_the_day() {
    runtime().block_on(async {
        let mut w = world_with(DAILY).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let sale = paid_with_pin(healthy, 30_000, 2);
        assert_eq!(t.send(&sale).await.code(), "00");
        let mut t = restarted_with_rules(&mut w.h, DAILY).await;
        assert_eq!(t.send(&Req::reversal_of(&sale)).await.code(), "00");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 50_000, 3)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

/// A completion for less than its pre-authorisation frees the rest of the hold in the
/// pre-authorisation's day (a hotel's deposit of 30,000 settled at 12,000); its void puts the
/// hold back, the void's reversal takes it off again, and a restart reads the day the same way.
/// Before, the whole hold stayed in the day, and a hotel's deposits tripped its daily limit on
/// money never captured.
#[test]
fn a_completion_for_less_frees_the_rest_of_its_hold_in_the_day() {
    runtime().block_on(async {
        let mut w = world_with(DAILY).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let pan = healthy.pan.expose_digits();
        let held = t.send(&held_with_pin(healthy, 30_000, 2)).await;
        assert_eq!(held.code(), "00");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 20_001, 3)).await.code(),
            "61"
        );
        let completion = Req {
            condition: "06",
            message_type: "20",
            rrn: Some(held.text(37).unwrap()),
            f61: Some(format!("{:06}{:06}", 1, 2)),
            ..Req::purchase(pan, 12_000, 4)
        };
        let completed = t.send(&completion).await;
        assert_eq!(completed.code(), "00");
        // 12,000 of the hold stands: room for 20,001 now.
        assert_eq!(
            t.send(&paid_with_pin(healthy, 20_001, 5)).await.code(),
            "00"
        );
        // The completion voided: the hold of 30,000 stands again, 50,001 in the day.
        let completion_void = Req {
            processing: "200000",
            condition: "06",
            message_type: "21",
            rrn: Some(completed.text(37).unwrap()),
            f61: Some(format!("{:06}{:06}", 1, 4)),
            ..Req::purchase(pan, 12_000, 6)
        };
        assert_eq!(t.send(&completion_void).await.code(), "00");
        assert_eq!(t.send(&paid_with_pin(healthy, 1, 7)).await.code(), "61");
        // Its terminal reverses the void: the completion stands again, 32,001 in the day.
        assert_eq!(
            t.send(&Req::reversal_of(&completion_void)).await.code(),
            "00"
        );
        assert_eq!(
            t.send(&paid_with_pin(healthy, 10_000, 8)).await.code(),
            "00"
        );
        // Restarted: the day is 42,001 (the pre-authorisation at its completion's 12,000).
        let mut t = restarted_with_rules(&mut w.h, DAILY).await;
        assert_eq!(t.send(&paid_with_pin(healthy, 8_000, 9)).await.code(), "61");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 7_999, 10)).await.code(),
            "00"
        );
        let mut h = w.h;
        h.stop().await;
    });
}

/// A pre-authorisation counts toward the day it is approved (the card's money is held for the
/// merchant from then on), its void takes it back out, and its completion on a later day adds
/// nothing. Counted at completion instead, pre-authorisations each under the limit and their
/// unjudged completions took a merchant past its daily limit as far as it liked.
#[test]
fn a_pre_authorisation_counts_for_its_own_day_and_its_completion_adds_nothing() {
    runtime().block_on(async {
        let mut w = world_with(DAILY).await;
        let mut t = w.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let healthy = w.cards.iter().find(|c| c.label == "healthy").unwrap();
        let pan = healthy.pan.expose_digits();
        let pre_auth = |amount, stan| held_with_pin(healthy, amount, stan);
        let first = t.send(&pre_auth(20_000, 2)).await;
        assert_eq!(first.code(), "00");
        let second = t.send(&pre_auth(25_000, 3)).await;
        assert_eq!(second.code(), "00");
        // 45,000 held today: no room for a third of 10,000.
        assert_eq!(t.send(&pre_auth(10_000, 4)).await.code(), "61");
        // The second voided: 20,000 stand, room for 30,000 and no more.
        let void = Req {
            mti: iso8583::Mti::AUTHORISATION,
            processing: "200000",
            condition: "06",
            message_type: "11",
            rrn: Some(second.text(37).unwrap()),
            f61: Some(format!("{:06}{:06}", 1, 3)),
            ..Req::purchase(pan, 25_000, 5)
        };
        assert_eq!(t.send(&void).await.code(), "00");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 30_001, 6)).await.code(),
            "61"
        );
        assert_eq!(
            t.send(&paid_with_pin(healthy, 30_000, 7)).await.code(),
            "00"
        );
        // Restarted, the day is read from the journal the same way: full.
        let mut t = restarted_with_rules(&mut w.h, DAILY).await;
        assert_eq!(t.send(&paid_with_pin(healthy, 100, 11)).await.code(), "61");
        // The next day: the first completed, which adds nothing to that day.
        w.h.clock.shift_days(1);
        let completion = Req {
            condition: "06",
            message_type: "20",
            rrn: Some(first.text(37).unwrap()),
            f61: Some(format!("{:06}{:06}", 1, 2)),
            ..Req::purchase(pan, 20_000, 8)
        };
        assert_eq!(t.send(&completion).await.code(), "00");
        assert_eq!(
            t.send(&paid_with_pin(healthy, 50_000, 9)).await.code(),
            "00"
        );
        assert_eq!(t.send(&paid_with_pin(healthy, 100, 10)).await.code(), "61");
        let mut h = w.h;
        h.stop().await;
    });
}
