//! The issuer's calendar: business days, card expiry months and a clock that tests can drive.
//! Civil-date arithmetic comes from `domain::date`, so the decision logic counts days without a
//! date crate.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;
/// China Standard Time: the business day of a Chinese issuer turns at local midnight.
pub const CST_OFFSET_SECONDS: i64 = 8 * 3_600;

/// A calendar day (proleptic Gregorian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date")]
pub struct InvalidDate;

impl Date {
    pub fn new(year: i32, month: u8, day: u8) -> Result<Self, InvalidDate> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(InvalidDate);
        }
        Ok(Self { year, month, day })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn day(self) -> u8 {
        self.day
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        domain::date::days_from_civil(i64::from(self.year), self.month, self.day)
    }

    pub fn from_days_since_epoch(days: i64) -> Self {
        let (year, month, day) = domain::date::civil_from_days(days);
        Self {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month,
            day,
        }
    }

    pub fn add_days(self, days: i64) -> Self {
        Self::from_days_since_epoch(self.days_since_epoch() + days)
    }

    /// Whole days from `earlier` to `self`.
    pub fn days_after(self, earlier: Date) -> i64 {
        self.days_since_epoch() - earlier.days_since_epoch()
    }

    /// MMDD as carried in fields 13, 15 and 61.
    pub fn mmdd(self) -> String {
        format!("{:02}{:02}", self.month, self.day)
    }

    pub fn year_month(self) -> YearMonth {
        YearMonth {
            year: self.year,
            month: self.month,
        }
    }

    /// Parses `YYYY-MM-DD`, the form the ledger stores.
    pub fn parse_iso(text: &str) -> Result<Self, InvalidDate> {
        let mut parts = text.splitn(3, '-');
        let year = parts
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or(InvalidDate)?;
        let month = parts
            .next()
            .and_then(|p| p.parse::<u8>().ok())
            .ok_or(InvalidDate)?;
        let day = parts
            .next()
            .and_then(|p| p.parse::<u8>().ok())
            .ok_or(InvalidDate)?;
        Self::new(year, month, day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    domain::date::days_in_month(i64::from(year), month)
}

/// A card's expiry month; the card is good through the last day of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    year: i32,
    month: u8,
}

impl YearMonth {
    pub fn new(year: i32, month: u8) -> Result<Self, InvalidDate> {
        if !(1..=12).contains(&month) {
            return Err(InvalidDate);
        }
        Ok(Self { year, month })
    }

    /// For literals known to be valid months (fixtures); an invalid month becomes January.
    pub(crate) const fn known(year: i32, month: u8) -> Self {
        let month = if month >= 1 && month <= 12 { month } else { 1 };
        Self { year, month }
    }

    /// Parses the YYMM of field 14 (years 2000–2099).
    pub fn parse_yymm(text: &str) -> Result<Self, InvalidDate> {
        if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidDate);
        }
        let (yy, mm) = text.split_at_checked(2).ok_or(InvalidDate)?;
        let yy: i32 = yy.parse().map_err(|_| InvalidDate)?;
        let mm: u8 = mm.parse().map_err(|_| InvalidDate)?;
        Self::new(2000 + yy, mm)
    }

    pub fn yymm(self) -> String {
        format!("{:02}{:02}", self.year.rem_euclid(100), self.month)
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }
}

/// A local date and time of day, in the issuer's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub date: Date,
    /// Seconds since local midnight.
    pub second_of_day: u32,
    /// Milliseconds since the Unix epoch, for timestamps in the ledger.
    pub unix_ms: i64,
}

impl LocalTime {
    pub fn from_unix_ms(unix_ms: i64, offset_seconds: i64) -> Self {
        let local = unix_ms.div_euclid(1_000) + offset_seconds;
        let date = Date::from_days_since_epoch(local.div_euclid(SECONDS_PER_DAY));
        let second_of_day = u32::try_from(local.rem_euclid(SECONDS_PER_DAY)).unwrap_or(0);
        Self {
            date,
            second_of_day,
            unix_ms,
        }
    }

    pub fn minute_of_day(self) -> u16 {
        u16::try_from(self.second_of_day / 60).unwrap_or(0)
    }
}

/// Where the issuer reads the time: the system clock in service, a hand-set clock in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> LocalTime;
}

/// The wall clock, in China Standard Time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> LocalTime {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        LocalTime::from_unix_ms(unix_ms, CST_OFFSET_SECONDS)
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix_ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// Starts at the given local date and second of day (China Standard Time).
    pub fn at(date: Date, second_of_day: u32) -> Self {
        let local_seconds = date.days_since_epoch() * SECONDS_PER_DAY + i64::from(second_of_day);
        let unix_ms = (local_seconds - CST_OFFSET_SECONDS) * 1_000;
        Self {
            unix_ms: Arc::new(AtomicI64::new(unix_ms)),
        }
    }

    pub fn advance_seconds(&self, seconds: i64) {
        self.unix_ms.fetch_add(seconds * 1_000, Ordering::SeqCst);
    }

    pub fn advance_days(&self, days: i64) {
        self.advance_seconds(days * SECONDS_PER_DAY);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> LocalTime {
        LocalTime::from_unix_ms(self.unix_ms.load(Ordering::SeqCst), CST_OFFSET_SECONDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_four_centuries() {
        let start = Date::new(1900, 1, 1).unwrap().days_since_epoch();
        let mut previous: Option<Date> = None;
        for days in start..start + 146_097 {
            let date = Date::from_days_since_epoch(days);
            assert_eq!(date.days_since_epoch(), days);
            assert!(Date::new(date.year(), date.month(), date.day()).is_ok());
            if let Some(p) = previous {
                assert!(p < date);
            }
            previous = Some(date);
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days_since_epoch(), 11_017);
        assert_eq!(
            Date::new(2024, 2, 29).unwrap().add_days(1),
            Date::new(2024, 3, 1).unwrap()
        );
        assert!(Date::new(2023, 2, 29).is_err());
        assert_eq!(Date::parse_iso("2025-06-30").unwrap().mmdd(), "0630");
    }

    #[test]
    fn manual_clock_is_china_time() {
        let clock = ManualClock::at(Date::new(2025, 6, 30).unwrap(), 23 * 3_600 + 59 * 60);
        assert_eq!(clock.now().date, Date::new(2025, 6, 30).unwrap());
        assert_eq!(clock.now().minute_of_day(), 23 * 60 + 59);
        clock.advance_seconds(60);
        assert_eq!(clock.now().date, Date::new(2025, 7, 1).unwrap());
        assert_eq!(clock.now().second_of_day, 0);
    }

    #[test]
    fn expiry_parses_yymm() {
        let ym = YearMonth::parse_yymm("2912").unwrap();
        assert_eq!((ym.year(), ym.month()), (2029, 12));
        assert_eq!(ym.yymm(), "2912");
        assert!(YearMonth::parse_yymm("2913").is_err());
        assert!(YearMonth::parse_yymm("29x2").is_err());
        assert!(YearMonth::parse_yymm("291").is_err());
    }
}
