//! SQLite side of the risk area: writes of [`RiskRecord`] and the reads of merchant profiles,
//! review history and risk alerts. A child of `sqlite`, so it shares the read connection pool.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, expect_one};
use crate::error::StoreError;
use crate::group::ExecuteAny;
use crate::risk::{
    AlertAction, AlertState, MerchantProfileRow, MerchantReviewRow, MerchantState, ResolvedAlert,
    RiskAlertRow, RiskRecord,
};

/// Alerts one query returns at most, whatever the caller asks: an operator's page or the
/// outbox tailer's step, never the whole table.
pub(crate) const RISK_ALERT_ROWS_MAX: u32 = 1_000;
/// Transactions kept behind one alert; the rule engine sends no more than its window holds.
pub(crate) const RISK_ALERT_TXNS_MAX: usize = 64;

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

sql_text_enum!(MerchantState, AlertAction, AlertState);

/// Writes merchant profile `p`: over the one there when `replace`, else only where the
/// merchant has none (a constraint error when it has).
fn write_profile(
    conn: &Connection,
    p: &MerchantProfileRow,
    replace: bool,
) -> Result<(), StoreError> {
    const INSERT: &str = "INSERT INTO merchant_profiles (mid, state, licence_no, legal_person,
         mcc, address, applied_at_ms, reviewed_by, reviewed_at_ms, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    const REPLACE: &str = " ON CONFLICT (mid) DO UPDATE SET state = excluded.state,
         licence_no = excluded.licence_no, legal_person = excluded.legal_person,
         mcc = excluded.mcc, address = excluded.address,
         applied_at_ms = excluded.applied_at_ms, reviewed_by = excluded.reviewed_by,
         reviewed_at_ms = excluded.reviewed_at_ms, note = excluded.note";
    let sql = if replace {
        format!("{INSERT}{REPLACE}")
    } else {
        INSERT.to_owned()
    };
    conn.prepare_cached(&sql)?.execute_any(params![
        p.mid,
        p.state,
        p.licence_no,
        p.legal_person,
        p.mcc,
        p.address,
        p.applied_at_ms,
        p.reviewed_by,
        p.reviewed_at_ms,
        p.note,
    ])?;
    Ok(())
}

pub(super) fn write(conn: &Connection, record: &RiskRecord) -> Result<(), StoreError> {
    match record {
        RiskRecord::Profile(p) => write_profile(conn, p, true)?,
        RiskRecord::NewProfile(p) => write_profile(conn, p, false)?,
        RiskRecord::Review(r) => {
            conn.prepare_cached(
                "INSERT INTO merchant_reviews (mid, at_ms, operator, action, from_state, to_state,
                 note, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute_any(params![
                r.mid,
                r.at_ms,
                r.operator,
                r.action,
                r.from_state,
                r.to_state,
                r.note,
                crate::next_write_seq()
            ])?;
        }
        RiskRecord::Alert(a) => {
            conn.prepare_cached(
                "INSERT INTO risk_alerts (id, kind, rule_id, action, mid, tid, detail,
                 raised_at_ms, state, resolved_by, resolved_at_ms, resolution, detail_zh)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute_any(params![
                a.id,
                a.kind,
                a.rule_id,
                a.action,
                a.mid,
                a.tid,
                a.detail,
                a.raised_at_ms,
                a.state,
                a.resolved_by,
                a.resolved_at_ms,
                a.resolution,
                a.detail_zh,
            ])?;
            let mut link = conn.prepare_cached(
                "INSERT INTO risk_alert_txns (alert_id, txn_id) VALUES (?1, ?2)
                 ON CONFLICT (alert_id, txn_id) DO NOTHING",
            )?;
            for txn_id in a.txn_ids.iter().take(RISK_ALERT_TXNS_MAX) {
                link.execute_any(params![a.id, txn_id])?;
            }
        }
        RiskRecord::ResolveAlert {
            id,
            state,
            by,
            at_ms,
            resolution,
        } => {
            // Only an open alert: of two operators deciding at once, the second is refused
            // rather than writing over the first's decision.
            let changed = conn
                .prepare_cached(
                    "UPDATE risk_alerts SET state = ?2, resolved_by = ?3, resolved_at_ms = ?4,
                     resolution = ?5 WHERE id = ?1 AND state = 'open'",
                )?
                .execute(params![id, state, by, at_ms, resolution])?;
            expect_one(changed, "open risk alert")?;
        }
        RiskRecord::TerminalStatus { tid, status } => {
            let changed = conn
                .prepare_cached("UPDATE terminals SET status = ?2 WHERE tid = ?1")?
                .execute(params![tid, status])?;
            expect_one(changed, "terminal")?;
        }
        RiskRecord::MerchantStatus { mid, status } => {
            let changed = conn
                .prepare_cached("UPDATE merchants SET status = ?2 WHERE mid = ?1")?
                .execute(params![mid, status])?;
            expect_one(changed, "merchant")?;
        }
        RiskRecord::ExpectState { mid, state } => {
            // The merchant's row lock first: on PostgreSQL another node's review of the same
            // merchant, uncommitted, is waited for, and the read below sees what it wrote.
            conn.prepare_cached("UPDATE merchants SET status = status WHERE mid = ?1")?
                .execute_any(params![mid])?;
            let current: Option<MerchantState> = conn
                .prepare_cached("SELECT state FROM merchant_profiles WHERE mid = ?1")?
                .query_row(params![mid], |r| r.get(0))
                .optional()?;
            if current != *state {
                return Err(StoreError::Constraint {
                    message: format!("merchant {mid}: its state changed meanwhile"),
                });
            }
        }
    }
    Ok(())
}

const PROFILE_COLUMNS: &str = "mid, state, licence_no, legal_person, mcc, address, \
     applied_at_ms, reviewed_by, reviewed_at_ms, note";

fn profile_from_row(r: &Row<'_>) -> rusqlite::Result<MerchantProfileRow> {
    Ok(MerchantProfileRow {
        mid: r.get(0)?,
        state: r.get(1)?,
        licence_no: r.get(2)?,
        legal_person: r.get(3)?,
        mcc: r.get(4)?,
        address: r.get(5)?,
        applied_at_ms: r.get(6)?,
        reviewed_by: r.get(7)?,
        reviewed_at_ms: r.get(8)?,
        note: r.get(9)?,
    })
}

const ALERT_COLUMNS: &str = "id, kind, rule_id, action, mid, tid, detail, raised_at_ms, state, \
     resolved_by, resolved_at_ms, resolution, detail_zh";

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<RiskAlertRow> {
    Ok(RiskAlertRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        rule_id: r.get(2)?,
        action: r.get(3)?,
        mid: r.get(4)?,
        tid: r.get(5)?,
        detail: r.get(6)?,
        txn_ids: Vec::new(),
        raised_at_ms: r.get(7)?,
        state: r.get(8)?,
        resolved_by: r.get(9)?,
        resolved_at_ms: r.get(10)?,
        resolution: r.get(11)?,
        detail_zh: r.get(12)?,
    })
}

/// Fills in each alert's transactions.
fn with_txns(
    conn: &Connection,
    mut alerts: Vec<RiskAlertRow>,
) -> Result<Vec<RiskAlertRow>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT txn_id FROM risk_alert_txns WHERE alert_id = ?1 ORDER BY txn_id")?;
    for alert in &mut alerts {
        let ids = statement.query_map([alert.id], |r| r.get::<_, i64>(0))?;
        alert.txn_ids = ids.collect::<Result<Vec<_>, _>>()?;
    }
    Ok(alerts)
}

impl SqliteStore {
    pub(super) fn risk_merchant_profile(
        &self,
        mid: &str,
    ) -> Result<Option<MerchantProfileRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {PROFILE_COLUMNS} FROM merchant_profiles WHERE mid = ?1");
            let mut statement = conn.prepare_cached(&sql)?;
            Ok(statement.query_row([mid], profile_from_row).optional()?)
        })
    }

    pub(super) fn risk_merchant_profiles(&self) -> Result<Vec<MerchantProfileRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {PROFILE_COLUMNS} FROM merchant_profiles ORDER BY mid");
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([], profile_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn risk_merchant_reviews(
        &self,
        mid: &str,
    ) -> Result<Vec<MerchantReviewRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT mid, at_ms, operator, action, from_state, to_state, note
                 FROM merchant_reviews WHERE mid = ?1 ORDER BY at_ms, seq, rowid",
            )?;
            let rows = statement.query_map([mid], |r| {
                Ok(MerchantReviewRow {
                    mid: r.get(0)?,
                    at_ms: r.get(1)?,
                    operator: r.get(2)?,
                    action: r.get(3)?,
                    from_state: r.get(4)?,
                    to_state: r.get(5)?,
                    note: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn risk_alert_by_id(&self, id: i64) -> Result<Option<RiskAlertRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {ALERT_COLUMNS} FROM risk_alerts WHERE id = ?1");
            let alert = conn
                .prepare_cached(&sql)?
                .query_row([id], alert_from_row)
                .optional()?;
            Ok(with_txns(conn, alert.into_iter().collect())?
                .into_iter()
                .next())
        })
    }

    pub(super) fn risk_open_declining_of(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            // The `(state, id)` index's open ones: few, as an operator's queue is.
            let mut statement = conn.prepare_cached(
                "SELECT DISTINCT mid, tid FROM risk_alerts
                 WHERE state = 'open' AND kind = ?1 AND action = 'decline'
                 ORDER BY mid, tid",
            )?;
            let rows = statement.query_map(params![kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<(String, String)>, _>>()?)
        })
    }

    pub(super) fn risk_alerts_in(
        &self,
        state: Option<AlertState>,
        limit: u32,
    ) -> Result<Vec<RiskAlertRow>, StoreError> {
        let limit = limit.min(RISK_ALERT_ROWS_MAX);
        self.read(|conn| {
            let alerts = match state {
                Some(state) => {
                    // Open ones newest raised first: ids come in blocks per node, so with
                    // several nodes the highest id need not be the latest alert. Open alerts
                    // are few, sorted after the `(state, id)` index finds them; the others,
                    // which grow without end, keep the index's order.
                    let order = if state == AlertState::Open {
                        "raised_at_ms DESC, id DESC"
                    } else {
                        "id DESC"
                    };
                    let sql = format!(
                        "SELECT {ALERT_COLUMNS} FROM risk_alerts WHERE state = ?1
                         ORDER BY {order} LIMIT ?2"
                    );
                    let mut statement = conn.prepare_cached(&sql)?;
                    let rows = statement.query_map(params![state, limit], alert_from_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let sql = format!(
                        "SELECT {ALERT_COLUMNS} FROM risk_alerts ORDER BY id DESC LIMIT ?1"
                    );
                    let mut statement = conn.prepare_cached(&sql)?;
                    let rows = statement.query_map(params![limit], alert_from_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
            };
            with_txns(conn, alerts)
        })
    }

    pub(super) fn risk_alerts_resolved(
        &self,
        kind: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<ResolvedAlert>, StoreError> {
        let limit = limit.min(RISK_ALERT_ROWS_MAX);
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT mid, tid, resolved_at_ms FROM risk_alerts
                 WHERE kind = ?1 AND resolved_at_ms >= ?2 ORDER BY resolved_at_ms LIMIT ?3",
            )?;
            let rows = statement.query_map(params![kind, since_ms, limit], |r| {
                Ok(ResolvedAlert {
                    mid: r.get(0)?,
                    tid: r.get(1)?,
                    resolved_at_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn risk_alerts_tail(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RiskAlertRow>, StoreError> {
        let limit = limit.min(RISK_ALERT_ROWS_MAX);
        self.read(|conn| {
            let sql = format!(
                "SELECT {ALERT_COLUMNS} FROM risk_alerts WHERE id > ?1 ORDER BY id LIMIT ?2"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(params![after_id, limit], alert_from_row)?;
            let alerts = rows.collect::<Result<Vec<_>, _>>()?;
            with_txns(conn, alerts)
        })
    }
}
