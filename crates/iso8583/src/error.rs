//! Every way a message can be wrong, as data: each error names the part or field and why, so
//! the switch can map it to a response code and a log line without parsing strings.

use core::fmt;

use crate::spec::Format;

/// What is wrong with one field's bytes or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("not defined in this dialect")]
    Undefined,
    #[error("truncated: {needed} bytes needed, {available} left")]
    Truncated { needed: usize, available: usize },
    #[error("length prefix is not BCD")]
    LengthNotBcd,
    #[error("length {len} exceeds max {max}")]
    TooLong { len: usize, max: u16 },
    #[error("length {len}, must be exactly {expected}")]
    WrongLength { len: usize, expected: u16 },
    #[error("nibble {nibble:X} at digit {pos} is not a decimal digit")]
    NotDigit { pos: usize, nibble: u8 },
    #[error("pad nibble {nibble:X} is neither 0 nor F")]
    BadPad { nibble: u8 },
    #[error("byte 0x{byte:02X} at offset {pos} is not allowed in format {format}")]
    BadByte {
        pos: usize,
        byte: u8,
        format: Format,
    },
    #[error("character {ch:?} at {pos} is not allowed in format {format}")]
    BadChar {
        pos: usize,
        ch: char,
        format: Format,
    },
    #[error("format {actual} cannot take {expected}")]
    WrongFormat {
        actual: Format,
        expected: &'static str,
    },
    #[error("{0}")]
    Sub(#[from] SubfieldError),
}

/// What is wrong inside a structured field (48, 53, 60, 61, 62).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubfieldError {
    #[error("length {len} is not {expected}")]
    Length { len: usize, expected: &'static str },
    #[error("sub-field {sub}: {why}")]
    Value {
        sub: &'static str,
        why: &'static str,
    },
    #[error("sub-field {sub}: {value} does not fit in {width} digits")]
    TooWide {
        sub: &'static str,
        value: u64,
        width: usize,
    },
    #[error("record count {count} exceeds max {max}")]
    TooManyRecords { count: usize, max: usize },
}

/// The part of a frame before the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    LengthPrefix,
    Tpdu,
    RoutingBlock,
    Header,
    Mti,
    Bitmap,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::LengthPrefix => "length prefix",
            Part::Tpdu => "TPDU",
            Part::RoutingBlock => "routing block",
            Part::Header => "header",
            Part::Mti => "MTI",
            Part::Bitmap => "bitmap",
        })
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{part}: truncated, {needed} bytes needed, {available} left")]
    Truncated {
        part: Part,
        needed: usize,
        available: usize,
    },
    #[error("frame: length {len} exceeds max {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("frame: length prefix says {declared} bytes, {actual} follow")]
    FrameLength { declared: usize, actual: usize },
    #[error("TPDU: first byte 0x{id:02X}, expected 0x60")]
    TpduId { id: u8 },
    #[error("routing block: length {len} exceeds max {max}")]
    RoutingBlockTooLong { len: usize, max: usize },
    #[error("header: {} is not BCD", Hex(.bytes))]
    HeaderNotBcd { bytes: [u8; 6] },
    #[error("MTI: {} is not BCD", Hex(.bytes))]
    MtiNotBcd { bytes: [u8; 2] },
    #[error("bitmap: bit 1 set, but only the primary bitmap (fields 2-64) is supported")]
    SecondaryBitmap,
    #[error("field {field}: {error}")]
    Field { field: u8, error: FieldError },
    #[error("{count} bytes left over after field {after}{}", LastVar(*.last_variable))]
    TrailingBytes {
        count: usize,
        after: u8,
        last_variable: Option<u8>,
    },
}

impl DecodeError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<u8> {
        match self {
            DecodeError::Field { field, .. } => Some(*field),
            DecodeError::TrailingBytes { last_variable, .. } => *last_variable,
            _ => None,
        }
    }

    pub(crate) fn field_error(field: u8, error: impl Into<FieldError>) -> Self {
        DecodeError::Field {
            field,
            error: error.into(),
        }
    }
}

/// Why a value could not be set or a message not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field {field}: {error}")]
    Field { field: u8, error: FieldError },
    #[error("frame: length {len} exceeds max {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("header: {0}")]
    Header(&'static str),
}

impl EncodeError {
    pub(crate) fn field_error(field: u8, error: impl Into<FieldError>) -> Self {
        EncodeError::Field {
            field,
            error: error.into(),
        }
    }
}

/// Upper-case hex for error messages and Display impls.
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

struct LastVar(Option<u8>);

impl fmt::Display for LastVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(
                f,
                " (the length prefix of field {n} disagrees with its data?)"
            ),
            None => Ok(()),
        }
    }
}
