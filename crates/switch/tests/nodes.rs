//! Two switch nodes on one PostgreSQL database, serving terminals at once: no RRN or host trace is
//! handed out twice; a terminal that moves from one node to the other gets the first node's answers
//! to its retries and reversals; one node dies (its runtime is dropped mid-flight, as a killed
//! process stops) with reversals the issuer has not acknowledged, and the other node completes
//! them; the audit finds nothing in doubt. Skipped, loudly, without `SHOUDAN_PG_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    IssuerLog, MID, Req, SILENT_AMOUNT, SLOW_AMOUNT, Terminal, card, eventually, new_hsm, pg_url,
    runtime, start_issuer,
};
use domain::IssuerDirectory;
use paycrypto::{Hsm, KeyHandle, SoftHsm};
use store::{Outcome, PgConfig, PgStore, Record, SafState, Store, TxnKind, TxnState};
use switch::{IssuerEndpoint, Switch, SwitchConfig, SwitchHandle, SystemClock};

const TID_A: &str = "10000001";
const TID_B: &str = "10000002";
/// Purchases each node serves in the concurrent phase.
const PURCHASES: u32 = 40;

struct Node {
    store: Arc<PgStore>,
    handle: SwitchHandle,
}

#[allow(clippy::too_many_arguments)]
async fn start_node(
    runtime: &tokio::runtime::Runtime,
    config: &PgConfig,
    node_id: u8,
    issuer: std::net::SocketAddr,
    hsm: &Arc<SoftHsm>,
    zpk: KeyHandle,
) -> Node {
    let store = Arc::new(PgStore::open(config).unwrap());
    let mut switch_config = SwitchConfig::new("127.0.0.1:0".parse().unwrap());
    switch_config.node_id = node_id;
    switch_config.issuers = HashMap::from([(
        "SIM".to_owned(),
        IssuerEndpoint {
            addr: issuer,
            zpk,
            timeout: Duration::from_millis(300),
        },
    )]);
    switch_config.default_issuer = Some("SIM".to_owned());
    switch_config.saf_interval = Duration::from_millis(50);
    switch_config.saf_lease = Duration::from_millis(500);
    switch_config.retry_wait = Duration::from_secs(1);
    switch_config.shared_journal = true;
    let started = runtime.spawn(Switch::start(
        switch_config,
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(hsm) as Arc<dyn Hsm>,
        Arc::new(IssuerDirectory::embedded().unwrap()),
        Arc::new(SystemClock),
    ));
    let handle = started.await.unwrap().unwrap();
    for _ in 0..100 {
        if handle.issuer_connected("SIM") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Node { store, handle }
}

/// An issuer that acknowledges reversals, an HSM, and `tids` provisioned in the database the
/// nodes will share.
async fn shared(
    config: &PgConfig,
    tids: &[&str],
) -> (
    Arc<IssuerLog>,
    std::net::SocketAddr,
    Arc<SoftHsm>,
    KeyHandle,
) {
    let log = Arc::new(IssuerLog::default());
    log.answer_reversals.store(true, Ordering::SeqCst);
    let issuer = start_issuer(Arc::clone(&log)).await;
    let (hsm, zpk) = new_hsm();
    let setup = PgStore::open(config).unwrap();
    common::provision(&setup, &hsm, tids).await;
    drop(setup);
    (log, issuer, hsm, zpk)
}

/// A gateway's second connection for the terminal `signed_in` speaks for: to the node at
/// `addr`, with the keys that terminal's last sign-in gave (one terminal, one key set,
/// whichever node a frame goes to; that node takes the keys up from the journal).
async fn beside(addr: std::net::SocketAddr, signed_in: &Terminal) -> Terminal {
    let mut other = Terminal::connect(addr, &signed_in.tid).await;
    other.keys = signed_in.keys.clone();
    other.batch = signed_in.batch;
    other
}

/// Signs in and buys `PURCHASES` times; returns the RRNs of the approvals.
async fn serve(addr: std::net::SocketAddr, tid: &str, first_stan: u32) -> Vec<String> {
    let mut terminal = Terminal::connect(addr, tid).await;
    assert_eq!(terminal.sign_in().await.code(), "00");
    let pan = card("622202");
    let mut rrns = Vec::new();
    for n in 0..PURCHASES {
        let response = terminal
            .send(&Req::purchase(&pan, 1_000 + u64::from(n), first_stan + n))
            .await;
        assert_eq!(response.code(), "00", "purchase {n} on {tid}");
        rrns.push(response.text(37).unwrap());
    }
    rrns
}

#[test]
fn two_nodes_share_a_database_and_take_over_reversals() {
    let Some(url) = pg_url() else { return };
    let schema = format!("switch_nodes_{}", std::process::id());
    let config = PgConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
    };
    let main = runtime();
    let (node_a_runtime, node_b_runtime) = (runtime(), runtime());
    main.block_on(async {
        let (log, issuer, hsm, zpk) = shared(&config, &[TID_A, TID_B]).await;
        let a = start_node(&node_a_runtime, &config, 1, issuer, &hsm, zpk).await;
        let b = start_node(&node_b_runtime, &config, 2, issuer, &hsm, zpk).await;

        // Both nodes serve a terminal each, at the same time.
        let (from_a, from_b) = tokio::join!(
            tokio::spawn(serve(a.handle.local_addr(), TID_A, 1)),
            tokio::spawn(serve(b.handle.local_addr(), TID_B, 1)),
        );
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        let mut rrns = HashSet::new();
        for rrn in from_a.iter().chain(&from_b) {
            assert!(rrns.insert(rrn.clone()), "RRN {rrn} handed out twice");
        }
        let journal = b.store.txns_since("").unwrap();
        assert_eq!(journal.len(), usize::try_from(2 * PURCHASES).unwrap());
        let traces: HashSet<u32> = journal.iter().filter_map(|t| t.host_trace).collect();
        assert_eq!(traces.len(), journal.len(), "a host trace used twice");
        let ids: HashSet<i64> = journal.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), journal.len());

        // The balancer moves terminal A to node B, which never saw its batch: a retry of a
        // request node A answered gets node A's answer (no second debit), and its reversal
        // finds the original.
        let pan = card("622202");
        let moved = Req::purchase(&pan, 3_000, 201);
        let mut on_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(on_a.sign_in().await.code(), "00");
        let first = on_a.send(&moved).await;
        assert_eq!(first.code(), "00");
        drop(on_a);
        let debits = log.requests.load(Ordering::SeqCst);
        let mut on_b = Terminal::connect(b.handle.local_addr(), TID_A).await;
        assert_eq!(on_b.sign_in().await.code(), "00");
        let again = on_b.send(&moved).await;
        assert_eq!(again.code(), "00");
        assert_eq!(again.text(37), first.text(37), "node B debited again");
        assert_eq!(log.requests.load(Ordering::SeqCst), debits);
        assert_eq!(
            on_b.send(&Req::purchase(&pan, 3_001, 201)).await.code(),
            "94"
        );
        // A new request on node B is served as usual.
        assert_eq!(
            on_b.send(&Req::purchase(&pan, 3_002, 202)).await.code(),
            "00"
        );
        assert_eq!(on_b.send(&Req::reversal_of(&moved)).await.code(), "00");
        let moved_rrn = first.text(37).unwrap();
        let store = Arc::clone(&b.store);
        let reversed_at_issuer = eventually(10, || {
            store
                .txn_by_rrn(&moved_rrn)
                .unwrap()
                .and_then(|row| store.reversal(row.id).unwrap())
                .is_some_and(|item| item.state == SafState::Acked)
        })
        .await;
        assert!(reversed_at_issuer, "the moved purchase was not reversed");
        drop(on_b);

        // Moved while node A still waits for the issuer: node B's retry waits, then answers
        // what node A recorded (its timeout, 98), without a second request to the issuer. (On
        // a host slow enough for node A to answer before the retry arrives, node B finds the 98
        // in the journal at once: the same answer, without the wait.)
        let slow = Req::purchase(&pan, SILENT_AMOUNT, 301);
        let mut on_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(on_a.sign_in().await.code(), "00");
        let on_a_bytes = on_a.encode(&slow, false);
        let debits = log.requests.load(Ordering::SeqCst);
        let waiting_on_a = tokio::spawn(async move { on_a.exchange(&on_a_bytes).await.code() });
        let store = Arc::clone(&b.store);
        let in_flight = eventually(5, || {
            store
                .txns_by_key(TID_A, 1, 301)
                .unwrap()
                .iter()
                .any(|row| row.state == TxnState::InFlight)
        })
        .await;
        assert!(in_flight, "node A never journalled the slow purchase");
        let mut on_b = Terminal::connect(b.handle.local_addr(), TID_A).await;
        assert_eq!(on_b.sign_in().await.code(), "00");
        let retried = tokio::time::timeout(Duration::from_secs(10), on_b.send(&slow))
            .await
            .expect("node B's retry was never answered");
        assert_eq!(waiting_on_a.await.unwrap(), "98");
        assert_eq!(retried.code(), "98");
        let slow_row = store.txns_by_key(TID_A, 1, 301).unwrap();
        assert_eq!(slow_row.len(), 1, "node B journalled the retry as new");
        assert_eq!(retried.text(37), slow_row[0].rrn);
        assert_eq!(log.requests.load(Ordering::SeqCst), debits + 1);
        let slow_id = slow_row[0].id;
        let reversed = eventually(10, || {
            store
                .reversal(slow_id)
                .unwrap()
                .is_some_and(|item| item.state == SafState::Acked)
        })
        .await;
        assert!(reversed, "the timed-out purchase was not reversed");
        drop(on_b);

        // Node B restarts after the terminal's last sign-in, so it knows the terminal's keys:
        // the terminal moves to it without signing in. What node A took since B started is
        // marked at the connection's first request.
        let mut on_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(on_a.sign_in().await.code(), "00");
        let Node { handle, .. } = b;
        handle.shutdown().await;
        let b = start_node(&node_b_runtime, &config, 2, issuer, &hsm, zpk).await;
        let quiet = Req::purchase(&pan, 4_000, 401);
        let first = on_a.send(&quiet).await;
        assert_eq!(first.code(), "00");
        let keys = on_a.keys.take();
        drop(on_a);
        let debits = log.requests.load(Ordering::SeqCst);
        let mut on_b = Terminal::connect(b.handle.local_addr(), TID_A).await;
        on_b.keys = keys;
        let again = on_b.send(&quiet).await;
        assert_eq!(again.code(), "00");
        assert_eq!(again.text(37), first.text(37), "node B debited again");
        assert_eq!(log.requests.load(Ordering::SeqCst), debits);
        drop(on_b);

        // One terminal on both nodes at once (a gateway keeping a connection to each): a
        // request node A answered, retried on the connection to node B that was marked before
        // it, gets node A's answer and no second debit.
        let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(via_a.sign_in().await.code(), "00");
        let mut via_b = beside(b.handle.local_addr(), &via_a).await;
        let marked = via_b.send(&Req::purchase(&pan, 500, 501)).await;
        assert_eq!(marked.code(), "00");
        let on_a_only = Req::purchase(&pan, 600, 502);
        let answered = via_a.send(&on_a_only).await;
        assert_eq!(answered.code(), "00");
        let debits = log.requests.load(Ordering::SeqCst);
        let retried = via_b.send(&on_a_only).await;
        assert_eq!(retried.code(), "00");
        assert_eq!(retried.text(37), answered.text(37), "node B debited again");
        assert_eq!(log.requests.load(Ordering::SeqCst), debits);
        drop((via_a, via_b));

        // A sale node B holds in memory, refunded in full through node A: node B sees the
        // refund when a second refund of it comes to B, and refuses it (61).
        let mut at_b = Terminal::connect(b.handle.local_addr(), TID_A).await;
        assert_eq!(at_b.sign_in().await.code(), "00");
        let sale = at_b.send(&Req::purchase(&pan, 3_000, 601)).await;
        assert_eq!(sale.code(), "00");
        let sale_rrn = sale.text(37).unwrap();
        let mut at_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(at_a.sign_in().await.code(), "00");
        // One terminal, one key set: its sign-in on A ended the keys B gave it.
        at_b.keys = at_a.keys.clone();
        assert_eq!(
            at_a.send(&Req::refund(&pan, 3_000, 602, &sale_rrn, "0000"))
                .await
                .code(),
            "00"
        );
        assert_eq!(
            at_b.send(&Req::refund(&pan, 3_000, 603, &sale_rrn, "0000"))
                .await
                .code(),
            "61"
        );
        assert_eq!(
            b.store.txn_by_rrn(&sale_rrn).unwrap().unwrap().refunded_fen,
            3_000
        );

        // A refund of a sale node B holds, in flight on node A (its row written ahead, the
        // issuer not yet answered): node B's memory cannot know it, the journal does. A refund
        // on B that would exceed the sale with it is refused (61) and recorded; once A's has
        // timed out, its amount is free again.
        let sale = at_b.send(&Req::purchase(&pan, 5_000, 604)).await;
        assert_eq!(sale.code(), "00");
        let sale_row = b
            .store
            .txn_by_rrn(&sale.text(37).unwrap())
            .unwrap()
            .unwrap();
        let mut on_a = sale_row.clone();
        on_a.id = i64::try_from(a.store.reserve("txn_id", 1).unwrap().await.unwrap()).unwrap();
        on_a.kind = TxnKind::Refund;
        on_a.original_id = Some(sale_row.id);
        on_a.amount_fen = 4_000;
        on_a.rrn = Some("090000000002".into());
        on_a.stan = 605;
        on_a.state = TxnState::InFlight;
        on_a.response_code = None;
        on_a.auth_code = None;
        on_a.answered_at_ms = None;
        a.store
            .submit(vec![Record::InsertTxn(Box::new(on_a.clone()))])
            .unwrap()
            .await
            .unwrap();
        let refund = Req::refund(&pan, 2_000, 606, &sale.text(37).unwrap(), "0000");
        let debits = log.requests.load(Ordering::SeqCst);
        assert_eq!(at_b.send(&refund).await.code(), "61");
        assert_eq!(
            log.requests.load(Ordering::SeqCst),
            debits,
            "sent to the issuer"
        );
        let refused = b.store.txns_by_key(TID_A, sale_row.batch_no, 606).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].state, TxnState::Declined);
        assert_eq!(refused[0].sent_at_ms, None, "nothing went to the issuer");
        a.store
            .submit(vec![Record::Outcome(Outcome {
                id: on_a.id,
                state: TxnState::TimedOut,
                response_code: "98".into(),
                auth_code: None,
                settlement_date: None,
                issuer_answered_at_ms: None,
                answered_at_ms: on_a.received_at_ms,
            })])
            .unwrap()
            .await
            .unwrap();
        let refund = Req::refund(&pan, 2_000, 607, &sale.text(37).unwrap(), "0000");
        assert_eq!(at_b.send(&refund).await.code(), "00");
        assert_eq!(
            b.store.txn(sale_row.id).unwrap().unwrap().refunded_fen,
            2_000
        );
        // That refund reversed through node A: the journal's total falls back to 0, and node
        // B, which still remembers 20.00 refunded, takes the journal's word for it: once the
        // issuer has taken the reversal, the whole 50.00 may be refunded there.
        assert_eq!(at_a.send(&Req::reversal_of(&refund)).await.code(), "00");
        assert_eq!(b.store.txn(sale_row.id).unwrap().unwrap().refunded_fen, 0);
        let acked = eventually(10, || {
            a.store
                .reversals_in_state(SafState::Pending)
                .unwrap()
                .is_empty()
        })
        .await;
        assert!(acked, "the refund's reversal reached the issuer");
        let whole = Req::refund(&pan, 5_000, 608, &sale.text(37).unwrap(), "0000");
        assert_eq!(at_b.send(&whole).await.code(), "00");
        assert_eq!(
            b.store.txn(sale_row.id).unwrap().unwrap().refunded_fen,
            5_000
        );
        drop((at_a, at_b));

        // Node A takes reversals the issuer does not acknowledge, then dies.
        log.answer_reversals.store(false, Ordering::SeqCst);
        let mut terminal = Terminal::connect(a.handle.local_addr(), TID_A).await;
        assert_eq!(terminal.sign_in().await.code(), "00");
        let pan = card("622202");
        let mut reversed = Vec::new();
        for stan in 101..=103 {
            let purchase = Req::purchase(&pan, 2_000, stan);
            let approved = terminal.send(&purchase).await;
            assert_eq!(approved.code(), "00");
            reversed.push(approved.text(37).unwrap());
            let answer = terminal.send(&Req::reversal_of(&purchase)).await;
            assert_eq!(answer.code(), "00");
        }
        let tried = eventually(10, || {
            let sent: HashSet<String> = log
                .reversals
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.1.clone())
                .collect();
            reversed.iter().all(|rrn| sent.contains(rrn))
        })
        .await;
        assert!(tried, "node A never sent its reversals");
        assert_eq!(
            a.store.reversals_in_state(SafState::Pending).unwrap().len(),
            3
        );
        drop(terminal);
        node_a_runtime.shutdown_background();
        drop(a);

        // The issuer is back; node B finds the reversals due once A's leases and backoff
        // run out, and delivers them.
        log.answer_reversals.store(true, Ordering::SeqCst);
        let store = Arc::clone(&b.store);
        let delivered = eventually(20, || {
            store
                .reversals_in_state(SafState::Pending)
                .unwrap()
                .is_empty()
        })
        .await;
        assert!(delivered, "node B did not complete node A's reversals");
        for rrn in &reversed {
            let row = store.txn_by_rrn(rrn).unwrap().unwrap();
            assert_eq!(row.state, TxnState::Reversed, "{rrn}");
            let item = store.reversal(row.id).unwrap().unwrap();
            assert_eq!(item.state, SafState::Acked, "{rrn}");
        }

        // A request a dead node (id 9) left in flight long ago, never queued for reversal:
        // node B's periodic sweep takes it for lost and reverses it. One stamped as long ago
        // by a live node (id 3, its place held; its clock eleven minutes behind B's) is that
        // node's: left in flight, until that node is gone.
        let held = config.clone();
        let live = tokio::task::spawn_blocking(move || {
            let live = PgStore::open(&held).unwrap();
            live.claim_node(3).unwrap();
            live
        })
        .await
        .unwrap();
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let mut stale = Vec::new();
        for (rrn, stan) in [("090000000001", 900), ("030000000001", 901)] {
            let mut row = store.txn_by_rrn(from_b.first().unwrap()).unwrap().unwrap();
            row.id = i64::try_from(store.reserve("txn_id", 1).unwrap().await.unwrap()).unwrap();
            row.rrn = Some(rrn.into());
            row.stan = stan;
            row.host_trace = Some(stan);
            row.state = TxnState::InFlight;
            row.response_code = None;
            row.auth_code = None;
            row.received_at_ms = now_ms - 11 * 60 * 1_000;
            stale.push(row);
        }
        let (stale_id, live_id) = (stale[0].id, stale[1].id);
        store
            .submit(
                stale
                    .into_iter()
                    .map(|row| Record::InsertTxn(Box::new(row)))
                    .collect(),
            )
            .unwrap()
            .await
            .unwrap();
        let acked = |id: i64| {
            store
                .reversal(id)
                .unwrap()
                .is_some_and(|r| r.state == SafState::Acked)
        };
        let swept = eventually(15, || acked(stale_id)).await;
        assert!(swept, "the dead node's request was not reversed");
        assert_eq!(
            store.txn(stale_id).unwrap().unwrap().state,
            TxnState::Reversed
        );
        // The sweep that took node 9's read node 3's too, and left it.
        assert_eq!(
            store.txn(live_id).unwrap().unwrap().state,
            TxnState::InFlight,
            "a live node's request taken for lost on its stamp"
        );
        assert!(store.reversal(live_id).unwrap().is_none());
        tokio::task::spawn_blocking(move || live.close())
            .await
            .unwrap();
        let swept = eventually(25, || acked(live_id)).await;
        assert!(swept, "the request of a node gone since was not reversed");

        // The audit: every approval the issuer gave is approved in the journal, or reversed
        // in the journal and at the issuer; nothing is left in flight.
        let at_issuer: HashSet<String> = log
            .reversals
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.1.clone())
            .collect();
        let mut in_doubt = Vec::new();
        for rrn in from_a.iter().chain(&from_b).chain(&reversed) {
            let row = store.txn_by_rrn(rrn).unwrap().unwrap();
            let settled = match row.state {
                TxnState::Approved => true,
                TxnState::Reversed => at_issuer.contains(rrn),
                _ => false,
            };
            if !settled {
                in_doubt.push((rrn.clone(), row.state));
            }
        }
        assert!(in_doubt.is_empty(), "in doubt: {in_doubt:?}");
        assert!(store.txns_in_state(TxnState::InFlight).unwrap().is_empty());
        b.handle.shutdown().await;
    });
    node_b_runtime.shutdown_background();
    let _ = PgStore::drop_schema(&url, &schema);
}

/// A gateway holding a connection to each node sends one request to both at the same instant:
/// the issuer is asked once, and both connections get its answer. A void in flight on node A
/// that the terminal reverses through node B (it gave up waiting) leaves the sale approved
/// when the issuer's approval of the void reaches node A afterwards: the void stands reversed,
/// the sale must be paid.
/// Runs `test` against two nodes (ids 1 and 2) on a fresh schema named after `name`, with
/// `tids` provisioned and the issuer's log, then stops both and drops the schema. Skipped
/// without PostgreSQL.
fn on_two_nodes<F>(name: &str, tids: &[&str], test: F)
where
    F: for<'n> FnOnce(
        Arc<IssuerLog>,
        &'n Node,
        &'n Node,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'n>>,
{
    on_two_nodes_sharing(name, tids, |log, a, b, _| test(log, a, b));
}

/// [`on_two_nodes`], the test given the HSM the nodes share too.
fn on_two_nodes_sharing<F>(name: &str, tids: &[&str], test: F)
where
    F: for<'n> FnOnce(
        Arc<IssuerLog>,
        &'n Node,
        &'n Node,
        Arc<SoftHsm>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'n>>,
{
    let Some(url) = pg_url() else { return };
    let schema = format!("{name}_{}", std::process::id());
    let config = PgConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
    };
    let main = runtime();
    let (node_a_runtime, node_b_runtime) = (runtime(), runtime());
    main.block_on(async {
        let (log, issuer, hsm, zpk) = shared(&config, tids).await;
        let a = start_node(&node_a_runtime, &config, 1, issuer, &hsm, zpk).await;
        let b = start_node(&node_b_runtime, &config, 2, issuer, &hsm, zpk).await;
        test(log, &a, &b, Arc::clone(&hsm)).await;
        a.handle.shutdown().await;
        b.handle.shutdown().await;
    });
    node_a_runtime.shutdown_background();
    node_b_runtime.shutdown_background();
    let _ = PgStore::drop_schema(&url, &schema);
}

/// Sends requests that move no money (reversals of purchases never made) on `terminal` until
/// one is answered `code`, for up to five seconds; whether one was.
async fn answered_in_time(terminal: &mut Terminal, first_stan: u32, code: &str) -> bool {
    let pan = card("622202");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut stan = first_stan;
    while tokio::time::Instant::now() < deadline {
        let probe = Req::reversal_of(&Req::purchase(&pan, 1, stan));
        if terminal.send(&probe).await.code() == code {
            return true;
        }
        stan += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A terminal's sign-in on one node ends the keys the other node gave it: that node's refresh
/// (every second) reads the journal, and requests under the old keys are then refused there
/// (A0), none reaching the issuer. A terminal signed in on one node and moved at once to the
/// other is served there: the keys are taken up (one HSM, shared by the nodes) at its first
/// request, whose MAC the keys held there did not give. A sign-off on one node ends the keys
/// on the other too: 77. The keys ended leave the HSM once answers under way have had their
/// time.
#[test]
fn a_sign_in_or_sign_off_on_one_node_ends_the_keys_the_other_holds() {
    on_two_nodes_sharing("switch_nodes_keys", &[TID_A, TID_B], |log, a, b, hsm| {
        Box::pin(async move {
            let pan = card("622202");
            let before = hsm.key_count();
            let mut old = Terminal::connect(b.handle.local_addr(), TID_A).await;
            assert_eq!(old.sign_in().await.code(), "00");
            assert_eq!(old.send(&Req::purchase(&pan, 100, 1)).await.code(), "00");
            let mut new = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(new.sign_in().await.code(), "00");
            assert!(
                answered_in_time(&mut old, 100, "A0").await,
                "node B kept the keys node A's sign-in replaced"
            );
            let asked = log.requests.load(Ordering::SeqCst);
            assert_eq!(old.send(&Req::purchase(&pan, 100, 2)).await.code(), "A0");
            assert_eq!(
                log.requests.load(Ordering::SeqCst),
                asked,
                "a purchase under ended keys reached the issuer"
            );
            let mut via_b = beside(b.handle.local_addr(), &new).await;
            assert_eq!(via_b.send(&Req::purchase(&pan, 200, 3)).await.code(), "00");

            // Another terminal, signed in on A and moved to B at once.
            let mut on_a = Terminal::connect(a.handle.local_addr(), TID_B).await;
            assert_eq!(on_a.sign_in().await.code(), "00");
            let mut moved = beside(b.handle.local_addr(), &on_a).await;
            assert_eq!(moved.send(&Req::purchase(&pan, 300, 1)).await.code(), "00");

            // The first terminal signed off on A: no keys on B either.
            let mut off = iso8583::MessageBuilder::new(iso8583::Mti::NETWORK_ADVICE);
            off.set_stan(4).unwrap();
            off.set_text(41, TID_A).unwrap().set_text(42, MID).unwrap();
            off.set_digits(60, "00000001002").unwrap();
            let signed_off = new.exchange(&new.encode_with_mac(&off, false)).await;
            assert_eq!(signed_off.code(), "00");
            assert!(
                answered_in_time(&mut via_b, 200, "77").await,
                "node B kept the keys node A's sign-off ended"
            );
            assert_eq!(via_b.send(&Req::purchase(&pan, 300, 5)).await.code(), "77");
            // Of the three key sets issued, the other terminal's PIK and MAK are left.
            let freed = eventually(15, || hsm.key_count() == before + 2).await;
            assert!(freed, "{} keys left of {before}", hsm.key_count());
        })
    });
}

#[test]
fn two_nodes_take_one_request_once_and_a_reversed_void_voids_nothing() {
    on_two_nodes("switch_nodes_race", &[TID_A], |log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = beside(b.handle.local_addr(), &via_a).await;
            // Each connection's batch is marked by its first request.
            assert_eq!(via_a.send(&Req::purchase(&pan, 100, 1)).await.code(), "00");
            assert_eq!(via_b.send(&Req::purchase(&pan, 100, 2)).await.code(), "00");

            for n in 0..6_u32 {
                let stan = 10 + n;
                let request = Req::purchase(&pan, 1_000 + u64::from(n), stan);
                let asked = log.requests.load(Ordering::SeqCst);
                let (on_a, on_b) = tokio::join!(via_a.send(&request), via_b.send(&request));
                assert_eq!(
                    log.requests.load(Ordering::SeqCst),
                    asked + 1,
                    "STAN {stan}: the issuer was asked twice"
                );
                assert_eq!((on_a.code(), on_b.code()), ("00".into(), "00".into()));
                assert_eq!(on_a.text(37), on_b.text(37), "STAN {stan}");
                assert_eq!(b.store.txns_by_key(TID_A, 1, stan).unwrap().len(), 1);
            }
            // A request both nodes refuse themselves (a card number failing its check digit): one
            // row, both answers the same.
            let mut bad = pan.clone().into_bytes();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'9' {
                b'0'
            } else {
                bad[last] + 1
            };
            let bad = String::from_utf8(bad).unwrap();
            for n in 0..4_u32 {
                let stan = 30 + n;
                let request = Req::purchase(&bad, 700, stan);
                let (on_a, on_b) = tokio::join!(via_a.send(&request), via_b.send(&request));
                assert_eq!(on_a.code(), on_b.code(), "STAN {stan}");
                assert_ne!(on_a.code(), "00");
                assert_eq!(
                    b.store.txns_by_key(TID_A, 1, stan).unwrap().len(),
                    1,
                    "STAN {stan}: a refused row written twice"
                );
            }

            // The void goes to node A, which waits 150 ms for the issuer; its reversal to node B.
            let sale_request = Req::purchase(&pan, SLOW_AMOUNT, 50);
            let sale = via_a.send(&sale_request).await;
            assert_eq!(sale.code(), "00");
            let sale_rrn = sale.text(37).unwrap();
            let void = Req::void(&pan, SLOW_AMOUNT, 51, 50, &sale_rrn);
            let void_bytes = via_a.encode(&void, false);
            let voiding = tokio::spawn(async move { via_a.exchange(&void_bytes).await.code() });
            let store = Arc::clone(&b.store);
            let in_flight = eventually(5, || {
                store
                    .txns_by_key(TID_A, 1, 51)
                    .unwrap()
                    .iter()
                    .any(|row| row.state == TxnState::InFlight)
            })
            .await;
            assert!(in_flight, "node A never journalled the void");
            assert_eq!(via_b.send(&Req::reversal_of(&void)).await.code(), "00");
            assert_eq!(voiding.await.unwrap(), "00", "node A's answer to the void");
            let void_row = store
                .txns_by_key(TID_A, 1, 51)
                .unwrap()
                .into_iter()
                .find(|row| row.kind == TxnKind::PurchaseVoid)
                .unwrap();
            assert_eq!(void_row.state, TxnState::Reversed);
            assert_eq!(
                store.txn_by_rrn(&sale_rrn).unwrap().unwrap().state,
                TxnState::Approved,
                "the sale was voided by a void the terminal reversed"
            );
            let reversed = eventually(10, || {
                store
                    .reversal(void_row.id)
                    .unwrap()
                    .is_some_and(|item| item.state == SafState::Acked)
            })
            .await;
            assert!(reversed, "the void's reversal never reached the issuer");
            drop(via_b);
        })
    });
}

/// A sale made through node A and refunded in full through node B (another terminal of the
/// merchant): the terminal's reversal of the sale, sent to node A, whose memory still holds
/// the sale unrefunded, is refused (12) as on one node, not a second credit to the card.
#[test]
fn a_reversal_on_one_node_of_a_sale_refunded_on_the_other_is_refused() {
    on_two_nodes("switch_nodes_refund", &[TID_A, TID_B], |log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = Terminal::connect(b.handle.local_addr(), TID_B).await;
            assert_eq!(via_b.sign_in().await.code(), "00");
            let sale_request = Req::purchase(&pan, 50_000, 2);
            let sale = via_a.send(&sale_request).await;
            assert_eq!(sale.code(), "00");
            let rrn = sale.text(37).unwrap();
            let today = switch::LocalTime::from_ms(switch::Clock::now_ms(&SystemClock)).mmdd();
            let refund = via_b
                .send(&Req::refund(&pan, 50_000, 2, &rrn, &today))
                .await;
            assert_eq!(refund.code(), "00", "the refund through node B");
            let reversals = log.reversals.lock().unwrap().len();
            let reversal = via_a.send(&Req::reversal_of(&sale_request)).await;
            assert_eq!(reversal.code(), "12", "node A reversed a refunded sale");
            let row = b.store.txn_by_rrn(&rrn).unwrap().unwrap();
            assert_eq!((row.state, row.refunded_fen), (TxnState::Approved, 50_000));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(log.reversals.lock().unwrap().len(), reversals);
        })
    });
}

/// A purchase approved through node A and reversed by its terminal through node B: the
/// terminal's resend of the purchase to node A, whose memory still holds it approved, is told
/// 98 (the money is being given back), not "approved" with an auth code a second time.
#[test]
fn a_resend_on_one_node_of_a_purchase_reversed_on_the_other_is_not_approved() {
    on_two_nodes("switch_nodes_resend", &[TID_A], |log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = beside(b.handle.local_addr(), &via_a).await;
            let sale_request = Req::purchase(&pan, 2_345, 7);
            let sale = via_a.send(&sale_request).await;
            assert_eq!(sale.code(), "00");
            let rrn = sale.text(37).unwrap();
            assert_eq!(
                via_b.send(&Req::reversal_of(&sale_request)).await.code(),
                "00"
            );
            let row = b.store.txn_by_rrn(&rrn).unwrap().unwrap();
            assert_eq!(row.state, TxnState::Reversed);

            let asked = log.requests.load(Ordering::SeqCst);
            let resent = via_a.send(&sale_request).await;
            assert_eq!(
                resent.code(),
                "98",
                "node A answered a resend of a purchase reversed on node B as approved"
            );
            assert_eq!(
                resent.text(38),
                None,
                "an auth code given for a reversed sale"
            );
            assert_eq!(
                log.requests.load(Ordering::SeqCst),
                asked,
                "the resend reached the issuer"
            );
            // Node B, where the reversal was taken, says the same.
            assert_eq!(via_b.send(&sale_request).await.code(), "98");
        })
    });
}

/// A purchase whose terminal's reversal reached node B first (the purchase held up on its way
/// to node A) is not sent to the issuer by node A: it finds the reversal in the journal.
#[test]
fn a_purchase_after_its_reversal_on_the_other_node_is_not_sent() {
    on_two_nodes("switch_nodes_reversed_first", &[TID_A], |log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = beside(b.handle.local_addr(), &via_a).await;
            // Each connection's batch is marked by its first request.
            assert_eq!(via_a.send(&Req::purchase(&pan, 100, 1)).await.code(), "00");
            assert_eq!(via_b.send(&Req::purchase(&pan, 100, 2)).await.code(), "00");
            let late = Req::purchase(&pan, 2_468, 9);
            assert_eq!(via_b.send(&Req::reversal_of(&late)).await.code(), "00");
            let asked = log.requests.load(Ordering::SeqCst);
            assert_eq!(via_a.send(&late).await.code(), "12");
            assert_eq!(
                log.requests.load(Ordering::SeqCst),
                asked,
                "node A sent the issuer a purchase its terminal had reversed"
            );
        })
    });
}

/// A session of the test's own holding a terminal ID's row in `key_locks`, which every
/// claim of a key of that ID waits for: requests read the journal and then queue up behind
/// it, in the order they came.
struct KeyLock {
    client: tokio_postgres::Client,
}

impl KeyLock {
    async fn take(schema: &str, tid: &str) -> KeyLock {
        let url = pg_url().unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET search_path TO {schema}; BEGIN; \
                 SELECT tid FROM key_locks WHERE tid = '{tid}' FOR UPDATE"
            ))
            .await
            .unwrap();
        KeyLock { client }
    }

    /// Returns once `n` other sessions wait for this one: directly, or behind one that does
    /// (the second in the queue for a row waits for the first).
    async fn until_waiting(&self, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity w \
                     WHERE pg_backend_pid() = ANY(pg_blocking_pids(w.pid)) \
                     OR EXISTS (SELECT 1 FROM pg_stat_activity f \
                                WHERE f.pid = ANY(pg_blocking_pids(w.pid)) \
                                AND pg_backend_pid() = ANY(pg_blocking_pids(f.pid)))",
                    &[],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) >= n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} never waited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn release(self) {
        self.client.batch_execute("COMMIT").await.unwrap();
    }
}

/// A purchase and its own reversal crossing between the nodes: each node read the journal
/// before the other's row was in, then both queue to write. Whichever is written first, no
/// money moves for a sale the terminal reversed: the reversal first, the purchase is refused
/// (12) and never sent; the purchase first, the reversal is answered 96 and its resend
/// reverses the purchase at the issuer.
#[test]
fn a_purchase_and_its_reversal_crossing_between_nodes_move_no_money() {
    let name = "switch_nodes_crossing";
    on_two_nodes(name, &[TID_A], |log, a, b| {
        Box::pin(async move {
            let schema = format!("{name}_{}", std::process::id());
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = beside(b.handle.local_addr(), &via_a).await;
            // Each connection's batch is marked by its first request.
            assert_eq!(via_a.send(&Req::purchase(&pan, 100, 1)).await.code(), "00");
            assert_eq!(via_b.send(&Req::purchase(&pan, 100, 2)).await.code(), "00");

            // The reversal through B is written first.
            let sale = Req::purchase(&pan, 1_357, 20);
            let reversal = Req::reversal_of(&sale);
            let asked = log.requests.load(Ordering::SeqCst);
            let lock = KeyLock::take(&schema, TID_A).await;
            let (reversed, sold) = tokio::join!(via_b.send(&reversal), async {
                lock.until_waiting(1).await;
                let (sold, ()) = tokio::join!(via_a.send(&sale), async {
                    lock.until_waiting(2).await;
                    lock.release().await;
                });
                sold
            });
            assert_eq!(reversed.code(), "00");
            assert_eq!(sold.code(), "12", "a purchase after its own reversal");
            assert_eq!(
                log.requests.load(Ordering::SeqCst),
                asked,
                "the issuer was sent a purchase its terminal had reversed"
            );
            let rows = b.store.txns_by_key(TID_A, 1, 20).unwrap();
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0].kind, TxnKind::Reversal);

            // The purchase through A is written first.
            let sale = Req::purchase(&pan, 2_468, 21);
            let reversal = Req::reversal_of(&sale);
            let lock = KeyLock::take(&schema, TID_A).await;
            let (sold, reversed) = tokio::join!(via_a.send(&sale), async {
                lock.until_waiting(1).await;
                let (reversed, ()) = tokio::join!(via_b.send(&reversal), async {
                    lock.until_waiting(2).await;
                    lock.release().await;
                });
                reversed
            });
            assert_eq!(sold.code(), "00");
            assert_eq!(reversed.code(), "96", "a reversal that found no original");
            // The terminal resends its reversal until it is answered: now it finds the sale.
            assert_eq!(via_b.send(&reversal).await.code(), "00");
            let store = Arc::clone(&b.store);
            let undone = eventually(10, || {
                store
                    .txns_by_key(TID_A, 1, 21)
                    .unwrap()
                    .iter()
                    .any(|row| row.kind == TxnKind::Purchase && row.state == TxnState::Reversed)
            })
            .await;
            assert!(undone, "{:?}", b.store.txns_by_key(TID_A, 1, 21).unwrap());
        })
    });
}

/// A void through node B of a sale that node A still had at the issuer when B first read it:
/// B held the sale in flight, and once A's approval is in the journal B takes it (and its
/// auth code, which the void is checked against) from there, instead of refusing the void
/// for ever because its own memory says the sale is still in flight.
#[test]
fn a_sale_read_in_flight_by_one_node_is_voidable_there_once_the_other_approved_it() {
    on_two_nodes("switch_nodes_in_flight", &[TID_A], |_log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let mut via_b = beside(b.handle.local_addr(), &via_a).await;
            // Node A's sale waits 150 ms at the issuer.
            let sale_bytes = via_a.encode(&Req::purchase(&pan, SLOW_AMOUNT, 5), false);
            let selling = tokio::spawn(async move { via_a.exchange(&sale_bytes).await });
            let store = Arc::clone(&b.store);
            let in_flight = eventually(5, || {
                store
                    .txns_by_key(TID_A, 1, 5)
                    .unwrap()
                    .iter()
                    .any(|row| row.state == TxnState::InFlight)
            })
            .await;
            assert!(in_flight, "node A never journalled the sale");
            let rrn = store.txns_by_key(TID_A, 1, 5).unwrap()[0]
                .rrn
                .clone()
                .unwrap();
            // Node B reads it while it is in flight: nothing to void yet.
            let early = via_b.send(&Req::void(&pan, SLOW_AMOUNT, 6, 5, &rrn)).await;
            assert_ne!(early.code(), "00", "a sale still in flight was voided");
            let sale = selling.await.unwrap();
            assert_eq!(sale.code(), "00");
            assert_eq!(sale.text(37).as_deref(), Some(rrn.as_str()));
            let void = via_b.send(&Req::void(&pan, SLOW_AMOUNT, 7, 5, &rrn)).await;
            assert_eq!(
                void.code(),
                "00",
                "node B kept the sale in flight after node A's approval"
            );
            assert_eq!(
                store.txn_by_rrn(&rrn).unwrap().unwrap().state,
                TxnState::Voided
            );
        })
    });
}

/// A terminal settles batch 1 on node A and loses the answer, then signs in on node B naming
/// batch 1 (node B's memory still has it open): node B keeps it in the batch the journal's row
/// holds, 2, and says so in 60.2, rather than opening the settled batch again.
#[test]
fn a_sign_in_on_the_other_node_naming_a_batch_settled_on_one_keeps_the_next() {
    on_two_nodes("switch_nodes_batch", &[TID_A], |_log, a, b| {
        Box::pin(async move {
            let pan = card("622202");
            let mut via_b = Terminal::connect(b.handle.local_addr(), TID_A).await;
            assert_eq!(via_b.sign_in().await.code(), "00");
            assert_eq!(via_b.send(&Req::purchase(&pan, 100, 1)).await.code(), "00");
            let mut via_a = Terminal::connect(a.handle.local_addr(), TID_A).await;
            assert_eq!(via_a.sign_in().await.code(), "00");
            let totals = iso8583::SettlementTotals {
                domestic: iso8583::Totals {
                    debit_amount: 100,
                    debit_count: 1,
                    credit_amount: 0,
                    credit_count: 0,
                    result: iso8583::SettleResult::REQUEST,
                },
                foreign: iso8583::Totals::default(),
            };
            let mut out = iso8583::MessageBuilder::new(iso8583::Mti::SETTLEMENT);
            out.set_stan(900).unwrap();
            out.set_text(41, TID_A).unwrap();
            out.set_text(42, common::MID).unwrap();
            out.set_composed(&totals).unwrap();
            out.set_text(49, "156").unwrap();
            out.set_digits(60, "00000001201").unwrap();
            out.set_text(63, "001").unwrap();
            let mut bytes = Vec::new();
            out.encode_frame(&common::head(), &mut bytes).unwrap();
            assert_eq!(via_a.exchange(&bytes).await.code(), "00");
            assert_eq!(a.store.terminal(TID_A).unwrap().unwrap().batch_no, 2);

            let mut again = Terminal::connect(b.handle.local_addr(), TID_A).await;
            assert_eq!(again.batch, 1);
            assert_eq!(again.sign_in().await.code(), "00");
            assert_eq!(again.batch, 2, "the settled batch opened again on node B");
            assert_eq!(b.store.terminal(TID_A).unwrap().unwrap().batch_no, 2);
        })
    });
}
