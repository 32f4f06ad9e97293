//! HTML by hand: one escaping function every interpolated value goes through, the page frame
//! (navigation, language switch), and the language of a request. No script, no third-party file.

use axum::http::HeaderMap;
use domain::diagnosis::Lang;

use crate::auth::cookie;

/// The language cookie the switch link sets.
pub const LANG_COOKIE: &str = "shoudan_lang";

/// Escapes text for an element body or a quoted attribute.
pub fn esc(text: &str) -> String {
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

/// Chinese unless the request asks for English (`?lang=en` or the cookie).
pub fn lang_of(headers: &HeaderMap, asked: Option<&str>) -> Lang {
    match asked.or_else(|| cookie(headers, LANG_COOKIE)) {
        Some("en") => Lang::En,
        _ => Lang::Zh,
    }
}

/// Where the language switch of a page goes: the same page with its query kept and the other
/// language asked for (a relative `?...` keeps the path), or, for the answer to a form (whose
/// address takes no GET), the home page in the other language.
pub fn lang_switch_href(lang: Lang, query: Option<&[(String, String)]>) -> String {
    let other = t(lang, "en", "zh");
    let Some(query) = query else {
        return format!("/?lang={other}");
    };
    let mut href = String::from("?");
    for (key, value) in query.iter().filter(|(k, _)| k != "lang") {
        // Only what may look like a card number without being one goes as it came: a merchant
        // ID, a cursor or a time. Anything else, a card number typed where it does not belong
        // included (a page that reads no `rrn` does not check it), is not said back whole.
        let value = if kept_whole(key, value) {
            std::borrow::Cow::Borrowed(value.as_str())
        } else {
            domain::mask_card_numbers(value)
        };
        href.push_str(&url_escape(key));
        href.push('=');
        href.push_str(&url_escape(&value));
        href.push('&');
    }
    href.push_str("lang=");
    href.push_str(other);
    href
}

/// The page parameters whose values may be long runs of digits that are not card numbers,
/// said back whole only in the shapes the pages issue: a merchant ID of 15 digits (`mid`); an
/// id of up to 12 digits (`before`); a search cursor, a time in milliseconds, an id and
/// perhaps another time (`cursor`, `1796619815489.4261` or `...4261.1796000000000`), a time
/// being 13 digits that begin with 1 (until 2033: a 13-digit card number begins with 4); a
/// payouts cursor, a date and a merchant ID (`payouts_before`, `20261125:898110000000077`).
/// A card number typed there in any other shape (whole, in groups, split by dots, in
/// full-width digits) is masked like any other value. (Whether a merchant ID names a merchant
/// is the caller's to check: pages mask one that does not before it gets here.)
fn kept_whole(key: &str, value: &str) -> bool {
    let digits = |run: &str| run.bytes().all(|b| b.is_ascii_digit());
    let mid_shaped = |mid: &str| mid.len() == 15 && digits(mid);
    let id = |run: &str| (1..=12).contains(&run.len()) && digits(run);
    let time = |run: &str| run.len() == 13 && run.starts_with('1') && digits(run);
    match key {
        "mid" => mid_shaped(value),
        "before" => id(value),
        "cursor" => match value.split('.').collect::<Vec<_>>().as_slice() {
            [at, row] => time(at) && id(row),
            [at, row, from] => time(at) && id(row) && time(from),
            _ => false,
        },
        "payouts_before" => value
            .split_once(':')
            .is_some_and(|(day, mid)| day.len() == 8 && digits(day) && mid_shaped(mid)),
        _ => false,
    }
}

/// Percent-encodes all but the unreserved characters of a query component.
pub fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Picks the text of a language.
pub fn t(lang: Lang, zh: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

const STYLE: &str = "body{font-family:system-ui,'PingFang SC','Noto Sans CJK SC',sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1f3a5f;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header .who{margin-left:auto}
main{padding:1em 1.4em;max-width:1100px}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #d8dce3;padding:.3em .5em;text-align:left;font-size:.92em}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:.8em 1em;margin:.6em 0}
.red{border-left:5px solid #c0392b}.ok{color:#1e7e34}.bad{color:#c0392b}
.kpis{display:flex;gap:1em;flex-wrap:wrap}.kpi{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:.6em 1em;min-width:10em}
.kpi b{display:block;font-size:1.5em}form.inline{display:inline}
input,select,button{font-size:1em;padding:.25em .4em}button{cursor:pointer}
.err{background:#fdecea;border:1px solid #c0392b;padding:.6em;border-radius:4px}\
.done{background:#eafaf1;border:1px solid #1e8449;padding:.6em;border-radius:4px}";

/// A whole page: frame, navigation for the role, the language switch (`switch_href`: where
/// the other language's link goes, from [`lang_switch_href`]).
pub fn page(
    lang: Lang,
    switch_href: &str,
    title: &str,
    nav: &[(&str, &str)],
    who: Option<&str>,
    logout_csrf: Option<&str>,
    body: &str,
) -> String {
    let html_lang = t(lang, "zh-CN", "en");
    let mut links = String::new();
    for (href, text) in nav {
        links.push_str(&format!("<a href=\"{}\">{}</a>", esc(href), esc(text)));
    }
    let switch = format!(
        "<a href=\"{}\" id=\"lang\">{}</a>",
        esc(switch_href),
        t(lang, "English", "中文")
    );
    let who = match (who, logout_csrf) {
        (Some(name), Some(csrf)) => format!(
            "<span class=\"who\">{} <form class=\"inline\" method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"logout\">{}</button></form></span>",
            esc(name),
            esc(csrf),
            t(lang, "退出", "Sign out")
        ),
        _ => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"{html_lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · shoudan</title><style>{STYLE}</style></head><body>\
         <header><b>收单 shoudan</b>{links}{switch}{who}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_switch_keeps_the_query_and_a_form_answer_goes_home() {
        let query = vec![
            ("amount".to_owned(), "12.34".to_owned()),
            ("lang".to_owned(), "zh".to_owned()),
            ("rrn".to_owned(), "a b&c".to_owned()),
        ];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&query)),
            "?amount=12.34&rrn=a%20b%26c&lang=en"
        );
        assert_eq!(lang_switch_href(Lang::En, Some(&[])), "?lang=zh");
        assert_eq!(lang_switch_href(Lang::Zh, None), "/?lang=en");
        let typed = vec![("q".to_owned(), "6222020200112345679".to_owned())];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&typed)),
            "?q=622202%2A%2A%2A%2A%2A%2A%2A%2A%2A5679&lang=en"
        );
        // A merchant ID that passes the card check digit is the page's own parameter.
        let mid = vec![("mid".to_owned(), "898110059420002".to_owned())];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&mid)),
            "?mid=898110059420002&lang=en"
        );
        // A card number where a page reads an RRN (a page that does not check it) is masked.
        let rrn = vec![("rrn".to_owned(), "6222020200112345679".to_owned())];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&rrn)),
            "?rrn=622202%2A%2A%2A%2A%2A%2A%2A%2A%2A5679&lang=en"
        );
        // A card number typed as a merchant ID or into a cursor is not in their shape.
        for key in ["mid", "cursor", "before", "payouts_before"] {
            let typed = vec![(key.to_owned(), "6222020200112345679.1".to_owned())];
            assert_eq!(
                lang_switch_href(Lang::Zh, Some(&typed)),
                format!("?{key}=622202%2A%2A%2A%2A%2A%2A%2A%2A%2A5679.1&lang=en")
            );
        }
        // Nor in groups, nor in full-width digits.
        for typed in [
            "6222 0202 0011 2345 679",
            "6222-0202-0011-2345-679",
            "６２２２０２０２００１１２３４５６７９",
        ] {
            let query = vec![("cursor".to_owned(), typed.to_owned())];
            let href = lang_switch_href(Lang::Zh, Some(&query));
            assert!(href.contains("%2A%2A"), "{typed}: {href}");
        }
        // A payouts cursor (a date and a merchant ID that passes the card check digit) too.
        let cursor = vec![(
            "payouts_before".to_owned(),
            "20261125:898110059420002".to_owned(),
        )];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&cursor)),
            "?payouts_before=20261125%3A898110059420002&lang=en"
        );
        // A 13-digit card number in a cursor's shape is masked (it passes the check digit).
        for key in ["cursor", "before", "payouts_before"] {
            for typed in ["4222222222222", "4222222222222.1"] {
                let query = vec![(key.to_owned(), typed.to_owned())];
                let href = lang_switch_href(Lang::Zh, Some(&query));
                assert!(
                    href.contains("422222%2A%2A%2A2222"),
                    "{key}={typed}: {href}"
                );
            }
        }
        // Nor split by dots into runs a cursor's parts could be, nor 12 digits and 4.
        for typed in [
            "4111.1111.1111.1111",
            "411111111111.1111",
            "4111111111111111",
        ] {
            for key in ["cursor", "before"] {
                let query = vec![(key.to_owned(), typed.to_owned())];
                let href = lang_switch_href(Lang::Zh, Some(&query));
                assert!(href.contains("%2A%2A"), "{key}={typed}: {href}");
            }
        }
        // An id, and a cursor with its window's start, go as they came.
        let before = vec![("before".to_owned(), "4261".to_owned())];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&before)),
            "?before=4261&lang=en"
        );
        let cursor = vec![(
            "cursor".to_owned(),
            "1796619815489.4261.1796000000000".to_owned(),
        )];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&cursor)),
            "?cursor=1796619815489.4261.1796000000000&lang=en"
        );
        // A cursor of a time in milliseconds and an id goes as it came.
        let cursor = vec![("cursor".to_owned(), "1733400000000.4261".to_owned())];
        assert_eq!(
            lang_switch_href(Lang::Zh, Some(&cursor)),
            "?cursor=1733400000000.4261&lang=en"
        );
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
