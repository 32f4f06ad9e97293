//! Payer lookup for a merchant, never with a full PAN: by the keyed fingerprint of a card number
//! the operator types (computed in the HSM, never stored), by last four digits + amount + time
//! window, or by RRN; and repeat payers grouped by fingerprint ("this card paid here 7 times").
//! Every lookup is scoped to one merchant.

use std::collections::HashMap;
use std::ops::ControlFlow;

use domain::{IssuerDirectory, Pan};
use paycrypto::Hsm;
use serde::Serialize;
use store::{Store, TxnKind, TxnRow, TxnState};

use crate::ResolveError;
use crate::explain::TxnSummary;
use crate::text::date_time;

/// Transactions [`by_last4`] returns at most.
pub const LAST4_MATCHES_MAX: usize = 1_000;
/// Payers listed by [`repeat_payers`] at most.
pub const REPEAT_PAYERS_MAX: usize = 200;

fn summaries(directory: &IssuerDirectory, rows: &[TxnRow]) -> Vec<TxnSummary> {
    rows.iter().map(|r| TxnSummary::of(directory, r)).collect()
}

/// A merchant's transactions with the card the operator typed.
pub fn by_card(
    store: &dyn Store,
    hsm: &dyn Hsm,
    directory: &IssuerDirectory,
    mid: &str,
    pan: &Pan,
) -> Result<Vec<TxnSummary>, ResolveError> {
    let fingerprint = hsm.fingerprint(pan.expose_digits().as_bytes());
    let rows = store.txns_of_card_at(&fingerprint, mid)?;
    Ok(summaries(directory, &rows))
}

/// A merchant's transactions whose card ends in `last4`, received in `[from_ms, to_ms)`, of
/// `amount_fen` when given; oldest first, the newest [`LAST4_MATCHES_MAX`] when there are more.
pub fn by_last4(
    store: &dyn Store,
    directory: &IssuerDirectory,
    mid: &str,
    last4: &str,
    amount_fen: Option<i64>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<TxnSummary>, ResolveError> {
    let mut rows = Vec::new();
    store::each_txn_of_merchant(store, mid, from_ms, to_ms, |r| -> Result<_, ResolveError> {
        if r.pan.as_ref().is_some_and(|p| p.last4 == last4)
            && amount_fen.is_none_or(|a| a == r.amount_fen)
        {
            rows.push(r);
        }
        Ok(if rows.len() >= LAST4_MATCHES_MAX {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    rows.reverse();
    Ok(summaries(directory, &rows))
}

/// The merchant's transaction with this RRN.
pub fn by_rrn(
    store: &dyn Store,
    directory: &IssuerDirectory,
    mid: &str,
    rrn: &str,
) -> Result<Option<TxnSummary>, ResolveError> {
    Ok(store
        .txn_by_rrn(rrn.trim())?
        .filter(|r| r.mid == mid)
        .map(|r| TxnSummary::of(directory, &r)))
}

/// A card that paid the merchant more than once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepeatPayer {
    /// A short public reference to the card: the first 8 bytes of its keyed fingerprint in hex.
    /// It cannot be turned back into a card number.
    pub payer_ref: String,
    pub masked_pan: String,
    /// Approved payments (purchases and completions).
    pub payments: usize,
    pub total_fen: i64,
    pub first_at: String,
    pub last_at: String,
}

fn payer_ref(fingerprint: &[u8]) -> String {
    fingerprint
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cards with at least `min_payments` approved payments at the merchant in `[from_ms, to_ms)`,
/// most frequent first.
pub fn repeat_payers(
    store: &dyn Store,
    mid: &str,
    from_ms: i64,
    to_ms: i64,
    min_payments: usize,
) -> Result<Vec<RepeatPayer>, ResolveError> {
    let mut groups: HashMap<Vec<u8>, RepeatPayer> = HashMap::new();
    let mut times: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
    store::each_txn_of_merchant(
        store,
        mid,
        from_ms,
        to_ms,
        |row| -> Result<_, ResolveError> {
            let paid = matches!(row.kind, TxnKind::Purchase | TxnKind::Completion)
                && matches!(row.state, TxnState::Approved | TxnState::Completed);
            let Some(pan) = row
                .pan
                .as_ref()
                .filter(|p| paid && !p.fingerprint.is_empty())
            else {
                return Ok(ControlFlow::Continue(()));
            };
            let entry = groups
                .entry(pan.fingerprint.clone())
                .or_insert_with(|| RepeatPayer {
                    payer_ref: payer_ref(&pan.fingerprint),
                    masked_pan: pan.masked.clone(),
                    payments: 0,
                    total_fen: 0,
                    first_at: String::new(),
                    last_at: String::new(),
                });
            entry.payments += 1;
            entry.total_fen = entry
                .total_fen
                .saturating_add(row.amount_fen - row.refunded_fen);
            let span = times
                .entry(pan.fingerprint.clone())
                .or_insert((row.received_at_ms, row.received_at_ms));
            span.0 = span.0.min(row.received_at_ms);
            span.1 = span.1.max(row.received_at_ms);
            Ok(ControlFlow::Continue(()))
        },
    )?;
    let mut out: Vec<RepeatPayer> = groups
        .into_iter()
        .filter(|(_, p)| p.payments >= min_payments.max(2))
        .map(|(fingerprint, mut p)| {
            if let Some((first, last)) = times.get(&fingerprint) {
                p.first_at = date_time(*first);
                p.last_at = date_time(*last);
            }
            p
        })
        .collect();
    out.sort_by(|a, b| {
        b.payments
            .cmp(&a.payments)
            .then_with(|| a.payer_ref.cmp(&b.payer_ref))
    });
    out.truncate(REPEAT_PAYERS_MAX);
    Ok(out)
}
