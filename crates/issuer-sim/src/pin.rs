//! PIN verification over the HSM: the issuer stores a verification value per card and checks
//! the PIN block the switch translated to its zone PIN key, never seeing a clear PIN.

use std::sync::Arc;

use paycrypto::{EncryptedPinBlock, Hsm, HsmError, KeyHandle, PinVerificationValue};

use crate::book::{PinCheck, PinVerifier};
use crate::model::Pan;

/// Verifies PIN blocks under one issuer's ZPK held in an HSM.
#[derive(Clone)]
pub struct HsmPinVerifier {
    hsm: Arc<dyn Hsm>,
    zpk: KeyHandle,
}

impl std::fmt::Debug for HsmPinVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmPinVerifier")
            .field("zpk", &self.zpk)
            .finish_non_exhaustive()
    }
}

impl HsmPinVerifier {
    pub fn new(hsm: Arc<dyn Hsm>, zpk: KeyHandle) -> Self {
        Self { hsm, zpk }
    }

    pub fn zpk(&self) -> KeyHandle {
        self.zpk
    }

    pub fn hsm(&self) -> &Arc<dyn Hsm> {
        &self.hsm
    }

    /// Card issuance: the value to store for `pin` on this card.
    pub fn enrol(&self, pan: &Pan, pin: &str) -> Result<PinVerificationValue, HsmError> {
        self.hsm.pin_verification_value(pan.expose_digits(), pin)
    }
}

impl PinVerifier for HsmPinVerifier {
    fn verify(
        &self,
        pan: &Pan,
        block: &EncryptedPinBlock,
        stored: &PinVerificationValue,
    ) -> PinCheck {
        match self
            .hsm
            .verify_pin(self.zpk, block, pan.expose_digits(), stored)
        {
            Ok(true) => PinCheck::Correct,
            Ok(false) => PinCheck::Wrong,
            Err(err) if err.is_bad_pin_block() => PinCheck::Unreadable,
            Err(_) => PinCheck::Fault,
        }
    }
}
