//! `shoudan explain` and `shoudan card-info` (owned by the domain work; placeholder).
use crate::CliResult;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Response code.
    code: String,
}

#[derive(clap::Args)]
pub struct CardInfoArgs {
    /// Card number.
    pan: String,
}

pub fn explain(_args: ExplainArgs) -> CliResult {
    Err("not built yet".into())
}

pub fn card_info(_args: CardInfoArgs) -> CliResult {
    Err("not built yet".into())
}
