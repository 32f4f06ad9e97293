//! Faults an issuer host can be told to show at run time: added latency, dropped responses,
//! closed links, 96 answers and maintenance. One handle per issuer, cheap to clone and to
//! consult on every request (atomics only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::issuer::Issuer;

/// Fractions are kept in parts per million.
const PPM: u64 = 1_000_000;
/// Longest latency a fault may add; keeps a typo from parking requests for hours.
pub const LATENCY_MAX_MS: u64 = 120_000;

/// What the server should do with one request, decided when it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Close the link instead of answering (the request is not processed).
    pub disconnect: bool,
    /// Answer 96 without processing.
    pub fail: bool,
    /// Process, then send nothing: the switch never learns the outcome and must reverse.
    pub drop: bool,
    pub delay: Duration,
}

/// Counts of what the faults did, for tests and the demo's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub requests: u64,
    pub dropped: u64,
    pub failed: u64,
    pub disconnects: u64,
    pub delayed: u64,
}

#[derive(Debug)]
struct State {
    latency_min_ms: AtomicU64,
    latency_max_ms: AtomicU64,
    drop_ppm: AtomicU32,
    drop_next: AtomicU64,
    fail_ppm: AtomicU32,
    fail_next: AtomicU64,
    disconnect_next: AtomicU64,
    /// Bumped to close every open link now.
    disconnect_epoch: watch::Sender<u64>,
    rng: AtomicU64,
    requests: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    disconnects: AtomicU64,
    delayed: AtomicU64,
}

/// Switches faults of one issuer host on and off while it runs.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    state: Arc<State>,
    issuer: Arc<Issuer>,
}

/// Takes one from a countdown if it is above zero.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn to_ppm(fraction: f64) -> u32 {
    let clamped = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    // In 0..=1_000_000 after the clamp, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ppm = (clamped * 1_000_000.0).round() as u32;
    ppm
}

impl FaultHandle {
    /// No faults; `seed` makes the random choices (drop fraction, latency spread) repeatable.
    pub fn new(issuer: Arc<Issuer>, seed: u64) -> Self {
        let (disconnect_epoch, _) = watch::channel(0);
        let state = State {
            latency_min_ms: AtomicU64::new(0),
            latency_max_ms: AtomicU64::new(0),
            drop_ppm: AtomicU32::new(0),
            drop_next: AtomicU64::new(0),
            fail_ppm: AtomicU32::new(0),
            fail_next: AtomicU64::new(0),
            disconnect_next: AtomicU64::new(0),
            disconnect_epoch,
            rng: AtomicU64::new(seed),
            requests: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        };
        Self {
            state: Arc::new(state),
            issuer,
        }
    }

    /// Every reply waits between `min` and `max` (uniformly), so replies overtake each other.
    pub fn set_latency(&self, min: Duration, max: Duration) {
        let ms = |d: Duration| {
            u64::try_from(d.as_millis())
                .unwrap_or(u64::MAX)
                .min(LATENCY_MAX_MS)
        };
        let (min, max) = (ms(min), ms(max));
        self.state
            .latency_min_ms
            .store(min.min(max), Ordering::Relaxed);
        self.state
            .latency_max_ms
            .store(max.max(min), Ordering::Relaxed);
    }

    /// Process but never answer this fraction (0.0–1.0) of requests.
    pub fn drop_fraction(&self, fraction: f64) {
        self.state
            .drop_ppm
            .store(to_ppm(fraction), Ordering::Relaxed);
    }

    /// Process but never answer the next `n` requests.
    pub fn drop_next(&self, n: u64) {
        self.state.drop_next.store(n, Ordering::Relaxed);
    }

    /// Answer 96, without processing, to this fraction of requests.
    pub fn fail_fraction(&self, fraction: f64) {
        self.state
            .fail_ppm
            .store(to_ppm(fraction), Ordering::Relaxed);
    }

    /// Answer 96, without processing, to the next `n` requests.
    pub fn fail_next(&self, n: u64) {
        self.state.fail_next.store(n, Ordering::Relaxed);
    }

    /// Close the link when each of the next `n` requests arrives, leaving it unprocessed.
    pub fn disconnect_next(&self, n: u64) {
        self.state.disconnect_next.store(n, Ordering::Relaxed);
    }

    /// Close every open link now. Requests being processed are lost with their replies.
    pub fn disconnect_all(&self) {
        self.state
            .disconnect_epoch
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
    }

    /// Issuer in maintenance: everything is answered 91 until switched off.
    pub fn set_maintenance(&self, on: bool) {
        self.issuer.set_maintenance(on);
    }

    /// Every fault off (maintenance too).
    pub fn clear(&self) {
        self.set_latency(Duration::ZERO, Duration::ZERO);
        self.drop_fraction(0.0);
        self.drop_next(0);
        self.fail_fraction(0.0);
        self.fail_next(0);
        self.disconnect_next(0);
        self.set_maintenance(false);
    }

    pub fn stats(&self) -> FaultStats {
        let s = &self.state;
        FaultStats {
            requests: s.requests.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            disconnects: s.disconnects.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn disconnects(&self) -> watch::Receiver<u64> {
        self.state.disconnect_epoch.subscribe()
    }

    pub(crate) fn count_disconnect(&self) {
        self.state.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// SplitMix64 over a shared counter: lock-free, repeatable for a given order of requests.
    fn random(&self) -> u64 {
        let mut z = self
            .state
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&self, ppm: &AtomicU32) -> bool {
        let ppm = u64::from(ppm.load(Ordering::Relaxed));
        ppm > 0 && self.random() % PPM < ppm
    }

    /// Decides what happens to the request that just arrived.
    pub(crate) fn plan(&self) -> Plan {
        let s = &self.state;
        s.requests.fetch_add(1, Ordering::Relaxed);
        if take_one(&s.disconnect_next) {
            return Plan {
                disconnect: true,
                fail: false,
                drop: false,
                delay: Duration::ZERO,
            };
        }
        let fail = take_one(&s.fail_next) || self.chance(&s.fail_ppm);
        let drop = !fail && (take_one(&s.drop_next) || self.chance(&s.drop_ppm));
        let (min, max) = (
            s.latency_min_ms.load(Ordering::Relaxed),
            s.latency_max_ms.load(Ordering::Relaxed),
        );
        let delay_ms = if max > min {
            min + self.random() % (max - min + 1)
        } else {
            min
        };
        if fail {
            s.failed.fetch_add(1, Ordering::Relaxed);
        }
        if drop {
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if delay_ms > 0 {
            s.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Plan {
            disconnect: false,
            fail,
            drop,
            delay: Duration::from_millis(delay_ms),
        }
    }
}
