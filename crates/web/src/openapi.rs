//! The OpenAPI 3.1 document of `/api`, written by hand. A test compares its paths and methods
//! with [`crate::api::routes`] both ways, so a route cannot be added or removed silently.

use serde_json::{Value, json};

fn param(name: &str, place: &str, description: &str) -> Value {
    json!({
        "name": name, "in": place, "required": place == "path",
        "description": description, "schema": { "type": "string" }
    })
}

fn op(summary: &str, params: Vec<Value>, body: Option<&str>, response: &str) -> Value {
    op_answering("200", summary, params, body, response)
}

/// An operation that needs no sign-in.
fn public(mut operation: Value) -> Value {
    if let Some(map) = operation.as_object_mut() {
        map.insert("security".to_owned(), json!([]));
    }
    operation
}

/// An operation that creates what it answers with: 201.
fn op_created(summary: &str, params: Vec<Value>, body: Option<&str>, response: &str) -> Value {
    op_answering("201", summary, params, body, response)
}

fn op_answering(
    status: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<&str>,
    response: &str,
) -> Value {
    let mut operation = json!({
        "summary": summary,
        "parameters": params,
        "security": [{ "bearer": [] }, { "session": [] }],
        "responses": {
            status: { "description": "OK", "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{response}") } } } },
            "default": { "description": "error", "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Error" } } } }
        }
    });
    if let (Some(body), Some(map)) = (body, operation.as_object_mut()) {
        map.insert(
            "requestBody".to_owned(),
            json!({ "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{body}") } } } }),
        );
    }
    operation
}

/// The document served at `/api/openapi.json`.
pub fn document() -> Value {
    let mid = param("mid", "path", "merchant id (MID, 15 digits)");
    let id = param("id", "path", "numeric id");
    let tid = param("tid", "path", "terminal id (TID, 8 characters)");
    let mid_q = param(
        "mid",
        "query",
        "only this merchant (staff); a merchant sees its own",
    );
    // Where staff must name the merchant (one merchant's data, not a list across them).
    let mid_staff = param(
        "mid",
        "query",
        "the merchant: required for staff (400 without it); a merchant user sends none",
    );
    let limit = param("limit", "query", "page size, 1..200, default 50");
    let cursor = param("cursor", "query", "next_cursor of the previous page");
    let search = [
        mid_q.clone(),
        param(
            "from",
            "query",
            "first day, YYYY-MM-DD, China time (default: a week before `to`; with `rrn` and no \
             `from`, any day)",
        ),
        param(
            "to",
            "query",
            "last day, YYYY-MM-DD, China time (inclusive)",
        ),
        param("amount", "query", "amount in yuan, 12.34"),
        param("amount_fen", "query", "amount in fen"),
        param("last4", "query", "last four digits of the card"),
        param(
            "rrn",
            "query",
            "retrieval reference number, 12 letters and digits",
        ),
        param("tid", "query", "terminal id, up to 8 letters and digits"),
        param(
            "stan",
            "query",
            "the terminal's trace number (on the slip), 1 to 6 digits",
        ),
        param(
            "auth_code",
            "query",
            "the issuer's authorisation code, up to 6 letters and digits",
        ),
        param("code", "query", "a response code (field 39), e.g. 05"),
        param(
            "status",
            "query",
            "transaction state: approved, declined, timed_out, ...",
        ),
        param(
            "outcome",
            "query",
            "the sales a dashboard card counts: issuer-declined (not approved, the issuer asked), host-declined (refused by the host, never sent), reversed-after-approval",
        ),
        limit.clone(),
        cursor.clone(),
    ];
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "shoudan acquiring API",
            "version": "1",
            "description": "Merchants, terminals, transactions with diagnosis and timeline, \
                evidence packages, cases and refund applications, risk alerts. A merchant user \
                sees only its own merchant (another merchant's rows answer 404). No full PAN \
                appears anywhere: cards are masked (622202******0123) or last four digits."
        },
        "paths": {
            "/api/openapi.json": { "get": public(op("This document", vec![], None, "Object")) },
            "/api/tokens": { "post": {
                "summary": "Exchange a username and password for a bearer token",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/TokenRequest" } } } },
                "responses": {
                    "200": { "description": "token", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Token" } } } },
                    "400": { "description": "bad_request: a name too long or with control characters",
                        "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "401": { "description": "bad_credentials: a wrong pair, an unknown or disabled user",
                        "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "429": { "description": "locked: too many wrong passwords in a row (no password is checked while locked); too_many_sign_ins: too many wrong sign-ins from this client address within 15 minutes (behind a trusted proxy, the address its X-Forwarded-For names), none checked until the window ends",
                        "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "503": { "description": "busy: too many sign-ins at once", "content": {
                        "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "default": { "description": "error (a body that is not JSON of this shape, too large, or the host's own failure)", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } }
                }
            },
            "get": op("The caller's API tokens not yet expired, newest first: id, name, \
                issued, expires, revoked (never the token)", vec![], None, "List") },
            "/api/tokens/{id}": { "delete": op("Revoke one of the caller's API tokens (its id from \
                GET /api/tokens); audited", vec![param("id", "path", "the token's id: 16 hex \
                digits of its digest, never the token")], None, "Object") },
            "/api/me": { "get": op("Who the token or session belongs to, and whether they must \
                set their own password first (`must_set_password`: one an admin set; every other \
                call but POST /api/me/password answers 403 password_change_required until then)",
                vec![], None, "User") },
            "/api/me/password": { "post": op("Change one's own password (the current one is \
                checked as a sign-in is; every page session of the user ends, a caller signed in \
                by one gets a new one's cookie, and every API token of the user is revoked, \
                the one calling included)", vec![], Some("PasswordChange"),
                "Object") },
            "/api/merchants": { "get": op("Merchants the caller may see", vec![], None, "List") },
            "/api/merchants/{mid}": { "get": op("One merchant", vec![mid.clone()], None, "Merchant") },
            "/api/merchants/{mid}/dashboard": {
                "get": op("Today's numbers: volume, approval rate, declines by code and hour",
                    vec![mid], None, "Dashboard") },
            "/api/merchants/{mid}/fee-plan": {
                "get": op("A merchant's fee plan and payout delay (null: defaults)",
                    vec![param("mid", "path", "merchant id")], None, "Object"),
                "put": op("Admin: set a merchant's fee plan (basis points, caps in fen, T+n)",
                    vec![param("mid", "path", "merchant id")], Some("FeePlan"), "Object")
            },
            "/api/terminals/{tid}/status": { "post": op(
                "Admin: suspend, reactivate or close a terminal",
                vec![param("tid", "path", "terminal id")], Some("Status"), "Object") },
            "/api/terminals": { "get": op("Terminal health (sign-in, MAC failures, timeouts, reversals, software version and \
                 clock drift from the terminal's frames: application_type, software_version, \
                 software_sub_version, clock_drift_s; chip-to-magstripe fallbacks, with the fix from 3) with fixes",
                vec![mid_q.clone()], None, "List") },
            "/api/terminals/{tid}": { "get": op("One terminal's health", vec![tid], None, "Object") },
            "/api/transactions": { "get": op("Search transactions, newest first; searches run a few at a time (503 busy after 10 s without a turn)", search.to_vec(), None, "TxnPage") },
            "/api/transactions/{id}": { "get": op("A transaction's timeline and diagnosis",
                vec![id.clone()], None, "Explanation") },
            "/api/transactions/{id}/evidence": { "get": op(
                "The evidence package for the issuer (bank phone, codes, timeline)",
                vec![id.clone()], None, "Object") },
            "/api/cases": {
                "get": op("Cases the caller may see, newest first, without their timelines (`entries`: read a case alone for it); an unknown state or kind is 400",
                    vec![mid_q.clone(), param("state", "query", "open, waiting_issuer, waiting_merchant, resolved, rejected, escalated"),
                      param("kind", "query", "issuer_inquiry, refund_application, dispute"),
                      limit.clone(), cursor.clone()],
                    None, "List"),
                "post": op_created("Open an issuer inquiry, refund application or dispute; a merchant's user with 200 cases open already gets 429 too_many_open_cases",
                    vec![], Some("OpenCase"), "Case")
            },
            "/api/cases/{id}": { "get": op("A case with its timeline", vec![id.clone()], None, "Case") },
            "/api/cases/{id}/entries": { "post": op("Add an entry to a case's timeline",
                vec![id.clone()], Some("Entry"), "Case") },
            "/api/cases/{id}/approve-refund": { "post": op(
                "Operator: approve a refund application; the refund runs through the switch",
                vec![id], None, "Case") },
            "/api/cases/{id}/transition": { "post": op(
                "Operator: move a case (wait on issuer or merchant, reopen, escalate, resolve, reject)",
                vec![param("id", "path", "case id")], Some("Transition"), "Case") },
            "/api/cases/{id}/assign": { "post": op(
                "Operator: who works on a case and by when (a case is due by its kind's time unless set)",
                vec![param("id", "path", "case id")], Some("Assign"), "Case") },
            "/api/refund-approvals": { "get": op("Operator: refund applications waiting", vec![], None, "List") },
            "/api/webhook": {
                "get": op("The merchant's webhook endpoint", vec![mid_staff.clone()], None, "Object"),
                "put": op("Set the webhook endpoint (https:// or http://) and its signing secret (sealed, never shown again)",
                    vec![], Some("Webhook"), "Object")
            },
            "/api/notifications": { "get": op("A merchant's webhook notifications, newest first, each with its event (payload)",
                vec![mid_staff.clone(), limit.clone(), cursor.clone()], None, "List") },
            "/api/notifications/{id}/redrive": { "post": op(
                "Send a failed notification (or one that found no endpoint) again, due at once; 409 not_redrivable for any other",
                vec![param("id", "path", "notification id"), mid_staff.clone()], None, "Object") },
            "/api/duplicates": { "get": op(
                "A merchant's suspected duplicate payments, newest first, with what to do",
                vec![mid_staff.clone(), limit.clone(), cursor.clone()], None, "List") },
            "/api/risk/alerts": { "get": op("Operator: risk alerts",
                vec![param("state", "query", "alert state"), limit.clone()], None, "List") },
            "/api/merchant-reviews": { "get": op("Operator: merchants and their onboarding state", vec![], None, "List") },
            "/api/merchant-reviews/{mid}/approve": { "post": op(
                "Operator: approve an applicant or lift a suspension",
                vec![param("mid", "path", "merchant id")], Some("Note"), "Object") },
            "/api/merchant-reviews/{mid}/suspend": { "post": op("Operator: suspend a merchant",
                vec![param("mid", "path", "merchant id")], Some("Note"), "Object") },
            "/api/merchant-reviews/{mid}/close": { "post": op(
                "Operator: close a merchant (or refuse its application): nothing follows, its terminals get no working keys",
                vec![param("mid", "path", "merchant id")], Some("Note"), "Object") },
            "/api/risk/alerts/{id}/resolve": { "post": op(
                "Operator: clear a risk alert or suspend its terminal or merchant",
                vec![param("id", "path", "alert id")], Some("AlertResponse"), "Object") },
            "/api/settlements": { "get": op(
                "Clearing totals per merchant and clearing date (gross, fees, net); terminal batch settlements (result, both totals, upload differences with what to do); settle runs for staff",
                vec![param("mid", "query", "merchant (staff)")], None, "List") },
            "/api/payouts": { "get": op("Payouts with status, newest first, 200 a page; failures with their diagnosis and steps; stuck: retried after bank system errors for a day or more since first_attempt_ms",
                vec![param("mid", "query", "merchant (staff)"),
                     param("state", "query", "pending, sent, held (a payout the bank returned is held, its failure payout-returned)"),
                     param("cursor", "query", "the next page: the previous page's next_cursor (null on the last)")], None, "List") },
            "/api/bound-account": {
                "get": op("The bound settlement account (masked) and its changes",
                    vec![mid_staff.clone()], None, "Object"),
                "post": op_created("Bind or re-bind the settlement account (staff name the merchant in the body's mid); a merchant's first account is in force at once, a change of a bound one (or any binding by staff) waits for an operator other than the requester to confirm",
                    vec![], Some("BindAccount"), "Object")
            },
            "/api/account-changes": { "get": op("Operator: account changes (maker-checker queue)",
                vec![param("mid", "query", "merchant"),
                     param("state", "query", "active, pending_confirmation, rejected, superseded")],
                None, "List") },
            "/api/account-changes/{id}/confirm": { "post": op(
                "Operator: confirm a re-binding (not the one who asked)",
                vec![param("id", "path", "change id")], None, "Object") },
            "/api/account-changes/{id}/reject": { "post": op("Operator: reject a re-binding",
                vec![param("id", "path", "change id")], Some("Note"), "Object") },
            "/api/users": {
                "get": op("Admin: users", vec![], None, "List"),
                "post": op_created("Admin: create a user", vec![], Some("NewUser"), "User")
            },
            "/api/users/{id}/password": {
                "post": op("Admin: set a user's password (ends their page sessions, revokes their API tokens, clears their lock)",
                    vec![param("id", "path", "user id")], Some("PasswordReset"), "User")
            },
            "/api/users/{id}/disable": {
                "post": op("Admin: disable a user (ends their sessions, revokes their tokens)",
                    vec![param("id", "path", "user id")], None, "User")
            },
            "/api/users/{id}/enable": {
                "post": op("Admin: enable a disabled user", vec![param("id", "path", "user id")],
                    None, "User")
            },
            "/api/users/{id}/unlock": {
                "post": op("Admin: unlock a user locked by wrong passwords", vec![param("id", "path", "user id")],
                    None, "Object")
            },
            "/api/audit": { "get": op("Admin: the audit log, newest first", vec![limit, cursor], None, "List") }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "session": { "type": "apiKey", "in": "cookie", "name": "__Host-shoudan_session",
                    "description": "the portal's session cookie, where its cookies are Secure (served over TLS, the default); `shoudan_session` on a portal reached over plain HTTP (the demo)" }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "enum": [
                            "unauthorized", "bad_credentials", "forbidden", "not_found",
                            "bad_request", "csrf", "conflict", "illegal_transition",
                            "exceeds_remaining", "already_refunded", "refund_failed", "busy", "too_large",
                            "same_user", "bad_account", "locked", "too_many_sign_ins", "not_redrivable",
                            "too_many_open_cases",
                            "refund_in_doubt", "application_waiting", "changed_meanwhile",
                            "password_change_required", "internal"] },
                        "message": { "type": "string" },
                        "message_zh": { "type": "string",
                            "description": "The same detail in Chinese, where there is one." }
                    }
                },
                "Object": { "type": "object" },
                "List": { "type": "object", "properties": {
                    "items": { "type": "array", "items": { "type": "object" } },
                    "next_cursor": { "type": ["string", "null"] } } },
                "PasswordChange": { "type": "object", "required": ["current", "new"],
                    "properties": { "current": { "type": "string" }, "new": { "type": "string",
                        "minLength": 8, "maxLength": 256 } } },
                "PasswordReset": { "type": "object", "required": ["password"],
                    "properties": { "password": { "type": "string", "minLength": 8,
                        "maxLength": 256 } } },
                "TokenRequest": { "type": "object", "required": ["username", "password"],
                    "properties": { "username": { "type": "string" }, "password": { "type": "string" },
                                    "name": { "type": "string", "maxLength": crate::auth::TOKEN_NAME_CHARS_MAX,
                                        "description": "a label; card numbers in it are kept masked" } } },
                "Token": { "type": "object", "properties": { "token": { "type": "string" },
                    "expires_at_ms": { "type": "integer" },
                    "user": { "$ref": "#/components/schemas/User" } } },
                "User": { "type": "object", "properties": {
                    "username": { "type": "string" }, "role": { "type": "string",
                        "enum": ["merchant", "operator", "admin"] },
                    "mid": { "type": ["string", "null"] },
                    "must_set_password": { "type": "boolean", "description": "GET /api/me \
                        only: the password was set by an admin; nothing but POST \
                        /api/me/password until the user sets their own" } } },
                "NewUser": { "type": "object", "required": ["username", "password", "role"],
                    "properties": { "username": { "type": "string" }, "password": { "type": "string" },
                        "role": { "type": "string" }, "mid": { "type": "string" },
                        "display_name": { "type": "string" } } },
                "Merchant": { "type": "object", "properties": {
                    "mid": { "type": "string" }, "name": { "type": "string" },
                    "status": { "type": "string" }, "mcc": { "type": "string" } } },
                "Dashboard": { "type": "object" },
                "TxnSummary": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "rrn": { "type": ["string", "null"] },
                    "amount_fen": { "type": "integer" },
                    "masked_pan": { "type": ["string", "null"] },
                    "last4": { "type": ["string", "null"] },
                    "response_code": { "type": ["string", "null"] },
                    "state": { "type": "string" } } },
                "TxnPage": { "type": "object", "properties": {
                    "items": { "type": "array", "items": { "$ref": "#/components/schemas/TxnSummary" } },
                    "next_cursor": { "type": ["string", "null"] } } },
                "Explanation": { "type": "object", "properties": {
                    "txn": { "$ref": "#/components/schemas/TxnSummary" },
                    "outcome": { "type": "string" }, "steps": { "type": "array" },
                    "diagnosis": { "type": ["object", "null"] } } },
                "OpenCase": { "type": "object", "required": ["kind"], "properties": {
                    "kind": { "type": "string", "enum": ["issuer_inquiry", "refund_application", "dispute"] },
                    "txn_id": { "type": "integer" }, "title": { "type": "string" },
                    "text": { "type": "string" }, "refund_fen": { "type": "integer" } } },
                "Webhook": { "type": "object", "required": ["url", "secret"], "properties": {
                    "mid": { "type": "string" }, "url": { "type": "string" },
                    "secret": { "type": "string", "minLength": 16 } } },
                "Transition": { "type": "object", "required": ["action"], "properties": {
                    "action": { "type": "string", "enum": ["wait_on_issuer", "wait_on_merchant",
                        "reopen", "escalate", "resolve", "reject"] },
                    "note": { "type": "string" },
                    "resolution": { "type": "string", "description": "required to resolve or reject" },
                    "version": { "type": "integer", "description": "the case version the decision was made on: 409 conflict if the case moved since" } } },
                "Assign": { "type": "object", "properties": {
                    "assignee": { "type": ["string", "null"], "description": "a staff username; null for nobody; left out, unchanged" },
                    "due_at_ms": { "type": ["integer", "null"], "description": "ms since the epoch, within a year back and five years ahead (else 400); null for no date; left out, unchanged" } } },
                "FeePlan": { "type": "object",
                    "required": ["debit_bp", "credit_bp", "foreign_bp", "qr_bp", "payout_delay_days"],
                    "properties": { "debit_bp": { "type": "integer" }, "debit_cap_fen": { "type": ["integer", "null"] },
                        "credit_bp": { "type": "integer" }, "credit_cap_fen": { "type": ["integer", "null"] },
                        "foreign_bp": { "type": "integer" }, "qr_bp": { "type": "integer" },
                        "payout_delay_days": { "type": "integer" } } },
                "Status": { "type": "object", "required": ["status"], "properties": {
                    "status": { "type": "string", "enum": ["active", "suspended", "closed"] } } },
                "Note": { "type": "object", "properties": { "note": { "type": "string" } } },
                "AlertResponse": { "type": "object", "required": ["response"], "properties": {
                    "response": { "type": "string", "enum": ["clear", "suspend_terminal", "suspend_merchant"] },
                    "note": { "type": "string" } } },
                "BindAccount": { "type": "object", "required": ["kind", "number", "holder_name"],
                    "properties": { "mid": { "type": "string" },
                        "kind": { "type": "string", "enum": ["card", "bank"] },
                        "number": { "type": "string", "description": "sealed at once; answers show it masked" },
                        "holder_name": { "type": "string" }, "bank_code": { "type": "string" } } },
                "Entry": { "type": "object", "required": ["text"],
                    "properties": { "text": { "type": "string" } } },
                "Case": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "kind": { "type": "string" },
                    "state": { "type": "string" }, "refund_code": { "type": ["string", "null"] },
                    "entries": { "type": "array" } } }
            }
        }
    })
}
