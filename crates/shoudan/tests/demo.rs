//! `shoudan demo` as a real child process: fixtures, terminal purchases (an approval on each
//! MAC algorithm's terminal, a decline), background traffic, SIGINT, then an audit with nothing
//! in doubt, and a restart on the same data dir. The demo logs at debug level throughout, and
//! the log must name what happened without a card number, PIN or terminal key in it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use store::Store;

mod cli;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");

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

fn start(dir: &Path, traffic: bool) -> Demo {
    start_with(dir, traffic, &[], Stdio::null())
}

/// `shoudan demo` on `dir`, on ports of its own.
fn demo_command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "demo",
        "--terminal-port",
        "0",
        "--http-port",
        "0",
        "--data-dir",
    ])
    .arg(dir);
    cmd
}

/// A demo on `dir` with `extra` arguments, its standard output to `stdout`, once it listens.
fn start_with(dir: &Path, traffic: bool, extra: &[&str], stdout: Stdio) -> Demo {
    // The demo rewrites fixtures.json once it listens: its appearance is the ready signal.
    let _ = std::fs::remove_file(dir.join("fixtures.json"));
    let mut cmd = demo_command(dir);
    cmd.args(extra)
        .env("SHOUDAN_LOG", "debug")
        .stdout(stdout)
        .stderr(log_file(dir));
    if traffic {
        cmd.args(["--traffic", "40"]);
    }
    let child = Demo(Some(cmd.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.join("fixtures.json").exists() {
        assert!(
            Instant::now() < deadline,
            "demo did not write fixtures.json: {}",
            std::fs::read_to_string(log_path(dir)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The demo's standard error, appended to across its starts.
fn log_file(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .unwrap()
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("demo-stderr.log")
}

fn stop(mut demo: Demo) {
    let mut child = demo.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shoudan(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let mut text = String::from_utf8(out.stdout).unwrap();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), text)
}

/// A card of the demo's that buys, from its fixtures.
fn healthy_card(dir: &Path) -> String {
    let (code, out) = shoudan(&["fixtures", "--json"], dir);
    assert_eq!(code, 0);
    let fixtures: Value = serde_json::from_str(&out).unwrap();
    fixtures["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "healthy")
        .unwrap()["pan"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn purchase(dir: &Path, tid: &str, pan: &str) -> Value {
    let (code, out) = shoudan(
        &[
            "terminal", "--tid", tid, "purchase", "--amount", "1.00", "--card", pan, "--json",
        ],
        dir,
    );
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn demo_purchases_then_audit_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let child = start(dir, true);
    // The key that opens every other one is its owner's alone, and so are the fixtures
    // (the demo terminals' clear master keys, the cards' numbers and PINs).
    for file in ["master.key", "fixtures.json"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // A second demo on the same data dir is refused before it opens anything: on other
    // ports it would have started on the first's journal as the same node, and taken the
    // first's requests in flight for its own to reverse.
    let stderr = cli::refused_within(
        demo_command(dir).stdout(Stdio::null()),
        Duration::from_secs(15),
        "a second demo on the same data dir",
    );
    assert!(
        stderr.contains("in use by another shoudan demo"),
        "{stderr}"
    );

    let (code, out) = shoudan(&["fixtures", "--json"], dir);
    assert_eq!(code, 0);
    let fixtures: Value = serde_json::from_str(&out).unwrap();
    let cards = fixtures["cards"].as_array().unwrap();
    let terminals = fixtures["terminals"].as_array().unwrap();
    for mac in ["cup-ecb", "x919", "sm4"] {
        assert!(
            terminals.iter().any(|t| t["mac"] == mac),
            "no {mac} terminal"
        );
    }
    let banks: std::collections::BTreeSet<&str> =
        cards.iter().map(|c| c["bank"].as_str().unwrap()).collect();
    assert!(banks.len() >= 6 && banks.contains("VISA"), "{banks:?}");
    let healthy = cards
        .iter()
        .find(|c| c["bank"] == "ICBC" && c["purchase_code"] == "00")
        .unwrap();
    let pan = healthy["pan"].as_str().unwrap();

    for tid in ["10000001", "10000002", "10000003", "10000004"] {
        let r = purchase(dir, tid, pan);
        assert_eq!(r["code"], "00", "{tid}: {r}");
        assert_eq!(r["mac_verified"], true, "{tid}: {r}");
        assert!(
            !r["pan"].as_str().unwrap().contains(&pan[6..12]),
            "PAN not masked"
        );
    }
    // The SM4 terminal keys its PIN under an SM4 PIK: a 16-byte field 52 the switch translates
    // to the issuer's DES zone key. The right PIN is approved, a wrong one declined 55.
    let with_pin = |tid: &str, card: &Value, pin: &str| -> Value {
        let (code, out) = shoudan(
            &[
                "terminal",
                "--tid",
                tid,
                "purchase",
                "--amount",
                "1.00",
                "--card",
                card["pan"].as_str().unwrap(),
                "--pin",
                pin,
                "--json",
            ],
            dir,
        );
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let right = with_pin("10000005", healthy, healthy["pin"].as_str().unwrap());
    assert_eq!(right["code"], "00", "{right}");
    assert_eq!(right["mac_verified"], true, "{right}");
    let other = cards
        .iter()
        .find(|c| c["purchase_code"] == "00" && c["bank"] != "VISA" && c["pan"] != pan)
        .unwrap();
    let wrong_pin = if other["pin"] == "000000" {
        "111111"
    } else {
        "000000"
    };
    let wrong = with_pin("10000005", other, wrong_pin);
    assert_eq!(wrong["code"], "55", "{wrong}");
    assert_eq!(wrong["mac_verified"], true, "{wrong}");
    // A foreign card through the default issuer.
    let visa = cards
        .iter()
        .find(|c| c["bank"] == "VISA" && c["purchase_code"] == "00")
        .unwrap();
    assert_eq!(
        purchase(dir, "10000001", visa["pan"].as_str().unwrap())["code"],
        "00"
    );
    // Every decline card gets what the fixtures promise.
    for card in cards
        .iter()
        .filter(|c| c["bank"] == "CCB" && c["purchase_code"] != "00")
        .take(4)
    {
        let r = purchase(dir, "10000003", card["pan"].as_str().unwrap());
        assert_eq!(r["code"], card["purchase_code"], "{card}: {r}");
    }
    // A void of the approved purchase, by RRN and STAN.
    let original = purchase(dir, "10000001", pan);
    let (code, out) = shoudan(
        &[
            "terminal",
            "--tid",
            "10000001",
            "void",
            "--amount",
            "1.00",
            "--card",
            pan,
            "--orig-rrn",
            original["rrn"].as_str().unwrap(),
            "--orig-stan",
            &original["stan"].to_string(),
            "--json",
        ],
        dir,
    );
    assert_eq!(code, 0, "{out}");
    let void: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(void["code"], "00", "{void}");

    // A pre-authorisation at one desk, completed at another of the merchant's terminals by
    // its authorisation code and date alone.
    let holder = cards
        .iter()
        .find(|c| c["label"] == "healthy" && c["bank"] == "ICBC")
        .unwrap()["pan"]
        .as_str()
        .unwrap();
    let terminal = |tid: &str, args: &[&str]| -> Value {
        let mut all = vec!["terminal", "--tid", tid];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--card", holder, "--json"]);
        let (code, out) = shoudan(&all, dir);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let held = terminal("10000001", &["preauth", "--amount", "20.00"]);
    assert_eq!(held["code"], "00", "{held}");
    let completed = terminal(
        "10000002",
        &[
            "completion",
            "--amount",
            "15.00",
            "--orig-auth",
            held["auth_code"].as_str().unwrap(),
            "--orig-date",
            held["host_date"].as_str().unwrap(),
        ],
    );
    assert_eq!(completed["code"], "00", "{completed}");

    // The demo's journal tailer turns the declines into notifications (the webhook notifier
    // delivers them to merchants that set an endpoint).
    let journal = store::SqliteStore::open_read_only(&dir.join("switch.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let declined = journal
            .merchants()
            .unwrap()
            .iter()
            .flat_map(|m| journal.outbox_of_merchant(&m.mid, None, 1_000).unwrap())
            .filter(|n| n.event_type == "transaction.declined")
            .count();
        if declined >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{declined} decline notifications"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(journal);

    std::thread::sleep(Duration::from_secs(2));
    stop(child);
    let (code, out) = shoudan(&["audit", "--json"], dir);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(
        report["issuer_approvals"].as_u64().unwrap() >= 8,
        "{report}"
    );
    assert_eq!(report["in_doubt"].as_array().unwrap().len(), 0);

    // Restart on the same data dir: same terminals and cards, keys still good. A master key
    // left readable by others (a copy, an older build) is made the owner's again.
    let key = dir.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let child = start(dir, false);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (_, again) = shoudan(&["fixtures", "--json"], dir);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["cards"], fixtures["cards"]);
    assert_eq!(
        again["terminals"][0]["tmk"],
        fixtures["terminals"][0]["tmk"]
    );
    let last = purchase(dir, "10000004", pan);
    assert_eq!(last["code"], "00");
    let (code, out) = shoudan(
        &[
            "terminal", "--tid", "10000004", "balance", "--card", pan, "--json",
        ],
        dir,
    );
    assert_eq!(code, 0, "{out}");
    let inquiry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inquiry["code"], "00", "{inquiry}");
    // A terminal whose trace file was damaged does not start again at 1 (its traces would
    // repeat in the open batch): it refuses until told its next trace.
    let stan_file = dir.join("terminals").join("10000004.stan");
    let next: u32 = std::fs::read_to_string(&stan_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(next > 1);
    for damaged in ["", "12x", "0", "1000000"] {
        std::fs::write(&stan_file, damaged).unwrap();
        let (code, out) = shoudan(
            &[
                "terminal", "--tid", "10000004", "purchase", "--amount", "1.00", "--card", pan,
            ],
            dir,
        );
        assert_eq!(code, 2, "{damaged:?}: {out}");
        assert!(out.contains("not a trace number"), "{out}");
    }
    std::fs::write(&stan_file, next.to_string()).unwrap();
    let again = purchase(dir, "10000004", pan);
    assert_eq!(again["code"], "00", "{again}");
    // The sign-in takes `next`, the purchase the one after.
    assert_eq!(again["stan"], next + 1, "{again}");
    stop(child);
    assert_eq!(shoudan(&["audit"], dir).0, 0);
    // A balance inquiry the journal holds timed out (a kill while it was at the issuer) and
    // the issuer answered moves no money: nothing in doubt.
    {
        let journal = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
        let changed = journal
            .execute(
                "UPDATE transactions SET state = 'timed_out', response_code = '98' WHERE rrn = ?1",
                [inquiry["rrn"].as_str().unwrap()],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let (code, out) = shoudan(&["audit", "--json"], dir);
    assert_eq!(code, 0, "{out}");
    // An issuer that reversed an approval the journal holds as approved (the merchant would
    // wait for money that never comes) is a finding, and the audit fails.
    let rrn = last["rrn"].as_str().unwrap();
    // `sql` (naming the RRN as ?1) run on every issuer's ledger: the rows it changed.
    let on_ledgers = |sql: &str| {
        fixtures["issuers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|issuer| {
                let ledger =
                    rusqlite::Connection::open(dir.join(issuer["ledger"].as_str().unwrap()));
                ledger.unwrap().execute(sql, [rrn]).unwrap()
            })
            .sum::<usize>()
    };
    let on_journal = |sql: &str| {
        let journal = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
        journal.busy_timeout(Duration::from_secs(5)).unwrap();
        journal.execute(sql, [rrn]).unwrap()
    };
    // Each kind of finding is found: the journal's amount other than the issuer's; the
    // journal's row failed where the issuer approved (in doubt); the issuer without the
    // journal's approval (here under another RRN, so in doubt as well).
    let cases: [(&str, &str, &str, &dyn Fn()); 3] = [
        (
            "amount_mismatches",
            "UPDATE transactions SET amount_fen = amount_fen + 1 WHERE rrn = ?1",
            "UPDATE transactions SET amount_fen = amount_fen - 1 WHERE rrn = ?1",
            &|| {},
        ),
        (
            "in_doubt",
            "UPDATE transactions SET state = 'timed_out', response_code = '98' WHERE rrn = ?1",
            "UPDATE transactions SET state = 'approved', response_code = '00' WHERE rrn = ?1",
            &|| {},
        ),
        ("unknown_to_issuer", "", "", &|| {
            assert_eq!(
                on_ledgers("UPDATE txns SET rrn = rrn || 'x' WHERE rrn = ?1"),
                1
            );
        }),
    ];
    for (list, change, undo, also) in cases {
        if !change.is_empty() {
            assert_eq!(on_journal(change), 1);
        }
        also();
        let (code, out) = shoudan(&["audit", "--json"], dir);
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(code, 1, "{list}: {report}");
        let found = report[list].as_array().unwrap();
        assert!(found.iter().any(|f| f["rrn"] == rrn), "{list}: {report}");
        if !undo.is_empty() {
            assert_eq!(on_journal(undo), 1);
        }
    }
    assert_eq!(
        on_ledgers("UPDATE txns SET rrn = ?1 WHERE rrn = ?1 || 'x'"),
        1
    );
    assert_eq!(
        shoudan(&["audit"], dir).0,
        0,
        "the ledgers and journal put back"
    );
    let changed = on_ledgers("UPDATE txns SET state = 'reversed' WHERE rrn = ?1");
    assert_eq!(changed, 1);
    let (code, out) = shoudan(&["audit", "--json"], dir);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 1, "{report}");
    let found = report["reversed_only_at_issuer"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["rrn"], rrn);
    // The same journal named by --database (as a shared PostgreSQL one would be): the same
    // finding. A journal this build would have to migrate is refused, not migrated.
    let url = format!("sqlite:{}", dir.join("switch.db").display());
    let (code, out) = shoudan(&["audit", "--json", "--database", &url], dir);
    assert_eq!(code, 1, "{out}");
    let by_url: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        by_url["reversed_only_at_issuer"],
        report["reversed_only_at_issuer"]
    );
    let behind = dir.join("behind.db");
    std::fs::copy(dir.join("switch.db"), &behind).unwrap();
    let db = rusqlite::Connection::open(&behind).unwrap();
    db.execute(
        "DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)",
        [],
    )
    .unwrap();
    drop(db);
    let url = format!("sqlite:{}", behind.display());
    let (code, out) = shoudan(&["audit", "--database", &url], dir);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("lacks 1 of this build's migrations"), "{out}");
    let db = rusqlite::Connection::open(&behind).unwrap();
    let versions: i64 = db
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        versions,
        i64::try_from(store::schema::MIGRATIONS.len()).unwrap() - 1
    );

    // The log tells the story: both starts, the issuer links, the sign-ins of the terminals
    // that bought. Nothing in it identifies a card, a PIN or a terminal key.
    let log = std::fs::read_to_string(log_path(dir)).unwrap();
    assert_eq!(log.matches("switch listening").count(), 2, "{log}");
    assert!(log.contains("issuer link up issuer=VISA"), "{log}");
    assert!(log.contains("signed in tid=10000005"), "{log}");
    assert!(log.lines().count() > 20, "{log}");
    for card in cards {
        let pan = card["pan"].as_str().unwrap();
        assert!(!log.contains(pan), "card {}… in the log", &pan[..6]);
        // A masked card shows the first six digits and the last four, never the middle.
        assert!(!log.contains(&pan[..12]), "card {}… in the log", &pan[..6]);
    }
    for terminal in terminals {
        let tmk = terminal["tmk"].as_str().unwrap();
        assert!(!log.to_ascii_uppercase().contains(&tmk.to_ascii_uppercase()));
    }
    for pin in [healthy["pin"].as_str().unwrap(), wrong_pin] {
        assert!(!log.contains(&format!("={pin}")), "a PIN in the log");
    }
}

/// A demo whose standard output no one reads any more (its pipe's reader gone) serves, and
/// stops cleanly on SIGINT (status 0), its stop not cut short by the failed writes.
#[test]
fn a_demo_whose_stdout_is_gone_still_serves_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = start_with(dir, false, &[], writer.into());
    let card = healthy_card(dir);
    assert_eq!(purchase(dir, "10000001", &card)["code"], "00");
    // A mistyped transaction is refused before the terminal signs in (new working keys).
    let signed_in = || {
        let journal = store::SqliteStore::open_read_only(&dir.join("switch.db")).unwrap();
        let at = journal
            .terminal("10000001")
            .unwrap()
            .unwrap()
            .last_sign_in_ms;
        journal.close();
        at
    };
    let before = signed_in();
    let (code, out) = shoudan(
        &[
            "terminal", "--tid", "10000001", "purchse", "--amount", "1.00", "--card", &card,
        ],
        dir,
    );
    assert_ne!(code, 0);
    assert!(out.contains("unknown transaction purchse"), "{out}");
    assert_eq!(signed_in(), before);
    stop(child);
}

/// Bench terminals made by a demo killed before its clean stop keep their keys: the next start
/// on the data dir signs them in and they buy.
#[test]
fn bench_terminals_keep_their_keys_across_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bench = ["--bench-terminals", "2"];
    let killed = start_with(dir, false, &bench, Stdio::null());
    drop(killed); // SIGKILL: no clean stop
    let child = start_with(dir, false, &bench, Stdio::null());
    let card = healthy_card(dir);
    for tid in ["30000001", "30000002"] {
        let answer = purchase(dir, tid, &card);
        assert_eq!(answer["code"], "00", "{tid}: {answer}");
    }
    stop(child);
}

#[test]
fn a_data_dir_that_lost_its_master_key_is_not_given_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A key store sealed under a key that is gone: a new key would make it, and every card
    // number sealed with it, unreadable for good.
    std::fs::write(dir.join("hsm.store"), b"sealed under the lost key").unwrap();
    let stderr = cli::refused_within(
        demo_command(dir).stdout(Stdio::null()),
        Duration::from_secs(15),
        "the demo on a data dir without its master key",
    );
    assert!(stderr.contains("master.key is missing"), "{stderr}");
    assert!(!dir.join("master.key").exists());
}

/// A node's data dir given to the demo by mistake: its key store (keys from custodians'
/// components) is not written over with demo keys, and a node running on its journal refuses
/// the demo before anything in the directory changes.
#[test]
fn a_nodes_data_dir_is_not_taken_for_a_demos() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("master.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.join("hsm.store"), b"a node's key store").unwrap();
    let stderr = cli::refused_within(
        demo_command(dir).stdout(Stdio::null()),
        Duration::from_secs(15),
        "the demo on a node's data dir",
    );
    assert!(stderr.contains("not a demo's key store"), "{stderr}");
    assert_eq!(
        std::fs::read(dir.join("hsm.store")).unwrap(),
        b"a node's key store"
    );
    assert!(!dir.join("switch.db").exists());
    assert!(!dir.join("issuers").exists());

    // The same directory with a node serving its journal: refused first, nothing made.
    let node = tempfile::tempdir().unwrap();
    let journal = node.path().join("switch.db");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(node.path().join("switch.db.node-lock"))
        .unwrap();
    assert!(held.try_lock().is_ok());
    let stderr = cli::refused_within(
        demo_command(node.path()).stdout(Stdio::null()),
        Duration::from_secs(15),
        "the demo on a journal a node serves",
    );
    assert!(stderr.contains("in use by another node"), "{stderr}");
    assert!(!journal.exists(), "{stderr}");
    assert!(!node.path().join("master.key").exists(), "{stderr}");
    assert!(!node.path().join("hsm.store").exists(), "{stderr}");
}
