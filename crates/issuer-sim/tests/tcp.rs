//! The issuer host over loopback TCP: real frames, PIN blocks under the ZPK, many requests on
//! one link, replies out of order under latency, dropped replies, disconnects, 96 and shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iso8583::{Field60, Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};
use issuer_sim::{
    Date, DemoCard, HsmPinVerifier, IssuerSim, LedgerLocation, ManualClock, ServerHandle, TxnKind,
    demo_issuer,
};
use paycrypto::{
    DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyUsage, MasterKey, PanDigits, SoftHsm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ZPK: &str = "0123456789ABCDEFFEDCBA9876543210";
const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    sim: IssuerSim,
    server: ServerHandle,
    cards: Vec<DemoCard>,
}

async fn start() -> Harness {
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(
        &MasterKey::from_bytes([3; 32]),
        Box::new(DeterministicRandom::new(11)),
    ));
    let zpk = hsm
        .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, ZPK)
        .unwrap();
    let pins = HsmPinVerifier::new(hsm, zpk);
    let clock = ManualClock::at(Date::new(2025, 6, 30).unwrap(), 12 * 3600);
    let (issuer, cards) =
        demo_issuer("ICBC", 4, pins, LedgerLocation::Memory, Arc::new(clock)).unwrap();
    let sim = IssuerSim::new(Arc::new(issuer), 42);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = sim.serve(listener).unwrap();
    Harness { sim, server, cards }
}

impl Harness {
    fn card(&self, label: &str) -> &DemoCard {
        self.cards.iter().find(|c| c.label == label).unwrap()
    }

    fn healthy(&self, n: usize) -> &DemoCard {
        self.cards
            .iter()
            .filter(|c| c.label == "healthy")
            .nth(n)
            .unwrap()
    }

    async fn connect(&self) -> Link {
        Link {
            stream: TcpStream::connect(self.server.local_addr()).await.unwrap(),
        }
    }

    fn balance(&self, card: &DemoCard) -> (i64, i64) {
        self.sim.issuer().balance(&card.pan).unwrap()
    }
}

fn head() -> FrameHead {
    FrameHead {
        tpdu: Tpdu {
            destination: [0x00, 0x00],
            source: [0x00, 0x01],
        },
        header: Header::from_bytes([0x60, 0x00, 0x00, 0x00, 0x00, 0x00]).unwrap(),
    }
}

/// A request as the switch sends it on the issuer link.
fn request(kind: TxnKind, card: &DemoCard, amount: u64, trace: u32, rrn: u64) -> MessageBuilder {
    let (mti, proc, cond, msg_type) = kind.wire();
    let mut m = MessageBuilder::new(mti.parse::<Mti>().unwrap());
    m.set_digits(2, card.pan.expose_digits()).unwrap();
    m.set_digits(3, proc).unwrap();
    m.set_amount(amount).unwrap();
    m.set_stan(trace).unwrap();
    m.set_digits(12, "120000").unwrap();
    m.set_digits(13, "0630").unwrap();
    m.set_digits(14, &card.expiry.yymm()).unwrap();
    m.set_digits(22, "021").unwrap();
    m.set_digits(25, cond).unwrap();
    m.set_digits(32, "48020000").unwrap();
    m.set_text(37, &format!("{rrn:012}")).unwrap();
    m.set_text(41, "T0000001").unwrap();
    m.set_text(42, "M00000000000001").unwrap();
    m.set_text(49, "156").unwrap();
    let msg_type: u8 = msg_type.parse().unwrap();
    m.set_composed(&Field60 {
        message_type: msg_type,
        batch: Some(1),
        ..Field60::default()
    })
    .unwrap();
    m
}

fn with_pin(mut m: MessageBuilder, card: &DemoCard, pin: &str) -> MessageBuilder {
    let key = Key::from_hex(KeyAlgorithm::Des, ZPK).unwrap();
    let digits = PanDigits::from_pan(card.pan.expose_digits()).unwrap();
    let block = paycrypto::pin::encrypt(&key, pin, &digits).unwrap();
    m.set_binary(52, block.as_bytes()).unwrap();
    m.set_digits(53, "2600000000000000").unwrap();
    m
}

fn purchase(card: &DemoCard, trace: u32, rrn: u64) -> MessageBuilder {
    with_pin(
        request(TxnKind::Purchase, card, 100, trace, rrn),
        card,
        card.pin(),
    )
}

/// The reversal the switch builds from `purchase`.
fn reversal_of(card: &DemoCard, trace: u32, rrn: u64) -> MessageBuilder {
    let mut m = request(TxnKind::Purchase, card, 100, trace, rrn);
    m.set_mti(Mti::REVERSAL);
    m.remove(12).remove(14).remove(22).remove(32);
    m.set_text(39, "98").unwrap();
    m
}

fn echo(trace: u32) -> MessageBuilder {
    let mut m = MessageBuilder::new(Mti::NETWORK_ADVICE);
    m.set_stan(trace).unwrap();
    m.set_composed(&Field60 {
        message_type: 0,
        batch: Some(0),
        network_code: Some(301),
        ..Field60::default()
    })
    .unwrap();
    m
}

/// What the test keeps of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    mti: u16,
    trace: u32,
    code: String,
    rrn: Option<String>,
    auth: Option<String>,
    balance: Option<String>,
    settlement: Option<String>,
    tpdu: Tpdu,
}

struct Link {
    stream: TcpStream,
}

impl Link {
    async fn send(&mut self, m: &MessageBuilder) {
        let mut out = Vec::new();
        m.encode_frame(&head(), &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next reply, or `None` if none comes within `wait` or the link closed.
    async fn recv_within(&mut self, wait: Duration) -> Option<Answer> {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(wait, self.stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        self.stream.read_exact(&mut body).await.unwrap();
        let frame = Frame::decode_unprefixed(&body).unwrap();
        let m = &frame.message;
        let text = |n| m.text(n).map(str::to_owned);
        let digits = |n| {
            m.digits(n).map(|d| {
                let mut s = String::new();
                d.write_to(&mut s).unwrap();
                s
            })
        };
        Some(Answer {
            mti: m.mti().value(),
            trace: m.stan().unwrap(),
            code: text(39).unwrap(),
            rrn: text(37),
            auth: text(38),
            balance: text(54),
            settlement: digits(15),
            tpdu: frame.head.tpdu,
        })
    }

    async fn recv(&mut self) -> Answer {
        self.recv_within(WAIT).await.expect("a reply")
    }

    /// True when the server closed the link (end of stream) within `WAIT`.
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(WAIT, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

#[tokio::test]
async fn purchase_with_pin_over_tcp() {
    let h = start().await;
    let card = h.healthy(0);
    let before = h.balance(card);
    let mut link = h.connect().await;
    link.send(&purchase(card, 1, 100_000_000_001)).await;
    let a = link.recv().await;
    assert_eq!((a.mti, a.trace, a.code.as_str()), (210, 1, "00"));
    assert_eq!(a.rrn.as_deref(), Some("100000000001"));
    assert_eq!(a.auth.as_ref().map(String::len), Some(6));
    assert_eq!(a.settlement.as_deref(), Some("0630"));
    assert_eq!(a.tpdu, head().tpdu.reply());
    assert_eq!(h.balance(card), (before.0 - 100, 0));

    // Wrong PIN, then a balance inquiry with its field 54.
    link.send(&with_pin(
        request(TxnKind::Purchase, card, 100, 2, 2),
        card,
        "000000",
    ))
    .await;
    let a = link.recv().await;
    assert_eq!(
        (a.trace, a.code.as_str(), a.auth.as_deref()),
        (2, "55", None)
    );
    link.send(&with_pin(
        request(TxnKind::BalanceInquiry, card, 0, 3, 3),
        card,
        card.pin(),
    ))
    .await;
    let a = link.recv().await;
    assert_eq!((a.trace, a.code.as_str()), (3, "00"));
    assert_eq!(
        a.balance.unwrap(),
        format!("0002156C{:012}", before.0 - 100)
    );

    // Every decline card answers its code over the wire too.
    for (n, card) in (10..).zip(&h.cards) {
        link.send(&purchase(card, n, u64::from(n))).await;
        let a = link.recv().await;
        assert_eq!(
            (a.trace, a.code.as_str()),
            (n, card.purchase_code.as_str()),
            "{}",
            card.label
        );
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn void_and_refund_find_their_original_through_field_61() {
    let h = start().await;
    let card = h.card("no_pre_auth_or_refund");
    let before = h.balance(card);
    let mut link = h.connect().await;
    link.send(&purchase(card, 1, 700_000_000_001)).await;
    assert_eq!(link.recv().await.code, "00");
    let linked = |kind, trace, rrn: u64, original: &str| {
        let mut m = request(kind, card, 100, trace, rrn);
        m.set_digits(61, original).unwrap();
        m
    };
    // Refunds are not allowed on this card; a void is.
    link.send(&linked(TxnKind::Refund, 2, 2, "7000000000010630"))
        .await;
    assert_eq!(link.recv().await.code, "57");
    link.send(&linked(TxnKind::PurchaseVoid, 3, 3, "7000000000010101"))
        .await;
    assert_eq!(
        link.recv().await.code,
        "25",
        "original date in 61 does not match"
    );
    link.send(&linked(TxnKind::PurchaseVoid, 4, 4, "70000000000106"))
        .await;
    assert_eq!(link.recv().await.code, "30", "61 too short");
    link.send(&linked(TxnKind::PurchaseVoid, 5, 5, "7000000000010630"))
        .await;
    let a = link.recv().await;
    assert_eq!((a.mti, a.trace, a.code.as_str()), (210, 5, "00"));
    assert_eq!(h.balance(card), before);
    h.server.shutdown().await;
}

#[tokio::test]
async fn echo_unknown_and_malformed_requests() {
    let h = start().await;
    let mut link = h.connect().await;
    link.send(&echo(77)).await;
    let a = link.recv().await;
    assert_eq!((a.mti, a.trace, a.code.as_str()), (830, 77, "00"));
    // A sign-in is not something an issuer does: 12.
    let mut sign_in = echo(78);
    sign_in.set_mti(Mti::NETWORK);
    sign_in
        .set_composed(&Field60 {
            message_type: 0,
            batch: Some(0),
            network_code: Some(3),
            ..Field60::default()
        })
        .unwrap();
    link.send(&sign_in).await;
    let a = link.recv().await;
    assert_eq!((a.mti, a.trace, a.code.as_str()), (810, 78, "12"));
    // A purchase without its RRN: format error, still matched by trace.
    let mut no_rrn = purchase(h.healthy(0), 79, 79);
    no_rrn.remove(37);
    link.send(&no_rrn).await;
    let a = link.recv().await;
    assert_eq!((a.mti, a.trace, a.code.as_str()), (210, 79, "30"));
    // The link still works after all that.
    link.send(&purchase(h.healthy(0), 80, 80)).await;
    assert_eq!(link.recv().await.code, "00");
    h.server.shutdown().await;
}

#[tokio::test]
async fn many_requests_in_flight_on_one_link() {
    let h = start().await;
    let mut link = h.connect().await;
    let n = 500u32;
    for i in 0..n {
        link.send(&purchase(
            h.healthy(usize::try_from(i % 4).unwrap()),
            i + 1,
            u64::from(i) + 1,
        ))
        .await;
    }
    let mut seen = HashMap::new();
    for _ in 0..n {
        let a = link.recv().await;
        assert_eq!(a.code, "00");
        assert_eq!(a.rrn.as_deref(), Some(format!("{:012}", a.trace).as_str()));
        assert!(seen.insert(a.trace, a).is_none());
    }
    assert_eq!(seen.len(), 500);
    h.server.shutdown().await;
}

#[tokio::test]
async fn replies_overtake_each_other_under_latency() {
    let h = start().await;
    let faults = h.sim.faults();
    let mut link = h.connect().await;
    // The first request waits 400 ms, the second none: the second is answered first.
    faults.set_latency(Duration::from_millis(400), Duration::from_millis(400));
    link.send(&purchase(h.healthy(0), 1, 1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    faults.set_latency(Duration::ZERO, Duration::ZERO);
    link.send(&purchase(h.healthy(1), 2, 2)).await;
    assert_eq!(link.recv().await.trace, 2);
    assert_eq!(link.recv().await.trace, 1);

    // With a spread, 60 requests come back in some other order, each matched by its trace.
    faults.set_latency(Duration::from_millis(0), Duration::from_millis(150));
    for i in 0..60u32 {
        link.send(&purchase(
            h.healthy(usize::try_from(i % 4).unwrap()),
            100 + i,
            100 + u64::from(i),
        ))
        .await;
    }
    let mut order = Vec::new();
    for _ in 0..60 {
        let a = link.recv().await;
        assert_eq!(a.code, "00");
        assert_eq!(a.rrn.unwrap(), format!("{:012}", a.trace));
        order.push(a.trace);
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (100..160).collect::<Vec<_>>());
    assert_ne!(order, sorted, "latency spread should reorder replies");
    assert!(faults.stats().delayed >= 61);
    h.server.shutdown().await;
}

#[tokio::test]
async fn dropped_reply_is_processed_and_reversal_undoes_it_once() {
    let h = start().await;
    let card = h.healthy(2);
    let before = h.balance(card);
    let faults = h.sim.faults();
    let mut link = h.connect().await;
    faults.drop_next(1);
    link.send(&purchase(card, 5, 500)).await;
    assert!(link.recv_within(Duration::from_millis(300)).await.is_none());
    // The issuer did debit: only a reversal puts it right.
    assert_eq!(h.balance(card).0, before.0 - 100);
    for _ in 0..2 {
        link.send(&reversal_of(card, 5, 500)).await;
        let a = link.recv().await;
        assert_eq!((a.mti, a.trace, a.code.as_str()), (410, 5, "00"));
    }
    assert_eq!(h.balance(card), before);
    assert_eq!(faults.stats().dropped, 1);

    // A fraction: about half of 200 requests go unanswered; every one was processed.
    faults.drop_fraction(0.5);
    for i in 0..200u32 {
        link.send(&purchase(card, 1000 + i, 1000 + u64::from(i)))
            .await;
    }
    let mut answered = 0u64;
    while link.recv_within(Duration::from_millis(300)).await.is_some() {
        answered += 1;
    }
    faults.drop_fraction(0.0);
    let dropped = faults.stats().dropped - 1;
    assert_eq!(answered + dropped, 200);
    assert!((60..=140).contains(&dropped), "dropped {dropped} of 200");
    assert_eq!(h.balance(card).0, before.0 - 200 * 100);
    link.send(&purchase(card, 9, 9)).await;
    assert_eq!(link.recv().await.code, "00");
    h.server.shutdown().await;
}

#[tokio::test]
async fn fault_96_and_maintenance_91() {
    let h = start().await;
    let card = h.healthy(0);
    let before = h.balance(card);
    let faults = h.sim.faults();
    let mut link = h.connect().await;
    faults.fail_next(2);
    for trace in [1, 2] {
        link.send(&purchase(card, trace, u64::from(trace))).await;
        assert_eq!(link.recv().await.code, "96");
    }
    assert_eq!(h.balance(card), before, "a 96 fault processes nothing");
    // The same RRN once the fault is gone is a fresh request, approved.
    link.send(&purchase(card, 1, 1)).await;
    assert_eq!(link.recv().await.code, "00");
    faults.set_maintenance(true);
    link.send(&purchase(card, 3, 3)).await;
    assert_eq!(link.recv().await.code, "91");
    faults.clear();
    link.send(&purchase(card, 4, 4)).await;
    assert_eq!(link.recv().await.code, "00");
    faults.fail_fraction(1.0);
    link.send(&echo(5)).await;
    assert_eq!(link.recv().await.code, "96");
    assert_eq!(faults.stats().failed, 3);
    h.server.shutdown().await;
}

#[tokio::test]
async fn disconnects_close_the_link_and_new_links_work() {
    let h = start().await;
    let card = h.healthy(1);
    let before = h.balance(card);
    let faults = h.sim.faults();
    let mut link = h.connect().await;
    faults.disconnect_next(1);
    link.send(&purchase(card, 1, 1)).await;
    assert!(link.closed().await);
    assert_eq!(
        h.balance(card),
        before,
        "the request that hit the disconnect was not processed"
    );

    let mut link = h.connect().await;
    link.send(&purchase(card, 2, 2)).await;
    assert_eq!(link.recv().await.code, "00");
    // Close every link at once, idle or not.
    let mut other = h.connect().await;
    other.send(&echo(3)).await;
    assert_eq!(other.recv().await.code, "00");
    faults.disconnect_all();
    assert!(link.closed().await);
    assert!(other.closed().await);
    assert_eq!(faults.stats().disconnects, 3);

    let mut link = h.connect().await;
    link.send(&purchase(card, 4, 4)).await;
    assert_eq!(link.recv().await.code, "00");
    h.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_what_is_in_flight_then_closes() {
    let h = start().await;
    let faults = h.sim.faults();
    let mut link = h.connect().await;
    faults.set_latency(Duration::from_millis(200), Duration::from_millis(200));
    link.send(&purchase(h.healthy(0), 1, 1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = h.server.local_addr();
    let sim = h.sim.clone();
    h.server.shutdown().await;
    assert_eq!(
        link.recv().await.code,
        "00",
        "the reply in flight went out before closing"
    );
    assert!(link.closed().await);
    assert!(TcpStream::connect(addr).await.is_err());
    // The ledger was committed on the way down.
    assert_eq!(sim.issuer().approvals().unwrap().len(), 1);
}
