//! Rows and write records of the resolve area (issue 4): cases and their timelines, the
//! notification outbox with its webhook delivery log, back-office refund keys, duplicate flags.
//! Plain shapes only; the state machines that move them live in the `resolve` crate.

/// Which cases a read returns ([`crate::Store::cases`]): those with an id below `before_id`
/// (from the newest when `None`), newest first (oldest first with `oldest_first`), at most
/// `limit` (and at most [`crate::RESOLVE_ROWS_MAX`]), of one merchant or all, open only or all,
/// of one state and one kind or any.
#[derive(Clone, Debug, Default)]
pub struct CaseQuery<'a> {
    pub mid: Option<&'a str>,
    /// From the oldest: a work queue, whose oldest must never be the ones a limit leaves out.
    pub oldest_first: bool,
    /// Only the cases neither resolved nor rejected.
    pub open_only: bool,
    pub state: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// A case: an issuer inquiry, a refund application or a dispute about one transaction.
/// `version` increases by one on every update, so two operators cannot overwrite each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseRow {
    pub id: i64,
    pub mid: String,
    /// `issuer_inquiry`, `refund_application` or `dispute`.
    pub kind: String,
    /// `open`, `waiting_issuer`, `waiting_merchant`, `resolved`, `rejected`, `escalated`.
    pub state: String,
    pub txn_id: Option<i64>,
    pub title: String,
    pub assignee: Option<String>,
    pub due_at_ms: Option<i64>,
    /// Amount asked for (refund applications).
    pub refund_fen: Option<i64>,
    /// The operator who approved the refund.
    pub approved_by: Option<String>,
    /// The back-office refund's journal id, RRN and response code once executed.
    pub refund_txn_id: Option<i64>,
    pub refund_rrn: Option<String>,
    pub refund_code: Option<String>,
    pub resolution: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub version: i64,
}

/// One line of a case's timeline: who said what, when, with attachments by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseEntryRow {
    pub case_id: i64,
    pub seq: i64,
    pub at_ms: i64,
    pub who: String,
    pub text: String,
    /// References to documents kept elsewhere (file names, ticket numbers), never contents.
    pub attachments: Vec<String>,
}

/// Where a merchant wants its notifications, and the HMAC key they are signed with (sealed by
/// the HSM: the database never holds it in clear).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpointRow {
    pub mid: String,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub active: bool,
}

impl std::fmt::Debug for WebhookEndpointRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointRow")
            .field("mid", &self.mid)
            .field("url", &self.url)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A merchant with notifications due: when its first was due, and its receiver's URL (none
/// without an endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueMerchant {
    pub mid: String,
    pub first_due_ms: i64,
    pub url: Option<String>,
}

/// One notification waiting for (or done with) delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub mid: String,
    /// `transaction.declined`, `reversal.done`, `reversal.refused`, `refund.done`,
    /// `case.updated`, `payout.failed`, `duplicate.suspected`.
    pub event_type: String,
    /// The JSON body sent as is.
    pub payload: String,
    /// Unique per event, so a producer that runs twice (the journal tailer after a restart)
    /// enqueues once.
    pub dedup_key: String,
    pub created_at_ms: i64,
    /// `pending`, `delivered`, `failed` (attempts exhausted) or `no_endpoint`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// `attempts` when the item was last sent again (`Redrive`): the retries since count from
    /// here against the notifier's limit. 0 for an item never redriven.
    pub attempts_base: u32,
}

/// One delivery attempt of an outbox item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub outbox_id: i64,
    pub attempt: u32,
    pub at_ms: i64,
    pub url: String,
    /// HTTP status, `None` when no response came back.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The terminal key a back-office refund runs under, claimed once per idempotency key: a
/// retry with the same key finds it and replays the same request, so it never refunds twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackOfficeKeyRow {
    pub idempotency_key: String,
    pub original_rrn: String,
    pub amount_fen: i64,
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
    pub created_at_ms: i64,
}

/// Two approved payments by the same card at the same merchant for the same amount, close
/// together: the second is suspected to be a duplicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateRow {
    pub first_txn_id: i64,
    pub second_txn_id: i64,
    pub mid: String,
    pub amount_fen: i64,
    pub gap_ms: i64,
    pub flagged_at_ms: i64,
}

/// Writes of the resolve area.
#[derive(Clone, Debug)]
pub enum ResolveRecord {
    InsertCase(Box<CaseRow>),
    /// Replaces a case whose stored version is `expected_version` (else a constraint error).
    UpdateCase {
        row: Box<CaseRow>,
        expected_version: i64,
    },
    CaseEntry(CaseEntryRow),
    UpsertEndpoint(WebhookEndpointRow),
    /// Ignored when an item with the same `dedup_key` exists.
    Enqueue(Box<OutboxRow>),
    /// Claims the next attempt at pending item `outbox_id` for one notifier: moves its next
    /// attempt to `lease_until_ms`, only if it is still pending after `attempts` attempts and
    /// due at `due_at_ms` as read. Fails (the submission with it) when another notifier (another
    /// node) claimed or made the attempt first, so no event is posted twice by two nodes.
    ClaimDelivery {
        outbox_id: i64,
        attempts: u32,
        due_at_ms: i64,
        lease_until_ms: i64,
    },
    /// Makes a merchant's item that is `failed` (attempts ran out) or `no_endpoint` pending
    /// again, due at `due_at_ms`, its retries counted afresh from its attempts so far
    /// (`attempts_base`); fails (a constraint error) for any other item, or another merchant's.
    Redrive {
        outbox_id: i64,
        mid: String,
        due_at_ms: i64,
    },
    /// Puts off every pending event of merchant `mid` due before `until_ms` to then: its
    /// receiver did not answer, and its other events would only wait their timeouts too (and
    /// fill the notifier's reads, keeping other merchants' events from being read). The
    /// attempt counts against each of them that was due when it began (at `due_by_ms`: their
    /// receiver was down for them too; one put off already, by another node's attempt at the
    /// same time, is not counted twice), and one whose retries since its last redrive reach
    /// `attempts_max` is failed with it: a receiver down for good fails the merchant's waiting
    /// events together, not one or two a retry cycle while the rest wait untried.
    DeferMerchant {
        mid: String,
        until_ms: i64,
        due_by_ms: i64,
        attempts_max: u32,
    },
    /// A delivery attempt and the item's new state.
    Delivery {
        log: DeliveryRow,
        state: String,
        next_attempt_ms: i64,
        delivered_at_ms: Option<i64>,
    },
    /// Ignored when the key is already claimed (the first claim wins).
    BackOfficeKey(BackOfficeKeyRow),
    /// Ignored when the second transaction is already flagged.
    Duplicate(DuplicateRow),
    /// Where a tailing reader has got to.
    Cursor {
        name: String,
        position: i64,
    },
}
