//! Ledger postings and balances on both backends: sums over BIGINT come back as integers
//! (PostgreSQL answers NUMERIC), value-date cut-offs, and an unbalanced posting refused whole.

#![allow(clippy::unwrap_used, clippy::panic)]

mod backend;
use backend::Db;
use store::settlement::{LegRow, PostingRow, SettlementRecord};
use store::{Record, StoreError};

fn posting(id: i64, value_date: &str, legs: &[(&str, i64)]) -> PostingRow {
    PostingRow {
        id,
        at_ms: 1_000 + id,
        value_date: value_date.into(),
        kind: "clearing".into(),
        reference: format!("clear:{value_date}:M{id}"),
        legs: legs
            .iter()
            .map(|(account, amount_fen)| LegRow {
                account: (*account).into(),
                amount_fen: *amount_fen,
            })
            .collect(),
    }
}

fn postings_and_balances(db: &Db) {
    let store = db.open();
    let big = 9_000_000_000_000_i64;
    store
        .submit(vec![Record::Settlement(SettlementRecord::Postings(vec![
            posting(1, "20261123", &[("issuer", 10_000), ("merchant", -10_000)]),
            posting(2, "20261124", &[("issuer", big), ("merchant", -big)]),
        ]))])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        store.ledger_balances().unwrap(),
        vec![
            ("issuer".to_owned(), 10_000 + big),
            ("merchant".to_owned(), -10_000 - big)
        ]
    );
    assert_eq!(
        store.ledger_balance("merchant", Some("20261123")).unwrap(),
        -10_000
    );
    assert_eq!(store.ledger_balance("nobody", None).unwrap(), 0);
    assert!(store.unbalanced_postings().unwrap().is_empty());
    let found = store.postings_by_reference("clear:20261123:M1").unwrap();
    assert_eq!(
        found,
        vec![posting(
            1,
            "20261123",
            &[("issuer", 10_000), ("merchant", -10_000)]
        )]
    );
    let refused = store
        .submit(vec![Record::Settlement(SettlementRecord::Postings(vec![
            posting(3, "20261124", &[("issuer", 5)]),
        ]))])
        .unwrap()
        .wait();
    assert!(
        matches!(refused, Err(StoreError::Constraint { .. })),
        "{refused:?}"
    );
    assert!(
        store
            .postings_by_reference("clear:20261124:M3")
            .unwrap()
            .is_empty()
    );
}

/// Payouts of one balance submitted at once through two stores (two nodes on one database):
/// `BalanceAtMost` lets exactly one take the merchant's payable to zero; the others are refused
/// whole, their postings with them.
fn a_balance_is_paid_out_once_whoever_asks(db: &Db) {
    let (a, b) = (db.open(), db.open());
    let mid = "898110048990001";
    let payable = format!("merchant:{mid}:payable");
    a.submit(vec![
        Record::UpsertMerchant(store::MerchantRow {
            mid: mid.into(),
            name: "Teahouse".into(),
            status: store::Status::Active,
            mcc: "5812".into(),
        }),
        Record::Settlement(SettlementRecord::Postings(vec![posting(
            1,
            "20261123",
            &[("issuer", 9_945), (&payable, -9_945)],
        )])),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let paid = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for n in 0..8_i64 {
            let (store, payable, paid) = (if n % 2 == 0 { &a } else { &b }, &payable, &paid);
            scope.spawn(move || {
                let result = store
                    .submit(vec![
                        Record::Settlement(SettlementRecord::Postings(vec![posting(
                            10 + n,
                            "20261124",
                            &[(payable, 9_945), ("in_flight", -9_945)],
                        )])),
                        Record::Settlement(SettlementRecord::BalanceAtMost {
                            mid: mid.into(),
                            account: payable.clone(),
                            max_fen: 0,
                        }),
                    ])
                    .unwrap()
                    .wait();
                match result {
                    Ok(()) => {
                        paid.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(StoreError::Constraint { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            });
        }
    });
    assert_eq!(paid.into_inner(), 1);
    assert_eq!(a.ledger_balance(&payable, None).unwrap(), 0);
    assert_eq!(b.ledger_balance("in_flight", None).unwrap(), -9_945);
}

on_both!(
    postings_and_balances,
    a_balance_is_paid_out_once_whoever_asks
);
