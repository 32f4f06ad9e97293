//! The issuer's vocabulary: card numbers, RRNs, response codes, transaction kinds, card states
//! and limits, the typed requests the decision logic takes and the records the ledger keeps.

use std::fmt;
use std::sync::Arc;

pub use domain::Pan;
pub use paycrypto::{EncryptedPinBlock, PinVerificationValue};

use crate::time::{Date, YearMonth};

/// Minor units (fen) of CNY. Amounts are never negative; balances may be, see `Account`.
pub type Fen = u64;

/// Retrieval reference number (field 37): 12 characters the switch assigns per transaction.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rrn(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an RRN is 12 letters or digits")]
pub struct RrnError;

impl Rrn {
    pub const LEN: usize = 12;

    pub fn parse(text: &str) -> Result<Self, RrnError> {
        if text.len() == Self::LEN && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(RrnError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Rrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Rrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The field 39 codes this issuer answers (PROTOCOL.md, "Response codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    Approved,
    ReferToIssuer,
    PickUp,
    DoNotHonour,
    PickUpSpecial,
    InvalidTransaction,
    InvalidAmount,
    InvalidCard,
    NotActivated,
    OriginalNotFound,
    FormatError,
    Lost,
    Stolen,
    InsufficientFunds,
    Expired,
    WrongPin,
    NotAllowedForCard,
    AmountLimit,
    Restricted,
    OriginalAmountIncorrect,
    FrequencyLimit,
    PinTriesExceeded,
    IssuerUnavailable,
    Duplicate,
    SystemError,
    PinFormatError,
}

impl ResponseCode {
    pub const ALL: [ResponseCode; 26] = [
        Self::Approved,
        Self::ReferToIssuer,
        Self::PickUp,
        Self::DoNotHonour,
        Self::PickUpSpecial,
        Self::InvalidTransaction,
        Self::InvalidAmount,
        Self::InvalidCard,
        Self::NotActivated,
        Self::OriginalNotFound,
        Self::FormatError,
        Self::Lost,
        Self::Stolen,
        Self::InsufficientFunds,
        Self::Expired,
        Self::WrongPin,
        Self::NotAllowedForCard,
        Self::AmountLimit,
        Self::Restricted,
        Self::OriginalAmountIncorrect,
        Self::FrequencyLimit,
        Self::PinTriesExceeded,
        Self::IssuerUnavailable,
        Self::Duplicate,
        Self::SystemError,
        Self::PinFormatError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "00",
            Self::ReferToIssuer => "01",
            Self::PickUp => "04",
            Self::DoNotHonour => "05",
            Self::PickUpSpecial => "07",
            Self::InvalidTransaction => "12",
            Self::InvalidAmount => "13",
            Self::InvalidCard => "14",
            Self::NotActivated => "21",
            Self::OriginalNotFound => "25",
            Self::FormatError => "30",
            Self::Lost => "41",
            Self::Stolen => "43",
            Self::InsufficientFunds => "51",
            Self::Expired => "54",
            Self::WrongPin => "55",
            Self::NotAllowedForCard => "57",
            Self::AmountLimit => "61",
            Self::Restricted => "62",
            Self::OriginalAmountIncorrect => "64",
            Self::FrequencyLimit => "65",
            Self::PinTriesExceeded => "75",
            Self::IssuerUnavailable => "91",
            Self::Duplicate => "94",
            Self::SystemError => "96",
            Self::PinFormatError => "99",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    pub fn is_approved(self) -> bool {
        self == Self::Approved
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The financial transactions of PROTOCOL.md, as the issuer sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnKind {
    BalanceInquiry,
    Purchase,
    PurchaseVoid,
    Refund,
    PreAuth,
    PreAuthVoid,
    Completion,
    CompletionVoid,
}

impl TxnKind {
    pub const ALL: [TxnKind; 8] = [
        Self::BalanceInquiry,
        Self::Purchase,
        Self::PurchaseVoid,
        Self::Refund,
        Self::PreAuth,
        Self::PreAuthVoid,
        Self::Completion,
        Self::CompletionVoid,
    ];

    /// Identifies a request by MTI, the first two digits of field 3, field 25 and 60.1.
    pub fn classify(
        mti: &str,
        processing: &str,
        condition: &str,
        message_type: &str,
    ) -> Option<Self> {
        let proc2 = processing.get(..2)?;
        let kind = match (mti, proc2, condition, message_type) {
            ("0200", "31", "00", "01") => Self::BalanceInquiry,
            ("0200", "00", "00", "22") => Self::Purchase,
            ("0200", "20", "00", "23") => Self::PurchaseVoid,
            ("0220", "20", "00", "25") => Self::Refund,
            ("0100", "03", "06", "10") => Self::PreAuth,
            ("0100", "20", "06", "11") => Self::PreAuthVoid,
            ("0200", "00", "06", "20") => Self::Completion,
            ("0200", "20", "06", "21") => Self::CompletionVoid,
            _ => return None,
        };
        Some(kind)
    }

    /// (MTI, field 3, field 25, 60.1) of a request of this kind.
    pub fn wire(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::BalanceInquiry => ("0200", "310000", "00", "01"),
            Self::Purchase => ("0200", "000000", "00", "22"),
            Self::PurchaseVoid => ("0200", "200000", "00", "23"),
            Self::Refund => ("0220", "200000", "00", "25"),
            Self::PreAuth => ("0100", "030000", "06", "10"),
            Self::PreAuthVoid => ("0100", "200000", "06", "11"),
            Self::Completion => ("0200", "000000", "06", "20"),
            Self::CompletionVoid => ("0200", "200000", "06", "21"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BalanceInquiry => "balance_inquiry",
            Self::Purchase => "purchase",
            Self::PurchaseVoid => "purchase_void",
            Self::Refund => "refund",
            Self::PreAuth => "pre_auth",
            Self::PreAuthVoid => "pre_auth_void",
            Self::Completion => "completion",
            Self::CompletionVoid => "completion_void",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The kind of original a linked transaction refers to through field 61.
    pub fn linked_original(self) -> Option<&'static [TxnKind]> {
        match self {
            Self::PurchaseVoid => Some(&[Self::Purchase]),
            Self::Refund => Some(&[Self::Purchase, Self::Completion]),
            Self::PreAuthVoid | Self::Completion => Some(&[Self::PreAuth]),
            Self::CompletionVoid => Some(&[Self::Completion]),
            Self::BalanceInquiry | Self::Purchase | Self::PreAuth => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::BalanceInquiry => 1,
            Self::Purchase => 1 << 1,
            Self::PurchaseVoid => 1 << 2,
            Self::Refund => 1 << 3,
            Self::PreAuth => 1 << 4,
            Self::PreAuthVoid => 1 << 5,
            Self::Completion => 1 << 6,
            Self::CompletionVoid => 1 << 7,
        }
    }
}

impl fmt::Display for TxnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of transaction kinds, for the card-not-allowed rules (57).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindSet(u8);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);

    pub fn of(kinds: &[TxnKind]) -> Self {
        Self(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    pub fn contains(self, kind: TxnKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn with(self, kind: TxnKind) -> Self {
        Self(self.0 | kind.bit())
    }
}

/// What the issuer knows about the card itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardStatus {
    Active,
    Expired,
    Lost,
    Stolen,
    Frozen,
    NotActivated,
    Restricted,
    /// Retain the card (04).
    PickUp,
    /// Retain the card, special conditions such as suspected fraud (07).
    PickUpSpecial,
}

impl CardStatus {
    pub const ALL: [CardStatus; 9] = [
        Self::Active,
        Self::Expired,
        Self::Lost,
        Self::Stolen,
        Self::Frozen,
        Self::NotActivated,
        Self::Restricted,
        Self::PickUp,
        Self::PickUpSpecial,
    ];

    /// The decline a debit on a card in this state gets; `None` for an active card.
    pub fn decline(self) -> Option<ResponseCode> {
        match self {
            Self::Active => None,
            Self::Expired => Some(ResponseCode::Expired),
            Self::Lost => Some(ResponseCode::Lost),
            Self::Stolen => Some(ResponseCode::Stolen),
            Self::Frozen => Some(ResponseCode::DoNotHonour),
            Self::NotActivated => Some(ResponseCode::NotActivated),
            Self::Restricted => Some(ResponseCode::Restricted),
            Self::PickUp => Some(ResponseCode::PickUp),
            Self::PickUpSpecial => Some(ResponseCode::PickUpSpecial),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Lost => "lost",
            Self::Stolen => "stolen",
            Self::Frozen => "frozen",
            Self::NotActivated => "not_activated",
            Self::Restricted => "restricted",
            Self::PickUp => "pick_up",
            Self::PickUpSpecial => "pick_up_special",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Amount and frequency limits; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_txn_max: Option<Fen>,
    pub daily_amount_max: Option<Fen>,
    pub daily_count_max: Option<u32>,
}

/// Issuer rules for one card beyond its status and limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CardRules {
    /// Transactions this card may not make (57).
    pub not_allowed: KindSet,
    /// Debits without a PIN are declined (55): debit cards in China require one.
    pub pin_required: bool,
    /// Debits above this amount are referred to the issuer (01), as for a voice referral.
    pub refer_above: Option<Fen>,
}

/// Everything the issuer needs to open an account for a card.
#[derive(Clone, Debug)]
pub struct AccountSpec {
    /// Stable name of the account in the ledger (PANs are not stored there).
    pub reference: String,
    pub pan: Pan,
    pub expiry: YearMonth,
    pub status: CardStatus,
    pub pin: PinVerificationValue,
    /// Wrong PINs already entered today; at `pin_tries_max` the card is PIN-locked.
    pub pin_tries_used: u8,
    /// Opening balance (for credit cards, the open-to-buy).
    pub balance: i64,
    pub limits: Limits,
    pub rules: CardRules,
}

/// Field 61 of a linked transaction: the original's RRN and the date it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalRef {
    pub rrn: Rrn,
    /// MMDD.
    pub date: String,
}

/// An authorisation request (0100, 0200, 0220) in typed form.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub kind: TxnKind,
    pub pan: Pan,
    /// Field 4; zero for a balance inquiry.
    pub amount: Fen,
    /// Field 11, the switch's host trace number.
    pub trace: u32,
    pub rrn: Rrn,
    /// Field 13 (MMDD), the switch's date of the request.
    pub date: Option<String>,
    /// Field 14 or the expiry from track 2.
    pub expiry: Option<YearMonth>,
    pub pin_block: Option<EncryptedPinBlock>,
    /// Field 61 for voids, refunds and completions.
    pub original: Option<OriginalRef>,
}

/// A reversal (0400) in typed form: the original's identifying fields and the reason.
#[derive(Clone, Debug)]
pub struct ReversalRequest {
    pub kind: TxnKind,
    pub pan: Pan,
    pub amount: Fen,
    pub trace: u32,
    pub rrn: Rrn,
    /// Field 39 of the reversal: 98 timeout, 06 or 96 could not complete.
    pub reason: String,
}

/// What the issuer answers, before it becomes a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: ResponseCode,
    /// Field 38, on approval.
    pub auth_code: Option<String>,
    /// Available balance for field 54, on an approved balance inquiry.
    pub balance: Option<i64>,
    /// Field 15: the issuer's business day.
    pub settlement_date: Date,
}

/// Where a transaction stands at the issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Declined,
    Approved,
    Voided,
    /// A pre-authorisation captured by a completion.
    Completed,
    Reversed,
    /// A reversal came for an RRN the issuer had not seen: the original, should it arrive late,
    /// is refused so that nothing the switch gave up on is ever debited.
    ReversedUnseen,
}

impl TxnState {
    pub const ALL: [TxnState; 6] = [
        Self::Declined,
        Self::Approved,
        Self::Voided,
        Self::Completed,
        Self::Reversed,
        Self::ReversedUnseen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::Approved => "approved",
            Self::Voided => "voided",
            Self::Completed => "completed",
            Self::Reversed => "reversed",
            Self::ReversedUnseen => "reversed_unseen",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One transaction as the issuer keeps it, keyed by RRN: what `shoudan audit` compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    pub rrn: Rrn,
    pub trace: u32,
    pub kind: TxnKind,
    /// Account reference; `None` when the PAN was unknown.
    pub account: Option<Arc<str>>,
    pub pan_masked: String,
    pub amount: Fen,
    pub code: ResponseCode,
    pub auth_code: Option<String>,
    /// The issuer's business day when it was authorised.
    pub day: Date,
    /// Field 13 of the request (MMDD), matched against field 61 of linked transactions.
    pub request_date: Option<String>,
    pub original: Option<Rrn>,
    pub state: TxnState,
    /// Total refunded against this purchase or completion.
    pub refunded: Fen,
    /// Amount a completion captured from this pre-authorisation.
    pub captured: Fen,
    pub updated_ms: i64,
}

/// One movement on an account, with the balance and holds it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub seq: u64,
    pub rrn: Rrn,
    pub account: Arc<str>,
    pub kind: TxnKind,
    /// True when this posting undoes `kind` because of a reversal.
    pub reversal: bool,
    /// Signed change to the balance (debits negative).
    pub amount: i64,
    /// Signed change to the holds.
    pub hold_delta: i64,
    pub balance_after: i64,
    pub holds_after: i64,
    pub day: Date,
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in ResponseCode::ALL {
            assert_eq!(ResponseCode::parse(code.as_str()), Some(code));
        }
        for kind in TxnKind::ALL {
            assert_eq!(TxnKind::parse(kind.as_str()), Some(kind));
            let (mti, proc, cond, mt) = kind.wire();
            assert_eq!(TxnKind::classify(mti, proc, cond, mt), Some(kind));
        }
        assert_eq!(TxnKind::classify("0200", "000000", "00", "99"), None);
        for s in TxnState::ALL {
            assert_eq!(TxnState::parse(s.as_str()), Some(s));
        }
        for s in CardStatus::ALL {
            assert_eq!(CardStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn rrn_shape() {
        assert!(Rrn::parse("000000000001").is_ok());
        assert!(Rrn::parse("00000000001").is_err());
        assert!(Rrn::parse("00000000000 ").is_err());
    }
}
