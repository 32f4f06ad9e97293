//! The jobs a group-commit writer takes and the completions it hands back once its group's
//! commit is known; shared by the SQLite and PostgreSQL writers, which differ in how they
//! commit a group, not in what a group is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::model::{Record, SafItem};
use crate::pending::{Durable, Pending};

pub(crate) enum Job {
    Write {
        records: Vec<Record>,
        done: WriteDone,
    },
    Reserve {
        counter: String,
        count: u64,
        done: oneshot::Sender<Result<u64, StoreError>>,
    },
    Claim {
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
        done: oneshot::Sender<Result<Vec<SafItem>, StoreError>>,
    },
    Stop,
}

/// Where a write's result goes, the stamp its events hold among the queued ones until it is
/// settled (delivered, or dropped undelivered), and its rider when it was submitted open.
pub(crate) struct WriteDone {
    sender: oneshot::Sender<Result<(), StoreError>>,
    _queued: Option<QueuedStamp>,
    rider: Option<Rider>,
}

impl WriteDone {
    pub(crate) fn new(
        sender: oneshot::Sender<Result<(), StoreError>>,
        queued: Option<QueuedStamp>,
    ) -> Self {
        WriteDone {
            sender,
            _queued: queued,
            rider: None,
        }
    }

    /// This write open to records added by `rider` until the writer takes it into a commit.
    pub(crate) fn with_rider(mut self, rider: Rider) -> Self {
        self.rider = Some(rider);
        self
    }

    pub(crate) fn rider(&self) -> Option<&Rider> {
        self.rider.as_ref()
    }

    fn send(self, result: Result<(), StoreError>) {
        if let Some(rider) = &self.rider {
            rider.settle(&result);
        }
        // A waiter that gave up (dropped its future) is no error of the writer's.
        let _ = self.sender.send(result);
    }
}

/// Records a submitter may still add to its queued write ([`crate::Store::submit_open`]) until
/// the writer takes that write into a commit. What is added is written in the same
/// transaction, after the group's jobs and just before its commit, in a savepoint of its own:
/// it lands with the write or not at all, and fails alone (its own result) without failing the
/// write; but on SQLite, one that fills the disk fails the writes of its transaction too, as a
/// job that fills it does (SQLite rolls the transaction back by itself). What must follow a
/// write whose submitter stopped waiting for it (the host's reversal of an approval the
/// terminal was answered 96 for) so lands with it, and no crash between two commits can leave
/// the write without it.
#[derive(Clone, Debug)]
pub struct Rider(Arc<Mutex<RiderSlot>>);

#[derive(Debug)]
struct RiderSlot {
    /// Taken into a commit, or settled: nothing more is added.
    sealed: bool,
    added: Option<Added>,
    /// The store's queued events, among which the added records' events are held too.
    events: Arc<QueuedEvents>,
}

#[derive(Debug)]
struct Added {
    records: Vec<Record>,
    done: oneshot::Sender<Result<(), StoreError>>,
    /// How the records went in the transaction under way, once run there.
    ran: Option<Result<(), StoreError>>,
    _queued: Option<QueuedStamp>,
}

impl Rider {
    /// A rider whose added events are held among `events` until settled.
    pub(crate) fn new(events: &Arc<QueuedEvents>) -> Self {
        Rider(Arc::new(Mutex::new(RiderSlot {
            sealed: false,
            added: None,
            events: Arc::clone(events),
        })))
    }

    /// Adds `records` to the write, to commit with it: resolves once that commit is known.
    /// Handed back when the writer has taken the write into a commit already (or records
    /// were added before): the caller must then wait for the write's own result.
    pub fn add(&self, records: Vec<Record>) -> Result<Durable, Vec<Record>> {
        let mut slot = self.lock();
        if slot.sealed || slot.added.is_some() {
            return Err(records);
        }
        let (done, pending) = Pending::new();
        let queued = slot.events.hold(&records);
        slot.added = Some(Added {
            records,
            done,
            ran: None,
            _queued: queued,
        });
        Ok(pending)
    }

    /// Closes the rider to additions as the writer takes its write into a commit, and gives
    /// what was added, to run there (again, when the group is run again).
    pub(crate) fn seal(&self) -> Option<Vec<Record>> {
        let mut slot = self.lock();
        slot.sealed = true;
        slot.added.as_ref().map(|added| added.records.clone())
    }

    /// How the added records went in the transaction under way.
    pub(crate) fn ran(&self, result: Result<(), StoreError>) {
        if let Some(added) = &mut self.lock().added {
            added.ran = Some(result);
        }
    }

    /// The write's result is known: so is the added records', which landed only if both did.
    fn settle(&self, write: &Result<(), StoreError>) {
        let mut slot = self.lock();
        slot.sealed = true;
        if let Some(added) = slot.added.take() {
            let result = write.clone().and_then(|()| {
                added.ran.unwrap_or_else(|| {
                    Err(StoreError::Backend {
                        message: "records added to a write were not written with it".to_owned(),
                    })
                })
            });
            let _ = added.done.send(result);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RiderSlot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Job {
    /// The rider of a write submitted open.
    pub(crate) fn rider(&self) -> Option<&Rider> {
        match self {
            Job::Write { done, .. } => done.rider(),
            _ => None,
        }
    }
}

/// Runs what was added to the riders of the writes a transaction holds, each in a savepoint
/// (`in_savepoint`, the backend's), after the transaction's jobs and just before its commit;
/// seals the others. Stops at a failure `again` says calls for the whole transaction to be run
/// again (a deadlock or a lock not granted on PostgreSQL, as for a job), and returns it: the
/// caller rolls back and runs the group again, riders included.
pub(crate) fn run_riders<'a, C>(
    conn: &C,
    riders: impl IntoIterator<Item = &'a Rider>,
    in_savepoint: impl Fn(&C, &[Record]) -> Result<(), StoreError>,
    again: impl Fn(&StoreError) -> bool,
) -> Result<(), StoreError> {
    for rider in riders {
        if let Some(records) = rider.seal() {
            let result = in_savepoint(conn, &records);
            if let Err(error) = &result
                && again(error)
            {
                return Err(error.clone());
            }
            rider.ran(result);
        }
    }
    Ok(())
}

/// The stamps (`at_ms`) of the events in this store's writes that are queued or being written
/// and not yet settled, each with how many writes hold it. A tailer reads the events by stamp,
/// and an event is stamped when it is made: one queued behind a stalled disk lands, stamped
/// then, long after its stamp's time, and a tailer that moved its cursor past that time in the
/// meantime would never read it ([`crate::Store::oldest_queued_event_ms`]).
#[derive(Debug, Default)]
pub(crate) struct QueuedEvents {
    stamps: Mutex<BTreeMap<i64, usize>>,
}

impl QueuedEvents {
    /// Holds the oldest stamp of `records`' events, if they have any, until the returned guard
    /// is dropped.
    pub(crate) fn hold(self: &Arc<Self>, records: &[Record]) -> Option<QueuedStamp> {
        let at_ms = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e.at_ms),
                _ => None,
            })
            .min()?;
        *self.lock().entry(at_ms).or_default() += 1;
        Some(QueuedStamp {
            events: Arc::clone(self),
            at_ms,
        })
    }

    /// The oldest stamp held.
    pub(crate) fn oldest(&self) -> Option<i64> {
        self.lock().keys().next().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, usize>> {
        self.stamps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One write's hold on a stamp among the [`QueuedEvents`]; let go when dropped.
#[derive(Debug)]
pub(crate) struct QueuedStamp {
    events: Arc<QueuedEvents>,
    at_ms: i64,
}

impl Drop for QueuedStamp {
    fn drop(&mut self) {
        let mut stamps = self.events.lock();
        if let Some(count) = stamps.get_mut(&self.at_ms) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                stamps.remove(&self.at_ms);
            }
        }
    }
}

/// The result of one job, held until its group's commit is known.
pub(crate) enum Completion {
    Write(WriteDone, Result<(), StoreError>),
    Reserve(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
    Claim(
        oneshot::Sender<Result<Vec<SafItem>, StoreError>>,
        Result<Vec<SafItem>, StoreError>,
    ),
}

impl Completion {
    pub(crate) fn fail(self, error: StoreError) -> Self {
        match self {
            Completion::Write(done, _) => Completion::Write(done, Err(error)),
            Completion::Reserve(done, _) => Completion::Reserve(done, Err(error)),
            Completion::Claim(done, _) => Completion::Claim(done, Err(error)),
        }
    }

    pub(crate) fn deliver(self) {
        // A waiter that gave up (dropped its future) is no error of the writer's.
        match self {
            Completion::Write(done, result) => done.send(result),
            Completion::Reserve(done, result) => drop(done.send(result)),
            Completion::Claim(done, result) => drop(done.send(result)),
        }
    }
}

/// What a job produced, before its group's commit.
pub(crate) enum Output {
    Unit,
    Counter(u64),
    Claimed(Vec<SafItem>),
}

/// The completion of a job from what it produced (`None` for a stop, which no one awaits).
pub(crate) fn completion(job: Job, result: Result<Output, StoreError>) -> Option<Completion> {
    let mismatch = || StoreError::Backend {
        message: "job produced the wrong kind of result".to_owned(),
    };
    Some(match job {
        Job::Write { done, .. } => Completion::Write(done, result.map(|_| ())),
        Job::Reserve { done, .. } => Completion::Reserve(
            done,
            result.and_then(|o| match o {
                Output::Counter(first) => Ok(first),
                Output::Unit | Output::Claimed(_) => Err(mismatch()),
            }),
        ),
        Job::Claim { done, .. } => Completion::Claim(
            done,
            result.and_then(|o| match o {
                Output::Claimed(items) => Ok(items),
                Output::Unit | Output::Counter(_) => Err(mismatch()),
            }),
        ),
        Job::Stop => return None,
    })
}

/// Fails a completion that had succeeded, when its group's commit failed after all.
pub(crate) fn replace_with_failure(completion: &mut Completion, error: &StoreError) {
    // Swap in a cheap placeholder to take ownership of the sender, then put the failure back.
    let (placeholder, _) = oneshot::channel();
    let placeholder = WriteDone::new(placeholder, None);
    let taken = std::mem::replace(completion, Completion::Write(placeholder, Ok(())));
    *completion = taken.fail(error.clone());
}

/// A write whose changed-row count the caller does not read. The PostgreSQL writer sends a
/// group's statements pipelined and takes one changed row for granted from `execute`, running
/// the group again when a count differs (the caller may have acted on it); a count nobody reads
/// cannot have changed what the code did, so `execute_any` accepts whatever count comes back. A
/// write that rightly changes no row or several (a queueing `ON CONFLICT DO NOTHING`, an upsert
/// with a condition, a `DELETE` of what may not be there) then costs no second run. On SQLite,
/// `execute` with its count dropped. The rule in the shared SQL code: `execute` where the count
/// is read, `execute_any` where it is not.
pub(crate) trait ExecuteAny<P> {
    type Error;
    fn execute_any(&mut self, params: P) -> Result<(), Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventRow;

    fn event(at_ms: i64) -> Record {
        Record::Event(EventRow {
            txn_id: 1,
            at_ms,
            kind: "approved".into(),
            detail: String::new(),
        })
    }

    /// A write holds its events' oldest stamp until it is settled; two writes of one stamp
    /// hold it until both are; a write without events holds nothing.
    #[test]
    fn queued_events_hold_their_oldest_stamp_until_settled() {
        let queued = Arc::new(QueuedEvents::default());
        assert!(
            queued
                .hold(&[Record::Batch {
                    tid: "t".into(),
                    batch_no: 2
                }])
                .is_none()
        );
        let first = queued.hold(&[event(30), event(20)]);
        let second = queued.hold(&[event(20)]);
        let later = queued.hold(&[event(40)]);
        assert_eq!(queued.oldest(), Some(20));
        drop(first);
        assert_eq!(queued.oldest(), Some(20));
        drop(second);
        assert_eq!(queued.oldest(), Some(40));
        drop(later);
        assert_eq!(queued.oldest(), None);
    }
}
