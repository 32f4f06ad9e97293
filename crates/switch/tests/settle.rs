//! Terminal settlement and batch upload over TCP: a balanced batch closes and the next starts;
//! an injected difference answers "unbalanced" with the host's totals and the batch upload finds
//! exactly which transactions differ. Day cut-over with a manual clock: requests either side of
//! 23:00 get their clearing dates, a void in the grace window is still "same day".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use iso8583::{
    BatchRecord, BatchUpload, BatchUploadEnd, CardOrganisation, FrameHead, Header, MessageBuilder,
    Mti, SettleResult, SettlementTotals, Totals, Tpdu,
};
use store::Store;
use store::settlement::BatchDiffKind;
use switch::{Clock, Switch};

fn head() -> FrameHead {
    FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    }
}

fn totals(debit: (u64, u16), credit: (u64, u16)) -> SettlementTotals {
    SettlementTotals {
        domestic: Totals {
            debit_amount: debit.0,
            debit_count: debit.1,
            credit_amount: credit.0,
            credit_count: credit.1,
            result: SettleResult::REQUEST,
        },
        foreign: Totals::default(),
    }
}

async fn settle(t: &mut Terminal, batch: u32, ours: &SettlementTotals) -> SettlementTotals {
    let response = settle_as(t, MID, batch, ours).await;
    assert_eq!(response.code(), "00");
    let frame = response.frame();
    SettlementTotals::parse(frame.message.digits(48).unwrap()).unwrap()
}

/// A 0500 naming merchant `mid` and `batch`: the answer, whatever it is.
async fn settle_as(t: &mut Terminal, mid: &str, batch: u32, ours: &SettlementTotals) -> Response {
    let mut out = MessageBuilder::new(Mti::SETTLEMENT);
    out.set_stan(900).unwrap();
    out.set_text(41, TID).unwrap().set_text(42, mid).unwrap();
    out.set_composed(ours).unwrap();
    out.set_text(49, "156").unwrap();
    out.set_digits(60, &format!("00{batch:06}201")).unwrap();
    out.set_text(63, "001").unwrap();
    let mut bytes = Vec::new();
    out.encode_frame(&head(), &mut bytes).unwrap();
    t.exchange(&bytes).await
}

async fn upload(t: &mut Terminal, batch: u32, records: &[(u32, &str, u64)]) {
    upload_records(t, batch, records).await;
    let count = u16::try_from(records.len()).unwrap();
    assert_eq!(upload_end(t, batch, "207", count).await, "00");
}

/// One 0320/201 of up to 8 records, without the end.
async fn upload_records(t: &mut Terminal, batch: u32, records: &[(u32, &str, u64)]) {
    let mut up = BatchUpload::new();
    for (trace, pan, amount) in records {
        up.push(BatchRecord::new(CardOrganisation::DOMESTIC, *trace, pan, *amount).unwrap())
            .unwrap();
    }
    let mut out = MessageBuilder::new(Mti::BATCH_UPLOAD);
    out.set_stan(901).unwrap();
    out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    out.set_composed(&up).unwrap();
    out.set_digits(60, &format!("00{batch:06}201")).unwrap();
    let mut bytes = Vec::new();
    out.encode_frame(&head(), &mut bytes).unwrap();
    assert_eq!(t.exchange(&bytes).await.code(), "00");
}

/// An upload whose end counts more records than arrived (an upload message lost) is not
/// compared: 79 asks the terminal to upload again, and nothing is listed as missing at the
/// terminal that it had. The upload sent again is compared.
#[tokio::test]
async fn an_upload_short_of_its_declared_count_is_asked_for_again() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    for (stan, amount) in [(1, 1_000), (2, 2_500)] {
        let r = t.send(&Req::purchase(&pan, amount, stan)).await;
        assert_eq!(r.code(), "00");
    }
    let host = settle(&mut t, 1, &totals((3_600, 2), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    // The message with trace 2's record was lost on the way.
    upload_records(&mut t, 1, &[(1, &pan, 1_000)]).await;
    assert_eq!(upload_end(&mut t, 1, "207", 2).await, "79");
    assert!(h.store.batch_differences(TID, 1).unwrap().is_empty());
    let settled = h.store.batch_settlement(TID, 1).unwrap().unwrap();
    assert!(settled.upload_done_at_ms.is_none());
    // An end without its count cannot be compared either.
    let mut end = MessageBuilder::new(Mti::BATCH_UPLOAD);
    end.set_stan(951).unwrap();
    end.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    end.set_digits(60, "00000001207").unwrap();
    let mut bytes = Vec::new();
    end.encode_frame(&head(), &mut bytes).unwrap();
    assert_eq!(t.exchange(&bytes).await.code(), "30");
    // The whole upload again: trace 1's record replaces its copy, trace 2's differs.
    upload(&mut t, 1, &[(1, &pan, 1_000), (2, &pan, 2_600)]).await;
    let found = differences(&h, 1);
    assert_eq!(found, vec![(2, BatchDiffKind::AmountDiffers)]);
}

#[tokio::test]
async fn a_settlement_cannot_move_a_terminals_batch_anywhere() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    let none = totals((0, 0), (0, 0));
    // Not signed in: sign in again.
    assert_eq!(settle_as(&mut t, MID, 1, &none).await.code(), "77");
    assert_eq!(t.sign_in().await.code(), "00");
    // Another merchant's ID: 03; a batch the terminal is not in: 77. Nothing moves.
    assert_eq!(
        settle_as(&mut t, "898110059420002", 1, &none).await.code(),
        "03"
    );
    assert_eq!(settle_as(&mut t, MID, 5, &none).await.code(), "77");
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 1);
    assert!(h.store.batch_settlement(TID, 5).unwrap().is_none());
    // The current batch settles; sent again (its answer lost), it is answered again and the
    // terminal stays in the next batch.
    settle(&mut t, 1, &none).await;
    settle(&mut t, 1, &none).await;
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
    assert_eq!(settle_as(&mut t, MID, 7, &none).await.code(), "77");
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
}

/// The batch just closed, its settlement sent again with other totals (or none at all): the
/// answer is the closed batch's totals and the record that closed it stays as it was; only the
/// batch open now can be opened again under its number.
#[tokio::test]
async fn a_closed_batch_sent_again_with_other_totals_is_answered_from_it_and_kept() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 1_000, 1)).await.code(), "00");
    let host = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    let closed = h.store.batch_settlement(TID, 1).unwrap().unwrap();
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
    for theirs in [totals((2_000, 2), (0, 0)), totals((0, 0), (0, 0))] {
        let host = settle(&mut t, 1, &theirs).await;
        assert_eq!(
            (host.domestic.debit_amount, host.domestic.debit_count),
            (1_000, 1),
            "the closed batch's totals"
        );
        assert_eq!(
            h.store.batch_settlement(TID, 1).unwrap().unwrap(),
            closed,
            "the record that closed the batch was written over"
        );
    }
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
    // Sent again as it was: balanced, as then.
    let host = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
}

/// A reversal naming a batch the host has closed since: answered from that batch, not 77. The
/// terminal resends its saved reversal as it was, whatever batch a sign-in moves it to, and
/// takes no business until it is answered: 77 would hold it for ever.
#[tokio::test]
async fn a_reversal_naming_a_closed_batch_is_answered_not_sent_to_sign_in() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    let sale = Req::purchase(&pan, 1_000, 1);
    assert_eq!(t.send(&sale).await.code(), "00");
    let host = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
    // Still in batch 1 at the terminal: a new sale is out of step (77), as before.
    let late = Req::purchase(&pan, 2_000, 2);
    let refused = t.send(&late).await;
    assert_eq!(refused.code(), "77");
    for signed_in_again in [false, true] {
        if signed_in_again {
            assert_eq!(t.sign_in().await.code(), "00");
            assert_eq!(
                t.batch, 2,
                "the sign-in moved the terminal to the open batch"
            );
            t.batch = 1;
        }
        // Its reversal names a request the host never took: nothing to reverse (00), and
        // nothing written (a row after the settlement would count as the number's next use).
        let reversed = t.send(&Req::reversal_of(&late)).await;
        assert_eq!(reversed.code(), "00");
        assert!(t.mac_ok(&reversed));
        // One naming the settled sale: 25, and the sale stands with its batch's totals.
        let settled = t.send(&Req::reversal_of(&sale)).await;
        assert_eq!(settled.code(), "25");
        assert!(t.mac_ok(&settled));
    }
    let rows = h.store.txns_by_key(TID, 1, 1).unwrap();
    assert_eq!(rows.len(), 1, "nothing journaled under the sale's key");
    assert_eq!(rows[0].state, store::TxnState::Approved);
    assert!(h.store.txns_by_key(TID, 1, 2).unwrap().is_empty());
}

/// A reversal naming a batch no settlement closed, whose original is there (the terminal
/// named another batch at its sign-in; or, with several nodes, this node's memory of the
/// terminal's batch is behind): taken as any reversal under that batch, the sale reversed. Not
/// 25, which would stop the terminal resending with the sale approved, nor 77, which would
/// hold it for ever (its sign-in names the batch it is in).
#[tokio::test]
async fn a_reversal_naming_a_batch_not_closed_reverses_its_original() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let sale = Req::purchase(&card("622202"), 1_000, 1);
    assert_eq!(t.send(&sale).await.code(), "00");
    // Signed in naming batch 7: the host moves it there, batch 1 unsettled.
    t.batch = 7;
    assert_eq!(t.sign_in().await.code(), "00");
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 7);
    t.batch = 1;
    let reversed = t.send(&Req::reversal_of(&sale)).await;
    assert_eq!(reversed.code(), "00");
    assert!(t.mac_ok(&reversed));
    let sale_row = purchase_under(&h, 1, 1);
    assert_eq!(sale_row.state, store::TxnState::Reversed);
    assert!(
        h.store.reversal(sale_row.id).unwrap().is_some(),
        "queued to the issuer"
    );
    // Resent (its answer lost): the same answer.
    assert_eq!(t.send(&Req::reversal_of(&sale)).await.code(), "00");
}

/// The purchase journaled under the test terminal's `batch` and `stan`.
fn purchase_under(h: &Harness, batch: u32, stan: u32) -> store::TxnRow {
    h.store
        .txns_by_key(TID, batch, stan)
        .unwrap()
        .into_iter()
        .find(|r| r.kind == store::TxnKind::Purchase)
        .unwrap()
}

/// A batch number come round again (the terminal counting from 1 again): a reversal naming it
/// finds the request of its latest use, received after the settlement that closed the
/// earlier use, and reverses it; only an original of that earlier use is 25.
#[tokio::test]
async fn a_reversal_of_a_batch_numbers_new_use_reverses_its_original() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    let old = Req::purchase(&pan, 1_000, 1);
    assert_eq!(t.send(&old).await.code(), "00");
    let host = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    // Batch 2 settled too, then back to 1 at a sign-in naming it (not the batch closed just
    // before the open one).
    t.batch = 2;
    let host = settle(&mut t, 2, &totals((0, 0), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    t.batch = 1;
    assert_eq!(t.sign_in().await.code(), "00");
    assert_eq!(t.batch, 1);
    let new = Req::purchase(&pan, 2_000, 5);
    assert_eq!(t.send(&new).await.code(), "00");
    // The terminal moved on (a sign-in naming 9), the new sale's answer lost.
    t.batch = 9;
    assert_eq!(t.sign_in().await.code(), "00");
    t.batch = 1;
    assert_eq!(t.send(&Req::reversal_of(&new)).await.code(), "00");
    assert_eq!(purchase_under(&h, 1, 5).state, store::TxnState::Reversed);
    // The earlier use's sale, settled: 25, standing.
    assert_eq!(t.send(&Req::reversal_of(&old)).await.code(), "25");
    assert_eq!(purchase_under(&h, 1, 1).state, store::TxnState::Approved);
}

/// A terminal that counts its batches from 000000: batch 0 settled unbalanced moves it to 1,
/// and batch 0 is still the one it closed, to upload and to settle again.
#[tokio::test]
async fn a_batch_numbered_zero_is_uploaded_after_its_settlement() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    t.batch = 0;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 1_000, 1)).await.code(), "00");
    let host = settle(&mut t, 0, &totals((1_100, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 1);
    upload(&mut t, 0, &[(1, &pan, 1_100)]).await;
    assert_eq!(differences(&h, 0), vec![(1, BatchDiffKind::AmountDiffers)]);
    let again = settle(&mut t, 0, &totals((1_100, 1), (0, 0))).await;
    assert_eq!(again.domestic.result, SettleResult::UNBALANCED);
}

/// Most terminals send settlements and uploads without a MAC; one that sends a MAC is held to
/// it: a wrong one is answered A0 and moves nothing, a right one gets MACed answers.
#[tokio::test]
async fn a_settlement_or_upload_carrying_a_mac_is_held_to_it() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 1_000, 1)).await.code(), "00");
    let settlement = |stan: u32| {
        let mut out = MessageBuilder::new(Mti::SETTLEMENT);
        out.set_stan(stan).unwrap();
        out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
        out.set_composed(&totals((900, 1), (0, 0))).unwrap();
        out.set_text(49, "156").unwrap();
        out.set_digits(60, "00000001201").unwrap();
        out.set_text(63, "001").unwrap();
        out
    };
    // A wrong MAC: A0 (sign in again), and the batch neither settles nor moves.
    let refused = t.exchange(&t.encode_with_mac(&settlement(900), true)).await;
    assert_eq!(refused.code(), "A0");
    assert!(h.store.batch_settlement(TID, 1).unwrap().is_none());
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 1);
    // The right MAC on a batch the terminal is not in: 77, MACed (its MAC was checked).
    let mut elsewhere = settlement(899);
    elsewhere.set_digits(60, "00000005201").unwrap();
    let out_of_step = t.exchange(&t.encode_with_mac(&elsewhere, false)).await;
    assert_eq!(out_of_step.code(), "77");
    assert!(t.mac_ok(&out_of_step));
    // The right MAC: settled (unbalanced, the host has 10.00), the answer MACed.
    let settled = t
        .exchange(&t.encode_with_mac(&settlement(901), false))
        .await;
    assert_eq!(settled.code(), "00");
    assert!(t.mac_ok(&settled));
    let host = SettlementTotals::parse(settled.frame().message.digits(48).unwrap()).unwrap();
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    // An upload record with a wrong MAC is not kept; with the right one it is, and the end
    // (MACed too) compares it.
    let mut up = BatchUpload::new();
    up.push(BatchRecord::new(CardOrganisation::DOMESTIC, 1, &pan, 900).unwrap())
        .unwrap();
    let mut record = MessageBuilder::new(Mti::BATCH_UPLOAD);
    record.set_stan(902).unwrap();
    record.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    record.set_composed(&up).unwrap();
    record.set_digits(60, "00000001201").unwrap();
    let refused = t.exchange(&t.encode_with_mac(&record, true)).await;
    assert_eq!(refused.code(), "A0");
    let mut end = MessageBuilder::new(Mti::BATCH_UPLOAD);
    end.set_stan(903).unwrap();
    end.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    end.set_composed(&BatchUploadEnd { count: 1 }).unwrap();
    end.set_digits(60, "00000001207").unwrap();
    // Nothing arrived: the end counting one record is answered 79, MACed.
    let again = t.exchange(&t.encode_with_mac(&end, false)).await;
    assert_eq!(again.code(), "79");
    assert!(t.mac_ok(&again));
    let kept = t.exchange(&t.encode_with_mac(&record, false)).await;
    assert_eq!(kept.code(), "00");
    assert!(t.mac_ok(&kept));
    let compared = t.exchange(&t.encode_with_mac(&end, false)).await;
    assert_eq!(compared.code(), "00");
    assert_eq!(differences(&h, 1), vec![(1, BatchDiffKind::AmountDiffers)]);
}

#[tokio::test]
async fn balanced_batch_closes_and_an_unbalanced_one_is_explained_by_its_upload() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    let mut rrns = Vec::new();
    for (stan, amount) in [(1, 1_000), (2, 2_500), (3, 700)] {
        let r = t.send(&Req::purchase(&pan, amount, stan)).await;
        assert_eq!(r.code(), "00");
        rrns.push(r.text(37).unwrap());
    }
    let void = t.send(&Req::void(&pan, 700, 4, 3, &rrns[2])).await;
    assert_eq!(void.code(), "00");

    // Batch 1 as the terminal counts it: debits 3 (4,200), credits 1 (700).
    let host = settle(&mut t, 1, &totals((4_200, 3), (700, 1))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    let row = h.store.batch_settlement(TID, 1).unwrap().unwrap();
    assert_eq!(row.result, 1);
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);

    // Batch 2: the terminal lost one transaction and mistyped another.
    t.batch = 2;
    assert_eq!(t.sign_in().await.code(), "00");
    for (stan, amount) in [(10, 5_000), (11, 6_000), (12, 300)] {
        assert_eq!(
            t.send(&Req::purchase(&pan, amount, stan)).await.code(),
            "00"
        );
    }
    let host = settle(&mut t, 2, &totals((11_900, 3), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    assert_eq!(
        (host.domestic.debit_amount, host.domestic.debit_count),
        (11_300, 3)
    );
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 3);
    upload(
        &mut t,
        2,
        &[(10, &pan, 5_000), (11, &pan, 6_600), (13, &pan, 300)],
    )
    .await;
    let diffs = h.store.batch_differences(TID, 2).unwrap();
    let found: Vec<(u32, BatchDiffKind, Option<i64>, Option<i64>)> = diffs
        .iter()
        .map(|d| (d.stan, d.kind, d.host_amount_fen, d.terminal_amount_fen))
        .collect();
    assert_eq!(
        found,
        vec![
            (11, BatchDiffKind::AmountDiffers, Some(6_000), Some(6_600)),
            (12, BatchDiffKind::MissingAtTerminal, Some(300), None),
            (13, BatchDiffKind::MissingHere, None, Some(300)),
        ]
    );
    // Only the last four digits of an uploaded PAN are kept.
    let uploads = h.store.batch_uploads(TID, 2).unwrap();
    assert!(uploads.iter().all(|u| u.pan_last4.len() == 4));
    assert!(diffs.iter().all(|d| !d.pan_masked.contains(&pan[6..15])));
    assert!(
        h.store
            .batch_settlement(TID, 2)
            .unwrap()
            .unwrap()
            .upload_done_at_ms
            .is_some()
    );
}

/// A terminal whose settlement's answer never came still holds the settled batch: its next
/// sale there is refused 77, and its sign-in naming the settled batch keeps it in the host's
/// next one (60.2 of the answer), rather than opening the settled batch again under its
/// number, whose next settlement would have read the settled sale as missing here. Its
/// settlement of the closed batch sent again is answered from it as it closed.
#[tokio::test]
async fn a_terminal_that_lost_its_settlements_answer_signs_in_to_the_hosts_next_batch() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 1_000, 1)).await.code(), "00");
    // Settled; the terminal (whose batch only a sign-in moves here) never saw the answer.
    let host = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(
        t.send(&Req::purchase(&pan, 2_000, 2)).await.code(),
        "77",
        "a sale into the settled batch"
    );
    let signed_in = t.sign_in().await;
    assert_eq!(signed_in.code(), "00");
    assert_eq!(
        signed_in.frame().message.digits(60).unwrap().to_string(),
        "00000002003",
        "the answer's 60.2 names the host's open batch"
    );
    assert_eq!(t.batch, 2);
    assert_eq!(h.store.terminal(TID).unwrap().unwrap().batch_no, 2);
    assert_eq!(t.send(&Req::purchase(&pan, 2_000, 3)).await.code(), "00");
    // The closed batch's settlement sent again: as it closed.
    let again = settle(&mut t, 1, &totals((1_000, 1), (0, 0))).await;
    assert_eq!(again.domestic.result, SettleResult::BALANCED);
    assert_eq!(
        (again.domestic.debit_amount, again.domestic.debit_count),
        (1_000, 1)
    );
    let next = settle(&mut t, 2, &totals((2_000, 1), (0, 0))).await;
    assert_eq!(next.domestic.result, SettleResult::BALANCED);
    assert_eq!(
        (next.domestic.debit_amount, next.domestic.debit_count),
        (2_000, 1)
    );
}

/// An IC transaction's upload (0320, 60.3 203 or 205): one a message, no field 48, the card in
/// field 2, the amount in 4, the original's trace in 11, its chip data in 55.
async fn upload_ic(
    t: &mut Terminal,
    batch: u32,
    code: &str,
    trace: u32,
    pan: Option<&str>,
    amount: u64,
) -> String {
    let mut out = MessageBuilder::new(Mti::BATCH_UPLOAD);
    if let Some(pan) = pan {
        out.set_digits(2, pan).unwrap();
    }
    out.set_amount(amount).unwrap();
    out.set_stan(trace).unwrap();
    out.set_digits(22, "051").unwrap();
    out.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    out.set_bytes(55, &[0x9F, 0x26, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    out.set_digits(60, &format!("00{batch:06}{code}")).unwrap();
    let mut bytes = Vec::new();
    out.encode_frame(&head(), &mut bytes).unwrap();
    t.exchange(&bytes).await.code()
}

/// The batch's upload differences, (trace, kind) each.
fn differences(h: &Harness, batch: u32) -> Vec<(u32, BatchDiffKind)> {
    h.store
        .batch_differences(TID, batch)
        .unwrap()
        .iter()
        .map(|d| (d.stan, d.kind))
        .collect()
}

/// The end of a batch upload (60.3 `code`: 207 or 202), `count` transactions uploaded: the
/// answer's code.
async fn upload_end(t: &mut Terminal, batch: u32, code: &str, count: u16) -> String {
    let mut end = MessageBuilder::new(Mti::BATCH_UPLOAD);
    end.set_stan(950).unwrap();
    end.set_text(41, TID).unwrap().set_text(42, MID).unwrap();
    end.set_composed(&BatchUploadEnd { count }).unwrap();
    end.set_digits(60, &format!("00{batch:06}{code}")).unwrap();
    let mut bytes = Vec::new();
    end.encode_frame(&head(), &mut bytes).unwrap();
    t.exchange(&bytes).await.code()
}

/// A balanced batch's IC uploads (203) are compared for what they carry only: the terminal
/// uploads its chip transactions, not the batch. After an unbalanced settlement (205, then
/// 202) the upload is the whole batch, and what it lacks is missing at the terminal.
#[tokio::test]
async fn ic_uploads_carry_one_transaction_each_and_a_balanced_batch_is_not_missing_the_rest() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");
    for (stan, amount) in [(1, 1_000), (2, 2_500)] {
        assert_eq!(
            t.send(&Req::purchase(&pan, amount, stan)).await.code(),
            "00"
        );
    }
    let host = settle(&mut t, 1, &totals((3_500, 2), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    // An IC upload without its card number cannot be recorded: 30, nothing kept.
    assert_eq!(upload_ic(&mut t, 1, "203", 1, None, 1_000).await, "30");
    assert!(h.store.batch_uploads(TID, 1).unwrap().is_empty());
    assert_eq!(
        upload_ic(&mut t, 1, "203", 1, Some(&pan), 1_000).await,
        "00"
    );
    assert_eq!(upload_end(&mut t, 1, "207", 1).await, "00");
    let uploads = h.store.batch_uploads(TID, 1).unwrap();
    assert_eq!(
        uploads
            .iter()
            .map(|u| (u.stan, u.amount_fen, u.pan_last4.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, 1_000, &pan[pan.len() - 4..])]
    );
    assert!(h.store.batch_differences(TID, 1).unwrap().is_empty());

    t.batch = 2;
    assert_eq!(t.sign_in().await.code(), "00");
    for (stan, amount) in [(10, 5_000), (11, 600), (12, 300)] {
        assert_eq!(
            t.send(&Req::purchase(&pan, amount, stan)).await.code(),
            "00"
        );
    }
    let host = settle(&mut t, 2, &totals((6_000, 3), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    assert_eq!(
        upload_ic(&mut t, 2, "205", 10, Some(&pan), 5_000).await,
        "00"
    );
    assert_eq!(upload_ic(&mut t, 2, "205", 11, Some(&pan), 700).await, "00");
    assert_eq!(upload_end(&mut t, 2, "202", 2).await, "00");
    let found = differences(&h, 2);
    assert_eq!(
        found,
        vec![
            (11, BatchDiffKind::AmountDiffers),
            (12, BatchDiffKind::MissingAtTerminal),
        ]
    );
}

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

// 2026-11-23 22:59:59.000 in Beijing.
const BEFORE_CUTOVER_MS: i64 = 1_795_445_999_000;

#[tokio::test]
async fn requests_around_the_cut_over_get_their_clearing_dates_and_none_is_lost() {
    let mut h = Harness::new().await;
    h.stop().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(BEFORE_CUTOVER_MS)));
    let handle = Switch::start(
        h.config(),
        Arc::clone(&h.store) as Arc<dyn Store>,
        Arc::clone(&h.hsm) as Arc<dyn paycrypto::Hsm>,
        Arc::clone(&h.directory),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .await
    .unwrap();
    h.switch = Some(handle);
    assert!(
        h.eventually(5, || h.switch.as_ref().unwrap().issuer_connected("SIM"))
            .await
    );
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let pan = card("622202");

    // 22:59:59.999: still the 23rd.
    clock.0.store(BEFORE_CUTOVER_MS + 999, Ordering::SeqCst);
    let a = t.send(&Req::purchase(&pan, 1_000, 1)).await;
    assert_eq!(a.code(), "00");
    // 23:00:00.000: the 24th.
    clock.0.store(BEFORE_CUTOVER_MS + 1_000, Ordering::SeqCst);
    let b = t.send(&Req::purchase(&pan, 2_000, 2)).await;
    assert_eq!(b.code(), "00");
    // 23:00:05: voiding A (cleared on the 23rd) is still "same day" in the grace window.
    clock.0.store(BEFORE_CUTOVER_MS + 6_000, Ordering::SeqCst);
    let void = t
        .send(&Req::void(&pan, 1_000, 3, 1, &a.text(37).unwrap()))
        .await;
    assert_eq!(void.code(), "00");

    // 22:59:59.500 a purchase whose terminal never saw the answer; its reversal comes at
    // 23:00:20, after the cut-over: still accepted (not 25), the original reversed.
    clock.0.store(BEFORE_CUTOVER_MS + 500, Ordering::SeqCst);
    let c = Req::purchase(&pan, 3_000, 4);
    assert_eq!(t.send(&c).await.code(), "00");
    clock.0.store(BEFORE_CUTOVER_MS + 21_000, Ordering::SeqCst);
    assert_eq!(t.send(&Req::reversal_of(&c)).await.code(), "00");

    // 23:00:30 a refund of B: B clears on the 24th but went to the issuer dated 1123, and
    // field 61 must name it by that date, or the issuer cannot find it.
    clock.0.store(BEFORE_CUTOVER_MS + 31_000, Ordering::SeqCst);
    let b_rrn = b.text(37).unwrap();
    let refund = t.send(&Req::refund(&pan, 500, 5, &b_rrn, "1123")).await;
    assert_eq!(refund.code(), "00");
    assert_eq!(
        h.log.linked.lock().unwrap().last().cloned(),
        Some(format!("{b_rrn}1123"))
    );

    // 22:59:59.200 a request refused by the host (A is voided: no second void), its answer
    // lost; the retry at 23:00:40 gets the same answer, field 15 its own clearing date still.
    clock.0.store(BEFORE_CUTOVER_MS + 200, Ordering::SeqCst);
    let twice = Req::void(&pan, 1_000, 6, 1, &a.text(37).unwrap());
    let first = t.send(&twice).await;
    assert_ne!(first.code(), "00");
    let settlement_date = |r: &Response| r.frame().message.digits(15).map(|d| d.to_string());
    assert_eq!(settlement_date(&first).as_deref(), Some("1123"));
    clock.0.store(BEFORE_CUTOVER_MS + 41_000, Ordering::SeqCst);
    let retried = t.send(&twice).await;
    assert_eq!(retried.code(), first.code());
    assert_eq!(settlement_date(&retried).as_deref(), Some("1123"));

    let rows = h.store.txns_by_batch(TID, 1).unwrap();
    let date_of = |stan: u32| {
        rows.iter()
            .find(|r| r.stan == stan)
            .map(|r| r.clearing_date.clone())
            .unwrap()
    };
    assert_eq!(date_of(1), "20261123");
    assert_eq!(date_of(2), "20261124");
    assert_eq!(date_of(3), "20261124");
    let original = rows
        .iter()
        .find(|r| r.stan == 4 && r.kind == store::TxnKind::Purchase)
        .unwrap();
    assert_eq!(
        (original.clearing_date.as_str(), original.state),
        ("20261123", store::TxnState::Reversed)
    );
    // The refused void is journalled once, its retry answered from it.
    assert_eq!(date_of(6), "20261123");
    assert_eq!(rows.len(), 7, "every request journalled: {rows:?}");
    h.stop().await;
}

/// A terminal replaced or reinstalled numbers its batches and traces from 1 again. Weeks later
/// (beyond the month a batch number's rows are looked up for), a request under one of the
/// earlier batch's keys is new, not other content under a known key (94), even though that
/// batch was never settled.
#[tokio::test]
async fn a_key_of_a_batch_number_used_again_weeks_later_is_new() {
    let mut h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let pan = card("622202");
    let old = t.send(&Req::purchase(&pan, 500, 7)).await;
    assert_eq!(old.code(), "00");

    h.stop().await;
    h.clock.shift_days(40);
    h.start().await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let new = t.send(&Req::purchase(&pan, 800, 7)).await;
    assert_eq!(
        new.code(),
        "00",
        "a new request, not other content under a known key"
    );
    assert_ne!(new.text(37), old.text(37));
    // Its settlement counts the new batch alone: the old use of the number, never settled,
    // is a month and more gone, as it is for the key.
    let host = settle(&mut t, 1, &totals((800, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(
        (host.domestic.debit_amount, host.domestic.debit_count),
        (800, 1)
    );
}

/// A batch number used again (ten days on, a terminal reinstalled) does not carry the earlier
/// batch's upload under it: its differences, upload records and upload end go when the new
/// batch settles, so a balanced new batch shows none of them, and its own upload is compared
/// alone.
#[tokio::test]
async fn a_batch_number_used_again_leaves_the_earlier_batchs_upload_behind() {
    let mut h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 10_000, 7)).await.code(), "00");
    let host = settle(&mut t, 1, &totals((9_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    upload(&mut t, 1, &[(7, &pan, 9_000)]).await;
    assert_eq!(differences(&h, 1), vec![(7, BatchDiffKind::AmountDiffers)]);
    assert!(
        h.store
            .batch_settlement(TID, 1)
            .unwrap()
            .unwrap()
            .upload_done_at_ms
            .is_some()
    );
    // Batch 2 settled empty: batch 1 is not the one closed just before the host's open one,
    // which a sign-in naming it would not take back (`a_terminal_that_lost_its_settlements_
    // answer_signs_in_to_the_hosts_next_batch`).
    settle(&mut t, 2, &totals((0, 0), (0, 0))).await;

    h.stop().await;
    h.clock.shift_days(10);
    h.start().await;
    let mut t = h.terminal().await;
    t.batch = 1;
    assert_eq!(t.sign_in().await.code(), "00");
    assert_eq!(t.send(&Req::purchase(&pan, 80_000, 3)).await.code(), "00");
    let host = settle(&mut t, 1, &totals((80_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(differences(&h, 1), vec![]);
    assert!(h.store.batch_uploads(TID, 1).unwrap().is_empty());
    let settled = h.store.batch_settlement(TID, 1).unwrap().unwrap();
    assert_eq!(settled.upload_done_at_ms, None);
    // The same settlement sent again keeps the batch as it closed.
    let host = settle(&mut t, 1, &totals((80_000, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
}

/// Within the month (ten days on), once the earlier batch of the number was settled: what was
/// before that settlement is not the batch now open, for a retry's look-up, the settlement's
/// totals and its upload's comparison alike.
#[tokio::test]
async fn a_batch_number_settled_and_used_again_days_later_is_a_new_batch() {
    let mut h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let pan = card("622202");
    assert_eq!(t.send(&Req::purchase(&pan, 500, 7)).await.code(), "00");
    assert_eq!(t.send(&Req::purchase(&pan, 600, 8)).await.code(), "00");
    let host = settle(&mut t, 1, &totals((1_100, 2), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    // Its settlement sent again, unreadable: the batch stays closed where it closed.
    let mut garbled = MessageBuilder::new(Mti::SETTLEMENT);
    garbled.set_stan(900).unwrap();
    garbled
        .set_text(41, TID)
        .unwrap()
        .set_text(42, MID)
        .unwrap();
    garbled.set_digits(48, "1").unwrap();
    garbled.set_text(49, "156").unwrap();
    garbled.set_digits(60, "00000001201").unwrap();
    garbled.set_text(63, "001").unwrap();
    let mut bytes = Vec::new();
    garbled.encode_frame(&head(), &mut bytes).unwrap();
    assert_eq!(t.exchange(&bytes).await.code(), "00");
    assert_eq!(h.store.batch_settlement(TID, 1).unwrap().unwrap().result, 1);
    // Batch 2 settled empty: a sign-in naming batch 1 takes it again.
    settle(&mut t, 2, &totals((0, 0), (0, 0))).await;

    h.stop().await;
    h.clock.shift_days(10);
    h.start().await;
    let mut t = h.terminal().await;
    t.batch = 1;
    assert_eq!(t.sign_in().await.code(), "00");
    // Settled at once, before any sale: an empty batch, balanced at zero, not the earlier
    // batch's settlement sent again (that one carried the earlier totals).
    let host = settle(&mut t, 1, &totals((0, 0), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(
        (host.domestic.debit_amount, host.domestic.debit_count),
        (0, 0)
    );
    settle(&mut t, 2, &totals((0, 0), (0, 0))).await;
    t.batch = 1;
    assert_eq!(t.sign_in().await.code(), "00");
    let new = t.send(&Req::purchase(&pan, 800, 7)).await;
    assert_eq!(
        new.code(),
        "00",
        "a new request, not other content under a known key"
    );
    // The terminal counts 900: unbalanced against the host's 800 (the earlier batch's 1,100
    // left out), and its upload of the whole batch finds the one amount that differs.
    let host = settle(&mut t, 1, &totals((900, 1), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    assert_eq!(
        (host.domestic.debit_amount, host.domestic.debit_count),
        (800, 1)
    );
    upload(&mut t, 1, &[(7, &pan, 900)]).await;
    let found = differences(&h, 1);
    assert_eq!(found, vec![(7, BatchDiffKind::AmountDiffers)]);
}

/// The same day, without a restart (the index still holds the earlier batch): a terminal
/// replaced after settling batch 1 starts again at batch 1, trace 1. Its sales under the
/// earlier batch's keys are new: one with other content is not refused as a duplicate (94),
/// and one with the same content as an earlier sale is sent to the issuer, not answered with
/// the earlier sale's approval (which would charge nothing).
#[tokio::test]
async fn a_batch_number_settled_and_used_again_the_same_day_is_a_new_batch() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let pan = card("622202");
    let first = t.send(&Req::purchase(&pan, 500, 7)).await;
    assert_eq!(first.code(), "00");
    let same = Req::purchase(&pan, 600, 8);
    let earlier = t.send(&same).await;
    assert_eq!(earlier.code(), "00");
    let settled_sale = Req::purchase(&pan, 700, 9);
    let settled_sale_answer = t.send(&settled_sale).await;
    assert_eq!(settled_sale_answer.code(), "00");
    let reversed = Req::purchase(&pan, 900, 10);
    assert_eq!(t.send(&reversed).await.code(), "00");
    assert_eq!(t.send(&Req::reversal_of(&reversed)).await.code(), "00");
    let host = settle(&mut t, 1, &totals((1_800, 3), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    // Batch 2 settled empty: a sign-in naming batch 1 takes it again.
    settle(&mut t, 2, &totals((0, 0), (0, 0))).await;

    let mut t = h.terminal().await;
    t.batch = 1;
    assert_eq!(t.sign_in().await.code(), "00");
    let other = t.send(&Req::purchase(&pan, 800, 7)).await;
    assert_eq!(
        other.code(),
        "00",
        "other content under an earlier batch's key"
    );
    assert_ne!(other.text(37), first.text(37));
    let again = t.send(&same).await;
    assert_eq!(again.code(), "00");
    assert_ne!(
        again.text(37),
        earlier.text(37),
        "the earlier batch's approval given again: nothing charged"
    );
    // A retry within the batch open now is still a retry.
    assert_eq!(t.send(&same).await.text(37), again.text(37));
    // A sale of the new batch lost on its way, reversed by the terminal under a trace whose
    // earlier sale (of the same amount) is settled: nothing to reverse now, and the settled
    // sale stands.
    assert_eq!(t.send(&Req::reversal_of(&settled_sale)).await.code(), "00");
    let rrn = settled_sale_answer.text(37).unwrap();
    assert_eq!(
        h.store.txn_by_rrn(&rrn).unwrap().unwrap().state,
        store::TxnState::Approved,
        "a settled sale of the earlier batch was reversed"
    );
    // The earlier batch's reversal under a trace does not refuse the new batch's sale there.
    let fresh = t.send(&Req::purchase(&pan, 900, 10)).await;
    assert_eq!(
        fresh.code(),
        "00",
        "refused for the earlier batch's reversal"
    );
    let host = settle(&mut t, 1, &totals((2_300, 3), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
}

/// Cards that a BIN longer than the six digits kept in clear decides (the table's only
/// `688659…` entry is XMCCB's 7-digit `6886592` for 18-digit cards): the terminal splits its
/// totals by field 63 of each card's answer, and the host's totals follow the same split.
#[tokio::test]
async fn cards_a_longer_bin_decides_are_settled_on_the_side_their_answers_said() {
    let h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let with_check = |payload: &str| {
        let check = domain::luhn_check_digit(payload.as_bytes()).unwrap();
        format!("{payload}{}", char::from(check))
    };
    let mut domestic = (0_u64, 0_u16);
    let mut foreign = (0_u64, 0_u16);
    for (stan, payload, amount) in [
        (3, "688659200000000", 1_000_u64),
        (4, "68865910000000000", 2_000),
        (5, "62220200000000000", 4_000),
    ] {
        let pan = with_check(payload);
        let sold = t.send(&Req::purchase(&pan, amount, stan)).await;
        assert_eq!(sold.code(), "00", "{payload}");
        let organisation = sold.text(63).unwrap_or_default();
        let side = if organisation.starts_with("CUP") {
            &mut domestic
        } else {
            &mut foreign
        };
        side.0 += amount;
        side.1 += 1;
    }
    let mut ours = totals(domestic, (0, 0));
    ours.foreign = Totals {
        debit_amount: foreign.0,
        debit_count: foreign.1,
        ..Totals::default()
    };
    let host = settle(&mut t, 1, &ours).await;
    assert_eq!(
        (host.domestic.result, host.foreign.result),
        (SettleResult::BALANCED, SettleResult::BALANCED),
        "domestic {domestic:?}, foreign {foreign:?}: {host:?}"
    );
}

/// A completion naming its pre-authorisation by batch and trace alone, days later and after
/// that batch was settled: the settled batch is looked up whole (only the batch open now
/// starts after its number's last settlement).
#[tokio::test]
async fn a_completion_names_a_pre_authorisation_of_a_settled_batch_by_its_trace() {
    let mut h = Harness::new().await;
    let mut t = h.terminal().await;
    t.sign_in().await;
    let pan = card("622202");
    let pre_auth = Req {
        mti: Mti::AUTHORISATION,
        processing: "030000",
        condition: "06",
        message_type: "10",
        ..Req::purchase(&pan, 5_000, 3)
    };
    assert_eq!(t.send(&pre_auth).await.code(), "00");
    let host = settle(&mut t, 1, &totals((0, 0), (0, 0))).await;
    assert_eq!(host.domestic.result, SettleResult::BALANCED);

    h.stop().await;
    h.clock.shift_days(3);
    h.start().await;
    let mut t = h.terminal().await;
    t.batch = 2;
    assert_eq!(t.sign_in().await.code(), "00");
    let completion = Req {
        condition: "06",
        message_type: "20",
        rrn: None,
        f61: Some(format!("{:06}{:06}", 1, 3)),
        ..Req::purchase(&pan, 4_000, 1)
    };
    assert_eq!(t.send(&completion).await.code(), "00");
}
