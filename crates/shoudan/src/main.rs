//! The shoudan binary: every command an operator or a test runs.
//! Each command family lives in its own module; this file only wires them to clap.

mod crypto_cmd;
mod explain_cmd;
mod iso_cmd;

use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Iso(cmd) => iso_cmd::run(cmd),
        Command::Crypto(cmd) => crypto_cmd::run(cmd),
        Command::Explain(args) => explain_cmd::explain(args),
        Command::CardInfo(args) => explain_cmd::card_info(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
