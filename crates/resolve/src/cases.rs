//! Cases: issuer inquiries, refund applications and disputes, each a state machine
//! (open → waiting on issuer / merchant → resolved / rejected / escalated) with a timeline,
//! an assignee and a due date. Closing requires a resolution; an illegal move is a typed error.
//! An approved refund application executes its refund through the switch, once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use domain::{IssuerDirectory, mask_card_numbers};
use serde::Serialize;
use store::resolve::{CaseEntryRow, CaseQuery, CaseRow, ResolveRecord};
use store::{Record, Store, StoreError, TxnKind, TxnRow, TxnState};
use switch::{BackOffice, BackOfficeError, BackOfficeRefund, Clock, SwitchHandle};

use crate::explain::TxnSummary;
use crate::outbox::{self, Event};
use crate::text::yuan;

/// Longest text of one case entry or resolution.
pub const TEXT_LEN_MAX: usize = 4_000;
/// Attachment references per entry at most.
pub const ATTACHMENTS_MAX: usize = 16;
/// The timeline entries up to which a case takes messages and notes from people (its own moves
/// and results are written beyond them): a case is read whole, so one that is written to
/// without end would cost every reader of it more and more.
pub const ENTRIES_MAX: usize = 500;
/// The store counter case ids come from.
pub const CASE_COUNTER: &str = "case_id";
/// Times an executed refund's result is written before giving up: each failure means another
/// writer changed the case in between, and the result is re-applied to the fresh row.
const RECORD_ATTEMPTS_MAX: usize = 5;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant,)+ }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// What a case is about.
    CaseKind {
        IssuerInquiry => "issuer_inquiry",
        RefundApplication => "refund_application",
        Dispute => "dispute",
    }
);

impl CaseKind {
    /// How long the acquirer takes over a case of this kind unless its opener says otherwise:
    /// a refund application is decided within a day (the customer is waiting), an issuer
    /// inquiry answered within three, a dispute within five (its evidence has to be gathered).
    pub const fn due_in_ms(self) -> i64 {
        const DAY_MS: i64 = 86_400_000;
        match self {
            CaseKind::RefundApplication => DAY_MS,
            CaseKind::IssuerInquiry => 3 * DAY_MS,
            CaseKind::Dispute => 5 * DAY_MS,
        }
    }
}

text_enum!(
    /// Where a case stands.
    CaseState {
        Open => "open",
        WaitingIssuer => "waiting_issuer",
        WaitingMerchant => "waiting_merchant",
        Resolved => "resolved",
        Rejected => "rejected",
        Escalated => "escalated",
    }
);

/// A non-empty statement of how a case ended; required to close one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolution(String);

impl Resolution {
    pub fn new(text: &str) -> Result<Resolution, CaseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CaseError::ResolutionRequired);
        }
        if text.len() > TEXT_LEN_MAX {
            return Err(CaseError::TooLong);
        }
        // It is shown with the case: a card number in it is masked like one in an entry.
        Ok(Resolution(mask_card_numbers(text).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A move of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    WaitOnIssuer,
    WaitOnMerchant,
    /// The awaited answer came: back to open.
    Reopen,
    Escalate,
    Resolve(Resolution),
    Reject(Resolution),
}

impl Transition {
    fn name(&self) -> &'static str {
        match self {
            Transition::WaitOnIssuer => "wait_on_issuer",
            Transition::WaitOnMerchant => "wait_on_merchant",
            Transition::Reopen => "reopen",
            Transition::Escalate => "escalate",
            Transition::Resolve(_) => "resolve",
            Transition::Reject(_) => "reject",
        }
    }
}

/// A refund application still open whose refund has not been made: what an operator is to
/// decide on (approve, or reject).
fn awaits_refund_decision(row: &CaseRow) -> bool {
    row.kind == CaseKind::RefundApplication.as_str()
        && row.refund_code.as_deref() != Some("00")
        && CaseState::parse(&row.state).is_none_or(|state| !state.is_closed())
}

impl CaseState {
    pub fn is_closed(self) -> bool {
        matches!(self, CaseState::Resolved | CaseState::Rejected)
    }

    /// The state after `transition`, or why it is not allowed from here.
    pub fn apply(self, transition: &Transition) -> Result<CaseState, CaseError> {
        use CaseState as S;
        use Transition as T;
        let next = match (self, transition) {
            (S::Resolved | S::Rejected, _) => None,
            (S::Open | S::WaitingMerchant | S::Escalated, T::WaitOnIssuer) => {
                Some(S::WaitingIssuer)
            }
            (S::Open | S::WaitingIssuer | S::Escalated, T::WaitOnMerchant) => {
                Some(S::WaitingMerchant)
            }
            (S::WaitingIssuer | S::WaitingMerchant, T::Reopen) => Some(S::Open),
            (S::Open | S::WaitingIssuer | S::WaitingMerchant, T::Escalate) => Some(S::Escalated),
            (_, T::Resolve(_)) => Some(S::Resolved),
            (_, T::Reject(_)) => Some(S::Rejected),
            _ => None,
        };
        next.ok_or(CaseError::IllegalTransition {
            from: self,
            action: transition.name(),
        })
    }
}

/// Why a case operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("a case cannot {action} from {}", from.as_str())]
    IllegalTransition {
        from: CaseState,
        action: &'static str,
    },
    #[error("closing a case requires a resolution")]
    ResolutionRequired,
    #[error("text longer than {TEXT_LEN_MAX} bytes or more than {ATTACHMENTS_MAX} attachments")]
    TooLong,
    #[error("a case takes at most {ENTRIES_MAX} entries; open a new case to go on")]
    TooManyEntries,
    #[error("no such case")]
    NotFound,
    #[error("no transaction with RRN {0} for this merchant")]
    NoSuchTransaction(String),
    #[error("the case changed meanwhile; reload and retry")]
    Conflict,
    #[error("only a refund application can approve a refund")]
    NotRefundApplication,
    #[error("the refund was already executed")]
    AlreadyRefunded,
    #[error(
        "a refund or void of this sale may have been made at the issuer (no answer, or one \
         that could not be read or recorded) and is being reversed; no other refund, and no \
         closing of its case, while the reversal waits for the issuer. If the issuer refused \
         that reversal, the refund or void stands: ask the issuer before refunding again"
    )]
    RefundInDoubt,
    #[error("refund amount {asked_fen} fen exceeds what is left to refund ({left_fen} fen)")]
    ExceedsRemaining { asked_fen: i64, left_fen: i64 },
    #[error("refund amount must be positive")]
    BadAmount,
    #[error(
        "refund application {0} of this sale awaits an operator's decision; add to it, or wait \
         for it to be decided"
    )]
    ApplicationWaiting(i64),
    #[error("only an approved purchase or completion can be refunded")]
    NotRefundable,
    #[error(
        "the sale is past the {}-day refund limit: neither a terminal nor a case can refund \
         it; ask the acquirer",
        switch::REFUND_DAYS_MAX
    )]
    PastRefundLimit,
    #[error("whoever opened a refund application cannot approve it; another operator must")]
    SameUser,
    #[error("refund: {0}")]
    Refund(#[from] BackOfficeError),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Resolve(#[from] crate::ResolveError),
}

impl From<StoreError> for CaseError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Constraint { .. } => CaseError::Conflict,
            other => CaseError::Store(other),
        }
    }
}

/// What a [`RefundExecutor`] returns: the refund's answer, to await.
pub type RefundFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BackOfficeRefund, BackOfficeError>> + Send + 'a>>;

/// Runs an approved refund; the switch's [`BackOffice`] in production.
pub trait RefundExecutor: Send + Sync {
    fn refund<'a>(
        &'a self,
        original_rrn: &'a str,
        amount_fen: i64,
        idempotency_key: &'a str,
    ) -> RefundFuture<'a>;
}

impl RefundExecutor for BackOffice {
    fn refund<'a>(
        &'a self,
        original_rrn: &'a str,
        amount_fen: i64,
        idempotency_key: &'a str,
    ) -> RefundFuture<'a> {
        Box::pin(BackOffice::refund(
            self,
            original_rrn,
            amount_fen,
            idempotency_key,
        ))
    }
}

impl RefundExecutor for SwitchHandle {
    fn refund<'a>(
        &'a self,
        original_rrn: &'a str,
        amount_fen: i64,
        idempotency_key: &'a str,
    ) -> RefundFuture<'a> {
        Box::pin(self.back_office_refund(original_rrn, amount_fen, idempotency_key))
    }
}

/// Whether a case is read with its timeline.
#[derive(Clone, Copy)]
enum Timeline {
    With,
    Without,
}

/// A case as read back.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub id: i64,
    pub mid: String,
    pub kind: CaseKind,
    pub state: CaseState,
    pub title: String,
    pub txn: Option<TxnSummary>,
    pub assignee: Option<String>,
    pub due_at_ms: Option<i64>,
    pub refund_fen: Option<i64>,
    pub approved_by: Option<String>,
    pub refund_txn_id: Option<i64>,
    pub refund_rrn: Option<String>,
    pub refund_code: Option<String>,
    /// The last refund attempt may have been made at the issuer and is being reversed (its
    /// outcome not known yet): another approval is refused until it is.
    pub refund_in_doubt: bool,
    /// That attempt's reversal was refused by the issuer: the refund may stand there, and
    /// someone must check with the issuer before anything else is refunded.
    pub refund_reversal_refused: bool,
    /// Closed with a refund made under its key whose result never reached it (the process
    /// stopped between the two): approving again records it ([`CaseService::approve_refund`]).
    /// Read for a case read on its own only.
    pub refund_unrecorded: bool,
    pub resolution: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub version: i64,
    /// The timeline, oldest first. Left out of lists ([`CaseService::find`] and the readers
    /// built on it): a timeline is up to `ENTRIES_MAX` entries of up to `TEXT_LEN_MAX`
    /// bytes, and a page of cases each with its own would be megabytes. A case read on its own
    /// always has one (its opening).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<CaseEntry>,
}

/// One timeline entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub who: String,
    pub text: String,
    pub attachments: Vec<String>,
}

/// What opening a case needs.
#[derive(Clone, Debug)]
pub struct NewCase {
    pub kind: CaseKind,
    pub mid: String,
    /// The transaction concerned (required for refund applications), by RRN...
    pub rrn: Option<String>,
    /// ... or by journal id, for one that has no RRN (a reversal, a request refused before
    /// one was given). Taken before `rrn` when both are given.
    pub txn_id: Option<i64>,
    pub title: String,
    pub who: String,
    pub text: String,
    pub attachments: Vec<String>,
    pub assignee: Option<String>,
    pub due_at_ms: Option<i64>,
    /// Refund applications: the amount asked for.
    pub refund_fen: Option<i64>,
}

/// Whether a refund or a void of a payment may have been made at the issuer without the
/// journal counting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReturnDoubt {
    None,
    /// Still in flight or timed out, or its reversal queued and not yet answered: it settles.
    Pending,
    /// Its reversal refused other than with 25 (the issuer never had it): it may stand at the
    /// issuer for good, for the acquirer to take up.
    Kept,
}

/// [`ReturnDoubt`] of the refunds and voids of payment `txn_id` (from a case or a terminal):
/// `Pending` if any is, else `Kept` if any is. The duplicate-payment advice asks the same
/// before it says to void or refund.
pub(crate) fn return_doubt(store: &dyn Store, txn_id: i64) -> Result<ReturnDoubt, StoreError> {
    let mut doubt = ReturnDoubt::None;
    for linked in store.txns_linked_to(txn_id)? {
        if !matches!(
            linked.kind,
            TxnKind::Refund | TxnKind::PurchaseVoid | TxnKind::CompletionVoid
        ) {
            continue;
        }
        match store.reversal(linked.id)? {
            Some(reversal) if reversal.state == store::SafState::Pending => {
                return Ok(ReturnDoubt::Pending);
            }
            Some(reversal) if !reversal.undone() => doubt = ReturnDoubt::Kept,
            Some(_) => {}
            None if matches!(linked.state, TxnState::InFlight | TxnState::TimedOut) => {
                return Ok(ReturnDoubt::Pending);
            }
            None => {}
        }
    }
    Ok(doubt)
}

/// Cases over a store; refunds through `refunds`.
#[derive(Clone)]
pub struct CaseService {
    store: Arc<dyn Store>,
    directory: Arc<IssuerDirectory>,
    refunds: Arc<dyn RefundExecutor>,
    clock: Arc<dyn Clock>,
}

fn check_text(text: &str, attachments: &[String]) -> Result<(), CaseError> {
    if text.len() > TEXT_LEN_MAX
        || attachments.len() > ATTACHMENTS_MAX
        || attachments.iter().any(|a| a.len() > TEXT_LEN_MAX)
    {
        return Err(CaseError::TooLong);
    }
    Ok(())
}

/// The back office's key for a case's next refund attempt: one per attempt, not per case
/// version (a note or an assignment made while a refund is at the issuer changes the version,
/// and a second approval under a new key would refund again); a new key only after a recorded
/// refusal (its journal id).
fn refund_key(row: &CaseRow) -> String {
    format!(
        "case-{}-refund-after-{}",
        row.id,
        row.refund_txn_id.unwrap_or(0)
    )
}

impl CaseService {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<IssuerDirectory>,
        refunds: Arc<dyn RefundExecutor>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CaseService {
            store,
            directory,
            refunds,
            clock,
        }
    }

    /// Opens a case with its first timeline entry.
    pub async fn open(&self, new: NewCase) -> Result<Case, CaseError> {
        check_text(&new.text, &new.attachments)?;
        check_text(&new.title, &[])?;
        let txn = match (new.txn_id, &new.rrn) {
            (Some(id), _) => Some(
                self.store
                    .txn(id)?
                    .filter(|t| t.mid == new.mid)
                    .ok_or_else(|| CaseError::NoSuchTransaction(String::new()))?,
            ),
            (None, Some(rrn)) => Some(
                self.store
                    .txn_by_rrn(rrn.trim())?
                    .filter(|t| t.mid == new.mid)
                    .ok_or_else(|| CaseError::NoSuchTransaction(rrn.clone()))?,
            ),
            (None, None) => None,
        };
        if new.kind == CaseKind::RefundApplication {
            let Some(txn) = &txn else {
                return Err(CaseError::NoSuchTransaction(String::new()));
            };
            self.refund_checks(new.refund_fen, txn)?;
            // One application of a sale waits at a time: the operator decides on it before
            // another is made (and the approval queue cannot be flooded from one sale).
            if let Some(waiting) = self
                .store
                .cases_of_txn(txn.id)?
                .into_iter()
                .find(awaits_refund_decision)
            {
                return Err(CaseError::ApplicationWaiting(waiting.id));
            }
        }
        let id = self.store.reserve(CASE_COUNTER, 1)?.await?;
        let id = i64::try_from(id).map_err(|_| CaseError::Conflict)?;
        let now_ms = self.clock.now_ms();
        // Due by the kind's working time unless the opener set a date: the console puts what
        // is overdue first.
        let due_at_ms = new
            .due_at_ms
            .or_else(|| Some(now_ms.saturating_add(new.kind.due_in_ms())));
        let refund_fen = match (&txn, new.kind) {
            (Some(t), CaseKind::RefundApplication) => {
                Some(new.refund_fen.unwrap_or(t.amount_fen - t.refunded_fen))
            }
            _ => new.refund_fen,
        };
        let row = CaseRow {
            id,
            mid: new.mid.clone(),
            kind: new.kind.as_str().to_owned(),
            state: CaseState::Open.as_str().to_owned(),
            txn_id: txn.as_ref().map(|t| t.id),
            title: mask_card_numbers(&new.title).into_owned(),
            assignee: new.assignee.clone(),
            due_at_ms,
            refund_fen,
            approved_by: None,
            refund_txn_id: None,
            refund_rrn: None,
            refund_code: None,
            resolution: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            version: 1,
        };
        // A card number pasted into a case goes no further masked than a receipt shows it.
        let text = mask_card_numbers(&new.text);
        let entry = CaseEntryRow {
            case_id: id,
            seq: 1,
            at_ms: now_ms,
            who: new.who.clone(),
            text: text.clone().into_owned(),
            attachments: new
                .attachments
                .iter()
                .map(|a| mask_card_numbers(a).into_owned())
                .collect(),
        };
        let event = Event::case_updated(id, 1, CaseState::Open.as_str(), &text);
        let outbox_id = self.outbox_id().await?;
        let txn_id = row.txn_id;
        let written = self
            .store
            .submit(vec![
                Record::Resolve(ResolveRecord::InsertCase(Box::new(row))),
                Record::Resolve(ResolveRecord::CaseEntry(entry)),
                outbox::record(outbox_id, &new.mid, &event, now_ms),
            ])?
            .await;
        match (written, txn_id) {
            // The journal holds one waiting application per sale (`cases_refund_waiting`):
            // another opened since the check above, on this node or another.
            (Err(StoreError::Constraint { .. }), Some(txn_id))
                if new.kind == CaseKind::RefundApplication =>
            {
                match self
                    .store
                    .cases_of_txn(txn_id)?
                    .into_iter()
                    .find(awaits_refund_decision)
                {
                    Some(waiting) => Err(CaseError::ApplicationWaiting(waiting.id)),
                    None => Err(CaseError::Conflict),
                }
            }
            (written, _) => {
                written?;
                self.get(id)
            }
        }
    }

    /// Whether the switch would refuse a refund of `sale` now (25): its clearing day is more
    /// than `REFUND_DAYS_MAX` before today's, as the switch counts them (the default cut-over;
    /// a node with another one differs by a day at most, at the limit's edge).
    fn past_refund_limit(&self, sale: &TxnRow) -> bool {
        let today = switch::ClearingDay::of(self.clock.now_ms(), switch::CUTOVER_MINUTE_DEFAULT);
        switch::day_number_of(&sale.clearing_date)
            .is_some_and(|day| today.day_number - day > switch::REFUND_DAYS_MAX)
    }

    async fn outbox_id(&self) -> Result<i64, CaseError> {
        let id = self.store.reserve(outbox::OUTBOX_COUNTER, 1)?.await?;
        i64::try_from(id).map_err(|_| CaseError::Conflict)
    }

    /// A case with its timeline.
    pub fn get(&self, id: i64) -> Result<Case, CaseError> {
        let row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
        self.view(row, Timeline::With)
    }

    /// A case, only if it is this merchant's.
    pub fn get_for_merchant(&self, mid: &str, id: i64) -> Result<Case, CaseError> {
        let case = self.get(id)?;
        if case.mid != mid {
            return Err(CaseError::NotFound);
        }
        Ok(case)
    }

    /// The cases `query` asks for, newest first unless it asks for the oldest first
    /// ([`store::resolve::CaseQuery`]), without
    /// their timelines.
    pub fn find(&self, query: &CaseQuery<'_>) -> Result<Vec<Case>, CaseError> {
        self.store
            .cases(query)?
            .into_iter()
            .map(|row| self.view(row, Timeline::Without))
            .collect()
    }

    /// The cases still open, of one merchant or all, oldest first (at most
    /// `store::RESOLVE_ROWS_MAX`).
    pub fn still_open(&self, mid: Option<&str>) -> Result<Vec<Case>, CaseError> {
        self.find(&CaseQuery {
            mid,
            open_only: true,
            oldest_first: true,
            limit: store::RESOLVE_ROWS_MAX,
            ..CaseQuery::default()
        })
    }

    /// The cases about one transaction, oldest first, with their timelines.
    pub fn of_txn(&self, txn_id: i64) -> Result<Vec<Case>, CaseError> {
        self.store
            .cases_of_txn(txn_id)?
            .into_iter()
            .map(|row| self.view(row, Timeline::With))
            .collect()
    }

    /// The merchant's cases still open whose due date has passed at `now_ms`, most overdue first.
    pub fn overdue(&self, mid: &str, now_ms: i64) -> Result<Vec<Case>, CaseError> {
        let mut rows: Vec<CaseRow> = self
            .store
            .cases(&CaseQuery {
                mid: Some(mid),
                open_only: true,
                oldest_first: true,
                limit: store::RESOLVE_ROWS_MAX,
                ..CaseQuery::default()
            })?
            .into_iter()
            .filter(|c| c.due_at_ms.is_some_and(|due| due < now_ms))
            .collect();
        rows.sort_by_key(|c| c.due_at_ms);
        rows.into_iter()
            .map(|row| self.view(row, Timeline::Without))
            .collect()
    }

    fn view(&self, row: CaseRow, timeline: Timeline) -> Result<Case, CaseError> {
        let entries = match timeline {
            Timeline::With => self
                .store
                .case_entries(row.id)?
                .into_iter()
                .map(|e| CaseEntry {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    who: e.who,
                    text: e.text,
                    attachments: e.attachments,
                })
                .collect(),
            Timeline::Without => Vec::new(),
        };
        let txn = match row.txn_id {
            Some(id) => self
                .store
                .txn(id)?
                .map(|t| TxnSummary::of(&self.directory, &t)),
            None => None,
        };
        let corrupt = |what: &'static str, value: &str| {
            CaseError::Store(StoreError::Corrupt {
                what,
                value: value.to_owned(),
            })
        };
        let doubt = match row.refund_code {
            Some(_) => self.refund_doubt(&row)?,
            None => None,
        };
        let (refund_in_doubt, refund_reversal_refused) = (doubt.is_some(), doubt == Some(true));
        let refund_unrecorded = matches!(timeline, Timeline::With)
            && row.kind == CaseKind::RefundApplication.as_str()
            && CaseState::parse(&row.state).is_some_and(CaseState::is_closed)
            && row.refund_code.as_deref() != Some("00")
            && self.refund_journalled(&row)?.is_some();
        Ok(Case {
            id: row.id,
            kind: CaseKind::parse(&row.kind).ok_or_else(|| corrupt("case kind", &row.kind))?,
            state: CaseState::parse(&row.state).ok_or_else(|| corrupt("case state", &row.state))?,
            mid: row.mid,
            title: row.title,
            txn,
            assignee: row.assignee,
            due_at_ms: row.due_at_ms,
            refund_fen: row.refund_fen,
            approved_by: row.approved_by,
            refund_txn_id: row.refund_txn_id,
            refund_rrn: row.refund_rrn,
            refund_code: row.refund_code,
            refund_in_doubt,
            refund_reversal_refused,
            refund_unrecorded,
            resolution: row.resolution,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            version: row.version,
            entries,
        })
    }

    /// Writes `row` (already changed) over `version`, with a timeline entry and a
    /// `case.updated` notification, in one commit.
    async fn commit(
        &self,
        mut row: CaseRow,
        version: i64,
        who: &str,
        text: &str,
        attachments: Vec<String>,
    ) -> Result<Case, CaseError> {
        let now_ms = self.clock.now_ms();
        let text: &str = &mask_card_numbers(text);
        let attachments = attachments
            .iter()
            .map(|a| mask_card_numbers(a).into_owned())
            .collect();
        row.version = version + 1;
        row.updated_at_ms = now_ms;
        let seq = self
            .store
            .case_entries(row.id)?
            .last()
            .map_or(1, |e| e.seq + 1);
        let entry = CaseEntryRow {
            case_id: row.id,
            seq,
            at_ms: now_ms,
            who: who.to_owned(),
            text: text.to_owned(),
            attachments,
        };
        let event = Event::case_updated(row.id, row.version, &row.state, text);
        let outbox_id = self.outbox_id().await?;
        let mid = row.mid.clone();
        let id = row.id;
        self.store
            .submit(vec![
                Record::Resolve(ResolveRecord::UpdateCase {
                    row: Box::new(row),
                    expected_version: version,
                }),
                Record::Resolve(ResolveRecord::CaseEntry(entry)),
                outbox::record(outbox_id, &mid, &event, now_ms),
            ])?
            .await?;
        self.get(id)
    }

    /// Adds a timeline entry (a message, a call note, documents by reference) to a case still
    /// open. A resolved or rejected case is final: its timeline ends with its resolution, and
    /// what comes after goes into a new case.
    pub async fn add_entry(
        &self,
        id: i64,
        who: &str,
        text: &str,
        attachments: Vec<String>,
    ) -> Result<Case, CaseError> {
        self.entry_on(id, who, text, attachments, false).await
    }

    /// An entry by the merchant: as [`Self::add_entry`], and a case waiting for the merchant
    /// goes back to open with it (`[waiting_merchant → open]` at the entry's head), so that
    /// neither the merchant's list of cases waiting on them nor the operators' queue says the
    /// merchant still owes an answer it has given.
    pub async fn merchant_reply(
        &self,
        id: i64,
        who: &str,
        text: &str,
        attachments: Vec<String>,
    ) -> Result<Case, CaseError> {
        self.entry_on(id, who, text, attachments, true).await
    }

    async fn entry_on(
        &self,
        id: i64,
        who: &str,
        text: &str,
        attachments: Vec<String>,
        merchant_answers: bool,
    ) -> Result<Case, CaseError> {
        check_text(text, &attachments)?;
        let mut row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
        let state = CaseState::parse(&row.state).ok_or(CaseError::NotFound)?;
        if state.is_closed() {
            return Err(CaseError::IllegalTransition {
                from: state,
                action: "add_entry",
            });
        }
        if self.store.case_entries(id)?.len() >= ENTRIES_MAX {
            return Err(CaseError::TooManyEntries);
        }
        let version = row.version;
        if merchant_answers && state == CaseState::WaitingMerchant {
            let to = CaseState::Open;
            row.state = to.as_str().to_owned();
            let text = format!("[{} → {}] {text}", state.as_str(), to.as_str());
            return self.commit(row, version, who, &text, attachments).await;
        }
        self.commit(row, version, who, text, attachments).await
    }

    /// Moves the case; closing ones record their resolution. `seen_version`: the version the
    /// operator decided on (what their page showed); a case moved since by someone else is
    /// refused ([`CaseError::Conflict`]) rather than moved from a state they never saw.
    pub async fn transition(
        &self,
        id: i64,
        who: &str,
        transition: Transition,
        note: &str,
        seen_version: Option<i64>,
    ) -> Result<Case, CaseError> {
        check_text(note, &[])?;
        let mut row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
        if seen_version.is_some_and(|seen| seen != row.version) {
            return Err(CaseError::Conflict);
        }
        let state = CaseState::parse(&row.state).ok_or(CaseError::NotFound)?;
        let next = state.apply(&transition)?;
        // A refund of this case whose reversal is still under way is not known to stand or
        // not: closing the case now would let a new application refund again. Once the issuer
        // has answered the reversal (refused: the refund may stand, to be checked with the
        // issuer), the case may be closed.
        if matches!(transition, Transition::Resolve(_) | Transition::Reject(_))
            && self.refund_doubt(&row)? == Some(false)
        {
            return Err(CaseError::RefundInDoubt);
        }
        let version = row.version;
        row.state = next.as_str().to_owned();
        let text = match &transition {
            Transition::Resolve(r) | Transition::Reject(r) => {
                row.resolution = Some(r.as_str().to_owned());
                if note.is_empty() {
                    r.as_str().to_owned()
                } else {
                    format!("{note}\n{}", r.as_str())
                }
            }
            _ => note.to_owned(),
        };
        let text = format!("[{} → {}] {text}", state.as_str(), next.as_str());
        self.commit(row, version, who, &text, Vec::new()).await
    }

    /// Sets who works on a case and by when; a field given as `None` stays as the case has it
    /// when this reads it (not as the caller read it earlier: another operator's assignment
    /// made meanwhile stays), `Some(None)` clears it.
    pub async fn assign(
        &self,
        id: i64,
        who: &str,
        assignee: Option<Option<String>>,
        due_at_ms: Option<Option<i64>>,
    ) -> Result<Case, CaseError> {
        let mut row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
        let assignee = assignee.unwrap_or_else(|| row.assignee.clone());
        let due_at_ms = due_at_ms.unwrap_or(row.due_at_ms);
        if CaseState::parse(&row.state).is_some_and(CaseState::is_closed) {
            return Err(CaseError::IllegalTransition {
                from: CaseState::parse(&row.state).unwrap_or(CaseState::Resolved),
                action: "assign",
            });
        }
        let version = row.version;
        row.assignee = assignee.clone();
        row.due_at_ms = due_at_ms;
        // Who it is assigned to stays on the case (`assignee`): the timeline's words go to the
        // merchant (its pages, its webhook), which does not see staff usernames.
        let text = format!(
            "{}; 处理期限 / due {}",
            if assignee.is_some() {
                "已指派处理人 / assigned"
            } else {
                "已取消指派 / unassigned"
            },
            due_at_ms.map_or_else(|| "-".to_owned(), crate::text::date_time)
        );
        self.commit(row, version, who, &text, Vec::new()).await
    }

    /// An operator approves a refund application: the refund runs through the switch against
    /// the original (never more than what is left to refund), its result is recorded on the
    /// case, and an approved refund resolves the case. A retry of the same approval (same case
    /// version) reuses the idempotency key, so it never refunds twice.
    ///
    /// It runs as a task of its own, to its end even if the caller stops waiting (a closed
    /// tab, an API client's timeout, which drop an HTTP handler): a refund made must reach the
    /// case, or the case would stay open with no word of a refund the card received, and an
    /// approval again would find the amount gone and be refused.
    pub async fn approve_refund(&self, id: i64, operator: &str) -> Result<Case, CaseError> {
        let this = self.clone();
        let operator = operator.to_owned();
        tokio::spawn(async move { this.run_approve_refund(id, &operator).await })
            .await
            .map_err(|_| CaseError::Refund(BackOfficeError::NoAnswer))?
    }

    async fn run_approve_refund(&self, id: i64, operator: &str) -> Result<Case, CaseError> {
        let row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
        if row.kind != CaseKind::RefundApplication.as_str() {
            return Err(CaseError::NotRefundApplication);
        }
        let state = CaseState::parse(&row.state).ok_or(CaseError::NotFound)?;
        // A closed case takes no refund, but for one made under its key whose result never
        // reached it (the process stopped between the two, and the case was closed since):
        // approved again, that refund is answered from the journal and written on the case,
        // which stays closed, as when it lands while the case is being closed.
        if state.is_closed() && self.refund_journalled(&row)?.is_none() {
            return Err(CaseError::IllegalTransition {
                from: state,
                action: "approve_refund",
            });
        }
        if row.refund_code.as_deref() == Some("00") {
            return Err(CaseError::AlreadyRefunded);
        }
        // An attempt that may have been made (no answer, an answer that could not be read, an
        // approval that could not be recorded): another one, under a new key, would refund
        // again should the first's reversal be refused. Only once its reversal is
        // acknowledged is it known not to stand.
        if self.refund_in_doubt(&row)? {
            return Err(CaseError::RefundInDoubt);
        }
        // Four eyes: whoever asked for the refund (a merchant user, or staff on its behalf)
        // cannot also be the one who lets it go out.
        let opener = self
            .store
            .case_entries(id)?
            .into_iter()
            .find(|e| e.seq == 1)
            .map(|e| e.who);
        if opener.as_deref() == Some(operator) {
            return Err(CaseError::SameUser);
        }
        let original = match row.txn_id {
            Some(txn_id) => self.store.txn(txn_id)?,
            None => None,
        }
        .ok_or_else(|| CaseError::NoSuchTransaction(String::new()))?;
        let rrn = original
            .rrn
            .clone()
            .ok_or_else(|| CaseError::NoSuchTransaction(String::new()))?;
        let key = refund_key(&row);
        // An attempt under this key is in the journal, and its result never reached the case
        // (the process stopped, the write failed): the back office answers it again from
        // there, and the checks below would judge the sale as that refund left it (nothing
        // left to refund: refused, though the card has the money). A key only claimed sent
        // nothing, so the checks stand, among them another refund of the sale in doubt, which
        // the switch's own reservation does not count once that one timed out.
        let journalled = self.refund_journalled(&row)?;
        let asked_fen = match journalled {
            Some(asked) => asked,
            None => self.refund_checks(row.refund_fen, &original)?,
        };
        let result = self.refunds.refund(&rrn, asked_fen, &key).await?;
        // The refund has run: its result must reach the case even if someone else changed the
        // case meanwhile.
        let mut row = row;
        for _ in 1..RECORD_ATTEMPTS_MAX {
            match self.record_refund(row, operator, asked_fen, &result).await {
                Err(CaseError::Conflict) => {
                    row = self.store.case(id)?.ok_or(CaseError::NotFound)?;
                }
                done => return done,
            }
        }
        self.record_refund(row, operator, asked_fen, &result).await
    }

    /// The amount to refund of `original` (`asked_fen`, else all that is left), or why not:
    /// when an application is opened, and again at its approval with the sale as it is then
    /// (it may have been voided or reversed since, and a refund sent would only be refused by
    /// the switch, again at every approval, while the case waited in the queue).
    fn refund_checks(&self, asked_fen: Option<i64>, original: &TxnRow) -> Result<i64, CaseError> {
        if !refundable(original) {
            return Err(CaseError::NotRefundable);
        }
        if self.past_refund_limit(original) {
            return Err(CaseError::PastRefundLimit);
        }
        let left_fen = original.amount_fen - original.refunded_fen;
        let asked_fen = asked_fen.unwrap_or(left_fen);
        if asked_fen <= 0 {
            return Err(CaseError::BadAmount);
        }
        if asked_fen > left_fen {
            return Err(CaseError::ExceedsRemaining {
                asked_fen,
                left_fen,
            });
        }
        // Another refund of the sale (another case's, or one made at a terminal) whose outcome
        // is not known: what is left counts none such, and may already have gone back to the
        // card.
        if self.sale_refund_in_doubt(original.id)? {
            return Err(CaseError::RefundInDoubt);
        }
        Ok(asked_fen)
    }

    /// Whether the case's last refund attempt may have been made at the issuer without being
    /// known to stand: a reversal of it queued and not acknowledged (or refused), or, before
    /// one is queued, its journal row still in flight or timed out; with no row, a 98.
    fn refund_in_doubt(&self, row: &CaseRow) -> Result<bool, CaseError> {
        Ok(self.refund_doubt(row)?.is_some())
    }

    /// The amount of the refund attempt under the case's current key ([`refund_key`]) when it
    /// is in the journal. A key only claimed (the claim is written before the switch's checks
    /// and its journal row) sent nothing: `None`.
    fn refund_journalled(&self, row: &CaseRow) -> Result<Option<i64>, CaseError> {
        Ok(match self.store.backoffice_key(&refund_key(row))? {
            Some(claim)
                if !self
                    .store
                    .txns_by_key(&claim.tid, claim.batch_no, claim.stan)?
                    .is_empty() =>
            {
                Some(claim.amount_fen)
            }
            _ => None,
        })
    }

    /// Whether a refund or a void of sale `txn_id` (from a case or a terminal) may have been
    /// made at the issuer without the journal counting it: still in flight or timed out, or
    /// with a reversal of it queued and not acknowledged, or refused other than with 25 (the
    /// issuer never had it): then it may stand. The journal's refunded total (and a void
    /// reversed, the sale approved again) leaves it out, so what looks left to refund may be
    /// gone already.
    fn sale_refund_in_doubt(&self, txn_id: i64) -> Result<bool, CaseError> {
        Ok(return_doubt(self.store.as_ref(), txn_id)? != ReturnDoubt::None)
    }

    /// [`Self::refund_in_doubt`], and if so whether the issuer refused the attempt's reversal
    /// (`Some(true)`: the refund may stand there), from one read of the reversal queue.
    fn refund_doubt(&self, row: &CaseRow) -> Result<Option<bool>, CaseError> {
        if row.refund_code.as_deref() == Some("00") {
            return Ok(None);
        }
        let Some(txn_id) = row.refund_txn_id else {
            return Ok((row.refund_code.as_deref() == Some("98")).then_some(false));
        };
        if let Some(reversal) = self.store.reversal(txn_id)? {
            // Refused with 25: the issuer never had the refund, so it does not stand there.
            return Ok((!reversal.undone()).then_some(reversal.refused_standing()));
        }
        let state = self.store.txn(txn_id)?.map(|t| t.state);
        Ok((matches!(
            state,
            Some(store::TxnState::InFlight | store::TxnState::TimedOut)
        ) || row.refund_code.as_deref() == Some("98"))
        .then_some(false))
    }

    /// Writes a refund's result onto the case as it is now (at the row's version, read again
    /// after a conflict): from its current state, which may have moved while the refund ran.
    /// A closed case keeps its state (a refund that ran is still written on it); a result
    /// another approval already wrote (the same refund, its key shared) is not written twice.
    async fn record_refund(
        &self,
        row: CaseRow,
        operator: &str,
        asked_fen: i64,
        result: &BackOfficeRefund,
    ) -> Result<Case, CaseError> {
        let already = result.txn_id.is_some()
            && row.refund_txn_id == result.txn_id
            && row.refund_code.as_deref() == Some(result.response_code.as_str());
        if already {
            return self.view(row, Timeline::With);
        }
        let state = CaseState::parse(&row.state).ok_or(CaseError::NotFound)?;
        let version = row.version;
        let mut updated = row;
        updated.approved_by = Some(operator.to_owned());
        // A refusal before the journal has no id of its own: the last recorded one stays the
        // next attempt's key (this attempt, never journalled, used it and left no trace).
        if result.txn_id.is_some() {
            updated.refund_txn_id = result.txn_id;
        }
        updated.refund_rrn = result.rrn.clone();
        updated.refund_code = Some(result.response_code.clone());
        let rrn_text = result.rrn.as_deref().unwrap_or("-");
        let amount = yuan(asked_fen);
        // Written in both languages, Chinese first, as the merchant reads it on the case.
        let text = if result.approved() {
            let resolution = format!(
                "退货 {amount} 已由收单机构批准并执行成功，参考号 {rrn_text} / refund of \
                 {amount} approved by the acquirer and executed: RRN {rrn_text}"
            );
            if state.is_closed() {
                let zh = match state {
                    CaseState::Rejected => "已驳回",
                    _ => "已解决",
                };
                format!(
                    "[{zh}，工单结束后执行 / {} after the case was closed] {resolution}",
                    state.as_str()
                )
            } else {
                updated.state = CaseState::Resolved.as_str().to_owned();
                updated.resolution = Some(resolution.clone());
                format!("[{} → resolved] {resolution}", state.as_str())
            }
        } else {
            let code = &result.response_code;
            // Read as the transaction's page reads the refund's row: a refusal shoudan gave
            // itself (a refund over what is left, 61) is not the issuer's card limit of the
            // code's own entry, nor the cardholder's to act on.
            // Read after the refund ran: a read that fails falls back to the code's entry
            // rather than keep the result from the case.
            let row = result
                .txn_id
                .and_then(|id| self.store.txn(id).ok().flatten());
            let failure = row.as_ref().and_then(|row| {
                let queued = self.store.reversal(row.id).ok()?.is_some();
                crate::explain::failure_of(row, queued)
            });
            let d = failure.map_or_else(
                || domain::diagnosis::diagnose_str(code),
                domain::diagnosis::diagnose_failure,
            );
            // No answer, or one that could not be read or recorded: the issuer may have made
            // it, and it is being reversed (as `refund_in_doubt` judges, which refuses another
            // approval meanwhile). The case waits on the issuer.
            let in_doubt = self.refund_in_doubt(&updated)?;
            if in_doubt && !state.is_closed() {
                updated.state = CaseState::WaitingIssuer.as_str().to_owned();
            }
            if in_doubt {
                format!(
                    "退货 {amount} 已由收单机构批准，结果未明（{code} {}）：正在向发卡行冲正，\
                     冲正确认前请勿再次批准 / refund of {amount} approved by the acquirer: outcome \
                     unknown ({code} {}); it is being reversed at the issuer, do not approve \
                     again until that is confirmed",
                    d.title.zh, d.title.en
                )
            } else {
                format!(
                    "退货 {amount} 已由收单机构批准，但未成功：{code} {}（{}） / refund of \
                     {amount} approved by the acquirer but not executed: {code} {} ({})",
                    d.title.zh, d.meaning.zh, d.title.en, d.meaning.en
                )
            }
        };
        self.commit(updated, version, operator, &text, Vec::new())
            .await
    }
}

/// Only an approved sale (a purchase or a completion) has something to refund: an application
/// on anything else would wait in the refund queue for a refusal.
fn refundable(txn: &TxnRow) -> bool {
    matches!(txn.kind, TxnKind::Purchase | TxnKind::Completion) && txn.state == TxnState::Approved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_shows_a_card_number_masked() {
        let r = Resolution::new(" refunded to card 6222020200112345679 ").unwrap();
        assert_eq!(r.as_str(), "refunded to card 622202*********5679");
    }

    /// The store reads open cases by the states its SQL and its partial index name as closed
    /// (`store::Store::cases` with `open_only`): they must be these.
    #[test]
    fn the_closed_states_are_those_the_store_names() {
        let all = [
            CaseState::Open,
            CaseState::WaitingIssuer,
            CaseState::WaitingMerchant,
            CaseState::Resolved,
            CaseState::Rejected,
            CaseState::Escalated,
        ];
        for state in all {
            assert_eq!(
                state.is_closed(),
                ["resolved", "rejected"].contains(&state.as_str()),
                "{state:?}"
            );
        }
    }

    #[test]
    fn state_machine() {
        use CaseState as S;
        use Transition as T;
        let done = || Resolution::new("refunded").map_err(|e| e.to_string());
        assert_eq!(S::Open.apply(&T::WaitOnIssuer).ok(), Some(S::WaitingIssuer));
        assert_eq!(S::WaitingIssuer.apply(&T::Reopen).ok(), Some(S::Open));
        assert_eq!(
            S::WaitingIssuer.apply(&T::WaitOnMerchant).ok(),
            Some(S::WaitingMerchant)
        );
        assert_eq!(S::Open.apply(&T::Escalate).ok(), Some(S::Escalated));
        assert!(matches!(
            S::Escalated.apply(&T::Escalate),
            Err(CaseError::IllegalTransition { .. })
        ));
        assert!(matches!(
            S::Open.apply(&T::Reopen),
            Err(CaseError::IllegalTransition { .. })
        ));
        let resolve = T::Resolve(done().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(S::Escalated.apply(&resolve).ok(), Some(S::Resolved));
        for closed in [S::Resolved, S::Rejected] {
            for t in [T::WaitOnIssuer, T::Reopen, T::Escalate, resolve.clone()] {
                assert!(closed.apply(&t).is_err(), "{closed:?} {t:?}");
            }
        }
        assert!(matches!(
            Resolution::new("  "),
            Err(CaseError::ResolutionRequired)
        ));
    }
}
