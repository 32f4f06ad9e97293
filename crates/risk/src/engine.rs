//! Evaluation of a request against its merchant's compiled rules, and the bounded history the
//! stateful rules need: attempts and declines per card fingerprint, small declines and wrong
//! PINs per terminal, a terminal's usual network, a merchant's sales of the day.
//!
//! Two calls per request: [`Engine::check`] before the issuer is asked (may decline, may alert)
//! and [`Engine::observe`] with the answer (feeds the windows, raises the threshold alerts).
//! Every map and window has a `*_MAX`; windows are trimmed to the rule book's longest window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use domain::money::yuan;

use crate::rules::{Action, CardClass, Rule, RuleBook, RuleKind, mcc_ticket_max_fen};

/// Events kept per card or terminal window; thresholds must be below it (checked at compile).
pub const EVENTS_PER_KEY_MAX: usize = 64;
/// Card fingerprints with history at once, in two generations of half this each (see
/// `CardMap`): a burst of new cards cannot grow memory, and none goes untracked.
pub const CARDS_TRACKED_MAX: usize = 200_000;
const CARDS_PER_GENERATION: usize = CARDS_TRACKED_MAX / 2;
/// Terminals with history at once.
pub const TERMINALS_TRACKED_MAX: usize = 100_000;
/// Merchants with a day's sales total at once.
pub const MERCHANTS_TRACKED_MAX: usize = 100_000;
/// A full map is swept of stale entries at most this often.
const SWEEP_INTERVAL_MS: i64 = 1_000;
/// How long a sale that passed a daily limit holds its amount against the limit while its
/// answer is awaited. Past any issuer timeout: a request the switch refused after the check
/// (so never observed) frees its hold by this age.
pub const DAILY_HOLD_MS: i64 = 120_000;
/// Holds one merchant may have at once; past this a sale is checked without holding, as
/// before holds existed (a merchant that many requests deep is refused by the switch's
/// in-flight bounds long before).
const HOLDS_PER_MERCHANT_MAX: usize = 4_096;
/// A peer-change alert for a terminal is not repeated within this time: a declining rule
/// declines every request from the new network, and one alert says it.
const PEER_ALERT_QUIET_MS: i64 = 3_600_000;

/// What a request does to the cardholder's money, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnClass {
    /// Purchase: money moves from the card; checked, and counted in the day's sales.
    Sale,
    /// Pre-authorisation: checked as a sale, and counted in its day's sales as one: the
    /// card's money is held for the merchant from then on. Counted at its completion instead,
    /// pre-authorisations each under the daily limit, then their unjudged completions, would
    /// take a merchant past it as far as it liked.
    Hold,
    /// Completion of a pre-authorisation: not checked (its pre-authorisation was; a refused
    /// completion would leave the cardholder's funds held for nothing) and not counted as a
    /// sale of its own: the switch moves its pre-authorisation's day by what it changed of the
    /// hold (`adjust_sales`: a completion for less frees the rest).
    Capture,
    /// Void of a purchase or of a pre-authorisation: takes its sale back out of the day's
    /// sales.
    Void,
    /// Refund, void of a completion (its pre-authorisation still counts): money goes back;
    /// card and amount rules do not apply.
    Credit,
    /// Balance inquiry: no money, but a favourite probe of card testers.
    Inquiry,
}

impl TxnClass {
    /// Whether the card and amount rules judge it.
    fn judged_as_sale(self) -> bool {
        matches!(self, TxnClass::Sale | TxnClass::Hold)
    }

    /// Whether it counts as a card's attempt (the velocity rules).
    fn is_attempt(self) -> bool {
        matches!(self, TxnClass::Sale | TxnClass::Hold | TxnClass::Inquiry)
    }
}

/// A request about to go to the issuer.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub txn_id: i64,
    pub mid: &'a str,
    pub tid: &'a str,
    /// The merchant's registered MCC.
    pub mcc: &'a str,
    pub class: TxnClass,
    pub card: Option<CardClass>,
    /// The first 8 bytes of the card's keyed fingerprint (never the PAN).
    pub card_key: Option<u64>,
    pub amount_fen: i64,
    /// Local day number, for daily totals (the switch's clock decides midnight).
    pub day: i64,
    pub now_ms: i64,
    /// Where the terminal's connection comes from.
    pub peer: Option<IpAddr>,
}

/// The answer a request got.
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    pub txn_id: i64,
    pub mid: &'a str,
    pub tid: &'a str,
    pub class: TxnClass,
    pub card_key: Option<u64>,
    pub amount_fen: i64,
    pub day: i64,
    /// The calendar day of the sale the outcome counts or takes back out: the day the request
    /// was received (a sale answered just after midnight counts for the day it was made), or
    /// for a void its original's (a void after midnight of a sale before it leaves today's
    /// total alone).
    pub sale_day: i64,
    pub now_ms: i64,
    pub response_code: [u8; 2],
}

/// A rule that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub rule_id: Arc<str>,
    pub kind: RuleKind,
    pub action: Action,
    /// Plain words: what was seen.
    pub detail: Words,
    /// The transactions behind it (the current one last, when it has an id).
    pub txn_ids: Vec<i64>,
}

/// What a rule saw, in plain words: in Chinese, the console's first language, and in English.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words {
    pub zh: String,
    pub en: String,
}

impl Words {
    fn new(zh: String, en: String) -> Words {
        Words { zh, en }
    }
}

/// The result of [`Engine::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The first declining rule that fired, in rule order.
    pub decline: Option<Hit>,
    /// Alert-only rules that fired (and threshold alerts).
    pub alerts: Vec<Hit>,
}

#[derive(Clone, Copy, Debug)]
struct CardEvent {
    at_ms: i64,
    txn_id: i64,
    declined: bool,
}

#[derive(Default)]
struct CardState {
    events: VecDeque<CardEvent>,
    alerted: Vec<(Arc<str>, i64)>,
}

/// Card histories in two generations. A card seen goes into (or moves to) the young one; when
/// the young one is full, the old one is dropped and the young one becomes old. So a card seen
/// within the span of the last generation (100,000 other cards) keeps its history, memory
/// stays bounded, and a new card is always tracked: a map that was merely full left every new
/// card untracked (fail open), which a burst of new cards could bring about at will.
#[derive(Default)]
struct CardMap {
    young: HashMap<u64, CardState>,
    old: HashMap<u64, CardState>,
}

impl CardMap {
    fn get(&self, key: &u64) -> Option<&CardState> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    fn get_mut(&mut self, key: &u64) -> Option<&mut CardState> {
        match self.young.get_mut(key) {
            Some(card) => Some(card),
            None => self.old.get_mut(key),
        }
    }

    /// The card's history, made young; a new one if the card has none.
    fn touch(&mut self, key: u64) -> &mut CardState {
        if !self.young.contains_key(&key) {
            let state = self.old.remove(&key).unwrap_or_default();
            if self.young.len() >= CARDS_PER_GENERATION {
                // The old generation's allocation is reused for the new young one.
                let mut recycled = std::mem::take(&mut self.old);
                recycled.clear();
                self.old = std::mem::replace(&mut self.young, recycled);
            }
            self.young.insert(key, state);
        }
        self.young.entry(key).or_default()
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[derive(Clone, Copy, Debug)]
struct Decline {
    at_ms: i64,
    txn_id: i64,
    amount_fen: i64,
}

#[derive(Clone, Copy, Debug)]
struct WrongPin {
    at_ms: i64,
    txn_id: i64,
    card_key: u64,
}

#[derive(Default)]
struct TerminalState {
    declines: VecDeque<Decline>,
    wrong_pins: VecDeque<WrongPin>,
    peer: Option<IpAddr>,
    alerted: Vec<(Arc<str>, i64)>,
    last_ms: i64,
}

#[derive(Clone, Default)]
struct MerchantDay {
    day: i64,
    sales_fen: i64,
    /// Sales that passed a daily limit and await their answer: (txn id, amount, when).
    /// Requests in flight at once all count, so pipelined sales cannot each see the same
    /// room under the limit.
    holds: Vec<(i64, i64, i64)>,
    /// Alert-only daily limits that have alerted this day: once a day, not once per sale
    /// after the limit.
    alerted: Vec<Arc<str>>,
}

impl MerchantDay {
    /// This day's record, started afresh when `day` is another.
    fn on(&mut self, day: i64) -> &mut MerchantDay {
        if self.day != day {
            *self = MerchantDay {
                day,
                ..MerchantDay::default()
            };
        }
        self
    }

    /// This day's record, or `None` for a day before the one it holds (a past day's sales no
    /// longer count, and must not reset today's).
    fn at(&mut self, day: i64) -> Option<&mut MerchantDay> {
        (self.day <= day).then(|| self.on(day))
    }

    /// Sold, and held by sales awaiting their answer.
    fn committed_fen(&mut self, now: i64) -> i64 {
        self.holds.retain(|h| h.2 > now - DAILY_HOLD_MS);
        self.holds
            .iter()
            .fold(self.sales_fen, |sum, h| sum.saturating_add(h.1))
    }
}

/// The rules and their history. Not thread-safe by itself: the switch keeps it behind a
/// mutex held only for one check or observe.
pub struct Engine {
    book: Arc<RuleBook>,
    cards: CardMap,
    terminals: HashMap<Box<str>, TerminalState>,
    merchants: HashMap<Box<str>, MerchantDay>,
    /// The day the merchants map was last swept for room.
    merchants_swept_day: i64,
    next_sweep_ms: i64,
    /// Times a terminal or merchant went untracked because its map was full: its rules with
    /// history (a daily limit, card testing, wrong PINs, the peer) did not see that request.
    untracked: u64,
    /// Terminals a declining peer-change rule held before this engine started (their alert
    /// still open, `hold_moved`): the network they moved from is not in memory, so without
    /// this the first request from the new one would be taken as the usual and let in.
    moved: HashSet<Box<str>>,
}

impl Engine {
    pub fn new(book: Arc<RuleBook>) -> Engine {
        Engine {
            book,
            cards: CardMap::default(),
            terminals: HashMap::new(),
            merchants: HashMap::new(),
            merchants_swept_day: i64::MIN,
            next_sweep_ms: 0,
            untracked: 0,
            moved: HashSet::new(),
        }
    }

    /// Holds terminal `tid` of merchant `mid`, which a declining peer-change rule declined
    /// before this engine started and whose alert is still open: its sales are declined until
    /// an operator has looked (`forget_peer`), as before the start, with no second alert for
    /// the same move. Only while the merchant's rules still decline a move (one renamed counts;
    /// one made alert-only, or gone, does not hold it).
    pub fn hold_moved(&mut self, mid: &str, tid: &str, now_ms: i64) {
        let book = Arc::clone(&self.book);
        let peer_rules: Vec<&Rule> = book
            .for_merchant(mid)
            .rules
            .iter()
            .filter(|r| matches!(r.kind, RuleKind::PeerChange { .. }))
            .collect();
        if !peer_rules.iter().any(|r| r.action == Action::Decline) {
            return;
        }
        self.moved.insert(tid.into());
        // Every network rule fires for a held terminal: none alerts again for this move, a
        // declining one not until an operator clears it (as `first_alert` keeps it).
        if let Some(terminal) = self.terminal(tid, now_ms) {
            terminal.alerted.extend(peer_rules.into_iter().map(|r| {
                let until = match r.action {
                    Action::Decline => i64::MAX,
                    Action::Alert => now_ms.saturating_add(PEER_ALERT_QUIET_MS),
                };
                (Arc::clone(&r.id), until)
            }));
        }
    }

    /// How many times a terminal or merchant went untracked because its map was full
    /// (`TERMINALS_TRACKED_MAX`, `MERCHANTS_TRACKED_MAX`): its rules with history did not see
    /// that request. The switch logs it, so a node past its design point is not blind unsaid.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    pub fn book(&self) -> &Arc<RuleBook> {
        &self.book
    }

    /// New rules; the history stays.
    pub fn replace_book(&mut self, book: Arc<RuleBook>) {
        self.book = book;
    }

    /// Adds an approved sale to a merchant's day without evaluating anything: warms the daily
    /// totals from the journal at start, so a restart does not reset a daily limit.
    pub fn record_sale(&mut self, mid: &str, day: i64, amount_fen: i64) {
        self.adjust_sales(mid, day, amount_fen);
    }

    /// Moves a merchant's sales of `day` by `delta_fen`: a terminal reversal takes a sale back
    /// out (negative), or puts back one its reversed void had taken out.
    pub fn adjust_sales(&mut self, mid: &str, day: i64, delta_fen: i64) {
        if let Some(total) = self.merchant(mid, day).and_then(|m| m.at(day)) {
            total.sales_fen = total.sales_fen.saturating_add(delta_fen).max(0);
        }
    }

    /// Frees what a sale held against its merchant's daily limit: the switch refused it after
    /// the checks passed it, so no answer will be observed.
    pub fn release(&mut self, mid: &str, txn_id: i64) {
        if let Some(total) = self.merchants.get_mut(mid) {
            total.holds.retain(|h| h.0 != txn_id);
        }
    }

    /// Forgets that the alert of rule `rule_id` was raised for terminal `tid` (it was not
    /// written): the next request the rule fires on raises it again, rather than a declining
    /// rule refusing the terminal for its quiet period with no alert for an operator to clear.
    /// A card rule's alert (card velocity) is quiet per card: `card_key` names it.
    pub fn unalert(&mut self, tid: &str, card_key: Option<u64>, rule_id: &str) {
        if let Some(terminal) = self.terminals.get_mut(tid) {
            terminal.alerted.retain(|(id, _)| &**id != rule_id);
        }
        if let Some(card) = card_key.and_then(|k| self.cards.get_mut(&k)) {
            card.alerted.retain(|(id, _)| &**id != rule_id);
        }
    }

    /// Forgets the usual network of terminal `tid` of merchant `mid` (an operator cleared its
    /// peer-change alert): the next request learns the network it comes from.
    pub fn forget_peer(&mut self, mid: &str, tid: &str) {
        let book = Arc::clone(&self.book);
        let peer_rules: Vec<&Arc<str>> = book
            .for_merchant(mid)
            .rules
            .iter()
            .filter(|r| matches!(r.kind, RuleKind::PeerChange { .. }))
            .map(|r| &r.id)
            .collect();
        if let Some(terminal) = self.terminals.get_mut(tid) {
            terminal.peer = None;
            // The peer rules' quiet periods go too: a move after this one is news again.
            terminal.alerted.retain(|(id, _)| !peer_rules.contains(&id));
        }
        self.moved.remove(tid);
    }

    /// Cards, terminals and merchants with history (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize, usize) {
        (self.cards.len(), self.terminals.len(), self.merchants.len())
    }

    /// Evaluates a request before it goes to the issuer, and records it as an attempt.
    pub fn check(&mut self, request: &Request<'_>) -> Verdict {
        let book = Arc::clone(&self.book);
        let rules = &book.for_merchant(request.mid).rules;
        let mut verdict = Verdict::default();
        // A completion is not judged: its pre-authorisation was.
        if rules.is_empty() || request.class == TxnClass::Capture {
            return verdict;
        }
        let horizon = book.horizon_ms();
        let now = request.now_ms;
        self.sweep_if_full(now, horizon);
        // The attempt counts towards its own velocity; a void or refund is not an attempt.
        let attempt = request.class.is_attempt();
        if let Some(card) = request
            .card_key
            .filter(|_| attempt)
            .map(|key| self.cards.touch(key))
        {
            trim_cards(&mut card.events, now - horizon);
            push_bounded(
                &mut card.events,
                CardEvent {
                    at_ms: now,
                    txn_id: request.txn_id,
                    declined: false,
                },
            );
        }
        for rule in rules {
            let fired = self.fires(rule, request, horizon);
            let Some(detail) = fired else { continue };
            let (detail, txn_ids) = detail;
            let hit = Hit {
                rule_id: Arc::clone(&rule.id),
                kind: rule.kind,
                action: rule.action,
                detail,
                txn_ids,
            };
            match rule.action {
                Action::Decline => {
                    // A terminal's move is declined until an operator has looked, so it is
                    // also put before one: an alert, once (`forget_peer` ends it).
                    let peer = matches!(rule.kind, RuleKind::PeerChange { .. });
                    if peer && self.first_alert(rule, request.tid, request.card_key, now) {
                        verdict.alerts.push(hit.clone());
                    }
                    verdict.decline = Some(hit);
                    break;
                }
                Action::Alert => {
                    let first = match rule.kind {
                        RuleKind::DailyAmountMax { .. } => {
                            self.first_alert_of_day(rule, request.mid, request.day)
                        }
                        _ => self.first_alert(rule, request.tid, request.card_key, now),
                    };
                    if first {
                        verdict.alerts.push(hit);
                    }
                }
            }
        }
        if let (Some(peer), Some(terminal)) = (request.peer, self.terminal(request.tid, now)) {
            // A declining peer rule keeps declining until an operator has looked
            // (`forget_peer`); an alerting one learns the new network once it has said so. A
            // request another rule declined first learns nothing: the peer rules after it
            // were never asked, and the next request must be. Nor does a void or refund,
            // which the peer rules do not judge: a move is learnt from a sale.
            if terminal.peer.is_none() || verdict.decline.is_none() && request.class.is_attempt() {
                terminal.peer = Some(peer);
            }
        }
        // A sale or pre-authorisation that passed a daily limit holds its amount until its
        // answer.
        let daily = rules
            .iter()
            .any(|r| matches!(r.kind, RuleKind::DailyAmountMax { .. }));
        if daily
            && verdict.decline.is_none()
            && request.class.judged_as_sale()
            && let Some(total) = self
                .merchant(request.mid, request.day)
                .and_then(|total| total.at(request.day))
            && total.holds.len() < HOLDS_PER_MERCHANT_MAX
        {
            total
                .holds
                .push((request.txn_id, request.amount_fen, request.now_ms));
        }
        verdict
    }

    /// Records the answer; returns the alerts of thresholds crossed by it.
    pub fn observe(&mut self, outcome: &Outcome<'_>) -> Vec<Hit> {
        let book = Arc::clone(&self.book);
        let rules = &book.for_merchant(outcome.mid).rules;
        let mut alerts = Vec::new();
        let approved = &outcome.response_code == b"00";
        // The day's sales are kept for every merchant, with rules or not: a daily limit added
        // during the day then starts from what was sold, not from nothing.
        let delta = match outcome.class {
            TxnClass::Sale | TxnClass::Hold if approved => outcome.amount_fen,
            TxnClass::Void if approved => -outcome.amount_fen,
            _ => 0,
        };
        let held = outcome.class.judged_as_sale()
            && self
                .merchants
                .get(outcome.mid)
                .is_some_and(|m| !m.holds.is_empty());
        if (delta != 0 || held)
            && let Some(total) = self.merchant(outcome.mid, outcome.day)
        {
            total.holds.retain(|h| h.0 != outcome.txn_id);
            if let Some(total) = total.at(outcome.sale_day) {
                total.sales_fen = total.sales_fen.saturating_add(delta).max(0);
            }
        }
        if rules.is_empty() {
            return alerts;
        }
        let horizon = book.horizon_ms();
        let now = outcome.now_ms;
        let card_decline = !approved && is_card_decline(outcome.response_code);
        if !card_decline {
            return alerts;
        }
        let attempt = outcome.class.is_attempt();
        if let Some(card) = outcome
            .card_key
            .filter(|_| attempt)
            .map(|key| self.cards.touch(key))
        {
            match card
                .events
                .iter_mut()
                .rev()
                .find(|e| e.txn_id == outcome.txn_id)
            {
                Some(event) => event.declined = true,
                None => push_bounded(
                    &mut card.events,
                    CardEvent {
                        at_ms: now,
                        txn_id: outcome.txn_id,
                        declined: true,
                    },
                ),
            }
        }
        // Only a card's attempts (sales, holds) count against the terminal: a refused refund,
        // void or completion is no sign of cards being tried.
        if let Some(terminal) = self.terminal(outcome.tid, now).filter(|_| attempt) {
            trim_declines(&mut terminal.declines, now - horizon);
            push_bounded(
                &mut terminal.declines,
                Decline {
                    at_ms: now,
                    txn_id: outcome.txn_id,
                    // An inquiry moves no money: whatever field 4 says, it is a probe, counted
                    // as a small decline (as `check` judges it), never set aside as a large one.
                    amount_fen: if outcome.class == TxnClass::Inquiry {
                        0
                    } else {
                        outcome.amount_fen
                    },
                },
            );
            // A wrong PIN, or a PIN block that does not decode for the card it came with.
            if matches!(&outcome.response_code, b"55" | b"99")
                && let Some(card_key) = outcome.card_key
            {
                trim_pins(&mut terminal.wrong_pins, now - horizon);
                push_bounded(
                    &mut terminal.wrong_pins,
                    WrongPin {
                        at_ms: now,
                        txn_id: outcome.txn_id,
                        card_key,
                    },
                );
            }
        }
        for rule in rules {
            let crossed = match rule.kind {
                RuleKind::CardTesting {
                    window_ms,
                    small_fen,
                    declines_max,
                } => self.terminals.get(outcome.tid).and_then(|t| {
                    let (n, ids) = small_declines(t, now - window_ms, small_fen);
                    (n >= declines_max).then(|| {
                        (
                            Words::new(
                                card_testing_zh(outcome.tid, n, small_fen, window_ms),
                                format!(
                                    "card testing: {n} declined attempts of at most {} on \
                                     terminal {} within {} s",
                                    yuan(small_fen),
                                    outcome.tid,
                                    window_ms / 1_000
                                ),
                            ),
                            ids,
                        )
                    })
                }),
                RuleKind::WrongPins {
                    window_ms,
                    cards_max,
                } => self.terminals.get(outcome.tid).and_then(|t| {
                    let (n, ids) = wrong_pin_cards(t, now - window_ms);
                    (n >= cards_max).then(|| (wrong_pins_words(outcome.tid, n, window_ms), ids))
                }),
                RuleKind::CardVelocity {
                    window_ms,
                    declines_max,
                    ..
                } => outcome
                    .card_key
                    .and_then(|key| self.cards.get(&key))
                    .and_then(|c| {
                        let ids: Vec<i64> = c
                            .events
                            .iter()
                            .filter(|e| e.declined && e.at_ms > now - window_ms)
                            .map(|e| e.txn_id)
                            .collect();
                        let n = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                        (n >= declines_max).then(|| {
                            (
                                Words::new(
                                    format!("同一张卡在 {} 秒内被拒 {n} 次", window_ms / 1_000),
                                    format!(
                                        "one card declined {n} times within {} s",
                                        window_ms / 1_000
                                    ),
                                ),
                                ids,
                            )
                        })
                    }),
                _ => None,
            };
            if let Some((detail, txn_ids)) = crossed
                && self.first_alert(rule, outcome.tid, outcome.card_key, now)
            {
                alerts.push(Hit {
                    rule_id: Arc::clone(&rule.id),
                    kind: rule.kind,
                    action: rule.action,
                    detail,
                    txn_ids,
                });
            }
        }
        alerts
    }

    /// Whether `rule` fires for `request`: what was seen and the transactions behind it.
    fn fires(
        &mut self,
        rule: &Rule,
        request: &Request<'_>,
        horizon: i64,
    ) -> Option<(Words, Vec<i64>)> {
        let now = request.now_ms;
        let sale = request.class.judged_as_sale();
        let this = || vec![request.txn_id];
        match rule.kind {
            RuleKind::CardTypes { accepted } => {
                let card = request.card?;
                (sale && accepted & card.bit() == 0).then(|| {
                    (
                        Words::new(
                            format!("本商户不受理{}", card.zh()),
                            format!("{} cards are not accepted by this merchant", card.key()),
                        ),
                        this(),
                    )
                })
            }
            RuleKind::AmountMax { max_fen } => (sale && request.amount_fen > max_fen).then(|| {
                (
                    Words::new(
                        format!(
                            "{} 超过本商户单笔限额 {}",
                            yuan(request.amount_fen),
                            yuan(max_fen)
                        ),
                        format!(
                            "{} is over the merchant's limit of {} per transaction",
                            yuan(request.amount_fen),
                            yuan(max_fen)
                        ),
                    ),
                    this(),
                )
            }),
            RuleKind::DailyAmountMax { max_fen } => {
                if !sale {
                    return None;
                }
                let today = self
                    .merchants
                    .get_mut(request.mid)
                    .filter(|d| d.day == request.day)
                    .map_or(0, |d| d.committed_fen(now));
                (today.saturating_add(request.amount_fen) > max_fen).then(|| {
                    (
                        Words::new(
                            format!(
                                "今日已收 {}，再收 {} 将超过日限额 {}",
                                yuan(today),
                                yuan(request.amount_fen),
                                yuan(max_fen)
                            ),
                            format!(
                                "{} more would take today's sales of {} over the daily limit \
                                 of {}",
                                yuan(request.amount_fen),
                                yuan(today),
                                yuan(max_fen)
                            ),
                        ),
                        this(),
                    )
                })
            }
            RuleKind::CardVelocity {
                window_ms,
                attempts_max,
                declines_max,
            } => {
                if !request.class.is_attempt() {
                    return None;
                }
                let card = self.cards.get(&request.card_key?)?;
                let recent = card.events.iter().filter(|e| e.at_ms > now - window_ms);
                let (mut attempts, mut declines) = (0u32, 0u32);
                for event in recent {
                    attempts += 1;
                    declines += u32::from(event.declined);
                }
                if attempts > attempts_max || declines >= declines_max {
                    let ids = card
                        .events
                        .iter()
                        .filter(|e| e.at_ms > now - window_ms)
                        .map(|e| e.txn_id)
                        .collect();
                    Some((
                        Words::new(
                            format!(
                                "同一张卡在 {} 秒内交易 {attempts} 次（被拒 {declines} 次）",
                                window_ms / 1_000
                            ),
                            format!(
                                "one card tried {attempts} times ({declines} declined) within \
                                 {} s",
                                window_ms / 1_000
                            ),
                        ),
                        ids,
                    ))
                } else {
                    None
                }
            }
            RuleKind::CardTesting {
                window_ms,
                small_fen,
                declines_max,
            } => {
                let probe =
                    request.class == TxnClass::Inquiry || (sale && request.amount_fen <= small_fen);
                if !probe {
                    return None;
                }
                let terminal = self.terminals.get(request.tid)?;
                let (n, mut ids) = small_declines(terminal, now - window_ms, small_fen);
                (n >= declines_max).then(|| {
                    ids.push(request.txn_id);
                    (
                        Words::new(
                            card_testing_zh(request.tid, n, small_fen, window_ms),
                            format!(
                                "card testing on terminal {}: {n} declined attempts of at most \
                                 {} within {} s",
                                request.tid,
                                yuan(small_fen),
                                window_ms / 1_000
                            ),
                        ),
                        ids,
                    )
                })
            }
            RuleKind::WrongPins {
                window_ms,
                cards_max,
            } => {
                if !request.class.is_attempt() {
                    return None;
                }
                let terminal = self.terminals.get(request.tid)?;
                let (n, mut ids) = wrong_pin_cards(terminal, now - window_ms);
                (n >= cards_max).then(|| {
                    ids.push(request.txn_id);
                    (wrong_pins_words(request.tid, n, window_ms), ids)
                })
            }
            RuleKind::PeerChange { prefix_bits } => {
                // A void or refund only gives money back to the card it came from: refusing
                // one keeps the customer charged and stops no fraud.
                if !request.class.is_attempt() {
                    return None;
                }
                if self.moved.contains(request.tid) {
                    return Some((
                        Words::new(
                            format!(
                                "终端 {} 在本节点启动前已被判定移机（告警尚未处理）：处理前拒绝",
                                request.tid
                            ),
                            format!(
                                "terminal {} was found moved before this node started (its alert \
                                 is still open): declined until an operator has looked",
                                request.tid
                            ),
                        ),
                        this(),
                    ));
                }
                let peer = request.peer?;
                let _ = horizon;
                let known = self.terminals.get(request.tid)?.peer?;
                (!same_prefix(known, peer, prefix_bits)).then(|| {
                    (
                        Words::new(
                            format!(
                                "终端 {} 现从 {} 接入（通常为 {}）：终端被移机，或被他人使用",
                                request.tid,
                                masked_ip(peer, prefix_bits),
                                masked_ip(known, prefix_bits)
                            ),
                            format!(
                                "terminal {} now connects from {} (usually {}): moved, or used \
                                 by someone else",
                                request.tid,
                                masked_ip(peer, prefix_bits),
                                masked_ip(known, prefix_bits)
                            ),
                        ),
                        this(),
                    )
                })
            }
            RuleKind::MccProfile { ticket_max_fen } => {
                let max = ticket_max_fen.or_else(|| mcc_ticket_max_fen(request.mcc))?;
                (sale && request.amount_fen > max).then(|| {
                    (
                        Words::new(
                            format!(
                                "{} 远高于类别 {} 商户的常见金额（至多 {}）：终端可能被用于其他\
                                 经营",
                                yuan(request.amount_fen),
                                request.mcc,
                                yuan(max)
                            ),
                            format!(
                                "{} is far above what a merchant of category {} takes ({} at \
                                 most): the terminal may be used for another business",
                                yuan(request.amount_fen),
                                request.mcc,
                                yuan(max)
                            ),
                        ),
                        this(),
                    )
                })
            }
        }
    }

    /// Whether an alert of `rule` is new: one alert per rule and terminal (per card for card
    /// rules) per window, not one per request.
    /// Whether an alert-only daily limit alerts for merchant `mid` on `day`: the first time
    /// that day. Every sale after the limit is over it, and an alert each would bury the
    /// operators' queue.
    fn first_alert_of_day(&mut self, rule: &Rule, mid: &str, day: i64) -> bool {
        let Some(total) = self.merchant(mid, day).and_then(|m| m.at(day)) else {
            return true;
        };
        if total.alerted.contains(&rule.id) {
            return false;
        }
        total.alerted.push(Arc::clone(&rule.id));
        true
    }

    fn first_alert(&mut self, rule: &Rule, tid: &str, card_key: Option<u64>, now: i64) -> bool {
        let quiet_ms = match rule.kind {
            RuleKind::CardVelocity { window_ms, .. }
            | RuleKind::CardTesting { window_ms, .. }
            | RuleKind::WrongPins { window_ms, .. } => window_ms,
            // A declining one holds the terminal until an operator clears its alert
            // (`forget_peer`): one alert says it, however long the terminal keeps trying.
            RuleKind::PeerChange { .. } if rule.action == Action::Decline => i64::MAX,
            RuleKind::PeerChange { .. } => PEER_ALERT_QUIET_MS,
            // Stateless rules alert on every request they see (an alert-only daily limit once
            // a day: `first_alert_of_day`).
            _ => return true,
        };
        let alerted = match rule.kind {
            RuleKind::CardVelocity { .. } => match card_key.and_then(|k| self.cards.get_mut(&k)) {
                Some(card) => &mut card.alerted,
                None => return true,
            },
            _ => match self.terminals.get_mut(tid) {
                Some(terminal) => &mut terminal.alerted,
                None => return true,
            },
        };
        alerted.retain(|(_, until)| *until > now);
        if alerted.iter().any(|(id, _)| *id == rule.id) {
            return false;
        }
        alerted.push((Arc::clone(&rule.id), now.saturating_add(quiet_ms)));
        true
    }

    fn terminal(&mut self, tid: &str, now: i64) -> Option<&mut TerminalState> {
        if !self.terminals.contains_key(tid) {
            if self.terminals.len() >= TERMINALS_TRACKED_MAX {
                self.untracked = self.untracked.saturating_add(1);
                return None;
            }
            self.terminals
                .insert(Box::from(tid), TerminalState::default());
        }
        let terminal = self.terminals.get_mut(tid)?;
        terminal.last_ms = now;
        Some(terminal)
    }

    /// A merchant's record for `day`. When the map is full, the merchants with nothing on
    /// `day` or later (no sales counted, nothing held) are dropped first, at most once a day:
    /// a `day` in the past (a reversal of yesterday's sale) keeps today's records.
    fn merchant(&mut self, mid: &str, day: i64) -> Option<&mut MerchantDay> {
        if !self.merchants.contains_key(mid) {
            if self.merchants.len() >= MERCHANTS_TRACKED_MAX && self.merchants_swept_day != day {
                self.merchants_swept_day = day;
                self.merchants
                    .retain(|_, m| m.day >= day || !m.holds.is_empty());
            }
            if self.merchants.len() >= MERCHANTS_TRACKED_MAX {
                self.untracked = self.untracked.saturating_add(1);
                return None;
            }
            self.merchants
                .insert(Box::from(mid), MerchantDay::default());
        }
        self.merchants.get_mut(mid)
    }

    /// Drops terminals' history older than every window once their map is full, at most once
    /// a second (cards make room by generations).
    fn sweep_if_full(&mut self, now: i64, horizon: i64) {
        let full = self.terminals.len() >= TERMINALS_TRACKED_MAX;
        if !full || now < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now.saturating_add(SWEEP_INTERVAL_MS);
        let oldest = now - horizon;
        // A terminal's usual network is worth keeping; only idle terminals go.
        self.terminals
            .retain(|_, t| t.last_ms > oldest || t.peer.is_some() && t.last_ms > now - 86_400_000);
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= EVENTS_PER_KEY_MAX {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn trim_cards(events: &mut VecDeque<CardEvent>, oldest: i64) {
    while events.front().is_some_and(|e| e.at_ms <= oldest) {
        events.pop_front();
    }
}

fn trim_declines(events: &mut VecDeque<Decline>, oldest: i64) {
    while events.front().is_some_and(|e| e.at_ms <= oldest) {
        events.pop_front();
    }
}

fn trim_pins(events: &mut VecDeque<WrongPin>, oldest: i64) {
    while events.front().is_some_and(|e| e.at_ms <= oldest) {
        events.pop_front();
    }
}

/// A card-testing alert's words in Chinese (the two places it is raised word it alike).
fn card_testing_zh(tid: &str, n: u32, small_fen: i64, window_ms: i64) -> String {
    format!(
        "疑似测卡：终端 {tid} 在 {} 秒内有 {n} 笔不超过 {} 的交易被拒",
        window_ms / 1_000,
        yuan(small_fen)
    )
}

/// A wrong-PINs alert's words (the two places it is raised word it alike).
fn wrong_pins_words(tid: &str, n: u32, window_ms: i64) -> Words {
    Words::new(
        format!(
            "终端 {tid} 在 {} 秒内有 {n} 张不同的卡输错密码",
            window_ms / 1_000
        ),
        format!(
            "wrong PINs on {n} different cards at terminal {tid} within {} s",
            window_ms / 1_000
        ),
    )
}

fn small_declines(terminal: &TerminalState, after: i64, small_fen: i64) -> (u32, Vec<i64>) {
    let ids: Vec<i64> = terminal
        .declines
        .iter()
        .filter(|d| d.at_ms > after && d.amount_fen <= small_fen)
        .map(|d| d.txn_id)
        .collect();
    (u32::try_from(ids.len()).unwrap_or(u32::MAX), ids)
}

fn wrong_pin_cards(terminal: &TerminalState, after: i64) -> (u32, Vec<i64>) {
    let mut cards: Vec<u64> = Vec::new();
    let mut ids = Vec::new();
    for pin in terminal.wrong_pins.iter().filter(|p| p.at_ms > after) {
        if !cards.contains(&pin.card_key) {
            cards.push(pin.card_key);
        }
        ids.push(pin.txn_id);
    }
    (u32::try_from(cards.len()).unwrap_or(u32::MAX), ids)
}

/// Declines that say something about the card (or the person holding it), not about a link,
/// a host, the merchant's or terminal's set-up or a terminal out of step (PROTOCOL.md's codes
/// for the acquirer, the operator or the terminal to act on: 03, 13, 25, 58, 64, 79, 95). A PIN
/// block that does not decode for its card (99) is one: a PIN mistyped on a PIN pad that sends
/// blocks so, or a captured block tried with other card numbers to learn its PIN.
fn is_card_decline(code: [u8; 2]) -> bool {
    !matches!(
        &code,
        b"00"
            | b"03"
            | b"13"
            | b"25"
            | b"58"
            | b"64"
            | b"79"
            | b"95"
            | b"06"
            | b"09"
            | b"22"
            | b"30"
            | b"68"
            | b"77"
            | b"90"
            | b"91"
            | b"92"
            | b"94"
            | b"96"
            | b"97"
            | b"98"
            | b"A0"
    )
}

fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    // An IPv4 terminal reaching a dual-stack listener comes as ::ffff:a.b.c.d: its network
    // is its IPv4 one (as IPv6, all of them would share one /48).
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let shift = 32u32.saturating_sub(u32::from(bits));
            u32::from(a).checked_shr(shift).unwrap_or(0)
                == u32::from(b).checked_shr(shift).unwrap_or(0)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            // IPv6: the /48 a site is given, whatever the IPv4 setting.
            a.segments().get(..3) == b.segments().get(..3)
        }
        _ => false,
    }
}

/// The network part only: where a terminal is, not which host.
fn masked_ip(ip: IpAddr, bits: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let shift = 32u32.saturating_sub(u32::from(bits));
            let net = u32::from(v4)
                .checked_shr(shift)
                .unwrap_or(0)
                .checked_shl(shift)
                .unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv4Addr::from(net))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let seg = |i: usize| s.get(i).copied().unwrap_or(0);
            format!("{:x}:{:x}:{:x}::/48", seg(0), seg(1), seg(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_keeps_the_sign_of_amounts_under_one_yuan() {
        assert_eq!(yuan(12_345), "¥123.45");
        assert_eq!(yuan(-50), "-¥0.50");
        assert_eq!(yuan(-150), "-¥1.50");
        assert_eq!(yuan(i64::MIN), "-¥92233720368547758.08");
    }

    #[test]
    fn an_ipv4_terminal_on_a_dual_stack_listener_keeps_its_ipv4_network() {
        let mapped =
            |text: &str| IpAddr::V6(text.parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped());
        let v4 = |text: &str| IpAddr::V4(text.parse().unwrap());
        // Two mapped addresses of other /24s are other networks (as IPv6 they share a /48).
        assert!(!same_prefix(mapped("10.1.2.3"), mapped("192.168.7.9"), 24));
        assert!(same_prefix(mapped("10.1.2.3"), mapped("10.1.2.200"), 24));
        assert!(same_prefix(mapped("10.1.2.3"), v4("10.1.2.4"), 24));
        assert_eq!(masked_ip(mapped("10.1.2.3"), 24), "10.1.2.0/24");
    }

    #[test]
    fn a_merchant_beyond_the_tracked_is_counted_untracked() {
        let mut e = engine(r#"{"id": "daily", "kind": "daily-amount-max", "max_fen": 1000}"#);
        let day = 20_000;
        for n in 0..MERCHANTS_TRACKED_MAX {
            e.record_sale(&format!("M{n}"), day, 100);
        }
        assert_eq!(e.untracked(), 0);
        // Full with today's merchants: the next one is not tracked, and that is counted.
        e.record_sale("NEW", day, 100);
        assert_eq!(e.untracked(), 1);
        assert_eq!(e.tracked().2, MERCHANTS_TRACKED_MAX);
    }

    const M: &str = "M1";
    const T: &str = "T1";

    fn engine(rules: &str) -> Engine {
        let text = format!(r#"{{"default": [{rules}]}}"#);
        Engine::new(Arc::new(RuleBook::from_json(&text).unwrap()))
    }

    /// An engine with one card-testing rule, `ct`: 10-minute window, small sales up to 10.00,
    /// declining from `declines_max` small declines on.
    fn card_testing(declines_max: u32) -> Engine {
        engine(&format!(
            r#"{{"id": "ct", "kind": "card-testing", "window_s": 600, "small_fen": 1000,
                "declines_max": {declines_max}}}"#
        ))
    }

    fn sale(txn_id: i64, amount_fen: i64, now_ms: i64) -> Request<'static> {
        Request {
            txn_id,
            mid: M,
            tid: T,
            mcc: "5812",
            class: TxnClass::Sale,
            card: Some(CardClass::DomesticDebit),
            card_key: Some(7),
            amount_fen,
            day: 1,
            now_ms,
            peer: None,
        }
    }

    fn answer(request: &Request<'_>, code: &[u8; 2]) -> Outcome<'static> {
        Outcome {
            txn_id: request.txn_id,
            mid: M,
            tid: T,
            class: request.class,
            card_key: request.card_key,
            amount_fen: request.amount_fen,
            day: request.day,
            sale_day: request.day,
            now_ms: request.now_ms,
            response_code: *code,
        }
    }

    fn declined_by(verdict: &Verdict) -> Option<&str> {
        verdict.decline.as_ref().map(|h| &*h.rule_id)
    }

    #[test]
    fn card_types() {
        let mut e = engine(
            r#"{"id": "cards", "kind": "card-types", "accept": ["domestic-debit", "domestic-credit"]}"#,
        );
        assert_eq!(declined_by(&e.check(&sale(1, 100, 0))), None);
        let foreign = Request {
            card: Some(CardClass::Foreign),
            ..sale(2, 100, 0)
        };
        let verdict = e.check(&foreign);
        assert_eq!(declined_by(&verdict), Some("cards"));
        let hit = verdict.decline.unwrap();
        assert_eq!(&hit.kind.response_code(), b"58");
        assert!(hit.detail.en.contains("foreign"), "{}", hit.detail.en);
        assert!(hit.detail.zh.contains("境外卡"), "{}", hit.detail.zh);
        // A refund to a foreign card is not a sale: it goes back where it came from.
        let refund = Request {
            class: TxnClass::Credit,
            ..foreign
        };
        assert_eq!(declined_by(&e.check(&refund)), None);
    }

    #[test]
    fn amount_max_and_alert_only() {
        let mut e = engine(
            r#"{"id": "cap", "kind": "amount-max", "max_fen": 10000},
               {"id": "watch", "kind": "amount-max", "max_fen": 5000, "action": "alert"}"#,
        );
        let ok = e.check(&sale(1, 4000, 0));
        assert_eq!(ok, Verdict::default());
        let watched = e.check(&sale(2, 6000, 0));
        assert_eq!(declined_by(&watched), None);
        assert_eq!(watched.alerts.len(), 1);
        assert_eq!(&*watched.alerts[0].rule_id, "watch");
        let over = e.check(&sale(3, 10001, 0));
        assert_eq!(declined_by(&over), Some("cap"));
        assert_eq!(&over.decline.unwrap().kind.response_code(), b"61");
    }

    /// An alert-only daily limit alerts once a merchant's day has crossed it, and not again
    /// for every sale after it that day; the next day it may again.
    #[test]
    fn an_alert_only_daily_limit_alerts_once_a_day() {
        let mut e = engine(
            r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000, "action": "alert"}"#,
        );
        let alerts_of = |e: &mut Engine, r: &Request<'_>| {
            let v = e.check(r);
            assert_eq!(declined_by(&v), None);
            e.observe(&answer(r, b"00"));
            v.alerts.len()
        };
        assert_eq!(alerts_of(&mut e, &sale(1, 6_000, 0)), 0);
        assert_eq!(alerts_of(&mut e, &sale(2, 5_000, 0)), 1);
        for id in 3..6 {
            assert_eq!(alerts_of(&mut e, &sale(id, 100, 0)), 0, "sale {id}");
        }
        let tomorrow = |id, amount| Request {
            day: 2,
            ..sale(id, amount, 0)
        };
        assert_eq!(alerts_of(&mut e, &tomorrow(6, 9_000)), 0);
        assert_eq!(alerts_of(&mut e, &tomorrow(7, 2_000)), 1);
    }

    #[test]
    fn daily_amount_max_resets_at_the_day() {
        let mut e = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}"#);
        for (i, amount) in [4000, 4000].into_iter().enumerate() {
            let r = sale(i as i64, amount, 0);
            assert_eq!(declined_by(&e.check(&r)), None);
            e.observe(&answer(&r, b"00"));
        }
        // A declined sale does not count towards the day's total.
        let declined = sale(10, 1000, 0);
        assert_eq!(declined_by(&e.check(&declined)), None);
        e.observe(&answer(&declined, b"51"));
        assert_eq!(declined_by(&e.check(&sale(3, 2000, 0))), None);
        assert_eq!(declined_by(&e.check(&sale(4, 2001, 0))), Some("day"));
        // What the journal says was sold today counts as well (a restart keeps the limit).
        let mut warmed = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}"#);
        warmed.record_sale(M, 1, 9_000);
        assert_eq!(declined_by(&warmed.check(&sale(1, 1_001, 0))), Some("day"));
        let tomorrow = Request {
            day: 2,
            ..sale(5, 9000, 0)
        };
        assert_eq!(declined_by(&e.check(&tomorrow)), None);
    }

    #[test]
    fn sales_in_flight_at_once_hold_their_amount_against_the_daily_limit() {
        let mut e = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}"#);
        // Pipelined: the second is checked before the first is answered.
        let first = sale(1, 6_000, 0);
        assert_eq!(declined_by(&e.check(&first)), None);
        assert_eq!(declined_by(&e.check(&sale(2, 6_000, 1))), Some("day"));
        // Declined by the issuer: its hold is freed, and nothing is sold.
        e.observe(&answer(&first, b"51"));
        let third = sale(3, 6_000, 2);
        assert_eq!(declined_by(&e.check(&third)), None);
        // Refused by the switch after the checks (never observed): released at once...
        e.release(M, 3);
        let fourth = sale(4, 6_000, 3);
        assert_eq!(declined_by(&e.check(&fourth)), None);
        // ...or, never released, free once it is older than any answer could be.
        assert_eq!(declined_by(&e.check(&sale(5, 6_000, 4))), Some("day"));
        assert_eq!(
            declined_by(&e.check(&sale(6, 6_000, 4 + DAILY_HOLD_MS))),
            None
        );
    }

    #[test]
    fn the_day_counts_purchases_and_pre_authorisations_less_voids_and_reversals() {
        let mut e = engine(
            r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000},
               {"id": "cap", "kind": "amount-max", "max_fen": 5800}"#,
        );
        let of = |class, id, amount| Request {
            class,
            ..sale(id, amount, id)
        };
        // A pre-authorisation is judged like a sale, and counted like one...
        assert_eq!(
            declined_by(&e.check(&of(TxnClass::Hold, 1, 6_000))),
            Some("cap")
        );
        let hold = of(TxnClass::Hold, 2, 4_000);
        assert_eq!(declined_by(&e.check(&hold)), None);
        e.observe(&answer(&hold, b"00"));
        // ...its completion neither judged (over the per-sale cap, it passes) nor counted.
        let capture = of(TxnClass::Capture, 3, 5_700);
        assert_eq!(e.check(&capture), Verdict::default());
        e.observe(&answer(&capture, b"00"));
        assert_eq!(
            declined_by(&e.check(&of(TxnClass::Sale, 4, 6_001))),
            Some("day")
        );
        let sold = of(TxnClass::Sale, 5, 5_000);
        assert_eq!(declined_by(&e.check(&sold)), None);
        e.observe(&answer(&sold, b"00"));
        // A void gives its sale (or pre-authorisation) back to the day.
        e.observe(&answer(&of(TxnClass::Void, 6, 5_000), b"00"));
        let sold = of(TxnClass::Sale, 7, 5_500);
        assert_eq!(declined_by(&e.check(&sold)), None);
        e.observe(&answer(&sold, b"00"));
        // So does a terminal reversal (the switch calls adjust_sales).
        assert_eq!(
            declined_by(&e.check(&of(TxnClass::Sale, 8, 501))),
            Some("day")
        );
        e.adjust_sales(M, 1, -5_500);
        assert_eq!(declined_by(&e.check(&of(TxnClass::Sale, 9, 501))), None);
    }

    /// Pre-authorisations each under the daily limit, then their completions (which are not
    /// judged): the limit holds, the second pre-authorisation is declined. Counted only at
    /// completion, five of them had taken a merchant to four and a half times its limit.
    #[test]
    fn pre_authorisations_and_their_completions_do_not_get_past_the_daily_limit() {
        let mut e = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 1000000}"#);
        let of = |class, id, amount| Request {
            class,
            ..sale(id, amount, id)
        };
        let mut approved = 0;
        for id in 1..=5 {
            let hold = of(TxnClass::Hold, id, 900_000);
            if declined_by(&e.check(&hold)).is_none() {
                e.observe(&answer(&hold, b"00"));
                approved += 1;
            }
        }
        assert_eq!(approved, 1);
        let capture = of(TxnClass::Capture, 6, 900_000);
        e.observe(&answer(&capture, b"00"));
        assert_eq!(
            declined_by(&e.check(&of(TxnClass::Sale, 7, 100_001))),
            Some("day")
        );
    }

    /// After midnight, a void or a terminal reversal of yesterday's sale gives nothing to
    /// today's total (it gave today room it never used up), and does not reset it.
    #[test]
    fn undoing_yesterdays_sale_leaves_todays_total_alone() {
        let mut e = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}"#);
        let on = |day, class, id, amount| Request {
            class,
            day,
            ..sale(id, amount, id)
        };
        let yesterday = on(1, TxnClass::Sale, 1, 6_000);
        e.check(&yesterday);
        e.observe(&answer(&yesterday, b"00"));
        let today = on(2, TxnClass::Sale, 2, 9_000);
        assert_eq!(declined_by(&e.check(&today)), None);
        e.observe(&answer(&today, b"00"));
        // The void of yesterday's sale, observed today.
        let void = on(2, TxnClass::Void, 3, 6_000);
        e.observe(&Outcome {
            sale_day: 1,
            ..answer(&void, b"00")
        });
        assert_eq!(
            declined_by(&e.check(&on(2, TxnClass::Sale, 4, 1_001))),
            Some("day")
        );
        // A terminal reversal of it likewise.
        e.adjust_sales(M, 1, -6_000);
        assert_eq!(
            declined_by(&e.check(&on(2, TxnClass::Sale, 5, 1_001))),
            Some("day")
        );
        // A void of today's sale still gives it back.
        let void = on(2, TxnClass::Void, 6, 9_000);
        e.observe(&answer(&void, b"00"));
        assert_eq!(
            declined_by(&e.check(&on(2, TxnClass::Sale, 7, 9_000))),
            None
        );
        e.release(M, 7);
        // A sale made before midnight and answered after it counts for the day it was made,
        // not for today (where its void or reversal would not find it).
        let late = on(1, TxnClass::Sale, 8, 5_000);
        e.observe(&Outcome {
            day: 2,
            ..answer(&late, b"00")
        });
        assert_eq!(
            declined_by(&e.check(&on(2, TxnClass::Sale, 9, 10_000))),
            None
        );
    }

    #[test]
    fn a_daily_limit_added_during_the_day_starts_from_what_was_sold() {
        let mut e = Engine::new(Arc::new(RuleBook::empty()));
        let sold = sale(1, 9_000, 0);
        assert_eq!(e.check(&sold), Verdict::default());
        e.observe(&answer(&sold, b"00"));
        let text = r#"{"default": [{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}]}"#;
        e.replace_book(Arc::new(RuleBook::from_json(text).unwrap()));
        assert_eq!(declined_by(&e.check(&sale(2, 1_001, 1))), Some("day"));
    }

    #[test]
    fn voids_and_refunds_are_not_card_attempts() {
        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "window_s": 60, "attempts_max": 2,
                "declines_max": 5}"#,
        );
        // Sale, void, sale, void, sale: a cashier correcting an amount.
        for i in 0..5 {
            let class = if i % 2 == 0 {
                TxnClass::Sale
            } else {
                TxnClass::Void
            };
            let r = Request {
                class,
                ..sale(i, 100, i)
            };
            let expected = (i == 4).then_some("vel");
            assert_eq!(declined_by(&e.check(&r)), expected, "request {i}");
            e.observe(&answer(&r, b"00"));
        }
        // However many attempts, a refund to the card is never declined by them.
        let refund = Request {
            class: TxnClass::Credit,
            ..sale(9, 100, 9)
        };
        assert_eq!(declined_by(&e.check(&refund)), None);
        // Nor is a void at a terminal where wrong PINs were keyed on several cards.
        let mut e =
            engine(r#"{"id": "pins", "kind": "wrong-pins", "window_s": 300, "cards_max": 2}"#);
        for card in [1_u64, 2] {
            let r = Request {
                card_key: Some(card),
                ..sale(i64::try_from(card).unwrap(), 100, 0)
            };
            e.check(&r);
            e.observe(&answer(&r, b"55"));
        }
        assert_eq!(declined_by(&e.check(&sale(3, 100, 1))), Some("pins"));
        let void = Request {
            class: TxnClass::Void,
            ..sale(4, 100, 1)
        };
        assert_eq!(declined_by(&e.check(&void)), None);
    }

    #[test]
    fn a_full_merchant_map_makes_room_from_other_days() {
        let mut e = engine(r#"{"id": "day", "kind": "daily-amount-max", "max_fen": 10000}"#);
        let mids: Vec<String> = (0..MERCHANTS_TRACKED_MAX)
            .map(|i| format!("M{i}"))
            .collect();
        for (i, mid) in mids.iter().enumerate() {
            let r = Request {
                mid,
                ..sale(i64::try_from(i).unwrap(), 100, 0)
            };
            e.observe(&Outcome {
                mid,
                ..answer(&r, b"00")
            });
        }
        assert_eq!(e.tracked().2, MERCHANTS_TRACKED_MAX);
        // A reversal of a past day's void for a merchant not in the full map sweeps nothing of
        // today's.
        e.adjust_sales("OLD", 0, 500);
        assert_eq!(e.tracked().2, MERCHANTS_TRACKED_MAX);
        // The next day, a merchant new to the map is counted (and limited) all the same.
        let next_day = |id, amount| Request {
            mid: "NEW",
            day: 2,
            ..sale(id, amount, 0)
        };
        let sold = next_day(1, 9_000);
        assert_eq!(declined_by(&e.check(&sold)), None);
        e.observe(&Outcome {
            mid: "NEW",
            ..answer(&sold, b"00")
        });
        assert_eq!(declined_by(&e.check(&next_day(2, 1_001))), Some("day"));
        assert!(e.tracked().2 < MERCHANTS_TRACKED_MAX);
    }

    #[test]
    fn a_declining_peer_rule_is_asked_every_time_and_alerts_once_until_cleared() {
        let mut e = engine(
            r#"{"id": "cap", "kind": "amount-max", "max_fen": 10000},
               {"id": "moved", "kind": "peer-change", "action": "decline"}"#,
        );
        let at = |ip: &str, id, amount| Request {
            peer: Some(ip.parse().unwrap()),
            ..sale(id, amount, id)
        };
        assert_eq!(declined_by(&e.check(&at("10.1.2.3", 1, 100))), None);
        // From elsewhere, declined first by another rule: the new network is not learnt...
        assert_eq!(
            declined_by(&e.check(&at("172.16.5.5", 2, 20_000))),
            Some("cap")
        );
        // ...so the next request from it meets the peer rule, with one alert.
        let moved = e.check(&at("172.16.5.5", 3, 100));
        assert_eq!(declined_by(&moved), Some("moved"));
        assert_eq!(moved.alerts.len(), 1, "put before an operator");
        assert_eq!(moved.alerts[0].action, Action::Decline);
        let again = e.check(&at("172.16.5.5", 4, 100));
        assert_eq!(declined_by(&again), Some("moved"));
        assert!(again.alerts.is_empty(), "alerted once, not per request");
        // Nor once an hour while it keeps trying: the alert is open until an operator looks.
        let hours_later = e.check(&Request {
            now_ms: 4 + 5 * PEER_ALERT_QUIET_MS,
            ..at("172.16.5.5", 8, 100)
        });
        assert_eq!(declined_by(&hours_later), Some("moved"));
        assert!(hours_later.alerts.is_empty(), "alerted again after hours");
        // An alert that was not written is raised again by the next request.
        e.unalert(T, None, "moved");
        let raised = e.check(&at("172.16.5.5", 7, 100));
        assert_eq!(declined_by(&raised), Some("moved"));
        assert_eq!(raised.alerts.len(), 1, "raised again");
        // An operator cleared it: the terminal's next request teaches the new network.
        e.forget_peer(M, T);
        assert_eq!(declined_by(&e.check(&at("172.16.5.5", 5, 100))), None);
        assert_eq!(declined_by(&e.check(&at("172.16.5.9", 6, 100))), None);
    }

    /// A terminal held at start (its move's alert still open) is declined by the merchant's
    /// declining network rule, renamed since or not, with no second alert, until an operator
    /// clears it; under rules that only alert on a move, or none, it is not held.
    #[test]
    fn a_terminal_held_at_start_is_declined_without_a_second_alert() {
        let at = |id| Request {
            peer: Some("172.16.5.5".parse().unwrap()),
            ..sale(id, 100, id)
        };
        let mut e = engine(
            r#"{"id": "watch", "kind": "peer-change", "action": "alert"},
               {"id": "renamed", "kind": "peer-change", "action": "decline"}"#,
        );
        e.hold_moved(M, T, 0);
        let held = e.check(&at(1));
        assert_eq!(declined_by(&held), Some("renamed"));
        assert!(held.alerts.is_empty(), "{held:?}");
        // Nor hours later: its alert is open until an operator clears it.
        let mut alone = engine(r#"{"id": "moved", "kind": "peer-change", "action": "decline"}"#);
        alone.hold_moved(M, T, 0);
        let later = alone.check(&Request {
            now_ms: 2 * PEER_ALERT_QUIET_MS,
            ..at(9)
        });
        assert_eq!(declined_by(&later), Some("moved"));
        assert!(later.alerts.is_empty(), "{later:?}");
        e.forget_peer(M, T);
        assert_eq!(declined_by(&e.check(&at(2))), None);
        for rules in [
            r#"{"id": "moved", "kind": "peer-change", "action": "alert"}"#,
            r#"{"id": "cap", "kind": "amount-max", "max_fen": 10000}"#,
        ] {
            let mut e = engine(rules);
            e.hold_moved(M, T, 0);
            let v = e.check(&at(1));
            assert_eq!(declined_by(&v), None, "{rules}");
            assert!(v.alerts.is_empty(), "{rules}: {v:?}");
        }
    }

    /// More new cards than the engine keeps: memory stays bounded, a card seen within the
    /// last generation keeps its history, and a card new after the flood is judged (a full map
    /// used to leave every new card untracked).
    #[test]
    fn a_flood_of_new_cards_leaves_no_new_card_untracked() {
        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "window_s": 60, "attempts_max": 3,
                "declines_max": 10}"#,
        );
        let mut txn = 0;
        let mut attempt = |e: &mut Engine, card: u64, now: i64| {
            txn += 1;
            let r = Request {
                card_key: Some(card),
                ..sale(txn, 100, now)
            };
            let verdict = e.check(&r);
            e.observe(&answer(&r, b"00"));
            declined_by(&verdict).map(str::to_owned)
        };
        let flood = |e: &mut Engine, from: u64, count: usize| {
            for card in from..from + count as u64 {
                e.check(&Request {
                    card_key: Some(card),
                    ..sale(0, 100, 1_000)
                });
            }
        };
        assert_eq!(attempt(&mut e, 3, 0), None);
        assert_eq!(attempt(&mut e, 3, 1), None);
        flood(&mut e, 1_000_000, CARDS_PER_GENERATION);
        // Card 3 went old with the first full generation, history and all.
        assert_eq!(attempt(&mut e, 3, 2_000), None);
        assert_eq!(attempt(&mut e, 3, 2_001).as_deref(), Some("vel"));
        flood(&mut e, 2_000_000, CARDS_TRACKED_MAX + 10);
        assert!(e.tracked().0 <= CARDS_TRACKED_MAX, "{}", e.tracked().0);
        for n in 0..3 {
            assert_eq!(attempt(&mut e, 2, 3_000 + n), None, "attempt {n}");
        }
        assert_eq!(attempt(&mut e, 2, 3_010).as_deref(), Some("vel"));
    }

    #[test]
    fn card_velocity_attempts_and_declines() {
        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "window_s": 60, "attempts_max": 3,
                "declines_max": 2}"#,
        );
        for i in 0..3 {
            let r = sale(i, 100, i * 1_000);
            assert_eq!(declined_by(&e.check(&r)), None, "attempt {i}");
            e.observe(&answer(&r, b"00"));
        }
        // The fourth attempt within a minute is one too many.
        let v = e.check(&sale(3, 100, 3_000));
        assert_eq!(declined_by(&v), Some("vel"));
        assert_eq!(&v.decline.as_ref().unwrap().kind.response_code(), b"65");
        assert_eq!(v.decline.unwrap().txn_ids, vec![0, 1, 2, 3]);
        // A minute later the window has moved on.
        assert_eq!(declined_by(&e.check(&sale(4, 100, 62_000))), None);

        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "window_s": 60, "attempts_max": 10,
                "declines_max": 2}"#,
        );
        let mut alerts = Vec::new();
        for i in 0..2 {
            let r = sale(i, 100, i);
            assert_eq!(declined_by(&e.check(&r)), None);
            alerts.extend(e.observe(&answer(&r, b"51")));
        }
        assert_eq!(alerts.len(), 1, "one alert when the threshold is crossed");
        assert_eq!(declined_by(&e.check(&sale(5, 100, 10))), Some("vel"));
        // Another card is unaffected.
        let other = Request {
            card_key: Some(8),
            ..sale(6, 100, 10)
        };
        assert_eq!(declined_by(&e.check(&other)), None);
    }

    /// A card velocity alert that was not written (`unalert`, by card) is raised again by the
    /// card's next attempt, not kept quiet for the rule's window.
    #[test]
    fn a_card_velocity_alert_not_written_is_raised_again() {
        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "action": "alert", "window_s": 60,
                "attempts_max": 2, "declines_max": 10}"#,
        );
        let mut raised = Vec::new();
        for i in 0..4 {
            let v = e.check(&sale(i, 100, i));
            assert_eq!(declined_by(&v), None, "an alert rule declines nothing");
            raised.push(v.alerts.len());
        }
        assert_eq!(raised, [0, 0, 1, 0], "once per window");
        e.unalert(T, Some(7), "vel");
        assert_eq!(e.check(&sale(5, 100, 5)).alerts.len(), 1, "raised again");
    }

    #[test]
    fn card_testing_alerts_then_declines_small_attempts() {
        let mut e = card_testing(3);
        let mut alerts = Vec::new();
        for i in 0..3 {
            let r = Request {
                card_key: Some(100 + i as u64),
                ..sale(i, 100, i * 10)
            };
            assert_eq!(declined_by(&e.check(&r)), None);
            alerts.extend(e.observe(&answer(&r, b"14")));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].txn_ids, vec![0, 1, 2]);
        assert_eq!(&*alerts[0].rule_id, "ct");
        let probe = e.check(&sale(10, 500, 100));
        assert_eq!(declined_by(&probe), Some("ct"));
        assert_eq!(&probe.decline.unwrap().kind.response_code(), b"59");
        // A genuine large sale still goes through; so does everything after the window.
        assert_eq!(declined_by(&e.check(&sale(11, 50_000, 100))), None);
        assert_eq!(declined_by(&e.check(&sale(12, 500, 700_000))), None);
        // Issuer outages are not card testing.
        let mut e = card_testing(2);
        for i in 0..5 {
            let r = sale(i, 100, i);
            e.check(&r);
            assert!(e.observe(&answer(&r, b"91")).is_empty());
        }
        assert_eq!(declined_by(&e.check(&sale(9, 100, 9))), None);
        // Nor are refused refunds, voids and completions: no card is being tried.
        let mut e = card_testing(2);
        for (i, class) in [
            TxnClass::Credit,
            TxnClass::Void,
            TxnClass::Capture,
            TxnClass::Credit,
        ]
        .into_iter()
        .enumerate()
        {
            let r = Request {
                class,
                card_key: Some(200 + i as u64),
                ..sale(i as i64, 100, i as i64)
            };
            e.check(&r);
            assert!(e.observe(&answer(&r, b"25")).is_empty());
        }
        assert_eq!(declined_by(&e.check(&sale(20, 100, 20))), None);
    }

    /// Balance inquiries on stolen numbers are card testing whatever amount field 4 carries:
    /// their declines count as small ones.
    #[test]
    fn card_testing_counts_inquiries_whatever_their_amount() {
        let mut e = card_testing(3);
        let mut alerts = Vec::new();
        for i in 0..3 {
            let r = Request {
                class: TxnClass::Inquiry,
                amount_fen: 100_000,
                card_key: Some(100 + i as u64),
                ..sale(i, 100, i * 10)
            };
            assert_eq!(declined_by(&e.check(&r)), None);
            alerts.extend(e.observe(&answer(&r, b"14")));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let next = Request {
            class: TxnClass::Inquiry,
            amount_fen: 100_000,
            card_key: Some(200),
            ..sale(5, 100, 50)
        };
        assert_eq!(declined_by(&e.check(&next)), Some("ct"));
    }

    /// Declines about the merchant's or terminal's set-up (03 invalid merchant, 58 not allowed
    /// for this terminal, 95 a reconciliation error) are not cards being tried.
    #[test]
    fn set_up_declines_are_not_card_testing() {
        for code in [b"03", b"58", b"95", b"25", b"13"] {
            let mut e = card_testing(2);
            for i in 0..4 {
                let r = Request {
                    card_key: Some(300 + i as u64),
                    ..sale(i, 100, i)
                };
                e.check(&r);
                assert!(e.observe(&answer(&r, code)).is_empty(), "{code:?}");
            }
            assert_eq!(declined_by(&e.check(&sale(9, 100, 9))), None, "{code:?}");
        }
    }

    #[test]
    fn wrong_pins_across_cards() {
        let mut e =
            engine(r#"{"id": "pins", "kind": "wrong-pins", "window_s": 300, "cards_max": 3}"#);
        let mut alerts = Vec::new();
        // The same card twice counts once.
        for (i, card) in [1u64, 1, 2].into_iter().enumerate() {
            let r = Request {
                card_key: Some(card),
                ..sale(i as i64, 100, i as i64)
            };
            e.check(&r);
            alerts.extend(e.observe(&answer(&r, b"55")));
        }
        assert!(alerts.is_empty());
        assert_eq!(declined_by(&e.check(&sale(5, 100, 5))), None);
        let third = Request {
            card_key: Some(3),
            ..sale(6, 100, 6)
        };
        e.check(&third);
        // A PIN block that does not decode for its card (99) is a wrong PIN too.
        let alerts = e.observe(&answer(&third, b"99"));
        assert_eq!(alerts.len(), 1);
        assert_eq!(declined_by(&e.check(&sale(7, 100, 7))), Some("pins"));
    }

    #[test]
    fn peer_change_alerts_once_per_move() {
        let mut e = engine(r#"{"id": "moved", "kind": "peer-change"}"#);
        let at = |ip: &str, id| Request {
            peer: Some(ip.parse().unwrap()),
            ..sale(id, 100, id)
        };
        assert!(e.check(&at("10.1.2.3", 1)).alerts.is_empty());
        assert!(e.check(&at("10.1.2.99", 2)).alerts.is_empty(), "same /24");
        let moved = e.check(&at("172.16.5.5", 3));
        assert_eq!(declined_by(&moved), None);
        assert_eq!(moved.alerts.len(), 1);
        for words in [&moved.alerts[0].detail.en, &moved.alerts[0].detail.zh] {
            assert!(words.contains("172.16.5.0/24"), "{words}");
            assert!(!words.contains("172.16.5.5"), "{words}");
        }
        assert!(e.check(&at("172.16.5.6", 4)).alerts.is_empty(), "learnt");
    }

    #[test]
    fn a_terminal_that_moved_may_still_give_money_back() {
        let mut e = engine(r#"{"id": "moved", "kind": "peer-change", "action": "decline"}"#);
        let at = |ip: &str, id, class| Request {
            peer: Some(ip.parse().unwrap()),
            class,
            ..sale(id, 100, id)
        };
        assert_eq!(
            declined_by(&e.check(&at("10.1.2.3", 1, TxnClass::Sale))),
            None
        );
        let sale_there = e.check(&at("172.16.5.5", 2, TxnClass::Sale));
        assert_eq!(declined_by(&sale_there), Some("moved"));
        for (id, class) in [(3, TxnClass::Void), (4, TxnClass::Credit)] {
            assert_eq!(declined_by(&e.check(&at("172.16.5.5", id, class))), None);
        }
        assert_eq!(
            declined_by(&e.check(&at("172.16.5.5", 5, TxnClass::Sale))),
            Some("moved"),
            "still not learnt"
        );
    }

    #[test]
    fn mcc_profile() {
        let mut e = engine(r#"{"id": "mcc", "kind": "mcc-profile"}"#);
        // A restaurant (5812): up to ¥10,000 a ticket is ordinary.
        assert!(e.check(&sale(1, 900_000, 0)).alerts.is_empty());
        let odd = e.check(&sale(2, 5_000_000, 0));
        assert_eq!(odd.alerts.len(), 1);
        assert!(odd.alerts[0].detail.en.contains("5812"));
        assert!(odd.alerts[0].detail.zh.contains("类别 5812"));
        // Categories without a profile are not judged.
        let unknown = Request {
            mcc: "0000",
            ..sale(3, 5_000_000, 0)
        };
        assert!(e.check(&unknown).alerts.is_empty());
    }

    #[test]
    fn state_is_bounded() {
        let mut e = engine(
            r#"{"id": "vel", "kind": "card-velocity", "window_s": 60, "attempts_max": 60,
                "declines_max": 60}"#,
        );
        for i in 0..1_000 {
            let r = sale(i, 100, i);
            e.check(&r);
            e.observe(&answer(&r, b"51"));
        }
        assert!(e.cards.get(&7).unwrap().events.len() <= EVENTS_PER_KEY_MAX);
        assert!(e.terminals.get(T).unwrap().declines.len() <= EVENTS_PER_KEY_MAX);
    }

    #[test]
    fn merchants_without_rules_cost_nothing() {
        let mut e = Engine::new(Arc::new(RuleBook::empty()));
        let r = sale(1, 100, 0);
        assert_eq!(e.check(&r), Verdict::default());
        assert!(e.observe(&answer(&r, b"51")).is_empty());
        assert_eq!(e.tracked(), (0, 0, 0));
    }
}
