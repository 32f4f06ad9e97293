//! Payment cryptography for shoudan: DES/TDES/SM4 keys and check values, ISO 9564 format-0 PIN
//! blocks, POS MACs (CUP ECB, ANSI X9.19, SM4 fold), the field 62 working-key hierarchy, and an
//! `Hsm` trait with a software implementation. No IO, no runtime: randomness comes in through
//! [`RandomSource`] so simulations stay deterministic.
//!
//! Secrets (keys, PINs, clear PIN blocks) never implement `Display`, their `Debug` prints at most a
//! key check value, and their buffers are zeroised on drop.

mod ct;
mod dea;
pub mod field62;
pub mod hex;
pub mod hsm;
pub mod key;
pub mod mac;
pub mod pin;
pub mod random;
pub mod track;

pub use field62::{
    FailedKeys, Field62Error, Field62Keys, Field62Slot, IssuedKeys, KeyScheme, MakLength,
    WorkingKeyRole, WorkingKeys, decode_field62, generate, unwrap_field62,
};
pub use hex::HexError;
pub use hsm::{
    Hsm, HsmError, IssuedWorkingKeys, KeyHandle, KeyInfo, KeySpec, KeyUsage, MasterKey,
    PinVerificationValue, SoftHsm,
};
pub use key::{DesKey, DesKeyLength, Kcv, Key, KeyAlgorithm, KeyError, Sm4Key};
pub use mac::{MAC_LEN, MacAlgorithm, MacError};
pub use pin::{ClearPin, ClearPinBlock, EncryptedPinBlock, PanDigits, PinError};
pub use random::{DeterministicRandom, OsRandom, RandomError, RandomSource};
pub use zeroize::Zeroizing;
