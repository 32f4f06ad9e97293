//! The in-memory index of recent transactions: the hot lookups of the switch (idempotency by
//! TID + batch + STAN, originals by key or RRN) never touch the store. It holds today's and
//! yesterday's entries and knows, for the month before, only which terminal batches had any:
//! a request in such a batch whose key is not held reads the store first. Older originals are
//! adopted from the store on demand. Each entry's mutable part sits behind its own short
//! mutex, never held across an await.

use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use store::{TxnKind, TxnRow, TxnState};
use tokio::sync::{Notify, watch};

use crate::clock::LocalTime;
use crate::config::REFUND_DAYS_MAX;
use crate::core::Core;

/// What the terminal was (or will be) told, kept to answer a retried request identically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub response_code: [u8; 2],
    pub auth_code: Option<String>,
    pub settlement_date: Option<String>,
    pub balance: Option<String>,
}

impl Answer {
    pub fn code(code: [u8; 2]) -> Self {
        Answer {
            response_code: code,
            auth_code: None,
            settlement_date: None,
            balance: None,
        }
    }

    /// What the journal says the terminal was told, if it holds an answer (a balance is
    /// never journalled). An approval since reversed is told 98, as the process that answered
    /// it told it when the terminal's reversal had overtaken it: a request resent after its
    /// own reversal is not told "approved" for money being given back.
    pub fn of_row(row: &TxnRow) -> Option<Self> {
        let code = row.response_code.as_deref()?;
        if row.state == TxnState::Reversed && code == "00" {
            return Some(Answer::code(crate::core::RC_ISSUER_TIMEOUT));
        }
        Some(Answer {
            response_code: code.as_bytes().try_into().ok()?,
            auth_code: row.auth_code.clone(),
            settlement_date: row.settlement_date.clone(),
            balance: None,
        })
    }

    pub fn code_text(&self) -> &str {
        std::str::from_utf8(&self.response_code).unwrap_or("??")
    }
}

/// Idempotency key: a reversal shares its original's TID, batch and STAN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TxnKey {
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
    pub reversal: bool,
}

/// The parts of a transaction that change after it is recorded.
#[derive(Debug)]
pub(crate) struct Live {
    pub state: TxnState,
    pub answer: Option<Answer>,
    pub refunded_fen: i64,
    /// Refund amounts approved by checks but not yet by the issuer.
    pub refund_reserved_fen: i64,
    /// A void, completion or pre-auth void of this transaction is in progress.
    pub link_busy: bool,
    /// The original of a linked transaction, once found (after the entry was claimed, so
    /// `Entry::original_id` may still be `None`); what a reversal of this one gives back to.
    pub linked_original: Option<i64>,
    /// Whether the risk rules' day's sales hold what its approval did (see [`RiskCount`]).
    pub risk_count: RiskCount,
}

/// Whether an approval is in the risk rules' day's sales: what a terminal's reversal of it
/// takes back out is what was put in, whichever of the two is read first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RiskCount {
    /// Not answered 00 yet: counted when it is, unless reversed first.
    Pending,
    /// Counted (answered 00 here, or read approved from the journal at a start whose risk
    /// rules were warmed from it: [`Entry::counted_at_start`]).
    Counted,
    /// Reversed before it was counted (its outcome still being written): never counted.
    Skipped,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub id: i64,
    pub key: TxnKey,
    pub mid: String,
    pub kind: TxnKind,
    pub amount_fen: i64,
    pub fingerprint: Option<[u8; 32]>,
    pub request_hash: [u8; 16],
    pub rrn: Option<String>,
    pub clearing_date: String,
    pub clearing_day: i64,
    /// The calendar day it was received (`LocalTime::day_number`): the day whose sales a void
    /// or reversal of it moves in the risk rules' daily totals.
    pub received_day: i64,
    /// Field 13 (MMDD) the request went to the issuer with: a linked transaction's field 61
    /// names its original by RRN and this date, which differs from the clearing date after the
    /// cut-over.
    pub host_date: Option<String>,
    pub issuer: Option<String>,
    pub original_id: Option<i64>,
    live: Mutex<Live>,
    answered: Notify,
    /// See [`Entry::is_unrecorded`]; outside `live`, so the ledger may read it under its own
    /// lock.
    unrecorded: AtomicBool,
    /// See [`Entry::keep_answer`].
    answer_only_here: AtomicBool,
    /// Read from the store, not claimed here: a request this switch does not work on. One
    /// still in flight there (another node's, or one a start found) waits on nothing here, so
    /// the index may let it go like a settled one.
    adopted: bool,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: i64,
        key: TxnKey,
        mid: String,
        kind: TxnKind,
        amount_fen: i64,
        fingerprint: Option<[u8; 32]>,
        request_hash: [u8; 16],
        rrn: Option<String>,
        clearing_date: String,
        clearing_day: i64,
        received_day: i64,
        host_date: Option<String>,
        issuer: Option<String>,
        original_id: Option<i64>,
    ) -> Self {
        Entry {
            id,
            key,
            mid,
            kind,
            amount_fen,
            fingerprint,
            request_hash,
            rrn,
            clearing_date,
            clearing_day,
            received_day,
            host_date,
            issuer,
            original_id,
            live: Mutex::new(Live {
                state: TxnState::InFlight,
                answer: None,
                refunded_fen: 0,
                refund_reserved_fen: 0,
                link_busy: false,
                linked_original: original_id,
                risk_count: RiskCount::Pending,
            }),
            answered: Notify::new(),
            unrecorded: AtomicBool::new(false),
            answer_only_here: AtomicBool::new(false),
            adopted: false,
        }
    }

    /// Whether its approval, answered 00 now, goes into the risk rules' day's sales: yes once
    /// (`Pending` → `Counted`), no when a terminal's reversal of it was read first.
    pub fn count_in_risk(&self) -> bool {
        let mut live = self.live();
        if live.risk_count == RiskCount::Pending {
            live.risk_count = RiskCount::Counted;
            return true;
        }
        false
    }

    /// What the day's sales held of it when a terminal's reversal of it is read: only what
    /// was `Counted` comes back out; one not counted yet never will be (`Pending` becomes
    /// `Skipped`; [`Entry::count_again_later`] undoes that if the reversal is not written).
    pub fn uncount_in_risk(&self) -> RiskCount {
        let mut live = self.live();
        let was = live.risk_count;
        if was == RiskCount::Pending {
            live.risk_count = RiskCount::Skipped;
        }
        was
    }

    /// A reversal that made it `Skipped` was not written: its approval may yet be counted.
    pub fn count_again_later(&self) {
        let mut live = self.live();
        if live.risk_count == RiskCount::Skipped {
            live.risk_count = RiskCount::Pending;
        }
    }

    /// Loaded at a start whose risk rules were warmed from the journal: an approval (answered
    /// 00) is in the day's sales as the warm-up counted it. Not for a row adopted later (another
    /// node's, counted there).
    pub fn counted_at_start(&self) {
        let mut live = self.live();
        if live
            .answer
            .as_ref()
            .is_some_and(|a| a.response_code == crate::core::RC_APPROVED)
        {
            live.risk_count = RiskCount::Counted;
        }
    }

    /// Its row never reached the journal: the write failed and it was answered 96.
    pub fn mark_unrecorded(&self) {
        self.unrecorded.store(true, Ordering::Release);
        self.keep_answer();
    }

    /// Its answer is known only here: the journal has no row for it, or no outcome (the write
    /// failed). A retry must still get that answer, so the index keeps the entry as long as
    /// it marks batches ([`marked_since`]) rather than letting it go after [`held_since`].
    pub fn keep_answer(&self) {
        self.answer_only_here.store(true, Ordering::Release);
    }

    /// Whether its row never reached the journal: nothing there a reversal could point at or
    /// change, and, for a reversal, an attempt that did not happen.
    pub fn is_unrecorded(&self) -> bool {
        self.unrecorded.load(Ordering::Acquire)
    }

    fn from_row(row: &TxnRow) -> Self {
        let mut request_hash = [0; 16];
        for (slot, byte) in request_hash.iter_mut().zip(&row.request_hash) {
            *slot = *byte;
        }
        let fingerprint = row
            .pan
            .as_ref()
            .and_then(|p| <[u8; 32]>::try_from(p.fingerprint.as_slice()).ok());
        let mut entry = Entry::new(
            row.id,
            TxnKey {
                tid: row.tid.clone(),
                batch_no: row.batch_no,
                stan: row.stan,
                reversal: row.kind == TxnKind::Reversal,
            },
            row.mid.clone(),
            row.kind,
            row.amount_fen,
            fingerprint,
            request_hash,
            row.rrn.clone(),
            row.clearing_date.clone(),
            crate::clock::day_number_of(&row.clearing_date).unwrap_or(i64::MIN),
            crate::clock::LocalTime::from_ms(row.received_at_ms).day_number,
            row.host_date.clone(),
            row.issuer.clone(),
            row.original_id,
        );
        entry.adopted = true;
        {
            let mut live = entry.live();
            live.state = row.state;
            live.refunded_fen = row.refunded_fen;
            live.answer = Answer::of_row(row);
        }
        entry
    }

    /// The mutable part. A poisoned lock only means a panic elsewhere; the data is plain.
    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of the original this void, completion or refund names: the row's, or the one
    /// found for it while this node worked on it.
    pub fn linked_id(&self) -> Option<i64> {
        self.original_id.or(self.live().linked_original)
    }

    /// Takes in what the journal's `row` of this entry says other nodes did to it since this
    /// node read it: a void, completion or reversal of an approval, the undoing of a void or
    /// completion (reversed there), the outcome of a request held here in flight; the refunded
    /// total as the journal sums it, lower too when a refund was reversed there. What this
    /// node did and has not written yet may be overwritten here: the journal's own check
    /// (`StoreError::LinkRefused`) counts the links in flight, so memory only has to let a
    /// request through to it, never to hold one back wrongly. A reversal of this entry made
    /// here is never undone.
    pub fn catch_up(&self, row: &TxnRow) {
        let mut settled_here = false;
        let mut live = self.live();
        match (live.state, row.state) {
            (TxnState::Approved, TxnState::Voided | TxnState::Completed | TxnState::Reversed) => {
                live.state = row.state;
            }
            (TxnState::Voided | TxnState::Completed, TxnState::Approved) if !live.link_busy => {
                live.state = TxnState::Approved;
            }
            // Held in flight here, settled in the journal (by the node that sent it, or by
            // recovery): otherwise a reversal of it here would be written "from in flight" for
            // ever, and refused each time.
            (TxnState::InFlight, settled) if settled != TxnState::InFlight => {
                live.state = settled;
                // Its answer too (a void checks the auth code against it), and retries
                // waiting for it are woken.
                if live.answer.is_none() {
                    live.answer = Answer::of_row(row);
                    settled_here = live.answer.is_some();
                }
            }
            _ => {}
        }
        live.refunded_fen = row.refunded_fen;
        drop(live);
        if settled_here {
            self.answered.notify_waiters();
        }
    }

    /// Records the answer and wakes retries waiting for it.
    pub fn answer(&self, answer: Answer, state: TxnState) {
        {
            let mut live = self.live();
            live.answer = Some(answer);
            // A reversal that arrived while the issuer was still thinking wins.
            if live.state != TxnState::Reversed {
                live.state = state;
            }
        }
        self.answered.notify_waiters();
    }

    /// Waits until the transaction has an answer (a retry of a request still in progress).
    pub async fn wait_answer(&self) -> Answer {
        loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = self.live().answer.clone() {
                return answer;
            }
            notified.await;
        }
    }
}

/// Result of registering a request under its idempotency key.
pub(crate) enum Claim {
    /// First time: the caller processes it.
    New(Arc<Entry>),
    /// Same key, same content: answer as the first one was (or will be) answered.
    Retry(Arc<Entry>),
    /// Same key, different content: 94.
    Conflict,
}

/// What the index knows of a key.
pub(crate) enum Known {
    /// Its entry, held for the caller: it cannot be forgotten while the caller keeps it.
    Held(Arc<Entry>),
    /// Not held, but its terminal batch had entries the index no longer holds (or never
    /// loaded) over a range of STANs that takes its own: the store may have it.
    MaybeStored,
    /// Not held, and nothing of its terminal batch within [`marked_since`] under its STAN was
    /// let go: new.
    New,
}

#[derive(Default)]
struct Maps {
    by_key: HashMap<TxnKey, Arc<Entry>>,
    by_rrn: HashMap<String, Arc<Entry>>,
    by_id: HashMap<i64, Arc<Entry>>,
    /// (day, id) of every entry in the order it came in, for forgetting.
    order: VecDeque<(i64, i64)>,
    /// Terminal batches with entries not held (forgotten, or older than a start loads), by a
    /// hash of (TID, batch). A hash shared by two batches costs a needless read of the store,
    /// never a wrong answer. About 30 bytes a batch, against about 1.2 KB an entry.
    older: HashMap<u64, Mark>,
    /// (day, batch hash) of each mark in the order it was made, for letting marks go. A
    /// sign-in's mark (today) among older ones holds those behind it until it goes itself:
    /// they cost reads for longer, never a wrong answer.
    older_order: VecDeque<(i64, u64)>,
    hasher: RandomState,
}

/// What the index knows of a terminal batch's entries it does not hold.
#[derive(Clone, Copy, Debug)]
struct Mark {
    /// The last clearing day of such an entry: the mark goes when that day is no longer kept.
    last_day: i64,
    /// The lowest and highest STAN among them. A terminal numbers its requests upwards, so
    /// its next request's STAN is above them and costs no read of the store.
    stan_min: u32,
    stan_max: u32,
}

impl Maps {
    fn batch_hash(&self, tid: &str, batch_no: u32) -> u64 {
        self.hasher.hash_one((tid, batch_no))
    }

    fn mark_older(&mut self, tid: &str, batch_no: u32, day: i64, stans: (u32, u32)) {
        let hash = self.batch_hash(tid, batch_no);
        let (stan_min, stan_max) = stans;
        match self.older.entry(hash) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(Mark {
                    last_day: day,
                    stan_min,
                    stan_max,
                });
            }
            MapEntry::Occupied(mut mark) => {
                let mark = mark.get_mut();
                mark.stan_min = mark.stan_min.min(stan_min);
                mark.stan_max = mark.stan_max.max(stan_max);
                if mark.last_day >= day {
                    return;
                }
                mark.last_day = day;
            }
        }
        self.older_order.push_back((day, hash));
    }
}

/// The first day the index holds entries of at `now_ms`, `days_held` days before today by the
/// calendar (`SwitchConfig::index_days_held`, 1: yesterday, so yesterday's clearing day too
/// after the cut-over). Retries and reversals come within minutes (a stored reversal of an
/// older day is only refused, see `reversal`), so older entries are read from the store in
/// the rare request that needs them.
pub(crate) fn held_since(now_ms: i64, days_held: i64) -> LocalTime {
    LocalTime::from_ms(now_ms - days_held * 86_400_000)
}

/// The first day whose terminal batches the index marks at `now_ms`: the last
/// `REFUND_DAYS_MAX` days and today. A key from before it is taken as new, as it always was.
pub(crate) fn marked_since(now_ms: i64) -> LocalTime {
    LocalTime::from_ms(now_ms - (REFUND_DAYS_MAX + 1) * 86_400_000)
}

/// Entries [`Ledger::forget_before`] looks at per hold of the index's lock.
const FORGET_BATCH: usize = 1_024;

/// Forgets, every `SwitchConfig::index_forget_interval`, the entries older than
/// [`held_since`] and the marks older than [`marked_since`]; until `stop`.
pub(crate) async fn forget_old(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            // Stop first, and a fixed order: a seeded simulation replays exactly.
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(core.config.index_forget_interval) => {}
        }
        let now_ms = core.clock.now_ms();
        let since = held_since(now_ms, core.config.index_days_held);
        let forgotten = core
            .ledger
            .forget_before(since.day_number, marked_since(now_ms).day_number);
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                since = %since.yyyymmdd(),
                "in-memory index: older transactions forgotten"
            );
        }
    }
}

/// How long a start waits to read the month's marks again after the store failed it.
const MARKS_RETRY: Duration = Duration::from_secs(10);

/// Reads the marks of the terminal batches cleared from `from` to `to` (`YYYYMMDD`, the
/// month before what the index holds) while the switch already answers: a month of rows takes
/// seconds to read, and terminals wait for none of them. Until the marks are in, every request
/// under a key the index does not hold reads the store first ([`Ledger::known`]). A failed
/// read is tried again every [`MARKS_RETRY`], reading the store for each request meanwhile.
/// `gate`, if set, is waited for first ([`crate::SwitchConfig::marks_gate`]).
pub(crate) async fn load_marks(
    core: Arc<Core>,
    from: String,
    to: String,
    gate: Option<Arc<Notify>>,
    mut stop: watch::Receiver<bool>,
) {
    if let Some(gate) = gate {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = gate.notified() => {}
        }
    }
    let started = std::time::Instant::now();
    loop {
        let (since, until) = (from.clone(), to.clone());
        let read = core.read_store(move |store| store.batches_cleared(&since, &until));
        // A switch stopped meanwhile does not wait for the read: its thread ends on its own.
        let read = tokio::select! {
            biased;
            _ = stop.changed() => return,
            read = read => read,
        };
        match read {
            Some(Ok(batches)) => {
                let count = batches.len();
                core.ledger.mark_loaded(
                    batches
                        .into_iter()
                        .map(|batch| {
                            // The store writes only valid dates; a mark without one goes at
                            // the next pass.
                            let day = crate::clock::day_number_of(&batch.last_clearing_date)
                                .unwrap_or(i64::MIN);
                            (
                                batch.tid,
                                batch.batch_no,
                                day,
                                (batch.stan_min, batch.stan_max),
                            )
                        })
                        .collect(),
                );
                core.ledger.set_marks_loading(false);
                tracing::info!(
                    batches = count,
                    since = %from,
                    ms = started.elapsed().as_millis(),
                    "in-memory index: the month's terminal batches marked"
                );
                return;
            }
            Some(Err(error)) => tracing::warn!(
                %error,
                "cannot read the month's terminal batches; requests not held read the store"
            ),
            None => tracing::warn!("the read of the month's terminal batches stopped"),
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(MARKS_RETRY) => {}
        }
    }
}

#[derive(Default)]
pub(crate) struct Ledger {
    maps: Mutex<Maps>,
    /// While a start reads the month's marks ([`load_marks`]), a key neither held nor marked
    /// may still be in the store: every such request reads it, until the marks are in.
    marks_loading: AtomicBool,
}

impl Ledger {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `entry` unless its key is taken. A reversal takes the key over from an
    /// earlier attempt that was answered 96 without reaching the journal: that attempt did
    /// not happen, and the terminal resends its reversal until it is answered (PROTOCOL.md).
    /// Any other retry gets the first answer, whatever it was.
    pub fn claim(&self, entry: Entry) -> Claim {
        let mut maps = self.maps();
        if let Some(existing) = maps.by_key.get(&entry.key) {
            if let Some(claim) = Self::held_as(existing, &entry.key, &entry.request_hash) {
                return claim;
            }
            let failed = existing.id;
            maps.by_id.remove(&failed);
        }
        let entry = Arc::new(entry);
        Self::index(&mut maps, &entry);
        Claim::New(entry)
    }

    /// What a request under `key` with `request_hash` is when this node holds the key
    /// already: a retry of the entry held, or a conflict (same key, another request). `None`
    /// when the key is not held, or is held by a request whose row never reached the journal
    /// and this is its reversal, which takes the key over ([`Ledger::claim`]).
    pub fn held(&self, key: &TxnKey, request_hash: &[u8; 16]) -> Option<Claim> {
        let maps = self.maps();
        Self::held_as(maps.by_key.get(key)?, key, request_hash)
    }

    fn held_as(existing: &Arc<Entry>, key: &TxnKey, request_hash: &[u8; 16]) -> Option<Claim> {
        if existing.request_hash != *request_hash {
            return Some(Claim::Conflict);
        }
        if key.reversal && existing.is_unrecorded() {
            return None;
        }
        Some(Claim::Retry(Arc::clone(existing)))
    }

    /// Takes `entry` out of the key index alone (still found by id and RRN): an earlier
    /// batch's, its batch number in use again.
    pub fn let_go_of_key(&self, entry: &Arc<Entry>) {
        let mut maps = self.maps();
        if maps
            .by_key
            .get(&entry.key)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            maps.by_key.remove(&entry.key);
        }
    }

    /// Takes `lost` out of the maps: the journal refused its row because another node holds
    /// its key ([`store::StoreError::KeyTaken`]). A request under the key then reads the
    /// journal (a node on a shared journal reads every key it does not hold), rather than
    /// finding here an entry the journal never had.
    pub fn forget_lost(&self, lost: &Arc<Entry>) {
        let mut maps = self.maps();
        if maps
            .by_id
            .get(&lost.id)
            .is_some_and(|e| Arc::ptr_eq(e, lost))
        {
            maps.by_id.remove(&lost.id);
        }
        if maps
            .by_key
            .get(&lost.key)
            .is_some_and(|e| Arc::ptr_eq(e, lost))
        {
            maps.by_key.remove(&lost.key);
        }
        if let Some(rrn) = &lost.rrn
            && maps.by_rrn.get(rrn).is_some_and(|e| Arc::ptr_eq(e, lost))
        {
            maps.by_rrn.remove(rrn);
        }
    }

    /// Several nodes on one journal: `lost` was claimed here, but the journal refused its row
    /// because another node had journalled `winner` under the same key meanwhile
    /// ([`store::StoreError::KeyTaken`]). `lost` leaves the maps and `winner` takes its key:
    /// the request is a retry of the winner's, or a conflict (94) if their contents differ.
    pub fn yield_key(&self, lost: &Arc<Entry>, winner: &TxnRow) -> Claim {
        self.forget_lost(lost);
        let winner = self.adopt(winner);
        {
            let mut maps = self.maps();
            maps.by_key.insert(winner.key.clone(), Arc::clone(&winner));
        }
        if winner.request_hash == lost.request_hash {
            Claim::Retry(winner)
        } else {
            Claim::Conflict
        }
    }

    fn index(maps: &mut Maps, entry: &Arc<Entry>) {
        maps.by_key.insert(entry.key.clone(), Arc::clone(entry));
        if let Some(rrn) = &entry.rrn {
            maps.by_rrn.insert(rrn.clone(), Arc::clone(entry));
        }
        maps.by_id.insert(entry.id, Arc::clone(entry));
        maps.order.push_back((entry.clearing_day, entry.id));
    }

    /// Adds a row read from the store, or returns the entry already held for its id.
    pub fn adopt(&self, row: &TxnRow) -> Arc<Entry> {
        let mut maps = self.maps();
        if let Some(existing) = maps.by_id.get(&row.id) {
            return Arc::clone(existing);
        }
        let entry = Arc::new(Entry::from_row(row));
        // A later row under the same key (a new day's reuse of a STAN) keeps the key.
        if !maps.by_key.contains_key(&entry.key) {
            maps.by_key.insert(entry.key.clone(), Arc::clone(&entry));
        }
        if let Some(rrn) = &entry.rrn {
            maps.by_rrn.insert(rrn.clone(), Arc::clone(&entry));
        }
        maps.by_id.insert(entry.id, Arc::clone(&entry));
        maps.order.push_back((entry.clearing_day, entry.id));
        entry
    }

    /// Forgets the entries of days before `before` (a day number) that are settled in memory:
    /// not in flight, no link or refund under way, held by no request. Each forgotten entry
    /// marks its terminal batch, so that a request under its key reads the store first
    /// ([`Ledger::known`]); marks of days before `marks_before` go. Called with [`held_since`]
    /// and [`marked_since`], it keeps the index at what a switch just started would hold,
    /// however long this one has run. It walks the entries in the order they came in,
    /// [`FORGET_BATCH`] under the lock at a time, so requests wait for a batch at most.
    /// Returns how many entries it forgot.
    pub fn forget_before(&self, before: i64, marks_before: i64) -> usize {
        let mut forgotten = 0;
        // Old but still busy or held: tried again at the next pass, first.
        let mut busy: Vec<(i64, i64)> = Vec::new();
        let mut done = false;
        while !done {
            let mut maps = self.maps();
            for _ in 0..FORGET_BATCH {
                if maps.order.front().is_none_or(|&(day, _)| day >= before) {
                    done = true;
                    break;
                }
                let Some((day, id)) = maps.order.pop_front() else {
                    break;
                };
                match Self::forget(&mut maps, id, day < marks_before) {
                    Some(entry) => {
                        let stan = entry.key.stan;
                        maps.mark_older(
                            &entry.key.tid,
                            entry.key.batch_no,
                            entry.clearing_day,
                            (stan, stan),
                        );
                        forgotten += 1;
                    }
                    None if maps.by_id.contains_key(&id) => busy.push((day, id)),
                    // Gone already: replaced by a reversal's resend (`claim`), or forgotten.
                    None => {}
                }
            }
        }
        let mut maps = self.maps();
        for item in busy.into_iter().rev() {
            maps.order.push_front(item);
        }
        drop(maps);
        let mut done = false;
        while !done {
            let mut maps = self.maps();
            for _ in 0..FORGET_BATCH {
                if maps
                    .older_order
                    .front()
                    .is_none_or(|&(day, _)| day >= marks_before)
                {
                    done = true;
                    break;
                }
                let Some((day, hash)) = maps.older_order.pop_front() else {
                    break;
                };
                // A later mark of the same batch has its own place further on.
                if maps.older.get(&hash).is_some_and(|m| m.last_day == day) {
                    maps.older.remove(&hash);
                }
            }
        }
        forgotten
    }

    /// Takes entry `id` out of the maps if it is settled and no one else holds it, and, if
    /// its answer is known only here, it is older than what the index marks (`unmarked`).
    fn forget(maps: &mut Maps, id: i64, unmarked: bool) -> Option<Arc<Entry>> {
        let entry = maps.by_id.get(&id)?;
        if !unmarked && entry.answer_only_here.load(Ordering::Acquire) {
            return None;
        }
        let in_key = maps
            .by_key
            .get(&entry.key)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        let in_rrn = entry
            .rrn
            .as_ref()
            .and_then(|r| maps.by_rrn.get(r))
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        let held_elsewhere =
            Arc::strong_count(entry) > 1 + usize::from(in_key) + usize::from(in_rrn);
        let settled = {
            let live = entry.live();
            (live.state != TxnState::InFlight || entry.adopted)
                && !live.link_busy
                && live.refund_reserved_fen == 0
        };
        if held_elsewhere || !settled {
            return None;
        }
        let entry = maps.by_id.remove(&id)?;
        if in_key {
            maps.by_key.remove(&entry.key);
        }
        if let Some(rrn) = entry.rrn.as_ref().filter(|_| in_rrn) {
            maps.by_rrn.remove(rrn);
        }
        Some(entry)
    }

    /// Whether `key` is held, or may be in the store only.
    pub fn known(&self, key: &TxnKey) -> Known {
        let maps = self.maps();
        if let Some(entry) = maps.by_key.get(key) {
            return Known::Held(Arc::clone(entry));
        }
        match maps.older.get(&maps.batch_hash(&key.tid, key.batch_no)) {
            Some(mark) if (mark.stan_min..=mark.stan_max).contains(&key.stan) => Known::MaybeStored,
            Some(_) | None if self.marks_loading.load(Ordering::Acquire) => Known::MaybeStored,
            Some(_) | None => Known::New,
        }
    }

    /// Whether the marks a start reads are still being read ([`Ledger::known`]).
    pub fn marks_loading(&self) -> bool {
        self.marks_loading.load(Ordering::Acquire)
    }

    pub fn set_marks_loading(&self, loading: bool) {
        self.marks_loading.store(loading, Ordering::Release);
    }

    /// The marks a start read from the store, each `(tid, batch, last day, STAN range)`. They
    /// go ahead of the marks made while they were read, oldest first, so that they are let go
    /// in the order of their days.
    pub fn mark_loaded(&self, mut marks: Vec<(String, u32, i64, (u32, u32))>) {
        marks.sort_by_key(|m| m.2);
        let mut maps = self.maps();
        let made_meanwhile = std::mem::take(&mut maps.older_order);
        for (tid, batch_no, day, stans) in marks {
            maps.mark_older(&tid, batch_no, day, stans);
        }
        maps.older_order.extend(made_meanwhile);
    }

    /// Marks a terminal batch as having entries up to `day`, with STANs from `stans.0` to
    /// `stans.1`, that the index does not hold: older than a start loads, or recorded by
    /// another node before the terminal signed in here.
    pub fn mark_older(&self, tid: &str, batch_no: u32, day: i64, stans: (u32, u32)) {
        self.maps().mark_older(tid, batch_no, day, stans);
    }

    pub fn by_key(&self, key: &TxnKey) -> Option<Arc<Entry>> {
        self.maps().by_key.get(key).cloned()
    }

    pub fn by_rrn(&self, rrn: &str) -> Option<Arc<Entry>> {
        self.maps().by_rrn.get(rrn).cloned()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<Entry>> {
        self.maps().by_id.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn claimed(ledger: &Ledger, id: i64, clearing_date: &str) -> Arc<Entry> {
        claimed_as(ledger, id, clearing_date, false)
    }

    /// As [`claimed`], or as if read from the store (`adopted`).
    fn claimed_as(ledger: &Ledger, id: i64, clearing_date: &str, adopted: bool) -> Arc<Entry> {
        let day = day(clearing_date);
        let key = TxnKey {
            tid: "10000001".into(),
            batch_no: 1,
            stan: u32::try_from(id).unwrap(),
            reversal: false,
        };
        let mut entry = Entry::new(
            id,
            key,
            "898110048990001".into(),
            TxnKind::Purchase,
            100,
            None,
            [0; 16],
            Some(format!("{id:012}")),
            clearing_date.into(),
            day,
            day,
            None,
            None,
            None,
        );
        entry.adopted = adopted;
        match ledger.claim(entry) {
            Claim::New(entry) => entry,
            _ => panic!("the key was taken"),
        }
    }

    fn day(date: &str) -> i64 {
        crate::clock::day_number_of(date).unwrap()
    }

    fn approve(entry: &Entry) {
        entry.answer(Answer::code(*b"00"), TxnState::Approved);
    }

    #[test]
    fn forgets_only_old_settled_entries_no_request_holds() {
        let ledger = Ledger::default();
        let old_done = claimed(&ledger, 1, "20260101");
        approve(&old_done);
        let old_in_flight = claimed(&ledger, 2, "20260101");
        let old_held = claimed(&ledger, 3, "20260101");
        approve(&old_held);
        let old_refunding = claimed(&ledger, 4, "20260101");
        approve(&old_refunding);
        old_refunding.live().refund_reserved_fen = 50;
        let recent = claimed(&ledger, 5, "20260201");
        approve(&recent);
        let (old_done_key, old_done_rrn) = (old_done.key.clone(), old_done.rrn.clone().unwrap());
        // Only the maps hold these now; `old_held` stays held, as by a request in progress.
        drop((old_done, old_in_flight, old_refunding, recent));

        assert_eq!(ledger.forget_before(day("20260201"), i64::MIN), 1);
        assert!(ledger.by_id(1).is_none());
        assert!(ledger.by_key(&old_done_key).is_none());
        assert!(ledger.by_rrn(&old_done_rrn).is_none());
        for kept in 2..=5 {
            assert!(ledger.by_id(kept).is_some(), "entry {kept} was forgotten");
        }
        // Once its request lets go, the held one goes at the next pass.
        drop(old_held);
        assert_eq!(ledger.forget_before(day("20260201"), i64::MIN), 1);
        assert!(ledger.by_id(3).is_none());
        assert!(ledger.by_rrn("000000000003").is_none());
    }

    #[test]
    fn an_answer_only_memory_has_is_kept_as_long_as_the_marks() {
        let ledger = Ledger::default();
        let answered_96 = claimed(&ledger, 1, "20260101");
        answered_96.mark_unrecorded();
        answered_96.answer(Answer::code(*b"96"), TxnState::Failed);
        let outcome_lost = claimed(&ledger, 2, "20260101");
        outcome_lost.keep_answer();
        approve(&outcome_lost);
        approve(&claimed(&ledger, 3, "20260101"));
        drop((answered_96, outcome_lost));

        // Past the days held but within the marks: only the ordinary entry goes.
        assert_eq!(ledger.forget_before(day("20260201"), day("20251215")), 1);
        assert!(ledger.by_id(1).is_some() && ledger.by_id(2).is_some());
        assert!(ledger.by_id(3).is_none());
        // Once the marks no longer reach back to their day, they go too.
        assert_eq!(ledger.forget_before(day("20260201"), day("20260102")), 2);
        assert!(ledger.by_id(1).is_none() && ledger.by_id(2).is_none());
    }

    #[test]
    fn an_entry_read_in_flight_from_the_store_is_let_go() {
        let ledger = Ledger::default();
        // Another node's request, in flight when this one read it: nothing here waits on it.
        drop(claimed_as(&ledger, 1, "20260101", true));
        // This switch's own request in flight: kept until it is answered.
        drop(claimed(&ledger, 2, "20260101"));
        assert_eq!(ledger.forget_before(day("20260201"), i64::MIN), 1);
        assert!(ledger.by_id(1).is_none());
        assert!(ledger.by_id(2).is_some());
    }

    fn key(tid: &str, batch_no: u32, stan: u32) -> TxnKey {
        TxnKey {
            tid: tid.into(),
            batch_no,
            stan,
            reversal: false,
        }
    }

    #[test]
    fn while_the_marks_load_every_key_not_held_may_be_stored() {
        let ledger = Ledger::default();
        approve(&claimed(&ledger, 3, "20260201"));
        ledger.set_marks_loading(true);
        assert!(matches!(
            ledger.known(&key("10000001", 1, 3)),
            Known::Held(_)
        ));
        assert!(matches!(
            ledger.known(&key("10000002", 9, 1)),
            Known::MaybeStored
        ));
        // A mark made meanwhile (a sign-in's, today) and the loaded ones of older days.
        ledger.mark_older("10000003", 4, day("20260201"), (1, 9));
        ledger.mark_loaded(vec![
            ("10000002".into(), 9, day("20260110"), (1, 5)),
            ("10000004".into(), 2, day("20260105"), (7, 8)),
        ]);
        ledger.set_marks_loading(false);
        assert!(matches!(
            ledger.known(&key("10000002", 9, 1)),
            Known::MaybeStored
        ));
        assert!(matches!(ledger.known(&key("10000002", 9, 6)), Known::New));
        assert!(matches!(ledger.known(&key("10000005", 1, 1)), Known::New));
        // The loaded marks go by their days, though today's was made before them.
        ledger.forget_before(day("20260101"), day("20260108"));
        assert!(matches!(ledger.known(&key("10000004", 2, 7)), Known::New));
        assert!(matches!(
            ledger.known(&key("10000002", 9, 1)),
            Known::MaybeStored
        ));
        assert!(matches!(
            ledger.known(&key("10000003", 4, 1)),
            Known::MaybeStored
        ));
    }

    #[test]
    fn a_forgotten_entry_marks_its_batch_and_stans_until_the_marks_go() {
        let ledger = Ledger::default();
        approve(&claimed(&ledger, 3, "20260101"));
        approve(&claimed(&ledger, 5, "20260115"));
        let between = key("10000001", 1, 4);
        assert!(matches!(ledger.known(&between), Known::New));
        assert!(matches!(
            ledger.known(&key("10000001", 1, 3)),
            Known::Held(e) if e.id == 3
        ));

        assert_eq!(ledger.forget_before(day("20260201"), day("20251201")), 2);
        // STANs 3 to 5 of the batch may be in the store, the one between them too.
        for stan in [3, 4, 5] {
            assert!(matches!(
                ledger.known(&key("10000001", 1, stan)),
                Known::MaybeStored
            ));
        }
        // Above them (the terminal's next request) or below: new, no read.
        for stan in [2, 6, 999_999] {
            assert!(matches!(
                ledger.known(&key("10000001", 1, stan)),
                Known::New
            ));
        }
        // Another batch of the terminal, and another terminal: nothing was let go there.
        assert!(matches!(ledger.known(&key("10000001", 2, 3)), Known::New));
        assert!(matches!(ledger.known(&key("10000002", 1, 3)), Known::New));

        // The mark lasts as long as the batch's last forgotten day is kept: the 15th.
        assert_eq!(ledger.forget_before(day("20260201"), day("20260110")), 0);
        assert!(matches!(ledger.known(&between), Known::MaybeStored));
        assert_eq!(ledger.forget_before(day("20260201"), day("20260116")), 0);
        assert!(matches!(ledger.known(&between), Known::New));
    }

    #[test]
    fn a_start_marks_the_batches_it_does_not_load() {
        let ledger = Ledger::default();
        ledger.mark_older("10000001", 7, day("20260110"), (10, 20));
        ledger.mark_older("10000001", 7, day("20260105"), (1, 5));
        // The ranges join; the later day counts, an earlier mark does not shorten it.
        for stan in [1, 7, 20] {
            assert!(matches!(
                ledger.known(&key("10000001", 7, stan)),
                Known::MaybeStored
            ));
        }
        assert!(matches!(ledger.known(&key("10000001", 7, 21)), Known::New));
        assert_eq!(ledger.forget_before(i64::MIN, day("20260108")), 0);
        assert!(matches!(
            ledger.known(&key("10000001", 7, 3)),
            Known::MaybeStored
        ));
        assert_eq!(ledger.forget_before(i64::MIN, day("20260111")), 0);
        assert!(matches!(ledger.known(&key("10000001", 7, 3)), Known::New));
    }

    #[test]
    fn forgets_across_batches_and_stops_at_the_first_kept_date() {
        let ledger = Ledger::default();
        let old = 3 * FORGET_BATCH;
        for id in 1..=i64::try_from(old).unwrap() {
            approve(&claimed(&ledger, id, "20260101"));
        }
        let busy = claimed(&ledger, 100_000, "20260101");
        for id in 200_000..200_010 {
            approve(&claimed(&ledger, id, "20260201"));
        }
        // Old again, but after a kept date: the walk stops before it.
        approve(&claimed(&ledger, 300_000, "20260101"));
        assert_eq!(ledger.forget_before(day("20260201"), i64::MIN), old);
        assert!(ledger.by_id(100_000).is_some());
        assert!(ledger.by_id(300_000).is_some());
        assert_eq!(ledger.by_id(200_000).map(|e| e.id), Some(200_000));
        approve(&busy);
        drop(busy);
        assert_eq!(ledger.forget_before(day("20260201"), i64::MIN), 1);
        assert!(ledger.by_id(100_000).is_none());
    }
}
