//! A settle run over a clearing day of 1,000,000 journal transactions in a real SQLite file
//! (WAL, `synchronous=FULL`), through `settle_date` as `shoudan settle` runs it: the journal read,
//! per-transaction fees and clearing lines, per-merchant balanced postings, written as the run
//! writes them. Meanwhile a second connection commits a one-row write every 10 ms, as a live
//! node's switch does beside `shoudan settle`, and the bench reports how long those writes waited
//! for the journal's write lock: while the run holds it, the switch's writer waits.
//!
//! `cargo bench -p settlement --bench clearing` (release); `-- 200000` for a smaller day, a
//! second number for the lines per commit (`settlement::LINES_PER_COMMIT` otherwise) and a third
//! for the pause between parts in ms (`settlement::PAUSE_BETWEEN_PARTS`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use domain::IssuerDirectory;
use settlement::{ClearingConfig, LINES_PER_COMMIT, PAUSE_BETWEEN_PARTS, settle_date_with};
use store::{PanAtRest, Record, SqliteConfig, SqliteStore, Store, TxnKind, TxnRow, TxnState};

/// Journal rows per submission while the day is loaded (not timed).
const LOAD_CHUNK: usize = 50_000;
const MERCHANTS: usize = 1_000;
const ISSUERS: [&str; 6] = ["ICBC", "ABC", "CCB", "BOC", "CMB", "VISA"];
const BINS: [&str; 6] = ["622202", "622848", "625965", "621661", "622588", "411111"];
const DATE: &str = "20261123";
/// The store's own busy timeout: how long the switch's writer waits for the lock before its
/// commit fails.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5_000);
/// How long an authorisation waits for the journal before the terminal is answered 96
/// (`journal_wait_ms`'s default).
const JOURNAL_WAIT: Duration = Duration::from_millis(3_000);

fn row(id: i64) -> TxnRow {
    let n = usize::try_from(id).unwrap();
    // Mostly purchases, some voids and refunds, a few reversed.
    let (kind, state) = match n % 20 {
        0 => (TxnKind::PurchaseVoid, TxnState::Approved),
        1 => (TxnKind::Refund, TxnState::Approved),
        2 => (TxnKind::Purchase, TxnState::Reversed),
        3 => (TxnKind::Purchase, TxnState::Voided),
        _ => (TxnKind::Purchase, TxnState::Approved),
    };
    let bin = BINS[n % BINS.len()];
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: format!("8983100581{:05}", n % MERCHANTS),
        batch_no: 1,
        stan: 1,
        kind,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: i64::try_from(100 + (n * 7_919) % 500_000).unwrap(),
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: Vec::new(),
            fingerprint: Vec::new(),
            masked: String::new(),
            last4: String::new(),
            bin: bin.into(),
        }),
        issuer: Some(ISSUERS[n % ISSUERS.len()].into()),
        rrn: None,
        host_trace: None,
        auth_code: None,
        response_code: None,
        state,
        request_hash: Vec::new(),
        original_id: None,
        refunded_fen: 0,
        field60: None,
        host_date: None,
        clearing_date: DATE.into(),
        settlement_date: None,
        received_at_ms: 0,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

/// What the second writer saw: each write's wait for the write lock (`BEGIN IMMEDIATE`) and
/// its whole time to its commit (which may also checkpoint the log the run grew), and the
/// writes that failed (the lock not had within the busy timeout).
struct Probe {
    waits: Vec<Duration>,
    writes: Vec<Duration>,
    failed: usize,
}

/// Commits a one-row write every 10 ms on a connection of its own until `stop`.
fn probe(path: &Path, stop: &AtomicBool) -> Probe {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(BUSY_TIMEOUT).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS bench_probe (at INTEGER NOT NULL)")
        .unwrap();
    let mut probe = Probe {
        waits: Vec::new(),
        writes: Vec::new(),
        failed: 0,
    };
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
        let started = Instant::now();
        let locked = conn.execute_batch("BEGIN IMMEDIATE");
        probe.waits.push(started.elapsed());
        let done = locked
            .and_then(|()| conn.execute_batch("INSERT INTO bench_probe (at) VALUES (1); COMMIT;"));
        if done.is_err() {
            probe.failed += 1;
            let _ = conn.execute_batch("ROLLBACK");
        }
        probe.writes.push(started.elapsed());
    }
    probe
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = numbers.first().copied().unwrap_or(1_000_000);
    let per_commit = numbers.get(1).copied().unwrap_or(LINES_PER_COMMIT);
    let pause = numbers
        .get(2)
        .map_or(PAUSE_BETWEEN_PARTS, |ms| Duration::from_millis(*ms as u64));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let store = SqliteStore::open(&SqliteConfig::new(&path)).unwrap();
    let directory = IssuerDirectory::embedded().unwrap();

    let t = Instant::now();
    let mut next = 1i64;
    while usize::try_from(next - 1).unwrap() < total {
        let n = LOAD_CHUNK.min(total - usize::try_from(next - 1).unwrap());
        let rows: Vec<Record> = (next..next + i64::try_from(n).unwrap())
            .map(|id| Record::InsertTxn(Box::new(row(id))))
            .collect();
        next += i64::try_from(n).unwrap();
        store.submit(rows).unwrap().wait().unwrap();
    }
    let load_s = t.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || probe(&path, &stop))
    };
    // Let the second writer start before the run does.
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let config = ClearingConfig {
        lines_per_commit: per_commit,
        pause_between_parts: pause,
    };
    let report = settle_date_with(&store, &directory, DATE, 0, &config).unwrap();
    let settle_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let mut probe = prober.join().unwrap();

    let audit = settlement::audit(&store).unwrap();
    assert!(audit.balanced, "ledger does not balance");
    probe.waits.sort();
    probe.writes.sort();
    let at = |of: &[Duration], q: f64| {
        let i = ((of.len() as f64 - 1.0) * q).round() as usize;
        of.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let over = |limit: Duration| probe.writes.iter().filter(|w| **w > limit).count();
    println!(
        "{total} transactions ({load_s:.1} s to load, not counted): settle_date in {settle_s:.2} s, \
         {} clearing lines, {} postings, {per_commit} lines per commit, \
         {} ms between; {:.0} transactions/s; \
         ledger audit over the store: balanced",
        report.new_lines,
        report.new_postings,
        pause.as_millis(),
        total as f64 / settle_s
    );
    println!(
        "second writer: {} writes; lock wait p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; whole \
         write p99 {:.1} ms, max {:.1} ms; {} over the journal wait ({} s), {} failed (busy \
         timeout, {} s)",
        probe.waits.len(),
        at(&probe.waits, 0.5),
        at(&probe.waits, 0.99),
        at(&probe.waits, 1.0),
        at(&probe.writes, 0.99),
        at(&probe.writes, 1.0),
        over(JOURNAL_WAIT),
        JOURNAL_WAIT.as_secs(),
        probe.failed,
        BUSY_TIMEOUT.as_secs()
    );
}
