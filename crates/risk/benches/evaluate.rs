//! Rule evaluation in the authorisation path: one `check` + one `observe` per request against a
//! merchant with 100 rules of every kind (target: 5 µs per request).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use risk::{CardClass, Engine, Outcome, Request, RuleBook, TxnClass};

/// 100 rules: every kind, with thresholds that mostly do not fire, as in production.
fn rules_json(n: usize) -> String {
    let mut rules = Vec::new();
    for i in 0..n {
        let rule = match i % 8 {
            0 => format!(
                r#"{{"id": "cards{i}", "kind": "card-types", "accept": ["domestic-debit", "domestic-credit", "foreign"]}}"#
            ),
            1 => format!(
                r#"{{"id": "max{i}", "kind": "amount-max", "max_fen": {}}}"#,
                10_000_000 + i
            ),
            2 => format!(
                r#"{{"id": "day{i}", "kind": "daily-amount-max", "max_fen": 9000000000000}}"#
            ),
            3 => format!(
                r#"{{"id": "vel{i}", "kind": "card-velocity", "window_s": {}, "attempts_max": 60, "declines_max": 60}}"#,
                60 + i
            ),
            4 => format!(
                r#"{{"id": "ct{i}", "kind": "card-testing", "window_s": 600, "small_fen": 100, "declines_max": 60}}"#
            ),
            5 => format!(
                r#"{{"id": "pin{i}", "kind": "wrong-pins", "window_s": 300, "cards_max": 60}}"#
            ),
            6 => format!(r#"{{"id": "peer{i}", "kind": "peer-change"}}"#),
            _ => {
                format!(r#"{{"id": "mcc{i}", "kind": "mcc-profile", "ticket_max_fen": 900000000}}"#)
            }
        };
        rules.push(rule);
    }
    format!(
        r#"{{"merchants": {{"898110048990001": [{}]}}}}"#,
        rules.join(",")
    )
}

fn evaluate(c: &mut Criterion) {
    // 1,000 distinct cards, so every card carries a full window.
    run(c, "check+observe, 100 rules", |n| n % 1_000);
    // A card never seen before on every request: the card map fills and its generations turn
    // over (each turn drops 100,000 cards), counted in the mean.
    run(c, "check+observe, 100 rules, a new card each time", |n| n);
}

/// One `check` + `observe` per iteration, a new request every millisecond of simulated time,
/// on the card `card_of(n)` for the n-th request.
fn run(c: &mut Criterion, name: &str, card_of: fn(i64) -> i64) {
    let book = RuleBook::from_json(&rules_json(100)).unwrap();
    assert_eq!(book.for_merchant("898110048990001").rules.len(), 100);
    let mut engine = Engine::new(Arc::new(book));
    let peer = Some("10.1.2.3".parse().unwrap());
    let mut n: i64 = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            let card_key = Some(u64::try_from(card_of(n)).unwrap());
            let request = Request {
                txn_id: n,
                mid: "898110048990001",
                tid: "10000001",
                mcc: "5812",
                class: TxnClass::Sale,
                card: Some(CardClass::DomesticDebit),
                card_key,
                amount_fen: 12_345,
                day: 1,
                now_ms: n,
                peer,
            };
            let verdict = engine.check(black_box(&request));
            let code = if n % 10 == 0 { *b"51" } else { *b"00" };
            let alerts = engine.observe(&Outcome {
                txn_id: n,
                mid: request.mid,
                tid: request.tid,
                class: request.class,
                card_key,
                amount_fen: request.amount_fen,
                day: 1,
                sale_day: 1,
                now_ms: n,
                response_code: code,
            });
            black_box((verdict, alerts))
        })
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
