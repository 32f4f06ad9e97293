//! Errors as the API answers them: an HTTP status, a stable machine-readable `code` and a
//! message, as JSON `{"code": .., "message": ..}`. Messages never carry card data.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use resolve::ResolveError;
use resolve::cases::CaseError;
use store::StoreError;

/// One API failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable: clients match on it. See the `Error` schema in the OpenAPI document.
    pub code: &'static str,
    pub message: String,
    /// The same detail in Chinese, where one is written: pages in Chinese show it instead of
    /// `message`, and the API gives it beside it (`message_zh`).
    pub message_zh: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            message_zh: None,
        }
    }

    /// The detail in Chinese too.
    #[must_use]
    pub fn zh(mut self, message_zh: impl Into<String>) -> ApiError {
        self.message_zh = Some(message_zh.into());
        self
    }

    /// The detail in the page's language: the Chinese one when there is one.
    pub fn detail(&self, lang: domain::diagnosis::Lang) -> &str {
        match (lang, &self.message_zh) {
            (domain::diagnosis::Lang::Zh, Some(zh)) => zh,
            _ => &self.message,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in or send a bearer token",
        )
        .zh("请先登录（接口调用请提供访问令牌）")
    }

    pub fn forbidden(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your role may not {what}"),
        )
        .zh("您的角色无权执行此操作")
    }

    pub fn not_found(what: &str) -> ApiError {
        let noun = match what {
            "transaction" => "交易",
            "case" => "工单",
            "merchant" => "商户",
            "terminal" => "终端",
            "account change" => "账户变更申请",
            "risk alert" => "风险预警",
            "user" => "用户",
            "evidence" => "证据包",
            "evidence (the transaction has no RRN)" => "证据包（这笔交易没有参考号）",
            _ => "记录",
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
        .zh(format!("找不到该{noun}，或您无权查看"))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn csrf() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the form's anti-forgery token is missing or wrong; reload the page",
        )
        .zh("页面已过期：请返回上一页，刷新后再提交")
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            .zh("系统暂时无法完成此操作，请稍后重试；如持续出现，请联系收单机构")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.message_zh {
            Some(zh) => {
                serde_json::json!({ "code": self.code, "message": self.message, "message_zh": zh })
            }
            None => serde_json::json!({ "code": self.code, "message": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::QueueFull => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the journal is busy; retry shortly",
            )
            .zh("系统繁忙，请稍后重试"),
            // The engine's own words (table, column and constraint names; on PostgreSQL the
            // server's message) stay in the log.
            StoreError::Constraint { .. } => {
                tracing::info!(%error, "a write conflicted with the journal");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "this conflicts with what was recorded meanwhile: reload and try again",
                )
                .zh("数据刚被他人修改，请刷新后重试")
            }
            other => {
                tracing::warn!(error = %other, "journal error answered as internal");
                ApiError::internal("the journal could not complete this request; try again")
            }
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::Store(e) => e.into(),
            ResolveError::NoSuchRrn(_) | ResolveError::NoSuchTxn(_) => {
                ApiError::not_found("transaction")
            }
            ResolveError::NotVisible(what) => ApiError::not_found(what),
            ResolveError::NotRedrivable { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_redrivable", error.to_string())
            }
            ResolveError::BadEndpoint(_) | ResolveError::PrivateEndpoint(_) => {
                ApiError::bad_request(error.to_string())
            }
            ResolveError::Hsm(e) => {
                tracing::warn!(error = %e, "HSM error answered as internal");
                ApiError::internal("the security module could not complete this request")
            }
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(error: CaseError) -> Self {
        let zh = case_error_zh(&error);
        let api = case_api_error(error);
        match zh {
            Some(zh) => api.zh(zh),
            None => api,
        }
    }
}

/// A case refusal in Chinese, for the pages (the API gives it as `message_zh`).
fn case_error_zh(error: &CaseError) -> Option<String> {
    let yuan = |fen: i64| format!("{}.{:02}", fen / 100, (fen % 100).abs());
    Some(match error {
        CaseError::IllegalTransition { from, .. } => {
            let state = match from.as_str() {
                "open" => "处理中",
                "waiting_issuer" => "等待发卡行",
                "waiting_merchant" => "等待商户",
                "resolved" => "已解决",
                "rejected" => "已驳回",
                "escalated" => "已升级",
                other => other,
            };
            format!("工单当前状态（{state}）不能这样操作")
        }
        CaseError::ResolutionRequired => "解决或驳回工单须填写结论".to_owned(),
        CaseError::TooLong => format!(
            "内容太长（最多 {} 字节）或附件超过 {} 个",
            resolve::cases::TEXT_LEN_MAX,
            resolve::cases::ATTACHMENTS_MAX
        ),
        CaseError::TooManyEntries => format!(
            "一个工单最多 {} 条记录，请新开工单继续",
            resolve::cases::ENTRIES_MAX
        ),
        // As another merchant's case is refused (`Principal::scope`): the two answer alike.
        CaseError::NotFound => return None,
        CaseError::Conflict => "工单刚被他人更新，请刷新后重试".to_owned(),
        CaseError::NotRefundApplication => "只有退货申请工单可以批准退货".to_owned(),
        CaseError::AlreadyRefunded => "这笔退货已经执行过".to_owned(),
        CaseError::RefundInDoubt => {
            "这笔交易的一次退货或撤销可能已在发卡行成功（没有应答，或应答无法读取、无法记录），正在冲正；\
             发卡行答复冲正之前不能再退货，也不能关闭它的工单。若发卡行拒绝了冲正，那次退货或撤销有效：再次退货前请先向发卡行核实"
                .to_owned()
        }
        CaseError::ExceedsRemaining {
            asked_fen,
            left_fen,
        } => format!(
            "退货金额 {} 元超过可退金额 {} 元",
            yuan(*asked_fen),
            yuan(*left_fen)
        ),
        CaseError::BadAmount => "退货金额须大于零".to_owned(),
        CaseError::ApplicationWaiting(id) => {
            format!("这笔交易的退货申请（工单 {id}）正等待运营人员处理；请在该工单中补充，或等待其处理完毕")
        }
        CaseError::NotRefundable => "只有成功的消费或预授权完成可以退货".to_owned(),
        CaseError::PastRefundLimit => format!(
            "这笔交易已超过 {} 天的退货期限，终端和工单都不能再退，请联系收单机构处理",
            switch::REFUND_DAYS_MAX
        ),
        CaseError::SameUser => "退货申请的发起人不能自己批准，须由另一位运营人员批准".to_owned(),
        CaseError::NoSuchTransaction(_)
        | CaseError::Refund(_)
        | CaseError::Store(_)
        | CaseError::Resolve(_) => return None,
    })
}

fn case_api_error(error: CaseError) -> ApiError {
    {
        let message = error.to_string();
        match error {
            CaseError::IllegalTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "illegal_transition", message)
            }
            CaseError::ResolutionRequired
            | CaseError::TooLong
            | CaseError::TooManyEntries
            | CaseError::BadAmount
            | CaseError::NotRefundable
            | CaseError::PastRefundLimit
            | CaseError::NotRefundApplication => ApiError::bad_request(message),
            CaseError::ExceedsRemaining { .. } => {
                ApiError::new(StatusCode::CONFLICT, "exceeds_remaining", message)
            }
            CaseError::SameUser => ApiError::new(StatusCode::FORBIDDEN, "same_user", message),
            CaseError::NotFound => ApiError::not_found("case"),
            CaseError::NoSuchTransaction(_) => ApiError::not_found("transaction"),
            CaseError::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            CaseError::AlreadyRefunded => {
                ApiError::new(StatusCode::CONFLICT, "already_refunded", message)
            }
            CaseError::RefundInDoubt => {
                ApiError::new(StatusCode::CONFLICT, "refund_in_doubt", message)
            }
            CaseError::ApplicationWaiting(_) => {
                ApiError::new(StatusCode::CONFLICT, "application_waiting", message)
            }
            CaseError::Refund(switch::BackOfficeError::Store(e)) => {
                tracing::warn!(error = %e, "refund: the journal failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "refund_failed",
                    "the refund could not be recorded; try again",
                )
            }
            CaseError::Refund(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "refund_failed", message)
            }
            CaseError::Store(e) => e.into(),
            CaseError::Resolve(e) => e.into(),
        }
    }
}

/// Whether JSON text holds an escaped NUL: `\u0000` whose backslash is not itself escaped.
fn json_escaped_nul(bytes: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (at, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u'
            && backslashes % 2 == 1
            && bytes.get(at + 1..at + 5) == Some(b"0000".as_slice())
        {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// Refuses a request carrying a NUL character anywhere it could reach the journal: in its
/// path or query (`%00`), or its body (a raw 0 byte; `%00` in a form, `\u0000` in JSON). No
/// text this host keeps has one, and PostgreSQL refuses it in text, which would otherwise come
/// back as a 500 from deep in a read.
pub async fn refuse_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let percent_nul = |bytes: &[u8]| bytes.windows(3).any(|w| w.eq_ignore_ascii_case(b"%00"));
    let refused = || {
        ApiError::bad_request("text may not contain a NUL character")
            .zh("输入内容不能包含 NUL 字符")
            .into_response()
    };
    let uri = request.uri();
    if percent_nul(uri.path().as_bytes()) || uri.query().is_some_and(|q| percent_nul(q.as_bytes()))
    {
        return refused();
    }
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is too large",
            )
            .into_response();
        }
    };
    let nul = bytes.contains(&0)
        || (content_type.starts_with("application/x-www-form-urlencoded") && percent_nul(&bytes))
        || (content_type.contains("json") && json_escaped_nul(&bytes));
    if nul {
        return refused();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// What a request body may hold before it is read for [`refuse_nul`]; axum's own default
/// limit for the extractors.
const BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Rewrites the answers axum's extractors give a request they cannot read (a JSON body of the
/// wrong shape, a path or query parameter that does not parse). Their text quotes the
/// offending value: a card number sent as a JSON number, or typed where a transaction id
/// belongs, would come back in the answer. Every other answer carries JSON (the API) or HTML
/// (the pages), so an extractor's is the only plain-text client error; it is replaced by a
/// message that names what kind of fault it was and at most a missing field's name (ours,
/// from the request type), never a value. The API gets it as its usual JSON error.
pub async fn plain_rejections(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4_096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    // serde's own words name a field of our request type (lower case and underscores, no
    // digits). The same words inside a value the client sent are not taken: they would echo
    // the value.
    let missing = text
        .find(": missing field `")
        .and_then(|at| text.get(at + 2..))
        .and_then(|rest| rest.get(..rest.get(15..)?.find('`')? + 16))
        .filter(|m| {
            let name = m.get(15..m.len() - 1).unwrap_or_default();
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
    let message = match (status, missing) {
        (_, Some(missing)) => format!("the request body does not fit this request: {missing}"),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, None) => {
            "send the body as JSON (Content-Type: application/json)".to_owned()
        }
        (StatusCode::PAYLOAD_TOO_LARGE, None) => "the request body is too large".to_owned(),
        (StatusCode::UNPROCESSABLE_ENTITY, None) => "the request body does not fit this \
            request: a field has the wrong type or value, or is not one this request takes"
            .to_owned(),
        _ => "the request could not be read: check its path, parameters and body".to_owned(),
    };
    if api {
        ApiError::new(status, "bad_request", message).into_response()
    } else {
        (status, message).into_response()
    }
}
