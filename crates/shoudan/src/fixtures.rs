//! `fixtures.json`: the demo's terminals and cards as test fixture data (PANs and PINs included
//! by design: they are made-up demo cards), written by `shoudan demo`, read by the other
//! commands, and printed by `shoudan fixtures`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliResult;

pub const FIXTURES_FILE: &str = "fixtures.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fixtures {
    pub host: String,
    pub port: u16,
    pub http_port: u16,
    pub terminals: Vec<TerminalFixture>,
    pub cards: Vec<CardFixture>,
    pub issuers: Vec<IssuerFixture>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TerminalFixture {
    pub tid: String,
    pub mid: String,
    pub merchant: String,
    /// Terminal master key, hex (demo data).
    pub tmk: String,
    pub key_scheme: String,
    pub mac: String,
    pub host: String,
    pub port: u16,
    /// Used by the demo's background traffic: driving it by hand works but shares its STANs.
    pub traffic: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardFixture {
    pub bank: String,
    pub label: String,
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    pub pin: String,
    pub status: String,
    /// Fen.
    pub balance: i64,
    /// What a purchase of 1.00 with `pin` gets.
    pub purchase_code: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuerFixture {
    pub bank: String,
    pub port: u16,
    /// The issuer simulator's ledger (SQLite), relative to the data dir.
    pub ledger: String,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FIXTURES_FILE)
}

pub fn load(data_dir: &Path) -> Result<Fixtures, Box<dyn std::error::Error>> {
    let file = path(data_dir);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "cannot read {}: {e} (has `shoudan demo --data-dir {}` run?)",
            file.display(),
            data_dir.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Written whole, readable by its owner alone: it holds the demo terminals' clear master keys
/// and the demo cards' numbers and PINs.
pub fn save(data_dir: &Path, fixtures: &Fixtures) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec_pretty(fixtures)?);
    crate::files::write_whole(&path(data_dir), &bytes, 0o600)?;
    Ok(())
}

#[derive(clap::Args)]
pub struct FixturesArgs {
    #[arg(long, default_value = "./shoudan-data")]
    pub data_dir: PathBuf,
    /// Print the whole fixture file as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FixturesArgs) -> CliResult {
    let fixtures = load(&args.data_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fixtures)?);
        return Ok(());
    }
    match fixtures.host.parse::<std::net::IpAddr>() {
        Ok(ip) => println!("switch {}", std::net::SocketAddr::new(ip, fixtures.port)),
        Err(_) => println!("switch {}:{}", fixtures.host, fixtures.port),
    }
    println!("terminals:");
    for t in &fixtures.terminals {
        println!(
            "  {} mid {} {:<10} scheme {} mac {:<7} tmk {}{}",
            t.tid,
            t.mid,
            t.merchant,
            t.key_scheme,
            t.mac,
            t.tmk,
            if t.traffic { " (traffic)" } else { "" }
        );
    }
    println!("cards (demo data):");
    for c in &fixtures.cards {
        println!(
            "  {:<5} {:<20} exp {} pin {:<6} {:<16} balance {:>14} purchase 1.00 -> {}",
            c.bank, c.pan, c.expiry, c.pin, c.label, c.balance, c.purchase_code
        );
    }
    Ok(())
}
