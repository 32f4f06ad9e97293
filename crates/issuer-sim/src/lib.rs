//! A simulated card issuer host: accounts, card states, limits, PIN checks, its own ledger and
//! faults on demand, answering the switch over the issuer link of docs/issuer-link.md.

pub mod book;
pub mod model;
pub mod time;
