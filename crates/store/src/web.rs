//! Rows and write records of the web layer: users with their password hashes (PHC strings,
//! never passwords), page sessions and API tokens (kept as SHA-256 digests), and the audit log.

use std::fmt;

use crate::error::StoreError;

/// What a user may see and do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// One merchant's own data only.
    Merchant,
    /// All merchants, cases, payouts, approvals.
    Operator,
    /// Users, terminals, fee plans, and everything an operator does.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Merchant, Role::Operator, Role::Admin];

    /// The spelling stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Merchant => "merchant",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored spelling; anything else is a corrupt row.
    pub fn parse(text: &str) -> Result<Role, StoreError> {
        match text {
            "merchant" => Ok(Role::Merchant),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(StoreError::Corrupt {
                what: "Role",
                value: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A web user. `mid` is set for merchant users and names the only merchant they see.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub mid: Option<String>,
    pub display_name: String,
    pub disabled: bool,
    pub created_at_ms: i64,
}

impl fmt::Debug for UserRow {
    // A password hash is not a password, but there is no reason to print it either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("mid", &self.mid)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A page session: the cookie's value is known only to the browser; the store keeps its digest.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_hash: Vec<u8>,
    pub user_id: i64,
    /// The anti-forgery token every form of this session must carry.
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRow")
            .field("user_id", &self.user_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A user's API tokens listed at most (a user issues a few; a script that issued one per run
/// for months sees its newest).
pub const API_TOKENS_LISTED_MAX: u32 = 1_000;

/// A bearer token for the API, kept as its digest.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    pub token_hash: Vec<u8>,
    pub user_id: i64,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked: bool,
}

impl fmt::Debug for ApiTokenRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokenRow")
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// One change: who did what to which thing, when, and the thing before and after (JSON text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A user's wrong passwords in a row: how many, and when the last was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailuresRow {
    pub user_id: i64,
    pub failures: i64,
    pub last_at_ms: i64,
}

/// A stored password hash in a write: never printed whole (`Debug`), as `UserRow` leaves its
/// hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl From<String> for PasswordHash {
    fn from(hash: String) -> Self {
        PasswordHash(hash)
    }
}

impl From<&str> for PasswordHash {
    fn from(hash: &str) -> Self {
        PasswordHash(hash.to_owned())
    }
}

/// Writes of the web area.
#[derive(Clone, Debug)]
pub enum WebRecord {
    UpsertUser(UserRow),
    /// One more wrong password for `user_id` at `at_ms`; the count starts again at one when
    /// the last was before `counts_since_ms`.
    LoginFailed {
        user_id: i64,
        at_ms: i64,
        counts_since_ms: i64,
    },
    /// Forgets a user's wrong passwords: a right one, or an admin's unlock.
    ClearLoginFailures {
        user_id: i64,
    },
    InsertSession(SessionRow),
    /// A page session opened by a password check against `password_hash`: written only if
    /// that is still the user's hash and the user is not disabled (else the whole commit fails,
    /// `StoreError::Constraint`), so a sign-in that checked the old password while it was being
    /// changed (which ends the user's sessions) does not leave one open.
    InsertSessionChecked {
        session: SessionRow,
        password_hash: PasswordHash,
    },
    DeleteSession {
        token_hash: Vec<u8>,
    },
    /// A session in use again: it now ends at `expires_at_ms` (idle sessions end first).
    ExtendSession {
        token_hash: Vec<u8>,
        expires_at_ms: i64,
    },
    /// A new password hash for `user_id`, the rest of the row untouched.
    SetPasswordHash {
        user_id: i64,
        password_hash: PasswordHash,
    },
    /// Disables or enables `user_id`, the rest of the row untouched.
    SetDisabled {
        user_id: i64,
        disabled: bool,
    },
    /// Revokes every API token of `user_id`.
    RevokeUserTokens {
        user_id: i64,
    },
    /// Deletes the page sessions of `user_id` that expired by `now_ms`.
    EndExpiredSessions {
        user_id: i64,
        now_ms: i64,
    },
    /// Ends every page session of `user_id`.
    EndSessions {
        user_id: i64,
    },
    InsertApiToken(ApiTokenRow),
    /// An API token issued on a password check against `password_hash`, as
    /// [`WebRecord::InsertSessionChecked`]: a token from the old password does not outlive
    /// its change (which revokes the user's tokens).
    InsertApiTokenChecked {
        token: ApiTokenRow,
        password_hash: PasswordHash,
    },
    RevokeApiToken {
        token_hash: Vec<u8>,
    },
    Audit(AuditRow),
}
