//! `shoudan explain` and `shoudan card-info`, run as the real binary.
// Test helpers outside #[test] functions: the house rules allow these lints in tests.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod cli;

use std::process::{Command, Output};

use cli::run_with_stdin;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");
/// ICBC debit BIN 622202 at 19 digits with a valid check digit; not a live card.
const ICBC_PAN: &str = "6222020200112345679";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&stdout(&run(args))).unwrap()
}

#[test]
fn explain_prints_chinese_by_default() {
    let text = stdout(&run(&["explain", "51"]));
    assert!(text.starts_with("51 余额不足\n"), "{text}");
    assert!(text.contains("类别：C（失败，原样重试无效）"));
    assert!(text.contains("谁来处理：持卡人"));
    assert!(text.contains("对顾客说：“"));
    assert!(text.contains("商户操作：\n  1. "));
}

#[test]
fn explain_in_english() {
    let text = stdout(&run(&["explain", "51", "--lang", "en"]));
    assert!(text.starts_with("51 Insufficient funds\n"), "{text}");
    assert!(text.contains("Who acts: the cardholder"));
    assert!(text.contains("Merchant steps:\n  1. "));
}

#[test]
fn explain_json_has_the_agreed_fields() {
    let v = json(&["explain", "51", "--json"]);
    assert_eq!(v["code"], "51");
    assert_eq!(v["kind"], "response_code");
    assert_eq!(v["known"], true);
    assert_eq!(v["category"], "C");
    assert_eq!(v["who_acts"], "cardholder");
    assert_eq!(v["retry"], "after_other_card_or_smaller_amount");
    assert_eq!(v["contact_issuer"], false);
    assert_eq!(v["title"], "余额不足");
    assert!(!v["customer_message"].as_str().unwrap().is_empty());
    let steps = v["merchant_steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|s| !s.as_str().unwrap().is_empty()));

    let v = json(&["explain", "01", "--json", "--lang", "en"]);
    assert_eq!(v["contact_issuer"], true);
    assert_eq!(v["contact_issuer_condition"], "yes");
    assert_eq!(v["who_acts"], "cardholder_and_issuer");
    assert_eq!(v["title"], "Refer to card issuer");
}

#[test]
fn lower_case_codes_are_accepted() {
    let v = json(&["explain", "a0", "--json", "--lang", "en"]);
    assert_eq!(v["code"], "A0");
    assert_eq!(v["category"], "B");
    assert_eq!(v["retry"], "after_sign_in");
    assert_eq!(v["title"], "MAC verification failed, sign in again");
}

#[test]
fn every_listed_entry_explains_in_both_languages() {
    let list = json(&["explain", "--list", "--json"]);
    let entries = list.as_array().unwrap();
    assert!(entries.len() >= 62 + 9 + 7, "{} entries", entries.len());
    for entry in entries {
        let code = entry["code"].as_str().unwrap();
        for lang in ["zh", "en"] {
            let v = json(&["explain", code, "--json", "--lang", lang]);
            assert_eq!(v["code"], code);
            assert_eq!(v["known"], true, "{code}");
            assert_eq!(v["category"], entry["category"]);
            for field in [
                "title",
                "meaning",
                "customer_message",
                "contact_issuer_when",
            ] {
                assert!(
                    !v[field].as_str().unwrap().is_empty(),
                    "{code} {lang} {field}"
                );
            }
        }
    }
}

#[test]
fn failures_without_a_code_and_payouts_explain_by_name() {
    let v = json(&["explain", "no-answer", "--json", "--lang", "en"]);
    assert_eq!(v["kind"], "failure");
    assert_eq!(v["category"], "E");
    assert_eq!(v["retry"], "after_reversal");
    let v = json(&["explain", "payout-account-frozen", "--json"]);
    assert_eq!(v["kind"], "payout_failure");
    assert_eq!(v["who_acts"], "merchant");
    assert_eq!(v["contact_issuer"], true);
}

/// A code the table does not hold gets the advice for any refusal, and exit 1: a script learns
/// that the code is not known.
#[test]
fn unknown_codes_get_an_honest_answer() {
    let out = run(&["explain", "X7", "--json", "--lang", "en"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "X7");
    assert_eq!(v["known"], false);
    assert_eq!(v["kind"], "unknown_code");
    assert!(
        v["meaning"]
            .as_str()
            .unwrap()
            .starts_with("Code X7 is not in shoudan's table")
    );
    let out = run(&["explain", "X7"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("应答码 X7 不在 shoudan 的表中"), "{text}");
}

#[test]
fn an_unknown_code_exits_1_with_the_advice_and_help_says_so() {
    let out = run(&["explain", "ZZ", "--lang", "en"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ZZ "), "{text}");
    assert!(text.contains("Code ZZ is not in shoudan's table"), "{text}");
    assert!(text.contains("Merchant steps:\n  1. "), "{text}");
    // A known code still exits 0.
    assert_eq!(run(&["explain", "51"]).status.code(), Some(0));
    let help = stdout(&run(&["explain", "--help"]));
    assert!(help.contains("exits 1"), "{help}");
}

#[test]
fn bad_explain_input_is_an_error() {
    for input in ["5", "ABC", "no-such-failure", "５１"] {
        let out = run(&["explain", input]);
        assert_eq!(out.status.code(), Some(2), "{input}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error:"),
            "{input}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = run(&["explain"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<CODE>"));
    // A mistyped name is quoted back, to show what was looked up.
    let out = run(&["explain", "no-anwser"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`no-anwser` is neither"), "{stderr}");
}

/// A card number (one that fails Luhn too), track data or a key pasted here by mistake is not
/// printed back, not even in part: the error says only that the argument is not a code.
#[test]
fn explain_never_repeats_a_card_number_track_or_key() {
    for (input, secrets) in [
        (
            "6222020200112345679",
            &["6222020200112345679", "622202"][..],
        ),
        ("6222020200112233445", &["6222020200112233445", "622202"]),
        (
            ";6222020200112233446=25121010000000000000?",
            &["6222020200112233446", "622202", "2512101"],
        ),
        (
            "0123456789ABCDEFFEDCBA9876543210",
            &["0123456789", "FEDCBA98"],
        ),
        ("A1B2C3D4E5F6A7B8", &["A1B2C3D4"]),
        // Grouped as people type them, and a PIN.
        ("6222-0202-0011-2345-679", &["6222-0202", "2345-679"]),
        ("0123-4567-89AB-CDEF", &["0123-4567", "89AB-CDEF"]),
        ("123456", &["123456"]),
    ] {
        let out = run(&["explain", input]);
        assert_eq!(out.status.code(), Some(2), "{input}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: the argument given is neither"),
            "{input}: {stderr}"
        );
        for secret in secrets {
            assert!(!stderr.contains(secret), "{input}: {stderr}");
            assert!(!stdout.contains(secret), "{input}: {stdout}");
        }
    }
}

#[test]
fn card_info_names_the_issuer_and_masks_the_number() {
    let text = stdout(&run(&["card-info", ICBC_PAN]));
    assert!(!text.contains(ICBC_PAN));
    assert!(text.contains("622202*********5679"));
    assert!(text.contains("ICBC 中国工商银行"));
    assert!(text.contains("借记卡"));
    assert!(text.contains("95588"));

    let v = json(&["card-info", ICBC_PAN, "--json"]);
    assert_eq!(v["pan"], "622202*********5679");
    assert_eq!(v["pan_length"], 19);
    assert_eq!(v["luhn_valid"], true);
    assert_eq!(v["network"], "domestic_cup");
    let issuer = &v["issuer"];
    assert_eq!(issuer["bank_code"], "ICBC");
    assert_eq!(issuer["bank_name_zh"], "中国工商银行");
    assert_eq!(
        issuer["bank_name_en"],
        "Industrial and Commercial Bank of China"
    );
    assert_eq!(issuer["card_type"], "debit");
    assert_eq!(issuer["card_type_code"], "DC");
    assert_eq!(issuer["expected_pan_length"], 19);
    assert_eq!(issuer["length_matches"], true);
    assert_eq!(issuer["contact"]["phone"], "95588");
    assert_eq!(issuer["contact"]["website"], "www.icbc.com.cn");
    assert!(!v.to_string().contains(ICBC_PAN));
}

#[test]
fn card_info_reports_luhn_and_length_problems() {
    // Last digit changed: Luhn fails, the issuer is still shown.
    let v = json(&["card-info", "6222020200112345678", "--json"]);
    assert_eq!(v["luhn_valid"], false);
    assert_eq!(v["issuer"]["bank_code"], "ICBC");
    // 18572,KMRCU,DC,18 given 17 digits; KMRCU has no known contact.
    let v = json(&["card-info", "18572111111111111", "--json"]);
    assert_eq!(v["issuer"]["bank_code"], "KMRCU");
    assert_eq!(v["issuer"]["length_matches"], false);
    assert_eq!(v["issuer"]["expected_pan_length"], 18);
    assert_eq!(v["issuer"]["contact"]["known"], false);
    let text = stdout(&run(&["card-info", "18572111111111111", "--lang", "en"]));
    assert!(text.contains("no known contact"), "{text}");
}

#[test]
fn card_info_foreign_cards_and_spacing() {
    let v = json(&["card-info", "4111 1111 1111 1111", "--json"]);
    assert_eq!(v["network"], "visa");
    assert_eq!(v["domestic"], false);
    assert!(v["issuer"].is_null());
    assert_eq!(v["pan"], "411111******1111");
}

#[test]
fn card_info_reads_standard_input() {
    let out = run_with_stdin(&["card-info", "-", "--json"], &format!("{ICBC_PAN}\n"));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["issuer"]["bank_code"], "ICBC");
}

#[test]
fn card_info_errors_never_echo_the_number() {
    for input in [
        "62220202001x2345679",
        "62220202",
        "622202020011234567912345",
    ] {
        let out = run(&["card-info", input]);
        assert_eq!(out.status.code(), Some(2), "{input}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: card number"), "{stderr}");
        assert!(!stderr.contains("6222020"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn card_info_uses_an_operators_tables() {
    let dir = std::env::temp_dir().join(format!("shoudan-cli-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bin.csv"),
        "bin,bank,type,length\n622202,XB,PC,19\n",
    )
    .unwrap();
    std::fs::write(dir.join("bank-names.csv"), "bank,name\nXB,示例银行\n").unwrap();
    std::fs::write(
        dir.join("issuer-contacts.csv"),
        "bank,service_phone,website\n",
    )
    .unwrap();
    let dir_arg = dir.to_str().unwrap();
    let v = json(&["card-info", ICBC_PAN, "--json", "--bin-dir", dir_arg]);
    assert_eq!(v["issuer"]["bank_code"], "XB");
    assert_eq!(v["issuer"]["card_type"], "prepaid");

    std::fs::write(
        dir.join("bin.csv"),
        "bin,bank,type,length\n622202,ZZ,PC,19\n",
    )
    .unwrap();
    let out = run(&["card-info", ICBC_PAN, "--bin-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bin.csv line 2"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
