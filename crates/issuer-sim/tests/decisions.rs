//! Every decision the issuer makes, through its public API, with a stand-in PIN verifier so
//! each test controls exactly which PIN is right. (The HSM-backed verifier has its own tests.)

// Test helpers outside #[test] functions may unwrap and index too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use paycrypto::{
    DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyHandle, KeyUsage, MasterKey, PanDigits, SoftHsm,
};

use domain::luhn_check_digit;
use issuer_sim::{
    AccountSpec, AuthRequest, BookConfig, CardRules, CardStatus, Date, EncryptedPinBlock,
    HsmPinVerifier, Issuer, IssuerConfig, KindSet, LedgerLocation, Limits, MaintenanceWindow,
    ManualClock, OriginalRef, Pan, ResponseCode, ReversalRequest, Rrn, TxnKind, TxnState,
    YearMonth,
};

/// The issuer's zone PIN key in clear, as the switch side would hold it to build test blocks.
const ZPK: &str = "0123456789ABCDEFFEDCBA9876543210";
const OTHER_KEY: &str = "89ABCDEF01234567FEDCBA9876543210";

fn hsm() -> (Arc<dyn Hsm>, KeyHandle) {
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(
        &MasterKey::from_bytes([7; 32]),
        Box::new(DeterministicRandom::new(1)),
    ));
    let zpk = hsm
        .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, ZPK)
        .unwrap();
    (hsm, zpk)
}

/// A PIN block as the switch sends it: format 0, under the issuer's ZPK.
fn block_for(pin: &str, card: u32, key_hex: &str) -> EncryptedPinBlock {
    let key = Key::from_hex(KeyAlgorithm::Des, key_hex).unwrap();
    let digits = PanDigits::from_pan(pan(card).expose_digits()).unwrap();
    paycrypto::pin::encrypt(&key, pin, &digits).unwrap()
}

const PIN: &str = "123456";

fn pan(n: u32) -> Pan {
    let body = format!("622202{n:012}");
    let check = char::from(luhn_check_digit(body.as_bytes()).unwrap());
    format!("{body}{check}").parse().unwrap()
}

fn today() -> Date {
    Date::new(2025, 6, 30).unwrap()
}

fn spec(n: u32) -> AccountSpec {
    AccountSpec {
        reference: format!("T-{n}"),
        pan: pan(n),
        expiry: YearMonth::new(2030, 12).unwrap(),
        status: CardStatus::Active,
        pin: verifier().enrol(&pan(n), PIN).unwrap(),
        pin_tries_used: 0,
        balance: 100_000,
        limits: Limits::default(),
        rules: CardRules {
            pin_required: true,
            ..CardRules::default()
        },
    }
}

fn verifier() -> HsmPinVerifier {
    let (hsm, zpk) = hsm();
    HsmPinVerifier::new(hsm, zpk)
}

/// A configuration whose ledger is a file in a fresh directory named for `name`: the
/// directory (the test removes it), the ledger's path, the configuration.
fn file_ledger(name: &str) -> (std::path::PathBuf, std::path::PathBuf, IssuerConfig) {
    let dir = std::env::temp_dir().join(format!("issuer-sim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.sqlite");
    let _ = std::fs::remove_file(&path);
    let config = IssuerConfig {
        ledger: LedgerLocation::File(path.clone()),
        book: BookConfig::default(),
        ..IssuerConfig::in_memory("TEST")
    };
    (dir, path, config)
}

struct Sim {
    issuer: Issuer,
    clock: ManualClock,
    next_rrn: u64,
}

impl Sim {
    fn new(specs: Vec<AccountSpec>) -> Self {
        Self::with_config(specs, IssuerConfig::in_memory("TEST"))
    }

    fn with_config(specs: Vec<AccountSpec>, config: IssuerConfig) -> Self {
        let clock = ManualClock::at(today(), 10 * 3600);
        let issuer =
            Issuer::open(config, specs, Arc::new(verifier()), Arc::new(clock.clone())).unwrap();
        Self {
            issuer,
            clock,
            next_rrn: 0,
        }
    }

    fn rrn(&mut self) -> Rrn {
        self.next_rrn += 1;
        Rrn::parse(&format!("{:012}", self.next_rrn)).unwrap()
    }

    fn request(&mut self, kind: TxnKind, card: u32, amount: u64) -> AuthRequest {
        let rrn = self.rrn();
        AuthRequest {
            kind,
            pan: pan(card),
            amount,
            trace: u32::try_from(self.next_rrn).unwrap(),
            rrn,
            date: Some(self.clock_mmdd()),
            expiry: None,
            pin_block: Some(block_for(PIN, card, ZPK)),
            original: None,
        }
    }

    fn clock_mmdd(&self) -> String {
        use issuer_sim::Clock;
        self.clock.now().date.mmdd()
    }

    fn linked(&mut self, kind: TxnKind, card: u32, amount: u64, original: &Rrn) -> AuthRequest {
        let mut req = self.request(kind, card, amount);
        req.pin_block = None;
        let date = self
            .issuer
            .txn(original)
            .and_then(|t| t.request_date)
            .unwrap_or_default();
        req.original = Some(OriginalRef {
            rrn: original.clone(),
            date,
        });
        req
    }

    fn code(&mut self, kind: TxnKind, card: u32, amount: u64) -> ResponseCode {
        let req = self.request(kind, card, amount);
        self.issuer.authorise(&req).code
    }

    fn approve(&mut self, kind: TxnKind, card: u32, amount: u64) -> Rrn {
        let req = self.request(kind, card, amount);
        let reply = self.issuer.authorise(&req);
        assert_eq!(reply.code, ResponseCode::Approved, "{kind} on card {card}");
        req.rrn
    }

    fn link(&mut self, kind: TxnKind, card: u32, amount: u64, original: &Rrn) -> ResponseCode {
        let req = self.linked(kind, card, amount, original);
        self.issuer.authorise(&req).code
    }

    fn reverse(&self, kind: TxnKind, card: u32, amount: u64, rrn: &Rrn) -> ResponseCode {
        let original = self.issuer.txn(rrn);
        let req = ReversalRequest {
            kind,
            pan: pan(card),
            amount,
            trace: original.map_or(999, |t| t.trace),
            rrn: rrn.clone(),
            reason: "98".into(),
        };
        self.issuer.reverse(&req).code
    }

    fn balance(&self, card: u32) -> (i64, i64) {
        self.issuer.balance(&pan(card)).unwrap()
    }

    fn state(&self, rrn: &Rrn) -> TxnState {
        self.issuer.txn(rrn).unwrap().state
    }
}

#[test]
fn purchase_approves_and_debits() {
    let mut sim = Sim::new(vec![spec(1)]);
    let req = sim.request(TxnKind::Purchase, 1, 2_500);
    let reply = sim.issuer.authorise(&req);
    assert_eq!(reply.code, ResponseCode::Approved);
    let auth = reply.auth_code.unwrap();
    assert_eq!(auth.len(), 6);
    assert!(auth.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(reply.settlement_date, today());
    assert_eq!(sim.balance(1), (97_500, 0));
    // A second purchase gets a different authorisation code.
    let second = sim.request(TxnKind::Purchase, 1, 100);
    assert_ne!(sim.issuer.authorise(&second).auth_code.unwrap(), auth);
}

#[test]
fn balance_inquiry_reports_available_funds() {
    let mut sim = Sim::new(vec![spec(1)]);
    sim.approve(TxnKind::PreAuth, 1, 30_000);
    let req = sim.request(TxnKind::BalanceInquiry, 1, 0);
    let reply = sim.issuer.authorise(&req);
    assert_eq!(reply.code, ResponseCode::Approved);
    assert_eq!(reply.balance, Some(70_000));
    assert_eq!(sim.balance(1), (100_000, 30_000));
}

#[test]
fn unknown_card_is_invalid() {
    let mut sim = Sim::new(vec![spec(1)]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 2, 100),
        ResponseCode::InvalidCard
    );
    assert_eq!(
        sim.code(TxnKind::BalanceInquiry, 2, 0),
        ResponseCode::InvalidCard
    );
}

#[test]
fn every_card_status_maps_to_its_code() {
    let cases = [
        (CardStatus::Expired, ResponseCode::Expired, "54"),
        (CardStatus::Lost, ResponseCode::Lost, "41"),
        (CardStatus::Stolen, ResponseCode::Stolen, "43"),
        (CardStatus::Frozen, ResponseCode::DoNotHonour, "05"),
        (CardStatus::NotActivated, ResponseCode::NotActivated, "21"),
        (CardStatus::Restricted, ResponseCode::Restricted, "62"),
        (CardStatus::PickUp, ResponseCode::PickUp, "04"),
        (CardStatus::PickUpSpecial, ResponseCode::PickUpSpecial, "07"),
    ];
    let specs = cases
        .iter()
        .zip(1..)
        .map(|((status, _, _), n)| AccountSpec {
            status: *status,
            ..spec(n)
        })
        .collect();
    let mut sim = Sim::new(specs);
    for ((_, code, wire), n) in cases.iter().zip(1..) {
        for kind in [TxnKind::Purchase, TxnKind::PreAuth, TxnKind::BalanceInquiry] {
            assert_eq!(sim.code(kind, n, 100), *code, "{kind} on card {n}");
        }
        assert_eq!(code.as_str(), *wire);
        assert_eq!(sim.balance(n), (100_000, 0), "no money moved on card {n}");
    }
}

#[test]
fn status_changed_at_run_time() {
    let mut sim = Sim::new(vec![spec(1)]);
    sim.approve(TxnKind::Purchase, 1, 100);
    sim.issuer.set_card_status(&pan(1), CardStatus::Lost);
    assert_eq!(sim.code(TxnKind::Purchase, 1, 100), ResponseCode::Lost);
}

#[test]
fn expiry_past_or_mismatched_is_expired() {
    let old = AccountSpec {
        expiry: YearMonth::new(2025, 5).unwrap(),
        ..spec(1)
    };
    let this_month = AccountSpec {
        expiry: YearMonth::new(2025, 6).unwrap(),
        ..spec(2)
    };
    let mut sim = Sim::new(vec![old, this_month, spec(3)]);
    assert_eq!(sim.code(TxnKind::Purchase, 1, 100), ResponseCode::Expired);
    // A card is good through the last day of its expiry month.
    assert_eq!(sim.code(TxnKind::Purchase, 2, 100), ResponseCode::Approved);
    let mut req = sim.request(TxnKind::Purchase, 3, 100);
    req.expiry = Some(YearMonth::new(2029, 12).unwrap());
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::Expired);
    req = sim.request(TxnKind::Purchase, 3, 100);
    req.expiry = Some(YearMonth::new(2030, 12).unwrap());
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::Approved);
}

#[test]
fn card_not_allowed_for_a_kind_is_57() {
    let no_preauth_refund = AccountSpec {
        rules: CardRules {
            not_allowed: KindSet::of(&[TxnKind::PreAuth, TxnKind::Refund]),
            pin_required: true,
            refer_above: None,
        },
        ..spec(1)
    };
    let mut sim = Sim::new(vec![no_preauth_refund]);
    assert_eq!(
        sim.code(TxnKind::PreAuth, 1, 100),
        ResponseCode::NotAllowedForCard
    );
    let purchase = sim.approve(TxnKind::Purchase, 1, 1_000);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 100, &purchase),
        ResponseCode::NotAllowedForCard
    );
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 1_000, &purchase),
        ResponseCode::Approved
    );
}

#[test]
fn wrong_pins_count_to_75_and_reset_next_day() {
    let mut sim = Sim::new(vec![spec(1)]);
    let wrong = |sim: &mut Sim| {
        let mut req = sim.request(TxnKind::Purchase, 1, 100);
        req.pin_block = Some(block_for("999999", 1, ZPK));
        sim.issuer.authorise(&req).code
    };
    assert_eq!(wrong(&mut sim), ResponseCode::WrongPin);
    // A right PIN in between clears the count.
    sim.approve(TxnKind::Purchase, 1, 100);
    assert_eq!(wrong(&mut sim), ResponseCode::WrongPin);
    assert_eq!(wrong(&mut sim), ResponseCode::WrongPin);
    assert_eq!(wrong(&mut sim), ResponseCode::PinTriesExceeded);
    assert_eq!(sim.issuer.pin_tries(&pan(1)), Some(3));
    // Locked: even the right PIN is refused today.
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 100),
        ResponseCode::PinTriesExceeded
    );
    assert_eq!(sim.balance(1), (99_900, 0));
    sim.clock.advance_days(1);
    assert_eq!(sim.code(TxnKind::Purchase, 1, 100), ResponseCode::Approved);
}

#[test]
fn pin_required_missing_or_unreadable() {
    let signature_card = AccountSpec {
        rules: CardRules {
            pin_required: false,
            ..CardRules::default()
        },
        ..spec(2)
    };
    let mut sim = Sim::new(vec![spec(1), signature_card]);
    let mut req = sim.request(TxnKind::Purchase, 1, 100);
    req.pin_block = None;
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::WrongPin);
    let mut req = sim.request(TxnKind::Purchase, 2, 100);
    req.pin_block = None;
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::Approved);
    // A block that does not decrypt is a key problem, not the cardholder's: 99, no try counted.
    let mut req = sim.request(TxnKind::Purchase, 1, 100);
    req.pin_block = Some(block_for(PIN, 1, OTHER_KEY));
    assert_eq!(
        sim.issuer.authorise(&req).code,
        ResponseCode::PinFormatError
    );
    assert_eq!(sim.issuer.pin_tries(&pan(1)), Some(0));
}

#[test]
fn pin_locked_fixture_card_is_75() {
    let locked = AccountSpec {
        pin_tries_used: 3,
        ..spec(1)
    };
    let mut sim = Sim::new(vec![locked]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 100),
        ResponseCode::PinTriesExceeded
    );
}

#[test]
fn referral_above_threshold_is_01() {
    let referred = AccountSpec {
        rules: CardRules {
            refer_above: Some(50_000),
            pin_required: true,
            ..CardRules::default()
        },
        ..spec(1)
    };
    let mut sim = Sim::new(vec![referred]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 50_000),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 50_001),
        ResponseCode::ReferToIssuer
    );
}

#[test]
fn amount_and_frequency_limits() {
    let per_txn = AccountSpec {
        limits: Limits {
            per_txn_max: Some(1_000),
            ..Limits::default()
        },
        ..spec(1)
    };
    let daily_amount = AccountSpec {
        limits: Limits {
            daily_amount_max: Some(1_500),
            ..Limits::default()
        },
        ..spec(2)
    };
    let daily_count = AccountSpec {
        limits: Limits {
            daily_count_max: Some(2),
            ..Limits::default()
        },
        ..spec(3)
    };
    let mut sim = Sim::new(vec![per_txn, daily_amount, daily_count]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 1_000),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 1_001),
        ResponseCode::AmountLimit
    );
    assert_eq!(
        sim.code(TxnKind::PreAuth, 1, 1_001),
        ResponseCode::AmountLimit
    );

    assert_eq!(
        sim.code(TxnKind::Purchase, 2, 1_000),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.code(TxnKind::Purchase, 2, 501),
        ResponseCode::AmountLimit
    );
    let small = sim.approve(TxnKind::Purchase, 2, 500);
    // A void gives the day's limit back.
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 2, 500, &small),
        ResponseCode::Approved
    );
    assert_eq!(sim.code(TxnKind::Purchase, 2, 500), ResponseCode::Approved);

    assert_eq!(sim.code(TxnKind::Purchase, 3, 100), ResponseCode::Approved);
    assert_eq!(sim.code(TxnKind::PreAuth, 3, 100), ResponseCode::Approved);
    assert_eq!(
        sim.code(TxnKind::Purchase, 3, 100),
        ResponseCode::FrequencyLimit
    );
    // Balance inquiries do not count, and tomorrow is another day.
    assert_eq!(
        sim.code(TxnKind::BalanceInquiry, 3, 0),
        ResponseCode::Approved
    );
    sim.clock.advance_days(1);
    assert_eq!(sim.code(TxnKind::Purchase, 3, 100), ResponseCode::Approved);
    assert_eq!(
        sim.code(TxnKind::Purchase, 2, 1_500),
        ResponseCode::Approved
    );
}

#[test]
fn reversing_a_void_counts_its_sale_against_the_day_again() {
    let limited = AccountSpec {
        limits: Limits {
            daily_amount_max: Some(1_000),
            ..Limits::default()
        },
        ..spec(1)
    };
    let mut sim = Sim::new(vec![limited]);
    let sale = sim.approve(TxnKind::Purchase, 1, 1_000);
    let void = sim.linked(TxnKind::PurchaseVoid, 1, 1_000, &sale);
    assert_eq!(sim.issuer.authorise(&void).code, ResponseCode::Approved);
    assert_eq!(
        sim.reverse(TxnKind::PurchaseVoid, 1, 1_000, &void.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.state(&sale), TxnState::Approved);
    // The sale stands again, and so does its use of the day's limit.
    assert_eq!(sim.code(TxnKind::Purchase, 1, 1), ResponseCode::AmountLimit);
}

/// A pre-authorisation voided on a later day gave nothing back to that day's limit, so its
/// void's reversal takes nothing from it either.
#[test]
fn reversing_a_later_days_pre_auth_void_leaves_that_days_limit_alone() {
    let limited = AccountSpec {
        limits: Limits {
            daily_amount_max: Some(1_000),
            ..Limits::default()
        },
        ..spec(1)
    };
    let mut sim = Sim::new(vec![limited]);
    let hold = sim.approve(TxnKind::PreAuth, 1, 1_000);
    sim.clock.advance_seconds(24 * 3600);
    let void = sim.linked(TxnKind::PreAuthVoid, 1, 1_000, &hold);
    assert_eq!(sim.issuer.authorise(&void).code, ResponseCode::Approved);
    assert_eq!(
        sim.reverse(TxnKind::PreAuthVoid, 1, 1_000, &void.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.state(&hold), TxnState::Approved);
    // Today's limit is untouched: a whole day's amount still goes through.
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 1_000),
        ResponseCode::Approved
    );
}

#[test]
fn insufficient_funds_is_51_and_holds_count() {
    let poor = AccountSpec {
        balance: 1_000,
        ..spec(1)
    };
    let mut sim = Sim::new(vec![poor]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 1_001),
        ResponseCode::InsufficientFunds
    );
    sim.approve(TxnKind::PreAuth, 1, 600);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 401),
        ResponseCode::InsufficientFunds
    );
    assert_eq!(
        sim.code(TxnKind::PreAuth, 1, 401),
        ResponseCode::InsufficientFunds
    );
    assert_eq!(sim.code(TxnKind::Purchase, 1, 400), ResponseCode::Approved);
    assert_eq!(sim.balance(1), (600, 600));
}

#[test]
fn zero_amount_is_13() {
    let mut sim = Sim::new(vec![spec(1)]);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 0),
        ResponseCode::InvalidAmount
    );
    let p = sim.approve(TxnKind::Purchase, 1, 100);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 0, &p),
        ResponseCode::InvalidAmount
    );
}

#[test]
fn maintenance_is_91_forced_or_by_window() {
    let mut sim = Sim::new(vec![spec(1)]);
    let p = sim.approve(TxnKind::Purchase, 1, 100);
    sim.issuer.set_maintenance(true);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 100),
        ResponseCode::IssuerUnavailable
    );
    // A reversal cannot be applied either; the switch keeps it until the issuer is back.
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 100, &p),
        ResponseCode::IssuerUnavailable
    );
    assert_eq!(sim.state(&p), TxnState::Approved);
    sim.issuer.set_maintenance(false);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 100, &p),
        ResponseCode::Approved
    );

    let mut config = IssuerConfig::in_memory("TEST");
    // 23:30 to 00:30, across midnight; the clock starts at 10:00.
    config.maintenance = Some(MaintenanceWindow {
        start_minute: 23 * 60 + 30,
        end_minute: 30,
    });
    let mut sim = Sim::with_config(vec![spec(1)], config);
    assert_eq!(sim.code(TxnKind::Purchase, 1, 100), ResponseCode::Approved);
    sim.clock.advance_seconds(13 * 3600 + 30 * 60);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 100),
        ResponseCode::IssuerUnavailable
    );
    sim.clock.advance_seconds(3600 - 1);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 100),
        ResponseCode::IssuerUnavailable
    );
    sim.clock.advance_seconds(1);
    assert_eq!(sim.code(TxnKind::Purchase, 1, 100), ResponseCode::Approved);
}

#[test]
fn purchase_void_credits_back_once() {
    let mut sim = Sim::new(vec![spec(1), spec(2)]);
    let p = sim.approve(TxnKind::Purchase, 1, 5_000);
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 4_999, &p),
        ResponseCode::OriginalAmountIncorrect
    );
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 2, 5_000, &p),
        ResponseCode::InvalidCard
    );
    assert_eq!(
        sim.link(TxnKind::CompletionVoid, 1, 5_000, &p),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 5_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(sim.state(&p), TxnState::Voided);
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 5_000, &p),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 100, &p),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(sim.balance(1), (100_000, 0));
}

#[test]
fn void_needs_a_findable_same_day_original() {
    let mut sim = Sim::new(vec![spec(1)]);
    let ghost = Rrn::parse("999999999999").unwrap();
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 100, &ghost),
        ResponseCode::OriginalNotFound
    );
    let mut req = sim.request(TxnKind::PurchaseVoid, 1, 100);
    req.pin_block = None;
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::FormatError);

    let p = sim.approve(TxnKind::Purchase, 1, 100);
    let mut req = sim.linked(TxnKind::PurchaseVoid, 1, 100, &p);
    req.original.as_mut().unwrap().date = "0101".into();
    assert_eq!(
        sim.issuer.authorise(&req).code,
        ResponseCode::OriginalNotFound
    );

    let declined = sim.request(TxnKind::Purchase, 1, 1_000_000);
    assert_eq!(
        sim.issuer.authorise(&declined).code,
        ResponseCode::InsufficientFunds
    );
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 1_000_000, &declined.rrn),
        ResponseCode::OriginalNotFound
    );
    sim.clock.advance_days(1);
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 100, &p),
        ResponseCode::OriginalNotFound
    );
}

#[test]
fn refunds_never_exceed_the_original() {
    let mut sim = Sim::new(vec![spec(1)]);
    let p = sim.approve(TxnKind::Purchase, 1, 10_000);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 6_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 4_001, &p),
        ResponseCode::AmountLimit
    );
    sim.clock.advance_days(3);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 4_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 1, &p),
        ResponseCode::AmountLimit
    );
    assert_eq!(sim.issuer.txn(&p).unwrap().refunded, 10_000);
    assert_eq!(sim.balance(1), (100_000, 0));
    // A refunded purchase can no longer be voided.
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 10_000, &p),
        ResponseCode::OriginalNotFound
    );
}

#[test]
fn refund_window_is_30_days() {
    let mut sim = Sim::new(vec![spec(1)]);
    let p = sim.approve(TxnKind::Purchase, 1, 10_000);
    sim.clock.advance_days(30);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 1_000, &p),
        ResponseCode::Approved
    );
    sim.clock.advance_days(1);
    assert_eq!(
        sim.link(TxnKind::Refund, 1, 1_000, &p),
        ResponseCode::OriginalNotFound
    );
}

#[test]
fn pre_auth_hold_void_completion_and_completion_void() {
    let mut sim = Sim::new(vec![spec(1)]);
    let pa = sim.approve(TxnKind::PreAuth, 1, 20_000);
    assert_eq!(sim.balance(1), (100_000, 20_000));
    assert_eq!(
        sim.link(TxnKind::PreAuthVoid, 1, 19_999, &pa),
        ResponseCode::OriginalAmountIncorrect
    );
    assert_eq!(
        sim.link(TxnKind::PreAuthVoid, 1, 20_000, &pa),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(
        sim.link(TxnKind::Completion, 1, 10_000, &pa),
        ResponseCode::InvalidTransaction
    );

    let pa = sim.approve(TxnKind::PreAuth, 1, 20_000);
    assert_eq!(
        sim.link(TxnKind::Completion, 1, 20_001, &pa),
        ResponseCode::OriginalAmountIncorrect
    );
    let completion = sim.linked(TxnKind::Completion, 1, 15_000, &pa);
    assert_eq!(
        sim.issuer.authorise(&completion).code,
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (85_000, 0));
    assert_eq!(sim.state(&pa), TxnState::Completed);
    assert_eq!(sim.issuer.txn(&pa).unwrap().captured, 15_000);
    assert_eq!(
        sim.link(TxnKind::Completion, 1, 1_000, &pa),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(
        sim.link(TxnKind::PreAuthVoid, 1, 20_000, &pa),
        ResponseCode::InvalidTransaction
    );

    assert_eq!(
        sim.link(TxnKind::CompletionVoid, 1, 15_000, &completion.rrn),
        ResponseCode::Approved
    );
    // The capture given back, and the pre-authorisation standing again with its hold whole:
    // completed again at the right amount.
    assert_eq!(sim.balance(1), (100_000, 20_000));
    assert_eq!(sim.state(&completion.rrn), TxnState::Voided);
    assert_eq!(sim.state(&pa), TxnState::Approved);
    assert_eq!(sim.issuer.txn(&pa).unwrap().captured, 0);
    let redone = sim.linked(TxnKind::Completion, 1, 12_000, &pa);
    assert_eq!(sim.issuer.authorise(&redone).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (88_000, 0));
    assert_eq!(sim.state(&pa), TxnState::Completed);
}

#[test]
fn reversal_undoes_exactly_once() {
    let mut sim = Sim::new(vec![spec(1)]);
    let p = sim.approve(TxnKind::Purchase, 1, 7_000);
    assert_eq!(sim.balance(1), (93_000, 0));
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 7_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(sim.state(&p), TxnState::Reversed);
    for _ in 0..3 {
        assert_eq!(
            sim.reverse(TxnKind::Purchase, 1, 7_000, &p),
            ResponseCode::Approved
        );
    }
    assert_eq!(sim.balance(1), (100_000, 0));
    sim.issuer.flush().unwrap();
    let entries = sim.issuer.entries_for_day(today()).unwrap();
    assert_eq!(entries.iter().filter(|e| e.reversal).count(), 1);
    // A reversed transaction cannot be voided or refunded.
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 7_000, &p),
        ResponseCode::OriginalNotFound
    );
}

#[test]
fn reversal_of_unknown_original_acks_and_refuses_a_late_original() {
    let mut sim = Sim::new(vec![spec(1)]);
    let late = sim.request(TxnKind::Purchase, 1, 5_000);
    let reversal = ReversalRequest {
        kind: TxnKind::Purchase,
        pan: pan(1),
        amount: 5_000,
        trace: late.trace,
        rrn: late.rrn.clone(),
        reason: "98".into(),
    };
    assert_eq!(sim.issuer.reverse(&reversal).code, ResponseCode::Approved);
    assert_eq!(sim.state(&late.rrn), TxnState::ReversedUnseen);
    // The original arriving after its reversal must not take the money.
    assert_eq!(sim.issuer.authorise(&late).code, ResponseCode::Duplicate);
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(sim.issuer.reverse(&reversal).code, ResponseCode::Approved);
    assert!(sim.issuer.approvals().unwrap().is_empty());
}

#[test]
fn reversal_that_does_not_match_is_25() {
    let mut sim = Sim::new(vec![spec(1), spec(2)]);
    let p = sim.approve(TxnKind::Purchase, 1, 7_000);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 6_999, &p),
        ResponseCode::OriginalNotFound
    );
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 2, 7_000, &p),
        ResponseCode::OriginalNotFound
    );
    assert_eq!(
        sim.reverse(TxnKind::PreAuth, 1, 7_000, &p),
        ResponseCode::OriginalNotFound
    );
    assert_eq!(sim.state(&p), TxnState::Approved);
    // Voided already: the money is back, a reversal on top would pay twice. Refused with 12,
    // not 25: the original is held here, and what was done to it stands.
    assert_eq!(
        sim.link(TxnKind::PurchaseVoid, 1, 7_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 7_000, &p),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    // A declined original has nothing to undo: acknowledged.
    let declined = sim.request(TxnKind::Purchase, 1, 1_000_000);
    assert_eq!(
        sim.issuer.authorise(&declined).code,
        ResponseCode::InsufficientFunds
    );
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 1_000_000, &declined.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
}

#[test]
fn reversals_of_linked_transactions_restore_their_originals() {
    let mut sim = Sim::new(vec![spec(1)]);
    // Void reversed: the purchase stands again, debited again.
    let p = sim.approve(TxnKind::Purchase, 1, 1_000);
    let void = sim.linked(TxnKind::PurchaseVoid, 1, 1_000, &p);
    assert_eq!(sim.issuer.authorise(&void).code, ResponseCode::Approved);
    assert_eq!(
        sim.reverse(TxnKind::PurchaseVoid, 1, 1_000, &void.rrn),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.reverse(TxnKind::PurchaseVoid, 1, 1_000, &void.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.state(&p), TxnState::Approved);
    assert_eq!(sim.balance(1), (99_000, 0));

    // Refund reversed: the refunded total goes back down.
    let refund = sim.linked(TxnKind::Refund, 1, 400, &p);
    assert_eq!(sim.issuer.authorise(&refund).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (99_400, 0));
    // A purchase with a refund standing on it is not reversed alone (12: held, not undone).
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 1_000, &p),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(
        sim.reverse(TxnKind::Refund, 1, 400, &refund.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.issuer.txn(&p).unwrap().refunded, 0);
    assert_eq!(sim.balance(1), (99_000, 0));
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 1_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));

    // Pre-auth reversed: hold released.
    let pa = sim.approve(TxnKind::PreAuth, 1, 5_000);
    assert_eq!(
        sim.reverse(TxnKind::PreAuth, 1, 5_000, &pa),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));

    // Pre-auth void reversed: hold back.
    let pa = sim.approve(TxnKind::PreAuth, 1, 5_000);
    let pav = sim.linked(TxnKind::PreAuthVoid, 1, 5_000, &pa);
    assert_eq!(sim.issuer.authorise(&pav).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(
        sim.reverse(TxnKind::PreAuthVoid, 1, 5_000, &pav.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 5_000));
    assert_eq!(sim.state(&pa), TxnState::Approved);

    // Completion reversed: capture undone, hold back, pre-auth completable again.
    let c = sim.linked(TxnKind::Completion, 1, 3_000, &pa);
    assert_eq!(sim.issuer.authorise(&c).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (97_000, 0));
    // A completed pre-auth is not reversed under its completion (12: held, not undone).
    assert_eq!(
        sim.reverse(TxnKind::PreAuth, 1, 5_000, &pa),
        ResponseCode::InvalidTransaction
    );
    assert_eq!(
        sim.reverse(TxnKind::Completion, 1, 3_000, &c.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 5_000));
    assert_eq!(sim.state(&pa), TxnState::Approved);
    assert_eq!(sim.issuer.txn(&pa).unwrap().captured, 0);

    // Completion void reversed: captured again.
    let c = sim.linked(TxnKind::Completion, 1, 5_000, &pa);
    assert_eq!(sim.issuer.authorise(&c).code, ResponseCode::Approved);
    let cv = sim.linked(TxnKind::CompletionVoid, 1, 5_000, &c.rrn);
    assert_eq!(sim.issuer.authorise(&cv).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (100_000, 5_000));
    assert_eq!(sim.state(&pa), TxnState::Approved);
    assert_eq!(
        sim.reverse(TxnKind::CompletionVoid, 1, 5_000, &cv.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (95_000, 0));
    assert_eq!(sim.state(&c.rrn), TxnState::Approved);
    assert_eq!(sim.state(&pa), TxnState::Completed);
    assert_eq!(sim.issuer.txn(&pa).unwrap().captured, 5_000);
}

#[test]
fn duplicate_request_is_answered_once() {
    let mut sim = Sim::new(vec![spec(1)]);
    let req = sim.request(TxnKind::Purchase, 1, 3_000);
    let first = sim.issuer.authorise(&req);
    let again = sim.issuer.authorise(&req);
    assert_eq!(first, again);
    assert_eq!(sim.balance(1), (97_000, 0));
    // Same RRN, different trace or amount: not the same request, refused outright.
    let mut other = req.clone();
    other.trace += 1;
    assert_eq!(sim.issuer.authorise(&other).code, ResponseCode::Duplicate);
    let mut other = req.clone();
    other.amount += 1;
    assert_eq!(sim.issuer.authorise(&other).code, ResponseCode::Duplicate);
    assert_eq!(sim.balance(1), (97_000, 0));
    // A repeated decline replays the decline and counts no second wrong PIN.
    let mut wrong = sim.request(TxnKind::Purchase, 1, 100);
    wrong.pin_block = Some(block_for("000000", 1, ZPK));
    assert_eq!(sim.issuer.authorise(&wrong).code, ResponseCode::WrongPin);
    assert_eq!(sim.issuer.authorise(&wrong).code, ResponseCode::WrongPin);
    assert_eq!(sim.issuer.pin_tries(&pan(1)), Some(1));
    // A repeat of a reversed request is refused, never approved again.
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 3_000, &req.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.issuer.authorise(&req).code, ResponseCode::Duplicate);
    assert_eq!(sim.balance(1), (100_000, 0));
}

#[test]
fn ledger_records_postings_and_states() {
    let mut sim = Sim::new(vec![spec(1)]);
    let p = sim.approve(TxnKind::Purchase, 1, 1_000);
    let r = sim.linked(TxnKind::Refund, 1, 300, &p);
    assert_eq!(sim.issuer.authorise(&r).code, ResponseCode::Approved);
    let pa = sim.approve(TxnKind::PreAuth, 1, 2_000);
    assert_eq!(
        sim.code(TxnKind::Purchase, 1, 1_000_000),
        ResponseCode::InsufficientFunds
    );

    let entries = sim.issuer.entries_for_day(today()).unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.rrn.clone(),
                e.kind,
                e.amount,
                e.hold_delta,
                e.balance_after,
                e.holds_after,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (p.clone(), TxnKind::Purchase, -1_000, 0, 99_000, 0),
            (r.rrn.clone(), TxnKind::Refund, 300, 0, 99_300, 0),
            (pa.clone(), TxnKind::PreAuth, 0, 2_000, 99_300, 2_000),
        ]
    );
    assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));

    let approvals = sim.issuer.approvals().unwrap();
    assert_eq!(approvals.len(), 3);
    let purchase = approvals.iter().find(|t| t.rrn == p).unwrap();
    assert_eq!(
        (purchase.state, purchase.refunded),
        (TxnState::Approved, 300)
    );
    assert_eq!(purchase.account.as_deref(), Some("T-1"));
    assert!(purchase.pan_masked.contains("******"));
    assert_eq!(sim.issuer.transactions_for_day(today()).unwrap().len(), 4);
    assert!(
        sim.issuer
            .transactions_for_day(today().add_days(1))
            .unwrap()
            .is_empty()
    );

    let mut csv = Vec::new();
    assert_eq!(sim.issuer.write_clearing(today(), &mut csv).unwrap(), 3);
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "rrn,type,amount,state,refunded,captured,original_rrn,auth_code,day"
    );
    assert!(lines[1].starts_with(&format!("{p},purchase,1000,approved,300,0,,")));
    assert!(lines[2].starts_with(&format!("{},refund,300,approved,0,0,{p},", r.rrn)));
    assert!(lines[3].starts_with(&format!("{pa},pre_auth,2000,approved,0,0,,")));
    assert!(!csv.contains("622202"), "no PAN in the clearing file");
}

#[test]
fn ledger_survives_reopen() {
    let (dir, _, config) = file_ledger("reopen");
    let (p, pa, wrong_rrn);
    {
        let mut sim = Sim::with_config(vec![spec(1), spec(2)], config.clone());
        p = sim.approve(TxnKind::Purchase, 1, 1_000);
        pa = sim.approve(TxnKind::PreAuth, 2, 2_000);
        let mut wrong = sim.request(TxnKind::Purchase, 2, 100);
        wrong.pin_block = Some(block_for("000000", 2, ZPK));
        assert_eq!(sim.issuer.authorise(&wrong).code, ResponseCode::WrongPin);
        wrong_rrn = wrong.rrn;
        sim.issuer.close().unwrap();
        assert_eq!(sim.code(TxnKind::Purchase, 1, 1), ResponseCode::SystemError);
    }
    let mut sim = Sim::with_config(vec![spec(1), spec(2)], config.clone());
    sim.next_rrn = 100;
    assert_eq!(sim.balance(1), (99_000, 0));
    assert_eq!(sim.balance(2), (100_000, 2_000));
    assert_eq!(sim.issuer.pin_tries(&pan(2)), Some(1));
    assert_eq!(
        sim.issuer.txn(&wrong_rrn).unwrap().code,
        ResponseCode::WrongPin
    );
    // Reversal after restart finds its original, and still applies only once.
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 1_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 1_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    // Postings continue the sequence; authorisation codes do not repeat.
    let c = sim.linked(TxnKind::Completion, 2, 2_000, &pa);
    let reply = sim.issuer.authorise(&c);
    assert_eq!(reply.code, ResponseCode::Approved);
    let first_codes: Vec<_> = [&p, &pa]
        .iter()
        .map(|r| sim.issuer.txn(r).unwrap().auth_code.unwrap())
        .collect();
    assert!(!first_codes.contains(&reply.auth_code.unwrap()));
    sim.issuer.close().unwrap();
    drop(sim);

    let sim = Sim::with_config(vec![spec(1), spec(2)], config);
    let entries = sim.issuer.entries_for_day(today()).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(sim.state(&p), TxnState::Reversed);
    assert_eq!(sim.state(&pa), TxnState::Completed);
    assert_eq!(sim.balance(2), (98_000, 0));
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn old_transactions_leave_memory_and_come_back_when_a_request_names_them() {
    let (dir, _, config) = file_ledger("held");
    assert_eq!(config.book.held_days(), 32);
    let mut sim = Sim::with_config(vec![spec(1), spec(2), spec(3)], config.clone());
    let p = sim.approve(TxnKind::Purchase, 1, 10_000);
    let q = sim.approve(TxnKind::Purchase, 2, 2_000);
    let s = sim.approve(TxnKind::Purchase, 3, 3_000);
    sim.clock.advance_days(30);
    let refund = sim.linked(TxnKind::Refund, 2, 500, &q);
    assert_eq!(sim.issuer.authorise(&refund).code, ResponseCode::Approved);
    let other_refund = sim.linked(TxnKind::Refund, 3, 700, &s);
    assert_eq!(
        sim.issuer.authorise(&other_refund).code,
        ResponseCode::Approved
    );
    assert_eq!(sim.issuer.held_transactions(), 5);
    // Days pass: the ledger has long committed what the book will let go of.
    sim.issuer.flush().unwrap();

    // 33 days on, the purchases leave memory at the day's first request; the refund stays.
    sim.clock.advance_days(3);
    sim.approve(TxnKind::BalanceInquiry, 1, 0);
    assert_eq!(sim.issuer.held_transactions(), 3);
    // A reversal of the refund, delivered late, still gives its purchase the refund back.
    assert_eq!(
        sim.reverse(TxnKind::Refund, 2, 500, &refund.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(2), (98_000, 0));
    assert_eq!(sim.issuer.txn(&q).unwrap().refunded, 0);

    // A reversal of the first purchase after a long outage finds it in the ledger, on a day
    // whose first request is this reversal and the book holds nothing older.
    sim.clock.advance_days(50);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 10_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(sim.state(&p), TxnState::Reversed);
    // Once: the second delivery finds it reversed.
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 10_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    // A refund the book let go of, of a purchase it let go of: both come back.
    assert_eq!(
        sim.reverse(TxnKind::Refund, 3, 700, &other_refund.rrn),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(3), (97_000, 0));
    assert_eq!(sim.issuer.txn(&s).unwrap().refunded, 0);
    let today_sale = sim.approve(TxnKind::Purchase, 1, 100);
    sim.issuer.close().unwrap();
    let days = sim.clock.clone();
    drop(sim);

    // A restart loads the days held, not the whole ledger.
    let issuer = Issuer::open(
        config,
        vec![spec(1), spec(2), spec(3)],
        Arc::new(verifier()),
        Arc::new(days),
    )
    .unwrap();
    assert_eq!(issuer.held_transactions(), 1, "today's sale only");
    assert_eq!(issuer.txn(&today_sale).unwrap().amount, 100);
    assert_eq!(issuer.txn(&p).unwrap().state, TxnState::Reversed);
    assert_eq!(issuer.txn(&q).unwrap().refunded, 0);
    assert_eq!(issuer.balance(&pan(1)), Some((99_900, 0)));
    issuer.close().unwrap();
    drop(issuer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hsm_fault_is_96_without_counting_a_try() {
    let (hsm, _zpk) = hsm();
    // A handle of the wrong kind: the HSM refuses to verify under a terminal master key.
    let tmk = hsm
        .import_key(KeyUsage::Tmk, KeyAlgorithm::Des, ZPK)
        .unwrap();
    let clock = ManualClock::at(today(), 10 * 3600);
    let issuer = Issuer::open(
        IssuerConfig::in_memory("TEST"),
        vec![spec(1)],
        Arc::new(HsmPinVerifier::new(hsm, tmk)),
        Arc::new(clock),
    )
    .unwrap();
    let req = AuthRequest {
        kind: TxnKind::Purchase,
        pan: pan(1),
        amount: 100,
        trace: 1,
        rrn: Rrn::parse("000000000001").unwrap(),
        date: None,
        expiry: None,
        pin_block: Some(block_for(PIN, 1, ZPK)),
        original: None,
    };
    assert_eq!(issuer.authorise(&req).code, ResponseCode::SystemError);
    assert_eq!(issuer.pin_tries(&pan(1)), Some(0));
    assert_eq!(issuer.balance(&pan(1)), Some((100_000, 0)));
}

#[test]
fn pin_block_bound_to_another_card_is_not_accepted() {
    let mut sim = Sim::new(vec![spec(1), spec(2)]);
    let mut req = sim.request(TxnKind::Purchase, 1, 100);
    req.pin_block = Some(block_for(PIN, 2, ZPK));
    assert_ne!(sim.issuer.authorise(&req).code, ResponseCode::Approved);
    assert_eq!(sim.balance(1), (100_000, 0));
}

/// The days the book lets go of leave memory only once the ledger holds their last change,
/// and a request that names one finds it whatever else came that day: a reversal that is the
/// first request after the window passed its purchase, and the same reversal delivered again
/// the next day, while its first delivery may still be on its way to the ledger, each credit
/// the card once.
#[test]
fn a_reversal_at_the_edge_of_the_days_held_credits_the_card_once() {
    let (dir, _, config) = file_ledger("edge");
    let mut sim = Sim::with_config(vec![spec(1), spec(2)], config.clone());
    let p = sim.approve(TxnKind::Purchase, 1, 10_000);
    let q = sim.approve(TxnKind::Purchase, 2, 2_000);
    sim.issuer.flush().unwrap();
    assert_eq!(sim.balance(1), (90_000, 0));

    // The day after the window passed them, with no request in between: the reversal is the
    // day's first request, and the book still held the purchase until then.
    sim.clock.advance_days(33);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 10_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(1), (100_000, 0));
    assert_eq!(sim.state(&p), TxnState::Reversed);

    // The reversal of the other, then its second delivery the next day, straight after the
    // first: the book lets go of it again first, and reads it back as last changed.
    sim.clock.advance_days(50);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 2, 2_000, &q),
        ResponseCode::Approved
    );
    sim.clock.advance_days(1);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 2, 2_000, &q),
        ResponseCode::Approved
    );
    assert_eq!(sim.balance(2), (100_000, 0), "credited twice");
    assert_eq!(sim.state(&q), TxnState::Reversed);
    let last_code = sim.issuer.txn(&q).unwrap().auth_code.unwrap();
    sim.issuer.close().unwrap();
    let days = sim.clock.clone();
    drop(sim);

    // A restart with nothing of the days held: authorisation codes go on from the ledger's.
    days.advance_days(40);
    let issuer = Issuer::open(
        config,
        vec![spec(1), spec(2)],
        Arc::new(verifier()),
        Arc::new(days.clone()),
    )
    .unwrap();
    assert_eq!(issuer.held_transactions(), 0);
    let mut sim = Sim {
        issuer,
        clock: days,
        next_rrn: 1_000,
    };
    let r = sim.approve(TxnKind::Purchase, 1, 100);
    let code = sim.issuer.txn(&r).unwrap().auth_code.unwrap();
    assert!(code > last_code, "{code} after {last_code}");
    sim.issuer.close().unwrap();
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ledger that failed a write cannot be flushed: the book then keeps the old days in memory
/// and goes on answering, rather than answering 96 from the day it would have let them go.
#[test]
fn a_ledger_that_failed_a_write_does_not_stop_the_answers_at_the_days_edge() {
    let (dir, path, config) = file_ledger("failed");
    let mut sim = Sim::with_config(vec![spec(1)], config);
    let p = sim.approve(TxnKind::Purchase, 1, 10_000);
    sim.issuer.flush().unwrap();
    // The ledger's writes fail from here on (its postings table is gone).
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("DROP TABLE postings").unwrap();
    drop(other);
    sim.approve(TxnKind::Purchase, 1, 1_000);
    assert!(sim.issuer.flush().is_err());
    sim.clock.advance_days(33);
    sim.approve(TxnKind::Purchase, 1, 500);
    assert_eq!(
        sim.reverse(TxnKind::Purchase, 1, 10_000, &p),
        ResponseCode::Approved
    );
    assert_eq!(sim.state(&p), TxnState::Reversed);
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}
