//! `shoudan bench` as child processes: a short closed-loop auth run against the in-process demo
//! environment and an echo run, each checked for throughput, latency quantiles and no errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");

fn bench(args: &[&str]) -> Value {
    let (code, report) = bench_status(args);
    assert_eq!(code, Some(0), "bench {args:?} failed: {report}");
    report
}

/// Runs `shoudan bench ARGS`; its exit status and the JSON it printed.
fn bench_status(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(BIN).arg("bench").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("bench {args:?} printed no JSON ({e}): {stdout} (stderr: {stderr})")
    });
    (out.status.code(), report)
}

fn check_run(report: &Value, mode: &str) {
    for key in [
        "tps",
        "p50_us",
        "p99_us",
        "p999_us",
        "switch_p99_us",
        "errors",
    ] {
        assert!(report.get(key).is_some(), "{mode}: no {key} in {report}");
    }
    assert_eq!(report["mode"], mode);
    assert!(report["tps"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let p50 = report["p50_us"].as_u64().unwrap();
    let p99 = report["p99_us"].as_u64().unwrap();
    let p999 = report["p999_us"].as_u64().unwrap();
    assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{report}");
    // Every answered request was timed.
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn auth_closed_loop_is_all_approvals() {
    let report = bench(&["auth", "--terminals", "4", "--duration", "2s", "--json"]);
    check_run(&report, "auth");
    assert_eq!(report["terminals"], 4);
    // The issuer simulators stand for other machines: their ledgers are not on this disk.
    assert!(
        report["issuer_ledgers"]
            .as_str()
            .unwrap()
            .starts_with("memory"),
        "{report}"
    );
    // Measured inside the switch, without the time at the issuer: at most the client's p99
    // (it excludes the issuer and the network), and present.
    let switch_p99 = report["switch_p99_us"].as_u64().unwrap();
    assert!(switch_p99 > 0, "{report}");
    assert!(
        switch_p99 <= report["p99_us"].as_u64().unwrap() * 2,
        "{report}"
    );
}

#[test]
fn auth_open_loop_keeps_its_rate() {
    let report = bench(&[
        "auth",
        "--terminals",
        "2",
        "--rate",
        "50",
        "--duration",
        "2s",
        "--journal",
        "off",
        "--issuer-ledgers",
        "disk",
        "--json",
    ]);
    check_run(&report, "auth");
    assert!(
        report["issuer_ledgers"]
            .as_str()
            .unwrap()
            .starts_with("files"),
        "{report}"
    );
    // 50/s for 2 s is 100 requests; the schedule allows neither many more nor many fewer.
    let ok = report["ok"].as_u64().unwrap();
    assert!((90..=102).contains(&ok), "{report}");
}

/// One terminal asked for more than it can do (a send every 0.2 ms; a test build's answers take
/// longer, its issuer simulators, MACs and PIN translation unoptimised):
/// its sends go out later and later, and the report counts them as late rather than passing
/// the load the switch saw for the schedule's.
#[test]
fn an_open_loop_that_falls_behind_counts_its_late_sends() {
    let report = bench(&[
        "auth",
        "--terminals",
        "1",
        "--rate",
        "5000",
        "--duration",
        "1s",
        "--journal",
        "off",
        "--json",
    ]);
    let late = report["late_sends"].as_u64().unwrap();
    let ok = report["ok"].as_u64().unwrap();
    assert!(late > ok / 2, "{report}");
}

/// A slow schedule (each terminal every 4 s) ends with its duration: a send scheduled past
/// the end is not waited for, so the run neither outlasts it nor understates its rate.
#[test]
fn auth_open_loop_ends_with_its_duration() {
    let report = bench(&[
        "auth",
        "--terminals",
        "4",
        "--rate",
        "1",
        "--duration",
        "2s",
        "--journal",
        "off",
        "--json",
    ]);
    check_run(&report, "auth");
    let took = report["duration_s"].as_f64().unwrap();
    assert!((2.0..3.0).contains(&took), "{report}");
    // Sends at 0 and 1 s (the two other terminals' first fall at 2 and 3 s): two, at 1/s.
    assert_eq!(report["ok"].as_u64(), Some(2), "{report}");
    let tps = report["tps"].as_f64().unwrap();
    assert!((0.6..=1.0).contains(&tps), "{report}");
}

#[test]
fn idle_connections_stay_signed_in_and_their_memory_is_measured() {
    let report = bench(&["idle", "--connections", "300", "--hold", "200ms", "--json"]);
    assert_eq!(report["mode"], "idle");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    // Every connection signed in, then answered an echo test after the idle spell.
    assert_eq!(report["signed_in_alive"].as_u64(), Some(300), "{report}");
    let before = report["rss_before_kib"].as_u64().unwrap();
    let after = report["rss_after_kib"].as_u64().unwrap();
    // The demo process (switch, issuers, portal) is measured, and holding 300 sessions shows.
    assert!(before > 1_024 && after > before, "{report}");
    assert!(
        report["kib_per_connection"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn echo_answers_everything() {
    let report = bench(&["echo", "--terminals", "4", "--duration", "1s", "--json"]);
    check_run(&report, "echo");
}

#[test]
fn targets_are_each_measured_and_judged() {
    let (code, report) = bench_status(&[
        "targets",
        "--terminals",
        "4",
        "--duration",
        "1s",
        "--rounds",
        "1",
        "--idle-connections",
        "50",
        "--json",
    ]);
    let targets = report["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "durable_tps",
            "journal_cost",
            "half_rate_switch_p99_us",
            "echo_ratio",
            "idle_rss_bytes"
        ]
    );
    for t in targets {
        assert!(t["measured"].as_f64().is_some(), "{t}");
    }
    let durable = report["durable_tps"].as_f64().unwrap();
    let off = report["journal_off_tps"].as_f64().unwrap();
    assert!(durable > 0.0 && off > 0.0, "{report}");
    // The figures judged are those of the runs reported.
    let round = &report["runs"][0];
    check_run(&round["durable"], "auth");
    check_run(&round["journal_off"], "auth");
    assert_eq!(round["durable"]["tps"].as_f64(), Some(durable));
    let cost = targets[1]["measured"].as_f64().unwrap();
    assert!((cost - (1.0 - durable / off)).abs() < 1e-9, "{report}");
    assert_eq!(targets[1]["met"].as_bool(), Some(cost <= 0.10));
    // The open loop ran at half the durable rate.
    let half = &report["half_rate_run"];
    check_run(half, "auth");
    assert!((report["half_rate"].as_f64().unwrap() - durable / 2.0).abs() < 1e-6);
    assert_eq!(
        targets[2]["measured"].as_f64(),
        half["switch_p99_us"].as_f64()
    );
    let echo = report["echo_tps"].as_f64().unwrap();
    assert!((targets[3]["measured"].as_f64().unwrap() - durable / echo).abs() < 1e-9);
    // 50 idle connections are measured but too few to judge the 10,000-connection target.
    assert_eq!(
        report["idle"]["signed_in_alive"].as_u64(),
        Some(50),
        "{report}"
    );
    assert_eq!(targets[4]["met"], Value::Null);
    // A target not met fails the command, as a failed check does.
    let unmet = targets.iter().any(|t| t["met"] == Value::Bool(false));
    assert_eq!(code, Some(i32::from(unmet)), "{report}");
    assert_eq!(
        targets[4]["measured"].as_f64(),
        Some(report["idle"]["rss_after_kib"].as_f64().unwrap() * 1024.0)
    );
}
