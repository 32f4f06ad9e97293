//! Runs the `shoudan` binary the way the CLI tests need: with text on its standard input.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

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
