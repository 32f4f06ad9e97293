//! The switch's spawned tasks, kept abortable when `SwitchConfig::abortable` is set, so that
//! `SwitchHandle::crash` can stop the switch as a `kill -9` would: every connection, request
//! and resend dropped where it stands. Off (the default) a spawn keeps nothing.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::task::{AbortHandle, JoinHandle};

/// Finished tasks are dropped from the list once it holds this many.
const PRUNE_AT: usize = 4_096;

pub(crate) struct Tasks {
    handles: Option<Mutex<Vec<AbortHandle>>>,
}

impl Tasks {
    pub fn new(abortable: bool) -> Self {
        Tasks {
            handles: abortable.then(|| Mutex::new(Vec::new())),
        }
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = tokio::spawn(future);
        if let Some(handles) = &self.handles {
            let mut handles = handles.lock().unwrap_or_else(PoisonError::into_inner);
            if handles.len() >= PRUNE_AT {
                handles.retain(|h| !h.is_finished());
            }
            handles.push(task.abort_handle());
        }
        task
    }

    /// Aborts every task spawned so far (none are kept unless abortable).
    pub fn abort_all(&self) {
        if let Some(handles) = &self.handles {
            let handles =
                std::mem::take(&mut *handles.lock().unwrap_or_else(PoisonError::into_inner));
            for handle in handles {
                handle.abort();
            }
        }
    }
}
