//! The shoudan switch: takes terminal connections, checks and journals every request, routes
//! it by BIN to its issuer over a persistent link, and answers the terminal once the outcome is
//! durable. Issuer timeouts are answered 98 and reversed by store and forward until the issuer
//! acknowledges, across restarts.
//!
//! ```text
//! Switch::start(config, store, hsm, directory, clock) -> SwitchHandle
//! ```
//! Terminals and merchants are provisioned in the store beforehand ([`terminal_record`]); keys
//! live in the HSM and the store keeps only their handles.

#![forbid(unsafe_code)]

mod backoffice;
mod clock;
mod config;
mod core;
mod financial;
mod health;
mod issuer;
mod ledger;
mod metrics;
mod pin_replay;
mod risk;
mod saf;
mod session;
mod settle;
mod tasks;
mod wire;
mod working_keys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use domain::IssuerDirectory;
use iso8583::{FrameHead, Header, Tpdu};
use paycrypto::{Hsm, KeyHandle, KeyScheme, MacAlgorithm, MakLength};
use store::{
    EventRow, Outcome, Record, SafState, Status, Store, StoreError, TerminalRow, TxnKind, TxnRow,
    TxnState,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::backoffice::{
    BACK_OFFICE_TID, BackOffice, BackOfficeError, BackOfficeRefund, IDEMPOTENCY_KEY_LEN_MAX,
};
pub use crate::clock::{Clock, LocalTime, SystemClock, day_number_of};
pub use crate::config::*;
pub use crate::core::{handle_bytes, handle_from_bytes};
pub use crate::financial::REVERSED_BY_HOST;
pub use crate::health::clock_drift_s;
pub use crate::issuer::{Connecting, IssuerConnector, IssuerStream, LinkError, TcpConnector};
pub use crate::metrics::{
    HistogramSnapshot, IssuerLinkState, LATENCY_US_MAX, MetricsSnapshot, REQUEST_KINDS_MAX,
    RequestCount,
};
pub use crate::risk::MERCHANT_NOT_APPROVED;
pub use crate::settle::{ClearingDay, clearing_date_of};
pub use crate::wire::{WireError, read_frame};

use crate::core::{Core, Sequence, Terminal};
use crate::issuer::IssuerLink;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::session::Sessions;

/// Why the switch did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("bad frame head: {0}")]
    Head(#[from] iso8583::DecodeError),
    #[error("terminal {tid} has an unusable key handle, scheme or MAC algorithm")]
    BadTerminal { tid: String },
}

/// A terminal to provision.
#[derive(Clone, Debug)]
pub struct TerminalSpec {
    pub tid: String,
    pub mid: String,
    /// The terminal master key, already in the HSM.
    pub tmk: KeyHandle,
    pub scheme: KeyScheme,
    pub mac: MacAlgorithm,
    /// The MAK length sign-in issues under 003/004: `Single` for a terminal that MACs with
    /// single DES (CUP ECB only).
    pub mak: MakLength,
    pub batch_no: u32,
}

/// The store record that provisions a terminal (its merchant must be provisioned too).
pub fn terminal_record(spec: &TerminalSpec) -> Record {
    Record::UpsertTerminal(terminal_row(spec))
}

/// The record of a terminal that must be new: the store refuses it (a constraint error) when
/// its TID is held already, so two provisionings of one TID at once cannot both write it.
pub fn new_terminal_record(spec: &TerminalSpec) -> Record {
    Record::InsertTerminal(terminal_row(spec))
}

fn terminal_row(spec: &TerminalSpec) -> Box<TerminalRow> {
    Box::new(TerminalRow {
        tid: spec.tid.clone(),
        mid: spec.mid.clone(),
        tmk_wrapped: handle_bytes(spec.tmk),
        key_scheme: spec.scheme.code().to_owned(),
        mac_algorithm: crate::core::mac_spelling(spec.mac, spec.mak).to_owned(),
        status: Status::Active,
        batch_no: spec.batch_no,
        last_sign_in_ms: None,
        working_keys: None,
    })
}

/// The switch's entry point.
pub struct Switch;

/// A running switch: its address, and how to stop it.
pub struct SwitchHandle {
    addr: SocketAddr,
    /// Stops taking requests: the listener and every connection's reading.
    intake: watch::Sender<bool>,
    /// Stops the rest: issuer links, store-and-forward, the background loops.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    core: Arc<Core>,
    sessions: Sessions,
}

impl SwitchHandle {
    /// Where terminals connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the start's marks of the month's terminal batches are in (`ledger::load_marks`);
    /// until they are, requests under keys the index does not hold read the store.
    pub fn marks_loaded(&self) -> bool {
        !self.core.ledger.marks_loading()
    }

    /// Whether the link to an issuer (by bank code) is up.
    pub fn issuer_connected(&self, bank: &str) -> bool {
        self.core.links.get(bank).is_some_and(|l| l.is_connected())
    }

    /// The switch's counters now. Reads the store-and-forward depth from the store (a
    /// blocking read): call it from a scrape, off the request path.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.sessions.metrics;
        let mut issuers: Vec<IssuerLinkState> =
            self.core.links.values().map(|link| link.state()).collect();
        issuers.sort_by(|a, b| a.bank.cmp(&b.bank));
        let free = self.sessions.admission.available_permits();
        MetricsSnapshot {
            requests: m.requests(),
            total_latency: m.total.snapshot(),
            switch_latency: m.switch.snapshot(),
            in_flight: u64::try_from(self.sessions.bound.saturating_sub(free)).unwrap_or(0),
            in_flight_max: u64::try_from(self.sessions.bound).unwrap_or(u64::MAX),
            refused_overload: m.refused_overload.load(Ordering::Relaxed),
            connections: m.connections.load(Ordering::Relaxed),
            malformed_frames: m.malformed_frames.load(Ordering::Relaxed),
            silent_closed: m.silent_closed.load(Ordering::Relaxed),
            unread_closed: m.unread_closed.load(Ordering::Relaxed),
            answers_undelivered: m.answers_undelivered.load(Ordering::Relaxed),
            saf_depth: self
                .core
                .store
                .count_reversals_in_state(SafState::Pending)
                .ok(),
            journal_waits_exceeded: self.core.waits_exceeded.load(Ordering::Relaxed),
            journal_late_writes: u64::try_from(self.core.late.load(Ordering::Acquire))
                .unwrap_or(u64::MAX),
            issuers,
        }
    }

    /// Serves one terminal connection over any byte stream, as if it had been accepted on
    /// the listener (the deterministic simulation's in-memory pipes).
    pub fn serve_stream<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let sessions = self.sessions.clone();
        let intake = self.intake.subscribe();
        // Counted as the listener's are, so a shutdown waits for its answers to be written.
        sessions.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.core.tasks.spawn(async move {
            session::serve(&sessions, stream, intake).await;
            sessions.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Stops the switch as a `kill -9` would: every task dropped where it stands, mid-request,
    /// nothing answered, flushed or handed over; what the store committed is all that is
    /// left. With `SwitchConfig::abortable` (the deterministic simulation); without it only the
    /// listener, links and background loops stop, and requests already taken run on.
    pub fn crash(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.core.tasks.abort_all();
    }

    /// Stops taking terminals' requests: the listener closes and every connection stops
    /// reading (each ends once its answers are written); the issuer links, store-and-forward
    /// and back-office refunds go on. The first step of a stop, for a node that must let
    /// work begun elsewhere (a refund approved in the console) finish before
    /// [`SwitchHandle::shutdown`] takes the links down.
    pub fn close_intake(&self) {
        let _ = self.intake.send(true);
    }

    /// Stops as an operator's stop should: no new connection or request is taken; the
    /// requests already taken are finished (the issuer links stay up for their answers, or
    /// their timeouts), journalled and answered, for at most the longest issuer timeout and
    /// a little more; then the links and loops stop and their tasks are awaited. The store
    /// is the caller's to close.
    pub async fn shutdown(self) {
        self.close_intake();
        let longest = self.core.config.longest_issuer_timeout();
        let deadline = tokio::time::Instant::now() + longest + DRAIN_MARGIN;
        // Done when no request is in progress and every connection has written its answers
        // and ended (each stops reading at once, and ends when its last answer is written).
        // Writes that landed after their terminal was answered 96 are settled too (an approval
        // the terminal was told 96 for must not be left standing).
        let busy = || {
            self.in_flight() > 0
                || self.sessions.metrics.connections.load(Ordering::Relaxed) > 0
                || self.core.late.load(Ordering::Acquire) > 0
                || self.core.back_office.load(Ordering::Acquire) > 0
        };
        while busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let late = self.core.late.load(Ordering::Acquire);
        if late > 0 {
            tracing::error!(
                late,
                "stopping with journal writes not yet settled after their 96: look for approvals \
                 the terminals were told 96 for (their batch totals will not have them)"
            );
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Requests being worked on now.
    fn in_flight(&self) -> usize {
        self.sessions
            .bound
            .saturating_sub(self.sessions.admission.available_permits())
    }
}

impl Switch {
    /// Loads terminals and recent transactions, settles what a crash left in doubt (queues a
    /// reversal for every request that may have reached an issuer unanswered), connects to
    /// the issuers and starts listening. Reads the store synchronously: call it at start-up.
    pub async fn start(
        config: SwitchConfig,
        store: Arc<dyn Store>,
        hsm: Arc<dyn Hsm>,
        directory: Arc<IssuerDirectory>,
        clock: Arc<dyn Clock>,
    ) -> Result<SwitchHandle, StartError> {
        Self::start_with(config, store, hsm, directory, clock, Arc::new(TcpConnector)).await
    }

    /// [`Switch::start`] with issuer links made by `connector`.
    pub async fn start_with(
        config: SwitchConfig,
        store: Arc<dyn Store>,
        hsm: Arc<dyn Hsm>,
        directory: Arc<IssuerDirectory>,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn IssuerConnector>,
    ) -> Result<SwitchHandle, StartError> {
        let mut terminals = HashMap::new();
        for row in store.terminals()? {
            let terminal = Terminal::from_row(&row).ok_or_else(|| StartError::BadTerminal {
                tid: row.tid.clone(),
            })?;
            // Double-length keys never travel under a single-length TMK: such a terminal's
            // sign-ins are refused until it is given a double-length one (provisioning refuses
            // it now; a terminal provisioned before may still have one).
            let weak_tmk = hsm.key_info(terminal.tmk).is_ok_and(|info| {
                info.algorithm == paycrypto::KeyAlgorithm::Des && info.single_des
            });
            if weak_tmk && terminal.registered != paycrypto::KeyScheme::Single {
                tracing::warn!(
                    tid = %terminal.tid,
                    scheme = terminal.registered.code(),
                    "single-length TMK under a double-length key scheme: its sign-ins are \
                     refused until it is given a double-length TMK"
                );
            }
            terminals.insert(row.tid.clone(), Arc::new(terminal));
        }
        let in_flight = store.txns_in_state(TxnState::InFlight)?;
        let places_held = store.node_places_held()?;
        let now_ms = clock.now_ms();
        recover_in_doubt(
            store.as_ref(),
            in_flight,
            now_ms,
            Some(config.node_id),
            &[],
            config.reversal_hold_ms(),
            |row| lost_elsewhere(row, now_ms, places_held.as_deref(), None),
        )
        .await
        .map_err(|unsettled| unsettled.error)?;
        let ledger = Ledger::default();
        let started = std::time::Instant::now();
        let held_since = ledger::held_since(clock.now_ms(), config.index_days_held).yyyymmdd();
        let mut entries = 0_u64;
        // The risk rules' day's sales are warmed from the same journal when there are rules.
        let warmed = !config.risk_rules.is_empty();
        store.each_txn_since(&held_since, &mut |row| {
            let entry = ledger.adopt(&row);
            if warmed {
                entry.counted_at_start();
            }
            entries += 1;
        })?;
        tracing::info!(
            entries,
            since = %held_since,
            ms = started.elapsed().as_millis(),
            "in-memory index: recent transactions loaded"
        );
        // The month before is marked by a task while the switch answers (`load_marks`).
        ledger.set_marks_loading(true);
        let marked_since = ledger::marked_since(clock.now_ms()).yyyymmdd();
        let first_trace = store.reserve("host_trace", SEQUENCE_BLOCK)?.await?;
        let risk_gate = risk::RiskGate::load(
            store.as_ref(),
            Arc::clone(&config.risk_rules),
            clock.now_ms(),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let (intake, intake_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut links = HashMap::new();
        let issuer_head = FrameHead {
            tpdu: Tpdu {
                destination: [0, 0],
                source: [0, 0],
            },
            header: Header::from_bytes([0x60, 0, 0, 0, 0, 0])?,
        };
        let echo = issuer::EchoTest {
            after: config.issuer_echo_after,
            head: issuer_head,
            acquirer_code: config.acquirer_code.clone(),
        };
        // In bank order, so that a simulation starts its links the same way every run.
        let mut banks: Vec<_> = config.issuers.iter().collect();
        banks.sort_by(|a, b| a.0.cmp(b.0));
        for (bank, endpoint) in banks {
            let zpk_single_des = hsm.key_info(endpoint.zpk).is_ok_and(|info| info.single_des);
            let (link, task) = IssuerLink::start(
                bank.clone(),
                endpoint.clone(),
                zpk_single_des,
                echo.clone(),
                Arc::clone(&connector),
                issuer::issuer_in_flight_max(config.requests_in_flight, config.issuers.len()),
                stop_rx.clone(),
            );
            links.insert(bank.clone(), link);
            tasks.push(task);
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| StartError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| StartError::Bind {
            addr: config.listen,
            error,
        })?;
        let store_health = store.terminal_health()?;
        let abortable = config.abortable;
        let core = Arc::new(Core {
            issuer_head,
            config,
            store,
            hsm,
            directory,
            clock,
            terminals: RwLock::new(terminals),
            ledger,
            links,
            ids: Sequence::new("txn_id"),
            rrns: Sequence::new("rrn"),
            trace: AtomicU32::new(u32::try_from(first_trace % 1_000_000).unwrap_or(0)),
            risk: risk_gate,
            health: health::HealthSeen::load(store_health),
            tasks: tasks::Tasks::new(abortable),
            connections: AtomicU64::new(0),
            marked_for: Mutex::new(HashMap::new()),
            key_changes: Mutex::new(HashMap::new()),
            keys_looked: Mutex::new(HashMap::new()),
            ended_keys: working_keys::EndedKeys::default(),
            orphans: Mutex::new(Vec::new()),
            in_flight_watched: Mutex::new(HashMap::new()),
            late: AtomicUsize::new(0),
            back_office: AtomicUsize::new(0),
            waits_exceeded: AtomicU64::new(0),
            pin_blocks: crate::pin_replay::PinBlocks::default(),
        });
        tasks.push(tokio::spawn(risk::refresh(
            Arc::clone(&core),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(saf::run(Arc::clone(&core), stop_rx.clone())));
        tasks.push(tokio::spawn(ledger::load_marks(
            Arc::clone(&core),
            marked_since,
            held_since,
            core.config.marks_gate.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(ledger::forget_old(
            Arc::clone(&core),
            stop_rx.clone(),
        )));
        let sessions = Sessions::new(Arc::clone(&core), Arc::new(Metrics::default()));
        tasks.push(tokio::spawn(session::accept(
            sessions.clone(),
            listener,
            intake_rx,
        )));
        tracing::info!(%addr, "switch listening");
        Ok(SwitchHandle {
            addr,
            intake,
            stop,
            tasks,
            core,
            sessions,
        })
    }
}

/// How long a stop waits, beyond the longest issuer timeout, for requests already taken to be
/// journalled and answered.
const DRAIN_MARGIN: Duration = Duration::from_secs(2);

/// How long another node's request may stay in flight before a starting node takes it for
/// lost: far beyond any issuer timeout.
const IN_DOUBT_AGE_MS: i64 = 10 * 60 * 1_000;

/// Whether a request in flight of another node, not this node's own, is taken for lost: when
/// no live node holds the node place its RRN names (`Store::node_places_held`; `None`, a
/// journal without places, holds none) and it was received `IN_DOUBT_AGE_MS` ago; or when
/// this node has watched it in flight that long (`watched_since_ms`, by this node's clock).
/// Another node's stamps are by its clock, which may be far behind this one's: a live node's
/// request is not taken for lost on its stamp, however old it looks, but after ten minutes
/// watched here, which no live request lasts.
pub(crate) fn lost_elsewhere(
    row: &TxnRow,
    now_ms: i64,
    places_held: Option<&[u8]>,
    watched_since_ms: Option<i64>,
) -> bool {
    let long_ago = now_ms.saturating_sub(IN_DOUBT_AGE_MS);
    if watched_since_ms.is_some_and(|since| since <= long_ago) {
        return true;
    }
    let place = row
        .rrn
        .as_deref()
        .and_then(|rrn| rrn.get(..2))
        .and_then(|node| node.parse::<u8>().ok())
        .map(store::node_place);
    let node_live = places_held
        .zip(place)
        .is_some_and(|(held, place)| held.contains(&place));
    !node_live && row.received_at_ms < long_ago
}

/// Requests journalled as in flight when the last run stopped: the issuer may have approved
/// them and the terminal got no answer, so each is marked timed out and reversed.
///
/// Nodes sharing a database: a node recovers only its own requests (their RRNs start with its
/// node id) and those `lost` says are lost (`lost_elsewhere`: another node's, or in the periodic
/// sweep this node's own, watched in flight ten minutes), never the live requests of
/// another node that is still waiting on its issuer. With `node_id` `None` (the periodic
/// sweep of a running node, `saf::run`) only the latter, a dead node's requests, and the
/// running node's own `orphans` (requests it answered without writing their outcome; one
/// that moved no money is settled as failed, with no reversal).
/// `in_flight` is what the store holds in flight, read by the caller (off the async workers
/// when running: on PostgreSQL a read is a round trip, and a database that stops answering
/// must not hold a worker). A reversal goes out no sooner than `hold_ms` after its request was
/// sent (the longest issuer timeout and a journal wait): a process restarted at once must not
/// have it overtake the request still at the issuer, which would acknowledge a reversal of
/// nothing and then approve. At start, a row another node (or the terminal's reversal)
/// settled since it was read counts as settled.
pub(crate) async fn recover_in_doubt(
    store: &dyn Store,
    in_flight: Vec<TxnRow>,
    now_ms: i64,
    node_id: Option<u8>,
    orphans: &[crate::core::Orphan],
    hold_ms: i64,
    lost: impl Fn(&TxnRow) -> bool,
) -> Result<(), InDoubt> {
    let own = node_id.map(|id| format!("{:02}", id % 100));
    let rows: Vec<_> = in_flight
        .into_iter()
        .filter(|row| {
            let ours = own
                .as_deref()
                .is_some_and(|own| row.rrn.as_deref().is_none_or(|rrn| rrn.starts_with(own)));
            ours || orphans.iter().any(|o| o.id == row.id) || lost(row)
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        count = rows.len(),
        "requests in doubt (after a restart, or of a dead node): reversals queued"
    );
    // Each row on its own: one that cannot be written (a broken row, a refusing journal) must
    // not keep the others in doubt; the writer still commits them in one group.
    let mut submitted = Vec::with_capacity(rows.len());
    for row in &rows {
        let nothing_moved = orphans
            .iter()
            .find(|o| o.id == row.id)
            .and_then(|o| o.nothing_moved.as_deref());
        if let Some(why) = nothing_moved {
            let records = vec![
                Record::Outcome(Outcome {
                    id: row.id,
                    state: TxnState::Failed,
                    response_code: "96".to_owned(),
                    auth_code: None,
                    settlement_date: None,
                    issuer_answered_at_ms: None,
                    answered_at_ms: now_ms,
                }),
                Record::Event(EventRow {
                    txn_id: row.id,
                    at_ms: now_ms,
                    kind: "failed".to_owned(),
                    detail: format!(
                        "the journal could not record the outcome ({why}): answered 96, nothing \
                         to reverse"
                    ),
                }),
            ];
            submitted.push((row.id, store.submit(records)));
            continue;
        }
        let mut records = vec![Record::Outcome(Outcome {
            id: row.id,
            state: TxnState::TimedOut,
            response_code: "96".to_owned(),
            auth_code: None,
            settlement_date: None,
            issuer_answered_at_ms: None,
            answered_at_ms: now_ms,
        })];
        if let (Some(issuer), true) = (&row.issuer, row.kind != TxnKind::BalanceInquiry) {
            // A stamp ahead of this node's clock (another node's clock fast) is not waited for:
            // such a request, watched in flight ten minutes, is long past any issuer's timeout.
            let sent_ms = row.sent_at_ms.unwrap_or(row.received_at_ms).min(now_ms);
            records.push(Record::SafEnqueue {
                txn_id: row.id,
                issuer: issuer.clone(),
                reason: "06".to_owned(),
                next_attempt_ms: now_ms.max(sent_ms.saturating_add(hold_ms)),
            });
        }
        submitted.push((row.id, store.submit(records)));
    }
    let mut unsettled = Unsettled::default();
    for (id, submission) in submitted {
        let written = match submission {
            Ok(durable) => durable.await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            // Settled meanwhile by someone else (another node's recovery or sweep, the
            // terminal's reversal): nothing is in doubt. Read again at start only (the running
            // sweep must not read on an async worker; it tries again in seconds anyway).
            if matches!(error, StoreError::Constraint { .. })
                && node_id.is_some()
                && store
                    .txn(id)
                    .is_ok_and(|row| row.is_some_and(|r| r.state != TxnState::InFlight))
            {
                continue;
            }
            tracing::warn!(%error, txn_id = id, "cannot settle a request in doubt");
            unsettled.ids.push(id);
            unsettled.first.get_or_insert(error);
        }
    }
    match unsettled.first.take() {
        None => Ok(()),
        Some(error) => Err(InDoubt {
            error,
            ids: unsettled.ids,
        }),
    }
}

#[derive(Default)]
struct Unsettled {
    ids: Vec<i64>,
    first: Option<StoreError>,
}

/// Requests in doubt `recover_in_doubt` could not settle, and the first error.
#[derive(Debug)]
pub(crate) struct InDoubt {
    pub error: StoreError,
    pub ids: Vec<i64>,
}
