//! A full disk under the journal, against the real switch and issuer simulator. The disk is
//! SQLite's page quota (`SqliteStore::set_page_quota`, `PRAGMA max_page_count` on the writer's
//! connection) lowered at run time: writes needing a new page then fail with SQLITE_FULL, the
//! error a full file system gives, without root or a special mount, on any CI machine. The
//! switch must stop approving (96) rather than approve what it cannot record, approve again
//! once space returns, and after a restart leave no issuer approval in doubt. And a journal
//! that hangs rather than fails: another connection holding SQLite's write lock, as a stalled
//! disk would hold the writer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../switch/tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::{Req, Terminal};
use issuer_sim::DemoCard;
use paycrypto::Hsm;
use store::{SafState, Store, TxnKind, TxnState};
use support::{World, runtime, start};

/// Purchases tried while the disk is full; the quota is hit within a few pages of rows.
const TRIES_MAX: usize = 400;
/// Refusals in a row that mean the disk is full for good.
const REFUSED_IN_A_ROW: usize = 20;

/// Fills the disk: SQLite keeps the quota at no less than the pages in use, so 1 means "full
/// now"; rows still fit in free space of existing pages until they do not. Buys with `cards` in
/// turn until `REFUSED_IN_A_ROW` purchases in a row are refused (the last one returned is
/// refused). Every answer is 00 or 96, and a 00 only with its row recorded, approved. Returns
/// each purchase with its code.
async fn fill_the_disk(w: &mut World, cards: &[DemoCard]) -> Vec<(Req, String)> {
    w.store.set_page_quota(Some(1));
    let mut sent = Vec::new();
    let mut refused_in_a_row = 0;
    for i in 0..TRIES_MAX {
        let req = w.purchase(&cards[i % cards.len()], 100);
        let r = w.t.send(&req).await;
        let code = r.code();
        if code == "00" {
            // Approved only if recorded: the row is there, approved.
            let row = w.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
            assert_eq!(row.state, TxnState::Approved);
            refused_in_a_row = 0;
        } else {
            assert_eq!(code, "96", "only 96 while the disk is full");
            refused_in_a_row += 1;
        }
        sent.push((req, code));
        if refused_in_a_row >= REFUSED_IN_A_ROW {
            return sent;
        }
    }
    let codes: Vec<&str> = sent.iter().map(|(_, code)| code.as_str()).collect();
    panic!("the quota never filled: {codes:?}");
}

#[test]
fn full_journal_answers_96_never_an_unrecorded_approval_and_recovers() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |_| {}).await;
        let cards: Vec<_> = (0..4).map(|i| w.bank("ICBC").healthy(i).clone()).collect();
        let req = w.purchase(&cards[0], 100);
        assert_eq!(w.t.send(&req).await.code(), "00");

        let codes: Vec<String> = fill_the_disk(&mut w, &cards)
            .await
            .into_iter()
            .map(|(_, code)| code)
            .collect();
        let approved_while_filling = codes.iter().filter(|c| *c == "00").count();

        // Space returns: approvals resume without a restart.
        w.store.set_page_quota(None);
        for i in 0..10 {
            let req = w.purchase(&cards[i % cards.len()], 100);
            assert_eq!(w.t.send(&req).await.code(), "00");
        }
        // A request whose outcome could not be written stays "in flight" in the journal; the
        // next start settles it (reversal queued, delivered). After that nothing is in doubt.
        let in_flight = w.store.txns_in_state(TxnState::InFlight).unwrap().len();
        w.restart().await;
        assert!(w.reversals_delivered(20).await, "reversals not delivered");
        let checked = w.audit();
        eprintln!(
            "full disk: {approved_while_filling} approved while filling, then {} answered 96; \
             {in_flight} left in flight until the restart; {checked} issuer approvals audited",
            codes.len() - approved_while_filling
        );
        let req = w.purchase(&cards[0], 100);
        assert_eq!(w.t.send(&req).await.code(), "00");
    });
}

/// A terminal resends a reversal until it is answered (PROTOCOL.md); a 96 is no answer. Once
/// the disk has room, the resent reversal must be taken, not answered the 96 of its first
/// attempt for ever; and the reversal of a purchase that was refused 96 before anything was
/// written (so the journal has no row to point at) must be answered, not refused by the
/// journal's foreign key for ever. Found by the simulation once its terminals settled.
#[test]
fn a_reversal_refused_for_a_full_disk_is_taken_when_resent() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |_| {}).await;
        let cards: Vec<_> = (0..4).map(|i| w.bank("ICBC").healthy(i).clone()).collect();
        let approved = w.purchase(&cards[0], 300);
        let first = w.t.send(&approved).await;
        assert_eq!(first.code(), "00");
        let rrn = first.text(37).unwrap();

        // Fill the disk until nothing more fits; keep the last purchase, refused.
        let (refused, _) = fill_the_disk(&mut w, &cards[1..]).await.pop().unwrap();
        assert!(
            w.store
                .txns_by_key(&w.t.tid, 1, refused.stan)
                .unwrap()
                .is_empty(),
            "the refused purchase left a row"
        );

        // The terminal reverses the approved purchase: the journal cannot take it, 96, and the
        // purchase stays approved.
        let reversal = Req::reversal_of(&approved);
        assert_eq!(w.t.send(&reversal).await.code(), "96");
        assert_eq!(w.t.send(&reversal).await.code(), "96", "resent, still full");
        let row = w.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Approved);

        // Room again: the resent reversal is taken, and the issuer gets it.
        w.store.set_page_quota(None);
        assert_eq!(w.t.send(&reversal).await.code(), "00");
        let row = w.store.txn_by_rrn(&rrn).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Reversed);
        assert!(w.reversals_delivered(20).await, "reversal not delivered");
        let at_issuer = w
            .bank("ICBC")
            .sim
            .issuer()
            .txn(&issuer_sim::Rrn::parse(&rrn).unwrap())
            .unwrap();
        assert_eq!(at_issuer.state, issuer_sim::TxnState::Reversed);
        // Sent once more after its answer, it is a retry: the same answer, nothing new.
        assert_eq!(w.t.send(&reversal).await.code(), "00");
        let reversals = w.store.txns_by_key(&w.t.tid, 1, approved.stan).unwrap();
        assert_eq!(
            reversals
                .iter()
                .filter(|r| r.kind == store::TxnKind::Reversal)
                .count(),
            1,
            "one reversal row for the reversal and its resends"
        );

        // The reversal of the purchase refused before it was written: nothing to reverse, and
        // its timeline says why.
        assert_eq!(w.t.send(&Req::reversal_of(&refused)).await.code(), "00");
        let rows = w.store.txns_by_key(&w.t.tid, 1, refused.stan).unwrap();
        let [row] = rows.as_slice() else {
            panic!("one row, the reversal's: {rows:?}");
        };
        assert_eq!(row.kind, store::TxnKind::Reversal);
        assert_eq!(row.original_id, None);
        let events = w.store.events(row.id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("answered 96 before it was recorded")),
            "{events:?}"
        );
        w.audit();
    });
}

/// An approval whose outcome the journal will not take, nor the reversal the switch then
/// queues on its own (here triggers abort those writes of that one purchase, as a failing disk
/// would), is answered 96 and stays in flight in the journal. Once the journal takes writes
/// again, the switch's next sweep settles it without a restart: answered 96, its reversal
/// queued and delivered, nothing in flight or in doubt. It used to wait for a restart or for
/// ten minutes (a void or refund left so also kept its original from any other).
#[test]
fn an_outcome_the_journal_refused_is_settled_by_the_next_sweep() {
    runtime().block_on(async {
        // A sweep every 50 passes: every 0.5 s here.
        let mut w = start(&["ICBC"], |c| c.saf_interval = Duration::from_millis(10)).await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = rusqlite::Connection::open(w.store.path()).unwrap();
        let refuse = |amounts: &str| {
            journal
                .execute_batch(&format!(
                    "DROP TRIGGER IF EXISTS refuse_outcome; DROP TRIGGER IF EXISTS refuse_reversal;
                     CREATE TRIGGER refuse_outcome BEFORE UPDATE OF response_code ON transactions
                     WHEN NEW.amount_fen IN ({amounts})
                     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
                     CREATE TRIGGER refuse_reversal BEFORE INSERT ON reversal_queue
                     WHEN (SELECT amount_fen FROM transactions WHERE id = NEW.txn_id)
                     IN ({amounts}) BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                ))
                .unwrap();
        };
        refuse("4242, 4343");
        let mut ids = Vec::new();
        for amount in [4242, 4343] {
            let req = w.purchase(&card, amount);
            assert_eq!(w.t.send(&req).await.code(), "96");
            let row = w.store.txns_by_key(&w.t.tid, 1, req.stan).unwrap();
            assert_eq!(row.len(), 1);
            assert_eq!(row[0].state, TxnState::InFlight);
            ids.push(row[0].id);
        }
        let (id, other) = (ids[0], ids[1]);
        // Sweeps while the journal still refuses fail and are tried again.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(w.store.txn(id).unwrap().unwrap().state, TxnState::InFlight);

        // One row the journal still refuses does not keep the other in doubt.
        refuse("4242");
        let store = Arc::clone(&w.store);
        let settled =
            w.h.eventually(10, || {
                store.txn(other).unwrap().unwrap().state != TxnState::InFlight
            })
            .await;
        assert!(settled, "4343 still in flight while only 4242 is refused");
        assert_eq!(w.store.txn(id).unwrap().unwrap().state, TxnState::InFlight);

        journal
            .execute_batch("DROP TRIGGER refuse_outcome; DROP TRIGGER refuse_reversal")
            .unwrap();
        let settled =
            w.h.eventually(10, || {
                store.txn(id).unwrap().unwrap().state != TxnState::InFlight
            })
            .await;
        assert!(
            settled,
            "still in flight 10 s after the journal took writes again"
        );
        assert!(w.reversals_delivered(20).await, "reversal not delivered");
        let row = w.store.txn(id).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Reversed);
        assert_eq!(row.response_code.as_deref(), Some("96"));
        let reversal = w.store.reversal(id).unwrap().unwrap();
        assert_eq!(reversal.state, store::SafState::Acked);
        w.audit();
        // Approvals go on.
        let req = w.purchase(&card, 100);
        assert_eq!(w.t.send(&req).await.code(), "00");
    });
}

/// A decline whose outcome the journal refused moved no money: the sweep settles its row as
/// failed (96, what the terminal was told) and sends the issuer no reversal.
#[test]
fn a_decline_the_journal_could_not_record_is_settled_without_a_reversal() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |c| c.saf_interval = Duration::from_millis(10)).await;
        let card = w
            .bank("ICBC")
            .cards
            .iter()
            .find(|c| c.label == "insufficient_funds")
            .unwrap()
            .clone();
        let journal = rusqlite::Connection::open(w.store.path()).unwrap();
        journal
            .execute_batch(
                "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF response_code ON transactions
                 WHEN NEW.amount_fen = 4545
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            )
            .unwrap();
        let req = w.purchase(&card, 4545);
        assert_eq!(w.t.send(&req).await.code(), "96");
        let id = w.store.txns_by_key(&w.t.tid, 1, req.stan).unwrap()[0].id;
        journal
            .execute_batch("DROP TRIGGER refuse_outcome")
            .unwrap();
        let store = Arc::clone(&w.store);
        let settled =
            w.h.eventually(10, || {
                store.txn(id).unwrap().unwrap().state != TxnState::InFlight
            })
            .await;
        assert!(
            settled,
            "still in flight 10 s after the journal took writes again"
        );
        let row = w.store.txn(id).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Failed);
        assert_eq!(row.response_code.as_deref(), Some("96"));
        assert!(
            w.store.reversal(id).unwrap().is_none(),
            "a decline was reversed"
        );
        let events = w.store.events(id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("ICBC declined it: 51")
                    && e.detail.contains("nothing to reverse")),
            "{events:?}"
        );
        w.audit();
    });
}

/// Another connection to `w`'s journal, which waits up to 5 s for its write lock: the tests
/// hold the lock with it (`BEGIN IMMEDIATE`) as a stalled disk would hold the writer.
fn journal_connection(w: &World) -> rusqlite::Connection {
    let journal = rusqlite::Connection::open(w.store.path()).unwrap();
    journal.busy_timeout(Duration::from_secs(5)).unwrap();
    journal
}

/// After a crash: ICBC's issuer quick again, the switch started again, and whether the
/// reversals queued were all delivered within 20 s.
async fn restarted_and_delivered(w: &mut World) -> bool {
    w.bank("ICBC")
        .faults()
        .set_latency(Duration::ZERO, Duration::ZERO);
    w.restart().await;
    w.reversals_delivered(20).await
}

/// A purchase of `amount` whose approval comes while `journal`'s write lock is taken (once the
/// issuer, 300 ms to decide, has been asked): its outcome waits, and the terminal is answered
/// 96. The lock is left held.
async fn approved_while_the_journal_is_held(
    w: &mut World,
    journal: &rusqlite::Connection,
    card: &DemoCard,
    amount: u64,
) -> Req {
    let req = w.purchase(card, amount);
    answered_96_while_the_journal_is_held(w, journal, &req).await;
    req
}

/// `req`, sent to ICBC's issuer (300 ms to decide), whose outcome waits because `journal`'s
/// write lock is taken once the issuer has been asked: the terminal is answered 96. The lock
/// is left held.
async fn answered_96_while_the_journal_is_held(
    w: &mut World,
    journal: &rusqlite::Connection,
    req: &Req,
) {
    let faults = w.bank("ICBC").faults();
    faults.set_latency(Duration::from_millis(300), Duration::from_millis(300));
    let asked = faults.stats().requests;
    let hold = async {
        while faults.stats().requests == asked {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
    };
    let (answer, ()) = tokio::join!(w.t.send(req), hold);
    assert_eq!(answer.code(), "96");
}

/// A switch with the daily limit of 50,000 whose journal waits at most 500 ms, a first sale of
/// 30,000 approved on its terminal, and a connection to its journal to hold.
async fn sold_30_000_of_a_50_000_day() -> (World, DemoCard, rusqlite::Connection) {
    let rules = r#"{"default": [{"id": "day", "kind": "daily-amount-max", "max_fen": 50000}]}"#;
    let mut w = start(&["ICBC"], |c| {
        c.journal_wait = Duration::from_millis(500);
        c.risk_rules = Arc::new(risk::RuleBook::from_json(rules).unwrap());
    })
    .await;
    let card = w.bank("ICBC").healthy(0).clone();
    let journal = journal_connection(&w);
    let req = w.purchase(&card, 30_000);
    assert_eq!(w.t.send(&req).await.code(), "00");
    (w, card, journal)
}

/// `req` sent again until it is answered other than 96 (a terminal resends a reversal so), for
/// at most five seconds: the last answer's code.
async fn resent_until_answered(t: &mut Terminal, req: &Req) -> String {
    let mut code = String::new();
    for _ in 0..50 {
        code = t.send(req).await.code().to_owned();
        if code != "96" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    code
}

/// Of the day's 50,000, only the first 30,000 stands (the issuer quick again): 40,000 more is
/// over the limit, 20,000 is not.
async fn only_30_000_stands(w: &mut World, card: &DemoCard) {
    w.bank("ICBC")
        .faults()
        .set_latency(Duration::ZERO, Duration::ZERO);
    let over = w.purchase(card, 40_000);
    assert_eq!(w.t.send(&over).await.code(), "61");
    let within = w.purchase(card, 20_000);
    assert_eq!(w.t.send(&within).await.code(), "00");
}

/// A sale approved at the issuer while the journal was held is answered 96 and was never
/// counted in the merchant's day; its terminal's reversal takes nothing back out of the day.
/// It took the sale's amount out all the same, and the daily limit then let that much more
/// through.
#[test]
fn a_reversal_of_a_sale_answered_96_leaves_the_days_sales_alone() {
    runtime().block_on(async {
        let (mut w, card, journal) = sold_30_000_of_a_50_000_day().await;
        let held = approved_while_the_journal_is_held(&mut w, &journal, &card, 20_000).await;
        // Its terminal reverses it at once: the reversal's write waits too (96).
        let reversal = Req::reversal_of(&held);
        assert_eq!(w.t.send(&reversal).await.code(), "96");
        journal.execute_batch("ROLLBACK").unwrap();
        assert_eq!(resent_until_answered(&mut w.t, &reversal).await, "00");
        only_30_000_stands(&mut w, &card).await;
    });
}

/// A terminal's reversal read while its sale's outcome is still being written (the journal
/// stalled, the terminal gave up and reversed on another connection): the sale is never counted
/// in the merchant's day, so nothing is taken out of it. Taking it out (as if it would be
/// counted once written) gave a daily limit that much more room when the outcome, stalled,
/// was answered 96 and never counted.
#[test]
fn a_reversal_read_while_its_sale_is_written_leaves_the_days_sales_alone() {
    runtime().block_on(async {
        let (mut w, card, journal) = sold_30_000_of_a_50_000_day().await;
        let mut other = Terminal::connect(w.h.addr(), &w.t.tid).await;
        other.keys = w.t.keys.clone();
        let held = w.purchase(&card, 20_000);
        let reversal = Req::reversal_of(&held);
        let faults = w.bank("ICBC").faults();
        faults.set_latency(Duration::from_millis(300), Duration::from_millis(300));
        let asked = faults.stats().requests;
        let reverse = async {
            while faults.stats().requests == asked {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            journal.execute_batch("BEGIN IMMEDIATE").unwrap();
            // The issuer answers after 300 ms; the outcome then waits on the journal.
            tokio::time::sleep(Duration::from_millis(400)).await;
            other.send(&reversal).await.code().to_owned()
        };
        let (answer, reversed) = tokio::join!(w.t.send(&held), reverse);
        assert_eq!(answer.code(), "96");
        assert_eq!(reversed, "96");
        journal.execute_batch("ROLLBACK").unwrap();
        assert_eq!(resent_until_answered(&mut other, &reversal).await, "00");
        only_30_000_stands(&mut w, &card).await;
    });
}

/// The journal's write lock held by another connection (the writer waits on it, up to SQLite's
/// busy timeout, as on a stalled disk): each purchase is answered 96 within `journal_wait`, and
/// what the writer writes once the lock is let go is settled: a request row as failed, the
/// issuer never asked; an approval whose outcome landed after its 96 reversed at the issuer.
#[test]
fn a_journal_that_hangs_is_answered_96_and_what_lands_late_is_settled() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| c.journal_wait = wait).await;
        let card = w.bank("ICBC").healthy(0).clone();
        let faults = w.bank("ICBC").faults();
        let journal = journal_connection(&w);
        // A first purchase reserves the blocks of ids and RRNs the next ones draw from.
        let req = w.purchase(&card, 3_000);
        assert_eq!(w.t.send(&req).await.code(), "00");

        // Held before the request: its row waits, so the issuer is not asked.
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        let asked = faults.stats().requests;
        let req = w.purchase(&card, 3_001);
        let started = std::time::Instant::now();
        assert_eq!(w.t.send(&req).await.code(), "96");
        let took = started.elapsed();
        assert!(
            took >= wait && took < Duration::from_secs(2),
            "96 took {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        let store = Arc::clone(&w.store);
        let (tid, stan) = (w.t.tid.clone(), req.stan);
        let failed =
            w.h.eventually(10, || {
                store
                    .txns_by_key(&tid, 1, stan)
                    .unwrap()
                    .first()
                    .is_some_and(|r| {
                        r.state == TxnState::Failed && r.response_code.as_deref() == Some("96")
                    })
            })
            .await;
        assert!(failed, "{:?}", w.store.txns_by_key(&tid, 1, stan));
        assert_eq!(faults.stats().requests, asked, "the issuer was asked");

        // Taken while the issuer decides (300 ms): the approval's outcome waits.
        let req = approved_while_the_journal_is_held(&mut w, &journal, &card, 3_002).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        faults.set_latency(Duration::ZERO, Duration::ZERO);
        let stan = req.stan;
        let reversed =
            w.h.eventually(10, || {
                store
                    .txns_by_key(&tid, 1, stan)
                    .unwrap()
                    .first()
                    .is_some_and(|r| r.state == TxnState::Reversed)
            })
            .await;
        assert!(reversed, "{:?}", w.store.txns_by_key(&tid, 1, stan));
        assert!(w.reversals_delivered(20).await, "reversal not delivered");

        // A terminal's reversal whose write waits: 96, and once it lands its resend gets 00.
        let sale = w.purchase(&card, 3_003);
        assert_eq!(w.t.send(&sale).await.code(), "00");
        let reversal = Req::reversal_of(&sale);
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(w.t.send(&reversal).await.code(), "96");
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        let stan = sale.stan;
        let reversed =
            w.h.eventually(10, || {
                store
                    .txns_by_key(&tid, 1, stan)
                    .unwrap()
                    .iter()
                    .any(|r| r.kind != TxnKind::Reversal && r.state == TxnState::Reversed)
            })
            .await;
        assert!(reversed, "{:?}", w.store.txns_by_key(&tid, 1, stan));
        assert_eq!(
            w.t.send(&reversal).await.code(),
            "00",
            "the resent reversal"
        );
        assert!(w.reversals_delivered(20).await, "reversal not delivered");

        // A refusal the switch records (a void of an RRN it never issued): 96 while the write
        // waits, and the refusal's row lands once it can.
        let stan = w.next_stan();
        let void = Req {
            pin: Some(card.pin().to_owned()),
            ..Req::void(&support::pan(&card), 3_003, stan, sale.stan, "019999999999")
        };
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(w.t.send(&void).await.code(), "96");
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        let refused =
            w.h.eventually(10, || {
                store
                    .txns_by_key(&tid, 1, stan)
                    .unwrap()
                    .first()
                    .is_some_and(|r| r.state == TxnState::Declined)
            })
            .await;
        assert!(refused, "{:?}", w.store.txns_by_key(&tid, 1, stan));
        // One request row, one outcome, one reversal, one refusal: each waited past the bound,
        // and all are settled.
        let m = w.metrics();
        assert_eq!(m.journal_waits_exceeded, 4, "{m:?}");
        assert_eq!(m.journal_late_writes, 0, "{m:?}");
        w.audit();
        let req = w.purchase(&card, 100);
        assert_eq!(w.t.send(&req).await.code(), "00");

        // A sign-in whose keys the journal cannot take in time: 96 within the bound, and the
        // terminal's next sign-in, once the journal answers, gives it keys that work.
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(w.t.sign_in().await.code(), "96");
        let took = started.elapsed();
        assert!(
            took >= wait && took < Duration::from_secs(2),
            "96 took {took:?}"
        );
        journal.execute_batch("ROLLBACK").unwrap();
        assert_eq!(w.t.sign_in().await.code(), "00");
        let req = w.purchase(&card, 101);
        assert_eq!(w.t.send(&req).await.code(), "00");
        assert_eq!(w.metrics().journal_waits_exceeded, 5);
    });
}

/// An approval whose outcome lands after its terminal was answered 96, with the switch gone in
/// between as a `kill -9` leaves it (its tasks dropped where they stood): the host's reversal
/// rides in the outcome's own commit (`store::Rider`), so it lands with it, and the approval
/// the terminal was told had failed does not stand.
#[test]
fn an_approval_that_lands_after_its_96_is_reversed_though_the_switch_died() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| {
            c.journal_wait = wait;
            c.abortable = true;
        })
        .await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = journal_connection(&w);
        let req = w.purchase(&card, 3_000);
        assert_eq!(w.t.send(&req).await.code(), "00");

        // The journal's lock is taken while the issuer decides: the approval's outcome waits.
        let req = approved_while_the_journal_is_held(&mut w, &journal, &card, 3_002).await;
        w.h.switch.take().unwrap().crash();
        journal.execute_batch("ROLLBACK").unwrap();
        let store = Arc::clone(&w.store);
        let (tid, stan) = (w.t.tid.clone(), req.stan);
        let settled = || store.txns_by_key(&tid, 1, stan).unwrap().into_iter().next();
        let reversed =
            w.h.eventually(10, || {
                settled().is_some_and(|r| r.state == TxnState::Reversed)
            })
            .await;
        let row = settled().unwrap();
        assert!(reversed, "{row:?}");
        assert_eq!(
            row.response_code.as_deref(),
            Some("00"),
            "the issuer's answer"
        );
        assert_eq!(
            w.store.reversal(row.id).unwrap().map(|r| r.state),
            Some(SafState::Pending),
            "the reversal is queued for the next start to send"
        );
        // The next start sends it: the approval does not stand at the issuer either.
        assert!(restarted_and_delivered(&mut w).await, "not delivered");
        w.audit();
    });
}

/// A void, then a refund, each approved by the issuer while the journal is held and its
/// terminal answered 96, with the switch gone before the journal answers: each is reversed
/// and its original given back (the sale approved again, then nothing refunded of it) by the
/// records riding in its outcome's commit, not by a task that died with the switch.
#[test]
fn a_void_or_refund_that_lands_after_its_96_gives_its_original_back_though_the_switch_died() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| {
            c.journal_wait = wait;
            c.abortable = true;
        })
        .await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = journal_connection(&w);
        let sale = w.purchase(&card, 3_000);
        let answer = w.t.send(&sale).await;
        assert_eq!(answer.code(), "00");
        let sale_rrn = answer.text(37).unwrap();
        let sale_row = w.store.txn_by_rrn(&sale_rrn).unwrap().unwrap();
        let tid = w.t.tid.clone();
        let store = Arc::clone(&w.store);
        let mmdd = switch::LocalTime::from_ms(switch::Clock::now_ms(&switch::SystemClock)).mmdd();
        for linked in ["void", "refund"] {
            let stan = w.next_stan();
            let req = Req {
                pin: Some(card.pin().to_owned()),
                ..match linked {
                    "void" => Req::void(&support::pan(&card), 3_000, stan, sale.stan, &sale_rrn),
                    _ => Req::refund(&support::pan(&card), 1_000, stan, &sale_rrn, &mmdd),
                }
            };
            answered_96_while_the_journal_is_held(&mut w, &journal, &req).await;
            w.h.switch.take().unwrap().crash();
            journal.execute_batch("ROLLBACK").unwrap();
            let settled = || store.txns_by_key(&tid, 1, stan).unwrap().into_iter().next();
            let reversed =
                w.h.eventually(10, || {
                    settled().is_some_and(|r| r.state == TxnState::Reversed)
                })
                .await;
            let row = settled().unwrap();
            assert!(reversed, "{linked}: {row:?}");
            assert_eq!(row.response_code.as_deref(), Some("00"), "{linked}");
            let original = w.store.txn(sale_row.id).unwrap().unwrap();
            assert_eq!(original.state, TxnState::Approved, "{linked}: {original:?}");
            assert_eq!(original.refunded_fen, 0, "{linked}: {original:?}");
            assert_eq!(
                w.store.reversal(row.id).unwrap().map(|r| r.state),
                Some(SafState::Pending),
                "{linked}: the reversal is queued for the next start to send"
            );
            // The next start sends it; the sale still stands at the issuer and in the journal.
            assert!(
                restarted_and_delivered(&mut w).await,
                "{linked}: not delivered"
            );
        }
        w.audit();
    });
}

/// A terminal's 0500 for `batch` with domestic debits of `debit`: the answer.
async fn settle(w: &mut World, batch: u32, debit: (u64, u16)) -> common::Response {
    use iso8583::{MessageBuilder, Mti, SettleResult, SettlementTotals, Totals};
    let totals = SettlementTotals {
        domestic: Totals {
            debit_amount: debit.0,
            debit_count: debit.1,
            credit_amount: 0,
            credit_count: 0,
            result: SettleResult::REQUEST,
        },
        foreign: Totals::default(),
    };
    let mut out = MessageBuilder::new(Mti::SETTLEMENT);
    out.set_stan(900).unwrap();
    out.set_text(41, &w.t.tid)
        .unwrap()
        .set_text(42, common::MID)
        .unwrap();
    out.set_composed(&totals).unwrap();
    out.set_text(49, "156").unwrap();
    out.set_digits(60, &format!("00{batch:06}201")).unwrap();
    out.set_text(63, "001").unwrap();
    let mut bytes = Vec::new();
    out.encode_frame(&common::head(), &mut bytes).unwrap();
    w.t.exchange(&bytes).await
}

/// A settlement answered 96 while the journal is held, whose write lands afterwards: the batch
/// is closed in memory too once it has, so the terminal's next sale under it is refused 77
/// (not approved into a batch the journal has closed), and its settlement sent again is
/// answered from the batch as it closed.
#[test]
fn a_settlement_that_lands_after_its_96_closes_the_batch_in_memory_too() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| c.journal_wait = wait).await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = journal_connection(&w);
        let sale = w.purchase(&card, 1_000);
        assert_eq!(w.t.send(&sale).await.code(), "00");
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(settle(&mut w, 1, (1_000, 1)).await.code(), "96");
        journal.execute_batch("ROLLBACK").unwrap();
        let store = Arc::clone(&w.store);
        let tid = w.t.tid.clone();
        let landed =
            w.h.eventually(10, || store.terminal(&tid).unwrap().unwrap().batch_no == 2)
                .await;
        assert!(landed, "the settlement's write never landed");
        // Memory follows the write, once its task has settled it.
        let switch = w.h.switch.as_ref().unwrap();
        let settled =
            w.h.eventually(5, || switch.metrics().journal_late_writes == 0)
                .await;
        assert!(settled, "the late settlement was never settled");
        let late = w.purchase(&card, 2_000);
        assert_eq!(
            w.t.send(&late).await.code(),
            "77",
            "a sale into a closed batch"
        );
        let again = settle(&mut w, 1, (1_000, 1)).await;
        assert_eq!(again.code(), "00");
        let totals =
            iso8583::SettlementTotals::parse(again.frame().message.digits(48).unwrap()).unwrap();
        assert_eq!(
            (totals.domestic.debit_amount, totals.domestic.debit_count),
            (1_000, 1)
        );
        assert_eq!(totals.domestic.result, iso8583::SettleResult::BALANCED);
        // Told 77, the terminal signs in naming the batch it still holds: it is kept in the
        // host's next batch, and its sale goes there.
        assert_eq!(w.t.sign_in().await.code(), "00");
        assert_eq!(w.t.batch, 2, "the sign-in opened the closed batch again");
        let next = w.purchase(&card, 2_000);
        assert_eq!(w.t.send(&next).await.code(), "00");
        assert_eq!(settle(&mut w, 2, (2_000, 1)).await.code(), "00");
        // Each batch holds its own sale: amount, then count, then the verdict (1 balanced).
        for (batch, totals) in [
            (1, "0000000010000010000000000000001"),
            (2, "0000000020000010000000000000001"),
        ] {
            let row = w.store.batch_settlement(&tid, batch).unwrap().unwrap();
            assert_eq!(row.host_totals.get(..31), Some(totals), "batch {batch}");
        }
    });
}

/// A sign-in whose record the journal takes too long to write is answered 96, and its record
/// may land afterwards: the keys the terminal's row then names are still in the HSM (a start
/// loads them; before, they were deleted at the 96), the old ones are gone, and the terminal,
/// told A0 for its old keys, signs in again and goes on.
#[test]
fn a_sign_in_recorded_after_its_96_leaves_the_keys_its_row_names() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| c.journal_wait = wait).await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = journal_connection(&w);
        let req = w.purchase(&card, 100);
        assert_eq!(w.t.send(&req).await.code(), "00");
        let tid = w.t.tid.clone();
        let keys_of = |row: store::TerminalRow| row.working_keys.unwrap();
        let before = keys_of(w.store.terminal(&tid).unwrap().unwrap());

        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(w.t.sign_in().await.code(), "96");
        journal.execute_batch("ROLLBACK").unwrap();
        let store = Arc::clone(&w.store);
        let landed =
            w.h.eventually(10, || {
                keys_of(store.terminal(&tid).unwrap().unwrap()) != before
            })
            .await;
        assert!(landed, "the sign-in's record never landed");
        let after = keys_of(w.store.terminal(&tid).unwrap().unwrap());
        let held = |bytes: &[u8]| {
            switch::handle_from_bytes(bytes).is_some_and(|h| w.h.hsm.key_info(h).is_ok())
        };
        assert!(
            held(&after.pik) && held(&after.mak),
            "the row names deleted keys"
        );
        let gone = w.h.eventually(5, || !held(&before.mak)).await;
        assert!(gone, "the keys the row no longer names stay in the HSM");
        // The terminal still holds the old keys: A0, then a sign-in, then business as usual.
        let req = w.purchase(&card, 101);
        assert_eq!(w.t.send(&req).await.code(), "A0");
        assert_eq!(w.t.sign_in().await.code(), "00");
        let req = w.purchase(&card, 102);
        assert_eq!(w.t.send(&req).await.code(), "00");
    });
}

/// Two sign-ins answered 96 one after the other, both records landing once the journal
/// answers: the later one's keys are the ones held (its record is the row's last word), the
/// earlier one's leave the HSM, whichever settles first.
#[test]
fn of_two_late_sign_ins_the_later_ones_keys_are_held() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| c.journal_wait = wait).await;
        let card = w.bank("ICBC").healthy(0).clone();
        let journal = journal_connection(&w);
        let req = w.purchase(&card, 100);
        assert_eq!(w.t.send(&req).await.code(), "00");
        let tid = w.t.tid.clone();
        let keys_of = |row: store::TerminalRow| row.working_keys.unwrap();
        let before = keys_of(w.store.terminal(&tid).unwrap().unwrap());

        let keys = w.h.hsm.key_count();
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(w.t.sign_in().await.code(), "96");
        assert_eq!(w.t.sign_in().await.code(), "96");
        journal.execute_batch("ROLLBACK").unwrap();
        let held = |bytes: &[u8]| {
            switch::handle_from_bytes(bytes).is_some_and(|h| w.h.hsm.key_info(h).is_ok())
        };
        // Both records land; then only the row's keys are in the HSM, its two before gone.
        let store = Arc::clone(&w.store);
        let settled =
            w.h.eventually(10, || {
                let now = keys_of(store.terminal(&tid).unwrap().unwrap());
                now != before && held(&now.mak) && !held(&before.mak)
                    // One set in the HSM, as before: the earlier late sign-in's gone too.
                    && w.h.hsm.key_count() == keys
            })
            .await;
        let after = keys_of(w.store.terminal(&tid).unwrap().unwrap());
        assert!(
            settled && held(&after.pik) && held(&after.mak),
            "the row names keys the HSM does not hold, or the old ones stay"
        );
        // The terminal, told 96 twice, holds its first keys: A0, a sign-in, business as usual.
        let req = w.purchase(&card, 101);
        assert_eq!(w.t.send(&req).await.code(), "A0");
        assert_eq!(w.t.sign_in().await.code(), "00");
        let req = w.purchase(&card, 102);
        assert_eq!(w.t.send(&req).await.code(), "00");
    });
}

/// A request row that lands after its terminal was answered 96 (the journal hung) is settled
/// as failed; when that write is refused too, the row is left to the next sweep as one that
/// moved nothing (the issuer was never asked): failed, 96, with no reversal sent for a request
/// the issuer never saw.
#[test]
fn a_late_request_whose_settlement_is_refused_is_swept_without_a_reversal() {
    runtime().block_on(async {
        let wait = Duration::from_millis(500);
        let mut w = start(&["ICBC"], |c| {
            c.journal_wait = wait;
            c.saf_interval = Duration::from_millis(10);
        })
        .await;
        let card = w.bank("ICBC").healthy(0).clone();
        let faults = w.bank("ICBC").faults();
        let journal = journal_connection(&w);
        // A first purchase reserves the blocks of ids and RRNs the next ones draw from.
        let req = w.purchase(&card, 3_000);
        assert_eq!(w.t.send(&req).await.code(), "00");
        journal
            .execute_batch(
                "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF response_code ON transactions
                 WHEN NEW.amount_fen = 3001
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            )
            .unwrap();
        journal.execute_batch("BEGIN IMMEDIATE").unwrap();
        let asked = faults.stats().requests;
        let req = w.purchase(&card, 3_001);
        assert_eq!(w.t.send(&req).await.code(), "96");
        tokio::time::sleep(Duration::from_millis(300)).await;
        journal.execute_batch("ROLLBACK").unwrap();
        let store = Arc::clone(&w.store);
        let (tid, stan) = (w.t.tid.clone(), req.stan);
        let landed =
            w.h.eventually(10, || !store.txns_by_key(&tid, 1, stan).unwrap().is_empty())
                .await;
        assert!(landed, "the request row never landed");
        // Its settlement, and the sweeps meanwhile, are refused.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let id = w.store.txns_by_key(&tid, 1, stan).unwrap()[0].id;
        assert_eq!(w.store.txn(id).unwrap().unwrap().state, TxnState::InFlight);
        journal
            .execute_batch("DROP TRIGGER refuse_outcome")
            .unwrap();
        let settled =
            w.h.eventually(10, || {
                store.txn(id).unwrap().unwrap().state != TxnState::InFlight
            })
            .await;
        assert!(
            settled,
            "still in flight 10 s after the journal took writes"
        );
        let row = w.store.txn(id).unwrap().unwrap();
        assert_eq!(row.state, TxnState::Failed);
        assert_eq!(row.response_code.as_deref(), Some("96"));
        assert!(
            w.store.reversal(id).unwrap().is_none(),
            "a request the issuer never saw was reversed"
        );
        assert_eq!(faults.stats().requests, asked, "the issuer was asked");
        let events = w.store.events(id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.detail.contains("issuer was not asked")
                    && e.detail.contains("nothing to reverse")),
            "{events:?}"
        );
        w.audit();
    });
}
