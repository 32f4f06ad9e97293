//! Operator actions on a real SQLite store: the lifecycle with its review history and typed
//! refusals, and alerts cleared or acted on (suspending the merchant through the lifecycle).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use risk::ops::{self, Actor, AlertResponse, OpsError};
use risk::{MerchantAction, Qualification, TransitionError};
use store::risk::{AlertAction, AlertState, MerchantState, RiskAlertRow, RiskRecord};
use store::{MerchantRow, Record, SqliteConfig, SqliteStore, Status, Store};

fn actor(operator: &str, now_ms: i64) -> Actor<'_> {
    Actor { operator, now_ms }
}

fn qualification() -> Qualification {
    Qualification {
        licence_no: "91310000MA1FL0003Z".into(),
        legal_person: "Wang Wu".into(),
        mcc: "5812".into(),
        address: "3 Fuzhou Road".into(),
    }
}

#[tokio::test]
async fn lifecycle_is_recorded_and_illegal_steps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("s.db"))).unwrap();
    let store: &dyn Store = &store;

    let applied = ops::apply(store, "M1", "Noodles", &qualification(), actor("desk", 1))
        .await
        .unwrap();
    assert_eq!(applied.state, MerchantState::Applied);
    assert_eq!(store.merchants().unwrap()[0].status, Status::Suspended);
    // Applying twice, suspending an applicant: typed refusals, nothing written.
    let again = ops::apply(store, "M1", "Noodles", &qualification(), actor("desk", 2)).await;
    assert_eq!(
        again.unwrap_err(),
        OpsError::Transition(TransitionError {
            from: Some(MerchantState::Applied),
            action: MerchantAction::Apply,
        })
    );
    assert!(matches!(
        ops::suspend(store, "M1", "", actor("risk", 3)).await,
        Err(OpsError::Transition(_))
    ));
    let bad = Qualification {
        mcc: "58".into(),
        ..qualification()
    };
    assert!(matches!(
        ops::apply(store, "M2", "X", &bad, actor("desk", 1)).await,
        Err(OpsError::Qualification(_))
    ));
    assert!(matches!(
        ops::approve(store, "M1", "", actor("  ", 4)).await,
        Err(OpsError::Operator)
    ));
    // Four eyes: whoever applied does not approve.
    assert!(matches!(
        ops::approve(store, "M1", "", actor("desk", 5)).await,
        Err(OpsError::SameOperator { .. })
    ));

    let approved = ops::approve(store, "M1", "licence checked", actor("reviewer", 10))
        .await
        .unwrap();
    assert_eq!(approved.state, MerchantState::Approved);
    assert_eq!(approved.reviewed_by.as_deref(), Some("reviewer"));
    assert_eq!(approved.reviewed_at_ms, Some(10));
    assert_eq!(approved.licence_no, "91310000MA1FL0003Z");
    assert_eq!(store.merchants().unwrap()[0].status, Status::Active);
    // Nor does whoever suspended it lift the suspension.
    ops::suspend(store, "M1", "chargebacks", actor("risk", 12))
        .await
        .unwrap();
    let own = ops::approve(store, "M1", "", actor("risk", 13)).await;
    assert!(matches!(own, Err(OpsError::SameOperator { .. })), "{own:?}");
    ops::approve(store, "M1", "explained", actor("reviewer", 14))
        .await
        .unwrap();
    ops::close(store, "M1", "contract ended", actor("reviewer", 20))
        .await
        .unwrap();
    assert!(matches!(
        ops::approve(store, "M1", "", actor("reviewer", 30)).await,
        Err(OpsError::Transition(_))
    ));
    let history: Vec<(String, Option<MerchantState>, MerchantState)> = store
        .merchant_reviews("M1")
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.from_state, r.to_state))
        .collect();
    assert_eq!(
        history,
        vec![
            ("apply".into(), None, MerchantState::Applied),
            (
                "approve".into(),
                Some(MerchantState::Applied),
                MerchantState::Approved
            ),
            (
                "suspend".into(),
                Some(MerchantState::Approved),
                MerchantState::Suspended
            ),
            (
                "approve".into(),
                Some(MerchantState::Suspended),
                MerchantState::Approved
            ),
            (
                "close".into(),
                Some(MerchantState::Approved),
                MerchantState::Closed
            ),
        ]
    );
    assert_eq!(
        ops::merchant_state(store, "M1").unwrap(),
        Some(MerchantState::Closed)
    );
    assert!(matches!(
        ops::approve(store, "nobody", "", actor("reviewer", 1)).await,
        Err(OpsError::NoSuchMerchant { .. })
    ));
}

#[tokio::test]
async fn acting_on_an_alert_suspends_the_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("s.db"))).unwrap();
    let store: &dyn Store = &store;
    // A merchant provisioned without onboarding: approved because it is active.
    store
        .submit(vec![
            Record::UpsertMerchant(MerchantRow {
                mid: "M9".into(),
                name: "Old Shop".into(),
                status: Status::Active,
                mcc: "5411".into(),
            }),
            Record::Risk(RiskRecord::Alert(Box::new(RiskAlertRow {
                id: 7,
                kind: "card-testing".into(),
                rule_id: "testing".into(),
                action: AlertAction::Decline,
                mid: "M9".into(),
                tid: "T9".into(),
                detail: "3 small declines".into(),
                detail_zh: Some("3 笔小额交易被拒".into()),
                txn_ids: vec![1, 2, 3],
                raised_at_ms: 5,
                state: AlertState::Open,
                resolved_by: None,
                resolved_at_ms: None,
                resolution: None,
            }))),
        ])
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        ops::merchant_state(store, "M9").unwrap(),
        Some(MerchantState::Approved)
    );
    // A note as long as an operator may give: the review's reason (which says the alert
    // too) takes what it can of it, and the alert's resolution keeps it whole.
    let note = "确".repeat(ops::NOTE_LEN_MAX);
    let acted = ops::resolve_alert(
        store,
        7,
        AlertResponse::SuspendMerchant,
        &note,
        actor("risk", 50),
    )
    .await
    .unwrap();
    assert_eq!(acted.state, AlertState::Acted);
    assert_eq!(
        store.risk_alert(7).unwrap().unwrap().state,
        AlertState::Acted
    );
    assert_eq!(
        ops::merchant_state(store, "M9").unwrap(),
        Some(MerchantState::Suspended)
    );
    let review = store.merchant_reviews("M9").unwrap();
    assert_eq!(review.len(), 1);
    assert!(review[0].note.contains("risk alert 7"));
    assert!(matches!(
        ops::resolve_alert(store, 7, AlertResponse::Clear, "", actor("risk", 60)).await,
        Err(OpsError::AlertClosed { .. })
    ));
    assert!(matches!(
        ops::resolve_alert(store, 8, AlertResponse::Clear, "", actor("risk", 60)).await,
        Err(OpsError::NoSuchAlert { id: 8 })
    ));
}
