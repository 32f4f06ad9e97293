//! The PostgreSQL backend: one writer connection doing group commit over a bounded queue, and a
//! pool of read connections, as the SQLite backend; several shoudan nodes may share a database.
//!
//! The statements are the SQLite backend's own, generated at build time (see build.rs) and run
//! through a rusqlite-shaped shim (pg_shim.rs). What differs is here: connecting, migrating
//! under an advisory lock (nodes may start together), and claiming reversals with
//! `FOR UPDATE SKIP LOCKED`, so that two nodes never claim the same one while the claim's lease
//! (its pushed-back `next_attempt_ms`) keeps it from the others until it expires.
//!
//! Threads: the connections' protocol tasks run on the store's own small tokio runtime; callers
//! wait on their replies with a plain thread park (`shim::block_on`), so reads work from inside
//! an async runtime as SQLite reads do. Durability: PostgreSQL's `synchronous_commit` (on by
//! default) makes each group's COMMIT wait for its WAL flush.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::params;
use tokio::sync::mpsc;

use crate::Store;
use crate::error::{LinkRefusal, StoreError};
use crate::group::{Completion, ExecuteAny, Job, Output, Rider, WriteDone, completion, run_riders};
#[allow(unused_imports)]
use crate::model::{
    BatchSpan, EventRow, MerchantRow, Outcome, PanAtRest, Record, SafItem, SafState, Status,
    TerminalHealthRow, TerminalRow, TxnKind, TxnRow, TxnState, WrappedKeys,
};
use crate::pending::{Durable, Pending};
use crate::risk::{AlertState, MerchantProfileRow, MerchantReviewRow, RiskAlertRow};
use crate::schema;
#[allow(unused_imports)]
use shim::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use shim::{Connection, OptionalExtension, Row};

#[path = "pg_shim.rs"]
pub(crate) mod shim;
#[path = "pg_tls.rs"]
mod tls;

#[allow(unused_imports)]
mod pg_resolve {
    include!(concat!(env!("OUT_DIR"), "/pg_resolve.rs"));
}
#[allow(unused_imports)]
mod pg_risk {
    include!(concat!(env!("OUT_DIR"), "/pg_risk.rs"));
}
#[allow(unused_imports)]
mod pg_settlement {
    include!(concat!(env!("OUT_DIR"), "/pg_settlement.rs"));
}
#[allow(unused_imports)]
mod pg_web {
    include!(concat!(env!("OUT_DIR"), "/pg_web.rs"));
}

/// Submissions that may wait for the writer; beyond this `submit` fails with `QueueFull`.
pub const PG_WRITE_QUEUE_MAX: usize = 65_536;
/// Submissions committed in one transaction at most; bounds a commit's latency and memory.
pub const PG_WRITE_BATCH_MAX: usize = 8_192;
/// Read connections open at most; a read finding them all busy waits for one, rather than
/// opening (and then closing) one of its own, which costs the server a process each time.
pub const PG_READ_CONNECTIONS_MAX: usize = 16;
/// How long a read waits for a busy pool before failing (it may be on an async worker).
const PG_READ_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// Threads driving the connections' protocol tasks; they only shuffle bytes.
const PG_RUNTIME_THREADS: usize = 1;
/// Connection bounds, each unless the URL sets its own (tokio-postgres reads them in seconds).
/// A server that stops answering, or a network that stops carrying, must fail a connection
/// rather than hold it: the writer's requests are then answered 96 and it connects again.
/// `connect_timeout` bounds the whole connection, socket and startup (libpq's meaning): a
/// server that takes the socket and never answers is an outage too.
const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Data sent and not acknowledged by the server's host for this long fails the connection
/// (`TCP_USER_TIMEOUT`): a host gone or a partition while a group is being written.
const PG_TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// An idle connection (a pooled reader, the writer between groups) is probed after this long
/// without traffic, every `PG_KEEPALIVE_INTERVAL`, and given up after `PG_KEEPALIVE_RETRIES`
/// unanswered probes: about 25 s for a host gone, against the system's two hours.
const PG_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
const PG_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const PG_KEEPALIVE_RETRIES: u32 = 3;
/// tokio-postgres's keepalive idle time when none is given.
const KEEPALIVE_IDLE_UNSET: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);
/// How long a start waits for its node place to be freed (a crashed node's session the
/// server has not ended yet) before refusing it as another node's.
const NODE_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(45);
const NODE_CLAIM_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// The server's keepalives on the session holding a node's place: a host gone is noticed
/// within about 25 s (10 s idle, then 3 probes 5 s apart).
const NODE_CLAIM_KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";
/// The advisory lock key migrations hold, so nodes starting together migrate once.
const MIGRATION_LOCK_KEY: i64 = 0x0053_484f_5544_414e;
/// What every session sets: a session left in a transaction with no client (its node's host
/// gone before its COMMIT, which TCP keepalives on the server's side notice only after hours)
/// is ended by the server, and the row locks it held released, instead of every other node's
/// writer waiting on them.
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '15s'";
/// What the writer's session sets once migrated: a write waits at most this long for a row
/// lock (another node's group holds one for milliseconds, and a deadlock is found by the
/// server after its `deadlock_timeout`, 1 s by default; a dead session's lock stays until the
/// server ends that session), then its group is run again job by job, where it waits
/// [`CAREFUL_LOCK_TIMEOUT`] a try (`deadlocked`), then fails alone (its caller answers 96) and
/// the rest commit: the writer is held up about 2.75 s, and a quarter of a second more for each
/// other job of the group the same lock holds up, not for as long as the lock is held. A job
/// that a failing job before it kept from meeting the lock on the fast run waits as briefly
/// on the job-by-job run.
/// Commits wait for the server's WAL flush whatever the database or role was set to: a write
/// is acknowledged (a terminal answered 00) only once it is durable.
const WRITER_SETTINGS: &str = "SET lock_timeout = '2s'; SET synchronous_commit = on";
/// The lock wait of a group's job-by-job run, for that transaction only.
const CAREFUL_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '250ms'";

/// How to open a PostgreSQL store. Its `Debug` leaves out a URL that holds a password.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user@host:port/database` (or key=value form). With
    /// `?sslmode=verify-full&sslrootcert=/path/ca.pem`, connections are TLS, the server's
    /// certificate checked against those CA certificates and the host name (`pg_tls.rs`).
    pub url: String,
    /// A schema to create and use instead of `public` (tests give each store its own);
    /// lower-case letters, digits and `_` only.
    pub schema: Option<String>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = if self.holds_password() {
            "<holds a password: not shown>"
        } else {
            self.url.as_str()
        };
        f.debug_struct("PgConfig")
            .field("url", &url)
            .field("schema", &self.schema)
            .finish()
    }
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: None,
        }
    }

    /// Whether the URL carries a password: as the client reads it (in the user part, where it
    /// may hold '/', '?' or '#', or as a `password` parameter, percent-encoded or not), or as
    /// its text may (a `:` before an `@`, or the word `password` anywhere once decoded: an
    /// option the client does not know, a typo), so that a check of who may read the file errs
    /// on the safe side.
    pub fn holds_password(&self) -> bool {
        let read = tls::security_of(&self.url)
            .ok()
            .and_then(|(url, _, _)| url.parse::<tokio_postgres::Config>().ok())
            .is_some_and(|c| c.get_password().is_some());
        let url = percent_decoded(&self.url);
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let by_text = rest
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
            || url.to_ascii_lowercase().contains("password");
        read || by_text
    }

    /// Whether connections would be plain TCP (no `sslmode=verify-full`) to a host other than
    /// this one (a name other than `localhost`, an address that is not loopback); a URL that
    /// does not parse is not (opening it says why).
    pub fn plain_over_network(&self) -> bool {
        let Ok((url, _, tls::Security::Plain)) = tls::security_of(&self.url) else {
            return false;
        };
        let Ok(config) = url.parse::<tokio_postgres::Config>() else {
            return false;
        };
        let loopback = |host: &tokio_postgres::config::Host| match host {
            tokio_postgres::config::Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            tokio_postgres::config::Host::Unix(_) => true,
        };
        let addresses_local = config.get_hostaddrs().iter().all(|ip| ip.is_loopback());
        !(config.get_hosts().iter().all(loopback) && addresses_local)
    }
}

/// `text` with its `%XX` escapes decoded (bytes that do not make UTF-8 replaced).
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The read connections: those idle, and how many are open (idle or in use).
#[derive(Default)]
struct ReadPool {
    idle: Vec<Connection>,
    open: usize,
    /// The last failed attempt to open a read connection, and its error: for
    /// [`PG_READ_CONNECT_PAUSE`] after it, reads that need a new connection fail with that error
    /// at once instead of each trying (a database down, every request of every node reading).
    failed: Option<(std::time::Instant, StoreError)>,
    /// Attempts failed in a row: the pause starts at [`PG_READ_CONNECT_FAILURES`], so a blip
    /// (one background read failing while the link was cut) costs no request a 96 after it.
    failures: u32,
    /// Read connections opened so far: an attempt that began before the latest one opened
    /// and fails after it (a slow connect) does not start a pause.
    opened: u64,
}

/// How long after a failed attempt to open a read connection no other is tried: while the
/// database is down, a node tries it twice a second, not once per request.
pub const PG_READ_CONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
/// Attempts to open a read connection failed in a row before [`PG_READ_CONNECT_PAUSE`] applies.
pub const PG_READ_CONNECT_FAILURES: u32 = 3;

/// A read connection in use; back to the pool when dropped, whatever happened meanwhile (or
/// closed and no longer counted, if the server or the network closed it).
struct Lease<'s> {
    store: &'s PgStore,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = self
            .store
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.conn.take() {
            Some(conn) if !conn.is_closed() && !std::thread::panicking() => pool.idle.push(conn),
            _ => pool.open = pool.open.saturating_sub(1),
        }
        drop(pool);
        self.store.reader_returned.notify_one();
    }
}

/// A PostgreSQL database with a group-commit writer thread.
pub struct PgStore {
    config: PgConfig,
    runtime: Option<tokio::runtime::Runtime>,
    sender: mpsc::Sender<Job>,
    readers: Mutex<ReadPool>,
    /// Signalled when a read connection is returned or closed.
    reader_returned: Condvar,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Opened by [`PgStore::open_read_only`]: every session read-only.
    read_only: bool,
    /// This node's claim ([`PgStore::claim_node`]), for as long as the store is open.
    node_claim: Mutex<Option<NodeClaim>>,
    /// The stamps of the events in writes not yet settled.
    queued_events: Arc<crate::group::QueuedEvents>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.config.schema)
            .finish_non_exhaustive()
    }
}

fn backend(message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        message: message.into(),
    }
}

fn check_schema(schema: &str) -> Result<(), StoreError> {
    let valid = !schema.is_empty()
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(backend(format!("invalid schema name {schema:?}")))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(PG_RUNTIME_THREADS)
        .thread_name("store-pg-io")
        .enable_all()
        .build()
        .map_err(|e| backend(format!("cannot start the postgres runtime: {e}")))
}

/// The client configuration of `url` with the connection bounds it does not set itself, and
/// how the connection is secured (`pg_tls.rs`).
fn client_config(url: &str) -> Result<(tokio_postgres::Config, tls::Security), StoreError> {
    let (url, mode, security) = tls::security_of(url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        // The parser's causes quote a key it does not know, and a password with '&' or a
        // space in it unencoded is read as keys: said only of a URL without a password.
        let why = if PgConfig::new(url.as_str()).holds_password() {
            format!("{e} (the option is not named: the URL holds a password)")
        } else {
            shim::with_causes(&e)
        };
        backend(format!("postgres URL: {why}"))
    })?;
    if let Some(mode) = mode {
        config.ssl_mode(mode);
    }
    if matches!(security, tls::Security::VerifyFull { .. }) {
        tls::check_names(&config)?;
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(PG_TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == KEEPALIVE_IDLE_UNSET {
        config.keepalives_idle(PG_KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(PG_KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(PG_KEEPALIVE_RETRIES);
    }
    Ok((config, security))
}

/// Connects with `tls` within `limit`, and runs the connection's protocol task.
async fn open_client<T>(
    config: tokio_postgres::Config,
    tls: T,
    limit: std::time::Duration,
) -> Result<tokio_postgres::Client, StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let Ok(connected) = tokio::time::timeout(limit, config.connect(tls)).await else {
        return Err(backend(format!(
            "postgres connect: no answer within {} s",
            limit.as_secs()
        )));
    };
    let (client, connection) = connected.map_err(|e| shim::store_error(&e))?;
    // The protocol task ends when the client is dropped or the server goes away.
    tokio::spawn(async move { drop(connection.await) });
    Ok(client)
}

fn connect(runtime: &tokio::runtime::Handle, config: &PgConfig) -> Result<Connection, StoreError> {
    let (client_config, security) = client_config(&config.url)?;
    let limit = client_config
        .get_connect_timeout()
        .copied()
        .unwrap_or(PG_CONNECT_TIMEOUT);
    let verified = match security {
        tls::Security::Plain => None,
        tls::Security::VerifyFull { roots } => Some(tls::connector(&roots)?),
    };
    let connecting = runtime.spawn(async move {
        match verified {
            None => open_client(client_config, tokio_postgres::NoTls, limit).await,
            Some(verified) => open_client(client_config, verified, limit).await,
        }
    });
    let client =
        shim::block_on(connecting).map_err(|e| backend(format!("postgres connect: {e}")))??;
    let conn = Connection::new(client);
    conn.execute_batch(SESSION_SETTINGS)?;
    if let Some(schema) = &config.schema {
        conn.execute_batch(&format!("SET search_path TO {schema}"))?;
    }
    Ok(conn)
}

/// A runtime made for a store being opened, shut down without blocking if the open fails:
/// `open` may be called on an async worker (a node's start), where dropping a runtime
/// panics, and the panic would hide why the open failed.
struct Opening(Option<tokio::runtime::Runtime>);

impl Opening {
    fn handle(&self) -> Result<tokio::runtime::Handle, StoreError> {
        self.0
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| backend("no runtime".to_owned()))
    }

    /// The runtime, for the store that opened.
    fn opened(mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A node's place on the journal: the session holding its advisory lock (`None` once that
/// session has ended, until the place is taken again), and the node id.
struct NodeClaim {
    conn: Option<Connection>,
    node_id: u8,
}

impl PgStore {
    /// Connects, creates the schema if asked, migrates, and starts the writer thread.
    pub fn open(config: &PgConfig) -> Result<Self, StoreError> {
        if let Some(schema) = &config.schema {
            check_schema(schema)?;
        }
        let runtime = Opening(Some(runtime()?));
        let handle = runtime.handle()?;
        let fresh = PgConfig {
            url: config.url.clone(),
            schema: None,
        };
        let writer = connect(&handle, &fresh)?;
        if let Some(schema) = &config.schema {
            // Under the migrations' lock: two nodes creating one schema at once can fail one
            // of them (a unique violation on the catalogue) despite IF NOT EXISTS.
            under_migration_lock(&writer, |conn| {
                Ok(conn.execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?)
            })?;
            writer.execute_batch(&format!("SET search_path TO {schema}"))?;
        }
        migrate(&writer)?;
        writer.execute_batch(WRITER_SETTINGS)?;
        let (sender, receiver) = mpsc::channel(PG_WRITE_QUEUE_MAX);
        let reconnect = config.clone();
        let thread = std::thread::Builder::new()
            .name("store-pg-writer".into())
            .spawn(move || run_writer(writer, receiver, &handle, &reconnect))
            .map_err(|e| backend(format!("cannot start writer thread: {e}")))?;
        Ok(PgStore {
            config: config.clone(),
            runtime: runtime.opened(),
            sender,
            readers: Mutex::new(ReadPool::default()),
            reader_returned: Condvar::new(),
            writer: Mutex::new(Some(thread)),
            read_only: false,
            node_claim: Mutex::new(None),
            queued_events: Arc::default(),
        })
    }

    /// Claims node id `node_id`'s place among the nodes on this journal (its id modulo 10,
    /// which leads its RRNs' recovery and separates its host traces) for as long as the store
    /// is open: a session advisory lock, taken on a connection of its own. Refused when
    /// another node holds it: two nodes with one id would each take the other's requests in
    /// flight for its own at a start, and time them out and reverse them.
    pub fn claim_node(&self, node_id: u8) -> Result<(), StoreError> {
        self.claim_node_within(node_id, NODE_CLAIM_WAIT)
    }

    /// [`PgStore::claim_node`], waiting at most `wait` for the place to be freed.
    pub fn claim_node_within(
        &self,
        node_id: u8,
        wait: std::time::Duration,
    ) -> Result<(), StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| backend("the store is closed".to_owned()))?;
        let conn = connect(runtime.handle(), &self.config)?;
        // The server notices this session's host gone within half a minute (not TCP's two
        // hours), so a node that died with its host frees its place for its replacement.
        conn.execute_batch(NODE_CLAIM_KEEPALIVES)?;
        let journal_key = i32::from_ne_bytes(self.journal_key().to_ne_bytes());
        let place = i32::from(crate::node_place(node_id));
        // A node restarted at once after a crash may find its old session not yet ended by
        // the server: it waits for it a while before taking the place for another node's.
        let deadline = std::time::Instant::now() + wait;
        loop {
            let held: bool = conn.query_row(
                "SELECT pg_try_advisory_lock(?1, ?2)",
                params![journal_key, place],
                |r| r.get(0),
            )?;
            if held {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(backend(format!(
                    "another node on this journal holds node place {place} (node ids must \
                     differ modulo 10): node id {node_id} is taken; a node that died frees it \
                     within a minute"
                )));
            }
            std::thread::sleep(NODE_CLAIM_RETRY);
        }
        *self
            .node_claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(NodeClaim {
            conn: Some(conn),
            node_id,
        });
        Ok(())
    }

    /// Takes this node's place again when the session that held it has ended (the database
    /// restarted, the link broke, the server ended it: its connection closed): the lock went
    /// with it, and other nodes would take this one for dead. Refused while another session
    /// holds the place (the old one, until the server notices it gone, or a node started
    /// meanwhile with the same place): tried again at the next call. No round trip while the
    /// session lives: a link that hangs must not hold the caller.
    fn keep_node_claim(&self) -> Result<(), StoreError> {
        let node_id = {
            let mut claim = self
                .node_claim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(claim) = claim.as_mut() else {
                return Ok(());
            };
            if claim.conn.as_ref().is_some_and(|conn| !conn.is_closed()) {
                return Ok(());
            }
            claim.conn = None;
            claim.node_id
        };
        self.claim_node_within(node_id, std::time::Duration::ZERO)
    }

    /// The key of this journal's node places (the first half of their advisory locks): the
    /// schema's name (or the database's default), so deployments sharing a server do not
    /// refuse each other.
    fn journal_key(&self) -> u32 {
        let journal = self.config.schema.as_deref().unwrap_or("public");
        journal.bytes().fold(0x811c_9dc5_u32, |hash, b| {
            (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }

    /// The node places whose advisory locks (`claim_node`) sessions of this database hold now,
    /// this node's taken again first if its session ended. Read whether or not that worked:
    /// a caller that finds its own place missing says so.
    fn places_held(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = self.keep_node_claim();
        let places = self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT objid::INT8 FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND objsubid = 2 AND classid::INT8 = ?1
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )?;
            let rows = statement.query_map(params![i64::from(self.journal_key())], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        Ok(Some(
            places
                .into_iter()
                .filter_map(|place| u8::try_from(place).ok())
                .collect(),
        ))
    }

    /// Opens an existing journal for reading only (a tool such as `shoudan audit`): no schema
    /// created, no migration, no writer (every write fails with `WriterGone`), every session
    /// read-only, so a role that may only read is enough.
    pub fn open_read_only(config: &PgConfig) -> Result<Self, StoreError> {
        if let Some(schema) = &config.schema {
            check_schema(schema)?;
        }
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let store = PgStore {
            config: config.clone(),
            runtime: Some(runtime()?),
            sender,
            readers: Mutex::new(ReadPool::default()),
            reader_returned: Condvar::new(),
            writer: Mutex::new(None),
            read_only: true,
            node_claim: Mutex::new(None),
            queued_events: Arc::default(),
        };
        // Fail now, not at the first query, when there is no journal there.
        store.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM (SELECT 1 FROM transactions LIMIT 1) t",
                params![],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Reads what `open` would find and do without changing anything: no schema created,
    /// nothing migrated (the session is read-only).
    pub fn inspect(config: &PgConfig) -> Result<schema::SchemaStatus, StoreError> {
        if let Some(schema) = &config.schema {
            check_schema(schema)?;
        }
        let runtime = Opening(Some(runtime()?));
        let conn = connect(&runtime.handle()?, config)?;
        conn.execute_batch("SET default_transaction_read_only = on")?;
        // `to_regclass` follows the search path: the configured schema, or `public`.
        let table = |name: &str| -> Result<bool, StoreError> {
            let found: String = conn.query_row(
                "SELECT COALESCE(to_regclass(?1)::TEXT, '')",
                params![name],
                |r| r.get(0),
            )?;
            Ok(!found.is_empty())
        };
        let applied: Vec<i64> = if table("schema_migrations")? {
            conn.prepare("SELECT version FROM schema_migrations")?
                .query_map(params![], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let terminals = if table("terminals")? {
            let count: i64 =
                conn.query_row("SELECT COUNT(*) FROM terminals", params![], |r| r.get(0))?;
            Some(u64::try_from(count).unwrap_or(0))
        } else {
            None
        };
        let merchants: Vec<String> = if table("merchants")? {
            conn.prepare("SELECT mid FROM merchants")?
                .query_map(params![], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        drop(conn);
        drop(runtime);
        schema::SchemaStatus::from_applied(!applied.is_empty(), &applied, terminals, merchants)
    }

    /// Commits what is queued, stops the writer and waits for it. Later writes fail with
    /// `WriterGone`. Blocks: call from outside the async runtime or via `spawn_blocking`.
    pub fn close(&self) {
        if self.sender.blocking_send(Job::Stop).is_ok() {
            let handle = self.writer.lock().ok().and_then(|mut h| h.take());
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
    }

    /// Drops a schema and everything in it (tests clean up after themselves).
    pub fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        check_schema(schema)?;
        let runtime = runtime()?;
        let result = connect(runtime.handle(), &PgConfig::new(url)).and_then(|conn| {
            conn.execute_batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .map_err(StoreError::from)
        });
        runtime.shutdown_background();
        result
    }

    /// Always through the writer task: PostgreSQL has no inline mode.
    fn writes_inline(&self) -> bool {
        false
    }

    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        self.sender.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => StoreError::WriterGone,
        })
    }

    /// Runs `f` on an idle read connection, a new one while fewer than
    /// `PG_READ_CONNECTIONS_MAX` are open, or else the first one returned. Connections the
    /// server or the network closed are dropped, not used: after the database was out of
    /// reach, even with no read under way, the next read gets a live connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lease = Lease {
            store: self,
            conn: Some(self.take_reader()?),
        };
        match &lease.conn {
            Some(conn) => f(conn),
            None => Err(backend("read connection lost")),
        }
    }

    fn take_reader(&self) -> Result<Connection, StoreError> {
        let deadline = std::time::Instant::now() + PG_READ_WAIT_MAX;
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let before = pool.idle.len();
            pool.idle.retain(|conn| !conn.is_closed());
            pool.open = pool.open.saturating_sub(before - pool.idle.len());
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < PG_READ_CONNECTIONS_MAX {
                if let Some((at, error)) = &pool.failed
                    && pool.failures >= PG_READ_CONNECT_FAILURES
                    && at.elapsed() < PG_READ_CONNECT_PAUSE
                {
                    return Err(error.clone());
                }
                pool.open += 1;
                let began_after = pool.opened;
                drop(pool);
                let opened = self.connect_reader();
                let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
                match &opened {
                    Ok(_) => {
                        pool.failed = None;
                        pool.failures = 0;
                        pool.opened = pool.opened.wrapping_add(1);
                    }
                    Err(error) => {
                        pool.open = pool.open.saturating_sub(1);
                        if pool.opened == began_after {
                            pool.failed = Some((std::time::Instant::now(), error.clone()));
                            pool.failures = pool.failures.saturating_add(1);
                        }
                    }
                }
                drop(pool);
                if opened.is_err() {
                    self.reader_returned.notify_one();
                }
                return opened;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(backend(format!(
                    "no read connection free within {} s",
                    PG_READ_WAIT_MAX.as_secs()
                )));
            }
            pool = self
                .reader_returned
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn connect_reader(&self) -> Result<Connection, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::WriterGone)?;
        let conn = connect(runtime.handle(), &self.config)?;
        if self.read_only {
            conn.execute_batch("SET default_transaction_read_only = on")?;
        }
        Ok(conn)
    }

    fn txns_where(
        &self,
        condition: &str,
        params: &[&dyn rusqlite::ToSql],
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
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<SafItem>, StoreError> {
        let sql = format!("SELECT {SAF_COLUMNS} FROM reversal_queue WHERE {condition}");
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(params, saf_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Without joining: dropping may happen inside a runtime. The writer finishes what is
        // queued and exits when the channel closes; its connection needs the runtime until
        // then, so a thread of its own waits for the writer before letting the runtime go.
        let _ = self.sender.try_send(Job::Stop);
        if let Ok(mut pool) = self.readers.lock() {
            pool.open = pool.open.saturating_sub(pool.idle.len());
            pool.idle.clear();
        }
        let writer = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(runtime) = self.runtime.take() {
            // The runtime travels by channel so that, should the thread not start, it is still
            // here to be shut down without blocking.
            let (give, take) = std::sync::mpsc::channel::<tokio::runtime::Runtime>();
            let closing = std::thread::Builder::new()
                .name("store-pg-close".into())
                .spawn(move || {
                    if let Some(writer) = writer {
                        let _ = writer.join();
                    }
                    if let Ok(runtime) = take.recv() {
                        runtime.shutdown_background();
                    }
                });
            match closing {
                Ok(_) => {
                    if let Err(returned) = give.send(runtime) {
                        returned.0.shutdown_background();
                    }
                }
                Err(_) => runtime.shutdown_background(),
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    under_migration_lock(conn, migrate_locked)
}

/// Runs `f` in a transaction that holds the migrations' advisory lock (nodes starting together
/// take turns), committed if `f` succeeds, rolled back otherwise.
fn under_migration_lock(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN")?;
    let result = conn
        .query_row(
            "SELECT pg_advisory_xact_lock(?1)::TEXT",
            params![MIGRATION_LOCK_KEY],
            |r| r.get::<_, String>(0),
        )
        .map_err(StoreError::from)
        .and_then(|_| f(conn));
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn migrate_locked(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(schema::MIGRATIONS_TABLE)?;
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations")?
        .query_map(params![], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let known = schema::latest_version();
    if let Some(&found) = applied.iter().max()
        && found > known
    {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for migration in schema::MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
    {
        conn.execute_batch(&schema::render(migration, schema::POSTGRES_BYTES))?;
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )?;
    }
    Ok(())
}

fn run_writer(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Job>,
    runtime: &tokio::runtime::Handle,
    config: &PgConfig,
) {
    let mut jobs = Vec::with_capacity(PG_WRITE_BATCH_MAX);
    let mut completions = Vec::with_capacity(PG_WRITE_BATCH_MAX);
    loop {
        let Some(first) = receiver.blocking_recv() else {
            return;
        };
        if conn.is_closed() {
            // The server restarted or the link broke: the group gets a new connection; if
            // that fails too, the group's jobs fail on the closed one and the next retries.
            if let Ok(fresh) = connect(runtime, config)
                && fresh.execute_batch(WRITER_SETTINGS).is_ok()
            {
                conn = fresh;
            }
        }
        jobs.push(first);
        while jobs.len() < PG_WRITE_BATCH_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let stop = commit_group(&conn, &mut jobs, &mut completions);
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
/// back, pipelined (see `shim::Connection::start_pipeline`: the writes of a group go out
/// without a round trip each). If a statement changed other than one row, which the pipeline
/// took for granted, the group runs again one statement at a time; if a job fails, the group is
/// rolled back and rerun with a savepoint per job, so that a bad job fails alone. Returns
/// whether a stop was requested.
fn commit_group(conn: &Connection, jobs: &mut Vec<Job>, completions: &mut Vec<Completion>) -> bool {
    let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
    let ran = match run_group(conn, jobs, completions, true) {
        Ran::Again => run_group(conn, jobs, completions, false),
        ran => ran,
    };
    match ran {
        Ran::Committed => {}
        Ran::Again | Ran::Failed => commit_group_carefully(conn, jobs, completions),
    }
    stop
}

/// How a run of a whole group went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    Committed,
    /// Rolled back: a pipelined statement changed other than one row, and what followed may
    /// have differed from statement-by-statement execution. Run it again one at a time.
    Again,
    /// Rolled back: a job or the commit failed as it would have run one statement at a time.
    Failed,
}

/// Runs every job of the group in one transaction and commits it, the jobs' completions
/// succeeding; or, if any of them or the commit fails, rolls back and leaves the jobs where
/// they are.
fn run_group(
    conn: &Connection,
    jobs: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
    pipelined: bool,
) -> Ran {
    if conn.execute_batch("BEGIN").is_err() {
        return Ran::Failed;
    }
    if pipelined {
        conn.start_pipeline();
    }
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
    let finished = conn.finish_pipeline();
    // A rider deadlocked, or kept from a lock, has the group run again, as a job would.
    if !failed
        && finished.is_ok()
        && run_riders(
            conn,
            jobs.iter().filter_map(Job::rider),
            write_in_savepoint,
            deadlocked,
        )
        .is_err()
    {
        failed = true;
    }
    // `SELECT 1` first: in a transaction an error aborted, PostgreSQL answers a COMMIT with a
    // rollback and no error, but fails the SELECT (and skips the COMMIT).
    if !failed && finished.is_ok() && conn.execute_batch("SELECT 1; COMMIT").is_ok() {
        for (job, output) in jobs.drain(..).zip(outputs) {
            completions.extend(completion(job, Ok(output)));
        }
        return Ran::Committed;
    }
    let _ = conn.execute_batch("ROLLBACK");
    match finished {
        Err(shim::Unexpected::Count) => Ran::Again,
        _ => Ran::Failed,
    }
}

/// The slow path: a savepoint per job, so a failing job (which aborts PostgreSQL's
/// transaction until rolled back to the savepoint) fails alone. A job deadlocked with another
/// node's transaction (PostgreSQL aborts one of the two: two nodes' groups may take the rows of
/// two originals in opposite orders, for a refund's total or a link's claim) does not fail
/// alone: the locks the group's earlier jobs hold are part of the cycle, and only rolling the
/// whole transaction back releases them. So the group is rolled back, waits a few
/// milliseconds for the other transaction to finish, and is run again, a few times; an
/// approval's outcome must not fail for that.
fn commit_group_carefully(
    conn: &Connection,
    jobs: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
) {
    let mut tries = 0;
    // Each job waits only briefly for a row lock here: a job may have waited out the lock
    // timeout on the fast path already (another session holds its row: a node that died
    // mid-group, until the server ends that session), or never reached it there, behind an
    // earlier job that failed; either way the group must not be held up by the full wait on
    // every try. A live transaction holds its locks for milliseconds.
    let begin = format!("BEGIN; {CAREFUL_LOCK_TIMEOUT}");
    let results = loop {
        tries += 1;
        if let Err(error) = conn.execute_batch(&begin) {
            let error = StoreError::from(error);
            for job in jobs.drain(..) {
                completions.extend(completion(job, Err(error.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut again = false;
        for job in jobs.iter() {
            let result = in_savepoint(conn, |c| execute(c, job));
            if tries < DEADLOCK_TRIES_MAX && result.as_ref().is_err_and(deadlocked) {
                again = true;
                break;
            }
            results.push(result);
        }
        if again {
            let _ = conn.execute_batch("ROLLBACK");
            std::thread::sleep(deadlock_backoff(tries));
            continue;
        }
        let riders = jobs
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .filter_map(|(job, _)| job.rider());
        let again = |error: &StoreError| tries < DEADLOCK_TRIES_MAX && deadlocked(error);
        if run_riders(conn, riders, write_in_savepoint, again).is_err() {
            let _ = conn.execute_batch("ROLLBACK");
            std::thread::sleep(deadlock_backoff(tries));
            continue;
        }
        // `SELECT 1` first, as on the fast path: a savepoint command that failed leaves the
        // transaction aborted, and PostgreSQL would answer a bare COMMIT with a silent
        // rollback, acknowledging the jobs that had succeeded in it.
        if let Err(error) = conn.execute_batch("SELECT 1; COMMIT") {
            let error = StoreError::from(error);
            let _ = conn.execute_batch("ROLLBACK");
            for result in &mut results {
                *result = Err(error.clone());
            }
        }
        break results;
    };
    for (job, result) in jobs.drain(..).zip(results) {
        completions.extend(completion(job, result));
    }
}

/// Writes a rider's records in a savepoint of the transaction under way.
fn write_in_savepoint(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    in_savepoint(conn, |c| write_records(c, records))
}

/// Runs `f` in a savepoint: a failure rolls back `f`'s work only.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl Fn(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            conn.execute_batch("ROLLBACK TO job")?;
            conn.execute_batch("RELEASE job")?;
            Err(error)
        }
    }
}

/// How often a group is run when it keeps deadlocking.
const DEADLOCK_TRIES_MAX: u32 = 4;

/// The wait before running a deadlocked group again: growing, and varied by the clock so two
/// nodes that deadlocked do not retry in step.
fn deadlock_backoff(tries: u32) -> std::time::Duration {
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 5_000));
    std::time::Duration::from_micros(u64::from(tries) * 5_000 + jitter)
}

/// PostgreSQL's deadlock_detected (40P01) or serialization_failure (40001).
/// A deadlock, a serialization failure, or a lock not granted within the lock timeout: in a
/// job-by-job run after a lock wait (whose lock timeout is shorter than the server's deadlock
/// check) a wait in a cycle with another node's group ends as a lock timeout, and is resolved
/// as a deadlock is, the whole group rolled back and run again.
fn deadlocked(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend { message }
        if message.ends_with("(40P01)") || message.ends_with("(40001)"))
        || lock_timed_out(error)
}

/// A lock not granted within the session's lock timeout.
fn lock_timed_out(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend { message } if message.ends_with("(55P03)"))
}

/// Claims due reversals for this node: rows another node's open claim has locked are skipped,
/// and the claimed rows' next attempt moves to the end of the lease, so no other node takes
/// them before the lease runs out (the owner died) or the owner records the outcome.
fn claim(
    conn: &Connection,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<SafItem>, StoreError> {
    let lease_until = now_ms.saturating_add(lease_ms);
    let sql = format!(
        "UPDATE reversal_queue SET next_attempt_ms = ?1 WHERE txn_id IN (
         SELECT txn_id FROM reversal_queue WHERE state = ?2 AND next_attempt_ms <= ?3
         ORDER BY next_attempt_ms, txn_id LIMIT ?4 FOR UPDATE SKIP LOCKED)
         RETURNING {SAF_COLUMNS}"
    );
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(
            params![lease_until, SafState::Pending, now_ms, limit],
            saf_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    items.sort_by_key(|item| item.txn_id);
    Ok(items)
}

// The shared statements: `impl Store for PgStore` and the write and row helpers, generated
// from src/sqlite.rs by build.rs.
include!(concat!(env!("OUT_DIR"), "/pg_core.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::WebRecord;

    fn write(records: Vec<Record>) -> Job {
        let (done, _) = tokio::sync::oneshot::channel();
        let done = crate::group::WriteDone::new(done, None);
        Job::Write { records, done }
    }

    /// A configuration printed for debugging shows its URL only when it holds no password.
    #[test]
    fn a_password_in_the_url_is_not_debug_printed() {
        for url in [
            "postgres://shoudan:s3cr3t@db.example/journal",
            "postgres://shoudan@db.example/journal?password=s3cr3t",
        ] {
            let printed = format!("{:?}", PgConfig::new(url));
            assert!(!printed.contains("s3cr3t"), "{printed}");
            assert!(printed.contains("not shown"), "{printed}");
        }
        let plain = "postgres://shoudan@db.example/journal";
        assert!(format!("{:?}", PgConfig::new(plain)).contains(plain));
    }

    #[test]
    fn plain_connections_to_another_host_are_told_apart() {
        let plain = |url: &str| PgConfig::new(url).plain_over_network();
        assert!(plain("postgres://shoudan@db.example/journal"));
        assert!(plain(
            "postgres://shoudan@10.0.0.7:5432/journal?sslmode=prefer"
        ));
        assert!(plain(
            "postgres://shoudan@localhost/journal?hostaddr=10.0.0.7"
        ));
        assert!(!plain("postgres://shoudan@127.0.0.1:5432/journal"));
        assert!(!plain("postgres://shoudan@localhost/journal"));
        assert!(!plain("postgres://shoudan@[::1]:5432/journal"));
        assert!(!plain(
            "postgres://shoudan@db.example/journal?sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(!plain(
            "postgres://shoudan@db.example/journal?sslmode=require"
        ));
    }

    /// Asked for verify-full, the client requires TLS, whatever it would otherwise do with a
    /// server that offers none; verify-full with nothing to check the name against is refused.
    #[test]
    fn verify_full_requires_tls_of_a_named_host() {
        let (config, security) =
            client_config("postgres://app@db.example/j?sslmode=verify-full&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(matches!(security, tls::Security::VerifyFull { .. }));
        for url in [
            "postgres:///j?host=/run/postgresql&sslmode=verify-full&sslrootcert=/ca.pem",
            "postgres:///j?hostaddr=10.0.0.7&sslmode=verify-full&sslrootcert=/ca.pem",
        ] {
            let error = client_config(url).unwrap_err().to_string();
            assert!(
                error.contains("needs the server's host name"),
                "{url}: {error}"
            );
        }
    }

    /// The parser's causes name an option it does not know; of a URL holding a password, whose
    /// unencoded '&' would make part of it such an option, they are not quoted.
    #[test]
    fn a_bad_url_with_a_password_quotes_none_of_it() {
        let error = client_config("postgres://app@db/j?password=Xy7&Secret=1")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("Secret"), "{error}");
        let error = client_config("postgres://app@db/j?Bogus=1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown option `Bogus`"), "{error}");
    }

    /// A URL's own bounds are kept; those it leaves out are the store's.
    #[test]
    fn connections_are_bounded_unless_the_url_says_otherwise() {
        let (config, _) = client_config("postgres://shoudan@db.example/journal").unwrap();
        assert_eq!(config.get_connect_timeout(), Some(&PG_CONNECT_TIMEOUT));
        assert_eq!(config.get_tcp_user_timeout(), Some(&PG_TCP_USER_TIMEOUT));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), PG_KEEPALIVE_IDLE);
        assert_eq!(
            config.get_keepalives_interval(),
            Some(PG_KEEPALIVE_INTERVAL)
        );
        assert_eq!(config.get_keepalives_retries(), Some(PG_KEEPALIVE_RETRIES));

        let (config, _) = client_config(
            "postgres://shoudan@db.example/journal?connect_timeout=3&tcp_user_timeout=30\
             &keepalives_idle=60&keepalives_interval=7&keepalives_retries=9",
        )
        .unwrap();
        let secs = std::time::Duration::from_secs;
        assert_eq!(config.get_connect_timeout(), Some(&secs(3)));
        assert_eq!(config.get_tcp_user_timeout(), Some(&secs(30)));
        assert_eq!(config.get_keepalives_idle(), secs(60));
        assert_eq!(config.get_keepalives_interval(), Some(secs(7)));
        assert_eq!(config.get_keepalives_retries(), Some(9));

        let error = client_config("postgres://shoudan:secret@db.example:port/journal")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    /// A server that accepts the connection and never answers (a hung process, a proxy in front
    /// of a dead one) fails the open within the connect timeout, instead of holding it forever.
    #[test]
    fn a_server_that_never_answers_fails_the_open_within_the_connect_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Takes connections and reads nothing; they stay open until the test ends.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.push(stream);
            }
        });
        let url = format!("postgres://shoudan@127.0.0.1:{port}/journal?connect_timeout=1");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || drop(sender.send(PgStore::open(&PgConfig::new(url)).err())));
        let started = std::time::Instant::now();
        let error = receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the open is still waiting after 10 s")
            .expect("opened a store on a server that never answered");
        assert!(
            error.to_string().contains("no answer within 1 s"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// A write whose count the shared code does not read (`execute_any`) commits its group on
    /// the pipelined run even when it changes no row; a write whose count is read and differs
    /// from the one taken for granted sends the group to a second run.
    #[test]
    fn a_count_nobody_reads_does_not_rerun_a_pipelined_group() {
        let Some((_runtime, conn)) = shim::tests::connect() else {
            return;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!("rerun_{}_{nanos}", std::process::id());
        conn.execute_batch(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema}"
        ))
        .unwrap();
        migrate(&conn).unwrap();
        let mut completions = Vec::new();

        // Two deletes of what is not there: no row changed, no count read.
        let mut jobs = vec![
            write(vec![Record::Web(WebRecord::ClearLoginFailures {
                user_id: 1,
            })]),
            write(vec![Record::Web(WebRecord::DeleteSession {
                token_hash: vec![1, 2, 3],
            })]),
        ];
        let ran = run_group(&conn, &mut jobs, &mut completions, true);
        assert_eq!(ran, Ran::Committed);
        assert!(jobs.is_empty());

        // A batch mark of an unknown terminal: its count is read (it must be one).
        let mut jobs = vec![write(vec![Record::Batch {
            tid: "99999999".into(),
            batch_no: 2,
        }])];
        let ran = run_group(&conn, &mut jobs, &mut completions, true);
        assert_eq!(ran, Ran::Again);
        assert_eq!(jobs.len(), 1);
        let ran = run_group(&conn, &mut jobs, &mut completions, false);
        assert_eq!(ran, Ran::Failed);

        conn.execute_batch(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
    }
}
