//! Blocking work the HTTP side must not run on its runtime's two workers (a password hash, a
//! transaction search that may read 100,000 rows), taken a few at a time in turn on the
//! blocking pool; the queue for a turn is first come, first served.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Runs `work` on a blocking thread once one of `turns` is free; answered 503 `busy` with
/// `busy` as its message when none frees within `wait`. The turn is held by the blocking work
/// itself, so a caller that goes away does not free it early. A panic in `work` is logged and
/// answered as an internal error, its text kept out of the answer.
pub(crate) async fn on_turn_within<T: Send + 'static>(
    turns: &'static Semaphore,
    wait: Duration,
    busy: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let refused =
        || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", busy).zh("系统繁忙，请稍后重试");
    let turn = tokio::time::timeout(wait, turns.acquire())
        .await
        .map_err(|_| refused())?
        .map_err(|_| refused())?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "blocking work of a request stopped");
        ApiError::internal("the request's work stopped part-way")
    })
}
