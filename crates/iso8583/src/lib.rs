//! The CUP POS dialect of ISO 8583: one field table, a codec generic over it, and the framing
//! (length, TPDU, header) around it. No IO; decoding borrows its input and never allocates.
//!
//! ```
//! use iso8583::{Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};
//!
//! let mut request = MessageBuilder::new(Mti::FINANCIAL);
//! request.set_digits(3, "000000")?.set_amount(1234)?.set_stan(42)?.set_text(41, "12345678")?;
//! let head = FrameHead {
//!     tpdu: Tpdu { destination: [0x00, 0x01], source: [0x00, 0x00] },
//!     header: Header::from_bytes([0x60, 0x22, 0x00, 0x00, 0x00, 0x00])?,
//! };
//! let mut wire = Vec::new();
//! request.encode_frame(&head, &mut wire)?;
//!
//! let frame = Frame::decode(&wire)?;
//! assert_eq!(frame.message.amount(), Some(1234));
//! assert_eq!(frame.message.text(41), Some("12345678"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod codes;
mod digits;
mod error;
mod frame;
mod message;
pub mod spec;
mod subfields;
mod txn;

pub use builder::{Compose, MessageBuilder};
pub use codes::{Mti, MtiError, ProcessingCode, ResponseCode, ResponseCodeSyntax};
pub use digits::Digits;
pub use error::{DecodeError, EncodeError, FieldError, Part, SubfieldError};
pub use frame::{
    FRAME_LEN_MAX, Frame, FrameHead, HEADER_LEN, Header, ProcessingRequirement,
    ROUTING_BLOCK_BODY_MAX, ROUTING_BLOCK_TAG, TPDU_LEN, Tpdu, frame_len,
};
pub use message::{Field, Message};
pub use spec::{CUP_POS, CUP_POS_SM4, Dialect, FieldSpec, Format};
pub use subfields::{
    BatchRecord, BatchUpload, BatchUploadEnd, CardOrganisation, ExtraDigits, Field48, Field60,
    Field61, KeyLayout, KeySlot, SecurityControl, SettleResult, SettlementTotals, Totals,
    WorkingKeys,
};
pub use txn::{BatchUploadKind, Financial, SignInKeys, TxnKind};
