//! What a switch reads from its journal when it starts: the last two clearing days whole
//! (`txns_since`, and `each_txn_since` as a start reads them) and the month before as one mark per terminal batch (`batches_cleared`).
//! Both should cost what those days hold, not what the whole journal holds.
//! Run: `cargo bench -p store --bench start_reads` (prints milliseconds; not a test).
//! `SHOUDAN_BENCH_PER_DAY` sets the purchases per clearing day (default 20,000) and
//! `SHOUDAN_BENCH_DAYS` the clearing days the journal holds (default 33, at least 32), over 64
//! terminals, one batch per terminal a day.

use std::time::Instant;

use store::{
    PanAtRest, Record, SqliteConfig, SqliteStore, Store, Synchronous, TxnKind, TxnRow, TxnState,
};

const TERMINALS: i64 = 64;
/// 2026-11-01, the first clearing day of the journal (days since 1970-01-01).
const FIRST_DAY: i64 = 20_758;

fn date(day: i64) -> String {
    let (y, m, d) = domain::date::civil_from_days(day);
    format!("{y:04}{m:02}{d:02}")
}

fn row(id: i64, day: i64, per_day: i64, n: i64) -> TxnRow {
    let terminal = n % TERMINALS;
    TxnRow {
        id,
        tid: format!("{:08}", 10_000_001 + terminal),
        mid: "898110048990001".into(),
        batch_no: u32::try_from(day - FIRST_DAY + 1).unwrap_or(0),
        stan: u32::try_from(n / TERMINALS + 1).unwrap_or(0),
        kind: TxnKind::Purchase,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: 100 + n % 5_000,
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: vec![9; 44],
            fingerprint: (0..32).map(|b| (id.wrapping_mul(31) + b) as u8).collect(),
            masked: "622202******0123".into(),
            last4: "0123".into(),
            bin: "622202".into(),
        }),
        issuer: Some("ICBC".into()),
        rrn: Some(format!("{id:012}")),
        host_trace: Some(u32::try_from(n % 1_000_000).unwrap_or(0)),
        auth_code: Some("123456".into()),
        response_code: Some("00".into()),
        state: TxnState::Approved,
        request_hash: vec![1; 16],
        original_id: None,
        refunded_fen: 0,
        field60: Some("22000001".into()),
        host_date: Some(date(day)[4..].to_owned()),
        clearing_date: date(day),
        settlement_date: Some(date(day)[4..].to_owned()),
        received_at_ms: day * 86_400_000 + n * 86_400_000 / per_day,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: Some(day * 86_400_000 + n * 86_400_000 / per_day),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setting = |name: &str, default: i64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let per_day = setting("SHOUDAN_BENCH_PER_DAY", 20_000);
    let days = setting("SHOUDAN_BENCH_DAYS", 33).max(32);
    let dir = tempfile::tempdir()?;
    let mut config = SqliteConfig::new(dir.path().join("start.db"));
    config.synchronous = Synchronous::Normal;
    let store = SqliteStore::open(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let started = Instant::now();
    let mut id = 0;
    for day in FIRST_DAY..FIRST_DAY + days {
        let mut records = Vec::new();
        for n in 0..per_day {
            id += 1;
            records.push(Record::InsertTxn(Box::new(row(id, day, per_day, n))));
            if records.len() == 5_000 {
                runtime.block_on(store.submit(std::mem::take(&mut records))?)?;
            }
        }
        if !records.is_empty() {
            runtime.block_on(store.submit(records)?)?;
        }
    }
    println!(
        "journal: {id} purchases over {days} clearing days, {TERMINALS} terminals, written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let last = FIRST_DAY + days - 1;
    let (held_since, marked_since) = (date(last - 1), date(last - 31));
    for round in 1..=3 {
        let t = Instant::now();
        let held = store.txns_since(&held_since)?;
        let held_ms = t.elapsed().as_secs_f64() * 1e3;
        // What a start does with them: one at a time (a page at a time from the store).
        let t = Instant::now();
        let mut streamed = 0_usize;
        store.each_txn_since(&held_since, &mut |_| streamed += 1)?;
        let each_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let batches = store.batches_cleared(&marked_since, &held_since)?;
        let marks_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "round {round}: txns_since({held_since}) {} rows in {held_ms:.0} ms; \
             each_txn_since {streamed} rows in {each_ms:.0} ms; \
             batches_cleared({marked_since}..{held_since}) {} batches in {marks_ms:.0} ms",
            held.len(),
            batches.len()
        );
    }
    store.close();
    Ok(())
}
