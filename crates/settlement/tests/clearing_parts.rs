//! A settle run writes a clearing day's lines in parts, one store submission each, and its
//! postings, totals and run record last, together: a run stopped part-way (here by a full disk,
//! SQLite's page quota) leaves whole parts, no money moved and no record, and the next run of
//! the date carries on to exactly the lines, totals, ledger and run record one uninterrupted run
//! makes.
// The helpers below are test code too: clippy's test allowances reach only `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use domain::IssuerDirectory;
use settlement::{ClearingConfig, SettleReport, audit, settle_date_with};
use store::settlement::{ClearingLineRow, SettleRunRow};
use store::{Record, SqliteStore, Store, TxnKind as K, TxnRow, TxnState as S};

const D: &str = "20261123";
const MIDS: [&str; 5] = [
    "898310058120001",
    "898310058120002",
    "898310058120003",
    "898310058120004",
    "898310058120005",
];
const BINS: [&str; 3] = ["622202", "625965", "411111"];
/// Lines per submission in these tests: a day of a few hundred lines in a dozen parts.
const PER_COMMIT: usize = 40;

fn config() -> ClearingConfig {
    ClearingConfig {
        lines_per_commit: PER_COMMIT,
        pause_between_parts: Duration::ZERO,
    }
}

/// Journal rows `first..first + count` of the day: purchases on debit, credit and foreign
/// cards over five merchants, some voided (each by the next row), refunds, reversed and
/// declined sales.
fn day(first: i64, count: i64) -> Vec<TxnRow> {
    let mid = |n: usize| MIDS[n % MIDS.len()];
    let bin = |n: usize| BINS[n % BINS.len()];
    let amount = |n: usize| 1_000 + i64::try_from(n * 7_919 % 400_000).unwrap();
    (first..first + count)
        .map(|id| {
            let n = usize::try_from(id).unwrap();
            match n % 10 {
                3 => row(id, mid(n), K::Purchase, S::Voided, amount(n), bin(n), D),
                4 => {
                    let was = n - 1;
                    let sale = (mid(was), amount(was), bin(was));
                    let mut void = row(id, sale.0, K::PurchaseVoid, S::Approved, sale.1, sale.2, D);
                    void.original_id = Some(id - 1);
                    void
                }
                5 => row(id, mid(n), K::Refund, S::Approved, amount(n) / 3, bin(n), D),
                6 => row(id, mid(n), K::Purchase, S::Reversed, amount(n), bin(n), D),
                7 => row(id, mid(n), K::Purchase, S::Declined, amount(n), bin(n), D),
                _ => row(id, mid(n), K::Purchase, S::Approved, amount(n), bin(n), D),
            }
        })
        .collect()
}

/// The day's first journal (ids 1..=400) and what changes after its first run: sales reversed
/// late, and approvals written late (ids 401..=600).
fn first_journal(store: &dyn Store) {
    for mid in MIDS {
        merchant(store, mid);
    }
    insert(store, day(1, 400));
}

fn later_changes(store: &dyn Store) {
    let reversed = (10..400).step_by(37).map(|id| Record::State {
        id,
        state: S::Reversed,
    });
    store.submit(reversed.collect()).unwrap().wait().unwrap();
    insert(store, day(401, 200));
}

/// Pages the database holds now, read beside the store's own connections.
fn pages(dir: &tempfile::TempDir) -> u64 {
    let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    u64::try_from(pages).unwrap()
}

/// A line without the time of the run that wrote it.
fn line_key(l: &ClearingLineRow) -> (i64, u32, String, String, String, i64, i64) {
    (
        l.txn_id,
        l.seq,
        l.mid.clone(),
        l.card_class.clone(),
        l.issuer.clone(),
        l.amount_fen,
        l.fee_fen,
    )
}

/// What a store holds of the day: its lines, totals, ledger balances, clearing postings
/// (reference and legs) and run records, without ids and times.
#[derive(Debug)]
struct Held {
    lines: Vec<(i64, u32, String, String, String, i64, i64)>,
    totals: Vec<(String, String, u64, i64, i64)>,
    balances: Vec<(String, i64)>,
    postings: BTreeMap<String, Vec<Vec<(String, i64)>>>,
    runs: Vec<(u32, u64, i64, i64, u64)>,
}

/// Asserts two stores hold the same day, naming only what differs.
fn assert_same(here: &Held, there: &Held) {
    let only = |a: &[(i64, u32, String, String, String, i64, i64)],
                b: &[(i64, u32, String, String, String, i64, i64)]| {
        a.iter()
            .filter(|l| !b.contains(l))
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        here.lines == there.lines,
        "lines: {} here, {} there; only here {:?}; only there {:?}",
        here.lines.len(),
        there.lines.len(),
        only(&here.lines, &there.lines),
        only(&there.lines, &here.lines)
    );
    assert_eq!(here.totals, there.totals);
    assert_eq!(here.balances, there.balances);
    assert_eq!(here.runs, there.runs);
    for (reference, postings) in &here.postings {
        assert!(
            Some(postings) == there.postings.get(reference),
            "{reference}: {} postings here, {:?} there",
            postings.len(),
            there.postings.get(reference).map(Vec::len)
        );
    }
    assert_eq!(here.postings.len(), there.postings.len());
}

fn held(store: &dyn Store) -> Held {
    let mut lines: Vec<_> = store
        .clearing_lines(D)
        .unwrap()
        .iter()
        .map(line_key)
        .collect();
    lines.sort();
    let totals = store
        .clearing_totals(None, 1_000)
        .unwrap()
        .into_iter()
        .map(|t| (t.clearing_date, t.mid, t.lines, t.gross_fen, t.fee_fen))
        .collect();
    let mut postings = BTreeMap::new();
    for mid in MIDS {
        let reference = format!("clear:{D}:{mid}");
        let mut legs: Vec<Vec<(String, i64)>> = store
            .postings_by_reference(&reference)
            .unwrap()
            .into_iter()
            .map(|p| {
                p.legs
                    .into_iter()
                    .map(|l| (l.account, l.amount_fen))
                    .collect()
            })
            .collect();
        legs.sort();
        postings.insert(reference, legs);
    }
    let runs = store
        .settle_runs(Some(D))
        .unwrap()
        .into_iter()
        .map(|r: SettleRunRow| (r.run_no, r.lines, r.gross_fen, r.fee_fen, r.postings))
        .collect();
    Held {
        lines,
        totals,
        balances: store.ledger_balances().unwrap(),
        postings,
        runs,
    }
}

/// Settles the day on `store` with the disk filling up: the page quota is raised a page at a
/// time, each run stopping wherever it fills, until one gets through. Returns that run's
/// report and the numbers of lines the stopped runs left behind.
fn settle_on_a_filling_disk(
    store: &Arc<SqliteStore>,
    dir: &tempfile::TempDir,
    directory: &IssuerDirectory,
    now_ms: i64,
) -> (SettleReport, Vec<usize>) {
    let runs_before = store.settle_runs(Some(D)).unwrap();
    let ledger_before = store.ledger_balances().unwrap();
    let base = pages(dir);
    let mut left = Vec::new();
    for extra in 1..10_000 {
        store.set_page_quota(Some(base + extra));
        let at = now_ms + i64::try_from(extra).unwrap();
        match settle_date_with(store.as_ref(), directory, D, at, &config()) {
            Ok(report) => {
                store.set_page_quota(None);
                return (report, left);
            }
            Err(e) => {
                assert!(e.to_string().contains("full"), "{e}");
                // A stopped run is not recorded, so the date is not cleared as far as any later
                // run is concerned, and moved no money: a payout pays none of it.
                assert_eq!(store.settle_runs(Some(D)).unwrap(), runs_before);
                assert_eq!(store.ledger_balances().unwrap(), ledger_before);
                left.push(store.clearing_lines(D).unwrap().len());
            }
        }
    }
    panic!("the quota never let a run through: {left:?}");
}

/// The lines stopped runs `left` (between `from`, before the first, and `to`, a whole run's)
/// were whole parts, more each time, and at least twice neither none nor all of the run's:
/// the day is written in several submissions, and a stopped one takes back only itself.
fn stopped_in_whole_parts(left: &[usize], from: usize, to: usize) {
    let part_way = left.iter().filter(|&&n| n > from && n < to).count();
    assert!(part_way >= 2, "no run stopped part-way: {left:?}");
    assert!(left.windows(2).all(|w| w[0] <= w[1]), "{left:?}");
    assert!(
        left.iter()
            .all(|&n| (n - from).is_multiple_of(PER_COMMIT) || n == to),
        "a stopped run left part of a part: {left:?}"
    );
}

#[test]
fn a_day_is_written_in_parts_and_a_run_stopped_part_way_is_finished_exactly_by_the_next() {
    let directory = IssuerDirectory::embedded().unwrap();
    let (reference_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (reference, store) = (open_store(&reference_dir), open_store(&dir));

    // The reference: every run goes through.
    first_journal(reference.as_ref());
    let first = settle_date_with(reference.as_ref(), &directory, D, 1_000, &config()).unwrap();
    let after_first = held(reference.as_ref());
    later_changes(reference.as_ref());
    let second = settle_date_with(reference.as_ref(), &directory, D, 2_000, &config()).unwrap();
    assert!(first.new_lines >= 8 * PER_COMMIT as u64, "{first:?}");
    assert!(second.new_lines >= 4 * PER_COMMIT as u64, "{second:?}");

    // The same journal, its runs stopped by a disk that fills up, over and over.
    first_journal(store.as_ref());
    let (first_here, left) = settle_on_a_filling_disk(&store, &dir, &directory, 1_000);
    let day_lines = usize::try_from(first.new_lines).unwrap();
    stopped_in_whole_parts(&left, 0, day_lines);
    // The run that got through finished what the stopped ones wrote, and says so.
    assert!(first_here.resumed_lines > 0, "{first_here:?}");
    assert_eq!(
        (
            first_here.new_lines,
            first_here.new_postings,
            &first_here.merchants
        ),
        (first.new_lines, first.new_postings, &first.merchants)
    );
    assert_same(&held(store.as_ref()), &after_first);

    // A second run of the date (after late changes), stopped as well, over a recorded first.
    later_changes(store.as_ref());
    let (second_here, left) = settle_on_a_filling_disk(&store, &dir, &directory, 2_000);
    let second_lines = usize::try_from(second.new_lines).unwrap();
    stopped_in_whole_parts(&left, day_lines, day_lines + second_lines);
    assert_eq!(
        (
            second_here.new_lines,
            second_here.new_postings,
            second_here.run_no
        ),
        (second.new_lines, second.new_postings, Some(2))
    );
    assert_eq!(second_here.merchants, second.merchants);
    let here = held(store.as_ref());
    assert_same(&here, &held(reference.as_ref()));
    // No transaction cleared twice for the same change: one line per (transaction, seq), the
    // late reversals a second line of their own.
    let mut keys: Vec<(i64, u32)> = here.lines.iter().map(|l| (l.0, l.1)).collect();
    keys.dedup();
    assert_eq!(keys.len(), here.lines.len());
    assert!(audit(store.as_ref()).unwrap().balanced);

    // And a further run has nothing left to do.
    let again = settle_date_with(store.as_ref(), &directory, D, 3_000, &config()).unwrap();
    assert!(!again.changed, "{again:?}");
}

#[test]
fn a_run_stopped_after_its_last_part_is_recorded_by_the_next_with_the_totals() {
    // Every line written, the postings and record not (the disk filled at the last submission,
    // or the process died before it): the next run has no line to write, and still posts the
    // lines and records the date, with the totals the pages read.
    let directory = IssuerDirectory::embedded().unwrap();
    let whole_day = ClearingConfig {
        lines_per_commit: usize::MAX,
        pause_between_parts: Duration::ZERO,
    };
    let (reference_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (reference, store) = (open_store(&reference_dir), open_store(&dir));
    first_journal(reference.as_ref());
    let whole = settle_date_with(reference.as_ref(), &directory, D, 1_000, &whole_day).unwrap();

    // What the stopped run left: its lines, no posting, no record.
    first_journal(store.as_ref());
    let rows = store.txns_on(D).unwrap();
    let mut classifier = settlement::CardClassifier::new(&directory);
    let no_plans = std::collections::HashMap::new();
    let cleared = settlement::clear(
        &rows,
        &[],
        &std::collections::HashMap::new(),
        &no_plans,
        &mut classifier,
        D,
        900,
    )
    .unwrap();
    let lines = Record::Settlement(store::settlement::SettlementRecord::ClearingLines(
        cleared.lines,
    ));
    store.submit(vec![lines]).unwrap().wait().unwrap();
    assert!(store.settle_runs(Some(D)).unwrap().is_empty());
    assert!(store.clearing_totals(None, 10).unwrap().is_empty());

    let done = settle_date_with(store.as_ref(), &directory, D, 1_000, &whole_day).unwrap();
    assert_eq!(
        (done.changed, done.run_no, done.resumed_lines),
        (true, Some(1), whole.new_lines)
    );
    assert_eq!(
        (done.new_lines, done.new_postings, &done.merchants),
        (whole.new_lines, whole.new_postings, &whole.merchants)
    );
    assert_same(&held(store.as_ref()), &held(reference.as_ref()));
    let again = settle_date_with(store.as_ref(), &directory, D, 2_000, &whole_day).unwrap();
    assert!(!again.changed, "{again:?}");
}
