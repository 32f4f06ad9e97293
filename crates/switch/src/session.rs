//! Terminal connections: many per switch, many requests in flight per connection, responses
//! written in whatever order they finish. Every limit refuses quickly instead of queueing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use iso8583::{Frame, TxnKind as WireKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{
    CONNECTION_QUEUE_MAX, CONNECTIONS_MAX, FRAME_BODY_TIMEOUT, IN_FLIGHT_PER_CONNECTION_MAX,
    REQUESTS_IN_FLIGHT_MAX,
};
use crate::core::{Core, RC_APPROVED, RC_FORMAT_ERROR, RC_INVALID_TRANSACTION, RC_SYSTEM_ERROR};
use crate::ledger::Answer;
use crate::metrics::{Metrics, RequestType, measure_request};
use crate::wire::{WipingReader, WireError, append_wiped, read_body};

/// What every connection of one switch shares: its core, counters and the bound on requests
/// in flight across all connections.
#[derive(Clone)]
pub(crate) struct Sessions {
    pub core: Arc<Core>,
    pub metrics: Arc<Metrics>,
    /// Requests being handled across all connections; at the bound, new ones are answered 96
    /// at once, so an overload costs a decode and a reply, never a queue that grows.
    pub admission: Arc<Semaphore>,
    /// The admission bound in force (the configuration's, within `REQUESTS_IN_FLIGHT_MAX`).
    pub bound: usize,
}

impl Sessions {
    pub fn new(core: Arc<Core>, metrics: Arc<Metrics>) -> Self {
        let bound = core
            .config
            .requests_in_flight
            .clamp(1, REQUESTS_IN_FLIGHT_MAX);
        Sessions {
            core,
            metrics,
            admission: Arc::new(Semaphore::new(bound)),
            bound,
        }
    }
}

/// A terminal connection's read buffer: a purchase with PIN, track 2 and MAC is about 150
/// bytes, so one read takes prefix and body; larger frames are read in more.
const READ_BUFFER_BYTES: usize = 512;
/// How long a refusal waits for room in its connection's queue of answers. A full queue
/// (twice the requests a connection may have in flight) is a peer that does not read its
/// answers; one that is only slow reads within this time. Past it the connection is closed.
const REFUSAL_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn accept(
    sessions: Sessions,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            // Stop first, so a flood of connections cannot hold off a shutdown.
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%peer, "too many terminal connections; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = sessions.clone();
        let stop = stop.clone();
        sessions.core.tasks.spawn(async move {
            conn.metrics.connections.fetch_add(1, Ordering::Relaxed);
            crate::risk::with_peer(Some(peer.ip()), serve(&conn, stream, stop)).await;
            conn.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Reads one frame: waits as long as it takes for a frame to start (terminals idle for hours),
/// then at most `FRAME_BODY_TIMEOUT` for the rest, length prefix included, so a truncated
/// frame cannot hold a connection (and its buffer) forever.
async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, WireError> {
    let mut prefix = [0u8; 2];
    match reader.read_exact(&mut prefix[..1]).await {
        Ok(_) => {}
        // Between frames, a peer's close is a close however it came: its end of the stream,
        // or a reset (a terminal powered off, a NAT forgetting an idle connection). Not a
        // malformed frame.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        read_body(reader, prefix, buf).await?;
        Ok(true)
    };
    match tokio::time::timeout(FRAME_BODY_TIMEOUT, rest).await {
        Ok(read) => read,
        Err(_) => Err(WireError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

tokio::task_local! {
    /// The number of the terminal connection a request came in on.
    static CONNECTION: u64;
}

/// The number of the terminal connection being served, if any.
pub(crate) fn connection() -> Option<u64> {
    CONNECTION.try_with(|c| *c).ok()
}

/// Serves one terminal connection over any byte stream until it closes, sends a frame that
/// cannot be read or decoded, or the switch stops.
pub(crate) async fn serve<S>(sessions: &Sessions, stream: S, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let connection = sessions.core.connections.fetch_add(1, Ordering::Relaxed);
    let (reader, mut writer) = tokio::io::split(stream);
    // Answers echo the card number (field 2): each is wiped when dropped, and so is what the
    // writer batched of them.
    let (responses, outgoing) = mpsc::channel::<Queued>(CONNECTION_QUEUE_MAX);
    // A handler that finds the frame undecodable, with no request in it to answer 30, closes
    // the connection: its framing can no longer be trusted. Answers already being worked on
    // are still written.
    let close = Arc::new(Notify::new());
    let writer_close = Arc::clone(&close);
    let write_timeout = sessions.core.config.response_write_timeout;
    // Aborted when the connection is given up (its answers not read): it stops at once,
    // whatever it was writing, and the socket closes with it.
    let mut out = Unwritten {
        outgoing,
        // Grown by the first answers, not before: most connections sit idle.
        batch: Zeroizing::new(Vec::new()),
        answers_in_batch: 0,
        metrics: Arc::clone(&sessions.metrics),
    };
    let writer_task = sessions.core.tasks.spawn(async move {
        while let Some(first) = out.outgoing.recv().await {
            out.batch.clear();
            out.take(&first);
            while let Ok(more) = out.outgoing.try_recv() {
                out.take(&more);
            }
            // A peer that stops reading is let go: its answers would wait here for ever.
            let written = tokio::time::timeout(write_timeout, writer.write_all(&out.batch))
                .await
                .map_err(|_| ())
                .and_then(|written| written.map_err(|_| ()));
            out.batch.as_mut_slice().zeroize();
            if written.is_err() {
                writer_close.notify_one();
                return;
            }
            out.answers_in_batch = 0;
        }
        let _ = writer.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    // Room for a whole typical request in one read; an idle connection holds little.
    let mut reader = WipingReader::with_capacity(READ_BUFFER_BYTES, reader);
    // A request holds card data: wiped when its handler is done with it, or here if the
    // connection ends half-way through one.
    let mut buf = Zeroizing::new(Vec::with_capacity(512));
    let peer = crate::risk::peer();
    // A new connection has `first_frame_timeout` from its connect to name one of our
    // terminals (field 41, with that terminal's merchant in 42): a peer that connects and sends
    // nothing, or sends an echo test (or any frame) and goes quiet, or one every little while,
    // would otherwise hold its place among the connections for ever, and enough of them would
    // shut every terminal out. A terminal's connection, once it has named itself, may idle as
    // long as it likes; its reads then wait without a timer: what an idle connection holds is
    // the read's state, ten thousand times over.
    let known = Arc::new(AtomicBool::new(false));
    let named_by = tokio::time::Instant::now() + sessions.core.config.first_frame_timeout;
    loop {
        if !known.load(Ordering::Acquire) {
            let readable = tokio::select! {
                biased;
                () = close.notified() => break,
                _ = stop.changed() => break,
                readable = tokio::time::timeout_at(named_by, reader.wait_readable()) => readable,
            };
            match readable {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break,
                Ok(Err(error)) => {
                    tracing::info!(%error, "terminal connection dropped");
                    break;
                }
                // Its last frame named a terminal after all (its handler ran meanwhile).
                Err(_) if known.load(Ordering::Acquire) => {}
                // A frame read before the time ran out is still being handled, and may name
                // a terminal: its answer and its verdict first (handlers end within the
                // issuer's timeout), then the time is looked at again.
                Err(_) if in_flight.available_permits() < IN_FLIGHT_PER_CONNECTION_MAX => {
                    let all = u32::try_from(IN_FLIGHT_PER_CONNECTION_MAX).unwrap_or(u32::MAX);
                    tokio::select! {
                        biased;
                        () = close.notified() => break,
                        _ = stop.changed() => break,
                        _ = in_flight.acquire_many(all) => continue,
                    }
                }
                // Counted apart from bad frames: a port scanner or a probe, not a terminal's
                // software.
                Err(_) => {
                    sessions
                        .metrics
                        .silent_closed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "terminal connection closed: no frame naming a terminal of ours in time"
                    );
                    break;
                }
            }
        }
        let read = tokio::select! {
            // Closing first, and a fixed order: a seeded simulation replays exactly.
            biased;
            () = close.notified() => break,
            _ = stop.changed() => break,
            read = read_request(&mut reader, &mut buf) => read,
        };
        match read {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                sessions
                    .metrics
                    .malformed_frames
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%error, "terminal connection dropped");
                break;
            }
        }
        let received = Instant::now();
        let input = std::mem::replace(&mut buf, Zeroizing::new(Vec::with_capacity(512)));
        match admit(sessions, &in_flight) {
            Some((mine, global)) => {
                let handler = sessions.clone();
                let responses = responses.clone();
                let close = Arc::clone(&close);
                let known = Arc::clone(&known);
                // The handler runs to completion even if the terminal hangs up: what the
                // issuer was told must be journalled either way.
                sessions.core.tasks.spawn(async move {
                    // On the heap, made at the task's first poll: the handler's state (tens of
                    // KiB) would otherwise be the task's, copied whole each time the task is
                    // moved into place (a spawn per request: 5 % of a loaded switch's CPU in
                    // `memmove`).
                    let handled = Box::pin(handler.handle_measured(&input, received, &known));
                    let response = CONNECTION
                        .scope(connection, crate::risk::with_peer(peer, handled))
                        .await;
                    // The switch's permit goes with the work; the connection's only once its
                    // answer is queued, so a peer that does not read its answers stops being
                    // admitted (refused at once) instead of piling up handlers that wait.
                    drop(global);
                    match response {
                        Some(response) => {
                            let answer = Queued {
                                answer: true,
                                frame: Zeroizing::new(response),
                            };
                            if responses.send(answer).await.is_err() {
                                // Handled (and journalled) all the same: the terminal, which
                                // never sees the answer, reverses what it sent.
                                handler
                                    .metrics
                                    .answers_undelivered
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    connection,
                                    "answer not delivered: the terminal's connection was closed"
                                );
                            }
                        }
                        None => close.notify_one(),
                    }
                    drop(mine);
                });
            }
            None => {
                sessions
                    .metrics
                    .refused_overload
                    .fetch_add(1, Ordering::Relaxed);
                // The decoded frame is gone before the wait below: an idle connection's task
                // is as large as its largest wait.
                let refusal = Frame::decode_unprefixed(&input).ok().and_then(|frame| {
                    let response = sessions.core.refuse(&frame)?;
                    let kind = request_type(frame.message.txn_kind());
                    Some((kind, sessions.names_terminal(&frame), response))
                });
                match refusal {
                    Some((kind, names_terminal, response)) => {
                        // A terminal retrying into a full switch is one of ours all the same:
                        // its connection is not let go at the first-frame time.
                        if names_terminal {
                            known.store(true, Ordering::Release);
                        }
                        // A queue full of answers its peer has not read: a little time for a
                        // slow reader, then the connection goes, rather than this refusal
                        // and every one after it being dropped unsaid.
                        let queued = tokio::select! {
                            biased;
                            () = close.notified() => break,
                            _ = stop.changed() => break,
                            queued = Box::pin(responses.send_timeout(
                                Queued { answer: false, frame: Zeroizing::new(response) },
                                REFUSAL_QUEUE_WAIT,
                            )) => queued,
                        };
                        if queued.is_err() {
                            sessions
                                .metrics
                                .unread_closed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                connection,
                                ?peer,
                                "terminal connection closed: its answers are not read"
                            );
                            writer_task.abort();
                            break;
                        }
                        sessions.metrics.count(kind, Some(RC_SYSTEM_ERROR));
                    }
                    // Undecodable, or not a request: closed, as when the switch has room (a
                    // request that only partly reads is answered 30 only then).
                    None => {
                        sessions
                            .metrics
                            .malformed_frames
                            .fetch_add(1, Ordering::Relaxed);
                        sessions.metrics.count("malformed", None);
                        break;
                    }
                }
            }
        }
    }
    drop(responses);
    let _ = writer_task.await;
}

/// A frame queued for a connection's writer: an answer to a request it handled, or a refusal.
/// Wiped when dropped (answers echo the card number).
struct Queued {
    answer: bool,
    frame: Zeroizing<Vec<u8>>,
}

/// A connection writer's queue and the batch it is writing. Dropped before the queue ran dry
/// (a write that timed out, a connection given up), the answers in either count as
/// undelivered.
struct Unwritten {
    outgoing: mpsc::Receiver<Queued>,
    batch: Zeroizing<Vec<u8>>,
    answers_in_batch: u64,
    metrics: Arc<Metrics>,
}

impl Unwritten {
    fn take(&mut self, queued: &Queued) {
        self.answers_in_batch += u64::from(queued.answer);
        append_wiped(&mut self.batch, &queued.frame);
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        self.outgoing.close();
        let mut lost = self.answers_in_batch;
        while let Ok(queued) = self.outgoing.try_recv() {
            lost += u64::from(queued.answer);
        }
        if lost > 0 {
            self.metrics
                .answers_undelivered
                .fetch_add(lost, Ordering::Relaxed);
        }
    }
}

/// A request may start when both its connection and the switch as a whole have room.
fn admit(
    sessions: &Sessions,
    connection: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let mine = Arc::clone(connection).try_acquire_owned().ok()?;
    let global = Arc::clone(&sessions.admission).try_acquire_owned().ok()?;
    Some((mine, global))
}

/// The metrics' name of a request's type.
pub(crate) fn request_type(kind: Option<WireKind>) -> RequestType {
    use iso8583::Financial as F;
    let financial = |kind: F, reversal: bool| match (reversal, kind) {
        (true, _) => "reversal",
        (false, F::BalanceInquiry) => "balance_inquiry",
        (false, F::Purchase) => "purchase",
        (false, F::PurchaseVoid) => "purchase_void",
        (false, F::Refund) => "refund",
        (false, F::PreAuthorisation) => "pre_auth",
        (false, F::PreAuthorisationVoid) => "pre_auth_void",
        (false, F::PreAuthorisationCompletion) => "completion",
        (false, F::CompletionVoid) => "completion_void",
    };
    match kind {
        Some(WireKind::Financial(kind)) => financial(kind, false),
        Some(WireKind::Reversal(kind)) => financial(kind, true),
        Some(WireKind::SignIn(_)) => "sign_in",
        Some(WireKind::SignOff) => "sign_off",
        Some(WireKind::EchoTest) => "echo",
        Some(WireKind::Settlement) => "settlement",
        Some(WireKind::BatchUpload(_) | WireKind::BatchUploadEnd { .. }) => "batch_upload",
        None => "unknown",
    }
}

impl Sessions {
    /// Whether a frame names one of the switch's terminals: its terminal ID and merchant ID
    /// together (both on its receipts, so this proves no more than that the peer has seen one;
    /// what it may do is the MAC's to decide).
    fn names_terminal(&self, frame: &Frame<'_>) -> bool {
        match (frame.message.text(41), frame.message.text(42)) {
            (Some(tid), Some(mid)) => self
                .core
                .terminal(tid.trim_end())
                .is_some_and(|t| t.mid == mid.trim_end()),
            _ => false,
        }
    }

    /// Handles one request and records what it took; `None`: not a request that can be
    /// answered (undecodable before its MTI, or not a request MTI), close the connection.
    /// `known` is set when the frame names one of the switch's terminals.
    async fn handle_measured(
        &self,
        input: &[u8],
        received: Instant,
        known: &AtomicBool,
    ) -> Option<Vec<u8>> {
        let frame = match Frame::decode_unprefixed(input) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::info!(%error, "undecodable terminal frame");
                self.metrics
                    .malformed_frames
                    .fetch_add(1, Ordering::Relaxed);
                // A request whose TPDU, header and MTI read (its length prefix held, then a
                // field did not) is answered 30, format error, with what of it can be read
                // (its trace and terminal): the terminal learns it failed, and why, instead of
                // a dropped line it would take for no answer and reverse with the same fault.
                // Only when what was read names one of our terminals (its 41 and 42 where they
                // belong: a length read short before them would have shifted track data
                // there, to be echoed), and never a reversal, which the terminal would stop
                // resending at an answer, leaving the sale it undoes charged. Otherwise
                // closed.
                let answer = Frame::decode_readable_part(input)
                    .filter(|part| {
                        let mti = part.message.mti();
                        // 04xx: a reversal or its repeat.
                        mti.is_request() && mti.value() / 100 != 4 && self.names_terminal(part)
                    })
                    .and_then(|part| {
                        // One of ours: its connection is a terminal's.
                        known.store(true, Ordering::Release);
                        self.core.answer_code(&part, RC_FORMAT_ERROR)
                    });
                self.metrics
                    .count("malformed", answer.as_ref().map(|_| RC_FORMAT_ERROR));
                return answer;
            }
        };
        // A response or notification MTI (0210, 0810, 0401, ...) from a terminal is not a
        // request: there is no response MTI to answer it with, and handling it as its request
        // would send the issuer a response. Treated as a frame that cannot be trusted.
        if !frame.message.mti().is_request() {
            tracing::info!(mti = %frame.message.mti(), "terminal sent a message that is not a request");
            self.metrics
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.count("malformed", None);
            return None;
        }
        if self.names_terminal(&frame) {
            known.store(true, Ordering::Release);
        }
        let kind = request_type(frame.message.txn_kind());
        let (response, meter) = measure_request(|| self.core.handle_frame(&frame)).await;
        self.metrics.latency(received.elapsed(), meter.issuer_us);
        self.metrics
            .count(kind, response.as_ref().and(meter.response_code));
        // A decodable request the switch could not answer (encoding failed): close too.
        response
    }
}

impl Core {
    /// One decoded request → its response frame, if it gets one.
    pub(crate) async fn handle_frame(self: &Arc<Self>, frame: &Frame<'_>) -> Option<Vec<u8>> {
        match frame.message.txn_kind() {
            Some(WireKind::Financial(kind)) => self.financial(frame, kind, false).await,
            Some(WireKind::Reversal(kind)) => self.financial(frame, kind, true).await,
            Some(WireKind::SignIn(keys)) => self.sign_in(frame, keys).await,
            Some(WireKind::SignOff) => self.sign_off(frame).await,
            Some(WireKind::EchoTest) => self.answer_code(frame, RC_APPROVED),
            Some(WireKind::Settlement) => self.settle(frame).await,
            Some(kind @ (WireKind::BatchUpload(_) | WireKind::BatchUploadEnd { .. })) => {
                self.batch_upload(frame, kind).await
            }
            None => self.reply(
                frame,
                None,
                &Answer::code(unclassified_code(&frame.message)),
                None,
                |_| Ok(()),
            ),
        }
    }
}

/// The answer to a request that is no transaction of the table: 30 (format error, the
/// terminal's software) when it lacks what would classify it (field 60, readable; 60.3 for a
/// management message; 3 and 25 for the rest), else 12 (a transaction this host does not do).
fn unclassified_code(message: &iso8583::Message<'_>) -> [u8; 2] {
    let complete = match message.field60() {
        Ok(Some(f60)) if f60.message_type == 0 => f60.network_code.is_some(),
        Ok(Some(_)) => message.processing_code().is_some() && message.number(25).is_some(),
        Ok(None) | Err(_) => false,
    };
    if complete {
        RC_INVALID_TRANSACTION
    } else {
        RC_FORMAT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that fails its first read with `kind`.
    struct Failing(std::io::ErrorKind);

    impl AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(self.0.into()))
        }
    }

    #[tokio::test]
    async fn a_reset_between_frames_is_a_close_not_a_bad_frame() {
        let mut buf = Vec::new();
        for kind in [
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionAborted,
        ] {
            let read = read_request(&mut Failing(kind), &mut buf).await;
            assert!(matches!(read, Ok(false)), "{kind:?}");
        }
        let read = read_request(&mut Failing(std::io::ErrorKind::InvalidData), &mut buf).await;
        assert!(read.is_err());
    }
}
