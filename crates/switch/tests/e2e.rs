//! The switch end to end against the real issuer simulator over loopback TCP: one SoftHsm and
//! zone PIN key shared by both, the switch journalling to SQLite in a temp dir, the issuer keeping
//! its own ledger. Each test ends with an audit of the issuer's approvals against the journal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use iso8583::Mti;
use issuer_sim::{
    DemoCard, HsmPinVerifier, IssuerSim, LedgerLocation, ResponseCode, Rrn, ServerHandle,
    TxnRecord, TxnState as IssuerState, demo_issuer,
};
use paycrypto::Hsm;
use store::{Record, SafState, TxnState};
use switch::Clock;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const BANK: &str = "ICBC";

/// The switch, the issuer simulator it talks to, and a signed-in terminal.
struct E2e {
    h: Harness,
    sim: IssuerSim,
    server: Option<ServerHandle>,
    issuer_addr: SocketAddr,
    cards: Vec<DemoCard>,
    t: Terminal,
    stan: u32,
    _ledger_dir: tempfile::TempDir,
}

async fn start() -> E2e {
    let (hsm, zpk) = new_hsm();
    let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
    let ledger_dir = tempfile::tempdir().unwrap();
    let (issuer, cards) = demo_issuer(
        BANK,
        4,
        pins,
        LedgerLocation::File(ledger_dir.path().join("issuer.db")),
        Arc::new(issuer_sim::SystemClock),
    )
    .unwrap();
    let sim = IssuerSim::new(Arc::new(issuer), 7);
    let server = sim
        .serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let issuer_addr = server.local_addr();
    let h = Harness::with_hsm(issuer_addr, Arc::default(), hsm, zpk).await;
    assert!(h.switch.as_ref().unwrap().issuer_connected("SIM"));
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    E2e {
        h,
        sim,
        server: Some(server),
        issuer_addr,
        cards,
        t,
        stan: 1,
        _ledger_dir: ledger_dir,
    }
}

fn pan(card: &DemoCard) -> String {
    card.pan.expose_digits().to_owned()
}

fn with_pin(req: Req, card: &DemoCard) -> Req {
    Req {
        pin: Some(card.pin().to_owned()),
        ..req
    }
}

fn balance_inquiry(pan: &str, stan: u32) -> Req {
    Req {
        processing: "310000",
        message_type: "01",
        ..Req::purchase(pan, 0, stan)
    }
}

fn pre_auth(pan: &str, amount: u64, stan: u32) -> Req {
    Req {
        mti: Mti::AUTHORISATION,
        processing: "030000",
        condition: "06",
        message_type: "10",
        ..Req::purchase(pan, amount, stan)
    }
}

/// Two signed-in terminals of the merchant: the harness's own (the desk) and `10000002` (the
/// checkout), registered before a restart.
async fn desk_and_checkout(e: &mut E2e) -> (Terminal, Terminal) {
    e.h.register_terminal("10000002", MID).await;
    e.h.stop().await;
    e.h.start().await;
    let mut desk = e.h.terminal().await;
    assert_eq!(desk.sign_in().await.code(), "00");
    let mut checkout = e.h.terminal_as("10000002").await;
    assert_eq!(checkout.sign_in().await.code(), "00");
    (desk, checkout)
}

/// A pre-auth void, completion or completion void naming its original by batch + trace and RRN.
fn linked(
    base: Req,
    processing: &'static str,
    message_type: &'static str,
    original_stan: u32,
    rrn: &str,
) -> Req {
    Req {
        processing,
        message_type,
        rrn: Some(rrn.to_owned()),
        f61: Some(format!("{:06}{original_stan:06}", 1)),
        ..base
    }
}

fn pre_auth_void(pan: &str, amount: u64, stan: u32, original_stan: u32, rrn: &str) -> Req {
    linked(
        pre_auth(pan, amount, stan),
        "200000",
        "11",
        original_stan,
        rrn,
    )
}

/// `base` (a completion or a pre-authorisation's void) naming its pre-authorisation by its code
/// and date alone: no RRN, and a batch and trace of 0 in field 61.
fn named_by_code(base: Req, code: &str, date: &str) -> Req {
    Req {
        rrn: None,
        auth_code: Some(code.to_owned()),
        f61: Some(format!("{:06}{:06}{date}", 0, 0)),
        ..base
    }
}

/// A day (MMDD) that is not `today`.
fn other_day(today: &str) -> &'static str {
    if today == "0101" { "0102" } else { "0101" }
}

fn completion(pan: &str, amount: u64, stan: u32, original_stan: u32, rrn: &str) -> Req {
    let base = Req {
        condition: "06",
        ..Req::purchase(pan, amount, stan)
    };
    linked(base, "000000", "20", original_stan, rrn)
}

fn completion_void(pan: &str, amount: u64, stan: u32, original_stan: u32, rrn: &str) -> Req {
    let base = Req {
        condition: "06",
        ..Req::purchase(pan, amount, stan)
    };
    linked(base, "200000", "21", original_stan, rrn)
}

/// Today in host local time, MMDD.
fn today_mmdd() -> String {
    switch::LocalTime::from_ms(switch::SystemClock.now_ms()).mmdd()
}

impl E2e {
    fn card(&self, label: &str) -> DemoCard {
        self.cards
            .iter()
            .find(|c| c.label == label)
            .unwrap()
            .clone()
    }

    fn healthy(&self, n: usize) -> DemoCard {
        self.cards
            .iter()
            .filter(|c| c.label == "healthy")
            .nth(n)
            .unwrap()
            .clone()
    }

    /// (balance, holds) at the issuer.
    fn balance(&self, card: &DemoCard) -> (i64, i64) {
        self.sim.issuer().balance(&card.pan).unwrap()
    }

    fn issuer_txn(&self, rrn: &str) -> Option<TxnRecord> {
        self.sim.issuer().txn(&Rrn::parse(rrn).unwrap())
    }

    fn next_stan(&mut self) -> u32 {
        self.stan += 1;
        self.stan
    }

    async fn send(&mut self, req: &Req) -> Response {
        let r = self.t.send(req).await;
        assert!(self.t.mac_ok(&r), "response MAC must verify");
        r
    }

    /// A 1.00 purchase with the card's PIN: the code the switch answered and the RRN.
    async fn purchase(&mut self, card: &DemoCard, amount: u64) -> (String, String) {
        let stan = self.next_stan();
        let r = self
            .send(&with_pin(Req::purchase(&pan(card), amount, stan), card))
            .await;
        (r.code(), r.text(37).unwrap_or_default())
    }

    fn journal_state(&self, rrn: &str) -> TxnState {
        self.h.store.txn_by_rrn(rrn).unwrap().unwrap().state
    }

    async fn issuer_state_becomes(&self, rrn: &str, state: IssuerState, seconds: u64) -> bool {
        self.h
            .eventually(seconds, || {
                self.issuer_txn(rrn).is_some_and(|t| t.state == state)
            })
            .await
    }

    /// The audit: every approval in the issuer's ledger is, in the switch's journal, a
    /// transaction in the same state (approved, voided, completed), or was reversed at the
    /// issuer and is not approved in the journal; and no reversal is left undelivered.
    /// Returns (approvals checked, in doubt).
    async fn audit(&self) -> (usize, usize) {
        let store = Arc::clone(&self.h.store);
        let delivered = self
            .h
            .eventually(15, || {
                store
                    .reversals_in_state(SafState::Pending)
                    .unwrap()
                    .is_empty()
            })
            .await;
        assert!(delivered, "reversals still pending at the end of the test");
        self.sim.issuer().flush().unwrap();
        let approvals = self.sim.issuer().approvals().unwrap();
        let mut in_doubt = Vec::new();
        let mut checked = 0;
        for approval in approvals
            .iter()
            .filter(|a| a.code == ResponseCode::Approved)
        {
            checked += 1;
            let row = self.h.store.txn_by_rrn(approval.rrn.as_str()).unwrap();
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
                    "{} {:?} issuer {:?} journal {:?}",
                    approval.rrn,
                    approval.kind,
                    approval.state,
                    row.map(|r| r.state)
                ));
            }
        }
        assert!(
            in_doubt.is_empty(),
            "in doubt after {checked} approvals: {in_doubt:#?}"
        );
        // And the other way: every approval in the journal is an approval at the issuer.
        let today = switch::LocalTime::from_ms(switch::SystemClock.now_ms()).yyyymmdd();
        for row in self.h.store.txns_since(&today).unwrap() {
            let approved_here = matches!(
                row.state,
                TxnState::Approved | TxnState::Voided | TxnState::Completed
            );
            let Some(rrn) = row.rrn.as_deref().filter(|_| approved_here) else {
                continue;
            };
            let at_issuer = self.issuer_txn(rrn);
            assert!(
                at_issuer.is_some_and(|t| t.code == ResponseCode::Approved),
                "journal approval {rrn} ({:?}) unknown to the issuer",
                row.kind
            );
        }
        (checked, in_doubt.len())
    }
}

#[test]
fn every_transaction_type_moves_the_issuer_ledger() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let p = pan(&card);
        let (start_balance, start_holds) = e.balance(&card);
        assert_eq!(start_holds, 0);

        // Balance inquiry: field 54 carries the issuer's available balance.
        let stan = e.next_stan();
        let r = e.send(&with_pin(balance_inquiry(&p, stan), &card)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(r.text(54).unwrap(), format!("0002156C{start_balance:012}"));
        assert_eq!(e.balance(&card), (start_balance, 0));

        // Purchase, then its void: debited, then given back; the issuer's record is voided.
        let s_buy = e.next_stan();
        let r = e
            .send(&with_pin(Req::purchase(&p, 10_000, s_buy), &card))
            .await;
        assert_eq!(r.code(), "00");
        let rrn_buy = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 10_000, 0));
        // A void whose field 61 names a trace this terminal never used is not let through on
        // its RRN alone.
        let s = e.next_stan();
        let misnamed = Req {
            f61: Some(format!("{:06}{:06}", 1, 999_999)),
            ..Req::void(&p, 10_000, s, s_buy, &rrn_buy)
        };
        assert_eq!(e.send(&misnamed).await.code(), "25");
        assert_eq!(e.balance(&card), (start_balance - 10_000, 0));
        let s = e.next_stan();
        let r = e.send(&Req::void(&p, 10_000, s, s_buy, &rrn_buy)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance, 0));
        assert_eq!(e.issuer_txn(&rrn_buy).unwrap().state, IssuerState::Voided);
        assert_eq!(e.journal_state(&rrn_buy), TxnState::Voided);

        // Purchase and a partial refund.
        let s = e.next_stan();
        let r = e.send(&with_pin(Req::purchase(&p, 5_000, s), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn_p2 = r.text(37).unwrap();
        let s = e.next_stan();
        let r = e
            .send(&Req::refund(&p, 2_000, s, &rrn_p2, &today_mmdd()))
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));
        let at_issuer = e.issuer_txn(&rrn_p2).unwrap();
        assert_eq!(
            (at_issuer.state, at_issuer.refunded),
            (IssuerState::Approved, 2_000)
        );
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn_p2).unwrap().unwrap().refunded_fen,
            2_000
        );

        // The terminal reverses that refund: the issuer takes it back and the purchase may be
        // refunded again, here by the same amount.
        let refund = Req::refund(&p, 2_000, s, &rrn_p2, &today_mmdd());
        let rrn_refund = e.h.store.txns_by_key(TID, 1, s).unwrap()[0]
            .rrn
            .clone()
            .unwrap();
        assert_eq!(e.send(&Req::reversal_of(&refund)).await.code(), "00");
        assert!(
            e.issuer_state_becomes(&rrn_refund, IssuerState::Reversed, 5)
                .await,
            "the refund's reversal never reached the issuer"
        );
        assert_eq!(e.balance(&card), (start_balance - 5_000, 0));
        assert_eq!(e.issuer_txn(&rrn_p2).unwrap().refunded, 0);
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn_p2).unwrap().unwrap().refunded_fen,
            0
        );
        let s = e.next_stan();
        let r = e
            .send(&Req::refund(&p, 2_000, s, &rrn_p2, &today_mmdd()))
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));

        // Pre-authorisation and its void: a hold, then none.
        let s_pa = e.next_stan();
        let r = e.send(&with_pin(pre_auth(&p, 30_000, s_pa), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn_pa = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 3_000, 30_000));
        let s = e.next_stan();
        let r = e.send(&pre_auth_void(&p, 30_000, s, s_pa, &rrn_pa)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));
        assert_eq!(e.issuer_txn(&rrn_pa).unwrap().state, IssuerState::Voided);

        // Pre-authorisation, completion for less, completion void.
        let s_pa2 = e.next_stan();
        let r = e.send(&with_pin(pre_auth(&p, 20_000, s_pa2), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn_pa2 = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 3_000, 20_000));
        let s_co = e.next_stan();
        let r = e.send(&completion(&p, 15_000, s_co, s_pa2, &rrn_pa2)).await;
        assert_eq!(r.code(), "00");
        let rrn_co = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 18_000, 0));
        assert_eq!(
            e.issuer_txn(&rrn_pa2).unwrap().state,
            IssuerState::Completed
        );
        assert_eq!(e.journal_state(&rrn_pa2), TxnState::Completed);
        let s = e.next_stan();
        let r = e.send(&completion_void(&p, 15_000, s, s_co, &rrn_co)).await;
        assert_eq!(r.code(), "00");
        // The completion's void stands the pre-authorisation up again, its hold whole, at the
        // issuer and in the journal: it is completed again at the right amount.
        assert_eq!(e.balance(&card), (start_balance - 3_000, 20_000));
        assert_eq!(e.issuer_txn(&rrn_co).unwrap().state, IssuerState::Voided);
        assert_eq!(e.issuer_txn(&rrn_pa2).unwrap().state, IssuerState::Approved);
        assert_eq!(e.journal_state(&rrn_pa2), TxnState::Approved);
        let s = e.next_stan();
        let r = e.send(&completion(&p, 12_000, s, s_pa2, &rrn_pa2)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 15_000, 0));
        assert_eq!(e.journal_state(&rrn_pa2), TxnState::Completed);
        // Refunded whole, to leave the card as the rest of the test expects it.
        let s = e.next_stan();
        let r = e
            .send(&Req::refund(
                &p,
                12_000,
                s,
                &r.text(37).unwrap(),
                &today_mmdd(),
            ))
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));

        // A purchase the terminal reverses: answered at once, delivered by store and forward.
        let s_rev = e.next_stan();
        let buy = with_pin(Req::purchase(&p, 700, s_rev), &card);
        let r = e.send(&buy).await;
        assert_eq!(r.code(), "00");
        let rrn_rev = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 3_700, 0));
        let r = e.send(&Req::reversal_of(&buy)).await;
        assert_eq!(r.code(), "00");
        assert!(
            e.issuer_state_becomes(&rrn_rev, IssuerState::Reversed, 5)
                .await,
            "the reversal never reached the issuer"
        );
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));
        assert_eq!(e.journal_state(&rrn_rev), TxnState::Reversed);

        // A completion the terminal reverses: the issuer undoes the debit and puts the
        // pre-authorisation's hold back, which can then be voided.
        let s_pa3 = e.next_stan();
        let r = e.send(&with_pin(pre_auth(&p, 10_000, s_pa3), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn_pa3 = r.text(37).unwrap();
        let s_co3 = e.next_stan();
        let co3 = completion(&p, 6_000, s_co3, s_pa3, &rrn_pa3);
        let r = e.send(&co3).await;
        assert_eq!(r.code(), "00");
        let rrn_co3 = r.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance - 9_000, 0));
        assert_eq!(e.send(&Req::reversal_of(&co3)).await.code(), "00");
        assert!(
            e.issuer_state_becomes(&rrn_co3, IssuerState::Reversed, 5)
                .await,
            "the completion's reversal never reached the issuer"
        );
        assert_eq!(e.balance(&card), (start_balance - 3_000, 10_000));
        assert_eq!(e.issuer_txn(&rrn_pa3).unwrap().state, IssuerState::Approved);
        assert_eq!(e.journal_state(&rrn_pa3), TxnState::Approved);
        let s = e.next_stan();
        let r = e.send(&pre_auth_void(&p, 10_000, s, s_pa3, &rrn_pa3)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));

        // A completion's void the terminal reverses: the completion stands again and its
        // pre-authorisation is completed again, at the issuer and in the journal.
        let s_pa4 = e.next_stan();
        let r = e.send(&with_pin(pre_auth(&p, 10_000, s_pa4), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn_pa4 = r.text(37).unwrap();
        let s_co4 = e.next_stan();
        let r = e.send(&completion(&p, 4_000, s_co4, s_pa4, &rrn_pa4)).await;
        assert_eq!(r.code(), "00");
        let rrn_co4 = r.text(37).unwrap();
        let s = e.next_stan();
        let void = completion_void(&p, 4_000, s, s_co4, &rrn_co4);
        assert_eq!(e.send(&void).await.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 10_000));
        assert_eq!(e.journal_state(&rrn_pa4), TxnState::Approved);
        assert_eq!(e.send(&Req::reversal_of(&void)).await.code(), "00");
        let rrn_void = e.h.store.txns_by_key(TID, 1, s).unwrap()[0]
            .rrn
            .clone()
            .unwrap();
        assert!(
            e.issuer_state_becomes(&rrn_void, IssuerState::Reversed, 5)
                .await,
            "the void's reversal never reached the issuer"
        );
        assert_eq!(e.balance(&card), (start_balance - 7_000, 0));
        assert_eq!(
            e.issuer_txn(&rrn_pa4).unwrap().state,
            IssuerState::Completed
        );
        assert_eq!(e.journal_state(&rrn_pa4), TxnState::Completed);
        assert_eq!(e.journal_state(&rrn_co4), TxnState::Approved);
        // Not completed a second time.
        let s = e.next_stan();
        let again = e.send(&completion(&p, 1_000, s, s_pa4, &rrn_pa4)).await;
        assert_eq!(again.code(), "12");

        let (checked, in_doubt) = e.audit().await;
        assert_eq!((checked, in_doubt), (20, 0));
    });
}

/// A completion naming its pre-authorisation by authorisation code alone (field 38; field 61
/// with no batch or trace, only the date), as terminals send one for a pre-authorisation taken
/// on another terminal of the merchant: found by card, code and date, and completed once.
#[test]
fn a_completion_finds_its_pre_authorisation_by_auth_code() {
    runtime().block_on(async {
        let mut e = start().await;
        let (mut desk, mut checkout) = desk_and_checkout(&mut e).await;
        let card = e.healthy(1);
        let p = pan(&card);
        let (start_balance, _) = e.balance(&card);
        let held = desk.send(&with_pin(pre_auth(&p, 20_000, 11), &card)).await;
        assert_eq!(held.code(), "00");
        let code = held.text(38).unwrap();
        let rrn_pa = held.text(37).unwrap();
        // A completion naming no RRN, batch or trace: the code and the date only.
        let by_code = |stan: u32, code: &str, date: &str| {
            named_by_code(completion(&p, 15_000, stan, 0, ""), code, date)
        };
        let today = today_mmdd();
        let other_day = other_day(&today);
        // Another code, or another day: nothing is found, nothing moves.
        let wrong = if code == "000001" { "000002" } else { "000001" };
        assert_eq!(
            checkout.send(&by_code(21, wrong, &today)).await.code(),
            "25"
        );
        assert_eq!(
            checkout.send(&by_code(22, &code, other_day)).await.code(),
            "25"
        );
        assert_eq!(e.balance(&card), (start_balance, 20_000));
        // The code and the day: completed from the other terminal.
        let done = checkout.send(&by_code(23, &code, &today)).await;
        assert_eq!(done.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 15_000, 0));
        assert_eq!(e.issuer_txn(&rrn_pa).unwrap().state, IssuerState::Completed);
        assert_eq!(e.journal_state(&rrn_pa), TxnState::Completed);
        let rrn_done = done.text(37).unwrap();
        // Once: a second completion of it is refused and moves nothing.
        let again = desk.send(&by_code(12, &code, &today)).await;
        assert_ne!(again.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 15_000, 0));
        // Another card with the same code names nothing.
        let other = e.healthy(2);
        let stranger = Req {
            pan: pan(&other),
            ..by_code(24, &code, &today)
        };
        assert_eq!(checkout.send(&stranger).await.code(), "25");
        // The completion is the checkout's: the desk cannot void it.
        let void = completion_void(&p, 15_000, 13, 23, &rrn_done);
        assert_eq!(desk.send(&void).await.code(), "25");
        // The checkout reverses it: the hold comes back, and the pre-authorisation can be
        // completed by its code again.
        let reversal = checkout
            .send(&Req::reversal_of(&by_code(23, &code, &today)))
            .await;
        assert_eq!(reversal.code(), "00");
        assert!(
            e.issuer_state_becomes(&rrn_done, IssuerState::Reversed, 5)
                .await,
            "the completion's reversal never reached the issuer"
        );
        assert_eq!(e.balance(&card), (start_balance, 20_000));
        assert_eq!(e.journal_state(&rrn_pa), TxnState::Approved);
        let redone = checkout.send(&by_code(25, &code, &today)).await;
        assert_eq!(redone.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 15_000, 0));
        // By RRN and the desk's batch + trace, which the checkout's own sale also has: the RRN
        // finds the desk's pre-authorisation, whose numbers they are.
        let held = desk.send(&with_pin(pre_auth(&p, 5_000, 14), &card)).await;
        assert_eq!(held.code(), "00");
        let own = checkout
            .send(&with_pin(Req::purchase(&p, 100, 14), &card))
            .await;
        assert_eq!(own.code(), "00");
        let by_rrn = completion(&p, 4_000, 26, 14, &held.text(37).unwrap());
        assert_eq!(checkout.send(&by_rrn).await.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 19_100, 0));
    });
}

/// A refund whose field 61 is not a batch, a trace and a date (13 digits) is refused 30, not
/// taken as naming nothing and let through on its RRN alone; the same refund with a field 61
/// that reads goes through.
#[test]
fn a_refund_with_an_unreadable_field_61_is_refused_30() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let p = pan(&card);
        let sale = e.send(&with_pin(Req::purchase(&p, 5_000, 11), &card)).await;
        assert_eq!(sale.code(), "00");
        let rrn = sale.text(37).unwrap();
        let today = today_mmdd();
        let bad = Req {
            f61: Some("0000010000020".into()),
            ..Req::refund(&p, 1_000, 12, &rrn, &today)
        };
        assert_eq!(e.send(&bad).await.code(), "30");
        assert_eq!(e.journal_state(&rrn), TxnState::Approved);
        let good = Req::refund(&p, 1_000, 13, &rrn, &today);
        assert_eq!(e.send(&good).await.code(), "00");
        // A purchase's field 61 names nothing and is not read.
        let odd = Req {
            f61: Some("1234567".into()),
            ..with_pin(Req::purchase(&p, 700, 14), &card)
        };
        assert_eq!(e.send(&odd).await.code(), "00");
    });
}

/// A pre-authorisation is released wherever the guest leaves: its void from another terminal
/// of the merchant, by RRN or by the code and date alone, as a completion is; and a completion
/// naming one pre-authorisation's numbers with another's code is refused, not guessed at.
#[test]
fn a_pre_authorisation_is_voided_from_another_terminal_and_by_its_code() {
    runtime().block_on(async {
        let mut e = start().await;
        let (mut desk, mut checkout) = desk_and_checkout(&mut e).await;
        let card = e.healthy(1);
        let p = pan(&card);
        let (start_balance, _) = e.balance(&card);
        let today = today_mmdd();
        // Taken at the desk, released at the checkout by RRN and the desk's numbers.
        let held = desk.send(&with_pin(pre_auth(&p, 20_000, 11), &card)).await;
        assert_eq!(held.code(), "00");
        let rrn = held.text(37).unwrap();
        assert_eq!(e.balance(&card), (start_balance, 20_000));
        let void = Req {
            auth_code: held.text(38),
            ..pre_auth_void(&p, 20_000, 21, 11, &rrn)
        };
        assert_eq!(checkout.send(&void).await.code(), "00");
        assert_eq!(e.balance(&card), (start_balance, 0));
        assert_eq!(e.journal_state(&rrn), TxnState::Voided);
        // By the code and the date alone (no RRN, no batch or trace).
        let held = desk.send(&with_pin(pre_auth(&p, 8_000, 12), &card)).await;
        assert_eq!(held.code(), "00");
        let (code, rrn) = (held.text(38).unwrap(), held.text(37).unwrap());
        let by_code = |stan: u32, code: &str, date: &str| {
            named_by_code(pre_auth_void(&p, 8_000, stan, 0, ""), code, date)
        };
        // A code no hold of the card has (the voided one's would be found, and refused 12).
        let wrong = "999999";
        assert_ne!(code, wrong);
        let other_day = other_day(&today);
        assert_eq!(
            checkout.send(&by_code(22, wrong, &today)).await.code(),
            "25"
        );
        assert_eq!(
            checkout.send(&by_code(23, &code, other_day)).await.code(),
            "25"
        );
        assert_eq!(e.balance(&card), (start_balance, 8_000));
        assert_eq!(
            checkout.send(&by_code(24, &code, &today)).await.code(),
            "00"
        );
        assert_eq!(e.balance(&card), (start_balance, 0));
        assert_eq!(e.journal_state(&rrn), TxnState::Voided);
        // Two holds on one card: a completion naming the second's numbers with the first's
        // code completes neither.
        let first = desk.send(&with_pin(pre_auth(&p, 5_000, 13), &card)).await;
        let second = desk.send(&with_pin(pre_auth(&p, 6_000, 14), &card)).await;
        assert_eq!((first.code(), second.code()), ("00".into(), "00".into()));
        let crossed = Req {
            rrn: None,
            auth_code: first.text(38),
            ..completion(&p, 5_000, 15, 14, "")
        };
        assert_eq!(desk.send(&crossed).await.code(), "25");
        assert_eq!(e.balance(&card), (start_balance, 11_000));
        let right = Req {
            rrn: None,
            auth_code: second.text(38),
            ..completion(&p, 5_000, 16, 14, "")
        };
        assert_eq!(desk.send(&right).await.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 5_000, 5_000));
    });
}

#[test]
fn every_issuer_response_code_comes_through_the_switch() {
    runtime().block_on(async {
        let mut e = start().await;
        let cards = e.cards.clone();
        let mut seen = std::collections::BTreeSet::new();
        for card in &cards {
            let before = card.on_file.then(|| e.balance(card));
            let (code, rrn) = e.purchase(card, 100).await;
            assert_eq!(
                code,
                card.purchase_code.as_str(),
                "card {} ({})",
                card.label,
                card.reference
            );
            seen.insert(code.clone());
            // The issuer decided it (not the switch), and moved money only on approval.
            let at_issuer = e.issuer_txn(&rrn).expect("the issuer saw the request");
            assert_eq!(at_issuer.code, card.purchase_code);
            if let Some((balance, holds)) = before {
                let debit = if code == "00" { 100 } else { 0 };
                assert_eq!(e.balance(card), (balance - debit, holds), "{}", card.label);
            }
        }
        for code in [
            "00", "01", "04", "05", "07", "14", "21", "41", "43", "51", "54", "55", "57", "61",
            "62", "65", "75",
        ] {
            assert!(
                seen.contains(code),
                "no demo card produced {code}: {seen:?}"
            );
        }

        // Wrong PIN: 55 until the tries run out, then 75 even with the same PIN.
        let wrong = e.card("wrong_pin");
        assert_eq!(e.purchase(&wrong, 100).await.0, "55");
        assert_eq!(e.purchase(&wrong, 100).await.0, "75");
        assert_eq!(e.purchase(&wrong, 100).await.0, "75");
        assert_eq!(e.sim.issuer().pin_tries(&wrong.pan), Some(3));

        // Limits: per transaction and per day (61), count per day (65).
        let per_txn = e.card("per_txn_limit");
        assert_eq!(e.purchase(&per_txn, 50).await.0, "00");
        assert_eq!(e.purchase(&per_txn, 51).await.0, "61");
        let daily = e.card("daily_amount_limit");
        assert_eq!(e.purchase(&daily, 30).await.0, "00");
        assert_eq!(e.purchase(&daily, 20).await.0, "00");
        assert_eq!(e.purchase(&daily, 1).await.0, "61");
        let count = e.card("daily_count_limit");
        assert_eq!(e.purchase(&count, 1).await.0, "65");

        // Not allowed for this card (57): a pre-authorisation on a card that may only purchase.
        let no_pre_auth = e.card("no_pre_auth_or_refund");
        let s = e.next_stan();
        let r = e
            .send(&with_pin(
                pre_auth(&pan(&no_pre_auth), 100, s),
                &no_pre_auth,
            ))
            .await;
        assert_eq!(r.code(), "57");

        // Maintenance: the issuer answers 91; the request did reach it (the switch's own 91
        // would say "unavailable ... nothing sent").
        let healthy = e.healthy(1);
        let before = e.balance(&healthy);
        e.sim.faults().set_maintenance(true);
        let (code, rrn) = e.purchase(&healthy, 100).await;
        assert_eq!(code, "91");
        let row = e.h.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Declined);
        let events = e.h.store.events(row.id).unwrap();
        assert!(
            events
                .iter()
                .any(|ev| ev.detail.starts_with("declined by SIM")),
            "{events:?}"
        );
        e.sim.faults().set_maintenance(false);

        // System fault: 96 without processing; nothing to reverse.
        e.sim.faults().fail_next(1);
        let (code, rrn) = e.purchase(&healthy, 100).await;
        assert_eq!(code, "96");
        assert!(e.issuer_txn(&rrn).is_none(), "a 96 fault is not processed");
        assert_eq!(e.journal_state(&rrn), TxnState::Declined);
        assert!(
            e.h.store
                .reversal(e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().id)
                .unwrap()
                .is_none()
        );
        assert_eq!(e.balance(&healthy), before);
        assert_eq!(e.purchase(&healthy, 100).await.0, "00");

        let (_, in_doubt) = e.audit().await;
        assert_eq!(in_doubt, 0);
    });
}

#[test]
fn dropped_response_is_answered_98_and_reversed_at_the_issuer() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let before = e.balance(&card);
        e.sim.faults().drop_next(1);
        let started = std::time::Instant::now();
        let stan = e.next_stan();
        let buy = with_pin(Req::purchase(&pan(&card), 4_200, stan), &card);
        let r = e.send(&buy).await;
        assert_eq!(r.code(), "98");
        assert!(started.elapsed() < Duration::from_secs(2));
        let rrn = r.text(37).unwrap();
        // The issuer approved it and only the answer was lost; the reversal undoes it.
        assert!(
            e.issuer_state_becomes(&rrn, IssuerState::Reversed, 5).await,
            "the reversal never reached the issuer: {:?}",
            e.issuer_txn(&rrn)
        );
        assert_eq!(e.issuer_txn(&rrn).unwrap().code, ResponseCode::Approved);
        assert_eq!(e.balance(&card), before);
        let id = e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().id;
        let store = Arc::clone(&e.h.store);
        assert!(
            e.h.eventually(5, || store
                .reversal(id)
                .unwrap()
                .is_some_and(|s| s.state == SafState::Acked))
                .await
        );
        assert_eq!(e.journal_state(&rrn), TxnState::Reversed);
        // The terminal's own reversal, sent after the 98, is not applied twice.
        assert_eq!(e.send(&Req::reversal_of(&buy)).await.code(), "25");
        assert_eq!(e.balance(&card), before);

        let (_, in_doubt) = e.audit().await;
        assert_eq!(in_doubt, 0);
    });
}

/// A void whose outcome's commit was taken for failed though it had landed (a PostgreSQL
/// COMMIT whose answer was lost with its connection): the journal holds the void approved, its
/// sale voided, and the reversal the switch then queued on its own. Once the issuer acknowledges
/// that reversal the sale is approved again, in the journal as at the issuer, and in memory: it
/// can be voided again.
#[test]
fn a_queued_reversal_of_an_approved_void_gives_its_sale_back() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let p = pan(&card);
        let s_buy = e.next_stan();
        let r = e
            .send(&with_pin(Req::purchase(&p, 10_000, s_buy), &card))
            .await;
        assert_eq!(r.code(), "00");
        let rrn_buy = r.text(37).unwrap();
        let s = e.next_stan();
        let r = e.send(&Req::void(&p, 10_000, s, s_buy, &rrn_buy)).await;
        assert_eq!(r.code(), "00");
        let void_id =
            e.h.store
                .txn_by_rrn(&r.text(37).unwrap())
                .unwrap()
                .unwrap()
                .id;
        assert_eq!(e.journal_state(&rrn_buy), TxnState::Voided);
        // What the failed-write path queues on its own: the void's reversal.
        let queued = Record::SafEnqueue {
            txn_id: void_id,
            issuer: "SIM".into(),
            reason: "96".into(),
            next_attempt_ms: 0,
        };
        e.h.store.submit(vec![queued]).unwrap().await.unwrap();
        let store = Arc::clone(&e.h.store);
        let acked =
            e.h.eventually(10, || {
                store
                    .reversal(void_id)
                    .unwrap()
                    .is_some_and(|q| q.state == SafState::Acked)
            })
            .await;
        assert!(acked, "{:?}", e.h.store.reversal(void_id));
        assert_eq!(
            e.h.store.txn(void_id).unwrap().unwrap().state,
            TxnState::Reversed
        );
        assert_eq!(e.journal_state(&rrn_buy), TxnState::Approved);
        let (_, in_doubt) = e.audit().await;
        assert_eq!(in_doubt, 0);
        let s = e.next_stan();
        let r = e.send(&Req::void(&p, 10_000, s, s_buy, &rrn_buy)).await;
        assert_eq!(r.code(), "00", "the sale can be voided again");
        assert_eq!(e.journal_state(&rrn_buy), TxnState::Voided);
    });
}

#[test]
fn pending_reversal_reaches_the_issuer_after_a_switch_restart() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let before = e.balance(&card);
        // The issuer approves the purchase but its answer is lost; by the time the switch
        // gives up (98) the issuer is in maintenance and answers the reversal 91.
        e.sim.faults().drop_next(1);
        let stan = e.next_stan();
        let bytes = e.t.encode(
            &with_pin(Req::purchase(&pan(&card), 8_800, stan), &card),
            false,
        );
        e.t.stream.write_all(&bytes).await.unwrap();
        let faults = e.sim.faults();
        assert!(e.h.eventually(3, || faults.stats().dropped == 1).await);
        faults.set_maintenance(true);
        let r = e.t.read().await;
        assert_eq!(r.code(), "98");
        let rrn = r.text(37).unwrap();
        let id = e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().id;
        assert_eq!(e.balance(&card), (before.0 - 8_800, before.1));
        let store = Arc::clone(&e.h.store);
        let answered_91 =
            e.h.eventually(3, || {
                store.reversal(id).unwrap().is_some_and(|s| {
                    s.attempts >= 1 && s.last_error.as_deref().is_some_and(|l| l.ends_with("91"))
                })
            })
            .await;
        assert!(answered_91, "{:?}", e.h.store.reversal(id).unwrap());
        assert_eq!(e.issuer_txn(&rrn).unwrap().state, IssuerState::Approved);
        assert_eq!(
            e.h.store.reversal(id).unwrap().unwrap().state,
            SafState::Pending,
            "a reversal answered 91 is still owed"
        );

        // Issuer goes down, switch stops with the reversal pending, and restarts.
        e.server.take().unwrap().shutdown().await;
        e.h.stop().await;
        e.h.start().await;
        assert!(!e.h.switch.as_ref().unwrap().issuer_connected("SIM"));
        assert_eq!(
            e.h.store.reversal(id).unwrap().unwrap().state,
            SafState::Pending,
            "the restart must keep the reversal queued"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The issuer comes back on the same address and answers again.
        e.sim.faults().clear();
        let listener = TcpListener::bind(e.issuer_addr).await.unwrap();
        e.server = Some(e.sim.serve(listener).unwrap());
        let store = Arc::clone(&e.h.store);
        assert!(
            e.h.eventually(15, || store
                .reversal(id)
                .unwrap()
                .is_some_and(|s| s.state == SafState::Acked))
                .await,
            "pending reversal not delivered after the restart: {:?}",
            e.h.store.reversal(id).unwrap()
        );
        assert_eq!(e.issuer_txn(&rrn).unwrap().state, IssuerState::Reversed);
        assert_eq!(e.balance(&card), before);
        assert_eq!(e.journal_state(&rrn), TxnState::Reversed);

        // The restarted switch still serves the terminal (it must sign in again).
        let mut t = e.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        e.t = t;
        assert_eq!(e.purchase(&card, 100).await.0, "00");

        let (_, in_doubt) = e.audit().await;
        assert_eq!(in_doubt, 0);
    });
}

#[test]
fn an_approval_for_a_request_recovery_took_over_is_not_answered_00() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        // The issuer is slow; meanwhile another process (a second one started with this
        // node's id, or the sweep) takes the request for one left in flight: it marks it timed
        // out and queues its reversal.
        e.sim
            .faults()
            .set_latency(Duration::from_millis(200), Duration::from_millis(200));
        let stan = e.next_stan();
        let bytes = e.t.encode(
            &with_pin(Req::purchase(&pan(&card), 1_500, stan), &card),
            false,
        );
        e.t.stream.write_all(&bytes).await.unwrap();
        let store = Arc::clone(&e.h.store);
        let in_flight =
            e.h.eventually(2, || {
                !store.txns_in_state(TxnState::InFlight).unwrap().is_empty()
            })
            .await;
        assert!(in_flight);
        let row =
            e.h.store
                .txns_in_state(TxnState::InFlight)
                .unwrap()
                .pop()
                .unwrap();
        e.h.store
            .submit(vec![
                store::Record::State {
                    id: row.id,
                    state: TxnState::TimedOut,
                },
                store::Record::SafEnqueue {
                    txn_id: row.id,
                    issuer: row.issuer.clone().unwrap(),
                    reason: "98".into(),
                    next_attempt_ms: 0,
                },
            ])
            .unwrap()
            .await
            .unwrap();
        // The issuer approves; the switch must not tell the terminal 00 for a payment the
        // journal holds as timed out and is reversing.
        let r = e.t.read().await;
        assert_ne!(r.code(), "00");
        assert_eq!(e.journal_state(&r.text(37).unwrap()), TxnState::TimedOut);
        e.sim.faults().set_latency(Duration::ZERO, Duration::ZERO);
    });
}

#[test]
fn retried_purchase_is_debited_once_and_different_content_is_94() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(3);
        let before = e.balance(&card);
        let stan = e.next_stan();
        let req = with_pin(Req::purchase(&pan(&card), 500, stan), &card);
        let first = e.send(&req).await;
        let second = e.send(&req).await;
        assert_eq!((first.code(), second.code()), ("00".into(), "00".into()));
        assert_eq!(first.text(37), second.text(37));
        assert_eq!(first.text(38), second.text(38));
        assert_eq!(e.balance(&card), (before.0 - 500, before.1), "debited once");

        // Same terminal, batch and trace, other amount: a duplicate, not a second debit.
        let other = Req {
            amount: 501,
            ..req.clone()
        };
        assert_eq!(e.send(&other).await.code(), "94");
        assert_eq!(e.balance(&card), (before.0 - 500, before.1));

        e.sim.issuer().flush().unwrap();
        let debits = e
            .sim
            .issuer()
            .approvals()
            .unwrap()
            .into_iter()
            .filter(|a| a.pan_masked == card.pan.masked().to_string())
            .count();
        assert_eq!(debits, 1, "the issuer approved one purchase for this card");

        let (checked, in_doubt) = e.audit().await;
        assert_eq!((checked, in_doubt), (1, 0));
    });
}

#[test]
fn pin_block_of_the_other_schemes_length_is_answered_99() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let before = e.balance(&card);
        let stan = e.next_stan();
        // A DES (003) terminal's request, its PIN block widened to the 16 bytes an SM4 PIK
        // would give: it decodes (SM4 dialect) but does not fit the terminal's keys.
        let des = e.t.encode(
            &with_pin(Req::purchase(&pan(&card), 300, stan), &card),
            false,
        );
        let decoded = iso8583::Frame::decode(&des).unwrap();
        assert_eq!(decoded.message.pin_block_len(), Some(8));
        let block = decoded.message.bytes(52).unwrap();
        let mut out =
            iso8583::MessageBuilder::with_dialect(&iso8583::CUP_POS_SM4, decoded.message.mti());
        for field in decoded.message.fields() {
            match field.number() {
                52 => {
                    out.set_binary(52, &[block, block].concat()).unwrap();
                }
                64 => {}
                n => {
                    out.copy_from(&decoded.message, n).unwrap();
                }
            }
        }
        let mak = e.t.keys.as_ref().unwrap().mak.clone();
        let mut wide = Vec::new();
        out.encode_frame_with_mac(&decoded.head, &mut wide, |data| {
            Ok::<_, iso8583::EncodeError>(
                paycrypto::mac::compute(paycrypto::MacAlgorithm::CupEcb, &mak, data).unwrap(),
            )
        })
        .unwrap();
        assert_eq!(
            iso8583::Frame::decode(&wide)
                .unwrap()
                .message
                .pin_block_len(),
            Some(16)
        );
        let r = e.t.exchange(&wide).await;
        assert!(e.t.mac_ok(&r), "response MAC must verify");
        assert_eq!(r.code(), "99");
        assert_eq!(e.balance(&card), before, "nothing reached the issuer");

        // The 8-byte block the terminal's PIK gives is approved (a new trace: the old one is
        // taken by the refused request).
        let stan = e.next_stan();
        let r = e
            .send(&with_pin(Req::purchase(&pan(&card), 300, stan), &card))
            .await;
        assert_eq!(r.code(), "00");
        assert_eq!(e.balance(&card), (before.0 - 300, before.1));
    });
}

/// A pre-authorisation is voided when the guest leaves, often days after the hold was taken
/// (within the pre-authorisation's 30 days, as the issuer allows); a sale's void stays same-day.
#[test]
fn a_pre_authorisation_is_voided_on_a_later_day() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let p = pan(&card);
        let (start_balance, _) = e.balance(&card);
        let held = e.t.send(&with_pin(pre_auth(&p, 20_000, 11), &card)).await;
        assert_eq!(held.code(), "00");
        let rrn_pa = held.text(37).unwrap();
        let sale =
            e.t.send(&with_pin(Req::purchase(&p, 1_000, 12), &card))
                .await;
        assert_eq!(sale.code(), "00");
        assert_eq!(e.balance(&card), (start_balance - 1_000, 20_000));

        e.h.stop().await;
        e.h.clock.shift_days(2);
        e.h.start().await;
        let mut t = e.h.terminal().await;
        assert_eq!(t.sign_in().await.code(), "00");
        let void = Req::void(&p, 1_000, 13, 12, &sale.text(37).unwrap());
        assert_eq!(
            t.send(&void).await.code(),
            "25",
            "a sale is voided the same day only"
        );
        let r = t.send(&pre_auth_void(&p, 20_000, 14, 11, &rrn_pa)).await;
        assert_eq!(r.code(), "00");
        assert_eq!(
            e.balance(&card),
            (start_balance - 1_000, 0),
            "the hold is released"
        );
        assert_eq!(e.issuer_txn(&rrn_pa).unwrap().state, IssuerState::Voided);
        assert_eq!(e.journal_state(&rrn_pa), TxnState::Voided);
    });
}

/// A reversal is its original's request sent again (PROTOCOL.md: MTI 0400, the rest as the
/// original): one of another type than the transaction at its trace (a refund's trace reversed
/// as a purchase) is refused 12 and takes nothing back.
#[test]
fn a_reversal_of_another_type_than_its_original_changes_nothing() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let p = pan(&card);
        let (start_balance, _) = e.balance(&card);
        let s = e.next_stan();
        let r = e.send(&with_pin(Req::purchase(&p, 5_000, s), &card)).await;
        assert_eq!(r.code(), "00");
        let rrn = r.text(37).unwrap();
        let s = e.next_stan();
        let r = e
            .send(&Req::refund(&p, 2_000, s, &rrn, &today_mmdd()))
            .await;
        assert_eq!(r.code(), "00");
        let as_purchase = Req::reversal_of(&Req::purchase(&p, 2_000, s));
        assert_eq!(e.send(&as_purchase).await.code(), "12");
        assert_eq!(e.balance(&card), (start_balance - 3_000, 0));
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().refunded_fen,
            2_000
        );
        assert_eq!(e.audit().await.1, 0);
    });
}

/// A sale whose terminal reverses it while a refund of it, approved by the issuer and timed
/// out here, is itself being reversed: the sale's reversal reaches the issuer first and is
/// refused 12 (a refund stands on it). It is tried again, not given up: once the refund's
/// reversal lands the issuer takes it, and the sale is reversed there as in the journal.
#[test]
fn a_sale_reversal_refused_while_its_refund_is_being_reversed_is_tried_again() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let sale_stan = e.next_stan();
        let sale = with_pin(Req::purchase(&pan(&card), 5_000, sale_stan), &card);
        let answer = e.send(&sale).await;
        assert_eq!(answer.code(), "00");
        let sale_rrn = answer.text(37).unwrap();
        // The refund is approved by the issuer, its answer lost: 98, its reversal queued,
        // and the issuer in maintenance from then on, so the reversal is put off (91).
        let faults = e.sim.faults();
        faults.drop_next(1);
        let refund_stan = e.next_stan();
        let refund = Req::refund(&pan(&card), 1_000, refund_stan, &sale_rrn, &today_mmdd());
        let bytes = e.t.encode(&refund, false);
        e.t.stream.write_all(&bytes).await.unwrap();
        assert!(e.h.eventually(3, || faults.stats().dropped == 1).await);
        faults.set_maintenance(true);
        assert_eq!(e.t.read().await.code(), "98");
        let store = Arc::clone(&e.h.store);
        let tid = e.t.tid.clone();
        let refund_id = store.txns_by_key(&tid, 1, refund_stan).unwrap()[0].id;
        let put_off =
            e.h.eventually(10, || {
                store
                    .reversal(refund_id)
                    .unwrap()
                    .is_some_and(|r| r.attempts >= 2)
            })
            .await;
        assert!(put_off, "{:?}", store.reversal(refund_id));
        // Now the terminal reverses the sale (it never saw its answer): its reversal is tried
        // once in maintenance too, then the issuer is back; the sale's next try comes first.
        assert_eq!(e.send(&Req::reversal_of(&sale)).await.code(), "00");
        let sale_id = store.txn_by_rrn(&sale_rrn).unwrap().unwrap().id;
        let tried =
            e.h.eventually(5, || {
                store
                    .reversal(sale_id)
                    .unwrap()
                    .is_some_and(|r| r.attempts >= 1)
            })
            .await;
        assert!(tried, "{:?}", store.reversal(sale_id));
        faults.set_maintenance(false);
        let refused_then_retried =
            e.h.eventually(10, || {
                store
                    .reversal(sale_id)
                    .unwrap()
                    .is_some_and(|r| r.last_error.as_deref().is_some_and(|l| l.contains("12")))
            })
            .await;
        assert!(refused_then_retried, "{:?}", store.reversal(sale_id));
        // Both land: the refund's reversal, then the sale's.
        let landed =
            e.h.eventually(20, || {
                store
                    .reversal(sale_id)
                    .unwrap()
                    .is_some_and(|r| r.state == SafState::Acked)
            })
            .await;
        assert!(landed, "{:?}", store.reversal(sale_id));
        assert_eq!(
            store.reversal(refund_id).unwrap().unwrap().state,
            SafState::Acked
        );
        assert_eq!(
            e.issuer_txn(&sale_rrn).unwrap().state,
            IssuerState::Reversed
        );
        let (_, in_doubt) = e.audit().await;
        assert_eq!(in_doubt, 0);
    });
}
