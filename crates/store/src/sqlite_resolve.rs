//! SQLite side of the resolve area: writes of [`ResolveRecord`], its reads, the journal reads
//! payer lookup and the notification tailer need, and a read-only open for the CLI.
//! A child of `sqlite`, so it shares the read connection pool and the row decoders.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;

use super::{SqliteStore, TXN_COLUMNS, expect_one, txn_from_row};
use crate::error::StoreError;
use crate::group::ExecuteAny;
use crate::model::{EventRow, TxnKind, TxnRow, TxnState, TxnTally};
use crate::resolve::{
    BackOfficeKeyRow, CaseEntryRow, CaseQuery, CaseRow, DeliveryRow, DueMerchant, DuplicateRow,
    OutboxRow, ResolveRecord, WebhookEndpointRow,
};

use crate::RESOLVE_ROWS_MAX;

/// Attachment references are stored one per line.
const ATTACHMENT_SEPARATOR: char = '\n';

impl SqliteStore {
    /// Opens an existing database for reading only: no migration, no writer thread (every
    /// write fails with `WriterGone`), read-only connections (which leave the file as they
    /// found it: its journal mode, and a log a stopped node left, are not touched). For
    /// `shoudan explain` and `audit` on a data dir that a running demo may be writing.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Backend {
                message: format!("{}: no such database", path.display()),
            });
        }
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let store = SqliteStore {
            path: path.to_path_buf(),
            sender,
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            page_quota: Default::default(),
            inline: None,
            read_only: true,
            queued_events: Default::default(),
        };
        // Fail now, not at the first query, when the file is not a database. One row, not a
        // count: counting reads a whole index, seconds on a year's journal.
        store.read(|conn| {
            conn.prepare("SELECT 1 FROM transactions LIMIT 1")?
                .exists([])?;
            Ok(())
        })?;
        Ok(store)
    }
}

pub(super) fn write(conn: &Connection, record: &ResolveRecord) -> Result<(), StoreError> {
    match record {
        ResolveRecord::InsertCase(c) => {
            conn.prepare_cached(&format!(
                "INSERT INTO cases ({CASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                 ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))?
            .execute_any(params![
                c.id,
                c.mid,
                c.kind,
                c.state,
                c.txn_id,
                c.title,
                c.assignee,
                c.due_at_ms,
                c.refund_fen,
                c.approved_by,
                c.refund_txn_id,
                c.refund_rrn,
                c.refund_code,
                c.resolution,
                c.created_at_ms,
                c.updated_at_ms,
                c.version,
            ])?;
        }
        ResolveRecord::UpdateCase {
            row: c,
            expected_version,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE cases SET state = ?2, title = ?3, assignee = ?4, due_at_ms = ?5,
                     refund_fen = ?6, approved_by = ?7, refund_txn_id = ?8, refund_rrn = ?9,
                     refund_code = ?10, resolution = ?11, updated_at_ms = ?12, version = ?13
                     WHERE id = ?1 AND version = ?14",
                )?
                .execute(params![
                    c.id,
                    c.state,
                    c.title,
                    c.assignee,
                    c.due_at_ms,
                    c.refund_fen,
                    c.approved_by,
                    c.refund_txn_id,
                    c.refund_rrn,
                    c.refund_code,
                    c.resolution,
                    c.updated_at_ms,
                    c.version,
                    expected_version,
                ])?;
            expect_one(changed, "case at this version")?;
        }
        ResolveRecord::CaseEntry(e) => {
            let attachments = e.attachments.join(&ATTACHMENT_SEPARATOR.to_string());
            conn.prepare_cached(
                "INSERT INTO case_entries (case_id, seq, at_ms, who, text, attachments)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute_any(params![
                e.case_id,
                e.seq,
                e.at_ms,
                e.who,
                e.text,
                attachments
            ])?;
        }
        ResolveRecord::UpsertEndpoint(w) => {
            conn.prepare_cached(
                "INSERT INTO webhook_endpoints (mid, url, secret_sealed, active)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (mid) DO UPDATE SET url = excluded.url,
                 secret_sealed = excluded.secret_sealed, active = excluded.active",
            )?
            .execute_any(params![w.mid, w.url, w.secret_sealed, w.active])?;
        }
        ResolveRecord::Enqueue(o) => {
            conn.prepare_cached(&format!(
                "INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                 ?9, ?10, ?11) ON CONFLICT (dedup_key) DO NOTHING"
            ))?
            .execute_any(params![
                o.id,
                o.mid,
                o.event_type,
                o.payload,
                o.dedup_key,
                o.created_at_ms,
                o.state,
                o.attempts,
                o.next_attempt_ms,
                o.delivered_at_ms,
                o.attempts_base,
            ])?;
        }
        ResolveRecord::ClaimDelivery {
            outbox_id,
            attempts,
            due_at_ms,
            lease_until_ms,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET next_attempt_ms = ?4 WHERE id = ?1 AND state = 'pending'
                     AND attempts = ?2 AND next_attempt_ms = ?3",
                )?
                .execute(params![outbox_id, attempts, due_at_ms, lease_until_ms])?;
            if changed != 1 {
                return Err(StoreError::Constraint {
                    message: "outbox item claimed by another notifier".to_owned(),
                });
            }
        }
        ResolveRecord::Redrive {
            outbox_id,
            mid,
            due_at_ms,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'pending', next_attempt_ms = ?3,
                     attempts_base = attempts
                     WHERE id = ?1 AND mid = ?2 AND state IN ('failed', 'no_endpoint')",
                )?
                .execute(params![outbox_id, mid, due_at_ms])?;
            if changed != 1 {
                return Err(StoreError::Constraint {
                    message: "outbox item is not failed or without an endpoint".to_owned(),
                });
            }
        }
        ResolveRecord::DeferMerchant {
            mid,
            until_ms,
            due_by_ms,
            attempts_max,
        } => {
            conn.prepare_cached(
                "UPDATE outbox SET next_attempt_ms = ?2,
                 attempts = attempts + CASE WHEN next_attempt_ms <= ?4 THEN 1 ELSE 0 END,
                 state = CASE WHEN next_attempt_ms <= ?4 AND attempts + 1 - attempts_base >= ?3
                 THEN 'failed' ELSE state END
                 WHERE mid = ?1 AND state = 'pending' AND next_attempt_ms < ?2",
            )?
            .execute_any(params![mid, until_ms, attempts_max, due_by_ms])?;
        }
        ResolveRecord::Delivery {
            log,
            state,
            next_attempt_ms,
            delivered_at_ms,
        } => {
            conn.prepare_cached(
                "INSERT INTO webhook_deliveries (outbox_id, attempt, at_ms, url, status, error,
                 duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute_any(params![
                log.outbox_id,
                log.attempt,
                log.at_ms,
                log.url,
                log.status,
                log.error,
                log.duration_ms,
            ])?;
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET attempts = ?2, state = ?3, next_attempt_ms = ?4,
                     delivered_at_ms = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    log.outbox_id,
                    log.attempt,
                    state,
                    next_attempt_ms,
                    delivered_at_ms
                ])?;
            expect_one(changed, "outbox item")?;
        }
        ResolveRecord::BackOfficeKey(k) => {
            conn.prepare_cached(
                "INSERT INTO backoffice_refunds (idempotency_key, original_rrn, amount_fen, tid,
                 batch_no, stan, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute_any(params![
                k.idempotency_key,
                k.original_rrn,
                k.amount_fen,
                k.tid,
                k.batch_no,
                k.stan,
                k.created_at_ms,
            ])?;
        }
        ResolveRecord::Duplicate(d) => {
            conn.prepare_cached(
                "INSERT INTO duplicate_flags (first_txn_id, second_txn_id, mid, amount_fen,
                 gap_ms, flagged_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (second_txn_id) DO NOTHING",
            )?
            .execute_any(params![
                d.first_txn_id,
                d.second_txn_id,
                d.mid,
                d.amount_fen,
                d.gap_ms,
                d.flagged_at_ms,
            ])?;
        }
        ResolveRecord::Cursor { name, position } => {
            conn.prepare_cached(
                "INSERT INTO resolve_cursors (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )?
            .execute_any(params![name, position])?;
        }
    }
    Ok(())
}

const CASE_COLUMNS: &str = "id, mid, kind, state, txn_id, title, assignee, due_at_ms, \
     refund_fen, approved_by, refund_txn_id, refund_rrn, refund_code, resolution, \
     created_at_ms, updated_at_ms, version";

fn case_from_row(r: &Row<'_>) -> rusqlite::Result<CaseRow> {
    Ok(CaseRow {
        id: r.get(0)?,
        mid: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        txn_id: r.get(4)?,
        title: r.get(5)?,
        assignee: r.get(6)?,
        due_at_ms: r.get(7)?,
        refund_fen: r.get(8)?,
        approved_by: r.get(9)?,
        refund_txn_id: r.get(10)?,
        refund_rrn: r.get(11)?,
        refund_code: r.get(12)?,
        resolution: r.get(13)?,
        created_at_ms: r.get(14)?,
        updated_at_ms: r.get(15)?,
        version: r.get(16)?,
    })
}

const OUTBOX_COLUMNS: &str = "id, mid, event_type, payload, dedup_key, created_at_ms, state, \
     attempts, next_attempt_ms, delivered_at_ms, attempts_base";

fn outbox_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        mid: r.get(1)?,
        event_type: r.get(2)?,
        payload: r.get(3)?,
        dedup_key: r.get(4)?,
        created_at_ms: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_ms: r.get(8)?,
        delivered_at_ms: r.get(9)?,
        attempts_base: r.get(10)?,
    })
}

const DUPLICATE_COLUMNS: &str =
    "first_txn_id, second_txn_id, mid, amount_fen, gap_ms, flagged_at_ms";

fn duplicate_from_row(r: &Row<'_>) -> rusqlite::Result<DuplicateRow> {
    Ok(DuplicateRow {
        first_txn_id: r.get(0)?,
        second_txn_id: r.get(1)?,
        mid: r.get(2)?,
        amount_fen: r.get(3)?,
        gap_ms: r.get(4)?,
        flagged_at_ms: r.get(5)?,
    })
}

impl SqliteStore {
    fn rows<T>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        decode: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(sql)?;
            let rows = statement.query_map(params, decode)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn resolve_txns_of_card_at(
        &self,
        fingerprint: &[u8],
        mid: &str,
    ) -> Result<Vec<TxnRow>, StoreError> {
        // The newest rows when a card has more than the limit here: "paid here n times" and
        // payer lookup care for recent payments, which an oldest-first limit would cut off.
        // Walks the (card, received at) index back, keeping the merchant's.
        let sql = format!(
            "SELECT {TXN_COLUMNS} FROM (SELECT {TXN_COLUMNS} FROM transactions
             WHERE pan_fingerprint = ?1 AND mid = ?2 ORDER BY received_at_ms DESC, id DESC
             LIMIT {RESOLVE_ROWS_MAX}) AS recent ORDER BY received_at_ms, id"
        );
        self.rows(&sql, &[&fingerprint, &mid], txn_from_row)
    }

    pub(super) fn resolve_latest_payment_of_card(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        from_ms: i64,
        (before_ms, before_id): (i64, i64),
    ) -> Result<Option<TxnRow>, StoreError> {
        // Walks the card's index entries back from `before`, so it stops at the first match.
        self.payment_of_card(
            "received_at_ms >= ?2 AND received_at_ms <= ?3 AND (received_at_ms < ?3 OR id < ?4)
             ORDER BY received_at_ms DESC, id DESC",
            (fingerprint, mid, amount_fen),
            (from_ms, before_ms, before_id),
        )
    }

    pub(super) fn resolve_earliest_payment_of_card_after(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        (after_ms, after_id): (i64, i64),
        to_ms: i64,
    ) -> Result<Option<TxnRow>, StoreError> {
        // Walks the card's index entries forward from `after`, so it stops at the first match.
        self.payment_of_card(
            "received_at_ms <= ?2 AND received_at_ms >= ?3 AND (received_at_ms > ?3 OR id > ?4)
             ORDER BY received_at_ms, id",
            (fingerprint, mid, amount_fen),
            (to_ms, after_ms, after_id),
        )
    }

    /// The first approved payment (purchase or completion) of one card at one merchant for
    /// one amount, not refunded in full, in the time range and order of `range_and_order`: ?2
    /// is the far end of the range, ?3 and ?4 the (received at, id) it starts after or before.
    /// A payment refunded in full charged the card nothing: paying again is no duplicate.
    fn payment_of_card(
        &self,
        range_and_order: &str,
        (fingerprint, mid, amount_fen): (&[u8], &str, i64),
        (limit_ms, edge_ms, edge_id): (i64, i64, i64),
    ) -> Result<Option<TxnRow>, StoreError> {
        let sql = format!(
            "SELECT {TXN_COLUMNS} FROM transactions WHERE pan_fingerprint = ?1
             AND mid = ?5 AND amount_fen = ?6 AND kind IN (?7, ?8) AND state IN (?9, ?10)
             AND refunded_fen < amount_fen AND {range_and_order} LIMIT 1"
        );
        let rows = self.rows(
            &sql,
            &[
                &fingerprint,
                &limit_ms,
                &edge_ms,
                &edge_id,
                &mid,
                &amount_fen,
                &TxnKind::Purchase.as_str(),
                &TxnKind::Completion.as_str(),
                &TxnState::Approved.as_str(),
                &TxnState::Completed.as_str(),
            ],
            txn_from_row,
        )?;
        Ok(rows.into_iter().next())
    }

    pub(super) fn resolve_tally_of_merchant(
        &self,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TxnTally>, StoreError> {
        self.rows(
            "SELECT tid, kind, state, response_code, (received_at_ms - ?2) / 3600000 AS hour,
             sent_at_ms IS NOT NULL, COUNT(*), CAST(SUM(amount_fen) AS BIGINT)
             FROM transactions
             WHERE mid = ?1 AND received_at_ms >= ?2 AND received_at_ms < ?3
             GROUP BY tid, kind, state, response_code, (received_at_ms - ?2) / 3600000,
             sent_at_ms IS NOT NULL",
            &[&mid, &from_ms, &to_ms],
            |r| {
                Ok(TxnTally {
                    tid: r.get(0)?,
                    kind: r.get(1)?,
                    state: r.get(2)?,
                    response_code: r.get(3)?,
                    hour: r.get(4)?,
                    sent: r.get(5)?,
                    count: r.get(6)?,
                    amount_fen: r.get(7)?,
                })
            },
        )
    }

    pub(super) fn resolve_txns_of_merchant_newest(
        &self,
        mid: &str,
        from_ms: i64,
        (before_ms, before_id): (i64, i64),
        limit: u32,
    ) -> Result<Vec<TxnRow>, StoreError> {
        // Walks the (merchant, received at) index back from `before`.
        let sql = format!(
            "SELECT {TXN_COLUMNS} FROM transactions WHERE mid = ?1 AND received_at_ms >= ?2
             AND received_at_ms <= ?3 AND (received_at_ms < ?3 OR id < ?4)
             ORDER BY received_at_ms DESC, id DESC LIMIT ?5"
        );
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(
            &sql,
            &[&mid, &from_ms, &before_ms, &before_id, &limit],
            txn_from_row,
        )
    }

    pub(super) fn resolve_txns_linked_to(&self, id: i64) -> Result<Vec<TxnRow>, StoreError> {
        let sql =
            format!("SELECT {TXN_COLUMNS} FROM transactions WHERE original_id = ?1 ORDER BY id");
        self.rows(&sql, &[&id], txn_from_row)
    }

    pub(super) fn resolve_events_since(
        &self,
        at_ms: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(
            "SELECT txn_id, at_ms, kind, detail FROM events WHERE at_ms >= ?1
             ORDER BY at_ms, txn_id LIMIT ?2",
            &[&at_ms, &limit],
            |r| {
                Ok(EventRow {
                    txn_id: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                })
            },
        )
    }

    pub(super) fn resolve_case(&self, id: i64) -> Result<Option<CaseRow>, StoreError> {
        let sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1");
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], case_from_row)
                .optional()?)
        })
    }

    pub(super) fn resolve_cases(&self, q: &CaseQuery<'_>) -> Result<Vec<CaseRow>, StoreError> {
        // Walks back from `before_id` by the (merchant, id) index, the open cases' partial
        // indexes (all merchants', one merchant's), or the table itself; state and kind are
        // checked on the rows walked.
        let before = q.before_id.unwrap_or(i64::MAX);
        let limit = q.limit.min(RESOLVE_ROWS_MAX);
        let mut sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE id < ?1");
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&before];
        for (column, value) in [("mid", &q.mid), ("state", &q.state), ("kind", &q.kind)] {
            if let Some(value) = value {
                params.push(value);
                sql.push_str(&format!(" AND {column} = ?{}", params.len()));
            }
        }
        if q.open_only {
            // The closed states of `resolve::cases::CaseState`, as the partial index has them.
            sql.push_str(" AND state NOT IN ('resolved', 'rejected')");
        }
        params.push(&limit);
        let order = if q.oldest_first { "ASC" } else { "DESC" };
        sql.push_str(&format!(" ORDER BY id {order} LIMIT ?{}", params.len()));
        self.rows(&sql, &params, case_from_row)
    }

    pub(super) fn resolve_count_open_cases(&self, mid: &str) -> Result<u64, StoreError> {
        // The partial index of open cases by merchant; its condition as the index has it.
        let count: i64 = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM cases WHERE mid = ?1
                 AND state NOT IN ('resolved', 'rejected')",
            )?;
            Ok(statement.query_row([mid], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(super) fn resolve_cases_of_txn(&self, txn_id: i64) -> Result<Vec<CaseRow>, StoreError> {
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE txn_id = ?1 ORDER BY id LIMIT {RESOLVE_ROWS_MAX}"
        );
        self.rows(&sql, &[&txn_id], case_from_row)
    }

    pub(super) fn resolve_case_entries(
        &self,
        case_id: i64,
    ) -> Result<Vec<CaseEntryRow>, StoreError> {
        self.rows(
            "SELECT case_id, seq, at_ms, who, text, attachments FROM case_entries
             WHERE case_id = ?1 ORDER BY seq",
            &[&case_id],
            |r| {
                let attachments: String = r.get(5)?;
                Ok(CaseEntryRow {
                    case_id: r.get(0)?,
                    seq: r.get(1)?,
                    at_ms: r.get(2)?,
                    who: r.get(3)?,
                    text: r.get(4)?,
                    attachments: attachments
                        .split(ATTACHMENT_SEPARATOR)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            },
        )
    }

    pub(super) fn resolve_endpoint(
        &self,
        mid: &str,
    ) -> Result<Option<WebhookEndpointRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT mid, url, secret_sealed, active FROM webhook_endpoints
                     WHERE mid = ?1",
                )?
                .query_row([mid], |r| {
                    Ok(WebhookEndpointRow {
                        mid: r.get(0)?,
                        url: r.get(1)?,
                        secret_sealed: r.get(2)?,
                        active: r.get(3)?,
                    })
                })
                .optional()?)
        })
    }

    pub(super) fn resolve_outbox_due_merchants(
        &self,
        now_ms: i64,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<DueMerchant>, StoreError> {
        // The due range of the (state, next_attempt_ms) index, grouped; each merchant's
        // receiver with it, so the notifier reads no endpoint per merchant.
        let limit = limit.min(RESOLVE_ROWS_MAX);
        let (after_ms, after_mid) = after.unwrap_or((i64::MIN, ""));
        // Grouped first, the endpoint joined to the page only.
        self.rows(
            "SELECT d.mid, d.first_due, w.url
             FROM (SELECT mid, MIN(next_attempt_ms) AS first_due FROM outbox
                   WHERE state = 'pending' AND next_attempt_ms <= ?1
                   GROUP BY mid
                   HAVING MIN(next_attempt_ms) > ?2
                       OR (MIN(next_attempt_ms) = ?2 AND mid > ?3)
                   ORDER BY MIN(next_attempt_ms), mid LIMIT ?4) AS d
             LEFT JOIN webhook_endpoints w ON w.mid = d.mid
             ORDER BY d.first_due, d.mid",
            &[&now_ms, &after_ms, &after_mid, &limit],
            |r| {
                Ok(DueMerchant {
                    mid: r.get(0)?,
                    first_due_ms: r.get(1)?,
                    url: r.get(2)?,
                })
            },
        )
    }

    pub(super) fn resolve_outbox_due_of_merchant(
        &self,
        mid: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // The (mid, state, next_attempt_ms) index: not the merchant's delivered events.
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox
             WHERE mid = ?1 AND state = 'pending' AND next_attempt_ms <= ?2
             ORDER BY next_attempt_ms, id LIMIT ?3"
        );
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(&sql, &[&mid, &now_ms, &limit], outbox_from_row)
    }

    pub(super) fn resolve_outbox_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // Walks the (merchant, id) index back from `before_id`.
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE mid = ?1 AND id < ?2
             ORDER BY id DESC LIMIT ?3"
        );
        let before = before_id.unwrap_or(i64::MAX);
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(&sql, &[&mid, &before, &limit], outbox_from_row)
    }

    pub(super) fn resolve_outbox_item(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1");
        Ok(self.rows(&sql, &[&id], outbox_from_row)?.into_iter().next())
    }

    pub(super) fn resolve_deliveries(
        &self,
        outbox_id: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.rows(
            "SELECT outbox_id, attempt, at_ms, url, status, error, duration_ms
             FROM webhook_deliveries WHERE outbox_id = ?1 ORDER BY attempt",
            &[&outbox_id],
            |r| {
                Ok(DeliveryRow {
                    outbox_id: r.get(0)?,
                    attempt: r.get(1)?,
                    at_ms: r.get(2)?,
                    url: r.get(3)?,
                    status: r.get(4)?,
                    error: r.get(5)?,
                    duration_ms: r.get(6)?,
                })
            },
        )
    }

    pub(super) fn resolve_backoffice_key(
        &self,
        key: &str,
    ) -> Result<Option<BackOfficeKeyRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT idempotency_key, original_rrn, amount_fen, tid, batch_no, stan,
                     created_at_ms FROM backoffice_refunds WHERE idempotency_key = ?1",
                )?
                .query_row([key], |r| {
                    Ok(BackOfficeKeyRow {
                        idempotency_key: r.get(0)?,
                        original_rrn: r.get(1)?,
                        amount_fen: r.get(2)?,
                        tid: r.get(3)?,
                        batch_no: r.get(4)?,
                        stan: r.get(5)?,
                        created_at_ms: r.get(6)?,
                    })
                })
                .optional()?)
        })
    }

    pub(super) fn resolve_duplicates_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DuplicateRow>, StoreError> {
        // Walks the (merchant, second payment) index back from `before_id`.
        let sql = format!(
            "SELECT {DUPLICATE_COLUMNS} FROM duplicate_flags WHERE mid = ?1 AND second_txn_id < ?2
             ORDER BY second_txn_id DESC LIMIT ?3"
        );
        let before = before_id.unwrap_or(i64::MAX);
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(&sql, &[&mid, &before, &limit], duplicate_from_row)
    }

    pub(super) fn resolve_duplicates_flagged_since(
        &self,
        mid: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<DuplicateRow>, StoreError> {
        // Walks the (merchant, flagged at) index back from the newest.
        let sql = format!(
            "SELECT {DUPLICATE_COLUMNS} FROM duplicate_flags WHERE mid = ?1 AND flagged_at_ms >= ?2
             ORDER BY flagged_at_ms DESC, second_txn_id DESC LIMIT ?3"
        );
        let limit = limit.min(RESOLVE_ROWS_MAX);
        self.rows(&sql, &[&mid, &since_ms, &limit], duplicate_from_row)
    }

    pub(super) fn resolve_duplicates_of_txn(
        &self,
        txn_id: i64,
    ) -> Result<Vec<DuplicateRow>, StoreError> {
        // By the primary key (second payment) and the first payment's index.
        let sql = format!(
            "SELECT {DUPLICATE_COLUMNS} FROM duplicate_flags WHERE second_txn_id = ?1
             UNION SELECT {DUPLICATE_COLUMNS} FROM duplicate_flags WHERE first_txn_id = ?1
             ORDER BY 2"
        );
        self.rows(&sql, &[&txn_id], duplicate_from_row)
    }

    pub(super) fn resolve_cursor_position(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT position FROM resolve_cursors WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?)
        })
    }
}
