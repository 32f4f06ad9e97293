//! Property tests: Luhn, PAN masking, money parsing and arithmetic, BIN lookup on any input.
// Test helpers outside #[test] functions: the house rules allow these lints in tests.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use domain::{IssuerDirectory, MaskedPan, Money, Pan, luhn_check_digit, luhn_valid};
use proptest::prelude::*;

static DIRECTORY: std::sync::LazyLock<IssuerDirectory> =
    std::sync::LazyLock::new(|| IssuerDirectory::embedded().unwrap());

fn digits(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, min..=max)
        .prop_map(|ds| ds.into_iter().map(|d| char::from(b'0' + d)).collect())
}

/// A valid PAN of 13–19 digits: random payload plus its check digit.
fn valid_pan_text() -> impl Strategy<Value = String> {
    digits(12, 18).prop_map(|mut payload| {
        let check = luhn_check_digit(payload.as_bytes()).unwrap();
        payload.push(char::from(check));
        payload
    })
}

proptest! {
    #[test]
    fn check_digit_makes_luhn_valid_and_any_other_digit_breaks_it(payload in digits(1, 30)) {
        let check = luhn_check_digit(payload.as_bytes()).unwrap();
        for d in b'0'..=b'9' {
            let mut full = payload.clone().into_bytes();
            full.push(d);
            prop_assert_eq!(luhn_valid(&full), d == check);
        }
    }

    #[test]
    fn luhn_catches_every_single_digit_error(text in valid_pan_text(), pos in 0usize..19, delta in 1u8..10) {
        let mut bytes = text.into_bytes();
        let pos = pos % bytes.len();
        bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
        prop_assert!(!luhn_valid(&bytes));
        prop_assert!(Pan::from_ascii(&bytes).is_err());
    }

    #[test]
    fn valid_pans_parse_and_never_print_in_clear(text in valid_pan_text()) {
        let pan: Pan = text.parse().unwrap();
        prop_assert_eq!(pan.expose_digits(), text.as_str());
        let shown = pan.to_string();
        let debugged = format!("{pan:?}");
        let len = text.len();
        // Same length, first 6 and last 4 kept, everything between is '*'.
        prop_assert_eq!(shown.len(), len);
        prop_assert_eq!(&shown[..6], &text[..6]);
        prop_assert_eq!(&shown[len - 4..], &text[len - 4..]);
        prop_assert!(shown[6..len - 4].bytes().all(|b| b == b'*'));
        prop_assert_eq!(pan.last4(), &text[len - 4..]);
        // Debug is the masked form and nothing else.
        prop_assert_eq!(debugged, format!("Pan({shown})"));
        let masked = pan.masked();
        prop_assert_eq!(masked.as_str(), shown.as_str());
        let untrusted = MaskedPan::of_untrusted(&text);
        prop_assert_eq!(untrusted.as_str(), shown.as_str());
    }

    #[test]
    fn arbitrary_text_never_panics_the_parsers(text in ".{0,40}") {
        let _ = text.parse::<Pan>();
        let _ = text.parse::<Money>();
        let masked = MaskedPan::of_untrusted(&text);
        prop_assert_eq!(masked.as_str().chars().count(), text.chars().count());
    }

    #[test]
    fn money_display_parse_round_trip(fen in any::<u64>()) {
        let money = Money::from_fen(fen);
        prop_assert_eq!(money.to_string().parse::<Money>(), Ok(money));
    }

    #[test]
    fn money_n12_round_trip(fen in 0u64..=999_999_999_999) {
        let money = Money::from_fen(fen);
        let n12 = money.to_n12().unwrap();
        prop_assert_eq!(Money::from_n12(&n12), Ok(money));
        prop_assert_eq!(std::str::from_utf8(&n12).unwrap(), format!("{fen:012}"));
    }

    #[test]
    fn money_arithmetic_matches_wide_integers(a in any::<u64>(), b in any::<u64>(), k in any::<u64>()) {
        let (ma, mb) = (Money::from_fen(a), Money::from_fen(b));
        let wide_sum = u128::from(a) + u128::from(b);
        prop_assert_eq!(ma.checked_add(mb).map(Money::fen).map(u128::from),
            (wide_sum <= u128::from(u64::MAX)).then_some(wide_sum));
        prop_assert_eq!(ma.checked_sub(mb).map(Money::fen), a.checked_sub(b));
        let wide_product = u128::from(a) * u128::from(k);
        prop_assert_eq!(ma.checked_mul(k).map(Money::fen).map(u128::from),
            (wide_product <= u128::from(u64::MAX)).then_some(wide_product));
        if let Some(sum) = ma.checked_add(mb) {
            prop_assert_eq!(sum.checked_sub(mb), Some(ma));
        }
    }

    #[test]
    fn decimal_text_parses_to_the_right_fen(yuan in 0u64..10_000_000_000, fen in 0u64..100, one_digit in any::<bool>()) {
        let (text, expected) = if one_digit && fen % 10 == 0 {
            (format!("{yuan}.{}", fen / 10), yuan * 100 + fen)
        } else {
            (format!("{yuan}.{fen:02}"), yuan * 100 + fen)
        };
        prop_assert_eq!(text.parse::<Money>(), Ok(Money::from_fen(expected)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn lookup_never_panics_and_agrees_with_pan_length(text in digits(0, 25)) {
        let found = DIRECTORY.lookup_digits(&text);
        if let Some(m) = found.issuer {
            prop_assert_eq!(m.pan_len, text.len());
            prop_assert!(m.bin_len < text.len());
            prop_assert!(found.network.is_domestic());
        }
    }
}
