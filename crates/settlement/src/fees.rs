//! Fee plans: merchant discount rates by card class in basis points, with caps, computed per
//! transaction in integer fen, rounded half up (0.5 fen and more rounds to the next fen).
//!
//! Defaults (the common Chinese market rates since the 2016 fee reform): domestic debit 0.55 %
//! capped at 20 yuan per transaction, domestic credit 0.60 % uncapped, foreign cards 2.00 %
//! uncapped, QR payments 0.38 %. A void gives back exactly the fee of the capture it cancels; a
//! refund does not give the fee back (the usual acquirer terms: 退货不退手续费).

use serde::Serialize;
use store::settlement::SettlementTermsRow;

/// What a transaction's fee depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardClass {
    DomesticDebit,
    DomesticCredit,
    Foreign,
    Qr,
}

impl CardClass {
    pub const ALL: [CardClass; 4] = [
        CardClass::DomesticDebit,
        CardClass::DomesticCredit,
        CardClass::Foreign,
        CardClass::Qr,
    ];

    /// The spelling in clearing lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            CardClass::DomesticDebit => "debit",
            CardClass::DomesticCredit => "credit",
            CardClass::Foreign => "foreign",
            CardClass::Qr => "qr",
        }
    }

    pub fn parse(text: &str) -> Option<CardClass> {
        CardClass::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// Basis points are hundredths of a percent: 55 bp = 0.55 %.
const BP_PER_UNIT: i128 = 10_000;
/// Highest rate a plan may set (10 %); anything above is a typing error, not a plan.
pub const RATE_BP_MAX: i64 = 1_000;
/// Default T+1.
pub const PAYOUT_DELAY_DAYS_DEFAULT: u32 = 1;
/// Longest payout delay a plan may set.
pub const PAYOUT_DELAY_DAYS_MAX: u32 = 30;

/// A merchant's rates and caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FeePlan {
    pub debit_bp: i64,
    pub debit_cap_fen: Option<i64>,
    pub credit_bp: i64,
    pub credit_cap_fen: Option<i64>,
    pub foreign_bp: i64,
    pub qr_bp: i64,
    pub payout_delay_days: u32,
}

impl Default for FeePlan {
    fn default() -> Self {
        FeePlan {
            debit_bp: 55,
            debit_cap_fen: Some(2_000),
            credit_bp: 60,
            credit_cap_fen: None,
            foreign_bp: 200,
            qr_bp: 38,
            payout_delay_days: PAYOUT_DELAY_DAYS_DEFAULT,
        }
    }
}

/// Whether a plan's terms are ones to charge: every rate within `0..=RATE_BP_MAX`, no
/// negative cap, a payout delay of at most `PAYOUT_DELAY_DAYS_MAX` days. What is outside is a
/// typing error (55 bp typed 550), refused wherever a plan is set, rather than clamped when the
/// fees are computed.
pub fn check_terms(row: &SettlementTermsRow) -> Result<(), String> {
    let rates = [row.debit_bp, row.credit_bp, row.foreign_bp, row.qr_bp];
    let caps = [row.debit_cap_fen, row.credit_cap_fen];
    if rates.iter().any(|bp| !(0..=RATE_BP_MAX).contains(bp))
        || caps.iter().flatten().any(|cap| *cap < 0)
        || row.payout_delay_days > PAYOUT_DELAY_DAYS_MAX
    {
        return Err(format!(
            "rates 0..={RATE_BP_MAX} bp, caps not negative, payout delay at most \
             {PAYOUT_DELAY_DAYS_MAX} days"
        ));
    }
    Ok(())
}

impl FeePlan {
    /// The fee on a non-negative amount, in fen: `amount × rate`, rounded half up, then capped.
    pub fn fee(&self, class: CardClass, amount_fen: i64) -> i64 {
        let (bp, cap) = match class {
            CardClass::DomesticDebit => (self.debit_bp, self.debit_cap_fen),
            CardClass::DomesticCredit => (self.credit_bp, self.credit_cap_fen),
            CardClass::Foreign => (self.foreign_bp, None),
            CardClass::Qr => (self.qr_bp, None),
        };
        let amount = i128::from(amount_fen.max(0));
        let scaled = amount * i128::from(bp.clamp(0, RATE_BP_MAX));
        // Half up: add half the divisor before the (flooring, non-negative) division.
        let fee = (scaled + BP_PER_UNIT / 2) / BP_PER_UNIT;
        let fee = i64::try_from(fee).unwrap_or(i64::MAX);
        match cap {
            Some(cap) => fee.min(cap.max(0)),
            None => fee,
        }
    }

    pub fn from_row(row: &SettlementTermsRow) -> FeePlan {
        FeePlan {
            debit_bp: row.debit_bp,
            debit_cap_fen: row.debit_cap_fen,
            credit_bp: row.credit_bp,
            credit_cap_fen: row.credit_cap_fen,
            foreign_bp: row.foreign_bp,
            qr_bp: row.qr_bp,
            payout_delay_days: row.payout_delay_days.min(PAYOUT_DELAY_DAYS_MAX),
        }
    }

    pub fn to_row(&self, mid: &str, at_ms: i64) -> SettlementTermsRow {
        SettlementTermsRow {
            mid: mid.to_owned(),
            debit_bp: self.debit_bp,
            debit_cap_fen: self.debit_cap_fen,
            credit_bp: self.credit_bp,
            credit_cap_fen: self.credit_cap_fen,
            foreign_bp: self.foreign_bp,
            qr_bp: self.qr_bp,
            payout_delay_days: self.payout_delay_days,
            updated_at_ms: at_ms,
        }
    }
}

/// Why a fee plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum TermsError {
    #[error("rates must be 0 to {RATE_BP_MAX} basis points and caps not negative")]
    Rate,
    #[error("the payout delay must be 0 to {PAYOUT_DELAY_DAYS_MAX} days")]
    Delay,
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Sets a merchant's fee plan and payout delay (T+n), after checking them.
pub fn set_terms(
    store: &dyn store::Store,
    mid: &str,
    plan: &FeePlan,
    now_ms: i64,
) -> Result<(), TermsError> {
    let rates = [plan.debit_bp, plan.credit_bp, plan.foreign_bp, plan.qr_bp];
    if rates.iter().any(|r| !(0..=RATE_BP_MAX).contains(r))
        || [plan.debit_cap_fen, plan.credit_cap_fen]
            .iter()
            .flatten()
            .any(|c| *c < 0)
    {
        return Err(TermsError::Rate);
    }
    if plan.payout_delay_days > PAYOUT_DELAY_DAYS_MAX {
        return Err(TermsError::Delay);
    }
    store
        .submit(vec![store::Record::Settlement(
            store::settlement::SettlementRecord::Terms(plan.to_row(mid, now_ms)),
        )])?
        .wait()?;
    Ok(())
}

/// A merchant's plan: its own, or the default.
pub fn terms_of(store: &dyn store::Store, mid: &str) -> Result<FeePlan, store::StoreError> {
    Ok(store
        .settlement_terms(mid)?
        .map_or_else(FeePlan::default, |t| FeePlan::from_row(&t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_round_half_up_and_cap() {
        let plan = FeePlan::default();
        // 0.55 % of 100.00 yuan = 55 fen.
        assert_eq!(plan.fee(CardClass::DomesticDebit, 10_000), 55);
        // 0.55 % of 0.91 yuan = 0.5005 fen -> 1; of 0.90 yuan = 0.495 -> 0.
        assert_eq!(plan.fee(CardClass::DomesticDebit, 91), 1);
        assert_eq!(plan.fee(CardClass::DomesticDebit, 90), 0);
        // Exactly half a fen rounds up: 0.6 % of 0.75 yuan = 0.45 fen -> 0; of 2.50 = 1.5 -> 2.
        assert_eq!(plan.fee(CardClass::DomesticCredit, 75), 0);
        assert_eq!(plan.fee(CardClass::DomesticCredit, 250), 2);
        // Debit cap: 20 yuan from 3,636.37 yuan on.
        assert_eq!(plan.fee(CardClass::DomesticDebit, 1_000_000), 2_000);
        assert_eq!(plan.fee(CardClass::DomesticCredit, 1_000_000), 6_000);
        assert_eq!(plan.fee(CardClass::Qr, 10_000), 38);
        assert_eq!(plan.fee(CardClass::Foreign, 10_000), 200);
        assert_eq!(plan.fee(CardClass::Foreign, -5), 0);
    }
}
