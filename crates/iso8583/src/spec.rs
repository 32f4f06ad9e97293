//! The dialect as data: one `const` table gives every field's format, length rule, maximum and
//! alignment. The codec reads nothing else, so another dialect is another table.

use core::fmt;

/// How a field's content is coded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Decimal digits, packed BCD (two digits a byte).
    N,
    /// Track data, packed BCD with `=` coded as nibble D; encrypted tracks use any nibble.
    Z,
    /// Printable ASCII letters and digits (we accept any printable ASCII).
    An,
    /// Any byte: letters, digits, specials and, in field 63, GBK text.
    Ans,
    /// Raw binary.
    B,
}

impl Format {
    /// Packed-nibble formats: the length counts digits and two digits share a byte.
    pub const fn is_nibble(self) -> bool {
        matches!(self, Format::N | Format::Z)
    }

    /// Bytes on the wire for `units` digits (n, z) or bytes (an, ans, b).
    pub const fn wire_len(self, units: usize) -> usize {
        if self.is_nibble() {
            units.div_ceil(2)
        } else {
            units
        }
    }

    /// The pad nibble this codec writes for an odd digit count.
    pub const fn pad_nibble(self) -> u8 {
        match self {
            Format::Z => 0xF,
            _ => 0x0,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Format::N => "n",
            Format::Z => "z",
            Format::An => "an",
            Format::Ans => "ans",
            Format::B => "b",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the length of a field is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LenRule {
    /// Always exactly `max` units.
    Fixed,
    /// One BCD byte of length (0-99) before the data.
    LlVar,
    /// Two BCD bytes of length (0-9999) before the data.
    LllVar,
}

impl LenRule {
    /// Bytes of length prefix before the data.
    pub const fn prefix_len(self) -> usize {
        match self {
            LenRule::Fixed => 0,
            LenRule::LlVar => 1,
            LenRule::LllVar => 2,
        }
    }
}

/// Where the digits of an odd-length numeric field sit in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Align {
    /// Digits first, pad nibble last (`021` → `02 10`).
    Left,
    /// Pad nibble first, digits last (`021` → `00 21`).
    Right,
}

/// One field of a dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    pub format: Format,
    pub len: LenRule,
    /// Maximum (for `Fixed`: exact) length in digits for n/z, in bytes for an/ans/b.
    pub max: u16,
    /// Only meaningful for n/z with an odd digit count.
    pub align: Align,
}

impl FieldSpec {
    pub const fn new(format: Format, len: LenRule, max: u16, align: Align) -> Self {
        Self {
            format,
            len,
            max,
            align,
        }
    }

    /// Bytes the largest legal value takes on the wire, prefix included.
    pub const fn wire_len_max(&self) -> usize {
        self.len.prefix_len() + self.format.wire_len(self.max as usize)
    }
}

/// Field number 0 and 1 are never fields (1 is the secondary-bitmap bit).
pub const FIELD_COUNT: usize = 65;

/// A dialect: a name and its field table, indexed by field number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    pub name: &'static str,
    pub fields: [Option<FieldSpec>; FIELD_COUNT],
}

impl Dialect {
    /// The spec of field `number`, if the dialect defines it.
    pub fn field(&self, number: u8) -> Option<&FieldSpec> {
        self.fields
            .get(usize::from(number))
            .and_then(Option::as_ref)
    }

    /// Bytes of the PIN block (field 52) in this dialect, if it defines one.
    pub fn pin_block_len(&self) -> Option<usize> {
        self.field(52)
            .map(|spec| spec.format.wire_len(usize::from(spec.max)))
    }

    /// MTI + bitmap + every defined field at its maximum: no legal message is longer.
    pub const fn message_len_max(&self) -> usize {
        let mut total = 2 + 8;
        let mut rest: &[Option<FieldSpec>] = &self.fields;
        while let [first, tail @ ..] = rest {
            if let Some(spec) = first {
                total += spec.wire_len_max();
            }
            rest = tail;
        }
        total
    }
}

use Align::{Left, Right};
use Format::{An, Ans, B, N, Z};
use LenRule::{Fixed, LlVar, LllVar};

const fn f(format: Format, len: LenRule, max: u16, align: Align) -> Option<FieldSpec> {
    Some(FieldSpec::new(format, len, max, align))
}

/// The CUP POS dialect of PROTOCOL.md.
///
/// Alignment: fixed numeric fields are right-aligned except field 22 (left); variable-length
/// numeric fields (2, 32, 48, 60, 61) and tracks are left-aligned with the pad nibble last.
/// That is what every sample in `data/cup-samples` shows (field 2 with 19 digits, field 60 with
/// 11 and 13 digits) and what CUP terminals send.
pub const CUP_POS: Dialect = Dialect {
    name: "CUP POS",
    fields: [
        /* 0 */ None,
        /* 1 secondary bitmap: not supported */ None,
        /* 2 PAN */ f(N, LlVar, 19, Left),
        /* 3 processing code */ f(N, Fixed, 6, Right),
        /* 4 amount, fen */ f(N, Fixed, 12, Right),
        /* 5 */ None,
        /* 6 */ None,
        /* 7 */ None,
        /* 8 */ None,
        /* 9 */ None,
        /* 10 */ None,
        /* 11 STAN */ f(N, Fixed, 6, Right),
        /* 12 local time hhmmss */ f(N, Fixed, 6, Right),
        /* 13 local date MMDD */ f(N, Fixed, 4, Right),
        /* 14 expiry YYMM */ f(N, Fixed, 4, Right),
        /* 15 settlement date MMDD */ f(N, Fixed, 4, Right),
        /* 16 */ None,
        /* 17 */ None,
        /* 18 */ None,
        /* 19 */ None,
        /* 20 */ None,
        /* 21 */ None,
        /* 22 entry mode */ f(N, Fixed, 3, Left),
        /* 23 card sequence number */ f(N, Fixed, 3, Right),
        /* 24 */ None,
        /* 25 condition code */ f(N, Fixed, 2, Right),
        /* 26 max PIN length */ f(N, Fixed, 2, Right),
        /* 27 */ None,
        /* 28 */ None,
        /* 29 */ None,
        /* 30 */ None,
        /* 31 */ None,
        /* 32 acquirer institution */ f(N, LlVar, 11, Left),
        /* 33 */ None,
        /* 34 */ None,
        /* 35 track 2 */ f(Z, LlVar, 37, Left),
        /* 36 track 3 */ f(Z, LllVar, 104, Left),
        /* 37 RRN */ f(An, Fixed, 12, Left),
        /* 38 authorisation code */ f(An, Fixed, 6, Left),
        /* 39 response code */ f(An, Fixed, 2, Left),
        /* 40 */ None,
        /* 41 terminal ID */ f(Ans, Fixed, 8, Left),
        /* 42 merchant ID */ f(Ans, Fixed, 15, Left),
        /* 43 */ None,
        /* 44 issuer + acquirer ID */ f(Ans, LlVar, 25, Left),
        /* 45 */ None,
        /* 46 */ None,
        /* 47 */ None,
        /* 48 settlement totals / batch upload */ f(N, LllVar, 322, Left),
        /* 49 currency */ f(An, Fixed, 3, Left),
        /* 50 */ None,
        /* 51 */ None,
        /* 52 PIN block */ f(B, Fixed, 8, Left),
        /* 53 security control */ f(N, Fixed, 16, Right),
        /* 54 balance */ f(An, LllVar, 40, Left),
        /* 55 IC data */ f(B, LllVar, 255, Left),
        /* 56 */ None,
        /* 57 */ None,
        /* 58 */ None,
        /* 59 */ None,
        /* 60 message type, batch, network code... */ f(N, LllVar, 17, Left),
        /* 61 original batch, trace, date */ f(N, LllVar, 29, Left),
        /* 62 working keys */ f(B, LllVar, 512, Left),
        /* 63 operator / card organisation + text */ f(Ans, LllVar, 163, Left),
        /* 64 MAC */ f(B, Fixed, 8, Left),
    ],
};

/// The CUP POS dialect of a terminal on key scheme 006: identical to [`CUP_POS`] except that
/// field 52 is b128. An SM4 PIK encrypts the PIN block as one 16-byte SM4 block (the format-0
/// block widened to 32 nibbles), so it cannot fit the 8 bytes a DES block takes.
pub const CUP_POS_SM4: Dialect = with_sm4_pin_block(CUP_POS);

const fn with_sm4_pin_block(base: Dialect) -> Dialect {
    let mut fields = base.fields;
    fields[52] = f(B, Fixed, 16, Left);
    Dialect {
        name: "CUP POS SM4",
        fields,
    }
}

/// Largest CUP POS message (MTI through field 64), in either dialect.
pub const CUP_POS_MESSAGE_LEN_MAX: usize =
    max(CUP_POS.message_len_max(), CUP_POS_SM4.message_len_max());

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
