//! The switch's spawned tasks, kept abortable when `SwitchConfig::abortable` is set, so that
//! `SwitchHandle::crash` can stop the switch as a `kill -9` would: every connection, request
//! and resend dropped where it stands. Off (the default) a spawn keeps nothing.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::task::{AbortHandle, JoinHandle};

/// Finished tasks are dropped from the list once it holds this many, and then whenever it
/// has doubled since (so a switch with many live tasks does not sweep on every spawn).
const PRUNE_AT: usize = 4_096;

pub(crate) struct Tasks {
    /// The handles, and the length at which the next sweep runs.
    handles: Option<Mutex<(Vec<AbortHandle>, usize)>>,
}

impl Tasks {
    pub fn new(abortable: bool) -> Self {
        Tasks {
            handles: abortable.then(|| Mutex::new((Vec::new(), PRUNE_AT))),
        }
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = tokio::spawn(future);
        if let Some(handles) = &self.handles {
            let mut guard = handles.lock().unwrap_or_else(PoisonError::into_inner);
            let (list, sweep_at) = &mut *guard;
            if list.len() >= *sweep_at {
                list.retain(|h| !h.is_finished());
                *sweep_at = PRUNE_AT.max(list.len().saturating_mul(2));
            }
            list.push(task.abort_handle());
        }
        task
    }

    /// Aborts every task spawned so far (none are kept unless abortable).
    pub fn abort_all(&self) {
        if let Some(handles) = &self.handles {
            let list =
                std::mem::take(&mut handles.lock().unwrap_or_else(PoisonError::into_inner).0);
            for handle in list {
                handle.abort();
            }
        }
    }
}
