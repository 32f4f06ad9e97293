//! The switch over real TCP: terminal ↔ switch ↔ an issuer host on loopback, SQLite journal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use paycrypto::Hsm;
use sha2::Digest;
use store::{SafState, TxnKind, TxnState};
use switch::Clock;

#[test]
fn sign_in_then_purchase_is_approved_journalled_and_maced() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let r = t.send(&Req::purchase(&pan, 12_345, 2)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(r.text(38).as_deref(), Some("A1B2C3"));
        assert!(
            t.mac_ok(&r),
            "response MAC must verify under the session MAK"
        );
        let rrn = r.text(37).unwrap();
        let row = h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.kind, TxnKind::Purchase);
        assert_eq!(row.state, TxnState::Approved);
        assert_eq!(row.amount_fen, 12_345);
        let pan_at_rest = row.pan.as_ref().unwrap();
        assert!(pan_at_rest.masked.starts_with("622202******"));
        assert!(pan_at_rest.masked.ends_with(&pan[pan.len() - 4..]));
        assert_eq!(pan_at_rest.last4, &pan[pan.len() - 4..]);
        assert!(
            !pan_at_rest
                .sealed
                .windows(pan.len())
                .any(|w| w == pan.as_bytes())
        );
        let events = h.store.events(row.id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.starts_with("approved by SIM")),
            "{events:?}"
        );

        // What a receipt prints: the card organisation, the issuer and the acquirer, the
        // settlement date (the issuer's).
        assert!(r.text(63).unwrap().starts_with("CUP"), "{:?}", r.text(63));
        assert_eq!(
            r.text(44).as_deref(),
            Some(format!("{:<11}{:<11}", "ICBC", "48020000").as_str())
        );
        assert_eq!(
            r.frame()
                .message
                .digits(15)
                .map(|d| d.to_string())
                .as_deref(),
            Some("1123")
        );

        let declined = t.send(&Req::purchase(&pan, DECLINE_AMOUNT, 3)).await;
        assert_eq!(declined.code(), "51");
        // The issuer gave no settlement date: the host's clearing date, and a foreign card is
        // named by its network.
        let today = switch::clearing_date_of(h.clock.now_ms(), h.config().cutover_minute);
        assert_eq!(
            declined
                .frame()
                .message
                .digits(15)
                .map(|d| d.to_string())
                .as_deref(),
            today.get(4..8)
        );
        assert!(declined.text(63).unwrap().starts_with("CUP"));
        let visa = t.send(&Req::purchase(&card("476173"), 1_000, 4)).await;
        assert!(
            visa.text(63).unwrap().starts_with("VIS"),
            "{:?}",
            visa.text(63)
        );
    });
}

#[test]
fn not_signed_in_and_bad_mac_are_told_to_sign_in_again() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        let pan = card("622202");
        assert_eq!(t.send(&Req::purchase(&pan, 100, 2)).await.code(), "77");
        t.sign_in().await;
        let bytes = t.encode(&Req::purchase(&pan, 100, 3), true);
        let r = t.exchange(&bytes).await;
        assert_eq!(r.code(), "A0");
        assert_eq!(r.frame().head.header.processing_requirement().digit(), 3);
        assert_eq!(
            h.log.requests.load(Ordering::SeqCst),
            0,
            "nothing reached the issuer"
        );
        // Batch out of step.
        t.batch = 2;
        assert_eq!(t.send(&Req::purchase(&pan, 100, 4)).await.code(), "77");
        t.batch = 1;
        // A request whose own header carries a processing requirement: the answer carries the
        // host's, none, not the terminal's echoed back.
        let mut asking = t.encode(&Req::purchase(&pan, 100, 5), false);
        asking[2 + 5 + 2] = (asking[2 + 5 + 2] & 0xF0) | 3;
        let r = t.exchange(&asking).await;
        assert_eq!(r.code(), "00");
        assert_eq!(r.frame().head.header.processing_requirement().digit(), 0);
    });
}

#[test]
fn retried_purchase_is_debited_once_and_different_content_is_94() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let req = Req::purchase(&pan, 500, 7);
        let first = t.send(&req).await;
        let second = t.send(&req).await;
        assert_eq!(first.code(), "00");
        assert_eq!(second.code(), "00");
        assert_eq!(first.text(37), second.text(37));
        assert_eq!(first.text(38), second.text(38));
        assert_eq!(
            h.log.requests.load(Ordering::SeqCst),
            1,
            "the issuer saw one debit"
        );
        assert_eq!(h.store.txns_by_key(TID, 1, 7).unwrap().len(), 1);
        // The resend was answered from memory before an id or an RRN was spent on it (taking a
        // new block of them may wait for the journal): the next purchase has the next of both.
        let next = t.send(&Req::purchase(&pan, 502, 20)).await;
        assert_eq!(next.code(), "00");
        let rrn_of = |r: &Response| r.text(37).unwrap().parse::<u64>().unwrap();
        assert_eq!(rrn_of(&next), rrn_of(&first) + 1, "the resend took an RRN");
        let id_of = |stan| h.store.txns_by_key(TID, 1, stan).unwrap().remove(0).id;
        assert_eq!(id_of(20), id_of(7) + 1, "the resend took an id");
        // What tells a retry from other content is keyed: a plain hash of the request, which
        // holds the card number, would give the number back to a reader of the journal who
        // tries the digits its masked form hides.
        let row = h.store.txns_by_key(TID, 1, 7).unwrap().remove(0);
        let sent = t.encode(&req, false);
        let input = iso8583::Frame::decode(&sent).unwrap().message.mac_input();
        assert_eq!(row.request_hash[..], h.hsm.fingerprint(input)[..16]);
        assert_ne!(row.request_hash[..], sha2::Sha256::digest(input)[..16]);

        // Two copies at once: still one debit.
        let req = Req::purchase(&pan, 600, 8);
        let bytes = t.encode(&req, false);
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let a = t.exchange(&twice).await;
        let b = t.read().await;
        assert_eq!((a.code(), b.code()), ("00".into(), "00".into()));
        assert_eq!(a.text(37), b.text(37));
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 3);

        let other = Req::purchase(&pan, 501, 7);
        assert_eq!(t.send(&other).await.code(), "94");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 3);
    });
}

/// The in-memory index holds two days; the month before is in the store. Three days on, after
/// a restart (which loads only the two days), requests under old keys and about old originals
/// are answered as they were while the index held everything.
#[test]
fn days_later_old_keys_are_answered_from_the_store() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let purchase = Req::purchase(&pan, 500, 7);
        let first = t.send(&purchase).await;
        assert_eq!(first.code(), "00");
        let refundable = t.send(&Req::purchase(&pan, 800, 8)).await;
        let refundable_rrn = refundable.text(37).unwrap();
        let bought_on = switch::LocalTime::from_ms(h.clock.now_ms()).mmdd();
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 2);

        h.stop().await;
        h.clock.shift_days(3);
        h.start().await;
        let mut t = h.terminal().await;
        t.sign_in().await;

        // The same request again (batch 1 is still open): the first answer, no second debit.
        let again = t.send(&purchase).await;
        assert_eq!(again.code(), "00");
        assert_eq!(again.text(37), first.text(37));
        assert_eq!(again.text(38), first.text(38));
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 2, "debited again");
        // Other content under the old key: 94.
        assert_eq!(t.send(&Req::purchase(&pan, 501, 7)).await.code(), "94");
        // Its reversal, three days late: the original is from another day, 25, not "not
        // found" (00), and nothing goes to the issuer.
        assert_eq!(t.send(&Req::reversal_of(&purchase)).await.code(), "25");
        assert_eq!(
            h.store
                .txn_by_rrn(&first.text(37).unwrap())
                .unwrap()
                .unwrap()
                .state,
            TxnState::Approved
        );

        // A refund of the old purchase; the switch restarts before the terminal hears back,
        // and the terminal reverses the refund: the purchase gets its amount back, though
        // the index holds only the refund.
        let refund = Req::refund(&pan, 800, 9, &refundable_rrn, &bought_on);
        assert_eq!(t.send(&refund).await.code(), "00");
        h.stop().await;
        h.start().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        assert_eq!(t.send(&Req::reversal_of(&refund)).await.code(), "00");
        assert_eq!(
            h.store
                .txn_by_rrn(&refundable_rrn)
                .unwrap()
                .unwrap()
                .refunded_fen,
            0
        );
        // Until the issuer has taken the reversal, the refund may still stand there: a new
        // one is to be tried again later (09), not sent.
        let refund_id = h.store.txns_by_key(TID, 1, 9).unwrap()[0].id;
        let taken = h.reversal_acked(refund_id, 10).await;
        assert!(taken, "{:?}", h.store.reversal(refund_id));
        let refund_again = Req::refund(&pan, 800, 10, &refundable_rrn, &bought_on);
        assert_eq!(t.send(&refund_again).await.code(), "00");
    });
}

/// A start answers terminals before it has read the month's terminal batches. Meanwhile a
/// request under a key the index does not hold reads the store: a retry days later from a
/// terminal that did not sign in again gets its first answer, not a second debit.
#[test]
fn requests_while_a_start_reads_the_month_are_answered_from_the_store() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let purchase = Req::purchase(&pan, 500, 7);
        let first = t.send(&purchase).await;
        assert_eq!(first.code(), "00");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 1);

        h.stop().await;
        h.clock.shift_days(3);
        let gate = Arc::new(tokio::sync::Notify::new());
        h.marks_gate = Some(Arc::clone(&gate));
        h.start().await;
        assert!(!h.switch.as_ref().unwrap().marks_loaded());
        // The same terminal on a new connection with the keys it had: no sign-in, so no
        // sign-in reads its batch.
        let keys = t.keys.take();
        let mut t = h.terminal().await;
        t.keys = keys;
        let again = t.send(&purchase).await;
        assert_eq!(again.code(), "00");
        assert_eq!(again.text(37), first.text(37));
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 1, "debited again");
        assert_eq!(t.send(&Req::purchase(&pan, 501, 7)).await.code(), "94");
        // A new request reads the store too, finds nothing, and goes to the issuer.
        assert_eq!(t.send(&Req::purchase(&pan, 600, 8)).await.code(), "00");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 2);
        assert!(!h.switch.as_ref().unwrap().marks_loaded());

        gate.notify_one();
        let switch = h.switch.as_ref().unwrap();
        assert!(h.eventually(5, || switch.marks_loaded()).await);
        let again = t.send(&purchase).await;
        assert_eq!(again.text(37), first.text(37));
        assert_eq!(t.send(&Req::purchase(&pan, 700, 9)).await.code(), "00");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn issuer_timeout_answers_98_and_the_reversal_reaches_the_issuer() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let r = t.send(&Req::purchase(&pan, SILENT_AMOUNT, 9)).await;
        assert_eq!(r.code(), "98");
        let rrn = r.text(37).unwrap();
        let log = Arc::clone(&h.log);
        let got = h
            .eventually(5, || {
                log.reversals.lock().unwrap().iter().any(|(_, r)| *r == rrn)
            })
            .await;
        assert!(got, "reversal never reached the issuer");
        let row = h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        let acked = h.reversal_acked(row.id, 5).await;
        assert!(acked);
        let row = h.store.txn(row.id).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Reversed);
        // The terminal's own reversal of it is acknowledged without a second one.
        let reversal = Req::reversal_of(&Req::purchase(&pan, SILENT_AMOUNT, 9));
        assert_eq!(t.send(&reversal).await.code(), "25");
    });
}

/// A sale timed out, its reversal answered `codes` (none of them a refusal) and then
/// acknowledged: sent once per code and once more, it lands, the sale reversed.
fn lands_when_resent_after(codes: [&'static str; 2]) {
    runtime().block_on(async {
        let h = Harness::new().await;
        h.log.reversal_codes.lock().unwrap().extend(codes);
        let (_t, rrn, id) = h.sale_timed_out(9).await;
        let acked = h.reversal_acked(id, 10).await;
        assert!(acked, "{:?}", h.store.reversal(id).unwrap());
        let sent = h.log.reversals.lock().unwrap().clone();
        assert_eq!(sent.iter().filter(|(_, r)| *r == rrn).count(), 3);
        assert_eq!(h.store.txn(id).unwrap().unwrap().state, TxnState::Reversed);
    });
}

/// An issuer that answers a reversal with a code about the acquirer's side of the link (a
/// format or MAC error: it could not read the message) has not undone the sale: the reversal
/// stays queued and lands when resent, where it was recorded as refused and never sent again,
/// the card left charged.
#[test]
fn a_reversal_the_issuer_could_not_read_is_sent_again() {
    lands_when_resent_after(["30", "A0"]);
}

/// A reversal answered 98 (a gateway's issuer did not answer it in time) or with a code no table
/// here holds (an issuer's own) has not been refused: it stays queued and lands when resent,
/// where it was recorded as refused and never sent again, the card left charged.
#[test]
fn a_reversal_answered_98_or_an_unknown_code_is_sent_again() {
    lands_when_resent_after(["98", "Q7"]);
}

/// An issuer that answers a reversal with a code no table here holds, and such a code again to
/// its resend (the same, or another: `second`): that answer is taken as its refusal, listed as
/// standing for someone to take up, not resent every minute for ever. Put off before for
/// another reason (a timeout), the first such answer still gets its resend.
fn refused_on_a_second_unknown_code(second: &'static str) {
    runtime().block_on(async {
        let h = Harness::new().await;
        h.log
            .reversal_codes
            .lock()
            .unwrap()
            .extend(["96", "96", "96", "Q7", second, "00"]);
        let (_t, rrn, id) = h.sale_timed_out(9).await;
        let store = Arc::clone(&h.store);
        let refused = h
            .eventually(20, move || {
                store
                    .reversal(id)
                    .unwrap()
                    .is_some_and(|r| r.state == SafState::Refused)
            })
            .await;
        let item = h.store.reversal(id).unwrap().unwrap();
        assert!(refused, "{item:?}");
        assert_eq!(item.last_error.as_deref(), Some(second));
        assert!(item.refused_standing());
        let sent = h.log.reversals.lock().unwrap().clone();
        assert_eq!(sent.iter().filter(|(_, r)| *r == rrn).count(), 5);
    });
}

#[test]
fn a_reversal_answered_an_unknown_code_again_and_again_is_refused() {
    refused_on_a_second_unknown_code("Q7");
}

/// An issuer alternating codes of its own is not resent for ever either.
#[test]
fn a_reversal_answered_two_unknown_codes_in_a_row_is_refused() {
    refused_on_a_second_unknown_code("Q8");
}

#[test]
fn pending_reversal_survives_a_restart() {
    runtime().block_on(async {
        let log = Arc::new(common::IssuerLog::default());
        // The issuer ignores reversals for now: the reversal stays pending.
        log.answer_reversals.store(false, Ordering::SeqCst);
        let issuer = start_issuer(Arc::clone(&log)).await;
        let mut h = Harness::with_issuer(issuer, Arc::clone(&log)).await;
        let (t, rrn, id) = h.sale_timed_out(11).await;
        assert_eq!(
            h.store.reversal(id).unwrap().unwrap().state,
            SafState::Pending
        );
        h.stop().await;
        drop(t);

        // Restart on the same database; the issuer now acknowledges.
        log.reversals.lock().unwrap().clear();
        log.answer_reversals.store(true, Ordering::SeqCst);
        h.start().await;
        let acked = h.reversal_acked(id, 10).await;
        assert!(acked, "pending reversal not delivered after restart");
        assert!(log.reversals.lock().unwrap().iter().any(|(_, r)| *r == rrn));
    });
}

#[test]
fn linked_transaction_checks() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let other = card("622848");
        let purchase = t.send(&Req::purchase(&pan, 10_000, 20)).await;
        assert_eq!(purchase.code(), "00");
        let rrn = purchase.text(37).unwrap();

        // Void: other card 14, wrong amount 64, unknown original 25, then approved, then 12.
        assert_eq!(
            t.send(&Req::void(&other, 10_000, 21, 20, &rrn))
                .await
                .code(),
            "14"
        );
        assert_eq!(
            t.send(&Req::void(&pan, 9_000, 22, 20, &rrn)).await.code(),
            "64"
        );
        assert_eq!(
            t.send(&Req::void(&pan, 10_000, 23, 999, "009999999999"))
                .await
                .code(),
            "25"
        );
        assert_eq!(
            t.send(&Req::void(&pan, 10_000, 24, 20, &rrn)).await.code(),
            "00"
        );
        assert_eq!(
            t.send(&Req::void(&pan, 10_000, 25, 20, &rrn)).await.code(),
            "12"
        );
        let row = h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Voided);

        // Refunds against a second purchase: partial ok, total over the original 61.
        let p2 = t.send(&Req::purchase(&pan, 5_000, 30)).await;
        let rrn2 = p2.text(37).unwrap();
        let today = switch::LocalTime::from_ms(h.clock.now_ms()).mmdd();
        let date = today.as_str();
        let another_day = switch::LocalTime::from_ms(h.clock.now_ms() + 10 * 86_400_000).mmdd();
        assert_eq!(
            t.send(&Req::refund(&pan, 3_000, 31, &rrn2, date))
                .await
                .code(),
            "00"
        );
        assert_eq!(
            t.send(&Req::refund(&pan, 2_500, 32, &rrn2, date))
                .await
                .code(),
            "61"
        );
        assert_eq!(
            t.send(&Req::refund(&other, 1_000, 33, &rrn2, date))
                .await
                .code(),
            "14"
        );
        // The right RRN under another day's date names another sale than the terminal
        // thinks: 25, and nothing refunded.
        assert_eq!(
            t.send(&Req::refund(&pan, 1_000, 35, &rrn2, &another_day))
                .await
                .code(),
            "25"
        );
        assert_eq!(
            t.send(&Req::refund(&pan, 2_000, 34, &rrn2, date))
                .await
                .code(),
            "00"
        );
        assert_eq!(
            h.store.txn_by_rrn(&rrn2).unwrap().unwrap().refunded_fen,
            5_000
        );

        // Reversals: unknown original 00, amount differs 64, approved original reversed 00.
        let ghost = Req::reversal_of(&Req::purchase(&pan, 100, 777));
        assert_eq!(t.send(&ghost).await.code(), "00");
        let p3 = Req::purchase(&pan, 700, 40);
        let p3r = t.send(&p3).await;
        let wrong = Req {
            amount: 701,
            ..Req::reversal_of(&p3)
        };
        assert_eq!(t.send(&wrong).await.code(), "64");
        let p4 = Req::purchase(&pan, 800, 41);
        let p4r = t.send(&p4).await;
        assert_eq!(t.send(&Req::reversal_of(&p4)).await.code(), "00");
        let log = Arc::clone(&h.log);
        let rrn4 = p4r.text(37).unwrap();
        assert!(
            h.eventually(5, || log
                .reversals
                .lock()
                .unwrap()
                .iter()
                .any(|(_, r)| *r == rrn4))
                .await
        );
        assert_eq!(
            h.store.txn_by_rrn(&rrn4).unwrap().unwrap().state,
            TxnState::Reversed
        );
        assert_eq!(
            h.store
                .txn_by_rrn(&p3r.text(37).unwrap())
                .unwrap()
                .unwrap()
                .state,
            TxnState::Approved
        );

        // What was refunded cannot be voided, and what was voided or refunded cannot be
        // reversed: either would credit the card a second time. Each is answered 12 and
        // changes nothing; the issuer is not asked.
        let reversals_before = log.reversals.lock().unwrap().len();
        assert_eq!(
            t.send(&Req::void(&pan, 5_000, 50, 30, &rrn2)).await.code(),
            "12"
        );
        assert_eq!(
            t.send(&Req::reversal_of(&Req::purchase(&pan, 5_000, 30)))
                .await
                .code(),
            "12"
        );
        assert_eq!(
            t.send(&Req::reversal_of(&Req::purchase(&pan, 10_000, 20)))
                .await
                .code(),
            "12"
        );
        let p2_row = h.store.txn_by_rrn(&rrn2).unwrap().unwrap();
        assert_eq!(
            (p2_row.state, p2_row.refunded_fen),
            (TxnState::Approved, 5_000)
        );
        assert_eq!(
            h.store.txn_by_rrn(&rrn).unwrap().unwrap().state,
            TxnState::Voided
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(log.reversals.lock().unwrap().len(), reversals_before);
        // A partly refunded purchase cannot be voided either.
        let p5 = t.send(&Req::purchase(&pan, 6_000, 60)).await;
        let rrn5 = p5.text(37).unwrap();
        assert_eq!(
            t.send(&Req::refund(&pan, 1_000, 61, &rrn5, date))
                .await
                .code(),
            "00"
        );
        assert_eq!(
            t.send(&Req::void(&pan, 6_000, 62, 60, &rrn5)).await.code(),
            "12"
        );
    });
}

#[test]
fn a_refund_at_another_terminal_finds_its_original_by_rrn() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        h.register_terminal("10000002", MID).await;
        h.stop().await;
        h.start().await;
        let mut t1 = h.terminal().await;
        t1.sign_in().await;
        let mut t2 = h.terminal_as("10000002").await;
        assert_eq!(t2.sign_in().await.code(), "00");
        let (card_a, card_b) = (card("622202"), card("622848"));
        // Both terminals are in batch 1 and both use trace 5.
        let bought = t1.send(&Req::purchase(&card_a, 4_000, 5)).await;
        assert_eq!(bought.code(), "00");
        let rrn_a = bought.text(37).unwrap();
        assert_eq!(
            t2.send(&Req::purchase(&card_b, 9_000, 5)).await.code(),
            "00"
        );
        let date = switch::LocalTime::from_ms(switch::Clock::now_ms(&switch::SystemClock)).mmdd();

        // The refund at the second terminal names the first's sale by RRN and by the first
        // terminal's batch and trace: it is that sale's, not the second terminal's own trace 5.
        let refund = Req {
            f61: Some(format!("{:06}{:06}{date}", 1, 5)),
            ..Req::refund(&card_a, 1_500, 6, &rrn_a, &date)
        };
        assert_eq!(t2.send(&refund).await.code(), "00");
        assert_eq!(
            h.store.txn_by_rrn(&rrn_a).unwrap().unwrap().refunded_fen,
            1_500
        );
        // A batch and trace that are not the RRN's original: not found.
        let mismatched = Req {
            f61: Some(format!("{:06}{:06}{date}", 1, 7)),
            ..Req::refund(&card_a, 500, 7, &rrn_a, &date)
        };
        assert_eq!(t2.send(&mismatched).await.code(), "25");

        // A void names its original by this terminal's batch and trace; an RRN that is not
        // that transaction's is not found either.
        let other = t1.send(&Req::purchase(&card_a, 300, 8)).await;
        let wrong_rrn = other.text(37).unwrap();
        assert_eq!(
            t1.send(&Req::void(&card_a, 4_000, 9, 5, &wrong_rrn))
                .await
                .code(),
            "25"
        );
        // A void's field 38, when sent, must be the original's authorisation code.
        let sale = t1.send(&Req::purchase(&card_a, 700, 12)).await;
        let (sale_rrn, sale_auth) = (sale.text(37).unwrap(), sale.text(38).unwrap());
        let void_with = |auth: &str, stan: u32| Req {
            auth_code: Some(auth.to_owned()),
            ..Req::void(&card_a, 700, stan, 12, &sale_rrn)
        };
        assert_eq!(t1.send(&void_with("ZZZZZZ", 13)).await.code(), "25");
        assert_eq!(t1.send(&void_with(&sale_auth, 14)).await.code(), "00");
    });
}

#[test]
fn a_response_mti_from_a_terminal_is_not_handled_as_its_request() {
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let asked = h.log.requests.load(Ordering::SeqCst);
        // A purchase's fields under the purchase response's MTI.
        let bytes = t.encode(
            &Req {
                mti: iso8583::Mti::FINANCIAL_RESPONSE,
                ..Req::purchase(&card("622202"), 100, 2)
            },
            false,
        );
        t.stream.write_all(&bytes).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            t.stream.read_to_end(&mut rest),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "closed without an answer: {read:?} {rest:?}"
        );
        assert_eq!(
            h.log.requests.load(Ordering::SeqCst),
            asked,
            "nothing went to the issuer"
        );
        // The terminal's next connection works.
        let mut again = h.terminal().await;
        again.sign_in().await;
        assert_eq!(
            again
                .send(&Req::purchase(&card("622202"), 100, 3))
                .await
                .code(),
            "00"
        );
    });
}

#[test]
fn a_retried_balance_inquiry_gets_its_balance_from_a_restarted_switch() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let inquiry = Req {
            processing: "310000",
            message_type: "01",
            ..Req::purchase(&card("622202"), 0, 7)
        };
        let first = t.send(&inquiry).await;
        assert_eq!(first.code(), "00");
        assert_eq!(first.text(54).as_deref(), Some(BALANCE_54));
        let asked = h.log.requests.load(Ordering::SeqCst);

        // The switch restarts; the terminal, its answer lost, sends the same request again on
        // a new connection (its keys are the switch's still).
        h.stop().await;
        h.start().await;
        let mut again = h.terminal().await;
        again.keys = t.keys.clone();
        let retried = again.send(&inquiry).await;
        assert_eq!(retried.code(), "00");
        assert_eq!(retried.text(37), first.text(37), "the same inquiry");
        assert_eq!(
            retried.text(54).as_deref(),
            Some(BALANCE_54),
            "the same balance"
        );
        assert_eq!(
            h.log.requests.load(Ordering::SeqCst),
            asked,
            "not asked again"
        );
    });
}

#[test]
fn working_keys_are_freed_and_never_weakened() {
    runtime().block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut h = Harness::new().await;
        let before = h.hsm.key_count();
        // A weaker scheme than the terminal's (single DES for a double-length terminal): 58.
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in_with("001").await.code(), "58");
        assert_eq!(h.hsm.key_count(), before);
        // A stronger one its master key cannot carry (SM4 keys under a 3DES master key): 58
        // too, the terminal's set-up, not a fault to retry (96).
        assert_eq!(t.sign_in_with("006").await.code(), "58");
        assert_eq!(h.hsm.key_count(), before);
        // A terminal set up with a track key (004) asking for none (003): 58, or it would
        // send its tracks in clear with the host's consent. Its own scheme signs in.
        h.register_terminal_with(
            "10000077",
            MID,
            paycrypto::KeyScheme::DoubleWithTdk,
            paycrypto::MakLength::Double,
        )
        .await;
        h.stop().await;
        h.start().await;
        let before = h.hsm.key_count();
        let mut with_tdk = h.terminal_as("10000077").await;
        assert_eq!(with_tdk.sign_in_with("003").await.code(), "58");
        assert_eq!(h.hsm.key_count(), before);
        assert_eq!(with_tdk.sign_in_with("004").await.code(), "00");
        let before = h.hsm.key_count();
        let mut t = h.terminal().await;
        // Ten sign-ins of one terminal at once: one set of keys stays in the HSM.
        let mut connections = Vec::new();
        for _ in 0..10 {
            connections.push(h.terminal().await);
        }
        let signing: Vec<_> = connections
            .into_iter()
            .map(|mut t| tokio::spawn(async move { t.sign_in().await.code() }))
            .collect();
        for s in signing {
            assert_eq!(s.await.unwrap(), "00");
        }
        assert_eq!(h.hsm.key_count(), before + 2, "one PIK and one MAK live");
        // A sign-off carrying a MAC its keys do not give: A0, and the keys stay.
        let mut out = iso8583::MessageBuilder::new(iso8583::Mti::NETWORK_ADVICE);
        out.set_stan(2).unwrap();
        out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
        out.set_digits(60, "00000001002").unwrap();
        let mut signing_in = h.terminal().await;
        assert_eq!(signing_in.sign_in().await.code(), "00");
        let forged = t.encode_with_mac(&out, true);
        assert_eq!(t.exchange(&forged).await.code(), "A0");
        assert_eq!(
            h.hsm.key_count(),
            before + 2,
            "a forged sign-off freed the keys"
        );
        let sale = Req::purchase(&card("622202"), 100, 3);
        assert_eq!(signing_in.send(&sale).await.code(), "00");
        // A sign-off frees them: one with the right MAC, its answer MACed with the keys it
        // ends; then one with no MAC, as most terminals send it, has nothing left to free.
        let signed_off = signing_in
            .exchange(&signing_in.encode_with_mac(&out, false))
            .await;
        assert_eq!(signed_off.code(), "00");
        assert!(signing_in.mac_ok(&signed_off), "the answer's MAC");
        assert_eq!(h.hsm.key_count(), before);
        let mut bytes = Vec::new();
        out.encode_frame(&common::head(), &mut bytes).unwrap();
        assert_eq!(t.exchange(&bytes).await.code(), "00");
        assert_eq!(h.hsm.key_count(), before);
        let _ = t.stream.flush().await;
    });
}

#[test]
fn a_reply_carrying_another_requests_rrn_or_none_does_not_answer_this_one() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        // The issuer's reply has this request's trace but another request's RRN (a late reply
        // to an earlier request whose trace came round again): not this request's answer,
        // which is still awaited (here it never comes: 98).
        let r = t
            .send(&Req::purchase(&card("622202"), OTHER_RRN_AMOUNT, 3))
            .await;
        assert_eq!(r.code(), "98");
        let rrn = r.text(37).unwrap();
        let row = h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::TimedOut);
        // Whatever the issuer did with this request is reversed.
        assert!(h.store.reversal(row.id).unwrap().is_some());
        // When its own answer follows the late one, that answer counts.
        let r = t
            .send(&Req::purchase(&card("622202"), LATE_THEN_OWN_AMOUNT, 6))
            .await;
        assert_eq!(r.code(), "00");
        let own = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(own.state, TxnState::Approved);
        // Nor does an approval that names no RRN at all: it cannot show it is this one's.
        let r = t
            .send(&Req::purchase(&card("622202"), NO_RRN_AMOUNT, 4))
            .await;
        assert_eq!(r.code(), "96");
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Failed);
        assert!(h.store.reversal(row.id).unwrap().is_some());
        // Nor is a response code outside the protocol's table taken for a decline: it may
        // be an approval of a kind this host does not know.
        let r = t
            .send(&Req::purchase(&card("622202"), UNKNOWN_CODE_AMOUNT, 5))
            .await;
        assert_eq!(r.code(), "96");
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Failed);
        assert!(h.store.reversal(row.id).unwrap().is_some());
        let events = h.store.events(row.id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("response code A2")
                    && e.detail.contains("reversal queued")),
            "{events:?}"
        );
    });
}

/// A purchase that arrives after its own reversal (held up on the way, by a gateway or another
/// node) is not sent to the issuer: the terminal has written it off, and an approval would
/// charge the card for a sale it holds as failed. So also after a restart, when the reversal
/// is known from the journal only.
#[test]
fn a_request_after_its_own_reversal_is_not_sent() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let late = Req::purchase(&pan, 1_300, 777);
        assert_eq!(t.send(&Req::reversal_of(&late)).await.code(), "00");
        let asked = h.log.requests.load(Ordering::SeqCst);
        let r = t.send(&late).await;
        assert_eq!(r.code(), "12");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked);
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Declined);
        // The next trace goes through; then, restarted, another request held up behind its
        // reversal is refused from what the journal holds.
        assert_eq!(t.send(&Req::purchase(&pan, 1_400, 778)).await.code(), "00");
        let later = Req::purchase(&pan, 1_500, 779);
        assert_eq!(t.send(&Req::reversal_of(&later)).await.code(), "00");
        h.stop().await;
        h.start().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let asked = h.log.requests.load(Ordering::SeqCst);
        assert_eq!(t.send(&later).await.code(), "12");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked);
    });
}

/// An issuer's decline with a code about the acquirer's side of the link (99: the PIN block
/// under the zone key) is not passed on: the terminal would be told to sign in again, which
/// cannot help. It gets 96 without the sign-in flag; the journal keeps the issuer's code.
#[test]
fn an_issuer_decline_about_the_link_is_answered_96_not_passed_on() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let r = t
            .send(&Req::purchase(&card("622202"), LINK_CODE_AMOUNT, 2))
            .await;
        assert_eq!(r.code(), "96");
        assert!(t.mac_ok(&r));
        assert_eq!(
            r.frame().head.header.processing_requirement(),
            iso8583::ProcessingRequirement::NONE
        );
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Declined);
        assert!(h.store.reversal(row.id).unwrap().is_none());
        let events = h.store.events(row.id).unwrap();
        assert!(
            events.iter().any(|e| e.kind == "declined"
                && domain::diagnosis::issuer_link_code(&e.detail) == Some("99")),
            "{events:?}"
        );
        // The terminal's keys are fine: its next purchase goes through.
        let r = t.send(&Req::purchase(&card("622202"), 1_000, 3)).await;
        assert_eq!(r.code(), "00");
    });
}

/// An issuer's 98 (a gateway whose issuer did not answer in time) is no decline: the card may
/// have been debited, or credited, behind it. The request is timed out and reversed like one
/// the issuer never answered; a refund so answered keeps a second refund of the sale waiting
/// (09) until its reversal is taken, where as a decline it let the sale be refunded twice.
#[test]
fn an_issuers_98_is_taken_as_a_timeout_and_reversed_not_as_a_decline() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let r = t
            .send(&Req::purchase(&pan, OUTCOME_UNKNOWN_AMOUNT, 2))
            .await;
        assert_eq!(r.code(), "98");
        assert!(t.mac_ok(&r));
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::TimedOut);
        assert!(h.store.reversal(row.id).unwrap().is_some());

        let sale = t.send(&Req::purchase(&pan, 10_000, 3)).await;
        assert_eq!(sale.code(), "00");
        let sale_rrn = sale.text(37).unwrap();
        let date = switch::LocalTime::from_ms(h.clock.now_ms()).mmdd();
        // The issuer leaves reversals unanswered from here: the refund's stays pending.
        h.log.answer_reversals.store(false, Ordering::SeqCst);
        let refund = Req::refund(&pan, OUTCOME_UNKNOWN_AMOUNT, 4, &sale_rrn, &date);
        assert_eq!(t.send(&refund).await.code(), "98");
        let refund_row = &h.store.txns_by_key(TID, 1, 4).unwrap()[0];
        assert_eq!(refund_row.state, TxnState::TimedOut);
        assert!(h.store.reversal(refund_row.id).unwrap().is_some());
        // The sale may not be refunded again while that reversal is pending.
        let again = Req::refund(&pan, 5_000, 5, &sale_rrn, &date);
        assert_eq!(t.send(&again).await.code(), "09");
    });
}

/// A refund whose reversal the issuer refused (12: it will not undo it) stands there for good:
/// a second refund over what is left is refused 61, as one over an approved refund is, not
/// 09 ("try again later"), which it would get for ever.
#[test]
fn a_refund_whose_reversal_the_issuer_refused_stands_and_is_not_09_for_ever() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let sale = t.send(&Req::purchase(&pan, 5_000, 2)).await;
        assert_eq!(sale.code(), "00");
        let sale_rrn = sale.text(37).unwrap();
        let date = switch::LocalTime::from_ms(h.clock.now_ms()).mmdd();
        let refund = Req::refund(&pan, 3_000, 3, &sale_rrn, &date);
        assert_eq!(t.send(&refund).await.code(), "00");
        h.log.reversal_codes.lock().unwrap().push_back("12");
        assert_eq!(t.send(&Req::reversal_of(&refund)).await.code(), "00");
        let refund_id = h.store.txns_by_key(TID, 1, 3).unwrap()[0].id;
        let store = Arc::clone(&h.store);
        let refused = h
            .eventually(10, || {
                store
                    .reversal(refund_id)
                    .unwrap()
                    .is_some_and(|r| r.state == SafState::Refused)
            })
            .await;
        assert!(refused, "{:?}", h.store.reversal(refund_id));
        let again = Req::refund(&pan, 3_000, 4, &sale_rrn, &date);
        assert_eq!(t.send(&again).await.code(), "61");
        // What is left beside it may still be refunded.
        let rest = Req::refund(&pan, 2_000, 5, &sale_rrn, &date);
        assert_eq!(t.send(&rest).await.code(), "00");
    });
}

/// An answer the switch could not read (it may have been an approval) whose outcome the
/// journal refused, and whose reversal, queued on its own, it refused too: a terminal reversal
/// that comes before the sweep must queue the reversal, not take the request for one that
/// moved nothing. SQLite only: the journal's refusals are triggers.
#[test]
fn an_unreadable_answer_the_journal_lost_is_reversed_by_the_terminals_reversal() {
    if std::env::var("SHOUDAN_E2E_STORE").as_deref() == Ok("postgres") {
        return;
    }
    runtime().block_on(async {
        let mut h = Harness::new().await;
        // No sweep during the test: only the terminal's reversal can queue the reversal.
        h.saf_interval = std::time::Duration::from_secs(3_600);
        h.stop().await;
        h.start().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let journal = rusqlite::Connection::open(h.dir.path().join("s.db")).unwrap();
        journal
            .execute_batch(&format!(
                "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF response_code ON transactions
                 WHEN NEW.amount_fen = {OTHER_RRN_AMOUNT}
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
                 CREATE TRIGGER refuse_reversals BEFORE INSERT ON reversal_queue
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
            ))
            .unwrap();
        let buy = Req::purchase(&card("622202"), OTHER_RRN_AMOUNT, 3);
        assert_eq!(t.send(&buy).await.code(), "96");
        let id = h.store.txns_by_key(TID, 1, 3).unwrap()[0].id;
        assert_eq!(h.store.txn(id).unwrap().unwrap().state, TxnState::InFlight);
        assert!(h.store.reversal(id).unwrap().is_none());
        journal
            .execute_batch("DROP TRIGGER refuse_reversals")
            .unwrap();
        assert_eq!(t.send(&Req::reversal_of(&buy)).await.code(), "00");
        assert!(
            h.store.reversal(id).unwrap().is_some(),
            "the terminal's reversal took the unreadable answer for one that moved nothing"
        );
        journal
            .execute_batch("DROP TRIGGER refuse_outcome")
            .unwrap();
    });
}

/// A balance inquiry answered with a code the switch cannot read moves no money: it is
/// answered as failed and no reversal is queued for it.
#[test]
fn an_unreadable_answer_to_an_inquiry_queues_no_reversal() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let inquiry = Req {
            processing: "310000",
            message_type: "01",
            ..Req::purchase(&unreadable_inquiry_card(), 0, 5)
        };
        assert_eq!(t.send(&inquiry).await.code(), "96");
        let row = h.store.txns_by_key(TID, 1, 5).unwrap().remove(0);
        assert_eq!(row.state, TxnState::Failed);
        assert!(h.store.reversal(row.id).unwrap().is_none());
        // A purchase answered the same way is reversed, as before.
        assert_eq!(
            t.send(&Req::purchase(&card("622202"), UNKNOWN_CODE_AMOUNT, 6))
                .await
                .code(),
            "96"
        );
        let sale = h.store.txns_by_key(TID, 1, 6).unwrap().remove(0);
        assert!(h.store.reversal(sale.id).unwrap().is_some());
    });
}

/// A purchase its terminal reversed after it was approved is not told 00 again when it is sent
/// once more: it is being given back.
#[test]
fn a_resend_of_a_reversed_approval_is_told_98() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let buy = Req::purchase(&card("622202"), 1_000, 8);
        assert_eq!(t.send(&buy).await.code(), "00");
        assert_eq!(t.send(&Req::reversal_of(&buy)).await.code(), "00");
        assert_eq!(t.send(&buy).await.code(), "98");
    });
}

/// A request in flight when the switch stopped (killed, and restarted at once): its reversal is
/// queued at start, but goes to the issuer only once the request could no longer be there
/// (the issuer's timeout and a journal wait after it was sent), so as not to overtake it.
/// SQLite only: the row is put back in flight by hand.
#[test]
fn a_reversal_queued_at_start_does_not_overtake_its_request_at_the_issuer() {
    if std::env::var("SHOUDAN_E2E_STORE").as_deref() == Ok("postgres") {
        return;
    }
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        assert_eq!(
            t.send(&Req::purchase(&card("622202"), 1_000, 2))
                .await
                .code(),
            "00"
        );
        let id = h.store.txns_by_key(TID, 1, 2).unwrap()[0].id;
        drop(t);
        h.stop().await;
        // As a kill leaves it: in flight, sent just now.
        let sent_ms = switch::Clock::now_ms(&switch::SystemClock);
        rusqlite::Connection::open(h.dir.path().join("s.db"))
            .unwrap()
            .execute(
                "UPDATE transactions SET state = 'in_flight', response_code = NULL,
                 sent_at_ms = ?1 WHERE id = ?2",
                rusqlite::params![sent_ms, id],
            )
            .unwrap();
        h.start().await;
        let queued = h.store.reversal(id).unwrap().unwrap();
        let config = h.config();
        let hold = config.journal_wait + h.issuer_timeout;
        assert!(
            queued.next_attempt_ms >= sent_ms + i64::try_from(hold.as_millis()).unwrap(),
            "due {} ms after the send",
            queued.next_attempt_ms - sent_ms
        );
    });
}

#[test]
fn a_stop_finishes_the_requests_in_progress_and_takes_no_more() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let addr = h.addr();
        // A purchase the issuer takes its time over, still at the issuer when the stop comes.
        let slow = tokio::spawn(async move {
            let r = t
                .send(&Req::purchase(&card("622202"), SLOW_AMOUNT, 2))
                .await;
            (r.code(), r.text(37).unwrap())
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        h.stop().await;
        let (code, rrn) = slow.await.unwrap();
        assert_eq!(code, "00", "answered as the issuer answered it");
        let row = h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Approved);
        assert!(
            h.store.reversal(row.id).unwrap().is_none(),
            "nothing to reverse"
        );
        // Stopped: no new connection is taken.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    });
}

#[test]
fn a_pin_goes_to_an_issuer_whose_zone_key_is_sm4() {
    runtime().block_on(async {
        let log = Arc::new(common::IssuerLog::default());
        let issuer = common::start_issuer(Arc::clone(&log)).await;
        let (hsm, _) = common::new_hsm();
        let zpk = hsm
            .import_key(
                paycrypto::KeyUsage::Zpk,
                paycrypto::KeyAlgorithm::Sm4,
                "0123456789ABCDEFFEDCBA9876543210",
            )
            .unwrap();
        let h = Harness::with_hsm(issuer, Arc::clone(&log), hsm, zpk).await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        // The terminal's PIN block is translated to a 16-byte block under the SM4 zone key.
        let r = t
            .send(&Req {
                pin: Some("123456".into()),
                ..Req::purchase(&card("622202"), 1_000, 2)
            })
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(log.requests.load(Ordering::SeqCst), 1);
    });
}

/// A PIN block captured from one purchase and resent with the card number changed (a digit
/// the PIN overlays, so that it still decodes): refused 99 before it is decoded, the issuer
/// never asked, whatever the change; with its own card again it is taken.
#[test]
fn a_pin_block_resent_with_another_card_is_refused() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let first = card("622202");
        // The card number's first digit under the PIN's third, xor 1: the block still decodes
        // (to another PIN) against it.
        let mut other = first.clone().into_bytes();
        other[6] ^= 1;
        other.truncate(18);
        let check = domain::luhn_check_digit(&other).unwrap();
        other.push(check);
        let other = String::from_utf8(other).unwrap();
        let pik = &t.keys.as_ref().unwrap().pik;
        let digits = paycrypto::PanDigits::from_pan(&first).unwrap();
        let block = paycrypto::pin::encrypt(pik, "123456", &digits).unwrap();
        let block: [u8; 8] = block.as_bytes().try_into().unwrap();
        let with_block = |pan: &str, stan| Req {
            pin_block: Some(block),
            ..Req::purchase(pan, 1_000, stan)
        };
        assert_eq!(t.send(&with_block(&first, 2)).await.code(), "00");
        let asked = h.log.requests.load(Ordering::SeqCst);
        let refused = t.send(&with_block(&other, 3)).await;
        assert_eq!(refused.code(), "99");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked, "sent on");
        let row = h
            .store
            .txns_by_key(common::TID, 1, 3)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(row.state, TxnState::Declined);
        assert_eq!(t.send(&with_block(&first, 4)).await.code(), "00");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked + 1);
        // A prober pushing the block out of the terminal's memory first needs requests whose
        // blocks do not decode: after five refusals under this PIK (the replay above, four
        // blocks of rubbish) every PIN block is refused and the terminal told to sign in again,
        // its own card's block too.
        for stan in 5..9 {
            let rubbish = Req {
                pin_block: Some([0x5A; 8]),
                ..Req::purchase(&first, 1_000, stan)
            };
            assert_eq!(t.send(&rubbish).await.code(), "99");
        }
        let held = t.send(&with_block(&first, 9)).await;
        assert_eq!(held.code(), "99");
        assert_eq!(held.frame().head.header.processing_requirement().digit(), 3);
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked + 1);
        // Signed in again: a new PIK, PIN blocks taken.
        t.sign_in().await;
        let r = t
            .send(&Req {
                pin: Some("123456".into()),
                ..Req::purchase(&first, 1_000, 10)
            })
            .await;
        assert_eq!(r.code(), "00");
    });
}

/// Registers terminal `10000008` with single-length keys (scheme 001) and restarts the switch
/// to serve it.
async fn register_single_des_terminal(h: &mut Harness) {
    h.register_terminal_with(
        "10000008",
        MID,
        paycrypto::KeyScheme::Single,
        paycrypto::MakLength::Double,
    )
    .await;
    h.stop().await;
    h.start().await;
}

/// The PIN block goes to the issuer under the zone key, and field 53 says so: 53.2 names the
/// zone key's length (double here), not the terminal's PIK's (single under scheme 001), and a
/// request with a PIN block and no 53 gets one (ANSI X9.8, that key).
#[test]
fn field_53_to_the_issuer_names_the_zone_key() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        register_single_des_terminal(&mut h).await;
        let mut t = h.terminal_as("10000008").await;
        assert_eq!(t.sign_in_with("001").await.code(), "00");
        let pan = card("622202");
        let with_pin = |stan| Req {
            pin: Some("123456".into()),
            ..Req::purchase(&pan, 1_000, stan)
        };
        assert_eq!(t.send(&with_pin(2)).await.code(), "00");
        let no_53 = Req {
            omit: &[53],
            ..with_pin(3)
        };
        assert_eq!(t.send(&no_53).await.code(), "00");
        assert_eq!(t.sign_in_with("003").await.code(), "00");
        assert_eq!(t.send(&with_pin(4)).await.code(), "00");
        // A terminal naming another PIN format (1, X9.8 without the PAN) for a block the HSM
        // reads as the protocol's: what goes on is a format 0 block bound to the PAN, and 53.1
        // says so.
        let named_other = Req {
            f53: Some("1600000000000000"),
            ..with_pin(5)
        };
        assert_eq!(t.send(&named_other).await.code(), "00");
        // A 53 that does not read (53.3 neither 0 nor 1: is the track encrypted?) is refused
        // 30 before the issuer, not taken for no 53.
        let unreadable = Req {
            f53: Some("2690000000000000"),
            ..with_pin(6)
        };
        assert_eq!(t.send(&unreadable).await.code(), "30");
        let seen = h.log.pin_security.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec!["2600000000000000"; 4],
            "53 as the issuer saw it for a single PIK, no 53, a double PIK, and format 1 named"
        );
    });
}

/// A scheme-004 terminal encrypts its track under the TDK it was given (53.3 = 1) and sends no
/// field 2: the card number is read from the track decrypted in the HSM, the issuer gets the
/// clear track and 53.3 = 0, and the PIN is translated against that card. A track the terminal
/// has no track key for, or that does not decrypt under it, is refused 30 before the issuer.
#[test]
fn an_encrypted_track_is_read_with_the_terminals_track_key() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in_with("004").await.code(), "00");
        let pan = card("622202");
        let track = format!("{pan}=25121011234567890");
        let swiped = |stan, encrypt| Req {
            pin: Some("123456".into()),
            track2: Some((track.clone(), encrypt)),
            ..Req::purchase(&pan, 1_000, stan)
        };
        let r = t.send(&swiped(2, true)).await;
        assert_eq!(r.code(), "00");
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.pan.unwrap().last4, pan[pan.len() - 4..]);
        {
            let tracks = h.log.tracks.lock().unwrap();
            assert_eq!(tracks.len(), 1);
            assert_eq!(tracks[0].0, track, "the issuer gets the track in the clear");
            assert_eq!(&tracks[0].1[..3], "260", "and 53.3 = 0");
        }
        // A track key other than the one this terminal was given.
        let given = t.keys.as_ref().unwrap().tdk.clone();
        t.keys.as_mut().unwrap().tdk = Some(
            paycrypto::Key::from_hex(
                paycrypto::KeyAlgorithm::Des,
                "11111111111111112222222222222222",
            )
            .unwrap(),
        );
        let asked = h.log.requests.load(Ordering::SeqCst);
        assert_eq!(t.send(&swiped(3, true)).await.code(), "30");
        // Signed in with scheme 003 since: no track key on the host's side.
        assert_eq!(t.sign_in_with("003").await.code(), "00");
        t.keys.as_mut().unwrap().tdk = given;
        assert_eq!(t.send(&swiped(4, true)).await.code(), "30");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked);
        // A clear track still reads as it did.
        let clear = t.send(&swiped(5, false)).await;
        assert_eq!(clear.code(), "00");
        // The answer to the encrypted one names the card's issuer as the clear one's does
        // (field 44), its card number lying before the encrypted block.
        let issuer = clear.text(44).unwrap();
        assert!(!issuer[..11].trim().is_empty(), "{issuer}");
        assert_eq!(r.text(44).unwrap(), issuer);
        // A short track, whose card number runs into the encrypted block: the answer still
        // names the card's issuer and organisation, from the card decrypted in the HSM.
        assert_eq!(t.sign_in_with("004").await.code(), "00");
        let short = format!("{pan}=2512");
        let r = t
            .send(&Req {
                pin: Some("123456".into()),
                track2: Some((short, true)),
                ..Req::purchase(&pan, 1_000, 6)
            })
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(r.text(44).unwrap(), issuer);
        // Its retry, answered from the journal, names the same issuer.
        let retry = t
            .send(&Req {
                pin: Some("123456".into()),
                track2: Some((format!("{pan}=2512"), true)),
                ..Req::purchase(&pan, 1_000, 6)
            })
            .await;
        assert_eq!(retry.code(), "00");
        assert_eq!(retry.text(37), r.text(37));
        assert_eq!(retry.text(44).unwrap(), issuer);
    });
}

/// Track 3 (field 36) reaches the issuer as the terminal read it: as sent, or decrypted when
/// the terminal encrypted its tracks (53.3 = 1; track 3's several separators decrypt as
/// track 2's one does). A card swiped for track 3 alone (no field 2, no track 2) is read for
/// its card number after the track's format code.
#[test]
fn track_3_reaches_the_issuer_and_names_the_card_alone() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in_with("004").await.code(), "00");
        let pan = card("622202");
        let track2 = format!("{pan}=25121011234567890");
        let track3 = format!("99{pan}=1561560000000000000000003000000=000000000000=0000");
        let swiped = |stan, track2: Option<(String, bool)>, track3: (String, bool)| Req {
            track2,
            track3: Some(track3),
            ..Req::purchase(&pan, 1_000, stan)
        };
        let cases = [
            (Some((track2.clone(), false)), false),
            (Some((track2.clone(), true)), true),
            (None, false),
            (None, true),
        ];
        for (stan, (track2, encrypt)) in (2..).zip(cases) {
            let r = t
                .send(&swiped(stan, track2, (track3.clone(), encrypt)))
                .await;
            assert_eq!(r.code(), "00", "stan {stan}");
            let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
            assert_eq!(row.pan.unwrap().last4, pan[pan.len() - 4..], "stan {stan}");
            assert_eq!(
                h.log.track3s.lock().unwrap().last(),
                Some(&track3),
                "stan {stan}: the issuer gets track 3 in the clear"
            );
        }
        assert_eq!(h.log.track3s.lock().unwrap().len(), 4);
        // A track 2 that decrypts with two separators: not track 2 under this key, 30.
        let asked = h.log.requests.load(Ordering::SeqCst);
        let odd = Req {
            track2: Some((format!("{pan}=2512=10112345"), true)),
            ..Req::purchase(&pan, 1_000, 9)
        };
        assert_eq!(t.send(&odd).await.code(), "30");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked);
    });
}

#[test]
fn unreachable_issuer_is_answered_91_at_once() {
    runtime().block_on(async {
        // A port nobody listens on: bind, note it, close.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = Arc::new(common::IssuerLog::default());
        let mut h = Harness::with_issuer(closed, log).await;
        // A timeout long enough that "at once" cannot be mistaken for it on a busy machine.
        h.issuer_timeout = std::time::Duration::from_secs(5);
        h.stop().await;
        h.start().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        let started = std::time::Instant::now();
        let r = t.send(&Req::purchase(&card("622202"), 100, 2)).await;
        assert_eq!(r.code(), "91");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "must not wait for the 5 s timeout"
        );
        let row = h.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Failed);
        assert!(
            h.store.reversal(row.id).unwrap().is_none(),
            "nothing sent, nothing to reverse"
        );
    });
}

/// The operating system's randomness until `failing` is set, then none.
struct FailingRandom {
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl paycrypto::RandomSource for FailingRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), paycrypto::RandomError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(paycrypto::RandomError);
        }
        paycrypto::OsRandom.fill(dest)
    }
}

/// A purchase whose card number the HSM cannot seal (its randomness failed) is refused with 96
/// before it goes out: without the sealed number in the journal no reversal of it could be
/// rebuilt, should its answer be lost.
#[test]
fn a_card_number_that_cannot_be_sealed_is_not_sent_to_the_issuer() {
    runtime().block_on(async {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let master = paycrypto::MasterKey::generate(&paycrypto::OsRandom).unwrap();
        let hsm = Arc::new(paycrypto::SoftHsm::new(
            &master,
            Box::new(FailingRandom {
                failing: Arc::clone(&failing),
            }),
        ));
        let zpk = hsm
            .import_key(
                paycrypto::KeyUsage::Zpk,
                paycrypto::KeyAlgorithm::Des,
                ZPK_HEX,
            )
            .unwrap();
        let log = Arc::new(IssuerLog::default());
        let issuer = start_issuer(Arc::clone(&log)).await;
        let h = Harness::with_hsm(issuer, Arc::clone(&log), hsm, zpk).await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        assert_eq!(
            t.send(&Req::purchase(&card("622202"), 1_000, 2))
                .await
                .code(),
            "00"
        );
        let asked = log.requests.load(Ordering::SeqCst);
        failing.store(true, Ordering::SeqCst);
        let r = t.send(&Req::purchase(&card("622202"), 1_000, 3)).await;
        assert_eq!(r.code(), "96");
        assert_eq!(log.requests.load(Ordering::SeqCst), asked, "sent unsealed");
        let row = h.store.txns_by_key(TID, 1, 3).unwrap().remove(0);
        assert_eq!(row.state, TxnState::Declined);
        let events = h.store.events(row.id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("could not be sealed")),
            "{events:?}"
        );
    });
}

/// A refund that timed out may have credited the card: until the issuer takes its reversal,
/// another refund of the same sale is answered 09 (try again later) without going out; once
/// the reversal is acknowledged, the sale's whole amount can be refunded.
#[test]
fn a_refund_awaiting_its_reversal_holds_the_sale_until_the_issuer_takes_it() {
    runtime().block_on(async {
        let h = Harness::new().await;
        h.log.answer_reversals.store(false, Ordering::SeqCst);
        let mut t = h.terminal().await;
        t.sign_in().await;
        let pan = card("622202");
        let sale = t.send(&Req::purchase(&pan, 100_000, 2)).await;
        assert_eq!(sale.code(), "00");
        let rrn = sale.text(37).unwrap();
        let day = switch::LocalTime::from_ms(h.clock.now_ms()).mmdd();
        let lost = t
            .send(&Req::refund(&pan, SILENT_AMOUNT, 3, &rrn, &day))
            .await;
        assert_eq!(lost.code(), "98");
        let lost_id = h.store.txns_by_key(TID, 1, 3).unwrap()[0].id;
        assert_eq!(
            h.store.reversal(lost_id).unwrap().map(|q| q.state),
            Some(SafState::Pending)
        );
        let asked = h.log.requests.load(Ordering::SeqCst);
        let r = t.send(&Req::refund(&pan, 2, 4, &rrn, &day)).await;
        assert_eq!(r.code(), "09");
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked, "sent");

        h.log.answer_reversals.store(true, Ordering::SeqCst);
        let taken = h.reversal_acked(lost_id, 10).await;
        assert!(taken, "{:?}", h.store.reversal(lost_id));
        let r = t.send(&Req::refund(&pan, 100_000, 5, &rrn, &day)).await;
        assert_eq!(r.code(), "00");
    });
}

/// A terminal that MACs with single DES (PROTOCOL.md: under 003, many terminals take an 8-byte
/// MAK sent as 8 key bytes and 8 zero bytes): sign-in issues its MAK so, and its single-DES
/// MACs verify both ways.
#[test]
fn a_terminal_set_for_a_single_length_mak_gets_one_and_its_macs_verify() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        h.register_terminal_with(
            "10000009",
            MID,
            paycrypto::KeyScheme::Double,
            paycrypto::MakLength::Single,
        )
        .await;
        let row = h.store.terminal("10000009").unwrap().unwrap();
        assert_eq!(row.mac_algorithm, "cup-ecb-single");
        h.stop().await;
        h.start().await;
        let mut t = h.terminal_as("10000009").await;
        let signed_in = t.sign_in().await;
        assert_eq!(signed_in.code(), "00");
        // 003: PIK 16 + KCV 4, then the MAK's 16 bytes, the last 8 of them zero.
        let f62 = signed_in.frame().message.bytes(62).unwrap().to_vec();
        assert_eq!(f62.len(), 40);
        assert!(f62[28..36].iter().all(|b| *b == 0), "{f62:02X?}");
        assert_eq!(t.keys.as_ref().unwrap().mak.len(), 8);
        let r = t.send(&Req::purchase(&card("622202"), 1_000, 2)).await;
        assert_eq!(r.code(), "00");
        assert!(t.mac_ok(&r), "response MAC under the single-length MAK");
    });
}

/// A sign-in carries no MAC: anyone who knows a terminal's IDs can ask for a stronger key
/// scheme than it was registered with. That sign-in is served, but the terminal's own next
/// sign-in, at its registered scheme, still is (it was refused 58 until a restart).
#[test]
fn a_stronger_sign_in_does_not_raise_the_floor_for_the_terminals_own() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        register_single_des_terminal(&mut h).await;
        let mut stranger = h.terminal_as("10000008").await;
        assert_eq!(stranger.sign_in_with("003").await.code(), "00");
        let mut own = h.terminal_as("10000008").await;
        assert_eq!(own.sign_in_with("001").await.code(), "00");
        let r = own.send(&Req::purchase(&card("622202"), 1_000, 2)).await;
        assert_eq!(r.code(), "00");
        assert!(own.mac_ok(&r));
    });
}

/// A terminal's reversal of a request still at the issuer is answered at once, but goes to the
/// issuer only after the request's own answer (or its timeout): sent earlier, it could find
/// nothing to reverse there, be acknowledged, and the approval that follows it stand.
#[test]
fn a_reversal_of_a_request_still_at_the_issuer_waits_for_its_answer() {
    use tokio::io::AsyncWriteExt;
    runtime().block_on(async {
        let mut h = Harness::new().await;
        h.log.answer_reversals.store(true, Ordering::SeqCst);
        let mut t = h.terminal().await;
        t.sign_in().await;
        let purchase = Req::purchase(&card("622202"), SLOW_AMOUNT, 2);
        t.stream
            .write_all(&t.encode(&purchase, false))
            .await
            .unwrap();
        // The purchase is at the issuer (150 ms) when its reversal comes.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let sent_ms = switch::SystemClock.now_ms();
        let first = t
            .exchange(&t.encode(&Req::reversal_of(&purchase), false))
            .await;
        let second = t.read().await;
        let (reversal, sale) = if first.frame().message.mti() == iso8583::Mti::REVERSAL_RESPONSE {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(reversal.code(), "00");
        // The issuer approved it, but the approval is being taken back: whoever still reads
        // the purchase's answer is told 98, as the terminal that reversed it was, not 00 with
        // an authorisation code for a sale that will not stand. The journal keeps the 00.
        assert_eq!(sale.code(), "98");
        let row = h.store.txns_by_key(TID, 1, 2).unwrap().remove(0);
        assert_eq!(row.state, TxnState::Reversed);
        assert_eq!(row.response_code.as_deref(), Some("00"));
        let delivered = h
            .eventually(15, || {
                h.store
                    .reversal(row.id)
                    .unwrap()
                    .is_some_and(|r| r.state == SafState::Acked)
            })
            .await;
        assert!(delivered, "then sent and acknowledged");
        let read_at = h.log.reversals_at_ms.lock().unwrap().clone();
        assert_eq!(read_at.len(), 1);
        let wait = h.config().journal_wait.as_millis() as i64;
        assert!(
            read_at[0] >= sent_ms + wait + 300,
            "sent after a journal wait and the issuer's timeout (300 ms), not {} ms after the \
             reversal",
            read_at[0] - sent_ms
        );
        // After a restart the journal's 00 is not what a resend of the purchase is told
        // either: it is reversed.
        drop(t);
        h.stop().await;
        h.start().await;
        let mut again = h.terminal().await;
        again.sign_in().await;
        assert_eq!(again.send(&purchase).await.code(), "98");
    });
}

/// A peer that sends and never reads its answers: once its queue of answers is full and a
/// refusal has waited a second for room there, its connection is closed (counted) at once,
/// long before the write timeout. The switch reads nothing more from it; the peer then reads
/// what was written and the end; other terminals are served.
#[test]
fn a_peer_that_does_not_read_its_answers_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    runtime().block_on(async {
        let mut h = Harness::new().await;
        h.stop().await;
        // Longer than the test: only the rule for unread answers can close it in time.
        h.response_write_timeout = std::time::Duration::from_secs(120);
        h.start().await;
        let switch = h.switch.as_ref().unwrap();
        let (client, server) = tokio::io::duplex(256);
        switch.serve_stream(server);
        let (mut from_switch, mut to_switch) = tokio::io::split(client);
        let mut echo = iso8583::MessageBuilder::new(iso8583::Mti::NETWORK_ADVICE);
        echo.set_stan(1).unwrap();
        echo.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
        echo.set_digits(60, "00000001301").unwrap();
        let mut frame = Vec::new();
        echo.encode_frame(&common::head(), &mut frame).unwrap();
        let offered = 5_000_u64;
        let writing = tokio::spawn(async move {
            let mut sent = 0_u64;
            while sent < offered && to_switch.write_all(&frame).await.is_ok() {
                sent += 1;
            }
            sent
        });
        let closed = h
            .eventually(10, || switch.metrics().unread_closed == 1)
            .await;
        assert!(closed, "{:?}", switch.metrics());
        // Gone at once, not once its answers had been written: the peer's writes fail while it
        // still reads nothing.
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), writing)
            .await
            .expect("the peer's writes were neither read nor refused")
            .unwrap();
        assert!(sent < offered, "the switch read on from a peer it closed");
        // The answers it had queued and never read are counted lost.
        let lost = switch.metrics().answers_undelivered;
        assert!(lost >= switch::CONNECTION_QUEUE_MAX as u64 / 2, "{lost}");
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            from_switch.read_to_end(&mut rest),
        )
        .await;
        assert!(
            matches!(ended, Ok(Ok(_))),
            "the connection stayed open after {} bytes",
            rest.len()
        );
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
    });
}

/// An issuer host that reads frames and counts its connections and the echo tests it gets;
/// with `answer`, it answers each echo test (`0830`, field 11 echoed, 39 = 00), else nothing.
async fn echo_host(
    answer: bool,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let echoes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, n) = (Arc::clone(&connections), Arc::clone(&echoes));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while switch::read_frame(&mut stream, &mut buf)
                    .await
                    .unwrap_or(false)
                {
                    let frame = iso8583::Frame::decode_unprefixed(&buf).unwrap();
                    let echo = frame.message.mti() == iso8583::Mti::NETWORK_ADVICE
                        && frame
                            .message
                            .digits(60)
                            .is_some_and(|d| d.to_string().ends_with("301"));
                    if !echo {
                        continue;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    if answer {
                        let mut out =
                            iso8583::MessageBuilder::new(iso8583::Mti::NETWORK_ADVICE_RESPONSE);
                        out.copy_from(&frame.message, 11).unwrap();
                        out.set_text(39, "00").unwrap();
                        let mut bytes = Vec::new();
                        out.encode_frame(&common::head(), &mut bytes).unwrap();
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections, echoes)
}

/// An issuer host that keeps the connection open but stops answering (it lost power behind a
/// firewall that still holds the connection): the link is sent an echo test once silent, and
/// dropped and connected again when that goes unanswered. One that answers its echo tests
/// keeps its one connection.
#[test]
fn a_silent_issuer_link_is_tested_and_connected_again() {
    runtime().block_on(async {
        let (silent, connections, echoes) = echo_host(false).await;
        let mut h = Harness::with_issuer(silent, Arc::default()).await;
        h.stop().await;
        h.issuer_echo_after = std::time::Duration::from_millis(200);
        let before = connections.load(Ordering::SeqCst);
        h.start().await;
        // Silent 200 ms, then an echo test, unanswered for the 300 ms timeout: a new connection.
        let mut waited = 0;
        while connections.load(Ordering::SeqCst) < before + 2 && waited < 5_000 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            waited += 20;
        }
        assert!(
            connections.load(Ordering::SeqCst) >= before + 2,
            "the silent link was never given up"
        );
        assert!(echoes.load(Ordering::SeqCst) >= 1);
        h.stop().await;

        let (answering, connections, echoes) = echo_host(true).await;
        let mut h = Harness::with_issuer(answering, Arc::default()).await;
        h.stop().await;
        h.issuer_echo_after = std::time::Duration::from_millis(100);
        let before = connections.load(Ordering::SeqCst);
        h.start().await;
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        assert!(
            echoes.load(Ordering::SeqCst) >= 3,
            "{} echo tests",
            echoes.load(Ordering::SeqCst)
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            before + 1,
            "a link answering its echo tests was given up"
        );
        assert!(h.switch.as_ref().unwrap().issuer_connected("SIM"));
        h.stop().await;
    });
}

/// A request missing a field the protocol requires is a format error (30), whatever the
/// field: not an amount to key again (13) or a merchant ID to correct (03).
#[test]
fn a_request_missing_a_required_field_is_a_format_error() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        t.sign_in().await;
        for (stan, omit) in [(2, &[4u8][..]), (3, &[42u8][..])] {
            let r = t
                .send(&Req {
                    omit,
                    ..Req::purchase(&card("622202"), 1_000, stan)
                })
                .await;
            assert_eq!(r.code(), "30", "without field {omit:?}");
        }
        // A zero amount is there and wrong: 13.
        assert_eq!(
            t.send(&Req::purchase(&card("622202"), 0, 4)).await.code(),
            "13"
        );
        // Dollars where the protocol has yuan: 30, not cleared as yuan.
        let dollars = Req {
            currency: "840",
            ..Req::purchase(&card("622202"), 1_000, 5)
        };
        assert_eq!(t.send(&dollars).await.code(), "30");
        // Its reversal is taken whatever field 49 says: nothing to undo, acknowledged.
        assert_eq!(t.send(&Req::reversal_of(&dollars)).await.code(), "00");
    });
}

/// Twenty timeouts in a row open the issuer's breaker for five seconds (requests answered 91
/// at once); the wall clock stepped back meanwhile (an NTP correction) does not keep it open
/// for as long again: it is timed on a monotonic clock.
#[test]
fn the_issuer_breaker_closes_on_time_whatever_the_wall_clock_does() {
    runtime().block_on(async {
        let h = Harness::new().await;
        // Reversals unanswered too: an acknowledged one would end the run of timeouts.
        h.log.answer_reversals.store(false, Ordering::SeqCst);
        let pan = card("622202");
        let mut first = h.terminal().await;
        assert_eq!(first.sign_in().await.code(), "00");
        let mut silent = Vec::new();
        for n in 0..20_u32 {
            let mut t = h.terminal().await;
            t.keys = first.keys.clone();
            let request = Req::purchase(&pan, SILENT_AMOUNT, 100 + n);
            silent.push(tokio::spawn(async move { t.send(&request).await.code() }));
        }
        for s in silent {
            assert_eq!(s.await.unwrap(), "98");
        }
        assert_eq!(
            first.send(&Req::purchase(&pan, 100, 200)).await.code(),
            "91",
            "the breaker did not open"
        );
        h.clock.shift_ms(-600_000);
        tokio::time::sleep(std::time::Duration::from_millis(5_300)).await;
        assert_eq!(
            first.send(&Req::purchase(&pan, 100, 201)).await.code(),
            "00",
            "the breaker stayed open after the wall clock went back"
        );
    });
}

/// An issuer that answers purchases at once but leaves reversals unanswered: the reversals
/// queued (more than the breaker's count, all sent in one pass) time out, and its terminals'
/// purchases are still sent and approved, not refused 91 by a breaker they opened.
#[test]
fn reversals_unanswered_do_not_open_the_issuer_breaker() {
    runtime().block_on(async {
        let h = Harness::new().await;
        h.log.answer_reversals.store(false, Ordering::SeqCst);
        let pan = card("622202");
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let reversals = switch::BREAKER_TIMEOUTS_MAX + 2;
        for n in 0..reversals {
            let sale = Req::purchase(&pan, 100, 300 + n);
            assert_eq!(t.send(&sale).await.code(), "00");
            assert_eq!(t.send(&Req::reversal_of(&sale)).await.code(), "00");
        }
        let log = Arc::clone(&h.log);
        let sent = h
            .eventually(10, || {
                log.reversals.lock().unwrap().len() >= usize::try_from(reversals).unwrap()
            })
            .await;
        assert!(sent, "the reversals were not sent");
        // Past the issuer timeout: every one of them has timed out.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(
            t.send(&Req::purchase(&pan, 100, 400)).await.code(),
            "00",
            "refused by a breaker the reversals opened"
        );
    });
}

/// An issuer that times out purchases but acknowledges their reversals between them: the
/// acknowledgements do not end the run of authorisation timeouts, so the breaker opens at the
/// twentieth and the next purchase is refused 91 at once instead of waiting its timeout.
#[test]
fn reversal_acknowledgements_do_not_reset_the_breakers_count() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let pan = card("622202");
        let mut first = h.terminal().await;
        assert_eq!(first.sign_in().await.code(), "00");
        let silent = |n: u32, keys: Option<_>| {
            let addr = h.addr();
            async move {
                let mut t = Terminal::connect(addr, TID).await;
                t.keys = keys;
                t.send(&Req::purchase(&card("622202"), SILENT_AMOUNT, 100 + n))
                    .await
                    .code()
            }
        };
        let mut waiting = Vec::new();
        for n in 0..switch::BREAKER_TIMEOUTS_MAX - 1 {
            waiting.push(tokio::spawn(silent(n, first.keys.clone())));
        }
        for w in waiting {
            assert_eq!(w.await.unwrap(), "98");
        }
        // Their reversals are acknowledged before the next timeout.
        let log = Arc::clone(&h.log);
        let expected = usize::try_from(switch::BREAKER_TIMEOUTS_MAX - 1).unwrap();
        assert!(
            h.eventually(10, || log.reversals.lock().unwrap().len() >= expected)
                .await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(silent(99, first.keys.clone()).await, "98");
        assert_eq!(
            first.send(&Req::purchase(&pan, 100, 200)).await.code(),
            "91",
            "the breaker did not open"
        );
    });
}

/// A back-office refund whose caller stops waiting while it is at the issuer (a browser tab
/// closed, an API client's timeout: the HTTP handler's future is dropped) still runs to its
/// end: the issuer's approval is journalled, no reversal is queued for it, and the same
/// idempotency key replays the approval instead of finding it in flight.
#[test]
fn a_back_office_refund_its_caller_gave_up_on_is_journalled_all_the_same() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let sale = t.send(&Req::purchase(&pan, SLOW_AMOUNT + 100, 31)).await;
        assert_eq!(sale.code(), "00");
        let rrn = sale.text(37).unwrap();
        let switch = h.switch.as_ref().unwrap();
        let asked = h.log.requests.load(Ordering::SeqCst);
        // The issuer takes 150 ms over this amount; the caller leaves after 50.
        let amount = i64::try_from(SLOW_AMOUNT).unwrap();
        let left = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            switch.back_office_refund(&rrn, amount, "case-7-refund"),
        )
        .await;
        assert!(left.is_err(), "the refund answered within 50 ms");
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked + 1);
        let replay = switch
            .back_office_refund(&rrn, amount, "case-7-refund")
            .await
            .unwrap();
        assert_eq!(replay.response_code, "00");
        assert_eq!(replay.state, Some(TxnState::Approved));
        let id = replay.txn_id.unwrap();
        assert_eq!(h.store.txn(id).unwrap().unwrap().state, TxnState::Approved);
        assert!(h.store.reversal(id).unwrap().is_none());
        // Sent once: the replay was answered from the journal.
        assert_eq!(h.log.requests.load(Ordering::SeqCst), asked + 1);
        // The rest of the sale is refundable, and no more.
        let rest = switch
            .back_office_refund(&rrn, 100, "case-7-refund-rest")
            .await
            .unwrap();
        assert_eq!(rest.response_code, "00");
        let more = switch
            .back_office_refund(&rrn, 1, "case-7-refund-more")
            .await
            .unwrap();
        assert_eq!(more.response_code, "61");
    });
}

/// A node's stop first closes the intake: terminals' connections end and new ones are not
/// taken, while the issuer links stay up for a back-office refund (one approved in the
/// console) begun before or during the stop.
#[test]
fn a_closed_intake_takes_no_terminal_but_keeps_the_links_for_a_refund() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let sale = t.send(&Req::purchase(&pan, SLOW_AMOUNT + 100, 33)).await;
        assert_eq!(sale.code(), "00");
        let rrn = sale.text(37).unwrap();
        let switch = h.switch.as_ref().unwrap();
        let addr = switch.local_addr();
        switch.close_intake();
        // The signed-in terminal's connection ends without an answer to anything more.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut t.stream, &mut rest),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection stayed open"
        );
        // The listener is closed: a new connection is refused.
        assert!(
            h.eventually(2, || std::net::TcpStream::connect(addr).is_err())
                .await,
            "connections still taken after the intake closed"
        );
        // The links are up: a refund is sent, answered and journalled.
        assert!(switch.issuer_connected("SIM"));
        let amount = i64::try_from(SLOW_AMOUNT).unwrap();
        let refund = switch
            .back_office()
            .refund(&rrn, amount, "case-9-refund")
            .await
            .unwrap();
        assert_eq!(refund.response_code, "00");
        let id = refund.txn_id.unwrap();
        assert_eq!(h.store.txn(id).unwrap().unwrap().state, TxnState::Approved);
        h.stop().await;
    });
}

/// A stop waits for a back-office refund at the issuer, as for a terminal's request: the
/// refund is answered and journalled approved, not cut off with the links.
#[test]
fn a_stop_waits_for_a_back_office_refund_under_way() {
    runtime().block_on(async {
        let mut h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let pan = card("622202");
        let sale = t.send(&Req::purchase(&pan, SLOW_AMOUNT + 100, 32)).await;
        assert_eq!(sale.code(), "00");
        let rrn = sale.text(37).unwrap();
        drop(t);
        let back_office = h.switch.as_ref().unwrap().back_office();
        let amount = i64::try_from(SLOW_AMOUNT).unwrap();
        let refund = tokio::spawn(async move {
            back_office
                .refund(&rrn, amount, "case-8-refund")
                .await
                .unwrap()
        });
        // At the issuer (it takes 150 ms over this amount) when the stop comes.
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        h.stop().await;
        let refund = refund.await.unwrap();
        assert_eq!(refund.response_code, "00");
        let id = refund.txn_id.unwrap();
        assert_eq!(h.store.txn(id).unwrap().unwrap().state, TxnState::Approved);
    });
}

/// A request lacking what classifies it (field 25, field 60, or 60.3 of a management message)
/// is the terminal's format error, 30; a complete one that is no transaction of the table (a
/// processing code this host does not do) is 12.
#[test]
fn a_request_missing_what_classifies_it_is_30_and_an_unknown_one_12() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let request = |f3: &str, f25: Option<&str>, f60: Option<&str>, mti| {
            let mut out = iso8583::MessageBuilder::new(mti);
            out.set_digits(2, &card("622202")).unwrap();
            out.set_digits(3, f3).unwrap();
            out.set_amount(100).unwrap();
            out.set_stan(7).unwrap();
            out.set_digits(22, "022").unwrap();
            if let Some(f25) = f25 {
                out.set_digits(25, f25).unwrap();
            }
            out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
            out.set_text(49, "156").unwrap();
            if let Some(f60) = f60 {
                out.set_digits(60, f60).unwrap();
            }
            out
        };
        let purchase = iso8583::Mti::FINANCIAL;
        let cases = [
            (request("000000", None, Some("22000001"), purchase), "30"),
            (request("000000", Some("00"), None, purchase), "30"),
            (
                request("990000", Some("00"), Some("22000001"), purchase),
                "12",
            ),
            (
                request(
                    "000000",
                    Some("00"),
                    Some("00000001"),
                    iso8583::Mti::NETWORK,
                ),
                "30",
            ),
        ];
        for (n, (out, code)) in cases.into_iter().enumerate() {
            let answer = t.exchange(&t.encode_with_mac(&out, false)).await;
            assert_eq!(answer.code(), code, "case {n}");
        }
        // Nothing reached the journal, and the terminal trades on.
        assert!(h.store.txns_by_key(TID, 1, 7).unwrap().is_empty());
        let sale = t.send(&Req::purchase(&card("622202"), 100, 8)).await;
        assert_eq!(sale.code(), "00");
    });
}

/// The periodic sweep for requests in doubt judges another node's request by how long it has
/// watched it in flight, by its own clock, not only by the request's stamp, which is the
/// other node's clock's: one stamped an hour ahead (that node's clock fast) is taken for lost
/// ten minutes after this node first saw it in flight, not an hour and ten minutes. One
/// stamped eleven minutes ago by a node holding no place (a SQLite journal has none) is taken
/// at once, as before.
#[test]
fn a_request_in_flight_for_ten_minutes_watched_is_swept_whatever_its_stamp() {
    runtime().block_on(async {
        let h = Harness::new().await;
        let mut t = h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let sale = t.send(&Req::purchase(&card("622202"), 1_000, 1)).await;
        assert_eq!(sale.code(), "00");
        let template = h
            .store
            .txn_by_rrn(&sale.text(37).unwrap())
            .unwrap()
            .unwrap();
        let now_ms = h.clock.now_ms();
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        for (rrn, stan, received_at_ms) in [
            ("050000000001", 900, now_ms - 11 * 60_000),
            ("050000000002", 901, now_ms + 60 * 60_000),
        ] {
            let id = i64::try_from(h.store.reserve("txn_id", 1).unwrap().await.unwrap()).unwrap();
            ids.push(id);
            rows.push(store::Record::InsertTxn(Box::new(store::TxnRow {
                id,
                rrn: Some(rrn.into()),
                stan,
                host_trace: Some(stan),
                state: TxnState::InFlight,
                response_code: None,
                auth_code: None,
                answered_at_ms: None,
                received_at_ms,
                sent_at_ms: Some(received_at_ms),
                ..template.clone()
            })));
        }
        h.store.submit(rows).unwrap().await.unwrap();
        let (old, ahead) = (ids[0], ids[1]);
        let store = Arc::clone(&h.store);
        let settled = |id: i64| store.txn(id).unwrap().unwrap().state != TxnState::InFlight;
        assert!(
            h.eventually(10, || settled(old)).await,
            "old request not swept"
        );
        // The sweep that took the old one saw the other: in flight, watched from now on.
        assert!(!settled(ahead));
        h.clock.shift_ms(11 * 60_000);
        assert!(
            h.eventually(10, || settled(ahead)).await,
            "a request watched in flight for eleven minutes was left"
        );
        // Due now (after the usual hold), not when that node's fast clock said it was sent.
        let due = h.store.reversal(ahead).unwrap().unwrap().next_attempt_ms;
        assert!(due <= h.clock.now_ms() + 60_000, "due {due}");
    });
}
