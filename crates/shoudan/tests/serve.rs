//! `shoudan serve --config`: the production entry point on a real journal (SQLite, and
//! PostgreSQL when `SHOUDAN_PG_URL` is set): keys from a master key file and a key store,
//! fee plans written to the store, the switch and the HTTP side listening; a bad config is
//! refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use paycrypto::{Hsm, KeyAlgorithm, KeyUsage, MasterKey, OsRandom, SoftHsm};

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");
const MASTER_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Writes the key files and a config naming `database`; returns the config's path.
fn write_config(dir: &Path, database: &str, schema: Option<&str>) -> std::path::PathBuf {
    let master = MasterKey::from_hex(MASTER_HEX).unwrap();
    let hsm = SoftHsm::new(&master, Box::new(OsRandom));
    let zpk = hsm
        .import_key(
            KeyUsage::Zpk,
            KeyAlgorithm::Des,
            "11111111111111112222222222222222",
        )
        .unwrap();
    std::fs::write(dir.join("master.key"), MASTER_HEX).unwrap();
    std::fs::set_permissions(
        dir.join("master.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    std::fs::write(dir.join("hsm.store"), hsm.export_store().unwrap()).unwrap();
    std::fs::write(
        dir.join("fee-plans.json"),
        r#"[{"mid": "898110048990001", "debit_bp": 38, "debit_cap_fen": 2000, "credit_bp": 60,
            "credit_cap_fen": null, "foreign_bp": 150, "qr_bp": 30, "payout_delay_days": 1}]"#,
    )
    .unwrap();
    let schema = schema.map_or(String::new(), |s| format!("database_schema = \"{s}\"\n"));
    let config = format!(
        r#"node_id = 3
terminal_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
database = "{database}"
{schema}default_issuer = "ICBC"
fee_plans = "{dir}/fee-plans.json"
saf_lease_ms = 5000

[hsm]
master_key_file = "{dir}/master.key"
key_store_file = "{dir}/hsm.store"

[[issuer]]
bank = "ICBC"
addr = "127.0.0.1:9"
zpk = "{zpk}"
timeout_ms = 500
"#,
        dir = dir.display(),
    );
    let path = dir.join("shoudan.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn check(config: &Path) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `serve --check` reads and never writes: it may run beside the node it is about to
/// replace, so it neither creates the database nor migrates it nor writes the fee plans.
#[test]
fn serve_checks_its_config_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.db");
    let database = format!("sqlite:{}", path.display());
    let config = write_config(dir.path(), &database, None);
    let latest = store::schema::latest_version();
    let all = i64::try_from(store::schema::MIGRATIONS.len()).unwrap();
    let out = check(&config);
    assert!(
        out.contains("configuration ok: 0 terminals, 1 issuers, 1 fee plans to write"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "database: new; a start creates it ({all} migrations)"
        )),
        "{out}"
    );
    assert!(!path.exists(), "--check created the database");

    // A database one migration behind: listed, not applied.
    let store = store::SqliteStore::open(&store::SqliteConfig::new(&path)).unwrap();
    store.close();
    drop(store);
    let db = rusqlite::Connection::open(&path).unwrap();
    let name: String = db
        .query_row(
            "SELECT name FROM schema_migrations WHERE version = ?1",
            [latest],
            |r| r.get(0),
        )
        .unwrap();
    db.execute("DELETE FROM schema_migrations WHERE version = ?1", [latest])
        .unwrap();
    let out = check(&config);
    assert!(
        out.contains("database: a start applies 1 migrations:"),
        "{out}"
    );
    assert!(out.contains(&format!("{latest:>3}  ")), "{out}");
    let versions = |path: &Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(versions(&path), all - 1, "--check migrated");
    assert!(out.contains(&name), "{out}");
    // Put back (its tables are there): nothing left to do. No check wrote the fee plans
    // (a start does: serve_listens_for_terminals_and_http).
    db.execute(
        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, 0)",
        rusqlite::params![latest, name],
    )
    .unwrap();
    drop(db);
    let store = store::SqliteStore::open(&store::SqliteConfig::new(&path)).unwrap();
    use store::Store;
    assert!(store.settlement_terms("898110048990001").unwrap().is_none());
    store.close();
    drop(store);
    assert!(check(&config).contains("database: up to date"));

    match std::env::var("SHOUDAN_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let pg_dir = tempfile::tempdir().unwrap();
            let schema = format!("serve_{}", std::process::id());
            let config = write_config(pg_dir.path(), &url, Some(&schema));
            let out = check(&config);
            assert!(out.contains("configuration ok"), "{out}");
            assert!(out.contains("database: new"), "{out}");
            // Not created by the check: the schema holds no migrations table yet.
            let status = store::PgStore::inspect(&store::PgConfig {
                url: url.clone(),
                schema: Some(schema.clone()),
            })
            .unwrap();
            assert!(!status.exists, "{status:?}");
            let pg = store::PgStore::open(&store::PgConfig {
                url: url.clone(),
                schema: Some(schema.clone()),
            })
            .unwrap();
            pg.close();
            drop(pg);
            let out = check(&config);
            assert!(out.contains("database: up to date"), "{out}");
            assert!(out.contains("configuration ok: 0 terminals"), "{out}");
            let _ = store::PgStore::drop_schema(&url, &schema);
        }
        _ => {
            assert!(
                std::env::var_os("SHOUDAN_REQUIRE_PG").is_none(),
                "SHOUDAN_REQUIRE_PG is set but SHOUDAN_PG_URL is not"
            );
            eprintln!("SKIPPED on PostgreSQL: SHOUDAN_PG_URL is not set");
        }
    }
}

#[test]
fn a_bad_config_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "mysql://nowhere", None);
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected sqlite:"));
    std::fs::write(&config, "terminal_listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("line 2:"), "{stderr}");
}

/// `serve --check` on `config` with `from` replaced by `to`: its error output, which must be
/// a refusal.
fn refused(dir: &Path, config: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    let changed = dir.join("changed.toml");
    std::fs::write(&changed, text.replacen(from, to, 1)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(&changed)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{to:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn settings_that_would_lose_or_repeat_money_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config(dir.path(), &database, None);
    let d = dir.path();
    for (from, to, says) in [
        ("node_id = 3", "node_id = 0", "node_id 0"),
        ("node_id = 3", "node_id = 103", "node_id 103"),
        ("timeout_ms = 500", "timeout_ms = 0", "timeout_ms 0"),
        (
            "timeout_ms = 500",
            "timeout_ms = 900000",
            "timeout_ms 900000",
        ),
        (
            "default_issuer = \"ICBC\"",
            "default_issuer = \"ABC\"",
            "default_issuer ABC",
        ),
        (
            "saf_lease_ms = 5000",
            "saf_lease_ms = 400",
            "saf_lease_ms 400",
        ),
        (
            "saf_lease_ms = 5000",
            "saf_lease_ms = 5000\nsaf_interval_ms = 0",
            "saf_interval_ms 0",
        ),
        (
            "saf_lease_ms = 5000",
            "saf_lease_ms = 5000\njournal_wait_ms = 50",
            "journal_wait_ms 50",
        ),
        (
            "[[issuer]]",
            "[[issuer]]\nbank = \"ICBC\"\naddr = \"127.0.0.1:9\"\nzpk = \"1\"\ntimeout_ms = 500\n\n[[issuer]]",
            "configured twice",
        ),
    ] {
        let error = refused(d, &config, from, to);
        assert!(error.contains(says), "{to:?}: {error}");
    }
    // An issuer timeout the default lease (30 s) does not outlast, no lease set: another node
    // could take over a reversal while this one still waits for the issuer.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("saf_lease_ms = 5000\n", "")
        .replace("timeout_ms = 500", "timeout_ms = 45000");
    std::fs::write(d.join("lease.toml"), text).unwrap();
    let error = refused(d, &d.join("lease.toml"), "node_id = 3", "node_id = 3");
    assert!(
        error.contains("saf_lease_ms 30000 (the default)"),
        "{error}"
    );
    // A master key others may read.
    let key = d.join("master.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let error = refused(d, &config, "node_id = 3", "node_id = 3");
    assert!(error.contains("mode 644"), "{error}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    // A key handle the key store does not hold.
    let text = std::fs::read_to_string(&config).unwrap();
    let zpk = text
        .lines()
        .find_map(|l| l.strip_prefix("zpk = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let error = refused(d, &config, &format!("zpk = \"{zpk}\""), "zpk = \"7\"");
    assert!(error.contains("not in the key store"), "{error}");
    // A password in the database setting is never printed back, however it is mistyped.
    let secret = "s3cr3t-pw";
    let error = refused(
        d,
        &config,
        &format!("database = \"{database}\""),
        &format!("database = \"mysql://u:{secret}@h/db\""),
    );
    assert!(error.contains("expected sqlite:"), "{error}");
    assert!(!error.contains(secret), "{error}");
    let error = refused(
        d,
        &config,
        &format!("database = \"{database}\""),
        &format!("databse = \"postgres://u:{secret}@h/db\""),
    );
    assert!(error.contains("unknown field"), "{error}");
    assert!(!error.contains(secret), "{error}");
}

/// An operator's stop: SIGTERM to `child`.
fn sigterm(child: &std::process::Child) {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
}

/// How `child` exited, which it must within `seconds`, else the test fails saying `why`.
fn exit_within(
    child: &mut std::process::Child,
    seconds: u64,
    why: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A start that cannot finish (a database that accepts the connection and never answers):
/// the first signal is taken as a stop once started, the second ends it at once.
#[test]
fn a_start_that_hangs_is_ended_by_a_second_signal() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let database = format!(
        "postgres://shoudan@{}/shoudan",
        silent.local_addr().unwrap()
    );
    let config = write_config(dir.path(), &database, None);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Connected to the silent server: the start is waiting for it.
    let _waiting = silent.accept().unwrap();
    sigterm(&child);
    let said = lines_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("nothing said after the first signal");
    assert!(said.contains("stopping once started"), "{said}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "stopped at the first signal"
    );
    sigterm(&child);
    let status = exit_within(&mut child, 10, "the second signal did not end the start");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("stopped during start-up"), "{stderr}");
}

#[test]
fn serve_listens_for_terminals_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config(dir.path(), &database, None);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut switch_addr = None;
    let mut http_addr = None;
    let mut metrics_addr = None;
    while switch_addr.is_none() || http_addr.is_none() || metrics_addr.is_none() {
        let line = lines
            .next()
            .expect("serve stopped before listening")
            .unwrap();
        if let Some(rest) = line.trim().strip_prefix("switch (terminals)") {
            switch_addr = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("http") {
            http_addr = Some(
                rest.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned(),
            );
        }
        if let Some(rest) = line.trim().strip_prefix("metrics") {
            metrics_addr = Some(
                rest.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches("/metrics")
                    .to_owned(),
            );
        }
    }
    std::net::TcpStream::connect(switch_addr.as_deref().unwrap()).unwrap();
    let get_from = |addr: &str, path: &str| {
        let mut http = std::net::TcpStream::connect(addr).unwrap();
        http.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).unwrap();
        answer
    };
    let get = |path: &str| get_from(http_addr.as_deref().unwrap(), path);
    let answer = get("/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every merchant's volumes are the operator's: `/metrics` is on its own listener only.
    let answer = get("/metrics");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let metrics = get_from(metrics_addr.as_deref().unwrap(), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\nshoudan_in_flight_max "), "{metrics}");
    let answer = get_from(metrics_addr.as_deref().unwrap(), "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Served behind TLS: the portal's cookies are never sent over plain HTTP.
    let login = get("/login");
    let cookie = login
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: shoudan_login_csrf=")
        })
        .unwrap_or_else(|| panic!("{login}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // An operator's stop (SIGTERM): the node finishes, closes its journal and exits cleanly,
    // even with an HTTP client that never finishes its request (it holds the stop 10 s at
    // most) and a terminal connected.
    let mut slow = std::net::TcpStream::connect(http_addr.as_deref().unwrap()).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let _terminal = std::net::TcpStream::connect(switch_addr.as_deref().unwrap()).unwrap();
    sigterm(&child);
    let status = exit_within(&mut child, 30, "serve did not stop");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{status:?}");
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    // The start wrote the fee plans.
    let store =
        store::SqliteStore::open(&store::SqliteConfig::new(dir.path().join("switch.db"))).unwrap();
    use store::Store;
    let terms = store.settlement_terms("898110048990001").unwrap().unwrap();
    assert_eq!((terms.debit_bp, terms.debit_cap_fen), (38, Some(2_000)));
    store.close();
}
