//! The JSON API under `/api`. Every route is in [`routes`], one table the router is built from
//! and the OpenAPI test compares with the document; every handler takes a [`Principal`] and
//! scopes merchant data through it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use resolve::cases::{CaseKind, NewCase};
use serde::Deserialize;
use serde_json::{Value, json};
use store::resolve::CaseQuery;
use store::web::Role;
use zeroize::Zeroizing;

use crate::Web;
use crate::auth::{self, NewUser, Principal, user_json};
use crate::error::ApiError;
use crate::openapi;
use crate::ops;
use crate::query::{self, TxnQuery};

type ApiResult = Result<Json<Value>, ApiError>;

/// Every API route: (method, path, handler). The router and the OpenAPI test both read this.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Web>)> {
    vec![
        ("get", "/api/openapi.json", get(openapi_doc)),
        ("post", "/api/tokens", post(create_token)),
        ("get", "/api/tokens", get(tokens)),
        (
            "delete",
            "/api/tokens/{id}",
            axum::routing::delete(revoke_token),
        ),
        ("get", "/api/me", get(me)),
        ("post", "/api/me/password", post(change_password)),
        ("get", "/api/merchants", get(merchants)),
        ("get", "/api/merchants/{mid}", get(merchant)),
        ("get", "/api/merchants/{mid}/dashboard", get(dashboard)),
        ("get", "/api/merchants/{mid}/fee-plan", get(ops::fee_plan)),
        (
            "put",
            "/api/merchants/{mid}/fee-plan",
            axum::routing::put(ops::set_fee_plan),
        ),
        ("get", "/api/terminals", get(terminals)),
        (
            "post",
            "/api/terminals/{tid}/status",
            post(ops::set_terminal_status),
        ),
        ("get", "/api/terminals/{tid}", get(terminal)),
        ("get", "/api/transactions", get(transactions)),
        ("get", "/api/transactions/{id}", get(transaction)),
        ("get", "/api/transactions/{id}/evidence", get(evidence)),
        ("get", "/api/cases", get(cases)),
        ("post", "/api/cases", post(open_case)),
        ("get", "/api/cases/{id}", get(case)),
        ("post", "/api/cases/{id}/entries", post(add_entry)),
        (
            "post",
            "/api/cases/{id}/approve-refund",
            post(approve_refund),
        ),
        ("post", "/api/cases/{id}/transition", post(transition)),
        ("post", "/api/cases/{id}/assign", post(assign)),
        ("get", "/api/refund-approvals", get(refund_approvals)),
        ("get", "/api/notifications", get(notifications)),
        (
            "post",
            "/api/notifications/{id}/redrive",
            post(redrive_notification),
        ),
        ("get", "/api/duplicates", get(duplicates)),
        ("get", "/api/webhook", get(webhook)),
        ("put", "/api/webhook", axum::routing::put(set_webhook)),
        ("get", "/api/risk/alerts", get(risk_alerts)),
        ("get", "/api/merchant-reviews", get(merchant_reviews)),
        ("get", "/api/settlements", get(ops::settlements)),
        ("get", "/api/payouts", get(ops::payouts)),
        ("get", "/api/bound-account", get(ops::bound_account)),
        ("post", "/api/bound-account", post(ops::bind)),
        ("get", "/api/account-changes", get(ops::account_changes)),
        (
            "post",
            "/api/account-changes/{id}/confirm",
            post(ops::confirm_change),
        ),
        (
            "post",
            "/api/account-changes/{id}/reject",
            post(ops::reject_change),
        ),
        (
            "post",
            "/api/merchant-reviews/{mid}/approve",
            post(ops::approve_merchant),
        ),
        (
            "post",
            "/api/merchant-reviews/{mid}/suspend",
            post(ops::suspend_merchant),
        ),
        (
            "post",
            "/api/merchant-reviews/{mid}/close",
            post(ops::close_merchant),
        ),
        (
            "post",
            "/api/risk/alerts/{id}/resolve",
            post(ops::resolve_alert),
        ),
        ("get", "/api/users", get(users)),
        ("post", "/api/users", post(create_user)),
        ("post", "/api/users/{id}/unlock", post(unlock_user)),
        ("post", "/api/users/{id}/password", post(reset_password)),
        ("post", "/api/users/{id}/disable", post(disable_user)),
        ("post", "/api/users/{id}/enable", post(enable_user)),
        ("get", "/api/audit", get(audit_log)),
    ]
}

pub fn router() -> Router<Web> {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

#[derive(Deserialize)]
struct TokenRequest {
    username: String,
    password: Zeroizing<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn create_token(
    State(web): State<Web>,
    client: crate::clients::ClientAddr,
    Json(body): Json<TokenRequest>,
) -> ApiResult {
    // The name is checked first: a request that cannot be kept costs no password check.
    let name = auth::token_name(body.name.as_deref())?;
    let signed = auth::authenticate_from(&web, client, &body.username, &body.password).await?;
    let signed = match signed {
        auth::FromClient::Checked(signed) => signed,
        auth::FromClient::TooMany { minutes } => return Err(auth::too_many_error(minutes)),
    };
    let user = match signed {
        auth::SignIn::Accepted(user) => user,
        auth::SignIn::Refused => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                "wrong username or password",
            ));
        }
        auth::SignIn::Locked { minutes } => return Err(auth::locked_error(minutes)),
    };
    let token = auth::issue_api_token(&web, &user, &name).await?;
    let expires_at_ms = web.clock.now_ms() + auth::API_TOKEN_TTL_MS;
    Ok(Json(json!({
        "token": token,
        "expires_at_ms": expires_at_ms,
        "user": user_json(&user),
    })))
}

/// A token's id in lists and in the address that revokes it: the first 16 hex digits of its
/// digest (never the token, which is not kept).
fn token_id(token_hash: &[u8]) -> String {
    token_hash
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_json(t: &store::web::ApiTokenRow) -> Value {
    json!({
        "id": token_id(&t.token_hash),
        "name": t.name,
        "created_at_ms": t.created_at_ms,
        "expires_at_ms": t.created_at_ms.saturating_add(auth::API_TOKEN_TTL_MS),
        "revoked": t.revoked,
    })
}

/// The earliest issue time of a token still live: one issued `API_TOKEN_TTL_MS` ago has just
/// expired (`auth` refuses it from that instant).
fn live_since(web: &Web) -> i64 {
    web.clock
        .now_ms()
        .saturating_sub(auth::API_TOKEN_TTL_MS)
        .saturating_add(1)
}

/// The caller's API tokens that have not expired, newest first.
async fn tokens(State(web): State<Web>, who: Principal) -> ApiResult {
    let since = live_since(&web);
    let items: Vec<Value> = web
        .store
        .web_api_tokens(who.user_id, since)?
        .iter()
        .map(token_json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Revokes one of the caller's API tokens (a token copied somewhere it should not be, a
/// script retired), by the id `GET /api/tokens` gives; audited as `api_token.revoke`.
async fn revoke_token(State(web): State<Web>, who: Principal, Path(id): Path<String>) -> ApiResult {
    let Some(mut token) = web
        .store
        .web_api_tokens(who.user_id, live_since(&web))?
        .into_iter()
        .find(|t| token_id(&t.token_hash) == id)
    else {
        return Err(ApiError::not_found("token"));
    };
    // Revoked already: nothing to write or audit again.
    if token.revoked {
        return Ok(Json(token_json(&token)));
    }
    let before = token_json(&token);
    token.revoked = true;
    let audit = auth::audit_record(
        &web,
        &who.username,
        "api_token.revoke",
        &format!("user:{}", who.user_id),
        Some(before),
        Some(token_json(&token)),
    )
    .await?;
    let revoke = store::web::WebRecord::RevokeApiToken {
        token_hash: token.token_hash.clone(),
    };
    web.store
        .submit(vec![store::Record::Web(revoke), audit])?
        .await?;
    Ok(Json(token_json(&token)))
}

/// The `User` the other user answers give (`id`, not the principal's `user_id`).
async fn me(State(web): State<Web>, who: Principal) -> ApiResult {
    let user = web
        .store
        .web_user(who.user_id)?
        .ok_or_else(ApiError::unauthorized)?;
    let mut me = auth::user_json(&user);
    // A password an admin set: the caller's own to set before anything else.
    if let Some(fields) = me.as_object_mut() {
        fields.insert("must_set_password".into(), json!(who.must_set_password));
    }
    Ok(Json(me))
}

fn merchant_json(web: &Web, m: &store::MerchantRow) -> Result<Value, ApiError> {
    let profile = web.store.merchant_profile(&m.mid)?;
    Ok(json!({
        "mid": m.mid,
        "name": m.name,
        "status": m.status.as_str(),
        "mcc": m.mcc,
        "lifecycle": profile.map(|p| p.state.as_str()),
    }))
}

async fn merchants(State(web): State<Web>, who: Principal) -> ApiResult {
    let items = web
        .store
        .merchants()?
        .iter()
        .filter(|m| who.sees(&m.mid))
        .map(|m| merchant_json(&web, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "items": items })))
}

fn find_merchant(web: &Web, who: &Principal, mid: &str) -> Result<store::MerchantRow, ApiError> {
    who.scope(mid, "merchant")?;
    web.store
        .merchant(mid)?
        .ok_or_else(|| ApiError::not_found("merchant"))
}

async fn merchant(State(web): State<Web>, who: Principal, Path(mid): Path<String>) -> ApiResult {
    let m = find_merchant(&web, &who, &mid)?;
    Ok(Json(merchant_json(&web, &m)?))
}

async fn dashboard(State(web): State<Web>, who: Principal, Path(mid): Path<String>) -> ApiResult {
    find_merchant(&web, &who, &mid)?;
    let stats = query::day_stats(&web, &mid)?;
    let open_cases = web.cases.still_open(Some(&mid))?.len();
    Ok(Json(json!({ "today": stats, "open_cases": open_cases })))
}

#[derive(Deserialize)]
struct MidFilter {
    mid: Option<String>,
}

async fn terminals(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MidFilter>,
) -> ApiResult {
    let items = query::terminal_health(&web, &who, q.mid.as_deref())?;
    Ok(Json(json!({ "items": items })))
}

async fn terminal(State(web): State<Web>, who: Principal, Path(tid): Path<String>) -> ApiResult {
    let t = web
        .store
        .terminal(&tid)?
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    who.scope(&t.mid, "terminal")?;
    let health = query::terminal_health(&web, &who, Some(&t.mid))?
        .into_iter()
        .find(|h| h.tid == tid)
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    Ok(Json(json!(health)))
}

async fn transactions(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<TxnQuery>,
) -> ApiResult {
    Ok(Json(json!(query::search_in_turn(&web, &who, &q).await?)))
}

async fn transaction(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    let row = query::visible_txn(&web, &who, id)?;
    let explanation =
        resolve::explain_txn(web.store.as_ref(), &web.directory, &row, web.clock.now_ms())?;
    Ok(Json(json!(explanation)))
}

async fn evidence(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    let row = query::visible_txn(&web, &who, id)?;
    let rrn = row
        .rrn
        .ok_or_else(|| ApiError::not_found("evidence (the transaction has no RRN)"))?;
    let evidence = web.resolver.evidence(&rrn, Some(&row.mid))?;
    Ok(Json(json!(evidence)))
}

#[derive(Deserialize)]
struct CaseFilter {
    mid: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of the cases the principal may see (a merchant its own; staff one merchant's or
/// all), newest first, from below `before_id`: at most `limit`, and the cursor to the next
/// page if there is one.
pub fn visible_cases(
    web: &Web,
    who: &Principal,
    query: CaseQuery<'_>,
) -> Result<(Vec<resolve::cases::Case>, Option<String>), ApiError> {
    let mid = who.merchant_filter(query.mid)?;
    let limit = query.limit;
    let names = NamesShown::for_principal(web, who)?;
    let cases: Vec<resolve::cases::Case> = web
        .cases
        .find(&CaseQuery {
            mid: mid.as_deref(),
            limit: limit.saturating_add(1),
            ..query
        })?
        .into_iter()
        .map(|c| names.case(c))
        .collect();
    Ok(one_page(
        cases,
        usize::try_from(limit).unwrap_or(usize::MAX),
        |c| c.id,
    ))
}

async fn cases(State(web): State<Web>, who: Principal, Query(q): Query<CaseFilter>) -> ApiResult {
    let limit = query::limit_param(&q.limit)?;
    // A state or kind that is not one would list nothing, read by the caller as "no such
    // cases": it is refused instead, as the alerts' and payouts' filters are.
    let state = q.state.as_deref().filter(|s| !s.is_empty());
    if state.is_some_and(|s| resolve::cases::CaseState::parse(s).is_none()) {
        return Err(ApiError::bad_request("state: unknown"));
    }
    let kind = q.kind.as_deref().filter(|k| !k.is_empty());
    if kind.is_some_and(|k| resolve::cases::CaseKind::parse(k).is_none()) {
        return Err(ApiError::bad_request("kind: unknown"));
    }
    let (items, next) = visible_cases(
        &web,
        &who,
        CaseQuery {
            mid: q.mid.as_deref(),
            state,
            kind,
            before_id: query::int_param(&q.cursor, "cursor")?,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            ..CaseQuery::default()
        },
    )?;
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

#[derive(Deserialize)]
pub struct OpenCase {
    /// `issuer_inquiry`, `refund_application` or `dispute`.
    pub kind: String,
    /// The transaction concerned, by id.
    pub txn_id: Option<i64>,
    pub title: Option<String>,
    #[serde(default)]
    pub text: String,
    /// Refund applications: the amount, fen (all that is left when absent).
    pub refund_fen: Option<i64>,
}

/// How many cases a merchant's users may have open at once ([`open_case_for`]).
pub const OPEN_CASES_PER_MERCHANT_MAX: u64 = 200;

/// Opens a case on one of the principal's transactions; audited.
pub async fn open_case_for(
    web: &Web,
    who: &Principal,
    body: OpenCase,
) -> Result<resolve::cases::Case, ApiError> {
    let kind = CaseKind::parse(&body.kind).ok_or_else(|| {
        ApiError::bad_request("kind: issuer_inquiry, refund_application or dispute")
    })?;
    let txn = match body.txn_id {
        Some(id) => Some(query::visible_txn(web, who, id)?),
        None => None,
    };
    let mid = match (&txn, &who.mid) {
        (Some(t), _) => t.mid.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => return Err(ApiError::bad_request("txn_id is required")),
    };
    // A merchant's own users open no case while the merchant has so many open (whoever opened
    // them; counted before the case is written, so parallel requests may pass it by a few):
    // opened without end (a script), they would fill the operators' queue, which reads the
    // oldest open cases first, and hide every later merchant's. The acquirer's staff may
    // open more.
    if !who.is_staff() && web.store.count_open_cases(&mid)? >= OPEN_CASES_PER_MERCHANT_MAX {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_open_cases",
            format!(
                "this merchant has {OPEN_CASES_PER_MERCHANT_MAX} cases open: ask the \
                 acquirer to open this one, or to close those already settled"
            ),
        )
        .zh(format!(
            "本商户已有 {OPEN_CASES_PER_MERCHANT_MAX} 个未结工单：请联系收单机构代为开立，或关闭已经解决的工单"
        )));
    }
    let rrn = txn.as_ref().and_then(|t| t.rrn.clone());
    let title = body.title.unwrap_or_else(|| {
        let what = default_case_title(kind);
        match &rrn {
            Some(r) => format!("{what} RRN {r}"),
            None => what.to_owned(),
        }
    });
    let case = web
        .cases
        .open(NewCase {
            kind,
            mid,
            rrn,
            txn_id: txn.as_ref().map(|t| t.id),
            title,
            who: who.username.clone(),
            text: body.text,
            attachments: Vec::new(),
            assignee: None,
            due_at_ms: None,
            refund_fen: body.refund_fen,
        })
        .await?;
    auth::audit(
        web,
        &who.username,
        "case.open",
        &format!("case:{}", case.id),
        None,
        Some(
            json!({ "kind": case.kind, "state": case.state, "refund_fen": case.refund_fen,
                     "txn_id": case.txn.as_ref().map(|t| t.id) }),
        ),
    )
    .await;
    Ok(NamesShown::for_principal(web, who)?.case(case))
}

async fn open_case(
    State(web): State<Web>,
    who: Principal,
    Json(body): Json<OpenCase>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let case = open_case_for(&web, &who, body).await?;
    Ok((StatusCode::CREATED, Json(json!(case))))
}

/// How a merchant user sees a member of the acquirer's staff in a case or an account change:
/// not by username (a name to guess passwords for, or to lock out), by what they are.
pub const ACQUIRER_STAFF: &str = "acquirer";

/// `name` as `who` may see it: staff see usernames; a merchant user sees its own merchant's
/// users by name and the acquirer's staff as [`ACQUIRER_STAFF`].
pub struct NamesShown {
    staff: Option<std::collections::HashSet<String>>,
}

impl NamesShown {
    pub fn for_principal(web: &Web, who: &Principal) -> Result<NamesShown, ApiError> {
        if who.is_staff() {
            return Ok(NamesShown { staff: None });
        }
        // The staff alone, not every merchant's users with them.
        let staff = web.store.web_staff_usernames()?.into_iter().collect();
        Ok(NamesShown { staff: Some(staff) })
    }

    pub fn name(&self, name: &str) -> String {
        match &self.staff {
            Some(staff) if staff.contains(name) => ACQUIRER_STAFF.to_owned(),
            _ => name.to_owned(),
        }
    }

    pub fn case(&self, mut case: resolve::cases::Case) -> resolve::cases::Case {
        if self.staff.is_none() {
            return case;
        }
        for entry in &mut case.entries {
            entry.who = self.name(&entry.who);
        }
        case.approved_by = case.approved_by.map(|n| self.name(&n));
        case.assignee = case.assignee.map(|n| self.name(&n));
        case
    }
}

/// The title a case gets when its opener gives none (then `RRN <rrn>` after it), in both
/// languages: the pages show the half in theirs (`pages::case_title`).
pub const fn default_case_title(kind: CaseKind) -> &'static str {
    match kind {
        CaseKind::IssuerInquiry => "发卡行查询 / issuer inquiry",
        CaseKind::RefundApplication => "退货申请 / refund application",
        CaseKind::Dispute => "争议 / dispute",
    }
}

/// A case the principal may see, with names as it may see them ([`NamesShown`]).
pub fn visible_case(web: &Web, who: &Principal, id: i64) -> Result<resolve::cases::Case, ApiError> {
    let case = web.cases.get(id)?;
    who.scope(&case.mid, "case")?;
    Ok(NamesShown::for_principal(web, who)?.case(case))
}

async fn case(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    Ok(Json(json!(visible_case(&web, &who, id)?)))
}

#[derive(Deserialize)]
struct EntryBody {
    text: String,
}

/// Adds an entry to a visible case; audited.
pub async fn add_entry_for(
    web: &Web,
    who: &Principal,
    id: i64,
    text: &str,
) -> Result<resolve::cases::Case, ApiError> {
    let before = visible_case(web, who, id)?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("text must not be empty").zh("记录内容不能为空"));
    }
    // The merchant's answer to a case waiting on it puts it back before the operators.
    let case = if who.is_staff() {
        web.cases
            .add_entry(id, &who.username, text, Vec::new())
            .await?
    } else {
        web.cases
            .merchant_reply(id, &who.username, text, Vec::new())
            .await?
    };
    auth::audit(
        web,
        &who.username,
        "case.entry",
        &format!("case:{id}"),
        Some(json!({ "version": before.version, "entries": before.entries.len() })),
        Some(json!({ "version": case.version, "entries": case.entries.len(), "text": text })),
    )
    .await;
    Ok(NamesShown::for_principal(web, who)?.case(case))
}

async fn add_entry(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<EntryBody>,
) -> ApiResult {
    Ok(Json(json!(
        add_entry_for(&web, &who, id, &body.text).await?
    )))
}

/// An operator approves a refund application: the refund runs through the switch; audited.
/// The approval and its audit row run to their end even if the request is dropped.
pub async fn approve_refund_for(
    web: &Web,
    who: &Principal,
    id: i64,
) -> Result<resolve::cases::Case, ApiError> {
    who.require_staff("approve refunds")?;
    let (task_web, who) = (web.clone(), who.clone());
    web.run_to_end(async move { approve_and_audit(&task_web, &who, id).await })
        .await
}

async fn approve_and_audit(
    web: &Web,
    who: &Principal,
    id: i64,
) -> Result<resolve::cases::Case, ApiError> {
    let before = web.cases.get(id)?;
    let case = web.cases.approve_refund(id, &who.username).await?;
    auth::audit(
        web,
        &who.username,
        "case.approve_refund",
        &format!("case:{id}"),
        Some(json!({ "state": before.state, "refund_code": before.refund_code })),
        Some(
            json!({ "state": case.state, "refund_code": case.refund_code,
                     "refund_rrn": case.refund_rrn, "approved_by": case.approved_by }),
        ),
    )
    .await;
    Ok(case)
}

async fn approve_refund(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    Ok(Json(json!(approve_refund_for(&web, &who, id).await?)))
}

/// Open refund applications waiting for an operator.
pub fn pending_refunds(web: &Web, who: &Principal) -> Result<Vec<resolve::cases::Case>, ApiError> {
    who.require_staff("see the refund approval queue")?;
    Ok(web
        .cases
        .find(&CaseQuery {
            open_only: true,
            oldest_first: true,
            kind: Some(CaseKind::RefundApplication.as_str()),
            limit: store::RESOLVE_ROWS_MAX,
            ..CaseQuery::default()
        })?
        .into_iter()
        .filter(|c| c.refund_code.as_deref() != Some("00"))
        .collect())
}

async fn refund_approvals(State(web): State<Web>, who: Principal) -> ApiResult {
    Ok(Json(json!({ "items": pending_refunds(&web, &who)? })))
}

/// A page of one merchant's list, newest first: `mid` (staff; a merchant gets its own),
/// `limit` and the `cursor` the previous page gave.
#[derive(Deserialize)]
struct MerchantPage {
    mid: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl MerchantPage {
    /// The merchant, the page size, and the id to read below.
    fn read(&self, who: &Principal) -> Result<(String, usize, Option<i64>), ApiError> {
        let mid = who
            .merchant_filter(self.mid.as_deref())?
            .ok_or_else(|| ApiError::bad_request("mid is required"))?;
        let limit = query::limit_param(&self.limit)?;
        Ok((mid, limit, query::int_param(&self.cursor, "cursor")?))
    }
}

/// `limit` of `rows` read as `limit + 1`, and the cursor to the next page if there is one.
fn one_page<T>(mut rows: Vec<T>, limit: usize, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = more
        .then(|| rows.last().map(|r| id(r).to_string()))
        .flatten();
    (rows, next)
}

/// A merchant's notifications, newest first, a page at a time.
async fn notifications(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MerchantPage>,
) -> ApiResult {
    let (mid, limit, cursor) = q.read(&who)?;
    let read = u32::try_from(limit + 1).unwrap_or(u32::MAX);
    let (rows, next) = one_page(
        web.resolver.notifications(&mid, cursor, read)?,
        limit,
        |o| o.id,
    );
    let items: Vec<Value> = rows.iter().map(notification_json).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

/// A notification as the API shows it: with the event it carries (`payload`, the JSON body
/// its webhook posts), so a merchant can tell which transaction a failed one was about.
fn notification_json(o: &store::resolve::OutboxRow) -> Value {
    let payload: Value = serde_json::from_str(&o.payload).unwrap_or(Value::Null);
    json!({
        "id": o.id, "event_type": o.event_type, "state": o.state,
        "attempts": o.attempts, "created_at_ms": o.created_at_ms,
        "delivered_at_ms": o.delivered_at_ms, "payload": payload,
    })
}

#[derive(Deserialize)]
struct RedriveQuery {
    mid: Option<String>,
}

/// Sends a failed notification (or one that found no endpoint) again: a merchant its own
/// (CSRF-checked from the portal), staff any merchant's with `?mid=`; audited.
async fn redrive_notification(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Query(q): Query<RedriveQuery>,
) -> ApiResult {
    let mid = who
        .merchant_filter(q.mid.as_deref())?
        .ok_or_else(|| ApiError::bad_request("mid: the merchant whose notification it is"))?;
    let item = web.resolver.redrive(&mid, id).await?;
    auth::audit(
        &web,
        &who.username,
        "notification.redrive",
        &format!("notification:{id}"),
        None,
        Some(json!({ "mid": mid, "attempts": item.attempts })),
    )
    .await;
    Ok(Json(notification_json(&item)))
}

/// A merchant's suspected duplicate payments (the same card, amount and merchant within
/// minutes, both approved), newest first, each with what to do about the second one.
async fn duplicates(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MerchantPage>,
) -> ApiResult {
    let (mid, limit, cursor) = q.read(&who)?;
    let read = u32::try_from(limit + 1).unwrap_or(u32::MAX);
    let (flags, next) = one_page(web.resolver.duplicates(&mid, cursor, read)?, limit, |f| {
        f.second.id
    });
    Ok(Json(json!({ "items": flags, "next_cursor": next })))
}

#[derive(Deserialize)]
struct AlertFilter {
    state: Option<String>,
    limit: Option<String>,
}

async fn risk_alerts(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<AlertFilter>,
) -> ApiResult {
    who.require_staff("see risk alerts")?;
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            store::risk::AlertState::parse(s).map_err(|_| ApiError::bad_request("state: unknown"))
        })
        .transpose()?;
    let limit = query::limit_param(&q.limit)?;
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    let items: Vec<Value> = web
        .store
        .risk_alerts(state, limit)?
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "kind": a.kind, "rule_id": a.rule_id, "action": a.action.as_str(),
                "mid": a.mid, "tid": a.tid, "detail": a.detail, "detail_zh": a.detail_zh,
                "txn_ids": a.txn_ids,
                "raised_at_ms": a.raised_at_ms, "state": a.state.as_str(),
                "resolved_by": a.resolved_by, "resolution": a.resolution,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn merchant_reviews(State(web): State<Web>, who: Principal) -> ApiResult {
    who.require_staff("see merchant reviews")?;
    let items: Vec<Value> = web
        .store
        .merchant_profiles()?
        .iter()
        .map(|p| {
            json!({
                "mid": p.mid, "state": p.state.as_str(), "mcc": p.mcc,
                "applied_at_ms": p.applied_at_ms, "reviewed_by": p.reviewed_by,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn users(State(web): State<Web>, who: Principal) -> ApiResult {
    who.require_admin("manage users")?;
    let items: Vec<Value> = auth::users_standing(&web)?
        .iter()
        .map(|s| {
            let mut item = user_json(&s.user);
            if let Some(map) = item.as_object_mut() {
                map.insert("wrong_passwords".into(), json!(s.wrong_passwords));
                map.insert("locked_until_ms".into(), json!(s.locked_until_ms));
                map.insert("must_set_password".into(), json!(s.must_set_password));
            }
            item
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct PasswordChange {
    current: Zeroizing<String>,
    new: Zeroizing<String>,
}

async fn change_password(
    State(web): State<Web>,
    who: Principal,
    Json(body): Json<PasswordChange>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match auth::change_password(&web, &who, &body.current, &body.new).await? {
        (auth::SignIn::Accepted(user), session) => {
            let mut response = Json(json!({ "user": user_json(&user) })).into_response();
            // Signed in by a page session, which ended with the change: the new one's cookie.
            if let Some((token, _)) = session
                && let Ok(value) = axum::http::HeaderValue::from_str(&auth::session_cookie(
                    auth::session_cookie_name(web.secure_cookies),
                    &token,
                    web.cookie_attributes(),
                ))
            {
                response
                    .headers_mut()
                    .append(axum::http::header::SET_COOKIE, value);
            }
            Ok(response)
        }
        (auth::SignIn::Refused, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "the current password is wrong",
        )),
        (auth::SignIn::Locked { minutes }, _) => Err(auth::locked_error(minutes)),
    }
}

#[derive(Deserialize)]
struct PasswordReset {
    password: Zeroizing<String>,
}

/// The user `id`, for an admin.
pub(crate) fn user_for_admin(
    web: &Web,
    who: &Principal,
    id: i64,
) -> Result<store::web::UserRow, ApiError> {
    who.require_admin("manage users")?;
    web.store
        .web_user(id)?
        .ok_or_else(|| ApiError::not_found("user"))
}

async fn reset_password(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<PasswordReset>,
) -> ApiResult {
    let user = user_for_admin(&web, &who, id)?;
    let user = auth::reset_password(&web, &who, user, &body.password).await?;
    Ok(Json(user_json(&user)))
}

async fn disable_user(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    let user = user_for_admin(&web, &who, id)?;
    Ok(Json(user_json(
        &auth::set_disabled(&web, &who, user, true).await?,
    )))
}

async fn enable_user(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    let user = user_for_admin(&web, &who, id)?;
    Ok(Json(user_json(
        &auth::set_disabled(&web, &who, user, false).await?,
    )))
}

async fn unlock_user(State(web): State<Web>, who: Principal, Path(id): Path<i64>) -> ApiResult {
    let user = user_for_admin(&web, &who, id)?;
    let was_locked = auth::unlock_user(&web, &who.username, &user).await?;
    Ok(Json(
        json!({ "user": user_json(&user), "was_locked": was_locked }),
    ))
}

#[derive(Deserialize)]
struct UserBody {
    username: String,
    password: Zeroizing<String>,
    role: String,
    mid: Option<String>,
    display_name: Option<String>,
}

async fn create_user(
    State(web): State<Web>,
    who: Principal,
    Json(body): Json<UserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require_admin("manage users")?;
    let role = Role::parse(&body.role)
        .map_err(|_| ApiError::bad_request("role: merchant, operator or admin"))?;
    let user = auth::create_user(
        &web,
        &who.username,
        NewUser {
            display_name: body.display_name.unwrap_or_else(|| body.username.clone()),
            username: body.username,
            password: body.password,
            role,
            mid: body.mid,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn audit_log(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    who.require_admin("read the audit log")?;
    let limit = query::limit_param(&q.limit)?;
    let cursor = query::int_param(&q.cursor, "cursor")?;
    let rows = web
        .store
        .audit_log(cursor, u32::try_from(limit + 1).unwrap_or(u32::MAX))?;
    let more = rows.len() > limit;
    let items: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|a| {
            json!({
                "id": a.id, "at_ms": a.at_ms, "who": a.who, "action": a.action,
                "target": a.target,
                "before": a.before.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()),
                "after": a.after.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()),
            })
        })
        .collect();
    let next = if more {
        rows.get(limit.saturating_sub(1)).map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

/// Shortest webhook signing secret accepted: the HMAC is only as strong as its key.
pub const WEBHOOK_SECRET_LEN_MIN: usize = 16;

async fn webhook(State(web): State<Web>, who: Principal, Query(q): Query<MidFilter>) -> ApiResult {
    let mid = who
        .merchant_filter(q.mid.as_deref())?
        .ok_or_else(|| ApiError::bad_request("mid is required"))?;
    crate::ops::known_merchant(&web, &mid)?;
    let endpoint = web.store.webhook_endpoint(&mid)?;
    Ok(Json(json!({
        "mid": mid,
        // Shown with any card-number-like digits masked (as the audit log keeps it).
        "url": endpoint.as_ref().map(|e| domain::mask_card_numbers(&e.url).into_owned()),
        "active": endpoint.as_ref().is_some_and(|e| e.active),
    })))
}

#[derive(Deserialize)]
struct WebhookBody {
    mid: Option<String>,
    url: String,
    /// The signing secret; sealed by the HSM, never shown again.
    secret: Zeroizing<String>,
}

async fn set_webhook(
    State(web): State<Web>,
    who: Principal,
    Json(body): Json<WebhookBody>,
) -> ApiResult {
    let mid = who
        .merchant_filter(body.mid.as_deref())?
        .ok_or_else(|| ApiError::bad_request("mid is required"))?;
    if body.secret.len() < WEBHOOK_SECRET_LEN_MIN {
        return Err(ApiError::bad_request(format!(
            "secret: at least {WEBHOOK_SECRET_LEN_MIN} bytes"
        )));
    }
    // Staff naming a merchant the journal does not hold (a mistyped MID) would set an
    // endpoint for no one.
    crate::ops::known_merchant(&web, &mid)?;
    let before = web.store.webhook_endpoint(&mid)?.map(|e| e.url);
    web.resolver
        .set_webhook(&mid, &body.url, body.secret.as_bytes())
        .await?;
    auth::audit(
        &web,
        &who.username,
        "webhook.set",
        &format!("merchant:{mid}"),
        Some(json!({ "url": before })),
        Some(json!({ "url": body.url })),
    )
    .await;
    let url = domain::mask_card_numbers(&body.url);
    Ok(Json(json!({ "mid": mid, "url": url, "active": true })))
}

#[derive(Deserialize)]
pub struct TransitionBody {
    /// `wait_on_issuer`, `wait_on_merchant`, `reopen`, `escalate`, `resolve` or `reject`.
    pub action: String,
    #[serde(default)]
    pub note: String,
    /// Required to resolve or reject.
    pub resolution: Option<String>,
    /// The case's version the operator decided on: refused (409 `conflict`) if the case has
    /// moved since. Without it, the move applies to the case as it is now.
    #[serde(default)]
    pub version: Option<i64>,
}

/// An operator moves a case through its states; audited.
pub async fn transition_for(
    web: &Web,
    who: &Principal,
    id: i64,
    body: TransitionBody,
) -> Result<resolve::cases::Case, ApiError> {
    use resolve::cases::{Resolution, Transition};
    who.require_staff("move cases")?;
    let resolution = || Resolution::new(body.resolution.as_deref().unwrap_or(""));
    let transition = match body.action.as_str() {
        "wait_on_issuer" => Transition::WaitOnIssuer,
        "wait_on_merchant" => Transition::WaitOnMerchant,
        "reopen" => Transition::Reopen,
        "escalate" => Transition::Escalate,
        "resolve" => Transition::Resolve(resolution()?),
        "reject" => Transition::Reject(resolution()?),
        _ => {
            return Err(ApiError::bad_request(
                "action: wait_on_issuer, wait_on_merchant, reopen, escalate, resolve or reject",
            ));
        }
    };
    let before = web.cases.get(id)?;
    let case = web
        .cases
        .transition(id, &who.username, transition, &body.note, body.version)
        .await?;
    auth::audit(
        web,
        &who.username,
        "case.transition",
        &format!("case:{id}"),
        Some(json!({ "state": before.state })),
        Some(
            json!({ "state": case.state, "action": body.action, "note": body.note,
                     "resolution": case.resolution }),
        ),
    )
    .await;
    Ok(case)
}

#[derive(Deserialize)]
pub struct AssignBody {
    /// Who works on the case (a staff username); `null` for nobody; left out, unchanged.
    #[serde(default, deserialize_with = "present")]
    pub assignee: Option<Option<String>>,
    /// By when (ms since the epoch); `null` for no date; left out, unchanged.
    #[serde(default, deserialize_with = "present")]
    pub due_at_ms: Option<Option<i64>>,
}

/// A field that is present, `null` or not (`Some(None)` for `null`); a field left out is
/// `None` through `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// How far back a case's due date may be set: a year.
const DUE_BACK_MS_MAX: i64 = 366 * 86_400_000;
/// How far ahead a case's due date may be set: five years.
const DUE_AHEAD_MS_MAX: i64 = 5 * 366 * 86_400_000;

/// Operator: who works on a case and by when (audited).
async fn assign(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<AssignBody>,
) -> ApiResult {
    who.require_staff("assign cases")?;
    let before = web.cases.get(id)?;
    // A field left out stays as the case has it when it is written, not as read here.
    let assignee = body
        .assignee
        .map(|given| given.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()));
    let due_at_ms = body.due_at_ms;
    // A date no case is due by (a year back, five ahead) is a mistyped one, not a plan.
    let now_ms = web.clock.now_ms();
    let sane = now_ms.saturating_sub(DUE_BACK_MS_MAX)..=now_ms.saturating_add(DUE_AHEAD_MS_MAX);
    if body
        .due_at_ms
        .flatten()
        .is_some_and(|due| !sane.contains(&due))
    {
        return Err(
            ApiError::bad_request("due_at_ms: within a year back and five years ahead")
                .zh("到期时间须在一年前至五年后之间"),
        );
    }
    // Someone who can work on it: an enabled operator or admin.
    if let Some(Some(name)) = &assignee {
        let staff = web.store.web_user_by_name(name)?.is_some_and(|u| {
            !u.disabled && u.mid.is_none() && u.role != store::web::Role::Merchant
        });
        if !staff {
            return Err(ApiError::bad_request(
                "assignee: the username of an enabled operator or admin",
            )
            .zh("指派对象须是在用的运营或管理员用户名"));
        }
    }
    let case = web
        .cases
        .assign(id, &who.username, assignee, due_at_ms)
        .await?;
    auth::audit(
        &web,
        &who.username,
        "case.assign",
        &format!("case:{id}"),
        Some(json!({ "assignee": before.assignee, "due_at_ms": before.due_at_ms })),
        Some(json!({ "assignee": case.assignee, "due_at_ms": case.due_at_ms })),
    )
    .await;
    Ok(Json(json!(case)))
}

async fn transition(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<TransitionBody>,
) -> ApiResult {
    Ok(Json(json!(transition_for(&web, &who, id, body).await?)))
}
