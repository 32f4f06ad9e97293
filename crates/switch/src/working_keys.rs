//! Working keys across nodes on one journal ([`crate::SwitchConfig::shared_journal`]).
//!
//! Each node holds its terminals' working keys in memory, as handles into its HSM; a sign-in
//! or sign-off writes the new handles (or none) to the terminal's row. Another node's sign-in
//! or sign-off must end the keys this node holds, or a terminal's old keys would stay good here
//! until this node restarted. Each terminal held here remembers the keys its row named when
//! this node last wrote or read them (`Terminal::row_keys`); a row naming others has changed
//! elsewhere, and this node takes its keys up:
//! - at its next refresh (`risk::refresh`, every `risk_refresh`), from the rows it reads anyway;
//! - at once, when a request's MAC fails under the keys held here (or none are held), by
//!   reading that terminal's row, at most once a second per terminal while the keys held stay
//!   the same.
//!
//! Keys the row names that this node's HSM holds (one HSM the nodes share) are taken up: the
//! last sign-in's keys are the terminal's on every node, as a gateway in front of one terminal
//! needs. Keys it does not hold (an HSM of each node's own) cannot be used here: the terminal
//! is left without keys on this node, and its next request is told to sign in (77). The keys
//! ended, and on a shared journal those a sign-in or sign-off here replaces (another node may
//! hold them until its refresh), leave the HSM once requests already under way with them have
//! had time to answer.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use iso8583::Frame;
use paycrypto::{HsmError, KeyAlgorithm, KeyHandle, KeyScheme, KeyUsage};
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

/// Keys no longer a terminal's here, whose terminal, and when they may go from the HSM.
#[derive(Default)]
pub(crate) struct EndedKeys(std::sync::Mutex<Vec<(Instant, String, SessionKeys)>>);

impl Core {
    /// The terminal whose MAK gives `frame`'s MAC (after [`Core::keys_for_mac`]). `Err` with
    /// the answer's code: 77 when no keys are held for it, A0 when they do not give the MAC.
    pub(crate) async fn mac_checked(
        &self,
        frame: &Frame<'_>,
        terminal: Arc<Terminal>,
    ) -> Result<Arc<Terminal>, [u8; 2]> {
        // Checked once on the way of every request that passes; the look is for the others.
        if self.mac_gives(frame, &terminal) {
            return Ok(terminal);
        }
        let terminal = self.keys_for_mac(frame, terminal).await;
        if self.mac_gives(frame, &terminal) {
            return Ok(terminal);
        }
        match terminal.keys {
            // Not signed in: there is no MAK to check or answer with.
            None => Err(crate::core::RC_BATCH_OUT_OF_STEP),
            Some(_) => {
                tracing::info!(tid = %terminal.tid, "MAC verification failed");
                Err(crate::core::RC_MAC_FAILED)
            }
        }
    }

    /// The terminal as held here, or on a shared journal, when its keys do not give `frame`'s
    /// MAC (or there are none), as held once its row has been read for keys another node
    /// gave it. A frame without a MAC is checked against nothing: as held. Never call it
    /// holding the terminal's key lock (it takes it to read the row).
    pub(crate) async fn keys_for_mac(
        &self,
        frame: &Frame<'_>,
        terminal: Arc<Terminal>,
    ) -> Arc<Terminal> {
        let unchecked = frame.message.mac().is_none() && terminal.keys.is_some();
        if !self.config.shared_journal || unchecked || self.mac_gives(frame, &terminal) {
            return terminal;
        }
        // Boxed: every request's future would otherwise be as large as this rare wait.
        Box::pin(self.look_for_keys(frame, terminal)).await
    }

    /// [`Core::keys_for_mac`]'s look at the row, for keys that do not give the MAC.
    async fn look_for_keys(&self, frame: &Frame<'_>, terminal: Arc<Terminal>) -> Arc<Terminal> {
        // Another frame's look may have taken the keys up meanwhile.
        if let Some(current) = self.terminal(&terminal.tid)
            && current.keys != terminal.keys
            && self.mac_gives(frame, &current)
        {
            return current;
        }
        if self.may_look_again(&terminal.tid, terminal.keys) {
            if let Some(fresh) = self.keys_from_journal(&terminal.tid).await {
                return fresh;
            }
        } else {
            // A look under way (a gateway's frames arriving together after a move): its
            // outcome, once it holds the key lock no more.
            let (changing, current) = self.lock_keys(&terminal.tid).await;
            drop(changing);
            if let Some(current) = current
                && current.keys != terminal.keys
                && self.mac_gives(frame, &current)
            {
                return current;
            }
        }
        terminal
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

    /// Reads terminal `tid`'s row under its key lock (so that no sign-in here lands between
    /// the read and what is made of it) and takes up its keys if another node changed them.
    /// The terminal as held afterwards; `None` if it is not registered.
    async fn keys_from_journal(&self, tid: &str) -> Option<Arc<Terminal>> {
        let (_changing, terminal) = self.lock_keys(tid).await;
        let terminal = terminal?;
        let owned = tid.to_owned();
        // Bounded, and not a request's journal wait: the request is answered 77 or A0 anyway.
        let read = tokio::time::timeout(
            self.config.journal_wait,
            self.read_store(move |store| store.terminal(&owned)),
        )
        .await;
        if let Ok(Some(Ok(Some(row)))) = read
            && let Some(stored) = stored_keys(&row)
            && stored != terminal.row_keys
        {
            self.take_up(&terminal, stored, row.batch_no);
        }
        self.terminal(tid)
    }

    /// Makes what terminal `held`'s row names now (`stored`, another node's sign-in or
    /// sign-off) this node's: the keys if its HSM holds them, with the row's batch, else none.
    /// The keys held before end. Called under the terminal's key lock.
    fn take_up(&self, held: &Terminal, stored: Option<SessionKeys>, batch_no: u32) {
        let usable = match stored.map(|keys| (keys, self.scheme_held(keys))) {
            None => None,
            Some((keys, Ok(scheme))) => scheme.map(|scheme| (keys, scheme)),
            // The HSM could not say (a network HSM's outage): the row is looked at again at
            // the next refresh, and the keys held here stay until then.
            Some((_, Err(error))) => {
                tracing::warn!(tid = %held.tid, %error, "cannot look up the working keys another node issued");
                return;
            }
        };
        let now_held = usable.map(|(keys, _)| keys);
        self.modify_terminal(&held.tid, |t| {
            t.row_keys = stored;
            t.keys = now_held;
            t.keys_gen += 1;
            if let Some((_, scheme)) = usable {
                t.scheme = scheme;
                t.batch_no = batch_no;
            }
        });
        if held.keys != now_held {
            tracing::info!(
                tid = %held.tid,
                taken_up = now_held.is_some(),
                "working keys changed on another node: those held here ended"
            );
            if let Some(ended) = held.keys {
                self.end_keys(&held.tid, ended);
            }
        }
    }

    /// The scheme of working keys this node's HSM holds as a terminal's (a PIK, a MAK and a
    /// track key if any); `Ok(None)` if it does not hold them, `Err` if it could not say.
    fn scheme_held(&self, keys: SessionKeys) -> Result<Option<KeyScheme>, HsmError> {
        let held = |handle: KeyHandle, usage: KeyUsage| match self.hsm.key_info(handle) {
            Ok(info) if info.usage == usage => Ok(Some(info)),
            Ok(_) | Err(HsmError::UnknownKey(_) | HsmError::WrongUsage { .. }) => Ok(None),
            Err(error) => Err(error),
        };
        let (Some(pik), Some(_)) = (
            held(keys.pik, KeyUsage::Pik)?,
            held(keys.mak, KeyUsage::Mak)?,
        ) else {
            return Ok(None);
        };
        Ok(match keys.tdk {
            Some(tdk) if held(tdk, KeyUsage::Tdk)?.is_none() => None,
            Some(_) if pik.algorithm == KeyAlgorithm::Sm4 => Some(KeyScheme::Sm4),
            Some(_) => Some(KeyScheme::DoubleWithTdk),
            None if pik.single_des => Some(KeyScheme::Single),
            None => Some(KeyScheme::Double),
        })
    }

    /// Keys terminal `tid` no longer has here that a sign-in or sign-off replaced: at once out
    /// of the HSM on a journal of this node's own, later on a shared one ([`Core::end_keys`]),
    /// where another node may hold them until its refresh.
    pub(crate) fn retire_keys(&self, tid: &str, keys: Option<SessionKeys>) {
        match keys {
            Some(keys) if self.config.shared_journal => self.end_keys(tid, keys),
            _ => self.delete_keys(keys),
        }
    }

    /// Keys taken from terminal `tid`: deleted from the HSM by [`Core::delete_ended_keys`] once
    /// requests already under way with them have had their issuer's time and the journal's to
    /// answer (their answers are MACed with them).
    fn end_keys(&self, tid: &str, keys: SessionKeys) {
        // Another node may use them until its refresh, then for a request's whole time.
        let grace = self.config.risk_refresh
            + self.config.longest_issuer_timeout()
            + self.config.journal_wait
            + self.config.retry_wait;
        self.ended_keys
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Instant::now() + grace, tid.to_owned(), keys));
    }

    /// Deletes from the HSM the ended keys whose time has come, but those their terminal holds
    /// again.
    pub(crate) fn delete_ended_keys(&self) {
        let now = Instant::now();
        let due: Vec<(String, SessionKeys)> = {
            let mut ended = self
                .ended_keys
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (due, kept): (Vec<_>, Vec<_>) = ended.drain(..).partition(|(at, ..)| *at <= now);
            *ended = kept;
            due.into_iter().map(|(_, tid, keys)| (tid, keys)).collect()
        };
        for (tid, keys) in due {
            if self.terminal(&tid).is_some_and(|t| t.keys == Some(keys)) {
                continue;
            }
            self.delete_keys(Some(keys));
        }
    }

    /// On a shared journal, how many times this node changed each terminal's keys and what its
    /// row named when this node last wrote or read it: noted before the rows are read for
    /// [`Core::keys_from_rows`].
    pub(crate) fn row_keys_noted(&self) -> Option<HashMap<String, (u64, Option<SessionKeys>)>> {
        if !self.config.shared_journal {
            return None;
        }
        let terminals = self
            .terminals
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Some(
            terminals
                .iter()
                .map(|(tid, t)| (tid.clone(), (t.keys_gen, t.row_keys)))
                .collect(),
        )
    }

    /// Takes up the keys of every terminal whose row, in `rows` (read after `noted`), names
    /// other keys than it did when this node last wrote or read it. One whose keys changed here
    /// since `noted` (its key lock busy, or its count of changes moved) waits for the next
    /// refresh: `rows` may have been read before that change.
    pub(crate) fn keys_from_rows(
        &self,
        rows: &[TerminalRow],
        noted: &HashMap<String, (u64, Option<SessionKeys>)>,
    ) {
        for row in rows {
            let (Some(stored), Some((generation, then))) = (stored_keys(row), noted.get(&row.tid))
            else {
                continue;
            };
            if stored == *then {
                continue;
            }
            let Some(_changing) = self.try_lock_keys(&row.tid) else {
                continue;
            };
            if let Some(held) = self.terminal(&row.tid)
                && held.keys_gen == *generation
            {
                self.take_up(&held, stored, row.batch_no);
            }
        }
    }
}
