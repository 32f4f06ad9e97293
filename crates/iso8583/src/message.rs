//! Decoding a message (MTI onwards) into a view that borrows the input: no copy, no heap.
//! Every field is checked against the dialect table once, here, so accessors cannot fail.

use core::fmt;

use crate::codes::{Mti, ProcessingCode, ResponseCode};
use crate::digits::{Digits, bcd_byte, nibble};
use crate::error::{DecodeError, FieldError, Part};
use crate::spec::{Align, CUP_POS, CUP_POS_SM4, Dialect, FIELD_COUNT, FieldSpec, Format, LenRule};

/// Where one present field sits in the input.
#[derive(Clone, Copy)]
struct Slot<'a> {
    /// Digits for n/z, bytes otherwise.
    units: u16,
    /// The data bytes after the length prefix.
    data: &'a [u8],
}

/// One present field of a decoded message.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    number: u8,
    spec: &'static FieldSpec,
    slot: Slot<'a>,
}

impl<'a> Field<'a> {
    pub fn number(&self) -> u8 {
        self.number
    }

    pub fn spec(&self) -> &'static FieldSpec {
        self.spec
    }

    /// Length in the field's units: digits for n/z, bytes for an/ans/b.
    pub fn len(&self) -> usize {
        usize::from(self.slot.units)
    }

    pub fn is_empty(&self) -> bool {
        self.slot.units == 0
    }

    /// The data bytes as on the wire, after the length prefix.
    pub fn data(&self) -> &'a [u8] {
        self.slot.data
    }

    /// The digits of an n or z field; `None` for other formats.
    pub fn digits(&self) -> Option<Digits<'a>> {
        self.spec.format.is_nibble().then(|| {
            Digits::of_field(
                self.slot.data,
                self.len(),
                self.spec.align,
                self.spec.format,
            )
        })
    }

    /// The text of an an/ans field when it is printable ASCII; `None` otherwise (binary
    /// formats, or ans bytes such as GBK text).
    pub fn text(&self) -> Option<&'a str> {
        match self.spec.format {
            Format::An | Format::Ans if self.slot.data.iter().all(|b| is_printable(*b)) => {
                core::str::from_utf8(self.slot.data).ok()
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values stay out of Debug: a field may be a PAN, a track or a PIN block.
        write!(
            f,
            "Field({} {}{})",
            self.number, self.spec.format, self.slot.units
        )
    }
}

pub(crate) const fn is_printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7E)
}

/// A decoded message: MTI, bitmap and fields, borrowing the input bytes.
#[derive(Clone)]
pub struct Message<'a> {
    dialect: &'static Dialect,
    mti: Mti,
    bitmap: u64,
    /// MTI through the last byte.
    wire: &'a [u8],
    /// Offset in `wire` where field 64 starts (or would start).
    mac_start: usize,
    fields: [Option<Slot<'a>>; FIELD_COUNT],
}

/// A message read whole (any fault an error), or as far as it can be read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Whole,
    Part,
}

/// Whether field 64 may be announced by the bitmap but missing from the bytes (a MAC input
/// block, as a terminal hands it to its MAC routine).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MacData {
    Required,
    Absent,
}

impl<'a> Message<'a> {
    /// Decodes a CUP POS message starting at the MTI; the input must end with the last field.
    ///
    /// Field 52 is 8 bytes under a DES PIK and 16 under an SM4 one, and the terminal ID (41)
    /// that would tell us which comes only after it. So the rule is: decode with [`CUP_POS`];
    /// if that fails and the bitmap announces field 52, decode with [`CUP_POS_SM4`] instead;
    /// if that fails too, the [`CUP_POS`] error is the one reported. [`Message::dialect`] and
    /// [`Message::pin_block_len`] say which reading succeeded.
    pub fn decode(input: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_either(input, MacData::Required)
    }

    /// Decodes with one dialect table only, no fallback.
    pub fn decode_with(dialect: &'static Dialect, input: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_inner(dialect, input, MacData::Required, Reading::Whole)
    }

    /// What can be read of a message that does not decode whole: its MTI and
    /// the fields before the first one that cannot be read, the bitmap cut to those (a field
    /// past it is absent, whatever its bit said), or all of them when only bytes after the
    /// last are left over. For a refusal (30, format error) that names the request by the
    /// fields its terminal matches an answer with. `None` without an MTI and a bitmap.
    /// A message announcing a PIN block is read by both dialects (8 and 16 bytes of field
    /// 52), and the reading that gets further kept.
    pub fn decode_readable_part(input: &'a [u8]) -> Option<Self> {
        let des = Self::decode_inner(&CUP_POS, input, MacData::Required, Reading::Part).ok();
        if !announces_pin_block(input) {
            return des;
        }
        let sm4 = Self::decode_inner(&CUP_POS_SM4, input, MacData::Required, Reading::Part).ok();
        match (des, sm4) {
            (Some(des), Some(sm4)) if sm4.bitmap.count_ones() > des.bitmap.count_ones() => {
                Some(sm4)
            }
            (des, sm4) => des.or(sm4),
        }
    }

    /// Decodes a MAC input block: like [`Message::decode`], but when the bitmap has bit 64 the
    /// MAC itself must be absent (the block ends where field 64 would begin).
    pub fn decode_mac_input(input: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_either(input, MacData::Absent)
    }

    /// The two-dialect rule of [`Message::decode`].
    fn decode_either(input: &'a [u8], mac: MacData) -> Result<Self, DecodeError> {
        match Self::decode_inner(&CUP_POS, input, mac, Reading::Whole) {
            Ok(message) => Ok(message),
            Err(standard) if announces_pin_block(input) => {
                Self::decode_inner(&CUP_POS_SM4, input, mac, Reading::Whole).map_err(|_| standard)
            }
            Err(standard) => Err(standard),
        }
    }

    fn decode_inner(
        dialect: &'static Dialect,
        input: &'a [u8],
        mac: MacData,
        reading: Reading,
    ) -> Result<Self, DecodeError> {
        let truncated = |part, needed, rest: &[u8]| DecodeError::Truncated {
            part,
            needed,
            available: rest.len(),
        };
        let (mti_bytes, rest) = input
            .split_first_chunk::<2>()
            .ok_or_else(|| truncated(Part::Mti, 2, input))?;
        let mti = Mti::from_bcd(*mti_bytes).ok_or(DecodeError::MtiNotBcd { bytes: *mti_bytes })?;
        let (bitmap_bytes, mut rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| truncated(Part::Bitmap, 8, rest))?;
        let mut bitmap = u64::from_be_bytes(*bitmap_bytes);
        if bitmap & (1 << 63) != 0 {
            return Err(DecodeError::SecondaryBitmap);
        }

        let mut fields = [None; FIELD_COUNT];
        let mut mac_start = input.len();
        let mut last = 1u8;
        let mut last_variable = None;
        for (number, out) in (2u8..=64).zip(fields.iter_mut().skip(2)) {
            if bitmap & (1 << (64 - u32::from(number))) == 0 {
                continue;
            }
            if number == 64 {
                mac_start = input.len() - rest.len();
                if mac == MacData::Absent {
                    break;
                }
            }
            let read = dialect
                .field(number)
                .ok_or(FieldError::Undefined)
                .and_then(|spec| Ok((spec, read_field(spec, rest)?)));
            let (spec, (slot, after)) = match (read, reading) {
                (Ok(read), _) => read,
                (Err(e), Reading::Whole) => return Err(DecodeError::field_error(number, e)),
                // This field and every one after it are not there.
                (Err(_), Reading::Part) => {
                    let from_here = (1_u64 << (65 - u32::from(number))) - 1;
                    bitmap &= !from_here;
                    rest = &[];
                    mac_start = input.len();
                    break;
                }
            };
            *out = Some(slot);
            rest = after;
            last = number;
            if spec.len != LenRule::Fixed {
                last_variable = Some(number);
            }
        }
        if !rest.is_empty() && reading == Reading::Whole {
            return Err(DecodeError::TrailingBytes {
                count: rest.len(),
                after: last,
                last_variable,
            });
        }
        Ok(Message {
            dialect,
            mti,
            bitmap,
            wire: input,
            mac_start,
            fields,
        })
    }

    pub fn dialect(&self) -> &'static Dialect {
        self.dialect
    }

    /// Bytes of field 52 in the dialect this message was decoded with (8 DES, 16 SM4), whether
    /// or not this message carries a PIN block.
    pub fn pin_block_len(&self) -> Option<usize> {
        self.dialect.pin_block_len()
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// The primary bitmap as on the wire (bit 63 is field 1, bit 0 is field 64).
    pub fn bitmap(&self) -> u64 {
        self.bitmap
    }

    /// The message bytes, MTI through the last field.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// The MAC input: MTI through the last field before 64, exactly as received.
    pub fn mac_input(&self) -> &'a [u8] {
        self.wire.get(..self.mac_start).unwrap_or(self.wire)
    }

    /// Whether the bitmap announces field `number`.
    pub fn has(&self, number: u8) -> bool {
        (2..=64).contains(&number) && self.bitmap & (1 << (64 - u32::from(number))) != 0
    }

    /// Field `number`, if present with data.
    pub fn field(&self, number: u8) -> Option<Field<'a>> {
        let slot = (*self.fields.get(usize::from(number))?)?;
        let spec = self.dialect.field(number)?;
        Some(Field { number, spec, slot })
    }

    /// The present fields in ascending order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        (2u8..=64).filter_map(|n| self.field(n))
    }

    /// Digits of n/z field `number`; `None` if absent or of another format.
    pub fn digits(&self, number: u8) -> Option<Digits<'a>> {
        self.field(number)?.digits()
    }

    /// The number in n field `number` (at most 19 digits); `None` if absent, not numeric or
    /// longer.
    pub fn number(&self, number: u8) -> Option<u64> {
        self.digits(number)?.value()
    }

    /// Text of an/ans field `number` when printable ASCII.
    pub fn text(&self, number: u8) -> Option<&'a str> {
        self.field(number)?.text()
    }

    /// Raw data bytes of field `number`, whatever its format (binary fields: the bytes).
    pub fn bytes(&self, number: u8) -> Option<&'a [u8]> {
        Some(self.field(number)?.data())
    }

    /// Field 4, the amount in fen.
    pub fn amount(&self) -> Option<u64> {
        self.number(4)
    }

    /// Field 11, the terminal trace number.
    pub fn stan(&self) -> Option<u32> {
        self.number(11).and_then(|v| u32::try_from(v).ok())
    }

    pub fn processing_code(&self) -> Option<ProcessingCode> {
        ProcessingCode::new(u32::try_from(self.number(3)?).ok()?)
    }

    pub fn response_code(&self) -> Option<ResponseCode> {
        let data = self.bytes(39)?;
        let pair: [u8; 2] = data.try_into().ok()?;
        ResponseCode::new(pair)
    }

    /// Field 64, the MAC.
    pub fn mac(&self) -> Option<&'a [u8; 8]> {
        self.bytes(64)?.try_into().ok()
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("mti", &self.mti)
            .field("fields", &FieldList(self))
            .finish()
    }
}

struct FieldList<'m, 'a>(&'m Message<'a>);

impl fmt::Debug for FieldList<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.fields().map(|field| field.number()))
            .finish()
    }
}

/// Reads one field at the front of `input`: its length, its data, and checks every byte
/// against the format. Returns the slot and what follows.
/// Whether the bitmap (after a 2-byte MTI) has bit 52 set.
fn announces_pin_block(input: &[u8]) -> bool {
    input
        .get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .is_some_and(|b| u64::from_be_bytes(b) & (1 << (64 - 52)) != 0)
}

fn read_field<'a>(spec: &FieldSpec, input: &'a [u8]) -> Result<(Slot<'a>, &'a [u8]), FieldError> {
    let truncated = |needed, rest: &[u8]| FieldError::Truncated {
        needed,
        available: rest.len(),
    };
    let (units, rest) = match spec.len {
        LenRule::Fixed => (usize::from(spec.max), input),
        LenRule::LlVar => {
            let (prefix, rest) = input.split_first().ok_or_else(|| truncated(1, input))?;
            (
                usize::from(bcd_byte(*prefix).ok_or(FieldError::LengthNotBcd)?),
                rest,
            )
        }
        LenRule::LllVar => {
            let ([hi, lo], rest) = input
                .split_first_chunk::<2>()
                .ok_or_else(|| truncated(2, input))?;
            let hi = bcd_byte(*hi).ok_or(FieldError::LengthNotBcd)?;
            let lo = bcd_byte(*lo).ok_or(FieldError::LengthNotBcd)?;
            (usize::from(hi) * 100 + usize::from(lo), rest)
        }
    };
    if units > usize::from(spec.max) {
        return Err(FieldError::TooLong {
            len: units,
            max: spec.max,
        });
    }
    let wire_len = spec.format.wire_len(units);
    let (data, rest) = rest
        .split_at_checked(wire_len)
        .ok_or_else(|| truncated(wire_len, rest))?;
    check_data(spec, units, data)?;
    let units = u16::try_from(units).map_err(|_| FieldError::TooLong {
        len: units,
        max: spec.max,
    })?;
    Ok((Slot { units, data }, rest))
}

/// Checks a field's data against its format: digits and pad nibble for n/z, characters for an.
pub(crate) fn check_data(spec: &FieldSpec, units: usize, data: &[u8]) -> Result<(), FieldError> {
    match spec.format {
        Format::N | Format::Z => {
            let odd = units % 2 == 1;
            let (first, pad_at) = match spec.align {
                Align::Right if odd => (1, Some(0)),
                Align::Left if odd => (0, Some(units)),
                _ => (0, None),
            };
            if let Some(at) = pad_at {
                let pad = nibble(data, at);
                if pad != 0 && pad != 0xF {
                    return Err(FieldError::BadPad { nibble: pad });
                }
            }
            if spec.format == Format::N
                && let Some(pos) = (first..first + units).find(|&i| nibble(data, i) > 9)
            {
                return Err(FieldError::NotDigit {
                    pos: pos - first,
                    nibble: nibble(data, pos),
                });
            }
            Ok(())
        }
        Format::An => match data.iter().position(|b| !is_printable(*b)) {
            Some(pos) => Err(FieldError::BadByte {
                pos,
                byte: data.get(pos).copied().unwrap_or(0),
                format: Format::An,
            }),
            None => Ok(()),
        },
        Format::Ans | Format::B => Ok(()),
    }
}
