//! Reference model: random days of journal activity (purchases on debit, credit and foreign
//! cards, voids, refunds, late reversals), settle runs at random points, then payouts to
//! accounts with random bank behaviours. The store's ledger is compared with a model that
//! computes every merchant's due from the final journal states alone.

mod common;

use common::*;
use domain::IssuerDirectory;
use proptest::prelude::*;
use settlement::{
    AccountInput, SimBank, SimBehaviour, audit, bind_account, ledger_accounts as acct, run_payouts,
    settle_date,
};
use store::settlement::AccountKind;
use store::{Record, Store, TxnKind as K, TxnState as S};

const MIDS: [&str; 3] = ["898310058120001", "898310058120002", "898310058120003"];
const BINS: [&str; 3] = ["622202", "625965", "411111"];
const DAYS: [&str; 2] = ["20261123", "20261124"];

#[derive(Clone, Debug)]
enum Op {
    Purchase {
        mid: usize,
        bin: usize,
        amount: i64,
        day: usize,
    },
    /// Void the n-th purchase (if still approved).
    Void(usize),
    /// Refund part of the n-th purchase on the next day.
    Refund(usize, i64),
    /// Reverse the n-th purchase after the fact.
    Reverse(usize),
    Settle(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 1..2_000_000i64, 0..2usize)
            .prop_map(|(mid, bin, amount, day)| Op::Purchase { mid, bin, amount, day }),
        1 => (0..40usize).prop_map(Op::Void),
        1 => (0..40usize, 1..100_000i64).prop_map(|(n, a)| Op::Refund(n, a)),
        1 => (0..40usize).prop_map(Op::Reverse),
        1 => (0..2usize).prop_map(Op::Settle),
    ]
}

/// The model's fee: basis points with half-up rounding written as twice-scaled integers.
fn model_fee(bin: &str, amount: i64) -> i64 {
    let (bp, cap) = match bin {
        "622202" => (55, Some(2_000)),
        "625965" => (60, None),
        _ => (200, None),
    };
    let fee = (amount * bp * 2 + 10_000) / 20_000;
    cap.map_or(fee, |c| fee.min(c))
}

fn behaviour(n: u8) -> SimBehaviour {
    match n % 5 {
        0 => SimBehaviour::Frozen,
        1 => SimBehaviour::SystemErrors(1),
        2 => SimBehaviour::LimitFen(500_000),
        _ => SimBehaviour::Normal,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn ledger_matches_the_model(ops in prop::collection::vec(op(), 1..40), banks in prop::array::uniform3(0u8..5)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let store: &dyn Store = store.as_ref();
        let directory = IssuerDirectory::embedded().unwrap();
        let sealer = sealer();
        for mid in MIDS {
            merchant(store, mid);
        }
        // (row id, mid, bin, amount, state) of each purchase, and every other row.
        let mut purchases: Vec<(i64, usize, usize, i64, S)> = Vec::new();
        let mut others: Vec<(i64, usize, usize, K, i64, S)> = Vec::new();
        let mut next_id = 1i64;
        let mut now = 1_000i64;
        for op in &ops {
            now += 1;
            match op.clone() {
                Op::Purchase { mid, bin, amount, day } => {
                    insert(store, vec![row(next_id, MIDS[mid], K::Purchase, S::Approved, amount, BINS[bin], DAYS[day])]);
                    purchases.push((next_id, mid, bin, amount, S::Approved));
                    next_id += 1;
                }
                Op::Void(n) => {
                    let Some(p) = purchases.get_mut(n) else { continue };
                    if p.4 != S::Approved { continue; }
                    p.4 = S::Voided;
                    // Same day as the original (the switch checks that).
                    let day = store.txn(p.0).unwrap().unwrap().clearing_date;
                    let mut void = row(next_id, MIDS[p.1], K::PurchaseVoid, S::Approved, p.3, BINS[p.2], &day);
                    void.original_id = Some(p.0);
                    insert(store, vec![void]);
                    store.submit(vec![Record::State { id: p.0, state: S::Voided }]).unwrap().wait().unwrap();
                    others.push((next_id, p.1, p.2, K::PurchaseVoid, p.3, S::Approved));
                    next_id += 1;
                }
                Op::Refund(n, amount) => {
                    let Some(p) = purchases.get(n) else { continue };
                    if p.4 != S::Approved { continue; }
                    let amount = amount.min(p.3);
                    insert(store, vec![row(next_id, MIDS[p.1], K::Refund, S::Approved, amount, BINS[p.2], DAYS[1])]);
                    others.push((next_id, p.1, p.2, K::Refund, amount, S::Approved));
                    next_id += 1;
                }
                Op::Reverse(n) => {
                    let Some(p) = purchases.get_mut(n) else { continue };
                    if p.4 != S::Approved { continue; }
                    p.4 = S::Reversed;
                    store.submit(vec![Record::State { id: p.0, state: S::Reversed }]).unwrap().wait().unwrap();
                }
                Op::Settle(day) => {
                    settle_date(store, &directory, DAYS[day], now).unwrap();
                    prop_assert!(audit(store).unwrap().balanced);
                }
            }
        }
        for day in DAYS {
            settle_date(store, &directory, day, now + 1).unwrap();
            prop_assert!(!settle_date(store, &directory, day, now + 2).unwrap().changed);
        }

        // The model: due per merchant from final states only.
        let mut due = [0i64; 3];
        let mut fees = 0i64;
        for (_, mid, bin, amount, state) in &purchases {
            if matches!(state, S::Approved | S::Voided) {
                let fee = model_fee(BINS[*bin], *amount);
                due[*mid] += amount - fee;
                fees += fee;
            }
        }
        for (_, mid, bin, kind, amount, _) in &others {
            match kind {
                K::PurchaseVoid => {
                    let fee = model_fee(BINS[*bin], *amount);
                    due[*mid] -= amount - fee;
                    fees -= fee;
                }
                K::Refund => due[*mid] -= amount,
                _ => unreachable!(),
            }
        }
        let ledger = audit(store).unwrap();
        prop_assert!(ledger.balanced, "{:?}", ledger);
        prop_assert_eq!(store.ledger_balance(acct::FEE_INCOME, None).unwrap(), -fees);
        for (i, mid) in MIDS.iter().enumerate() {
            prop_assert_eq!(store.ledger_balance(&acct::merchant_payable(mid), None).unwrap(), -due[i]);
        }

        // Payouts on the day after the last clearing day, to accounts with random behaviours.
        let bank = SimBank::new();
        bank.set_today("20261125");
        let mut numbers = Vec::new();
        for (i, mid) in MIDS.iter().enumerate() {
            let number = card("622202", 19, u64::try_from(i).unwrap() + 11);
            bind_account(store, &sealer, &directory, mid, &AccountInput {
                kind: AccountKind::Card, number: zeroize::Zeroizing::new(number.clone()), holder_name: "张三".into(), bank_code: None,
            }, "merchant", 0).unwrap();
            bank.set_behaviour(&number, behaviour(banks[i]));
            numbers.push(number);
        }
        for step in 0..3 {
            run_payouts(store, &bank, &sealer, "20261125", now + 10 + step * 3_600_000).unwrap();
        }
        prop_assert!(audit(store).unwrap().balanced);
        for (i, mid) in MIDS.iter().enumerate() {
            let payable = -store.ledger_balance(&acct::merchant_payable(mid), None).unwrap();
            let in_flight = -store.ledger_balance(&acct::payouts_in_flight(mid), None).unwrap();
            let held = -store.ledger_balance(&acct::held(mid), None).unwrap();
            let paid = bank.credited(&numbers[i]);
            // Every fen due is paid, held, in flight, or still payable (a negative day).
            prop_assert_eq!(payable + in_flight + held + paid, due[i]);
            prop_assert!(bank.payments(&numbers[i]) <= 1);
            if due[i] > 0 && matches!(behaviour(banks[i]), SimBehaviour::Normal | SimBehaviour::SystemErrors(_)) {
                prop_assert_eq!(paid, due[i]);
            }
            if due[i] > 0 && behaviour(banks[i]) == SimBehaviour::Frozen {
                prop_assert_eq!((paid, held), (0, due[i]));
            }
        }
    }
}
