//! The risk area of the store on a real SQLite file: merchant profiles and reviews, alerts with
//! their transactions, resolving an alert, suspending a terminal, and the outbox tail by id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use store::risk::{
    AlertAction, AlertState, MerchantProfileRow, MerchantReviewRow, MerchantState, RiskAlertRow,
    RiskRecord,
};
mod backend;
use backend::Db;
use store::{MerchantRow, Record, Status, StoreError, TerminalRow};

fn merchant(mid: &str) -> Record {
    Record::UpsertMerchant(MerchantRow {
        mid: mid.into(),
        name: "Teahouse".into(),
        status: Status::Suspended,
        mcc: "5812".into(),
    })
}

fn profile(state: MerchantState) -> MerchantProfileRow {
    MerchantProfileRow {
        mid: "M1".into(),
        state,
        licence_no: "91310000MA1FL0001X".into(),
        legal_person: "Zhang San".into(),
        mcc: "5812".into(),
        address: "1 Nanjing Road".into(),
        applied_at_ms: 5,
        reviewed_by: None,
        reviewed_at_ms: None,
        note: None,
    }
}

fn alert(id: i64, txn_ids: Vec<i64>) -> Record {
    Record::Risk(RiskRecord::Alert(Box::new(RiskAlertRow {
        id,
        kind: "card-testing".into(),
        rule_id: "ct".into(),
        action: AlertAction::Decline,
        mid: "M1".into(),
        tid: "T1".into(),
        detail: "6 small declines".into(),
        // Odd ids as raised before the Chinese words were kept.
        detail_zh: (id % 2 == 0).then(|| "6 笔小额交易被拒".into()),
        txn_ids,
        raised_at_ms: 1_000 + id,
        state: AlertState::Open,
        resolved_by: None,
        resolved_at_ms: None,
        resolution: None,
    })))
}

async fn profiles_reviews_alerts_round_trip(db: &Db) {
    let store = db.open();
    let profile = profile(MerchantState::Applied);
    store
        .submit(vec![
            merchant("M1"),
            Record::UpsertTerminal(Box::new(TerminalRow {
                tid: "T1".into(),
                mid: "M1".into(),
                tmk_wrapped: vec![0; 8],
                key_scheme: "003".into(),
                mac_algorithm: "cup-ecb".into(),
                status: Status::Active,
                batch_no: 1,
                last_sign_in_ms: None,
                working_keys: None,
            })),
            Record::Risk(RiskRecord::Profile(profile.clone())),
            Record::Risk(RiskRecord::Review(MerchantReviewRow {
                mid: "M1".into(),
                at_ms: 5,
                operator: "alice".into(),
                action: "apply".into(),
                from_state: None,
                to_state: MerchantState::Applied,
                note: String::new(),
            })),
        ])
        .unwrap()
        .await
        .unwrap();
    assert_eq!(store.merchant_profile("M1").unwrap(), Some(profile.clone()));
    assert_eq!(store.merchant_profile("M2").unwrap(), None);
    assert_eq!(store.merchant_reviews("M1").unwrap().len(), 1);
    // A second application's insert-only profile (it read "no such merchant" before the first
    // was written) fails, and with it the records beside it; the first stands.
    let mut later = profile.clone();
    later.licence_no = "other".into();
    let refused = store
        .submit(vec![
            merchant("M1"),
            Record::Risk(RiskRecord::NewProfile(later)),
            Record::Risk(RiskRecord::Review(MerchantReviewRow {
                mid: "M1".into(),
                at_ms: 6,
                operator: "bob".into(),
                action: "apply".into(),
                from_state: None,
                to_state: MerchantState::Applied,
                note: String::new(),
            })),
        ])
        .unwrap()
        .await;
    assert!(
        matches!(refused, Err(store::StoreError::Constraint { .. })),
        "{refused:?}"
    );
    assert_eq!(store.merchant_profile("M1").unwrap(), Some(profile.clone()));
    assert_eq!(store.merchant_reviews("M1").unwrap().len(), 1);
    // Reviews of one millisecond in the order written (the last is whose the four-eyes check
    // reads), also once a row has moved in the table: on PostgreSQL an updated row (or one a
    // VACUUM FULL rewrote) lies elsewhere, and `ctid` alone put alice's last.
    let review = |operator: &str| {
        Record::Risk(RiskRecord::Review(MerchantReviewRow {
            mid: "M1".into(),
            at_ms: 5,
            operator: operator.into(),
            action: "note".into(),
            from_state: Some(MerchantState::Applied),
            to_state: MerchantState::Applied,
            note: String::new(),
        }))
    };
    store
        .submit(vec![review("carol"), review("dave")])
        .unwrap()
        .await
        .unwrap();
    if let Some(config) = db.pg_config() {
        let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let schema = config.schema.unwrap();
        client
            .batch_execute(&format!(
                "UPDATE {schema}.merchant_reviews SET note = note WHERE operator = 'alice'"
            ))
            .await
            .unwrap();
    }
    let operators: Vec<String> = store
        .merchant_reviews("M1")
        .unwrap()
        .into_iter()
        .map(|r| r.operator)
        .collect();
    assert_eq!(operators, ["alice", "carol", "dave"]);

    store
        .submit(vec![
            alert(1, vec![10, 11, 12]),
            alert(2, vec![]),
            alert(3, vec![13]),
        ])
        .unwrap()
        .await
        .unwrap();
    let one = store.risk_alert(1).unwrap().unwrap();
    assert_eq!(one.txn_ids, vec![10, 11, 12]);
    assert_eq!(one.detail, "6 small declines");
    assert_eq!(one.detail_zh, None);
    let two = store.risk_alert(2).unwrap().unwrap();
    assert_eq!(two.detail_zh.as_deref(), Some("6 笔小额交易被拒"));
    let open = store.risk_alerts(Some(AlertState::Open), 10).unwrap();
    assert_eq!(open.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 2, 1]);

    let tail = store.risk_alerts_after(1, 10).unwrap();
    assert_eq!(tail.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(tail[1].txn_ids, vec![13]);
    // Another node's block of ids: a higher id raised earlier lists after the newer ones.
    let Record::Risk(RiskRecord::Alert(mut earlier)) = alert(10_001, vec![]) else {
        unreachable!()
    };
    earlier.raised_at_ms = 500;
    store
        .submit(vec![Record::Risk(RiskRecord::Alert(earlier))])
        .unwrap()
        .await
        .unwrap();
    let open = store.risk_alerts(Some(AlertState::Open), 10).unwrap();
    assert_eq!(
        open.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![3, 2, 1, 10_001]
    );
    store
        .submit(vec![Record::Risk(RiskRecord::ResolveAlert {
            id: 10_001,
            state: AlertState::Cleared,
            by: "bob".into(),
            at_ms: 98,
            resolution: "test".into(),
        })])
        .unwrap()
        .await
        .unwrap();

    store
        .submit(vec![
            Record::Risk(RiskRecord::ResolveAlert {
                id: 1,
                state: AlertState::Acted,
                by: "bob".into(),
                at_ms: 99,
                resolution: "terminal suspended".into(),
            }),
            Record::Risk(RiskRecord::TerminalStatus {
                tid: "T1".into(),
                status: Status::Suspended,
            }),
            Record::Risk(RiskRecord::MerchantStatus {
                mid: "M1".into(),
                status: Status::Active,
            }),
        ])
        .unwrap()
        .await
        .unwrap();
    let acted = store.risk_alert(1).unwrap().unwrap();
    assert_eq!(acted.state, AlertState::Acted);
    assert_eq!(acted.resolved_by.as_deref(), Some("bob"));
    assert_eq!(
        store.risk_alerts(Some(AlertState::Open), 10).unwrap().len(),
        2
    );
    assert_eq!(
        store.terminal("T1").unwrap().unwrap().status,
        Status::Suspended
    );
    assert_eq!(store.merchants().unwrap()[0].status, Status::Active);

    // Resolving an alert that does not exist is refused, not silently ignored.
    let missing = store
        .submit(vec![Record::Risk(RiskRecord::ResolveAlert {
            id: 42,
            state: AlertState::Cleared,
            by: "bob".into(),
            at_ms: 1,
            resolution: String::new(),
        })])
        .unwrap()
        .await;
    assert!(missing.is_err());
    // An alert decided already is not decided again: a clear made from an earlier reading
    // does not write over the terminal's suspension, and fails.
    let again = store
        .submit(vec![Record::Risk(RiskRecord::ResolveAlert {
            id: 1,
            state: AlertState::Cleared,
            by: "carol".into(),
            at_ms: 100,
            resolution: "cleared".into(),
        })])
        .unwrap()
        .await;
    assert!(
        matches!(again, Err(StoreError::Constraint { .. })),
        "{again:?}"
    );
    let still = store.risk_alert(1).unwrap().unwrap();
    assert_eq!(
        (still.state, still.resolved_by.as_deref()),
        (AlertState::Acted, Some("bob"))
    );
}

/// A review writes only from the state it read: a second review made from the same reading
/// (an approve racing a close) fails whole, and the first one's state stands.
async fn reviews_compare_and_set(db: &Db) {
    let store = db.open();
    let mut profile = profile(MerchantState::Approved);
    store
        .submit(vec![
            merchant("M1"),
            Record::Risk(RiskRecord::ExpectState {
                mid: "M1".into(),
                state: None,
            }),
            Record::Risk(RiskRecord::Profile(profile.clone())),
        ])
        .unwrap()
        .await
        .unwrap();
    let review = |from: MerchantState, to: MerchantState, status: Status| {
        let mut row = profile.clone();
        row.state = to;
        vec![
            Record::Risk(RiskRecord::ExpectState {
                mid: "M1".into(),
                state: Some(from),
            }),
            Record::Risk(RiskRecord::Profile(row)),
            Record::Risk(RiskRecord::Review(MerchantReviewRow {
                mid: "M1".into(),
                at_ms: 10,
                operator: "alice".into(),
                action: "review".into(),
                from_state: Some(from),
                to_state: to,
                note: String::new(),
            })),
            Record::Risk(RiskRecord::MerchantStatus {
                mid: "M1".into(),
                status,
            }),
        ]
    };
    // Both operators read "approved"; one closes, then the other's suspension arrives.
    store
        .submit(review(
            MerchantState::Approved,
            MerchantState::Closed,
            Status::Closed,
        ))
        .unwrap()
        .await
        .unwrap();
    let late = store
        .submit(review(
            MerchantState::Approved,
            MerchantState::Suspended,
            Status::Suspended,
        ))
        .unwrap()
        .await;
    assert!(
        matches!(late, Err(store::StoreError::Constraint { .. })),
        "{late:?}"
    );
    profile.state = MerchantState::Closed;
    assert_eq!(store.merchant_profile("M1").unwrap(), Some(profile));
    assert_eq!(store.merchant_reviews("M1").unwrap().len(), 1);
    assert_eq!(store.merchants().unwrap()[0].status, Status::Closed);
    // Nor can a first profile be written twice from "none".
    let again = store
        .submit(vec![Record::Risk(RiskRecord::ExpectState {
            mid: "M1".into(),
            state: None,
        })])
        .unwrap()
        .await;
    assert!(again.is_err());
}

/// Two nodes (two stores on one PostgreSQL database; on SQLite one store) review one merchant
/// at the same instant from the same reading, one closing it, one suspending it: one review
/// stands, the other fails whole, every time.
async fn two_nodes_reviewing_one_merchant_at_once_cannot_both_write(db: &Db) {
    let first = db.open();
    let second = db.is_postgres().then(|| db.open());
    for round in 0..20 {
        let mid = format!("M{round}");
        let mut row = profile(MerchantState::Approved);
        row.mid = mid.clone();
        first
            .submit(vec![
                merchant(&mid),
                Record::Risk(RiskRecord::ExpectState {
                    mid: mid.clone(),
                    state: None,
                }),
                Record::Risk(RiskRecord::Profile(row.clone())),
            ])
            .unwrap()
            .await
            .unwrap();
        let review = |to: MerchantState| {
            let mut next = row.clone();
            next.state = to;
            vec![
                Record::Risk(RiskRecord::ExpectState {
                    mid: mid.clone(),
                    state: Some(MerchantState::Approved),
                }),
                Record::Risk(RiskRecord::Profile(next)),
            ]
        };
        let one = first.submit(review(MerchantState::Closed)).unwrap();
        let other = second
            .as_deref()
            .unwrap_or(&*first)
            .submit(review(MerchantState::Suspended))
            .unwrap();
        let (one, other) = tokio::join!(one, other);
        assert!(
            one.is_ok() != other.is_ok(),
            "round {round}: {one:?} / {other:?}"
        );
    }
}

/// The terminals a declining rule holds: every open alert of its kind whose action declines,
/// each terminal once; not one only alerted, not one looked at (resolved), not another kind's.
async fn open_declining_alerts_name_the_held_terminals(db: &Db) {
    let store = db.open();
    let of = |id: i64, kind: &str, action: AlertAction, tid: &str, state: AlertState| {
        let Record::Risk(RiskRecord::Alert(mut row)) = alert(id, Vec::new()) else {
            unreachable!()
        };
        row.kind = kind.into();
        row.action = action;
        row.tid = tid.into();
        row.state = state;
        Record::Risk(RiskRecord::Alert(row))
    };
    let (open, cleared) = (AlertState::Open, AlertState::Cleared);
    store
        .submit(vec![
            merchant("M1"),
            of(1, "peer-change", AlertAction::Decline, "T1", open),
            of(2, "peer-change", AlertAction::Decline, "T1", open),
            of(3, "peer-change", AlertAction::Alert, "T2", open),
            of(4, "peer-change", AlertAction::Decline, "T3", cleared),
            of(5, "card-testing", AlertAction::Decline, "T4", open),
            of(6, "peer-change", AlertAction::Decline, "T5", open),
        ])
        .unwrap()
        .await
        .unwrap();
    let held = store.risk_open_declining("peer-change").unwrap();
    let pair = |tid: &str| ("M1".to_owned(), tid.to_owned());
    assert_eq!(held, [pair("T1"), pair("T5")]);
}

on_both_async!(
    profiles_reviews_alerts_round_trip,
    reviews_compare_and_set,
    two_nodes_reviewing_one_merchant_at_once_cannot_both_write,
    open_declining_alerts_name_the_held_terminals
);
