//! Users and who is asking: argon2id password hashes, page sessions in an HttpOnly SameSite=Strict
//! cookie with a per-session anti-forgery token, bearer tokens for the API, roles, the audit log.
//! Session and API tokens are random 32 bytes; the store keeps only their SHA-256 digests.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use store::web::{ApiTokenRow, AuditRow, LoginFailuresRow, Role, SessionRow, UserRow, WebRecord};
use store::{Record, Store, StoreError};
use zeroize::Zeroizing;

use crate::Web;
use crate::error::ApiError;
pub use crate::password::{
    HashError, PASSWORD_LEN_MAX, PASSWORD_LEN_MIN, hash_password, verify_password,
};
use crate::password::{on_turn, verify_stored};

/// The page session cookie, on a portal reached over plain HTTP (the demo).
pub const SESSION_COOKIE: &str = "shoudan_session";
/// The page session cookie with `secure_cookies`: the `__Host-` prefix has a browser take it
/// only with `Secure`, `Path=/` and no `Domain`, so a neighbouring host (a subdomain, or one
/// reached over plain HTTP) cannot set one that fixes or shadows the session.
pub const SECURE_SESSION_COOKIE: &str = "__Host-shoudan_session";

/// The session cookie's name for a portal whose cookies are `secure` or not.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}
/// The anti-forgery cookie of the login form (there is no session yet to bind it to), on a
/// portal reached over plain HTTP.
pub const LOGIN_CSRF_COOKIE: &str = "shoudan_login_csrf";
/// The same with `secure_cookies`: `__Host-`, as the session's, so that a neighbouring host
/// cannot plant a known value and sign the browser in to an account of its own.
pub const SECURE_LOGIN_CSRF_COOKIE: &str = "__Host-shoudan_login_csrf";

/// The login form's anti-forgery cookie's name for a portal whose cookies are `secure` or not.
pub fn login_csrf_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_LOGIN_CSRF_COOKIE
    } else {
        LOGIN_CSRF_COOKIE
    }
}
/// A page session lasts a working day at most; then the user signs in again.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// A page session not used for this long ends (PCI DSS asks for a new sign-in after 15 minutes
/// idle): each request moves its end this far ahead, within [`SESSION_TTL_MS`] of its start.
pub const SESSION_IDLE_MS: i64 = 15 * 60_000;
/// A request moves a session's end only when the last move is at least this old: a busy page
/// costs a journal write a minute, not one a request.
const SESSION_EXTEND_EVERY_MS: i64 = 60_000;
/// An API token lasts 90 days; then the integration asks for a new one.
pub const API_TOKEN_TTL_MS: i64 = 90 * 86_400_000;
/// The header an API request signed in by the page session cookie (rather than a bearer
/// token) carries its session's anti-forgery token in, when it changes anything.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The store counters ids come from.
pub const USER_COUNTER: &str = "web_user_id";
pub const AUDIT_COUNTER: &str = "audit_id";
/// Advanced by a wrong sign-in of an unknown or disabled username: the durable write a real
/// user's wrong password makes (its count), so that the two answer alike in time.
pub const UNKNOWN_SIGN_IN_COUNTER: &str = "web_unknown_sign_in";

/// 32 random bytes as hex: session ids, API tokens, CSRF tokens.
pub fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("randomness: {e}")))?;
    Ok(paycrypto::hex::encode(&bytes))
}

/// What the store keeps of a token.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Who is asking, with what rights. Its `Debug` leaves out the session's anti-forgery token.
#[derive(Clone, Serialize)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    #[serde(serialize_with = "role_text")]
    pub role: Role,
    /// The merchant a merchant user belongs to.
    pub mid: Option<String>,
    /// The session's anti-forgery token (page sessions only).
    #[serde(skip)]
    pub csrf: Option<String>,
    /// The password was set by an admin and not changed since: only the account page (and
    /// `GET /api/me`, `POST /api/me/password`) until the user sets their own.
    pub must_set_password: bool,
    #[serde(skip)]
    pub session_digest: Option<Vec<u8>>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("mid", &self.mid)
            .field("page_session", &self.csrf.is_some())
            .finish_non_exhaustive()
    }
}

fn role_text<S: serde::Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

impl Principal {
    fn of(user: UserRow) -> Principal {
        Principal {
            user_id: user.id,
            username: user.username,
            display_name: user.display_name,
            role: user.role,
            mid: user.mid,
            csrf: None,
            session_digest: None,
            must_set_password: false,
        }
    }

    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Admin)
    }

    /// Whether this user may see merchant `mid`'s data.
    pub fn sees(&self, mid: &str) -> bool {
        self.is_staff() || self.mid.as_deref() == Some(mid)
    }

    /// `Ok` when this user may see `mid`, else 404 (another merchant's rows are not confirmed
    /// to exist).
    pub fn scope(&self, mid: &str, what: &str) -> Result<(), ApiError> {
        if self.sees(mid) {
            Ok(())
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// Operators and admins only.
    pub fn require_staff(&self, what: &str) -> Result<(), ApiError> {
        if self.is_staff() {
            Ok(())
        } else {
            Err(ApiError::forbidden(what))
        }
    }

    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(what))
        }
    }

    /// The merchant filter of a list: a merchant user's own, or what a staff user asked for.
    pub fn merchant_filter(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        // An empty `mid=` (a form's blank field) names no merchant.
        let asked = asked.map(str::trim).filter(|m| !m.is_empty());
        match (self.role, &self.mid) {
            (Role::Merchant, Some(own)) => match asked {
                Some(other) if other != own => Err(ApiError::not_found("merchant")),
                _ => Ok(Some(own.clone())),
            },
            (Role::Merchant, None) => Err(ApiError::forbidden("see merchant data")),
            // Staff may name any merchant, but only by something shaped like a merchant ID:
            // the value is shown back on the page, and a card number typed into the wrong
            // field must not be.
            _ => match asked {
                Some(mid) if !mid_shaped(mid) => Err(ApiError::bad_request(
                    "mid: a merchant ID is at most 15 letters and digits",
                )),
                _ => Ok(asked.map(str::to_owned)),
            },
        }
    }

    /// Check the anti-forgery token of a page form.
    pub fn check_csrf(&self, sent: &str) -> Result<(), ApiError> {
        match &self.csrf {
            // Comparing digests keeps the time taken independent of where the texts differ.
            Some(expected) if token_digest(expected) == token_digest(sent) => Ok(()),
            _ => Err(ApiError::csrf()),
        }
    }
}

/// Whether `text` has a merchant ID's shape: at most 15 letters and digits.
pub fn mid_shaped(text: &str) -> bool {
    text.len() <= 15 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
}

/// The principal of a request: a bearer token, else a live session cookie.
pub fn principal_of(web: &Web, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    let store = web.store.as_ref();
    if let Some(token) = bearer(headers) {
        let Some(row) = store.web_api_token(&token_digest(token))? else {
            return Ok(None);
        };
        if row.revoked || row.created_at_ms.saturating_add(API_TOKEN_TTL_MS) <= web.clock.now_ms() {
            return Ok(None);
        }
        return active_user(store, row.user_id)?
            .map(|user| principal(store, user))
            .transpose();
    }
    let Some(token) = cookie(headers, session_cookie_name(web.secure_cookies)) else {
        return Ok(None);
    };
    let digest = token_digest(token);
    let Some(session) = store.web_session(&digest)? else {
        return Ok(None);
    };
    let now_ms = web.clock.now_ms();
    if session.expires_at_ms <= now_ms {
        return Ok(None);
    }
    let until = session_end(session.created_at_ms, now_ms);
    if until
        >= session
            .expires_at_ms
            .saturating_add(SESSION_EXTEND_EVERY_MS)
    {
        // Not awaited: the write is queued either way, and a page is not held up for it (a
        // lost extension costs at most a minute of idle time).
        let _ = store.submit(vec![Record::Web(WebRecord::ExtendSession {
            token_hash: digest.clone(),
            expires_at_ms: until,
        })]);
    }
    active_user(store, session.user_id)?
        .map(|user| {
            Ok(Principal {
                csrf: Some(session.csrf),
                session_digest: Some(digest),
                ..principal(store, user)?
            })
        })
        .transpose()
}

fn active_user(store: &dyn Store, id: i64) -> Result<Option<UserRow>, ApiError> {
    Ok(store.web_user(id)?.filter(|u| !u.disabled))
}

fn principal(store: &dyn Store, user: UserRow) -> Result<Principal, ApiError> {
    let must_set_password = password_set_by_another(store, &user)?;
    Ok(Principal {
        must_set_password,
        ..Principal::of(user)
    })
}

impl FromRequestParts<Web> for Principal {
    type Rejection = ApiError;

    /// The API's caller. One signed in by the session cookie (a browser) must send the
    /// session's anti-forgery token in [`CSRF_HEADER`] on anything but a read: SameSite keeps
    /// other sites' forms out, not pages of a sibling host.
    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let who = principal_of(web, &parts.headers)?.ok_or_else(ApiError::unauthorized)?;
        // A password someone else set: the user's own first, nothing else meanwhile.
        let own_password = matches!(
            (&parts.method, parts.uri.path()),
            (&Method::GET, "/api/me") | (&Method::POST, "/api/me/password")
        );
        if who.must_set_password && !own_password {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "your password was set by an administrator: set your own first \
                 (POST /api/me/password); a token then asks to be made again",
            )
            .zh("您的密码由管理员设置：请先修改为您自己的密码（POST /api/me/password），再重新获取令牌"));
        }
        let reads = parts.method == Method::GET || parts.method == Method::HEAD;
        if who.csrf.is_some() && !reads {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            who.check_csrf(sent)?;
        }
        Ok(who)
    }
}

/// Wrong passwords in a row after which a user is locked (PCI DSS asks for no more than 10).
pub const LOGIN_FAILURES_MAX: i64 = 10;
/// How long a lock lasts from the last wrong password, and how long a quiet spell starts the
/// count again (PCI DSS asks for at least 30 minutes). An admin may unlock sooner.
pub const LOCKOUT_MS: i64 = 30 * 60_000;

/// When the lock of a user with these wrong passwords ends, if it is locked at `now_ms`.
pub fn locked_until(failures: Option<&LoginFailuresRow>, now_ms: i64) -> Option<i64> {
    failures
        .filter(|f| f.failures >= LOGIN_FAILURES_MAX)
        .map(|f| f.last_at_ms.saturating_add(LOCKOUT_MS))
        .filter(|until| *until > now_ms)
}

/// A user as the admin's list shows them: wrong passwords in a row, the end of their lock if
/// they are locked now, and whether their password is still one an admin set (they can do
/// nothing else until they set their own).
pub struct Standing {
    pub user: UserRow,
    pub wrong_passwords: i64,
    pub locked_until_ms: Option<i64>,
    pub must_set_password: bool,
}

/// Every user with their standing (the console's users page and `GET /api/users`).
pub fn users_standing(web: &Web) -> Result<Vec<Standing>, ApiError> {
    let failures = web.store.web_login_failures(None)?;
    let now_ms = web.clock.now_ms();
    web.store
        .web_users()?
        .into_iter()
        .map(|user| {
            let mine = failures.iter().find(|f| f.user_id == user.id);
            Ok(Standing {
                // As the sign-in counts them: wrong passwords more than LOCKOUT_MS apart are
                // not in a row, and the next one starts the count again.
                wrong_passwords: mine
                    .filter(|f| f.last_at_ms >= now_ms.saturating_sub(LOCKOUT_MS))
                    .map_or(0, |f| f.failures),
                locked_until_ms: locked_until(mine, now_ms),
                must_set_password: password_set_by_another(web.store.as_ref(), &user)?,
                user,
            })
        })
        .collect()
}

/// What a sign-in attempt gets.
#[derive(Debug)]
pub enum SignIn {
    Accepted(UserRow),
    /// A wrong pair, an unknown or a disabled user: one answer for all.
    Refused,
    /// Locked by wrong passwords in a row, for this many more minutes (rounded up).
    Locked {
        minutes: i64,
    },
}

/// A sign-in from a client address ([`authenticate_from`]).
#[derive(Debug)]
pub enum FromClient {
    /// Checked, as [`authenticate`] answers.
    Checked(SignIn),
    /// Not checked: too many wrong sign-ins from this address lately, for this many more
    /// minutes (rounded up).
    TooMany { minutes: i64 },
}

/// [`authenticate`] for a sign-in from `client`: refused without a check while the address
/// has had too many wrong sign-ins in its window ([`crate::clients`]), and a refused one
/// counted against it (a wrong pair, an unknown or disabled user, a locked user).
pub async fn authenticate_from(
    web: &Web,
    client: crate::clients::ClientAddr,
    username: &str,
    password: &str,
) -> Result<FromClient, ApiError> {
    let now_ms = web.clock.now_ms();
    let attempt = match web.client_failures.begin(client, now_ms) {
        Ok(attempt) => attempt,
        Err(refused) => {
            if refused.first {
                tracing::warn!(client = ?client.0, "too many wrong sign-ins from this address: its sign-ins are refused unchecked until its window ends");
            }
            return Ok(FromClient::TooMany {
                minutes: (refused.until_ms - now_ms + 59_999) / 60_000,
            });
        }
    };
    // Counted as wrong until known right, however this ends (an error, a busy turn).
    let signed = authenticate(web, username, password).await?;
    if matches!(signed, SignIn::Accepted(_)) {
        attempt.succeeded();
    }
    Ok(FromClient::Checked(signed))
}

/// The API's answer to a sign-in refused unchecked for its client address: 429
/// `too_many_sign_ins`.
pub fn too_many_error(minutes: i64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sign_ins",
        format!("too many wrong sign-ins from this address: try again in {minutes} minutes"),
    )
    .zh(format!("此地址登录失败次数过多，请 {minutes} 分钟后再试。"))
}

/// The API's answer to a sign-in of a locked user: 429 `locked`.
pub fn locked_error(minutes: i64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "locked",
        format!(
            "{LOGIN_FAILURES_MAX} wrong passwords in a row: this user is locked for {minutes} more \
             minutes, or until an admin unlocks it"
        ),
    )
}

/// Checks a username and password: refused for a wrong pair, an unknown or a disabled user (one
/// answer for all, so a caller cannot tell which usernames exist). A user with
/// [`LOGIN_FAILURES_MAX`] wrong passwords in a row is locked for [`LOCKOUT_MS`]: its sign-ins
/// are answered locked without a check, and the lock is audited (`user.locked`). That answer
/// does tell that the username exists; one that checked the password while locked would tell
/// the guesser which guess was right, however many they made.
pub async fn authenticate(web: &Web, username: &str, password: &str) -> Result<SignIn, ApiError> {
    let user = web
        .store
        .web_user_by_name(username)?
        .filter(|u| !u.disabled);
    let password = Zeroizing::new(password.to_owned());
    let store = Arc::clone(&web.store);
    let clock = Arc::clone(&web.clock);
    // The lock is read, the password checked and a wrong one counted within one turn, so
    // attempts queued behind the turns cannot all pass a lock check made before the count.
    let checked = on_turn(move || -> Result<Checked, StoreError> {
        // An unknown user reads a count too (of no one): the answer must take as long.
        let failures = store
            .web_login_failures(Some(user.as_ref().map_or(-1, |u| u.id)))?
            .pop();
        let now_ms = clock.now_ms();
        if let Some(until) = locked_until(failures.as_ref(), now_ms) {
            return Ok(Checked::Locked { until, now_ms });
        }
        // An unknown or disabled user's check costs what a real one does.
        let matched = verify_stored(user.as_ref().map(|u| u.password_hash.as_str()), &password);
        let Some(user) = user else {
            // As a real user's wrong password is counted and audited: an id reserved, one
            // durable write, one read.
            store.reserve(UNKNOWN_SIGN_IN_COUNTER, 1)?.wait()?;
            store.reserve(UNKNOWN_SIGN_IN_COUNTER, 1)?.wait()?;
            store.web_login_failures(Some(-1))?;
            return Ok(Checked::Wrong {
                user: None,
                locked: false,
            });
        };
        if matched {
            if failures.is_some() {
                let forget = WebRecord::ClearLoginFailures { user_id: user.id };
                store.submit(vec![Record::Web(forget)])?.wait()?;
            }
            return Ok(Checked::Right(user));
        }
        let at_ms = clock.now_ms();
        let counts_since_ms = at_ms - LOCKOUT_MS;
        let failed = WebRecord::LoginFailed {
            user_id: user.id,
            at_ms,
            counts_since_ms,
        };
        // Audited with the count, which is forgotten at the next right password: the log
        // keeps every wrong one (at most `LOGIN_FAILURES_MAX` a user each `LOCKOUT_MS`; a
        // locked user's attempts are not checked, and not written).
        let id = store.reserve(AUDIT_COUNTER, 1)?.wait()?;
        let audited = WebRecord::Audit(AuditRow {
            id: i64::try_from(id).map_err(|_| StoreError::Corrupt {
                what: "audit id",
                value: id.to_string(),
            })?,
            at_ms,
            who: user.username.clone(),
            action: "user.wrong_password".to_owned(),
            target: format!("user:{}", user.id),
            before: None,
            after: None,
        });
        store
            .submit(vec![Record::Web(failed), Record::Web(audited)])?
            .wait()?;
        // This attempt locked the user if the count crossed the limit since this turn read it.
        // Two turns at once may both cross it (each read the count before either wrote): the
        // lock is then audited twice rather than, comparing with the limit exactly, not at all.
        let before = failures
            .filter(|f| f.last_at_ms >= counts_since_ms)
            .map_or(0, |f| f.failures);
        let after = store
            .web_login_failures(Some(user.id))?
            .pop()
            .map_or(0, |f| f.failures);
        let locked = before < LOGIN_FAILURES_MAX && after >= LOGIN_FAILURES_MAX;
        Ok(Checked::Wrong {
            user: Some(user),
            locked,
        })
    })
    .await??;
    match checked {
        Checked::Right(user) => Ok(SignIn::Accepted(user)),
        Checked::Locked { until, now_ms } => Ok(SignIn::Locked {
            minutes: (until - now_ms + 59_999) / 60_000,
        }),
        Checked::Wrong { user: None, .. } => {
            // Never the name typed: a password typed into the name's box is not logged.
            tracing::info!("sign-in refused: no such enabled user");
            Ok(SignIn::Refused)
        }
        Checked::Wrong {
            user: Some(_),
            locked: false,
        } => Ok(SignIn::Refused),
        Checked::Wrong {
            user: Some(user),
            locked: true,
        } => {
            tracing::warn!(user = user.id, "user locked after wrong passwords");
            let after = serde_json::json!({ "failures": LOGIN_FAILURES_MAX, "for_ms": LOCKOUT_MS });
            let target = format!("user:{}", user.id);
            audit(
                web,
                &user.username,
                "user.locked",
                &target,
                None,
                Some(after),
            )
            .await;
            Ok(SignIn::Refused)
        }
    }
}

/// What one sign-in check found.
enum Checked {
    Right(UserRow),
    /// A wrong pair: the user when it is one (enabled), and whether this attempt locked it.
    Wrong {
        user: Option<UserRow>,
        locked: bool,
    },
    Locked {
        until: i64,
        now_ms: i64,
    },
}

/// The actions that set a user's password (audited on `user:ID`).
const CREDENTIAL_ACTIONS: [&str; 3] = ["user.create", "user.password", "user.password_reset"];

/// Whether `user`'s password was last set by another user of the portal (an admin creating
/// the user or resetting it), so that someone else knows it: such a user sets their own before
/// anything else (PCI DSS: a password set for first use or at a reset is changed at once). Set
/// by the CLI, the demo or a test's setup (names with a colon, which no username has) it is
/// the user's to keep.
fn password_set_by_another(store: &dyn Store, user: &UserRow) -> Result<bool, ApiError> {
    let Some(row) = store.audit_last_on(&format!("user:{}", user.id), &CREDENTIAL_ACTIONS)? else {
        return Ok(false);
    };
    // The CLI's, the demo's and a setup's names have a colon: no user's.
    Ok(row.who != user.username
        && !row.who.contains(':')
        && store.web_user_by_name(&row.who)?.is_some())
}

/// A user changes their own password: the current one is checked as a sign-in is (a wrong one
/// counts towards the lock), then the new one is set and every page session of the user ends,
/// the caller's too (a copy of its cookie taken before must not outlive the change); a caller
/// signed in by a page session gets a new one, returned with its `Principal`. Audited as
/// `user.password`.
pub async fn change_password(
    web: &Web,
    who: &Principal,
    current: &str,
    new: &str,
) -> Result<(SignIn, Option<(String, Principal)>), ApiError> {
    if current == new {
        return Err(
            ApiError::bad_request("the new password must differ from the current one")
                .zh("新密码不能与当前密码相同。"),
        );
    }
    let user = match authenticate(web, &who.username, current).await? {
        SignIn::Accepted(user) if user.id == who.user_id => user,
        SignIn::Accepted(_) | SignIn::Refused => return Ok((SignIn::Refused, None)),
        locked @ SignIn::Locked { .. } => return Ok((locked, None)),
    };
    let user = set_password(web, &who.username, user, new).await?;
    // The password is changed by now: a new session that cannot be opened leaves the caller
    // to sign in again with it, not told the change failed.
    let session = match who.session_digest {
        Some(_) => match open_session(web, &user).await {
            Ok(opened) => {
                let principal = Principal {
                    csrf: Some(opened.csrf),
                    session_digest: Some(token_digest(&opened.token)),
                    must_set_password: false,
                    ..who.clone()
                };
                Some((opened.token, principal))
            }
            Err(error) => {
                tracing::warn!(user = user.id, error = %error.message, "password changed; no new session");
                None
            }
        },
        None => None,
    };
    Ok((SignIn::Accepted(user), session))
}

/// Sets `user`'s password, ends their page sessions and revokes their API tokens
/// (whoever had the old password may have made one), with an audit row by `who`
/// (`user.password` for one's own, `user.password_reset` for an admin's); the user's wrong
/// passwords are forgotten. Only the hash is written: a change made meanwhile to the rest of
/// the row (an admin disabling the user) stands.
pub async fn set_password(
    web: &Web,
    who: &str,
    mut user: UserRow,
    new: &str,
) -> Result<UserRow, ApiError> {
    let password = Zeroizing::new(new.to_owned());
    user.password_hash = on_turn(move || hash_password(&password))
        .await?
        .map_err(|e| match e {
            crate::password::HashError::Length => ApiError::bad_request(e.to_string()).zh(format!(
                "新密码长度要在 {} 到 {} 个字符之间。",
                crate::password::PASSWORD_LEN_MIN,
                crate::password::PASSWORD_LEN_MAX
            )),
            other => ApiError::bad_request(other.to_string()),
        })?;
    let user_id = user.id;
    let action = if who == user.username {
        "user.password"
    } else {
        "user.password_reset"
    };
    let audit = audit_record(web, who, action, &format!("user:{}", user.id), None, None).await?;
    web.store
        .submit(vec![
            Record::Web(WebRecord::SetPasswordHash {
                user_id,
                password_hash: user.password_hash.clone().into(),
            }),
            Record::Web(WebRecord::EndSessions { user_id }),
            Record::Web(WebRecord::RevokeUserTokens { user_id }),
            Record::Web(WebRecord::ClearLoginFailures { user_id }),
            audit,
        ])?
        .await?;
    Ok(user)
}

/// An admin sets another user's password (one's own is changed with the current one, see
/// [`change_password`]); the user's page sessions end and their API tokens are revoked.
pub async fn reset_password(
    web: &Web,
    who: &Principal,
    user: UserRow,
    new: &str,
) -> Result<UserRow, ApiError> {
    if user.id == who.user_id {
        return Err(ApiError::bad_request(
            "change your own password on your account page, with the current one",
        ));
    }
    set_password(web, &who.username, user, new).await
}

/// Disables or enables `user` (an admin, not on themselves). Disabling ends the user's sessions
/// and revokes their API tokens, so enabling the user again does not bring old tokens back;
/// audited as `user.disable` / `user.enable`.
pub async fn set_disabled(
    web: &Web,
    who: &Principal,
    mut user: UserRow,
    disabled: bool,
) -> Result<UserRow, ApiError> {
    if user.id == who.user_id {
        return Err(ApiError::bad_request(
            "an admin cannot disable or enable themselves",
        ));
    }
    let before = user_json(&user);
    user.disabled = disabled;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let target = format!("user:{}", user.id);
    let audit = audit_record(
        web,
        &who.username,
        action,
        &target,
        Some(before),
        Some(user_json(&user)),
    )
    .await?;
    let set = WebRecord::SetDisabled {
        user_id: user.id,
        disabled,
    };
    let mut records = vec![Record::Web(set), audit];
    if disabled {
        records.push(Record::Web(WebRecord::EndSessions { user_id: user.id }));
        records.push(Record::Web(WebRecord::RevokeUserTokens {
            user_id: user.id,
        }));
    }
    web.store.submit(records)?.await?;
    Ok(user)
}

/// Unlocks a user locked by wrong passwords (an admin, who has confirmed who is asking);
/// audited as `user.unlock`. `false` when the user was not locked.
pub async fn unlock_user(web: &Web, who: &str, user: &UserRow) -> Result<bool, ApiError> {
    let failures = web.store.web_login_failures(Some(user.id))?.pop();
    let Some(failures) = failures else {
        return Ok(false);
    };
    let was_locked = locked_until(Some(&failures), web.clock.now_ms()).is_some();
    let audit = audit_record(
        web,
        who,
        "user.unlock",
        &format!("user:{}", user.id),
        Some(
            serde_json::json!({ "failures": failures.failures, "last_at_ms": failures.last_at_ms }),
        ),
        None,
    )
    .await?;
    let forget = WebRecord::ClearLoginFailures { user_id: user.id };
    web.store.submit(vec![Record::Web(forget), audit])?.await?;
    Ok(was_locked)
}

/// When a session started at `created_ms` and used at `now_ms` ends: idle time from now, but
/// never past its whole day.
fn session_end(created_ms: i64, now_ms: i64) -> i64 {
    now_ms
        .saturating_add(SESSION_IDLE_MS)
        .min(created_ms.saturating_add(SESSION_TTL_MS))
}

/// A page session just opened: the cookie value (the store keeps its digest) and its
/// anti-forgery token.
pub struct OpenedSession {
    pub token: String,
    pub csrf: String,
}

/// Opens a page session.
pub async fn open_session(web: &Web, user: &UserRow) -> Result<OpenedSession, ApiError> {
    let token = random_token()?;
    let csrf = random_token()?;
    let now_ms = web.clock.now_ms();
    let session = SessionRow {
        token_hash: token_digest(&token),
        user_id: user.id,
        csrf: csrf.clone(),
        created_at_ms: now_ms,
        expires_at_ms: session_end(now_ms, now_ms),
    };
    // The user's expired sessions go as a new one comes: the table holds live ones only.
    let expired = WebRecord::EndExpiredSessions {
        user_id: user.id,
        now_ms,
    };
    // Only while the password checked is still the user's (a change meanwhile ended the
    // user's sessions; this one must not come after it).
    let insert = WebRecord::InsertSessionChecked {
        session,
        password_hash: user.password_hash.clone().into(),
    };
    web.store
        .submit(vec![Record::Web(expired), Record::Web(insert)])?
        .await
        .map_err(credentials_changed)?;
    Ok(OpenedSession { token, csrf })
}

/// A sign-in whose password changed (or whose user was disabled) between its check and its
/// session or token being written: refused as a wrong sign-in is, to be made again.
fn credentials_changed(error: store::StoreError) -> ApiError {
    match error {
        store::StoreError::Constraint { .. } => ApiError::unauthorized(),
        other => other.into(),
    }
}

pub async fn close_session(web: &Web, principal: &Principal) -> Result<(), ApiError> {
    if let Some(digest) = &principal.session_digest {
        web.store
            .submit(vec![Record::Web(WebRecord::DeleteSession {
                token_hash: digest.clone(),
            })])?
            .await?;
    }
    Ok(())
}

/// The `Set-Cookie` value of a session; `name` from [`session_cookie_name`], `attributes`
/// from [`Web::cookie_attributes`].
pub fn session_cookie(name: &str, token: &str, attributes: &str) -> String {
    format!(
        "{name}={token}; Path=/; HttpOnly{attributes}; Max-Age={}",
        SESSION_TTL_MS / 1000
    )
}

/// API token names, in characters: a label for the integration ("ERP", "till 3"), kept in
/// `web_api_tokens` and the audit log.
pub const TOKEN_NAME_CHARS_MAX: usize = 60;
/// The name of a token asked for without one.
pub const TOKEN_NAME_DEFAULT: &str = "api";

/// The name a token is kept under: trimmed, [`TOKEN_NAME_DEFAULT`] when none or a blank one is
/// given, card numbers masked as in every free text that is kept; 400 for one longer than
/// [`TOKEN_NAME_CHARS_MAX`] characters or with control characters.
pub fn token_name(asked: Option<&str>) -> Result<String, ApiError> {
    let name = asked
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(TOKEN_NAME_DEFAULT);
    if name.chars().count() > TOKEN_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name: at most {TOKEN_NAME_CHARS_MAX} characters, no control characters"
        )));
    }
    Ok(domain::mask_card_numbers(name).into_owned())
}

/// Issues a bearer token for `user` under `name` (as [`token_name`] keeps it); the token is
/// shown once, the store keeps its digest.
pub async fn issue_api_token(web: &Web, user: &UserRow, name: &str) -> Result<String, ApiError> {
    let name = token_name(Some(name))?;
    let token = random_token()?;
    let row = ApiTokenRow {
        token_hash: token_digest(&token),
        user_id: user.id,
        name: name.clone(),
        created_at_ms: web.clock.now_ms(),
        revoked: false,
    };
    let audit = audit_record(
        web,
        &user.username,
        "api_token.issue",
        &format!("user:{}", user.id),
        None,
        Some(serde_json::json!({ "name": name })),
    )
    .await?;
    let insert = WebRecord::InsertApiTokenChecked {
        token: row,
        password_hash: user.password_hash.clone().into(),
    };
    web.store
        .submit(vec![Record::Web(insert), audit])?
        .await
        .map_err(credentials_changed)?;
    Ok(token)
}

/// An audit row to commit together with the change it describes.
pub async fn audit_record(
    web: &Web,
    who: &str,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<Record, ApiError> {
    let id = web.store.reserve(AUDIT_COUNTER, 1)?.await?;
    let id = i64::try_from(id).map_err(|_| ApiError::internal("audit id out of range"))?;
    Ok(Record::Web(WebRecord::Audit(AuditRow {
        id,
        at_ms: web.clock.now_ms(),
        who: who.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(|v| masked(v).to_string()),
        after: after.map(|v| masked(v).to_string()),
    })))
}

/// The value with every card number in its strings masked (`domain::mask_card_numbers`): what
/// people type into notes goes to the audit log as the case or review keeps it.
fn masked(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => match domain::mask_card_numbers(&text) {
            std::borrow::Cow::Borrowed(_) => Value::String(text),
            std::borrow::Cow::Owned(masked) => Value::String(masked),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(masked).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, masked(value)))
                .collect(),
        ),
        other => other,
    }
}

/// How long the audit row of a change already made is tried again in the background when the
/// journal does not take it at once (busy, its disk full for a while).
pub const AUDIT_RETRY_FOR_MS: i64 = 15 * 60_000;
/// The longest wait between two tries of such a row.
const AUDIT_RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the audit row of a change another crate's service (or the sign-in check) has
/// committed already. The change stands whatever happens here, so its caller is never failed
/// for the row: one the journal does not take at once is tried again in the background for
/// [`AUDIT_RETRY_FOR_MS`] under the id it was given, logged (with its values masked) so the
/// log has it meanwhile, and counted (`shoudan_audit_rows_pending`, and
/// `shoudan_audit_rows_lost_total` for one given up on, which is logged whole at error level).
pub async fn audit(
    web: &Web,
    who: &str,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) {
    let mut row = AuditRow {
        id: 0,
        at_ms: web.clock.now_ms(),
        who: who.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(|v| masked(v).to_string()),
        after: after.map(|v| masked(v).to_string()),
    };
    let error = match write_audit_row(web, &mut row, false).await {
        Ok(()) => return,
        Err(e) => e,
    };
    tracing::warn!(
        who = %row.who, action = %row.action, target = %row.target,
        before = row.before.as_deref().unwrap_or("-"), after = row.after.as_deref().unwrap_or("-"),
        "audit row of a change made not written ({error}); trying again in the background"
    );
    let web = web.clone();
    // Kept where a stop finds it: a row still not written when the process stops is logged
    // whole and counted lost then (`Web::give_up_unwritten_audit_rows`).
    let key = web.metrics.audit_pending_add(row.clone());
    tokio::spawn(async move {
        let since = web.clock.now_ms();
        let mut pause = std::time::Duration::from_millis(100);
        let written = loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(AUDIT_RETRY_PAUSE_MAX);
            // Given up on by a stop meanwhile (and logged there): no more tries.
            if !web.metrics.audit_pending_has(key) {
                return;
            }
            match write_audit_row(&web, &mut row, true).await {
                Ok(()) => break true,
                Err(_) if web.clock.now_ms() - since >= AUDIT_RETRY_FOR_MS => break false,
                Err(_) => {}
            }
        };
        // Taken by a stop meanwhile: the stop has logged it lost; a try under way then may
        // still have written it, which is said too.
        if web.metrics.audit_pending_take(key).is_none() {
            if written {
                web.metrics.audit_rows_lost.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(id = row.id, action = %row.action, target = %row.target,
                    "an audit row given up at the stop was written after all");
            }
            return;
        }
        if written {
            tracing::info!(id = row.id, action = %row.action, target = %row.target, "audit row written late");
        } else {
            web.metrics.audit_rows_lost.fetch_add(1, Ordering::Relaxed);
            log_audit_row_lost(&row, "the journal refused it for 15 minutes");
        }
    });
}

/// An audit row given up on, logged whole (its values masked as the row keeps them).
pub(crate) fn log_audit_row_lost(row: &AuditRow, why: &str) {
    tracing::error!(
        at_ms = row.at_ms, who = %row.who, action = %row.action, target = %row.target,
        before = row.before.as_deref().unwrap_or("-"),
        after = row.after.as_deref().unwrap_or("-"),
        "audit row given up on: {why}"
    );
}

/// One try at writing `row`: its id reserved first if it has none yet. A try after one whose
/// answer was lost may find its row there already (its id refused as taken): that is written.
async fn write_audit_row(web: &Web, row: &mut AuditRow, again: bool) -> Result<(), StoreError> {
    if row.id == 0 {
        let id = web.store.reserve(AUDIT_COUNTER, 1)?.await?;
        row.id = i64::try_from(id).map_err(|_| StoreError::Corrupt {
            what: "audit id",
            value: id.to_string(),
        })?;
    }
    let written = match web
        .store
        .submit(vec![Record::Web(WebRecord::Audit(row.clone()))])
    {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    match written {
        Err(StoreError::Constraint { .. }) if again => {
            let there = web.store.audit_log(Some(row.id + 1), 1)?;
            if there.first().is_some_and(|r| r.id == row.id) {
                Ok(())
            } else {
                written
            }
        }
        other => other,
    }
}

/// What a new user needs. The password is wiped when this is dropped, and never printed.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub password: Zeroizing<String>,
    pub role: Role,
    pub mid: Option<String>,
    pub display_name: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"..")
            .field("role", &self.role)
            .field("mid", &self.mid)
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// Usernames are short printable ASCII: they appear in audit rows and case timelines.
pub const USERNAME_LEN_MAX: usize = 64;

/// Creates a user (audited as done by `who`).
pub async fn create_user(web: &Web, who: &str, new: NewUser) -> Result<UserRow, ApiError> {
    let name_ok = !new.username.is_empty()
        && new.username.len() <= USERNAME_LEN_MAX
        && new
            .username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !name_ok {
        return Err(ApiError::bad_request(
            "username: 1 to 64 letters, digits, - _ . @",
        ));
    }
    // What merchants see the acquirer's staff as (`api::NamesShown`): nobody's username.
    if new
        .username
        .eq_ignore_ascii_case(crate::api::ACQUIRER_STAFF)
    {
        return Err(ApiError::bad_request(format!(
            "username: \"{}\" is reserved",
            crate::api::ACQUIRER_STAFF
        )));
    }
    let display_ok = !new.display_name.trim().is_empty()
        && new.display_name.chars().count() <= USERNAME_LEN_MAX
        && !new.display_name.chars().any(char::is_control);
    if !display_ok {
        return Err(ApiError::bad_request(
            "display_name: 1 to 64 characters, none of them control characters",
        ));
    }
    // Names are shown whole on pages, in audit rows and case timelines: never a card number
    // (the sign-in page masks one typed as a username; an admin may paste one by mistake). A
    // merchant user named by its merchant ID is not one, though fifteen digits may pass a
    // card's check digit.
    for (field, name) in [
        ("username", &new.username),
        ("display_name", &new.display_name),
    ] {
        let name = match &new.mid {
            Some(mid) => name.replace(mid.as_str(), " "),
            None => name.clone(),
        };
        if matches!(domain::mask_card_numbers(&name), std::borrow::Cow::Owned(_)) {
            return Err(ApiError::bad_request(format!(
                "{field}: looks like a card number"
            )));
        }
    }
    if (new.role == Role::Merchant) != new.mid.is_some() {
        return Err(ApiError::bad_request(
            "a merchant user needs a mid; other roles have none",
        ));
    }
    if let Some(mid) = &new.mid
        && web.store.merchant(mid)?.is_none()
    {
        return Err(ApiError::not_found("merchant"));
    }
    if web.store.web_user_by_name(&new.username)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "username taken",
        ));
    }
    let password = new.password.clone();
    let hash = on_turn(move || hash_password(&password))
        .await?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = web.store.reserve(USER_COUNTER, 1)?.await?;
    let id = i64::try_from(id).map_err(|_| ApiError::internal("user id out of range"))?;
    let user = UserRow {
        id,
        username: new.username,
        password_hash: hash,
        role: new.role,
        mid: new.mid,
        display_name: new.display_name,
        disabled: false,
        created_at_ms: web.clock.now_ms(),
    };
    let audit = audit_record(
        web,
        who,
        "user.create",
        &format!("user:{id}"),
        None,
        Some(user_json(&user)),
    )
    .await?;
    web.store
        .submit(vec![
            Record::Web(WebRecord::UpsertUser(user.clone())),
            audit,
        ])?
        .await?;
    Ok(user)
}

/// A user as the API shows it (never the hash).
pub fn user_json(user: &UserRow) -> serde_json::Value {
    serde_json::json!({
        "id": user.id,
        "username": user.username,
        "role": user.role.as_str(),
        "mid": user.mid,
        "display_name": user.display_name,
        "disabled": user.disabled,
        "created_at_ms": user.created_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_prints_without_its_session_secrets() {
        let who = Principal {
            user_id: 7,
            username: "ops".into(),
            display_name: "Ops".into(),
            role: Role::Operator,
            mid: None,
            csrf: Some("csrf-secret-token".into()),
            session_digest: Some(vec![0xAB; 32]),
            must_set_password: false,
        };
        let printed = format!("{who:?}");
        assert!(printed.contains("ops"), "{printed}");
        assert!(!printed.contains("csrf-secret-token"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
    }

    #[test]
    fn a_new_user_prints_without_its_password() {
        let new = NewUser {
            username: "ops".into(),
            password: Zeroizing::new("correct horse battery".into()),
            role: Role::Operator,
            mid: None,
            display_name: "Ops".into(),
        };
        let printed = format!("{new:?}");
        assert!(printed.contains("ops"), "{printed}");
        assert!(!printed.contains("horse"), "{printed}");
    }
}
