//! Clearing dates as `YYYYMMDD` strings (the journal's spelling) and the day arithmetic payouts
//! need (T+n), over `domain::date`'s civil calendar.

use domain::date::{civil_from_days, days_from_civil};

/// Days since 1970-01-01 of a `YYYYMMDD` date; `None` for anything that is not one.
pub fn day_number(yyyymmdd: &str) -> Option<i64> {
    if yyyymmdd.len() != 8 || !yyyymmdd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = yyyymmdd.get(0..4)?.parse().ok()?;
    let month: u8 = yyyymmdd.get(4..6)?.parse().ok()?;
    let day: u8 = yyyymmdd.get(6..8)?.parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > domain::date::days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// The `YYYYMMDD` of a day number.
pub fn from_day_number(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}{month:02}{day:02}")
}

/// `date` plus `days` (negative goes back); `None` if `date` is not a date.
pub fn add_days(date: &str, days: i64) -> Option<String> {
    Some(from_day_number(day_number(date)?.checked_add(days)?))
}

/// Accepts `YYYYMMDD` or `YYYY-MM-DD` (what people type) and returns `YYYYMMDD`.
pub fn normalise(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| *c != '-').collect();
    day_number(&compact).map(|_| compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_arithmetic_crosses_months_and_leap_days() {
        assert_eq!(add_days("20240228", 1).as_deref(), Some("20240229"));
        assert_eq!(add_days("20241231", 1).as_deref(), Some("20250101"));
        assert_eq!(add_days("20250301", -1).as_deref(), Some("20250228"));
        assert_eq!(normalise("2026-11-23").as_deref(), Some("20261123"));
        assert_eq!(normalise("20261131"), None);
        assert_eq!(normalise("2026112"), None);
    }
}
