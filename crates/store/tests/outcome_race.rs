//! Two store behaviours the switch's fault handling relies on (SQLite): a transaction reversed
//! while its request was at the issuer stays reversed when the issuer's late answer is
//! written; and the inline writer (deterministic simulation) commits before `submit` returns
//! and honours the page quota like the writer thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use store::{
    MerchantRow, Outcome, Record, SqliteConfig, SqliteStore, Status, Store, TxnKind, TxnRow,
    TxnState,
};

fn row(id: i64) -> TxnRow {
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
        host_trace: Some(1),
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
        received_at_ms: 1,
        sent_at_ms: Some(2),
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

fn approved(id: i64) -> Record {
    Record::Outcome(Outcome {
        id,
        state: TxnState::Approved,
        response_code: "00".into(),
        auth_code: Some("123456".into()),
        settlement_date: None,
        issuer_answered_at_ms: Some(3),
        answered_at_ms: 3,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn open(dir: &tempfile::TempDir, inline: bool) -> SqliteStore {
    let mut config = SqliteConfig::new(dir.path().join("s.db"));
    config.inline_writer = inline;
    SqliteStore::open(&config).unwrap()
}

#[test]
fn a_late_approval_does_not_unreverse_a_transaction() {
    runtime().block_on(async {
        for inline in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir, inline);
            let merchant = Record::UpsertMerchant(MerchantRow {
                mid: "898110048990001".into(),
                name: "Teahouse".into(),
                status: Status::Active,
                mcc: "5812".into(),
            });
            store
                .submit(vec![
                    merchant,
                    Record::InsertTxn(Box::new(row(1))),
                    Record::InsertTxn(Box::new(row(2))),
                ])
                .unwrap()
                .await
                .unwrap();
            // 1: the terminal's reversal came first, then the issuer's approval.
            store
                .submit(vec![Record::State {
                    id: 1,
                    state: TxnState::Reversed,
                }])
                .unwrap()
                .await
                .unwrap();
            store.submit(vec![approved(1)]).unwrap().await.unwrap();
            let one = store.txn(1).unwrap().unwrap();
            assert_eq!(one.state, TxnState::Reversed, "inline {inline}");
            // The answer itself is kept for the timeline.
            assert_eq!(one.response_code.as_deref(), Some("00"));
            assert_eq!(one.auth_code.as_deref(), Some("123456"));
            // 2: no reversal, the approval applies.
            store.submit(vec![approved(2)]).unwrap().await.unwrap();
            assert_eq!(store.txn(2).unwrap().unwrap().state, TxnState::Approved);
        }
    });
}

#[test]
fn inline_writer_commits_before_submit_returns_and_honours_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    let first = store.reserve("ids", 10).unwrap();
    // Committed inside `reserve` itself: the future is dropped unpolled.
    drop(first);
    let next = runtime()
        .block_on(store.reserve("ids", 10).unwrap())
        .unwrap();
    assert_eq!(next, 11);
    store.set_page_quota(Some(1));
    let mut failed = false;
    for i in 1..500 {
        let event = Record::Event(store::EventRow {
            txn_id: i,
            at_ms: 0,
            kind: "note".into(),
            detail: "x".repeat(400),
        });
        if runtime()
            .block_on(store.submit(vec![event]).unwrap())
            .is_err()
        {
            failed = true;
            break;
        }
    }
    assert!(failed, "the quota never filled");
    store.set_page_quota(None);
    let event = Record::Event(store::EventRow {
        txn_id: 0,
        at_ms: 0,
        kind: "note".into(),
        detail: "room again".into(),
    });
    runtime()
        .block_on(store.submit(vec![event]).unwrap())
        .unwrap();
}
