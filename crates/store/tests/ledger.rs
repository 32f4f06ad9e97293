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

/// Eight submissions at once, `records(n)` for n in 0..8, alternating between stores `a` and
/// `b` (two nodes on one database): how many were committed, the others refused by a
/// constraint.
fn committed_of_eight(
    a: &dyn store::Store,
    b: &dyn store::Store,
    records: impl Fn(i64) -> Vec<Record> + Sync,
) -> usize {
    let committed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for n in 0..8_i64 {
            let (store, committed, records) =
                (if n % 2 == 0 { a } else { b }, &committed, &records);
            scope.spawn(move || match store.submit(records(n)).unwrap().wait() {
                Ok(()) => {
                    committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(StoreError::Constraint { .. }) => {}
                Err(other) => panic!("{other:?}"),
            });
        }
    });
    committed.into_inner()
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
    let paid = committed_of_eight(&*a, &*b, |n| {
        vec![
            Record::Settlement(SettlementRecord::Postings(vec![posting(
                10 + n,
                "20261124",
                &[(&payable, 9_945), ("in_flight", -9_945)],
            )])),
            Record::Settlement(SettlementRecord::BalanceAtMost {
                mid: mid.into(),
                account: payable.clone(),
                max_fen: 0,
                from_date: None,
            }),
        ]
    });
    assert_eq!(paid, 1);
    assert_eq!(a.ledger_balance(&payable, None).unwrap(), 0);
    assert_eq!(b.ledger_balance("in_flight", None).unwrap(), -9_945);
}

/// Two payouts of the same money due by different cutoffs, while sales not yet due keep the
/// whole balance below zero: whichever comes second is refused, in either order, because the
/// balance is counted up to each value date from its cutoff on.
fn money_due_is_paid_once_whatever_is_not_yet_due(db: &Db) {
    let store = db.open();
    let orders = [("20261123", "20261124"), ("20261124", "20261123")];
    for (n, (first, second)) in (0_i64..).zip(orders) {
        let mid = format!("89811004899000{n}");
        let payable = format!("merchant:{mid}:payable");
        let pay = |id: i64, cutoff: &str| {
            store
                .submit(vec![
                    Record::Settlement(SettlementRecord::Postings(vec![posting(
                        id,
                        cutoff,
                        &[(&payable, 1_000), ("in_flight", -1_000)],
                    )])),
                    Record::Settlement(SettlementRecord::BalanceAtMost {
                        mid: mid.clone(),
                        account: payable.clone(),
                        max_fen: 0,
                        from_date: Some(cutoff.into()),
                    }),
                ])
                .unwrap()
                .wait()
        };
        store
            .submit(vec![
                Record::UpsertMerchant(store::MerchantRow {
                    mid: mid.clone(),
                    name: "Noodle bar".into(),
                    status: store::Status::Active,
                    mcc: "5812".into(),
                }),
                // 1,000 due by the 23rd; 5,000 of sales valued the 27th, not yet due.
                Record::Settlement(SettlementRecord::Postings(vec![
                    posting(
                        10 * n + 1,
                        "20261123",
                        &[("issuer", 1_000), (&payable, -1_000)],
                    ),
                    posting(
                        10 * n + 2,
                        "20261127",
                        &[("issuer", 5_000), (&payable, -5_000)],
                    ),
                ])),
            ])
            .unwrap()
            .wait()
            .unwrap();
        pay(10 * n + 3, first).unwrap();
        let again = pay(10 * n + 4, second);
        assert!(
            matches!(again, Err(StoreError::Constraint { .. })),
            "{first} then {second}: {again:?}"
        );
        assert_eq!(store.ledger_balance(&payable, Some("20261124")).unwrap(), 0);
        assert_eq!(store.ledger_balance(&payable, None).unwrap(), -5_000);
        // What is not yet due by one cutoff is paid by a later one.
        pay(10 * n + 5, "20261127").unwrap();
    }
}

/// Payouts netted against one merchant debt at once, through two stores (two nodes, or two
/// runs that read the same debt): `BalanceAtLeast` lets the nettings take the debt to zero and
/// no further; the one that would take it past zero is refused whole, its posting with it.
fn a_debt_is_netted_once_whoever_nets_it(db: &Db) {
    let (a, b) = (db.open(), db.open());
    let mid = "898110048990002";
    let payable = format!("merchant:{mid}:payable");
    // The merchant owes 3,000: refunds cleared with nothing owed to it to take them from.
    a.submit(vec![
        Record::UpsertMerchant(store::MerchantRow {
            mid: mid.into(),
            name: "Bakery".into(),
            status: store::Status::Active,
            mcc: "5462".into(),
        }),
        Record::Settlement(SettlementRecord::Postings(vec![posting(
            1,
            "20261124",
            &[(&payable, 3_000), ("issuer", -3_000)],
        )])),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let netting = |id: i64, fen: i64| {
        vec![
            Record::Settlement(SettlementRecord::Postings(vec![posting(
                id,
                "20261125",
                &[("in_flight", fen), (&payable, -fen)],
            )])),
            Record::Settlement(SettlementRecord::BalanceAtLeast {
                mid: mid.into(),
                account: payable.clone(),
                min_fen: 0,
            }),
        ]
    };
    let net = |store: &dyn store::Store, id: i64, fen: i64| {
        store.submit(netting(id, fen)).unwrap().wait()
    };
    assert_eq!(committed_of_eight(&*a, &*b, |n| netting(10 + n, 3_000)), 1);
    assert_eq!(a.ledger_balance(&payable, None).unwrap(), 0);
    assert_eq!(b.ledger_balance("in_flight", None).unwrap(), 3_000);
    // Part of a debt: the rest stays owed, and a netting larger than the rest is refused.
    a.submit(vec![Record::Settlement(SettlementRecord::Postings(vec![
        posting(30, "20261126", &[(&payable, 2_500), ("issuer", -2_500)]),
    ]))])
    .unwrap()
    .wait()
    .unwrap();
    net(&*a, 31, 2_000).unwrap();
    assert!(matches!(
        net(&*b, 32, 2_000),
        Err(StoreError::Constraint { .. })
    ));
    net(&*b, 33, 500).unwrap();
    assert_eq!(a.ledger_balance(&payable, None).unwrap(), 0);
}

on_both!(
    postings_and_balances,
    a_balance_is_paid_out_once_whoever_asks,
    money_due_is_paid_once_whatever_is_not_yet_due,
    a_debt_is_netted_once_whoever_nets_it
);
