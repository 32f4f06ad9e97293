//! Per-request costs: MAC generation/verification and PIN translation, direct and through the
//! SoftHsm (lock + handle lookup). Run: `cargo bench -p paycrypto`.

// Benchmarks are test code: clippy.toml does not see them as such.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use paycrypto::{
    DesKey, DeterministicRandom, Hsm, Key, KeyAlgorithm, KeyScheme, KeySpec, KeyUsage,
    MacAlgorithm, MakLength, MasterKey, PanDigits, SoftHsm, mac, pin,
};

// A typical purchase MAC block is around 100–150 bytes.
const MESSAGE: [u8; 128] = [0x5a; 128];

fn direct(c: &mut Criterion) {
    let key = Key::Des(DesKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap());
    for alg in [MacAlgorithm::CupEcb, MacAlgorithm::X919] {
        c.bench_function(&format!("mac {alg} 128 B"), |b| {
            b.iter(|| mac::compute(alg, black_box(&key), black_box(&MESSAGE)))
        });
    }
    let single = DesKey::from_hex("0123456789ABCDEF").unwrap();
    let double = DesKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap();
    for (name, key) in [("des block", &single), ("tdes block", &double)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut block = black_box([0x5a; 8]);
                key.encrypt_block(&mut block);
                block
            })
        });
    }
    let sm4 = Key::from_hex(KeyAlgorithm::Sm4, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    c.bench_function("mac sm4 128 B", |b| {
        b.iter(|| mac::compute(MacAlgorithm::Sm4, black_box(&sm4), black_box(&MESSAGE)))
    });
    c.bench_function("key schedule + kcv (3DES)", |b| {
        b.iter(|| DesKey::from_hex(black_box("0123456789ABCDEFFEDCBA9876543210")).map(|k| k.kcv()))
    });
}

fn through_hsm(c: &mut Criterion) {
    let hsm = SoftHsm::new(
        &MasterKey::from_bytes([1; 32]),
        Box::new(DeterministicRandom::new(1)),
    );
    let tmk = hsm
        .import_key(
            KeyUsage::Tmk,
            KeyAlgorithm::Des,
            "0123456789ABCDEFFEDCBA9876543210",
        )
        .unwrap();
    let issued = hsm
        .generate_working_keys(tmk, KeyScheme::Double, MakLength::Double)
        .unwrap();
    let zpk = hsm
        .generate_key(KeyUsage::Zpk, KeySpec::Des(paycrypto::DesKeyLength::Double))
        .unwrap();
    let mac = hsm
        .generate_mac(issued.mak, MacAlgorithm::X919, &MESSAGE)
        .unwrap();
    c.bench_function("hsm verify_mac x919 128 B", |b| {
        b.iter(|| hsm.verify_mac(issued.mak, MacAlgorithm::X919, black_box(&MESSAGE), &mac))
    });
    let tmk_clear = Key::from_hex(KeyAlgorithm::Des, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let keys = paycrypto::decode_field62(&tmk_clear, KeyScheme::Double, &issued.field62).unwrap();
    let pan = PanDigits::from_pan("6222021234567890123").unwrap();
    let block = pin::encrypt(&keys.pik, "123456", &pan).unwrap();
    c.bench_function("hsm translate_pin_block PIK->ZPK", |b| {
        b.iter(|| hsm.translate_pin_block(issued.pik, zpk, black_box(&block), &pan))
    });
    let sealed = hsm.seal(b"6222021234567890123").unwrap();
    c.bench_function("hsm seal+open PAN", |b| {
        b.iter(|| {
            hsm.seal(black_box(b"6222021234567890123"))
                .and_then(|s| hsm.open(&s))
        })
    });
    c.bench_function("hsm open PAN", |b| b.iter(|| hsm.open(black_box(&sealed))));
}

criterion_group!(benches, direct, through_hsm);
criterion_main!(benches);
