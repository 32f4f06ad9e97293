//! The primary account number: 13–19 digits, Luhn-checked, zeroised on drop.
//! Owns the masking rule (first 6, last 4) every log, page and API answer must use.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const PAN_LEN_MIN: usize = 13;
pub const PAN_LEN_MAX: usize = 19;
/// Digits that may be shown in clear at the start (the BIN) and at the end of a masked PAN.
const MASK_KEEP_FIRST: usize = 6;
const MASK_KEEP_LAST: usize = 4;
/// The longest issuer prefix [`Pan::bin`] hands out (the CUP BIN table has 10-digit rows).
pub const BIN_LEN_MAX: usize = 10;
/// Digits a prefix ([`Pan::bin`]) leaves hidden between it and the last four, at least: with
/// the check digit the rest may be narrowed to a tenth, never to one.
pub const BIN_HIDDEN_MIN: usize = 3;

/// A card number. Parsing checks length, digits and the Luhn check digit; `Display` and `Debug`
/// print it masked (`622202******0123`); the clear digits leave only through
/// [`Pan::expose_digits`], a name meant to stand out in review.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct Pan {
    digits: [u8; PAN_LEN_MAX],
    len: u8,
}

/// Why a text is not a PAN. Never carries the digits themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("card number must be {PAN_LEN_MIN} to {PAN_LEN_MAX} digits, got {len}")]
    Length { len: usize },
    #[error("card number has a character that is not a digit at position {position}")]
    NotDigit { position: usize },
    #[error("card number fails the Luhn check (mistyped or misread)")]
    Luhn,
}

impl Pan {
    /// Parse ASCII digits, e.g. field 2 after BCD decoding or track 2 left of '='.
    pub fn from_ascii(text: &[u8]) -> Result<Pan, PanError> {
        let pan = Pan::from_ascii_unchecked_luhn(text)?;
        if luhn_valid(pan.expose_bytes()) {
            Ok(pan)
        } else {
            Err(PanError::Luhn)
        }
    }

    /// Length and digits only. Private: a `Pan` in the wild has always passed Luhn.
    fn from_ascii_unchecked_luhn(text: &[u8]) -> Result<Pan, PanError> {
        if let Some(position) = text.iter().position(|b| !b.is_ascii_digit()) {
            return Err(PanError::NotDigit { position });
        }
        if !(PAN_LEN_MIN..=PAN_LEN_MAX).contains(&text.len()) {
            return Err(PanError::Length { len: text.len() });
        }
        let mut digits = [0u8; PAN_LEN_MAX];
        for (slot, &byte) in digits.iter_mut().zip(text) {
            *slot = byte;
        }
        let len = u8::try_from(text.len()).map_err(|_| PanError::Length { len: text.len() })?;
        Ok(Pan { digits, len })
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false (a PAN has at least 13 digits); here because clippy pairs it with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The clear digits. Every call site is a place a full PAN can leak: keep them few and
    /// never pass the result to a log, a page, an API answer or the database.
    pub fn expose_digits(&self) -> &str {
        std::str::from_utf8(self.expose_bytes()).unwrap_or_default()
    }

    fn expose_bytes(&self) -> &[u8] {
        self.digits.get(..self.len()).unwrap_or_default()
    }

    /// The last four digits, shown on receipts and used to confirm a card with its holder.
    pub fn last4(&self) -> &str {
        let digits = self.expose_digits();
        digits
            .get(digits.len().saturating_sub(MASK_KEEP_LAST)..)
            .unwrap_or_default()
    }

    /// The first `n` digits, the issuer prefix. `None` for `n` = 0, `n` > [`BIN_LEN_MAX`], or a
    /// prefix that leaves fewer than [`BIN_HIDDEN_MIN`] digits between it and the last four:
    /// prefix and last 4 together must not rebuild the PAN, and with one digit hidden the
    /// check digit (among the last four) gives it away.
    pub fn bin(&self, n: usize) -> Option<&str> {
        if n == 0 || n > BIN_LEN_MAX || n + MASK_KEEP_LAST + BIN_HIDDEN_MIN > self.len() {
            return None;
        }
        self.expose_digits().get(..n)
    }

    /// The masked form, the only form of a PAN that may be stored in clear or shown.
    pub fn masked(&self) -> MaskedPan {
        MaskedPan::from_digits(self.expose_bytes())
    }
}

impl FromStr for Pan {
    type Err = PanError;

    fn from_str(text: &str) -> Result<Pan, PanError> {
        Pan::from_ascii(text.as_bytes())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.masked().as_str())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked().as_str())
    }
}

/// A masked card number, `622202******0123`: safe to print, log, store and serialise.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MaskedPan(String);

impl MaskedPan {
    /// Mask text that may or may not be a card number (e.g. what an operator typed). A run of
    /// 13–19 digits keeps its first 6 and last 4; anything else is masked entirely, because
    /// text we cannot parse might still be a card number.
    pub fn of_untrusted(text: &str) -> MaskedPan {
        let bytes = text.as_bytes();
        if (PAN_LEN_MIN..=PAN_LEN_MAX).contains(&bytes.len())
            && bytes.iter().all(u8::is_ascii_digit)
        {
            MaskedPan::from_digits(bytes)
        } else {
            MaskedPan("*".repeat(text.chars().count()))
        }
    }

    fn from_digits(digits: &[u8]) -> MaskedPan {
        let keep_last_from = digits.len().saturating_sub(MASK_KEEP_LAST);
        let masked = digits
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i < MASK_KEEP_FIRST || i >= keep_last_from {
                    char::from(d)
                } else {
                    '*'
                }
            })
            .collect();
        MaskedPan(masked)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskedPan({})", self.0)
    }
}

/// Free text (a case note, a message to the acquirer) with every card number in it masked:
/// a run of 13–19 digits that passes Luhn, written whole or in groups split by up to three
/// spaces, hyphens, dots, slashes, underscores, stars, tabs or line breaks, keeps its first 6 and
/// last 4 digits. Full-width digits, the ideographic space and the full-width hyphen, dot and
/// slash count too (Chinese input methods type them). People paste card numbers into notes,
/// and a note goes to pages, webhooks and the audit log. Unchanged text is borrowed.
pub fn mask_card_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    // The ASCII digit a character stands for.
    fn digit(c: char) -> Option<u8> {
        match c {
            '0'..='9' => u8::try_from(c).ok(),
            '０'..='９' => u8::try_from(u32::from(c) - u32::from('０') + u32::from('0')).ok(),
            _ => None,
        }
    }
    fn separator(c: char) -> bool {
        matches!(
            c,
            ' ' | '-'
                | '.'
                | '/'
                | '_'
                | '\t'
                | '\n'
                | '\r'
                | '\u{3000}'
                | '\u{00A0}'
                | '－'
                | '．'
                | '／'
                | '*'
        )
    }
    let mut chars: Vec<char> = text.chars().collect();
    // Masked until nothing more is: a pass can split a group of digits where it masks, and the
    // digits it keeps may then make a card number with their neighbours by chance. Each pass
    // only adds stars, so this ends; masking a masked text again changes nothing.
    let mut masked_any = false;
    while mask_pass(&mut chars, digit, separator) {
        masked_any = true;
    }
    if !masked_any {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(chars.into_iter().collect())
}

/// The most characters `counts` holds for in a row in `text`, characters `joins` holds for
/// between them not breaking the run (`0123 4567`, `6222-0202`): how long a number typed in
/// groups is, whatever stands around it.
pub fn longest_run(
    text: &str,
    counts: impl Fn(char) -> bool,
    joins: impl Fn(char) -> bool,
) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if counts(c) {
            run += 1;
            longest = longest.max(run);
        } else if !joins(c) {
            run = 0;
        }
    }
    longest
}

/// One pass of [`mask_card_numbers`] over `chars`: whether it masked anything.
///
/// Groups are runs of digits; a chain is groups joined by up to three separators. Every run of
/// whole groups within a chain that makes a card number (13–19 digits, Luhn) has its middle
/// digits masked, whichever other run they belong to: an RRN or a date before a card number
/// may make a card number with its first groups by chance, and taking that one alone would
/// leave the real one in the clear. Masking too much is allowed; showing a card number is
/// not.
fn mask_pass(
    chars: &mut [char],
    digit: fn(char) -> Option<u8>,
    separator: fn(char) -> bool,
) -> bool {
    // Separators in a row between two groups of digits, at most ("6222 - 0202").
    const SEPARATORS_MAX: usize = 3;
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        if chars.get(k).copied().and_then(digit).is_some() {
            let start = k;
            while chars.get(k).copied().and_then(digit).is_some() {
                k += 1;
            }
            groups.push((start, k));
        } else {
            k += 1;
        }
    }
    let joined = |(_, end): (usize, usize), (start, _): (usize, usize)| {
        start - end <= SEPARATORS_MAX
            && chars
                .get(end..start)
                .is_some_and(|gap| gap.iter().all(|c| separator(*c)))
    };
    let mut hide: Vec<usize> = Vec::new();
    let mut chain_start = 0;
    for g in 0..groups.len() {
        let ends_chain = match (groups.get(g), groups.get(g + 1)) {
            (Some(&this), Some(&next)) => !joined(this, next),
            _ => true,
        };
        if !ends_chain {
            continue;
        }
        let chain = groups.get(chain_start..=g).unwrap_or_default();
        chain_start = g + 1;
        for first in 0..chain.len() {
            let mut digits: Vec<u8> = Vec::with_capacity(PAN_LEN_MAX + 1);
            let mut at: Vec<usize> = Vec::with_capacity(PAN_LEN_MAX + 1);
            for &(start, end) in chain.get(first..).unwrap_or_default() {
                for (n, c) in chars.get(start..end).unwrap_or_default().iter().enumerate() {
                    digits.extend(digit(*c));
                    at.push(start + n);
                }
                if at.len() > PAN_LEN_MAX {
                    break;
                }
                if at.len() >= PAN_LEN_MIN && luhn_valid(&digits) {
                    let count = at.len();
                    hide.extend(at.iter().enumerate().filter_map(|(seen, &pos)| {
                        (seen >= MASK_KEEP_FIRST && seen + MASK_KEEP_LAST < count).then_some(pos)
                    }));
                }
            }
        }
    }
    for pos in &hide {
        if let Some(c) = chars.get_mut(*pos) {
            *c = '*';
        }
    }
    !hide.is_empty()
}

/// Luhn (mod 10) over ASCII digits, check digit last. False for empty input or a non-digit.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum: u32 = 0;
    for (i, &byte) in digits.iter().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return false;
        }
        sum += luhn_term(byte - b'0', i % 2 == 1);
    }
    sum.is_multiple_of(10)
}

/// The Luhn check digit (ASCII) to append to `payload`; `None` if `payload` has a non-digit.
/// For simulators and tests that need to make valid card numbers.
pub fn luhn_check_digit(payload: &[u8]) -> Option<u8> {
    let mut sum: u32 = 0;
    for (i, &byte) in payload.iter().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return None;
        }
        // Once the check digit is appended, the payload's last digit sits in a doubled position.
        sum += luhn_term(byte - b'0', i % 2 == 0);
    }
    let check = (10 - sum % 10) % 10;
    u8::try_from(check).ok().map(|c| b'0' + c)
}

fn luhn_term(digit: u8, doubled: bool) -> u32 {
    let d = u32::from(digit);
    if doubled {
        let twice = d * 2;
        if twice > 9 { twice - 9 } else { twice }
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real-format ICBC debit number (BIN 622202) with a valid check digit; not a live card.
    const ICBC: &str = "6222020200112345679";

    /// A run is counted through the characters that join it, and broken by any other.
    #[test]
    fn a_run_goes_through_its_joins_only() {
        let digits = |c: char| c.is_ascii_digit();
        let spaces = |c: char| c == ' ';
        assert_eq!(longest_run("ab 1234 5678 x 12", digits, spaces), 8);
        assert_eq!(longest_run("1234-5678", digits, spaces), 4);
        assert_eq!(longest_run("", digits, spaces), 0);
    }

    #[test]
    fn card_numbers_in_free_text_are_masked_whole_or_grouped() {
        let masked = "622202*********5679";
        assert_eq!(
            mask_card_numbers(&format!("card {ICBC} was charged twice")),
            format!("card {masked} was charged twice")
        );
        assert_eq!(
            mask_card_numbers("卡号6222 0202 0011 2345 679，请退款"),
            "卡号6222 02** **** ***5 679，请退款"
        );
        assert_eq!(
            mask_card_numbers(&format!("{ICBC}-{ICBC}")),
            format!("{masked}-{masked}")
        );
        // Typed with a Chinese input method: full-width digits, ideographic spaces.
        assert_eq!(
            mask_card_numbers("卡号６２２２０２　０２００　１１２３　４５６７９"),
            "卡号６２２２０２　****　****　*５６７９"
        );
        // Other ways people group it: dots, slashes, a tab, a line break, spaced hyphens.
        for (typed, shown) in [
            ("6222.0202.0011.2345.679", "6222.02**.****.***5.679"),
            ("6222/0202/0011/2345/679", "6222/02**/****/***5/679"),
            ("6222\t0202 0011\n2345  679", "6222\t02** ****\n***5  679"),
            (
                "6222 - 0202 - 0011 - 2345 - 679",
                "6222 - 02** - **** - ***5 - 679",
            ),
        ] {
            assert_eq!(mask_card_numbers(typed), shown, "{typed:?}");
        }
        // A number next to the card stays, and so does the card's masking.
        assert_eq!(
            mask_card_numbers(&format!("{ICBC} 12 items")),
            format!("{masked} 12 items")
        );
        // A number before a grouped card number that makes a card number with its first
        // groups by chance (an RRN, a date, a count): the card number is masked all the same.
        for (typed, shown) in [
            (
                "RRN 100000000007 6222 0202 0011 2347",
                "RRN 100000****** 6222 02** **** 2347",
            ),
            (
                "2024-05-08 6222 0202 0011 2347",
                "2024-05-** **** 02** **** 2347",
            ),
            ("退款 2 6222 0202 0011 2347", "退款 2 6222 0*** **** 2347"),
            // Stars around it (Markdown's bold, a footnote): still a card number.
            ("**6222020200112347**", "**622202******2347**"),
            ("*6222020200112347", "*622202******2347"),
            ("6222020200112347*2", "622202******2347*2"),
            // Or between its groups.
            ("6222*0202*0011*2347", "6222*02********2347"),
        ] {
            assert_eq!(mask_card_numbers(typed), shown, "{typed:?}");
        }
        // Not card numbers: an RRN (12 digits), a 16-digit order number failing Luhn, a
        // longer run; text without any is borrowed as it is.
        for kept in [
            "RRN 000000000001",
            "order 1234567812345678",
            "12345678901234567890123",
        ] {
            assert!(matches!(
                mask_card_numbers(kept),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    proptest::proptest! {
        #[test]
        fn a_card_number_among_any_text_is_never_shown_whole(
            before in "[0-9 *a./-]{0,24}[ *a]",
            after in "[ *a][0-9 *a./-]{0,24}",
        ) {
            let card = "6222020200112347";
            let masked = mask_card_numbers(&format!("{before}{card}{after}")).into_owned();
            proptest::prop_assert!(!masked.contains(card), "{masked}");
        }

        #[test]
        fn masking_is_idempotent_and_keeps_the_length(text in "[0-9０-９ a　./\t*-]{0,80}") {
            let once = mask_card_numbers(&text).into_owned();
            proptest::prop_assert_eq!(mask_card_numbers(&once).into_owned(), once.clone());
            proptest::prop_assert_eq!(once.chars().count(), text.chars().count());
        }
    }

    #[test]
    fn parses_and_masks() {
        let pan: Pan = ICBC.parse().unwrap();
        assert_eq!(pan.len(), 19);
        assert_eq!(pan.to_string(), "622202*********5679");
        assert_eq!(format!("{pan:?}"), "Pan(622202*********5679)");
        assert_eq!(format!("{pan:#?}"), "Pan(622202*********5679)");
        assert_eq!(pan.last4(), "5679");
        assert_eq!(pan.bin(6), Some("622202"));
        assert_eq!(pan.bin(0), None);
        assert_eq!(pan.bin(11), None);
        assert_eq!(pan.expose_digits(), ICBC);
        // Thirteen digits: a prefix of six hides three, of seven only two, which the check
        // digit among the last four narrows too far.
        let short: Pan = "4222222222222".parse().unwrap();
        assert_eq!(short.bin(6), Some("422222"));
        assert_eq!(short.bin(7), None);
    }

    #[test]
    fn sixteen_digit_mask_matches_the_house_example() {
        let mut payload = b"622202000000012".to_vec();
        payload.push(luhn_check_digit(&payload).unwrap());
        let pan = Pan::from_ascii(&payload).unwrap();
        assert_eq!(pan.masked().as_str().len(), 16);
        assert!(pan.to_string().starts_with("622202******"));
    }

    #[test]
    fn errors_do_not_carry_digits() {
        assert_eq!("6222020200112345678".parse::<Pan>(), Err(PanError::Luhn));
        assert_eq!(
            "622202020011".parse::<Pan>(),
            Err(PanError::Length { len: 12 })
        );
        assert_eq!(
            "62220202001123456780".parse::<Pan>(),
            Err(PanError::Length { len: 20 })
        );
        assert_eq!(
            "6222 0202 0011 2345".parse::<Pan>(),
            Err(PanError::NotDigit { position: 4 })
        );
        assert_eq!("".parse::<Pan>(), Err(PanError::Length { len: 0 }));
        let message = PanError::Luhn.to_string();
        assert!(!message.contains("6222"));
    }

    #[test]
    fn known_luhn_answers() {
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert_eq!(luhn_check_digit(b"7992739871"), Some(b'3'));
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"41x1"));
        assert_eq!(luhn_check_digit(b"41x"), None);
    }

    #[test]
    fn untrusted_text_is_masked_whole_unless_it_looks_like_a_pan() {
        assert_eq!(
            MaskedPan::of_untrusted("6222020200112345678").as_str(),
            "622202*********5678"
        );
        assert_eq!(MaskedPan::of_untrusted("6222-0202").as_str(), "*********");
        assert_eq!(MaskedPan::of_untrusted("").as_str(), "");
    }

    #[test]
    fn zeroize_clears_the_digits() {
        let mut pan: Pan = ICBC.parse().unwrap();
        pan.zeroize();
        assert_eq!(pan.expose_digits(), "");
        assert_eq!(pan.digits, [0u8; PAN_LEN_MAX]);
    }

    #[test]
    fn masked_pan_serialises_masked() {
        let pan: Pan = ICBC.parse().unwrap();
        let json = serde_json::to_string(&pan.masked()).unwrap();
        assert_eq!(json, "\"622202*********5679\"");
    }
}
