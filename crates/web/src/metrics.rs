//! `/metrics` in the Prometheus text format and `/healthz`: the switch's own counters (requests
//! by type and response code, latency histograms, in flight, SAF depth, issuer links) when this
//! process runs a switch, the store's view otherwise, and the web layer's HTTP counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use store::SafState;

use crate::Web;

/// Latency bucket bounds of the HTTP histogram, in milliseconds.
const HTTP_BUCKETS_MS: [u64; 9] = [1, 2, 5, 10, 25, 50, 100, 250, 1000];
/// Bounds of the switch latency buckets exported, in microseconds.
const SWITCH_BUCKETS_US: [u64; 10] = [
    500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 2_000_000,
];
/// Distinct (route, status) series kept at most; unknown paths share one label so a scanner
/// cannot grow the map.
const HTTP_SERIES_MAX: usize = 512;

/// The switch's latest snapshot. The switch's handle stays with its owner (it stops the switch);
/// the owner refreshes this cell, e.g. once a second, and `/metrics` reads it.
#[derive(Default)]
pub struct SwitchMetricsCell {
    latest: Mutex<Option<switch::MetricsSnapshot>>,
}

impl SwitchMetricsCell {
    pub fn set(&self, snapshot: switch::MetricsSnapshot) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(snapshot);
        }
    }

    pub fn get(&self) -> Option<switch::MetricsSnapshot> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }
}

/// The web layer's own counters.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Per bucket of [`HTTP_BUCKETS_MS`], then +Inf; with the sum in µs (a request of 1.9 ms
    /// is not in the 1 ms bucket).
    latency: Mutex<([u64; 10], u64)>,
    in_flight: AtomicI64,
    /// Audit rows of changes made that the journal has not taken yet, tried again in the
    /// background (`auth::audit`), by a key of their own.
    audit_pending: Mutex<(u64, BTreeMap<u64, store::web::AuditRow>)>,
    /// Work run to its end whatever its request does (`Web::run_to_end`), under way.
    run_to_end: std::sync::atomic::AtomicUsize,
    /// Audit rows given up on after `auth::AUDIT_RETRY_FOR_MS` or at a stop (logged whole
    /// instead).
    pub(crate) audit_rows_lost: std::sync::atomic::AtomicU64,
}

/// One piece of work `Web::run_to_end` runs, counted while it lives.
pub(crate) struct Running(Arc<HttpMetrics>);

impl Running {
    pub(crate) fn new(metrics: Arc<HttpMetrics>) -> Running {
        metrics.run_to_end.fetch_add(1, Ordering::AcqRel);
        Running(metrics)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.run_to_end.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HttpMetrics {
    /// The audit rows still to write, and the last key given.
    fn audit_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, store::web::AuditRow>)> {
        self.audit_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Work `Web::run_to_end` runs now.
    pub(crate) fn running(&self) -> usize {
        self.run_to_end.load(Ordering::Acquire)
    }

    /// Keeps `row` among those still to write; returns its key.
    pub(crate) fn audit_pending_add(&self, row: store::web::AuditRow) -> u64 {
        let mut pending = self.audit_pending();
        pending.0 += 1;
        let key = pending.0;
        pending.1.insert(key, row);
        key
    }

    /// Takes the row under `key` out of those still to write (`None`: taken already).
    pub(crate) fn audit_pending_take(&self, key: u64) -> Option<store::web::AuditRow> {
        self.audit_pending().1.remove(&key)
    }

    /// Whether the row under `key` is still to write.
    pub(crate) fn audit_pending_has(&self, key: u64) -> bool {
        self.audit_pending().1.contains_key(&key)
    }

    /// Takes every row still to write.
    pub(crate) fn audit_pending_take_all(&self) -> Vec<store::web::AuditRow> {
        let mut pending = self.audit_pending();
        std::mem::take(&mut pending.1).into_values().collect()
    }

    fn audit_pending_count(&self) -> usize {
        self.audit_pending().1.len()
    }
}

/// Counts every request: its route template (never the raw path), status and time taken.
pub async fn track(State(web): State<Web>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    web.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    web.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = response.status().as_u16();
    if let Ok(mut map) = web.metrics.requests.lock() {
        let key = if map.len() < HTTP_SERIES_MAX || map.contains_key(&(route.clone(), status)) {
            (route, status)
        } else {
            ("overflow".to_owned(), status)
        };
        *map.entry(key).or_insert(0) += 1;
    }
    if let Ok(mut latency) = web.metrics.latency.lock() {
        let index = HTTP_BUCKETS_MS
            .iter()
            .position(|bound| us <= bound * 1_000)
            .unwrap_or(HTTP_BUCKETS_MS.len());
        if let Some(slot) = latency.0.get_mut(index) {
            *slot += 1;
        }
        latency.1 = latency.1.saturating_add(us);
    }
    response
}

pub fn router() -> Router<Web> {
    Router::new().route("/metrics", get(metrics))
}

pub fn health_router() -> Router<Web> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz(State(web): State<Web>) -> Response {
    match web.store.merchants() {
        Ok(_) => "ok\n".into_response(),
        // Public: the journal's own words stay in the log.
        Err(e) => {
            tracing::warn!(error = %e, "health check: the journal cannot be read");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "journal unavailable\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(web): State<Web>) -> Response {
    // Its counts are store reads: off the runtime's workers, which on a node's metrics
    // listener are the switch's.
    match tokio::task::spawn_blocking(move || render(&web)).await {
        Ok(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(web: &Web) -> String {
    let mut out = String::new();
    if let Some(snapshot) = web.switch_metrics.as_ref().and_then(|cell| cell.get()) {
        render_switch(&mut out, &snapshot);
    } else {
        render_store(&mut out, web);
    }
    render_standing(&mut out, web);
    render_http(&mut out, web);
    out
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &switch::HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for bound in SWITCH_BUCKETS_US {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {}",
            seconds(bound),
            h.count_le(bound)
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", seconds(h.sum_us));
    let _ = writeln!(out, "{name}_count {}", h.count);
}

fn seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn render_switch(out: &mut String, m: &switch::MetricsSnapshot) {
    out.push_str("# HELP shoudan_requests_total Terminal requests by type and response code.\n");
    out.push_str("# TYPE shoudan_requests_total counter\n");
    for r in &m.requests {
        let _ = writeln!(
            out,
            "shoudan_requests_total{{type=\"{}\",code=\"{}\"}} {}",
            label(r.kind),
            label(&r.response_code),
            r.count
        );
    }
    render_histogram(
        out,
        "shoudan_request_duration_seconds",
        "From a whole frame read to its response ready.",
        &m.total_latency,
    );
    render_histogram(
        out,
        "shoudan_switch_duration_seconds",
        "Request time minus the time waiting on issuers.",
        &m.switch_latency,
    );
    let gauges = [
        (
            "shoudan_in_flight",
            "Terminal requests being handled.",
            Some(m.in_flight),
        ),
        (
            "shoudan_in_flight_max",
            "Bound on requests in flight.",
            Some(m.in_flight_max),
        ),
        (
            "shoudan_connections",
            "Terminal connections open.",
            Some(m.connections),
        ),
        (
            "shoudan_saf_depth",
            "Reversals waiting for an issuer.",
            m.saf_depth,
        ),
        (
            "shoudan_journal_late_writes",
            "Journal writes answered 96 after journal_wait, not yet settled.",
            Some(m.journal_late_writes),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
    let counters = [
        (
            "shoudan_refused_overload_total",
            "Requests refused at a bound (96).",
            m.refused_overload,
        ),
        (
            "shoudan_malformed_frames_total",
            "Frames too long, truncated or undecodable.",
            m.malformed_frames,
        ),
        (
            "shoudan_silent_connections_closed_total",
            "New terminal connections closed for starting no frame within the first-frame timeout.",
            m.silent_closed,
        ),
        (
            "shoudan_unread_connections_closed_total",
            "Terminal connections closed because their answers were not read.",
            m.unread_closed,
        ),
        (
            "shoudan_answers_undelivered_total",
            "Answers to handled requests never written to their terminal connection (the terminal reverses).",
            m.answers_undelivered,
        ),
        (
            "shoudan_journal_waits_exceeded_total",
            "Journal writes or reads of requests not answered within journal_wait (96).",
            m.journal_waits_exceeded,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out.push_str("# HELP shoudan_issuer_up Issuer link connected (1) or not (0).\n");
    out.push_str("# TYPE shoudan_issuer_up gauge\n");
    for i in &m.issuers {
        let _ = writeln!(
            out,
            "shoudan_issuer_up{{bank=\"{}\"}} {}",
            label(&i.bank),
            u8::from(i.connected)
        );
    }
    out.push_str(
        "# HELP shoudan_issuer_breaker_open Issuer breaker open (1): answered 91 at once.\n",
    );
    out.push_str("# TYPE shoudan_issuer_breaker_open gauge\n");
    for i in &m.issuers {
        let _ = writeln!(
            out,
            "shoudan_issuer_breaker_open{{bank=\"{}\"}} {}",
            label(&i.bank),
            u8::from(i.breaker_open)
        );
    }
}

/// Without a switch in this process: today's journal by kind and code, and the SAF depth (the
/// switch's own counts when it runs here).
fn render_store(out: &mut String, web: &Web) {
    let start = crate::query::cst_day_start(web.clock.now_ms());
    let date = crate::query::format_date(start).replace('-', "");
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    // Counted as the rows are read, not held: a busy day is a million of them.
    let counted = web.store.each_txn_since(&date, &mut |r| {
        let code = r.response_code.unwrap_or_default();
        *counts
            .entry((r.kind.as_str().to_owned(), code))
            .or_insert(0) += 1;
    });
    if counted.is_err() {
        counts.clear();
    }
    out.push_str(
        "# HELP shoudan_requests_total Journalled requests of today by type and response code.\n",
    );
    out.push_str("# TYPE shoudan_requests_total counter\n");
    for ((kind, code), n) in counts {
        let _ = writeln!(
            out,
            "shoudan_requests_total{{type=\"{}\",code=\"{}\"}} {n}",
            label(&kind),
            label(&code)
        );
    }
    if let Ok(pending) = web.store.count_reversals_in_state(SafState::Pending) {
        let _ = writeln!(
            out,
            "# HELP shoudan_saf_depth Reversals waiting for an issuer.\n# TYPE shoudan_saf_depth gauge\nshoudan_saf_depth {pending}",
        );
    }
}

/// What stands in the journal for someone to act on, with a switch in this process or not
/// (a node's `/metrics` comes from its switch, and these are not the switch's counts).
fn render_standing(out: &mut String, web: &Web) {
    // Each counted in the database: a scrape reads no rows, however many an outage queued.
    if let Ok(stuck) = web
        .store
        .count_reversals_attempted(SafState::Pending, crate::query::REVERSAL_STUCK_ATTEMPTS)
    {
        let _ = writeln!(
            out,
            "# HELP shoudan_saf_stuck Reversals resent {} times or more and not acknowledged (the console lists them).\n# TYPE shoudan_saf_stuck gauge\nshoudan_saf_stuck {stuck}",
            crate::query::REVERSAL_STUCK_ATTEMPTS,
        );
    }
    // `settlement::is_stuck`, counted in the database.
    let stuck_since_ms = web
        .clock
        .now_ms()
        .saturating_sub(settlement::PAYOUT_STUCK_AFTER_MS);
    if let Ok(stuck) = web
        .store
        .count_payouts_failing_since(domain::PayoutFailure::BankSystemError.key(), stuck_since_ms)
    {
        let _ = writeln!(
            out,
            "# HELP shoudan_payouts_stuck Payouts the receiving bank has answered with system errors for {} hours or more since their first attempt (still retried; the console lists them).\n# TYPE shoudan_payouts_stuck gauge\nshoudan_payouts_stuck {stuck}",
            settlement::PAYOUT_STUCK_AFTER_MS / 3_600_000,
        );
    }
    if let Ok(standing) = web.store.count_reversals_refused_standing() {
        let _ = writeln!(
            out,
            "# HELP shoudan_saf_refused Reversals an issuer refused other than with 25 (the console lists them).\n# TYPE shoudan_saf_refused gauge\nshoudan_saf_refused {standing}",
        );
    }
}

fn render_http(out: &mut String, web: &Web) {
    out.push_str("# HELP shoudan_http_requests_total Web requests by route and status.\n");
    out.push_str("# TYPE shoudan_http_requests_total counter\n");
    if let Ok(map) = web.metrics.requests.lock() {
        for ((route, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "shoudan_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }
    if let Ok(latency) = web.metrics.latency.lock() {
        out.push_str("# HELP shoudan_http_duration_seconds Web request latency.\n");
        out.push_str("# TYPE shoudan_http_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in HTTP_BUCKETS_MS.iter().enumerate() {
            cumulative += latency.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "shoudan_http_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                seconds(bound * 1000)
            );
        }
        let total: u64 = latency.0.iter().sum();
        let _ = writeln!(
            out,
            "shoudan_http_duration_seconds_bucket{{le=\"+Inf\"}} {total}\nshoudan_http_duration_seconds_sum {}\nshoudan_http_duration_seconds_count {total}",
            seconds(latency.1)
        );
    }
    let _ = writeln!(
        out,
        "# HELP shoudan_http_in_flight Web requests being served.\n# TYPE shoudan_http_in_flight gauge\nshoudan_http_in_flight {}",
        web.metrics.in_flight.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP shoudan_audit_rows_pending Audit rows of changes made that the journal has not taken yet (tried again in the background; logged meanwhile).\n# TYPE shoudan_audit_rows_pending gauge\nshoudan_audit_rows_pending {}",
        web.metrics.audit_pending_count()
    );
    let _ = writeln!(
        out,
        "# HELP shoudan_audit_rows_lost_total Audit rows given up on after 15 minutes of tries, or at a stop (each logged whole at error level).\n# TYPE shoudan_audit_rows_lost_total counter\nshoudan_audit_rows_lost_total {}",
        web.metrics.audit_rows_lost.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The switch's journal waits reach the exposition: the counter and the gauge.
    #[test]
    fn the_switch_exposition_counts_journal_waits_exceeded() {
        let snapshot = switch::MetricsSnapshot {
            journal_waits_exceeded: 7,
            journal_late_writes: 2,
            ..switch::MetricsSnapshot::default()
        };
        let mut out = String::new();
        render_switch(&mut out, &snapshot);
        assert!(
            out.contains(
                "# TYPE shoudan_journal_waits_exceeded_total counter\n\
                 shoudan_journal_waits_exceeded_total 7\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "# TYPE shoudan_journal_late_writes gauge\nshoudan_journal_late_writes 2\n"
            ),
            "{out}"
        );
    }
}
