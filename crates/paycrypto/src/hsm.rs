//! The HSM boundary: the switch and the issuer simulator address keys by opaque handles and ask
//! for operations; clear keys never leave except where a protocol needs them under another key
//! (field 62 under a TMK). `SoftHsm` is the software implementation: ready key schedules in
//! memory, the key store exported wrapped under a local master key.
//!
//! SoftHsm derivations, all from the 32-byte master key with HMAC-SHA256(master, label):
//! key-store wrapping key (AES-256-GCM), data sealing key (AES-256-GCM, for PAN at rest),
//! fingerprint key (HMAC-SHA256), PIN verification key (HMAC-SHA256). So the master key alone
//! recovers sealed data and fingerprints; the exported store holds only the terminal and zone keys.
//!
//! PIN verification value: HMAC-SHA256(PVK, "pvv1" ‖ len(PAN) ‖ PAN ‖ len(PIN) ‖ PIN), 32 bytes.
//! The issuer stores it instead of the PIN; without the PVK it cannot be brute-forced.

use core::fmt;
use core::str::FromStr;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::ct::ct_eq;
use crate::field62::{self, Field62Error, KeyScheme, MakLength};
use crate::hex::{self, HexError};
use crate::key::{DesKey, DesKeyLength, Kcv, Key, KeyAlgorithm, KeyError, Sm4Key};
use crate::mac::{self, MAC_LEN, MacAlgorithm, MacError};
use crate::pin::{self, EncryptedPinBlock, PanDigits, PinError};
use crate::random::{RandomError, RandomSource};

/// Most keys one SoftHsm holds (a terminal needs 3–4): bounds memory and the exported store.
pub const SOFT_HSM_KEYS_MAX: usize = 1_000_000;
/// Largest plaintext `seal` accepts: it protects card numbers and similar small records.
pub const SEAL_PLAINTEXT_MAX: usize = 64 * 1024;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEAL_VERSION: u8 = 1;
const STORE_VERSION: u8 = 1;
const SEAL_AAD: &[u8] = b"shoudan/softhsm/seal/v1";
const STORE_AAD: &[u8] = b"shoudan/softhsm/key-store/v1";

type HmacSha256 = Hmac<Sha256>;

/// An opaque reference to a key inside an HSM. Stable across export/import of a SoftHsm store,
/// so the switch can persist it with the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHandle(u64);

impl KeyHandle {
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-{}", self.0)
    }
}

impl FromStr for KeyHandle {
    type Err = HsmError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.strip_prefix("key-")
            .unwrap_or(text)
            .parse()
            .map(Self)
            .map_err(|_| HsmError::BadHandle)
    }
}

/// What a key may be used for; every operation checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// Terminal master key: only wraps working keys.
    Tmk,
    /// PIN key of a terminal: PIN blocks arrive under it.
    Pik,
    /// MAC key of a terminal.
    Mak,
    /// Track data key of a terminal.
    Tdk,
    /// Zone PIN key shared with an issuer: PIN blocks leave (or are verified) under it.
    Zpk,
}

impl KeyUsage {
    const fn code(self) -> u8 {
        match self {
            Self::Tmk => 1,
            Self::Pik => 2,
            Self::Mak => 3,
            Self::Tdk => 4,
            Self::Zpk => 5,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Tmk),
            2 => Some(Self::Pik),
            3 => Some(Self::Mak),
            4 => Some(Self::Tdk),
            5 => Some(Self::Zpk),
            _ => None,
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tmk => "TMK",
            Self::Pik => "PIK",
            Self::Mak => "MAK",
            Self::Tdk => "TDK",
            Self::Zpk => "ZPK",
        })
    }
}

/// The kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    Des(DesKeyLength),
    Sm4,
}

/// What an HSM will say about a key: never its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    pub usage: KeyUsage,
    pub algorithm: KeyAlgorithm,
    pub len_bytes: usize,
    /// Single DES in strength (`Key::is_single_des`): 8 bytes, or longer with equal halves.
    pub single_des: bool,
    pub kcv: Kcv,
}

/// Working keys issued at sign-in: field 62 for the terminal and handles for the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedWorkingKeys {
    pub field62: Vec<u8>,
    pub pik: KeyHandle,
    pub mak: KeyHandle,
    pub tdk: Option<KeyHandle>,
}

/// The issuer's stored stand-in for a PIN (see the module note). Not secret on its own, but
/// `Debug` shows nothing and comparison is constant-time.
#[derive(Clone)]
pub struct PinVerificationValue([u8; 32]);

impl PinVerificationValue {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for PinVerificationValue {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for PinVerificationValue {}

impl fmt::Debug for PinVerificationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerificationValue(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HsmError {
    #[error("no key {0} in this HSM")]
    UnknownKey(KeyHandle),
    #[error("not a key handle (expected key-N)")]
    BadHandle,
    #[error("{handle} is a {actual}, this operation needs a {expected}")]
    WrongUsage {
        handle: KeyHandle,
        expected: KeyUsage,
        actual: KeyUsage,
    },
    #[error("the HSM holds {max} keys already")]
    KeyStoreFull { max: usize },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Field62(#[from] Field62Error),
    #[error(transparent)]
    Mac(#[from] MacError),
    /// `Pin(PinError::Format)` and the length mismatches are what the switch answers 99 to.
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Track(#[from] crate::track::TrackError),
    #[error("sealed data is damaged or was sealed by another master key")]
    Unseal,
    #[error("data to seal is {len} bytes, more than {SEAL_PLAINTEXT_MAX}")]
    SealTooLarge { len: usize },
    #[error("key store rejected: {reason}")]
    KeyStore { reason: &'static str },
    /// A DES key with a weak or semi-weak part (FIPS 74): under such a key encryption undoes
    /// itself or another key's, and the few there are can be tried at once.
    #[error("a weak or semi-weak DES key: refused")]
    WeakKey,
}

impl HsmError {
    /// True when the PIN block itself is bad (wrong format, wrong length for the key): the
    /// switch answers 99, the terminal should sign in again.
    pub const fn is_bad_pin_block(&self) -> bool {
        matches!(
            self,
            Self::Pin(
                PinError::Format | PinError::BlockLength { .. } | PinError::KeyMismatch { .. }
            )
        )
    }
}

/// A hardware security module as the switch and issuer simulator see it. Synchronous (every
/// call is microseconds of CPU), object-safe, shared as `Arc<dyn Hsm>`.
pub trait Hsm: Send + Sync {
    /// Loads a clear key typed in at provisioning (a TMK, an issuer's ZPK).
    fn import_key(
        &self,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        clear_hex: &str,
    ) -> Result<KeyHandle, HsmError>;

    /// A fresh random key that never exists outside the HSM.
    fn generate_key(&self, usage: KeyUsage, spec: KeySpec) -> Result<KeyHandle, HsmError>;

    fn key_info(&self, key: KeyHandle) -> Result<KeyInfo, HsmError>;

    /// Forgets a key (a terminal's previous working keys after it signs in again).
    fn delete_key(&self, key: KeyHandle) -> Result<(), HsmError>;

    /// Sign-in: fresh working keys for a terminal, field 62 under its TMK, handles for the switch.
    fn generate_working_keys(
        &self,
        tmk: KeyHandle,
        scheme: KeyScheme,
        mak_length: MakLength,
    ) -> Result<IssuedWorkingKeys, HsmError>;

    fn generate_mac(
        &self,
        mak: KeyHandle,
        algorithm: MacAlgorithm,
        data: &[u8],
    ) -> Result<[u8; MAC_LEN], HsmError>;

    /// Constant-time check of a received MAC; `Ok(false)` when it does not match.
    fn verify_mac(
        &self,
        mak: KeyHandle,
        algorithm: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, HsmError>;

    /// Re-encrypts a PIN block from a terminal's PIK (or a ZPK) to a ZPK.
    fn translate_pin_block(
        &self,
        from: KeyHandle,
        to_zpk: KeyHandle,
        block: &EncryptedPinBlock,
        pan: &PanDigits,
    ) -> Result<EncryptedPinBlock, HsmError>;

    /// Provisioning: the value an issuer stores for a card's PIN. `pan` is the card number's
    /// digits.
    fn pin_verification_value(
        &self,
        pan: &str,
        pin: &str,
    ) -> Result<PinVerificationValue, HsmError>;

    /// Issuer side: does the PIN in `block` (under a ZPK) match the stored value? Never reveals
    /// the PIN. A malformed block is an error (`is_bad_pin_block`), not `false`.
    fn verify_pin(
        &self,
        zpk: KeyHandle,
        block: &EncryptedPinBlock,
        pan: &str,
        pvv: &PinVerificationValue,
    ) -> Result<bool, HsmError>;

    /// A track (of its `kind`) a terminal encrypted under its TDK (field 53.3 = 1), in the
    /// clear: its data block decrypted ([`crate::track`]). Digits and `=`; wiped when dropped.
    fn decrypt_track(
        &self,
        tdk: KeyHandle,
        kind: crate::track::Track,
        track: &str,
    ) -> Result<Zeroizing<String>, HsmError>;

    /// Encrypts data at rest (AES-256-GCM, random nonce): `version ‖ nonce ‖ ciphertext ‖ tag`.
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError>;

    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;

    /// Keyed fingerprint (HMAC-SHA256) for looking up sealed values without opening them.
    fn fingerprint(&self, data: &[u8]) -> [u8; 32];

    /// The key store, wrapped, for the application to persist.
    fn export_store(&self) -> Result<Vec<u8>, HsmError>;
}

/// The local master key a SoftHsm derives everything from. 32 bytes; zeroised on drop.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        let mut key = Self([0u8; 32]);
        hex::decode_into(text, &mut key.0)?;
        Ok(key)
    }

    pub fn generate(rng: &dyn RandomSource) -> Result<Self, RandomError> {
        let mut key = Self([0u8; 32]);
        rng.fill(&mut key.0)?;
        Ok(key)
    }

    /// The key its custodians' components make: their exclusive-or. Any component short of
    /// all of them tells nothing of the key.
    pub fn from_components(components: &[MasterKey]) -> Self {
        let mut key = Self([0u8; 32]);
        for component in components {
            for (byte, part) in key.0.iter_mut().zip(component.0.iter()) {
                *byte ^= part;
            }
        }
        key
    }

    /// Whether this is the all-zero key (components that cancel each other out).
    pub fn is_zero(&self) -> bool {
        ct_eq(&self.0, &[0u8; 32])
    }

    /// Whether `other` is the same key (in constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        ct_eq(&self.0, &other.0)
    }

    /// Six hex digits that tell a key (or a component) from another without showing it, for a
    /// custodian to check what they typed against their paperwork: the start of an HMAC of a
    /// fixed label under the key, which gives nothing of the key away.
    pub fn check_value(&self) -> String {
        let derived = self.derive(b"shoudan master key check value");
        hex::encode(derived.get(..3).unwrap_or_default()).to_ascii_uppercase()
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = hmac_with(&self.0);
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// HMAC-SHA256 keyed with 32 bytes. HMAC zero-pads short keys to the 64-byte block itself, so
/// padding here gives the same MAC while using the infallible constructor.
fn hmac_with(key: &[u8; 32]) -> HmacSha256 {
    let mut block = Zeroizing::new([0u8; 64]);
    for (d, s) in block.iter_mut().zip(key) {
        *d = *s;
    }
    HmacSha256::new((&*block).into())
}

struct Entry {
    usage: KeyUsage,
    key: Key,
}

#[derive(Default)]
struct KeyTable {
    entries: HashMap<u64, Arc<Entry>>,
    next: u64,
}

impl KeyTable {
    fn insert(&mut self, usage: KeyUsage, key: Key) -> Result<KeyHandle, HsmError> {
        if self.entries.len() >= SOFT_HSM_KEYS_MAX {
            return Err(HsmError::KeyStoreFull {
                max: SOFT_HSM_KEYS_MAX,
            });
        }
        self.next = self.next.wrapping_add(1);
        while self.entries.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        self.entries
            .insert(self.next, Arc::new(Entry { usage, key }));
        Ok(KeyHandle(self.next))
    }

    /// Inserts a working key under a random handle with the top bit set, apart from the
    /// stored keys' counted handles. A key store file holds the working keys issued before it
    /// was exported (the demo exports at stop; `serve` never does), and their handles are kept
    /// in terminal rows: a counted handle issued again after a restart from an older file (its
    /// counter never saw it) or by another node's HSM would name another terminal's key.
    fn insert_random(
        &mut self,
        usage: KeyUsage,
        key: Key,
        rng: &dyn RandomSource,
    ) -> Result<KeyHandle, HsmError> {
        if self.entries.len() >= SOFT_HSM_KEYS_MAX {
            return Err(HsmError::KeyStoreFull {
                max: SOFT_HSM_KEYS_MAX,
            });
        }
        loop {
            let mut bytes = [0u8; 8];
            rng.fill(&mut bytes)?;
            let handle = u64::from_be_bytes(bytes) | WORKING_KEY_HANDLE_BIT;
            if let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(handle) {
                slot.insert(Arc::new(Entry { usage, key }));
                return Ok(KeyHandle(handle));
            }
        }
    }
}

/// Set in every working key's handle (see [`KeyTable::insert_random`]).
const WORKING_KEY_HANDLE_BIT: u64 = 1 << 63;

/// A software HSM. Keys live in a map of ready key schedules behind an `RwLock`; operations
/// take the read lock only long enough to clone an `Arc`, so MACs and PIN translations on many
/// threads do not wait on each other.
pub struct SoftHsm {
    keys: RwLock<KeyTable>,
    rng: Box<dyn RandomSource>,
    store_cipher: Aes256Gcm,
    seal_cipher: Aes256Gcm,
    fingerprint_mac: HmacSha256,
    pvv_mac: HmacSha256,
}

impl SoftHsm {
    /// An empty HSM.
    pub fn new(master: &MasterKey, rng: Box<dyn RandomSource>) -> Self {
        let cipher = |label: &[u8]| Aes256Gcm::new((&*master.derive(label)).into());
        let hmac = |label: &[u8]| hmac_with(&master.derive(label));
        Self {
            keys: RwLock::new(KeyTable::default()),
            rng,
            store_cipher: cipher(STORE_AAD),
            seal_cipher: cipher(SEAL_AAD),
            fingerprint_mac: hmac(b"shoudan/softhsm/fingerprint/v1"),
            pvv_mac: hmac(b"shoudan/softhsm/pvv/v1"),
        }
    }

    /// An HSM holding the keys of a store exported by `export_store` under the same master key.
    pub fn from_store(
        master: &MasterKey,
        rng: Box<dyn RandomSource>,
        store: &[u8],
    ) -> Result<Self, HsmError> {
        let hsm = Self::new(master, rng);
        let plain =
            open_with(&hsm.store_cipher, STORE_VERSION, STORE_AAD, store).map_err(|_| {
                HsmError::KeyStore {
                    reason: "not authentic under this master key",
                }
            })?;
        let table = parse_store(&plain)?;
        *hsm.keys.write().unwrap_or_else(PoisonError::into_inner) = table;
        Ok(hsm)
    }

    pub fn key_count(&self) -> usize {
        self.read().entries.len()
    }

    /// The handles of the keys put in through `import_key` or `generate_key` (not working
    /// keys), in the order they were counted: what an operator lists.
    pub fn stored_handles(&self) -> Vec<KeyHandle> {
        let mut handles: Vec<u64> = self
            .read()
            .entries
            .keys()
            .copied()
            .filter(|h| h & WORKING_KEY_HANDLE_BIT == 0)
            .collect();
        handles.sort_unstable();
        handles.into_iter().map(KeyHandle).collect()
    }

    // A poisoned lock means a thread panicked while holding it. No code here panics between
    // reading and writing the table, so its contents are still consistent.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyTable> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyTable> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry(&self, handle: KeyHandle) -> Result<Arc<Entry>, HsmError> {
        self.read()
            .entries
            .get(&handle.0)
            .cloned()
            .ok_or(HsmError::UnknownKey(handle))
    }

    fn entry_for(&self, handle: KeyHandle, usages: &[KeyUsage]) -> Result<Arc<Entry>, HsmError> {
        let entry = self.entry(handle)?;
        if usages.contains(&entry.usage) {
            Ok(entry)
        } else {
            Err(HsmError::WrongUsage {
                handle,
                expected: usages.first().copied().unwrap_or(entry.usage),
                actual: entry.usage,
            })
        }
    }

    fn pvv(&self, pan: &[u8], pin: &[u8]) -> PinVerificationValue {
        let mut mac = self.pvv_mac.clone();
        mac.update(b"pvv1");
        for part in [pan, pin] {
            mac.update(&[u8::try_from(part.len()).unwrap_or(u8::MAX)]);
            mac.update(part);
        }
        PinVerificationValue(mac.finalize().into_bytes().into())
    }
}

fn check_pan(pan: &str) -> Result<(), HsmError> {
    PanDigits::from_pan(pan).map(|_| ()).map_err(HsmError::from)
}

impl Hsm for SoftHsm {
    fn import_key(
        &self,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        clear_hex: &str,
    ) -> Result<KeyHandle, HsmError> {
        let key = Key::from_hex(algorithm, clear_hex)?;
        if key.has_weak_des_part() {
            return Err(HsmError::WeakKey);
        }
        self.write().insert(usage, key)
    }

    fn generate_key(&self, usage: KeyUsage, spec: KeySpec) -> Result<KeyHandle, HsmError> {
        let key = match spec {
            KeySpec::Des(length) => Key::Des(DesKey::generate(length, &*self.rng)?),
            KeySpec::Sm4 => Key::Sm4(Sm4Key::generate(&*self.rng)?),
        };
        self.write().insert(usage, key)
    }

    fn key_info(&self, key: KeyHandle) -> Result<KeyInfo, HsmError> {
        let entry = self.entry(key)?;
        Ok(KeyInfo {
            usage: entry.usage,
            algorithm: entry.key.algorithm(),
            len_bytes: entry.key.len(),
            single_des: entry.key.is_single_des(),
            kcv: entry.key.kcv(),
        })
    }

    fn delete_key(&self, key: KeyHandle) -> Result<(), HsmError> {
        self.write()
            .entries
            .remove(&key.0)
            .map(|_| ())
            .ok_or(HsmError::UnknownKey(key))
    }

    fn generate_working_keys(
        &self,
        tmk: KeyHandle,
        scheme: KeyScheme,
        mak_length: MakLength,
    ) -> Result<IssuedWorkingKeys, HsmError> {
        let tmk = self.entry_for(tmk, &[KeyUsage::Tmk])?;
        let issued = field62::generate(&tmk.key, scheme, mak_length, &*self.rng)?;
        let mut table = self.write();
        if table.entries.len() + 3 > SOFT_HSM_KEYS_MAX {
            return Err(HsmError::KeyStoreFull {
                max: SOFT_HSM_KEYS_MAX,
            });
        }
        let rng = &*self.rng;
        let pik = table.insert_random(KeyUsage::Pik, issued.keys.pik, rng)?;
        let mak = table.insert_random(KeyUsage::Mak, issued.keys.mak, rng)?;
        let tdk = match issued.keys.tdk {
            Some(tdk) => Some(table.insert_random(KeyUsage::Tdk, tdk, rng)?),
            None => None,
        };
        Ok(IssuedWorkingKeys {
            field62: issued.field62,
            pik,
            mak,
            tdk,
        })
    }

    fn generate_mac(
        &self,
        mak: KeyHandle,
        algorithm: MacAlgorithm,
        data: &[u8],
    ) -> Result<[u8; MAC_LEN], HsmError> {
        let entry = self.entry_for(mak, &[KeyUsage::Mak])?;
        Ok(mac::compute(algorithm, &entry.key, data)?)
    }

    fn verify_mac(
        &self,
        mak: KeyHandle,
        algorithm: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, HsmError> {
        let entry = self.entry_for(mak, &[KeyUsage::Mak])?;
        match mac::verify(algorithm, &entry.key, data, mac) {
            Ok(()) => Ok(true),
            Err(MacError::Mismatch) => Ok(false),
            Err(
                err @ (MacError::UnknownAlgorithm
                | MacError::WrongKeyType { .. }
                | MacError::BadLength { .. }),
            ) => Err(err.into()),
        }
    }

    fn translate_pin_block(
        &self,
        from: KeyHandle,
        to_zpk: KeyHandle,
        block: &EncryptedPinBlock,
        pan: &PanDigits,
    ) -> Result<EncryptedPinBlock, HsmError> {
        let from = self.entry_for(from, &[KeyUsage::Pik, KeyUsage::Zpk])?;
        let to = self.entry_for(to_zpk, &[KeyUsage::Zpk])?;
        Ok(pin::translate(&from.key, &to.key, block, pan)?)
    }

    fn pin_verification_value(
        &self,
        pan: &str,
        pin: &str,
    ) -> Result<PinVerificationValue, HsmError> {
        check_pan(pan)?;
        let pin = pin::ClearPin::parse(pin)?;
        Ok(self.pvv(pan.as_bytes(), pin.expose()))
    }

    fn verify_pin(
        &self,
        zpk: KeyHandle,
        block: &EncryptedPinBlock,
        pan: &str,
        pvv: &PinVerificationValue,
    ) -> Result<bool, HsmError> {
        let zpk = self.entry_for(zpk, &[KeyUsage::Zpk])?;
        let digits = PanDigits::from_pan(pan)?;
        let pin = pin::decrypt(&zpk.key, block, &digits)?;
        Ok(self.pvv(pan.as_bytes(), pin.expose()) == *pvv)
    }

    fn decrypt_track(
        &self,
        tdk: KeyHandle,
        kind: crate::track::Track,
        track: &str,
    ) -> Result<Zeroizing<String>, HsmError> {
        let tdk = self.entry_for(tdk, &[KeyUsage::Tdk])?;
        Ok(crate::track::decrypt(&tdk.key, kind, track)?)
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        if plaintext.len() > SEAL_PLAINTEXT_MAX {
            return Err(HsmError::SealTooLarge {
                len: plaintext.len(),
            });
        }
        seal_with(
            &self.seal_cipher,
            &*self.rng,
            SEAL_VERSION,
            SEAL_AAD,
            plaintext,
        )
    }

    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        open_with(&self.seal_cipher, SEAL_VERSION, SEAL_AAD, sealed)
    }

    fn fingerprint(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.fingerprint_mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn export_store(&self) -> Result<Vec<u8>, HsmError> {
        let plain = {
            let table = self.read();
            serialize_store(&table)
        };
        seal_with(
            &self.store_cipher,
            &*self.rng,
            STORE_VERSION,
            STORE_AAD,
            &plain,
        )
    }
}

fn seal_with(
    cipher: &Aes256Gcm,
    rng: &dyn RandomSource,
    version: u8,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(version);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(1 + NONCE_LEN..).unwrap_or_default();
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), aad, body.into())
        .map_err(|_| HsmError::SealTooLarge {
            len: plaintext.len(),
        })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open_with(
    cipher: &Aes256Gcm,
    version: u8,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let (&got_version, rest) = sealed.split_first().ok_or(HsmError::Unseal)?;
    if got_version != version {
        return Err(HsmError::Unseal);
    }
    let (nonce, rest) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(HsmError::Unseal)?;
    let (body, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(HsmError::Unseal)?;
    let mut plain = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_inout_detached(
            &Nonce::from(*nonce),
            aad,
            plain.as_mut_slice().into(),
            &(*tag).into(),
        )
        .map_err(|_| HsmError::Unseal)?;
    Ok(plain)
}

// Store plaintext: next handle u64 ‖ count u32 ‖ count × (handle u64 ‖ usage u8 ‖ algorithm u8 ‖
// key length u8 ‖ key bytes), all big-endian. Zeroised as soon as it is encrypted.
fn serialize_store(table: &KeyTable) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(12 + table.entries.len() * 36));
    out.extend_from_slice(&table.next.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(table.entries.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let mut handles: Vec<&u64> = table.entries.keys().collect();
    handles.sort_unstable();
    for handle in handles {
        if let Some(entry) = table.entries.get(handle) {
            let key = entry.key.expose();
            out.extend_from_slice(&handle.to_be_bytes());
            out.push(entry.usage.code());
            out.push(match entry.key.algorithm() {
                KeyAlgorithm::Des => 1,
                KeyAlgorithm::Sm4 => 2,
            });
            out.push(u8::try_from(key.len()).unwrap_or(0));
            out.extend_from_slice(key);
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HsmError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(HsmError::KeyStore {
            reason: "truncated",
        })?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HsmError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| HsmError::KeyStore {
            reason: "truncated",
        })
    }

    fn u8(&mut self) -> Result<u8, HsmError> {
        Ok(u8::from_be_bytes(self.array()?))
    }
}

fn parse_store(plain: &[u8]) -> Result<KeyTable, HsmError> {
    let mut reader = Reader(plain);
    let next = u64::from_be_bytes(reader.array()?);
    let count =
        usize::try_from(u32::from_be_bytes(reader.array()?)).map_err(|_| HsmError::KeyStore {
            reason: "too many keys",
        })?;
    if count > SOFT_HSM_KEYS_MAX {
        return Err(HsmError::KeyStore {
            reason: "too many keys",
        });
    }
    let mut table = KeyTable {
        entries: HashMap::with_capacity(count),
        next,
    };
    for _ in 0..count {
        let handle = u64::from_be_bytes(reader.array()?);
        let usage = KeyUsage::from_code(reader.u8()?).ok_or(HsmError::KeyStore {
            reason: "unknown key usage",
        })?;
        let algorithm = match reader.u8()? {
            1 => KeyAlgorithm::Des,
            2 => KeyAlgorithm::Sm4,
            _ => {
                return Err(HsmError::KeyStore {
                    reason: "unknown key algorithm",
                });
            }
        };
        let len = usize::from(reader.u8()?);
        let key = Key::from_bytes(algorithm, reader.take(len)?)?;
        if table
            .entries
            .insert(handle, Arc::new(Entry { usage, key }))
            .is_some()
        {
            return Err(HsmError::KeyStore {
                reason: "duplicate key handle",
            });
        }
    }
    if !reader.0.is_empty() {
        return Err(HsmError::KeyStore {
            reason: "trailing bytes",
        });
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::DeterministicRandom;

    const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
    const PAN: &str = "6222021234567890123";

    fn hsm(seed: u64) -> SoftHsm {
        SoftHsm::new(
            &MasterKey::from_bytes([7; 32]),
            Box::new(DeterministicRandom::new(seed)),
        )
    }

    /// Custodians' components make the master key by exclusive-or, and the key store opens
    /// only under the key they make: one component, or one mistyped, does not open it. Check
    /// values tell keys apart and show nothing of the key.
    #[test]
    fn master_key_components_combine_and_check() {
        let parts = [
            MasterKey::from_bytes([0x5A; 32]),
            MasterKey::from_bytes([0x0F; 32]),
        ];
        let master = MasterKey::from_components(&parts);
        assert_eq!(master.0, [0x55; 32]);
        let store = SoftHsm::new(&master, Box::new(DeterministicRandom::new(1)))
            .export_store()
            .unwrap();
        let reopened = MasterKey::from_components(&parts);
        assert!(
            SoftHsm::from_store(&reopened, Box::new(DeterministicRandom::new(2)), &store).is_ok()
        );
        let mistyped = MasterKey::from_components(&[
            MasterKey::from_bytes([0x5A; 32]),
            MasterKey::from_bytes([0x0E; 32]),
        ]);
        for wrong in [mistyped, MasterKey::from_components(&parts[..1])] {
            assert!(
                SoftHsm::from_store(&wrong, Box::new(DeterministicRandom::new(3)), &store).is_err()
            );
        }
        let check = master.check_value();
        assert_eq!(check.len(), 6);
        assert!(check.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(check, parts[0].check_value());
        assert_eq!(check, MasterKey::from_bytes([0x55; 32]).check_value());
        assert!(!check.contains("5555"), "the check value is not the key");
        assert!(
            MasterKey::from_components(&[
                MasterKey::from_bytes([9; 32]),
                MasterKey::from_bytes([9; 32])
            ])
            .is_zero()
        );
        assert!(!master.is_zero());
        assert!(master.same_as(&MasterKey::from_bytes([0x55; 32])));
        assert!(!master.same_as(&parts[0]));
    }

    #[test]
    fn is_object_safe_and_shareable() {
        let shared: Arc<dyn Hsm> = Arc::new(hsm(1));
        let handle = shared
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK)
            .unwrap();
        assert_eq!(
            shared.key_info(handle).unwrap().kcv,
            Key::from_hex(KeyAlgorithm::Des, TMK).unwrap().kcv()
        );
        assert_eq!(handle.to_string().parse::<KeyHandle>().unwrap(), handle);
    }

    #[test]
    fn a_weak_or_semi_weak_des_key_is_not_imported() {
        let hsm = hsm(2);
        for weak in [
            "0101010101010101FEFEFEFEFEFEFEFE",
            "01FE01FE01FE01FEFE01FE01FE01FE01",
            "0123456789ABCDEFE0E0E0E0F1F1F1F1",
        ] {
            assert!(
                matches!(
                    hsm.import_key(KeyUsage::Tmk, KeyAlgorithm::Des, weak),
                    Err(HsmError::WeakKey)
                ),
                "{weak}"
            );
        }
        assert!(
            hsm.import_key(KeyUsage::Zpk, KeyAlgorithm::Des, TMK)
                .is_ok()
        );
    }

    #[test]
    fn working_key_handles_are_not_issued_again_after_a_restart() {
        let first = hsm(5);
        let tmk = first
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK)
            .unwrap();
        let file = first.export_store().unwrap();
        let before = first
            .generate_working_keys(tmk, KeyScheme::Double, MakLength::Double)
            .unwrap();
        // Restarted from the key store file, which never holds working keys: the handles a
        // terminal row still names are unknown, and new sign-ins get other handles.
        let again = SoftHsm::from_store(
            &MasterKey::from_bytes([7; 32]),
            Box::new(DeterministicRandom::new(6)),
            &file,
        )
        .unwrap();
        assert!(again.key_info(before.pik).is_err() && again.key_info(before.mak).is_err());
        let after = again
            .generate_working_keys(tmk, KeyScheme::Double, MakLength::Double)
            .unwrap();
        for handle in [after.pik, after.mak] {
            assert!(![before.pik, before.mak].contains(&handle), "{handle}");
        }
        // Stored keys keep counted handles.
        let zpk = again
            .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, TMK)
            .unwrap();
        assert!(zpk.0 < WORKING_KEY_HANDLE_BIT);
    }

    #[test]
    fn sign_in_mac_and_pin_flow() {
        let hsm = hsm(2);
        let tmk = hsm
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK)
            .unwrap();
        let issued = hsm
            .generate_working_keys(tmk, KeyScheme::Double, MakLength::Double)
            .unwrap();
        assert!(issued.tdk.is_none());

        // The terminal decodes field 62 with the clear TMK it was loaded with.
        let tmk_clear = Key::from_hex(KeyAlgorithm::Des, TMK).unwrap();
        let keys = field62::decode_field62(&tmk_clear, KeyScheme::Double, &issued.field62).unwrap();
        assert_eq!(hsm.key_info(issued.mak).unwrap().kcv, keys.mak.kcv());

        let data = b"\x02\x00message body";
        let mac = mac::compute(MacAlgorithm::X919, &keys.mak, data).unwrap();
        assert_eq!(
            hsm.generate_mac(issued.mak, MacAlgorithm::X919, data)
                .unwrap(),
            mac
        );
        assert!(
            hsm.verify_mac(issued.mak, MacAlgorithm::X919, data, &mac)
                .unwrap()
        );
        assert!(
            !hsm.verify_mac(issued.mak, MacAlgorithm::X919, b"tampered", &mac)
                .unwrap()
        );
        assert!(matches!(
            hsm.generate_mac(issued.pik, MacAlgorithm::X919, data),
            Err(HsmError::WrongUsage {
                expected: KeyUsage::Mak,
                actual: KeyUsage::Pik,
                ..
            })
        ));

        // PIN: terminal encrypts under the PIK, the switch translates, the issuer verifies.
        let zpk = hsm
            .generate_key(KeyUsage::Zpk, KeySpec::Des(DesKeyLength::Double))
            .unwrap();
        let pvv = hsm.pin_verification_value(PAN, "246810").unwrap();
        let digits = PanDigits::from_pan(PAN).unwrap();
        let block = pin::encrypt(&keys.pik, "246810", &digits).unwrap();
        let under_zpk = hsm
            .translate_pin_block(issued.pik, zpk, &block, &digits)
            .unwrap();
        assert!(hsm.verify_pin(zpk, &under_zpk, PAN, &pvv).unwrap());
        let wrong = pin::encrypt(&keys.pik, "246811", &digits).unwrap();
        let wrong = hsm
            .translate_pin_block(issued.pik, zpk, &wrong, &digits)
            .unwrap();
        assert!(!hsm.verify_pin(zpk, &wrong, PAN, &pvv).unwrap());
        // A block under the wrong key decodes to garbage: 99, not "wrong PIN".
        let err = hsm.verify_pin(zpk, &block, PAN, &pvv).unwrap_err();
        assert!(err.is_bad_pin_block(), "{err:?}");
        let err = hsm
            .translate_pin_block(issued.mak, zpk, &block, &digits)
            .unwrap_err();
        assert!(matches!(err, HsmError::WrongUsage { .. }));
    }

    #[test]
    fn a_single_length_tmk_does_not_carry_double_length_keys() {
        let hsm = hsm(4);
        let tmk = hsm
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, "0123456789ABCDEF")
            .unwrap();
        for scheme in [KeyScheme::Double, KeyScheme::DoubleWithTdk] {
            assert!(matches!(
                hsm.generate_working_keys(tmk, scheme, MakLength::Double),
                Err(HsmError::Field62(Field62Error::TmkTooShort { .. }))
            ));
        }
        assert!(
            hsm.generate_working_keys(tmk, KeyScheme::Single, MakLength::Double)
                .is_ok()
        );
    }

    #[test]
    fn sm4_terminal_to_des_zone() {
        let hsm = hsm(3);
        let tmk = hsm
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Sm4, TMK)
            .unwrap();
        let issued = hsm
            .generate_working_keys(tmk, KeyScheme::Sm4, MakLength::Double)
            .unwrap();
        assert!(issued.tdk.is_some());
        let tmk_clear = Key::from_hex(KeyAlgorithm::Sm4, TMK).unwrap();
        let keys = field62::decode_field62(&tmk_clear, KeyScheme::Sm4, &issued.field62).unwrap();
        let zpk = hsm
            .import_key(
                KeyUsage::Zpk,
                KeyAlgorithm::Des,
                "11111111111111112222222222222222",
            )
            .unwrap();
        let digits = PanDigits::from_pan(PAN).unwrap();
        let block = pin::encrypt(&keys.pik, "1234", &digits).unwrap();
        // Never down to single DES.
        let single = hsm
            .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, "1111111111111111")
            .unwrap();
        assert!(matches!(
            hsm.translate_pin_block(issued.pik, single, &block, &digits),
            Err(HsmError::Pin(PinError::WeakerKey))
        ));
        // Nor to a double-length key whose halves are equal (single DES in strength).
        let single_in_double = hsm
            .import_key(
                KeyUsage::Zpk,
                KeyAlgorithm::Des,
                "11111111111111111111111111111111",
            )
            .unwrap();
        assert!(matches!(
            hsm.translate_pin_block(issued.pik, single_in_double, &block, &digits),
            Err(HsmError::Pin(PinError::WeakerKey))
        ));
        let out = hsm
            .translate_pin_block(issued.pik, zpk, &block, &digits)
            .unwrap();
        let pvv = hsm.pin_verification_value(PAN, "1234").unwrap();
        assert!(hsm.verify_pin(zpk, &out, PAN, &pvv).unwrap());
        let mac = hsm
            .generate_mac(issued.mak, MacAlgorithm::Sm4, b"abc")
            .unwrap();
        assert_eq!(
            mac,
            mac::compute(MacAlgorithm::Sm4, &keys.mak, b"abc").unwrap()
        );
    }

    #[test]
    fn seal_open_and_fingerprint() {
        let hsm = hsm(4);
        let sealed = hsm.seal(PAN.as_bytes()).unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + PAN.len() + TAG_LEN);
        assert!(!sealed.windows(PAN.len()).any(|w| w == PAN.as_bytes()));
        assert_eq!(hsm.open(&sealed).unwrap().as_slice(), PAN.as_bytes());
        assert_ne!(
            hsm.seal(PAN.as_bytes()).unwrap(),
            sealed,
            "fresh nonce each time"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(hsm.open(&tampered).unwrap_err(), HsmError::Unseal);
        assert_eq!(hsm.open(&sealed[..10]).unwrap_err(), HsmError::Unseal);
        assert_eq!(hsm.open(&[]).unwrap_err(), HsmError::Unseal);
        let other = SoftHsm::new(
            &MasterKey::from_bytes([8; 32]),
            Box::new(DeterministicRandom::new(4)),
        );
        assert_eq!(other.open(&sealed).unwrap_err(), HsmError::Unseal);

        assert_eq!(hsm.fingerprint(b"x"), hsm.fingerprint(b"x"));
        assert_ne!(hsm.fingerprint(b"x"), hsm.fingerprint(b"y"));
        assert_ne!(hsm.fingerprint(b"x"), other.fingerprint(b"x"));
        let same_master = hsm_with_master([7; 32], 99);
        assert_eq!(same_master.fingerprint(b"x"), hsm.fingerprint(b"x"));
        assert_eq!(
            same_master.open(&sealed).unwrap().as_slice(),
            PAN.as_bytes()
        );
    }

    fn hsm_with_master(master: [u8; 32], seed: u64) -> SoftHsm {
        SoftHsm::new(
            &MasterKey::from_bytes(master),
            Box::new(DeterministicRandom::new(seed)),
        )
    }

    #[test]
    fn store_round_trips_and_rejects_tampering() {
        let hsm = hsm(5);
        let tmk = hsm
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK)
            .unwrap();
        let issued = hsm
            .generate_working_keys(tmk, KeyScheme::DoubleWithTdk, MakLength::Single)
            .unwrap();
        let zpk = hsm.generate_key(KeyUsage::Zpk, KeySpec::Sm4).unwrap();
        hsm.delete_key(issued.tdk.unwrap()).unwrap();
        let store = hsm.export_store().unwrap();

        let restored = SoftHsm::from_store(
            &MasterKey::from_bytes([7; 32]),
            Box::new(DeterministicRandom::new(6)),
            &store,
        )
        .unwrap();
        assert_eq!(restored.key_count(), 4);
        // An operator's list names the stored keys, not the terminals' working keys.
        assert_eq!(restored.stored_handles(), vec![tmk, zpk]);
        for handle in [tmk, issued.pik, issued.mak, zpk] {
            assert_eq!(
                restored.key_info(handle).unwrap(),
                hsm.key_info(handle).unwrap()
            );
        }
        assert_eq!(
            restored.key_info(issued.tdk.unwrap()),
            Err(HsmError::UnknownKey(issued.tdk.unwrap()))
        );
        // New handles do not collide with restored ones.
        let fresh = restored.generate_key(KeyUsage::Zpk, KeySpec::Sm4).unwrap();
        assert!(fresh > zpk);

        let mut tampered = store.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            SoftHsm::from_store(
                &MasterKey::from_bytes([7; 32]),
                Box::new(DeterministicRandom::new(6)),
                &tampered
            ),
            Err(HsmError::KeyStore { .. })
        ));
        assert!(matches!(
            SoftHsm::from_store(
                &MasterKey::from_bytes([9; 32]),
                Box::new(DeterministicRandom::new(6)),
                &store
            ),
            Err(HsmError::KeyStore { .. })
        ));
        // The store never contains a key in clear.
        let tmk_bytes = hex::decode(TMK).unwrap();
        assert!(!store.windows(16).any(|w| w == tmk_bytes.as_slice()));
    }

    #[test]
    fn store_parser_rejects_malformed_plaintext() {
        assert!(parse_store(&[0; 11]).is_err());
        let mut plain = vec![0u8; 8];
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.extend_from_slice(&1u64.to_be_bytes());
        plain.extend_from_slice(&[9, 1, 8]);
        plain.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_store(&plain).err(),
            Some(HsmError::KeyStore {
                reason: "unknown key usage"
            })
        );
        plain[20] = 1;
        assert!(parse_store(&plain).is_ok());
        plain.push(0);
        assert_eq!(
            parse_store(&plain).err(),
            Some(HsmError::KeyStore {
                reason: "trailing bytes"
            })
        );
        plain.pop();
        plain[22] = 7; // key length 7
        assert!(parse_store(&plain).is_err());
    }

    #[test]
    fn concurrent_macs_while_keys_change() {
        let hsm = Arc::new(hsm(7));
        let tmk = hsm
            .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK)
            .unwrap();
        let issued = hsm
            .generate_working_keys(tmk, KeyScheme::Double, MakLength::Double)
            .unwrap();
        let expected = hsm
            .generate_mac(issued.mak, MacAlgorithm::CupEcb, b"payload")
            .unwrap();
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let hsm = Arc::clone(&hsm);
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if worker == 0 {
                            let more = hsm
                                .generate_working_keys(tmk, KeyScheme::Single, MakLength::Double)
                                .unwrap();
                            hsm.delete_key(more.pik).unwrap();
                            hsm.delete_key(more.mak).unwrap();
                        } else {
                            let mac = hsm
                                .generate_mac(issued.mak, MacAlgorithm::CupEcb, b"payload")
                                .unwrap();
                            assert_eq!(mac, expected);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(hsm.key_count(), 3);
    }

    // RFC 4231 test case 2: key "Jefe" — zero-padding it to 32 bytes must not change the MAC.
    #[test]
    fn padded_hmac_key_is_standard_hmac() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut mac = hmac_with(&key);
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&mac.finalize().into_bytes()),
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        );
    }

    #[test]
    fn pvv_input_errors() {
        let hsm = hsm(8);
        assert_eq!(
            hsm.pin_verification_value("12", "1234").unwrap_err(),
            HsmError::Pin(PinError::BadPan)
        );
        assert_eq!(
            hsm.pin_verification_value(PAN, "12").unwrap_err(),
            HsmError::Pin(PinError::BadPin)
        );
        assert_ne!(
            hsm.pin_verification_value(PAN, "1234").unwrap(),
            hsm.pin_verification_value("6222021234567890131", "1234")
                .unwrap()
        );
        assert_eq!(
            format!("{:?}", hsm.pin_verification_value(PAN, "1234").unwrap()),
            "PinVerificationValue(..)"
        );
    }
}
