//! Persistence for shoudan behind one trait, [`Store`]: merchants, terminals, the transaction
//! journal with its timeline, the store-and-forward reversal queue and id counters.
//!
//! Writes go through a group-commit journal: callers queue [`Record`]s and await a [`Durable`];
//! one writer thread commits whatever has queued up in a single transaction and one fsync, then
//! resolves every waiter in that group. Reads use their own connections and never wait for the
//! writer. The hot lookups of the switch (recent transactions by TID + batch + STAN, by RRN) are
//! served from the switch's own in-memory index, warmed at start from
//! [`Store::each_txn_since`] and [`Store::batches_cleared`]; the store answers the cold ones
//! (older keys and originals, settlement, recovery).

#![forbid(unsafe_code)]

mod error;
mod group;
mod model;
mod pending;
mod pg;
pub mod resolve;
pub mod risk;
pub mod schema;
pub mod settlement;
mod sqlite;
pub mod web;

pub use error::{LinkRefusal, StoreError};
pub use group::Rider;
pub use model::{
    BatchSpan, EventRow, MerchantRow, Outcome, PanAtRest, Record, SafItem, SafState, Status,
    TerminalHealthRow, TerminalRow, TxnKind, TxnRow, TxnState, TxnTally, WrappedKeys,
};
pub use pending::{Durable, Pending};
pub use pg::{
    PG_READ_CONNECT_FAILURES, PG_READ_CONNECT_PAUSE, PG_READ_CONNECTIONS_MAX, PgConfig, PgStore,
};
pub use sqlite::{
    READ_CONNECTIONS_MAX, SqliteConfig, SqliteStore, Synchronous, WRITE_BATCH_MAX, WRITE_QUEUE_MAX,
};

/// The order in which this process writes rows that have no id of their own (a transaction's
/// timeline events, a merchant's reviews), kept in their `seq`: their readers sort the rows of
/// one millisecond by it. SQLite's `rowid` followed the writes, but PostgreSQL's `ctid` does
/// not (a row goes wherever the free space map finds room). One process writes a request's
/// events; rows of one millisecond from two nodes are in no known order.
static WRITE_SEQ: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

pub(crate) fn next_write_seq() -> i64 {
    WRITE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// Rows one resolve read (payer lookup, journal tailing, a merchant's days) returns at most;
/// callers page past it ([`each_txn_of_merchant`]).
pub const RESOLVE_ROWS_MAX: u32 = 10_000;

/// Places among the nodes sharing a journal: node ids must differ modulo this (each claims its
/// place, `PgStore::claim_node`; it separates their host traces and leads their RRNs' recovery).
pub const NODE_PLACES: u8 = 10;

/// The place of node `node_id` among the nodes sharing a journal.
pub fn node_place(node_id: u8) -> u8 {
    node_id % NODE_PLACES
}

/// Calls `each` with a merchant's transactions received in `[from_ms, to_ms)`, newest first,
/// reading the store [`RESOLVE_ROWS_MAX`] rows at a time, however many there are, until
/// `each` breaks or fails.
pub fn each_txn_of_merchant<E: From<StoreError>>(
    store: &dyn Store,
    mid: &str,
    from_ms: i64,
    to_ms: i64,
    each: impl FnMut(TxnRow) -> Result<std::ops::ControlFlow<()>, E>,
) -> Result<(), E> {
    each_txn_of_merchant_before(
        store,
        mid,
        from_ms,
        (to_ms, i64::MIN),
        RESOLVE_ROWS_MAX,
        each,
    )
}

/// The same from a place in the newest-first order: the transactions received at or after
/// `from_ms` and before `before` (received at, id), read `page` rows at a time.
pub fn each_txn_of_merchant_before<E: From<StoreError>>(
    store: &dyn Store,
    mid: &str,
    from_ms: i64,
    mut before: (i64, i64),
    page: u32,
    mut each: impl FnMut(TxnRow) -> Result<std::ops::ControlFlow<()>, E>,
) -> Result<(), E> {
    loop {
        let rows = store.txns_of_merchant_newest(mid, from_ms, before, page)?;
        let complete = rows.len() < page.min(RESOLVE_ROWS_MAX) as usize;
        for row in rows {
            before = (row.received_at_ms, row.id);
            if each(row)?.is_break() {
                return Ok(());
            }
        }
        if complete {
            return Ok(());
        }
    }
}

/// Everything the switch and its neighbours persist. Writes are queued and resolve when durable;
/// reads are synchronous and may touch disk, so async callers keep them off the hot path.
pub trait Store: Send + Sync + 'static {
    /// Queues records to commit atomically together; fails fast with `QueueFull` under overload.
    fn submit(&self, records: Vec<Record>) -> Result<Durable, StoreError>;

    /// `submit`, the write kept open to records added through the returned [`Rider`] until
    /// the writer takes it into a commit: they then commit in the same transaction.
    fn submit_open(&self, records: Vec<Record>) -> Result<(Durable, Rider), StoreError>;

    /// The oldest stamp (`at_ms`) among the events of this handle's writes that are queued or
    /// being written, not yet committed or failed: a reader of events by stamp (the
    /// notification tailer) must not move past it, or it would never read that event once it
    /// lands. `None` when no write holds an event.
    fn oldest_queued_event_ms(&self) -> Option<i64>;

    /// Commits what is queued, stops the writer and waits for it; later writes fail. Blocks:
    /// call it off the async runtime (`spawn_blocking`). What a stopping process calls last.
    fn close(&self);

    /// Whether a caller on an async runtime should read this store on its own thread rather
    /// than on a blocking one: true when writes commit inline too (`SqliteConfig::inline_writer`,
    /// the deterministic simulation), where a read on another thread would let the host's
    /// timing decide the order of events.
    fn reads_inline(&self) -> bool;

    /// Reserves `count` consecutive values of a named counter, durably: a restart never hands
    /// out a value twice. Resolves to the first reserved value (counters start at 1).
    fn reserve(&self, counter: &str, count: u64) -> Result<Pending<u64>, StoreError>;

    /// The node places (node id modulo 10) that live nodes hold on this journal
    /// (`PgStore::claim_node`): `None` where the journal has no such claims (SQLite, one node).
    /// A request in flight of a node whose place is held is that node's to settle.
    fn node_places_held(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Claims up to `limit` pending reversals due at `now_ms`, pushing their next attempt to
    /// `now_ms + lease_ms` so that a crash mid-attempt only delays them.
    fn claim_reversals(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Pending<Vec<SafItem>>, StoreError>;

    fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError>;
    fn merchant(&self, mid: &str) -> Result<Option<MerchantRow>, StoreError>;
    fn terminals(&self) -> Result<Vec<TerminalRow>, StoreError>;
    /// The terminals of merchant `mid`, by tid (migration 27's index).
    fn terminals_of_merchant(&self, mid: &str) -> Result<Vec<TerminalRow>, StoreError>;
    fn terminal(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError>;
    /// Every terminal's last reported software version and clock drift, by tid.
    fn terminal_health(&self) -> Result<Vec<TerminalHealthRow>, StoreError>;
    /// The same, of merchant `mid`'s terminals only.
    fn terminal_health_of_merchant(&self, mid: &str) -> Result<Vec<TerminalHealthRow>, StoreError>;
    fn txn(&self, id: i64) -> Result<Option<TxnRow>, StoreError>;
    /// All rows with this key (an original and its reversal share one).
    fn txns_by_key(&self, tid: &str, batch_no: u32, stan: u32) -> Result<Vec<TxnRow>, StoreError>;
    fn txn_by_rrn(&self, rrn: &str) -> Result<Option<TxnRow>, StoreError>;
    fn txns_by_batch(&self, tid: &str, batch_no: u32) -> Result<Vec<TxnRow>, StoreError>;
    /// Rows whose clearing date is on or after `clearing_date` (`YYYYMMDD`), oldest first.
    fn txns_since(&self, clearing_date: &str) -> Result<Vec<TxnRow>, StoreError>;
    /// The same rows handed to `each` one at a time, by clearing date and within a date by id,
    /// without holding them all (a start loads two days of them).
    fn each_txn_since(
        &self,
        clearing_date: &str,
        each: &mut dyn FnMut(TxnRow),
    ) -> Result<(), StoreError>;
    /// The terminal batches with rows cleared on `from` up to but not including `to`
    /// (`YYYYMMDD`), each with the last such clearing date and its rows' range of STANs.
    fn batches_cleared(&self, from: &str, to: &str) -> Result<Vec<BatchSpan>, StoreError>;
    /// The lowest and highest STAN of a terminal batch's rows cleared on `since` (`YYYYMMDD`)
    /// or later; `None` if it has none. Older rows under the same batch number are another
    /// batch: a terminal replaced or reinstalled numbers its batches from 1 again.
    fn stans_of_batch(
        &self,
        tid: &str,
        batch_no: u32,
        since: &str,
    ) -> Result<Option<(u32, u32)>, StoreError>;
    fn txns_in_state(&self, state: TxnState) -> Result<Vec<TxnRow>, StoreError>;
    fn events(&self, txn_id: i64) -> Result<Vec<EventRow>, StoreError>;
    /// The balance (field 54) balance inquiry `txn_id` was answered with, if it was.
    fn balance_answer(&self, txn_id: i64) -> Result<Option<String>, StoreError>;
    fn reversal(&self, txn_id: i64) -> Result<Option<SafItem>, StoreError>;
    fn reversals_in_state(&self, state: SafState) -> Result<Vec<SafItem>, StoreError>;
    /// How many reversals are in `state`, counted in the database (an issuer's outage queues
    /// tens of thousands: a scrape of the metrics does not read them all).
    fn count_reversals_in_state(&self, state: SafState) -> Result<u64, StoreError>;
    /// How many reversals are in `state` after `attempts` attempts or more, counted in the
    /// database (the stuck ones an operator is shown).
    fn count_reversals_attempted(&self, state: SafState, attempts: u32) -> Result<u64, StoreError>;
    /// How many reversals an issuer refused other than with 25 (`SafItem::refused_standing`),
    /// counted in the database.
    fn count_reversals_refused_standing(&self) -> Result<u64, StoreError>;
    /// The first `limit` reversals (oldest transaction first) in `state` after `attempts`
    /// attempts or more: a page for the console, however many an outage queued.
    fn reversals_attempted(
        &self,
        state: SafState,
        attempts: u32,
        limit: u32,
    ) -> Result<Vec<SafItem>, StoreError>;
    /// The `limit` reversals an issuer refused other than with 25 most lately (by when it
    /// refused them).
    fn reversals_refused_standing(&self, limit: u32) -> Result<Vec<SafItem>, StoreError>;
    /// How many reversals in `state` undo transactions of merchant `mid` received in
    /// `[from_ms, to_ms)`: one query, not a read of every queued reversal's transaction.
    fn count_reversals_of_merchant(
        &self,
        state: SafState,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, StoreError>;

    // --- resolve (issue 4): payer lookup, journal tailing, cases, outbox, back office
    /// Transactions of one card (its keyed fingerprint) at one merchant, oldest first; past
    /// the row limit, the newest ones.
    fn txns_of_card_at(&self, fingerprint: &[u8], mid: &str) -> Result<Vec<TxnRow>, StoreError>;
    /// The latest approved payment (purchase or completion) of one card at one merchant for
    /// `amount_fen`, received at or after `from_ms` and before `before` (received at, id): the
    /// duplicate check after each approved payment, answered through the (card, time) index
    /// however long the card's history.
    fn latest_payment_of_card(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        from_ms: i64,
        before: (i64, i64),
    ) -> Result<Option<TxnRow>, StoreError>;
    /// The earliest such payment received after `after` (received at, id) and at or before
    /// `to_ms`: the duplicate check of a payment approved after the one that followed it.
    fn earliest_payment_of_card_after(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        after: (i64, i64),
        to_ms: i64,
    ) -> Result<Option<TxnRow>, StoreError>;
    /// A merchant's transactions received at or after `from_ms` and before `before` (received
    /// at, id), newest first, at most `limit` (and `RESOLVE_ROWS_MAX`): see
    /// [`each_txn_of_merchant`] to read them all.
    fn txns_of_merchant_newest(
        &self,
        mid: &str,
        from_ms: i64,
        before: (i64, i64),
        limit: u32,
    ) -> Result<Vec<TxnRow>, StoreError>;
    /// A merchant's transactions received in `[from_ms, to_ms)`, counted by terminal, kind,
    /// state, response code and hour since `from_ms`, in the database: a dashboard's or a
    /// terminal's numbers without reading the rows.
    fn tally_of_merchant(
        &self,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TxnTally>, StoreError>;
    /// Rows whose `original_id` is `id`: its voids, refunds, completions and reversal.
    fn txns_linked_to(&self, id: i64) -> Result<Vec<TxnRow>, StoreError>;
    /// Timeline events at or after `at_ms`, oldest first, at most `limit`.
    fn events_since(&self, at_ms: i64, limit: u32) -> Result<Vec<EventRow>, StoreError>;
    fn case(&self, id: i64) -> Result<Option<resolve::CaseRow>, StoreError>;
    fn cases(&self, query: &resolve::CaseQuery<'_>) -> Result<Vec<resolve::CaseRow>, StoreError>;
    /// How many of merchant `mid`'s cases are open (neither resolved nor rejected), counted in
    /// the database.
    fn count_open_cases(&self, mid: &str) -> Result<u64, StoreError>;
    /// The cases about transaction `txn_id`, oldest first.
    fn cases_of_txn(&self, txn_id: i64) -> Result<Vec<resolve::CaseRow>, StoreError>;
    fn case_entries(&self, case_id: i64) -> Result<Vec<resolve::CaseEntryRow>, StoreError>;
    fn webhook_endpoint(
        &self,
        mid: &str,
    ) -> Result<Option<resolve::WebhookEndpointRow>, StoreError>;
    /// The merchants with pending notifications due at `now_ms`, the one whose first is due
    /// soonest first (then by merchant ID), after `after` (a page's last: its first due time
    /// and merchant ID), at most `limit`, each with its receiver's URL: each merchant once,
    /// however long its backlog, so that no merchant's backlog (nor a few merchants') fills
    /// the read and leaves the others' events unread.
    fn outbox_due_merchants(
        &self,
        now_ms: i64,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<resolve::DueMerchant>, StoreError>;
    /// Merchant `mid`'s pending notifications due at `now_ms`, the soonest due first (then by
    /// id), at most `limit`.
    fn outbox_due_of_merchant(
        &self,
        mid: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<resolve::OutboxRow>, StoreError>;
    /// A merchant's notifications with an id below `before_id` (from the newest when `None`),
    /// newest first, at most `limit` (and at most [`RESOLVE_ROWS_MAX`]).
    fn outbox_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<resolve::OutboxRow>, StoreError>;
    fn outbox_item(&self, id: i64) -> Result<Option<resolve::OutboxRow>, StoreError>;
    fn webhook_deliveries(&self, outbox_id: i64) -> Result<Vec<resolve::DeliveryRow>, StoreError>;
    fn backoffice_key(&self, key: &str) -> Result<Option<resolve::BackOfficeKeyRow>, StoreError>;
    /// A merchant's duplicate flags whose second payment's id is below `before_id` (from the
    /// newest when `None`), newest first, at most `limit` (and at most [`RESOLVE_ROWS_MAX`]).
    fn duplicates_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<resolve::DuplicateRow>, StoreError>;
    /// A merchant's duplicate flags raised at or after `since_ms`, the newest flagged first, at
    /// most `limit` (and at most [`RESOLVE_ROWS_MAX`]). By the time flagged, not by payment id:
    /// with several nodes, ids are taken in blocks per node, and a higher one is not a newer
    /// payment.
    fn duplicates_flagged_since(
        &self,
        mid: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<resolve::DuplicateRow>, StoreError>;
    /// The duplicate flags a transaction is in, as the first payment or the second.
    fn duplicates_of_txn(&self, txn_id: i64) -> Result<Vec<resolve::DuplicateRow>, StoreError>;
    fn resolve_cursor(&self, name: &str) -> Result<Option<i64>, StoreError>;

    // --- risk (issue 7): merchant onboarding and review, risk alerts
    /// A merchant's qualification data and lifecycle state; `None` for a merchant provisioned
    /// without onboarding, whose state follows `MerchantRow::status`.
    fn merchant_profile(&self, mid: &str) -> Result<Option<risk::MerchantProfileRow>, StoreError>;
    fn merchant_profiles(&self) -> Result<Vec<risk::MerchantProfileRow>, StoreError>;
    /// A merchant's review history, oldest first.
    fn merchant_reviews(&self, mid: &str) -> Result<Vec<risk::MerchantReviewRow>, StoreError>;
    fn risk_alert(&self, id: i64) -> Result<Option<risk::RiskAlertRow>, StoreError>;
    /// Alerts in `state` (all when `None`), newest first, at most `limit`.
    fn risk_alerts(
        &self,
        state: Option<risk::AlertState>,
        limit: u32,
    ) -> Result<Vec<risk::RiskAlertRow>, StoreError>;
    /// The (merchant, terminal) of every open alert of `kind` whose rule declines, each once,
    /// however many other alerts there are: the terminals such a rule holds until an operator
    /// looks (a start reads them back; bounded by the terminals, not by a page).
    fn risk_open_declining(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Alerts with an id above `after_id`, oldest first: the notification outbox tails these.
    fn risk_alerts_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<risk::RiskAlertRow>, StoreError>;
    /// Alerts of `kind` resolved (cleared or acted on) at or after `since_ms`, oldest
    /// resolution first, at most `limit`: who they were about, and when.
    fn risk_alerts_resolved_since(
        &self,
        kind: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<risk::ResolvedAlert>, StoreError>;

    // --- settlement (issue 5): batches, clearing, ledger, accounts, payouts
    /// Rows of exactly one clearing date (`YYYYMMDD`), oldest first.
    fn txns_on(&self, clearing_date: &str) -> Result<Vec<TxnRow>, StoreError>;
    fn batch_settlement(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Option<settlement::BatchSettlementRow>, StoreError>;
    /// The newest `limit` batch settlements (by when settled), of merchant `mid`'s terminals or
    /// of every terminal, each with its terminal's merchant.
    fn batch_settlements_recent(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, settlement::BatchSettlementRow)>, StoreError>;
    fn batch_uploads(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<settlement::BatchUploadRow>, StoreError>;
    fn batch_differences(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<settlement::BatchDiffRow>, StoreError>;
    fn clearing_lines(
        &self,
        clearing_date: &str,
    ) -> Result<Vec<settlement::ClearingLineRow>, StoreError>;
    /// One merchant's clearing totals per clearing date, or all merchants', newest date first,
    /// at most `limit`.
    fn clearing_totals(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<settlement::ClearingTotalRow>, StoreError>;
    /// The clearing dates of transactions with a timeline event at or after `at_ms`, oldest
    /// first: the days something happened to since then (a reversal, a late answer), which a
    /// settle run clears again.
    fn clearing_dates_touched_since(&self, at_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Settle runs of one clearing date, or of all dates when `None`.
    fn settle_runs(
        &self,
        clearing_date: Option<&str>,
    ) -> Result<Vec<settlement::SettleRunRow>, StoreError>;
    /// Every ledger account with its balance (debits positive), by account name.
    fn ledger_balances(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// One account's balance over legs with a value date up to `value_date_max` (all if `None`).
    fn ledger_balance(
        &self,
        account: &str,
        value_date_max: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// Audit: (posting id, sum of its legs) of every posting that does not balance.
    fn unbalanced_postings(&self) -> Result<Vec<(i64, i64)>, StoreError>;
    fn postings_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<settlement::PostingRow>, StoreError>;
    fn settlement_terms(
        &self,
        mid: &str,
    ) -> Result<Option<settlement::SettlementTermsRow>, StoreError>;
    fn bound_account(&self, mid: &str) -> Result<Option<settlement::BoundAccountRow>, StoreError>;
    /// Bound-account changes of one merchant, or of all when `None`, oldest first.
    fn account_changes(
        &self,
        mid: Option<&str>,
    ) -> Result<Vec<settlement::AccountChangeRow>, StoreError>;
    /// The account changes waiting for a second person's confirmation, of every merchant,
    /// oldest first (a merchant has one at most: a new one supersedes it).
    fn account_changes_pending(&self) -> Result<Vec<settlement::AccountChangeRow>, StoreError>;
    fn account_change(&self, id: i64) -> Result<Option<settlement::AccountChangeRow>, StoreError>;
    fn payout(&self, key: &str) -> Result<Option<settlement::PayoutRow>, StoreError>;
    /// Payouts of one merchant or all, in one state or any, oldest payout day first (the
    /// payout run's order), at most `limit`.
    fn payouts(
        &self,
        mid: Option<&str>,
        state: Option<settlement::PayoutState>,
        limit: u32,
    ) -> Result<Vec<settlement::PayoutRow>, StoreError>;
    /// How many payouts are pending with `failure` as their last failure and a first attempt
    /// at or before `first_attempt_by_ms`, counted in the database (the metrics' stuck payouts).
    fn count_payouts_failing_since(
        &self,
        failure: &str,
        first_attempt_by_ms: i64,
    ) -> Result<u64, StoreError>;
    /// The payouts a failure left waiting (held, returned, or pending its next attempt), at
    /// most `limit`, and how many there are in all: what the console lists, however many
    /// payouts went out since. Stuck ones first (pending on `stuck_failure` since a first
    /// attempt at or before `stuck_by_ms`, as [`Store::count_payouts_failing_since`] counts
    /// them), then the newest payout day first.
    fn payouts_failing(
        &self,
        stuck_failure: &str,
        stuck_by_ms: i64,
        limit: u32,
    ) -> Result<(u64, Vec<settlement::PayoutRow>), StoreError>;
    /// The same, newest payout day first: what a merchant or an operator looks at.
    fn payouts_newest(
        &self,
        mid: Option<&str>,
        state: Option<settlement::PayoutState>,
        limit: u32,
    ) -> Result<Vec<settlement::PayoutRow>, StoreError>;
    /// The page of [`Store::payouts_newest`] after `before` (payout day, MID: the last row of
    /// the page before), newest first.
    fn payouts_newest_before(
        &self,
        mid: Option<&str>,
        state: Option<settlement::PayoutState>,
        before: (&str, &str),
        limit: u32,
    ) -> Result<Vec<settlement::PayoutRow>, StoreError>;
    /// The merchants with a payout in `state`, by MID, after `after` (from the first when
    /// `None`), at most `limit`: a payout run takes each one's payouts in turn, so that many
    /// waiting for one merchant (held for an account never re-bound) do not keep another's
    /// from being read.
    fn payout_merchants(
        &self,
        state: settlement::PayoutState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// References of payments the bank reported returned that no run has acted on yet.
    fn payout_returns_open(&self, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Payout events with an id above `after_id`, oldest first: the notifier's tail.
    fn payout_events(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<settlement::PayoutEventRow>, StoreError>;

    // --- web (issue 6): users, page sessions, API tokens, audit log
    fn web_user(&self, id: i64) -> Result<Option<web::UserRow>, StoreError>;
    fn web_user_by_name(&self, username: &str) -> Result<Option<web::UserRow>, StoreError>;
    fn web_users(&self) -> Result<Vec<web::UserRow>, StoreError>;
    /// The usernames of the acquirer's staff (every role but merchant), by id: what a merchant
    /// sees as "acquirer staff" on its cases.
    fn web_staff_usernames(&self) -> Result<Vec<String>, StoreError>;
    /// The wrong passwords in a row of `user_id` (at most one row), or of every user that has
    /// some when `None`.
    fn web_login_failures(
        &self,
        user_id: Option<i64>,
    ) -> Result<Vec<web::LoginFailuresRow>, StoreError>;
    fn web_session(&self, token_hash: &[u8]) -> Result<Option<web::SessionRow>, StoreError>;
    fn web_api_token(&self, token_hash: &[u8]) -> Result<Option<web::ApiTokenRow>, StoreError>;
    /// `user_id`'s API tokens issued at or after `created_since_ms` (those not expired yet),
    /// newest first, at most [`web::API_TOKENS_LISTED_MAX`].
    fn web_api_tokens(
        &self,
        user_id: i64,
        created_since_ms: i64,
    ) -> Result<Vec<web::ApiTokenRow>, StoreError>;
    /// Audit rows with an id below `before_id` (all when `None`), newest first, at most `limit`.
    fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<web::AuditRow>, StoreError>;
    /// The newest audit row on `target` whose action is one of `actions`.
    fn audit_last_on(
        &self,
        target: &str,
        actions: &[&str],
    ) -> Result<Option<web::AuditRow>, StoreError>;
}
