//! Store and forward of reversals: claims due reversals from the store's queue, rebuilds each
//! `0400` from the journalled original, resends with backoff until the issuer acknowledges.
//! The queue is in the store, so a restart picks up where the last run stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};

use iso8583::{MessageBuilder, Mti};
use store::{Record, SafItem, SafState, StoreError, TxnRow, TxnState};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::clock::LocalTime;
use crate::config::{SAF_BACKOFF_FIRST_MS, SAF_BACKOFF_LAST_MS, SAF_BATCH_MAX};
use crate::core::Core;
use crate::issuer::LinkError;

fn backoff_ms(attempts: u32) -> i64 {
    let shift = attempts.min(16);
    SAF_BACKOFF_FIRST_MS
        .saturating_mul(1_i64 << shift)
        .min(SAF_BACKOFF_LAST_MS)
}

/// An issuer's answers to a reversal that say it could not read or check the message (its
/// format, the zone key, the MAC, the link's sign-in or batch), not that it decided on the
/// card: the reversal is sent again, for as long as that lasts (it is owed; the queue shows it
/// pending with the code as its last error, for an operator to mend the link). Not 22, which
/// CUP also gives for "past the days allowed", for a reversal a final answer.
const UNREAD_BY_ISSUER: [&str; 5] = ["30", "77", "79", "99", "A0"];

/// How far apart two nodes' clocks may be for [`Core::link_reversal_owed`]'s comparison of
/// this node's send time with the time another node recorded an acknowledgement.
const CLOCK_SKEW_MS: i64 = 30_000;

/// Passes of the queue between sweeps for requests a dead node left in flight (nodes sharing a
/// database): with the default interval, every ten seconds; the query uses the state index.
const IN_DOUBT_SWEEP_PASSES: u32 = 50;

/// Runs until `stop` changes.
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let lease_ms = i64::try_from(core.config.saf_lease.as_millis()).unwrap_or(i64::MAX);
    let mut passes: u32 = 0;
    loop {
        tokio::select! {
            // Stop first, and a fixed order: a seeded simulation replays exactly.
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(core.config.saf_interval) => {}
        }
        let now_ms = core.clock.now_ms();
        passes = passes.wrapping_add(1);
        if passes.is_multiple_of(IN_DOUBT_SWEEP_PASSES) {
            // One indexed read of the few rows in flight; a failed sweep is tried again later.
            let orphans = core
                .orphans
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let in_flight = core
                .read_store(|store| {
                    let rows = store.txns_in_state(TxnState::InFlight)?;
                    Ok((rows, store.node_places_held()?))
                })
                .await
                .unwrap_or_else(|| {
                    Err(StoreError::Backend {
                        message: "the read of requests in flight did not finish".to_owned(),
                    })
                });
            let swept = match in_flight {
                Ok((rows, places_held)) => {
                    let own = store::node_place(core.config.node_id);
                    if places_held
                        .as_ref()
                        .is_some_and(|places| !places.is_empty() && !places.contains(&own))
                    {
                        tracing::warn!(
                            place = own,
                            "this node does not hold its node place (its session ended, or \
                             another node took the place): other nodes may take its requests \
                             in flight for a dead node's"
                        );
                    }
                    let watched = core.watch_in_flight(&rows, now_ms);
                    crate::recover_in_doubt(
                        core.store.as_ref(),
                        rows,
                        now_ms,
                        None,
                        &orphans,
                        core.config.reversal_hold_ms(),
                        |row| {
                            let since = watched.get(&row.id).copied();
                            crate::lost_elsewhere(row, now_ms, places_held.as_deref(), since)
                        },
                    )
                    .await
                }
                Err(error) => Err(crate::InDoubt {
                    error,
                    ids: orphans.iter().map(|o| o.id).collect(),
                }),
            };
            // Settled now, or no longer in flight (reversed by the terminal meanwhile), but
            // for those the sweep could not write, which the next one tries again.
            let unsettled = match swept {
                Ok(()) => Vec::new(),
                Err(in_doubt) => {
                    tracing::warn!(error = %in_doubt.error, "cannot sweep for requests in doubt");
                    in_doubt.ids
                }
            };
            let swept: std::collections::HashSet<i64> = orphans
                .into_iter()
                .map(|o| o.id)
                .filter(|id| !unsettled.contains(id))
                .collect();
            core.orphans
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|o| !swept.contains(&o.id));
        }
        let claimed = match core.store.claim_reversals(now_ms, lease_ms, SAF_BATCH_MAX) {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        let items = match claimed {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(%error, "cannot claim reversals");
                continue;
            }
        };
        for item in items {
            let resend = Arc::clone(&core);
            core.tasks.spawn(async move { resend.resend(item).await });
        }
    }
}

impl Core {
    /// Notes when this node's sweep first saw each request in flight (by its own clock), and
    /// forgets those no longer in flight; returns what it holds (`lost_elsewhere`).
    fn watch_in_flight(&self, rows: &[TxnRow], now_ms: i64) -> HashMap<i64, i64> {
        let mut watched = self
            .in_flight_watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let in_flight: HashSet<i64> = rows.iter().map(|row| row.id).collect();
        watched.retain(|id, _| in_flight.contains(id));
        for id in in_flight {
            watched.entry(id).or_insert(now_ms);
        }
        watched.clone()
    }

    async fn resend(self: Arc<Self>, item: SafItem) {
        let txn_id = item.txn_id;
        let row = match self.read_store(move |store| store.txn(txn_id)).await {
            Some(Ok(Some(row))) => row,
            Some(Ok(None)) => {
                // The original never became durable (journal off): nothing to rebuild from.
                let done = Record::SafDone {
                    txn_id,
                    state: SafState::Refused,
                    at_ms: self.clock.now_ms(),
                    answer: None,
                };
                let _ = self.persist(vec![done]).await;
                return;
            }
            _ => return,
        };
        let Some(link) = self.links.get(&item.issuer).cloned() else {
            self.retry(&item, "no link to this issuer").await;
            return;
        };
        let (frame, trace) = match self.reversal_frame(&row, &item.reason) {
            Some(built) => built,
            None => {
                self.retry(&item, "cannot rebuild the reversal").await;
                return;
            }
        };
        let sent_ms = self.clock.now_ms();
        match link
            .exchange(
                Mti::REVERSAL_RESPONSE.value(),
                trace,
                row.rrn.as_deref(),
                frame,
            )
            .await
        {
            Ok(reply) => {
                // Only a reply that names this reversal's RRN answers it: host traces repeat,
                // and a late reply to another reversal must not acknowledge this one.
                let ours = row.rrn.as_deref().map(str::trim);
                let code = iso8583::Frame::decode_unprefixed(&reply)
                    .ok()
                    .filter(|f| f.message.text(37).map(str::trim) == ours)
                    .and_then(|f| f.message.text(39).map(str::to_owned));
                let now_ms = self.clock.now_ms();
                let at = LocalTime::from_ms(now_ms).clock_text();
                let (state, detail) = match code.as_deref() {
                    Some("00") => (
                        SafState::Acked,
                        format!("reversal acknowledged by {} at {at}", item.issuer),
                    ),
                    // The issuer could not act on it now (maintenance, fault), or its side got
                    // no answer in time (98, 68: a gateway's, whose issuer may yet act): the
                    // reversal is still owed, so it stays queued rather than being given up.
                    Some(busy @ ("06" | "09" | "68" | "90" | "91" | "92" | "96" | "98")) => {
                        let why = format!("reversal not applied by {}: {busy}", item.issuer);
                        self.retry(&item, &why).await;
                        return;
                    }
                    // The issuer could not read or check the message: no decision on the card,
                    // and the acquirer's to put right. Given up at once, the sale would stand
                    // charged with no one resending; kept, it lands once the link is mended.
                    Some(link) if UNREAD_BY_ISSUER.contains(&link) => {
                        let why = format!(
                            "reversal not read by {}: {link} (the acquirer's side of the link: \
                             format, keys, MAC or sign-in)",
                            item.issuer
                        );
                        tracing::warn!(txn_id, issuer = %item.issuer, code = link, "reversal not read by the issuer; kept queued");
                        self.retry(&item, &why).await;
                        return;
                    }
                    // "Not to be undone": a void or refund of it stands at the issuer. When one
                    // of those is itself being reversed here (it timed out after the issuer
                    // approved it), the issuer will take this reversal once that one lands:
                    // tried again, not given up with the sale standing there.
                    Some("12") if self.link_reversal_owed(txn_id, sent_ms).await => {
                        let why = format!(
                            "reversal refused by {} with 12 while a void or refund of it is being \
                             reversed: tried again",
                            item.issuer
                        );
                        self.retry(&item, &why).await;
                        return;
                    }
                    // A code no table here holds (an issuer's own): not a decision this host
                    // can read, so not a refusal to stop on at once: sent again. A code of that
                    // kind answered to that resend (the same or another) is the issuer's
                    // answer, recorded as refused with it, where the console lists it for
                    // someone to take up, not resent every minute for ever. (The last error
                    // says what the last answer was, whatever put the reversal off before: a
                    // link down, a timeout.)
                    Some(unknown)
                        if !known_code(unknown)
                            && !item
                                .last_error
                                .as_deref()
                                .is_some_and(|last| was_unknown_answer(&item, last)) =>
                    {
                        tracing::warn!(txn_id, issuer = %item.issuer, code = unknown, "reversal answered with an unknown code; sent again");
                        self.retry(&item, &unknown_answer(&item, unknown)).await;
                        return;
                    }
                    Some(other) => (
                        SafState::Refused,
                        format!("reversal refused by {} at {at}: {other}", item.issuer),
                    ),
                    None => {
                        self.retry(&item, "unreadable reversal reply").await;
                        return;
                    }
                };
                let mut records = vec![
                    Record::SafDone {
                        txn_id,
                        state,
                        at_ms: now_ms,
                        answer: code.clone(),
                    },
                    Record::Event(store::EventRow {
                        txn_id,
                        at_ms: now_ms,
                        kind: "reversal_done".into(),
                        detail,
                    }),
                ];
                let mut undo = Vec::new();
                let mut was = None;
                if state == SafState::Acked {
                    records.push(Record::State {
                        id: txn_id,
                        state: TxnState::Reversed,
                    });
                    // Still approved in the journal: the host queued this reversal without
                    // marking the row reversed (its outcome's commit was taken for failed, and
                    // had landed). A void, completion or refund gives its original back what
                    // it took, as a terminal reversal would.
                    if row.state == TxnState::Approved && row.original_id.is_some() {
                        records.extend(self.give_back(&row, &mut undo).await);
                    }
                    if let Some(entry) = self.ledger.by_id(txn_id) {
                        let previous =
                            std::mem::replace(&mut entry.live().state, TxnState::Reversed);
                        was = Some((previous, entry));
                    }
                }
                if let Err(error) = self.persist(records).await {
                    tracing::warn!(%error, txn_id, "cannot record reversal acknowledgement");
                    crate::financial::Undo::all(undo);
                    if let Some((state, entry)) = was {
                        entry.live().state = state;
                    }
                }
            }
            Err(error @ (LinkError::Unavailable | LinkError::Timeout | LinkError::Lost)) => {
                self.retry(&item, &error.to_string()).await;
            }
        }
    }

    /// Whether a 12 to the reversal of `txn_id` sent at `sent_ms` may be about a void,
    /// completion or refund of it whose own reversal is still owed (queued), or landed while
    /// this one was on its way (the issuer answered before it took that one; "while" allowing
    /// for another node's clock, [`CLOCK_SKEW_MS`]: at worst the reversal is sent again a few
    /// times within it); `true` as well when the journal cannot be read, so that the reversal
    /// is tried again rather than given up on a guess.
    async fn link_reversal_owed(&self, txn_id: i64, sent_ms: i64) -> bool {
        let owed = self
            .read_store(move |store| {
                for link in store.txns_linked_to(txn_id)? {
                    let owed = store.reversal(link.id)?.is_some_and(|r| {
                        r.state == SafState::Pending
                            || r.state == SafState::Acked
                                && r.done_at_ms.is_some_and(|done| {
                                    done >= sent_ms.saturating_sub(CLOCK_SKEW_MS)
                                })
                    });
                    if owed {
                        return Ok(true);
                    }
                }
                Ok::<_, store::StoreError>(false)
            })
            .await;
        !matches!(owed, Some(Ok(false)))
    }

    /// What an approved linked `row` took from its original, given back (`Core::unlink`), its
    /// original read from the journal if the index has let it go. Empty if it cannot be read
    /// (the original then keeps what the journal says), or if the row was reversed meanwhile.
    async fn give_back(&self, row: &TxnRow, undo: &mut Vec<crate::financial::Undo>) -> Vec<Record> {
        let Some(original) = row.original_id else {
            return Vec::new();
        };
        if self.ledger.by_id(original).is_none() {
            match self.read_store(move |store| store.txn(original)).await {
                Some(Ok(Some(found))) => {
                    self.ledger.adopt(&found);
                }
                _ => return Vec::new(),
            }
        }
        let entry = self.ledger.adopt(row);
        // Reversed meanwhile by the terminal, whose reversal gave the original back already.
        if entry.live().state == TxnState::Reversed {
            return Vec::new();
        }
        self.unlink(&entry, undo)
    }

    async fn retry(&self, item: &SafItem, why: &str) {
        let record = Record::SafRetry {
            txn_id: item.txn_id,
            next_attempt_ms: self
                .clock
                .now_ms()
                .saturating_add(backoff_ms(item.attempts)),
            last_error: why.to_owned(),
        };
        if let Err(error) = self.persist(vec![record]).await {
            tracing::warn!(%error, txn_id = item.txn_id, "cannot record reversal retry");
        }
    }

    /// The `0400` for a journalled original: its fields 2, 3, 4, 11, 13, 25, 37, 41, 42, 49,
    /// 60 and the reason in 39 (docs/issuer-link.md).
    fn reversal_frame(&self, row: &TxnRow, reason: &str) -> Option<(Zeroizing<Vec<u8>>, u32)> {
        let trace = row.host_trace?;
        let pan = self.hsm.open(&row.pan.as_ref()?.sealed).ok()?;
        let pan = std::str::from_utf8(&pan).ok()?;
        let mut out = MessageBuilder::new(Mti::REVERSAL);
        let built: Result<(), iso8583::EncodeError> = (|| {
            out.set_digits(2, pan)?;
            out.set_digits(3, &row.processing_code)?;
            out.set_amount(u64::try_from(row.amount_fen).unwrap_or(0))?;
            out.set_stan(trace)?;
            if let Some(date) = &row.host_date {
                out.set_digits(13, date)?;
            }
            out.set_digits(25, &row.condition_code)?;
            out.set_digits(32, &self.config.acquirer_code)?;
            if let Some(rrn) = &row.rrn {
                out.set_text(37, rrn)?;
            }
            out.set_text(39, reason)?;
            out.set_text(41, &row.tid)?;
            out.set_text(42, &row.mid)?;
            out.set_text(49, &row.currency)?;
            if let Some(f60) = &row.field60 {
                out.set_digits(60, f60)?;
            }
            Ok(())
        })();
        built.ok()?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(128));
        out.encode_frame(&self.issuer_head, &mut bytes).ok()?;
        Some((bytes, trace))
    }
}

/// Whether `code` is a response code the diagnosis table holds.
fn known_code(code: &str) -> bool {
    <[u8; 2]>::try_from(code.as_bytes()).is_ok_and(|code| domain::diagnosis::lookup(code).is_some())
}

/// What a reversal put off by an answer with a code the diagnosis table does not hold keeps as
/// its last error.
fn unknown_answer(item: &SafItem, code: &str) -> String {
    format!(
        "reversal answered by {} with {code}{UNKNOWN_ANSWER_END}",
        item.issuer
    )
}

const UNKNOWN_ANSWER_END: &str = ", a code this host does not know: sent again";

/// Whether `last_error` is [`unknown_answer`]'s, whatever the code: such an answer twice in a
/// row is the issuer's.
fn was_unknown_answer(item: &SafItem, last_error: &str) -> bool {
    last_error
        .strip_prefix(&format!("reversal answered by {} with ", item.issuer))
        .and_then(|rest| rest.strip_suffix(UNKNOWN_ANSWER_END))
        .is_some_and(|code| code.len() == 2 && !known_code(code))
}
