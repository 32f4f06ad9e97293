//! Terminal connections: many per switch, many requests in flight per connection, responses
//! written in whatever order they finish. Every limit refuses quickly instead of queueing.

use std::sync::Arc;

use iso8583::{Frame, TxnKind as WireKind};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{CONNECTION_QUEUE_MAX, CONNECTIONS_MAX, IN_FLIGHT_PER_CONNECTION_MAX};
use crate::core::{Core, RC_APPROVED, RC_INVALID_TRANSACTION};
use crate::ledger::Answer;
use crate::wire::read_frame;

pub(crate) async fn accept(
    core: Arc<Core>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
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
        let core = Arc::clone(&core);
        let stop = stop.clone();
        tokio::spawn(async move {
            serve(core, stream, stop).await;
            drop(permit);
        });
    }
}

async fn serve(core: Arc<Core>, stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let (responses, mut outgoing) = mpsc::channel::<Vec<u8>>(CONNECTION_QUEUE_MAX);
    let writer_task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(4096);
        while let Some(frame) = outgoing.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while let Ok(more) = outgoing.try_recv() {
                batch.extend_from_slice(&more);
            }
            if writer.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(512);
    loop {
        let read = tokio::select! {
            read = read_frame(&mut reader, &mut buf) => read,
            _ = stop.changed() => break,
        };
        match read {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                tracing::info!(%error, "terminal connection dropped");
                break;
            }
        }
        let input = std::mem::replace(&mut buf, Vec::with_capacity(512));
        match Arc::clone(&in_flight).try_acquire_owned() {
            Ok(permit) => {
                let core = Arc::clone(&core);
                let responses = responses.clone();
                // The handler runs to completion even if the terminal hangs up: what the
                // issuer was told must be journalled either way.
                tokio::spawn(async move {
                    if let Some(response) = core.handle(&input).await {
                        let _ = responses.send(response).await;
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                if let Some(response) = core.refuse(&input) {
                    let _ = responses.try_send(response);
                }
            }
        }
    }
    drop(responses);
    let _ = writer_task.await;
}

impl Core {
    /// One request frame (without its length prefix) → its response frame, if it gets one.
    pub(crate) async fn handle(self: &Arc<Self>, input: &[u8]) -> Option<Vec<u8>> {
        let frame = match Frame::decode_unprefixed(input) {
            Ok(frame) => frame,
            Err(error) => {
                // Without a readable MTI there is nothing to answer to.
                tracing::info!(%error, "undecodable terminal frame");
                return None;
            }
        };
        match frame.message.txn_kind() {
            Some(WireKind::Financial(kind)) => self.financial(&frame, kind, false).await,
            Some(WireKind::Reversal(kind)) => self.financial(&frame, kind, true).await,
            Some(WireKind::SignIn(keys)) => self.sign_in(&frame, keys).await,
            Some(WireKind::SignOff) => self.sign_off(&frame).await,
            Some(WireKind::EchoTest) => {
                self.reply(&frame, None, &Answer::code(RC_APPROVED), None, |_| Ok(()))
            }
            Some(WireKind::Settlement) => self.settle(&frame).await,
            Some(WireKind::BatchUpload(_) | WireKind::BatchUploadEnd { .. }) => {
                self.reply(&frame, None, &Answer::code(RC_APPROVED), None, |_| Ok(()))
            }
            None => self.reply(
                &frame,
                None,
                &Answer::code(RC_INVALID_TRANSACTION),
                None,
                |_| Ok(()),
            ),
        }
    }
}
