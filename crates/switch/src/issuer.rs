//! Persistent links to issuer hosts (docs/issuer-link.md): one TCP connection per issuer,
//! many requests in flight, replies matched by (reply MTI, host trace) so that a `0410` is never
//! taken for the `0210` of the same trace, and by RRN, so that a late reply to an earlier
//! request under the same trace does not take this one's place. Reconnects by itself; a link
//! silent too long is sent an echo test and dropped if that goes unanswered; a breaker answers
//! fast while the issuer is down or keeps timing out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use iso8583::{Frame, FrameHead, MessageBuilder, Mti};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{BREAKER_TIMEOUTS_MAX, ISSUER_IN_FLIGHT_MAX, ISSUER_QUEUE_MAX, IssuerEndpoint};
use crate::wire::{WipingReader, append_wiped, read_frame};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The link's read buffer: many replies in one read under load (tokio's `BufReader` default).
const ISSUER_READ_BUFFER_BYTES: usize = 8 * 1024;
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_LAST: Duration = Duration::from_secs(2);
/// How long the breaker stays open after `BREAKER_TIMEOUTS_MAX` timeouts in a row.
const BREAKER_OPEN_MS: i64 = 5_000;

/// Why an exchange with an issuer produced no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Nothing was sent: link down, breaker open, or too much in flight. Answer 91.
    #[error("issuer unavailable")]
    Unavailable,
    /// Sent, no reply in time: the issuer may have acted. Answer 98 and reverse.
    #[error("issuer did not answer in time")]
    Timeout,
    /// Sent, then the connection dropped: as uncertain as a timeout.
    #[error("issuer link lost with the request outstanding")]
    Lost,
}

/// A byte stream to an issuer host.
pub trait IssuerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> IssuerStream for T {}

/// What a connection attempt yields.
pub type Connecting<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Box<dyn IssuerStream>>> + Send + 'a>>;

/// How issuer links reach their hosts: TCP in production ([`TcpConnector`]), in-memory pipes
/// with faults in the deterministic simulation.
pub trait IssuerConnector: Send + Sync + 'static {
    fn connect<'a>(&'a self, bank: &'a str, addr: SocketAddr) -> Connecting<'a>;
}

/// Issuer links over TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl IssuerConnector for TcpConnector {
    fn connect<'a>(&'a self, _bank: &'a str, addr: SocketAddr) -> Connecting<'a> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as Box<dyn IssuerStream>)
        })
    }
}

/// Ordered, so that when a link drops, its waiters learn it in trace order, the same way
/// every time (a seeded simulation replays exactly). Each holds the RRN its reply must echo.
type Waiters = BTreeMap<(u16, u32), Waiter>;

struct Waiter {
    rrn: Option<[u8; 12]>,
    sender: oneshot::Sender<Zeroizing<Vec<u8>>>,
}

/// How a link checks that its issuer is still there (`SwitchConfig::issuer_echo_after`).
#[derive(Clone, Debug)]
pub(crate) struct EchoTest {
    /// Silence (no frame read) after which an echo test is sent.
    pub after: Duration,
    pub head: FrameHead,
    /// Field 32.
    pub acquirer_code: String,
}

impl EchoTest {
    /// The `0820` echo test under `trace`: 11, 32, and 60 with 60.3 = `301`.
    fn frame(&self, trace: u32) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = MessageBuilder::new(Mti::NETWORK_ADVICE);
        out.set_stan(trace).ok()?;
        out.set_digits(32, &self.acquirer_code).ok()?;
        out.set_digits(60, "00000000301").ok()?;
        let mut bytes = Vec::with_capacity(64);
        out.encode_frame(&self.head, &mut bytes).ok()?;
        Some(Zeroizing::new(bytes))
    }
}

/// Requests one of `links` issuer links may have awaiting answers when the switch admits
/// `requests_in_flight` at once: half of them when there are other links (all of them when
/// there are none), and at most [`ISSUER_IN_FLIGHT_MAX`]. A request holds its switch-wide
/// place while it waits at the issuer, so without a smaller bound per issuer one bank that
/// stops answering (its link up) would take every place within a timeout and the other banks'
/// cards would be answered 96; with it, that bank's excess is answered 91 at once and the
/// others keep half the switch.
pub(crate) fn issuer_in_flight_max(requests_in_flight: usize, links: usize) -> usize {
    let share = if links > 1 {
        requests_in_flight / 2
    } else {
        requests_in_flight
    };
    share.clamp(1, ISSUER_IN_FLIGHT_MAX)
}

/// Reversals a link with `in_flight_max` places for requests may have awaiting answers beside
/// them: a quarter as many (at least one). One the link has no place for is put off
/// (`LinkError::Unavailable`) and resent by the queue later.
fn reversals_in_flight_max(in_flight_max: usize) -> usize {
    (in_flight_max / 4).max(1)
}

pub(crate) struct IssuerLink {
    pub name: String,
    pub endpoint: IssuerEndpoint,
    /// The zone PIN key is single-length (53.2 of the requests carrying a PIN block), read
    /// once from the HSM at start.
    pub zpk_single_des: bool,
    /// Requests carry the card number, tracks 2 and 3 and the translated PIN block: each is wiped
    /// when dropped, and so is what the writer batched of them.
    outbound: mpsc::Sender<Zeroizing<Vec<u8>>>,
    waiters: Mutex<Waiters>,
    in_flight: Semaphore,
    /// The permits `in_flight` started with ([`issuer_in_flight_max`]).
    in_flight_max: usize,
    /// Reversals' places, apart from the requests' ([`reversals_in_flight_max`]): a queue of
    /// them resent after an outage to an issuer slow to acknowledge them would otherwise hold
    /// every place for a timeout, and its terminals' requests be answered 91.
    reversals_in_flight: Semaphore,
    connected: AtomicBool,
    echo: EchoTest,
    /// When the connection last read a frame, in ms since `epoch` (tokio's clock, which a
    /// simulation runs on virtual time).
    heard_ms: AtomicU64,
    epoch: tokio::time::Instant,
    echo_trace: AtomicU32,
    timeouts_in_a_row: AtomicU32,
    /// Until when the breaker is open, in ms since `epoch`: a monotonic clock, so that a wall
    /// clock stepped back does not hold the issuer off for as long again.
    open_until_ms: AtomicI64,
    connector: Arc<dyn IssuerConnector>,
}

impl IssuerLink {
    /// Creates the link and starts the task that keeps it connected until `stop` changes.
    pub fn start(
        name: String,
        endpoint: IssuerEndpoint,
        zpk_single_des: bool,
        echo: EchoTest,
        connector: Arc<dyn IssuerConnector>,
        in_flight_max: usize,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (outbound, receiver) = mpsc::channel(ISSUER_QUEUE_MAX);
        let link = Arc::new(IssuerLink {
            name,
            endpoint,
            zpk_single_des,
            outbound,
            waiters: Mutex::new(BTreeMap::new()),
            in_flight: Semaphore::new(in_flight_max),
            in_flight_max,
            reversals_in_flight: Semaphore::new(reversals_in_flight_max(in_flight_max)),
            connected: AtomicBool::new(false),
            echo,
            heard_ms: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
            echo_trace: AtomicU32::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
            connector,
        });
        let task = tokio::spawn(Arc::clone(&link).run(receiver, stop));
        (link, task)
    }

    /// Whether a request under host trace `trace` is awaited on this link, whatever its
    /// reply's MTI (an authorisation's, a financial request's or advice's, a reversal's).
    pub fn trace_awaited(&self, trace: u32) -> bool {
        let waiters = self.waiters();
        [110, 130, 210, 230, 410, 430]
            .into_iter()
            .any(|mti| waiters.contains_key(&(mti, trace)))
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Milliseconds since the link was made, on tokio's monotonic clock.
    fn since_epoch_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether repeated timeouts keep requests from the issuer for now.
    fn breaker_open(&self) -> bool {
        self.since_epoch_ms() < self.open_until_ms.load(Ordering::Acquire)
    }

    /// The link's state for the metrics (requests in flight, reversals not counted).
    pub fn state(&self) -> crate::metrics::IssuerLinkState {
        let free = self.in_flight.available_permits();
        crate::metrics::IssuerLinkState {
            bank: self.name.clone(),
            connected: self.is_connected(),
            breaker_open: self.breaker_open(),
            in_flight: u64::try_from(self.in_flight_max.saturating_sub(free)).unwrap_or(0),
        }
    }

    /// Sends a request frame (length prefix included) and waits for the reply with
    /// `reply_mti` and `trace`; returns the reply frame without its prefix. Both are wiped
    /// when dropped. A reply under that trace naming another RRN than `rrn` in field 37 is a
    /// late one to an earlier request (traces repeat) and does not answer this one; one
    /// without field 37 does, for the caller to find it unreadable.
    pub async fn exchange(
        &self,
        reply_mti: u16,
        trace: u32,
        rrn: Option<&str>,
        frame: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        if !self.is_connected() || self.breaker_open() {
            return Err(LinkError::Unavailable);
        }
        let places = if reply_mti == Mti::REVERSAL_RESPONSE.value() {
            &self.reversals_in_flight
        } else {
            &self.in_flight
        };
        let _permit = places.try_acquire().map_err(|_| LinkError::Unavailable)?;
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiters = self.waiters();
            if waiters.contains_key(&(reply_mti, trace)) {
                return Err(LinkError::Unavailable);
            }
            let rrn = rrn.and_then(|r| <[u8; 12]>::try_from(r.trim().as_bytes()).ok());
            waiters.insert((reply_mti, trace), Waiter { rrn, sender });
        }
        if self.outbound.try_send(frame).is_err() {
            self.waiters().remove(&(reply_mti, trace));
            return Err(LinkError::Unavailable);
        }
        let sent = std::time::Instant::now();
        let waited = tokio::time::timeout(self.endpoint.timeout, receiver).await;
        // Time at the issuer (and on the link) is not the switch's: the metrics subtract it.
        crate::metrics::add_issuer_time(sent.elapsed());
        match waited {
            Ok(Ok(reply)) => {
                // As only authorisations' timeouts count, only their replies end a run of them.
                if reply_mti != Mti::REVERSAL_RESPONSE.value() {
                    self.timeouts_in_a_row.store(0, Ordering::Release);
                }
                Ok(reply)
            }
            Ok(Err(_)) => Err(LinkError::Lost),
            Err(_) => {
                self.waiters().remove(&(reply_mti, trace));
                // Only authorisations count towards the breaker: an issuer slow to acknowledge
                // reversals (many queued after an outage, all sent in one pass) may be
                // answering its terminals' requests at once, which must not be refused 91.
                if reply_mti == Mti::REVERSAL_RESPONSE.value() {
                    return Err(LinkError::Timeout);
                }
                let count = self.timeouts_in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
                if count >= BREAKER_TIMEOUTS_MAX {
                    self.timeouts_in_a_row.store(0, Ordering::Release);
                    let until = self.since_epoch_ms().saturating_add(BREAKER_OPEN_MS);
                    self.open_until_ms.store(until, Ordering::Release);
                    tracing::warn!(issuer = %self.name, "breaker open after repeated timeouts");
                }
                Err(LinkError::Timeout)
            }
        }
    }

    async fn run(
        self: Arc<Self>,
        mut outbound: mpsc::Receiver<Zeroizing<Vec<u8>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = RECONNECT_FIRST;
        loop {
            if *stop.borrow() {
                return;
            }
            let connect = tokio::time::timeout(
                CONNECT_TIMEOUT,
                self.connector.connect(&self.name, self.endpoint.addr),
            );
            let stream = tokio::select! {
                // Stop first, and a fixed order: a seeded simulation replays exactly.
                biased;
                _ = stop.changed() => return,
                result = connect => result,
            };
            match stream {
                Ok(Ok(stream)) => {
                    tracing::info!(issuer = %self.name, "issuer link up");
                    self.connected.store(true, Ordering::Release);
                    let (stopped, heard) = self.serve(stream, &mut outbound, &mut stop).await;
                    // Back to the first wait only after a connection that carried a reply: a
                    // host that takes connections and drops them at once is not tried again
                    // every 50 ms.
                    if heard {
                        backoff = RECONNECT_FIRST;
                    }
                    self.connected.store(false, Ordering::Release);
                    // Every outstanding request is now in doubt; its waiter sees `Lost`.
                    self.waiters().clear();
                    while outbound.try_recv().is_ok() {}
                    if stopped {
                        return;
                    }
                    tracing::warn!(issuer = %self.name, "issuer link down");
                }
                Ok(Err(error)) => {
                    tracing::debug!(issuer = %self.name, %error, "issuer connect failed");
                }
                Err(_) => tracing::debug!(issuer = %self.name, "issuer connect timed out"),
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_LAST);
        }
    }

    fn heard_now(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.store(ms, Ordering::Release);
    }

    /// How long since the connection last read a frame.
    fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(heard)
    }

    /// Runs one connection until it fails (false) or the switch stops (true); with whether
    /// it read any frame.
    async fn serve(
        &self,
        stream: Box<dyn IssuerStream>,
        outbound: &mut mpsc::Receiver<Zeroizing<Vec<u8>>>,
        stop: &mut watch::Receiver<bool>,
    ) -> (bool, bool) {
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = WipingReader::with_capacity(ISSUER_READ_BUFFER_BYTES, reader);
        self.heard_now();
        let heard = AtomicBool::new(false);
        let read = async {
            let mut buf = Zeroizing::new(Vec::with_capacity(512));
            loop {
                match read_frame(&mut reader, &mut buf).await {
                    Ok(true) => {
                        self.heard_now();
                        heard.store(true, Ordering::Relaxed);
                        self.deliver(&buf);
                        buf.as_mut_slice().zeroize();
                    }
                    Ok(false) => return,
                    Err(error) => {
                        tracing::warn!(issuer = %self.name, %error, "bad frame from issuer");
                        return;
                    }
                }
            }
        };
        let write = async {
            let mut batch = Vec::with_capacity(4096);
            while let Some(frame) = outbound.recv().await {
                batch.clear();
                append_wiped(&mut batch, &frame);
                // Coalesce what queued up meanwhile into one write.
                while batch.len() < 64 * 1024 {
                    match outbound.try_recv() {
                        Ok(more) => append_wiped(&mut batch, &more),
                        Err(_) => break,
                    }
                }
                // Bounded: an issuer that stops reading (its own heartbeats still arriving, so
                // the link never looks silent) would hold every request and reversal behind
                // this write for as long as it stayed connected.
                let written =
                    tokio::time::timeout(self.endpoint.timeout, writer.write_all(&batch)).await;
                batch.as_mut_slice().zeroize();
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(issuer = %self.name, "issuer not reading: connecting again");
                        return;
                    }
                }
            }
        };
        // A connection silent for `echo.after` is asked whether the issuer is there; one that
        // then reads nothing within the issuer's timeout is given up.
        let watch = async {
            loop {
                let silent = self.silent_for();
                if silent < self.echo.after {
                    tokio::time::sleep(self.echo.after - silent).await;
                    continue;
                }
                let trace = self.echo_trace.fetch_add(1, Ordering::Relaxed) % 999_999 + 1;
                if let Some(frame) = self.echo.frame(trace) {
                    // A full queue is not silence: requests are on their way.
                    let _ = self.outbound.try_send(frame);
                }
                tokio::time::sleep(self.endpoint.timeout).await;
                if self.silent_for() >= self.echo.after + self.endpoint.timeout {
                    tracing::warn!(
                        issuer = %self.name,
                        silent_ms = u64::try_from(self.silent_for().as_millis()).unwrap_or(u64::MAX),
                        "issuer link silent, echo test unanswered: connecting again"
                    );
                    return;
                }
            }
        };
        let stopped = tokio::select! {
            // Stop first; then replies before requests, in a fixed order, so that a seeded
            // simulation replays exactly.
            biased;
            _ = stop.changed() => true,
            () = read => false,
            () = write => false,
            () = watch => false,
        };
        (stopped, heard.load(Ordering::Relaxed))
    }

    fn deliver(&self, frame: &[u8]) {
        let Ok(decoded) = Frame::decode_unprefixed(frame) else {
            tracing::warn!(issuer = %self.name, "undecodable reply from issuer");
            return;
        };
        let mti = decoded.message.mti().value();
        // An echo test's answer: that it came is all it says.
        if mti == Mti::NETWORK_ADVICE_RESPONSE.value() {
            return;
        }
        let Some(trace) = decoded.message.stan() else {
            return;
        };
        let theirs = decoded.message.text(37).map(str::trim);
        let waiter = {
            let mut waiters = self.waiters();
            let stale = waiters.get(&(mti, trace)).is_some_and(|w| {
                matches!((w.rrn, theirs), (Some(ours), Some(theirs)) if theirs.as_bytes() != ours)
            });
            if stale {
                tracing::debug!(issuer = %self.name, mti, trace, "late reply under a trace now reused");
                return;
            }
            waiters.remove(&(mti, trace))
        };
        match waiter {
            // A waiter that timed out is gone; its late reply is dropped (the reversal covers it).
            Some(waiter) => drop(waiter.sender.send(Zeroizing::new(frame.to_vec()))),
            None => tracing::debug!(issuer = %self.name, mti, trace, "unmatched reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use iso8583::{Header, Tpdu};
    use tokio::net::TcpListener;

    fn head() -> FrameHead {
        FrameHead {
            tpdu: Tpdu {
                destination: [0, 0],
                source: [0, 0],
            },
            header: Header::from_bytes([0x60, 0, 0, 0, 0, 0]).unwrap(),
        }
    }

    fn request(mti: Mti, trace: u32) -> (String, Zeroizing<Vec<u8>>) {
        let rrn = format!("{trace:012}");
        let mut out = MessageBuilder::new(mti);
        out.set_stan(trace).unwrap();
        out.set_text(37, &rrn).unwrap();
        let mut bytes = Vec::new();
        out.encode_frame(&head(), &mut bytes).unwrap();
        (rrn, Zeroizing::new(bytes))
    }

    /// A link of 8 places to the issuer at `addr`, answers awaited for `timeout`, once it is
    /// connected; with the sender that stops it, to be kept as long as the link.
    async fn connected_link(
        addr: SocketAddr,
        timeout: Duration,
    ) -> (Arc<IssuerLink>, watch::Sender<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        let endpoint = IssuerEndpoint {
            addr,
            zpk: paycrypto::KeyHandle::from_raw(1),
            timeout,
        };
        let echo = EchoTest {
            after: Duration::from_secs(60),
            head: head(),
            acquirer_code: "00000000".into(),
        };
        let (link, _task) = IssuerLink::start(
            "T".into(),
            endpoint,
            false,
            echo,
            Arc::new(TcpConnector),
            8,
            stop_rx,
        );
        for _ in 0..500 {
            if link.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(link.is_connected());
        (link, stop)
    }

    /// An issuer that approves requests at once and never acknowledges a reversal.
    async fn issuer_ignoring_reversals() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            while read_frame(&mut stream, &mut buf).await.unwrap_or(false) {
                let frame = Frame::decode_unprefixed(&buf).unwrap();
                let mti = frame.message.mti();
                if mti == Mti::REVERSAL {
                    continue;
                }
                let mut out = MessageBuilder::new(mti.response().unwrap());
                out.copy_from(&frame.message, 11).unwrap();
                out.copy_from(&frame.message, 37).unwrap();
                out.set_text(39, "00").unwrap();
                let mut bytes = Vec::new();
                out.encode_frame(&head(), &mut bytes).unwrap();
                stream.write_all(&bytes).await.unwrap();
            }
        });
        addr
    }

    /// An issuer that stops reading while still sending (its heartbeats) is connected to
    /// again once a write has waited the issuer's timeout, rather than held for as long as it
    /// stays connected with every request queued behind the write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_issuer_that_stops_reading_is_connected_to_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, mut accepts) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.send(()).await.unwrap();
                // Never reads; sends an echo test of its own every 50 ms.
                let mut echo = MessageBuilder::new(Mti::NETWORK_ADVICE);
                echo.set_stan(1).unwrap();
                let mut bytes = Vec::new();
                echo.encode_frame(&head(), &mut bytes).unwrap();
                held.push(tokio::spawn(async move {
                    while stream.write_all(&bytes).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
        });
        let (link, _stop) = connected_link(addr, Duration::from_millis(500)).await;
        accepts.recv().await.unwrap();
        // More than the sockets' buffers hold, never read.
        let mut sending = Vec::new();
        for trace in 1..=8 {
            let link = Arc::clone(&link);
            sending.push(tokio::spawn(async move {
                let frame = Zeroizing::new(vec![0u8; 2 << 20]);
                link.exchange(Mti::FINANCIAL_RESPONSE.value(), trace, None, frame)
                    .await
            }));
        }
        let again = tokio::time::timeout(Duration::from_secs(10), accepts.recv()).await;
        assert!(
            again.is_ok(),
            "the link stayed on an issuer that does not read"
        );
        for s in sending {
            assert!(s.await.unwrap().is_err());
        }
    }

    /// Reversals resent in a burst to an issuer that does not acknowledge them take their own
    /// places, a quarter of the link's: the rest are put off, and requests still go through
    /// (they took every place, and the requests were answered 91).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reversals_awaiting_acknowledgement_leave_the_requests_their_places() {
        let addr = issuer_ignoring_reversals().await;
        let (link, _stop) = connected_link(addr, Duration::from_secs(5)).await;
        let reply_mti = Mti::REVERSAL_RESPONSE.value();
        let mut waiting = Vec::new();
        for trace in 1..=8 {
            let link = Arc::clone(&link);
            waiting.push(tokio::spawn(async move {
                let (rrn, frame) = request(Mti::REVERSAL, trace);
                link.exchange(reply_mti, trace, Some(&rrn), frame).await
            }));
        }
        // Every reversal either took a place (and waits) or was put off at once.
        let mut put_off = 0;
        for _ in 0..500 {
            put_off = waiting.iter().filter(|w| w.is_finished()).count();
            if put_off == 8 - reversals_in_flight_max(8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(put_off, 6, "two reversals in flight, six put off");
        for trace in 100..108 {
            let (rrn, frame) = request(Mti::FINANCIAL, trace);
            let reply = link
                .exchange(Mti::FINANCIAL_RESPONSE.value(), trace, Some(&rrn), frame)
                .await;
            assert!(reply.is_ok(), "request {trace}: {reply:?}");
        }
        for w in waiting.into_iter().filter(|w| w.is_finished()) {
            assert!(matches!(w.await.unwrap(), Err(LinkError::Unavailable)));
        }
    }
}
