//! Operator actions on merchants and alerts, through the `Store` trait: apply, approve, suspend,
//! close (each recorded with who and when), clear an alert or act on it by suspending its
//! terminal or merchant. The switch picks the changes up on its next refresh.
//!
//! The reads here are synchronous store reads: async callers on a busy runtime may wrap these
//! calls in `spawn_blocking`.

use store::risk::{
    AlertState, MerchantProfileRow, MerchantReviewRow, MerchantState, RiskAlertRow, RiskRecord,
};
use store::{MerchantRow, Record, Status, Store, StoreError};

use crate::merchant::{
    MerchantAction, Qualification, QualificationError, TransitionError, transition,
};

/// Longest operator name or note kept with a review or an alert.
pub const NOTE_LEN_MAX: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Qualification(#[from] QualificationError),
    #[error("no merchant {mid}")]
    NoSuchMerchant { mid: String },
    #[error("no risk alert {id}")]
    NoSuchAlert { id: i64 },
    #[error("risk alert {id} is already {state}")]
    AlertClosed { id: i64, state: AlertState },
    #[error("operator name is empty, or operator or note longer than {NOTE_LEN_MAX} characters")]
    Operator,
    #[error("merchant {mid} was reviewed by someone else meanwhile; look again")]
    Changed { mid: String },
    /// Four eyes: whoever put the merchant where it is (applied for it, suspended it) does not
    /// approve it too.
    #[error("{operator} {action} merchant {mid}: another operator approves it")]
    SameOperator {
        mid: String,
        operator: String,
        action: String,
    },
}

/// Who does it and when.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    pub operator: &'a str,
    pub now_ms: i64,
}

impl Actor<'_> {
    fn check(&self, note: &str) -> Result<(), OpsError> {
        let operator = self.operator.trim();
        if operator.is_empty()
            || operator.chars().count() > NOTE_LEN_MAX
            || note.chars().count() > NOTE_LEN_MAX
        {
            return Err(OpsError::Operator);
        }
        Ok(())
    }
}

/// What an operator does about an alert besides clearing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertResponse {
    /// A false alarm (or handled elsewhere).
    Clear,
    SuspendTerminal,
    SuspendMerchant,
}

/// A merchant's lifecycle state: its profile's, else (a merchant provisioned without
/// onboarding) the one its `Status` implies. `None`: no such merchant.
pub fn merchant_state(store: &dyn Store, mid: &str) -> Result<Option<MerchantState>, OpsError> {
    if let Some(profile) = store.merchant_profile(mid)? {
        return Ok(Some(profile.state));
    }
    Ok(store
        .merchant(mid)?
        .map(|m| MerchantState::from_status(m.status)))
}

/// A new merchant applies with its qualification data; it takes no cards until approved.
pub async fn apply(
    store: &dyn Store,
    mid: &str,
    name: &str,
    qualification: &Qualification,
    actor: Actor<'_>,
) -> Result<MerchantProfileRow, OpsError> {
    actor.check("")?;
    qualification.check()?;
    let state = transition(merchant_state(store, mid)?, MerchantAction::Apply)?;
    let profile = MerchantProfileRow {
        mid: mid.to_owned(),
        state,
        licence_no: qualification.licence_no.clone(),
        legal_person: qualification.legal_person.clone(),
        mcc: qualification.mcc.clone(),
        address: qualification.address.clone(),
        applied_at_ms: actor.now_ms,
        reviewed_by: None,
        reviewed_at_ms: None,
        note: None,
    };
    store
        .submit(vec![
            Record::UpsertMerchant(MerchantRow {
                mid: mid.to_owned(),
                name: name.to_owned(),
                status: state.status(),
                mcc: qualification.mcc.clone(),
            }),
            // Insert-only: an application racing another (or an approval) read "no such
            // merchant" too; all three records fail together rather than write over it.
            Record::Risk(RiskRecord::NewProfile(profile.clone())),
            Record::Risk(RiskRecord::Review(MerchantReviewRow {
                mid: mid.to_owned(),
                at_ms: actor.now_ms,
                operator: actor.operator.to_owned(),
                action: MerchantAction::Apply.key().to_owned(),
                from_state: None,
                to_state: state,
                note: String::new(),
            })),
        ])?
        .await?;
    Ok(profile)
}

/// Approves an applicant after review, or lifts a suspension.
pub async fn approve(
    store: &dyn Store,
    mid: &str,
    note: &str,
    actor: Actor<'_>,
) -> Result<MerchantProfileRow, OpsError> {
    review(store, mid, MerchantAction::Approve, note, actor).await
}

pub async fn suspend(
    store: &dyn Store,
    mid: &str,
    note: &str,
    actor: Actor<'_>,
) -> Result<MerchantProfileRow, OpsError> {
    review(store, mid, MerchantAction::Suspend, note, actor).await
}

pub async fn close(
    store: &dyn Store,
    mid: &str,
    note: &str,
    actor: Actor<'_>,
) -> Result<MerchantProfileRow, OpsError> {
    review(store, mid, MerchantAction::Close, note, actor).await
}

async fn review(
    store: &dyn Store,
    mid: &str,
    action: MerchantAction,
    note: &str,
    actor: Actor<'_>,
) -> Result<MerchantProfileRow, OpsError> {
    actor.check(note)?;
    let note: &str = &domain::mask_card_numbers(note);
    let merchant = store.merchant(mid)?;
    let existing = store.merchant_profile(mid)?;
    let existing_state = existing.as_ref().map(|p| p.state);
    let from = match (&existing, &merchant) {
        (Some(profile), _) => profile.state,
        (None, Some(m)) => MerchantState::from_status(m.status),
        (None, None) => {
            return Err(OpsError::NoSuchMerchant {
                mid: mid.to_owned(),
            });
        }
    };
    let to = transition(Some(from), action)?;
    if action == MerchantAction::Approve
        && let Some(last) = store.merchant_reviews(mid)?.pop()
        && last.operator.trim() == actor.operator.trim()
    {
        return Err(OpsError::SameOperator {
            mid: mid.to_owned(),
            operator: last.operator,
            action: match last.action.as_str() {
                "apply" => "applied for".to_owned(),
                "suspend" => "suspended".to_owned(),
                other => format!("last made '{other}' on"),
            },
        });
    }
    // A merchant provisioned before onboarding gets a profile at its first review; its
    // qualification data is still to be collected.
    let mut profile = existing.unwrap_or_else(|| MerchantProfileRow {
        mid: mid.to_owned(),
        state: from,
        licence_no: String::new(),
        legal_person: String::new(),
        mcc: merchant.as_ref().map(|m| m.mcc.clone()).unwrap_or_default(),
        address: String::new(),
        applied_at_ms: actor.now_ms,
        reviewed_by: None,
        reviewed_at_ms: None,
        note: None,
    });
    profile.state = to;
    profile.reviewed_by = Some(actor.operator.to_owned());
    profile.reviewed_at_ms = Some(actor.now_ms);
    profile.note = (!note.is_empty()).then(|| note.to_owned());
    let written = store
        .submit(vec![
            // Compare-and-set: only from the state this review read (an approve racing a
            // close must not reopen the closed merchant).
            Record::Risk(RiskRecord::ExpectState {
                mid: mid.to_owned(),
                state: existing_state,
            }),
            Record::Risk(RiskRecord::Profile(profile.clone())),
            Record::Risk(RiskRecord::Review(MerchantReviewRow {
                mid: mid.to_owned(),
                at_ms: actor.now_ms,
                operator: actor.operator.to_owned(),
                action: action.key().to_owned(),
                from_state: Some(from),
                to_state: to,
                note: note.to_owned(),
            })),
            Record::Risk(RiskRecord::MerchantStatus {
                mid: mid.to_owned(),
                status: to.status(),
            }),
        ])?
        .await;
    match written {
        Ok(()) => Ok(profile),
        Err(StoreError::Constraint { .. }) => Err(OpsError::Changed {
            mid: mid.to_owned(),
        }),
        Err(error) => Err(error.into()),
    }
}

/// Clears an open alert, or acts on it by suspending its terminal or its merchant.
pub async fn resolve_alert(
    store: &dyn Store,
    id: i64,
    response: AlertResponse,
    note: &str,
    actor: Actor<'_>,
) -> Result<RiskAlertRow, OpsError> {
    actor.check(note)?;
    let note: &str = &domain::mask_card_numbers(note);
    let alert = store.risk_alert(id)?.ok_or(OpsError::NoSuchAlert { id })?;
    if alert.state != AlertState::Open {
        return Err(OpsError::AlertClosed {
            id,
            state: alert.state,
        });
    }
    let mut records = Vec::with_capacity(4);
    let (state, what) = match response {
        AlertResponse::Clear => (AlertState::Cleared, "cleared".to_owned()),
        AlertResponse::SuspendTerminal => {
            records.push(Record::Risk(RiskRecord::TerminalStatus {
                tid: alert.tid.clone(),
                status: Status::Suspended,
            }));
            (
                AlertState::Acted,
                format!("terminal {} suspended", alert.tid),
            )
        }
        AlertResponse::SuspendMerchant => {
            // Through the lifecycle, so the review history shows it; an already suspended
            // merchant stays so.
            match merchant_state(store, &alert.mid)? {
                Some(MerchantState::Suspended | MerchantState::Closed) => {}
                _ => {
                    // The note as far as the review's reason holds it (the alert's resolution
                    // keeps it whole): a note the operator could give must not fail here.
                    let prefix = format!("risk alert {id}: ");
                    let room = NOTE_LEN_MAX.saturating_sub(prefix.chars().count());
                    let why: String = prefix.chars().chain(note.chars().take(room)).collect();
                    suspend(store, &alert.mid, &why, actor).await?;
                }
            }
            (
                AlertState::Acted,
                format!("merchant {} suspended", alert.mid),
            )
        }
    };
    let resolution = if note.is_empty() {
        what
    } else {
        format!("{what}: {note}")
    };
    records.push(Record::Risk(RiskRecord::ResolveAlert {
        id,
        state,
        by: actor.operator.to_owned(),
        at_ms: actor.now_ms,
        resolution: resolution.clone(),
    }));
    // Another operator's decision since the read above stands: this one is refused (a
    // merchant suspended above stays suspended, with this alert in its review history).
    match store.submit(records)?.await {
        Ok(()) => {}
        Err(StoreError::Constraint { .. }) => {
            let now = store.risk_alert(id)?.ok_or(OpsError::NoSuchAlert { id })?;
            return Err(OpsError::AlertClosed {
                id,
                state: now.state,
            });
        }
        Err(error) => return Err(error.into()),
    }
    Ok(RiskAlertRow {
        state,
        resolved_by: Some(actor.operator.to_owned()),
        resolved_at_ms: Some(actor.now_ms),
        resolution: Some(resolution),
        ..alert
    })
}
