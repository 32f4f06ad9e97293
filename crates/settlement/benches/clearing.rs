//! Clearing and ledger posting of 1,000,000 journal transactions into a real SQLite file:
//! per-transaction fees and clearing lines, per-merchant balanced postings, written in chunks of
//! `CHUNK` transactions, one group commit each. Prints transactions/s and postings/s.
//!
//! `cargo bench -p settlement --bench clearing` (release); `-- 200000` for a smaller run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::time::Instant;

use domain::IssuerDirectory;
use settlement::clearing::{CardClassifier, clear};
use settlement::ledger::posting_record;
use store::settlement::SettlementRecord;
use store::{PanAtRest, Record, SqliteConfig, SqliteStore, Store, TxnKind, TxnRow, TxnState};

const CHUNK: usize = 100_000;
const MERCHANTS: usize = 1_000;
const ISSUERS: [&str; 6] = ["ICBC", "ABC", "CCB", "BOC", "CMB", "VISA"];
const BINS: [&str; 6] = ["622202", "622848", "625965", "621661", "622588", "411111"];
const DATE: &str = "20261123";

fn row(id: i64) -> TxnRow {
    let n = usize::try_from(id).unwrap();
    // Mostly purchases, some voids and refunds, a few reversed.
    let (kind, state) = match n % 20 {
        0 => (TxnKind::PurchaseVoid, TxnState::Approved),
        1 => (TxnKind::Refund, TxnState::Approved),
        2 => (TxnKind::Purchase, TxnState::Reversed),
        3 => (TxnKind::Purchase, TxnState::Voided),
        _ => (TxnKind::Purchase, TxnState::Approved),
    };
    let bin = BINS[n % BINS.len()];
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: format!("8983100581{:05}", n % MERCHANTS),
        batch_no: 1,
        stan: 1,
        kind,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: i64::try_from(100 + (n * 7_919) % 500_000).unwrap(),
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: Vec::new(),
            fingerprint: Vec::new(),
            masked: String::new(),
            last4: String::new(),
            bin: bin.into(),
        }),
        issuer: Some(ISSUERS[n % ISSUERS.len()].into()),
        rrn: None,
        host_trace: None,
        auth_code: None,
        response_code: None,
        state,
        request_hash: Vec::new(),
        original_id: None,
        refunded_fen: 0,
        field60: None,
        host_date: None,
        clearing_date: DATE.into(),
        settlement_date: None,
        received_at_ms: 0,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("bench.db"))).unwrap();
    let directory = IssuerDirectory::embedded().unwrap();
    let mut classifier = CardClassifier::new(&directory);
    let plans = HashMap::new();

    let mut generate_s = 0.0;
    let mut clear_s = 0.0;
    let mut write_s = 0.0;
    let (mut lines, mut postings, mut legs) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut next = 1i64;
    while usize::try_from(next - 1).unwrap() < total {
        let t = Instant::now();
        let n = CHUNK.min(total - usize::try_from(next - 1).unwrap());
        let rows: Vec<TxnRow> = (next..next + i64::try_from(n).unwrap()).map(row).collect();
        next += i64::try_from(n).unwrap();
        generate_s += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let cleared = clear(
            &rows,
            &[],
            &HashMap::new(),
            &plans,
            &mut classifier,
            DATE,
            0,
        )
        .unwrap();
        lines += cleared.lines.len();
        postings += cleared.postings.len();
        legs += cleared.postings.iter().map(|p| p.legs.len()).sum::<usize>();
        let mut records = vec![Record::Settlement(SettlementRecord::ClearingLines(
            cleared.lines,
        ))];
        records.extend(posting_record(&store, cleared.postings, 0).unwrap());
        clear_s += t.elapsed().as_secs_f64();

        let t = Instant::now();
        store.submit(records).unwrap().wait().unwrap();
        write_s += t.elapsed().as_secs_f64();
    }
    let elapsed = started.elapsed().as_secs_f64() - generate_s;
    let audit = settlement::audit(&store).unwrap();
    assert!(audit.balanced, "ledger does not balance");
    println!(
        "{total} transactions: {lines} clearing lines, {postings} postings ({legs} legs) in \
         {elapsed:.2} s (clearing {clear_s:.2} s, SQLite write {write_s:.2} s; row generation \
         {generate_s:.2} s not counted)"
    );
    println!(
        "{:.0} transactions/s cleared and posted; ledger audit over the store: balanced",
        f64::from(u32::try_from(total).unwrap()) / elapsed
    );
}
