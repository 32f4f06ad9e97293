//! Fixed-width identifiers of the terminal protocol: STAN, RRN, TID, MID, batch, auth code, MCC.
//! Each parses from its wire text once and prints back exactly; serde uses the same text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether `text` is exactly `len` characters, each a digit or a capital letter: how this
/// acquirer assigns merchant (15) and terminal (8) IDs, stricter than the wire's ans, and how a
/// business licence number (18) is written.
pub fn is_code(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// Why a text is not the identifier it was meant to be. `what` names the identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be {expected} characters, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} has a character not allowed ({rule}) at position {position}")]
    Character {
        what: &'static str,
        rule: &'static str,
        position: usize,
    },
    #[error("{what} is out of range")]
    OutOfRange { what: &'static str },
}

/// Which characters an ISO 8583 text field allows.
#[derive(Clone, Copy)]
enum Charset {
    /// n: digits.
    Numeric,
    /// an: letters and digits.
    Alphanumeric,
    /// ans: printable ASCII, space included.
    Printable,
}

impl Charset {
    fn allows(self, byte: u8) -> bool {
        match self {
            Charset::Numeric => byte.is_ascii_digit(),
            Charset::Alphanumeric => byte.is_ascii_alphanumeric(),
            Charset::Printable => (0x20..=0x7e).contains(&byte),
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Charset::Numeric => "n: digits",
            Charset::Alphanumeric => "an: letters and digits",
            Charset::Printable => "ans: printable ASCII",
        }
    }
}

fn fixed<const N: usize>(
    what: &'static str,
    charset: Charset,
    text: &[u8],
) -> Result<[u8; N], IdError> {
    if text.len() != N {
        return Err(IdError::Length {
            what,
            expected: N,
            got: text.len(),
        });
    }
    let mut out = [0u8; N];
    for (position, (slot, &byte)) in out.iter_mut().zip(text).enumerate() {
        if !charset.allows(byte) {
            return Err(IdError::Character {
                what,
                rule: charset.rule(),
                position,
            });
        }
        *slot = byte;
    }
    Ok(out)
}

fn fixed_number<const N: usize>(what: &'static str, text: &[u8]) -> Result<u32, IdError> {
    let digits = fixed::<N>(what, Charset::Numeric, text)?;
    Ok(digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
}

/// Serde through the wire text, so JSON shows `"000123"` and not a number that lost its zeros.
macro_rules! serde_via_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Six-digit counters that wrap: STAN and batch number.
macro_rules! counter {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl $name {
            pub const MAX: u32 = 999_999;

            pub fn new(value: u32) -> Result<$name, IdError> {
                if value > Self::MAX {
                    return Err(IdError::OutOfRange { what: $what });
                }
                Ok($name(value))
            }

            /// Six ASCII digits as on the wire.
            pub fn from_ascii(text: &[u8]) -> Result<$name, IdError> {
                fixed_number::<6>($what, text).map($name)
            }

            pub const fn value(self) -> u32 {
                self.0
            }

            /// The next value; 999999 wraps to 000001, because terminals treat 000000 as
            /// "never used".
            pub const fn next(self) -> $name {
                if self.0 >= Self::MAX { $name(1) } else { $name(self.0 + 1) }
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<$name, IdError> {
                $name::from_ascii(text.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:06}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:06})"), self.0)
            }
        }

        serde_via_text!($name);
    };
}

counter!(
    /// Field 11, the terminal's system trace audit number (流水号).
    Stan,
    "STAN"
);
counter!(
    /// Field 60.2, the terminal's batch number (批次号).
    BatchNo,
    "batch number"
);

/// Fixed-width text identifiers stored inline (they are `Copy` and compare by bytes).
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $charset:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn from_ascii(text: &[u8]) -> Result<$name, IdError> {
                fixed::<$len>($what, $charset, text).map($name)
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn as_str(&self) -> &str {
                // Only ASCII ever gets in, so this never falls back.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<$name, IdError> {
                $name::from_ascii(text.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.as_str())
            }
        }

        serde_via_text!($name);
    };
}

text_id!(
    /// Field 37, retrieval reference number (检索参考号), an12, assigned by the host.
    Rrn,
    12,
    Charset::Alphanumeric,
    "RRN"
);
text_id!(
    /// Field 41, terminal ID (终端号), ans8.
    TerminalId,
    8,
    Charset::Printable,
    "terminal ID"
);
text_id!(
    /// Field 42, merchant ID (商户号), ans15.
    MerchantId,
    15,
    Charset::Printable,
    "merchant ID"
);
text_id!(
    /// Field 38, authorisation code (授权码), an6, assigned by the issuer.
    AuthCode,
    6,
    Charset::Alphanumeric,
    "authorisation code"
);

/// Merchant category code (MCC), four digits; decides fees and what a card may buy.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mcc(u16);

impl Mcc {
    pub fn from_ascii(text: &[u8]) -> Result<Mcc, IdError> {
        let value = fixed_number::<4>("MCC", text)?;
        u16::try_from(value)
            .map(Mcc)
            .map_err(|_| IdError::OutOfRange { what: "MCC" })
    }

    pub const fn value(self) -> u16 {
        self.0
    }
}

impl FromStr for Mcc {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Mcc, IdError> {
        Mcc::from_ascii(text.as_bytes())
    }
}

impl fmt::Display for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mcc({:04})", self.0)
    }
}

serde_via_text!(Mcc);

#[cfg(test)]
mod tests {
    use super::*;

    /// A code as this acquirer assigns IDs: its exact length, digits and capital letters only.
    #[test]
    fn a_code_is_its_length_of_digits_and_capitals() {
        assert!(is_code("898110048990001", 15));
        assert!(is_code("91310000MA1FL0003Z", 18));
        for text in [
            "89811004899001",
            "898110048990001 ",
            "8981100 8990001",
            "898110048990o01",
        ] {
            assert!(!is_code(text, 15), "{text:?}");
        }
    }

    #[test]
    fn stan_wraps_past_999999_to_000001() {
        let last: Stan = "999999".parse().unwrap();
        assert_eq!(last.next().to_string(), "000001");
        assert_eq!(Stan::new(0).unwrap().next().value(), 1);
        assert_eq!(Stan::new(41).unwrap().next().to_string(), "000042");
        assert_eq!(
            Stan::new(1_000_000),
            Err(IdError::OutOfRange { what: "STAN" })
        );
        assert_eq!(format!("{:?}", Stan::new(7).unwrap()), "Stan(000007)");
    }

    #[test]
    fn batch_wraps_too() {
        let b: BatchNo = "000123".parse().unwrap();
        assert_eq!(b.next().to_string(), "000124");
        assert_eq!(BatchNo::new(999_999).unwrap().next().value(), 1);
    }

    #[test]
    fn counters_reject_wrong_width_and_non_digits() {
        assert_eq!(
            "12345".parse::<Stan>(),
            Err(IdError::Length {
                what: "STAN",
                expected: 6,
                got: 5
            })
        );
        assert!(matches!(
            "12345a".parse::<Stan>(),
            Err(IdError::Character { position: 5, .. })
        ));
        assert!("-12345".parse::<BatchNo>().is_err());
    }

    #[test]
    fn text_ids_follow_their_charsets() {
        assert_eq!(
            "123456789012".parse::<Rrn>().unwrap().as_str(),
            "123456789012"
        );
        assert!("12345678901 ".parse::<Rrn>().is_err());
        assert_eq!(
            "T001 A-1".parse::<TerminalId>().unwrap().to_string(),
            "T001 A-1"
        );
        assert!("T001\tA-1".parse::<TerminalId>().is_err());
        assert!("T001".parse::<TerminalId>().is_err());
        assert!("中国银联".parse::<TerminalId>().is_err());
        assert_eq!(
            "898110048990001".parse::<MerchantId>().unwrap().as_str(),
            "898110048990001"
        );
        assert!("89811004899000".parse::<MerchantId>().is_err());
        assert_eq!("A1B2C3".parse::<AuthCode>().unwrap().as_str(), "A1B2C3");
        assert!("A1B2C ".parse::<AuthCode>().is_err());
        assert_eq!(
            format!("{:?}", "12345678".parse::<TerminalId>().unwrap()),
            "TerminalId(\"12345678\")"
        );
    }

    #[test]
    fn mcc_keeps_leading_zeros() {
        let mcc: Mcc = "0742".parse().unwrap();
        assert_eq!(mcc.value(), 742);
        assert_eq!(mcc.to_string(), "0742");
        assert!("742".parse::<Mcc>().is_err());
    }

    #[test]
    fn serde_uses_wire_text() {
        let stan = Stan::new(42).unwrap();
        assert_eq!(serde_json::to_string(&stan).unwrap(), "\"000042\"");
        let back: Stan = serde_json::from_str("\"000042\"").unwrap();
        assert_eq!(back, stan);
        assert!(serde_json::from_str::<Stan>("\"42\"").is_err());
        let tid: TerminalId = serde_json::from_str("\"12345678\"").unwrap();
        assert_eq!(serde_json::to_string(&tid).unwrap(), "\"12345678\"");
        let mcc: Mcc = serde_json::from_str("\"5411\"").unwrap();
        assert_eq!(mcc.value(), 5411);
    }
}
