//! Every read of the `Store` trait runs on both backends (on PostgreSQL each statement must
//! prepare: a placeholder it cannot type, or SQL only SQLite accepts, fails here first), and the
//! web area's users, sessions, tokens and audit log round-trip.

#![allow(clippy::unwrap_used)]

mod backend;
use backend::Db;
use store::resolve::{CaseQuery, CaseRow, DuplicateRow, OutboxRow, ResolveRecord};
use store::risk::AlertState;
use store::settlement::{
    AccountKind, BoundAccountRow, ClearingTotalRow, PayoutRow, PayoutState, SentAccount,
    SettlementRecord,
};
use store::web::{ApiTokenRow, AuditRow, LoginFailuresRow, Role, SessionRow, UserRow, WebRecord};
use store::{Record, SafState, TerminalHealthRow, TxnState};

/// A merchant `mid`, active.
fn merchant(mid: &str) -> Record {
    Record::UpsertMerchant(store::MerchantRow {
        mid: mid.into(),
        name: "x".into(),
        status: store::Status::Active,
        mcc: "5812".into(),
    })
}

/// A new terminal `tid` of merchant `mid`, never signed in.
fn terminal(tid: &str, mid: &str) -> Record {
    Record::InsertTerminal(Box::new(store::TerminalRow {
        tid: tid.into(),
        mid: mid.into(),
        tmk_wrapped: vec![1, 2, 3],
        key_scheme: "003".into(),
        mac_algorithm: "cup-ecb".into(),
        status: store::Status::Active,
        batch_no: 1,
        last_sign_in_ms: None,
        working_keys: None,
    }))
}

fn every_read_runs(db: &Db) {
    let s = db.open();
    assert!(s.merchants().unwrap().is_empty());
    assert!(s.terminals().unwrap().is_empty());
    assert!(s.terminal("1").unwrap().is_none());
    assert!(s.txn(1).unwrap().is_none());
    assert!(s.txns_by_key("1", 1, 1).unwrap().is_empty());
    assert!(s.txn_by_rrn("1").unwrap().is_none());
    assert!(s.txns_by_batch("1", 1).unwrap().is_empty());
    assert!(s.txns_since("20261123").unwrap().is_empty());
    let mut rows = 0;
    s.each_txn_since("20261123", &mut |_| rows += 1).unwrap();
    assert_eq!(rows, 0);
    assert!(
        s.batches_cleared("20261101", "20261123")
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.stans_of_batch("1", 1, "20260101").unwrap(), None);
    assert!(s.txns_in_state(TxnState::Approved).unwrap().is_empty());
    assert!(s.events(1).unwrap().is_empty());
    assert!(s.reversal(1).unwrap().is_none());
    assert!(s.balance_answer(1).unwrap().is_none());
    assert!(
        s.earliest_payment_of_card_after(&[1, 2], "m", 100, (1, 1), 10)
            .unwrap()
            .is_none()
    );
    assert!(s.reversals_in_state(SafState::Pending).unwrap().is_empty());
    assert!(s.txns_of_card_at(&[1, 2], "m").unwrap().is_empty());
    assert!(
        s.txns_of_merchant_newest("m", 0, (10, 0), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.txns_linked_to(1).unwrap().is_empty());
    assert!(s.events_since(0, 10).unwrap().is_empty());
    assert!(s.case(1).unwrap().is_none());
    assert!(
        s.cases(&CaseQuery {
            mid: Some("m"),
            oldest_first: true,
            open_only: true,
            state: Some("open"),
            kind: Some("dispute"),
            before_id: Some(9),
            limit: 10,
        })
        .unwrap()
        .is_empty()
    );
    assert!(s.cases(&CaseQuery::default()).unwrap().is_empty());
    assert_eq!(s.count_open_cases("m").unwrap(), 0);
    assert!(s.cases_of_txn(1).unwrap().is_empty());
    assert!(s.case_entries(1).unwrap().is_empty());
    assert!(s.webhook_endpoint("m").unwrap().is_none());
    assert!(s.outbox_due_merchants(0, None, 10).unwrap().is_empty());
    assert!(s.risk_open_declining("peer-change").unwrap().is_empty());
    assert!(s.outbox_due_of_merchant("m", 0, 10).unwrap().is_empty());
    assert!(s.outbox_of_merchant("m", None, 10).unwrap().is_empty());
    assert!(s.outbox_item(1).unwrap().is_none());
    assert!(s.webhook_deliveries(1).unwrap().is_empty());
    assert!(s.backoffice_key("k").unwrap().is_none());
    assert!(
        s.duplicates_of_merchant("m", Some(5), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.duplicates_flagged_since("m", 0, 10).unwrap().is_empty());
    assert!(s.duplicates_of_txn(1).unwrap().is_empty());
    assert!(s.resolve_cursor("c").unwrap().is_none());
    assert!(s.merchant_profile("m").unwrap().is_none());
    assert!(s.merchant_profiles().unwrap().is_empty());
    assert!(s.merchant_reviews("m").unwrap().is_empty());
    assert!(s.risk_alert(1).unwrap().is_none());
    assert!(s.risk_alerts(None, 10).unwrap().is_empty());
    assert!(
        s.risk_alerts(Some(AlertState::Open), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.risk_alerts_after(0, 10).unwrap().is_empty());
    assert!(s.batch_settlement("1", 1).unwrap().is_none());
    assert!(s.batch_uploads("1", 1).unwrap().is_empty());
    assert!(s.batch_differences("1", 1).unwrap().is_empty());
    assert!(s.clearing_lines("20261123").unwrap().is_empty());
    assert!(s.settle_runs(None).unwrap().is_empty());
    assert!(s.settle_runs(Some("20261123")).unwrap().is_empty());
    assert!(s.clearing_dates_touched_since(0).unwrap().is_empty());
    assert!(s.ledger_balances().unwrap().is_empty());
    assert_eq!(s.ledger_balance("a", None).unwrap(), 0);
    assert_eq!(s.ledger_balance("a", Some("20261123")).unwrap(), 0);
    assert!(s.unbalanced_postings().unwrap().is_empty());
    assert!(s.postings_by_reference("r").unwrap().is_empty());
    assert!(s.settlement_terms("m").unwrap().is_none());
    assert!(s.bound_account("m").unwrap().is_none());
    assert!(s.account_changes(None).unwrap().is_empty());
    assert!(s.account_changes(Some("m")).unwrap().is_empty());
    assert!(s.account_changes_pending().unwrap().is_empty());
    assert!(s.account_change(1).unwrap().is_none());
    assert!(s.payout("k").unwrap().is_none());
    assert!(s.payouts(None, None, 10).unwrap().is_empty());
    assert!(s.payouts_newest(None, None, 10).unwrap().is_empty());
    assert!(
        s.payouts_newest_before(None, Some(PayoutState::Held), ("20261101", "m"), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.clearing_totals(None, 10).unwrap().is_empty());
    assert!(s.clearing_totals(Some("m"), 10).unwrap().is_empty());
    assert!(
        s.payouts_newest(Some("m"), Some(PayoutState::Held), 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.payouts(Some("m"), Some(PayoutState::Pending), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.payout_events(0, 10).unwrap().is_empty());
    assert!(s.payout_returns_open(10).unwrap().is_empty());
    let returned = |reference: &str| {
        Record::Settlement(SettlementRecord::PayoutReturned {
            reference: reference.into(),
            reported_on: "20261124".into(),
        })
    };
    // Reported twice (kept once), then handled.
    s.submit(vec![returned("k#v1"), returned("k#v1"), returned("j#v2")])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(s.payout_returns_open(10).unwrap(), ["j#v2", "k#v1"]);
    s.submit(vec![Record::Settlement(
        SettlementRecord::PayoutReturnHandled {
            reference: "k#v1".into(),
            at_ms: 5,
        },
    )])
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(s.payout_returns_open(10).unwrap(), ["j#v2"]);
    assert!(s.web_user(1).unwrap().is_none());
    assert!(s.web_user_by_name("u").unwrap().is_none());
    assert!(s.web_users().unwrap().is_empty());
    assert!(s.web_login_failures(Some(1)).unwrap().is_empty());
    assert!(s.web_login_failures(None).unwrap().is_empty());
    assert!(s.web_session(&[1]).unwrap().is_none());
    assert!(s.web_api_token(&[1]).unwrap().is_none());
    assert!(s.audit_log(None, 10).unwrap().is_empty());
    assert!(s.audit_log(Some(5), 10).unwrap().is_empty());
    s.submit(vec![Record::Resolve(ResolveRecord::Cursor {
        name: "c".into(),
        position: 7,
    })])
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(s.resolve_cursor("c").unwrap(), Some(7));
}

fn web_area_round_trips(db: &Db) {
    let s = db.open();
    let user = UserRow {
        id: 1,
        username: "operator".into(),
        password_hash: "$argon2id$stub".into(),
        role: Role::Operator,
        mid: None,
        display_name: "Operator".into(),
        disabled: false,
        created_at_ms: 10,
    };
    let session = SessionRow {
        token_hash: vec![5; 32],
        user_id: 1,
        csrf: "csrf".into(),
        created_at_ms: 11,
        expires_at_ms: 99,
    };
    let token = ApiTokenRow {
        token_hash: vec![6; 32],
        user_id: 1,
        name: "ci".into(),
        created_at_ms: 12,
        revoked: false,
    };
    let mut records = vec![
        Record::Web(WebRecord::UpsertUser(user.clone())),
        Record::Web(WebRecord::InsertSession(session.clone())),
        Record::Web(WebRecord::InsertApiToken(token.clone())),
    ];
    for id in 1..=3 {
        records.push(Record::Web(WebRecord::Audit(AuditRow {
            id,
            at_ms: 20 + id,
            who: "operator".into(),
            action: "refund".into(),
            target: format!("txn {id}"),
            before: None,
            after: Some("{}".into()),
        })));
    }
    s.submit(records).unwrap().wait().unwrap();
    assert_eq!(s.web_user_by_name("operator").unwrap(), Some(user.clone()));
    assert_eq!(s.web_user(1).unwrap(), Some(user));
    assert_eq!(s.web_session(&[5; 32]).unwrap(), Some(session.clone()));
    assert_eq!(s.web_api_token(&[6; 32]).unwrap(), Some(token.clone()));
    // The user's tokens issued since a time (those not expired), newest first.
    assert_eq!(
        s.web_api_tokens(1, 0).unwrap(),
        std::slice::from_ref(&token)
    );
    assert!(s.web_api_tokens(1, 13).unwrap().is_empty());
    assert!(s.web_api_tokens(2, 0).unwrap().is_empty());
    let page: Vec<i64> = s.audit_log(None, 2).unwrap().iter().map(|a| a.id).collect();
    assert_eq!(page, [3, 2]);
    let next: Vec<i64> = s
        .audit_log(Some(2), 2)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(next, [1]);
    s.submit(vec![
        Record::Web(WebRecord::RevokeApiToken {
            token_hash: vec![6; 32],
        }),
        Record::Web(WebRecord::DeleteSession {
            token_hash: vec![5; 32],
        }),
    ])
    .unwrap()
    .wait()
    .unwrap();
    assert!(s.web_api_token(&[6; 32]).unwrap().unwrap().revoked);
    assert!(s.web_session(&[5; 32]).unwrap().is_none());

    // Expired sessions of a user go; live ones stay.
    let at = |n: u8, user_id: i64, expires_at_ms: i64| {
        Record::Web(WebRecord::InsertSession(SessionRow {
            token_hash: vec![n; 32],
            user_id,
            expires_at_ms,
            ..session.clone()
        }))
    };
    s.submit(vec![at(10, 1, 50), at(11, 1, 500)])
        .unwrap()
        .wait()
        .unwrap();
    s.submit(vec![Record::Web(WebRecord::EndExpiredSessions {
        user_id: 1,
        now_ms: 100,
    })])
    .unwrap()
    .wait()
    .unwrap();
    let live = |n: u8| s.web_session(&[n; 32]).unwrap().is_some();
    assert_eq!((live(10), live(11)), (false, true));

    // A user's sessions end together, but for the one kept.
    let sessions: Vec<Record> = (1..=3u8)
        .map(|n| {
            Record::Web(WebRecord::InsertSession(SessionRow {
                token_hash: vec![n; 32],
                ..session.clone()
            }))
        })
        .collect();
    s.submit(sessions).unwrap().wait().unwrap();
    let alive = |n: u8| s.web_session(&[n; 32]).unwrap().is_some();
    assert_eq!((alive(1), alive(2), alive(3)), (true, true, true));
    s.submit(vec![Record::Web(WebRecord::EndSessions { user_id: 1 })])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((alive(1), alive(2), alive(3)), (false, false, false));

    // Targeted changes of a user: each leaves the rest of the row as it is.
    let before = s.web_user(1).unwrap().unwrap();
    s.submit(vec![
        Record::Web(WebRecord::SetDisabled {
            user_id: 1,
            disabled: true,
        }),
        Record::Web(WebRecord::SetPasswordHash {
            user_id: 1,
            password_hash: "$argon2id$other".into(),
        }),
        Record::Web(WebRecord::InsertApiToken(ApiTokenRow {
            token_hash: vec![7; 32],
            ..token.clone()
        })),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let after = s.web_user(1).unwrap().unwrap();
    assert!(after.disabled);
    assert_eq!(after.password_hash, "$argon2id$other");
    assert_eq!(
        (after.username, after.role, after.created_at_ms),
        (before.username, before.role, before.created_at_ms)
    );
    assert!(!s.web_api_token(&[7; 32]).unwrap().unwrap().revoked);
    s.submit(vec![Record::Web(WebRecord::RevokeUserTokens {
        user_id: 1,
    })])
    .unwrap()
    .wait()
    .unwrap();
    assert!(s.web_api_token(&[7; 32]).unwrap().unwrap().revoked);

    // A session or token opened on a password check is written only while that password is
    // still the user's and the user enabled: one checked against the old hash, written after
    // a change (which ended the sessions and revoked the tokens), is refused, and nothing of
    // its commit is written.
    s.submit(vec![Record::Web(WebRecord::SetDisabled {
        user_id: 1,
        disabled: false,
    })])
    .unwrap()
    .wait()
    .unwrap();
    let checked_session = |n: u8, hash: &str| {
        Record::Web(WebRecord::InsertSessionChecked {
            session: SessionRow {
                token_hash: vec![n; 32],
                expires_at_ms: 10_000,
                ..session.clone()
            },
            password_hash: hash.into(),
        })
    };
    let checked_token = |n: u8, hash: &str| {
        Record::Web(WebRecord::InsertApiTokenChecked {
            token: ApiTokenRow {
                token_hash: vec![n; 32],
                ..token.clone()
            },
            password_hash: hash.into(),
        })
    };
    for stale in [
        checked_session(20, "$argon2id$stub"),
        checked_token(21, "$argon2id$stub"),
    ] {
        assert!(matches!(
            s.submit(vec![stale]).unwrap().wait(),
            Err(store::StoreError::Constraint { .. })
        ));
    }
    assert!(s.web_session(&[20; 32]).unwrap().is_none());
    assert!(s.web_api_token(&[21; 32]).unwrap().is_none());
    s.submit(vec![
        checked_session(22, "$argon2id$other"),
        checked_token(23, "$argon2id$other"),
    ])
    .unwrap()
    .wait()
    .unwrap();
    assert!(s.web_session(&[22; 32]).unwrap().is_some());
    assert!(!s.web_api_token(&[23; 32]).unwrap().unwrap().revoked);
    // A disabled user gets neither.
    s.submit(vec![Record::Web(WebRecord::SetDisabled {
        user_id: 1,
        disabled: true,
    })])
    .unwrap()
    .wait()
    .unwrap();
    assert!(
        s.submit(vec![checked_session(24, "$argon2id$other")])
            .unwrap()
            .wait()
            .is_err()
    );

    // Wrong passwords in a row: counted, started again after a quiet spell, forgotten.
    let mut other = s.web_user(1).unwrap().unwrap();
    other.id = 2;
    other.username = "other".into();
    s.submit(vec![Record::Web(WebRecord::UpsertUser(other))])
        .unwrap()
        .wait()
        .unwrap();
    // The staff's usernames alone: not a merchant's user.
    let mut merchant_user = s.web_user(1).unwrap().unwrap();
    merchant_user.id = 3;
    merchant_user.username = "teahouse".into();
    merchant_user.role = Role::Merchant;
    merchant_user.mid = Some("m".into());
    s.submit(vec![
        Record::UpsertMerchant(store::MerchantRow {
            mid: "m".into(),
            name: "x".into(),
            status: store::Status::Active,
            mcc: "5812".into(),
        }),
        Record::Web(WebRecord::UpsertUser(merchant_user)),
    ])
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(s.web_staff_usernames().unwrap(), ["operator", "other"]);
    let failed = |user_id: i64, at_ms: i64| {
        Record::Web(WebRecord::LoginFailed {
            user_id,
            at_ms,
            counts_since_ms: at_ms - 100,
        })
    };
    s.submit(vec![failed(1, 1_000), failed(1, 1_050), failed(2, 1_060)])
        .unwrap()
        .wait()
        .unwrap();
    s.submit(vec![failed(1, 1_120)]).unwrap().wait().unwrap();
    let row = |user_id: i64, failures: i64, last_at_ms: i64| LoginFailuresRow {
        user_id,
        failures,
        last_at_ms,
    };
    assert_eq!(s.web_login_failures(Some(1)).unwrap(), [row(1, 3, 1_120)]);
    assert_eq!(
        s.web_login_failures(None).unwrap(),
        [row(1, 3, 1_120), row(2, 1, 1_060)]
    );
    // The last was more than 100 ms before: the count starts again.
    s.submit(vec![failed(1, 1_300)]).unwrap().wait().unwrap();
    assert_eq!(s.web_login_failures(Some(1)).unwrap(), [row(1, 1, 1_300)]);
    s.submit(vec![Record::Web(WebRecord::ClearLoginFailures {
        user_id: 1,
    })])
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(s.web_login_failures(None).unwrap(), [row(2, 1, 1_060)]);
    // The newest row of a target with one of some actions, however many others it has.
    let on_user = |id: i64, who: &str, action: &str| {
        Record::Web(WebRecord::Audit(AuditRow {
            id,
            at_ms: 30 + id,
            who: who.into(),
            action: action.into(),
            target: "user:1".into(),
            before: None,
            after: None,
        }))
    };
    s.submit(vec![
        on_user(10, "admin", "user.create"),
        on_user(11, "operator", "session.open"),
        on_user(12, "admin", "user.password_reset"),
        on_user(13, "operator", "session.open"),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let last = |actions: &[&str]| s.audit_last_on("user:1", actions).unwrap().map(|a| a.id);
    assert_eq!(last(&["user.create", "user.password_reset"]), Some(12));
    assert_eq!(last(&["user.create"]), Some(10));
    assert_eq!(last(&["session.open"]), Some(13));
    assert_eq!(last(&["user.password"]), None);
    assert_eq!(last(&[]), None);
    assert_eq!(s.audit_last_on("user:2", &["session.open"]).unwrap(), None);
}

fn terminal_health_round_trips(db: &Db) {
    let s = db.open();
    assert!(s.terminal_health().unwrap().is_empty());
    let mut row = TerminalHealthRow {
        tid: "10000001".into(),
        application_type: 61,
        software_version: 31,
        sub_version: 202_611,
        clock_drift_s: Some(-600),
        seen_at_ms: 1_795_413_731_000,
        fallbacks: 0,
    };
    s.submit(vec![Record::TerminalHealth(row.clone())])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(s.terminal_health().unwrap(), [row.clone()]);
    // A second report replaces the first.
    row.software_version = 32;
    row.clock_drift_s = None;
    row.fallbacks = 3;
    s.submit(vec![Record::TerminalHealth(row.clone())])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(s.terminal_health().unwrap(), [row.clone()]);
    // Reports written out of order (two requests' writes overtaking each other): an older
    // one changes nothing, and one of the same moment never lowers the fallback count.
    let mut older = row.clone();
    older.seen_at_ms -= 1_000;
    older.software_version = 31;
    older.fallbacks = 2;
    let mut same_moment = row.clone();
    same_moment.fallbacks = 2;
    for late in [older, same_moment] {
        s.submit(vec![Record::TerminalHealth(late)])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(s.terminal_health().unwrap(), [row.clone()]);
    }
    // By merchant: its own terminals and their health, none of another's.
    let mut other = row.clone();
    other.tid = "20000001".into();
    s.submit(vec![
        merchant("m1"),
        merchant("m2"),
        terminal("10000002", "m1"),
        terminal("10000001", "m1"),
        terminal("20000001", "m2"),
        Record::TerminalHealth(other.clone()),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let tids = |mid: &str| -> Vec<String> {
        s.terminals_of_merchant(mid)
            .unwrap()
            .into_iter()
            .map(|t| t.tid)
            .collect()
    };
    assert_eq!(tids("m1"), ["10000001", "10000002"]);
    assert_eq!(tids("m2"), ["20000001"]);
    assert!(tids("m3").is_empty());
    assert_eq!(s.terminal_health_of_merchant("m1").unwrap(), [row.clone()]);
    assert_eq!(s.terminal_health_of_merchant("m2").unwrap(), [other]);
}

/// A merchant's notifications come newest first, a page at a time, and only its own; one is
/// read by its id.
fn notifications_page_back_from_the_newest(db: &Db) {
    let s = db.open();
    let item = |id: i64, mid: &str| {
        Record::Resolve(ResolveRecord::Enqueue(Box::new(OutboxRow {
            id,
            mid: mid.into(),
            event_type: "transaction.declined".into(),
            payload: format!("{{\"n\":{id}}}"),
            dedup_key: format!("declined/{id}"),
            created_at_ms: 1_000 + id,
            state: "pending".into(),
            attempts: 0,
            next_attempt_ms: 1_000 + id,
            delivered_at_ms: None,
            attempts_base: 0,
        })))
    };
    let records = (1..=7)
        .map(|id| item(id, if id == 4 { "other" } else { "m" }))
        .collect();
    s.submit(records).unwrap().wait().unwrap();
    let ids = |before: Option<i64>, limit: u32| -> Vec<i64> {
        s.outbox_of_merchant("m", before, limit)
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect()
    };
    assert_eq!(ids(None, 3), [7, 6, 5]);
    assert_eq!(ids(Some(5), 3), [3, 2, 1]);
    assert_eq!(ids(Some(1), 3), Vec::<i64>::new());
    assert_eq!(ids(None, 100), [7, 6, 5, 3, 2, 1]);
    let other = s.outbox_item(4).unwrap().unwrap();
    assert_eq!((other.mid.as_str(), other.created_at_ms), ("other", 1_004));
    assert!(s.outbox_item(8).unwrap().is_none());
    // The merchants with events due, each once, the one whose first is due soonest first;
    // then one merchant's due events, soonest first.
    let merchants = |now: i64, limit: u32| -> Vec<String> {
        s.outbox_due_merchants(now, None, limit)
            .unwrap()
            .into_iter()
            .map(|m| m.mid)
            .collect()
    };
    let due = |mid: &str, now: i64, limit: u32| -> Vec<i64> {
        s.outbox_due_of_merchant(mid, now, limit)
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect()
    };
    assert_eq!(merchants(2_000, 10), ["m", "other"]);
    assert_eq!(merchants(2_000, 1), ["m"]);
    // A page after the last read; with the receiver's URL, none without an endpoint.
    let first = s.outbox_due_merchants(2_000, None, 1).unwrap().remove(0);
    assert_eq!((first.first_due_ms, first.url.as_deref()), (1_001, None));
    let next = s
        .outbox_due_merchants(2_000, Some((first.first_due_ms, &first.mid)), 10)
        .unwrap();
    assert_eq!(
        next.iter().map(|m| m.mid.as_str()).collect::<Vec<_>>(),
        ["other"]
    );
    assert!(
        s.outbox_due_merchants(2_000, Some((1_004, "other")), 10)
            .unwrap()
            .is_empty()
    );
    s.submit(vec![Record::Resolve(ResolveRecord::UpsertEndpoint(
        store::resolve::WebhookEndpointRow {
            mid: "other".into(),
            url: "http://hooks.example/other".into(),
            secret_sealed: vec![1],
            active: true,
        },
    ))])
    .unwrap()
    .wait()
    .unwrap();
    let urls: Vec<Option<String>> = s
        .outbox_due_merchants(2_000, None, 10)
        .unwrap()
        .into_iter()
        .map(|m| m.url)
        .collect();
    assert_eq!(urls, [None, Some("http://hooks.example/other".to_owned())]);
    assert_eq!(merchants(1_003, 10), ["m"]);
    assert!(merchants(1_000, 10).is_empty());
    assert_eq!(due("m", 2_000, 10), [1, 2, 3, 5, 6, 7]);
    assert_eq!(due("m", 2_000, 2), [1, 2]);
    assert_eq!(due("m", 1_002, 10), [1, 2]);
    assert_eq!(due("other", 2_000, 10), [4]);
    assert!(due("none", 2_000, 10).is_empty());

    // One notifier claims an attempt; another that read the same item cannot.
    let claim = || {
        s.submit(vec![Record::Resolve(ResolveRecord::ClaimDelivery {
            outbox_id: 1,
            attempts: 0,
            due_at_ms: 1_001,
            lease_until_ms: 9_000,
        })])
        .unwrap()
        .wait()
    };
    claim().unwrap();
    assert_eq!(s.outbox_item(1).unwrap().unwrap().next_attempt_ms, 9_000);
    assert!(matches!(claim(), Err(store::StoreError::Constraint { .. })));
    // A receiver that did not answer puts off "m"'s waiting items (not the claimed one, due
    // later) with an attempt counted against each; one whose retries reach the limit fails.
    // Counted only against those due when the attempt began (3 was due after it: put off,
    // not counted).
    s.submit(vec![Record::Resolve(ResolveRecord::DeferMerchant {
        mid: "m".into(),
        until_ms: 5_000,
        due_by_ms: 1_002,
        attempts_max: 1,
    })])
    .unwrap()
    .wait()
    .unwrap();
    let state = |id: i64| {
        let o = s.outbox_item(id).unwrap().unwrap();
        (o.state, o.attempts, o.next_attempt_ms)
    };
    assert_eq!(state(2), ("failed".to_owned(), 1, 5_000));
    assert_eq!(state(3), ("pending".to_owned(), 0, 5_000));
    assert_eq!(state(1), ("pending".to_owned(), 0, 9_000));
    assert_eq!(state(4), ("pending".to_owned(), 0, 1_004));
    // Neither a claimed event nor a failed one is due; merchants come by their soonest due
    // event, not by their IDs.
    assert_eq!(merchants(6_000, 10), ["other", "m"]);
    assert_eq!(merchants(4_000, 10), ["other"]);
    assert_eq!(due("m", 6_000, 10), [3, 5, 6, 7]);
    assert_eq!(due("m", 10_000, 10), [3, 5, 6, 7, 1]);
    // Pages of one, two merchants due at the same instant: each once, by merchant ID.
    let tied = |id: i64, mid: &str| {
        let Record::Resolve(ResolveRecord::Enqueue(mut row)) = item(id, mid) else {
            unreachable!()
        };
        row.next_attempt_ms = 1_100;
        Record::Resolve(ResolveRecord::Enqueue(row))
    };
    s.submit(vec![tied(20, "tie-b"), tied(21, "tie-a")])
        .unwrap()
        .wait()
        .unwrap();
    let mut paged = Vec::new();
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = s
            .outbox_due_merchants(
                1_200,
                after.as_ref().map(|(at, mid)| (*at, mid.as_str())),
                1,
            )
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.first_due_ms, last.mid.clone()));
        paged.extend(page.into_iter().map(|m| m.mid));
    }
    assert_eq!(paged, ["other", "tie-a", "tie-b"]);
}

/// Cases come newest first, a page at a time, by merchant, open or not, state and kind; and
/// by the transaction they are about.
fn cases_page_back_from_the_newest(db: &Db) {
    let s = db.open();
    let case = |id: i64, mid: &str, kind: &str, state: &str| {
        Record::Resolve(ResolveRecord::InsertCase(Box::new(CaseRow {
            id,
            mid: mid.into(),
            kind: kind.into(),
            state: state.into(),
            txn_id: Some(100 + id % 3),
            title: format!("case {id}"),
            assignee: None,
            due_at_ms: None,
            refund_fen: None,
            approved_by: None,
            refund_txn_id: None,
            refund_rrn: None,
            refund_code: None,
            resolution: None,
            created_at_ms: id,
            updated_at_ms: id,
            version: 1,
        })))
    };
    s.submit(vec![
        case(1, "m", "dispute", "resolved"),
        case(2, "m", "refund_application", "open"),
        case(3, "other", "dispute", "open"),
        case(4, "m", "issuer_inquiry", "waiting_issuer"),
        case(5, "m", "refund_application", "rejected"),
        case(6, "m", "dispute", "escalated"),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let ids =
        |q: CaseQuery<'_>| -> Vec<i64> { s.cases(&q).unwrap().iter().map(|c| c.id).collect() };
    let m = Some("m");
    let page = |before_id, limit| CaseQuery {
        mid: m,
        before_id,
        limit,
        ..CaseQuery::default()
    };
    assert_eq!(ids(page(None, 3)), [6, 5, 4]);
    assert_eq!(ids(page(Some(4), 3)), [2, 1]);
    let open = |mid| CaseQuery {
        mid,
        open_only: true,
        limit: 10,
        ..CaseQuery::default()
    };
    assert_eq!(ids(open(m)), [6, 4, 2]);
    assert_eq!(ids(open(None)), [6, 4, 3, 2]);
    let refunds = CaseQuery {
        kind: Some("refund_application"),
        limit: 10,
        ..CaseQuery::default()
    };
    assert_eq!(ids(refunds.clone()), [5, 2]);
    assert_eq!(
        ids(CaseQuery {
            state: Some("open"),
            ..refunds
        }),
        [2]
    );
    let about: Vec<i64> = s.cases_of_txn(101).unwrap().iter().map(|c| c.id).collect();
    assert_eq!(about, [1, 4]);
}

/// Payouts newest first, by merchant and state; the payout run's read stays oldest first.
fn payouts_are_read_newest_first(db: &Db) {
    let s = db.open();
    let payout = |mid: &str, date: &str, state: PayoutState| {
        Record::Settlement(SettlementRecord::Payout(PayoutRow {
            key: format!("{mid}:{date}"),
            mid: mid.into(),
            payout_date: date.into(),
            cutoff_date: date.into(),
            amount_fen: 100,
            state,
            attempts: 0,
            next_attempt_ms: 0,
            account_version: 1,
            account_masked: "6222****0123".into(),
            bank_reference: None,
            sent_to: (state != PayoutState::Pending).then(|| SentAccount {
                number_sealed: vec![1, 2, 3],
                holder_name: "王小明".into(),
                bank_code: "0102".into(),
            }),
            failure: None,
            first_attempt_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }))
    };
    s.submit(vec![
        payout("m", "20261101", PayoutState::Sent),
        payout("m", "20261103", PayoutState::Held),
        payout("n", "20261102", PayoutState::Held),
        payout("m", "20261102", PayoutState::Pending),
    ])
    .unwrap()
    .wait()
    .unwrap();
    let keys = |rows: Vec<PayoutRow>| -> Vec<String> { rows.into_iter().map(|p| p.key).collect() };
    assert_eq!(
        keys(s.payouts_newest(Some("m"), None, 2).unwrap()),
        ["m:20261103", "m:20261102"]
    );
    assert_eq!(
        keys(s.payouts_newest(None, Some(PayoutState::Held), 10).unwrap()),
        ["m:20261103", "n:20261102"]
    );
    assert_eq!(
        keys(s.payouts(Some("m"), None, 2).unwrap()),
        ["m:20261101", "m:20261102"]
    );
    // The merchants with a payout in a state, each once.
    assert_eq!(
        s.payout_merchants(PayoutState::Held, None, 10).unwrap(),
        ["m", "n"]
    );
    assert_eq!(
        s.payout_merchants(PayoutState::Pending, None, 10).unwrap(),
        ["m"]
    );
    // A page, and the one after its last.
    assert_eq!(
        s.payout_merchants(PayoutState::Held, None, 1).unwrap(),
        ["m"]
    );
    assert_eq!(
        s.payout_merchants(PayoutState::Held, Some("m"), 1).unwrap(),
        ["n"]
    );
    assert!(
        s.payout_merchants(PayoutState::Held, Some("n"), 1)
            .unwrap()
            .is_empty()
    );
    // Page by page after the last row shown: a merchant's, and everyone's (the same day's
    // other merchants before the older days).
    assert_eq!(
        keys(
            s.payouts_newest_before(Some("m"), None, ("20261102", "m"), 10)
                .unwrap()
        ),
        ["m:20261101"]
    );
    assert_eq!(
        keys(
            s.payouts_newest_before(None, None, ("20261102", "n"), 10)
                .unwrap()
        ),
        ["m:20261102", "m:20261101"]
    );
    assert_eq!(
        keys(
            s.payouts_newest_before(None, None, ("20261103", "m"), 2)
                .unwrap()
        ),
        ["n:20261102", "m:20261102"]
    );
    // The account a reference was made for is kept with it.
    let sent = s.payout("m:20261101").unwrap().unwrap().sent_to.unwrap();
    assert_eq!(
        (
            sent.number_sealed,
            sent.holder_name.as_str(),
            sent.bank_code.as_str()
        ),
        (vec![1, 2, 3], "王小明", "0102")
    );
    assert_eq!(s.payout("m:20261102").unwrap().unwrap().sent_to, None);
    // A transition writes the amount too: a held payout released is netted against what its
    // merchant came to owe.
    let mut released = s.payout("m:20261103").unwrap().unwrap();
    released.state = PayoutState::Pending;
    released.amount_fen = 40;
    // And when the bank was first asked: how long a retrying payout has waited.
    released.first_attempt_ms = Some(7_000);
    released.failure = Some("payout-bank-error".into());
    let version = released.account_version;
    // Expecting another account version than the row's (a run that read it before a release
    // to a re-bound account) is refused, the row left as it was.
    let stale = s
        .submit(vec![Record::Settlement(
            SettlementRecord::PayoutTransition {
                expected_state: PayoutState::Held,
                expected_attempts: 0,
                expected_account_version: version + 1,
                row: released.clone(),
            },
        )])
        .unwrap()
        .wait();
    assert!(
        matches!(stale, Err(store::StoreError::Constraint { .. })),
        "{stale:?}"
    );
    assert_eq!(
        s.payout("m:20261103").unwrap().unwrap().state,
        PayoutState::Held
    );
    s.submit(vec![Record::Settlement(
        SettlementRecord::PayoutTransition {
            expected_state: PayoutState::Held,
            expected_attempts: 0,
            expected_account_version: version,
            row: released,
        },
    )])
    .unwrap()
    .wait()
    .unwrap();
    let row = s.payout("m:20261103").unwrap().unwrap();
    assert_eq!(
        (row.state, row.amount_fen, row.first_attempt_ms),
        (PayoutState::Pending, 40, Some(7_000))
    );
    // Pending on that failure since a time, counted in the database.
    let count = |failure: &str, by_ms: i64| s.count_payouts_failing_since(failure, by_ms).unwrap();
    assert_eq!(count("payout-bank-error", 7_000), 1);
    assert_eq!(count("payout-bank-error", 6_999), 0);
    assert_eq!(count("payout-account-frozen", 7_000), 0);
    // The payouts a failure left waiting, and how many in all: the one released above (pending
    // its retry), and these; a sent one is done with.
    let failing = |mid: &str, date: &str, state: PayoutState| {
        let Record::Settlement(SettlementRecord::Payout(mut p)) = payout(mid, date, state) else {
            unreachable!()
        };
        p.failure = Some("payout-account-frozen".into());
        Record::Settlement(SettlementRecord::Payout(p))
    };
    s.submit(vec![
        failing("n", "20261030", PayoutState::Sent),
        failing("n", "20261031", PayoutState::Held),
        failing("m", "20261105", PayoutState::Pending),
        // A payout the bank returned days later: held, its failure said.
        failing("m", "20261104", PayoutState::Held),
    ])
    .unwrap()
    .wait()
    .unwrap();
    // The released one retrying after a bank error since 7,000 is stuck from then on: first;
    // the rest newest first (however many held ones are older).
    let listed = |by_ms: i64, limit: u32| {
        let (count, rows) = s
            .payouts_failing("payout-bank-error", by_ms, limit)
            .unwrap();
        (count, keys(rows))
    };
    let strings = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        listed(7_000, 2),
        (4, strings(&["m:20261103", "m:20261105"]))
    );
    assert_eq!(
        listed(7_000, 10),
        (
            4,
            strings(&["m:20261103", "m:20261105", "m:20261104", "n:20261031"])
        )
    );
    assert_eq!(
        listed(6_999, 10),
        (
            4,
            strings(&["m:20261105", "m:20261104", "m:20261103", "n:20261031"])
        )
    );
}

/// A merchant's duplicate flags newest first; a payment's flags whichever side it is on.
fn duplicate_flags_by_merchant_and_by_payment(db: &Db) {
    let s = db.open();
    let flag = |first: i64, second: i64, mid: &str| {
        Record::Resolve(ResolveRecord::Duplicate(DuplicateRow {
            first_txn_id: first,
            second_txn_id: second,
            mid: mid.into(),
            amount_fen: 100,
            gap_ms: 30_000,
            flagged_at_ms: second,
        }))
    };
    s.submit(vec![flag(1, 2, "m"), flag(2, 3, "m"), flag(7, 8, "n")])
        .unwrap()
        .wait()
        .unwrap();
    let seconds =
        |rows: Vec<DuplicateRow>| -> Vec<i64> { rows.iter().map(|d| d.second_txn_id).collect() };
    assert_eq!(
        seconds(s.duplicates_of_merchant("m", None, 10).unwrap()),
        [3, 2]
    );
    assert_eq!(
        seconds(s.duplicates_of_merchant("m", Some(3), 10).unwrap()),
        [2]
    );
    assert_eq!(seconds(s.duplicates_of_txn(2).unwrap()), [2, 3]);
    assert_eq!(seconds(s.duplicates_of_txn(7).unwrap()), [8]);
    assert!(s.duplicates_of_txn(5).unwrap().is_empty());
    // Flagged since a time, the newest flagged first, whatever the payments' ids: with
    // several nodes a busy node's block of ids is higher than a quiet one's, so the flags of
    // payments 20,001 and 20,002 (flagged at 10 and 11) are older than that of payment 9
    // (flagged at 50), and a limit by id would have kept them and lost it.
    let at = |first: i64, second: i64, flagged_at_ms: i64| {
        Record::Resolve(ResolveRecord::Duplicate(DuplicateRow {
            first_txn_id: first,
            second_txn_id: second,
            mid: "p".into(),
            amount_fen: 100,
            gap_ms: 30_000,
            flagged_at_ms,
        }))
    };
    s.submit(vec![
        at(20_000, 20_001, 10),
        at(20_001, 20_002, 11),
        at(4, 9, 50),
    ])
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(seconds(s.duplicates_flagged_since("p", 0, 1).unwrap()), [9]);
    assert_eq!(
        seconds(s.duplicates_flagged_since("p", 0, 10).unwrap()),
        [9, 20_002, 20_001]
    );
    assert_eq!(
        seconds(s.duplicates_flagged_since("p", 11, 10).unwrap()),
        [9, 20_002]
    );
    assert!(s.duplicates_flagged_since("p", 51, 10).unwrap().is_empty());
    assert!(s.duplicates_flagged_since("m", 4, 10).unwrap().is_empty());
}

/// A settle run's totals replace the date's earlier ones; read newest date first.
fn clearing_totals_are_replaced_by_each_run(db: &Db) {
    let s = db.open();
    let total = |date: &str, mid: &str, lines: u64, gross_fen: i64| ClearingTotalRow {
        clearing_date: date.into(),
        mid: mid.into(),
        lines,
        gross_fen,
        fee_fen: gross_fen / 100,
    };
    let write = |rows: Vec<ClearingTotalRow>| {
        s.submit(vec![Record::Settlement(SettlementRecord::ClearingTotals(
            rows,
        ))])
        .unwrap()
        .wait()
        .unwrap();
    };
    write(vec![
        total("20261101", "m", 2, 3_000),
        total("20261101", "n", 1, 500),
    ]);
    write(vec![total("20261102", "m", 1, 700)]);
    // A second run of 2026-11-01 with a late line.
    write(vec![
        total("20261101", "m", 3, 2_200),
        total("20261101", "n", 1, 500),
    ]);
    assert_eq!(
        s.clearing_totals(Some("m"), 10).unwrap(),
        [
            total("20261102", "m", 1, 700),
            total("20261101", "m", 3, 2_200)
        ]
    );
    let all: Vec<(String, String)> = s
        .clearing_totals(None, 2)
        .unwrap()
        .into_iter()
        .map(|t| (t.clearing_date, t.mid))
        .collect();
    assert_eq!(
        all,
        [
            ("20261102".into(), "m".into()),
            ("20261101".into(), "m".into())
        ]
    );
}

/// A bound account is replaced only as it was read, and a flag lands only on the account the
/// failed payout went to.
fn bound_accounts_change_only_as_read(db: &Db) {
    let s = db.open();
    let account = |version: u32, needs_rebind: bool| BoundAccountRow {
        mid: "m".into(),
        kind: AccountKind::Card,
        number_sealed: vec![version as u8; 8],
        number_masked: format!("6222********{version:04}"),
        holder_name: "王".into(),
        bank_code: "ICBC".into(),
        version,
        needs_rebind,
        updated_at_ms: i64::from(version),
    };
    let write = |r: SettlementRecord| s.submit(vec![Record::Settlement(r)]).unwrap().wait();
    write(SettlementRecord::BoundAccount(account(1, false))).unwrap();
    // A second first binding (two made at once): refused, the first stands.
    let twice = write(SettlementRecord::BoundAccount(account(1, false)));
    assert!(
        matches!(twice, Err(store::StoreError::Constraint { .. })),
        "{twice:?}"
    );
    // A payout to version 1 failed: flagged.
    write(SettlementRecord::FlagBoundAccount {
        mid: "m".into(),
        version: 1,
        at_ms: 5,
    })
    .unwrap();
    assert!(s.bound_account("m").unwrap().unwrap().needs_rebind);
    // A re-binding that read version 1 before the flag: refused, the flag stands.
    let stale = write(SettlementRecord::ReplaceBoundAccount {
        row: account(2, false),
        expected_version: 1,
        expected_needs_rebind: false,
    });
    assert!(
        matches!(stale, Err(store::StoreError::Constraint { .. })),
        "{stale:?}"
    );
    let now = s.bound_account("m").unwrap().unwrap();
    assert_eq!((now.version, now.needs_rebind), (1, true));
    // The confirmed re-binding, as read: in force.
    write(SettlementRecord::ReplaceBoundAccount {
        row: account(2, false),
        expected_version: 1,
        expected_needs_rebind: true,
    })
    .unwrap();
    // A late failure of the old account does not flag the new one.
    write(SettlementRecord::FlagBoundAccount {
        mid: "m".into(),
        version: 1,
        at_ms: 9,
    })
    .unwrap();
    let now = s.bound_account("m").unwrap().unwrap();
    assert_eq!((now.version, now.needs_rebind), (2, false));
}

/// A counter's block may be larger than a 32-bit integer holds, on either backend (PostgreSQL
/// types a bare placeholder beside `1 +` as one).
fn counter_blocks_beyond_32_bits_are_reserved(db: &Db) {
    let s = db.open();
    let block = 3_000_000_000;
    assert_eq!(s.reserve("big", block).unwrap().wait().unwrap(), 1);
    assert_eq!(s.reserve("big", 1).unwrap().wait().unwrap(), block + 1);
    assert_eq!(s.reserve("big", block).unwrap().wait().unwrap(), block + 2);
    assert_eq!(s.reserve("big", 1).unwrap().wait().unwrap(), 2 * block + 2);
}

/// The newest batch settlements, newest first: across every terminal, or a merchant's
/// terminals alone, at most as many as asked for, each with its terminal's merchant.
fn recent_batch_settlements_come_newest_first(db: &Db) {
    let s = db.open();
    let settled = |tid: &str, batch_no: u32, at_ms: i64| {
        Record::Settlement(SettlementRecord::BatchSettled(
            store::settlement::BatchSettlementRow {
                tid: tid.into(),
                batch_no,
                settled_at_ms: at_ms,
                result: 1,
                host_totals: String::new(),
                terminal_totals: String::new(),
                upload_done_at_ms: None,
                opened_after_ms: None,
            },
        ))
    };
    let mut records = vec![
        merchant("898110048990001"),
        merchant("898110048990002"),
        terminal("10000001", "898110048990001"),
        terminal("10000002", "898110048990001"),
        terminal("20000001", "898110048990002"),
    ];
    for (n, tid) in ["10000001", "20000001", "10000002", "10000001", "20000001"]
        .iter()
        .enumerate()
    {
        let n = u32::try_from(n).unwrap();
        records.push(settled(tid, n + 1, 1_000 * i64::from(n + 1)));
    }
    s.submit(records).unwrap().wait().unwrap();
    let seen = |mid: Option<&str>, limit| -> Vec<(String, String, u32)> {
        s.batch_settlements_recent(mid, limit)
            .unwrap()
            .into_iter()
            .map(|(mid, b)| (mid, b.tid, b.batch_no))
            .collect()
    };
    let m1 = "898110048990001".to_owned();
    let m2 = "898110048990002".to_owned();
    assert_eq!(
        seen(None, 3),
        [
            (m2.clone(), "20000001".into(), 5),
            (m1.clone(), "10000001".into(), 4),
            (m1.clone(), "10000002".into(), 3),
        ]
    );
    assert_eq!(
        seen(Some(&m1), 10),
        [
            (m1.clone(), "10000001".into(), 4),
            (m1.clone(), "10000002".into(), 3),
            (m1.clone(), "10000001".into(), 1),
        ]
    );
    assert!(seen(Some("898110048990009"), 10).is_empty());
}

on_both!(
    recent_batch_settlements_come_newest_first,
    counter_blocks_beyond_32_bits_are_reserved,
    bound_accounts_change_only_as_read,
    every_read_runs,
    clearing_totals_are_replaced_by_each_run,
    duplicate_flags_by_merchant_and_by_payment,
    payouts_are_read_newest_first,
    cases_page_back_from_the_newest,
    web_area_round_trips,
    terminal_health_round_trips,
    notifications_page_back_from_the_newest
);
