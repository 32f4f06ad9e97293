//! Terminal settlement (0500) and batch upload (0320): the host's field 48 totals for the batch
//! against the terminal's, the uploaded transactions against the journal, the batch closed and
//! the next one started; and the day cut-over that gives every transaction its clearing date.

use std::collections::HashMap;
use std::sync::Arc;

use domain::CardNetwork;
use iso8583::{
    BatchUpload, BatchUploadEnd, BatchUploadKind, CardOrganisation, Frame, SettleResult,
    SettlementTotals, Totals, TxnKind as Wire,
};
use store::settlement::{
    BatchDiffKind, BatchDiffRow, BatchSettlementRow, BatchUploadRow, SettlementRecord,
};
use store::{Record, TxnKind, TxnRow, TxnState};

use crate::clock::LocalTime;
use crate::config::{CUTOVER_GRACE_MS, MINUTES_PER_DAY};
use crate::core::{
    Core, RC_APPROVED, RC_BATCH_OUT_OF_STEP, RC_FORMAT_ERROR, RC_INVALID_MERCHANT, RC_MAC_FAILED,
    RC_NOT_REGISTERED, RC_RECONCILE_UNBALANCED, RC_SYSTEM_ERROR, Terminal,
};
use crate::ledger::Answer;

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;

/// The clearing date a moment belongs to, after the day cut-over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearingDay {
    /// `YYYYMMDD`.
    pub date: String,
    /// Days since 1970-01-01 of `date`.
    pub day_number: i64,
    /// Within `CUTOVER_GRACE_MS` after the cut-over: the previous clearing day still counts as
    /// the same day for voids and reversals.
    pub in_grace: bool,
}

impl ClearingDay {
    /// `now_ms` in China time, moved to the next day from `cutover_minute` on.
    pub fn of(now_ms: i64, cutover_minute: u16) -> ClearingDay {
        let cutover_ms = i64::from(cutover_minute.min(MINUTES_PER_DAY - 1)) * MS_PER_MINUTE;
        let local = LocalTime::from_ms(now_ms);
        let in_day_ms = (i64::from(local.hour) * 3_600
            + i64::from(local.minute) * 60
            + i64::from(local.second))
            * 1_000
            + now_ms.rem_euclid(1_000);
        let after = cutover_ms > 0 && in_day_ms >= cutover_ms;
        let day_number = local.day_number + i64::from(after);
        // Midnight (cut-over 0) has its grace at the start of the calendar day.
        let since_cutover = if cutover_ms == 0 {
            in_day_ms
        } else if after {
            in_day_ms - cutover_ms
        } else {
            in_day_ms + MS_PER_DAY - cutover_ms
        };
        ClearingDay {
            date: LocalTime::from_ms(day_number * MS_PER_DAY).yyyymmdd(),
            day_number,
            in_grace: since_cutover < CUTOVER_GRACE_MS,
        }
    }

    /// Whether an original of clearing day `original_day` is "today" for a void or reversal.
    pub fn same_day(&self, original_day: i64) -> bool {
        original_day == self.day_number || (self.in_grace && original_day + 1 == self.day_number)
    }
}

/// The clearing date (`YYYYMMDD`) of a moment, for a cut-over at `cutover_minute`.
pub fn clearing_date_of(now_ms: i64, cutover_minute: u16) -> String {
    ClearingDay::of(now_ms, cutover_minute).date
}

/// How far apart the clocks of the nodes that stamped a batch's rows and uploads and its
/// settlement may be (an earlier batch under the same number is days older).
const NODE_CLOCKS_MARGIN_MS: i64 = 60_000;

/// Whether `batch` is the one a terminal in batch `current` closed last: the number before it,
/// 999999 before 1 as the host counts them round, or 0 before 1 (a terminal that counts its
/// batches from 000000, which sign-in takes; settling it moves the terminal to 1).
fn closed_just_before(batch: u32, current: u32) -> bool {
    batch == batch_before(current) || (current == 1 && batch == 0)
}

/// Whether a settlement closed its batch: any but one with unreadable totals (which closes
/// nothing; the terminal may send it again).
pub(crate) fn closes(settled: &BatchSettlementRow) -> bool {
    settled.result != SettleResult::ERROR.0
}

/// The number before batch `current`, as the host counts them round (999999 before 1).
fn batch_before(current: u32) -> u32 {
    if current <= 1 { 999_999 } else { current - 1 }
}

/// Debits are purchases and completions, credits voids and refunds (PROTOCOL.md), counting what
/// the issuer approved and nobody reversed.
fn counted(row: &TxnRow) -> Option<bool> {
    if matches!(
        row.state,
        TxnState::InFlight
            | TxnState::Declined
            | TxnState::TimedOut
            | TxnState::Failed
            | TxnState::Reversed
    ) {
        return None;
    }
    match row.kind {
        TxnKind::Purchase | TxnKind::Completion => Some(true),
        TxnKind::PurchaseVoid | TxnKind::CompletionVoid | TxnKind::Refund => Some(false),
        TxnKind::BalanceInquiry | TxnKind::PreAuth | TxnKind::PreAuthVoid | TxnKind::Reversal => {
            None
        }
    }
}

fn same(a: &Totals, b: &Totals) -> bool {
    a.debit_amount == b.debit_amount
        && a.debit_count == b.debit_count
        && a.credit_amount == b.credit_amount
        && a.credit_count == b.credit_count
}

/// Field 63.1 of a domestic card.
const DOMESTIC: &str = "CUP";

/// The card organisation of a card as the BIN table finds it, one classification for field
/// 63.1 and for field 48's split: "CUP" for a card in the CUP BIN table or on a UnionPay
/// prefix (domestic), the foreign network's code otherwise.
fn organisation(lookup: &domain::CardLookup<'_>) -> &'static str {
    if lookup.issuer.is_some() {
        return DOMESTIC;
    }
    match lookup.network {
        CardNetwork::DomesticCup => DOMESTIC,
        CardNetwork::Visa => "VIS",
        CardNetwork::Mastercard => "MCC",
        CardNetwork::Jcb => "JCB",
        CardNetwork::Amex => "AMX",
        CardNetwork::Other => "000",
    }
}

/// The most field 48 can say of a half's count (n3) and amount (n12).
const FIELD48_COUNT_MAX: u16 = 999;
const FIELD48_AMOUNT_MAX: u64 = 999_999_999_999;

/// The host's answer to a settlement: its totals, each half with its own result (PROTOCOL.md:
/// a result digit in each 31), and the settlement's as a whole (balanced only if both halves
/// are). A half that field 48 cannot hold (more than 999 debits, say) is answered at the most
/// it can say and unbalanced: the terminal then uploads its batch, which is compared
/// transaction by transaction, rather than being left with no answer.
fn settlement_answer(
    mut ours: SettlementTotals,
    theirs: Option<&SettlementTotals>,
) -> (SettlementTotals, SettleResult) {
    let Some(theirs) = theirs else {
        for half in [&mut ours.domestic, &mut ours.foreign] {
            fit(half);
            half.result = SettleResult::ERROR;
        }
        return (ours, SettleResult::ERROR);
    };
    let mut all = SettleResult::BALANCED;
    for (half, their) in [
        (&mut ours.domestic, &theirs.domestic),
        (&mut ours.foreign, &theirs.foreign),
    ] {
        let fitted = fit(half);
        half.result = if fitted && same(half, their) {
            SettleResult::BALANCED
        } else {
            all = SettleResult::UNBALANCED;
            SettleResult::UNBALANCED
        };
    }
    (ours, all)
}

/// Brings a half within what field 48 can say; `false` if it had to.
fn fit(half: &mut Totals) -> bool {
    let fits = half.debit_count <= FIELD48_COUNT_MAX
        && half.credit_count <= FIELD48_COUNT_MAX
        && half.debit_amount <= FIELD48_AMOUNT_MAX
        && half.credit_amount <= FIELD48_AMOUNT_MAX;
    half.debit_count = half.debit_count.min(FIELD48_COUNT_MAX);
    half.credit_count = half.credit_count.min(FIELD48_COUNT_MAX);
    half.debit_amount = half.debit_amount.min(FIELD48_AMOUNT_MAX);
    half.credit_amount = half.credit_amount.min(FIELD48_AMOUNT_MAX);
    fits
}

fn totals_digits(t: &SettlementTotals) -> String {
    let half = |t: &Totals| {
        format!(
            "{:012}{:03}{:012}{:03}{}",
            t.debit_amount, t.debit_count, t.credit_amount, t.credit_count, t.result.0
        )
    };
    format!("{}{}", half(&t.domestic), half(&t.foreign))
}

/// Why `management_refusal` refused a settlement or batch upload, and whether the request's
/// MAC (if it carried one) had been checked by then.
#[derive(Clone, Copy)]
enum Refusal {
    /// Before the MAC could be checked (another merchant, not signed in) or because it was
    /// wrong: answered without a MAC.
    Unchecked([u8; 2]),
    /// After it: answered with one when the request carried one.
    Checked([u8; 2]),
}

impl Core {
    pub(crate) fn clearing_day(&self, now_ms: i64) -> ClearingDay {
        ClearingDay::of(now_ms, self.config.cutover_minute)
    }

    /// Domestic or foreign, as field 48 splits totals: a card in the CUP BIN table or on a
    /// UnionPay prefix is domestic. Judged on the whole card number, as field 63 of the card's
    /// answer was, from which the terminal splits its own totals: a BIN longer than the six
    /// digits kept in clear (a 7-digit one, Visa's 8) decides some cards.
    fn is_foreign(&self, row: &TxnRow) -> bool {
        let Some(pan) = row.pan.as_ref() else {
            return false;
        };
        let whole = self.hsm.open(&pan.sealed).ok().and_then(|digits| {
            std::str::from_utf8(&digits)
                .ok()?
                .parse::<domain::Pan>()
                .ok()
        });
        if let Some(whole) = whole {
            return self.card_organisation(Some(&whole)).0 != DOMESTIC;
        }
        // Not to be opened (sealed under another master key): the card's own length (its
        // masked form's), and what its BIN tells.
        let len = pan.masked.chars().count().max(pan.bin.len() + 1);
        organisation(&self.directory.lookup_prefix(&pan.bin, len)) != DOMESTIC
    }

    /// Field 63.1 of a response for a card (`organisation`, "CUP" for none) and the issuing
    /// bank's code when the BIN table knows the card (field 44).
    pub(crate) fn card_organisation(
        &self,
        pan: Option<&domain::Pan>,
    ) -> (&'static str, Option<String>) {
        let Some(pan) = pan else {
            return (DOMESTIC, None);
        };
        let lookup = self.directory.lookup(pan);
        let bank = lookup.issuer.as_ref().map(|i| i.bank.code().to_owned());
        (organisation(&lookup), bank)
    }

    /// The journal's rows under a terminal's batch number, from the store (the durable truth
    /// the journal answered from), read off the async workers and within `journal_wait`; only
    /// those within [`Core::batches_since`]: older ones are an earlier batch of the same number
    /// (a terminal reinstalled and numbering its batches from 1 again), which requests no
    /// longer count as this batch's either.
    async fn batch_rows(&self, tid: &str, batch_no: u32) -> Option<Vec<TxnRow>> {
        let tid = tid.to_owned();
        let mut rows = self
            .read_for_request(move |store| store.txns_by_batch(&tid, batch_no))
            .await?
            .ok()?;
        let since = self.batches_since();
        rows.retain(|row| row.clearing_date >= since);
        Some(rows)
    }

    fn host_totals(&self, rows: &[TxnRow]) -> SettlementTotals {
        let mut totals = SettlementTotals::default();
        for row in rows {
            let Some(debit) = counted(row) else {
                continue;
            };
            let half = if self.is_foreign(row) {
                &mut totals.foreign
            } else {
                &mut totals.domestic
            };
            let amount = u64::try_from(row.amount_fen).unwrap_or(0);
            if debit {
                half.debit_amount += amount;
                half.debit_count = half.debit_count.saturating_add(1);
            } else {
                half.credit_amount += amount;
                half.credit_count = half.credit_count.saturating_add(1);
            }
        }
        totals
    }

    /// The batch a sign-in puts `terminal` in, given the batch its 60.2 names: that one,
    /// unless it is the batch the host closed just before the terminal's open one. A terminal
    /// that lost its settlement's answer (or was told 96 while the settlement's write went on
    /// to land) still holds the settled number, and its next request is refused 77 "sign in
    /// again": taking the number back would open the settled batch again under it, and the
    /// terminal's next settlement would read the sales already settled as the terminal's
    /// alone (unbalanced, uploaded as missing here). It stays in the host's open batch, which
    /// the answer's 60.2 names, and its settlement of the closed one sent again is answered
    /// from that batch as it closed. With a shared journal the open batch is the terminal's
    /// row's (another node may have settled it: this node's memory moves only with its own
    /// settlements). `None` if the store could not be read.
    pub(crate) async fn batch_at_sign_in(
        &self,
        terminal: &Terminal,
        named: Option<u32>,
    ) -> Option<u32> {
        let mut open = terminal.batch_no;
        if self.config.shared_journal {
            let tid = terminal.tid.clone();
            if let Some(row) = self
                .read_for_request(move |store| store.terminal(&tid))
                .await?
                .ok()?
            {
                open = row.batch_no;
            }
        }
        let Some(named) = named else {
            return Some(open);
        };
        if named == open || !closed_just_before(named, open) {
            return Some(named);
        }
        let closed = self
            .batch_settled(&terminal.tid, named)
            .await?
            .is_some_and(|p| closes(&p));
        Some(if closed { open } else { named })
    }

    fn batch_of(&self, frame: &Frame<'_>, current: u32) -> u32 {
        frame
            .message
            .field60()
            .ok()
            .flatten()
            .and_then(|f| f.batch)
            .unwrap_or(current)
    }

    /// Why a settlement or batch upload of `terminal` for `batch_no` is refused, if it is:
    /// these messages carry no MAC in most terminals, so what they may do is held to what the
    /// terminal would send. Another merchant's ID: 03. Not signed in: 77. A MAC (field 64)
    /// that the terminal's MAK does not give: A0, as for a purchase (a terminal that sends one
    /// is held to it; one that sends none is not asked for it). A batch other than the
    /// terminal's current one or the number before it (`closed_just_before`: a resent
    /// settlement, an upload after it): 77, so that no message can move a terminal's batch
    /// anywhere else.
    fn management_refusal(
        &self,
        frame: &Frame<'_>,
        terminal: &Terminal,
        batch_no: u32,
    ) -> Option<Refusal> {
        if !terminal.names_own_merchant(&frame.message) {
            return Some(Refusal::Unchecked(RC_INVALID_MERCHANT));
        }
        if terminal.keys.is_none() {
            return Some(Refusal::Unchecked(RC_BATCH_OUT_OF_STEP));
        }
        if self.mac_refused(frame, terminal) {
            return Some(Refusal::Unchecked(RC_MAC_FAILED));
        }
        if batch_no != terminal.batch_no && !closed_just_before(batch_no, terminal.batch_no) {
            return Some(Refusal::Checked(RC_BATCH_OUT_OF_STEP));
        }
        None
    }

    /// Whether `frame` carries a MAC (field 64) that `terminal`'s MAK does not give: a
    /// management message (settlement, batch upload, sign-off) that carries one is held to it;
    /// one that carries none, or a terminal without keys, is not asked for one here.
    pub(crate) fn mac_refused(&self, frame: &Frame<'_>, terminal: &Terminal) -> bool {
        let (Some(mac), Some(keys)) = (frame.message.mac(), terminal.keys) else {
            return false;
        };
        let mac_ok = self
            .hsm
            .verify_mac(keys.mak, terminal.mac, frame.message.mac_input(), mac)
            .unwrap_or(false);
        if !mac_ok {
            tracing::info!(tid = %terminal.tid, "MAC verification failed");
        }
        !mac_ok
    }

    /// The answer to a settlement or batch upload `management_refusal` refused: with a MAC
    /// when the request's MAC was checked and right, as a purchase's refusals are.
    fn refused(&self, frame: &Frame<'_>, terminal: &Terminal, refusal: Refusal) -> Option<Vec<u8>> {
        match refusal {
            Refusal::Unchecked(code) => self.answer_code(frame, code),
            Refusal::Checked(code) => self.answer_checked(frame, terminal, code),
        }
    }

    /// The answer to `frame` with response code `code`, once `terminal`'s MAC (if the request
    /// carried one) has been checked: with a MAC then.
    pub(crate) fn answer_checked(
        &self,
        frame: &Frame<'_>,
        terminal: &Terminal,
        code: [u8; 2],
    ) -> Option<Vec<u8>> {
        self.reply(frame, Some(terminal), &Answer::code(code), None, |_| Ok(()))
    }

    pub(crate) async fn settle(self: &Arc<Self>, frame: &Frame<'_>) -> Option<Vec<u8>> {
        let request = &frame.message;
        let Some(terminal) = request.text(41).and_then(|t| self.terminal(t.trim_end())) else {
            return self.answer_code(frame, RC_NOT_REGISTERED);
        };
        let terminal = self.keys_for_mac(frame, terminal).await;
        let batch_no = self.batch_of(frame, terminal.batch_no);
        if let Some(refusal) = self.management_refusal(frame, &terminal, batch_no) {
            tracing::info!(tid = %terminal.tid, batch_no, "settlement refused");
            return self.refused(frame, &terminal, refusal);
        }
        // Past the checks: a request that carried a MAC gets its answers MACed.
        let answer = |code| self.answer_checked(frame, &terminal, code);
        let theirs = request
            .digits(48)
            .and_then(|d| SettlementTotals::parse(d).ok());
        let Some(mut rows) = self.batch_rows(&terminal.tid, batch_no).await else {
            return answer(RC_SYSTEM_ERROR);
        };
        // Rows received since the number's last settlement are a batch opened again under it
        // (a terminal replaced or reinstalled numbers its batches from 1 again): the rows from
        // before are the earlier batch's. None since, and the totals that settlement was sent
        // (or none readable): this is that settlement sent again, and the batch starts where it
        // started then. None since and other totals: a batch opened again and settled empty
        // (or with sales the host never had), not the earlier one.
        let Some(prior) = self.batch_settled(&terminal.tid, batch_no).await else {
            return answer(RC_SYSTEM_ERROR);
        };
        // (The request path draws the same line, at the settlement's time: the nodes' clocks
        // agree far closer than a batch's last sale and its settlement are apart.)
        let closed_before = prior.as_ref().is_some_and(closes);
        // The batch before the terminal's open one, closed already: its settlement sent again
        // (its answer lost), whatever totals it carries now. Answered from the closed batch as
        // it was closed, and nothing written: only the batch open now can be opened again, and
        // the record that closed this one stays as it was.
        if batch_no != terminal.batch_no
            && let Some(p) = prior.as_ref().filter(|_| closed_before)
        {
            // All of the batch's rows since it opened, those after its closing record too:
            // sales approved while a settlement answered 96 was still being written (memory
            // moved to the next batch only once it landed) belong to no other batch.
            rows.retain(|r| {
                p.opened_after_ms
                    .is_none_or(|after| r.received_at_ms > after)
            });
            let (ours, result) = settlement_answer(self.host_totals(&rows), theirs.as_ref());
            tracing::info!(tid = %terminal.tid, batch_no, result = result.0, "settlement of a closed batch sent again");
            return self.settled_answer(frame, &terminal, &ours);
        }
        let reopened = prior.as_ref().is_some_and(|p| {
            let rows_since = rows.iter().any(|r| r.received_at_ms > p.settled_at_ms);
            let sent_again = theirs
                .as_ref()
                .is_none_or(|t| totals_digits(t) == p.terminal_totals);
            closed_before && (rows_since || !sent_again)
        });
        let opened_after_ms = match &prior {
            Some(p) if reopened => Some(p.settled_at_ms),
            Some(p) => p.opened_after_ms,
            None => None,
        };
        if let Some(after) = opened_after_ms {
            rows.retain(|r| r.received_at_ms > after);
        }
        let (ours, result) = settlement_answer(self.host_totals(&rows), theirs.as_ref());
        let now_ms = self.clock.now_ms();
        let reset = reopened.then(|| {
            Record::Settlement(SettlementRecord::BatchReopened {
                tid: terminal.tid.clone(),
                batch_no,
            })
        });
        let settled = Record::Settlement(SettlementRecord::BatchSettled(BatchSettlementRow {
            tid: terminal.tid.clone(),
            batch_no,
            settled_at_ms: now_ms,
            result: result.0,
            host_totals: totals_digits(&ours),
            terminal_totals: theirs.as_ref().map(totals_digits).unwrap_or_default(),
            upload_done_at_ms: None,
            opened_after_ms,
        }));
        if result == SettleResult::ERROR {
            // Unreadable totals: nothing closes; the terminal may send its settlement again. A
            // closed batch's settlement sent again unreadable is not written over the one that
            // closed it, which tells where a batch opened later under the number starts.
            if closed_before && !reopened {
                tracing::info!(tid = %terminal.tid, batch_no, "unreadable settlement of a closed batch");
            } else if self
                .persist_within(reset.into_iter().chain([settled]).collect())
                .await
                .is_err()
            {
                return answer(RC_SYSTEM_ERROR);
            }
        } else {
            // The terminal starts its next batch after settling, balanced or not; an
            // unbalanced batch is then uploaded under its old number.
            let next = batch_no % 999_999 + 1;
            let batch = Record::Batch {
                tid: terminal.tid.clone(),
                batch_no: next,
            };
            let records: Vec<Record> = reset.into_iter().chain([settled, batch]).collect();
            let Ok(mut durable) = self.store.submit(records) else {
                return answer(RC_SYSTEM_ERROR);
            };
            match tokio::time::timeout(self.config.journal_wait, &mut durable).await {
                // Only the batch: a sign-in or a suspension made during the writes stays.
                Ok(Ok(())) => self.modify_terminal(&terminal.tid, |t| t.batch_no = next),
                Ok(Err(_)) => return answer(RC_SYSTEM_ERROR),
                Err(_) => {
                    // Answered 96, the write still queued: should it land, the batch is closed
                    // in the journal, and memory follows then (the terminal's requests under
                    // the closed batch get 77, and its settlement sent again is answered from
                    // the closed batch), rather than the batch going on in memory only, split
                    // in two by a settlement the terminal was told had failed.
                    let error = self.no_answer();
                    tracing::warn!(%error, tid = %terminal.tid, batch_no, "settlement answered 96; its write stays queued");
                    let core = Arc::clone(self);
                    let tid = terminal.tid.clone();
                    let keys = terminal.keys;
                    let counted = crate::core::LateGuard::new(self);
                    self.tasks.spawn(async move {
                        let _counted = counted;
                        if durable.await.is_ok() {
                            // Not over a sign-in made meanwhile (new keys), whose batch is the
                            // journal's last word on it.
                            core.modify_terminal(&tid, |t| {
                                if t.batch_no == batch_no && t.keys == keys {
                                    t.batch_no = next;
                                }
                            });
                        }
                    });
                    return answer(RC_SYSTEM_ERROR);
                }
            }
        }
        tracing::info!(tid = %terminal.tid, batch_no, result = result.0, "settled");
        self.settled_answer(frame, &terminal, &ours)
    }

    /// A settlement's answer: 00, with the host's totals and their verdict in field 48.
    fn settled_answer(
        &self,
        frame: &Frame<'_>,
        terminal: &Terminal,
        ours: &SettlementTotals,
    ) -> Option<Vec<u8>> {
        self.reply(
            frame,
            Some(terminal),
            &Answer::code(RC_APPROVED),
            None,
            |out| {
                out.set_composed(ours)?;
                Ok(())
            },
        )
    }

    /// 0320: records of an upload are kept (last four PAN digits only); the end message
    /// compares them with the journal and stores exactly which transactions differ.
    pub(crate) async fn batch_upload(
        self: &Arc<Self>,
        frame: &Frame<'_>,
        kind: Wire,
    ) -> Option<Vec<u8>> {
        let request = &frame.message;
        let Some(terminal) = request.text(41).and_then(|t| self.terminal(t.trim_end())) else {
            return self.answer_code(frame, RC_NOT_REGISTERED);
        };
        let terminal = self.keys_for_mac(frame, terminal).await;
        // An upload follows the settlement that closed its batch: default to the one before.
        let batch_no = self.batch_of(frame, batch_before(terminal.batch_no));
        if let Some(refusal) = self.management_refusal(frame, &terminal, batch_no) {
            tracing::info!(tid = %terminal.tid, batch_no, "batch upload refused");
            return self.refused(frame, &terminal, refusal);
        }
        // Past the checks: a request that carried a MAC gets its answers MACed.
        let answer = |code| self.answer_checked(frame, &terminal, code);
        let now_ms = self.clock.now_ms();
        let records = match kind {
            Wire::BatchUploadEnd { .. } => {
                // The end declares how many records were sent (48, n4): a count that cannot be
                // read is a format error.
                let declared = request
                    .digits(48)
                    .and_then(|d| BatchUploadEnd::parse(d).ok());
                let Some(declared) = declared else {
                    return answer(RC_FORMAT_ERROR);
                };
                let Some(settled) = self.batch_settled(&terminal.tid, batch_no).await else {
                    return answer(RC_SYSTEM_ERROR);
                };
                match self
                    .batch_differences(&terminal.tid, batch_no, settled.as_ref())
                    .await
                {
                    // Fewer or more records here than the terminal sent (an upload message
                    // lost, or one from another attempt): comparing them would list sales
                    // the terminal has as missing there. Nothing is compared; 79 asks the
                    // terminal to upload again (a record sent again replaces its copy).
                    Some((received, _)) if received != usize::from(declared.count) => {
                        tracing::info!(tid = %terminal.tid, batch_no, received,
                            declared = declared.count, "batch upload incomplete");
                        return answer(RC_RECONCILE_UNBALANCED);
                    }
                    Some((_, rows)) => {
                        tracing::info!(tid = %terminal.tid, batch_no, differences = rows.len(),
                        "batch upload compared");
                        vec![Record::Settlement(SettlementRecord::BatchDifferences {
                            tid: terminal.tid.clone(),
                            batch_no,
                            at_ms: now_ms,
                            rows,
                        })]
                    }
                    None => return answer(RC_SYSTEM_ERROR),
                }
            }
            Wire::BatchUpload(BatchUploadKind::IcBalanced | BatchUploadKind::IcUnbalanced)
                if request.digits(48).is_none() =>
            {
                // An IC transaction's upload: one per message, the card in field 2, the amount
                // in 4 and the original's trace in 11 (its chip data in 55 is not kept).
                let card = crate::financial::card(request).and_then(Result::ok);
                let (Some(pan), Some(amount), Some(stan)) =
                    (card, request.amount(), request.stan())
                else {
                    return answer(RC_FORMAT_ERROR);
                };
                vec![Record::Settlement(SettlementRecord::BatchUpload(
                    BatchUploadRow {
                        tid: terminal.tid.clone(),
                        batch_no,
                        stan,
                        card_org: u8::from(organisation(&self.directory.lookup(&pan)) != DOMESTIC),
                        pan_last4: pan.last4().to_owned(),
                        amount_fen: i64::try_from(amount).unwrap_or(i64::MAX),
                        received_at_ms: now_ms,
                    },
                ))]
            }
            _ => {
                let upload = request.digits(48).and_then(|d| BatchUpload::parse(d).ok());
                let Some(upload) = upload else {
                    return answer(RC_FORMAT_ERROR);
                };
                upload
                    .records()
                    .map(|r| {
                        let pan = r.pan();
                        let last4 = pan.get(pan.len().saturating_sub(4)..).unwrap_or("");
                        Record::Settlement(SettlementRecord::BatchUpload(BatchUploadRow {
                            tid: terminal.tid.clone(),
                            batch_no,
                            stan: r.trace,
                            card_org: u8::from(r.organisation != CardOrganisation::DOMESTIC),
                            pan_last4: last4.to_owned(),
                            amount_fen: i64::try_from(r.amount).unwrap_or(i64::MAX),
                            received_at_ms: now_ms,
                        }))
                    })
                    .collect()
            }
        };
        if !records.is_empty() && self.persist_within(records).await.is_err() {
            return answer(RC_SYSTEM_ERROR);
        }
        answer(RC_APPROVED)
    }

    /// The uploaded records against the batch's counted journal rows, by trace, for the
    /// batch's `settled` row, with how many records this upload holds. After an unbalanced settlement (or none) the terminal uploaded its
    /// whole batch, so a row it did not upload is missing there; otherwise only what it
    /// uploaded is compared.
    async fn batch_differences(
        &self,
        tid: &str,
        batch_no: u32,
        settled: Option<&BatchSettlementRow>,
    ) -> Option<(usize, Vec<BatchDiffRow>)> {
        // After a balanced settlement a terminal uploads its IC transactions only (203, for
        // their chip data): what it did not upload is not missing there.
        let whole = settled.is_none_or(|s| s.result != SettleResult::BALANCED.0);
        let owned = tid.to_owned();
        let mut uploaded = self
            .read_for_request(move |store| store.batch_uploads(&owned, batch_no))
            .await?
            .ok()?;
        let mut rows = self.batch_rows(tid, batch_no).await?;
        // This settlement's: the uploads since it (an earlier batch of the number uploaded
        // before), and the rows before it and after where the batch started.
        if let Some(settled) = settled {
            let at = settled.settled_at_ms;
            uploaded.retain(|u| u.received_at_ms >= at - NODE_CLOCKS_MARGIN_MS);
            rows.retain(|r| r.received_at_ms <= at + NODE_CLOCKS_MARGIN_MS);
            if let Some(after) = settled.opened_after_ms {
                rows.retain(|r| r.received_at_ms > after);
            }
        }
        let ours: HashMap<u32, &TxnRow> = rows
            .iter()
            .filter(|r| counted(r).is_some())
            .map(|r| (r.stan, r))
            .collect();
        let mut diffs = Vec::new();
        let diff =
            |stan, kind, row: Option<&TxnRow>, theirs: Option<&BatchUploadRow>| BatchDiffRow {
                tid: tid.to_owned(),
                batch_no,
                stan,
                kind,
                txn_id: row.map(|r| r.id),
                host_amount_fen: row.map(|r| r.amount_fen),
                terminal_amount_fen: theirs.map(|u| u.amount_fen),
                pan_masked: row
                    .and_then(|r| r.pan.as_ref().map(|p| p.masked.clone()))
                    .or_else(|| theirs.map(|u| format!("******{}", u.pan_last4)))
                    .unwrap_or_default(),
            };
        for u in &uploaded {
            match ours.get(&u.stan) {
                None => diffs.push(diff(u.stan, BatchDiffKind::MissingHere, None, Some(u))),
                Some(r) if r.amount_fen != u.amount_fen => {
                    diffs.push(diff(u.stan, BatchDiffKind::AmountDiffers, Some(r), Some(u)))
                }
                Some(_) => {}
            }
        }
        for (stan, row) in ours.iter().filter(|_| whole) {
            if !uploaded.iter().any(|u| u.stan == *stan) {
                diffs.push(diff(
                    *stan,
                    BatchDiffKind::MissingAtTerminal,
                    Some(row),
                    None,
                ));
            }
        }
        diffs.sort_by_key(|d| d.stan);
        Some((uploaded.len(), diffs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 14:59:59 UTC = 22:59:59 in Beijing.
    const BEFORE_MS: i64 = 1_795_445_999_000;

    #[test]
    fn the_cut_over_moves_the_clearing_date_and_keeps_a_grace_window() {
        let before = ClearingDay::of(BEFORE_MS, 23 * 60);
        assert_eq!((before.date.as_str(), before.in_grace), ("20261123", false));
        let at = ClearingDay::of(BEFORE_MS + 1_000, 23 * 60);
        assert_eq!((at.date.as_str(), at.in_grace), ("20261124", true));
        assert!(at.same_day(before.day_number));
        let later = ClearingDay::of(BEFORE_MS + 1_000 + CUTOVER_GRACE_MS, 23 * 60);
        assert_eq!(later.date, "20261124");
        assert!(!later.same_day(before.day_number));
        // Local midnight is still the same clearing day after a 23:00 cut-over.
        assert_eq!(clearing_date_of(BEFORE_MS + 3_601_000, 23 * 60), "20261124");
        // A midnight cut-over is the calendar.
        assert_eq!(clearing_date_of(BEFORE_MS + 1_000, 0), "20261123");
        assert_eq!(clearing_date_of(BEFORE_MS + 3_601_000, 0), "20261124");
    }

    fn half(debits: u16, debit_fen: u64, credits: u16, credit_fen: u64) -> Totals {
        Totals {
            debit_amount: debit_fen,
            debit_count: debits,
            credit_amount: credit_fen,
            credit_count: credits,
            result: SettleResult::REQUEST,
        }
    }

    #[test]
    fn each_half_of_field_48_is_judged_on_its_own() {
        let ours = SettlementTotals {
            domestic: half(3, 30_000, 1, 5_000),
            foreign: half(1, 800, 0, 0),
        };
        let theirs = SettlementTotals {
            domestic: half(3, 30_000, 1, 5_000),
            foreign: half(0, 0, 0, 0),
        };
        let (answer, all) = settlement_answer(ours, Some(&theirs));
        assert_eq!(all, SettleResult::UNBALANCED);
        assert_eq!(answer.domestic.result, SettleResult::BALANCED);
        assert_eq!(answer.foreign.result, SettleResult::UNBALANCED);
        assert_eq!(
            &totals_digits(&answer)[..31],
            "0000000300000030000000050000011"
        );
        let (answer, all) = settlement_answer(ours, Some(&ours));
        assert_eq!(all, SettleResult::BALANCED);
        assert_eq!(answer.foreign.result, SettleResult::BALANCED);
        let (answer, all) = settlement_answer(ours, None);
        assert_eq!(all, SettleResult::ERROR);
        assert_eq!(answer.domestic.result, SettleResult::ERROR);
    }

    #[test]
    fn a_half_field_48_cannot_hold_is_answered_at_its_most_and_unbalanced() {
        let ours = SettlementTotals {
            domestic: half(1_200, 1_200_000, 0, 0),
            foreign: half(0, 0, 0, 0),
        };
        // The terminal's own count stops at 999 too: even "the same" is not balanced.
        let theirs = SettlementTotals {
            domestic: half(999, 1_200_000, 0, 0),
            foreign: half(0, 0, 0, 0),
        };
        let (answer, all) = settlement_answer(ours, Some(&theirs));
        assert_eq!(all, SettleResult::UNBALANCED);
        assert_eq!(answer.domestic.debit_count, 999);
        assert_eq!(answer.domestic.result, SettleResult::UNBALANCED);
        assert_eq!(answer.foreign.result, SettleResult::BALANCED);
        let digits = totals_digits(&answer);
        assert_eq!(digits.len(), SettlementTotals::DIGITS);
        let mut out = iso8583::MessageBuilder::new(iso8583::Mti::SETTLEMENT_RESPONSE);
        assert!(out.set_composed(&answer).is_ok());
    }
}
