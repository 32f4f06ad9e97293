//! Reconciliation: an issuer's daily clearing file (issuer-sim's `clearing::write_csv` format)
//! matched by RRN against the journal: matched, approved at the issuer but missing or reversed
//! here, present here but unknown to the issuer, amounts that differ, each with its action.

use std::collections::HashMap;

use serde::Serialize;
use store::{TxnKind, TxnRow, TxnState};

/// Rows one clearing file may have; a bigger file is refused rather than read into memory.
pub const CLEARING_ROWS_MAX: usize = 5_000_000;

/// One row of an issuer's clearing file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssuerClearingRow {
    pub rrn: String,
    pub kind: String,
    pub amount_fen: i64,
    pub state: String,
    pub original_rrn: Option<String>,
    pub day: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("clearing file: missing column {0}")]
    MissingColumn(&'static str),
    #[error("clearing file line {line}: {problem}")]
    BadRow { line: usize, problem: String },
    #[error("clearing file has more than {CLEARING_ROWS_MAX} rows")]
    TooLarge,
}

/// Parses the CSV by its header's column names.
pub fn parse_clearing_csv(text: &str) -> Result<Vec<IssuerClearingRow>, ReconcileError> {
    // A file saved by a Windows tool starts with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or(ReconcileError::MissingColumn(name))
    };
    let (rrn, kind, amount, state, original, day) = (
        col("rrn")?,
        col("type")?,
        col("amount")?,
        col("state")?,
        col("original_rrn")?,
        col("day")?,
    );
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if rows.len() >= CLEARING_ROWS_MAX {
            return Err(ReconcileError::TooLarge);
        }
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
        // Fen as digits alone: a sign (a refund written negative) is not the journal's way,
        // and taken as it is it would make every credit an amount difference.
        let amount_fen = Some(cell(amount))
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|a| a.parse::<i64>().ok())
            .ok_or_else(|| ReconcileError::BadRow {
                line: n + 2,
                problem: format!("amount {:?}", cell(amount)),
            })?;
        rows.push(IssuerClearingRow {
            rrn: cell(rrn).to_owned(),
            kind: cell(kind).to_owned(),
            amount_fen,
            state: cell(state).to_owned(),
            original_rrn: Some(cell(original).to_owned()).filter(|o| !o.is_empty()),
            day: cell(day).to_owned(),
        });
    }
    Ok(rows)
}

/// What kind of difference a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The issuer approved it (and still counts it); the journal has no counted transaction.
    MissingHere,
    /// The journal counts it; the issuer has no approval (or reversed it).
    UnknownToIssuer,
    AmountDiffers,
    /// The issuer's file counts the RRN more than once: the cardholder may be charged (or
    /// credited) twice for one transaction.
    DuplicateAtIssuer,
    /// The issuer counts the RRN as money the other way from the journal: a credit (refund,
    /// void) where the journal has a sale, or a sale where it has a credit.
    KindDiffers,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReconFinding {
    pub kind: FindingKind,
    pub issuer: String,
    pub rrn: String,
    pub txn_kind: String,
    pub txn_id: Option<i64>,
    pub issuer_amount_fen: Option<i64>,
    pub journal_amount_fen: Option<i64>,
    pub issuer_state: Option<String>,
    pub journal_state: Option<String>,
    /// What to do about it.
    pub action: &'static str,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconReport {
    pub issuer: String,
    pub clearing_date: String,
    pub issuer_rows: usize,
    pub journal_rows: usize,
    pub matched: usize,
    pub findings: Vec<ReconFinding>,
}

const MONEY_KINDS: [&str; 5] = [
    "purchase",
    "purchase_void",
    "refund",
    "completion",
    "completion_void",
];

fn issuer_counts(row: &IssuerClearingRow) -> bool {
    !matches!(
        row.state.as_str(),
        "declined" | "reversed" | "reversed_unseen"
    )
}

fn journal_counts(row: &TxnRow) -> bool {
    matches!(
        row.kind,
        TxnKind::Purchase
            | TxnKind::PurchaseVoid
            | TxnKind::Refund
            | TxnKind::Completion
            | TxnKind::CompletionVoid
    ) && !matches!(
        row.state,
        TxnState::InFlight
            | TxnState::Declined
            | TxnState::TimedOut
            | TxnState::Failed
            | TxnState::Reversed
    )
}

const ACTION_MISSING: &str = "The issuer debited the cardholder but the journal has no record: \
     send a reversal to the issuer so the cardholder gets the money back (or, if the merchant \
     holds a signed receipt, record the capture by hand).";
const ACTION_REVERSED_HERE: &str = "Reversed here but still counted at the issuer: resend the \
     reversal (store-and-forward) until the issuer acknowledges it.";
const ACTION_UNKNOWN: &str = "Cleared to the merchant but unknown to the issuer: hold the amount \
     from the merchant's payout and ask the issuer for its record; if it never approved, post a \
     correction.";
const ACTION_AMOUNT: &str = "Amounts differ: clear the issuer's amount, post a correction for \
     the difference, and check the terminal's amount entry.";
const ACTION_DUPLICATE: &str = "The issuer counts this RRN more than once, the journal once: the \
     cardholder may have been charged (or credited) twice; ask the issuer to reverse the \
     duplicate and send its record.";
const ACTION_KIND: &str = "The issuer counts this RRN as money the other way from the journal (a \
     credit against a sale, or a sale against a credit): the cardholder's account and the \
     merchant's clearing disagree by twice the amount; ask the issuer for its record and post \
     a correction for whichever is wrong.";
const ACTION_NOT_COUNTED_HERE: &str = "Debited at the issuer but not counted here (the journal \
     holds it declined, timed out or failed, with no reversal standing): send a reversal to the \
     issuer so the cardholder gets the money back, or, if the merchant holds a signed receipt, \
     record the capture by hand.";
const ACTION_CREDIT_MISSING: &str = "The issuer credited the cardholder (a refund or void) that \
     the journal has no record of, so the merchant was never debited for it: ask the issuer for \
     its record; if the merchant's terminal made it, post it to the merchant as a correction, \
     else have the issuer reverse it.";
const ACTION_CREDIT_REVERSED_HERE: &str = "Reversed here but still credited at the issuer: resend \
     the reversal (store-and-forward) until the issuer acknowledges it, or the cardholder keeps \
     a credit the merchant was not debited for.";
const ACTION_CREDIT_NOT_COUNTED_HERE: &str = "Credited at the issuer but not counted here (the \
     journal holds it declined, timed out or failed): check with the issuer which stands, then \
     post it to the merchant as a correction or have the issuer reverse it.";
const ACTION_CREDIT_UNKNOWN: &str = "Refunded or voided here (the merchant is debited) but \
     unknown to the issuer (the cardholder is not credited): ask the issuer for its record, and \
     send it again or undo the merchant's debit with a correction.";

/// A refund or void: money back to the cardholder. The actions for a difference in one run
/// the other way from a sale's.
fn is_credit(kind: &str) -> bool {
    matches!(kind, "purchase_void" | "refund" | "completion_void")
}

/// What to do about a row the issuer counts and the journal does not: `ours` is the journal's
/// row of that RRN, if any.
fn action_missing_here(kind: &str, ours: Option<&TxnRow>) -> &'static str {
    let reversed = ours.map(|t| t.state == TxnState::Reversed);
    match (is_credit(kind), reversed) {
        (false, None) => ACTION_MISSING,
        (false, Some(true)) => ACTION_REVERSED_HERE,
        (false, Some(false)) => ACTION_NOT_COUNTED_HERE,
        (true, None) => ACTION_CREDIT_MISSING,
        (true, Some(true)) => ACTION_CREDIT_REVERSED_HERE,
        (true, Some(false)) => ACTION_CREDIT_NOT_COUNTED_HERE,
    }
}

/// What to do about a row the journal counts and the issuer does not.
fn action_unknown(kind: &str) -> &'static str {
    if is_credit(kind) {
        ACTION_CREDIT_UNKNOWN
    } else {
        ACTION_UNKNOWN
    }
}

/// The issuer's files of the days either side of the one reconciled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Neighbours<'a> {
    /// The day before's file.
    pub earlier: &'a [IssuerClearingRow],
    /// The day after's file.
    pub later: &'a [IssuerClearingRow],
}

/// Matches one issuer's clearing file for `clearing_date` with the journal. `journal` holds the
/// journal rows of that issuer around the date, and `neighbours` the issuer's files of the
/// days either side: the issuer's business day and our clearing date (cut at 23:00) need not
/// agree near midnight, so a row is unknown to the issuer only if no neighbouring file has it
/// either; and one the day before's file counted too is counted twice.
pub fn reconcile(
    issuer: &str,
    clearing_date: &str,
    issuer_rows: &[IssuerClearingRow],
    neighbours: Neighbours<'_>,
    journal: &[TxnRow],
) -> ReconReport {
    let adjacent = || neighbours.earlier.iter().chain(neighbours.later);
    let by_rrn: HashMap<&str, &TxnRow> = journal
        .iter()
        .filter(|r| r.kind != TxnKind::Reversal)
        .filter_map(|r| r.rrn.as_deref().map(|rrn| (rrn, r)))
        .collect();
    let issuer_money: Vec<&IssuerClearingRow> = issuer_rows
        .iter()
        .filter(|r| MONEY_KINDS.contains(&r.kind.as_str()))
        .collect();
    let mut report = ReconReport {
        issuer: issuer.to_owned(),
        clearing_date: clearing_date.to_owned(),
        issuer_rows: issuer_money.len(),
        ..ReconReport::default()
    };
    // The file's rows by RRN, in its order: an RRN may have more than one (its reversal
    // listed apart, or a duplicate). The one that counts (else the first) is matched; any
    // other that counts too is a duplicate.
    let mut order: Vec<&str> = Vec::new();
    let mut of_rrn: HashMap<&str, Vec<&IssuerClearingRow>> = HashMap::new();
    for row in &issuer_money {
        of_rrn
            .entry(row.rrn.as_str())
            .or_insert_with(|| {
                order.push(row.rrn.as_str());
                Vec::new()
            })
            .push(row);
    }
    for rrn in &order {
        let rows = of_rrn.get(rrn).map(Vec::as_slice).unwrap_or_default();
        let mut counting = rows.iter().copied().filter(|r| issuer_counts(r));
        let Some(row) = counting.next().or_else(|| rows.first().copied()) else {
            continue;
        };
        let ours = by_rrn.get(*rrn).copied();
        let counted_there = issuer_counts(row);
        let counted_here = ours.is_some_and(journal_counts);
        // Counted in the day before's file too, as money the same way: the issuer counts it
        // twice across its files (each day's run, matching within its own file and the
        // journal's neighbouring days, found it once). This day's copy is the second (whatever
        // day it is dated), reported here, so it is claimed back once.
        let counted_earlier = counted_there
            && neighbours.earlier.iter().any(|a| {
                a.rrn == row.rrn
                    && issuer_counts(a)
                    && MONEY_KINDS.contains(&a.kind.as_str())
                    && is_credit(&a.kind) == is_credit(&row.kind)
            });
        let finding = |row: &IssuerClearingRow, kind, action| ReconFinding {
            kind,
            issuer: issuer.to_owned(),
            rrn: row.rrn.clone(),
            txn_kind: row.kind.clone(),
            txn_id: ours.map(|t| t.id),
            issuer_amount_fen: Some(row.amount_fen),
            journal_amount_fen: ours.map(|t| t.amount_fen),
            issuer_state: Some(row.state.clone()),
            journal_state: ours.map(|t| t.state.as_str().to_owned()),
            action,
        };
        match (counted_there, counted_here) {
            _ if counted_earlier => {
                report.findings.push(finding(
                    row,
                    FindingKind::DuplicateAtIssuer,
                    ACTION_DUPLICATE,
                ));
            }
            (true, true)
                if ours.is_some_and(|t| is_credit(t.kind.as_str()) != is_credit(&row.kind)) =>
            {
                report
                    .findings
                    .push(finding(row, FindingKind::KindDiffers, ACTION_KIND));
            }
            (true, true) => {
                if ours.is_some_and(|t| t.amount_fen != row.amount_fen) {
                    report
                        .findings
                        .push(finding(row, FindingKind::AmountDiffers, ACTION_AMOUNT));
                } else {
                    report.matched += 1;
                }
            }
            (true, false) => {
                let action = action_missing_here(&row.kind, ours);
                report
                    .findings
                    .push(finding(row, FindingKind::MissingHere, action));
            }
            (false, true) => report.findings.push(finding(
                row,
                FindingKind::UnknownToIssuer,
                action_unknown(&row.kind),
            )),
            (false, false) => report.matched += 1,
        }
        for again in counting {
            report.findings.push(finding(
                again,
                FindingKind::DuplicateAtIssuer,
                ACTION_DUPLICATE,
            ));
        }
    }
    for row in journal
        .iter()
        .filter(|r| r.clearing_date == clearing_date && journal_counts(r))
    {
        report.journal_rows += 1;
        let rrn = row.rrn.as_deref().unwrap_or("");
        if of_rrn.contains_key(rrn) {
            continue;
        }
        // In a neighbouring day's file (the hour between our 23:00 cut-over and the issuer's
        // midnight): matched there as in the day's own, its amount compared too.
        if let Some(theirs) = adjacent().find(|a| a.rrn == rrn && issuer_counts(a)) {
            if theirs.amount_fen == row.amount_fen {
                report.matched += 1;
            } else {
                report.findings.push(ReconFinding {
                    kind: FindingKind::AmountDiffers,
                    issuer: issuer.to_owned(),
                    rrn: rrn.to_owned(),
                    txn_kind: theirs.kind.clone(),
                    txn_id: Some(row.id),
                    issuer_amount_fen: Some(theirs.amount_fen),
                    journal_amount_fen: Some(row.amount_fen),
                    issuer_state: Some(theirs.state.clone()),
                    journal_state: Some(row.state.as_str().to_owned()),
                    action: ACTION_AMOUNT,
                });
            }
            continue;
        }
        report.findings.push(ReconFinding {
            kind: FindingKind::UnknownToIssuer,
            issuer: issuer.to_owned(),
            rrn: rrn.to_owned(),
            txn_kind: row.kind.as_str().to_owned(),
            txn_id: Some(row.id),
            issuer_amount_fen: None,
            journal_amount_fen: Some(row.amount_fen),
            issuer_state: None,
            journal_state: Some(row.state.as_str().to_owned()),
            action: action_unknown(row.kind.as_str()),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_row(rrn: &str, kind: TxnKind, state: TxnState, amount: i64, date: &str) -> TxnRow {
        TxnRow {
            id: rrn.parse().unwrap_or(0),
            tid: "10000001".into(),
            mid: "898310058120001".into(),
            batch_no: 1,
            stan: 1,
            kind,
            mti: "0200".into(),
            processing_code: "000000".into(),
            condition_code: "00".into(),
            amount_fen: amount,
            currency: "156".into(),
            pan: None,
            issuer: Some("ICBC".into()),
            rrn: Some(rrn.into()),
            host_trace: None,
            auth_code: None,
            response_code: Some("00".into()),
            state,
            request_hash: vec![],
            original_id: None,
            refunded_fen: 0,
            field60: None,
            host_date: None,
            clearing_date: date.into(),
            settlement_date: None,
            received_at_ms: 0,
            sent_at_ms: None,
            issuer_answered_at_ms: None,
            answered_at_ms: None,
        }
    }

    #[test]
    fn every_kind_of_difference_is_found_with_its_action() {
        let csv = "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n\
            000000000001,purchase,1000,approved,0,0,,123456,2026-11-23\n\
            000000000002,purchase,2000,approved,0,0,,123457,2026-11-23\n\
            000000000003,purchase,3000,approved,0,0,,123458,2026-11-23\n\
            000000000004,purchase,4000,approved,0,0,,123459,2026-11-23\n\
            000000000005,purchase,5000,reversed,0,0,,123460,2026-11-23\n\
            000000000007,balance_inquiry,0,approved,0,0,,,2026-11-23\n";
        let rows = parse_clearing_csv(csv).unwrap();
        let adjacent = parse_clearing_csv(
            "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n\
             000000000008,purchase,800,approved,0,0,,1,2026-11-24\n",
        )
        .unwrap();
        let d = "20261123";
        let journal = vec![
            journal_row(
                "000000000001",
                TxnKind::Purchase,
                TxnState::Approved,
                1000,
                d,
            ),
            journal_row(
                "000000000002",
                TxnKind::Purchase,
                TxnState::Reversed,
                2000,
                d,
            ),
            // 3: missing here.
            journal_row(
                "000000000004",
                TxnKind::Purchase,
                TxnState::Approved,
                4400,
                d,
            ),
            journal_row(
                "000000000005",
                TxnKind::Purchase,
                TxnState::Approved,
                5000,
                d,
            ),
            journal_row(
                "000000000006",
                TxnKind::Purchase,
                TxnState::Approved,
                600,
                d,
            ),
            // Cleared on the 23rd here, on the 24th at the issuer: matched, not unknown.
            journal_row(
                "000000000008",
                TxnKind::Purchase,
                TxnState::Approved,
                800,
                d,
            ),
        ];
        let later = Neighbours {
            later: &adjacent,
            ..Neighbours::default()
        };
        let report = reconcile("ICBC", d, &rows, later, &journal);
        let found: Vec<(&str, FindingKind)> = report
            .findings
            .iter()
            .map(|f| (f.rrn.as_str(), f.kind))
            .collect();
        assert_eq!(
            found,
            vec![
                ("000000000002", FindingKind::MissingHere),
                ("000000000003", FindingKind::MissingHere),
                ("000000000004", FindingKind::AmountDiffers),
                ("000000000005", FindingKind::UnknownToIssuer),
                ("000000000006", FindingKind::UnknownToIssuer),
            ]
        );
        assert_eq!(report.matched, 2);
        assert_eq!(report.findings[0].action, ACTION_REVERSED_HERE);
        assert_eq!(report.findings[1].action, ACTION_MISSING);
    }

    /// An RRN the issuer's file counts twice against one sale here, and one the issuer counts
    /// as a credit against a sale here, are findings, not matches: a double charge, and a
    /// difference of twice the amount.
    #[test]
    fn a_duplicate_and_a_credit_against_a_sale_are_found() {
        let csv = "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n\
            000000000001,purchase,1000,approved,0,0,,123456,2026-11-23\n\
            000000000001,purchase,1000,approved,0,0,,123456,2026-11-23\n\
            000000000002,refund,2000,approved,0,0,,123457,2026-11-23\n\
            000000000003,purchase,3000,reversed,0,0,,123458,2026-11-23\n\
            000000000003,purchase,3000,approved,0,0,,123458,2026-11-23\n";
        let rows = parse_clearing_csv(csv).unwrap();
        let d = "20261123";
        let journal = vec![
            journal_row(
                "000000000001",
                TxnKind::Purchase,
                TxnState::Approved,
                1000,
                d,
            ),
            journal_row(
                "000000000002",
                TxnKind::Purchase,
                TxnState::Approved,
                2000,
                d,
            ),
            journal_row(
                "000000000003",
                TxnKind::Purchase,
                TxnState::Approved,
                3000,
                d,
            ),
        ];
        let report = reconcile("ICBC", d, &rows, Neighbours::default(), &journal);
        let found: Vec<(&str, FindingKind)> = report
            .findings
            .iter()
            .map(|f| (f.rrn.as_str(), f.kind))
            .collect();
        assert_eq!(
            found,
            vec![
                ("000000000001", FindingKind::DuplicateAtIssuer),
                ("000000000002", FindingKind::KindDiffers),
            ]
        );
        // The first copy of 1 and the counted row of 3 (its other row reversed) match.
        assert_eq!(report.matched, 2);
        assert_eq!(report.findings[0].action, ACTION_DUPLICATE);
        assert_eq!(report.findings[1].action, ACTION_KIND);
    }

    /// A sale of the hour between the 23:00 cut-over and the issuer's midnight is in the
    /// issuer's file of the other day: its amount is compared there too.
    #[test]
    fn a_sale_in_the_neighbouring_days_file_has_its_amount_compared() {
        let adjacent = parse_clearing_csv(
            "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n\
             000000000008,purchase,801,approved,0,0,,1,2026-11-22\n\
             000000000009,purchase,900,approved,0,0,,2,2026-11-22\n",
        )
        .unwrap();
        let d = "20261123";
        let journal = vec![
            journal_row(
                "000000000008",
                TxnKind::Purchase,
                TxnState::Approved,
                800,
                d,
            ),
            journal_row(
                "000000000009",
                TxnKind::Purchase,
                TxnState::Approved,
                900,
                d,
            ),
        ];
        let earlier = Neighbours {
            earlier: &adjacent,
            ..Neighbours::default()
        };
        let report = reconcile("ICBC", d, &[], earlier, &journal);
        assert_eq!(report.matched, 1);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let f = &report.findings[0];
        assert_eq!(
            (f.rrn.as_str(), f.kind),
            ("000000000008", FindingKind::AmountDiffers)
        );
        assert_eq!(
            (f.issuer_amount_fen, f.journal_amount_fen),
            (Some(801), Some(800))
        );
        assert_eq!(f.action, ACTION_AMOUNT);
    }

    /// An RRN the issuer counts in two days' files, the journal once (listed again in the next
    /// day's file under its own day): the later day's run reports the duplicate, the earlier
    /// day's matches it, so it is claimed back once.
    #[test]
    fn a_sale_counted_in_two_days_files_is_a_duplicate_on_the_later_day() {
        let header = "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n";
        let day_22 = parse_clearing_csv(&format!(
            "{header}000000000011,purchase,1100,approved,0,0,,1,2026-11-22\n"
        ))
        .unwrap();
        let day_23 = parse_clearing_csv(&format!(
            "{header}000000000011,purchase,1100,approved,0,0,,1,2026-11-22\n\
             000000000012,purchase,1200,approved,0,0,,2,2026-11-23\n"
        ))
        .unwrap();
        let journal = vec![
            journal_row(
                "000000000011",
                TxnKind::Purchase,
                TxnState::Approved,
                1100,
                "20261122",
            ),
            journal_row(
                "000000000012",
                TxnKind::Purchase,
                TxnState::Approved,
                1200,
                "20261123",
            ),
        ];
        let after_22 = Neighbours {
            later: &day_23,
            ..Neighbours::default()
        };
        let earlier = reconcile("ICBC", "20261122", &day_22, after_22, &journal);
        assert!(earlier.findings.is_empty(), "{:?}", earlier.findings);
        assert_eq!(earlier.matched, 1);
        let before_23 = Neighbours {
            earlier: &day_22,
            ..Neighbours::default()
        };
        let later = reconcile("ICBC", "20261123", &day_23, before_23, &journal);
        let found: Vec<(&str, FindingKind)> = later
            .findings
            .iter()
            .map(|f| (f.rrn.as_str(), f.kind))
            .collect();
        assert_eq!(found, [("000000000011", FindingKind::DuplicateAtIssuer)]);
        assert_eq!(later.findings[0].action, ACTION_DUPLICATE);
        assert_eq!(later.matched, 1);
    }

    #[test]
    fn a_clearing_file_with_a_byte_order_mark_reads_and_a_signed_amount_does_not() {
        let header = "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n";
        let row = "000000000001,purchase,1000,approved,0,0,,123456,2026-11-23\n";
        let rows = parse_clearing_csv(&format!("\u{feff}{header}{row}")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].amount_fen, 1_000);
        for signed in ["-1000", "+1000", ""] {
            let text = format!("{header}{}", row.replace(",1000,", &format!(",{signed},")));
            assert!(
                matches!(
                    parse_clearing_csv(&text),
                    Err(ReconcileError::BadRow { line: 2, .. })
                ),
                "{signed:?}"
            );
        }
    }

    /// A refund or void differs the other way from a sale: the advice follows the money.
    #[test]
    fn a_credits_difference_is_advised_as_a_credit() {
        let csv = "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day\n\
            000000000011,refund,300,approved,0,0,000000000001,,2026-11-23\n\
            000000000012,refund,400,approved,0,0,000000000001,,2026-11-23\n\
            000000000013,purchase,500,approved,0,0,,123461,2026-11-23\n\
            000000000014,purchase_void,700,reversed_unseen,0,0,000000000002,,2026-11-23\n";
        let rows = parse_clearing_csv(csv).unwrap();
        let d = "20261123";
        let journal = vec![
            // 11: a refund the journal does not have.
            journal_row("000000000012", TxnKind::Refund, TxnState::Reversed, 400, d),
            journal_row(
                "000000000013",
                TxnKind::Purchase,
                TxnState::TimedOut,
                500,
                d,
            ),
            journal_row(
                "000000000014",
                TxnKind::PurchaseVoid,
                TxnState::Approved,
                700,
                d,
            ),
        ];
        let report = reconcile("ICBC", d, &rows, Neighbours::default(), &journal);
        let found: Vec<(&str, FindingKind, &str)> = report
            .findings
            .iter()
            .map(|f| (f.rrn.as_str(), f.kind, f.action))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "000000000011",
                    FindingKind::MissingHere,
                    ACTION_CREDIT_MISSING
                ),
                (
                    "000000000012",
                    FindingKind::MissingHere,
                    ACTION_CREDIT_REVERSED_HERE
                ),
                (
                    "000000000013",
                    FindingKind::MissingHere,
                    ACTION_NOT_COUNTED_HERE
                ),
                (
                    "000000000014",
                    FindingKind::UnknownToIssuer,
                    ACTION_CREDIT_UNKNOWN
                ),
            ]
        );
    }
}
