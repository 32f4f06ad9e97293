//! The rules file and its compiled form. The file is JSON (serde_json is already a dependency of
//! the workspace; a TOML parser would be one more crate to build for a file an operator console
//! writes as often as a person does). Rules are compiled once into [`RuleSet`]s: thresholds in
//! fen and milliseconds, card types as a bit mask, one small enum per rule, so evaluation is a
//! walk over a short slice with no parsing, allocation or string comparison.
//!
//! ```json
//! { "default": [ { "id": "testing", "kind": "card-testing", "action": "decline",
//!                  "window_s": 600, "small_fen": 1000, "declines_max": 5 } ],
//!   "merchants": { "898110048990001": [ { "id": "cards", "kind": "card-types",
//!                                         "accept": ["domestic-debit", "domestic-credit"] } ] } }
//! ```
//! A merchant's rules are added to the default ones; a merchant rule with the id of a default
//! rule replaces it.

use std::collections::HashMap;
use std::sync::Arc;

use domain::{CardLookup, CardNetwork, CardType, FailureKind};
use serde::Deserialize;

use crate::engine::EVENTS_PER_KEY_MAX;

/// Rules one merchant may have (defaults included): evaluation walks them all.
pub const RULES_PER_MERCHANT_MAX: usize = 256;
/// Merchants with their own rules in one file.
pub const MERCHANT_RULE_SETS_MAX: usize = 100_000;
/// Longest window a rule may look back over: state is kept this long at most.
pub const WINDOW_MS_MAX: i64 = 24 * 3_600_000;
/// Longest rule id; ids appear in diagnoses and alerts.
pub const RULE_ID_LEN_MAX: usize = 64;
/// Largest rules file accepted.
pub const RULES_FILE_LEN_MAX: usize = 16 * 1024 * 1024;

/// What a rule does when it fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Refuse the request with the rule's response code.
    #[default]
    Decline,
    /// Let it through and raise an alert for an operator.
    Alert,
}

/// The card classes a merchant may accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardClass {
    /// Domestic debit and prepaid cards (and domestic cards the BIN table does not know).
    DomesticDebit,
    /// Domestic credit and semi-credit cards.
    DomesticCredit,
    /// Cards of foreign networks (Visa, Mastercard, JCB, Amex, ...).
    Foreign,
}

impl CardClass {
    /// The class of a card from its issuer directory lookup.
    pub fn of(lookup: &CardLookup<'_>) -> CardClass {
        match (&lookup.issuer, lookup.network) {
            (Some(issuer), _) => match issuer.card_type {
                CardType::Credit | CardType::SemiCredit => CardClass::DomesticCredit,
                CardType::Debit | CardType::Prepaid => CardClass::DomesticDebit,
            },
            (None, CardNetwork::DomesticCup) => CardClass::DomesticDebit,
            (None, _) => CardClass::Foreign,
        }
    }

    pub const fn bit(self) -> u8 {
        match self {
            CardClass::DomesticDebit => 1,
            CardClass::DomesticCredit => 2,
            CardClass::Foreign => 4,
        }
    }

    pub const fn key(self) -> &'static str {
        match self {
            CardClass::DomesticDebit => "domestic-debit",
            CardClass::DomesticCredit => "domestic-credit",
            CardClass::Foreign => "foreign",
        }
    }

    /// The class in Chinese, as an operator would name it.
    pub const fn zh(self) -> &'static str {
        match self {
            CardClass::DomesticDebit => "境内借记卡",
            CardClass::DomesticCredit => "境内信用卡",
            CardClass::Foreign => "境外卡",
        }
    }
}

/// A rule as written in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum RuleSpec {
    CardTypes {
        id: String,
        #[serde(default)]
        action: Action,
        accept: Vec<CardClass>,
    },
    AmountMax {
        id: String,
        #[serde(default)]
        action: Action,
        max_fen: i64,
    },
    DailyAmountMax {
        id: String,
        #[serde(default)]
        action: Action,
        max_fen: i64,
    },
    CardVelocity {
        id: String,
        #[serde(default)]
        action: Action,
        window_s: i64,
        attempts_max: u32,
        declines_max: u32,
    },
    CardTesting {
        id: String,
        #[serde(default)]
        action: Action,
        window_s: i64,
        small_fen: i64,
        declines_max: u32,
    },
    WrongPins {
        id: String,
        #[serde(default)]
        action: Action,
        window_s: i64,
        cards_max: u32,
    },
    PeerChange {
        id: String,
        #[serde(default = "alert")]
        action: Action,
        /// Leading bits of the IPv4 address that must stay the same (24: the /24 network).
        #[serde(default = "prefix_bits")]
        prefix_bits: u8,
    },
    MccProfile {
        id: String,
        #[serde(default = "alert")]
        action: Action,
        /// Overrides the category's typical largest ticket.
        ticket_max_fen: Option<i64>,
    },
}

fn alert() -> Action {
    Action::Alert
}

fn prefix_bits() -> u8 {
    24
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    default: Vec<RuleSpec>,
    #[serde(default, deserialize_with = "merchants_once_each")]
    merchants: HashMap<String, Vec<RuleSpec>>,
}

/// The merchants' rule lists, each merchant named once: a JSON object may repeat a key, and
/// the last list would silently replace the first (a daily limit dropped by a later list of
/// card types for the same MID).
fn merchants_once_each<'de, D>(deserializer: D) -> Result<HashMap<String, Vec<RuleSpec>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Once;
    impl<'de> serde::de::Visitor<'de> for Once {
        type Value = HashMap<String, Vec<RuleSpec>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of merchant IDs and their rules")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut merchants = HashMap::new();
            while let Some((mid, rules)) = map.next_entry::<String, Vec<RuleSpec>>()? {
                // A merchant ID as provisioning takes one (15 digits or capital letters): one
                // mistyped (a digit short, a space after it) would match no merchant, and its
                // merchant would go on under the default rules with nothing said.
                if !domain::is_code(&mid, 15) {
                    return Err(serde::de::Error::custom(format!(
                        "{mid:?} is not a merchant ID (15 digits or capital letters)"
                    )));
                }
                if merchants.contains_key(&mid) {
                    return Err(serde::de::Error::custom(format!(
                        "merchant {mid} is listed twice"
                    )));
                }
                merchants.insert(mid, rules);
            }
            Ok(merchants)
        }
    }
    deserializer.deserialize_map(Once)
}

/// What a rule looks at, with its thresholds in the units evaluation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    CardTypes {
        accepted: u8,
    },
    AmountMax {
        max_fen: i64,
    },
    DailyAmountMax {
        max_fen: i64,
    },
    CardVelocity {
        window_ms: i64,
        attempts_max: u32,
        declines_max: u32,
    },
    CardTesting {
        window_ms: i64,
        small_fen: i64,
        declines_max: u32,
    },
    WrongPins {
        window_ms: i64,
        cards_max: u32,
    },
    PeerChange {
        prefix_bits: u8,
    },
    MccProfile {
        ticket_max_fen: Option<i64>,
    },
}

impl RuleKind {
    /// The kind as the file spells it; alerts record it.
    pub const fn key(&self) -> &'static str {
        match self {
            RuleKind::CardTypes { .. } => "card-types",
            RuleKind::AmountMax { .. } => "amount-max",
            RuleKind::DailyAmountMax { .. } => "daily-amount-max",
            RuleKind::CardVelocity { .. } => "card-velocity",
            RuleKind::CardTesting { .. } => "card-testing",
            RuleKind::WrongPins { .. } => "wrong-pins",
            RuleKind::PeerChange { .. } => "peer-change",
            RuleKind::MccProfile { .. } => "mcc-profile",
        }
    }

    /// Field 39 when the rule declines (PROTOCOL.md): 58 for a card this merchant does not take
    /// (a configuration of the acquirer's, so not 57, which would send the cardholder to the
    /// issuer for nothing), 61 for amount limits, 65 for frequency, 59 for suspected fraud.
    pub const fn response_code(&self) -> [u8; 2] {
        match self {
            RuleKind::CardTypes { .. } => *b"58",
            RuleKind::AmountMax { .. } | RuleKind::DailyAmountMax { .. } => *b"61",
            RuleKind::CardVelocity { .. } => *b"65",
            RuleKind::CardTesting { .. }
            | RuleKind::WrongPins { .. }
            | RuleKind::PeerChange { .. }
            | RuleKind::MccProfile { .. } => *b"59",
        }
    }

    /// The diagnosis knowledge base entry explaining a decline by this rule.
    pub const fn diagnosis(&self) -> FailureKind {
        match self {
            RuleKind::CardTypes { .. } => FailureKind::CardNotAccepted,
            RuleKind::AmountMax { .. } | RuleKind::DailyAmountMax { .. } => {
                FailureKind::MerchantLimit
            }
            RuleKind::CardVelocity { .. } => FailureKind::CardVelocity,
            RuleKind::CardTesting { .. } => FailureKind::CardTesting,
            RuleKind::WrongPins { .. } => FailureKind::RepeatedWrongPin,
            RuleKind::PeerChange { .. } | RuleKind::MccProfile { .. } => {
                FailureKind::UnusualMerchantPattern
            }
        }
    }

    fn window_ms(&self) -> i64 {
        match self {
            RuleKind::CardVelocity { window_ms, .. }
            | RuleKind::CardTesting { window_ms, .. }
            | RuleKind::WrongPins { window_ms, .. } => *window_ms,
            _ => 0,
        }
    }
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: Arc<str>,
    pub action: Action,
    pub kind: RuleKind,
}

/// A merchant's compiled rules, in file order (defaults first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// Every merchant's rules, compiled.
#[derive(Clone, Debug, Default)]
pub struct RuleBook {
    default: Arc<RuleSet>,
    merchants: HashMap<String, Arc<RuleSet>>,
    /// The longest window of any rule: how long per-card and per-terminal history is kept.
    horizon_ms: i64,
}

/// Why a rules file was refused; it names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("rules file is not valid: {0}")]
    Syntax(String),
    #[error("rules file is larger than {RULES_FILE_LEN_MAX} bytes")]
    TooLarge,
    #[error("rule {id:?}: {problem}")]
    Rule { id: String, problem: &'static str },
    #[error("merchant {mid}: more than {RULES_PER_MERCHANT_MAX} rules")]
    TooManyRules { mid: String },
    #[error("more than {MERCHANT_RULE_SETS_MAX} merchants with their own rules")]
    TooManyMerchants,
}

impl RuleBook {
    /// No rules at all: only the merchant checks of the switch apply.
    pub fn empty() -> RuleBook {
        RuleBook::default()
    }

    /// Parses and compiles a rules file.
    pub fn from_json(text: &str) -> Result<RuleBook, RulesError> {
        if text.len() > RULES_FILE_LEN_MAX {
            return Err(RulesError::TooLarge);
        }
        let file: RulesFile =
            serde_json::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        if file.merchants.len() > MERCHANT_RULE_SETS_MAX {
            return Err(RulesError::TooManyMerchants);
        }
        let default = compile_list(&file.default)?;
        if default.len() > RULES_PER_MERCHANT_MAX {
            return Err(RulesError::TooManyRules {
                mid: "default".to_owned(),
            });
        }
        let mut horizon_ms = horizon(&default);
        let mut merchants = HashMap::with_capacity(file.merchants.len());
        for (mid, specs) in &file.merchants {
            let own = compile_list(specs)?;
            let mut rules: Vec<Rule> = default
                .iter()
                .filter(|d| !own.iter().any(|o| o.id == d.id))
                .cloned()
                .collect();
            rules.extend(own);
            if rules.len() > RULES_PER_MERCHANT_MAX {
                return Err(RulesError::TooManyRules { mid: mid.clone() });
            }
            horizon_ms = horizon_ms.max(horizon(&rules));
            merchants.insert(mid.clone(), Arc::new(RuleSet { rules }));
        }
        Ok(RuleBook {
            default: Arc::new(RuleSet { rules: default }),
            merchants,
            horizon_ms,
        })
    }

    /// The merchants with rules of their own.
    pub fn merchant_ids(&self) -> impl Iterator<Item = &str> {
        self.merchants.keys().map(String::as_str)
    }

    /// The rules a merchant's requests are evaluated against.
    pub fn for_merchant(&self, mid: &str) -> &RuleSet {
        self.merchants.get(mid).unwrap_or(&self.default)
    }

    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    /// Whether any merchant has any rule (the switch skips the engine otherwise).
    pub fn is_empty(&self) -> bool {
        self.default.rules.is_empty() && self.merchants.values().all(|s| s.rules.is_empty())
    }
}

fn horizon(rules: &[Rule]) -> i64 {
    rules.iter().map(|r| r.kind.window_ms()).max().unwrap_or(0)
}

fn compile_list(specs: &[RuleSpec]) -> Result<Vec<Rule>, RulesError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(specs.len());
    for spec in specs {
        let rule = compile(spec)?;
        if rules.iter().any(|r| r.id == rule.id) {
            return Err(RulesError::Rule {
                id: rule.id.to_string(),
                problem: "id used twice",
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn window(id: &str, window_s: i64) -> Result<i64, RulesError> {
    let ms = window_s.checked_mul(1_000).unwrap_or(i64::MAX);
    if ms <= 0 || ms > WINDOW_MS_MAX {
        return Err(RulesError::Rule {
            id: id.to_owned(),
            problem: "window_s must be 1 s to 24 h",
        });
    }
    Ok(ms)
}

fn count(id: &str, n: u32) -> Result<u32, RulesError> {
    // Windows keep at most EVENTS_PER_KEY_MAX events per card or terminal, so a threshold
    // above that could never be reached.
    if n == 0 || usize::try_from(n).map_or(true, |n| n >= EVENTS_PER_KEY_MAX) {
        return Err(RulesError::Rule {
            id: id.to_owned(),
            problem: "counts must be 1 to EVENTS_PER_KEY_MAX - 1",
        });
    }
    Ok(n)
}

fn fen(id: &str, fen: i64) -> Result<i64, RulesError> {
    if fen <= 0 {
        return Err(RulesError::Rule {
            id: id.to_owned(),
            problem: "amounts must be positive fen",
        });
    }
    Ok(fen)
}

fn compile(spec: &RuleSpec) -> Result<Rule, RulesError> {
    let (id, action, kind) = match spec {
        RuleSpec::CardTypes { id, action, accept } => {
            // No class at all would refuse every sale of the merchants it covers (58): a
            // mistake, not a rule.
            if accept.is_empty() {
                return Err(RulesError::Rule {
                    id: id.clone(),
                    problem: "accept names no card class: every sale would be refused",
                });
            }
            let accepted = accept.iter().fold(0, |mask, class| mask | class.bit());
            (id, *action, RuleKind::CardTypes { accepted })
        }
        RuleSpec::AmountMax {
            id,
            action,
            max_fen,
        } => (
            id,
            *action,
            RuleKind::AmountMax {
                max_fen: fen(id, *max_fen)?,
            },
        ),
        RuleSpec::DailyAmountMax {
            id,
            action,
            max_fen,
        } => (
            id,
            *action,
            RuleKind::DailyAmountMax {
                max_fen: fen(id, *max_fen)?,
            },
        ),
        RuleSpec::CardVelocity {
            id,
            action,
            window_s,
            attempts_max,
            declines_max,
        } => (
            id,
            *action,
            RuleKind::CardVelocity {
                window_ms: window(id, *window_s)?,
                attempts_max: count(id, *attempts_max)?,
                declines_max: count(id, *declines_max)?,
            },
        ),
        RuleSpec::CardTesting {
            id,
            action,
            window_s,
            small_fen,
            declines_max,
        } => (
            id,
            *action,
            RuleKind::CardTesting {
                window_ms: window(id, *window_s)?,
                small_fen: fen(id, *small_fen)?,
                declines_max: count(id, *declines_max)?,
            },
        ),
        RuleSpec::WrongPins {
            id,
            action,
            window_s,
            cards_max,
        } => (
            id,
            *action,
            RuleKind::WrongPins {
                window_ms: window(id, *window_s)?,
                cards_max: count(id, *cards_max)?,
            },
        ),
        RuleSpec::PeerChange {
            id,
            action,
            prefix_bits,
        } => {
            if !(8..=32).contains(prefix_bits) {
                return Err(RulesError::Rule {
                    id: id.clone(),
                    problem: "prefix_bits must be 8 to 32",
                });
            }
            (
                id,
                *action,
                RuleKind::PeerChange {
                    prefix_bits: *prefix_bits,
                },
            )
        }
        RuleSpec::MccProfile {
            id,
            action,
            ticket_max_fen,
        } => (
            id,
            *action,
            RuleKind::MccProfile {
                ticket_max_fen: match ticket_max_fen {
                    Some(t) => Some(fen(id, *t)?),
                    None => None,
                },
            },
        ),
    };
    if id.is_empty() || id.len() > RULE_ID_LEN_MAX {
        return Err(RulesError::Rule {
            id: id.clone(),
            problem: "id must be 1 to 64 characters",
        });
    }
    Ok(Rule {
        id: Arc::from(id.as_str()),
        action,
        kind,
    })
}

/// The largest single ticket that is ordinary for a merchant category, in fen; `None` for
/// categories without a typical profile. A sale far above it at a registered noodle shop is
/// the pattern of a terminal being used for another, dearer business (merchant-code jumping).
pub fn mcc_ticket_max_fen(mcc: &str) -> Option<i64> {
    let yuan: i64 = match mcc {
        // Taxis, parking, newsstands.
        "4121" | "7523" | "5994" => 1_000,
        // Groceries, convenience stores, bakeries, fuel.
        "5411" | "5499" | "5462" | "5541" => 5_000,
        // Restaurants, fast food, bars.
        "5812" | "5813" | "5814" => 10_000,
        // Clothing, pharmacies, book shops.
        "5651" | "5691" | "5912" | "5942" => 20_000,
        // Hotels, department stores.
        "7011" | "5311" => 100_000,
        // Electronics, furniture.
        "5732" | "5722" | "5712" => 200_000,
        _ => return None,
    };
    Some(yuan * 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_rules_add_to_and_replace_defaults() {
        let book = RuleBook::from_json(
            r#"{
              "default": [
                {"id": "big", "kind": "amount-max", "max_fen": 100000},
                {"id": "testing", "kind": "card-testing", "window_s": 600, "small_fen": 1000,
                 "declines_max": 5}
              ],
              "merchants": {
                "898110048990001": [
                  {"id": "big", "kind": "amount-max", "max_fen": 500, "action": "alert"},
                  {"id": "cards", "kind": "card-types", "accept": ["domestic-debit"]}
                ]
              }
            }"#,
        )
        .unwrap();
        let other = book.for_merchant("898110048990002");
        assert_eq!(other.rules.len(), 2);
        let m1 = book.for_merchant("898110048990001");
        assert_eq!(m1.rules.len(), 3);
        let big = m1.rules.iter().find(|r| &*r.id == "big").unwrap();
        assert_eq!(big.kind, RuleKind::AmountMax { max_fen: 500 });
        assert_eq!(big.action, Action::Alert);
        assert_eq!(book.horizon_ms(), 600_000);
        assert!(!book.is_empty());
        assert!(RuleBook::empty().is_empty());
    }

    /// A merchant ID a digit short, or with a space after it, matches no merchant: the file is
    /// refused, rather than that merchant going on under the default rules unsaid.
    #[test]
    fn a_mistyped_merchant_id_is_refused() {
        for mid in [
            "89811004899001",
            "898110048990001 ",
            " 898110048990001",
            "8981100 8990001",
            "898110048990o01",
            "",
        ] {
            let text = format!(
                r#"{{"merchants": {{"{mid}": [{{"id": "cap", "kind": "amount-max", "max_fen": 1}}]}}}}"#
            );
            let error = RuleBook::from_json(&text).unwrap_err();
            assert!(
                error.to_string().contains("is not a merchant ID"),
                "{mid:?}: {error}"
            );
        }
        let book = RuleBook::from_json(
            r#"{"merchants": {"898110048990001": [{"id": "cap", "kind": "amount-max", "max_fen": 1}]}}"#,
        )
        .unwrap();
        assert_eq!(book.merchant_ids().collect::<Vec<_>>(), ["898110048990001"]);
    }

    #[test]
    fn a_merchant_listed_twice_is_refused() {
        let error = RuleBook::from_json(
            r#"{"merchants": {
              "898110048990001": [{"id": "daily", "kind": "daily-amount-max", "max_fen": 100000}],
              "898110048990001": [{"id": "cards", "kind": "card-types", "accept": ["domestic-debit"]}]
            }}"#,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("merchant 898110048990001 is listed twice"),
            "{error}"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_rule() {
        let cases = [
            (
                r#"{"default": [{"id": "x", "kind": "amount-max", "max_fen": 0}]}"#,
                "x",
            ),
            (
                r#"{"default": [{"id": "v", "kind": "card-velocity", "window_s": 0,
                   "attempts_max": 3, "declines_max": 2}]}"#,
                "v",
            ),
            (
                r#"{"default": [{"id": "v", "kind": "card-velocity", "window_s": 60,
                   "attempts_max": 1000, "declines_max": 2}]}"#,
                "v",
            ),
            (
                r#"{"default": [{"id": "d", "kind": "amount-max", "max_fen": 1},
                                {"id": "d", "kind": "amount-max", "max_fen": 2}]}"#,
                "d",
            ),
            (
                r#"{"default": [{"id": "c", "kind": "card-types", "accept": []}]}"#,
                "c",
            ),
        ];
        for (text, id) in cases {
            match RuleBook::from_json(text) {
                Err(RulesError::Rule { id: got, .. }) => assert_eq!(got, id),
                other => panic!("{text}: {other:?}"),
            }
        }
        // A misspelt field is an error, not a silently ignored setting.
        let typo = r#"{"default": [{"id": "x", "kind": "amount-max", "max_yuan": 10}]}"#;
        assert!(matches!(
            RuleBook::from_json(typo),
            Err(RulesError::Syntax(_))
        ));
        assert!(matches!(
            RuleBook::from_json(r#"{"default": [{"id": "x", "kind": "nonsense"}]}"#),
            Err(RulesError::Syntax(_))
        ));
    }

    #[test]
    fn codes_and_diagnoses_per_kind() {
        let card_types = RuleKind::CardTypes { accepted: 1 };
        assert_eq!(&card_types.response_code(), b"58");
        assert_eq!(card_types.diagnosis(), FailureKind::CardNotAccepted);
        assert_eq!(&RuleKind::AmountMax { max_fen: 1 }.response_code(), b"61");
        let velocity = RuleKind::CardVelocity {
            window_ms: 1,
            attempts_max: 1,
            declines_max: 1,
        };
        assert_eq!(&velocity.response_code(), b"65");
        let testing = RuleKind::CardTesting {
            window_ms: 1,
            small_fen: 1,
            declines_max: 1,
        };
        assert_eq!(&testing.response_code(), b"59");
        assert_eq!(testing.diagnosis(), FailureKind::CardTesting);
    }

    #[test]
    fn card_classes_from_the_issuer_directory() {
        let directory = domain::IssuerDirectory::embedded().unwrap();
        let visa = directory.lookup_digits("4111111111111111");
        assert_eq!(CardClass::of(&visa), CardClass::Foreign);
        let unknown_cup = directory.lookup_digits("6299999999999999999");
        assert_ne!(CardClass::of(&unknown_cup), CardClass::Foreign);
    }
}
