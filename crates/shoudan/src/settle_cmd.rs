//! `shoudan settle`, `payouts`, `reconcile`, `ledger balance` and `account`: the settlement
//! crate over the demo's data directory (journal `switch.db`, issuer ledgers, master key), or
//! over a node's configuration (`--config`: its journal, SQLite or PostgreSQL, and its keys).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use domain::IssuerDirectory;
use domain::money::yuan_digits as yuan;
use paycrypto::{Hsm, MasterKey, OsRandom, SoftHsm};
use serde::Serialize;
use settlement::{
    AccountInput, BindOutcome, IssuerClearingRow, ReconReport, Sealer, SimBank, SimBehaviour,
    audit, bind_account, confirm_change, parse_clearing_csv, reconcile, run_payouts,
    settle_date_and_recent_with,
};
use store::settlement::{AccountKind, PayoutState};
use store::{SqliteConfig, SqliteStore, Store};
use switch::{Clock, SystemClock};

use crate::CliResult;
use crate::serve::ServeConfig;

/// Payouts listed at most by `shoudan payouts`, the newest.
const PAYOUTS_LISTED_MAX: u32 = 1_000;

#[derive(clap::Args)]
pub struct Common {
    /// The demo's data directory.
    #[arg(long, default_value = "./shoudan-data")]
    pub data_dir: PathBuf,
    /// The demo's journal, when not the data directory's `switch.db` (a demo started with
    /// `--database`): `sqlite:PATH` or `postgres://...`.
    #[arg(long, conflicts_with = "config")]
    pub database: Option<String>,
    /// The PostgreSQL schema of that journal, when not `public`.
    #[arg(long, requires = "database")]
    pub database_schema: Option<String>,
    /// A node's configuration (`shoudan serve --config`'s file) instead of a demo's data
    /// directory: the journal its `database` names and the master key its `[hsm]` names.
    #[arg(long, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// What the commands work on.
enum Deployment {
    /// A demo's data directory: `switch.db` (or the journal `--database` names), `master.key`,
    /// the simulated issuers and bank.
    Demo {
        dir: PathBuf,
        database: Option<(String, Option<String>)>,
    },
    /// A node's configuration: its journal and keys; no simulator.
    Node(Box<ServeConfig>),
}

impl Common {
    fn deployment(&self) -> Result<Deployment, Box<dyn std::error::Error>> {
        Ok(match &self.config {
            Some(path) => Deployment::Node(Box::new(ServeConfig::load(path)?)),
            None => Deployment::Demo {
                dir: self.data_dir.clone(),
                database: self
                    .database
                    .clone()
                    .map(|url| (url, self.database_schema.clone())),
            },
        })
    }
}

impl Deployment {
    /// The journal. A node's must exist at this build's schema: the tools neither create nor
    /// migrate it (a node's start does).
    fn store(&self) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        match self {
            Deployment::Demo {
                database: Some((url, schema)),
                ..
            } => crate::serve::open_store_existing(url, schema.as_deref()),
            Deployment::Demo {
                dir,
                database: None,
            } => Ok(open_store(dir)?),
            Deployment::Node(config) => crate::serve::open_store_existing(
                &config.database,
                config.database_schema.as_deref(),
            ),
        }
    }

    /// How a settle run writes its lines here. The pause between parts lets a live node's
    /// writer into SQLite's one write lock; PostgreSQL locks rows, so there it only slows the
    /// run (some 2.4 s per million lines).
    fn clearing_config(&self) -> settlement::ClearingConfig {
        let postgres = match self {
            Deployment::Demo { database, .. } => database
                .as_ref()
                .is_some_and(|(url, _)| crate::serve::is_postgres(url)),
            Deployment::Node(config) => crate::serve::is_postgres(&config.database),
        };
        settlement::ClearingConfig {
            pause_between_parts: if postgres {
                std::time::Duration::ZERO
            } else {
                settlement::PAUSE_BETWEEN_PARTS
            },
            ..settlement::ClearingConfig::default()
        }
    }

    /// What seals and opens account numbers: the master key the portal's node uses too.
    fn sealer(&self) -> Result<HsmSealer, Box<dyn std::error::Error>> {
        match self {
            Deployment::Demo { dir, .. } => sealer(dir),
            Deployment::Node(config) => Ok(HsmSealer(crate::serve::open_hsm(
                &config.hsm,
                &mut std::io::stdin().lock(),
            )?)),
        }
    }
}

#[derive(clap::Args)]
pub struct SettleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clearing date, YYYY-MM-DD or YYYYMMDD.
    #[arg(long)]
    pub date: String,
    /// Settle a demo's date before it has closed (its 23:00 cut-over and the 30 minutes'
    /// grace after), to see it at once: what changes after the run (a reversal in the grace)
    /// is cleared only by a later run, perhaps after a payout paid it.
    #[arg(long, conflicts_with = "config")]
    pub before_close: bool,
}

#[derive(clap::Args)]
pub struct PayoutsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Run the payout job for this payout day (YYYY-MM-DD) through the simulated bank first.
    #[arg(long)]
    pub run: Option<String>,
    /// List only this merchant's payouts (a `--run` still pays every merchant due that day).
    #[arg(long)]
    pub mid: Option<String>,
}

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub date: String,
    /// With `--config`: the directory of the issuers' clearing files, `<BANK>-<YYYYMMDD>.csv`
    /// for each `[[issuer]]` bank of the configuration (the neighbouring days' files too when
    /// they are there, for transactions around the cut-over).
    #[arg(long, requires = "config")]
    pub clearing_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum LedgerCmd {
    /// Every account's balance and the ledger audit (sum zero, every posting balanced).
    Balance(Common),
}

#[derive(clap::Subcommand)]
pub enum AccountCmd {
    /// Bind (or re-bind) a merchant's settlement card or bank account.
    Bind {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        mid: String,
        /// A debit card number (Luhn-checked, bank from its BIN); `-` reads it from standard
        /// input, so that it stays out of the shell's history and the process list.
        #[arg(long, conflicts_with = "account")]
        card: Option<String>,
        /// A bank account number (needs --bank); `-` reads it from standard input.
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        bank: Option<String>,
        #[arg(long)]
        name: String,
        /// Who asks (the maker).
        #[arg(long, default_value = "merchant")]
        by: String,
    },
    /// Confirm a re-binding waiting for an operator (the checker, not the maker).
    Confirm {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        change: i64,
        #[arg(long)]
        by: String,
    },
}

/// Account numbers sealed with the master key, as PANs are.
struct HsmSealer(Arc<SoftHsm>);

impl Sealer for HsmSealer {
    fn seal(&self, clear: &str) -> Result<Vec<u8>, String> {
        self.0.seal(clear.as_bytes()).map_err(|e| e.to_string())
    }
    fn open(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<String>, String> {
        let clear = self.0.open(sealed).map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(&clear).map_err(|e| e.to_string())?;
        Ok(zeroize::Zeroizing::new(text.to_owned()))
    }
}

fn sealer(dir: &Path) -> Result<HsmSealer, Box<dyn std::error::Error>> {
    let path = dir.join("master.key");
    let hex = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (run `shoudan demo` first)", path.display()))?,
    );
    let master = MasterKey::from_hex(hex.trim())?;
    Ok(HsmSealer(Arc::new(SoftHsm::new(
        &master,
        Box::new(OsRandom),
    ))))
}

/// What the simulated bank remembers between runs (`SimBankMemory`), in the data directory.
const SIM_BANK_MEMORY: &str = "sim-bank-memory.json";

/// `sim-bank.json`: `{"<account number>": "frozen"}`; behaviours `normal`, `invalid`,
/// `frozen`, `closed`, `limit:<fen>`, `system-errors:<n>`, `return-after:<days>`, or
/// `name:<holder name the bank has>`. Test data for the simulated bank only. The bank
/// remembers what it did in earlier runs (`sim-bank-memory.json`): the references it paid,
/// the returns it has still to report, the system errors already used up.
fn sim_bank(dir: &Path) -> Result<SimBank, Box<dyn std::error::Error>> {
    let memory_path = dir.join(SIM_BANK_MEMORY);
    let bank = match std::fs::read_to_string(&memory_path) {
        Ok(text) => SimBank::remembering(
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", memory_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimBank::new(),
        Err(e) => return Err(format!("{}: {e}", memory_path.display()).into()),
    };
    // Each payment and return is on disk before the bank answers it, as a bank's books are: a
    // run killed half-way leaves a bank that pays none of its references twice.
    let bank = bank.kept_by(Box::new(move |memory| {
        let bytes = serde_json::to_vec_pretty(memory).map_err(|e| e.to_string())?;
        crate::files::write_whole(&memory_path, &bytes, 0o600)
            .map_err(|e| format!("{}: {e}", memory_path.display()))
    }));
    let path = dir.join("sim-bank.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bank.forget_unconfigured(&[]);
            return Ok(bank);
        }
        // One that exists but cannot be read would make every payout simulate as normal.
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    let accounts: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)?;
    let numbers: Vec<&str> = accounts.keys().map(String::as_str).collect();
    bank.forget_unconfigured(&numbers);
    for (number, spec) in &accounts {
        let (what, arg) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
        let n = || {
            arg.parse::<u32>()
                .map_err(|_| format!("sim-bank.json: {spec}"))
        };
        let behaviour = match what {
            "normal" => SimBehaviour::Normal,
            "invalid" => SimBehaviour::InvalidAccount,
            "frozen" => SimBehaviour::Frozen,
            "closed" => SimBehaviour::ClosedOrLost,
            "limit" => SimBehaviour::LimitFen(i64::from(n()?)),
            "system-errors" => SimBehaviour::SystemErrors(n()?),
            "return-after" => SimBehaviour::ReturnAfterDays(n()?),
            "name" => {
                bank.set_holder(number, arg);
                continue;
            }
            _ => return Err(format!("sim-bank.json: unknown behaviour {spec}").into()),
        };
        bank.configure(number, spec, behaviour);
    }
    Ok(bank)
}

/// Keeps what the simulated bank did for the next run: written whole (a file of its own,
/// synced, then renamed over the last), so a run stopped half-way or a power cut leaves the
/// previous memory.
fn remember(dir: &Path, bank: &SimBank) -> Result<(), Box<dyn std::error::Error>> {
    let path = dir.join(SIM_BANK_MEMORY);
    crate::files::write_whole(&path, &serde_json::to_vec_pretty(&bank.memory())?, 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn open_store(dir: &Path) -> Result<Arc<SqliteStore>, Box<dyn std::error::Error>> {
    let path = dir.join("switch.db");
    if !path.exists() {
        return Err(format!("{}: no journal (run `shoudan demo` first)", path.display()).into());
    }
    Ok(Arc::new(SqliteStore::open(&SqliteConfig::new(path))?))
}

fn print_json<T: Serialize>(value: &T) -> CliResult {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Why `date` (`YYYYMMDD`) cannot be settled at `now_ms`, if it cannot: its clearing day is
/// still open (or to come), or closed at the cut-over less than the grace ago, while voids and
/// reversals of its transactions are still taken. A run then would leave those to the next
/// day's run, after the merchant was paid for what they undo.
fn not_closed(date: &str, now_ms: i64) -> Option<String> {
    let cutover = switch::CUTOVER_MINUTE_DEFAULT;
    let open = switch::ClearingDay::of(now_ms, cutover);
    let grace_min = switch::CUTOVER_GRACE_MS / 60_000;
    let clock = |minute: i64| {
        let minute = minute.rem_euclid(i64::from(switch::MINUTES_PER_DAY));
        format!("{:02}:{:02}", minute / 60, minute % 60)
    };
    let (cut, grace_end) = (
        clock(i64::from(cutover)),
        clock(i64::from(cutover) + grace_min),
    );
    if date >= open.date.as_str() {
        return Some(format!(
            "{date} has not closed: {} is the clearing date open now, and a date closes at the \
             {cut} cut-over (China time), its voids and reversals taken until {grace_end}; \
             settle it after that",
            open.date
        ));
    }
    let previous = settlement::dates::add_days(&open.date, -1)?;
    if open.in_grace && date == previous {
        return Some(format!(
            "{date} closed at the {cut} cut-over, but voids and reversals of its transactions \
             are taken until {grace_end} (China time): settle it after {grace_end}, or a sale \
             reversed then would be paid out before the next day's run takes it back"
        ));
    }
    None
}

pub fn settle(args: SettleArgs) -> CliResult {
    // Read before the journal is opened: a mistyped date is reported as one, not as whatever
    // is wrong with the data directory.
    let date = settlement::dates::normalise(&args.date)
        .ok_or("--date: not a date (YYYY-MM-DD or YYYYMMDD)")?;
    if !args.before_close
        && let Some(why) = not_closed(&date, SystemClock.now_ms())
    {
        return Err(why.into());
    }
    let deployment = args.common.deployment()?;
    let store = deployment.store()?;
    let directory = IssuerDirectory::embedded()?;
    let (report, revisited) = settle_date_and_recent_with(
        store.as_ref(),
        &directory,
        &date,
        SystemClock.now_ms(),
        &deployment.clearing_config(),
    )?;
    if args.common.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("revisited".into(), serde_json::to_value(&revisited)?);
        }
        return print_json(&value);
    }
    // Lines a run that stopped part-way had written, finished by this one.
    let resumed = |r: &settlement::SettleReport| {
        if r.resumed_lines > 0 {
            format!(
                " ({} of them written by a run that stopped part-way)",
                r.resumed_lines
            )
        } else {
            String::new()
        }
    };
    for again in revisited.iter().filter(|r| r.missed) {
        println!(
            "{} was never settled (its run was missed or stopped): cleared now, run {}, {} \
             clearing lines{}",
            again.clearing_date,
            again.run_no.unwrap_or(0),
            again.new_lines,
            resumed(again)
        );
    }
    for again in revisited.iter().filter(|r| !r.missed) {
        println!(
            "{} cleared again: run {}, {} new clearing lines{} (changed since its last run)",
            again.clearing_date,
            again.run_no.unwrap_or(0),
            again.new_lines,
            resumed(again)
        );
    }
    if report.changed {
        println!(
            "settled {}: run {}, {} new clearing lines{}, {} postings",
            report.clearing_date,
            report.run_no.unwrap_or(0),
            report.new_lines,
            resumed(&report),
            report.new_postings
        );
    } else {
        println!(
            "{} settled: nothing new to clear, nothing changed",
            report.clearing_date
        );
    }
    println!(
        "{:<16} {:>6} {:>14} {:>12} {:>12} {:>10} {:>14}",
        "merchant", "txns", "captures", "voids", "refunds", "fees", "net"
    );
    for m in &report.merchants {
        println!(
            "{:<16} {:>6} {:>14} {:>12} {:>12} {:>10} {:>14}",
            m.mid,
            m.transactions,
            yuan(m.captures_fen),
            yuan(m.voids_fen),
            yuan(m.refunds_fen),
            yuan(m.fees_fen),
            yuan(m.net_fen)
        );
    }
    Ok(())
}

/// Exit 1 when a run left payouts unsent for an account it could not unseal, or stuck on bank
/// system errors for a day (findings for whoever schedules the run), 2 on an error.
pub fn payouts(args: PayoutsArgs) -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    // Read before the journal is opened, as `settle`'s date is.
    let run_day = args
        .run
        .as_deref()
        .map(|day| settlement::dates::normalise(day).ok_or("--run: not a date (YYYY-MM-DD)"))
        .transpose()?;
    let deployment = args.common.deployment()?;
    let store = deployment.store()?;
    let run = match run_day {
        Some(day) => {
            let Deployment::Demo { dir, .. } = &deployment else {
                return Err(
                    "payouts --run pays through the simulated bank of a demo's data \
                     directory; no bank is connected to a node, so its payouts are only listed"
                        .into(),
                );
            };
            let sealer = deployment.sealer()?;
            // The embedded simulated bank: accounts behave normally unless `sim-bank.json`
            // in the data directory says otherwise.
            let bank = sim_bank(dir)?;
            // A run for a day still to come (a mistyped year) would pay through that day and
            // leave every run until then with nothing to pay. The latest sensible one is T+1
            // of the clearing date now open (a day ahead of the calendar after 23:00).
            let open =
                switch::clearing_date_of(SystemClock.now_ms(), switch::CUTOVER_MINUTE_DEFAULT);
            let latest = settlement::dates::add_days(&open, 1).unwrap_or(open);
            if day > latest {
                return Err(format!(
                    "--run {day} is after {latest}, the payout day of the clearing date now \
                     open: a run is for that day or one missed, never one to come"
                )
                .into());
            }
            bank.set_today(&day);
            let run = run_payouts(store.as_ref(), &bank, &sealer, &day, SystemClock.now_ms());
            // Remembered whatever the run's end: the bank did what it did. A return it reported
            // that the run did not write down is not acknowledged: it is reported again.
            remember(dir, &bank)?;
            Some(run?)
        }
        None => None,
    };
    let list = store.payouts_newest(args.mid.as_deref(), None, PAYOUTS_LISTED_MAX)?;
    let now_ms = SystemClock.now_ms();
    if args.common.json {
        #[derive(Serialize)]
        struct Row<'a> {
            key: &'a str,
            mid: &'a str,
            payout_date: &'a str,
            amount_fen: i64,
            state: &'a str,
            attempts: u32,
            account: &'a str,
            failure: Option<&'a str>,
            diagnosis: Option<&'static str>,
            /// Retried after bank system errors for a day or more (`settlement::is_stuck`).
            stuck: bool,
            first_attempt_ms: Option<i64>,
        }
        let rows: Vec<Row<'_>> = list
            .iter()
            .map(|p| Row {
                key: &p.key,
                mid: &p.mid,
                payout_date: &p.payout_date,
                amount_fen: p.amount_fen,
                state: p.state.as_str(),
                attempts: p.attempts,
                account: &p.account_masked,
                failure: p.failure.as_deref(),
                diagnosis: p
                    .failure
                    .as_deref()
                    .and_then(domain::PayoutFailure::from_key)
                    .map(|f| domain::diagnose_payout(f).title.en),
                stuck: settlement::is_stuck(p, now_ms),
                first_attempt_ms: p.first_attempt_ms,
            })
            .collect();
        print_json(&serde_json::json!({ "run": run, "payouts": rows }))?;
        return Ok(payout_exit(run.as_ref()));
    }
    if let Some(run) = &run {
        println!(
            "payout run {}: {} created, {} sent, {} retrying, {} held, {} returned, {} released, {} waiting for an account",
            run.payout_date,
            run.created.len(),
            run.sent.len(),
            run.retrying.len(),
            run.held.len(),
            run.returned.len(),
            run.released.len(),
            run.waiting_for_account.len()
        );
        if !run.withheld.is_empty() {
            println!(
                "withheld: {} (the merchant is suspended; paid once it is approved again)",
                run.withheld.join(", ")
            );
        }
        if !run.unsettled.is_empty() {
            println!(
                "not made: nothing by cutoff {} until a settle run has cleared it",
                run.unsettled.join(", ")
            );
        }
        if !run.netted.is_empty() {
            println!(
                "netted: {} (refunds cleared while it waited took all of it: nothing sent)",
                run.netted.join(", ")
            );
        }
        if !run.unsealable.is_empty() {
            println!(
                "not sent: the account number of {} could not be unsealed; check that the \
                 sealing key is the one the accounts were bound under",
                run.unsealable.join(", ")
            );
        }
        if !run.stuck.is_empty() {
            println!(
                "stuck: {} ({} for {} h or more since the first attempt; still retried every \
                 hour under the same reference: call the bank)",
                run.stuck.join(", "),
                domain::diagnose_payout(domain::PayoutFailure::BankSystemError)
                    .title
                    .en,
                settlement::PAYOUT_STUCK_AFTER_MS / 3_600_000
            );
        }
    }
    if list.is_empty() {
        println!("no payouts");
    }
    for p in &list {
        let why = p
            .failure
            .as_deref()
            .and_then(domain::PayoutFailure::from_key)
            .map(|f| format!("  {}", domain::diagnose_payout(f).title.en))
            .unwrap_or_default();
        let stuck = match p.first_attempt_ms {
            Some(first) if settlement::is_stuck(p, now_ms) => {
                let at = switch::LocalTime::from_ms(first);
                format!(
                    "  STUCK since {:04}-{:02}-{:02} {}",
                    at.year,
                    at.month,
                    at.day,
                    at.clock_text()
                )
            }
            _ => String::new(),
        };
        println!(
            "{:<26} {:>14} {:<8} {:<22} attempts {}{why}{stuck}",
            p.key,
            yuan(p.amount_fen),
            p.state.as_str(),
            p.account_masked,
            p.attempts
        );
    }
    let held = list.iter().filter(|p| p.state == PayoutState::Held).count();
    if held > 0 && !args.common.json {
        println!(
            "{held} held: the merchant re-binds (`shoudan account bind`), an operator confirms"
        );
    }
    Ok(payout_exit(run.as_ref()))
}

fn payout_exit(run: Option<&settlement::PayoutRunReport>) -> std::process::ExitCode {
    if run.is_some_and(|r| !r.unsealable.is_empty() || !r.stuck.is_empty()) {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Exit 1 when the ledger does not balance (a finding, as `audit` and `reconcile` report
/// theirs), 2 on an error.
pub fn ledger(cmd: LedgerCmd) -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let LedgerCmd::Balance(common) = cmd;
    let store = common.deployment()?.store()?;
    let report = audit(store.as_ref())?;
    if common.json {
        print_json(&report)?;
    } else {
        for a in &report.accounts {
            println!("{:<40} {:>16}", a.account, yuan(a.balance_fen));
        }
        println!(
            "{:<40} {:>16}",
            "sum (must be 0.00)",
            yuan(report.total_fen)
        );
        println!(
            "{}",
            if report.balanced {
                "balanced: every posting sums to zero"
            } else {
                "NOT BALANCED"
            }
        );
    }
    if report.balanced {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("ledger does not balance: {:?}", report.unbalanced);
        Ok(std::process::ExitCode::from(1))
    }
}

/// The number as given, or the first line of standard input for `-` (an unreadable or
/// empty one is an error, not an empty number).
fn number_or_stdin(given: String) -> Result<String, String> {
    if given != "-" {
        return Ok(given);
    }
    let mut line = zeroize::Zeroizing::new(String::with_capacity(256));
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the number from standard input: {e}"))?;
    let number = line.trim();
    if number.is_empty() {
        return Err("standard input held no number".to_owned());
    }
    Ok(number.to_owned())
}

pub fn account(cmd: AccountCmd) -> CliResult {
    match cmd {
        AccountCmd::Bind {
            common,
            mid,
            card,
            account,
            bank,
            name,
            by,
        } => {
            let deployment = common.deployment()?;
            let store = deployment.store()?;
            let sealer = deployment.sealer()?;
            let directory = IssuerDirectory::embedded()?;
            let card = card.map(number_or_stdin).transpose()?;
            let account = account.map(number_or_stdin).transpose()?;
            let input = match (card, account) {
                (Some(number), None) => AccountInput {
                    kind: AccountKind::Card,
                    number: zeroize::Zeroizing::new(number),
                    holder_name: name,
                    bank_code: bank,
                },
                (None, Some(number)) => AccountInput {
                    kind: AccountKind::Bank,
                    number: zeroize::Zeroizing::new(number),
                    holder_name: name,
                    bank_code: bank,
                },
                _ => return Err("give --card or --account".into()),
            };
            let outcome = bind_account(
                store.as_ref(),
                &sealer,
                &directory,
                &mid,
                &input,
                &by,
                SystemClock.now_ms(),
            );
            // The clear number is not kept past the binding (it is sealed in the journal).
            drop(input);
            let outcome = outcome?;
            if common.json {
                return print_json(&outcome);
            }
            match outcome {
                BindOutcome::Active { change_id, version } => {
                    println!("bound (change {change_id}, version {version})");
                }
                BindOutcome::PendingConfirmation { change_id } => println!(
                    "change {change_id} waits for an operator: shoudan account confirm --change {change_id} --by <operator>"
                ),
            }
            Ok(())
        }
        AccountCmd::Confirm { common, change, by } => {
            let store = common.deployment()?.store()?;
            let version = confirm_change(store.as_ref(), change, &by, SystemClock.now_ms())?;
            if common.json {
                return print_json(&serde_json::json!({ "change": change, "version": version }));
            }
            println!("change {change} confirmed by {by}: account version {version}");
            Ok(())
        }
    }
}

/// Where the issuers' clearing files come from.
enum ClearingFiles<'a> {
    /// A demo's data directory: its `clearing/`, or written from the simulated issuers' ledgers.
    Demo(&'a Path),
    /// A directory the issuers' files were put in: `<BANK>-<YYYYMMDD>.csv`.
    Received(&'a Path),
}

impl ClearingFiles<'_> {
    /// An issuer's file for a day. `required`: the day reconciled, whose missing file is an
    /// error (reading none would report every transaction as unknown to the issuer); a
    /// neighbouring day's missing file reads as empty.
    fn read(
        &self,
        bank: &str,
        date: &str,
        required: bool,
    ) -> Result<Vec<IssuerClearingRow>, Box<dyn std::error::Error>> {
        match self {
            ClearingFiles::Demo(dir) => clearing_file(dir, bank, date, required),
            ClearingFiles::Received(dir) => {
                let path = dir.join(format!("{bank}-{date}.csv"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(parse_clearing_csv(&text)?),
                    Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                        Ok(Vec::new())
                    }
                    Err(e) => Err(format!("{bank}'s clearing file {}: {e}", path.display()).into()),
                }
            }
        }
    }
}

/// An issuer's clearing file for a day: the one in `clearing/` if there is one, else written by
/// issuer-sim's own writer from its ledger as the issuer would send it now. It is kept in
/// `clearing/` only when `keep` and the issuer's day has closed: the simulated issuers' days
/// end at midnight, not at the host's 23:00 cut-over, and then a grace for reversals still on
/// their way. A file of a day still open would be incomplete, and reading it later would
/// report the day's later transactions as unknown to the issuer.
fn clearing_file(
    dir: &Path,
    bank: &str,
    date: &str,
    keep: bool,
) -> Result<Vec<IssuerClearingRow>, Box<dyn std::error::Error>> {
    let path = dir.join("clearing").join(format!("{bank}-{date}.csv"));
    if path.exists() {
        return Ok(parse_clearing_csv(&std::fs::read_to_string(&path)?)?);
    }
    let ledger_path = dir.join("issuers").join(format!("{bank}.db"));
    let day_number = settlement::dates::day_number(date).ok_or("not a date")?;
    let day = issuer_sim::Date::from_days_since_epoch(day_number);
    let ledger = issuer_sim::ledger::Ledger::open(&issuer_sim::LedgerLocation::File(ledger_path))?;
    let records = ledger.transactions(Some(day), true)?;
    ledger.close()?;
    let mut csv = Vec::new();
    issuer_sim::clearing::write_csv(&records, &mut csv)?;
    let open_day =
        switch::LocalTime::from_ms(SystemClock.now_ms() - switch::CUTOVER_GRACE_MS).yyyymmdd();
    if keep && date < open_day.as_str() {
        std::fs::create_dir_all(dir.join("clearing"))?;
        // Whole or not at all: a file cut short (a full disk, a kill) would be read instead of
        // the ledger by every later run.
        crate::files::write_whole(&path, &csv, 0o600)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(parse_clearing_csv(std::str::from_utf8(&csv)?)?)
}

/// Exits 1 when any issuer's file differs from the journal (as `audit` does with a finding), so
/// a scheduled run can alert; the report is printed either way.
pub fn reconcile_cmd(
    args: ReconcileArgs,
) -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let date = settlement::dates::normalise(&args.date).ok_or("--date: not a date")?;
    let deployment = args.common.deployment()?;
    let store = deployment.store()?;
    let before = settlement::dates::add_days(&date, -1).ok_or("bad date")?;
    let after = settlement::dates::add_days(&date, 1).ok_or("bad date")?;
    let mut journal: Vec<store::TxnRow> = Vec::new();
    for day in [&before, &date, &after] {
        journal.extend(store.txns_on(day)?);
    }
    let (files, mut banks) = match &deployment {
        Deployment::Demo { dir, .. } => {
            let issuers = dir.join("issuers");
            let banks: Vec<String> = std::fs::read_dir(&issuers)
                .map_err(|e| format!("{}: {e} (not a demo's data directory?)", issuers.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".db").map(str::to_owned)
                })
                .collect();
            (ClearingFiles::Demo(dir), banks)
        }
        Deployment::Node(config) => {
            let dir = args
                .clearing_dir
                .as_deref()
                .ok_or("--config needs --clearing-dir: where the issuers' clearing files are")?;
            let banks = config.issuers.iter().map(|i| i.bank.clone()).collect();
            (ClearingFiles::Received(dir), banks)
        }
    };
    banks.sort();
    banks.dedup();
    // Nothing compared is not "reconciled".
    if banks.is_empty() {
        return Err(
            "no issuers to reconcile: the demo's issuers/ directory holds no ledger, or \
                    the configuration no [[issuer]]"
                .into(),
        );
    }
    let mut reports: Vec<ReconReport> = Vec::new();
    for bank in &banks {
        let rows = files.read(bank, &date, true)?;
        // The neighbouring days' files are read for the transactions around the cut-over,
        // never kept: each is kept by the run for its own day, once that day has closed.
        let earlier = files.read(bank, &before, false)?;
        let later = files.read(bank, &after, false)?;
        let mine: Vec<store::TxnRow> = journal
            .iter()
            .filter(|r| r.issuer.as_deref() == Some(bank.as_str()))
            .cloned()
            .collect();
        let neighbours = settlement::reconcile::Neighbours {
            earlier: &earlier,
            later: &later,
        };
        reports.push(reconcile(bank, &date, &rows, neighbours, &mine));
    }
    let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
    if args.common.json {
        print_json(&reports)?;
    } else {
        for r in &reports {
            println!(
                "{:<8} {}: issuer {} rows, journal {} rows, matched {}, differences {}",
                r.issuer,
                r.clearing_date,
                r.issuer_rows,
                r.journal_rows,
                r.matched,
                r.findings.len()
            );
            for f in &r.findings {
                println!(
                    "  {:?} RRN {} {} issuer {} here {}\n    → {}",
                    f.kind,
                    f.rrn,
                    f.txn_kind,
                    f.issuer_amount_fen.map_or("-".to_owned(), yuan),
                    f.journal_amount_fen.map_or("-".to_owned(), yuan),
                    f.action
                );
            }
        }
        if findings == 0 {
            println!("reconciled: every issuer clearing row matches the journal");
        }
    }
    Ok(if findings == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `YYYYMMDD` at `hh:mm` China time, in ms since the epoch.
    fn china_time(date: &str, hh: i64, mm: i64) -> i64 {
        let day = settlement::dates::day_number(date).unwrap();
        ((day * 24 + hh - 8) * 60 + mm) * 60_000
    }

    #[test]
    fn a_date_is_settled_only_once_its_cut_over_grace_is_over() {
        // 23:05 on the 23rd: the 24th is open, the 23rd still in its grace.
        let now = china_time("20261123", 23, 5);
        let why = not_closed("20261123", now).unwrap();
        assert!(why.contains("23:30"), "{why}");
        assert!(not_closed("20261124", now).is_some());
        assert!(not_closed("20261125", now).is_some());
        assert_eq!(not_closed("20261122", now), None);
        // 23:31: the grace is over, the 23rd is closed; the 24th still open.
        let now = china_time("20261123", 23, 31);
        assert_eq!(not_closed("20261123", now), None);
        let why = not_closed("20261124", now).unwrap();
        assert!(why.contains("20261124 has not closed"), "{why}");
        // At noon the day is open until 23:00.
        let now = china_time("20261123", 12, 0);
        assert!(not_closed("20261123", now).is_some());
        assert_eq!(not_closed("20261122", now), None);
    }

    #[test]
    fn a_run_pauses_between_parts_only_on_sqlite() {
        let demo = |database: Option<&str>| Deployment::Demo {
            dir: PathBuf::from("/nonexistent"),
            database: database.map(|url| (url.to_owned(), None)),
        };
        let pause = |d: Deployment| d.clearing_config().pause_between_parts;
        assert_eq!(pause(demo(None)), settlement::PAUSE_BETWEEN_PARTS);
        assert_eq!(
            pause(demo(Some("sqlite:/tmp/x.db"))),
            settlement::PAUSE_BETWEEN_PARTS
        );
        assert_eq!(
            pause(demo(Some("postgres://shoudan@127.0.0.1/shoudan"))),
            std::time::Duration::ZERO
        );
        assert_eq!(
            pause(demo(Some("postgresql://shoudan@127.0.0.1/shoudan"))),
            std::time::Duration::ZERO
        );
        assert_eq!(
            demo(None).clearing_config().lines_per_commit,
            settlement::LINES_PER_COMMIT
        );
    }
}
