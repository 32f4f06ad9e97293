//! What kind of card a PAN is: card type from the issuer's BIN table, network from the prefix.
//! Network decides domestic vs foreign totals in settlement (field 48).

use std::fmt;

use serde::Serialize;

/// The card type column of the CUP BIN table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardType {
    /// DC 借记卡.
    Debit,
    /// CC 贷记卡 (credit card).
    Credit,
    /// SCC 准贷记卡: a deposit card with a small overdraft, now rare.
    SemiCredit,
    /// PC 预付费卡.
    Prepaid,
}

impl CardType {
    pub const ALL: [CardType; 4] = [
        CardType::Debit,
        CardType::Credit,
        CardType::SemiCredit,
        CardType::Prepaid,
    ];

    /// From the table's code: DC, CC, SCC, PC.
    pub fn from_code(code: &str) -> Option<CardType> {
        match code {
            "DC" => Some(CardType::Debit),
            "CC" => Some(CardType::Credit),
            "SCC" => Some(CardType::SemiCredit),
            "PC" => Some(CardType::Prepaid),
            _ => None,
        }
    }

    pub const fn code(self) -> &'static str {
        match self {
            CardType::Debit => "DC",
            CardType::Credit => "CC",
            CardType::SemiCredit => "SCC",
            CardType::Prepaid => "PC",
        }
    }

    pub const fn name_zh(self) -> &'static str {
        match self {
            CardType::Debit => "借记卡",
            CardType::Credit => "贷记卡（信用卡）",
            CardType::SemiCredit => "准贷记卡",
            CardType::Prepaid => "预付费卡",
        }
    }

    pub const fn name_en(self) -> &'static str {
        match self {
            CardType::Debit => "debit card",
            CardType::Credit => "credit card",
            CardType::SemiCredit => "semi-credit card",
            CardType::Prepaid => "prepaid card",
        }
    }
}

impl fmt::Display for CardType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name_en())
    }
}

/// Which network a card belongs to, as far as the acquirer can tell.
///
/// A card found in the CUP BIN table is `DomesticCup` even when its prefix lies in another
/// network's range (e.g. CITIC's 356390 JCB co-brand): it is issued in China and its domestic
/// traffic is cleared through CUP, so it counts in the domestic settlement totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardNetwork {
    DomesticCup,
    Visa,
    Mastercard,
    Jcb,
    Amex,
    Other,
}

impl CardNetwork {
    /// The network from the leading digits alone, for cards the BIN table does not know.
    /// UnionPay's 62 range counts as domestic (an issuer missing from our table, not a foreign
    /// card). Non-digit input is `Other`.
    pub fn from_prefix(digits: &str) -> CardNetwork {
        let lead = |n: usize| {
            digits
                .get(..n)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
        };
        if lead(2) == Some(62) {
            return CardNetwork::DomesticCup;
        }
        if lead(1) == Some(4) {
            return CardNetwork::Visa;
        }
        if matches!(lead(2), Some(51..=55)) || matches!(lead(4), Some(2221..=2720)) {
            return CardNetwork::Mastercard;
        }
        if matches!(lead(2), Some(34 | 37)) {
            return CardNetwork::Amex;
        }
        if matches!(lead(4), Some(3528..=3589)) {
            return CardNetwork::Jcb;
        }
        CardNetwork::Other
    }

    pub const fn is_domestic(self) -> bool {
        matches!(self, CardNetwork::DomesticCup)
    }

    pub const fn name_zh(self) -> &'static str {
        match self {
            CardNetwork::DomesticCup => "银联（境内）",
            CardNetwork::Visa => "Visa（境外卡）",
            CardNetwork::Mastercard => "万事达（境外卡）",
            CardNetwork::Jcb => "JCB（境外卡）",
            CardNetwork::Amex => "美国运通（境外卡）",
            CardNetwork::Other => "未知卡组织",
        }
    }

    pub const fn name_en(self) -> &'static str {
        match self {
            CardNetwork::DomesticCup => "UnionPay (domestic)",
            CardNetwork::Visa => "Visa (foreign)",
            CardNetwork::Mastercard => "Mastercard (foreign)",
            CardNetwork::Jcb => "JCB (foreign)",
            CardNetwork::Amex => "American Express (foreign)",
            CardNetwork::Other => "unknown network",
        }
    }
}

impl fmt::Display for CardNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name_en())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_type_codes_round_trip() {
        for t in CardType::ALL {
            assert_eq!(CardType::from_code(t.code()), Some(t));
        }
        assert_eq!(CardType::from_code("dc"), None);
        assert_eq!(CardType::from_code(""), None);
    }

    #[test]
    fn network_ranges_and_their_edges() {
        use CardNetwork::*;
        let cases = [
            ("4111111111111111", Visa),
            ("5100000000000000", Mastercard),
            ("5599999999999999", Mastercard),
            ("5600000000000000", Other),
            ("5000000000000000", Other),
            ("2221000000000000", Mastercard),
            ("2720999999999999", Mastercard),
            ("2220999999999999", Other),
            ("2721000000000000", Other),
            ("3528000000000000", Jcb),
            ("3589999999999999", Jcb),
            ("3527999999999999", Other),
            ("3590000000000000", Other),
            ("340000000000000", Amex),
            ("370000000000000", Amex),
            ("350000000000000", Other),
            ("6200000000000000", DomesticCup),
            ("6011000000000000", Other),
            ("", Other),
            ("x4", Other),
            ("+4111111111111111", Other),
        ];
        for (digits, network) in cases {
            assert_eq!(CardNetwork::from_prefix(digits), network, "{digits}");
        }
        assert!(DomesticCup.is_domestic());
        assert!(!Visa.is_domestic());
    }
}
