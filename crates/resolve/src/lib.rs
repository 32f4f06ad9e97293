//! Explain and resolve (issue 4): what happened to a stored transaction in plain words, the
//! evidence to contact an issuer, cases with a way to closure, signed webhook notifications,
//! payer lookup without full PANs, and duplicate-payment detection.
//!
//! Everything reads the switch's journal through [`store::Store`]; nothing here sits on the
//! authorisation path. Notifications are derived by tailing the journal ([`outbox::Tailer`]),
//! and delivered by [`outbox::Notifier`]. Refunds a case approves run through the switch
//! ([`switch::BackOffice`]).
//!
//! Services take `Arc<dyn Store>` and friends so a web layer can hold them: [`Resolver`]
//! (explain, evidence, payer lookup, duplicates, webhook settings), [`cases::CaseService`],
//! [`outbox::Tailer`] and [`outbox::Notifier`] (background tasks), [`outbox::enqueue`].

#![forbid(unsafe_code)]

pub mod cases;
pub mod duplicates;
pub mod evidence;
pub mod explain;
pub mod outbox;
pub mod payer;
mod service;
mod text;
pub mod webhook;

pub use domain::diagnosis::Lang;
pub use evidence::{Evidence, evidence};
pub use explain::{Explanation, Outcome, Step, TxnSummary, explain_rrn, explain_txn};
pub use service::Resolver;
pub use text::{Both, date_text, kind_text as txn_kind_text};

/// Why a resolve operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// The RRN as asked, shown with any card number in it masked (one typed in the wrong box).
    #[error("no transaction with RRN {}", domain::mask_card_numbers(.0))]
    NoSuchRrn(String),
    #[error("no transaction with id {0}")]
    NoSuchTxn(i64),
    /// The URL as given, quoted with any card number in it masked.
    #[error(
        "webhook endpoint must be an https:// or http:// URL with a host: {}",
        domain::mask_card_numbers(.0)
    )]
    BadEndpoint(String),
    #[error(
        "webhook endpoint {} is not a public address: webhooks are not sent to loopback, \
         private or link-local addresses",
        domain::mask_card_numbers(.0)
    )]
    PrivateEndpoint(String),
    #[error("HSM: {0}")]
    Hsm(#[from] paycrypto::HsmError),
    #[error("{0} was not found for this merchant")]
    NotVisible(&'static str),
    /// Only a notification whose attempts ran out, or that found no endpoint, is sent again.
    #[error(
        "notification {id} is {state}: only a failed one, or one that found no endpoint, is sent again"
    )]
    NotRedrivable { id: i64, state: String },
}

#[cfg(test)]
mod tests {
    use super::ResolveError;

    #[test]
    fn an_rrn_not_found_is_quoted_with_a_card_number_in_it_masked() {
        let text = ResolveError::NoSuchRrn("6222020200112345679".into()).to_string();
        assert_eq!(text, "no transaction with RRN 622202*********5679");
        let text = ResolveError::NoSuchRrn("000000000042".into()).to_string();
        assert_eq!(text, "no transaction with RRN 000000000042");
    }
}
