//! Clearing: what each journalled transaction of a clearing date is worth to its merchant
//! (captures − voids − refunds) and the fee on it, as immutable clearing lines, and the ledger
//! postings that move it from the issuers' receivables to the merchants' payables.
//!
//! A run clears what is not cleared yet: a transaction already cleared at the right amount adds
//! nothing, one that changed since (a late reversal) adds a line with the difference. So a second
//! run over the same day changes nothing, and says so.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use domain::{CardNetwork, CardType, IssuerDirectory};
use serde::Serialize;
use store::settlement::{
    ClearingLineRow, ClearingTotalRow, PostingRow, SettleRunRow, SettlementRecord,
};
use store::{Record, Store, StoreError, TxnKind, TxnRow, TxnState};

use crate::fees::{CardClass, FeePlan};
use crate::ledger::{LedgerError, Posting, accounts, reserve_posting_ids};

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
    /// as debit, the merchant's cheaper assumption again. So is a row whose card number the
    /// journal does not hold (no BIN to go by: the sealing failed when it was taken).
    pub fn classify(&mut self, bin: &str, pan_len: usize) -> CardClass {
        if bin.is_empty() {
            return CardClass::DomesticDebit;
        }
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
    let lines = clear_lines(
        rows,
        existing,
        charged_elsewhere,
        plans,
        classifier,
        clearing_date,
        run_at_ms,
    );
    let postings = clearing_postings(&lines, clearing_date)?;
    Ok(Clearing { lines, postings })
}

/// The lines of [`clear`]: for each transaction of `clearing_date`, what it is worth now less
/// what `existing` lines cleared of it, in the order of `rows`.
fn clear_lines(
    rows: &[TxnRow],
    existing: &[ClearingLineRow],
    charged_elsewhere: &HashMap<i64, i64>,
    plans: &HashMap<String, FeePlan>,
    classifier: &mut CardClassifier<'_>,
    clearing_date: &str,
    run_at_ms: i64,
) -> Vec<ClearingLineRow> {
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
    lines
}

/// The reference of a merchant's clearing postings of a date.
fn clearing_reference(clearing_date: &str, mid: &str) -> String {
    format!("clear:{clearing_date}:{mid}")
}

/// What a merchant's clearing postings of a date move: gross per issuer, and the fee.
type MerchantSums = BTreeMap<String, (BTreeMap<String, i64>, i64)>;

/// Adds `lines` to `sums`, per merchant.
fn add_lines(sums: &mut MerchantSums, lines: &[ClearingLineRow]) {
    for l in lines {
        let slot = sums.entry(l.mid.clone()).or_default();
        *slot.0.entry(l.issuer.clone()).or_insert(0) += l.amount_fen;
        slot.1 += l.fee_fen;
    }
}

/// The postings that move what `lines` of `clearing_date` say: one per merchant (receivable
/// per issuer ← payable gross; payable → fee income).
pub fn clearing_postings(
    lines: &[ClearingLineRow],
    clearing_date: &str,
) -> Result<Vec<Posting>, LedgerError> {
    let mut sums = MerchantSums::new();
    add_lines(&mut sums, lines);
    postings_of(sums, clearing_date)
}

fn postings_of(sums: MerchantSums, clearing_date: &str) -> Result<Vec<Posting>, LedgerError> {
    let mut postings = Vec::with_capacity(sums.len());
    for (mid, (issuers, fee)) in sums {
        let payable = accounts::merchant_payable(&mid);
        let issuers: Vec<(String, i64)> = issuers.into_iter().collect();
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
            let reference = clearing_reference(clearing_date, &mid);
            match Posting::new("clearing", reference, clearing_date, legs) {
                Ok(p) => postings.push(p),
                // Everything netted to zero (e.g. a purchase and its void): nothing to post.
                Err(LedgerError::Legs { legs: 0, .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(postings)
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
    /// later date did, as one of the [`REVISIT_DAYS`] before it, or one of the
    /// [`MISSED_DAYS_MAX`] before it that has transactions.
    pub missed: bool,
    /// Lines an earlier run of the date wrote before it stopped part-way, which no run had
    /// posted or recorded: this run posted them with its own (in `new_postings`) and counts
    /// them in `new_lines` as if it had written them, so the runs' records add up to the
    /// date's lines.
    pub resumed_lines: u64,
}

/// Sums clearing lines per merchant: a slice of them, or lines in more than one place (those
/// stored and those a run is about to write) without copying them together.
pub fn merchant_totals<'a>(
    lines: impl IntoIterator<Item = &'a ClearingLineRow>,
) -> Vec<MerchantClearing> {
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
fn line_totals<'a>(
    clearing_date: &str,
    lines: impl IntoIterator<Item = &'a ClearingLineRow>,
) -> Vec<ClearingTotalRow> {
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

/// How far back a run looks for dates with transactions that no run has cleared (their runs
/// missed: the job down over a holiday): a month, the refund window's length and a day.
pub const MISSED_DAYS_MAX: i64 = 31;

/// Clearing lines a settle run writes per store submission. A submission is one write
/// transaction, and SQLite has one writer at a time: a busy day (a million lines) written whole
/// held the journal's write lock for a second or more (seconds on a loaded machine) while a
/// live node's switch waited for it, past its journal wait (terminals answered 96) and its busy
/// timeout (its commits failing). This many lines commit in about 20 ms (docs/performance.md).
pub const LINES_PER_COMMIT: usize = 10_000;

/// How long a settle run leaves the journal to other writers between two parts of lines (a
/// day of one part, every small one, does not wait at all). A writer SQLite keeps waiting
/// polls for the lock, less often the longer it has waited (1 to 20 ms apart in its first
/// 50 ms, then 25 ms apart until about 130 ms, then 50 and 100): with parts written back to
/// back, the lock taken again within microseconds, a waiting switch seldom found it free and
/// waited through many parts (1.2 s measured, as long as the whole day written at once). A
/// pause as long as its polls are apart lets it in when the part it arrived during (about
/// 20 ms) ends. Costs a quarter of a second per 100,000 lines.
pub const PAUSE_BETWEEN_PARTS: Duration = Duration::from_millis(25);

/// How a settle run writes what it cleared.
#[derive(Clone, Debug)]
pub struct ClearingConfig {
    /// Clearing lines per store submission ([`LINES_PER_COMMIT`]; 0 is taken as 1). Tests make
    /// it small to see a day written in parts.
    pub lines_per_commit: usize,
    /// The pause between two parts ([`PAUSE_BETWEEN_PARTS`]).
    pub pause_between_parts: Duration,
}

impl Default for ClearingConfig {
    fn default() -> Self {
        ClearingConfig {
            lines_per_commit: LINES_PER_COMMIT,
            pause_between_parts: PAUSE_BETWEEN_PARTS,
        }
    }
}

/// How far before the previous settle run events are read for dates to clear again (the
/// nodes' clocks may differ from the one running the settlement).
const EVENT_CLOCK_MARGIN_MS: i64 = 3_600_000;

/// Clears `clearing_date`, then clears again each of the [`REVISIT_DAYS`] dates before it (one
/// no run has cleared too: its own run was missed, and its report says so), each date with
/// transactions among the [`MISSED_DAYS_MAX`] before it that no run has cleared, and any other
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
    settle_date_and_recent_with(
        store,
        directory,
        clearing_date,
        now_ms,
        &ClearingConfig::default(),
    )
}

/// [`settle_date_and_recent`], writing as `config` says.
pub fn settle_date_and_recent_with(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
    config: &ClearingConfig,
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
    // Further back, within a month: dates with transactions that no run has cleared (a job
    // down for a week); a date with none is no missed run (before the first sale, say) and is
    // left alone rather than recorded. They are cleared after this date's own run, so one that
    // cannot be cleared (a posting that cannot be built) fails the command without keeping
    // every later day's run, and so every payout, behind it for a month.
    let mut far_missed = Vec::new();
    for back in (REVISIT_DAYS + 1)..=MISSED_DAYS_MAX {
        if let Some(earlier) = crate::dates::add_days(&date, -back)
            && !cleared.contains(earlier.as_str())
            && !store.txns_on(&earlier)?.is_empty()
        {
            far_missed.push(earlier);
        }
    }
    let mut revisited = Vec::new();
    // The dates before this one that no run has cleared are cleared too: closed before it,
    // their run was missed (or stopped part-way), and nothing else would clear them unless
    // someone noticed. (A date touched since the last run that no run has cleared and that
    // is not before this one may not have closed: left to its own run.)
    for earlier in &dates {
        let missed = !cleared.contains(earlier.as_str());
        if missed && !lookback.contains(earlier) {
            continue;
        }
        let mut again = clear_date(store, directory, earlier, now_ms, None, config)?;
        if again.changed {
            again.missed = missed;
            revisited.push(again);
        }
    }
    // After the dates cleared again (only the dates missed further back follow it), and
    // recorded even when it clears nothing: its run carries the mark the next run
    // reads from, so a run that stopped before here (an error, a crash) moved no mark and
    // the next one clears those dates again. A date with no line yet is then a cleared date
    // too, cleared again like the others when it changes (a request in flight at the run
    // approved later).
    let report = clear_date(store, directory, &date, now_ms, Some(now_ms), config)?;
    for earlier in &far_missed {
        let mut again = clear_date(store, directory, earlier, now_ms, None, config)?;
        if again.changed {
            again.missed = true;
            revisited.push(again);
        }
    }
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
    settle_date_with(
        store,
        directory,
        clearing_date,
        now_ms,
        &ClearingConfig::default(),
    )
}

/// [`settle_date`], writing as `config` says.
pub fn settle_date_with(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
    config: &ClearingConfig,
) -> Result<SettleReport, SettleError> {
    clear_date(store, directory, clearing_date, now_ms, None, config)
}

/// The lines of a date that no recorded run counts: those a run that stopped part-way wrote.
/// Every finished run records the lines it wrote (their count and sums), so they are the
/// date's lines beyond what its runs' records add up to.
#[derive(Default)]
struct Unrecorded {
    lines: u64,
    gross_fen: i64,
    fee_fen: i64,
}

fn unrecorded(existing: &[ClearingLineRow], runs: &[SettleRunRow]) -> Unrecorded {
    let stored = u64::try_from(existing.len()).unwrap_or(u64::MAX);
    let recorded: u64 = runs.iter().map(|r| r.lines).fold(0, u64::saturating_add);
    let lines = stored.saturating_sub(recorded);
    if lines == 0 {
        return Unrecorded::default();
    }
    let sum = |of: fn(&ClearingLineRow) -> i64, run: fn(&SettleRunRow) -> i64| {
        let stored = existing.iter().map(of).fold(0i64, i64::saturating_add);
        let recorded = runs.iter().map(run).fold(0i64, i64::saturating_add);
        stored.saturating_sub(recorded)
    };
    Unrecorded {
        lines,
        gross_fen: sum(|l| l.amount_fen, |r| r.gross_fen),
        fee_fen: sum(|l| l.fee_fen, |r| r.fee_fen),
    }
}

/// What the ledger lacks of the date's stored lines, per merchant: the lines' gross per issuer
/// and fee less what the postings under the merchant's clearing reference moved. Read after a
/// run that stopped part-way, whose lines went in without their postings; every other line was
/// posted with its run's record.
fn unposted(
    store: &dyn Store,
    date: &str,
    existing: &[ClearingLineRow],
) -> Result<MerchantSums, StoreError> {
    let mut sums = MerchantSums::new();
    add_lines(&mut sums, existing);
    for (mid, (issuers, fee)) in &mut sums {
        for posting in store.postings_by_reference(&clearing_reference(date, mid))? {
            for leg in posting.legs {
                if let Some(issuer) = leg.account.strip_prefix(accounts::ISSUER_RECEIVABLE) {
                    *issuers.entry(issuer.to_owned()).or_insert(0) -= leg.amount_fen;
                } else if leg.account == accounts::FEE_INCOME {
                    *fee += leg.amount_fen;
                }
            }
        }
    }
    Ok(sums)
}

/// Clears one date; with `events_through_ms`, its run is recorded (with that mark) even when
/// nothing new is cleared.
///
/// The new lines are written in parts of `config.lines_per_commit`, one submission each, and
/// then, in a last submission of its own, the run's postings, the date's totals and the run's
/// record: no write holds the journal long (a whole day's postings are one per merchant). A
/// run that stops part-way (an error, a full disk, a crash) leaves whole parts of lines, and
/// neither their money in the ledger nor a record: the date is not cleared as far as every
/// later run is concerned, and a payout pays none of what the run cleared. The next run of
/// the date carries on: it writes lines only for what the stored lines do not cover yet, so
/// the parts already written are not written again, posts what the ledger lacks of the stored
/// lines with its own, and counts those lines in its record.
fn clear_date(
    store: &dyn Store,
    directory: &IssuerDirectory,
    clearing_date: &str,
    now_ms: i64,
    events_through_ms: Option<i64>,
    config: &ClearingConfig,
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
    let lines = clear_lines(
        &rows,
        &existing,
        &charged_elsewhere,
        &plans,
        &mut classifier,
        &date,
        now_ms,
    );
    drop(rows);
    let runs = store.settle_runs(Some(&date))?;
    let resumed = unrecorded(&existing, &runs);
    // A date with nothing to clear again is left as it is; its first run is recorded all
    // the same, empty, so that a payout by that cutoff knows the date was cleared.
    if lines.is_empty() && resumed.lines == 0 && events_through_ms.is_none() && !runs.is_empty() {
        return Ok(SettleReport {
            clearing_date: date,
            changed: false,
            run_no: None,
            new_lines: 0,
            new_postings: 0,
            merchants: merchant_totals(&existing),
            missed: false,
            resumed_lines: 0,
        });
    }
    // The postings are built, and their ids reserved, before anything is written: a posting
    // that cannot be built fails the run with nothing written.
    let mut sums = if resumed.lines > 0 {
        unposted(store, &date, &existing)?
    } else {
        MerchantSums::new()
    };
    add_lines(&mut sums, &lines);
    let postings = postings_of(sums, &date)?;
    let postings = if postings.is_empty() {
        None
    } else {
        let first = reserve_posting_ids(store, postings.len())?;
        let rows: Vec<PostingRow> = postings
            .into_iter()
            .zip(first..)
            .map(|(p, id)| p.into_row(id, now_ms))
            .collect();
        Some(rows)
    };
    let changed = !lines.is_empty() || resumed.lines > 0;
    let totals = line_totals(&date, existing.iter().chain(&lines));
    let merchants = merchant_totals(existing.iter().chain(&lines));
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let new_lines = count(lines.len()).saturating_add(resumed.lines);
    let new_postings = count(postings.as_ref().map_or(0, Vec::len));
    let gross_fen = lines
        .iter()
        .map(|l| l.amount_fen)
        .fold(resumed.gross_fen, i64::saturating_add);
    let fee_fen = lines
        .iter()
        .map(|l| l.fee_fen)
        .fold(resumed.fee_fen, i64::saturating_add);
    drop(existing);
    let per_commit = config.lines_per_commit.max(1);
    let mut lines = lines.into_iter().peekable();
    while lines.peek().is_some() {
        let part: Vec<ClearingLineRow> = lines.by_ref().take(per_commit).collect();
        store
            .submit(vec![Record::Settlement(SettlementRecord::ClearingLines(
                part,
            ))])?
            .wait()?;
        if lines.peek().is_some() && !config.pause_between_parts.is_zero() {
            std::thread::sleep(config.pause_between_parts);
        }
    }
    // Last: the money, the totals the pages read, and the record that says the date was
    // cleared, together.
    let run_no = u32::try_from(runs.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let run = SettleRunRow {
        clearing_date: date.clone(),
        run_no,
        at_ms: now_ms,
        lines: new_lines,
        gross_fen,
        fee_fen,
        postings: new_postings,
        events_through_ms,
    };
    let mut records = Vec::new();
    if changed {
        records.push(Record::Settlement(SettlementRecord::ClearingTotals(totals)));
    }
    if let Some(rows) = postings {
        records.push(Record::Settlement(SettlementRecord::Postings(rows)));
    }
    records.push(Record::Settlement(SettlementRecord::SettleRun(run)));
    store.submit(records)?.wait()?;
    Ok(SettleReport {
        clearing_date: date,
        changed,
        run_no: Some(run_no),
        new_lines,
        new_postings,
        merchants,
        missed: false,
        resumed_lines: resumed.lines,
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

    #[test]
    fn a_row_without_its_card_number_is_charged_as_debit() {
        assert_eq!(class("", 0), CardClass::DomesticDebit);
        assert_eq!(class("", 19), CardClass::DomesticDebit);
    }
}
