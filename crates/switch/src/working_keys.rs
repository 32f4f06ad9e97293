//! Working keys across nodes on one journal ([`crate::SwitchConfig::shared_journal`]).
//!
//! Each node holds its terminals' working keys in memory, as handles into its HSM; a sign-in
//! or sign-off writes the new handles (or none) to the terminal's row. Another node's sign-in
//! or sign-off must end the keys this node holds, or a terminal's old keys would stay good here
//! until this node restarted. So this node takes the row's keys up:
//! - at its next refresh (`risk::refresh`, every `risk_refresh`), for every terminal whose row
//!   names other keys than it holds;
//! - at once, when a request's MAC fails under the keys held here (or none are held), by
//!   reading that terminal's row, at most once a second per terminal.
//!
//! Keys the row names that this node's HSM holds (one HSM the nodes share) are taken up: the
//! last sign-in's keys are the terminal's on every node, as a gateway in front of one terminal
//! needs. Keys it does not hold (an HSM of each node's own) cannot be used here: the terminal
//! is left without keys on this node, and its next request is told to sign in. The keys ended
//! are deleted from the HSM once requests already under way with them have had time to answer.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use iso8583::Frame;
use paycrypto::{KeyAlgorithm, KeyHandle, KeyScheme, KeyUsage};
use store::TerminalRow;

use crate::core::{Core, SessionKeys, Terminal, handle_from_bytes};

/// How soon after one look at a terminal's row a failed MAC under the same keys may look
/// again: a peer sending bad MACs costs the journal one read a second, not one per frame.
const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The working keys a terminal's row names: `Some(None)` when it names none (signed off, never
/// signed in), `None` when they cannot be read.
pub(crate) fn stored_keys(row: &TerminalRow) -> Option<Option<SessionKeys>> {
    match &row.working_keys {
        None => Some(None),
        Some(k) => Some(Some(SessionKeys {
            pik: handle_from_bytes(&k.pik)?,
            mak: handle_from_bytes(&k.mak)?,
            tdk: match &k.tdk {
                Some(t) => Some(handle_from_bytes(t)?),
                None => None,
            },
        })),
    }
}

/// Keys no longer any terminal's, and when they may go from the HSM.
#[derive(Default)]
pub(crate) struct EndedKeys(std::sync::Mutex<Vec<(Instant, SessionKeys)>>);

impl Core {
    /// The terminal whose MAK gives `frame`'s MAC: as this node holds it, or, on a shared
    /// journal, as its row names it when the keys held here do not give the MAC (or there are
    /// none). `Err` with the answer's code: 77 when no keys are held for it, A0 when they do
    /// not give the MAC.
    pub(crate) async fn mac_checked(
        &self,
        frame: &Frame<'_>,
        terminal: Arc<Terminal>,
    ) -> Result<Arc<Terminal>, [u8; 2]> {
        if self.mac_gives(frame, &terminal) {
            return Ok(terminal);
        }
        if self.config.shared_journal
            && self.may_look_again(&terminal.tid, terminal.keys)
            && let Some(fresh) = self.keys_from_journal(&terminal.tid).await
            && fresh.keys != terminal.keys
            && self.mac_gives(frame, &fresh)
        {
            return Ok(fresh);
        }
        let held = self.terminal(&terminal.tid).unwrap_or(terminal);
        match held.keys {
            // Not signed in: there is no MAK to check or answer with.
            None => Err(crate::core::RC_BATCH_OUT_OF_STEP),
            Some(_) => {
                tracing::info!(tid = %held.tid, "MAC verification failed");
                Err(crate::core::RC_MAC_FAILED)
            }
        }
    }

    /// Whether `frame` carries a MAC that `terminal`'s MAK gives.
    fn mac_gives(&self, frame: &Frame<'_>, terminal: &Terminal) -> bool {
        match (frame.message.mac(), terminal.keys) {
            (Some(mac), Some(keys)) => self
                .hsm
                .verify_mac(keys.mak, terminal.mac, frame.message.mac_input(), mac)
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Whether terminal `tid`'s row may be read again now for its keys, `held` here: once a
    /// second while they stay the same, at once when they changed since the last look (the
    /// terminal signed in here, or keys were taken up meanwhile).
    fn may_look_again(&self, tid: &str, held: Option<SessionKeys>) -> bool {
        let now = Instant::now();
        let mut looked = self
            .keys_looked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match looked.get(tid) {
            Some((at, then)) if *then == held && now.duration_since(*at) < LOOK_AGAIN_AFTER => {
                false
            }
            _ => {
                looked.insert(tid.to_owned(), (now, held));
                true
            }
        }
    }

    /// Takes up the keys terminal `tid`'s row names, if they are not the ones held here:
    /// under the terminal's key lock, so that a sign-in here is never undone by a row read
    /// before it landed. The terminal as held afterwards; `None` if it is not registered.
    pub(crate) async fn keys_from_journal(&self, tid: &str) -> Option<Arc<Terminal>> {
        let (_changing, terminal) = self.lock_keys(tid).await;
        let terminal = terminal?;
        let owned = tid.to_owned();
        let row = match self
            .read_for_request(move |store| store.terminal(&owned))
            .await
        {
            Some(Ok(Some(row))) => row,
            _ => return Some(terminal),
        };
        let Some(stored) = stored_keys(&row) else {
            return Some(terminal);
        };
        if stored == terminal.keys {
            return Some(terminal);
        }
        let usable = stored.and_then(|keys| Some((keys, self.scheme_held(keys)?)));
        let ended = terminal.keys;
        self.modify_terminal(tid, |t| {
            t.keys = usable.map(|(keys, _)| keys);
            if let Some((_, scheme)) = usable {
                t.scheme = scheme;
                t.batch_no = row.batch_no;
            }
        });
        tracing::info!(
            tid,
            taken_up = usable.is_some(),
            "working keys changed on another node: those held here ended"
        );
        if let Some(ended) = ended {
            self.end_keys(ended);
        }
        self.terminal(tid)
    }

    /// The scheme of working keys this node's HSM holds as a terminal's (a PIK, a MAK and a
    /// track key if any); `None` if it does not hold them.
    fn scheme_held(&self, keys: SessionKeys) -> Option<KeyScheme> {
        let held = |handle: KeyHandle, usage: KeyUsage| {
            self.hsm
                .key_info(handle)
                .ok()
                .filter(|info| info.usage == usage)
        };
        let pik = held(keys.pik, KeyUsage::Pik)?;
        held(keys.mak, KeyUsage::Mak)?;
        match keys.tdk {
            Some(tdk) => {
                held(tdk, KeyUsage::Tdk)?;
                Some(if pik.algorithm == KeyAlgorithm::Sm4 {
                    KeyScheme::Sm4
                } else {
                    KeyScheme::DoubleWithTdk
                })
            }
            None if pik.single_des => Some(KeyScheme::Single),
            None => Some(KeyScheme::Double),
        }
    }

    /// Keys taken from a terminal: deleted from the HSM by [`Core::delete_ended_keys`] once
    /// requests already under way with them have had their issuer's time and the journal's to
    /// answer (their answers are MACed with them).
    fn end_keys(&self, keys: SessionKeys) {
        let longest_issuer = self
            .config
            .issuers
            .values()
            .map(|issuer| issuer.timeout)
            .max()
            .unwrap_or_default();
        let grace = longest_issuer + self.config.journal_wait + self.config.retry_wait;
        self.ended_keys
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Instant::now() + grace, keys));
    }

    /// Deletes from the HSM the ended keys whose time has come.
    pub(crate) fn delete_ended_keys(&self) {
        let now = Instant::now();
        let due: Vec<SessionKeys> = {
            let mut ended = self
                .ended_keys
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (due, kept): (Vec<_>, Vec<_>) = ended.drain(..).partition(|(at, _)| *at <= now);
            *ended = kept;
            due.into_iter().map(|(_, keys)| keys).collect()
        };
        for keys in due {
            self.delete_keys(Some(keys));
        }
    }

    /// On a shared journal, takes up the keys of every terminal whose row (in `rows`, just
    /// read) names other keys than this node holds.
    pub(crate) async fn keys_from_rows(&self, rows: &[TerminalRow]) {
        if !self.config.shared_journal {
            return;
        }
        for row in rows {
            let Some(held) = self.terminal(&row.tid) else {
                continue;
            };
            if stored_keys(row).is_some_and(|stored| stored != held.keys) {
                self.keys_from_journal(&row.tid).await;
            }
        }
    }
}
