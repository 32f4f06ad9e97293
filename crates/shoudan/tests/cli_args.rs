//! Flags that mean something only with another are refused alone, not silently ignored.

#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoudan"))
        .args(args)
        .output()
        .expect("run shoudan")
}

fn refused(args: &[&str], says: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[test]
fn a_flag_without_the_one_it_qualifies_is_refused() {
    // A schema names a PostgreSQL journal's: without the journal it would be ignored.
    refused(
        &["audit", "--database-schema", "shoudan"],
        "--database <DATABASE>",
    );
    // A process to measure without its data dir would start a demo of its own instead.
    refused(&["bench", "idle", "--pid", "1"], "--data-dir <DATA_DIR>");
}

#[test]
fn values_out_of_range_are_refused_before_anything_starts() {
    // An open-loop rate so low its interval would overflow: refused, not a panic.
    refused(
        &["bench", "auth", "--rate", "1e-300", "--duration", "1s"],
        "--rate must be a positive number",
    );
    // A schema with a SQLite journal would be dropped silently.
    refused(
        &[
            "explain",
            "--rrn",
            "123456789012",
            "--database",
            "sqlite:/nonexistent/switch.db",
            "--database-schema",
            "shoudan",
        ],
        "a sqlite: journal has no schema",
    );
}
