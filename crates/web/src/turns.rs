//! Blocking work the HTTP side must not run on its runtime's two workers (a password hash, a
//! transaction search that may read 100,000 rows), taken a few at a time in turn on the
//! blocking pool; the queue for a turn is first come, first served.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Runs `work` on a blocking thread once one of `turns` is free; answered 503 `busy` with
/// `busy` as its message when none frees within `wait`. The turn is held by the blocking work
/// itself, so a caller that goes away does not free it early. A panic in `work` is answered as
/// an internal error without its words (they may quote what the work read), and logged as no
/// more than that it panicked (the process's panic hook still prints the panic itself).
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
        tracing::error!(
            panicked = error.is_panic(),
            "blocking work of a request stopped"
        );
        ApiError::internal("the request's work stopped part-way")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_ONCE: usize = 2;
    static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);

    /// Work held on every turn keeps the next waiting, then busy; the runtime's one worker is
    /// not held by it (a plain task runs meanwhile), and a turn given back is taken.
    #[test]
    fn work_runs_in_turn_off_the_runtimes_workers() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let wait = Duration::from_secs(10);
            let release = std::sync::Arc::new(std::sync::Barrier::new(AT_ONCE + 1));
            let mut held = Vec::new();
            for _ in 0..AT_ONCE {
                let release = std::sync::Arc::clone(&release);
                held.push(tokio::spawn(on_turn_within(
                    &TURNS,
                    wait,
                    "busy",
                    move || {
                        release.wait();
                    },
                )));
            }
            while TURNS.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
            // The one worker is free while the turns' work runs.
            assert_eq!(tokio::spawn(async { 7 }).await.unwrap(), 7);
            let short = Duration::from_millis(50);
            let error = on_turn_within(&TURNS, short, "busy", || ())
                .await
                .unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            );
            tokio::task::spawn_blocking(move || release.wait())
                .await
                .unwrap();
            for h in held {
                h.await.unwrap().unwrap();
            }
            assert_eq!(on_turn_within(&TURNS, wait, "busy", || 3).await.unwrap(), 3);
            // A panic in the work is an internal error whose words are not in the answer.
            let error = on_turn_within(&TURNS, wait, "busy", || panic!("card 6222020200112233446"))
                .await
                .unwrap_err();
            assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(!error.message.contains("6222"), "{}", error.message);
        });
    }
}
