//! Clearing, ledger and payouts over a real SQLite store: a day with voids, refunds, a late
//! reversal; idempotent settle runs; a frozen account that fails, is held, re-bound with
//! maker-checker and paid exactly once; transient errors retried; a payout returned days later.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use domain::IssuerDirectory;
use settlement::{
    AccountInput, BindError, BindOutcome, Sealer, SimBank, SimBehaviour, audit, bind_account,
    confirm_change, ledger_accounts as acct, run_payouts, settle_date, settle_date_and_recent,
};
use store::settlement::{AccountKind, PayoutState, SettlementRecord};
use store::{Record, Store, TxnKind as K, TxnState as S};

const D: &str = "20261123";
const M1: &str = "898310058120001";
const M2: &str = "898310058120002";
const M3: &str = "898310058120003";

fn card_input(number: &str, name: &str) -> AccountInput {
    AccountInput {
        kind: AccountKind::Card,
        number: zeroize::Zeroizing::new(number.into()),
        holder_name: name.into(),
        bank_code: None,
    }
}

#[test]
fn a_card_number_typed_into_the_holder_name_is_refused() {
    let directory = IssuerDirectory::embedded().unwrap();
    let account = card("622202", 19, 1);
    let other = card("622848", 16, 7);
    let grouped: String = other
        .chars()
        .enumerate()
        .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
        .collect();
    // As a Chinese input method types it: full-width digits.
    let wide: String = other
        .chars()
        .filter_map(|c| c.to_digit(10))
        .filter_map(|d| char::from_u32(u32::from('０') + d))
        .collect();
    for name in [
        format!("王小明 {other}"),
        format!("王小明{account}"),
        format!("{grouped} 王小明"),
        format!("王小明（{wide}）"),
    ] {
        let refused = settlement::accounts::validate(&directory, &card_input(&account, &name));
        assert!(
            matches!(refused, Err(BindError::NameHasCardNumber)),
            "{name}: {refused:?}"
        );
    }
    // A bank account number (no check digit to find it by), plain, grouped or full-width.
    for name in [
        "某某公司 110060149018170012345",
        "某某公司 1100 6014 9018",
        "某某公司（１１００６０１４９０１８）",
    ] {
        let refused = settlement::accounts::validate(&directory, &card_input(&account, name));
        assert!(
            matches!(refused, Err(BindError::NameHasCardNumber)),
            "{name}: {refused:?}"
        );
    }
    // Digits that make no card number stay: a branch, a phone number.
    let name = "茶馆 2号店 13800138000";
    let (_, _, kept) =
        settlement::accounts::validate(&directory, &card_input(&account, name)).unwrap();
    assert_eq!(kept, name);
}

/// A merchant's money goes to a debit card or a bank account: a credit, semi-credit or prepaid
/// card is refused, by its BIN's card type.
#[test]
fn settlement_goes_to_a_debit_card_not_a_credit_or_prepaid_one() {
    let directory = IssuerDirectory::embedded().unwrap();
    for (bin, refused_as) in [
        ("625965", domain::CardType::Credit),
        ("620010", domain::CardType::Prepaid),
    ] {
        let number = card(bin, 16, 5);
        let refused = settlement::accounts::validate(&directory, &card_input(&number, "李四"));
        assert!(
            matches!(refused, Err(BindError::NotDebitCard(t)) if t == refused_as),
            "{bin}: {refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(!message.contains(&number[6..12]), "{message}");
    }
    let debit = card("434061", 16, 5);
    let (_, bank, _) =
        settlement::accounts::validate(&directory, &card_input(&debit, "李四")).unwrap();
    assert_eq!(bank, "CCB");
}

/// Re-binding after a failed payout waits for an operator; a change asked for again (a typo
/// mended) or a re-binding since overtakes the one still waiting, which can then no longer be
/// confirmed over what the merchant chose.
#[test]
fn a_change_overtaken_while_waiting_is_not_confirmed_over_a_newer_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    merchant(store, M1);
    let bind = |number: &str| {
        bind_account(
            store,
            &sealer,
            &directory,
            M1,
            &card_input(number, "王小明"),
            "merchant",
            1_000,
        )
        .unwrap()
    };
    let first = card("622202", 19, 1);
    assert!(matches!(bind(&first), BindOutcome::Active { .. }));
    store
        .submit(vec![Record::Settlement(
            SettlementRecord::FlagBoundAccount {
                mid: M1.into(),
                version: 1,
                at_ms: 2_000,
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    let typo = card("622202", 19, 2);
    let meant = card("622202", 19, 3);
    let BindOutcome::PendingConfirmation { change_id: x } = bind(&typo) else {
        panic!("a flagged account's re-binding waits");
    };
    let BindOutcome::PendingConfirmation { change_id: y } = bind(&meant) else {
        panic!("a flagged account's re-binding waits");
    };
    assert!(matches!(
        confirm_change(store, x, "ops-a", 3_000),
        Err(BindError::NotPending(id)) if id == x
    ));
    assert_eq!(confirm_change(store, y, "ops-a", 3_000).unwrap(), 2);
    let opened = |store: &dyn Store| {
        let bound = store.bound_account(M1).unwrap().unwrap();
        sealer.open(&bound.number_sealed).unwrap().to_string()
    };
    assert_eq!(opened(store), meant);

    // Flagged again, a re-binding waits; the merchant then binds freely once the flag is
    // cleared by another change: the waiting one is overtaken.
    store
        .submit(vec![Record::Settlement(
            SettlementRecord::FlagBoundAccount {
                mid: M1.into(),
                version: 2,
                at_ms: 4_000,
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    let BindOutcome::PendingConfirmation { change_id: z } = bind(&typo) else {
        panic!("a flagged account's re-binding waits");
    };
    let w = match bind(&first) {
        BindOutcome::PendingConfirmation { change_id } => change_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(confirm_change(store, w, "ops-b", 5_000).unwrap(), 3);
    assert!(matches!(
        confirm_change(store, z, "ops-a", 6_000),
        Err(BindError::NotPending(_) | BindError::Superseded(_))
    ));
    assert_eq!(opened(store), first);
    let states: Vec<_> = store
        .account_changes(Some(M1))
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert!(
        states
            .iter()
            .filter(|(id, _)| [x, z].contains(id))
            .all(|(_, s)| *s == store::settlement::ChangeState::Superseded),
        "{states:?}"
    );

    // A decision on a change no longer waiting fails whole, account replacement included: a
    // confirmation that read the change before a newer one superseded it cannot stand.
    let stale = store.account_change(x).unwrap().unwrap();
    let before = store.bound_account(M1).unwrap().unwrap();
    let late = store
        .submit(vec![
            Record::Settlement(SettlementRecord::DecideChange(
                store::settlement::AccountChangeRow {
                    state: store::settlement::ChangeState::Active,
                    ..stale
                },
            )),
            Record::Settlement(SettlementRecord::ReplaceBoundAccount {
                row: store::settlement::BoundAccountRow {
                    version: before.version + 1,
                    ..before.clone()
                },
                expected_version: before.version,
                expected_needs_rebind: before.needs_rebind,
            }),
        ])
        .and_then(|w| w.wait());
    assert!(late.is_err());
    assert_eq!(
        store.bound_account(M1).unwrap().unwrap().version,
        before.version
    );

    // A change waiting while the account's flag was cleared another way (a re-binding
    // confirmed on another node at the same moment): confirming it replaces nothing.
    store
        .submit(vec![Record::Settlement(
            SettlementRecord::FlagBoundAccount {
                mid: M1.into(),
                version: before.version,
                at_ms: 7_000,
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    let BindOutcome::PendingConfirmation { change_id: v } = bind(&typo) else {
        panic!("a flagged account's re-binding waits");
    };
    let flagged = store.bound_account(M1).unwrap().unwrap();
    store
        .submit(vec![Record::Settlement(
            SettlementRecord::ReplaceBoundAccount {
                row: store::settlement::BoundAccountRow {
                    needs_rebind: false,
                    version: flagged.version + 1,
                    ..flagged.clone()
                },
                expected_version: flagged.version,
                expected_needs_rebind: true,
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    assert!(matches!(
        confirm_change(store, v, "ops-a", 8_000),
        Err(BindError::Superseded(id)) if id == v
    ));
    assert_eq!(opened(store), first);
    assert_eq!(
        store.account_change(v).unwrap().unwrap().state,
        store::settlement::ChangeState::Superseded
    );
}

#[test]
fn a_day_is_cleared_posted_and_paid_once_through_a_frozen_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    for mid in [M1, M2, M3] {
        merchant(store, mid);
    }
    insert(
        store,
        vec![
            row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D),
            row(2, M1, K::Purchase, S::Voided, 5_000, "625965", D),
            row(3, M1, K::PurchaseVoid, S::Approved, 5_000, "625965", D),
            row(4, M1, K::Refund, S::Approved, 2_000, "622202", D),
            row(5, M1, K::Purchase, S::Reversed, 3_000, "622202", D),
            row(6, M1, K::Purchase, S::Approved, 800_000, "622202", D),
            row(7, M2, K::Purchase, S::Approved, 4_000, "411111", D),
            row(8, M1, K::Purchase, S::Declined, 9_999, "622202", D),
            row(9, M1, K::BalanceInquiry, S::Approved, 0, "622202", D),
            row(10, M3, K::Purchase, S::Approved, 7_000, "625965", D),
            // Another day: not in this run.
            row(
                11,
                M1,
                K::Purchase,
                S::Approved,
                1_111,
                "622202",
                "20261124",
            ),
        ],
    );

    let first = settle_date(store, &directory, D, 1_000).unwrap();
    assert!(first.changed);
    assert_eq!(first.new_lines, 7);
    let m1 = first.merchants.iter().find(|m| m.mid == M1).unwrap();
    // Debit 0.55 % half up, capped at 20 yuan; credit 0.6 %, given back by the void; no fee
    // back on a refund.
    assert_eq!(
        (m1.captures_fen, m1.voids_fen, m1.refunds_fen, m1.fees_fen),
        (815_000, 5_000, 2_000, 55 + 2_000)
    );
    assert_eq!(m1.net_fen, 815_000 - 5_000 - 2_000 - 2_055);
    let m2 = first.merchants.iter().find(|m| m.mid == M2).unwrap();
    assert_eq!((m2.fees_fen, m2.net_fen), (80, 3_920));

    // Idempotent: a second run writes nothing and says so.
    let again = settle_date(store, &directory, "2026-11-23", 2_000).unwrap();
    assert!(!again.changed);
    assert_eq!(again.merchants, first.merchants);

    // A late reversal of a cleared purchase: the next run posts the correction only.
    store
        .submit(vec![Record::State {
            id: 6,
            state: S::Reversed,
        }])
        .unwrap()
        .wait()
        .unwrap();
    let third = settle_date(store, &directory, D, 3_000).unwrap();
    assert_eq!(
        (third.changed, third.new_lines, third.run_no),
        (true, 1, Some(2))
    );
    let m1_net = 10_000 - 2_000 - 55;
    assert_eq!(
        third
            .merchants
            .iter()
            .find(|m| m.mid == M1)
            .unwrap()
            .net_fen,
        m1_net
    );
    let lines = store.clearing_lines(D).unwrap();
    let corr = lines.iter().find(|l| l.txn_id == 6 && l.seq == 2).unwrap();
    assert_eq!((corr.amount_fen, corr.fee_fen), (-800_000, -2_000));
    // The merchant's totals of the date, rewritten by the second run, are its lines' sums.
    let totals = store.clearing_totals(Some(M1), 10).unwrap();
    assert_eq!(totals.len(), 1);
    let mine: Vec<_> = lines.iter().filter(|l| l.mid == M1).collect();
    assert_eq!(
        (totals[0].lines, totals[0].gross_fen, totals[0].fee_fen),
        (
            u64::try_from(mine.len()).unwrap(),
            mine.iter().map(|l| l.amount_fen).sum(),
            mine.iter().map(|l| l.fee_fen).sum()
        )
    );
    assert_eq!(totals[0].gross_fen - totals[0].fee_fen, m1_net);
    let everyone = store.clearing_totals(None, 10).unwrap();
    let mids: Vec<&str> = everyone.iter().map(|t| t.mid.as_str()).collect();
    assert!(
        mids.len() >= 2 && mids.windows(2).all(|w| w[0] < w[1]),
        "{mids:?}"
    );
    assert!(mids.contains(&M1) && mids.contains(&M2));
    // Across merchants the totals add up to the date's lines.
    assert_eq!(
        everyone.iter().map(|t| t.fee_fen).sum::<i64>(),
        lines.iter().map(|l| l.fee_fen).sum::<i64>()
    );

    let ledger = audit(store).unwrap();
    assert!(ledger.balanced, "{ledger:?}");
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        -m1_net
    );
    assert_eq!(
        store.ledger_balance(acct::FEE_INCOME, None).unwrap(),
        -(55 + 80 + 42)
    );

    // Accounts: validation first.
    let frozen_card = card("622202", 19, 1);
    let bad = |input: AccountInput| {
        bind_account(store, &sealer, &directory, M1, &input, "merchant", 0).unwrap_err()
    };
    let mut typo = frozen_card.clone().into_bytes();
    typo[18] = if typo[18] == b'9' { b'0' } else { typo[18] + 1 };
    assert!(matches!(
        bad(card_input(&String::from_utf8(typo).unwrap(), "王小明")),
        BindError::Luhn
    ));
    assert!(matches!(
        bad(card_input(&frozen_card, "  ")),
        BindError::NameMissing
    ));
    assert!(matches!(
        bad(AccountInput {
            kind: AccountKind::Bank,
            number: zeroize::Zeroizing::new("6212345678".into()),
            holder_name: "王小明".into(),
            bank_code: Some("NOSUCHBANK".into()),
        }),
        BindError::UnknownBank
    ));
    assert!(matches!(
        bad(AccountInput {
            bank_code: Some("CCB".into()),
            ..card_input(&frozen_card, "王小明")
        }),
        BindError::BankMismatch { .. }
    ));
    // A merchant the journal does not hold (a mistyped MID): nothing is bound for no one.
    let unknown = bind_account(
        store,
        &sealer,
        &directory,
        "89811004899000X",
        &card_input(&frozen_card, "王小明"),
        "ops",
        0,
    );
    assert!(
        matches!(&unknown, Err(BindError::UnknownMerchant(m)) if m == "89811004899000X"),
        "{unknown:?}"
    );
    assert!(store.bound_account("89811004899000X").unwrap().is_none());

    let bound = bind_account(
        store,
        &sealer,
        &directory,
        M1,
        &card_input(&frozen_card, "王小明"),
        "merchant",
        0,
    )
    .unwrap();
    assert!(matches!(bound, BindOutcome::Active { version: 1, .. }));
    // Replacing it waits for an operator, whoever asks: one holding the merchant's sign-in
    // alone cannot point its payouts elsewhere. The account in force stays until then.
    let elsewhere = card("622202", 19, 95);
    let change = bind_account(
        store,
        &sealer,
        &directory,
        M1,
        &card_input(&elsewhere, "王小明"),
        "merchant",
        0,
    )
    .unwrap();
    let BindOutcome::PendingConfirmation { change_id } = change else {
        panic!("a change of a bound account took effect at once: {change:?}");
    };
    assert_eq!(store.bound_account(M1).unwrap().unwrap().version, 1);
    assert!(matches!(
        confirm_change(store, change_id, "merchant", 0),
        Err(BindError::SameUser(_))
    ));
    settlement::accounts::reject_change(store, change_id, "ops", "not asked by the merchant", 0)
        .unwrap();
    let row = store.bound_account(M1).unwrap().unwrap();
    assert_eq!(row.version, 1);
    assert!(!row.number_masked.ends_with(&elsewhere[15..]));
    let m2_account = "955880012345678";
    bind_account(
        store,
        &sealer,
        &directory,
        M2,
        &AccountInput {
            kind: AccountKind::Bank,
            number: zeroize::Zeroizing::new(m2_account.into()),
            holder_name: "Teahouse Ltd".into(),
            bank_code: Some("ICBC".into()),
        },
        "merchant2",
        0,
    )
    .unwrap();
    let m3_card = card("434061", 16, 3);
    bind_account(
        store,
        &sealer,
        &directory,
        M3,
        &card_input(&m3_card, "李四"),
        "m3",
        0,
    )
    .unwrap();
    // The account number is sealed at rest: only the masked form is readable.
    let row = store.bound_account(M1).unwrap().unwrap();
    assert!(!row.number_masked.contains(&frozen_card[6..15]));
    assert!(
        !row.number_sealed
            .windows(19)
            .any(|w| w == frozen_card.as_bytes())
    );

    let bank = SimBank::new();
    bank.set_today("20261124");
    bank.set_behaviour(&frozen_card, SimBehaviour::Frozen);
    bank.set_behaviour(m2_account, SimBehaviour::SystemErrors(1));
    bank.set_behaviour(&m3_card, SimBehaviour::ReturnAfterDays(2));

    // T+0 (the clearing day itself): nothing is due yet.
    let early = run_payouts(store, &bank, &sealer, D, 10_000).unwrap();
    assert!(early.created.is_empty());

    // T+1: M1 fails (frozen) and is held; M2 hits a bank system error and retries; M3 is sent.
    let t1 = "20261124";
    let run = run_payouts(store, &bank, &sealer, t1, 20_000).unwrap();
    assert_eq!(run.created.len(), 3);
    assert_eq!(run.held, vec![format!("{M1}:{t1}")]);
    assert_eq!(run.retrying, vec![format!("{M2}:{t1}")]);
    assert_eq!(run.sent, vec![format!("{M3}:{t1}")]);
    assert!(store.bound_account(M1).unwrap().unwrap().needs_rebind);
    let held = store.payout(&format!("{M1}:{t1}")).unwrap().unwrap();
    assert_eq!(
        (held.state, held.amount_fen, held.failure.as_deref()),
        (PayoutState::Held, m1_net, Some("payout-account-frozen"))
    );
    assert_eq!(
        store.ledger_balance(&acct::held(M1), None).unwrap(),
        -m1_net
    );
    let events = store.payout_events(0, 100).unwrap();
    assert!(events.iter().any(|e| e.mid == M1
        && e.kind == "failed"
        && e.failure.as_deref() == Some("payout-account-frozen")));

    // Rerun at once: nothing created twice, nothing paid twice, M2 not yet due for its retry.
    let rerun = run_payouts(store, &bank, &sealer, t1, 20_001).unwrap();
    assert!(
        rerun.created.is_empty() && rerun.sent.is_empty(),
        "{rerun:?}"
    );
    // After the backoff M2 goes out.
    let later = run_payouts(store, &bank, &sealer, t1, 20_000 + 61_000).unwrap();
    assert_eq!(later.sent, vec![format!("{M2}:{t1}")]);
    assert_eq!(
        (bank.credited(m2_account), bank.payments(m2_account)),
        (3_920, 1)
    );

    // The merchant re-binds; it waits for an operator who is not the merchant.
    let new_card = card("622848", 19, 7);
    let pending = bind_account(
        store,
        &sealer,
        &directory,
        M1,
        &card_input(&new_card, "王小明"),
        "merchant",
        30_000,
    )
    .unwrap();
    let BindOutcome::PendingConfirmation { change_id } = pending else {
        panic!("a re-binding after a failure needs confirmation: {pending:?}");
    };
    let not_yet = run_payouts(store, &bank, &sealer, t1, 90_000).unwrap();
    assert!(not_yet.released.is_empty() && not_yet.sent.is_empty());
    assert!(matches!(
        confirm_change(store, change_id, "merchant", 31_000),
        Err(BindError::SameUser(_))
    ));
    assert_eq!(
        confirm_change(store, change_id, "ops-li", 32_000).unwrap(),
        2
    );

    let released = run_payouts(store, &bank, &sealer, t1, 100_000).unwrap();
    assert_eq!(released.released, vec![format!("{M1}:{t1}")]);
    assert_eq!(released.sent, vec![format!("{M1}:{t1}")]);
    for n in 0..3 {
        let again = run_payouts(store, &bank, &sealer, t1, 200_000 + n).unwrap();
        assert!(again.sent.is_empty() && again.created.is_empty());
    }
    assert_eq!(
        (bank.credited(&new_card), bank.payments(&new_card)),
        (m1_net, 1)
    );
    assert_eq!(bank.credited(&frozen_card), 0);
    // Each merchant got exactly captures − voids − refunds − fees.
    assert_eq!(bank.credited(&m3_card), 7_000 - 42);

    // Two days later M3's payout comes back: held, account flagged.
    let t3 = "20261126";
    let returned = run_payouts(store, &bank, &sealer, t3, 300_000).unwrap();
    assert_eq!(returned.returned, vec![format!("{M3}:{t1}")]);
    assert_eq!(bank.credited(&m3_card), 0);
    assert!(store.bound_account(M3).unwrap().unwrap().needs_rebind);
    assert_eq!(
        store.ledger_balance(&acct::held(M3), None).unwrap(),
        -(7_000 - 42)
    );

    let ledger = audit(store).unwrap();
    assert!(ledger.balanced, "{ledger:?}");
    for mid in [M1, M2] {
        assert_eq!(
            store
                .ledger_balance(&acct::merchant_payable(mid), None)
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .ledger_balance(&acct::payouts_in_flight(mid), None)
                .unwrap(),
            0
        );
        assert_eq!(store.ledger_balance(&acct::held(mid), None).unwrap(), 0);
    }
}

#[test]
fn the_store_refuses_an_unbalanced_posting() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let posting = store::settlement::PostingRow {
        id: 1,
        at_ms: 0,
        value_date: D.into(),
        kind: "bad".into(),
        reference: "r".into(),
        legs: vec![
            store::settlement::LegRow {
                account: "a".into(),
                amount_fen: 10,
            },
            store::settlement::LegRow {
                account: "b".into(),
                amount_fen: -9,
            },
        ],
    };
    let result = store
        .submit(vec![Record::Settlement(SettlementRecord::Postings(vec![
            posting,
        ]))])
        .unwrap()
        .wait();
    assert!(result.is_err());
    assert!(audit(store.as_ref()).unwrap().balanced);
}

#[test]
fn every_bank_failure_mode_is_diagnosed_and_only_system_errors_retry() {
    use domain::PayoutFailure as F;
    let cases: [(SimBehaviour, Option<&str>, Option<F>); 6] = [
        (
            SimBehaviour::InvalidAccount,
            None,
            Some(F::InvalidAccountNumber),
        ),
        (
            SimBehaviour::Normal,
            Some("张三"),
            Some(F::HolderNameMismatch),
        ),
        (SimBehaviour::Frozen, None, Some(F::AccountFrozen)),
        (
            SimBehaviour::ClosedOrLost,
            None,
            Some(F::AccountClosedOrLost),
        ),
        (SimBehaviour::LimitFen(100), None, Some(F::OverAccountLimit)),
        (SimBehaviour::SystemErrors(2), None, None),
    ];
    for (i, (behaviour, bank_name, failure)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let store: &dyn Store = store.as_ref();
        let directory = IssuerDirectory::embedded().unwrap();
        let sealer = sealer();
        merchant(store, M1);
        insert(
            store,
            vec![row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D)],
        );
        settle_date(store, &directory, D, 0).unwrap();
        let number = card("622202", 19, 50 + u64::try_from(i).unwrap());
        bind_account(
            store,
            &sealer,
            &directory,
            M1,
            &card_input(&number, "王小明"),
            "m",
            0,
        )
        .unwrap();
        let bank = SimBank::new();
        bank.set_behaviour(&number, behaviour.clone());
        if let Some(name) = bank_name {
            bank.set_holder(&number, name);
        }
        let key = format!("{M1}:20261124");
        let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
        let payout = store.payout(&key).unwrap().unwrap();
        match failure {
            Some(f) => {
                assert_eq!(run.held, vec![key.clone()], "{behaviour:?}");
                assert_eq!(payout.failure.as_deref(), Some(f.key()));
                assert!(store.bound_account(M1).unwrap().unwrap().needs_rebind);
                let event = store.payout_events(0, 10).unwrap().pop().unwrap();
                assert_eq!(
                    (event.kind.as_str(), event.failure.as_deref()),
                    ("failed", Some(f.key()))
                );
                assert!(!domain::diagnose_payout(f).merchant_steps.is_empty());
            }
            None => {
                // Retried with backoff: 1 minute, then 2, then it goes through.
                assert_eq!(run.retrying, vec![key.clone()]);
                let early = run_payouts(store, &bank, &sealer, "20261124", 1_000 + 30_000).unwrap();
                assert!(early.retrying.is_empty() && early.sent.is_empty());
                let second =
                    run_payouts(store, &bank, &sealer, "20261124", 1_000 + 60_000).unwrap();
                assert_eq!(second.retrying, vec![key.clone()]);
                let third =
                    run_payouts(store, &bank, &sealer, "20261124", 1_000 + 181_000).unwrap();
                assert_eq!(third.sent, vec![key.clone()]);
                assert_eq!(bank.credited(&number), 10_000 - 55);
                assert!(!store.bound_account(M1).unwrap().unwrap().needs_rebind);
            }
        }
        assert!(audit(store).unwrap().balanced);
    }
}

#[test]
fn a_day_reversed_after_its_run_is_corrected_by_the_next_days_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D),
            row(2, M1, K::Purchase, S::Approved, 4_000, "622202", D),
        ],
    );
    let (first, revisited) = settle_date_and_recent(store, &directory, D, 0).unwrap();
    assert!(first.changed && revisited.is_empty());
    let payable = || {
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap()
    };
    assert_eq!(payable(), -(14_000 - 55 - 22));
    // Just after the cut-over the terminal reverses the second sale (inside the grace): the
    // day is already cleared.
    store
        .submit(vec![store::Record::State {
            id: 2,
            state: S::Reversed,
        }])
        .unwrap()
        .wait()
        .unwrap();
    // The next day's run clears that day again and takes the sale back out.
    let (next, revisited) = settle_date_and_recent(store, &directory, "20261124", 1).unwrap();
    assert!(!next.changed);
    assert_eq!(revisited.len(), 1, "{revisited:?}");
    assert_eq!(revisited[0].clearing_date, D);
    assert_eq!(payable(), -(10_000 - 55));
    // And only once.
    let (_, again) = settle_date_and_recent(store, &directory, "20261124", 2).unwrap();
    assert!(again.is_empty());
    assert!(audit(store).unwrap().balanced);
}

/// A day older than the revisit window is cleared again when one of its transactions has had
/// an event since the last run (a host reversal acknowledged days later, after a lost commit
/// answer), and only then.
#[test]
fn an_old_day_whose_transaction_changed_since_the_last_run_is_cleared_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D),
            row(2, M1, K::Purchase, S::Approved, 4_000, "622202", D),
        ],
    );
    let payable = || {
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap()
    };
    settle_date_and_recent(store, &directory, D, 1_000).unwrap();
    assert_eq!(payable(), -(14_000 - 55 - 22));
    // Runs of the following days; nothing changes.
    for (day, at) in [
        ("20261124", 2_000),
        ("20261125", 3_000),
        ("20261126", 4_000),
    ] {
        let (_, revisited) = settle_date_and_recent(store, &directory, day, at).unwrap();
        assert!(revisited.is_empty());
    }
    // Five days on, the second sale is reversed by the host, with its timeline event.
    store
        .submit(vec![
            store::Record::State {
                id: 2,
                state: S::Reversed,
            },
            store::Record::Event(store::EventRow {
                txn_id: 2,
                at_ms: 5_000,
                kind: "host_reversal".to_owned(),
                detail: String::new(),
            }),
        ])
        .unwrap()
        .wait()
        .unwrap();
    let (_, revisited) = settle_date_and_recent(store, &directory, "20261127", 6_000).unwrap();
    assert_eq!(revisited.len(), 1, "{revisited:?}");
    assert_eq!(revisited[0].clearing_date, D);
    assert_eq!(payable(), -(10_000 - 55));
    // The next run does not revisit it: nothing happened to it since.
    let (_, again) = settle_date_and_recent(store, &directory, "20261128", 7_000).unwrap();
    assert!(again.is_empty());
    assert!(audit(store).unwrap().balanced);
}

const HOUR: i64 = 3_600_000;

/// A sale of 100.00 on the 16th and one of 40.00 on 10 October (further back than a run looks
/// for missed dates, `MISSED_DAYS_MAX`, so left to be settled by hand); the 16th settled (at 10 h) and
/// the 20th (at 20 h), hours apart as days' runs are (reads go back an hour before the last
/// run); then, days later (30 h), the 16th's sale reversed with its timeline event. Returns
/// the merchant's payable balance as it is when asked.
#[allow(clippy::unwrap_used)]
fn the_16ths_sale_reversed_after_its_run(store: &dyn Store) -> impl Fn() -> i64 + '_ {
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(
                1,
                M1,
                K::Purchase,
                S::Approved,
                10_000,
                "622202",
                "20261116",
            ),
            row(2, M1, K::Purchase, S::Approved, 4_000, "622202", "20261010"),
        ],
    );
    let payable = move || {
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap()
    };
    settle_date_and_recent(store, &directory, "20261116", 10 * HOUR).unwrap();
    settle_date_and_recent(store, &directory, "20261120", 20 * HOUR).unwrap();
    assert_eq!(payable(), -(10_000 - 55));
    store
        .submit(vec![
            store::Record::State {
                id: 1,
                state: S::Reversed,
            },
            store::Record::Event(store::EventRow {
                txn_id: 1,
                at_ms: 30 * HOUR,
                kind: "reversed".to_owned(),
                detail: String::new(),
            }),
        ])
        .unwrap()
        .wait()
        .unwrap();
    payable
}

/// Settling an older date (a missed day, run by hand) is itself a settle run: a date touched
/// before it must be cleared again then, or the next run, reading from that run on, never
/// would.
#[test]
fn a_date_touched_before_an_older_date_is_settled_is_still_cleared_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let payable = the_16ths_sale_reversed_after_its_run(store);
    // 10 October, missed, is settled by hand.
    settle_date_and_recent(store, &directory, "20261010", 40 * HOUR).unwrap();
    settle_date_and_recent(store, &directory, "20261121", 50 * HOUR).unwrap();
    assert_eq!(payable(), -(4_000 - 22), "the reversed sale is taken back");
    assert!(audit(store).unwrap().balanced);
}

/// A settle run that stops part-way (here: having cleared one date on its own, as a run that
/// failed before its last date leaves things) moves no mark: the next run still reads the
/// events since the last finished run, and clears again the date a reversal touched.
#[test]
fn a_settle_run_that_stopped_part_way_leaves_the_next_run_its_changed_dates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let payable = the_16ths_sale_reversed_after_its_run(store);
    // The run of the 21st clears one date and stops.
    settle_date(store, &directory, "20261010", 40 * HOUR).unwrap();
    assert_eq!(payable(), -(10_000 - 55 + 4_000 - 22));
    let (_, revisited) = settle_date_and_recent(store, &directory, "20261122", 80 * HOUR).unwrap();
    assert!(
        revisited.iter().any(|r| r.clearing_date == "20261116"),
        "{revisited:?}"
    );
    assert_eq!(payable(), -(4_000 - 22), "the reversed sale is taken back");
    assert!(audit(store).unwrap().balanced);
}

/// A date whose settle run was missed (the 22nd and the 24th settled, the 23rd not) is cleared
/// by the next date's run, which says it cleared it late; then once only.
#[test]
fn a_date_whose_settle_run_was_missed_is_cleared_by_the_next_dates_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(
                1,
                M1,
                K::Purchase,
                S::Approved,
                10_000,
                "622202",
                "20261122",
            ),
            row(
                2,
                M1,
                K::Purchase,
                S::Approved,
                20_000,
                "622202",
                "20261123",
            ),
            row(3, M1, K::Purchase, S::Approved, 4_000, "622202", "20261124"),
        ],
    );
    let payable = || {
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap()
    };
    settle_date_and_recent(store, &directory, "20261122", HOUR).unwrap();
    let (report, revisited) =
        settle_date_and_recent(store, &directory, "20261124", 3 * HOUR).unwrap();
    assert!(report.changed && !report.missed, "{report:?}");
    assert_eq!(revisited.len(), 1, "{revisited:?}");
    assert_eq!(revisited[0].clearing_date, "20261123");
    assert!(revisited[0].missed, "{revisited:?}");
    assert_eq!(revisited[0].new_lines, 1);
    assert_eq!(payable(), -(10_000 - 55 + 20_000 - 110 + 4_000 - 22));
    let (_, again) = settle_date_and_recent(store, &directory, "20261125", 4 * HOUR).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(payable(), -(10_000 - 55 + 20_000 - 110 + 4_000 - 22));
    assert!(audit(store).unwrap().balanced);
}

/// The settle job down for a week: the 2nd's sale, never cleared, is cleared by the 9th's run as
/// missed (it was older than the three dates a run looks back at, and was never cleared, its
/// sale never paid, and nothing said so). A date in that week with no transactions is left
/// alone, not recorded as settled.
#[test]
fn a_date_missed_a_week_back_is_cleared_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(
                1,
                M1,
                K::Purchase,
                S::Approved,
                10_000,
                "622202",
                "20261101",
            ),
            row(
                2,
                M1,
                K::Purchase,
                S::Approved,
                20_000,
                "622202",
                "20261102",
            ),
        ],
    );
    let payable = || {
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap()
    };
    settle_date_and_recent(store, &directory, "20261101", HOUR).unwrap();
    assert_eq!(payable(), -(10_000 - 55));
    let (_, revisited) = settle_date_and_recent(store, &directory, "20261109", 200 * HOUR).unwrap();
    let missed: Vec<_> = revisited
        .iter()
        .map(|r| (r.clearing_date.as_str(), r.missed))
        .collect();
    assert_eq!(missed, [("20261102", true)], "{revisited:?}");
    assert_eq!(payable(), -(10_000 - 55 + 20_000 - 110));
    assert!(store.settle_runs(Some("20261103")).unwrap().is_empty());
    // Once only.
    let (_, again) = settle_date_and_recent(store, &directory, "20261110", 210 * HOUR).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(payable(), -(10_000 - 55 + 20_000 - 110));
    assert!(audit(store).unwrap().balanced);
}

/// A date whose only sale was still at its issuer when the date was settled (nothing to clear
/// then) is cleared when that sale is approved later, like any date cleared before.
#[test]
fn a_date_that_had_nothing_to_clear_at_its_run_is_cleared_when_a_late_approval_comes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![row(1, M1, K::Purchase, S::InFlight, 10_000, "622202", D)],
    );
    let hour = 3_600_000;
    let (first, _) = settle_date_and_recent(store, &directory, D, hour).unwrap();
    assert!(!first.changed);
    assert_eq!(first.run_no, Some(1), "the run is recorded all the same");
    store
        .submit(vec![
            store::Record::State {
                id: 1,
                state: S::Approved,
            },
            store::Record::Event(store::EventRow {
                txn_id: 1,
                at_ms: 2 * hour,
                kind: "late_approval".to_owned(),
                detail: String::new(),
            }),
        ])
        .unwrap()
        .wait()
        .unwrap();
    let (_, revisited) = settle_date_and_recent(store, &directory, "20261130", 30 * hour).unwrap();
    assert_eq!(revisited.len(), 1, "{revisited:?}");
    assert_eq!(revisited[0].clearing_date, D);
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        -(10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);
}

#[test]
fn a_fee_is_fixed_when_first_cleared_whatever_the_plan_says_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    insert(
        store,
        vec![
            row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D),
            row(2, M1, K::Purchase, S::Approved, 4_000, "622202", D),
            row(3, M1, K::Purchase, S::Approved, 8_000, "622202", D),
        ],
    );
    settle_date(store, &directory, D, 0).unwrap();
    let fee_income = || {
        store
            .ledger_balance(acct::FEE_INCOME, None)
            .unwrap()
            .saturating_neg()
    };
    assert_eq!(fee_income(), 55 + 22 + 44);
    // The merchant's debit rate drops from 0.55 % to 0.38 %; then the day changes: the second
    // sale is reversed late and the first is voided.
    settlement::set_terms(
        store,
        M1,
        &settlement::FeePlan {
            debit_bp: 38,
            ..settlement::FeePlan::default()
        },
        1,
    )
    .unwrap();
    store
        .submit(vec![store::Record::State {
            id: 2,
            state: S::Reversed,
        }])
        .unwrap()
        .wait()
        .unwrap();
    let mut void = row(4, M1, K::PurchaseVoid, S::Approved, 10_000, "622202", D);
    void.original_id = Some(1);
    insert(store, vec![void]);
    let again = settle_date(store, &directory, D, 2).unwrap();
    // Two new lines (the reversal, the void), none re-pricing the third sale; each gives back
    // what was charged.
    assert_eq!(again.new_lines, 2, "{again:?}");
    assert_eq!(fee_income(), 44);
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        -(8_000 - 44)
    );
    assert!(audit(store).unwrap().balanced);

    // A void in the next day's grace (cleared on the next date) gives back what its sale was
    // charged on its own date, not the fee today's plan would charge.
    let next = "20261124";
    let mut void = row(5, M1, K::PurchaseVoid, S::Approved, 8_000, "622202", next);
    void.original_id = Some(3);
    insert(store, vec![void]);
    store
        .submit(vec![store::Record::State {
            id: 3,
            state: S::Voided,
        }])
        .unwrap()
        .wait()
        .unwrap();
    settlement::settle_date_and_recent(store, &directory, next, 3).unwrap();
    assert_eq!(fee_income(), 0, "the voided sale's fee is given back whole");
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        0
    );
    assert!(audit(store).unwrap().balanced);
}

/// M1 with one 100.00 sale on D, cleared, and a card bound as its account (the card's number
/// made with `seed`); the number.
#[allow(clippy::unwrap_used)]
fn one_sale_cleared_and_bound(
    store: &dyn Store,
    directory: &IssuerDirectory,
    sealer: &dyn settlement::Sealer,
    seed: u64,
) -> String {
    merchant(store, M1);
    insert(
        store,
        vec![row(1, M1, K::Purchase, S::Approved, 10_000, "622202", D)],
    );
    settle_date(store, directory, D, 0).unwrap();
    let number = card("622202", 19, seed);
    bind_account(
        store,
        sealer,
        directory,
        M1,
        &card_input(&number, "王小明"),
        "m",
        0,
    )
    .unwrap();
    number
}

#[test]
fn a_return_the_bank_reported_once_is_acted_on_even_by_a_later_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    one_sale_cleared_and_bound(store, &directory, &sealer, 91);
    let bank = SimBank::new();
    let key = format!("{M1}:20261124");
    let paid = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(paid.sent, vec![key.clone()]);
    let reference = store.payout(&key).unwrap().unwrap().bank_reference.unwrap();
    // A run took the bank's report of the return and wrote it down, then failed before acting
    // on it (the bank will not report it again).
    store
        .submit(vec![store::Record::Settlement(
            SettlementRecord::PayoutReturned {
                reference: reference.clone(),
                reported_on: "20261126".into(),
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(store.payout_returns_open(10).unwrap(), [reference]);
    let next = run_payouts(store, &bank, &sealer, "20261127", 2_000).unwrap();
    assert_eq!(next.returned, vec![key.clone()]);
    assert_eq!(
        store.payout(&key).unwrap().unwrap().state,
        PayoutState::Held
    );
    assert!(store.bound_account(M1).unwrap().unwrap().needs_rebind);
    assert!(store.payout_returns_open(10).unwrap().is_empty());
    assert_eq!(
        store.ledger_balance(&acct::held(M1), None).unwrap(),
        -(10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);
}

/// A payout held (the card frozen) while its merchant then refunds more than it sells: when
/// the merchant re-binds, the released payout is netted against that debt as a new payout
/// would be, and only the rest is sent; a debt as large as the payout leaves nothing to send.
#[test]
fn a_held_payout_released_is_netted_against_what_the_merchant_came_to_owe() {
    for refund_fen in [3_000, 12_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let store: &dyn Store = store.as_ref();
        let directory = IssuerDirectory::embedded().unwrap();
        let sealer = sealer();
        let frozen = one_sale_cleared_and_bound(store, &directory, &sealer, 94);
        let bank = SimBank::new();
        bank.set_behaviour(&frozen, SimBehaviour::Frozen);
        let key = format!("{M1}:20261124");
        let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
        assert_eq!(run.held, vec![key.clone()]);
        // The next day's only transaction: a refund of the held day's sale.
        refund_cleared_next_day(store, &directory, refund_fen);
        let payable = || {
            store
                .ledger_balance(&acct::merchant_payable(M1), None)
                .unwrap()
        };
        assert_eq!(payable(), refund_fen, "the merchant owes the refund");

        let new_card = card("622848", 19, 95);
        rebind(
            store,
            &sealer,
            &directory,
            &card_input(&new_card, "王小明"),
            3_000,
        );
        let released = run_payouts(store, &bank, &sealer, "20261125", 5_000).unwrap();
        assert_eq!(released.released, vec![key.clone()], "{released:?}");
        let owed = (10_000 - 55 - refund_fen).max(0);
        let payout = store.payout(&key).unwrap().unwrap();
        assert_eq!(payout.amount_fen, owed);
        if owed > 0 {
            assert_eq!(released.sent, vec![key.clone()], "{released:?}");
        } else {
            assert!(released.sent.is_empty(), "{released:?}");
        }
        assert_eq!(payout.state, PayoutState::Sent);
        assert_eq!(bank.credited(&new_card), owed);
        assert_eq!(bank.payments(&new_card), u32::from(owed > 0));
        assert_eq!(payable(), (refund_fen - (10_000 - 55)).max(0));
        assert_eq!(store.ledger_balance(&acct::held(M1), None).unwrap(), 0);
        assert_eq!(
            store
                .ledger_balance(&acct::payouts_in_flight(M1), None)
                .unwrap(),
            0
        );
        assert_eq!(store.ledger_balance(acct::BANK, None).unwrap(), -owed);
        assert!(audit(store).unwrap().balanced);
        let again = run_payouts(store, &bank, &sealer, "20261126", 6_000).unwrap();
        assert!(
            again.created.is_empty() && again.sent.is_empty() && again.released.is_empty(),
            "{again:?}"
        );
    }
}

/// A merchant whose payouts stay held (its account never re-bound: a business closed) piles
/// up more held payouts, over the years, than a run reads at once; another merchant's held
/// payout, newer than all of them, is still released when that merchant re-binds.
#[test]
fn payouts_held_for_ever_keep_no_other_merchants_from_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let frozen = one_sale_cleared_and_bound(store, &directory, &sealer, 97);
    let bank = SimBank::new();
    bank.set_behaviour(&frozen, SimBehaviour::Frozen);
    let key = format!("{M1}:20261124");
    let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(run.held, vec![key.clone()]);
    // M2's held payouts, one a day for years before, as many as a run reads.
    let first_day = settlement::dates::day_number("19900101").unwrap();
    let old: Vec<Record> = (0..i64::from(settlement::payout::PAYOUTS_PER_RUN_MAX))
        .map(|n| {
            let day = settlement::dates::from_day_number(first_day + n);
            Record::Settlement(SettlementRecord::NewPayout(store::settlement::PayoutRow {
                key: format!("{M2}:{day}"),
                mid: M2.to_owned(),
                payout_date: day.clone(),
                cutoff_date: day,
                amount_fen: 100,
                state: PayoutState::Held,
                attempts: 1,
                next_attempt_ms: 0,
                account_version: 1,
                account_masked: "6222****0001".to_owned(),
                bank_reference: None,
                sent_to: None,
                failure: Some("account_closed".to_owned()),
                first_attempt_ms: None,
                created_at_ms: 0,
                updated_at_ms: 0,
            }))
        })
        .collect();
    store.submit(old).unwrap().wait().unwrap();
    let new_card = card("622848", 19, 98);
    rebind(
        store,
        &sealer,
        &directory,
        &card_input(&new_card, "王小明"),
        3_000,
    );
    let run = run_payouts(store, &bank, &sealer, "20261125", 5_000).unwrap();
    assert_eq!(run.released, vec![key.clone()], "{:?}", run.released.len());
    assert_eq!(run.sent, vec![key], "{:?}", run.sent.len());
}

/// A payout run ahead of its cutoff day's settle run (the day still trading, or its settle
/// run not made yet) makes no payout by that cutoff: the day's key is not taken with only the
/// days before it, which would leave that day's money to the payout after. Once the day is
/// settled the payout takes both days.
#[test]
fn no_payout_is_made_by_a_cutoff_not_yet_settled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 99);
    let bank = SimBank::new();
    // The 25th's payout (by the 24th, a day not settled yet): nothing made.
    let early = run_payouts(store, &bank, &sealer, "20261125", 1_000).unwrap();
    assert!(early.created.is_empty(), "{early:?}");
    assert_eq!(early.unsettled, ["20261124"], "{early:?}");
    assert!(store.payout(&format!("{M1}:20261125")).unwrap().is_none());
    // The 24th's sale, then its settle run: the payout takes the 23rd's and the 24th's.
    let mut sale = row(
        2,
        M1,
        K::Purchase,
        S::Approved,
        20_000,
        "622202",
        "20261124",
    );
    sale.received_at_ms += 86_400_000;
    insert(store, vec![sale]);
    settle_date(store, &directory, "20261124", 2_000).unwrap();
    let run = run_payouts(store, &bank, &sealer, "20261125", 3_000).unwrap();
    assert_eq!(run.sent, [format!("{M1}:20261125")], "{run:?}");
    assert!(run.unsettled.is_empty(), "{run:?}");
    assert_eq!(bank.credited(&number), 10_000 - 55 + 20_000 - 110);
    assert!(audit(store).unwrap().balanced);
}

/// A merchant paid the same day (a delay of 0: its cutoff is the payout day, still trading)
/// is paid once the day before is settled, what cleared by then; not before.
#[test]
fn a_same_day_payout_waits_for_the_day_before_to_be_settled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 100);
    let plan = settlement::FeePlan {
        payout_delay_days: 0,
        ..settlement::FeePlan::default()
    };
    settlement::set_terms(store, M1, &plan, 0).unwrap();
    let bank = SimBank::new();
    // The 25th's payout while the 24th is not settled: nothing.
    let early = run_payouts(store, &bank, &sealer, "20261125", 1_000).unwrap();
    assert!(early.created.is_empty(), "{early:?}");
    assert_eq!(early.unsettled, ["20261124"], "{early:?}");
    settle_date(store, &directory, "20261124", 2_000).unwrap();
    let run = run_payouts(store, &bank, &sealer, "20261125", 3_000).unwrap();
    assert_eq!(run.sent, [format!("{M1}:20261125")], "{run:?}");
    assert_eq!(bank.credited(&number), 10_000 - 55);
}

/// A payout tried before references were fixed ahead (attempts, no reference: the bank may
/// have paid it under the reference it gets now) is not netted: only what was never asked for
/// is, so what the bank paid and what the ledger says it paid stay the same.
#[test]
fn a_payout_tried_before_is_not_netted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 101);
    let bank = SimBank::new();
    bank.set_behaviour(&number, SimBehaviour::SystemErrors(1));
    let key = format!("{M1}:20261124");
    let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(run.retrying, vec![key.clone()]);
    // As a journal from before references were fixed ahead has it: tried, no reference.
    let mut row = store.payout(&key).unwrap().unwrap();
    let tried = row.clone();
    row.bank_reference = None;
    row.sent_to = None;
    store
        .submit(vec![Record::Settlement(
            SettlementRecord::PayoutTransition {
                expected_state: PayoutState::Pending,
                expected_attempts: tried.attempts,
                expected_account_version: tried.account_version,
                row,
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    // The merchant has come to owe a refund since.
    refund_cleared_next_day(store, &directory, 3_000);
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        3_000
    );
    let run = run_payouts(store, &bank, &sealer, "20261125", 2_000_000).unwrap();
    assert_eq!(run.sent, vec![key.clone()], "{run:?}");
    assert!(run.netted.is_empty(), "{run:?}");
    assert_eq!(store.payout(&key).unwrap().unwrap().amount_fen, 10_000 - 55);
    assert_eq!(bank.credited(&number), 10_000 - 55);
    assert_eq!(
        store.ledger_balance(acct::BANK, None).unwrap(),
        -(10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);
}

/// A refund of `refund_fen` of the sale of `one_sale_cleared_and_bound`, approved on the next
/// day (20261124) and that day settled.
#[allow(clippy::unwrap_used)]
fn refund_cleared_next_day(store: &dyn Store, directory: &IssuerDirectory, refund_fen: i64) {
    let mut refund = row(
        2,
        M1,
        K::Refund,
        S::Approved,
        refund_fen,
        "622202",
        "20261124",
    );
    refund.original_id = Some(1);
    insert(store, vec![refund]);
    settle_date(store, directory, "20261124", 2_000).unwrap();
}

/// A run takes the bank's report of a return and fails to write it down: the bank reports it
/// again to the next run (it was not acknowledged), which holds the payout; reported once more
/// after that, it changes nothing.
#[test]
fn a_return_the_run_failed_to_write_down_is_reported_again_and_held_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 93);
    let bank = SimBank::new();
    bank.set_today("20261124");
    bank.set_behaviour(&number, SimBehaviour::ReturnAfterDays(2));
    let key = format!("{M1}:20261124");
    let paid = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(paid.sent, vec![key.clone()]);
    let reference = store.payout(&key).unwrap().unwrap().bank_reference.unwrap();

    let journal = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    journal
        .execute_batch(
            "CREATE TRIGGER refuse_returns BEFORE INSERT ON payout_returns
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    bank.set_today("20261126");
    assert!(run_payouts(store, &bank, &sealer, "20261126", 2_000).is_err());
    assert_eq!(
        store.payout(&key).unwrap().unwrap().state,
        PayoutState::Sent
    );
    assert!(store.payout_returns_open(10).unwrap().is_empty());
    journal
        .execute_batch("DROP TRIGGER refuse_returns")
        .unwrap();

    let next = run_payouts(store, &bank, &sealer, "20261126", 3_000).unwrap();
    assert_eq!(next.returned, vec![key.clone()], "{next:?}");
    let payout = store.payout(&key).unwrap().unwrap();
    assert_eq!(payout.state, PayoutState::Held);
    assert_eq!(payout.bank_reference.as_deref(), Some(reference.as_str()));
    assert!(store.bound_account(M1).unwrap().unwrap().needs_rebind);
    assert!(store.payout_returns_open(10).unwrap().is_empty());
    assert_eq!(bank.credited(&number), 0);
    assert_eq!(
        store.ledger_balance(&acct::held(M1), None).unwrap(),
        -(10_000 - 55)
    );
    assert_eq!(store.ledger_balance(acct::BANK, None).unwrap(), 0);
    assert!(audit(store).unwrap().balanced);

    // Written down and acknowledged: not reported again; a bank that reports it again anyway
    // (its acknowledgement lost) moves nothing twice.
    use settlement::payout::PayoutBank;
    assert!(bank.returns("20261127").is_empty());
    store
        .submit(vec![store::Record::Settlement(
            SettlementRecord::PayoutReturned {
                reference,
                reported_on: "20261127".into(),
            },
        )])
        .unwrap()
        .wait()
        .unwrap();
    let later = run_payouts(store, &bank, &sealer, "20261127", 4_000).unwrap();
    assert!(later.returned.is_empty(), "{later:?}");
    assert_eq!(
        store.ledger_balance(&acct::held(M1), None).unwrap(),
        -(10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);
}

#[test]
fn a_payment_whose_answer_was_lost_is_not_paid_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 90);
    // The bank pays, but its answer is lost on the way: the run sees a system error (a
    // timeout) and retries. The retry must be the same payment, not a second one.
    let bank = SimBank::new();
    bank.set_behaviour(&number, SimBehaviour::AnswersLost(1));
    let key = format!("{M1}:20261124");
    let first = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(first.retrying, vec![key.clone()]);
    assert_eq!(bank.payments(&number), 1);
    let retry = run_payouts(store, &bank, &sealer, "20261124", 1_000 + 60_000).unwrap();
    assert_eq!(retry.sent, vec![key.clone()]);
    assert_eq!(
        (bank.payments(&number), bank.credited(&number)),
        (1, 10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);

    // The next day's run was made before a missed day's: the missed day pays nothing again.
    insert(
        store,
        vec![row(
            2,
            M1,
            K::Purchase,
            S::Approved,
            20_000,
            "622202",
            "20261124",
        )],
    );
    settle_date(store, &directory, "20261124", 0).unwrap();
    // The next day, empty, is settled too: a payout by it is made only then.
    settle_date(store, &directory, "20261125", 0).unwrap();
    let later = run_payouts(store, &bank, &sealer, "20261126", 200_000).unwrap();
    assert_eq!(later.sent.len(), 1, "{later:?}");
    let missed = run_payouts(store, &bank, &sealer, "20261125", 300_000).unwrap();
    assert!(missed.created.is_empty(), "{missed:?}");
    assert_eq!(bank.credited(&number), 10_000 - 55 + 20_000 - 110);
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        0
    );
}

/// What a run that stopped right after the bank accepted `reference` leaves: the payment made
/// to `number` of `account`, nothing recorded.
#[allow(clippy::unwrap_used)]
fn paid_by_a_run_that_stopped(
    bank: &SimBank,
    reference: &str,
    number: &str,
    account: &store::settlement::BoundAccountRow,
    amount_fen: i64,
) {
    use settlement::payout::{PayoutBank, PayoutInstruction};
    bank.pay(&PayoutInstruction {
        reference,
        account_number: number,
        holder_name: &account.holder_name,
        bank_code: &account.bank_code,
        amount_fen,
    })
    .unwrap();
}

/// The bank reports the return of `reference` the next day: the run that day resends the
/// payout (recorded as sent) with the return still open, and the run after holds it.
#[allow(clippy::unwrap_used)]
fn the_return_waits_for_the_resend(
    store: &dyn Store,
    bank: &SimBank,
    sealer: &dyn settlement::Sealer,
    key: &str,
    reference: &str,
) {
    bank.set_today("20261125");
    let next = run_payouts(store, bank, sealer, "20261125", 200_000).unwrap();
    assert_eq!(next.sent, [key], "{next:?}");
    assert_eq!(store.payout_returns_open(10).unwrap(), [reference]);
    let after = run_payouts(store, bank, sealer, "20261125", 300_000).unwrap();
    assert_eq!(after.returned, [key], "{after:?}");
}

/// A run sent the payment and stopped before writing so (the payout is still pending), and the
/// bank returned the money before the next run: the return waits until the payout is recorded
/// as sent, then holds it; it is not dropped as one for a payout never sent.
#[test]
fn a_return_of_a_payment_not_yet_recorded_as_sent_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 95);
    let bank = SimBank::new();
    bank.set_today("20261124");
    bank.set_behaviour(&number, SimBehaviour::SystemErrors(1));
    let key = format!("{M1}:20261124");
    let first = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(first.retrying, vec![key.clone()]);
    let payout = store.payout(&key).unwrap().unwrap();
    // The next attempt reaches the bank, which pays; the run stops before recording it.
    bank.set_behaviour(&number, SimBehaviour::ReturnAfterDays(1));
    let account = store.bound_account(M1).unwrap().unwrap();
    let reference = format!("{key}#v{}", payout.account_version);
    paid_by_a_run_that_stopped(&bank, &reference, &number, &account, payout.amount_fen);
    the_return_waits_for_the_resend(store, &bank, &sealer, &key, &reference);
    assert_eq!(
        store.payout(&key).unwrap().unwrap().state,
        PayoutState::Held
    );
    assert_eq!(bank.credited(&number), 0, "the money came back");
    assert_eq!(
        store.ledger_balance(&acct::held(M1), None).unwrap(),
        -(10_000 - 55)
    );
    assert!(audit(store).unwrap().balanced);
}

/// A payout made for account version 1 whose first attempt went to version 2 (the merchant
/// re-bound between the run that made it, which stopped there, and the next) as `key#v2`, and
/// that run stopped before recording it: the bank's return of `key#v2` waits for the resend.
#[test]
fn a_return_of_a_first_attempt_to_a_newer_account_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    one_sale_cleared_and_bound(store, &directory, &sealer, 96);
    let key = format!("{M1}:20261124");
    let owed = -store
        .ledger_balance(&acct::merchant_payable(M1), None)
        .unwrap();
    // What step 3 of a run writes, the run stopping before step 4.
    let posting = settlement::ledger::Posting::transfer(
        "payout",
        key.clone(),
        "20261123",
        acct::merchant_payable(M1),
        acct::payouts_in_flight(M1),
        owed,
    )
    .unwrap();
    let first = store.bound_account(M1).unwrap().unwrap();
    store
        .submit(vec![
            settlement::ledger::posting_record(store, vec![posting], 1)
                .unwrap()
                .unwrap(),
            Record::Settlement(SettlementRecord::NewPayout(store::settlement::PayoutRow {
                key: key.clone(),
                mid: M1.into(),
                payout_date: "20261124".into(),
                cutoff_date: "20261123".into(),
                amount_fen: owed,
                state: PayoutState::Pending,
                attempts: 0,
                next_attempt_ms: 1,
                account_version: first.version,
                account_masked: first.number_masked.clone(),
                bank_reference: None,
                sent_to: None,
                failure: None,
                first_attempt_ms: None,
                created_at_ms: 1,
                updated_at_ms: 1,
            })),
        ])
        .unwrap()
        .wait()
        .unwrap();
    let second_number = card("622202", 19, 97);
    rebind(
        store,
        &sealer,
        &directory,
        &card_input(&second_number, "王小明"),
        2,
    );
    let second = store.bound_account(M1).unwrap().unwrap();
    assert_eq!(second.version, first.version + 1);
    // The next run's first attempt goes out as `key#v2`, and that run stops there.
    let bank = SimBank::new();
    bank.set_today("20261124");
    bank.set_behaviour(&second_number, SimBehaviour::ReturnAfterDays(1));
    let reference = format!("{key}#v{}", second.version);
    paid_by_a_run_that_stopped(&bank, &reference, &second_number, &second, owed);
    the_return_waits_for_the_resend(store, &bank, &sealer, &key, &reference);
    assert_eq!(bank.credited(&second_number), 0);
    assert!(audit(store).unwrap().balanced);
}

/// The bank paid but its answer was lost, and the merchant bound another account before the
/// retry: the retry is the same payment (the bank answers it as before), not a second one to
/// the new account.
#[test]
fn a_payment_whose_answer_was_lost_is_not_paid_again_to_a_new_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let first_number = one_sale_cleared_and_bound(store, &directory, &sealer, 92);
    let bank = SimBank::new();
    bank.set_behaviour(&first_number, SimBehaviour::AnswersLost(1));
    let key = format!("{M1}:20261124");
    let first = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(first.retrying, vec![key.clone()]);
    let second_number = card("622202", 19, 93);
    rebind(
        store,
        &sealer,
        &directory,
        &card_input(&second_number, "王小明"),
        2_000,
    );
    assert_eq!(store.bound_account(M1).unwrap().unwrap().version, 2);
    let retry = run_payouts(store, &bank, &sealer, "20261124", 1_000 + 60_000).unwrap();
    assert_eq!(retry.sent, vec![key.clone()]);
    assert_eq!(
        bank.credited(&first_number) + bank.credited(&second_number),
        10_000 - 55,
        "paid twice"
    );
    assert_eq!(bank.payments(&second_number), 0);
    assert!(audit(store).unwrap().balanced);
}

/// A payout run under a sealing key other than the one the account was bound under: nothing
/// is sent, nothing is fixed, and the run says which payout it could not send; under the
/// right key the next run pays it.
#[test]
fn a_payout_whose_account_cannot_be_unsealed_is_reported_not_skipped_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 91);
    let bank = SimBank::new();
    let key = format!("{M1}:20261124");
    let other_key = common::sealer();
    let run = run_payouts(store, &bank, &other_key, "20261124", 1_000).unwrap();
    assert_eq!(run.created, vec![key.clone()]);
    assert_eq!(run.unsealable, vec![key.clone()], "{run:?}");
    assert!(run.sent.is_empty());
    let payout = store.payout(&key).unwrap().unwrap();
    assert_eq!((payout.attempts, payout.bank_reference), (0, None));
    let next = run_payouts(store, &bank, &sealer, "20261124", 2_000).unwrap();
    assert_eq!(next.sent, vec![key]);
    assert_eq!(bank.credited(&number), 10_000 - 55);
}

/// A bank that pays, then the run stops (here: panics) before it hears the answer.
struct PaysThenStops<'a>(&'a SimBank);

impl settlement::payout::PayoutBank for PaysThenStops<'_> {
    fn pay(
        &self,
        instruction: &settlement::payout::PayoutInstruction<'_>,
    ) -> Result<String, domain::PayoutFailure> {
        let _ = self.0.pay(instruction);
        #[allow(clippy::panic, reason = "stands for the process stopping")]
        {
            panic!("the run stops with the payment made");
        }
    }
    fn returns(&self, today: &str) -> Vec<String> {
        self.0.returns(today)
    }
    fn acknowledge_returns(&self, references: &[String]) {
        self.0.acknowledge_returns(references);
    }
}

/// A run's first attempt reaches the bank, which pays, and the run stops before recording the
/// answer; the merchant then binds another account. The next run sends the same reference to
/// the same account (the bank answers it as paid), not a new payment to the new account, and
/// the payout names the account the money went to.
#[test]
fn a_first_attempt_the_run_never_recorded_is_not_paid_again_to_a_new_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let first_number = one_sale_cleared_and_bound(store, &directory, &sealer, 98);
    let first = store.bound_account(M1).unwrap().unwrap();
    let bank = SimBank::new();
    let key = format!("{M1}:20261124");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_payouts(store, &PaysThenStops(&bank), &sealer, "20261124", 1_000)
    }));
    assert!(stopped.is_err());
    assert_eq!(bank.credited(&first_number), 10_000 - 55, "the bank paid");
    let second_number = card("622202", 19, 99);
    rebind(
        store,
        &sealer,
        &directory,
        &card_input(&second_number, "王小明"),
        2_000,
    );
    assert_eq!(store.bound_account(M1).unwrap().unwrap().version, 2);
    let next = run_payouts(store, &bank, &sealer, "20261124", 3_000).unwrap();
    assert_eq!(next.sent, vec![key.clone()], "{next:?}");
    assert_eq!(bank.credited(&first_number), 10_000 - 55);
    assert_eq!(bank.payments(&second_number), 0, "paid twice");
    let payout = store.payout(&key).unwrap().unwrap();
    assert_eq!(payout.account_masked, first.number_masked);
    assert_eq!(payout.account_version, first.version);
    assert!(audit(store).unwrap().balanced);
}

/// Two payout runs for different days that read the same balance before either committed:
/// the second payout would take the merchant's payable past zero, and the store refuses it
/// with everything it came with.
#[test]
fn a_payout_never_takes_more_than_the_merchant_is_owed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    one_sale_cleared_and_bound(store, &directory, &sealer, 94);
    let payable = acct::merchant_payable(M1);
    let owed = -store.ledger_balance(&payable, None).unwrap();
    assert_eq!(owed, 10_000 - 55);
    let pay = |reference: &str| {
        let posting = settlement::ledger::Posting::transfer(
            "payout",
            reference.to_owned(),
            "20261123",
            payable.clone(),
            acct::payouts_in_flight(M1),
            owed,
        )
        .unwrap();
        let record = settlement::ledger::posting_record(store, vec![posting], 1)
            .unwrap()
            .unwrap();
        store
            .submit(vec![
                record,
                Record::Settlement(SettlementRecord::BalanceAtMost {
                    mid: M1.to_owned(),
                    account: payable.clone(),
                    max_fen: 0,
                    from_date: Some("20261123".to_owned()),
                }),
            ])
            .unwrap()
            .wait()
    };
    pay("first").unwrap();
    assert_eq!(store.ledger_balance(&payable, None).unwrap(), 0);
    assert!(matches!(
        pay("second"),
        Err(store::StoreError::Constraint { .. })
    ));
    assert_eq!(store.ledger_balance(&payable, None).unwrap(), 0);
    assert_eq!(
        store
            .ledger_balance(&acct::payouts_in_flight(M1), None)
            .unwrap(),
        -owed
    );
}

/// A merchant whose day touched more issuers than one posting has legs for is cleared in
/// several postings, balanced, and the run goes on for everyone.
#[test]
fn a_day_with_cards_of_seventy_issuers_is_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    merchant(store, M1);
    let rows: Vec<_> = (1..=70)
        .map(|id| {
            let mut sale = row(id, M1, K::Purchase, S::Approved, 10_000, "622202", D);
            sale.issuer = Some(format!("BANK{id:02}"));
            sale
        })
        .collect();
    insert(store, rows);
    let report = settle_date(store, &directory, D, 0).unwrap();
    assert_eq!(report.merchants.len(), 1);
    assert!(audit(store).unwrap().balanced);
    assert_eq!(
        store.ledger_balance(acct::FEE_INCOME, None).unwrap(),
        -report.merchants[0].fees_fen
    );
    assert_eq!(
        store
            .ledger_balance(&acct::merchant_payable(M1), None)
            .unwrap(),
        -(70 * 10_000 - report.merchants[0].fees_fen)
    );
}

#[test]
fn a_merchants_own_plan_sets_its_fees_and_its_payout_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    merchant(store, M1);
    let plan = settlement::FeePlan {
        credit_bp: 45,
        payout_delay_days: 2,
        ..settlement::FeePlan::default()
    };
    assert!(matches!(
        settlement::set_terms(
            store,
            M1,
            &settlement::FeePlan {
                qr_bp: 5_000,
                ..plan
            },
            0
        ),
        Err(settlement::TermsError::Rate)
    ));
    settlement::set_terms(store, M1, &plan, 0).unwrap();
    assert_eq!(settlement::terms_of(store, M1).unwrap(), plan);
    insert(
        store,
        vec![row(1, M1, K::Purchase, S::Approved, 10_000, "625965", D)],
    );
    let report = settle_date(store, &directory, D, 0).unwrap();
    assert_eq!(report.merchants[0].fees_fen, 45);
    let number = card("622202", 19, 9);
    bind_account(
        store,
        &sealer,
        &directory,
        M1,
        &card_input(&number, "王小明"),
        "m",
        0,
    )
    .unwrap();
    let bank = SimBank::new();
    // T+1 is too early for a T+2 merchant; T+2 pays.
    assert!(
        run_payouts(store, &bank, &sealer, "20261124", 0)
            .unwrap()
            .created
            .is_empty()
    );
    let t2 = run_payouts(store, &bank, &sealer, "20261125", 0).unwrap();
    assert_eq!(t2.sent, vec![format!("{M1}:20261125")]);
    assert_eq!(bank.credited(&number), 10_000 - 45);
}

/// `count` merchants, each with a sale of 100.00 on `D`, cleared, and a bound card account:
/// their IDs and account numbers.
#[allow(clippy::unwrap_used)]
fn merchants_with_a_sale_cleared(
    store: &dyn Store,
    directory: &IssuerDirectory,
    sealer: &dyn settlement::Sealer,
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let mids: Vec<String> = (0..count).map(|i| format!("89831005812{i:04}")).collect();
    let mut numbers = Vec::new();
    for (i, mid) in mids.iter().enumerate() {
        merchant(store, mid);
        let id = i64::try_from(i).unwrap() + 1;
        insert(
            store,
            vec![row(id, mid, K::Purchase, S::Approved, 10_000, "622202", D)],
        );
        let number = card("622202", 19, 70 + u64::try_from(i).unwrap());
        bind_account(
            store,
            sealer,
            directory,
            mid,
            &card_input(&number, "王"),
            "m",
            0,
        )
        .unwrap();
        numbers.push(number);
    }
    settle_date(store, directory, D, 0).unwrap();
    (mids, numbers)
}

/// Runs for different days at once (a missed day's run made beside the next day's): each
/// reads the same balance, and only one may pay it.
#[test]
fn payout_runs_for_different_days_at_the_same_time_pay_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let (mids, numbers) = merchants_with_a_sale_cleared(store.as_ref(), &directory, &sealer, 16);
    // Every run's cutoff settled (empty days are recorded), so each run may pay the sale.
    for day in ["20261124", "20261125", "20261126"] {
        settle_date(store.as_ref(), &directory, day, 0).unwrap();
    }
    let bank = SimBank::new();
    let reports = std::thread::scope(|scope| {
        let runs: Vec<_> = ["20261124", "20261125", "20261126", "20261127"]
            .into_iter()
            .enumerate()
            .map(|(n, day)| {
                let (store, bank, sealer) = (&store, &bank, &sealer);
                scope.spawn(move || {
                    let at = 1_000 + i64::try_from(n).unwrap();
                    run_payouts(store.as_ref(), bank, sealer, day, at).unwrap()
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap())
            .collect::<Vec<_>>()
    });
    for report in &reports {
        assert!(report.unsettled.is_empty(), "{:?}", report.unsettled);
    }
    // One payout per merchant, of whichever day's run got there first.
    for mid in &mids {
        assert_eq!(
            store.payouts_newest(Some(mid), None, 10).unwrap().len(),
            1,
            "{mid}"
        );
    }
    for number in &numbers {
        assert_eq!(bank.credited(number), 10_000 - 55, "paid more than once");
    }
    assert!(audit(store.as_ref()).unwrap().balanced);
    for mid in &mids {
        assert_eq!(
            store
                .ledger_balance(&acct::merchant_payable(mid), None)
                .unwrap(),
            0
        );
    }
}

#[test]
fn payout_runs_at_the_same_time_pay_and_post_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let (mids, numbers) = merchants_with_a_sale_cleared(store.as_ref(), &directory, &sealer, 8);
    let bank = SimBank::new();
    std::thread::scope(|scope| {
        for n in 0..4 {
            let (store, bank, sealer) = (&store, &bank, &sealer);
            scope.spawn(move || {
                run_payouts(store.as_ref(), bank, sealer, "20261124", 1_000 + n).unwrap();
            });
        }
    });
    for number in &numbers {
        assert_eq!(
            (bank.payments(number), bank.credited(number)),
            (1, 10_000 - 55)
        );
    }
    assert!(audit(store.as_ref()).unwrap().balanced);
    for mid in &mids {
        assert_eq!(
            store
                .ledger_balance(&acct::payouts_in_flight(mid), None)
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .ledger_balance(&acct::merchant_payable(mid), None)
                .unwrap(),
            0
        );
        assert_eq!(
            store.ledger_balance(acct::BANK, None).unwrap(),
            -(10_000 - 55) * i64::try_from(mids.len()).unwrap()
        );
    }
}

/// The simulated bank of a process that ends between payout runs (the CLI's) hands what it did
/// to the next: a reference it paid is answered as paid, a return it owes is reported, a count
/// of system errors already used up stays used up; a changed configuration applies afresh.
/// A bank kept by a keeper has each payment on disk before it answers: a run killed after
/// the bank paid and before the run wrote its memory (the answer lost on the way back) leaves
/// a bank that answers the resent reference as paid, not one that pays it again. A payment
/// the keeper cannot write is undone and answered as a system error.
#[test]
fn the_simulated_bank_keeps_each_payment_before_it_answers() {
    use settlement::payout::{PayoutBank, PayoutInstruction, SimBankMemory};
    let account = "6222020000000000001";
    let pay = |bank: &SimBank| {
        bank.pay(&PayoutInstruction {
            reference: "r1",
            account_number: account,
            holder_name: "王小明",
            bank_code: "0102",
            amount_fen: 500,
        })
    };
    let disk: Arc<Mutex<Option<SimBankMemory>>> = Arc::default();
    let kept = |disk: &Arc<Mutex<Option<SimBankMemory>>>| {
        let disk = Arc::clone(disk);
        SimBank::new().kept_by(Box::new(move |memory| {
            *disk.lock().unwrap() = Some(memory.clone());
            Ok(())
        }))
    };
    let first = kept(&disk);
    first.configure(account, "answers-lost:1", SimBehaviour::AnswersLost(1));
    assert_eq!(pay(&first), Err(domain::PayoutFailure::BankSystemError));
    assert_eq!(first.credited(account), 500);
    // Killed: what the run would have written at its end never was.
    drop(first);
    let memory = disk.lock().unwrap().clone().expect("kept before answering");
    let next = SimBank::remembering(memory);
    assert!(pay(&next).is_ok());
    assert_eq!(next.payments(account), 1);
    assert_eq!(next.credited(account), 500);

    let failing = SimBank::new().kept_by(Box::new(|_| Err("disk full".to_owned())));
    assert_eq!(pay(&failing), Err(domain::PayoutFailure::BankSystemError));
    assert_eq!(failing.credited(account), 0);
    assert_eq!(failing.payments(account), 0);
    assert!(failing.memory().answers.is_empty());
}

#[test]
fn the_simulated_bank_remembers_across_runs_what_it_did() {
    use settlement::payout::{PayoutBank, PayoutInstruction};
    let pay = |bank: &SimBank, reference: &str, account: &str| {
        bank.pay(&PayoutInstruction {
            reference,
            account_number: account,
            holder_name: "王小明",
            bank_code: "0102",
            amount_fen: 500,
        })
    };
    let (a, b) = ("6222020000000000001", "6222020000000000002");
    let configure = |bank: &SimBank| {
        bank.configure(a, "system-errors:1", SimBehaviour::SystemErrors(1));
        bank.configure(b, "return-after:1", SimBehaviour::ReturnAfterDays(1));
    };
    let first = SimBank::new();
    configure(&first);
    first.set_today("20261124");
    assert_eq!(
        pay(&first, "r1", a),
        Err(domain::PayoutFailure::BankSystemError)
    );
    let paid = pay(&first, "r2", b).unwrap();
    // An account nobody configured: what the bank keeps of it on disk names no number.
    let c = "6222020000000000003";
    assert!(pay(&first, "r5", c).is_ok());

    let text = serde_json::to_string(&first.memory()).unwrap();
    assert!(!text.contains(c), "{text}");
    let next = SimBank::remembering(serde_json::from_str(&text).unwrap());
    configure(&next);
    next.set_today("20261125");
    assert!(
        pay(&next, "r1", a).is_ok(),
        "its one system error was used up"
    );
    assert_eq!(pay(&next, "r2", b), Ok(paid), "answered as before");
    assert_eq!(next.payments(b), 1);
    assert_eq!(next.credited(c), 500);
    assert_eq!(next.returns("20261125"), ["r2"]);
    assert_eq!(next.credited(b), 0);
    // Reported until acknowledged, by the bank of the next process too; taken back once.
    let after = SimBank::remembering(next.memory());
    assert_eq!(after.returns("20261126"), ["r2"]);
    assert_eq!(after.credited(b), 0);
    after.acknowledge_returns(&["r2".to_owned()]);
    assert!(after.returns("20261126").is_empty());
    assert!(
        SimBank::remembering(after.memory())
            .returns("20261126")
            .is_empty()
    );
    next.configure(a, "frozen", SimBehaviour::Frozen);
    assert_eq!(
        pay(&next, "r3", a),
        Err(domain::PayoutFailure::AccountFrozen)
    );
    next.forget_unconfigured(&[b]);
    assert!(pay(&next, "r4", a).is_ok(), "no longer configured: normal");
}

/// Merchant `mid`'s status set to `status` (suspended, approved again, closed).
#[allow(clippy::unwrap_used)]
fn set_status(store: &dyn Store, mid: &str, status: store::Status) {
    store
        .submit(vec![store::Record::UpsertMerchant(store::MerchantRow {
            mid: mid.into(),
            name: format!("merchant {mid}"),
            status,
            mcc: "5812".into(),
        })])
        .unwrap()
        .wait()
        .unwrap();
}

/// A suspended merchant's payout is not sent while the suspension stands (its sales may be
/// the fraud the suspension is about); it goes out once the merchant is active again.
#[test]
fn a_suspended_merchants_payout_waits_for_the_suspension_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    one_sale_cleared_and_bound(store, &directory, &sealer, 93);
    let status = |status| set_status(store, M1, status);
    status(store::Status::Suspended);
    let bank = SimBank::new();
    let key = format!("{M1}:20261124");
    let held = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(held.created, vec![key.clone()]);
    assert!(held.sent.is_empty(), "{held:?}");
    assert_eq!(held.withheld, vec![key.clone()]);
    let row = store.payout(&key).unwrap().unwrap();
    assert_eq!(row.state, PayoutState::Pending);
    assert!(row.bank_reference.is_none());
    status(store::Status::Active);
    let paid = run_payouts(store, &bank, &sealer, "20261124", 2_000).unwrap();
    assert_eq!(paid.sent, vec![key.clone()]);
    assert!(paid.withheld.is_empty());
}

/// Refunds cleared while a suspended merchant's payout waits are taken from it before it is
/// first sent, once the merchant is active again (or closed, whose payouts are paid): the
/// acquirer does not pay out money it has already given back to cardholders. A debt as large
/// as the payout leaves nothing to send.
#[test]
fn refunds_cleared_while_a_payout_is_withheld_are_netted_from_it() {
    for (refund_fen, after) in [
        (3_000, store::Status::Active),
        (3_000, store::Status::Closed),
        (12_000, store::Status::Active),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let store: &dyn Store = store.as_ref();
        let directory = IssuerDirectory::embedded().unwrap();
        let sealer = sealer();
        let number = one_sale_cleared_and_bound(store, &directory, &sealer, 93);
        let status = |status| set_status(store, M1, status);
        status(store::Status::Suspended);
        let bank = SimBank::new();
        let key = format!("{M1}:20261124");
        let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
        assert_eq!(run.withheld, vec![key.clone()]);
        // While it is suspended, the victims are refunded: the next day's only transaction.
        refund_cleared_next_day(store, &directory, refund_fen);
        let payable = || {
            store
                .ledger_balance(&acct::merchant_payable(M1), None)
                .unwrap()
        };
        assert_eq!(payable(), refund_fen, "the merchant owes the refund");

        status(after);
        let run = run_payouts(store, &bank, &sealer, "20261125", 5_000).unwrap();
        let owed = (10_000 - 55 - refund_fen).max(0);
        let payout = store.payout(&key).unwrap().unwrap();
        assert_eq!(payout.amount_fen, owed, "{after:?} {refund_fen}: {run:?}");
        assert_eq!(payout.state, PayoutState::Sent);
        if owed > 0 {
            assert_eq!(run.sent, vec![key.clone()], "{run:?}");
        } else {
            assert!(run.sent.is_empty(), "{run:?}");
            assert_eq!(run.netted, vec![key.clone()], "{run:?}");
        }
        assert_eq!(bank.credited(&number), owed);
        assert_eq!(payable(), (refund_fen - (10_000 - 55)).max(0));
        assert_eq!(
            store
                .ledger_balance(&acct::payouts_in_flight(M1), None)
                .unwrap(),
            0
        );
        assert_eq!(store.ledger_balance(acct::BANK, None).unwrap(), -owed);
        assert!(audit(store).unwrap().balanced);
        let again = run_payouts(store, &bank, &sealer, "20261126", 6_000).unwrap();
        assert!(
            again.created.is_empty() && again.sent.is_empty() && again.netted.is_empty(),
            "{again:?}"
        );
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The payout of `key` as the store has it now, and whether it is stuck at `now_ms`.
#[allow(clippy::unwrap_used)]
fn stuck_at(store: &dyn Store, key: &str, now_ms: i64) -> bool {
    settlement::is_stuck(&store.payout(key).unwrap().unwrap(), now_ms)
}

/// A bank answering a payout with system errors for ever: it is retried, its money in flight
/// and its reference unchanged, and not stuck for a day after its first attempt; from then on
/// every run reports it stuck, tried again or not, until the bank pays it.
#[test]
fn a_payout_the_bank_errs_on_for_a_day_is_reported_stuck_until_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 96);
    let bank = SimBank::new();
    bank.set_behaviour(&number, SimBehaviour::SystemErrors(1_000));
    let key = format!("{M1}:20261124");
    let first = 1_000;
    let run = run_payouts(store, &bank, &sealer, "20261124", first).unwrap();
    assert_eq!(run.retrying, vec![key.clone()]);
    let reference = store.payout(&key).unwrap().unwrap().bank_reference;
    assert_eq!(reference, Some(format!("{key}#v1")));
    // Every quarter of an hour for a day: retried as the backoff allows, never stuck.
    let mut retried = 1;
    let mut now = first;
    while now + 15 * 60_000 < first + settlement::PAYOUT_STUCK_AFTER_MS {
        now += 15 * 60_000;
        let run = run_payouts(store, &bank, &sealer, "20261124", now).unwrap();
        assert!(run.stuck.is_empty(), "{run:?}");
        assert!(!stuck_at(store, &key, now));
        retried += run.retrying.len();
    }
    // 1, 2, 4, 8, 16, 32 minutes, then hourly (at the next quarter hour).
    assert!(retried >= 20, "{retried} attempts");
    let day = first + settlement::PAYOUT_STUCK_AFTER_MS;
    let run = run_payouts(store, &bank, &sealer, "20261124", day).unwrap();
    assert_eq!(run.stuck, vec![key.clone()], "{run:?}");
    // Not due again a minute later, and still stuck.
    let run = run_payouts(store, &bank, &sealer, "20261124", day + 60_000).unwrap();
    assert!(run.retrying.is_empty(), "{run:?}");
    assert_eq!(run.stuck, vec![key.clone()], "{run:?}");
    // Nothing held, nothing flagged, the same reference all along.
    let payout = store.payout(&key).unwrap().unwrap();
    assert_eq!(
        (payout.state, payout.bank_reference, payout.first_attempt_ms),
        (PayoutState::Pending, reference, Some(first))
    );
    assert_eq!(
        store
            .ledger_balance(&acct::payouts_in_flight(M1), None)
            .unwrap(),
        -(10_000 - 55)
    );
    assert_eq!(store.ledger_balance(&acct::held(M1), None).unwrap(), 0);
    assert!(!store.bound_account(M1).unwrap().unwrap().needs_rebind);

    // The bank mends: the next attempt pays it, and it is stuck no more.
    bank.set_behaviour(&number, SimBehaviour::Normal);
    let paid = run_payouts(store, &bank, &sealer, "20261124", day + 2 * HOUR_MS).unwrap();
    assert_eq!(paid.sent, vec![key.clone()], "{paid:?}");
    assert!(paid.stuck.is_empty(), "{paid:?}");
    assert!(!stuck_at(store, &key, day + 2 * HOUR_MS));
    assert_eq!(bank.credited(&number), 10_000 - 55);
    assert_eq!(bank.payments(&number), 1);
    assert!(audit(store).unwrap().balanced);
}

/// A stuck payout the bank then refuses for good (the account frozen) is held, and no longer
/// stuck: it waits for the merchant's re-binding, not for the bank.
#[test]
fn a_stuck_payout_that_fails_for_good_is_held_and_no_longer_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let number = one_sale_cleared_and_bound(store, &directory, &sealer, 97);
    let bank = SimBank::new();
    bank.set_behaviour(&number, SimBehaviour::SystemErrors(1_000));
    let key = format!("{M1}:20261124");
    let first = 1_000;
    run_payouts(store, &bank, &sealer, "20261124", first).unwrap();
    let later = first + settlement::PAYOUT_STUCK_AFTER_MS + HOUR_MS;
    let run = run_payouts(store, &bank, &sealer, "20261125", later).unwrap();
    assert_eq!(
        (run.retrying.clone(), run.stuck.clone()),
        (vec![key.clone()], vec![key.clone()]),
        "{run:?}"
    );
    bank.set_behaviour(&number, SimBehaviour::Frozen);
    let run = run_payouts(store, &bank, &sealer, "20261125", later + HOUR_MS).unwrap();
    assert_eq!(run.held, vec![key.clone()], "{run:?}");
    assert!(run.stuck.is_empty(), "{run:?}");
    assert!(!stuck_at(store, &key, later + HOUR_MS));
    assert!(audit(store).unwrap().balanced);
}

/// A payout held for days (the account frozen) and released to a new account that the bank
/// answers with system errors: it has waited since it was made, but on the bank only since the
/// new account's first attempt, and is stuck a day after that, not at once.
#[test]
fn a_released_payout_is_stuck_a_day_after_its_new_accounts_first_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let store: &dyn Store = store.as_ref();
    let directory = IssuerDirectory::embedded().unwrap();
    let sealer = sealer();
    let frozen = one_sale_cleared_and_bound(store, &directory, &sealer, 98);
    let bank = SimBank::new();
    bank.set_behaviour(&frozen, SimBehaviour::Frozen);
    let key = format!("{M1}:20261124");
    let run = run_payouts(store, &bank, &sealer, "20261124", 1_000).unwrap();
    assert_eq!(run.held, vec![key.clone()]);
    let new_card = card("622848", 19, 99);
    bank.set_behaviour(&new_card, SimBehaviour::SystemErrors(1_000));
    let days = 3 * settlement::PAYOUT_STUCK_AFTER_MS;
    rebind(
        store,
        &sealer,
        &directory,
        &card_input(&new_card, "王小明"),
        days,
    );
    let released = run_payouts(store, &bank, &sealer, "20261127", days + 1_000).unwrap();
    assert_eq!(
        (released.released.clone(), released.retrying.clone()),
        (vec![key.clone()], vec![key.clone()]),
        "{released:?}"
    );
    assert!(released.stuck.is_empty(), "{released:?}");
    let payout = store.payout(&key).unwrap().unwrap();
    assert_eq!(payout.first_attempt_ms, Some(days + 1_000));
    let almost = days + 1_000 + settlement::PAYOUT_STUCK_AFTER_MS - 1;
    let run = run_payouts(store, &bank, &sealer, "20261127", almost).unwrap();
    assert!(run.stuck.is_empty(), "{run:?}");
    let run = run_payouts(store, &bank, &sealer, "20261128", almost + 1).unwrap();
    assert_eq!(run.stuck, vec![key.clone()], "{run:?}");
    assert_eq!(bank.payments(&new_card), 0);
    assert!(audit(store).unwrap().balanced);
}

/// M1's account replaced by the merchant ("m") and the change confirmed by an operator, as
/// every change of a bound account must be: the new account's version.
#[allow(clippy::unwrap_used, clippy::panic)]
fn rebind(
    store: &dyn Store,
    sealer: &dyn Sealer,
    directory: &IssuerDirectory,
    input: &AccountInput,
    at_ms: i64,
) -> u32 {
    let outcome = bind_account(store, sealer, directory, M1, input, "m", at_ms).unwrap();
    let BindOutcome::PendingConfirmation { change_id } = outcome else {
        panic!("a change of a bound account took effect unconfirmed: {outcome:?}");
    };
    confirm_change(store, change_id, "ops", at_ms).unwrap()
}
