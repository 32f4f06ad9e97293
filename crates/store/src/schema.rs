//! The schema as versioned migrations, in SQL that SQLite and PostgreSQL both accept. The one
//! type they spell differently, a byte string, is written `BYTES` and substituted per backend.
//! Ids are allocated by the switch (it must know a transaction's id before the row is durable),
//! so no table relies on an auto-increment column, which the two engines spell differently too.

/// One schema step. Applied in order, each in its own transaction, recorded in
/// `schema_migrations`; a step never changes once released.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Byte-string column types per backend.
pub const SQLITE_BYTES: &str = "BLOB";
pub const POSTGRES_BYTES: &str = "BYTEA";

/// The table that records which migrations ran; created before any migration.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "merchants, terminals, transactions, events, reversal queue, counters",
        sql: "
CREATE TABLE merchants (
    mid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    mcc TEXT NOT NULL
);
CREATE TABLE terminals (
    tid TEXT PRIMARY KEY,
    mid TEXT NOT NULL REFERENCES merchants (mid),
    tmk_wrapped BYTES NOT NULL,
    key_scheme TEXT NOT NULL,
    mac_algorithm TEXT NOT NULL,
    status TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    last_sign_in_ms BIGINT,
    pik_wrapped BYTES,
    mak_wrapped BYTES,
    tdk_wrapped BYTES
);
CREATE TABLE transactions (
    id BIGINT PRIMARY KEY,
    tid TEXT NOT NULL,
    mid TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    stan BIGINT NOT NULL,
    kind TEXT NOT NULL,
    mti TEXT NOT NULL,
    processing_code TEXT NOT NULL,
    condition_code TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    currency TEXT NOT NULL,
    pan_sealed BYTES,
    pan_fingerprint BYTES,
    pan_masked TEXT,
    pan_last4 TEXT,
    pan_bin TEXT,
    issuer TEXT,
    rrn TEXT UNIQUE,
    host_trace BIGINT,
    auth_code TEXT,
    response_code TEXT,
    state TEXT NOT NULL,
    request_hash BYTES NOT NULL,
    original_id BIGINT REFERENCES transactions (id),
    refunded_fen BIGINT NOT NULL DEFAULT 0,
    field60 TEXT,
    host_date TEXT,
    clearing_date TEXT NOT NULL,
    settlement_date TEXT,
    received_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT,
    issuer_answered_at_ms BIGINT,
    answered_at_ms BIGINT
);
CREATE INDEX transactions_key ON transactions (tid, batch_no, stan);
CREATE INDEX transactions_clearing ON transactions (clearing_date);
CREATE INDEX transactions_state ON transactions (state);
CREATE TABLE events (
    txn_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_txn ON events (txn_id, at_ms);
CREATE TABLE reversal_queue (
    txn_id BIGINT PRIMARY KEY REFERENCES transactions (id),
    issuer TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    done_at_ms BIGINT
);
CREATE INDEX reversal_queue_due ON reversal_queue (state, next_attempt_ms);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    next_value BIGINT NOT NULL
);
",
    },
    Migration {
        version: 2,
        name: "risk: merchant profiles and reviews, risk alerts and their transactions",
        sql: "
CREATE TABLE merchant_profiles (
    mid TEXT PRIMARY KEY REFERENCES merchants (mid),
    state TEXT NOT NULL,
    licence_no TEXT NOT NULL,
    legal_person TEXT NOT NULL,
    mcc TEXT NOT NULL,
    address TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL,
    reviewed_by TEXT,
    reviewed_at_ms BIGINT,
    note TEXT
);
CREATE TABLE merchant_reviews (
    mid TEXT NOT NULL REFERENCES merchants (mid),
    at_ms BIGINT NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX merchant_reviews_mid ON merchant_reviews (mid, at_ms);
CREATE TABLE risk_alerts (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    action TEXT NOT NULL,
    mid TEXT NOT NULL,
    tid TEXT NOT NULL,
    detail TEXT NOT NULL,
    raised_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    resolved_by TEXT,
    resolved_at_ms BIGINT,
    resolution TEXT
);
CREATE INDEX risk_alerts_state ON risk_alerts (state, id);
CREATE INDEX risk_alerts_mid ON risk_alerts (mid, id);
CREATE TABLE risk_alert_txns (
    alert_id BIGINT NOT NULL REFERENCES risk_alerts (id),
    txn_id BIGINT NOT NULL,
    PRIMARY KEY (alert_id, txn_id)
);
",
    },
    Migration {
        version: 3,
        name: "resolve: cases, outbox, webhook deliveries, back-office refunds, duplicate flags",
        sql: "
CREATE TABLE cases (
    id BIGINT PRIMARY KEY,
    mid TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    txn_id BIGINT,
    title TEXT NOT NULL,
    assignee TEXT,
    due_at_ms BIGINT,
    refund_fen BIGINT,
    approved_by TEXT,
    refund_txn_id BIGINT,
    refund_rrn TEXT,
    refund_code TEXT,
    resolution TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX cases_mid ON cases (mid, state);
CREATE TABLE case_entries (
    case_id BIGINT NOT NULL REFERENCES cases (id),
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    text TEXT NOT NULL,
    attachments TEXT NOT NULL,
    PRIMARY KEY (case_id, seq)
);
CREATE TABLE webhook_endpoints (
    mid TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret_sealed BYTES NOT NULL,
    active BOOLEAN NOT NULL
);
CREATE TABLE outbox (
    id BIGINT PRIMARY KEY,
    mid TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_mid ON outbox (mid, id);
CREATE TABLE webhook_deliveries (
    outbox_id BIGINT NOT NULL REFERENCES outbox (id),
    attempt BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    url TEXT NOT NULL,
    status BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (outbox_id, attempt)
);
CREATE TABLE backoffice_refunds (
    idempotency_key TEXT PRIMARY KEY,
    original_rrn TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    tid TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    stan BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE duplicate_flags (
    first_txn_id BIGINT NOT NULL,
    second_txn_id BIGINT PRIMARY KEY,
    mid TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    gap_ms BIGINT NOT NULL,
    flagged_at_ms BIGINT NOT NULL
);
CREATE INDEX duplicate_flags_mid ON duplicate_flags (mid);
CREATE TABLE resolve_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
CREATE INDEX transactions_fingerprint ON transactions (pan_fingerprint);
CREATE INDEX transactions_mid_received ON transactions (mid, received_at_ms);
CREATE INDEX transactions_original ON transactions (original_id);
CREATE INDEX events_at ON events (at_ms);
",
    },
    Migration {
        version: 4,
        name: "settlement: batch settlements and uploads, clearing, ledger, accounts, payouts",
        sql: "
CREATE TABLE batch_settlements (
    tid TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    settled_at_ms BIGINT NOT NULL,
    result BIGINT NOT NULL,
    host_totals TEXT NOT NULL,
    terminal_totals TEXT NOT NULL,
    upload_done_at_ms BIGINT,
    PRIMARY KEY (tid, batch_no)
);
CREATE TABLE batch_uploads (
    tid TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    stan BIGINT NOT NULL,
    card_org BIGINT NOT NULL,
    pan_last4 TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tid, batch_no, stan)
);
CREATE TABLE batch_differences (
    tid TEXT NOT NULL,
    batch_no BIGINT NOT NULL,
    stan BIGINT NOT NULL,
    kind TEXT NOT NULL,
    txn_id BIGINT,
    host_amount_fen BIGINT,
    terminal_amount_fen BIGINT,
    pan_masked TEXT NOT NULL,
    PRIMARY KEY (tid, batch_no, stan)
);
-- Keyed by date first: a settle run appends a day's lines in key order (no random index
-- inserts), which is what lets a million-transaction day clear in seconds.
CREATE TABLE clearing_lines (
    txn_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    mid TEXT NOT NULL,
    clearing_date TEXT NOT NULL,
    kind TEXT NOT NULL,
    card_class TEXT NOT NULL,
    issuer TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    fee_fen BIGINT NOT NULL,
    run_at_ms BIGINT NOT NULL,
    PRIMARY KEY (clearing_date, txn_id, seq)
);
CREATE TABLE settle_runs (
    clearing_date TEXT NOT NULL,
    run_no BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    gross_fen BIGINT NOT NULL,
    fee_fen BIGINT NOT NULL,
    postings BIGINT NOT NULL,
    PRIMARY KEY (clearing_date, run_no)
);
CREATE TABLE ledger_postings (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    value_date TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL
);
CREATE INDEX ledger_postings_reference ON ledger_postings (reference);
CREATE TABLE ledger_legs (
    posting_id BIGINT NOT NULL REFERENCES ledger_postings (id),
    leg_no BIGINT NOT NULL,
    account TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    value_date TEXT NOT NULL,
    PRIMARY KEY (posting_id, leg_no)
);
CREATE INDEX ledger_legs_account ON ledger_legs (account, value_date);
CREATE TABLE settlement_terms (
    mid TEXT PRIMARY KEY,
    debit_bp BIGINT NOT NULL,
    debit_cap_fen BIGINT,
    credit_bp BIGINT NOT NULL,
    credit_cap_fen BIGINT,
    foreign_bp BIGINT NOT NULL,
    qr_bp BIGINT NOT NULL,
    payout_delay_days BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE bound_accounts (
    mid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    number_sealed BYTES NOT NULL,
    number_masked TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    bank_code TEXT NOT NULL,
    version BIGINT NOT NULL,
    needs_rebind BOOLEAN NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE account_changes (
    id BIGINT PRIMARY KEY,
    mid TEXT NOT NULL,
    kind TEXT NOT NULL,
    number_sealed BYTES NOT NULL,
    number_masked TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    bank_code TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at_ms BIGINT,
    note TEXT NOT NULL
);
CREATE INDEX account_changes_mid ON account_changes (mid, id);
CREATE TABLE payouts (
    key TEXT PRIMARY KEY,
    mid TEXT NOT NULL,
    payout_date TEXT NOT NULL,
    cutoff_date TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    account_version BIGINT NOT NULL,
    account_masked TEXT NOT NULL,
    bank_reference TEXT,
    failure TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX payouts_state ON payouts (state, next_attempt_ms);
CREATE TABLE payout_events (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    mid TEXT NOT NULL,
    payout_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    failure TEXT,
    detail TEXT NOT NULL
);
",
    },
    Migration {
        version: 5,
        name: "web: users, page sessions, API tokens, audit log",
        sql: "
CREATE TABLE web_users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    mid TEXT,
    display_name TEXT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE web_sessions (
    token_hash BYTES PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES web_users (id),
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE web_api_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES web_users (id),
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL
);
CREATE TABLE audit_log (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT
);
",
    },
    Migration {
        version: 6,
        name: "terminal health: software version and clock drift from the terminals' frames",
        sql: "
CREATE TABLE terminal_health (
    tid TEXT PRIMARY KEY,
    application_type BIGINT NOT NULL,
    software_version BIGINT NOT NULL,
    sub_version BIGINT NOT NULL,
    clock_drift_s BIGINT,
    seen_at_ms BIGINT NOT NULL
);
",
    },
    Migration {
        version: 7,
        name: "terminal health: chip-to-magstripe fallbacks per terminal",
        sql: "
ALTER TABLE terminal_health ADD COLUMN fallbacks BIGINT NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 8,
        name: "transactions: partial indexes for the rows in flight and the linked rows",
        // Each index is a page written per journal commit. The full state index moved two
        // entries per authorisation (in flight, then the outcome) and was read only for the
        // rows in flight, which recovery needs; purchases, most of the rows, have no original.
        sql: "
DROP INDEX transactions_state;
CREATE INDEX transactions_in_flight ON transactions (id) WHERE state = 'in_flight';
DROP INDEX transactions_original;
CREATE INDEX transactions_original ON transactions (original_id) WHERE original_id IS NOT NULL;
",
    },
    Migration {
        version: 9,
        name: "transactions: a card's rows by time",
        // The duplicate check after each approved payment looks at the card's last minutes;
        // by card alone it read the card's whole history (a busy card: thousands of rows per
        // approval). Still one index entry per row written.
        sql: "
DROP INDEX transactions_fingerprint;
CREATE INDEX transactions_card_received ON transactions (pan_fingerprint, received_at_ms);
",
    },
    Migration {
        version: 10,
        name: "cases: a merchant's newest first, the open ones, a transaction's",
        // The console's queue and a merchant's list read every case ever opened (the oldest
        // 10,000 of a merchant); now each reads a page back from the newest, or the open ones.
        sql: "
DROP INDEX cases_mid;
CREATE INDEX cases_mid ON cases (mid, id);
CREATE INDEX cases_open ON cases (id) WHERE state NOT IN ('resolved', 'rejected');
CREATE INDEX cases_open_mid ON cases (mid, id) WHERE state NOT IN ('resolved', 'rejected');
CREATE INDEX cases_txn ON cases (txn_id) WHERE txn_id IS NOT NULL;
",
    },
    Migration {
        version: 11,
        name: "duplicate flags and payouts: a merchant's newest first",
        sql: "
DROP INDEX duplicate_flags_mid;
CREATE INDEX duplicate_flags_mid ON duplicate_flags (mid, second_txn_id);
CREATE INDEX duplicate_flags_first ON duplicate_flags (first_txn_id);
CREATE INDEX payouts_mid ON payouts (mid, payout_date);
",
    },
    Migration {
        version: 12,
        name: "clearing totals per merchant and clearing date",
        // A settlement page summed every clearing line of every date (a line per transaction);
        // a settle run now writes its merchants' sums, and these are the lines cleared so far.
        sql: "
CREATE TABLE clearing_totals (
    clearing_date TEXT NOT NULL,
    mid TEXT NOT NULL,
    lines BIGINT NOT NULL,
    gross_fen BIGINT NOT NULL,
    fee_fen BIGINT NOT NULL,
    PRIMARY KEY (clearing_date, mid)
);
CREATE INDEX clearing_totals_mid ON clearing_totals (mid, clearing_date);
INSERT INTO clearing_totals (clearing_date, mid, lines, gross_fen, fee_fen)
SELECT clearing_date, mid, COUNT(*), CAST(SUM(amount_fen) AS BIGINT),
       CAST(SUM(fee_fen) AS BIGINT)
FROM clearing_lines GROUP BY clearing_date, mid;
",
    },
    Migration {
        version: 13,
        name: "web users: wrong passwords in a row, sessions and tokens by user",
        // A row per user whose last sign-in attempts failed; a right password or an admin's
        // unlock deletes it. The web layer locks the user after too many (see `web::auth`).
        // A new password ends the user's page sessions and revokes their API tokens, and
        // disabling a user ends its sessions: both found by user.
        sql: "
CREATE TABLE web_login_failures (
    user_id BIGINT PRIMARY KEY REFERENCES web_users (id),
    failures BIGINT NOT NULL,
    last_at_ms BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_api_tokens_user ON web_api_tokens (user_id);
",
    },
    Migration {
        version: 14,
        name: "balance inquiries: the balance the terminal was told",
        // A retried balance inquiry gets the same answer as the first (DESIGN.md invariant 2),
        // field 54 included, even when the switch answering the retry holds no memory of it
        // (a restart, another node, an entry let go). One row per approved inquiry.
        sql: "
CREATE TABLE balance_answers (
    txn_id BIGINT PRIMARY KEY REFERENCES transactions (id),
    field54 TEXT NOT NULL
);
",
    },
    Migration {
        version: 15,
        name: "payouts the bank returned, kept until handled",
        // A bank reports each return once: it is written here before it is acted on, so a
        // run that fails part-way acts on it at the next run instead of losing it.
        sql: "
CREATE TABLE payout_returns (
    reference TEXT PRIMARY KEY,
    reported_on TEXT NOT NULL,
    handled_at_ms BIGINT
);
CREATE INDEX payout_returns_open ON payout_returns (reference) WHERE handled_at_ms IS NULL;
",
    },
    Migration {
        version: 16,
        name: "risk alerts by resolution time",
        // Each switch looks every second for the network-change alerts an operator resolved,
        // to let those terminals' new networks in.
        sql: "
CREATE INDEX risk_alerts_resolved ON risk_alerts (kind, resolved_at_ms)
    WHERE resolved_at_ms IS NOT NULL;
",
    },
    Migration {
        version: 17,
        name: "a batch number opened again: where its rows start",
        // A terminal replaced or reinstalled numbers its batches from 1 again: under a number
        // settled before, the rows of the batch being settled are those received after that
        // earlier settlement. Kept with the settlement for its upload's comparison, which
        // comes after the settlement has replaced the earlier one's row.
        sql: "
ALTER TABLE batch_settlements ADD COLUMN opened_after_ms BIGINT;
",
    },
    Migration {
        version: 18,
        name: "a notification sent again gets its attempts afresh",
        // The attempts an item had when it was last sent again (redriven): its retries since
        // are counted from there, against the notifier's limit, while the delivery log keeps
        // numbering every attempt.
        sql: "
ALTER TABLE outbox ADD COLUMN attempts_base BIGINT NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 19,
        name: "a payout's reference keeps the account it was made for",
        // Written before the bank is first asked to pay the reference, so that a run that
        // stops before recording the answer, or a re-binding before a retry, cannot turn the
        // retry into a second payment under a new reference or to another account.
        sql: "
ALTER TABLE payouts ADD COLUMN sent_number_sealed BYTES;
ALTER TABLE payouts ADD COLUMN sent_holder_name TEXT;
ALTER TABLE payouts ADD COLUMN sent_bank_code TEXT;
",
    },
    Migration {
        version: 20,
        name: "a settle run marks the events it read through once it has finished",
        // Set only on the run of the date asked for, written after the dates it cleared
        // again: a run that stops part-way leaves the mark where it was, and the next run
        // reads those events again.
        sql: "
ALTER TABLE settle_runs ADD COLUMN events_through_ms BIGINT;
",
    },
    Migration {
        version: 21,
        name: "a clearing date's transactions in id order from the index",
        // `each_txn_since` reads a date a page at a time after the last id read: with the id
        // in the index each page is a range of it, not the whole date sorted again (the id is
        // not SQLite's rowid, which the old index carried). The new one is built before the old
        // one goes, so the table is locked against everything only for the drop; the build
        // still holds writes back (on PostgreSQL: upgrade with the nodes stopped).
        sql: "
CREATE INDEX transactions_clearing_id ON transactions (clearing_date, id);
DROP INDEX transactions_clearing;
",
    },
    Migration {
        version: 22,
        name: "a risk alert's words in Chinese too",
        // Alerts raised before it have only the English words; the console shows those.
        sql: "
ALTER TABLE risk_alerts ADD COLUMN detail_zh TEXT;
",
    },
    Migration {
        version: 23,
        name: "a row per terminal ID that claims of its request keys lock",
        // The claims of one terminal's keys by nodes sharing the journal wait for each other
        // on it. They locked the terminal's own row, but the back office's virtual terminal
        // (and any terminal not provisioned) has none, so two nodes' claims of one of its keys
        // both found it free.
        sql: "
CREATE TABLE key_locks (
    tid TEXT PRIMARY KEY
);
",
    },
    Migration {
        version: 24,
        name: "a payout keeps when the bank was first asked to pay its reference",
        // A payout the bank answers with system errors is retried for ever; how long since its
        // first attempt tells an operator when to call the bank. A payout already retrying
        // takes it from its reference's `sending` event (the newest: a released payout's
        // reference is a new one, sent again), or, from before those events, its creation.
        sql: "
ALTER TABLE payouts ADD COLUMN first_attempt_ms BIGINT;
UPDATE payouts SET first_attempt_ms = COALESCE(
    (SELECT MAX(e.at_ms) FROM payout_events e
     WHERE e.payout_key = payouts.key AND e.kind = 'sending'),
    created_at_ms)
WHERE state = 'pending' AND attempts > 0;
",
    },
    Migration {
        version: 25,
        name: "the audit log by target and action: who last set a user's password",
        // Read at every signed-in request (a password an admin set is for its first use): the
        // few rows of a user's password actions, not its sign-ins and wrong passwords, which
        // anyone who knows the name can add to.
        sql: "
CREATE INDEX audit_log_target_action ON audit_log (target, action, id);
",
    },
    Migration {
        version: 26,
        name: "cases: one refund application of a sale waits for a decision at a time",
        // The service checked it by reading first, so two applications opened at once (a
        // double click, a client's retry, two nodes) both passed, and approving both refunded
        // the card twice what was asked. Any such pair already written is settled first: one
        // stands, the one an operator already approved (a refund attempted, its outcome in
        // doubt) or else the first opened; the others are closed as rejected.
        sql: "
UPDATE cases SET state = 'rejected', version = version + 1,
    resolution = 'opened at the same moment as another application of the same sale, '
        || 'which stands (closed at upgrade)'
WHERE kind = 'refund_application'
  AND state NOT IN ('resolved', 'rejected')
  AND COALESCE(refund_code, '') <> '00'
  AND EXISTS (SELECT 1 FROM cases kept
      WHERE kept.txn_id = cases.txn_id AND kept.id <> cases.id
        AND kept.kind = 'refund_application'
        AND kept.state NOT IN ('resolved', 'rejected')
        AND COALESCE(kept.refund_code, '') <> '00'
        AND (CASE WHEN kept.state = 'waiting_issuer' AND kept.refund_code IS NOT NULL
                  THEN 0 ELSE 1 END, kept.id)
            < (CASE WHEN cases.state = 'waiting_issuer' AND cases.refund_code IS NOT NULL
                  THEN 0 ELSE 1 END, cases.id));
CREATE UNIQUE INDEX cases_refund_waiting ON cases (txn_id)
    WHERE kind = 'refund_application'
      AND state NOT IN ('resolved', 'rejected')
      AND COALESCE(refund_code, '') <> '00';
",
    },
    Migration {
        version: 27,
        name: "terminals by merchant: a merchant's pages read its own terminals, not all of them",
        // The portal's terminal and settlement pages read the merchant's terminals (and their
        // health) at every view; an acquirer's hundred thousand terminals were read each time.
        sql: "
CREATE INDEX terminals_by_merchant ON terminals (mid, tid);
",
    },
    Migration {
        version: 28,
        name: "a merchant's due notifications: read without its delivered ones",
        // The notifier reads the due events of each merchant it serves; by (mid, id) alone
        // that walked every event the merchant ever had.
        sql: "
CREATE INDEX outbox_mid_due ON outbox (mid, state, next_attempt_ms);
",
    },
    Migration {
        version: 29,
        name: "a merchant's duplicate flags by the time they were raised",
        // The portal's card of the day's suspected duplicates read the newest flags by payment
        // id; with several nodes taking ids in blocks, a busy node's older flags could fill it
        // and hide the day's.
        sql: "
CREATE INDEX duplicate_flags_mid_flagged ON duplicate_flags (mid, flagged_at_ms);
",
    },
    Migration {
        version: 30,
        name: "the order rows without an id were written in: events and merchant reviews",
        // Rows of one millisecond were read in `rowid` order, `ctid` on PostgreSQL, which need
        // not follow the writes: a timeline's steps, or which review came last (the four-eyes
        // check), could come out of order there. Rows before this keep 0, then `rowid`.
        sql: "
ALTER TABLE events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE merchant_reviews ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 31,
        name: "batch settlements by when settled",
        // The settlement pages read the newest settlements, across a merchant's terminals or
        // every terminal, rather than each terminal's last batch numbers one at a time.
        sql: "
CREATE INDEX batch_settlements_by_time ON batch_settlements (settled_at_ms);
",
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What a database holds, read without changing it (`serve --check`): whether its tables
/// exist, the migrations a start would apply, and its terminals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The database (its migrations table) exists.
    pub exists: bool,
    /// Migrations not yet applied (version, name), in order: a start applies them.
    pub pending: Vec<(i64, &'static str)>,
    /// Terminals in the journal; `None` before the tables exist.
    pub terminals: Option<u64>,
    /// The merchants' MIDs in the journal (empty before the tables exist): what a start
    /// checks a fee plan's merchant against.
    pub merchants: Vec<String>,
}

impl SchemaStatus {
    /// From the versions a database records; refused as a start would refuse it when it
    /// records a version this build does not know (a newer build migrated it).
    pub fn from_applied(
        exists: bool,
        applied: &[i64],
        terminals: Option<u64>,
        merchants: Vec<String>,
    ) -> Result<Self, crate::StoreError> {
        let known = latest_version();
        if let Some(&found) = applied.iter().max()
            && found > known
        {
            return Err(crate::StoreError::SchemaTooNew { found, known });
        }
        Ok(SchemaStatus {
            exists,
            pending: MIGRATIONS
                .iter()
                .filter(|m| !applied.contains(&m.version))
                .map(|m| (m.version, m.name))
                .collect(),
            terminals,
            merchants,
        })
    }
}

/// A migration's SQL for a backend whose byte-string type is `bytes`.
pub fn render(migration: &Migration, bytes: &str) -> String {
    migration.sql.replace("BYTES", bytes)
}
