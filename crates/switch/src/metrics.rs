//! What the switch counts about itself: requests by type and response code, total and
//! switch-added latency (time at the issuer excluded), requests in flight and refused, store and
//! forward depth, issuer link state. Recording is lock-free but for the per-code counters;
//! [`SwitchHandle::metrics`](crate::SwitchHandle::metrics) takes a [`MetricsSnapshot`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Latencies above this are counted in the last bucket (about 18 minutes: nothing real waits
/// that long, and it bounds the bucket array).
pub const LATENCY_US_MAX: u64 = (1 << LATENCY_BITS_MAX) - 1;
/// Sub-buckets per power of two: 16 gives every recorded value within 1/16 (6 %) of its bucket.
const SUB_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
const LATENCY_BITS_MAX: u32 = 30;
const BUCKETS: usize = SUB_BUCKETS + (LATENCY_BITS_MAX - SUB_BITS) as usize * SUB_BUCKETS;
/// Distinct (type, response code) pairs counted; codes are two characters from the wire, so a
/// terminal sending junk cannot grow the map without bound.
pub const REQUEST_KINDS_MAX: usize = 1_024;

const _: () = assert!(LATENCY_BITS_MAX > SUB_BITS && LATENCY_BITS_MAX < 63);

/// What one request's handling noted about itself while it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestMeter {
    /// Microseconds spent waiting on issuers.
    pub issuer_us: u64,
    /// The response code of the last reply built.
    pub response_code: Option<[u8; 2]>,
}

tokio::task_local! {
    /// The current request's meter: the session sets it per request, the issuer link and the
    /// reply builder add to it.
    static METER: Cell<RequestMeter>;
}

/// Runs the handler `make` makes for one request, returning its result and what it noted. The
/// handler is made inside the scope, not handed in made: a future handed to an async fn is
/// held twice over in its state (as the argument, then as the value awaited), and a request's
/// handler is several KiB, copied whole into the task's box per request.
pub(crate) async fn measure_request<F: Future>(
    make: impl FnOnce() -> F,
) -> (F::Output, RequestMeter) {
    METER
        .scope(Cell::new(RequestMeter::default()), async move {
            let out = make().await;
            (out, METER.with(Cell::get))
        })
        .await
}

/// Adds time spent waiting on an issuer to the current request, if it is being measured (the
/// store-and-forward loop's exchanges are not).
pub(crate) fn add_issuer_time(waited: Duration) {
    let us = duration_us(waited);
    let _ = METER.try_with(|cell| {
        let mut meter = cell.get();
        meter.issuer_us = meter.issuer_us.saturating_add(us);
        cell.set(meter);
    });
}

/// Notes the response code of a reply being built for the current request.
pub(crate) fn note_response_code(code: [u8; 2]) {
    let _ = METER.try_with(|cell| {
        let mut meter = cell.get();
        meter.response_code = Some(code);
        cell.set(meter);
    });
}

pub(crate) fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn bucket_of(us: u64) -> usize {
    let us = us.min(LATENCY_US_MAX);
    if us < SUB_BUCKETS as u64 {
        return usize::try_from(us).unwrap_or(0);
    }
    let exp = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = usize::try_from((us >> shift) & (SUB_BUCKETS as u64 - 1)).unwrap_or(0);
    let group = usize::try_from(shift).unwrap_or(0);
    SUB_BUCKETS + group * SUB_BUCKETS + sub
}

/// The largest value that falls into bucket `index`.
fn bucket_upper_us(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let group = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
    let shift = u32::try_from(group).unwrap_or(0);
    let lower = ((SUB_BUCKETS + sub) as u64) << shift;
    lower + (1u64 << shift) - 1
}

/// A log-linear latency histogram in microseconds, recorded with atomics.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record_us(&self, us: u64) {
        if let Some(bucket) = self.buckets.get(bucket_of(us)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then(|| (bucket_upper_us(i), n))
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (largest value in the bucket in µs, values recorded in it), non-empty buckets only, in
    /// increasing order.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl HistogramSnapshot {
    /// The value at quantile `q` (0..=1), as its bucket's upper bound (within 6 %); `None`
    /// when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank is in 1..=total after the clamp.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(upper, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(upper.min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    /// What was recorded since `earlier`, a snapshot of the same histogram (the maximum
    /// stays the whole run's: an upper bound).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let before: HashMap<u64, u64> = earlier.buckets.iter().copied().collect();
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .filter_map(|&(upper, n)| {
                    let n = n.saturating_sub(before.get(&upper).copied().unwrap_or(0));
                    (n > 0).then_some((upper, n))
                })
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us: self.max_us,
        }
    }

    /// Values recorded at or below `le_us`, for cumulative (Prometheus `le`) buckets. Exact at
    /// bucket bounds; otherwise counts the buckets whose upper bound is at or below `le_us`.
    pub fn count_le(&self, le_us: u64) -> u64 {
        self.buckets
            .iter()
            .take_while(|(upper, _)| *upper <= le_us)
            .map(|(_, n)| n)
            .sum()
    }
}

/// One issuer link's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerLinkState {
    pub bank: String,
    pub connected: bool,
    /// The breaker is open: requests are answered 91 without being sent.
    pub breaker_open: bool,
    pub in_flight: u64,
}

/// Requests of one type answered with one response code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCount {
    /// `purchase`, `refund`, `sign_in`, `malformed`, ... (see [`RequestType`]).
    pub kind: &'static str,
    /// The two characters of field 39; empty when nothing was answered (undecodable frame).
    pub response_code: String,
    pub count: u64,
}

/// Everything the switch counts, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub requests: Vec<RequestCount>,
    /// From a whole frame read to its response ready to write.
    pub total_latency: HistogramSnapshot,
    /// The same minus the time spent waiting on issuers: what the switch itself adds.
    pub switch_latency: HistogramSnapshot,
    /// Terminal requests being handled now, and the bound above which they are refused.
    pub in_flight: u64,
    pub in_flight_max: u64,
    /// Requests answered at once with 96 because a bound was reached.
    pub refused_overload: u64,
    /// Terminal connections open now.
    pub connections: u64,
    /// Frames dropped or connections closed because a frame was too long, truncated or
    /// undecodable.
    pub malformed_frames: u64,
    /// New connections closed because they started no frame within the first-frame timeout.
    pub silent_closed: u64,
    /// Connections closed because their answers were not read (a refusal found the queue of
    /// answers full for a second).
    pub unread_closed: u64,
    /// Answers to handled requests (approvals among them) never written: queued or being
    /// written when their connection was given up or its write timed out, or not yet queued
    /// when it closed. Refusals are not counted. A terminal never told reverses.
    pub answers_undelivered: u64,
    /// Reversals waiting for an issuer's acknowledgement; `None` if the store could not say.
    pub saf_depth: Option<u64>,
    /// Journal writes and reads of requests not answered within `SwitchConfig::journal_wait`
    /// (each request answered 96), since start.
    pub journal_waits_exceeded: u64,
    /// Of those writes, the ones still awaiting their fate (`Core::late`).
    pub journal_late_writes: u64,
    pub issuers: Vec<IssuerLinkState>,
}

/// A request's type as the metrics name it.
pub type RequestType = &'static str;

/// The switch's counters; one per switch, shared by its tasks.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(RequestType, [u8; 2]), u64>>,
    pub(crate) total: Histogram,
    pub(crate) switch: Histogram,
    pub(crate) refused_overload: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) silent_closed: AtomicU64,
    pub(crate) unread_closed: AtomicU64,
    pub(crate) answers_undelivered: AtomicU64,
}

impl Metrics {
    /// Counts one answered request (`code` None: not answered).
    pub fn count(&self, kind: RequestType, code: Option<[u8; 2]>) {
        let mut map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, code.unwrap_or([b' ', b' ']));
        if let Some(n) = map.get_mut(&key) {
            *n += 1;
        } else if map.len() < REQUEST_KINDS_MAX {
            map.insert(key, 1);
        }
    }

    /// Records one handled request's latencies.
    pub fn latency(&self, total: Duration, issuer_us: u64) {
        let total_us = duration_us(total);
        self.total.record_us(total_us);
        self.switch.record_us(total_us.saturating_sub(issuer_us));
    }

    pub(crate) fn requests(&self) -> Vec<RequestCount> {
        let map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<RequestCount> = map
            .iter()
            .map(|(&(kind, code), &count)| RequestCount {
                kind,
                response_code: String::from_utf8_lossy(&code).trim().to_owned(),
                count,
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.response_code).cmp(&(b.kind, &b.response_code)));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn buckets_hold_their_values_within_a_sixteenth() {
        let mut previous_upper = None;
        for i in 0..BUCKETS {
            let upper = bucket_upper_us(i);
            if let Some(p) = previous_upper {
                assert!(upper > p, "bucket {i}");
            }
            previous_upper = Some(upper);
        }
        for us in (0..100_000u64).chain([LATENCY_US_MAX, LATENCY_US_MAX + 5, u64::MAX]) {
            let b = bucket_of(us);
            assert!(b < BUCKETS, "{us}");
            let upper = bucket_upper_us(b);
            let clamped = us.min(LATENCY_US_MAX);
            assert!(upper >= clamped, "{us} -> {upper}");
            assert!(upper - clamped <= clamped / 16, "{us} -> {upper}");
            if b > 0 {
                assert!(bucket_upper_us(b - 1) < clamped, "{us}");
            }
        }
    }

    #[test]
    fn quantiles_and_cumulative_counts() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile_us(0.99), None);
        for us in 1..=1000 {
            h.record_us(us);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.sum_us, 500_500);
        assert_eq!(s.max_us, 1000);
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((500..=532).contains(&p50), "{p50}");
        let p99 = s.quantile_us(0.99).unwrap();
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(s.quantile_us(1.0), Some(1000));
        assert_eq!(s.count_le(15), 15);
        for us in [2_000, 3_000] {
            h.record_us(us);
        }
        let later = h.snapshot().since(&s);
        assert_eq!(later.count, 2);
        assert_eq!(later.buckets.iter().map(|b| b.1).sum::<u64>(), 2);
        assert!((2_000..=2_125).contains(&later.quantile_us(0.5).unwrap()));
        assert_eq!(s.count_le(u64::MAX), 1000);
    }

    #[test]
    fn switch_latency_excludes_issuer_time() {
        let m = Metrics::default();
        m.latency(Duration::from_micros(5_000), 4_600);
        m.latency(Duration::from_micros(300), 0);
        let s = m.switch.snapshot();
        assert_eq!(s.sum_us, 700);
        assert_eq!(m.total.snapshot().sum_us, 5_300);
        m.count("purchase", Some(*b"00"));
        m.count("purchase", Some(*b"00"));
        m.count("malformed", None);
        let counts = m.requests();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[1].kind, "purchase");
        assert_eq!(counts[1].count, 2);
        assert_eq!(counts[0].response_code, "");
    }

    #[tokio::test]
    async fn issuer_time_is_added_only_inside_a_measured_request() {
        add_issuer_time(Duration::from_millis(5));
        note_response_code(*b"05");
        let ((), meter) = measure_request(|| async {
            add_issuer_time(Duration::from_micros(250));
            note_response_code(*b"91");
            add_issuer_time(Duration::from_micros(50));
            note_response_code(*b"00");
        })
        .await;
        assert_eq!(meter.issuer_us, 300);
        assert_eq!(meter.response_code, Some(*b"00"));
    }
}
