//! The stores on real databases: migrations, round trips, group commit under concurrency,
//! durability across reopen, the reversal queue, and write failures reaching the waiter. The
//! backend-neutral tests run on SQLite (a temp file) and PostgreSQL (a fresh schema): see
//! `on_both!` at the end; SQLite-only ones (file format, page quota) are plain tests.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

mod backend;
use backend::Db;

use store::{
    BatchSpan, EventRow, LinkRefusal, MerchantRow, Outcome, PanAtRest, Record, SafState,
    SqliteConfig, SqliteStore, Status, Store, StoreError, TerminalRow, TxnKind, TxnRow, TxnState,
    WrappedKeys,
    settlement::{BatchSettlementRow, SettlementRecord},
};

fn merchant() -> MerchantRow {
    MerchantRow {
        mid: "898110048990001".into(),
        name: "Teahouse".into(),
        status: Status::Active,
        mcc: "5812".into(),
    }
}

fn terminal() -> TerminalRow {
    TerminalRow {
        tid: "10000001".into(),
        mid: "898110048990001".into(),
        tmk_wrapped: vec![1, 2, 3],
        key_scheme: "003".into(),
        mac_algorithm: "cup_ecb".into(),
        status: Status::Active,
        batch_no: 1,
        last_sign_in_ms: None,
        working_keys: None,
    }
}

fn txn(id: i64, stan: u32) -> TxnRow {
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: "898110048990001".into(),
        batch_no: 1,
        stan,
        kind: TxnKind::Purchase,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: 12_345,
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: vec![9; 32],
            fingerprint: vec![7; 32],
            masked: "622202******0123".into(),
            last4: "0123".into(),
            bin: "622202".into(),
        }),
        issuer: Some("ICBC".into()),
        rrn: Some(format!("{id:012}")),
        host_trace: Some(stan),
        auth_code: None,
        response_code: None,
        state: TxnState::InFlight,
        request_hash: vec![1; 16],
        original_id: None,
        refunded_fen: 0,
        field60: Some("22000001".into()),
        host_date: Some("1123".into()),
        clearing_date: "20261123".into(),
        settlement_date: None,
        received_at_ms: 1_000 + id,
        sent_at_ms: Some(1_001 + id),
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&SqliteConfig::new(dir.path().join("shoudan.db"))).unwrap()
}

/// Two processes opening one new journal at once (a CLI beside a starting demo) both migrate
/// it without either failing on a migration the other applied meanwhile.
#[test]
fn two_openers_at_once_migrate_a_journal_once() {
    for _ in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoudan.db");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&SqliteConfig::new(path)).map(|store| store.close())
                })
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
    }
}

/// Two nodes write the refunded totals of two originals in opposite orders at the same instant
/// (on PostgreSQL each takes the rows' locks in its own order: a deadlock, one transaction
/// aborted): every write still succeeds.
fn opposite_lock_orders_on_two_nodes_fail_no_write(db: &Db) {
    let first = db.open();
    let second = db.is_postgres().then(|| db.open());
    let (one, two): (&dyn Store, &dyn Store) = (&*first, second.as_deref().unwrap_or(&*first));
    provision(&first);
    for round in 0..3_i64 {
        let (a, b) = (2_000 + round * 2, 2_001 + round * 2);
        approved_purchase(one, a);
        approved_purchase(one, b);
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let racers = [(one, [a, b]), (two, [b, a])].map(|(node, order)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let records = order.map(|id| Record::Refunded { id }).to_vec();
                    write(node, records)
                })
            });
            racers.map(|r| r.join().unwrap()).to_vec()
        });
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {results:?}"
        );
    }
}

/// A deadlock that closes on a lock an earlier job of the group holds: rolling back to the
/// deadlocked job's savepoint keeps that lock, so the cycle stays closed; only the whole group
/// rolled back and run again lets the other transaction through and every job succeed.
///
/// The group is made careful (a savepoint per job) by a job that fails. The other transaction
/// is a connection of the test's own: it holds B, waits until the writer (holding A from an
/// earlier job of the group) waits for B, then asks for A. The writer waited first, so it is
/// the one PostgreSQL aborts; the test's request for A is granted only if the writer let go
/// of A.
#[test]
fn on_postgres_a_deadlock_on_an_earlier_jobs_lock_reruns_the_whole_group() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    provision(&store);
    let (a, b, c) = (3_001_i64, 3_002_i64, 3_003_i64);
    for id in [a, b, c] {
        approved_purchase(&*store, id);
    }
    let other = Session::connect(&config.url);
    let run = |sql: String| other.run(&sql);
    let wait_blocked = || other.wait_blocked();
    let lock = |id: i64| format!("SELECT id FROM transactions WHERE id = {id} FOR UPDATE");
    // The writer (1 s, the server's default) looks for the deadlock long before this session
    // would: on a loaded machine the two checks could otherwise run close enough for either
    // to be the victim. Setting it needs a superuser, as scripts/pg's is; else the default.
    let _ = run("SET deadlock_timeout = '20s'".to_owned());
    run(format!(
        "SET search_path TO {schema}; BEGIN; {}; SAVEPOINT c; {}",
        lock(b),
        lock(c)
    ))
    .unwrap();
    // The writer waits on C, so the next three jobs queue and are taken as one group.
    let first = store.submit(vec![Record::Refunded { id: c }]).unwrap();
    wait_blocked();
    let failing = store
        .submit(vec![Record::Refunded { id: 999_999 }])
        .unwrap();
    let takes_a = store.submit(vec![Record::Refunded { id: a }]).unwrap();
    let takes_b = store.submit(vec![Record::Refunded { id: b }]).unwrap();
    run("ROLLBACK TO SAVEPOINT c".to_owned()).unwrap();
    first.wait().unwrap();
    // The group: the failing job alone, A locked, then a wait for B.
    wait_blocked();
    let granted = run(lock(a));
    assert!(
        granted.is_ok(),
        "the writer kept A through its deadlock: {granted:?}"
    );
    run("COMMIT".to_owned()).unwrap();
    assert!(failing.wait().is_err());
    takes_a.wait().unwrap();
    takes_b.wait().unwrap();
    drop(other);
    store.close();
}

/// A connection of the test's own beside the store's, to hold locks the store's writer then
/// waits for.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Session {
    fn connect(url: &str) -> Session {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .unwrap();
        runtime.spawn(connection);
        Session { runtime, client }
    }

    fn run(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.runtime.block_on(self.client.batch_execute(sql))
    }

    /// Returns once another session waits for a lock this one holds.
    fn wait_blocked(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let row = self
                .runtime
                .block_on(self.client.query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
                    &[],
                ))
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The store's writer held from outside: SQLite's write lock taken by a connection of the
/// test's own (the writer waits in its `BEGIN`, up to its busy timeout), or on PostgreSQL the
/// locks of transaction rows the writes then wait for.
enum WriterHold {
    Sqlite(rusqlite::Connection),
    Pg(Session),
}

impl WriterHold {
    fn take(db: &Db, ids: &[i64]) -> WriterHold {
        match db.pg_config() {
            Some(config) => {
                let session = Session::connect(&config.url);
                let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>();
                session
                    .run(&format!(
                        "SET search_path TO {}; BEGIN; \
                         SELECT id FROM transactions WHERE id IN ({}) FOR UPDATE",
                        config.schema.unwrap(),
                        ids.join(", ")
                    ))
                    .unwrap();
                WriterHold::Pg(session)
            }
            None => {
                let conn = rusqlite::Connection::open(db.sqlite_path()).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                WriterHold::Sqlite(conn)
            }
        }
    }

    /// Returns once the writer waits on the hold (on SQLite, after a moment).
    fn waited_on(&self) {
        match self {
            WriterHold::Pg(session) => session.wait_blocked(),
            WriterHold::Sqlite(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }

    fn release(self) {
        match self {
            WriterHold::Pg(session) => session.run("ROLLBACK").unwrap(),
            WriterHold::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
        }
    }
}

/// The host's reversal of an approval `id` (the records a late outcome's rider carries).
fn host_reversal(id: i64) -> Vec<Record> {
    vec![
        Record::StateFrom {
            id,
            from: TxnState::Approved,
            state: TxnState::Reversed,
        },
        Record::SafEnqueue {
            txn_id: id,
            issuer: "ICBC".into(),
            reason: "96".into(),
            next_attempt_ms: 5_000,
        },
        Record::Event(EventRow {
            txn_id: id,
            at_ms: 4_000,
            kind: "reversed".into(),
            detail: "outcome written after the terminal was answered 96".into(),
        }),
    ]
}

/// Records added to a write submitted open, while the writer has not taken it into a commit,
/// commit in the same transaction: a late approval and the host's reversal of it land
/// together. Added records that fail (the row no longer approved) fail alone; a write that
/// fails takes what was added with it. Once its commit is known, nothing more is added. Both
/// the group's fast path and its job-by-job run (a job of the group failing) are shown.
fn records_added_to_an_open_write_commit_with_it(db: &Db) {
    let store = db.open();
    provision(&store);
    for id in 1..=4 {
        write(
            &*store,
            vec![Record::InsertTxn(Box::new(txn(id, id as u32)))],
        )
        .unwrap();
    }

    // The fast path: every job of the group succeeds.
    let hold = WriterHold::take(db, &[1, 2]);
    let (first, rider) = store.submit_open(vec![approved(1)]).unwrap();
    hold.waited_on();
    let riding = rider.add(host_reversal(1)).unwrap();
    let (second, other) = store.submit_open(vec![approved(2)]).unwrap();
    // Not approved by the time it runs: the write lands without it.
    let mut stale = host_reversal(2);
    stale.splice(
        ..1,
        [Record::StateFrom {
            id: 2,
            from: TxnState::Declined,
            state: TxnState::Reversed,
        }],
    );
    let refused = other.add(stale).unwrap();
    assert!(
        other.add(host_reversal(2)).is_err(),
        "records are added once"
    );
    hold.release();
    first.wait().unwrap();
    riding.wait().unwrap();
    second.wait().unwrap();
    assert!(matches!(refused.wait(), Err(StoreError::Constraint { .. })));
    assert_eq!(store.txn(1).unwrap().unwrap().state, TxnState::Reversed);
    assert!(store.reversal(1).unwrap().is_some());
    assert!(
        store
            .events(1)
            .unwrap()
            .iter()
            .any(|e| e.kind == "reversed")
    );
    assert_eq!(store.txn(2).unwrap().unwrap().state, TxnState::Approved);
    assert!(store.reversal(2).unwrap().is_none());
    assert!(store.events(2).unwrap().is_empty());
    assert!(rider.add(host_reversal(1)).is_err(), "its commit is known");

    // Job by job: a write of the group fails (an outcome for a row no longer in flight).
    // A write held first, so that the two behind it queue and form one group.
    approved_purchase(&*store, 5);
    let hold = WriterHold::take(db, &[5]);
    let blocker = store.submit(vec![Record::Refunded { id: 5 }]).unwrap();
    hold.waited_on();
    let (third, rider) = store.submit_open(vec![approved(3)]).unwrap();
    let riding = rider.add(host_reversal(3)).unwrap();
    let (failing, rider) = store.submit_open(vec![approved(2)]).unwrap();
    let renamed = MerchantRow {
        name: "Renamed".into(),
        ..merchant()
    };
    let with_failing = rider.add(vec![Record::UpsertMerchant(renamed)]).unwrap();
    hold.release();
    blocker.wait().unwrap();
    assert!(failing.wait().is_err());
    assert!(with_failing.wait().is_err());
    let names: Vec<_> = store
        .merchants()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, [merchant().name]);
    third.wait().unwrap();
    riding.wait().unwrap();
    assert_eq!(store.txn(3).unwrap().unwrap().state, TxnState::Reversed);
    assert!(store.reversal(3).unwrap().is_some());

    // A write whose commit is known takes nothing more.
    let (fourth, rider) = store.submit_open(vec![approved(4)]).unwrap();
    fourth.wait().unwrap();
    let handed_back = rider.add(host_reversal(4)).err();
    assert_eq!(
        handed_back.map(|r| r.len()),
        Some(3),
        "records added to a write committed"
    );
    assert_eq!(store.txn(4).unwrap().unwrap().state, TxnState::Approved);
    store.close();
}

/// A rider kept from a row's lock past the writer's lock timeout (another node's transaction
/// holding it a little longer) has its group run again, as a job would, rather than failing
/// alone while its write commits: the late approval's host reversal must not be lost so.
#[test]
fn on_postgres_a_rider_kept_from_a_lock_has_its_group_run_again() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let store = db.open();
    provision(&store);
    write(&*store, vec![Record::InsertTxn(Box::new(txn(1, 1)))]).unwrap();
    approved_purchase(&*store, 2);
    let schema = config.schema.unwrap();
    let lock = |id: i64| {
        let session = Session::connect(&config.url);
        session
            .run(&format!(
                "SET search_path TO {schema}; BEGIN; \
                 SELECT id FROM transactions WHERE id = {id} FOR UPDATE"
            ))
            .unwrap();
        session
    };
    // The write held on its own row while its rider is added, then let go; the rider's row
    // is held past the writer's lock timeout (2 s), within the job-by-job runs that follow.
    let (write_row, rider_row) = (lock(1), lock(2));
    let (outcome, rider) = store.submit_open(vec![approved(1)]).unwrap();
    write_row.wait_blocked();
    let riding = rider.add(vec![Record::Refunded { id: 2 }]).unwrap();
    write_row.run("ROLLBACK").unwrap();
    rider_row.wait_blocked();
    std::thread::sleep(std::time::Duration::from_millis(2_150));
    rider_row.run("ROLLBACK").unwrap();
    outcome.wait().unwrap();
    riding.wait().unwrap();
    store.close();
}

/// A rider that fills the disk (SQLite's page quota): SQLite may roll the whole transaction
/// back by itself then, and a rider after it must not run outside it (a savepoint with no
/// transaction opens one of its own and commits alone). Whatever SQLite does, each write and
/// its rider land as they report: records added land only with their write.
#[test]
fn a_rider_that_fills_the_disk_takes_nothing_else_with_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("shoudan.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db_path)).unwrap();
    let opened = backend::Opened::Sqlite(store);
    provision(&opened);
    let backend::Opened::Sqlite(store) = &opened else {
        unreachable!()
    };
    for id in 1..=3 {
        write(store, vec![Record::InsertTxn(Box::new(txn(id, id as u32)))]).unwrap();
    }
    // The disk full from the start: whatever groups the writer makes of what follows, the
    // filler cannot fit (the writes themselves change rows in place).
    store.set_page_quota(Some(1));
    let hold = rusqlite::Connection::open(&db_path).unwrap();
    hold.execute_batch("BEGIN IMMEDIATE").unwrap();
    let blocker = store.submit(vec![Record::Refunded { id: 3 }]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Behind the blocker: one group, its riders run one after the other.
    let (big, big_rider) = store.submit_open(vec![approved(1)]).unwrap();
    let filler: Vec<Record> = (0..400)
        .map(|n| {
            Record::Event(EventRow {
                txn_id: 1,
                at_ms: 4_000 + n,
                kind: "filler".into(),
                detail: "x".repeat(2_000),
            })
        })
        .collect();
    let big_riding = big_rider.add(filler).unwrap();
    // Records with no guard of their own (a reversal's `StateFrom` would fail outside the
    // transaction anyway): a merchant renamed, in a page that has room.
    let (small, small_rider) = store.submit_open(vec![approved(2)]).unwrap();
    let renamed = MerchantRow {
        name: "Renamed".into(),
        ..merchant()
    };
    let small_riding = small_rider
        .add(vec![Record::UpsertMerchant(renamed)])
        .unwrap();
    hold.execute_batch("ROLLBACK").unwrap();
    // Alone, or grouped with the two behind it if the writer was slow to take it (and rolled
    // back with them when the filler fills the disk): either way, not what is checked here.
    let _ = blocker.wait();
    let results = [
        big.wait(),
        big_riding.wait(),
        small.wait(),
        small_riding.wait(),
    ];
    store.set_page_quota(None);
    let [big, big_riding, small, small_riding] = results.map(|r| r.is_ok());
    assert!(!big_riding, "the filler fitted: the quota was not reached");
    let state = |id: i64| store.txn(id).unwrap().unwrap().state;
    assert_eq!(state(1) == TxnState::Approved, big);
    assert!(store.events(1).unwrap().is_empty());
    let renamed = store
        .merchants()
        .unwrap()
        .iter()
        .any(|m| m.name == "Renamed");
    assert_eq!(renamed, small_riding, "a rider landed as it did not report");
    assert_eq!(state(2) == TxnState::Approved, small);
}

/// Submits `stuck` (a write a dead session's lock holds up) and a write queued behind it, and
/// waits for both, 30 s at most: the first fails, the one behind goes through. How long that
/// took.
#[allow(clippy::expect_used)]
fn fails_behind_a_dead_lock(store: &backend::Opened, stuck: Vec<Record>) -> std::time::Duration {
    let started = std::time::Instant::now();
    let stuck = store.submit(stuck).unwrap();
    let behind = store
        .submit(vec![Record::UpsertMerchant(merchant())])
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let stuck = stuck.wait();
        let behind = behind.wait();
        let _ = done.send((stuck, behind));
    });
    let (stuck, behind) = finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the writer waited on the dead session's lock");
    assert!(stuck.is_err(), "{stuck:?}");
    behind.unwrap();
    started.elapsed()
}

/// A session that took a terminal ID's claim lock and went quiet inside its transaction (another
/// node whose host died before its COMMIT): the write that needs the lock fails after the
/// writer's lock timeout instead of waiting for hours, and the writes queued behind it go
/// through.
#[test]
fn on_postgres_a_lock_held_by_a_dead_session_fails_one_write_not_the_writer() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    provision(&store);
    let other = Session::connect(&config.url);
    other
        .run(&format!(
            "SET search_path TO {schema}; BEGIN; \
             INSERT INTO key_locks (tid) VALUES ('10000001') \
             ON CONFLICT (tid) DO UPDATE SET tid = excluded.tid"
        ))
        .unwrap();
    let took = fails_behind_a_dead_lock(&store, claimed(1, txn(1, 5)));
    // The lock timeout (2 s) once, then the job-by-job run's (0.25 s a try): not the full
    // wait twice, nor for as long as the lock is held.
    assert!(took < std::time::Duration::from_millis(3_900), "{took:?}");
    drop(other);
    store.close();
}

/// A write stuck behind a dead session's lock, in a group whose first job fails for a reason of
/// its own (a batch mark of an unknown terminal): the fast run stops at that first job and
/// never meets the lock, and the job-by-job run then waits only briefly for it on each try, not
/// the full lock timeout four times (about 8 s of the writer held up, every request of the
/// node answered 96 meanwhile).
#[test]
fn on_postgres_a_write_behind_a_dead_lock_and_a_failing_job_fails_quickly() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    provision(&store);
    let dead = Session::connect(&config.url);
    dead.run(&format!(
        "SET search_path TO {schema}; BEGIN; \
         INSERT INTO key_locks (tid) VALUES ('10000001') \
         ON CONFLICT (tid) DO UPDATE SET tid = excluded.tid"
    ))
    .unwrap();
    // The writer held on a first write (the merchant's row, locked a moment by a live
    // session) while the group behind it gathers.
    let live = Session::connect(&config.url);
    live.run(&format!(
        "SET search_path TO {schema}; BEGIN; \
         UPDATE merchants SET name = name WHERE mid = '898110048990001'"
    ))
    .unwrap();
    let first = store
        .submit(vec![Record::UpsertMerchant(merchant())])
        .unwrap();
    live.wait_blocked();
    let failing = store
        .submit(vec![Record::Batch {
            tid: "99999999".into(),
            batch_no: 2,
        }])
        .unwrap();
    let stuck = store.submit(claimed(1, txn(1, 5))).unwrap();
    let behind = store
        .submit(vec![Record::UpsertMerchant(merchant())])
        .unwrap();
    let started = std::time::Instant::now();
    live.run("COMMIT").unwrap();
    first.wait().unwrap();
    assert!(failing.wait().is_err());
    assert!(stuck.wait().is_err());
    behind.wait().unwrap();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(3_900), "{took:?}");
    drop(dead);
    store.close();
}

/// A session that holds a transaction's row and went quiet (another node that died inside its
/// transaction), and a write of that row that reads nothing (a state, pipelined): its lock
/// timeout is seen only when the pipeline's answers are read, and the careful run must then
/// wait briefly too, not the full lock timeout on every try (about 10 s of the writer held up
/// before, every terminal of the node answered 96 meanwhile).
#[test]
fn on_postgres_a_pipelined_write_behind_a_dead_sessions_lock_fails_quickly() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    provision(&store);
    store.submit(claimed(1, txn(1, 5))).unwrap().wait().unwrap();
    let other = Session::connect(&config.url);
    other
        .run(&format!(
            "SET search_path TO {schema}; BEGIN; \
             UPDATE transactions SET state = state WHERE id = 1"
        ))
        .unwrap();
    let state = vec![Record::State {
        id: 1,
        state: TxnState::Declined,
    }];
    let took = fails_behind_a_dead_lock(&store, state);
    // The lock timeout (2 s) once, then the careful run's (0.25 s a try): about 3 s, where
    // the full timeout on every try took 10 (the bound leaves a slow machine room).
    assert!(took < std::time::Duration::from_millis(6_000), "{took:?}");
    drop(other);
    store.close();
}

/// Nodes on one PostgreSQL journal each claim their node id's place (its id modulo 10): a
/// second node with the same place is refused, one with another place is not, and the place is
/// free again once its node's store is closed. Another journal (schema) on the same server has
/// places of its own. Each node reads which places are held (`node_places_held`).
#[test]
fn on_postgres_two_nodes_cannot_claim_one_node_place() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let held = |store: &dyn Store| {
        let mut places = store.node_places_held().unwrap().unwrap();
        places.sort_unstable();
        places
    };
    // A session's end, and the lock's release with it, comes a moment after it is asked for.
    let comes_to = |store: &dyn Store, places: &[u8], why: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while held(store) != places {
            assert!(
                std::time::Instant::now() < deadline,
                "{why}: {:?}",
                held(store)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let first = store::PgStore::open(&config).unwrap();
    assert_eq!(held(&first), [0_u8; 0]);
    first.claim_node(3).unwrap();
    let second = store::PgStore::open(&config).unwrap();
    let refused = second
        .claim_node_within(13, std::time::Duration::from_millis(600))
        .unwrap_err();
    assert!(refused.to_string().contains("node place 3"), "{refused}");
    second.claim_node(4).unwrap();
    assert_eq!(held(&second), [3, 4]);
    // The session holding place 4 ends (as at a database restart): the lock goes with it, and
    // its node takes the place again at its next read of the places.
    let journal_key = config
        .schema
        .as_deref()
        .unwrap()
        .bytes()
        .fold(0x811c_9dc5_u32, |hash, b| {
            (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    Session::connect(&config.url)
        .run(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::INT8 = {journal_key} AND objid = 4 AND objsubid = 2"
        ))
        .unwrap();
    comes_to(&first, &[3], "the place stayed held");
    // Once its connection has seen the session end.
    comes_to(&second, &[3, 4], "its node did not take it again");
    first.close();
    drop(first);
    comes_to(&second, &[4], "a closed node's place is not freed");
    let third = store::PgStore::open(&config).unwrap();
    third.claim_node(3).unwrap();
    let elsewhere = Db::postgres().unwrap();
    let other_journal = store::PgStore::open(&elsewhere.pg_config().unwrap()).unwrap();
    assert_eq!(held(&other_journal), [0_u8; 0], "another journal's places");
    other_journal.claim_node(3).unwrap();
    assert_eq!(held(&third), [3, 4]);
    for store in [second, third, other_journal] {
        store.close();
    }
}

/// On PostgreSQL, a sign-in checked against the old password while another node's password
/// change is written but not yet committed: the session's insert waits for the change and is
/// then refused. Before, its check read the old password without waiting, the change's
/// removal of the user's sessions could not see it (not yet committed), and the session
/// outlived the change.
#[test]
fn on_postgres_a_session_checked_during_a_password_change_does_not_outlive_it() {
    use store::web::{Role, SessionRow, UserRow, WebRecord};
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    store
        .submit(vec![Record::Web(WebRecord::UpsertUser(UserRow {
            id: 1,
            username: "teahouse".into(),
            password_hash: "$argon2id$old".into(),
            role: Role::Merchant,
            mid: None,
            display_name: "Teahouse".into(),
            disabled: false,
            created_at_ms: 1,
        }))])
        .unwrap()
        .wait()
        .unwrap();
    // Another node changes the password and ends the user's sessions, not yet committed.
    let other = Session::connect(&config.url);
    other
        .run(&format!(
            "SET search_path TO {schema}; BEGIN; \
             UPDATE web_users SET password_hash = '$argon2id$new' WHERE id = 1; \
             DELETE FROM web_sessions WHERE user_id = 1"
        ))
        .unwrap();
    let signed_in = store
        .submit(vec![Record::Web(WebRecord::InsertSessionChecked {
            session: SessionRow {
                token_hash: vec![9; 32],
                user_id: 1,
                csrf: "c".into(),
                created_at_ms: 2,
                expires_at_ms: 10_000,
            },
            password_hash: "$argon2id$old".into(),
        })])
        .unwrap();
    // The insert waits for the change...
    other.wait_blocked();
    other.run("COMMIT").unwrap();
    // ...and then finds the password changed.
    assert!(signed_in.wait().is_err());
    assert!(store.web_session(&[9; 32]).unwrap().is_none());
    drop(other);
    store.close();
}

/// A loopback gate to the test's PostgreSQL server that can refuse connections (the database
/// down), counting the connections it is asked for.
struct Gate {
    addr: std::net::SocketAddr,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
    links: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Gate {
    fn start(target: String) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate {
            addr,
            refusing: Arc::default(),
            asked: Arc::default(),
            links: Arc::default(),
        };
        let (refusing, asked, links) = (
            Arc::clone(&gate.refusing),
            Arc::clone(&gate.asked),
            Arc::clone(&gate.links),
        );
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                asked.fetch_add(1, Ordering::SeqCst);
                if refusing.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let mut held = links.lock().unwrap();
                held.push(inbound.try_clone().unwrap());
                held.push(outbound.try_clone().unwrap());
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        gate
    }

    /// Closes every connection through the gate and refuses new ones.
    fn cut(&self) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(std::net::Shutdown::Both);
        }
    }

    fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// With the database down, a node's reads (on a shared journal, one per request) do not each
/// try to connect: after a failed attempt, those within `PG_READ_CONNECT_PAUSE` fail with its
/// error at once.
#[test]
fn on_postgres_reads_do_not_each_try_to_connect_while_the_database_is_down() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let start = config.url.find('@').map_or(0, |at| at + 1);
    let end = config.url[start..]
        .find('/')
        .map_or(config.url.len(), |slash| start + slash);
    let gate = Gate::start(config.url[start..end].to_owned());
    let url = format!(
        "{}{}{}",
        &config.url[..start],
        gate.addr,
        &config.url[end..]
    );
    let store = store::PgStore::open(&store::PgConfig { url, ..config }).unwrap();
    assert!(store.terminals().unwrap().is_empty());
    gate.cut();
    let before = gate.asked();
    for _ in 0..20 {
        assert!(store.terminals().is_err());
    }
    // The first few failures are each tried (a blip must not cost the reads after it), then
    // the pause holds.
    let tried = gate.asked() - before;
    let most = usize::try_from(store::PG_READ_CONNECT_FAILURES).unwrap() + 1;
    assert!(tried <= most, "{tried} connection attempts for 20 reads");
    // The pause over, the next read tries again.
    std::thread::sleep(store::PG_READ_CONNECT_PAUSE + std::time::Duration::from_millis(100));
    assert!(store.terminals().is_err());
    assert!(gate.asked() > before + tried);
    store.close();
}

/// A URL asking for `sslmode=verify-full` with the server's CA opens every connection of the
/// store (its writer and its readers) over TLS; a CA that did not sign the server's
/// certificate, or a certificate naming another host, is refused before anything is read or
/// written.
#[test]
fn on_postgres_a_verify_full_url_connects_over_tls_and_refuses_a_server_it_cannot_check() {
    let Some(db) = Db::postgres() else { return };
    let Some((ca, other_ca)) = backend::pg_cas() else {
        return;
    };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let join = if config.url.contains('?') { '&' } else { '?' };
    let tls = |roots: &str| {
        format!(
            "{}{join}application_name={schema}&sslmode=verify-full&sslrootcert={roots}",
            config.url
        )
    };
    let store = backend::Opened::Pg(
        store::PgStore::open(&store::PgConfig {
            url: tls(&ca),
            ..config.clone()
        })
        .unwrap(),
    );
    provision(&store);
    write(&*store, vec![Record::InsertTxn(Box::new(txn(1, 1)))]).unwrap();
    assert_eq!(store.txn(1).unwrap().unwrap().stan, 1);
    assert_eq!(store.terminals().unwrap().len(), 1);

    let admin = Session::connect(&config.url);
    let sessions = |ssl: bool| -> i64 {
        admin
            .runtime
            .block_on(admin.client.query_one(
                "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1 AND s.ssl = $2",
                &[&schema, &ssl],
            ))
            .unwrap()
            .get(0)
    };
    assert!(sessions(true) >= 2, "the writer and a reader over TLS");
    assert_eq!(sessions(false), 0, "a session of the store in the clear");
    store.close();

    let refused = store::PgStore::open(&store::PgConfig {
        url: tls(&other_ca),
        ..config.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("invalid peer certificate") && refused.contains("UnknownIssuer"),
        "{refused}"
    );
    // The right CA, but a host name the certificate does not carry (the address connected to
    // given apart, as `hostaddr`).
    let start = config.url.find('@').map_or(0, |at| at + 1);
    let port = config.url[start..]
        .split(['/', '?'])
        .next()
        .and_then(|host| host.rsplit_once(':'))
        .map(|(_, port)| port.to_owned())
        .unwrap();
    let renamed = tls(&ca).replacen(
        &config.url[start..start + config.url[start..].find('/').unwrap()],
        &format!("db.example:{port}"),
        1,
    ) + "&hostaddr=127.0.0.1";
    let refused = store::PgStore::open(&store::PgConfig {
        url: renamed,
        ..config
    })
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("certificate not valid for name \"db.example\""),
        "{refused}"
    );
}

/// The writer sends a group's writes pipelined, taking one changed row for granted for each.
/// Groups made to form behind a lock the test holds show the cases where that is not so: a
/// statement that legitimately changes no row (a reversal queued twice), and a job that fails
/// (a sign-in of an unknown terminal). Each group still commits exactly what statement-by-
/// statement execution does; and a group of thousands of statements, more answers than the
/// connection buffers unread, goes through.
#[test]
fn on_postgres_pipelined_groups_commit_what_plain_execution_would() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    let schema = config.schema.clone().unwrap();
    let store = db.open();
    provision(&store);
    let blocker = 4_000_i64;
    approved_purchase(&*store, blocker);
    let other = Session::connect(&config.url);
    // Holds the writer on `blocker`'s row while `jobs` queue, so that they form one group.
    let grouped = |jobs: Vec<Vec<Record>>| {
        other
            .run(&format!(
                "SET search_path TO {schema}; BEGIN; \
                 SELECT id FROM transactions WHERE id = {blocker} FOR UPDATE"
            ))
            .unwrap();
        let first = store
            .submit(vec![Record::Refunded { id: blocker }])
            .unwrap();
        other.wait_blocked();
        let waiters: Vec<_> = jobs
            .into_iter()
            .map(|records| store.submit(records).unwrap())
            .collect();
        other.run("COMMIT").unwrap();
        first.wait().unwrap();
        waiters.into_iter().map(|w| w.wait()).collect::<Vec<_>>()
    };
    let enqueue = |txn_id: i64, reason: &str| Record::SafEnqueue {
        txn_id,
        issuer: "ICBC".into(),
        reason: reason.into(),
        next_attempt_ms: 100,
    };
    let event = |txn_id: i64| {
        Record::Event(EventRow {
            txn_id,
            at_ms: 1,
            kind: "received".into(),
            detail: String::new(),
        })
    };

    // Queued twice in one group: the second insert changes no row and keeps the first.
    let results = grouped(vec![
        vec![Record::InsertTxn(Box::new(txn(10, 10))), enqueue(10, "98")],
        vec![enqueue(10, "96")],
        vec![Record::InsertTxn(Box::new(txn(11, 11))), approved(11)],
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.reversal(10).unwrap().unwrap().reason, "98");
    assert_eq!(store.txn(11).unwrap().unwrap().state, TxnState::Approved);

    // A failing job fails alone; its neighbours commit.
    let unknown = Record::SignIn {
        tid: "99999999".into(),
        at_ms: 1,
        batch_no: 1,
        keys: WrappedKeys {
            pik: vec![1],
            mak: vec![2],
            tdk: None,
        },
    };
    let results = grouped(vec![
        vec![Record::InsertTxn(Box::new(txn(12, 12))), event(12)],
        vec![unknown],
        vec![approved(10)],
    ]);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StoreError::Constraint { .. })));
    assert_eq!(store.events(12).unwrap().len(), 1);
    assert_eq!(store.txn(10).unwrap().unwrap().state, TxnState::Approved);

    // 1,500 purchases with an event and an outcome each: 4,500 statements in one pipeline.
    let ids = 100..1_600_i64;
    let results = grouped(
        ids.clone()
            .map(|id| {
                let stan = u32::try_from(id).unwrap();
                vec![
                    Record::InsertTxn(Box::new(txn(id, stan))),
                    event(id),
                    approved(id),
                ]
            })
            .collect(),
    );
    assert!(results.iter().all(Result::is_ok));
    for id in ids {
        assert_eq!(store.txn(id).unwrap().unwrap().state, TxnState::Approved);
    }
    drop(other);
    store.close();
}

/// A journal opened read-only (`shoudan audit --database`): nothing is created where there
/// is none, reads work where there is one, and no write gets through.
#[test]
fn on_postgres_a_read_only_open_creates_and_writes_nothing() {
    let Some(db) = Db::postgres() else { return };
    let config = db.pg_config().unwrap();
    assert!(store::PgStore::open_read_only(&config).is_err());
    let status = store::PgStore::inspect(&config).unwrap();
    assert!(!status.exists, "{status:?}");
    let store = db.open();
    provision(&store);
    approved_purchase(&*store, 1);
    store.close();
    let reader = store::PgStore::open_read_only(&config).unwrap();
    assert_eq!(reader.txn(1).unwrap().unwrap().state, TxnState::Approved);
    assert!(matches!(
        reader.submit(vec![Record::Refunded { id: 1 }]),
        Err(StoreError::WriterGone)
    ));
}

/// A terminal written as new is refused when its TID is held already, and the one held stays
/// as it was: two provisionings of one TID at once cannot both write it.
fn a_new_terminal_is_refused_over_one_held(db: &Db) {
    let store = db.open();
    provision(&store);
    let other = TerminalRow {
        tmk_wrapped: vec![9, 9, 9],
        batch_no: 7,
        ..terminal()
    };
    let refused = store
        .submit(vec![Record::InsertTerminal(Box::new(other))])
        .unwrap()
        .wait();
    assert!(
        matches!(refused, Err(StoreError::Constraint { .. })),
        "{refused:?}"
    );
    let held = store.terminal("10000001").unwrap().unwrap();
    assert_eq!((held.tmk_wrapped, held.batch_no), (vec![1, 2, 3], 1));
    let new = TerminalRow {
        tid: "10000002".into(),
        ..terminal()
    };
    store
        .submit(vec![Record::InsertTerminal(Box::new(new))])
        .unwrap()
        .wait()
        .unwrap();
    assert!(store.terminal("10000002").unwrap().is_some());
    store.close();
}

fn provision(store: &backend::Opened) {
    store
        .submit(vec![
            Record::UpsertMerchant(merchant()),
            Record::UpsertTerminal(Box::new(terminal())),
        ])
        .unwrap()
        .wait()
        .unwrap();
}

/// A journal the store makes is its owner's alone, and so are its log and shared memory:
/// sealed and masked card numbers, bound accounts, password hashes. One that was there keeps
/// the mode its owner gave it.
#[test]
fn a_new_journal_and_its_log_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .submit(vec![Record::Event(store::EventRow {
            txn_id: 1,
            at_ms: 1,
            kind: "k".into(),
            detail: String::new(),
        })])
        .unwrap()
        .wait()
        .unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for name in ["shoudan.db", "shoudan.db-wal", "shoudan.db-shm"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    store.close();
    drop(store);
    let path = dir.path().join("shoudan.db");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = open(&dir);
    assert_eq!(mode("shoudan.db"), 0o640, "an operator's own mode is kept");
    store.close();
}

#[test]
fn migrations_apply_once_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.close();
    drop(store);
    let store = open(&dir);
    store.close();
    let conn = rusqlite::Connection::open(dir.path().join("shoudan.db")).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let known: Vec<i64> = store::schema::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, known);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(&dir).close();
    let conn = rusqlite::Connection::open(dir.path().join("shoudan.db")).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let error = SqliteStore::open(&SqliteConfig::new(dir.path().join("shoudan.db"))).unwrap_err();
    assert!(matches!(error, StoreError::SchemaTooNew { found: 999, .. }));
}

/// Migration 12 sums the clearing lines already written into the new totals: a journal cleared
/// before it shows the same settlement figures after it.
#[test]
fn the_clearing_totals_migration_sums_the_lines_already_cleared() {
    use store::settlement::{ClearingLineRow, SettlementRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let line =
        |txn_id: i64, mid: &str, date: &str, amount_fen: i64, fee_fen: i64| ClearingLineRow {
            txn_id,
            seq: 1,
            mid: mid.into(),
            clearing_date: date.into(),
            kind: TxnKind::Purchase,
            card_class: "debit".into(),
            issuer: "ICBC".into(),
            amount_fen,
            fee_fen,
            run_at_ms: 0,
        };
    store
        .submit(vec![Record::Settlement(SettlementRecord::ClearingLines(
            vec![
                line(1, "m", "20261101", 1_000, 6),
                line(2, "m", "20261101", 2_000, 11),
                line(3, "n", "20261101", 500, 3),
                line(4, "m", "20261102", -300, -2),
            ],
        ))])
        .unwrap()
        .wait()
        .unwrap();
    store.close();
    drop(store);
    let migration = store::schema::MIGRATIONS
        .iter()
        .find(|m| m.version == 12)
        .unwrap();
    let backfill = &migration.sql[migration.sql.find("INSERT INTO clearing_totals").unwrap()..];
    let conn = rusqlite::Connection::open(dir.path().join("shoudan.db")).unwrap();
    conn.execute_batch(backfill).unwrap();
    drop(conn);
    let store = open(&dir);
    let totals: Vec<(String, String, u64, i64, i64)> = store
        .clearing_totals(None, 10)
        .unwrap()
        .into_iter()
        .map(|t| (t.clearing_date, t.mid, t.lines, t.gross_fen, t.fee_fen))
        .collect();
    assert_eq!(
        totals,
        [
            ("20261102".into(), "m".into(), 1, -300, -2),
            ("20261101".into(), "m".into(), 2, 3_000, 17),
            ("20261101".into(), "n".into(), 1, 500, 3),
        ]
    );
}

/// Migration 24 gives a payout already retrying when it was first sent: its reference's
/// `sending` event (the newest, a released payout's reference being a new one), else its
/// creation; a payout never sent, or done with, gets none.
#[test]
fn the_first_attempt_migration_dates_a_retrying_payout_from_its_reference() {
    use store::settlement::{PayoutEventRow, PayoutRow, PayoutState};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let payout = |key: &str, state: PayoutState, attempts: u32| {
        Record::Settlement(SettlementRecord::Payout(PayoutRow {
            key: key.into(),
            mid: "m".into(),
            payout_date: "20261124".into(),
            cutoff_date: "20261123".into(),
            amount_fen: 100,
            state,
            attempts,
            next_attempt_ms: 0,
            account_version: 1,
            account_masked: "6222****0123".into(),
            bank_reference: None,
            sent_to: None,
            failure: None,
            first_attempt_ms: None,
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
        }))
    };
    let event = |id: i64, key: &str, kind: &str, at_ms: i64| {
        Record::Settlement(SettlementRecord::PayoutEvent(PayoutEventRow {
            id,
            at_ms,
            mid: "m".into(),
            payout_key: key.into(),
            kind: kind.into(),
            failure: None,
            detail: String::new(),
        }))
    };
    store
        .submit(vec![
            // Sent, held, released, sent again: retrying since the second `sending`.
            payout("released", PayoutState::Pending, 2),
            event(1, "released", "sending", 2_000),
            event(2, "released", "sending", 9_000),
            event(3, "released", "retry", 9_500),
            // Retrying from before references were fixed ahead: no `sending` event.
            payout("older", PayoutState::Pending, 3),
            payout("unsent", PayoutState::Pending, 0),
            payout("sent", PayoutState::Sent, 1),
            event(4, "sent", "sending", 3_000),
        ])
        .unwrap()
        .wait()
        .unwrap();
    store.close();
    drop(store);
    let migration = store::schema::MIGRATIONS
        .iter()
        .find(|m| m.version == 24)
        .unwrap();
    let backfill = &migration.sql[migration.sql.find("UPDATE payouts").unwrap()..];
    let conn = rusqlite::Connection::open(dir.path().join("shoudan.db")).unwrap();
    conn.execute_batch(backfill).unwrap();
    drop(conn);
    let store = open(&dir);
    let first = |key: &str| store.payout(key).unwrap().unwrap().first_attempt_ms;
    assert_eq!(first("released"), Some(9_000));
    assert_eq!(first("older"), Some(1_000));
    assert_eq!(first("unsent"), None);
    assert_eq!(first("sent"), None);
}

/// Migration 26 holds one waiting refund application per sale: of a pair already opened at
/// once, the one an operator approved whose refund's outcome is not known stands, else the
/// first; the others are closed as rejected; applications of other sales, closed ones and
/// executed ones stay as they were, and a second waiting one is refused after.
#[test]
fn the_waiting_application_migration_closes_the_later_of_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    open(&dir).close();
    let conn = rusqlite::Connection::open(dir.path().join("shoudan.db")).unwrap();
    conn.execute_batch("DROP INDEX cases_refund_waiting")
        .unwrap();
    let case = |id: i64, txn: i64, state: &str, code: Option<&str>| {
        conn.execute(
            "INSERT INTO cases (id, mid, kind, state, txn_id, title, refund_fen, refund_code,
                 created_at_ms, updated_at_ms, version)
             VALUES (?1, 'm', 'refund_application', ?2, ?3, 't', 100, ?4, 0, 0, 1)",
            rusqlite::params![id, state, txn, code],
        )
        .unwrap();
    };
    case(1, 7, "open", None);
    case(2, 7, "waiting_merchant", None);
    case(3, 7, "open", Some("51"));
    case(4, 8, "open", None);
    case(5, 8, "rejected", None);
    case(6, 9, "open", Some("00"));
    case(7, 9, "open", None);
    case(11, 10, "open", None);
    case(12, 10, "waiting_issuer", Some("98"));
    let migration = store::schema::MIGRATIONS
        .iter()
        .find(|m| m.version == 26)
        .unwrap();
    conn.execute_batch(migration.sql).unwrap();
    let state = |id: i64| -> (String, Option<String>, i64) {
        conn.query_row(
            "SELECT state, resolution, version FROM cases WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    };
    assert_eq!(state(1), ("open".into(), None, 1));
    for later in [2, 3, 11] {
        let (state, resolution, version) = state(later);
        assert_eq!((state.as_str(), version), ("rejected", 2));
        assert!(resolution.unwrap().contains("which stands"));
    }
    for kept in [4, 6, 7] {
        assert_eq!(state(kept).0, "open");
    }
    assert_eq!(state(12).0, "waiting_issuer");
    assert_eq!(state(5).0, "rejected");
    let again = conn.execute(
        "INSERT INTO cases (id, mid, kind, state, txn_id, title, created_at_ms, updated_at_ms,
             version)
         VALUES (10, 'm', 'refund_application', 'open', 8, 't', 0, 0, 1)",
        [],
    );
    assert!(again.is_err(), "a second waiting application was written");
}

#[test]
fn a_read_only_open_checks_it_is_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a database, but long enough to have a header's length",
    )
    .unwrap();
    assert!(SqliteStore::open_read_only(&text).is_err());
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute("CREATE TABLE t (x INTEGER)", [])
        .unwrap();
    assert!(SqliteStore::open_read_only(&other).is_err());
    assert!(SqliteStore::open_read_only(&dir.path().join("missing.db")).is_err());
    open(&dir).close();
    let journal = SqliteStore::open_read_only(&dir.path().join("shoudan.db")).unwrap();
    assert!(journal.merchants().unwrap().is_empty());
}

/// A read-only open leaves the file as it found it: a copy in rollback-journal mode (a
/// `VACUUM INTO` backup) stays so, and no log is made beside it.
#[test]
fn a_read_only_open_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    open(&dir).close();
    let path = dir.path().join("shoudan.db");
    let copy = dir.path().join("copy.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let mode = |path: &std::path::Path| std::fs::read(path).unwrap()[18];
    assert_eq!(mode(&copy), 1, "VACUUM INTO makes a rollback-journal copy");
    let before = std::fs::read(&copy).unwrap();
    let journal = SqliteStore::open_read_only(&copy).unwrap();
    assert!(journal.merchants().unwrap().is_empty());
    assert!(journal.terminals().unwrap().is_empty());
    drop(journal);
    assert!(std::fs::read(&copy).unwrap() == before, "the file changed");
    assert!(!dir.path().join("copy.db-wal").exists());
}

fn terminals_merchants_and_sign_in_round_trip(db: &Db) {
    let store = db.open();
    provision(&store);
    assert_eq!(store.merchants().unwrap(), vec![merchant()]);
    assert_eq!(store.merchant(&merchant().mid).unwrap(), Some(merchant()));
    assert_eq!(store.merchant("nope").unwrap(), None);
    assert_eq!(store.terminal("10000001").unwrap(), Some(terminal()));
    assert_eq!(store.terminal("nope").unwrap(), None);

    let keys = WrappedKeys {
        pik: vec![4; 24],
        mak: vec![5; 24],
        tdk: None,
    };
    store
        .submit(vec![Record::SignIn {
            tid: "10000001".into(),
            at_ms: 42,
            batch_no: 7,
            keys: keys.clone(),
        }])
        .unwrap()
        .wait()
        .unwrap();
    let signed = store.terminal("10000001").unwrap().unwrap();
    assert_eq!(signed.working_keys, Some(keys));
    assert_eq!((signed.batch_no, signed.last_sign_in_ms), (7, Some(42)));

    store
        .submit(vec![Record::SignOff {
            tid: "10000001".into(),
        }])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        store.terminal("10000001").unwrap().unwrap().working_keys,
        None
    );

    // An update of a terminal that does not exist fails that submission alone.
    let error = store
        .submit(vec![Record::Batch {
            tid: "99999999".into(),
            batch_no: 2,
        }])
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(error, StoreError::Constraint { .. }));
}

fn transactions_outcomes_and_events_round_trip(db: &Db) {
    let store = db.open();
    provision(&store);
    let row = txn(1, 11);
    store
        .submit(vec![
            Record::InsertTxn(Box::new(row.clone())),
            Record::Event(EventRow {
                txn_id: 1,
                at_ms: 5,
                kind: "received".into(),
                detail: "purchase of 123.45 received".into(),
            }),
        ])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(store.txn(1).unwrap(), Some(row.clone()));
    assert_eq!(
        store.txns_by_key("10000001", 1, 11).unwrap(),
        vec![row.clone()]
    );
    assert_eq!(store.txn_by_rrn("000000000001").unwrap(), Some(row.clone()));

    let outcome = Outcome {
        id: 1,
        state: TxnState::Approved,
        response_code: "00".into(),
        auth_code: Some("A12345".into()),
        settlement_date: Some("1123".into()),
        issuer_answered_at_ms: Some(2_000),
        answered_at_ms: 2_001,
    };
    store
        .submit(vec![
            Record::Outcome(outcome),
            Record::Event(EventRow {
                txn_id: 1,
                at_ms: 6,
                kind: "approved".into(),
                detail: "approved by ICBC".into(),
            }),
        ])
        .unwrap()
        .wait()
        .unwrap();
    let stored = store.txn(1).unwrap().unwrap();
    assert_eq!(stored.state, TxnState::Approved);
    assert_eq!(stored.response_code.as_deref(), Some("00"));
    assert_eq!(stored.auth_code.as_deref(), Some("A12345"));
    assert_eq!(stored.answered_at_ms, Some(2_001));
    let kinds = || -> Vec<String> {
        store
            .events(1)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(kinds(), ["received", "approved"]);
    // Events of one millisecond come back in the order written, on both backends.
    let same_ms = |kind: &str| {
        Record::Event(EventRow {
            txn_id: 1,
            at_ms: 7,
            kind: kind.into(),
            detail: String::new(),
        })
    };
    store
        .submit(vec![same_ms("zeta"), same_ms("alpha"), same_ms("mu")])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(kinds(), ["received", "approved", "zeta", "alpha", "mu"]);
    // Still when the rows move in the table: on PostgreSQL an updated row (or one a
    // VACUUM FULL or CLUSTER rewrote) lies elsewhere, and `ctid` alone put "zeta" last.
    if let Some(config) = db.pg_config() {
        let schema = config.schema.clone().unwrap();
        Session::connect(&config.url)
            .run(&format!(
                "UPDATE {schema}.events SET detail = detail WHERE kind = 'zeta'"
            ))
            .unwrap();
        assert_eq!(kinds(), ["received", "approved", "zeta", "alpha", "mu"]);
    }
    // A state change from a state the row has left: refused, the row as it was.
    let moved = store
        .submit(vec![Record::StateFrom {
            id: 1,
            from: TxnState::InFlight,
            state: TxnState::Reversed,
        }])
        .unwrap()
        .wait();
    assert!(
        matches!(moved, Err(store::StoreError::Constraint { .. })),
        "{moved:?}"
    );
    assert_eq!(store.txn(1).unwrap().unwrap().state, TxnState::Approved);
    assert_eq!(store.txns_since("20261123").unwrap().len(), 1);
    assert!(store.txns_since("20261124").unwrap().is_empty());
    assert_eq!(store.txns_by_batch("10000001", 1).unwrap().len(), 1);
    assert_eq!(store.txns_in_state(TxnState::Approved).unwrap().len(), 1);
    assert!(store.txns_in_state(TxnState::InFlight).unwrap().is_empty());
}

/// A SQLite journal has no node places: it is one node's.
#[test]
fn a_sqlite_journal_holds_no_node_places() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(open(&dir).node_places_held().unwrap(), None);
}

fn a_failing_submission_fails_alone_and_leaves_no_trace(db: &Db) {
    let store = db.open();
    provision(&store);
    let first = store
        .submit(vec![Record::InsertTxn(Box::new(txn(1, 1)))])
        .unwrap();
    // Same RRN as the first: the RRN is unique, so this whole submission must roll back,
    // including its event, while the neighbours in the same group commit.
    let mut clash = txn(2, 2);
    clash.rrn = Some("000000000001".into());
    let second = store
        .submit(vec![
            Record::Event(EventRow {
                txn_id: 2,
                at_ms: 1,
                kind: "received".into(),
                detail: String::new(),
            }),
            Record::InsertTxn(Box::new(clash)),
        ])
        .unwrap();
    let third = store
        .submit(vec![Record::InsertTxn(Box::new(txn(3, 3)))])
        .unwrap();
    first.wait().unwrap();
    assert!(matches!(second.wait(), Err(StoreError::Constraint { .. })));
    third.wait().unwrap();
    assert!(store.txn(2).unwrap().is_none());
    assert!(store.events(2).unwrap().is_empty());
    assert!(store.txn(3).unwrap().is_some());
}

fn group_commit_under_concurrency_then_durable_across_reopen(db: &Db) {
    let store = Arc::new(db.open());
    provision(&store);
    const TASKS: i64 = 16;
    const PER_TASK: i64 = 200;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                for n in 0..PER_TASK {
                    let id = task * PER_TASK + n + 1;
                    let stan = u32::try_from(id).unwrap();
                    store
                        .submit(vec![Record::InsertTxn(Box::new(txn(id, stan)))])
                        .unwrap()
                        .await
                        .unwrap();
                    // Durable means readable from another connection at once.
                    assert!(store.txn(id).unwrap().is_some());
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    store.close();
    drop(store);
    let store = db.open();
    let rows = store.txns_since("20261123").unwrap();
    assert_eq!(rows.len(), usize::try_from(TASKS * PER_TASK).unwrap());
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=TASKS * PER_TASK).collect::<Vec<_>>());
    let mut streamed = Vec::new();
    store
        .each_txn_since("20261123", &mut |r| streamed.push(r.id))
        .unwrap();
    assert_eq!(streamed, ids);
}

/// The rows since a clearing date come by date, then by id within it, one at a time.
fn rows_since_a_date_come_by_date_then_id(db: &Db) {
    let store = db.open();
    let on = |id: i64, date: &str| {
        let mut row = txn(id, u32::try_from(id).unwrap());
        row.clearing_date = date.into();
        Record::InsertTxn(Box::new(row))
    };
    store
        .submit(vec![
            on(4, "20261123"),
            on(1, "20261124"),
            on(3, "20261124"),
            on(2, "20261123"),
            on(5, "20261122"),
        ])
        .unwrap()
        .wait()
        .unwrap();
    let since = |date: &str| {
        let mut ids = Vec::new();
        store.each_txn_since(date, &mut |r| ids.push(r.id)).unwrap();
        ids
    };
    assert_eq!(since("20261123"), [2, 4, 1, 3]);
    assert_eq!(since("20261124"), [1, 3]);
    assert!(since("20261125").is_empty());
}

fn counters_never_repeat_across_reopen(db: &Db) {
    let store = db.open();
    assert_eq!(store.reserve("rrn", 100).unwrap().wait().unwrap(), 1);
    assert_eq!(store.reserve("rrn", 100).unwrap().wait().unwrap(), 101);
    assert_eq!(store.reserve("trace", 10).unwrap().wait().unwrap(), 1);
    store.close();
    drop(store);
    let store = db.open();
    assert_eq!(store.reserve("rrn", 1).unwrap().wait().unwrap(), 201);
}

/// Transaction `id` with its reversal queued (to ICBC, reason 98), due at `due_ms`.
fn reversal_due(store: &backend::Opened, id: i64, due_ms: i64) {
    store
        .submit(vec![
            Record::InsertTxn(Box::new(txn(id, u32::try_from(id).unwrap()))),
            Record::SafEnqueue {
                txn_id: id,
                issuer: "ICBC".into(),
                reason: "98".into(),
                next_attempt_ms: due_ms,
            },
        ])
        .unwrap()
        .wait()
        .unwrap();
}

/// Claims are the same on both backends: the earliest due first, transactions due at once
/// taken in transaction order when the limit falls among them, and handed back in
/// transaction order.
fn reversal_claims_are_ordered_alike(db: &Db) {
    let store = db.open();
    provision(&store);
    // Txn 1 due at 200, txns 2 and 3 at 100: a claim of two takes 2 and 3, one of one takes 2.
    for (id, due) in [(1, 200), (2, 100), (3, 100)] {
        reversal_due(&store, id, due);
    }
    let claim = |now_ms, limit| {
        store
            .claim_reversals(now_ms, 1_000, limit)
            .unwrap()
            .wait()
            .unwrap()
            .iter()
            .map(|i| i.txn_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(claim(250, 1), [2]);
    // Leased to 1,250 and 1,300.
    assert_eq!(claim(300, 5), [1, 3]);
    let pending: Vec<i64> = store
        .reversals_in_state(SafState::Pending)
        .unwrap()
        .iter()
        .map(|i| i.txn_id)
        .collect();
    assert_eq!(pending, [2, 1, 3], "by lease, then transaction");
}

fn reversal_queue_claim_retry_and_ack(db: &Db) {
    let store = db.open();
    provision(&store);
    for id in 1..=3 {
        reversal_due(&store, id, 100 * id);
    }
    // Enqueueing again keeps the first entry.
    store
        .submit(vec![Record::SafEnqueue {
            txn_id: 1,
            issuer: "ICBC".into(),
            reason: "96".into(),
            next_attempt_ms: 0,
        }])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(store.reversal(1).unwrap().unwrap().reason, "98");

    // At 250 the first two are due; claiming leases them so a second claim does not see them.
    let claimed = store
        .claim_reversals(250, 1_000, 10)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(claimed.iter().map(|i| i.txn_id).collect::<Vec<_>>(), [1, 2]);
    assert!(claimed.iter().all(|i| i.next_attempt_ms == 1_250));
    assert!(
        store
            .claim_reversals(250, 1_000, 10)
            .unwrap()
            .wait()
            .unwrap()
            .is_empty()
    );

    store
        .submit(vec![
            Record::SafDone {
                txn_id: 1,
                state: SafState::Acked,
                at_ms: 260,
                answer: Some("00".into()),
            },
            Record::SafRetry {
                txn_id: 2,
                next_attempt_ms: 300,
                last_error: "link down".into(),
            },
        ])
        .unwrap()
        .wait()
        .unwrap();
    let claimed = store
        .claim_reversals(300, 1_000, 10)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(claimed.iter().map(|i| i.txn_id).collect::<Vec<_>>(), [2, 3]);
    let second = claimed.iter().find(|i| i.txn_id == 2).unwrap();
    assert_eq!(second.attempts, 1);
    assert_eq!(second.last_error.as_deref(), Some("link down"));
    assert_eq!(store.reversals_in_state(SafState::Acked).unwrap().len(), 1);
    // A later answer to the same reversal (another node's resend, refused as a duplicate)
    // does not undo the acknowledgement.
    store
        .submit(vec![Record::SafDone {
            txn_id: 1,
            state: SafState::Refused,
            at_ms: 270,
            answer: Some("94".into()),
        }])
        .unwrap()
        .wait()
        .unwrap();
    let first = store.reversal(1).unwrap().unwrap();
    assert_eq!(
        (first.state, first.last_error.as_deref()),
        (SafState::Acked, Some("00"))
    );
    assert_eq!(
        store.reversals_in_state(SafState::Pending).unwrap().len(),
        2
    );
    // Counted in the database: all of a state, or a merchant's within a window of receipt
    // (transaction 2 received at 1,002, transaction 3 at 1,003).
    assert_eq!(
        store.count_reversals_in_state(SafState::Pending).unwrap(),
        2
    );
    assert_eq!(store.count_reversals_in_state(SafState::Acked).unwrap(), 1);
    let of = |mid: &str, from_ms: i64, to_ms: i64| {
        store
            .count_reversals_of_merchant(SafState::Pending, mid, from_ms, to_ms)
            .unwrap()
    };
    assert_eq!(of("898110048990001", 1_000, 1_004), 2);
    assert_eq!(of("898110048990001", 1_003, 1_004), 1);
    assert_eq!(of("898110048990001", 1_004, 2_000), 0);
    assert_eq!(of("898110059420002", 1_000, 1_004), 0);

    // Leases survive a restart: after reopening, nothing is due before the lease ends.
    store.close();
    drop(store);
    let store = db.open();
    assert!(
        store
            .claim_reversals(1_000, 1_000, 10)
            .unwrap()
            .wait()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_reversals(1_300, 1_000, 10)
            .unwrap()
            .wait()
            .unwrap()
            .len(),
        2
    );
    // Counted in the database for the metrics: those resent so often, and the refusals that
    // stand (not those answered 25: the issuer never had the request).
    let pending = store.reversals_in_state(SafState::Pending).unwrap();
    let tried = |n: u32| pending.iter().filter(|i| i.attempts >= n).count() as u64;
    assert!(tried(1) > 0 && tried(1) > tried(1_000));
    for n in [0, 1, 2, 3, 1_000] {
        assert_eq!(
            store
                .count_reversals_attempted(SafState::Pending, n)
                .unwrap(),
            tried(n),
            "{n}"
        );
    }
    // Listed a page at a time, the oldest transaction first.
    let mut ids: Vec<i64> = pending.iter().map(|i| i.txn_id).collect();
    ids.sort_unstable();
    let page = |n: u32, limit: u32| {
        store
            .reversals_attempted(SafState::Pending, n, limit)
            .unwrap()
            .iter()
            .map(|i| i.txn_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(0, 10), ids);
    assert_eq!(Some(page(0, 1).as_slice()), ids.get(..1));
    assert!(page(1_000, 10).is_empty());
    assert_eq!(store.count_reversals_refused_standing().unwrap(), 0);
    store
        .submit(vec![
            Record::SafDone {
                txn_id: 2,
                state: SafState::Refused,
                at_ms: 1_400,
                answer: Some("25".into()),
            },
            Record::SafDone {
                txn_id: 3,
                state: SafState::Refused,
                at_ms: 1_400,
                answer: Some("12".into()),
            },
        ])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(store.count_reversals_refused_standing().unwrap(), 1);
    assert_eq!(
        store.count_reversals_in_state(SafState::Refused).unwrap(),
        2
    );
    let standing = store.reversals_refused_standing(10).unwrap();
    assert_eq!(standing.iter().map(|i| i.txn_id).collect::<Vec<_>>(), [3]);
    assert!(store.reversals_refused_standing(0).unwrap().is_empty());
    // Transaction 2's reversal refused again later, with a code that stands: listed before
    // 3's, refused earlier, though its transaction is older (ids need not follow time when
    // several nodes take them in blocks).
    store
        .submit(vec![Record::SafDone {
            txn_id: 2,
            state: SafState::Refused,
            at_ms: 1_500,
            answer: Some("05".into()),
        }])
        .unwrap()
        .wait()
        .unwrap();
    let standing = store.reversals_refused_standing(10).unwrap();
    assert_eq!(
        standing.iter().map(|i| i.txn_id).collect::<Vec<_>>(),
        [2, 3]
    );
    let done: Vec<Option<i64>> = standing.iter().map(|i| i.done_at_ms).collect();
    assert_eq!(done, [Some(1_500), Some(1_400)], "when each was refused");
}

#[test]
fn a_full_database_fails_the_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::new(dir.path().join("small.db"));
    // Enough for the schema, not for thousands of transactions.
    config.max_page_count = Some(128);
    let store = SqliteStore::open(&config).unwrap();
    let mut failure = None;
    for id in 1..=5_000 {
        let result = store
            .submit(vec![Record::InsertTxn(Box::new(txn(id, 1)))])
            .unwrap()
            .wait();
        if let Err(error) = result {
            failure = Some(error);
            break;
        }
    }
    assert!(
        matches!(failure, Some(StoreError::Full { .. })),
        "{failure:?}"
    );
}

fn writes_after_close_are_refused(db: &Db) {
    let store = db.open();
    store.close();
    let result = store.submit(vec![Record::UpsertMerchant(merchant())]);
    let error = match result {
        Ok(pending) => pending.wait().unwrap_err(),
        Err(error) => error,
    };
    assert_eq!(error, StoreError::WriterGone);
}

fn dropping_the_store_still_commits_what_was_queued(db: &Db) {
    let store = db.open();
    provision(&store);
    let pending: Vec<_> = (1..=200)
        .map(|id| {
            store
                .submit(vec![Record::InsertTxn(Box::new(txn(id, 1)))])
                .unwrap()
        })
        .collect();
    drop(store);
    for durable in pending {
        durable.wait().unwrap();
    }
    let store = db.open();
    assert_eq!(store.txns_since("20261123").unwrap().len(), 200);
}

/// A card used more often than one read returns: the read keeps the newest rows, still oldest
/// first; a merchant's rows page newest first, and the latest payment before a given one is
/// found among them all.
fn a_busy_card_reads_its_newest_transactions(db: &Db) {
    let store = db.open();
    provision(&store);
    let total: i64 = 10_005;
    let rows: Vec<Record> = (1..=total)
        .map(|id| Record::InsertTxn(Box::new(txn(id, u32::try_from(id).unwrap()))))
        .collect();
    for chunk in rows.chunks(500) {
        store.submit(chunk.to_vec()).unwrap().wait().unwrap();
    }
    let read = store.txns_of_card_at(&[7; 32], "898110048990001").unwrap();
    assert!(
        store
            .txns_of_card_at(&[7; 32], "898110048990002")
            .unwrap()
            .is_empty()
    );
    assert_eq!(read.len(), 10_000);
    assert_eq!(read.first().map(|r| r.id), Some(6));
    assert_eq!(read.last().map(|r| r.id), Some(total));
    assert!(
        read.iter()
            .zip(read.iter().skip(1))
            .all(|(a, b)| a.received_at_ms < b.received_at_ms)
    );
    // A merchant's rows newest first, from a point back, as a search pages through them.
    let newest = |before: i64, limit: u32| -> Vec<i64> {
        store
            .txns_of_merchant_newest(
                "898110048990001",
                1_000 + 9_003,
                (1_000 + before, before),
                limit,
            )
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(newest(9_006, 2), [9_005, 9_004]);
    assert_eq!(newest(9_004, 10), [9_003]);
    // The duplicate check's question: the latest approved payment before a given one.
    let approve = |id: i64| Record::State {
        id,
        state: TxnState::Approved,
    };
    store
        .submit(vec![approve(9_000), approve(9_004), approve(9_005)])
        .unwrap()
        .wait()
        .unwrap();
    let latest = |from_ms: i64, before: (i64, i64), amount_fen: i64, mid: &str| {
        store
            .latest_payment_of_card(&[7; 32], mid, amount_fen, from_ms, before)
            .unwrap()
            .map(|r| r.id)
    };
    let mid = "898110048990001";
    // Counted in the database: everything is in the range's first hour.
    let mut tallies: Vec<(TxnState, i64, i64, i64)> = store
        .tally_of_merchant(mid, 1_000, 1_000 + 7_200_000)
        .unwrap()
        .into_iter()
        .map(|t| {
            assert_eq!(
                (t.tid.as_str(), t.kind, t.response_code),
                ("10000001", TxnKind::Purchase, None)
            );
            (t.state, t.hour, t.count, t.amount_fen)
        })
        .collect();
    tallies.sort_by_key(|t| t.2);
    assert_eq!(
        tallies,
        [
            (TxnState::Approved, 0, 3, 3 * 12_345),
            (TxnState::InFlight, 0, total - 3, (total - 3) * 12_345)
        ]
    );
    assert_eq!(latest(0, (1_000 + 9_005, 9_005), 12_345, mid), Some(9_004));
    assert_eq!(latest(0, (1_000 + 9_004, 9_004), 12_345, mid), Some(9_000));
    assert_eq!(
        latest(1_000 + 9_001, (1_000 + 9_004, 9_004), 12_345, mid),
        None
    );
    assert_eq!(latest(0, (1_000 + 9_005, 9_005), 12_344, mid), None);
    assert_eq!(
        latest(0, (1_000 + 9_005, 9_005), 12_345, "898110048990002"),
        None
    );
}

/// A reversed void's or completion's original is given back only from voided or completed,
/// whatever the writer believed: from approved, declined or reversed nothing changes.
fn a_give_back_moves_only_a_voided_or_completed_original(db: &Db) {
    let store = db.open();
    provision(&store);
    let states = [
        (1, TxnState::Voided, TxnState::Approved),
        (2, TxnState::Completed, TxnState::Approved),
        (3, TxnState::Approved, TxnState::Approved),
        (4, TxnState::Declined, TxnState::Declined),
        (5, TxnState::Reversed, TxnState::Reversed),
    ];
    let rows = states
        .iter()
        .map(|&(id, state, _)| {
            Record::InsertTxn(Box::new(TxnRow {
                state,
                ..txn(id, u32::try_from(id).unwrap())
            }))
        })
        .collect();
    store.submit(rows).unwrap().wait().unwrap();
    let gives = states
        .iter()
        .map(|&(id, _, _)| Record::GiveBack { id })
        .collect();
    store.submit(gives).unwrap().wait().unwrap();
    for (id, _, after) in states {
        assert_eq!(store.txn(id).unwrap().unwrap().state, after, "row {id}");
    }
}

/// The acknowledgement of a void's reversal taken twice (two nodes whose leases overlapped):
/// the second does not give back an original voided again since by another void.
fn a_give_back_twice_leaves_an_original_voided_again(db: &Db) {
    let store = db.open();
    provision(&store);
    approved_purchase(&*store, 1);
    let void = |id: i64| vec![link(id, TxnKind::PurchaseVoid, 1, 12_345)];
    let takes = |id: i64| {
        vec![
            approved(id),
            Record::TakeOriginal {
                id: 1,
                by: id,
                state: TxnState::Voided,
            },
        ]
    };
    let acked = |id: i64| {
        vec![
            Record::State {
                id,
                state: TxnState::Reversed,
            },
            Record::GiveBack { id: 1 },
        ]
    };
    write(&*store, void(2)).unwrap();
    write(&*store, takes(2)).unwrap();
    write(&*store, acked(2)).unwrap();
    assert_eq!(store.txn(1).unwrap().unwrap().state, TxnState::Approved);
    write(&*store, void(3)).unwrap();
    write(&*store, takes(3)).unwrap();
    assert_eq!(store.txn(1).unwrap().unwrap().state, TxnState::Voided);
    write(&*store, acked(2)).unwrap();
    assert_eq!(
        store.txn(1).unwrap().unwrap().state,
        TxnState::Voided,
        "the second void stands: its original stays voided"
    );
}

fn batches_are_listed_with_their_last_clearing_date(db: &Db) {
    let store = db.open();
    provision(&store);
    let rows = [
        (1, 1, 1, "20261101"),
        (2, 1, 2, "20261103"),
        (3, 2, 1, "20261104"),
        // Outside the span on either side: before it, and on its end date.
        (4, 3, 1, "20261031"),
        (5, 4, 1, "20261105"),
        (6, 2, 2, "20261105"),
    ];
    let records = rows
        .iter()
        .map(|&(id, batch_no, stan, date)| {
            Record::InsertTxn(Box::new(TxnRow {
                batch_no,
                clearing_date: date.into(),
                ..txn(id, stan)
            }))
        })
        .collect();
    store.submit(records).unwrap().wait().unwrap();
    let batches = store.batches_cleared("20261101", "20261105").unwrap();
    let span = |batch_no, last: &str, stan_min, stan_max| BatchSpan {
        tid: "10000001".into(),
        batch_no,
        last_clearing_date: last.into(),
        stan_min,
        stan_max,
    };
    assert_eq!(
        batches,
        [span(1, "20261103", 1, 2), span(2, "20261104", 1, 1)]
    );
    assert!(
        store
            .batches_cleared("20261106", "20261110")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.stans_of_batch("10000001", 1, "").unwrap(),
        Some((1, 2))
    );
    assert_eq!(
        store.stans_of_batch("10000001", 2, "").unwrap(),
        Some((1, 2))
    );
    assert_eq!(store.stans_of_batch("10000001", 5, "").unwrap(), None);
    // Only the rows cleared since the date: older ones under the number are another batch.
    assert_eq!(
        store.stans_of_batch("10000001", 2, "20261105").unwrap(),
        Some((2, 2))
    );
    assert_eq!(
        store.stans_of_batch("10000001", 1, "20261104").unwrap(),
        None
    );
}

/// Writes `records` and waits for them.
fn write(store: &dyn Store, records: Vec<Record>) -> Result<(), StoreError> {
    store.submit(records)?.wait()
}

fn approved(id: i64) -> Record {
    Record::Outcome(Outcome {
        id,
        state: TxnState::Approved,
        response_code: "00".into(),
        auth_code: Some("A00001".into()),
        settlement_date: None,
        issuer_answered_at_ms: Some(3_000),
        answered_at_ms: 3_001,
    })
}

/// An approved purchase of 123.45.
fn approved_purchase(store: &dyn Store, id: i64) {
    let stan = u32::try_from(id).unwrap();
    write(store, vec![Record::InsertTxn(Box::new(txn(id, stan)))]).unwrap();
    write(store, vec![approved(id)]).unwrap();
}

/// A void, completion or refund of `original` on its way to the issuer.
fn link(id: i64, kind: TxnKind, original: i64, amount_fen: i64) -> Record {
    let mut row = txn(id, u32::try_from(id).unwrap());
    row.kind = kind;
    row.original_id = Some(original);
    row.amount_fen = amount_fen;
    Record::InsertTxn(Box::new(row))
}

/// A reversal of `id` queued, as the switch writes it with a timeout or a terminal reversal.
fn queued_reversal(id: i64) -> Record {
    Record::SafEnqueue {
        txn_id: id,
        issuer: "ICBC".into(),
        reason: "98".into(),
        next_attempt_ms: 0,
    }
}

/// The issuer's answer to a queued reversal: `state` with response code `answer`.
fn reversal_done(id: i64, state: SafState, answer: &str) -> Record {
    Record::SafDone {
        txn_id: id,
        state,
        at_ms: 4_000,
        answer: Some(answer.into()),
    }
}

fn refunded(store: &dyn Store, id: i64) -> i64 {
    store.txn(id).unwrap().unwrap().refunded_fen
}

/// An outcome lands only on a row in flight (or reversed meanwhile by the terminal): the
/// sweep's timed-out outcome for a row settled since it read it is refused with what came
/// with it, so an approval is never marked timed out and reversed.
fn an_outcome_lands_only_on_a_row_in_flight(db: &Db) {
    let opened = db.open();
    provision(&opened);
    let store: &dyn Store = &*opened;
    approved_purchase(store, 1);
    let swept = write(
        store,
        vec![
            Record::Outcome(Outcome {
                id: 1,
                state: TxnState::TimedOut,
                response_code: "96".into(),
                auth_code: None,
                settlement_date: None,
                issuer_answered_at_ms: None,
                answered_at_ms: 5_000,
            }),
            queued_reversal(1),
        ],
    );
    assert!(swept.is_err(), "{swept:?}");
    let row = store.txn(1).unwrap().unwrap();
    assert_eq!(row.state, TxnState::Approved);
    assert_eq!(row.response_code.as_deref(), Some("00"));
    assert_eq!(store.reversal(1).unwrap(), None);
    // Reversed by the terminal while in flight: the outcome is recorded, the row stays
    // reversed.
    write(store, vec![Record::InsertTxn(Box::new(txn(2, 2)))]).unwrap();
    write(
        store,
        vec![Record::State {
            id: 2,
            state: TxnState::Reversed,
        }],
    )
    .unwrap();
    write(store, vec![approved(2)]).unwrap();
    let row = store.txn(2).unwrap().unwrap();
    assert_eq!(row.state, TxnState::Reversed);
    assert_eq!(row.response_code.as_deref(), Some("00"));
}

fn linked_requests_claim_their_original_in_the_journal(db: &Db) {
    let opened = db.open();
    provision(&opened);
    let store: &dyn Store = &*opened;
    approved_purchase(store, 1);
    // 100.00 of the 123.45 in flight: 30.00 more would exceed it, and a void is refused.
    write(store, vec![link(2, TxnKind::Refund, 1, 10_000)]).unwrap();
    let over = write(store, vec![link(3, TxnKind::Refund, 1, 3_000)]);
    assert_eq!(
        over,
        Err(StoreError::LinkRefused(LinkRefusal::ExceedsAmount))
    );
    assert_eq!(store.txn(3).unwrap(), None, "a refused claim leaves no row");
    let void = write(store, vec![link(4, TxnKind::PurchaseVoid, 1, 12_345)]);
    assert_eq!(void, Err(StoreError::LinkRefused(LinkRefusal::Taken)));
    // The 100.00 times out, its reversal queued as the switch writes it: the issuer may have
    // credited the card, so it still holds its amount until the reversal is acknowledged.
    write(
        store,
        vec![
            Record::Outcome(Outcome {
                id: 2,
                state: TxnState::TimedOut,
                response_code: "98".into(),
                auth_code: None,
                settlement_date: None,
                issuer_answered_at_ms: None,
                answered_at_ms: 3_002,
            }),
            queued_reversal(2),
        ],
    )
    .unwrap();
    let pending = write(store, vec![link(3, TxnKind::Refund, 1, 3_000)]);
    assert_eq!(
        pending,
        Err(StoreError::LinkRefused(LinkRefusal::ReversalPending)),
        "a refund whose reversal is still queued holds its amount"
    );
    // Acknowledged: what it held is free, with nothing to release.
    write(store, vec![reversal_done(2, SafState::Acked, "00")]).unwrap();
    write(store, vec![link(3, TxnKind::Refund, 1, 3_000)]).unwrap();
    write(store, vec![approved(3), Record::Refunded { id: 1 }]).unwrap();
    assert_eq!(refunded(store, 1), 3_000);
    // An original of its own with a reversal queued (approved in the journal, its answer
    // taken for lost): nothing links to it until the reversal is answered.
    approved_purchase(store, 40);
    write(store, vec![queued_reversal(40)]).unwrap();
    assert_eq!(
        write(store, vec![link(41, TxnKind::Refund, 40, 1_000)]),
        Err(StoreError::LinkRefused(LinkRefusal::ReversalPending))
    );
    assert_eq!(
        write(store, vec![link(42, TxnKind::PurchaseVoid, 40, 12_345)]),
        Err(StoreError::LinkRefused(LinkRefusal::ReversalPending))
    );
    // The rest, to the fen; then nothing more.
    write(store, vec![link(5, TxnKind::Refund, 1, 9_345)]).unwrap();
    write(store, vec![approved(5), Record::Refunded { id: 1 }]).unwrap();
    assert_eq!(refunded(store, 1), 12_345);
    write(store, vec![Record::Refunded { id: 1 }]).unwrap();
    assert_eq!(refunded(store, 1), 12_345, "a replay changes nothing");
    let more = write(store, vec![link(6, TxnKind::Refund, 1, 1)]);
    assert_eq!(
        more,
        Err(StoreError::LinkRefused(LinkRefusal::ExceedsAmount))
    );
    // A refund reversed by the terminal is no longer counted as refunded; its amount comes
    // back once the issuer takes the reversal, or refuses it with 25 (it never had it).
    write(
        store,
        vec![
            Record::State {
                id: 5,
                state: TxnState::Reversed,
            },
            queued_reversal(5),
            Record::Refunded { id: 1 },
        ],
    )
    .unwrap();
    assert_eq!(refunded(store, 1), 3_000);
    let pending = write(store, vec![link(6, TxnKind::Refund, 1, 1)]);
    assert_eq!(
        pending,
        Err(StoreError::LinkRefused(LinkRefusal::ReversalPending))
    );
    // What would exceed the original without it is refused as such.
    let over = write(store, vec![link(6, TxnKind::Refund, 1, 9_346)]);
    assert_eq!(
        over,
        Err(StoreError::LinkRefused(LinkRefusal::ExceedsAmount))
    );
    // Refused other than with 25: the issuer may still have the refund, and it stands, for
    // good: refused as over the original (61), not as waiting on a reversal (09, for ever).
    write(store, vec![reversal_done(5, SafState::Refused, "12")]).unwrap();
    let refused = write(store, vec![link(6, TxnKind::Refund, 1, 1)]);
    assert_eq!(
        refused,
        Err(StoreError::LinkRefused(LinkRefusal::ExceedsAmount))
    );
    // Refused with 25, the issuer never had it: the amount is free.
    write(
        store,
        vec![Record::SafDone {
            txn_id: 5,
            state: SafState::Refused,
            at_ms: 4_001,
            answer: Some("25".into()),
        }],
    )
    .unwrap();
    write(store, vec![link(6, TxnKind::Refund, 1, 1)]).unwrap();

    // A void in flight takes its original whole; approved, the original is voided.
    approved_purchase(store, 7);
    write(store, vec![link(8, TxnKind::PurchaseVoid, 7, 12_345)]).unwrap();
    for (id, kind, amount) in [
        (9, TxnKind::PurchaseVoid, 12_345),
        (10, TxnKind::Refund, 100),
    ] {
        let taken = write(store, vec![link(id, kind, 7, amount)]);
        assert_eq!(taken, Err(StoreError::LinkRefused(LinkRefusal::Taken)));
    }
    write(
        store,
        vec![
            approved(8),
            Record::State {
                id: 7,
                state: TxnState::Voided,
            },
        ],
    )
    .unwrap();
    let late = write(store, vec![link(11, TxnKind::Refund, 7, 100)]);
    assert_eq!(late, Err(StoreError::LinkRefused(LinkRefusal::NotApproved)));
    // A refusal recorded as such (declined) claims nothing.
    let mut declined = txn(12, 12);
    declined.kind = TxnKind::Refund;
    declined.original_id = Some(7);
    declined.state = TxnState::Declined;
    write(store, vec![Record::InsertTxn(Box::new(declined))]).unwrap();
}

/// Two nodes (two stores on one PostgreSQL database; on SQLite two threads on one store)
/// refund one original at the same instant, each for more than half of it: one passes. Two
/// that fit, approved at the same instant, both count in the original's refunded total.
fn two_refunds_at_once_cannot_both_take_an_original(db: &Db) {
    let first = db.open();
    let second = db.is_postgres().then(|| db.open());
    let (one, two): (&dyn Store, &dyn Store) = (&*first, second.as_deref().unwrap_or(&*first));
    let node = |n: i64| if n == 2 { two } else { one };
    provision(&first);
    for round in 0..40_i64 {
        let original = 100 + round * 3;
        approved_purchase(one, original);
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let racers: Vec<_> = (1..=2_i64)
                .map(|n| {
                    let (node, barrier) = (node(n), &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        write(
                            node,
                            vec![link(original + n, TxnKind::Refund, original, 7_000)],
                        )
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let passed = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(passed, 1, "round {round}: {results:?}");
        assert!(results.contains(&Err(StoreError::LinkRefused(LinkRefusal::ExceedsAmount))));
    }
    // Two refunds that fit, approved on the two nodes at once: the total counts both.
    for round in 0..40_i64 {
        let original = 1_000 + round * 3;
        approved_purchase(one, original);
        for n in 1..=2 {
            write(
                one,
                vec![link(original + n, TxnKind::Refund, original, 3_000)],
            )
            .unwrap();
        }
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for n in 1..=2_i64 {
                let (node, barrier) = (node(n), &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let records = vec![approved(original + n), Record::Refunded { id: original }];
                    write(node, records).unwrap();
                });
            }
        });
        assert_eq!(refunded(one, original), 6_000, "round {round}");
    }
}

/// A request's row under a key claimed in the journal (`Record::ClaimKey`, written by nodes
/// sharing one journal), as the switch claims it: a request alone under its key, a reversal
/// alone if it names no original.
fn claimed(id: i64, row: TxnRow) -> Vec<Record> {
    let reversal = row.kind == TxnKind::Reversal;
    vec![
        Record::ClaimKey {
            tid: row.tid.clone(),
            batch_no: row.batch_no,
            stan: row.stan,
            reversal,
            alone: !reversal || row.original_id.is_none(),
            since: "20261120".into(),
        },
        Record::InsertTxn(Box::new(TxnRow { id, ..row })),
    ]
}

/// A terminal key is taken once per batch: a second request under it fails with the first's
/// id and writes nothing; a reversal has a key of its own; rows cleared before `since`, or
/// received before the batch number's last settlement closed an earlier batch, are another
/// batch's. Two nodes claiming one key at the same instant: one wins.
fn a_request_key_is_claimed_once_per_batch(db: &Db) {
    let first = db.open();
    let second = db.is_postgres().then(|| db.open());
    let (one, two): (&dyn Store, &dyn Store) = (&*first, second.as_deref().unwrap_or(&*first));
    provision(&first);
    write(one, claimed(1, txn(1, 5))).unwrap();
    assert_eq!(
        write(one, claimed(2, txn(2, 5))),
        Err(StoreError::KeyTaken { id: 1 })
    );
    assert_eq!(one.txn(2).unwrap(), None, "the loser's row is not written");
    let reversal = |id| TxnRow {
        kind: TxnKind::Reversal,
        mti: "0400".into(),
        rrn: None,
        original_id: Some(1),
        ..txn(id, 5)
    };
    write(one, claimed(3, reversal(3))).unwrap();
    assert_eq!(
        write(one, claimed(4, reversal(4))),
        Err(StoreError::KeyTaken { id: 3 })
    );
    // Another batch number, another STAN: free.
    write(
        one,
        claimed(
            5,
            TxnRow {
                batch_no: 2,
                ..txn(5, 5)
            },
        ),
    )
    .unwrap();
    write(one, claimed(6, txn(6, 6))).unwrap();
    // An earlier month's row under the key: another batch.
    let old = TxnRow {
        clearing_date: "20261001".into(),
        ..txn(7, 7)
    };
    write(one, vec![Record::InsertTxn(Box::new(old))]).unwrap();
    write(one, claimed(8, txn(8, 7))).unwrap();
    // Batch 3 settled after its row 9 was received: row 10 under the same key opens a new
    // batch of the number; once it is in, the key is taken again.
    write(
        one,
        vec![Record::InsertTxn(Box::new(TxnRow {
            batch_no: 3,
            ..txn(9, 9)
        }))],
    )
    .unwrap();
    let settled = |at_ms, result, opened_after_ms| {
        Record::Settlement(SettlementRecord::BatchSettled(BatchSettlementRow {
            tid: "10000001".into(),
            batch_no: 3,
            settled_at_ms: at_ms,
            result,
            host_totals: String::new(),
            terminal_totals: String::new(),
            upload_done_at_ms: None,
            opened_after_ms,
        }))
    };
    write(one, vec![settled(1_009, 1, None)]).unwrap();
    write(
        one,
        claimed(
            10,
            TxnRow {
                batch_no: 3,
                ..txn(10, 9)
            },
        ),
    )
    .unwrap();
    assert_eq!(
        write(
            one,
            claimed(
                11,
                TxnRow {
                    batch_no: 3,
                    ..txn(11, 9)
                }
            )
        ),
        Err(StoreError::KeyTaken { id: 10 })
    );
    // An unreadable settlement (result 3) closes nothing: the batch starts where it found
    // it starting.
    write(one, vec![settled(1_050, 3, Some(1_009))]).unwrap();
    assert_eq!(
        write(
            one,
            claimed(
                12,
                TxnRow {
                    batch_no: 3,
                    ..txn(12, 9)
                }
            )
        ),
        Err(StoreError::KeyTaken { id: 10 })
    );

    // A request and its reversal crossing between nodes: the reversal that found no original
    // journalled first, the request is refused; the request first, a reversal that found
    // no original is refused (its resend will find it). Nothing of the loser is written.
    let orphan_reversal = |id, stan| TxnRow {
        kind: TxnKind::Reversal,
        mti: "0400".into(),
        rrn: None,
        original_id: None,
        ..txn(id, stan)
    };
    write(one, claimed(13, orphan_reversal(13, 13))).unwrap();
    assert_eq!(
        write(two, claimed(14, txn(14, 13))),
        Err(StoreError::KeyCrossed { id: 13 })
    );
    assert_eq!(one.txn(14).unwrap(), None);
    write(one, claimed(15, txn(15, 15))).unwrap();
    assert_eq!(
        write(two, claimed(16, orphan_reversal(16, 15))),
        Err(StoreError::KeyCrossed { id: 15 })
    );
    assert_eq!(one.txn(16).unwrap(), None);
    // A reversal naming its original is the usual order, not a crossing.
    write(
        two,
        claimed(
            16,
            TxnRow {
                original_id: Some(15),
                ..orphan_reversal(16, 15)
            },
        ),
    )
    .unwrap();

    // Odd rounds under a terminal ID no terminal row has (the back office's virtual one):
    // its claims must wait for each other all the same.
    for round in 0..20_i64 {
        let (a, b) = (100 + round * 2, 101 + round * 2);
        let stan = u32::try_from(a).unwrap();
        let tid = if round % 2 == 0 {
            "10000001"
        } else {
            "BACKOFFC"
        };
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let racers = [(one, a), (two, b)].map(|(node, id)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let row = TxnRow {
                        tid: tid.into(),
                        ..txn(id, stan)
                    };
                    write(node, claimed(id, row))
                })
            });
            racers.map(|r| r.join().unwrap()).to_vec()
        });
        let won = match results.as_slice() {
            [Ok(()), Err(_)] => Some(a),
            [Err(_), Ok(())] => Some(b),
            _ => None,
        };
        assert!(won.is_some(), "round {round}: one must win: {results:?}");
        let won = won.unwrap();
        assert!(
            results.contains(&Err(StoreError::KeyTaken { id: won })),
            "round {round}: {results:?}"
        );
    }
}

/// An approved void or completion takes its original only while the journal holds it
/// approved: one reversed meanwhile (by another node) leaves the original approved.
fn an_original_is_taken_only_by_a_link_that_stands(db: &Db) {
    let store = db.open();
    provision(&store);
    for (original, link_id, kind, reversed, after) in [
        (1, 2, TxnKind::PurchaseVoid, false, TxnState::Voided),
        (3, 4, TxnKind::PurchaseVoid, true, TxnState::Approved),
        (5, 6, TxnKind::Completion, false, TxnState::Completed),
        (7, 8, TxnKind::Completion, true, TxnState::Approved),
    ] {
        approved_purchase(&*store, original);
        write(&*store, vec![link(link_id, kind, original, 12_345)]).unwrap();
        if reversed {
            let records = vec![Record::State {
                id: link_id,
                state: TxnState::Reversed,
            }];
            write(&*store, records).unwrap();
        }
        let state = if kind == TxnKind::Completion {
            TxnState::Completed
        } else {
            TxnState::Voided
        };
        let records = vec![
            approved(link_id),
            Record::TakeOriginal {
                id: original,
                by: link_id,
                state,
            },
        ];
        write(&*store, records).unwrap();
        assert_eq!(
            store.txn(original).unwrap().unwrap().state,
            after,
            "{kind:?}"
        );
    }
}

/// A completion's void re-opens its pre-authorisation; while that void's reversal is queued
/// (it may yet be taken, completing the pre-authorisation again) nothing else completes or
/// voids the pre-authorisation; the reversal taken completes it again, but only a
/// pre-authorisation still approved.
fn a_completion_voids_reversal_completes_its_pre_authorisation_again(db: &Db) {
    let opened = db.open();
    provision(&opened);
    let store: &dyn Store = &*opened;
    let state = |id: i64| store.txn(id).unwrap().unwrap().state;
    // Pre-authorisation 1, completed by 2.
    approved_purchase(store, 1);
    write(
        store,
        vec![Record::State {
            id: 1,
            state: TxnState::Approved,
        }],
    )
    .unwrap();
    write(store, vec![link(2, TxnKind::Completion, 1, 10_000)]).unwrap();
    write(
        store,
        vec![
            approved(2),
            Record::TakeOriginal {
                id: 1,
                by: 2,
                state: TxnState::Completed,
            },
        ],
    )
    .unwrap();
    // 3 voids the completion, and the pre-authorisation stands again.
    write(store, vec![link(3, TxnKind::CompletionVoid, 2, 10_000)]).unwrap();
    write(
        store,
        vec![
            approved(3),
            Record::TakeOriginal {
                id: 2,
                by: 3,
                state: TxnState::Voided,
            },
            Record::GiveBack { id: 1 },
        ],
    )
    .unwrap();
    assert_eq!((state(1), state(2)), (TxnState::Approved, TxnState::Voided));
    // Its answer lost, the void is reversed (queued): nothing else takes the pre-authorisation
    // until the issuer answers that reversal.
    write(
        store,
        vec![
            Record::State {
                id: 3,
                state: TxnState::Reversed,
            },
            queued_reversal(3),
        ],
    )
    .unwrap();
    for (id, kind, fen) in [
        (4, TxnKind::Completion, 5_000),
        (5, TxnKind::PreAuthVoid, 12_345),
    ] {
        assert_eq!(
            write(store, vec![link(id, kind, 1, fen)]),
            Err(StoreError::LinkRefused(LinkRefusal::ReversalPending)),
            "{kind:?}"
        );
    }
    // Completed again only once the completion is approved again.
    write(store, vec![Record::CompleteAgain { id: 1, by: 2 }]).unwrap();
    assert_eq!(state(1), TxnState::Approved);
    write(
        store,
        vec![
            reversal_done(3, SafState::Acked, "00"),
            Record::GiveBack { id: 2 },
            Record::CompleteAgain { id: 1, by: 2 },
        ],
    )
    .unwrap();
    assert_eq!(
        (state(1), state(2)),
        (TxnState::Completed, TxnState::Approved)
    );
    // A pre-authorisation voided meanwhile keeps that, though its completion stands.
    approved_purchase(store, 10);
    write(store, vec![link(11, TxnKind::Completion, 10, 1_000)]).unwrap();
    write(store, vec![approved(11)]).unwrap();
    write(
        store,
        vec![Record::State {
            id: 10,
            state: TxnState::Voided,
        }],
    )
    .unwrap();
    write(store, vec![Record::CompleteAgain { id: 10, by: 11 }]).unwrap();
    assert_eq!(state(10), TxnState::Voided);
}

on_both!(
    a_completion_voids_reversal_completes_its_pre_authorisation_again,
    a_new_terminal_is_refused_over_one_held,
    a_request_key_is_claimed_once_per_batch,
    an_original_is_taken_only_by_a_link_that_stands,
    opposite_lock_orders_on_two_nodes_fail_no_write,
    linked_requests_claim_their_original_in_the_journal,
    an_outcome_lands_only_on_a_row_in_flight,
    two_refunds_at_once_cannot_both_take_an_original,
    rows_since_a_date_come_by_date_then_id,
    batches_are_listed_with_their_last_clearing_date,
    a_give_back_moves_only_a_voided_or_completed_original,
    a_give_back_twice_leaves_an_original_voided_again,
    a_busy_card_reads_its_newest_transactions,
    dropping_the_store_still_commits_what_was_queued,
    terminals_merchants_and_sign_in_round_trip,
    transactions_outcomes_and_events_round_trip,
    a_failing_submission_fails_alone_and_leaves_no_trace,
    records_added_to_an_open_write_commit_with_it,
    group_commit_under_concurrency_then_durable_across_reopen,
    counters_never_repeat_across_reopen,
    reversal_queue_claim_retry_and_ack,
    reversal_claims_are_ordered_alike,
    writes_after_close_are_refused,
);

/// Reads from many threads at once share a bounded pool: the server never sees more than
/// `PG_READ_CONNECTIONS_MAX` read connections (each one is a server process; the pool used to
/// open more under load and close them again), and every read succeeds.
#[test]
fn on_postgres_concurrent_reads_share_a_bounded_pool() {
    let Some(db) = Db::postgres() else { return };
    let mut config = db.pg_config().unwrap();
    let name = format!("pool_{}", std::process::id());
    let separator = if config.url.contains('?') { '&' } else { '?' };
    config.url = format!("{}{separator}application_name={name}", config.url);
    let store = backend::Opened::Pg(store::PgStore::open(&config).unwrap());
    provision(&store);
    let other = Session::connect(&db.pg_config().unwrap().url);
    let done = std::sync::atomic::AtomicBool::new(false);
    let most = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..48)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..30 {
                        assert_eq!(store.terminals().unwrap().len(), 1);
                    }
                })
            })
            .collect();
        let watcher = scope.spawn(|| {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let row = other
                    .runtime
                    .block_on(other.client.query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&name],
                    ))
                    .unwrap();
                most = most.max(row.get::<_, i64>(0));
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            most
        });
        for reader in readers {
            reader.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap()
    });
    let bound = i64::try_from(store::PG_READ_CONNECTIONS_MAX).unwrap() + 1;
    assert!(
        most <= bound,
        "{most} connections at once, at most {bound} (the readers and the writer)"
    );
    assert!(most > 1, "the watcher saw no read connection");
    store.close();
}
