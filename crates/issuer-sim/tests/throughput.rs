//! Throughput of several issuer hosts over loopback with file-backed ledgers. Ignored by
//! default (it is a measurement); run with
//! `cargo test -p issuer-sim --release --test throughput -- --ignored --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use iso8583::{Field60, FrameHead, Header, MessageBuilder, Mti, Tpdu};
use issuer_sim::{
    HsmPinVerifier, Issuer, IssuerConfig, IssuerSim, LedgerLocation, SystemClock, TxnKind,
    demo_accounts, demo_cards_with,
};
use paycrypto::{
    DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyUsage, MasterKey, PanDigits, SoftHsm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ZPK: &str = "0123456789ABCDEFFEDCBA9876543210";
const BANKS: [&str; 4] = ["ICBC", "ABC", "BOC", "CCB"];
const PER_ISSUER: u32 = 30_000;
const WINDOW: usize = 256;

fn frames(bank_index: u64, cards: &[issuer_sim::DemoCard]) -> Vec<Vec<u8>> {
    let key = Key::from_hex(KeyAlgorithm::Des, ZPK).unwrap();
    let healthy: Vec<_> = cards.iter().filter(|c| c.label == "healthy").collect();
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 0],
            source: [0, 1],
        },
        header: Header::from_bytes([0x60, 0, 0, 0, 0, 0]).unwrap(),
    };
    (0..PER_ISSUER)
        .map(|i| {
            let card = healthy[usize::try_from(i).unwrap() % healthy.len()];
            let digits = PanDigits::from_pan(card.pan.expose_digits()).unwrap();
            let block = paycrypto::pin::encrypt(&key, card.pin(), &digits).unwrap();
            let (_, proc, cond, _) = TxnKind::Purchase.wire();
            let mut m = MessageBuilder::new(Mti::FINANCIAL);
            m.set_digits(2, card.pan.expose_digits()).unwrap();
            m.set_digits(3, proc).unwrap();
            m.set_amount(100).unwrap();
            m.set_stan(i % 1_000_000).unwrap();
            m.set_digits(13, "0630").unwrap();
            m.set_digits(22, "021").unwrap();
            m.set_digits(25, cond).unwrap();
            m.set_text(37, &format!("{:02}{:010}", bank_index, i))
                .unwrap();
            m.set_text(41, "T0000001").unwrap();
            m.set_text(42, "M00000000000001").unwrap();
            m.set_text(49, "156").unwrap();
            m.set_binary(52, block.as_bytes()).unwrap();
            m.set_composed(&Field60 {
                message_type: 22,
                batch: Some(1),
                ..Field60::default()
            })
            .unwrap();
            let mut out = Vec::new();
            m.encode_frame(&head, &mut out).unwrap();
            out
        })
        .collect()
}

async fn drive(addr: std::net::SocketAddr, frames: Vec<Vec<u8>>) -> u64 {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let total = frames.len();
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(WINDOW);
    for _ in 0..WINDOW {
        credit_tx.send(()).await.unwrap();
    }
    let writer = tokio::spawn(async move {
        for f in frames {
            credit_rx.recv().await.unwrap();
            wr.write_all(&f).await.unwrap();
        }
        wr
    });
    let mut approved = 0u64;
    for _ in 0..total {
        let mut prefix = [0u8; 2];
        rd.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        rd.read_exact(&mut body).await.unwrap();
        let frame = iso8583::Frame::decode_unprefixed(&body).unwrap();
        if frame.message.text(39) == Some("00") {
            approved += 1;
        }
        let _ = credit_tx.try_send(());
    }
    drop(writer.await.unwrap());
    approved
}

#[test]
#[ignore = "measurement; run explicitly"]
fn authorisations_per_second_across_issuers() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("issuer-sim-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    runtime.block_on(async {
        let mut servers = Vec::new();
        let mut loads = Vec::new();
        for (index, bank) in (0u64..).zip(BANKS) {
            let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(
                &MasterKey::from_bytes([1; 32]),
                Box::new(DeterministicRandom::new(index)),
            ));
            let zpk = hsm
                .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, ZPK)
                .unwrap();
            let pins = HsmPinVerifier::new(hsm, zpk);
            let cards = demo_cards_with(bank, 64).unwrap();
            let accounts = demo_accounts(&cards, &pins).unwrap();
            let path = dir.join(format!("{bank}.sqlite"));
            let _ = std::fs::remove_file(&path);
            let config = IssuerConfig {
                ledger: LedgerLocation::File(path),
                ..IssuerConfig::in_memory(bank)
            };
            let issuer =
                Issuer::open(config, accounts, Arc::new(pins), Arc::new(SystemClock)).unwrap();
            let sim = IssuerSim::new(Arc::new(issuer), 1);
            let server = sim
                .serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
                .unwrap();
            loads.push((server.local_addr(), frames(index, &cards)));
            servers.push((sim, server));
        }
        let started = Instant::now();
        let tasks: Vec<_> = loads
            .into_iter()
            .map(|(addr, f)| tokio::spawn(drive(addr, f)))
            .collect();
        let mut approved = 0;
        for t in tasks {
            approved += t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let total = u64::from(PER_ISSUER) * u64::try_from(BANKS.len()).unwrap();
        let rate = total as f64 / elapsed.as_secs_f64();
        println!(
            "{total} authorisations over {} issuers in {:.2}s: {rate:.0}/s ({approved} approved)",
            BANKS.len(),
            elapsed.as_secs_f64()
        );
        assert_eq!(approved, total);
        let flush = Instant::now();
        for (sim, server) in servers {
            server.shutdown().await;
            assert_eq!(
                sim.issuer().approvals().unwrap().len(),
                usize::try_from(PER_ISSUER).unwrap()
            );
        }
        println!("ledger flush and check: {:?}", flush.elapsed());
        assert!(elapsed < Duration::from_secs(600));
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
