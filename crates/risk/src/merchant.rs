//! The merchant lifecycle: which review actions move a merchant between applied, approved,
//! suspended and closed, the qualification data an application must carry, and the gate that
//! decides whether a merchant's terminals may take cards.

use store::risk::MerchantState;

/// An operator's (or the applicant's) step in the lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MerchantAction {
    /// A new merchant applies (or a refused one re-applies with corrected data).
    Apply,
    /// An operator reviewed the qualification data and approves card acceptance (also lifts
    /// a suspension).
    Approve,
    /// Card acceptance stops (risk finding, expired licence); reversible by approving again.
    Suspend,
    /// The relationship ends; nothing follows.
    Close,
}

impl MerchantAction {
    pub const fn key(self) -> &'static str {
        match self {
            MerchantAction::Apply => "apply",
            MerchantAction::Approve => "approve",
            MerchantAction::Suspend => "suspend",
            MerchantAction::Close => "close",
        }
    }
}

/// A step the lifecycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a merchant that is {}", action.key(), from.map_or("not registered", MerchantState::as_str))]
pub struct TransitionError {
    pub from: Option<MerchantState>,
    pub action: MerchantAction,
}

/// The state after `action` from `from` (`None`: no profile yet).
///
/// ```text
/// (none) --apply--> applied --approve--> approved --suspend--> suspended --approve--> approved
///                   applied/approved/suspended --close--> closed (final)
/// ```
pub fn transition(
    from: Option<MerchantState>,
    action: MerchantAction,
) -> Result<MerchantState, TransitionError> {
    use MerchantState::{Applied, Approved, Closed, Suspended};
    let to = match (from, action) {
        (None, MerchantAction::Apply) => Some(Applied),
        (Some(Applied), MerchantAction::Approve) | (Some(Suspended), MerchantAction::Approve) => {
            Some(Approved)
        }
        (Some(Approved), MerchantAction::Suspend) => Some(Suspended),
        (Some(Applied | Approved | Suspended), MerchantAction::Close) => Some(Closed),
        _ => None,
    };
    to.ok_or(TransitionError { from, action })
}

/// Longest qualification field accepted; longer input is a mistake, not an address.
pub const QUALIFICATION_FIELD_LEN_MAX: usize = 200;

/// What an application must carry; checked before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qualification {
    /// Unified social credit code (统一社会信用代码): 18 characters, digits and capitals.
    pub licence_no: String,
    pub legal_person: String,
    /// Four-digit merchant category code.
    pub mcc: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QualificationError {
    #[error("licence number must be the 18-character unified social credit code")]
    LicenceNo,
    #[error("MCC must be four digits")]
    Mcc,
    #[error("{field} is empty or longer than {QUALIFICATION_FIELD_LEN_MAX} characters")]
    Field { field: &'static str },
}

impl Qualification {
    pub fn check(&self) -> Result<(), QualificationError> {
        if !domain::is_code(&self.licence_no, 18) {
            return Err(QualificationError::LicenceNo);
        }
        if self.mcc.len() != 4 || !self.mcc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QualificationError::Mcc);
        }
        for (field, value) in [
            ("legal person", &self.legal_person),
            ("address", &self.address),
        ] {
            let chars = value.trim().chars().count();
            if chars == 0 || chars > QUALIFICATION_FIELD_LEN_MAX {
                return Err(QualificationError::Field { field });
            }
        }
        Ok(())
    }
}

/// Whether a merchant's terminals may take cards, from its lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MerchantGate {
    Open,
    /// Not approved (applied, suspended or closed): declined 03 (a suspended merchant's
    /// voids and refunds excepted, `for_request`).
    NotApproved(MerchantState),
}

impl MerchantGate {
    pub const fn of(state: MerchantState) -> MerchantGate {
        match state {
            MerchantState::Approved => MerchantGate::Open,
            other => MerchantGate::NotApproved(other),
        }
    }

    /// The gate for one request: a suspended merchant may still give money back (void a
    /// sale, refund it, release a pre-authorisation), since refusing that hurts only its
    /// customers; it may take none.
    pub const fn for_request(state: MerchantState, class: crate::TxnClass) -> MerchantGate {
        match (state, class) {
            (MerchantState::Suspended, crate::TxnClass::Void | crate::TxnClass::Credit) => {
                MerchantGate::Open
            }
            _ => MerchantGate::of(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MerchantAction::*;
    use MerchantState::*;

    #[test]
    fn every_transition() {
        let states = [
            None,
            Some(Applied),
            Some(Approved),
            Some(Suspended),
            Some(Closed),
        ];
        let actions = [Apply, Approve, Suspend, Close];
        let allowed = [
            (None, Apply, Applied),
            (Some(Applied), Approve, Approved),
            (Some(Suspended), Approve, Approved),
            (Some(Approved), Suspend, Suspended),
            (Some(Applied), Close, Closed),
            (Some(Approved), Close, Closed),
            (Some(Suspended), Close, Closed),
        ];
        for from in states {
            for action in actions {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (transition(from, action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want),
                    (Err(e), None) => {
                        assert_eq!(e, TransitionError { from, action });
                        assert!(e.to_string().starts_with("cannot "));
                    }
                    (got, want) => panic!("{from:?} {action:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn qualification_checks() {
        let good = Qualification {
            licence_no: "91310000MA1FL0001X".into(),
            legal_person: "张三".into(),
            mcc: "5812".into(),
            address: "上海市黄浦区南京东路1号".into(),
        };
        assert_eq!(good.check(), Ok(()));
        let short = Qualification {
            licence_no: "123".into(),
            ..good.clone()
        };
        assert_eq!(short.check(), Err(QualificationError::LicenceNo));
        let mcc = Qualification {
            mcc: "58a2".into(),
            ..good.clone()
        };
        assert_eq!(mcc.check(), Err(QualificationError::Mcc));
        let blank = Qualification {
            address: "  ".into(),
            ..good
        };
        assert_eq!(
            blank.check(),
            Err(QualificationError::Field { field: "address" })
        );
    }

    #[test]
    fn only_approved_merchants_take_cards() {
        assert_eq!(MerchantGate::of(Approved), MerchantGate::Open);
        for state in [Applied, Suspended, Closed] {
            assert_eq!(MerchantGate::of(state), MerchantGate::NotApproved(state));
        }
    }
}
