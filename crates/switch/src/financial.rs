//! Financial requests: the checks every request passes (terminal, MAC, merchant, batch,
//! idempotency), the linked-transaction rules of PROTOCOL.md, the issuer exchange with its
//! journal writes on either side, and reversals.

use std::sync::Arc;

use domain::Pan;
use domain::money::yuan;
use iso8583::{Field61, Financial, Frame, Message, MessageBuilder};
use paycrypto::track::Track;
use paycrypto::{EncryptedPinBlock, KeyScheme, PanDigits};
use store::{
    EventRow, LinkRefusal, Outcome, PanAtRest, Record, Status, StoreError, TxnKind, TxnRow,
    TxnState,
};
use zeroize::{Zeroize, Zeroizing};

use crate::clock::LocalTime;
use crate::config::REFUND_DAYS_MAX;
use crate::core::*;
use crate::issuer::{IssuerLink, LinkError};
use crate::ledger::{Answer, Claim, Entry, Known, TxnKey};

/// Attempts at recording the host's reversal of an outcome written after its 96
/// (`Core::settle_late_outcome`), a second apart at first, then up to 30 s: about four minutes.
const LATE_SETTLE_TRIES: u32 = 12;

pub(crate) fn store_kind(kind: Financial) -> TxnKind {
    match kind {
        Financial::BalanceInquiry => TxnKind::BalanceInquiry,
        Financial::Purchase => TxnKind::Purchase,
        Financial::PurchaseVoid => TxnKind::PurchaseVoid,
        Financial::Refund => TxnKind::Refund,
        Financial::PreAuthorisation => TxnKind::PreAuth,
        Financial::PreAuthorisationVoid => TxnKind::PreAuthVoid,
        Financial::PreAuthorisationCompletion => TxnKind::Completion,
        Financial::CompletionVoid => TxnKind::CompletionVoid,
    }
}

fn describe(kind: TxnKind) -> &'static str {
    match kind {
        TxnKind::BalanceInquiry => "balance inquiry",
        TxnKind::Purchase => "purchase",
        TxnKind::PurchaseVoid => "purchase void",
        TxnKind::Refund => "refund",
        TxnKind::PreAuth => "pre-authorisation",
        TxnKind::PreAuthVoid => "pre-authorisation void",
        TxnKind::Completion => "pre-authorisation completion",
        TxnKind::CompletionVoid => "completion void",
        TxnKind::Reversal => "reversal",
    }
}

/// The card number of a request: field 2, else track 2 left of the separator, else track 3
/// (field 36) after its two-digit format code, unless the tracks are encrypted (53.3 = 1: see
/// [`Core::clear_tracks`]). The digits live only in a buffer zeroised here and in the `Pan`.
pub(crate) fn card(message: &Message<'_>) -> Option<Result<Pan, domain::PanError>> {
    if let Some(digits) = message.digits(2) {
        return Some(pan_of(digits.chars()));
    }
    if track_encrypted(message) {
        return None;
    }
    if let Some(track) = message.digits(35) {
        return Some(pan_of(track.chars()));
    }
    Some(pan_of_track3(message.digits(36)?.chars()))
}

/// The card number on a track 3 (ISO 4909): after its two-digit format code, up to the
/// separator.
fn pan_of_track3(chars: impl Iterator<Item = char>) -> Result<Pan, domain::PanError> {
    pan_of(chars.skip(TRACK3_FORMAT_CODE_LEN))
}

/// Digits of track 3's format code, before its card number.
const TRACK3_FORMAT_CODE_LEN: usize = 2;

/// A request's tracks as the switch reads them: in the clear, decrypted in the HSM when the
/// terminal encrypted them (53.3 = 1).
#[derive(Default)]
struct ClearTracks {
    track2: Option<Zeroizing<String>>,
    track3: Option<Zeroizing<String>>,
}

impl ClearTracks {
    /// The card number on the tracks when field 2 is absent: track 2's, else track 3's.
    fn pan(&self) -> Option<Result<Pan, domain::PanError>> {
        match (&self.track2, &self.track3) {
            (Some(track), _) => Some(pan_of(track.chars())),
            (None, Some(track)) => Some(pan_of_track3(track.chars())),
            (None, None) => None,
        }
    }
}

/// The card number of a request as far as it can be read without the HSM: as [`card`], and
/// from an encrypted track 2 when its card number lies before the encrypted block (as it does
/// in most tracks: the block is the issuer's data at the end), for a terminal of `scheme` (an
/// encrypted track 3 alone is read in the HSM, `decrypted_card_fields`).
/// What a reply names the card's organisation and issuer by.
pub(crate) fn card_in_clear(
    message: &Message<'_>,
    scheme: Option<KeyScheme>,
) -> Option<Result<Pan, domain::PanError>> {
    if message.has(2) || !track_encrypted(message) {
        return card(message);
    }
    let track = message.digits(35)?;
    // The track key's cipher has the block length of the scheme's PIN blocks. Characters from
    // `clear_end` on may be cipher text.
    let clear_end = paycrypto::track::block_start(track.len(), pin_block_len(scheme?))?;
    let separator = track.chars().position(|c| c == '=')?;
    (separator < clear_end).then(|| pan_of(track.chars()))
}

/// Whether field 53 says the request's tracks are encrypted under the terminal's TDK.
fn track_encrypted(message: &Message<'_>) -> bool {
    matches!(message.security_control(), Ok(Some(sc)) if sc.track_encrypted)
}

/// The card number at the start of `chars` (a PAN, or a track up to its separator).
fn pan_of(chars: impl Iterator<Item = char>) -> Result<Pan, domain::PanError> {
    let mut buf = [0u8; 19];
    let mut len = 0;
    for c in chars {
        if !c.is_ascii_digit() {
            break;
        }
        match buf.get_mut(len) {
            Some(slot) => *slot = u8::try_from(c).unwrap_or(0),
            None => {
                buf.zeroize();
                return Err(domain::PanError::Length { len: len + 1 });
            }
        }
        len += 1;
    }
    let pan = Pan::from_ascii(buf.get(..len).unwrap_or_default());
    buf.zeroize();
    pan
}

/// What an issuer's answer leaves owing if its outcome cannot be written.
#[derive(Debug, PartialEq, Eq)]
enum IfLost {
    /// It may have moved money (an approval, an answer that could not be read): reversed.
    Reversal,
    /// A timeout: its reversal was in the records that failed, and the sweep queues it.
    Sweep,
    /// Nothing moved (why, for the row's timeline): the sweep settles it with no reversal.
    Nothing(String),
}

/// An outcome whose write outlasted the journal wait, for `settle_late_outcome`: its write,
/// the host's reversal when it has one (riding in the outcome's commit, or written right
/// behind it), and what it owes if lost.
struct LateOutcome {
    durable: store::Durable,
    behind: Option<store::Durable>,
    if_lost: IfLost,
}

/// What the linked-transaction checks decided about an original.
enum Link {
    None,
    Original(Arc<Entry>),
}

/// Per-request facts gathered by the checks (also built by `backoffice` for its refunds).
pub(crate) struct Ctx<'a> {
    pub(crate) frame: &'a Frame<'a>,
    pub(crate) terminal: Arc<Terminal>,
    pub(crate) kind: Financial,
    pub(crate) now_ms: i64,
    pub(crate) local: LocalTime,
    /// The clearing date after the day cut-over (`settle::ClearingDay`).
    pub(crate) clearing: crate::settle::ClearingDay,
    pub(crate) amount_fen: i64,
    pub(crate) request_hash: [u8; 16],
    pub(crate) key: TxnKey,
}

/// The journal could not be read (an error, or no answer within the journal's wait).
struct Unread;

/// A void, completion or refund: a request that names an original and acts on it.
fn names_original(kind: TxnKind) -> bool {
    matches!(
        kind,
        TxnKind::PurchaseVoid
            | TxnKind::CompletionVoid
            | TxnKind::PreAuthVoid
            | TxnKind::Completion
            | TxnKind::Refund
    )
}

impl Core {
    /// A financial request or its reversal, from checks to the answer.
    pub(crate) async fn financial(
        self: &Arc<Self>,
        frame: &Frame<'_>,
        kind: Financial,
        reversal: bool,
    ) -> Option<Vec<u8>> {
        let request = &frame.message;
        let plain = |code| self.answer_code(frame, code);
        // No field 41 at all is a malformed request (30), not an unknown terminal (97): the
        // terminal's software must be mended, not its registration.
        let Some(tid) = request.text(41) else {
            return plain(RC_FORMAT_ERROR);
        };
        let Some(terminal) = self.terminal(tid.trim_end()) else {
            return plain(RC_NOT_REGISTERED);
        };
        // 77 without keys (no MAK to check or answer with), A0 for a MAC they do not give.
        let terminal = match self.mac_checked(frame, terminal).await {
            Ok(terminal) => terminal,
            Err(code) => return plain(code),
        };
        self.note_health(&terminal.tid, frame).await;
        let answer = |code| {
            self.reply(
                frame,
                Some(&terminal),
                &Answer::code(code),
                None,
                |_| Ok(()),
            )
        };
        // A suspended or closed terminal takes no new business, but its reversals still count:
        // one of a sale whose answer it never saw gives the cardholder's money back. Refused
        // after the MAC check, with a MAC: a terminal that finds none on an answer reverses.
        if terminal.status != Status::Active && !reversal {
            return answer(RC_NOT_PERMITTED_TERMINAL);
        }
        if request.text(42).is_none() {
            return answer(RC_FORMAT_ERROR);
        }
        if !terminal.names_own_merchant(request) {
            self.risk_mid_mismatch(&terminal, request.text(42).map(str::trim_end));
            return answer(RC_INVALID_MERCHANT);
        }
        let f60 = request.field60().ok().flatten();
        let (Some(batch_no), Some(stan)) = (f60.and_then(|f| f.batch), request.stan()) else {
            return answer(RC_FORMAT_ERROR);
        };
        if batch_no != terminal.batch_no {
            if !reversal {
                return answer(RC_BATCH_OUT_OF_STEP);
            }
            // A reversal names the batch of its original: answered from it (below), not 77.
            if let Some(code) = self.reversal_of_settled(&terminal, batch_no, stan).await {
                return answer(code);
            }
        }
        let amount_fen = match request.amount().map(i64::try_from) {
            Some(Ok(fen)) => fen,
            None if kind == Financial::BalanceInquiry => 0,
            // No amount where one is required: the request is malformed (30), not an amount
            // to key again (13).
            None => return answer(RC_FORMAT_ERROR),
            _ => return answer(RC_INVALID_AMOUNT),
        };
        if amount_fen == 0 && kind != Financial::BalanceInquiry {
            return answer(RC_INVALID_AMOUNT);
        }
        // Amounts are fen of CNY (PROTOCOL.md: field 49 is "156"): a request in another
        // currency would be cleared, charged fees on and paid out as yuan. A reversal is taken
        // whatever it says: it only undoes, and must be acknowledged to stop its resends.
        if !reversal && request.text(49).is_some_and(|c| c.trim() != "156") {
            return answer(RC_FORMAT_ERROR);
        }
        // A linked request's field 61 sent but not a batch, a trace and a date (13 digits,
        // say): it names its original in a form this host does not read, and was taken as
        // naming nothing (a refund then went through on its RRN alone, unchecked against the
        // date). A purchase's or an inquiry's field 61 names nothing and is not read.
        if !reversal && names_original(store_kind(kind)) && request.field61().is_err() {
            return answer(RC_FORMAT_ERROR);
        }
        // A field 53 that does not read (53.3 neither 0 nor 1): whether the track is encrypted
        // cannot be told, and taken for no 53 an encrypted track would go on as a clear one. A
        // reversal carries no track and only undoes: taken whatever its 53 says.
        if !reversal && request.security_control().is_err() {
            return answer(RC_FORMAT_ERROR);
        }
        let request_hash = self.request_digest(request);
        let now_ms = self.clock.now_ms();
        let ctx = Ctx {
            frame,
            terminal: Arc::clone(&terminal),
            kind,
            now_ms,
            local: LocalTime::from_ms(now_ms),
            clearing: self.clearing_day(now_ms),
            amount_fen,
            request_hash,
            key: TxnKey {
                tid: terminal.tid.clone(),
                batch_no,
                stan,
                reversal,
            },
        };
        if reversal {
            self.reversal(&ctx).await
        } else {
            self.forward(&ctx).await
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_entry(
        &self,
        ctx: &Ctx<'_>,
        id: i64,
        kind: TxnKind,
        fingerprint: Option<[u8; 32]>,
        rrn: Option<String>,
        issuer: Option<String>,
        original_id: Option<i64>,
    ) -> Entry {
        Entry::new(
            id,
            ctx.key.clone(),
            ctx.terminal.mid.clone(),
            kind,
            ctx.amount_fen,
            fingerprint,
            ctx.request_hash,
            rrn,
            ctx.clearing.date.clone(),
            ctx.clearing.day_number,
            ctx.local.day_number,
            Some(ctx.local.mmdd()),
            issuer,
            original_id,
        )
    }

    fn row(
        &self,
        ctx: &Ctx<'_>,
        entry: &Entry,
        pan: Option<PanAtRest>,
        host_trace: Option<u32>,
    ) -> TxnRow {
        let request = &ctx.frame.message;
        let text = |n: u8| request.digits(n).map(|d| d.chars().collect::<String>());
        TxnRow {
            id: entry.id,
            tid: entry.key.tid.clone(),
            mid: entry.mid.clone(),
            batch_no: entry.key.batch_no,
            stan: entry.key.stan,
            kind: entry.kind,
            mti: format!("{:04}", request.mti().value()),
            processing_code: text(3).unwrap_or_default(),
            condition_code: text(25).unwrap_or_default(),
            amount_fen: entry.amount_fen,
            currency: request.text(49).unwrap_or("156").to_owned(),
            pan,
            issuer: entry.issuer.clone(),
            rrn: entry.rrn.clone(),
            host_trace,
            auth_code: None,
            response_code: None,
            state: TxnState::InFlight,
            request_hash: entry.request_hash.to_vec(),
            original_id: entry.original_id,
            refunded_fen: 0,
            field60: text(60),
            host_date: Some(ctx.local.mmdd()),
            clearing_date: entry.clearing_date.clone(),
            settlement_date: None,
            received_at_ms: ctx.now_ms,
            sent_at_ms: None,
            issuer_answered_at_ms: None,
            answered_at_ms: None,
        }
    }

    fn event(&self, txn_id: i64, kind: &str, detail: String) -> Record {
        Record::Event(EventRow {
            txn_id,
            at_ms: self.clock.now_ms(),
            kind: kind.to_owned(),
            detail,
        })
    }

    /// Answers `code` alone, under the terminal's MAC.
    fn reply_code(&self, ctx: &Ctx<'_>, code: [u8; 2]) -> Option<Vec<u8>> {
        self.reply(
            ctx.frame,
            Some(&ctx.terminal),
            &Answer::code(code),
            None,
            |_| Ok(()),
        )
    }

    /// Answers a request under a key already held: a retry as the first request was
    /// answered, a different request 94. (`Claim::New` is not answered here: the caller
    /// processes it.)
    async fn answer_claimed(&self, ctx: &Ctx<'_>, claim: Claim) -> Option<Vec<u8>> {
        match claim {
            Claim::Retry(entry) => self.answer_retry(ctx, entry).await,
            Claim::Conflict | Claim::New(_) => self.reply_code(ctx, RC_DUPLICATE),
        }
    }

    /// Answers a retry with what the first request got (waiting if it is still in progress).
    async fn answer_retry(&self, ctx: &Ctx<'_>, entry: Arc<Entry>) -> Option<Vec<u8>> {
        let answer = self.retry_answer(&entry).await;
        tracing::info!(tid = %ctx.key.tid, stan = ctx.key.stan, "retried request answered from the journal");
        // Fields 44 and 63 as the first answer gave them, from the card the HSM decrypts, when
        // the card came from an encrypted track alone (see `forward`).
        let card_fields = self.decrypted_card_fields(ctx);
        self.reply(
            ctx.frame,
            Some(&ctx.terminal),
            &answer,
            entry.rrn.as_deref(),
            |out| self.set_decrypted_card_fields(out, card_fields, &ctx.terminal),
        )
    }

    /// The card organisation and issuer of a request whose card number is only in a track
    /// it encrypted (no field 2), from the track decrypted in the HSM; `None` otherwise, or
    /// when it does not decrypt.
    fn decrypted_card_fields(&self, ctx: &Ctx<'_>) -> Option<(&'static str, Option<String>)> {
        let request = &ctx.frame.message;
        if !track_encrypted(request) || request.has(2) {
            return None;
        }
        let pan = self.clear_tracks(ctx).ok()?.pan()?.ok()?;
        Some(self.card_organisation(Some(&pan)))
    }

    /// What a retry of `entry` is answered with (see [`Self::answer_retry`]).
    async fn retry_answer(&self, entry: &Arc<Entry>) -> Answer {
        let mut answer =
            match tokio::time::timeout(self.config.retry_wait, entry.wait_answer()).await {
                Ok(answer) => answer,
                Err(_) => self.answer_of_journal(entry).await,
            };
        // An approval since reversed (by its terminal, or overtaken by that reversal) is not
        // told "approved" again: money is being given back (as `Answer::of_row` has it). On a
        // shared journal the reversal may have gone to another node: the journal is read.
        if answer.response_code == RC_APPROVED && self.config.shared_journal {
            let id = entry.id;
            if let Some(Ok(Some(row))) = self.read_for_request(move |store| store.txn(id)).await {
                entry.catch_up(&row);
            }
        }
        if answer.response_code == RC_APPROVED && entry.live().state == TxnState::Reversed {
            answer = Answer::code(RC_ISSUER_TIMEOUT);
        }
        // An inquiry read back from the journal holds no balance: it is journalled apart.
        if entry.kind == TxnKind::BalanceInquiry
            && answer.response_code == RC_APPROVED
            && answer.balance.is_none()
        {
            let id = entry.id;
            if let Some(Ok(balance)) = self
                .read_for_request(move |store| store.balance_answer(id))
                .await
            {
                answer.balance = balance;
            }
        }
        // Field 15 of an answer the issuer gave no date (a refusal, a timeout) is the request's
        // own clearing date, not the retry's: a retry after the cut-over names the same day.
        if answer.settlement_date.is_none() {
            answer.settlement_date = entry.clearing_date.get(4..8).map(str::to_owned);
        }
        answer
    }

    /// The answer the journal holds for `entry`, read after a retry waited
    /// `SwitchConfig::retry_wait` in vain: the first request went to another node (several nodes,
    /// one journal), whose answer reaches this node's index only through the journal. Still
    /// unanswered there: 98, and the terminal reverses it, as after any timeout.
    async fn answer_of_journal(&self, entry: &Entry) -> Answer {
        let id = entry.id;
        let row = self.read_for_request(move |store| store.txn(id)).await;
        let Some(Ok(Some(row))) = row else {
            return Answer::code(RC_SYSTEM_ERROR);
        };
        match Answer::of_row(&row) {
            Some(answer) => {
                entry.answer(answer.clone(), row.state);
                answer
            }
            None => Answer::code(RC_ISSUER_TIMEOUT),
        }
    }

    /// With a shared journal, the record that claims a request's key in the journal, written
    /// before its row ([`Record::ClaimKey`]): two nodes taking the same request at once (a
    /// terminal behind a gateway that resent it to both) must not both send it to the issuer.
    /// `alone` (see [`Record::ClaimKey`]): a request's claim fails if its reversal is in the
    /// journal, a reversal's that found no original if the original is.
    fn key_claim(&self, key: &TxnKey, alone: bool) -> Vec<Record> {
        if !self.config.shared_journal {
            return Vec::new();
        }
        vec![Record::ClaimKey {
            tid: key.tid.clone(),
            batch_no: key.batch_no,
            stan: key.stan,
            reversal: key.reversal,
            alone,
            since: self.batches_since(),
        }]
    }

    /// The journal refused `entry`'s row: another node journalled row `id` under its key
    /// first. The request is answered as a retry of that one (or 94 if their contents
    /// differ); nothing of `entry` was written.
    async fn key_taken(&self, ctx: &Ctx<'_>, entry: &Arc<Entry>, id: i64) -> Option<Vec<u8>> {
        tracing::info!(tid = %ctx.key.tid, stan = ctx.key.stan, txn_id = id, "request taken by another node");
        entry.mark_unrecorded();
        let winner = match self.read_for_request(move |store| store.txn(id)).await {
            Some(Ok(Some(row))) => row,
            _ => {
                // Not kept under the key: its resend or reversal reads the journal instead.
                self.ledger.forget_lost(entry);
                entry.answer(Answer::code(RC_SYSTEM_ERROR), TxnState::Failed);
                return self.reply_code(ctx, RC_SYSTEM_ERROR);
            }
        };
        match self.ledger.yield_key(entry, &winner) {
            Claim::Retry(winner) => {
                // A retry of this request on this node that found `entry` meanwhile gets the
                // same answer.
                let answer = self.retry_answer(&winner).await;
                entry.answer(answer.clone(), TxnState::Failed);
                let card_fields = self.decrypted_card_fields(ctx);
                self.reply(
                    ctx.frame,
                    Some(&ctx.terminal),
                    &answer,
                    winner.rrn.as_deref(),
                    |out| self.set_decrypted_card_fields(out, card_fields, &ctx.terminal),
                )
            }
            Claim::Conflict | Claim::New(_) => {
                entry.answer(Answer::code(RC_DUPLICATE), TxnState::Failed);
                self.reply_code(ctx, RC_DUPLICATE)
            }
        }
    }

    /// Records a request refused by the switch itself, then answers it.
    async fn refuse_recorded(
        self: &Arc<Self>,
        ctx: &Ctx<'_>,
        entry: &Arc<Entry>,
        row: TxnRow,
        code: [u8; 2],
        why: &str,
    ) -> Option<Vec<u8>> {
        // A sale refused after the risk checks passed it gives back what it held.
        self.risk_release(&ctx.terminal.mid, entry.id);
        let answer = Answer::code(code);
        let mut row = row;
        row.state = TxnState::Declined;
        row.response_code = Some(answer.code_text().to_owned());
        row.answered_at_ms = Some(self.clock.now_ms());
        // Its key claimed too (several nodes): a refused row beside another node's forwarded
        // one would be found for its key, and a reversal find nothing to reverse.
        let mut records = self.key_claim(&entry.key, !entry.key.reversal);
        records.extend([
            Record::InsertTxn(Box::new(row)),
            self.event(
                entry.id,
                "declined",
                format!(
                    "declined by shoudan at {}: {} {why}",
                    ctx.local.clock_text(),
                    answer.code_text()
                ),
            ),
        ]);
        let answer = match self.journal_within(records).await {
            Journalled::Written => answer,
            Journalled::Failed(StoreError::KeyTaken { id }) => {
                return self.key_taken(ctx, entry, id).await;
            }
            // The terminal's reversal of this request reached another node first: refused
            // all the same, with nothing of it written (a resend finds the reversal).
            Journalled::Failed(StoreError::KeyCrossed { .. }) => {
                self.ledger.forget_lost(entry);
                answer
            }
            Journalled::Failed(_) => {
                entry.mark_unrecorded();
                Answer::code(RC_SYSTEM_ERROR)
            }
            Journalled::Late(durable) => {
                // A refusal moves no money: whether it lands or not, only its record differs.
                entry.keep_answer();
                let late = Arc::clone(entry);
                let core = Arc::clone(self);
                self.tasks.spawn(async move {
                    match durable.await {
                        Ok(()) => {}
                        Err(StoreError::KeyTaken { .. }) => core.ledger.forget_lost(&late),
                        Err(_) => late.mark_unrecorded(),
                    }
                });
                Answer::code(RC_SYSTEM_ERROR)
            }
        };
        entry.answer(answer.clone(), TxnState::Declined);
        self.reply(
            ctx.frame,
            Some(&ctx.terminal),
            &answer,
            entry.rrn.as_deref(),
            |_| Ok(()),
        )
    }

    /// The journal refused a void, completion or refund that this node's memory let pass:
    /// another node sharing the journal has voided, completed or refunded the original, or has
    /// a link of it in flight. What the journal says of the original is read back into memory,
    /// and the request is refused as the check would have refused it.
    async fn refuse_link_in_journal(
        self: &Arc<Self>,
        ctx: &Ctx<'_>,
        entry: &Arc<Entry>,
        row: TxnRow,
        original: &Arc<Entry>,
        why: LinkRefusal,
    ) -> Option<Vec<u8>> {
        let id = original.id;
        if let Some(Ok(Some(now))) = self.read_for_request(move |store| store.txn(id)).await {
            original.catch_up(&now);
        }
        // Refused before it went out: nothing was sent to the issuer (the explanation reads
        // this), though its row had been made ready to send.
        let mut row = row;
        row.sent_at_ms = None;
        let code = match why {
            LinkRefusal::ExceedsAmount => RC_EXCEEDS_AMOUNT,
            LinkRefusal::NotApproved | LinkRefusal::Taken => RC_INVALID_TRANSACTION,
            LinkRefusal::ReversalPending => RC_IN_PROGRESS,
        };
        let why = format!("linked-transaction check failed in the journal: {why}");
        self.refuse_recorded(ctx, entry, row, code, &why).await
    }

    /// The original a linked request names, if it is this terminal's merchant's. Another
    /// merchant's transaction is not found (25) and the refusal is not linked to it, so neither
    /// merchant is ever shown the other's (DESIGN.md invariant 5; found by the simulation).
    /// `Err` when the journal could not be read to look: the caller answers 96, not "not
    /// found".
    async fn find_original(
        &self,
        ctx: &Ctx<'_>,
        kind: TxnKind,
        fingerprint: Option<&[u8; 32]>,
    ) -> Result<Option<Arc<Entry>>, Unread> {
        Ok(self
            .find_named(ctx, kind, fingerprint)
            .await?
            .filter(|original| original.mid == ctx.terminal.mid))
    }

    /// Finds the transaction a linked request names (PROTOCOL.md, linked transactions).
    /// - A refund, completion or pre-authorisation void may come from another terminal of the
    ///   merchant (the guest checks in at the desk and out at the till): its original is found
    ///   by RRN (field 37) when there is one, and a batch + trace in field 61, when given,
    ///   must be the original's (they are the other terminal's numbers).
    /// - A sale's or completion's void is of this terminal's own transaction: found by field
    ///   61 (batch + trace) on this terminal, and an RRN in field 37, when given, must be the
    ///   original's.
    /// - Without the first key each falls back on the other.
    /// - A completion or pre-authorisation void that names neither (a trace of 0, no RRN) is
    ///   matched by its card, the pre-authorisation's code in field 38 and, when field 61 has
    ///   one, its date ([`Core::by_auth_code`]): how terminals complete or release a
    ///   pre-authorisation taken on another terminal or before a settlement.
    ///
    /// From memory first, then the store. A trace of 0 names nothing (traces run from 1).
    async fn find_named(
        &self,
        ctx: &Ctx<'_>,
        kind: TxnKind,
        fingerprint: Option<&[u8; 32]>,
    ) -> Result<Option<Arc<Entry>>, Unread> {
        let request = &ctx.frame.message;
        let field61 = request.field61().ok().flatten();
        let named = match field61 {
            Some(Field61 {
                batch,
                trace: Some(trace @ 1..),
                ..
            }) => Some((batch, trace)),
            _ => None,
        };
        let rrn = request
            .text(37)
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let agrees_with_61 = |found: &Arc<Entry>| {
            named
                .is_none_or(|(batch, trace)| (found.key.batch_no, found.key.stan) == (batch, trace))
        };
        if from_any_terminal(kind)
            && let Some(rrn) = rrn
        {
            return Ok(self.by_rrn(rrn).await?.filter(agrees_with_61));
        }
        if let Some((batch, trace)) = named
            && let Some(found) = self.by_this_terminal(ctx, batch, trace).await?
        {
            let agrees = rrn
                .as_deref()
                .is_none_or(|rrn| found.rrn.as_deref() == Some(rrn));
            return Ok(agrees.then_some(found));
        }
        match rrn {
            // Field 61 named a batch and trace this terminal has not: the RRN's transaction
            // counts only if those are its numbers (a void whose 61 names numbers that are
            // nothing here is not let through on its RRN alone). A 61 naming no trace falls
            // back on the RRN, as the doc above says; `check_link` still holds the void to
            // this terminal's own transaction, card, amount and code.
            Some(rrn) => Ok(self.by_rrn(rrn).await?.filter(agrees_with_61)),
            None if matches!(kind, TxnKind::Completion | TxnKind::PreAuthVoid)
                && named.is_none() =>
            {
                let Some(fingerprint) = fingerprint else {
                    return Ok(None);
                };
                // 61.3 of 0000 is no date.
                let date = field61.and_then(|f| f.date).filter(|&d| d != 0);
                self.by_auth_code(ctx, fingerprint, date).await
            }
            None => Ok(None),
        }
    }

    /// The pre-authorisation a completion or its void names by authorisation code (field 38)
    /// alone: among this card's transactions at this merchant in the journal, the
    /// pre-authorisation with that code (and, when `date` is given, received or answered that
    /// day, MMDD); the one still standing when spent ones share the code. `None` when none or
    /// several match: a request that could take either is answered 25, not guessed.
    async fn by_auth_code(
        &self,
        ctx: &Ctx<'_>,
        fingerprint: &[u8; 32],
        date: Option<u16>,
    ) -> Result<Option<Arc<Entry>>, Unread> {
        let Some(code) = ctx.frame.message.text(38).map(|c| c.trim().to_owned()) else {
            return Ok(None);
        };
        if code.is_empty() {
            return Ok(None);
        }
        let (card, mid) = (fingerprint.to_vec(), ctx.terminal.mid.clone());
        let rows = self
            .read_for_request(move |store| store.txns_of_card_at(&card, &mid))
            .await
            .and_then(Result::ok)
            .ok_or(Unread)?;
        // The date the terminal printed: the day the request came in (`host_date`), or the
        // day it was answered (field 13 is stamped then), which differ across midnight.
        let on_date = |row: &TxnRow| {
            let answered = row.answered_at_ms.map(|ms| LocalTime::from_ms(ms).mmdd());
            date.is_none_or(|date| {
                [row.host_date.as_deref(), answered.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|d| d.parse::<u16>().ok() == Some(date))
            })
        };
        let matching: Vec<&TxnRow> = rows
            .iter()
            .filter(|row| {
                row.kind == TxnKind::PreAuth
                    && row.auth_code.as_deref() == Some(code.as_str())
                    && on_date(row)
            })
            .collect();
        // A pre-authorisation still standing wins over spent ones with the same code (voided,
        // completed, reversed); a lone spent one is returned, for its own refusal (12, say).
        let standing: Vec<&TxnRow> = matching
            .iter()
            .copied()
            .filter(|row| row.state == TxnState::Approved)
            .collect();
        let row = match (standing.as_slice(), matching.as_slice()) {
            ([one], _) | ([], [one]) => *one,
            _ => return Ok(None),
        };
        Ok(Some(self.ledger.adopt(row)))
    }

    /// This terminal's request under batch + trace (not a reversal), if any.
    async fn by_this_terminal(
        &self,
        ctx: &Ctx<'_>,
        batch: u32,
        trace: u32,
    ) -> Result<Option<Arc<Entry>>, Unread> {
        let key = TxnKey {
            tid: ctx.key.tid.clone(),
            batch_no: batch,
            stan: trace,
            reversal: false,
        };
        if let Some(entry) = self.ledger.by_key(&key) {
            return Ok(Some(entry));
        }
        let tid = ctx.key.tid.clone();
        let rows = self
            .read_for_request(move |store| store.txns_by_key(&tid, batch, trace))
            .await
            .and_then(Result::ok)
            .ok_or(Unread)?;
        let open = batch == ctx.terminal.batch_no;
        let rows = self
            .this_batchs(&ctx.key.tid, batch, open, rows)
            .await
            .ok_or(Unread)?;
        Ok(rows
            .iter()
            .find(|r| r.kind != TxnKind::Reversal)
            .map(|row| self.ledger.adopt(row)))
    }

    /// The transaction with RRN `rrn`, if any.
    async fn by_rrn(&self, rrn: String) -> Result<Option<Arc<Entry>>, Unread> {
        if let Some(entry) = self.ledger.by_rrn(&rrn) {
            return Ok(Some(entry));
        }
        let row = self
            .read_for_request(move |store| store.txn_by_rrn(&rrn))
            .await
            .and_then(Result::ok)
            .ok_or(Unread)?;
        Ok(row.map(|row| self.ledger.adopt(&row)))
    }

    /// Whether the entry held under `key` is of an earlier batch of the number, closed by its
    /// settlement (a terminal replaced or reinstalled numbers its batches and traces from 1
    /// again, the same day or the next): then the index lets go of its key, and the request
    /// is new rather than a retry (its old answer replayed, nothing charged) or other content
    /// under a known key (94). Read only when a key is found held, which is rare. `None` if
    /// the store could not be read.
    async fn held_of_closed_batch(&self, key: &TxnKey) -> Option<bool> {
        let Some(entry) = self.ledger.by_key(key) else {
            return Some(false);
        };
        let Some(closed_ms) = self.batch_closed_at(&key.tid, key.batch_no).await? else {
            return Some(false);
        };
        let id = entry.id;
        let row = self
            .read_for_request(move |store| store.txn(id))
            .await?
            .ok()?;
        let earlier = row.is_some_and(|row| row.received_at_ms <= closed_ms);
        if earlier {
            self.ledger.let_go_of_key(&entry);
        }
        Some(earlier)
    }

    /// Whether the terminal's reversal of the request under `key` (same terminal, batch and
    /// trace) is held: recorded before the request itself. [`Core::recall`] of the request's
    /// key has read every row under its trace, reversals included, when the store could have
    /// any this node does not hold.
    fn reversed_first(&self, key: &TxnKey) -> bool {
        let reversal = TxnKey {
            reversal: true,
            ..key.clone()
        };
        matches!(self.ledger.known(&reversal), Known::Held(_))
    }

    /// What a claim of `key` must see: its entry if held; else, when its terminal batch has
    /// entries the index let go, the rows under its TID + batch + STAN read from the store and
    /// adopted. With a shared journal the batch is first marked for this connection
    /// ([`Core::mark_for_connection`]). The caller keeps what this returns until it has
    /// claimed, so that nothing found is forgotten in between. `None` if the store could not
    /// be read: the caller answers 96 rather than risk a second debit.
    async fn recall(&self, key: &TxnKey) -> Option<Vec<Arc<Entry>>> {
        self.mark_for_connection(&key.tid, key.batch_no)
            .await
            .ok()?;
        match self.ledger.known(key) {
            Known::Held(entry) => Some(vec![entry]),
            // Several nodes on one journal: another node may have taken this key since this
            // connection's batch was marked (a terminal connected to two nodes at once), so a
            // key this node does not hold is looked up (one indexed read).
            Known::New if !self.config.shared_journal => Some(Vec::new()),
            Known::New | Known::MaybeStored => {
                let (tid, batch_no, stan) = (key.tid.clone(), key.batch_no, key.stan);
                let rows = self
                    .read_for_request(move |store| store.txns_by_key(&tid, batch_no, stan))
                    .await?
                    .ok()?;
                // A request's own batch is the terminal's open one (else 77, before this).
                let rows = self.this_batchs(&key.tid, key.batch_no, true, rows).await?;
                Some(rows.iter().map(|row| self.ledger.adopt(row)).collect())
            }
        }
    }

    /// Of `rows` read under a terminal batch's number, those of that batch: cleared within
    /// [`Core::batches_since`], and, for the batch `open` now, received after where it started
    /// ([`Core::batch_closed_at`]); older ones are an earlier batch of the same number. For a
    /// batch closed already (a linked request naming its original's), the latest use of the
    /// number its settlement closed. `None` if the store could not be read.
    async fn this_batchs(
        &self,
        tid: &str,
        batch_no: u32,
        open: bool,
        mut rows: Vec<TxnRow>,
    ) -> Option<Vec<TxnRow>> {
        let since = self.batches_since();
        rows.retain(|row| row.clearing_date >= since);
        if rows.is_empty() {
            return Some(rows);
        }
        if !open {
            // The number used more than once within the month: the use its last settlement
            // closed, the latest, when it has rows under the key (else an earlier use's).
            if let Some(settled) = self.batch_settled(tid, batch_no).await? {
                let latest: Vec<TxnRow> = rows
                    .iter()
                    .filter(|r| r.received_at_ms <= settled.settled_at_ms)
                    .filter(|r| {
                        settled
                            .opened_after_ms
                            .is_none_or(|after| r.received_at_ms > after)
                    })
                    .cloned()
                    .collect();
                if !latest.is_empty() {
                    return Some(latest);
                }
            }
            return Some(rows);
        }
        if let Some(closed_ms) = self.batch_closed_at(tid, batch_no).await? {
            rows.retain(|row| row.received_at_ms > closed_ms);
        }
        Some(rows)
    }

    /// The linked-transaction rules (PROTOCOL.md). On success the original is marked busy (a
    /// void or completion) or the refund amount reserved, so a concurrent twin cannot pass too.
    fn check_link(
        &self,
        ctx: &Ctx<'_>,
        kind: TxnKind,
        original: &Entry,
        fingerprint: &[u8; 32],
    ) -> Result<(), [u8; 2]> {
        let expected = match kind {
            TxnKind::PurchaseVoid => TxnKind::Purchase,
            TxnKind::CompletionVoid => TxnKind::Completion,
            TxnKind::PreAuthVoid | TxnKind::Completion => TxnKind::PreAuth,
            TxnKind::Refund => TxnKind::Purchase,
            _ => return Err(RC_INVALID_TRANSACTION),
        };
        let kind_ok = original.kind == expected
            || (kind == TxnKind::Refund && original.kind == TxnKind::Completion);
        // The merchant is checked by `find_original`.
        if !kind_ok || original.key.tid != ctx.key.tid && !from_any_terminal(kind) {
            return Err(RC_ORIGINAL_NOT_FOUND);
        }
        if original.fingerprint.as_ref() != Some(fingerprint) {
            return Err(RC_INVALID_CARD);
        }
        if from_any_terminal(kind) && !dated_as_sent(ctx, original) {
            return Err(RC_ORIGINAL_NOT_FOUND);
        }
        let mut live = original.live();
        // Field 38, when sent, is the original's authorisation code (a void's, a completion's).
        let code_differs = {
            let sent = ctx.frame.message.text(38).map(str::trim);
            let held = live.answer.as_ref().and_then(|a| a.auth_code.as_deref());
            matches!(
                (sent.filter(|a| !a.is_empty()), held),
                (Some(sent), Some(held)) if sent != held.trim()
            )
        };
        match live.state {
            TxnState::Approved => {}
            TxnState::Voided | TxnState::Completed => return Err(RC_INVALID_TRANSACTION),
            TxnState::Reversed => return Err(RC_ORIGINAL_NOT_FOUND),
            TxnState::InFlight | TxnState::Declined | TxnState::TimedOut | TxnState::Failed => {
                return Err(RC_ORIGINAL_NOT_FOUND);
            }
        }
        match kind {
            TxnKind::PurchaseVoid | TxnKind::CompletionVoid | TxnKind::PreAuthVoid => {
                // A sale's or completion's void only on the day of the original; a
                // pre-authorisation's hold is released while it could still be completed (the
                // guest leaves days after checking in).
                let in_time = if kind == TxnKind::PreAuthVoid {
                    ctx.clearing.day_number - original.clearing_day <= REFUND_DAYS_MAX
                } else {
                    ctx.clearing.same_day(original.clearing_day)
                };
                if !in_time {
                    return Err(RC_ORIGINAL_NOT_FOUND);
                }
                if code_differs {
                    return Err(RC_ORIGINAL_NOT_FOUND);
                }
                if ctx.amount_fen != original.amount_fen {
                    return Err(RC_AMOUNT_DIFFERS);
                }
                // Refunded (or a refund in flight): a void on top would credit the card the
                // whole amount a second time.
                if live.refunded_fen + live.refund_reserved_fen > 0 {
                    return Err(RC_INVALID_TRANSACTION);
                }
            }
            TxnKind::Completion => {
                if ctx.clearing.day_number - original.clearing_day > REFUND_DAYS_MAX {
                    return Err(RC_ORIGINAL_NOT_FOUND);
                }
                if ctx.amount_fen > original.amount_fen {
                    return Err(RC_AMOUNT_DIFFERS);
                }
                // A completion naming one pre-authorisation's numbers and another's code is
                // not guessed at.
                if code_differs {
                    return Err(RC_ORIGINAL_NOT_FOUND);
                }
            }
            TxnKind::Refund => {
                if ctx.clearing.day_number - original.clearing_day > REFUND_DAYS_MAX {
                    return Err(RC_ORIGINAL_NOT_FOUND);
                }
                // A void of the original in flight: if it is approved, nothing is left to
                // refund.
                if live.link_busy {
                    return Err(RC_INVALID_TRANSACTION);
                }
                let total = live.refunded_fen + live.refund_reserved_fen + ctx.amount_fen;
                if total > original.amount_fen {
                    return Err(RC_EXCEEDS_AMOUNT);
                }
                live.refund_reserved_fen += ctx.amount_fen;
                return Ok(());
            }
            _ => {}
        }
        if live.link_busy {
            return Err(RC_INVALID_TRANSACTION);
        }
        live.link_busy = true;
        Ok(())
    }

    /// Undoes what `check_link` reserved, applying the result when the issuer approved; what
    /// an approval changed goes to `undo`, to be put back if its outcome cannot be written.
    fn settle_link(
        &self,
        kind: TxnKind,
        link_id: i64,
        original: &Arc<Entry>,
        amount_fen: i64,
        approved: bool,
        undo: &mut Vec<Undo>,
    ) -> Vec<Record> {
        let mut live = original.live();
        let mut records = Vec::new();
        match kind {
            TxnKind::Refund => {
                live.refund_reserved_fen -= amount_fen;
                if approved {
                    undo.push(Undo::Refunded {
                        entry: Arc::clone(original),
                        delta_fen: amount_fen,
                    });
                    live.refunded_fen += amount_fen;
                    records.push(Record::Refunded { id: original.id });
                }
            }
            _ => {
                live.link_busy = false;
                if approved {
                    let state = if kind == TxnKind::Completion {
                        TxnState::Completed
                    } else {
                        TxnState::Voided
                    };
                    undo.push(Undo::State {
                        entry: Arc::clone(original),
                        was: live.state,
                        set: state,
                    });
                    live.state = state;
                    records.push(Record::TakeOriginal {
                        id: original.id,
                        by: link_id,
                        state,
                    });
                }
            }
        }
        drop(live);
        if approved && kind == TxnKind::CompletionVoid {
            records.extend(self.reopen_pre_auth(original, undo));
        }
        records
    }

    /// A completion's void stands its pre-authorisation up again, its hold back whole (as the
    /// issuer does): completed again at the right amount, or voided. After the completion's
    /// own records, whose voiding the journal's give-back waits for.
    fn reopen_pre_auth(&self, completion: &Entry, undo: &mut Vec<Undo>) -> Vec<Record> {
        let Some(id) = completion.linked_id() else {
            return Vec::new();
        };
        self.move_pre_auth(id, TxnState::Completed, TxnState::Approved, undo);
        vec![Record::GiveBack { id }]
    }

    /// Pre-authorisation `id` moved in memory from `from` to `to`, with its undo, if this node
    /// holds it so.
    fn move_pre_auth(&self, id: i64, from: TxnState, to: TxnState, undo: &mut Vec<Undo>) {
        if let Some(pre_auth) = self.ledger.by_id(id) {
            let mut live = pre_auth.live();
            if live.state == from {
                undo.push(Undo::State {
                    entry: Arc::clone(&pre_auth),
                    was: from,
                    set: to,
                });
                live.state = to;
            }
        }
    }

    /// A reversal of a completion's void: the completion stands again (`restored`: in memory
    /// here), and with it its pre-authorisation is completed again. Memory follows only where
    /// the completion was restored and the pre-authorisation is still approved (one completed
    /// again or voided since keeps that); the journal completes it once the completion is
    /// approved again there.
    fn complete_pre_auth_again(
        &self,
        completion: &Entry,
        restored: bool,
        undo: &mut Vec<Undo>,
    ) -> Vec<Record> {
        let Some(id) = completion.linked_id() else {
            return Vec::new();
        };
        if restored {
            self.move_pre_auth(id, TxnState::Approved, TxnState::Completed, undo);
        }
        vec![Record::CompleteAgain {
            id,
            by: completion.id,
        }]
    }

    /// The issuer link for a card: its bank's own link, else the default gateway. The link's
    /// name is what the journal and the reversal queue record.
    fn route(&self, pan: &Pan) -> Result<(Arc<IssuerLink>, String), [u8; 2]> {
        let lookup = self.directory.lookup(pan);
        let bank = lookup.issuer.map(|m| m.bank.code());
        let link = bank.and_then(|code| self.links.get(code)).or_else(|| {
            self.config
                .default_issuer
                .as_deref()
                .and_then(|d| self.links.get(d))
        });
        match (link, bank) {
            (Some(link), _) => Ok((Arc::clone(link), link.name.clone())),
            (None, Some(_)) => Err(RC_BANK_NOT_SUPPORTED),
            (None, None) => Err(RC_NO_SUCH_ISSUER),
        }
    }

    /// A request the issuer must decide: checks, journal, exchange, journal, answer.
    pub(crate) async fn forward(self: &Arc<Self>, ctx: &Ctx<'_>) -> Option<Vec<u8>> {
        let request = &ctx.frame.message;
        let kind = store_kind(ctx.kind);
        if let Some(held) = self.ledger.held(&ctx.key, &ctx.request_hash) {
            match self.held_of_closed_batch(&ctx.key).await {
                Some(false) => return self.answer_claimed(ctx, held).await,
                Some(true) => {}
                None => return self.reply_code(ctx, RC_SYSTEM_ERROR),
            }
        }
        // Nor does an earlier batch's reversal under the trace make this request reversed
        // first (`reversed_first`).
        let reversal_key = TxnKey {
            reversal: true,
            ..ctx.key.clone()
        };
        if self.held_of_closed_batch(&reversal_key).await.is_none() {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        }
        let Ok(id) = self.next_id().await else {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        };
        // Every forwarded request has an RRN: its reply is matched by it.
        let Ok(rrn) = self.next_rrn().await else {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        };
        let rrn = Some(rrn);
        // A track the terminal encrypted under its TDK, in the clear: the card number when
        // field 2 is absent, and the track the issuer is sent.
        let clear_tracks = self.clear_tracks(ctx);
        let pan = match &clear_tracks {
            Ok(tracks) if !request.has(2) && track_encrypted(request) => tracks.pan(),
            _ => card(request),
        };
        let fingerprint = match &pan {
            Some(Ok(pan)) => Some(self.hsm.fingerprint(pan.expose_digits().as_bytes())),
            _ => None,
        };
        let route = match &pan {
            Some(Ok(pan)) => Some(self.route(pan)),
            _ => None,
        };
        let issuer_name = match &route {
            Some(Ok((_, bank))) => Some(bank.clone()),
            _ => None,
        };
        let entry = self.new_entry(
            ctx,
            id,
            kind,
            fingerprint,
            rrn.clone(),
            issuer_name.clone(),
            None,
        );
        // Kept until the claim, so that what it recalled is not forgotten in between.
        let Some(_recalled) = self.recall(&entry.key).await else {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        };
        let entry = match self.ledger.claim(entry) {
            Claim::New(entry) => entry,
            held => return self.answer_claimed(ctx, held).await,
        };
        let pan_at_rest = match &pan {
            Some(Ok(pan)) => self
                .hsm
                .seal(pan.expose_digits().as_bytes())
                .ok()
                .map(|sealed| PanAtRest {
                    sealed,
                    fingerprint: fingerprint.map(|f| f.to_vec()).unwrap_or_default(),
                    masked: pan.masked().as_str().to_owned(),
                    last4: pan.last4().to_owned(),
                    bin: pan.bin(6).unwrap_or_default().to_owned(),
                }),
            _ => None,
        };
        let host_trace = match &route {
            Some(Ok((link, _))) => self.next_trace_for(link),
            _ => self.next_trace(),
        };
        let mut row = self.row(ctx, &entry, pan_at_rest, Some(host_trace));
        // The terminal's reversal of this very request came first (the request held up on
        // the way, by a gateway or another node): the terminal has written it off, and an
        // approval now would charge the card for a sale it holds as failed.
        if self.reversed_first(&entry.key) {
            tracing::info!(tid = %ctx.terminal.tid, "request after its own reversal: not sent");
            return self
                .refuse_recorded(
                    ctx,
                    &entry,
                    row,
                    RC_INVALID_TRANSACTION,
                    "its reversal came before it: not sent to the issuer",
                )
                .await;
        }
        if let Some(gate) = &self.config.risk_check_gate {
            gate.pass().await;
        }
        // Merchant approval and the merchant's risk rules, before anything goes out.
        let card = pan.as_ref().and_then(|p| p.as_ref().ok());
        let risk = self.risk_check(
            &ctx.terminal,
            entry.id,
            kind,
            ctx.amount_fen,
            entry.received_day,
            card,
            fingerprint.as_ref(),
        );
        if let Some(refusal) = risk {
            return self
                .refuse_recorded(ctx, &entry, row, refusal.code, &refusal.why)
                .await;
        }
        let clear_tracks = match clear_tracks {
            Ok(tracks) => tracks,
            Err(why) => {
                return self
                    .refuse_recorded(ctx, &entry, row, RC_FORMAT_ERROR, why)
                    .await;
            }
        };
        let (pan, (link, bank)) = match (pan, route) {
            (Some(Ok(pan)), Some(Ok(route))) => (pan, route),
            (Some(Ok(_)), Some(Err(code))) => {
                return self
                    .refuse_recorded(ctx, &entry, row, code, "no route to the card's issuer")
                    .await;
            }
            _ => {
                return self
                    .refuse_recorded(
                        ctx,
                        &entry,
                        row,
                        RC_INVALID_CARD,
                        "card number missing or invalid",
                    )
                    .await;
            }
        };
        // The journal keeps the card number sealed to rebuild a reversal from: a request that
        // could need one is not sent without it (the HSM could not seal: its randomness failed).
        if row.pan.is_none() && kind != TxnKind::BalanceInquiry {
            return self
                .refuse_recorded(
                    ctx,
                    &entry,
                    row,
                    RC_SYSTEM_ERROR,
                    "card number could not be sealed for the journal",
                )
                .await;
        }
        // Linked transactions: find and check the original before anything goes out.
        let mut original = Link::None;
        // The calendar day of the sale a void takes back out of the merchant's daily total
        // (any other request counts for the day it was received).
        let mut sale_day = None;
        let mut f61_out: Option<String> = None;
        if names_original(kind) {
            let found = match self.find_original(ctx, kind, fingerprint.as_ref()).await {
                Ok(Some(found)) => found,
                missing => {
                    let (code, why) = match missing {
                        // Not "not found": the terminal may try again once the journal answers.
                        Err(Unread) => (
                            RC_SYSTEM_ERROR,
                            "cannot read the journal to find the original",
                        ),
                        Ok(_) => (RC_ORIGINAL_NOT_FOUND, "original transaction not found"),
                    };
                    return self.refuse_recorded(ctx, &entry, row, code, why).await;
                }
            };
            let Some(fp) = fingerprint else {
                return self
                    .refuse_recorded(ctx, &entry, row, RC_INVALID_CARD, "card number missing")
                    .await;
            };
            // Several nodes on one journal: another node may have voided or refunded the
            // original since this one read it. What the journal says now counts.
            if self.config.shared_journal {
                let id = found.id;
                match self.read_for_request(move |store| store.txn(id)).await {
                    Some(Ok(Some(now))) => found.catch_up(&now),
                    Some(Ok(None)) => {}
                    Some(Err(_)) | None => {
                        return self
                            .refuse_recorded(
                                ctx,
                                &entry,
                                row,
                                RC_SYSTEM_ERROR,
                                "cannot read the original",
                            )
                            .await;
                    }
                }
            }
            if let Err(code) = self.check_link(ctx, kind, &found, &fp) {
                row.original_id = Some(found.id);
                return self
                    .refuse_recorded(ctx, &entry, row, code, "linked-transaction check failed")
                    .await;
            }
            row.original_id = Some(found.id);
            entry.live().linked_original = Some(found.id);
            // The original's host date, not its clearing date: after the cut-over they differ,
            // and the issuer knows the original by the date it was sent with.
            let date = found
                .host_date
                .as_deref()
                .or_else(|| found.clearing_date.get(4..8))
                .unwrap_or("0000");
            f61_out = found.rrn.as_ref().map(|r| format!("{r}{date}"));
            // A void takes its original's sale back out, on the original's day; a completion
            // (or its void) moves its pre-authorisation's day by what it changed of the hold
            // (`hold_change`, once approved).
            if crate::risk::voids_a_sale(kind) {
                sale_day = Some(found.received_day);
            }
            original = Link::Original(found);
        }
        // What an approval did to the original in memory, taken back if it cannot be written.
        let mut undo: Vec<Undo> = Vec::new();
        let release = |approved: bool, undo: &mut Vec<Undo>| -> Vec<Record> {
            match &original {
                Link::Original(o) => {
                    self.settle_link(kind, entry.id, o, ctx.amount_fen, approved, undo)
                }
                Link::None => Vec::new(),
            }
        };
        // PIN: from the terminal's PIK to the issuer's zone key, inside the HSM.
        let pin = match request.bytes(52) {
            Some(block) => {
                // The same encrypted block with another card is refused before it is decoded
                // (`pin_replay`): resent with card numbers changed, its 99s tell the PIN.
                let pik = ctx.terminal.keys.map(|k| k.pik);
                use crate::pin_replay::Admission;
                // `None`: no PIK or no card to judge it by (refused below all the same).
                let admission = match (pik, fingerprint.as_ref()) {
                    (Some(pik), Some(card)) => {
                        Some(self.pin_blocks.admit(&ctx.key.tid, pik, block, card))
                    }
                    _ => None,
                };
                let refused_why = match admission.as_ref().unwrap_or(&Admission::Admitted) {
                    Admission::Admitted => None,
                    Admission::Replayed => {
                        Some("PIN block already sent by this terminal with another card")
                    }
                    Admission::Exhausted => {
                        Some("too many PIN blocks from this terminal did not decode: sign in again")
                    }
                };
                if let Some(why) = refused_why {
                    tracing::warn!(tid = %ctx.key.tid, "PIN block refused: {why}");
                }
                let replayed = refused_why.is_some();
                let expected = pin_block_len(ctx.terminal.scheme);
                let translated = if replayed {
                    Err(paycrypto::PinError::Format)
                } else if block.len() == expected {
                    EncryptedPinBlock::from_bytes(block)
                } else {
                    Err(paycrypto::PinError::BlockLength {
                        actual: block.len(),
                    })
                };
                let translated = translated
                    .map_err(paycrypto::HsmError::from)
                    .and_then(|block| {
                        let digits = PanDigits::from_pan(pan.expose_digits())?;
                        let pik = ctx
                            .terminal
                            .keys
                            .map(|k| k.pik)
                            .ok_or(paycrypto::HsmError::BadHandle)?;
                        self.hsm
                            .translate_pin_block(pik, link.endpoint.zpk, &block, &digits)
                    });
                // A refusal for the limit itself adds nothing to it (blocks in flight alone may
                // have reached it).
                if let (Some(pik), Some(admission)) = (pik, admission)
                    && admission != Admission::Exhausted
                {
                    let decoded = !translated.as_ref().is_err_and(|e| e.is_bad_pin_block());
                    let admitted = admission == Admission::Admitted;
                    self.pin_blocks
                        .settled(&ctx.key.tid, pik, admitted, decoded);
                }
                match translated {
                    // Field 53 to the issuer names the zone key the block is now under.
                    Ok(block) => {
                        let key_type = if link.zpk_single_des {
                            iso8583::SecurityControl::KEY_SINGLE
                        } else {
                            iso8583::SecurityControl::KEY_DOUBLE
                        };
                        Some((block, key_type))
                    }
                    Err(error) => {
                        let _ = release(false, &mut undo);
                        let code = if error.is_bad_pin_block() {
                            // A PIN failure, for the risk rules on wrong PINs across cards.
                            self.risk_observe(
                                &ctx.terminal,
                                entry.id,
                                kind,
                                ctx.amount_fen,
                                fingerprint.as_ref(),
                                sale_day.unwrap_or(entry.received_day),
                                &Answer::code(RC_PIN_FORMAT),
                            );
                            RC_PIN_FORMAT
                        } else {
                            RC_SYSTEM_ERROR
                        };
                        let why = refused_why.unwrap_or("PIN block could not be translated");
                        return self.refuse_recorded(ctx, &entry, row, code, why).await;
                    }
                }
            }
            None => None,
        };
        let outbound = match self.issuer_request(
            ctx,
            &pan,
            &clear_tracks,
            host_trace,
            rrn.as_deref(),
            pin.as_ref().map(|(block, key_type)| (block, *key_type)),
            f61_out.as_deref(),
        ) {
            // Card number, tracks, PIN block: wiped however this request ends.
            Ok(bytes) => Zeroizing::new(bytes),
            Err(error) => {
                tracing::warn!(%error, "cannot encode issuer request");
                let _ = release(false, &mut undo);
                return self
                    .refuse_recorded(
                        ctx,
                        &entry,
                        row,
                        RC_FORMAT_ERROR,
                        "request could not be forwarded",
                    )
                    .await;
            }
        };
        // A card read from a track the terminal encrypted, with no field 2: the reply names
        // its organisation and issuer from the card in the clear, as the batch's totals split
        // it, where the request alone (all `reply` reads) may not show it.
        let card_fields = (track_encrypted(request) && !request.has(2))
            .then(|| self.card_organisation(Some(&pan)));
        drop(pan);
        // Write-ahead: the request is durable before the issuer can act on it.
        row.sent_at_ms = Some(self.clock.now_ms());
        // One timeline line per request, written with the outcome: the row itself already
        // says when it was received and sent.
        let what = format!(
            "{} of {} from terminal {} at {}",
            describe(kind),
            yuan(ctx.amount_fen),
            ctx.key.tid,
            ctx.local.clock_text()
        );
        // A linked request's row is kept, to record a refusal should the journal refuse it.
        let linked_row = matches!(original, Link::Original(_)).then(|| row.clone());
        let mut insert = self.key_claim(&entry.key, true);
        insert.push(Record::InsertTxn(Box::new(row)));
        let unwritten = match self.journal_within(insert).await {
            Journalled::Written => None,
            Journalled::Failed(error) => Some(Err(error)),
            Journalled::Late(durable) => Some(Ok(durable)),
        };
        if let Some(unwritten) = unwritten {
            // Whatever the answer, this sale holds nothing against a daily limit any more.
            self.risk_release(&ctx.terminal.mid, entry.id);
            match unwritten {
                Err(error) => {
                    if let (StoreError::LinkRefused(why), Link::Original(found), Some(row)) =
                        (&error, &original, linked_row)
                    {
                        let _ = release(false, &mut undo);
                        return self
                            .refuse_link_in_journal(ctx, &entry, row, found, *why)
                            .await;
                    }
                    if let StoreError::KeyTaken { id } = error {
                        let _ = release(false, &mut undo);
                        return self.key_taken(ctx, &entry, id).await;
                    }
                    // The terminal's reversal of this very request reached another node
                    // after this one looked for it: not sent, and nothing of it written (a
                    // resend finds the reversal in the journal).
                    if let StoreError::KeyCrossed { id } = error {
                        tracing::info!(tid = %ctx.terminal.tid, txn_id = id, "request after its own reversal: not sent");
                        let _ = release(false, &mut undo);
                        self.ledger.forget_lost(&entry);
                        let answer = Answer::code(RC_INVALID_TRANSACTION);
                        entry.answer(answer.clone(), TxnState::Declined);
                        return self
                            .reply(ctx.frame, Some(&ctx.terminal), &answer, None, |_| Ok(()));
                    }
                    tracing::warn!(%error, "journal write failed; answering 96");
                    entry.mark_unrecorded();
                }
                // The row may still land, the issuer never asked: `settle_late_request`.
                Ok(durable) => {
                    entry.keep_answer();
                    self.settle_late_request(&entry, durable);
                }
            }
            let _ = release(false, &mut undo);
            entry.answer(Answer::code(RC_SYSTEM_ERROR), TxnState::Failed);
            return self.reply(
                ctx.frame,
                Some(&ctx.terminal),
                &Answer::code(RC_SYSTEM_ERROR),
                entry.rrn.as_deref(),
                |_| Ok(()),
            );
        }
        let reply_mti = Core::response_mti(request.mti());
        let sent_ms = self.clock.now_ms();
        let result = link
            .exchange(reply_mti, host_trace, entry.rrn.as_deref(), outbound)
            .await;
        let answered_ms = self.clock.now_ms();
        let at = LocalTime::from_ms(answered_ms).clock_text();
        let mut records = Vec::with_capacity(4);
        // What the outcome does to the original: written after the outcome, which the
        // original's refunded total is summed from.
        let mut link_records: Vec<Record>;
        // An approval a terminal reversal overtook: it stands at the issuer only until the
        // reversal reaches it, and counts for nothing in the merchant's day.
        let mut overtaken = false;
        let (answer, state, issuer_answered) = match &result {
            Ok(reply) => {
                match parse_reply(reply, entry.rrn.as_deref()) {
                    // A gateway's (or the issuer's own) word that its side got no answer in
                    // time: the card may have been debited or credited behind it. Taken as
                    // the timeout it is, not as a decline: reversed, and a retry after it.
                    Ok(answer) if OUTCOME_UNKNOWN_CODES.contains(&answer.response_code) => {
                        link_records = release(false, &mut undo);
                        let then = if kind == TxnKind::BalanceInquiry {
                            "nothing to reverse"
                        } else {
                            records.push(self.saf(entry.id, &bank, "98", answered_ms));
                            "reversal queued"
                        };
                        records.push(self.event(
                            entry.id,
                            "timed_out",
                            format!(
                                "{bank} answered {} at {at}: its side got no answer in time, the \
                                 outcome unknown: answered 98, {then} ({what})",
                                answer.code_text()
                            ),
                        ));
                        (Answer::code(RC_ISSUER_TIMEOUT), TxnState::TimedOut, None)
                    }
                    Ok(answer) => {
                        let approved = answer.response_code == RC_APPROVED;
                        let about_link = ISSUER_LINK_CODES.contains(&answer.response_code);
                        let detail = if approved {
                            format!(
                                "approved by {bank} at {at}, auth code {} ({what})",
                                answer.auth_code.as_deref().unwrap_or("-")
                            )
                        } else if about_link {
                            tracing::warn!(
                                code = answer.code_text(),
                                bank,
                                "issuer declined with a code about the acquirer's link to it"
                            );
                            format!(
                                "declined by {bank} at {at}: {}, {} ({what})",
                                answer.code_text(),
                                domain::diagnosis::ISSUER_LINK_NOTE,
                            )
                        } else {
                            format!(
                                "declined by {bank} at {at}: {} ({what})",
                                answer.code_text()
                            )
                        };
                        // Passed on, such a code would have the terminal sign in again or
                        // doubt its own software, which cannot help; and the risk rules would
                        // count a 99 as a wrong PIN of this card at this terminal.
                        let answer = if about_link {
                            Answer::code(RC_SYSTEM_ERROR)
                        } else {
                            answer
                        };
                        records.push(self.event(
                            entry.id,
                            if approved { "approved" } else { "declined" },
                            detail,
                        ));
                        // A terminal reversal that came in while the issuer was deciding has
                        // reversed this request: its approval must not act on the original.
                        // One that comes later must find it approved, to undo what it did.
                        let reversed_meanwhile = {
                            let mut live = entry.live();
                            let reversed = live.state == TxnState::Reversed;
                            if approved && !reversed {
                                live.state = TxnState::Approved;
                            }
                            reversed
                        };
                        overtaken = approved && reversed_meanwhile;
                        link_records = release(approved && !reversed_meanwhile, &mut undo);
                        if approved && reversed_meanwhile && kind != TxnKind::BalanceInquiry {
                            // The terminal's reversal may not be durable yet: its write may
                            // still fail, and be undone. This commit carries the reversal of
                            // the approval too, so the journal ends reversed and queued either
                            // way (a second enqueue of the same reversal is a no-op).
                            records.push(Record::State {
                                id: entry.id,
                                state: TxnState::Reversed,
                            });
                            records.push(self.saf(entry.id, &bank, "98", answered_ms));
                        }
                        (
                            answer,
                            if approved {
                                TxnState::Approved
                            } else {
                                TxnState::Declined
                            },
                            Some(answered_ms),
                        )
                    }
                    Err(unreadable) => {
                        // An answer we cannot read may be an approval: reverse it (an
                        // inquiry moves no money and has nothing to reverse).
                        link_records = release(false, &mut undo);
                        if kind != TxnKind::BalanceInquiry {
                            records.push(self.saf(entry.id, &bank, "96", answered_ms));
                        }
                        let answer = match unreadable {
                            Unreadable::Garbled => format!("unreadable answer from {bank}"),
                            Unreadable::UnknownCode(code) => {
                                tracing::warn!(%code, bank, "issuer answered a response code outside the table: treated as unreadable");
                                format!(
                                    "answer from {bank} with response code {code}, which is not in the protocol's table"
                                )
                            }
                        };
                        let then = if kind == TxnKind::BalanceInquiry {
                            "nothing to reverse"
                        } else {
                            "reversal queued"
                        };
                        records.push(self.event(
                            entry.id,
                            "failed",
                            format!("{answer} at {at}: answered 96, {then} ({what})"),
                        ));
                        (
                            Answer::code(RC_SYSTEM_ERROR),
                            TxnState::Failed,
                            Some(answered_ms),
                        )
                    }
                }
            }
            Err(LinkError::Unavailable) => {
                link_records = release(false, &mut undo);
                records.push(self.event(
                    entry.id,
                    "failed",
                    format!("{bank} unavailable at {at}: answered 91, nothing sent ({what})"),
                ));
                (Answer::code(RC_ISSUER_UNAVAILABLE), TxnState::Failed, None)
            }
            Err(error @ (LinkError::Timeout | LinkError::Lost)) => {
                link_records = release(false, &mut undo);
                // A balance inquiry moves no money: there is nothing to reverse.
                let then = if kind == TxnKind::BalanceInquiry {
                    "nothing to reverse"
                } else {
                    // A dropped link may leave the request still at the issuer: its reversal
                    // waits out the issuer's timeout, so as not to overtake it there.
                    let due_ms = match error {
                        LinkError::Lost => answered_ms.max(sent_ms.saturating_add(
                            i64::try_from(link.endpoint.timeout.as_millis()).unwrap_or(i64::MAX),
                        )),
                        _ => answered_ms,
                    };
                    records.push(self.saf(entry.id, &bank, "98", due_ms));
                    "reversal queued"
                };
                records.push(self.event(
                    entry.id,
                    "timed_out",
                    format!("{bank}: {error} by {at}: answered 98, {then} ({what})"),
                ));
                (Answer::code(RC_ISSUER_TIMEOUT), TxnState::TimedOut, None)
            }
        };
        records.push(Record::Outcome(Outcome {
            id: entry.id,
            state,
            response_code: answer.code_text().to_owned(),
            auth_code: answer.auth_code.clone(),
            settlement_date: answer.settlement_date.clone(),
            issuer_answered_at_ms: issuer_answered,
            answered_at_ms: answered_ms,
        }));
        records.append(&mut link_records);
        // A retry answered by a switch that holds no memory of this inquiry (a restart,
        // another node) must still carry the balance the terminal was told.
        if let (TxnKind::BalanceInquiry, Some(balance)) = (kind, &answer.balance) {
            records.push(Record::BalanceAnswer {
                id: entry.id,
                field54: balance.clone(),
            });
        }
        // An approval, or an answer that could not be read (it may have been one), is owed a
        // reversal if its outcome cannot be written; a decline, or a request never sent, owes
        // nothing; a timeout's reversal was in the records that failed, and the sweep queues it.
        let unreadable = state == TxnState::Failed && issuer_answered.is_some();
        let owes_reversal =
            kind != TxnKind::BalanceInquiry && (state == TxnState::Approved || unreadable);
        let if_lost = match (state, issuer_answered) {
            _ if owes_reversal => IfLost::Reversal,
            (TxnState::Declined, _) => {
                IfLost::Nothing(format!("{bank} declined it: {}", answer.code_text()))
            }
            (TxnState::Failed, None) => IfLost::Nothing(format!("nothing was sent to {bank}")),
            _ => IfLost::Sweep,
        };
        // The state held in memory if the outcome is not written at once: what the issuer
        // said, so that a terminal reversal arriving later still finds an approval to reverse;
        // an answer that could not be read is held as timed out for the same reason (its own
        // reversal, queued apart, may not have been written either).
        let unwritten_state = if state == TxnState::Failed && if_lost == IfLost::Reversal {
            TxnState::TimedOut
        } else {
            state
        };
        let (journalled, rider) = self.journal_open_within(records).await;
        // An outcome late to land that may have moved money: the host's reversal of it rides
        // in the outcome's own commit (`store::Rider`), so that the two land together or not
        // at all, and the terminal is answered 96. Once the writer has taken the outcome into
        // a commit, nothing rides with it: that commit is waited for, as long again; if it is
        // still not known, the terminal is given no answer at all (its connection closed), so
        // that its own reversal undoes the request whatever becomes of this process before
        // the host's reversal, written apart, lands.
        let mut behind = None;
        let mut unanswered = false;
        let journalled = match journalled {
            Journalled::Late(durable) if if_lost == IfLost::Reversal => {
                let records = self.late_behind(&entry, state, &bank);
                let added = match rider {
                    Some(rider) => rider.add(records),
                    None => Err(records),
                };
                match added {
                    Ok(riding) => {
                        behind = Some(Ok(riding));
                        Journalled::Late(durable)
                    }
                    Err(records) => match self.wait_again(durable).await {
                        Journalled::Late(durable) => {
                            tracing::warn!(
                                txn_id = entry.id,
                                "an approval's outcome is still being committed: the terminal \
                                 is not answered, and reverses it"
                            );
                            unanswered = true;
                            behind = Some(Err(records));
                            Journalled::Late(durable)
                        }
                        known => known,
                    },
                }
            }
            other => other,
        };
        let (answer, state) = match journalled {
            Journalled::Written => (answer, state),
            Journalled::Failed(error) => {
                tracing::warn!(%error, "journal write failed after the issuer answered; answering 96");
                self.outcome_unwritten(&entry, if_lost, &bank, answered_ms, undo)
                    .await;
                (Answer::code(RC_SYSTEM_ERROR), unwritten_state)
            }
            Journalled::Late(durable) => {
                // The terminal is answered 96 now (or not at all); what the outcome did to the
                // original stays in memory until the write's fate is known
                // (`settle_late_outcome`).
                entry.keep_answer();
                // The host's reversal riding in the outcome's commit, or written apart.
                let behind = behind.and_then(|behind| match behind {
                    Ok(riding) => Some(riding),
                    Err(records) => self.store.submit(records).ok(),
                });
                let core = Arc::clone(self);
                let late = Arc::clone(&entry);
                let bank = bank.clone();
                let counted = LateGuard::new(self);
                self.tasks.spawn(async move {
                    let _counted = counted;
                    let outcome = LateOutcome {
                        durable,
                        behind,
                        if_lost,
                    };
                    core.settle_late_outcome(late, outcome, bank, answered_ms, undo)
                        .await;
                });
                (Answer::code(RC_SYSTEM_ERROR), unwritten_state)
            }
        };
        // An approval a terminal reversal overtook is being taken back: whoever still reads
        // this answer (the terminal's connection, a retry of the request) is told 98, as the
        // terminal that reversed it was, not 00 with an authorisation code for a sale that
        // will not stand. The journal keeps the issuer's 00 and the reversal.
        let answer = if overtaken {
            Answer::code(RC_ISSUER_TIMEOUT)
        } else {
            answer
        };
        entry.answer(answer.clone(), state);
        // An approval goes into the day's sales once, and not at all when its terminal's
        // reversal was read while its outcome was being written (`RiskCount`).
        let approved = answer.response_code == RC_APPROVED;
        if approved && !entry.count_in_risk() {
            self.risk_release(&ctx.terminal.mid, entry.id);
        } else {
            self.risk_observe(
                &ctx.terminal,
                entry.id,
                kind,
                ctx.amount_fen,
                fingerprint.as_ref(),
                sale_day.unwrap_or(entry.received_day),
                &answer,
            );
            if approved && let Some((day, delta)) = self.hold_change(&entry) {
                self.risk_adjust_sales(&ctx.terminal.mid, day, delta);
            }
        }
        if unanswered {
            return None;
        }
        self.reply(
            ctx.frame,
            Some(&ctx.terminal),
            &answer,
            entry.rrn.as_deref(),
            |out| self.set_decrypted_card_fields(out, card_fields, &ctx.terminal),
        )
    }

    /// The outcome of a request the issuer answered could not be written (the terminal is
    /// answered 96): its reversal, if it may have moved money, is queued on its own, what it
    /// did to its original is put back in memory, and the row, still in flight in the journal,
    /// is left to the next in-doubt sweep (timed out and reversed, or failed if nothing moved).
    async fn outcome_unwritten(
        &self,
        entry: &Arc<Entry>,
        if_lost: IfLost,
        bank: &str,
        answered_ms: i64,
        undo: Vec<Undo>,
    ) {
        if if_lost == IfLost::Reversal {
            let _ = self
                .persist(vec![self.saf(entry.id, bank, "96", answered_ms)])
                .await;
        }
        Undo::all(undo);
        entry.keep_answer();
        if !entry.is_unrecorded() {
            self.orphan(
                entry.id,
                match if_lost {
                    IfLost::Nothing(why) => Some(why),
                    IfLost::Reversal | IfLost::Sweep => None,
                },
            );
        }
    }

    /// Leaves a request row still in flight in the journal, whose terminal was answered 96,
    /// to the next in-doubt sweep (`Core::orphans`).
    fn orphan(&self, id: i64, nothing_moved: Option<String>) {
        let mut orphans = self
            .orphans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Beyond the bound (a long outage), the ten-minute sweep takes the rest.
        if orphans.len() < crate::core::ORPHANS_MAX {
            orphans.push(crate::core::Orphan { id, nothing_moved });
        }
    }

    /// What reverses a request whose outcome (`state`, which may have moved money) lands after
    /// its terminal was answered 96, written with that outcome: the row reversed, only
    /// if it then holds what the outcome wrote, the reversal queued, and an approved void,
    /// completion or refund's original given back what it took (the journal's own sums and
    /// guards decide how); memory follows once the write is known (`settle_late_outcome`).
    fn late_behind(&self, entry: &Entry, state: TxnState, bank: &str) -> Vec<Record> {
        let mut records = vec![Record::StateFrom {
            id: entry.id,
            from: state,
            state: TxnState::Reversed,
        }];
        records.extend(self.late_reversal(entry.id, bank));
        if state == TxnState::Approved {
            records.extend(self.give_back_records(entry));
        }
        records
    }

    /// The host's reversal of an outcome written after its terminal was answered 96: queued to
    /// `bank`, with its line on the timeline (the row's state is the caller's).
    fn late_reversal(&self, id: i64, bank: &str) -> [Record; 2] {
        let now_ms = self.clock.now_ms();
        [
            self.saf(id, bank, "96", now_ms),
            self.event(
                id,
                "reversed",
                format!(
                    "outcome written after the terminal was answered 96 (the journal answered \
                     late): {REVERSED_BY_HOST} at {}; reversal queued to {bank}",
                    LocalTime::from_ms(now_ms).clock_text()
                ),
            ),
        ]
    }

    /// An outcome write the terminal did not wait for (answered 96 after `journal_wait`), once
    /// the journal answers. Failed: as `outcome_unwritten`. Written: the journal now holds what
    /// the issuer said while the terminal was told 96, so an approval (or an answer that could
    /// not be read) is reversed by the host as a terminal reversal would be: the row reversed,
    /// the reversal queued, its original given back what it took; unless the terminal
    /// reversed it meanwhile. Those records ride in the outcome's commit, or were submitted
    /// right behind it (`LateOutcome::behind`), the original's give-back with them, and memory
    /// follows here;
    /// when they failed they are written here, tried again with a growing wait.
    async fn settle_late_outcome(
        self: Arc<Self>,
        entry: Arc<Entry>,
        outcome: LateOutcome,
        bank: String,
        answered_ms: i64,
        undo: Vec<Undo>,
    ) {
        let LateOutcome {
            durable,
            behind,
            if_lost,
        } = outcome;
        if let Err(error) = durable.await {
            tracing::warn!(%error, txn_id = entry.id, "late outcome write failed");
            self.outcome_unwritten(&entry, if_lost, &bank, answered_ms, undo)
                .await;
            return;
        }
        if if_lost != IfLost::Reversal {
            return;
        }
        let was = {
            let mut live = entry.live();
            if live.state == TxnState::Reversed {
                return;
            }
            std::mem::replace(&mut live.state, TxnState::Reversed)
        };
        // Written already, with the outcome or right behind it, the original's give-back included:
        // memory follows.
        if let Some(behind) = behind {
            match behind.await {
                Ok(()) => {
                    if was == TxnState::Approved {
                        // The records were in the write above; only memory changes here.
                        let _ = self.unlink(&entry, &mut Vec::new());
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, txn_id = entry.id, "host reversal behind a late outcome not written; trying again");
                }
            }
        }
        let mut unlinked = Vec::new();
        let mut records = vec![Record::State {
            id: entry.id,
            state: TxnState::Reversed,
        }];
        records.extend(self.late_reversal(entry.id, &bank));
        if was == TxnState::Approved {
            records.extend(self.unlink(&entry, &mut unlinked));
        }
        let mut wait = std::time::Duration::from_secs(1);
        let mut attempt = 1;
        while let Err(error) = self.persist(records.clone()).await {
            if attempt == LATE_SETTLE_TRIES {
                // Memory back to what the journal says: approved.
                Undo::all(unlinked);
                entry.live().state = was;
                tracing::error!(
                    %error,
                    txn_id = entry.id,
                    "an outcome the terminal was answered 96 for stands approved in the \
                     journal and could not be reversed: reverse it by hand"
                );
                return;
            }
            tracing::warn!(%error, txn_id = entry.id, "cannot record a host reversal yet");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
            attempt += 1;
        }
    }

    /// A request row written after its terminal was answered 96 (the journal answered late):
    /// the issuer was never asked, so the row is settled as failed, as the terminal was told.
    fn settle_late_request(self: &Arc<Self>, entry: &Arc<Entry>, durable: store::Durable) {
        let core = Arc::clone(self);
        let entry = Arc::clone(entry);
        let counted = LateGuard::new(self);
        self.tasks.spawn(async move {
            let _counted = counted;
            match durable.await {
                Ok(()) => {}
                // Another node journalled the request first (and may have sent it): this
                // node's entry goes, so that the terminal's reversal finds that one.
                Err(StoreError::KeyTaken { .. }) => {
                    core.ledger.forget_lost(&entry);
                    return;
                }
                Err(_) => {
                    entry.mark_unrecorded();
                    return;
                }
            }
            let now_ms = core.clock.now_ms();
            let records = vec![
                Record::Outcome(Outcome {
                    id: entry.id,
                    state: TxnState::Failed,
                    response_code: "96".to_owned(),
                    auth_code: None,
                    settlement_date: None,
                    issuer_answered_at_ms: None,
                    answered_at_ms: now_ms,
                }),
                core.event(
                    entry.id,
                    "failed",
                    "journal answered late: the terminal was answered 96 and the issuer not asked"
                        .to_owned(),
                ),
            ];
            if let Err(error) = core.persist(records).await {
                tracing::warn!(%error, txn_id = entry.id, "cannot settle a late request row");
                // The sweep settles it as failed, not as a request whose issuer may have
                // acted: it was never sent.
                core.orphan(
                    entry.id,
                    Some("the journal answered late: the issuer was not asked".to_owned()),
                );
            }
        });
    }

    pub(crate) fn saf(&self, txn_id: i64, issuer: &str, reason: &str, due_ms: i64) -> Record {
        Record::SafEnqueue {
            txn_id,
            issuer: issuer.to_owned(),
            reason: reason.to_owned(),
            next_attempt_ms: due_ms,
        }
    }

    /// A request's tracks 2 and 3 in the clear when the terminal encrypted them under its TDK
    /// (53.3 = 1): decrypted in the HSM. None for clear tracks (read from the request as they
    /// are); `Err` (answered 30) for an encrypted one the terminal holds no track key for, or
    /// that does not decrypt under it.
    fn clear_tracks(&self, ctx: &Ctx<'_>) -> Result<ClearTracks, &'static str> {
        if !track_encrypted(&ctx.frame.message) {
            return Ok(ClearTracks::default());
        }
        Ok(ClearTracks {
            track2: self.clear_track(ctx, Track::Two)?,
            track3: self.clear_track(ctx, Track::Three)?,
        })
    }

    /// Track `kind` (field 35 or 36) of an encrypted request decrypted; `None` if it has none.
    fn clear_track(
        &self,
        ctx: &Ctx<'_>,
        kind: Track,
    ) -> Result<Option<Zeroizing<String>>, &'static str> {
        let number = match kind {
            Track::Two => 35,
            Track::Three => 36,
        };
        let Some(track) = ctx.frame.message.digits(number) else {
            return Ok(None);
        };
        let tdk = ctx.terminal.keys.and_then(|k| k.tdk).ok_or(
            "track encrypted, but the terminal was given no track key (scheme 004 or 006 gives one)",
        )?;
        // Written into room made for it first: a string grown digit by digit would free
        // copies of the track unwiped.
        let mut sealed = Zeroizing::new(String::with_capacity(track.len()));
        track
            .write_to(&mut *sealed)
            .map_err(|_| "encrypted track could not be read")?;
        self.hsm
            .decrypt_track(tdk, kind, &sealed)
            .map(Some)
            .map_err(|_| "encrypted track does not decrypt under the terminal's track key")
    }

    /// The request to the issuer (docs/issuer-link.md, "Requests"). Tracks the terminal
    /// encrypted go in the clear (`tracks`), and field 53 says so: the issuer holds no
    /// terminal's keys. A PIN block goes under the issuer's zone key, and field 53 names that
    /// key's length (`pin`: the block and 53.2 for its key), not the terminal's PIK's.
    #[allow(clippy::too_many_arguments)]
    fn issuer_request(
        &self,
        ctx: &Ctx<'_>,
        pan: &Pan,
        tracks: &ClearTracks,
        host_trace: u32,
        rrn: Option<&str>,
        pin: Option<(&EncryptedPinBlock, u8)>,
        f61: Option<&str>,
    ) -> Result<Vec<u8>, iso8583::EncodeError> {
        let request = &ctx.frame.message;
        // A PIN block under an SM4 zone key is 16 bytes: field 52 of the SM4 dialect.
        let dialect = match pin {
            Some((block, _)) if block.as_bytes().len() == 16 => &iso8583::CUP_POS_SM4,
            _ => &iso8583::CUP_POS,
        };
        let mut out = MessageBuilder::with_dialect(dialect, request.mti());
        out.set_digits(2, pan.expose_digits())?;
        for number in [3, 4, 14, 22, 25, 41, 42, 49, 60] {
            out.copy_from(request, number)?;
        }
        let security = request.security_control().ok().flatten();
        // The key the PIN block is under now: the zone key's, whatever the terminal's was.
        let key_type = |security: iso8583::SecurityControl| match pin {
            Some((_, key_type)) => key_type,
            None => security.key_type,
        };
        // The block's format now: the HSM's translation makes ANSI X9.8 with the PAN,
        // whatever the terminal named.
        let pin_format = |security: iso8583::SecurityControl| match pin {
            Some(_) => iso8583::SecurityControl::PIN_FORMAT_ANSI_X98,
            None => security.pin_format,
        };
        let decrypted = tracks.track2.is_some() || tracks.track3.is_some();
        match (decrypted, security) {
            (true, Some(security)) => {
                for (number, track) in [(35, &tracks.track2), (36, &tracks.track3)] {
                    if let Some(track) = track {
                        out.set_track(number, track)?;
                    }
                }
                out.set_composed(&iso8583::SecurityControl {
                    track_encrypted: false,
                    key_type: key_type(security),
                    pin_format: pin_format(security),
                    ..security
                })?;
            }
            (_, security) => {
                out.copy_from(request, 35)?;
                out.copy_from(request, 36)?;
                match (security, pin) {
                    (Some(security), _) => {
                        out.set_composed(&iso8583::SecurityControl {
                            key_type: key_type(security),
                            pin_format: pin_format(security),
                            ..security
                        })?;
                    }
                    // A PIN block with no 53 from the terminal: the format it must be in
                    // (PROTOCOL.md: ANSI X9.8 with the PAN).
                    (None, Some((_, key_type))) => {
                        out.set_composed(&iso8583::SecurityControl {
                            pin_format: iso8583::SecurityControl::PIN_FORMAT_ANSI_X98,
                            key_type,
                            track_encrypted: false,
                            reserved: 0,
                        })?;
                    }
                    (None, None) => {}
                }
            }
        }
        out.set_stan(host_trace)?;
        out.set_digits(12, &ctx.local.hhmmss())?
            .set_digits(13, &ctx.local.mmdd())?;
        out.set_digits(32, &self.config.acquirer_code)?;
        if let Some(rrn) = rrn {
            out.set_text(37, rrn)?;
        }
        if let Some((pin, _)) = pin {
            out.set_binary(52, pin.as_bytes())?;
        }
        if let Some(f61) = f61 {
            out.set_digits(61, f61)?;
        }
        let mut bytes = Vec::with_capacity(256);
        out.encode_frame(&self.issuer_head, &mut bytes)?;
        Ok(bytes)
    }

    /// A reversal naming a batch other than the terminal's open one (PROTOCOL.md: the host finds
    /// the original by TID + MID + trace + batch). 77 would be answered to it for ever: the
    /// terminal resends its saved reversal as it was, whatever batch its sign-in moves it to,
    /// and does no business until it is answered (its request was refused 77 and the answer
    /// lost, say, after a settlement the host took but answered 96; or this node's memory of
    /// the terminal's batch is behind another node's). For a batch a settlement closed:
    /// `Some(25)` when its original was received before that settlement, whose totals stand
    /// (as for one from another day); `Some(00)` when nothing of it is there at all, and
    /// nothing is written (a row received after the settlement would count as the number's
    /// next use, and refuse a sale of that use under the same trace); `None`, taken as any
    /// reversal under the batch it names, when its original came after the settlement (the
    /// number's new use). For a batch no settlement closed, `None`. `Some(96)` when the
    /// journal cannot be read.
    async fn reversal_of_settled(
        &self,
        terminal: &Terminal,
        batch_no: u32,
        stan: u32,
    ) -> Option<[u8; 2]> {
        let Some(settled) = self.batch_settled(&terminal.tid, batch_no).await else {
            return Some(RC_SYSTEM_ERROR);
        };
        let settled = settled.filter(crate::settle::closes)?;
        let tid = terminal.tid.clone();
        let Some(Ok(rows)) = self
            .read_for_request(move |store| store.txns_by_key(&tid, batch_no, stan))
            .await
        else {
            return Some(RC_SYSTEM_ERROR);
        };
        // Received before the settlement closed the number's latest use: in a settled use
        // (that one, or an earlier one of the month). After it: the number's new use.
        let originals = || {
            rows.iter()
                .filter(|row| row.kind != TxnKind::Reversal && row.mid == terminal.mid)
        };
        let settled_before = originals().any(|row| row.received_at_ms <= settled.settled_at_ms);
        let since = originals().any(|row| row.received_at_ms > settled.settled_at_ms);
        tracing::info!(
            tid = %terminal.tid,
            batch_no,
            stan,
            settled_before,
            since,
            "reversal naming a batch not open"
        );
        match (settled_before, since) {
            (_, true) => None,
            (true, false) => Some(RC_ORIGINAL_NOT_FOUND),
            (false, false) => Some(RC_APPROVED),
        }
    }

    /// A terminal's reversal (0400): find the original by TID + MID + trace + batch, mark it
    /// reversed and queue its reversal to the issuer (store and forward). PROTOCOL.md: not
    /// found → 00, already reversed or another day → 25, amount differs → 64.
    async fn reversal(self: &Arc<Self>, ctx: &Ctx<'_>) -> Option<Vec<u8>> {
        let original_key = TxnKey {
            reversal: false,
            ..ctx.key.clone()
        };
        // A reversal names the batch open now: what an earlier batch of the number left in
        // the index under these traces (a terminal replaced the same day) is let go, so that
        // it is neither reversed nor taken for this reversal's retry.
        for key in [&ctx.key, &original_key] {
            if self.held_of_closed_batch(key).await.is_none() {
                return self.reply_code(ctx, RC_SYSTEM_ERROR);
            }
        }
        if let Some(held) = self.ledger.held(&ctx.key, &ctx.request_hash) {
            return self.answer_claimed(ctx, held).await;
        }
        let Ok(id) = self.next_id().await else {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        };
        // Both keys: the original's and this reversal's own, each may be held or let go.
        let (Some(_recalled), Some(_recalled_own)) = (
            self.recall(&original_key).await,
            self.recall(&ctx.key).await,
        ) else {
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        };
        // An original whose row never reached the journal was answered 96 before it could
        // reach an issuer: for the journal there is nothing to reverse, and a reversal that
        // named it would be refused by its foreign key for ever, the terminal resending it.
        let named = self.ledger.by_key(&original_key);
        // Nothing at all under the original's key (not even one set aside below): only then
        // may the original still arrive, and the journal's claim watch for it.
        let nothing_named = named.is_none();
        let unrecorded = named.as_ref().is_some_and(|o| o.is_unrecorded());
        // Another merchant's (a terminal moved between merchants) is not found, as for
        // linked requests (`find_original`).
        let original = named.filter(|o| !unrecorded && o.mid == ctx.terminal.mid);
        // Several nodes on one journal: another node may have voided, completed or refunded
        // the original since this one held it; reversing it then would leave that standing, a
        // second credit to the card. What the journal says now counts, as for linked requests.
        if self.config.shared_journal
            && let Some(o) = &original
        {
            let id = o.id;
            match self.read_for_request(move |store| store.txn(id)).await {
                Some(Ok(Some(now))) => o.catch_up(&now),
                Some(Ok(None)) => {}
                Some(Err(_)) | None => return self.reply_code(ctx, RC_SYSTEM_ERROR),
            }
        }
        // A reversed refund, void or completion gives its own original back what it took
        // (`unlink`): held here, read from the store if the index has let it go.
        let linked = original.as_ref().and_then(|o| o.live().linked_original);
        let _linked = match linked {
            Some(id) => match self.ledger.by_id(id) {
                Some(entry) => Some(entry),
                None => match self.read_for_request(move |store| store.txn(id)).await {
                    Some(Ok(row)) => row.map(|row| self.ledger.adopt(&row)),
                    Some(Err(_)) | None => {
                        return self.reply_code(ctx, RC_SYSTEM_ERROR);
                    }
                },
            },
            None => None,
        };
        let entry = self.new_entry(
            ctx,
            id,
            TxnKind::Reversal,
            original.as_ref().and_then(|o| o.fingerprint),
            None,
            original.as_ref().and_then(|o| o.issuer.clone()),
            original.as_ref().map(|o| o.id),
        );
        let entry = match self.ledger.claim(entry) {
            Claim::New(entry) => entry,
            held => return self.answer_claimed(ctx, held).await,
        };
        // The original claimed meanwhile on another connection (held up on its way, it races
        // its own reversal): this reversal looked before it was there, and the original looks
        // for its reversal after its claim, so one of the two sees the other. Answered 96 and
        // let go, as if it had not come: the terminal's resend finds the original.
        let appeared = original.is_none()
            && self
                .ledger
                .by_key(&original_key)
                .is_some_and(|o| !o.is_unrecorded() && o.mid == ctx.terminal.mid);
        if appeared {
            tracing::info!(tid = %ctx.key.tid, "reversal crossed its original; answering 96");
            self.ledger.forget_lost(&entry);
            entry.answer(Answer::code(RC_SYSTEM_ERROR), TxnState::Failed);
            return self.reply_code(ctx, RC_SYSTEM_ERROR);
        }
        let mut row = self.row(ctx, &entry, None, None);
        let now_ms = self.clock.now_ms();
        let mut records = Vec::with_capacity(6);
        // What this reversal changed in memory, undone if its records cannot be written: a
        // reversal the journal never got did not happen, and a late approval of its original
        // must then act as if it had not (found by the simulation with a full disk).
        let mut undo: Vec<Undo> = Vec::new();
        // What reversing an approval takes out of (or puts back into) the merchant's sales of
        // the day, for the daily limits.
        let mut sales_delta = 0;
        let mut sales_day = ctx.local.day_number;
        let (code, detail) = match &original {
            None if unrecorded => (
                RC_APPROVED,
                "original was answered 96 before it was recorded: nothing to reverse".to_owned(),
            ),
            None => (
                RC_APPROVED,
                "original not found: nothing to reverse".to_owned(),
            ),
            // A reversal is the original's request sent again (PROTOCOL.md: as original): one
            // of another type names something else and changes nothing (a refund's trace
            // reversed as a purchase would take the refund back).
            Some(o) if o.kind != store_kind(ctx.kind) => (
                RC_INVALID_TRANSACTION,
                format!(
                    "original is a {}, not a {}",
                    describe(o.kind),
                    describe(store_kind(ctx.kind))
                ),
            ),
            Some(o) if !ctx.clearing.same_day(o.clearing_day) => (
                RC_ORIGINAL_NOT_FOUND,
                "original is from another day".to_owned(),
            ),
            Some(o) if o.kind != TxnKind::BalanceInquiry && o.amount_fen != ctx.amount_fen => (
                RC_AMOUNT_DIFFERS,
                "amount differs from the original".to_owned(),
            ),
            Some(o) => {
                let previous = {
                    let mut live = o.live();
                    let previous = live.state;
                    // Voided, completed or refunded since (or a void or refund of it in
                    // flight): reversing it alone would leave the void, completion or refund
                    // standing, a second credit to the card. Nothing changes.
                    let followed = matches!(previous, TxnState::Voided | TxnState::Completed)
                        || live.refunded_fen + live.refund_reserved_fen > 0
                        || live.link_busy;
                    if followed {
                        None
                    } else {
                        if previous != TxnState::Reversed {
                            live.state = TxnState::Reversed;
                            undo.push(Undo::State {
                                entry: Arc::clone(o),
                                was: previous,
                                set: TxnState::Reversed,
                            });
                        }
                        Some(previous)
                    }
                };
                match previous {
                    None => (
                        RC_INVALID_TRANSACTION,
                        "original was voided, completed or refunded since: undo that first"
                            .to_owned(),
                    ),
                    Some(TxnState::Reversed) => (
                        RC_ORIGINAL_NOT_FOUND,
                        "original already reversed".to_owned(),
                    ),
                    Some(TxnState::Declined | TxnState::Failed) => {
                        records.push(Record::State {
                            id: o.id,
                            state: TxnState::Reversed,
                        });
                        (
                            RC_APPROVED,
                            "original was not approved: nothing to reverse at the issuer"
                                .to_owned(),
                        )
                    }
                    Some(
                        previous @ (TxnState::Approved
                        | TxnState::Voided
                        | TxnState::Completed
                        | TxnState::InFlight
                        | TxnState::TimedOut),
                    ) => {
                        // A linked request read still in flight (on a shared journal, perhaps at
                        // another node's issuer) may be approved and take its original before
                        // this write: reversed from in flight only, or the write fails (96)
                        // and the terminal's resend reads it again, approved, and gives its
                        // original back.
                        records.push(
                            if names_original(o.kind) && previous == TxnState::InFlight {
                                Record::StateFrom {
                                    id: o.id,
                                    from: TxnState::InFlight,
                                    state: TxnState::Reversed,
                                }
                            } else {
                                Record::State {
                                    id: o.id,
                                    state: TxnState::Reversed,
                                }
                            },
                        );
                        let issuer = o.issuer.clone().unwrap_or_default();
                        if o.kind != TxnKind::BalanceInquiry && !issuer.is_empty() {
                            let reason = ctx.frame.message.text(39).unwrap_or("98");
                            // Still at the issuer (or about to be: its row may still be on
                            // its way to the journal): a reversal that overtook the request
                            // there would find nothing to reverse and be acknowledged, and the
                            // approval that follows it stand. It goes once the request's
                            // answer is in or its timeout has passed: a journal wait and the
                            // issuer's timeout from now (the longest of any issuer's when this
                            // node has no link to that one: another node may send it).
                            let due_ms = if previous == TxnState::InFlight {
                                let hold_ms = match self.links.get(&issuer) {
                                    Some(link) => i64::try_from(
                                        self.config
                                            .journal_wait
                                            .saturating_add(link.endpoint.timeout)
                                            .as_millis(),
                                    )
                                    .unwrap_or(i64::MAX),
                                    None => self.config.reversal_hold_ms(),
                                };
                                now_ms.saturating_add(hold_ms)
                            } else {
                                now_ms
                            };
                            records.push(self.saf(o.id, &issuer, reason, due_ms));
                        }
                        // Undo what an approved linked transaction did to its own original.
                        if previous == TxnState::Approved {
                            records.extend(self.unlink(o, &mut undo));
                            // Only what the day's sales counted comes back out: the rules
                            // count it when its terminal is told 00. One approved at the
                            // issuer but answered 96 (its outcome's write stalled or failed),
                            // or 98 (a reversal overtook it), never was; one whose outcome is
                            // still being written now never will be (`RiskCount::Skipped`).
                            let counted = match o.uncount_in_risk() {
                                crate::ledger::RiskCount::Counted => true,
                                crate::ledger::RiskCount::Pending => {
                                    undo.push(Undo::RiskCount {
                                        entry: Arc::clone(o),
                                    });
                                    false
                                }
                                crate::ledger::RiskCount::Skipped => false,
                            };
                            sales_delta = if counted {
                                crate::risk::sales_reversed(o.kind, o.amount_fen)
                            } else {
                                0
                            };
                            // The day of the sale that goes out, or, for a void, comes back
                            // in: the voided sale's or pre-authorisation's (a pre-authorisation
                            // is voided days later). One the index no longer holds is from
                            // before yesterday, a day no limit counts any more.
                            let void = crate::risk::voids_a_sale(o.kind);
                            let voided = void
                                .then(|| o.linked_id())
                                .flatten()
                                .and_then(|id| self.ledger.by_id(id));
                            match voided {
                                Some(sale) => sales_day = sale.received_day,
                                None if void => sales_delta = 0,
                                None => sales_day = o.received_day,
                            }
                            // A completion's reversal puts its pre-authorisation's hold back as
                            // it was; a reversal of a completion's void takes it off again.
                            if let Some((day, change)) = self.hold_change(o).filter(|_| counted) {
                                sales_day = day;
                                sales_delta = -change;
                            }
                        }
                        records.push(self.event(
                            o.id,
                            "reversed",
                            format!(
                                "reversed by terminal {} at {}; reversal queued to {issuer}",
                                ctx.key.tid,
                                ctx.local.clock_text()
                            ),
                        ));
                        (RC_APPROVED, "original reversed".to_owned())
                    }
                }
            }
        };
        let answer = Answer::code(code);
        row.state = if code == RC_APPROVED {
            TxnState::Approved
        } else {
            TxnState::Declined
        };
        row.response_code = Some(answer.code_text().to_owned());
        row.answered_at_ms = Some(now_ms);
        // Found no original: refused if another node journalled it meanwhile, and the
        // terminal's resend of this reversal then finds it.
        let mut first = self.key_claim(&entry.key, nothing_named);
        first.push(Record::InsertTxn(Box::new(row)));
        records.splice(0..0, first);
        records.push(self.event(
            entry.id,
            "reversal",
            format!(
                "reversal from terminal {} at {}: {} ({detail})",
                ctx.key.tid,
                ctx.local.clock_text(),
                answer.code_text()
            ),
        ));
        let (answer, state) = match self.journal_within(records).await {
            Journalled::Written => {
                self.risk_adjust_sales(&ctx.terminal.mid, sales_day, sales_delta);
                (answer, TxnState::Approved)
            }
            Journalled::Failed(StoreError::KeyTaken { id }) => {
                // Another node took this reversal first: it is a resend of that one.
                Undo::all(undo);
                return self.key_taken(ctx, &entry, id).await;
            }
            Journalled::Failed(StoreError::KeyCrossed { id }) => {
                tracing::info!(tid = %ctx.key.tid, txn_id = id, "reversal crossed its original on another node; answering 96");
                Undo::all(undo);
                entry.mark_unrecorded();
                (Answer::code(RC_SYSTEM_ERROR), TxnState::Failed)
            }
            Journalled::Failed(error) => {
                tracing::warn!(%error, "cannot record a terminal reversal; answering 96");
                Undo::all(undo);
                // It did not happen: the terminal's resend is a new attempt.
                entry.mark_unrecorded();
                (Answer::code(RC_SYSTEM_ERROR), TxnState::Failed)
            }
            Journalled::Late(durable) => {
                // Answered 96 now; the terminal resends a reversal until it is answered, and
                // the resend gets what the write's fate says: 00 once it has landed, a new
                // attempt if it failed. Meanwhile memory keeps what the reversal did.
                entry.keep_answer();
                entry.answer(Answer::code(RC_SYSTEM_ERROR), TxnState::Failed);
                let core = Arc::clone(self);
                let late = Arc::clone(&entry);
                let mid = ctx.terminal.mid.clone();
                let counted = LateGuard::new(self);
                self.tasks.spawn(async move {
                    let _counted = counted;
                    match durable.await {
                        Ok(()) => {
                            core.risk_adjust_sales(&mid, sales_day, sales_delta);
                            late.answer(answer, TxnState::Approved);
                        }
                        Err(StoreError::KeyTaken { .. }) => {
                            // Another node took this reversal: its resend finds that one.
                            Undo::all(undo);
                            core.ledger.forget_lost(&late);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "late terminal reversal write failed");
                            Undo::all(undo);
                            late.mark_unrecorded();
                        }
                    }
                });
                let answer = Answer::code(RC_SYSTEM_ERROR);
                return self.reply(ctx.frame, Some(&ctx.terminal), &answer, None, |_| Ok(()));
            }
        };
        entry.answer(answer.clone(), state);
        self.reply(ctx.frame, Some(&ctx.terminal), &answer, None, |_| Ok(()))
    }

    /// A reversed void, completion or refund gives its original back what it took.
    pub(crate) fn unlink(&self, reversed: &Entry, undo: &mut Vec<Undo>) -> Vec<Record> {
        let linked = reversed.live().linked_original;
        let Some(original) = linked.and_then(|id| self.ledger.by_id(id)) else {
            return Vec::new();
        };
        let mut live = original.live();
        let mut restored = false;
        match reversed.kind {
            TxnKind::Refund => {
                let was = live.refunded_fen;
                live.refunded_fen = (live.refunded_fen - reversed.amount_fen).max(0);
                undo.push(Undo::Refunded {
                    entry: Arc::clone(&original),
                    delta_fen: live.refunded_fen - was,
                });
            }
            TxnKind::PurchaseVoid
            | TxnKind::CompletionVoid
            | TxnKind::PreAuthVoid
            | TxnKind::Completion => {
                if matches!(live.state, TxnState::Voided | TxnState::Completed) {
                    undo.push(Undo::State {
                        entry: Arc::clone(&original),
                        was: live.state,
                        set: TxnState::Approved,
                    });
                    live.state = TxnState::Approved;
                    restored = true;
                }
            }
            _ => {}
        }
        drop(live);
        let mut records = give_back(reversed.kind, original.id);
        if reversed.kind == TxnKind::CompletionVoid {
            records.extend(self.complete_pre_auth_again(&original, restored, undo));
        }
        records
    }

    /// What `unlink` writes for `reversed`, memory left as it is.
    fn give_back_records(&self, reversed: &Entry) -> Vec<Record> {
        let linked = reversed.live().linked_original;
        match linked.and_then(|id| self.ledger.by_id(id)) {
            Some(original) => {
                let mut records = give_back(reversed.kind, original.id);
                if reversed.kind == TxnKind::CompletionVoid {
                    records.extend(self.complete_pre_auth_again(&original, false, &mut Vec::new()));
                }
                records
            }
            None => Vec::new(),
        }
    }
}

/// The journal's side of giving an original back what a reversed `kind` took from it: its
/// refunded total summed again (a refund), or approved again if voided or completed (a void or
/// completion). Written whatever memory says: the journal may hold the original voided or
/// completed though this node's memory does not (another node voided it, or a commit whose
/// answer was lost did), and the store gives it back only then.
fn give_back(kind: TxnKind, original: i64) -> Vec<Record> {
    match kind {
        TxnKind::Refund => vec![Record::Refunded { id: original }],
        TxnKind::PurchaseVoid
        | TxnKind::CompletionVoid
        | TxnKind::PreAuthVoid
        | TxnKind::Completion => vec![Record::GiveBack { id: original }],
        _ => Vec::new(),
    }
}

/// A change made in memory ahead of its journal write (by a terminal reversal, or by an
/// approval to its original), to put back if the write fails.
pub(crate) enum Undo {
    /// The entry's state went from `was` to `set`: put back only if it is still `set` (a
    /// state another request has set since, an approval's outcome say, stands).
    State {
        entry: Arc<Entry>,
        was: TxnState,
        set: TxnState,
    },
    /// By how much the refunded amount moved: taken back as a difference, since another
    /// refund of the same original may have moved it too meanwhile.
    Refunded { entry: Arc<Entry>, delta_fen: i64 },
    /// A reversal marked its original's approval never to be counted (`RiskCount::Skipped`).
    RiskCount { entry: Arc<Entry> },
}

impl Undo {
    /// Puts back every change, newest first.
    pub(crate) fn all(changes: Vec<Undo>) {
        for change in changes.into_iter().rev() {
            change.undo();
        }
    }

    fn undo(self) {
        match self {
            Undo::State { entry, was, set } => {
                let mut live = entry.live();
                if live.state == set {
                    live.state = was;
                }
            }
            Undo::Refunded { entry, delta_fen } => entry.live().refunded_fen -= delta_fen,
            Undo::RiskCount { entry } => entry.count_again_later(),
        }
    }
}

/// Response codes an issuer may decline with that speak of the acquirer's side of the link
/// (its message format, its keys under the zone key, its MACs, its sign-in and batch with the
/// issuer), not of the terminal or the card: format error (30), out of step (22, 77),
/// reconciliation (79), PIN block under the zone key (99), MAC (A0). The request is declined
/// and the terminal answered 96 (the acquirer acts); the issuer's code is in its event.
const ISSUER_LINK_CODES: [[u8; 2]; 6] = [*b"22", *b"30", *b"77", *b"79", *b"99", *b"A0"];

/// What the timeline event of a reversal the host made itself says (an approval whose outcome
/// was written after the terminal was answered 96), as against a terminal's: the explanation
/// reads it.
pub const REVERSED_BY_HOST: &str = "reversed by the host";

/// Response codes with which an issuer's side says it does not know the outcome: its issuer did
/// not answer in time (98), or answered too late (68). PROTOCOL.md: "retry after reversal".
const OUTCOME_UNKNOWN_CODES: [[u8; 2]; 2] = [*b"98", *b"68"];

/// Why an issuer's answer could not be taken as it stands: it is treated as one that may have
/// been an approval (answered 96, reversed).
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    /// Not a message, not this request's, or no response code.
    Garbled,
    /// A response code outside the protocol's table: it may be an approval of a kind this
    /// host does not know (a partial or conditional one), so it is not taken for a decline.
    UnknownCode(String),
}

/// Linked requests that may come from any terminal of the original's merchant, their original
/// found by RRN first: refunds, completions and pre-authorisation voids (a hold is released
/// wherever the guest leaves, days later). A sale's or completion's void is of the terminal's
/// own batch.
fn from_any_terminal(kind: TxnKind) -> bool {
    matches!(
        kind,
        TxnKind::Refund | TxnKind::Completion | TxnKind::PreAuthVoid
    )
}

/// Whether the original date a refund or completion gives in field 61 (61.3, MMDD; 0000 or
/// none gives no date) is the original's: the day its request came in (`host_date`, the
/// field 13 it went to the issuer with), or the day after, when its answer, whose field 13
/// the terminal printed, came after midnight. A refund naming the right RRN with another
/// day's date is of another sale than the terminal thinks (PROTOCOL.md: 37 + 61 with the
/// original date).
fn dated_as_sent(ctx: &Ctx<'_>, original: &Entry) -> bool {
    let Some(date) = ctx
        .frame
        .message
        .field61()
        .ok()
        .flatten()
        .and_then(|f| f.date)
        .filter(|&d| d != 0)
    else {
        return true;
    };
    original
        .host_date
        .as_deref()
        .and_then(|d| d.parse::<u16>().ok())
        == Some(date)
        || [0, 1]
            .into_iter()
            .any(|after| crate::clock::mmdd_of_day(original.received_day + after) == date)
}

/// The answer in an issuer's reply: 39, 38, 15, 54. `Unreadable` when it cannot be read, when
/// its response code is not in the protocol's table, or when it does not carry the request's
/// RRN in field 37 (the issuer echoes it): a late reply to an earlier request that had the
/// same host trace (traces repeat within a day) must not answer this one, and a reply without
/// the RRN cannot show it is not one.
fn parse_reply(frame: &[u8], rrn: Option<&str>) -> Result<Answer, Unreadable> {
    let decoded = iso8583::Frame::decode_unprefixed(frame).map_err(|_| Unreadable::Garbled)?;
    let message = decoded.message;
    let ours = rrn.map(str::trim);
    let theirs = message.text(37).map(str::trim);
    if ours.is_none() || theirs != ours {
        tracing::warn!(
            ours = ours.unwrap_or("-"),
            theirs = theirs.unwrap_or("-"),
            "issuer reply without this request's RRN: treated as unreadable"
        );
        return Err(Unreadable::Garbled);
    }
    let text = message.text(39).ok_or(Unreadable::Garbled)?;
    let code: [u8; 2] = text
        .as_bytes()
        .try_into()
        .map_err(|_| Unreadable::Garbled)?;
    if code != RC_APPROVED && domain::diagnosis::lookup(code).is_none() {
        return Err(Unreadable::UnknownCode(text.to_owned()));
    }
    Ok(Answer {
        response_code: code,
        auth_code: message.text(38).map(str::to_owned),
        settlement_date: message.digits(15).map(|d| d.chars().collect()),
        balance: message.text(54).map(str::to_owned),
    })
}

/// Bytes of the PIN block a terminal on `scheme` sends: one cipher block of its PIK. A block
/// of the other length is a terminal encrypting under keys it was not given (answered 99).
fn pin_block_len(scheme: KeyScheme) -> usize {
    match scheme {
        KeyScheme::Sm4 => 16,
        KeyScheme::Single | KeyScheme::Double | KeyScheme::DoubleWithTdk => 8,
    }
}
