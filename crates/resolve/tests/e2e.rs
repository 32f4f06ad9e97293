//! Resolve end to end: the real switch and the real issuer simulator over loopback TCP (the
//! switch's own test harness), a SQLite journal in a temp dir, webhook receivers on real
//! sockets. Declines are explained and evidenced, timeouts read as reversed, refund
//! applications run their refund through the switch, duplicates are flagged, webhooks arrive
//! signed and failing receivers are retried.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../switch/tests/common/mod.rs"]
mod common;
#[path = "support/tls.rs"]
mod tls;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use domain::IssuerDirectory;
use domain::diagnosis::Lang;
use issuer_sim::{
    DemoCard, HsmPinVerifier, IssuerSim, LedgerLocation, Rrn, ServerHandle, TxnRecord,
    TxnState as IssuerState, demo_issuer,
};
use paycrypto::Hsm;
use resolve::cases::{
    CaseError, CaseKind, CaseService, CaseState, NewCase, RefundExecutor, Transition,
};
use resolve::duplicates::{self, SuggestedAction};
use resolve::outbox::{Notifier, NotifierConfig, Tailer, TailerConfig};
use resolve::{Outcome, explain_rrn};
use store::{EventRow, Record, SafState, Store};
use switch::{Clock, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BANK: &str = "ICBC";

struct Env {
    h: Harness,
    sim: IssuerSim,
    /// Taken to stop the issuer's server (its line down).
    server: Option<ServerHandle>,
    cards: Vec<DemoCard>,
    t: Terminal,
    stan: u32,
    _ledger_dir: tempfile::TempDir,
}

async fn start() -> Env {
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
    let h = Harness::with_hsm(server.local_addr(), Arc::default(), hsm, zpk).await;
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    Env {
        h,
        sim,
        server: Some(server),
        cards,
        t,
        stan: 1,
        _ledger_dir: ledger_dir,
    }
}

impl Env {
    /// A purchase declined 51, turned into a notification by the tailer; its RRN.
    async fn decline_for_notification(&mut self, amount: u64) -> String {
        let (code, rrn, _) = self
            .purchase(&self.card("insufficient_funds"), amount)
            .await;
        assert_eq!(code, "51");
        self.tailer().poll_once().await.unwrap();
        rrn
    }

    fn notifier(&self, config: NotifierConfig) -> Arc<Notifier> {
        Arc::new(self.notifier_to_spawn(config))
    }

    /// A notifier on this journal and the machine's clock, for `Notifier::spawn`.
    fn notifier_to_spawn(&self, config: NotifierConfig) -> Notifier {
        Notifier::new(
            self.store(),
            Arc::clone(&self.h.hsm) as Arc<dyn Hsm>,
            Arc::new(SystemClock),
            config,
        )
    }

    /// Points the merchant's webhooks at `url`, signed with `secret`.
    async fn aim_webhooks(&self, url: &str, secret: &[u8]) {
        resolve::outbox::set_endpoint(
            self.store().as_ref(),
            self.h.hsm.as_ref(),
            MID,
            url,
            secret,
            resolve::webhook::Destinations::AnyAddress,
        )
        .await
        .unwrap();
    }

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

    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.h.store) as Arc<dyn Store>
    }

    /// Cases over this environment's journal, refunds going through its switch's back office,
    /// on the system clock.
    fn cases(&self) -> CaseService {
        let back_office = Arc::new(self.switch().back_office()) as Arc<dyn RefundExecutor>;
        CaseService::new(
            self.store(),
            self.directory(),
            back_office,
            Arc::new(SystemClock),
        )
    }

    fn switch(&self) -> &switch::SwitchHandle {
        self.h.switch.as_ref().unwrap()
    }

    fn issuer_txn(&self, rrn: &str) -> Option<TxnRecord> {
        self.sim.issuer().txn(&Rrn::parse(rrn).unwrap())
    }

    async fn purchase(&mut self, card: &DemoCard, amount: u64) -> (String, String, Req) {
        self.stan += 1;
        let req = Req {
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), amount, self.stan)
        };
        let r = self.t.send(&req).await;
        (r.code(), r.text(37).unwrap_or_default(), req)
    }

    /// A sale of `sale_fen` with `card`, then a refund of `refund_fen` of it, both approved:
    /// the sale's RRN, the refund as sent and the refund's RRN.
    async fn sale_refunded(
        &mut self,
        card: &DemoCard,
        sale_fen: u64,
        refund_fen: u64,
    ) -> (String, Req, String) {
        let (code, sale, _) = self.purchase(card, sale_fen).await;
        assert_eq!(code, "00");
        let today = switch::LocalTime::from_ms(now()).mmdd();
        self.stan += 1;
        let refund = Req::refund(
            card.pan.expose_digits(),
            refund_fen,
            self.stan,
            &sale,
            &today,
        );
        let r = self.t.send(&refund).await;
        assert_eq!(r.code(), "00");
        (sale, refund, r.text(37).unwrap())
    }

    async fn reversal_acked(&self, rrn: &str) -> bool {
        let store = Arc::clone(&self.h.store);
        let id = store.txn_by_rrn(rrn).unwrap().unwrap().id;
        self.h
            .eventually(10, || {
                store
                    .reversal(id)
                    .unwrap()
                    .is_some_and(|r| r.state == SafState::Acked)
            })
            .await
    }

    fn directory(&self) -> Arc<IssuerDirectory> {
        Arc::clone(&self.h.directory)
    }

    /// The merchant's duplicate flags, newest first (the first hundred).
    fn flagged(&self) -> Vec<duplicates::DuplicateFlag> {
        duplicates::flagged(
            self.store().as_ref(),
            &self.h.directory,
            MID,
            (None, 100),
            now(),
        )
        .unwrap()
    }

    fn tailer(&self) -> Tailer {
        Tailer::new(
            self.store(),
            self.directory(),
            Arc::new(SystemClock),
            TailerConfig::default(),
        )
    }
}

fn now() -> i64 {
    SystemClock.now_ms()
}

/// The evidence package goes to an issuer's desk or to whoever holds the card: for a card its
/// bank reported stolen (43) it says the bank declined and the customer should contact it, and
/// names no theft, which would tell a thief the card was reported.
#[test]
fn evidence_for_a_stolen_card_names_no_theft() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.card("stolen");
        let (code, rrn, _) = e.purchase(&card, 100).await;
        assert_eq!(code, "43");
        let store = e.store();
        let ev = resolve::evidence(store.as_ref(), &e.h.directory, &rrn, Some(MID), now()).unwrap();
        for out in [
            ev.to_text(Lang::En),
            ev.to_html(Lang::En),
            ev.to_text(Lang::Zh),
            ev.to_html(Lang::Zh),
        ] {
            let lower = out.to_lowercase();
            assert!(!lower.contains("stolen") && !out.contains("被盗"), "{out}");
            assert!(!lower.contains("pick up") && !out.contains("没收"), "{out}");
        }
        assert!(ev.to_text(Lang::En).contains("Declined by the card's bank"));
        assert!(ev.to_text(Lang::Zh).contains("发卡行拒绝"));
        // The merchant's own page still says what it is.
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert!(
            x.diagnosis
                .unwrap()
                .title
                .en
                .to_lowercase()
                .contains("stolen")
        );
    });
}

#[test]
fn declined_purchase_is_diagnosed_with_evidence_naming_the_issuer() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.card("refer_to_issuer");
        let (code, rrn, _) = e.purchase(&card, 100).await;
        assert_eq!(code, "01");
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::Declined);
        assert_eq!(x.diagnosis.unwrap().code(), Some("01"));
        let kinds: Vec<&str> = x.steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["received", "declined"], "{x:#?}");
        assert!(
            x.steps[1]
                .text
                .en
                .contains("Industrial and Commercial Bank"),
            "{x:#?}"
        );
        assert!(x.steps[1].text.zh.contains("工商银行"), "{x:#?}");

        let ev = resolve::evidence(store.as_ref(), &e.h.directory, &rrn, Some(MID), now()).unwrap();
        assert_eq!(ev.issuer_phone.as_deref(), Some("95588"));
        assert_eq!(ev.bank_code.as_deref(), Some("ICBC"));
        assert_eq!(ev.merchant_name, "Teahouse");
        assert_eq!(ev.response_code.as_deref(), Some("01"));
        let pan = card.pan.expose_digits().to_owned();
        for lang in [Lang::Zh, Lang::En] {
            let text = ev.to_text(lang);
            let html = ev.to_html(lang);
            for out in [&text, &html] {
                assert!(out.contains("95588") && out.contains(&rrn) && out.contains(MID));
                assert!(out.contains(TID) && out.contains("01"));
                assert!(!out.contains(&pan), "full PAN in evidence");
                assert!(out.contains(&ev.masked_pan));
            }
            assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        }
        assert!(ev.to_text(Lang::Zh).contains("中国工商银行"));
        // Every value on the page is escaped, even a merchant name an operator typed.
        e.h.store
            .submit(vec![store::Record::UpsertMerchant(store::MerchantRow {
                mid: MID.into(),
                name: "<script>alert(1)</script> & Co".into(),
                status: store::Status::Active,
                mcc: "5812".into(),
            })])
            .unwrap()
            .await
            .unwrap();
        let ev = resolve::evidence(store.as_ref(), &e.h.directory, &rrn, Some(MID), now()).unwrap();
        let html = ev.to_html(Lang::En);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
        // Through the service handle a web layer holds, scoped to a merchant.
        let resolver = resolve::Resolver::new(
            e.store(),
            Arc::clone(&e.h.hsm) as Arc<dyn Hsm>,
            e.directory(),
            Arc::new(SystemClock),
        );
        assert_eq!(resolver.explain(&rrn, Some(MID)).unwrap().txn.id, x.txn.id);
        assert!(resolver.explain(&rrn, Some("898110059420002")).is_err());
        assert!(
            resolver
                .evidence(&rrn, Some(MID))
                .unwrap()
                .to_html(Lang::En)
                .contains("95588")
        );
        // Another merchant does not see it.
        assert!(resolve::evidence(store.as_ref(), &e.h.directory, &rrn, Some("X"), now()).is_err());
    });
}

/// What the store-and-forward task writes when the issuer answers the reversal of row `id`
/// with a refusal (here 12): the journal says reversed, the issuer did not undo it.
fn reversed_and_refused(id: i64, answer: &str) -> Vec<Record> {
    vec![
        store::Record::State {
            id,
            state: store::TxnState::Reversed,
        },
        store::Record::SafEnqueue {
            txn_id: id,
            issuer: "SIM".into(),
            reason: "98".into(),
            next_attempt_ms: now(),
        },
        store::Record::SafDone {
            txn_id: id,
            state: SafState::Refused,
            at_ms: now(),
            answer: Some(answer.into()),
        },
        store::Record::Event(store::EventRow {
            txn_id: id,
            at_ms: now(),
            kind: "reversal_done".into(),
            detail: format!("reversal refused by SIM: {answer}"),
        }),
    ]
}

/// A decline the issuer gave with a code about the acquirer's side of the link (its 99, a PIN
/// block under a zone key out of step): the explanation gives the issuer's code and says the
/// acquirer must act, not "declined by the issuer: 96".
#[test]
fn an_issuer_decline_about_the_link_is_explained_with_the_issuers_code() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let (code, rrn, _) = e.purchase(&card, 700).await;
        assert_eq!(code, "00");
        let store = e.store();
        let id = store.txn_by_rrn(&rrn).unwrap().unwrap().id;
        let detail = format!(
            "declined by SIM at 10:00:00: 99, {} (purchase)",
            domain::diagnosis::ISSUER_LINK_NOTE
        );
        store
            .submit(vec![store::Record::Event(store::EventRow {
                txn_id: id,
                at_ms: now(),
                kind: "declined".into(),
                detail,
            })])
            .unwrap()
            .await
            .unwrap();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        let said = x
            .steps
            .iter()
            .find(|s| s.kind == "declined")
            .unwrap_or_else(|| panic!("{x:#?}"));
        assert!(
            said.text.en.contains("with code 99") && said.text.en.contains("acquirer must act"),
            "{said:#?}"
        );
        assert!(said.text.zh.contains("99"), "{said:#?}");
    });
}

#[test]
fn a_reversal_the_issuer_refused_tells_the_merchant_to_check_the_card() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let (code, rrn, _) = e.purchase(&card, 900).await;
        assert_eq!(code, "00");
        let store = e.store();
        let id = store.txn_by_rrn(&rrn).unwrap().unwrap().id;
        store
            .submit(reversed_and_refused(id, "12"))
            .unwrap()
            .await
            .unwrap();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ReversalRefused, "{x:#?}");
        assert!(x.summary.en.contains("may still show the charge"), "{x:#?}");
        let d = x.diagnosis.unwrap();
        assert!(d.contact_issuer.recommended());
        assert_eq!(d.who_acts, domain::diagnosis::WhoActs::Acquirer);
        // The merchant is told, once.
        let mut tailer = e.tailer();
        tailer.poll_once().await.unwrap();
        tailer.poll_once().await.unwrap();
        let told: Vec<_> = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .filter(|o| o.event_type == "reversal.refused")
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert!(told[0].payload.contains(&rrn));

        // A refund whose reversal the issuer refused: the refund may stand, the customer may
        // have been paid back; not a sale the card may still show.
        let (_, _, refund_rrn) = e.sale_refunded(&card, 1_200, 1_200).await;
        let refund_id = store.txn_by_rrn(&refund_rrn).unwrap().unwrap().id;
        store
            .submit(reversed_and_refused(refund_id, "12"))
            .unwrap()
            .await
            .unwrap();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &refund_rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ReversalRefused, "{x:#?}");
        assert!(
            !x.summary.en.contains("may still show the charge"),
            "{x:#?}"
        );
        assert!(x.summary.en.contains("may stand"), "{x:#?}");
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            domain::diagnosis::Subject::Failure(
                domain::diagnosis::FailureKind::ReturnReversalRefused
            ),
            "{d:?}"
        );
        tailer.poll_once().await.unwrap();
        tailer.poll_once().await.unwrap();
        let told: Vec<_> = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .filter(|o| o.event_type == "reversal.refused" && o.payload.contains(&refund_rrn))
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert!(
            told[0].payload.contains("return-reversal-refused"),
            "{}",
            told[0].payload
        );
        assert!(!told[0].payload.contains("we did not receive the money"));
    });
}

/// A reversal the issuer answered 25 (no such original) says the issuer never had the request:
/// nothing stands there, as after an acknowledged reversal. A sale that timed out reads as not
/// answered and reversed, not as "the card may still show the charge"; a refund as not made,
/// not as "it may stand"; and the merchant is told the reversal is done, not refused. (The
/// simulated issuers acknowledge a reversal of a request they never had, so the answer is
/// written as the switch writes a refusal.)
#[test]
fn a_reversal_answered_25_reads_as_undone_not_refused() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let store = e.store();
        let (_, _, refund_rrn) = e.sale_refunded(&card, 4_300, 1_300).await;
        let (code, timed_out, _) = e.purchase(&card, 2_100).await;
        assert_eq!(code, "00");
        let mut tailer = e.tailer();
        for (rrn, what) in [(&timed_out, "purchase"), (&refund_rrn, "refund")] {
            let id = store.txn_by_rrn(rrn).unwrap().unwrap().id;
            let mut records = reversed_and_refused(id, "25");
            records[0] = store::Record::State {
                id,
                state: store::TxnState::TimedOut,
            };
            store.submit(records).unwrap().await.unwrap();
            assert!(store.reversal(id).unwrap().unwrap().never_had_original());
            let x = explain_rrn(store.as_ref(), &e.h.directory, rrn, now()).unwrap();
            assert_eq!(x.outcome, Outcome::NoAnswerReversed, "{x:#?}");
            assert!(
                !x.summary.en.contains("may still show the charge"),
                "{x:#?}"
            );
            assert!(!x.summary.en.contains("may stand"), "{x:#?}");
            let d = x.diagnosis.unwrap();
            assert!(
                !matches!(
                    d.subject,
                    domain::diagnosis::Subject::Failure(
                        domain::diagnosis::FailureKind::ReversalRefused
                            | domain::diagnosis::FailureKind::ReturnReversalRefused
                    )
                ),
                "{d:?}"
            );
            assert_eq!(
                x.steps.last().unwrap().kind,
                "reversal_original_unknown",
                "{x:#?}"
            );
            let text = x.to_text(Lang::En);
            assert!(text.contains(&format!("never had this {what}")), "{text}");
            tailer.poll_once().await.unwrap();
            tailer.poll_once().await.unwrap();
            let told: Vec<_> = store
                .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                .unwrap()
                .into_iter()
                .filter(|o| o.payload.contains(rrn.as_str()))
                .map(|o| o.event_type)
                .collect();
            assert!(!told.iter().any(|t| t == "reversal.refused"), "{told:?}");
            assert!(told.iter().any(|t| t == "reversal.done"), "{told:?}");
        }
    });
}

#[test]
fn timed_out_purchase_reads_as_reversed_and_acknowledged() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        // The issuer approves but its answer is lost: 98, then a reversal the issuer acks.
        e.sim.faults().drop_next(1);
        let (code, rrn, _) = e.purchase(&card, 4_200).await;
        assert_eq!(code, "98");
        assert!(e.reversal_acked(&rrn).await, "reversal never acknowledged");
        let at_issuer = e.issuer_txn(&rrn).unwrap();
        assert_eq!(at_issuer.code, issuer_sim::ResponseCode::Approved);
        assert_eq!(at_issuer.state, IssuerState::Reversed);
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::NoAnswerReversed, "{x:#?}");
        let kinds: Vec<&str> = x.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                "received",
                "no_answer",
                "reversal_queued",
                "reversal_acknowledged"
            ],
            "{x:#?}"
        );
        assert_eq!(x.diagnosis.unwrap().code(), Some("98"));
        let text = x.to_text(Lang::En);
        assert!(text.contains("acknowledged the reversal"), "{text}");

        // The swipe succeeded but the terminal never saw it and reversed: approved, then
        // reversed, and the issuer acknowledges.
        let (code, rrn2, req) = e.purchase(&card, 700).await;
        assert_eq!(code, "00");
        assert_eq!(e.t.send(&Req::reversal_of(&req)).await.code(), "00");
        assert!(e.reversal_acked(&rrn2).await);
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn2, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ApprovedThenReversed, "{x:#?}");
        let kinds: Vec<&str> = x.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                "received",
                "approved",
                "reversed_by_terminal",
                "reversal_acknowledged"
            ]
        );
        assert!(x.summary.zh.contains("冲正") && x.summary.en.contains("reversed"));
        // Both acknowledged reversals become notifications, once.
        let mut tailer = e.tailer();
        tailer.poll_once().await.unwrap();
        tailer.poll_once().await.unwrap();
        let done: Vec<_> = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .filter(|o| o.event_type == "reversal.done")
            .collect();
        assert_eq!(done.len(), 2, "{done:#?}");
        assert!(done.iter().any(|o| o.payload.contains(&rrn)));
        assert!(done.iter().any(|o| o.payload.contains(&rrn2)));

        // A balance inquiry whose answer is lost moves no money: nothing is reversed, and the
        // explanation does not say a reversal was acknowledged.
        e.sim.faults().drop_next(1);
        e.stan += 1;
        let inquiry = Req {
            processing: "310000",
            message_type: "01",
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), 0, e.stan)
        };
        let r = e.t.send(&inquiry).await;
        assert_eq!(r.code(), "98");
        let row = store
            .txns_by_key(TID, 1, e.stan)
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let x = explain_rrn(
            store.as_ref(),
            &e.h.directory,
            row.rrn.as_deref().unwrap(),
            now(),
        )
        .unwrap();
        assert_eq!(x.outcome, Outcome::Failed, "{x:#?}");
        assert!(!x.summary.en.contains("reversal"), "{:?}", x.summary);
        // Its diagnosis says no money moved, not that a reversal undoes a debit.
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            domain::diagnosis::Subject::Failure(domain::diagnosis::FailureKind::InquiryNoAnswer)
        );
        assert!(d.customer_message.zh.contains("没有被扣款"), "{d:?}");
    });
}

/// Approved, then reversed by its terminal, the reversal not yet acknowledged: the card may
/// show the charge until the issuer takes it back, and no page promises otherwise.
#[test]
fn an_approval_whose_reversal_is_unacknowledged_promises_nothing_yet() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let (code, rrn, _) = e.purchase(&card, 800).await;
        assert_eq!(code, "00");
        let store = e.store();
        let id = store.txn_by_rrn(&rrn).unwrap().unwrap().id;
        // What a terminal's reversal leaves while the issuer has not answered it yet.
        store
            .submit(vec![
                Record::State {
                    id,
                    state: store::TxnState::Reversed,
                },
                Record::SafEnqueue {
                    txn_id: id,
                    issuer: "SIM".into(),
                    reason: "98".into(),
                    next_attempt_ms: now() + 60_000,
                },
            ])
            .unwrap()
            .await
            .unwrap();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ApprovedReversalPending, "{x:#?}");
        assert!(!x.summary.zh.contains("不会被扣款"), "{:?}", x.summary);
        assert!(
            x.summary.zh.contains("尚未得到发卡行确认"),
            "{:?}",
            x.summary
        );
        assert!(
            x.summary.en.contains("may show the charge"),
            "{:?}",
            x.summary
        );
    });
}

/// A void or refund is diagnosed as one: another card than the sale's, more than is left to
/// refund, or no answer, each says what the merchant does about a refund, not a sale.
#[test]
fn voids_and_refunds_are_diagnosed_as_giving_money_back() {
    use domain::diagnosis::{FailureKind, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let other = e.healthy(1);
        let (code, rrn, buy) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "00");
        let store = e.store();
        let explain_stan = |stan: u32| {
            let row = store
                .txns_by_key(TID, 1, stan)
                .unwrap()
                .into_iter()
                .next()
                .unwrap();
            resolve::explain::explain_txn(store.as_ref(), &e.h.directory, &row, now()).unwrap()
        };
        // A void with another card: the host's 14, not the issuer's "invalid card number".
        e.stan += 1;
        let void = Req::void(other.pan.expose_digits(), 1_500, e.stan, buy.stan, &rrn);
        assert_eq!(e.t.send(&void).await.code(), "14");
        let x = explain_stan(e.stan);
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::NotOriginalCard),
            "{x:#?}"
        );
        // The summary names the same refusal, not the issuer's "invalid card number".
        assert!(
            x.summary.zh.contains("不是原交易所用的卡"),
            "{:?}",
            x.summary
        );
        assert!(!d.contact_issuer.recommended());
        // A refund of more than the sale: the host's 61, not the card's limit.
        let today = switch::LocalTime::from_ms(now()).mmdd();
        e.stan += 1;
        let refund = Req::refund(card.pan.expose_digits(), 1_600, e.stan, &rrn, &today);
        assert_eq!(e.t.send(&refund).await.code(), "61");
        let x = explain_stan(e.stan);
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::RefundOverOriginal),
            "{x:#?}"
        );
        assert!(!d.customer_message.zh.contains("限额"), "{d:?}");
        // Its evidence package says the same, names it a refund, and carries no script.
        let ev = resolve::evidence(
            store.as_ref(),
            &e.h.directory,
            x.txn.rrn.as_deref().unwrap(),
            Some(MID),
            now(),
        )
        .unwrap();
        let meaning = ev.response_meaning.as_ref().unwrap();
        assert!(
            meaning.zh.starts_with("退货金额超过可退金额"),
            "{meaning:?}"
        );
        let text = ev.to_text(Lang::Zh);
        assert!(text.contains("交易类型: 退货"), "{text}");
        let cleared = ev.clearing_date.clone();
        assert!(
            text.contains(&format!(
                "清算日期: {}-{}-{}",
                &cleared[..4],
                &cleared[4..6],
                &cleared[6..]
            )),
            "{text}"
        );
        // Shoudan's own refusal has no issuer's code: the package names it, not its key.
        assert!(!text.contains("refund-over-original"), "{text}");
        assert!(
            !text.contains("对顾客说") && !text.contains("商户操作"),
            "{text}"
        );
        // A refund the issuer does not answer: reversed, and the sale still stands.
        e.sim.faults().drop_next(1);
        e.stan += 1;
        let refund = Req::refund(card.pan.expose_digits(), 500, e.stan, &rrn, &today);
        assert_eq!(e.t.send(&refund).await.code(), "98");
        let x = explain_stan(e.stan);
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::ReturnNoAnswer),
            "{x:#?}"
        );
        assert!(
            d.customer_message.zh.contains("原来的交易仍然有效"),
            "{d:?}"
        );
        let no_answer = x.steps.iter().find(|s| s.kind == "no_answer").unwrap();
        assert!(
            no_answer.text.en.contains("the refund did not go through"),
            "{no_answer:?}"
        );
        // The sale itself is still approved and refundable.
        let sale = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(sale.outcome, Outcome::Approved, "{sale:#?}");
    });
}

/// A void its terminal reversed puts the sale back to approved; while the issuer has not
/// acknowledged the void's reversal, the void may stand there, so no refund application is
/// taken for the sale (it would credit the card twice); once acknowledged, it is.
#[test]
fn a_sale_whose_void_is_being_reversed_takes_no_refund_application() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, buy) = e.purchase(&card, 3_000).await;
        assert_eq!(code, "00");
        e.stan += 1;
        let void = Req {
            pin: Some(card.pin().to_owned()),
            ..Req::void(card.pan.expose_digits(), 3_000, e.stan, buy.stan, &rrn)
        };
        let r = e.t.send(&void).await;
        assert_eq!(r.code(), "00");
        let void_rrn = r.text(37).unwrap();
        // The void's reversal reaches the issuer, but its answer is lost: resent a second later.
        e.sim.faults().drop_next(1);
        assert_eq!(e.t.send(&Req::reversal_of(&void)).await.code(), "00");
        let store = e.store();
        assert_eq!(
            store.txn_by_rrn(&rrn).unwrap().unwrap().state,
            store::TxnState::Approved
        );
        let cases = e.cases();
        assert!(matches!(
            cases.open(ten_yuan_refund_application(&rrn)).await,
            Err(CaseError::RefundInDoubt)
        ));
        assert!(e.reversal_acked(&void_rrn).await);
        assert!(cases.open(ten_yuan_refund_application(&rrn)).await.is_ok());
    });
}

/// A refund its terminal reversed (approved, answer lost at the terminal): the refund's own
/// explanation says the customer has not been paid back, not the purchase's "not charged".
#[test]
fn a_refund_its_terminal_reversed_reads_as_a_refund_undone() {
    use domain::diagnosis::{FailureKind, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(3);
        let (_, refund, refund_rrn) = e.sale_refunded(&card, 2_000, 800).await;
        assert_eq!(e.t.send(&Req::reversal_of(&refund)).await.code(), "00");
        assert!(e.reversal_acked(&refund_rrn).await);
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &refund_rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ApprovedThenReversed, "{x:#?}");
        assert!(!x.summary.en.contains("not charged"), "{:?}", x.summary);
        assert!(!x.summary.zh.contains("不会被扣款"), "{:?}", x.summary);
        assert!(
            x.summary.en.contains("has not been paid back"),
            "{:?}",
            x.summary
        );
        assert!(x.summary.zh.contains("钱没有退回"), "{:?}", x.summary);
        // What the merchant is told to do and to say: the refund's advice, not a sale's (which
        // would ask the customer to pay again).
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::ReturnNoAnswer),
            "{d:?}"
        );
        assert!(!d.customer_message.en.contains("pay again"), "{d:?}");
    });
}

/// A terminal's reversal the host refused (another amount than its original's: 64) reads as
/// nothing undone, the original standing, not as a request whose original was not found.
#[test]
fn a_reversal_the_host_refused_reads_as_the_original_standing() {
    use domain::diagnosis::{FailureKind, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let (code, _, sale) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "00");
        let reversal = Req {
            amount: 1_499,
            ..Req::reversal_of(&sale)
        };
        assert_eq!(e.t.send(&reversal).await.code(), "64");
        let store = e.store();
        let row = store
            .txns_by_key(TID, 1, sale.stan)
            .unwrap()
            .into_iter()
            .find(|r| r.kind == store::TxnKind::Reversal)
            .unwrap();
        let x = resolve::explain::explain_txn(store.as_ref(), &e.directory(), &row, now()).unwrap();
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::ReversalNotTaken),
            "{d:?}"
        );
        assert!(d.customer_message.en.contains("stands"), "{d:?}");
    });
}

/// A terminal's reversal of a sale the switch had reversed already (after a 98) is refused 25,
/// and does not read as the sale standing: it was undone.
#[test]
fn a_reversal_of_a_sale_reversed_already_does_not_read_as_standing() {
    use domain::diagnosis::{FailureKind, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        e.sim.faults().drop_next(1);
        let (code, rrn, sale) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "98");
        assert!(e.reversal_acked(&rrn).await);
        assert_eq!(e.t.send(&Req::reversal_of(&sale)).await.code(), "25");
        let store = e.store();
        let row = store
            .txns_by_key(TID, 1, sale.stan)
            .unwrap()
            .into_iter()
            .find(|r| r.kind == store::TxnKind::Reversal)
            .unwrap();
        let x = resolve::explain::explain_txn(store.as_ref(), &e.directory(), &row, now()).unwrap();
        let d = x.diagnosis.unwrap();
        assert_ne!(
            d.subject,
            Subject::Failure(FailureKind::ReversalNotTaken),
            "{d:?}"
        );
    });
}

/// A sale its terminal reversed because the answer's MAC failed (A0 in the reversal) is
/// diagnosed as that, to be retried after signing in, not as an answer that never came (which
/// tells the merchant to check the cable).
#[test]
fn a_sale_reversed_for_its_answers_mac_reads_as_a_mac_failure() {
    use domain::diagnosis::{Action, FailureKind, Retry, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let (code, rrn, buy) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "00");
        let reversal = Req {
            reason: Some("A0"),
            ..Req::reversal_of(&buy)
        };
        assert_eq!(e.t.send(&reversal).await.code(), "00");
        assert!(e.reversal_acked(&rrn).await);
        let x = explain_rrn(e.store().as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::ApprovedThenReversed, "{x:#?}");
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::BadResponseMac),
            "{d:?}"
        );
        assert_eq!(d.retry, Retry::AfterAction(Action::SignIn));
    });
}

/// A terminal's reversal reads as what it did to its original, not as an approval: a sale's
/// reversal the issuer acknowledged says the cardholder is not charged and names the card's
/// bank (a reversal carries no card number); a refund's says the refund does not stand; one
/// naming no transaction says there was nothing to undo.
#[test]
fn a_terminals_reversal_reads_as_what_it_undid() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let store = e.store();
        let directory = e.directory();
        let reversal_of_stan = |stan: u32| {
            let row = store
                .txns_by_key(TID, 1, stan)
                .unwrap()
                .into_iter()
                .find(|r| r.kind == store::TxnKind::Reversal)
                .unwrap();
            resolve::explain::explain_txn(store.as_ref(), &directory, &row, now()).unwrap()
        };
        let (code, rrn, sale) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "00");
        assert_eq!(e.t.send(&Req::reversal_of(&sale)).await.code(), "00");
        assert!(e.reversal_acked(&rrn).await);
        let x = reversal_of_stan(sale.stan);
        assert_eq!(x.outcome, Outcome::Approved, "{x:#?}");
        let original = store.txn_by_rrn(&rrn).unwrap().unwrap();
        let paid_with = resolve::explain::TxnSummary::of(&directory, &original);
        let bank = paid_with.bank_name.clone();
        assert!(bank.en.contains("Bank"), "{bank:?}");
        // The reversal's own page shows the card it reversed (it carries none of its own).
        assert_eq!(x.txn.bank_name, bank);
        assert_eq!(x.txn.masked_pan, paid_with.masked_pan);
        assert!(x.txn.masked_pan.is_some());
        for (text, words) in [
            (
                &x.summary.en,
                ["acknowledged by", "not charged", rrn.as_str(), &bank.en],
            ),
            (
                &x.summary.zh,
                ["已确认", "不会被扣款", rrn.as_str(), &bank.zh],
            ),
        ] {
            assert!(!text.starts_with("approved"), "{text}");
            for word in words {
                assert!(text.contains(word), "{word:?} not in {text}");
            }
        }
        assert!(
            x.steps.iter().any(|s| s.kind == "reversal_acknowledged"),
            "{x:#?}"
        );

        // A refund's reversal: the refund does not stand, the sale still does.
        let (_, refund, refund_rrn) = e.sale_refunded(&card, 2_000, 800).await;
        assert_eq!(e.t.send(&Req::reversal_of(&refund)).await.code(), "00");
        assert!(e.reversal_acked(&refund_rrn).await);
        let x = reversal_of_stan(refund.stan);
        assert!(x.summary.en.contains("does not stand"), "{:?}", x.summary);
        assert!(!x.summary.en.contains("not charged"), "{:?}", x.summary);

        // A completion's reversal: nothing is charged for it, and the hold stands again.
        e.stan += 1;
        let hold = Req {
            mti: iso8583::Mti::AUTHORISATION,
            processing: "030000",
            condition: "06",
            message_type: "10",
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), 5_000, e.stan)
        };
        let held = e.t.send(&hold).await;
        assert_eq!(held.code(), "00");
        e.stan += 1;
        let completion = Req {
            processing: "000000",
            condition: "06",
            message_type: "20",
            rrn: held.text(37),
            f61: Some(format!("{:06}{:06}", 1, hold.stan)),
            ..Req::purchase(card.pan.expose_digits(), 3_000, e.stan)
        };
        let completed = e.t.send(&completion).await;
        assert_eq!(completed.code(), "00");
        assert_eq!(e.t.send(&Req::reversal_of(&completion)).await.code(), "00");
        assert!(e.reversal_acked(&completed.text(37).unwrap()).await);
        let x = reversal_of_stan(completion.stan);
        assert!(
            x.summary.en.contains("hold stands again"),
            "{:?}",
            x.summary
        );
        assert!(x.summary.zh.contains("预授权恢复冻结"), "{:?}", x.summary);

        // A reversal of a purchase the host never had.
        e.stan += 1;
        let never = Req::purchase(card.pan.expose_digits(), 700, e.stan);
        assert_eq!(e.t.send(&Req::reversal_of(&never)).await.code(), "00");
        let x = reversal_of_stan(never.stan);
        assert!(
            x.summary.en.contains("nothing was undone"),
            "{:?}",
            x.summary
        );
        assert!(x.summary.zh.contains("没有找到"), "{:?}", x.summary);
        assert!(!x.summary.en.contains("charged"), "{:?}", x.summary);
        assert!(
            x.steps.iter().any(|s| s.kind == "reversal_nothing"),
            "{x:#?}"
        );
    });
}

#[test]
fn a_refund_approved_twice_while_at_the_issuer_is_made_once() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, _) = e.purchase(&card, 10_000).await;
        assert_eq!(code, "00");
        let back_office = Arc::new(e.switch().back_office()) as Arc<dyn RefundExecutor>;
        let cases = Arc::new(CaseService::new(
            e.store(),
            e.directory(),
            back_office,
            Arc::new(SystemClock),
        ));
        let case = cases
            .open(NewCase {
                kind: CaseKind::RefundApplication,
                mid: MID.to_owned(),
                rrn: Some(rrn.clone()),
                txn_id: None,
                title: "returned".to_owned(),
                who: "merchant".to_owned(),
                text: "please refund 30".to_owned(),
                attachments: Vec::new(),
                assignee: None,
                due_at_ms: None,
                refund_fen: Some(3_000),
            })
            .await
            .unwrap();
        // The issuer is slow: the first approval's refund is still out when the merchant adds
        // a note (a new case version) and a second operator approves too.
        e.sim
            .faults()
            .set_latency(Duration::from_millis(200), Duration::from_millis(200));
        let first = {
            let cases = Arc::clone(&cases);
            tokio::spawn(async move { cases.approve_refund(case.id, "operator-1").await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        cases
            .add_entry(case.id, "merchant", "any news?", Vec::new())
            .await
            .unwrap();
        let second = cases.approve_refund(case.id, "operator-2").await;
        let first = first.await.unwrap();
        let codes: Vec<_> = [&first, &second]
            .iter()
            .map(|r| r.as_ref().ok().and_then(|c| c.refund_code.clone()))
            .collect();
        assert!(
            codes.contains(&Some("00".to_owned())),
            "{first:?} {second:?}"
        );
        e.sim.faults().set_latency(Duration::ZERO, Duration::ZERO);
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 3_000, "refunded once");
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().refunded_fen,
            3_000
        );
    });
}

/// A refund application whose sale is voided at the terminal before an operator approves it
/// is refused at the approval, as it would have been at the opening: no refund is sent (the
/// switch would refuse it at every approval), and nothing is linked to the sale.
#[test]
fn a_refund_application_on_a_sale_voided_since_is_not_approved() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, buy) = e.purchase(&card, 2_500).await;
        assert_eq!(code, "00");
        let cases = e.cases();
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        e.stan += 1;
        let void = Req::void(card.pan.expose_digits(), 2_500, e.stan, buy.stan, &rrn);
        assert_eq!(e.t.send(&void).await.code(), "00");
        let store = e.store();
        let sale = store.txn_by_rrn(&rrn).unwrap().unwrap();
        let linked = store.txns_linked_to(sale.id).unwrap().len();
        assert!(matches!(
            cases.approve_refund(case.id, "operator-7").await,
            Err(CaseError::NotRefundable)
        ));
        assert_eq!(store.txns_linked_to(sale.id).unwrap().len(), linked);
        assert_eq!(store.case(case.id).unwrap().unwrap().refund_code, None);
    });
}

/// An approval whose caller stops waiting while the refund is at the issuer (a closed tab)
/// still records the refund on the case: it resolves with the refund's RRN, and the card got
/// its money once.
#[test]
fn an_approval_its_caller_gave_up_on_still_reaches_the_case() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, _) = e.purchase(&card, 4_000).await;
        assert_eq!(code, "00");
        let cases = e.cases();
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        e.sim
            .faults()
            .set_latency(Duration::from_millis(150), Duration::from_millis(150));
        let left = tokio::time::timeout(
            Duration::from_millis(40),
            cases.approve_refund(case.id, "operator-7"),
        )
        .await;
        assert!(left.is_err(), "the approval answered within 40 ms");
        e.sim.faults().set_latency(Duration::ZERO, Duration::ZERO);
        let store = e.store();
        let resolved = {
            let store = Arc::clone(&store);
            e.h.eventually(5, move || {
                store
                    .case(case.id)
                    .unwrap()
                    .is_some_and(|c| c.refund_code.as_deref() == Some("00"))
            })
            .await
        };
        assert!(resolved, "the refund never reached the case");
        let row = store.case(case.id).unwrap().unwrap();
        assert_eq!(row.state, "resolved");
        assert!(row.refund_rrn.is_some());
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
    });
}

/// Two applications for one sale opened at the same moment (a double click, a client's
/// retry): one is opened, the other told it waits, where both passed the service's check and
/// approving both refunded the card twice what was asked.
#[test]
fn two_applications_opened_at_once_leave_one_waiting() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, _) = e.purchase(&card, 6_000).await;
        assert_eq!(code, "00");
        let cases = e.cases();
        let (a, b) = tokio::join!(
            cases.open(ten_yuan_refund_application(&rrn)),
            cases.open(ten_yuan_refund_application(&rrn))
        );
        let (opened, refused) = match (a, b) {
            (Ok(case), Err(error)) | (Err(error), Ok(case)) => (case, error),
            (a, b) => panic!("expected one opened and one refused: {a:?} {b:?}"),
        };
        assert!(
            matches!(refused, CaseError::ApplicationWaiting(id) if id == opened.id),
            "{refused:?}"
        );
        let sale = e.store().txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(e.store().cases_of_txn(sale.id).unwrap().len(), 1);
    });
}

/// A sale of 10.00, a refund application of it, and the approval's refund made under the
/// case's key as it ran before a stop, its result not on the case: the case service, the
/// case, the sale's RRN and the refund's answer.
async fn refund_whose_result_was_lost(
    e: &mut Env,
) -> (
    CaseService,
    resolve::cases::Case,
    String,
    switch::BackOfficeRefund,
) {
    let card = e.healthy(1);
    let (code, rrn, _) = e.purchase(&card, 1_000).await;
    assert_eq!(code, "00");
    let cases = e.cases();
    let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
    let key = format!("case-{}-refund-after-0", case.id);
    let made = e
        .switch()
        .back_office_refund(&rrn, 1_000, &key)
        .await
        .unwrap();
    assert_eq!(made.response_code, "00");
    assert_eq!(e.store().case(case.id).unwrap().unwrap().refund_code, None);
    (cases, case, rrn, made)
}

/// A refund made under a case's key whose result never reached the case (the process stopped
/// between the refund and the case's write): approving again writes it from the journal, where
/// the checks of what is left had refused it ("exceeds what is left") with the card refunded.
#[test]
fn approving_again_after_a_refund_whose_result_was_lost_records_it() {
    runtime().block_on(async {
        let mut e = start().await;
        let (cases, case, rrn, made) = refund_whose_result_was_lost(&mut e).await;
        let approved = cases.approve_refund(case.id, "operator-7").await.unwrap();
        assert_eq!(approved.refund_code.as_deref(), Some("00"));
        assert_eq!(approved.refund_rrn, made.rrn);
        assert_eq!(approved.state, CaseState::Resolved);
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
    });
}

/// The same, the case rejected meanwhile (no one knew the refund had run): approving it again
/// still writes the refund on the case, which stays rejected, where a closed case refused the
/// approval and the case never said the card was credited. A closed case with no refund made
/// under its key still takes no approval.
#[test]
fn a_refund_whose_result_was_lost_is_recorded_on_its_case_closed_since() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (cases, case, rrn, made) = refund_whose_result_was_lost(&mut e).await;
        let why = resolve::cases::Resolution::new("not needed").unwrap();
        let rejected = cases
            .transition(case.id, "operator-8", Transition::Reject(why), "", None)
            .await
            .unwrap();
        assert_eq!(rejected.state, CaseState::Rejected);
        // The case read on its own says so (the console offers to record it).
        assert!(cases.get(case.id).unwrap().refund_unrecorded);
        let recorded = cases.approve_refund(case.id, "operator-7").await.unwrap();
        assert_eq!(recorded.refund_code.as_deref(), Some("00"));
        assert_eq!(recorded.refund_rrn, made.rrn);
        assert_eq!(recorded.state, CaseState::Rejected);
        assert!(!cases.get(case.id).unwrap().refund_unrecorded);
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000, "refunded once");
        // Another sale's application, rejected with nothing made: no approval.
        let (code, other_rrn, _) = e.purchase(&card, 1_000).await;
        assert_eq!(code, "00");
        let other = cases
            .open(ten_yuan_refund_application(&other_rrn))
            .await
            .unwrap();
        let why = resolve::cases::Resolution::new("not needed").unwrap();
        cases
            .transition(other.id, "operator-8", Transition::Reject(why), "", None)
            .await
            .unwrap();
        assert!(!cases.get(other.id).unwrap().refund_unrecorded);
        assert!(matches!(
            cases.approve_refund(other.id, "operator-7").await,
            Err(CaseError::IllegalTransition { .. })
        ));
        assert_eq!(e.issuer_txn(&other_rrn).unwrap().refunded, 0);
    });
}

/// A key the approval claimed but never journalled under (the process stopped between the
/// claim and the switch's checks) is no refund made: approving again runs the checks, here
/// another refund of the sale in doubt, which the switch's own reservation no longer counts.
#[test]
fn approving_again_after_a_claim_never_sent_runs_the_checks() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, _) = e.purchase(&card, 1_000).await;
        assert_eq!(code, "00");
        let cases = e.cases();
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        // Another refund of the whole sale whose answer and first reversal answer are lost.
        e.sim.faults().drop_next(2);
        let other = e
            .switch()
            .back_office_refund(&rrn, 1_000, "ticket-9")
            .await
            .unwrap();
        assert_eq!(other.response_code, "98");
        let claim = store::resolve::BackOfficeKeyRow {
            idempotency_key: format!("case-{}-refund-after-0", case.id),
            original_rrn: rrn.clone(),
            amount_fen: 1_000,
            tid: "BACKOFFC".to_owned(),
            batch_no: 999,
            stan: 999,
            created_at_ms: now(),
        };
        e.store()
            .submit(vec![store::Record::Resolve(
                store::resolve::ResolveRecord::BackOfficeKey(claim),
            )])
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(
            cases.approve_refund(case.id, "operator-7").await,
            Err(CaseError::RefundInDoubt)
        ));
    });
}

#[test]
fn refund_application_executes_through_the_switch_once() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, rrn, _) = e.purchase(&card, 5_000).await;
        assert_eq!(code, "00");
        let (balance, _) = e.sim.issuer().balance(&card.pan).unwrap();
        let cases = e.cases();
        let new = |amount: i64| NewCase {
            kind: CaseKind::RefundApplication,
            mid: MID.to_owned(),
            rrn: Some(rrn.clone()),
            txn_id: None,
            title: "customer returned the goods".to_owned(),
            who: "merchant".to_owned(),
            text: "please refund".to_owned(),
            attachments: vec!["receipt-001.jpg".to_owned()],
            assignee: Some("ops-1".to_owned()),
            due_at_ms: Some(now() + 86_400_000),
            refund_fen: Some(amount),
        };
        let case = cases.open(new(2_000)).await.unwrap();
        assert_eq!(case.state, CaseState::Open);
        assert_eq!(case.entries[0].attachments, ["receipt-001.jpg"]);
        // Who asked for the refund cannot approve it.
        assert!(matches!(
            cases.approve_refund(case.id, "merchant").await,
            Err(CaseError::SameUser)
        ));
        let done = cases.approve_refund(case.id, "operator-7").await.unwrap();
        assert_eq!(done.state, CaseState::Resolved, "{done:#?}");
        assert_eq!(done.refund_code.as_deref(), Some("00"));
        assert!(done.resolution.as_deref().unwrap().contains("¥20.00"));
        let refund_rrn = done.refund_rrn.clone().unwrap();
        // The issuer's ledger shows the refund against the purchase, and the money came back.
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 2_000);
        assert_eq!(
            e.sim.issuer().balance(&card.pan).unwrap().0,
            balance + 2_000
        );
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().refunded_fen,
            2_000
        );
        // Closed: approving again is an illegal move, not a second refund.
        assert!(matches!(
            cases.approve_refund(case.id, "operator-7").await,
            Err(CaseError::IllegalTransition { .. })
        ));
        // A retried back-office call with the same key replays the answer, no second refund.
        let key = format!("case-{}-refund-after-0", case.id);
        let again = e
            .switch()
            .back_office_refund(&rrn, 2_000, &key)
            .await
            .unwrap();
        assert_eq!(again.rrn.as_deref(), Some(refund_rrn.as_str()));
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 2_000);
        // The same key for another amount is refused.
        assert!(
            e.switch()
                .back_office_refund(&rrn, 100, &key)
                .await
                .is_err()
        );
        // Never more than what is left (3 000 fen): not even applied for.
        assert!(matches!(
            cases.open(new(4_000)).await,
            Err(CaseError::ExceedsRemaining {
                asked_fen: 4_000,
                left_fen: 3_000
            })
        ));
        // What is left may be applied for; this application stays open.
        let waiting = cases.open(new(3_000)).await.unwrap();
        // The purchase now reads as partly refunded by the back office.
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::PartlyRefunded);
        let refund_step = x.steps.iter().find(|s| s.kind == "refunded").unwrap();
        assert!(
            refund_step.text.en.contains("back office"),
            "{refund_step:?}"
        );
        assert!(refund_step.text.en.contains("partial"), "{refund_step:?}");
        let x = explain_rrn(store.as_ref(), &e.h.directory, &refund_rrn, now()).unwrap();
        assert_eq!(x.original_rrn.as_deref(), Some(rrn.as_str()));
        // The refund and the case's changes are notifications.
        e.tailer().poll_once().await.unwrap();
        let outbox = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap();
        let refund_done: Vec<_> = outbox
            .iter()
            .filter(|o| o.event_type == "refund.done")
            .collect();
        assert_eq!(refund_done.len(), 1);
        assert!(refund_done[0].payload.contains(&refund_rrn));
        assert!(
            refund_done[0]
                .payload
                .contains(&format!("\"original_rrn\":\"{rrn}\""))
        );
        assert!(
            outbox
                .iter()
                .filter(|o| o.event_type == "case.updated")
                .count()
                >= 3
        );
        // Dispute lifecycle: closing needs a resolution, and illegal moves are errors.
        let dispute = cases
            .open(NewCase {
                kind: CaseKind::Dispute,
                refund_fen: None,
                ..new(0)
            })
            .await
            .unwrap();
        use resolve::cases::Resolution;
        let c = cases
            .transition(
                dispute.id,
                "ops",
                Transition::WaitOnIssuer,
                "asked ICBC",
                None,
            )
            .await
            .unwrap();
        assert_eq!(c.state, CaseState::WaitingIssuer);
        // A move decided on the version before the last one is refused; on the last one, made.
        assert!(matches!(
            cases
                .transition(
                    dispute.id,
                    "ops",
                    Transition::Escalate,
                    "",
                    Some(c.version - 1)
                )
                .await,
            Err(CaseError::Conflict)
        ));
        assert!(
            cases
                .transition(dispute.id, "ops", Transition::Escalate, "", Some(c.version))
                .await
                .is_ok()
        );
        assert!(matches!(
            cases
                .transition(dispute.id, "ops", Transition::Reopen, "", None)
                .await,
            Err(CaseError::IllegalTransition { .. })
        ));
        let closed = cases
            .transition(
                dispute.id,
                "ops",
                Transition::Reject(Resolution::new("cardholder withdrew").unwrap()),
                "",
                None,
            )
            .await
            .unwrap();
        assert_eq!(closed.state, CaseState::Rejected);
        assert_eq!(closed.entries.len(), 4);
        let all = cases
            .find(&store::resolve::CaseQuery {
                mid: Some(MID),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        let ids: Vec<i64> = all.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        let open = cases.still_open(Some(MID)).unwrap();
        // The executed refund's case is resolved, the dispute rejected.
        assert_eq!(open.iter().map(|c| c.id).collect::<Vec<_>>(), [waiting.id]);
        let with_txn = all.iter().find(|c| c.txn.is_some()).unwrap();
        let about = cases.of_txn(with_txn.txn.as_ref().unwrap().id).unwrap();
        assert!(about.iter().any(|c| c.id == with_txn.id));
        // Due dates: the open application due tomorrow is overdue the day after, not before.
        assert!(cases.overdue(MID, now()).unwrap().is_empty());
        let late = cases.overdue(MID, now() + 2 * 86_400_000).unwrap();
        assert_eq!(late.iter().map(|c| c.id).collect::<Vec<_>>(), [waiting.id]);
        // One application of a sale waits for a decision at a time.
        assert!(matches!(
            cases.open(new(1_000)).await,
            Err(CaseError::ApplicationWaiting(id)) if id == waiting.id
        ));
        let rejected = Transition::Reject(Resolution::new("asked twice").unwrap());
        cases
            .transition(waiting.id, "operator-2", rejected, "", None)
            .await
            .unwrap();
        let again = cases.open(new(1_000)).await.unwrap();
        // An assignment leaves out what it does not set, as the case has it when written.
        cases
            .assign(again.id, "operator-2", Some(Some("bob".into())), None)
            .await
            .unwrap();
        let due = now() + 3 * 86_400_000;
        let moved = cases
            .assign(again.id, "operator-3", None, Some(Some(due)))
            .await
            .unwrap();
        assert_eq!(
            (moved.assignee.as_deref(), moved.due_at_ms),
            (Some("bob"), Some(due))
        );
        // Open cases are listed oldest first, as a queue is worked.
        let dispute = cases
            .open(NewCase {
                kind: CaseKind::Dispute,
                refund_fen: None,
                ..new(0)
            })
            .await
            .unwrap();
        let open = cases.still_open(Some(MID)).unwrap();
        assert_eq!(
            open.iter().map(|c| c.id).collect::<Vec<_>>(),
            [again.id, dispute.id]
        );
    });
}

#[test]
fn back_office_refund_is_reversed_on_timeout_and_never_doubled() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let (code, rrn, _) = e.purchase(&card, 8_000).await;
        assert_eq!(code, "00");
        let cases = e.cases();
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        // The issuer applies the refund but its answer is lost: 98, and the switch reverses it
        // (the first reversal's answer is lost too, so it is resent a second later).
        e.sim.faults().drop_next(2);
        let waiting = cases.approve_refund(case.id, "operator-1").await.unwrap();
        assert_eq!(waiting.refund_code.as_deref(), Some("98"));
        assert_eq!(waiting.state, CaseState::WaitingIssuer);
        // The timeline says the outcome is not known yet, in both languages.
        let said = &waiting.entries.last().unwrap().text;
        assert!(said.contains("结果未明（98"), "{said}");
        assert!(said.contains("outcome unknown (98"), "{said}");
        assert!(waiting.refund_in_doubt, "{waiting:#?}");
        let refund_rrn = waiting.refund_rrn.clone().unwrap();
        // The sale's page does not say the refund "did not go through" while it may stand.
        let sale = explain_rrn(e.store().as_ref(), &e.h.directory, &rrn, now()).unwrap();
        let doubt = sale.steps.iter().find(|s| s.kind == "linked_in_doubt");
        let doubt = doubt.unwrap_or_else(|| panic!("{sale:#?}"));
        assert!(doubt.text.en.contains("do not do it again"), "{doubt:?}");
        assert!(doubt.text.zh.contains("请勿再次办理"), "{doubt:?}");
        assert!(
            sale.steps
                .iter()
                .all(|s| !s.text.en.contains("did not go through")),
            "{sale:#?}"
        );
        // Until its reversal is acknowledged the first attempt may stand: no second one.
        assert!(matches!(
            cases.approve_refund(case.id, "operator-1").await,
            Err(resolve::cases::CaseError::RefundInDoubt)
        ));
        // Nor a way round it: the case cannot be closed, and another application for what
        // looks left (the journal does not count a refund in doubt) is refused.
        let why = resolve::cases::Resolution::new("merchant withdrew").unwrap();
        assert!(matches!(
            cases
                .transition(case.id, "operator-2", Transition::Reject(why), "", None)
                .await,
            Err(resolve::cases::CaseError::RefundInDoubt)
        ));
        assert!(matches!(
            cases.open(ten_yuan_refund_application(&rrn)).await,
            Err(resolve::cases::CaseError::RefundInDoubt)
        ));
        assert!(e.reversal_acked(&refund_rrn).await);
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 0);
        // Reversed and acknowledged: no longer in doubt.
        assert!(!cases.get(case.id).unwrap().refund_in_doubt);
        let sale = explain_rrn(e.store().as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert!(
            sale.steps.iter().any(|s| s.kind == "refund_declined"),
            "{sale:#?}"
        );
        // Approved again (a new attempt, a new key): executed once, case resolved.
        let done = cases.approve_refund(case.id, "operator-1").await.unwrap();
        assert_eq!(done.state, CaseState::Resolved, "{done:#?}");
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);

        // Two concurrent calls with one key: one refund.
        let switch = e.switch();
        let (a, b) = tokio::join!(
            switch.back_office_refund(&rrn, 500, "ticket-77"),
            switch.back_office_refund(&rrn, 500, "ticket-77"),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            (a.response_code.as_str(), b.response_code.as_str()),
            ("00", "00")
        );
        assert_eq!(a.rrn, b.rrn);
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_500);
        assert_eq!(
            e.h.store.txn_by_rrn(&rrn).unwrap().unwrap().refunded_fen,
            1_500
        );
    });
}

#[test]
fn voids_and_pre_authorisations_read_in_plain_words() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        let (code, rrn, buy) = e.purchase(&card, 1_500).await;
        assert_eq!(code, "00");
        e.stan += 1;
        let void = Req::void(card.pan.expose_digits(), 1_500, e.stan, buy.stan, &rrn);
        assert_eq!(e.t.send(&void).await.code(), "00");
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::Voided);
        let kinds: Vec<&str> = x.steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["received", "approved", "voided"], "{x:#?}");

        e.stan += 1;
        let pre_auth = Req {
            mti: iso8583::Mti::AUTHORISATION,
            processing: "030000",
            condition: "06",
            message_type: "10",
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), 30_000, e.stan)
        };
        let r = e.t.send(&pre_auth).await;
        assert_eq!(r.code(), "00");
        let rrn = r.text(37).unwrap();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::Approved);
        let hold = x.steps.last().unwrap();
        assert_eq!(hold.kind, "pre_auth_hold");
        assert!(hold.text.en.contains("¥300.00 is held"), "{hold:?}");
        // Thirty-two days later, never completed: expired, the hold released.
        let later = now() + 32 * 86_400_000;
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, later).unwrap();
        assert_eq!(x.outcome, Outcome::PreAuthExpired);
        assert_eq!(x.steps.last().unwrap().kind, "pre_auth_expired");
        // The expiry is on another day than the request: its step shows the date; the
        // request's own steps the time alone.
        let expired = x.steps.last().unwrap();
        assert!(
            expired.time.len() > 8 && expired.time.contains('-'),
            "{expired:?}"
        );
        assert_eq!(x.steps[0].time.len(), 8, "{:?}", x.steps[0]);
        assert!(x.summary.zh.contains("过期"));

        // Voided (a pre-authorisation may be, days later): its hold released, not "the same
        // day" as a sale's void says.
        e.stan += 1;
        let void = Req {
            processing: "200000",
            message_type: "11",
            rrn: Some(rrn.clone()),
            f61: Some(format!("{:06}{:06}", 1, pre_auth.stan)),
            pin: None,
            ..Req {
                stan: e.stan,
                ..pre_auth.clone()
            }
        };
        assert_eq!(e.t.send(&void).await.code(), "00");
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        assert_eq!(x.outcome, Outcome::Voided);
        assert!(x.summary.en.contains("hold is released"), "{:?}", x.summary);
        let voided = x.steps.last().unwrap();
        assert_eq!(voided.kind, "voided");
        assert!(!voided.text.en.contains("same day"), "{voided:?}");

        // Completed, then the completion voided: the pre-authorisation's page says the
        // completion went through and was undone, not that it "did not go through: 00".
        e.stan += 1;
        let held = Req {
            stan: e.stan,
            ..pre_auth.clone()
        };
        let r = e.t.send(&held).await;
        assert_eq!(r.code(), "00");
        let held_rrn = r.text(37).unwrap();
        e.stan += 1;
        let completion = Req {
            condition: "06",
            message_type: "20",
            f61: Some(format!("{:06}{:06}", 1, held.stan)),
            ..Req::purchase(card.pan.expose_digits(), 20_000, e.stan)
        };
        let r = e.t.send(&completion).await;
        assert_eq!(r.code(), "00");
        let completion_rrn = r.text(37).unwrap();
        e.stan += 1;
        let completion_void = Req {
            processing: "200000",
            condition: "06",
            message_type: "21",
            rrn: Some(completion_rrn.clone()),
            f61: Some(format!("{:06}{:06}", 1, completion.stan)),
            ..Req::purchase(card.pan.expose_digits(), 20_000, e.stan)
        };
        assert_eq!(e.t.send(&completion_void).await.code(), "00");
        let x = explain_rrn(store.as_ref(), &e.h.directory, &held_rrn, now()).unwrap();
        let undone = x
            .steps
            .iter()
            .find(|s| s.text.en.contains(&completion_rrn))
            .unwrap_or_else(|| panic!("{x:#?}"));
        assert!(
            undone.text.en.contains("was approved") && undone.text.en.contains("then voided"),
            "{undone:?}"
        );
        assert!(!undone.text.en.contains("did not go through"), "{undone:?}");
    });
}

/// More events within the lag than one poll reads: the tailer still gets through them, and
/// the last one (a decline) is notified. It used to re-read the whole lag from behind its
/// cursor at every poll, so its cursor never moved and nothing later was ever notified.
#[test]
fn the_tailer_gets_through_more_events_than_one_poll_reads() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        for amount in 1..=6 {
            assert_eq!(e.purchase(&card, amount * 100).await.0, "00");
        }
        let (code, declined, _) = e.purchase(&e.card("insufficient_funds"), 700).await;
        assert_eq!(code, "51");
        let mut tailer = Tailer::new(
            e.store(),
            e.directory(),
            Arc::new(SystemClock),
            TailerConfig {
                page_max: 2,
                pages_max: 1,
                ..TailerConfig::default()
            },
        );
        let notified = |store: &dyn Store| {
            store
                .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                .unwrap()
                .iter()
                .any(|o| o.event_type == "transaction.declined" && o.payload.contains(&declined))
        };
        for _ in 0..6 {
            tailer.poll_once().await.unwrap();
        }
        assert!(
            notified(e.store().as_ref()),
            "the decline was never reached"
        );
        // Polling on adds nothing: what was handled is skipped.
        let queued = e
            .store()
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .len();
        for _ in 0..3 {
            tailer.poll_once().await.unwrap();
        }
        assert_eq!(
            e.store()
                .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                .unwrap()
                .len(),
            queued
        );
    });
}

/// Whether the merchant was told of the decline with RRN `rrn`.
fn declined_notified(store: &dyn Store, rrn: &str) -> bool {
    store
        .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
        .unwrap()
        .iter()
        .any(|o| o.event_type == "transaction.declined" && o.payload.contains(rrn))
}

/// A decline like the one with RRN `like`, under trace `stan` and RRN `090000000{stan}`, its
/// event stamped `at_ms`: the records another node (or a held-up write) would commit.
async fn late_decline(store: &dyn Store, like: &str, stan: u32, at_ms: i64) -> Vec<Record> {
    let mut late = store.txn_by_rrn(like).unwrap().unwrap();
    late.id = i64::try_from(store.reserve("txn_id", 1).unwrap().await.unwrap()).unwrap();
    late.rrn = Some(format!("0900000{stan:05}"));
    late.stan = stan;
    late.host_trace = Some(stan);
    let event = Record::Event(EventRow {
        txn_id: late.id,
        at_ms,
        kind: "declined".into(),
        detail: "declined by the issuer: 51".into(),
    });
    vec![Record::InsertTxn(Box::new(late)), event]
}

/// Between full polls the tailer reads again only the last second before what it read: an
/// event that reaches the journal later than that (stamped 5 s back, within the lag) is left to
/// the next full poll, which reads from the cursor and notifies it.
#[test]
fn an_event_that_lands_late_is_found_by_the_next_full_poll() {
    runtime().block_on(async {
        let mut e = start().await;
        let (code, declined, _) = e.purchase(&e.card("insufficient_funds"), 700).await;
        assert_eq!(code, "51");
        let store = e.store();
        let mut tailer = Tailer::new(
            e.store(),
            e.directory(),
            Arc::new(SystemClock),
            TailerConfig {
                full_every: 3,
                ..TailerConfig::default()
            },
        );
        tailer.poll_once().await.unwrap();
        let notified = |rrn: &str| declined_notified(store.as_ref(), rrn);
        assert!(notified(&declined));

        // Another node's decline, its events committed late.
        let late = late_decline(store.as_ref(), &declined, 777, SystemClock.now_ms() - 5_000).await;
        store.submit(late).unwrap().await.unwrap();
        // The two polls in between do not read back that far; the full one does.
        tailer.poll_once().await.unwrap();
        tailer.poll_once().await.unwrap();
        assert!(!notified("090000000777"));
        tailer.poll_once().await.unwrap();
        assert!(
            notified("090000000777"),
            "the late decline was never notified"
        );
    });
}

/// An event this process queued behind a journal that takes no writes (another connection
/// holds SQLite's write lock, as a stalled disk would) until its stamp is further back than the
/// lag: a full poll meanwhile does not move the cursor past it, so once it lands the next full
/// poll notifies it. (Before, the cursor went to the lag's edge and the event was never read.)
#[test]
fn an_event_held_in_the_write_queue_past_the_lag_is_still_notified() {
    runtime().block_on(async {
        let mut e = start().await;
        let (code, declined, _) = e.purchase(&e.card("insufficient_funds"), 700).await;
        assert_eq!(code, "51");
        let store = e.store();
        let clock = Arc::new(ShiftedClock::default());
        let mut tailer = Tailer::new(
            e.store(),
            e.directory(),
            Arc::clone(&clock) as Arc<dyn Clock>,
            TailerConfig {
                full_every: 1,
                ..TailerConfig::default()
            },
        );
        tailer.poll_once().await.unwrap();
        let notified = |rrn: &str| declined_notified(store.as_ref(), rrn);
        assert!(notified(&declined));

        let late = late_decline(store.as_ref(), &declined, 778, clock.now_ms()).await;
        let journal = rusqlite::Connection::open(e.h.dir.path().join("s.db")).unwrap();
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        let landing = store.submit(late).unwrap();
        // Fifteen seconds on (past the ten-second lag), a full poll while it is still queued.
        clock.shift_ms(15_000);
        let polled = tokio::spawn(async move {
            tailer.poll_once().await.unwrap();
            tailer
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        let mut tailer = polled.await.unwrap();
        landing.await.unwrap();
        clock.shift_ms(1_000);
        tailer.poll_once().await.unwrap();
        assert!(
            notified("090000000778"),
            "the decline held in the write queue was never notified"
        );
    });
}

#[test]
fn a_duplicate_is_flagged_when_the_first_payment_is_approved_after_the_second() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let pay = |stan: u32| Req {
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), 2_500, stan)
        };
        // The first payment waits on a slow issuer; meanwhile the cashier runs the card again
        // on a second connection, and that one is approved first.
        e.sim
            .faults()
            .set_latency(Duration::from_millis(200), Duration::from_millis(200));
        let first = pay(91);
        let bytes = e.t.encode(&first, false);
        e.t.stream.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        e.sim.faults().set_latency(Duration::ZERO, Duration::ZERO);
        let mut other = e.h.terminal().await;
        other.keys = e.t.keys.clone();
        let second = other.send(&pay(92)).await;
        assert_eq!(second.code(), "00");
        // The notifications see the second approval while the first is still out.
        let mut tailer = e.tailer();
        tailer.poll_once().await.unwrap();
        let first = e.t.read().await;
        assert_eq!(first.code(), "00");
        let (first_rrn, second_rrn) = (first.text(37).unwrap(), second.text(37).unwrap());
        let store = e.store();
        let (a, b) = (
            store.txn_by_rrn(&first_rrn).unwrap().unwrap(),
            store.txn_by_rrn(&second_rrn).unwrap().unwrap(),
        );
        assert!(a.received_at_ms <= b.received_at_ms);
        assert!(
            a.answered_at_ms > b.answered_at_ms,
            "answered in the other order"
        );
        tailer.poll_once().await.unwrap();
        let flags = e.flagged();
        assert_eq!(flags.len(), 1, "{flags:#?}");
        assert_eq!(flags[0].first.rrn.as_deref(), Some(first_rrn.as_str()));
        assert_eq!(flags[0].second.rrn.as_deref(), Some(second_rrn.as_str()));
        assert_eq!(flags[0].suggested_action, SuggestedAction::VoidSecondToday);
        // The scan finds the pair once, from either payment.
        let day = 86_400_000;
        assert_eq!(
            duplicates::scan(store.as_ref(), MID, now() - day, now() + 1, 600_000)
                .unwrap()
                .len(),
            1
        );

        // Once the first payment is voided, the customer paid once: nothing left to do.
        let void = Req {
            processing: "200000",
            message_type: "23",
            rrn: Some(first_rrn.clone()),
            f61: Some(format!("{:06}{:06}", 1, 91)),
            ..pay(93)
        };
        assert_eq!(e.t.send(&void).await.code(), "00");
        let flags = e.flagged();
        assert_eq!(flags[0].suggested_action, SuggestedAction::NothingLeft);
    });
}

/// Three payments in a row by one card for one amount: flagged as (1, 2) and (2, 3). The
/// merchant voids the middle one; the third still pairs with the first, which stands, and is
/// what the merchant is told to undo (at its own terminal, with the card), not "paid once".
#[test]
fn three_payments_with_the_middle_one_voided_still_show_the_duplicate() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let (code, a, _) = e.purchase(&card, 2_500).await;
        assert_eq!(code, "00");
        let (code, b, b_req) = e.purchase(&card, 2_500).await;
        assert_eq!(code, "00");
        let (code, c, _) = e.purchase(&card, 2_500).await;
        assert_eq!(code, "00");
        e.tailer().poll_once().await.unwrap();
        assert_eq!(e.flagged().len(), 2, "{:#?}", e.flagged());
        e.stan += 1;
        let void = Req {
            pin: Some(card.pin().to_owned()),
            ..Req::void(card.pan.expose_digits(), 2_500, e.stan, b_req.stan, &b)
        };
        assert_eq!(e.t.send(&void).await.code(), "00");
        let standing: Vec<_> = e
            .flagged()
            .into_iter()
            .filter(|f| f.suggested_action != SuggestedAction::NothingLeft)
            .collect();
        assert_eq!(standing.len(), 1, "{standing:#?}");
        assert_eq!(standing[0].first.rrn.as_deref(), Some(a.as_str()));
        assert_eq!(standing[0].second.rrn.as_deref(), Some(c.as_str()));
        assert_eq!(
            standing[0].suggested_action,
            SuggestedAction::VoidSecondToday
        );
        assert!(
            standing[0].advice.en.contains(&format!("terminal {TID}")),
            "{standing:#?}"
        );
        assert!(standing[0].advice.zh.contains(TID), "{standing:#?}");
    });
}

/// Paid, refunded in full, then paid again for the same amount: the card was charged once, so
/// no duplicate is flagged or notified. Refunded in part, the second payment is still one.
#[test]
fn a_payment_refunded_in_full_then_paid_again_is_no_duplicate() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(1);
        let (code, paid, _) = e.purchase(&card, 4_400).await;
        assert_eq!(code, "00");
        let refund = e
            .switch()
            .back_office_refund(&paid, 4_400, "refunded-in-full")
            .await
            .unwrap();
        assert_eq!(refund.response_code, "00");
        assert_eq!(e.purchase(&card, 4_400).await.0, "00");
        let (code, part, _) = e.purchase(&card, 5_500).await;
        assert_eq!(code, "00");
        let refund = e
            .switch()
            .back_office_refund(&part, 1_000, "refunded-in-part")
            .await
            .unwrap();
        assert_eq!(refund.response_code, "00");
        let (_, again, _) = e.purchase(&card, 5_500).await;
        e.tailer().poll_once().await.unwrap();
        let flags = e.flagged();
        let seconds: Vec<_> = flags.iter().map(|f| f.second.rrn.as_deref()).collect();
        assert_eq!(seconds, [Some(again.as_str())], "{flags:#?}");
        // The second refunded in part: what is left of it is what to refund.
        let refund = e
            .switch()
            .back_office_refund(&again, 2_000, "second-in-part")
            .await
            .unwrap();
        assert_eq!(refund.response_code, "00");
        let flag = e.flagged().remove(0);
        assert_eq!(flag.suggested_action, SuggestedAction::RefundSecond);
        assert!(
            flag.advice.zh.contains("剩余的 ¥35.00"),
            "{:?}",
            flag.advice
        );
        assert!(
            flag.advice.en.contains("refund the ¥35.00 left"),
            "{:?}",
            flag.advice
        );
    });
}

#[test]
fn duplicate_purchase_is_flagged_and_notified() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let other = e.healthy(3);
        assert_eq!(e.purchase(&card, 3_300).await.0, "00");
        assert_eq!(e.purchase(&other, 3_300).await.0, "00");
        assert_eq!(e.purchase(&card, 1_000).await.0, "00");
        let (_, second, _) = e.purchase(&card, 3_300).await;
        let mut tailer = e.tailer();
        tailer.poll_once().await.unwrap();
        let store = e.store();
        let flags = e.flagged();
        assert_eq!(flags.len(), 1, "{flags:#?}");
        assert_eq!(flags[0].second.rrn.as_deref(), Some(second.as_str()));
        assert_eq!(flags[0].suggested_action, SuggestedAction::VoidSecondToday);
        // Two equal payments may be two purchases: the merchant checks before undoing one.
        assert!(
            flags[0].advice.zh.contains("请先与顾客核实"),
            "{:?}",
            flags[0].advice
        );
        assert!(
            flags[0].advice.en.contains("first check"),
            "{:?}",
            flags[0].advice
        );
        let outbox = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap();
        let dup: Vec<_> = outbox
            .iter()
            .filter(|o| o.event_type == "duplicate.suspected")
            .collect();
        assert_eq!(dup.len(), 1);
        assert!(dup[0].payload.contains(&second));
        // Polling again adds nothing.
        tailer.poll_once().await.unwrap();
        assert_eq!(
            store
                .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                .unwrap()
                .len(),
            outbox.len()
        );
        // A wider scan agrees; a tiny window finds nothing.
        let day = 86_400_000;
        assert_eq!(
            duplicates::scan(store.as_ref(), MID, now() - day, now() + 1, 600_000)
                .unwrap()
                .len(),
            1
        );
        assert!(
            duplicates::scan(store.as_ref(), MID, now() - day, now() + 1, 0)
                .unwrap()
                .is_empty()
        );
        // Payer lookup: the card the operator types, last four + amount, repeat payers.
        let found = resolve::payer::by_card(
            store.as_ref(),
            e.h.hsm.as_ref(),
            &e.h.directory,
            MID,
            &card.pan,
        )
        .unwrap();
        assert_eq!(found.len(), 3);
        let last4 = card.pan.last4().to_owned();
        let by4 = resolve::payer::by_last4(
            store.as_ref(),
            &e.h.directory,
            MID,
            &last4,
            Some(3_300),
            now() - day,
            now() + 1,
        )
        .unwrap();
        assert_eq!(by4.len(), 2);
        let repeat =
            resolve::payer::repeat_payers(store.as_ref(), MID, now() - day, now() + 1, 2).unwrap();
        assert_eq!(repeat.len(), 1);
        assert_eq!(repeat[0].payments, 3);
        assert_eq!(repeat[0].masked_pan, card.pan.masked().as_str());
        assert!(
            resolve::payer::by_rrn(store.as_ref(), &e.h.directory, "X", &second)
                .unwrap()
                .is_none()
        );
    });
}

/// Headers (lower-cased names) and body of each request a receiver got.
type Requests = Arc<Mutex<Vec<(HashMap<String, String>, String)>>>;

/// A webhook receiver on a real socket: records each request, answers `status`.
struct Receiver {
    addr: std::net::SocketAddr,
    got: Requests,
}

async fn receiver(status: u16) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Requests = Arc::default();
    let log = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse::<usize>()
                        .unwrap();
                    break (i + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                .collect();
            let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
            log.lock().unwrap().push((headers, body));
            let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    Receiver { addr, got }
}

/// A receiver that answers 200, except that it never answers a request whose body holds
/// `hang_on` (it keeps that connection open); each connection served on its own.
async fn receiver_hanging_on(hang_on: &'static str) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Requests = Arc::default();
    let log = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() < length {
                        continue;
                    }
                    if body.contains(hang_on) {
                        std::future::pending::<()>().await;
                    }
                    log.lock().unwrap().push((HashMap::new(), body.to_owned()));
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    Receiver { addr, got }
}

/// A notifier delivering in the background (`Notifier::spawn`) until stopped.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `notifier`'s loop, a pass every `every`.
    fn start(notifier: Notifier, every: Duration) -> Running {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = notifier.spawn(every, stop_rx);
        Running { stop, task }
    }

    /// Stops the loop and waits (5 s at most) for the attempts under way to end.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// One event its receiver never answers (the oldest of three) does not keep the merchant's
/// others waiting for its retries: they are tried first at its retry time, and delivered.
#[test]
fn an_event_its_receiver_hangs_on_does_not_hold_back_the_others() {
    runtime().block_on(async {
        let e = start().await;
        let hanging = receiver_hanging_on("\"case_id\":7000").await;
        e.aim_webhooks(&format!("http://{}/hooks", hanging.addr), b"k")
            .await;
        let store = e.store();
        for case in [7000, 7001, 7002] {
            let event = resolve::outbox::Event::case_updated(case, 1, "open", "x");
            resolve::outbox::enqueue(store.as_ref(), MID, event, now())
                .await
                .unwrap();
        }
        let notifier = e.notifier_to_spawn(NotifierConfig {
            timeout: Duration::from_millis(300),
            backoff_first_ms: 200,
            backoff_last_ms: 400,
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        let running = Running::start(notifier, Duration::from_millis(50));
        let got = Arc::clone(&hanging.got);
        assert!(
            e.h.eventually(5, || got.lock().unwrap().len() == 2).await,
            "the others were held back: {:?}",
            got.lock().unwrap()
        );
        assert!(got.lock().unwrap().iter().all(|(_, b)| !b.contains("7000")));
        running.stop().await;
    });
}

/// The notifier delivers to an `https://` receiver whose certificate chains to the CA
/// certificates it was given (`NotifierConfig::trust`; `serve`'s `webhook_ca_file`), and to no
/// other: the same receiver with this host's CA certificates alone is never sent the event.
#[test]
fn events_reach_an_https_receiver_checked_against_the_notifiers_trust() {
    runtime().block_on(async {
        let e = start().await;
        let (addr, mut got) = tls::tls_receiver("127.0.0.1").await;
        e.aim_webhooks(&format!("https://localhost:{}/hooks", addr.port()), b"k")
            .await;
        let store = e.store();
        let event = resolve::outbox::Event::case_updated(7300, 1, "open", "x");
        resolve::outbox::enqueue(store.as_ref(), MID, event, now())
            .await
            .unwrap();
        // This host's CA certificates do not hold the test CA: refused, retried.
        let config = NotifierConfig {
            timeout: Duration::from_secs(2),
            backoff_first_ms: 50,
            backoff_last_ms: 100,
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        };
        let running = Running::start(
            e.notifier_to_spawn(config.clone()),
            Duration::from_millis(20),
        );
        let refused =
            e.h.eventually(10, || {
                store
                    .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                    .unwrap()
                    .iter()
                    .any(|o| o.attempts > 0)
            })
            .await;
        assert!(refused, "no attempt was made");
        running.stop().await;
        assert!(got.try_recv().is_err(), "sent to a receiver not checked");

        let trusting = NotifierConfig {
            trust: resolve::webhook::Trust::only(&tls::tls_file("ca.pem")).unwrap(),
            ..config
        };
        let running = Running::start(e.notifier_to_spawn(trusting), Duration::from_millis(20));
        let request = tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .expect("no webhook arrived over TLS")
            .unwrap();
        assert!(request.contains("X-Shoudan-Signature: v1="), "{request}");
        assert!(request.contains("\"case_id\":7300"), "{request}");
        running.stop().await;
    });
}

/// A receiver down for good (its port closed): each attempt at one of the merchant's events
/// counts against all of them, so all six are failed (and redrivable) after about
/// `attempts_max` attempts in all, not two at a time while the rest wait untried.
#[test]
fn a_receiver_down_for_good_fails_its_merchants_events_together() {
    runtime().block_on(async {
        let e = start().await;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        e.aim_webhooks(&format!("http://{addr}/hooks"), b"k").await;
        let store = e.store();
        for case in 7100..7106 {
            let event = resolve::outbox::Event::case_updated(case, 1, "open", "x");
            resolve::outbox::enqueue(store.as_ref(), MID, event, now())
                .await
                .unwrap();
        }
        let notifier = e.notifier_to_spawn(NotifierConfig {
            timeout: Duration::from_millis(300),
            backoff_first_ms: 50,
            backoff_last_ms: 100,
            attempts_max: 3,
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        let running = Running::start(notifier, Duration::from_millis(20));
        let items = || {
            store
                .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
                .unwrap()
                .into_iter()
                .filter(|o| o.event_type == "case.updated")
                .collect::<Vec<_>>()
        };
        let all_failed =
            e.h.eventually(10, || {
                let items = items();
                items.len() == 6 && items.iter().all(|o| o.state == "failed")
            })
            .await;
        running.stop().await;
        assert!(all_failed, "{:#?}", items());
        let tried: usize = items()
            .iter()
            .map(|o| store.webhook_deliveries(o.id).unwrap().len())
            .sum();
        // Three attempts in all (attempts_max), not three for each of the six.
        assert!(
            tried <= 3,
            "{tried} attempts to reach a receiver that is gone"
        );
    });
}

#[test]
fn webhooks_to_a_private_address_are_refused_by_default() {
    runtime().block_on(async {
        let mut e = start().await;
        // A merchant aims its webhook at the host's own loopback (a portal, an admin port).
        let inside = receiver(200).await;
        let store = e.store();
        e.aim_webhooks(&format!("http://{}/admin", inside.addr), b"k")
            .await;
        e.decline_for_notification(100).await;
        let notifier = e.notifier(NotifierConfig::default());
        assert_eq!(notifier.deliver_due().await.unwrap(), 1);
        assert!(
            inside.got.lock().unwrap().is_empty(),
            "the POST reached loopback"
        );
        let item = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .pop()
            .unwrap();
        assert_ne!(item.state, "delivered");
        let attempt = store.webhook_deliveries(item.id).unwrap().pop().unwrap();
        assert_eq!(attempt.status, None);
        let error = attempt.error.unwrap_or_default();
        assert!(error.contains("not a public address"), "{error}");
    });
}

/// A merchant, `HANGING_MID`, whose receiver accepts connections and never answers, with
/// `events` notifications due; how many connections it was asked for.
async fn hanging_merchant(e: &Env, events: i64) -> Arc<std::sync::atomic::AtomicUsize> {
    hanging_merchant_as(e, HANGING_MID, 900, events).await
}

/// [`hanging_merchant`] for merchant `mid`, its events about cases from `first_case` on (one
/// notification per case and version).
async fn hanging_merchant_as(
    e: &Env,
    mid: &str,
    first_case: i64,
    events: i64,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let store = e.store();
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&connected);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    resolve::outbox::set_endpoint(
        store.as_ref(),
        e.h.hsm.as_ref(),
        mid,
        &format!("http://{hanging_addr}/hooks"),
        b"k",
        resolve::webhook::Destinations::AnyAddress,
    )
    .await
    .unwrap();
    for n in 0..events {
        let event = resolve::outbox::Event::case_updated(first_case + n, 1, "open", "x");
        resolve::outbox::enqueue(store.as_ref(), mid, event, now())
            .await
            .unwrap();
    }
    connected
}

/// Another merchant's, with a webhook receiver that hangs.
const HANGING_MID: &str = "898110059429999";

#[test]
fn two_nodes_post_each_event_once_and_a_hanging_receiver_holds_up_only_its_merchant() {
    runtime().block_on(async {
        let mut e = start().await;
        let store = e.store();
        let good = receiver(200).await;
        e.aim_webhooks(&format!("http://{}/hooks", good.addr), b"k")
            .await;
        for amount in [101, 102, 103, 104, 105] {
            e.decline_for_notification(amount).await;
        }
        // Another merchant's receiver accepts the connection and never answers.
        hanging_merchant(&e, 2).await;
        // Two nodes' notifiers on one journal, at once.
        let config = NotifierConfig {
            timeout: Duration::from_secs(2),
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        };
        let (a, b) = (e.notifier(config.clone()), e.notifier(config));
        let started = tokio::time::Instant::now();
        let (made_a, made_b) = tokio::join!(a.deliver_due(), b.deliver_due());
        let took = started.elapsed();
        // Five declines and the first attempt at each hanging event, each made once.
        assert_eq!(made_a.unwrap() + made_b.unwrap(), 5 + 2);
        let got = good.got.lock().unwrap().len();
        assert_eq!(got, 5, "each event posted once");
        let delivered = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .iter()
            .filter(|o| o.state == "delivered")
            .count();
        assert_eq!(delivered, 5);
        for item in store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
        {
            assert_eq!(store.webhook_deliveries(item.id).unwrap().len(), 1);
        }
        // The hanging receiver's events took their timeouts (one on each node: a node's next
        // event of that merchant is put off once the first is not answered), while the good
        // receiver's merchant was served beside them.
        assert!(took >= Duration::from_secs(2), "{took:?}");
        let arrived: Vec<i64> = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .iter()
            .filter_map(|o| o.delivered_at_ms)
            .collect();
        let pass_start = now() - i64::try_from(took.as_millis()).unwrap();
        assert!(
            arrived.iter().all(|at| at - pass_start < 1_500),
            "delivered {arrived:?}, pass from {pass_start}"
        );
    });
}

/// The background notifier does not wait for a merchant whose receiver hangs before it serves
/// the others again: an event of another merchant that comes while the hanging one's attempts
/// take their timeouts is delivered at the next pass, not after them.
#[test]
fn the_background_notifier_serves_others_while_one_receiver_hangs() {
    runtime().block_on(async {
        let mut e = start().await;
        let good = receiver(200).await;
        e.aim_webhooks(&format!("http://{}/hooks", good.addr), b"k")
            .await;
        // Four events whose attempts take 2 s each: 8 s of one merchant's task.
        let connected = hanging_merchant(&e, 4).await;
        let notifier = e.notifier_to_spawn(NotifierConfig {
            timeout: Duration::from_secs(2),
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        let running = Running::start(notifier, Duration::from_millis(50));
        let waiting = Arc::clone(&connected);
        assert!(
            e.h.eventually(5, || waiting.load(std::sync::atomic::Ordering::SeqCst) > 0)
                .await,
            "the hanging receiver was never tried"
        );
        // Now the good merchant's event: delivered well before the hanging attempts end.
        let enqueued = tokio::time::Instant::now();
        e.decline_for_notification(100).await;
        let got = Arc::clone(&good.got);
        assert!(
            e.h.eventually(10, || got.lock().unwrap().len() == 1).await,
            "never delivered"
        );
        let took = enqueued.elapsed();
        assert!(took < Duration::from_millis(1_500), "{took:?}");
        // Stopping: the attempt under way ends, no other is begun (an aborted one would be
        // made again when its claim lapses: a duplicate for the receiver).
        let at_stop = connected.load(std::sync::atomic::Ordering::SeqCst);
        running.stop().await;
        assert_eq!(connected.load(std::sync::atomic::Ordering::SeqCst), at_stop);
    });
}

/// A receiver on its own port that answers 200 to every request `delay` after reading it, many
/// at once: how many requests it has had, and the most it held at one time.
async fn slow_receiver(
    delay: Duration,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let (counted, held) = (Arc::clone(&seen), Arc::clone(&most));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (counted, held, holding) = (
                Arc::clone(&counted),
                Arc::clone(&held),
                Arc::clone(&holding),
            );
            tokio::spawn(async move {
                if read_http_request(&mut stream).await.is_none() {
                    return;
                }
                counted.fetch_add(1, SeqCst);
                let at_once = holding.fetch_add(1, SeqCst) + 1;
                held.fetch_max(at_once, SeqCst);
                tokio::time::sleep(delay).await;
                holding.fetch_sub(1, SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, seen, most)
}

/// One HTTP request read whole (head and `Content-Length` body); `None` if the peer closed or
/// failed first.
async fn read_http_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= i + 4 + length {
                return Some(buf);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One vendor's host holding more merchants' receivers than one read of due merchants holds
/// (`DUE_MERCHANTS_READ`), all answering (200) but 2 s late, every merchant with an event: they
/// take `MERCHANTS_PER_RECEIVER_HOST` places at a time, not every one, and another merchant's
/// event, newer than all of theirs, goes out while theirs are still being delivered (which
/// takes minutes at four at a time).
#[test]
fn one_slow_vendors_receivers_cannot_take_every_place() {
    use std::sync::atomic::Ordering::SeqCst;
    let vendor_merchants = resolve::outbox::DUE_MERCHANTS_READ as usize + 100;
    runtime().block_on(async {
        let mut e = start().await;
        let good = receiver(200).await;
        e.aim_webhooks(&format!("http://{}/hooks", good.addr), b"k")
            .await;
        let (vendor, seen, most) = slow_receiver(Duration::from_secs(2)).await;
        let store = e.store();
        // Written at once (the writer groups them), not one commit after another.
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..vendor_merchants {
            let (store, hsm) = (Arc::clone(&store), Arc::clone(&e.h.hsm));
            writes.spawn(async move {
                let mid = format!("8981100595{n:05}");
                resolve::outbox::set_endpoint(
                    store.as_ref(),
                    hsm.as_ref(),
                    &mid,
                    // One vendor: the path is no part of what they share.
                    &format!("http://{vendor}/hooks/{n}"),
                    b"k",
                    resolve::webhook::Destinations::AnyAddress,
                )
                .await
                .unwrap();
                let case = 10_000 * (i64::try_from(n).unwrap() + 1);
                let event = resolve::outbox::Event::case_updated(case, 1, "open", "x");
                resolve::outbox::enqueue(store.as_ref(), &mid, event, now())
                    .await
                    .unwrap();
            });
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap();
        }
        // Patient: a POST cut off by its timeout would free its place while the vendor still
        // holds the request, and the vendor would see a fifth at once.
        let notifier = e.notifier_to_spawn(NotifierConfig {
            timeout: Duration::from_secs(10),
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        let running = Running::start(notifier, Duration::from_millis(50));
        let vendor_busy = Arc::clone(&seen);
        assert!(
            e.h.eventually(5, || vendor_busy.load(SeqCst)
                >= resolve::outbox::MERCHANTS_PER_RECEIVER_HOST)
                .await,
            "the vendor was never asked"
        );
        e.decline_for_notification(100).await;
        let got = Arc::clone(&good.got);
        assert!(
            e.h.eventually(10, || got.lock().unwrap().len() == 1).await,
            "never delivered"
        );
        let vendor_done = seen.load(SeqCst);
        running.stop().await;
        assert!(vendor_done < vendor_merchants, "{vendor_done}");
        assert_eq!(
            most.load(SeqCst),
            resolve::outbox::MERCHANTS_PER_RECEIVER_HOST
        );
    });
}

/// As many merchants as the notifier serves at once, each with a receiver that hangs and a
/// backlog: each of them takes one attempt's timeout and then waits for its retry, so another
/// merchant's event is delivered after one timeout, not after all their backlogs' timeouts.
#[test]
fn receivers_that_hang_cannot_keep_every_place_taken() {
    runtime().block_on(async {
        let mut e = start().await;
        let good = receiver(200).await;
        e.aim_webhooks(&format!("http://{}/hooks", good.addr), b"k")
            .await;
        let mut tried = Vec::new();
        for n in 0..resolve::outbox::MERCHANTS_AT_ONCE {
            let mid = format!("8981100594{n:05}");
            let first_case = 1_000 * (i64::try_from(n).unwrap() + 1);
            tried.push(hanging_merchant_as(&e, &mid, first_case, 8).await);
        }
        let notifier = e.notifier_to_spawn(NotifierConfig {
            timeout: Duration::from_secs(2),
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        let running = Running::start(notifier, Duration::from_millis(50));
        let all_tried = tried.clone();
        assert!(
            e.h.eventually(5, || all_tried
                .iter()
                .all(|c| c.load(std::sync::atomic::Ordering::SeqCst) > 0))
                .await,
            "not every hanging receiver was tried: {:?}",
            tried
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
                .collect::<Vec<_>>()
        );
        // Every place is taken by a hanging receiver now; the good merchant's event comes.
        let enqueued = tokio::time::Instant::now();
        e.decline_for_notification(100).await;
        let got = Arc::clone(&good.got);
        assert!(
            e.h.eventually(10, || got.lock().unwrap().len() == 1).await,
            "never delivered"
        );
        let took = enqueued.elapsed();
        // One timeout (2 s) and a pass, not the eight timeouts of each backlog.
        assert!(took < Duration::from_secs(4), "{took:?}");
        running.stop().await;
    });
}

#[test]
fn webhooks_are_signed_and_failing_receivers_are_retried() {
    runtime().block_on(async {
        let mut e = start().await;
        let secret = b"teahouse-webhook-secret";
        let good = receiver(200).await;
        let store = e.store();
        e.aim_webhooks(&format!("http://{}/hooks/shoudan", good.addr), secret)
            .await;
        let rrn = e.decline_for_notification(100).await;
        // Delays long enough to tell a retry that waited from one that did not.
        let (first_ms, last_ms) = (150, 300);
        let notifier = e.notifier(NotifierConfig {
            backoff_first_ms: first_ms,
            backoff_last_ms: last_ms,
            attempts_max: 3,
            // The test's receivers are on loopback.
            destinations: resolve::webhook::Destinations::AnyAddress,
            ..NotifierConfig::default()
        });
        assert_eq!(notifier.deliver_due().await.unwrap(), 1);
        {
            let got = good.got.lock().unwrap();
            assert_eq!(got.len(), 1);
            let (headers, body) = &got[0];
            let ts: i64 = headers["x-shoudan-timestamp"].parse().unwrap();
            let sig = &headers["x-shoudan-signature"];
            assert!(resolve::webhook::verify(
                secret,
                ts,
                body.as_bytes(),
                sig,
                now() / 1000,
                300
            ));
            assert!(!resolve::webhook::verify(
                b"wrong secret",
                ts,
                body.as_bytes(),
                sig,
                now() / 1000,
                300
            ));
            assert_eq!(headers["x-shoudan-event-type"], "transaction.declined");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["type"], "transaction.declined");
            assert_eq!(json["mid"], MID);
            assert_eq!(json["data"]["transaction"]["rrn"], rrn.as_str());
            assert_eq!(json["data"]["diagnosis"]["code"], "51");
            // As the API and the CLI give it: not only whether, but when.
            let d = &json["data"]["diagnosis"];
            assert_eq!(d["contact_issuer"], false);
            assert_eq!(d["contact_issuer_condition"], "no");
            assert!(
                d["contact_when"]["zh"]
                    .as_str()
                    .unwrap()
                    .starts_with("不需要"),
                "{d}"
            );
            assert!(
                d["meaning"]["en"].as_str().is_some_and(|m| !m.is_empty()),
                "{d}"
            );
            assert!(!body.contains(e.card("insufficient_funds").pan.expose_digits()));
        }
        let item = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(item.state, "delivered");
        assert_eq!(
            store.webhook_deliveries(item.id).unwrap()[0].status,
            Some(200)
        );

        // A receiver that answers 500: retried with backoff, every attempt logged, then failed.
        let bad = receiver(500).await;
        e.aim_webhooks(&format!("http://{}/hooks", bad.addr), secret)
            .await;
        e.decline_for_notification(200).await;
        let item = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .find(|o| o.state == "pending")
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .iter()
            .any(|o| o.id == item.id && o.state == "pending")
        {
            assert!(tokio::time::Instant::now() < deadline, "never gave up");
            if notifier.deliver_due().await.unwrap() > 0 {
                // Just failed: not due again before its delay.
                assert_eq!(notifier.deliver_due().await.unwrap(), 0);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = store.webhook_deliveries(item.id).unwrap();
        assert_eq!(log.len(), 3, "{log:#?}");
        assert!(log.iter().all(|d| d.status == Some(500)));
        assert_eq!(bad.got.lock().unwrap().len(), 3);
        let failed = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .find(|o| o.id == item.id)
            .unwrap();
        assert_eq!(failed.state, "failed");
        assert_eq!(failed.attempts, 3);
        // Backoff: each retry waited at least the configured delay after the previous one,
        // doubling up to the last.
        assert!(log[1].at_ms - log[0].at_ms >= first_ms, "{log:#?}");
        assert!(log[2].at_ms - log[1].at_ms >= last_ms, "{log:#?}");

        // The receiver is back: the merchant sends the failed one again, and it arrives. Only
        // a failed one (or one that found no endpoint), and only the merchant's own.
        let resolver = resolve::Resolver::new(
            e.store(),
            Arc::clone(&e.h.hsm) as Arc<dyn Hsm>,
            e.directory(),
            Arc::new(SystemClock),
        );
        assert!(matches!(
            resolver.redrive("898110059420002", item.id).await,
            Err(resolve::ResolveError::NotVisible(_))
        ));
        let again = resolver.redrive(MID, item.id).await.unwrap();
        assert_eq!((again.state.as_str(), again.attempts), ("pending", 3));
        assert!(matches!(
            resolver.redrive(MID, item.id).await,
            Err(resolve::ResolveError::NotRedrivable { .. })
        ));
        // Sent again, it has its retries afresh: still failing, it is retried, not given up
        // after one attempt.
        assert_eq!(notifier.deliver_due().await.unwrap(), 1);
        let retried = store.outbox_item(item.id).unwrap().unwrap();
        assert_eq!((retried.state.as_str(), retried.attempts), ("pending", 4));
        e.aim_webhooks(&format!("http://{}/hooks", good.addr), secret)
            .await;
        tokio::time::sleep(Duration::from_millis(u64::try_from(first_ms).unwrap() + 50)).await;
        assert_eq!(notifier.deliver_due().await.unwrap(), 1);
        let delivered = store.outbox_item(item.id).unwrap().unwrap();
        assert_eq!(
            (delivered.state.as_str(), delivered.attempts),
            ("delivered", 5)
        );
        assert_eq!(store.webhook_deliveries(item.id).unwrap().len(), 5);
        assert_eq!(good.got.lock().unwrap().len(), 2);
    });
}

#[test]
fn background_tasks_deliver_without_being_driven() {
    runtime().block_on(async {
        let mut e = start().await;
        let good = receiver(204).await;
        e.aim_webhooks(&format!("http://{}/", good.addr), b"k")
            .await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = resolve::outbox::spawn_background(
            e.store(),
            Arc::clone(&e.h.hsm) as Arc<dyn Hsm>,
            e.directory(),
            Arc::new(SystemClock),
            resolve::webhook::Destinations::AnyAddress,
            resolve::webhook::Trust::System,
            stop_rx,
        );
        let (code, rrn, _) = e.purchase(&e.card("lost"), 100).await;
        assert_ne!(code, "00");
        let got = Arc::clone(&good.got);
        assert!(
            e.h.eventually(10, || got.lock().unwrap().len() == 1).await,
            "no webhook arrived"
        );
        assert!(good.got.lock().unwrap()[0].1.contains(&rrn));
        stop.send(true).unwrap();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        }
    });
}

/// A back office whose refund lands while someone else writes on the case (a merchant's
/// message through another node), so the approval's first write of the result conflicts.
struct Interleaved {
    inner: Arc<dyn RefundExecutor>,
    other: CaseService,
    case_id: Mutex<Option<i64>>,
    /// Instead of the message: another operator rejects the case.
    reject: bool,
}

impl RefundExecutor for Interleaved {
    fn refund<'a>(
        &'a self,
        original_rrn: &'a str,
        amount_fen: i64,
        idempotency_key: &'a str,
    ) -> resolve::cases::RefundFuture<'a> {
        Box::pin(async move {
            let answer = self
                .inner
                .refund(original_rrn, amount_fen, idempotency_key)
                .await;
            let id = *self.case_id.lock().unwrap();
            if let Some(id) = id {
                if self.reject {
                    let why = resolve::cases::Resolution::new("not eligible").unwrap();
                    self.other
                        .transition(id, "operator-3", Transition::Reject(why), "", None)
                        .await
                        .unwrap();
                } else {
                    self.other
                        .add_entry(id, "merchant", "any news?", Vec::new())
                        .await
                        .unwrap();
                }
            }
            answer
        })
    }
}

/// A sale of 60.00 and a refund application of 10.00 on it, approved by `operator-2` through a
/// back office whose refund lands while someone else acts on the case (`reject`: another
/// operator rejects it; otherwise the merchant writes a message): the service that approved,
/// the approval's answer, and the sale's RRN.
async fn approved_while_another_acts(
    e: &mut Env,
    reject: bool,
) -> (CaseService, resolve::cases::Case, String) {
    let card = e.healthy(3);
    let (code, rrn, _) = e.purchase(&card, 6_000).await;
    assert_eq!(code, "00");
    let back_office = Arc::new(e.switch().back_office()) as Arc<dyn RefundExecutor>;
    let other = CaseService::new(
        e.store(),
        e.directory(),
        Arc::clone(&back_office),
        Arc::new(SystemClock),
    );
    let interleaved = Arc::new(Interleaved {
        inner: back_office,
        other,
        case_id: Mutex::new(None),
        reject,
    });
    let cases = CaseService::new(
        e.store(),
        e.directory(),
        Arc::clone(&interleaved) as Arc<dyn RefundExecutor>,
        Arc::new(SystemClock),
    );
    let case = cases
        .open(NewCase {
            kind: CaseKind::RefundApplication,
            mid: MID.to_owned(),
            rrn: Some(rrn.clone()),
            txn_id: None,
            title: "one item returned".to_owned(),
            who: "merchant".to_owned(),
            text: "refund 10.00 of 60.00".to_owned(),
            attachments: Vec::new(),
            assignee: None,
            due_at_ms: None,
            refund_fen: Some(1_000),
        })
        .await
        .unwrap();
    *interleaved.case_id.lock().unwrap() = Some(case.id);
    let done = cases.approve_refund(case.id, "operator-2").await.unwrap();
    (cases, done, rrn)
}

#[test]
fn refund_result_is_recorded_despite_a_concurrent_case_edit_so_a_retry_cannot_refund_twice() {
    runtime().block_on(async {
        let mut e = start().await;
        let (cases, done, rrn) = approved_while_another_acts(&mut e, false).await;
        assert_eq!(done.refund_code.as_deref(), Some("00"), "{done:#?}");
        assert_eq!(done.state, CaseState::Resolved);
        assert!(done.entries.iter().any(|x| x.text == "any news?"));
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
        // The operator clicks again: the case knows the refund ran; nothing is refunded twice.
        assert!(cases.approve_refund(done.id, "operator-2").await.is_err());
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
    });
}

/// Another operator rejects the case while its approved refund is at the issuer: the refund
/// ran, so its result is written on the case, but the rejection stands (a closed case is not
/// reopened as resolved) and the timeline says from which state it was written.
#[test]
fn a_refund_that_ran_while_its_case_was_rejected_leaves_the_rejection_standing() {
    runtime().block_on(async {
        let mut e = start().await;
        let (_, done, rrn) = approved_while_another_acts(&mut e, true).await;
        assert_eq!(done.state, CaseState::Rejected, "{done:#?}");
        assert_eq!(done.refund_code.as_deref(), Some("00"));
        let last = &done.entries.last().unwrap().text;
        assert!(
            last.starts_with("[已驳回，工单结束后执行 / rejected after the case was closed]"),
            "{last}"
        );
        assert!(last.contains("已由收单机构批准"), "{last}");
        // Who approved is on the case, not in its words (which merchants read).
        assert!(!last.contains("operator-"), "{last}");
        assert_eq!(done.approved_by.as_deref(), Some("operator-2"));
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
    });
}

/// A back office that answers from a script and keeps the keys it was asked under.
struct Scripted {
    answers: Mutex<Vec<switch::BackOfficeRefund>>,
    keys: Mutex<Vec<String>>,
}

impl RefundExecutor for Scripted {
    fn refund<'a>(
        &'a self,
        _original_rrn: &'a str,
        _amount_fen: i64,
        idempotency_key: &'a str,
    ) -> resolve::cases::RefundFuture<'a> {
        Box::pin(async move {
            self.keys.lock().unwrap().push(idempotency_key.to_owned());
            Ok(self.answers.lock().unwrap().remove(0))
        })
    }
}

/// A refund refused before the switch journalled it (96, no journal id) leaves the key of the
/// next attempt where the last journalled attempt put it: the next approval is not sent under
/// the first attempt's key, which the switch would answer with that attempt's old decline.
#[test]
fn a_refund_refused_before_the_journal_does_not_bring_back_an_earlier_attempts_key() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(3);
        let (code, rrn, _) = e.purchase(&card, 6_000).await;
        assert_eq!(code, "00");
        let answer = |txn_id: Option<i64>, code: &str| switch::BackOfficeRefund {
            txn_id,
            rrn: None,
            response_code: code.to_owned(),
            auth_code: None,
            state: None,
            tid: "BACKOFFC".to_owned(),
            batch_no: 1,
            stan: 1,
        };
        let scripted = Arc::new(Scripted {
            answers: Mutex::new(vec![
                answer(Some(10), "05"),
                answer(None, "96"),
                answer(Some(12), "00"),
            ]),
            keys: Mutex::new(Vec::new()),
        });
        let cases = CaseService::new(
            e.store(),
            e.directory(),
            Arc::clone(&scripted) as Arc<dyn RefundExecutor>,
            Arc::new(SystemClock),
        );
        let case = cases
            .open(NewCase {
                kind: CaseKind::RefundApplication,
                mid: MID.to_owned(),
                rrn: Some(rrn),
                txn_id: None,
                title: "one item returned".to_owned(),
                who: "merchant".to_owned(),
                text: "refund 10.00 of 60.00".to_owned(),
                attachments: Vec::new(),
                assignee: None,
                due_at_ms: None,
                refund_fen: Some(1_000),
            })
            .await
            .unwrap();
        for _ in 0..3 {
            cases.approve_refund(case.id, "operator-2").await.unwrap();
        }
        let keys = scripted.keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 3);
        assert_ne!(keys[2], keys[0], "{keys:?}");
        assert_eq!(cases.get(case.id).unwrap().state, CaseState::Resolved);
    });
}

/// A refund the switch refused itself (61: over what is left to refund, never sent) is
/// explained on the case as the transaction's page explains it, not by the code's own entry
/// (the issuer's "exceeds amount limit", the cardholder to act).
#[test]
fn a_refund_refused_by_the_switch_itself_is_explained_as_its_refusal() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(3);
        let (code, rrn, _) = e.purchase(&card, 6_000).await;
        assert_eq!(code, "00");
        let over = e
            .switch()
            .back_office_refund(&rrn, 7_000, "ticket-over")
            .await
            .unwrap();
        assert_eq!(over.response_code, "61");
        let row = e.store().txn(over.txn_id.unwrap()).unwrap().unwrap();
        assert_eq!(row.sent_at_ms, None);
        let scripted = Arc::new(Scripted {
            answers: Mutex::new(vec![over]),
            keys: Mutex::new(Vec::new()),
        });
        let cases = CaseService::new(
            e.store(),
            e.directory(),
            Arc::clone(&scripted) as Arc<dyn RefundExecutor>,
            Arc::new(SystemClock),
        );
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        let refused = cases.approve_refund(case.id, "operator-2").await.unwrap();
        let text = &refused.entries.last().unwrap().text;
        assert!(
            text.contains("Refund over what is left to refund"),
            "{text}"
        );
        assert!(text.contains("退货金额超过可退金额"), "{text}");
        assert!(!text.contains("limit"), "{text}");
    });
}

/// The machine's clock moved on by `days`.
struct DaysLater(i64);

impl Clock for DaysLater {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0 * 86_400_000
    }
}

/// A sale past the refund limit (the switch answers its refunds 25) takes no refund
/// application, and one opened before the limit passed is not sent once it has.
#[test]
fn a_sale_past_the_refund_limit_takes_no_refund_application() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(3);
        let (code, rrn, _) = e.purchase(&card, 6_000).await;
        assert_eq!(code, "00");
        let back_office = Arc::new(e.switch().back_office()) as Arc<dyn RefundExecutor>;
        let cases_at = |days: i64| {
            CaseService::new(
                e.store(),
                e.directory(),
                Arc::clone(&back_office),
                Arc::new(DaysLater(days)),
            )
        };
        let application = || NewCase {
            kind: CaseKind::RefundApplication,
            mid: MID.to_owned(),
            rrn: Some(rrn.clone()),
            txn_id: None,
            title: "returned".to_owned(),
            who: "merchant".to_owned(),
            text: "refund 10.00".to_owned(),
            attachments: Vec::new(),
            assignee: None,
            due_at_ms: None,
            refund_fen: Some(1_000),
        };
        let limit = switch::REFUND_DAYS_MAX;
        let late = cases_at(limit + 2).open(application()).await;
        assert!(matches!(late, Err(CaseError::PastRefundLimit)), "{late:?}");
        // Opened in time, approved too late: refused before anything is sent.
        let case = cases_at(0).open(application()).await.unwrap();
        let approved = cases_at(limit + 2)
            .approve_refund(case.id, "operator-2")
            .await;
        assert!(
            matches!(approved, Err(CaseError::PastRefundLimit)),
            "{approved:?}"
        );
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 0);
        // Within the limit it goes through.
        let done = cases_at(1)
            .approve_refund(case.id, "operator-2")
            .await
            .unwrap();
        assert_eq!(done.refund_code.as_deref(), Some("00"), "{done:?}");
    });
}

/// A case's timeline takes a bounded number of entries from people: past it, a new case.
#[test]
fn a_case_takes_a_bounded_number_of_entries() {
    runtime().block_on(async {
        let mut e = start().await;
        let (code, rrn, _) = e.purchase(&e.card("lost"), 100).await;
        assert_ne!(code, "00");
        let cases = e.cases();
        let case = cases
            .open(NewCase {
                kind: CaseKind::IssuerInquiry,
                mid: MID.to_owned(),
                rrn: Some(rrn),
                txn_id: None,
                title: "why".to_owned(),
                who: "merchant".to_owned(),
                text: "why declined?".to_owned(),
                attachments: Vec::new(),
                assignee: None,
                due_at_ms: None,
                refund_fen: None,
            })
            .await
            .unwrap();
        for n in 1..resolve::cases::ENTRIES_MAX {
            cases
                .add_entry(case.id, "merchant", &format!("any news? {n}"), Vec::new())
                .await
                .unwrap();
        }
        assert!(matches!(
            cases
                .add_entry(case.id, "merchant", "and now?", Vec::new())
                .await,
            Err(CaseError::TooManyEntries)
        ));
        assert_eq!(
            cases.get(case.id).unwrap().entries.len(),
            resolve::cases::ENTRIES_MAX
        );
    });
}

/// The merchant applies for a refund of ¥10.00 of the sale with RRN `rrn`.
fn ten_yuan_refund_application(rrn: &str) -> NewCase {
    NewCase {
        kind: CaseKind::RefundApplication,
        mid: MID.to_owned(),
        rrn: Some(rrn.to_owned()),
        txn_id: None,
        title: "wrong amount keyed".to_owned(),
        who: "merchant".to_owned(),
        text: "refund 10.00".to_owned(),
        attachments: Vec::new(),
        assignee: None,
        due_at_ms: None,
        refund_fen: Some(1_000),
    }
}

/// The back office as a refund that reached the issuer but whose answer could not be read
/// would leave it: answered 96, with its reversal queued (here the answer was lost, and the
/// 98 is reported as 96).
struct UnreadableAnswer(switch::BackOffice);

impl RefundExecutor for UnreadableAnswer {
    fn refund<'a>(
        &'a self,
        original_rrn: &'a str,
        amount_fen: i64,
        idempotency_key: &'a str,
    ) -> resolve::cases::RefundFuture<'a> {
        Box::pin(async move {
            let mut result = self
                .0
                .refund(original_rrn, amount_fen, idempotency_key)
                .await?;
            if result.response_code == "98" {
                result.response_code = "96".to_owned();
            }
            Ok(result)
        })
    }
}

/// A refund answered 96 whose reversal is still owed may have been made: the case takes no
/// second approval until that reversal is acknowledged.
#[test]
fn a_refund_answered_96_with_its_reversal_owed_takes_no_second_approval() {
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(2);
        let (code, rrn, _) = e.purchase(&card, 8_000).await;
        assert_eq!(code, "00");
        let back_office = Arc::new(UnreadableAnswer(e.switch().back_office()));
        let cases = CaseService::new(e.store(), e.directory(), back_office, Arc::new(SystemClock));
        let case = cases.open(ten_yuan_refund_application(&rrn)).await.unwrap();
        e.sim.faults().drop_next(2);
        let first = cases.approve_refund(case.id, "operator-1").await.unwrap();
        assert_eq!(first.refund_code.as_deref(), Some("96"));
        // Its reversal owed, the case says the outcome is not known, not "not executed".
        let said = &first.entries.last().unwrap().text;
        assert!(said.contains("结果未明（96"), "{said}");
        assert!(
            first.refund_in_doubt && !first.refund_reversal_refused,
            "{first:#?}"
        );
        assert!(matches!(
            cases.approve_refund(case.id, "operator-2").await,
            Err(resolve::cases::CaseError::RefundInDoubt)
        ));
        let refund_rrn = first.refund_rrn.clone().unwrap();
        assert!(e.reversal_acked(&refund_rrn).await);
        let done = cases.approve_refund(case.id, "operator-2").await.unwrap();
        assert_eq!(done.state, CaseState::Resolved, "{done:#?}");
        assert_eq!(e.issuer_txn(&rrn).unwrap().refunded, 1_000);
    });
}

/// Shoudan's own 91 (its line to the issuer down, nothing answered) is diagnosed as such: the
/// acquirer restores the line, nobody calls the issuer. The issuer's own 91 keeps the code's
/// entry.
#[test]
fn a_line_down_to_the_issuer_is_shoudans_91() {
    use domain::diagnosis::{FailureKind, Subject};
    runtime().block_on(async {
        let mut e = start().await;
        let card = e.healthy(0);
        e.server.take().unwrap().shutdown().await;
        e.sim.faults().disconnect_all();
        let mut down = None;
        for _ in 0..50 {
            let (code, rrn, _) = e.purchase(&card, 300).await;
            if code == "91" {
                down = Some(rrn);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rrn = down.expect("never answered 91 with the issuer's server stopped");
        let store = e.store();
        let x = explain_rrn(store.as_ref(), &e.h.directory, &rrn, now()).unwrap();
        let d = x.diagnosis.unwrap();
        assert_eq!(
            d.subject,
            Subject::Failure(FailureKind::IssuerLinkDown),
            "{x:#?}"
        );
        assert!(!d.contact_issuer.recommended());
        // The declined webhook says the same.
        let mut tailer = e.tailer();
        tailer.poll_once().await.unwrap();
        tailer.poll_once().await.unwrap();
        let told = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .find(|o| o.event_type == "transaction.declined" && o.payload.contains(&rrn))
            .expect("no webhook event for the 91");
        assert!(
            told.payload.contains("issuer-link-down"),
            "{}",
            told.payload
        );
    });
}

/// The merchant's payout `key` of 123.45 in `state`, its account frozen.
fn frozen_payout(key: &str, state: store::settlement::PayoutState) -> Record {
    use store::settlement::{PayoutRow, SettlementRecord};
    Record::Settlement(SettlementRecord::NewPayout(PayoutRow {
        key: key.to_owned(),
        mid: MID.to_owned(),
        payout_date: "20261201".to_owned(),
        cutoff_date: "20261130".to_owned(),
        amount_fen: 12_345,
        state,
        attempts: 1,
        next_attempt_ms: 0,
        account_version: 1,
        account_masked: "6222****2347".to_owned(),
        bank_reference: None,
        sent_to: None,
        failure: Some("payout-account-frozen".to_owned()),
        first_attempt_ms: None,
        created_at_ms: now(),
        updated_at_ms: now(),
    }))
}

/// Payout event `id`: payout `key` failed at `at_ms`, its account frozen.
fn payout_failed(id: i64, key: &str, at_ms: i64) -> Record {
    use store::settlement::{PayoutEventRow, SettlementRecord};
    Record::Settlement(SettlementRecord::PayoutEvent(PayoutEventRow {
        id,
        at_ms,
        mid: MID.to_owned(),
        payout_key: key.to_owned(),
        kind: "failed".to_owned(),
        failure: Some("payout-account-frozen".to_owned()),
        detail: "account frozen".to_owned(),
    }))
}

/// A payout event the payout tail cannot read (its payout's state one this node does not know,
/// as a newer node might write) fails the poll, but not the journal's tail: a decline is still
/// notified.
#[test]
fn an_unreadable_payout_does_not_stop_the_journals_notifications() {
    use store::settlement::PayoutState;
    runtime().block_on(async {
        let mut e = start().await;
        let store = e.store();
        let key = format!("{MID}:20261201");
        store
            .submit(vec![
                frozen_payout(&key, PayoutState::Held),
                payout_failed(1, &key, now()),
            ])
            .unwrap()
            .await
            .unwrap();
        let journal = rusqlite::Connection::open(e.h.dir.path().join("s.db")).unwrap();
        journal
            .execute("UPDATE payouts SET state = 'parked' WHERE key = ?1", [&key])
            .unwrap();
        let (code, declined, _) = e.purchase(&e.card("insufficient_funds"), 700).await;
        assert_eq!(code, "51");
        let mut tailer = e.tailer();
        assert!(tailer.poll_once().await.is_err(), "the payout was read");
        let notified = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .iter()
            .any(|o| o.event_type == "transaction.declined" && o.payload.contains(&declined));
        assert!(notified, "the decline waited behind the payout");
    });
}

/// The payout runs' failures reach their merchant's notifications: from the week before the
/// tail's first reading on (older ones are not told as new, on any later poll either), each
/// as its payout stands (one released since is no longer failed), and a poll bounded to one
/// event still gets past those it read again behind its cursor.
#[test]
fn payout_failures_are_told_once_from_the_week_before_the_first_reading() {
    use store::settlement::PayoutState;
    runtime().block_on(async {
        let e = start().await;
        let store = e.store();
        let day_ms = 86_400_000;
        let old = format!("{MID}:20261101");
        let recent = format!("{MID}:20261201");
        let released = format!("{MID}:20261202");
        store
            .submit(vec![
                frozen_payout(&old, PayoutState::Held),
                frozen_payout(&recent, PayoutState::Held),
                frozen_payout(&released, PayoutState::Pending),
                payout_failed(1, &old, now() - 30 * day_ms),
                payout_failed(2, &recent, now() - day_ms),
                payout_failed(3, &released, now() - day_ms),
            ])
            .unwrap()
            .await
            .unwrap();
        let mut tailer = Tailer::new(
            store.clone(),
            e.directory(),
            Arc::new(SystemClock),
            TailerConfig {
                page_max: 1,
                pages_max: 1,
                ..TailerConfig::default()
            },
        );
        for _ in 0..6 {
            tailer.poll_once().await.unwrap();
        }
        let told: Vec<_> = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .into_iter()
            .filter(|o| o.event_type == "payout.failed")
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert!(told[0].payload.contains(&recent), "{}", told[0].payload);
        assert!(told[0].payload.contains("6222****2347"));
        // A new tailer (a restart) reads the kept line and tells nothing again.
        let mut again = Tailer::new(
            store.clone(),
            e.directory(),
            Arc::new(SystemClock),
            TailerConfig::default(),
        );
        again.poll_once().await.unwrap();
        let count = store
            .outbox_of_merchant(MID, None, store::RESOLVE_ROWS_MAX)
            .unwrap()
            .iter()
            .filter(|o| o.event_type == "payout.failed")
            .count();
        assert_eq!(count, 1);
    });
}
