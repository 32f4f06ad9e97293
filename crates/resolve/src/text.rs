//! Small shared wording helpers: amounts in yuan, China-time clocks and dates, bank names from
//! the issuer directory, transaction kinds in both languages, and HTML escaping.

use domain::IssuerDirectory;
use domain::diagnosis::Lang;
use domain::issuer::{CardLookup, IssuerContact};
use store::{TxnKind, TxnRow};
use switch::LocalTime;

/// A sentence in both languages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Both {
    pub zh: String,
    pub en: String,
}

impl Both {
    pub fn new(zh: impl Into<String>, en: impl Into<String>) -> Both {
        Both {
            zh: zh.into(),
            en: en.into(),
        }
    }

    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Zh => &self.zh,
            Lang::En => &self.en,
        }
    }
}

/// `¥12.30`; negative amounts keep their sign.
pub use domain::money::yuan;

/// `14:02:11` in China Standard Time.
pub fn clock(ms: i64) -> String {
    LocalTime::from_ms(ms).clock_text()
}

/// `2026-11-23 14:02:11` in China Standard Time.
pub fn date_time(ms: i64) -> String {
    let t = LocalTime::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {}",
        t.year,
        t.month,
        t.day,
        t.clock_text()
    )
}

/// `20261123` as `2026-11-23`; anything else as it is.
pub fn date_text(date: &str) -> String {
    match (date.get(..4), date.get(4..6), date.get(6..8)) {
        (Some(y), Some(m), Some(d))
            if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{y}-{m}-{d}")
        }
        _ => date.to_owned(),
    }
}

/// `2026-11-23`.
pub fn date(ms: i64) -> String {
    let t = LocalTime::from_ms(ms);
    format!("{:04}-{:02}-{:02}", t.year, t.month, t.day)
}

pub fn kind_text(kind: TxnKind) -> Both {
    let (zh, en) = match kind {
        TxnKind::BalanceInquiry => ("余额查询", "balance inquiry"),
        TxnKind::Purchase => ("消费", "purchase"),
        TxnKind::PurchaseVoid => ("消费撤销", "purchase void"),
        TxnKind::Refund => ("退货", "refund"),
        TxnKind::PreAuth => ("预授权", "pre-authorisation"),
        TxnKind::PreAuthVoid => ("预授权撤销", "pre-authorisation void"),
        TxnKind::Completion => ("预授权完成", "pre-authorisation completion"),
        TxnKind::CompletionVoid => ("预授权完成撤销", "completion void"),
        TxnKind::Reversal => ("冲正", "reversal"),
    };
    Both::new(zh, en)
}

/// The directory's view of a stored card: its BIN (the first six digits) at the masked PAN's
/// length, decided by BINs no longer than what is known (`IssuerDirectory::lookup_prefix`).
pub fn card_lookup<'d>(directory: &'d IssuerDirectory, row: &TxnRow) -> Option<CardLookup<'d>> {
    let pan = row.pan.as_ref()?;
    let len = pan.masked.chars().count().max(pan.bin.len() + 1);
    Some(directory.lookup_prefix(&pan.bin, len))
}

/// The issuer as a merchant knows it: the bank's name from the BIN, else the link the switch
/// routed to (a card network gateway, a test issuer).
pub struct BankInfo {
    pub code: Option<String>,
    pub name: Both,
    pub card_type: Option<Both>,
    pub network: Both,
    pub phone: Option<String>,
    pub website: Option<String>,
}

pub fn bank_info(directory: &IssuerDirectory, row: &TxnRow) -> BankInfo {
    let lookup = card_lookup(directory, row);
    let link = row.issuer.clone().unwrap_or_default();
    let unknown = || {
        if link.is_empty() {
            Both::new("发卡行", "the issuer")
        } else {
            Both::new(link.clone(), link.clone())
        }
    };
    match lookup {
        Some(found) => {
            let network = Both::new(found.network.name_zh(), found.network.name_en());
            match found.issuer {
                Some(m) => {
                    let (phone, website) = match m.bank.contact() {
                        IssuerContact::Known { phone, website } => {
                            (Some(phone.to_owned()), Some(website.to_owned()))
                        }
                        IssuerContact::NoKnownContact => (None, None),
                    };
                    BankInfo {
                        code: Some(m.bank.code().to_owned()),
                        name: Both::new(
                            m.bank.name_zh(),
                            m.bank.name_en().unwrap_or(m.bank.name_zh()),
                        ),
                        card_type: Some(Both::new(m.card_type.name_zh(), m.card_type.name_en())),
                        network,
                        phone,
                        website,
                    }
                }
                None => BankInfo {
                    code: None,
                    name: unknown(),
                    card_type: None,
                    network,
                    phone: None,
                    website: None,
                },
            }
        }
        None => BankInfo {
            code: None,
            name: unknown(),
            card_type: None,
            network: Both::new("未知卡组织", "unknown network"),
            phone: None,
            website: None,
        },
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_and_escape() {
        assert_eq!(yuan(12_30), "¥12.30");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(-150), "-¥1.50");
        assert_eq!(
            html_escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
