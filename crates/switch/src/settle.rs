//! Settlement (0500): the host's totals for the terminal's batch against the terminal's, and
//! the next batch number once it balances.

use std::sync::Arc;

use iso8583::{Frame, SettleResult, SettlementTotals, Totals};
use store::{Record, TxnKind, TxnState};

use crate::core::{Core, RC_APPROVED, RC_NOT_REGISTERED};
use crate::ledger::Answer;

impl Core {
    /// Debits are purchases and completions, credits voids and refunds (PROTOCOL.md), counting
    /// what the issuer approved and nobody reversed.
    fn host_totals(&self, tid: &str, batch_no: u32) -> Totals {
        let mut totals = Totals::default();
        for entry in self.ledger.batch(tid, batch_no) {
            let state = entry.live().state;
            if matches!(
                state,
                TxnState::InFlight
                    | TxnState::Declined
                    | TxnState::TimedOut
                    | TxnState::Failed
                    | TxnState::Reversed
            ) {
                continue;
            }
            let amount = u64::try_from(entry.amount_fen).unwrap_or(0);
            match entry.kind {
                TxnKind::Purchase | TxnKind::Completion => {
                    totals.debit_amount += amount;
                    totals.debit_count = totals.debit_count.saturating_add(1);
                }
                TxnKind::PurchaseVoid | TxnKind::CompletionVoid | TxnKind::Refund => {
                    totals.credit_amount += amount;
                    totals.credit_count = totals.credit_count.saturating_add(1);
                }
                TxnKind::BalanceInquiry
                | TxnKind::PreAuth
                | TxnKind::PreAuthVoid
                | TxnKind::Reversal => {}
            }
        }
        totals
    }

    pub(crate) async fn settle(self: &Arc<Self>, frame: &Frame<'_>) -> Option<Vec<u8>> {
        let request = &frame.message;
        let Some(terminal) = request.text(41).and_then(|t| self.terminal(t.trim_end())) else {
            return self.reply(frame, None, &Answer::code(RC_NOT_REGISTERED), None, |_| {
                Ok(())
            });
        };
        let batch_no = request
            .field60()
            .ok()
            .flatten()
            .and_then(|f| f.batch)
            .unwrap_or(terminal.batch_no);
        let theirs = request
            .digits(48)
            .and_then(|d| SettlementTotals::parse(d).ok())
            .unwrap_or_default();
        let mut ours = SettlementTotals {
            domestic: self.host_totals(&terminal.tid, batch_no),
            foreign: Totals::default(),
        };
        let same = |a: &Totals, b: &Totals| {
            a.debit_amount == b.debit_amount
                && a.debit_count == b.debit_count
                && a.credit_amount == b.credit_amount
                && a.credit_count == b.credit_count
        };
        let balanced =
            same(&ours.domestic, &theirs.domestic) && same(&ours.foreign, &theirs.foreign);
        let result = if balanced {
            SettleResult::BALANCED
        } else {
            SettleResult::UNBALANCED
        };
        ours.domestic.result = result;
        ours.foreign.result = result;
        // The terminal starts its next batch after settling either way.
        let next = batch_no % 999_999 + 1;
        let record = Record::Batch {
            tid: terminal.tid.clone(),
            batch_no: next,
        };
        let mut updated = (*terminal).clone();
        updated.batch_no = next;
        if self.commit_terminal(record, updated).await.is_err() {
            return self.system_error(frame);
        }
        tracing::info!(tid = %terminal.tid, batch_no, balanced, "settled");
        self.reply(frame, None, &Answer::code(RC_APPROVED), None, |out| {
            out.set_composed(&ours)?;
            Ok(())
        })
    }
}
