//! A reader that stops early (`shoudan explain --list | head -1`) must not make shoudan panic;
//! it ends as a Unix tool killed by SIGPIPE does (status 141), never as a success.

use std::process::{Command, Stdio};

#[test]
fn closed_stdout_ends_quietly_and_not_as_a_success() {
    // The read end is closed before shoudan starts, so its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_shoudan"))
        .args(["explain", "--list"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run shoudan");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(
        output.status.code(),
        Some(141),
        "status {:?}, stderr: {stderr}",
        output.status
    );
}
