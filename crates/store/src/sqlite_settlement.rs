//! SQLite side of settlement: writes of [`SettlementRecord`] (bulk ones through one prepared
//! statement each) and the reads of batches, clearing, the ledger, accounts and payouts.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, expect_one};
use crate::error::StoreError;
use crate::group::ExecuteAny;
use crate::model::TxnKind;
use crate::settlement::{
    AccountChangeRow, AccountKind, BatchDiffKind, BatchDiffRow, BatchSettlementRow, BatchUploadRow,
    BoundAccountRow, ChangeState, ClearingLineRow, ClearingTotalRow, LegRow, PayoutEventRow,
    PayoutRow, PayoutState, PostingRow, SentAccount, SettleRunRow, SettlementRecord,
    SettlementTermsRow,
};

/// Rows one list query returns at most (payouts, events): pages, never the whole table.
pub(crate) const SETTLEMENT_ROWS_MAX: u32 = 10_000;
/// Legs one posting may have; postings are small by construction (a clearing posting has 2).
pub(crate) const POSTING_LEGS_MAX: usize = 64;

macro_rules! sql_text_enum {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

sql_text_enum!(BatchDiffKind, AccountKind, ChangeState, PayoutState);

fn unbalanced(posting: &PostingRow) -> Option<String> {
    let sum = posting
        .legs
        .iter()
        .try_fold(0i64, |acc, leg| acc.checked_add(leg.amount_fen));
    if posting.legs.len() < 2 || posting.legs.len() > POSTING_LEGS_MAX {
        return Some(format!(
            "posting {} has {} legs",
            posting.id,
            posting.legs.len()
        ));
    }
    match sum {
        Some(0) => None,
        Some(sum) => Some(format!("posting {} does not balance: {sum}", posting.id)),
        None => Some(format!("posting {} overflows", posting.id)),
    }
}

pub(super) fn write(conn: &Connection, record: &SettlementRecord) -> Result<(), StoreError> {
    match record {
        SettlementRecord::BatchSettled(b) => {
            conn.prepare_cached(
                "INSERT INTO batch_settlements (tid, batch_no, settled_at_ms, result,
                 host_totals, terminal_totals, upload_done_at_ms, opened_after_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tid, batch_no) DO UPDATE SET settled_at_ms = excluded.settled_at_ms,
                 result = excluded.result, host_totals = excluded.host_totals,
                 terminal_totals = excluded.terminal_totals,
                 opened_after_ms = excluded.opened_after_ms",
            )?
            .execute_any(params![
                b.tid,
                b.batch_no,
                b.settled_at_ms,
                b.result,
                b.host_totals,
                b.terminal_totals,
                b.upload_done_at_ms,
                b.opened_after_ms
            ])?;
        }
        SettlementRecord::BatchReopened { tid, batch_no } => {
            conn.prepare_cached("DELETE FROM batch_uploads WHERE tid = ?1 AND batch_no = ?2")?
                .execute_any(params![tid, batch_no])?;
            conn.prepare_cached("DELETE FROM batch_differences WHERE tid = ?1 AND batch_no = ?2")?
                .execute_any(params![tid, batch_no])?;
            conn.prepare_cached(
                "UPDATE batch_settlements SET upload_done_at_ms = NULL
                 WHERE tid = ?1 AND batch_no = ?2",
            )?
            .execute_any(params![tid, batch_no])?;
        }
        SettlementRecord::BatchUpload(u) => {
            // A terminal resending an upload message replaces its own earlier copy.
            conn.prepare_cached(
                "INSERT INTO batch_uploads (tid, batch_no, stan, card_org, pan_last4, amount_fen,
                 received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (tid, batch_no, stan) DO UPDATE SET card_org = excluded.card_org,
                 pan_last4 = excluded.pan_last4, amount_fen = excluded.amount_fen,
                 received_at_ms = excluded.received_at_ms",
            )?
            .execute_any(params![
                u.tid,
                u.batch_no,
                u.stan,
                u.card_org,
                u.pan_last4,
                u.amount_fen,
                u.received_at_ms
            ])?;
        }
        SettlementRecord::BatchDifferences {
            tid,
            batch_no,
            at_ms,
            rows,
        } => {
            conn.prepare_cached("DELETE FROM batch_differences WHERE tid = ?1 AND batch_no = ?2")?
                .execute_any(params![tid, batch_no])?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO batch_differences (tid, batch_no, stan, kind, txn_id,
                 host_amount_fen, terminal_amount_fen, pan_masked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for d in rows {
                insert.execute_any(params![
                    d.tid,
                    d.batch_no,
                    d.stan,
                    d.kind,
                    d.txn_id,
                    d.host_amount_fen,
                    d.terminal_amount_fen,
                    d.pan_masked
                ])?;
            }
            conn.prepare_cached(
                "UPDATE batch_settlements SET upload_done_at_ms = ?3
                 WHERE tid = ?1 AND batch_no = ?2",
            )?
            .execute_any(params![tid, batch_no, at_ms])?;
        }
        SettlementRecord::ClearingLines(lines) => {
            let mut insert = conn.prepare_cached(
                "INSERT INTO clearing_lines (txn_id, seq, mid, clearing_date, kind, card_class,
                 issuer, amount_fen, fee_fen, run_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for l in lines {
                insert.execute_any(params![
                    l.txn_id,
                    l.seq,
                    l.mid,
                    l.clearing_date,
                    l.kind.as_str(),
                    l.card_class,
                    l.issuer,
                    l.amount_fen,
                    l.fee_fen,
                    l.run_at_ms
                ])?;
            }
        }
        SettlementRecord::ClearingTotals(rows) => {
            let mut statement = conn.prepare_cached(
                "INSERT INTO clearing_totals (clearing_date, mid, lines, gross_fen, fee_fen)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (clearing_date, mid) DO UPDATE SET
                 lines = excluded.lines, gross_fen = excluded.gross_fen,
                 fee_fen = excluded.fee_fen",
            )?;
            for t in rows {
                statement.execute_any(params![
                    t.clearing_date,
                    t.mid,
                    i64::try_from(t.lines).unwrap_or(i64::MAX),
                    t.gross_fen,
                    t.fee_fen
                ])?;
            }
        }
        SettlementRecord::SettleRun(r) => {
            conn.prepare_cached(
                "INSERT INTO settle_runs (clearing_date, run_no, at_ms, lines, gross_fen,
                 fee_fen, postings, events_through_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute_any(params![
                r.clearing_date,
                r.run_no,
                r.at_ms,
                i64::try_from(r.lines).unwrap_or(i64::MAX),
                r.gross_fen,
                r.fee_fen,
                i64::try_from(r.postings).unwrap_or(i64::MAX),
                r.events_through_ms
            ])?;
        }
        SettlementRecord::Postings(postings) => {
            let mut header = conn.prepare_cached(
                "INSERT INTO ledger_postings (id, at_ms, value_date, kind, reference)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut leg = conn.prepare_cached(
                "INSERT INTO ledger_legs (posting_id, leg_no, account, amount_fen, value_date)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in postings {
                // The ledger's invariant, checked where it becomes durable: the whole
                // submission fails rather than write half of an unbalanced posting.
                if let Some(message) = unbalanced(p) {
                    return Err(StoreError::Constraint { message });
                }
                header.execute_any(params![p.id, p.at_ms, p.value_date, p.kind, p.reference])?;
                for (n, l) in p.legs.iter().enumerate() {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    leg.execute_any(params![p.id, n, l.account, l.amount_fen, p.value_date])?;
                }
            }
        }
        SettlementRecord::Terms(t) => {
            conn.prepare_cached(
                "INSERT INTO settlement_terms (mid, debit_bp, debit_cap_fen, credit_bp,
                 credit_cap_fen, foreign_bp, qr_bp, payout_delay_days, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (mid) DO UPDATE SET debit_bp = excluded.debit_bp,
                 debit_cap_fen = excluded.debit_cap_fen, credit_bp = excluded.credit_bp,
                 credit_cap_fen = excluded.credit_cap_fen, foreign_bp = excluded.foreign_bp,
                 qr_bp = excluded.qr_bp, payout_delay_days = excluded.payout_delay_days,
                 updated_at_ms = excluded.updated_at_ms",
            )?
            .execute_any(params![
                t.mid,
                t.debit_bp,
                t.debit_cap_fen,
                t.credit_bp,
                t.credit_cap_fen,
                t.foreign_bp,
                t.qr_bp,
                t.payout_delay_days,
                t.updated_at_ms
            ])?;
        }
        SettlementRecord::BoundAccount(a) => {
            conn.prepare_cached(
                "INSERT INTO bound_accounts (mid, kind, number_sealed, number_masked, holder_name,
                 bank_code, version, needs_rebind, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute_any(params![
                a.mid,
                a.kind,
                a.number_sealed,
                a.number_masked,
                a.holder_name,
                a.bank_code,
                a.version,
                a.needs_rebind,
                a.updated_at_ms
            ])?;
        }
        SettlementRecord::ReplaceBoundAccount {
            row: a,
            expected_version,
            expected_needs_rebind,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE bound_accounts SET kind = ?2, number_sealed = ?3, number_masked = ?4,
                     holder_name = ?5, bank_code = ?6, version = ?7, needs_rebind = ?8,
                     updated_at_ms = ?9
                     WHERE mid = ?1 AND version = ?10 AND needs_rebind = ?11",
                )?
                .execute(params![
                    a.mid,
                    a.kind,
                    a.number_sealed,
                    a.number_masked,
                    a.holder_name,
                    a.bank_code,
                    a.version,
                    a.needs_rebind,
                    a.updated_at_ms,
                    expected_version,
                    expected_needs_rebind
                ])?;
            if changed != 1 {
                return Err(StoreError::Constraint {
                    message: "bound account changed meanwhile".to_owned(),
                });
            }
        }
        SettlementRecord::FlagBoundAccount {
            mid,
            version,
            at_ms,
        } => {
            conn.prepare_cached(
                "UPDATE bound_accounts SET needs_rebind = ?3, updated_at_ms = ?4
                 WHERE mid = ?1 AND version = ?2",
            )?
            .execute_any(params![mid, version, true, at_ms])?;
        }
        SettlementRecord::AccountChange(c) => {
            conn.prepare_cached(
                "INSERT INTO account_changes (id, mid, kind, number_sealed, number_masked,
                 holder_name, bank_code, requested_by, requested_at_ms, state, decided_by,
                 decided_at_ms, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                 decided_by = excluded.decided_by, decided_at_ms = excluded.decided_at_ms,
                 note = excluded.note",
            )?
            .execute_any(params![
                c.id,
                c.mid,
                c.kind,
                c.number_sealed,
                c.number_masked,
                c.holder_name,
                c.bank_code,
                c.requested_by,
                c.requested_at_ms,
                c.state,
                c.decided_by,
                c.decided_at_ms,
                c.note
            ])?;
        }
        SettlementRecord::DecideChange(c) => {
            let changed = conn
                .prepare_cached(
                    "UPDATE account_changes SET state = ?2, decided_by = ?3, decided_at_ms = ?4,
                     note = ?5 WHERE id = ?1 AND state = ?6",
                )?
                .execute(params![
                    c.id,
                    c.state,
                    c.decided_by,
                    c.decided_at_ms,
                    c.note,
                    ChangeState::PendingConfirmation
                ])?;
            expect_one(changed, "account change still waiting for an operator")?;
        }
        SettlementRecord::Payout(p) => {
            conn.prepare_cached(
                "INSERT INTO payouts (key, mid, payout_date, cutoff_date, amount_fen, state,
                 attempts, next_attempt_ms, account_version, account_masked, bank_reference,
                 failure, created_at_ms, updated_at_ms, sent_number_sealed, sent_holder_name,
                 sent_bank_code, first_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18)
                 ON CONFLICT (key) DO UPDATE SET state = excluded.state,
                 attempts = excluded.attempts, next_attempt_ms = excluded.next_attempt_ms,
                 account_version = excluded.account_version,
                 account_masked = excluded.account_masked,
                 bank_reference = excluded.bank_reference, failure = excluded.failure,
                 updated_at_ms = excluded.updated_at_ms,
                 sent_number_sealed = excluded.sent_number_sealed,
                 sent_holder_name = excluded.sent_holder_name,
                 sent_bank_code = excluded.sent_bank_code,
                 first_attempt_ms = excluded.first_attempt_ms",
            )?
            .execute_any(params![
                p.key,
                p.mid,
                p.payout_date,
                p.cutoff_date,
                p.amount_fen,
                p.state,
                p.attempts,
                p.next_attempt_ms,
                p.account_version,
                p.account_masked,
                p.bank_reference,
                p.failure,
                p.created_at_ms,
                p.updated_at_ms,
                p.sent_to.as_ref().map(|a| &a.number_sealed),
                p.sent_to.as_ref().map(|a| &a.holder_name),
                p.sent_to.as_ref().map(|a| &a.bank_code),
                p.first_attempt_ms
            ])?;
        }
        SettlementRecord::BalanceAtMost {
            mid,
            account,
            max_fen,
            from_date,
        } => {
            let locked = conn
                .prepare_cached("UPDATE merchants SET mid = mid WHERE mid = ?1")?
                .execute(params![mid])?;
            expect_one(locked, "merchant")?;
            let refused = |balance: i64, date: Option<&str>| StoreError::Constraint {
                message: format!(
                    "{account} would stand at {balance} fen{}, above {max_fen}: refused",
                    date.map(|d| format!(" by {d}")).unwrap_or_default()
                ),
            };
            let mut balance = 0_i64;
            let mut statement = conn.prepare_cached(
                "SELECT value_date, SUM(amount_fen) FROM ledger_legs WHERE account = ?1
                 GROUP BY value_date ORDER BY value_date",
            )?;
            let by_date = statement.query_map(params![account], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?))
            })?;
            for row in by_date {
                let (date, fen): (String, i64) = row?;
                balance = balance.saturating_add(fen);
                let counted = from_date
                    .as_deref()
                    .is_some_and(|from| date.as_str() >= from);
                if counted && balance > *max_fen {
                    return Err(refused(balance, Some(&date)));
                }
            }
            if balance > *max_fen {
                return Err(refused(balance, None));
            }
        }
        SettlementRecord::BalanceAtLeast {
            mid,
            account,
            min_fen,
        } => {
            let locked = conn
                .prepare_cached("UPDATE merchants SET mid = mid WHERE mid = ?1")?
                .execute(params![mid])?;
            expect_one(locked, "merchant")?;
            let balance: i64 = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(amount_fen), 0) FROM ledger_legs WHERE account = ?1",
                )?
                .query_row(params![account], |r| r.get(0))?;
            if balance < *min_fen {
                return Err(StoreError::Constraint {
                    message: format!(
                        "{account} would stand at {balance} fen, below {min_fen}: refused"
                    ),
                });
            }
        }
        SettlementRecord::NewPayout(p) => {
            conn.prepare_cached(
                "INSERT INTO payouts (key, mid, payout_date, cutoff_date, amount_fen, state,
                 attempts, next_attempt_ms, account_version, account_masked, bank_reference,
                 failure, created_at_ms, updated_at_ms, sent_number_sealed, sent_holder_name,
                 sent_bank_code, first_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18)",
            )?
            .execute_any(params![
                p.key,
                p.mid,
                p.payout_date,
                p.cutoff_date,
                p.amount_fen,
                p.state,
                p.attempts,
                p.next_attempt_ms,
                p.account_version,
                p.account_masked,
                p.bank_reference,
                p.failure,
                p.created_at_ms,
                p.updated_at_ms,
                p.sent_to.as_ref().map(|a| &a.number_sealed),
                p.sent_to.as_ref().map(|a| &a.holder_name),
                p.sent_to.as_ref().map(|a| &a.bank_code),
                p.first_attempt_ms
            ])?;
        }
        SettlementRecord::PayoutTransition {
            expected_state,
            expected_attempts,
            expected_account_version,
            row: p,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE payouts SET state = ?4, attempts = ?5, next_attempt_ms = ?6,
                     account_version = ?7, account_masked = ?8, bank_reference = ?9,
                     failure = ?10, updated_at_ms = ?11, sent_number_sealed = ?12,
                     sent_holder_name = ?13, sent_bank_code = ?14, amount_fen = ?15,
                     first_attempt_ms = ?16
                     WHERE key = ?1 AND state = ?2 AND attempts = ?3 AND account_version = ?17",
                )?
                .execute(params![
                    p.key,
                    expected_state,
                    expected_attempts,
                    p.state,
                    p.attempts,
                    p.next_attempt_ms,
                    p.account_version,
                    p.account_masked,
                    p.bank_reference,
                    p.failure,
                    p.updated_at_ms,
                    p.sent_to.as_ref().map(|a| &a.number_sealed),
                    p.sent_to.as_ref().map(|a| &a.holder_name),
                    p.sent_to.as_ref().map(|a| &a.bank_code),
                    p.amount_fen,
                    p.first_attempt_ms,
                    expected_account_version
                ])?;
            expect_one(changed, "payout in the expected state")?;
        }
        SettlementRecord::PayoutReturned {
            reference,
            reported_on,
        } => {
            conn.prepare_cached(
                "INSERT INTO payout_returns (reference, reported_on) VALUES (?1, ?2)
                 ON CONFLICT (reference) DO NOTHING",
            )?
            .execute_any(params![reference, reported_on])?;
        }
        SettlementRecord::PayoutReturnHandled { reference, at_ms } => {
            conn.prepare_cached(
                "UPDATE payout_returns SET handled_at_ms = ?2 WHERE reference = ?1",
            )?
            .execute_any(params![reference, at_ms])?;
        }
        SettlementRecord::PayoutEvent(e) => {
            conn.prepare_cached(
                "INSERT INTO payout_events (id, at_ms, mid, payout_key, kind, failure, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute_any(params![
                e.id,
                e.at_ms,
                e.mid,
                e.payout_key,
                e.kind,
                e.failure,
                e.detail
            ])?;
        }
    }
    Ok(())
}

const PAYOUT_COLUMNS: &str = "key, mid, payout_date, cutoff_date, amount_fen, state, attempts, \
     next_attempt_ms, account_version, account_masked, bank_reference, failure, created_at_ms, \
     updated_at_ms, sent_number_sealed, sent_holder_name, sent_bank_code, first_attempt_ms";

fn payout_from_row(r: &Row<'_>) -> rusqlite::Result<PayoutRow> {
    Ok(PayoutRow {
        key: r.get(0)?,
        mid: r.get(1)?,
        payout_date: r.get(2)?,
        cutoff_date: r.get(3)?,
        amount_fen: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_ms: r.get(7)?,
        account_version: r.get(8)?,
        account_masked: r.get(9)?,
        bank_reference: r.get(10)?,
        failure: r.get(11)?,
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
        sent_to: match (r.get(14)?, r.get(15)?, r.get(16)?) {
            (Some(number_sealed), Some(holder_name), Some(bank_code)) => Some(SentAccount {
                number_sealed,
                holder_name,
                bank_code,
            }),
            _ => None,
        },
        first_attempt_ms: r.get(17)?,
    })
}

const CHANGE_COLUMNS: &str = "id, mid, kind, number_sealed, number_masked, holder_name, \
     bank_code, requested_by, requested_at_ms, state, decided_by, decided_at_ms, note";

fn change_from_row(r: &Row<'_>) -> rusqlite::Result<AccountChangeRow> {
    Ok(AccountChangeRow {
        id: r.get(0)?,
        mid: r.get(1)?,
        kind: r.get(2)?,
        number_sealed: r.get(3)?,
        number_masked: r.get(4)?,
        holder_name: r.get(5)?,
        bank_code: r.get(6)?,
        requested_by: r.get(7)?,
        requested_at_ms: r.get(8)?,
        state: r.get(9)?,
        decided_by: r.get(10)?,
        decided_at_ms: r.get(11)?,
        note: r.get(12)?,
    })
}

fn kind_from(text: &str) -> rusqlite::Result<TxnKind> {
    TxnKind::parse(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl SqliteStore {
    pub(super) fn settle_batch_settlement(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Option<BatchSettlementRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT tid, batch_no, settled_at_ms, result, host_totals, terminal_totals,
                     upload_done_at_ms, opened_after_ms FROM batch_settlements
                     WHERE tid = ?1 AND batch_no = ?2",
                )?
                .query_row(params![tid, batch_no], |r| {
                    Ok(BatchSettlementRow {
                        tid: r.get(0)?,
                        batch_no: r.get(1)?,
                        settled_at_ms: r.get(2)?,
                        result: r.get(3)?,
                        host_totals: r.get(4)?,
                        terminal_totals: r.get(5)?,
                        upload_done_at_ms: r.get(6)?,
                        opened_after_ms: r.get(7)?,
                    })
                })
                .optional()?)
        })
    }

    /// The newest `limit` batch settlements, newest first, of merchant `mid`'s terminals or of
    /// every terminal, each with its terminal's merchant.
    pub(super) fn settle_batch_settlements_recent(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, BatchSettlementRow)>, StoreError> {
        const COLUMNS: &str = "t.mid, b.tid, b.batch_no, b.settled_at_ms, b.result, \
             b.host_totals, b.terminal_totals, b.upload_done_at_ms, b.opened_after_ms";
        const ORDER: &str = "ORDER BY b.settled_at_ms DESC, b.tid, b.batch_no DESC";
        let of_row = |r: &Row<'_>| {
            Ok((
                r.get(0)?,
                BatchSettlementRow {
                    tid: r.get(1)?,
                    batch_no: r.get(2)?,
                    settled_at_ms: r.get(3)?,
                    result: r.get(4)?,
                    host_totals: r.get(5)?,
                    terminal_totals: r.get(6)?,
                    upload_done_at_ms: r.get(7)?,
                    opened_after_ms: r.get(8)?,
                },
            ))
        };
        self.read(|conn| {
            let rows = match mid {
                Some(mid) => conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM batch_settlements AS b
                         JOIN terminals AS t ON t.tid = b.tid WHERE t.mid = ?1 {ORDER} LIMIT ?2"
                    ))?
                    .query_map(params![mid, limit], of_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM batch_settlements AS b
                         JOIN terminals AS t ON t.tid = b.tid {ORDER} LIMIT ?1"
                    ))?
                    .query_map(params![limit], of_row)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        })
    }

    pub(super) fn settle_batch_uploads(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<BatchUploadRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tid, batch_no, stan, card_org, pan_last4, amount_fen, received_at_ms
                 FROM batch_uploads WHERE tid = ?1 AND batch_no = ?2 ORDER BY stan",
            )?;
            let rows = statement.query_map(params![tid, batch_no], |r| {
                Ok(BatchUploadRow {
                    tid: r.get(0)?,
                    batch_no: r.get(1)?,
                    stan: r.get(2)?,
                    card_org: r.get(3)?,
                    pan_last4: r.get(4)?,
                    amount_fen: r.get(5)?,
                    received_at_ms: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_batch_differences(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<BatchDiffRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tid, batch_no, stan, kind, txn_id, host_amount_fen, terminal_amount_fen,
                 pan_masked FROM batch_differences WHERE tid = ?1 AND batch_no = ?2
                 ORDER BY stan",
            )?;
            let rows = statement.query_map(params![tid, batch_no], |r| {
                Ok(BatchDiffRow {
                    tid: r.get(0)?,
                    batch_no: r.get(1)?,
                    stan: r.get(2)?,
                    kind: r.get(3)?,
                    txn_id: r.get(4)?,
                    host_amount_fen: r.get(5)?,
                    terminal_amount_fen: r.get(6)?,
                    pan_masked: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// One merchant's clearing totals (or all merchants'), newest clearing date first.
    pub(super) fn settle_clearing_totals(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ClearingTotalRow>, StoreError> {
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        let columns = "clearing_date, mid, lines, gross_fen, fee_fen";
        let (sql, values): (String, Vec<&dyn rusqlite::ToSql>) = match &mid {
            Some(mid) => (
                format!(
                    "SELECT {columns} FROM clearing_totals WHERE mid = ?1
                     ORDER BY clearing_date DESC LIMIT ?2"
                ),
                vec![mid, &limit],
            ),
            None => (
                format!(
                    "SELECT {columns} FROM clearing_totals
                     ORDER BY clearing_date DESC, mid LIMIT ?1"
                ),
                vec![&limit],
            ),
        };
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(values.as_slice(), |r| {
                let lines: i64 = r.get(2)?;
                Ok(ClearingTotalRow {
                    clearing_date: r.get(0)?,
                    mid: r.get(1)?,
                    lines: u64::try_from(lines).unwrap_or(0),
                    gross_fen: r.get(3)?,
                    fee_fen: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_clearing_lines(
        &self,
        clearing_date: &str,
    ) -> Result<Vec<ClearingLineRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT txn_id, seq, mid, clearing_date, kind, card_class, issuer, amount_fen,
                 fee_fen, run_at_ms FROM clearing_lines WHERE clearing_date = ?1
                 ORDER BY txn_id, seq",
            )?;
            let rows = statement.query_map([clearing_date], |r| {
                let kind: String = r.get(4)?;
                Ok(ClearingLineRow {
                    txn_id: r.get(0)?,
                    seq: r.get(1)?,
                    mid: r.get(2)?,
                    clearing_date: r.get(3)?,
                    kind: kind_from(&kind)?,
                    card_class: r.get(5)?,
                    issuer: r.get(6)?,
                    amount_fen: r.get(7)?,
                    fee_fen: r.get(8)?,
                    run_at_ms: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_dates_touched_since(&self, at_ms: i64) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            // Walks the events after `at_ms` (events_at), each to its transaction's row.
            let mut statement = conn.prepare_cached(
                "SELECT DISTINCT t.clearing_date FROM events e
                 JOIN transactions t ON t.id = e.txn_id
                 WHERE e.at_ms >= ?1
                 ORDER BY t.clearing_date",
            )?;
            let rows = statement.query_map(params![at_ms], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    pub(super) fn settle_runs_of(
        &self,
        clearing_date: Option<&str>,
    ) -> Result<Vec<SettleRunRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT clearing_date, run_no, at_ms, lines, gross_fen, fee_fen, postings,
                 events_through_ms FROM settle_runs WHERE ?1 IS NULL OR clearing_date = ?1
                 ORDER BY clearing_date, run_no",
            )?;
            let rows = statement.query_map([clearing_date], |r| {
                let lines: i64 = r.get(3)?;
                let postings: i64 = r.get(6)?;
                Ok(SettleRunRow {
                    clearing_date: r.get(0)?,
                    run_no: r.get(1)?,
                    at_ms: r.get(2)?,
                    lines: u64::try_from(lines).unwrap_or(0),
                    gross_fen: r.get(4)?,
                    fee_fen: r.get(5)?,
                    postings: u64::try_from(postings).unwrap_or(0),
                    events_through_ms: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_ledger_balances(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT account, SUM(amount_fen) FROM ledger_legs GROUP BY account
                 ORDER BY account",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_ledger_balance(
        &self,
        account: &str,
        value_date_max: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(amount_fen), 0) FROM ledger_legs
                     WHERE account = ?1 AND (?2 IS NULL OR value_date <= ?2)",
                )?
                .query_row(params![account, value_date_max], |r| r.get(0))?)
        })
    }

    pub(super) fn settle_unbalanced_postings(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read(|conn| {
            // A posting with no legs is as broken as one that does not sum to zero.
            let mut statement = conn.prepare_cached(
                "SELECT p.id, COALESCE(SUM(l.amount_fen), 0), COUNT(l.posting_id)
                 FROM ledger_postings p LEFT JOIN ledger_legs l ON l.posting_id = p.id
                 GROUP BY p.id HAVING COALESCE(SUM(l.amount_fen), 0) <> 0
                 OR COUNT(l.posting_id) < 2
                 ORDER BY p.id",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_postings_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<PostingRow>, StoreError> {
        self.read(|conn| {
            let mut headers = conn.prepare_cached(
                "SELECT id, at_ms, value_date, kind, reference FROM ledger_postings
                 WHERE reference = ?1 ORDER BY id",
            )?;
            let mut postings = headers
                .query_map([reference], |r| {
                    Ok(PostingRow {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        value_date: r.get(2)?,
                        kind: r.get(3)?,
                        reference: r.get(4)?,
                        legs: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut legs = conn.prepare_cached(
                "SELECT account, amount_fen FROM ledger_legs WHERE posting_id = ?1
                 ORDER BY leg_no",
            )?;
            for p in &mut postings {
                p.legs = legs
                    .query_map([p.id], |r| {
                        Ok(LegRow {
                            account: r.get(0)?,
                            amount_fen: r.get(1)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
            }
            Ok(postings)
        })
    }

    pub(super) fn settle_terms(&self, mid: &str) -> Result<Option<SettlementTermsRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT mid, debit_bp, debit_cap_fen, credit_bp, credit_cap_fen, foreign_bp,
                     qr_bp, payout_delay_days, updated_at_ms FROM settlement_terms WHERE mid = ?1",
                )?
                .query_row([mid], |r| {
                    Ok(SettlementTermsRow {
                        mid: r.get(0)?,
                        debit_bp: r.get(1)?,
                        debit_cap_fen: r.get(2)?,
                        credit_bp: r.get(3)?,
                        credit_cap_fen: r.get(4)?,
                        foreign_bp: r.get(5)?,
                        qr_bp: r.get(6)?,
                        payout_delay_days: r.get(7)?,
                        updated_at_ms: r.get(8)?,
                    })
                })
                .optional()?)
        })
    }

    pub(super) fn settle_bound_account(
        &self,
        mid: &str,
    ) -> Result<Option<BoundAccountRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT mid, kind, number_sealed, number_masked, holder_name, bank_code,
                     version, needs_rebind, updated_at_ms FROM bound_accounts WHERE mid = ?1",
                )?
                .query_row([mid], |r| {
                    Ok(BoundAccountRow {
                        mid: r.get(0)?,
                        kind: r.get(1)?,
                        number_sealed: r.get(2)?,
                        number_masked: r.get(3)?,
                        holder_name: r.get(4)?,
                        bank_code: r.get(5)?,
                        version: r.get(6)?,
                        needs_rebind: r.get(7)?,
                        updated_at_ms: r.get(8)?,
                    })
                })
                .optional()?)
        })
    }

    pub(super) fn settle_account_changes(
        &self,
        mid: Option<&str>,
    ) -> Result<Vec<AccountChangeRow>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {CHANGE_COLUMNS} FROM account_changes WHERE ?1 IS NULL OR mid = ?1
                 ORDER BY id"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([mid], change_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_account_changes_pending(
        &self,
    ) -> Result<Vec<AccountChangeRow>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {CHANGE_COLUMNS} FROM account_changes WHERE state = 'pending_confirmation'
                 ORDER BY id"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([], change_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_account_change(
        &self,
        id: i64,
    ) -> Result<Option<AccountChangeRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {CHANGE_COLUMNS} FROM account_changes WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], change_from_row)
                .optional()?)
        })
    }

    pub(super) fn settle_payout(&self, key: &str) -> Result<Option<PayoutRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE key = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([key], payout_from_row)
                .optional()?)
        })
    }

    /// Payouts of one merchant or all, in one state or any, by payout day: oldest first (the
    /// payout run) or newest first (what people look at). By the (merchant, payout day) index,
    /// or the state index.
    pub(super) fn settle_payouts(
        &self,
        mid: Option<&str>,
        state: Option<PayoutState>,
        before: Option<(&str, &str)>,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        let mut sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE 1 = 1");
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(mid) = &mid {
            values.push(mid);
            sql.push_str(&format!(" AND mid = ?{}", values.len()));
        }
        let state = state.map(PayoutState::as_str);
        if let Some(state) = &state {
            values.push(state);
            sql.push_str(&format!(" AND state = ?{}", values.len()));
        }
        // After the last row of the page before (newest first: older days, or the same day's
        // merchants below it).
        let before = before.map(|(day, mid)| (day.to_owned(), mid.to_owned()));
        if let Some((day, before_mid)) = &before {
            values.push(day);
            let d = values.len();
            values.push(before_mid);
            let m = values.len();
            sql.push_str(&format!(
                " AND (payout_date < ?{d} OR (payout_date = ?{d} AND mid < ?{m}))"
            ));
        }
        values.push(&limit);
        let order = if newest_first {
            "payout_date DESC, mid DESC"
        } else {
            "payout_date, mid"
        };
        sql.push_str(&format!(" ORDER BY {order} LIMIT ?{}", values.len()));
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(values.as_slice(), payout_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_payouts_failing(
        &self,
        stuck_failure: &str,
        stuck_by_ms: i64,
        limit: u32,
    ) -> Result<(u64, Vec<PayoutRow>), StoreError> {
        const WAITING: &str = "state IN ('held', 'pending') AND failure IS NOT NULL";
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        self.read(|conn| {
            let count: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM payouts WHERE {WAITING}"))?
                .query_row([], |r| r.get(0))?;
            let sql = format!(
                "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE {WAITING}
                 ORDER BY CASE WHEN state = 'pending' AND failure = ?1 AND first_attempt_ms <= ?2
                 THEN 0 ELSE 1 END, payout_date DESC, mid DESC LIMIT ?3"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows =
                statement.query_map(params![stuck_failure, stuck_by_ms, limit], payout_from_row)?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            Ok((u64::try_from(count).unwrap_or(0), rows))
        })
    }

    pub(super) fn settle_payout_merchants(
        &self,
        state: PayoutState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        let state = state.as_str();
        let after = after.unwrap_or("");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT DISTINCT mid FROM payouts WHERE state = ?1 AND mid > ?2
                 ORDER BY mid LIMIT ?3",
            )?;
            let rows = statement.query_map(params![state, after, limit], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_payout_returns_open(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT reference FROM payout_returns WHERE handled_at_ms IS NULL
                 ORDER BY reference LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn settle_payout_events(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<PayoutEventRow>, StoreError> {
        let limit = limit.min(SETTLEMENT_ROWS_MAX);
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, at_ms, mid, payout_key, kind, failure, detail FROM payout_events
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after_id, limit], |r| {
                Ok(PayoutEventRow {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    mid: r.get(2)?,
                    payout_key: r.get(3)?,
                    kind: r.get(4)?,
                    failure: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
