//! `kill -9` of the real `shoudan demo` under load, restart on the same data dir, then the audit:
//! every approval a terminal saw is journalled approved and is an approval at the issuer, nothing
//! stays in flight or queued for reversal, each terminal's unanswered request, reversed by the
//! terminal, does not stand approved, and `shoudan audit` finds nothing in doubt. Once with
//! the journal in the data dir's SQLite file, once on PostgreSQL (`demo --database`; skipped,
//! loudly, without `SHOUDAN_PG_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paycrypto::{Key, KeyScheme, MacAlgorithm};
use serde_json::Value;
use store::{PgConfig, PgStore, SafState, SqliteStore, Store, TxnKind, TxnState};
use terminal::{Card, Request, Terminal, TerminalConfig, TxnType};

mod cli;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");
/// Terminals of the test's own load at most (besides the demo's background traffic).
const LOAD_TERMINALS_MAX: usize = 6;

/// Kills the demo if the test fails before stopping it, so no child outlives the test.
struct Demo(Option<Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the demo under test keeps its journal.
enum Journal {
    /// The data dir's switch.db.
    Sqlite,
    Postgres(PgConfig),
}

impl Journal {
    /// The options naming it, for `shoudan demo` and `shoudan audit`.
    fn args(&self) -> Vec<String> {
        match self {
            Journal::Sqlite => Vec::new(),
            Journal::Postgres(config) => vec![
                "--database".into(),
                config.url.clone(),
                "--database-schema".into(),
                config.schema.clone().unwrap(),
            ],
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Journal::Sqlite => "SQLite",
            Journal::Postgres(_) => "PostgreSQL",
        }
    }

    /// Opened read-only, as `shoudan audit` opens it.
    fn open(&self, dir: &Path) -> Box<dyn Store> {
        match self {
            Journal::Sqlite => {
                Box::new(SqliteStore::open_read_only(&dir.join("switch.db")).unwrap())
            }
            Journal::Postgres(config) => Box::new(PgStore::open_read_only(config).unwrap()),
        }
    }
}

/// `shoudan demo` on `dir` and `journal`, on free ports.
fn demo(dir: &Path, journal: &Journal) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "demo",
        "--terminal-port",
        "0",
        "--http-port",
        "0",
        "--data-dir",
    ])
    .arg(dir)
    .args(journal.args())
    .stdout(Stdio::null());
    cmd
}

/// Starts the demo with `extra` options and waits for its fixtures.
fn start(dir: &Path, journal: &Journal, extra: &[&str]) -> Demo {
    let _ = std::fs::remove_file(dir.join("fixtures.json"));
    let mut cmd = demo(dir, journal);
    cmd.stderr(Stdio::null()).args(extra);
    let child = Demo(Some(cmd.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("fixtures.json").exists() {
        assert!(Instant::now() < deadline, "demo did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut demo: Demo) {
    let mut child = demo.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn audit(dir: &Path, journal: &Journal) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(["audit", "--json", "--data-dir"])
        .arg(dir)
        .args(journal.args())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (out.status.code().unwrap_or(-1), report)
}

fn fixtures(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("fixtures.json")).unwrap()).unwrap()
}

fn config(fixture: &Value, next_stan: u32) -> TerminalConfig {
    let scheme: KeyScheme = fixture["key_scheme"].as_str().unwrap().parse().unwrap();
    TerminalConfig {
        addr: format!(
            "{}:{}",
            fixture["host"].as_str().unwrap(),
            fixture["port"].as_u64().unwrap()
        )
        .parse()
        .unwrap(),
        tid: fixture["tid"].as_str().unwrap().to_owned(),
        mid: fixture["mid"].as_str().unwrap().to_owned(),
        tmk: Key::from_hex(scheme.tmk_algorithm(), fixture["tmk"].as_str().unwrap()).unwrap(),
        scheme,
        mac: fixture["mac"]
            .as_str()
            .unwrap()
            .parse::<MacAlgorithm>()
            .unwrap(),
        batch: 1,
        next_stan,
        timeout: Duration::from_secs(5),
    }
}

fn healthy_cards(fixtures: &Value) -> Vec<Card> {
    fixtures["cards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["label"] == "healthy" && c["purchase_code"] == "00")
        .map(|c| Card {
            pan: c["pan"].as_str().unwrap().parse().unwrap(),
            expiry: Some(c["expiry"].as_str().unwrap().to_owned()),
            pin: Some(zeroize::Zeroizing::new(
                c["pin"].as_str().unwrap().to_owned(),
            )),
        })
        .collect()
}

/// What the test's terminals saw: RRNs answered approved, and requests left unanswered.
#[derive(Default)]
struct Seen {
    approved: Vec<String>,
    unanswered: usize,
    answered: usize,
    /// Each terminal's request left unanswered, kept to reverse it (as a terminal saves it).
    lost: Vec<(String, terminal::SavedRequest)>,
}

/// Sends purchases from one terminal until its connection fails (the switch was killed).
async fn load(fixture: Value, cards: Vec<Card>, seen: Arc<Mutex<Seen>>, offset: usize) {
    let mut t = Terminal::connect(config(&fixture, 1)).await.unwrap();
    assert_eq!(t.sign_in().await.unwrap().code, "00");
    for i in 0.. {
        let request = Request {
            txn: TxnType::Purchase,
            card: cards[(i + offset) % cards.len()].clone(),
            amount: 100,
            original: None,
        };
        match t.transact(&request).await {
            Ok(response) => {
                let mut seen = seen.lock().unwrap();
                seen.answered += 1;
                if response.approved() {
                    seen.approved.push(response.rrn.unwrap());
                }
            }
            Err(_) => {
                let mut seen = seen.lock().unwrap();
                seen.unanswered += 1;
                if let Some(saved) = t.last_request() {
                    seen.lost.push((t.tid().to_owned(), saved.clone()));
                }
                return;
            }
        }
    }
}

/// Waits until `journal` holds nothing in flight and no reversal pending, for 30 s at most.
fn settles_within_30_s(journal: &Journal, dir: &Path, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let store = journal.open(dir);
        let in_flight = store.txns_in_state(TxnState::InFlight).unwrap().len();
        let pending = store.reversals_in_state(SafState::Pending).unwrap().len();
        drop(store);
        if in_flight == 0 && pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{in_flight} in flight, {pending} reversals pending 30 s {when}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Terminal `tid`'s row of request `saved`, if it was journalled before the kill: not the
/// terminal's reversal of it, which has a row of its own under the same key (approved when it
/// was answered 00).
fn request_rows(
    store: &dyn Store,
    tid: &str,
    saved: &terminal::SavedRequest,
) -> Vec<store::TxnRow> {
    store
        .txns_by_key(tid, saved.batch, saved.stan)
        .unwrap()
        .into_iter()
        .filter(|row| row.kind != TxnKind::Reversal)
        .collect()
}

/// The two kill tests run one at a time: each is two demos with traffic, on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn kill_9_under_load_then_restart_loses_no_approval_and_leaves_nothing_in_doubt() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    kill_9_under_load(&Journal::Sqlite);
}

/// A schema of the test server, dropped when the test ends, passed or not.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = PgStore::drop_schema(&self.url, &self.name);
    }
}

#[test]
fn on_postgres_kill_9_under_load_then_restart_loses_no_approval_and_leaves_nothing_in_doubt() {
    let Some(url) = cli::pg_url() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = |label: &str| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Schema {
            url: url.clone(),
            name: format!("crash_{label}_{}_{nanos}", std::process::id()),
        }
    };
    let journal_of = |schema: &Schema| {
        Journal::Postgres(PgConfig {
            url: url.clone(),
            schema: Some(schema.name.clone()),
        })
    };
    let crashed = schema("a");
    let journal = journal_of(&crashed);
    kill_9_under_load(&journal);

    // The journal's card numbers are sealed under the master key of the data dir it was made
    // with: a demo on another data dir refuses it rather than fail on it later. A new data dir
    // is refused before it makes keys, so a second try is refused too; a data dir with keys of
    // its own (made with another journal) is refused by its sealed card numbers.
    let new_dir = tempfile::tempdir().unwrap();
    for attempt in 0..2 {
        let refusal = refused(new_dir.path(), &journal);
        assert!(
            refusal.contains("another data dir's master key"),
            "{attempt}: {refusal}"
        );
        assert!(!new_dir.path().join("master.key").exists(), "keys made");
    }
    let own_keys = tempfile::tempdir().unwrap();
    let first = schema("b");
    stop(start(own_keys.path(), &journal_of(&first), &[]));
    let refusal = refused(own_keys.path(), &journal);
    assert!(
        refusal.contains("another data dir's master key"),
        "{refusal}"
    );
}

/// Runs the demo on `dir` and `journal`, which must refuse to start; returns what it said.
fn refused(dir: &Path, journal: &Journal) -> String {
    cli::refused_within(
        &mut demo(dir, journal),
        Duration::from_secs(30),
        "the demo on another data dir's journal",
    )
}

fn kill_9_under_load(journal: &Journal) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Background traffic, and issuers that take 40 ms to decide (a real one takes longer): at
    // the kill, the load's requests are almost all journalled in flight, waiting on an issuer.
    let mut demo = start(
        dir,
        journal,
        &["--traffic", "100", "--issuer-latency", "40ms"],
    );
    let fx = fixtures(dir);
    let cards = healthy_cards(&fx);
    assert!(cards.len() >= 4, "{}", cards.len());
    let terminals: Vec<Value> = fx["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["traffic"] == false)
        .take(LOAD_TERMINALS_MAX)
        .cloned()
        .collect();
    assert!(terminals.len() >= 3, "{}", terminals.len());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = terminals
        .iter()
        .enumerate()
        .map(|(i, t)| runtime.spawn(load(t.clone(), cards.clone(), Arc::clone(&seen), i)))
        .collect();
    // Under load for a while (at least some approvals), then SIGKILL: no shutdown path runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().approved.len() < 200 {
        assert!(Instant::now() < deadline, "no load reached the switch");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut child = demo.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    runtime.block_on(async {
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("a terminal hung after the kill")
                .unwrap();
        }
    });
    let (approved, answered, unanswered) = {
        let seen = seen.lock().unwrap();
        (seen.approved.clone(), seen.answered, seen.unanswered)
    };
    assert_eq!(unanswered, terminals.len(), "every terminal lost its link");

    // Restart on the same data dir: requests journalled in flight become reversals, which the
    // store and forward delivers to the issuers of the same world.
    // What the killed switch had journalled in flight: the issuer may have approved it, and no
    // terminal was told. Each must end reversed, not approved and not lost.
    // (A balance inquiry of the background traffic moved nothing: it ends timed out, with no
    // reversal.)
    let (in_flight_at_kill, inquiries_at_kill): (Vec<_>, Vec<_>) = journal
        .open(dir)
        .txns_in_state(TxnState::InFlight)
        .unwrap()
        .into_iter()
        .partition(|row| row.kind != TxnKind::BalanceInquiry);
    let in_flight_at_kill: Vec<i64> = in_flight_at_kill.iter().map(|row| row.id).collect();
    assert!(
        !in_flight_at_kill.is_empty(),
        "nothing that moves money was in flight at the kill: the test showed no recovery"
    );
    demo = start(dir, journal, &[]);
    settles_within_30_s(journal, dir, "after restart");

    // Each terminal now reverses the request it got no answer for (39 = 98), resending until
    // answered, as a POS does: one the killed switch had approved and journalled without
    // telling it is reversed now (whatever the restart left it), one it never journalled or
    // already reversed is answered all the same.
    let lost = std::mem::take(&mut seen.lock().unwrap().lost);
    assert_eq!(lost.len(), terminals.len());
    let fx = fixtures(dir);
    let approved_untold = {
        let store = journal.open(dir);
        lost.iter()
            .filter(|(tid, saved)| {
                request_rows(store.as_ref(), tid, saved)
                    .iter()
                    .any(|row| row.state == TxnState::Approved)
            })
            .count()
    };
    let reversal_codes: Vec<String> = runtime.block_on(async {
        let mut codes = Vec::new();
        for (tid, saved) in &lost {
            let fixture = fx["terminals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tid"] == tid.as_str())
                .unwrap();
            let mut t = Terminal::connect(config(fixture, saved.stan + 1))
                .await
                .unwrap();
            assert_eq!(t.sign_in().await.unwrap().code, "00");
            let mut code = String::new();
            for _ in 0..50 {
                code = t.reverse(saved, "98").await.unwrap().code;
                if code != "96" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(code == "00" || code == "25", "{tid}'s reversal: {code}");
            codes.push(code);
        }
        codes
    });
    settles_within_30_s(journal, dir, "after the terminals' reversals");
    stop(demo);

    // Every approval a terminal saw is journalled approved (the journal is written before the
    // answer), and the audit pairs it with the issuer's approval.
    let store = journal.open(dir);
    for rrn in &approved {
        assert_eq!(
            store.txn_by_rrn(rrn).unwrap().map(|row| row.state),
            Some(TxnState::Approved),
            "terminal saw {rrn} approved"
        );
    }
    // No request its terminal was never answered stands approved.
    for ((tid, saved), code) in lost.iter().zip(&reversal_codes) {
        for row in request_rows(store.as_ref(), tid, saved) {
            let events: Vec<String> = store
                .events(row.id)
                .unwrap()
                .into_iter()
                .map(|e| format!("{}: {}", e.kind, e.detail))
                .collect();
            assert_ne!(
                row.state,
                TxnState::Approved,
                "{tid} {} was never answered and stands approved; its reversal was answered \
                 {code}; {events:?}; {:?}",
                saved.stan,
                store.reversal(row.id).unwrap()
            );
        }
    }
    for id in &in_flight_at_kill {
        let row = store.txn(*id).unwrap().unwrap();
        let reversal = store.reversal(*id).unwrap();
        let told = || {
            let events: Vec<String> = store
                .events(*id)
                .unwrap()
                .into_iter()
                .map(|e| format!("{}: {}", e.kind, e.detail))
                .collect();
            format!("in flight at the kill: {id}, {reversal:?}, {events:?}")
        };
        assert_eq!(row.state, TxnState::Reversed, "{}", told());
        assert_eq!(
            reversal.as_ref().map(|r| r.state),
            Some(SafState::Acked),
            "{}",
            told()
        );
    }
    for row in &inquiries_at_kill {
        let id = row.id;
        assert_eq!(
            store.txn(id).unwrap().map(|row| row.state),
            Some(TxnState::TimedOut),
            "balance inquiry {id}"
        );
        assert_eq!(store.reversal(id).unwrap(), None, "balance inquiry {id}");
    }
    let refused = store.reversals_in_state(SafState::Refused).unwrap().len();
    assert_eq!(refused, 0, "an issuer refused a reversal");
    let acked = store.reversals_in_state(SafState::Acked).unwrap().len();
    drop(store);
    let (code, report) = audit(dir, journal);
    assert_eq!(report["in_doubt"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["amount_mismatches"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    // The issuer simulators die with the switch (one demo process), but the demo's record each
    // decision before answering (durable answers): every approval the switch was told of is in
    // an issuer's ledger, and the audit is clean.
    assert_eq!(
        report["unknown_to_issuer"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert_eq!(code, 0, "{report}");
    assert!(
        report["issuer_approvals"].as_u64().unwrap() >= u64::try_from(approved.len()).unwrap(),
        "{report}"
    );
    eprintln!(
        "crash ({}): {answered} answered ({} approved) before kill -9, {} in flight, \
         {approved_untold} approved and never answered; {acked} reversals acknowledged after \
         restart; {} issuer approvals audited",
        journal.name(),
        approved.len(),
        in_flight_at_kill.len(),
        report["issuer_approvals"]
    );
}
