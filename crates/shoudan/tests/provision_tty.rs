//! `shoudan provision key` and `serve` at a real terminal (a pseudo-terminal from `script`,
//! util-linux): a component is read with echo off; Ctrl-C while it is read ends the command
//! with echo back on, as the shell needs it, and nothing written; Ctrl-C once `serve` has read
//! its master key's components is its graceful stop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits up to 20 s for `what` in the output read so far.
fn wait_for(output: &Mutex<Vec<u8>>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        if text.contains(what) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell running `script_text` at a pseudo-terminal (`script`, util-linux): what it prints
/// gathers in `output`, and what is written to `keys` is typed at its terminal.
struct Tty {
    child: std::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
    keys: std::process::ChildStdin,
}

impl Tty {
    fn start(dir: &std::path::Path, script_text: &str) -> Tty {
        let session = dir.join("session.sh");
        std::fs::write(&session, script_text).unwrap();
        let mut child = Command::new("script")
            .arg("-qfec")
            .arg(format!("sh {}", session.display()))
            .arg("/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`script` (util-linux) runs the command at a pseudo-terminal");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let reader = {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        let keys = child.stdin.take().unwrap();
        Tty {
            child,
            output,
            reader,
            keys,
        }
    }

    fn type_in(&mut self, text: &[u8]) {
        self.keys.write_all(text).unwrap();
        self.keys.flush().unwrap();
    }

    /// Ends the session once `last` is printed: everything it printed.
    fn finish(self, last: &str) -> String {
        wait_for(&self.output, last);
        let Tty {
            mut child,
            output,
            reader,
            keys,
        } = self;
        drop(keys);
        let _ = child.wait();
        reader.join().unwrap();
        String::from_utf8_lossy(&output.lock().unwrap()).into_owned()
    }
}

/// A node's configuration in `dir` on a SQLite journal there, its master key named by `master`
/// (a `[hsm]` line); the file's path.
fn write_config(dir: &std::path::Path, master: &str) -> std::path::PathBuf {
    let d = dir.display();
    let config = dir.join("shoudan.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nterminal_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             database = \"sqlite:{d}/switch.db\"\n\n[hsm]\n{master}\n\
             key_store_file = \"{d}/hsm.store\"\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn ctrl_c_while_a_component_is_read_turns_echo_back_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = write_config(dir.path(), &format!("master_key_file = \"{d}/master.key\""));
    let bin = env!("CARGO_BIN_EXE_shoudan");
    let init = Command::new(bin)
        .args(["provision", "init", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let store_before = std::fs::read(dir.path().join("hsm.store")).unwrap();

    // The shell the terminal runs: the command, then what became of the terminal's echo. Its
    // trap keeps the shell itself going past the Ctrl-C (the command still gets the signal).
    let mut tty = Tty::start(
        dir.path(),
        &format!(
            "trap 'echo trapped' INT\n\
             {bin} provision key --config {} --usage zpk\n\
             echo \"status=$?\"\n\
             stty -a | tr ' ;' '\\n\\n' | grep -x -e echo -e -echo | sed 's/^/mode=/'\n",
            config.display()
        ),
    );
    let prompt = wait_for(&tty.output, "(not shown)");
    assert!(prompt.contains("component 1 (not shown)"), "{prompt}");
    // Typed at the prompt: not shown.
    tty.type_in(b"0123456789ABCDEF");
    std::thread::sleep(Duration::from_millis(300));
    tty.type_in(b"\x03");
    let text = tty.finish("mode=");
    assert!(
        !text.contains("0123456789ABCDEF"),
        "the component was shown: {text}"
    );
    assert!(text.contains("status=130"), "{text}");
    assert!(text.contains("mode=echo"), "echo left off: {text}");
    assert!(!text.contains("mode=-echo"), "echo left off: {text}");
    assert_eq!(
        std::fs::read(dir.path().join("hsm.store")).unwrap(),
        store_before,
        "the key store changed"
    );
}

/// `serve` whose master key its custodians type in at a terminal: the components are read with
/// echo off, and a later Ctrl-C is `serve`'s graceful stop (status 0), not an interruption of
/// the reading (status 130, requests in progress dropped).
#[test]
fn serve_reads_its_components_at_a_terminal_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "master_key_components = 2");
    let parts = [
        "00112233445566778899AABBCCDDEEFF0123456789ABCDEFFEDCBA9876543210",
        "F0E1D2C3B4A5968778695A4B3C2D1E0F1F2E3D4C5B6A79880011223344556677",
    ];
    let bin = env!("CARGO_BIN_EXE_shoudan");
    let mut init = Command::new(bin)
        .args(["provision", "init", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    init.stdin
        .take()
        .unwrap()
        .write_all(format!("{0}\n{0}\n{1}\n{1}\n", parts[0], parts[1]).as_bytes())
        .unwrap();
    assert!(init.wait().unwrap().success());

    let mut tty = Tty::start(
        dir.path(),
        &format!(
            "trap 'echo trapped' INT\n\
             {bin} serve --config {}\n\
             echo \"status=$?\"\n",
            config.display()
        ),
    );
    for (n, part) in parts.iter().enumerate() {
        let asked = format!("master key component {} (not shown)", n + 1);
        let prompt = wait_for(&tty.output, &asked);
        assert!(prompt.contains(&asked), "{prompt}");
        tty.type_in(format!("{part}\n").as_bytes());
    }
    let started = wait_for(&tty.output, "metrics");
    assert!(
        started.contains("master key: check value") && started.contains("metrics"),
        "not started: {started}"
    );
    std::thread::sleep(Duration::from_millis(300));
    tty.type_in(b"\x03");
    let text = tty.finish("status=");
    for part in parts {
        assert!(!text.contains(&part[..16]), "a component was shown: {text}");
    }
    assert!(text.contains("status=0"), "not a graceful stop: {text}");
}
