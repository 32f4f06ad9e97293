//! Civil-date arithmetic without a date crate: days since 1970-01-01 ↔ proleptic Gregorian
//! year, month and day. The switch and the issuers both count days (clearing dates, business
//! days, expiry), so the conversion lives here once.

/// Days since 1970-01-01 (negative before) of a civil date. `month` is taken as 1..=12 and `day`
/// as given: callers validate first (an out-of-range day simply counts on past the month's end).
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    // Shift the year to start in March so the leap day is the last day of the shifted year.
    let m = i64::from(month);
    let y = year - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31); the inverse of
/// [`days_from_civil`] for every valid date.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges above bound month to 1..=12 and day to 1..=31; the fallbacks are unreachable.
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// Gregorian leap year.
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1..=12) of `year`; 31 for anything else.
pub fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 28) + 1),
            (2024, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2100, 2, 28) + 1),
            (2100, 3, 1)
        );
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
    }

    /// Walks day by day across four centuries (one full 400-year cycle, with 1900 and 2100 not
    /// leap and 2000 leap) and checks each day is the successor of the previous one.
    #[test]
    fn successive_days_walk_the_calendar() {
        let start = days_from_civil(1900, 1, 1);
        let mut previous = civil_from_days(start - 1);
        assert_eq!(previous, (1899, 12, 31));
        for days in start..start + 146_097 {
            let date = civil_from_days(days);
            let (y, m, d) = previous;
            let expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(date, expected, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days);
            previous = date;
        }
        assert_eq!(previous, (2299, 12, 31));
    }

    proptest! {
        #[test]
        fn days_round_trip(days in -3_000_000_i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn dates_round_trip(y in -6_000_i64..10_000, m in 1_u8..=12, d in 1_u8..=31) {
            prop_assume!(d <= days_in_month(y, m));
            prop_assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
    }
}
