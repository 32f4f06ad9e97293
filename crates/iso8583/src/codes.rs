//! Open wire enums: MTI, processing code, response code. Named constants for the known values;
//! unknown values survive a decode/encode round trip and print as themselves.

use core::fmt;
use core::str::FromStr;

use crate::digits::{bcd_byte, to_bcd_byte};

/// Message type indicator, four decimal digits (`0200`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti(u16);

impl Mti {
    pub const AUTHORISATION: Mti = Mti(100);
    pub const AUTHORISATION_RESPONSE: Mti = Mti(110);
    pub const FINANCIAL: Mti = Mti(200);
    pub const FINANCIAL_RESPONSE: Mti = Mti(210);
    pub const ADVICE: Mti = Mti(220);
    pub const ADVICE_RESPONSE: Mti = Mti(230);
    pub const BATCH_UPLOAD: Mti = Mti(320);
    pub const BATCH_UPLOAD_RESPONSE: Mti = Mti(330);
    pub const REVERSAL: Mti = Mti(400);
    pub const REVERSAL_RESPONSE: Mti = Mti(410);
    pub const SETTLEMENT: Mti = Mti(500);
    pub const SETTLEMENT_RESPONSE: Mti = Mti(510);
    pub const NETWORK: Mti = Mti(800);
    pub const NETWORK_RESPONSE: Mti = Mti(810);
    pub const NETWORK_ADVICE: Mti = Mti(820);
    pub const NETWORK_ADVICE_RESPONSE: Mti = Mti(830);

    /// `value` as an MTI, if it has at most four digits.
    pub const fn new(value: u16) -> Option<Mti> {
        if value <= 9999 {
            Some(Mti(value))
        } else {
            None
        }
    }

    pub const fn value(self) -> u16 {
        self.0
    }

    /// From the two BCD bytes on the wire.
    pub fn from_bcd(bytes: [u8; 2]) -> Option<Mti> {
        let [hi, lo] = bytes;
        Some(Mti(
            u16::from(bcd_byte(hi)?) * 100 + u16::from(bcd_byte(lo)?)
        ))
    }

    pub fn to_bcd(self) -> [u8; 2] {
        // Both halves are below 100 because the value is at most 9999.
        let hi = u8::try_from(self.0 / 100).unwrap_or(0);
        let lo = u8::try_from(self.0 % 100).unwrap_or(0);
        [to_bcd_byte(hi), to_bcd_byte(lo)]
    }

    /// Third digit (message function) even and last digit 0: a request or advice that expects
    /// a response at +10.
    pub const fn is_request(self) -> bool {
        (self.0 / 10).is_multiple_of(2) && self.0.is_multiple_of(10)
    }

    pub const fn is_response(self) -> bool {
        (self.0 / 10) % 2 == 1 && self.0.is_multiple_of(10)
    }

    /// The response MTI to this request: request + 10.
    pub fn response(self) -> Result<Mti, MtiError> {
        if self.is_request() {
            Ok(Mti(self.0 + 10))
        } else {
            Err(MtiError::NotARequest(self))
        }
    }

    /// The request MTI this response answers: response − 10.
    pub fn request(self) -> Result<Mti, MtiError> {
        if self.is_response() {
            Ok(Mti(self.0 - 10))
        } else {
            Err(MtiError::NotAResponse(self))
        }
    }

    /// Ok only if `reply` is exactly this request's response MTI.
    pub fn check_reply(self, reply: Mti) -> Result<(), MtiError> {
        if self.response()? == reply {
            Ok(())
        } else {
            Err(MtiError::UnexpectedReply {
                request: self,
                reply,
            })
        }
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({:04})", self.0)
    }
}

impl FromStr for Mti {
    type Err = MtiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u16>()
                .ok()
                .and_then(Mti::new)
                .ok_or(MtiError::Syntax)
        } else {
            Err(MtiError::Syntax)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MtiError {
    #[error("MTI {0} is not a request (no response expected)")]
    NotARequest(Mti),
    #[error("MTI {0} is not a response")]
    NotAResponse(Mti),
    #[error("MTI {reply} does not answer {request}")]
    UnexpectedReply { request: Mti, reply: Mti },
    #[error("an MTI is four decimal digits")]
    Syntax,
}

/// Field 3, six digits: transaction type (2), from account (2), to account (2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessingCode(u32);

impl ProcessingCode {
    /// Purchase, pre-auth completion.
    pub const PURCHASE: ProcessingCode = ProcessingCode(0);
    pub const PRE_AUTHORISATION: ProcessingCode = ProcessingCode(30_000);
    /// Voids of every kind, refund.
    pub const VOID_OR_REFUND: ProcessingCode = ProcessingCode(200_000);
    pub const BALANCE_INQUIRY: ProcessingCode = ProcessingCode(310_000);

    pub const fn new(value: u32) -> Option<ProcessingCode> {
        if value <= 999_999 {
            Some(ProcessingCode(value))
        } else {
            None
        }
    }

    pub const fn value(self) -> u32 {
        self.0
    }

    /// The first two digits, which identify the transaction.
    pub const fn transaction_type(self) -> u8 {
        // At most 99 because the value is at most 999999.
        (self.0 / 10_000) as u8
    }
}

impl fmt::Display for ProcessingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for ProcessingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessingCode({:06})", self.0)
    }
}

/// Field 39, two printable ASCII characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseCode([u8; 2]);

macro_rules! response_codes {
    ($($name:ident = $code:literal: $what:literal;)*) => {
        impl ResponseCode {
            $(#[doc = $what] pub const $name: ResponseCode = ResponseCode(*$code);)*

            /// Every code PROTOCOL.md lists, in table order.
            pub const ALL: &'static [ResponseCode] = &[$(ResponseCode::$name),*];

            /// The constant's name for a known code (`"APPROVED"`), `None` for others.
            pub fn name(self) -> Option<&'static str> {
                match &self.0 {
                    $($code => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A short English meaning for a known code.
            pub fn meaning(self) -> Option<&'static str> {
                match &self.0 {
                    $($code => Some($what),)*
                    _ => None,
                }
            }
        }
    };
}

response_codes! {
    APPROVED = b"00": "approved";
    REFER_TO_ISSUER = b"01": "refer to card issuer";
    REFER_TO_ISSUER_SPECIAL = b"02": "refer to card issuer, special condition";
    INVALID_MERCHANT = b"03": "invalid merchant";
    PICK_UP = b"04": "pick up card";
    DO_NOT_HONOUR = b"05": "do not honour";
    ERROR = b"06": "error";
    PICK_UP_SPECIAL = b"07": "pick up card, special condition";
    IN_PROGRESS = b"09": "request in progress";
    INVALID_TRANSACTION = b"12": "invalid transaction";
    INVALID_AMOUNT = b"13": "invalid amount";
    INVALID_CARD_NUMBER = b"14": "invalid card number";
    NO_SUCH_ISSUER = b"15": "no such issuer";
    CARD_NOT_ACTIVATED = b"21": "card not activated";
    SUSPECTED_MALFUNCTION = b"22": "suspected operation error";
    ORIGINAL_NOT_FOUND = b"25": "original transaction not found";
    FORMAT_ERROR = b"30": "format error";
    BANK_NOT_SUPPORTED = b"31": "bank not supported";
    EXPIRED_CARD_PICK_UP = b"33": "expired card, pick up";
    SUSPECTED_FRAUD_PICK_UP = b"34": "suspected fraud, pick up";
    CONTACT_ACQUIRER_PICK_UP = b"35": "card acceptor contact acquirer, pick up";
    RESTRICTED_CARD_PICK_UP = b"36": "restricted card, pick up";
    CALL_SECURITY_PICK_UP = b"37": "call acquirer security, pick up";
    PIN_TRIES_EXCEEDED_PICK_UP = b"38": "PIN tries exceeded, pick up";
    NO_CREDIT_ACCOUNT = b"39": "no credit account";
    FUNCTION_NOT_SUPPORTED = b"40": "requested function not supported";
    LOST_CARD = b"41": "lost card, pick up";
    NO_UNIVERSAL_ACCOUNT = b"42": "no universal account";
    STOLEN_CARD = b"43": "stolen card, pick up";
    NO_INVESTMENT_ACCOUNT = b"44": "no investment account";
    INSUFFICIENT_FUNDS = b"51": "insufficient funds";
    NO_CHEQUE_ACCOUNT = b"52": "no cheque account";
    NO_SAVINGS_ACCOUNT = b"53": "no savings account";
    EXPIRED_CARD = b"54": "expired card";
    INCORRECT_PIN = b"55": "incorrect PIN";
    NO_CARD_RECORD = b"56": "no card record";
    NOT_PERMITTED_TO_CARDHOLDER = b"57": "transaction not permitted to cardholder";
    NOT_PERMITTED_TO_TERMINAL = b"58": "transaction not permitted to terminal";
    SUSPECTED_FRAUD = b"59": "suspected fraud";
    CONTACT_ACQUIRER = b"60": "card acceptor contact acquirer";
    EXCEEDS_AMOUNT_LIMIT = b"61": "exceeds withdrawal amount limit";
    RESTRICTED_CARD = b"62": "restricted card";
    SECURITY_VIOLATION = b"63": "security violation";
    ORIGINAL_AMOUNT_INCORRECT = b"64": "original amount incorrect";
    EXCEEDS_FREQUENCY_LIMIT = b"65": "exceeds withdrawal frequency limit";
    CALL_ACQUIRER_SECURITY = b"66": "card acceptor call acquirer security";
    HARD_CAPTURE = b"67": "hard capture, pick up";
    RESPONSE_TOO_LATE = b"68": "response received too late";
    PIN_TRIES_EXCEEDED = b"75": "PIN tries exceeded";
    BATCH_OUT_OF_STEP = b"77": "batch out of step with host, sign in again";
    RECONCILIATION_UNBALANCED = b"79": "offline reconciliation unbalanced";
    CUTOVER_IN_PROGRESS = b"90": "day cut-over in progress";
    ISSUER_UNAVAILABLE = b"91": "issuer or switch inoperative";
    NETWORK_UNAVAILABLE = b"92": "financial institution or network unavailable";
    VIOLATION_OF_LAW = b"93": "transaction cannot be completed, violation of law";
    DUPLICATE_TRANSACTION = b"94": "duplicate transaction";
    RECONCILE_ERROR = b"95": "reconcile error";
    SYSTEM_MALFUNCTION = b"96": "system malfunction";
    TERMINAL_NOT_REGISTERED = b"97": "terminal not registered";
    ISSUER_TIMEOUT = b"98": "issuer did not answer in time";
    PIN_FORMAT_ERROR = b"99": "PIN format error";
    MAC_FAILED = b"A0": "MAC verification failed";
}

impl ResponseCode {
    /// The wire spelling, as PROTOCOL.md writes it.
    pub const A0: ResponseCode = ResponseCode::MAC_FAILED;

    /// Any two printable ASCII characters.
    pub const fn new(bytes: [u8; 2]) -> Option<ResponseCode> {
        let [a, b] = bytes;
        if is_printable(a) && is_printable(b) {
            Some(ResponseCode(bytes))
        } else {
            None
        }
    }

    pub const fn bytes(self) -> [u8; 2] {
        self.0
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are printable ASCII by construction.
        core::str::from_utf8(&self.0).unwrap_or("??")
    }

    pub fn is_approved(self) -> bool {
        self == ResponseCode::APPROVED
    }
}

const fn is_printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7E)
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ResponseCode({} {name})", self.as_str()),
            None => write!(f, "ResponseCode({})", self.as_str()),
        }
    }
}

impl FromStr for ResponseCode {
    type Err = ResponseCodeSyntax;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b] => ResponseCode::new([*a, *b]).ok_or(ResponseCodeSyntax),
            _ => Err(ResponseCodeSyntax),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a response code is two printable ASCII characters")]
pub struct ResponseCodeSyntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mti_response_is_plus_ten() {
        assert_eq!(Mti::FINANCIAL.response(), Ok(Mti::FINANCIAL_RESPONSE));
        assert_eq!(
            Mti::NETWORK_ADVICE.response(),
            Ok(Mti::NETWORK_ADVICE_RESPONSE)
        );
        assert_eq!(Mti::FINANCIAL_RESPONSE.request(), Ok(Mti::FINANCIAL));
        assert_eq!(
            Mti::FINANCIAL_RESPONSE.response(),
            Err(MtiError::NotARequest(Mti(210)))
        );
        assert!(Mti::FINANCIAL.check_reply(Mti::FINANCIAL_RESPONSE).is_ok());
        assert_eq!(
            Mti::FINANCIAL.check_reply(Mti::REVERSAL_RESPONSE),
            Err(MtiError::UnexpectedReply {
                request: Mti(200),
                reply: Mti(410)
            })
        );
        assert!(Mti::FINANCIAL.check_reply(Mti(201)).is_err());
    }

    #[test]
    fn mti_bcd_and_text() {
        assert_eq!(Mti::from_bcd([0x08, 0x10]), Some(Mti::NETWORK_RESPONSE));
        assert_eq!(Mti::from_bcd([0x0A, 0x10]), None);
        assert_eq!(Mti(9999).to_bcd(), [0x99, 0x99]);
        assert_eq!("0200".parse::<Mti>(), Ok(Mti::FINANCIAL));
        assert!("200".parse::<Mti>().is_err() && "02x0".parse::<Mti>().is_err());
        let unknown = Mti(1234);
        assert_eq!(unknown.to_string(), "1234");
        assert_eq!(Mti::from_bcd(unknown.to_bcd()), Some(unknown));
    }

    #[test]
    fn response_codes_are_open() {
        assert_eq!(ResponseCode::ALL.len(), 62);
        assert_eq!(ResponseCode::A0.to_string(), "A0");
        assert_eq!(ResponseCode::APPROVED.name(), Some("APPROVED"));
        let unknown: ResponseCode = "Z9".parse().unwrap();
        assert_eq!(
            (unknown.name(), unknown.to_string()),
            (None, "Z9".to_string())
        );
        assert!("0".parse::<ResponseCode>().is_err());
        assert_eq!(ResponseCode::new([0x00, b'1']), None);
        let mut seen = std::collections::HashSet::new();
        assert!(
            ResponseCode::ALL.iter().all(|c| seen.insert(*c)),
            "duplicate code"
        );
    }

    #[test]
    fn processing_code_type() {
        assert_eq!(ProcessingCode::BALANCE_INQUIRY.transaction_type(), 31);
        assert_eq!(ProcessingCode::PRE_AUTHORISATION.to_string(), "030000");
        assert_eq!(ProcessingCode::new(1_000_000), None);
    }
}
