//! The shoudan binary: every command an operator or a test runs.
//! Each command family lives in its own module; this file only wires them to clap.

/// `println!` for the long-running services (`serve`, `demo`): a standard output no one reads
/// any more (a pager quit, a log pipe gone) must neither stop a running node nor cut its stop
/// short, so a failed write is ignored rather than ending the process.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod audit;
mod bench;
mod crypto_cmd;
mod demo;
mod explain_cmd;
mod files;
mod fixtures;
mod iso_cmd;
mod logging;
mod provision;
mod serve;
mod settle_cmd;
mod terminal_cmd;
mod traffic;

use std::process::ExitCode;

/// mimalloc for every allocation of the process: with glibc's allocator a loaded switch spent
/// 15 % of its CPU in malloc and free (a task per request moves between worker threads, and is
/// freed on another than it was allocated on; its future is large enough to make every
/// allocation consolidate the small free lists). See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

/// A command's failure: printed as one line on stderr, exit code 2.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "shoudan",
    version,
    about = "shoudan (收单): an acquiring host for POS terminals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode and encode CUP POS ISO 8583 messages.
    #[command(subcommand)]
    Iso(iso_cmd::IsoCmd),
    /// Key check values, MACs, PIN blocks and field 62 working keys.
    #[command(subcommand)]
    Crypto(crypto_cmd::CryptoCmd),
    /// Explain a response code: what happened, who acts, what to tell the customer.
    Explain(explain_cmd::ExplainArgs),
    /// Issuer directory: bank, card type and contact channels for a card number.
    CardInfo(explain_cmd::CardInfoArgs),
    /// Run the switch with simulated issuers, demo merchants, terminals and cards.
    Demo(demo::DemoArgs),
    /// Run one production node from its configuration (docs/operations.md).
    Serve(serve::ServeArgs),
    /// Print the demo's terminals and cards. Test fixture data: it includes made-up card
    /// numbers, PINs and terminal master keys by design.
    Fixtures(fixtures::FixturesArgs),
    /// Act as a demo terminal: sign in and run one transaction.
    Terminal(terminal_cmd::TerminalArgs),
    /// Compare the issuers' ledgers with the journal; exit 1 if anything is in doubt.
    Audit(audit::AuditArgs),
    /// Load: purchases from signed-in terminals, a loopback echo ceiling, and their ratio.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Clear a clearing date: fees, ledger postings per merchant; a second run changes nothing.
    Settle(settle_cmd::SettleArgs),
    /// List payouts; `--run DATE` runs the T+1 payout job through the simulated bank first.
    Payouts(settle_cmd::PayoutsArgs),
    /// Match the issuers' clearing files for a date against the journal; exits 1 on any difference.
    Reconcile(settle_cmd::ReconcileArgs),
    /// The double-entry ledger.
    #[command(subcommand)]
    Ledger(settle_cmd::LedgerCmd),
    /// Merchants' bound settlement accounts: bind, confirm a re-binding.
    #[command(subcommand)]
    Account(settle_cmd::AccountCmd),
    /// A deployment's keys, merchants, terminals and users: init, key, keys, merchant, terminal,
    /// user.
    #[command(subcommand)]
    Provision(provision::ProvisionCmd),
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // The services tell what they do; the one-shot commands only what went wrong.
    logging::init(match cli.command {
        Command::Demo(_) | Command::Serve(_) => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::WARN,
    });
    let result = match cli.command {
        Command::Iso(cmd) => iso_cmd::run(cmd),
        Command::Crypto(cmd) => crypto_cmd::run(cmd),
        Command::Explain(args) => match explain_cmd::explain(args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::CardInfo(args) => explain_cmd::card_info(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Fixtures(args) => fixtures::run(args),
        Command::Terminal(args) => terminal_cmd::run(args),
        Command::Bench(cmd) => match bench::run(cmd) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Settle(args) => settle_cmd::settle(args),
        Command::Payouts(args) => match settle_cmd::payouts(args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Reconcile(args) => match settle_cmd::reconcile_cmd(args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Ledger(cmd) => match settle_cmd::ledger(cmd) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Account(cmd) => settle_cmd::account(cmd),
        Command::Provision(cmd) => provision::run(cmd),
        Command::Audit(args) => match audit::run(args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// The command line, or the exit code when it is not one to run: help and version on standard
/// output with 0, as clap prints them; a usage error on standard error with 2, with the values
/// typed hidden (see [`redact_values`]).
fn parse_args() -> Result<Cli, ExitCode> {
    let err = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(err) => err,
    };
    match err.kind() {
        // Clap's own text (a command given without its subcommand gets its help, on standard
        // error with 2): nothing typed is in it.
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Standard output gone (`shoudan --help | head`): nothing more to tell anyone.
            let _ = err.print();
            Err(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)))
        }
        _ => {
            let mut text = err.render().to_string();
            // What the user typed that clap quotes (an argument it could not place, a value it
            // refused) is hidden whole: it may be a PIN, a card number or a key typed without
            // its flag, or into the wrong one.
            for typed in typed_values(&err) {
                text = text.replace(&typed, REDACTED);
            }
            eprint!("{}", redact_values(&text));
            Err(ExitCode::from(2))
        }
    }
}

/// The values typed on the command line that clap's error `err` quotes: the argument it could
/// not place (not a flag's name), or the value it refused.
fn typed_values(err: &clap::Error) -> Vec<String> {
    use clap::error::{ContextKind, ContextValue};
    let kind = match err.kind() {
        ErrorKind::UnknownArgument => ContextKind::InvalidArg,
        _ => ContextKind::InvalidValue,
    };
    let values = match err.get(kind) {
        Some(ContextValue::String(value)) => vec![value.clone()],
        Some(ContextValue::Strings(values)) => values.clone(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .filter(|v| !v.is_empty() && !v.starts_with('-'))
        .collect()
}

/// What replaces a value hidden from a usage error.
const REDACTED: &str = "<redacted>";

/// A run of this many hex digits or more in a usage error is hidden.
const REDACTED_RUN_MIN: usize = 8;

/// A usage error with the values typed in it hidden. Clap quotes the argument it could not
/// place, and one typed without its flag (`crypto kcv KEY`, `crypto pinblock --pin 1234 PAN`) is
/// as likely a key or a card number as anything: a card number is masked (first 6 and last 4
/// digits), and any other run of 8 or more hex digits (a key, a card number that fails Luhn,
/// track data), groups split by single spaces, colons or hyphens included (`0123 4567 89AB`), is
/// replaced by `<redacted>`. Clap's own words and flag names have no such run.
fn redact_values(text: &str) -> String {
    let masked = domain::mask_card_numbers(text);
    let chars: Vec<char> = masked.chars().collect();
    let mut out = String::with_capacity(masked.len());
    let mut start = 0;
    while let Some(&c) = chars.get(start) {
        if !c.is_ascii_hexdigit() {
            out.push(c);
            start += 1;
            continue;
        }
        // The run from here: hex digits, and a single separator between two of them.
        let (mut end, mut digits, mut at) = (start, 0, start);
        loop {
            match chars.get(at) {
                Some(c) if c.is_ascii_hexdigit() => {
                    digits += 1;
                    at += 1;
                    end = at;
                }
                Some(' ' | ':' | '-') if chars.get(at + 1).is_some_and(char::is_ascii_hexdigit) => {
                    at += 1;
                }
                _ => break,
            }
        }
        if digits >= REDACTED_RUN_MIN {
            out.push_str(REDACTED);
        } else {
            out.extend(chars.get(start..end).unwrap_or_default());
        }
        start = end;
    }
    out
}

/// `shoudan fixtures | head` closes our stdout early; `println!` then panics with a broken pipe.
/// Rust ignores SIGPIPE and changing that needs `unsafe`, so the panic hook turns exactly that
/// case into a quiet exit with the status a Unix tool killed by SIGPIPE has (141): not 0, which
/// would report a failed `audit` or `reconcile` as clean to a pipeline under `pipefail`. Every
/// other panic is left as it was. The services print with `say!`, which never panics.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_keep_their_words_and_hide_the_values() {
        // Clap's own words, flag names and short values stay.
        let usage = "error: invalid value '1e-300' for '--rate <RATE>'\n\n\
                     Usage: shoudan bench auth [OPTIONS] --data-dir <DATA_DIR>\n";
        assert_eq!(redact_values(usage), usage);
        // A card number is masked; a key, in one piece or in groups, is hidden whole.
        assert_eq!(
            redact_values("'6222020200112233446' '0123456789ABCDEF' '0123 4567:89ab-cdef'"),
            "'622202*********3446' '<redacted>' '<redacted>'"
        );
        // A card number that fails Luhn, and what follows the card number on a track.
        assert_eq!(
            redact_values("'6222020200112233445' ';6222020200112233446=25121010000000000000?'"),
            "'<redacted>' ';622202*********3446=<redacted>?'"
        );
        // Seven hex digits stay (a word, a short value); two separators in a row end a run.
        assert_eq!(
            redact_values("'1234567' 'a  bcdef0123'"),
            "'1234567' 'a  <redacted>'"
        );
    }
}
