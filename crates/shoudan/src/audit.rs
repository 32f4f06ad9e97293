//! `shoudan audit`: compares each simulated issuer's ledger with the switch's journal, read-only
//! (works while the demo runs, through SQLite WAL readers, and after it stops). Lists issuer
//! approvals neither completed in the journal nor reversed at the issuer ("in doubt"), approvals
//! the journal holds that the issuer has reversed (the merchant was told "approved" but will not
//! be paid), amount mismatches, and journal approvals the issuer never saw. The journal is read through the
//! `Store` trait: the data dir's SQLite file, or the database `--database` names (PostgreSQL
//! shared by several nodes).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use store::{SqliteStore, Store, TxnKind};

use crate::fixtures;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[arg(long, default_value = "./shoudan-data")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// The journal, when not the data dir's `switch.db`: `sqlite:PATH` or `postgres://...`.
    #[arg(long)]
    pub database: Option<String>,
    /// The PostgreSQL schema of the journal, when not `public`.
    #[arg(long, requires = "database")]
    pub database_schema: Option<String>,
}

#[derive(Debug, Serialize)]
struct Finding {
    issuer: String,
    rrn: String,
    kind: String,
    pan: String,
    issuer_amount: Option<i64>,
    journal_amount: Option<i64>,
    issuer_state: Option<String>,
    journal_state: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    issuer_approvals: usize,
    journal_approvals: usize,
    in_doubt: Vec<Finding>,
    /// Approved in the journal, reversed at the issuer.
    reversed_only_at_issuer: Vec<Finding>,
    amount_mismatches: Vec<Finding>,
    unknown_to_issuer: Vec<Finding>,
}

struct JournalRow {
    kind: String,
    amount: i64,
    code: Option<String>,
    state: String,
    issuer: Option<String>,
    pan: String,
}

fn open(path: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

pub fn run(args: AuditArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let fixtures = fixtures::load(&args.data_dir)?;
    let journal: Arc<dyn Store> = match &args.database {
        Some(database) => {
            crate::serve::open_store_as_is(database, args.database_schema.as_deref())?
        }
        None => Arc::new(SqliteStore::open_read_only(
            &args.data_dir.join("switch.db"),
        )?),
    };
    let mut by_rrn: HashMap<String, JournalRow> = HashMap::new();
    for row in journal.txns_since("")? {
        let Some(rrn) = row.rrn else { continue };
        if row.kind == TxnKind::Reversal {
            continue;
        }
        by_rrn.insert(
            rrn.trim().to_owned(),
            JournalRow {
                kind: row.kind.as_str().to_owned(),
                amount: row.amount_fen,
                code: row.response_code,
                state: row.state.as_str().to_owned(),
                issuer: row.issuer,
                pan: row.pan.map(|p| p.masked).unwrap_or_default(),
            },
        );
    }
    let mut report = Report::default();
    // (bank, RRN) of every issuer approval: a journal approval is known to its own issuer.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for issuer in &fixtures.issuers {
        let ledger = open(&args.data_dir.join(&issuer.ledger))?;
        let mut stmt = ledger
            .prepare("SELECT rrn, kind, amount, state, pan_masked FROM txns WHERE code = '00'")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (rrn, kind, amount, state, pan) = row?;
            report.issuer_approvals += 1;
            seen.insert((issuer.bank.clone(), rrn.clone()));
            // The journal's row of this RRN, if it was sent to this issuer.
            let journal = by_rrn
                .get(&rrn)
                .filter(|j| j.issuer.as_deref() == Some(issuer.bank.as_str()));
            let finding = || Finding {
                issuer: issuer.bank.clone(),
                rrn: rrn.clone(),
                kind: kind.clone(),
                pan: pan.clone(),
                issuer_amount: Some(amount),
                journal_amount: journal.map(|j| j.amount),
                issuer_state: Some(state.clone()),
                journal_state: journal.map(|j| j.state.clone()),
            };
            // A balance inquiry moves no money: one the journal timed out (a kill while it
            // was at the issuer) leaves nothing in doubt, and it is never reversed.
            if kind == "balance_inquiry" {
                continue;
            }
            let reversed_at_issuer = state == "reversed" || state == "reversed_unseen";
            // The terminal was told "approved" and the journal kept it (later voided or
            // completed counts: those are their own linked transactions).
            let completed_in_journal = journal.is_some_and(|j| {
                j.code.as_deref() == Some("00")
                    && matches!(j.state.as_str(), "approved" | "voided" | "completed")
            });
            let approved_in_journal =
                journal.is_some_and(|j| j.code.as_deref() == Some("00") && j.state == "approved");
            if !reversed_at_issuer && !completed_in_journal {
                report.in_doubt.push(finding());
            } else if reversed_at_issuer && approved_in_journal {
                report.reversed_only_at_issuer.push(finding());
            } else if let Some(j) = journal
                && j.amount != amount
                && !reversed_at_issuer
            {
                report.amount_mismatches.push(finding());
            }
        }
    }
    let audited: Vec<&str> = fixtures.issuers.iter().map(|i| i.bank.as_str()).collect();
    for (rrn, j) in &by_rrn {
        if j.code.as_deref() != Some("00") {
            continue;
        }
        report.journal_approvals += 1;
        let ours = j.issuer.as_deref().is_some_and(|i| audited.contains(&i));
        let known = seen.contains(&(j.issuer.clone().unwrap_or_default(), rrn.clone()));
        if ours && j.kind != "balance_inquiry" && !known {
            report.unknown_to_issuer.push(Finding {
                issuer: j.issuer.clone().unwrap_or_default(),
                rrn: rrn.clone(),
                kind: j.kind.clone(),
                pan: j.pan.clone(),
                issuer_amount: None,
                journal_amount: Some(j.amount),
                issuer_state: None,
                journal_state: Some(j.state.clone()),
            });
        }
    }
    let bad = !report.in_doubt.is_empty()
        || !report.reversed_only_at_issuer.is_empty()
        || !report.amount_mismatches.is_empty()
        || !report.unknown_to_issuer.is_empty();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "issuer approvals {}, journal approvals {}",
            report.issuer_approvals, report.journal_approvals
        );
        for (title, list) in [
            ("in doubt", &report.in_doubt),
            (
                "approved in the journal, reversed at the issuer",
                &report.reversed_only_at_issuer,
            ),
            ("amount mismatches", &report.amount_mismatches),
            (
                "journal approvals unknown to the issuer",
                &report.unknown_to_issuer,
            ),
        ] {
            println!("{title}: {}", list.len());
            for f in list {
                println!(
                    "  {} rrn {} {} {} issuer {:?}/{:?} journal {:?}/{:?}",
                    f.issuer,
                    f.rrn,
                    f.kind,
                    f.pan,
                    f.issuer_amount,
                    f.issuer_state,
                    f.journal_amount,
                    f.journal_state
                );
            }
        }
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
