//! `shoudan terminal`: one demo terminal signs in and runs one transaction, as a cashier would;
//! prints the response code, the terminal's display text and the diagnosis (masked PAN only).
//! Also the per-terminal STAN file, so successive runs never reuse a trace number.

use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::Pan;
use paycrypto::{Key, KeyScheme, MacAlgorithm};
use serde_json::json;
use terminal::{Card, Original, Request, SavedRequest, Terminal, TerminalConfig, TxnType};

use crate::CliResult;
use crate::fixtures::{self, TerminalFixture};

/// Where a terminal's next STAN is kept between runs.
fn stan_path(data_dir: &Path, tid: &str) -> PathBuf {
    data_dir.join("terminals").join(format!("{tid}.stan"))
}

/// The terminal's next STAN: 1 for a terminal that never ran. A file that cannot be read or
/// holds no trace number is an error, not a new start at 1: a trace repeated within the batch
/// would be taken by the host for the earlier request, and answered with its answer.
pub fn load_stan(data_dir: &Path, tid: &str) -> Result<u32, String> {
    let path = stan_path(data_dir, tid);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(1),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=999_999).contains(n))
        .ok_or_else(|| {
            format!(
                "{}: not a trace number (1 to 999999); write the terminal's next trace number \
                 into it (restarting at 1 would repeat traces of the open batch)",
                path.display()
            )
        })
}

/// The most trace numbers one run sends: a sign-in, then its transaction.
const STANS_PER_RUN: u32 = 2;

/// The trace number `n` after `stan`, counting past 999999 from 1 again as a terminal does.
fn stan_after(stan: u32, n: u32) -> u32 {
    (stan.clamp(1, terminal::STAN_MAX) - 1 + n) % terminal::STAN_MAX + 1
}

/// Writes the next STAN whole or not at all, so a crash mid-write leaves the previous number
/// rather than an empty file.
pub fn save_stan(data_dir: &Path, tid: &str, next: u32) -> std::io::Result<()> {
    let path = stan_path(data_dir, tid);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::files::write_whole(&path, next.to_string().as_bytes(), 0o600)
}

/// A terminal's configuration from its fixture.
pub fn config_of(
    fixture: &TerminalFixture,
    next_stan: u32,
) -> Result<TerminalConfig, Box<dyn std::error::Error>> {
    let scheme: KeyScheme = fixture.key_scheme.parse()?;
    Ok(TerminalConfig {
        // An IPv6 host (`::1`) cannot be written before `:port` unbracketed.
        addr: std::net::SocketAddr::new(fixture.host.parse()?, fixture.port),
        tid: fixture.tid.clone(),
        mid: fixture.mid.clone(),
        tmk: Key::from_hex(scheme.tmk_algorithm(), &fixture.tmk)?,
        scheme,
        mac: fixture.mac.parse::<MacAlgorithm>()?,
        batch: 1,
        next_stan,
        timeout: Duration::from_secs(15),
    })
}

/// Parses `12.34` / `12` yuan into fen.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    let bad = || format!("bad amount {text:?}: expected yuan like 1.00");
    let (yuan, fen) = text.split_once('.').unwrap_or((text, "0"));
    if yuan.is_empty() || fen.is_empty() || fen.len() > 2 {
        return Err(bad());
    }
    let yuan: u64 = yuan.parse().map_err(|_| bad())?;
    let fen_value: u64 = fen.parse().map_err(|_| bad())?;
    let fen_value = if fen.len() == 1 {
        fen_value * 10
    } else {
        fen_value
    };
    yuan.checked_mul(100)
        .and_then(|f| f.checked_add(fen_value))
        .ok_or_else(bad)
}

#[derive(clap::Args)]
pub struct TerminalArgs {
    #[arg(long, default_value = "./shoudan-data")]
    pub data_dir: PathBuf,
    /// Terminal ID from `shoudan fixtures`.
    #[arg(long)]
    pub tid: String,
    /// balance, purchase, void, refund, preauth, preauth-void, completion, completion-void,
    /// reversal (of --orig-stan with --orig-txn), echo, sign-in.
    pub txn: String,
    /// Amount in yuan.
    #[arg(long, default_value = "1.00")]
    pub amount: String,
    /// Card number (demo card); default: the first healthy card in the fixtures.
    #[arg(long)]
    pub card: Option<String>,
    /// PIN keyed in; default: the card's PIN from the fixtures. `none` sends no PIN.
    #[arg(long)]
    pub pin: Option<String>,
    #[arg(long)]
    pub orig_rrn: Option<String>,
    #[arg(long)]
    pub orig_stan: Option<u32>,
    #[arg(long)]
    pub orig_batch: Option<u32>,
    /// Original date MMDD (refunds; a completion by authorisation code).
    #[arg(long)]
    pub orig_date: Option<String>,
    /// The original's authorisation code; a completion with it and no --orig-rrn names its
    /// pre-authorisation by code (and --orig-date) alone.
    #[arg(long)]
    pub orig_auth: Option<String>,
    /// What a `reversal` reverses (default purchase).
    #[arg(long, default_value = "purchase")]
    pub orig_txn: String,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TerminalArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: TerminalArgs) -> CliResult {
    let fixtures = fixtures::load(&args.data_dir)?;
    let fixture = fixtures
        .terminals
        .iter()
        .find(|t| t.tid == args.tid)
        .ok_or_else(|| format!("no terminal {} in the fixtures", args.tid))?;
    let card_fixture = match &args.card {
        Some(pan) => fixtures.cards.iter().find(|c| &c.pan == pan),
        None => fixtures
            .cards
            .iter()
            .find(|c| c.label == "healthy" && c.purchase_code == "00"),
    };
    let pan_text = args
        .card
        .clone()
        .or_else(|| card_fixture.map(|c| c.pan.clone()))
        .ok_or("no card given and no healthy card in the fixtures")?;
    let pan: Pan = pan_text.parse()?;
    let pin = match args.pin.as_deref() {
        Some("none") => None,
        Some(p) => Some(p.to_owned()),
        None => card_fixture.map(|c| c.pin.clone()),
    };
    let card = Card {
        pan: pan.clone(),
        expiry: card_fixture.map(|c| c.expiry.clone()),
        pin: pin.map(zeroize::Zeroizing::new),
    };
    let amount = parse_amount(&args.amount)?;

    let next = load_stan(&args.data_dir, &args.tid)?;
    let config = config_of(fixture, next)?;
    // The trace numbers this run may send are kept as used before anything is sent, as a
    // terminal's own counter is: a run stopped while it waits for an answer (Ctrl-C) must not
    // leave the next run to send another request under a trace the host already has (a retry
    // to it: 94, or the earlier answer). Those it does not send are skipped.
    save_stan(&args.data_dir, &args.tid, stan_after(next, STANS_PER_RUN))?;
    let mut terminal = Terminal::connect(config).await?;
    let result = drive(&mut terminal, &args, card, amount).await;
    save_stan(&args.data_dir, &args.tid, terminal.next_stan())?;
    let (txn_name, response, stan) = result?;
    let diagnosis = domain::diagnose_str(&response.code);
    if args.json {
        let out = json!({
            "tid": args.tid,
            "txn": txn_name,
            "pan": pan.masked().as_str(),
            "amount_fen": amount,
            "stan": stan,
            "batch": terminal.batch(),
            "code": response.code,
            "approved": response.approved(),
            "rrn": response.rrn,
            "auth_code": response.auth_code,
            "balance_fen": response.balance,
            "host_date": response.host_date,
            "mac_verified": response.mac_verified,
            "display": {"zh": diagnosis.title.zh, "en": diagnosis.title.en},
            "meaning": {"zh": diagnosis.meaning.zh, "en": diagnosis.meaning.en},
            "customer_message": {"zh": diagnosis.customer_message.zh, "en": diagnosis.customer_message.en},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} {} card {} stan {:06} batch {:06}",
            args.tid,
            txn_name,
            pan.masked().as_str(),
            stan,
            terminal.batch()
        );
        println!("response code: {}", response.code);
        println!("display: {} / {}", diagnosis.title.zh, diagnosis.title.en);
        println!("meaning: {}", diagnosis.meaning.en);
        println!("tell the customer: {}", diagnosis.customer_message.en);
        if let Some(rrn) = &response.rrn {
            println!("rrn: {rrn}");
        }
        if let Some(auth) = &response.auth_code {
            println!("auth code: {auth}");
        }
        if let Some(balance) = response.balance {
            // -0.50 is negative though its yuan are 0.
            let sign = if balance < 0 { "-" } else { "" };
            println!(
                "balance: {sign}{}.{:02}",
                (balance / 100).abs(),
                (balance % 100).abs()
            );
        }
    }
    Ok(())
}

async fn drive(
    terminal: &mut Terminal,
    args: &TerminalArgs,
    card: Card,
    amount: u64,
) -> Result<(String, terminal::Response, u32), Box<dyn std::error::Error>> {
    // The arguments first: a mistyped one must not cost a sign-in (new working keys) and a
    // trace number.
    let reversed = match args.txn.as_str() {
        "reversal" => Some((
            TxnType::parse(&args.orig_txn).ok_or("unknown --orig-txn")?,
            args.orig_stan.ok_or("a reversal needs --orig-stan")?,
        )),
        "sign-in" | "echo" => None,
        other => {
            TxnType::parse(other).ok_or_else(|| format!("unknown transaction {other}"))?;
            None
        }
    };
    let response = terminal.sign_in().await?;
    if args.txn == "sign-in" {
        return Ok((args.txn.clone(), response, terminal.next_stan() - 1));
    }
    if args.txn == "echo" {
        let stan = terminal.next_stan();
        return Ok((args.txn.clone(), terminal.echo().await?, stan));
    }
    if let Some((txn, stan)) = reversed {
        let saved = SavedRequest {
            txn,
            pan: card.pan,
            expiry: card.expiry,
            amount,
            stan,
            batch: args.orig_batch.unwrap_or(terminal.batch()),
            field61: None,
            entry_mode: if card.pin.is_some() { "011" } else { "012" },
            auth_code: None,
        };
        return Ok((
            args.txn.clone(),
            terminal.reverse(&saved, "96").await?,
            stan,
        ));
    }
    let txn =
        TxnType::parse(&args.txn).ok_or_else(|| format!("unknown transaction {}", args.txn))?;
    let original = match (&args.orig_rrn, &args.orig_auth) {
        (Some(rrn), _) => Some(Original {
            rrn: rrn.clone(),
            batch: args.orig_batch.unwrap_or(terminal.batch()),
            stan: args.orig_stan.unwrap_or(0),
            date: args.orig_date.clone(),
            auth_code: args.orig_auth.clone(),
        }),
        // A completion naming its pre-authorisation by authorisation code (and date) alone,
        // as for one taken on another terminal: no RRN, batch or trace.
        (None, Some(auth)) if txn == TxnType::Completion => Some(Original {
            rrn: String::new(),
            batch: 0,
            stan: 0,
            date: args.orig_date.clone(),
            auth_code: Some(auth.clone()),
        }),
        (None, _) => None,
    };
    let amount = if txn == TxnType::BalanceInquiry {
        0
    } else {
        amount
    };
    let stan = terminal.next_stan();
    let request = Request {
        txn,
        card,
        amount,
        original,
    };
    match terminal.transact(&request).await {
        Ok(response) => Ok((args.txn.clone(), response, stan)),
        Err(
            error @ (terminal::TerminalError::Timeout(_) | terminal::TerminalError::ResponseMac),
        ) => {
            // What a real terminal does: reverse what it could not complete (98: no answer;
            // A0: an answer whose MAC did not verify), then report.
            let reason = match error {
                terminal::TerminalError::ResponseMac => "A0",
                _ => "98",
            };
            let _ = terminal.reverse_last(reason).await;
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{config_of, parse_amount, stan_after};
    use crate::fixtures::TerminalFixture;

    /// A demo listening on IPv6 writes its host as `::1`: the address is built from the
    /// parts, not by pasting `host:port` (`::1:5800` does not parse).
    #[test]
    fn a_fixture_on_an_ipv6_host_is_reached() {
        let fixture = |host: &str| TerminalFixture {
            tid: "10000001".into(),
            mid: "898110048990001".into(),
            merchant: "Teahouse".into(),
            tmk: "0123456789ABCDEFFEDCBA9876543210".into(),
            key_scheme: "003".into(),
            mac: "cup-ecb".into(),
            host: host.into(),
            port: 5800,
            traffic: false,
        };
        let v6 = config_of(&fixture("::1"), 1).unwrap();
        assert_eq!(v6.addr.to_string(), "[::1]:5800");
        let v4 = config_of(&fixture("127.0.0.1"), 1).unwrap();
        assert_eq!(v4.addr.to_string(), "127.0.0.1:5800");
    }

    #[test]
    fn traces_count_on_past_999999_from_1() {
        assert_eq!(stan_after(41, 2), 43);
        assert_eq!(stan_after(999_998, 2), 1);
        assert_eq!(stan_after(999_999, 2), 2);
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("1.00"), Ok(100));
        assert_eq!(parse_amount("12"), Ok(1200));
        assert_eq!(parse_amount("0.5"), Ok(50));
        assert!(parse_amount("1.234").is_err() && parse_amount("x").is_err());
        assert!(parse_amount(".5").is_err());
    }
}
