//! The evidence package a merchant sends or reads out when contacting a card issuer: the
//! transaction's identifiers, the card (masked), the issuer and its phone, the response code
//! with its meaning and the timeline, as text to copy and as a printable standalone HTML page.

use domain::IssuerDirectory;
use domain::diagnosis::Lang;
use serde::Serialize;
use store::Store;

use crate::ResolveError;
use crate::explain::{Explanation, explain_rrn};
use crate::text::{Both, bank_info, date_text, html_escape, kind_text};

/// Everything the issuer's service desk asks for, and nothing they must not see.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub merchant_name: String,
    pub mid: String,
    pub tid: String,
    /// `2026-11-23 14:02:11` China Standard Time.
    pub time: String,
    pub amount: String,
    pub amount_fen: i64,
    /// What it was: a purchase, a refund, a void, ...
    pub kind: Both,
    /// The acquirer's clearing date (`YYYYMMDD`), the day it is settled under.
    pub clearing_date: String,
    pub masked_pan: String,
    pub card_type: Option<Both>,
    pub bank: Both,
    pub bank_code: Option<String>,
    pub issuer_phone: Option<String>,
    pub issuer_website: Option<String>,
    pub rrn: String,
    pub stan: String,
    pub batch_no: String,
    pub auth_code: Option<String>,
    pub response_code: Option<String>,
    /// The response code's meaning in both languages: the explanation's own diagnosis where
    /// it has one (a decline by a risk rule of shoudan's, or a refusal by shoudan itself, is
    /// not the issuer's code of the same number), else the code's.
    pub response_meaning: Option<Both>,
    pub explanation: Explanation,
}

/// The evidence package of the transaction with this RRN. `mid`: when given, the transaction
/// must be that merchant's (a merchant sees only its own data).
pub fn evidence(
    store: &dyn Store,
    directory: &IssuerDirectory,
    rrn: &str,
    mid: Option<&str>,
    now_ms: i64,
) -> Result<Evidence, ResolveError> {
    let explanation = explain_rrn(store, directory, rrn, now_ms)?;
    let row = store
        .txn(explanation.txn.id)?
        .ok_or(ResolveError::NoSuchTxn(explanation.txn.id))?;
    if mid.is_some_and(|m| m != row.mid) {
        return Err(ResolveError::NotVisible("transaction"));
    }
    let merchant_name = store
        .merchant(&row.mid)?
        .map_or_else(String::new, |m| m.name);
    let bank = bank_info(directory, &row);
    // The code's own meaning, unless the issuer never gave it (a refusal of shoudan's, a risk
    // rule's) or it says the wrong thing for this transaction (`explain::failure_of`): then
    // the explanation's. An issuer's 00 stays "approved" whatever happened after.
    let reversal_queued = store.reversal(row.id)?.is_some();
    let own_words =
        row.sent_at_ms.is_none() || crate::explain::failure_of(&row, reversal_queued).is_some();
    let response_meaning = row.response_code.as_deref().map(|code| {
        let d = explanation
            .diagnosis
            .filter(|_| own_words)
            .unwrap_or_else(|| domain::diagnosis::diagnose_str(code));
        let (title, meaning) = d.as_shown_to_the_cardholder();
        Both::new(
            format!("{}：{}", title.zh, meaning.zh),
            format!("{}: {}", title.en, meaning.en),
        )
    });
    Ok(Evidence {
        merchant_name,
        mid: row.mid.clone(),
        tid: row.tid.clone(),
        time: explanation.txn.received_at.clone(),
        amount: explanation.txn.amount.clone(),
        amount_fen: row.amount_fen,
        kind: kind_text(row.kind),
        clearing_date: row.clearing_date.clone(),
        masked_pan: row
            .pan
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| p.masked.clone()),
        card_type: bank.card_type,
        bank: bank.name,
        bank_code: bank.code,
        issuer_phone: bank.phone,
        issuer_website: bank.website,
        rrn: row.rrn.clone().unwrap_or_else(|| "-".to_owned()),
        stan: format!("{:06}", row.stan),
        batch_no: format!("{:06}", row.batch_no),
        auth_code: row.auth_code.clone(),
        response_code: row.response_code.clone(),
        response_meaning,
        explanation,
    })
}

impl Evidence {
    /// (label, value) pairs in the order a service desk asks for them.
    fn fields(&self, lang: Lang) -> Vec<(&'static str, String)> {
        let zh = lang == Lang::Zh;
        let pick = |zh_label: &'static str, en_label: &'static str| {
            if zh { zh_label } else { en_label }
        };
        let dash = || "-".to_owned();
        vec![
            (
                pick("交易时间（北京时间）", "Time (China)"),
                self.time.clone(),
            ),
            (
                pick("商户名称", "Merchant"),
                if self.merchant_name.is_empty() {
                    dash()
                } else {
                    self.merchant_name.clone()
                },
            ),
            (pick("商户号", "MID"), self.mid.clone()),
            (pick("终端号", "TID"), self.tid.clone()),
            (
                pick("交易类型", "Transaction"),
                self.kind.get(lang).to_owned(),
            ),
            (pick("金额", "Amount"), self.amount.clone()),
            (pick("卡号", "Card"), self.masked_pan.clone()),
            (
                pick("卡种", "Card type"),
                self.card_type
                    .as_ref()
                    .map_or_else(dash, |c| c.get(lang).to_owned()),
            ),
            (pick("发卡行", "Issuer"), self.bank.get(lang).to_owned()),
            (
                pick("发卡行客服电话", "Issuer phone"),
                self.issuer_phone.clone().unwrap_or_else(|| {
                    pick(
                        "未知，请拨打卡背面的电话",
                        "unknown: call the number on the card",
                    )
                    .to_owned()
                }),
            ),
            (pick("参考号 RRN", "RRN"), self.rrn.clone()),
            (pick("流水号 STAN", "STAN"), self.stan.clone()),
            (pick("批次号", "Batch"), self.batch_no.clone()),
            (
                pick("清算日期", "Clearing date"),
                date_text(&self.clearing_date),
            ),
            (
                pick("授权码", "Auth code"),
                self.auth_code.clone().unwrap_or_else(dash),
            ),
            (
                pick("应答码", "Response code"),
                match (&self.response_code, &self.response_meaning) {
                    (Some(code), Some(meaning)) => format!("{code} {}", meaning.get(lang)),
                    _ => dash(),
                },
            ),
            (
                pick("结论", "Outcome"),
                self.unflagged(self.explanation.summary.get(lang), lang),
            ),
        ]
    }

    /// `text` with the title of any code for a card its bank flagged
    /// ([`domain::diagnosis::Diagnosis::flags_the_card`]) replaced by "declined by the card's
    /// bank": the summary and the timeline name codes by their titles ("43 (Stolen card, pick
    /// up)"), the transaction's own or a linked refund's, which are not for whoever may hold
    /// the card.
    fn unflagged(&self, text: &str, lang: Lang) -> String {
        let mut out = text.to_owned();
        for d in domain::diagnosis::TABLE
            .iter()
            .filter(|d| d.flags_the_card())
        {
            let (neutral, _) = d.as_shown_to_the_cardholder();
            if out.contains(d.title.get(lang)) {
                out = out.replace(d.title.get(lang), neutral.get(lang));
            }
        }
        out
    }

    /// Plain text to paste into a message to the issuer.
    pub fn to_text(&self, lang: Lang) -> String {
        let title = match lang {
            Lang::Zh => "交易查询资料（请向发卡行提供）",
            Lang::En => "Transaction evidence for the card issuer",
        };
        let mut out = format!("{title}\n");
        for (label, value) in self.fields(lang) {
            out.push_str(&format!("{label}: {value}\n"));
        }
        out.push_str(match lang {
            Lang::Zh => "时间线（北京时间）：\n",
            Lang::En => "Timeline (China time):\n",
        });
        for step in &self.explanation.steps {
            let text = self.unflagged(step.text.get(lang), lang);
            out.push_str(&format!("  {}  {text}\n", step.time));
        }
        // What it means, not the cashier's script: the package goes to an issuer's desk or a
        // cardholder (the transaction's page has the merchant's steps).
        if let Some(d) = self.explanation.diagnosis {
            let (title, meaning) = d.as_shown_to_the_cardholder();
            out.push_str(&match lang {
                Lang::Zh => format!("诊断：{}{}\n  {}\n", code_prefix(d), title.zh, meaning.zh),
                Lang::En => format!(
                    "Diagnosis: {}{}\n  {}\n",
                    code_prefix(d),
                    title.en,
                    meaning.en
                ),
            });
        }
        out
    }

    /// A standalone printable page; every value is escaped.
    pub fn to_html(&self, lang: Lang) -> String {
        let (html_lang, title, timeline, advice) = match lang {
            Lang::Zh => ("zh-CN", "交易查询资料", "时间线（北京时间）", "诊断"),
            Lang::En => (
                "en",
                "Transaction evidence",
                "Timeline (China time)",
                "Diagnosis",
            ),
        };
        let mut out = String::with_capacity(4_096);
        out.push_str(&format!(
            "<!DOCTYPE html>\n<html lang=\"{html_lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{} {}</title>\n<style>\nbody{{font-family:sans-serif;max-width:48em;\
             margin:2em auto;color:#111}}\ntable{{border-collapse:collapse;width:100%}}\n\
             th,td{{border:1px solid #999;padding:.3em .6em;text-align:left;\
             vertical-align:top}}\nth{{width:14em;background:#f3f3f3}}\n\
             @media print{{body{{margin:0}}}}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n<table>\n",
            html_escape(title),
            html_escape(&self.rrn),
            html_escape(title)
        ));
        for (label, value) in self.fields(lang) {
            out.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                html_escape(label),
                html_escape(&value)
            ));
        }
        out.push_str(&format!(
            "</table>\n<h2>{}</h2>\n<ol>\n",
            html_escape(timeline)
        ));
        for step in &self.explanation.steps {
            out.push_str(&format!(
                "<li><time>{}</time> {}</li>\n",
                html_escape(&step.time),
                html_escape(&self.unflagged(step.text.get(lang), lang))
            ));
        }
        out.push_str("</ol>\n");
        if let Some(d) = self.explanation.diagnosis {
            let (title, meaning) = d.as_shown_to_the_cardholder();
            out.push_str(&format!(
                "<h2>{}</h2>\n<p><strong>{}{}</strong></p>\n<p>{}</p>\n",
                html_escape(advice),
                html_escape(&code_prefix(d)),
                html_escape(title.get(lang)),
                html_escape(meaning.get(lang)),
            ));
        }
        out.push_str("</body>\n</html>\n");
        out
    }
}

/// A response code before its title ("51 "); nothing for a failure without one (its key is
/// for programs, not for an issuer's desk).
fn code_prefix(d: &domain::diagnosis::Diagnosis) -> String {
    match d.subject {
        domain::diagnosis::Subject::Code(_) => format!("{} ", d.subject.key()),
        _ => String::new(),
    }
}
