//! Notifications: an outbox of merchant events in the store, filled by producers (the
//! [`Tailer`], which reads the journal's events and the payout runs' events behind them, and
//! cases via [`enqueue`]), and a [`Notifier`] that
//! delivers each as a signed webhook with bounded retries and logs every attempt.
//!
//! The switch knows nothing of this: the tailer reads the journal's timeline events behind it,
//! so a slow or failing merchant endpoint never touches authorisation.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::IssuerDirectory;
use domain::diagnosis::{self, Diagnosis, FailureKind, PayoutFailure};
use paycrypto::Hsm;
use serde::Serialize;
use serde_json::{Value, json};
use store::resolve::{DeliveryRow, DueMerchant, OutboxRow, ResolveRecord, WebhookEndpointRow};
use store::{Record, SafState, Store, TxnKind, TxnRow};
use switch::Clock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ResolveError;
use crate::duplicates;
use crate::explain::TxnSummary;
use crate::webhook::{self, Endpoint};

/// The store counter outbox ids come from (reserve an id here to build a [`record`]).
pub const OUTBOX_COUNTER: &str = "outbox_id";
/// The tailer's position in the journal's events.
const TAILER_CURSOR: &str = "notifications";
/// The tailer's position in the payout runs' events (`payout_events`, by id).
const PAYOUT_CURSOR: &str = "notifications.payouts";
/// How far behind its cursor the tailer reads the payout events again: an event's id is
/// reserved before its commit, so a run's event may land after a higher id another run wrote,
/// and ids above the cursor stay unread until then. A run commits its event straight after the
/// bank's answer; this many ids is far more than runs at once write meanwhile.
const PAYOUT_RECHECK_IDS: i64 = 1_000;
/// How far back the first reading of the payout events tells merchants of failures.
const PAYOUT_FIRST_READ_MS: i64 = 7 * 86_400_000;
/// Where that line is kept (a time in ms, as a cursor), for the polls after the first.
const PAYOUT_TOLD_SINCE: &str = "notifications.payouts.since";

/// What happened, as the `type` of the webhook body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "transaction.declined")]
    TransactionDeclined,
    #[serde(rename = "reversal.done")]
    ReversalDone,
    /// The issuer refused a reversal: for a sale the card may still show the charge; for a void
    /// or refund, it may stand (the customer paid back).
    #[serde(rename = "reversal.refused")]
    ReversalRefused,
    #[serde(rename = "refund.done")]
    RefundDone,
    #[serde(rename = "case.updated")]
    CaseUpdated,
    #[serde(rename = "payout.failed")]
    PayoutFailed,
    #[serde(rename = "duplicate.suspected")]
    DuplicateSuspected,
}

impl EventType {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::TransactionDeclined => "transaction.declined",
            EventType::ReversalDone => "reversal.done",
            EventType::ReversalRefused => "reversal.refused",
            EventType::RefundDone => "refund.done",
            EventType::CaseUpdated => "case.updated",
            EventType::PayoutFailed => "payout.failed",
            EventType::DuplicateSuspected => "duplicate.suspected",
        }
    }
}

/// One notification before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_type: EventType,
    /// Unique per fact (e.g. `refund.done:42`): enqueueing it again is a no-op.
    pub dedup_key: String,
    pub data: Value,
}

/// The diagnosis as a webhook shows it, both languages.
pub fn diagnosis_json(d: &Diagnosis) -> Value {
    json!({
        "code": d.subject.key(),
        "title": {"zh": d.title.zh, "en": d.title.en},
        "meaning": {"zh": d.meaning.zh, "en": d.meaning.en},
        "category": d.category.letter().to_string(),
        "who_acts": d.who_acts.key(),
        "retry": d.retry.key(),
        // Whether at all, then when: "if_persists" is not "yes".
        "contact_issuer": d.contact_issuer.recommended(),
        "contact_issuer_condition": d.contact_issuer,
        "contact_when": {"zh": d.contact_when.zh, "en": d.contact_when.en},
        "customer_message": {"zh": d.customer_message.zh, "en": d.customer_message.en},
        "merchant_steps": d.merchant_steps.iter().map(|s| json!({"zh": s.zh, "en": s.en})).collect::<Vec<_>>(),
    })
}

impl Event {
    /// A payout to the merchant's account failed or came back (the payout run's event
    /// `event_id`): what happened, to which account, and what to do. Each failure is told, a
    /// payout that fails again after a re-bind included.
    pub fn payout_failed(
        event_id: i64,
        payout: &store::settlement::PayoutRow,
        failure: PayoutFailure,
    ) -> Event {
        Event {
            event_type: EventType::PayoutFailed,
            dedup_key: format!("payout.failed:{event_id}"),
            data: json!({
                "payout": payout.key,
                "payout_date": payout.payout_date,
                "amount_fen": payout.amount_fen,
                "account": payout.account_masked,
                "returned": failure == PayoutFailure::ReturnedLater,
                "diagnosis": diagnosis_json(diagnosis::diagnose_payout(failure)),
            }),
        }
    }

    /// A declined transaction, diagnosed by its code, or by the entry that says better what
    /// happened (`rule`: the risk rule that declined it, the issuer never asked, or
    /// `explain::failure_of`'s), as the transaction's page has it.
    pub fn transaction_declined(txn: &TxnSummary, rule: Option<FailureKind>) -> Event {
        let code = txn.response_code.as_deref().unwrap_or("96");
        let diagnosis = rule.map_or_else(
            || diagnosis::diagnose_str(code),
            diagnosis::diagnose_failure,
        );
        Event {
            event_type: EventType::TransactionDeclined,
            dedup_key: format!("transaction.declined:{}", txn.id),
            data: json!({
                "transaction": txn,
                "diagnosis": diagnosis_json(diagnosis),
            }),
        }
    }

    pub fn reversal_done(txn: &TxnSummary) -> Event {
        Event {
            event_type: EventType::ReversalDone,
            dedup_key: format!("reversal.done:{}", txn.id),
            data: json!({ "transaction": txn }),
        }
    }

    /// `gives_back`: the transaction is a void or refund, which may then stand at the issuer
    /// (the customer paid back), not a sale the card may still show.
    pub fn reversal_refused(txn: &TxnSummary, gives_back: bool) -> Event {
        let kind = if gives_back {
            domain::diagnosis::FailureKind::ReturnReversalRefused
        } else {
            domain::diagnosis::FailureKind::ReversalRefused
        };
        Event {
            event_type: EventType::ReversalRefused,
            dedup_key: format!("reversal.refused:{}", txn.id),
            data: json!({
                "transaction": txn,
                // The same shape as every other event's diagnosis.
                "diagnosis": diagnosis_json(domain::diagnosis::diagnose_failure(kind)),
            }),
        }
    }

    pub fn refund_done(refund: &TxnSummary, original_rrn: Option<&str>) -> Event {
        Event {
            event_type: EventType::RefundDone,
            dedup_key: format!("refund.done:{}", refund.id),
            data: json!({ "refund": refund, "original_rrn": original_rrn }),
        }
    }

    pub fn case_updated(case_id: i64, version: i64, state: &str, note: &str) -> Event {
        Event {
            event_type: EventType::CaseUpdated,
            dedup_key: format!("case.updated:{case_id}:{version}"),
            data: json!({ "case_id": case_id, "version": version, "state": state, "note": note }),
        }
    }

    pub fn duplicate_suspected(flag: &duplicates::DuplicateFlag) -> Event {
        Event {
            event_type: EventType::DuplicateSuspected,
            dedup_key: format!("duplicate.suspected:{}", flag.second.id),
            data: json!({ "duplicate": flag }),
        }
    }
}

/// The store record of an event, for a producer that commits it with its own records
/// (reserve `id` from [`OUTBOX_COUNTER`] first).
pub fn record(id: i64, mid: &str, event: &Event, now_ms: i64) -> Record {
    let body = json!({
        "id": id,
        "type": event.event_type.as_str(),
        "mid": mid,
        "created_at_ms": now_ms,
        "data": event.data,
    });
    Record::Resolve(ResolveRecord::Enqueue(Box::new(OutboxRow {
        id,
        mid: mid.to_owned(),
        event_type: event.event_type.as_str().to_owned(),
        payload: body.to_string(),
        dedup_key: event.dedup_key.clone(),
        created_at_ms: now_ms,
        state: "pending".to_owned(),
        attempts: 0,
        next_attempt_ms: now_ms,
        delivered_at_ms: None,
        attempts_base: 0,
    })))
}

async fn reserve_ids(store: &dyn Store, count: u64) -> Result<i64, ResolveError> {
    let first = store.reserve(OUTBOX_COUNTER, count)?.await?;
    i64::try_from(first).map_err(|_| {
        ResolveError::Store(store::StoreError::Corrupt {
            what: "outbox id",
            value: first.to_string(),
        })
    })
}

/// Queues an event for a merchant, durably. A repeated `dedup_key` is ignored.
pub async fn enqueue(
    store: &dyn Store,
    mid: &str,
    event: Event,
    now_ms: i64,
) -> Result<(), ResolveError> {
    let id = reserve_ids(store, 1).await?;
    store.submit(vec![record(id, mid, &event, now_ms)])?.await?;
    Ok(())
}

/// Sets where a merchant's webhooks go and the secret they are signed with (sealed by the HSM
/// before it reaches the store).
pub async fn set_endpoint(
    store: &dyn Store,
    hsm: &dyn Hsm,
    mid: &str,
    url: &str,
    secret: &[u8],
    destinations: webhook::Destinations,
) -> Result<(), ResolveError> {
    let Some(endpoint) = Endpoint::parse(url) else {
        return Err(ResolveError::BadEndpoint(url.to_owned()));
    };
    // An address written out is refused now; a name is checked at each delivery, against
    // what it resolves to then.
    if endpoint
        .ip_literal()
        .is_some_and(|ip| !destinations.allows(ip))
    {
        return Err(ResolveError::PrivateEndpoint(url.to_owned()));
    }
    let row = WebhookEndpointRow {
        mid: mid.to_owned(),
        url: url.to_owned(),
        secret_sealed: hsm.seal(secret)?,
        active: true,
    };
    store
        .submit(vec![Record::Resolve(ResolveRecord::UpsertEndpoint(row))])?
        .await?;
    Ok(())
}

/// Delivery limits.
#[derive(Clone, Debug)]
pub struct NotifierConfig {
    /// Attempts per event before it is marked `failed`.
    pub attempts_max: u32,
    /// Delay after the first failure; doubles per attempt up to `backoff_last_ms`.
    pub backoff_first_ms: i64,
    pub backoff_last_ms: i64,
    /// Whole-request timeout of one POST.
    pub timeout: Duration,
    /// Events a pass starts at most (a merchant's at most [`PER_MERCHANT_PER_PASS`], the
    /// merchants taken in turn until the places or this are used up).
    pub batch_max: u32,
    /// Which addresses a merchant's endpoint may resolve to (public only by default).
    pub destinations: webhook::Destinations,
    /// The CA certificates an `https://` endpoint's certificate must chain to (this host's by
    /// default).
    pub trust: webhook::Trust,
}

/// Attempts per event at most, whatever the configuration says.
pub const ATTEMPTS_MAX: u32 = 32;
/// Merchants whose events one pass delivers at the same time.
pub const MERCHANTS_AT_ONCE: usize = 16;
/// Events of one merchant one pass attempts, one after the other.
pub const PER_MERCHANT_PER_PASS: usize = 8;
/// Merchants served at the same time whose receivers are on one host and port (one vendor
/// hosting many merchants' receivers): a slow vendor takes this many of the places, not every
/// one.
pub const MERCHANTS_PER_RECEIVER_HOST: usize = 4;
/// Merchants with due events one read of a pass takes, the longest waiting first: many more
/// than it serves at once, so that those of a host already at its share are passed over for
/// the ones behind them.
pub const DUE_MERCHANTS_READ: u32 = 1_024;
/// Reads of [`DUE_MERCHANTS_READ`] a pass makes at most while places are free: one vendor's
/// merchants at its share fill reads, and the merchants behind them are reached by the next.
const DUE_READS_PER_PASS: usize = 8;
/// A claimed attempt is another notifier's to take over this long after its POST's timeout
/// (the claiming node died mid-attempt).
const CLAIM_MARGIN_MS: i64 = 30_000;

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            // About 12 hours: 1 s doubling to the hour by the 13th attempt, then hourly.
            attempts_max: 24,
            backoff_first_ms: 1_000,
            backoff_last_ms: 3_600_000,
            timeout: Duration::from_secs(5),
            // Every place's turn: a pass's merchants each take up to eight.
            batch_max: (MERCHANTS_AT_ONCE * PER_MERCHANT_PER_PASS) as u32,
            destinations: webhook::Destinations::Public,
            trust: webhook::Trust::System,
        }
    }
}

impl NotifierConfig {
    /// The wait after failed attempt `attempt` (from 1): `backoff_first_ms`, doubling, at most
    /// `backoff_last_ms`.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let shift = attempt.saturating_sub(1).min(20);
        self.backoff_first_ms
            .saturating_mul(1_i64 << shift)
            .min(self.backoff_last_ms)
    }
}

/// Delivers due outbox events to merchants' endpoints.
pub struct Notifier {
    store: Arc<dyn Store>,
    hsm: Arc<dyn Hsm>,
    clock: Arc<dyn Clock>,
    config: NotifierConfig,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        hsm: Arc<dyn Hsm>,
        clock: Arc<dyn Clock>,
        config: NotifierConfig,
    ) -> Self {
        Notifier {
            store,
            hsm,
            clock,
            config,
        }
    }

    /// One pass: attempts every due event once, a few merchants at a time and at most
    /// [`PER_MERCHANT_PER_PASS`] events of one merchant, so a merchant whose endpoint hangs holds
    /// up only its own events. Each attempt is claimed first (`ClaimDelivery`): with several
    /// nodes, one of them makes it. Returns the number of attempts made.
    pub async fn deliver_due(self: &Arc<Self>) -> Result<usize, ResolveError> {
        let mut merchants = self.due_merchants(None)?.into_iter().map(|m| m.mid);
        let mut budget = usize::try_from(self.config.batch_max).unwrap_or(usize::MAX);
        let mut running = tokio::task::JoinSet::new();
        let mut attempts = 0;
        let mut failure = None;
        loop {
            while running.len() < MERCHANTS_AT_ONCE && budget > 0 && failure.is_none() {
                let Some(mid) = merchants.next() else {
                    break;
                };
                let items = match self.due_of(&mid, budget) {
                    Ok(items) => items,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                };
                budget = budget.saturating_sub(items.len());
                let notifier = Arc::clone(self);
                running.spawn(async move {
                    let mut made = 0;
                    for item in &items {
                        if notifier.attempt(item).await? {
                            made += 1;
                        }
                    }
                    Ok::<usize, ResolveError>(made)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok(Ok(made)) => attempts += made,
                Ok(Err(error)) => failure = Some(error),
                // A panic in one merchant's deliveries: its claimed attempts are taken over
                // when their leases end.
                Err(error) => tracing::warn!(%error, "webhook delivery task failed"),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(attempts),
        }
    }

    /// Claims and makes one attempt at `item`; `false` if another notifier had claimed it.
    async fn attempt(&self, item: &OutboxRow) -> Result<bool, ResolveError> {
        Ok(self.attempt_once(item).await? != Attempted::NotClaimed)
    }

    /// [`Self::attempt`], saying how it went.
    async fn attempt_once(&self, item: &OutboxRow) -> Result<Attempted, ResolveError> {
        let attempts_max = self.config.attempts_max.clamp(1, ATTEMPTS_MAX);
        let attempt = item.attempts.saturating_add(1);
        let lease_ms = i64::try_from(self.config.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(CLAIM_MARGIN_MS);
        let claim = ResolveRecord::ClaimDelivery {
            outbox_id: item.id,
            attempts: item.attempts,
            due_at_ms: item.next_attempt_ms,
            lease_until_ms: self.clock.now_ms().saturating_add(lease_ms),
        };
        match self.store.submit(vec![Record::Resolve(claim)])?.await {
            Ok(()) => {}
            Err(store::StoreError::Constraint { .. }) => return Ok(Attempted::NotClaimed),
            Err(error) => return Err(error.into()),
        }
        let endpoint = off_runtime(|| self.store.webhook_endpoint(&item.mid))?.filter(|e| e.active);
        let started = self.clock.now_ms();
        let (url, result) = match &endpoint {
            None => (
                String::new(),
                webhook::PostResult {
                    status: None,
                    error: Some("no webhook endpoint configured".to_owned()),
                },
            ),
            Some(e) => (e.url.clone(), self.post(item, e, started).await),
        };
        let finished = self.clock.now_ms();
        // Counted from the item's last redrive: sent again, it has its retries afresh.
        let retry = attempt.saturating_sub(item.attempts_base);
        let (state, next, delivered_at) = if result.delivered() {
            ("delivered", finished, Some(finished))
        } else if endpoint.is_none() {
            ("no_endpoint", finished, None)
        } else if retry >= attempts_max {
            ("failed", finished, None)
        } else {
            ("pending", finished + self.config.backoff_ms(retry), None)
        };
        if endpoint.is_none() {
            // A merchant without an endpoint reads its notifications in the portal.
            tracing::debug!(id = item.id, mid = %item.mid, "no webhook endpoint");
        } else if !result.delivered() {
            tracing::info!(
                id = item.id,
                mid = %item.mid,
                attempt,
                error = result.error.as_deref().unwrap_or(""),
                status = result.status,
                "webhook not delivered"
            );
        }
        // A receiver that did not answer at all (down, unreachable, hanging) is not asked for
        // the merchant's other events before this one's retry: they are put off with it, and
        // this one a moment behind them, so that they are tried first then (this event alone
        // hanging its receiver must not keep the others waiting for every one of its retries).
        // The attempt counts against them too (also when it was this one's last), so a
        // receiver down for good fails them all together once the retries are spent, rather
        // than two at a time while the rest wait untried.
        let unanswered = endpoint.is_some() && result.status.is_none();
        let deferred = state == "pending" && unanswered;
        let record = ResolveRecord::Delivery {
            log: DeliveryRow {
                outbox_id: item.id,
                attempt,
                at_ms: started,
                url,
                status: result.status,
                error: result.error,
                duration_ms: finished - started,
            },
            state: state.to_owned(),
            next_attempt_ms: if deferred {
                next.saturating_add(1)
            } else {
                next
            },
            delivered_at_ms: delivered_at,
        };
        let mut records = vec![Record::Resolve(record)];
        if unanswered {
            records.push(Record::Resolve(ResolveRecord::DeferMerchant {
                mid: item.mid.clone(),
                until_ms: next,
                due_by_ms: started,
                attempts_max,
            }));
        }
        self.store.submit(records)?.await?;
        Ok(if unanswered {
            Attempted::Unanswered
        } else {
            Attempted::Done
        })
    }

    async fn post(
        &self,
        item: &OutboxRow,
        endpoint: &WebhookEndpointRow,
        now_ms: i64,
    ) -> webhook::PostResult {
        let Some(target) = Endpoint::parse(&endpoint.url) else {
            return webhook::PostResult {
                status: None,
                error: Some("endpoint URL is not http(s)://host[:port]/path".to_owned()),
            };
        };
        let secret = match self.hsm.open(&endpoint.secret_sealed) {
            Ok(secret) => secret,
            Err(_) => {
                return webhook::PostResult {
                    status: None,
                    error: Some("webhook secret cannot be opened".to_owned()),
                };
            }
        };
        let timestamp = now_ms.div_euclid(1_000);
        let body = item.payload.as_bytes();
        let headers = [
            (
                webhook::SIGNATURE_HEADER,
                webhook::sign(&secret, timestamp, body),
            ),
            (webhook::TIMESTAMP_HEADER, timestamp.to_string()),
            (webhook::EVENT_ID_HEADER, item.id.to_string()),
            (webhook::EVENT_TYPE_HEADER, item.event_type.clone()),
        ];
        webhook::post(
            &target,
            &headers,
            body,
            self.config.timeout,
            self.config.destinations,
            &self.config.trust,
        )
        .await
    }

    /// Every `interval` until `stop` turns true, starts the due events of each merchant not
    /// already being served, at most [`MERCHANTS_AT_ONCE`] merchants at a time, without
    /// waiting for the ones under way: a merchant whose receiver hangs (its attempts taking
    /// their timeouts one after another) keeps only its own events waiting, never the next
    /// pass of everyone else's. On stop, the attempts under way get one POST's timeout to end.
    pub fn spawn(self, interval: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let notifier = Arc::new(self);
        tokio::spawn(async move {
            let serving: Arc<Mutex<Places>> = Arc::default();
            let mut running = tokio::task::JoinSet::new();
            loop {
                while let Some(done) = running.try_join_next() {
                    if let Err(error) = done {
                        tracing::warn!(%error, "webhook delivery task failed");
                    }
                }
                if let Err(error) = notifier.start_due(&serving, &mut running, &stop) {
                    tracing::warn!(%error, "webhook delivery pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    break;
                }
            }
            let grace = notifier.config.timeout + Duration::from_secs(1);
            let drained = tokio::time::timeout(grace, async {
                while running.join_next().await.is_some() {}
            });
            if drained.await.is_err() {
                running.abort_all();
            }
        })
    }

    /// The merchants with events due now, the one whose first has waited longest first, after
    /// `after` (the last of the read before), at most [`DUE_MERCHANTS_READ`].
    fn due_merchants(&self, after: Option<&DueMerchant>) -> Result<Vec<DueMerchant>, ResolveError> {
        // Off the runtime's workers (the switch's, under `serve`): a large backlog makes this
        // read long.
        Ok(off_runtime(|| {
            self.store.outbox_due_merchants(
                self.clock.now_ms(),
                after.map(|m| (m.first_due_ms, m.mid.as_str())),
                DUE_MERCHANTS_READ,
            )
        })?)
    }

    /// Merchant `mid`'s events due now, soonest due first, at most `budget` and at most
    /// [`PER_MERCHANT_PER_PASS`].
    fn due_of(&self, mid: &str, budget: usize) -> Result<Vec<OutboxRow>, ResolveError> {
        let limit = u32::try_from(budget.min(PER_MERCHANT_PER_PASS)).unwrap_or(0);
        Ok(off_runtime(|| {
            self.store
                .outbox_due_of_merchant(mid, self.clock.now_ms(), limit)
        })?)
    }

    /// One pass of [`Self::spawn`]'s: a task per merchant with due events that is not in
    /// `serving`, while fewer than [`MERCHANTS_AT_ONCE`] are, and fewer than
    /// [`MERCHANTS_PER_RECEIVER_HOST`] whose receivers are on its receiver's host and port:
    /// receivers that answer, but slowly, keep their merchants' places for every event of a
    /// turn, and one vendor's (hosting many merchants' receivers, back from an outage with
    /// every merchant's backlog due) would otherwise hold them all. The merchants of a host at
    /// its share are passed over for the ones read behind them, read after them while places
    /// are free ([`DUE_READS_PER_PASS`] reads of [`DUE_MERCHANTS_READ`] at most). Each
    /// merchant's receiver comes with the read: no endpoint is read per merchant.
    ///
    /// A merchant whose receiver does not answer an attempt at all (down, unreachable,
    /// hanging) ends its turn there, its other events put off to that one's retry
    /// (`ResolveRecord::DeferMerchant`): each of its turns takes one timeout, not one per
    /// event, and its events waiting are not due, so they neither keep every place taken nor
    /// fill the reads while other merchants' events wait. A receiver that answers, even with
    /// an error for one event, is asked for the others.
    fn start_due(
        self: &Arc<Self>,
        serving: &Arc<Mutex<Places>>,
        running: &mut tokio::task::JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ResolveError> {
        if lock(serving).merchants.len() >= MERCHANTS_AT_ONCE {
            return Ok(());
        }
        let mut budget = usize::try_from(self.config.batch_max).unwrap_or(usize::MAX);
        let room = |budget: usize| budget > 0 && lock(serving).merchants.len() < MERCHANTS_AT_ONCE;
        let mut after: Option<DueMerchant> = None;
        for _ in 0..DUE_READS_PER_PASS {
            let due = self.due_merchants(after.as_ref())?;
            let more = due.len() >= usize::try_from(DUE_MERCHANTS_READ).unwrap_or(usize::MAX);
            after = due.last().cloned();
            for merchant in due {
                if !room(budget) {
                    return Ok(());
                }
                budget = self.start_one(serving, running, stop, merchant, budget)?;
            }
            if !more || !room(budget) {
                break;
            }
        }
        Ok(())
    }

    /// Starts `merchant`'s due events, at most `budget` of them, unless it is being served or
    /// its receiver's host has its share of the places (see [`Self::start_due`]); the budget
    /// left.
    fn start_one(
        self: &Arc<Self>,
        serving: &Arc<Mutex<Places>>,
        running: &mut tokio::task::JoinSet<()>,
        stop: &watch::Receiver<bool>,
        merchant: DueMerchant,
        budget: usize,
    ) -> Result<usize, ResolveError> {
        let mid = merchant.mid;
        // Only the pass adds to `serving` (a task's end takes its merchant out): what is
        // checked here holds until the merchant is added below.
        if lock(serving).merchants.contains_key(&mid) {
            return Ok(budget);
        }
        let host = merchant.url.as_deref().and_then(receiver_host);
        if let Some(host) = &host
            && lock(serving).on_host(host) >= MERCHANTS_PER_RECEIVER_HOST
        {
            return Ok(budget);
        }
        let items = self.due_of(&mid, budget)?;
        if items.is_empty() {
            // Taken by another node since the read.
            return Ok(budget);
        }
        let budget = budget.saturating_sub(items.len());
        lock(serving).merchants.insert(mid.clone(), host);
        let notifier = Arc::clone(self);
        let served = Served {
            serving: Arc::clone(serving),
            mid,
        };
        let stop = stop.clone();
        running.spawn(async move {
            let _served = served;
            for item in &items {
                // Stopping: no new attempt is claimed, the one under way ends.
                if *stop.borrow() {
                    return;
                }
                match notifier.attempt_once(item).await {
                    Ok(Attempted::Unanswered) => return,
                    Ok(Attempted::Done | Attempted::NotClaimed) => {}
                    Err(error) => {
                        tracing::warn!(%error, id = item.id, "webhook delivery failed");
                        return;
                    }
                }
            }
        });
        Ok(budget)
    }
}

/// The host and port of a receiver's URL, the host lower-cased: what merchants whose
/// receivers one vendor hosts share. `None` for a URL that does not parse (the attempt then
/// says what is wrong).
fn receiver_host(url: &str) -> Option<String> {
    let target = Endpoint::parse(url)?;
    Some(format!(
        "{}:{}",
        target.host.to_ascii_lowercase(),
        target.port
    ))
}

/// How one attempt at an event went.
#[derive(Debug, PartialEq, Eq)]
enum Attempted {
    /// Another notifier had claimed it.
    NotClaimed,
    /// Delivered, answered with an error (tried again later, or failed for good), or settled
    /// without a delivery (no endpoint).
    Done,
    /// The receiver did not answer: tried again later, the merchant's other events with it.
    Unanswered,
}

/// The merchants [`Notifier::spawn`]'s loop is serving, each with its receiver's host and port
/// (none without a readable endpoint).
#[derive(Default)]
struct Places {
    merchants: HashMap<String, Option<String>>,
}

impl Places {
    /// How many of the merchants served have their receiver on `host` (at most
    /// [`MERCHANTS_AT_ONCE`] to count).
    fn on_host(&self, host: &str) -> usize {
        self.merchants
            .values()
            .filter(|h| h.as_deref() == Some(host))
            .count()
    }
}

/// A merchant being served by [`Notifier::spawn`]'s loop: let go when its task ends, however.
struct Served {
    serving: Arc<Mutex<Places>>,
    mid: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        lock(&self.serving).merchants.remove(&self.mid);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the tailer reads the journal.
#[derive(Clone, Debug)]
pub struct TailerConfig {
    /// How late an event may reach the journal after the time stamped on it: it is stamped
    /// before its group commit (and, with several nodes, by another node's clock). Every
    /// `full_every`-th poll reads again from its cursor, which trails this much behind, and
    /// skips the events already handled. This process's own writes held up longer (a stalled
    /// disk) hold the cursor back themselves (`Store::oldest_queued_event_ms`); another
    /// node's, and clocks further apart than this, are not covered.
    pub lag_ms: i64,
    /// The polls in between read again only this much before the last event read: what
    /// lands later than that is found by the next full poll.
    pub recheck_ms: i64,
    /// One poll in this many reads from the cursor and moves it.
    pub full_every: u32,
    /// Events read per page.
    pub page_max: u32,
    /// Pages of events not yet handled per poll, so one poll is bounded.
    pub pages_max: u32,
    /// Same card, amount and merchant within this window, both approved: a suspected duplicate.
    pub duplicate_window_ms: i64,
}

impl Default for TailerConfig {
    fn default() -> Self {
        TailerConfig {
            lag_ms: 10_000,
            recheck_ms: 1_000,
            full_every: 20,
            page_max: 512,
            pages_max: 16,
            duplicate_window_ms: duplicates::DUPLICATE_WINDOW_MS_DEFAULT,
        }
    }
}

/// An event's identity, for skipping those already handled: (stamped at, transaction, kind).
type EventKey = (i64, i64, String);

/// Turns journal events into outbox events (declines with diagnosis, reversals acknowledged,
/// refunds approved, suspected duplicates).
pub struct Tailer {
    store: Arc<dyn Store>,
    directory: Arc<IssuerDirectory>,
    clock: Arc<dyn Clock>,
    config: TailerConfig,
    /// Events at or after the cursor already handled by this tailer.
    seen: BTreeSet<EventKey>,
    /// The time stamped on the last event the last poll read; `None` before the first poll.
    scanned_to: Option<i64>,
    /// Polls since the last full one.
    since_full: u32,
    /// Payout events at or above the payout cursor's recheck start already handled.
    payouts_seen: BTreeSet<i64>,
}

/// One page of events read and made sense of.
struct Page {
    len: usize,
    /// The time stamped on its last event.
    last_at_ms: Option<i64>,
    records: Vec<Record>,
    pending: Vec<(String, Event)>,
    handled: Vec<EventKey>,
}

impl Tailer {
    /// The outbox rows of `pending` (merchant, event), their ids reserved at once, added to
    /// `records`; returns how many.
    async fn outbox_records(
        &self,
        pending: &[(String, Event)],
        records: &mut Vec<Record>,
    ) -> Result<usize, ResolveError> {
        if pending.is_empty() {
            return Ok(0);
        }
        let count = u64::try_from(pending.len()).unwrap_or(1);
        let first = reserve_ids(self.store.as_ref(), count).await?;
        let now_ms = self.clock.now_ms();
        for (offset, (mid, event)) in (0_i64..).zip(pending) {
            records.push(record(first + offset, mid, event, now_ms));
        }
        Ok(pending.len())
    }
}

/// Runs the tailer's synchronous reads without holding up the runtime's other tasks (the
/// switch's, in a process that runs both): on a multi-threaded runtime the worker hands them
/// to another thread first; on a single thread (a simulation) in place.
fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl Tailer {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<IssuerDirectory>,
        clock: Arc<dyn Clock>,
        config: TailerConfig,
    ) -> Self {
        Tailer {
            store,
            directory,
            clock,
            config,
            seen: BTreeSet::new(),
            scanned_to: None,
            since_full: 0,
            payouts_seen: BTreeSet::new(),
        }
    }

    /// Reads the payout runs' new events and enqueues a `payout.failed` for each payout the
    /// bank refused for good (held for a new account) or returned. Bounded as a poll of the
    /// journal's events; the cursor moves with the outbox rows, in one commit.
    async fn poll_payouts(&mut self) -> Result<usize, ResolveError> {
        let store = Arc::clone(&self.store);
        let store = store.as_ref();
        let cursor = off_runtime(|| store.resolve_cursor(PAYOUT_CURSOR))?.unwrap_or(0);
        // A journal the payout tail had never read (a node upgraded to it) is told the
        // failures of the week before that first reading, not every one it ever had: the
        // line is kept, so the polls after the first (which may not get through the history)
        // keep to it.
        let mut records = Vec::new();
        let told_since = match off_runtime(|| store.resolve_cursor(PAYOUT_TOLD_SINCE))? {
            Some(since) => since,
            None => {
                let since = self.clock.now_ms().saturating_sub(PAYOUT_FIRST_READ_MS);
                records.push(Record::Resolve(ResolveRecord::Cursor {
                    name: PAYOUT_TOLD_SINCE.to_owned(),
                    position: since,
                }));
                since
            }
        };
        let recheck = cursor.saturating_sub(PAYOUT_RECHECK_IDS);
        self.payouts_seen = self.payouts_seen.split_off(&recheck);
        let page_max = self.config.page_max.max(1);
        // Only events not handled yet count against a poll's bound: those read again behind
        // the cursor would otherwise use it up, and the tail would never get past them.
        let budget = usize::try_from(page_max.saturating_mul(self.config.pages_max.max(1)))
            .unwrap_or(usize::MAX);
        let mut handled_count = 0;
        let mut after = recheck;
        let mut produced = 0;
        while handled_count < budget {
            let rows = off_runtime(|| store.payout_events(after, page_max))?;
            let Some(last) = rows.last().map(|r| r.id) else {
                break;
            };
            let mut pending = Vec::new();
            let mut handled = Vec::new();
            for row in &rows {
                if self.payouts_seen.contains(&row.id) {
                    continue;
                }
                handled.push(row.id);
                if !matches!(row.kind.as_str(), "failed" | "returned") || row.at_ms < told_since {
                    continue;
                }
                let failure = row.failure.as_deref().and_then(PayoutFailure::from_key);
                // Told as the payout stands: one released to a re-bound account (and sent,
                // or netted) since its failure is no longer failed.
                let payout = off_runtime(|| store.payout(&row.payout_key))?
                    .filter(|p| p.state == store::settlement::PayoutState::Held);
                if let (Some(failure), Some(payout)) = (failure, payout) {
                    pending.push((
                        row.mid.clone(),
                        Event::payout_failed(row.id, &payout, failure),
                    ));
                }
            }
            produced += self.outbox_records(&pending, &mut records).await?;
            if last > cursor {
                records.push(Record::Resolve(ResolveRecord::Cursor {
                    name: PAYOUT_CURSOR.to_owned(),
                    position: last,
                }));
            }
            if !records.is_empty() {
                store.submit(std::mem::take(&mut records))?.await?;
            }
            handled_count += handled.len();
            self.payouts_seen.extend(handled);
            if rows.len() < usize::try_from(page_max).unwrap_or(usize::MAX) {
                break;
            }
            after = last;
        }
        if !records.is_empty() {
            store.submit(records)?.await?;
        }
        Ok(produced)
    }

    /// Reads new journal events and enqueues what they mean. Returns the events enqueued
    /// (including ones already queued before, which the store ignores).
    ///
    /// The cursor is a time before which every event is handled. A full poll (the first, then
    /// one in `full_every`) reads from it, skips the events this tailer has handled, and moves
    /// it to the last event read or to `lag_ms` before now, whichever is earlier (and never
    /// past an event of this process still queued to be written). So it always
    /// gets past what it handled, however many events the lag holds; only events not yet
    /// handled count against the poll's bound. The polls in between read from `recheck_ms`
    /// before the last event read: new events are noticed at once, and the lag is not read
    /// again at every poll (at 4,000 events a second that was 40,000 rows every 500 ms).
    pub async fn poll_once(&mut self) -> Result<usize, ResolveError> {
        // Each tail on its own: a payout event the payout tail cannot read (a row written by a
        // newer node, say) must not stop every merchant's transaction notifications behind it.
        let payouts = self.poll_payouts().await;
        let journal = self.poll_journal().await?;
        Ok(payouts? + journal)
    }

    /// [`Self::poll_once`]'s reading of the journal's events.
    async fn poll_journal(&mut self) -> Result<usize, ResolveError> {
        let store = Arc::clone(&self.store);
        let store = store.as_ref();
        let cursor = off_runtime(|| store.resolve_cursor(TAILER_CURSOR))?.unwrap_or(0);
        // Never past an event this process has queued and not yet written: stamped when it was
        // made, it lands as late as the journal lets it (a stalled disk, a database failing
        // over), and a cursor gone past its stamp would never read it.
        let queued = store.oldest_queued_event_ms();
        let horizon = self
            .clock
            .now_ms()
            .saturating_sub(self.config.lag_ms)
            .min(queued.map_or(i64::MAX, |at| at.saturating_sub(1)));
        let full = match self.scanned_to {
            None => true,
            Some(_) => self.since_full.saturating_add(1) >= self.config.full_every.max(1),
        };
        let start = match self.scanned_to {
            Some(scanned) if !full => scanned.saturating_sub(self.config.recheck_ms).max(cursor),
            _ => cursor,
        };
        self.seen = self.seen.split_off(&(cursor, i64::MIN, String::new()));
        let page_max = self.config.page_max.max(1);
        let budget = usize::try_from(page_max.saturating_mul(self.config.pages_max.max(1)))
            .unwrap_or(usize::MAX);
        let mut since = start;
        let mut limit = page_max;
        let mut handled = 0usize;
        let mut produced = 0;
        let mut read_to = start;
        let mut at_end = false;
        while handled < budget {
            let page = off_runtime(|| self.read_page(since, limit))?;
            if let Some(last) = page.last_at_ms {
                read_to = read_to.max(last);
            }
            handled += page.handled.len();
            let Page {
                len,
                last_at_ms,
                mut records,
                pending,
                handled: handled_here,
            } = page;
            produced += self.outbox_records(&pending, &mut records).await?;
            if !records.is_empty() {
                store.submit(records)?.await?;
            }
            // Marked handled once what they mean is committed: a poll that fails part way
            // leaves them to the next one.
            self.seen.extend(handled_here);
            if u32::try_from(len).unwrap_or(u32::MAX) < limit {
                at_end = true;
                break;
            }
            match last_at_ms {
                Some(last) if last > since => {
                    since = last;
                    limit = page_max;
                }
                // A whole page stamped in one millisecond: read that millisecond in a larger
                // page, which the store caps.
                _ if limit < store::RESOLVE_ROWS_MAX => {
                    limit = limit.saturating_mul(2).min(store::RESOLVE_ROWS_MAX);
                }
                _ => {
                    tracing::warn!(
                        at_ms = since,
                        "journal events in one millisecond past a page"
                    );
                    since = since.saturating_add(1);
                    limit = page_max;
                }
            }
        }
        self.scanned_to = Some(read_to);
        if !full {
            self.since_full = self.since_full.saturating_add(1);
            return Ok(produced);
        }
        self.since_full = 0;
        let moved = if at_end {
            horizon
        } else {
            read_to.min(horizon)
        };
        if moved > cursor {
            store
                .submit(vec![Record::Resolve(ResolveRecord::Cursor {
                    name: TAILER_CURSOR.to_owned(),
                    position: moved,
                })])?
                .await?;
        }
        Ok(produced)
    }

    /// Reads up to `limit` events stamped at or after `since`, and works out what those this
    /// tailer has not handled mean.
    fn read_page(&self, since: i64, limit: u32) -> Result<Page, ResolveError> {
        let events = self.store.events_since(since, limit)?;
        let mut page = Page {
            len: events.len(),
            last_at_ms: events.last().map(|e| e.at_ms),
            records: Vec::new(),
            pending: Vec::new(),
            handled: Vec::new(),
        };
        for event in events {
            let detail = event.detail;
            let key = (event.at_ms, event.txn_id, event.kind);
            if self.seen.contains(&key) {
                continue;
            }
            if let Some(row) = self.store.txn(event.txn_id)? {
                let meant = self.meaning(&key.2, &detail, &row, &mut page.records)?;
                page.pending.extend(meant);
            }
            page.handled.push(key);
        }
        Ok(page)
    }

    /// What one journal event means for the merchant.
    fn meaning(
        &self,
        kind: &str,
        detail: &str,
        row: &TxnRow,
        records: &mut Vec<Record>,
    ) -> Result<Vec<(String, Event)>, ResolveError> {
        if row.kind == TxnKind::Reversal {
            return Ok(Vec::new());
        }
        let summary = || TxnSummary::of(&self.directory, row);
        let mut out = Vec::new();
        match kind {
            "declined" | "failed" => {
                // As the explanation diagnoses it: a risk rule's decline, or one whose code
                // alone would say the wrong thing.
                let rule = match crate::explain::rule_of_decline(detail) {
                    Some(rule) => Some(rule),
                    None => crate::explain::failure_of(row, self.store.reversal(row.id)?.is_some()),
                };
                out.push((
                    row.mid.clone(),
                    Event::transaction_declined(&summary(), rule),
                ));
            }
            "reversal_done" => match self.store.reversal(row.id)? {
                // Refused with 25: the issuer never had it, so it is undone as much as an
                // acknowledged one.
                Some(r) if r.undone() => {
                    out.push((row.mid.clone(), Event::reversal_done(&summary())));
                }
                Some(r) if r.state == SafState::Refused => {
                    let gives_back = crate::explain::gives_back(row.kind);
                    out.push((
                        row.mid.clone(),
                        Event::reversal_refused(&summary(), gives_back),
                    ));
                }
                _ => {}
            },
            "approved" if row.kind == TxnKind::Refund => {
                let original_rrn = match row.original_id {
                    // Only the merchant's own sale (see `explain_txn` on links).
                    Some(id) => self
                        .store
                        .txn(id)?
                        .filter(|o| o.mid == row.mid)
                        .and_then(|o| o.rrn),
                    None => None,
                };
                out.push((
                    row.mid.clone(),
                    Event::refund_done(&summary(), original_rrn.as_deref()),
                ));
            }
            "approved" if matches!(row.kind, TxnKind::Purchase | TxnKind::Completion) => {
                let window = self.config.duplicate_window_ms;
                for found in duplicates::find_for(self.store.as_ref(), row, window)? {
                    // A later payment flagged already (with another first) is told once.
                    if found.second_txn_id != row.id
                        && self
                            .store
                            .duplicates_of_txn(found.second_txn_id)?
                            .iter()
                            .any(|d| d.second_txn_id == found.second_txn_id)
                    {
                        continue;
                    }
                    let now_ms = self.clock.now_ms();
                    let flag =
                        duplicates::describe(self.store.as_ref(), &self.directory, &found, now_ms)?;
                    records.push(Record::Resolve(ResolveRecord::Duplicate(found)));
                    if let Some(flag) = flag {
                        out.push((row.mid.clone(), Event::duplicate_suspected(&flag)));
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Runs `poll_once` every `interval` until `stop` turns true.
    pub fn spawn(mut self, interval: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.poll_once().await {
                    tracing::warn!(%error, "journal tailer pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
        })
    }
}

/// How often the background tasks of [`spawn_background`] look for work.
pub const BACKGROUND_INTERVAL: Duration = Duration::from_millis(500);

/// Starts the journal tailer and the webhook notifier with default settings until `stop`
/// turns true: what a process that runs the switch (demo, serve) adds to get notifications.
pub fn spawn_background(
    store: Arc<dyn Store>,
    hsm: Arc<dyn Hsm>,
    directory: Arc<IssuerDirectory>,
    clock: Arc<dyn Clock>,
    destinations: webhook::Destinations,
    trust: webhook::Trust,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let tailer = Tailer::new(
        Arc::clone(&store),
        directory,
        Arc::clone(&clock),
        TailerConfig::default(),
    );
    let config = NotifierConfig {
        destinations,
        trust,
        ..NotifierConfig::default()
    };
    let notifier = Notifier::new(store, hsm, clock, config);
    vec![
        tailer.spawn(BACKGROUND_INTERVAL, stop.clone()),
        notifier.spawn(BACKGROUND_INTERVAL, stop),
    ]
}

#[cfg(test)]
mod tests {
    use super::NotifierConfig;

    /// By default an event is tried for about half a day before it is given up (a receiver
    /// down for a deployment, or a night, gets its events), the waits soon an hour apart.
    #[test]
    fn the_default_retries_last_about_half_a_day() {
        let config = NotifierConfig::default();
        let waits: Vec<i64> = (1..config.attempts_max)
            .map(|a| config.backoff_ms(a))
            .collect();
        assert_eq!(waits.first(), Some(&1_000));
        assert_eq!(waits.last(), Some(&3_600_000));
        let span_h = waits.iter().sum::<i64>() as f64 / 3_600_000.0;
        assert!((11.0..=13.0).contains(&span_h), "{span_h} h");
    }
}
