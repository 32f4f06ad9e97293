//! Fault-test world: the real switch (SQLite journal in a temp dir, SoftHsm) in front of real
//! issuer simulators on loopback, one per bank, each with its fault handle; a signed-in terminal
//! from the switch's test harness; and the audit of every issuer approval against the journal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Harness, MID, Req, TID, TMK_HEX, Terminal, new_hsm};
use issuer_sim::{
    DemoCard, FaultHandle, HsmPinVerifier, IssuerSim, LedgerLocation, ResponseCode, Rrn,
    ServerHandle, TxnState as IssuerState, demo_issuer,
};
use paycrypto::{Hsm, KeyAlgorithm, KeyScheme, KeyUsage, MacAlgorithm};
use store::{MerchantRow, Record, SafState, SqliteConfig, SqliteStore, Status, Store, TxnState};
use switch::{IssuerEndpoint, Switch, SwitchConfig, SystemClock, TerminalSpec};
use tokio::net::TcpListener;

/// How long the switch waits for an issuer a test makes fail ([`impatient_with`]).
pub const ISSUER_TIMEOUT: Duration = Duration::from_millis(400);
/// How long it waits for the others: long enough that a healthy issuer on a loaded 2-core
/// machine is not timed out, which would fail a test about something else; short enough that
/// the hold on a reversal of a request left in flight (the longest issuer timeout and the
/// journal wait, `SwitchConfig::reversal_hold_ms`) stays well inside the tests' waits for
/// reversals to be delivered.
pub const PATIENT_ISSUER_TIMEOUT: Duration = Duration::from_secs(5);

/// `bank` (an issuer of [`start`]'s) waited for [`ISSUER_TIMEOUT`] only: for [`start`]'s `tune`
/// of a test that makes it fail.
pub fn impatient_with(config: &mut SwitchConfig, bank: &str) {
    config
        .issuers
        .get_mut(bank)
        .expect("an issuer of the test's")
        .timeout = ISSUER_TIMEOUT;
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub struct Bank {
    pub code: &'static str,
    pub sim: IssuerSim,
    pub server: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub cards: Vec<DemoCard>,
}

impl Bank {
    pub fn faults(&self) -> FaultHandle {
        self.sim.faults()
    }

    pub fn healthy(&self, n: usize) -> &DemoCard {
        self.cards
            .iter()
            .filter(|c| c.label == "healthy")
            .nth(n)
            .unwrap()
    }
}

pub struct World {
    pub h: Harness,
    /// The journal these tests' switch writes: SQLite of its own (the full-disk test needs
    /// its page quota), whatever store the harness itself uses.
    pub store: Arc<SqliteStore>,
    pub banks: Vec<Bank>,
    pub t: Terminal,
    pub stan: u32,
    pub config: SwitchConfig,
    _ledgers: tempfile::TempDir,
}

/// Starts issuers for `banks` (their demo cards route to them by BIN), then the switch with
/// `tune` applied to its configuration, and signs a terminal in.
pub async fn start(banks: &[&'static str], tune: impl FnOnce(&mut SwitchConfig)) -> World {
    let (hsm, zpk) = new_hsm();
    let ledgers = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for (i, code) in banks.iter().enumerate() {
        let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
        let (issuer, cards) = demo_issuer(
            code,
            4,
            pins,
            LedgerLocation::File(ledgers.path().join(format!("{code}.db"))),
            Arc::new(issuer_sim::SystemClock),
        )
        .unwrap();
        let sim = IssuerSim::new(Arc::new(issuer), 11 + i as u64);
        let server = sim
            .serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
            .unwrap();
        running.push(Bank {
            code,
            addr: server.local_addr(),
            sim,
            server: Some(server),
            cards,
        });
    }
    // The harness starts a switch on its own configuration and store; replace both.
    let mut h = Harness::with_hsm(running[0].addr, Arc::default(), hsm, zpk).await;
    h.stop().await;
    let store =
        Arc::new(SqliteStore::open(&SqliteConfig::new(h.dir.path().join("faults.db"))).unwrap());
    let tmk = h
        .hsm
        .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK_HEX)
        .unwrap();
    store
        .submit(vec![
            Record::UpsertMerchant(MerchantRow {
                mid: MID.into(),
                name: "Teahouse".into(),
                status: Status::Active,
                mcc: "5812".into(),
            }),
            switch::terminal_record(&TerminalSpec {
                tid: TID.into(),
                mid: MID.into(),
                tmk,
                scheme: KeyScheme::Double,
                mac: MacAlgorithm::CupEcb,
                mak: paycrypto::MakLength::Double,
                batch_no: 1,
            }),
        ])
        .unwrap()
        .await
        .unwrap();
    let mut config = h.config();
    config.issuers = running
        .iter()
        .map(|b| {
            (
                b.code.to_owned(),
                IssuerEndpoint {
                    addr: b.addr,
                    zpk,
                    timeout: PATIENT_ISSUER_TIMEOUT,
                },
            )
        })
        .collect::<HashMap<_, _>>();
    config.default_issuer = None;
    tune(&mut config);
    start_switch(&mut h, &store, &config, running.iter().map(|b| b.code)).await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    World {
        h,
        banks: running,
        t,
        stan: 1,
        store,
        config,
        _ledgers: ledgers,
    }
}

async fn start_switch<'a>(
    h: &mut Harness,
    store: &Arc<SqliteStore>,
    config: &SwitchConfig,
    banks: impl Iterator<Item = &'a str> + Clone,
) {
    let handle = Switch::start(
        config.clone(),
        Arc::clone(store) as Arc<dyn Store>,
        Arc::clone(&h.hsm) as Arc<dyn Hsm>,
        Arc::clone(&h.directory),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if banks.clone().all(|b| handle.issuer_connected(b)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.switch = Some(handle);
}

pub fn pan(card: &DemoCard) -> String {
    card.pan.expose_digits().to_owned()
}

impl World {
    pub fn bank(&self, code: &str) -> &Bank {
        self.banks.iter().find(|b| b.code == code).unwrap()
    }

    pub fn next_stan(&mut self) -> u32 {
        self.stan += 1;
        self.stan
    }

    /// A purchase of `amount` fen with the card's PIN.
    pub fn purchase(&mut self, card: &DemoCard, amount: u64) -> Req {
        let stan = self.next_stan();
        Req {
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(&pan(card), amount, stan)
        }
    }

    /// Stops the switch and starts it again on the same store; the terminal reconnects and
    /// signs in again.
    pub async fn restart(&mut self) {
        self.h.stop().await;
        let codes: Vec<&str> = self.banks.iter().map(|b| b.code).collect();
        start_switch(
            &mut self.h,
            &self.store,
            &self.config,
            codes.iter().copied(),
        )
        .await;
        self.t = self.h.terminal().await;
        assert_eq!(self.t.sign_in().await.code(), "00");
    }

    /// The state of RRN `rrn` at bank `code`'s issuer, `None` if it never had it.
    pub fn issuer_state(&self, code: &str, rrn: &str) -> Option<IssuerState> {
        let rrn = Rrn::parse(rrn).ok()?;
        self.bank(code).sim.issuer().txn(&rrn).map(|t| t.state)
    }

    pub fn metrics(&self) -> switch::MetricsSnapshot {
        self.h.switch.as_ref().unwrap().metrics()
    }

    /// Waits until no reversal is pending, for at most `seconds`.
    pub async fn reversals_delivered(&self, seconds: u64) -> bool {
        let store = Arc::clone(&self.store);
        self.h
            .eventually(seconds, || {
                store
                    .reversals_in_state(SafState::Pending)
                    .unwrap()
                    .is_empty()
            })
            .await
    }

    /// Invariant 1: every approval an issuer gave is completed in the journal in the same
    /// state and amount, or reversed at the issuer and not approved in the journal; and every
    /// journal approval is an approval at its issuer. Returns the approvals checked.
    pub fn audit(&self) -> usize {
        let mut in_doubt = Vec::new();
        let mut checked = 0;
        for bank in &self.banks {
            let issuer = bank.sim.issuer();
            issuer.flush().unwrap();
            for approval in issuer
                .approvals()
                .unwrap()
                .iter()
                .filter(|a| a.code == ResponseCode::Approved)
            {
                checked += 1;
                let row = self.store.txn_by_rrn(approval.rrn.as_str()).unwrap();
                let consistent = match (approval.state, row.as_ref().map(|r| r.state)) {
                    (IssuerState::Reversed, None) => true,
                    (IssuerState::Reversed, Some(state)) => !matches!(
                        state,
                        TxnState::Approved | TxnState::Voided | TxnState::Completed
                    ),
                    (IssuerState::Approved, Some(TxnState::Approved))
                    | (IssuerState::Voided, Some(TxnState::Voided))
                    | (IssuerState::Completed, Some(TxnState::Completed)) => row
                        .as_ref()
                        .is_some_and(|r| r.amount_fen == i64::try_from(approval.amount).unwrap()),
                    _ => false,
                };
                if !consistent {
                    in_doubt.push(format!(
                        "{} {} issuer {:?} journal {:?}",
                        bank.code,
                        approval.rrn,
                        approval.state,
                        row.map(|r| r.state)
                    ));
                }
            }
        }
        assert!(
            in_doubt.is_empty(),
            "in doubt after {checked} approvals: {in_doubt:#?}"
        );
        for state in [TxnState::Approved, TxnState::InFlight] {
            for row in self.store.txns_in_state(state).unwrap() {
                assert_ne!(state, TxnState::InFlight, "{} still in flight", row.id);
                // A terminal's reversal is a row of its own, answered but never at an issuer
                // as such; the issuer's side of it is its original's state, checked above.
                if row.kind == store::TxnKind::Reversal {
                    continue;
                }
                let rrn = row.rrn.clone().unwrap();
                let known = self.banks.iter().any(|b| {
                    b.sim
                        .issuer()
                        .txn(&Rrn::parse(&rrn).unwrap())
                        .is_some_and(|t| t.code == ResponseCode::Approved)
                });
                assert!(known, "journal approval {rrn} unknown to every issuer");
            }
        }
        checked
    }
}
