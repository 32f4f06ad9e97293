//! End-to-end authorisations per second over loopback: terminals → switch → in-process issuer,
//! with the SQLite journal on (durable, synchronous=FULL) and off, to measure its cost.
//! Run: `cargo bench -p switch --bench authorise`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

const CONNECTIONS: u32 = 16;
const WINDOW: u32 = 32;
const PER_CONNECTION: u32 = 4_000;

async fn run(journal: bool) -> f64 {
    let mut h = Harness::new().await;
    h.stop().await;
    let mut config = h.config();
    config.journal = journal;
    let handle = switch::Switch::start(
        config,
        h.store.clone() as std::sync::Arc<dyn store::Store>,
        h.hsm.clone() as std::sync::Arc<dyn paycrypto::Hsm>,
        h.directory.clone(),
        std::sync::Arc::new(switch::SystemClock),
    )
    .await
    .unwrap();
    while !handle.issuer_connected("SIM") {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    h.switch = Some(handle);
    let mut first = h.terminal().await;
    assert_eq!(first.sign_in().await.code(), "00");
    let keys = first.keys.clone();
    let pan = card("622202");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut t = h.terminal().await;
        t.keys = keys.clone();
        let pan = pan.clone();
        tasks.push(tokio::spawn(async move {
            let mut stan = c * 50_000 + 1;
            let mut approved = 0u32;
            for _ in 0..PER_CONNECTION / WINDOW {
                let mut bytes = Vec::new();
                for _ in 0..WINDOW {
                    bytes.extend_from_slice(&t.encode(&Req::purchase(&pan, 100, stan), false));
                    stan += 1;
                }
                use tokio::io::AsyncWriteExt;
                t.stream.write_all(&bytes).await.unwrap();
                for _ in 0..WINDOW {
                    if t.read().await.code() == "00" {
                        approved += 1;
                    }
                }
            }
            approved
        }));
    }
    let mut approved = 0;
    for task in tasks {
        approved += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = f64::from(approved) / elapsed;
    println!(
        "journal={journal}: {approved} approved of {} in {elapsed:.2} s = {rate:.0} authorisations/s",
        CONNECTIONS * PER_CONNECTION
    );
    h.stop().await;
    rate
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let on = runtime.block_on(run(true));
    let off = runtime.block_on(run(false));
    println!("journal cost: {:.1} %", (1.0 - on / off) * 100.0);
}
