//! Limits and configuration of the switch. Every bound is a named constant here; the
//! configuration chooses values within them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use paycrypto::KeyHandle;

/// Terminal connections open at once; beyond this a new connection is closed at once.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Largest frame accepted from a terminal or an issuer (after the 2-byte length).
pub const FRAME_LEN_MAX: usize = iso8583::FRAME_LEN_MAX;
/// Requests of one terminal connection being worked on at once; more are answered 96.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;
/// Requests being worked on across all terminal connections; more are answered 96 at once
/// (PROTOCOL.md: system error, try later), so overload costs a reply, not a growing queue.
/// At 25,000 requests/s and a 100 ms issuer this still admits everything (2,500 in flight).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 8_192;
/// How long a terminal has to send the rest of a frame once its length prefix has arrived;
/// a truncated frame then closes the connection instead of holding it.
pub const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new terminal connection has, from its connect, to name one of the switch's
/// terminals (field 41 with that terminal's merchant in 42; `SwitchConfig::first_frame_timeout`'s
/// default). A terminal connects to send; a connection that sends nothing would hold one of the
/// `CONNECTIONS_MAX` places for ever, and enough of them would shut every terminal out, their
/// reversals included (an echo test and silence, or echoes every little while, hold no place
/// either); after that a connection may stay idle as long as it likes.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Responses queued for one terminal connection's writer, which holds at most one more queue's
/// worth in the batch it is writing: what a peer that does not read can make the switch hold.
pub const CONNECTION_QUEUE_MAX: usize = 2 * IN_FLIGHT_PER_CONNECTION_MAX;
/// How long writing a connection's answers may take before the connection is closed
/// (`SwitchConfig::response_write_timeout`'s default): a peer that stops reading them holds its
/// queue and its in-flight requests until then.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests awaiting an answer on one issuer link at most; more are answered 91 at once. The
/// bound a link has is half of `SwitchConfig::requests_in_flight` when there are other links
/// (`issuer_in_flight_max`), so one issuer that stops answering cannot take the other issuers'
/// places.
pub const ISSUER_IN_FLIGHT_MAX: usize = 8_192;
/// Frames queued for one issuer link's writer.
pub const ISSUER_QUEUE_MAX: usize = 8_192;
/// Consecutive timeouts after which an issuer's breaker opens.
pub const BREAKER_TIMEOUTS_MAX: u32 = 20;
/// `SwitchConfig::issuer_echo_after` unless set: how long an issuer link may be silent (no
/// frame read) before the switch sends it an echo test (docs/issuer-link.md).
pub const ISSUER_ECHO_AFTER_DEFAULT: Duration = Duration::from_secs(30);
/// Reversals claimed from the store per store-and-forward pass.
pub const SAF_BATCH_MAX: u32 = 256;
/// `SwitchConfig::saf_lease` unless configured.
pub const SAF_LEASE_DEFAULT: Duration = Duration::from_secs(30);
/// Reversal resend backoff: doubles from the first to the last, then stays.
pub const SAF_BACKOFF_FIRST_MS: i64 = 1_000;
pub const SAF_BACKOFF_LAST_MS: i64 = 60_000;
/// Days back an original may be for a refund (PROTOCOL.md: within 30 days), and a
/// pre-authorisation for its completion or void.
pub const REFUND_DAYS_MAX: i64 = 30;
/// Ids, RRNs and traces are reserved from the store in blocks of this many.
pub const SEQUENCE_BLOCK: u64 = 10_000;

/// `SwitchConfig::journal_wait` unless set: three times it (the request's row, its outcome, and
/// once more for an outcome already being committed; four on PostgreSQL, whose request also
/// reads the journal first) plus an issuer's timeout (5 s in the demo) stays near a terminal's
/// usual 15 s or more; a terminal that gives up first reverses the request.
pub const JOURNAL_WAIT_DEFAULT: Duration = Duration::from_secs(3);

/// Day cut-over (日切), minutes after midnight China time: from then on transactions belong to
/// the next clearing date. 23:00 is CUP's cut-over; the acquirer follows it so that its clearing
/// dates agree with the network's (field 15).
pub const CUTOVER_MINUTE_DEFAULT: u16 = 23 * 60;
pub const MINUTES_PER_DAY: u16 = 24 * 60;
/// After the cut-over, a void or reversal of a transaction from just before it still counts as
/// "same day": terminals and their resends lag the host's clock by minutes, and a reversal
/// refused with 25 would leave the issuer's approval standing.
pub const CUTOVER_GRACE_MS: i64 = 30 * 60_000;

const _: () = assert!(CUTOVER_MINUTE_DEFAULT < MINUTES_PER_DAY);
const _: () = assert!(CONNECTION_QUEUE_MAX > IN_FLIGHT_PER_CONNECTION_MAX);
const _: () = assert!(ISSUER_QUEUE_MAX >= ISSUER_IN_FLIGHT_MAX);
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX >= IN_FLIGHT_PER_CONNECTION_MAX);

/// One issuer host: where it listens and the zone PIN key shared with it.
#[derive(Clone, Debug)]
pub struct IssuerEndpoint {
    pub addr: SocketAddr,
    pub zpk: KeyHandle,
    /// How long to wait for an answer before answering the terminal 98 and reversing.
    pub timeout: Duration,
}

/// How the switch runs.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// Where terminals connect (port 0: any free port).
    pub listen: SocketAddr,
    /// Field 32 of requests to issuers.
    pub acquirer_code: String,
    /// Two digits leading every RRN, so RRNs stay unique across nodes.
    pub node_id: u8,
    /// Bank code (as in the BIN table, e.g. `ICBC`) → issuer host.
    pub issuers: HashMap<String, IssuerEndpoint>,
    /// Where cards of banks without their own endpoint go (a card network gateway).
    pub default_issuer: Option<String>,
    /// When false, transactions are not journalled (benchmarks of the journal's cost only).
    pub journal: bool,
    /// How long an authorisation waits for a journal write (a group commit takes milliseconds)
    /// before the terminal is answered 96: a journal that hangs rather than fails (a stalled
    /// disk, a database that stops answering) must not hold terminals past their own timeout.
    /// A write that lands after its 96 is settled then (`Core::settle_late`).
    pub journal_wait: Duration,
    /// How often the store-and-forward loop looks for reversals due.
    pub saf_interval: Duration,
    /// How long a claimed reversal is left alone before another attempt may claim it.
    pub saf_lease: Duration,
    /// How long a retried request waits for its first attempt's answer before it reads the
    /// journal. A first attempt taken here is answered within its issuer's timeout; one taken
    /// by another node (several nodes, one journal) is answered there, and this node learns
    /// the answer from the journal only.
    pub retry_wait: Duration,
    /// Several nodes share the journal (PostgreSQL). Between two connections of a terminal
    /// here another node may have taken its requests, so the first request of each
    /// connection marks the terminal's batch in the in-memory index first (one read of the
    /// store per connection); off, only a sign-in does.
    pub shared_journal: bool,
    /// How many clearing days before today the in-memory index holds whole (`switch::ledger`).
    /// A simulation sets a negative number: the index then holds only what requests in
    /// progress hold, and every other lookup is the store's.
    pub index_days_held: i64,
    /// How often the in-memory index lets go of older entries.
    pub index_forget_interval: Duration,
    /// Requests worked on at once across all terminal connections (at most
    /// `REQUESTS_IN_FLIGHT_MAX`); beyond it they are answered 96 at once.
    pub requests_in_flight: usize,
    /// How long writing a connection's answers may take before the connection is closed
    /// (`RESPONSE_WRITE_TIMEOUT` unless a test shortens it).
    pub response_write_timeout: Duration,
    /// How long a new connection has to start its first frame (`FIRST_FRAME_TIMEOUT` unless a
    /// test shortens it).
    pub first_frame_timeout: Duration,
    /// An issuer link that has read nothing for this long is sent an echo test (`0820`,
    /// 60.3 = `301`); one that then reads nothing within the issuer's timeout is dropped and
    /// connected again. TCP does not tell a host that lost power or a connection a firewall
    /// forgot; without this such a link stays "up", every request to it timing out.
    pub issuer_echo_after: Duration,
    /// Per-merchant risk rules (`risk::RuleBook::from_json` of the rules file); empty: only
    /// the merchant checks apply.
    pub risk_rules: std::sync::Arc<risk::RuleBook>,
    /// How often merchant states and terminal statuses are re-read, so an operator's review
    /// or suspension reaches the running switch.
    pub risk_refresh: Duration,
    /// Day cut-over, minutes after local midnight (below `MINUTES_PER_DAY`; 0 = midnight).
    pub cutover_minute: u16,
    /// Keep every connection's and request's task abortable, so that `SwitchHandle::crash`
    /// stops the switch mid-request as a `kill -9` would (the deterministic simulation). Off
    /// in production: the list costs a lock per spawn.
    pub abortable: bool,
    /// If set, a start's reading of the month's marks (`switch::ledger::load_marks`) waits
    /// for a notification on it: a test sends requests while the marks are being read.
    pub marks_gate: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// For tests only: if set and armed, the next financial request waits here between its
    /// arrival and its merchant's risk check (a test moves the clock past midnight meanwhile).
    #[doc(hidden)]
    pub risk_check_gate: Option<std::sync::Arc<TestGate>>,
}

/// For tests only: a place a test holds one request at (`SwitchConfig::risk_check_gate`):
/// armed, the next request to pass says so on `reached` and waits for `release`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct TestGate {
    pub armed: std::sync::atomic::AtomicBool,
    pub reached: tokio::sync::Notify,
    pub release: tokio::sync::Notify,
}

impl TestGate {
    /// Holds the caller if the gate is armed (once).
    pub(crate) async fn pass(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
    }
}

impl SwitchConfig {
    /// How long after a request was sent its reversal may go to the issuer when nothing says
    /// the request is done there: the longest issuer timeout and a journal wait.
    pub(crate) fn reversal_hold_ms(&self) -> i64 {
        let timeout = self.longest_issuer_timeout();
        i64::try_from(self.journal_wait.saturating_add(timeout).as_millis()).unwrap_or(i64::MAX)
    }

    /// The longest of the issuers' timeouts (zero without issuers).
    pub(crate) fn longest_issuer_timeout(&self) -> Duration {
        self.issuers
            .values()
            .map(|endpoint| endpoint.timeout)
            .max()
            .unwrap_or_default()
    }

    pub fn new(listen: SocketAddr) -> Self {
        SwitchConfig {
            listen,
            acquirer_code: "48020000".to_owned(),
            node_id: 1,
            issuers: HashMap::new(),
            default_issuer: None,
            journal: true,
            journal_wait: JOURNAL_WAIT_DEFAULT,
            saf_interval: Duration::from_millis(200),
            saf_lease: SAF_LEASE_DEFAULT,
            retry_wait: Duration::from_secs(30),
            shared_journal: false,
            index_days_held: 1,
            index_forget_interval: Duration::from_secs(3_600),
            requests_in_flight: REQUESTS_IN_FLIGHT_MAX,
            response_write_timeout: RESPONSE_WRITE_TIMEOUT,
            first_frame_timeout: FIRST_FRAME_TIMEOUT,
            issuer_echo_after: ISSUER_ECHO_AFTER_DEFAULT,
            risk_rules: std::sync::Arc::new(risk::RuleBook::empty()),
            risk_refresh: Duration::from_secs(1),
            cutover_minute: CUTOVER_MINUTE_DEFAULT,
            abortable: false,
            marks_gate: None,
            risk_check_gate: None,
        }
    }
}
