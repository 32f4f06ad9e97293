//! Merchant onboarding and the risk controls of the authorisation path: the merchant lifecycle
//! (applied → approved → suspended → closed) as a state machine, the per-merchant rules file
//! compiled once into a [`RuleBook`], and the [`Engine`] that evaluates a request against it with
//! bounded in-memory windows. No IO here: the switch feeds requests and outcomes in, and writes
//! the alerts the engine raises; [`ops`] holds the operator actions, through the `Store` trait.

#![forbid(unsafe_code)]

pub mod engine;
pub mod merchant;
pub mod ops;
pub mod rules;

pub use engine::{
    CARDS_TRACKED_MAX, EVENTS_PER_KEY_MAX, Engine, Hit, MERCHANTS_TRACKED_MAX, Outcome, Request,
    TERMINALS_TRACKED_MAX, TxnClass, Words,
};
pub use merchant::{
    MerchantAction, MerchantGate, Qualification, QualificationError, TransitionError, transition,
};
pub use rules::{Action, CardClass, RuleBook, RuleKind, RuleSet, RulesError, mcc_ticket_max_fen};
