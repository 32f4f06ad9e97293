//! Settlement: clearing of the journal per merchant and clearing date with fee plans, the
//! double-entry ledger, bound settlement accounts, T+n payouts through a bank adapter, and
//! reconciliation against issuers' clearing files. No network IO: the store and the bank
//! adapter are passed in.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod clearing;
pub mod dates;
pub mod fees;
pub mod ledger;
pub mod payout;
pub mod reconcile;

pub use accounts::{
    AccountInput, BindError, BindOutcome, Sealer, bind_account, bind_account_checked,
    confirm_change, reject_change,
};
pub use clearing::{
    CardClassifier, Clearing, ClearingConfig, LINES_PER_COMMIT, MerchantClearing,
    PAUSE_BETWEEN_PARTS, SettleError, SettleReport, clear, settle_date, settle_date_and_recent,
    settle_date_and_recent_with, settle_date_with,
};
pub use fees::{CardClass, FeePlan, TermsError, set_terms, terms_of};
pub use ledger::{LedgerAudit, LedgerError, Posting, accounts as ledger_accounts, audit};
pub use payout::{
    PAYOUT_STUCK_AFTER_MS, PayoutBank, PayoutError, PayoutInstruction, PayoutRunReport, SimBank,
    SimBankMemory, SimBehaviour, is_stuck, run_payouts,
};
pub use reconcile::{
    FindingKind, IssuerClearingRow, ReconFinding, ReconReport, ReconcileError, parse_clearing_csv,
    reconcile,
};
