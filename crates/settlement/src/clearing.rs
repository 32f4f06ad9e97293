//! Clearing: what each journalled transaction of a clearing date is worth to its merchant
//! (captures − voids − refunds) and the fee on it, as immutable clearing lines, and the ledger
//! postings that move it from the issuers' receivables to the merchants' payables.
//!
//! A run clears what is not cleared yet: a transaction already cleared at the right amount adds
//! nothing, one that changed since (a late reversal) adds a line with the difference. So a second
//! run over the same day changes nothing, and says so.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use domain::{CardNetwork, CardType, IssuerDirectory};
use serde::Serialize;
use store::settlement::{ClearingLineRow, ClearingTotalRow, SettleRunRow, SettlementRecord};
use store::{Record, Store, StoreError, TxnKind, TxnRow, TxnState};

use crate::fees::{CardClass, FeePlan};
use crate::ledger::{LedgerError, Posting, accounts, posting_record};

/// The card length taken when a row's masked number does not give one.
const PAN_LEN_USUAL: usize = 16;
/// Issuer name used when a row has none (never sent anywhere: an empty receivable would hide it).
const ISSUER_UNKNOWN: &str = "UNKNOWN";

/// Card class from the stored BIN and the card's length, through the issuer directory, cached
/// per both.
pub struct CardClassifier<'a> {
    directory: &'a IssuerDirectory,
    cache: HashMap<(String, usize), CardClass>,
}

impl<'a> CardClassifier<'a> {
    pub fn new(directory: &'a IssuerDirectory) -> Self {
        CardClassifier {
            directory,
            cache: HashMap::new(),
        }
    }

    /// Debit and prepaid cards are charged as debit, credit and semi-credit as credit; a card
    /// outside the CUP table is foreign unless its prefix is UnionPay's (a domestic bank our
    /// table lacks: charged as debit, the merchant's cheaper assumption).
    ///
    /// The journal keeps a card's first six digits and its length (the masked number's), and
    /// the table has longer BINs and BINs issued at two lengths by two banks (622303: a credit
    /// card at 16 digits, a debit card at 18): the class is the one every row the six digits
    /// may be under, at the card's length, agrees on. Where they disagree, the card is charged
    /// as debit, the merchant's cheaper assumption again.
    pub fn classify(&mut self, bin: &str, pan_len: usize) -> CardClass {
        let key = (bin.to_owned(), pan_len);
        if let Some(class) = self.cache.get(&key) {
            return *class;
        }
        let of = |t: CardType| match t {
            CardType::Debit | CardType::Prepaid => CardClass::DomesticDebit,
            CardType::Credit | CardType::SemiCredit => CardClass::DomesticCredit,
        };
        let types = self.directory.card_types_under(bin, pan_len);
        let class = match types.split_first() {
            Some((first, rest)) if rest.iter().all(|t| of(*t) == of(*first)) => of(*first),
            Some(_) => CardClass::DomesticDebit,
            None => {
                let mut digits = bin.to_owned();
                while digits.len() < pan_len {
                    digits.push('0');
                }
                let lookup = self.directory.lookup_digits(&digits);
                match lookup.issuer {
                    Some(found) => of(found.card_type),
                    None if lookup.network == CardNetwork::DomesticCup => CardClass::DomesticDebit,
                    None => CardClass::Foreign,
                }
            }
        };
        self.cache.insert(key, class);
        class
    }
}

/// A journal row's card length: its masked number's (digits and stars), else the usual 16.
fn pan_len(row: &TxnRow) -> usize {
    row.pan
        .as_ref()
        .map(|p| p.masked.chars().count())
        .filter(|n| (13..=19).contains(n))
        .unwrap_or(PAN_LEN_USUAL)
}

/// What a transaction should have cleared: (signed amount, signed fee), or `None` if it moves
/// no money. States as in the terminal totals: approved and later voided/completed count,
/// declined, failed, timed-out, in-doubt and reversed ones do not.
pub fn cleared_value(row: &TxnRow, class: CardClass, plan: &FeePlan) -> Option<(i64, i64)> {
    let counted = !matches!(
        row.state,
        TxnState::InFlight
            | TxnState::Declined
            | TxnState::TimedOut
            | TxnState::Failed
            | TxnState::Reversed
    );
    let amount = row.amount_fen.max(0);
    let value = match row.kind {
        TxnKind::Purchase | TxnKind::Completion => (amount, plan.fee(class, amount)),
        TxnKind::PurchaseVoid | TxnKind::CompletionVoid => (-amount, -plan.fee(class, amount)),
        TxnKind::Refund => (-amount, 0),
        TxnKind::BalanceInquiry | TxnKind::PreAuth | TxnKind::PreAuthVoid | TxnKind::Reversal => {
            return None;
        }
    };
    Some(if counted { value } else { (0, 0) })
}

/// The outcome of clearing a set of rows against what was cleared before.
#[derive(Debug, Default)]
pub struct Clearing {
    pub lines: Vec<ClearingLineRow>,
    pub postings: Vec<Posting>,
}

/// Clears `rows` of `clearing_date`: new lines for what changed against `existing` lines, and
/// one posting per merchant (receivable per issuer ← payable gross; payable → fee income).
/// `charged_elsewhere`: the fee each capture cleared on another date was charged, by id, for a
/// void of it on this date (one in the cut-over's grace) to give back.
pub fn clear(
    rows: &[TxnRow],
    existing: &[ClearingLineRow],
    charged_elsewhere: &HashMap<i64, i64>,
    plans: &HashMap<String, FeePlan>,
    classifier: &mut CardClassifier<'_>,
    clearing_date: &str,
    run_at_ms: i64,
) -> Result<Clearing, LedgerError> {
    // txn id -> (amount, fee, last seq) already cleared.
    let mut before: HashMap<i64, (i64, i64, u32)> = HashMap::with_capacity(existing.len());
    for l in existing {
        let e = before.entry(l.txn_id).or_insert((0, 0, 0));
        e.0 += l.amount_fen;
        e.1 += l.fee_fen;
        e.2 = e.2.max(l.seq);
    }
    let default_plan = FeePlan::default();
    let mut lines = Vec::new();
    // mid -> (issuer -> gross, fee)
    let mut per_merchant: BTreeMap<&str, (BTreeMap<&str, i64>, i64)> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.clearing_date == clearing_date) {
        let bin = row.pan.as_ref().map_or("", |p| p.bin.as_str());
        let class = classifier.classify(bin, pan_len(row));
        let plan = plans.get(&row.mid).unwrap_or(&default_plan);
        let Some((amount, mut fee)) = cleared_value(row, class, plan) else {
            continue;
        };
        let cleared = before.get(&row.id).copied();
        let (done_amount, done_fee, seq) = cleared.unwrap_or((0, 0, 0));
        // A fee is fixed when its transaction is first cleared: a later run (a late reversal
        // elsewhere in the day) under a changed plan does not re-price it, and a void gives
        // back what its capture was charged, when that capture is among this date's lines.
        if cleared.is_some() && amount == done_amount {
            fee = done_fee;
        } else if cleared.is_none() && amount != 0 {
            let charged = row.original_id.and_then(|id| {
                before
                    .get(&id)
                    .map(|o| o.1)
                    .or_else(|| charged_elsewhere.get(&id).copied())
            });
            if let (TxnKind::PurchaseVoid | TxnKind::CompletionVoid, Some(charged)) =
                (row.kind, charged)
            {
                fee = -charged;
            }
        }
        let (amount, fee) = (amount - done_amount, fee - done_fee);
        if amount == 0 && fee == 0 {
            continue;
        }
        let issuer = row.issuer.as_deref().unwrap_or(ISSUER_UNKNOWN);
        let slot = per_merchant.entry(row.mid.as_str()).or_default();
        *slot.0.entry(issuer).or_insert(0) += amount;
        slot.1 += fee;
        lines.push(ClearingLineRow {
            txn_id: row.id,
            seq: seq + 1,
            mid: row.mid.clone(),
            clearing_date: clearing_date.to_owned(),
            kind: row.kind,
            card_class: class.as_str().to_owned(),
            issuer: issuer.to_owned(),
            amount_fen: amount,
            fee_fen: fee,
            run_at_ms,
        });
    }
    let mut postings = Vec::with_capacity(per_merchant.len());
    for (mid, (issuers, fee)) in per_merchant {
        let payable = accounts::merchant_payable(mid);
        let issuers: Vec<(&str, i64)> = issuers.into_iter().collect();
        // One posting per merchant, or several under one reference when its day touched more
        // issuers than a posting has legs for: the first also carries the fee.
        let chunks = issuers.chunks(ISSUER_LEGS_PER_POSTING).enumerate();
        for (n, chunk) in chunks {
            let gross: i64 = chunk.iter().map(|(_, amount)| amount).sum();
            let mut legs: Vec<(String, i64)> = chunk
                .iter()
                .map(|(issuer, amount)| (accounts::issuer_receivable(issuer), *amount))
                .collect();
            legs.push((payable.clone(), -gross));
            if n == 0 {
                legs.push((payable.clone(), fee));
                legs.push((accounts::FEE_INCOME.to_owned(), -fee));
            }
            let reference = format!("clear:{clearing_date}:{mid}");
            match Posting::new("clearing", reference, clearing_date, legs) {
                Ok(p) => postings.push(p),
                // Everything netted to zero (e.g. a purchase and its void): nothing to post.
                Err(LedgerError::Legs { legs: 0, .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Clearing { lines, postings })
}

/// Why a settle run failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("not a date: {0} (YYYYMMDD or YYYY-MM-DD)")]
    BadDate(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One merchant's clearing for a date (every run so far together).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MerchantClearing {
    pub mid: String,
    pub captures_fen: i64,
    pub voids_fen: i64,
    pub refunds_fen: i64,
    pub fees_fen: i64,
    /// captures − voids − refunds − fees: what the merchant is owed for the day.
    pub net_fen: i64,
    pub transactions: u64,
}

/// What `settle_date` did.
#[derive(Clone, Debug, Serialize)]
pub struct SettleReport {
    pub clearing_date: String,
    /// False when everything was already cleared: no new line, no posting.
    pub changed: bool,
    /// The run recorded: always for the date a settle run was asked for, otherwise only when
    /// it cleared something.
    pub run_no: Option<u32>,
    pub new_lines: u64,
    pub new_postings: u64,
    pub merchants: Vec<MerchantClearing>,
    /// Cleared late: no run had cleared this date (its settle run was missed), and a run of a
    /// later date did, as one of the [`REVISIT_DAYS`] before it.
    pub missed: bool,
}

/// Sums clearing lines per merchant.
pub fn merchant_totals(lines: &[ClearingLineRow]) -> Vec<MerchantClearing> {
    let mut by_mid: BTreeMap<&str, MerchantClearing> = BTreeMap::new();
    let mut counted: HashMap<i64, ()> = HashMap::new();
    for l in lines {
        let m = by_mid
            .entry(l.mid.as_str())
            .or_insert_with(|| MerchantClearing {
                mid: l.mid.clone(),
                ..MerchantClearing::default()
            });
        match l.kind {
            TxnKind::Purchase | TxnKind::Completion => m.captures_fen += l.amount_fen,
            TxnKind::PurchaseVoid | TxnKind::CompletionVoid => m.voids_fen -= l.amount_fen,
            TxnKind::Refund => m.refunds_fen -= l.amount_fen,
            TxnKind::BalanceInquiry
            | TxnKind::PreAuth
            | TxnKind::PreAuthVoid
            | TxnKind::Reversal => {}
        }
        m.fees_fen += l.fee_fen;
        m.net_fen += l.amount_fen - l.fee_fen;
        if counted.insert(l.txn_id, ()).is_none() {
            m.transactions += 1;
        }
    }
    by_mid.into_values().collect()
}

/// Each merchant's lines of `clearing_date` (all of them, earlier runs' too), counted and summed.
fn line_totals(clearing_date: &str, lines: &[ClearingLineRow]) -> Vec<ClearingTotalRow> {
    let mut by_mid: BTreeMap<&str, ClearingTotalRow> = BTreeMap::new();
    for l in lines {
        let t = by_mid
            .entry(l.mid.as_str())
            .or_insert_with(|| ClearingTotalRow {
                clearing_date: clearing_date.to_owned(),
                mid: l.mid.clone(),
                lines: 0,
                gross_fen: 0,
                fee_fen: 0,
            });
        t.lines += 1;
        t.gross_fen += l.amount_fen;
        t.fee_fen += l.fee_fen;
    }
    by_mid.into_values().collect()
}

/// Issuer legs in one clearing posting: the posting's most, less the payable's and the fee's.
const ISSUER_LEGS_PER_POSTING: usize = crate::ledger::POSTING_LEGS_MAX - 3;

/// Clearing dates before the one being cleared that a run clears again.
pub const REVISIT_DAYS: i64 = 3;
/// How far before the previous settle run events are read for dates to clear again (the
/// nodes' clocks may differ from the one running the settlement).
const EVENT_CLOCK_MARGIN_MS: i64 = 3_600_000;

/// Clears `clearing_date`, then clears again each of the [`REVISIT_DAYS`] dates before it (one
/// no run has cleared too: its own run was missed, and its report says so), and any other
/// cleared date whose transactions have had an event since the previous settle run (a
/// reversal acknowledged days later, say), returning the reports of those that changed. A day changes after its run: a reversal inside the cut-over's
/// grace, an issuer's late answer to a request in flight at the run, a host reversal of an
/// approval whose outcome was written late. Each re-run posts only the difference (a reversed
/// sale's correction line), which the next payout nets.
pub fn settle_date_and_recent(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
) -> Result<(SettleReport, Vec<SettleReport>), SettleError> {
    let date = crate::dates::normalise(clearing_date)
        .ok_or_else(|| SettleError::BadDate(clearing_date.to_owned()))?;
    // The runs so far: which dates were cleared, and how far the last finished run read
    // which dates had changed. What changed since is read, from an hour earlier for the clocks
    // of the nodes that wrote the events (a date read again that has not changed costs a read
    // and writes nothing). Runs from before that mark was kept count by their time.
    let runs = store.settle_runs(None)?;
    let cleared: HashSet<&str> = runs.iter().map(|r| r.clearing_date.as_str()).collect();
    let previous_mark = runs
        .iter()
        .filter_map(|r| r.events_through_ms)
        .max()
        .or_else(|| runs.iter().map(|r| r.at_ms).max());
    let previous_run_ms = previous_mark.map(|at| at.saturating_sub(EVENT_CLOCK_MARGIN_MS));
    let lookback: Vec<String> = (1..=REVISIT_DAYS)
        .filter_map(|back| crate::dates::add_days(&date, -back))
        .collect();
    let mut dates = lookback.clone();
    // Every cleared date touched since, older or newer than this one: this run becomes the
    // last one the next reads from, so what it leaves is never looked at again (a missed day
    // settled by hand would otherwise hide a reversal of a later day from every later run).
    if let Some(since) = previous_run_ms {
        for touched in store.clearing_dates_touched_since(since)? {
            if touched != date && !dates.contains(&touched) {
                dates.push(touched);
            }
        }
    }
    let mut revisited = Vec::new();
    // The dates just before this one that no run has cleared are cleared too: closed before
    // it, their run was missed, and nothing else would clear them unless someone noticed.
    for earlier in &dates {
        let missed = !cleared.contains(earlier.as_str());
        if missed && !lookback.contains(earlier) {
            continue;
        }
        let mut again = clear_date(store, directory, earlier, now_ms, None)?;
        if again.changed {
            again.missed = missed;
            revisited.push(again);
        }
    }
    // Last, and recorded even when it clears nothing: its run carries the mark the next run
    // reads from, so a run that stopped before here (an error, a crash) moved no mark and
    // the next one clears those dates again. A date with no line yet is then a cleared date
    // too, cleared again like the others when it changes (a request in flight at the run
    // approved later).
    let report = clear_date(store, directory, &date, now_ms, Some(now_ms))?;
    Ok((report, revisited))
}

/// For each void on `date` whose capture was cleared on another date (a void in the cut-over's
/// grace), the fee that capture was charged: what the void gives back, whatever the plan says
/// now. Read only for such voids (rare), each other date's lines once.
fn fees_charged_elsewhere(
    store: &dyn Store,
    rows: &[TxnRow],
    existing: &[ClearingLineRow],
    date: &str,
) -> Result<HashMap<i64, i64>, StoreError> {
    let mut charged = HashMap::new();
    let voided: Vec<i64> = rows
        .iter()
        .filter(|r| matches!(r.kind, TxnKind::PurchaseVoid | TxnKind::CompletionVoid))
        .filter(|r| r.clearing_date == date)
        .filter_map(|r| r.original_id)
        .collect();
    if voided.is_empty() {
        return Ok(charged);
    }
    // Captures of this date (cleared already or not) need no other date's lines.
    let here: HashSet<i64> = existing
        .iter()
        .map(|l| l.txn_id)
        .chain(
            rows.iter()
                .filter(|r| r.clearing_date == date)
                .map(|r| r.id),
        )
        .collect();
    let mut lines_of: HashMap<String, Vec<ClearingLineRow>> = HashMap::new();
    for original in voided {
        if charged.contains_key(&original) || here.contains(&original) {
            continue;
        }
        let Some(capture) = store.txn(original)? else {
            continue;
        };
        if capture.clearing_date == date {
            continue;
        }
        let lines = match lines_of.entry(capture.clearing_date) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(date) => {
                let lines = store.clearing_lines(date.key())?;
                date.insert(lines)
            }
        };
        let mut of_capture = lines.iter().filter(|l| l.txn_id == original).peekable();
        if of_capture.peek().is_some() {
            charged.insert(original, of_capture.map(|l| l.fee_fen).sum());
        }
    }
    Ok(charged)
}

/// Clears one clearing date from the journal and posts it, idempotently.
pub fn settle_date(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
) -> Result<SettleReport, SettleError> {
    clear_date(store, directory, clearing_date, now_ms, None)
}

/// Clears one date; with `events_through_ms`, its run is recorded (with that mark) even when
/// nothing new is cleared.
fn clear_date(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
    events_through_ms: Option<i64>,
) -> Result<SettleReport, SettleError> {
    let date = crate::dates::normalise(clearing_date)
        .ok_or_else(|| SettleError::BadDate(clearing_date.to_owned()))?;
    let rows: Vec<TxnRow> = store.txns_on(&date)?;
    let existing = store.clearing_lines(&date)?;
    let mut plans = HashMap::new();
    for row in &rows {
        if !plans.contains_key(&row.mid)
            && let Some(terms) = store.settlement_terms(&row.mid)?
        {
            plans.insert(row.mid.clone(), FeePlan::from_row(&terms));
        }
    }
    let charged_elsewhere = fees_charged_elsewhere(store, &rows, &existing, &date)?;
    let mut classifier = CardClassifier::new(directory);
    let cleared = clear(
        &rows,
        &existing,
        &charged_elsewhere,
        &plans,
        &mut classifier,
        &date,
        now_ms,
    )?;
    if cleared.lines.is_empty() && events_through_ms.is_none() {
        return Ok(SettleReport {
            clearing_date: date,
            changed: false,
            run_no: None,
            new_lines: 0,
            new_postings: 0,
            merchants: merchant_totals(&existing),
            missed: false,
        });
    }
    let run_no = u32::try_from(store.settle_runs(Some(&date))?.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let new_lines = u64::try_from(cleared.lines.len()).unwrap_or(u64::MAX);
    let new_postings = u64::try_from(cleared.postings.len()).unwrap_or(u64::MAX);
    let run = SettleRunRow {
        clearing_date: date.clone(),
        run_no,
        at_ms: now_ms,
        lines: new_lines,
        gross_fen: cleared.lines.iter().map(|l| l.amount_fen).sum(),
        fee_fen: cleared.lines.iter().map(|l| l.fee_fen).sum(),
        postings: new_postings,
        events_through_ms,
    };
    let changed = !cleared.lines.is_empty();
    let mut all = existing;
    all.extend(cleared.lines.iter().cloned());
    let mut records = Vec::new();
    if changed {
        records.push(Record::Settlement(SettlementRecord::ClearingLines(
            cleared.lines,
        )));
        records.push(Record::Settlement(SettlementRecord::ClearingTotals(
            line_totals(&date, &all),
        )));
    }
    records.push(Record::Settlement(SettlementRecord::SettleRun(run)));
    if let Some(postings) = posting_record(store, cleared.postings, now_ms)? {
        records.push(postings);
    }
    store.submit(records)?.wait()?;
    Ok(SettleReport {
        clearing_date: date,
        changed,
        run_no: Some(run_no),
        new_lines,
        new_postings,
        merchants: merchant_totals(&all),
        missed: false,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The class of a card of `len` digits whose journal row keeps `bin`.
    fn class(bin: &str, len: usize) -> CardClass {
        let directory = IssuerDirectory::embedded().unwrap();
        CardClassifier::new(&directory).classify(bin, len)
    }

    #[test]
    fn a_bin_issued_at_two_lengths_is_classed_by_the_cards_length() {
        // 622303: Nanjing Bank's credit cards at 16 digits, ICBC's debit cards at 18.
        assert_eq!(class("622303", 18), CardClass::DomesticDebit);
        assert_eq!(class("622303", 16), CardClass::DomesticCredit);
        // 621260: a credit card at 16; at 19 the debit cards of several rural banks, under
        // longer BINs too.
        assert_eq!(class("621260", 19), CardClass::DomesticDebit);
        assert_eq!(class("621260", 16), CardClass::DomesticCredit);
    }

    #[test]
    fn six_digits_of_a_longer_bin_find_the_rows_under_them() {
        // 6886592 (Xiamen's debit cards, 18 digits): six digits and zeros match nothing.
        assert_eq!(class("688659", 18), CardClass::DomesticDebit);
        // 625193xx: credit cards of four banks, 8-digit BINs only.
        assert_eq!(class("625193", 16), CardClass::DomesticCredit);
        assert_eq!(class("622202", 19), CardClass::DomesticDebit);
        assert_eq!(class("411111", 16), CardClass::Foreign);
    }
}
