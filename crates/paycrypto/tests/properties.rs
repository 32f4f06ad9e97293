//! Properties over random inputs: round trips (hex, PIN blocks, field 62, sealing), MACs that
//! notice any change, and parsers that return errors rather than panic on arbitrary bytes.
#![cfg(test)]

use paycrypto::{
    ClearPinBlock, DesKey, DeterministicRandom, EncryptedPinBlock, Hsm, Key, KeyAlgorithm,
    KeyScheme, MacAlgorithm, MakLength, MasterKey, PanDigits, Sm4Key, SoftHsm, hex, mac, pin,
};
use proptest::prelude::*;

fn des_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        proptest::array::uniform8(any::<u8>())
            .prop_map(|k| Key::Des(DesKey::from_bytes(&k).unwrap())),
        proptest::array::uniform16(any::<u8>())
            .prop_map(|k| Key::Des(DesKey::from_bytes(&k).unwrap())),
        proptest::array::uniform24(any::<u8>())
            .prop_map(|k| Key::Des(DesKey::from_bytes(&k).unwrap())),
    ]
}

fn sm4_key() -> impl Strategy<Value = Key> {
    proptest::array::uniform16(any::<u8>()).prop_map(|k| Key::Sm4(Sm4Key::from_bytes(&k).unwrap()))
}

fn any_key() -> impl Strategy<Value = Key> {
    prop_oneof![des_key(), sm4_key()]
}

proptest! {
    #[test]
    fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(hex::decode(&hex::encode(&bytes)).unwrap(), bytes.clone());
        prop_assert_eq!(hex::decode(&hex::encode(&bytes).to_lowercase()).unwrap(), bytes);
    }

    #[test]
    fn hex_never_panics(text in ".{0,40}") {
        let _ = hex::decode(&text);
        let _ = DesKey::from_hex(&text);
        let _ = Sm4Key::from_hex(&text);
    }

    #[test]
    fn ecb_round_trips(key in any_key(), blocks in proptest::collection::vec(any::<u8>(), 0..4)) {
        let plain: Vec<u8> = blocks.iter().flat_map(|b| vec![*b; key.block_len()]).collect();
        let mut data = plain.clone();
        key.encrypt_ecb(&mut data).unwrap();
        key.decrypt_ecb(&mut data).unwrap();
        prop_assert_eq!(data, plain);
    }

    #[test]
    fn pin_blocks_round_trip_through_translation(
        pin_text in "[0-9]{4,12}",
        pan in "[0-9]{8,19}",
        from in any_key(),
        to in any_key(),
    ) {
        let digits = PanDigits::from_pan(&pan).unwrap();
        let block = pin::encrypt(&from, &pin_text, &digits).unwrap();
        prop_assert_eq!(block.as_bytes().len(), from.block_len());
        let translated = pin::translate(&from, &to, &block, &digits);
        if to.is_single_des() && !from.is_single_des() {
            // Never down to single DES.
            prop_assert!(matches!(translated, Err(pin::PinError::WeakerKey)));
        } else {
            prop_assert_eq!(translated.unwrap(), pin::encrypt(&to, &pin_text, &digits).unwrap());
        }
    }

    #[test]
    fn format0_block_shape(pin_text in "[0-9]{4,12}", pan in "[0-9]{13,19}") {
        let digits = PanDigits::from_pan(&pan).unwrap();
        let block = ClearPinBlock::format0(&pin_text, &digits).unwrap();
        let text = hex::encode(block.expose());
        // First two bytes are not touched by the PAN: control 0, length, first two PIN digits.
        prop_assert_eq!(&text[..2], format!("{:02X}", pin_text.len()));
        prop_assert_eq!(&text[2..4], &pin_text[..2]);
    }

    #[test]
    fn translate_never_panics_on_garbage(
        bytes in proptest::collection::vec(any::<u8>(), 0..20),
        key in any_key(),
    ) {
        let digits = PanDigits::from_pan("6222021234567890123").unwrap();
        if let Ok(block) = EncryptedPinBlock::from_bytes(&bytes) {
            let _ = pin::translate(&key, &key, &block, &digits);
        }
    }

    #[test]
    fn macs_notice_any_bit_flip(
        key in des_key(),
        sm4 in sm4_key(),
        data in proptest::collection::vec(any::<u8>(), 1..200),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut changed = data.clone();
        changed[flip.index(data.len())] ^= 1 << bit;
        for (alg, key) in [(MacAlgorithm::CupEcb, &key), (MacAlgorithm::X919, &key), (MacAlgorithm::Sm4, &sm4)] {
            let good = mac::compute(alg, key, &data).unwrap();
            prop_assert_eq!(mac::verify(alg, key, &data, &good), Ok(()));
            // 2^-32 chance of a collision for the ASCII-hex MACs: negligible over the runs.
            prop_assert!(mac::verify(alg, key, &changed, &good).is_err());
        }
    }

    #[test]
    fn field62_round_trips(seed in any::<u64>(), scheme_index in 0usize..4, single in any::<bool>()) {
        let scheme = KeyScheme::ALL[scheme_index];
        let rng = DeterministicRandom::new(seed);
        let tmk = match scheme {
            KeyScheme::Sm4 => Key::Sm4(Sm4Key::generate(&rng).unwrap()),
            _ => Key::Des(DesKey::generate(paycrypto::DesKeyLength::Double, &rng).unwrap()),
        };
        let mak_length = if single { MakLength::Single } else { MakLength::Double };
        let issued = paycrypto::generate(&tmk, scheme, mak_length, &rng).unwrap();
        let keys = paycrypto::decode_field62(&tmk, scheme, &issued.field62).unwrap();
        prop_assert_eq!(keys.pik.kcv(), issued.keys.pik.kcv());
        prop_assert_eq!(keys.mak.kcv(), issued.keys.mak.kcv());
    }

    #[test]
    fn field62_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80), scheme_index in 0usize..4) {
        let scheme = KeyScheme::ALL[scheme_index];
        let tmk = match scheme {
            KeyScheme::Sm4 => Key::from_hex(KeyAlgorithm::Sm4, "0123456789ABCDEFFEDCBA9876543210").unwrap(),
            _ => Key::from_hex(KeyAlgorithm::Des, "0123456789ABCDEFFEDCBA9876543210").unwrap(),
        };
        let _ = paycrypto::unwrap_field62(&tmk, scheme, &bytes);
    }

    #[test]
    fn sealing_round_trips_and_garbage_is_rejected(
        plain in proptest::collection::vec(any::<u8>(), 0..100),
        garbage in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let hsm = SoftHsm::new(&MasterKey::from_bytes([3; 32]), Box::new(DeterministicRandom::new(1)));
        let sealed = hsm.seal(&plain).unwrap();
        let opened = hsm.open(&sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), plain.as_slice());
        prop_assert!(hsm.open(&garbage).is_err());
        prop_assert!(SoftHsm::from_store(&MasterKey::from_bytes([3; 32]), Box::new(DeterministicRandom::new(1)), &garbage).is_err());
    }
}
