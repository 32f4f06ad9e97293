//! Back-office refunds: a refund an operator approved (a case's refund application), run through
//! the switch's own refund path (linked checks, journal, issuer link, reversal on timeout).
//!
//! There is no terminal, so no MAC and no PIN: the request is built here as a terminal would
//! send it, from a virtual terminal [`BACK_OFFICE_TID`] of the original's merchant, and handed to
//! the same `forward` step every terminal refund takes after its MAC check. Idempotency: the
//! operator's key claims one (batch, STAN) of the virtual terminal in the store, first claim wins;
//! a retry replays the identical request, which the switch's idempotency index answers from the
//! journal instead of sending it again. So a retried approval never refunds twice.

use std::sync::Arc;

use iso8583::{Financial, Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};
use paycrypto::{KeyHandle, KeyScheme, MacAlgorithm};
use store::resolve::{BackOfficeKeyRow, ResolveRecord};
use store::{Record, Status, Store, StoreError, TxnKind, TxnState};
use zeroize::Zeroizing;

use crate::SwitchHandle;
use crate::clock::LocalTime;
use crate::core::{Core, Terminal};
use crate::financial::Ctx;
use crate::ledger::TxnKey;
use crate::wire::REPLY_CAPACITY;

/// The terminal id back-office refunds are journalled under (field 41 is 8 characters).
pub const BACK_OFFICE_TID: &str = "BACKOFFC";
/// Longest idempotency key accepted; keys are ids the caller makes (e.g. `case-42-refund`).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 64;
/// STANs are six digits, never 0; batches likewise: the counter is spread over both.
const STAN_SPAN: u64 = 999_999;
/// The counter the virtual terminal's (batch, STAN) pairs come from.
const COUNTER: &str = "backoffice_stan";

/// Why a back-office refund was not attempted. A refund the issuer or the switch's checks
/// declined is not an error: it is a [`BackOfficeRefund`] with its response code.
#[derive(Debug, thiserror::Error)]
pub enum BackOfficeError {
    #[error("idempotency key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters")]
    BadKey,
    #[error("refund amount must be positive")]
    BadAmount,
    #[error("idempotency key {key} was already used for a different refund")]
    KeyReused { key: String },
    #[error("no transaction with RRN {rrn}")]
    OriginalNotFound { rrn: String },
    #[error("the original's card number cannot be recovered")]
    Card,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot build the refund request: {0}")]
    Encode(#[from] iso8583::EncodeError),
    #[error("cannot read the switch's answer")]
    NoAnswer,
}

/// What the refund came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackOfficeRefund {
    /// The refund's journal id (absent only when the switch refused it before journalling).
    pub txn_id: Option<i64>,
    pub rrn: Option<String>,
    pub response_code: String,
    pub auth_code: Option<String>,
    /// Journal state: approved, declined, timed out (reversal queued) or failed.
    pub state: Option<TxnState>,
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
}

impl BackOfficeRefund {
    pub fn approved(&self) -> bool {
        self.response_code == "00"
    }
}

/// A cloneable handle for back-office operations, for services that outlive no switch.
#[derive(Clone)]
pub struct BackOffice {
    core: Arc<Core>,
}

/// One back-office refund under way, counted in `Core::back_office` while it lives.
struct Running(Arc<Core>);

impl Running {
    fn new(core: &Arc<Core>) -> Running {
        core.back_office
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(Arc::clone(core))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .back_office
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl SwitchHandle {
    /// Refunds `amount_fen` of the transaction `original_rrn` for an operator, at most once per
    /// `idempotency_key` (see the module comment).
    pub async fn back_office_refund(
        &self,
        original_rrn: &str,
        amount_fen: i64,
        idempotency_key: &str,
    ) -> Result<BackOfficeRefund, BackOfficeError> {
        self.back_office()
            .refund(original_rrn, amount_fen, idempotency_key)
            .await
    }

    /// A handle to the same operations that can be kept by another service.
    pub fn back_office(&self) -> BackOffice {
        BackOffice {
            core: Arc::clone(&self.core),
        }
    }
}

impl BackOffice {
    /// As [`SwitchHandle::back_office_refund`]. The refund runs as a task of the switch's own,
    /// to its end even if the caller stops waiting (a closed browser tab, an API client's
    /// timeout, which drop an HTTP handler's future): once the request is at the issuer, its
    /// answer must be journalled and the sale's reserved refund amount settled, or the refund
    /// would sit in flight until the in-doubt sweep reversed it minutes after the card was
    /// credited, and every other refund of the sale would be refused meanwhile.
    pub async fn refund(
        &self,
        original_rrn: &str,
        amount_fen: i64,
        idempotency_key: &str,
    ) -> Result<BackOfficeRefund, BackOfficeError> {
        let this = self.clone();
        let (rrn, key) = (original_rrn.to_owned(), idempotency_key.to_owned());
        // Counted from here until the task ends, so that a stop waits for it.
        let running = Running::new(&self.core);
        self.core
            .tasks
            .spawn(async move {
                let _running = running;
                this.run_refund(&rrn, amount_fen, &key).await
            })
            .await
            .map_err(|_| BackOfficeError::NoAnswer)?
    }

    async fn run_refund(
        &self,
        original_rrn: &str,
        amount_fen: i64,
        idempotency_key: &str,
    ) -> Result<BackOfficeRefund, BackOfficeError> {
        let key_ok = (1..=IDEMPOTENCY_KEY_LEN_MAX).contains(&idempotency_key.len())
            && idempotency_key.bytes().all(|b| b.is_ascii_graphic());
        if !key_ok {
            return Err(BackOfficeError::BadKey);
        }
        if amount_fen <= 0 {
            return Err(BackOfficeError::BadAmount);
        }
        let core = &self.core;
        let rrn = original_rrn.trim().to_owned();
        let original = blocking(core, move |store| store.txn_by_rrn(&rrn))
            .await?
            .ok_or_else(|| BackOfficeError::OriginalNotFound {
                rrn: original_rrn.to_owned(),
            })?;
        let claim = self
            .claim(idempotency_key, original_rrn.trim(), amount_fen)
            .await?;
        let sealed = original.pan.as_ref().ok_or(BackOfficeError::Card)?;
        let pan = core
            .hsm
            .open(&sealed.sealed)
            .map_err(|_| BackOfficeError::Card)?;
        let pan = std::str::from_utf8(&pan).map_err(|_| BackOfficeError::Card)?;
        let amount = u64::try_from(amount_fen).map_err(|_| BackOfficeError::BadAmount)?;

        // The request a terminal of the merchant would send for this refund.
        let mut out = MessageBuilder::new(Mti::ADVICE);
        out.set_digits(2, pan)?;
        out.set_digits(3, "200000")?;
        out.set_amount(amount)?;
        out.set_stan(claim.stan)?;
        // Manual entry, no PIN: the card is not present.
        out.set_digits(22, "012")?;
        out.set_digits(25, "00")?;
        out.set_text(37, original_rrn.trim())?;
        out.set_text(41, &claim.tid)?;
        out.set_text(42, &original.mid)?;
        out.set_text(49, &original.currency)?;
        out.set_digits(60, &format!("25{:06}", claim.batch_no))?;
        let head = FrameHead {
            tpdu: Tpdu {
                destination: [0, 0],
                source: [0, 0],
            },
            header: Header::from_bytes([0x60, 0, 0, 0, 0, 0])
                .map_err(|_| BackOfficeError::NoAnswer)?,
        };
        // It carries the clear PAN (field 2): wiped however this ends.
        let mut bytes = Zeroizing::new(Vec::with_capacity(REPLY_CAPACITY));
        out.encode_frame(&head, &mut bytes)?;
        let frame = Frame::decode(&bytes).map_err(|_| BackOfficeError::NoAnswer)?;

        let request_hash = core.request_digest(&frame.message);
        let now_ms = core.clock.now_ms();
        let terminal = Arc::new(Terminal {
            tid: claim.tid.clone(),
            mid: original.mid.clone(),
            // Never used: the virtual terminal has no keys, so nothing is MACed or translated.
            tmk: KeyHandle::from_raw(0),
            scheme: KeyScheme::Double,
            registered: KeyScheme::Double,
            mac: MacAlgorithm::CupEcb,
            mak: paycrypto::MakLength::Double,
            status: Status::Active,
            batch_no: claim.batch_no,
            keys: None,
            row_keys: None,
            keys_gen: 0,
        });
        let key = TxnKey {
            tid: claim.tid.clone(),
            batch_no: claim.batch_no,
            stan: claim.stan,
            reversal: false,
        };
        let ctx = Ctx {
            frame: &frame,
            terminal,
            kind: Financial::Refund,
            now_ms,
            local: LocalTime::from_ms(now_ms),
            clearing: core.clearing_day(now_ms),
            amount_fen,
            request_hash,
            key: key.clone(),
        };
        // The answer echoes field 2 too.
        let reply = core.forward(&ctx).await.map(Zeroizing::new);
        drop(ctx);
        drop(bytes);
        let reply = reply.ok_or(BackOfficeError::NoAnswer)?;
        let reply = Frame::decode(&reply).map_err(|_| BackOfficeError::NoAnswer)?;
        let message = &reply.message;
        let response_code = message
            .text(39)
            .ok_or(BackOfficeError::NoAnswer)?
            .to_owned();
        let entry = core
            .ledger
            .by_key(&key)
            .filter(|e| e.kind == TxnKind::Refund);
        let (txn_id, state) = match &entry {
            Some(e) => (Some(e.id), Some(e.live().state)),
            None => (None, None),
        };
        let refund = BackOfficeRefund {
            txn_id,
            rrn: message.text(37).map(|r| r.trim().to_owned()),
            response_code,
            auth_code: message.text(38).map(str::to_owned),
            state,
            tid: claim.tid,
            batch_no: claim.batch_no,
            stan: claim.stan,
        };
        tracing::info!(
            original = %original_rrn,
            amount_fen,
            code = %refund.response_code,
            "back-office refund"
        );
        Ok(refund)
    }

    /// The (batch, STAN) this key runs under: the stored claim, else a fresh one written with
    /// "first claim wins" and read back, so concurrent callers with one key agree.
    async fn claim(
        &self,
        key: &str,
        original_rrn: &str,
        amount_fen: i64,
    ) -> Result<BackOfficeKeyRow, BackOfficeError> {
        let lookup = key.to_owned();
        let found = blocking(&self.core, move |store| store.backoffice_key(&lookup)).await?;
        let row = match found {
            Some(row) => row,
            None => {
                let n = self.core.store.reserve(COUNTER, 1)?.await?;
                let narrow = |v: u64| u32::try_from(v).unwrap_or(1);
                let row = BackOfficeKeyRow {
                    idempotency_key: key.to_owned(),
                    original_rrn: original_rrn.to_owned(),
                    amount_fen,
                    tid: BACK_OFFICE_TID.to_owned(),
                    batch_no: narrow((n / STAN_SPAN) % STAN_SPAN + 1),
                    stan: narrow(n % STAN_SPAN + 1),
                    created_at_ms: self.core.clock.now_ms(),
                };
                self.core
                    .persist(vec![Record::Resolve(ResolveRecord::BackOfficeKey(row))])
                    .await?;
                let lookup = key.to_owned();
                blocking(&self.core, move |store| store.backoffice_key(&lookup))
                    .await?
                    .ok_or(BackOfficeError::NoAnswer)?
            }
        };
        if row.original_rrn != original_rrn || row.amount_fen != amount_fen {
            return Err(BackOfficeError::KeyReused {
                key: key.to_owned(),
            });
        }
        Ok(row)
    }
}

/// A store read off the async workers ([`Core::read_store`]).
async fn blocking<T: Send + 'static>(
    core: &Core,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BackOfficeError> {
    match core.read_store(f).await {
        Some(result) => Ok(result?),
        None => Err(BackOfficeError::Store(StoreError::Backend {
            message: "store read task failed".to_owned(),
        })),
    }
}
