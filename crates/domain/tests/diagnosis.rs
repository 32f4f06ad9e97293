//! The knowledge base against PROTOCOL.md: every response code it lists has a complete entry in
//! both languages whose category, who-acts, retry and contact-issuer agree with the table there.
// Test helpers outside #[test] functions: the house rules allow these lints in tests.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::HashSet;

use domain::diagnosis::{
    Action, Category, ContactIssuer, Diagnosis, FailureKind, PayoutFailure, Retry, Subject, TABLE,
    Text, WhoActs, diagnose, diagnose_failure, diagnose_payout, diagnose_str, lookup,
};

/// PROTOCOL.md's response-code table as it stood when the knowledge base was written. The live
/// file, where it can be found, is checked the same way, so a change there fails this test.
const PROTOCOL_SNAPSHOT: &str = "\
| 39 | meaning | cat | who acts | retry | contact issuer |
|---|---|---|---|---|---|
| 00 | approved | A | — | — | — |
| 01, 02 | refer to card issuer (请持卡人与发卡行联系) | C | cardholder ↔ issuer | no | yes |
| 03 | invalid merchant | C | acquirer (merchant not registered/approved) | no | no |
| 04, 07, 34, 35, 37, 41, 43, 67 | pick up card: suspected fraud / lost / stolen | D | operator keeps card, issuer | no | yes (cardholder) |
| 05 | do not honour / cardholder authentication failed | C | cardholder ↔ issuer | no | yes |
| 06 | error | E | issuer | later | if repeated |
| 09 | request in progress | B | — | yes, later | no |
| 12 | invalid transaction | C | merchant/operator | no | no |
| 13 | invalid amount | B | operator (re-key amount) | yes | no |
| 14 | invalid card number | B | cardholder (card damaged / mistyped) | once | if card looks fine |
| 15, 31 | no such issuer / bank not supported | C | — (card cannot be accepted here) | no | no |
| 21 | card not activated / dormant | C | cardholder ↔ issuer | no | yes |
| 22 | suspected operation error (terminal out of step) | C | terminal (sign in again) | after sign-in | no |
| 25 | original transaction not found | C | operator / acquirer | no | no |
| 30 | format error | C | terminal/acquirer (software) | no | no |
| 33, 54 | expired card | D / C | cardholder | no | yes (new card) |
| 36, 62 | restricted card | D / C | cardholder ↔ issuer | other card | yes |
| 38, 75 | PIN tries exceeded | D / C | cardholder ↔ issuer | no (today) | yes |
| 39, 42, 44, 52, 53, 56 | no such account / card record | C / B | cardholder ↔ issuer | no | yes |
| 40, 57 | function not supported / not allowed for this card | C | cardholder ↔ issuer | other card | yes |
| 51 | insufficient funds | C | cardholder | other card / smaller amount | no |
| 55 | wrong PIN | C | cardholder | yes | no |
| 58 | not allowed for this terminal | C | acquirer (terminal/merchant configuration) | no | no |
| 59, 60, 63, 66 | security violation / suspected fraud | C | acquirer risk / issuer | no | yes |
| 61 | exceeds amount limit | C | cardholder (limit) or merchant (split is not allowed) | smaller amount | optional (raise limit) |
| 64 | original amount incorrect | C | operator | corrected | no |
| 65 | exceeds frequency limit | C | cardholder ↔ issuer | tomorrow | optional |
| 68 | response too late | C | network | yes (after reversal) | no |
| 77 | batch out of step with host | D | terminal (sign in again) | after sign-in | no |
| 79 | offline reconciliation unbalanced | C | terminal (re-upload) | — | no |
| 90 | day cut-over in progress | C | — | in minutes | no |
| 91, 92 | issuer / network unavailable | C | issuer / network | later | if it persists |
| 93 | transaction violates law/rules | C | cardholder ↔ issuer | no | yes |
| 94 | duplicate transaction | C | operator (check whether it already succeeded) | no | no |
| 95, 96 | reconciliation / system error | C | acquirer | later | no |
| 97 | terminal not registered | D | acquirer | no | no |
| 98 | issuer did not answer in time | E | network / issuer | yes (after reversal) | if it persists |
| 99 | PIN format error | B | terminal (sign in again, key mismatch) | after sign-in | no |
| A0 | MAC verification failed | B | terminal (sign in again) | after sign-in | no |
";

/// The codes the brief lists, independent of any parsing.
const HARD_LIST: &[&str] = &[
    "00", "01", "02", "03", "04", "05", "06", "07", "09", "12", "13", "14", "15", "21", "22", "25",
    "30", "31", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "51", "52",
    "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64", "65", "66", "67", "68",
    "75", "77", "79", "90", "91", "92", "93", "94", "95", "96", "97", "98", "99", "A0",
];

struct Row {
    codes: Vec<String>,
    categories: Vec<Category>,
    who: String,
    retry: String,
    contact: String,
}

/// The rows of the table under "## Response codes": first cell a comma-separated list of
/// 2-character codes.
fn parse_rows(markdown: &str) -> Vec<Row> {
    let section = match markdown.find("## Response codes") {
        Some(start) => &markdown[start..],
        None => markdown,
    };
    let mut rows = Vec::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("## ") && !line.starts_with("## Response codes") {
            break;
        }
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        // The header row's first cell is "39" (the field number): skip it by its other cells.
        if cells.len() != 6 || cells[1] == "meaning" {
            continue;
        }
        let codes: Vec<String> = cells[0].split(',').map(|c| c.trim().to_owned()).collect();
        let is_code = |c: &String| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric());
        if !codes.iter().all(is_code) {
            continue;
        }
        let categories = cells[2]
            .split('/')
            .map(|c| match c.trim() {
                "A" => Category::A,
                "B" => Category::B,
                "C" => Category::C,
                "D" => Category::D,
                "E" => Category::E,
                other => panic!("unknown category {other:?} in {line}"),
            })
            .collect();
        rows.push(Row {
            codes,
            categories,
            who: cells[3].to_owned(),
            retry: cells[4].to_owned(),
            contact: cells[5].to_owned(),
        });
    }
    rows
}

/// Who may act according to the cell; parenthesised remarks are commentary, not actors.
fn allowed_actors(cell: &str) -> Vec<WhoActs> {
    let mut plain = String::new();
    let mut depth = 0;
    for ch in cell.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => plain.push(ch),
            _ => {}
        }
    }
    if plain.contains('↔') {
        return vec![WhoActs::CardholderAndIssuer];
    }
    let words = [
        ("cardholder", WhoActs::Cardholder),
        ("issuer", WhoActs::Issuer),
        ("merchant", WhoActs::Merchant),
        ("operator", WhoActs::Operator),
        ("terminal", WhoActs::Terminal),
        ("acquirer", WhoActs::Acquirer),
        ("network", WhoActs::Network),
    ];
    let found: Vec<WhoActs> = words
        .iter()
        .filter(|(w, _)| plain.contains(w))
        .map(|(_, who)| *who)
        .collect();
    if found.is_empty() {
        assert_eq!(plain.trim(), "—", "unrecognised who-acts cell {cell:?}");
        return vec![WhoActs::Nobody];
    }
    found
}

fn retry_agrees(cell: &str, retry: Retry) -> bool {
    match cell {
        "—" => matches!(retry, Retry::NotNeeded | Retry::AfterAction(_)),
        "no" => retry == Retry::Never,
        "no (today)" | "tomorrow" => retry == Retry::Tomorrow,
        "later" | "yes, later" | "in minutes" => retry == Retry::Later,
        "once" => retry == Retry::Once,
        "yes" => matches!(
            retry,
            Retry::Now | Retry::AfterAction(Action::ReKeyAmount | Action::CorrectOriginal)
        ),
        "after sign-in" => retry == Retry::AfterAction(Action::SignIn),
        "other card" => retry == Retry::AfterAction(Action::OtherCard),
        "other card / smaller amount" => {
            retry == Retry::AfterAction(Action::OtherCardOrSmallerAmount)
        }
        "smaller amount" => retry == Retry::AfterAction(Action::SmallerAmount),
        "corrected" => retry == Retry::AfterAction(Action::CorrectOriginal),
        "yes (after reversal)" => retry == Retry::AfterAction(Action::Reversal),
        other => panic!("unrecognised retry cell {other:?}: extend this test"),
    }
}

fn contact_agrees(cell: &str, contact: ContactIssuer) -> bool {
    let cell = cell.trim();
    if cell == "—" || cell == "no" {
        contact == ContactIssuer::No
    } else if cell.starts_with("yes") {
        contact == ContactIssuer::Yes
    } else if cell.starts_with("if repeated") {
        contact == ContactIssuer::IfRepeated
    } else if cell.starts_with("if it persists") {
        contact == ContactIssuer::IfPersists
    } else if cell.starts_with("if card looks fine") {
        contact == ContactIssuer::IfCardLooksFine
    } else if cell.starts_with("optional") {
        contact == ContactIssuer::Optional
    } else {
        panic!("unrecognised contact cell {cell:?}: extend this test")
    }
}

fn check_against(markdown: &str, source: &str) -> usize {
    let rows = parse_rows(markdown);
    assert!(
        rows.len() >= 30,
        "{source}: only {} response-code rows parsed",
        rows.len()
    );
    let mut checked = 0;
    for row in &rows {
        for (i, code) in row.codes.iter().enumerate() {
            let wire: [u8; 2] = code.as_bytes().try_into().unwrap();
            let d = lookup(wire).unwrap_or_else(|| panic!("{source}: code {code} has no entry"));
            // "D / C" for "33, 54": the first code takes the first category, the rest the
            // second; "C / B" over six codes gives no such pairing, so either is accepted there.
            let allowed: Vec<Category> = if row.categories.len() == row.codes.len() {
                vec![row.categories[i]]
            } else {
                row.categories.clone()
            };
            assert!(
                allowed.contains(&d.category),
                "{source}: {code} category {:?}",
                d.category
            );
            let actors = allowed_actors(&row.who);
            assert!(
                actors.contains(&d.who_acts),
                "{source}: {code} who acts {:?}",
                d.who_acts
            );
            assert!(
                retry_agrees(&row.retry, d.retry),
                "{source}: {code} retry {:?}",
                d.retry
            );
            assert!(
                contact_agrees(&row.contact, d.contact_issuer),
                "{source}: {code} contact {:?}",
                d.contact_issuer
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn snapshot_of_protocol_agrees_with_the_table() {
    let checked = check_against(PROTOCOL_SNAPSHOT, "snapshot");
    assert_eq!(checked, HARD_LIST.len());
}

#[test]
fn live_protocol_md_agrees_with_the_table() {
    let candidates = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/PROTOCOL.md"),
        "/work/shared/PROTOCOL.md",
    ];
    let Some(markdown) = candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
    else {
        eprintln!("PROTOCOL.md not found; the snapshot test covers the table");
        return;
    };
    let checked = check_against(&markdown, "PROTOCOL.md");
    assert!(
        checked >= HARD_LIST.len(),
        "PROTOCOL.md lists {checked} codes"
    );
}

#[test]
fn every_code_of_the_hard_list_has_an_entry() {
    for code in HARD_LIST {
        let d = diagnose_str(code);
        assert!(d.is_known(), "{code}");
        assert_eq!(d.code(), Some(*code));
    }
    let codes_in_table = TABLE
        .iter()
        .filter(|d| matches!(d.subject, Subject::Code(_)))
        .count();
    assert_eq!(
        codes_in_table,
        HARD_LIST.len(),
        "table has codes outside the list"
    );
}

#[test]
fn every_failure_and_payout_kind_has_one_entry() {
    for kind in FailureKind::ALL {
        let d = diagnose_failure(kind);
        assert_eq!(d.subject, Subject::Failure(kind));
        assert_eq!(FailureKind::from_key(kind.key()), Some(kind));
    }
    for kind in PayoutFailure::ALL {
        let d = diagnose_payout(kind);
        assert_eq!(d.subject, Subject::Payout(kind));
        assert_eq!(PayoutFailure::from_key(kind.key()), Some(kind));
    }
    let subjects: HashSet<Subject> = TABLE.iter().map(|d| d.subject).collect();
    assert_eq!(subjects.len(), TABLE.len(), "a subject appears twice");
    assert_eq!(
        TABLE.len(),
        HARD_LIST.len() + FailureKind::ALL.len() + PayoutFailure::ALL.len()
    );
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn check_text(what: &str, text: &Text) {
    for (lang, s) in [("zh", text.zh), ("en", text.en)] {
        assert!(!s.trim().is_empty(), "{what} {lang} is empty");
        assert_eq!(s, s.trim(), "{what} {lang} has stray whitespace");
        assert!(!s.contains("  "), "{what} {lang} has a double space: {s:?}");
    }
    assert!(
        text.zh.chars().any(is_cjk),
        "{what} zh is not Chinese: {:?}",
        text.zh
    );
    assert!(
        !text.en.chars().any(is_cjk),
        "{what} en has Chinese: {:?}",
        text.en
    );
}

fn check_complete(d: &Diagnosis) {
    let what = d.subject.key().to_owned();
    check_text(&format!("{what} title"), &d.title);
    check_text(&format!("{what} meaning"), &d.meaning);
    check_text(&format!("{what} contact_when"), &d.contact_when);
    check_text(&format!("{what} customer_message"), &d.customer_message);
    assert!(!d.merchant_steps.is_empty(), "{what} has no merchant steps");
    for (i, step) in d.merchant_steps.iter().enumerate() {
        check_text(&format!("{what} step {i}"), step);
    }
    // Consistency between the fields themselves.
    assert_eq!(
        d.category == Category::A,
        d.retry == Retry::NotNeeded,
        "{what}"
    );
    if d.retry == Retry::Never {
        assert_ne!(d.category, Category::B, "{what}: B means retry may work");
    }
    // The acquirer's own refusal, which the issuer never saw: the customer is not sent to
    // their bank, who would know nothing of it.
    if d.who_acts == WhoActs::Acquirer && d.contact_issuer == ContactIssuer::No {
        let to_bank = d.customer_message.en.contains("your bank")
            || d.customer_message.zh.contains("联系发卡")
            || d.customer_message.zh.contains("银行确认");
        assert!(!to_bank, "{what}: {:?}", d.customer_message);
    }
    // A payout that waits for the merchant to change its account is not one to retry as it is.
    if d.retry == Retry::AfterAction(Action::UpdateSettlementAccount) {
        assert_eq!(d.category, Category::D, "{what}");
    }
    check_text(&format!("{what} retry"), &d.retry.text());
    check_text(&format!("{what} who"), &d.who_acts.text());
    check_text(&format!("{what} category"), &d.category.text());
}

#[test]
fn every_entry_is_complete_in_both_languages() {
    for d in TABLE {
        check_complete(d);
    }
    check_complete(domain::diagnosis::unknown_code());
}

#[test]
fn unknown_codes_get_an_honest_generic_answer() {
    for code in ["XX", "a0", "50", "0", "000", ""] {
        let d = diagnose_str(code);
        assert!(!d.is_known(), "{code}");
        assert_eq!(d.subject, Subject::UnknownCode);
        assert!(d.meaning.en.contains("not in shoudan's table"));
    }
    assert!(!diagnose(*b"Z9").is_known());
    assert_eq!(lookup(*b"Z9"), None);
}

#[test]
fn a_few_entries_say_what_merchants_need() {
    let d = diagnose(*b"51");
    assert_eq!(d.title.zh, "余额不足");
    assert_eq!(d.title.en, "Insufficient funds");
    assert!(!d.contact_issuer.recommended());
    let d = diagnose(*b"01");
    assert!(d.contact_issuer.recommended());
    assert_eq!(d.who_acts, WhoActs::CardholderAndIssuer);
    let d = diagnose(*b"A0");
    assert_eq!(d.retry, Retry::AfterAction(Action::SignIn));
    assert_eq!(d.retry.key(), "after_sign_in");
    let d = diagnose(*b"61");
    assert!(
        d.merchant_steps.iter().any(|s| s.zh.contains("拆")),
        "61 must warn against splitting"
    );
    // A reply whose MAC failed means the keys differ: signing in again, as after A0.
    let d = diagnose_failure(FailureKind::BadResponseMac);
    assert_eq!(d.retry, Retry::AfterAction(Action::SignIn));
    // One terminal falling back again and again is its reader, not the customer's card.
    let d = diagnose_failure(FailureKind::RepeatedFallback);
    assert!(d.customer_message.en.contains("not your card"), "{d:?}");
}

#[test]
fn entries_serialise_with_both_languages() {
    let v = serde_json::to_value(diagnose(*b"51")).unwrap();
    assert_eq!(v["subject"], "51");
    assert_eq!(v["title"]["zh"], "余额不足");
    assert_eq!(v["title"]["en"], "Insufficient funds");
    assert_eq!(v["category"], "C");
    assert_eq!(v["who_acts"], "cardholder");
    assert_eq!(v["retry"], "after_other_card_or_smaller_amount");
    assert_eq!(v["contact_issuer"], "no");
    assert!(v["merchant_steps"].as_array().unwrap().len() >= 2);
    let v = serde_json::to_value(diagnose_failure(FailureKind::NoAnswer)).unwrap();
    assert_eq!(v["subject"], "no-answer");
}
