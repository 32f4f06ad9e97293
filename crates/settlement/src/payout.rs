//! Payouts: one per merchant and payout day (key `MID:YYYYMMDD`), T+n after clearing, sent
//! through a [`PayoutBank`]. The key and the bank reference (`key#v<account version>`, fixed
//! with the account it pays before the bank is first asked, and the same for every attempt to
//! that account) make a rerun or a crash harmless: a bank reference is paid at most once, a
//! payout succeeds at most once.
//! Permanent failures hold the funds and flag the account for re-binding; transient ones retry
//! with backoff, and are reported stuck a day after their first attempt so that an operator
//! calls the bank; a confirmed re-binding releases the held payout, less what its merchant has
//! come to owe meanwhile. [`SimBank`] is the embedded bank with the real failure modes.

use std::collections::HashMap;
use std::sync::Mutex;

use domain::{PayoutFailure, diagnose_payout};
use serde::{Deserialize, Serialize};
use store::settlement::{PayoutEventRow, PayoutRow, PayoutState, SentAccount, SettlementRecord};
use store::{Record, Store, StoreError};

use crate::accounts::Sealer;
use crate::fees::{FeePlan, PAYOUT_DELAY_DAYS_MAX};
use crate::ledger::{LedgerError, Posting, accounts, posting_record};

/// Transient failures back off from the first delay, doubling, up to the last.
pub const RETRY_BACKOFF_FIRST_MS: i64 = 60_000;
pub const RETRY_BACKOFF_LAST_MS: i64 = 3_600_000;
/// A payout still retrying after bank system errors this long after the bank was first asked
/// to pay it is stuck: retrying stays harmless (its reference is paid once at most), but the
/// merchant's money has not moved for a day of hourly attempts and only a call to the bank
/// will tell why. A day, because the diagnosis tells the merchant to call the acquirer when a
/// payout has not arrived after a working day: the operators should know by then.
pub const PAYOUT_STUCK_AFTER_MS: i64 = 24 * 3_600_000;
/// Payouts looked at per run at most (one per merchant and day: far above a day's merchants).
pub const PAYOUTS_PER_RUN_MAX: u32 = 10_000;
/// The store counter payout event ids come from.
const EVENT_COUNTER: &str = "payout_event";

/// What the bank is asked to do. The account number is clear only here, in memory.
pub struct PayoutInstruction<'a> {
    /// One per payout and account, the same for every attempt; a bank pays one reference at
    /// most once (and answers a repeated one as it did the first time).
    pub reference: &'a str,
    pub account_number: &'a str,
    pub holder_name: &'a str,
    pub bank_code: &'a str,
    pub amount_fen: i64,
}

/// A bank that pays merchants. Implementations must treat a repeated reference as the same
/// payment (answer as before, never pay twice).
pub trait PayoutBank: Send + Sync {
    /// `Ok(bank transaction id)` once the bank accepted the payment.
    fn pay(&self, instruction: &PayoutInstruction<'_>) -> Result<String, PayoutFailure>;
    /// References of payments accepted earlier and returned by the bank by `today`, reported
    /// at every call until acknowledged.
    fn returns(&self, today: &str) -> Vec<String>;
    /// Returns written down (their recording committed): no longer reported. A return reported
    /// again before this (a run that failed, or stopped, in between) is recorded once.
    fn acknowledge_returns(&self, references: &[String]);
}

/// Failures that no retry will cure: the merchant (or the bank's customer service) must act.
pub fn is_permanent(failure: PayoutFailure) -> bool {
    !matches!(failure, PayoutFailure::BankSystemError)
}

/// Whether `payout` is stuck at `now_ms`: pending, its last attempt answered with a bank system
/// error, and first sent [`PAYOUT_STUCK_AFTER_MS`] or more ago. It stops being stuck when it is
/// sent, or fails for good (held), since it is no longer pending; a held payout released to a
/// new account is timed afresh from that account's first attempt.
pub fn is_stuck(payout: &PayoutRow, now_ms: i64) -> bool {
    payout.state == PayoutState::Pending
        && payout.failure.as_deref() == Some(PayoutFailure::BankSystemError.key())
        && payout
            .first_attempt_ms
            .is_some_and(|first| now_ms.saturating_sub(first) >= PAYOUT_STUCK_AFTER_MS)
}

/// How a simulated account behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimBehaviour {
    Normal,
    /// The bank has no such account.
    InvalidAccount,
    Frozen,
    ClosedOrLost,
    /// Payments above this are refused.
    LimitFen(i64),
    /// The next `n` attempts fail with a bank system error, then it works.
    SystemErrors(u32),
    /// The next `n` payments are made but their answers are lost: the caller sees a system
    /// error (a timeout), the money is on the account.
    AnswersLost(u32),
    /// Accepted, then returned `n` days later.
    ReturnAfterDays(u32),
}

#[derive(Clone, Default)]
struct SimState {
    behaviour: HashMap<String, SimBehaviour>,
    /// Account number -> the configuration its behaviour came from (`SimBank::configure`).
    configured: HashMap<String, String>,
    /// Account number -> the holder name the bank has on file (checked when present).
    holders: HashMap<String, String>,
    answers: HashMap<String, Result<String, PayoutFailure>>,
    /// By [`account_key`], as what is remembered on disk is.
    credited: HashMap<String, i64>,
    payments: HashMap<String, u32>,
    /// (reference, account, amount, day the return shows) not returned yet.
    returns_due: Vec<(String, String, i64, String)>,
    /// References returned (the money taken back), reported until acknowledged.
    returned: Vec<String>,
    next_id: u64,
    today: String,
}

/// What the simulated bank remembers, for a process that ends between payout runs (the CLI's
/// `payouts --run`) to hand to the next: the answers it gave (a reference paid is answered as
/// paid again), what it credited, the returns it has still to make or to have acknowledged,
/// and what is left of each account's behaviour (a count of system errors runs down across
/// runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimBankMemory {
    /// (account number, configuration, behaviour left).
    pub behaviour: Vec<(String, String, SimBehaviour)>,
    /// (reference, bank id if paid, failure key if refused).
    pub answers: Vec<(String, Option<String>, Option<String>)>,
    /// By account key ([`account_key`]): what is kept on disk names no account number; only
    /// the accounts configured (as the configuration file names them) appear in `behaviour`.
    pub credited: Vec<(String, i64)>,
    pub payments: Vec<(String, u32)>,
    /// (reference, account key, amount, day the return shows).
    pub returns_due: Vec<(String, String, i64, String)>,
    /// References returned and reported, not acknowledged yet (reported again).
    #[serde(default)]
    pub returned: Vec<String>,
    pub next_id: u64,
}

/// What the bank remembers, from its state.
fn memory_of(s: &SimState) -> SimBankMemory {
    let mut memory = SimBankMemory {
        behaviour: s
            .configured
            .iter()
            .filter_map(|(account, configuration)| {
                let behaviour = s.behaviour.get(account)?.clone();
                Some((account.clone(), configuration.clone(), behaviour))
            })
            .collect(),
        answers: s
            .answers
            .iter()
            .map(|(reference, answer)| match answer {
                Ok(id) => (reference.clone(), Some(id.clone()), None),
                Err(failure) => (reference.clone(), None, Some(failure.key().to_owned())),
            })
            .collect(),
        credited: s.credited.iter().map(|(a, n)| (a.clone(), *n)).collect(),
        payments: s.payments.iter().map(|(a, n)| (a.clone(), *n)).collect(),
        returns_due: s.returns_due.clone(),
        returned: s.returned.clone(),
        next_id: s.next_id,
    };
    memory.behaviour.sort_by(|a, b| a.0.cmp(&b.0));
    memory.answers.sort();
    memory.credited.sort();
    memory.payments.sort();
    memory
}

/// How the simulated bank files an account's money: a digest of its number, not the number.
fn account_key(account_number: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(account_number.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Where the simulated bank writes what it remembers after each change
/// ([`SimBank::kept_by`]).
pub type SimBankKeeper = Box<dyn Fn(&SimBankMemory) -> Result<(), String> + Send + Sync>;

/// The embedded bank: accounts behave normally unless configured otherwise.
#[derive(Default)]
pub struct SimBank {
    state: Mutex<SimState>,
    keeper: Option<SimBankKeeper>,
}

impl SimBank {
    pub fn new() -> Self {
        SimBank::default()
    }

    /// A bank that remembers what `memory` says it did before.
    pub fn remembering(memory: SimBankMemory) -> Self {
        let mut state = SimState::default();
        for (account, configuration, behaviour) in memory.behaviour {
            state.configured.insert(account.clone(), configuration);
            state.behaviour.insert(account, behaviour);
        }
        for (reference, paid, refused) in memory.answers {
            let answer = match (paid, refused.as_deref().and_then(PayoutFailure::from_key)) {
                (Some(id), _) => Ok(id),
                (None, Some(failure)) => Err(failure),
                (None, None) => continue,
            };
            state.answers.insert(reference, answer);
        }
        state.credited = memory.credited.into_iter().collect();
        state.payments = memory.payments.into_iter().collect();
        state.returns_due = memory.returns_due;
        state.returned = memory.returned;
        state.next_id = memory.next_id;
        SimBank {
            state: Mutex::new(state),
            keeper: None,
        }
    }

    /// A bank that writes what it remembers through `keeper` after every payment and return,
    /// before it answers, as a bank's own books are written: a process stopped half-way
    /// through a run (`kill -9`, a power cut) then leaves a bank that knows the references it
    /// paid, and pays none of them again when the next run resends them. A change `keeper`
    /// cannot write is undone and answered as a system error (tried again later).
    pub fn kept_by(mut self, keeper: SimBankKeeper) -> Self {
        self.keeper = Some(keeper);
        self
    }

    /// Runs `change` on the state and keeps the result; undone when it cannot be kept.
    fn changing<T>(&self, change: impl FnOnce(&mut SimState) -> T, unkept: T) -> T {
        let Ok(mut s) = self.state.lock() else {
            return unkept;
        };
        let Some(keep) = &self.keeper else {
            return change(&mut s);
        };
        let before = s.clone();
        let out = change(&mut s);
        if keep(&memory_of(&s)).is_err() {
            *s = before;
            return unkept;
        }
        out
    }

    /// What the bank remembers now, for [`SimBank::remembering`].
    pub fn memory(&self) -> SimBankMemory {
        let Ok(s) = self.state.lock() else {
            return SimBankMemory::default();
        };
        memory_of(&s)
    }

    /// Configures an account's behaviour from `configuration` (its text in the configuration
    /// file), unless the bank already has it from the same configuration: then what is left of
    /// it stands (a count of system errors already used up stays used up).
    pub fn configure(&self, account_number: &str, configuration: &str, behaviour: SimBehaviour) {
        if let Ok(mut s) = self.state.lock() {
            if s.configured.get(account_number).map(String::as_str) == Some(configuration) {
                return;
            }
            s.configured
                .insert(account_number.to_owned(), configuration.to_owned());
            s.behaviour.insert(account_number.to_owned(), behaviour);
        }
    }

    /// Accounts configured before and no longer: they behave normally again.
    pub fn forget_unconfigured(&self, configured: &[&str]) {
        if let Ok(mut s) = self.state.lock() {
            let gone: Vec<String> = s
                .configured
                .keys()
                .filter(|a| !configured.contains(&a.as_str()))
                .cloned()
                .collect();
            for account in gone {
                s.configured.remove(&account);
                s.behaviour.remove(&account);
            }
        }
    }

    pub fn set_behaviour(&self, account_number: &str, behaviour: SimBehaviour) {
        if let Ok(mut s) = self.state.lock() {
            s.behaviour.insert(account_number.to_owned(), behaviour);
        }
    }

    /// The name the bank has for an account: a different holder name is refused.
    pub fn set_holder(&self, account_number: &str, name: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.holders.insert(account_number.to_owned(), name.to_owned());
        }
    }

    /// The bank's business day, for returns scheduled `n` days after acceptance.
    pub fn set_today(&self, today: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.today = today.to_owned();
        }
    }

    /// Money credited to an account so far (returns taken back).
    pub fn credited(&self, account_number: &str) -> i64 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.credited.get(&account_key(account_number)).copied())
            .unwrap_or(0)
    }

    /// Payments accepted to an account (a repeated reference counts once).
    pub fn payments(&self, account_number: &str) -> u32 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.payments.get(&account_key(account_number)).copied())
            .unwrap_or(0)
    }
}

impl PayoutBank for SimBank {
    fn pay(&self, i: &PayoutInstruction<'_>) -> Result<String, PayoutFailure> {
        self.changing(|s| pay(s, i), Err(PayoutFailure::BankSystemError))
    }

    fn returns(&self, today: &str) -> Vec<String> {
        self.changing(|s| returns(s, today), Vec::new())
    }

    fn acknowledge_returns(&self, references: &[String]) {
        self.changing(|s| s.returned.retain(|r| !references.contains(r)), ());
    }
}

/// The bank's answer to a payment, and what it does to its books.
fn pay(s: &mut SimState, i: &PayoutInstruction<'_>) -> Result<String, PayoutFailure> {
    if let Some(answer) = s.answers.get(i.reference) {
        return answer.clone();
    }
    let behaviour = s
        .behaviour
        .get(i.account_number)
        .cloned()
        .unwrap_or(SimBehaviour::Normal);
    let name_ok = s
        .holders
        .get(i.account_number)
        .is_none_or(|n| n == i.holder_name);
    let answer = match behaviour {
        SimBehaviour::InvalidAccount => Err(PayoutFailure::InvalidAccountNumber),
        _ if !name_ok => Err(PayoutFailure::HolderNameMismatch),
        SimBehaviour::Frozen => Err(PayoutFailure::AccountFrozen),
        SimBehaviour::ClosedOrLost => Err(PayoutFailure::AccountClosedOrLost),
        SimBehaviour::LimitFen(limit) if i.amount_fen > limit => {
            Err(PayoutFailure::OverAccountLimit)
        }
        SimBehaviour::SystemErrors(n) if n > 0 => {
            s.behaviour.insert(
                i.account_number.to_owned(),
                SimBehaviour::SystemErrors(n - 1),
            );
            // A system error is not remembered: the same reference may be tried again.
            return Err(PayoutFailure::BankSystemError);
        }
        SimBehaviour::Normal
        | SimBehaviour::LimitFen(_)
        | SimBehaviour::SystemErrors(_)
        | SimBehaviour::AnswersLost(_)
        | SimBehaviour::ReturnAfterDays(_) => {
            s.next_id += 1;
            Ok(format!("SIM{:010}", s.next_id))
        }
    };
    if answer.is_ok() {
        let key = account_key(i.account_number);
        *s.credited.entry(key.clone()).or_insert(0) += i.amount_fen;
        *s.payments.entry(key).or_insert(0) += 1;
        if let SimBehaviour::ReturnAfterDays(days) = behaviour {
            let due = crate::dates::add_days(&s.today, i64::from(days))
                .unwrap_or_else(|| s.today.clone());
            s.returns_due.push((
                i.reference.to_owned(),
                account_key(i.account_number),
                i.amount_fen,
                due,
            ));
        }
    }
    s.answers.insert(i.reference.to_owned(), answer.clone());
    if let SimBehaviour::AnswersLost(n @ 1..) = behaviour {
        s.behaviour.insert(
            i.account_number.to_owned(),
            SimBehaviour::AnswersLost(n - 1),
        );
        return Err(PayoutFailure::BankSystemError);
    }
    answer
}

/// The returns due by `today` taken back, and those not acknowledged yet.
fn returns(s: &mut SimState, today: &str) -> Vec<String> {
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut s.returns_due)
        .into_iter()
        .partition(|(_, _, _, day)| day.as_str() <= today);
    s.returns_due = later;
    for (reference, account, amount, _) in due {
        *s.credited.entry(account).or_insert(0) -= amount;
        s.returned.push(reference);
    }
    s.returned.clone()
}

/// Why a payout run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("not a date: {0}")]
    BadDate(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one run did, per payout touched.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PayoutRunReport {
    pub payout_date: String,
    pub created: Vec<String>,
    pub sent: Vec<String>,
    pub retrying: Vec<String>,
    pub held: Vec<String>,
    pub returned: Vec<String>,
    pub released: Vec<String>,
    /// Merchants with money due and no usable account (none bound, or waiting for re-binding).
    pub waiting_for_account: Vec<String>,
    /// Payouts whose account number could not be unsealed (the sealing key is not the one it
    /// was sealed under): nothing is sent until an operator puts the key right.
    pub unsealable: Vec<String>,
    /// Payouts not sent because their merchant is suspended (a risk alert acted on, an
    /// operator's review): they wait, pending, until the merchant is approved again.
    pub withheld: Vec<String>,
    /// Cutoff dates no settle run has cleared yet: no payout is made by them until one has.
    pub unsettled: Vec<String>,
    /// Payouts not sent because what their merchant came to owe while they waited (refunds
    /// cleared since they were made) took all of them: `sent` with nothing sent.
    pub netted: Vec<String>,
    /// Payouts left pending by bank system errors [`PAYOUT_STUCK_AFTER_MS`] or more after their
    /// first attempt ([`is_stuck`]), whether this run tried them again or they were not due:
    /// still retried, and for an operator to take up with the bank.
    pub stuck: Vec<String>,
}

impl PayoutRunReport {
    /// Counts a merchant among those waiting for a usable account, once.
    fn waiting_for(&mut self, mid: &str) {
        if !self.waiting_for_account.iter().any(|m| m == mid) {
            self.waiting_for_account.push(mid.to_owned());
        }
    }
}

struct Run<'a> {
    store: &'a dyn Store,
    now_ms: i64,
}

impl Run<'_> {
    fn event(
        &self,
        payout: &PayoutRow,
        kind: &str,
        failure: Option<PayoutFailure>,
        detail: String,
    ) -> Result<Record, StoreError> {
        let id = i64::try_from(self.store.reserve(EVENT_COUNTER, 1)?.wait()?).unwrap_or(i64::MAX);
        Ok(Record::Settlement(SettlementRecord::PayoutEvent(
            PayoutEventRow {
                id,
                at_ms: self.now_ms,
                mid: payout.mid.clone(),
                payout_key: payout.key.clone(),
                kind: kind.to_owned(),
                failure: failure.map(|f| f.key().to_owned()),
                detail,
            },
        )))
    }

    /// Writes the payout row, an event and a ledger posting (of `kind`, by its legs) in one
    /// commit: a new payout when `expected` is `None`, else a transition from the (state,
    /// attempts) this run read. `false` when another run got there first (the key exists, or
    /// the payout moved on): nothing of this commit is written, so nothing is posted or
    /// reported twice.
    fn commit(
        &self,
        expected: Option<(PayoutState, u32, u32)>,
        payout: PayoutRow,
        event: Record,
        posting: Option<(&str, Vec<(String, i64)>)>,
        extra: Vec<Record>,
    ) -> Result<bool, PayoutError> {
        let mut records = extra;
        if let Some((kind, legs)) = posting {
            // A new payout takes what its merchant is owed, never more: two runs for
            // different days that read the same balance cannot both pay it (counted up to
            // each value date from the cutoff on, so that sales not yet due hide no second
            // payment). Checked after the posting that takes it.
            let at_most = expected.is_none().then(|| {
                Record::Settlement(SettlementRecord::BalanceAtMost {
                    mid: payout.mid.clone(),
                    account: accounts::merchant_payable(&payout.mid),
                    max_fen: 0,
                    from_date: Some(payout.cutoff_date.clone()),
                })
            });
            // What a payout nets against its merchant's debt (a leg crediting the payable)
            // takes that debt to zero, never past it: two runs netting two payouts of one
            // merchant against the debt both read cannot both take it.
            let payable = accounts::merchant_payable(&payout.mid);
            let at_least = (expected.is_some()
                && legs
                    .iter()
                    .any(|(account, fen)| *account == payable && *fen < 0))
            .then(|| {
                Record::Settlement(SettlementRecord::BalanceAtLeast {
                    mid: payout.mid.clone(),
                    account: payable,
                    min_fen: 0,
                })
            });
            let posting = Posting::new(kind, payout.key.clone(), &payout.cutoff_date, legs)?;
            if let Some(r) = posting_record(self.store, vec![posting], self.now_ms)? {
                records.push(r);
            }
            records.extend(at_most);
            records.extend(at_least);
        }
        records.push(event);
        records.push(Record::Settlement(match expected {
            None => SettlementRecord::NewPayout(payout),
            Some((expected_state, expected_attempts, expected_account_version)) => {
                SettlementRecord::PayoutTransition {
                    expected_state,
                    expected_attempts,
                    expected_account_version,
                    row: payout,
                }
            }
        }));
        match self.store.submit(records)?.wait() {
            Ok(()) => Ok(true),
            Err(StoreError::Constraint { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The legs moving `amount_fen` from `credit` to `debit`.
fn transfer(debit: String, credit: String, amount_fen: i64) -> Vec<(String, i64)> {
    vec![(debit, amount_fen), (credit, amount_fen.saturating_neg())]
}

fn backoff_ms(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(16);
    RETRY_BACKOFF_FIRST_MS
        .saturating_mul(1_i64 << shift)
        .min(RETRY_BACKOFF_LAST_MS)
}

fn failure_text(failure: PayoutFailure) -> String {
    let d = diagnose_payout(failure);
    format!("{} / {}", d.title.en, d.title.zh)
}

/// One payout run for `today` (`YYYYMMDD`): returns reported by the bank, held payouts released
/// after a confirmed re-binding, new payouts for what cleared by `today − delay`, every due
/// payout sent, and the payouts stuck on bank system errors reported. Safe to run as often as
/// one likes.
pub fn run_payouts(
    store: &dyn Store,
    bank: &dyn PayoutBank,
    sealer: &dyn Sealer,
    today: &str,
    now_ms: i64,
) -> Result<PayoutRunReport, PayoutError> {
    let today = crate::dates::normalise(today).ok_or_else(|| PayoutError::BadDate(today.into()))?;
    let run = Run { store, now_ms };
    let mut report = PayoutRunReport {
        payout_date: today.clone(),
        ..PayoutRunReport::default()
    };

    // 1. Returns: the money came back; hold it and ask for a new account. The bank reports a
    // return until it is acknowledged, which it is once written down (a write that fails
    // leaves it reported to the next run; one reported again is kept once); it is acted on
    // (now or at a later run, if this one fails part-way) together with its being marked
    // handled.
    let references = bank.returns(&today);
    if !references.is_empty() {
        let reported: Vec<Record> = references
            .iter()
            .map(|reference| {
                Record::Settlement(SettlementRecord::PayoutReturned {
                    reference: reference.clone(),
                    reported_on: today.clone(),
                })
            })
            .collect();
        store.submit(reported)?.wait()?;
        bank.acknowledge_returns(&references);
    }
    for reference in store.payout_returns_open(PAYOUTS_PER_RUN_MAX)? {
        let handled = Record::Settlement(SettlementRecord::PayoutReturnHandled {
            reference: reference.clone(),
            at_ms: now_ms,
        });
        let key = reference.split('#').next().unwrap_or("");
        let payout = store.payout(key)?;
        // Sent by a run that stopped before writing so: the payout is still pending, and the
        // next attempt sends this reference again (the bank answers it as paid). The return
        // waits for that, and is acted on by the run after. Any version: a first attempt
        // takes the account bound then, which may be newer than the payout's.
        let unrecorded = payout.as_ref().is_some_and(|p| {
            p.state == PayoutState::Pending && reference.starts_with(&format!("{}#v", p.key))
        });
        if unrecorded {
            continue;
        }
        // Sent as this reference (a row imported without one is taken at its key's word).
        let sent_as = |p: &PayoutRow| {
            p.state == PayoutState::Sent
                && p.bank_reference.as_deref().is_none_or(|r| r == reference)
        };
        let Some(mut payout) = payout.filter(sent_as) else {
            // Not ours, or already acted on: nothing to hold.
            store.submit(vec![handled])?.wait()?;
            continue;
        };
        payout.state = PayoutState::Held;
        payout.failure = Some(PayoutFailure::ReturnedLater.key().to_owned());
        payout.updated_at_ms = now_ms;
        let event = run.event(
            &payout,
            "returned",
            Some(PayoutFailure::ReturnedLater),
            failure_text(PayoutFailure::ReturnedLater),
        )?;
        let mut flag = flag_account(&payout.mid, payout.account_version, now_ms);
        flag.push(handled);
        let (key, mid, amount_fen) = (payout.key.clone(), payout.mid.clone(), payout.amount_fen);
        if run.commit(
            Some((PayoutState::Sent, payout.attempts, payout.account_version)),
            payout,
            event,
            Some((
                "payout_returned",
                transfer(accounts::BANK.to_owned(), accounts::held(&mid), amount_fen),
            )),
            flag,
        )? {
            report.returned.push(key);
        }
    }

    // 2. Release held payouts whose merchant re-bound (confirmed) since they failed. Merchant
    // by merchant: the held payouts of merchants who never re-bind (a business closed) build
    // up for ever, and read all together, oldest first, would come to fill every read.
    let held = payouts_by_merchant(store, PayoutState::Held)?;
    for mut payout in held {
        let Some(account) = store.bound_account(&payout.mid)? else {
            continue;
        };
        if account.needs_rebind || account.version <= payout.account_version {
            continue;
        }
        let (held_attempts, held_version) = (payout.attempts, payout.account_version);
        // What the merchant has come to owe since the payout was held (refunds cleared after
        // it, with nothing owed to it to take them from) is taken from the held money first, as
        // a new payout is netted against it: only the rest is sent, and nothing when that is 0.
        let payable = accounts::merchant_payable(&payout.mid);
        let held_fen = payout.amount_fen;
        let netted = store
            .ledger_balance(&payable, None)?
            .clamp(0, held_fen.max(0));
        let rest = held_fen.saturating_sub(netted);
        payout.amount_fen = rest;
        payout.state = if rest > 0 {
            PayoutState::Pending
        } else {
            PayoutState::Sent
        };
        payout.next_attempt_ms = now_ms;
        payout.account_version = account.version;
        payout.account_masked = account.number_masked.clone();
        // The old reference was refused or returned: the new account gets one of its own,
        // fixed at its first attempt, and its attempts are counted afresh (so a payout with
        // attempts and no reference is one from before references were fixed ahead).
        payout.bank_reference = None;
        payout.sent_to = None;
        payout.first_attempt_ms = None;
        payout.attempts = 0;
        // What went wrong is fixed (the merchant re-bound): the failure stays in the payout's
        // events, not on the payout, whose page would still ask for the fix.
        payout.failure = None;
        payout.updated_at_ms = now_ms;
        let detail = match (netted, rest) {
            (0, _) => format!("re-bound to {}", account.number_masked),
            (_, 0) => format!(
                "re-bound to {}; all {netted} fen netted against what the merchant owes since: \
                 nothing to send",
                account.number_masked
            ),
            _ => format!(
                "re-bound to {}; {netted} fen netted against what the merchant owes since, \
                 {rest} fen to send",
                account.number_masked
            ),
        };
        let event = run.event(&payout, "released", None, detail)?;
        let (key, mid) = (payout.key.clone(), payout.mid.clone());
        if run.commit(
            Some((PayoutState::Held, held_attempts, held_version)),
            payout,
            event,
            Some((
                "payout_released",
                vec![
                    (accounts::held(&mid), held_fen),
                    (payable, netted.saturating_neg()),
                    (accounts::payouts_in_flight(&mid), rest.saturating_neg()),
                ],
            )),
            Vec::new(),
        )? {
            report.released.push(key);
        }
    }

    // 3. Today's payouts: what cleared up to today − delay and is still payable, once that
    // day is settled: a payout made by a cutoff still trading (a run ahead of the day's settle
    // run, or after one that failed) would take that day's key and leave its money to the
    // next day's payout.
    let mut settled: HashMap<String, bool> = HashMap::new();
    for merchant in store.merchants()? {
        let key = format!("{}:{today}", merchant.mid);
        if store.payout(&key)?.is_some() {
            continue;
        }
        let delay = store
            .settlement_terms(&merchant.mid)?
            .map_or(FeePlan::default().payout_delay_days, |t| {
                t.payout_delay_days.min(PAYOUT_DELAY_DAYS_MAX)
            });
        let Some(cutoff) = crate::dates::add_days(&today, -i64::from(delay)) else {
            continue;
        };
        // A payout already made up to this cutoff or a later one (a run for a missed day made
        // after the next day's, or a shorter delay since) covers it: paying by this cutoff
        // again would pay those days twice.
        let paid_through = store
            .payouts_newest(Some(&merchant.mid), None, 10)?
            .into_iter()
            .map(|p| p.cutoff_date)
            .max();
        if paid_through.is_some_and(|through| through >= cutoff) {
            continue;
        }
        // The day that must be settled: the cutoff, or, for a payout the same day (a delay of
        // 0, its cutoff still trading), the day before it.
        let must_be_settled = if delay == 0 {
            crate::dates::add_days(&today, -1).unwrap_or_else(|| cutoff.clone())
        } else {
            cutoff.clone()
        };
        let cutoff_settled = match settled.get(&must_be_settled) {
            Some(done) => *done,
            None => {
                let done = !store.settle_runs(Some(&must_be_settled))?.is_empty();
                settled.insert(must_be_settled.clone(), done);
                done
            }
        };
        if !cutoff_settled {
            if !report.unsettled.contains(&must_be_settled) {
                report.unsettled.push(must_be_settled);
            }
            continue;
        }
        let payable = accounts::merchant_payable(&merchant.mid);
        // What cleared by the cutoff and is unpaid, and never more than all that is unpaid.
        let due = store
            .ledger_balance(&payable, Some(&cutoff))?
            .saturating_neg()
            .min(store.ledger_balance(&payable, None)?.saturating_neg());
        if due <= 0 {
            continue;
        }
        let account = match store.bound_account(&merchant.mid)? {
            Some(a) if !a.needs_rebind => a,
            _ => {
                report.waiting_for(&merchant.mid);
                continue;
            }
        };
        let payout = PayoutRow {
            key: key.clone(),
            mid: merchant.mid.clone(),
            payout_date: today.clone(),
            cutoff_date: cutoff,
            amount_fen: due,
            state: PayoutState::Pending,
            attempts: 0,
            next_attempt_ms: now_ms,
            account_version: account.version,
            account_masked: account.number_masked.clone(),
            bank_reference: None,
            sent_to: None,
            failure: None,
            first_attempt_ms: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        let event = run.event(&payout, "created", None, format!("{due} fen"))?;
        let mid = payout.mid.clone();
        if run.commit(
            None,
            payout,
            event,
            Some((
                "payout",
                transfer(
                    accounts::merchant_payable(&mid),
                    accounts::payouts_in_flight(&mid),
                    due,
                ),
            )),
            Vec::new(),
        )? {
            report.created.push(key);
        }
    }

    // 4. Send what is due, merchant by merchant as the releases (those waiting for a merchant
    // suspended or without an account keep no other merchant's from being read).
    let pending = payouts_by_merchant(store, PayoutState::Pending)?;
    for mut payout in pending {
        if payout.next_attempt_ms > now_ms {
            continue;
        }
        let Some(account) = store.bound_account(&payout.mid)? else {
            report.waiting_for(&payout.mid);
            continue;
        };
        // A suspended merchant's money stays here while it is looked into: its sales may be
        // the fraud the suspension is about. An instruction already given goes on (the bank
        // may have paid it; asking again under its reference cannot pay twice).
        if payout.bank_reference.is_none()
            && store
                .merchant(&payout.mid)?
                .is_some_and(|m| m.status == store::Status::Suspended)
        {
            report.withheld.push(payout.key.clone());
            continue;
        }
        // One reference per payout and account, with the account it pays, fixed and recorded
        // before the bank is first asked: every later attempt sends the same instruction, so a
        // bank that paid but whose answer was lost (a timeout reported as a system error, or a
        // run that stopped before recording the answer), or a second run racing this one, gets
        // the payment answered as before and never pays it twice, to this account or to one
        // bound since. A new account is a new payment only after a refusal or a return that
        // settled the old reference (held, then released to the re-bound account).
        let (read_attempts, read_version) = (payout.attempts, payout.account_version);
        // Whether this run's write fixing the reference counted the attempt it makes.
        let mut counted = false;
        // Unsealed before anything is fixed: a sealing key that is not the one the number was
        // sealed under stops here, reported, with the payout as it was.
        let sealed = match (&payout.bank_reference, &payout.sent_to) {
            (Some(_), Some(sent_to)) => &sent_to.number_sealed,
            _ => &account.number_sealed,
        };
        let Ok(number) = sealer.open(sealed) else {
            report.unsealable.push(payout.key.clone());
            continue;
        };
        let (reference, sent_to) = match (&payout.bank_reference, &payout.sent_to) {
            (Some(reference), Some(sent_to)) => (reference.clone(), sent_to.clone()),
            (reference, _) => {
                if account.needs_rebind {
                    report.waiting_for(&payout.mid);
                    continue;
                }
                let version = if read_attempts > 0 {
                    payout.account_version
                } else {
                    account.version
                };
                let reference = reference
                    .clone()
                    .unwrap_or_else(|| format!("{}#v{version}", payout.key));
                let sent_to = SentAccount {
                    number_sealed: account.number_sealed.clone(),
                    holder_name: account.holder_name.clone(),
                    bank_code: account.bank_code.clone(),
                };
                let mut fixed = payout.clone();
                // What the merchant has come to owe since the payout was made (refunds cleared
                // while it waited, a suspension say, with nothing owed to it to take them from)
                // is taken from it before the bank is first asked, as a release nets a held
                // one: only the rest is sent, and nothing when that is 0.
                let payable = accounts::merchant_payable(&payout.mid);
                // Only a payout the bank has never been asked to pay: one tried before its
                // reference was fixed ahead may have been paid whole under the reference it
                // is given now.
                let never_asked = read_attempts == 0 && payout.bank_reference.is_none();
                let netted = if never_asked {
                    store
                        .ledger_balance(&payable, None)?
                        .clamp(0, payout.amount_fen.max(0))
                } else {
                    0
                };
                let netting = (netted > 0).then(|| {
                    (
                        "payout_netted",
                        transfer(accounts::payouts_in_flight(&payout.mid), payable, netted),
                    )
                });
                fixed.amount_fen = payout.amount_fen.saturating_sub(netted);
                if fixed.amount_fen == 0 {
                    fixed.state = PayoutState::Sent;
                    fixed.updated_at_ms = now_ms;
                    let event = run.event(
                        &fixed,
                        "netted",
                        None,
                        format!(
                            "all {netted} fen netted against what the merchant owes since it was \
                             made: nothing to send"
                        ),
                    )?;
                    let expected = Some((PayoutState::Pending, read_attempts, read_version));
                    if run.commit(expected, fixed, event, netting, Vec::new())? {
                        report.netted.push(payout.key.clone());
                    }
                    continue;
                }
                fixed.bank_reference = Some(reference.clone());
                fixed.sent_to = Some(sent_to.clone());
                fixed.account_version = version;
                fixed.account_masked = account.number_masked.clone();
                fixed.attempts = read_attempts.saturating_add(1);
                // Kept when already set: a payout retried from before references were fixed
                // ahead has been waiting since its first attempt then, not since this one.
                fixed.first_attempt_ms = payout.first_attempt_ms.or(Some(now_ms));
                fixed.updated_at_ms = now_ms;
                let detail = match netted {
                    0 => format!("as {reference} to {}", account.number_masked),
                    _ => format!(
                        "as {reference} to {}; {netted} fen netted against what the merchant \
                         owes since it was made, {} fen to send",
                        account.number_masked, fixed.amount_fen
                    ),
                };
                let event = run.event(&fixed, "sending", None, detail)?;
                let expected = Some((PayoutState::Pending, read_attempts, read_version));
                if !run.commit(expected, fixed.clone(), event, netting, Vec::new())? {
                    // Another run fixed it first: that run sends it.
                    continue;
                }
                counted = true;
                payout = fixed;
                (reference, sent_to)
            }
        };
        // What the payout holds now (the write after the bank's answer expects it), and the
        // attempt this is: counted by the fixing write, or counted here for a retry.
        let (expected_attempts, expected_version) = (payout.attempts, payout.account_version);
        let attempt = if counted {
            expected_attempts
        } else {
            expected_attempts.saturating_add(1)
        };
        let answer = bank.pay(&PayoutInstruction {
            reference: &reference,
            account_number: &number,
            holder_name: &sent_to.holder_name,
            bank_code: &sent_to.bank_code,
            amount_fen: payout.amount_fen,
        });
        drop(number);
        payout.attempts = attempt;
        payout.updated_at_ms = now_ms;
        let sent_masked = payout.account_masked.clone();
        let (mid, amount_fen) = (payout.mid.clone(), payout.amount_fen);
        match answer {
            Ok(bank_id) => {
                payout.state = PayoutState::Sent;
                payout.bank_reference = Some(reference);
                payout.failure = None;
                let event = run.event(
                    &payout,
                    "sent",
                    None,
                    format!("to {sent_masked} ({bank_id})"),
                )?;
                let key = payout.key.clone();
                if run.commit(
                    Some((PayoutState::Pending, expected_attempts, expected_version)),
                    payout,
                    event,
                    Some((
                        "payout_sent",
                        transfer(
                            accounts::payouts_in_flight(&mid),
                            accounts::BANK.to_owned(),
                            amount_fen,
                        ),
                    )),
                    Vec::new(),
                )? {
                    report.sent.push(key);
                }
            }
            Err(failure) if !is_permanent(failure) => {
                payout.next_attempt_ms = now_ms.saturating_add(backoff_ms(attempt));
                payout.failure = Some(failure.key().to_owned());
                let event = run.event(&payout, "retry", Some(failure), failure_text(failure))?;
                let key = payout.key.clone();
                let expected = Some((PayoutState::Pending, expected_attempts, expected_version));
                if run.commit(expected, payout, event, None, Vec::new())? {
                    report.retrying.push(key);
                }
            }
            Err(failure) => {
                payout.state = PayoutState::Held;
                payout.failure = Some(failure.key().to_owned());
                let event = run.event(&payout, "failed", Some(failure), failure_text(failure))?;
                // The account the reference was made for, not one bound since.
                let flag = flag_account(&mid, payout.account_version, now_ms);
                let key = payout.key.clone();
                if run.commit(
                    Some((PayoutState::Pending, expected_attempts, expected_version)),
                    payout,
                    event,
                    Some((
                        "payout_held",
                        transfer(
                            accounts::payouts_in_flight(&mid),
                            accounts::held(&mid),
                            amount_fen,
                        ),
                    )),
                    flag,
                )? {
                    report.held.push(key);
                }
            }
        }
    }

    // 5. What is stuck as this run leaves it: read again, as another run may have moved a
    // payout on meanwhile, and those not due this time count too.
    report.stuck = store
        .payouts(None, Some(PayoutState::Pending), PAYOUTS_PER_RUN_MAX)?
        .into_iter()
        .filter(|p| is_stuck(p, now_ms))
        .map(|p| p.key)
        .collect();
    Ok(report)
}

/// Every payout in `state`, each merchant's oldest payout day first (as many merchants as a
/// run looks at, and as many payouts of each).
fn payouts_by_merchant(
    store: &dyn Store,
    state: PayoutState,
) -> Result<impl Iterator<Item = PayoutRow>, PayoutError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    // Every merchant with one, page by page: none is left out for the MIDs before it.
    loop {
        let mids = store.payout_merchants(state, after.as_deref(), PAYOUTS_PER_RUN_MAX)?;
        let Some(last) = mids.last().cloned() else {
            break;
        };
        for mid in &mids {
            all.push(store.payouts(Some(mid), Some(state), PAYOUTS_PER_RUN_MAX)?);
        }
        after = Some(last);
    }
    Ok(all.into_iter().flatten())
}

/// The record that flags account `version` of a merchant for re-binding: only that account,
/// not one bound since (the store writes the flag alone, never the rest of a row read earlier).
fn flag_account(mid: &str, version: u32, now_ms: i64) -> Vec<Record> {
    vec![Record::Settlement(SettlementRecord::FlagBoundAccount {
        mid: mid.to_owned(),
        version,
        at_ms: now_ms,
    })]
}
