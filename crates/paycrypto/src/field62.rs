//! The sign-in key hierarchy: working keys (PIK, MAK, TDK) carried in field 62 of the 0810,
//! encrypted under the terminal master key (TMK) in ECB mode, each followed by its 4-byte KCV.
//!
//! | 60.3 | layout | TMK |
//! |---|---|---|
//! | 001 | PIK 8+4, MAK 8+4 (24 bytes) | DES/TDES |
//! | 003 | PIK 16+4, MAK 16+4 (40) | DES/TDES |
//! | 004 | 003 then TDK 16+4 (60) | DES/TDES |
//! | 006 | SM4 PIK 16+4, MAK 16+4, TDK 16+4 (60; 40 without TDK is accepted) | SM4 |
//!
//! Single-length MAK in a 16-byte slot (schemes 003/004): many terminals send 8 encrypted key
//! bytes followed by 8 zero bytes. A slot whose last 8 encrypted bytes are zero, or whose last 8
//! decrypted bytes are zero (the clear key padded before encryption), is read as a single-length
//! MAK and its KCV computed with single DES. A real double-length key has either property with
//! probability 2⁻⁶⁴.

use core::fmt;
use core::str::FromStr;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::key::{DesKey, DesKeyLength, KCV_LEN, Kcv, Key, KeyAlgorithm, KeyError, Sm4Key};
use crate::random::{RandomError, RandomSource};

/// The key scheme a terminal asked for in 60.3 of its sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// 001: single-length DES PIK and MAK.
    Single,
    /// 003: double-length PIK and MAK.
    Double,
    /// 004: double-length PIK, MAK and track data key.
    DoubleWithTdk,
    /// 006: SM4 PIK, MAK and track data key.
    Sm4,
}

impl KeyScheme {
    pub const ALL: [Self; 4] = [Self::Single, Self::Double, Self::DoubleWithTdk, Self::Sm4];

    /// The 60.3 network management code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Single => "001",
            Self::Double => "003",
            Self::DoubleWithTdk => "004",
            Self::Sm4 => "006",
        }
    }

    pub const fn describe(self) -> &'static str {
        match self {
            Self::Single => "single-length DES PIK and MAK",
            Self::Double => "double-length 3DES PIK and MAK",
            Self::DoubleWithTdk => "double-length 3DES PIK, MAK and TDK",
            Self::Sm4 => "SM4 PIK, MAK and TDK",
        }
    }

    /// The family the TMK must belong to.
    pub const fn tmk_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::Single | Self::Double | Self::DoubleWithTdk => KeyAlgorithm::Des,
            Self::Sm4 => KeyAlgorithm::Sm4,
        }
    }

    /// Field 62 lengths accepted for this scheme; the first is what `generate` produces.
    pub const fn field_lengths(self) -> &'static [usize] {
        match self {
            Self::Single => &[24],
            Self::Double => &[40],
            Self::DoubleWithTdk => &[60],
            Self::Sm4 => &[60, 40],
        }
    }

    /// Bytes of encrypted key in each slot (the KCV follows).
    const fn slot_key_len(self) -> usize {
        match self {
            Self::Single => 8,
            Self::Double | Self::DoubleWithTdk | Self::Sm4 => 16,
        }
    }

    const fn has_tdk(self) -> bool {
        match self {
            Self::Single | Self::Double => false,
            Self::DoubleWithTdk | Self::Sm4 => true,
        }
    }
}

impl fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for KeyScheme {
    type Err = Field62Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.code() == text)
            .ok_or(Field62Error::UnknownScheme)
    }
}

/// Which working key a field 62 slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkingKeyRole {
    Pik,
    Mak,
    Tdk,
}

impl WorkingKeyRole {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pik => "PIK",
            Self::Mak => "MAK",
            Self::Tdk => "TDK",
        }
    }
}

impl fmt::Display for WorkingKeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// MAK length the host issues under schemes 003/004 (001 is always single, 006 always SM4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MakLength {
    #[default]
    Double,
    /// 8 encrypted key bytes + 8 zero bytes, for terminals that MAC with single DES.
    Single,
}

/// The keys that failed their check values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailedKeys {
    pub pik: bool,
    pub mak: bool,
    pub tdk: bool,
}

impl FailedKeys {
    pub const fn any(self) -> bool {
        self.pik || self.mak || self.tdk
    }
}

impl fmt::Display for FailedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (failed, role) in [
            (self.pik, WorkingKeyRole::Pik),
            (self.mak, WorkingKeyRole::Mak),
            (self.tdk, WorkingKeyRole::Tdk),
        ] {
            if failed {
                if !first {
                    f.write_str(" and ")?;
                }
                f.write_str(role.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Field62Error {
    #[error("unknown key scheme (60.3 must be 001, 003, 004 or 006)")]
    UnknownScheme,
    #[error("scheme {scheme} needs a {expected} TMK, this is a {actual} key")]
    TmkAlgorithm {
        scheme: KeyScheme,
        expected: KeyAlgorithm,
        actual: KeyAlgorithm,
    },
    #[error(
        "scheme {scheme} carries double-length keys: a single DES TMK (8 bytes, or halves that are equal) would weaken them"
    )]
    TmkTooShort { scheme: KeyScheme },
    #[error("field 62 for scheme {scheme} must be {expected} bytes, this one is {actual}")]
    Length {
        scheme: KeyScheme,
        expected: &'static str,
        actual: usize,
    },
    #[error(
        "{failed} failed the check value: the TMK is not this terminal's, or field 62 was altered"
    )]
    KcvMismatch { failed: FailedKeys },
    #[error("could not generate keys: {0}")]
    Random(#[from] RandomError),
    #[error("key material rejected: {0}")]
    Key(#[from] KeyError),
}

/// One decrypted slot of field 62 with both check values, for diagnosis. Holds the clear key.
pub struct Field62Slot {
    role: WorkingKeyRole,
    key: Key,
    received_kcv: Kcv,
    computed_kcv: Kcv,
    single_length_mak: bool,
}

impl Field62Slot {
    pub const fn role(&self) -> WorkingKeyRole {
        self.role
    }

    pub const fn key(&self) -> &Key {
        &self.key
    }

    pub const fn received_kcv(&self) -> Kcv {
        self.received_kcv
    }

    pub const fn computed_kcv(&self) -> Kcv {
        self.computed_kcv
    }

    pub fn is_ok(&self) -> bool {
        crate::ct::ct_eq(self.received_kcv.as_bytes(), self.computed_kcv.as_bytes())
    }

    /// True for an 8-byte MAK found in a 16-byte slot (see the module note).
    pub const fn single_length_mak(&self) -> bool {
        self.single_length_mak
    }
}

/// Every slot of a field 62, decrypted, whether or not its check value matched.
pub struct Field62Keys {
    scheme: KeyScheme,
    pik: Field62Slot,
    mak: Field62Slot,
    tdk: Option<Field62Slot>,
}

impl Field62Keys {
    pub const fn scheme(&self) -> KeyScheme {
        self.scheme
    }

    /// The slots in field order: PIK, MAK, then TDK when present.
    pub fn slots(&self) -> impl Iterator<Item = &Field62Slot> {
        [Some(&self.pik), Some(&self.mak), self.tdk.as_ref()]
            .into_iter()
            .flatten()
    }

    pub fn failed(&self) -> FailedKeys {
        FailedKeys {
            pik: !self.pik.is_ok(),
            mak: !self.mak.is_ok(),
            tdk: self.tdk.as_ref().is_some_and(|t| !t.is_ok()),
        }
    }

    /// The working keys, if every check value matched.
    pub fn verify(self) -> Result<WorkingKeys, Field62Error> {
        let failed = self.failed();
        if failed.any() {
            return Err(Field62Error::KcvMismatch { failed });
        }
        Ok(WorkingKeys {
            pik: self.pik.key,
            mak: self.mak.key,
            tdk: self.tdk.map(|t| t.key),
        })
    }
}

/// A terminal's working keys in clear (terminal side, or inside an HSM).
#[derive(Clone, Debug)]
pub struct WorkingKeys {
    pub pik: Key,
    pub mak: Key,
    pub tdk: Option<Key>,
}

/// What the host sends at sign-in: field 62 and the keys it carries.
#[derive(Debug)]
pub struct IssuedKeys {
    pub field62: Vec<u8>,
    pub keys: WorkingKeys,
}

fn check_tmk(tmk: &Key, scheme: KeyScheme) -> Result<(), Field62Error> {
    if tmk.algorithm() == scheme.tmk_algorithm() {
        if tmk.is_single_des() && scheme != KeyScheme::Single {
            return Err(Field62Error::TmkTooShort { scheme });
        }
        Ok(())
    } else {
        Err(Field62Error::TmkAlgorithm {
            scheme,
            expected: scheme.tmk_algorithm(),
            actual: tmk.algorithm(),
        })
    }
}

fn expected_lengths(scheme: KeyScheme) -> &'static str {
    match scheme {
        KeyScheme::Single => "24",
        KeyScheme::Double => "40",
        KeyScheme::DoubleWithTdk => "60",
        KeyScheme::Sm4 => "40 or 60",
    }
}

/// Decrypts every slot of field 62 and computes each KCV, without judging: for tools that report
/// each key's status. Terminals should call [`decode_field62`].
pub fn unwrap_field62(
    tmk: &Key,
    scheme: KeyScheme,
    field62: &[u8],
) -> Result<Field62Keys, Field62Error> {
    check_tmk(tmk, scheme)?;
    if !scheme.field_lengths().contains(&field62.len()) {
        return Err(Field62Error::Length {
            scheme,
            expected: expected_lengths(scheme),
            actual: field62.len(),
        });
    }
    let slot_len = scheme.slot_key_len() + KCV_LEN;
    let mut slots = field62.chunks_exact(slot_len);
    let mut next = |role| -> Result<Field62Slot, Field62Error> {
        let slot = slots.next().ok_or(Field62Error::Length {
            scheme,
            expected: expected_lengths(scheme),
            actual: field62.len(),
        })?;
        unwrap_slot(tmk, scheme, role, slot)
    };
    let pik = next(WorkingKeyRole::Pik)?;
    let mak = next(WorkingKeyRole::Mak)?;
    let tdk = if field62.len() > 2 * slot_len {
        Some(next(WorkingKeyRole::Tdk)?)
    } else {
        None
    };
    Ok(Field62Keys {
        scheme,
        pik,
        mak,
        tdk,
    })
}

fn unwrap_slot(
    tmk: &Key,
    scheme: KeyScheme,
    role: WorkingKeyRole,
    slot: &[u8],
) -> Result<Field62Slot, Field62Error> {
    let key_len = scheme.slot_key_len();
    let (encrypted, kcv) = slot.split_at_checked(key_len).ok_or(Field62Error::Length {
        scheme,
        expected: expected_lengths(scheme),
        actual: slot.len(),
    })?;
    let received_kcv = Kcv::from_slice(kcv).ok_or(Field62Error::Length {
        scheme,
        expected: expected_lengths(scheme),
        actual: slot.len(),
    })?;
    let mut clear = Zeroizing::new([0u8; 16]);
    let double_des_mak =
        role == WorkingKeyRole::Mak && scheme.tmk_algorithm() == KeyAlgorithm::Des && key_len == 16;
    let zero_tail = |bytes: &[u8]| {
        bytes
            .get(8..)
            .is_some_and(|tail| tail.iter().all(|b| *b == 0))
    };
    let (clear_len, single_length_mak) = if double_des_mak && zero_tail(encrypted) {
        (8, true)
    } else {
        (key_len, false)
    };
    let buf = clear
        .get_mut(..clear_len)
        .ok_or(Field62Error::Key(KeyError::BadLength {
            algorithm: tmk.algorithm(),
            expected: "8 or 16",
            actual: clear_len,
        }))?;
    buf.copy_from_slice(encrypted.get(..clear_len).unwrap_or_default());
    tmk.decrypt_ecb(buf)?;
    let (key_bytes, single_length_mak) = if double_des_mak && !single_length_mak && zero_tail(buf) {
        (buf.get(..8).unwrap_or_default(), true)
    } else {
        (&*buf, single_length_mak)
    };
    let key = match scheme.tmk_algorithm() {
        KeyAlgorithm::Des => Key::Des(DesKey::from_bytes(key_bytes)?),
        KeyAlgorithm::Sm4 => Key::Sm4(Sm4Key::from_bytes(key_bytes)?),
    };
    Ok(Field62Slot {
        role,
        computed_kcv: key.kcv(),
        key,
        received_kcv,
        single_length_mak,
    })
}

/// Terminal side: decrypts field 62 under the TMK and checks every KCV. The error names each
/// key that failed.
pub fn decode_field62(
    tmk: &Key,
    scheme: KeyScheme,
    field62: &[u8],
) -> Result<WorkingKeys, Field62Error> {
    unwrap_field62(tmk, scheme, field62)?.verify()
}

/// Host side: fresh random working keys for `scheme`, and the field 62 that carries them under
/// the TMK. `mak_length` matters only for 003/004. Schemes 004 and 006 include a TDK.
pub fn generate(
    tmk: &Key,
    scheme: KeyScheme,
    mak_length: MakLength,
    rng: &dyn RandomSource,
) -> Result<IssuedKeys, Field62Error> {
    check_tmk(tmk, scheme)?;
    let fresh = |length: DesKeyLength| -> Result<Key, Field62Error> {
        Ok(match scheme {
            KeyScheme::Sm4 => Key::Sm4(Sm4Key::generate(rng)?),
            KeyScheme::Single | KeyScheme::Double | KeyScheme::DoubleWithTdk => {
                Key::Des(DesKey::generate(length, rng)?)
            }
        })
    };
    let (working_len, mak_len) = match (scheme, mak_length) {
        (KeyScheme::Single, _) => (DesKeyLength::Single, DesKeyLength::Single),
        (KeyScheme::Double | KeyScheme::DoubleWithTdk | KeyScheme::Sm4, MakLength::Double) => {
            (DesKeyLength::Double, DesKeyLength::Double)
        }
        (KeyScheme::Double | KeyScheme::DoubleWithTdk | KeyScheme::Sm4, MakLength::Single) => {
            (DesKeyLength::Double, DesKeyLength::Single)
        }
    };
    let keys = WorkingKeys {
        pik: fresh(working_len)?,
        mak: fresh(mak_len)?,
        tdk: if scheme.has_tdk() {
            Some(fresh(working_len)?)
        } else {
            None
        },
    };
    let field62 = encode_field62(tmk, scheme, &keys)?;
    Ok(IssuedKeys { field62, keys })
}

/// Field 62 for existing working keys (a key shorter than its slot is zero-filled after
/// encryption, the single-length MAK convention).
pub fn encode_field62(
    tmk: &Key,
    scheme: KeyScheme,
    keys: &WorkingKeys,
) -> Result<Vec<u8>, Field62Error> {
    check_tmk(tmk, scheme)?;
    let slot_key_len = scheme.slot_key_len();
    let mut out = Vec::with_capacity(3 * (slot_key_len + KCV_LEN));
    for key in [Some(&keys.pik), Some(&keys.mak), keys.tdk.as_ref()]
        .into_iter()
        .flatten()
    {
        let clear = key.expose();
        if key.algorithm() != scheme.tmk_algorithm() || clear.len() > slot_key_len {
            return Err(Field62Error::Key(KeyError::BadLength {
                algorithm: scheme.tmk_algorithm(),
                expected: if slot_key_len == 8 { "8" } else { "8 or 16" },
                actual: clear.len(),
            }));
        }
        let mut slot = Zeroizing::new([0u8; 16]);
        let encrypted = slot.get_mut(..clear.len()).unwrap_or_default();
        encrypted.copy_from_slice(clear);
        tmk.encrypt_ecb(encrypted)?;
        out.extend_from_slice(slot.get(..slot_key_len).unwrap_or_default());
        out.extend_from_slice(key.kcv().as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use crate::random::DeterministicRandom;

    fn des(text: &str) -> Key {
        Key::Des(DesKey::from_hex(text).unwrap())
    }

    #[test]
    fn scheme_codes() {
        for scheme in KeyScheme::ALL {
            assert_eq!(scheme.code().parse::<KeyScheme>().unwrap(), scheme);
        }
        assert_eq!("002".parse::<KeyScheme>(), Err(Field62Error::UnknownScheme));
    }

    #[test]
    fn generate_then_decode_every_scheme() {
        let rng = DeterministicRandom::new(62);
        let des_tmk = des("0123456789ABCDEFFEDCBA9876543210");
        let sm4_tmk = Key::Sm4(Sm4Key::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap());
        for scheme in KeyScheme::ALL {
            for mak_length in [MakLength::Double, MakLength::Single] {
                let tmk = if scheme == KeyScheme::Sm4 {
                    &sm4_tmk
                } else {
                    &des_tmk
                };
                let issued = generate(tmk, scheme, mak_length, &rng).unwrap();
                assert_eq!(issued.field62.len(), scheme.field_lengths()[0], "{scheme}");
                let keys = decode_field62(tmk, scheme, &issued.field62).unwrap();
                assert_eq!(keys.pik.kcv(), issued.keys.pik.kcv());
                assert_eq!(keys.mak.kcv(), issued.keys.mak.kcv());
                assert_eq!(keys.tdk.map(|k| k.kcv()), issued.keys.tdk.map(|k| k.kcv()));
                let expect_mak_len = match (scheme, mak_length) {
                    (KeyScheme::Single, _) | (_, MakLength::Single) if scheme != KeyScheme::Sm4 => {
                        8
                    }
                    _ => 16,
                };
                assert_eq!(keys.mak.len(), expect_mak_len, "{scheme} {mak_length:?}");
            }
        }
    }

    #[test]
    fn single_length_mak_in_double_slot() {
        let tmk = des("0123456789ABCDEFFEDCBA9876543210");
        let rng = DeterministicRandom::new(3);
        let issued = generate(&tmk, KeyScheme::Double, MakLength::Single, &rng).unwrap();
        assert_eq!(
            &issued.field62[28..36],
            &[0u8; 8],
            "8 key bytes then 8 zero bytes"
        );
        let unwrapped = unwrap_field62(&tmk, KeyScheme::Double, &issued.field62).unwrap();
        assert!(unwrapped.slots().nth(1).unwrap().single_length_mak());

        // The other convention: the clear key zero-padded to 16 bytes, then encrypted.
        let mak = DesKey::from_hex("1111111111111111").unwrap();
        let mut slot = [0u8; 16];
        slot[..8].copy_from_slice(&hex::decode("1111111111111111").unwrap());
        tmk.encrypt_ecb(&mut slot).unwrap();
        let mut field = issued.field62.clone();
        field[20..36].copy_from_slice(&slot);
        field[36..40].copy_from_slice(mak.kcv().as_bytes());
        let keys = decode_field62(&tmk, KeyScheme::Double, &field).unwrap();
        assert_eq!(keys.mak.kcv(), mak.kcv());
        assert_eq!(keys.mak.len(), 8);
    }

    #[test]
    fn kcv_failures_name_the_key() {
        let tmk = des("0123456789ABCDEFFEDCBA9876543210");
        let rng = DeterministicRandom::new(4);
        let issued = generate(&tmk, KeyScheme::DoubleWithTdk, MakLength::Double, &rng).unwrap();
        let mut field = issued.field62.clone();
        field[39] ^= 0x01; // MAK check value
        let err = decode_field62(&tmk, KeyScheme::DoubleWithTdk, &field).unwrap_err();
        let failed = FailedKeys {
            pik: false,
            mak: true,
            tdk: false,
        };
        assert_eq!(err, Field62Error::KcvMismatch { failed });
        assert!(err.to_string().starts_with("MAK failed"), "{err}");

        let wrong_tmk = des("00000000000000001111111111111111");
        let err =
            decode_field62(&wrong_tmk, KeyScheme::DoubleWithTdk, &issued.field62).unwrap_err();
        assert_eq!(
            err,
            Field62Error::KcvMismatch {
                failed: FailedKeys {
                    pik: true,
                    mak: true,
                    tdk: true
                }
            }
        );
        assert!(
            err.to_string().starts_with("PIK and MAK and TDK failed"),
            "{err}"
        );
    }

    #[test]
    fn shape_errors() {
        let tmk = des("0123456789ABCDEFFEDCBA9876543210");
        assert_eq!(
            decode_field62(&tmk, KeyScheme::Double, &[0; 39]).unwrap_err(),
            Field62Error::Length {
                scheme: KeyScheme::Double,
                expected: "40",
                actual: 39
            }
        );
        assert_eq!(
            decode_field62(&tmk, KeyScheme::Sm4, &[0; 40]).unwrap_err(),
            Field62Error::TmkAlgorithm {
                scheme: KeyScheme::Sm4,
                expected: KeyAlgorithm::Sm4,
                actual: KeyAlgorithm::Des
            }
        );
    }

    /// The real 0810 from the CUP samples carries a 40-byte field 62 for scheme 003. Its TMK is
    /// not public, so only the shape is checked: it decrypts under any TMK into two slots, and a
    /// made-up TMK fails both check values rather than passing.
    #[test]
    fn real_sample_field62_shape() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/cup-samples/ajsgn_quickstart_0810_signin_response.hex"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let message = hex::decode(text.trim()).unwrap();
        // Field 62 is the last field before none: LLL = 00 40, then 40 bytes to the end.
        let (head, field62) = message.split_at(message.len() - 40);
        assert_eq!(&head[head.len() - 2..], &[0x00, 0x40]);
        assert_eq!(field62.len(), 40);
        let keys = unwrap_field62(
            &des("0123456789ABCDEFFEDCBA9876543210"),
            KeyScheme::Double,
            field62,
        )
        .unwrap();
        assert_eq!(keys.slots().count(), 2);
        assert!(keys.failed().pik && keys.failed().mak);
    }

    #[test]
    fn real_sample_single_length_mak_slot_is_recognised() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/cup-samples/ajsgn_maintest2_0810_signin_response.hex"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let message = hex::decode(text.trim()).unwrap();
        let field62 = &message[message.len() - 40..];
        assert_eq!(&field62[28..36], &[0u8; 8]);
        let keys = unwrap_field62(
            &des("0123456789ABCDEFFEDCBA9876543210"),
            KeyScheme::Double,
            field62,
        )
        .unwrap();
        let mak = keys.slots().nth(1).unwrap();
        assert!(mak.single_length_mak());
        assert_eq!(mak.key().len(), 8);
    }
}
