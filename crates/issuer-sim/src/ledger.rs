//! The issuer's persisted ledger: transactions by RRN, every posting, account state, in SQLite.
//! One writer thread owns the connection and commits whatever has queued up in one transaction
//! (write-behind, group commit, no fsync per request); `flush` waits for everything sent so far.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use crate::book::{AccountSnapshot, LedgerOp, Restored};
use crate::model::{CardStatus, Posting, ResponseCode, Rrn, TxnKind, TxnRecord, TxnState};
use crate::time::Date;

/// Requests queued to the writer before senders wait; bounds memory if the disk falls behind.
pub const LEDGER_QUEUE_MAX: usize = 65_536;
/// Queued requests committed in one SQLite transaction at most.
pub const LEDGER_BATCH_MAX: usize = 4_096;
/// How long the writer gathers writes before committing them (unless a read, a flush or a
/// full batch comes first). Answers never wait for the ledger, so this costs no latency; it
/// turns a commit per few requests into one per few hundred under load.
pub const LEDGER_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a read of a file ledger waits on the writer's lock (a checkpoint's, at most).
const READER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerLocation {
    /// Gone when the issuer stops: unit tests.
    Memory,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Sqlite(String),
    #[error("ledger row {table}/{key} is unreadable: {what}")]
    Corrupt {
        table: &'static str,
        key: String,
        what: &'static str,
    },
    #[error("the ledger writer has stopped")]
    Stopped,
    #[error("an earlier ledger write failed: {0}")]
    WriteFailed(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(err.to_string())
    }
}

type Answer<T> = SyncSender<Result<T, LedgerError>>;

enum Command {
    Write(Vec<LedgerOp>),
    Flush(Answer<()>),
    Transactions(Option<Date>, bool, Answer<Vec<TxnRecord>>),
    Txn(Rrn, Answer<Option<TxnRecord>>),
    Restore(Date, Answer<Restored>),
    Postings(Date, Answer<Vec<Posting>>),
    Stop,
}

/// Handle to the ledger writer. Cloning shares the same writer.
#[derive(Clone)]
pub struct Ledger {
    queue: SyncSender<Command>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Whether the writer gathers writes for `LEDGER_LINGER` (off when answers wait for it).
    linger: Arc<AtomicBool>,
    /// A read-only connection to a file ledger for `txn`, which an answer may wait on: it does
    /// not queue behind the writer's gathering. `None` for an in-memory ledger.
    reader: Option<Arc<Mutex<Connection>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS txns (
    rrn TEXT PRIMARY KEY, trace INTEGER NOT NULL, kind TEXT NOT NULL, account TEXT,
    pan_masked TEXT NOT NULL, amount INTEGER NOT NULL, code TEXT NOT NULL, auth_code TEXT,
    day TEXT NOT NULL, request_date TEXT, original TEXT, state TEXT NOT NULL,
    refunded INTEGER NOT NULL, captured INTEGER NOT NULL, updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS txns_day ON txns(day);
CREATE TABLE IF NOT EXISTS postings (
    seq INTEGER PRIMARY KEY, rrn TEXT NOT NULL, account TEXT NOT NULL, kind TEXT NOT NULL,
    reversal INTEGER NOT NULL, amount INTEGER NOT NULL, hold_delta INTEGER NOT NULL,
    balance_after INTEGER NOT NULL, holds_after INTEGER NOT NULL, day TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS postings_day ON postings(day);
CREATE TABLE IF NOT EXISTS accounts (
    reference TEXT PRIMARY KEY, status TEXT NOT NULL, balance INTEGER NOT NULL,
    holds INTEGER NOT NULL, pin_tries INTEGER NOT NULL, day TEXT, day_amount INTEGER NOT NULL,
    day_count INTEGER NOT NULL
);
";

const TXN_COLUMNS: &str = "rrn, trace, kind, account, pan_masked, amount, code, auth_code, day, \
     request_date, original, state, refunded, captured, updated_ms";
const POSTING_COLUMNS: &str =
    "seq, rrn, account, kind, reversal, amount, hold_delta, balance_after, holds_after, day, at_ms";

impl Ledger {
    /// Opens (creating if need be) the ledger.
    pub fn open(location: &LedgerLocation) -> Result<Self, LedgerError> {
        let conn = match location {
            LedgerLocation::Memory => Connection::open_in_memory()?,
            LedgerLocation::File(path) => Connection::open(path)?,
        };
        // WAL with synchronous=NORMAL: a commit is a sequential append, synced at checkpoints.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let reader = match location {
            LedgerLocation::Memory => None,
            LedgerLocation::File(path) => {
                let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                reader.busy_timeout(READER_BUSY_TIMEOUT)?;
                Some(Arc::new(Mutex::new(reader)))
            }
        };
        let (queue, commands) = sync_channel(LEDGER_QUEUE_MAX);
        let failure = Arc::new(Mutex::new(None));
        let writer_failure = Arc::clone(&failure);
        let linger = Arc::new(AtomicBool::new(true));
        let writer_linger = Arc::clone(&linger);
        let thread = std::thread::Builder::new()
            .name("issuer-ledger".into())
            .spawn(move || writer(conn, &commands, &writer_failure, &writer_linger))
            .map_err(|e| LedgerError::Sqlite(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            queue,
            failure,
            thread: Arc::new(Mutex::new(Some(thread))),
            linger,
            reader,
        })
    }

    /// What the book needs to resume: every account's state and the transactions of business
    /// days from `since` on, in the order of their days.
    pub fn restore(&self, since: Date) -> Result<Restored, LedgerError> {
        self.ask(|answer| Command::Restore(since, answer))
    }

    /// Whether transactions can be read back from here by `txn` at no wait: a file, read on
    /// a connection of its own. An in-memory ledger is only for runs short enough that the
    /// book holds everything.
    pub fn recalls(&self) -> bool {
        self.reader.is_some()
    }

    /// One transaction by RRN, as committed. For what the book has let go of, which the issuer
    /// flushes the ledger before it lets go of (`Issuer::catch_up`); what the book holds may
    /// still be on its way here.
    pub fn txn(&self, rrn: &Rrn) -> Result<Option<TxnRecord>, LedgerError> {
        match &self.reader {
            Some(reader) => {
                let conn = reader
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                query_txn(&conn, rrn)
            }
            None => self.ask(|answer| Command::Txn(rrn.clone(), answer)),
        }
    }

    /// Whether the writer gathers writes before committing (the default). Off when every
    /// answer waits for a flush: a flush would otherwise wait out the gathering.
    pub fn set_linger(&self, on: bool) {
        self.linger.store(on, Ordering::Relaxed);
    }

    /// Queues changes; returns at once. Blocks only when `LEDGER_QUEUE_MAX` requests are queued.
    pub fn write(&self, ops: Vec<LedgerOp>) -> Result<(), LedgerError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.queue
            .send(Command::Write(ops))
            .map_err(|_| LedgerError::Stopped)
    }

    fn ask<T>(&self, command: impl FnOnce(Answer<T>) -> Command) -> Result<T, LedgerError> {
        let (answer, receive) = sync_channel(1);
        self.queue
            .send(command(answer))
            .map_err(|_| LedgerError::Stopped)?;
        receive.recv().map_err(|_| LedgerError::Stopped)?
    }

    /// Waits until everything written before is committed.
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.ask(Command::Flush)?;
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(err) => Err(LedgerError::WriteFailed(err)),
            None => Ok(()),
        }
    }

    /// Transactions of a business day (all days with `None`), by RRN, after everything written
    /// before is committed. `approved_only` keeps those the issuer approved (whatever became of
    /// them since).
    pub fn transactions(
        &self,
        day: Option<Date>,
        approved_only: bool,
    ) -> Result<Vec<TxnRecord>, LedgerError> {
        self.ask(|answer| Command::Transactions(day, approved_only, answer))
    }

    /// Every posting of a business day, in order.
    pub fn entries_for_day(&self, day: Date) -> Result<Vec<Posting>, LedgerError> {
        self.ask(|answer| Command::Postings(day, answer))
    }

    /// Commits what is queued and stops the writer. Later writes fail with `Stopped`.
    pub fn close(&self) -> Result<(), LedgerError> {
        let result = self.flush();
        let _ = self.queue.send(Command::Stop);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
        result
    }
}

fn writer(
    mut conn: Connection,
    commands: &Receiver<Command>,
    failure: &Mutex<Option<String>>,
    linger: &AtomicBool,
) {
    let mut pending: Vec<Command> = Vec::new();
    while let Ok(first) = commands.recv() {
        if matches!(first, Command::Write(_)) && linger.load(Ordering::Relaxed) {
            // Asleep rather than waiting on the queue: a waiting receiver is woken by every
            // send, a sleeping one by none. A flush or read queued meanwhile waits out the rest.
            std::thread::sleep(LEDGER_LINGER);
        }
        pending.push(first);
        while pending.len() < LEDGER_BATCH_MAX {
            match commands.try_recv() {
                Ok(command) => pending.push(command),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        let mut stop = false;
        for command in pending.drain(..) {
            match command {
                Command::Write(ops) => writes.push(ops),
                other => {
                    // Anything that reads must see the writes queued before it.
                    commit(&mut conn, &mut writes, failure);
                    match other {
                        Command::Flush(answer) => {
                            let _ = answer.send(Ok(()));
                        }
                        Command::Transactions(day, approved, answer) => {
                            let _ = answer.send(query_txns(&conn, day, approved));
                        }
                        Command::Txn(rrn, answer) => {
                            let _ = answer.send(query_txn(&conn, &rrn));
                        }
                        Command::Restore(since, answer) => {
                            let _ = answer.send(restore(&conn, since));
                        }
                        Command::Postings(day, answer) => {
                            let _ = answer.send(query_postings(&conn, day));
                        }
                        Command::Stop => stop = true,
                        Command::Write(_) => {}
                    }
                }
            }
        }
        commit(&mut conn, &mut writes, failure);
        if stop {
            break;
        }
    }
}

fn commit(conn: &mut Connection, writes: &mut Vec<Vec<LedgerOp>>, failure: &Mutex<Option<String>>) {
    if writes.is_empty() {
        return;
    }
    if let Err(err) = apply_batch(conn, writes)
        && let Ok(mut slot) = failure.lock()
    {
        slot.get_or_insert(err.to_string());
    }
    writes.clear();
}

fn apply_batch(conn: &mut Connection, writes: &[Vec<LedgerOp>]) -> Result<(), LedgerError> {
    // Within a batch only the last state of a transaction or an account needs writing.
    let mut txns: HashMap<&Rrn, &TxnRecord> = HashMap::new();
    let mut accounts: HashMap<&str, &AccountSnapshot> = HashMap::new();
    let tx = conn.transaction()?;
    {
        let mut insert_posting = tx.prepare_cached(&format!(
            "INSERT INTO postings ({POSTING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
             ?10, ?11)"
        ))?;
        for op in writes.iter().flatten() {
            match op {
                LedgerOp::Txn(record) => {
                    txns.insert(&record.rrn, record);
                }
                LedgerOp::Account(snapshot) => {
                    accounts.insert(&snapshot.reference, snapshot);
                }
                LedgerOp::Posting(p) => {
                    insert_posting.execute(params![
                        to_sql_u64(p.seq),
                        p.rrn.as_str(),
                        &*p.account,
                        p.kind.as_str(),
                        p.reversal,
                        p.amount,
                        p.hold_delta,
                        p.balance_after,
                        p.holds_after,
                        p.day.to_string(),
                        p.at_ms,
                    ])?;
                }
            }
        }
        let mut upsert_txn = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO txns ({TXN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
             ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?;
        for t in txns.values() {
            upsert_txn.execute(params![
                t.rrn.as_str(),
                t.trace,
                t.kind.as_str(),
                t.account.as_deref(),
                t.pan_masked,
                to_sql_u64(t.amount),
                t.code.as_str(),
                t.auth_code,
                t.day.to_string(),
                t.request_date,
                t.original.as_ref().map(Rrn::as_str),
                t.state.as_str(),
                to_sql_u64(t.refunded),
                to_sql_u64(t.captured),
                t.updated_ms,
            ])?;
        }
        let mut upsert_account = tx.prepare_cached(
            "INSERT OR REPLACE INTO accounts (reference, status, balance, holds, pin_tries, day, \
             day_amount, day_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for a in accounts.values() {
            upsert_account.execute(params![
                &*a.reference,
                a.status.as_str(),
                a.balance,
                a.holds,
                a.pin_tries,
                a.day.map(|d| d.to_string()),
                to_sql_u64(a.day_amount),
                a.day_count,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Amounts are n12, so they always fit; saturate rather than wrap if one ever does not.
fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn corrupt(table: &'static str, key: &str, what: &'static str) -> LedgerError {
    LedgerError::Corrupt {
        table,
        key: key.to_owned(),
        what,
    }
}

fn read_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<u64>> {
    let value: i64 = row.get(index)?;
    Ok(u64::try_from(value).ok())
}

fn txn_from_row(row: &Row<'_>) -> Result<TxnRecord, LedgerError> {
    let rrn_text: String = row.get(0)?;
    let bad = |what| corrupt("txns", &rrn_text, what);
    let rrn = Rrn::parse(&rrn_text).map_err(|_| bad("rrn"))?;
    let kind_text: String = row.get(2)?;
    let code_text: String = row.get(6)?;
    let day_text: String = row.get(8)?;
    let original: Option<String> = row.get(10)?;
    let state_text: String = row.get(11)?;
    let account: Option<String> = row.get(3)?;
    Ok(TxnRecord {
        rrn,
        trace: row.get(1)?,
        kind: TxnKind::parse(&kind_text).ok_or_else(|| bad("kind"))?,
        account: account.map(Arc::from),
        pan_masked: row.get(4)?,
        amount: read_u64(row, 5)?.ok_or_else(|| bad("amount"))?,
        code: ResponseCode::parse(&code_text).ok_or_else(|| bad("code"))?,
        auth_code: row.get(7)?,
        day: Date::parse_iso(&day_text).map_err(|_| bad("day"))?,
        request_date: row.get(9)?,
        original: original
            .map(|o| Rrn::parse(&o))
            .transpose()
            .map_err(|_| bad("original"))?,
        state: TxnState::parse(&state_text).ok_or_else(|| bad("state"))?,
        refunded: read_u64(row, 12)?.ok_or_else(|| bad("refunded"))?,
        captured: read_u64(row, 13)?.ok_or_else(|| bad("captured"))?,
        updated_ms: row.get(14)?,
    })
}

fn posting_from_row(row: &Row<'_>) -> Result<Posting, LedgerError> {
    let seq = read_u64(row, 0)?.unwrap_or(0);
    let key = seq.to_string();
    let bad = |what| corrupt("postings", &key, what);
    let rrn_text: String = row.get(1)?;
    let account: String = row.get(2)?;
    let kind_text: String = row.get(3)?;
    let day_text: String = row.get(9)?;
    Ok(Posting {
        seq,
        rrn: Rrn::parse(&rrn_text).map_err(|_| bad("rrn"))?,
        account: Arc::from(account),
        kind: TxnKind::parse(&kind_text).ok_or_else(|| bad("kind"))?,
        reversal: row.get(4)?,
        amount: row.get(5)?,
        hold_delta: row.get(6)?,
        balance_after: row.get(7)?,
        holds_after: row.get(8)?,
        day: Date::parse_iso(&day_text).map_err(|_| bad("day"))?,
        at_ms: row.get(10)?,
    })
}

fn account_from_row(row: &Row<'_>) -> Result<AccountSnapshot, LedgerError> {
    let reference: String = row.get(0)?;
    let bad = |what| corrupt("accounts", &reference, what);
    let status_text: String = row.get(1)?;
    let day: Option<String> = row.get(5)?;
    Ok(AccountSnapshot {
        reference: Arc::from(reference.as_str()),
        status: CardStatus::parse(&status_text).ok_or_else(|| bad("status"))?,
        balance: row.get(2)?,
        holds: row.get(3)?,
        pin_tries: row.get(4)?,
        day: day
            .map(|d| Date::parse_iso(&d))
            .transpose()
            .map_err(|_| bad("day"))?,
        day_amount: read_u64(row, 6)?.ok_or_else(|| bad("day_amount"))?,
        day_count: row.get(7)?,
    })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> Result<T, LedgerError>,
) -> Result<Vec<T>, LedgerError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn restore(conn: &Connection, since: Date) -> Result<Restored, LedgerError> {
    let accounts = collect(
        conn,
        "SELECT reference, status, balance, holds, pin_tries, day, day_amount, day_count \
         FROM accounts",
        [],
        account_from_row,
    )?;
    let txns = collect(
        conn,
        &format!("SELECT {TXN_COLUMNS} FROM txns WHERE day >= ?1 ORDER BY day"),
        params![since.to_string()],
        txn_from_row,
    )?;
    let last: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM postings", [], |r| r.get(0))
        .optional()?
        .flatten();
    // The held days' own codes give the sequence; with none of them, every day's (a scan,
    // on the start of an issuer idle for longer than it holds).
    let last_auth: Option<i64> = if txns.is_empty() {
        conn.query_row(
            "SELECT MAX(CAST(auth_code AS INTEGER)) FROM txns WHERE auth_code IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten()
    } else {
        None
    };
    Ok(Restored {
        accounts,
        txns,
        last_posting_seq: last.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        last_auth_seq: last_auth.and_then(|s| u32::try_from(s).ok()).unwrap_or(0),
    })
}

fn query_txns(
    conn: &Connection,
    day: Option<Date>,
    approved_only: bool,
) -> Result<Vec<TxnRecord>, LedgerError> {
    let approved = if approved_only {
        " AND code = '00'"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {TXN_COLUMNS} FROM txns WHERE (?1 IS NULL OR day = ?1){approved} ORDER BY rrn"
    );
    collect(
        conn,
        &sql,
        params![day.map(|d| d.to_string())],
        txn_from_row,
    )
}

fn query_txn(conn: &Connection, rrn: &Rrn) -> Result<Option<TxnRecord>, LedgerError> {
    let sql = format!("SELECT {TXN_COLUMNS} FROM txns WHERE rrn = ?1");
    Ok(collect(conn, &sql, params![rrn.as_str()], txn_from_row)?
        .into_iter()
        .next())
}

fn query_postings(conn: &Connection, day: Date) -> Result<Vec<Posting>, LedgerError> {
    let sql = format!("SELECT {POSTING_COLUMNS} FROM postings WHERE day = ?1 ORDER BY seq");
    collect(conn, &sql, params![day.to_string()], posting_from_row)
}
