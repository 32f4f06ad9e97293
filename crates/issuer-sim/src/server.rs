//! The issuer host on TCP: persistent links from the switch, length-framed 8583, many requests
//! in flight per link and replies in whatever order they finish; faults applied per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::fault::FaultHandle;
use crate::issuer::Issuer;
use crate::model::{Reply, ResponseCode};
use crate::wire::{self, Inbound};

/// Links one issuer host accepts at once.
pub const LINKS_MAX: usize = 64;
/// Requests one link may have in flight (delayed by injected latency) before reading pauses.
pub const IN_FLIGHT_PER_LINK_MAX: usize = 4_096;
/// Encoded replies queued for one link's writer.
pub const OUTBOUND_QUEUE_MAX: usize = 1_024;
/// How long a shutdown waits for replies still in flight.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// Bytes of replies gathered into one socket write.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// A simulated issuer host ready to serve: the issuer and its fault switch.
#[derive(Clone, Debug)]
pub struct IssuerSim {
    issuer: Arc<Issuer>,
    faults: FaultHandle,
}

/// A running server; `shutdown` stops it cleanly. Dropping the handle stops it too.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and reading, lets replies in flight go out (up to `SHUTDOWN_GRACE_MS`),
    /// closes the links and commits the ledger.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl IssuerSim {
    /// `fault_seed` makes fractional faults and latency spread repeatable.
    pub fn new(issuer: Arc<Issuer>, fault_seed: u64) -> Self {
        let faults = FaultHandle::new(Arc::clone(&issuer), fault_seed);
        Self { issuer, faults }
    }

    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// Serves links accepted on `listener` until `ServerHandle::shutdown`. Call within a tokio
    /// runtime.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<ServerHandle> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let sim = self.clone();
        let task = tokio::spawn(async move { sim.accept_loop(listener, stopped).await });
        Ok(ServerHandle {
            local_addr,
            stop,
            task,
        })
    }

    async fn accept_loop(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        let mut links = JoinSet::new();
        let slots = Arc::new(Semaphore::new(LINKS_MAX));
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    // Beyond the limit a link is closed at once rather than queued.
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    let stopped = stopped.clone();
                    links.spawn(async move {
                        sim.link(stream, stopped).await;
                        drop(slot);
                    });
                }
                Some(_) = links.join_next(), if !links.is_empty() => {}
            }
        }
        drop(listener);
        while links.join_next().await.is_some() {}
        let issuer = Arc::clone(&self.issuer);
        let _ = tokio::task::spawn_blocking(move || issuer.flush()).await;
    }

    async fn link(&self, stream: TcpStream, mut stopped: watch::Receiver<bool>) {
        let (mut reader, writer) = stream.into_split();
        let (outbound, queue) = mpsc::channel::<Vec<u8>>(OUTBOUND_QUEUE_MAX);
        let mut writer_task = tokio::spawn(write_loop(writer, queue, Arc::clone(&self.issuer)));
        let mut disconnects = self.faults.disconnects();
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_LINK_MAX));
        let mut delayed = JoinSet::new();
        let mut cut = false;
        loop {
            let frame = tokio::select! {
                _ = stopped.changed() => break,
                _ = disconnects.changed() => { cut = true; break }
                frame = read_frame(&mut reader) => frame,
                Some(_) = delayed.join_next(), if !delayed.is_empty() => continue,
            };
            let Some(body) = frame else { break };
            let plan = self.faults.plan();
            if plan.disconnect {
                cut = true;
                break;
            }
            if plan.delay.is_zero() {
                if let Some(reply) = self.handle(&body, plan.fail, plan.drop)
                    && outbound.send(reply).await.is_err()
                {
                    break;
                }
                continue;
            }
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            let sim = self.clone();
            let outbound = outbound.clone();
            delayed.spawn(async move {
                tokio::time::sleep(plan.delay).await;
                if let Some(reply) = sim.handle(&body, plan.fail, plan.drop) {
                    let _ = outbound.send(reply).await;
                }
                drop(permit);
            });
        }
        if cut {
            self.faults.count_disconnect();
            delayed.abort_all();
            writer_task.abort();
            return;
        }
        // Clean end: let delayed replies go out, then the writer drains and closes.
        let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
        let _ = tokio::time::timeout(grace, async {
            while delayed.join_next().await.is_some() {}
        })
        .await;
        delayed.abort_all();
        drop(outbound);
        if tokio::time::timeout(grace, &mut writer_task).await.is_err() {
            writer_task.abort();
        }
    }

    /// One request, start to finish; `None` when nothing is to be sent.
    fn handle(&self, body: &[u8], fail: bool, drop_reply: bool) -> Option<Vec<u8>> {
        // A frame that does not decode cannot be matched by the switch: nothing to answer.
        let frame = wire::decode_frame(body).ok()?;
        let message = &frame.message;
        if !message.mti().is_request() || message.stan().is_none() {
            return None;
        }
        let now = self.issuer.now();
        let reply = if fail {
            Reply {
                code: ResponseCode::SystemError,
                auth_code: None,
                balance: None,
                settlement_date: now.date,
            }
        } else {
            match wire::decode(message) {
                Ok(Inbound::Auth(req)) => self.issuer.authorise(&req),
                Ok(Inbound::Reversal(req)) => self.issuer.reverse(&req),
                Ok(Inbound::Echo) => Reply {
                    code: ResponseCode::Approved,
                    auth_code: None,
                    balance: None,
                    settlement_date: now.date,
                },
                Err(code) => Reply {
                    code,
                    auth_code: None,
                    balance: None,
                    settlement_date: now.date,
                },
            }
        };
        if drop_reply {
            return None;
        }
        let mut out = Vec::with_capacity(96);
        wire::encode_reply(&frame.head, message, &reply, &mut out).ok()?;
        Some(out)
    }
}

/// Reads one length-prefixed frame body; `None` at end of stream or on a framing violation.
async fn read_frame(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    reader.read_exact(&mut prefix).await.ok()?;
    let len = iso8583::frame_len(prefix).ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Writes replies as they come, gathering those already queued into one write.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
    issuer: Arc<Issuer>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    while let Some(first) = queue.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(next) => batch.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        // The decisions behind these answers went to the ledger before the answers were
        // queued: one flush covers the whole batch.
        if issuer.durable_answers() {
            let issuer = Arc::clone(&issuer);
            let flushed = tokio::task::spawn_blocking(move || issuer.flush()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                // Not recorded, so not announced: the switch times out and reverses.
                return;
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
