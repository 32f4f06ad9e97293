//! Rows and write records of settlement: terminal batch settlements and uploads, clearing lines,
//! the double-entry ledger, settlement terms, bound settlement accounts, payouts and their events.

use std::fmt;

use crate::error::StoreError;
use crate::model::column_enum;

column_enum!(
    /// How a transaction in a terminal's batch upload differs from the journal.
    BatchDiffKind {
        /// The terminal has it; the journal has no counted transaction with that trace.
        MissingHere => "missing_here",
        /// The journal counts it; the terminal did not upload it.
        MissingAtTerminal => "missing_at_terminal",
        AmountDiffers => "amount_differs",
    }
);

column_enum!(
    /// A settlement account: a bank account (number + bank) or a debit card.
    AccountKind {
        Card => "card",
        Bank => "bank",
    }
);

column_enum!(
    /// A bound-account change: in force, waiting for an operator (maker-checker), or refused.
    ChangeState {
        Active => "active",
        PendingConfirmation => "pending_confirmation",
        Rejected => "rejected",
        Superseded => "superseded",
    }
);

column_enum!(
    /// Where a payout is. `Pending` is sent (or resent after a transient failure) when due;
    /// `Held` waits for a confirmed re-binding (a failure, or a payout the bank returned days
    /// after it was sent: `payout-returned`); `Sent` left the bank.
    PayoutState {
        Pending => "pending",
        Sent => "sent",
        Held => "held",
    }
);

/// A terminal's 0500: both sides' field 48 totals (62 digits each) and the result digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettlementRow {
    pub tid: String,
    pub batch_no: u32,
    pub settled_at_ms: i64,
    /// 1 balanced, 2 unbalanced, 3 error (PROTOCOL.md).
    pub result: u8,
    pub host_totals: String,
    pub terminal_totals: String,
    /// Set when the batch upload's end message arrived and the differences were stored.
    pub upload_done_at_ms: Option<i64>,
    /// The batch's rows are those received after this: the settlement that closed an earlier
    /// batch under the same number (a terminal replaced or reinstalled numbers its batches
    /// from 1 again). `None`: every row under the number.
    pub opened_after_ms: Option<i64>,
}

/// One transaction of a terminal's batch upload (0320). Only the last four PAN digits are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchUploadRow {
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
    /// 0 domestic, 1 foreign.
    pub card_org: u8,
    pub pan_last4: String,
    pub amount_fen: i64,
    pub received_at_ms: i64,
}

/// One difference between a terminal's upload and the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchDiffRow {
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
    pub kind: BatchDiffKind,
    pub txn_id: Option<i64>,
    pub host_amount_fen: Option<i64>,
    pub terminal_amount_fen: Option<i64>,
    /// Masked PAN from the journal, else `******` + the uploaded last four.
    pub pan_masked: String,
}

/// One cleared amount of one transaction. A transaction that changes after it was cleared (a
/// late reversal) gets a further line with the difference: lines are never updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearingLineRow {
    pub txn_id: i64,
    pub seq: u32,
    pub mid: String,
    pub clearing_date: String,
    pub kind: crate::TxnKind,
    /// `debit`, `credit`, `foreign` or `qr`: the fee class the card fell in.
    pub card_class: String,
    pub issuer: String,
    /// Signed: captures positive, voids and refunds negative.
    pub amount_fen: i64,
    /// Signed fee charged to the merchant (a void gives the capture's fee back).
    pub fee_fen: i64,
    pub run_at_ms: i64,
}

/// A merchant's clearing lines of one clearing date, summed: what its settlement page shows
/// without reading the lines. Rewritten by every settle run of the date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearingTotalRow {
    pub clearing_date: String,
    pub mid: String,
    pub lines: u64,
    pub gross_fen: i64,
    pub fee_fen: i64,
}

/// One `shoudan settle` pass over a clearing date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleRunRow {
    pub clearing_date: String,
    pub run_no: u32,
    pub at_ms: i64,
    pub lines: u64,
    pub gross_fen: i64,
    pub fee_fen: i64,
    pub postings: u64,
    /// On the run of the date a settle run was asked for, written once the dates it cleared
    /// again are done: the time up to which it read which dates' transactions had changed.
    /// The next run reads from there. `None` on the dates cleared again, and on runs made
    /// before migration 20.
    pub events_through_ms: Option<i64>,
}

/// One leg of a posting: positive debits, negative credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegRow {
    pub account: String,
    pub amount_fen: i64,
}

/// An immutable ledger posting whose legs sum to zero (checked again when written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostingRow {
    pub id: i64,
    pub at_ms: i64,
    /// The business day the amounts belong to (`YYYYMMDD`): payouts take what is due by then.
    pub value_date: String,
    pub kind: String,
    /// What it is about: `clear:20261123:MID`, a payout key, ...
    pub reference: String,
    pub legs: Vec<LegRow>,
}

/// A merchant's fee plan (rates in hundredths of a percent, i.e. basis points) and payout delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementTermsRow {
    pub mid: String,
    pub debit_bp: i64,
    pub debit_cap_fen: Option<i64>,
    pub credit_bp: i64,
    pub credit_cap_fen: Option<i64>,
    pub foreign_bp: i64,
    pub qr_bp: i64,
    /// T+n: funds cleared on day D are paid out on D + n.
    pub payout_delay_days: u32,
    pub updated_at_ms: i64,
}

/// The account a merchant is paid to. The number is sealed; only the masked form is readable.
#[derive(Clone, PartialEq, Eq)]
pub struct BoundAccountRow {
    pub mid: String,
    pub kind: AccountKind,
    pub number_sealed: Vec<u8>,
    pub number_masked: String,
    pub holder_name: String,
    pub bank_code: String,
    /// Incremented by every change in force, so a held payout knows a re-binding happened.
    pub version: u32,
    /// Set by a permanent payout failure; cleared by a confirmed re-binding.
    pub needs_rebind: bool,
    pub updated_at_ms: i64,
}

impl fmt::Debug for BoundAccountRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundAccountRow")
            .field("mid", &self.mid)
            .field("kind", &self.kind)
            .field("number", &self.number_masked)
            .field("bank_code", &self.bank_code)
            .field("version", &self.version)
            .field("needs_rebind", &self.needs_rebind)
            .finish_non_exhaustive()
    }
}

/// A requested change of bound account, with who asked and who confirmed.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountChangeRow {
    pub id: i64,
    pub mid: String,
    pub kind: AccountKind,
    pub number_sealed: Vec<u8>,
    pub number_masked: String,
    pub holder_name: String,
    pub bank_code: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub state: ChangeState,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
    /// Why it needed confirmation (the payout failure), or why it was refused.
    pub note: String,
}

impl fmt::Debug for AccountChangeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountChangeRow")
            .field("id", &self.id)
            .field("mid", &self.mid)
            .field("number", &self.number_masked)
            .field("state", &self.state)
            .field("requested_by", &self.requested_by)
            .field("decided_by", &self.decided_by)
            .finish_non_exhaustive()
    }
}

/// One payout per merchant and payout day; `key` is its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutRow {
    /// `MID:YYYYMMDD` (payout day).
    pub key: String,
    pub mid: String,
    pub payout_date: String,
    /// Funds with a value date up to this day are in it.
    pub cutoff_date: String,
    pub amount_fen: i64,
    pub state: PayoutState,
    /// Bank attempts so far. The bank reference is `key#v<account version>`
    /// (`settlement::payout`).
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The bound account version the payout was (last) sent to.
    pub account_version: u32,
    pub account_masked: String,
    pub bank_reference: Option<String>,
    /// The account `bank_reference` was made for, fixed (with the reference) before the bank is
    /// first asked to pay it: every retry of the reference sends the same instruction, whatever
    /// was bound since. `None` before the first attempt, and again once a held payout is
    /// released to a newly bound account (which gets a reference of its own).
    pub sent_to: Option<SentAccount>,
    /// `domain::PayoutFailure::key()` of the last failure.
    pub failure: Option<String>,
    /// When the bank was first asked to pay `bank_reference` (set with it): how long a payout
    /// retried after bank system errors has been waiting for its money, which `created_at_ms`
    /// does not say (a payout may be held or withheld for days before it is first sent).
    /// `None` before the first attempt, and again once a held payout is released to a newly
    /// bound account.
    pub first_attempt_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The account a payout's bank reference pays, as it was bound when the reference was made.
#[derive(Clone, PartialEq, Eq)]
pub struct SentAccount {
    /// The account number, sealed as the bound account's is.
    pub number_sealed: Vec<u8>,
    pub holder_name: String,
    pub bank_code: String,
}

impl fmt::Debug for SentAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentAccount")
            .field("bank_code", &self.bank_code)
            .finish_non_exhaustive()
    }
}

/// Something that happened to a payout, for the notifier to tail by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutEventRow {
    pub id: i64,
    pub at_ms: i64,
    pub mid: String,
    pub payout_key: String,
    /// `created`, `sending` (its reference fixed, before the bank is asked), `sent`, `retry`,
    /// `failed`, `held`, `returned`, `released`.
    pub kind: String,
    pub failure: Option<String>,
    pub detail: String,
}

/// The settlement area's writes.
#[derive(Clone, Debug)]
pub enum SettlementRecord {
    BatchSettled(BatchSettlementRow),
    /// A batch number opened again (a terminal replaced or reinstalled numbers its batches
    /// from 1 again), written with the new batch's settlement: the earlier batch's upload
    /// records, differences and upload end under the number go, as its settlement row is
    /// written over. Left, they were shown against the new batch (a slip to check that is not
    /// in it, a balanced batch with differences), and its upload end would compare them too.
    BatchReopened {
        tid: String,
        batch_no: u32,
    },
    BatchUpload(BatchUploadRow),
    /// The end of a batch upload: its differences, replacing none (written once).
    BatchDifferences {
        tid: String,
        batch_no: u32,
        at_ms: i64,
        rows: Vec<BatchDiffRow>,
    },
    ClearingLines(Vec<ClearingLineRow>),
    /// Inserted or replaced by (clearing date, merchant).
    ClearingTotals(Vec<ClearingTotalRow>),
    SettleRun(SettleRunRow),
    /// Postings, each checked to balance before it is written.
    Postings(Vec<PostingRow>),
    Terms(SettlementTermsRow),
    /// A merchant's first account: fails if the merchant has one (two first bindings at once:
    /// the first stands, the second is told to try again).
    BoundAccount(BoundAccountRow),
    /// A merchant's new account in place of the one at `expected_version` with
    /// `expected_needs_rebind`: fails (and with it the submission) if the account changed
    /// since it was read, so a re-binding cannot slip past a flag raised meanwhile.
    ReplaceBoundAccount {
        row: BoundAccountRow,
        expected_version: u32,
        expected_needs_rebind: bool,
    },
    /// Flags account `version` of `mid` for re-binding after a payout to it failed; nothing if
    /// the merchant has bound another account since.
    FlagBoundAccount {
        mid: String,
        version: u32,
        at_ms: i64,
    },
    /// Inserted or updated by id (a pending change is later confirmed or rejected).
    AccountChange(AccountChangeRow),
    /// A change waiting for an operator decided (confirmed, rejected or superseded): written
    /// only while it is still waiting, else the whole commit fails, so that a confirmation
    /// and a newer change that supersedes it cannot both stand.
    DecideChange(AccountChangeRow),
    /// Inserted or replaced by key (imports, repairs).
    Payout(PayoutRow),
    /// A new payout: fails (and with it the whole submission) if its key exists, so two payout
    /// runs at once cannot both create it and post its money twice.
    NewPayout(PayoutRow),
    /// A payout's next state (and amount: a held payout released is netted against what its
    /// merchant has come to owe), only if it is still in `expected_state` after
    /// `expected_attempts` attempts to account version `expected_account_version` (compare
    /// and set): a concurrent run that got there first makes this fail. The version is there
    /// because a release starts the attempts afresh: a payout held, then released to a
    /// re-bound account, is pending with no attempts again, and a run that read it before the
    /// release must not send it as it read it (its old amount, to the old account).
    PayoutTransition {
        expected_state: PayoutState,
        expected_attempts: u32,
        expected_account_version: u32,
        row: PayoutRow,
    },
    PayoutEvent(PayoutEventRow),
    /// The bank reported payment `reference` returned on `reported_on` (kept once).
    PayoutReturned {
        reference: String,
        reported_on: String,
    },
    /// A reported return was acted on.
    PayoutReturnHandled {
        reference: String,
        at_ms: i64,
    },
    /// Fails (and with it the whole submission) if `account`, one of merchant `mid`'s, stands
    /// above `max_fen` with what the submission wrote before this record: in all, and counted
    /// up to each value date from `from_date` on. A payout may take a merchant's payable to
    /// zero, never past it, however many runs compute one at once: two runs for different
    /// cutoffs that read the same money due cannot both pay it, even when sales not yet due (a
    /// later value date) keep the whole balance below zero. The merchant's row is locked
    /// first, so on PostgreSQL a second node's check waits for the first's commit and then
    /// counts it.
    BalanceAtMost {
        mid: String,
        account: String,
        max_fen: i64,
        from_date: Option<String>,
    },
    /// Fails (and with it the whole submission) if `account`, one of merchant `mid`'s, stands
    /// below `min_fen` in all with what the submission wrote before this record. What a payout
    /// nets against the merchant's debt takes that debt to zero, never past it: two runs that
    /// read the same debt while netting two payouts cannot both take it. The merchant's row is
    /// locked first, as for `BalanceAtMost`.
    BalanceAtLeast {
        mid: String,
        account: String,
        min_fen: i64,
    },
}
