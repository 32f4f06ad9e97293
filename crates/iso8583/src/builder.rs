//! Building and encoding a message: an owned value, set field by field with typed setters that
//! check the dialect table, then encoded into a caller's reused buffer.

use core::fmt;

use zeroize::Zeroize;

use crate::codes::{Mti, ProcessingCode, ResponseCode};
use crate::digits::{ascii_digits, pack, to_bcd_byte};
use crate::error::{EncodeError, FieldError};
use crate::message::{Message, is_printable};
use crate::spec::{CUP_POS, Dialect, FIELD_COUNT, FieldSpec, Format, LenRule};

#[derive(Clone, Copy)]
struct OwnedSlot {
    start: usize,
    end: usize,
    units: u16,
}

/// A message under construction. Field data is kept packed, as it will go on the wire, in one
/// buffer that is zeroised on `clear` and on drop (it may hold a PAN, tracks or a PIN block).
#[derive(Clone)]
pub struct MessageBuilder {
    dialect: &'static Dialect,
    mti: Mti,
    slots: [Option<OwnedSlot>; FIELD_COUNT],
    data: Vec<u8>,
}

/// Something that knows how to write itself into one field (the sub-field structures of 48,
/// 53, 60, 61, 62).
pub trait Compose {
    /// The field it fills.
    const FIELD: u8;
    fn compose(&self, builder: &mut MessageBuilder) -> Result<(), EncodeError>;
}

impl MessageBuilder {
    /// An empty CUP POS message.
    pub fn new(mti: Mti) -> Self {
        Self::with_dialect(&CUP_POS, mti)
    }

    pub fn with_dialect(dialect: &'static Dialect, mti: Mti) -> Self {
        Self {
            dialect,
            mti,
            slots: [None; FIELD_COUNT],
            data: Vec::with_capacity(256),
        }
    }

    /// A builder holding every field of a decoded message, byte for byte.
    pub fn from_message(message: &Message<'_>) -> Self {
        let mut builder = Self::with_dialect(message.dialect(), message.mti());
        for field in message.fields() {
            builder.put(field.number(), field.len(), |out| {
                out.extend_from_slice(field.data())
            });
        }
        builder
    }

    /// Empties the builder for reuse, keeping its buffer.
    pub fn clear(&mut self, mti: Mti) {
        self.data.zeroize();
        self.data.clear();
        self.slots = [None; FIELD_COUNT];
        self.mti = mti;
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) -> &mut Self {
        self.mti = mti;
        self
    }

    pub fn has(&self, number: u8) -> bool {
        matches!(self.slots.get(usize::from(number)), Some(Some(_)))
    }

    pub fn remove(&mut self, number: u8) -> &mut Self {
        if let Some(slot) = self.slots.get_mut(usize::from(number)) {
            *slot = None;
        }
        self
    }

    /// The packed data bytes of field `number` as they will go on the wire.
    pub fn data(&self, number: u8) -> Option<&[u8]> {
        let slot = (*self.slots.get(usize::from(number))?)?;
        self.data.get(slot.start..slot.end)
    }

    fn spec(&self, number: u8) -> Result<&'static FieldSpec, EncodeError> {
        let spec = if (2..=64).contains(&number) {
            self.dialect.field(number)
        } else {
            None
        };
        spec.ok_or(EncodeError::field_error(number, FieldError::Undefined))
    }

    /// Checks `units` against the spec's length rule.
    fn check_len(spec: &FieldSpec, units: usize) -> Result<(), FieldError> {
        match spec.len {
            LenRule::Fixed if units != usize::from(spec.max) => Err(FieldError::WrongLength {
                len: units,
                expected: spec.max,
            }),
            _ if units > usize::from(spec.max) => Err(FieldError::TooLong {
                len: units,
                max: spec.max,
            }),
            _ => Ok(()),
        }
    }

    /// Appends field data produced by `write` and records it as field `number`. Callers have
    /// checked length and content.
    fn put(&mut self, number: u8, units: usize, write: impl FnOnce(&mut Vec<u8>)) {
        // Room for the longest the field can be, grown here rather than by `Vec`: a buffer
        // `Vec` outgrows is freed as it is, and this one may hold a PAN, track data or a PIN
        // block. The old one is wiped once its bytes are copied.
        let longest = self.dialect.field(number).map_or(0, |f| f.wire_len_max());
        if self.data.capacity() - self.data.len() < longest {
            let wanted = (self.data.len() + longest).max(self.data.capacity() * 2);
            let mut bigger = Vec::with_capacity(wanted);
            bigger.extend_from_slice(&self.data);
            self.data.zeroize();
            self.data = bigger;
        }
        let start = self.data.len();
        write(&mut self.data);
        let end = self.data.len();
        if let (Some(slot), Ok(units)) = (
            self.slots.get_mut(usize::from(number)),
            u16::try_from(units),
        ) {
            *slot = Some(OwnedSlot { start, end, units });
        }
    }

    /// Sets n field `number` from decimal digits (exact length for fixed fields). Also takes
    /// digits for a z field.
    pub fn set_digits(&mut self, number: u8, digits: &str) -> Result<&mut Self, EncodeError> {
        self.set_digit_bytes(number, digits.as_bytes())
    }

    pub(crate) fn set_digit_bytes(
        &mut self,
        number: u8,
        digits: &[u8],
    ) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        let err = |e| EncodeError::field_error(number, e);
        if !spec.format.is_nibble() {
            return Err(err(FieldError::WrongFormat {
                actual: spec.format,
                expected: "digits",
            }));
        }
        Self::check_len(spec, digits.len()).map_err(err)?;
        if let Some(pos) = digits.iter().position(|b| !b.is_ascii_digit()) {
            let ch = char::from(digits.get(pos).copied().unwrap_or(0));
            return Err(err(FieldError::BadChar {
                pos,
                ch,
                format: spec.format,
            }));
        }
        let (align, pad) = (spec.align, spec.format.pad_nibble());
        self.put(number, digits.len(), |out| {
            pack(
                out,
                digits.iter().map(|d| d - b'0'),
                digits.len(),
                align,
                pad,
            );
        });
        Ok(self)
    }

    /// Sets n field `number` to `value`: zero-filled to the length of a fixed field, the
    /// shortest digits for a variable one.
    pub fn set_number(&mut self, number: u8, value: u64) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        let natural = value.checked_ilog10().map_or(1, |d| d as usize + 1);
        let width = match spec.len {
            LenRule::Fixed => usize::from(spec.max).max(natural),
            _ => natural,
        };
        let mut buf = [0u8; 20];
        let digits = ascii_digits(value, width, &mut buf).ok_or(EncodeError::field_error(
            number,
            FieldError::TooLong {
                len: width,
                max: spec.max,
            },
        ))?;
        self.set_digit_bytes(number, digits)
    }

    /// Sets z field `number` (track data): digits, `=` or `D` for the separator, and the other
    /// hex letters that encrypted tracks carry.
    pub fn set_track(&mut self, number: u8, track: &str) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        let err = |e| EncodeError::field_error(number, e);
        if spec.format != Format::Z {
            return Err(err(FieldError::WrongFormat {
                actual: spec.format,
                expected: "track",
            }));
        }
        let bytes = track.as_bytes();
        Self::check_len(spec, bytes.len()).map_err(err)?;
        if let Some(pos) = bytes.iter().position(|b| track_nibble(*b).is_none()) {
            let ch = track.chars().nth(pos).unwrap_or('?');
            return Err(err(FieldError::BadChar {
                pos,
                ch,
                format: Format::Z,
            }));
        }
        let (align, pad) = (spec.align, spec.format.pad_nibble());
        self.put(number, bytes.len(), |out| {
            let nibbles = bytes.iter().map(|b| track_nibble(*b).unwrap_or(0));
            pack(out, nibbles, bytes.len(), align, pad);
        });
        Ok(self)
    }

    /// Sets an/ans/b field `number` to raw bytes (an: printable ASCII only).
    pub fn set_bytes(&mut self, number: u8, bytes: &[u8]) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        let err = |e| EncodeError::field_error(number, e);
        if spec.format.is_nibble() {
            return Err(err(FieldError::WrongFormat {
                actual: spec.format,
                expected: "bytes",
            }));
        }
        Self::check_len(spec, bytes.len()).map_err(err)?;
        if spec.format == Format::An
            && let Some(pos) = bytes.iter().position(|b| !is_printable(*b))
        {
            let byte = bytes.get(pos).copied().unwrap_or(0);
            return Err(err(FieldError::BadByte {
                pos,
                byte,
                format: Format::An,
            }));
        }
        self.put(number, bytes.len(), |out| out.extend_from_slice(bytes));
        Ok(self)
    }

    /// Sets an/ans field `number` to text.
    pub fn set_text(&mut self, number: u8, text: &str) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        if spec.format == Format::B {
            let error = FieldError::WrongFormat {
                actual: spec.format,
                expected: "text",
            };
            return Err(EncodeError::field_error(number, error));
        }
        self.set_bytes(number, text.as_bytes())
    }

    /// Sets b field `number`.
    pub fn set_binary(&mut self, number: u8, bytes: &[u8]) -> Result<&mut Self, EncodeError> {
        let spec = self.spec(number)?;
        if spec.format != Format::B {
            let error = FieldError::WrongFormat {
                actual: spec.format,
                expected: "binary",
            };
            return Err(EncodeError::field_error(number, error));
        }
        self.set_bytes(number, bytes)
    }

    /// Copies field `number` from a decoded message as it was on the wire (echoing request
    /// fields into a response). Returns whether the field was present.
    pub fn copy_from(&mut self, message: &Message<'_>, number: u8) -> Result<bool, EncodeError> {
        let Some(field) = message.field(number) else {
            return Ok(false);
        };
        let spec = self.spec(number)?;
        if spec != field.spec() {
            let error = FieldError::WrongFormat {
                actual: spec.format,
                expected: "same spec",
            };
            return Err(EncodeError::field_error(number, error));
        }
        self.put(number, field.len(), |out| {
            out.extend_from_slice(field.data())
        });
        Ok(true)
    }

    pub fn set_amount(&mut self, fen: u64) -> Result<&mut Self, EncodeError> {
        self.set_number(4, fen)
    }

    pub fn set_stan(&mut self, stan: u32) -> Result<&mut Self, EncodeError> {
        self.set_number(11, u64::from(stan))
    }

    pub fn set_processing_code(&mut self, code: ProcessingCode) -> Result<&mut Self, EncodeError> {
        self.set_number(3, u64::from(code.value()))
    }

    pub fn set_response_code(&mut self, code: ResponseCode) -> Result<&mut Self, EncodeError> {
        self.set_bytes(39, &code.bytes())
    }

    /// Sets the field a sub-field structure fills.
    pub fn set_composed<C: Compose>(&mut self, value: &C) -> Result<&mut Self, EncodeError> {
        value.compose(self)?;
        Ok(self)
    }

    /// The bitmap the present fields give.
    pub fn bitmap(&self) -> u64 {
        (2u8..=64)
            .filter(|n| self.has(*n))
            .fold(0u64, |map, n| map | (1 << (64 - u32::from(n))))
    }

    /// Appends the message (MTI through the last field) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_until(out, 65);
    }

    /// Appends the MAC input (MTI through the last field before 64, with bit 64 set in the
    /// bitmap) and returns the offset in `out` where it starts. Append the 8-byte MAC to
    /// complete the message.
    pub fn encode_mac_input(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        self.encode_until(out, 64);
        start
    }

    fn encode_until(&self, out: &mut Vec<u8>, stop: u8) {
        // Room for the whole message and a MAC before the first field is written: a buffer
        // grown half-way would free its old allocation, card number and all, unwiped. (MTI,
        // bitmap, the fields' data, a length prefix of at most two bytes each, the MAC.)
        out.reserve(2 + 8 + self.data.len() + 2 * FIELD_COUNT + 8);
        let mut bitmap = self.bitmap();
        if stop == 64 {
            bitmap |= 1;
        }
        out.extend_from_slice(&self.mti.to_bcd());
        out.extend_from_slice(&bitmap.to_be_bytes());
        for number in 2..stop.min(65) {
            let (Some(Some(slot)), Some(spec)) = (
                self.slots.get(usize::from(number)),
                self.dialect.field(number),
            ) else {
                continue;
            };
            // Lengths were checked against the spec when set: below 100 for LL, 10000 for LLL.
            let units = slot.units;
            match spec.len {
                LenRule::Fixed => {}
                LenRule::LlVar => out.push(to_bcd_byte(u8::try_from(units % 100).unwrap_or(0))),
                LenRule::LllVar => {
                    out.push(to_bcd_byte(u8::try_from(units / 100 % 100).unwrap_or(0)));
                    out.push(to_bcd_byte(u8::try_from(units % 100).unwrap_or(0)));
                }
            }
            if let Some(data) = self.data.get(slot.start..slot.end) {
                out.extend_from_slice(data);
            }
        }
    }
}

/// The nibble a track character codes to.
fn track_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' => Some(0xD),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Drop for MessageBuilder {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl fmt::Debug for MessageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<u8> = (2u8..=64).filter(|n| self.has(*n)).collect();
        f.debug_struct("MessageBuilder")
            .field("mti", &self.mti)
            .field("fields", &present)
            .finish()
    }
}
