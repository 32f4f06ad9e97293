//! A reader that stops early (`shoudan explain --list | head -1`) must not make shoudan panic.

use std::process::{Command, Stdio};

#[test]
fn closed_stdout_ends_quietly() {
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
    assert!(
        output.status.success(),
        "status {:?}, stderr: {stderr}",
        output.status
    );
}
