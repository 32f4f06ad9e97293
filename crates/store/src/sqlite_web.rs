//! SQLite side of the web area: writes of [`WebRecord`] and the reads of users, sessions, API
//! tokens and the audit log. A child of `sqlite`, so it shares the read connection pool.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::error::StoreError;
use crate::group::ExecuteAny;
use crate::web::{
    API_TOKENS_LISTED_MAX, ApiTokenRow, AuditRow, LoginFailuresRow, Role, SessionRow, UserRow,
    WebRecord,
};

/// Audit rows one query returns at most, whatever the caller asks.
pub(crate) const AUDIT_ROWS_MAX: u32 = 1_000;

const USER_COLUMNS: &str =
    "id, username, password_hash, role, mid, display_name, disabled, created_at_ms";

/// The condition of a checked session or token insert: user `?2` still has hash `?6` and is
/// enabled (`WebRecord::InsertSessionChecked`, `InsertApiTokenChecked`).
const CREDENTIALS_STILL: &str = "WHERE EXISTS (SELECT 1 FROM web_users
     WHERE id = ?2 AND password_hash = ?6 AND disabled = 0)";

/// The user's row lock, taken before a checked insert reads [`CREDENTIALS_STILL`]: on
/// PostgreSQL a password change or a disabling another node has made and not yet committed
/// is waited for, and the check then reads what it wrote. Without it the check read the old
/// password, the change's removal of the user's sessions and tokens could not see the insert
/// (not yet committed), and the session or token outlived the change.
fn lock_user(conn: &Connection, user_id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE web_users SET id = id WHERE id = ?1")?
        .execute_any(params![user_id])?;
    Ok(())
}

pub(super) fn write(conn: &Connection, record: &WebRecord) -> Result<(), StoreError> {
    match record {
        WebRecord::UpsertUser(u) => {
            conn.prepare_cached(
                "INSERT INTO web_users (id, username, password_hash, role, mid, display_name,
                 disabled, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET username = excluded.username,
                 password_hash = excluded.password_hash, role = excluded.role,
                 mid = excluded.mid, display_name = excluded.display_name,
                 disabled = excluded.disabled",
            )?
            .execute_any(params![
                u.id,
                u.username,
                u.password_hash,
                u.role.as_str(),
                u.mid,
                u.display_name,
                i64::from(u.disabled),
                u.created_at_ms
            ])?;
        }
        WebRecord::LoginFailed {
            user_id,
            at_ms,
            counts_since_ms,
        } => {
            conn.prepare_cached(
                "INSERT INTO web_login_failures (user_id, failures, last_at_ms) VALUES (?1, 1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET
                 failures = CASE WHEN web_login_failures.last_at_ms < ?3 THEN 1
                            ELSE web_login_failures.failures + 1 END,
                 last_at_ms = excluded.last_at_ms",
            )?
            .execute_any(params![user_id, at_ms, counts_since_ms])?;
        }
        WebRecord::ClearLoginFailures { user_id } => {
            conn.prepare_cached("DELETE FROM web_login_failures WHERE user_id = ?1")?
                .execute_any(params![user_id])?;
        }
        WebRecord::InsertSession(s) => {
            conn.prepare_cached(
                "INSERT INTO web_sessions (token_hash, user_id, csrf, created_at_ms,
                 expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute_any(params![
                s.token_hash,
                s.user_id,
                s.csrf,
                s.created_at_ms,
                s.expires_at_ms
            ])?;
        }
        WebRecord::InsertSessionChecked {
            session: s,
            password_hash,
        } => {
            lock_user(conn, s.user_id)?;
            let sql = format!(
                "INSERT INTO web_sessions (token_hash, user_id, csrf, created_at_ms,
                 expires_at_ms) SELECT ?1, ?2, ?3, ?4, ?5 {CREDENTIALS_STILL}"
            );
            let changed = conn.prepare_cached(&sql)?.execute(params![
                s.token_hash,
                s.user_id,
                s.csrf,
                s.created_at_ms,
                s.expires_at_ms,
                password_hash.0
            ])?;
            super::expect_one(changed, "user with the password checked")?;
        }
        WebRecord::DeleteSession { token_hash } => {
            conn.prepare_cached("DELETE FROM web_sessions WHERE token_hash = ?1")?
                .execute_any(params![token_hash])?;
        }
        WebRecord::ExtendSession {
            token_hash,
            expires_at_ms,
        } => {
            // Never sooner than it was (two requests extending at once), and a session that
            // ended meanwhile stays ended.
            conn.prepare_cached(
                "UPDATE web_sessions SET expires_at_ms = ?2
                 WHERE token_hash = ?1 AND expires_at_ms < ?2",
            )?
            .execute_any(params![token_hash, expires_at_ms])?;
        }
        WebRecord::EndSessions { user_id } => {
            conn.prepare_cached("DELETE FROM web_sessions WHERE user_id = ?1")?
                .execute_any(params![user_id])?;
        }
        WebRecord::SetPasswordHash {
            user_id,
            password_hash,
        } => {
            conn.prepare_cached("UPDATE web_users SET password_hash = ?2 WHERE id = ?1")?
                .execute_any(params![user_id, password_hash.0])?;
        }
        WebRecord::SetDisabled { user_id, disabled } => {
            conn.prepare_cached("UPDATE web_users SET disabled = ?2 WHERE id = ?1")?
                .execute_any(params![user_id, i64::from(*disabled)])?;
        }
        WebRecord::RevokeUserTokens { user_id } => {
            conn.prepare_cached("UPDATE web_api_tokens SET revoked = 1 WHERE user_id = ?1")?
                .execute_any(params![user_id])?;
        }
        WebRecord::EndExpiredSessions { user_id, now_ms } => {
            conn.prepare_cached(
                "DELETE FROM web_sessions WHERE user_id = ?1 AND expires_at_ms <= ?2",
            )?
            .execute_any(params![user_id, now_ms])?;
        }
        WebRecord::InsertApiToken(t) => {
            conn.prepare_cached(
                "INSERT INTO web_api_tokens (token_hash, user_id, name, created_at_ms, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute_any(params![
                t.token_hash,
                t.user_id,
                t.name,
                t.created_at_ms,
                i64::from(t.revoked)
            ])?;
        }
        WebRecord::InsertApiTokenChecked {
            token: t,
            password_hash,
        } => {
            lock_user(conn, t.user_id)?;
            let sql = format!(
                "INSERT INTO web_api_tokens (token_hash, user_id, name, created_at_ms,
                 revoked) SELECT ?1, ?2, ?3, ?4, ?5 {CREDENTIALS_STILL}"
            );
            let changed = conn.prepare_cached(&sql)?.execute(params![
                t.token_hash,
                t.user_id,
                t.name,
                t.created_at_ms,
                i64::from(t.revoked),
                password_hash.0
            ])?;
            super::expect_one(changed, "user with the password checked")?;
        }
        WebRecord::RevokeApiToken { token_hash } => {
            conn.prepare_cached("UPDATE web_api_tokens SET revoked = 1 WHERE token_hash = ?1")?
                .execute_any(params![token_hash])?;
        }
        WebRecord::Audit(a) => {
            conn.prepare_cached(
                "INSERT INTO audit_log (id, at_ms, who, action, target, before_json, after_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute_any(params![
                a.id, a.at_ms, a.who, a.action, a.target, a.before, a.after
            ])?;
        }
    }
    Ok(())
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    let role: String = r.get(3)?;
    let role = Role::parse(&role).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let disabled: i64 = r.get(6)?;
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        role,
        mid: r.get(4)?,
        display_name: r.get(5)?,
        disabled: disabled != 0,
        created_at_ms: r.get(7)?,
    })
}

impl SqliteStore {
    pub(super) fn web_user_by(
        &self,
        column: &'static str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM web_users WHERE {column} = ?1");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            Ok(statement.query_row([value], user_from_row).optional()?)
        })
    }

    pub(super) fn web_users_all(&self) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM web_users ORDER BY id");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([], user_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn web_staff_usernames_all(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT username FROM web_users WHERE role <> 'merchant' ORDER BY id",
            )?;
            let rows = statement.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The wrong passwords in a row of `user_id`, or of every user that has some.
    pub(super) fn web_login_failures_of(
        &self,
        user_id: Option<i64>,
    ) -> Result<Vec<LoginFailuresRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT user_id, failures, last_at_ms FROM web_login_failures
                 WHERE ?1 IS NULL OR user_id = ?1 ORDER BY user_id",
            )?;
            let rows = statement.query_map(params![user_id], |r| {
                Ok(LoginFailuresRow {
                    user_id: r.get(0)?,
                    failures: r.get(1)?,
                    last_at_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn web_session_by(&self, hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT token_hash, user_id, csrf, created_at_ms, expires_at_ms
                 FROM web_sessions WHERE token_hash = ?1",
            )?;
            Ok(statement
                .query_row([hash], |r| {
                    Ok(SessionRow {
                        token_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        csrf: r.get(2)?,
                        created_at_ms: r.get(3)?,
                        expires_at_ms: r.get(4)?,
                    })
                })
                .optional()?)
        })
    }

    pub(super) fn web_api_token_by(&self, hash: &[u8]) -> Result<Option<ApiTokenRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT token_hash, user_id, name, created_at_ms, revoked
                 FROM web_api_tokens WHERE token_hash = ?1",
            )?;
            Ok(statement.query_row([hash], api_token_from_row).optional()?)
        })
    }

    pub(super) fn web_api_tokens_of(
        &self,
        user_id: i64,
        created_since_ms: i64,
    ) -> Result<Vec<ApiTokenRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT token_hash, user_id, name, created_at_ms, revoked
                 FROM web_api_tokens WHERE user_id = ?1 AND created_at_ms >= ?2
                 ORDER BY created_at_ms DESC, token_hash LIMIT ?3",
            )?;
            let rows = statement.query_map(
                params![user_id, created_since_ms, API_TOKENS_LISTED_MAX],
                api_token_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn web_audit_before(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let limit = limit.min(AUDIT_ROWS_MAX);
        let before = before_id.unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, at_ms, who, action, target, before_json, after_json FROM audit_log
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![before, limit], audit_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub(super) fn web_audit_last_on(
        &self,
        target: &str,
        actions: &[&str],
    ) -> Result<Option<AuditRow>, StoreError> {
        if actions.is_empty() {
            return Ok(None);
        }
        // By the (target, action, id) index: the target's rows of those actions only, however
        // many others it has (sign-ins, wrong passwords), the newest taken.
        let listed: Vec<String> = (2..actions.len() + 2).map(|n| format!("?{n}")).collect();
        // MAX over the index's (target, action) ranges, then that row: with `ORDER BY id DESC
        // LIMIT 1` instead the planner may walk the whole log backwards by id.
        let sql = format!(
            "SELECT id, at_ms, who, action, target, before_json, after_json FROM audit_log
             WHERE id = (SELECT MAX(id) FROM audit_log WHERE target = ?1 AND action IN ({}))",
            listed.join(", ")
        );
        self.read(|conn| {
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&target];
            values.extend(actions.iter().map(|a| a as &dyn rusqlite::ToSql));
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(values.as_slice(), audit_from_row)
                .optional()?)
        })
    }
}

/// An audit row from `id, at_ms, who, action, target, before_json, after_json`.
fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        who: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        before: r.get(5)?,
        after: r.get(6)?,
    })
}

/// An API token from `token_hash, user_id, name, created_at_ms, revoked`.
fn api_token_from_row(r: &Row<'_>) -> rusqlite::Result<ApiTokenRow> {
    let revoked: i64 = r.get(4)?;
    Ok(ApiTokenRow {
        token_hash: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        created_at_ms: r.get(3)?,
        revoked: revoked != 0,
    })
}
