//! The shoudan binary: every command an operator or a test runs.
fn main() {}
