//! Amounts of money in integer fen (分, CNY minor units), never floats.
//! Owns parsing from an operator's "12.34" and from the wire's n12 digits, and checked arithmetic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount of CNY in fen.
///
/// Unsigned on purpose: an amount on the wire (field 4, n12) and in a double-entry ledger is never
/// negative — direction lives in the debit/credit side (as in TigerBeetle), so a negative `Money`
/// could only be a bug. A subtraction that would go below zero returns `None` and the caller must
/// decide what that means. `u64` fen holds 1.8 × 10^17 yuan, far beyond n12's 10^10 yuan.
///
/// Serialised as the integer number of fen: unambiguous for any API client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

/// Why a text could not become [`Money`]. Carries positions, never the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount has a character that is not a digit at position {position}")]
    NotDigit { position: usize },
    #[error("amount needs digits before and after the decimal point")]
    MisplacedPoint,
    #[error("amount has more than two decimal places (fen is the smallest unit)")]
    TooManyDecimals,
    #[error("amount is too large")]
    Overflow,
    #[error("n12 amount must be exactly 12 digits, got {len}")]
    N12Length { len: usize },
    #[error("amount does not fit in 12 digits of fen")]
    N12TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount field 4 (n12) can carry: 9 999 999 999.99 yuan.
    pub const N12_MAX: Money = Money(999_999_999_999);

    pub const fn from_fen(fen: u64) -> Money {
        Money(fen)
    }

    pub const fn fen(self) -> u64 {
        self.0
    }

    /// Whole yuan, `None` on overflow.
    pub const fn from_yuan(yuan: u64) -> Option<Money> {
        match yuan.checked_mul(100) {
            Some(fen) => Some(Money(fen)),
            None => None,
        }
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.0.checked_add(other.0) {
            Some(fen) => Some(Money(fen)),
            None => None,
        }
    }

    /// `None` if `other` is larger than `self`: money does not go negative.
    pub const fn checked_sub(self, other: Money) -> Option<Money> {
        match self.0.checked_sub(other.0) {
            Some(fen) => Some(Money(fen)),
            None => None,
        }
    }

    /// Multiply by a count (e.g. quantity), `None` on overflow.
    pub const fn checked_mul(self, count: u64) -> Option<Money> {
        match self.0.checked_mul(count) {
            Some(fen) => Some(Money(fen)),
            None => None,
        }
    }

    /// Sum of many amounts, `None` on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Money>>(amounts: I) -> Option<Money> {
        amounts
            .into_iter()
            .try_fold(Money::ZERO, Money::checked_add)
    }

    /// Field 4 (and settlement totals in field 48): exactly 12 ASCII digits of fen.
    pub fn from_n12(digits: &[u8]) -> Result<Money, MoneyError> {
        if digits.len() != 12 {
            return Err(MoneyError::N12Length { len: digits.len() });
        }
        let mut fen: u64 = 0;
        for (position, &byte) in digits.iter().enumerate() {
            let digit = ascii_digit(byte).ok_or(MoneyError::NotDigit { position })?;
            // 12 digits never overflow u64; plain arithmetic is safe here.
            fen = fen * 10 + u64::from(digit);
        }
        Ok(Money(fen))
    }

    /// The 12 ASCII digits field 4 carries; fails above [`Money::N12_MAX`].
    pub fn to_n12(self) -> Result<[u8; 12], MoneyError> {
        if self > Money::N12_MAX {
            return Err(MoneyError::N12TooLarge);
        }
        let mut out = [b'0'; 12];
        let mut rest = self.0;
        for slot in out.iter_mut().rev() {
            // `rest % 10` is below 10, so the narrowing cannot lose anything.
            *slot = b'0' + u8::try_from(rest % 10).unwrap_or(0);
            rest /= 10;
        }
        Ok(out)
    }
}

fn ascii_digit(byte: u8) -> Option<u8> {
    byte.is_ascii_digit().then(|| byte - b'0')
}

/// Decimal yuan as an operator types it: `12`, `12.3`, `12.34`. No sign, no spaces, no exponent,
/// no thousands separators: anything else is an error, not a guess.
impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Money, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        if whole.is_empty() || fraction.is_some_and(str::is_empty) {
            return Err(MoneyError::MisplacedPoint);
        }
        let mut fen: u64 = 0;
        for (position, byte) in whole.bytes().enumerate() {
            let digit = ascii_digit(byte).ok_or(MoneyError::NotDigit { position })?;
            fen = fen
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(digit)))
                .ok_or(MoneyError::Overflow)?;
        }
        fen = fen.checked_mul(100).ok_or(MoneyError::Overflow)?;
        if let Some(fraction) = fraction {
            let mut scale = 10;
            for (offset, byte) in fraction.bytes().enumerate() {
                let position = whole.len() + 1 + offset;
                let digit = ascii_digit(byte).ok_or(MoneyError::NotDigit { position })?;
                if offset >= 2 {
                    return Err(MoneyError::TooManyDecimals);
                }
                fen = fen
                    .checked_add(u64::from(digit) * scale)
                    .ok_or(MoneyError::Overflow)?;
                scale /= 10;
            }
        }
        Ok(Money(fen))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

/// A signed amount of fen as yuan digits, the sign in front: `-12.34`. For figures that can be
/// negative (a net after refunds, a correction), where [`Money`] does not apply.
pub fn yuan_digits(fen: i64) -> String {
    signed_text(fen, "")
}

/// The same with the yuan sign, for sentences and receipts: `-¥12.34`.
pub fn yuan(fen: i64) -> String {
    signed_text(fen, "¥")
}

fn signed_text(fen: i64, symbol: &str) -> String {
    // The sign apart: -50 fen is "-0.50", which `fen / 100` (0) alone would lose.
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{symbol}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_yuan_text() {
        assert_eq!(yuan(12_345), "¥123.45");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(-50), "-¥0.50");
        assert_eq!(yuan(i64::MIN), "-¥92233720368547758.08");
        assert_eq!(yuan_digits(1234), "12.34");
        assert_eq!(yuan_digits(-5), "-0.05");
        assert_eq!(yuan_digits(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn parses_decimal_yuan() {
        assert_eq!("12.34".parse::<Money>(), Ok(Money::from_fen(1234)));
        assert_eq!("12.3".parse::<Money>(), Ok(Money::from_fen(1230)));
        assert_eq!("12".parse::<Money>(), Ok(Money::from_fen(1200)));
        assert_eq!("0.05".parse::<Money>(), Ok(Money::from_fen(5)));
        assert_eq!("007.00".parse::<Money>(), Ok(Money::from_fen(700)));
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        assert_eq!("".parse::<Money>(), Err(MoneyError::Empty));
        assert_eq!(
            "-1".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 0 })
        );
        assert_eq!(
            "+1".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 0 })
        );
        assert_eq!("1.234".parse::<Money>(), Err(MoneyError::TooManyDecimals));
        assert_eq!(".5".parse::<Money>(), Err(MoneyError::MisplacedPoint));
        assert_eq!("5.".parse::<Money>(), Err(MoneyError::MisplacedPoint));
        assert_eq!(
            "1.2.3".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 3 })
        );
        assert_eq!(
            "1,000".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 1 })
        );
        assert_eq!(
            "1e3".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 1 })
        );
        assert_eq!(
            " 1".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 0 })
        );
        assert_eq!(
            "1.x".parse::<Money>(),
            Err(MoneyError::NotDigit { position: 2 })
        );
        assert_eq!(
            "184467440737095517".parse::<Money>(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            "184467440737095516.16".parse::<Money>(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            "184467440737095516.15".parse::<Money>(),
            Ok(Money::from_fen(u64::MAX))
        );
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Money::from_fen(1234).to_string(), "12.34");
        assert_eq!(Money::from_fen(5).to_string(), "0.05");
        assert_eq!(Money::ZERO.to_string(), "0.00");
        assert_eq!(format!("{:?}", Money::from_fen(100)), "Money(1.00)");
        assert_eq!(
            Money::from_fen(u64::MAX).to_string(),
            "184467440737095516.15"
        );
    }

    #[test]
    fn n12_round_trip_and_limits() {
        assert_eq!(Money::from_n12(b"000000001234"), Ok(Money::from_fen(1234)));
        assert_eq!(Money::from_fen(1234).to_n12(), Ok(*b"000000001234"));
        assert_eq!(Money::N12_MAX.to_n12(), Ok(*b"999999999999"));
        assert_eq!(
            Money::from_fen(1_000_000_000_000).to_n12(),
            Err(MoneyError::N12TooLarge)
        );
        assert_eq!(
            Money::from_n12(b"12"),
            Err(MoneyError::N12Length { len: 2 })
        );
        assert_eq!(
            Money::from_n12(b"00000000123 "),
            Err(MoneyError::NotDigit { position: 11 })
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        let a = Money::from_fen(150);
        let b = Money::from_fen(100);
        assert_eq!(a.checked_add(b), Some(Money::from_fen(250)));
        assert_eq!(a.checked_sub(b), Some(Money::from_fen(50)));
        assert_eq!(b.checked_sub(a), None);
        assert_eq!(a.checked_mul(3), Some(Money::from_fen(450)));
        assert_eq!(
            Money::from_fen(u64::MAX).checked_add(Money::from_fen(1)),
            None
        );
        assert_eq!(Money::from_fen(u64::MAX).checked_mul(2), None);
        assert_eq!(Money::checked_sum([a, b, b]), Some(Money::from_fen(350)));
        assert_eq!(Money::checked_sum([Money::from_fen(u64::MAX), b]), None);
        assert_eq!(Money::from_yuan(3), Some(Money::from_fen(300)));
        assert_eq!(Money::from_yuan(u64::MAX), None);
    }

    #[test]
    fn serialises_as_integer_fen() {
        assert_eq!(
            serde_json::to_string(&Money::from_fen(1234))
                .ok()
                .as_deref(),
            Some("1234")
        );
        let back: Money = serde_json::from_str("1234").unwrap();
        assert_eq!(back, Money::from_fen(1234));
    }
}
