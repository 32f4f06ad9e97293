//! A full disk under the journal, against the real switch and issuer simulator. The disk is
//! SQLite's page quota (`SqliteStore::set_page_quota`, `PRAGMA max_page_count` on the writer's
//! connection) lowered at run time: writes needing a new page then fail with SQLITE_FULL, the
//! error a full file system gives, without root or a special mount, on any CI machine. The
//! switch must stop approving (96) rather than approve what it cannot record, approve again
//! once space returns, and after a restart leave no issuer approval in doubt.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../switch/tests/common/mod.rs"]
mod common;
mod support;

use store::{Store, TxnState};
use support::{runtime, start};

/// Purchases tried while the disk is full; the quota is hit within a few pages of rows.
const TRIES_MAX: usize = 400;

#[test]
fn full_journal_answers_96_never_an_unrecorded_approval_and_recovers() {
    runtime().block_on(async {
        let mut w = start(&["ICBC"], |_| {}).await;
        let cards: Vec<_> = (0..4).map(|i| w.bank("ICBC").healthy(i).clone()).collect();
        let req = w.purchase(&cards[0], 100);
        assert_eq!(w.t.send(&req).await.code(), "00");

        // The disk fills: SQLite keeps the quota at no less than the pages in use, so 1 means
        // "full now"; rows still fit in free space of existing pages until they do not.
        w.store.set_page_quota(Some(1));
        let mut codes = Vec::new();
        let mut refused_in_a_row = 0;
        for i in 0..TRIES_MAX {
            let req = w.purchase(&cards[i % cards.len()], 100);
            let r = w.t.send(&req).await;
            let code = r.code();
            if code == "00" {
                // Approved only if recorded: the row is there, approved.
                let row = w.store.txn_by_rrn(&r.text(37).unwrap()).unwrap().unwrap();
                assert_eq!(row.state, TxnState::Approved);
                refused_in_a_row = 0;
            } else {
                assert_eq!(code, "96", "only 96 while the disk is full");
                refused_in_a_row += 1;
            }
            codes.push(code);
            if refused_in_a_row >= 20 {
                break;
            }
        }
        let approved_while_filling = codes.iter().filter(|c| *c == "00").count();
        assert!(refused_in_a_row >= 20, "the quota never filled: {codes:?}");

        // Space returns: approvals resume without a restart.
        w.store.set_page_quota(None);
        for i in 0..10 {
            let req = w.purchase(&cards[i % cards.len()], 100);
            assert_eq!(w.t.send(&req).await.code(), "00");
        }
        // A request whose outcome could not be written stays "in flight" in the journal; the
        // next start settles it (reversal queued, delivered). After that nothing is in doubt.
        let in_flight = w.store.txns_in_state(TxnState::InFlight).unwrap().len();
        w.restart().await;
        assert!(w.reversals_delivered(20).await, "reversals not delivered");
        let checked = w.audit();
        eprintln!(
            "full disk: {approved_while_filling} approved while filling, then {} answered 96; \
             {in_flight} left in flight until the restart; {checked} issuer approvals audited",
            codes.len() - approved_while_filling
        );
        let req = w.purchase(&cards[0], 100);
        assert_eq!(w.t.send(&req).await.code(), "00");
    });
}
