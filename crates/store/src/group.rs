//! The jobs a group-commit writer takes and the completions it hands back once its group's
//! commit is known; shared by the SQLite and PostgreSQL writers, which differ in how they
//! commit a group, not in what a group is.

use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::model::{Record, SafItem};

pub(crate) enum Job {
    Write {
        records: Vec<Record>,
        done: oneshot::Sender<Result<(), StoreError>>,
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

/// The result of one job, held until its group's commit is known.
pub(crate) enum Completion {
    Write(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
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
            Completion::Write(done, result) => drop(done.send(result)),
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
