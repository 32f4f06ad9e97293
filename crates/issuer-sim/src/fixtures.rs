//! Demo cards for a bank: valid card numbers on the bank's real BINs (data/bin), one card for
//! every decline the simulator produces plus healthy cards, each with the response code a
//! purchase of 1.00 with its PIN gets. Seeded by the bank code, so the same on every run.

use std::fmt;
use std::sync::OnceLock;

use domain::issuer::EMBEDDED_BIN_CSV;
use domain::{CardType, IssuerDirectory, Pan, luhn_check_digit};
use paycrypto::HsmError;
use zeroize::Zeroizing;

use crate::model::{
    AccountSpec, CardRules, CardStatus, Fen, KindSet, Limits, ResponseCode, TxnKind,
};
use crate::pin::HsmPinVerifier;
use crate::time::YearMonth;

/// The purchase amount `DemoCard::purchase_code` is stated for: 1.00 yuan.
pub const DEMO_PURCHASE_FEN: Fen = 100;
/// Opening balance of the healthy cards: 1,000,000.00 yuan.
pub const HEALTHY_BALANCE_FEN: i64 = 100_000_000;
/// Healthy cards `demo_cards` makes per bank.
pub const HEALTHY_CARDS_DEFAULT: usize = 4;
/// Most healthy cards one bank's fixture makes (bounds the search for free card numbers).
pub const HEALTHY_CARDS_MAX: usize = 10_000;
/// Tries at a random account number on one BIN before moving on to the next BIN.
const NUMBER_TRIES_MAX: usize = 64;

/// Expiry of every card that is not meant to be expired.
const GOOD_EXPIRY: YearMonth = YearMonth::known(2049, 12);
/// Expiry of the expired card.
const PAST_EXPIRY: YearMonth = YearMonth::known(2020, 1);

/// One demo card as the cardholder and the issuer know it.
#[derive(Clone)]
pub struct DemoCard {
    /// What the card is for: `healthy`, `lost`, `wrong_pin`, ...
    pub label: &'static str,
    /// Ledger account name: bank code, label, number (`ICBC-lost-1`).
    pub reference: String,
    pub pan: Pan,
    pub card_type: CardType,
    pub expiry: YearMonth,
    pub status: CardStatus,
    pub balance: i64,
    pub limits: Limits,
    pub rules: CardRules,
    pub pin_tries_used: u8,
    /// False for the card the issuer has never heard of (14).
    pub on_file: bool,
    /// What a purchase of `DEMO_PURCHASE_FEN` entered with `pin` gets.
    pub purchase_code: ResponseCode,
    /// The PIN the cardholder keys in.
    pin: Zeroizing<String>,
    /// The PIN the issuer enrolled; differs from `pin` only for the wrong-PIN card.
    account_pin: Zeroizing<String>,
}

impl fmt::Debug for DemoCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoCard")
            .field("label", &self.label)
            .field("reference", &self.reference)
            .field("pan", &self.pan)
            .field("card_type", &self.card_type)
            .field("status", &self.status)
            .field("on_file", &self.on_file)
            .field("purchase_code", &self.purchase_code)
            .finish_non_exhaustive()
    }
}

impl DemoCard {
    /// The PIN the cardholder keys in (demo data: there is no other place it exists in clear).
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The issuer's account for this card, its PIN enrolled through the HSM.
    pub fn account_spec(&self, pins: &HsmPinVerifier) -> Result<AccountSpec, HsmError> {
        Ok(AccountSpec {
            reference: self.reference.clone(),
            pan: self.pan.clone(),
            expiry: self.expiry,
            status: self.status,
            pin: pins.enrol(&self.pan, &self.account_pin)?,
            pin_tries_used: self.pin_tries_used,
            balance: self.balance,
            limits: self.limits,
            rules: self.rules,
        })
    }
}

/// Accounts for every card on file.
pub fn demo_accounts(
    cards: &[DemoCard],
    pins: &HsmPinVerifier,
) -> Result<Vec<AccountSpec>, HsmError> {
    cards
        .iter()
        .filter(|c| c.on_file)
        .map(|c| c.account_spec(pins))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixtureError {
    #[error("the BIN table has no usable BIN for bank {0}")]
    UnknownBank(String),
    #[error("BIN table: {0}")]
    Directory(String),
    #[error("at most {HEALTHY_CARDS_MAX} healthy cards per bank")]
    TooMany,
    #[error("ran out of free card numbers for bank {0}")]
    Exhausted(String),
}

/// The directory built from the embedded BIN table, shared.
fn embedded_directory() -> Result<&'static IssuerDirectory, FixtureError> {
    static DIRECTORY: OnceLock<Result<IssuerDirectory, String>> = OnceLock::new();
    DIRECTORY
        .get_or_init(|| IssuerDirectory::embedded().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| FixtureError::Directory(e.clone()))
}

/// The demo cards of a bank with `HEALTHY_CARDS_DEFAULT` healthy cards.
pub fn demo_cards(bank_code: &str) -> Result<Vec<DemoCard>, FixtureError> {
    demo_cards_with(bank_code, HEALTHY_CARDS_DEFAULT)
}

/// What each decline card is: label, status, card shape, and the code a 1.00 purchase gets.
struct Scenario {
    label: &'static str,
    code: ResponseCode,
    status: CardStatus,
    expired: bool,
    balance: i64,
    limits: Limits,
    not_allowed: KindSet,
    refer_above: Option<Fen>,
    pin_tries_used: u8,
    wrong_pin: bool,
    on_file: bool,
}

impl Scenario {
    const fn healthy(label: &'static str) -> Self {
        Self {
            label,
            code: ResponseCode::Approved,
            status: CardStatus::Active,
            expired: false,
            balance: HEALTHY_BALANCE_FEN,
            limits: Limits {
                per_txn_max: None,
                daily_amount_max: None,
                daily_count_max: None,
            },
            not_allowed: KindSet::EMPTY,
            refer_above: None,
            pin_tries_used: 0,
            wrong_pin: false,
            on_file: true,
        }
    }

    const fn status(label: &'static str, status: CardStatus, code: ResponseCode) -> Self {
        Self {
            code,
            status,
            ..Self::healthy(label)
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    use ResponseCode as R;
    let none = Limits {
        per_txn_max: None,
        daily_amount_max: None,
        daily_count_max: None,
    };
    vec![
        Scenario {
            refer_above: Some(0),
            ..Scenario::healthy("refer_to_issuer")
        }
        .with_code(R::ReferToIssuer),
        Scenario::status("pick_up", CardStatus::PickUp, R::PickUp),
        Scenario::status("frozen", CardStatus::Frozen, R::DoNotHonour),
        Scenario::status(
            "pick_up_special",
            CardStatus::PickUpSpecial,
            R::PickUpSpecial,
        ),
        Scenario {
            on_file: false,
            ..Scenario::healthy("not_on_file")
        }
        .with_code(R::InvalidCard),
        Scenario::status("not_activated", CardStatus::NotActivated, R::NotActivated),
        Scenario::status("lost", CardStatus::Lost, R::Lost),
        Scenario::status("stolen", CardStatus::Stolen, R::Stolen),
        Scenario {
            balance: 50,
            ..Scenario::healthy("insufficient_funds")
        }
        .with_code(R::InsufficientFunds),
        Scenario {
            expired: true,
            ..Scenario::healthy("expired")
        }
        .with_code(R::Expired),
        Scenario::status("status_expired", CardStatus::Expired, R::Expired),
        Scenario {
            wrong_pin: true,
            ..Scenario::healthy("wrong_pin")
        }
        .with_code(R::WrongPin),
        Scenario {
            not_allowed: KindSet::of(&[TxnKind::Purchase, TxnKind::PreAuth]),
            ..Scenario::healthy("purchase_not_allowed")
        }
        .with_code(R::NotAllowedForCard),
        Scenario {
            not_allowed: KindSet::of(&[TxnKind::PreAuth, TxnKind::Refund]),
            ..Scenario::healthy("no_pre_auth_or_refund")
        },
        Scenario {
            limits: Limits {
                per_txn_max: Some(50),
                ..none
            },
            ..Scenario::healthy("per_txn_limit")
        }
        .with_code(R::AmountLimit),
        Scenario {
            limits: Limits {
                daily_amount_max: Some(50),
                ..none
            },
            ..Scenario::healthy("daily_amount_limit")
        }
        .with_code(R::AmountLimit),
        Scenario::status("restricted", CardStatus::Restricted, R::Restricted),
        Scenario {
            limits: Limits {
                daily_count_max: Some(0),
                ..none
            },
            ..Scenario::healthy("daily_count_limit")
        }
        .with_code(R::FrequencyLimit),
        Scenario {
            pin_tries_used: 3,
            ..Scenario::healthy("pin_tries_exceeded")
        }
        .with_code(R::PinTriesExceeded),
    ]
}

impl Scenario {
    fn with_code(self, code: ResponseCode) -> Self {
        Self { code, ..self }
    }
}

/// Deterministic generator (SplitMix64): fixtures must not change between runs.
struct Seeded(u64);

impl Seeded {
    fn for_bank(bank_code: &str) -> Self {
        Self(fnv1a(bank_code.as_bytes()))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next() % n64).unwrap_or(0)
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + u8::try_from(self.next() % 10).unwrap_or(0)))
            .collect()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A BIN of the bank from the table: prefix, card type, PAN length.
#[derive(Debug, Clone)]
struct BinRow {
    bin: String,
    card_type: CardType,
    pan_len: usize,
}

fn bank_bins(bank_code: &str) -> Vec<BinRow> {
    let mut rows: Vec<BinRow> = EMBEDDED_BIN_CSV
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.trim_end_matches('\r').split(',');
            let (bin, bank, kind, len) = (cols.next()?, cols.next()?, cols.next()?, cols.next()?);
            if bank != bank_code {
                return None;
            }
            let pan_len: usize = len.parse().ok()?;
            let room = pan_len.checked_sub(bin.len() + 1)?;
            // At least 6 free digits so a bank has room for every scenario.
            let card_type = CardType::from_code(kind)?;
            (room >= 6 && (13..=19).contains(&pan_len)).then(|| BinRow {
                bin: bin.to_owned(),
                card_type,
                pan_len,
            })
        })
        .collect();
    // UnionPay-branded BINs (62...) first, as most cards in China carry them.
    rows.sort_by(|a, b| {
        (!a.bin.starts_with("62"), &a.bin, a.pan_len).cmp(&(
            !b.bin.starts_with("62"),
            &b.bin,
            b.pan_len,
        ))
    });
    rows
}

/// The demo cards of a bank: one per decline scenario, then `healthy` healthy cards
/// (alternately debit and credit where the bank issues both).
pub fn demo_cards_with(bank_code: &str, healthy: usize) -> Result<Vec<DemoCard>, FixtureError> {
    if healthy > HEALTHY_CARDS_MAX {
        return Err(FixtureError::TooMany);
    }
    let directory = embedded_directory()?;
    let bins = bank_bins(bank_code);
    let debit: Vec<&BinRow> = bins
        .iter()
        .filter(|b| b.card_type == CardType::Debit)
        .collect();
    let credit: Vec<&BinRow> = bins
        .iter()
        .filter(|b| b.card_type == CardType::Credit)
        .collect();
    let any: Vec<&BinRow> = bins.iter().collect();
    let pick_debit = if debit.is_empty() { &any } else { &debit };
    let pick_credit = if credit.is_empty() {
        pick_debit
    } else {
        &credit
    };
    if pick_debit.is_empty() {
        return Err(FixtureError::UnknownBank(bank_code.to_owned()));
    }
    let mut rng = Seeded::for_bank(bank_code);
    let mut used = std::collections::HashSet::new();
    let mut cards = Vec::new();
    let mut all: Vec<Scenario> = scenarios();
    all.extend((0..healthy).map(|_| Scenario::healthy("healthy")));
    for (index, scenario) in all.into_iter().enumerate() {
        let healthy_index = index.checked_sub(scenarios_len());
        let pool = match healthy_index {
            Some(i) if i % 2 == 1 => pick_credit,
            _ => pick_debit,
        };
        let (pan, row) = fresh_pan(directory, bank_code, pool, &mut rng, &mut used)?;
        let pin = rng.digits(6);
        let account_pin = if scenario.wrong_pin {
            // Any other six digits: the cardholder's keyed PIN is off by one in the last digit.
            let mut other = pin.clone();
            let last = other.pop().and_then(|c| c.to_digit(10)).unwrap_or(0);
            other.push(char::from_digit((last + 1) % 10, 10).unwrap_or('0'));
            other
        } else {
            pin.clone()
        };
        let card_type = row.card_type;
        cards.push(DemoCard {
            label: scenario.label,
            reference: format!("{bank_code}-{}-{}", scenario.label, index + 1),
            pan,
            card_type,
            expiry: if scenario.expired {
                PAST_EXPIRY
            } else {
                GOOD_EXPIRY
            },
            status: scenario.status,
            balance: scenario.balance,
            limits: scenario.limits,
            rules: CardRules {
                not_allowed: scenario.not_allowed,
                // Debit cards need a PIN; credit cards may sign.
                pin_required: card_type == CardType::Debit,
                refer_above: scenario.refer_above,
            },
            pin_tries_used: scenario.pin_tries_used,
            on_file: scenario.on_file,
            purchase_code: scenario.code,
            pin: Zeroizing::new(pin),
            account_pin: Zeroizing::new(account_pin),
        });
    }
    Ok(cards)
}

fn scenarios_len() -> usize {
    scenarios().len()
}

/// A card number on one of `pool`'s BINs, not yet used, that the directory resolves to this
/// bank at this length (a longer BIN of another bank could otherwise claim it).
fn fresh_pan<'a>(
    directory: &IssuerDirectory,
    bank_code: &str,
    pool: &[&'a BinRow],
    rng: &mut Seeded,
    used: &mut std::collections::HashSet<u64>,
) -> Result<(Pan, &'a BinRow), FixtureError> {
    let start = rng.below(pool.len());
    for offset in 0..pool.len() {
        let Some(row) = pool.get((start + offset) % pool.len()) else {
            continue;
        };
        for _ in 0..NUMBER_TRIES_MAX {
            let free = row.pan_len.saturating_sub(row.bin.len() + 1);
            let body = Zeroizing::new(format!("{}{}", row.bin, rng.digits(free)));
            let Some(check) = luhn_check_digit(body.as_bytes()) else {
                continue;
            };
            let digits = Zeroizing::new(format!("{}{}", body.as_str(), char::from(check)));
            // Numbers already handed out are remembered by a hash, not in clear.
            let seen = fnv1a(digits.as_bytes());
            if used.contains(&seen) {
                continue;
            }
            let lookup = directory.lookup_digits(&digits);
            let ours = lookup
                .issuer
                .is_some_and(|m| m.bank.code() == bank_code && m.length_matches());
            if !ours {
                continue;
            }
            if let Ok(pan) = digits.parse::<Pan>() {
                used.insert(seen);
                return Ok((pan, row));
            }
        }
    }
    Err(FixtureError::Exhausted(bank_code.to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("enrolling demo PINs: {0}")]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Issuer(#[from] crate::issuer::IssuerError),
}

/// A bank's issuer host loaded with its demo cards (`healthy` healthy ones), PINs enrolled
/// under `pins` (the HSM and ZPK the switch translates to), ready for `IssuerSim::new`.
pub fn demo_issuer(
    bank_code: &str,
    healthy: usize,
    pins: HsmPinVerifier,
    ledger: crate::ledger::LedgerLocation,
    clock: std::sync::Arc<dyn crate::time::Clock>,
) -> Result<(crate::issuer::Issuer, Vec<DemoCard>), DemoError> {
    let cards = demo_cards_with(bank_code, healthy)?;
    let accounts = demo_accounts(&cards, &pins)?;
    let config = crate::issuer::IssuerConfig {
        ledger,
        ..crate::issuer::IssuerConfig::in_memory(bank_code)
    };
    let issuer = crate::issuer::Issuer::open(config, accounts, std::sync::Arc::new(pins), clock)?;
    Ok((issuer, cards))
}
