//! The acquiring domain without IO: money, card numbers and terminal identifiers, card types,
//! civil dates, the issuer directory, and the diagnosis knowledge base that explains every
//! failure.
#![forbid(unsafe_code)]

pub mod card;
pub mod date;
pub mod diagnosis;
pub mod ids;
pub mod issuer;
pub mod money;
pub mod pan;

pub use card::{CardNetwork, CardType};
pub use diagnosis::{
    Category, ContactIssuer, Diagnosis, FailureKind, Lang, PayoutFailure, Retry, Subject, Text,
    WhoActs, diagnose, diagnose_failure, diagnose_payout, diagnose_str,
};
pub use ids::{AuthCode, BatchNo, IdError, Mcc, MerchantId, Rrn, Stan, TerminalId, is_code};
pub use issuer::{
    Bank, CardLookup, CsvFile, DirectoryError, IssuerContact, IssuerDirectory, IssuerMatch,
    RowProblem,
};
pub use money::{Money, MoneyError};
pub use pan::{
    MaskedPan, Pan, PanError, longest_run, luhn_check_digit, luhn_valid, mask_card_numbers,
};
