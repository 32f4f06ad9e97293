//! `shoudan serve --config shoudan.toml`: the production entry point. One node: the switch on
//! the terminal port, the portal, console, API and metrics on the HTTP port, over a journal in
//! SQLite (one node) or PostgreSQL (several nodes sharing it), with real issuer endpoints.
//!
//! Keys: the HSM is the SoftHsm, opened from its exported key store and a master key file;
//! issuer zone PIN keys are named by their handles in that store. See docs/operations.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use domain::IssuerDirectory;
use paycrypto::{Hsm, KeyAlgorithm, KeyHandle, KeyUsage, MasterKey, OsRandom, SoftHsm};
use serde::Deserialize;
use store::settlement::{SettlementRecord, SettlementTermsRow};
use store::{PgConfig, PgStore, Record, SqliteConfig, SqliteStore, Store};
use switch::{IssuerEndpoint, Switch, SwitchConfig};
use tokio::sync::watch;

use crate::CliResult;

/// The largest configuration file read; a config is a page or two.
const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// How often the portal's copy of the switch counters is refreshed.
const METRICS_REFRESH: Duration = Duration::from_secs(1);
/// How long a stop waits for the HTTP side's requests and the notifiers' deliveries in
/// progress (a client holding its connection open does not hold the stop).
const HTTP_DRAIN: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The node's configuration (docs/shoudan.example.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Check the configuration, the keys and the database, then exit without serving.
    #[arg(long)]
    pub check: bool,
}

/// `shoudan.toml`. No `Debug`: `database` may hold a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Two digits leading this node's RRNs; nodes sharing a database need distinct ids (and
    /// distinct ids modulo 10, which separates their host traces).
    #[serde(default = "default_node_id")]
    pub node_id: u8,
    /// Where terminals connect (`0.0.0.0:5000`).
    pub terminal_listen: SocketAddr,
    /// Portal, console, API and `/healthz`.
    pub http_listen: SocketAddr,
    /// `/metrics` (and `/healthz`) for the operator network's Prometheus; not served at all
    /// without it. Every merchant's volumes and response codes are in it, so it is never on
    /// the portal's listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite:/path/to/switch.db` or `postgres://user@host:port/database`.
    pub database: String,
    /// A PostgreSQL schema to create and use instead of `public` (several deployments or
    /// test runs sharing one database).
    pub database_schema: Option<String>,
    /// The issuer for cards whose BIN no domestic issuer claims (the card-network gateway).
    pub default_issuer: Option<String>,
    /// Per-merchant risk rules (JSON, as `risk::RuleBook::from_json` reads).
    pub risk_rules: Option<PathBuf>,
    /// Merchants' fee plans (JSON array of `FeePlanEntry`), written to the store at start.
    pub fee_plans: Option<PathBuf>,
    pub hsm: HsmConfig,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    /// Store-and-forward: how often due reversals are claimed, and how long a claim is
    /// leased before another node may take it over.
    pub saf_interval_ms: Option<u64>,
    pub saf_lease_ms: Option<u64>,
    /// How long an authorisation waits for a journal write or read before answering 96
    /// (`SwitchConfig::journal_wait`; default 3 s).
    pub journal_wait_ms: Option<u64>,
    /// How long a new terminal connection has to start its first frame before it is closed
    /// (`SwitchConfig::first_frame_timeout`; default 60 s). Terminals that connect early,
    /// while the card is read and the PIN typed, need it longer than that takes.
    pub first_frame_timeout_ms: Option<u64>,
    /// Whether merchants' webhook endpoints may be loopback, private or link-local addresses
    /// (false: public addresses only, so a merchant cannot aim the host at its own network).
    #[serde(default)]
    pub webhooks_to_private_addresses: bool,
    /// CA certificates (PEM) an `https://` webhook receiver's certificate may chain to besides
    /// this host's (a private CA some merchants' receivers use).
    pub webhook_ca_file: Option<PathBuf>,
    /// Whether the portal's cookies are marked `Secure` (default true: the portal is served
    /// over TLS, by itself or a proxy). False only for a portal reached over plain HTTP.
    #[serde(default = "default_secure_cookies")]
    pub secure_cookies: bool,
    /// Addresses of the proxies in front of the portal (its TLS proxy): a request from one of
    /// them is counted against the client its `X-Forwarded-For` names, for the limit on wrong
    /// sign-ins by client address. Default empty: every request is its peer's, whatever the
    /// header says (behind a proxy, every client then counts as the proxy: `serve` warns).
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

fn default_secure_cookies() -> bool {
    true
}

fn default_node_id() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// 64 hex digits: the key that wraps the key store. Keep it readable by shoudan only. Or
    /// none, and `master_key_components`.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The master key held by its custodians instead, as this many components (2 or 3) of 64
    /// hex digits each: typed in on standard input, one per line, by every command that opens
    /// the key store (`serve` at each start), and never written anywhere.
    #[serde(default)]
    pub master_key_components: Option<u8>,
    /// The SoftHsm key store (`export_store`), wrapped under the master key.
    pub key_store_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The bank code the issuer directory routes BINs to (`ICBC`, ...).
    pub bank: String,
    pub addr: SocketAddr,
    /// The handle of the bank's zone PIN key in the key store.
    pub zpk: String,
    pub timeout_ms: u64,
}

/// One merchant's fee plan in the `fee_plans` file (rates in basis points).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeePlanEntry {
    pub mid: String,
    pub debit_bp: i64,
    pub debit_cap_fen: Option<i64>,
    pub credit_bp: i64,
    pub credit_cap_fen: Option<i64>,
    pub foreign_bp: i64,
    pub qr_bp: i64,
    pub payout_delay_days: u32,
}

fn read_text(path: &Path, what: &str) -> Result<String, Box<dyn std::error::Error>> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .len();
    if size > CONFIG_BYTES_MAX {
        return Err(format!(
            "{what} {}: larger than {CONFIG_BYTES_MAX} bytes",
            path.display()
        )
        .into());
    }
    // Read through a bound as well: a FIFO or a device reports no size, and a file may grow
    // between the two looks.
    let failed = |e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut text = String::with_capacity(usize::try_from(size).unwrap_or(0));
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(failed)?,
            CONFIG_BYTES_MAX + 1,
        ),
        &mut text,
    )
    .map_err(failed)?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        return Err(format!(
            "{what} {}: larger than {CONFIG_BYTES_MAX} bytes",
            path.display()
        )
        .into());
    }
    Ok(text)
}

/// Whether a database setting is a PostgreSQL URL that carries a password.
fn holds_password(url: &str) -> bool {
    is_postgres(url) && PgConfig::new(url).holds_password()
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<ServeConfig, Box<dyn std::error::Error>> {
        let text = read_text(path, "config")?;
        // The parser's own message quotes the offending line, which may be the database URL
        // with its password: say where and what, not the line.
        let config: ServeConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|span| {
                text.get(..span.start)
                    .unwrap_or_default()
                    .matches('\n')
                    .count()
                    + 1
            });
            let at = line.map_or(String::new(), |l| format!(" line {l}:"));
            format!("config {}:{at} {}", path.display(), e.message().trim())
        })?;
        // The database password opens the journal (sealed card numbers, password hashes, the
        // ledger): refused, as the master key is, when others may read the file holding it.
        if holds_password(&config.database)
            && let Some(mode) = crate::files::open_to_others(path)
                .map_err(|e| format!("config {}: {e}", path.display()))?
        {
            return Err(format!(
                "config {}: mode {mode:o} lets others read the database password it holds; \
                 chmod 0600 it",
                path.display()
            )
            .into());
        }
        Ok(config)
    }
}

/// Whether the URL names PostgreSQL, the journal several nodes may share.
pub(crate) fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

/// The `database` setting, parsed.
enum Database<'a> {
    Postgres(PgConfig),
    Sqlite(&'a str),
}

fn database<'a>(
    database: &'a str,
    schema: Option<&str>,
) -> Result<Database<'a>, Box<dyn std::error::Error>> {
    if is_postgres(database) {
        return Ok(Database::Postgres(PgConfig {
            url: database.to_owned(),
            schema: schema.map(str::to_owned),
        }));
    }
    match database.strip_prefix("sqlite:") {
        // A schema is PostgreSQL's: with SQLite it would be silently dropped, and a node
        // meant to share a schema would journal alone.
        Some(_) if schema.is_some() => Err(
            "database_schema is for a PostgreSQL database; a sqlite: journal has no schema".into(),
        ),
        Some(path) if !path.is_empty() => Ok(Database::Sqlite(path)),
        // Not quoted back: it may hold a password.
        _ => Err(
            "database: expected sqlite:/path/to/file.db or postgres://user@host/db (the value \
             given is neither; not shown, as it may hold a password)"
                .into(),
        ),
    }
}

/// Opens the journal the URL names, creating and migrating it as a node's start does.
pub fn open_store(
    url: &str,
    schema: Option<&str>,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(match database(url, schema)? {
        Database::Postgres(config) => Arc::new(PgStore::open(&config)?),
        Database::Sqlite(path) => Arc::new(SqliteStore::open(&SqliteConfig::new(path))?),
    })
}

/// A journal opened for reading by a tool (`audit --database`): refused unless it exists and
/// is at this build's schema, and opened read-only (no schema or table created, no migration,
/// no writer), so a role that may only read is enough.
pub fn open_store_as_is(
    url: &str,
    schema: Option<&str>,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    at_this_schema(url, schema)?;
    Ok(match database(url, schema)? {
        Database::Postgres(config) => Arc::new(PgStore::open_read_only(&config)?),
        Database::Sqlite(path) => Arc::new(SqliteStore::open_read_only(Path::new(path))?),
    })
}

/// A node's journal opened for writing by a tool (`settle --config`): refused, as for
/// [`open_store_as_is`], unless a node has made it and it is at this build's schema, so that a
/// mistyped path or schema is not answered with an empty journal, and a tool of another build
/// does not migrate a journal its nodes are using.
pub fn open_store_existing(
    url: &str,
    schema: Option<&str>,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    at_this_schema(url, schema)?;
    open_store(url, schema)
}

fn at_this_schema(url: &str, schema: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let status = inspect_store(url, schema)?;
    if !status.exists {
        return Err("database: no journal there (no schema_migrations table)".into());
    }
    if !status.pending.is_empty() {
        return Err(format!(
            "database: the journal lacks {} of this build's migrations; a tool does not \
             migrate it (a node's start does)",
            status.pending.len()
        )
        .into());
    }
    Ok(())
}

/// What the database holds and what a start would do to it, read without changing it.
fn inspect_store(
    url: &str,
    schema: Option<&str>,
) -> Result<store::schema::SchemaStatus, Box<dyn std::error::Error>> {
    Ok(match database(url, schema)? {
        Database::Postgres(config) => PgStore::inspect(&config)?,
        Database::Sqlite(path) => SqliteStore::inspect(Path::new(path))?,
    })
}

/// A SQLite journal's directory must be one this user may write in: a start makes the
/// journal there (when new), its write-ahead log and the node's lock beside it. Checked with a
/// file made and removed at once (nothing else is written), so that a directory mistyped or
/// not the service user's fails `--check`, not the restart it was meant to clear.
fn journal_dir_writable(journal: &Path) -> Result<(), String> {
    let dir = journal
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "database: {} is not a directory; the journal {} cannot be made there",
            dir.display(),
            journal.display()
        ));
    }
    tempfile::Builder::new()
        .prefix(".shoudan-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            format!(
                "database: cannot write in {} ({e}); the journal, its log and the node's lock \
                 are kept there",
                dir.display()
            )
        })
}

/// Whether the first card number the journal sealed (of its first few transactions) opens
/// with `hsm`'s master key; `true` when there is none yet.
pub(crate) fn sealed_numbers_open(
    store: &dyn Store,
    hsm: &dyn Hsm,
) -> Result<bool, store::StoreError> {
    for event in store.events_since(0, 16)? {
        let Some(row) = store.txn(event.txn_id)? else {
            continue;
        };
        if let Some(pan) = &row.pan {
            return Ok(hsm.open(&pan.sealed).is_ok());
        }
    }
    Ok(true)
}

/// Refuses a key store that is not the journal's: one that lacks its terminals' TMKs (another
/// deployment's, or an old copy made before terminals were added), or a master key its card
/// numbers were not sealed under. Such a node would start and fail every sign-in of those
/// terminals, and read no card number it stored.
fn keys_of_this_journal(store: &dyn Store, hsm: &dyn Hsm) -> Result<(), String> {
    let terminals = store.terminals().map_err(|e| e.to_string())?;
    let missing: Vec<&str> = terminals
        .iter()
        .filter(|t| {
            switch::handle_from_bytes(&t.tmk_wrapped).is_none_or(|h| hsm.key_info(h).is_err())
        })
        .map(|t| t.tid.as_str())
        .collect();
    if let Some(first) = missing.first() {
        return Err(format!(
            "the key store holds no TMK for terminal {first}{}: it is not this journal's key \
             store, or a copy older than its terminals; copy the deployment's key store (and \
             master key) here",
            match missing.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            }
        ));
    }
    if !sealed_numbers_open(store, hsm).map_err(|e| e.to_string())? {
        return Err("the journal's card numbers were sealed under another master key: use the                     deployment's master key and key store"
            .to_owned());
    }
    Ok(())
}

/// The key store, opened under the master key (`master_key`; its components, if it is held so,
/// read from `input`).
pub(crate) fn open_hsm(
    config: &HsmConfig,
    input: &mut dyn std::io::BufRead,
) -> Result<Arc<SoftHsm>, Box<dyn std::error::Error>> {
    let master = master_key(config, input)?;
    open_hsm_under(config, &master)
}

/// The key store, opened under `master`.
pub(crate) fn open_hsm_under(
    config: &HsmConfig,
    master: &MasterKey,
) -> Result<Arc<SoftHsm>, Box<dyn std::error::Error>> {
    let wrapped = std::fs::read(&config.key_store_file)
        .map_err(|e| format!("key store {}: {e}", config.key_store_file.display()))?;
    match SoftHsm::from_store(master, Box::new(OsRandom), &wrapped) {
        Ok(hsm) => Ok(Arc::new(hsm)),
        Err(error) if config.master_key_components.is_some() => Err(format!(
            "key store {}: does not open under the master key these components make (check \
             value {}): was a component mistyped? ({error})",
            config.key_store_file.display(),
            master.check_value()
        )
        .into()),
        Err(error) => Err(error.into()),
    }
}

/// Master key components a configuration may name: two or three custodians.
pub(crate) const MASTER_KEY_COMPONENTS: std::ops::RangeInclusive<u8> = 2..=3;

/// The master key: from its file, refused if anyone but its owner may read it; or from its
/// custodians' components, read from `input` one per line (the terminal's echo off), each
/// one's check value printed as it is read, then the key's.
pub(crate) fn master_key(
    config: &HsmConfig,
    input: &mut dyn std::io::BufRead,
) -> Result<MasterKey, Box<dyn std::error::Error>> {
    read_master_key(config, input, false)
}

/// `master_key` for a key being made (`provision init`): each component is typed twice, and the
/// two must be the same, since nothing yet can tell a mistyped one.
pub(crate) fn master_key_confirmed(
    config: &HsmConfig,
    input: &mut dyn std::io::BufRead,
) -> Result<MasterKey, Box<dyn std::error::Error>> {
    read_master_key(config, input, true)
}

fn read_master_key(
    config: &HsmConfig,
    input: &mut dyn std::io::BufRead,
    confirm: bool,
) -> Result<MasterKey, Box<dyn std::error::Error>> {
    check_hsm(config)?;
    match (&config.master_key_file, config.master_key_components) {
        (Some(path), None) => {
            let open = crate::files::open_to_others(path)
                .map_err(|e| format!("master key {}: {e}", path.display()))?;
            if let Some(mode) = open {
                return Err(format!(
                    "master key {}: mode {mode:o} lets others read it; chmod 0400 it",
                    path.display()
                )
                .into());
            }
            let master_hex = zeroize::Zeroizing::new(read_text(path, "master key")?);
            Ok(MasterKey::from_hex(master_hex.trim())?)
        }
        (None, Some(count)) => {
            let mut parts: Vec<MasterKey> = Vec::with_capacity(usize::from(count));
            for n in 1..=count {
                let what = format!("master key component {n}");
                let line = zeroize::Zeroizing::new(crate::provision::read_line(input, &what)?);
                let part = MasterKey::from_hex(line.trim())
                    .map_err(|_| format!("{what}: 64 hex digits"))?;
                if confirm {
                    let again = format!("{what} again");
                    let line = zeroize::Zeroizing::new(crate::provision::read_line(input, &again)?);
                    let same =
                        MasterKey::from_hex(line.trim()).is_ok_and(|typed| typed.same_as(&part));
                    if !same {
                        return Err(format!("{what}: typed differently the second time").into());
                    }
                }
                // The others alone would make the key.
                if part.is_zero() {
                    return Err(format!("{what}: all zeros").into());
                }
                // The same component twice cancels out: each custodian holds their own.
                if parts.iter().any(|p| p.same_as(&part)) {
                    return Err(format!("{what}: the same as an earlier one").into());
                }
                eprintln!("{what}: check value {}", part.check_value());
                parts.push(part);
            }
            let master = MasterKey::from_components(&parts);
            if master.is_zero() {
                return Err("the components cancel out: not a key".into());
            }
            eprintln!("master key: check value {}", master.check_value());
            Ok(master)
        }
        // Refused by `check_hsm` above.
        _ => Err("[hsm]: give master_key_file or master_key_components, one of the two".into()),
    }
}

/// Everything `serve` starts from, checked: the store open and migrated, keys present.
pub struct Node {
    pub config: SwitchConfig,
    pub store: Arc<dyn Store>,
    pub hsm: Arc<SoftHsm>,
    pub http_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// The portal's cookies carry `Secure`.
    pub secure_cookies: bool,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub webhook_destinations: resolve::webhook::Destinations,
    pub webhook_trust: resolve::webhook::Trust,
    /// Held while the node runs on a SQLite journal (`files::lock_sqlite_journal`).
    pub journal_lock: Option<std::fs::File>,
}

/// An issuer's timeout: long enough for a real host, short enough that a terminal (which
/// gives up after about a minute) still gets the answer.
const ISSUER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Node ids: the two digits leading the node's RRNs (and its host traces, modulo 10).
const NODE_IDS: std::ops::RangeInclusive<u8> = 1..=99;
/// How often due reversals are claimed: not a busy loop, not so rarely they wait for it.
const SAF_INTERVAL_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
/// `journal_wait_ms` allowed: above a busy group commit's few tens of milliseconds, and short
/// of a terminal's own timeout (three times it plus an issuer's timeout is what a terminal may
/// wait).
const JOURNAL_WAIT_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
/// `first_frame_timeout_ms` allowed: a terminal's connect-then-send, up to ten minutes.
const FIRST_FRAME_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
/// A reversal claim's lease ends before another node may send it again: past any issuer
/// timeout, and within the ten minutes after which a start takes a request for lost.
const SAF_LEASE_MAX_MS: u64 = 600_000;

/// The master key named one way: its file, or its custodians' components (2 or 3).
pub(crate) fn check_hsm(hsm: &HsmConfig) -> Result<(), String> {
    match (&hsm.master_key_file, hsm.master_key_components) {
        (Some(_), None) => Ok(()),
        (None, Some(count)) if MASTER_KEY_COMPONENTS.contains(&count) => Ok(()),
        (None, Some(_)) => Err("[hsm] master_key_components: 2 or 3".to_owned()),
        _ => Err("[hsm]: give master_key_file or master_key_components, one of the two".to_owned()),
    }
}

/// Refuses settings that would lose or repeat money, before anything is opened: out of range
/// times and ids, an issuer named twice, a default issuer not among the issuers; and a master
/// key not named one way.
fn check_config(config: &ServeConfig) -> Result<(), String> {
    check_hsm(&config.hsm)?;
    if !NODE_IDS.contains(&config.node_id) {
        return Err(format!(
            "node_id {}: must be 1 to 99 (it leads the node's RRNs; nodes sharing a database \
             need distinct ids)",
            config.node_id
        ));
    }
    let mut banks = std::collections::HashSet::new();
    let mut zone_keys = std::collections::HashMap::new();
    for issuer in &config.issuers {
        if !banks.insert(issuer.bank.as_str()) {
            return Err(format!("issuer {}: configured twice", issuer.bank));
        }
        // Each bank has a zone PIN key of its own: one copied to another's entry would send
        // that bank its PIN blocks under the wrong key (answered 55, cards locked by their
        // issuer after a few), and let one bank's key protect another's PINs.
        // Compared as handles: "1", "01" and "key-1" name one key.
        let handle = issuer
            .zpk
            .trim()
            .parse::<KeyHandle>()
            .map_or_else(|_| issuer.zpk.clone(), |h| h.to_string());
        if let Some(other) = zone_keys.insert(handle, issuer.bank.as_str()) {
            return Err(format!(
                "issuer {}: zpk {} is issuer {other}'s too; each bank has its own zone PIN key",
                issuer.bank, issuer.zpk
            ));
        }
        if !ISSUER_TIMEOUT_MS.contains(&issuer.timeout_ms) {
            return Err(format!(
                "issuer {}: timeout_ms {} must be 100 to 60000",
                issuer.bank, issuer.timeout_ms
            ));
        }
    }
    if let Some(default) = &config.default_issuer
        && !banks.contains(default.as_str())
    {
        return Err(format!(
            "default_issuer {default}: no [[issuer]] of that bank"
        ));
    }
    // Routing sends a link the cards of the bank its name is in the issuer directory: a name
    // the directory does not know (a typo, `icbc` for `ICBC`) gets no card unless it is the
    // default issuer, and that bank's cards would go to the default or be answered 31.
    let directory = IssuerDirectory::embedded().map_err(|e| format!("issuer directory: {e}"))?;
    for issuer in &config.issuers {
        let default = config.default_issuer.as_deref() == Some(issuer.bank.as_str());
        if directory.bank(&issuer.bank).is_none() && !default {
            let hint = directory
                .banks()
                .iter()
                .find(|b| b.code().eq_ignore_ascii_case(&issuer.bank))
                .map(|b| format!(" (did you mean {}?)", b.code()))
                .unwrap_or_default();
            return Err(format!(
                "issuer {}: no bank of that code in the issuer directory, so no card would be \
                 routed to it{hint}; use the bank's code as the directory spells it, or make it \
                 the default_issuer",
                issuer.bank
            ));
        }
    }
    if let Some(ms) = config.saf_interval_ms
        && !SAF_INTERVAL_MS.contains(&ms)
    {
        return Err(format!("saf_interval_ms {ms}: must be 50 to 60000"));
    }
    if let Some(ms) = config.journal_wait_ms
        && !JOURNAL_WAIT_MS.contains(&ms)
    {
        return Err(format!("journal_wait_ms {ms}: must be 100 to 30000"));
    }
    if let Some(ms) = config.first_frame_timeout_ms
        && !FIRST_FRAME_TIMEOUT_MS.contains(&ms)
    {
        return Err(format!(
            "first_frame_timeout_ms {ms}: must be 1000 to 600000"
        ));
    }
    // The lease in force, set or default: an issuer timeout may outlast the default.
    let (lease, which) = match config.saf_lease_ms {
        Some(ms) => (ms, ""),
        None => (
            u64::try_from(switch::SAF_LEASE_DEFAULT.as_millis()).unwrap_or(u64::MAX),
            " (the default)",
        ),
    };
    let longest = config
        .issuers
        .iter()
        .map(|i| i.timeout_ms)
        .max()
        .unwrap_or(0);
    if lease <= longest || lease > SAF_LEASE_MAX_MS {
        return Err(format!(
            "saf_lease_ms {lease}{which}: must be longer than every issuer's timeout \
             ({longest} ms) and at most {SAF_LEASE_MAX_MS}"
        ));
    }
    Ok(())
}

/// The settings checked against the key store and read into what the switch takes:
/// everything a start needs but the database.
struct Checked {
    switch_config: SwitchConfig,
    hsm: Arc<SoftHsm>,
    /// The fee plans file's plans, to write at start.
    fee_plans: Vec<Record>,
    /// What an `https://` webhook receiver's certificate must chain to.
    webhook_trust: resolve::webhook::Trust,
}

fn checked(config: &ServeConfig) -> Result<Checked, Box<dyn std::error::Error>> {
    check_config(config)?;
    let hsm = open_hsm(&config.hsm, &mut std::io::stdin().lock())?;
    let mut switch_config = SwitchConfig::new(config.terminal_listen);
    switch_config.node_id = config.node_id;
    switch_config.shared_journal = is_postgres(&config.database);
    let mut issuers = HashMap::new();
    for issuer in &config.issuers {
        let zpk: KeyHandle = issuer
            .zpk
            .parse()
            .map_err(|_| format!("issuer {}: bad key handle {:?}", issuer.bank, issuer.zpk))?;
        // The key must be in the key store, and be a zone PIN key: a wrong handle would
        // answer every PIN transaction of the bank 96.
        match hsm.key_info(zpk) {
            // A PIN is never moved down to 56-bit DES: every PIN transaction of a double-length
            // or SM4 terminal to this bank would be answered 96.
            Ok(info)
                if info.usage == KeyUsage::Zpk
                    && info.algorithm == KeyAlgorithm::Des
                    && info.single_des =>
            {
                return Err(format!(
                    "issuer {}: key {} is a single DES zone PIN key (8 bytes, or halves that \
                     are equal); PINs are not translated down to one: give the bank a \
                     double-length (or SM4) key",
                    issuer.bank, issuer.zpk
                )
                .into());
            }
            Ok(info) if info.usage == KeyUsage::Zpk => {}
            Ok(info) => {
                return Err(format!(
                    "issuer {}: key {} is a {:?} key, not a zone PIN key",
                    issuer.bank, issuer.zpk, info.usage
                )
                .into());
            }
            Err(_) => {
                return Err(format!(
                    "issuer {}: key {} is not in the key store",
                    issuer.bank, issuer.zpk
                )
                .into());
            }
        }
        issuers.insert(
            issuer.bank.clone(),
            IssuerEndpoint {
                addr: issuer.addr,
                zpk,
                timeout: Duration::from_millis(issuer.timeout_ms),
            },
        );
    }
    switch_config.issuers = issuers;
    switch_config.default_issuer = config.default_issuer.clone();
    if let Some(ms) = config.saf_interval_ms {
        switch_config.saf_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = config.saf_lease_ms {
        switch_config.saf_lease = Duration::from_millis(ms);
    }
    if let Some(ms) = config.journal_wait_ms {
        switch_config.journal_wait = Duration::from_millis(ms);
    }
    if let Some(ms) = config.first_frame_timeout_ms {
        switch_config.first_frame_timeout = Duration::from_millis(ms);
    }
    if let Some(path) = &config.risk_rules {
        let text = read_text(path, "risk rules")?;
        switch_config.risk_rules = Arc::new(risk::RuleBook::from_json(&text)?);
    }
    let mut fee_plans = Vec::new();
    if let Some(path) = &config.fee_plans {
        let plans: Vec<FeePlanEntry> = serde_json::from_str(&read_text(path, "fee plans")?)
            .map_err(|e| format!("fee plans {}: {e}", path.display()))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for p in plans {
            let row = SettlementTermsRow {
                mid: p.mid,
                debit_bp: p.debit_bp,
                debit_cap_fen: p.debit_cap_fen,
                credit_bp: p.credit_bp,
                credit_cap_fen: p.credit_cap_fen,
                foreign_bp: p.foreign_bp,
                qr_bp: p.qr_bp,
                payout_delay_days: p.payout_delay_days,
                updated_at_ms: now_ms,
            };
            settlement::fees::check_terms(&row).map_err(|why| {
                format!("fee plans {}: merchant {}: {why}", path.display(), row.mid)
            })?;
            fee_plans.push(Record::Settlement(SettlementRecord::Terms(row)));
        }
    }
    // Read once here, off the request path: a file read per certificate.
    let (webhook_trust, host_cas) = match &config.webhook_ca_file {
        Some(path) => {
            resolve::webhook::Trust::system_and(path).map_err(|e| format!("webhook_ca_file {e}"))?
        }
        None => resolve::webhook::Trust::system().map_err(|e| format!("webhooks: {e}"))?,
    };
    if host_cas == 0 {
        tracing::warn!(
            "{}; https:// webhooks are checked against webhook_ca_file's alone, if any",
            resolve::webhook::NO_CA_CERTIFICATES
        );
    }
    Ok(Checked {
        switch_config,
        hsm,
        fee_plans,
        webhook_trust,
    })
}

/// `what` (a settings file) naming a merchant the journal does not know is a typing error in
/// its MID, which would leave the real merchant under the defaults: refused.
fn of_known_merchants<'a>(
    what: &str,
    mids: impl IntoIterator<Item = &'a str>,
    merchants: &[String],
) -> Result<(), String> {
    let known: std::collections::HashSet<&str> = merchants.iter().map(String::as_str).collect();
    match mids.into_iter().find(|mid| !known.contains(mid)) {
        Some(mid) => Err(format!(
            "{what}: merchant {mid} is not provisioned (shoudan provision merchant)"
        )),
        None => Ok(()),
    }
}

/// A fee plan for a merchant the journal does not know.
fn plans_of_known_merchants(fee_plans: &[Record], merchants: &[String]) -> Result<(), String> {
    let mids = fee_plans.iter().filter_map(|record| match record {
        Record::Settlement(SettlementRecord::Terms(row)) => Some(row.mid.as_str()),
        _ => None,
    });
    of_known_merchants("fee plans", mids, merchants)
}

/// A risk rules file naming a merchant the journal does not know.
fn rules_of_known_merchants(rules: &risk::RuleBook, merchants: &[String]) -> Result<(), String> {
    of_known_merchants("risk rules", rules.merchant_ids(), merchants)
}

/// Everything a start does: the settings checked, the store opened and migrated, the fee
/// plans written.
pub async fn prepare(config: &ServeConfig) -> Result<Node, Box<dyn std::error::Error>> {
    // Stopped gracefully on SIGINT or SIGTERM (`run`): a signal once the master key's
    // components are read is that stop, not an interruption of their reading.
    crate::provision::signals_owned();
    let Checked {
        switch_config,
        hsm,
        fee_plans,
        webhook_trust,
    } = checked(config)?;
    let mut journal_lock = None;
    let store: Arc<dyn Store> = match database(&config.database, config.database_schema.as_deref())?
    {
        // Nodes on one journal each claim their node id's place, so that two with one id (a
        // copied configuration, the default left in) cannot both run.
        Database::Postgres(pg) => {
            if pg.plain_over_network() {
                tracing::warn!(
                    "the database connections are plain TCP to another host: card data at rest \
                     (sealed), password hashes and the ledger cross the network readable; add \
                     sslmode=verify-full&sslrootcert=FILE to the database URL"
                );
            }
            let store = PgStore::open(&pg)?;
            store.claim_node(config.node_id)?;
            Arc::new(store)
        }
        // One node on a SQLite file, whatever its id.
        Database::Sqlite(path) => {
            journal_lock = Some(crate::files::lock_sqlite_journal(Path::new(path))?);
            Arc::new(SqliteStore::open(&SqliteConfig::new(path))?)
        }
    };
    keys_of_this_journal(store.as_ref(), hsm.as_ref())?;
    let merchants: Vec<String> = store.merchants()?.into_iter().map(|m| m.mid).collect();
    rules_of_known_merchants(&switch_config.risk_rules, &merchants)?;
    if !fee_plans.is_empty() {
        plans_of_known_merchants(&fee_plans, &merchants)?;
        store.submit(fee_plans)?.await?;
    }
    Ok(Node {
        config: switch_config,
        store,
        hsm,
        http_listen: config.http_listen,
        metrics_listen: config.metrics_listen,
        secure_cookies: config.secure_cookies,
        trusted_proxies: config.trusted_proxies.clone(),
        webhook_destinations: if config.webhooks_to_private_addresses {
            resolve::webhook::Destinations::AnyAddress
        } else {
            resolve::webhook::Destinations::Public
        },
        webhook_trust,
        journal_lock,
    })
}

pub fn run(args: ServeArgs) -> CliResult {
    let config = ServeConfig::load(&args.config)?;
    if args.check {
        return check(&config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let http_runtime = http_runtime()?;
    let http = http_runtime.handle().clone();
    let served = runtime.block_on(async move {
        // Caught from the start: a stop while the node opens its store (a migration) is
        // carried out once the start is done, as any stop. A second signal ends a start that
        // does not finish (a database that never answers) at once: what it had not committed
        // is rolled back, migrations included, as after any crash.
        let mut signals = Signals::new()?;
        let starting =
            tokio::spawn(async move { prepare(&config).await.map_err(|e| e.to_string()) });
        tokio::pin!(starting);
        let mut stopping = false;
        let node = loop {
            tokio::select! {
                started = &mut starting => break started.map_err(|e| e.to_string())??,
                () = signals.next() => {
                    if stopping {
                        eprintln!("stopped during start-up");
                        std::process::exit(1);
                    }
                    stopping = true;
                    say!("stopping once started (a second signal stops now)");
                }
            }
        };
        serve(node, signals, stopping, &http).await
    });
    // Its tasks have ended (or been given up on) by now: whatever is left is dropped.
    http_runtime.shutdown_background();
    served
}

/// The HTTP side's runtime (portal, console, API, metrics), apart from the switch's: see
/// [`web::spawn_serve`]. Two workers: pages wait on the store more than they compute.
pub(crate) fn http_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shoudan-http")
        .enable_all()
        .build()
}

/// `serve --check`: every setting checked as a start would, the database read and not
/// written (no file or schema created, no migration, no fee plan), so it may run beside the
/// node it is about to replace.
fn check(config: &ServeConfig) -> CliResult {
    let checked = checked(config)?;
    if let Database::Sqlite(path) = database(&config.database, config.database_schema.as_deref())? {
        journal_dir_writable(Path::new(path))?;
    }
    let status = inspect_store(&config.database, config.database_schema.as_deref())?;
    // As a start checks them: a restart against this database would refuse the plans, and
    // the node would stay down. (A new database has no merchants yet: they are provisioned
    // into it before its first start.)
    if status.exists {
        plans_of_known_merchants(&checked.fee_plans, &status.merchants)?;
        rules_of_known_merchants(&checked.switch_config.risk_rules, &status.merchants)?;
    }
    // The key store against the journal's terminals and card numbers, as a start checks them
    // (a journal a start would migrate first is checked by that start).
    if status.exists && status.pending.is_empty() {
        let store = open_store_as_is(&config.database, config.database_schema.as_deref())?;
        keys_of_this_journal(store.as_ref(), checked.hsm.as_ref())?;
    }
    say!(
        "configuration ok: {} terminals, {} issuers, {} fee plans to write",
        status.terminals.unwrap_or(0),
        checked.switch_config.issuers.len(),
        checked.fee_plans.len()
    );
    match (status.exists, status.pending.as_slice()) {
        (false, _) => say!(
            "database: new; a start creates it ({} migrations)",
            status.pending.len()
        ),
        (true, []) => say!("database: up to date"),
        (true, pending) => {
            say!("database: a start applies {} migrations:", pending.len());
            for (version, name) in pending {
                say!("  {version:>3}  {name}");
            }
        }
    }
    Ok(())
}

/// Serves until a signal (or at once stops, when one came during the start).
async fn serve(
    node: Node,
    mut signals: Signals,
    stopping: bool,
    http_runtime: &tokio::runtime::Handle,
) -> CliResult {
    let banks: Vec<String> = node.config.issuers.keys().cloned().collect();
    // The HTTP and metrics ports first: a port taken fails the start before the switch takes
    // terminals and journals anything, which a return from here would not stop cleanly.
    let http = tokio::net::TcpListener::bind(node.http_listen)
        .await
        .map_err(|e| format!("http_listen {}: {e}", node.http_listen))?;
    let http_addr = http.local_addr()?;
    let metrics_listener = match node.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("metrics_listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let switch = Switch::start(
        node.config,
        Arc::clone(&node.store),
        Arc::clone(&node.hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
    )
    .await?;
    let (stop, stop_rx) = watch::channel(false);
    let switch_metrics = Arc::new(web::metrics::SwitchMetricsCell::default());
    switch_metrics.set(switch.metrics());
    let portal = web::Web::new(
        Arc::clone(&node.store),
        Arc::clone(&node.hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
        Arc::new(switch.back_office()),
    )
    .with_switch_metrics(Arc::clone(&switch_metrics))
    .with_webhook_destinations(node.webhook_destinations)
    .with_secure_cookies(node.secure_cookies)
    .with_trusted_proxies(node.trusted_proxies.clone());
    if node.secure_cookies && node.trusted_proxies.is_empty() {
        // Secure cookies mean a TLS proxy in front (the node speaks plain HTTP).
        tracing::warn!(
            "trusted_proxies is empty: behind a TLS proxy every client counts as the proxy for \
             the limit on wrong sign-ins by address, and one client's wrong sign-ins refuse \
             everyone's; list the proxy's address (it must set or append X-Forwarded-For)"
        );
    }
    let notify_tasks = resolve::outbox::spawn_background(
        Arc::clone(&node.store),
        Arc::clone(&node.hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
        node.webhook_destinations,
        node.webhook_trust,
        stop_rx.clone(),
    );
    let metrics_task = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            // On the switch's runtime: a scrape or a health check answers while pages hold
            // the HTTP runtime's workers, and says how the switch itself is doing.
            let task = tokio::spawn(web::serve(
                portal.metrics_router(),
                listener,
                stop_rx.clone(),
            ));
            Some((addr, task))
        }
        None => None,
    };
    let http_task = web::spawn_serve(http_runtime, portal.router(), http, stop_rx)?;
    say!("shoudan serving");
    say!("  switch (terminals)  {}", switch.local_addr());
    say!("  http                http://{http_addr}/");
    match &metrics_task {
        Some((addr, _)) => say!("  metrics             http://{addr}/metrics"),
        None => say!("  metrics             not served (no metrics_listen)"),
    }
    for bank in &banks {
        say!(
            "  issuer {bank:<12} {}",
            if switch.issuer_connected(bank) {
                "connected"
            } else {
                "connecting"
            }
        );
    }
    if !stopping {
        let refresh = async {
            loop {
                tokio::time::sleep(METRICS_REFRESH).await;
                switch_metrics.set(switch.metrics());
            }
        };
        tokio::select! {
            () = signals.next() => {}
            () = refresh => {}
        }
    }
    say!("stopping: taking no new requests, finishing those in progress");
    let _ = stop.send(true);
    switch.close_intake();
    // The switch stops taking requests at once (its links stay up for the requests in progress
    // and for refund approvals begun in the console); the requests in progress get their issuers'
    // answers (or time out as usual) and are journalled and answered, while the HTTP side
    // finishes its requests (for at most HTTP_DRAIN) and the notifiers their deliveries. A
    // second signal stops waiting: what was not answered stays in flight in the journal, and
    // the next start reverses it.
    let others = tokio::time::timeout(HTTP_DRAIN, async {
        let _ = http_task.await;
        if let Some((_, task)) = metrics_task {
            let _ = task.await;
        }
        for task in notify_tasks {
            let _ = task.await;
        }
    });
    // The switch stops once the refund approvals begun have run to their end (refund, case
    // and audit row): their refunds need its issuer links.
    let switch_side = async {
        portal.wait_for_work_run_to_end(HTTP_DRAIN).await;
        switch.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(switch_side, others) } => {}
        () = signals.next() => say!("stopping now: requests still in progress are reversed at the next start"),
    }
    portal.give_up_unwritten_audit_rows();
    // Everything queued for the journal is committed before the process ends. A journal that
    // no longer answers (a database or disk that stalled) would hold the process for ever:
    // another signal ends it. What is then lost is what a kill would lose: writes queued and
    // not committed, none of them a request already answered (answers follow their commits).
    let store = Arc::clone(&node.store);
    let closing = tokio::task::spawn_blocking(move || store.close());
    tokio::select! {
        closed = closing => closed?,
        () = signals.next() => {
            return Err("stopped without closing the journal (it did not answer): writes queued \
                        and not yet committed are lost; no answered request is among them"
                .into());
        }
    }
    // The journal closed: another node may take it now.
    drop(node.journal_lock);
    say!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), registered once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_reads_and_passes_the_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/shoudan.example.toml");
        let config = ServeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_config(&config), Ok(()));
        assert!(config.metrics_listen.is_some());
        assert_ne!(config.metrics_listen, Some(config.http_listen));
    }

    #[test]
    fn a_password_is_seen_where_a_url_can_carry_one() {
        assert!(holds_password("postgres://shoudan:pw@db.local/shoudan"));
        assert!(holds_password(
            "postgresql://shoudan:pw@db.local:5432/shoudan?sslmode=disable"
        ));
        assert!(holds_password(
            "postgres://shoudan@db.local/shoudan?password=pw"
        ));
        assert!(holds_password(
            "postgres://shoudan@db.local/shoudan?application_name=a&password=pw"
        ));
        // As the client reads it: a password with '/', '?' or '#' in it (base64), and the
        // parameter's name percent-encoded.
        assert!(holds_password(
            "postgres://shoudan:Ab/Cd+e?f#g@db.local/shoudan"
        ));
        assert!(holds_password(
            "postgres://shoudan@db.local/shoudan?pass%77ord=pw"
        ));
        assert!(!holds_password("mysql://shoudan:pw@db.local/shoudan"));
        // One the client cannot read, by its text.
        assert!(holds_password(
            "postgres://shoudan:pw@db.local/shoudan?sslrootcert=/etc/ca.pem"
        ));
        assert!(!holds_password(
            "postgres://shoudan@db.local/shoudan?sslrootcert=/etc/ca.pem"
        ));
        assert!(holds_password(
            "postgres://shoudan@db.local/shoudan?pass%77ord=pw&sslrootcert=/etc/ca.pem"
        ));
        assert!(!holds_password("postgres://shoudan@db.local/shoudan"));
        assert!(!holds_password("postgres://db.local:5432/shoudan"));
        assert!(!holds_password("postgres://shoudan@db.local/a:b"));
        assert!(!holds_password(
            "postgres://shoudan@db.local/shoudan?user=x"
        ));
        assert!(!holds_password("sqlite:/var/lib/shoudan/switch.db"));
    }
}
