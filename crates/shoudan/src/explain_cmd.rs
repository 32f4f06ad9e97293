//! `shoudan explain` (what a response code or failure means, who acts, what to tell the customer)
//! and `shoudan card-info` (issuer, card type and contact channels of a card number, masked).

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use domain::diagnosis::{self, Diagnosis, FailureKind, Lang, PayoutFailure, Subject, TABLE};
use domain::issuer::{CardLookup, IssuerContact, IssuerDirectory};
use domain::pan::{MaskedPan, PAN_LEN_MAX, PAN_LEN_MIN, luhn_valid};
use serde_json::{Value, json};
use store::Store;
use switch::{Clock, SystemClock};
use zeroize::Zeroizing;

use crate::CliResult;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LangArg {
    Zh,
    En,
}

impl From<LangArg> for Lang {
    fn from(lang: LangArg) -> Lang {
        match lang {
            LangArg::Zh => Lang::Zh,
            LangArg::En => Lang::En,
        }
    }
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Response code (field 39, e.g. 51, A0), or a failure without a code (e.g. no-answer,
    /// payout-account-frozen). `--list` shows them all. A 2-character code not in the table gets
    /// the advice for any refusal and exits 1.
    // Optional only for `--list` and `--rrn`.
    #[arg(required_unless_present_any = ["list", "rrn"], conflicts_with = "rrn")]
    code: Option<String>,
    /// Explain a stored transaction instead: its timeline in plain words and its diagnosis.
    #[arg(long, value_name = "RRN", requires = "journal")]
    rrn: Option<String>,
    /// The data directory whose journal (switch.db) `--rrn` reads, read-only.
    #[arg(long, value_name = "DIR", group = "journal")]
    data_dir: Option<std::path::PathBuf>,
    /// Or a node's configuration, whose journal (`database`: SQLite or PostgreSQL) `--rrn`
    /// reads, read-only.
    #[arg(long, value_name = "FILE", group = "journal")]
    config: Option<std::path::PathBuf>,
    /// Or the journal itself: `sqlite:PATH` or `postgres://...` (a demo started with
    /// `--database`), read-only.
    #[arg(long, value_name = "URL", group = "journal")]
    database: Option<String>,
    /// The PostgreSQL schema of that journal, when not `public`.
    #[arg(long, requires = "database")]
    database_schema: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Language of the explanation.
    #[arg(long, value_enum, default_value = "zh")]
    lang: LangArg,
    /// List every code and failure the knowledge base explains.
    #[arg(long, conflicts_with = "code")]
    list: bool,
}

#[derive(clap::Args)]
pub struct CardInfoArgs {
    /// Card number (spaces and dashes ignored), or `-` to read it from standard input so it
    /// stays out of the shell history. Never printed in clear.
    pan: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Language of the text output.
    #[arg(long, value_enum, default_value = "zh")]
    lang: LangArg,
    /// Use an operator's own tables from this directory (bin.csv, bank-names.csv,
    /// issuer-contacts.csv) instead of the embedded CUP table.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<std::path::PathBuf>,
}

/// Exits 1 for a 2-character code the table does not hold: its advice is printed all the same
/// (the payment did not go through, whatever the code), but a script or an operator learns that
/// this code is not one shoudan knows.
pub fn explain(args: ExplainArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let lang = Lang::from(args.lang);
    if args.list {
        list(args.json, lang)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(rrn) = &args.rrn {
        let store: Arc<dyn Store> = match (&args.config, &args.database, &args.data_dir) {
            (Some(config), _, _) => {
                let config = crate::serve::ServeConfig::load(config)?;
                crate::serve::open_store_as_is(&config.database, config.database_schema.as_deref())?
            }
            (None, Some(url), _) => {
                crate::serve::open_store_as_is(url, args.database_schema.as_deref())?
            }
            (None, None, Some(dir)) => {
                Arc::new(store::SqliteStore::open_read_only(&dir.join("switch.db"))?)
            }
            (None, None, None) => {
                return Err("--rrn needs --data-dir, --config or --database".into());
            }
        };
        let known = explain_rrn(rrn, store.as_ref(), args.json, lang)?;
        return Ok(if known {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let Some(input) = args.code else {
        return Err("give a response code or failure name (or --list)".into());
    };
    let (key, diagnosis) = resolve(&input)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diagnosis_json(&key, diagnosis, lang))?
        );
    } else {
        print!("{}", diagnosis_text(&key, diagnosis, lang));
    }
    if diagnosis.is_known() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// `explain --rrn`: the journal opened read-only (a running demo or node may be writing it),
/// the transaction's timeline and diagnosis; JSON carries both languages. Whether its diagnosis,
/// if it has one, is of a code the table holds (as for a code explained on its own, exit 1
/// otherwise).
fn explain_rrn(
    rrn: &str,
    store: &dyn Store,
    json_out: bool,
    lang: Lang,
) -> Result<bool, Box<dyn std::error::Error>> {
    let directory = IssuerDirectory::embedded()?;
    let explanation = resolve::explain_rrn(store, &directory, rrn, SystemClock.now_ms())?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explanation.to_text(lang));
    }
    Ok(explanation.diagnosis.is_none_or(Diagnosis::is_known))
}

/// The entry for what the user typed, and the key to show for it. A 2-character code not in the
/// table gets the generic entry; anything else that matches nothing is an error.
fn resolve(input: &str) -> Result<(String, &'static Diagnosis), Box<dyn std::error::Error>> {
    let trimmed = input.trim();
    if trimmed.len() == 2 && trimmed.bytes().all(|b| b.is_ascii_alphanumeric()) {
        // Codes are upper case on the wire; people type `a0`.
        let code = trimmed.to_ascii_uppercase();
        return Ok((code.clone(), diagnosis::diagnose_str(&code)));
    }
    let name = trimmed.to_ascii_lowercase();
    if let Some(kind) = FailureKind::from_key(&name) {
        return Ok((name, diagnosis::diagnose_failure(kind)));
    }
    if let Some(kind) = PayoutFailure::from_key(&name) {
        return Ok((name, diagnosis::diagnose_payout(kind)));
    }
    if quotable(trimmed) {
        return Err(format!(
            "`{trimmed}` is neither a 2-character response code nor a known failure name \
             (see `shoudan explain --list`)"
        )
        .into());
    }
    Err(NOT_QUOTED.into())
}

/// The error for an argument that is not quoted back (see [`quotable`]).
const NOT_QUOTED: &str = "the argument given is neither a 2-character response code nor a \
                          known failure name; it is not repeated here, as it may be a card \
                          number or a key (see `shoudan explain --list`)";

/// Whether what the user typed may be quoted back in an error: it looks like a mistyped code or
/// failure name (1 to 40 letters, digits, hyphens or underscores) and holds nothing a card
/// number, PIN, track data or a key would: no card number (`mask_card_numbers` leaves it as it
/// is), at most three digits in all (a code has two; a PIN four or more), and no run of 8 or
/// more hex digits, hyphens and underscores not ending a run (a key typed in groups). Anything
/// else was pasted here by mistake and is not repeated: masking card numbers would still show
/// one that fails Luhn, the rest of a track after its card number, or a key.
fn quotable(input: &str) -> bool {
    const LEN_MAX: usize = 40;
    const DIGITS_MAX: usize = 3;
    const HEX_RUN_MAX: usize = 7;
    let joins = |c: char| c == '-' || c == '_';
    !input.is_empty()
        && input.len() <= LEN_MAX
        && input.chars().filter(char::is_ascii_digit).count() <= DIGITS_MAX
        && matches!(
            domain::mask_card_numbers(input),
            std::borrow::Cow::Borrowed(_)
        )
        && input.chars().all(|c| c.is_ascii_alphanumeric() || joins(c))
        && domain::longest_run(input, |c| c.is_ascii_hexdigit(), joins) <= HEX_RUN_MAX
}

fn subject_kind(subject: &Subject) -> &'static str {
    match subject {
        Subject::Code(_) => "response_code",
        Subject::Failure(_) => "failure",
        Subject::Payout(_) => "payout_failure",
        Subject::UnknownCode => "unknown_code",
    }
}

fn diagnosis_json(key: &str, d: &Diagnosis, lang: Lang) -> Value {
    let steps: Vec<&str> = d.merchant_steps.iter().map(|s| s.get(lang)).collect();
    json!({
        "code": key,
        "kind": subject_kind(&d.subject),
        "known": d.is_known(),
        "lang": match lang { Lang::Zh => "zh", Lang::En => "en" },
        "title": d.title.get(lang),
        "meaning": meaning_text(key, d, lang),
        "category": d.category.letter().to_string(),
        "category_text": d.category.text().get(lang),
        "who_acts": d.who_acts.key(),
        "who_acts_text": d.who_acts.text().get(lang),
        "retry": d.retry.key(),
        "retry_text": d.retry.text().get(lang),
        "contact_issuer": d.contact_issuer.recommended(),
        "contact_issuer_condition": d.contact_issuer,
        "contact_issuer_when": d.contact_when.get(lang),
        "customer_message": d.customer_message.get(lang),
        "merchant_steps": steps,
    })
}

/// The meaning, naming the code when it is one we do not know.
fn meaning_text(key: &str, d: &Diagnosis, lang: Lang) -> String {
    let meaning = d.meaning.get(lang);
    if d.is_known() {
        return meaning.to_owned();
    }
    let (generic, named) = match lang {
        Lang::Zh => ("这个应答码", format!("应答码 {key} ")),
        Lang::En => ("This response code", format!("Code {key}")),
    };
    match meaning.strip_prefix(generic) {
        Some(rest) => format!("{named}{rest}"),
        None => meaning.to_owned(),
    }
}

fn diagnosis_text(key: &str, d: &Diagnosis, lang: Lang) -> String {
    let labels = match lang {
        Lang::Zh => [
            "类别",
            "含义",
            "谁来处理",
            "能否重试",
            "联系发卡行",
            "对顾客说",
            "商户操作",
            "“",
            "”",
        ],
        Lang::En => [
            "Category",
            "Meaning",
            "Who acts",
            "Retry",
            "Contact issuer",
            "Tell the customer",
            "Merchant steps",
            "\"",
            "\"",
        ],
    };
    let [
        category,
        meaning,
        who,
        retry,
        contact,
        customer,
        steps,
        open_quote,
        close_quote,
    ] = labels;
    let colon = match lang {
        Lang::Zh => "：",
        Lang::En => ": ",
    };
    let mut out = format!("{key} {}\n", d.title.get(lang));
    let category_text = match lang {
        Lang::Zh => format!("{}（{}）", d.category.letter(), d.category.text().zh),
        Lang::En => format!("{} ({})", d.category.letter(), d.category.text().en),
    };
    let lines = [
        (category, category_text),
        (meaning, meaning_text(key, d, lang)),
        (who, d.who_acts.text().get(lang).to_owned()),
        (retry, d.retry.text().get(lang).to_owned()),
        (contact, d.contact_when.get(lang).to_owned()),
        (
            customer,
            format!("{open_quote}{}{close_quote}", d.customer_message.get(lang)),
        ),
    ];
    for (label, value) in lines {
        out.push_str(&format!("{label}{colon}{value}\n"));
    }
    out.push_str(&format!("{steps}{}\n", colon.trim_end()));
    for (i, step) in d.merchant_steps.iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", i + 1, step.get(lang)));
    }
    out
}

fn list(json_out: bool, lang: Lang) -> CliResult {
    if json_out {
        let entries: Vec<Value> = TABLE
            .iter()
            .map(|d| {
                json!({
                    "code": d.subject.key(),
                    "kind": subject_kind(&d.subject),
                    "category": d.category.letter().to_string(),
                    "title": d.title.get(lang),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    for d in TABLE {
        println!(
            "{:<24} {}  {}",
            d.subject.key(),
            d.category.letter(),
            d.title.get(lang)
        );
    }
    Ok(())
}

pub fn card_info(args: CardInfoArgs) -> CliResult {
    let lang = Lang::from(args.lang);
    let digits = card_digits(&args.pan)?;
    let directory = match &args.bin_dir {
        Some(dir) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
            };
            IssuerDirectory::from_csv(
                &read("bin.csv")?,
                &read("bank-names.csv")?,
                &read("issuer-contacts.csv")?,
            )?
        }
        None => IssuerDirectory::embedded()?,
    };
    let masked = MaskedPan::of_untrusted(&digits);
    let luhn = luhn_valid(digits.as_bytes());
    let found = directory.lookup_digits(&digits);
    if args.json {
        let value = card_json(&masked, digits.len(), luhn, &found);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", card_text(&masked, digits.len(), luhn, &found, lang));
    }
    Ok(())
}

/// The card number's digits, kept in memory that is wiped when dropped. Errors say where the
/// problem is, never what the digits were.
fn card_digits(arg: &str) -> Result<Zeroizing<String>, Box<dyn std::error::Error>> {
    let raw = Zeroizing::new(if arg == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        arg.to_owned()
    });
    let digits: Zeroizing<String> = Zeroizing::new(
        raw.chars()
            .filter(|c| !matches!(c, ' ' | '-' | '\n' | '\r'))
            .collect(),
    );
    if let Some(position) = digits.chars().position(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "card number has a character that is not a digit at position {position}"
        )
        .into());
    }
    if !(PAN_LEN_MIN..=PAN_LEN_MAX).contains(&digits.len()) {
        return Err(format!(
            "card number must be {PAN_LEN_MIN} to {PAN_LEN_MAX} digits, got {}",
            digits.len()
        )
        .into());
    }
    Ok(digits)
}

fn card_json(masked: &MaskedPan, pan_len: usize, luhn: bool, found: &CardLookup<'_>) -> Value {
    let issuer = found.issuer.map(|m| {
        let contact = match m.bank.contact() {
            IssuerContact::Known { phone, website } => {
                json!({ "known": true, "phone": phone, "website": website })
            }
            IssuerContact::NoKnownContact => json!({ "known": false }),
        };
        json!({
            "bank_code": m.bank.code(),
            "bank_name_zh": m.bank.name_zh(),
            "bank_name_en": m.bank.name_en(),
            "card_type": m.card_type,
            "card_type_code": m.card_type.code(),
            "bin_length": m.bin_len,
            "expected_pan_length": m.expected_pan_len,
            "length_matches": m.length_matches(),
            "contact": contact,
        })
    });
    json!({
        "pan": masked,
        "pan_length": pan_len,
        "luhn_valid": luhn,
        "network": found.network,
        "domestic": found.network.is_domestic(),
        "issuer": issuer,
    })
}

fn card_text(
    masked: &MaskedPan,
    pan_len: usize,
    luhn: bool,
    found: &CardLookup<'_>,
    lang: Lang,
) -> String {
    let zh = matches!(lang, Lang::Zh);
    let pick = |zh_text: String, en_text: String| if zh { zh_text } else { en_text };
    let mut lines: Vec<(&str, String)> = Vec::new();
    lines.push((if zh { "卡号" } else { "Card" }, masked.to_string()));
    let network = if zh {
        found.network.name_zh()
    } else {
        found.network.name_en()
    };
    lines.push((if zh { "卡组织" } else { "Network" }, network.to_owned()));
    match found.issuer {
        Some(m) => {
            let name = match (zh, m.bank.name_en()) {
                (false, Some(en)) => format!("{} ({})", en, m.bank.name_zh()),
                _ => m.bank.name_zh().to_owned(),
            };
            lines.push((
                if zh { "发卡行" } else { "Issuer" },
                format!("{} {name}", m.bank.code()),
            ));
            let card_type = if zh {
                m.card_type.name_zh()
            } else {
                m.card_type.name_en()
            }
            .to_owned();
            lines.push((if zh { "卡种" } else { "Card type" }, card_type));
            let length = if m.length_matches() {
                pick(
                    format!("{pan_len} 位，与该卡 BIN 一致"),
                    format!("{pan_len} digits, as expected for this BIN"),
                )
            } else {
                pick(
                    format!(
                        "{pan_len} 位，但该卡 BIN 应为 {} 位：卡号可能输错",
                        m.expected_pan_len
                    ),
                    format!(
                        "{pan_len} digits, but this BIN has {}: the number may be mistyped",
                        m.expected_pan_len
                    ),
                )
            };
            lines.push((if zh { "卡号长度" } else { "PAN length" }, length));
            match m.bank.contact() {
                IssuerContact::Known { phone, website } => {
                    lines.push((
                        if zh { "客服电话" } else { "Service phone" },
                        phone.to_owned(),
                    ));
                    lines.push((if zh { "网站" } else { "Website" }, website.to_owned()));
                }
                IssuerContact::NoKnownContact => lines.push((
                    if zh { "联系方式" } else { "Contact" },
                    pick(
                        "我们没有这家银行的联系方式，请拨打卡片背面的客服电话".to_owned(),
                        "no known contact for this bank: call the number on the back of the card"
                            .to_owned(),
                    ),
                )),
            }
        }
        None => {
            let note = if found.network.is_domestic() {
                pick(
                    "境内卡，但发卡行不在 BIN 表中；请拨打卡片背面的客服电话".to_owned(),
                    "domestic card whose bank is not in the BIN table; call the number on the \
                     back of the card"
                        .to_owned(),
                )
            } else {
                pick(
                    "不在境内 BIN 表中；请持卡人联系发卡机构".to_owned(),
                    "not in the domestic BIN table; the cardholder contacts the issuer".to_owned(),
                )
            };
            lines.push((if zh { "发卡行" } else { "Issuer" }, note));
            lines.push((
                if zh { "卡号长度" } else { "PAN length" },
                pick(format!("{pan_len} 位"), format!("{pan_len} digits")),
            ));
        }
    }
    let luhn_text = match (luhn, zh) {
        (true, true) => "通过".to_owned(),
        (true, false) => "valid".to_owned(),
        (false, true) => "未通过：卡号输错或读错".to_owned(),
        (false, false) => "FAILED: the number is mistyped or misread".to_owned(),
    };
    lines.push((if zh { "Luhn 校验" } else { "Luhn check" }, luhn_text));
    let colon = if zh { "：" } else { ": " };
    lines
        .iter()
        .map(|(label, value)| format!("{label}{colon}{value}\n"))
        .collect()
}
