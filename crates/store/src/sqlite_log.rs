//! The journal log in front of the SQLite tables.
//!
//! Why: a group commit into the tables writes whole 4 KiB pages of the table and of each
//! index an authorisation touches, and the groups are small (a few dozen submissions) because
//! every terminal waits for its commit. Measured on the 2-core machine, that costs about 48 µs
//! of CPU per purchase; the same rows written in batches of 500, a purchase's insert and outcome
//! folded into one row, cost about 10 µs (docs/performance.md).
//!
//! How: the switch's records (see [`loggable`]) are appended to a log file and fsynced per
//! group by the `store-log` thread, which then answers the submitters: a record is durable
//! once it is in the log. The `store-writer` thread writes them into the tables behind it,
//! in batches gathered over [`APPLY_LINGER`] (or sooner when a reader waits), in transactions
//! that fsync only now and then (`synchronous=NORMAL`, a `FULL` commit every
//! [`DURABLE_EVERY`]); each batch records the last sequence number it applied in
//! `journal_log`, in the same transaction. At start the entries past that number are replayed.
//!
//! Every other submission (provisioning, settlement, cases, counters, claims) goes to the
//! writer in order behind the log's entries and commits as before, `FULL`; so do all reads:
//! a read first waits until the tables hold every entry acknowledged before it began, so a
//! caller always reads its own writes.
//!
//! Failures. An append that fails is cut off the file and its submitters get the error, as a
//! failed commit would give them. An entry acknowledged but refused by the tables (a
//! constraint) cannot be failed any more: it is kept whole in `journal_rejects`, which
//! `shoudan audit` reports. A batch the tables cannot take for want of space stays pending and
//! is retried; meanwhile the log refuses new entries with that error, so the switch answers 96
//! until the tables have room again, and reads see the tables as they were.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::journal_log_file::{Entry, LogFiles, encode_entry, loggable};
use super::{
    WRITE_BATCH_MAX, apply_quota, begin, commit_group, in_savepoint, insert_txn, now_ms,
    write_record,
};
use crate::error::StoreError;
use crate::group::{Completion, Job, completion};
use crate::model::{Outcome, Record, TxnRow, TxnState};

/// How long the writer gathers logged entries before writing them into the tables.
pub(crate) const APPLY_LINGER: Duration = Duration::from_millis(10);
/// Entries written into the tables in one transaction at most.
const APPLY_BATCH_MAX: usize = 8_192;
/// How often the tables' own log is fsynced, so that the journal log can be emptied.
pub(crate) const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// How long the writer waits before retrying a batch the tables refused for want of space.
const STALL_RETRY: Duration = Duration::from_millis(20);
/// Messages from the log thread to the writer; a full queue holds the log thread back.
pub(crate) const BACK_QUEUE_MAX: usize = 4_096;

/// What the log thread hands the writer, in order.
pub(crate) enum Back {
    /// Entries durable in the log, to write into the tables.
    Apply(Vec<Entry>),
    /// A submission that commits into the tables directly (and its waiter).
    Direct(Job),
    /// A reader waits for the tables to catch up.
    Flush,
}

/// What the log thread, the writer and the readers share.
pub(crate) struct Shared {
    /// The highest sequence number acknowledged to a submitter.
    acked: AtomicU64,
    /// The highest sequence number in the tables.
    applied: Mutex<u64>,
    applied_changed: Condvar,
    /// The highest sequence number durably in the tables (the log may forget up to it).
    durable: AtomicU64,
    /// The log thread waits to rotate until the tables are durable.
    want_durable: AtomicBool,
    /// Why the tables refuse writes, while they do.
    stalled: Mutex<Option<StoreError>>,
    /// `synchronous=FULL`: fsync the log per group.
    sync: bool,
}

impl Shared {
    pub(crate) fn new(applied: u64, sync: bool) -> Self {
        Shared {
            acked: AtomicU64::new(applied),
            applied: Mutex::new(applied),
            applied_changed: Condvar::new(),
            durable: AtomicU64::new(applied),
            want_durable: AtomicBool::new(false),
            stalled: Mutex::new(None),
            sync,
        }
    }

    fn stall(&self) -> Option<StoreError> {
        self.stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_stall(&self, error: Option<StoreError>) {
        *self.stalled.lock().unwrap_or_else(PoisonError::into_inner) = error;
        // Readers waiting for the tables stop waiting while they cannot be written.
        self.applied_changed.notify_all();
    }

    fn set_applied(&self, seq: u64) {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = seq;
        self.applied_changed.notify_all();
    }

    /// Waits until the tables hold every entry acknowledged so far (or cannot be written).
    pub(crate) fn catch_up(&self, flush: &SyncSender<Back>) {
        let target = self.acked.load(Ordering::Acquire);
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if *applied >= target {
            return;
        }
        // Ask the writer not to linger; if its queue is full it is busy catching up anyway.
        match flush.try_send(Back::Flush) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return,
        }
        while *applied < target {
            if self.stall().is_some() {
                return;
            }
            let (next, _) = self
                .applied_changed
                .wait_timeout(applied, STALL_RETRY)
                .unwrap_or_else(PoisonError::into_inner);
            applied = next;
        }
    }
}

/// The log thread: appends each group's loggable submissions to the log, fsyncs, answers them
/// and hands them to the writer; passes every other job to the writer in order.
pub(crate) fn run_log(
    mut files: LogFiles,
    mut receiver: mpsc::Receiver<Job>,
    back: SyncSender<Back>,
    writer: JoinHandle<()>,
    shared: &Shared,
) {
    let mut next_seq = files.last_seq().max(shared.acked.load(Ordering::Acquire)) + 1;
    let mut jobs = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut group = Group::default();
    let mut stop = false;
    while !stop {
        let Some(first) = receiver.blocking_recv() else {
            break;
        };
        jobs.push(first);
        while jobs.len() < WRITE_BATCH_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for job in jobs.drain(..) {
            match job {
                Job::Write { records, done } if loggable(&records) => {
                    match encode_entry(&mut group.buf, next_seq, &records) {
                        Ok(()) => {
                            group.entries.push(Entry {
                                seq: next_seq,
                                records,
                            });
                            group.done.push(done);
                            next_seq += 1;
                        }
                        Err(error) => drop(done.send(Err(error))),
                    }
                }
                other => {
                    group.append(&mut files, &back, shared, &mut next_seq);
                    stop |= matches!(other, Job::Stop);
                    // A writer gone drops the job, and its waiter sees `WriterGone`.
                    let _ = back.send(Back::Direct(other));
                }
            }
        }
        group.append(&mut files, &back, shared, &mut next_seq);
        // A failed rotation is retried after the next group; the active file grows meanwhile.
        if let Ok(waiting) = files.rotate(shared.durable.load(Ordering::Acquire)) {
            shared.want_durable.store(waiting, Ordering::Release);
        }
    }
    drop(back);
    let _ = writer.join();
    // A clean stop leaves the tables durable and the log empty.
    if shared.durable.load(Ordering::Acquire) >= files.last_seq() {
        let _ = files.clear();
    }
}

/// The loggable submissions of one group, encoded.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    done: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

impl Group {
    fn append(
        &mut self,
        files: &mut LogFiles,
        back: &SyncSender<Back>,
        shared: &Shared,
        next_seq: &mut u64,
    ) {
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else {
            return;
        };
        let (first, last) = (first.seq, last.seq);
        let appended = match shared.stall() {
            Some(error) => Err(error),
            None => files.append(&self.buf, last, shared.sync),
        };

        self.buf.clear();
        match appended {
            Ok(()) => {
                shared.acked.store(last, Ordering::Release);
                for done in self.done.drain(..) {
                    let _ = done.send(Ok(()));
                }
                let _ = back.send(Back::Apply(std::mem::take(&mut self.entries)));
            }
            Err(error) => {
                *next_seq = first;
                self.entries.clear();
                for done in self.done.drain(..) {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The writer: writes logged entries into the tables in batches, and commits the direct jobs.
pub(crate) fn run_writer(
    mut conn: Connection,
    receiver: Receiver<Back>,
    shared: Arc<Shared>,
    quota: Arc<AtomicU64>,
) {
    let mut tables = Tables {
        conn: &mut conn,
        shared: &shared,
        quota: &quota,
        applied_quota: quota.load(Ordering::Acquire),
        last_durable: Instant::now(),
    };
    let mut pending: Vec<Entry> = Vec::new();
    let mut pending_since = Instant::now();
    let mut carried: Option<Back> = None;
    loop {
        let message = match carried.take() {
            Some(message) => Ok(message),
            None if pending.is_empty() => {
                receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
            }
            None => {
                let wait = if shared.stall().is_some() {
                    STALL_RETRY
                } else {
                    APPLY_LINGER.saturating_sub(pending_since.elapsed())
                };
                receiver.recv_timeout(wait)
            }
        };
        match message {
            Ok(Back::Apply(entries)) => {
                if pending.is_empty() {
                    pending_since = Instant::now();
                }
                pending.extend(entries);
                if pending.len() < APPLY_BATCH_MAX && pending_since.elapsed() < APPLY_LINGER {
                    continue;
                }
            }
            Ok(Back::Flush) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Back::Direct(job)) => {
                let mut jobs = vec![job];
                while jobs.len() < WRITE_BATCH_MAX {
                    match receiver.try_recv() {
                        Ok(Back::Direct(job)) => jobs.push(job),
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if tables.direct(&mut pending, &mut jobs) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = tables.materialise(&mut pending, true);
                return;
            }
        }
        let durable = tables.durable_due();
        let _ = tables.materialise(&mut pending, durable);
    }
}

struct Tables<'a> {
    conn: &'a mut Connection,
    shared: &'a Shared,
    quota: &'a AtomicU64,
    applied_quota: u64,
    last_durable: Instant,
}

impl Tables<'_> {
    fn durable_due(&self) -> bool {
        self.last_durable.elapsed() >= DURABLE_EVERY
            || self.shared.want_durable.load(Ordering::Acquire)
    }

    fn set_synchronous(&self, full: bool) -> Result<(), StoreError> {
        let mode = if full && self.shared.sync {
            "FULL"
        } else {
            "NORMAL"
        };
        self.conn.pragma_update(None, "synchronous", mode)?;
        Ok(())
    }

    /// Writes the pending entries into the tables; with `durable`, in a commit that fsyncs.
    fn materialise(&mut self, pending: &mut Vec<Entry>, durable: bool) -> Result<(), StoreError> {
        let applied_before = *self
            .shared
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = match pending.last() {
            Some(entry) => entry.seq,
            None if durable && self.shared.durable.load(Ordering::Acquire) < applied_before => {
                applied_before
            }
            None => return Ok(()),
        };
        apply_quota(self.conn, self.quota, &mut self.applied_quota);
        self.set_synchronous(durable)?;
        let result = apply_batch(self.conn, pending, last)
            .or_else(|_| apply_carefully(self.conn, pending, last));
        let _ = self.set_synchronous(false);
        match result {
            Ok(()) => {
                pending.clear();
                self.shared.set_applied(last);
                if durable {
                    self.shared.durable.store(last, Ordering::Release);
                    self.last_durable = Instant::now();
                }
                if self.shared.stall().is_some() {
                    self.shared.set_stall(None);
                }
                Ok(())
            }
            Err(error) => {
                self.shared.set_stall(Some(error.clone()));
                Err(error)
            }
        }
    }

    /// Commits direct jobs behind every pending entry. Returns whether a stop was among them.
    fn direct(&mut self, pending: &mut Vec<Entry>, jobs: &mut Vec<Job>) -> bool {
        let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
        let stop = match self.materialise(pending, false) {
            Ok(()) => {
                apply_quota(self.conn, self.quota, &mut self.applied_quota);
                let _ = self.set_synchronous(true);
                let stop = commit_group(self.conn, jobs, &mut completions);
                let _ = self.set_synchronous(false);
                stop
            }
            Err(error) => {
                let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
                for job in jobs.drain(..) {
                    completions.extend(completion(job, Err(error.clone())));
                }
                stop
            }
        };
        for done in completions {
            done.deliver();
        }
        if stop {
            // Leave the tables durable so that the log can be emptied.
            let _ = self.materialise(pending, true);
        }
        stop
    }
}

fn set_applied_seq(conn: &Connection, seq: u64) -> Result<(), StoreError> {
    let seq = i64::try_from(seq).map_err(|_| StoreError::Backend {
        message: "journal log sequence number out of range".to_owned(),
    })?;
    conn.prepare_cached("UPDATE journal_log SET applied_seq = ?1 WHERE id = 1")?
        .execute([seq])?;
    Ok(())
}

/// The last sequence number the tables hold (0 for a new database).
pub(crate) fn applied_seq(conn: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = conn.query_row(
        "SELECT applied_seq FROM journal_log WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        what: "journal_log",
        value: seq.to_string(),
    })
}

/// The fast path: one transaction, a purchase's row inserted once with what later entries of
/// the batch did to it (its outcome, a state change, a refund total).
fn apply_batch(conn: &Connection, entries: &[Entry], last: u64) -> Result<(), StoreError> {
    begin(conn)?;
    let result = fold_and_write(conn, entries).and_then(|()| set_applied_seq(conn, last));
    let result = result.and_then(|()| Ok(conn.execute_batch("COMMIT")?));
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn fold_and_write(conn: &Connection, entries: &[Entry]) -> Result<(), StoreError> {
    // Rows inserted by this batch and not written yet, in insertion order.
    let mut held: Vec<TxnRow> = Vec::new();
    let held_index = |held: &[TxnRow], id: i64| held.iter().rposition(|row| row.id == id);
    let flush = |held: &mut Vec<TxnRow>| -> Result<(), StoreError> {
        for row in held.drain(..) {
            insert_txn(conn, &row)?;
        }
        Ok(())
    };
    for record in entries.iter().flat_map(|e| e.records.iter()) {
        match record {
            Record::InsertTxn(row) => {
                // A row referring to a held one (a void, a refund) needs it in the table first.
                if row
                    .original_id
                    .is_some_and(|o| held_index(&held, o).is_some())
                {
                    flush(&mut held)?;
                }
                held.push(TxnRow::clone(row));
            }
            Record::Outcome(o) => match held_index(&held, o.id).and_then(|i| held.get_mut(i)) {
                Some(row) => write_outcome_to(row, o),
                None => write_record(conn, record)?,
            },
            Record::State { id, state } => {
                match held_index(&held, *id).and_then(|i| held.get_mut(i)) {
                    Some(row) => row.state = *state,
                    None => write_record(conn, record)?,
                }
            }
            Record::Refunded { id, refunded_fen } => {
                match held_index(&held, *id).and_then(|i| held.get_mut(i)) {
                    Some(row) => row.refunded_fen = *refunded_fen,
                    None => write_record(conn, record)?,
                }
            }
            // The timeline has no reference to enforce: its order among rows does not matter.
            Record::Event(_) => write_record(conn, record)?,
            _ => {
                flush(&mut held)?;
                write_record(conn, record)?;
            }
        }
    }
    flush(&mut held)
}

/// What `write_outcome` (sqlite.rs) does, to a row not yet written.
fn write_outcome_to(row: &mut TxnRow, o: &Outcome) {
    if row.state != TxnState::Reversed {
        row.state = o.state;
    }
    row.response_code = Some(o.response_code.clone());
    row.auth_code.clone_from(&o.auth_code);
    row.settlement_date.clone_from(&o.settlement_date);
    row.issuer_answered_at_ms = o.issuer_answered_at_ms;
    row.answered_at_ms = Some(o.answered_at_ms);
}

/// The slow path, after the fast one failed: each entry in a savepoint of its own. An entry the
/// tables refuse by a rule is kept in `journal_rejects`; any other failure (no space, I/O)
/// fails the batch, which stays pending.
pub(crate) fn apply_carefully(
    conn: &Connection,
    entries: &[Entry],
    last: u64,
) -> Result<(), StoreError> {
    let began = begin(conn);
    began.clone()?;
    let result = (|| {
        for entry in entries {
            let written = in_savepoint(conn, &began, |c| {
                for record in &entry.records {
                    write_record(c, record)?;
                }
                Ok(())
            });
            match written {
                Ok(()) => {}
                Err(error @ (StoreError::Constraint { .. } | StoreError::Corrupt { .. }))
                    if !conn.is_autocommit() =>
                {
                    reject(conn, entry, &error)?;
                }
                Err(error) => return Err(error),
            }
        }
        set_applied_seq(conn, last)?;
        Ok(conn.execute_batch("COMMIT")?)
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn reject(conn: &Connection, entry: &Entry, error: &StoreError) -> Result<(), StoreError> {
    let mut encoded = Vec::new();
    encode_entry(&mut encoded, entry.seq, &entry.records)?;
    let seq = i64::try_from(entry.seq).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO journal_rejects (seq, at_ms, error, entry) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (seq) DO NOTHING",
    )?
    .execute(params![seq, now_ms(), error.to_string(), encoded])?;
    Ok(())
}

/// Replays the log's entries past what the tables hold, durably, at start. Returns the last
/// sequence number the tables then hold.
pub(crate) fn replay(conn: &Connection, entries: Vec<Entry>) -> Result<u64, StoreError> {
    let applied = applied_seq(conn)?;
    let mut pending = Vec::new();
    for (expected, entry) in (applied + 1..).zip(entries.into_iter().filter(|e| e.seq > applied)) {
        if entry.seq != expected {
            return Err(StoreError::Corrupt {
                what: "journal log",
                value: format!("entry {expected} missing (next found: {})", entry.seq),
            });
        }
        pending.push(entry);
    }
    let Some(last) = pending.last().map(|e| e.seq) else {
        return Ok(applied);
    };
    for chunk in pending.chunks(APPLY_BATCH_MAX) {
        let chunk_last = chunk.last().map_or(last, |e| e.seq);
        apply_carefully(conn, chunk, chunk_last)?;
    }
    Ok(last)
}
