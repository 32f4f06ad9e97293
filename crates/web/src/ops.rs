//! Money and merchant operations over the `settlement` and `risk` crates: settlement runs and a
//! merchant's clearing totals, payouts with the diagnosis of a failure, the bound account and its
//! re-binding (maker-checker), merchant review and risk alerts. Every change is audited.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use domain::diagnosis::{self, PayoutFailure};
use paycrypto::Hsm;
use serde::Deserialize;
use serde_json::{Value, json};
use settlement::accounts::AccountInput;
use settlement::{BindError, BindOutcome, Sealer};
use store::settlement::{AccountKind, BatchDiffKind, ChangeState, PayoutRow, PayoutState};

use crate::Web;
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::query::{self, given};

type ApiResult = Result<Json<Value>, ApiError>;

/// Payout rows one answer carries at most.
pub const PAYOUTS_MAX: u32 = 200;

/// Account numbers sealed by the HSM, as PANs are.
pub struct HsmSealer<'a>(pub &'a dyn Hsm);

impl Sealer for HsmSealer<'_> {
    fn seal(&self, clear: &str) -> Result<Vec<u8>, String> {
        self.0.seal(clear.as_bytes()).map_err(|e| e.to_string())
    }
    fn open(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<String>, String> {
        let clear = self.0.open(sealed).map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(&clear).map_err(|e| e.to_string())?;
        Ok(zeroize::Zeroizing::new(text.to_owned()))
    }
}

impl From<BindError> for ApiError {
    fn from(error: BindError) -> Self {
        let message = error.to_string();
        match error {
            BindError::Store(e) => e.into(),
            BindError::NoSuchChange(_) => ApiError::not_found("account change"),
            BindError::UnknownMerchant(_) => ApiError::not_found("merchant"),
            BindError::NotPending(_) | BindError::Superseded(_) => {
                ApiError::new(StatusCode::CONFLICT, "illegal_transition", message)
                    .zh("这条变更已处理，或已被新的申请取代，请刷新后再看")
            }
            BindError::ChangedMeanwhile => {
                ApiError::new(StatusCode::CONFLICT, "changed_meanwhile", message)
                    .zh("结算账户刚被更新，请刷新后重试")
            }
            BindError::SameUser(_) => ApiError::new(StatusCode::FORBIDDEN, "same_user", message)
                .zh("提交变更的人不能自己复核，须由另一位运营人员复核"),
            BindError::Seal(_) => {
                tracing::warn!(%message, "sealing an account number failed");
                ApiError::internal("the security module could not seal the account number")
            }
            BindError::NotDigits
            | BindError::Length { .. }
            | BindError::Luhn
            | BindError::UnknownCardBank
            | BindError::NotDebitCard(_)
            | BindError::BankMismatch { .. }
            | BindError::UnknownBank
            | BindError::NameMissing
            | BindError::NameInvalid
            | BindError::NameHasCardNumber => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_account", message)
                    .zh(bind_error_zh(&error))
            }
        }
    }
}

/// What was wrong with an account as typed, for a merchant reading Chinese.
fn bind_error_zh(error: &BindError) -> String {
    match error {
        BindError::NotDigits => "账号只能是数字。".to_owned(),
        BindError::Length { len, min, max } => {
            format!("账号是 {len} 位，应为 {min} 到 {max} 位，请核对。")
        }
        BindError::Luhn => "卡号校验位不对，可能输错了一位，请对照卡面重新输入。".to_owned(),
        BindError::UnknownCardBank => {
            "查不到这张卡的发卡行，请确认是银联借记卡，或改绑对公账户。".to_owned()
        }
        BindError::NotDebitCard(card_type) => format!(
            "这是一张{}，结算款只能付到借记卡或对公账户，请换一张借记卡。",
            card_type.name_zh()
        ),
        BindError::BankMismatch { card_bank_zh, .. } => {
            format!("这张卡是{card_bank_zh}的卡，与选择的开户银行不符；银行卡可以不选开户银行。")
        }
        BindError::UnknownBank => "对公账户需要选择开户银行。".to_owned(),
        BindError::NameMissing => "请填写户名。".to_owned(),
        BindError::NameInvalid => "户名过长或含有不可见字符，请按银行登记的户名填写。".to_owned(),
        BindError::NameHasCardNumber => {
            "户名里像是填了卡号或账号，请填写银行登记的户名。".to_owned()
        }
        other => other.to_string(),
    }
}

impl From<risk::ops::OpsError> for ApiError {
    fn from(error: risk::ops::OpsError) -> Self {
        use risk::ops::OpsError as E;
        let message = error.to_string();
        match error {
            E::Store(e) => e.into(),
            E::NoSuchMerchant { .. } => ApiError::not_found("merchant"),
            E::NoSuchAlert { .. } => ApiError::not_found("risk alert"),
            E::Transition(_) => ApiError::new(StatusCode::CONFLICT, "illegal_transition", message)
                .zh("该商户当前的状态不允许这一操作，请刷新后再看"),
            E::AlertClosed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "illegal_transition", message)
                    .zh("该预警已被处理，请刷新后再看")
            }
            E::Changed { .. } => ApiError::new(StatusCode::CONFLICT, "changed_meanwhile", message)
                .zh("该商户刚被他人审核，请刷新后再看"),
            E::SameOperator { .. } => ApiError::new(StatusCode::FORBIDDEN, "same_user", message)
                .zh("提交申请或暂停该商户的人不能自己批准，须由另一位运营人员批准"),
            E::Qualification(q) => {
                let zh = match q {
                    risk::QualificationError::LicenceNo => {
                        "营业执照号应为 18 位统一社会信用代码（数字或大写字母）".to_owned()
                    }
                    risk::QualificationError::Mcc => "商户类别码（MCC）应为 4 位数字".to_owned(),
                    risk::QualificationError::Field { field } => {
                        format!("资料项 {field} 为空或过长")
                    }
                };
                ApiError::bad_request(message).zh(zh)
            }
            E::Operator => ApiError::bad_request(message).zh("操作人为空，或操作人、备注过长"),
        }
    }
}

/// A payout as shown at `now_ms`: failures with what they mean and what to do, and whether it
/// is stuck (retried after bank system errors for a day: `settlement::is_stuck`).
pub fn payout_json(p: &PayoutRow, now_ms: i64) -> Value {
    let failure = p.failure.as_deref().and_then(PayoutFailure::from_key);
    let diagnosis = failure.map(diagnosis::diagnose_payout);
    json!({
        "key": p.key, "mid": p.mid, "payout_date": p.payout_date, "cutoff_date": p.cutoff_date,
        "amount_fen": p.amount_fen, "amount": query::yuan(p.amount_fen),
        "state": p.state.as_str(), "attempts": p.attempts,
        "account_masked": p.account_masked, "account_version": p.account_version,
        "bank_reference": p.bank_reference, "failure": p.failure,
        "diagnosis": diagnosis,
        "first_attempt_ms": p.first_attempt_ms,
        "stuck": settlement::is_stuck(p, now_ms),
        "updated_at_ms": p.updated_at_ms,
    })
}

#[derive(Deserialize)]
pub struct MidQuery {
    pub mid: Option<String>,
    pub state: Option<String>,
    /// A page after another: its `next_cursor`.
    pub cursor: Option<String>,
}

/// Payouts the principal may see, newest first, [`PAYOUTS_MAX`] a page; `before`: the page
/// after the one whose [`payouts_cursor`] it is.
pub fn payouts_for(
    web: &Web,
    who: &Principal,
    mid: Option<&str>,
    state: Option<&str>,
    before: Option<&str>,
) -> Result<Vec<PayoutRow>, ApiError> {
    let mid = who.merchant_filter(mid)?;
    let state = state
        .map(|s| PayoutState::parse(s).map_err(|_| ApiError::bad_request("state: unknown")))
        .transpose()?;
    let mut rows = match before {
        None => web
            .store
            .payouts_newest(mid.as_deref(), state, PAYOUTS_MAX)?,
        Some(cursor) => {
            let (day, after_mid) = cursor
                .split_once(':')
                .filter(|(day, m)| {
                    day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) && auth::mid_shaped(m)
                })
                .ok_or_else(|| {
                    ApiError::bad_request("cursor: the next_cursor of the previous page")
                        .zh("翻页参数不正确，请从第一页重新查看。")
                })?;
            web.store
                .payouts_newest_before(mid.as_deref(), state, (day, after_mid), PAYOUTS_MAX)?
        }
    };
    rows.retain(|p| who.sees(&p.mid));
    Ok(rows)
}

/// Where the page after `rows` starts, when `rows` is a full page.
pub fn payouts_cursor(rows: &[PayoutRow]) -> Option<String> {
    (rows.len() == usize::try_from(PAYOUTS_MAX).unwrap_or(usize::MAX))
        .then(|| rows.last().map(|p| format!("{}:{}", p.payout_date, p.mid)))
        .flatten()
}

pub async fn payouts(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MidQuery>,
) -> ApiResult {
    let rows = payouts_for(&web, &who, given(&q.mid), given(&q.state), given(&q.cursor))?;
    let now_ms = web.clock.now_ms();
    let items: Vec<Value> = rows.iter().map(|p| payout_json(p, now_ms)).collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": payouts_cursor(&rows) }),
    ))
}

/// Clearing totals one answer carries at most: a merchant's last 400 clearing dates, or that
/// many (date, merchant) rows across merchants, newest first.
pub const CLEARING_TOTALS_MAX: u32 = 400;

/// One merchant's clearing totals per clearing date (from the settle runs on record) and its
/// terminals' batch settlements.
pub fn settlements_for(web: &Web, who: &Principal, mid: Option<&str>) -> Result<Value, ApiError> {
    let mid = who.merchant_filter(mid)?;
    let items: Vec<Value> = web
        .store
        .clearing_totals(mid.as_deref(), CLEARING_TOTALS_MAX)?
        .iter()
        .filter(|t| who.sees(&t.mid))
        .map(|t| {
            json!({
                "clearing_date": t.clearing_date, "mid": t.mid, "lines": t.lines,
                "gross_fen": t.gross_fen, "fee_fen": t.fee_fen,
                "net_fen": t.gross_fen - t.fee_fen,
            })
        })
        .collect();
    let runs: Vec<Value> = if who.is_staff() {
        let runs = web.store.settle_runs(None)?;
        runs.iter()
            .map(|r| {
                json!({ "clearing_date": r.clearing_date, "run_no": r.run_no, "at_ms": r.at_ms,
                        "lines": r.lines, "gross_fen": r.gross_fen, "fee_fen": r.fee_fen })
            })
            .collect()
    } else {
        Vec::new()
    };
    let batches = terminal_batches_for(web, who, mid.as_deref())?;
    Ok(json!({ "items": items, "runs": runs, "batches": batches }))
}

/// Batch settlements one answer carries at most: the newest, across the merchant's terminals
/// (or every terminal, for staff), read in one indexed query; older ones are long cleared and
/// not a merchant's question.
pub const TERMINAL_BATCHES_MAX: u32 = 200;

/// One side of field 48 (62 digits: domestic then foreign, each debit amount 12, count 3,
/// credit amount 12, count 3, result 1) as JSON; `null` when the side was missing or unreadable.
fn totals_json(digits: &str) -> Value {
    let num = |from: usize, len: usize| -> Option<i64> {
        digits.get(from..from + len).and_then(|s| s.parse().ok())
    };
    let half = |at: usize| -> Option<Value> {
        Some(json!({
            "debit_fen": num(at, 12)?, "debit_count": num(at + 12, 3)?,
            "credit_fen": num(at + 15, 12)?, "credit_count": num(at + 27, 3)?,
        }))
    };
    match (digits.len() == 62).then(|| (half(0), half(31))) {
        Some((Some(domestic), Some(foreign))) => {
            json!({ "domestic": domestic, "foreign": foreign })
        }
        _ => Value::Null,
    }
}

/// The settlement result digit (PROTOCOL.md field 48) in plain words.
pub fn batch_result_text(result: u8) -> (&'static str, &'static str, &'static str) {
    match result {
        1 => (
            "balanced",
            "对账平：终端与主机金额笔数一致",
            "Balanced: terminal and host totals agree",
        ),
        2 => (
            "unbalanced",
            "对账不平：终端与主机总数不一致，终端已上送明细，差异见下表",
            "Unbalanced: terminal and host totals differ; the terminal uploaded its batch, see the differences",
        ),
        _ => (
            "error",
            "结算出错：终端总数无法识别，批次未关闭，请在终端上重新结算",
            "Error: the terminal's totals could not be read; the batch stays open, settle again on the terminal",
        ),
    }
}

/// A batch-upload difference's meaning and what the merchant does about it.
pub fn batch_diff_text(kind: BatchDiffKind) -> [&'static str; 4] {
    match kind {
        BatchDiffKind::MissingHere => [
            "主机无此笔",
            "Missing here",
            "终端有这笔交易，主机没有记账（可能未成功或已冲正）：不会结算给您；如顾客已付款，请核对签购单并联系我们。",
            "The terminal has it but the host never counted it (declined or reversed): it is not paid to you; if the customer paid, check the slip and contact us.",
        ],
        BatchDiffKind::MissingAtTerminal => [
            "终端无此笔",
            "Missing at terminal",
            "主机已记账而终端未上送（终端可能断电或清过批次）：仍按主机记录结算，无需处理；如频繁出现请检查终端。",
            "The host counted it but the terminal did not upload it (power loss or a cleared batch): it is still paid by the host's record; if it recurs, have the terminal checked.",
        ],
        BatchDiffKind::AmountDiffers => [
            "金额不一致",
            "Amount differs",
            "双方金额不同：按主机（发卡行批准的）金额结算；请核对签购单上的金额。",
            "The amounts differ: the host's (issuer-approved) amount is paid; check the amount on the slip.",
        ],
    }
}

/// The newest recorded batch settlements of the merchant's terminals (of every terminal for
/// staff not naming one), newest first, [`TERMINAL_BATCHES_MAX`] at most, with both sides'
/// totals and the batch-upload differences.
pub fn terminal_batches_for(
    web: &Web,
    who: &Principal,
    mid: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let mid = who.merchant_filter(mid)?;
    let recent = web
        .store
        .batch_settlements_recent(mid.as_deref(), TERMINAL_BATCHES_MAX)?;
    for (mid, b) in recent.into_iter().filter(|(mid, _)| who.sees(mid)) {
        let batch_no = b.batch_no;
        let (code, zh, en) = batch_result_text(b.result);
        let diffs: Vec<Value> = web
            .store
            .batch_differences(&b.tid, batch_no)?
            .iter()
            .map(|d| {
                let [kzh, ken, wzh, wen] = batch_diff_text(d.kind);
                json!({
                    "stan": d.stan, "kind": d.kind.as_str(), "txn_id": d.txn_id,
                    "pan_masked": d.pan_masked, "host_amount_fen": d.host_amount_fen,
                    "terminal_amount_fen": d.terminal_amount_fen,
                    "kind_text": { "zh": kzh, "en": ken }, "what_to_do": { "zh": wzh, "en": wen },
                })
            })
            .collect();
        out.push(json!({
            "tid": b.tid, "mid": mid, "batch_no": batch_no, "settled_at_ms": b.settled_at_ms,
            "result": b.result, "result_code": code, "result_text": { "zh": zh, "en": en },
            "terminal_totals": totals_json(&b.terminal_totals),
            "host_totals": totals_json(&b.host_totals),
            "upload_done_at_ms": b.upload_done_at_ms,
            "uploaded": web.store.batch_uploads(&b.tid, batch_no)?.len(),
            "differences": diffs,
        }));
    }
    Ok(out)
}

pub async fn settlements(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MidQuery>,
) -> ApiResult {
    Ok(Json(settlements_for(&web, &who, given(&q.mid))?))
}

/// The merchant whose account is meant: a merchant's own, or the one a staff user names.
fn account_mid(who: &Principal, asked: Option<&str>) -> Result<String, ApiError> {
    who.merchant_filter(asked)?
        .ok_or_else(|| ApiError::bad_request("mid is required"))
}

fn change_json(c: &store::settlement::AccountChangeRow) -> Value {
    change_json_named(c, |name| name.to_owned())
}

/// [`change_json`] with the names of who asked and who decided as `name` shows them.
fn change_json_named(
    c: &store::settlement::AccountChangeRow,
    name: impl Fn(&str) -> String,
) -> Value {
    json!({
        "id": c.id, "mid": c.mid, "kind": c.kind.as_str(), "number_masked": c.number_masked,
        "holder_name": c.holder_name, "bank_code": c.bank_code,
        "requested_by": name(&c.requested_by),
        "requested_at_ms": c.requested_at_ms, "state": c.state.as_str(),
        "decided_by": c.decided_by.as_deref().map(&name), "note": c.note,
    })
}

pub fn bound_account_json(web: &Web, who: &Principal, mid: &str) -> Result<Value, ApiError> {
    let names = crate::api::NamesShown::for_principal(web, who)?;
    let account = web.store.bound_account(mid)?.map(|a| {
        json!({
            "kind": a.kind.as_str(), "number_masked": a.number_masked,
            "holder_name": a.holder_name, "bank_code": a.bank_code, "version": a.version,
            "needs_rebind": a.needs_rebind, "updated_at_ms": a.updated_at_ms,
        })
    });
    let changes: Vec<Value> = web
        .store
        .account_changes(Some(mid))?
        .iter()
        .map(|c| change_json_named(c, |n| names.name(n)))
        .collect();
    Ok(json!({ "mid": mid, "account": account, "changes": changes }))
}

pub async fn bound_account(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MidQuery>,
) -> ApiResult {
    let mid = account_mid(&who, given(&q.mid))?;
    known_merchant(&web, &mid)?;
    Ok(Json(bound_account_json(&web, &who, &mid)?))
}

/// 404 for a merchant the journal does not hold: staff naming one by a mistyped MID get what
/// a write for it gets, not an empty answer that reads as "nothing set".
pub fn known_merchant(web: &Web, mid: &str) -> Result<(), ApiError> {
    match web.store.merchant(mid)? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("merchant")),
    }
}

#[derive(Deserialize)]
pub struct BindBody {
    pub mid: Option<String>,
    /// `card` or `bank`.
    pub kind: String,
    /// Wiped when dropped: often a card number.
    pub number: zeroize::Zeroizing<String>,
    pub holder_name: String,
    pub bank_code: Option<String>,
}

/// Binds (or re-binds) a settlement account; after a payout failure the change waits for a
/// second person's confirmation. Audited with masked numbers only.
pub async fn bind_for(web: &Web, who: &Principal, body: BindBody) -> Result<BindOutcome, ApiError> {
    let mid = account_mid(who, given(&body.mid))?;
    let kind =
        AccountKind::parse(&body.kind).map_err(|_| ApiError::bad_request("kind: card or bank"))?;
    let before = web.store.bound_account(&mid)?.map(|a| a.number_masked);
    let input = AccountInput {
        kind,
        number: zeroize::Zeroizing::new(body.number.trim().to_owned()),
        holder_name: body.holder_name,
        bank_code: given(&body.bank_code).map(str::to_owned),
    };
    let store = std::sync::Arc::clone(&web.store);
    let hsm = std::sync::Arc::clone(&web.hsm);
    let directory = std::sync::Arc::clone(&web.directory);
    let now_ms = web.clock.now_ms();
    let requested_by = who.username.clone();
    let bind_mid = mid.clone();
    // Staff binding for a merchant: another person confirms (`confirm_change`).
    let on_behalf = who.is_staff();
    // The settlement crate waits for its writes synchronously: off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        settlement::bind_account_checked(
            store.as_ref(),
            &HsmSealer(hsm.as_ref()),
            &directory,
            &bind_mid,
            &input,
            &requested_by,
            now_ms,
            on_behalf,
        )
    })
    .await
    .map_err(|_| ApiError::internal("bind: the work stopped"))??;
    // This binding's own change, not the merchant's newest: another bound at the same moment
    // would be written into this one's audit row.
    let change_id = match outcome {
        settlement::BindOutcome::Active { change_id, .. }
        | settlement::BindOutcome::PendingConfirmation { change_id } => change_id,
    };
    let after = web
        .store
        .account_change(change_id)?
        .map(|c| c.number_masked);
    auth::audit(
        web,
        &who.username,
        "account.bind",
        &format!("merchant:{mid}"),
        Some(json!({ "account": before })),
        Some(json!({ "account": after, "outcome": outcome })),
    )
    .await;
    Ok(outcome)
}

pub async fn bind(
    State(web): State<Web>,
    who: Principal,
    Json(body): Json<BindBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let outcome = bind_for(&web, &who, body).await?;
    Ok((StatusCode::CREATED, Json(json!(outcome))))
}

/// Changes waiting for a second person (staff only).
pub fn pending_changes(
    web: &Web,
    who: &Principal,
) -> Result<Vec<store::settlement::AccountChangeRow>, ApiError> {
    who.require_staff("see account changes")?;
    Ok(web.store.account_changes_pending()?)
}

pub async fn account_changes(
    State(web): State<Web>,
    who: Principal,
    Query(q): Query<MidQuery>,
) -> ApiResult {
    who.require_staff("see account changes")?;
    let state = given(&q.state)
        .map(|s| ChangeState::parse(s).map_err(|_| ApiError::bad_request("state: unknown")))
        .transpose()?;
    let items: Vec<Value> = web
        .store
        .account_changes(given(&q.mid))?
        .iter()
        .filter(|c| state.is_none_or(|s| c.state == s))
        .map(change_json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The checker confirms (or rejects) a re-binding; not the person who asked for it.
pub async fn decide_change(
    web: &Web,
    who: &Principal,
    id: i64,
    confirm: bool,
    reason: &str,
) -> Result<Value, ApiError> {
    who.require_staff("confirm account changes")?;
    // The merchant reads why its account was refused: a refusal says.
    if !confirm && reason.trim().is_empty() {
        return Err(
            ApiError::bad_request("note: say why it is refused; the merchant reads it")
                .zh("请填写拒绝原因，商户会看到。"),
        );
    }
    let before = web
        .store
        .account_change(id)?
        .ok_or_else(|| ApiError::not_found("account change"))?;
    let store = std::sync::Arc::clone(&web.store);
    let operator = who.username.clone();
    let now_ms = web.clock.now_ms();
    let reason = reason.to_owned();
    let version = tokio::task::spawn_blocking(move || {
        if confirm {
            settlement::confirm_change(store.as_ref(), id, &operator, now_ms).map(Some)
        } else {
            settlement::reject_change(store.as_ref(), id, &operator, &reason, now_ms).map(|()| None)
        }
    })
    .await
    .map_err(|_| ApiError::internal("decide: the work stopped"))??;
    let after = web
        .store
        .account_change(id)?
        .ok_or_else(|| ApiError::not_found("account change"))?;
    auth::audit(
        web,
        &who.username,
        if confirm {
            "account.confirm"
        } else {
            "account.reject"
        },
        &format!("account_change:{id}"),
        Some(json!({ "state": before.state.as_str() })),
        Some(json!({ "state": after.state.as_str(), "version": version })),
    )
    .await;
    Ok(change_json(&after))
}

pub async fn confirm_change(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult {
    Ok(Json(decide_change(&web, &who, id, true, "").await?))
}

#[derive(Deserialize)]
pub struct Note {
    #[serde(default)]
    pub note: String,
}

pub async fn reject_change(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<Note>,
) -> ApiResult {
    Ok(Json(
        decide_change(&web, &who, id, false, &body.note).await?,
    ))
}

/// An operator approves or suspends a merchant; audited.
pub async fn review_for(
    web: &Web,
    who: &Principal,
    mid: &str,
    action: risk::MerchantAction,
    note: &str,
) -> Result<Value, ApiError> {
    who.require_staff("review merchants")?;
    let before = risk::ops::merchant_state(web.store.as_ref(), mid)?
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    let actor = risk::ops::Actor {
        operator: &who.username,
        now_ms: web.clock.now_ms(),
    };
    let store = web.store.as_ref();
    let (profile, audited) = match action {
        risk::MerchantAction::Approve => (
            risk::ops::approve(store, mid, note, actor).await?,
            "merchant.approve",
        ),
        risk::MerchantAction::Suspend => (
            risk::ops::suspend(store, mid, note, actor).await?,
            "merchant.suspend",
        ),
        risk::MerchantAction::Close => (
            risk::ops::close(store, mid, note, actor).await?,
            "merchant.close",
        ),
        // A merchant applies through provisioning, with its qualification data.
        risk::MerchantAction::Apply => {
            return Err(ApiError::bad_request(
                "a merchant applies through provisioning",
            ));
        }
    };
    auth::audit(
        web,
        &who.username,
        audited,
        &format!("merchant:{mid}"),
        Some(json!({ "state": before.as_str() })),
        Some(json!({ "state": profile.state.as_str(), "note": note })),
    )
    .await;
    Ok(json!({ "mid": mid, "state": profile.state.as_str() }))
}

pub async fn approve_merchant(
    State(web): State<Web>,
    who: Principal,
    Path(mid): Path<String>,
    Json(body): Json<Note>,
) -> ApiResult {
    Ok(Json(
        review_for(&web, &who, &mid, risk::MerchantAction::Approve, &body.note).await?,
    ))
}

pub async fn suspend_merchant(
    State(web): State<Web>,
    who: Principal,
    Path(mid): Path<String>,
    Json(body): Json<Note>,
) -> ApiResult {
    Ok(Json(
        review_for(&web, &who, &mid, risk::MerchantAction::Suspend, &body.note).await?,
    ))
}

/// Ends the relationship (or refuses an application): no payments, voids or refunds any more,
/// and its terminals get no working keys; nothing follows a close.
pub async fn close_merchant(
    State(web): State<Web>,
    who: Principal,
    Path(mid): Path<String>,
    Json(body): Json<Note>,
) -> ApiResult {
    Ok(Json(
        review_for(&web, &who, &mid, risk::MerchantAction::Close, &body.note).await?,
    ))
}

#[derive(Deserialize)]
pub struct AlertBody {
    /// `clear`, `suspend_terminal` or `suspend_merchant`.
    pub response: String,
    #[serde(default)]
    pub note: String,
}

/// An operator clears or acts on a risk alert; audited.
pub async fn resolve_alert_for(
    web: &Web,
    who: &Principal,
    id: i64,
    response: &str,
    note: &str,
) -> Result<Value, ApiError> {
    who.require_staff("resolve risk alerts")?;
    let response = match response {
        "clear" => risk::ops::AlertResponse::Clear,
        "suspend_terminal" => risk::ops::AlertResponse::SuspendTerminal,
        "suspend_merchant" => risk::ops::AlertResponse::SuspendMerchant,
        _ => {
            return Err(ApiError::bad_request(
                "response: clear, suspend_terminal or suspend_merchant",
            ));
        }
    };
    let actor = risk::ops::Actor {
        operator: &who.username,
        now_ms: web.clock.now_ms(),
    };
    let alert = risk::ops::resolve_alert(web.store.as_ref(), id, response, note, actor).await?;
    auth::audit(
        web,
        &who.username,
        "risk_alert.resolve",
        &format!("risk_alert:{id}"),
        Some(json!({ "state": "open" })),
        Some(json!({ "state": alert.state.as_str(), "resolution": alert.resolution })),
    )
    .await;
    Ok(json!({ "id": id, "state": alert.state.as_str() }))
}

pub async fn resolve_alert(
    State(web): State<Web>,
    who: Principal,
    Path(id): Path<i64>,
    Json(body): Json<AlertBody>,
) -> ApiResult {
    Ok(Json(
        resolve_alert_for(&web, &who, id, &body.response, &body.note).await?,
    ))
}

fn terms_json(t: &store::settlement::SettlementTermsRow) -> Value {
    json!({
        "mid": t.mid, "debit_bp": t.debit_bp, "debit_cap_fen": t.debit_cap_fen,
        "credit_bp": t.credit_bp, "credit_cap_fen": t.credit_cap_fen,
        "foreign_bp": t.foreign_bp, "qr_bp": t.qr_bp,
        "payout_delay_days": t.payout_delay_days, "updated_at_ms": t.updated_at_ms,
    })
}

/// A merchant's fee plan and payout delay; `terms` is null while the defaults apply.
pub async fn fee_plan(
    State(web): State<Web>,
    who: Principal,
    Path(mid): Path<String>,
) -> ApiResult {
    who.scope(&mid, "merchant")?;
    known_merchant(&web, &mid)?;
    let terms = web.store.settlement_terms(&mid)?;
    Ok(Json(
        json!({ "mid": mid, "terms": terms.as_ref().map(terms_json) }),
    ))
}

#[derive(Deserialize)]
pub struct FeePlanBody {
    pub debit_bp: i64,
    pub debit_cap_fen: Option<i64>,
    pub credit_bp: i64,
    pub credit_cap_fen: Option<i64>,
    pub foreign_bp: i64,
    pub qr_bp: i64,
    pub payout_delay_days: u32,
}

/// Admin: sets a merchant's fee plan; audited with the plan before and after.
pub async fn set_fee_plan(
    State(web): State<Web>,
    who: Principal,
    Path(mid): Path<String>,
    Json(body): Json<FeePlanBody>,
) -> ApiResult {
    who.require_admin("set fee plans")?;
    if web.store.merchant(&mid)?.is_none() {
        return Err(ApiError::not_found("merchant"));
    }
    let before = web.store.settlement_terms(&mid)?.as_ref().map(terms_json);
    let row = store::settlement::SettlementTermsRow {
        mid: mid.clone(),
        debit_bp: body.debit_bp,
        debit_cap_fen: body.debit_cap_fen,
        credit_bp: body.credit_bp,
        credit_cap_fen: body.credit_cap_fen,
        foreign_bp: body.foreign_bp,
        qr_bp: body.qr_bp,
        payout_delay_days: body.payout_delay_days,
        updated_at_ms: web.clock.now_ms(),
    };
    settlement::fees::check_terms(&row).map_err(ApiError::bad_request)?;
    let after = terms_json(&row);
    let audit = auth::audit_record(
        &web,
        &who.username,
        "fee_plan.set",
        &format!("merchant:{mid}"),
        before,
        Some(after.clone()),
    )
    .await?;
    web.store
        .submit(vec![
            store::Record::Settlement(store::settlement::SettlementRecord::Terms(row)),
            audit,
        ])?
        .await?;
    Ok(Json(after))
}

#[derive(Deserialize)]
pub struct StatusBody {
    /// `active`, `suspended` or `closed`.
    pub status: String,
}

/// Admin: suspends, reactivates or closes a terminal (the switch picks it up on its next
/// refresh); audited.
pub async fn set_terminal_status(
    State(web): State<Web>,
    who: Principal,
    Path(tid): Path<String>,
    Json(body): Json<StatusBody>,
) -> ApiResult {
    who.require_admin("manage terminals")?;
    let status = store::Status::parse(&body.status)
        .map_err(|_| ApiError::bad_request("status: active, suspended or closed"))?;
    let terminal = web
        .store
        .terminal(&tid)?
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    let audit = auth::audit_record(
        &web,
        &who.username,
        "terminal.status",
        &format!("terminal:{tid}"),
        Some(json!({ "status": terminal.status.as_str() })),
        Some(json!({ "status": status.as_str() })),
    )
    .await?;
    web.store
        .submit(vec![
            store::Record::Risk(store::risk::RiskRecord::TerminalStatus {
                tid: tid.clone(),
                status,
            }),
            audit,
        ])?
        .await?;
    Ok(Json(json!({ "tid": tid, "status": status.as_str() })))
}
