//! `shoudan explain --rrn` on a demo data dir: a declined and an approved purchase made through
//! the demo's terminals, explained from the journal read-only while the demo runs and after.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");

/// Kills the demo if the test fails before stopping it.
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
            "--data-dir",
        ])
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

fn explain(dir: &Path, rrn: &str) -> Value {
    let (code, out) = shoudan(&["explain", "--rrn", rrn, "--json"], dir);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn explain_rrn_reads_the_demo_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut demo = start(dir);
    let (_, out) = shoudan(&["fixtures", "--json"], dir);
    let fixtures: Value = serde_json::from_str(&out).unwrap();
    let cards = fixtures["cards"].as_array().unwrap();
    let card = |code: &str| {
        cards
            .iter()
            .find(|c| c["bank"] == "ICBC" && c["purchase_code"] == code)
            .unwrap()["pan"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let purchase = |pan: &str| -> Value {
        let (code, out) = shoudan(
            &[
                "terminal", "--tid", "10000001", "purchase", "--amount", "1.00", "--card", pan,
                "--json",
            ],
            dir,
        );
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let declined_pan = card("51");
    let declined = purchase(&declined_pan);
    assert_eq!(declined["code"], "51");
    let rrn = declined["rrn"].as_str().unwrap().to_owned();
    let approved = purchase(&card("00"));
    assert_eq!(approved["code"], "00");
    let approved_rrn = approved["rrn"].as_str().unwrap().to_owned();

    // While the demo runs: the journal is read, never written.
    let x = explain(dir, &rrn);
    assert_eq!(x["outcome"], "declined", "{x}");
    assert_eq!(x["diagnosis"]["subject"], "51", "{x}");
    assert_eq!(x["txn"]["bank_code"], "ICBC");
    assert_eq!(x["steps"][1]["kind"], "declined");
    assert!(!x.to_string().contains(&declined_pan), "full PAN in output");
    let x = explain(dir, &approved_rrn);
    assert_eq!(x["outcome"], "approved", "{x}");
    assert!(x["diagnosis"].is_null());

    let child = demo.0.take().unwrap();
    let mut child = Demo(Some(child));
    Command::new("kill")
        .args(["-INT", &child.0.as_ref().unwrap().id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.0 = None;

    // After it stopped: text in both languages.
    let (code, text) = shoudan(&["explain", "--rrn", &rrn, "--lang", "en"], dir);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("declined by Industrial and Commercial Bank"),
        "{text}"
    );
    assert!(text.contains("Diagnosis: 51"), "{text}");
    let (code, text) = shoudan(&["explain", "--rrn", &rrn], dir);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("工商银行") && text.contains("诊断：51"),
        "{text}"
    );
    // An unknown RRN is an error, not an empty answer.
    let (code, text) = shoudan(&["explain", "--rrn", "999999999999"], dir);
    assert_eq!(code, 2, "{text}");
    // A decline with a code the table does not hold is explained all the same, and exits 1,
    // as `shoudan explain Q7` does.
    let journal = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
    let changed = journal
        .execute(
            "UPDATE transactions SET response_code = 'Q7' WHERE rrn = ?1",
            [&rrn],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(journal);
    let (code, text) = shoudan(&["explain", "--rrn", &rrn, "--lang", "en"], dir);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Q7 (Unknown response code)"), "{text}");
}
