//! Rows and write records of merchant onboarding and risk: merchant profiles (qualification data
//! and lifecycle state), the review history, risk alerts with the transactions behind them.

use std::fmt;

use crate::error::StoreError;
use crate::model::Status;
use crate::model::column_enum;

column_enum!(
    /// Where a merchant is in its onboarding life. Only `Approved` merchants take cards.
    MerchantState {
        Applied => "applied",
        Approved => "approved",
        Suspended => "suspended",
        Closed => "closed",
    }
);

impl MerchantState {
    /// The shared merchant/terminal `Status` kept in `merchants.status` for older readers.
    pub const fn status(self) -> Status {
        match self {
            MerchantState::Approved => Status::Active,
            // An applicant does not take cards yet: as far as `Status` can say, it is suspended.
            MerchantState::Applied | MerchantState::Suspended => Status::Suspended,
            MerchantState::Closed => Status::Closed,
        }
    }

    /// The lifecycle state of a merchant registered without a profile (before onboarding
    /// existed, or provisioned directly as the demo and tests do).
    pub const fn from_status(status: Status) -> MerchantState {
        match status {
            Status::Active => MerchantState::Approved,
            Status::Suspended => MerchantState::Suspended,
            Status::Closed => MerchantState::Closed,
        }
    }
}

column_enum!(
    /// What a risk rule does when it fires.
    AlertAction {
        Decline => "decline",
        Alert => "alert",
    }
);

column_enum!(
    /// An alert's handling by an operator.
    /// `Acted`: the operator suspended the terminal or the merchant.
    AlertState {
        Open => "open",
        Cleared => "cleared",
        Acted => "acted",
    }
);

/// A merchant's qualification data and lifecycle state, as reviewed by an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantProfileRow {
    pub mid: String,
    pub state: MerchantState,
    /// Business licence number (统一社会信用代码).
    pub licence_no: String,
    /// Legal person (法定代表人).
    pub legal_person: String,
    /// Registered merchant category code.
    pub mcc: String,
    pub address: String,
    pub applied_at_ms: i64,
    /// The operator who last reviewed (approved, suspended, closed) the merchant, and when.
    pub reviewed_by: Option<String>,
    pub reviewed_at_ms: Option<i64>,
    pub note: Option<String>,
}

/// One step of a merchant's review history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantReviewRow {
    pub mid: String,
    pub at_ms: i64,
    pub operator: String,
    /// `apply`, `approve`, `suspend`, `close`.
    pub action: String,
    pub from_state: Option<MerchantState>,
    pub to_state: MerchantState,
    pub note: String,
}

/// A risk alert: which rule fired where, and the transactions that made it fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskAlertRow {
    /// From the `risk_alert` counter; increasing, so the notification outbox tails by id.
    pub id: i64,
    /// The rule's kind key (`card-testing`, `mid-mismatch`, ...).
    pub kind: String,
    /// The rule's id in the rules file.
    pub rule_id: String,
    pub action: AlertAction,
    pub mid: String,
    pub tid: String,
    /// Plain words: what was seen ("6 declines under ¥10.00 in 600 s").
    pub detail: String,
    /// The same in Chinese ("终端 T1 在 600 秒内有 6 笔不超过 ¥10.00 的交易被拒"); `None` on
    /// alerts raised before the words were kept in both languages.
    pub detail_zh: Option<String>,
    pub txn_ids: Vec<i64>,
    pub raised_at_ms: i64,
    pub state: AlertState,
    pub resolved_by: Option<String>,
    pub resolved_at_ms: Option<i64>,
    pub resolution: Option<String>,
}

/// Writes of the risk area; one variant of [`crate::Record`].
#[derive(Clone, Debug)]
pub enum RiskRecord {
    /// Inserts or replaces a merchant's profile.
    Profile(MerchantProfileRow),
    /// Inserts a new merchant's profile; fails (a constraint error) when the merchant has one
    /// already: two applications read "no such merchant" at once, and the later must not write
    /// over the first (nor over an approval made meanwhile).
    NewProfile(MerchantProfileRow),
    /// Appends to a merchant's review history.
    Review(MerchantReviewRow),
    /// Inserts an alert with its transactions.
    Alert(Box<RiskAlertRow>),
    /// An operator cleared or acted on an alert; fails (a constraint error) unless it is still
    /// open.
    ResolveAlert {
        id: i64,
        state: AlertState,
        by: String,
        at_ms: i64,
        resolution: String,
    },
    /// Suspends or reinstates a terminal.
    TerminalStatus { tid: String, status: Status },
    /// Keeps `merchants.status` in step with the lifecycle.
    MerchantStatus { mid: String, status: Status },
    /// Fails the submission (a constraint error) unless the merchant's profile is still in
    /// `state` (`None`: no profile yet): the compare in a review's compare-and-set, so that
    /// two operators acting at once cannot both move the merchant from what they read.
    ExpectState {
        mid: String,
        state: Option<MerchantState>,
    },
}

/// An alert an operator has resolved: the terminal it was about, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAlert {
    pub mid: String,
    pub tid: String,
    pub resolved_at_ms: i64,
}
