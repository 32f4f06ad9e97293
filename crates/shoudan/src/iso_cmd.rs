//! `shoudan iso`: decode and encode messages (owned by the iso8583 work; placeholder).
use crate::CliResult;

#[derive(clap::Subcommand)]
pub enum IsoCmd {
    /// Placeholder until the codec lands.
    Decode,
}

pub fn run(_cmd: IsoCmd) -> CliResult {
    Err("not built yet".into())
}
