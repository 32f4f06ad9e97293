//! `shoudan demo`: the switch, simulated issuers for five domestic banks and one foreign-card
//! network, a SQLite journal and a SoftHsm persisted under one data dir, with demo merchants,
//! terminals and cards that are the same on every run. Optional background traffic.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use domain::IssuerDirectory;
use issuer_sim::{
    AccountSpec, CardRules, CardStatus, HsmPinVerifier, Issuer, IssuerConfig, IssuerSim,
    LedgerLocation, Limits, YearMonth,
};
use paycrypto::{
    DeterministicRandom, Hsm, KeyAlgorithm, KeyHandle, KeyScheme, KeyUsage, MacAlgorithm,
    MasterKey, OsRandom, RandomSource, SoftHsm,
};
use serde::{Deserialize, Serialize};
use store::{MerchantRow, Record, SqliteConfig, SqliteStore, Status, Store, Synchronous};
use switch::{IssuerEndpoint, Switch, SwitchConfig, SwitchHandle, TerminalSpec};
use tokio::sync::watch;

use crate::CliResult;
use crate::fixtures::{CardFixture, Fixtures, IssuerFixture, TerminalFixture};

/// Domestic banks with a simulated issuer host each.
pub const DOMESTIC_BANKS: [&str; 5] = ["ICBC", "ABC", "BOC", "CCB", "CMB"];
/// The card-network gateway for foreign cards (cards not in the BIN table).
pub const FOREIGN_ISSUER: &str = "VISA";
const HEALTHY_CARDS: usize = 4;
/// How long a stop waits for pending reversals to reach their issuers.
const SAF_DRAIN: Duration = Duration::from_secs(5);
const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);
const MERCHANTS: [(&str, &str, &str); 2] = [
    ("898110048990001", "Teahouse", "5812"),
    ("898110059420002", "Bookshop", "5942"),
];
/// (tid, merchant index, scheme, MAC, used by background traffic).
const TERMINALS: [(&str, usize, KeyScheme, MacAlgorithm, bool); 9] = [
    (
        "10000001",
        0,
        KeyScheme::Double,
        MacAlgorithm::CupEcb,
        false,
    ),
    (
        "10000002",
        0,
        KeyScheme::Single,
        MacAlgorithm::CupEcb,
        false,
    ),
    ("10000003", 1, KeyScheme::Double, MacAlgorithm::X919, false),
    (
        "10000004",
        1,
        KeyScheme::DoubleWithTdk,
        MacAlgorithm::X919,
        false,
    ),
    ("10000005", 1, KeyScheme::Sm4, MacAlgorithm::Sm4, false),
    ("20000001", 0, KeyScheme::Double, MacAlgorithm::CupEcb, true),
    (
        "20000002",
        0,
        KeyScheme::DoubleWithTdk,
        MacAlgorithm::X919,
        true,
    ),
    ("20000003", 1, KeyScheme::Double, MacAlgorithm::X919, true),
    ("20000004", 1, KeyScheme::Single, MacAlgorithm::CupEcb, true),
];

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "./shoudan-data")]
    pub data_dir: PathBuf,
    /// Where terminals connect (0: any free port).
    #[arg(long, default_value_t = 5800)]
    pub terminal_port: u16,
    /// The merchant portal, operator console, API, /metrics and /healthz.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Background transactions per second from the traffic terminals (approvals, declines,
    /// wrong PINs, voids, refunds, reversals, pre-authorisations).
    #[arg(long)]
    pub traffic: Option<f64>,
    /// Address the switch and the HTTP port listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub listen: IpAddr,
    /// Load-test terminals to provision besides the demo's own (TIDs 3xxxxxxx, double-length
    /// keys, X9.19 MACs), listed in fixtures.json for `shoudan bench` against this demo.
    #[arg(long, default_value_t = 0)]
    pub bench_terminals: usize,
    /// The journal on this PostgreSQL database (`postgres://user@host:port/db`) instead of the
    /// data dir's switch.db. The key store and the issuers' ledgers stay in the data dir: keep
    /// using the two together.
    #[arg(long)]
    pub database: Option<String>,
    /// The PostgreSQL schema of the journal, created if missing (default: the search path's,
    /// `public`).
    #[arg(long, requires = "database")]
    pub database_schema: Option<String>,
    /// How long every simulated issuer takes to decide (`200ms`, `2s`; none by default). A real
    /// issuer takes a few hundred milliseconds; more than the switch's issuer timeout (5 s)
    /// shows terminals 98 and the reversals that follow.
    #[arg(long, value_parser = crate::bench::parse_duration)]
    pub issuer_latency: Option<Duration>,
}

/// Key handles kept between runs (the keys themselves are in the wrapped HSM store).
#[derive(Default, Serialize, Deserialize)]
struct KeyState {
    zpk: BTreeMap<String, String>,
    tmk: BTreeMap<String, String>,
}

fn seed_of(label: &str) -> u64 {
    // FNV-1a: a stable seed per name, so demo keys and cards are the same on every run.
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A demo key, derived from its name: demo data, printed in fixtures.json by design.
fn demo_key_hex(label: &str) -> Result<String, paycrypto::RandomError> {
    let mut bytes = [0u8; 16];
    DeterministicRandom::new(seed_of(label)).fill(&mut bytes)?;
    Ok(paycrypto::hex::encode(&bytes))
}

fn handle(text: Option<&String>) -> Result<KeyHandle, Box<dyn std::error::Error>> {
    let text = text.ok_or("demo-state.json lacks a key handle; remove the data dir")?;
    text.parse::<KeyHandle>()
        .map_err(|_| "bad key handle in demo-state.json".into())
}

fn another_data_dirs_journal() -> String {
    "the journal already holds terminals and card numbers made with another data dir's master \
     key: start with that data dir, or use an empty database or schema"
        .to_owned()
}

/// Whether the card numbers a journal kept outside the data dir (PostgreSQL) sealed open with
/// this data dir's keys: a few of its first transactions are tried (none yet: nothing to
/// check).
fn sealed_with_these_keys(
    store: &dyn Store,
    hsm: &dyn Hsm,
) -> Result<(), Box<dyn std::error::Error>> {
    if crate::serve::sealed_numbers_open(store, hsm)? {
        Ok(())
    } else {
        Err(another_data_dirs_journal().into())
    }
}

/// Opens (or creates) the SoftHsm and the demo keys in it.
fn open_hsm(dir: &Path) -> Result<(Arc<SoftHsm>, KeyState), Box<dyn std::error::Error>> {
    let master_path = dir.join("master.key");
    let master_hex = match std::fs::read_to_string(&master_path) {
        Ok(text) => {
            // A key left readable by others (an older build, a copy) is made the owner's.
            if let Some(mode) = crate::files::open_to_others(&master_path)? {
                std::fs::set_permissions(&master_path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(
                    "{} was readable by others (mode {mode:o}): now 0600",
                    master_path.display()
                );
            }
            zeroize::Zeroizing::new(text.trim().to_owned())
        }
        // A new key only for a new data dir: one that already holds a key store or a journal
        // sealed under the old key would be unreadable under a new one.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("hsm.store").exists() || dir.join("switch.db").exists() {
                return Err(format!(
                    "{} is missing, but the data dir holds keys and a journal sealed under it: \
                     restore it, or start afresh in another data dir",
                    master_path.display()
                )
                .into());
            }
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            OsRandom.fill(bytes.as_mut())?;
            let hex = zeroize::Zeroizing::new(paycrypto::hex::encode(bytes.as_ref()));
            // Readable by the owner only, and never through a link planted in its place.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&master_path)?;
            file.write_all(hex.as_bytes())?;
            file.sync_all()?;
            hex
        }
        Err(error) => return Err(format!("{}: {error}", master_path.display()).into()),
    };
    let master = MasterKey::from_hex(&master_hex)?;
    let store_path = dir.join("hsm.store");
    let state_path = dir.join("demo-state.json");
    if let (Ok(wrapped), Ok(state)) = (
        std::fs::read(&store_path),
        std::fs::read_to_string(&state_path),
    ) {
        let hsm = SoftHsm::from_store(&master, Box::new(OsRandom), &wrapped)?;
        return Ok((Arc::new(hsm), serde_json::from_str(&state)?));
    }
    // A key store the demo did not make (a node's, whose keys came from custodians'
    // components) is never written over with demo keys.
    if store_path.exists() {
        return Err(format!(
            "{} is not a demo's key store ({} is missing): a node's data dir? Nothing changed; \
             give the demo a data dir of its own",
            store_path.display(),
            state_path.display()
        )
        .into());
    }
    let hsm = SoftHsm::new(&master, Box::new(OsRandom));
    let mut state = KeyState::default();
    for bank in DOMESTIC_BANKS.iter().chain([&FOREIGN_ISSUER]) {
        let zpk = hsm.import_key(
            KeyUsage::Zpk,
            KeyAlgorithm::Des,
            &demo_key_hex(&format!("zpk/{bank}"))?,
        )?;
        state.zpk.insert((*bank).to_owned(), zpk.to_string());
    }
    for (tid, _, scheme, _, _) in TERMINALS {
        let tmk = hsm.import_key(
            KeyUsage::Tmk,
            scheme.tmk_algorithm(),
            &demo_key_hex(&format!("tmk/{tid}"))?,
        )?;
        state.tmk.insert(tid.to_owned(), tmk.to_string());
    }
    // The state first: a start that stops between the two writes leaves a state and no key
    // store, which the next start makes again (the same keys under the same handles), never
    // a key store without its state, which is refused above as not a demo's.
    crate::files::write_whole(&state_path, &serde_json::to_vec_pretty(&state)?, 0o600)?;
    crate::files::write_whole(&store_path, &hsm.export_store()?, 0o600)?;
    Ok((Arc::new(hsm), state))
}

/// Foreign cards for the card-network gateway: on a BIN our table does not know, so the switch
/// sends them to the default issuer.
fn foreign_cards(
    pins: &HsmPinVerifier,
) -> Result<(Vec<AccountSpec>, Vec<CardFixture>), Box<dyn std::error::Error>> {
    let mut accounts = Vec::new();
    let mut fixtures = Vec::new();
    let rng = DeterministicRandom::new(seed_of("cards/VISA"));
    for (index, (label, balance, code)) in
        [("healthy", 100_000_000, "00"), ("low_balance", 50, "51")]
            .into_iter()
            .enumerate()
    {
        let mut digits = [0u8; 9];
        rng.fill(&mut digits)?;
        let body: String = std::iter::once("411111".to_owned())
            .chain(digits.iter().map(|d| (d % 10).to_string()))
            .collect();
        let check = domain::luhn_check_digit(body.as_bytes()).ok_or("luhn")?;
        let pan_text = format!("{body}{}", char::from(check));
        let pan: domain::Pan = pan_text.parse()?;
        let pin = "123456";
        accounts.push(AccountSpec {
            reference: format!("VISA-{label}-{}", index + 1),
            pan: pan.clone(),
            expiry: YearMonth::new(2049, 12).map_err(|_| "date")?,
            status: CardStatus::Active,
            pin: pins.enrol(&pan, pin)?,
            pin_tries_used: 0,
            balance,
            limits: Limits::default(),
            rules: CardRules::default(),
        });
        fixtures.push(CardFixture {
            bank: FOREIGN_ISSUER.to_owned(),
            label: label.to_owned(),
            pan: pan_text,
            expiry: "4912".to_owned(),
            pin: pin.to_owned(),
            status: "active".to_owned(),
            balance,
            purchase_code: code.to_owned(),
        });
    }
    Ok((accounts, fixtures))
}

struct RunningIssuer {
    bank: String,
    issuer: Arc<Issuer>,
    server: issuer_sim::ServerHandle,
}

pub fn run(args: DemoArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let http_runtime = crate::serve::http_runtime()?;
    let ran = runtime.block_on(run_async(args, http_runtime.handle().clone()));
    http_runtime.shutdown_background();
    ran
}

/// What [`start_env`] builds beyond the demo's own fixtures.
pub struct EnvOptions {
    /// Where the switch listens for terminals.
    pub listen: SocketAddr,
    /// The journal's fsync policy.
    pub synchronous: Synchronous,
    /// Whether transactions are journalled (off only to measure the journal's cost).
    pub journal: bool,
    /// Whether the issuer simulators record each decision before they answer (the demo) or
    /// write their ledgers behind (load tests, where the issuers stand for other machines).
    pub durable_issuers: bool,
    /// Whether the issuer simulators keep their ledgers in memory instead of files in the data
    /// dir (load tests: a real issuer's ledger is on its own machine's disk, and the
    /// simulators' writes and checkpoints on this one would delay the journal's flushes).
    pub issuer_ledgers_in_memory: bool,
    /// How long every issuer simulator takes to decide (zero: at once).
    pub issuer_latency: Duration,
    /// Extra terminals (double-length DES keys, X9.19 MACs) provisioned for load generators;
    /// their TIDs start with 3.
    pub extra_terminals: usize,
    /// The journal on PostgreSQL instead of the SQLite file in the data dir.
    pub postgres: Option<store::PgConfig>,
}

/// The journal of a demo environment, kept by its concrete type to close it at the end.
enum Journal {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<store::PgStore>),
}

impl Journal {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Journal::Sqlite(s) => Arc::clone(s) as Arc<dyn Store>,
            Journal::Postgres(p) => Arc::clone(p) as Arc<dyn Store>,
        }
    }

    /// Commits what is queued and stops the writer. Blocks.
    fn close(&self) {
        match self {
            Journal::Sqlite(s) => s.close(),
            Journal::Postgres(p) => p.close(),
        }
    }
}

/// A running demo environment: issuers, journal, HSM and switch, with their fixtures.
pub struct DemoEnv {
    pub switch: SwitchHandle,
    journal: Journal,
    pub hsm: Arc<SoftHsm>,
    /// The demo's fixtures (`http_port` is 0: the environment serves no HTTP).
    pub fixtures: Fixtures,
    /// The extra terminals of [`EnvOptions::extra_terminals`].
    pub extra_terminals: Vec<TerminalFixture>,
    issuers: Vec<RunningIssuer>,
    dir: PathBuf,
    /// Held while the environment runs: the data directory's lock (`demo.lock`).
    _lock: std::fs::File,
    /// And, on its SQLite journal, the journal's (`files::lock_sqlite_journal`).
    _journal_lock: Option<std::fs::File>,
}

/// The data directory's lock file: held by the demo that runs on the directory.
const DATA_DIR_LOCK: &str = "demo.lock";

/// Takes `dir`'s lock, or says who holds it. A second demo on one data directory shares the
/// first's journal, node id and issuer ledgers: its start would take the first's requests in
/// flight for its own (the same node id leads their RRNs), time them out and reverse them,
/// sales its terminals printed as approved, before it found the terminal port taken.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, Box<dyn std::error::Error>> {
    Ok(crate::files::try_lock(&dir.join(DATA_DIR_LOCK), || {
        format!(
            "data dir {} is in use by another shoudan demo: stop it first, or give this one \
             another --data-dir",
            dir.display()
        )
    })?)
}

/// How long a demo on a PostgreSQL journal waits for its node's place there.
const NODE_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Builds the demo environment on `dir` (created if need be) and starts the switch.
pub async fn start_env(
    dir: &Path,
    options: &EnvOptions,
) -> Result<DemoEnv, Box<dyn std::error::Error>> {
    // Keys, sealed card numbers and password hashes live here: the owner's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A directory that already existed keeps its mode (it may be shared, such as /tmp); say so.
    if let Some(mode) = crate::files::open_to_others(dir)? {
        tracing::warn!(
            "data dir {} may be read by others (mode {mode:o}): keys, sealed card numbers and \
             password hashes are kept there",
            dir.display()
        );
    }
    let lock = lock_data_dir(dir)?;
    // A `shoudan serve` on this data dir's journal is a node on it too: refused before
    // anything in the data dir is made or changed.
    let journal_lock = if options.postgres.is_some() {
        None
    } else {
        Some(crate::files::lock_sqlite_journal(&dir.join("switch.db"))?)
    };
    // A journal on PostgreSQL is opened before any key is made: one that already holds
    // terminals was made with some data dir's master key, which a new data dir does not have.
    let postgres = match &options.postgres {
        Some(config) => {
            let store = Arc::new(store::PgStore::open(config)?);
            // Another data dir's demo on the same journal would be node 1 too.
            store.claim_node_within(SwitchConfig::new(options.listen).node_id, NODE_CLAIM_WAIT)?;
            if !store.terminals()?.is_empty() && !dir.join("master.key").exists() {
                return Err(another_data_dirs_journal().into());
            }
            Some(store)
        }
        None => None,
    };
    let (hsm, keys) = open_hsm(dir)?;
    std::fs::create_dir_all(dir.join("issuers"))?;
    if let Some(store) = &postgres {
        sealed_with_these_keys(store.as_ref(), hsm.as_ref())?;
    }
    let clock: Arc<dyn issuer_sim::Clock> = Arc::new(issuer_sim::SystemClock);

    // Issuers, each on its own loopback port with a file ledger.
    let mut issuers = Vec::new();
    let mut cards = Vec::new();
    let mut endpoints = HashMap::new();
    let mut issuer_fixtures = Vec::new();
    for bank in DOMESTIC_BANKS.iter().chain([&FOREIGN_ISSUER]) {
        let zpk = handle(keys.zpk.get(*bank))?;
        let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
        let ledger_rel = format!("issuers/{bank}.db");
        let ledger = if options.issuer_ledgers_in_memory {
            LedgerLocation::Memory
        } else {
            LedgerLocation::File(dir.join(&ledger_rel))
        };
        let issuer = if *bank == FOREIGN_ISSUER {
            let (accounts, fixtures) = foreign_cards(&pins)?;
            cards.extend(fixtures);
            let config = IssuerConfig {
                ledger,
                ..IssuerConfig::in_memory(bank)
            };
            Issuer::open(config, accounts, Arc::new(pins), Arc::clone(&clock))?
        } else {
            let (issuer, demo) =
                issuer_sim::demo_issuer(bank, HEALTHY_CARDS, pins, ledger, Arc::clone(&clock))?;
            cards.extend(demo.iter().map(|c| CardFixture {
                bank: (*bank).to_owned(),
                label: c.label.to_owned(),
                pan: c.pan.expose_digits().to_owned(),
                expiry: c.expiry.yymm(),
                pin: c.pin().to_owned(),
                status: c.status.as_str().to_owned(),
                balance: c.balance,
                purchase_code: c.purchase_code.as_str().to_owned(),
            }));
            issuer
        };
        issuer.set_durable_answers(options.durable_issuers);
        let issuer = Arc::new(issuer);
        let sim = IssuerSim::new(Arc::clone(&issuer), seed_of(bank));
        if !options.issuer_latency.is_zero() {
            sim.faults()
                .set_latency(options.issuer_latency, options.issuer_latency);
        }
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let server = sim.serve(listener)?;
        let addr = server.local_addr();
        endpoints.insert(
            (*bank).to_owned(),
            IssuerEndpoint {
                addr,
                zpk,
                timeout: ISSUER_TIMEOUT,
            },
        );
        issuer_fixtures.push(IssuerFixture {
            bank: (*bank).to_owned(),
            port: addr.port(),
            ledger: ledger_rel,
        });
        issuers.push(RunningIssuer {
            bank: (*bank).to_owned(),
            issuer,
            server,
        });
    }

    // The journal, provisioned with merchants and terminals on first run.
    let journal = match postgres {
        None => {
            let mut store_config = SqliteConfig::new(dir.join("switch.db"));
            store_config.synchronous = options.synchronous;
            Journal::Sqlite(Arc::new(SqliteStore::open(&store_config)?))
        }
        Some(store) => Journal::Postgres(store),
    };
    let store = journal.store();
    if store.terminals()?.is_empty() {
        let mut records: Vec<Record> = MERCHANTS
            .iter()
            .map(|(mid, name, mcc)| {
                Record::UpsertMerchant(MerchantRow {
                    mid: (*mid).to_owned(),
                    name: (*name).to_owned(),
                    status: Status::Active,
                    mcc: (*mcc).to_owned(),
                })
            })
            .collect();
        for (tid, merchant, scheme, mac, _) in TERMINALS {
            let mid = MERCHANTS.get(merchant).map(|m| m.0).unwrap_or_default();
            records.push(switch::terminal_record(&TerminalSpec {
                tid: tid.to_owned(),
                mid: mid.to_owned(),
                tmk: handle(keys.tmk.get(tid))?,
                scheme,
                mac,
                mak: paycrypto::MakLength::Double,
                batch_no: 1,
            }));
        }
        store.submit(records)?.await?;
    }
    let extra = provision_extra(&hsm, store.as_ref(), dir, options.extra_terminals).await?;

    let mut config = SwitchConfig::new(options.listen);
    config.issuers = endpoints;
    config.default_issuer = Some(FOREIGN_ISSUER.to_owned());
    config.journal = options.journal;
    // As `shoudan serve` decides: a journal on PostgreSQL may be shared by several nodes.
    config.shared_journal = options.postgres.is_some();
    // Per-merchant risk rules, when the operator has put a rules file in the data directory
    // (docs/architecture.md, "Merchant onboarding and risk"). The demo merchants are
    // provisioned active, so they come out approved.
    let rules_path = dir.join("risk-rules.json");
    if rules_path.is_file() {
        let text = std::fs::read_to_string(&rules_path)?;
        config.risk_rules = Arc::new(risk::RuleBook::from_json(&text)?);
    }
    let switch = Switch::start(
        config,
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
    )
    .await?;
    let addr = switch.local_addr();
    for _ in 0..200 {
        if issuers.iter().all(|i| switch.issuer_connected(&i.bank)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let host = options.listen.ip().to_string();
    let fixture_of = |tid: &str, merchant: usize, scheme: KeyScheme, mac: MacAlgorithm, traffic| {
        let m = MERCHANTS.get(merchant).copied().unwrap_or_default();
        Ok(TerminalFixture {
            tid: tid.to_owned(),
            mid: m.0.to_owned(),
            merchant: m.1.to_owned(),
            tmk: demo_key_hex(&format!("tmk/{tid}"))?,
            key_scheme: scheme.code().to_owned(),
            mac: mac.as_str().to_owned(),
            host: host.clone(),
            port: addr.port(),
            traffic,
        })
    };
    let terminals: Vec<TerminalFixture> = TERMINALS
        .iter()
        .map(|(tid, merchant, scheme, mac, traffic)| {
            fixture_of(tid, *merchant, *scheme, *mac, *traffic)
        })
        .collect::<Result<_, paycrypto::RandomError>>()?;
    let extra_terminals: Vec<TerminalFixture> = extra
        .iter()
        .map(|tid| fixture_of(tid, 0, EXTRA_SCHEME, EXTRA_MAC, false))
        .collect::<Result<_, paycrypto::RandomError>>()?;
    let fixtures = Fixtures {
        host: host.clone(),
        port: addr.port(),
        http_port: 0,
        terminals,
        cards,
        issuers: issuer_fixtures,
    };
    Ok(DemoEnv {
        switch,
        journal,
        hsm,
        fixtures,
        extra_terminals,
        issuers,
        dir: dir.to_path_buf(),
        _lock: lock,
        _journal_lock: journal_lock,
    })
}

const EXTRA_SCHEME: KeyScheme = KeyScheme::Double;
const EXTRA_MAC: MacAlgorithm = MacAlgorithm::X919;

/// Imports the extra terminals' keys and provisions them; returns their TIDs. The key store
/// is written before the terminals' rows: a run that ends without its clean stop (killed, or
/// a later step of the start failing) must not leave terminals whose keys were never saved.
async fn provision_extra(
    hsm: &SoftHsm,
    store: &dyn Store,
    dir: &Path,
    count: usize,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut tids = Vec::new();
    let mut records = Vec::new();
    for i in 0..count {
        let tid = format!("3{:07}", i + 1);
        if let Some(row) = store.terminal(&tid)? {
            // Provisioned by an earlier run on this data dir: its key is in the HSM store,
            // unless that run (of an older build) ended before saving it; then it is made again.
            let kept = switch::handle_from_bytes(&row.tmk_wrapped)
                .is_some_and(|tmk| hsm.key_info(tmk).is_ok());
            if kept {
                tids.push(tid);
                continue;
            }
        }
        let tmk = hsm.import_key(
            KeyUsage::Tmk,
            EXTRA_SCHEME.tmk_algorithm(),
            &demo_key_hex(&format!("tmk/{tid}"))?,
        )?;
        records.push(switch::terminal_record(&TerminalSpec {
            tid: tid.clone(),
            mid: MERCHANTS
                .first()
                .map(|m| m.0)
                .unwrap_or_default()
                .to_owned(),
            tmk,
            scheme: EXTRA_SCHEME,
            mac: EXTRA_MAC,
            mak: paycrypto::MakLength::Double,
            batch_no: 1,
        }));
        tids.push(tid);
    }
    if !records.is_empty() {
        crate::files::write_whole(&dir.join("hsm.store"), &hsm.export_store()?, 0o600)?;
        store.submit(records)?.await?;
    }
    Ok(tids)
}

impl DemoEnv {
    /// The journal, as the switch and the portal use it.
    pub fn store(&self) -> Arc<dyn Store> {
        self.journal.store()
    }

    /// Stops the switch and the issuers, letting pending reversals drain first, and saves the
    /// HSM's keys.
    pub async fn stop(self) -> CliResult {
        // Give store and forward a moment to deliver reversals just queued, so a clean stop
        // leaves nothing in doubt; whatever remains is resent on the next start.
        let deadline = tokio::time::Instant::now() + SAF_DRAIN;
        while tokio::time::Instant::now() < deadline
            && self
                .store()
                .count_reversals_in_state(store::SafState::Pending)
                .is_ok_and(|pending| pending > 0)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.switch.shutdown().await;
        // The journal next, before anything below can fail: its writes are all committed.
        let journal = self.journal;
        tokio::task::spawn_blocking(move || journal.close()).await?;
        let mut closed: CliResult = Ok(());
        for running in self.issuers {
            running.server.shutdown().await;
            let issuer = running.issuer;
            let result = tokio::task::spawn_blocking(move || issuer.close()).await;
            if let Err(error) = result
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                closed = Err(error.into());
            }
        }
        crate::files::write_whole(
            &self.dir.join("hsm.store"),
            &self.hsm.export_store()?,
            0o600,
        )?;
        closed
    }
}

async fn run_async(args: DemoArgs, http_runtime: tokio::runtime::Handle) -> CliResult {
    let dir = args.data_dir.clone();
    let env = start_env(
        &dir,
        &EnvOptions {
            listen: SocketAddr::new(args.listen, args.terminal_port),
            synchronous: Synchronous::Full,
            journal: true,
            durable_issuers: true,
            issuer_ledgers_in_memory: false,
            issuer_latency: args.issuer_latency.unwrap_or_default(),
            extra_terminals: args.bench_terminals,
            postgres: match &args.database {
                Some(url) if crate::serve::is_postgres(url) => Some(store::PgConfig {
                    url: url.clone(),
                    schema: args.database_schema.clone(),
                }),
                Some(_) => {
                    return Err(
                        "--database: expected postgres://user@host:port/database (the \
                                demo's SQLite journal is the data dir's switch.db)"
                            .into(),
                    );
                }
                None => None,
            },
        },
    )
    .await?;
    let addr = env.switch.local_addr();

    let (stop, stop_rx) = watch::channel(false);
    let http = tokio::net::TcpListener::bind((args.listen, args.http_port)).await?;
    let http_port = http.local_addr()?.port();
    let switch_metrics = Arc::new(web::metrics::SwitchMetricsCell::default());
    switch_metrics.set(env.switch.metrics());
    let portal = portal(&env, Arc::clone(&switch_metrics)).await?;
    let http_task = web::spawn_serve(
        &http_runtime,
        portal.router_with_metrics(),
        http,
        stop_rx.clone(),
    )?;
    // Notifications: the journal tailer (declines, reversals, refunds, duplicates) and the
    // webhook notifier, for merchants that configured an endpoint.
    let notify_tasks = resolve::outbox::spawn_background(
        env.store(),
        Arc::clone(&env.hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
        // Everything of the demo is on this machine, merchants' test receivers included.
        resolve::webhook::Destinations::AnyAddress,
        resolve::webhook::Trust::system()?.0,
        stop_rx.clone(),
    );

    // An IPv6 address is bracketed in a URL (`http://[::1]:8080/`).
    let host = match args.listen {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let mut fixtures = Fixtures {
        http_port,
        ..env.fixtures.clone()
    };
    fixtures
        .terminals
        .extend(env.extra_terminals.iter().cloned());
    crate::fixtures::save(&dir, &fixtures)?;

    let traffic_task = args.traffic.filter(|r| *r > 0.0).map(|rate| {
        tokio::spawn(crate::traffic::run(
            dir.clone(),
            fixtures.clone(),
            rate,
            stop_rx.clone(),
        ))
    });

    say!("shoudan demo running (data dir {})", dir.display());
    say!("  switch (terminals)  {addr}");
    say!("  portal and console  http://{host}:{http_port}/");
    say!("  API (OpenAPI)       http://{host}:{http_port}/api/openapi.json");
    say!("  metrics             http://{host}:{http_port}/metrics");
    say!("demo users (username / password):");
    for (username, password, role, _) in DEMO_USERS {
        say!("  {username:<10} {password:<16} {role}");
    }
    for i in &fixtures.issuers {
        say!("  issuer {:<12} 127.0.0.1:{}", i.bank, i.port);
    }
    say!(
        "  fixtures            {}",
        crate::fixtures::path(&dir).display()
    );
    say!("try:");
    say!("  shoudan fixtures --data-dir {}", dir.display());
    say!(
        "  shoudan terminal --data-dir {} --tid 10000001 purchase --amount 1.00",
        dir.display()
    );
    say!("  shoudan audit --data-dir {}", dir.display());
    say!("Ctrl-C stops.");

    // The switch's handle stays here (it stops the switch); the portal reads its counters
    // from a cell refreshed once a second.
    let refresh = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            switch_metrics.set(env.switch.metrics());
        }
    };
    tokio::select! {
        signal = wait_for_signal() => signal?,
        () = refresh => {}
    }
    say!("stopping");
    let _ = stop.send(true);
    if let Some(task) = traffic_task {
        let _ = task.await;
    }
    let _ = http_task.await;
    // A refund approval begun runs to its end (its refund, case and audit row) while the
    // switch still runs.
    portal
        .wait_for_work_run_to_end(Duration::from_secs(10))
        .await;
    for task in notify_tasks {
        let _ = task.await;
    }
    portal.give_up_unwritten_audit_rows();
    env.stop().await?;
    say!("stopped");
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// Demo users of the portal: (username, password, role, merchant index). Demo data, printed
/// at start by design; a real deployment creates its users through the admin API.
const DEMO_USERS: [(&str, &str, web::Role, Option<usize>); 4] = [
    ("teahouse", "teahouse-demo", web::Role::Merchant, Some(0)),
    ("bookshop", "bookshop-demo", web::Role::Merchant, Some(1)),
    ("operator", "operator-demo", web::Role::Operator, None),
    ("admin", "admin-demo-pass", web::Role::Admin, None),
];

/// The web application over the demo's journal, with its demo users (created on first run).
async fn portal(
    env: &DemoEnv,
    switch_metrics: Arc<web::metrics::SwitchMetricsCell>,
) -> Result<web::Web, Box<dyn std::error::Error>> {
    let portal = web::Web::new(
        env.store(),
        Arc::clone(&env.hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
        Arc::new(env.switch.back_office()),
    )
    .with_switch_metrics(switch_metrics)
    // Everything of the demo is on this machine, merchants' test receivers included.
    .with_webhook_destinations(resolve::webhook::Destinations::AnyAddress);
    for (username, password, role, merchant) in DEMO_USERS {
        if env.store().web_user_by_name(username)?.is_some() {
            continue;
        }
        let merchant = merchant.and_then(|i| MERCHANTS.get(i));
        // No username has a colon: the demo is no user of the portal (four eyes count
        // passwords set by a user as that user's).
        web::create_user(
            &portal,
            "cli:demo",
            web::auth::NewUser {
                username: username.to_owned(),
                password: zeroize::Zeroizing::new(password.to_owned()),
                role,
                mid: merchant.map(|m| m.0.to_owned()),
                display_name: merchant.map_or(username, |m| m.1).to_owned(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(portal)
}
