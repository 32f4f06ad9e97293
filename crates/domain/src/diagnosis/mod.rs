//! The diagnosis knowledge base: for every response code, every failure that has no code, and
//! every payout failure — what happened, who must act, whether to retry, whether to contact the
//! issuer, what to tell the customer and what the merchant should do, in Chinese and English.

mod table;

use std::fmt;

use serde::{Serialize, Serializer};

pub use table::TABLE;

/// A text in both languages. Chinese first: it is what merchants read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Text {
    pub zh: &'static str,
    pub en: &'static str,
}

impl Text {
    pub const fn new(zh: &'static str, en: &'static str) -> Text {
        Text { zh, en }
    }

    pub const fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::Zh => self.zh,
            Lang::En => self.en,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

/// PROTOCOL.md's categories: A success · B failed, may retry · C failed, do not retry ·
/// D failed, operator must act · E system fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    A,
    B,
    C,
    D,
    E,
}

impl Category {
    pub const fn letter(self) -> char {
        match self {
            Category::A => 'A',
            Category::B => 'B',
            Category::C => 'C',
            Category::D => 'D',
            Category::E => 'E',
        }
    }

    pub const fn text(self) -> Text {
        match self {
            Category::A => Text::new("成功", "success"),
            Category::B => Text::new("失败，可以重试", "failed, may retry"),
            Category::C => Text::new("失败，原样重试无效", "failed, do not retry unchanged"),
            Category::D => Text::new("失败，需要人工处理", "failed, operator must act"),
            Category::E => Text::new("系统故障", "system fault"),
        }
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_char(self.letter())
    }
}

/// Who must do something for the payment to go through (or for the problem to be fixed).
///
/// `Operator` is the person at the terminal — the cashier (收银员/操作员, the operator number of
/// field 63); `Merchant` is the merchant as a business (owner, back office, its bank account);
/// `Acquirer` is whoever runs shoudan (the acquirer's operations and risk staff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhoActs {
    Nobody,
    Cardholder,
    Issuer,
    CardholderAndIssuer,
    Merchant,
    Operator,
    Terminal,
    Acquirer,
    Network,
}

impl WhoActs {
    pub const fn key(self) -> &'static str {
        match self {
            WhoActs::Nobody => "nobody",
            WhoActs::Cardholder => "cardholder",
            WhoActs::Issuer => "issuer",
            WhoActs::CardholderAndIssuer => "cardholder_and_issuer",
            WhoActs::Merchant => "merchant",
            WhoActs::Operator => "operator",
            WhoActs::Terminal => "terminal",
            WhoActs::Acquirer => "acquirer",
            WhoActs::Network => "network",
        }
    }

    pub const fn text(self) -> Text {
        match self {
            WhoActs::Nobody => Text::new("无需联系任何机构", "no one to contact"),
            WhoActs::Cardholder => Text::new("持卡人", "the cardholder"),
            WhoActs::Issuer => Text::new("发卡行", "the card issuer"),
            WhoActs::CardholderAndIssuer => {
                Text::new("持卡人与发卡行", "the cardholder with the card issuer")
            }
            WhoActs::Merchant => Text::new("商户", "the merchant"),
            WhoActs::Operator => {
                Text::new("收银员（终端操作员）", "the cashier (terminal operator)")
            }
            WhoActs::Terminal => {
                Text::new("终端（重新签到或设置）", "the terminal (sign in or setup)")
            }
            WhoActs::Acquirer => Text::new("收单机构", "the acquirer"),
            WhoActs::Network => Text::new("银联/通信网络", "the card network / communication link"),
        }
    }
}

/// What has to happen before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The terminal signs in again (new working keys, batch and clock from the host).
    SignIn,
    /// The reversal of the failed attempt has been answered, so no money is in doubt.
    Reversal,
    /// The cashier re-keys the amount.
    ReKeyAmount,
    /// The cashier corrects the original transaction's details (amount, reference).
    CorrectOriginal,
    /// The customer pays with another card (or another way).
    OtherCard,
    /// A smaller amount (the rest another way; never split to get round a limit).
    SmallerAmount,
    OtherCardOrSmallerAmount,
    /// The terminal uploads its batch.
    UploadBatch,
    /// The terminal is repaired or set up (clock, card reader, network).
    FixTerminal,
    /// The merchant fixes or replaces its settlement bank account.
    UpdateSettlementAccount,
    /// The merchant's account problem is cleared with its bank.
    ResolveWithBank,
}

impl Action {
    pub const fn key(self) -> &'static str {
        match self {
            Action::SignIn => "sign_in",
            Action::Reversal => "reversal",
            Action::ReKeyAmount => "re_key_amount",
            Action::CorrectOriginal => "correct_original",
            Action::OtherCard => "other_card",
            Action::SmallerAmount => "smaller_amount",
            Action::OtherCardOrSmallerAmount => "other_card_or_smaller_amount",
            Action::UploadBatch => "upload_batch",
            Action::FixTerminal => "fix_terminal",
            Action::UpdateSettlementAccount => "update_settlement_account",
            Action::ResolveWithBank => "resolve_with_bank",
        }
    }
}

/// Whether and when trying again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Nothing failed.
    NotNeeded,
    Now,
    /// One more try; a second failure means stop.
    Once,
    /// In a few minutes or hours, unchanged.
    Later,
    /// Not today.
    Tomorrow,
    AfterAction(Action),
    Never,
}

impl Retry {
    /// A stable machine key: `now`, `later`, `after_sign_in`, ...
    pub const fn key(self) -> &'static str {
        match self {
            Retry::NotNeeded => "not_needed",
            Retry::Now => "now",
            Retry::Once => "once",
            Retry::Later => "later",
            Retry::Tomorrow => "tomorrow",
            Retry::Never => "never",
            Retry::AfterAction(action) => match action {
                Action::SignIn => "after_sign_in",
                Action::Reversal => "after_reversal",
                Action::ReKeyAmount => "after_re_key_amount",
                Action::CorrectOriginal => "after_correct_original",
                Action::OtherCard => "after_other_card",
                Action::SmallerAmount => "after_smaller_amount",
                Action::OtherCardOrSmallerAmount => "after_other_card_or_smaller_amount",
                Action::UploadBatch => "after_upload_batch",
                Action::FixTerminal => "after_fix_terminal",
                Action::UpdateSettlementAccount => "after_update_settlement_account",
                Action::ResolveWithBank => "after_resolve_with_bank",
            },
        }
    }

    pub const fn text(self) -> Text {
        match self {
            Retry::NotNeeded => Text::new("不需要重试", "no retry needed"),
            Retry::Now => Text::new("可以马上重试", "retry now"),
            Retry::Once => Text::new(
                "可以再试一次，仍失败就停止",
                "one more try; stop if it fails again",
            ),
            Retry::Later => Text::new("稍后再试", "retry later"),
            Retry::Tomorrow => Text::new("今天不要再试，明天再试", "not today; retry tomorrow"),
            Retry::Never => Text::new("不要重试", "do not retry"),
            Retry::AfterAction(action) => match action {
                Action::SignIn => Text::new(
                    "终端重新签到后再试",
                    "retry after the terminal signs in again",
                ),
                Action::Reversal => Text::new(
                    "冲正完成后再试（先确认没有扣款）",
                    "retry after the reversal completes (check nothing was charged)",
                ),
                Action::ReKeyAmount => {
                    Text::new("重新输入金额后再试", "retry with the amount re-keyed")
                }
                Action::CorrectOriginal => Text::new(
                    "核对原交易信息后再试",
                    "retry with the original's details corrected",
                ),
                Action::OtherCard => Text::new(
                    "换一张卡或其他方式支付",
                    "use another card or payment method",
                ),
                Action::SmallerAmount => Text::new(
                    "降低金额后再试（不得拆单）",
                    "retry with a smaller amount (no splitting to dodge a limit)",
                ),
                Action::OtherCardOrSmallerAmount => {
                    Text::new("换卡或降低金额", "use another card or a smaller amount")
                }
                Action::UploadBatch => Text::new(
                    "终端上送批次后再结算",
                    "settle again after the batch upload",
                ),
                Action::FixTerminal => {
                    Text::new("修好终端后再试", "retry after fixing the terminal")
                }
                Action::UpdateSettlementAccount => Text::new(
                    "更正或更换结算账户后重新出款",
                    "pay out again after fixing or replacing the settlement account",
                ),
                Action::ResolveWithBank => Text::new(
                    "与开户行处理好账户问题后重新出款",
                    "pay out again once the account is sorted out with its bank",
                ),
            },
        }
    }
}

impl Serialize for Retry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.key())
    }
}

/// Whether contacting the card issuer (for payouts: the bank holding the settlement account)
/// helps, and when. Anything but `No` counts as "contact issuer: yes" with the condition given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactIssuer {
    No,
    Yes,
    /// Only if the same failure comes back.
    IfRepeated,
    /// Only if it lasts (minutes to hours).
    IfPersists,
    /// Only if the card is undamaged yet still refused.
    IfCardLooksFine,
    /// May help (e.g. to raise a limit) but is not needed.
    Optional,
}

impl ContactIssuer {
    pub const fn recommended(self) -> bool {
        !matches!(self, ContactIssuer::No)
    }
}

/// Failures of a card transaction that never got a response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The terminal got no answer in time; it sends a reversal.
    NoAnswer,
    /// An answer arrived but its MAC failed; the terminal treats it as failed and reverses.
    BadResponseMac,
    /// The terminal could not connect to the host at all.
    ConnectionRefused,
    /// The connection broke with the request in flight.
    ConnectionDropped,
    /// The terminal's clock is far from the host's.
    ClockSkew,
    /// The same terminal keeps falling back from chip to magstripe.
    RepeatedFallback,
    /// Settlement stays unbalanced after the batch upload.
    BatchUnbalanced,
    /// A financial request from a terminal that has not signed in.
    NotSignedIn,
    /// The merchant is not (or no longer) approved to accept cards.
    MerchantNotApproved,
    /// The terminal sent a merchant ID other than the one it is registered to.
    MerchantIdMismatch,
    /// Risk rule: the merchant does not accept this kind of card (debit / credit / foreign).
    CardNotAccepted,
    /// Risk rule: over the merchant's per-transaction or daily amount limit.
    MerchantLimit,
    /// Risk rule: one card tried (or declined) too often in a short time.
    CardVelocity,
    /// Risk rule: many small declined attempts on one terminal (card testing).
    CardTesting,
    /// Risk rule: wrong PINs on several different cards at one terminal.
    RepeatedWrongPin,
    /// Risk rule: the terminal is used from another place, or for another kind of business.
    UnusualMerchantPattern,
    /// The issuer refused a reversal: reversed here, the card may still show the charge.
    ReversalRefused,
    /// A void, refund or completion presented with another card than its original's (the
    /// host's 14: not sent to the issuer).
    NotOriginalCard,
    /// A refund over what is left of its original to refund (the host's 61).
    RefundOverOriginal,
    /// A void or refund the issuer did not answer in time: reversed, the original stands.
    ReturnNoAnswer,
    /// A balance inquiry the issuer did not answer: no money moved, nothing to reverse.
    InquiryNoAnswer,
    /// The host's line to the issuer was down: not sent (the host's 91).
    IssuerLinkDown,
    /// The issuer refused the reversal of a void or refund: reversed here, it may stand there
    /// (the customer may have been paid back).
    ReturnReversalRefused,
    /// The issuer declined a void or refund (the card closed, replaced, restricted...): the
    /// original stands and the customer has not been paid back; the code's own advice is for
    /// a sale ("use another card").
    ReturnDeclined,
    /// A terminal's reversal the host would not apply (its original from another day, of
    /// another amount, voided or refunded since): the original, if any, stands as it was.
    ReversalNotTaken,
}

impl FailureKind {
    pub const ALL: [FailureKind; 25] = [
        FailureKind::NoAnswer,
        FailureKind::BadResponseMac,
        FailureKind::ConnectionRefused,
        FailureKind::ConnectionDropped,
        FailureKind::ClockSkew,
        FailureKind::RepeatedFallback,
        FailureKind::BatchUnbalanced,
        FailureKind::NotSignedIn,
        FailureKind::MerchantNotApproved,
        FailureKind::MerchantIdMismatch,
        FailureKind::CardNotAccepted,
        FailureKind::MerchantLimit,
        FailureKind::CardVelocity,
        FailureKind::CardTesting,
        FailureKind::RepeatedWrongPin,
        FailureKind::UnusualMerchantPattern,
        FailureKind::ReversalRefused,
        FailureKind::NotOriginalCard,
        FailureKind::RefundOverOriginal,
        FailureKind::ReturnNoAnswer,
        FailureKind::InquiryNoAnswer,
        FailureKind::IssuerLinkDown,
        FailureKind::ReturnReversalRefused,
        FailureKind::ReturnDeclined,
        FailureKind::ReversalNotTaken,
    ];

    /// Stable kebab-case name, as the CLI accepts it (`shoudan explain no-answer`).
    pub const fn key(self) -> &'static str {
        match self {
            FailureKind::NoAnswer => "no-answer",
            FailureKind::BadResponseMac => "bad-response-mac",
            FailureKind::ConnectionRefused => "connection-refused",
            FailureKind::ConnectionDropped => "connection-dropped",
            FailureKind::ClockSkew => "clock-skew",
            FailureKind::RepeatedFallback => "repeated-fallback",
            FailureKind::BatchUnbalanced => "batch-unbalanced",
            FailureKind::NotSignedIn => "not-signed-in",
            FailureKind::MerchantNotApproved => "merchant-not-approved",
            FailureKind::MerchantIdMismatch => "merchant-id-mismatch",
            FailureKind::CardNotAccepted => "card-not-accepted",
            FailureKind::MerchantLimit => "merchant-limit",
            FailureKind::CardVelocity => "card-velocity",
            FailureKind::CardTesting => "card-testing",
            FailureKind::RepeatedWrongPin => "repeated-wrong-pin",
            FailureKind::UnusualMerchantPattern => "unusual-merchant-pattern",
            FailureKind::ReversalRefused => "reversal-refused",
            FailureKind::NotOriginalCard => "not-original-card",
            FailureKind::RefundOverOriginal => "refund-over-original",
            FailureKind::ReturnNoAnswer => "return-no-answer",
            FailureKind::InquiryNoAnswer => "inquiry-no-answer",
            FailureKind::IssuerLinkDown => "issuer-link-down",
            FailureKind::ReturnReversalRefused => "return-reversal-refused",
            FailureKind::ReturnDeclined => "return-declined",
            FailureKind::ReversalNotTaken => "reversal-not-taken",
        }
    }

    pub fn from_key(key: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// Why a payout to a merchant's settlement account failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutFailure {
    InvalidAccountNumber,
    HolderNameMismatch,
    AccountFrozen,
    /// Closed, cancelled, or the card bound to it reported lost.
    AccountClosedOrLost,
    /// Above what the account may receive (per transaction or per day).
    OverAccountLimit,
    BankSystemError,
    /// Accepted at first, returned by the bank days later (退票/退汇).
    ReturnedLater,
}

impl PayoutFailure {
    pub const ALL: [PayoutFailure; 7] = [
        PayoutFailure::InvalidAccountNumber,
        PayoutFailure::HolderNameMismatch,
        PayoutFailure::AccountFrozen,
        PayoutFailure::AccountClosedOrLost,
        PayoutFailure::OverAccountLimit,
        PayoutFailure::BankSystemError,
        PayoutFailure::ReturnedLater,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            PayoutFailure::InvalidAccountNumber => "payout-invalid-account",
            PayoutFailure::HolderNameMismatch => "payout-name-mismatch",
            PayoutFailure::AccountFrozen => "payout-account-frozen",
            PayoutFailure::AccountClosedOrLost => "payout-account-closed",
            PayoutFailure::OverAccountLimit => "payout-over-limit",
            PayoutFailure::BankSystemError => "payout-bank-error",
            PayoutFailure::ReturnedLater => "payout-returned",
        }
    }

    pub fn from_key(key: &str) -> Option<PayoutFailure> {
        PayoutFailure::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// What a diagnosis is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A response code (field 39) in its 2-character wire form.
    Code([u8; 2]),
    Failure(FailureKind),
    Payout(PayoutFailure),
    /// A response code that is not in the table.
    UnknownCode,
}

impl Subject {
    /// `51`, `no-answer`, `payout-frozen`, or `unknown`.
    pub fn key(&self) -> &str {
        match self {
            Subject::Code(code) => std::str::from_utf8(code).unwrap_or("??"),
            Subject::Failure(kind) => kind.key(),
            Subject::Payout(kind) => kind.key(),
            Subject::UnknownCode => "unknown",
        }
    }
}

/// Serialised as its key (`51`, `no-answer`, ...), the form the CLI and API accept back.
impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.key())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One entry of the knowledge base. Serialises with both languages, for APIs and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub subject: Subject,
    /// One line, as a terminal would display it, e.g. 51 "余额不足" / "Insufficient funds".
    pub title: Text,
    /// What happened, in plain words.
    pub meaning: Text,
    pub category: Category,
    pub who_acts: WhoActs,
    pub retry: Retry,
    pub contact_issuer: ContactIssuer,
    /// When and how to contact the issuer (or why not to).
    pub contact_when: Text,
    /// What the cashier says to the customer.
    pub customer_message: Text,
    /// What the merchant does, in order.
    pub merchant_steps: &'static [Text],
}

impl Diagnosis {
    /// The response code for code entries.
    pub fn code(&self) -> Option<&str> {
        match &self.subject {
            Subject::Code(code) => std::str::from_utf8(code).ok(),
            _ => None,
        }
    }

    pub fn is_known(&self) -> bool {
        self.subject != Subject::UnknownCode
    }

    /// Whether the issuer flagged the card (lost, stolen, fraud, pick up): what is said to
    /// the cardholder's side then names no reason, lest a card's thief learn it was reported.
    pub fn flags_the_card(&self) -> bool {
        self.customer_message == table::PICK_UP_CUSTOMER
    }

    /// The title and meaning to put before whoever may hold the card (an evidence package
    /// goes to an issuer's desk or to a cardholder): the entry's own, or for a flagged card
    /// a plain "declined by the card's bank" and the customer's words.
    pub fn as_shown_to_the_cardholder(&self) -> (Text, Text) {
        if self.flags_the_card() {
            (
                Text::new("发卡行拒绝", "Declined by the card's bank"),
                self.customer_message,
            )
        } else {
            (self.title, self.meaning)
        }
    }
}

/// What a declined request's event says after the issuer's code when that code speaks of the
/// acquirer's side of the issuer link (its keys, message format, MACs, sign-in or batch with
/// the issuer), not of the terminal or the card: the switch answers the terminal 96 and keeps
/// the issuer's code in the event, `"…: {code}, {ISSUER_LINK_NOTE} (…)"`.
pub const ISSUER_LINK_NOTE: &str =
    "a code about the acquirer's link to the issuer, not this terminal: answered 96";

/// The issuer's code in an event detail that carries [`ISSUER_LINK_NOTE`].
pub fn issuer_link_code(detail: &str) -> Option<&str> {
    let at = detail.find(ISSUER_LINK_NOTE)?;
    let before = detail.get(..at)?.strip_suffix(", ")?;
    before.get(before.len().checked_sub(2)?..)
}

/// The diagnosis of a response code (field 39, wire form). A code that is not in the table gets
/// [`UNKNOWN_CODE`], an honest "we don't know" with safe advice; [`lookup`] tells them apart.
pub fn diagnose(code: [u8; 2]) -> &'static Diagnosis {
    lookup(code).unwrap_or(&table::UNKNOWN_CODE)
}

/// As [`diagnose`], from text; anything but 2 bytes is unknown. Case matters: the wire form of
/// MAC failure is `A0`.
pub fn diagnose_str(code: &str) -> &'static Diagnosis {
    match <[u8; 2]>::try_from(code.as_bytes()) {
        Ok(code) => diagnose(code),
        Err(_) => &table::UNKNOWN_CODE,
    }
}

/// The table entry for a response code, `None` if the code is not in the table.
pub fn lookup(code: [u8; 2]) -> Option<&'static Diagnosis> {
    TABLE.iter().find(|d| d.subject == Subject::Code(code))
}

/// The diagnosis of a failure that has no response code.
pub fn diagnose_failure(kind: FailureKind) -> &'static Diagnosis {
    TABLE
        .iter()
        .find(|d| d.subject == Subject::Failure(kind))
        .unwrap_or(&table::UNKNOWN_CODE)
}

/// The diagnosis of a failed payout to a merchant's settlement account.
pub fn diagnose_payout(kind: PayoutFailure) -> &'static Diagnosis {
    TABLE
        .iter()
        .find(|d| d.subject == Subject::Payout(kind))
        .unwrap_or(&table::UNKNOWN_CODE)
}

/// The generic entry for codes not in the table.
pub fn unknown_code() -> &'static Diagnosis {
    &table::UNKNOWN_CODE
}
