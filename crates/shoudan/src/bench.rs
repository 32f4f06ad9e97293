//! `shoudan bench`: a load generator of signed-in terminals (real PIN blocks and MACs) against the
//! switch, the same generator against a bare loopback echo server, and the ratio of the two.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use store::Synchronous;
use terminal::{Card, Request, Terminal, TerminalError, TxnType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::CliResult;
use crate::demo::{EnvOptions, start_env};
use crate::fixtures::{self, CardFixture, TerminalFixture};
use crate::terminal_cmd::{config_of, load_stan, save_stan};

/// Latencies above this are recorded as this (an answer later than a minute is an error anyway).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Bytes of the echo payload: about the size of a purchase request with PIN and MAC.
const ECHO_PAYLOAD: usize = 160;
/// Purchases are for one fen so healthy balances last through any run.
const AMOUNT_FEN: u64 = 1;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Purchases with healthy cards from signed-in terminals, against an in-process demo
    /// environment (or a running demo with --target).
    Auth(AuthArgs),
    /// The same generator against a length-framed echo server on loopback: the ceiling.
    Echo(EchoArgs),
    /// `bench auth` then `bench echo`, and the ratio of their throughputs.
    Compare(CompareArgs),
    /// Signed-in terminal connections held idle: the memory (RSS) of the demo process that
    /// serves them (switch, issuer simulators, portal).
    Idle(IdleArgs),
    /// Every performance target at once, each measured and judged: durable throughput, the
    /// journal's cost, the switch's p99 at half that rate, the share of the echo ceiling, the
    /// memory of idle connections.
    Targets(TargetsArgs),
}

#[derive(clap::Args)]
pub struct TargetsArgs {
    /// Terminals of the closed-loop runs (and of the half-rate open loop).
    #[arg(long, default_value_t = 64)]
    pub terminals: usize,
    /// The length of each run.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Rounds of the durable and journal-off runs, interleaved so a host whose speed drifts
    /// affects both alike; each figure is the rounds' median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub rounds: u8,
    /// Idle signed-in connections for the memory target; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct IdleArgs {
    /// Connections to open, sign in and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// How long to hold them idle before measuring again.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub hold: Duration,
    /// A running demo (started with --bench-terminals) instead of a demo of our own; needs
    /// --pid, the process whose memory is measured.
    #[arg(long, requires = "pid")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, requires = "data_dir")]
    pub pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct AuthArgs {
    /// Terminals, each on its own connection; closed loop unless --rate is given.
    #[arg(long, default_value_t = 16)]
    pub terminals: usize,
    /// Open loop: requests per second in total, on a fixed schedule; latency counts from the
    /// scheduled time, so a stalled switch is not hidden by a generator that waited for it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to send, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A running demo's switch; needs --data-dir for its fixtures.
    #[arg(long, requires = "data_dir")]
    pub target: Option<SocketAddr>,
    /// The running demo's data dir (with --target).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// In-process only: `full` (durable: SQLite synchronous=FULL, an fsync per group commit),
    /// `normal` (commits without fsync), or `off` (transactions not journalled at all; sign-ins
    /// and the reversal queue still are): the journal's cost is full against off.
    #[arg(long, value_enum, default_value_t = JournalMode::Full)]
    pub journal: JournalMode,
    /// In-process only: the journal on this PostgreSQL database (`postgres://...`, a fresh
    /// schema per run) instead of SQLite; its durability is the server's setting.
    #[arg(long, conflicts_with = "target")]
    pub database: Option<String>,
    /// In-process only: where the issuer simulators keep their ledgers. `memory` (the default)
    /// as they stand for other machines, whose disks are not this one's; `disk` puts them in
    /// files beside the journal, whose flushes then wait behind their writes and checkpoints.
    /// In memory they grow with every transaction of the run.
    #[arg(long, value_enum, default_value_t = IssuerLedgers::Memory)]
    pub issuer_ledgers: IssuerLedgers,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IssuerLedgers {
    Memory,
    Disk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalMode {
    Full,
    Normal,
    Off,
}

impl JournalMode {
    /// What a run's journal was, on SQLite or (`on_postgres`) PostgreSQL.
    fn describe(self, on_postgres: bool) -> &'static str {
        match (self, on_postgres) {
            (JournalMode::Off, _) => "off (transactions not journalled)",
            (_, true) => "postgresql (the server's synchronous_commit)",
            (JournalMode::Full, false) => "sqlite synchronous=FULL (fsync per group commit)",
            (JournalMode::Normal, false) => "sqlite synchronous=NORMAL (no fsync per commit)",
        }
    }
}

#[derive(clap::Args)]
pub struct EchoArgs {
    #[arg(long, default_value_t = 16)]
    pub terminals: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    #[arg(long, default_value_t = 16)]
    pub terminals: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long)]
    pub json: bool,
}

/// `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: expected e.g. 10s, 500ms, 1m");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 86_400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// One worker's (or the merged) results.
struct Stats {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// Open loop: sends that went out more than `LATE_AFTER` past their scheduled time (the
    /// terminal's previous answer came later than its interval). Their latency counts from
    /// the schedule, but the switch saw them late: a smoother load than the schedule's.
    late: u64,
}

/// How far past its scheduled time an open-loop send counts as late: beyond the timer's own
/// slack (a sleep ends up to a few milliseconds after its time on a busy machine).
const LATE_AFTER: Duration = Duration::from_millis(5);

impl Stats {
    fn new() -> Result<Stats, hdrhistogram::CreationError> {
        Ok(Stats {
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
            ok: 0,
            errors: BTreeMap::new(),
            late: 0,
        })
    }

    fn record(&mut self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(LATENCY_MAX_US);
        self.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Stats) -> Result<(), hdrhistogram::AdditionError> {
        self.latency.add(&other.latency)?;
        self.ok += other.ok;
        self.late += other.late;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        Ok(())
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What one run measured.
struct Report {
    mode: &'static str,
    terminals: usize,
    elapsed: Duration,
    stats: Stats,
    journal: Option<&'static str>,
    /// Where the in-process issuer simulators kept their ledgers.
    issuer_ledgers: Option<&'static str>,
    /// What the switch itself added (its own measurement, time at the issuer excluded), over
    /// the run's requests; in-process runs only.
    switch_latency: Option<switch::HistogramSnapshot>,
}

impl Report {
    fn switch_quantile(&self, q: f64) -> Option<u64> {
        self.switch_latency.as_ref()?.quantile_us(q)
    }

    fn tps(&self) -> f64 {
        self.stats.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn to_json(&self) -> serde_json::Value {
        let h = &self.stats.latency;
        let empty = h.is_empty();
        let q = |q: f64| (!empty).then(|| h.value_at_quantile(q));
        json!({
            "mode": self.mode,
            "terminals": self.terminals,
            "duration_s": self.elapsed.as_secs_f64(),
            "ok": self.stats.ok,
            "tps": self.tps(),
            "p50_us": q(0.5),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": (!empty).then(|| h.max()),
            "switch_p50_us": self.switch_quantile(0.5),
            "switch_p99_us": self.switch_quantile(0.99),
            "errors": self.stats.error_count(),
            "errors_by_kind": self.stats.errors,
            "late_sends": self.stats.late,
            "journal": self.journal,
            "issuer_ledgers": self.issuer_ledgers,
        })
    }

    fn print(&self) {
        let h = &self.stats.latency;
        println!(
            "bench {}: {} terminals, {:.1}s",
            self.mode,
            self.terminals,
            self.elapsed.as_secs_f64()
        );
        if let Some(journal) = self.journal {
            println!("  journal          {journal}");
        }
        if let Some(ledgers) = self.issuer_ledgers {
            println!("  issuer ledgers   {ledgers}");
        }
        println!("  answered         {}", self.stats.ok);
        println!("  throughput       {:.0}/s", self.tps());
        if !h.is_empty() {
            println!(
                "  latency          p50 {}us  p99 {}us  p99.9 {}us  max {}us",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
        }
        match (self.switch_quantile(0.5), self.switch_quantile(0.99)) {
            (Some(p50), Some(p99)) => println!(
                "  switch-added     p50 {p50}us  p99 {p99}us  (measured in the switch, issuer time excluded)"
            ),
            _ if self.mode == "auth" => {
                println!("  switch-added     unavailable (measured in-process runs only)")
            }
            _ => {}
        }
        println!("  errors           {}", self.stats.error_count());
        for (kind, n) in &self.stats.errors {
            println!("    {kind:<14} {n}");
        }
        if self.stats.late > 0 {
            println!(
                "  late sends       {} (open loop: sent over {}ms past their time, the answer before them slow)",
                self.stats.late,
                LATE_AFTER.as_millis()
            );
        }
    }
}

/// Runs a bench command. `bench targets` exits 1 when a target it judged is not met, as a
/// failed check does; the others exit 0 once they have reported.
pub fn run(cmd: BenchCmd) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            BenchCmd::Auth(args) => {
                let json = args.json;
                output(&auth(args).await?, json);
            }
            BenchCmd::Echo(args) => {
                output(&echo(args.terminals, args.duration).await?, args.json);
            }
            BenchCmd::Compare(args) => compare(args).await?,
            BenchCmd::Idle(args) => idle(args).await?,
            BenchCmd::Targets(args) => return targets(args).await,
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn output(report: &Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        report.print();
    }
}

async fn compare(args: CompareArgs) -> CliResult {
    let auth_report = auth(AuthArgs {
        terminals: args.terminals,
        rate: None,
        duration: args.duration,
        target: None,
        data_dir: None,
        journal: JournalMode::Full,
        database: None,
        issuer_ledgers: IssuerLedgers::Memory,
        json: args.json,
    })
    .await?;
    let echo_report = echo(args.terminals, args.duration).await?;
    let (auth_tps, echo_tps) = (auth_report.tps(), echo_report.tps());
    let ratio = if echo_tps > 0.0 {
        auth_tps / echo_tps
    } else {
        0.0
    };
    if args.json {
        println!(
            "{}",
            json!({
                "auth_tps": auth_tps,
                "echo_tps": echo_tps,
                "ratio": ratio,
                "auth": auth_report.to_json(),
                "echo": echo_report.to_json(),
            })
        );
    } else {
        auth_report.print();
        echo_report.print();
        println!("ratio auth/echo  {ratio:.3}");
    }
    Ok(())
}

/// The targets of the performance work, as the project states them.
const TARGET_DURABLE_TPS: f64 = 10_000.0;
const TARGET_JOURNAL_COST: f64 = 0.10;
const TARGET_HALF_RATE_SWITCH_P99_US: u64 = 1_000;
const TARGET_ECHO_RATIO: f64 = 0.5;
const TARGET_IDLE_CONNECTIONS: usize = 10_000;
const TARGET_IDLE_RSS_BYTES: u64 = 200_000_000;

/// What `bench targets` measured: medians over its rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    durable_tps: f64,
    journal_cost: f64,
    half_rate_switch_p99_us: Option<u64>,
    echo_ratio: f64,
    /// Idle connections asked for, those signed in and alive at the end, and the demo's RSS
    /// in bytes with them.
    idle: Option<(usize, usize, u64)>,
    /// Requests that failed (a timeout, a lost connection, an answer other than 00) in the
    /// closed loops (durable, journal off), the open loop and the echo run: a target
    /// measured over runs with failures is not met, whatever the figure (a terminal that
    /// stops lowers its run's throughput, a fast refusal its latency).
    errors: RunErrors,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct RunErrors {
    durable: u64,
    off: u64,
    open: u64,
    echo: u64,
}

/// One target and how the run measured against it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    name: &'static str,
    target: String,
    measured: Option<f64>,
    /// `None` when not measured (the idle run skipped, or with too few connections to count).
    met: Option<bool>,
    /// Failed requests in the runs the figure comes from.
    errors: u64,
}

fn verdicts(m: &Measured) -> Vec<Verdict> {
    // Fewer connections asked for cannot be judged; a connection lost misses the target.
    let idle = m.idle.map(|(asked, alive, rss)| {
        (
            rss as f64,
            (asked >= TARGET_IDLE_CONNECTIONS)
                .then_some(alive >= TARGET_IDLE_CONNECTIONS && rss <= TARGET_IDLE_RSS_BYTES),
        )
    });
    let e = m.errors;
    // Met only over runs without failures.
    let clean = |met: Option<bool>, errors: u64| met.map(|met| met && errors == 0);
    vec![
        Verdict {
            name: "durable_tps",
            target: format!(">= {TARGET_DURABLE_TPS:.0} authorisations/s"),
            measured: Some(m.durable_tps),
            met: clean(Some(m.durable_tps >= TARGET_DURABLE_TPS), e.durable),
            errors: e.durable,
        },
        Verdict {
            name: "journal_cost",
            target: format!(
                "<= {:.0} % of the throughput without the journal",
                TARGET_JOURNAL_COST * 100.0
            ),
            measured: Some(m.journal_cost),
            met: clean(
                Some(m.journal_cost <= TARGET_JOURNAL_COST),
                e.durable.saturating_add(e.off),
            ),
            errors: e.durable.saturating_add(e.off),
        },
        Verdict {
            name: "half_rate_switch_p99_us",
            target: format!(
                "<= {TARGET_HALF_RATE_SWITCH_P99_US} us switch-added p99 at half the durable rate"
            ),
            measured: m.half_rate_switch_p99_us.map(|us| us as f64),
            met: clean(
                m.half_rate_switch_p99_us
                    .map(|us| us <= TARGET_HALF_RATE_SWITCH_P99_US),
                e.open,
            ),
            errors: e.open,
        },
        Verdict {
            name: "echo_ratio",
            target: format!(">= {TARGET_ECHO_RATIO} of the echo ceiling"),
            measured: Some(m.echo_ratio),
            met: clean(
                Some(m.echo_ratio >= TARGET_ECHO_RATIO),
                e.durable.saturating_add(e.echo),
            ),
            errors: e.durable.saturating_add(e.echo),
        },
        Verdict {
            name: "idle_rss_bytes",
            target: format!(
                "<= {} MB for {TARGET_IDLE_CONNECTIONS} idle signed-in connections",
                TARGET_IDLE_RSS_BYTES / 1_000_000
            ),
            measured: idle.map(|(rss, _)| rss),
            met: idle.and_then(|(_, met)| met),
            errors: 0,
        },
    ]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values.get(n / 2).copied().unwrap_or(0.0),
        n => {
            let upper = values.get(n / 2).copied().unwrap_or(0.0);
            let lower = values.get(n / 2 - 1).copied().unwrap_or(0.0);
            (upper + lower) / 2.0
        }
    }
}

/// Every target, measured the way docs/performance.md does by hand: interleaved durable and
/// journal-off closed loops, then an open loop at half the durable median, an echo run, and
/// (in a demo child process) the idle connections.
async fn targets(args: TargetsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let closed = |journal| AuthArgs {
        terminals: args.terminals,
        rate: None,
        duration: args.duration,
        target: None,
        data_dir: None,
        journal,
        database: None,
        issuer_ledgers: IssuerLedgers::Memory,
        json: args.json,
    };
    let mut runs = Vec::new();
    let (mut durable, mut off, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors = RunErrors::default();
    for round in 1..=args.rounds {
        if !args.json {
            eprintln!("round {round}/{}: durable journal, then none", args.rounds);
        }
        let full = auth(closed(JournalMode::Full)).await?;
        let none = auth(closed(JournalMode::Off)).await?;
        errors.durable += full.stats.error_count();
        errors.off += none.stats.error_count();
        durable.push(full.tps());
        off.push(none.tps());
        shares.push(if none.tps() > 0.0 {
            full.tps() / none.tps()
        } else {
            0.0
        });
        runs.push(
            json!({"round": round, "durable": full.to_json(), "journal_off": none.to_json()}),
        );
    }
    let durable_tps = median(&mut durable);
    let journal_cost = 1.0 - median(&mut shares);
    let half_rate = (durable_tps / 2.0).max(1.0);
    if !args.json {
        eprintln!("open loop at {half_rate:.0}/s, then the echo ceiling");
    }
    let open = auth(AuthArgs {
        rate: Some(half_rate),
        ..closed(JournalMode::Full)
    })
    .await?;
    let echo_report = echo(args.terminals, args.duration).await?;
    errors.open = open.stats.error_count();
    errors.echo = echo_report.stats.error_count();
    let echo_ratio = if echo_report.tps() > 0.0 {
        durable_tps / echo_report.tps()
    } else {
        0.0
    };
    let idle_report = if args.idle_connections > 0 {
        if !args.json {
            eprintln!("{} idle connections", args.idle_connections);
        }
        Some(
            idle_measure(IdleArgs {
                connections: args.idle_connections,
                hold: Duration::from_secs(2),
                data_dir: None,
                pid: None,
                json: args.json,
            })
            .await?,
        )
    } else {
        None
    };
    let measured = Measured {
        durable_tps,
        journal_cost,
        half_rate_switch_p99_us: open.switch_quantile(0.99),
        echo_ratio,
        idle: idle_report
            .as_ref()
            .map(|r| (r.connections, r.alive, r.rss_after_kib.saturating_mul(1024))),
        errors,
    };
    let verdicts = verdicts(&measured);
    if args.json {
        let targets: Vec<serde_json::Value> = verdicts
            .iter()
            .map(|v| json!({"name": v.name, "target": v.target, "measured": v.measured, "met": v.met, "errors": v.errors}))
            .collect();
        println!(
            "{}",
            json!({
                "targets": targets,
                "durable_tps": durable_tps,
                "journal_off_tps": median(&mut off),
                "half_rate": half_rate,
                "echo_tps": echo_report.tps(),
                "runs": runs,
                "half_rate_run": open.to_json(),
                "echo": echo_report.to_json(),
                "idle": idle_report.as_ref().map(IdleReport::to_json),
            })
        );
    } else {
        println!(
            "bench targets: {} terminals, {} rounds of {:.1}s",
            args.terminals,
            args.rounds,
            args.duration.as_secs_f64()
        );
        println!(
            "  durable {durable_tps:.0}/s, journal off {:.0}/s (medians); echo {:.0}/s",
            median(&mut off),
            echo_report.tps()
        );
        if open.stats.late > 0 {
            println!(
                "  half-rate run: {} sends went out over {}ms late (the switch saw a smoother load)",
                open.stats.late,
                LATE_AFTER.as_millis()
            );
        }
        for v in &verdicts {
            let measured = v.measured.map_or("not measured".to_owned(), |m| {
                if m.abs() < 10.0 {
                    format!("{m:.3}")
                } else {
                    format!("{m:.0}")
                }
            });
            let met = match (v.met, v.errors) {
                (Some(true), _) => "met".to_owned(),
                (Some(false), 0) => "NOT MET".to_owned(),
                (Some(false), n) => format!("NOT MET ({n} failed requests)"),
                (None, _) => "not judged".to_owned(),
            };
            println!(
                "  {:<24} {:<14} {:<9} target {}",
                v.name, measured, met, v.target
            );
        }
    }
    Ok(if verdicts.iter().any(|v| v.met == Some(false)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn auth(args: AuthArgs) -> Result<Report, Box<dyn std::error::Error>> {
    if args.terminals == 0 {
        return Err("--terminals must be at least 1".into());
    }
    // At least one request a minute per run: below that an interval overflows a Duration.
    if args
        .rate
        .is_some_and(|r| !(r.is_finite() && r >= 1.0 / 60.0))
    {
        return Err(
            "--rate must be a positive number of requests per second (at least 1/60)".into(),
        );
    }
    match (&args.target, &args.data_dir) {
        (Some(target), Some(dir)) => {
            let fixtures = fixtures::load(dir)?;
            // Two connections with one TID would fight over trace numbers; the traffic
            // terminals may be in use by the demo's own background traffic.
            let terminals: Vec<TerminalFixture> = fixtures
                .terminals
                .iter()
                .filter(|t| !t.traffic)
                .take(args.terminals)
                .map(|t| TerminalFixture {
                    host: target.ip().to_string(),
                    port: target.port(),
                    ..t.clone()
                })
                .collect();
            if terminals.len() < args.terminals {
                eprintln!(
                    "note: the running demo has {} free terminals; using those",
                    terminals.len()
                );
            }
            let stans = terminals
                .iter()
                .map(|t| load_stan(dir, &t.tid))
                .collect::<Result<Vec<_>, _>>()?;
            let (report, next) =
                drive(&args, terminals.clone(), stans, &fixtures.cards, None).await?;
            for (t, stan) in terminals.iter().zip(next) {
                save_stan(dir, &t.tid, stan)?;
            }
            Ok(Report {
                journal: None,
                ..report
            })
        }
        (Some(_), None) => Err("--target needs --data-dir".into()),
        (None, _) => {
            let dir = crate::files::private_temp_dir()?;
            let env = start_env(
                dir.path(),
                &EnvOptions {
                    listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
                    synchronous: if args.journal == JournalMode::Full {
                        Synchronous::Full
                    } else {
                        Synchronous::Normal
                    },
                    journal: args.journal != JournalMode::Off,
                    durable_issuers: false,
                    issuer_ledgers_in_memory: args.issuer_ledgers == IssuerLedgers::Memory,
                    issuer_latency: Duration::ZERO,
                    // A fresh schema per run: runs never see each other's rows.
                    postgres: args.database.as_ref().map(|url| store::PgConfig {
                        url: url.clone(),
                        schema: Some(fresh_schema()),
                    }),
                    extra_terminals: args.terminals,
                },
            )
            .await?;
            let stans = vec![1; env.extra_terminals.len()];
            let result = drive(
                &args,
                env.extra_terminals.clone(),
                stans,
                &env.fixtures.cards,
                Some(&env.switch),
            )
            .await;
            env.stop().await?;
            let (report, _) = result?;
            Ok(Report {
                journal: Some(args.journal.describe(args.database.is_some())),
                issuer_ledgers: Some(match args.issuer_ledgers {
                    IssuerLedgers::Memory => "memory (standing for other machines' disks)",
                    IssuerLedgers::Disk => "files beside the journal",
                }),
                ..report
            })
        }
    }
}

/// Runs the terminals; returns the report and each terminal's next STAN.
async fn drive(
    args: &AuthArgs,
    terminals: Vec<TerminalFixture>,
    stans: Vec<u32>,
    cards: &[CardFixture],
    switch: Option<&switch::SwitchHandle>,
) -> Result<(Report, Vec<u32>), Box<dyn std::error::Error>> {
    let healthy: Vec<Card> = cards
        .iter()
        .filter(|c| c.label == "healthy" && c.purchase_code == "00")
        .map(|c| {
            Ok(Card {
                pan: c.pan.parse()?,
                expiry: Some(c.expiry.clone()),
                pin: Some(zeroize::Zeroizing::new(c.pin.clone())),
            })
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    if healthy.is_empty() {
        return Err("no healthy cards in the fixtures".into());
    }
    let count = terminals.len().max(1);
    // Open loop: each terminal sends every `count / rate` seconds, staggered.
    let interval = args.rate.map(|r| Duration::from_secs_f64(count as f64 / r));
    // Sign everyone in before the clock starts, so the run measures purchases only.
    let mut sessions = Vec::new();
    for (fixture, stan) in terminals.iter().zip(stans) {
        let mut t = Terminal::connect(config_of(fixture, stan)?).await?;
        t.sign_in().await?;
        sessions.push(t);
    }
    // The switch's own latencies of the purchases only, not of the sign-ins.
    let before = switch.map(|s| s.metrics().switch_latency);
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for (i, t) in sessions.into_iter().enumerate() {
        let cards = healthy.clone();
        let offset = interval.map(|iv| iv.mul_f64(i as f64 / count as f64));
        tasks.push(tokio::spawn(worker(
            t, cards, i, start, deadline, interval, offset,
        )));
    }
    let mut total = Stats::new()?;
    let mut next_stans = Vec::new();
    for task in tasks {
        let (stats, next) = task.await??;
        total.merge(stats)?;
        next_stans.push(next);
    }
    Ok((
        Report {
            mode: "auth",
            terminals: count,
            // An open loop whose last sends were scheduled early still ran for its duration.
            elapsed: start.elapsed().max(args.duration),
            stats: total,
            journal: None,
            issuer_ledgers: None,
            switch_latency: switch
                .zip(before)
                .map(|(s, before)| s.metrics().switch_latency.since(&before)),
        },
        next_stans,
    ))
}

type WorkerResult = Result<(Stats, u32), hdrhistogram::CreationError>;

/// Of an open-loop terminal's sends, every `interval` over `span` from its first, those not
/// among the `sent` made.
fn unsent(span: Duration, interval: Duration, sent: u32) -> u64 {
    let scheduled = span.as_nanos().div_ceil(interval.as_nanos().max(1));
    u64::try_from(scheduled.saturating_sub(u128::from(sent))).unwrap_or(u64::MAX)
}

async fn worker(
    mut t: Terminal,
    cards: Vec<Card>,
    index: usize,
    start: Instant,
    deadline: Instant,
    interval: Option<Duration>,
    offset: Option<Duration>,
) -> WorkerResult {
    let mut stats = Stats::new()?;
    let mut sent: u32 = 0;
    loop {
        let scheduled = match (interval, offset) {
            (Some(iv), Some(off)) => {
                let at = start + off + iv * sent;
                // A send scheduled past the end is not waited for: the run would outlast its
                // duration by up to one interval (terminals / rate).
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                if Instant::now().saturating_duration_since(at) > LATE_AFTER {
                    stats.late += 1;
                }
                at
            }
            _ => Instant::now(),
        };
        if scheduled >= deadline {
            break;
        }
        let card_index = (index + usize::try_from(sent).unwrap_or(0)) % cards.len().max(1);
        let Some(card) = cards.get(card_index) else {
            break;
        };
        let request = Request {
            txn: TxnType::Purchase,
            card: card.clone(),
            amount: AMOUNT_FEN,
            original: None,
        };
        sent = sent.saturating_add(1);
        match t.transact(&request).await {
            Ok(response) if response.approved() => {
                stats.record(scheduled);
                stats.ok += 1;
            }
            Ok(response) => {
                stats.record(scheduled);
                stats.error(format!("code {}", response.code));
            }
            Err(error) => {
                let kind = match error {
                    TerminalError::Timeout(_) => "timeout",
                    TerminalError::ResponseMac | TerminalError::Mac(_) => "mac",
                    _ => "connection",
                };
                // A request that timed out waited at least the timeout: its latency counts, or
                // a stall would leave the percentiles to the requests before it.
                if kind == "timeout" {
                    stats.record(scheduled);
                }
                stats.error(kind.to_owned());
                // The connection's state is unknown after a failure: stop this terminal
                // rather than count a storm of follow-on errors. Open loop, the sends its
                // schedule still held are counted as errors, not left out of the run.
                if let (Some(iv), Some(off)) = (interval, offset) {
                    let unsent = unsent(deadline.saturating_duration_since(start + off), iv, sent);
                    if unsent > 0 {
                        *stats
                            .errors
                            .entry("not sent: its terminal stopped".to_owned())
                            .or_default() += unsent;
                    }
                }
                break;
            }
        }
    }
    Ok((stats, t.next_stan()))
}

/// Sign-ins (and later echo tests) under way at once.
const IDLE_CONCURRENCY: usize = 64;
/// How long an own demo may take to start and provision its terminals.
const IDLE_START_TIMEOUT: Duration = Duration::from_secs(120);

/// The switch runs in a process of its own (a `shoudan demo` child unless one is given), so
/// that its memory is measured apart from the generator's, and each side's descriptors stay
/// under the per-process limit.
async fn idle(args: IdleArgs) -> CliResult {
    let json = args.json;
    let hold = args.hold;
    let report = idle_measure(args).await?;
    if json {
        println!("{}", report.to_json());
    } else {
        report.print(hold);
    }
    Ok(())
}

/// What `bench idle` measured.
struct IdleReport {
    connections: usize,
    alive: usize,
    sign_in_s: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    errors: BTreeMap<String, u64>,
}

impl IdleReport {
    fn per_connection_kib(&self) -> f64 {
        if self.alive > 0 {
            (self.rss_after_kib.saturating_sub(self.rss_before_kib)) as f64 / self.alive as f64
        } else {
            0.0
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "mode": "idle",
            "connections": self.connections,
            "signed_in_alive": self.alive,
            "sign_in_s": self.sign_in_s,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "rss_after_mib": self.rss_after_kib as f64 / 1024.0,
            "kib_per_connection": self.per_connection_kib(),
            "errors": self.errors.values().sum::<u64>(),
            "errors_by_kind": self.errors,
        })
    }

    fn print(&self, hold: Duration) {
        println!("bench idle: {} connections", self.connections);
        println!("  signed in, alive after {hold:?} idle   {}", self.alive);
        println!("  sign-ins took    {:.1}s", self.sign_in_s);
        println!(
            "  demo RSS         {:.1} MiB before, {:.1} MiB with the connections ({:.1} KiB each)",
            self.rss_before_kib as f64 / 1024.0,
            self.rss_after_kib as f64 / 1024.0,
            self.per_connection_kib()
        );
        println!("  errors           {}", self.errors.values().sum::<u64>());
        for (kind, n) in &self.errors {
            println!("    {kind:<14} {n}");
        }
    }
}

async fn idle_measure(args: IdleArgs) -> Result<IdleReport, Box<dyn std::error::Error>> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let own_dir;
    let mut child = None;
    let (dir, pid) = match (&args.data_dir, args.pid) {
        (Some(dir), Some(pid)) => (dir.clone(), pid),
        _ => {
            own_dir = crate::files::private_temp_dir()?;
            let demo = IdleDemo::start(own_dir.path(), args.connections).await?;
            let pid = demo.pid();
            child = Some(demo);
            (own_dir.path().to_path_buf(), pid)
        }
    };
    let fixtures = fixtures::load(&dir)?;
    let terminals: Vec<TerminalFixture> = fixtures
        .terminals
        .iter()
        .filter(|t| !t.traffic)
        .take(args.connections)
        .cloned()
        .collect();
    if terminals.len() < args.connections {
        return Err(format!(
            "the demo has {} free terminals for {} connections: start it with --bench-terminals",
            terminals.len(),
            args.connections
        )
        .into());
    }
    let configs = terminals
        .iter()
        .map(|fixture| config_of(fixture, load_stan(&dir, &fixture.tid)?))
        .collect::<Result<Vec<_>, _>>()?;
    let rss_before = rss_kib(pid)?;
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(configs.len());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let signed_in = bounded(configs, |config| async move {
        let mut t = Terminal::connect(config).await?;
        let response = t.sign_in().await?;
        Ok::<_, TerminalError>((t, response.code))
    })
    .await?;
    for result in signed_in {
        match result {
            Ok((t, code)) if code == "00" => sessions.push(t),
            Ok((_, code)) => *errors.entry(format!("sign-in {code}")).or_default() += 1,
            Err(error) => *errors.entry(error.to_string()).or_default() += 1,
        }
    }
    let sign_in_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(args.hold).await;
    let rss_after = rss_kib(pid)?;
    // Still there and still signed in: every connection answers an echo test.
    let checked = bounded(sessions, |mut t| async move {
        let ok = matches!(t.echo().await, Ok(r) if r.code == "00");
        (t, ok)
    })
    .await?;
    let alive = checked.iter().filter(|(_, ok)| *ok).count();
    if alive < checked.len() {
        errors.insert("echo after idle".to_owned(), (checked.len() - alive) as u64);
    }
    for (t, _) in &checked {
        save_stan(&dir, t.tid(), t.next_stan())?;
    }
    // Hung up before the demo is stopped.
    drop(checked);
    if let Some(demo) = child {
        demo.stop().await?;
    }
    Ok(IdleReport {
        connections: args.connections,
        alive,
        sign_in_s,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        errors,
    })
}

/// Runs `task` on every item, at most `IDLE_CONCURRENCY` at once; the results in the order
/// they finish.
async fn bounded<T, R, F, Fut>(items: Vec<T>, task: F) -> Result<Vec<R>, tokio::task::JoinError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut results = Vec::with_capacity(items.len());
    let mut running = tokio::task::JoinSet::new();
    let mut queue = items.into_iter();
    loop {
        while running.len() < IDLE_CONCURRENCY {
            let Some(item) = queue.next() else { break };
            running.spawn(task(item));
        }
        let Some(joined) = running.join_next().await else {
            return Ok(results);
        };
        results.push(joined?);
    }
}

/// Resident memory of a process, KiB (Linux `/proc`).
fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read the memory of process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}").into())
}

/// A `shoudan demo` child on a temporary data dir, with load-test terminals.
struct IdleDemo {
    child: tokio::process::Child,
}

impl IdleDemo {
    async fn start(
        dir: &std::path::Path,
        terminals: usize,
    ) -> Result<IdleDemo, Box<dyn std::error::Error>> {
        let exe = std::env::current_exe()?;
        let child = tokio::process::Command::new(exe)
            .args(["demo", "--terminal-port", "0", "--http-port", "0"])
            .arg("--bench-terminals")
            .arg(terminals.to_string())
            .arg("--data-dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut demo = IdleDemo { child };
        let deadline = Instant::now() + IDLE_START_TIMEOUT;
        while !fixtures::path(dir).exists() {
            if let Some(status) = demo.child.try_wait()? {
                return Err(format!("the demo exited at start: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("the demo did not start in time".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(demo)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Ctrl-C, as a user would stop it; killed if it does not stop in time.
    async fn stop(mut self) -> CliResult {
        let pid = self.pid().to_string();
        let _ = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// The generator against a bare echo server: each connection sends a length-framed payload of
/// a purchase's size and waits for it back.
async fn echo(terminals: usize, duration: Duration) -> Result<Report, Box<dyn std::error::Error>> {
    if terminals == 0 {
        return Err("--terminals must be at least 1".into());
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_connection(stream));
        }
    });
    let mut streams = Vec::new();
    for _ in 0..terminals {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for stream in streams {
        tasks.push(tokio::spawn(echo_client(stream, deadline)));
    }
    let mut total = Stats::new()?;
    for task in tasks {
        total.merge(task.await??)?;
    }
    let elapsed = start.elapsed();
    server.abort();
    Ok(Report {
        mode: "echo",
        terminals,
        elapsed,
        stats: total,
        journal: None,
        issuer_ledgers: None,
        switch_latency: None,
    })
}

async fn echo_connection(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    // The answer is the request as it came, prefix included: one read of each part, one write.
    let mut buf = vec![0u8; usize::from(u16::MAX) + 2];
    loop {
        let Some(prefix) = buf.get_mut(..2) else {
            return;
        };
        if stream.read_exact(prefix).await.is_err() {
            return;
        }
        let n = usize::from(u16::from_be_bytes([
            buf.first().copied().unwrap_or(0),
            buf.get(1).copied().unwrap_or(0),
        ]));
        let Some(body) = buf.get_mut(2..n + 2) else {
            return;
        };
        if stream.read_exact(body).await.is_err() {
            return;
        }
        let Some(frame) = buf.get(..n + 2) else {
            return;
        };
        if stream.write_all(frame).await.is_err() {
            return;
        }
    }
}

async fn echo_client(
    mut stream: tokio::net::TcpStream,
    deadline: Instant,
) -> Result<Stats, hdrhistogram::CreationError> {
    let mut stats = Stats::new()?;
    let len = u16::try_from(ECHO_PAYLOAD).unwrap_or(u16::MAX);
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend((0..ECHO_PAYLOAD).map(|i| (i % 251) as u8));
    let mut answer = vec![0u8; frame.len()];
    while Instant::now() < deadline {
        let sent = Instant::now();
        let round_trip = async {
            stream.write_all(&frame).await?;
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(())
        };
        match round_trip.await {
            Ok(()) if answer == frame => {
                stats.record(sent);
                stats.ok += 1;
            }
            Ok(()) => {
                stats.error("mismatch".to_owned());
                break;
            }
            Err(_) => {
                stats.error("connection".to_owned());
                break;
            }
        }
    }
    Ok(stats)
}

/// A PostgreSQL schema no other run uses.
fn fresh_schema() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench_{}_{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_stopped_terminals_schedule_is_counted_unsent() {
        let ms = Duration::from_millis;
        // Every 100 ms over a second: sends at 0, 100, ..., 900 ms.
        assert_eq!(unsent(ms(1_000), ms(100), 0), 10);
        assert_eq!(unsent(ms(1_000), ms(100), 4), 6);
        assert_eq!(unsent(ms(1_000), ms(100), 10), 0);
        // A send at 1,000 ms is at the end of a 1,000 ms run, not in it; in a 1,050 ms one
        // it is.
        assert_eq!(unsent(ms(1_050), ms(100), 10), 1);
        assert_eq!(unsent(ms(1_000), ms(100), 12), 0);
        assert_eq!(unsent(Duration::ZERO, ms(100), 0), 0);
    }

    fn measured() -> Measured {
        Measured {
            durable_tps: 10_000.0,
            journal_cost: 0.10,
            half_rate_switch_p99_us: Some(1_000),
            echo_ratio: 0.5,
            idle: Some((10_000, 10_000, 200_000_000)),
            errors: RunErrors::default(),
        }
    }

    fn met(m: &Measured) -> Vec<Option<bool>> {
        verdicts(m).iter().map(|v| v.met).collect()
    }

    #[test]
    fn targets_are_met_at_their_bounds_and_missed_past_them() {
        assert_eq!(met(&measured()), vec![Some(true); 5]);
        let missed = Measured {
            durable_tps: 9_999.0,
            journal_cost: 0.11,
            half_rate_switch_p99_us: Some(1_001),
            echo_ratio: 0.49,
            idle: Some((10_000, 10_000, 200_000_001)),
            errors: RunErrors::default(),
        };
        assert_eq!(met(&missed), vec![Some(false); 5]);
        let lost = Measured {
            idle: Some((10_000, 9_999, 1)),
            ..measured()
        };
        assert_eq!(met(&lost).pop().unwrap(), Some(false));
        // Not measured, or too few connections to judge: neither met nor missed.
        let partial = Measured {
            half_rate_switch_p99_us: None,
            idle: Some((500, 500, 1)),
            ..measured()
        };
        assert_eq!(
            met(&partial),
            vec![Some(true), Some(true), None, Some(true), None]
        );
        let skipped = Measured {
            idle: None,
            ..measured()
        };
        let last = verdicts(&skipped).pop().unwrap();
        assert_eq!((last.measured, last.met), (None, None));
        // Failed requests in a target's runs miss it, whatever its figure.
        let failed = |errors| Measured {
            errors,
            ..measured()
        };
        // The durable runs count for the durable rate, the journal's cost and the echo ratio;
        // the journal-off runs for the journal's cost only; the open loop for the half-rate
        // p99; the echo run for the echo ratio.
        let (yes, no) = (Some(true), Some(false));
        for (errors, expected) in [
            (
                RunErrors {
                    durable: 1,
                    ..RunErrors::default()
                },
                [no, no, yes, no, yes],
            ),
            (
                RunErrors {
                    off: 1,
                    ..RunErrors::default()
                },
                [yes, no, yes, yes, yes],
            ),
            (
                RunErrors {
                    open: 1,
                    ..RunErrors::default()
                },
                [yes, yes, no, yes, yes],
            ),
            (
                RunErrors {
                    echo: 2,
                    ..RunErrors::default()
                },
                [yes, yes, yes, no, yes],
            ),
        ] {
            assert_eq!(met(&failed(errors)), expected, "{errors:?}");
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn stats_merge_counts_and_errors() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        a.ok = 2;
        a.latency.record(100).unwrap();
        b.ok = 3;
        b.latency.record(300).unwrap();
        b.error("code 51".to_owned());
        b.error("code 51".to_owned());
        a.late = 1;
        b.late = 4;
        a.merge(b).unwrap();
        assert_eq!(a.ok, 5);
        assert_eq!(a.late, 5);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.error_count(), 2);
        assert_eq!(a.errors.get("code 51"), Some(&2));
    }
}
