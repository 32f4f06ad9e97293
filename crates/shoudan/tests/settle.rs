//! Settlement end to end on the demo: a day of traffic through the real switch and issuer
//! simulators over TCP (background traffic plus a void, a refund and a reversal), settled twice
//! (the second run changes nothing), the ledger balanced, each merchant's payout equal to its
//! captures − voids − refunds − fees, a payout to a frozen card held, the merchant re-binding,
//! an operator confirming, and the payout going out exactly once; then reconciliation against
//! the issuers' clearing files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");

struct Demo(Option<Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &Path) -> Demo {
    let _ = std::fs::remove_file(dir.join("fixtures.json"));
    let child = Command::new(BIN)
        .args([
            "demo",
            "--terminal-port",
            "0",
            "--http-port",
            "0",
            "--traffic",
            "40",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let demo = Demo(Some(child));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.join("fixtures.json").exists() {
        assert!(Instant::now() < deadline, "demo did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    demo
}

fn stop(mut demo: Demo) {
    let mut child = demo.0.take().unwrap();
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop");
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

fn json(args: &[&str], dir: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out) = shoudan(&all, dir);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// A Luhn-valid 19-digit ICBC debit card number.
fn card(seed: u64) -> String {
    let payload = format!("622202{seed:012}");
    let check = domain::luhn_check_digit(payload.as_bytes()).unwrap();
    format!("{payload}{}", char::from(check))
}

#[test]
fn a_day_of_demo_traffic_is_settled_paid_and_reconciled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = start(dir);
    let fixtures = json(&["fixtures"], dir);
    let pan = fixtures["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bank"] == "ICBC" && c["label"] == "healthy")
        .unwrap()["pan"]
        .as_str()
        .unwrap()
        .to_owned();
    let terminal = |args: &[&str]| {
        let mut all = vec!["terminal", "--tid", "10000001"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--card", &pan]);
        json(&all, dir)
    };
    // A purchase voided, one partly refunded, one reversed.
    let p1 = terminal(&["purchase", "--amount", "12.34"]);
    let void = terminal(&[
        "void",
        "--amount",
        "12.34",
        "--orig-rrn",
        p1["rrn"].as_str().unwrap(),
        "--orig-stan",
        &p1["stan"].to_string(),
    ]);
    assert_eq!(void["code"], "00", "{void}");
    let p2 = terminal(&["purchase", "--amount", "50.00"]);
    let mmdd = p2["host_date"].as_str().map(str::to_owned);
    let mut refund_args = vec![
        "refund".to_owned(),
        "--amount".into(),
        "20.00".into(),
        "--orig-rrn".into(),
        p2["rrn"].as_str().unwrap().into(),
    ];
    if let Some(mmdd) = mmdd {
        refund_args.extend(["--orig-date".into(), mmdd]);
    }
    let refund_args: Vec<&str> = refund_args.iter().map(String::as_str).collect();
    let refund = terminal(&refund_args);
    assert_eq!(refund["code"], "00", "{refund}");
    let p3 = terminal(&["purchase", "--amount", "7.00"]);
    let reversal = terminal(&[
        "reversal",
        "--amount",
        "7.00",
        "--orig-stan",
        &p3["stan"].to_string(),
    ]);
    assert_eq!(reversal["code"], "00", "{reversal}");
    std::thread::sleep(Duration::from_secs(2));
    stop(demo);

    // Settle every clearing date the day produced (two if it crossed the 23:00 cut-over).
    let db = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
    let dates: Vec<String> = db
        .prepare("SELECT DISTINCT clearing_date FROM transactions ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for date in &dates {
        let first = json(&["settle", "--date", date], dir);
        assert_eq!(first["changed"], true, "{first}");
        let second = json(&["settle", "--date", date], dir);
        assert_eq!(second["changed"], false, "{second}");
        let (_, text) = shoudan(&["settle", "--date", date], dir);
        assert!(text.contains("nothing changed"), "{text}");
        for m in second["merchants"].as_array().unwrap() {
            let captures = m["captures_fen"].as_i64().unwrap();
            let voids = m["voids_fen"].as_i64().unwrap();
            let refunds = m["refunds_fen"].as_i64().unwrap();
            let fees = m["fees_fen"].as_i64().unwrap();
            assert_eq!(
                m["net_fen"].as_i64().unwrap(),
                captures - voids - refunds - fees
            );
            *net.entry(m["mid"].as_str().unwrap().to_owned())
                .or_default() += m["net_fen"].as_i64().unwrap();
        }
    }
    // The demo merchant of terminal 10000001 saw the void and the refund.
    let counted: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM clearing_lines WHERE kind IN ('purchase_void', 'refund')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(counted >= 2);
    let ledger = json(&["ledger", "balance"], dir);
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(ledger["total_fen"], 0);

    // Bind every paid merchant; the first one's card is frozen at the bank.
    let mids: Vec<String> = net
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, _)| m.clone())
        .collect();
    assert!(!mids.is_empty());
    let frozen = card(1);
    let mut bank = serde_json::Map::new();
    bank.insert(frozen.clone(), "frozen".into());
    std::fs::write(dir.join("sim-bank.json"), Value::Object(bank).to_string()).unwrap();
    for (i, mid) in mids.iter().enumerate() {
        let number = if i == 0 {
            frozen.clone()
        } else {
            card(100 + u64::try_from(i).unwrap())
        };
        let bound = json(
            &[
                "account",
                "bind",
                "--mid",
                mid,
                "--card",
                &number,
                "--name",
                "王小明",
            ],
            dir,
        );
        assert_eq!(bound["outcome"], "active", "{bound}");
    }

    let last = dates.last().unwrap();
    // T+1 after the last clearing date: everything is due.
    let payout_day = settlement::dates::add_days(last, 1).unwrap();
    let first_run = json(&["payouts", "--run", &payout_day], dir);
    assert_eq!(
        first_run["run"]["held"].as_array().unwrap().len(),
        1,
        "{first_run}"
    );
    let listed = json(&["payouts"], dir);
    let payouts = listed["payouts"].as_array().unwrap();
    let held_key = format!("{}:{payout_day}", mids[0]);
    for p in payouts {
        let mid = p["mid"].as_str().unwrap();
        assert_eq!(p["amount_fen"].as_i64(), net.get(mid).copied(), "{p}");
        if p["key"] == held_key.as_str() {
            assert_eq!(p["state"], "held");
            assert_eq!(p["failure"], "payout-account-frozen");
        } else {
            assert_eq!(p["state"], "sent", "{p}");
        }
    }
    assert_eq!(payouts.len(), mids.len());

    // Re-binding after the failure needs a second person.
    let pending = json(
        &[
            "account",
            "bind",
            "--mid",
            &mids[0],
            "--card",
            &card(2),
            "--name",
            "王小明",
        ],
        dir,
    );
    assert_eq!(pending["outcome"], "pending_confirmation", "{pending}");
    let change = pending["change_id"].to_string();
    let (code, _) = shoudan(
        &[
            "account", "confirm", "--change", &change, "--by", "merchant",
        ],
        dir,
    );
    assert_ne!(code, 0, "the maker cannot confirm");
    json(
        &["account", "confirm", "--change", &change, "--by", "ops-li"],
        dir,
    );
    let run = json(&["payouts", "--run", &payout_day], dir);
    assert_eq!(run["run"]["released"][0], held_key.as_str(), "{run}");
    assert_eq!(run["run"]["sent"][0], held_key.as_str(), "{run}");
    let again = json(&["payouts", "--run", &payout_day], dir);
    assert_eq!(again["run"]["sent"].as_array().unwrap().len(), 0, "{again}");
    let sent_events: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM payout_events WHERE payout_key = ?1 AND kind = 'sent'",
            [&held_key],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sent_events, 1);
    let ledger = json(&["ledger", "balance"], dir);
    assert_eq!(ledger["balanced"], true, "{ledger}");
    for a in ledger["accounts"].as_array().unwrap() {
        let name = a["account"].as_str().unwrap();
        if name.starts_with("merchant_payable:") || name.starts_with("held:") {
            assert_eq!(a["balance_fen"], 0, "{a}");
        }
    }

    // Reconciliation against the issuers' clearing files.
    for date in &dates {
        let reports = json(&["reconcile", "--date", date], dir);
        let reports = reports.as_array().unwrap();
        assert!(reports.len() >= 6);
        let matched: u64 = reports.iter().map(|r| r["matched"].as_u64().unwrap()).sum();
        assert!(matched > 0);
        for r in reports {
            assert_eq!(r["findings"].as_array().unwrap().len(), 0, "{r}");
        }
    }
}
