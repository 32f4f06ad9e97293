//! Framing: the 2-byte length, TPDU, optional dial-up routing block and 6-byte header around a
//! message. Decoding borrows the input; encoding appends to a caller's buffer.

use core::fmt;

use crate::builder::MessageBuilder;
use crate::digits::{bcd_byte, nibble};
use crate::error::{DecodeError, EncodeError, Hex, Part};
use crate::message::Message;
use crate::spec::{CUP_POS_MESSAGE_LEN_MAX, Dialect};

/// Largest frame, in bytes after the 2-byte length prefix, that we read or write. A legal CUP
/// POS frame is well below it; anything larger is garbage or an attack.
pub const FRAME_LEN_MAX: usize = 4096;

/// Bytes of a TPDU.
pub const TPDU_LEN: usize = 5;
/// Bytes of a header.
pub const HEADER_LEN: usize = 6;

/// First bytes of the routing block some dial-up gateways insert between TPDU and header.
pub const ROUTING_BLOCK_TAG: [u8; 3] = *b"LRI";
/// Our reading of the block: `"LRI"`, then a 2-byte big-endian count of the bytes that follow
/// (0x001C = 28 in every capture we know: two 8-byte BCD addresses and 12 bytes of gateway
/// data), so the block is 5 + count bytes. Counts above this are refused.
pub const ROUTING_BLOCK_BODY_MAX: usize = 64;

const _: () = assert!(
    FRAME_LEN_MAX >= TPDU_LEN + 5 + ROUTING_BLOCK_BODY_MAX + HEADER_LEN + CUP_POS_MESSAGE_LEN_MAX
);
const _: () = assert!(FRAME_LEN_MAX <= u16::MAX as usize);

/// Transport protocol data unit: `60`, destination address, source address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tpdu {
    pub destination: [u8; 2],
    pub source: [u8; 2],
}

impl Tpdu {
    pub const ID: u8 = 0x60;

    pub fn from_bytes(bytes: [u8; TPDU_LEN]) -> Result<Tpdu, DecodeError> {
        let [id, d0, d1, s0, s1] = bytes;
        if id != Self::ID {
            return Err(DecodeError::TpduId { id });
        }
        Ok(Tpdu {
            destination: [d0, d1],
            source: [s0, s1],
        })
    }

    pub fn to_bytes(self) -> [u8; TPDU_LEN] {
        let ([d0, d1], [s0, s1]) = (self.destination, self.source);
        [Self::ID, d0, d1, s0, s1]
    }

    /// The TPDU of the reply: destination and source swapped.
    pub fn reply(self) -> Tpdu {
        Tpdu {
            destination: self.source,
            source: self.destination,
        }
    }
}

impl fmt::Display for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.to_bytes()))
    }
}

impl fmt::Debug for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tpdu({self})")
    }
}

/// What the host asks the terminal to do next (header digit 8).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessingRequirement(u8);

impl ProcessingRequirement {
    pub const NONE: Self = Self(0);
    pub const DOWNLOAD_MAGSTRIPE_PARAMETERS: Self = Self(1);
    pub const UPLOAD_STATUS: Self = Self(2);
    pub const SIGN_IN_AGAIN: Self = Self(3);
    pub const UPDATE_IC_PUBLIC_KEYS: Self = Self(4);
    pub const DOWNLOAD_IC_PARAMETERS: Self = Self(5);
    pub const TMS: Self = Self(6);
    pub const CARD_BIN_BLACKLIST: Self = Self(7);
    pub const EXCHANGE_RATES: Self = Self(8);

    /// A decimal digit.
    pub const fn new(digit: u8) -> Option<Self> {
        if digit <= 9 { Some(Self(digit)) } else { None }
    }

    pub const fn digit(self) -> u8 {
        self.0
    }
}

impl fmt::Display for ProcessingRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ProcessingRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessingRequirement({})", self.0)
    }
}

/// The 6-byte BCD header: application type n2, software version n2, terminal status n1,
/// processing requirement n1, software sub-version n6.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header([u8; HEADER_LEN]);

impl Header {
    pub fn from_bytes(bytes: [u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        if bytes.iter().all(|b| bcd_byte(*b).is_some()) {
            Ok(Header(bytes))
        } else {
            Err(DecodeError::HeaderNotBcd { bytes })
        }
    }

    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        self.0
    }

    fn digit(&self, i: usize) -> u8 {
        nibble(&self.0, i)
    }

    /// 60 magstripe, 61 IC.
    pub fn application_type(&self) -> u8 {
        self.digit(0) * 10 + self.digit(1)
    }

    pub fn software_version(&self) -> u8 {
        self.digit(2) * 10 + self.digit(3)
    }

    pub fn terminal_status(&self) -> u8 {
        self.digit(4)
    }

    pub fn processing_requirement(&self) -> ProcessingRequirement {
        ProcessingRequirement(self.digit(5))
    }

    pub fn sub_version(&self) -> u32 {
        (6..12).fold(0, |acc, i| acc * 10 + u32::from(self.digit(i)))
    }

    /// The same header with the processing-requirement digit replaced: how the host asks the
    /// terminal to download or sign in again.
    pub fn with_processing_requirement(self, requirement: ProcessingRequirement) -> Header {
        let mut bytes = self.0;
        if let Some(b) = bytes.get_mut(2) {
            *b = (*b & 0xF0) | requirement.0;
        }
        Header(bytes)
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.0))
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Header({self})")
    }
}

/// What precedes the message in a frame we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub tpdu: Tpdu,
    pub header: Header,
}

impl FrameHead {
    /// The head of the reply: TPDU swapped, header echoed.
    pub fn reply(&self) -> FrameHead {
        FrameHead {
            tpdu: self.tpdu.reply(),
            header: self.header,
        }
    }
}

/// A decoded frame, borrowing the input.
#[derive(Clone)]
pub struct Frame<'a> {
    pub head: FrameHead,
    /// The dial-up routing block, tag included, if a gateway inserted one.
    pub routing: Option<&'a [u8]>,
    pub message: Message<'a>,
}

/// The routing block by its length only: it carries gateway addresses and may carry the
/// calling line's number. The message prints as its own `Debug` does (no field values).
impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("head", &self.head)
            .field("routing_len", &self.routing.map(<[u8]>::len))
            .field("message", &self.message)
            .finish()
    }
}

/// The frame length a 2-byte prefix announces, refused above [`FRAME_LEN_MAX`]: what a
/// transport reads before it reads the rest.
pub fn frame_len(prefix: [u8; 2]) -> Result<usize, DecodeError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > FRAME_LEN_MAX {
        return Err(DecodeError::FrameTooLong {
            len,
            max: FRAME_LEN_MAX,
        });
    }
    Ok(len)
}

impl<'a> Frame<'a> {
    /// Decodes a CUP POS frame starting at the 2-byte length prefix; the input must be exactly
    /// one frame. The message is read by the two-dialect rule of [`Message::decode`].
    pub fn decode(input: &'a [u8]) -> Result<Self, DecodeError> {
        let rest = Self::strip_prefix(input)?;
        Self::decode_unprefixed(rest)
    }

    /// Decodes with one dialect only, no fallback.
    pub fn decode_with(dialect: &'static Dialect, input: &'a [u8]) -> Result<Self, DecodeError> {
        let rest = Self::strip_prefix(input)?;
        Self::decode_unprefixed_with(dialect, rest)
    }

    /// Checks the 2-byte length prefix against the bytes that follow it.
    fn strip_prefix(input: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        let (prefix, rest) = input
            .split_first_chunk::<2>()
            .ok_or(DecodeError::Truncated {
                part: Part::LengthPrefix,
                needed: 2,
                available: input.len(),
            })?;
        let declared = frame_len(*prefix)?;
        if declared != rest.len() {
            return Err(DecodeError::FrameLength {
                declared,
                actual: rest.len(),
            });
        }
        Ok(rest)
    }

    /// Decodes a frame whose length prefix the transport already consumed: input starts at
    /// the TPDU. The message is read by the two-dialect rule of [`Message::decode`].
    pub fn decode_unprefixed(input: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_unprefixed_by(input, Message::decode)
    }

    /// What can be read of a frame whose message does not decode whole: its TPDU and header
    /// whole (`None` otherwise), then [`Message::decode_readable_part`].
    pub fn decode_readable_part(input: &'a [u8]) -> Option<Self> {
        Self::decode_unprefixed_by(input, |rest| {
            Message::decode_readable_part(rest).ok_or(DecodeError::Truncated {
                part: Part::Mti,
                needed: 10,
                available: rest.len(),
            })
        })
        .ok()
    }

    pub fn decode_unprefixed_with(
        dialect: &'static Dialect,
        input: &'a [u8],
    ) -> Result<Self, DecodeError> {
        Self::decode_unprefixed_by(input, |rest| Message::decode_with(dialect, rest))
    }

    fn decode_unprefixed_by(
        input: &'a [u8],
        decode: impl FnOnce(&'a [u8]) -> Result<Message<'a>, DecodeError>,
    ) -> Result<Self, DecodeError> {
        if input.len() > FRAME_LEN_MAX {
            return Err(DecodeError::FrameTooLong {
                len: input.len(),
                max: FRAME_LEN_MAX,
            });
        }
        let truncated = |part, needed, rest: &[u8]| DecodeError::Truncated {
            part,
            needed,
            available: rest.len(),
        };
        let (tpdu, rest) = input
            .split_first_chunk::<TPDU_LEN>()
            .ok_or_else(|| truncated(Part::Tpdu, TPDU_LEN, input))?;
        let tpdu = Tpdu::from_bytes(*tpdu)?;
        let (routing, rest) = split_routing_block(rest)?;
        let (header, rest) = rest
            .split_first_chunk::<HEADER_LEN>()
            .ok_or_else(|| truncated(Part::Header, HEADER_LEN, rest))?;
        let header = Header::from_bytes(*header)?;
        let message = decode(rest)?;
        Ok(Frame {
            head: FrameHead { tpdu, header },
            routing,
            message,
        })
    }
}

/// Splits off a routing block if `input` starts with one.
fn split_routing_block(input: &[u8]) -> Result<(Option<&[u8]>, &[u8]), DecodeError> {
    match input.split_first_chunk::<5>() {
        Some(([b'L', b'R', b'I', hi, lo], _)) => {
            let body = usize::from(u16::from_be_bytes([*hi, *lo]));
            if body > ROUTING_BLOCK_BODY_MAX {
                return Err(DecodeError::RoutingBlockTooLong {
                    len: body,
                    max: ROUTING_BLOCK_BODY_MAX,
                });
            }
            let (block, rest) = input
                .split_at_checked(5 + body)
                .ok_or(DecodeError::Truncated {
                    part: Part::RoutingBlock,
                    needed: 5 + body,
                    available: input.len(),
                })?;
            Ok((Some(block), rest))
        }
        _ => Ok((None, input)),
    }
}

impl MessageBuilder {
    /// Appends a whole frame (length prefix, TPDU, header, message) to `out`. No routing block
    /// is written.
    pub fn encode_frame(&self, head: &FrameHead, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = begin_frame(head, out);
        self.encode(out);
        finish_frame(out, start)
    }

    /// Appends a whole frame whose field 64 is `mac` computed over the MAC input (MTI through
    /// the last field before 64). Any field 64 already set is ignored.
    pub fn encode_frame_with_mac<E: From<EncodeError>>(
        &self,
        head: &FrameHead,
        out: &mut Vec<u8>,
        mac: impl FnOnce(&[u8]) -> Result<[u8; 8], E>,
    ) -> Result<(), E> {
        let start = begin_frame(head, out);
        let mac_start = self.encode_mac_input(out);
        match mac(out.get(mac_start..).unwrap_or_default()) {
            Ok(value) => out.extend_from_slice(&value),
            Err(e) => {
                // Leave no half frame behind in a reused buffer, nor its card number in the
                // spare capacity truncating keeps.
                wipe_from(out, start);
                return Err(e);
            }
        }
        Ok(finish_frame(out, start)?)
    }
}

/// Zeroes `out` from `start`, then cuts it there: a frame given up leaves nothing readable
/// behind in the buffer's capacity.
fn wipe_from(out: &mut Vec<u8>, start: usize) {
    if let Some(tail) = out.get_mut(start..) {
        zeroize::Zeroize::zeroize(tail);
    }
    out.truncate(start);
}

/// Writes a placeholder length, the TPDU and the header; returns where the prefix is.
fn begin_frame(head: &FrameHead, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&head.tpdu.to_bytes());
    out.extend_from_slice(&head.header.bytes());
    start
}

/// Patches the length prefix at `start`; refuses (and removes) a frame over the cap.
fn finish_frame(out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
    let len = out.len() - start - 2;
    let prefix = u16::try_from(len).ok().filter(|_| len <= FRAME_LEN_MAX);
    match (prefix, out.get_mut(start..start + 2)) {
        (Some(prefix), Some(slot)) => {
            slot.copy_from_slice(&prefix.to_be_bytes());
            Ok(())
        }
        _ => {
            wipe_from(out, start);
            Err(EncodeError::FrameTooLong {
                len,
                max: FRAME_LEN_MAX,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Mti;

    #[test]
    fn header_digits_and_processing_requirement() {
        let h = Header::from_bytes([0x61, 0x31, 0x12, 0x34, 0x56, 0x78]).unwrap();
        assert_eq!((h.application_type(), h.software_version()), (61, 31));
        assert_eq!(h.terminal_status(), 1);
        assert_eq!(
            h.processing_requirement(),
            ProcessingRequirement::UPLOAD_STATUS
        );
        assert_eq!(h.sub_version(), 345_678);
        let again = h.with_processing_requirement(ProcessingRequirement::SIGN_IN_AGAIN);
        assert_eq!(again.bytes(), [0x61, 0x31, 0x13, 0x34, 0x56, 0x78]);
        assert_eq!(again.to_string(), "613113345678");
        assert_eq!(
            Header::from_bytes([0x60, 0x22, 0x0A, 0, 0, 0]),
            Err(DecodeError::HeaderNotBcd {
                bytes: [0x60, 0x22, 0x0A, 0, 0, 0]
            })
        );
    }

    #[test]
    fn tpdu_reply_swaps_addresses() {
        let t = Tpdu::from_bytes([0x60, 0x10, 0x12, 0x00, 0x07]).unwrap();
        assert_eq!(t.reply().to_bytes(), [0x60, 0x00, 0x07, 0x10, 0x12]);
        assert_eq!(t.reply().reply(), t);
        assert_eq!(
            Tpdu::from_bytes([0x68, 0, 0, 0, 0]),
            Err(DecodeError::TpduId { id: 0x68 })
        );
    }

    #[test]
    fn frame_len_is_capped() {
        assert_eq!(frame_len([0x10, 0x00]), Ok(4096));
        assert_eq!(
            frame_len([0x10, 0x01]),
            Err(DecodeError::FrameTooLong {
                len: 4097,
                max: FRAME_LEN_MAX
            })
        );
    }

    #[test]
    fn failed_mac_leaves_the_buffer_as_it_was() {
        let head = FrameHead {
            tpdu: Tpdu {
                destination: [0, 1],
                source: [0, 0],
            },
            header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
        };
        let mut b = MessageBuilder::new(Mti::FINANCIAL_RESPONSE);
        b.set_stan(1).unwrap();
        let mut out = vec![1, 2, 3];
        let result = b.encode_frame_with_mac(&head, &mut out, |_| Err(EncodeError::Header("hsm")));
        assert_eq!(result, Err(EncodeError::Header("hsm")));
        assert_eq!(out, [1, 2, 3]);
    }
}
