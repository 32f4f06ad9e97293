//! Time behind a trait, so a deterministic simulation can drive the switch. Host local time is
//! China Standard Time (UTC+8, no daylight saving), which fields 12, 13 and 15 carry.

use std::time::{SystemTime, UNIX_EPOCH};

use domain::date::{civil_from_days, days_from_civil};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

const MS_PER_DAY: i64 = 86_400_000;
const CST_OFFSET_MS: i64 = 8 * 3_600_000;

/// A moment in host local time, split the way the messages want it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Days since 1970-01-01 in local time, to compare days.
    pub day_number: i64,
}

impl LocalTime {
    pub fn from_ms(ms: i64) -> Self {
        let local = ms.saturating_add(CST_OFFSET_MS);
        let day_number = local.div_euclid(MS_PER_DAY);
        let in_day = local.rem_euclid(MS_PER_DAY) / 1_000;
        let (year, month, day) = civil_from_days(day_number);
        let narrow = |v: i64| u8::try_from(v).unwrap_or(0);
        LocalTime {
            year,
            month,
            day,
            hour: narrow(in_day / 3_600),
            minute: narrow(in_day / 60 % 60),
            second: narrow(in_day % 60),
            day_number,
        }
    }

    /// Field 13 / 15: MMDD.
    pub fn mmdd(&self) -> String {
        format!("{:02}{:02}", self.month, self.day)
    }

    /// Field 12: hhmmss.
    pub fn hhmmss(&self) -> String {
        format!("{:02}{:02}{:02}", self.hour, self.minute, self.second)
    }

    /// Clearing date: YYYYMMDD.
    pub fn yyyymmdd(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `14:02:11`, for timelines.
    pub fn clock_text(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// The MMDD of local day `day_number` (days since 1970-01-01 in local time) as a number
/// (`0529` → 529), as field 61 carries it.
pub fn mmdd_of_day(day_number: i64) -> u16 {
    let (_, month, day) = civil_from_days(day_number);
    u16::from(month) * 100 + u16::from(day)
}

/// Days since 1970-01-01 of a `YYYYMMDD` clearing date, for "within 30 days" checks.
pub fn day_number_of(yyyymmdd: &str) -> Option<i64> {
    let digits = yyyymmdd.as_bytes();
    if digits.len() != 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year: i64 = yyyymmdd.get(0..4)?.parse().ok()?;
    let month: i64 = yyyymmdd.get(4..6)?.parse().ok()?;
    let day: i64 = yyyymmdd.get(6..8)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let month = u8::try_from(month).ok()?;
    let day = u8::try_from(day).ok()?;
    Some(days_from_civil(year, month, day))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_is_utc_plus_8_and_dates_round_trip() {
        // 2026-11-23 06:02:11 UTC is 14:02:11 in Beijing.
        let ms = 1_795_413_731_000;
        let t = LocalTime::from_ms(ms);
        assert_eq!(
            (t.yyyymmdd(), t.hhmmss(), t.mmdd()),
            ("20261123".into(), "140211".into(), "1123".into())
        );
        assert_eq!(day_number_of("20261123"), Some(t.day_number));
        assert_eq!(day_number_of("19700101"), Some(0));
        assert_eq!(
            day_number_of("20240229").map(|d| LocalTime::from_ms(d * MS_PER_DAY).yyyymmdd()),
            Some("20240229".into())
        );
        assert_eq!(day_number_of("2024022"), None);
    }
}
