//! The demo cards: real BINs, valid numbers, stable across runs, and every card's stated
//! purchase code is what the issuer actually answers.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::sync::Arc;

use domain::IssuerDirectory;
use issuer_sim::fixtures::{DEMO_PURCHASE_FEN, HEALTHY_BALANCE_FEN};
use issuer_sim::{
    AuthRequest, Date, HsmPinVerifier, Issuer, IssuerConfig, ManualClock, OriginalRef,
    ResponseCode, Rrn, TxnKind, demo_accounts, demo_cards, demo_cards_with,
};
use paycrypto::{
    DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyUsage, MasterKey, PanDigits, SoftHsm,
};

const ZPK: &str = "0123456789ABCDEFFEDCBA9876543210";
const BANKS: [&str; 6] = ["ICBC", "ABC", "BOC", "CCB", "CMB", "PSBC"];

#[test]
fn cards_are_valid_on_the_banks_real_bins() {
    let directory = IssuerDirectory::embedded().unwrap();
    for bank in BANKS {
        let cards = demo_cards(bank).unwrap();
        let mut seen = HashSet::new();
        for card in &cards {
            let digits = card.pan.expose_digits();
            assert!(
                seen.insert(digits.to_owned()),
                "{bank}: duplicate card number"
            );
            let found = directory.lookup(&card.pan).issuer.unwrap();
            assert_eq!(found.bank.code(), bank, "{:?}", card.pan);
            assert!(
                found.length_matches(),
                "{bank}: {:?} has the wrong length",
                card.pan
            );
            assert_eq!(found.card_type, card.card_type);
            assert_eq!(card.pin().len(), 6);
            assert!(card.reference.starts_with(&format!("{bank}-")));
            // Debug of a card shows neither its number nor its PIN.
            let debug = format!("{card:?}");
            assert!(
                !debug.contains(digits) && !debug.contains(card.pin()),
                "{debug}"
            );
        }
    }
}

#[test]
fn cards_are_deterministic_and_differ_between_banks() {
    let a = demo_cards("ICBC").unwrap();
    let b = demo_cards("ICBC").unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.pan, y.pan);
        assert_eq!(x.pin(), y.pin());
        assert_eq!(x.reference, y.reference);
        assert_eq!(x.purchase_code, y.purchase_code);
    }
    let other = demo_cards("ABC").unwrap();
    assert!(a.iter().all(|x| other.iter().all(|y| x.pan != y.pan)));
    // More healthy cards extend the list without changing the ones before.
    let more = demo_cards_with("ICBC", 50).unwrap();
    assert_eq!(more.len(), a.len() + 46);
    for (x, y) in a.iter().zip(&more) {
        assert_eq!(x.pan, y.pan);
    }
}

#[test]
fn unknown_bank_is_an_error() {
    assert!(demo_cards("NOSUCHBANK").is_err());
}

#[test]
fn every_decline_has_a_card_and_healthy_cards_are_rich() {
    let cards = demo_cards("ICBC").unwrap();
    let codes: HashSet<&str> = cards.iter().map(|c| c.purchase_code.as_str()).collect();
    for code in [
        "00", "01", "04", "05", "07", "14", "21", "41", "43", "51", "54", "55", "57", "61", "62",
        "65", "75",
    ] {
        assert!(codes.contains(code), "no demo card answers {code}");
    }
    let healthy: Vec<_> = cards.iter().filter(|c| c.label == "healthy").collect();
    assert!(healthy.len() >= 4);
    assert!(
        healthy
            .iter()
            .all(|c| c.balance >= HEALTHY_BALANCE_FEN && c.on_file)
    );
    assert!(
        healthy
            .iter()
            .all(|c| c.purchase_code == ResponseCode::Approved)
    );
}

fn open(bank: &str, healthy: usize) -> (Issuer, Vec<issuer_sim::DemoCard>) {
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(
        &MasterKey::from_bytes([9; 32]),
        Box::new(DeterministicRandom::new(5)),
    ));
    let zpk = hsm
        .import_key(KeyUsage::Zpk, KeyAlgorithm::Des, ZPK)
        .unwrap();
    let pins = HsmPinVerifier::new(hsm, zpk);
    let cards = demo_cards_with(bank, healthy).unwrap();
    let accounts = demo_accounts(&cards, &pins).unwrap();
    let clock = ManualClock::at(Date::new(2025, 6, 30).unwrap(), 12 * 3600);
    let issuer = Issuer::open(
        IssuerConfig::in_memory(bank),
        accounts,
        Arc::new(pins),
        Arc::new(clock),
    )
    .unwrap();
    (issuer, cards)
}

fn purchase(card: &issuer_sim::DemoCard, kind: TxnKind, n: u64) -> AuthRequest {
    let key = Key::from_hex(KeyAlgorithm::Des, ZPK).unwrap();
    let digits = PanDigits::from_pan(card.pan.expose_digits()).unwrap();
    AuthRequest {
        kind,
        pan: card.pan.clone(),
        amount: DEMO_PURCHASE_FEN,
        trace: u32::try_from(n).unwrap(),
        rrn: Rrn::parse(&format!("{n:012}")).unwrap(),
        date: Some("0630".into()),
        expiry: Some(card.expiry),
        pin_block: Some(paycrypto::pin::encrypt(&key, card.pin(), &digits).unwrap()),
        original: None,
    }
}

#[test]
fn each_card_gets_its_stated_purchase_code() {
    for bank in BANKS {
        let (issuer, cards) = open(bank, 4);
        for (n, card) in (1..).zip(&cards) {
            let reply = issuer.authorise(&purchase(card, TxnKind::Purchase, n));
            assert_eq!(reply.code, card.purchase_code, "{bank} {}", card.label);
        }
    }
}

#[test]
fn no_pre_auth_or_refund_card_is_57_for_those() {
    let (issuer, cards) = open("CCB", 0);
    let card = cards
        .iter()
        .find(|c| c.label == "no_pre_auth_or_refund")
        .unwrap();
    assert_eq!(
        issuer
            .authorise(&purchase(card, TxnKind::PreAuth, 1))
            .code
            .as_str(),
        "57"
    );
    let bought = purchase(card, TxnKind::Purchase, 2);
    assert_eq!(issuer.authorise(&bought).code, ResponseCode::Approved);
    let mut refund = purchase(card, TxnKind::Refund, 3);
    refund.pin_block = None;
    refund.original = Some(OriginalRef {
        rrn: bought.rrn,
        date: "0630".into(),
    });
    assert_eq!(issuer.authorise(&refund).code.as_str(), "57");
}
