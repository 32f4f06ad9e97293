//! `shoudan crypto`: key and MAC tools (owned by the paycrypto work; placeholder).
use crate::CliResult;

#[derive(clap::Subcommand)]
pub enum CryptoCmd {
    /// Placeholder until paycrypto lands.
    Kcv,
}

pub fn run(_cmd: CryptoCmd) -> CliResult {
    Err("not built yet".into())
}
