//! The switch's side of merchant and risk controls: which merchants may take cards (refreshed
//! from the store), the rule engine with its windows, and the alerts it raises, written to the
//! store for operators and the notification outbox.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use domain::{FailureKind, Pan};
use risk::{CardClass, Engine, Hit, MerchantGate, RuleBook, TxnClass};
use store::risk::{AlertAction, AlertState, MerchantState, RiskAlertRow, RiskRecord};
use store::{EventRow, Record, Store, StoreError, TxnKind, TxnState};
use tokio::sync::watch;

use crate::core::{Core, RC_INVALID_MERCHANT, Sequence, Terminal};
use crate::ledger::Answer;

tokio::task_local! {
    /// The network address of the terminal connection a request came in on.
    static PEER: Option<IpAddr>;
}

/// Runs `f` with the connection's peer address visible to the risk checks.
pub(crate) async fn with_peer<F: std::future::Future>(peer: Option<IpAddr>, f: F) -> F::Output {
    PEER.scope(peer, f).await
}

/// The peer of the connection being served, if any.
pub(crate) fn peer() -> Option<IpAddr> {
    PEER.try_with(|p| *p).ok().flatten()
}

/// What the switch knows of a merchant.
#[derive(Clone, Debug)]
pub(crate) struct MerchantInfo {
    pub state: MerchantState,
    pub mcc: String,
    pub name: String,
}

/// How far behind the newest resolution seen the refresh keeps looking for resolved
/// peer-change alerts.
const RESOLVED_OVERLAP_MS: i64 = 600_000;

/// The alert kind of the peer-change rule.
const PEER_CHANGE: &str = risk::RuleKind::PeerChange { prefix_bits: 0 }.key();

/// Bytes of a merchant name in field 63 (ans..163, after the 3-byte card organisation).
const FIELD63_NAME_LEN_MAX: usize = 160;

/// The diagnosis text of a merchant that may not take cards.
pub const MERCHANT_NOT_APPROVED: &str = "merchant not approved: complete the review";

/// Merchant states, the rule engine and the alert id sequence of one switch.
pub(crate) struct RiskGate {
    merchants: RwLock<HashMap<String, MerchantInfo>>,
    engine: Mutex<Engine>,
    alert_ids: Sequence,
    /// Terminals alerted for sending another merchant's ID, and until when another alert of
    /// theirs is not raised (`MID_MISMATCH_QUIET_MS`): one alert per terminal and hour, not
    /// one per request of a terminal set up for another merchant. At most
    /// `MID_MISMATCH_TERMINALS_MAX`; emptied when full.
    mismatch_alerted: Mutex<HashMap<String, i64>>,
    /// The engine's count of untracked terminals and merchants last looked at (`say_untracked`).
    untracked_said: AtomicU64,
}

/// How long a terminal's merchant-ID mismatch is alerted once.
const MID_MISMATCH_QUIET_MS: i64 = 3_600_000;
/// Terminals whose mismatch alert is remembered at once.
const MID_MISMATCH_TERMINALS_MAX: usize = 10_000;

/// An alert on its way to the store.
struct PendingAlert {
    kind: &'static str,
    rule_id: String,
    /// The card a card rule's alert is about (its quiet window is per card).
    card_key: Option<u64>,
    action: AlertAction,
    detail: risk::Words,
    txn_ids: Vec<i64>,
}

/// A refusal by the merchant or risk checks: field 39 and the timeline's words.
pub(crate) struct Refusal {
    pub code: [u8; 2],
    pub why: String,
}

fn class_of(kind: TxnKind) -> TxnClass {
    match kind {
        TxnKind::Purchase => TxnClass::Sale,
        TxnKind::PreAuth => TxnClass::Hold,
        TxnKind::Completion => TxnClass::Capture,
        TxnKind::BalanceInquiry => TxnClass::Inquiry,
        TxnKind::PurchaseVoid | TxnKind::PreAuthVoid => TxnClass::Void,
        TxnKind::CompletionVoid | TxnKind::Refund | TxnKind::Reversal => TxnClass::Credit,
    }
}

/// Whether an approved `kind` takes its original's sale (or pre-authorisation) back out of
/// the day's sales, on the original's day: a void of one.
pub(crate) fn voids_a_sale(kind: TxnKind) -> bool {
    class_of(kind) == TxnClass::Void
}

/// What a terminal reversal of an approved `kind` of `amount_fen` does to the day's sales: a
/// sale (or pre-authorisation) goes back out, a void's sale comes back in.
pub(crate) fn sales_reversed(kind: TxnKind, amount_fen: i64) -> i64 {
    match class_of(kind) {
        TxnClass::Sale | TxnClass::Hold => -amount_fen,
        TxnClass::Void => amount_fen,
        TxnClass::Capture | TxnClass::Credit | TxnClass::Inquiry => 0,
    }
}

fn card_key(fingerprint: Option<&[u8; 32]>) -> Option<u64> {
    let head: [u8; 8] = fingerprint?.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// Merchants as the store has them: a profile's state, else the one `Status` implies.
fn load_merchants(store: &dyn Store) -> Result<HashMap<String, MerchantInfo>, StoreError> {
    let profiles: HashMap<String, MerchantState> = store
        .merchant_profiles()?
        .into_iter()
        .map(|p| (p.mid, p.state))
        .collect();
    Ok(store
        .merchants()?
        .into_iter()
        .map(|m| {
            let state = profiles
                .get(&m.mid)
                .copied()
                .unwrap_or_else(|| MerchantState::from_status(m.status));
            (
                m.mid,
                MerchantInfo {
                    state,
                    mcc: m.mcc,
                    name: m.name,
                },
            )
        })
        .collect())
}

impl RiskGate {
    /// Loads the merchants and today's approved sales (for daily limits); reads the store
    /// synchronously (start-up).
    pub fn load(
        store: &dyn Store,
        book: Arc<RuleBook>,
        now_ms: i64,
    ) -> Result<RiskGate, StoreError> {
        let mut engine = Engine::new(book);
        if !engine.book().is_empty() {
            // The calendar day's sales that stand: approved, not voided or reversed since; a
            // pre-authorisation completed since counts at its completion's amount (the rest of
            // the hold was freed). Rows cleared today include yesterday's after the cut-over,
            // hence the day check.
            let today = crate::clock::LocalTime::from_ms(now_ms);
            let mut holds: HashMap<i64, (String, i64)> = HashMap::new();
            let mut completions: Vec<(i64, i64)> = Vec::new();
            store.each_txn_since(&today.yyyymmdd(), &mut |row| {
                let counted = match class_of(row.kind) {
                    TxnClass::Sale => row.state == TxnState::Approved,
                    TxnClass::Hold => {
                        matches!(row.state, TxnState::Approved | TxnState::Completed)
                    }
                    _ => false,
                };
                let today_s = crate::clock::LocalTime::from_ms(row.received_at_ms).day_number
                    == today.day_number;
                if counted && today_s {
                    engine.record_sale(&row.mid, today.day_number, row.amount_fen);
                    if row.kind == TxnKind::PreAuth {
                        holds.insert(row.id, (row.mid.clone(), row.amount_fen));
                    }
                }
                if row.kind == TxnKind::Completion
                    && row.state == TxnState::Approved
                    && let Some(hold) = row.original_id
                {
                    completions.push((hold, row.amount_fen));
                }
            })?;
            // Matched once all are read.
            for (hold, completed_fen) in completions {
                if let Some((mid, held_fen)) = holds.get(&hold) {
                    engine.adjust_sales(mid, today.day_number, completed_fen - held_fen);
                }
            }
        }
        // Terminals a declining peer-change rule held, their alerts not yet looked at: still
        // held (their usual network is not known after a start). All of them, however many
        // newer alerts of other kinds are open (a page of the newest lost the older holds).
        for (mid, tid) in store.risk_open_declining("peer-change")? {
            engine.hold_moved(&mid, &tid, now_ms);
        }
        Ok(RiskGate {
            merchants: RwLock::new(load_merchants(store)?),
            engine: Mutex::new(engine),
            alert_ids: Sequence::new("risk_alert"),
            mismatch_alerted: Mutex::default(),
            untracked_said: AtomicU64::new(0),
        })
    }

    pub fn merchant(&self, mid: &str) -> Option<MerchantInfo> {
        self.merchants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(mid)
            .cloned()
    }

    /// Logs that the engine's maps were full and a terminal or merchant went untracked (its
    /// daily limit and rules with history blind for that request): at the first time, and at
    /// each power of two after, so a node past its design point says so without a flood.
    fn say_untracked(&self, untracked: u64) {
        let said = self.untracked_said.fetch_max(untracked, Ordering::AcqRel);
        if untracked > said && untracked.is_power_of_two() {
            tracing::error!(
                untracked,
                "risk rules: terminals or merchants beyond the {} tracked went unjudged by their \
                 rules with history (daily limits, card testing, wrong PINs, the peer)",
                risk::TERMINALS_TRACKED_MAX
            );
        }
    }

    pub fn replace_book(&self, book: Arc<RuleBook>) {
        self.engine().replace_book(book);
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `judge` (a check or an observation, which may find the engine's maps full) on the
    /// engine, then says if terminals or merchants went untracked.
    fn judged<T>(&self, judge: impl FnOnce(&mut Engine) -> T) -> T {
        let (judged, untracked) = {
            let mut engine = self.engine();
            (judge(&mut engine), engine.untracked())
        };
        self.say_untracked(untracked);
        judged
    }
}

impl Core {
    /// The merchant and rule checks of a request about to go to the issuer, received on
    /// calendar day `day` (China time). `None`: go on. Alert-only rules that fired are written
    /// on their own task.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn risk_check(
        self: &Arc<Self>,
        terminal: &Terminal,
        txn_id: i64,
        kind: TxnKind,
        amount_fen: i64,
        day: i64,
        pan: Option<&Pan>,
        fingerprint: Option<&[u8; 32]>,
    ) -> Option<Refusal> {
        let merchant = self.risk.merchant(&terminal.mid);
        let gate = merchant
            .as_ref()
            .map_or(MerchantGate::NotApproved(MerchantState::Closed), |m| {
                MerchantGate::for_request(m.state, class_of(kind))
            });
        if let MerchantGate::NotApproved(state) = gate {
            return Some(Refusal {
                code: RC_INVALID_MERCHANT,
                why: format!(
                    "{MERCHANT_NOT_APPROVED} (merchant {} is {state}; diagnosis {})",
                    terminal.mid,
                    FailureKind::MerchantNotApproved.key()
                ),
            });
        }
        let mcc = merchant.as_ref().map_or("", |m| m.mcc.as_str());
        let now_ms = self.clock.now_ms();
        let request = risk::Request {
            txn_id,
            mid: &terminal.mid,
            tid: &terminal.tid,
            mcc,
            class: class_of(kind),
            card: pan.map(|p| CardClass::of(&self.directory.lookup(p))),
            card_key: card_key(fingerprint),
            amount_fen,
            // The day the sale is counted in (`Entry::received_day`), not the clock's now: a
            // sale received at 23:59:59.9 and checked after midnight was judged against the
            // new day's empty total and then counted in neither.
            day,
            now_ms,
            peer: peer(),
        };
        let verdict = self.risk.judged(|engine| engine.check(&request));
        if !verdict.alerts.is_empty() {
            self.raise_alerts(terminal, request.card_key, verdict.alerts);
        }
        let hit = verdict.decline?;
        let code = hit.kind.response_code();
        Some(Refusal {
            code,
            why: format!(
                "risk rule {} \"{}\": {} (diagnosis {})",
                hit.kind.key(),
                hit.rule_id,
                hit.detail.en,
                hit.kind.diagnosis().key()
            ),
        })
    }

    /// The merchant's registered name for field 63 of a response, after the card organisation,
    /// so the receipt shows the name the acquirer knows, not one a terminal was set up to print.
    /// Only for names a terminal can print as sent: printable ASCII (a Chinese name would need
    /// GBK, which this host does not encode), within the field's length.
    pub(crate) fn registered_name_field63(&self, mid: &str) -> Option<String> {
        let name = self.risk.merchant(mid)?.name;
        let printable = !name.is_empty() && name.bytes().all(|b| matches!(b, 0x20..=0x7E));
        (printable && name.len() <= FIELD63_NAME_LEN_MAX).then_some(name)
    }

    /// Feeds the answer of a request to the rule windows; writes the alerts it raises.
    /// `sale_day`: the calendar day of the sale it counts or takes back (see
    /// `risk::Outcome::sale_day`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn risk_observe(
        self: &Arc<Self>,
        terminal: &Terminal,
        txn_id: i64,
        kind: TxnKind,
        amount_fen: i64,
        fingerprint: Option<&[u8; 32]>,
        sale_day: i64,
        answer: &Answer,
    ) {
        let now_ms = self.clock.now_ms();
        let outcome = risk::Outcome {
            txn_id,
            mid: &terminal.mid,
            tid: &terminal.tid,
            class: class_of(kind),
            card_key: card_key(fingerprint),
            amount_fen,
            day: crate::clock::LocalTime::from_ms(now_ms).day_number,
            sale_day,
            now_ms,
            response_code: answer.response_code,
        };
        let alerts = self.risk.judged(|engine| engine.observe(&outcome));
        if !alerts.is_empty() {
            self.raise_alerts(terminal, outcome.card_key, alerts);
        }
    }

    /// What an approved completion, or void of one, does to its pre-authorisation's day in the
    /// daily sales, as (day, change): a completion for less than the hold frees the rest of it
    /// (one for more is refused 64), its void puts the hold back whole. `None` for any other
    /// request, or when the index no longer holds the pre-authorisation (received before
    /// yesterday: a day no limit counts any more).
    pub(crate) fn hold_change(&self, entry: &crate::ledger::Entry) -> Option<(i64, i64)> {
        match entry.kind {
            TxnKind::Completion => {
                let hold = self.ledger.by_id(entry.linked_id()?)?;
                Some((hold.received_day, entry.amount_fen - hold.amount_fen))
            }
            TxnKind::CompletionVoid => {
                let completion = self.ledger.by_id(entry.linked_id()?)?;
                let hold = self.ledger.by_id(completion.linked_id()?)?;
                Some((hold.received_day, hold.amount_fen - completion.amount_fen))
            }
            _ => None,
        }
    }

    /// A terminal reversal moved the merchant's sales of calendar day `day` (that of the sale
    /// it takes out or puts back; nothing when that day is over) by `delta_fen`.
    pub(crate) fn risk_adjust_sales(&self, mid: &str, day: i64, delta_fen: i64) {
        if delta_fen == 0 {
            return;
        }
        self.risk.engine().adjust_sales(mid, day, delta_fen);
    }

    /// A request refused after the risk checks: what it held against a daily limit is free.
    pub(crate) fn risk_release(&self, mid: &str, txn_id: i64) {
        self.risk.engine().release(mid, txn_id);
    }

    /// A terminal sent a merchant ID other than its own: declined 03 by the caller, and an
    /// alert, as it is the first sign of a terminal moved to another business.
    pub(crate) fn risk_mid_mismatch(self: &Arc<Self>, terminal: &Terminal, sent: Option<&str>) {
        let sent: String = sent
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(15)
            .collect();
        let now_ms = self.clock.now_ms();
        let first = {
            let mut alerted = self
                .risk
                .mismatch_alerted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match alerted.get(&terminal.tid) {
                Some(&until) if until > now_ms => false,
                _ => {
                    if alerted.len() >= MID_MISMATCH_TERMINALS_MAX {
                        alerted.retain(|_, until| *until > now_ms);
                        if alerted.len() >= MID_MISMATCH_TERMINALS_MAX {
                            alerted.clear();
                        }
                    }
                    alerted.insert(
                        terminal.tid.clone(),
                        now_ms.saturating_add(MID_MISMATCH_QUIET_MS),
                    );
                    true
                }
            }
        };
        if !first {
            tracing::debug!(tid = %terminal.tid, "merchant ID mismatch: declined 03 (alerted already)");
            return;
        }
        tracing::warn!(tid = %terminal.tid, registered = %terminal.mid, %sent, "merchant ID mismatch: declined 03");
        let alert = PendingAlert {
            kind: FailureKind::MerchantIdMismatch.key(),
            rule_id: "one-terminal-one-merchant".to_owned(),
            card_key: None,
            action: AlertAction::Decline,
            detail: risk::Words {
                zh: format!(
                    "终端 {} 登记在商户 {} 下，却送来商户号 {sent:?}：已拒绝（03）",
                    terminal.tid, terminal.mid
                ),
                en: format!(
                    "terminal {} registered to merchant {} sent merchant ID {sent:?}: declined \
                     03 (diagnosis {})",
                    terminal.tid,
                    terminal.mid,
                    FailureKind::MerchantIdMismatch.key()
                ),
            },
            txn_ids: Vec::new(),
        };
        self.write_alerts(&terminal.mid, &terminal.tid, vec![alert]);
    }

    fn raise_alerts(self: &Arc<Self>, terminal: &Terminal, card_key: Option<u64>, hits: Vec<Hit>) {
        let alerts = hits
            .into_iter()
            .map(|hit| PendingAlert {
                kind: hit.kind.key(),
                rule_id: hit.rule_id.to_string(),
                card_key,
                action: match hit.action {
                    risk::Action::Decline => AlertAction::Decline,
                    risk::Action::Alert => AlertAction::Alert,
                },
                detail: hit.detail,
                txn_ids: hit.txn_ids,
            })
            .collect();
        self.write_alerts(&terminal.mid, &terminal.tid, alerts);
    }

    /// Writes alerts (and a timeline line on each transaction behind them) on their own task:
    /// the terminal's answer does not wait for an operator's notice.
    fn write_alerts(self: &Arc<Self>, mid: &str, tid: &str, alerts: Vec<PendingAlert>) {
        let core = Arc::clone(self);
        let (mid, tid) = (mid.to_owned(), tid.to_owned());
        self.tasks.spawn(async move {
            let mut records = Vec::with_capacity(alerts.len() * 2);
            // The rules whose alerts are in `records`, and those not numbered.
            let mut rules: Vec<(String, Option<u64>)> = Vec::with_capacity(alerts.len());
            let mut unwritten: Vec<(String, Option<u64>)> = Vec::new();
            for alert in alerts {
                let id = match core.risk.alert_ids.next(core.store.as_ref()).await {
                    Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
                    Err(error) => {
                        tracing::warn!(%error, "cannot number a risk alert");
                        unwritten.push((alert.rule_id, alert.card_key));
                        continue;
                    }
                };
                rules.push((alert.rule_id.clone(), alert.card_key));
                tracing::warn!(alert = id, rule = %alert.rule_id, kind = alert.kind, %tid, detail = %alert.detail.en, "risk alert");
                let now_ms = core.clock.now_ms();
                if let Some(&last) = alert.txn_ids.last() {
                    records.push(Record::Event(EventRow {
                        txn_id: last,
                        at_ms: now_ms,
                        kind: "risk_alert".to_owned(),
                        detail: format!(
                            "risk alert {id} ({}): {}",
                            alert.kind, alert.detail.en
                        ),
                    }));
                }
                records.push(Record::Risk(RiskRecord::Alert(Box::new(RiskAlertRow {
                    id,
                    kind: alert.kind.to_owned(),
                    rule_id: alert.rule_id,
                    action: alert.action,
                    mid: mid.clone(),
                    tid: tid.clone(),
                    detail: alert.detail.en,
                    detail_zh: Some(alert.detail.zh),
                    txn_ids: alert.txn_ids,
                    raised_at_ms: now_ms,
                    state: AlertState::Open,
                    resolved_by: None,
                    resolved_at_ms: None,
                    resolution: None,
                }))));
            }
            let written = if records.is_empty() {
                false
            } else if let Err(error) = core.persist(records).await {
                tracing::warn!(%error, %tid, "cannot write risk alerts");
                false
            } else {
                true
            };
            if !written {
                // A mismatch alert not written starts no quiet hour: the next request raises
                // it again.
                core.risk
                    .mismatch_alerted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&tid);
                unwritten.extend(rules);
            }
            // Nor does a rule's: a declining rule (a terminal that moved) would refuse the
            // terminal for its quiet period with no alert for an operator to clear.
            if !unwritten.is_empty() {
                let mut engine = core.risk.engine();
                for (rule, card_key) in &unwritten {
                    engine.unalert(&tid, *card_key, rule);
                }
            }
        });
    }
}

/// Resolved peer-change alerts read per refresh.
const RESOLVED_PAGE: u32 = 1_000;

/// Re-reads merchant states and terminal statuses every `interval`, so an operator's review
/// or suspension takes effect on the running switch.
pub(crate) async fn refresh(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let interval = core.config.risk_refresh;
    // Peer-change alerts resolved from this time on free their terminal's network. It trails
    // the newest resolution seen by `RESOLVED_OVERLAP_MS`, so a resolution stamped by another
    // process's clock, or committed late, is still seen; each is acted on once.
    let mut resolved_since_ms = core.clock.now_ms().saturating_sub(RESOLVED_OVERLAP_MS);
    let mut handled: HashSet<(String, i64)> = HashSet::new();
    loop {
        tokio::select! {
            // Stop first, and a fixed order: a seeded simulation replays exactly.
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        core.delete_ended_keys();
        // Before the rows are read: a key change here after it may be newer than a row.
        let noted = core.row_keys_noted();
        let loaded = core
            .read_store(move |store| {
                let resolved = store.risk_alerts_resolved_since(
                    PEER_CHANGE,
                    resolved_since_ms,
                    RESOLVED_PAGE,
                )?;
                Ok::<_, StoreError>((load_merchants(store)?, store.terminals()?, resolved))
            })
            .await;
        let (merchants, terminals, resolved) = match loaded {
            Some(Ok(loaded)) => loaded,
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot refresh merchants");
                continue;
            }
            None => continue,
        };
        *core
            .risk
            .merchants
            .write()
            .unwrap_or_else(PoisonError::into_inner) = merchants;
        // An operator has looked at a terminal's move (cleared the alert, or suspended the
        // terminal): a declining peer-change rule stops declining it, and the terminal's next
        // request teaches its network.
        // A full page (a bulk clear): the next read starts at its last, without the overlap,
        // or the same page would be read for ever and nothing after it seen. (A thousand
        // resolutions stamped in one millisecond would still hold it; a resolution another
        // node stamps late within such a burst may be missed.)
        let full_page = u32::try_from(resolved.len()).unwrap_or(u32::MAX) >= RESOLVED_PAGE;
        if full_page && let Some(last) = resolved.last() {
            resolved_since_ms = resolved_since_ms.max(last.resolved_at_ms);
        }
        for alert in resolved {
            resolved_since_ms = resolved_since_ms.max(alert.resolved_at_ms - RESOLVED_OVERLAP_MS);
            if handled.insert((alert.tid.clone(), alert.resolved_at_ms)) {
                core.risk.engine().forget_peer(&alert.mid, &alert.tid);
            }
        }
        handled.retain(|(_, at)| *at >= resolved_since_ms);
        for row in &terminals {
            if let Some(current) = core.terminal(&row.tid)
                && current.status != row.status
            {
                tracing::info!(tid = %row.tid, status = %row.status, "terminal status changed");
                core.modify_terminal(&row.tid, |t| t.status = row.status);
            }
        }
        // Another node's sign-ins and sign-offs end the keys held here (`working_keys`).
        if let Some(noted) = &noted {
            core.keys_from_rows(&terminals, noted);
        }
    }
}

impl crate::SwitchHandle {
    /// New risk rules for the running switch; the rule windows keep their history.
    pub fn replace_risk_rules(&self, book: Arc<RuleBook>) {
        self.core.risk.replace_book(book);
    }

    /// The registered name of a merchant: what receipts and pages show, whatever a terminal
    /// may have been set up to print.
    pub fn merchant_name(&self, mid: &str) -> Option<String> {
        self.core.risk.merchant(mid).map(|m| m.name)
    }
}
