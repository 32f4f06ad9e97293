//! `shoudan serve --config`: the production entry point on a real journal (SQLite, and
//! PostgreSQL when `SHOUDAN_PG_URL` is set): keys from a master key file and a key store,
//! fee plans written to the store, the switch and the HTTP side listening; a bad config is
//! refused with its reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use paycrypto::{Hsm, KeyAlgorithm, KeyUsage, MasterKey, OsRandom, SoftHsm};

mod cli;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");
const MASTER_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Writes the key files and a config naming `database`; returns the config's path.
fn write_config(dir: &Path, database: &str, schema: Option<&str>) -> std::path::PathBuf {
    write_config_with_zpk(dir, database, schema, "11111111111111112222222222222222")
}

/// The same, with the issuer's zone PIN key `zpk_hex`.
fn write_config_with_zpk(
    dir: &Path,
    database: &str,
    schema: Option<&str>,
    zpk_hex: &str,
) -> std::path::PathBuf {
    let master = MasterKey::from_hex(MASTER_HEX).unwrap();
    let hsm = SoftHsm::new(&master, Box::new(OsRandom));
    let zpk = hsm
        .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, zpk_hex)
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

/// The merchant of `write_config`'s fee plan, in `store`.
fn provision_the_plans_merchant(store: &dyn store::Store) {
    store
        .submit(vec![store::Record::UpsertMerchant(store::MerchantRow {
            mid: "898110048990001".into(),
            name: "Teahouse".into(),
            status: store::Status::Active,
            mcc: "5812".into(),
        })])
        .unwrap()
        .wait()
        .unwrap();
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
    // Nothing else was left in the directory either.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["fee-plans.json", "hsm.store", "master.key", "shoudan.toml"],
        "{left:?}"
    );
    // A journal in a directory that does not exist (a typing error) cannot be made there:
    // the check fails, as the start would.
    let elsewhere = write_config(
        dir.path(),
        &format!(
            "sqlite:{}",
            dir.path().join("no-such-dir/switch.db").display()
        ),
        None,
    );
    let refused = check_refused(&elsewhere, "a journal in a directory that does not exist");
    assert!(refused.contains("is not a directory"), "{refused}");
    let config = write_config(dir.path(), &database, None);

    // A database one migration behind: listed, not applied. It holds the fee plan's merchant
    // (a check of an existing database refuses plans for merchants it lacks, as a start does).
    let store = store::SqliteStore::open(&store::SqliteConfig::new(&path)).unwrap();
    provision_the_plans_merchant(&store);
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

    if let Some(url) = cli::pg_url() {
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
        provision_the_plans_merchant(&pg);
        pg.close();
        drop(pg);
        let out = check(&config);
        assert!(out.contains("database: up to date"), "{out}");
        assert!(out.contains("configuration ok: 0 terminals"), "{out}");
        let _ = store::PgStore::drop_schema(&url, &schema);
    }
}

#[test]
fn a_bad_config_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "mysql://nowhere", None);
    assert!(check_refused(&config, "a mysql URL").contains("expected sqlite:"));
    std::fs::write(&config, "terminal_listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let stderr = check_refused(&config, "an unknown key");
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("line 2:"), "{stderr}");
}

/// A config whose database URL carries a password is refused while others may read the file,
/// and read once they may not; the refusal does not print the password.
#[test]
fn a_database_password_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config(dir.path(), &database, None);
    let text = std::fs::read_to_string(&config).unwrap();
    // Port 1 on loopback: nothing answers, so a config that passes the mode check is refused
    // for the connection instead.
    let secret = "s3cr3t-pw";
    let url = format!("postgres://shoudan:{secret}@127.0.0.1:1/shoudan");
    let with_password = dir.path().join("with-password.toml");
    std::fs::write(
        &with_password,
        text.replacen(
            &format!("database = \"{database}\""),
            &format!("database = \"{url}\""),
            1,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&with_password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = check_refused(&with_password, "a readable database password");
    assert!(stderr.contains("mode 644"), "{stderr}");
    assert!(stderr.contains("chmod 0600"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    std::fs::set_permissions(&with_password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = check_refused(&with_password, "an unreachable database");
    assert!(!stderr.contains("chmod"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    // Without a password, a file others may read is no matter (as the tests' own configs).
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config path that is a FIFO (or a device) is read no further than a config can be long.
#[test]
fn a_config_that_never_ends_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let line = [b'#'; 1023]
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>();
            // 4 MiB, or until the reader has had enough and closed its end.
            for _ in 0..4096 {
                if pipe.write_all(&line).is_err() {
                    break;
                }
            }
        })
    };
    let stderr = check_refused(&fifo, "a config that never ends");
    assert!(stderr.contains("larger than"), "{stderr}");
    writer.join().unwrap();
}

/// A single-length DES zone PIN key is refused: no PIN is translated down to one, so every PIN
/// transaction of the bank from a double-length terminal would be answered 96.
#[test]
fn a_single_length_zone_pin_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config_with_zpk(dir.path(), &database, None, "1111111111111111");
    let stderr = check_refused(&config, "a single-length zone PIN key");
    assert!(stderr.contains("single DES zone PIN key"), "{stderr}");
    // So is a double-length one whose halves are equal: single DES in strength.
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config_with_zpk(
        dir.path(),
        &database,
        None,
        "0123456789ABCDEF0123456789ABCDEF",
    );
    let stderr = check_refused(&config, "a zone PIN key with equal halves");
    assert!(stderr.contains("single DES zone PIN key"), "{stderr}");
}

/// `serve --check` on `config` with `from` replaced by `to`: its error output, which must be
/// a refusal.
fn refused(dir: &Path, config: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    let changed = dir.join("changed.toml");
    std::fs::write(&changed, text.replacen(from, to, 1)).unwrap();
    check_refused(&changed, &format!("{to:?}"))
}

/// `serve --check` on `config`, which must refuse it (`what` says what it was given): its
/// error output.
fn check_refused(config: &Path, what: &str) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{what} was accepted");
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
            "saf_lease_ms = 5000",
            "saf_lease_ms = 5000\nfirst_frame_timeout_ms = 10",
            "first_frame_timeout_ms 10",
        ),
        (
            "[[issuer]]",
            "[[issuer]]\nbank = \"ICBC\"\naddr = \"127.0.0.1:9\"\nzpk = \"1\"\ntimeout_ms = 500\n\n[[issuer]]",
            "configured twice",
        ),
        (
            "[[issuer]]",
            "[[issuer]]\nbank = \"icbc\"\naddr = \"127.0.0.1:9\"\nzpk = \"9\"\ntimeout_ms = 500\n\n[[issuer]]",
            "did you mean ICBC?",
        ),
        (
            "node_id = 3",
            "node_id = 3\ndatabase_schema = \"shoudan\"",
            "a sqlite: journal has no schema",
        ),
        (
            "node_id = 3",
            "node_id = 3\nwebhook_ca_file = \"/nonexistent/webhook-ca.pem\"",
            "webhook_ca_file /nonexistent/webhook-ca.pem",
        ),
        // TLS that would not check the database server's name.
        (
            &database,
            "postgres://shoudan@db.example/journal?sslmode=require",
            "use sslmode=verify-full with sslrootcert=FILE",
        ),
    ] {
        let error = refused(d, &config, from, to);
        assert!(error.contains(says), "{to:?}: {error}");
    }
    // Another bank given ICBC's zone PIN key (a copied entry, or the same handle spelled
    // another way): its PIN blocks would go under the wrong key.
    let text = std::fs::read_to_string(&config).unwrap();
    let zpk_line = text.lines().find(|l| l.starts_with("zpk = ")).unwrap();
    let handle = zpk_line
        .trim_start_matches("zpk = ")
        .trim_matches('"')
        .parse::<paycrypto::KeyHandle>()
        .unwrap();
    let number = handle.to_string().trim_start_matches("key-").to_owned();
    for spelling in [
        zpk_line.to_owned(),
        format!("zpk = \"{handle}\""),
        format!("zpk = \"{number}\""),
        format!("zpk = \"0{number}\""),
    ] {
        let error = refused(
            d,
            &config,
            "[[issuer]]",
            &format!(
                "[[issuer]]\nbank = \"ABC\"\naddr = \"127.0.0.1:9\"\n{spelling}\ntimeout_ms = 500\n\n[[issuer]]"
            ),
        );
        assert!(
            error.contains("each bank has its own zone PIN key"),
            "{spelling}: {error}"
        );
    }
    // A fee plan whose rate is a typing error (5000 bp for 50) or negative, or whose payout
    // waits 90 days: refused, not charged as written (or clamped).
    let plans = d.join("fee-plans.json");
    let good_plans = std::fs::read_to_string(&plans).unwrap();
    for (from, to) in [
        ("\"debit_bp\": 38", "\"debit_bp\": 5000"),
        ("\"credit_bp\": 60", "\"credit_bp\": -60"),
        ("\"debit_cap_fen\": 2000", "\"debit_cap_fen\": -1"),
        ("\"payout_delay_days\": 1", "\"payout_delay_days\": 90"),
    ] {
        assert!(good_plans.contains(from), "{from}");
        std::fs::write(&plans, good_plans.replacen(from, to, 1)).unwrap();
        let error = refused(d, &config, "node_id = 3", "node_id = 3");
        assert!(
            error.contains("fee plans") && error.contains("898110048990001"),
            "{to}: {error}"
        );
    }
    // A plan for a merchant the journal does not hold (a mistyped MID): refused by the check,
    // as the restart it approves would refuse it.
    std::fs::write(&plans, &good_plans).unwrap();
    let journal = store::SqliteStore::open(&store::SqliteConfig::new(d.join("switch.db"))).unwrap();
    provision_the_plans_merchant(&journal);
    journal.close();
    drop(journal);
    check(&config);
    std::fs::write(
        &plans,
        good_plans.replacen("898110048990001", "898110048990009", 1),
    )
    .unwrap();
    let error = refused(d, &config, "node_id = 3", "node_id = 3");
    assert!(
        error.contains("merchant 898110048990009 is not provisioned"),
        "{error}"
    );
    std::fs::write(&plans, &good_plans).unwrap();
    // Likewise a risk rules file naming a merchant the journal does not hold: that merchant
    // would go on under the default rules, unsaid.
    let rules = d.join("risk-rules.json");
    std::fs::write(
        &rules,
        r#"{"merchants": {"898110048990009": [{"id": "cap", "kind": "amount-max", "max_fen": 1}]}}"#,
    )
    .unwrap();
    let error = refused(
        d,
        &config,
        "node_id = 3",
        &format!("node_id = 3\nrisk_rules = \"{}\"", rules.display()),
    );
    assert!(
        error.contains("risk rules: merchant 898110048990009 is not provisioned"),
        "{error}"
    );
    // Naming the provisioned merchant, the same file passes.
    std::fs::write(
        &rules,
        r#"{"merchants": {"898110048990001": [{"id": "cap", "kind": "amount-max", "max_fen": 1}]}}"#,
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let with_rules = d.join("with-rules.toml");
    std::fs::write(
        &with_rules,
        text.replacen(
            "node_id = 3",
            &format!("node_id = 3\nrisk_rules = \"{}\"", rules.display()),
            1,
        ),
    )
    .unwrap();
    check(&with_rules);
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

/// Where a started `serve` listens, read from the lines it prints.
struct Listening {
    switch: String,
    http: String,
    /// `None` when it serves no metrics (no `metrics_listen`).
    metrics: Option<String>,
}

/// Reads `serve`'s standard output until it has printed where it listens (its metrics line,
/// an address or "not served", comes last).
fn listening(
    child: &mut std::process::Child,
) -> (
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    Listening,
) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut switch = None;
    let mut http = None;
    loop {
        let line = lines
            .next()
            .expect("serve stopped before listening")
            .unwrap();
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("switch (terminals)") {
            switch = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("http") {
            http = Some(
                rest.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned(),
            );
        }
        if let Some(rest) = line.strip_prefix("metrics") {
            let metrics = rest
                .trim()
                .strip_prefix("http://")
                .map(|addr| addr.trim_end_matches("/metrics").to_owned());
            let listening = Listening {
                switch: switch.expect("no switch address before the metrics line"),
                http: http.expect("no HTTP address before the metrics line"),
                metrics,
            };
            return (lines, listening);
        }
    }
}

/// What `child` wrote to its standard error (piped), to its end.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
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
    let stderr = stderr_of(&mut child);
    assert!(stderr.contains("stopped during start-up"), "{stderr}");
}

/// A PostgreSQL journal that cannot be reached: the start fails with the reason, not with a
/// panic that hides it.
#[test]
fn a_journal_that_cannot_be_reached_is_named_as_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let database = format!(
        "postgres://shoudan@{}/shoudan",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let config = write_config(dir.path(), &database, None);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("connecting to server"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}

#[test]
fn serve_listens_for_terminals_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("switch.db").display());
    let config = write_config(dir.path(), &database, None);
    // A fee plan for a merchant the journal does not hold (a mistyped MID would leave the real
    // merchant on the default plan): the start is refused until it is provisioned.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("merchant 898110048990001 is not provisioned"),
        "{stderr}"
    );
    let c = config.to_str().unwrap();
    let (code, _, err) = provision(
        &[
            "merchant",
            "--config",
            c,
            "--mid",
            "898110048990001",
            "--name",
            "Teahouse",
            "--licence-no",
            "91110105MA01ABCD2Y",
            "--legal-person",
            "王五",
            "--mcc",
            "5812",
            "--address",
            "北京市朝阳区",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, listening) = listening(&mut child);
    let switch_addr = Some(listening.switch);
    let http_addr = Some(listening.http);
    let metrics_addr = listening.metrics;
    std::net::TcpStream::connect(switch_addr.as_deref().unwrap()).unwrap();
    // A second node on the same SQLite journal (its ports free, its id the same) is refused
    // before it takes the first one's requests in flight for its own.
    let second = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("in use by another node"), "{said}");
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
    // The journal's standing items for the alert rules, beside the switch's own counts.
    for standing in [
        "shoudan_saf_stuck 0",
        "shoudan_saf_refused 0",
        "shoudan_payouts_stuck 0",
    ] {
        assert!(metrics.contains(&format!("\n{standing}\n")), "{metrics}");
    }
    let answer = get_from(metrics_addr.as_deref().unwrap(), "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Served behind TLS: the portal's cookies are never sent over plain HTTP.
    let login = get("/login");
    let cookie = login
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-shoudan_login_csrf=")
        })
        .unwrap_or_else(|| panic!("{login}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // And browsers are told to come back over TLS alone.
    assert!(
        login
            .to_ascii_lowercase()
            .contains("\nstrict-transport-security: max-age=31536000"),
        "{login}"
    );
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

/// `shoudan provision ARGS` with `input` on its standard input: (exit code, stdout, stderr).
fn provision(args: &[&str], input: &str) -> (i32, String, String) {
    let all: Vec<&str> = std::iter::once("provision")
        .chain(args.iter().copied())
        .collect();
    let out = cli::run_with_stdin(&all, input);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP request with an optional JSON body and bearer token: (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// The master key held by its custodians (`master_key_components = 2`) instead of a file:
/// `init` takes their components and writes neither them nor the key; every command that opens
/// the key store takes them again, first; a mistyped one, or one typed twice, opens nothing.
/// What is shown of a component is its check value only.
#[test]
fn a_master_key_held_by_custodians_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("shoudan.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_id = 4
terminal_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
database = "sqlite:{db}"

[hsm]
master_key_components = 2
key_store_file = "{dir}/hsm.store"
"#,
            db = d.join("switch.db").display(),
            dir = d.display(),
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let parts = [
        "00112233445566778899AABBCCDDEEFF0123456789ABCDEFFEDCBA9876543210",
        "F0E1D2C3B4A5968778695A4B3C2D1E0F1F2E3D4C5B6A79880011223344556677",
    ];
    let master = format!(
        "{}
{}
",
        parts[0], parts[1]
    );
    let shows_nothing = |out: &str, err: &str| {
        let shown = format!("{out}{err}").to_ascii_uppercase();
        parts.iter().all(|p| !shown.contains(&p[..16]))
    };

    // At init each component is typed twice: nothing else could tell a mistyped one yet.
    let typed_twice = format!("{0}\n{0}\n{1}\n{1}\n", parts[0], parts[1]);
    let differently = typed_twice.replacen("0011", "0012", 1);
    let (code, out, err) = provision(&["init", "--config", c], &differently);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("typed differently"), "{err}");
    assert!(!d.join("hsm.store").exists());
    // A key file named as well: refused, nothing written in clear.
    let both = d.join("both.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[hsm]\n",
        &format!("[hsm]\nmaster_key_file = \"{}/master.key\"\n", d.display()),
    );
    std::fs::write(&both, text).unwrap();
    let (code, _, err) = provision(&["init", "--config", both.to_str().unwrap()], &typed_twice);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one of the two"), "{err}");
    assert!(!d.join("master.key").exists());
    std::fs::remove_file(&both).unwrap();

    let (code, out, err) = provision(&["init", "--config", c], &typed_twice);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("master key component 2: check value") && err.contains("master key: check"),
        "{err}"
    );
    assert!(out.contains("check value"), "{out}");
    assert!(shows_nothing(&out, &err), "{out}{err}");
    let mut files: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["hsm.store", "hsm.store.lock", "shoudan.toml"]);

    // The components again, then a TMK's: stored under the key they make.
    let tmk_parts = "0123456789ABCDEFFEDCBA9876543210
1111111111111111F0F0F0F0F0F0F0F0
";
    let (code, out, err) = provision(
        &["key", "--config", c, "--usage", "tmk"],
        &format!(
            "{master}{tmk_parts}yes
"
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert!(shows_nothing(&out, &err), "{out}{err}");
    let (code, out, err) = provision(&["keys", "--config", c], &master);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TMK") || out.contains("tmk"), "{out}");

    // A mistyped component, one typed twice, or none: refused, the key store untouched.
    let before = std::fs::read(d.join("hsm.store")).unwrap();
    let mistyped = master.replacen("0011", "0012", 1);
    let twice = format!(
        "{}
{}
",
        parts[0], parts[0]
    );
    for (input, why) in [
        (mistyped.as_str(), "does not open"),
        (twice.as_str(), "the same as an earlier one"),
        ("", "standard input ended"),
    ] {
        let (code, out, err) = provision(&["keys", "--config", c], input);
        assert_eq!(code, 2, "{why}: {out}{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(shows_nothing(&out, &err), "{out}{err}");
    }
    assert_eq!(std::fs::read(d.join("hsm.store")).unwrap(), before);

    // `serve` takes them at its start, then listens.
    let mut child = Command::new(BIN)
        .args(["serve", "--config", c])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(master.as_bytes())
        .unwrap();
    let (_lines, listening) = listening(&mut child);
    assert!(!listening.switch.is_empty());
    sigterm(&child);
    let status = exit_within(&mut child, 20, "serve did not stop");
    assert!(status.success(), "{status:?}");
    let stderr = stderr_of(&mut child);
    assert!(stderr.contains("master key: check value"), "{stderr}");
    assert!(shows_nothing("", &stderr), "{stderr}");
}

/// A deployment from nothing, as an operator makes one: keys from custodians' components,
/// a merchant that applies, its terminal, the first admin. Then `serve` starts from them: the
/// terminal signs in under the TMK its components make, the admin signs in to the API and
/// approves the merchant, and the merchant's purchases stop being refused for its review.
#[test]
fn a_deployment_is_provisioned_from_nothing_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mid = "898110000000077";
    let base = format!(
        r#"node_id = 4
terminal_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
database = "sqlite:{db}"
secure_cookies = false

[hsm]
master_key_file = "{dir}/master.key"
key_store_file = "{dir}/hsm.store"
"#,
        db = d.join("switch.db").display(),
        dir = d.display(),
    );
    let config = d.join("shoudan.toml");
    std::fs::write(&config, &base).unwrap();
    let c = config.to_str().unwrap();

    let (code, out, err) = provision(&["init", "--config", c], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("master key"), "{out}");
    let mode = std::fs::metadata(d.join("master.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o400
    );
    let (code, _, err) = provision(&["init", "--config", c], "");
    assert_eq!(code, 2, "a second init must not replace the keys");
    assert!(err.contains("already exists"), "{err}");

    // The TMK, from two custodians' components; the KCV from its paperwork is checked.
    let parts = [
        "0123456789ABCDEFFEDCBA9876543210",
        "1111111111111111F0F0F0F0F0F0F0F0",
    ];
    let tmk_bytes: Vec<u8> = paycrypto::hex::decode(parts[0])
        .unwrap()
        .iter()
        .zip(paycrypto::hex::decode(parts[1]).unwrap())
        .map(|(a, b)| a ^ b)
        .collect();
    let tmk_hex = paycrypto::hex::encode(&tmk_bytes);
    let tmk_key = paycrypto::Key::from_hex(KeyAlgorithm::Des, &tmk_hex).unwrap();
    let kcv = tmk_key.kcv().to_string();
    let components = format!("{}\n{}\n", parts[0], parts[1]);
    // A mistyped component: the KCV does not match and nothing is stored.
    let store_before = std::fs::read(d.join("hsm.store")).unwrap();
    let mistyped = format!("{}\n{}\n", parts[0], parts[1].replace("F0F0", "F0E0"));
    let (code, _, err) = provision(
        &["key", "--config", c, "--usage", "tmk", "--kcv", &kcv[..6]],
        &mistyped,
    );
    assert_eq!(code, 2);
    assert!(err.contains("nothing stored"), "{err}");
    assert_eq!(std::fs::read(d.join("hsm.store")).unwrap(), store_before);
    let (code, out, err) = provision(
        &["key", "--config", c, "--usage", "tmk", "--kcv", &kcv[..6]],
        &components,
    );
    assert_eq!(code, 0, "{err}");
    for secret in [parts[0], parts[1], tmk_hex.as_str()] {
        let shown = format!("{out}{err}").to_ascii_uppercase();
        assert!(!shown.contains(&secret.to_ascii_uppercase()), "{out}{err}");
    }
    let handle_of = |out: &str| {
        out.lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .trim_end_matches(':')
            .to_owned()
    };
    let tmk = handle_of(&out);
    assert!(out.ends_with(&format!("TMK {tmk}: KCV {kcv}\n")), "{out}");
    // The same components again (a run that looked failed), as a TMK or as anything else:
    // refused, one key is not stored twice.
    let store_before = std::fs::read(d.join("hsm.store")).unwrap();
    for usage in ["tmk", "zpk"] {
        let (code, _, err) = provision(
            &["key", "--config", c, "--usage", usage],
            &format!("{components}yes\n"),
        );
        assert_eq!(code, 2, "{usage}: {err}");
        assert!(
            err.contains("stored already") && err.contains(&tmk),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(d.join("hsm.store")).unwrap(), store_before);
    // Components that make a weak DES key (here a half of zeros) are refused, nothing stored.
    let (code, _, err) = provision(
        &["key", "--config", c, "--usage", "zpk", "--components", "3"],
        "22222222222222223333333333333333\n44444444444444445555555555555555\n\
         66666666666666667777777777777777\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("weak"), "{err}");
    assert_eq!(std::fs::read(d.join("hsm.store")).unwrap(), store_before);
    // Without --kcv the key is stored only once the custodians, shown their components' KCVs
    // and the key's, say so: one whose component's KCV does not match (mistyped) says no.
    let zpk_components = "22222222222222223333333333333333\n44444444444444445555555555555555\n\
                          0123456789ABCDEF7777777777777777\n";
    for (answer, why) in [("no\n", "not confirmed"), ("", "input ended")] {
        let (code, out, err) = provision(
            &["key", "--config", c, "--usage", "zpk", "--components", "3"],
            &format!("{zpk_components}{answer}"),
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(why) && err.contains("nothing stored"), "{err}");
        assert!(
            out.contains("component 3: KCV ") && out.contains("key: KCV "),
            "{out}"
        );
        assert_eq!(std::fs::read(d.join("hsm.store")).unwrap(), store_before);
    }
    let (code, out, err) = provision(
        &["key", "--config", c, "--usage", "zpk", "--components", "3"],
        &format!("{zpk_components}yes\n"),
    );
    assert_eq!(code, 0, "{err}");
    let zpk = handle_of(&out);
    let (code, out, err) = provision(&["keys", "--config", c], "");
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert_eq!(listed[0][..2], [tmk.as_str(), "TMK"], "{out}");
    assert_eq!(listed[0].last(), Some(&&kcv[..6]), "{out}");
    assert_eq!(listed[1][..2], [zpk.as_str(), "ZPK"], "{out}");

    // A terminal needs its merchant first, a TMK (not a ZPK) and a scheme its key fits.
    let terminal = |tid: &str, key: &str, extra: &[&str]| {
        let mut args = vec![
            "terminal", "--config", c, "--tid", tid, "--mid", mid, "--tmk", key,
        ];
        args.extend_from_slice(extra);
        provision(&args, "")
    };
    let (code, _, err) = terminal("70000001", &tmk, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not provisioned"), "{err}");
    let (code, out, err) = provision(
        &[
            "merchant",
            "--config",
            c,
            "--mid",
            mid,
            "--name",
            "朝阳便利店",
            "--licence-no",
            "91110105MA01ABCD2Y",
            "--legal-person",
            "王五",
            "--mcc",
            "5411",
            "--address",
            "北京市朝阳区",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied"), "{out}");
    let (code, _, err) = terminal("70000001", &zpk, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not a TMK"), "{err}");
    let (code, _, err) = terminal("70000001", &tmk, &["--key-scheme", "006", "--mac", "sm4"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs a SM4 TMK"), "{err}");
    let (code, _, err) = terminal("70000001", &tmk, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = terminal("70000001", &tmk, &[]);
    assert_eq!(code, 2, "a terminal provisioned again would lose its batch");
    assert!(err.contains("already provisioned"), "{err}");
    // Another terminal under the same TMK could read this one's working keys in field 62.
    let (code, _, err) = terminal("70000002", &tmk, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("is terminal 70000001's"), "{err}");

    let password = "first-admin-pass";
    let (code, out, err) = provision(
        &[
            "user",
            "--config",
            c,
            "--username",
            "root",
            "--role",
            "admin",
        ],
        &format!("{password}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(password) && !err.contains(password));

    // Another deployment's key store (or a copy older than the terminal) is not this journal's:
    // refused by the check and by a start, not served with sign-ins that all fail.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = base.replace(
        &format!("{}/master.key", d.display()),
        &format!("{}/master.key", elsewhere.display()),
    );
    let other = other.replace(
        &format!("{}/hsm.store", d.display()),
        &format!("{}/hsm.store", elsewhere.display()),
    );
    let other_config = d.join("other.toml");
    std::fs::write(&other_config, &other).unwrap();
    let o = other_config.to_str().unwrap();
    let (code, _, err) = provision(&["init", "--config", o], "");
    assert_eq!(code, 0, "{err}");
    for args in [
        &["serve", "--check", "--config", o][..],
        &["serve", "--config", o],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("holds no TMK for terminal"),
            "{args:?}: {said}"
        );
    }

    // The node starts from what was provisioned.
    std::fs::write(
        &config,
        format!(
            "{base}\n[[issuer]]\nbank = \"ICBC\"\naddr = \"127.0.0.1:9\"\nzpk = \"{zpk}\"\n\
             timeout_ms = 300\n"
        )
        .replace(
            "secure_cookies",
            "default_issuer = \"ICBC\"\nsecure_cookies",
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", c])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_lines, at) = listening(&mut child);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pos = runtime
        .block_on(terminal::Terminal::connect(terminal::TerminalConfig {
            addr: at.switch.parse().unwrap(),
            tid: "70000001".to_owned(),
            mid: mid.to_owned(),
            tmk: tmk_key,
            scheme: paycrypto::KeyScheme::DoubleWithTdk,
            mac: paycrypto::MacAlgorithm::X919,
            batch: 1,
            next_stan: 1,
            timeout: std::time::Duration::from_secs(10),
        }))
        .unwrap();
    // Field 62's keys decrypt under the TMK and match their check values.
    runtime.block_on(pos.sign_in()).unwrap();
    let purchase = terminal::Request {
        txn: terminal::TxnType::Purchase,
        card: terminal::Card {
            pan: "6222020200001234562".parse().unwrap(),
            expiry: Some("3012".to_owned()),
            pin: None,
        },
        amount: 100,
        original: None,
    };
    let before = runtime.block_on(pos.transact(&purchase)).unwrap();
    assert_eq!(before.code, "03", "an applied merchant takes no cards");

    let (status, body) = http(
        &at.http,
        "POST",
        "/api/tokens",
        None,
        &format!(r#"{{"username": "root", "password": "{password}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let (status, body) = http(
        &at.http,
        "POST",
        &format!("/api/merchant-reviews/{mid}/approve"),
        Some(&token),
        r#"{"note": "licence checked"}"#,
    );
    assert_eq!(status, 200, "{body}");
    // The node re-reads merchant states every second; the issuer's link is down, so an
    // approved merchant's purchase gets past the review and fails at the issuer instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let after = loop {
        let answer = runtime.block_on(pos.transact(&purchase)).unwrap();
        if answer.code != "03" || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(after.code, "91", "the approval did not reach the node");
    sigterm(&child);
    assert!(exit_within(&mut child, 30, "serve did not stop").success());
}

/// The provisioning commands on a PostgreSQL journal (the one several nodes share): the
/// merchant, its terminal and a user land in that database, and a terminal provisioned twice
/// is refused there too.
#[test]
fn provisioning_writes_to_a_postgresql_journal() {
    let Some(url) = cli::pg_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("provision_{}", std::process::id());
    let config = write_config(dir.path(), &url, Some(&schema));
    let c = config.to_str().unwrap();
    let (code, out, err) = provision(
        &["key", "--config", c, "--usage", "tmk"],
        "0123456789ABCDEFFEDCBA9876543210\n1111111111111111F0F0F0F0F0F0F0F0\nyes\n",
    );
    assert_eq!(code, 0, "{err}");
    let tmk = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let tmk = tmk.trim_end_matches(':').to_owned();
    let mid = "898110000000066";
    let (code, _, err) = provision(
        &[
            "merchant",
            "--config",
            c,
            "--mid",
            mid,
            "--name",
            "海淀书店",
            "--licence-no",
            "91110108MA01ABCD3Z",
            "--legal-person",
            "赵六",
            "--mcc",
            "5942",
            "--address",
            "北京市海淀区",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let terminal = [
        "terminal", "--config", c, "--tid", "70000066", "--mid", mid, "--tmk", &tmk,
    ];
    let (code, _, err) = provision(&terminal, "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = provision(&terminal, "");
    assert_eq!(code, 2);
    assert!(err.contains("already provisioned"), "{err}");
    let (code, _, err) = provision(
        &[
            "user",
            "--config",
            c,
            "--username",
            "pg-admin",
            "--role",
            "admin",
        ],
        "a-long-enough-password\n",
    );
    assert_eq!(code, 0, "{err}");

    let pg = store::PgStore::open(&store::PgConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
    })
    .unwrap();
    use store::Store;
    let row = pg.terminal("70000066").unwrap().unwrap();
    assert_eq!((row.mid.as_str(), row.key_scheme.as_str()), (mid, "004"));
    let profile = pg.merchant_profile(mid).unwrap().unwrap();
    assert_eq!(profile.state, store::risk::MerchantState::Applied);
    let user = pg.web_user_by_name("pg-admin").unwrap().unwrap();
    assert_eq!(user.role, web::Role::Admin);
    pg.close();
    drop(pg);
    let _ = store::PgStore::drop_schema(&url, &schema);
}

/// A journal row of the node's merchant on 2026-11-23, as a switch writes one.
fn node_txn(
    id: i64,
    kind: store::TxnKind,
    state: store::TxnState,
    amount_fen: i64,
) -> store::TxnRow {
    store::TxnRow {
        id,
        tid: "70000001".into(),
        mid: NODE_MID.into(),
        batch_no: 1,
        stan: u32::try_from(id).unwrap(),
        kind,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen,
        currency: "156".into(),
        pan: Some(store::PanAtRest {
            sealed: vec![1],
            fingerprint: vec![2],
            masked: "622202******4562".into(),
            last4: "4562".into(),
            bin: "622202".into(),
        }),
        issuer: Some("ICBC".into()),
        rrn: Some(format!("{id:012}")),
        host_trace: None,
        auth_code: None,
        response_code: Some(
            if state == store::TxnState::Declined {
                "51"
            } else {
                "00"
            }
            .into(),
        ),
        state,
        request_hash: vec![u8::try_from(id).unwrap()],
        original_id: (kind == store::TxnKind::Refund).then_some(101),
        refunded_fen: 0,
        field60: None,
        host_date: None,
        clearing_date: "20261123".into(),
        settlement_date: None,
        received_at_ms: 1_000 + id,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

const NODE_MID: &str = "898110048990001";

/// Runs `shoudan ARGS` with `input` on standard input: (exit code, stdout, stderr).
fn run(args: &[&str], input: &str) -> (i32, String, String) {
    let out = cli::run_with_stdin(args, input);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The settlement tools on a node's configuration: its journal (whichever backend `database`
/// names) and its master key, with no demo data directory anywhere. `direct` names the same
/// journal by `--database` (as for a demo started with one).
fn node_settles_from_its_configuration(
    direct: &[&str],
    dir: &Path,
    config: &Path,
    open: &dyn Fn() -> std::sync::Arc<dyn store::Store>,
) {
    let c = config.to_str().unwrap();
    // No node has made the journal yet: refused, not answered from an empty one.
    let (code, _, err) = run(&["settle", "--config", c, "--date", "2026-11-23"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no journal there"), "{err}");

    let store = open();
    let (purchase, approved) = (store::TxnKind::Purchase, store::TxnState::Approved);
    store
        .submit(vec![
            store::Record::UpsertMerchant(store::MerchantRow {
                mid: NODE_MID.into(),
                name: "朝阳便利店".into(),
                status: store::Status::Active,
                mcc: "5411".into(),
            }),
            store::Record::InsertTxn(Box::new(node_txn(101, purchase, approved, 10_000))),
            store::Record::InsertTxn(Box::new(node_txn(102, purchase, approved, 5_000))),
            store::Record::InsertTxn(Box::new(node_txn(
                103,
                store::TxnKind::Refund,
                store::TxnState::Approved,
                2_000,
            ))),
            store::Record::InsertTxn(Box::new(node_txn(
                104,
                purchase,
                store::TxnState::Declined,
                7_000,
            ))),
        ])
        .unwrap()
        .wait()
        .unwrap();
    drop(store);

    let settle = ["settle", "--config", c, "--date", "2026-11-23", "--json"];
    let (code, out, err) = run(&settle, "");
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["changed"], true, "{out}");
    let m = &report["merchants"][0];
    assert_eq!(m["mid"], NODE_MID, "{out}");
    assert_eq!(
        (m["captures_fen"].as_i64(), m["refunds_fen"].as_i64()),
        (Some(15_000), Some(2_000)),
        "{out}"
    );
    let fees = m["fees_fen"].as_i64().unwrap();
    assert!(fees > 0, "{out}");
    assert_eq!(m["net_fen"].as_i64(), Some(15_000 - 2_000 - fees), "{out}");
    let (code, out, err) = run(&settle, "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"changed\": false"),
        "a second run changes nothing: {out}"
    );
    let (code, out, err) = run(&["ledger", "balance", "--config", c, "--json"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"balanced\": true"), "{out}");

    // A number to be read from standard input that is not there: refused, nothing bound.
    let (code, _, err) = run(
        &[
            "account",
            "bind",
            "--config",
            c,
            "--mid",
            NODE_MID,
            "--card",
            "-",
            "--name",
            "王小明",
        ],
        "",
    );
    assert_eq!(code, 2);
    assert!(err.contains("standard input held no number"), "{err}");
    assert!(open().bound_account(NODE_MID).unwrap().is_none());

    // The account number is sealed under the node's own master key, so its portal can open it.
    let card = "6222020200001234562";
    let (code, out, err) = run(
        &[
            "account",
            "bind",
            "--config",
            c,
            "--mid",
            NODE_MID,
            "--card",
            "-",
            "--name",
            "王小明",
        ],
        &format!("{card}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bound"), "{out}");
    assert!(!out.contains(card) && !err.contains(card));
    let store = open();
    let bound = store.bound_account(NODE_MID).unwrap().unwrap();
    let node_hsm = SoftHsm::new(
        &MasterKey::from_hex(MASTER_HEX).unwrap(),
        Box::new(OsRandom),
    );
    assert_eq!(
        &node_hsm.open(&bound.number_sealed).unwrap()[..],
        card.as_bytes()
    );
    drop(store);

    // No bank is connected to a node: its payouts are listed, never run through a simulator.
    let (code, _, err) = run(&["payouts", "--config", c, "--run", "2026-11-24"], "");
    assert_eq!(code, 2);
    assert!(err.contains("no bank is connected"), "{err}");
    let (code, out, err) = run(&["payouts", "--config", c, "--json"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"payouts\": []"), "{out}");

    // Reconciliation against the file the issuer sent (ICBC, the configuration's issuer).
    let files = dir.join("clearing-in");
    std::fs::create_dir_all(&files).unwrap();
    let reconcile = [
        "reconcile",
        "--config",
        c,
        "--date",
        "20261123",
        "--clearing-dir",
        files.to_str().unwrap(),
    ];
    let (code, _, err) = run(&reconcile, "");
    assert_eq!(code, 2, "a missing file is not an empty one");
    assert!(err.contains("ICBC's clearing file"), "{err}");
    let header = "rrn,type,amount,state,original_rrn,day\n";
    let rows = "000000000101,purchase,10000,approved,,20261123\n\
                000000000103,refund,2000,approved,000000000101,20261123\n";
    std::fs::write(files.join("ICBC-20261123.csv"), format!("{header}{rows}")).unwrap();
    let (code, out, err) = run(&reconcile, "");
    assert_eq!(code, 1, "the purchase the issuer's file lacks: {out}{err}");
    assert!(
        out.contains("000000000102") && out.contains("UnknownToIssuer"),
        "{out}"
    );
    std::fs::write(
        files.join("ICBC-20261123.csv"),
        format!("{header}{rows}000000000102,purchase,5000,approved,,20261123\n"),
    )
    .unwrap();
    let (code, out, err) = run(&reconcile, "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matched 3, differences 0"), "{out}");

    let (code, out, err) = run(
        &[
            "explain",
            "--rrn",
            "000000000104",
            "--config",
            c,
            "--lang",
            "en",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("RRN 000000000104") && out.contains("51 Insufficient funds"),
        "{out}"
    );
    let mut again = vec!["settle", "--date", "2026-11-23"];
    again.extend_from_slice(direct);
    let (code, out, err) = run(&again, "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("settled: nothing new to clear"), "{out}");
    let mut explain = vec!["explain", "--rrn", "000000000102", "--lang", "en"];
    explain.extend_from_slice(direct);
    let (code, out, err) = run(&explain, "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RRN 000000000102"), "{out}");
}

#[test]
fn a_node_on_sqlite_settles_from_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switch.db");
    let url = format!("sqlite:{}", db.display());
    let config = write_config(dir.path(), &url, None);
    node_settles_from_its_configuration(&["--database", &url], dir.path(), &config, &|| {
        std::sync::Arc::new(
            store::SqliteStore::open(&store::SqliteConfig::new(db.clone())).unwrap(),
        )
    });
}

#[test]
fn a_node_on_postgresql_settles_from_its_configuration() {
    let Some(url) = cli::pg_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("node_settle_{}", std::process::id());
    let config = write_config(dir.path(), &url, Some(&schema));
    let pg = store::PgConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
    };
    let direct = ["--database", &url, "--database-schema", &schema];
    node_settles_from_its_configuration(&direct, dir.path(), &config, &|| {
        std::sync::Arc::new(store::PgStore::open(&pg).unwrap())
    });
    let _ = store::PgStore::drop_schema(&url, &schema);
}
