//! The terminal against a host of its own over real TCP: an answer that comes after the
//! terminal gave up does not answer its next request (the connection is renewed), and an
//! approval without a MAC is not taken as one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iso8583::{Frame, FrameHead, MessageBuilder, Mti};
use paycrypto::{Key, KeyAlgorithm, KeyScheme, MacAlgorithm, WorkingKeys};
use terminal::{Card, Request, Terminal, TerminalConfig, TerminalError, TxnType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const PIK: &str = "1111111111111111222222222222222F";
const MAK: &str = "3333333333333333444444444444444F";
/// Answered after the terminal's timeout.
const LATE: u64 = 101;
/// Approved without a MAC.
const UNMACED: u64 = 202;

fn keys() -> WorkingKeys {
    WorkingKeys {
        pik: Key::from_hex(KeyAlgorithm::Des, PIK).unwrap(),
        mak: Key::from_hex(KeyAlgorithm::Des, MAK).unwrap(),
        tdk: None,
    }
}

/// Answers each request; counts connections.
async fn host(connections: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream) {
    let tmk = Key::from_hex(KeyAlgorithm::Des, TMK).unwrap();
    let mak = keys().mak;
    let mut sign_ins = 0;
    loop {
        let mut prefix = [0u8; 2];
        if stream.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut body).await.unwrap();
        let frame = Frame::decode_unprefixed(&body).unwrap();
        let request = &frame.message;
        let mut out = MessageBuilder::new(request.mti().response().unwrap());
        for n in [3, 4, 11, 25, 41, 42, 49, 60] {
            out.copy_from(request, n).unwrap();
        }
        if request.mti() == Mti::NETWORK {
            sign_ins += 1;
        }
        // The second sign-in on a connection is refused (58: nothing changed at the host).
        let refused = request.mti() == Mti::NETWORK && sign_ins == 2;
        out.set_text(39, if refused { "58" } else { "00" }).unwrap();
        let head = FrameHead {
            tpdu: frame.head.tpdu.reply(),
            header: frame.head.header,
        };
        let mut bytes = Vec::new();
        if request.mti() == Mti::NETWORK {
            let mut f62 =
                paycrypto::field62::encode_field62(&tmk, KeyScheme::Double, &keys()).unwrap();
            // The third: the MAK's check value garbled on the way.
            if sign_ins == 3
                && let Some(kcv) = f62.last_mut()
            {
                *kcv ^= 0xFF;
            }
            if !refused {
                out.set_binary(62, &f62).unwrap();
            }
            out.encode_frame(&head, &mut bytes).unwrap();
        } else if request.amount() == Some(UNMACED) {
            out.encode_frame(&head, &mut bytes).unwrap();
        } else {
            out.set_text(37, "000000000001").unwrap();
            out.encode_frame_with_mac(&head, &mut bytes, |data| {
                Ok::<_, iso8583::EncodeError>(
                    paycrypto::mac::compute(MacAlgorithm::CupEcb, &mak, data).unwrap(),
                )
            })
            .unwrap();
        }
        if request.mti() == Mti::FINANCIAL && request.amount() == Some(LATE) {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// A terminal of the test's host at `addr`, giving up on an answer after `timeout`.
fn config(addr: SocketAddr, timeout: Duration) -> TerminalConfig {
    TerminalConfig {
        addr,
        tid: "10000001".into(),
        mid: "898110048990001".into(),
        tmk: Key::from_hex(KeyAlgorithm::Des, TMK).unwrap(),
        scheme: KeyScheme::Double,
        mac: MacAlgorithm::CupEcb,
        batch: 1,
        next_stan: 1,
        timeout,
    }
}

fn purchase(amount: u64) -> Request {
    Request {
        txn: TxnType::Purchase,
        card: Card {
            pan: "6222020000000000018".parse().unwrap(),
            expiry: None,
            pin: None,
        },
        amount,
        original: None,
    }
}

#[test]
fn a_late_answer_does_not_answer_the_next_request_and_an_unmaced_approval_is_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connections = Arc::new(AtomicUsize::new(0));
        let addr = host(Arc::clone(&connections)).await;
        let mut t = Terminal::connect(config(addr, Duration::from_millis(150)))
            .await
            .unwrap();
        assert!(t.sign_in().await.unwrap().approved());
        assert!(t.transact(&purchase(500)).await.unwrap().approved());
        // No answer in time: the terminal gives up; its reversal goes out on a new
        // connection and gets its own answer, not the purchase's late one.
        assert!(matches!(
            t.transact(&purchase(LATE)).await,
            Err(TerminalError::Timeout(_))
        ));
        let reversal = t.reverse_last("98").await.unwrap();
        assert!(reversal.approved());
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert!(t.transact(&purchase(600)).await.unwrap().approved());
        // "00" with no MAC: not an approval the terminal can stand behind.
        assert!(matches!(
            t.transact(&purchase(UNMACED)).await,
            Err(TerminalError::ResponseMac)
        ));
    });
}

/// A sign-in refused (58) leaves the terminal its keys: the host changed nothing. One whose keys
/// fail their check values leaves it signed out, not holding the keys of the sign-in before
/// (which the host dropped as it issued the new ones). A saved request's `Debug` shows no expiry.
#[test]
fn a_sign_in_whose_keys_fail_their_check_leaves_no_keys_behind() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = host(Arc::new(AtomicUsize::new(0))).await;
        let mut t = Terminal::connect(config(addr, Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(t.sign_in().await.unwrap().approved());
        let mut with_expiry = purchase(700);
        with_expiry.card.expiry = Some("3012".into());
        assert!(t.transact(&with_expiry).await.unwrap().approved());
        let shown = format!("{:?}", t.last_request().unwrap());
        assert!(!shown.contains("3012"), "{shown}");
        assert!(matches!(
            t.sign_in().await,
            Err(TerminalError::SignInRefused(code)) if code == "58"
        ));
        assert!(t.is_signed_in(), "a refused sign-in dropped the keys");
        assert!(t.transact(&purchase(800)).await.unwrap().approved());
        assert!(t.sign_in().await.is_err());
        assert!(!t.is_signed_in());
    });
}
