//! A simulated card issuer host: accounts, card states, limits, PIN checks, its own ledger and
//! faults on demand, answering the switch over the issuer link of docs/issuer-link.md.

pub mod book;
pub mod clearing;
pub mod fault;
pub mod fixtures;
pub mod issuer;
pub mod ledger;
pub mod model;
pub mod pin;
pub mod server;
pub mod time;
pub mod wire;

pub use book::{BookConfig, PinCheck, PinVerifier};
pub use fault::{FaultHandle, FaultStats};
pub use fixtures::{
    DemoCard, DemoError, FixtureError, demo_accounts, demo_cards, demo_cards_with, demo_issuer,
};
pub use issuer::{Issuer, IssuerConfig, IssuerError, MaintenanceWindow};
pub use ledger::{LedgerError, LedgerLocation};
pub use model::{
    AccountSpec, AuthRequest, CardRules, CardStatus, EncryptedPinBlock, Fen, KindSet, Limits,
    OriginalRef, Pan, PinVerificationValue, Posting, Reply, ResponseCode, ReversalRequest, Rrn,
    TxnKind, TxnRecord, TxnState,
};
pub use pin::HsmPinVerifier;
pub use server::{IssuerSim, ServerHandle};
pub use time::{Clock, Date, LocalTime, ManualClock, SystemClock, YearMonth};
