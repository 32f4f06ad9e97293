//! Several nodes on one PostgreSQL database (two `PgStore`s on one schema): counters handed out
//! in disjoint blocks, and due reversals claimed by one node at a time, taken over by another
//! once the claim's lease has run out (its owner died without recording an outcome).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

mod backend;
use backend::{Db, Opened};
use store::{MerchantRow, Record, Status, TerminalRow, TxnKind, TxnRow, TxnState};

fn nodes() -> Option<(Db, Arc<Opened>, Arc<Opened>)> {
    let db = Db::postgres()?;
    let a = Arc::new(db.open());
    let b = Arc::new(db.open());
    Some((db, a, b))
}

#[test]
fn counters_reserved_by_two_nodes_never_overlap() {
    let Some((_db, a, b)) = nodes() else { return };
    const BLOCKS: u64 = 200;
    const BLOCK: u64 = 10;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let firsts = runtime.block_on(async {
        let mut handles = Vec::new();
        for node in [a, b] {
            handles.push(tokio::spawn(async move {
                let mut firsts = Vec::new();
                for _ in 0..BLOCKS {
                    firsts.push(node.reserve("rrn", BLOCK).unwrap().await.unwrap());
                }
                firsts
            }));
        }
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.unwrap());
        }
        all
    });
    let mut values = HashSet::new();
    for first in firsts {
        for value in first..first + BLOCK {
            assert!(values.insert(value), "value {value} handed out twice");
        }
    }
    assert_eq!(values.len() as u64, 2 * BLOCKS * BLOCK);
    assert_eq!(values.iter().max(), Some(&(2 * BLOCKS * BLOCK)));
}

fn txn(id: i64) -> TxnRow {
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: "898110048990001".into(),
        batch_no: 1,
        stan: u32::try_from(id).unwrap(),
        kind: TxnKind::Purchase,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: 100,
        currency: "156".into(),
        pan: None,
        issuer: Some("ICBC".into()),
        rrn: Some(format!("{id:012}")),
        host_trace: None,
        auth_code: None,
        response_code: None,
        state: TxnState::InFlight,
        request_hash: vec![1; 16],
        original_id: None,
        refunded_fen: 0,
        field60: None,
        host_date: None,
        clearing_date: "20261123".into(),
        settlement_date: None,
        received_at_ms: id,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

#[test]
fn reversals_are_claimed_by_one_node_and_taken_over_after_the_lease() {
    let Some((_db, a, b)) = nodes() else { return };
    const ITEMS: i64 = 300;
    let mut records = vec![
        Record::UpsertMerchant(MerchantRow {
            mid: "898110048990001".into(),
            name: "Teahouse".into(),
            status: Status::Active,
            mcc: "5812".into(),
        }),
        Record::UpsertTerminal(Box::new(TerminalRow {
            tid: "10000001".into(),
            mid: "898110048990001".into(),
            tmk_wrapped: vec![1],
            key_scheme: "003".into(),
            mac_algorithm: "cup_ecb".into(),
            status: Status::Active,
            batch_no: 1,
            last_sign_in_ms: None,
            working_keys: None,
        })),
    ];
    for id in 1..=ITEMS {
        records.push(Record::InsertTxn(Box::new(txn(id))));
        records.push(Record::SafEnqueue {
            txn_id: id,
            issuer: "ICBC".into(),
            reason: "98".into(),
            next_attempt_ms: 0,
        });
    }
    a.submit(records).unwrap().wait().unwrap();

    // Both nodes claim small slices at once until nothing is due at t=1000 (lease 60 s).
    let claim_all = |node: Arc<Opened>| {
        std::thread::spawn(move || {
            let mut mine = Vec::new();
            loop {
                let got = node
                    .claim_reversals(1_000, 60_000, 7)
                    .unwrap()
                    .wait()
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                assert!(got.iter().all(|i| i.next_attempt_ms == 61_000));
                mine.extend(got.into_iter().map(|i| i.txn_id));
            }
        })
    };
    let (ta, tb) = (claim_all(Arc::clone(&a)), claim_all(Arc::clone(&b)));
    let (from_a, from_b) = (ta.join().unwrap(), tb.join().unwrap());
    let mut seen = HashSet::new();
    for id in from_a.iter().chain(&from_b) {
        assert!(seen.insert(*id), "reversal {id} claimed by both nodes");
    }
    assert_eq!(seen.len(), usize::try_from(ITEMS).unwrap());

    // Node A dies with its claims open: before the lease ends nobody may take them, after it
    // node B takes every one of them over.
    a.close();
    drop(a);
    assert!(
        b.claim_reversals(60_999, 60_000, 1_000)
            .unwrap()
            .wait()
            .unwrap()
            .is_empty()
    );
    let taken: HashSet<i64> = b
        .claim_reversals(61_000, 60_000, 1_000)
        .unwrap()
        .wait()
        .unwrap()
        .into_iter()
        .map(|i| i.txn_id)
        .collect();
    assert_eq!(taken, seen);
}
