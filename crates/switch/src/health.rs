//! Terminal health the frames carry: the header's application type and software version, the
//! terminal's clock (fields 12/13) against the host's, and its chip-to-magstripe fallbacks (60.5
//! = 2); held per terminal, written on change.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use domain::date::days_from_civil;
use iso8583::{Field60, Frame, Mti};
use store::{Record, TerminalHealthRow};

use crate::clock::LocalTime;
use crate::core::Core;

/// Drift changes smaller than this are not written: terminal clocks tick in seconds and requests
/// take time, so a few seconds either way is noise, not news.
pub(crate) const DRIFT_CHANGE_MAX_S: i64 = 30;

const CST_OFFSET_S: i64 = 8 * 3_600;

/// What each terminal last reported, and whether the store has it yet.
#[derive(Default)]
pub(crate) struct HealthSeen(Mutex<HashMap<String, (TerminalHealthRow, bool)>>);

impl HealthSeen {
    /// Starts from what the store holds, so the fallback count carries on across restarts.
    pub(crate) fn load(rows: Vec<TerminalHealthRow>) -> Self {
        Self(Mutex::new(
            rows.into_iter()
                .map(|r| (r.tid.clone(), (r, true)))
                .collect(),
        ))
    }
}

/// Seconds the terminal's local time (12 hhmmss, 13 MMDD) is ahead of the host's China time at
/// `now_ms`; negative when behind. The terminal sends no year: the year putting its date nearest
/// the host's is taken, so 1231 seen on the host's 1 January is the day before, not next year.
pub fn clock_drift_s(hhmmss: u64, mmdd: u64, now_ms: i64) -> Option<i64> {
    let part = |v: u64| i64::try_from(v % 100).ok();
    let (hour, minute, second) = (part(hhmmss / 10_000)?, part(hhmmss / 100)?, part(hhmmss)?);
    let month = u8::try_from(mmdd / 100).ok()?;
    let day = u8::try_from(mmdd % 100).ok()?;
    if hhmmss > 235_959
        || minute > 59
        || second > 59
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let host_s = now_ms.div_euclid(1_000) + CST_OFFSET_S;
    let host = LocalTime::from_ms(now_ms);
    let in_day = hour * 3_600 + minute * 60 + second;
    [host.year - 1, host.year, host.year + 1]
        .into_iter()
        .map(|year| days_from_civil(year, month, day) * 86_400 + in_day - host_s)
        .min_by_key(|drift| drift.abs())
}

impl Core {
    /// Notes what a request's frame says of its terminal's health; writes only on a change
    /// (software version, drift by more than [`DRIFT_CHANGE_MAX_S`], or a fallback), or when
    /// the last change could not be written, so a request costs a map look-up. Called for
    /// frames the terminal proved it sent (a verified MAC) and for its sign-ins, so nobody
    /// else can write a terminal's health or count fallbacks against it.
    pub(crate) async fn note_health(&self, tid: &str, frame: &Frame<'_>) {
        let Some(row) = self.health_change(tid, frame) else {
            return;
        };
        // Within `journal_wait` like the request's own writes: a journal that hangs answers
        // the terminal 96 in time rather than holding it here.
        match self
            .persist_within(vec![Record::TerminalHealth(row.clone())])
            .await
        {
            Ok(()) => {
                let mut map = self.health.0.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((held, written)) = map.get_mut(tid) {
                    // Unless a later request has moved it on meanwhile.
                    if *held == row {
                        *written = true;
                    }
                }
            }
            Err(error) => tracing::warn!(%tid, %error, "cannot record terminal health"),
        }
    }

    /// The health row `frame` makes of terminal `tid`'s, held at once (not yet written), if it
    /// is news; `None` if not.
    fn health_change(&self, tid: &str, frame: &Frame<'_>) -> Option<TerminalHealthRow> {
        let header = frame.head.header;
        let now_ms = self.clock.now_ms();
        let drift = match (frame.message.number(12), frame.message.number(13)) {
            (Some(time), Some(date)) => clock_drift_s(time, date, now_ms),
            _ => None,
        };
        // Only card requests count: a reversal repeats its original's field 60.
        let fallback = matches!(frame.message.mti(), Mti::AUTHORISATION | Mti::FINANCIAL)
            && frame
                .message
                .field60()
                .ok()
                .flatten()
                .and_then(|f| f.ic_condition)
                == Some(Field60::IC_FALLBACK);
        // Read, count and hold under one lock: two requests at once count two fallbacks.
        let mut map = self.health.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (seen, written) = match map.get(tid) {
            Some((row, written)) => (Some(row.clone()), *written),
            None => (None, true),
        };
        let row = TerminalHealthRow {
            tid: tid.to_owned(),
            application_type: u32::from(header.application_type()),
            software_version: u32::from(header.software_version()),
            sub_version: header.sub_version(),
            // A request without 12/13 says nothing of the clock: keep what was known.
            clock_drift_s: drift.or(seen.as_ref().and_then(|s| s.clock_drift_s)),
            seen_at_ms: now_ms,
            fallbacks: seen
                .as_ref()
                .map_or(0, |s| s.fallbacks)
                .saturating_add(u32::from(fallback)),
        };
        let changed = fallback
            || !written
            || match &seen {
                None => true,
                Some(old) => {
                    (old.application_type, old.software_version, old.sub_version)
                        != (row.application_type, row.software_version, row.sub_version)
                        || match (old.clock_drift_s, row.clock_drift_s) {
                            (Some(a), Some(b)) => (a - b).abs() > DRIFT_CHANGE_MAX_S,
                            (a, b) => a.is_some() != b.is_some(),
                        }
                }
            };
        if !changed {
            return None;
        }
        // Held at once, marked written once it is: a failed write is tried again at the
        // terminal's next request.
        map.insert(row.tid.clone(), (row.clone(), false));
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_against_china_time_and_across_new_year() {
        // 2026-11-23 06:02:11 UTC is 14:02:11 in Beijing.
        let now = 1_795_413_731_000;
        assert_eq!(clock_drift_s(141_211, 1123, now), Some(600));
        assert_eq!(clock_drift_s(135_211, 1123, now), Some(-600));
        assert_eq!(clock_drift_s(140_211, 1124, now), Some(86_400));
        assert_eq!(clock_drift_s(240_000, 1123, now), None);
        assert_eq!(clock_drift_s(140_211, 1323, now), None);
        // Host 2027-01-01 00:00:30 Beijing (2026-12-31 16:00:30 UTC); terminal 23:59:50 on 1231.
        let new_year = (days_from_civil(2026, 12, 31) * 86_400 + 16 * 3_600 + 30) * 1_000;
        assert_eq!(clock_drift_s(235_950, 1231, new_year), Some(-40));
        // And the other way: host on 31 December, terminal already in January.
        let eve = (days_from_civil(2026, 12, 31) * 86_400 + 15 * 3_600 + 59 * 60) * 1_000;
        assert_eq!(clock_drift_s(100, 101, eve), Some(120));
    }
}
