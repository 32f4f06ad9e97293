//! Checks paycrypto against vectors computed by independent implementations (pycryptodome for
//! DES/TDES, gmssl for SM4, the POS constructions re-written in Python from their specification):
//! see `vectors/gen_vectors.py` and the provenance block of `vectors/vectors.json`.

// clippy.toml allows these inside #[test] functions; the JSON helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use paycrypto::hex;
use paycrypto::{
    ClearPinBlock, DesKey, Key, KeyAlgorithm, KeyScheme, MacAlgorithm, PanDigits, Sm4Key,
    decode_field62, mac, pin, unwrap_field62,
};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/vectors.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn list<'a>(v: &'a Value, name: &str) -> &'a Vec<Value> {
    let list = v[name].as_array().unwrap();
    assert!(!list.is_empty(), "no {name} vectors");
    list
}

fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("missing {name} in {v}"))
}

fn algorithm(v: &Value) -> KeyAlgorithm {
    match s(v, "algorithm") {
        "des" => KeyAlgorithm::Des,
        "sm4" => KeyAlgorithm::Sm4,
        other => panic!("unknown algorithm {other}"),
    }
}

#[test]
fn provenance_is_recorded() {
    let v = vectors();
    for field in ["generator", "pycryptodome", "gmssl", "generated"] {
        assert!(v["provenance"][field].is_string(), "provenance.{field}");
    }
}

#[test]
fn key_check_values() {
    for v in list(&vectors(), "kcv") {
        let key = Key::from_hex(algorithm(v), s(v, "key")).unwrap();
        assert_eq!(key.kcv().to_string(), s(v, "kcv"), "{v}");
    }
}

#[test]
fn ecb_encrypt_and_decrypt() {
    for v in list(&vectors(), "ecb") {
        let key = Key::from_hex(algorithm(v), s(v, "key")).unwrap();
        let mut data = hex::decode(s(v, "plaintext")).unwrap();
        key.encrypt_ecb(&mut data).unwrap();
        assert_eq!(hex::encode(&data), s(v, "ciphertext"), "{v}");
        key.decrypt_ecb(&mut data).unwrap();
        assert_eq!(hex::encode(&data), s(v, "plaintext"), "{v}");
    }
}

#[test]
fn macs() {
    let mut seen = [0usize; 3];
    for v in list(&vectors(), "mac") {
        let alg: MacAlgorithm = s(v, "algorithm").parse().unwrap();
        let key = Key::from_hex(alg.key_algorithm(), s(v, "key")).unwrap();
        let data = hex::decode(s(v, "data")).unwrap();
        let expected = hex::decode(s(v, "mac")).unwrap();
        assert_eq!(
            hex::encode(&mac::compute(alg, &key, &data).unwrap()),
            s(v, "mac"),
            "{v}"
        );
        assert_eq!(mac::verify(alg, &key, &data, &expected), Ok(()));
        seen[MacAlgorithm::ALL.iter().position(|a| *a == alg).unwrap()] += 1;
    }
    assert!(seen.iter().all(|n| *n >= 10), "{seen:?}");
}

#[test]
fn pin_blocks() {
    for v in list(&vectors(), "pin") {
        let alg = algorithm(v);
        let key = Key::from_hex(alg, s(v, "key")).unwrap();
        let pan = PanDigits::from_pan(s(v, "pan")).unwrap();
        let clear = match alg {
            KeyAlgorithm::Des => ClearPinBlock::format0(s(v, "pin"), &pan).unwrap(),
            KeyAlgorithm::Sm4 => ClearPinBlock::sm4(s(v, "pin"), &pan).unwrap(),
        };
        assert_eq!(hex::encode(clear.expose()), s(v, "clear_block"), "{v}");
        let encrypted = pin::encrypt(&key, s(v, "pin"), &pan).unwrap();
        assert_eq!(
            hex::encode(encrypted.as_bytes()),
            s(v, "encrypted_block"),
            "{v}"
        );
        // And the other way: a translation out of this key accepts the block.
        let zone = Key::Des(DesKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap());
        let translated = pin::translate(&key, &zone, &encrypted, &pan).unwrap();
        assert_eq!(translated, pin::encrypt(&zone, s(v, "pin"), &pan).unwrap());
    }
}

#[test]
fn field62_decoding() {
    for v in list(&vectors(), "field62") {
        let scheme: KeyScheme = s(v, "scheme").parse().unwrap();
        let tmk = match scheme {
            KeyScheme::Sm4 => Key::Sm4(Sm4Key::from_hex(s(v, "tmk")).unwrap()),
            _ => Key::Des(DesKey::from_hex(s(v, "tmk")).unwrap()),
        };
        let field = hex::decode(s(v, "field62")).unwrap();
        let kcvs: Vec<&str> = v["kcvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let unwrapped = unwrap_field62(&tmk, scheme, &field).unwrap();
        let computed: Vec<String> = unwrapped
            .slots()
            .map(|slot| slot.computed_kcv().to_string())
            .collect();
        assert_eq!(computed, kcvs, "{v}");
        let keys = decode_field62(&tmk, scheme, &field).unwrap();
        assert_eq!(keys.tdk.is_some(), kcvs.len() == 3);
    }
}
