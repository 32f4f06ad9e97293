//! Command lines refused before anything runs: flags that mean something only with another
//! (not silently ignored), values out of range, dates that are not dates; usage errors that
//! never repeat a key or a card number; help and version as clap prints them.

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

/// Standard output and standard error of a run, as text.
fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A value typed without its flag is quoted by the usage error: a key or a card number is not
/// printed back. A card number is masked, any other run of 8 or more hex digits (a key, a card
/// number that fails Luhn, track data, a key typed in groups) hidden; the usage still follows.
#[test]
fn usage_errors_hide_keys_and_card_numbers() {
    for (args, shown, secrets) in [
        (
            &["crypto", "kcv", "0123456789ABCDEFFEDCBA9876543210"][..],
            "unexpected argument '<redacted>' found",
            &["0123456789", "FEDCBA98"][..],
        ),
        (
            &["crypto", "kcv", "0123 4567 89AB CDEF"],
            "unexpected argument '<redacted>' found",
            &["4567", "89AB", "CDEF"],
        ),
        (
            &[
                "crypto",
                "pinblock",
                "--pin",
                "123456",
                "6222020200112233446",
            ],
            "unexpected argument '<redacted>' found",
            &["6222020200112233446", "020011223"],
        ),
        (
            &[
                "crypto",
                "pinblock",
                "--pin",
                "123456",
                "6222020200112233445",
            ],
            "unexpected argument '<redacted>' found",
            &["6222020200112233445", "2233445"],
        ),
        (
            &[
                "crypto",
                "pinblock",
                "--pin",
                "123456",
                ";6222020200112233446=25121010000000000000?",
            ],
            "unexpected argument '<redacted>' found",
            &["6222020200112233446", "2512101"],
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let (stdout, stderr) = texts(&out);
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(shown), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage: shoudan crypto "),
            "{args:?}: {stderr}"
        );
        for secret in secrets {
            assert!(!stderr.contains(secret), "{args:?}: {stderr}");
        }
    }
    // A PIN typed without its flag, and a key typed into the wrong one: hidden whole; clap's
    // own words (the flag, its possible values) are left as they were.
    let (_, stderr) = texts(&run(&[
        "crypto",
        "pinblock",
        "--pan",
        "6222020200112233446",
        "123456",
    ]));
    assert!(
        stderr.contains("unexpected argument '<redacted>' found") && !stderr.contains("123456"),
        "{stderr}"
    );
    let (_, stderr) = texts(&run(&[
        "crypto",
        "mac",
        "--alg",
        "0123456789ABCDEF",
        "--key",
        "00",
        "--data",
        "00",
    ]));
    assert!(
        stderr.contains("invalid value '<redacted>' for '--alg <ALG>'")
            && stderr.contains("cup-ecb")
            && !stderr.contains("89ABCDEF"),
        "{stderr}"
    );
}

/// Help and version are printed on standard output with exit 0, as before usage errors were
/// redacted; a command without its subcommand still gets its help on standard error, exit 2.
#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["crypto", "kcv", "--help"],
        &["help", "explain"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let (stdout, _) = texts(&out);
        assert!(stdout.contains("Usage: shoudan"), "{args:?}: {stdout}");
    }
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(texts(&out).0.starts_with("shoudan "));
    let out = run(&["crypto"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("Usage: shoudan crypto <COMMAND>"));
}

/// A date that is not one is reported as such before the journal is opened, not as a missing
/// journal.
#[test]
fn a_bad_date_is_refused_before_the_journal_is_opened() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let missing = tmp.path().join("no-data");
    let dir = missing.to_str().expect("temporary directory as text");
    for (args, says) in [
        (&["settle", "--date", "tomorrow"][..], "--date: not a date"),
        (&["settle", "--date", "2026-13-45"], "--date: not a date"),
        (&["payouts", "--run", "tomorrow"], "--run: not a date"),
        (&["payouts", "--run", "2026-02-30"], "--run: not a date"),
        (&["reconcile", "--date", "2026-13-45"], "--date: not a date"),
    ] {
        let out = run(&[args, &["--data-dir", dir]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let (_, stderr) = texts(&out);
        assert!(
            stderr.starts_with(&format!("error: {says}")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("no journal"), "{args:?}: {stderr}");
    }
    // A date that is one gets as far as the journal, which is not there.
    let out = run(&["settle", "--date", "2020-01-01", "--data-dir", dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("no journal"), "{:?}", texts(&out));
}
