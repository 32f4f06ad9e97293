//! The double-entry ledger: accounts by name, postings whose legs sum to zero (checked when built
//! here and again when the store writes them), ids from the store's counter, and the audit.
//! Postings are never changed: a correction is a further posting.

use serde::Serialize;
use store::settlement::{LegRow, PostingRow, SettlementRecord};
use store::{Record, Store, StoreError};

/// Legs one posting may carry (the store refuses more).
pub const POSTING_LEGS_MAX: usize = 64;
/// The store counter posting ids come from.
pub const POSTING_COUNTER: &str = "ledger_posting";

/// Account names. Debits are positive: assets (receivables, the bank) carry positive balances,
/// liabilities (what is owed to merchants, in flight, held) and income negative ones.
pub mod accounts {
    /// What an issuer owes us for its cardholders' captures.
    pub fn issuer_receivable(issuer: &str) -> String {
        format!("{ISSUER_RECEIVABLE}{issuer}")
    }
    /// The prefix of [`issuer_receivable`]'s names, before the issuer.
    pub const ISSUER_RECEIVABLE: &str = "issuer_receivable:";
    /// What we owe a merchant, not yet paid out.
    pub fn merchant_payable(mid: &str) -> String {
        format!("merchant_payable:{mid}")
    }
    /// A payout instructed to the bank, not yet confirmed.
    pub fn payouts_in_flight(mid: &str) -> String {
        format!("payouts_in_flight:{mid}")
    }
    /// A merchant's money we could not pay out (permanent failure, returned payout).
    pub fn held(mid: &str) -> String {
        format!("held:{mid}")
    }
    /// Our merchant discount fees.
    pub const FEE_INCOME: &str = "fee_income";
    /// The acquirer's own settlement bank account, where payouts leave from.
    pub const BANK: &str = "bank:settlement";
}

/// Why a posting could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("posting {reference} does not balance (sum {sum} fen)")]
    Unbalanced { reference: String, sum: i64 },
    #[error("posting {reference} has {legs} legs (2 to {POSTING_LEGS_MAX})")]
    Legs { reference: String, legs: usize },
    #[error("amount overflow in posting {reference}")]
    Overflow { reference: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A balanced posting not yet given an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub kind: String,
    pub reference: String,
    pub value_date: String,
    pub legs: Vec<(String, i64)>,
}

impl Posting {
    /// A posting from legs; zero legs are dropped, and what is left must balance.
    pub fn new(
        kind: &str,
        reference: String,
        value_date: &str,
        legs: Vec<(String, i64)>,
    ) -> Result<Posting, LedgerError> {
        let legs: Vec<(String, i64)> = legs.into_iter().filter(|(_, a)| *a != 0).collect();
        if legs.len() < 2 || legs.len() > POSTING_LEGS_MAX {
            return Err(LedgerError::Legs {
                reference,
                legs: legs.len(),
            });
        }
        let Some(sum) = legs
            .iter()
            .try_fold(0i64, |acc, (_, a)| acc.checked_add(*a))
        else {
            return Err(LedgerError::Overflow { reference });
        };
        if sum != 0 {
            return Err(LedgerError::Unbalanced { reference, sum });
        }
        Ok(Posting {
            kind: kind.to_owned(),
            reference,
            value_date: value_date.to_owned(),
            legs,
        })
    }

    /// `amount` from `credit` to `debit`: the two-leg posting.
    pub fn transfer(
        kind: &str,
        reference: String,
        value_date: &str,
        debit: String,
        credit: String,
        amount_fen: i64,
    ) -> Result<Posting, LedgerError> {
        let negated = amount_fen
            .checked_neg()
            .ok_or_else(|| LedgerError::Overflow {
                reference: reference.clone(),
            })?;
        Posting::new(
            kind,
            reference,
            value_date,
            vec![(debit, amount_fen), (credit, negated)],
        )
    }

    pub fn into_row(self, id: i64, at_ms: i64) -> PostingRow {
        PostingRow {
            id,
            at_ms,
            value_date: self.value_date,
            kind: self.kind,
            reference: self.reference,
            legs: self
                .legs
                .into_iter()
                .map(|(account, amount_fen)| LegRow {
                    account,
                    amount_fen,
                })
                .collect(),
        }
    }
}

/// Reserves `count` consecutive posting ids and returns the first. Ids reserved for a
/// submission that then failed are not used again: ids are unique, not gapless.
pub fn reserve_posting_ids(store: &dyn Store, count: usize) -> Result<i64, LedgerError> {
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    let first = store.reserve(POSTING_COUNTER, count)?.wait()?;
    Ok(i64::try_from(first).map_err(|_| StoreError::Constraint {
        message: "posting counter overflow".to_owned(),
    })?)
}

/// Reserves ids for `postings` and turns them into one store record.
pub fn posting_record(
    store: &dyn Store,
    postings: Vec<Posting>,
    at_ms: i64,
) -> Result<Option<Record>, LedgerError> {
    if postings.is_empty() {
        return Ok(None);
    }
    let first = reserve_posting_ids(store, postings.len())?;
    let rows = postings
        .into_iter()
        .zip(first..)
        .map(|(p, id)| p.into_row(id, at_ms))
        .collect();
    Ok(Some(Record::Settlement(SettlementRecord::Postings(rows))))
}

/// Writes postings (and any records that must commit with them) atomically.
pub fn post(
    store: &dyn Store,
    postings: Vec<Posting>,
    mut with: Vec<Record>,
    at_ms: i64,
) -> Result<(), LedgerError> {
    if let Some(record) = posting_record(store, postings, at_ms)? {
        with.push(record);
    }
    if with.is_empty() {
        return Ok(());
    }
    store.submit(with)?.wait()?;
    Ok(())
}

/// The ledger as the store has it: balances, their sum, and any posting that does not balance.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerAudit {
    pub accounts: Vec<AccountBalance>,
    /// Sum of every balance: zero in a sound ledger.
    pub total_fen: i64,
    /// (posting id, sum of its legs) for every posting that does not balance.
    pub unbalanced: Vec<(i64, i64)>,
    pub balanced: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct AccountBalance {
    pub account: String,
    /// Debits positive.
    pub balance_fen: i64,
}

/// Reads every balance and checks both invariants over the whole store.
pub fn audit(store: &dyn Store) -> Result<LedgerAudit, StoreError> {
    let balances = store.ledger_balances()?;
    let total_fen = balances
        .iter()
        .fold(0i64, |acc, (_, b)| acc.saturating_add(*b));
    let unbalanced = store.unbalanced_postings()?;
    Ok(LedgerAudit {
        balanced: total_fen == 0 && unbalanced.is_empty(),
        accounts: balances
            .into_iter()
            .map(|(account, balance_fen)| AccountBalance {
                account,
                balance_fen,
            })
            .collect(),
        total_fen,
        unbalanced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_must_balance() {
        assert!(
            Posting::new(
                "x",
                "r".into(),
                "20261123",
                vec![("a".into(), 5), ("b".into(), -4)]
            )
            .is_err()
        );
        assert!(Posting::new("x", "r".into(), "20261123", vec![("a".into(), 5)]).is_err());
        assert!(Posting::transfer("x", "r".into(), "20261123", "a".into(), "b".into(), 0).is_err());
        let p = Posting::transfer("x", "r".into(), "20261123", "a".into(), "b".into(), 7).unwrap();
        assert_eq!(p.legs, vec![("a".to_owned(), 7), ("b".to_owned(), -7)]);
    }
}
