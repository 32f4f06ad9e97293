//! Persistent links to issuer hosts (docs/issuer-link.md): one TCP connection per issuer,
//! many requests in flight, replies matched by (reply MTI, host trace) so that a `0410` is never
//! taken for the `0210` of the same trace. Reconnects by itself; a breaker answers fast while
//! the issuer is down or keeps timing out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use iso8583::Frame;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use zeroize::{Zeroize, Zeroizing};

use crate::clock::Clock;
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
/// every time (a seeded simulation replays exactly).
type Waiters = BTreeMap<(u16, u32), oneshot::Sender<Zeroizing<Vec<u8>>>>;

pub(crate) struct IssuerLink {
    pub name: String,
    pub endpoint: IssuerEndpoint,
    /// Requests carry the card number, track 2 and the translated PIN block: each is wiped
    /// when dropped, and so is what the writer batched of them.
    outbound: mpsc::Sender<Zeroizing<Vec<u8>>>,
    waiters: Mutex<Waiters>,
    in_flight: Semaphore,
    connected: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    open_until_ms: AtomicI64,
    clock: Arc<dyn Clock>,
    connector: Arc<dyn IssuerConnector>,
}

impl IssuerLink {
    /// Creates the link and starts the task that keeps it connected until `stop` changes.
    pub fn start(
        name: String,
        endpoint: IssuerEndpoint,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn IssuerConnector>,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (outbound, receiver) = mpsc::channel(ISSUER_QUEUE_MAX);
        let link = Arc::new(IssuerLink {
            name,
            endpoint,
            outbound,
            waiters: Mutex::new(BTreeMap::new()),
            in_flight: Semaphore::new(ISSUER_IN_FLIGHT_MAX),
            connected: AtomicBool::new(false),
            timeouts_in_a_row: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
            clock,
            connector,
        });
        let task = tokio::spawn(Arc::clone(&link).run(receiver, stop));
        (link, task)
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The link's state for the metrics.
    pub fn state(&self) -> crate::metrics::IssuerLinkState {
        let free = self.in_flight.available_permits();
        crate::metrics::IssuerLinkState {
            bank: self.name.clone(),
            connected: self.is_connected(),
            breaker_open: self.clock.now_ms() < self.open_until_ms.load(Ordering::Acquire),
            in_flight: u64::try_from(ISSUER_IN_FLIGHT_MAX.saturating_sub(free)).unwrap_or(0),
        }
    }

    /// Sends a request frame (length prefix included) and waits for the reply with
    /// `reply_mti` and `trace`; returns the reply frame without its prefix. Both are wiped
    /// when dropped.
    pub async fn exchange(
        &self,
        reply_mti: u16,
        trace: u32,
        frame: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        if !self.is_connected() || self.clock.now_ms() < self.open_until_ms.load(Ordering::Acquire)
        {
            return Err(LinkError::Unavailable);
        }
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| LinkError::Unavailable)?;
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiters = self.waiters();
            if waiters.contains_key(&(reply_mti, trace)) {
                return Err(LinkError::Unavailable);
            }
            waiters.insert((reply_mti, trace), sender);
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
                self.timeouts_in_a_row.store(0, Ordering::Release);
                Ok(reply)
            }
            Ok(Err(_)) => Err(LinkError::Lost),
            Err(_) => {
                self.waiters().remove(&(reply_mti, trace));
                let count = self.timeouts_in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
                if count >= BREAKER_TIMEOUTS_MAX {
                    self.timeouts_in_a_row.store(0, Ordering::Release);
                    let until = self.clock.now_ms().saturating_add(BREAKER_OPEN_MS);
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
                    backoff = RECONNECT_FIRST;
                    tracing::info!(issuer = %self.name, "issuer link up");
                    self.connected.store(true, Ordering::Release);
                    let stopped = self.serve(stream, &mut outbound, &mut stop).await;
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

    /// Runs one connection until it fails (false) or the switch stops (true).
    async fn serve(
        &self,
        stream: Box<dyn IssuerStream>,
        outbound: &mut mpsc::Receiver<Zeroizing<Vec<u8>>>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = WipingReader::with_capacity(ISSUER_READ_BUFFER_BYTES, reader);
        let read = async {
            let mut buf = Zeroizing::new(Vec::with_capacity(512));
            loop {
                match read_frame(&mut reader, &mut buf).await {
                    Ok(true) => {
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
                let written = writer.write_all(&batch).await;
                batch.as_mut_slice().zeroize();
                if written.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            // Stop first; then replies before requests, in a fixed order, so that a seeded
            // simulation replays exactly.
            biased;
            _ = stop.changed() => true,
            () = read => false,
            () = write => false,
        }
    }

    fn deliver(&self, frame: &[u8]) {
        let Ok(decoded) = Frame::decode_unprefixed(frame) else {
            tracing::warn!(issuer = %self.name, "undecodable reply from issuer");
            return;
        };
        let mti = decoded.message.mti().value();
        let Some(trace) = decoded.message.stan() else {
            return;
        };
        let waiter = self.waiters().remove(&(mti, trace));
        match waiter {
            // A waiter that timed out is gone; its late reply is dropped (the reversal covers it).
            Some(waiter) => drop(waiter.send(Zeroizing::new(frame.to_vec()))),
            None => tracing::debug!(issuer = %self.name, mti, trace, "unmatched reply"),
        }
    }
}
