//! Server-rendered pages: sign-in, the merchant portal (dashboard, transactions, detail with
//! diagnosis, timeline and evidence, cases, terminals) and the operator console (queues). Every
//! value goes through [`esc`]; every form that changes something carries the session's CSRF token.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use domain::diagnosis::{self, Lang};
use resolve::cases::{Case, CaseKind};
use resolve::date_text;
use store::{TxnKind, TxnState};

use crate::Web;
use crate::api::{self, OpenCase};
use crate::auth::{self, Principal};
use crate::chart;
use crate::error::ApiError;
use crate::html::{LANG_COOKIE, esc, lang_of, page, t, url_escape};
use crate::query::{self, TxnQuery, format_date, yuan};

pub fn router() -> Router<Web> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/portal", get(dashboard))
        .route("/portal/transactions", get(transactions))
        .route("/portal/transactions/{id}", get(transaction))
        .route("/portal/transactions/{id}/cases", post(open_case))
        .route("/portal/transactions/{id}/evidence", get(evidence))
        .route("/portal/cases", get(cases))
        .route("/portal/cases/{id}", get(case))
        .route("/portal/cases/{id}/entries", post(add_entry))
        .route("/portal/terminals", get(terminals))
        .route("/portal/duplicates", get(duplicates))
        .route("/portal/settlement", get(settlement_page))
        .route("/portal/settlement/account", post(bind_account))
        .route(
            "/console/account-changes/{id}/confirm",
            post(confirm_change),
        )
        .route("/console/account-changes/{id}/reject", post(reject_change))
        .route("/console/merchants/{mid}/approve", post(approve_merchant))
        .route("/console/risk/alerts/{id}/resolve", post(resolve_alert))
        .route("/console", get(console))
        .route("/console/cases/{id}/approve-refund", post(approve_refund))
        .route("/console/cases/{id}/transition", post(transition_case))
        .route("/console/users", get(users))
        .route("/console/users/{id}/unlock", post(unlock_user))
        .route("/console/users/{id}/disable", post(disable_user))
        .route("/console/users/{id}/enable", post(enable_user))
        .route("/console/users/{id}/password", post(reset_password))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/console/audit", get(audit_log))
}

type Params = HashMap<String, String>;

/// A form holding passwords: its values are wiped when the handler is done with it.
struct WipedForm(Params);

impl std::ops::Deref for WipedForm {
    type Target = Params;
    fn deref(&self) -> &Params {
        &self.0
    }
}

impl Drop for WipedForm {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// The request's language and whether the answer must remember a newly chosen one.
struct Ctx {
    lang: Lang,
    remember: Option<&'static str>,
    /// Where the page's language switch goes (`html::lang_switch_href`).
    switch_href: String,
    /// What every cookie set in the answer carries after its path ([`Web::cookie_attributes`]).
    cookies: &'static str,
    /// The session cookie's name ([`auth::session_cookie_name`]).
    session_cookie: &'static str,
    /// The login form's anti-forgery cookie's name ([`auth::login_csrf_cookie_name`]).
    login_csrf_cookie: &'static str,
}

/// A GET page's context: its query is kept by the language switch.
fn ctx(web: &Web, headers: &HeaderMap, params: &Params) -> Ctx {
    // Who asks, read only when a merchant ID is to be said back.
    let viewer = params
        .keys()
        .any(|k| mid_in(k, "").is_some())
        .then(|| auth::principal_of(web, headers).ok().flatten());
    let mut query: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.clone(), said_back(web, viewer.as_ref(), k, v)))
        .collect();
    query.sort();
    context(web, headers, params, Some(&query))
}

/// The merchant ID a page parameter carries: `mid`, or the second half of a payouts cursor.
fn mid_in<'a>(key: &str, value: &'a str) -> Option<&'a str> {
    match key {
        "mid" => Some(value),
        "payouts_before" => Some(value.split_once(':').map_or("", |(_, mid)| mid)),
        _ => None,
    }
}

/// A parameter's value as the language switch says it back: a merchant ID (`mid`, the second
/// half of a payouts cursor) goes whole only when it names a merchant the viewer may see (any,
/// for staff; its own, for a merchant's user); anything else there, a card number typed as a
/// merchant ID or another merchant's ID, is masked like any other value, so that a page does
/// not tell a merchant which other IDs are merchants.
fn said_back(
    web: &Web,
    viewer: Option<&Option<auth::Principal>>,
    key: &str,
    value: &str,
) -> String {
    let Some(mid) = mid_in(key, value) else {
        return value.to_owned();
    };
    let may_see = match viewer.and_then(Option::as_ref) {
        Some(who) if who.is_staff() => crate::ops::known_merchant(web, mid).is_ok(),
        Some(who) => who.mid.as_deref() == Some(mid),
        None => false,
    };
    if may_see {
        value.to_owned()
    } else {
        domain::mask_card_numbers(value).into_owned()
    }
}

/// The context of the answer to a form: its address takes no GET, so the language switch goes
/// to the home page.
fn form_ctx(web: &Web, headers: &HeaderMap) -> Ctx {
    context(web, headers, &Params::new(), None)
}

fn context(
    web: &Web,
    headers: &HeaderMap,
    params: &Params,
    query: Option<&[(String, String)]>,
) -> Ctx {
    let asked = params.get("lang").map(String::as_str);
    let lang = lang_of(headers, asked);
    let remember = asked.map(|_| match lang {
        Lang::Zh => "zh",
        Lang::En => "en",
    });
    Ctx {
        lang,
        remember,
        switch_href: crate::html::lang_switch_href(lang, query),
        cookies: web.cookie_attributes(),
        session_cookie: auth::session_cookie_name(web.secure_cookies),
        login_csrf_cookie: auth::login_csrf_cookie_name(web.secure_cookies),
    }
}

/// No script runs on these pages, nothing loads from elsewhere, no one frames them, and a
/// page with merchant data is not kept in a shared cache.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(c: &Ctx, status: StatusCode, body: String) -> Response {
    let mut response = (status, axum::response::Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(lang) = c.remember {
        let value = format!(
            "{LANG_COOKIE}={lang}; Path=/{}; Max-Age=31536000",
            c.cookies
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn nav(c: &Ctx, who: &Principal) -> Vec<(&'static str, &'static str)> {
    let l = c.lang;
    if who.is_staff() {
        let mut links = vec![
            ("/console", t(l, "运营台", "Console")),
            ("/portal/transactions", t(l, "交易", "Transactions")),
            ("/portal/cases", t(l, "工单", "Cases")),
            ("/portal/terminals", t(l, "终端", "Terminals")),
            ("/portal/settlement", t(l, "结算", "Settlement")),
        ];
        if who.role == store::web::Role::Admin {
            links.push(("/console/users", t(l, "用户", "Users")));
            links.push(("/console/audit", t(l, "审计日志", "Audit log")));
        }
        links.push(("/account", t(l, "账户", "Account")));
        links
    } else {
        vec![
            ("/portal", t(l, "概览", "Dashboard")),
            ("/portal/transactions", t(l, "交易", "Transactions")),
            ("/portal/cases", t(l, "工单", "Cases")),
            ("/portal/duplicates", t(l, "重复扣款", "Duplicates")),
            ("/portal/settlement", t(l, "结算", "Settlement")),
            ("/portal/terminals", t(l, "终端", "Terminals")),
            ("/account", t(l, "账户", "Account")),
        ]
    }
}

fn render(c: &Ctx, who: &Principal, title: &str, body: &str) -> Response {
    let nav = nav(c, who);
    let page = page(
        c.lang,
        &c.switch_href,
        title,
        &nav,
        Some(&who.display_name),
        who.csrf.as_deref(),
        body,
    );
    html(c, StatusCode::OK, page)
}

fn error_page(c: &Ctx, who: Option<&Principal>, error: &ApiError) -> Response {
    // What happened and what to do, in the page's language; the code and the API's (English)
    // message beside it, for support.
    let body = format!(
        "<div class=\"err\" id=\"error\"><b>{}</b><br><small>{} · {}</small></div>",
        esc(error_title(c.lang, error.code)),
        esc(error.code),
        esc(error.detail(c.lang))
    );
    let nav = who.map(|w| nav(c, w)).unwrap_or_default();
    // Not the query that was refused: it may hold what the error must not say back.
    let switch_href = if c.switch_href.starts_with('/') {
        c.switch_href.clone()
    } else {
        crate::html::lang_switch_href(c.lang, Some(&[]))
    };
    let page = page(
        c.lang,
        &switch_href,
        t(c.lang, "出错了", "Error"),
        &nav,
        who.map(|w| w.display_name.as_str()),
        who.and_then(|w| w.csrf.as_deref()),
        &body,
    );
    html(c, error.status, page)
}

/// An error code's title for a page: what happened, and what to do.
fn error_title(l: Lang, code: &str) -> &'static str {
    match code {
        "unauthorized" => t(l, "请先登录", "Please sign in"),
        "bad_credentials" => t(l, "用户名或密码不正确", "Wrong username or password"),
        "locked" => t(
            l,
            "该用户已锁定，请稍后再试或请管理员解锁",
            "This user is locked: wait, or ask an administrator",
        ),
        "too_many_sign_ins" => t(
            l,
            "此地址登录失败次数过多，请稍后再试",
            "Too many wrong sign-ins from this address: try again later",
        ),
        "forbidden" => t(l, "您无权执行此操作", "You may not do this"),
        "not_found" => t(l, "未找到", "Not found"),
        "bad_request" => t(
            l,
            "输入有误，请检查后重试",
            "Something entered is not right: check it and try again",
        ),
        "csrf" => t(
            l,
            "页面已过期，请刷新后重试",
            "This page has expired: reload it and try again",
        ),
        "conflict" | "changed_meanwhile" => t(
            l,
            "已被他人修改，请刷新后重试",
            "Changed by someone else meanwhile: reload and try again",
        ),
        "illegal_transition" => t(
            l,
            "当前状态下不能这样操作",
            "Not possible in its present state",
        ),
        "exceeds_remaining" => t(l, "超过可退金额", "More than is left to refund"),
        "already_refunded" => t(l, "已经退过款", "Already refunded"),
        "refund_failed" => t(l, "退货未成功", "The refund did not go through"),
        "refund_in_doubt" => t(
            l,
            "上次退货结果未明，待冲正确认后再批准",
            "The last refund's outcome is not known yet: approve again once its reversal is acknowledged",
        ),
        "application_waiting" => t(
            l,
            "这笔交易已有一份退货申请在等待处理",
            "A refund application of this sale is already waiting for a decision",
        ),
        "same_user" => t(l, "需由另一位人员处理", "Someone else must do this"),
        "password_change_required" => t(l, "请先设置您自己的密码", "Set your own password first"),
        "bad_account" => t(l, "账户信息有误", "The account details are not right"),
        "too_many_open_cases" => t(l, "未结工单过多", "Too many cases open"),
        "not_redrivable" => t(
            l,
            "该通知不能重发",
            "This notification cannot be sent again",
        ),
        "busy" => t(l, "系统繁忙，请稍后重试", "Busy: try again shortly"),
        "too_large" => t(l, "提交的内容太大", "What was sent is too large"),
        _ => t(
            l,
            "系统出错，请稍后重试",
            "Something went wrong: try again shortly",
        ),
    }
}

/// The signed-in page user, or a redirect to the sign-in page (or, for a user whose password
/// an admin set, to the account page).
// The error is the response to send at once; it is built once per request, so its size is moot.
#[allow(clippy::result_large_err)]
fn page_user(web: &Web, headers: &HeaderMap, c: &Ctx) -> Result<Principal, Response> {
    let who = page_user_any(web, headers, c)?;
    // A password an admin set: the account page first, to set one's own.
    if who.must_set_password {
        return Err(redirect("/account"));
    }
    Ok(who)
}

/// The signed-in user of a page session, whose password may still be one an admin set: for
/// the account page, its password form and signing out.
#[allow(clippy::result_large_err)]
fn page_user_any(web: &Web, headers: &HeaderMap, c: &Ctx) -> Result<Principal, Response> {
    match auth::principal_of(web, headers) {
        Ok(Some(p)) if p.csrf.is_some() => Ok(p),
        Ok(_) => Err(redirect("/login")),
        Err(e) => Err(error_page(c, None, &e)),
    }
}

/// Runs a page body, turning an API error into an error page.
fn respond(c: &Ctx, who: &Principal, result: Result<(String, String), ApiError>) -> Response {
    match result {
        Ok((title, body)) => render(c, who, &title, &body),
        Err(e) => error_page(c, Some(who), &e),
    }
}

async fn home(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let to = match auth::principal_of(&web, &headers) {
        Ok(Some(p)) if p.is_staff() => "/console",
        Ok(Some(_)) => "/portal",
        _ => "/login",
    };
    // A language asked for here (a form answer's language switch) goes along.
    match params.get("lang").map(String::as_str) {
        Some(lang @ ("zh" | "en")) => redirect(&format!("{to}?lang={lang}")),
        _ => redirect(to),
    }
}

async fn login_form(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    login_page(&c, None, "")
}

/// The sign-in form, with why the last try failed and the username it gave (kept, so only the
/// password is typed again).
fn login_page(c: &Ctx, failed: Option<&str>, username: &str) -> Response {
    let l = c.lang;
    let Ok(csrf) = auth::random_token() else {
        return error_page(c, None, &ApiError::internal("randomness"));
    };
    let failed = failed.map_or_else(String::new, |m| {
        format!("<div class=\"err\" id=\"error\">{}</div>", esc(m))
    });
    let body = format!(
        "<h1>{}</h1>{failed}<form method=\"post\" action=\"/login\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p><label>{} <input id=\"username\" name=\"username\" autocomplete=\"username\" value=\"{}\"></label></p>\
         <p><label>{} <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\
         <p><button id=\"login\">{}</button></p></form>",
        t(l, "登录", "Sign in"),
        t(l, "用户名", "Username"),
        esc(&domain::mask_card_numbers(username)),
        t(l, "密码", "Password"),
        t(l, "登录", "Sign in"),
    );
    let mut response = html(
        c,
        if failed.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        page(
            l,
            &c.switch_href,
            t(l, "登录", "Sign in"),
            &[],
            None,
            None,
            &body,
        ),
    );
    // `Path=/`, as a `__Host-` cookie must have it; `/login` for the plain one, as it always
    // had (a browser still holding one of that path would send it first).
    let path = if c.login_csrf_cookie == auth::SECURE_LOGIN_CSRF_COOKIE {
        "/"
    } else {
        "/login"
    };
    let cookie = format!(
        "{}={csrf}; Path={path}; HttpOnly{}",
        c.login_csrf_cookie, c.cookies
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

async fn login(
    State(web): State<Web>,
    client: crate::clients::ClientAddr,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let form = WipedForm(form);
    let c = form_ctx(&web, &headers);
    let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
    let expected = auth::cookie(&headers, c.login_csrf_cookie).unwrap_or_default();
    let username = form.get("username").map(String::as_str).unwrap_or_default();
    // A sign-in page that had expired (opened in another tab, say): a fresh one, not a dead
    // end that a reload only sends again.
    if sent.is_empty() || auth::token_digest(sent) != auth::token_digest(expected) {
        return login_page(
            &c,
            Some(t(
                c.lang,
                "登录页面已过期，请重新输入密码后登录。",
                "The sign-in page had expired: enter your password again.",
            )),
            username,
        );
    }
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    let signed = match auth::authenticate_from(&web, client, username, password).await {
        Ok(auth::FromClient::Checked(signed)) => Ok(signed),
        Ok(auth::FromClient::TooMany { minutes }) => {
            let message = match c.lang {
                Lang::Zh => format!("此地址登录失败次数过多，请 {minutes} 分钟后再试。"),
                Lang::En => format!(
                    "Too many wrong sign-ins from this address: try again in {minutes} minutes."
                ),
            };
            return login_page(&c, Some(&message), username);
        }
        Err(e) => Err(e),
    };
    let user = match signed {
        Ok(auth::SignIn::Accepted(user)) => user,
        Ok(auth::SignIn::Refused) => {
            return login_page(
                &c,
                Some(t(
                    c.lang,
                    "用户名或密码不正确",
                    "Wrong username or password",
                )),
                username,
            );
        }
        Ok(auth::SignIn::Locked { minutes }) => {
            let message = match c.lang {
                Lang::Zh => format!(
                    "密码连续错误 {} 次，该用户已锁定。请 {minutes} 分钟后再试，或请管理员解锁。",
                    auth::LOGIN_FAILURES_MAX
                ),
                Lang::En => format!(
                    "{} wrong passwords in a row: this user is locked. Try again in {minutes} \
                     minutes, or ask an admin to unlock it.",
                    auth::LOGIN_FAILURES_MAX
                ),
            };
            return login_page(&c, Some(&message), username);
        }
        Err(e) => return error_page(&c, None, &e),
    };
    let token = match auth::open_session(&web, &user).await {
        Ok(opened) => opened.token,
        Err(e) => return error_page(&c, None, &e),
    };
    auth::audit(
        &web,
        &user.username,
        "session.open",
        &format!("user:{}", user.id),
        None,
        None,
    )
    .await;
    let mut response = redirect(if user.role == store::web::Role::Merchant {
        "/portal"
    } else {
        "/console"
    });
    if let Ok(value) =
        HeaderValue::from_str(&auth::session_cookie(c.session_cookie, &token, c.cookies))
    {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

async fn logout(State(web): State<Web>, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let c = form_ctx(&web, &headers);
    let who = match page_user_any(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
    if let Err(e) = who.check_csrf(sent) {
        return error_page(&c, Some(&who), &e);
    }
    if let Err(e) = auth::close_session(&web, &who).await {
        return error_page(&c, Some(&who), &e);
    }
    let mut response = redirect("/login");
    let clear = format!(
        "{}=; Path=/; HttpOnly{}; Max-Age=0",
        c.session_cookie, c.cookies
    );
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

fn state_text(l: Lang, state: &str) -> &'static str {
    match state {
        "approved" => t(l, "成功", "approved"),
        "declined" => t(l, "拒绝", "declined"),
        "timed_out" => t(l, "超时", "timed out"),
        "failed" => t(l, "失败", "failed"),
        "voided" => t(l, "已撤销", "voided"),
        "reversed" => t(l, "已冲正", "reversed"),
        "completed" => t(l, "已完成", "completed"),
        "in_flight" => t(l, "处理中", "in progress"),
        _ => t(l, "未知", "unknown"),
    }
}

fn case_state_text(l: Lang, case: &Case) -> String {
    case_state_name(l, case.state.as_str())
        .unwrap_or(t(l, "未知", "unknown"))
        .to_owned()
}

fn case_state_name(l: Lang, state: &str) -> Option<&'static str> {
    Some(match state {
        "open" => t(l, "处理中", "open"),
        "waiting_issuer" => t(l, "等待发卡行", "waiting for the issuer"),
        "waiting_merchant" => t(l, "等待商户", "waiting for the merchant"),
        "resolved" => t(l, "已解决", "resolved"),
        "rejected" => t(l, "已驳回", "rejected"),
        "escalated" => t(l, "已升级", "escalated"),
        _ => return None,
    })
}

/// The issuer's response code a queued reversal last got: a refusal keeps the bare code, a
/// retry its reason as a sentence ("reversal not applied by ABC: 96"), the code after its last
/// colon. `None` for anything else (no answer, a link error).
fn reversal_code(item: &store::SafItem) -> Option<&str> {
    item.last_error
        .as_deref()
        .map(|text| text.rsplit(": ").next().unwrap_or(text).trim())
        .filter(|code| code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A row of the console's reversal tables: the transaction (link, RRN, merchant, amount) and
/// the issuer, then `more` (escaped here).
fn reversal_row(web: &Web, item: &store::SafItem, more: [String; 2]) -> Result<String, ApiError> {
    let row = web.store.txn(item.txn_id)?;
    let [first, second] = more;
    Ok(format!(
        "<tr><td><a href=\"/portal/transactions/{}\">{}</a></td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td></tr>",
        item.txn_id,
        esc(row.as_ref().and_then(|r| r.rrn.as_deref()).unwrap_or("-")),
        esc(row.as_ref().map_or("-", |r| r.mid.as_str())),
        row.as_ref()
            .map_or_else(|| "-".to_owned(), |r| domain::money::yuan(r.amount_fen)),
        esc(&item.issuer),
        esc(&first),
        esc(&second),
    ))
}

/// A name in a case as the page shows it: the acquirer's staff, as a merchant user sees them
/// (`api::NamesShown`; no user may be called so), in the page's language; anyone else as
/// named.
fn shown_who(l: Lang, name: &str) -> String {
    if name == api::ACQUIRER_STAFF {
        t(l, "收单机构", "the acquirer").to_owned()
    } else {
        name.to_owned()
    }
}

/// A case's title in the page's language when it is the bilingual one given by default
/// (`api::default_case_title`, then `RRN <rrn>`); a title someone wrote, as written.
fn case_title(l: Lang, title: &str) -> String {
    use resolve::cases::CaseKind;
    for kind in [
        CaseKind::IssuerInquiry,
        CaseKind::RefundApplication,
        CaseKind::Dispute,
    ] {
        let both = api::default_case_title(kind);
        let Some(rest) = title.strip_prefix(both) else {
            continue;
        };
        let (zh, en) = both.split_once(" / ").unwrap_or((both, both));
        let what = t(l, zh, en);
        // Only the title given by default: one someone wrote after the same words stays.
        if rest.is_empty() {
            return what.to_owned();
        }
        if let Some(rrn) = rest.strip_prefix(" RRN ")
            && !rrn.is_empty()
            && rrn.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return format!("{what} {} {rrn}", t(l, "参考号", "RRN"));
        }
    }
    title.to_owned()
}

/// Why an account change waits, in the page's language: the settlement crate's notes are
/// English; an operator's own words are shown as written.
fn change_note_text(l: Lang, note: &str) -> String {
    use settlement::accounts::{
        NOTE_AFTER_PAYOUT_FAILURE, NOTE_BOUND_BY_STAFF, NOTE_CHANGE_OF_ACCOUNT,
    };
    let known = match note {
        NOTE_AFTER_PAYOUT_FAILURE => Some(t(
            l,
            "出款失败后重新绑定：须运营复核",
            "re-binding after a payout failure: an operator confirms",
        )),
        NOTE_BOUND_BY_STAFF => Some(t(
            l,
            "运营人员代商户绑定：须另一位运营复核",
            "bound by staff for the merchant: another operator confirms",
        )),
        NOTE_CHANGE_OF_ACCOUNT => Some(t(
            l,
            "更换收款账户：须运营复核后生效",
            "a change of the account payouts go to: an operator confirms",
        )),
        _ => None,
    };
    known.map_or_else(|| note.to_owned(), str::to_owned)
}

/// A timeline entry as the page's language shows it: the state change the cases service
/// writes at its head (`[open → waiting_merchant] ...`) in words.
fn entry_text(l: Lang, text: &str) -> String {
    let moved = text.strip_prefix('[').and_then(|rest| {
        let (change, after) = rest.split_once(']')?;
        let (from, to) = change.split_once(" → ")?;
        Some((
            case_state_name(l, from.trim())?,
            case_state_name(l, to.trim())?,
            after,
        ))
    });
    match moved {
        Some((from, to, after)) => format!("[{from} → {to}]{after}"),
        None => text.to_owned(),
    }
}

fn kind_text(l: Lang, kind: CaseKind) -> &'static str {
    match kind {
        CaseKind::IssuerInquiry => t(l, "发卡行查询", "Issuer inquiry"),
        CaseKind::RefundApplication => t(l, "退货申请", "Refund application"),
        CaseKind::Dispute => t(l, "争议", "Dispute"),
    }
}

/// The refund status of a refund application, in words.
fn refund_text(l: Lang, case: &Case) -> Option<String> {
    if case.kind != CaseKind::RefundApplication {
        return None;
    }
    let amount = case.refund_fen.map(yuan).unwrap_or_default();
    Some(match case.refund_code.as_deref() {
        Some("00") => format!(
            "{} ¥{amount} ({} {})",
            t(l, "退货已完成", "Refund done"),
            t(l, "参考号", "RRN"),
            esc(case.refund_rrn.as_deref().unwrap_or("-"))
        ),
        // The attempt may stand at the issuer: it is being reversed, and nothing is to be
        // applied for or approved again until that is known; or the issuer refused its
        // reversal, and the refund may stand there.
        Some(code) if case.refund_in_doubt => format!(
            "{} ({} {}){}",
            t(l, "退货结果未明", "Refund outcome not known"),
            esc(code),
            esc(diagnosis::diagnose_str(code).title.get(l)),
            if case.refund_reversal_refused {
                t(
                    l,
                    "：发卡行拒绝了冲正，这笔退货可能已经生效；请先向发卡行核实，再决定是否重新退货",
                    ": the issuer refused its reversal, so the refund may stand; check with the \
                     issuer before refunding again",
                )
            } else {
                t(
                    l,
                    "：正在向发卡行冲正，确认前请勿重复申请或批准",
                    ": being reversed at the issuer; do not apply or approve again until that \
                     is confirmed",
                )
            }
        ),
        Some(code) => format!(
            "{} ({}) — {}",
            t(l, "退货未成功", "Refund not done"),
            esc(code),
            esc(diagnosis::diagnose_str(code).title.get(l))
        ),
        // Closed without a refund (rejected, or resolved another way): nothing waits.
        None if case.state.is_closed() => format!(
            "{} ¥{amount}",
            t(
                l,
                "未退货（申请已结束）",
                "No refund (the application is closed)"
            )
        ),
        None => format!(
            "{} ¥{amount}",
            t(l, "等待运营审批", "Waiting for operator approval")
        ),
    })
}

async fn dashboard(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let Some(mid) = who.mid.clone() else {
        return redirect("/console");
    };
    let result = dashboard_body(&web, &c, &mid);
    respond(&c, &who, result)
}

/// The dashboard's card for declines the host answered itself: the issuer never saw them, so
/// the code's usual text (which speaks of the issuer) would send the merchant to the wrong party.
fn host_declines_card(l: Lang, code: &str, n: u64, today: &str) -> String {
    // A sale refused with 61 or 65 without asking the issuer is the merchant's risk rule.
    let rule = match code {
        "61" => Some(diagnosis::FailureKind::MerchantLimit),
        "65" => Some(diagnosis::FailureKind::CardVelocity),
        _ => None,
    };
    let step = rule
        .map(diagnosis::diagnose_failure)
        .and_then(|d| d.merchant_steps.first().map(|x| x.get(l)))
        .unwrap_or(t(
            l,
            "打开被拒的交易查看具体原因；认为拒绝有误时联系收单机构。",
            "Open a declined transaction to see the reason; if the decline looks wrong, ask \
             the acquirer.",
        ));
    format!(
        "<div class=\"card red\" id=\"host-declines-{code}\"><b>{code} {} × {n}</b> — {}<br>{}: {} \
         <a href=\"/portal/transactions?outcome=host-declined&amp;code={code_q}&amp;from={today}\">{}</a></div>",
        t(
            l,
            "收单系统拒绝，未送发卡行",
            "Declined by the acquirer's host, not sent to the issuer"
        ),
        t(
            l,
            "发卡行没有收到这些交易：是收单系统自己拒绝的（风控规则、商户或终端设置、无法受理的卡），不是发卡行的决定。",
            "The issuer never saw these: the acquirer's host refused them itself (a risk rule, \
             the merchant's or terminal's set-up, a card it cannot accept), not the issuer.",
        ),
        t(l, "怎么办", "What to do"),
        esc(step),
        t(l, "查看被拒交易", "See the declined transactions"),
        code = esc(code),
        code_q = url_escape(code),
        today = esc(today),
    )
}

fn dashboard_body(web: &Web, c: &Ctx, mid: &str) -> Result<(String, String), ApiError> {
    let l = c.lang;
    let s = query::day_stats(web, mid)?;
    let open_cases = web.cases.still_open(Some(mid))?;
    let rate = s
        .approval_per_mille
        .map_or_else(|| "—".to_owned(), |p| format!("{}.{}%", p / 10, p % 10));
    let mut body = format!(
        "<h1>{} {}</h1><div class=\"kpis\">\
         <div class=\"kpi\" id=\"volume\">{}<b>¥{}</b></div>\
         <div class=\"kpi\" id=\"count\">{}<b>{}</b></div>\
         <div class=\"kpi\" id=\"rate\">{}<b>{rate}</b></div>\
         <div class=\"kpi\">{}<b>{}</b></div></div>",
        t(l, "今日概览", "Today"),
        esc(&s.date),
        t(l, "成交金额", "Volume"),
        yuan(s.volume_fen),
        t(l, "成功笔数", "Approved"),
        s.approved,
        t(l, "成功率", "Approval rate"),
        t(l, "未成功", "Not approved"),
        s.declined + s.failed + s.reversed,
    );
    // Red items, each with what to do.
    let mut red = String::new();
    for (code, n) in &s.declines_by_code {
        let by_host = s.host_declines_by_code.get(code).copied().unwrap_or(0);
        let by_issuer = n.saturating_sub(by_host);
        if by_issuer > 0 {
            let d = diagnosis::diagnose_str(code);
            let step = d.merchant_steps.first().map_or("", |x| x.get(l));
            red.push_str(&format!(
                "<div class=\"card red\"><b>{} {} × {by_issuer}</b> — {}<br>{}: {} \
                 <a class=\"declines-of-code\" href=\"/portal/transactions?outcome=issuer-declined&amp;code={}&amp;from={today}\">{}</a></div>",
                esc(code),
                esc(d.title.get(l)),
                esc(d.meaning.get(l)),
                t(l, "怎么办", "What to do"),
                esc(step),
                url_escape(code),
                t(l, "查看这些交易", "See these transactions"),
                today = esc(&s.date),
            ));
        }
        if by_host > 0 {
            red.push_str(&host_declines_card(l, code, by_host, &s.date));
        }
    }
    if s.reversed > 0 {
        red.push_str(&format!(
            "<div class=\"card red\" id=\"reversed-today\"><b>{} × {}</b> — {} \
             <a href=\"/portal/transactions?outcome=reversed-after-approval&amp;from={today}\">{}</a></div>",
            t(l, "批准后又冲正", "Approved, then reversed"),
            s.reversed,
            t(
                l,
                "发卡行批准了，但终端没收到应答（或终端自己发起了冲正），交易已取消，顾客不会被扣款；\
                 顾客若看到扣款，发卡行确认冲正后会退回。不要交付商品，请顾客重新付款。",
                "The issuer approved, but the terminal never saw the answer (or reversed it \
                 itself): the sale is cancelled and the customer is not charged; a debit the \
                 customer sees is returned once the issuer confirms the reversal. Do not hand over \
                 the goods: ask the customer to pay again."
            ),
            t(l, "查看这些交易", "See these transactions"),
            today = esc(&s.date),
        ));
    }
    if s.reversals_pending > 0 {
        red.push_str(&format!(
            "<div class=\"card red\"><b>{} × {}</b> — {}</div>",
            t(l, "冲正等待发卡行确认", "Reversals awaiting the issuer"),
            s.reversals_pending,
            t(
                l,
                "系统会自动重发，直到发卡行确认；确认前顾客的卡上可能暂时显示这笔扣款，确认后退回。无需操作。",
                "They are resent until the issuer acknowledges them; until then the customer's \
                 card may show the debit, which is returned once they are. Nothing to do."
            )
        ));
    }
    let payouts = web
        .store
        .payouts_newest(Some(mid), None, crate::ops::PAYOUTS_MAX)?;
    // Only a held payout waits for the merchant; one retrying after a bank system error needs
    // nothing from them (re-binding then would not change where the retry goes).
    for p in payouts
        .iter()
        .filter(|p| p.failure.is_some() && p.state == store::settlement::PayoutState::Held)
    {
        let d = p
            .failure
            .as_deref()
            .and_then(diagnosis::PayoutFailure::from_key)
            .map(diagnosis::diagnose_payout);
        red.push_str(&format!(
            "<div class=\"card red\" id=\"payout-failed\"><b>{} ¥{} ({})</b> — {}<br>{}: {} <a href=\"/portal/settlement\">{}</a></div>",
            t(l, "结算款未到账", "Payout failed"),
            yuan(p.amount_fen),
            esc(&date_text(&p.payout_date)),
            esc(d.map_or("", |d| d.title.get(l))),
            t(l, "怎么办", "What to do"),
            esc(d.and_then(|d| d.merchant_steps.first()).map_or("", |x| x.get(l))),
            t(l, "重新绑定结算账户", "Re-bind the account"),
        ));
    }
    let due: i64 = payouts
        .iter()
        .filter(|p| p.state == store::settlement::PayoutState::Pending)
        .map(|p| p.amount_fen)
        .sum();
    // Today's suspected duplicates with something left to do. A flag is raised when its second
    // payment is answered, so older flags are not read. Today is the calendar day and the
    // clearing day both: a second payment after the 23:00 cut-over is in tomorrow's clearing
    // day and may be voided until its end, so it stays on the dashboard after midnight; flags
    // are read from an hour before midnight.
    let now_ms = web.clock.now_ms();
    let today = switch::LocalTime::from_ms(now_ms).day_number;
    let clearing_today = switch::ClearingDay::of(now_ms, switch::CUTOVER_MINUTE_DEFAULT).day_number;
    let to_handle = web
        .resolver
        .duplicates_flagged_since(
            mid,
            query::cst_day_start(now_ms) - 3_600_000,
            DUPLICATES_PER_PAGE,
        )?
        .into_iter()
        .filter(|f| f.suggested_action != resolve::duplicates::SuggestedAction::NothingLeft)
        .filter(|f| {
            let at = f.second.received_at_ms;
            switch::LocalTime::from_ms(at).day_number == today
                || switch::ClearingDay::of(at, switch::CUTOVER_MINUTE_DEFAULT).day_number
                    == clearing_today
        })
        .count();
    if to_handle > 0 {
        red.push_str(&format!(
            "<div class=\"card red\" id=\"duplicates-today\"><b>{} × {to_handle}</b> — {} \
             <a href=\"/portal/duplicates\">{}</a></div>",
            t(l, "疑似重复扣款", "Suspected duplicate payments"),
            t(
                l,
                "同一张卡几分钟内付了两次相同金额。",
                "the same card paid the same amount twice within minutes."
            ),
            t(l, "查看并处理", "See what to do")
        ));
    }
    // Cases that wait for the merchant's answer first: nothing moves until they reply.
    let waiting_for_you: Vec<&resolve::cases::Case> = open_cases
        .iter()
        .filter(|c| c.state == resolve::cases::CaseState::WaitingMerchant)
        .collect();
    if !waiting_for_you.is_empty() {
        let links: String = waiting_for_you
            .iter()
            .map(|c| {
                format!(
                    " <a href=\"/portal/cases/{}\">#{} {}</a>",
                    c.id,
                    c.id,
                    esc(&case_title(l, &c.title))
                )
            })
            .collect();
        red.push_str(&format!(
            "<div class=\"card red\" id=\"cases-waiting-for-you\"><b>{} × {}</b> —{links}</div>",
            t(l, "需要您回复的工单", "Cases waiting for your reply"),
            waiting_for_you.len(),
        ));
    }
    if !open_cases.is_empty() {
        red.push_str(&format!(
            "<div class=\"card red\"><b>{} × {}</b> — <a href=\"/portal/cases?open=1\">{}</a></div>",
            t(l, "未结工单", "Open cases"),
            open_cases.len(),
            t(l, "查看进度", "See where they stand")
        ));
    }
    if red.is_empty() {
        red = format!(
            "<div class=\"card ok\">{}</div>",
            t(l, "今天一切正常。", "All is well today.")
        );
    }
    body.push_str(&format!(
        "<p id=\"payouts-due\">{}: ¥{}</p><h2>{}</h2>{red}",
        t(l, "待付结算款", "Payouts due"),
        yuan(due),
        t(l, "需要关注", "Needs attention")
    ));
    let by_code: Vec<(String, u64)> = s
        .declines_by_code
        .iter()
        .map(|(code, n)| {
            // All the host's own: the code's title would speak of the issuer.
            let title = if s.host_declines_by_code.get(code) == Some(n) {
                t(l, "收单系统拒绝", "declined by the host")
            } else {
                diagnosis::diagnose_str(code).title.get(l)
            };
            (format!("{code} {title}"), *n)
        })
        .collect();
    let by_hour: Vec<(String, u64)> = s
        .declines_by_hour
        .iter()
        .enumerate()
        .map(|(h, n)| (format!("{h}"), *n))
        .collect();
    body.push_str(&format!(
        "<h2>{}</h2><div id=\"chart-reason\">{}</div><h2>{}</h2><div id=\"chart-hour\">{}</div>",
        t(l, "按原因统计的失败", "Declines by reason"),
        chart::bars(t(l, "按原因", "by reason"), &by_code),
        t(l, "按小时统计的失败", "Declines by hour"),
        chart::bars(t(l, "按小时", "by hour"), &by_hour),
    ));
    Ok((t(l, "概览", "Dashboard").to_owned(), body))
}

async fn transactions(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<TxnQuery>,
) -> Response {
    // The search as asked, for the language switch to keep; a merchant field that names no
    // merchant is left out (it may be a card number: the switch keeps a merchant ID whole).
    let mut params = search_params(&q);
    let mid_known = q
        .mid
        .as_deref()
        .is_some_and(|mid| crate::ops::known_merchant(&web, mid).is_ok());
    if !mid_known {
        params.remove("mid");
    }
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let searched = query::search_in_turn(&web, &who, &q).await;
    match transactions_body(&c, &who, (&q, mid_known), searched) {
        Ok((title, body, None)) => render(&c, &who, &title, &body),
        // Refused: the language switch does not carry the search (nor what was refused) along.
        Ok((title, body, Some(status))) => {
            let plain = Ctx {
                switch_href: crate::html::lang_switch_href(c.lang, Some(&[])),
                ..c
            };
            let mut response = render(&plain, &who, &title, &body);
            *response.status_mut() = status;
            response
        }
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

/// A search's parameters as given, by name.
fn search_params(q: &TxnQuery) -> Params {
    match serde_json::to_value(q) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(v) => Some((k, v)),
                _ => None,
            })
            .collect(),
        _ => Params::new(),
    }
}

/// A search field as typed, to fill the form again (a card number typed into one, masked).
fn field(q: &Option<String>) -> String {
    esc(&domain::mask_card_numbers(q.as_deref().unwrap_or("")))
}

fn transactions_body(
    c: &Ctx,
    who: &Principal,
    (q, mid_known): (&TxnQuery, bool),
    searched: Result<query::TxnPage, ApiError>,
) -> Result<(String, String, Option<StatusCode>), ApiError> {
    let l = c.lang;
    // A search refused for what was typed, or not run for want of a turn: the form again,
    // filled as typed, with why above it (not a page without the form, every filter lost).
    let (found, refused) = match searched {
        Ok(found) => (Some(found), None),
        Err(error)
            if [StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE]
                .contains(&error.status) =>
        {
            (None, Some(error))
        }
        Err(error) => return Err(error),
    };
    // The field the refusal names ("rrn: 12 digits"): left empty, not shown back.
    let bad_field = refused
        .as_ref()
        .and_then(|e| e.message.split_once(':'))
        .map(|(name, _)| name.trim().to_owned());
    let fill = |name: &str, value: &Option<String>| {
        if bad_field.as_deref() == Some(name) {
            String::new()
        } else if name == "mid" && mid_known {
            // A merchant's ID is shown whole: fifteen digits may pass a card's check digit
            // too, and masked it would not search again. Anything else typed there is masked.
            esc(value.as_deref().unwrap_or(""))
        } else {
            field(value)
        }
    };
    let mut body = format!(
        "<h1>{}</h1><form method=\"get\" action=\"/portal/transactions\" class=\"card\" id=\"search-form\">\
         {} <input name=\"from\" id=\"from\" type=\"date\" value=\"{}\"> \
         {} <input name=\"to\" id=\"to\" type=\"date\" value=\"{}\"> \
         {} <input name=\"amount\" id=\"amount\" size=\"8\" value=\"{}\"> \
         {} <input name=\"last4\" id=\"last4\" size=\"4\" maxlength=\"4\" value=\"{}\"> \
         {} <input name=\"rrn\" id=\"rrn\" size=\"12\" value=\"{}\"> \
         {} <input name=\"tid\" id=\"tid\" size=\"8\" value=\"{}\"> \
         {} <input name=\"stan\" id=\"stan\" size=\"6\" maxlength=\"6\" value=\"{}\"> \
         {} <input name=\"auth_code\" id=\"auth-code\" size=\"6\" maxlength=\"6\" value=\"{}\"> \
         {} <input name=\"code\" id=\"code\" size=\"2\" maxlength=\"2\" value=\"{}\"> \
         {} <select name=\"status\" id=\"status\"><option value=\"\">{}</option>",
        t(l, "交易查询", "Transactions"),
        t(l, "从", "From"),
        fill("from", &q.from),
        t(l, "到", "To"),
        fill("to", &q.to),
        t(l, "金额(元)", "Amount (yuan)"),
        fill("amount", &q.amount),
        t(l, "卡号后四位", "Card last 4"),
        fill("last4", &q.last4),
        t(l, "参考号", "RRN"),
        fill("rrn", &q.rrn),
        t(l, "终端", "Terminal"),
        fill("tid", &q.tid),
        t(l, "凭证号", "Trace no."),
        fill("stan", &q.stan),
        t(l, "授权码", "Auth code"),
        fill("auth_code", &q.auth_code),
        t(l, "应答码", "Response code"),
        fill("code", &q.code),
        t(l, "状态", "Status"),
        t(l, "全部", "any"),
    );
    for state in TxnState::ALL {
        let selected = if q.status.as_deref() == Some(state.as_str()) {
            " selected"
        } else {
            ""
        };
        body.push_str(&format!(
            "<option value=\"{}\"{selected}>{}</option>",
            state.as_str(),
            state_text(l, state.as_str())
        ));
    }
    // Staff search one merchant or all; a merchant searches its own.
    let merchant_field = if who.is_staff() {
        format!(
            " {} <input name=\"mid\" id=\"mid\" size=\"15\" maxlength=\"15\" value=\"{}\">",
            t(l, "商户号", "Merchant"),
            fill("mid", &q.mid)
        )
    } else {
        String::new()
    };
    // A dashboard card's kind of sale, kept through the form and said above the results.
    let outcome = query::given(&q.outcome).filter(|_| bad_field.as_deref() != Some("outcome"));
    let outcome_field = outcome.map_or_else(String::new, |o| {
        format!(
            "<input type=\"hidden\" name=\"outcome\" value=\"{}\">",
            esc(&domain::mask_card_numbers(o))
        )
    });
    body.push_str(&format!(
        "</select>{merchant_field}{outcome_field} <button id=\"search\">{}</button></form>",
        t(l, "查询", "Search")
    ));
    let Some(found) = found else {
        let status = refused
            .as_ref()
            .map_or(StatusCode::BAD_REQUEST, |e| e.status);
        if let Some(error) = refused {
            body.push_str(&format!(
                "<div class=\"err\" id=\"search-error\">{}</div>",
                esc(error.detail(l))
            ));
        }
        return Ok((t(l, "交易", "Transactions").to_owned(), body, Some(status)));
    };
    if let Some(only) = outcome.and_then(query::Outcome::parse) {
        let words = match only {
            query::Outcome::IssuerDeclined => t(
                l,
                "只显示发卡行未批准的消费（拒绝、超时未应答或应答无法识别）。",
                "Only sales the issuer did not approve (declined, not answered in time, or \
                 answered unreadably).",
            ),
            query::Outcome::HostDeclined => t(
                l,
                "只显示收单系统自己拒绝、未送发卡行的消费。",
                "Only sales the acquirer's host refused itself, never sent to the issuer.",
            ),
            query::Outcome::ReversedAfterApproval => t(
                l,
                "只显示发卡行批准后又冲正的消费。",
                "Only sales the issuer approved that were then reversed.",
            ),
        };
        body.push_str(&format!("<p id=\"outcome-only\">{words}</p>"));
    }
    body.push_str(&format!(
        "<table id=\"results\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        t(l, "时间", "Time"),
        if who.is_staff() {
            t(l, "商户 · 终端", "Merchant · terminal")
        } else {
            t(l, "终端", "Terminal")
        },
        t(l, "类型", "Kind"),
        t(l, "金额", "Amount"),
        t(l, "卡号", "Card"),
        t(l, "发卡行", "Bank"),
        t(l, "参考号", "RRN"),
        t(l, "结果", "Result"),
    ));
    for x in &found.items {
        let code = x.response_code.as_deref().unwrap_or("");
        let class = if x.state == "approved" || x.state == "completed" {
            "ok"
        } else {
            "bad"
        };
        body.push_str(&format!(
            "<tr><td><a class=\"txn\" href=\"/portal/transactions/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{} {}</td></tr>",
            x.id,
            esc(&x.received_at),
            esc(&if who.is_staff() {
                format!("{} · {}", x.mid, x.tid)
            } else {
                x.tid.clone()
            }),
            esc(&store::TxnKind::parse(&x.kind).map_or_else(
                |_| x.kind.clone(),
                |k| resolve::txn_kind_text(k).get(l).to_owned()
            )),
            esc(&x.amount),
            esc(x.masked_pan.as_deref().unwrap_or("-")),
            esc(x.bank_name.get(l)),
            esc(x.rrn.as_deref().unwrap_or("-")),
            esc(code),
            state_text(l, &x.state),
        ));
    }
    body.push_str("</table>");
    // An empty page with more to read (the search's share of rows ran out first) is not "no
    // match": the rest is on the next page.
    if found.items.is_empty() && found.next_cursor.is_none() {
        body.push_str(&format!(
            "<p id=\"none\">{}</p>",
            t(l, "没有符合条件的交易。", "No transactions match.")
        ));
    } else if found.items.is_empty() {
        body.push_str(&format!(
            "<p id=\"not-yet\">{}</p>",
            t(
                l,
                "这一页还没有找到，还有更早的交易没有查完：请看下一页。",
                "Nothing found on this page yet; earlier transactions are still to be searched: see the next page."
            )
        ));
    }
    if let Some(next) = &found.next_cursor {
        let mut next_q = q.clone();
        next_q.cursor = Some(next.clone());
        // By name, as the link always read. What was typed goes on masked as the form shows
        // it (a card number typed as the page size, say); the cursor is the search's own, and
        // a merchant's ID is whole, as in the form.
        let mut pairs: Vec<(String, String)> = search_params(&next_q)
            .into_iter()
            .map(|(k, v)| {
                if k == "cursor" || (k == "mid" && mid_known) {
                    (k, v)
                } else {
                    let masked = domain::mask_card_numbers(&v).into_owned();
                    (k, masked)
                }
            })
            .collect();
        pairs.sort();
        let qs = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", url_escape(v)))
            .collect::<Vec<_>>()
            .join("&");
        body.push_str(&format!(
            "<p><a id=\"next\" href=\"/portal/transactions?{}\">{}</a></p>",
            esc(&qs),
            t(l, "下一页", "Next page")
        ));
    }
    Ok((t(l, "交易", "Transactions").to_owned(), body, None))
}

async fn transaction(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = transaction_body(&web, &c, &who, id, None);
    respond(&c, &who, result)
}

/// The transaction's page; `refused`: a case form on it was refused (why, and what was
/// typed, shown again in the form it was typed into).
fn transaction_body(
    web: &Web,
    c: &Ctx,
    who: &Principal,
    id: i64,
    refused: Option<(&ApiError, &Params)>,
) -> Result<(String, String), ApiError> {
    let l = c.lang;
    // For the form of `kind` when it was the one refused: the error, and a field as typed
    // (card numbers masked: a page never shows one whole).
    let refused_as =
        |kind: &str| refused.filter(|(_, form)| form.get("kind").map(String::as_str) == Some(kind));
    let why = |kind: &str, id: &str| {
        refused_as(kind).map_or_else(String::new, |(error, _)| {
            format!(
                "<div class=\"err\" id=\"{id}\">{}</div>",
                esc(error.detail(l))
            )
        })
    };
    let typed = |kind: &str, field: &str| {
        refused_as(kind)
            .and_then(|(_, form)| form.get(field))
            .map_or_else(String::new, |v| esc(&domain::mask_card_numbers(v)))
    };
    let row = query::visible_txn(web, who, id)?;
    let x = resolve::explain_txn(web.store.as_ref(), &web.directory, &row, web.clock.now_ms())?;
    let s = &x.txn;
    let mut body = format!(
        "<h1>{} {}</h1><div class=\"card\" id=\"summary\"><b>{}</b><br>\
         {}: {} · {}: {} · {}: {} · {}: {} · {}: {}</div>",
        t(l, "交易", "Transaction"),
        esc(&s.amount),
        esc(x.summary.get(l)),
        t(l, "时间", "Time"),
        esc(&s.received_at),
        t(l, "卡号", "Card"),
        esc(s.masked_pan.as_deref().unwrap_or("-")),
        t(l, "终端", "Terminal"),
        esc(&s.tid),
        t(l, "参考号", "RRN"),
        esc(s.rrn.as_deref().unwrap_or("-")),
        t(l, "应答码", "Response code"),
        esc(s.response_code.as_deref().unwrap_or("-")),
    );
    // What the case forms below depend on; a refused form not drawn any more (the sale
    // refunded or voided meanwhile) still says why, above the page.
    let link_refused =
        row.response_code.as_deref() == Some("91") && row.issuer_answered_at_ms.is_none();
    let inquiry_drawn = row.sent_at_ms.is_some() && !link_refused;
    let refundable = matches!(row.kind, TxnKind::Purchase | TxnKind::Completion)
        && matches!(row.state, TxnState::Approved | TxnState::Completed)
        && row.amount_fen > row.refunded_fen;
    if let Some((error, form)) = refused {
        let drawn = match form.get("kind").map(String::as_str) {
            Some("issuer_inquiry") => inquiry_drawn,
            Some("refund_application") => refundable,
            _ => false,
        };
        if !drawn {
            body.push_str(&format!(
                "<div class=\"err\" id=\"case-error\">{}</div>",
                esc(error.detail(l))
            ));
        }
    }
    // Staff see every merchant's: whose this is.
    if who.is_staff() {
        body = body.replacen(
            "</div>",
            &format!(" · {}: {}</div>", t(l, "商户号", "Merchant"), esc(&row.mid)),
            1,
        );
    }
    if let Some(d) = x.diagnosis {
        let steps: String = d
            .merchant_steps
            .iter()
            .map(|step| format!("<li>{}</li>", esc(step.get(l))))
            .collect();
        body.push_str(&format!(
            "<div class=\"card red\" id=\"diagnosis\"><h2>{}: {}</h2><p>{}</p>\
             <p id=\"who-acts\"><b>{}</b> {} · <b>{}</b> {}</p>\
             <p><b>{}</b> {}</p><ol>{steps}</ol><p><b>{}</b> {}</p></div>",
            t(l, "诊断", "Diagnosis"),
            esc(d.title.get(l)),
            esc(d.meaning.get(l)),
            t(l, "谁来处理：", "Who acts:"),
            esc(d.who_acts.text().get(l)),
            t(l, "能否重试：", "Retry:"),
            esc(d.retry.text().get(l)),
            t(l, "对顾客说：", "Tell the customer:"),
            esc(d.customer_message.get(l)),
            t(l, "联系发卡行：", "Contact the issuer:"),
            esc(d.contact_when.get(l)),
        ));
    }
    body.push_str(&format!(
        "<h2>{}</h2><table id=\"timeline\">",
        t(l, "时间线", "Timeline")
    ));
    for step in &x.steps {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&step.time),
            esc(step.text.get(l))
        ));
    }
    body.push_str("</table>");
    // Only for what reached the issuer: one the host refused itself it never saw. The bank's
    // number only where the diagnosis sends someone to the issuer (an approval has none: a
    // customer's question about it goes to their bank); the evidence package always.
    let contact_issuer = x.diagnosis.is_none_or(|d| d.contact_issuer.recommended());
    if row.rrn.is_some() && row.sent_at_ms.is_some() && !contact_issuer {
        body.push_str(&format!(
            "<div class=\"card\" id=\"evidence-only\"><a href=\"/portal/transactions/{id}/evidence\" \
             id=\"evidence\">{}</a></div>",
            t(l, "证据包（可打印）", "Evidence package (printable)"),
        ));
    } else if let Some(rrn) = &row.rrn
        && row.sent_at_ms.is_some()
        && let Ok(e) = web.resolver.evidence(rrn, Some(&row.mid))
    {
        body.push_str(&format!(
                "<div class=\"card\" id=\"contact-issuer\"><h2>{}</h2>{}: <b>{}</b> · {}: <b id=\"issuer-phone\">{}</b> \
                 · <a href=\"/portal/transactions/{id}/evidence\" id=\"evidence\">{}</a></div>",
                t(l, "联系发卡行", "Contact the issuer"),
                t(l, "银行", "Bank"),
                esc(e.bank.get(l)),
                t(l, "客服电话", "Phone"),
                esc(e.issuer_phone.as_deref().unwrap_or("-")),
                t(l, "证据包（可打印）", "Evidence package (printable)"),
            ));
    }
    // A suspected duplicate it is part of: the other payment and what to do.
    for flag in web.resolver.duplicates_of_txn(&row.mid, row.id)? {
        let (other, text) = if flag.second.id == row.id {
            (
                &flag.first,
                t(
                    l,
                    "同一张卡在这笔之前付过相同金额",
                    "The same card paid the same amount before this one",
                ),
            )
        } else {
            (
                &flag.second,
                t(
                    l,
                    "同一张卡在这笔之后又付了相同金额",
                    "The same card paid the same amount again after this one",
                ),
            )
        };
        body.push_str(&format!(
            "<div class=\"card red\" id=\"duplicate-of\"><b>{}</b> — {text} ({} {}, \
             <a href=\"/portal/transactions/{}\">{}</a>)<br>{}: {}</div>",
            t(l, "疑似重复扣款", "Suspected duplicate payment"),
            flag.gap_ms / 1_000,
            t(l, "秒", "s"),
            other.id,
            esc(other.rrn.as_deref().unwrap_or("-")),
            t(l, "怎么办", "What to do"),
            esc(flag.advice.get(l)),
        ));
    }
    // Cases already open on it.
    let related: Vec<Case> = web.cases.of_txn(row.id)?;
    if !related.is_empty() {
        body.push_str(&format!(
            "<h2>{}</h2><ul id=\"related-cases\">",
            t(l, "相关工单", "Cases")
        ));
        for k in &related {
            body.push_str(&format!(
                "<li><a href=\"/portal/cases/{}\">#{} {}</a> — {} {}</li>",
                k.id,
                k.id,
                kind_text(l, k.kind),
                esc(&case_state_text(l, k)),
                refund_text(l, k).unwrap_or_default()
            ));
        }
        body.push_str("</ul>");
    }
    let csrf = esc(who.csrf.as_deref().unwrap_or(""));
    // Only what reached the issuer can be asked about there: one the host refused itself the
    // issuer never saw, nor a 91 the link gave without sending (stamped as sent, but with no
    // answer from the issuer; a 91 the issuer gave itself has one).
    if inquiry_drawn {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/portal/transactions/{id}/cases\" class=\"card\">{}\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"kind\" value=\"issuer_inquiry\">\
             <b>{}</b><br><textarea name=\"text\" id=\"inquiry-text\" rows=\"2\" cols=\"60\">{}</textarea><br>\
             <button id=\"inquiry\">{}</button></form>",
            why("issuer_inquiry", "inquiry-error"),
            t(l, "向发卡行查询", "Ask the issuer"),
            typed("issuer_inquiry", "text"),
            t(l, "发起发卡行查询", "Open issuer inquiry"),
        ));
    }
    if refundable {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/portal/transactions/{id}/cases\" class=\"card\">{}\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"kind\" value=\"refund_application\">\
             <b>{}</b><br>{} <input name=\"amount\" id=\"refund-amount\" value=\"{}\" size=\"8\"> \
             {} <input name=\"text\" id=\"refund-text\" size=\"40\" value=\"{}\"> <button id=\"refund\">{}</button></form>",
            why("refund_application", "refund-error"),
            t(l, "申请退货", "Apply for a refund"),
            t(l, "金额(元)", "Amount (yuan)"),
            match refused_as("refund_application").and_then(|(_, form)| form.get("amount")) {
                Some(typed) => esc(&domain::mask_card_numbers(typed)),
                None => yuan(row.amount_fen - row.refunded_fen),
            },
            t(l, "原因", "Reason"),
            typed("refund_application", "text"),
            t(l, "提交退货申请", "Submit refund application"),
        ));
    }
    Ok((t(l, "交易详情", "Transaction").to_owned(), body))
}

async fn open_case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let c = form_ctx(&web, &headers);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = async {
        who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
        let refund_fen = match form
            .get("amount")
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
        {
            Some(a) => Some(query::parse_yuan(a).ok_or_else(|| {
                ApiError::bad_request("amount: 12.34").zh("金额请按元填写，如 12.34。")
            })?),
            None => None,
        };
        api::open_case_for(
            &web,
            &who,
            OpenCase {
                kind: form.get("kind").cloned().unwrap_or_default(),
                txn_id: Some(id),
                title: None,
                text: form.get("text").cloned().unwrap_or_default(),
                refund_fen,
            },
        )
        .await
    }
    .await;
    let error = match result {
        Ok(case) => return redirect(&format!("/portal/cases/{}", case.id)),
        Err(error) => error,
    };
    // Refused for what was typed: the transaction's page again, with why, and what was typed
    // in the form (the browser's back button would reload it empty: pages are not cached).
    if !matches!(error.status.as_u16(), 400 | 409 | 422) {
        return error_page(&c, Some(&who), &error);
    }
    match transaction_body(&web, &c, &who, id, Some((&error, &form))) {
        Ok((title, body)) => {
            let mut response = render(&c, &who, &title, &body);
            *response.status_mut() = error.status;
            response
        }
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

async fn evidence(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let row = query::visible_txn(&web, &who, id)?;
        let rrn = row.rrn.ok_or_else(|| ApiError::not_found("evidence"))?;
        Ok::<_, ApiError>(web.resolver.evidence(&rrn, Some(&row.mid))?)
    })();
    match result {
        // The evidence package is its own printable page (resolve escapes its values).
        Ok(e) => html(&c, StatusCode::OK, e.to_html(c.lang)),
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

/// Flags on one page of the suspected duplicates, newest first; a link leads to older ones.
const DUPLICATES_PER_PAGE: u32 = 50;

/// A merchant's suspected duplicate payments: both payments, how far apart, and what to do
/// about the second (void it today, refund it later, or nothing left).
async fn duplicates(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let Some(mid) = who.mid.clone() else {
        return redirect("/console");
    };
    let result = (|| {
        let l = c.lang;
        let before_id = params.get("before").and_then(|b| b.parse::<i64>().ok());
        let flags = web
            .resolver
            .duplicates(&mid, before_id, DUPLICATES_PER_PAGE)?;
        let mut body = format!(
            "<h1>{}</h1><p>{}</p><table id=\"duplicates\"><tr><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t(l, "疑似重复扣款", "Suspected duplicate payments"),
            t(
                l,
                "同一张卡在本店 10 分钟内付了相同金额，两笔都成功。",
                "The same card paid the same amount here within 10 minutes, and both were approved."
            ),
            t(l, "第二笔时间", "Second payment at"),
            t(l, "金额", "Amount"),
            t(l, "卡号", "Card"),
            t(l, "第一笔", "First payment"),
            t(l, "第二笔", "Second payment"),
            t(l, "间隔", "Apart"),
            t(l, "怎么办", "What to do"),
        );
        let link = |s: &resolve::TxnSummary| {
            format!(
                "<a href=\"/portal/transactions/{}\">{}</a>",
                s.id,
                esc(s.rrn.as_deref().unwrap_or("-"))
            )
        };
        for f in &flags {
            body.push_str(&format!(
                "<tr class=\"duplicate\"><td>{}</td><td>¥{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{} {}</td><td class=\"advice\">{}</td></tr>",
                format_time(f.second.received_at_ms),
                yuan(f.second.amount_fen),
                esc(f.second.masked_pan.as_deref().unwrap_or("-")),
                link(&f.first),
                link(&f.second),
                f.gap_ms / 1_000,
                t(l, "秒", "s"),
                esc(f.advice.get(l)),
            ));
        }
        body.push_str("</table>");
        if flags.is_empty() {
            body.push_str(&format!(
                "<p>{}</p>",
                t(l, "没有疑似重复扣款。", "No suspected duplicate payments.")
            ));
        }
        if let (true, Some(last)) = (
            flags.len() == usize::try_from(DUPLICATES_PER_PAGE).unwrap_or(usize::MAX),
            flags.last(),
        ) {
            body.push_str(&format!(
                "<p><a id=\"older-duplicates\" href=\"/portal/duplicates?before={}\">{}</a></p>",
                last.second.id,
                t(l, "更早的", "Older")
            ));
        }
        Ok::<_, ApiError>((t(l, "重复扣款", "Duplicates").to_owned(), body))
    })();
    respond(&c, &who, result)
}

/// Cases on one page of the case list, newest first; a link leads to older ones.
const CASES_PER_PAGE: u32 = 100;

async fn cases(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let l = c.lang;
        let before_id = params.get("before").and_then(|b| b.parse::<i64>().ok());
        // `open=1`: only the cases not closed (the dashboard's count of them links here).
        let open_only = params.get("open").is_some_and(|o| o == "1");
        let (list, next) = api::visible_cases(
            &web,
            &who,
            store::resolve::CaseQuery {
                before_id,
                open_only,
                limit: CASES_PER_PAGE,
                ..Default::default()
            },
        )?;
        let mut body = case_table(l, &list, "cases", None, web.clock.now_ms());
        if let Some(next) = next {
            let open = if open_only { "&open=1" } else { "" };
            body.push_str(&format!(
                "<p><a id=\"older-cases\" href=\"/portal/cases?before={next}{open}\">{}</a></p>",
                t(l, "更早的工单", "Older cases")
            ));
        }
        Ok::<_, ApiError>((t(l, "工单", "Cases").to_owned(), body))
    })();
    respond(&c, &who, result)
}

/// Open risk alerts the console lists at once.
const ALERTS_SHOWN: u32 = 50;

/// A list of cases, with how long each has been open, when it is due (overdue in red) and who
/// has it.
fn case_table(l: Lang, list: &[Case], id: &str, approve_csrf: Option<&str>, now_ms: i64) -> String {
    let mut body = format!(
        "<table id=\"{id}\"><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th>{}</tr>",
        t(l, "类型", "Kind"),
        t(l, "商户", "Merchant"),
        t(l, "标题", "Title"),
        t(l, "状态", "State"),
        t(l, "退货", "Refund"),
        t(l, "创建时间", "Opened"),
        t(l, "处理时限", "Due"),
        t(l, "处理人", "Assignee"),
        if approve_csrf.is_some() {
            "<th></th>"
        } else {
            ""
        },
    );
    for k in list {
        let approve = approve_csrf.map_or_else(String::new, |csrf| {
            format!(
                "<td><form method=\"post\" action=\"/console/cases/{}/approve-refund\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button class=\"approve\" id=\"approve-{}\">{}</button></form></td>",
                k.id,
                esc(csrf),
                k.id,
                t(l, "批准退货", "Approve refund")
            )
        });
        // Open until it closed: a case resolved in two days reads 2 days ever after.
        let until_ms = if k.state.is_closed() {
            k.updated_at_ms
        } else {
            now_ms
        };
        let days_open = (until_ms - k.created_at_ms).max(0) / query::MS_PER_DAY;
        let opened = format!(
            "{} ({})",
            format_time(k.created_at_ms),
            match l {
                Lang::Zh => format!("{days_open} 天"),
                Lang::En => format!("{days_open} d"),
            }
        );
        let due = k.due_at_ms.map_or_else(String::new, |due| {
            let class = if due < now_ms && !k.state.is_closed() {
                " class=\"bad overdue\""
            } else {
                ""
            };
            format!("<span{class}>{}</span>", esc(&format_time(due)))
        });
        body.push_str(&format!(
            "<tr><td><a class=\"case\" href=\"/portal/cases/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{due}</td><td>{}</td>{approve}</tr>",
            k.id,
            k.id,
            kind_text(l, k.kind),
            esc(&k.mid),
            esc(&case_title(l, &k.title)),
            esc(&case_state_text(l, k)),
            refund_text(l, k).unwrap_or_default(),
            esc(&opened),
            esc(&shown_who(l, k.assignee.as_deref().unwrap_or("-"))),
        ));
    }
    body.push_str("</table>");
    if list.is_empty() {
        body.push_str(&format!("<p>{}</p>", t(l, "没有工单。", "No cases.")));
    }
    body
}

async fn case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = case_body(&web, &c, &who, id, None);
    respond(&c, &who, result)
}

/// Which of a case page's forms was refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CaseForm {
    Entry,
    Transition,
}

/// A case form the page sent that was refused: why, and what was typed, to show again above
/// the form it came from (card numbers masked).
struct RefusedCaseForm<'a> {
    error: &'a ApiError,
    form: &'a Params,
    which: CaseForm,
}

/// The answer to a case form (`which`, sent as `form`) once its action ran: back to the case;
/// refused, the case page again with why and what was typed when the refusal was of what was
/// typed (400, 409 for a case moved meanwhile, 422), the error page otherwise (the case not
/// found or not this user's).
fn case_form_answer<T>(
    web: &Web,
    c: &Ctx,
    who: &Principal,
    id: i64,
    (form, which): (&Params, CaseForm),
    result: Result<T, ApiError>,
) -> Response {
    let error = match result {
        Ok(_) => return redirect(&format!("/portal/cases/{id}")),
        Err(error) => error,
    };
    let status = error.status;
    if !matches!(status.as_u16(), 400 | 409 | 422) {
        return error_page(c, Some(who), &error);
    }
    let refused = RefusedCaseForm {
        error: &error,
        form,
        which,
    };
    match case_body(web, c, who, id, Some(refused)) {
        Ok((title, body)) => {
            let mut response = render(c, who, &title, &body);
            *response.status_mut() = status;
            response
        }
        Err(e) => error_page(c, Some(who), &e),
    }
}

/// The case page's title and body; `refused`, a form of it sent back.
fn case_body(
    web: &Web,
    c: &Ctx,
    who: &Principal,
    id: i64,
    refused: Option<RefusedCaseForm<'_>>,
) -> Result<(String, String), ApiError> {
    {
        let l = c.lang;
        let k = api::visible_case(web, who, id)?;
        let mut body = format!(
            "<h1>#{} {}</h1><div class=\"card\"><b>{}</b><br>{}: <b id=\"case-state\">{}</b>",
            k.id,
            kind_text(l, k.kind),
            esc(&case_title(l, &k.title)),
            t(l, "状态", "State"),
            esc(&case_state_text(l, &k)),
        );
        if let Some(refund) = refund_text(l, &k) {
            body.push_str(&format!(
                "<br>{}: <b id=\"refund-status\">{refund}</b>",
                t(l, "退货", "Refund")
            ));
        }
        if who.is_staff() {
            body.push_str(&format!(
                "<br>{}: <b id=\"case-mid\">{}</b>",
                t(l, "商户号", "Merchant"),
                esc(&k.mid)
            ));
        }
        if let Some(txn) = &k.txn {
            body.push_str(&format!(
                "<br><a href=\"/portal/transactions/{}\">{} {} {}</a>",
                txn.id,
                t(l, "交易", "Transaction"),
                esc(&txn.amount),
                esc(txn.masked_pan.as_deref().unwrap_or("")),
            ));
        }
        body.push_str("</div>");
        body.push_str(&format!(
            "<h2>{}</h2><table id=\"entries\">",
            t(l, "记录", "Timeline")
        ));
        for e in &k.entries {
            let by = shown_who(l, &e.who);
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&format_time(e.at_ms)),
                esc(&by),
                esc(&entry_text(l, &e.text))
            ));
        }
        body.push_str("</table>");
        let csrf = esc(who.csrf.as_deref().unwrap_or(""));
        // What a refused form had typed, masked, and why it was refused, for that form only.
        let typed = |which: CaseForm, k: &str| {
            refused
                .as_ref()
                .filter(|r| r.which == which)
                .and_then(|r| r.form.get(k))
                .map(|v| esc(&domain::mask_card_numbers(v)))
                .unwrap_or_default()
        };
        let why = |which: CaseForm, html_id: &str| {
            refused
                .as_ref()
                .filter(|r| r.which == which)
                .map(|r| {
                    format!(
                        "<div class=\"err\" id=\"{html_id}\">{}</div>",
                        esc(r.error.detail(l))
                    )
                })
                .unwrap_or_default()
        };
        // Closed meanwhile (another user resolved it while this one typed): no form to show
        // the refusal above, so it goes here, with what was typed.
        if k.state.is_closed()
            && let Some(r) = &refused
        {
            let (html_id, field) = match r.which {
                CaseForm::Entry => ("entry-error", "text"),
                CaseForm::Transition => ("case-move-error", "note"),
            };
            body.push_str(&format!(
                "<div class=\"err\" id=\"{html_id}\">{}</div>",
                esc(r.error.detail(l))
            ));
            let typed = typed(r.which, field);
            if !typed.is_empty() {
                body.push_str(&format!(
                    "<p id=\"typed\">{}: {typed}</p>",
                    t(l, "您填写的内容", "What you typed")
                ));
            }
        }
        if !k.state.is_closed() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/portal/cases/{id}/entries\" class=\"card\">{}\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <textarea name=\"text\" id=\"entry-text\" rows=\"2\" cols=\"60\">{}</textarea><br>\
                 <button id=\"add-entry\">{}</button></form>",
                why(CaseForm::Entry, "entry-error"),
                typed(CaseForm::Entry, "text"),
                t(l, "添加记录", "Add entry")
            ));
        }
        if who.is_staff() && !k.state.is_closed() {
            let options: String = [
                ("wait_on_issuer", t(l, "等待发卡行", "Wait on the issuer")),
                ("wait_on_merchant", t(l, "等待商户", "Wait on the merchant")),
                ("reopen", t(l, "重新打开", "Reopen")),
                ("escalate", t(l, "升级", "Escalate")),
                ("resolve", t(l, "解决", "Resolve")),
                ("reject", t(l, "驳回", "Reject")),
            ]
            .iter()
            .map(|(v, text)| {
                let selected = if typed(CaseForm::Transition, "action") == *v {
                    " selected"
                } else {
                    ""
                };
                format!("<option value=\"{v}\"{selected}>{text}</option>")
            })
            .collect();
            body.push_str(&format!(
                "<form method=\"post\" action=\"/console/cases/{id}/transition\" class=\"card\">{}\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"version\" value=\"{version}\">\
                 <select name=\"action\" id=\"case-action\">{options}</select> \
                 {} <input name=\"note\" id=\"case-note\" size=\"30\" value=\"{}\"> \
                 {} <input name=\"resolution\" id=\"case-resolution\" size=\"30\" value=\"{}\"> \
                 <button id=\"case-move\">{}</button></form>",
                why(CaseForm::Transition, "case-move-error"),
                t(l, "备注", "Note"),
                typed(CaseForm::Transition, "note"),
                t(
                    l,
                    "结论（解决/驳回时必填）",
                    "Resolution (to resolve or reject)"
                ),
                typed(CaseForm::Transition, "resolution"),
                t(l, "更新状态", "Move"),
                version = k.version,
            ));
        }
        if who.is_staff()
            && k.kind == CaseKind::RefundApplication
            && (!k.state.is_closed() || k.refund_unrecorded)
            && k.refund_code.as_deref() != Some("00")
        {
            // A closed case's refund made and not recorded: approving again records it.
            let label = if k.refund_unrecorded {
                t(
                    l,
                    "记录已执行的退货（处理中途中断，结果未写入工单）",
                    "Record the refund made (its result never reached the case)",
                )
            } else {
                t(l, "批准退货", "Approve refund")
            };
            body.push_str(&format!(
                "<form method=\"post\" action=\"/console/cases/{id}/approve-refund\" class=\"card\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button class=\"approve\" id=\"approve-{id}\">{label}</button></form>"
            ));
        }
        Ok((t(l, "工单", "Case").to_owned(), body))
    }
}

/// `61 / 31 (202611)`: application type, software version, sub-version; `-` before any report.
fn software_text(h: &query::TerminalHealth) -> String {
    match (
        h.application_type,
        h.software_version,
        h.software_sub_version,
    ) {
        (Some(app), Some(version), Some(sub)) => format!("{app:02} / {version:02} ({sub:06})"),
        _ => "-".to_owned(),
    }
}

/// `+600 秒` / `+600 s` (terminal ahead) or `-42 秒`; `-` when the terminal never sent fields
/// 12/13.
fn drift_text(l: Lang, drift_s: Option<i64>) -> String {
    drift_s.map_or_else(|| "-".to_owned(), |d| format!("{d:+} {}", t(l, "秒", "s")))
}

fn format_time(ms: i64) -> String {
    let day = format_date(ms);
    let secs = ms
        .saturating_add(8 * 3_600_000)
        .rem_euclid(query::MS_PER_DAY)
        / 1000;
    format!(
        "{day} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

async fn add_entry(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let c = form_ctx(&web, &headers);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = async {
        who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
        let text = form.get("text").map(String::as_str).unwrap_or_default();
        api::add_entry_for(&web, &who, id, text).await
    }
    .await;
    case_form_answer(&web, &c, &who, id, (&form, CaseForm::Entry), result)
}

async fn terminals(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let l = c.lang;
        let list = query::terminal_health(&web, &who, None)?;
        let mut body = format!(
            "<h1>{}</h1><p>{}</p><table id=\"terminals\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t(l, "终端健康", "Terminal health"),
            t(l, "最近 7 天。", "Last 7 days."),
            t(l, "终端", "Terminal"),
            t(l, "签到", "Signed in"),
            t(l, "最近签到", "Last sign-in"),
            t(l, "交易", "Transactions"),
            t(l, "MAC 失败", "MAC failures"),
            t(l, "超时", "Timeouts"),
            t(l, "冲正", "Reversals"),
            t(l, "密钥/MAC", "Keys/MAC"),
            t(l, "软件版本", "Software version"),
            t(l, "时钟偏差", "Clock drift"),
            t(l, "芯片降级", "Fallbacks"),
            t(l, "问题与处理", "Problems and fixes"),
        );
        for h in &list {
            let problems: String = h
                .problems
                .iter()
                .map(|p| {
                    format!(
                        "<div class=\"bad\">{}</div>",
                        esc(if l == Lang::En { p.en } else { p.zh })
                    )
                })
                .collect();
            let problems = if problems.is_empty() {
                format!("<span class=\"ok\">{}</span>", t(l, "正常", "OK"))
            } else {
                problems
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td class=\"fallbacks\">{}</td><td>{problems}</td></tr>",
                // Staff see every merchant's terminals: whose each one is.
                with_mid(esc(&h.tid), who.is_staff().then_some(h.mid.as_str())),
                if h.signed_in { t(l, "是", "yes") } else { t(l, "否", "no") },
                h.last_sign_in_ms.map(format_time).unwrap_or_else(|| "-".to_owned()),
                h.transactions,
                h.mac_failures,
                h.timeouts,
                h.reversals,
                esc(key_scheme_text(l, &h.key_scheme)),
                esc(mac_text(l, &h.mac_algorithm)),
                software_text(h),
                drift_text(l, h.clock_drift_s),
                h.fallbacks,
            ));
        }
        body.push_str(&format!(
            "</table><p>{}</p>",
            t(
                l,
                "软件版本取自终端报文头（应用类型 / 版本 / 子版本）；时钟偏差为终端本地时间（域 12/13）减主机北京时间；芯片降级为芯片卡改刷磁条的笔数（域 60.5 = 2）。",
                "Software version is from the terminals' frame headers (application type / version / sub-version); clock drift is the terminal's local time (fields 12/13) less the host's China time; fallbacks count chip cards read by magstripe (field 60.5 = 2)."
            )
        ));
        Ok::<_, ApiError>((t(l, "终端", "Terminals").to_owned(), body))
    })();
    respond(&c, &who, result)
}

/// A terminal's key scheme (60.3) in words.
fn key_scheme_text(l: Lang, scheme: &str) -> &str {
    match scheme {
        "001" => t(l, "单倍长 DES", "single DES"),
        "003" => t(l, "双倍长 3DES", "double-length 3DES"),
        "004" => t(l, "双倍长 3DES＋磁道密钥", "3DES with a track key"),
        "006" => t(l, "国密 SM4", "SM4"),
        other => other,
    }
}

/// A terminal's MAC algorithm in words.
fn mac_text(l: Lang, mac: &str) -> &str {
    match mac {
        "x919" => "X9.19",
        "cup-ecb" => t(l, "银联 ECB", "CUP ECB"),
        "sm4" => t(l, "国密 SM4", "SM4"),
        other => other,
    }
}

/// Refused reversals the console lists, the newest first.
const REFUSED_REVERSALS_SHOWN: usize = 50;

async fn console(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    if !who.is_staff() {
        return redirect("/portal");
    }
    let result = (|| {
        let l = c.lang;
        let refunds = api::pending_refunds(&web, &who)?;
        let mut open: Vec<Case> = web.cases.still_open(None)?;
        // Overdue first, then the oldest: what has waited longest is worked first.
        let now_ms = web.clock.now_ms();
        open.sort_by_key(|c| (c.due_at_ms.is_none_or(|due| due >= now_ms), c.created_at_ms));
        let mut body = format!(
            "<h1>{}</h1><h2>{} ({})</h2>{}<h2>{} ({})</h2>{}",
            t(l, "运营台", "Operator console"),
            t(l, "待批退货", "Refund approvals"),
            refunds.len(),
            case_table(l, &refunds, "refund-queue", who.csrf.as_deref(), now_ms),
            t(l, "工单队列", "Case queue"),
            open.len(),
            case_table(l, &open, "case-queue", None, now_ms),
        );
        let applied: Vec<_> = web
            .store
            .merchant_profiles()?
            .into_iter()
            .filter(|p| p.state == store::risk::MerchantState::Applied)
            .collect();
        body.push_str(&format!(
            "<h2>{} ({})</h2><ul id=\"merchant-queue\">",
            t(l, "待审核商户", "Merchants awaiting approval"),
            applied.len()
        ));
        let csrf = esc(who.csrf.as_deref().unwrap_or(""));
        for p in &applied {
            // What the reviewer checks: the licence and the legal person, beside the category
            // and the address.
            body.push_str(&format!(
                "<li>{} · MCC {} · {} · {}: {} · {}: {} <form class=\"inline\" method=\"post\" action=\"/console/merchants/{}/approve\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button class=\"approve-merchant\">{}</button></form></li>",
                esc(&p.mid),
                esc(&p.mcc),
                esc(&p.address),
                t(l, "统一社会信用代码", "Licence"),
                esc(&p.licence_no),
                t(l, "法定代表人", "Legal person"),
                esc(&p.legal_person),
                esc(&p.mid),
                t(l, "批准入网", "Approve")
            ));
        }
        body.push_str("</ul>");
        // The newest open alerts; one more is read to tell "50" from "more than 50".
        let mut alerts = web
            .store
            .risk_alerts(Some(store::risk::AlertState::Open), ALERTS_SHOWN + 1)?;
        let more = alerts.len() > ALERTS_SHOWN as usize;
        alerts.truncate(ALERTS_SHOWN as usize);
        body.push_str(&format!(
            "<h2>{} ({}{})</h2>{}<table id=\"risk-alerts\">",
            t(l, "风险预警", "Risk alerts"),
            alerts.len(),
            if more { "+" } else { "" },
            if more {
                format!(
                    "<p>{}</p>",
                    t(
                        l,
                        "只列出最新的 50 条；处理完后会显示更早的。",
                        "The newest 50 are listed; older ones show as these are handled."
                    )
                )
            } else {
                String::new()
            },
        ));
        body.push_str(&format!(
            "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t(l, "时间", "Raised"),
            t(l, "规则", "Rule"),
            t(l, "商户号", "Merchant"),
            t(l, "终端号", "Terminal"),
            t(l, "详情", "What was seen"),
            t(l, "处理", "Action"),
        ));
        // Each alert is cleared (a false alarm) or acted on: its terminal or its merchant
        // suspended (`risk::ops::resolve_alert`), with a note for the record.
        let responses = format!(
            "<option value=\"clear\">{}</option><option value=\"suspend_terminal\">{}</option>\
             <option value=\"suspend_merchant\">{}</option>",
            t(l, "解除（误报）", "Clear (false alarm)"),
            t(l, "停用该终端", "Suspend the terminal"),
            t(l, "暂停该商户", "Suspend the merchant"),
        );
        for a in &alerts {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/console/risk/alerts/{}/resolve\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><select name=\"response\">{responses}</select> \
                 <input name=\"note\" size=\"16\" placeholder=\"{}\"> <button class=\"resolve-alert\">{}</button></form></td></tr>",
                esc(&format_time(a.raised_at_ms)),
                esc(alert_kind_text(l, &a.kind)),
                esc(&a.mid),
                esc(&a.tid),
                esc(match (l, &a.detail_zh) {
                    (Lang::Zh, Some(zh)) => zh,
                    _ => &a.detail,
                }),
                a.id,
                t(l, "备注", "Note"),
                t(l, "处理", "Handle")
            ));
        }
        body.push_str("</table>");
        let changes = crate::ops::pending_changes(&web, &who)?;
        body.push_str(&format!(
            "<h2>{} ({})</h2><table id=\"rebind-queue\">",
            t(l, "待复核的结算账户变更", "Re-bindings to confirm"),
            changes.len()
        ));
        if !changes.is_empty() {
            body.push_str(&format!(
                "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
                t(l, "商户", "Merchant"),
                t(l, "现绑定账户", "Bound now"),
                t(l, "新账户", "New account"),
                t(l, "申请人", "Asked by"),
                t(l, "申请时间", "Asked at"),
                t(l, "原因", "Why"),
                t(l, "复核", "Decision"),
            ));
        }
        for ch in &changes {
            // What it replaces, for the checker to see a change to someone else's account.
            let bound_now = web
                .store
                .bound_account(&ch.mid)?
                .map_or_else(|| "-".to_owned(), |a| a.number_masked);
            body.push_str(&format!(
                "<tr><td><a href=\"/portal/settlement?mid={mid}\">{mid}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
                 <form method=\"post\" action=\"/console/account-changes/{id}/confirm\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button class=\"confirm-change\">{}</button></form> \
                 <form method=\"post\" action=\"/console/account-changes/{id}/reject\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input name=\"note\" placeholder=\"{}\" size=\"12\" required>\
                 <button class=\"reject-change\">{}</button></form></td></tr>",
                esc(&bound_now),
                esc(&ch.number_masked),
                esc(&ch.requested_by),
                esc(&format_time(ch.requested_at_ms)),
                esc(&change_note_text(l, &ch.note)),
                t(l, "复核通过", "Confirm"),
                t(l, "拒绝原因", "Why refused"),
                t(l, "拒绝", "Refuse"),
                mid = esc(&ch.mid),
                id = ch.id,
            ));
        }
        body.push_str("</table>");
        // Retried after bank system errors for a day: retrying is harmless (one reference, paid
        // once at most) but will not tell why the bank fails; an operator calls the bank.
        let now_ms = web.clock.now_ms();
        let stuck_failure = domain::PayoutFailure::BankSystemError.key();
        let stuck_by_ms = now_ms.saturating_sub(settlement::PAYOUT_STUCK_AFTER_MS);
        let stuck = web
            .store
            .count_payouts_failing_since(stuck_failure, stuck_by_ms)?;
        // Payouts a failure left waiting (held, returned, retrying), however many payouts went
        // out since: the stuck ones first, then the newest; counted whole, as the metrics count.
        let (failed_count, failed) =
            web.store
                .payouts_failing(stuck_failure, stuck_by_ms, crate::ops::PAYOUTS_MAX)?;
        let stuck_note = if stuck > 0 {
            format!(
                "<p class=\"bad\" id=\"payouts-stuck\">{}</p>",
                esc(&match l {
                    Lang::Zh => format!(
                        "{stuck} 笔出款自首次出款起已超过 {} 小时，收款银行仍一直返回系统故障；\
                         系统仍以同一出款流水号每小时重试（不会重复付款），请联系收款银行。",
                        settlement::PAYOUT_STUCK_AFTER_MS / 3_600_000
                    ),
                    Lang::En => format!(
                        "{stuck} stuck: the receiving bank has answered with system errors for \
                         {} h or more since the first attempt. They are still retried hourly \
                         under the same reference (never paid twice): call the bank.",
                        settlement::PAYOUT_STUCK_AFTER_MS / 3_600_000
                    ),
                })
            )
        } else {
            String::new()
        };
        let shown_note = if failed_count > failed.len() as u64 {
            format!(
                "<p id=\"payout-failures-shown\">{}</p>",
                esc(&match l {
                    Lang::Zh => format!("仅列出卡住的与最新的共 {} 笔。", failed.len()),
                    Lang::En => format!(
                        "The stuck ones and the newest, {} in all, are listed.",
                        failed.len()
                    ),
                })
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<h2>{} ({failed_count})</h2>{stuck_note}{shown_note}<table id=\"payout-failures\"><tr><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th></tr>",
            t(l, "出款失败", "Payout failures"),
            t(l, "商户号", "Merchant"),
            t(l, "出款日", "Payout day"),
            t(l, "金额", "Amount"),
            t(l, "状态", "State"),
            t(l, "失败原因", "Failure"),
        ));
        for p in &failed {
            let stuck = match p.first_attempt_ms {
                Some(first) if settlement::is_stuck(p, now_ms) => format!(
                    " <b class=\"bad payout-stuck\">{} {}</b>",
                    t(l, "卡住，首次出款于", "stuck since"),
                    esc(&format_time(first)),
                ),
                _ => String::new(),
            };
            // To the merchant's settlement page: its account, its payouts, the re-binding.
            body.push_str(&format!(
                "<tr><td><a class=\"payout-merchant\" href=\"/portal/settlement?mid={mid}\">{mid}</a></td>\
                 <td>{}</td><td>¥{}</td><td>{}</td><td>{}{stuck}</td></tr>",
                esc(&date_text(&p.payout_date)),
                yuan(p.amount_fen),
                payout_state_text(l, p.state.as_str()),
                // What went wrong in the page's language, as the merchant's pages say it.
                esc(p.failure.as_deref().map_or("", |key| {
                    diagnosis::PayoutFailure::from_key(key)
                        .map_or(key, |kind| diagnosis::diagnose_payout(kind).title.get(l))
                })),
                mid = esc(&p.mid),
            ));
        }
        body.push_str("</table>");
        let (count, refused) =
            crate::query::refusals_standing(&web, REFUSED_REVERSALS_SHOWN as u32)?;
        body.push_str(&format!(
            "<h2>{} ({count})</h2><table id=\"refused-reversals\"><tr><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t(l, "发卡行拒绝的冲正", "Reversals refused by issuers"),
            t(l, "参考号", "RRN"),
            t(l, "商户号", "Merchant"),
            t(l, "金额", "Amount"),
            t(l, "发卡行", "Issuer"),
            t(l, "拒绝时间", "Refused at"),
            t(l, "原因", "Why"),
        ));
        for item in &refused {
            // The issuer's code as the queue kept it, worded in the page's language; when, from
            // the event the switch wrote with it.
            let done = web
                .store
                .events(item.txn_id)?
                .into_iter()
                .rev()
                .find(|e| e.kind == "reversal_done");
            let why = match reversal_code(item) {
                Some(code) => format!(
                    "{code}（{}）{}",
                    diagnosis::diagnose_str(code).title.get(l),
                    t(
                        l,
                        "：请与发卡行核实这笔交易在持卡人卡上的实际结果",
                        ": ask the issuer what it did on the cardholder's card"
                    )
                ),
                None => t(
                    l,
                    "请与发卡行核实这笔交易在持卡人卡上的实际结果",
                    "ask the issuer what it did on the cardholder's card",
                )
                .to_owned(),
            };
            let when = done
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| format_time(e.at_ms));
            body.push_str(&reversal_row(&web, item, [when, why])?);
        }
        body.push_str("</table>");
        // Reversals the issuer has not acknowledged after many resends: resent for ever, the
        // approval they undo standing at the issuer meanwhile.
        let (count, stuck) = crate::query::reversals_stuck(&web, REFUSED_REVERSALS_SHOWN as u32)?;
        body.push_str(&format!(
            "<h2>{} ({count})</h2><p>{}</p><table id=\"stuck-reversals\"><tr><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t(
                l,
                "多次重发仍未确认的冲正",
                "Reversals resent and still not acknowledged"
            ),
            t(
                l,
                "系统会继续重发；请检查与该发卡行的线路和配置，或与发卡行核实",
                "shoudan keeps resending them: check the link to the issuer and its set-up, or \
                 ask the issuer"
            ),
            t(l, "参考号", "RRN"),
            t(l, "商户号", "Merchant"),
            t(l, "金额", "Amount"),
            t(l, "发卡行", "Issuer"),
            t(l, "重发次数", "Attempts"),
            t(l, "最近一次", "Last answer"),
        ));
        for item in &stuck {
            let last = reversal_code(item).map_or_else(
                || t(l, "没有应答或无法发送", "no answer, or not sent").to_owned(),
                |code| format!("{code}（{}）", diagnosis::diagnose_str(code).title.get(l)),
            );
            body.push_str(&reversal_row(
                &web,
                item,
                [item.attempts.to_string(), last],
            )?);
        }
        body.push_str("</table>");

        Ok::<_, ApiError>((t(l, "运营台", "Console").to_owned(), body))
    })();
    respond(&c, &who, result)
}

async fn approve_refund(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let c = form_ctx(&web, &headers);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = async {
        who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
        api::approve_refund_for(&web, &who, id).await
    }
    .await;
    match result {
        Ok(_) => redirect(&format!("/portal/cases/{id}")),
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

/// A risk rule's kind (as its alert records it) in the page's language.
fn alert_kind_text(l: Lang, kind: &str) -> &str {
    match kind {
        "card-types" => t(l, "卡种限制", "card types"),
        "amount-max" => t(l, "单笔限额", "amount limit"),
        "daily-amount-max" => t(l, "单日限额", "daily limit"),
        "card-velocity" => t(l, "同卡交易过频", "card velocity"),
        "card-testing" => t(l, "疑似试卡", "card testing"),
        "wrong-pins" => t(l, "多卡密码错误", "wrong PINs across cards"),
        "peer-change" => t(l, "终端网络位置变化", "terminal moved network"),
        "mcc-profile" => t(l, "交易与行业不符", "outside the merchant's trade"),
        other => other,
    }
}

fn role_text(l: Lang, role: store::web::Role) -> &'static str {
    match role {
        store::web::Role::Merchant => t(l, "商户", "merchant"),
        store::web::Role::Operator => t(l, "运营", "operator"),
        store::web::Role::Admin => t(l, "管理员", "admin"),
    }
}

fn payout_state_text(l: Lang, state: &str) -> &'static str {
    match state {
        "pending" => t(l, "待出款", "due"),
        "sent" => t(l, "已出款", "paid"),
        "held" => t(l, "暂停（等待重新绑定）", "held (re-bind the account)"),
        _ => t(l, "未知", "unknown"),
    }
}

async fn settlement_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let asked = params
        .get("mid")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    let payouts_before = params
        .get("payouts_before")
        .map(String::as_str)
        .filter(|b| !b.is_empty());
    let result = settlement_body(&web, &c, &who, (asked, payouts_before), None);
    respond(&c, &who, result)
}

/// A binding the form sent that was refused: why, and what was typed (the account number
/// itself is not shown again).
struct RefusedBinding<'a> {
    error: &'a ApiError,
    form: &'a Params,
}

/// The settlement page: `asked` (merchant, the page of payouts after a cursor).
fn settlement_body(
    web: &Web,
    c: &Ctx,
    who: &Principal,
    (asked, payouts_before): (Option<&str>, Option<&str>),
    refused: Option<RefusedBinding<'_>>,
) -> Result<(String, String), ApiError> {
    let l = c.lang;
    let mid = who.merchant_filter(asked)?;
    // A merchant the journal does not hold (a mistyped MID) is not found, as the API answers:
    // an empty page with a bind form would read as a merchant with nothing bound.
    if let Some(mid) = &mid {
        crate::ops::known_merchant(web, mid)?;
    }
    let totals = crate::ops::settlements_for(web, who, mid.as_deref())?;
    let mut body = format!(
        "<h1>{}</h1><h2>{}</h2><table id=\"clearing\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        t(l, "结算", "Settlement"),
        t(l, "清算", "Clearing"),
        t(l, "清算日", "Clearing date"),
        t(l, "商户", "Merchant"),
        t(l, "笔数", "Lines"),
        t(l, "交易额", "Gross"),
        t(l, "手续费", "Fees"),
        t(l, "应结金额", "Net"),
    );
    for item in jget(&totals, "items").as_array().into_iter().flatten() {
        let fen = |k: &str| jget(item, k).as_i64().unwrap_or(0);
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&date_text(
                jget(item, "clearing_date").as_str().unwrap_or("")
            )),
            esc(jget(item, "mid").as_str().unwrap_or("")),
            jget(item, "lines").as_u64().unwrap_or(0),
            domain::money::yuan(fen("gross_fen")),
            domain::money::yuan(fen("fee_fen")),
            domain::money::yuan(fen("net_fen")),
        ));
    }
    body.push_str(&format!(
        "</table><h2>{}</h2><table id=\"batches\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        t(l, "终端批次结算", "Terminal batch settlements"),
        t(l, "终端", "Terminal"),
        t(l, "批次号", "Batch"),
        t(l, "结算时间", "Settled at"),
        t(l, "结果", "Result"),
        t(l, "终端总数", "Terminal totals"),
        t(l, "主机总数", "Host totals"),
    ));
    let side = |v: &serde_json::Value| -> String {
        if v.is_null() {
            return t(l, "无法识别", "unreadable").to_owned();
        }
        ["domestic", "foreign"]
            .iter()
            .map(|k| {
                let h = jget(v, k);
                let n = |f: &str| jget(h, f).as_i64().unwrap_or(0);
                format!(
                    "{} {} {}{} ¥{} · {} {}{} ¥{}",
                    if *k == "domestic" {
                        t(l, "内卡", "Domestic")
                    } else {
                        t(l, "外卡", "Foreign")
                    },
                    t(l, "借记", "debit"),
                    n("debit_count"),
                    t(l, "笔", ""),
                    yuan(n("debit_fen")),
                    t(l, "贷记", "credit"),
                    n("credit_count"),
                    t(l, "笔", ""),
                    yuan(n("credit_fen")),
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    for b in jget(&totals, "batches").as_array().into_iter().flatten() {
        let result = jget(b, "result").as_u64().unwrap_or(3);
        let words = jget(
            jget(b, "result_text"),
            if l == Lang::Zh { "zh" } else { "en" },
        );
        body.push_str(&format!(
            "<tr class=\"batch\"><td>{}</td><td>{:06}</td><td>{}</td><td class=\"{}\">{} — {}</td><td>{}</td><td>{}</td></tr>",
            // Staff looking at every merchant: whose terminal each is.
            with_mid(
                esc(jget(b, "tid").as_str().unwrap_or("")),
                (who.is_staff() && mid.is_none()).then(|| jget(b, "mid").as_str().unwrap_or("")),
            ),
            jget(b, "batch_no").as_u64().unwrap_or(0),
            esc(&format_time(jget(b, "settled_at_ms").as_i64().unwrap_or(0))),
            if result == 1 { "ok" } else { "bad" },
            result,
            esc(words.as_str().unwrap_or("")),
            side(jget(b, "terminal_totals")),
            side(jget(b, "host_totals")),
        ));
        for d in jget(b, "differences").as_array().into_iter().flatten() {
            let pick = |v: &serde_json::Value| {
                esc(jget(v, if l == Lang::Zh { "zh" } else { "en" })
                    .as_str()
                    .unwrap_or(""))
            };
            let amount = |k: &str| {
                jget(d, k)
                    .as_i64()
                    .map_or_else(|| "—".to_owned(), |f| format!("¥{}", yuan(f)))
            };
            body.push_str(&format!(
                "<tr class=\"batch-diff\"><td></td><td>{} {:06}</td><td>{}</td><td class=\"bad\">{}</td><td>{}: {}<br>{}: {}</td><td>{}</td></tr>",
                t(l, "流水", "Trace"),
                jget(d, "stan").as_u64().unwrap_or(0),
                esc(jget(d, "pan_masked").as_str().unwrap_or("")),
                pick(jget(d, "kind_text")),
                t(l, "终端", "Terminal"),
                amount("terminal_amount_fen"),
                t(l, "主机", "Host"),
                amount("host_amount_fen"),
                pick(jget(d, "what_to_do")),
            ));
        }
    }
    body.push_str(&format!(
        "</table><h2>{}</h2><table id=\"payouts\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        t(l, "结算款", "Payouts"),
        t(l, "出款日", "Payout day"),
        t(l, "交易截止日", "Cleared up to"),
        t(l, "金额", "Amount"),
        t(l, "账户", "Account"),
        t(l, "状态", "State"),
        t(l, "出款次数", "Attempts"),
        t(l, "银行流水号", "Bank reference"),
        t(l, "失败原因与处理", "Failure and what to do"),
    ));
    let payouts = crate::ops::payouts_for(web, who, mid.as_deref(), None, payouts_before)?;
    for p in &payouts {
        let d = p
            .failure
            .as_deref()
            .and_then(diagnosis::PayoutFailure::from_key)
            .map(diagnosis::diagnose_payout);
        let failure = d.map_or_else(String::new, |d| {
            let steps: String = d
                .merchant_steps
                .iter()
                .map(|s| format!("<li>{}</li>", esc(s.get(l))))
                .collect();
            format!(
                "<b class=\"bad\">{}</b> {}<ol>{steps}</ol>",
                esc(d.title.get(l)),
                esc(d.meaning.get(l))
            )
        });
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>¥{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{failure}</td></tr>",
            with_mid(
                esc(&date_text(&p.payout_date)),
                (who.is_staff() && mid.is_none()).then_some(p.mid.as_str()),
            ),
            esc(&date_text(&p.cutoff_date)),
            yuan(p.amount_fen),
            esc(&p.account_masked),
            payout_state_text(l, p.state.as_str()),
            p.attempts,
            // What the merchant's bank can trace the credit by.
            esc(p.bank_reference.as_deref().unwrap_or("-")),
        ));
    }
    body.push_str("</table>");
    // A full page: the older ones on the next.
    if let Some(next) = crate::ops::payouts_cursor(&payouts) {
        let merchant = mid
            .as_deref()
            .map_or_else(String::new, |m| format!("mid={}&", url_escape(m)));
        body.push_str(&format!(
            "<p><a id=\"older-payouts\" href=\"/portal/settlement?{merchant}payouts_before={}\">{}</a></p>",
            url_escape(&next),
            t(l, "更早的结算款", "Older payouts")
        ));
    }
    if let Some(m) = &mid {
        let account = crate::ops::bound_account_json(web, who, m)?;
        let a = jget(&account, "account");
        let needs_rebind = jget(a, "needs_rebind") == true;
        let shown = if a.is_null() {
            t(l, "尚未绑定。", "None bound yet.").to_owned()
        } else {
            format!(
                "{} · {} · {}{}",
                esc(jget(a, "number_masked").as_str().unwrap_or("")),
                esc(jget(a, "holder_name").as_str().unwrap_or("")),
                esc(&bank_name(
                    web,
                    l,
                    jget(a, "bank_code").as_str().unwrap_or("")
                )),
                if needs_rebind {
                    t(
                        l,
                        " — 结算款出款失败，请重新绑定",
                        " — a payout failed: re-bind",
                    )
                } else {
                    ""
                }
            )
        };
        body.push_str(&format!(
            "<h2>{}</h2><div class=\"card{}\" id=\"bound-account\">{shown}</div>",
            t(l, "结算账户", "Settlement account"),
            if needs_rebind { " red" } else { "" },
        ));
        for ch in jget(&account, "changes").as_array().into_iter().flatten() {
            if jget(ch, "state") == "pending_confirmation" {
                body.push_str(&format!(
                    "<p id=\"pending-change\">{} {}</p>",
                    esc(jget(ch, "number_masked").as_str().unwrap_or("")),
                    t(l, "等待运营复核", "waiting for an operator to confirm")
                ));
            }
        }
        // The merchant's last request refused by the checker: which account, and why, so the
        // merchant knows what to put right.
        let changes = jget(&account, "changes").as_array();
        if let Some(last) = changes.and_then(|c| c.last())
            && jget(last, "state") == "rejected"
        {
            body.push_str(&format!(
                "<p class=\"bad\" id=\"rejected-change\">{} {} {}: {}</p>",
                t(l, "最近提交的结算账户", "The account last submitted,"),
                esc(jget(last, "number_masked").as_str().unwrap_or("")),
                t(l, "未通过复核", "was refused by the checker"),
                match jget(last, "note").as_str().filter(|n| !n.trim().is_empty()) {
                    Some(note) => esc(note),
                    // Refused before a reason was required.
                    None => t(
                        l,
                        "（未说明原因，请联系收单机构）",
                        "(no reason given: ask the acquirer)"
                    )
                    .to_owned(),
                },
            ));
        }
        // A refused binding comes back with why and what was typed, card numbers masked
        // (the account number is typed again).
        let typed = |k: &str| {
            refused
                .as_ref()
                .and_then(|r| r.form.get(k))
                .map(|v| domain::mask_card_numbers(v).into_owned())
                .unwrap_or_default()
        };
        if let Some(r) = &refused {
            body.push_str(&format!(
                "<div class=\"err\" id=\"bind-error\">{}</div>",
                esc(r.error.detail(l))
            ));
        }
        let bank_selected = if typed("kind") == "bank" {
            " selected"
        } else {
            ""
        };
        // The account's bank by name, from the directory: a merchant knows its bank, not the
        // directory's code for it.
        let chosen = typed("bank_code");
        let mut banks: Vec<&domain::issuer::Bank> = web.directory.banks().iter().collect();
        banks.sort_by(|a, b| a.name_zh().cmp(b.name_zh()));
        let bank_options: String = banks
            .iter()
            .map(|b| {
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    esc(b.code()),
                    if b.code() == chosen { " selected" } else { "" },
                    esc(&bank_name(web, l, b.code()))
                )
            })
            .collect();
        body.push_str(&format!(
            "<form method=\"post\" action=\"/portal/settlement/account\" class=\"card\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"mid\" value=\"{}\">\
             <b>{}</b><br><select name=\"kind\" id=\"account-kind\"><option value=\"card\">{}</option><option value=\"bank\"{bank_selected}>{}</option></select> \
             {} <input name=\"number\" id=\"account-number\" autocomplete=\"off\"> \
             {} <input name=\"holder_name\" id=\"account-holder\" value=\"{}\"> \
             {} <select name=\"bank_code\" id=\"account-bank\"><option value=\"\">{}</option>{bank_options}</select> \
             <button id=\"bind\">{}</button><br><small>{}</small></form>",
            esc(who.csrf.as_deref().unwrap_or("")),
            esc(m),
            t(l, "绑定或更换结算账户", "Bind or change the settlement account"),
            t(l, "银行卡", "Card"),
            t(l, "对公账户", "Business bank account"),
            t(l, "账号", "Number"),
            t(l, "户名", "Holder"),
            esc(&typed("holder_name")),
            t(l, "开户银行", "Bank"),
            t(l, "（银行卡可不选）", "(not needed for a card)"),
            t(l, "提交", "Submit"),
            t(
                l,
                "银行卡可以不选开户银行；对公账户必须选择。",
                "A card needs no bank chosen; a business account does."
            ),
        ));
    }
    Ok((t(l, "结算", "Settlement").to_owned(), body))
}

async fn bind_account(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(mut form): Form<Params>,
) -> Response {
    // Taken out of the form, not copied: wiped once bound.
    let number = zeroize::Zeroizing::new(form.remove("number").unwrap_or_default());
    let c = form_ctx(&web, &headers);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = async {
        who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        crate::ops::bind_for(
            &web,
            &who,
            crate::ops::BindBody {
                mid: form.get("mid").cloned(),
                kind: field("kind"),
                number,
                holder_name: field("holder_name"),
                bank_code: form.get("bank_code").cloned(),
            },
        )
        .await
    }
    .await;
    match result {
        // Staff binding for a merchant go back to that merchant's page.
        Ok(_) => match form.get("mid").filter(|m| who.is_staff() && !m.is_empty()) {
            Some(mid) => redirect(&format!("/portal/settlement?mid={}", url_escape(mid))),
            None => redirect("/portal/settlement"),
        },
        // What was wrong with the account as typed: the page again, with why and what was typed.
        Err(e) if e.code == "bad_account" => {
            let asked = form
                .get("mid")
                .map(String::as_str)
                .filter(|m| !m.is_empty());
            let refused = RefusedBinding {
                error: &e,
                form: &form,
            };
            let page = settlement_body(&web, &c, &who, (asked, None), Some(refused));
            match page {
                Ok((title, body)) => {
                    let mut response = render(&c, &who, &title, &body);
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    response
                }
                Err(e) => error_page(&c, Some(&who), &e),
            }
        }
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

/// Runs a console form action: session, CSRF, then `action`; back to the console.
async fn console_action<F, Fut>(
    web: &Web,
    headers: &HeaderMap,
    form: &Params,
    action: F,
) -> Response
where
    F: FnOnce(Principal) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    console_action_then(web, headers, form, "/console", action).await
}

/// [`console_action`], then back to the page `back`.
async fn console_action_then<F, Fut>(
    web: &Web,
    headers: &HeaderMap,
    form: &Params,
    back: &str,
    action: F,
) -> Response
where
    F: FnOnce(Principal) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let c = form_ctx(web, headers);
    let who = match page_user(web, headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    if let Err(e) = who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default()) {
        return error_page(&c, Some(&who), &e);
    }
    match action(who.clone()).await {
        Ok(_) => redirect(back),
        Err(e) => error_page(&c, Some(&who), &e),
    }
}

async fn confirm_change(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let w = web.clone();
    console_action(&web, &headers, &form, |who| async move {
        crate::ops::decide_change(&w, &who, id, true, "").await
    })
    .await
}

async fn reject_change(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let w = web.clone();
    let note = form.get("note").cloned().unwrap_or_default();
    console_action(&web, &headers, &form, |who| async move {
        crate::ops::decide_change(&w, &who, id, false, &note).await
    })
    .await
}

async fn approve_merchant(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(mid): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let w = web.clone();
    let note = form.get("note").cloned().unwrap_or_default();
    console_action(&web, &headers, &form, |who| async move {
        crate::ops::review_for(&w, &who, &mid, risk::MerchantAction::Approve, &note).await
    })
    .await
}

/// The console's answer to a risk alert: `response` clear, suspend_terminal or
/// suspend_merchant, with the operator's `note`.
async fn resolve_alert(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let w = web.clone();
    let response = form.get("response").cloned().unwrap_or_default();
    let note = form
        .get("note")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "from the console".to_owned());
    console_action(&web, &headers, &form, |who| async move {
        crate::ops::resolve_alert_for(&w, &who, id, &response, &note).await
    })
    .await
}

/// A member of a JSON object, `null` when absent.
fn jget<'v>(value: &'v serde_json::Value, key: &str) -> &'v serde_json::Value {
    value.get(key).unwrap_or(&serde_json::Value::Null)
}

async fn transition_case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let c = form_ctx(&web, &headers);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = async {
        who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        // The form carries the version the page showed: a case moved since is not moved again
        // from what this operator never saw.
        let version = match form.get("version") {
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("version: a whole number"))?,
            ),
            None => None,
        };
        api::transition_for(
            &web,
            &who,
            id,
            api::TransitionBody {
                action: field("action"),
                note: field("note"),
                resolution: form.get("resolution").cloned(),
                version,
            },
        )
        .await
    }
    .await;
    case_form_answer(&web, &c, &who, id, (&form, CaseForm::Transition), result)
}

/// Audit rows on one page of the audit log, newest first; a link leads to older ones.
const AUDIT_PER_PAGE: u32 = 100;

/// The admin's users: role, merchant, wrong passwords in a row and the lock, with a button to
/// unlock a user who has proved who they are.
async fn users(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        who.require_admin("manage users")?;
        let l = c.lang;
        let csrf = esc(who.csrf.as_deref().unwrap_or(""));
        let mut body = format!(
            "<h1>{}</h1><p>{}</p><table id=\"users\"><tr><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th></th><th></th></tr>",
            t(l, "用户", "Users"),
            t(
                l,
                "密码连续错误 10 次的用户锁定 30 分钟。确认是本人后可以解锁。",
                "A user with 10 wrong passwords in a row is locked for 30 minutes. Unlock once you \
                 know it is them."
            ),
            t(l, "用户名", "Username"),
            t(l, "名称", "Name"),
            t(l, "角色", "Role"),
            t(l, "商户", "Merchant"),
            t(l, "连续密码错误", "Wrong passwords"),
            t(l, "停用 / 锁定至", "Disabled / locked until"),
        );
        for auth::Standing {
            user,
            wrong_passwords: wrong,
            locked_until_ms: until,
            must_set_password,
        } in auth::users_standing(&web)?
        {
            let mut state = match (user.disabled, until) {
                (true, _) => t(l, "已停用", "disabled").to_owned(),
                (false, Some(until)) => format_time(until),
                (false, None) => "-".to_owned(),
            };
            if must_set_password {
                state.push_str(t(
                    l,
                    "（尚未设置自己的密码）",
                    " (has not set their own password yet)",
                ));
            }
            let form = |action: &str, class: &str, label: &str| {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/users/{}/{action}\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button class=\"{class}\">{label}</button></form>",
                    user.id
                )
            };
            let mut manage = if user.disabled {
                form("enable", "enable", t(l, "启用", "Enable"))
            } else {
                form("disable", "disable", t(l, "停用", "Disable"))
            };
            manage.push_str(&format!(
                "<form class=\"inline\" method=\"post\" action=\"/console/users/{}/password\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"password\" name=\"password\" class=\"new-password\" \
                 autocomplete=\"new-password\" placeholder=\"{}\">\
                 <button class=\"reset-password\">{}</button></form>",
                user.id,
                t(l, "新密码（至少 8 位）", "new password (8 or more)"),
                t(l, "重设密码", "Set password"),
            ));
            if user.id == who.user_id {
                manage = format!(
                    "<a href=\"/account\">{}</a>",
                    t(
                        l,
                        "在账户页修改自己的密码",
                        "Change your own password on the account page"
                    )
                );
            }
            let unlock = if wrong > 0 {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/users/{}/unlock\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button class=\"unlock\">{}</button></form>",
                    user.id,
                    if until.is_some() {
                        t(l, "解锁", "Unlock")
                    } else {
                        t(l, "清零", "Reset count")
                    }
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr class=\"user\" data-username=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td class=\"wrong\">{wrong}</td><td class=\"locked\">{}</td>\
                 <td>{unlock}</td><td>{manage}</td></tr>",
                esc(&user.username),
                esc(&user.username),
                esc(&user.display_name),
                role_text(l, user.role),
                esc(user.mid.as_deref().unwrap_or("-")),
                esc(&state),
            ));
        }
        body.push_str("</table>");
        Ok::<_, ApiError>((t(l, "用户", "Users").to_owned(), body))
    })();
    respond(&c, &who, result)
}

async fn unlock_user(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let w = web.clone();
    console_action_then(&web, &headers, &form, "/console/users", |who| async move {
        let user = api::user_for_admin(&w, &who, id)?;
        let was_locked = auth::unlock_user(&w, &who.username, &user).await?;
        Ok(serde_json::json!({ "was_locked": was_locked }))
    })
    .await
}

/// An admin's change to user `id` from the console's users page, then back to it.
async fn manage_user<F, Fut>(
    web: &Web,
    headers: &HeaderMap,
    form: &Params,
    id: i64,
    change: F,
) -> Response
where
    F: FnOnce(Web, Principal, store::web::UserRow) -> Fut,
    Fut: std::future::Future<Output = Result<store::web::UserRow, ApiError>>,
{
    let w = web.clone();
    console_action_then(web, headers, form, "/console/users", |who| async move {
        let user = api::user_for_admin(&w, &who, id)?;
        let user = change(w, who, user).await?;
        Ok(auth::user_json(&user))
    })
    .await
}

async fn disable_user(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    manage_user(&web, &headers, &form, id, |w, who, user| async move {
        auth::set_disabled(&w, &who, user, true).await
    })
    .await
}

async fn enable_user(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    manage_user(&web, &headers, &form, id, |w, who, user| async move {
        auth::set_disabled(&w, &who, user, false).await
    })
    .await
}

async fn reset_password(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let form = WipedForm(form);
    let password = zeroize::Zeroizing::new(form.get("password").cloned().unwrap_or_default());
    manage_user(&web, &headers, &form, id, |w, who, user| async move {
        auth::reset_password(&w, &who, user, &password).await
    })
    .await
}

/// One's own account: who one is, and a form to change one's password.
fn account_page(c: &Ctx, who: &Principal, note: Option<(bool, &str)>) -> Response {
    let l = c.lang;
    let status = match note {
        Some((false, _)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let note = note.map_or_else(String::new, |(ok, text)| {
        let (class, id) = if ok {
            ("done", "done")
        } else {
            ("err", "error")
        };
        format!("<div class=\"{class}\" id=\"{id}\">{}</div>", esc(text))
    });
    // A password an admin set: the user's own before anything else.
    let must = if who.must_set_password {
        format!(
            "<div class=\"err\" id=\"must-set-password\">{}</div>",
            t(
                l,
                "您的密码由管理员设置，请先设置您自己的密码，之后才能使用其他功能。",
                "Your password was set by an administrator: set your own before anything else."
            )
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>{}</h1>{must}{note}<p>{} <b id=\"username\">{}</b> · {} {}</p>\
         <h2>{}</h2><form method=\"post\" action=\"/account/password\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label>{} <input id=\"current\" name=\"current\" type=\"password\" autocomplete=\"current-password\"></label></p>\
         <p><label>{} <input id=\"new-password\" name=\"new\" type=\"password\" autocomplete=\"new-password\"></label></p>\
         <p><label>{} <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\"></label></p>\
         <p><button id=\"change-password\">{}</button></p></form><p>{}</p>",
        t(l, "账户", "Account"),
        t(l, "用户名", "Username"),
        esc(&who.username),
        t(l, "角色", "Role"),
        role_text(l, who.role),
        t(l, "修改密码", "Change password"),
        esc(who.csrf.as_deref().unwrap_or("")),
        t(l, "当前密码", "Current password"),
        t(
            l,
            "新密码（8 到 256 个字符）",
            "New password (8 to 256 characters)"
        ),
        t(l, "再输一次新密码", "New password again"),
        t(l, "修改", "Change"),
        t(
            l,
            "改密后，您在其他浏览器上的登录会退出。",
            "After the change, your sign-ins in other browsers end."
        ),
    );
    let nav = nav(c, who);
    let page = page(
        l,
        &c.switch_href,
        t(l, "账户", "Account"),
        &nav,
        Some(&who.display_name),
        who.csrf.as_deref(),
        &body,
    );
    html(c, status, page)
}

async fn account(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    match page_user_any(&web, &headers, &c) {
        Ok(who) => account_page(&c, &who, None),
        Err(r) => r,
    }
}

async fn change_password(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let form = WipedForm(form);
    let c = form_ctx(&web, &headers);
    let who = match page_user_any(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    if let Err(e) = who.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default()) {
        return error_page(&c, Some(&who), &e);
    }
    let l = c.lang;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let (current, new) = (field("current"), field("new"));
    if new != field("confirm") {
        let text = t(l, "两次输入的新密码不一致", "The two new passwords differ");
        return account_page(&c, &who, Some((false, text)));
    }
    let text = match auth::change_password(&web, &who, current, new).await {
        Ok((auth::SignIn::Accepted(_), session)) => {
            // Every session of the user ended with the change, this one too: the page goes
            // on in the new one.
            // Changed, but no new session could be opened: signed in again with it.
            let Some((token, now)) = session else {
                return redirect("/login");
            };
            let mut response = account_page(
                &c,
                &now,
                Some((true, t(l, "密码已修改", "Password changed"))),
            );
            if let Ok(value) =
                HeaderValue::from_str(&auth::session_cookie(c.session_cookie, &token, c.cookies))
            {
                response.headers_mut().append(SET_COOKIE, value);
            }
            return response;
        }
        Ok((auth::SignIn::Refused, _)) => {
            t(l, "当前密码错误", "The current password is wrong").to_owned()
        }
        Ok((auth::SignIn::Locked { minutes }, _)) => match l {
            Lang::Zh => {
                format!("密码连续错误次数过多，已锁定。请 {minutes} 分钟后再试，或请管理员解锁。")
            }
            Lang::En => format!(
                "Too many wrong passwords: locked. Try again in {minutes} minutes, or ask an admin."
            ),
        },
        Err(e) if e.status == StatusCode::BAD_REQUEST => match l {
            Lang::Zh => format!("新密码不可用：{}", e.detail(l)),
            Lang::En => format!("The new password cannot be used: {}", e.message),
        },
        Err(e) => return error_page(&c, Some(&who), &e),
    };
    account_page(&c, &who, Some((false, &text)))
}

/// The audit log, newest first, a page at a time: who changed what, when, before and after.
async fn audit_log(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let c = ctx(&web, &headers, &params);
    let who = match page_user(&web, &headers, &c) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        who.require_admin("read the audit log")?;
        let l = c.lang;
        let before_id = params.get("before").and_then(|b| b.parse::<i64>().ok());
        let rows = web.store.audit_log(before_id, AUDIT_PER_PAGE)?;
        let mut body = format!(
            "<h1>{}</h1><table id=\"audit\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th></tr>",
            t(l, "审计日志", "Audit log"),
            t(l, "时间", "At"),
            t(l, "操作人", "Who"),
            t(l, "操作", "Action"),
            t(l, "对象", "Target"),
            t(l, "之前", "Before"),
            t(l, "之后", "After"),
        );
        for a in &rows {
            body.push_str(&format!(
                // The action in words, and the key an export or the API gives (`user.unlock`).
                "<tr class=\"audit-row\"><td>{}</td><td>{}</td><td class=\"action\">{} \
                 <small>{}</small></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                format_time(a.at_ms),
                esc(&a.who),
                esc(audit_action_text(l, &a.action)),
                esc(&a.action),
                esc(&a.target),
                audit_values(l, a.before.as_deref()),
                audit_values(l, a.after.as_deref()),
            ));
        }
        body.push_str("</table>");
        if let (true, Some(last)) = (
            rows.len() == usize::try_from(AUDIT_PER_PAGE).unwrap_or(usize::MAX),
            rows.last(),
        ) {
            body.push_str(&format!(
                "<p><a id=\"older-audit\" href=\"/console/audit?before={}\">{}</a></p>",
                last.id,
                t(l, "更早的", "Older")
            ));
        }
        Ok::<_, ApiError>((t(l, "审计日志", "Audit log").to_owned(), body))
    })();
    respond(&c, &who, result)
}

/// An audit row's action in the page's language (the key itself if it is not one of ours).
fn audit_action_text(l: Lang, action: &str) -> &str {
    let (zh, en) = match action {
        "session.open" => ("登录", "Signed in"),
        "user.wrong_password" => ("登录密码错误", "Wrong password"),
        "user.locked" => ("用户被锁定", "User locked"),
        "user.password" => ("修改密码", "Changed own password"),
        "user.password_reset" => ("重设密码", "Reset a password"),
        "user.disable" => ("停用用户", "Disabled a user"),
        "user.enable" => ("启用用户", "Enabled a user"),
        "user.unlock" => ("解锁用户", "Unlocked a user"),
        "user.create" => ("新建用户", "Created a user"),
        "api_token.issue" => ("签发访问令牌", "Issued an API token"),
        "api_token.revoke" => ("吊销访问令牌", "Revoked an API token"),
        "account.bind" => ("绑定结算账户", "Bound a settlement account"),
        "account.confirm" => ("复核通过账户变更", "Confirmed an account change"),
        "account.reject" => ("拒绝账户变更", "Refused an account change"),
        "case.open" => ("新建工单", "Opened a case"),
        "case.entry" => ("添加工单记录", "Added a case entry"),
        "case.transition" => ("更新工单状态", "Moved a case"),
        "case.assign" => ("指派工单", "Assigned a case"),
        "case.approve_refund" => ("批准退货", "Approved a refund"),
        "merchant.approve" => ("批准商户入网", "Approved a merchant"),
        "merchant.suspend" => ("暂停商户", "Suspended a merchant"),
        "merchant.close" => ("关闭商户", "Closed a merchant"),
        "risk_alert.resolve" => ("处理风险预警", "Handled a risk alert"),
        "notification.redrive" => ("重发通知", "Sent a notification again"),
        "webhook.set" => ("设置通知地址", "Set the webhook endpoint"),
        "terminal.status" => ("更改终端状态", "Changed a terminal's status"),
        "fee_plan.set" => ("设置费率", "Set a fee plan"),
        _ => return action,
    };
    t(l, zh, en)
}

/// An audit row's before or after (a JSON object) as `key: value` lines: times as China time,
/// amounts in yuan; anything else as it was written.
fn audit_values(l: Lang, json: Option<&str>) -> String {
    let Some(text) = json.filter(|t| !t.is_empty()) else {
        return String::new();
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return format!("<code>{}</code>", esc(text));
    };
    fields
        .iter()
        .map(|(key, value)| {
            let shown = match (value, value.as_i64()) {
                // An instant (`at_ms`, `locked_until_ms`) in China time; a span in minutes.
                (_, Some(ms))
                    if key == "at_ms" || key.ends_with("_at_ms") || key.ends_with("until_ms") =>
                {
                    format_time(ms)
                }
                (_, Some(ms)) if key.ends_with("_ms") => {
                    if ms >= 60_000 {
                        format!("{} {}", ms.div_euclid(60_000), t(l, "分钟", "min"))
                    } else {
                        format!("{} {}", ms.div_euclid(1_000), t(l, "秒", "s"))
                    }
                }
                (_, Some(fen)) if key.ends_with("_fen") => domain::money::yuan(fen),
                (serde_json::Value::String(s), _) => s.clone(),
                (serde_json::Value::Null, _) => "-".to_owned(),
                (other, _) => other.to_string(),
            };
            format!("{}: {}", esc(key), esc(&shown))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// A table cell's (escaped) text, with whose it is under it when staff look at several
/// merchants' (`mid`).
fn with_mid(cell: String, mid: Option<&str>) -> String {
    match mid {
        Some(mid) => format!("{cell}<br><small class=\"mid\">{}</small>", esc(mid)),
        None => cell,
    }
}

/// A bank by its directory code, in the page's language (the Chinese name where no English
/// one is known); the code itself if the directory does not know it.
fn bank_name(web: &Web, l: Lang, code: &str) -> String {
    match web.directory.bank(code) {
        Some(bank) => match l {
            Lang::Zh => bank.name_zh().to_owned(),
            Lang::En => bank.name_en().unwrap_or(bank.name_zh()).to_owned(),
        },
        None => code.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every audit action the crate writes (a literal `area.verb` on a line of its own, as the
    /// audit calls take it, or an `action:` field) has words on the audit page in both
    /// languages, not its raw key.
    #[test]
    fn every_audit_action_written_has_words_on_the_audit_page() {
        let sources = [
            include_str!("api.rs"),
            include_str!("auth.rs"),
            include_str!("ops.rs"),
            include_str!("pages.rs"),
        ];
        let is_action = |s: &str| {
            s.split_once('.').is_some_and(|(area, verb)| {
                [area, verb]
                    .iter()
                    .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
        };
        let mut found = Vec::new();
        for line in sources.iter().flat_map(|s| s.lines()) {
            let line = line.trim();
            let line = line.strip_prefix("action: ").unwrap_or(line);
            let Some(rest) = line.strip_prefix('"') else {
                continue;
            };
            let Some((literal, after)) = rest.split_once('"') else {
                continue;
            };
            if is_action(literal) && ["", ",", ".to_owned(),"].contains(&after) {
                found.push(literal.to_owned());
            }
        }
        assert!(found.len() >= 25, "{found:?}");
        for action in found {
            for l in [Lang::Zh, Lang::En] {
                assert_ne!(audit_action_text(l, &action), action, "{action}");
            }
        }
    }

    /// The console names alerts' rules, payout failures and roles in the page's language.
    #[test]
    fn console_words_are_in_the_pages_language() {
        for key in [
            "card-types",
            "amount-max",
            "daily-amount-max",
            "card-velocity",
            "card-testing",
            "wrong-pins",
            "peer-change",
            "mcc-profile",
        ] {
            assert!(
                !alert_kind_text(Lang::Zh, key).is_ascii(),
                "{key} has no Chinese name"
            );
        }
        assert_eq!(
            alert_kind_text(Lang::Zh, "from-a-newer-build"),
            "from-a-newer-build"
        );
        for role in [
            store::web::Role::Merchant,
            store::web::Role::Operator,
            store::web::Role::Admin,
        ] {
            assert!(!role_text(Lang::Zh, role).is_ascii());
            assert_eq!(role_text(Lang::En, role), role.as_str());
        }
    }

    #[test]
    fn a_default_case_title_reads_in_the_pages_language() {
        let title = format!(
            "{} RRN 010000000042",
            api::default_case_title(resolve::cases::CaseKind::RefundApplication)
        );
        assert_eq!(case_title(Lang::Zh, &title), "退货申请 参考号 010000000042");
        assert_eq!(
            case_title(Lang::En, &title),
            "refund application RRN 010000000042"
        );
        assert_eq!(
            case_title(Lang::Zh, "wrong amount keyed"),
            "wrong amount keyed"
        );
        let written = "争议 / dispute over the receipt";
        assert_eq!(case_title(Lang::Zh, written), written);
    }

    #[test]
    fn the_settlement_crates_change_notes_read_in_chinese() {
        for note in [
            settlement::accounts::NOTE_AFTER_PAYOUT_FAILURE,
            settlement::accounts::NOTE_BOUND_BY_STAFF,
            settlement::accounts::NOTE_CHANGE_OF_ACCOUNT,
        ] {
            let zh = change_note_text(Lang::Zh, note);
            assert!(!zh.is_ascii(), "{note}: {zh}");
            assert_eq!(change_note_text(Lang::En, note), note);
        }
        assert_eq!(change_note_text(Lang::Zh, "客户来电"), "客户来电");
    }

    #[test]
    fn a_state_change_in_a_timeline_is_shown_in_the_pages_language() {
        assert_eq!(
            entry_text(Lang::Zh, "[open → waiting_merchant] send the receipt"),
            "[处理中 → 等待商户] send the receipt"
        );
        assert_eq!(
            entry_text(Lang::En, "[open → resolved] refunded"),
            "[open → resolved] refunded"
        );
        // Not a state change: as written.
        assert_eq!(entry_text(Lang::Zh, "[note] 6222"), "[note] 6222");
        assert_eq!(entry_text(Lang::Zh, "[x → y"), "[x → y");
    }

    /// Every error code the API documents has a title of its own on pages, in both languages
    /// (only `internal` takes the general one).
    #[test]
    fn every_documented_error_code_has_a_page_title() {
        let doc = crate::openapi::document();
        let codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(codes.len() > 10);
        let general = (
            error_title(Lang::Zh, "internal"),
            error_title(Lang::En, "internal"),
        );
        for code in codes.iter().filter_map(|c| c.as_str()) {
            if code == "internal" {
                continue;
            }
            assert_ne!(error_title(Lang::Zh, code), general.0, "{code}");
            assert_ne!(error_title(Lang::En, code), general.1, "{code}");
        }
    }
}
