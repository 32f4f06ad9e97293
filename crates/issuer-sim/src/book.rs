//! The issuer's books in memory: accounts, the transactions keyed by RRN, and the authorisation
//! decision. Pure state machine — no IO; every change it makes is handed out as a `LedgerOp`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{
    AccountSpec, AuthRequest, CardRules, CardStatus, EncryptedPinBlock, Fen, Limits, Pan,
    PinVerificationValue, Posting, Reply, ResponseCode, ReversalRequest, Rrn, TxnKind, TxnRecord,
    TxnState,
};
use crate::time::{Date, LocalTime, YearMonth};

/// Policy shared by all accounts of one issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookConfig {
    /// Wrong PINs in a day before the card is PIN-locked (75) until the next day.
    pub pin_tries_max: u8,
    /// How old an original may be for a refund, a completion or a pre-auth void (else 25).
    pub linked_window_days: u16,
}

impl BookConfig {
    /// Days of transactions the book holds in memory: the linked window and two days for its
    /// edges. Older ones stay in the ledger, where the issuer recalls one when a request names
    /// it (a reversal delivered after a long outage, say), so memory does not grow with every
    /// transaction ever made.
    pub fn held_days(&self) -> i64 {
        i64::from(self.linked_window_days) + 2
    }
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            pin_tries_max: 3,
            linked_window_days: 30,
        }
    }
}

/// Outcome of checking a PIN block against the stored verification value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCheck {
    Correct,
    Wrong,
    /// The block did not decrypt to a format 0 block for this PAN (key mismatch): 99, no try
    /// counted, since the cardholder is not at fault.
    Unreadable,
    /// The HSM could not do the check (key missing, wrong usage): 96, no try counted.
    Fault,
}

/// Checks PIN blocks under the issuer's ZPK; implemented over the HSM.
pub trait PinVerifier: Send + Sync {
    fn verify(
        &self,
        pan: &Pan,
        block: &EncryptedPinBlock,
        stored: &PinVerificationValue,
    ) -> PinCheck;
}

/// An account's changing state, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub reference: Arc<str>,
    pub status: CardStatus,
    pub balance: i64,
    pub holds: i64,
    pub pin_tries: u8,
    pub day: Option<Date>,
    pub day_amount: Fen,
    pub day_count: u32,
}

/// A change for the ledger to persist, in the order the book made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOp {
    /// Insert or replace the transaction with this RRN.
    Txn(TxnRecord),
    Posting(Posting),
    /// Insert or replace the account's state.
    Account(AccountSnapshot),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("two accounts have the reference {0}")]
    DuplicateReference(String),
    #[error("two accounts have the card {0}")]
    DuplicatePan(String),
}

#[derive(Debug)]
struct Account {
    reference: Arc<str>,
    pan: Pan,
    expiry: YearMonth,
    pin: PinVerificationValue,
    limits: Limits,
    rules: CardRules,
    status: CardStatus,
    balance: i64,
    holds: i64,
    pin_tries: u8,
    day: Option<Date>,
    day_amount: Fen,
    day_count: u32,
}

impl Account {
    fn available(&self) -> i64 {
        self.balance.saturating_sub(self.holds)
    }

    /// Daily amounts and PIN tries start over on a new business day.
    fn roll_day(&mut self, today: Date) {
        match self.day {
            Some(day) if day == today => {}
            Some(_) => {
                self.day = Some(today);
                self.day_amount = 0;
                self.day_count = 0;
                self.pin_tries = 0;
            }
            // A fresh account keeps the tries it was opened with (the PIN-locked fixture).
            None => self.day = Some(today),
        }
    }

    fn snapshot(&self) -> AccountSnapshot {
        AccountSnapshot {
            reference: Arc::clone(&self.reference),
            status: self.status,
            balance: self.balance,
            holds: self.holds,
            pin_tries: self.pin_tries,
            day: self.day,
            day_amount: self.day_amount,
            day_count: self.day_count,
        }
    }

    fn check_pin(
        &mut self,
        block: Option<&EncryptedPinBlock>,
        required: bool,
        tries_max: u8,
        pins: &dyn PinVerifier,
    ) -> Result<(), ResponseCode> {
        let locked = self.pin_tries >= tries_max;
        let Some(block) = block else {
            return match (required, locked) {
                (false, _) => Ok(()),
                (true, true) => Err(ResponseCode::PinTriesExceeded),
                (true, false) => Err(ResponseCode::WrongPin),
            };
        };
        if locked {
            return Err(ResponseCode::PinTriesExceeded);
        }
        match pins.verify(&self.pan, block, &self.pin) {
            PinCheck::Correct => {
                self.pin_tries = 0;
                Ok(())
            }
            PinCheck::Wrong => {
                self.pin_tries = self.pin_tries.saturating_add(1);
                if self.pin_tries >= tries_max {
                    Err(ResponseCode::PinTriesExceeded)
                } else {
                    Err(ResponseCode::WrongPin)
                }
            }
            PinCheck::Unreadable => Err(ResponseCode::PinFormatError),
            PinCheck::Fault => Err(ResponseCode::SystemError),
        }
    }

    /// Balance inquiry, purchase and pre-authorisation: card, PIN, limits, funds.
    fn check_debit(
        &mut self,
        req: &AuthRequest,
        today: Date,
        config: BookConfig,
        pins: &dyn PinVerifier,
    ) -> Result<(), ResponseCode> {
        let inquiry = req.kind == TxnKind::BalanceInquiry;
        if !inquiry && req.amount == 0 {
            return Err(ResponseCode::InvalidAmount);
        }
        if let Some(code) = self.status.decline() {
            return Err(code);
        }
        if self.expiry < today.year_month() || req.expiry.is_some_and(|e| e != self.expiry) {
            return Err(ResponseCode::Expired);
        }
        if self.rules.not_allowed.contains(req.kind) {
            return Err(ResponseCode::NotAllowedForCard);
        }
        self.check_pin(
            req.pin_block.as_ref(),
            self.rules.pin_required,
            config.pin_tries_max,
            pins,
        )?;
        if inquiry {
            return Ok(());
        }
        let amount = req.amount;
        if self.rules.refer_above.is_some_and(|max| amount > max) {
            return Err(ResponseCode::ReferToIssuer);
        }
        if self.limits.per_txn_max.is_some_and(|max| amount > max) {
            return Err(ResponseCode::AmountLimit);
        }
        if let Some(max) = self.limits.daily_amount_max
            && self
                .day_amount
                .checked_add(amount)
                .is_none_or(|total| total > max)
        {
            return Err(ResponseCode::AmountLimit);
        }
        if self
            .limits
            .daily_count_max
            .is_some_and(|max| self.day_count >= max)
        {
            return Err(ResponseCode::FrequencyLimit);
        }
        let amount_signed = i64::try_from(amount).map_err(|_| ResponseCode::InvalidAmount)?;
        if self.available() < amount_signed {
            return Err(ResponseCode::InsufficientFunds);
        }
        Ok(())
    }
}

/// The issuer's accounts and transactions.
#[derive(Debug)]
pub struct Book {
    config: BookConfig,
    accounts: Vec<Account>,
    by_pan: HashMap<Pan, usize>,
    by_reference: HashMap<Arc<str>, usize>,
    txns: HashMap<Rrn, TxnRecord>,
    /// The RRNs put in `txns`, with their business day, in the order they came: what
    /// `let_go` walks from the front.
    arrivals: VecDeque<(Date, Rrn)>,
    /// The first day `txns` still holds since `let_go` last ran.
    held_from: Option<Date>,
    auth_seq: u32,
    posting_seq: u64,
}

/// What the persisted ledger hands back on reopen.
#[derive(Debug, Default)]
pub struct Restored {
    pub accounts: Vec<AccountSnapshot>,
    pub txns: Vec<TxnRecord>,
    pub last_posting_seq: u64,
    /// The highest authorisation code the ledger holds, read only when no transaction of the
    /// held days is restored (an issuer idle that long): codes then go on from it.
    pub last_auth_seq: u32,
}

impl Book {
    pub fn new(config: BookConfig, specs: Vec<AccountSpec>) -> Result<Self, BookError> {
        let mut accounts = Vec::with_capacity(specs.len());
        let mut by_pan = HashMap::with_capacity(specs.len());
        let mut by_reference = HashMap::with_capacity(specs.len());
        for spec in specs {
            let index = accounts.len();
            let reference: Arc<str> = Arc::from(spec.reference.as_str());
            match by_reference.entry(Arc::clone(&reference)) {
                Entry::Occupied(_) => return Err(BookError::DuplicateReference(spec.reference)),
                Entry::Vacant(slot) => slot.insert(index),
            };
            match by_pan.entry(spec.pan.clone()) {
                Entry::Occupied(_) => {
                    return Err(BookError::DuplicatePan(spec.pan.masked().to_string()));
                }
                Entry::Vacant(slot) => slot.insert(index),
            };
            accounts.push(Account {
                reference,
                pan: spec.pan,
                expiry: spec.expiry,
                pin: spec.pin,
                limits: spec.limits,
                rules: spec.rules,
                status: spec.status,
                balance: spec.balance,
                holds: 0,
                pin_tries: spec.pin_tries_used,
                day: None,
                day_amount: 0,
                day_count: 0,
            });
        }
        Ok(Self {
            config,
            accounts,
            by_pan,
            by_reference,
            txns: HashMap::new(),
            arrivals: VecDeque::new(),
            held_from: None,
            auth_seq: 0,
            posting_seq: 0,
        })
    }

    /// Lays persisted state over the opening state. Snapshots of accounts no longer configured
    /// are ignored; their transactions are kept so that reversals and audits still find them.
    pub fn restore(&mut self, restored: Restored) {
        for snap in restored.accounts {
            if let Some(account) = self
                .by_reference
                .get(&snap.reference)
                .and_then(|&i| self.accounts.get_mut(i))
            {
                account.status = snap.status;
                account.balance = snap.balance;
                account.holds = snap.holds;
                account.pin_tries = snap.pin_tries;
                account.day = snap.day;
                account.day_amount = snap.day_amount;
                account.day_count = snap.day_count;
            }
        }
        for txn in restored.txns {
            self.auth_seq = self.auth_seq.max(
                txn.auth_code
                    .as_deref()
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(0),
            );
            self.hold(txn);
        }
        self.posting_seq = self.posting_seq.max(restored.last_posting_seq);
        self.auth_seq = self.auth_seq.max(restored.last_auth_seq);
    }

    pub fn txn(&self, rrn: &Rrn) -> Option<&TxnRecord> {
        self.txns.get(rrn)
    }

    /// How many transactions the book holds in memory.
    pub fn held(&self) -> usize {
        self.txns.len()
    }

    /// Takes back a transaction read from the ledger, unless the book holds one by its RRN.
    /// The caller has let go of the day's old transactions first (`let_go`), under the same
    /// lock as the request that uses this one.
    pub fn adopt(&mut self, record: TxnRecord) {
        if !self.txns.contains_key(&record.rrn) {
            self.hold(record);
        }
    }

    /// Whether `let_go(today)` would let go of anything: the caller then makes sure the
    /// ledger holds the last change of each (`Ledger::flush`) before it does.
    pub fn would_let_go(&self, today: Date) -> bool {
        let from = today.add_days(-self.config.held_days());
        self.held_from.is_none_or(|held| held < from)
            && self.arrivals.front().is_some_and(|(day, _)| *day < from)
    }

    fn hold(&mut self, record: TxnRecord) {
        self.arrivals.push_back((record.day, record.rrn.clone()));
        self.txns.insert(record.rrn.clone(), record);
    }

    /// Keeps what `let_go(today)` would let go of, and does not ask again until the next day:
    /// for a ledger that could not be flushed.
    pub fn hold_on(&mut self, today: Date) {
        self.held_from = Some(today.add_days(-self.config.held_days()));
    }

    /// Lets go of the transactions older than `BookConfig::held_days`, once per business day.
    /// They came in day order, so the walk stops at the first one still held; one recalled
    /// from the ledger meanwhile goes when the walk reaches it. Called by the issuer, for a
    /// ledger it can read them back from (a file), after the ledger has committed them.
    pub fn let_go(&mut self, today: Date) {
        let from = today.add_days(-self.config.held_days());
        if self.held_from.is_some_and(|held| held >= from) {
            return;
        }
        self.held_from = Some(from);
        while let Some((day, _)) = self.arrivals.front() {
            if *day >= from {
                break;
            }
            if let Some((_, rrn)) = self.arrivals.pop_front()
                && self.txns.get(&rrn).is_some_and(|t| t.day < from)
            {
                self.txns.remove(&rrn);
            }
        }
    }

    /// (balance, holds) of the card's account.
    pub fn balance(&self, pan: &Pan) -> Option<(i64, i64)> {
        let account = self.accounts.get(*self.by_pan.get(pan)?)?;
        Some((account.balance, account.holds))
    }

    pub fn pin_tries(&self, pan: &Pan) -> Option<u8> {
        Some(self.accounts.get(*self.by_pan.get(pan)?)?.pin_tries)
    }

    pub fn knows(&self, pan: &Pan) -> bool {
        self.by_pan.contains_key(pan)
    }

    /// Changes a card's status (a card reported lost, an account frozen), as of now.
    pub fn set_status(&mut self, pan: &Pan, status: CardStatus, out: &mut Vec<LedgerOp>) {
        if let Some(account) = self.by_pan.get(pan).and_then(|&i| self.accounts.get_mut(i)) {
            account.status = status;
            out.push(LedgerOp::Account(account.snapshot()));
        }
    }

    fn reply(code: ResponseCode, today: Date) -> Reply {
        Reply {
            code,
            auth_code: None,
            balance: None,
            settlement_date: today,
        }
    }

    /// Decides an authorisation request and applies it.
    pub fn authorise(
        &mut self,
        req: &AuthRequest,
        now: LocalTime,
        pins: &dyn PinVerifier,
        out: &mut Vec<LedgerOp>,
    ) -> Reply {
        let today = now.date;
        if let Some(previous) = self.txns.get(&req.rrn) {
            return self.duplicate(previous, req, today);
        }
        let Some(&index) = self.by_pan.get(&req.pan) else {
            let record = self.record(req, None, ResponseCode::InvalidCard, None, now);
            out.push(LedgerOp::Txn(record.clone()));
            self.hold(record);
            return Self::reply(ResponseCode::InvalidCard, today);
        };
        let decision = self.decide(index, req, today, pins);
        let reply = match decision {
            Ok(effect) => self.apply(index, req, effect, now, out),
            Err(code) => {
                let reference = self.accounts.get(index).map(|a| Arc::clone(&a.reference));
                let record = self.record(req, reference, code, None, now);
                out.push(LedgerOp::Txn(record.clone()));
                self.hold(record);
                Self::reply(code, today)
            }
        };
        // Every request may move PIN tries or the day, so the account is always re-saved.
        if let Some(account) = self.accounts.get(index) {
            out.push(LedgerOp::Account(account.snapshot()));
        }
        reply
    }

    /// A repeat of an RRN already seen: replay the first answer, never apply twice.
    fn duplicate(&self, previous: &TxnRecord, req: &AuthRequest, today: Date) -> Reply {
        let account = self
            .by_pan
            .get(&req.pan)
            .and_then(|&i| self.accounts.get(i));
        let same_card = match (&previous.account, account) {
            (Some(reference), Some(account)) => *reference == account.reference,
            (None, None) => true,
            _ => false,
        };
        let same = same_card
            && previous.trace == req.trace
            && previous.kind == req.kind
            && previous.amount == req.amount;
        if !same {
            return Self::reply(ResponseCode::Duplicate, today);
        }
        match previous.state {
            // The switch gave this RRN up; approving it now would leave money nobody tracks.
            TxnState::Reversed | TxnState::ReversedUnseen => {
                Self::reply(ResponseCode::Duplicate, today)
            }
            TxnState::Declined | TxnState::Approved | TxnState::Voided | TxnState::Completed => {
                let balance = match (previous.kind, previous.code, account) {
                    (TxnKind::BalanceInquiry, ResponseCode::Approved, Some(a)) => {
                        Some(a.available())
                    }
                    _ => None,
                };
                Reply {
                    code: previous.code,
                    auth_code: previous.auth_code.clone(),
                    balance,
                    settlement_date: today,
                }
            }
        }
    }

    fn decide(
        &mut self,
        index: usize,
        req: &AuthRequest,
        today: Date,
        pins: &dyn PinVerifier,
    ) -> Result<Effect, ResponseCode> {
        let config = self.config;
        let account = self
            .accounts
            .get_mut(index)
            .ok_or(ResponseCode::SystemError)?;
        account.roll_day(today);
        let Some(allowed_originals) = req.kind.linked_original() else {
            account.check_debit(req, today, config, pins)?;
            return Ok(Effect::Plain);
        };
        if req.amount == 0 {
            return Err(ResponseCode::InvalidAmount);
        }
        if account.rules.not_allowed.contains(req.kind) {
            return Err(ResponseCode::NotAllowedForCard);
        }
        account.check_pin(req.pin_block.as_ref(), false, config.pin_tries_max, pins)?;
        let link = req.original.as_ref().ok_or(ResponseCode::FormatError)?;
        let original = self
            .txns
            .get(&link.rrn)
            .ok_or(ResponseCode::OriginalNotFound)?;
        if original
            .request_date
            .as_ref()
            .is_some_and(|d| *d != link.date)
        {
            return Err(ResponseCode::OriginalNotFound);
        }
        if !allowed_originals.contains(&original.kind) {
            return Err(ResponseCode::InvalidTransaction);
        }
        if original.account.as_ref() != Some(&account.reference) {
            return Err(ResponseCode::InvalidCard);
        }
        match original.state {
            TxnState::Approved => {}
            TxnState::Declined | TxnState::Reversed | TxnState::ReversedUnseen => {
                return Err(ResponseCode::OriginalNotFound);
            }
            TxnState::Voided | TxnState::Completed => {
                return Err(ResponseCode::InvalidTransaction);
            }
        }
        let age_days = today.days_after(original.day);
        let window = i64::from(config.linked_window_days);
        match req.kind {
            TxnKind::PurchaseVoid | TxnKind::CompletionVoid => {
                if age_days != 0 {
                    return Err(ResponseCode::OriginalNotFound);
                }
                if original.refunded > 0 {
                    return Err(ResponseCode::InvalidTransaction);
                }
                if req.amount != original.amount {
                    return Err(ResponseCode::OriginalAmountIncorrect);
                }
            }
            TxnKind::PreAuthVoid => {
                if age_days > window {
                    return Err(ResponseCode::OriginalNotFound);
                }
                if req.amount != original.amount {
                    return Err(ResponseCode::OriginalAmountIncorrect);
                }
            }
            TxnKind::Completion => {
                if age_days > window {
                    return Err(ResponseCode::OriginalNotFound);
                }
                if req.amount > original.amount {
                    return Err(ResponseCode::OriginalAmountIncorrect);
                }
            }
            TxnKind::Refund => {
                if age_days > window {
                    return Err(ResponseCode::OriginalNotFound);
                }
                let total = original.refunded.checked_add(req.amount);
                if total.is_none_or(|t| t > original.amount) {
                    return Err(ResponseCode::AmountLimit);
                }
            }
            TxnKind::BalanceInquiry | TxnKind::Purchase | TxnKind::PreAuth => {}
        }
        Ok(Effect::Linked {
            original: link.rrn.clone(),
            original_amount: original.amount,
        })
    }

    fn record(
        &self,
        req: &AuthRequest,
        account: Option<Arc<str>>,
        code: ResponseCode,
        auth_code: Option<String>,
        now: LocalTime,
    ) -> TxnRecord {
        TxnRecord {
            rrn: req.rrn.clone(),
            trace: req.trace,
            kind: req.kind,
            account,
            pan_masked: req.pan.masked().to_string(),
            amount: req.amount,
            code,
            auth_code,
            day: now.date,
            request_date: req.date.clone(),
            original: req.original.as_ref().map(|o| o.rrn.clone()),
            state: if code.is_approved() {
                TxnState::Approved
            } else {
                TxnState::Declined
            },
            refunded: 0,
            captured: 0,
            updated_ms: now.unix_ms,
        }
    }

    fn apply(
        &mut self,
        index: usize,
        req: &AuthRequest,
        effect: Effect,
        now: LocalTime,
        out: &mut Vec<LedgerOp>,
    ) -> Reply {
        let amount = signed(req.amount);
        let mut balance = None;
        match (req.kind, effect) {
            (TxnKind::BalanceInquiry, _) => {
                balance = self.accounts.get(index).map(Account::available);
            }
            (TxnKind::Purchase, _) => {
                self.post(index, req.kind, false, &req.rrn, -amount, 0, now, out);
                self.count_day(index, req.amount, true);
            }
            (TxnKind::PreAuth, _) => {
                self.post(index, req.kind, false, &req.rrn, 0, amount, now, out);
                self.count_day(index, req.amount, true);
            }
            (
                kind,
                Effect::Linked {
                    original,
                    original_amount,
                },
            ) => {
                let (balance_delta, hold_delta, state) = match kind {
                    TxnKind::PurchaseVoid => (amount, 0, Some(TxnState::Voided)),
                    // The completion's pre-authorisation stands again with its hold back
                    // whole: completed again at the right amount, or voided.
                    TxnKind::CompletionVoid => {
                        let hold = self
                            .pre_auth_of(&original)
                            .filter(|pa| pa.state == TxnState::Completed)
                            .map_or(0, |pa| signed(pa.amount));
                        (amount, hold, Some(TxnState::Voided))
                    }
                    TxnKind::Refund => (amount, 0, None),
                    TxnKind::PreAuthVoid => (0, -signed(original_amount), Some(TxnState::Voided)),
                    TxnKind::Completion => {
                        (-amount, -signed(original_amount), Some(TxnState::Completed))
                    }
                    TxnKind::BalanceInquiry | TxnKind::Purchase | TxnKind::PreAuth => (0, 0, None),
                };
                self.post(
                    index,
                    kind,
                    false,
                    &req.rrn,
                    balance_delta,
                    hold_delta,
                    now,
                    out,
                );
                if let Some(record) = self.txns.get_mut(&original) {
                    if let Some(state) = state {
                        record.state = state;
                    }
                    match kind {
                        TxnKind::Refund => {
                            record.refunded = record.refunded.saturating_add(req.amount)
                        }
                        TxnKind::Completion => record.captured = req.amount,
                        _ => {}
                    }
                    record.updated_ms = now.unix_ms;
                    let same_day = record.day == now.date;
                    out.push(LedgerOp::Txn(record.clone()));
                    if kind == TxnKind::CompletionVoid {
                        self.set_pre_auth_of(
                            &original,
                            TxnState::Completed,
                            TxnState::Approved,
                            0,
                            now,
                            out,
                        );
                    }
                    // A void gives back today's limit the original used.
                    if same_day && matches!(kind, TxnKind::PurchaseVoid | TxnKind::PreAuthVoid) {
                        self.uncount_day(index, req.amount);
                    }
                }
            }
            (TxnKind::PurchaseVoid, Effect::Plain)
            | (TxnKind::Refund, Effect::Plain)
            | (TxnKind::PreAuthVoid, Effect::Plain)
            | (TxnKind::Completion, Effect::Plain)
            | (TxnKind::CompletionVoid, Effect::Plain) => {}
        }
        self.auth_seq = self.auth_seq.wrapping_add(1) % 1_000_000;
        let auth_code = format!("{:06}", self.auth_seq);
        let reference = self.accounts.get(index).map(|a| Arc::clone(&a.reference));
        let record = self.record(
            req,
            reference,
            ResponseCode::Approved,
            Some(auth_code.clone()),
            now,
        );
        out.push(LedgerOp::Txn(record.clone()));
        self.hold(record);
        Reply {
            code: ResponseCode::Approved,
            auth_code: Some(auth_code),
            balance,
            settlement_date: now.date,
        }
    }

    /// The pre-authorisation completion `completion` completed.
    fn pre_auth_of(&self, completion: &Rrn) -> Option<&TxnRecord> {
        let pre_auth = self.txns.get(completion)?.original.as_ref()?;
        self.txns.get(pre_auth)
    }

    /// Sets the pre-authorisation of `completion` from `from` to `to`, with `captured` (a
    /// completion's void takes the capture back, its reversal puts it back); nothing if it is
    /// not in `from`.
    fn set_pre_auth_of(
        &mut self,
        completion: &Rrn,
        from: TxnState,
        to: TxnState,
        captured: Fen,
        now: LocalTime,
        out: &mut Vec<LedgerOp>,
    ) {
        let Some(pre_auth) = self.txns.get(completion).and_then(|c| c.original.clone()) else {
            return;
        };
        if let Some(record) = self.txns.get_mut(&pre_auth)
            && record.state == from
        {
            record.state = to;
            record.captured = captured;
            record.updated_ms = now.unix_ms;
            out.push(LedgerOp::Txn(record.clone()));
        }
    }

    fn count_day(&mut self, index: usize, amount: Fen, count: bool) {
        if let Some(account) = self.accounts.get_mut(index) {
            account.day_amount = account.day_amount.saturating_add(amount);
            if count {
                account.day_count = account.day_count.saturating_add(1);
            }
        }
    }

    fn uncount_day(&mut self, index: usize, amount: Fen) {
        if let Some(account) = self.accounts.get_mut(index) {
            account.day_amount = account.day_amount.saturating_sub(amount);
            account.day_count = account.day_count.saturating_sub(1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        index: usize,
        kind: TxnKind,
        reversal: bool,
        rrn: &Rrn,
        balance_delta: i64,
        hold_delta: i64,
        now: LocalTime,
        out: &mut Vec<LedgerOp>,
    ) {
        let Some(account) = self.accounts.get_mut(index) else {
            return;
        };
        account.balance = account.balance.saturating_add(balance_delta);
        account.holds = account.holds.saturating_add(hold_delta);
        // Holds are released only as much as they were taken.
        assert!(
            account.holds >= 0,
            "holds went negative on {}",
            account.reference
        );
        self.posting_seq += 1;
        out.push(LedgerOp::Posting(Posting {
            seq: self.posting_seq,
            rrn: rrn.clone(),
            account: Arc::clone(&account.reference),
            kind,
            reversal,
            amount: balance_delta,
            hold_delta,
            balance_after: account.balance,
            holds_after: account.holds,
            day: now.date,
            at_ms: now.unix_ms,
        }));
    }

    /// Undoes the original of a reversal, at most once.
    pub fn reverse(
        &mut self,
        req: &ReversalRequest,
        now: LocalTime,
        out: &mut Vec<LedgerOp>,
    ) -> Reply {
        let today = now.date;
        let ack = Self::reply(ResponseCode::Approved, today);
        let refuse = Self::reply(ResponseCode::OriginalNotFound, today);
        let index = self.by_pan.get(&req.pan).copied();
        let reference = index
            .and_then(|i| self.accounts.get(i))
            .map(|a| Arc::clone(&a.reference));
        let Some(original) = self.txns.get(&req.rrn) else {
            // Nothing to undo; remember the RRN so a late original is refused, not approved.
            let record = TxnRecord {
                rrn: req.rrn.clone(),
                trace: req.trace,
                kind: req.kind,
                account: reference,
                pan_masked: req.pan.masked().to_string(),
                amount: req.amount,
                code: ResponseCode::OriginalNotFound,
                auth_code: None,
                day: today,
                request_date: None,
                original: None,
                state: TxnState::ReversedUnseen,
                refunded: 0,
                captured: 0,
                updated_ms: now.unix_ms,
            };
            out.push(LedgerOp::Txn(record.clone()));
            self.hold(record);
            return ack;
        };
        if original.kind != req.kind
            || original.amount != req.amount
            || original.account != reference
        {
            return refuse;
        }
        // Held, and not to be undone: 12. (25 says no such original: the acquirer takes it as
        // nothing standing here, which would not be true.)
        let will_not = Self::reply(ResponseCode::InvalidTransaction, today);
        match original.state {
            TxnState::Reversed | TxnState::ReversedUnseen | TxnState::Declined => return ack,
            // A void, completion or refund already stands on it: undoing it alone would pay twice.
            TxnState::Voided | TxnState::Completed => return will_not,
            TxnState::Approved if original.refunded > 0 => return will_not,
            TxnState::Approved => {}
        }
        let Some(index) = index else {
            return refuse;
        };
        let kind = original.kind;
        let amount = signed(original.amount);
        let linked = original.original.clone();
        let same_day = original.day == today;
        // The linked original must be in the state this transaction put it in.
        let linked_state = linked
            .as_ref()
            .and_then(|rrn| self.txns.get(rrn))
            .map(|t| t.state);
        let (balance_delta, hold_delta, restore) = match (kind, linked_state) {
            (TxnKind::BalanceInquiry, _) => (0, 0, None),
            (TxnKind::Purchase, _) => (amount, 0, None),
            (TxnKind::PreAuth, _) => (0, -amount, None),
            (TxnKind::PurchaseVoid, Some(TxnState::Voided)) => {
                (-amount, 0, Some(TxnState::Approved))
            }
            // The completion stands again, and its pre-authorisation, which the void had
            // given its hold back, is completed again.
            (TxnKind::CompletionVoid, Some(TxnState::Voided)) => {
                let hold = linked
                    .as_ref()
                    .and_then(|rrn| self.pre_auth_of(rrn))
                    .filter(|pa| pa.state == TxnState::Approved)
                    .map_or(0, |pa| signed(pa.amount));
                (-amount, -hold, Some(TxnState::Approved))
            }
            (TxnKind::Refund, Some(TxnState::Approved)) => (-amount, 0, None),
            (TxnKind::PreAuthVoid, Some(TxnState::Voided)) => (0, amount, Some(TxnState::Approved)),
            (TxnKind::Completion, Some(TxnState::Completed)) => {
                let hold = linked
                    .as_ref()
                    .and_then(|rrn| self.txns.get(rrn))
                    .map_or(0, |t| signed(t.amount));
                (amount, hold, Some(TxnState::Approved))
            }
            (
                TxnKind::PurchaseVoid
                | TxnKind::CompletionVoid
                | TxnKind::Refund
                | TxnKind::PreAuthVoid
                | TxnKind::Completion,
                _,
            ) => return refuse,
        };
        if balance_delta != 0 || hold_delta != 0 {
            self.post(
                index,
                kind,
                true,
                &req.rrn,
                balance_delta,
                hold_delta,
                now,
                out,
            );
        }
        if let Some(rrn) = &linked
            && let Some(parent) = self.txns.get_mut(rrn)
        {
            if let Some(state) = restore {
                parent.state = state;
            }
            match kind {
                TxnKind::Refund => parent.refunded = parent.refunded.saturating_sub(req.amount),
                TxnKind::Completion => parent.captured = 0,
                _ => {}
            }
            parent.updated_ms = now.unix_ms;
            out.push(LedgerOp::Txn(parent.clone()));
        }
        if kind == TxnKind::CompletionVoid
            && let Some(completion) = &linked
        {
            let captured = self.txns.get(completion).map_or(0, |c| c.amount);
            self.set_pre_auth_of(
                completion,
                TxnState::Approved,
                TxnState::Completed,
                captured,
                now,
                out,
            );
        }
        if same_day && matches!(kind, TxnKind::Purchase | TxnKind::PreAuth) {
            self.uncount_day(index, req.amount);
        }
        // A reversed void stands its original up again, and with it what the void gave back
        // to the day's limits: only when the original is today's (a pre-authorisation may be
        // voided days later, and gave that day nothing back).
        let original_today = linked
            .as_ref()
            .and_then(|rrn| self.txns.get(rrn))
            .is_some_and(|parent| parent.day == today);
        if same_day
            && original_today
            && matches!(kind, TxnKind::PurchaseVoid | TxnKind::PreAuthVoid)
        {
            self.count_day(index, req.amount, true);
        }
        if let Some(record) = self.txns.get_mut(&req.rrn) {
            record.state = TxnState::Reversed;
            record.updated_ms = now.unix_ms;
            out.push(LedgerOp::Txn(record.clone()));
        }
        if let Some(account) = self.accounts.get(index) {
            out.push(LedgerOp::Account(account.snapshot()));
        }
        ack
    }
}

#[derive(Debug)]
enum Effect {
    /// Balance inquiry, purchase or pre-authorisation.
    Plain,
    Linked {
        original: Rrn,
        original_amount: Fen,
    },
}

/// Amounts are bounded by field 4 (n12), far inside `i64`.
fn signed(amount: Fen) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}
