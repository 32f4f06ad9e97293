//! What the tests that run the `shoudan` binary share: running it with text on its standard
//! input, and the test PostgreSQL server. Not every test file uses both.

#![allow(dead_code)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `shoudan ARGS` with `input` on its standard input, which is closed after it.
pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoudan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The test PostgreSQL server (`SHOUDAN_PG_URL`), or `None` after saying the PostgreSQL part is
/// skipped; with `SHOUDAN_REQUIRE_PG` set (`scripts/test`), a missing server fails the test.
pub fn pg_url() -> Option<String> {
    match std::env::var("SHOUDAN_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("SHOUDAN_REQUIRE_PG").is_none(),
                "SHOUDAN_REQUIRE_PG is set but SHOUDAN_PG_URL is not"
            );
            eprintln!("SKIPPED on PostgreSQL: SHOUDAN_PG_URL is not set");
            None
        }
    }
}

/// Runs `command`, which must refuse to start (`what` says what it was given): it must exit
/// unsuccessfully within `within`, or it is killed and the test fails. Returns its standard
/// error.
pub fn refused_within(command: &mut Command, within: Duration, what: &str) -> String {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{what}: {stderr}");
    stderr
}
