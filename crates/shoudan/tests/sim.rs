//! Deterministic simulation: terminals, the real switch, the real issuer logic (issuer-sim's
//! `Issuer`: accounts, PINs, its ledger), a virtual clock and a faulty network, all in one
//! process on a current-thread tokio runtime with paused time. Connections are in-memory pipes
//! (`tokio::io::duplex`): terminals reach the switch through `SwitchHandle::serve_stream`, the
//! switch reaches issuers through an `IssuerConnector`. Every fault is decided from the seed and
//! the request's own identity (terminal, amount, attempt), so a seed replays the same faults.
//!
//! Terminals of two merchants buy, retry, void, refund (any terminal of the merchant, and now
//! and then another merchant's sale, which must be refused), pre-authorise and complete, ask
//! balances, and drop their connection with a request outstanding, then reverse it (resending
//! the reversal until it is answered). The switch crashes twice per run, mid-request, and is
//! started again on the same journal; terminals that lost an answer reverse the request. At
//! the end each terminal settles its batch with its own totals, which the switch must find
//! balanced. After each run, with the reversal queue drained, it checks DESIGN.md invariant 1
//! (every issuer approval completed in the journal or reversed at the issuer; nothing in
//! doubt), invariant 2 (a retried request is answered the same and debited once), that no full
//! PAN is in the database, and, once every clearing date is settled, invariant 3 against the
//! issuers' own books (see `check_invariant_3`) and invariant 5 (no row linked to another
//! merchant's, and nothing of another merchant in what the portal shows a merchant about its
//! transactions; see `check_invariant_5`). The journal tailer runs beside the switch with small
//! pages, and every decline, failure, approved refund and acknowledged reversal must reach the
//! merchant's notifications (`check_notifications`).
//!
//! `SHOUDAN_SIM_SEED=n` reruns one seed; `SHOUDAN_SIM_SEEDS=k` runs seeds 1..=k;
//! `SHOUDAN_SIM_TXNS=n` sets the requests per terminal; `SHOUDAN_SIM_DISK_FULL=0` leaves out
//! the windows in which the journal's disk is full, `SHOUDAN_SIM_CRASHES=0` the crashes. Every
//! run ends with a switch restart (what a crash or a full disk left in flight is settled by the
//! next start) before the checks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::IssuerDirectory;
use iso8583::{
    Frame, FrameHead, Header, MessageBuilder, Mti, SettleResult, SettlementTotals, Totals, Tpdu,
};
use issuer_sim::wire::{self as issuer_wire, Inbound};
use issuer_sim::{
    DemoCard, HsmPinVerifier, Issuer, LedgerLocation, ResponseCode, Rrn, TxnState as IssuerState,
    demo_issuer,
};
use paycrypto::{
    DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyScheme, KeyUsage, MacAlgorithm, MasterKey,
    SoftHsm, WorkingKeys,
};
use store::{
    MerchantRow, Record, SafState, SqliteConfig, SqliteStore, Status, Store, Synchronous, TxnState,
};
use switch::{
    Clock, Connecting, IssuerConnector, IssuerEndpoint, IssuerStream, Switch, SwitchConfig,
    TerminalSpec,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

const SEEDS_DEFAULT: u64 = 3;
/// Seeds that once broke an invariant, run every time so the fix stays: 57, a terminal
/// reversal of a void that could not be journalled (full disk) left the void's late approval
/// believing it reversed, so the journal kept the purchase approved while the issuer voided it.
const SEEDS_THAT_FOUND_BUGS: &[u64] = &[57];
const TERMINALS: usize = 6;
const TXNS_PER_TERMINAL_DEFAULT: usize = 400;
const BANKS: [&str; 3] = ["ICBC", "CCB", "ABC"];
/// Two merchants (MID, name, MCC); terminals alternate between them.
const MERCHANTS: [(&str, &str, &str); 2] = [
    ("898110048990001", "Teahouse", "5812"),
    ("898110048990002", "Bookshop", "5942"),
];
const TMK_HEX: &str = "0123456789ABCDEFFEDCBA9876543210";
const ZPK_HEX: &str = "11111111111111112222222222222222";
/// Crashes of the switch per run (none with `SHOUDAN_SIM_CRASHES=0`).
const CRASHES: u64 = 2;
/// Windows in which the journal's disk is full, per run (none with `SHOUDAN_SIM_DISK_FULL=0`).
const DISK_FULL_WINDOWS: u64 = 3;
/// How long a cashier waits after a 96 or a 91 before the next request. Without it a full
/// disk or an issuer that is down, answered at once, let the terminals run through their whole
/// load in no virtual time, so the window (and its 96s or 91s) lasted until the load was done.
const PAUSE_AFTER_REFUSAL: Duration = Duration::from_millis(25);
/// A terminal resends a reversal answered 96; this many 96s in a row (seconds of virtual
/// time, far past any full-disk window) mean the switch would never take it.
const REVERSAL_RESENDS_MAX: u32 = 200;
const ISSUER_TIMEOUT: Duration = Duration::from_millis(400);
/// A terminal's own patience: far above the switch's issuer timeout, so it only fires if the
/// switch leaves a request unanswered (which is a failure).
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(30);
/// 2026-03-10 02:00:00 UTC (10:00 in China): the virtual clock's start for even seeds.
const EPOCH_MS: i64 = 1_773_108_000_000;
/// Seeds of 1 mod 4 start two seconds before midnight in China, so the traffic crosses the
/// issuers' business day: reversals and voids of yesterday's requests, a new day's limits.
const BEFORE_MIDNIGHT_MS: i64 = EPOCH_MS + (14 * 3600 - 2) * 1000;
/// Seeds of 3 mod 4 start two seconds before the 23:00 cut-over, so the traffic spans two
/// clearing dates (voids and reversals of the first in the grace after it) that settle apart.
const BEFORE_CUT_OVER_MS: i64 = EPOCH_MS + (13 * 3600 - 2) * 1000;
/// How often the journal tailer polls (the demo's interval).
const TAILER_INTERVAL: Duration = resolve::outbox::BACKGROUND_INTERVAL;
/// Virtual time allowed for the reversal queue to drain after the traffic.
const DRAIN_MAX: Duration = Duration::from_secs(30 * 60);

// --- seeded decisions

/// SplitMix64 of a seed and a request's identity: the same inputs, the same fate.
fn mix(parts: &[u64]) -> u64 {
    let mut z = 0x9E37_79B9_7F4A_7C15_u64;
    for part in parts {
        z = z.wrapping_add(*part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// Per mille.
fn chance(roll: u64, per_mille: u64) -> bool {
    roll % 1000 < per_mille
}

/// A terminal's own generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(&[self.0]);
        self.0
    }
}

// --- the virtual clock

#[derive(Clone)]
struct SimClock {
    start: tokio::time::Instant,
    base_ms: i64,
}

impl SimClock {
    fn ms(&self) -> i64 {
        self.base_ms + i64::try_from(self.start.elapsed().as_millis()).unwrap()
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.ms()
    }
}

impl issuer_sim::Clock for SimClock {
    fn now(&self) -> issuer_sim::LocalTime {
        issuer_sim::LocalTime::from_unix_ms(self.ms(), 8 * 3600)
    }
}

// --- the network to the issuers

/// What happens to one request at an issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Processed and answered after this many ms.
    Answer(u64),
    /// Processed, answered after the switch gave up.
    Late,
    /// Processed, never answered.
    Drop,
    /// The link closes before the issuer reads it.
    Cut,
    /// Answered 96 without processing.
    Fail,
}

fn fate(seed: u64, bank: &str, key: u64, attempt: u64) -> Fate {
    let roll = mix(&[seed, text_hash(bank), key, attempt]);
    let latency = 1 + (roll >> 20) % 30;
    match roll % 1000 {
        0..=19 => Fate::Late,
        20..=39 => Fate::Drop,
        40..=49 => Fate::Cut,
        50..=59 => Fate::Fail,
        _ => Fate::Answer(latency),
    }
}

struct SimNet {
    seed: u64,
    issuers: HashMap<String, Arc<Issuer>>,
    /// Requests seen per (bank, request identity), for the attempt number of resends.
    attempts: Arc<Mutex<HashMap<(String, u64), u64>>>,
    connects: Mutex<HashMap<String, u64>>,
}

impl IssuerConnector for SimNet {
    fn connect<'a>(&'a self, bank: &'a str, _addr: SocketAddr) -> Connecting<'a> {
        Box::pin(async move {
            let n = {
                let mut connects = self.connects.lock().unwrap();
                let n = connects.entry(bank.to_owned()).or_default();
                *n += 1;
                *n
            };
            // Now and then the host refuses connections for a while.
            if n > 1 && chance(mix(&[self.seed, text_hash(bank), n, 7]), 300) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            let issuer = Arc::clone(self.issuers.get(bank).unwrap());
            let (switch_end, issuer_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(issuer_host(
                self.seed,
                bank.to_owned(),
                issuer,
                issuer_end,
                Arc::clone(&self.attempts),
            ));
            Ok(Box::new(switch_end) as Box<dyn IssuerStream>)
        })
    }
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    reader.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// One issuer link: the real issuer logic behind seeded faults.
async fn issuer_host(
    seed: u64,
    bank: String,
    issuer: Arc<Issuer>,
    stream: DuplexStream,
    attempts: Arc<Mutex<HashMap<(String, u64), u64>>>,
) {
    let (mut reader, writer) = tokio::io::split(stream);
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    while let Some(body) = read_frame(&mut reader).await {
        let Ok(frame) = issuer_wire::decode_frame(&body) else {
            return;
        };
        let m = &frame.message;
        // The request's identity: terminal, amount (unique per terminal request in this
        // simulation) and type; resends of a reversal count as attempts.
        let key = mix(&[
            text_hash(m.text(41).unwrap_or_default()),
            m.amount().unwrap_or(0),
            u64::from(m.mti().value()),
        ]);
        let attempt = {
            let mut attempts = attempts.lock().unwrap();
            let n = attempts.entry((bank.clone(), key)).or_default();
            *n += 1;
            *n
        };
        let fate = if m.mti() == Mti::NETWORK {
            Fate::Answer(1)
        } else {
            fate(seed, &bank, key, attempt)
        };
        if fate == Fate::Cut {
            return;
        }
        let now = issuer.now();
        let reply = if fate == Fate::Fail {
            issuer_sim::Reply {
                code: ResponseCode::SystemError,
                auth_code: None,
                balance: None,
                settlement_date: now.date,
            }
        } else {
            match issuer_wire::decode(m) {
                Ok(Inbound::Auth(req)) => issuer.authorise(&req),
                Ok(Inbound::Reversal(req)) => issuer.reverse(&req),
                Ok(Inbound::Echo) => issuer_sim::Reply {
                    code: ResponseCode::Approved,
                    auth_code: None,
                    balance: None,
                    settlement_date: now.date,
                },
                Err(code) => issuer_sim::Reply {
                    code,
                    auth_code: None,
                    balance: None,
                    settlement_date: now.date,
                },
            }
        };
        let delay = match fate {
            Fate::Answer(ms) => Duration::from_millis(ms),
            Fate::Late => ISSUER_TIMEOUT * 2,
            Fate::Drop | Fate::Cut => continue,
            Fate::Fail => Duration::from_millis(1),
        };
        let mut out = Vec::with_capacity(96);
        issuer_wire::encode_reply(&frame.head, m, &reply, &mut out).unwrap();
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = writer.lock().await.write_all(&out).await;
        });
    }
}

// --- terminals

fn head() -> FrameHead {
    FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    }
}

/// A financial request as a terminal sends it.
#[derive(Clone)]
struct Req {
    mti: Mti,
    processing: &'static str,
    /// Field 25: 00 normal, 06 the pre-authorisation family.
    condition: &'static str,
    message_type: &'static str,
    pan: String,
    pin: Option<String>,
    amount: u64,
    stan: u32,
    rrn: Option<String>,
    f61: Option<String>,
    /// Field 38: the original's authorisation code (a completion naming its pre-authorisation
    /// by code).
    auth_code: Option<String>,
    reason: Option<&'static str>,
}

/// Where terminals find the switch: empty while it is down (crashed, not yet restarted).
type Host = Arc<Mutex<Option<Arc<switch::SwitchHandle>>>>;

struct SimTerminal {
    tid: String,
    mid: &'static str,
    host: Host,
    stream: DuplexStream,
    keys: Option<WorkingKeys>,
}

/// What reading the connection gave.
enum Read {
    Frame(Vec<u8>),
    /// The switch went away (it crashed): the connection is closed.
    Closed,
}

#[derive(Clone, Debug)]
struct Answer {
    code: String,
    rrn: Option<String>,
    /// Field 38: an approval's authorisation code.
    auth_code: Option<String>,
}

impl SimTerminal {
    /// A connected, signed-in terminal (waiting while the switch is down).
    async fn connect(host: &Host, tid: &str, mid: &'static str) -> SimTerminal {
        let (stream, _) = tokio::io::duplex(1);
        let mut t = SimTerminal {
            tid: tid.to_owned(),
            mid,
            host: Arc::clone(host),
            stream,
            keys: None,
        };
        t.reconnect().await;
        t
    }

    /// Drops the connection and opens a new one, signing in again; waits while the switch is
    /// down, and starts over if it goes down during the sign-in.
    async fn reconnect(&mut self) {
        loop {
            let switch = self.host.lock().unwrap().clone();
            let Some(switch) = switch else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let (client, server) = tokio::io::duplex(64 * 1024);
            switch.serve_stream(server);
            drop(switch);
            self.stream = client;
            if self.sign_in().await {
                return;
            }
        }
    }

    async fn read(&mut self) -> Read {
        match tokio::time::timeout(TERMINAL_TIMEOUT, read_frame(&mut self.stream)).await {
            Ok(Some(body)) => Read::Frame(body),
            Ok(None) => Read::Closed,
            Err(_) => panic!(
                "terminal {}: the switch left a request unanswered",
                self.tid
            ),
        }
    }

    /// Writes a frame; false if the connection is closed.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Signs in; false if the connection closed first.
    async fn sign_in(&mut self) -> bool {
        let mut out = MessageBuilder::new(Mti::NETWORK);
        out.set_stan(1).unwrap();
        out.set_text(41, &self.tid)
            .unwrap()
            .set_text(42, self.mid)
            .unwrap();
        out.set_digits(60, "00000001003").unwrap();
        out.set_text(63, "001").unwrap();
        let mut bytes = Vec::new();
        out.encode_frame(&head(), &mut bytes).unwrap();
        if !self.write(&bytes).await {
            return false;
        }
        let Read::Frame(body) = self.read().await else {
            return false;
        };
        let frame = Frame::decode_unprefixed(&body).unwrap();
        assert_eq!(frame.message.text(39), Some("00"));
        let tmk = Key::from_hex(KeyAlgorithm::Des, TMK_HEX).unwrap();
        self.keys = Some(
            paycrypto::decode_field62(&tmk, KeyScheme::Double, frame.message.bytes(62).unwrap())
                .unwrap(),
        );
        true
    }

    fn encode(&self, req: &Req) -> Vec<u8> {
        let keys = self.keys.as_ref().unwrap();
        let mut out = MessageBuilder::new(req.mti);
        out.set_digits(2, &req.pan).unwrap();
        out.set_digits(3, req.processing).unwrap();
        out.set_amount(req.amount).unwrap();
        out.set_stan(req.stan).unwrap();
        out.set_digits(22, if req.pin.is_some() { "021" } else { "022" })
            .unwrap();
        out.set_digits(25, req.condition).unwrap();
        if let Some(rrn) = &req.rrn {
            out.set_text(37, rrn).unwrap();
        }
        if let Some(code) = &req.auth_code {
            out.set_text(38, code).unwrap();
        }
        if let Some(pin) = &req.pin {
            let digits = paycrypto::PanDigits::from_pan(&req.pan).unwrap();
            let block = paycrypto::pin::encrypt(&keys.pik, pin, &digits).unwrap();
            PIN_BLOCKS.with(|b| b.borrow_mut().push(block.as_bytes().to_vec()));
            out.set_binary(52, block.as_bytes()).unwrap();
            out.set_digits(53, "2600000000000000").unwrap();
        }
        if let Some(reason) = req.reason {
            out.set_text(39, reason).unwrap();
        }
        out.set_text(41, &self.tid)
            .unwrap()
            .set_text(42, self.mid)
            .unwrap();
        out.set_text(49, "156").unwrap();
        out.set_digits(60, &format!("{}{:06}", req.message_type, 1))
            .unwrap();
        if let Some(f61) = &req.f61 {
            out.set_digits(61, f61).unwrap();
        }
        let mut bytes = Vec::new();
        out.encode_frame_with_mac(&head(), &mut bytes, |data| {
            Ok::<_, iso8583::EncodeError>(
                paycrypto::mac::compute(MacAlgorithm::CupEcb, &keys.mak, data).unwrap(),
            )
        })
        .unwrap();
        bytes
    }

    /// Sends and waits for the answer to `req` (other frames on the pipe are skipped). If the
    /// switch goes away first, reconnects and returns `None`: the terminal does not know what
    /// became of the request.
    async fn send(&mut self, req: &Req) -> Option<Answer> {
        let bytes = self.encode(req);
        if !self.write(&bytes).await {
            self.reconnect().await;
            return None;
        }
        loop {
            let Read::Frame(body) = self.read().await else {
                self.reconnect().await;
                return None;
            };
            let frame = Frame::decode_unprefixed(&body).unwrap();
            let m = &frame.message;
            if m.stan() == Some(req.stan) && m.mti().value() == req.mti.value() + 10 {
                let answer = Answer {
                    code: m.text(39).unwrap().to_owned(),
                    rrn: m.text(37).map(str::to_owned),
                    auth_code: m.text(38).map(str::to_owned),
                };
                if answer.code == "96" || answer.code == "91" {
                    tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
                }
                return Some(answer);
            }
        }
    }

    /// Reverses `original`, whose answer the terminal never got, as a POS does: resends the
    /// reversal, through 96s and lost connections, until it is answered.
    async fn reverse(&mut self, original: &Req) -> Answer {
        let reversal = Req {
            mti: Mti::REVERSAL,
            pin: None,
            reason: Some("98"),
            ..original.clone()
        };
        let mut resent = 0;
        loop {
            match self.send(&reversal).await {
                Some(a) if a.code != "96" => return a,
                _ => {
                    resent += 1;
                    assert!(
                        resent < REVERSAL_RESENDS_MAX,
                        "terminal {}'s reversal of trace {} answered 96 (or lost) {resent} times",
                        self.tid,
                        reversal.stan
                    );
                }
            }
        }
    }
}

impl SimTerminal {
    /// Settles batch 1 with the terminal's own totals (0500), resending after a 96 as a
    /// terminal does; returns the host's answer: its result digit and its totals.
    async fn settle(&mut self, stan: u32, ours: Totals) -> (SettleResult, Totals) {
        let mut out = MessageBuilder::new(Mti::SETTLEMENT);
        out.set_stan(stan).unwrap();
        out.set_text(41, &self.tid)
            .unwrap()
            .set_text(42, self.mid)
            .unwrap();
        out.set_composed(&SettlementTotals {
            domestic: ours,
            foreign: Totals::default(),
        })
        .unwrap();
        out.set_text(49, "156").unwrap();
        out.set_digits(60, &format!("00{:06}201", 1)).unwrap();
        out.set_text(63, "001").unwrap();
        let mut bytes = Vec::new();
        out.encode_frame(&head(), &mut bytes).unwrap();
        loop {
            let mut body = None;
            if self.write(&bytes).await {
                while let Read::Frame(frame) = self.read().await {
                    if Frame::decode_unprefixed(&frame).unwrap().message.mti()
                        == Mti::SETTLEMENT_RESPONSE
                    {
                        body = Some(frame);
                        break;
                    }
                }
            }
            let Some(body) = body else {
                // The switch went away: settle again once it is back.
                self.reconnect().await;
                continue;
            };
            let frame = Frame::decode_unprefixed(&body).unwrap();
            let m = &frame.message;
            if m.text(39) == Some("96") {
                tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
                continue;
            }
            assert_eq!(
                m.text(39),
                Some("00"),
                "terminal {}: settlement refused",
                self.tid
            );
            let host = SettlementTotals::parse(m.digits(48).unwrap()).unwrap();
            return (host.domestic.result, host.domestic);
        }
    }
}

/// A completion naming its pre-authorisation by authorisation code alone.
const BY_CODE: &str = "completion by code";

/// A terminal's own count of its batch, from the answers it got (PROTOCOL.md: debits are
/// purchases and completions, credits voids and refunds).
fn count(totals: &mut Totals, label: &str, amount: u64) {
    match label {
        "purchase" | "completion" | BY_CODE => {
            totals.debit_amount += amount;
            totals.debit_count += 1;
        }
        "void" | "refund" | "foreign refund" => {
            totals.credit_amount += amount;
            totals.credit_count += 1;
        }
        _ => {}
    }
}

/// What the terminals saw, for the invariants and the run's fingerprint.
#[derive(Default)]
struct Seen {
    /// Every answer in the order the terminals got it, folded: (virtual time, terminal, trace,
    /// request, code). Two runs of a seed must agree on it, not only on the counts.
    digest: u64,
    codes: BTreeMap<String, u64>,
    /// Retries whose answer differed from the first answer: (tid, stan, first, retry).
    retry_mismatches: Vec<(String, u32, String, String)>,
    retries: u64,
    abandoned: u64,
    /// The last disk-full window has closed (set by the disk task).
    disk_windows_over: bool,
    /// A disk-full window is open now (set by the disk task).
    disk_full: bool,
    /// The RRNs of answers of 96 given while a window was open (an issuer's own 96 among
    /// them; the journal tells those apart: the request was sent).
    refused_while_full: Vec<Option<String>>,
    /// Purchases approved after that: the journal recovered without a restart.
    approved_after_disk: u64,
    /// Crashes of the switch so far.
    crashes: u64,
    /// Crashes that came while the terminals were still sending (virtual ms of each).
    crashed_at_ms: Vec<i64>,
    /// Terminals whose settlement the host did not find balanced: (tid, result, terminal's
    /// totals, host's totals).
    unbalanced: Vec<(String, u8, String, String)>,
    /// Approved purchases and completions per merchant: a refund may come from any terminal
    /// of the merchant.
    receipts: BTreeMap<&'static str, Vec<Kept>>,
    /// Refunds approved against another merchant's receipt.
    leaks: Vec<String>,
}

impl Seen {
    /// Folds an answer into the digest.
    fn fold(&mut self, at_ms: i64, tid: &str, stan: u32, label: &str, code: &str) {
        self.digest = mix(&[
            self.digest,
            at_ms as u64,
            text_hash(tid),
            u64::from(stan),
            text_hash(label),
            text_hash(code),
        ]);
    }

    /// Counts an answer by request and code, and folds it into the digest.
    fn answered(&mut self, at_ms: i64, tid: &str, stan: u32, label: &str, code: &str) {
        self.fold(at_ms, tid, stan, label, code);
        *self.codes.entry(format!("{label} {code}")).or_default() += 1;
    }
}

struct Card {
    pan: String,
    pin: String,
}

/// A card's account at its issuer when the run began: what the cardholders paid is read from
/// the issuers' own books at the end.
struct Account {
    bank: &'static str,
    pan: issuer_sim::Pan,
    balance_at_start: i64,
}

/// An approved request the terminal keeps for later links: the request, its answer and the
/// local date (MMDD) it was made on, which a refund names in field 61.
#[derive(Clone)]
struct Kept {
    req: Req,
    answer: Answer,
    mmdd: String,
}

/// A request linked to an original by field 61 (batch + trace, then the original's date for a
/// refund) and field 37 (its RRN), as request `stan`.
fn linked(
    orig: &Kept,
    stan: u32,
    processing: &'static str,
    message_type: &'static str,
    amount: u64,
) -> Req {
    let refund = message_type == "25";
    Req {
        mti: if refund { Mti::ADVICE } else { orig.req.mti },
        processing,
        // A refund is of the normal family even when its original was a completion.
        condition: if refund { "00" } else { orig.req.condition },
        message_type,
        pin: None,
        amount,
        stan,
        rrn: orig.answer.rrn.clone(),
        f61: Some(if refund {
            // A refund may come from any terminal of the merchant: no batch or trace.
            format!("{:06}{:06}{}", 0, 0, orig.mmdd)
        } else {
            format!("{:06}{:06}", 1, orig.req.stan)
        }),
        reason: None,
        ..orig.req.clone()
    }
}

/// The void of an approved purchase, as request `stan`.
fn void_of(orig: &Kept, stan: u32) -> Req {
    linked(orig, stan, "200000", "23", orig.req.amount)
}

/// A refund of part of an approved purchase or completion, as request `stan`.
fn refund_of(orig: &Kept, stan: u32, amount: u64) -> Req {
    linked(orig, stan, "200000", "25", amount.clamp(1, orig.req.amount))
}

/// The completion of an approved pre-authorisation for `amount` (at most the pre-authorised
/// amount), as request `stan`.
fn completion_of(orig: &Kept, stan: u32, amount: u64) -> Req {
    Req {
        mti: Mti::FINANCIAL,
        ..linked(orig, stan, "000000", "20", amount.clamp(1, orig.req.amount))
    }
}

/// The completion of an approved pre-authorisation named by its authorisation code and date
/// alone (field 38; field 61 without batch or trace; no RRN), as terminals complete one taken
/// at another desk. `None` when its answer carried no code.
fn completion_by_code_of(orig: &Kept, stan: u32, amount: u64) -> Option<Req> {
    let code = orig.answer.auth_code.clone()?;
    Some(Req {
        rrn: None,
        auth_code: Some(code),
        f61: Some(format!("{:06}{:06}{}", 0, 0, orig.mmdd)),
        ..completion_of(orig, stan, amount)
    })
}

/// The void of an approved pre-authorisation, as request `stan`.
fn pre_auth_void_of(orig: &Kept, stan: u32) -> Req {
    linked(orig, stan, "200000", "11", orig.req.amount)
}

/// What a terminal sends as its request `n`: a purchase most of the time; voids, refunds,
/// pre-authorisations, completions and balance inquiries among them; retries of the last
/// request; and requests left outstanding on a dropped connection or lost to a crash of the
/// switch, then reversed. At the end it settles its batch.
#[allow(clippy::too_many_lines)]
async fn terminal_loop(
    seed: u64,
    index: usize,
    txns: usize,
    host: Host,
    cards: Arc<Vec<Card>>,
    seen: Arc<Mutex<Seen>>,
    clock: SimClock,
) {
    let tid = format!("7{:07}", index + 1);
    let mid = MERCHANTS[index % MERCHANTS.len()].0;
    let other_mid = MERCHANTS[(index + 1) % MERCHANTS.len()].0;
    let mut rng = Rng(mix(&[seed, index as u64, 99]));
    let mut t = SimTerminal::connect(&host, &tid, mid).await;
    let mut stan = 1u32;
    let mut last: Option<(Req, Answer)> = None;
    // Approved purchases (voidable, refundable), pre-authorisations (completable, voidable)
    // and completions (refundable).
    let mut purchases: Vec<Kept> = Vec::new();
    let mut pre_auths: Vec<Kept> = Vec::new();
    let mut completions: Vec<Kept> = Vec::new();
    let mut totals = Totals::default();
    for n in 0..txns {
        stan += 1;
        let roll = rng.next();
        // Amounts are unique per terminal request (refunds aside, which have an MTI of their
        // own): the issuer-side faults key on them. Pre-authorisations are larger, so that a
        // completion can capture less than was held with an amount of its own.
        let amount = 100 + (n as u64) * TERMINALS as u64 + index as u64;
        let card = &cards[(rng.next() % cards.len() as u64) as usize];
        let mmdd = switch::LocalTime::from_ms(clock.ms()).mmdd();
        let purchase = Req {
            mti: Mti::FINANCIAL,
            processing: "000000",
            condition: "00",
            message_type: "22",
            pan: card.pan.clone(),
            pin: Some(card.pin.clone()),
            amount,
            stan,
            rrn: None,
            f61: None,
            auth_code: None,
            reason: None,
        };
        let pick = |list: &Vec<Kept>, roll: u64| (roll >> 24) as usize % list.len().max(1);
        // What to send, and the list an approval of it joins.
        let (req, label, keep): (Req, &str, Option<&mut Vec<Kept>>) = match roll % 100 {
            // Retry the last request as it was (same TID, batch, STAN, content).
            0..=7 if last.is_some() => {
                let (req, first) = last.clone().unwrap();
                // A retry lost to a crash changes nothing: the first answer stands.
                let Some(again) = t.send(&req).await else {
                    continue;
                };
                let mut seen = seen.lock().unwrap();
                seen.fold(clock.ms(), &tid, req.stan, "retry", &again.code);
                seen.retries += 1;
                // The same answer: its code, and an approval's RRN and authorisation code.
                let differs = again.code != first.code
                    || (first.code == "00"
                        && (again.rrn != first.rrn || again.auth_code != first.auth_code));
                if differs {
                    let said = |a: &Answer| format!("{} {:?} {:?}", a.code, a.rrn, a.auth_code);
                    seen.retry_mismatches
                        .push((tid.clone(), req.stan, said(&first), said(&again)));
                }
                stan -= 1;
                continue;
            }
            // Void the newest approved purchase.
            8..=14 if !purchases.is_empty() => {
                let orig = purchases.pop().unwrap();
                (void_of(&orig, stan), "void", None)
            }
            // The terminal loses its connection with a request outstanding: it reconnects,
            // signs in and reverses it, as a POS does. The request is a purchase, or a void,
            // refund or completion of an earlier approval.
            15..=19 => {
                let outstanding = match (roll >> 8) % 4 {
                    1 if !purchases.is_empty() => void_of(&purchases.pop().unwrap(), stan),
                    2 if !purchases.is_empty() => {
                        let orig = &purchases[pick(&purchases, roll)];
                        refund_of(orig, stan, amount % orig.req.amount + 1)
                    }
                    3 if !pre_auths.is_empty() => {
                        let orig = pre_auths.remove(pick(&pre_auths, roll));
                        completion_of(&orig, stan, amount)
                    }
                    _ => purchase.clone(),
                };
                let bytes = t.encode(&outstanding);
                let _ = t.write(&bytes).await;
                t.reconnect().await;
                stan += 1;
                let a = t.reverse(&outstanding).await;
                let mut seen = seen.lock().unwrap();
                seen.abandoned += 1;
                seen.answered(clock.ms(), &tid, outstanding.stan, "reversal", &a.code);
                last = None;
                continue;
            }
            // Refund part of an approved purchase or completion of the merchant's, made on any
            // of its terminals, perhaps again. Now and then the receipt is another merchant's:
            // that refund must be refused, or money would leave one merchant for another's sale.
            20..=25 => {
                let foreign = (roll >> 16).is_multiple_of(10);
                let orig = {
                    let seen = seen.lock().unwrap();
                    seen.receipts
                        .get(if foreign { other_mid } else { mid })
                        .filter(|list| !list.is_empty())
                        .map(|list| list[pick(list, roll)].clone())
                };
                match orig {
                    Some(orig) => (
                        refund_of(&orig, stan, amount % (orig.req.amount / 2 + 1) + 1),
                        if foreign { "foreign refund" } else { "refund" },
                        None,
                    ),
                    None => (purchase.clone(), "purchase", Some(&mut purchases)),
                }
            }
            // Pre-authorise (with the PIN).
            26..=32 => (
                Req {
                    mti: Mti::AUTHORISATION,
                    processing: "030000",
                    condition: "06",
                    message_type: "10",
                    amount: amount + 50_000,
                    ..purchase.clone()
                },
                "pre-auth",
                Some(&mut pre_auths),
            ),
            // Complete the oldest pre-authorisation for less than was held, or void it.
            33..=39 if !pre_auths.is_empty() => {
                let orig = pre_auths.remove(0);
                let by_code = (roll >> 12)
                    .is_multiple_of(3)
                    .then(|| completion_by_code_of(&orig, stan, amount))
                    .flatten();
                if (roll >> 8).is_multiple_of(4) {
                    (pre_auth_void_of(&orig, stan), "pre-auth void", None)
                } else if let Some(req) = by_code {
                    (req, BY_CODE, Some(&mut completions))
                } else {
                    (
                        completion_of(&orig, stan, amount),
                        "completion",
                        Some(&mut completions),
                    )
                }
            }
            // Ask the balance.
            40..=42 => (
                Req {
                    processing: "310000",
                    message_type: "01",
                    amount: 0,
                    ..purchase.clone()
                },
                "balance",
                None,
            ),
            _ => (purchase.clone(), "purchase", Some(&mut purchases)),
        };
        let Some(a) = t.send(&req).await else {
            // The switch went away with the request: the terminal reverses it (a balance
            // inquiry moves no money) and counts it nowhere.
            seen.lock()
                .unwrap()
                .answered(clock.ms(), &tid, req.stan, label, "lost");
            if req.processing != "310000" {
                let a = t.reverse(&req).await;
                seen.lock().unwrap().answered(
                    clock.ms(),
                    &tid,
                    req.stan,
                    "reversal after a crash",
                    &a.code,
                );
            }
            last = None;
            continue;
        };
        {
            let mut shared = seen.lock().unwrap();
            shared.answered(clock.ms(), &tid, req.stan, label, &a.code);
            if a.code == "96" && shared.disk_full {
                shared.refused_while_full.push(a.rrn.clone());
            }
        }
        if a.code == "00" {
            count(&mut totals, label, req.amount);
            let mut shared = seen.lock().unwrap();
            if matches!(label, "purchase" | "completion" | BY_CODE) {
                shared.receipts.entry(mid).or_default().push(Kept {
                    req: req.clone(),
                    answer: a.clone(),
                    mmdd: mmdd.clone(),
                });
            }
            if label == "foreign refund" {
                shared.leaks.push(format!(
                    "terminal {tid} of {mid} refunded {} fen of RRN {:?}",
                    req.amount, req.rrn
                ));
            }
            if label == "purchase" && shared.disk_windows_over {
                shared.approved_after_disk += 1;
            }
            drop(shared);
            if let Some(list) = keep {
                list.push(Kept {
                    req: req.clone(),
                    answer: a.clone(),
                    mmdd,
                });
            }
        }
        last = Some((req, a));
    }
    // End of the day: the terminal settles its batch with its own totals. Every request it
    // counted was answered approved, every other one declined or reversed; the host must agree.
    stan += 1;
    let (result, host) = t.settle(stan, totals).await;
    let mut seen = seen.lock().unwrap();
    seen.fold(clock.ms(), &tid, stan, "settlement", &result.0.to_string());
    if result != SettleResult::BALANCED {
        seen.unbalanced
            .push((tid, result.0, format!("{totals:?}"), format!("{host:?}")));
    }
}

// --- one run

struct Outcome {
    fingerprint: String,
    /// Completions by authorisation code the switch approved.
    approved_by_code: u64,
}

/// How to start the switch, at the beginning and after each crash.
struct Boot {
    config: SwitchConfig,
    store: Arc<SqliteStore>,
    hsm: Arc<SoftHsm>,
    directory: Arc<IssuerDirectory>,
    clock: SimClock,
    net: Arc<SimNet>,
}

impl Boot {
    async fn start(&self) -> Arc<switch::SwitchHandle> {
        let switch = Switch::start_with(
            self.config.clone(),
            Arc::clone(&self.store) as Arc<dyn Store>,
            Arc::clone(&self.hsm) as Arc<dyn Hsm>,
            Arc::clone(&self.directory),
            Arc::new(self.clock.clone()),
            Arc::clone(&self.net) as Arc<dyn IssuerConnector>,
        )
        .await
        .unwrap();
        for _ in 0..100 {
            if BANKS.iter().all(|b| switch.issuer_connected(b)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Arc::new(switch)
    }
}

/// What the traffic left, for the settlement after it (which blocks, so runs outside the
/// runtime).
struct Traffic {
    fingerprint: String,
    approved_by_code: u64,
    store: Arc<SqliteStore>,
    directory: Arc<IssuerDirectory>,
    issuers: HashMap<String, Arc<Issuer>>,
    accounts: Vec<Account>,
    now_ms: i64,
    /// Every card number the run's terminals used (invariant 4: none is kept or shown whole).
    pans: Vec<String>,
    /// The journal's directory, removed when the run is done.
    dir: tempfile::TempDir,
}

thread_local! {
    /// Panics on this thread while it runs a simulation: a task of the switch that panics (a
    /// request's, the index's forgetting loop) is joined by no one, and only a hook sees it.
    /// The runtime is current-thread, so the run's tasks panic on the thread that runs it;
    /// another test's panics, on its own thread, are not counted.
    static RUN_PANICS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// Every PIN block the run's terminals sent (invariant 4: none is kept anywhere).
    static PIN_BLOCKS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            RUN_PANICS.with(|n| n.set(n.get().map(|n| n + 1)));
            default_hook(info);
        }));
    });
    RUN_PANICS.with(|n| n.set(Some(0)));
}

fn run(seed: u64, txns: usize) -> Outcome {
    count_panics();
    PIN_BLOCKS.with(|b| b.borrow_mut().clear());
    // Shown with a failure: what reruns this run exactly (the hints in the checks name the
    // seed only).
    let faults: String = ["SHOUDAN_SIM_DISK_FULL", "SHOUDAN_SIM_CRASHES"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| format!(" {name}={v}")))
        .collect();
    eprintln!("seed {seed}: rerun with SHOUDAN_SIM_SEED={seed} SHOUDAN_SIM_TXNS={txns}{faults}");
    // IO only for the switch's listener, which the simulation never dials.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let traffic = runtime.block_on(simulate(seed, txns));
    drop(runtime);
    let panics = RUN_PANICS.with(|n| n.replace(None)).unwrap_or(0);
    assert_eq!(panics, 0, "seed {seed}: a task panicked (see above)");
    let settled = check_invariant_3(seed, &traffic);
    check_invariant_5(seed, &traffic);
    check_no_secrets(seed, traffic.dir.path(), &traffic.pans);
    drop(traffic.dir);
    Outcome {
        fingerprint: format!("{}; {settled}", traffic.fingerprint),
        approved_by_code: traffic.approved_by_code,
    }
}

async fn simulate(seed: u64, txns: usize) -> Traffic {
    let clock = SimClock {
        start: tokio::time::Instant::now(),
        base_ms: match seed % 4 {
            1 => BEFORE_MIDNIGHT_MS,
            3 => BEFORE_CUT_OVER_MS,
            _ => EPOCH_MS,
        },
    };
    let random = DeterministicRandom::new(seed);
    let master = MasterKey::generate(&random).unwrap();
    let hsm = Arc::new(SoftHsm::new(
        &master,
        Box::new(DeterministicRandom::new(seed + 1)),
    ));
    let zpk = hsm
        .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, ZPK_HEX)
        .unwrap();

    let mut issuers = HashMap::new();
    let mut cards = Vec::new();
    let mut accounts = Vec::new();
    let mut all_pans = Vec::new();
    for bank in BANKS {
        let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
        let (issuer, demo): (Issuer, Vec<DemoCard>) = demo_issuer(
            bank,
            4,
            pins,
            LedgerLocation::Memory,
            Arc::new(clock.clone()),
        )
        .unwrap();
        for c in &demo {
            all_pans.push(c.pan.expose_digits().to_owned());
        }
        for c in demo.iter().filter(|c| c.label == "healthy") {
            cards.push(Card {
                pan: c.pan.expose_digits().to_owned(),
                pin: c.pin().to_owned(),
            });
            accounts.push(Account {
                bank,
                pan: c.pan.clone(),
                balance_at_start: issuer.balance(&c.pan).unwrap().0,
            });
        }
        issuers.insert(bank.to_owned(), Arc::new(issuer));
    }

    let dir = match tempfile::tempdir_in("/dev/shm") {
        Ok(dir) => dir,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let mut store_config = SqliteConfig::new(dir.path().join("switch.db"));
    store_config.synchronous = Synchronous::Normal;
    store_config.inline_writer = true;
    let store = Arc::new(SqliteStore::open(&store_config).unwrap());
    let tmk = hsm
        .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, TMK_HEX)
        .unwrap();
    let mut records: Vec<Record> = MERCHANTS
        .iter()
        .map(|(mid, name, mcc)| {
            Record::UpsertMerchant(MerchantRow {
                mid: (*mid).into(),
                name: (*name).into(),
                status: Status::Active,
                mcc: (*mcc).into(),
            })
        })
        .collect();
    for i in 0..TERMINALS {
        records.push(switch::terminal_record(&TerminalSpec {
            tid: format!("7{:07}", i + 1),
            mid: MERCHANTS[i % MERCHANTS.len()].0.into(),
            tmk,
            scheme: KeyScheme::Double,
            mac: MacAlgorithm::CupEcb,
            mak: paycrypto::MakLength::Double,
            batch_no: 1,
        }));
    }
    store.submit(records).unwrap().await.unwrap();

    let mut config = SwitchConfig::new("127.0.0.1:0".parse().unwrap());
    for (i, bank) in BANKS.iter().enumerate() {
        config.issuers.insert(
            (*bank).to_owned(),
            IssuerEndpoint {
                // Never dialled: the simulated network routes by bank.
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000)),
                zpk,
                timeout: ISSUER_TIMEOUT,
            },
        );
    }
    config.saf_interval = Duration::from_millis(100);
    config.saf_lease = Duration::from_secs(5);
    config.abortable = true;
    // Even seeds: the in-memory index lets go of everything no request holds, several times a
    // second. Every retry, reversal, void and refund then finds what it names through the
    // store, as it would days later, and the invariants must hold all the same.
    if seed.is_multiple_of(2) {
        config.index_days_held = -2;
        config.index_forget_interval = Duration::from_millis(250);
    }
    let net = Arc::new(SimNet {
        seed,
        issuers: issuers.clone(),
        attempts: Arc::default(),
        connects: Mutex::default(),
    });
    let directory = Arc::new(IssuerDirectory::embedded().unwrap());
    let boot = Arc::new(Boot {
        config,
        store: Arc::clone(&store),
        hsm: Arc::clone(&hsm),
        directory: Arc::clone(&directory),
        clock: clock.clone(),
        net,
    });
    let host: Host = Arc::new(Mutex::new(Some(boot.start().await)));

    // The disk fills now and then: seeded windows in which the journal cannot grow.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let windows = unless_off("SHOUDAN_SIM_DISK_FULL", DISK_FULL_WINDOWS);
    let disk = {
        let store = Arc::clone(&store);
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            for k in 0..windows {
                let roll = mix(&[seed, 500, k]);
                tokio::time::sleep(Duration::from_millis(50 + roll % 300)).await;
                store.set_page_quota(Some(1));
                seen.lock().unwrap().disk_full = true;
                // Long enough that the journal must grow in it (a new page for its rows or
                // an index): a shorter one was often filled from pages it had.
                tokio::time::sleep(Duration::from_millis(200 + (roll >> 16) % 300)).await;
                seen.lock().unwrap().disk_full = false;
                store.set_page_quota(None);
            }
            seen.lock().unwrap().disk_windows_over = true;
        })
    };

    // The switch crashes now and then (a kill -9: every task dropped where it stands) and is
    // started again on the same journal after a while.
    let crashes = unless_off("SHOUDAN_SIM_CRASHES", CRASHES);
    let crasher = {
        let host = Arc::clone(&host);
        let boot = Arc::clone(&boot);
        let seen = Arc::clone(&seen);
        let clock = clock.clone();
        tokio::spawn(async move {
            for k in 0..crashes {
                let roll = mix(&[seed, 700, k]);
                tokio::time::sleep(Duration::from_millis(300 + roll % 3_000)).await;
                let switch = host.lock().unwrap().take().unwrap();
                Arc::into_inner(switch)
                    .expect("only the host holds the switch")
                    .crash();
                {
                    let mut seen = seen.lock().unwrap();
                    seen.crashes += 1;
                    seen.crashed_at_ms.push(clock.ms());
                }
                tokio::time::sleep(Duration::from_millis(20 + (roll >> 16) % 300)).await;
                let switch = boot.start().await;
                *host.lock().unwrap() = Some(switch);
            }
        })
    };

    // The journal tailer runs beside the switch, as in the demo, with small pages so that
    // its cursor pages through the lag many times a poll (512 events a poll here: the traffic
    // makes a few hundred a second of virtual time).
    let (stop_tailer, stop_rx) = tokio::sync::watch::channel(false);
    let tailer = resolve::outbox::Tailer::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&directory),
        Arc::new(clock.clone()),
        resolve::outbox::TailerConfig {
            page_max: 8,
            pages_max: 64,
            ..resolve::outbox::TailerConfig::default()
        },
    )
    .spawn(TAILER_INTERVAL, stop_rx);

    let cards = Arc::new(cards);
    let tasks: Vec<_> = (0..TERMINALS)
        .map(|i| {
            tokio::spawn(terminal_loop(
                seed,
                i,
                txns,
                Arc::clone(&host),
                Arc::clone(&cards),
                Arc::clone(&seen),
                clock.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let traffic_ms = clock.ms() - clock.base_ms;
    let traffic_end_ms = clock.ms();
    disk.abort();
    store.set_page_quota(None);
    // Every crash is over, the switch is up again (the terminals settled through it).
    crasher.await.unwrap();
    // A request whose outcome could not be written (disk full) stays in flight until the next
    // start settles it: restart, as an operator would once the disk has room.
    let switch = host.lock().unwrap().take().unwrap();
    Arc::into_inner(switch).unwrap().shutdown().await;
    let switch = boot.start().await;

    // Let the dust settle: every reversal delivered (virtual time is cheap).
    let drained_by = tokio::time::Instant::now() + DRAIN_MAX;
    loop {
        let pending = store.reversals_in_state(SafState::Pending).unwrap();
        if pending.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < drained_by,
            "seed {seed}: {} reversals still pending after {DRAIN_MAX:?} of virtual time",
            pending.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let metrics = switch.metrics();
    Arc::into_inner(switch).unwrap().shutdown().await;
    // The tailer passes every event once they are older than its lag.
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(resolve::outbox::TailerConfig::default().lag_ms).unwrap() + 1_000,
    ))
    .await;
    stop_tailer.send(true).unwrap();
    tailer.await.unwrap();
    for issuer in issuers.values() {
        issuer.flush().unwrap();
    }

    assert!(
        seen.lock().unwrap().leaks.is_empty(),
        "seed {seed}: refunds approved against another merchant's sale (rerun with \
         SHOUDAN_SIM_SEED={seed}): {:#?}",
        seen.lock().unwrap().leaks
    );
    assert!(
        seen.lock().unwrap().unbalanced.is_empty(),
        "seed {seed}: terminal settlements the host did not find balanced (rerun with \
         SHOUDAN_SIM_SEED={seed}): {:#?}",
        seen.lock().unwrap().unbalanced
    );
    let checked = check_invariant_1(seed, &store, &issuers);
    assert!(
        checked > 0,
        "seed {seed}: no approval to check invariant 1 on"
    );
    // The crashes came while requests were in flight, not after the load (the default load
    // runs for well over the crashes' 7 s of virtual time at most).
    if txns >= TXNS_PER_TERMINAL_DEFAULT {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.crashed_at_ms.len() as u64, crashes, "seed {seed}");
        assert!(
            seen.crashed_at_ms.iter().all(|&at| at < traffic_end_ms),
            "seed {seed}: a crash after the load ended ({:?} against {traffic_end_ms})",
            seen.crashed_at_ms
        );
    }
    let seen = Arc::into_inner(seen).unwrap().into_inner().unwrap();
    check_invariant_2(seed, &store, &issuers, &seen);
    check_no_pan(seed, &dir.path().join("switch.db"), &all_pans);
    check_notifications(seed, &dir.path().join("switch.db"));
    if windows > 0 {
        // Each window closed while terminals were still buying, and the journal took
        // approvals again without a restart.
        assert!(
            seen.disk_windows_over,
            "seed {seed}: the load ended before the disk-full windows did"
        );
        assert!(
            seen.approved_after_disk > 0,
            "seed {seed}: no approval once the disk had room again"
        );
        // And a window did refuse: the journal could not grow, and the switch answered 96
        // rather than approve what it could not record.
        if txns >= TXNS_PER_TERMINAL_DEFAULT {
            // Refused by the journal, not by an issuer (whose 96 comes to a request sent): its
            // row never written, or written failed without the issuer asked.
            let by_the_disk = seen
                .refused_while_full
                .iter()
                .filter(|rrn| match rrn {
                    None => true,
                    Some(rrn) => store
                        .txn_by_rrn(rrn)
                        .unwrap()
                        .is_none_or(|row| row.sent_at_ms.is_none()),
                })
                .count();
            assert!(
                by_the_disk > 0,
                "seed {seed}: no request was refused for the disk while it was full ({} answered \
                 96 then)",
                seen.refused_while_full.len()
            );
        }
    }
    if txns >= TXNS_PER_TERMINAL_DEFAULT {
        let answers = |ending: &str| {
            seen.codes
                .iter()
                .filter(|(key, _)| key.ends_with(ending))
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        // The crashes cut requests off (their terminals lost the answer and reversed them),
        // and the issuers' faults made the switch time requests out.
        if crashes > 0 {
            assert!(
                answers(" lost") > 0,
                "seed {seed}: no crash cut a request off"
            );
        }
        assert!(
            answers(" 98") > 0,
            "seed {seed}: no request timed out at an issuer"
        );
    }

    let issuer_approvals: usize = issuers.values().map(|i| i.approvals().unwrap().len()).sum();
    let fingerprint = format!(
        "{:?} answers digest {:016x} retries {} abandoned {} crashes {} issuer approvals \
         {issuer_approvals} refused {} approved after the disk windows {}; traffic for {} ms",
        seen.codes,
        seen.digest,
        seen.retries,
        seen.abandoned,
        seen.crashes,
        metrics.refused_overload,
        seen.approved_after_disk,
        traffic_ms
    );
    Traffic {
        fingerprint,
        approved_by_code: seen
            .codes
            .get(&format!("{BY_CODE} 00"))
            .copied()
            .unwrap_or(0),
        store,
        directory,
        issuers,
        accounts,
        now_ms: clock.ms(),
        pans: all_pans,
        dir,
    }
}

// --- invariants

/// Invariant 1: every issuer approval is completed in the journal (same state and amount) or
/// reversed at the issuer and not approved in the journal; every journal approval is an
/// issuer approval; nothing in flight, nothing queued.
/// Checks invariant 1; returns the issuer approvals it checked.
fn check_invariant_1(
    seed: u64,
    store: &SqliteStore,
    issuers: &HashMap<String, Arc<Issuer>>,
) -> usize {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (bank, issuer) in issuers {
        for approval in issuer
            .approvals()
            .unwrap()
            .iter()
            // A balance inquiry moves no money: nothing to complete or reverse.
            .filter(|a| {
                a.code == ResponseCode::Approved && a.kind != issuer_sim::TxnKind::BalanceInquiry
            })
        {
            checked += 1;
            let row = store.txn_by_rrn(approval.rrn.as_str()).unwrap();
            let ok = match (approval.state, row.as_ref().map(|r| r.state)) {
                (IssuerState::Reversed, None) => true,
                (IssuerState::Reversed, Some(state)) => !matches!(
                    state,
                    TxnState::Approved | TxnState::Voided | TxnState::Completed
                ),
                (IssuerState::Approved, Some(TxnState::Approved))
                | (IssuerState::Voided, Some(TxnState::Voided))
                | (IssuerState::Completed, Some(TxnState::Completed)) => row
                    .as_ref()
                    .is_some_and(|r| r.amount_fen == i64::try_from(approval.amount).unwrap()),
                _ => false,
            };
            if !ok {
                let timeline: Vec<String> = row
                    .as_ref()
                    .map(|r| store.events(r.id).unwrap())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| format!("{} {}: {}", e.at_ms % 86_400_000, e.kind, e.detail))
                    .collect();
                let reversal = row.as_ref().and_then(|r| store.reversal(r.id).unwrap());
                broken.push(format!(
                    "{bank} {} {:?}: issuer {:?}, journal {:?} (tid {:?} stan {:?}); \
                     timeline {timeline:#?}; reversal queue {reversal:?}",
                    approval.rrn,
                    approval.kind,
                    approval.state,
                    row.as_ref().map(|r| r.state),
                    row.as_ref().map(|r| r.tid.clone()),
                    row.as_ref().map(|r| r.stan),
                ));
            }
        }
    }
    for state in [TxnState::Approved, TxnState::Voided] {
        for row in store.txns_in_state(state).unwrap() {
            // A terminal's reversal is journalled as its own row; the issuer's side of it is
            // the original's state, checked above.
            if row.kind == store::TxnKind::Reversal {
                continue;
            }
            let Some(rrn) = row.rrn.as_deref() else {
                broken.push(format!("journal {state:?} row {} without an RRN", row.id));
                continue;
            };
            let rrn = Rrn::parse(rrn).unwrap();
            let at_issuer = issuers
                .values()
                .filter_map(|i| i.txn(&rrn))
                .any(|t| t.code == ResponseCode::Approved);
            if !at_issuer {
                broken.push(format!(
                    "journal {state:?} {} unknown to the issuers",
                    rrn.as_str()
                ));
            }
        }
    }
    let in_flight = store.txns_in_state(TxnState::InFlight).unwrap().len();
    if in_flight > 0 {
        broken.push(format!("{in_flight} transactions still in flight"));
    }
    assert!(
        broken.is_empty(),
        "seed {seed}: invariant 1 broken (rerun with SHOUDAN_SIM_SEED={seed}): {broken:#?}"
    );
    checked
}

/// Invariant 2: a retried request got the answer the first one got, and no (TID, batch, STAN)
/// of a financial request was debited twice at an issuer.
fn check_invariant_2(
    seed: u64,
    store: &SqliteStore,
    issuers: &HashMap<String, Arc<Issuer>>,
    seen: &Seen,
) {
    assert!(
        seen.retry_mismatches.is_empty(),
        "seed {seed}: invariant 2 broken, a retry answered differently (rerun with \
         SHOUDAN_SIM_SEED={seed}): {:?}",
        seen.retry_mismatches
    );
    let mut debits: HashMap<(String, u32, u32), u32> = HashMap::new();
    for issuer in issuers.values() {
        for approval in issuer.approvals().unwrap() {
            if approval.code != ResponseCode::Approved {
                continue;
            }
            if let Some(row) = store.txn_by_rrn(approval.rrn.as_str()).unwrap() {
                *debits.entry((row.tid, row.batch_no, row.stan)).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = debits.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: invariant 2 broken, debited twice (rerun with SHOUDAN_SIM_SEED={seed}): \
         {twice:?}"
    );
}

/// Invariant 3, on what the run left: every clearing date settled (a second run changes
/// nothing), the ledger balanced, each merchant's payable equal to its captures − voids −
/// refunds − fees, and those captures − voids − refunds equal to what the cardholders' accounts
/// at the issuers actually paid; the holds the issuers keep equal to the pre-authorisations the
/// journal has open. Returns a summary for the run's fingerprint.
fn check_invariant_3(seed: u64, traffic: &Traffic) -> String {
    let store = traffic.store.as_ref();
    let rerun = format!("(rerun with SHOUDAN_SIM_SEED={seed})");
    let conn = read_only(&traffic.dir.path().join("switch.db"));
    let dates = texts(
        &conn,
        "SELECT DISTINCT clearing_date FROM transactions ORDER BY 1",
    );
    // Per merchant, every clearing date together.
    let mut merchants: BTreeMap<String, settlement::MerchantClearing> = BTreeMap::new();
    for date in &dates {
        let first =
            settlement::settle_date(store, &traffic.directory, date, traffic.now_ms).unwrap();
        let again =
            settlement::settle_date(store, &traffic.directory, date, traffic.now_ms).unwrap();
        assert!(
            !again.changed,
            "seed {seed}: settling {date} a second time changed it {rerun}"
        );
        assert_eq!(first.merchants, again.merchants, "seed {seed} {rerun}");
        for m in first.merchants {
            let sum = merchants.entry(m.mid.clone()).or_default();
            sum.captures_fen += m.captures_fen;
            sum.voids_fen += m.voids_fen;
            sum.refunds_fen += m.refunds_fen;
            sum.fees_fen += m.fees_fen;
            sum.net_fen += m.net_fen;
        }
    }
    let audit = settlement::audit(store).unwrap();
    assert!(
        audit.balanced && audit.total_fen == 0,
        "seed {seed}: invariant 3 broken, the ledger does not balance {rerun}: total {} fen, \
         unbalanced postings {:?}",
        audit.total_fen,
        audit.unbalanced
    );
    let mut day = settlement::MerchantClearing::default();
    for (mid, sum) in &merchants {
        assert_eq!(
            sum.net_fen,
            sum.captures_fen - sum.voids_fen - sum.refunds_fen - sum.fees_fen,
            "seed {seed} {mid} {rerun}"
        );
        let payable = settlement::ledger_accounts::merchant_payable(mid);
        let owed = -audit
            .accounts
            .iter()
            .find(|a| a.account == payable)
            .map_or(0, |a| a.balance_fen);
        assert_eq!(
            owed, sum.net_fen,
            "seed {seed}: invariant 3 broken, {mid} is owed {owed} fen, but captures − voids − \
             refunds − fees = {} {rerun}",
            sum.net_fen
        );
        day.captures_fen += sum.captures_fen;
        day.voids_fen += sum.voids_fen;
        day.refunds_fen += sum.refunds_fen;
        day.fees_fen += sum.fees_fen;
    }
    assert_eq!(
        merchants.len(),
        MERCHANTS.len(),
        "seed {seed}: a merchant cleared nothing"
    );
    // The issuers' side: what left the cardholders' accounts, and what they still hold.
    let (mut paid, mut held) = (0i64, 0i64);
    for account in &traffic.accounts {
        let (balance, holds) = traffic.issuers[account.bank].balance(&account.pan).unwrap();
        paid += account.balance_at_start - balance;
        held += holds;
    }
    let cleared = day.captures_fen - day.voids_fen - day.refunds_fen;
    assert_eq!(
        cleared, paid,
        "seed {seed}: the acquirer cleared {cleared} fen (captures {} − voids {} − refunds {}), \
         the cardholders paid {paid} fen at their issuers {rerun}",
        day.captures_fen, day.voids_fen, day.refunds_fen
    );
    let open_pre_auths: i64 = store
        .txns_in_state(TxnState::Approved)
        .unwrap()
        .iter()
        .filter(|r| r.kind == store::TxnKind::PreAuth)
        .map(|r| r.amount_fen)
        .sum();
    assert_eq!(
        open_pre_auths, held,
        "seed {seed}: the journal has {open_pre_auths} fen of pre-authorisations open, the \
         issuers hold {held} fen {rerun}"
    );
    format!(
        "cleared {} dates: captures {} voids {} refunds {} fees {} fen; held {held} fen",
        dates.len(),
        day.captures_fen,
        day.voids_fen,
        day.refunds_fen,
        day.fees_fen
    )
}

/// Invariant 5: a merchant sees only its own data. No row links to another merchant's row, and
/// what the portal shows a merchant about each of its transactions (the explanation, and the
/// evidence package for its issuer) names no other merchant's terminal, RRN or MID. Run after
/// settlement, so the explanations include it.
fn check_invariant_5(seed: u64, traffic: &Traffic) {
    let rerun = format!("(rerun with SHOUDAN_SIM_SEED={seed})");
    let linked_across: Vec<String> = texts(
        &read_only(&traffic.dir.path().join("switch.db")),
        "SELECT t.tid || ' ' || t.kind || ' ' || COALESCE(t.response_code, '-') \
         FROM transactions t JOIN transactions o ON o.id = t.original_id WHERE o.mid <> t.mid",
    );
    assert!(
        linked_across.is_empty(),
        "seed {seed}: invariant 5 broken, rows linked to another merchant's row {rerun}: \
         {linked_across:?}"
    );
    let store: &dyn Store = traffic.store.as_ref();
    let rows: Vec<(String, Vec<store::TxnRow>)> = MERCHANTS
        .iter()
        .map(|(mid, _, _)| {
            let rows = store
                .txns_of_merchant_newest(mid, 0, (i64::MAX, i64::MAX), store::RESOLVE_ROWS_MAX)
                .unwrap();
            assert!(rows.len() < store::RESOLVE_ROWS_MAX as usize);
            ((*mid).to_owned(), rows)
        })
        .collect();
    let mut checked = 0usize;
    for (mid, own) in &rows {
        // What names another merchant: its MID, its terminals, its RRNs, all digit strings.
        let foreign: HashSet<&str> = rows
            .iter()
            .filter(|(m, _)| m != mid)
            .flat_map(|(other, theirs)| {
                std::iter::once(other.as_str())
                    .chain(theirs.iter().map(|r| r.tid.as_str()))
                    .chain(theirs.iter().filter_map(|r| r.rrn.as_deref()))
            })
            .collect();
        let mut lengths: Vec<usize> = foreign.iter().map(|f| f.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        for row in own {
            assert_eq!(
                &row.mid, mid,
                "seed {seed}: the store gave another merchant's row"
            );
            // The evidence package holds the explanation; a row without an RRN has only that.
            let shown = match &row.rrn {
                Some(rrn) => serde_json::to_string(
                    &resolve::evidence(store, &traffic.directory, rrn, Some(mid), traffic.now_ms)
                        .unwrap(),
                ),
                None => serde_json::to_string(
                    &resolve::explain_txn(store, &traffic.directory, row, traffic.now_ms).unwrap(),
                ),
            }
            .unwrap();
            // Invariant 4 too: no card number whole in what a merchant or an issuer is shown.
            for pan in &traffic.pans {
                assert!(
                    !shown.contains(pan.as_str()),
                    "seed {seed}: a full card number {}… shown {rerun}",
                    &pan[..6]
                );
            }
            // Every run of digits, and every stretch of it as long as a foreign name.
            let named: BTreeSet<&str> = shown
                .split(|c: char| !c.is_ascii_digit())
                .flat_map(|run| {
                    lengths.iter().flat_map(move |&n| {
                        (0..(run.len() + 1).saturating_sub(n)).map(move |i| &run[i..i + n])
                    })
                })
                .filter_map(|digits| foreign.get(digits).copied())
                .collect();
            assert!(
                named.is_empty(),
                "seed {seed}: invariant 5 broken, {mid} is shown {named:?} of another merchant \
                 about its {:?} {} {rerun}",
                row.kind,
                row.rrn.as_deref().unwrap_or("(no RRN)")
            );
            checked += 1;
        }
        // Asked for another merchant's transaction by its RRN, the merchant is refused.
        let mut asked = 0usize;
        for theirs in rows
            .iter()
            .filter(|(other, _)| other != mid)
            .flat_map(|(_, theirs)| theirs.iter().filter_map(|r| r.rrn.as_deref()).take(20))
        {
            let answer =
                resolve::evidence(store, &traffic.directory, theirs, Some(mid), traffic.now_ms);
            assert!(
                matches!(answer, Err(resolve::ResolveError::NotVisible(_))),
                "seed {seed}: invariant 5 broken, {mid} was given another merchant's \
                 transaction {theirs} {rerun}"
            );
            asked += 1;
        }
        assert!(asked > 0, "seed {seed}: no other merchant's RRN to ask for");
    }
    assert!(checked > 0, "seed {seed}: no rows to check for invariant 5");
}

/// Every decline or failure reached its merchant's notifications, and so did every approved
/// refund and every reversal the issuer acknowledged or refused: the tailer, running through the crashes
/// and the full disk with small pages, missed none.
fn check_notifications(seed: u64, db: &std::path::Path) {
    let conn = read_only(db);
    let missed = texts(
        &conn,
        "SELECT e.kind || ' ' || t.kind || ' ' || t.tid || ' ' || t.stan FROM events e
         JOIN transactions t ON t.id = e.txn_id
         WHERE t.kind <> 'reversal' AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.dedup_key IN
           (CASE WHEN e.kind IN ('declined', 'failed') THEN 'transaction.declined:'
                 WHEN e.kind = 'reversal_done' THEN 'reversal.done:'
                 ELSE 'refund.done:' END || e.txn_id,
            CASE WHEN e.kind = 'reversal_done' THEN 'reversal.refused:' || e.txn_id END))
         AND (e.kind IN ('declined', 'failed', 'reversal_done')
              OR (e.kind = 'approved' AND t.kind = 'refund'))",
    );
    assert!(
        missed.is_empty(),
        "seed {seed}: events the merchant was never notified of (rerun with \
         SHOUDAN_SIM_SEED={seed}): {missed:?}"
    );
    let notified = texts(&conn, "SELECT dedup_key FROM outbox");
    assert!(
        notified
            .iter()
            .any(|k| k.starts_with("transaction.declined:"))
            && notified.iter().any(|k| k.starts_with("refund.done:")),
        "seed {seed}: no declines or refunds notified: {} notifications",
        notified.len()
    );
}

/// The journal's file, opened beside the store to read what no store call answers.
fn read_only(db: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// The first column of every row `sql` selects, as text.
fn texts(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// DESIGN.md invariant 4, for the database: no full PAN in any column, as text or as the BCD a
/// codec would pack it into.
fn check_no_pan(seed: u64, db: &std::path::Path, pans: &[String]) {
    let conn = read_only(db);
    let tables = texts(&conn, "SELECT name FROM sqlite_master WHERE type = 'table'");
    let needles: Vec<(String, Vec<u8>, Vec<u8>)> = pans
        .iter()
        .map(|pan| {
            let mut digits = pan.clone();
            if digits.len() % 2 == 1 {
                digits.push('0');
            }
            let bcd = digits
                .as_bytes()
                .chunks(2)
                .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
                .collect();
            (pan.clone(), pan.as_bytes().to_vec(), bcd)
        })
        .collect();
    let mut cells = 0u64;
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for c in 0..columns {
                let bytes: Vec<u8> = match row.get_ref(c).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        t.to_vec()
                    }
                    _ => continue,
                };
                cells += 1;
                for (pan, text, bcd) in &needles {
                    let found = bytes.windows(text.len()).any(|w| w == text.as_slice())
                        || bytes.windows(bcd.len()).any(|w| w == bcd.as_slice());
                    assert!(
                        !found,
                        "seed {seed}: full PAN {}… in table {table}",
                        &pan[..6]
                    );
                }
            }
        }
    }
    assert!(cells > 0);
}

/// DESIGN.md invariant 4, for everything the run left on disk once settled and explained
/// (journal, its log, the key store, the issuers' ledgers): no PIN block a terminal sent and
/// no clear terminal master key or zone PIN key, as bytes or as hex; and in the journal's
/// files (its WAL and free pages too, which `check_no_pan`'s SQL does not read) no card
/// number whole, as text or BCD. (The issuers' ledgers are the banks' own, not shoudan's.)
fn check_no_secrets(seed: u64, dir: &std::path::Path, pans: &[String]) {
    let blocks = PIN_BLOCKS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    assert!(!blocks.is_empty(), "seed {seed}: no PIN block was sent");
    let hex = |bytes: &[u8]| -> Vec<u8> {
        bytes
            .iter()
            .flat_map(|b| format!("{b:02X}").into_bytes())
            .collect()
    };
    let tmk: Vec<u8> = (0..TMK_HEX.len() / 2)
        .map(|i| u8::from_str_radix(&TMK_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // PIN blocks (8 bytes) and their hex (16) as integers, each window of a file one cheap
    // look-up; the TMK's three forms compared as they are.
    type Fast = std::hash::BuildHasherDefault<Mix>;
    let as_u64 = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap());
    let as_u128 = |w: &[u8]| u128::from_le_bytes(w.try_into().unwrap());
    let raw: HashSet<u64, Fast> = blocks.iter().map(|b| as_u64(b)).collect();
    let in_hex: HashSet<u128, Fast> = blocks.iter().map(|b| as_u128(&hex(b))).collect();
    let zpk: Vec<u8> = (0..ZPK_HEX.len() / 2)
        .map(|i| u8::from_str_radix(&ZPK_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let tmk_forms = [
        ("the TMK", tmk.clone()),
        ("the TMK, in hex", hex(&tmk)),
        ("the TMK, in lower-case hex", hex(&tmk).to_ascii_lowercase()),
        ("the ZPK", zpk.clone()),
        ("the ZPK, in hex", hex(&zpk)),
        ("the ZPK, in lower-case hex", hex(&zpk).to_ascii_lowercase()),
    ];
    // Card numbers as text and as the BCD a codec packs them into (padded with 0 or F), looked
    // up by their first eight bytes, then compared whole.
    let mut pan_forms: Vec<Vec<u8>> = Vec::new();
    for pan in pans {
        pan_forms.push(pan.as_bytes().to_vec());
        for pad in [b'0', b'F'] {
            let mut digits = pan.as_bytes().to_vec();
            if digits.len() % 2 == 1 {
                digits.push(pad);
            }
            let nibble = |d: u8| if d == b'F' { 0xF } else { d - b'0' };
            pan_forms.push(
                digits
                    .chunks(2)
                    .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
                    .collect(),
            );
        }
    }
    let pan_heads: HashSet<u64, Fast> = pan_forms.iter().map(|f| as_u64(&f[..8])).collect();
    // Where a card number whole is in `bytes`, if it is.
    let pan_at = |bytes: &[u8]| {
        bytes.windows(8).enumerate().find_map(|(at, w)| {
            (pan_heads.contains(&as_u64(w)) && pan_forms.iter().any(|f| bytes[at..].starts_with(f)))
                .then_some(at)
        })
    };
    // The look-up finds what it looks for: a card number planted as text, and as BCD.
    for planted in [&pan_forms[0], &pan_forms[1]] {
        let mut bytes = b"..........".to_vec();
        bytes.extend_from_slice(planted);
        bytes.extend_from_slice(b"....");
        assert_eq!(
            pan_at(&bytes),
            Some(10),
            "seed {seed}: the card number scan is blind"
        );
    }
    let mut files = vec![dir.to_path_buf()];
    let mut scanned = 0;
    let mut journal_files = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let shown = path.display();
        assert!(
            !bytes.windows(8).any(|w| raw.contains(&as_u64(w))),
            "seed {seed}: a PIN block in {shown}"
        );
        assert!(
            !bytes.windows(16).any(|w| in_hex.contains(&as_u128(w))),
            "seed {seed}: a PIN block, in hex, in {shown}"
        );
        for (what, form) in &tmk_forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                "seed {seed}: {what} in {shown}"
            );
        }
        let journal = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("switch.db"));
        if journal {
            if let Some(at) = pan_at(&bytes) {
                panic!("seed {seed}: a full card number in {shown} at byte {at}");
            }
            journal_files += 1;
        }
        scanned += 1;
    }
    assert!(scanned > 1, "seed {seed}: nothing on disk to scan");
    assert!(journal_files > 0, "seed {seed}: no journal file scanned");
}

/// A hasher for integers that are random already (PIN blocks): one multiply.
#[derive(Default)]
struct Mix(u64);

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64 ^ ((n >> 64) as u64).rotate_left(17));
    }
}

// --- entry points

/// `count`, or 0 when the variable `name` is "0" (a fault left out).
fn unless_off(name: &str, count: u64) -> u64 {
    if std::env::var(name).as_deref() == Ok("0") {
        0
    } else {
        count
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn seeded_simulation_keeps_the_invariants() {
    let txns = env_u64("SHOUDAN_SIM_TXNS").map_or(TXNS_PER_TERMINAL_DEFAULT, |n| n as usize);
    let seeds: Vec<u64> = match (env_u64("SHOUDAN_SIM_SEED"), env_u64("SHOUDAN_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(k)) => (1..=k).collect(),
        (None, None) => (1..=SEEDS_DEFAULT)
            .chain(SEEDS_THAT_FOUND_BUGS.iter().copied())
            .collect(),
    };
    let mut approved_by_code = 0;
    for seed in seeds {
        eprintln!("sim: seed {seed} ({TERMINALS} terminals x {txns} requests)");
        let outcome = run(seed, txns);
        eprintln!("sim: seed {seed} ok: {}", outcome.fingerprint);
        approved_by_code += outcome.approved_by_code;
    }
    // The mix reaches the lookup by authorisation code, not only its refusals.
    assert!(
        approved_by_code > 0,
        "no completion by authorisation code was approved"
    );
}

#[test]
fn a_seed_replays_the_same_run() {
    // Seed 2 once diverged between runs, in the order its answers came (a link's waiters were
    // failed in hash order, and `select!` picked its branches at random). Seeds of each
    // remainder by 4 (the start's distance from midnight and from the 23:00 cut-over, and
    // whether the index keeps its entries, follow it), and the seed that found a bug.
    for seed in [2, 3, 4, 57] {
        let first = run(seed, TXNS_PER_TERMINAL_DEFAULT);
        let second = run(seed, TXNS_PER_TERMINAL_DEFAULT);
        assert_eq!(first.fingerprint, second.fingerprint, "seed {seed}");
    }
}
