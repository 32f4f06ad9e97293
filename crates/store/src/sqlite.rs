//! The SQLite backend: one writer thread doing group commit over a bounded queue, and a small
//! pool of read connections. WAL mode lets readers run while the writer commits.
//!
//! Durability: `synchronous=FULL` by default. In WAL mode FULL fsyncs the log at every commit,
//! so an answered terminal's record survives power loss; NORMAL would only fsync at checkpoints
//! and could lose the last commits (never corrupt the file). Group commit is what makes FULL
//! affordable: one fsync covers every submission that queued up while the previous one ran.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;

use crate::Store;
use crate::error::{LinkRefusal, StoreError};
use crate::group::{
    Completion, ExecuteAny, Job, Output, Rider, WriteDone, completion, replace_with_failure,
    run_riders,
};
use crate::model::{
    BatchSpan, EventRow, MerchantRow, Outcome, PanAtRest, Record, SafItem, SafState, Status,
    TerminalHealthRow, TerminalRow, TxnKind, TxnRow, TxnState, WrappedKeys,
};
use crate::pending::{Durable, Pending};
use crate::risk::{AlertState, MerchantProfileRow, MerchantReviewRow, RiskAlertRow};
use crate::schema;

#[path = "sqlite_resolve.rs"]
mod sqlite_resolve;
#[path = "sqlite_risk.rs"]
mod sqlite_risk;
#[path = "sqlite_settlement.rs"]
mod sqlite_settlement;
#[path = "sqlite_web.rs"]
mod sqlite_web;

/// Submissions that may wait for the writer; beyond this `submit` fails with `QueueFull`.
pub const WRITE_QUEUE_MAX: usize = 65_536;
/// Submissions committed in one transaction at most; bounds a commit's latency and memory.
pub const WRITE_BATCH_MAX: usize = 8_192;
/// Idle read connections kept; more may be opened under a burst, then closed.
pub const READ_CONNECTIONS_MAX: usize = 8;
/// How long a connection waits on a lock held by another (checkpoints, other processes).
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// The writer's page cache (KiB): the indexes' hot pages stay in memory under load.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

const _: () = assert!(WRITE_BATCH_MAX <= WRITE_QUEUE_MAX);

/// The fsync policy of the journal (see the module comment for why FULL is the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

/// How to open a SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// A page quota for the database (SQLite `max_page_count`); writes beyond it fail with
    /// [`StoreError::Full`], as they would on a full disk.
    pub max_page_count: Option<u64>,
    /// Commit each submission on the caller's thread before `submit` returns, instead of on
    /// the group-commit writer thread. For deterministic simulation: a paused tokio clock
    /// would otherwise jump ahead while the runtime waits on another thread. Slower; never
    /// for production.
    pub inline_writer: bool,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            synchronous: Synchronous::Full,
            max_page_count: None,
            inline_writer: false,
        }
    }
}

/// A SQLite database with a group-commit writer thread.
pub struct SqliteStore {
    path: PathBuf,
    sender: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The page quota the writer applies before its next group (0: none); see
    /// [`SqliteStore::set_page_quota`].
    page_quota: Arc<AtomicU64>,
    /// The writer's connection when writes are committed inline (`SqliteConfig::inline_writer`).
    /// (connection, page quota applied to it).
    inline: Option<Mutex<(Connection, u64)>>,
    /// Opened read-only ([`SqliteStore::open_read_only`]): its readers are read-only
    /// connections, which neither switch a database's journal mode nor checkpoint it.
    read_only: bool,
    /// The stamps of the events in writes not yet settled.
    queued_events: Arc<crate::group::QueuedEvents>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, and starts the writer thread.
    pub fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        create_owners_only(&config.path)?;
        let mut writer = open_connection(&config.path)?;
        let synchronous = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        if let Some(pages) = config.max_page_count {
            let _: i64 =
                writer.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })?;
        }
        migrate(&mut writer)?;
        let page_quota = Arc::new(AtomicU64::new(config.max_page_count.unwrap_or(0)));
        if config.inline_writer {
            // No writer thread: the channel is closed and every job runs in `enqueue`.
            let (sender, _) = mpsc::channel(1);
            return Ok(SqliteStore {
                path: config.path.clone(),
                sender,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(None),
                page_quota,
                inline: Some(Mutex::new((writer, config.max_page_count.unwrap_or(0)))),
                read_only: false,
                queued_events: Arc::default(),
            });
        }
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE_MAX);
        let quota = Arc::clone(&page_quota);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(writer, receiver, &quota))
            .map_err(|e| StoreError::Backend {
                message: format!("cannot start writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            path: config.path.clone(),
            sender,
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(Some(handle)),
            page_quota,
            inline: None,
            read_only: false,
            queued_events: Arc::default(),
        })
    }

    /// Reads what `open` would find and do at `path` without changing anything: no file is
    /// created, nothing migrated (the connection is read-only).
    pub fn inspect(path: &Path) -> Result<schema::SchemaStatus, StoreError> {
        if !path.exists() {
            return schema::SchemaStatus::from_applied(false, &[], None, Vec::new());
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let table = |name: &str| -> Result<bool, StoreError> {
            Ok(conn
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
                .exists([name])?)
        };
        let applied: Vec<i64> = if table("schema_migrations")? {
            conn.prepare("SELECT version FROM schema_migrations")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let terminals = if table("terminals")? {
            let count: i64 = conn.query_row("SELECT COUNT(*) FROM terminals", [], |r| r.get(0))?;
            Some(u64::try_from(count).unwrap_or(0))
        } else {
            None
        };
        let merchants: Vec<String> = if table("merchants")? {
            conn.prepare("SELECT mid FROM merchants")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        schema::SchemaStatus::from_applied(!applied.is_empty(), &applied, terminals, merchants)
    }

    /// Changes the page quota (`max_page_count`) at run time, from the writer's next group on;
    /// `None` lifts it. Fault tests use it as a disk that fills up and gets space back (SQLite
    /// will not lower the quota below the pages in use: a lower value means "full now").
    pub fn set_page_quota(&self, pages: Option<u64>) {
        self.page_quota.store(pages.unwrap_or(0), Ordering::Release);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits what is queued, stops the writer and waits for it. Later writes fail with
    /// `WriterGone`. Blocks: call from outside the async runtime or via `spawn_blocking`.
    pub fn close(&self) {
        // A full queue still drains; `blocking_send` waits for room rather than drop the stop.
        if self.sender.blocking_send(Job::Stop).is_ok() {
            let handle = self.writer.lock().ok().and_then(|mut h| h.take());
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
    }

    /// A SQLite journal has one node: no places are claimed on it.
    #[allow(clippy::unused_self, clippy::unnecessary_wraps)]
    fn places_held(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    /// Whether jobs run on the caller's thread (`SqliteConfig::inline_writer`).
    fn writes_inline(&self) -> bool {
        self.inline.is_some()
    }

    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        if let Some(inline) = &self.inline {
            let mut writer = inline.lock().unwrap_or_else(PoisonError::into_inner);
            let (conn, applied) = &mut *writer;
            apply_quota(conn, &self.page_quota, applied);
            let mut jobs = vec![job];
            let mut completions = Vec::with_capacity(1);
            commit_group(conn, &mut jobs, &mut completions);
            drop(writer);
            for completion in completions {
                completion.deliver();
            }
            return Ok(());
        }
        self.sender.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => StoreError::WriterGone,
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None if self.read_only => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
                plan_once(&conn)?;
                conn
            }
            None => {
                let conn = open_connection(&self.path)?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READ_CONNECTIONS_MAX
        {
            pool.push(conn);
        }
        result
    }

    fn txns_where(
        &self,
        condition: &str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<TxnRow>, StoreError> {
        let sql = format!("SELECT {TXN_COLUMNS} FROM transactions WHERE {condition}");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(params, txn_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn safs_where(
        &self,
        condition: &str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<SafItem>, StoreError> {
        let sql = format!("SELECT {SAF_COLUMNS} FROM reversal_queue WHERE {condition}");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(params, saf_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Without joining: dropping may happen inside a runtime. The writer finishes what is
        // queued and exits when the channel closes.
        let _ = self.sender.try_send(Job::Stop);
    }
}

impl Store for SqliteStore {
    fn submit(&self, records: Vec<Record>) -> Result<Durable, StoreError> {
        let (done, pending) = Pending::new();
        let done = WriteDone::new(done, self.queued_events.hold(&records));
        self.enqueue(Job::Write { records, done })?;
        Ok(pending)
    }

    fn submit_open(&self, records: Vec<Record>) -> Result<(Durable, Rider), StoreError> {
        let (done, pending) = Pending::new();
        let rider = Rider::new(&self.queued_events);
        let done =
            WriteDone::new(done, self.queued_events.hold(&records)).with_rider(rider.clone());
        self.enqueue(Job::Write { records, done })?;
        Ok((pending, rider))
    }

    fn oldest_queued_event_ms(&self) -> Option<i64> {
        self.queued_events.oldest()
    }

    fn close(&self) {
        SqliteStore::close(self);
    }

    fn reads_inline(&self) -> bool {
        self.writes_inline()
    }

    fn reserve(&self, counter: &str, count: u64) -> Result<Pending<u64>, StoreError> {
        let (done, pending) = Pending::new();
        self.enqueue(Job::Reserve {
            counter: counter.to_owned(),
            count,
            done,
        })?;
        Ok(pending)
    }

    fn node_places_held(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.places_held()
    }

    fn claim_reversals(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Pending<Vec<SafItem>>, StoreError> {
        let (done, pending) = Pending::new();
        self.enqueue(Job::Claim {
            now_ms,
            lease_ms,
            limit,
            done,
        })?;
        Ok(pending)
    }

    fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT mid, name, status, mcc FROM merchants ORDER BY mid")?;
            let rows = statement.query_map([], merchant_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn merchant(&self, mid: &str) -> Result<Option<MerchantRow>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT mid, name, status, mcc FROM merchants WHERE mid = ?1")?;
            Ok(statement.query_row([mid], merchant_from_row).optional()?)
        })
    }

    fn terminals(&self) -> Result<Vec<TerminalRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {TERMINAL_COLUMNS} FROM terminals ORDER BY tid");
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([], terminal_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn terminals_of_merchant(&self, mid: &str) -> Result<Vec<TerminalRow>, StoreError> {
        self.read(|conn| {
            let sql =
                format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE mid = ?1 ORDER BY tid");
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map([mid], terminal_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn terminal(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE tid = ?1");
            let mut statement = conn.prepare_cached(&sql)?;
            Ok(statement.query_row([tid], terminal_from_row).optional()?)
        })
    }

    fn terminal_health(&self) -> Result<Vec<TerminalHealthRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tid, application_type, software_version, sub_version, clock_drift_s,
                 seen_at_ms, fallbacks FROM terminal_health ORDER BY tid",
            )?;
            let rows = statement.query_map([], terminal_health_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn terminal_health_of_merchant(&self, mid: &str) -> Result<Vec<TerminalHealthRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT h.tid, h.application_type, h.software_version, h.sub_version,
                 h.clock_drift_s, h.seen_at_ms, h.fallbacks
                 FROM terminals t JOIN terminal_health h ON h.tid = t.tid
                 WHERE t.mid = ?1 ORDER BY h.tid",
            )?;
            let rows = statement.query_map([mid], terminal_health_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn txn(&self, id: i64) -> Result<Option<TxnRow>, StoreError> {
        Ok(self.txns_where("id = ?1", &[&id])?.into_iter().next())
    }

    fn txns_by_key(&self, tid: &str, batch_no: u32, stan: u32) -> Result<Vec<TxnRow>, StoreError> {
        self.txns_where(
            "tid = ?1 AND batch_no = ?2 AND stan = ?3 ORDER BY id",
            &[&tid, &batch_no, &stan],
        )
    }

    fn txn_by_rrn(&self, rrn: &str) -> Result<Option<TxnRow>, StoreError> {
        Ok(self.txns_where("rrn = ?1", &[&rrn])?.into_iter().next())
    }

    fn txns_by_batch(&self, tid: &str, batch_no: u32) -> Result<Vec<TxnRow>, StoreError> {
        self.txns_where("tid = ?1 AND batch_no = ?2 ORDER BY id", &[&tid, &batch_no])
    }

    fn txns_since(&self, clearing_date: &str) -> Result<Vec<TxnRow>, StoreError> {
        // Sorted here: with `ORDER BY id` SQLite walks the whole table in id order, reading
        // every row of every month, rather than the clearing-date index's range and a sort.
        let mut rows = self.txns_where("clearing_date >= ?1", &[&clearing_date])?;
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    }

    fn each_txn_since(
        &self,
        clearing_date: &str,
        each: &mut dyn FnMut(TxnRow),
    ) -> Result<(), StoreError> {
        // A page at a time, by date and then by id within it, each page read afresh after the
        // last one's (date, id): a backend that holds a whole result in memory (PostgreSQL's
        // client does) holds a page, not two days of a busy journal.
        let page_sql = format!(
            "SELECT {TXN_COLUMNS} FROM transactions WHERE clearing_date = ?1 AND id > ?2
             ORDER BY id LIMIT {EACH_TXN_PAGE}"
        );
        let mut date = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT MIN(clearing_date) FROM transactions WHERE clearing_date >= ?1",
            )?;
            Ok(statement.query_row([clearing_date], |r| r.get::<_, Option<String>>(0))?)
        })?;
        while let Some(day) = date {
            let mut after = i64::MIN;
            loop {
                let page = self.read(|conn| {
                    let mut statement = conn.prepare_cached(&page_sql)?;
                    let rows = statement.query_map(params![day, after], txn_from_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })?;
                let full = page.len() == EACH_TXN_PAGE;
                for row in page {
                    after = row.id;
                    each(row);
                }
                if !full {
                    break;
                }
            }
            date = self.read(|conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT MIN(clearing_date) FROM transactions WHERE clearing_date > ?1",
                )?;
                Ok(statement.query_row([&day], |r| r.get::<_, Option<String>>(0))?)
            })?;
        }
        Ok(())
    }

    fn batches_cleared(&self, from: &str, to: &str) -> Result<Vec<BatchSpan>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tid, batch_no, MAX(clearing_date), MIN(stan), MAX(stan) FROM transactions
                 WHERE clearing_date >= ?1 AND clearing_date < ?2
                 GROUP BY tid, batch_no ORDER BY tid, batch_no",
            )?;
            let rows = statement.query_map([from, to], |r| {
                Ok(BatchSpan {
                    tid: r.get(0)?,
                    batch_no: r.get(1)?,
                    last_clearing_date: r.get(2)?,
                    stan_min: r.get(3)?,
                    stan_max: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn stans_of_batch(
        &self,
        tid: &str,
        batch_no: u32,
        since: &str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT MIN(stan), MAX(stan) FROM transactions
                 WHERE tid = ?1 AND batch_no = ?2 AND clearing_date >= ?3",
            )?;
            let params: &[&dyn rusqlite::ToSql] = &[&tid, &batch_no, &since];
            let (min, max): (Option<u32>, Option<u32>) =
                statement.query_row(params, |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(min.zip(max))
        })
    }

    fn txns_in_state(&self, state: TxnState) -> Result<Vec<TxnRow>, StoreError> {
        if state == TxnState::InFlight {
            // The literal lets the partial index `transactions_in_flight` answer.
            return self.txns_where("state = 'in_flight' ORDER BY id", &[]);
        }
        self.txns_where("state = ?1 ORDER BY id", &[&state])
    }

    fn events(&self, txn_id: i64) -> Result<Vec<EventRow>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                // Events of one millisecond in the order written (`seq`, `next_write_seq`);
                // those written before it had one (0) by `rowid`, which SQLite gave in that
                // order (`ctid` on PostgreSQL, which need not follow it).
                "SELECT txn_id, at_ms, kind, detail FROM events WHERE txn_id = ?1
                 ORDER BY at_ms, seq, rowid",
            )?;
            let rows = statement.query_map([txn_id], |r| {
                Ok(EventRow {
                    txn_id: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn balance_answer(&self, txn_id: i64) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT field54 FROM balance_answers WHERE txn_id = ?1")?;
            Ok(statement
                .query_row(params![txn_id], |r| r.get(0))
                .optional()?)
        })
    }

    fn reversal(&self, txn_id: i64) -> Result<Option<SafItem>, StoreError> {
        Ok(self
            .safs_where("txn_id = ?1", &[&txn_id])?
            .into_iter()
            .next())
    }

    fn reversals_in_state(&self, state: SafState) -> Result<Vec<SafItem>, StoreError> {
        self.safs_where("state = ?1 ORDER BY next_attempt_ms, txn_id", &[&state])
    }

    fn count_reversals_in_state(&self, state: SafState) -> Result<u64, StoreError> {
        let count: i64 = self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT COUNT(*) FROM reversal_queue WHERE state = ?1")?;
            Ok(statement.query_row(params![state], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn count_reversals_attempted(&self, state: SafState, attempts: u32) -> Result<u64, StoreError> {
        let count: i64 = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM reversal_queue WHERE state = ?1 AND attempts >= ?2",
            )?;
            Ok(statement.query_row(params![state, attempts], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn reversals_attempted(
        &self,
        state: SafState,
        attempts: u32,
        limit: u32,
    ) -> Result<Vec<SafItem>, StoreError> {
        self.safs_where(
            "state = ?1 AND attempts >= ?2 ORDER BY txn_id LIMIT ?3",
            &[&state, &attempts, &limit],
        )
    }

    fn reversals_refused_standing(&self, limit: u32) -> Result<Vec<SafItem>, StoreError> {
        self.safs_where(
            "state = ?1 AND (last_error IS NULL OR last_error <> '25') \
             ORDER BY done_at_ms DESC, txn_id DESC LIMIT ?2",
            &[&SafState::Refused, &limit],
        )
    }

    fn count_reversals_refused_standing(&self) -> Result<u64, StoreError> {
        let count: i64 = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM reversal_queue WHERE state = ?1
                 AND (last_error IS NULL OR last_error <> '25')",
            )?;
            Ok(statement.query_row(params![SafState::Refused], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn count_reversals_of_merchant(
        &self,
        state: SafState,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, StoreError> {
        let count: i64 = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM reversal_queue q JOIN transactions t ON t.id = q.txn_id
                 WHERE q.state = ?1 AND t.mid = ?2 AND t.received_at_ms >= ?3
                 AND t.received_at_ms < ?4",
            )?;
            Ok(statement.query_row(params![state, mid, from_ms, to_ms], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    // --- risk (in sqlite_risk.rs)
    fn merchant_profile(&self, mid: &str) -> Result<Option<MerchantProfileRow>, StoreError> {
        self.risk_merchant_profile(mid)
    }
    fn merchant_profiles(&self) -> Result<Vec<MerchantProfileRow>, StoreError> {
        self.risk_merchant_profiles()
    }
    fn merchant_reviews(&self, mid: &str) -> Result<Vec<MerchantReviewRow>, StoreError> {
        self.risk_merchant_reviews(mid)
    }
    fn risk_alert(&self, id: i64) -> Result<Option<RiskAlertRow>, StoreError> {
        self.risk_alert_by_id(id)
    }
    fn risk_alerts(
        &self,
        state: Option<AlertState>,
        limit: u32,
    ) -> Result<Vec<RiskAlertRow>, StoreError> {
        self.risk_alerts_in(state, limit)
    }
    fn risk_open_declining(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.risk_open_declining_of(kind)
    }
    fn risk_alerts_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RiskAlertRow>, StoreError> {
        self.risk_alerts_tail(after_id, limit)
    }
    fn risk_alerts_resolved_since(
        &self,
        kind: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<crate::risk::ResolvedAlert>, StoreError> {
        self.risk_alerts_resolved(kind, since_ms, limit)
    }

    // --- settlement (in sqlite_settlement.rs)
    fn txns_on(&self, clearing_date: &str) -> Result<Vec<TxnRow>, StoreError> {
        self.txns_where("clearing_date = ?1 ORDER BY id", &[&clearing_date])
    }
    fn batch_settlement(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Option<crate::settlement::BatchSettlementRow>, StoreError> {
        self.settle_batch_settlement(tid, batch_no)
    }
    fn batch_settlements_recent(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, crate::settlement::BatchSettlementRow)>, StoreError> {
        self.settle_batch_settlements_recent(mid, limit)
    }
    fn batch_uploads(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<crate::settlement::BatchUploadRow>, StoreError> {
        self.settle_batch_uploads(tid, batch_no)
    }
    fn batch_differences(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Result<Vec<crate::settlement::BatchDiffRow>, StoreError> {
        self.settle_batch_differences(tid, batch_no)
    }
    fn clearing_lines(
        &self,
        clearing_date: &str,
    ) -> Result<Vec<crate::settlement::ClearingLineRow>, StoreError> {
        self.settle_clearing_lines(clearing_date)
    }
    fn clearing_totals(
        &self,
        mid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::settlement::ClearingTotalRow>, StoreError> {
        self.settle_clearing_totals(mid, limit)
    }
    fn clearing_dates_touched_since(&self, at_ms: i64) -> Result<Vec<String>, StoreError> {
        self.settle_dates_touched_since(at_ms)
    }
    fn settle_runs(
        &self,
        clearing_date: Option<&str>,
    ) -> Result<Vec<crate::settlement::SettleRunRow>, StoreError> {
        self.settle_runs_of(clearing_date)
    }
    fn ledger_balances(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.settle_ledger_balances()
    }
    fn ledger_balance(
        &self,
        account: &str,
        value_date_max: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.settle_ledger_balance(account, value_date_max)
    }
    fn unbalanced_postings(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.settle_unbalanced_postings()
    }
    fn postings_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<crate::settlement::PostingRow>, StoreError> {
        self.settle_postings_by_reference(reference)
    }
    fn settlement_terms(
        &self,
        mid: &str,
    ) -> Result<Option<crate::settlement::SettlementTermsRow>, StoreError> {
        self.settle_terms(mid)
    }
    fn bound_account(
        &self,
        mid: &str,
    ) -> Result<Option<crate::settlement::BoundAccountRow>, StoreError> {
        self.settle_bound_account(mid)
    }
    fn account_changes(
        &self,
        mid: Option<&str>,
    ) -> Result<Vec<crate::settlement::AccountChangeRow>, StoreError> {
        self.settle_account_changes(mid)
    }
    fn account_changes_pending(
        &self,
    ) -> Result<Vec<crate::settlement::AccountChangeRow>, StoreError> {
        self.settle_account_changes_pending()
    }
    fn account_change(
        &self,
        id: i64,
    ) -> Result<Option<crate::settlement::AccountChangeRow>, StoreError> {
        self.settle_account_change(id)
    }
    fn payout(&self, key: &str) -> Result<Option<crate::settlement::PayoutRow>, StoreError> {
        self.settle_payout(key)
    }
    fn payouts(
        &self,
        mid: Option<&str>,
        state: Option<crate::settlement::PayoutState>,
        limit: u32,
    ) -> Result<Vec<crate::settlement::PayoutRow>, StoreError> {
        self.settle_payouts(mid, state, None, limit, false)
    }
    fn count_payouts_failing_since(
        &self,
        failure: &str,
        first_attempt_by_ms: i64,
    ) -> Result<u64, StoreError> {
        let count: i64 = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM payouts WHERE state = 'pending' AND failure = ?1
                 AND first_attempt_ms <= ?2",
            )?;
            Ok(statement.query_row(params![failure, first_attempt_by_ms], |r| r.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
    fn payouts_failing(
        &self,
        stuck_failure: &str,
        stuck_by_ms: i64,
        limit: u32,
    ) -> Result<(u64, Vec<crate::settlement::PayoutRow>), StoreError> {
        self.settle_payouts_failing(stuck_failure, stuck_by_ms, limit)
    }
    fn payouts_newest(
        &self,
        mid: Option<&str>,
        state: Option<crate::settlement::PayoutState>,
        limit: u32,
    ) -> Result<Vec<crate::settlement::PayoutRow>, StoreError> {
        self.settle_payouts(mid, state, None, limit, true)
    }
    fn payouts_newest_before(
        &self,
        mid: Option<&str>,
        state: Option<crate::settlement::PayoutState>,
        before: (&str, &str),
        limit: u32,
    ) -> Result<Vec<crate::settlement::PayoutRow>, StoreError> {
        self.settle_payouts(mid, state, Some(before), limit, true)
    }
    fn payout_events(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<crate::settlement::PayoutEventRow>, StoreError> {
        self.settle_payout_events(after_id, limit)
    }
    fn payout_merchants(
        &self,
        state: crate::settlement::PayoutState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.settle_payout_merchants(state, after, limit)
    }
    fn payout_returns_open(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        self.settle_payout_returns_open(limit)
    }

    // --- web (in sqlite_web.rs)
    fn web_user(&self, id: i64) -> Result<Option<crate::web::UserRow>, StoreError> {
        self.web_user_by("id", &id)
    }
    fn web_user_by_name(&self, username: &str) -> Result<Option<crate::web::UserRow>, StoreError> {
        self.web_user_by("username", &username)
    }
    fn web_users(&self) -> Result<Vec<crate::web::UserRow>, StoreError> {
        self.web_users_all()
    }
    fn web_staff_usernames(&self) -> Result<Vec<String>, StoreError> {
        self.web_staff_usernames_all()
    }
    fn web_login_failures(
        &self,
        user_id: Option<i64>,
    ) -> Result<Vec<crate::web::LoginFailuresRow>, StoreError> {
        self.web_login_failures_of(user_id)
    }
    fn web_session(&self, hash: &[u8]) -> Result<Option<crate::web::SessionRow>, StoreError> {
        self.web_session_by(hash)
    }
    fn web_api_token(&self, hash: &[u8]) -> Result<Option<crate::web::ApiTokenRow>, StoreError> {
        self.web_api_token_by(hash)
    }
    fn web_api_tokens(
        &self,
        user_id: i64,
        created_since_ms: i64,
    ) -> Result<Vec<crate::web::ApiTokenRow>, StoreError> {
        self.web_api_tokens_of(user_id, created_since_ms)
    }
    fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::web::AuditRow>, StoreError> {
        self.web_audit_before(before_id, limit)
    }
    fn audit_last_on(
        &self,
        target: &str,
        actions: &[&str],
    ) -> Result<Option<crate::web::AuditRow>, StoreError> {
        self.web_audit_last_on(target, actions)
    }

    // --- resolve (in sqlite_resolve.rs)
    fn txns_of_card_at(&self, fingerprint: &[u8], mid: &str) -> Result<Vec<TxnRow>, StoreError> {
        self.resolve_txns_of_card_at(fingerprint, mid)
    }
    fn latest_payment_of_card(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        from_ms: i64,
        before: (i64, i64),
    ) -> Result<Option<TxnRow>, StoreError> {
        self.resolve_latest_payment_of_card(fingerprint, mid, amount_fen, from_ms, before)
    }
    fn earliest_payment_of_card_after(
        &self,
        fingerprint: &[u8],
        mid: &str,
        amount_fen: i64,
        after: (i64, i64),
        to_ms: i64,
    ) -> Result<Option<TxnRow>, StoreError> {
        self.resolve_earliest_payment_of_card_after(fingerprint, mid, amount_fen, after, to_ms)
    }
    fn tally_of_merchant(
        &self,
        mid: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::TxnTally>, StoreError> {
        self.resolve_tally_of_merchant(mid, from_ms, to_ms)
    }
    fn txns_of_merchant_newest(
        &self,
        mid: &str,
        from_ms: i64,
        before: (i64, i64),
        limit: u32,
    ) -> Result<Vec<TxnRow>, StoreError> {
        self.resolve_txns_of_merchant_newest(mid, from_ms, before, limit)
    }
    fn txns_linked_to(&self, id: i64) -> Result<Vec<TxnRow>, StoreError> {
        self.resolve_txns_linked_to(id)
    }
    fn events_since(&self, at_ms: i64, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        self.resolve_events_since(at_ms, limit)
    }
    fn case(&self, id: i64) -> Result<Option<crate::resolve::CaseRow>, StoreError> {
        self.resolve_case(id)
    }
    fn cases(
        &self,
        query: &crate::resolve::CaseQuery<'_>,
    ) -> Result<Vec<crate::resolve::CaseRow>, StoreError> {
        self.resolve_cases(query)
    }
    fn count_open_cases(&self, mid: &str) -> Result<u64, StoreError> {
        self.resolve_count_open_cases(mid)
    }
    fn cases_of_txn(&self, txn_id: i64) -> Result<Vec<crate::resolve::CaseRow>, StoreError> {
        self.resolve_cases_of_txn(txn_id)
    }
    fn case_entries(&self, id: i64) -> Result<Vec<crate::resolve::CaseEntryRow>, StoreError> {
        self.resolve_case_entries(id)
    }
    fn webhook_endpoint(
        &self,
        mid: &str,
    ) -> Result<Option<crate::resolve::WebhookEndpointRow>, StoreError> {
        self.resolve_endpoint(mid)
    }
    fn outbox_due_merchants(
        &self,
        now: i64,
        after: Option<(i64, &str)>,
        n: u32,
    ) -> Result<Vec<crate::resolve::DueMerchant>, StoreError> {
        self.resolve_outbox_due_merchants(now, after, n)
    }
    fn outbox_due_of_merchant(
        &self,
        mid: &str,
        now: i64,
        n: u32,
    ) -> Result<Vec<crate::resolve::OutboxRow>, StoreError> {
        self.resolve_outbox_due_of_merchant(mid, now, n)
    }
    fn outbox_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::resolve::OutboxRow>, StoreError> {
        self.resolve_outbox_of_merchant(mid, before_id, limit)
    }
    fn outbox_item(&self, id: i64) -> Result<Option<crate::resolve::OutboxRow>, StoreError> {
        self.resolve_outbox_item(id)
    }
    fn webhook_deliveries(&self, id: i64) -> Result<Vec<crate::resolve::DeliveryRow>, StoreError> {
        self.resolve_deliveries(id)
    }
    fn backoffice_key(
        &self,
        key: &str,
    ) -> Result<Option<crate::resolve::BackOfficeKeyRow>, StoreError> {
        self.resolve_backoffice_key(key)
    }
    fn duplicates_of_merchant(
        &self,
        mid: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::resolve::DuplicateRow>, StoreError> {
        self.resolve_duplicates_of_merchant(mid, before_id, limit)
    }
    fn duplicates_flagged_since(
        &self,
        mid: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<crate::resolve::DuplicateRow>, StoreError> {
        self.resolve_duplicates_flagged_since(mid, since_ms, limit)
    }
    fn duplicates_of_txn(&self, id: i64) -> Result<Vec<crate::resolve::DuplicateRow>, StoreError> {
        self.resolve_duplicates_of_txn(id)
    }
    fn resolve_cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.resolve_cursor_position(name)
    }
}

/// Creates the journal's file, empty (which SQLite takes for a new database), readable and
/// writable by its owner alone, unless it is there already. SQLite gives its log and shared
/// memory files the database file's mode, so they are the owner's too: the journal holds
/// sealed and masked card numbers, bound accounts, password hashes and merchants' business.
/// Left to SQLite, it would be made with the process's umask, readable by anyone (0644).
fn create_owners_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend {
            message: format!("cannot create the journal {}: {e}", path.display()),
        }),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    plan_once(&conn)?;
    // Another process switching a new file to WAL at the same moment makes this answer "busy"
    // at once, without the busy handler: tried again for as long as a busy wait lasts.
    let deadline = std::time::Instant::now() + Duration::from_millis(BUSY_TIMEOUT_MS);
    let mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            mode => break mode?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend {
            message: format!("cannot enable WAL (journal mode {mode})"),
        });
    }
    Ok(conn)
}

/// Plans that do not depend on bound values (SQLite's query planner stability guarantee). A
/// statement whose plan could use a bound value (one compared with the column of a partial
/// index's condition, such as `state`) is otherwise prepared again each time it is bound, so a
/// cached statement saved nothing: the duplicate check after each approved payment spent most
/// of its time in SQLite's parser. Every partial index here is matched by a literal condition.
fn plan_once(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(schema::MIGRATIONS_TABLE)?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = schema::latest_version();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    // Versions are pre-assigned to work landing in any order: apply every one not yet
    // recorded, not only those above the highest (a v2 may arrive after a v3 ran).
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for migration in schema::MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
    {
        // Taken with the write lock and read again inside it: another process opening the
        // same file at once (a CLI beside a running demo) may have applied it meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [migration.version],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        tx.execute_batch(&schema::render(migration, schema::SQLITE_BYTES))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Applies a changed page quota to the writer's connection before its next group.
fn apply_quota(conn: &Connection, quota: &AtomicU64, applied: &mut u64) {
    let wanted = quota.load(Ordering::Acquire);
    if wanted != *applied {
        // SQLite's own ceiling stands for "no quota".
        let pages = if wanted == 0 { 4_294_967_294 } else { wanted };
        let set: Result<i64, _> =
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            });
        if set.is_ok() {
            *applied = wanted;
        }
    }
}

fn run_writer(mut conn: Connection, mut receiver: mpsc::Receiver<Job>, quota: &AtomicU64) {
    let mut jobs = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut completions = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut applied_quota = quota.load(Ordering::Acquire);
    loop {
        let Some(first) = receiver.blocking_recv() else {
            return;
        };
        apply_quota(&conn, quota, &mut applied_quota);
        jobs.push(first);
        while jobs.len() < WRITE_BATCH_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let stop = commit_group(&mut conn, &mut jobs, &mut completions);
        for completion in completions.drain(..) {
            completion.deliver();
        }
        if stop {
            return;
        }
    }
}

fn execute(conn: &Connection, job: &Job) -> Result<Output, StoreError> {
    match job {
        Job::Write { records, .. } => write_records(conn, records).map(|()| Output::Unit),
        Job::Reserve { counter, count, .. } => {
            reserve_counter(conn, counter, *count).map(Output::Counter)
        }
        Job::Claim {
            now_ms,
            lease_ms,
            limit,
            ..
        } => claim(conn, *now_ms, *lease_ms, *limit).map(Output::Claimed),
        Job::Stop => Ok(Output::Unit),
    }
}

/// Runs a group of jobs in one transaction and one commit. The fast path runs them back to
/// back; only if one fails is the group rolled back and rerun with a savepoint per job, so
/// that a bad job fails alone. Returns whether a stop was requested.
fn commit_group(
    conn: &mut Connection,
    jobs: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
) -> bool {
    let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
    if begin(conn).is_ok() {
        let mut outputs = Vec::with_capacity(jobs.len());
        let mut failed = false;
        for job in jobs.iter() {
            match execute(conn, job) {
                Ok(output) => outputs.push(output),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            let _ = run_riders(
                &*conn,
                jobs.iter().filter_map(Job::rider),
                write_in_savepoint,
                |_| false,
            );
        }
        if !failed && conn.execute_batch("COMMIT").is_ok() {
            for (job, output) in jobs.drain(..).zip(outputs) {
                completions.extend(completion(job, Ok(output)));
            }
            return stop;
        }
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    commit_group_carefully(conn, jobs, completions);
    stop
}

/// The slow path: a savepoint per job. SQLite rolls the whole transaction back by itself on
/// some errors (disk full, I/O errors); then every job done so far in it has failed too, and
/// the rest of the group starts afresh.
fn commit_group_carefully(
    conn: &mut Connection,
    jobs: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
) {
    let mut began = begin(conn);
    let mut first_in_transaction = completions.len();
    // The riders of the writes done in the transaction under way.
    let mut riders = Vec::new();
    for job in jobs.drain(..) {
        let result = in_savepoint(conn, &began, |c| execute(c, &job));
        let failure = result.as_ref().err().cloned();
        if failure.is_none()
            && let Some(rider) = job.rider()
        {
            riders.push(rider.clone());
        }
        let Some(done) = completion(job, result) else {
            continue;
        };
        completions.push(done);
        if let Some(error) = failure
            && began.is_ok()
            && conn.is_autocommit()
        {
            fail_from(completions, first_in_transaction, &error);
            began = begin(conn);
            first_in_transaction = completions.len();
            riders.clear();
        }
    }
    if began.is_ok() {
        let _ = run_riders(&*conn, &riders, write_in_savepoint, |_| false);
    }
    if began.is_ok()
        && let Err(error) = conn.execute_batch("COMMIT")
    {
        let error = StoreError::from(error);
        // A failed COMMIT may leave the transaction open; end it so the next group starts
        // clean. The rollback's own failure changes nothing for the waiters.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        fail_from(completions, first_in_transaction, &error);
    }
}

fn begin(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(StoreError::from)
}

/// Fails every completion from index `first` on, keeping an earlier failure's own error.
fn fail_from(completions: &mut [Completion], first: usize, error: &StoreError) {
    for completion in completions.iter_mut().skip(first) {
        let failed = match completion {
            Completion::Write(_, result) => result.is_err(),
            Completion::Reserve(_, result) => result.is_err(),
            Completion::Claim(_, result) => result.is_err(),
        };
        if !failed {
            replace_with_failure(completion, error);
        }
    }
}

/// Writes a rider's records in a savepoint of the transaction under way. Not once SQLite has
/// rolled that transaction back by itself (disk full, an I/O error, in an earlier rider): a
/// savepoint then would open a transaction of its own and commit the records alone.
fn write_in_savepoint(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    if conn.is_autocommit() {
        return Err(StoreError::Backend {
            message: "the transaction was rolled back before these records".to_owned(),
        });
    }
    in_savepoint(conn, &Ok(()), |c| write_records(c, records))
}

fn in_savepoint<T>(
    conn: &Connection,
    began: &Result<(), StoreError>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(error) = began {
        return Err(error.clone());
    }
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            // After an automatic rollback there is no savepoint left to return to.
            if !conn.is_autocommit() {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                conn.prepare_cached("RELEASE job")?.execute([])?;
            }
            Err(error)
        }
    }
}

impl<P: rusqlite::Params> ExecuteAny<P> for rusqlite::Statement<'_> {
    type Error = rusqlite::Error;

    fn execute_any(&mut self, params: P) -> Result<(), rusqlite::Error> {
        self.execute(params).map(drop)
    }
}

fn expect_one(changed: usize, what: &str) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Constraint {
            message: format!("{what}: no such row"),
        })
    }
}

fn write_records(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    for record in records {
        write_record(conn, record)?;
    }
    Ok(())
}

fn write_record(conn: &Connection, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::UpsertMerchant(m) => {
            conn.prepare_cached(
                "INSERT INTO merchants (mid, name, status, mcc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (mid) DO UPDATE SET name = excluded.name,
                 status = excluded.status, mcc = excluded.mcc",
            )?
            .execute_any(params![m.mid, m.name, m.status, m.mcc])?;
        }
        Record::UpsertTerminal(t) | Record::InsertTerminal(t) => {
            let keys = t.working_keys.as_ref();
            const INSERT: &str = "INSERT INTO terminals (tid, mid, tmk_wrapped, key_scheme,
                 mac_algorithm, status, batch_no, last_sign_in_ms, pik_wrapped, mak_wrapped,
                 tdk_wrapped) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
            const UPSERT: &str = "INSERT INTO terminals (tid, mid, tmk_wrapped, key_scheme,
                 mac_algorithm, status, batch_no, last_sign_in_ms, pik_wrapped, mak_wrapped,
                 tdk_wrapped) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (tid) DO UPDATE SET mid = excluded.mid,
                 tmk_wrapped = excluded.tmk_wrapped, key_scheme = excluded.key_scheme,
                 mac_algorithm = excluded.mac_algorithm, status = excluded.status,
                 batch_no = excluded.batch_no, last_sign_in_ms = excluded.last_sign_in_ms,
                 pik_wrapped = excluded.pik_wrapped, mak_wrapped = excluded.mak_wrapped,
                 tdk_wrapped = excluded.tdk_wrapped";
            let new_only = matches!(record, Record::InsertTerminal(_));
            conn.prepare_cached(if new_only { INSERT } else { UPSERT })?
                .execute_any(params![
                    t.tid,
                    t.mid,
                    t.tmk_wrapped,
                    t.key_scheme,
                    t.mac_algorithm,
                    t.status,
                    t.batch_no,
                    t.last_sign_in_ms,
                    keys.map(|k| &k.pik),
                    keys.map(|k| &k.mak),
                    keys.and_then(|k| k.tdk.as_ref()),
                ])?;
        }
        Record::SignIn {
            tid,
            at_ms,
            batch_no,
            keys,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE terminals SET last_sign_in_ms = ?2, batch_no = ?3, pik_wrapped = ?4,
                     mak_wrapped = ?5, tdk_wrapped = ?6 WHERE tid = ?1",
                )?
                .execute(params![tid, at_ms, batch_no, keys.pik, keys.mak, keys.tdk])?;
            expect_one(changed, "terminal")?;
        }
        Record::TerminalHealth(h) => {
            conn.prepare_cached(
                "INSERT INTO terminal_health (tid, application_type, software_version,
                 sub_version, clock_drift_s, seen_at_ms, fallbacks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (tid) DO UPDATE SET application_type = excluded.application_type,
                 software_version = excluded.software_version,
                 sub_version = excluded.sub_version, clock_drift_s = excluded.clock_drift_s,
                 seen_at_ms = excluded.seen_at_ms,
                 fallbacks = CASE WHEN excluded.fallbacks > terminal_health.fallbacks
                     THEN excluded.fallbacks ELSE terminal_health.fallbacks END
                 WHERE excluded.seen_at_ms >= terminal_health.seen_at_ms",
            )?
            .execute_any(params![
                h.tid,
                h.application_type,
                h.software_version,
                h.sub_version,
                h.clock_drift_s,
                h.seen_at_ms,
                h.fallbacks
            ])?;
        }
        Record::SignOff { tid } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE terminals SET pik_wrapped = NULL, mak_wrapped = NULL,
                     tdk_wrapped = NULL WHERE tid = ?1",
                )?
                .execute([tid])?;
            expect_one(changed, "terminal")?;
        }
        Record::Batch { tid, batch_no } => {
            let changed = conn
                .prepare_cached("UPDATE terminals SET batch_no = ?2 WHERE tid = ?1")?
                .execute(params![tid, batch_no])?;
            expect_one(changed, "terminal")?;
        }
        Record::InsertTxn(t) => insert_txn(conn, t)?,
        Record::ClaimKey {
            tid,
            batch_no,
            stan,
            reversal,
            alone,
            since,
        } => claim_key(conn, tid, *batch_no, *stan, (*reversal, *alone), since)?,
        Record::Outcome(o) => write_outcome(conn, o)?,
        Record::State { id, state } => {
            let changed = conn
                .prepare_cached("UPDATE transactions SET state = ?2 WHERE id = ?1")?
                .execute(params![id, state])?;
            expect_one(changed, "transaction")?;
        }
        Record::StateFrom { id, from, state } => {
            let changed = conn
                .prepare_cached("UPDATE transactions SET state = ?3 WHERE id = ?1 AND state = ?2")?
                .execute(params![id, from, state])?;
            if changed != 1 {
                return Err(StoreError::Constraint {
                    message: format!("transaction {id}: no longer {}", from.as_str()),
                });
            }
        }
        Record::GiveBack { id } => {
            // Not while another void or completion of it stands approved: the acknowledgement
            // of a reversal taken twice (two nodes' leases overlapping) must not give back an
            // original voided again since.
            conn.prepare_cached(
                "UPDATE transactions SET state = 'approved'
                 WHERE id = ?1 AND state IN ('voided', 'completed')
                 AND NOT EXISTS (SELECT 1 FROM transactions AS l WHERE l.original_id = ?1
                 AND l.kind IN ('purchase_void', 'completion_void', 'pre_auth_void',
                 'completion') AND l.state = 'approved')",
            )?
            .execute_any(params![id])?;
        }
        Record::CompleteAgain { id, by } => {
            conn.prepare_cached(
                "UPDATE transactions SET state = 'completed'
                 WHERE id = ?1 AND state = 'approved'
                 AND EXISTS (SELECT 1 FROM transactions AS c WHERE c.id = ?2
                             AND c.kind = 'completion' AND c.state = 'approved')",
            )?
            .execute_any(params![id, by])?;
        }
        Record::TakeOriginal { id, by, state } => {
            // The link's row lock first: a reversal another node commits meanwhile is either
            // seen here or waits for this.
            let link_approved = conn
                .prepare_cached(
                    "UPDATE transactions SET state = state WHERE id = ?1 AND state = 'approved'",
                )?
                .execute(params![by])?
                == 1;
            if link_approved {
                let changed = conn
                    .prepare_cached("UPDATE transactions SET state = ?2 WHERE id = ?1")?
                    .execute(params![id, state])?;
                expect_one(changed, "transaction")?;
            }
        }
        Record::BalanceAnswer { id, field54 } => {
            conn.prepare_cached(
                "INSERT INTO balance_answers (txn_id, field54) VALUES (?1, ?2)
                 ON CONFLICT (txn_id) DO UPDATE SET field54 = excluded.field54",
            )?
            .execute_any(params![id, field54])?;
        }
        Record::Refunded { id } => {
            // The row lock first (see `claim_original`): the sum below then sees every refund
            // outcome committed before it, whichever node wrote it.
            let changed = conn
                .prepare_cached(
                    "UPDATE transactions SET refunded_fen = refunded_fen WHERE id = ?1",
                )?
                .execute(params![id])?;
            expect_one(changed, "transaction")?;
            let refunds = conn
                .prepare_cached(
                    "SELECT amount_fen FROM transactions
                     WHERE original_id = ?1 AND kind = 'refund' AND state = 'approved'",
                )?
                .query_map(params![id], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            let refunded_fen = refunds.iter().fold(0_i64, |sum, a| sum.saturating_add(*a));
            conn.prepare_cached("UPDATE transactions SET refunded_fen = ?2 WHERE id = ?1")?
                .execute_any(params![id, refunded_fen])?;
        }
        Record::Event(e) => {
            conn.prepare_cached(
                "INSERT INTO events (txn_id, at_ms, kind, detail, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute_any(params![
                e.txn_id,
                e.at_ms,
                e.kind,
                e.detail,
                crate::next_write_seq()
            ])?;
        }
        Record::SafEnqueue {
            txn_id,
            issuer,
            reason,
            next_attempt_ms,
        } => {
            // Enqueueing twice (a retried reversal, recovery after a crash) keeps the first.
            conn.prepare_cached(
                "INSERT INTO reversal_queue (txn_id, issuer, reason, attempts, next_attempt_ms,
                 state) VALUES (?1, ?2, ?3, 0, ?4, ?5) ON CONFLICT (txn_id) DO NOTHING",
            )?
            .execute_any(params![
                txn_id,
                issuer,
                reason,
                next_attempt_ms,
                SafState::Pending
            ])?;
        }
        Record::SafRetry {
            txn_id,
            next_attempt_ms,
            last_error,
        } => {
            conn.prepare_cached(
                "UPDATE reversal_queue SET attempts = attempts + 1, next_attempt_ms = ?2,
                 last_error = ?3 WHERE txn_id = ?1 AND state = ?4",
            )?
            .execute_any(params![
                txn_id,
                next_attempt_ms,
                last_error,
                SafState::Pending
            ])?;
        }
        Record::SafDone {
            txn_id,
            state,
            at_ms,
            answer,
        } => {
            // An acknowledgement is final: the issuer took the reversal. A later answer (a
            // second node's resend after the first's lease ran out, refused as a duplicate)
            // does not undo it; a refusal may still be followed by an acknowledgement.
            let changed = conn
                .prepare_cached(
                    "UPDATE reversal_queue SET attempts = attempts + 1, state = ?2,
                     done_at_ms = ?3, last_error = COALESCE(?4, last_error)
                     WHERE txn_id = ?1 AND state <> ?5",
                )?
                .execute(params![txn_id, state, at_ms, answer, SafState::Acked])?;
            if changed == 0 {
                // Acknowledged already, or no such reversal at all: only the latter is wrong.
                let queued: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM reversal_queue WHERE txn_id = ?1)",
                    )?
                    .query_row(params![txn_id], |r| r.get(0))?;
                expect_one(usize::from(queued), "reversal")?;
            }
        }
        Record::Resolve(r) => sqlite_resolve::write(conn, r)?,
        Record::Risk(r) => sqlite_risk::write(conn, r)?,
        Record::Web(r) => sqlite_web::write(conn, r)?,
        Record::Settlement(r) => sqlite_settlement::write(conn, r)?,
    }
    Ok(())
}

fn insert_txn(conn: &Connection, t: &TxnRow) -> Result<(), StoreError> {
    let linked = matches!(
        t.kind,
        TxnKind::PurchaseVoid
            | TxnKind::CompletionVoid
            | TxnKind::PreAuthVoid
            | TxnKind::Completion
            | TxnKind::Refund
    );
    if let (true, TxnState::InFlight, Some(original)) = (linked, t.state, t.original_id) {
        claim_original(conn, t.kind, original, t.amount_fen)?;
    }
    let pan = t.pan.as_ref();
    conn.prepare_cached(
        "INSERT INTO transactions (id, tid, mid, batch_no, stan, kind, mti, processing_code,
         condition_code, amount_fen, currency, pan_sealed, pan_fingerprint, pan_masked,
         pan_last4, pan_bin, issuer, rrn, host_trace, auth_code, response_code, state,
         request_hash, original_id, refunded_fen, field60, host_date, clearing_date,
         settlement_date, received_at_ms, sent_at_ms, issuer_answered_at_ms, answered_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)",
    )?
    .execute_any(params![
        t.id,
        t.tid,
        t.mid,
        t.batch_no,
        t.stan,
        t.kind,
        t.mti,
        t.processing_code,
        t.condition_code,
        t.amount_fen,
        t.currency,
        pan.map(|p| &p.sealed),
        pan.map(|p| &p.fingerprint),
        pan.map(|p| &p.masked),
        pan.map(|p| &p.last4),
        pan.map(|p| &p.bin),
        t.issuer,
        t.rrn,
        t.host_trace,
        t.auth_code,
        t.response_code,
        t.state,
        t.request_hash,
        t.original_id,
        t.refunded_fen,
        t.field60,
        t.host_date,
        t.clearing_date,
        t.settlement_date,
        t.received_at_ms,
        t.sent_at_ms,
        t.issuer_answered_at_ms,
        t.answered_at_ms,
    ])?;
    Ok(())
}

/// See [`Record::ClaimKey`]. The open batch starts where `Core::batch_closed_at` says: the
/// number's last settlement, or, after an unreadable one (result 3), where that one found
/// the batch starting.
fn claim_key(
    conn: &Connection,
    tid: &str,
    batch_no: u32,
    stan: u32,
    (reversal, alone): (bool, bool),
    since: &str,
) -> Result<(), StoreError> {
    // The terminal ID's row in `key_locks`, made or updated: other claims of the same ID wait
    // for its lock until this commit (on PostgreSQL; SQLite has one writer). Any ID has one,
    // a terminal not provisioned (the back office's virtual one) too.
    conn.prepare_cached(
        "INSERT INTO key_locks (tid) VALUES (?1) ON CONFLICT (tid) DO UPDATE SET tid = excluded.tid",
    )?
    .execute_any(params![tid])?;
    // A reversal's key is its own: the same TID, batch and STAN as its original's. Both kinds'
    // rows under the trace in one read (a few at most), oldest first.
    let mut statement = conn.prepare_cached(
        "SELECT id, CASE WHEN kind = 'reversal' THEN 1 ELSE 0 END FROM transactions
         WHERE tid = ?1 AND batch_no = ?2 AND stan = ?3 AND clearing_date >= ?4
         AND received_at_ms > COALESCE(
             (SELECT CASE WHEN result = 3 THEN opened_after_ms ELSE settled_at_ms END
              FROM batch_settlements WHERE tid = ?1 AND batch_no = ?2),
             -9223372036854775807)
         ORDER BY id",
    )?;
    let under: Vec<(i64, bool)> = statement
        .query_map(params![tid, batch_no, stan, since], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? == 1))
        })?
        .collect::<Result<_, _>>()?;
    if let Some((id, _)) = under
        .iter()
        .find(|(_, is_reversal)| *is_reversal == reversal)
    {
        return Err(StoreError::KeyTaken { id: *id });
    }
    if alone && let Some((id, _)) = under.first() {
        return Err(StoreError::KeyCrossed { id: *id });
    }
    Ok(())
}

/// A void, completion or refund on its way to the issuer takes its original in the journal.
/// Each node checks what it holds in memory first; with several nodes on one journal only the
/// journal knows what the others have in flight. A void or completion needs the original
/// approved with nothing else on it; a refund needs no void or completion on it, and the
/// refunds approved or in flight, this one included, within its amount. What a timed-out,
/// declined or reversed link took is free again, with nothing to release.
fn claim_original(
    conn: &Connection,
    kind: TxnKind,
    original: i64,
    amount_fen: i64,
) -> Result<(), StoreError> {
    // The original's row lock first (PostgreSQL waits here for another node's claim to
    // commit; SQLite has one writer): the read below then sees every claim made before.
    let changed = conn
        .prepare_cached(
            "UPDATE transactions SET state = state WHERE id = ?1 AND state = 'approved'",
        )?
        .execute(params![original])?;
    if changed != 1 {
        return Err(StoreError::LinkRefused(LinkRefusal::NotApproved));
    }
    // The original itself approved in the journal but with its own reversal queued (an
    // outcome taken for failed that had committed, a PostgreSQL COMMIT whose answer was lost):
    // the issuer may yet take it back, and a refund or void now would give the money back
    // twice. Refused until the reversal is answered.
    let reversing: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM reversal_queue WHERE txn_id = ?1 AND state = 'pending')",
        )?
        .query_row(params![original], |r| r.get(0))?;
    if reversing {
        return Err(StoreError::LinkRefused(LinkRefusal::ReversalPending));
    }
    let original_fen: i64 = conn
        .prepare_cached("SELECT amount_fen FROM transactions WHERE id = ?1")?
        .query_row(params![original], |r| r.get(0))?;
    // What stands against the original: the linked requests in flight or approved, and
    // those whose reversal is still queued (timed out, unreadable, reversed by the terminal):
    // the issuer may have acted on one until it acknowledges the reversal, and a second
    // refund meanwhile would credit the card twice should the reversal never be taken. A
    // reversal the issuer refused other than with 25 (it never had the request) leaves the
    // link standing for good, for an operator to take up (the console lists it): judged as
    // one in flight or approved (12, 61), not as one whose reversal may yet be taken (09,
    // "try again later", for ever). A pre-authorisation's completion voided by a void whose
    // reversal is queued waits too: the void re-opened the pre-authorisation, and its
    // reversal, once taken, completes it again.
    let links = conn
        .prepare_cached(
            "SELECT t.kind, t.amount_fen,
             t.state IN ('in_flight', 'approved')
             OR EXISTS (SELECT 1 FROM reversal_queue q
                        WHERE q.txn_id = t.id AND q.state = 'refused'
                        AND COALESCE(q.last_error, '') <> '25')
             FROM transactions t
             WHERE t.original_id = ?1
             AND t.kind IN ('purchase_void', 'completion_void', 'pre_auth_void', 'completion',
                            'refund')
             AND (t.state IN ('in_flight', 'approved')
                  OR EXISTS (SELECT 1 FROM reversal_queue q
                             WHERE q.txn_id = t.id
                             AND (q.state = 'pending'
                                  OR q.state = 'refused' AND COALESCE(q.last_error, '') <> '25'))
                  OR t.kind = 'completion'
                     AND EXISTS (SELECT 1 FROM transactions v
                                 JOIN reversal_queue q ON q.txn_id = v.id
                                 WHERE v.original_id = t.id AND v.kind = 'completion_void'
                                 AND q.state = 'pending'))",
        )?
        .query_map(params![original], |r| {
            Ok((
                r.get::<_, TxnKind>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?
        .collect::<Result<Vec<(TxnKind, i64, bool)>, _>>()?;
    // Judged twice: on what stands (in flight or approved), then with what awaits its
    // reversal too. A request refused only for the latter may be tried again once the
    // reversal is taken.
    let judge = |with_pending: bool| -> Result<(), LinkRefusal> {
        let standing = links.iter().filter(|(_, _, live)| with_pending || *live);
        let mut refunds_fen = 0_i64;
        let mut others = false;
        for (k, a, _) in standing {
            if *k == TxnKind::Refund {
                refunds_fen = refunds_fen.saturating_add(*a);
            } else {
                others = true;
            }
        }
        if others || kind != TxnKind::Refund && refunds_fen > 0 {
            return Err(LinkRefusal::Taken);
        }
        if kind == TxnKind::Refund && refunds_fen.saturating_add(amount_fen) > original_fen {
            return Err(LinkRefusal::ExceedsAmount);
        }
        Ok(())
    };
    judge(false).map_err(StoreError::LinkRefused)?;
    judge(true).map_err(|_| StoreError::LinkRefused(LinkRefusal::ReversalPending))?;
    Ok(())
}

fn write_outcome(conn: &Connection, o: &Outcome) -> Result<(), StoreError> {
    // A reversal the terminal sent while the issuer was still deciding has already marked
    // the row reversed and queued the reversal: the issuer's late answer is recorded, but
    // the row stays reversed (found by the deterministic simulation: an approval written
    // over the reversal left the journal approved and the issuer reversed).
    // A row recovery marked timed out (a start, or the sweep, took the request for one a dead
    // process left in flight, and queued its reversal) takes no outcome: the write fails, and
    // the process still waiting on it answers 96 instead of approving what is being reversed.
    // Nor does a row already settled otherwise: recovery reads the rows in flight before it
    // writes, and one approved in between must not be marked timed out and reversed.
    let changed = conn
        .prepare_cached(
            "UPDATE transactions SET
             state = CASE WHEN state = 'reversed' THEN state ELSE ?2 END,
             response_code = ?3, auth_code = ?4,
             settlement_date = ?5, issuer_answered_at_ms = ?6, answered_at_ms = ?7
             WHERE id = ?1 AND state IN ('in_flight', 'reversed')",
        )?
        .execute(params![
            o.id,
            o.state,
            o.response_code,
            o.auth_code,
            o.settlement_date,
            o.issuer_answered_at_ms,
            o.answered_at_ms,
        ])?;
    expect_one(changed, "transaction in flight")
}

fn reserve_counter(conn: &Connection, counter: &str, count: u64) -> Result<u64, StoreError> {
    let count = i64::try_from(count).map_err(|_| StoreError::Constraint {
        message: format!("counter block of {count} is too large"),
    })?;
    let first: i64 = conn
        .prepare_cached(
            "INSERT INTO counters (name, next_value) VALUES (?1, CAST(?2 AS BIGINT) + 1)
             ON CONFLICT (name) DO UPDATE SET next_value = counters.next_value + ?2
             RETURNING next_value - ?2",
        )?
        .query_row(params![counter, count], |r| r.get(0))?;
    u64::try_from(first).map_err(|_| StoreError::Corrupt {
        what: "counter",
        value: first.to_string(),
    })
}

fn claim(
    conn: &Connection,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<SafItem>, StoreError> {
    let sql = format!(
        "SELECT {SAF_COLUMNS} FROM reversal_queue WHERE state = ?1 AND next_attempt_ms <= ?2
         ORDER BY next_attempt_ms, txn_id LIMIT ?3"
    );
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(params![SafState::Pending, now_ms, limit], saf_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let lease_until = now_ms.saturating_add(lease_ms);
    let mut update =
        conn.prepare_cached("UPDATE reversal_queue SET next_attempt_ms = ?2 WHERE txn_id = ?1")?;
    for item in &mut items {
        update.execute(params![item.txn_id, lease_until])?;
        item.next_attempt_ms = lease_until;
    }
    // In transaction order, as PostgreSQL's claim gives them (its update returns them in no
    // order, their due times replaced by the lease).
    items.sort_by_key(|item| item.txn_id);
    Ok(items)
}

const TERMINAL_COLUMNS: &str = "tid, mid, tmk_wrapped, key_scheme, mac_algorithm, status, \
     batch_no, last_sign_in_ms, pik_wrapped, mak_wrapped, tdk_wrapped";

fn merchant_from_row(r: &Row<'_>) -> rusqlite::Result<MerchantRow> {
    Ok(MerchantRow {
        mid: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        mcc: r.get(3)?,
    })
}

fn terminal_health_from_row(row: &Row<'_>) -> rusqlite::Result<TerminalHealthRow> {
    Ok(TerminalHealthRow {
        tid: row.get(0)?,
        application_type: row.get(1)?,
        software_version: row.get(2)?,
        sub_version: row.get(3)?,
        clock_drift_s: row.get(4)?,
        seen_at_ms: row.get(5)?,
        fallbacks: row.get(6)?,
    })
}

fn terminal_from_row(r: &Row<'_>) -> rusqlite::Result<TerminalRow> {
    let pik: Option<Vec<u8>> = r.get(8)?;
    let mak: Option<Vec<u8>> = r.get(9)?;
    let working_keys = match (pik, mak) {
        (Some(pik), Some(mak)) => Some(WrappedKeys {
            pik,
            mak,
            tdk: r.get(10)?,
        }),
        _ => None,
    };
    Ok(TerminalRow {
        tid: r.get(0)?,
        mid: r.get(1)?,
        tmk_wrapped: r.get(2)?,
        key_scheme: r.get(3)?,
        mac_algorithm: r.get(4)?,
        status: r.get(5)?,
        batch_no: r.get(6)?,
        last_sign_in_ms: r.get(7)?,
        working_keys,
    })
}

/// Rows `each_txn_since` reads at a time.
const EACH_TXN_PAGE: usize = 1_024;

const TXN_COLUMNS: &str = "id, tid, mid, batch_no, stan, kind, mti, processing_code, \
     condition_code, amount_fen, currency, pan_sealed, pan_fingerprint, pan_masked, pan_last4, \
     pan_bin, issuer, rrn, host_trace, auth_code, response_code, state, request_hash, \
     original_id, refunded_fen, field60, host_date, clearing_date, settlement_date, \
     received_at_ms, sent_at_ms, issuer_answered_at_ms, answered_at_ms";

fn txn_from_row(r: &Row<'_>) -> rusqlite::Result<TxnRow> {
    let sealed: Option<Vec<u8>> = r.get(11)?;
    let pan = match sealed {
        Some(sealed) => Some(PanAtRest {
            sealed,
            fingerprint: r.get::<_, Option<Vec<u8>>>(12)?.unwrap_or_default(),
            masked: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
            last4: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
            bin: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(TxnRow {
        id: r.get(0)?,
        tid: r.get(1)?,
        mid: r.get(2)?,
        batch_no: r.get(3)?,
        stan: r.get(4)?,
        kind: r.get(5)?,
        mti: r.get(6)?,
        processing_code: r.get(7)?,
        condition_code: r.get(8)?,
        amount_fen: r.get(9)?,
        currency: r.get(10)?,
        pan,
        issuer: r.get(16)?,
        rrn: r.get(17)?,
        host_trace: r.get(18)?,
        auth_code: r.get(19)?,
        response_code: r.get(20)?,
        state: r.get(21)?,
        request_hash: r.get(22)?,
        original_id: r.get(23)?,
        refunded_fen: r.get(24)?,
        field60: r.get(25)?,
        host_date: r.get(26)?,
        clearing_date: r.get(27)?,
        settlement_date: r.get(28)?,
        received_at_ms: r.get(29)?,
        sent_at_ms: r.get(30)?,
        issuer_answered_at_ms: r.get(31)?,
        answered_at_ms: r.get(32)?,
    })
}

const SAF_COLUMNS: &str =
    "txn_id, issuer, reason, attempts, next_attempt_ms, state, last_error, done_at_ms";

fn saf_from_row(r: &Row<'_>) -> rusqlite::Result<SafItem> {
    Ok(SafItem {
        txn_id: r.get(0)?,
        issuer: r.get(1)?,
        reason: r.get(2)?,
        attempts: r.get(3)?,
        next_attempt_ms: r.get(4)?,
        state: r.get(5)?,
        last_error: r.get(6)?,
        done_at_ms: r.get(7)?,
    })
}

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

sql_text_enum!(TxnKind, TxnState, Status, SafState);
