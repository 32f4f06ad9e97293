//! The issuer's daily clearing file: one CSV row per approved money-moving transaction with its
//! state at the time of writing, for reconciliation with the acquirer's clearing.

use std::io::{self, Write};

use crate::model::{TxnKind, TxnRecord};

/// Header line of the clearing file; reconciliation reads columns by these names.
pub const CLEARING_HEADER: &str =
    "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day";

/// Writes `records` (approved ones; balance inquiries move no money and are left out) and
/// returns the number of rows written.
pub fn write_csv(records: &[TxnRecord], out: &mut dyn Write) -> io::Result<usize> {
    writeln!(out, "{CLEARING_HEADER}")?;
    let mut rows = 0;
    for r in records
        .iter()
        .filter(|r| r.code.is_approved() && r.kind != TxnKind::BalanceInquiry)
    {
        // Every field is digits, a fixed keyword or an RRN (letters and digits): no quoting.
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            r.rrn,
            r.kind,
            r.amount,
            r.state.as_str(),
            r.refunded,
            r.captured,
            r.original.as_ref().map(|o| o.as_str()).unwrap_or(""),
            r.auth_code.as_deref().unwrap_or(""),
            r.day,
        )?;
        rows += 1;
    }
    Ok(rows)
}
