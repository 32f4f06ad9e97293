//! Bound settlement accounts: validation on entry (digits, Luhn for cards, BIN → bank through
//! the issuer directory, holder name present), every change recorded, and maker-checker for a
//! change after a payout failure (an operator other than the requester confirms it).

use domain::IssuerDirectory;
use serde::Serialize;
use store::settlement::{
    AccountChangeRow, AccountKind, BoundAccountRow, ChangeState, SettlementRecord,
};
use store::{Record, Store, StoreError};
use zeroize::Zeroizing;

/// Card numbers are 13 to 19 digits (ISO/IEC 7812).
pub const CARD_DIGITS_MIN: usize = 13;
pub const CARD_DIGITS_MAX: usize = 19;
/// Chinese bank account numbers run from 8 (old passbooks) to 32 digits (corporate accounts).
pub const ACCOUNT_DIGITS_MIN: usize = 8;
pub const ACCOUNT_DIGITS_MAX: usize = 32;
/// The most digits in a row a holder name may have: a mobile number's 11 (a shop may name
/// itself so), not a bank account's 12 or more.
pub const NAME_DIGIT_RUN_MAX: usize = 11;

/// The most digits (ASCII or full-width) in a row in `text`, spaces and hyphens between them
/// not breaking the run (an account number is often grouped).
fn longest_digit_run(text: &str) -> usize {
    domain::longest_run(
        text,
        |c| c.is_ascii_digit() || ('０'..='９').contains(&c),
        |c| matches!(c, ' ' | '-' | '\u{3000}'),
    )
}
/// Holder names, in characters: long enough for a company name, short enough for a bank form.
pub const HOLDER_NAME_CHARS_MAX: usize = 60;
/// The store counter change ids come from.
const CHANGE_COUNTER: &str = "account_change";

/// Opens and seals account numbers: they are kept sealed at rest like PANs (an HSM in
/// production; `paycrypto::Hsm::seal` in the binary).
/// An opened number is wiped when it is dropped.
pub trait Sealer: Send + Sync {
    fn seal(&self, clear: &str) -> Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<String>, String>;
}

/// What a merchant (or an operator for it) enters.
#[derive(Clone)]
pub struct AccountInput {
    pub kind: AccountKind,
    /// Wiped when the input is dropped: a card number, often.
    pub number: Zeroizing<String>,
    pub holder_name: String,
    /// Required for a bank account; for a card, if given, must be the card's issuer.
    pub bank_code: Option<String>,
}

/// Why an account was refused or a change could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("the account number must be digits only")]
    NotDigits,
    #[error("the account number has {len} digits; expected {min} to {max}")]
    Length { len: usize, min: usize, max: usize },
    #[error("the card number fails its check digit (Luhn): mistyped")]
    Luhn,
    #[error("the card's BIN is not in the issuer directory")]
    UnknownCardBank,
    /// A merchant's money is settled to a debit card or a bank account, never to a credit,
    /// semi-credit or prepaid card.
    #[error("the card is a {0}; settlement goes to a debit card or a bank account")]
    NotDebitCard(domain::CardType),
    /// `given` as typed, quoted with any card number in it masked (one typed in the wrong box);
    /// `card_bank_zh`, the card's bank by its Chinese name, as a form offers banks.
    #[error("the card is issued by {card_bank}, not {}", domain::mask_card_numbers(.given))]
    BankMismatch {
        card_bank: String,
        card_bank_zh: String,
        given: String,
    },
    #[error("a bank account needs a known bank code")]
    UnknownBank,
    #[error("the holder name is missing")]
    NameMissing,
    #[error(
        "the holder name is longer than {HOLDER_NAME_CHARS_MAX} characters or has control characters"
    )]
    NameInvalid,
    #[error("the holder name contains a card or account number; enter the name as the bank has it")]
    NameHasCardNumber,
    #[error("no merchant {0}")]
    UnknownMerchant(String),
    #[error("no change {0}")]
    NoSuchChange(i64),
    #[error("change {0} is not waiting for confirmation")]
    NotPending(i64),
    #[error(
        "change {0} was overtaken: the account was re-bound since it was asked for, so it is \
         superseded and nothing changed"
    )]
    Superseded(i64),
    #[error(
        "the account or its waiting changes changed while this was being done (another \
         operator, or the merchant binding again): nothing changed; look again and retry"
    )]
    ChangedMeanwhile,
    #[error("the operator who confirms must not be the one who asked ({0})")]
    SameUser(String),
    #[error("sealing the account number failed: {0}")]
    Seal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a bind request led to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BindOutcome {
    /// In force now.
    Active { change_id: i64, version: u32 },
    /// After a payout failure: in force once another operator confirms it.
    PendingConfirmation { change_id: i64 },
}

/// `622202******0123` for a card, `****` + last four for a bank account.
pub fn mask(kind: AccountKind, digits: &str) -> String {
    let last4 = digits.get(digits.len().saturating_sub(4)..).unwrap_or("");
    match kind {
        AccountKind::Card => {
            let first6 = digits.get(..6).unwrap_or("");
            let hidden = digits.len().saturating_sub(10);
            format!("{first6}{}{last4}", "*".repeat(hidden))
        }
        AccountKind::Bank => format!("****{last4}"),
    }
}

/// Checks an entry and returns (digits, bank code, holder name) as they will be kept.
pub fn validate(
    directory: &IssuerDirectory,
    input: &AccountInput,
) -> Result<(Zeroizing<String>, String, String), BindError> {
    let digits: Zeroizing<String> =
        Zeroizing::new(input.number.chars().filter(|c| *c != ' ').collect());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BindError::NotDigits);
    }
    let (min, max) = match input.kind {
        AccountKind::Card => (CARD_DIGITS_MIN, CARD_DIGITS_MAX),
        AccountKind::Bank => (ACCOUNT_DIGITS_MIN, ACCOUNT_DIGITS_MAX),
    };
    if !(min..=max).contains(&digits.len()) {
        return Err(BindError::Length {
            len: digits.len(),
            min,
            max,
        });
    }
    let name = input.holder_name.trim().to_owned();
    if name.is_empty() {
        return Err(BindError::NameMissing);
    }
    if name.chars().count() > HOLDER_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(BindError::NameInvalid);
    }
    // The name is kept and shown as typed: a card or account number in it (the account's own,
    // pasted into the wrong box) would be kept and shown whole.
    if domain::mask_card_numbers(&name) != name.as_str()
        || longest_digit_run(&name) > NAME_DIGIT_RUN_MAX
    {
        return Err(BindError::NameHasCardNumber);
    }
    let bank = match input.kind {
        AccountKind::Card => {
            if !domain::luhn_valid(digits.as_bytes()) {
                return Err(BindError::Luhn);
            }
            let issuer = directory
                .lookup_digits(&digits)
                .issuer
                .ok_or(BindError::UnknownCardBank)?;
            if issuer.card_type != domain::CardType::Debit {
                return Err(BindError::NotDebitCard(issuer.card_type));
            }
            let card_bank = issuer.bank.code().to_owned();
            if let Some(given) = &input.bank_code
                && given != &card_bank
            {
                return Err(BindError::BankMismatch {
                    card_bank,
                    card_bank_zh: issuer.bank.name_zh().to_owned(),
                    given: given.clone(),
                });
            }
            card_bank
        }
        AccountKind::Bank => {
            let code = input.bank_code.clone().ok_or(BindError::UnknownBank)?;
            if directory.bank(&code).is_none() {
                return Err(BindError::UnknownBank);
            }
            code
        }
    };
    Ok((digits, bank, name))
}

/// Why a change waits for a checker: after a payout failure.
pub const NOTE_AFTER_PAYOUT_FAILURE: &str =
    "re-binding after a payout failure: an operator confirms";
/// Why a change waits for a checker: staff bound it for the merchant.
pub const NOTE_BOUND_BY_STAFF: &str = "bound by staff for the merchant: another operator confirms";
/// Why a change waits for a checker: it replaces the account payouts go to now.
pub const NOTE_CHANGE_OF_ACCOUNT: &str =
    "a change of the account payouts go to: an operator confirms";

/// Binds (or re-binds) a merchant's settlement account. A merchant's first account is in force
/// at once; one in place of a bound account waits for [`confirm_change`] by an operator
/// (whoever holds a merchant's sign-in must not alone point its payouts elsewhere), and so
/// does one after a payout failure.
pub fn bind_account(
    store: &dyn Store,
    sealer: &dyn Sealer,
    directory: &IssuerDirectory,
    mid: &str,
    input: &AccountInput,
    requested_by: &str,
    now_ms: i64,
) -> Result<BindOutcome, BindError> {
    bind_account_checked(
        store,
        sealer,
        directory,
        mid,
        input,
        requested_by,
        now_ms,
        false,
    )
}

/// [`bind_account`]; with `on_behalf` (staff binding for a merchant, not the merchant itself)
/// the change always waits for [`confirm_change`] by another person: one operator alone must
/// not be able to point a merchant's payouts at an account of their choosing.
#[allow(clippy::too_many_arguments)]
pub fn bind_account_checked(
    store: &dyn Store,
    sealer: &dyn Sealer,
    directory: &IssuerDirectory,
    mid: &str,
    input: &AccountInput,
    requested_by: &str,
    now_ms: i64,
    on_behalf: bool,
) -> Result<BindOutcome, BindError> {
    let (digits, bank_code, holder_name) = validate(directory, input)?;
    // An account for a merchant the journal does not hold (a mistyped MID) would be kept for
    // no one, the real merchant left unbound.
    if store.merchant(mid)?.is_none() {
        return Err(BindError::UnknownMerchant(mid.to_owned()));
    }
    let sealed = sealer.seal(&digits).map_err(BindError::Seal)?;
    let current = store.bound_account(mid)?;
    let after_failure = current.as_ref().is_some_and(|a| a.needs_rebind);
    let needs_check = after_failure || on_behalf || current.is_some();
    let id = i64::try_from(store.reserve(CHANGE_COUNTER, 1)?.wait()?).map_err(|_| {
        StoreError::Constraint {
            message: "account change counter overflow".to_owned(),
        }
    })?;
    let change = AccountChangeRow {
        id,
        mid: mid.to_owned(),
        kind: input.kind,
        number_sealed: sealed,
        number_masked: mask(input.kind, &digits),
        holder_name,
        bank_code,
        requested_by: requested_by.to_owned(),
        requested_at_ms: now_ms,
        state: if needs_check {
            ChangeState::PendingConfirmation
        } else {
            ChangeState::Active
        },
        decided_by: None,
        decided_at_ms: None,
        note: if after_failure {
            NOTE_AFTER_PAYOUT_FAILURE.to_owned()
        } else if on_behalf {
            NOTE_BOUND_BY_STAFF.to_owned()
        } else if current.is_some() {
            NOTE_CHANGE_OF_ACCOUNT.to_owned()
        } else {
            String::new()
        },
    };
    // A change still waiting is overtaken by this one: confirmed later, it would replace what
    // the merchant asked for since.
    let mut records = superseded(store, mid, id, now_ms)?;
    if needs_check {
        records.push(Record::Settlement(SettlementRecord::AccountChange(change)));
        commit(store, records)?;
        return Ok(BindOutcome::PendingConfirmation { change_id: id });
    }
    let version = current.as_ref().map_or(1, |a| a.version.saturating_add(1));
    let account = account_from(&change, version, now_ms);
    records.push(Record::Settlement(SettlementRecord::AccountChange(change)));
    records.push(in_place_of(current.as_ref(), account));
    commit(store, records)?;
    Ok(BindOutcome::Active {
        change_id: id,
        version,
    })
}

/// The record that puts `account` in force: a first binding, or the replacement of `current`
/// exactly as it was read (its version and flag), so that a flag raised by a payout run in
/// between, or another binding, makes the write fail instead of being overwritten.
fn in_place_of(current: Option<&BoundAccountRow>, account: BoundAccountRow) -> Record {
    Record::Settlement(match current {
        None => SettlementRecord::BoundAccount(account),
        Some(current) => SettlementRecord::ReplaceBoundAccount {
            row: account,
            expected_version: current.version,
            expected_needs_rebind: current.needs_rebind,
        },
    })
}

fn account_from(change: &AccountChangeRow, version: u32, now_ms: i64) -> BoundAccountRow {
    BoundAccountRow {
        mid: change.mid.clone(),
        kind: change.kind,
        number_sealed: change.number_sealed.clone(),
        number_masked: change.number_masked.clone(),
        holder_name: change.holder_name.clone(),
        bank_code: change.bank_code.clone(),
        version,
        needs_rebind: false,
        updated_at_ms: now_ms,
    }
}

/// Commits `records` and waits for them. A commit whose expectations (a change still waiting,
/// the account as it was read) no longer held: someone else got in first, which the caller is
/// told as such.
fn commit(store: &dyn Store, records: Vec<Record>) -> Result<(), BindError> {
    match store.submit(records)?.wait() {
        Err(StoreError::Constraint { .. }) => Err(BindError::ChangedMeanwhile),
        other => Ok(other?),
    }
}

/// The merchant's changes still waiting for an operator, marked superseded by change `by`.
fn superseded(
    store: &dyn Store,
    mid: &str,
    by: i64,
    now_ms: i64,
) -> Result<Vec<Record>, BindError> {
    Ok(store
        .account_changes(Some(mid))?
        .into_iter()
        .filter(|c| c.state == ChangeState::PendingConfirmation && c.id != by)
        .map(|mut c| {
            c.state = ChangeState::Superseded;
            c.decided_at_ms = Some(now_ms);
            c.note = format!("superseded by change {by}");
            // Decided only if still waiting: a confirmation that got in first fails this
            // binding instead (the account it read is replaced), and the merchant asks again.
            Record::Settlement(SettlementRecord::DecideChange(c))
        })
        .collect())
}

fn pending(store: &dyn Store, change_id: i64) -> Result<AccountChangeRow, BindError> {
    let change = store
        .account_change(change_id)?
        .ok_or(BindError::NoSuchChange(change_id))?;
    if change.state != ChangeState::PendingConfirmation {
        return Err(BindError::NotPending(change_id));
    }
    Ok(change)
}

/// The checker's confirmation: puts the change in force (a new account version, the re-binding
/// flag cleared), so held payouts go out on the next payout run. Returns the new version.
pub fn confirm_change(
    store: &dyn Store,
    change_id: i64,
    operator: &str,
    now_ms: i64,
) -> Result<u32, BindError> {
    let mut change = pending(store, change_id)?;
    if change.requested_by == operator {
        return Err(BindError::SameUser(operator.to_owned()));
    }
    let current = store.bound_account(&change.mid)?;
    // Asked for when the account was flagged, and re-bound since (its flag cleared): the
    // change would replace an account nobody asked to replace. A change asked for over a
    // healthy account (staff binding for a merchant) is confirmed over it, as long as that
    // account has not changed since.
    if current
        .as_ref()
        .is_some_and(|a| !a.needs_rebind && a.updated_at_ms > change.requested_at_ms)
    {
        change.state = ChangeState::Superseded;
        change.decided_at_ms = Some(now_ms);
        change.note = "superseded: the account was re-bound since".to_owned();
        commit(
            store,
            vec![Record::Settlement(SettlementRecord::DecideChange(change))],
        )?;
        return Err(BindError::Superseded(change_id));
    }
    let version = current.as_ref().map_or(1, |a| a.version.saturating_add(1));
    change.state = ChangeState::Active;
    change.decided_by = Some(operator.to_owned());
    change.decided_at_ms = Some(now_ms);
    let account = account_from(&change, version, now_ms);
    commit(
        store,
        vec![
            // Only while it still waits: superseded meanwhile, the whole commit fails.
            Record::Settlement(SettlementRecord::DecideChange(change)),
            in_place_of(current.as_ref(), account),
        ],
    )?;
    Ok(version)
}

/// The checker refuses a pending change; the account stays flagged.
pub fn reject_change(
    store: &dyn Store,
    change_id: i64,
    operator: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), BindError> {
    let mut change = pending(store, change_id)?;
    if change.requested_by == operator {
        return Err(BindError::SameUser(operator.to_owned()));
    }
    change.state = ChangeState::Rejected;
    change.decided_by = Some(operator.to_owned());
    change.decided_at_ms = Some(now_ms);
    change.note = domain::mask_card_numbers(reason).into_owned();
    commit(
        store,
        vec![Record::Settlement(SettlementRecord::DecideChange(change))],
    )
}
