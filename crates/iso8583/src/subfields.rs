//! Structured fields: views that parse the digits or bytes of 48, 53, 60, 61 and 62 into typed
//! values, and the same types written back through [`Compose`].

use core::fmt;

use crate::builder::{Compose, MessageBuilder};
use crate::digits::{Digits, ascii_digits};
use crate::error::{DecodeError, EncodeError, FieldError, SubfieldError};
use crate::message::Message;

/// Digits being composed on the stack: no heap for any sub-field.
struct DigitBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> DigitBuf<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    fn push(&mut self, sub: &'static str, value: u64, width: usize) -> Result<(), SubfieldError> {
        let rest = self.buf.get_mut(self.len..).unwrap_or_default();
        ascii_digits(value, width, rest).ok_or(SubfieldError::TooWide { sub, value, width })?;
        self.len += width;
        Ok(())
    }

    fn push_ascii(&mut self, digits: &[u8]) {
        if let Some(slot) = self.buf.get_mut(self.len..self.len + digits.len()) {
            slot.copy_from_slice(digits);
            self.len += digits.len();
        }
    }

    fn digits(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn set(&self, field: u8, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        builder.set_digit_bytes(field, self.digits()).map(|_| ())
    }
}

fn value(
    d: &Digits<'_>,
    start: usize,
    len: usize,
    sub: &'static str,
) -> Result<u64, SubfieldError> {
    d.sub(start, len)
        .and_then(|s| s.value())
        .ok_or(SubfieldError::Value {
            sub,
            why: "missing or not digits",
        })
}

fn narrow<T: TryFrom<u64>>(v: u64, sub: &'static str) -> Result<T, SubfieldError> {
    T::try_from(v).map_err(|_| SubfieldError::Value {
        sub,
        why: "out of range",
    })
}

/// Up to `N` trailing digits a structure does not interpret, kept for an exact round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtraDigits<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> ExtraDigits<N> {
    pub const EMPTY: Self = Self {
        buf: [b'0'; N],
        len: 0,
    };

    /// Decimal digits, at most `N`.
    pub fn new(digits: &str) -> Option<Self> {
        let bytes = digits.as_bytes();
        let mut buf = [b'0'; N];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        let len = u8::try_from(bytes.len()).ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_digit)
            .then_some(Self { buf, len })
    }

    fn from_digits(d: Option<Digits<'_>>) -> Option<Self> {
        let mut out = Self::EMPTY;
        let d = match d {
            Some(d) => d,
            None => return Some(out),
        };
        let slot = out.buf.get_mut(..d.len())?;
        for (b, c) in slot.iter_mut().zip(d.chars()) {
            *b = u8::try_from(c).ok()?;
        }
        out.len = u8::try_from(d.len()).ok()?;
        Some(out)
    }

    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> fmt::Debug for ExtraDigits<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> Default for ExtraDigits<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

// ---------------------------------------------------------------------------------------------
// Field 48

/// Settlement result digit: what the terminal sends (0) and what the host answers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SettleResult(pub u8);

impl SettleResult {
    pub const REQUEST: Self = Self(0);
    pub const BALANCED: Self = Self(1);
    pub const UNBALANCED: Self = Self(2);
    pub const ERROR: Self = Self(3);
}

impl fmt::Debug for SettleResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SettleResult({})", self.0)
    }
}

/// One half of field 48 in a settlement: 31 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Totals {
    pub debit_amount: u64,
    pub debit_count: u16,
    pub credit_amount: u64,
    pub credit_count: u16,
    pub result: SettleResult,
}

impl Totals {
    const DIGITS: usize = 31;

    fn parse(d: &Digits<'_>, at: usize) -> Result<Self, SubfieldError> {
        Ok(Totals {
            debit_amount: value(d, at, 12, "debit amount")?,
            debit_count: narrow(value(d, at + 12, 3, "debit count")?, "debit count")?,
            credit_amount: value(d, at + 15, 12, "credit amount")?,
            credit_count: narrow(value(d, at + 27, 3, "credit count")?, "credit count")?,
            result: SettleResult(narrow(value(d, at + 30, 1, "result")?, "result")?),
        })
    }

    fn push<const N: usize>(&self, out: &mut DigitBuf<N>) -> Result<(), SubfieldError> {
        out.push("debit amount", self.debit_amount, 12)?;
        out.push("debit count", u64::from(self.debit_count), 3)?;
        out.push("credit amount", self.credit_amount, 12)?;
        out.push("credit count", u64::from(self.credit_count), 3)?;
        out.push("result", u64::from(self.result.0), 1)
    }
}

/// Field 48 of a settlement (0500/0510): domestic then foreign totals, 62 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SettlementTotals {
    pub domestic: Totals,
    pub foreign: Totals,
}

impl SettlementTotals {
    pub const DIGITS: usize = 2 * Totals::DIGITS;

    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        if d.len() != Self::DIGITS {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: "62 digits",
            });
        }
        Ok(Self {
            domestic: Totals::parse(&d, 0)?,
            foreign: Totals::parse(&d, Totals::DIGITS)?,
        })
    }
}

impl Compose for SettlementTotals {
    const FIELD: u8 = 48;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let mut out = DigitBuf::<{ Self::DIGITS }>::new();
        let wrap = |e| EncodeError::field_error(Self::FIELD, e);
        self.domestic.push(&mut out).map_err(wrap)?;
        self.foreign.push(&mut out).map_err(wrap)?;
        out.set(Self::FIELD, builder)
    }
}

/// Card organisation of a batch-upload record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CardOrganisation(pub u8);

impl CardOrganisation {
    pub const DOMESTIC: Self = Self(0);
    pub const FOREIGN: Self = Self(1);
}

impl fmt::Debug for CardOrganisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardOrganisation({:02})", self.0)
    }
}

/// One batch-upload record: 40 digits. The PAN is kept as its 20 wire digits (right-aligned,
/// zero-filled), never printed by Debug, and wiped when the record is dropped (not `Copy`, so
/// no copy outlives it unwiped).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BatchRecord {
    pub organisation: CardOrganisation,
    pub trace: u32,
    pan: [u8; 20],
    pub amount: u64,
}

impl BatchRecord {
    const DIGITS: usize = 40;

    /// A record; `pan` is at most 20 decimal digits.
    pub fn new(
        organisation: CardOrganisation,
        trace: u32,
        pan: &str,
        amount: u64,
    ) -> Result<Self, SubfieldError> {
        let bad = SubfieldError::Value {
            sub: "PAN",
            why: "not 1-20 decimal digits",
        };
        let digits = pan.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let mut wire = [b'0'; 20];
        let at = 20usize.checked_sub(digits.len()).ok_or(bad)?;
        wire.get_mut(at..).ok_or(bad)?.copy_from_slice(digits);
        Ok(Self {
            organisation,
            trace,
            pan: wire,
            amount,
        })
    }

    /// The PAN without the zero fill.
    pub fn pan(&self) -> &str {
        let all = core::str::from_utf8(&self.pan).unwrap_or_default();
        let trimmed = all.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }
    }

    fn parse(d: &Digits<'_>, at: usize) -> Result<Self, SubfieldError> {
        let mut pan = [b'0'; 20];
        let pan_digits = d.sub(at + 8, 20).ok_or(SubfieldError::Value {
            sub: "PAN",
            why: "missing",
        })?;
        for (b, c) in pan.iter_mut().zip(pan_digits.chars()) {
            *b = u8::try_from(c).unwrap_or(b'0');
        }
        Ok(BatchRecord {
            organisation: CardOrganisation(narrow(
                value(d, at, 2, "organisation")?,
                "organisation",
            )?),
            trace: narrow(value(d, at + 2, 6, "trace")?, "trace")?,
            pan,
            amount: value(d, at + 28, 12, "amount")?,
        })
    }
}

impl Drop for BatchRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pan);
    }
}

impl fmt::Debug for BatchRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRecord")
            .field("organisation", &self.organisation)
            .field("trace", &self.trace)
            .field("pan", &"<not shown>")
            .field("amount", &self.amount)
            .finish()
    }
}

/// Field 48 of a batch upload (0320): n2 count, then that many records (at most 8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchUpload {
    records: [Option<BatchRecord>; Self::RECORDS_MAX],
}

impl BatchUpload {
    pub const RECORDS_MAX: usize = 8;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn records(&self) -> impl Iterator<Item = &BatchRecord> {
        self.records.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.records().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, record: BatchRecord) -> Result<(), SubfieldError> {
        let full = SubfieldError::TooManyRecords {
            count: Self::RECORDS_MAX + 1,
            max: Self::RECORDS_MAX,
        };
        let slot = self.records.iter_mut().find(|r| r.is_none()).ok_or(full)?;
        *slot = Some(record);
        Ok(())
    }

    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        let count = usize::try_from(value(&d, 0, 2, "count")?).unwrap_or(usize::MAX);
        if count > Self::RECORDS_MAX {
            return Err(SubfieldError::TooManyRecords {
                count,
                max: Self::RECORDS_MAX,
            });
        }
        if d.len() != 2 + count * BatchRecord::DIGITS {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: "2 + 40 × count digits",
            });
        }
        let mut upload = Self::new();
        for (i, slot) in upload.records.iter_mut().take(count).enumerate() {
            *slot = Some(BatchRecord::parse(&d, 2 + i * BatchRecord::DIGITS)?);
        }
        Ok(upload)
    }
}

impl Compose for BatchUpload {
    const FIELD: u8 = 48;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let wrap = |e| EncodeError::field_error(Self::FIELD, e);
        let mut out = DigitBuf::<{ 2 + BatchUpload::RECORDS_MAX * BatchRecord::DIGITS }>::new();
        out.push("count", self.len() as u64, 2).map_err(wrap)?;
        for r in self.records() {
            out.push("organisation", u64::from(r.organisation.0), 2)
                .map_err(wrap)?;
            out.push("trace", u64::from(r.trace), 6).map_err(wrap)?;
            out.push_ascii(&r.pan);
            out.push("amount", r.amount, 12).map_err(wrap)?;
        }
        out.set(Self::FIELD, builder)
    }
}

/// Field 48 of the batch-upload end message: n4 total count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BatchUploadEnd {
    pub count: u16,
}

impl BatchUploadEnd {
    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        if d.len() != 4 {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: "4 digits",
            });
        }
        Ok(Self {
            count: narrow(value(&d, 0, 4, "count")?, "count")?,
        })
    }
}

impl Compose for BatchUploadEnd {
    const FIELD: u8 = 48;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let mut out = DigitBuf::<4>::new();
        out.push("count", u64::from(self.count), 4)
            .map_err(|e| EncodeError::field_error(Self::FIELD, e))?;
        out.set(Self::FIELD, builder)
    }
}

/// Field 48, told apart by its length (62, 4, or 2 + 40k digits never coincide).
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsing a sub-field must not allocate"
)]
pub enum Field48 {
    Totals(SettlementTotals),
    Upload(BatchUpload),
    UploadEnd(BatchUploadEnd),
}

impl Field48 {
    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        match d.len() {
            SettlementTotals::DIGITS => SettlementTotals::parse(d).map(Field48::Totals),
            4 => BatchUploadEnd::parse(d).map(Field48::UploadEnd),
            _ => BatchUpload::parse(d).map(Field48::Upload),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field 53

/// Field 53, security control: 16 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SecurityControl {
    /// 2 = ANSI X9.8 with PAN; 0 and 1 are also seen.
    pub pin_format: u8,
    /// 0 single-length, 6 double-length keys.
    pub key_type: u8,
    pub track_encrypted: bool,
    /// The 13 digits after the first three; zero in every host we know.
    pub reserved: u64,
}

impl SecurityControl {
    pub const PIN_FORMAT_ANSI_X98: u8 = 2;
    pub const KEY_SINGLE: u8 = 0;
    pub const KEY_DOUBLE: u8 = 6;

    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        if d.len() != 16 {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: "16 digits",
            });
        }
        let track_encrypted = match value(&d, 2, 1, "53.3")? {
            0 => false,
            1 => true,
            _ => {
                return Err(SubfieldError::Value {
                    sub: "53.3",
                    why: "not 0 or 1",
                });
            }
        };
        Ok(Self {
            pin_format: narrow(value(&d, 0, 1, "53.1")?, "53.1")?,
            key_type: narrow(value(&d, 1, 1, "53.2")?, "53.2")?,
            track_encrypted,
            reserved: value(&d, 3, 13, "53.4")?,
        })
    }
}

impl Compose for SecurityControl {
    const FIELD: u8 = 53;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let mut out = DigitBuf::<16>::new();
        let wrap = |e| EncodeError::field_error(Self::FIELD, e);
        out.push("53.1", u64::from(self.pin_format), 1)
            .map_err(wrap)?;
        out.push("53.2", u64::from(self.key_type), 1)
            .map_err(wrap)?;
        out.push("53.3", u64::from(self.track_encrypted), 1)
            .map_err(wrap)?;
        out.push("53.4", self.reserved, 13).map_err(wrap)?;
        out.set(Self::FIELD, builder)
    }
}

// ---------------------------------------------------------------------------------------------
// Field 60

/// Field 60: 60.1 message type n2, 60.2 batch n6, 60.3 network management code n3, 60.4 read
/// capability n1, 60.5 IC condition n1, then up to 4 more digits kept as they are. A sub-field
/// is present only if every one before it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Field60 {
    pub message_type: u8,
    pub batch: Option<u32>,
    pub network_code: Option<u16>,
    pub read_capability: Option<u8>,
    pub ic_condition: Option<u8>,
    pub extra: ExtraDigits<4>,
}

impl Field60 {
    /// 60.5 value for a chip card read by magstripe.
    pub const IC_FALLBACK: u8 = 2;

    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        const ENDS: &str = "2, 8, 11, 12 or 13-17 digits";
        if !matches!(d.len(), 2 | 8 | 11..=17) {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: ENDS,
            });
        }
        let opt = |start, len, sub| -> Result<Option<u64>, SubfieldError> {
            if d.len() >= start + len {
                value(&d, start, len, sub).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Field60 {
            message_type: narrow(value(&d, 0, 2, "60.1")?, "60.1")?,
            batch: opt(2, 6, "60.2")?.map(|v| narrow(v, "60.2")).transpose()?,
            network_code: opt(8, 3, "60.3")?.map(|v| narrow(v, "60.3")).transpose()?,
            read_capability: opt(11, 1, "60.4")?.map(|v| narrow(v, "60.4")).transpose()?,
            ic_condition: opt(12, 1, "60.5")?.map(|v| narrow(v, "60.5")).transpose()?,
            extra: ExtraDigits::from_digits(d.tail(13)).ok_or(SubfieldError::Value {
                sub: "60.6",
                why: "too long",
            })?,
        })
    }
}

impl Compose for Field60 {
    const FIELD: u8 = 60;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let wrap = |e| EncodeError::field_error(Self::FIELD, e);
        let gap = || {
            wrap(SubfieldError::Value {
                sub: "60",
                why: "sub-field after a gap",
            })
        };
        let mut out = DigitBuf::<17>::new();
        out.push("60.1", u64::from(self.message_type), 2)
            .map_err(wrap)?;
        let parts = [
            ("60.2", self.batch.map(u64::from), 6),
            ("60.3", self.network_code.map(u64::from), 3),
            ("60.4", self.read_capability.map(u64::from), 1),
            ("60.5", self.ic_condition.map(u64::from), 1),
        ];
        let mut ended = false;
        for (sub, v, width) in parts {
            match (v, ended) {
                (Some(_), true) => return Err(gap()),
                (Some(v), false) => out.push(sub, v, width).map_err(wrap)?,
                (None, _) => ended = true,
            }
        }
        if !self.extra.is_empty() {
            if ended {
                return Err(gap());
            }
            out.push_ascii(self.extra.as_str().as_bytes());
        }
        out.set(Self::FIELD, builder)
    }
}

// ---------------------------------------------------------------------------------------------
// Field 61

/// Field 61: original batch n6, trace n6, date MMDD n4, then up to 13 more digits kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Field61 {
    pub batch: u32,
    pub trace: Option<u32>,
    /// MMDD as a number (`0529` → 529).
    pub date: Option<u16>,
    pub extra: ExtraDigits<13>,
}

impl Field61 {
    pub fn parse(d: Digits<'_>) -> Result<Self, SubfieldError> {
        if !matches!(d.len(), 6 | 12 | 16..=29) {
            return Err(SubfieldError::Length {
                len: d.len(),
                expected: "6, 12 or 16-29 digits",
            });
        }
        let trace = if d.len() >= 12 {
            Some(narrow(value(&d, 6, 6, "61.2")?, "61.2")?)
        } else {
            None
        };
        let date = if d.len() >= 16 {
            Some(narrow(value(&d, 12, 4, "61.3")?, "61.3")?)
        } else {
            None
        };
        Ok(Field61 {
            batch: narrow(value(&d, 0, 6, "61.1")?, "61.1")?,
            trace,
            date,
            extra: ExtraDigits::from_digits(d.tail(16)).ok_or(SubfieldError::Value {
                sub: "61.4",
                why: "too long",
            })?,
        })
    }
}

impl Compose for Field61 {
    const FIELD: u8 = 61;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let wrap = |e| EncodeError::field_error(Self::FIELD, e);
        let gap = || {
            wrap(SubfieldError::Value {
                sub: "61",
                why: "sub-field after a gap",
            })
        };
        let mut out = DigitBuf::<29>::new();
        out.push("61.1", u64::from(self.batch), 6).map_err(wrap)?;
        match (self.trace, self.date, self.extra.is_empty()) {
            (None, None, true) => {}
            (Some(trace), None, true) => out.push("61.2", u64::from(trace), 6).map_err(wrap)?,
            (Some(trace), Some(date), _) => {
                out.push("61.2", u64::from(trace), 6).map_err(wrap)?;
                out.push("61.3", u64::from(date), 4).map_err(wrap)?;
                out.push_ascii(self.extra.as_str().as_bytes());
            }
            _ => return Err(gap()),
        }
        out.set(Self::FIELD, builder)
    }
}

// ---------------------------------------------------------------------------------------------
// Field 62

/// How field 62 of a sign-in response lays out its key slots (by length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyLayout {
    /// 24 bytes, 60.3 = 001: PIK 8 + KCV, MAK 8 + KCV.
    Single,
    /// 40 bytes, 60.3 = 003 (3DES), or 006 (SM4) from a host that gives no track key: PIK 16
    /// + KCV, MAK 16 + KCV.
    Double,
    /// 60 bytes, 60.3 = 004, or 006 (SM4) as shoudan issues it (PROTOCOL.md: "same order" as
    /// 004): as `Double`, then TDK 16 + KCV.
    DoubleWithTrackKey,
}

impl KeyLayout {
    pub fn from_len(len: usize) -> Option<Self> {
        match len {
            24 => Some(KeyLayout::Single),
            40 => Some(KeyLayout::Double),
            60 => Some(KeyLayout::DoubleWithTrackKey),
            _ => None,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            KeyLayout::Single => 8,
            _ => 16,
        }
    }
}

/// One encrypted working key and its 4-byte check value. Debug shows only the KCV.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeySlot<'a> {
    /// The key encrypted under the terminal master key (8 or 16 bytes).
    pub key: &'a [u8],
    pub kcv: [u8; 4],
}

impl<'a> KeySlot<'a> {
    /// The key bytes with a zero right half dropped: many terminals send an 8-byte MAK as
    /// 8 key bytes + 8 zero bytes in a 16-byte slot.
    pub fn effective_key(&self) -> &'a [u8] {
        match self.key.split_at_checked(8) {
            Some((left, right)) if right.len() == 8 && right.iter().all(|b| *b == 0) => left,
            _ => self.key,
        }
    }
}

impl fmt::Debug for KeySlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeySlot({} bytes, kcv {})",
            self.key.len(),
            crate::error::Hex(&self.kcv)
        )
    }
}

/// Field 62 of a sign-in response: the working keys, encrypted, each with its KCV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingKeys<'a> {
    pub pik: KeySlot<'a>,
    pub mak: KeySlot<'a>,
    pub tdk: Option<KeySlot<'a>>,
}

impl<'a> WorkingKeys<'a> {
    pub fn layout(&self) -> KeyLayout {
        match (self.tdk, self.pik.key.len()) {
            (Some(_), _) => KeyLayout::DoubleWithTrackKey,
            (None, 8) => KeyLayout::Single,
            (None, _) => KeyLayout::Double,
        }
    }

    pub fn parse(bytes: &'a [u8]) -> Result<Self, SubfieldError> {
        let layout = KeyLayout::from_len(bytes.len()).ok_or(SubfieldError::Length {
            len: bytes.len(),
            expected: "24, 40 or 60 bytes",
        })?;
        let key_len = layout.key_len();
        let slot = |rest: &'a [u8], sub| -> Result<(KeySlot<'a>, &'a [u8]), SubfieldError> {
            let missing = SubfieldError::Value {
                sub,
                why: "truncated",
            };
            let (key, rest) = rest.split_at_checked(key_len).ok_or(missing)?;
            let (kcv, rest) = rest.split_first_chunk::<4>().ok_or(missing)?;
            Ok((KeySlot { key, kcv: *kcv }, rest))
        };
        let (pik, rest) = slot(bytes, "PIK")?;
        let (mak, rest) = slot(rest, "MAK")?;
        let tdk = match layout {
            KeyLayout::DoubleWithTrackKey => Some(slot(rest, "TDK")?.0),
            _ => None,
        };
        Ok(WorkingKeys { pik, mak, tdk })
    }
}

impl Compose for WorkingKeys<'_> {
    const FIELD: u8 = 62;

    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError> {
        let wrap = |sub| {
            EncodeError::field_error(
                Self::FIELD,
                SubfieldError::Value {
                    sub,
                    why: "wrong key length",
                },
            )
        };
        let key_len = self.pik.key.len();
        if key_len != 8 && key_len != 16 {
            return Err(wrap("PIK"));
        }
        if self.mak.key.len() != key_len {
            return Err(wrap("MAK"));
        }
        if self.tdk.is_some_and(|t| t.key.len() != 16 || key_len != 16) {
            return Err(wrap("TDK"));
        }
        let mut buf = [0u8; 60];
        let mut len = 0;
        for slot in [Some(self.pik), Some(self.mak), self.tdk]
            .into_iter()
            .flatten()
        {
            for part in [slot.key, &slot.kcv[..]] {
                if let Some(dst) = buf.get_mut(len..len + part.len()) {
                    dst.copy_from_slice(part);
                    len += part.len();
                }
            }
        }
        builder.set_binary(Self::FIELD, buf.get(..len).unwrap_or_default())?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Accessors on a decoded message

fn sub<T>(
    message: &Message<'_>,
    field: u8,
    parse: impl FnOnce(Digits<'_>) -> Result<T, SubfieldError>,
) -> Result<Option<T>, DecodeError> {
    match message.digits(field) {
        None => Ok(None),
        Some(d) => parse(d)
            .map(Some)
            .map_err(|e| DecodeError::field_error(field, FieldError::Sub(e))),
    }
}

impl<'a> Message<'a> {
    pub fn field48(&self) -> Result<Option<Field48>, DecodeError> {
        sub(self, 48, Field48::parse)
    }

    pub fn security_control(&self) -> Result<Option<SecurityControl>, DecodeError> {
        sub(self, 53, SecurityControl::parse)
    }

    pub fn field60(&self) -> Result<Option<Field60>, DecodeError> {
        sub(self, 60, Field60::parse)
    }

    pub fn field61(&self) -> Result<Option<Field61>, DecodeError> {
        sub(self, 61, Field61::parse)
    }

    pub fn working_keys(&self) -> Result<Option<WorkingKeys<'a>>, DecodeError> {
        match self.bytes(62) {
            None => Ok(None),
            Some(bytes) => WorkingKeys::parse(bytes)
                .map(Some)
                .map_err(|e| DecodeError::field_error(62, FieldError::Sub(e))),
        }
    }
}
