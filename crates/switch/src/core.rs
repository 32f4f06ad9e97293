//! The switch's shared state and the management messages: terminal registry, id sequences,
//! issuer links, and the reply builder every handler answers through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use domain::IssuerDirectory;
use iso8583::{
    EncodeError, Frame, FrameHead, MessageBuilder, Mti, ProcessingRequirement, TxnKind as WireKind,
};
use paycrypto::{Hsm, HsmError, KeyHandle, KeyScheme, MacAlgorithm, MakLength};
use store::{Record, Status, Store, StoreError, TerminalRow, WrappedKeys};

use crate::clock::{Clock, LocalTime};
use crate::config::{SEQUENCE_BLOCK, SwitchConfig};
use crate::issuer::IssuerLink;
use crate::ledger::{Answer, Ledger};
use crate::wire::REPLY_CAPACITY;

pub(crate) const RC_APPROVED: [u8; 2] = *b"00";
pub(crate) const RC_INVALID_MERCHANT: [u8; 2] = *b"03";
pub(crate) const RC_IN_PROGRESS: [u8; 2] = *b"09";
pub(crate) const RC_INVALID_TRANSACTION: [u8; 2] = *b"12";
pub(crate) const RC_INVALID_AMOUNT: [u8; 2] = *b"13";
pub(crate) const RC_INVALID_CARD: [u8; 2] = *b"14";
pub(crate) const RC_NO_SUCH_ISSUER: [u8; 2] = *b"15";
pub(crate) const RC_ORIGINAL_NOT_FOUND: [u8; 2] = *b"25";
pub(crate) const RC_FORMAT_ERROR: [u8; 2] = *b"30";
pub(crate) const RC_BANK_NOT_SUPPORTED: [u8; 2] = *b"31";
pub(crate) const RC_NOT_PERMITTED_TERMINAL: [u8; 2] = *b"58";
pub(crate) const RC_EXCEEDS_AMOUNT: [u8; 2] = *b"61";
pub(crate) const RC_AMOUNT_DIFFERS: [u8; 2] = *b"64";
pub(crate) const RC_BATCH_OUT_OF_STEP: [u8; 2] = *b"77";
/// A batch upload whose end counts more records than arrived: upload again.
pub(crate) const RC_RECONCILE_UNBALANCED: [u8; 2] = *b"79";
pub(crate) const RC_ISSUER_UNAVAILABLE: [u8; 2] = *b"91";
pub(crate) const RC_DUPLICATE: [u8; 2] = *b"94";
pub(crate) const RC_SYSTEM_ERROR: [u8; 2] = *b"96";
pub(crate) const RC_NOT_REGISTERED: [u8; 2] = *b"97";
pub(crate) const RC_ISSUER_TIMEOUT: [u8; 2] = *b"98";
pub(crate) const RC_PIN_FORMAT: [u8; 2] = *b"99";
pub(crate) const RC_MAC_FAILED: [u8; 2] = *b"A0";

/// Fields of a financial request echoed in its response.
const FINANCIAL_ECHO: &[u8] = &[2, 3, 4, 11, 14, 22, 25, 41, 42, 49, 60, 61];
/// Fields of a management request echoed in its response.
const MANAGEMENT_ECHO: &[u8] = &[11, 41, 42, 60];

/// A terminal as the switch sees it; replaced whole on sign-in, sign-off and batch change.
#[derive(Clone, Debug)]
pub(crate) struct Terminal {
    pub tid: String,
    pub mid: String,
    pub tmk: KeyHandle,
    /// The scheme of the working keys it holds (the last sign-in's).
    pub scheme: KeyScheme,
    /// The scheme it was registered with: the weakest a sign-in may ask for. A sign-in carries
    /// no MAC, so one that asked for a stronger scheme must not become the floor (the
    /// terminal's own next sign-in, at its registered scheme, would then be refused).
    pub registered: KeyScheme,
    pub mac: MacAlgorithm,
    /// The MAK length issued at sign-in under schemes 003/004 (`mac_spelling`).
    pub mak: MakLength,
    pub status: Status,
    pub batch_no: u32,
    pub keys: Option<SessionKeys>,
    /// The keys the terminal's row named when this node last wrote or read them: a row naming
    /// others was changed by another node (`working_keys`). Differs from `keys` where this
    /// node's HSM does not hold the row's keys.
    pub row_keys: Option<SessionKeys>,
    /// How many times this node changed the terminal's keys (a sign-in, a sign-off, keys taken
    /// up from its row): what tells a change here apart, where the keys themselves may recur
    /// (none, after a sign-in and a sign-off).
    pub keys_gen: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionKeys {
    pub pik: KeyHandle,
    pub mak: KeyHandle,
    pub tdk: Option<KeyHandle>,
}

/// How a key handle is kept in the store's "wrapped key" columns: the HSM holds the key, the
/// database holds only the reference.
pub fn handle_bytes(handle: KeyHandle) -> Vec<u8> {
    handle.raw().to_be_bytes().to_vec()
}

pub fn handle_from_bytes(bytes: &[u8]) -> Option<KeyHandle> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some(KeyHandle::from_raw(u64::from_be_bytes(raw)))
}

impl Terminal {
    /// The merchant ID `message` names in field 42, if it is this terminal's own.
    pub fn names_own_merchant(&self, message: &iso8583::Message<'_>) -> bool {
        message.text(42).map(str::trim_end) == Some(self.mid.as_str())
    }

    pub fn from_row(row: &TerminalRow) -> Option<Terminal> {
        let (mac, mak) = parse_mac_spelling(&row.mac_algorithm)?;
        let keys = crate::working_keys::stored_keys(row)?;
        Some(Terminal {
            tid: row.tid.clone(),
            mid: row.mid.clone(),
            tmk: handle_from_bytes(&row.tmk_wrapped)?,
            scheme: row.key_scheme.parse().ok()?,
            registered: row.key_scheme.parse().ok()?,
            mac,
            mak,
            status: row.status,
            batch_no: row.batch_no,
            keys,
            row_keys: keys,
            keys_gen: 0,
        })
    }
}

/// Whether a terminal of this standing is given working keys.
fn may_sign_in(status: Status) -> bool {
    matches!(status, Status::Active | Status::Suspended)
}

/// A terminal's MAC algorithm as the store spells it: paycrypto's spelling, or `cup-ecb-single`
/// for CUP ECB with a single-length MAK (issued under 003/004 as 8 key bytes and 8 zero bytes,
/// for terminals that MAC with single DES; PROTOCOL.md, sign-in).
pub(crate) fn parse_mac_spelling(text: &str) -> Option<(MacAlgorithm, MakLength)> {
    match text {
        CUP_ECB_SINGLE => Some((MacAlgorithm::CupEcb, MakLength::Single)),
        other => Some((other.parse().ok()?, MakLength::Double)),
    }
}

/// The spelling `parse_mac_spelling` reads back. A single-length MAK goes with CUP ECB only
/// (X9.19 and SM4 MACs take a double-length or SM4 key).
pub(crate) fn mac_spelling(mac: MacAlgorithm, mak: MakLength) -> &'static str {
    match (mac, mak) {
        (MacAlgorithm::CupEcb, MakLength::Single) => CUP_ECB_SINGLE,
        (mac, _) => mac.as_str(),
    }
}

const CUP_ECB_SINGLE: &str = "cup-ecb-single";

/// Ids and RRN sequence numbers, reserved from the store a block at a time so a restart never
/// repeats one and the hot path rarely touches the store.
pub(crate) struct Sequence {
    name: &'static str,
    range: Mutex<(u64, u64)>,
}

impl Sequence {
    pub fn new(name: &'static str) -> Self {
        Sequence {
            name,
            range: Mutex::new((0, 0)),
        }
    }

    pub async fn next(&self, store: &dyn Store) -> Result<u64, StoreError> {
        loop {
            {
                let mut range = self.range.lock().unwrap_or_else(PoisonError::into_inner);
                if range.0 < range.1 {
                    let value = range.0;
                    range.0 += 1;
                    return Ok(value);
                }
            }
            let first = store.reserve(self.name, SEQUENCE_BLOCK)?.await?;
            let mut range = self.range.lock().unwrap_or_else(PoisonError::into_inner);
            if range.0 >= range.1 {
                *range = (first, first + SEQUENCE_BLOCK);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// Traces tried for one request before the next is taken whatever it is (the exchange then
/// refuses it, as it did before any were passed over): a bound on the work per request, and
/// more than the awaited traces a wrap meets in a row but when a stalled issuer holds a run of
/// them.
const TRACE_TRIES: usize = 64;

/// The first of `next`'s traces that is not `awaited`, within `TRACE_TRIES`; else the last
/// drawn.
fn free_trace(mut next: impl FnMut() -> u32, awaited: impl Fn(u32) -> bool) -> u32 {
    let mut trace = next();
    for _ in 1..TRACE_TRIES {
        if !awaited(trace) {
            break;
        }
        trace = next();
    }
    trace
}

/// Node classes of host traces: a node's place among the nodes sharing a database
/// (`store::NODE_PLACES`).
pub(crate) const TRACE_NODES: u32 = store::NODE_PLACES as u32;
/// Traces each node cycles through: six digits in all.
const TRACE_PER_NODE: u32 = 999_999 / TRACE_NODES;

/// How a journal write went within `SwitchConfig::journal_wait`.
pub(crate) enum Journalled {
    Written,
    Failed(StoreError),
    /// Not answered in time: still queued, it may land or fail later.
    Late(store::Durable),
}

/// Orphaned requests (`Core::orphans`) kept for the next sweep at most.
pub(crate) const ORPHANS_MAX: usize = 10_000;

/// A request of this node whose outcome could not be written: the terminal was answered 96
/// and the row is still in flight in the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Orphan {
    pub id: i64,
    /// Why no money moved, when none did (the issuer declined it, or was never asked): the
    /// sweep then settles the row without a reversal. `None`: it may have, so it is reversed.
    pub nothing_moved: Option<String>,
}

pub(crate) struct Core {
    pub config: SwitchConfig,
    pub store: Arc<dyn Store>,
    pub hsm: Arc<dyn Hsm>,
    pub directory: Arc<IssuerDirectory>,
    pub clock: Arc<dyn Clock>,
    pub terminals: RwLock<HashMap<String, Arc<Terminal>>>,
    pub ledger: Ledger,
    pub links: HashMap<String, Arc<IssuerLink>>,
    pub ids: Sequence,
    pub rrns: Sequence,
    pub trace: AtomicU32,
    /// The head of frames to issuers (docs/issuer-link.md).
    pub issuer_head: FrameHead,
    /// Merchant states, risk rules and their windows.
    pub risk: crate::risk::RiskGate,
    /// Each terminal's last written software version and clock drift.
    pub health: crate::health::HealthSeen,
    /// Connections, requests, resends and alert writes; see `crate::tasks`.
    pub tasks: crate::tasks::Tasks,
    /// Numbers terminal connections (`crate::session::connection`).
    pub connections: AtomicU64,
    /// With a shared journal: the connection for which each terminal's batch was last marked.
    pub marked_for: Mutex<HashMap<String, u64>>,
    /// Per registered terminal, held by a sign-in or sign-off while it replaces the terminal's
    /// working keys: two at once would each delete the same previous keys and leave one set
    /// of new ones in the HSM for good.
    pub key_changes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// On a shared journal: when each terminal's row was last read for its keys after a MAC
    /// failed (`working_keys`).
    pub keys_looked: Mutex<HashMap<String, (std::time::Instant, Option<SessionKeys>)>>,
    /// Keys another node's sign-in or sign-off ended here, until they go from the HSM.
    pub ended_keys: crate::working_keys::EndedKeys,
    /// Requests of this node journalled in flight whose outcome could not be written (the
    /// terminal was answered 96): no longer live, so the next sweep settles them as a dead
    /// node's (`recover_in_doubt`) rather than after ten minutes (`lost_elsewhere`). At most
    /// `ORPHANS_MAX`.
    pub orphans: Mutex<Vec<Orphan>>,
    /// Each request the in-doubt sweep found in flight, with when it first did, by this node's
    /// clock (`saf::run`, `lost_elsewhere`): what other nodes' clocks say cannot mislead it.
    pub in_flight_watched: Mutex<HashMap<i64, i64>>,
    /// Writes answered 96 after `journal_wait` whose fate is still awaited
    /// (`settle_late_request`, `settle_late_outcome`); a stop waits for them, within its bound.
    pub late: AtomicUsize,
    /// Back-office refunds under way (`backoffice`): a stop waits for them, as for terminals'
    /// requests, within its bound.
    pub back_office: AtomicUsize,
    /// Journal writes and reads not answered within `journal_wait`, since start (`/metrics`).
    pub waits_exceeded: AtomicU64,
    /// Each terminal's recent encrypted PIN blocks and their cards (`pin_replay`).
    pub pin_blocks: crate::pin_replay::PinBlocks,
}

/// Counts a late write's settling task in `Core::late` while it lives, however it ends.
pub(crate) struct LateGuard(Arc<Core>);

impl LateGuard {
    pub fn new(core: &Arc<Core>) -> Self {
        core.late.fetch_add(1, Ordering::AcqRel);
        LateGuard(Arc::clone(core))
    }
}

impl Drop for LateGuard {
    fn drop(&mut self) {
        self.0.late.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Core {
    pub fn terminal(&self, tid: &str) -> Option<Arc<Terminal>> {
        self.terminals
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tid)
            .cloned()
    }

    /// Takes terminal `tid`'s working-key lock (see `key_changes`) and reads the terminal again
    /// under it: another sign-in may have replaced its keys meanwhile.
    pub(crate) async fn lock_keys(
        &self,
        tid: &str,
    ) -> (tokio::sync::OwnedMutexGuard<()>, Option<Arc<Terminal>>) {
        let guard = self.key_lock(tid).lock_owned().await;
        (guard, self.terminal(tid))
    }

    /// Terminal `tid`'s working-key lock if no one holds it now.
    pub(crate) fn try_lock_keys(&self, tid: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.key_lock(tid).try_lock_owned().ok()
    }

    /// Terminal `tid`'s working-key lock (see `key_changes`).
    fn key_lock(&self, tid: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.key_changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tid.to_owned())
                .or_default(),
        )
    }

    /// Forgets working keys in the HSM (a sign-in replaced them, or a sign-off ended them).
    pub(crate) fn delete_keys(&self, keys: Option<SessionKeys>) {
        if let Some(old) = keys {
            for handle in [Some(old.pik), Some(old.mak), old.tdk]
                .into_iter()
                .flatten()
            {
                let _ = self.hsm.delete_key(handle);
            }
        }
    }

    /// Changes terminal `tid` as it is now, under the map's lock: what another task changed
    /// since the caller read it (a sign-in's new keys, a suspension) stays. A copy read before
    /// a wait and put back whole would undo those: the keys a sign-in had replaced, already
    /// deleted from the HSM, and every MAC then refused until the next sign-in.
    pub fn modify_terminal(&self, tid: &str, change: impl FnOnce(&mut Terminal)) {
        let mut terminals = self
            .terminals
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = terminals.get_mut(tid) {
            change(Arc::make_mut(current));
        }
    }

    pub fn replace_terminal(&self, terminal: Terminal) {
        self.terminals
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(terminal.tid.clone(), Arc::new(terminal));
    }

    /// Writes a terminal's state change, then shows it: the in-memory terminal changes only once
    /// the store holds the record, so a failed write leaves both as they were (one not answered
    /// within `journal_wait` leaves memory as it was; the store may take it later).
    pub async fn commit_terminal(
        &self,
        record: Record,
        updated: Terminal,
    ) -> Result<(), StoreError> {
        self.persist_within(vec![record]).await?;
        self.replace_terminal(updated);
        Ok(())
    }

    /// What tells a terminal's retry (the same request again) from other content under the same
    /// key, kept in the journal. Keyed (the HSM's fingerprint, an HMAC under a key derived from
    /// the master key): the request carries the card number and the row its masked form and
    /// every other field, so a plain hash would give the card number back to anyone who can
    /// read the journal and try the middle digits. The input starts with the MTI's binary
    /// bytes, so it never equals a card number's digits, which the same key fingerprints.
    pub fn request_digest(&self, message: &iso8583::Message<'_>) -> [u8; 16] {
        let mut digest = [0u8; 16];
        let keyed = self.hsm.fingerprint(message.mac_input());
        for (slot, byte) in digest.iter_mut().zip(keyed.iter()) {
            *slot = *byte;
        }
        digest
    }

    /// Host trace numbers for issuer requests: six digits, never 0. Nodes sharing a database
    /// (and so an issuer's view of traces) draw from disjoint classes: the trace less one is
    /// congruent to the node id modulo `TRACE_NODES`.
    pub fn next_trace(&self) -> u32 {
        let k = self.trace.fetch_add(1, Ordering::Relaxed) % TRACE_PER_NODE;
        k * TRACE_NODES + u32::from(store::node_place(self.config.node_id)) + 1
    }

    /// A host trace for a request to `link`: the next of this node's, passing over any still
    /// awaited on the link. Traces come round within seconds at full load while an issuer's
    /// timeout may be a minute, and the exchange refuses a request whose trace is awaited
    /// (91, nothing sent).
    pub(crate) fn next_trace_for(&self, link: &crate::issuer::IssuerLink) -> u32 {
        free_trace(|| self.next_trace(), |trace| link.trace_awaited(trace))
    }

    /// A 12-digit RRN: node id, then ten digits of sequence.
    pub async fn next_rrn(&self) -> Result<String, StoreError> {
        let n = self
            .within_wait(self.rrns.next(self.store.as_ref()))
            .await?;
        Ok(format!(
            "{:02}{:010}",
            self.config.node_id % 100,
            n % 10_000_000_000
        ))
    }

    pub async fn next_id(&self) -> Result<i64, StoreError> {
        let n = self.within_wait(self.ids.next(self.store.as_ref())).await?;
        i64::try_from(n).map_err(|_| StoreError::Corrupt {
            what: "transaction id",
            value: n.to_string(),
        })
    }

    /// `f` (a sequence's next block, reserved by the journal's writer), failing after
    /// `journal_wait`: a block reserved after that is only a block of numbers never used.
    async fn within_wait<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.config.journal_wait, f)
            .await
            .unwrap_or_else(|_| Err(self.no_answer()))
    }

    /// Counts a journal write or read not answered within `journal_wait`, and says why.
    pub(crate) fn no_answer(&self) -> StoreError {
        self.waits_exceeded.fetch_add(1, Ordering::Relaxed);
        StoreError::Backend {
            message: format!(
                "the journal did not answer within {} ms",
                self.config.journal_wait.as_millis()
            ),
        }
    }

    /// Writes what a terminal's management request changes (its keys, its batch, its
    /// settlement) within `journal_wait`, journal off or not: the terminal is answered 96
    /// rather than held by a journal that hangs. A write not answered by then stays queued and
    /// may yet land; the terminal, told 96, sends its request again.
    pub async fn persist_within(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let durable = self.store.submit(records)?;
        match tokio::time::timeout(self.config.journal_wait, durable).await {
            Ok(written) => written,
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Writes records durably within `journal_wait`, unless journaling is off (benchmarks).
    /// A write not answered by then is handed back, still queued: it may yet land.
    pub async fn journal_within(&self, records: Vec<Record>) -> Journalled {
        if !self.config.journal {
            return Journalled::Written;
        }
        match self.store.submit(records) {
            Ok(durable) => self.wait_within(durable).await,
            Err(error) => Journalled::Failed(error),
        }
    }

    /// `journal_within`, the write submitted open: while the writer has not taken it into a
    /// commit, the returned rider adds records to the same transaction (`store::Rider`).
    pub async fn journal_open_within(
        &self,
        records: Vec<Record>,
    ) -> (Journalled, Option<store::Rider>) {
        if !self.config.journal {
            return (Journalled::Written, None);
        }
        match self.store.submit_open(records) {
            Ok((durable, rider)) => (self.wait_within(durable).await, Some(rider)),
            Err(error) => (Journalled::Failed(error), None),
        }
    }

    /// Waits `journal_wait` for a queued write: one not answered by then is handed back, counted
    /// and logged.
    pub async fn wait_within(&self, durable: store::Durable) -> Journalled {
        let waited = self.wait_again(durable).await;
        if matches!(waited, Journalled::Late(_)) {
            let error = self.no_answer();
            tracing::warn!(%error, "the write stays queued; the request is not answered as written");
        }
        waited
    }

    /// `wait_within` for a write already counted late once (an outcome already being
    /// committed, waited for as long again): not counted or logged a second time.
    pub async fn wait_again(&self, mut durable: store::Durable) -> Journalled {
        match tokio::time::timeout(self.config.journal_wait, &mut durable).await {
            Ok(Ok(())) => Journalled::Written,
            Ok(Err(error)) => Journalled::Failed(error),
            Err(_) => Journalled::Late(durable),
        }
    }

    /// Reads the store off the async workers (a blocking thread), or on this thread when the
    /// store commits inline too (the deterministic simulation: a read on another thread would
    /// let the host's timing decide the order of events). `None` if the read's thread died.
    pub async fn read_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Option<T> {
        let store = Arc::clone(&self.store);
        if store.reads_inline() {
            return Some(f(store.as_ref()));
        }
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .ok()
    }

    /// `read_store` for a terminal's request: `None` also when the read has not answered within
    /// `journal_wait` (a database that stopped answering must not hold the terminal; the read's
    /// thread ends when its connection does, and the read pool bounds how many wait so).
    pub async fn read_for_request<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Option<T> {
        let wait = self.config.journal_wait;
        let read = tokio::time::timeout(wait, self.read_store(f)).await;
        if read.is_err() {
            let error = self.no_answer();
            tracing::warn!(%error, "journal read: answering 96");
        }
        read.ok().flatten()
    }

    /// Writes records durably whatever the journal setting (terminal keys, reversal queue).
    pub async fn persist(&self, records: Vec<Record>) -> Result<(), StoreError> {
        self.store.submit(records)?.await
    }

    /// 96 when the host could not write what a request changes; sent without a MAC, as no
    /// terminal is passed to `reply`.
    pub fn system_error(&self, frame: &Frame<'_>) -> Option<Vec<u8>> {
        self.answer_code(frame, RC_SYSTEM_ERROR)
    }

    /// The answer to `frame` with response code `code` and nothing else; without a MAC, as no
    /// terminal is passed to `reply` (sign-in, echo, refusals before a terminal's MAC is
    /// checked).
    pub fn answer_code(&self, frame: &Frame<'_>, code: [u8; 2]) -> Option<Vec<u8>> {
        self.reply(frame, None, &Answer::code(code), None, |_| Ok(()))
    }

    /// Fields 44 and 63 of a financial reply: 44, the issuer (the BIN table's bank code) and
    /// the acquirer, 11 each; 63, the card organisation ("CUP" for a card not known), and the
    /// merchant's registered name where it can be printed.
    pub(crate) fn set_card_fields(
        &self,
        out: &mut MessageBuilder,
        (organisation, bank): (&'static str, Option<String>),
        terminal: Option<&Terminal>,
    ) -> Result<(), EncodeError> {
        out.set_text(
            44,
            &format!(
                "{:<11.11}{:<11.11}",
                bank.unwrap_or_default(),
                self.config.acquirer_code
            ),
        )?;
        let name = terminal
            .and_then(|t| self.registered_name_field63(&t.mid))
            .unwrap_or_default();
        out.set_text(63, &format!("{organisation}{name}"))?;
        Ok(())
    }

    /// [`Core::set_card_fields`] from a decrypted track's card, when there is one (`fields`,
    /// see `decrypted_card_fields` in financial.rs): over what the request alone gave.
    pub(crate) fn set_decrypted_card_fields(
        &self,
        out: &mut MessageBuilder,
        fields: Option<(&'static str, Option<String>)>,
        terminal: &Terminal,
    ) -> Result<(), EncodeError> {
        match fields {
            Some(fields) => self.set_card_fields(out, fields, Some(terminal)),
            None => Ok(()),
        }
    }

    /// Builds the response to `frame`: echoed fields, host time, the answer's fields, then a
    /// MAC when the request carried one and the terminal has a MAK.
    pub fn reply(
        &self,
        frame: &Frame<'_>,
        terminal: Option<&Terminal>,
        answer: &Answer,
        rrn: Option<&str>,
        extra: impl FnOnce(&mut MessageBuilder) -> Result<(), EncodeError>,
    ) -> Option<Vec<u8>> {
        match self.try_reply(frame, terminal, answer, rrn, extra) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::warn!(%error, "cannot encode a response");
                None
            }
        }
    }

    fn try_reply(
        &self,
        frame: &Frame<'_>,
        terminal: Option<&Terminal>,
        answer: &Answer,
        rrn: Option<&str>,
        extra: impl FnOnce(&mut MessageBuilder) -> Result<(), EncodeError>,
    ) -> Result<Vec<u8>, ReplyError> {
        let request = &frame.message;
        let mti = request.mti().response().unwrap_or(request.mti());
        let mut out = MessageBuilder::new(mti);
        let management = matches!(
            request.txn_kind(),
            Some(
                WireKind::SignIn(_)
                    | WireKind::SignOff
                    | WireKind::EchoTest
                    | WireKind::Settlement
                    | WireKind::BatchUpload(_)
                    | WireKind::BatchUploadEnd { .. }
            ) | None
        );
        let echo = if management {
            MANAGEMENT_ECHO
        } else {
            FINANCIAL_ECHO
        };
        for &number in echo {
            out.copy_from(request, number)?;
        }
        let now_ms = self.clock.now_ms();
        let local = LocalTime::from_ms(now_ms);
        out.set_digits(12, &local.hhmmss())?
            .set_digits(13, &local.mmdd())?;
        if let Some(date) = &answer.settlement_date {
            out.set_digits(15, date)?;
        } else if !management {
            // The issuer gave none (a refusal, a timeout): the host's clearing date.
            let day = self.clearing_day(now_ms);
            if let Some(mmdd) = day.date.get(4..8) {
                out.set_digits(15, mmdd)?;
            }
        }
        if !management {
            out.set_digits(32, &self.config.acquirer_code)?;
            let card = crate::financial::card_in_clear(request, terminal.map(|t| t.scheme))
                .and_then(Result::ok);
            let organisation = self.card_organisation(card.as_ref());
            self.set_card_fields(&mut out, organisation, terminal)?;
        }
        if let Some(rrn) = rrn {
            out.set_text(37, rrn)?;
        }
        if let Some(auth) = &answer.auth_code {
            out.set_text(38, auth)?;
        }
        out.set_text(39, answer.code_text())?;
        crate::metrics::note_response_code(answer.response_code);
        if let Some(balance) = &answer.balance {
            out.set_text(54, balance)?;
        }
        extra(&mut out)?;
        // 99: a PIN block that does not decode is most often a PIN pad out of step with its
        // keys (and, repeated, refused until a new sign-in: `pin_replay`).
        let sign_in_again = matches!(
            answer.response_code,
            RC_MAC_FAILED | RC_BATCH_OUT_OF_STEP | RC_PIN_FORMAT
        );
        // The header is echoed with the host's own processing requirement: a new sign-in, or
        // none (this host offers no downloads). Echoing the terminal's digit would ask it for
        // what it asked (a 3 sent by a terminal would have every answer tell it to sign in).
        let header = frame
            .head
            .header
            .with_processing_requirement(if sign_in_again {
                ProcessingRequirement::SIGN_IN_AGAIN
            } else {
                ProcessingRequirement::NONE
            });
        let head = FrameHead {
            tpdu: frame.head.tpdu.reply(),
            header,
        };
        // Room for any answer this host builds, so the buffer never grows: a grown buffer
        // would free the old one, card number and all, unwiped.
        let mut bytes = Vec::with_capacity(REPLY_CAPACITY);
        let mak = terminal.and_then(|t| t.keys.map(|k| (k.mak, t.mac)));
        match mak {
            Some((mak, algorithm)) if request.has(64) && answer.response_code != RC_MAC_FAILED => {
                out.encode_frame_with_mac(&head, &mut bytes, |data| {
                    self.hsm
                        .generate_mac(mak, algorithm, data)
                        .map_err(ReplyError::from)
                })?;
            }
            _ => out.encode_frame(&head, &mut bytes)?,
        }
        Ok(bytes)
    }

    /// A quick refusal (overload) without touching the store: 96, no MAC. `None` for what is
    /// not a request (undecodable, or a response or advice MTI), as at any other time: the
    /// connection is closed, not answered with a "response" to a response.
    pub fn refuse(&self, frame: &Frame<'_>) -> Option<Vec<u8>> {
        if !frame.message.mti().is_request() {
            return None;
        }
        self.answer_code(frame, RC_SYSTEM_ERROR)
    }

    /// Sign-in: fresh working keys from the HSM under the terminal's TMK, durable before the
    /// terminal sees them; the batch of 60.2 becomes the terminal's batch, unless it is one the
    /// host has closed (`batch_at_sign_in`), and the answer's 60.2 names the batch it is in.
    pub async fn sign_in(
        self: &Arc<Self>,
        frame: &Frame<'_>,
        keys: iso8583::SignInKeys,
    ) -> Option<Vec<u8>> {
        let request = &frame.message;
        let Some(terminal) = request
            .text(41)
            .and_then(|tid| self.terminal(tid.trim_end()))
        else {
            return self.answer_code(frame, RC_NOT_REGISTERED);
        };
        // A suspended terminal still signs in: it takes no new business (58, `financial`), but
        // its reversals count, and a terminal without working keys (after a power cycle, a
        // sign-off, an A0) could send none. A closed one is done with.
        if !may_sign_in(terminal.status) {
            return self.answer_code(frame, RC_NOT_PERMITTED_TERMINAL);
        }
        if !terminal.names_own_merchant(request) {
            return self.answer_code(frame, RC_INVALID_MERCHANT);
        }
        // A merchant whose relationship has ended: its terminals take no business (03), and
        // get no working keys either. (A suspended one's still do: its voids, refunds and
        // reversals go on.)
        if self
            .risk
            .merchant(&terminal.mid)
            .is_some_and(|m| m.state == store::risk::MerchantState::Closed)
        {
            return self.answer_code(frame, RC_INVALID_MERCHANT);
        }
        let scheme = match keys {
            iso8583::SignInKeys::Single => KeyScheme::Single,
            iso8583::SignInKeys::Double => KeyScheme::Double,
            iso8583::SignInKeys::DoubleWithTrackKey => KeyScheme::DoubleWithTdk,
            iso8583::SignInKeys::Sm4 => KeyScheme::Sm4,
        };
        // A sign-in carries no MAC: it may ask for the terminal's key scheme or a stronger
        // one, never a weaker one (single DES keys for a terminal set up for double, or no
        // track key for one set up with one).
        if scheme_strength(scheme) < scheme_strength(terminal.registered) {
            tracing::warn!(tid = %terminal.tid, asked = scheme.code(), "weaker key scheme refused");
            return self.answer_code(frame, RC_NOT_PERMITTED_TERMINAL);
        }
        let (_changing, terminal) = self.lock_keys(&terminal.tid).await;
        let Some(terminal) = terminal else {
            return self.system_error(frame);
        };
        // Closed while this sign-in waited for the lock: no keys.
        if !may_sign_in(terminal.status) {
            return self.answer_code(frame, RC_NOT_PERMITTED_TERMINAL);
        }
        let named = request.field60().ok().flatten().and_then(|f| f.batch);
        let Some(batch_no) = self.batch_at_sign_in(&terminal, named).await else {
            tracing::warn!(tid = %terminal.tid, "cannot read the terminal's batch at sign-in");
            return self.system_error(frame);
        };
        // The answer's RRN (37, which the sign-in's answer carries) before any key is made: a
        // journal that cannot give one answers 96 with nothing changed.
        let Ok(rrn) = self.next_rrn().await else {
            return self.system_error(frame);
        };
        let issued = match self
            .hsm
            .generate_working_keys(terminal.tmk, scheme, terminal.mak)
        {
            Ok(issued) => issued,
            // A scheme the terminal's master key cannot carry (SM4 keys under a 3DES master
            // key, double-length keys under a single one): the terminal's set-up, not a fault
            // that a retry mends.
            Err(
                error @ HsmError::Field62(
                    paycrypto::Field62Error::TmkAlgorithm { .. }
                    | paycrypto::Field62Error::TmkTooShort { .. },
                ),
            ) => {
                tracing::warn!(tid = %terminal.tid, asked = scheme.code(), %error, "key scheme refused");
                return self.answer_code(frame, RC_NOT_PERMITTED_TERMINAL);
            }
            Err(error) => {
                tracing::warn!(tid = %terminal.tid, %error, "cannot issue working keys");
                return self.answer_code(frame, RC_SYSTEM_ERROR);
            }
        };
        let now_ms = self.clock.now_ms();
        let record = Record::SignIn {
            tid: terminal.tid.clone(),
            at_ms: now_ms,
            batch_no,
            keys: WrappedKeys {
                pik: handle_bytes(issued.pik),
                mak: handle_bytes(issued.mak),
                tdk: issued.tdk.map(handle_bytes),
            },
        };
        let previous = terminal.keys;
        let new_keys = SessionKeys {
            pik: issued.pik,
            mak: issued.mak,
            tdk: issued.tdk,
        };
        let mut updated = (*terminal).clone();
        updated.batch_no = batch_no;
        updated.scheme = scheme;
        updated.keys = Some(new_keys);
        updated.row_keys = Some(new_keys);
        updated.keys_gen += 1;
        let mut durable = match self.store.submit(vec![record]) {
            Ok(durable) => durable,
            Err(error) => {
                tracing::warn!(tid = %terminal.tid, %error, "cannot record sign-in");
                self.delete_keys(Some(new_keys));
                return self.system_error(frame);
            }
        };
        match tokio::time::timeout(self.config.journal_wait, &mut durable).await {
            Ok(Ok(())) => self.replace_terminal(updated),
            Ok(Err(error)) => {
                tracing::warn!(tid = %terminal.tid, %error, "cannot record sign-in");
                self.delete_keys(Some(new_keys));
                return self.system_error(frame);
            }
            Err(_) => {
                let error = self.no_answer();
                tracing::warn!(tid = %terminal.tid, %error, "sign-in not recorded in time; answering 96");
                // Its place in the count of key changes, taken now under the key lock: of two
                // late sign-ins, only the later one's keys can be held.
                self.modify_terminal(&terminal.tid, |t| t.keys_gen = updated.keys_gen);
                self.settle_late_sign_in(&terminal.tid, durable, previous, updated);
                return self.system_error(frame);
            }
        }
        self.retire_keys(&terminal.tid, previous);
        if self.mark_batch(&terminal.tid, batch_no).await.is_err() {
            tracing::warn!(tid = %terminal.tid, "cannot read the batch's STANs at sign-in");
            return self.system_error(frame);
        }
        tracing::info!(tid = %terminal.tid, scheme = scheme.code(), batch_no, "signed in");
        self.note_health(&terminal.tid, frame).await;
        self.reply(
            frame,
            None,
            &Answer::code(RC_APPROVED),
            Some(rrn.as_str()),
            |out| {
                out.set_digits(32, &self.config.acquirer_code)?;
                // 60.2: the batch the terminal is in now, which may not be the one it named.
                let asked = request
                    .digits(60)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                let message_type = asked.get(..2).unwrap_or("00");
                let rest = asked.get(8..).unwrap_or("");
                out.set_digits(60, &format!("{message_type}{batch_no:06}{rest}"))?;
                out.set_binary(62, &issued.field62)?;
                Ok(())
            },
        )
    }

    /// A sign-in whose record the journal took too long to write (answered 96): the write is
    /// still queued and may land, naming the new keys. Once its fate is known, the keys the
    /// terminal's row does not name go from the HSM: the new ones if it failed; if it landed,
    /// the terminal is held with the new keys (its row names them; the terminal, told 96,
    /// signs in again at its next A0) and the old ones go, unless a later sign-in replaced
    /// them meanwhile, whose record follows this one and names its own.
    fn settle_late_sign_in(
        self: &Arc<Self>,
        tid: &str,
        durable: store::Durable,
        previous: Option<SessionKeys>,
        updated: Terminal,
    ) {
        let core = Arc::clone(self);
        let tid = tid.to_owned();
        self.tasks.spawn(async move {
            let new_keys = updated.keys;
            if durable.await.is_err() {
                core.delete_keys(new_keys);
                return;
            }
            let (_changing, _) = core.lock_keys(&tid).await;
            let mut held = None;
            core.modify_terminal(&tid, |t| {
                // Nothing changed its keys since this sign-in (no later sign-in, sign-off or
                // keys taken up).
                if t.keys_gen == updated.keys_gen {
                    t.keys = updated.keys;
                    t.row_keys = updated.keys;
                    t.keys_gen = updated.keys_gen;
                    t.batch_no = updated.batch_no;
                    t.scheme = updated.scheme;
                    held = Some(previous);
                } else if t.keys == new_keys {
                    // Taken up from the row already (a shared journal's refresh), which ended
                    // the keys held before.
                    held = Some(None);
                }
            });
            match held {
                Some(replaced) => core.retire_keys(&tid, replaced),
                None => core.retire_keys(&tid, new_keys),
            }
        });
    }

    /// Marks the STANs a terminal batch has in the journal in the in-memory index. Several
    /// nodes on one journal: another node may have served this batch before the terminal came
    /// here (a node died, or the balancer moved it), so that a retry or a reversal here reads
    /// what that node recorded instead of taking the request for new. The terminal's next
    /// STANs are above them: no read. `Err` if the store could not be read.
    pub async fn mark_batch(&self, tid: &str, batch_no: u32) -> Result<(), ()> {
        let owned = tid.to_owned();
        let since = self.batches_since();
        match self
            .read_for_request(move |store| store.stans_of_batch(&owned, batch_no, &since))
            .await
        {
            Some(Ok(Some(stans))) => {
                let today = self.clearing_day(self.clock.now_ms()).day_number;
                self.ledger.mark_older(tid, batch_no, today, stans);
                Ok(())
            }
            Some(Ok(None)) => Ok(()),
            Some(Err(_)) | None => Err(()),
        }
    }

    /// The first clearing date (`YYYYMMDD`) whose rows under a terminal batch's number are that
    /// batch ([`crate::ledger::marked_since`]): older ones are an earlier batch of the same
    /// number, from before the terminal was replaced or reinstalled and numbered its batches
    /// from 1 again, and are neither its retries nor its settlement.
    pub fn batches_since(&self) -> String {
        crate::ledger::marked_since(self.clock.now_ms()).yyyymmdd()
    }

    /// The last settlement of a terminal's batch number, if it had one; `None` if the store
    /// could not be read.
    pub async fn batch_settled(
        &self,
        tid: &str,
        batch_no: u32,
    ) -> Option<Option<store::settlement::BatchSettlementRow>> {
        let owned = tid.to_owned();
        self.read_for_request(move |store| store.batch_settlement(&owned, batch_no))
            .await?
            .ok()
    }

    /// Where the batch open under a terminal's batch number starts: when the number's last
    /// settlement closed an earlier batch (rows from before it are that batch's: a terminal
    /// replaced or reinstalled numbers its batches from 1 again), or, after an unreadable
    /// settlement (which closes nothing), where that one found the batch starting. `None` if
    /// the store could not be read.
    pub async fn batch_closed_at(&self, tid: &str, batch_no: u32) -> Option<Option<i64>> {
        Some(self.batch_settled(tid, batch_no).await?.and_then(|s| {
            if crate::settle::closes(&s) {
                Some(s.settled_at_ms)
            } else {
                s.opened_after_ms
            }
        }))
    }

    /// With a shared journal ([`SwitchConfig::shared_journal`]), the first request of each
    /// terminal connection marks the terminal's batch ([`Core::mark_batch`]).
    pub async fn mark_for_connection(&self, tid: &str, batch_no: u32) -> Result<(), ()> {
        if !self.config.shared_journal {
            return Ok(());
        }
        let Some(connection) = crate::session::connection() else {
            return Ok(());
        };
        let marked = self
            .marked_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tid)
            == Some(&connection);
        if marked {
            return Ok(());
        }
        self.mark_batch(tid, batch_no).await?;
        self.marked_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tid.to_owned(), connection);
        Ok(())
    }

    pub async fn sign_off(&self, frame: &Frame<'_>) -> Option<Vec<u8>> {
        let Some(terminal) = frame
            .message
            .text(41)
            .and_then(|t| self.terminal(t.trim_end()))
        else {
            return self.answer_code(frame, RC_NOT_REGISTERED);
        };
        // No MAC on a sign-off: at least the merchant must be the terminal's, as at sign-in.
        if !terminal.names_own_merchant(&frame.message) {
            return self.answer_code(frame, RC_INVALID_MERCHANT);
        }
        // Keys another node gave it, if its MAC asks for them: before the key lock, which
        // reading them takes.
        let terminal = self.keys_for_mac(frame, terminal).await;
        let (_changing, terminal) = self.lock_keys(&terminal.tid).await;
        let Some(terminal) = terminal else {
            return self.system_error(frame);
        };
        // A terminal that MACs its sign-off is held to it, as for a settlement: a wrong MAC is
        // A0 and its keys stay (one that sends none is not asked for it), a right one gets its
        // answer MACed with the keys the sign-off ends.
        if self.mac_refused(frame, &terminal) {
            return self.answer_code(frame, RC_MAC_FAILED);
        }
        let record = Record::SignOff {
            tid: terminal.tid.clone(),
        };
        let mut updated = (*terminal).clone();
        updated.keys = None;
        updated.row_keys = None;
        updated.keys_gen += 1;
        if self.commit_terminal(record, updated).await.is_err() {
            return self.system_error(frame);
        }
        let answer = self.answer_checked(frame, &terminal, RC_APPROVED);
        // The keys are of no use any more: free them in the HSM.
        self.retire_keys(&terminal.tid, terminal.keys);
        answer
    }

    pub fn response_mti(mti: Mti) -> u16 {
        mti.response().map_or(0, Mti::value)
    }
}

/// How strong a key scheme is: single DES, double-length DES, double-length DES with a track
/// key, SM4 (which has one too). A terminal set up with a track key that signed in without one
/// would send its tracks in clear, and the host would take them.
fn scheme_strength(scheme: KeyScheme) -> u8 {
    match scheme {
        KeyScheme::Single => 1,
        KeyScheme::Double => 2,
        KeyScheme::DoubleWithTdk => 3,
        KeyScheme::Sm4 => 4,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A trace still awaited on the link is passed over for the next free one; past
    /// `TRACE_TRIES` awaited in a row, the last drawn is taken (and refused at the exchange).
    #[test]
    fn an_awaited_trace_is_passed_over() {
        let drawn = Cell::new(0_u32);
        let next = || {
            drawn.set(drawn.get() + 1);
            drawn.get()
        };
        assert_eq!(free_trace(next, |t| t < 4), 4);
        assert_eq!(drawn.get(), 4);
        drawn.set(0);
        assert_eq!(free_trace(next, |_| false), 1);
        drawn.set(0);
        let last = u32::try_from(TRACE_TRIES).unwrap_or(u32::MAX);
        assert_eq!(free_trace(next, |_| true), last);
        assert_eq!(drawn.get(), last);
    }
}
