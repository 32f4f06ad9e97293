//! One handle for a web layer: the read-side operations of this crate over shared `Arc`s, each
//! scoped to a merchant when given one (a merchant sees only its own data), timed by the clock.

use std::sync::Arc;

use domain::{IssuerDirectory, Pan};
use paycrypto::Hsm;
use store::Store;
use store::resolve::{DeliveryRow, OutboxRow};
use switch::Clock;

use crate::duplicates::{self, DuplicateFlag};
use crate::evidence::{self, Evidence};
use crate::explain::{self, Explanation, TxnSummary};
use crate::outbox;
use crate::payer::{self, RepeatPayer};
use crate::{ResolveError, duplicates::DUPLICATE_WINDOW_MS_DEFAULT};

/// Explain, evidence, payer lookup, duplicates and notification settings for one deployment.
#[derive(Clone)]
pub struct Resolver {
    pub store: Arc<dyn Store>,
    pub hsm: Arc<dyn Hsm>,
    pub directory: Arc<IssuerDirectory>,
    pub clock: Arc<dyn Clock>,
    /// Where merchants may point their webhooks (public addresses unless the operator says).
    pub webhook_destinations: crate::webhook::Destinations,
}

impl Resolver {
    pub fn new(
        store: Arc<dyn Store>,
        hsm: Arc<dyn Hsm>,
        directory: Arc<IssuerDirectory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Resolver {
            store,
            hsm,
            directory,
            clock,
            webhook_destinations: crate::webhook::Destinations::Public,
        }
    }

    /// The timeline and diagnosis of the transaction with this RRN (of `mid`, when given).
    pub fn explain(&self, rrn: &str, mid: Option<&str>) -> Result<Explanation, ResolveError> {
        let x = explain::explain_rrn(
            self.store.as_ref(),
            &self.directory,
            rrn,
            self.clock.now_ms(),
        )?;
        if mid.is_some_and(|m| m != x.txn.mid) {
            return Err(ResolveError::NotVisible("transaction"));
        }
        Ok(x)
    }

    /// The evidence package (`to_text` / `to_html`) of the transaction with this RRN.
    pub fn evidence(&self, rrn: &str, mid: Option<&str>) -> Result<Evidence, ResolveError> {
        evidence::evidence(
            self.store.as_ref(),
            &self.directory,
            rrn,
            mid,
            self.clock.now_ms(),
        )
    }

    pub fn payer_by_card(&self, mid: &str, pan: &Pan) -> Result<Vec<TxnSummary>, ResolveError> {
        payer::by_card(
            self.store.as_ref(),
            self.hsm.as_ref(),
            &self.directory,
            mid,
            pan,
        )
    }

    pub fn payer_by_last4(
        &self,
        mid: &str,
        last4: &str,
        amount_fen: Option<i64>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TxnSummary>, ResolveError> {
        payer::by_last4(
            self.store.as_ref(),
            &self.directory,
            mid,
            last4,
            amount_fen,
            from_ms,
            to_ms,
        )
    }

    pub fn payer_by_rrn(&self, mid: &str, rrn: &str) -> Result<Option<TxnSummary>, ResolveError> {
        payer::by_rrn(self.store.as_ref(), &self.directory, mid, rrn)
    }

    pub fn repeat_payers(
        &self,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
        min_payments: usize,
    ) -> Result<Vec<RepeatPayer>, ResolveError> {
        payer::repeat_payers(self.store.as_ref(), mid, from_ms, to_ms, min_payments)
    }

    /// Suspected duplicates flagged by the notification tailer, newest first: those whose
    /// second payment's id is below `before_id` (from the newest when `None`), at most `limit`.
    pub fn duplicates(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DuplicateFlag>, ResolveError> {
        duplicates::flagged(
            self.store.as_ref(),
            &self.directory,
            mid,
            (before_id, limit),
            self.clock.now_ms(),
        )
    }

    /// The flags raised at or after `since_ms`, the newest flagged first, at most `limit`,
    /// described.
    pub fn duplicates_flagged_since(
        &self,
        mid: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<DuplicateFlag>, ResolveError> {
        duplicates::flagged_since(
            self.store.as_ref(),
            &self.directory,
            mid,
            (since_ms, limit),
            self.clock.now_ms(),
        )
    }

    /// The suspected duplicates transaction `txn_id` of merchant `mid` is in, as the first
    /// payment or the second, oldest first.
    pub fn duplicates_of_txn(
        &self,
        mid: &str,
        txn_id: i64,
    ) -> Result<Vec<DuplicateFlag>, ResolveError> {
        let now_ms = self.clock.now_ms();
        let mut out = Vec::new();
        for row in self.store.duplicates_of_txn(txn_id)? {
            if row.mid != mid {
                continue;
            }
            let described =
                duplicates::describe(self.store.as_ref(), &self.directory, &row, now_ms)?;
            out.extend(described);
        }
        Ok(out)
    }

    /// Suspected duplicates found by scanning `[from_ms, to_ms)` with the default window.
    pub fn scan_duplicates(
        &self,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DuplicateFlag>, ResolveError> {
        let now_ms = self.clock.now_ms();
        let mut out = Vec::new();
        for row in duplicates::scan(
            self.store.as_ref(),
            mid,
            from_ms,
            to_ms,
            DUPLICATE_WINDOW_MS_DEFAULT,
        )? {
            if let Some(flag) =
                duplicates::describe(self.store.as_ref(), &self.directory, &row, now_ms)?
            {
                out.push(flag);
            }
        }
        Ok(out)
    }

    pub async fn set_webhook(
        &self,
        mid: &str,
        url: &str,
        secret: &[u8],
    ) -> Result<(), ResolveError> {
        outbox::set_endpoint(
            self.store.as_ref(),
            self.hsm.as_ref(),
            mid,
            url,
            secret,
            self.webhook_destinations,
        )
        .await
    }

    /// The merchant's notifications with an id below `before_id` (from the newest when
    /// `None`), newest first, at most `limit`.
    pub fn notifications(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, ResolveError> {
        Ok(self.store.outbox_of_merchant(mid, before_id, limit)?)
    }

    /// Sends one of the merchant's notifications again: one whose attempts ran out (`failed`,
    /// its receiver down for longer than the retries last) or that found no endpoint (sent
    /// before the merchant set one). It is due at once and retried as a new event would be,
    /// its retries counted afresh (`attempts_base`); the attempts before stay in its delivery
    /// log, which numbers every attempt.
    pub async fn redrive(&self, mid: &str, outbox_id: i64) -> Result<OutboxRow, ResolveError> {
        let item = self
            .store
            .outbox_item(outbox_id)?
            .filter(|o| o.mid == mid)
            .ok_or(ResolveError::NotVisible("notification"))?;
        let refused = |state: String| ResolveError::NotRedrivable {
            id: outbox_id,
            state,
        };
        if !matches!(item.state.as_str(), "failed" | "no_endpoint") {
            return Err(refused(item.state));
        }
        let record = store::Record::Resolve(store::resolve::ResolveRecord::Redrive {
            outbox_id,
            mid: mid.to_owned(),
            due_at_ms: self.clock.now_ms(),
        });
        match self.store.submit(vec![record])?.await {
            Ok(()) => {}
            // Sent again meanwhile by someone else: what it is now.
            Err(store::StoreError::Constraint { .. }) => {
                let now = self.store.outbox_item(outbox_id)?;
                return Err(refused(now.map_or_else(String::new, |o| o.state)));
            }
            Err(error) => return Err(error.into()),
        }
        self.store
            .outbox_item(outbox_id)?
            .ok_or(ResolveError::NotVisible("notification"))
    }

    /// The delivery attempts of one of the merchant's notifications.
    pub fn deliveries(&self, mid: &str, outbox_id: i64) -> Result<Vec<DeliveryRow>, ResolveError> {
        let owned = self
            .store
            .outbox_item(outbox_id)?
            .is_some_and(|o| o.mid == mid);
        if !owned {
            return Err(ResolveError::NotVisible("notification"));
        }
        Ok(self.store.webhook_deliveries(outbox_id)?)
    }
}
