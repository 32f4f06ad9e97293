//! The future a writer's caller awaits: it resolves once the group commit holding its records is
//! on disk (or failed), so async callers wait for durability without blocking a thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::error::StoreError;

/// Resolves to the result of a queued write once it is durable.
#[must_use = "a write is only known durable once this resolves"]
#[derive(Debug)]
pub struct Pending<T> {
    receiver: oneshot::Receiver<Result<T, StoreError>>,
}

/// A queued write of records.
pub type Durable = Pending<()>;

impl<T> Pending<T> {
    pub(crate) fn new() -> (oneshot::Sender<Result<T, StoreError>>, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Pending { receiver })
    }

    /// Already resolved: for writes that need no disk (e.g. journaling disabled).
    pub fn ready(value: Result<T, StoreError>) -> Self {
        let (sender, pending) = Self::new();
        // The receiver is alive in `pending`, so the send cannot fail.
        let _ = sender.send(value);
        pending
    }

    /// Blocks the current thread until the write resolves; for code outside a runtime.
    pub fn wait(self) -> Result<T, StoreError> {
        self.receiver
            .blocking_recv()
            .unwrap_or(Err(StoreError::WriterGone))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(StoreError::WriterGone)))
    }
}
