//! `shoudan terminal` keeps the trace numbers it may send as used before it sends any, as a
//! terminal's own counter does: a run stopped while it waits for an answer (Ctrl-C) leaves the
//! next run on new traces, not on one the host already holds (a retry to it: 94, or the earlier
//! answer replayed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_run_stopped_while_it_waits_leaves_its_traces_used() {
    let dir = tempfile::tempdir().unwrap();
    // A host that takes the connection and the first request, and never answers.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let terminal = serde_json::json!({
        "tid": "10000001", "mid": "898110048990001", "merchant": "Teahouse",
        "tmk": "0123456789ABCDEFFEDCBA9876543210", "key_scheme": "003", "mac": "cup-ecb",
        "host": "127.0.0.1", "port": port, "traffic": false,
    });
    let fixtures = serde_json::json!({
        "host": "127.0.0.1", "port": port, "http_port": 0,
        "terminals": [terminal], "cards": [], "issuers": [],
    });
    std::fs::write(dir.path().join("fixtures.json"), fixtures.to_string()).unwrap();
    std::fs::create_dir_all(dir.path().join("terminals")).unwrap();
    let traces = dir.path().join("terminals/10000001.stan");
    std::fs::write(&traces, "41").unwrap();

    let mut run = Command::new(env!("CARGO_BIN_EXE_shoudan"))
        .arg("terminal")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--tid",
            "10000001",
            "purchase",
            "--card",
            "6222020200112345679",
            "--pin",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut connection, _) = host.accept().unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut prefix = [0u8; 2];
    connection
        .read_exact(&mut prefix)
        .expect("the sign-in arrives");
    // Stopped while it waits for the answer.
    run.kill().unwrap();
    run.wait().unwrap();
    let next: u32 = std::fs::read_to_string(&traces)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        next, 43,
        "the sign-in's trace and the purchase's kept as used"
    );
}
