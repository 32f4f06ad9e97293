//! Reads shared by the API and the pages: transaction search with cursor pagination, China
//! Standard Time days, a merchant's day in numbers, terminal health from the journal.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, PoisonError};

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use resolve::TxnSummary;
use serde::{Deserialize, Serialize};
use store::{SafItem, SafState, TxnKind, TxnRow, TxnState, TxnTally};

use crate::Web;
use crate::auth::Principal;
use crate::error::ApiError;

pub const MS_PER_DAY: i64 = 86_400_000;
/// China Standard Time is UTC+8 all year.
const CST_OFFSET_MS: i64 = 8 * 3_600_000;
/// Rows one page returns at most; the default when the caller does not say.
pub const PAGE_LIMIT_MAX: usize = 200;
pub const PAGE_LIMIT_DEFAULT: usize = 50;
/// The longest date range one search scans: a quarter.
pub const SEARCH_DAYS_MAX: i64 = 92;
/// The days a search covers when the caller gives no dates.
pub const SEARCH_DAYS_DEFAULT: i64 = 7;
/// The days terminal health looks back over.
pub const HEALTH_DAYS: i64 = 7;

/// Midnight (CST) of the day `ms` falls in.
pub fn cst_day_start(ms: i64) -> i64 {
    ms.saturating_add(CST_OFFSET_MS)
        .div_euclid(MS_PER_DAY)
        .saturating_mul(MS_PER_DAY)
        .saturating_sub(CST_OFFSET_MS)
}

/// `YYYY-MM-DD` (CST) → the day's first millisecond.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if parts.next().is_some()
        || !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > domain::date::days_in_month(year, month)
    {
        return None;
    }
    Some(domain::date::days_from_civil(year, month, day) * MS_PER_DAY - CST_OFFSET_MS)
}

/// The CST date of `ms` as `YYYY-MM-DD`.
pub fn format_date(ms: i64) -> String {
    let days = ms.saturating_add(CST_OFFSET_MS).div_euclid(MS_PER_DAY);
    let (y, m, d) = domain::date::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `12.34` or `12` yuan → fen; at most two decimals, no sign.
pub fn parse_yuan(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || whole.len() > 12 || frac.len() > 2 {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    whole.checked_mul(100)?.checked_add(frac)
}

/// `1234` fen → `12.34`.
pub use domain::money::yuan_digits as yuan;

/// Search parameters as they come from a query string; an HTML form sends empty fields as
/// empty strings, which mean "any".
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TxnQuery {
    pub mid: Option<String>,
    /// `YYYY-MM-DD`, China time, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Yuan, `12.34`.
    pub amount: Option<String>,
    pub amount_fen: Option<String>,
    pub last4: Option<String>,
    pub rrn: Option<String>,
    pub tid: Option<String>,
    /// The terminal's trace number (凭证号 on the slip), up to 6 digits.
    pub stan: Option<String>,
    /// The issuer's authorisation code (授权码 on the slip).
    pub auth_code: Option<String>,
    /// A response code (field 39), e.g. `05`.
    pub code: Option<String>,
    /// A transaction state: `approved`, `declined`, ...
    pub status: Option<String>,
    /// The sales the dashboard's cards count ([`Outcome`]): `issuer-declined`,
    /// `host-declined`, `reversed-after-approval`.
    pub outcome: Option<String>,
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page language (pages only).
    pub lang: Option<String>,
}

/// A query or form field as given: trimmed, and `None` when absent or blank.
pub fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// One page of results, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct TxnPage {
    pub items: Vec<TxnSummary>,
    /// Pass as `cursor` for the next page; absent on the last page. A page may hold fewer
    /// items than asked for and still have one: the search read its budget of rows
    /// ([`SEARCH_SCAN_MAX`], shared by the merchants searched) without filling it.
    pub next_cursor: Option<String>,
}

/// Parses an optional integer parameter.
pub fn int_param(field: &Option<String>, name: &str) -> Result<Option<i64>, ApiError> {
    given(field)
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
        })
        .transpose()
}

/// The page size asked for, bounded.
pub fn limit_param(field: &Option<String>) -> Result<usize, ApiError> {
    let asked = int_param(field, "limit")?;
    match asked {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(n) if n >= 1 => Ok(usize::try_from(n)
            .unwrap_or(PAGE_LIMIT_MAX)
            .min(PAGE_LIMIT_MAX)),
        Some(_) => Err(ApiError::bad_request("limit must be at least 1")),
    }
}

/// Rows a search reads at most for one page, shared by the merchants it searches (a staff
/// search names none: every merchant's): past it the page ends early, with a cursor to go on
/// from (a filter that matches little in busy merchants' weeks). Each merchant searched reads
/// at least [`SEARCH_SCAN_MIN_PER_MERCHANT`], so a page always gets on.
pub const SEARCH_SCAN_MAX: usize = 100_000;
/// Rows a search reads at least per merchant for one page, however many merchants it searches.
pub const SEARCH_SCAN_MIN_PER_MERCHANT: usize = 100;
/// Rows read from the store at a time while searching.
const SEARCH_READ_ROWS: u32 = 1_000;

/// A place in the newest-first order: (received at, id).
type Place = (i64, i64);

/// A row's place in the newest-first order, and what a cursor names.
fn key(row: &TxnRow) -> Place {
    (row.received_at_ms, row.id)
}

/// A cursor is the (received at, id) of the last row of the previous page.
/// A search cursor: where the previous page ended, and the first millisecond of its window
/// when the caller gave no `from` (`ms.id` or `ms.id.from`).
fn parse_cursor(text: &str) -> Result<(Place, Option<i64>), ApiError> {
    let mut parts = text.split('.');
    let place = (|| Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?)))();
    let from = parts.next().map(str::parse).transpose().ok();
    match (place, from, parts.next()) {
        (Some(place), Some(from), None) => Ok((place, from)),
        _ => Err(ApiError::bad_request(
            "cursor: the next_cursor of the previous page",
        )),
    }
}

/// The cursor after `place`; with the window's start when it was the default one, so that
/// the next page searches the same days even when it is asked for after midnight (the default
/// window ends with today).
fn format_cursor((ms, id): Place, default_from_ms: Option<i64>) -> String {
    match default_from_ms {
        Some(from) => format!("{ms}.{id}.{from}"),
        None => format!("{ms}.{id}"),
    }
}

/// Transaction searches run at once in this process. A search may read
/// [`SEARCH_SCAN_MAX`] rows; run on the HTTP runtime's two workers, two of them in a loop (one
/// merchant's script) would hold every other user's pages and sign-ins behind them.
pub const SEARCHES_AT_ONCE: usize = 2;
/// How long a search waits for its turn before it is answered busy.
pub const SEARCH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

static SEARCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(SEARCHES_AT_ONCE);

/// Each searcher's own turn: a merchant's users share one, each member of the acquirer's staff
/// has one. A search takes its searcher's turn before one of the [`SEARCHES_AT_ONCE`], so one
/// merchant's parallel searches (a script, many tabs) wait on each other, hold one of those at
/// most, and cannot leave every other merchant's pages answered busy.
#[derive(Default)]
pub struct Searchers(std::sync::Mutex<BTreeMap<String, Arc<Semaphore>>>);

impl Searchers {
    fn turn_of(&self, who: &Principal) -> Arc<Semaphore> {
        let searcher = match &who.mid {
            Some(mid) => format!("merchant:{mid}"),
            None => format!("user:{}", who.user_id),
        };
        let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            turns
                .entry(searcher)
                .or_insert_with(|| Arc::new(Semaphore::new(1))),
        )
    }
}

/// [`search`] on a thread of the blocking pool, [`SEARCHES_AT_ONCE`] at a time in turn (the
/// queue is first come, first served) and one at a time per searcher ([`Searchers`]): the
/// runtime's workers go on serving everyone else meanwhile. Answered 503 `busy` when
/// [`SEARCH_WAIT`] passes without both turns.
pub async fn search_in_turn(web: &Web, who: &Principal, q: &TxnQuery) -> Result<TxnPage, ApiError> {
    let busy = "too many searches at once; retry shortly";
    let until = tokio::time::Instant::now() + SEARCH_WAIT;
    let own = tokio::time::timeout_at(until, web.searchers.turn_of(who).acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", busy).zh("系统繁忙，请稍后重试")
        })?;
    let (web, who, q) = (web.clone(), who.clone(), q.clone());
    crate::turns::on_turn_within(
        &SEARCHES,
        until.saturating_duration_since(tokio::time::Instant::now()),
        busy,
        move || {
            let _own = own;
            search(&web, &who, &q)
        },
    )
    .await?
}

/// Searches the transactions the principal may see, newest first, a page at a time.
pub fn search(web: &Web, who: &Principal, q: &TxnQuery) -> Result<TxnPage, ApiError> {
    let cursor = given(&q.cursor).map(parse_cursor).transpose()?;
    let mut filter = TxnFilter::parse(web, who, q)?;
    // The default window is the one the first page searched, not one moved on by midnight.
    let default_from = given(&q.from).is_none() && filter.from_ms != i64::MIN;
    if let Some((_, Some(from_ms))) = cursor.filter(|_| default_from) {
        filter.from_ms = from_ms.max(filter.to_ms - SEARCH_DAYS_MAX * MS_PER_DAY);
    }
    let limit = limit_param(&q.limit)?;
    let before = match cursor {
        Some((place, _)) => place.min((filter.to_ms, i64::MIN)),
        None => (filter.to_ms, i64::MIN),
    };
    let mut rows: Vec<TxnRow> = Vec::new();
    // Where a merchant's scan stopped short: rows older than the latest such point are not
    // all read yet, so the page ends there.
    let mut incomplete: Option<Place> = None;
    if let Some(rrn) = given(&q.rrn) {
        rows.extend(
            web.store
                .txn_by_rrn(rrn)?
                .filter(|r| filter.keeps(who, r) && key(r) < before),
        );
    } else {
        let mids: Vec<String> = match &filter.mid {
            Some(m) => vec![m.clone()],
            None => web.store.merchants()?.into_iter().map(|m| m.mid).collect(),
        };
        let mids: Vec<&String> = mids.iter().filter(|m| who.sees(m)).collect();
        // One budget for the page, shared: a staff search over many merchants must not read
        // the whole budget from each.
        let scan_max = (web.search_scan_max / mids.len().max(1)).max(SEARCH_SCAN_MIN_PER_MERCHANT);
        for mid in mids {
            let (found, stopped) =
                newest_matching(web, who, &filter, mid, before, limit + 1, scan_max)?;
            rows.extend(found);
            incomplete = incomplete.max(stopped);
        }
    }
    rows.retain(|r| incomplete.is_none_or(|stop| key(r) >= stop));
    rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(key)
    } else {
        incomplete
    };
    Ok(TxnPage {
        items: rows
            .iter()
            .map(|r| TxnSummary::of(&web.directory, r))
            .collect(),
        next_cursor: next_cursor
            .map(|place| format_cursor(place, default_from.then_some(filter.from_ms))),
    })
}

/// Up to `want` of a merchant's rows before `before` that pass the filter, newest first, and
/// where the scan stopped if it read `scan_max` rows first.
fn newest_matching(
    web: &Web,
    who: &Principal,
    filter: &TxnFilter<'_>,
    mid: &str,
    before: Place,
    want: usize,
    scan_max: usize,
) -> Result<(Vec<TxnRow>, Option<Place>), ApiError> {
    let mut found = Vec::new();
    let mut scanned = 0usize;
    let mut stopped = None;
    store::each_txn_of_merchant_before(
        web.store.as_ref(),
        mid,
        filter.from_ms,
        before,
        // Not more at a time than this merchant's share of the budget.
        u32::try_from(scan_max)
            .unwrap_or(u32::MAX)
            .min(SEARCH_READ_ROWS),
        |row| -> Result<_, ApiError> {
            scanned += 1;
            let place = key(&row);
            if filter.keeps(who, &row) {
                found.push(row);
                if found.len() >= want {
                    return Ok(ControlFlow::Break(()));
                }
            }
            if scanned >= scan_max {
                stopped = Some(place);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok((found, stopped))
}

/// What became of a sale (purchase or pre-authorisation), as the dashboard counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not approved, and the issuer was asked (it declined, did not answer in time, or answered
    /// what could not be read).
    IssuerDeclined,
    /// Not approved, and the issuer was never asked: the host refused it itself.
    HostDeclined,
    /// Approved by the issuer, then reversed.
    ReversedAfterApproval,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::IssuerDeclined => "issuer-declined",
            Outcome::HostDeclined => "host-declined",
            Outcome::ReversedAfterApproval => "reversed-after-approval",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::IssuerDeclined,
            Outcome::HostDeclined,
            Outcome::ReversedAfterApproval,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }

    /// What became of a sale of `kind` in `state`, answered `code`, sent to its issuer or
    /// not: `None` for a row that is not a sale, approved, or not decided yet. The one reading
    /// of the dashboard's counts (`count_into`) and of the search's `outcome`.
    fn of_sale(kind: TxnKind, state: TxnState, code: Option<&str>, sent: bool) -> Option<Outcome> {
        if !is_sale(kind) {
            return None;
        }
        match state {
            // Approved by the issuer, then reversed: its 00 would read "approved" among the
            // failures. A reversed sale the issuer never approved (timed out, unreadable,
            // refused, then reversed) is a failure under its own code.
            TxnState::Reversed if code == Some("00") => Some(Outcome::ReversedAfterApproval),
            TxnState::Declined | TxnState::TimedOut | TxnState::Failed | TxnState::Reversed => {
                Some(if sent {
                    Outcome::IssuerDeclined
                } else {
                    Outcome::HostDeclined
                })
            }
            _ => None,
        }
    }
}

/// What a search asks for, checked.
struct TxnFilter<'q> {
    outcome: Option<Outcome>,
    mid: Option<String>,
    from_ms: i64,
    to_ms: i64,
    amount_fen: Option<i64>,
    last4: Option<&'q str>,
    status: Option<TxnState>,
    tid: Option<&'q str>,
    stan: Option<u32>,
    auth_code: Option<&'q str>,
    code: Option<&'q str>,
}

impl<'q> TxnFilter<'q> {
    fn parse(web: &Web, who: &Principal, q: &'q TxnQuery) -> Result<Self, ApiError> {
        let mid = who.merchant_filter(given(&q.mid))?;
        let now_ms = web.clock.now_ms();
        let to_ms = match given(&q.to) {
            Some(t) => {
                parse_date(t).ok_or_else(|| {
                    ApiError::bad_request("to: YYYY-MM-DD")
                        .zh("结束日期请按 2026-11-23 的格式填写。")
                })? + MS_PER_DAY
            }
            None => cst_day_start(now_ms) + MS_PER_DAY,
        };
        let from_ms = match given(&q.from) {
            Some(f) => parse_date(f).ok_or_else(|| {
                ApiError::bad_request("from: YYYY-MM-DD").zh("开始日期请按 2026-11-23 的格式填写。")
            })?,
            None => to_ms - SEARCH_DAYS_DEFAULT * MS_PER_DAY,
        };
        if from_ms >= to_ms || to_ms - from_ms > SEARCH_DAYS_MAX * MS_PER_DAY {
            return Err(ApiError::bad_request(format!(
                "from must be before to, at most {SEARCH_DAYS_MAX} days apart"
            ))
            .zh(format!(
                "开始日期要早于结束日期，一次最多查 {SEARCH_DAYS_MAX} 天。"
            )));
        }
        // A reference number names one transaction, however old (one indexed read): the
        // default window of days is for browsing, not for the RRN on an old receipt.
        let from_ms = if given(&q.rrn).is_some() && given(&q.from).is_none() {
            i64::MIN
        } else {
            from_ms
        };
        let amount_fen = match (given(&q.amount), int_param(&q.amount_fen, "amount_fen")?) {
            (Some(y), _) => Some(parse_yuan(y).ok_or_else(|| {
                ApiError::bad_request("amount: 12.34").zh("金额请按元填写，如 12.34。")
            })?),
            (None, fen) => fen,
        };
        let last4 = given(&q.last4);
        if last4.is_some_and(|l| l.len() != 4 || !l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(ApiError::bad_request("last4: four digits").zh("卡号后四位请填 4 位数字。"));
        }
        // Checked before anything is searched or shown again: a card number typed into the
        // wrong box must not come back in the page, its address or an error.
        let alnum = |text: &str, most: usize| {
            !text.is_empty()
                && text.len() <= most
                && text.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if given(&q.rrn).is_some_and(|r| r.parse::<domain::Rrn>().is_err()) {
            return Err(ApiError::bad_request(
                "rrn: the 12 letters and digits of a reference number",
            )
            .zh("参考号是签购单上的 12 位字母和数字（不是卡号）。"));
        }
        if given(&q.tid).is_some_and(|t| !alnum(t, 8)) {
            return Err(
                ApiError::bad_request("tid: a terminal ID of up to 8 letters and digits")
                    .zh("终端号是最多 8 位的字母和数字。"),
            );
        }
        let outcome = given(&q.outcome)
            .map(|o| {
                Outcome::parse(o).ok_or_else(|| {
                    ApiError::bad_request(
                        "outcome: issuer-declined, host-declined or reversed-after-approval",
                    )
                    .zh("没有这种交易结果。")
                })
            })
            .transpose()?;
        let status = given(&q.status)
            .map(|s| {
                TxnState::parse(s).map_err(|_| {
                    ApiError::bad_request("status: unknown state").zh("没有这种交易状态。")
                })
            })
            .transpose()?;
        let stan = given(&q.stan)
            .map(|s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()) && *n > 0)
                    .ok_or_else(|| {
                        ApiError::bad_request("stan: the trace number, 1 to 6 digits")
                            .zh("凭证号（流水号）是 1 到 6 位数字。")
                    })
            })
            .transpose()?;
        if given(&q.auth_code).is_some_and(|a| !alnum(a, 6)) {
            return Err(ApiError::bad_request(
                "auth_code: the authorisation code, up to 6 letters and digits",
            )
            .zh("授权码是最多 6 位的字母和数字。"));
        }
        if given(&q.code).is_some_and(|c| c.len() != 2 || !alnum(c, 2)) {
            return Err(
                ApiError::bad_request("code: a response code of 2 letters or digits")
                    .zh("应答码是 2 位字母或数字，如 05。"),
            );
        }
        Ok(TxnFilter {
            outcome,
            mid,
            from_ms,
            to_ms,
            amount_fen,
            last4,
            status,
            tid: given(&q.tid),
            stan,
            auth_code: given(&q.auth_code),
            code: given(&q.code),
        })
    }

    fn keeps(&self, who: &Principal, r: &TxnRow) -> bool {
        self.mid.as_deref().is_none_or(|m| r.mid == m)
            && who.sees(&r.mid)
            && r.received_at_ms >= self.from_ms
            && r.received_at_ms < self.to_ms
            && self.amount_fen.is_none_or(|a| r.amount_fen == a)
            && self
                .last4
                .is_none_or(|l| r.pan.as_ref().is_some_and(|p| p.last4 == l))
            && self.status.is_none_or(|s| r.state == s)
            && self.tid.is_none_or(|t| r.tid == t)
            && self.stan.is_none_or(|s| r.stan == s)
            && self
                .auth_code
                .is_none_or(|a| r.auth_code.as_deref().map(str::trim) == Some(a))
            && self
                .code
                .is_none_or(|c| r.response_code.as_deref() == Some(c))
            && self.outcome.is_none_or(|o| {
                Outcome::of_sale(
                    r.kind,
                    r.state,
                    r.response_code.as_deref(),
                    r.sent_at_ms.is_some(),
                ) == Some(o)
            })
    }
}

/// A transaction the principal may see, by id.
pub fn visible_txn(web: &Web, who: &Principal, id: i64) -> Result<TxnRow, ApiError> {
    let row = web
        .store
        .txn(id)?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    who.scope(&row.mid, "transaction")?;
    Ok(row)
}

/// Whether a row is a sale-like request whose approval counts towards the approval rate.
fn is_sale(kind: TxnKind) -> bool {
    matches!(kind, TxnKind::Purchase | TxnKind::PreAuth)
}

fn is_approved(state: TxnState) -> bool {
    matches!(
        state,
        TxnState::Approved | TxnState::Completed | TxnState::Voided
    )
}

/// One merchant's day.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DayStats {
    pub date: String,
    /// Approved purchases (and completions), in fen.
    pub volume_fen: i64,
    /// Approved purchases and pre-authorisations.
    pub approved: u64,
    pub declined: u64,
    /// Sales that got no answer or failed.
    pub failed: u64,
    /// Sales approved and then reversed (the terminal never saw the answer, or reversed it):
    /// nothing charged. Not among the declines by code, whose code (00) would read "approved".
    pub reversed: u64,
    /// Approved / (approved + declined + failed + reversed), per mille; `None` on a day
    /// without sales.
    pub approval_per_mille: Option<u64>,
    /// Declines by response code, with the count.
    pub declines_by_code: BTreeMap<String, u64>,
    /// Of those, the ones the host answered itself without asking the issuer (its risk rules,
    /// the merchant's or terminal's set-up, a card it cannot route), by response code.
    pub host_declines_by_code: BTreeMap<String, u64>,
    /// Declined or failed sales per CST hour.
    pub declines_by_hour: Vec<u64>,
    /// Reversals still waiting for their issuer.
    pub reversals_pending: u64,
}

/// Reversals an issuer refused other than with 25 (it never had the request): what the issuer
/// did stands, for an operator to take up (the console lists them, `/metrics` counts them).
/// How many there are, and the newest `limit` of them, read as such (they never leave that
/// state, so they only grow).
pub fn refusals_standing(web: &Web, limit: u32) -> Result<(u64, Vec<SafItem>), store::StoreError> {
    Ok((
        web.store.count_reversals_refused_standing()?,
        web.store.reversals_refused_standing(limit)?,
    ))
}

/// Attempts after which a reversal still unacknowledged is listed for an operator: with the
/// queue's backoff (1 s doubling to a minute) about five minutes of resending.
pub const REVERSAL_STUCK_ATTEMPTS: u32 = 10;

/// Reversals resent `REVERSAL_STUCK_ATTEMPTS` times or more and still not acknowledged (an
/// issuer answering 96 or 91 each time, a link this host no longer has, a reversal it cannot
/// rebuild): resent for ever otherwise with nobody told, for an operator to take up.
/// How many there are, and the oldest `limit` of them, read as such: an issuer's outage
/// queues tens of thousands, and that is when operators look.
pub fn reversals_stuck(web: &Web, limit: u32) -> Result<(u64, Vec<SafItem>), store::StoreError> {
    Ok((
        web.store
            .count_reversals_attempted(SafState::Pending, REVERSAL_STUCK_ATTEMPTS)?,
        web.store
            .reversals_attempted(SafState::Pending, REVERSAL_STUCK_ATTEMPTS, limit)?,
    ))
}

/// Today's numbers for `mid`.
pub fn day_stats(web: &Web, mid: &str) -> Result<DayStats, ApiError> {
    let start = cst_day_start(web.clock.now_ms());
    let mut stats = DayStats {
        date: format_date(start),
        declines_by_hour: vec![0; 24],
        ..DayStats::default()
    };
    // Counted in the database, the whole day however busy.
    for tally in web
        .store
        .tally_of_merchant(mid, start, start + MS_PER_DAY)?
    {
        count_into(&mut stats, &tally);
    }
    let decided = stats.approved + stats.declined + stats.failed + stats.reversed;
    stats.approval_per_mille = (decided > 0).then(|| stats.approved * 1000 / decided);
    stats.reversals_pending =
        web.store
            .count_reversals_of_merchant(SafState::Pending, mid, start, start + MS_PER_DAY)?;
    Ok(stats)
}

/// Adds a tally of the day's rows to its numbers.
fn count_into(stats: &mut DayStats, tally: &TxnTally) {
    let count = u64::try_from(tally.count).unwrap_or(0);
    // What was sold and stands: a sale voided since charged nothing, as a reversed one.
    if matches!(tally.kind, TxnKind::Purchase | TxnKind::Completion)
        && matches!(tally.state, TxnState::Approved | TxnState::Completed)
    {
        stats.volume_fen += tally.amount_fen;
    }
    if !is_sale(tally.kind) {
        return;
    }
    if is_approved(tally.state) {
        stats.approved += count;
    }
    let outcome = Outcome::of_sale(
        tally.kind,
        tally.state,
        tally.response_code.as_deref(),
        tally.sent,
    );
    let failed = match outcome {
        Some(Outcome::ReversedAfterApproval) => {
            stats.reversed += count;
            false
        }
        Some(Outcome::IssuerDeclined | Outcome::HostDeclined) => {
            if tally.state == TxnState::Declined {
                stats.declined += count;
            } else {
                stats.failed += count;
            }
            true
        }
        None => false,
    };
    if failed {
        let code = tally
            .response_code
            .clone()
            .unwrap_or_else(|| "--".to_owned());
        if outcome == Some(Outcome::HostDeclined) {
            *stats.host_declines_by_code.entry(code.clone()).or_insert(0) += count;
        }
        *stats.declines_by_code.entry(code).or_insert(0) += count;
        let hour = usize::try_from(tally.hour).unwrap_or(usize::MAX);
        if let Some(slot) = stats.declines_by_hour.get_mut(hour) {
            *slot += count;
        }
    }
}

/// What a terminal's week in the journal counts towards its health.
#[derive(Clone, Debug, Default)]
struct TerminalCounts {
    transactions: u64,
    /// Requests refused for a bad MAC (A0).
    mac_failures: u64,
    /// Batch or sign-in out of step (77).
    sign_in_problems: u64,
    timeouts: u64,
    reversals: u64,
}

impl TerminalCounts {
    fn add(&mut self, tally: &TxnTally) {
        let count = u64::try_from(tally.count).unwrap_or(0);
        self.transactions += count;
        match tally.response_code.as_deref() {
            Some("A0") => self.mac_failures += count,
            Some("77") => self.sign_in_problems += count,
            _ => {}
        }
        if tally.state == TxnState::TimedOut || tally.response_code.as_deref() == Some("98") {
            self.timeouts += count;
        }
        if tally.kind == TxnKind::Reversal {
            self.reversals += count;
        }
    }
}

/// One terminal's health over the last [`HEALTH_DAYS`] days.
#[derive(Clone, Debug, Serialize)]
pub struct TerminalHealth {
    pub tid: String,
    pub mid: String,
    pub status: String,
    pub key_scheme: String,
    pub mac_algorithm: String,
    pub batch_no: u32,
    pub signed_in: bool,
    pub last_sign_in_ms: Option<i64>,
    pub transactions: u64,
    /// Requests refused for a bad MAC (A0).
    pub mac_failures: u64,
    /// Requests the issuer did not answer in time.
    pub timeouts: u64,
    /// Reversals the terminal sent (it did not see an answer, or the cashier cancelled).
    pub reversals: u64,
    /// Requests refused because the terminal was not signed in or out of step (77).
    pub sign_in_problems: u64,
    /// From the last frame header: application type (60 magstripe, 61 IC), software version
    /// and sub-version; `None` until the terminal has sent a request since health was kept.
    pub application_type: Option<u32>,
    pub software_version: Option<u32>,
    pub software_sub_version: Option<u32>,
    /// Terminal clock (fields 12/13) less host China time, seconds; `None` if never sent.
    pub clock_drift_s: Option<i64>,
    /// Chip cards read by magstripe (60.5 = 2) since health was kept.
    pub fallbacks: u32,
    /// Problems found, each with its fix, in both languages.
    pub problems: Vec<Problem>,
}

/// Something wrong and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub key: &'static str,
    pub zh: &'static str,
    pub en: &'static str,
}

/// A terminal clock further off than this gets a problem: field 13 dates and same-day voids and
/// reversals go wrong, and cashiers' receipts disagree with the host's records.
pub const CLOCK_DRIFT_MAX_S: i64 = 300;

/// From this many chip-to-magstripe fallbacks on one terminal it is the reader, not a card
/// (the diagnosis KB's repeated-fallback case); one or two are a damaged chip now and then.
pub const FALLBACKS_REPEATED_MIN: u32 = 3;

/// The terminals `who` may see, of merchant `mid` when one is named: read by merchant then (a
/// merchant's pages read its own terminals, not the acquirer's every one).
pub fn visible_terminals(
    web: &Web,
    who: &Principal,
    mid: Option<&str>,
) -> Result<Vec<store::TerminalRow>, ApiError> {
    let terminals = match mid {
        Some(mid) => web.store.terminals_of_merchant(mid)?,
        None => web.store.terminals()?,
    };
    Ok(terminals.into_iter().filter(|t| who.sees(&t.mid)).collect())
}

/// Health of every terminal the principal may see.
pub fn terminal_health(
    web: &Web,
    who: &Principal,
    mid: Option<&str>,
) -> Result<Vec<TerminalHealth>, ApiError> {
    let mid = who.merchant_filter(mid)?;
    let now_ms = web.clock.now_ms();
    let from_ms = cst_day_start(now_ms) - (HEALTH_DAYS - 1) * MS_PER_DAY;
    let mut by_merchant: BTreeMap<String, BTreeMap<String, TerminalCounts>> = BTreeMap::new();
    let mut out = Vec::new();
    let reported = match mid.as_deref() {
        Some(mid) => web.store.terminal_health_of_merchant(mid)?,
        None => web.store.terminal_health()?,
    };
    let reported: BTreeMap<String, store::TerminalHealthRow> =
        reported.into_iter().map(|h| (h.tid.clone(), h)).collect();
    for t in visible_terminals(web, who, mid.as_deref())? {
        if !by_merchant.contains_key(&t.mid) {
            // The merchant's whole week, counted per terminal in the database.
            let mut counts: BTreeMap<String, TerminalCounts> = BTreeMap::new();
            for tally in web
                .store
                .tally_of_merchant(&t.mid, from_ms, now_ms + MS_PER_DAY)?
            {
                counts.entry(tally.tid.clone()).or_default().add(&tally);
            }
            by_merchant.insert(t.mid.clone(), counts);
        }
        let counts = by_merchant
            .get(&t.mid)
            .and_then(|c| c.get(&t.tid))
            .cloned()
            .unwrap_or_default();
        let TerminalCounts {
            transactions,
            mac_failures,
            sign_in_problems,
            timeouts,
            reversals,
        } = counts;
        let mut problems = Vec::new();
        let signed_in = t.working_keys.is_some();
        // A terminal the acquirer suspended or closed is answered 58 whatever it does: first,
        // since nothing else on the list matters until that is lifted.
        match t.status {
            store::Status::Suspended => problems.push(Problem {
                key: "suspended",
                zh: "终端已被收单机构暂停，所有交易都会被拒（58）：请联系收单机构了解原因并申请恢复。",
                en: "Suspended by the acquirer: every transaction is refused (58). Ask the acquirer why and to lift it.",
            }),
            store::Status::Closed => problems.push(Problem {
                key: "closed",
                zh: "终端已注销，不能再收款：如需继续使用请联系收单机构。",
                en: "Closed: it can take no payments. Ask the acquirer to use it again.",
            }),
            store::Status::Active => {}
        }
        if !signed_in {
            problems.push(Problem {
                key: "not_signed_in",
                zh: "终端未签到：在终端上执行“签到”后再收款。",
                en: "Not signed in: run sign-in on the terminal before taking payments.",
            });
        }
        if mac_failures > 0 {
            problems.push(Problem {
                key: "mac_failures",
                zh: "MAC 校验失败：终端重新签到以更新工作密钥；仍失败请联系收单机构重灌主密钥。",
                en: "MAC failures: sign in again to refresh the working keys; if it persists, ask the acquirer to reload the master key.",
            });
        }
        if sign_in_problems > 0 {
            problems.push(Problem {
                key: "batch_or_sign_in",
                zh: "批次或签到不同步（77）：终端结算后重新签到。",
                en: "Batch or sign-in out of step (77): settle the terminal, then sign in again.",
            });
        }
        if timeouts > 0 {
            problems.push(Problem {
                key: "timeouts",
                zh: "发卡行超时：这些交易已自动冲正，发卡行确认冲正后任何扣款都会退回；检查终端网络，确认上一笔没有成功后再重新发起交易。",
                en: "Issuer timeouts: these were reversed automatically, and any debit is returned once the issuer acknowledges the reversal; check the terminal's network, and that the earlier attempt did not succeed, before retrying the sale.",
            });
        }
        if reversals > 0 && reversals * 10 > transactions {
            problems.push(Problem {
                key: "reversals",
                zh: "冲正偏多：终端经常收不到应答，检查通讯线路和超时设置。",
                en: "Many reversals: the terminal often misses answers; check its line and timeout setting.",
            });
        }
        let report = reported.get(&t.tid);
        let clock_drift_s = report.and_then(|h| h.clock_drift_s);
        if clock_drift_s.is_some_and(|d| d.abs() > CLOCK_DRIFT_MAX_S) {
            problems.push(Problem {
                key: "clock_drift",
                zh: "终端时钟偏差超过 5 分钟：请在终端管理中同步时间，然后重新签到。",
                en: "Terminal clock is more than 5 minutes off China time: sync the terminal's time, then sign in again.",
            });
        }
        let fallbacks = report.map_or(0, |h| h.fallbacks);
        if fallbacks >= FALLBACKS_REPEATED_MIN {
            let d = domain::diagnosis::diagnose_failure(
                domain::diagnosis::FailureKind::RepeatedFallback,
            );
            problems.push(Problem {
                key: "fallbacks",
                zh: d.title.zh,
                en: d.title.en,
            });
            problems.extend(d.merchant_steps.iter().map(|s| Problem {
                key: "fallbacks_fix",
                zh: s.zh,
                en: s.en,
            }));
        }
        out.push(TerminalHealth {
            tid: t.tid.clone(),
            mid: t.mid.clone(),
            status: t.status.as_str().to_owned(),
            key_scheme: t.key_scheme.clone(),
            mac_algorithm: t.mac_algorithm.clone(),
            batch_no: t.batch_no,
            signed_in,
            last_sign_in_ms: t.last_sign_in_ms,
            transactions,
            mac_failures,
            timeouts,
            reversals,
            sign_in_problems,
            application_type: report.map(|h| h.application_type),
            software_version: report.map(|h| h.software_version),
            software_sub_version: report.map(|h| h.sub_version),
            clock_drift_s,
            fallbacks,
            problems,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user_id: i64, mid: Option<&str>) -> Principal {
        Principal {
            user_id,
            username: format!("u{user_id}"),
            display_name: String::new(),
            role: if mid.is_some() {
                store::web::Role::Merchant
            } else {
                store::web::Role::Operator
            },
            mid: mid.map(str::to_owned),
            csrf: None,
            must_set_password: false,
            session_digest: None,
        }
    }

    /// One turn per merchant, whichever of its users asks; staff each their own.
    #[test]
    fn a_merchants_users_share_one_search_turn() {
        let searchers = Searchers::default();
        let (tea, tea_too) = (principal(1, Some("m1")), principal(2, Some("m1")));
        let (book, ops, ops_too) = (
            principal(3, Some("m2")),
            principal(4, None),
            principal(5, None),
        );
        let held = searchers.turn_of(&tea).try_acquire_owned().unwrap();
        assert!(searchers.turn_of(&tea_too).try_acquire_owned().is_err());
        let others =
            [&book, &ops, &ops_too].map(|who| searchers.turn_of(who).try_acquire_owned().unwrap());
        assert!(searchers.turn_of(&ops).try_acquire_owned().is_err());
        drop(held);
        assert!(searchers.turn_of(&tea_too).try_acquire_owned().is_ok());
        drop(others);
    }

    #[test]
    fn dates_round_trip_in_china_time() {
        let ms = parse_date("2026-11-23").unwrap();
        assert_eq!(format_date(ms), "2026-11-23");
        assert_eq!(format_date(ms + MS_PER_DAY - 1), "2026-11-23");
        assert_eq!(cst_day_start(ms + 5), ms);
        assert!(parse_date("2026-02-30").is_none());
        assert!(parse_date("2026-1-1x").is_none());
    }

    #[test]
    fn times_at_the_ends_of_the_range_do_not_overflow() {
        for ms in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            assert!(cst_day_start(ms) <= ms.saturating_add(CST_OFFSET_MS));
            assert!(!format_date(ms).is_empty());
        }
    }

    #[test]
    fn yuan_parses_at_most_two_decimals() {
        assert_eq!(parse_yuan("12.34"), Some(1234));
        assert_eq!(parse_yuan("12.3"), Some(1230));
        assert_eq!(parse_yuan("12"), Some(1200));
        assert_eq!(parse_yuan("1.234"), None);
        assert_eq!(parse_yuan("-1"), None);
        assert_eq!(parse_yuan(".5"), None);
        assert_eq!(yuan(1234), "12.34");
        assert_eq!(yuan(-5), "-0.05");
    }
}
