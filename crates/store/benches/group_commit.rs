//! Group-commit throughput: many concurrent submitters, each awaiting durability of a purchase's
//! two journal writes (request, then outcome + event), as the switch does.
//! Run: `cargo bench -p store --bench group_commit` (prints records/s; not a test). With
//! `SHOUDAN_PG_URL` set (`scripts/pg -- cargo bench ...`) PostgreSQL runs too, in a fresh schema.

use std::sync::Arc;
use std::time::Instant;

use store::{
    EventRow, Outcome, PanAtRest, PgConfig, PgStore, Record, SqliteConfig, SqliteStore, Store,
    Synchronous, TxnKind, TxnRow, TxnState,
};

const SUBMITTERS: i64 = 256;
const PER_SUBMITTER: i64 = 200;

fn row(id: i64) -> TxnRow {
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: "898110048990001".into(),
        batch_no: 1,
        stan: u32::try_from(id % 1_000_000).unwrap_or(0),
        kind: TxnKind::Purchase,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen: 100,
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: vec![9; 44],
            fingerprint: vec![7; 32],
            masked: "622202******0123".into(),
            last4: "0123".into(),
            bin: "622202".into(),
        }),
        issuer: Some("ICBC".into()),
        rrn: Some(format!("{id:012}")),
        host_trace: Some(1),
        auth_code: None,
        response_code: None,
        state: TxnState::InFlight,
        request_hash: vec![1; 16],
        original_id: None,
        refunded_fen: 0,
        field60: Some("22000001".into()),
        host_date: Some("1123".into()),
        clearing_date: "20261123".into(),
        settlement_date: None,
        received_at_ms: id,
        sent_at_ms: Some(id),
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

fn run_sqlite(synchronous: Synchronous) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = SqliteConfig::new(dir.path().join("bench.db"));
    config.synchronous = synchronous;
    let store = Arc::new(SqliteStore::open(&config)?);
    run(
        &format!("sqlite synchronous={synchronous:?}"),
        store.clone(),
    )?;
    store.close();
    Ok(())
}

fn run_postgres(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let schema = format!("bench_{}", std::process::id());
    let config = PgConfig {
        url: url.to_owned(),
        schema: Some(schema.clone()),
    };
    let store = Arc::new(PgStore::open(&config)?);
    let result = run("postgres", store.clone());
    store.close();
    drop(store);
    PgStore::drop_schema(url, &schema)?;
    result
}

fn run(label: &str, store: Arc<dyn Store>) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let started = Instant::now();
    let records = runtime.block_on(async {
        let mut handles = Vec::new();
        for submitter in 0..SUBMITTERS {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                let mut records = 0_u64;
                for n in 0..PER_SUBMITTER {
                    let id = submitter * PER_SUBMITTER + n + 1;
                    store
                        .submit(vec![Record::InsertTxn(Box::new(row(id)))])?
                        .await?;
                    store
                        .submit(vec![
                            Record::Outcome(Outcome {
                                id,
                                state: TxnState::Approved,
                                response_code: "00".into(),
                                auth_code: Some("123456".into()),
                                settlement_date: Some("1123".into()),
                                issuer_answered_at_ms: Some(id),
                                answered_at_ms: id,
                            }),
                            Record::Event(EventRow {
                                txn_id: id,
                                at_ms: id,
                                kind: "approved".into(),
                                detail: "approved by ICBC".into(),
                            }),
                        ])?
                        .await?;
                    records += 3;
                }
                Ok::<u64, store::StoreError>(records)
            }));
        }
        let mut total = 0;
        for handle in handles {
            total += handle.await.map_err(|e| e.to_string())??;
        }
        Ok::<u64, Box<dyn std::error::Error>>(total)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let purchases = SUBMITTERS * PER_SUBMITTER;
    println!(
        "{label}: {records} records, {purchases} purchases in {elapsed:.2} s: \
         {:.0} records/s, {:.0} purchases/s",
        records as f64 / elapsed,
        purchases as f64 / elapsed
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run_sqlite(Synchronous::Full)?;
    run_sqlite(Synchronous::Normal)?;
    if let Ok(url) = std::env::var("SHOUDAN_PG_URL") {
        run_postgres(&url)?;
    }
    Ok(())
}
