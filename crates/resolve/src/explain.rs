//! A stored transaction explained in plain words: its timeline (received, approved or declined
//! by whom and when, no answer, reversed, acknowledged, voided, refunded, pre-auth expiry) built
//! from the journal row, its events, the reversal queue and its linked transactions, in Chinese
//! and English, with the diagnosis of what went wrong. Times are China Standard Time.

use domain::IssuerDirectory;
use domain::diagnosis::{self, Diagnosis, FailureKind, Lang};
use serde::Serialize;
use store::{SafItem, SafState, Store, TxnKind, TxnRow, TxnState};
use switch::{BACK_OFFICE_TID, REFUND_DAYS_MAX};

use crate::ResolveError;
use crate::text::{Both, bank_info, clock, date, date_time, kind_text, yuan};

const MS_PER_DAY: i64 = 86_400_000;

/// The facts of a transaction a merchant may see (no PAN beyond the masked form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TxnSummary {
    pub id: i64,
    pub kind: String,
    pub mid: String,
    pub tid: String,
    pub batch_no: u32,
    pub stan: u32,
    pub rrn: Option<String>,
    pub amount_fen: i64,
    pub amount: String,
    pub refunded_fen: i64,
    pub masked_pan: Option<String>,
    pub last4: Option<String>,
    pub bank_code: Option<String>,
    pub bank_name: Both,
    pub card_type: Option<Both>,
    pub network: Both,
    pub issuer_link: Option<String>,
    pub auth_code: Option<String>,
    pub response_code: Option<String>,
    pub state: String,
    pub received_at_ms: i64,
    /// `2026-11-23 14:02:11`, China Standard Time.
    pub received_at: String,
    pub original_id: Option<i64>,
}

impl TxnSummary {
    pub fn of(directory: &IssuerDirectory, row: &TxnRow) -> TxnSummary {
        Self::with_card_of(directory, row, row)
    }

    /// `row`'s summary with the card, bank and network of `card` (a terminal's reversal carries
    /// no card number: its original's).
    fn with_card_of(directory: &IssuerDirectory, row: &TxnRow, card: &TxnRow) -> TxnSummary {
        let bank = bank_info(directory, card);
        TxnSummary {
            id: row.id,
            kind: row.kind.as_str().to_owned(),
            mid: row.mid.clone(),
            tid: row.tid.clone(),
            batch_no: row.batch_no,
            stan: row.stan,
            rrn: row.rrn.clone(),
            amount_fen: row.amount_fen,
            amount: yuan(row.amount_fen),
            refunded_fen: row.refunded_fen,
            masked_pan: card.pan.as_ref().map(|p| p.masked.clone()),
            last4: card.pan.as_ref().map(|p| p.last4.clone()),
            bank_code: bank.code,
            bank_name: bank.name,
            card_type: bank.card_type,
            network: bank.network,
            issuer_link: row.issuer.clone(),
            auth_code: row.auth_code.clone(),
            response_code: row.response_code.clone(),
            state: row.state.as_str().to_owned(),
            received_at_ms: row.received_at_ms,
            received_at: date_time(row.received_at_ms),
            original_id: row.original_id,
        }
    }
}

/// Where the transaction ended up, in one word a program can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still waiting for the issuer.
    InProgress,
    Approved,
    PartlyRefunded,
    Refunded,
    Voided,
    /// A pre-authorisation turned into a charge.
    Completed,
    /// A pre-authorisation never completed within the allowed days: its hold is released.
    PreAuthExpired,
    Declined,
    /// The issuer approved it, then it was reversed (the terminal never saw the answer, or
    /// the cashier cancelled) and the issuer acknowledged the reversal: the cardholder is not
    /// charged.
    ApprovedThenReversed,
    /// Approved, then reversed here; the issuer has not acknowledged the reversal yet, so the
    /// card may show the charge until it does.
    ApprovedReversalPending,
    /// No answer from the issuer; reversed in case the issuer had approved it.
    NoAnswerReversed,
    /// No answer and the reversal has not been acknowledged yet.
    ReversalPending,
    /// Reversed here, but the issuer refused the reversal: the card may still show the charge.
    ReversalRefused,
    /// Never reached a decision (issuer unavailable, unreadable answer).
    Failed,
}

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: i64,
    /// `14:02:11`, China Standard Time.
    pub time: String,
    /// A stable key: `received`, `approved`, `declined`, `no_answer`, `reversal_queued`,
    /// `reversed_by_terminal`, `reversal_acknowledged`, `reversal_original_unknown` (answered
    /// 25: the issuer never had the request), `reversal_refused`, `reversal_pending`,
    /// `voided`, `refunded`, `refund_declined`, `completed`, `pre_auth_hold`, `pre_auth_expired`,
    /// `issuer_unavailable`, `failed`, `linked`; for a terminal's reversal that was accepted,
    /// `reversal_nothing` (nothing to undo) or the reversal's own key.
    pub kind: &'static str,
    pub text: Both,
}

/// A transaction's story and diagnosis.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub txn: TxnSummary,
    pub outcome: Outcome,
    pub summary: Both,
    pub steps: Vec<Step>,
    /// What went wrong and what to do, when something did.
    pub diagnosis: Option<&'static Diagnosis>,
    /// For a refund, void, completion or reversal: the transaction it refers to.
    pub original_rrn: Option<String>,
}

impl Explanation {
    /// The timeline and diagnosis as text to read or copy.
    pub fn to_text(&self, lang: Lang) -> String {
        let t = &self.txn;
        let kind = store::TxnKind::parse(&t.kind)
            .map_or_else(|_| t.kind.clone(), |k| kind_text(k).get(lang).to_owned());
        let mut out = match lang {
            Lang::Zh => format!(
                "{kind} {}，RRN {}，终端 {}，{}\n结论：{}\n时间线（北京时间）：\n",
                t.amount,
                t.rrn.as_deref().unwrap_or("-"),
                t.tid,
                t.received_at,
                self.summary.zh
            ),
            Lang::En => format!(
                "{kind} of {}, RRN {}, terminal {}, {}\nOutcome: {}\nTimeline (China time):\n",
                t.amount,
                t.rrn.as_deref().unwrap_or("-"),
                t.tid,
                t.received_at,
                self.summary.en
            ),
        };
        for step in &self.steps {
            out.push_str(&format!("  {}  {}\n", step.time, step.text.get(lang)));
        }
        if let Some(d) = self.diagnosis {
            out.push_str(&diagnosis_text(d, lang));
        }
        out
    }
}

/// The diagnosis block shared by the text forms.
pub(crate) fn diagnosis_text(d: &Diagnosis, lang: Lang) -> String {
    let key = d.subject.key();
    let mut out = match lang {
        Lang::Zh => format!(
            "诊断：{key} {}\n  含义：{}\n  谁来处理：{}\n  能否重试：{}\n  联系发卡行：{}\n  对顾客说：“{}”\n  商户操作：\n",
            d.title.zh,
            d.meaning.zh,
            d.who_acts.text().zh,
            d.retry.text().zh,
            d.contact_when.zh,
            d.customer_message.zh
        ),
        Lang::En => format!(
            "Diagnosis: {key} {}\n  Meaning: {}\n  Who acts: {}\n  Retry: {}\n  Contact issuer: {}\n  Tell the customer: \"{}\"\n  Merchant steps:\n",
            d.title.en,
            d.meaning.en,
            d.who_acts.text().en,
            d.retry.text().en,
            d.contact_when.en,
            d.customer_message.en
        ),
    };
    for (i, step) in d.merchant_steps.iter().enumerate() {
        out.push_str(&format!("    {}. {}\n", i + 1, step.get(lang)));
    }
    out
}

/// Explains the transaction with this RRN, as of `now_ms` (for pre-auth expiry).
pub fn explain_rrn(
    store: &dyn Store,
    directory: &IssuerDirectory,
    rrn: &str,
    now_ms: i64,
) -> Result<Explanation, ResolveError> {
    let row = store
        .txn_by_rrn(rrn.trim())?
        .ok_or_else(|| ResolveError::NoSuchRrn(rrn.trim().to_owned()))?;
    explain_txn(store, directory, &row, now_ms)
}

fn step(at_ms: i64, kind: &'static str, text: Both) -> Step {
    Step {
        at_ms,
        time: clock(at_ms),
        kind,
        text,
    }
}

/// Whether `event` is the host's own reversal of an approval (its outcome written after the
/// terminal was told 96), not a terminal's.
fn reversed_by_host(event: &store::EventRow) -> bool {
    event.kind == "reversed" && event.detail.contains(switch::REVERSED_BY_HOST)
}

/// Who sent the request, in words.
fn origin(row: &TxnRow) -> Both {
    if row.tid == BACK_OFFICE_TID {
        Both::new(
            "收单后台（操作员批准）",
            "shoudan back office (operator approved)",
        )
    } else {
        Both::new(format!("终端 {}", row.tid), format!("terminal {}", row.tid))
    }
}

/// The row's code with the title of the entry it is diagnosed by: the risk rule's that declined
/// it (`rule`: the issuer was never asked, and the code's own title speaks of the card's
/// issuer), else `failure_of`'s where that says better what happened than the code's own.
fn row_code_title(row: &TxnRow, reversal_queued: bool, rule: Option<FailureKind>) -> Both {
    let code = row.response_code.as_deref().unwrap_or("??");
    match rule.or_else(|| failure_of(row, reversal_queued)) {
        Some(kind) => {
            let d = diagnosis::diagnose_failure(kind);
            Both::new(
                format!("{code}（{}）", d.title.zh),
                format!("{code} ({})", d.title.en),
            )
        }
        None => code_title(code),
    }
}

fn code_title(code: &str) -> Both {
    let d = diagnosis::diagnose_str(code);
    Both::new(
        format!("{code}（{}）", d.title.zh),
        format!("{code} ({})", d.title.en),
    )
}

/// Explains one journal row.
pub fn explain_txn(
    store: &dyn Store,
    directory: &IssuerDirectory,
    row: &TxnRow,
    now_ms: i64,
) -> Result<Explanation, ResolveError> {
    // Links cross no merchant's boundary (the switch refuses unlinked a request naming another
    // merchant's transaction; rows older than that rule may still be linked across): neither
    // merchant is shown the other's transaction.
    let original = match row.original_id {
        Some(id) => store.txn(id)?.filter(|o| o.mid == row.mid),
        None => None,
    };
    // A terminal's reversal carries no card number: its original's names the card and bank.
    let card = match (&row.pan, &original) {
        (None, Some(o)) => o,
        _ => row,
    };
    let bank = bank_info(directory, card).name;
    let kind = kind_text(row.kind);
    let amount = yuan(row.amount_fen);
    let who = origin(row);
    let mut steps = vec![step(
        row.received_at_ms,
        "received",
        Both::new(
            format!("{} 发起{} {amount}", who.zh, kind.zh),
            format!("{} sent a {} of {amount}", who.en, kind.en),
        ),
    )];
    let events = store.events(row.id)?;
    let reversal = store.reversal(row.id)?;
    // A risk rule's decline is diagnosed by the rule: the issuer was never asked.
    let rule = events
        .iter()
        .filter(|e| e.kind == "declined")
        .find_map(|e| rule_of_decline(&e.detail));
    let mut approved_at = None;
    let mut timed_out = false;
    // The host reversed an approval itself after the terminal was told 96: its outcome
    // written late (a "reversed" event saying so), or its outcome's commit taken for failed
    // though it landed (a reversal with reason 96 and no "reversed" event at all). A
    // terminal's reversal, whose reason may be 96 too (it could not complete), always writes
    // its own "reversed" event.
    let host_reversed = events.iter().any(reversed_by_host)
        || (reversal.as_ref().is_some_and(|r| r.reason == "96")
            && !events.iter().any(|e| e.kind == "reversed"));
    for event in &events {
        let at = event.at_ms;
        match event.kind.as_str() {
            "approved" => {
                approved_at = Some(at);
                let auth = row.auth_code.as_deref().unwrap_or("-");
                steps.push(step(
                    at,
                    "approved",
                    Both::new(
                        format!("{}批准，授权码 {auth}", bank.zh),
                        format!("approved by {}, auth code {auth}", bank.en),
                    ),
                ));
            }
            "declined" if domain::diagnosis::issuer_link_code(&event.detail).is_some() => {
                let theirs = domain::diagnosis::issuer_link_code(&event.detail).unwrap_or("--");
                steps.push(step(
                    at,
                    "declined",
                    Both::new(
                        format!(
                            "{}以代码 {theirs} 拒绝：这个代码说的是收单机构与{}之间的线路（密钥、\
                             报文格式、签到），不是终端或卡的问题；终端收到 96（系统故障），\
                             需收单机构处理",
                            bank.zh, bank.zh
                        ),
                        format!(
                            "declined by {} with code {theirs}, which is about the acquirer's \
                             link to {} (keys, message format, sign-in), not the terminal or the \
                             card: the terminal was told 96 (system error) and the acquirer must \
                             act",
                            bank.en, bank.en
                        ),
                    ),
                ));
            }
            "declined" => {
                let code = row_code_title(row, reversal.is_some(), rule);
                let by = if row.sent_at_ms.is_none() {
                    Both::new("收单系统", "shoudan")
                } else {
                    bank.clone()
                };
                steps.push(step(
                    at,
                    "declined",
                    Both::new(
                        format!("{}拒绝：{}", by.zh, code.zh),
                        format!("declined by {}: {}", by.en, code.en),
                    ),
                ));
            }
            "timed_out" => {
                timed_out = true;
                let waited_s = row
                    .sent_at_ms
                    .map_or(0, |sent| (at - sent).max(0).div_euclid(1_000));
                steps.push(step(
                    at,
                    "no_answer",
                    Both::new(
                        format!(
                            "{}在 {waited_s} 秒内没有应答；终端收到 98（无应答），这笔{}没有成功",
                            bank.zh, kind.zh
                        ),
                        format!(
                            "no answer from {} within {waited_s} s; the terminal was told 98 \
                             (no answer) and the {} did not go through",
                            bank.en, kind.en
                        ),
                    ),
                ));
                if row.kind != TxnKind::BalanceInquiry {
                    steps.push(step(
                        at,
                        "reversal_queued",
                        Both::new(
                            format!("以防{}已经批准，收单系统发出冲正", bank.zh),
                            format!(
                                "in case {} had approved it, shoudan sent a reversal",
                                bank.en
                            ),
                        ),
                    ));
                }
            }
            "failed" => {
                let code = row.response_code.as_deref().unwrap_or("96");
                let text = if code == "91" {
                    Both::new(
                        format!("{}暂时无法连接，请求没有发出，没有扣款", bank.zh),
                        format!(
                            "{} was unavailable: nothing was sent, nothing was charged",
                            bank.en
                        ),
                    )
                } else if row.sent_at_ms.is_none() || reversal.is_none() {
                    // Failed before the issuer was asked (the journal answered late), or
                    // with nothing to reverse: say so, not that a reversal went out.
                    Both::new(
                        format!("交易未完成，终端收到 {code}；没有扣款，无需冲正"),
                        format!(
                            "not completed: the terminal was told {code}; nothing was charged, \
                             nothing to reverse"
                        ),
                    )
                } else {
                    Both::new(
                        format!(
                            "{}的应答无法识别，终端收到 {code}；收单系统发出冲正",
                            bank.zh
                        ),
                        format!(
                            "the answer from {} could not be read; the terminal was told \
                             {code} and shoudan sent a reversal",
                            bank.en
                        ),
                    )
                };
                let kind = if code == "91" {
                    "issuer_unavailable"
                } else {
                    "failed"
                };
                steps.push(step(at, kind, text));
            }
            // The journal answered late: the terminal was told 96, and the host reversed
            // what the issuer had approved.
            "reversed" if reversed_by_host(event) => {
                steps.push(step(
                    at,
                    "reversed_by_host",
                    Both::new(
                        "发卡行的批准写入日志晚了：终端已收到 96（系统故障，交易未完成），收单系统随即自行冲正这笔批准，并把冲正转发给发卡行",
                        "the issuer's approval reached the journal late: the terminal had been \
                         answered 96 (system error, not completed), so shoudan reversed the \
                         approval itself and forwards the reversal to the issuer",
                    ),
                ));
            }
            "reversed" => {
                steps.push(step(
                    at,
                    "reversed_by_terminal",
                    Both::new(
                        "终端发来冲正（终端没有收到应答，或收银员取消了交易），收单系统转发给发卡行",
                        "the terminal sent a reversal (it did not receive the answer, or the \
                         cashier cancelled); shoudan forwards it to the issuer",
                    ),
                ));
            }
            "reversal_done" => {
                let acked = reversal
                    .as_ref()
                    .is_some_and(|r: &SafItem| r.state == SafState::Acked);
                let never_had = reversal.as_ref().is_some_and(SafItem::never_had_original);
                if never_had {
                    steps.push(step(
                        at,
                        "reversal_original_unknown",
                        Both::new(
                            format!(
                                "{}答复冲正 25（无此原交易）：发卡行没有收到这笔{}，它没有生效",
                                bank.zh,
                                kind_text(row.kind).zh
                            ),
                            format!(
                                "{} answered the reversal 25 (no such original): it never had \
                                 this {}, so it did not go through",
                                bank.en,
                                kind_text(row.kind).en
                            ),
                        ),
                    ));
                } else if acked {
                    steps.push(step(
                        at,
                        "reversal_acknowledged",
                        Both::new(
                            format!(
                                "{}确认冲正：这笔钱不会扣，持卡人账户上的冻结或扣款由发卡行退回",
                                bank.zh
                            ),
                            format!(
                                "{} acknowledged the reversal: the cardholder is not charged; \
                                 any hold or debit is released by the issuer",
                                bank.en
                            ),
                        ),
                    ));
                } else if gives_back(row.kind) {
                    steps.push(step(
                        at,
                        "reversal_refused",
                        Both::new(
                            format!(
                                "{}拒绝了冲正：这笔{}可能已经生效，请向发卡行核实",
                                bank.zh,
                                kind_text(row.kind).zh
                            ),
                            format!(
                                "{} refused the reversal: this {} may stand; ask the issuer",
                                bank.en,
                                kind_text(row.kind).en
                            ),
                        ),
                    ));
                } else {
                    steps.push(step(
                        at,
                        "reversal_refused",
                        Both::new(
                            format!("{}拒绝了冲正，请联系发卡行核实持卡人是否被扣款", bank.zh),
                            format!(
                                "{} refused the reversal: ask the issuer whether the \
                                 cardholder was charged",
                                bank.en
                            ),
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(r) = reversal.as_ref().filter(|r| r.state == SafState::Pending) {
        steps.push(step(
            now_ms,
            "reversal_pending",
            Both::new(
                format!(
                    "冲正尚未得到{}确认（已尝试 {} 次），收单系统会一直重发直到确认",
                    bank.zh, r.attempts
                ),
                format!(
                    "the reversal is not yet acknowledged by {} ({} attempts so far); shoudan \
                     keeps resending it until it is",
                    bank.en, r.attempts
                ),
            ),
        ));
    }
    let mut original_rrn = None;
    if let Some(original) = &original {
        original_rrn = original.rrn.clone();
        let okind = kind_text(original.kind);
        let orrn = original.rrn.clone().unwrap_or_else(|| "-".to_owned());
        steps.push(step(
            row.received_at_ms,
            "linked",
            Both::new(
                format!(
                    "原交易：{} {}，RRN {orrn}，{}",
                    okind.zh,
                    yuan(original.amount_fen),
                    date_time(original.received_at_ms)
                ),
                format!(
                    "original: {} of {}, RRN {orrn}, {}",
                    okind.en,
                    yuan(original.amount_fen),
                    date_time(original.received_at_ms)
                ),
            ),
        ));
    }
    // What happened to it afterwards: voids, refunds, completions.
    let mut linked = store.txns_linked_to(row.id)?;
    linked.retain(|l| l.kind != TxnKind::Reversal && l.mid == row.mid);
    linked.sort_by_key(|l| l.received_at_ms);
    for l in &linked {
        let at = l.answered_at_ms.unwrap_or(l.received_at_ms);
        let lwho = origin(l);
        let lamount = yuan(l.amount_fen);
        let lrrn = l.rrn.clone().unwrap_or_else(|| "-".to_owned());
        let approved = matches!(l.state, TxnState::Approved | TxnState::Completed);
        let doubt = if gives_back(l.kind) && !approved {
            linked_doubt(store, l)?
        } else {
            None
        };
        match (l.kind, approved) {
            (TxnKind::Refund, true) => {
                let partial = l.amount_fen < row.amount_fen;
                let (pzh, pen) = if partial {
                    (
                        format!("（部分退货：{lamount} / {amount}）"),
                        format!(" (partial: {lamount} of {amount})"),
                    )
                } else {
                    (String::new(), String::new())
                };
                steps.push(step(
                    at,
                    "refunded",
                    Both::new(
                        format!(
                            "{} 退货 {lamount}，{}批准，RRN {lrrn}{pzh}；钱退回持卡人卡上，到账时间以发卡行为准",
                            lwho.zh, bank.zh
                        ),
                        format!(
                            "{} refunded {lamount}, approved by {}, RRN {lrrn}{pen}; the money \
                             goes back to the card, on the issuer's schedule",
                            lwho.en, bank.en
                        ),
                    ),
                ));
            }
            // Sent and not known to stand or not: no answer, an answer that could not be
            // taken, or an approval its terminal reversed, and the reversal not acknowledged
            // (or refused). "Did not go through" would invite doing it again.
            (other, false) if doubt.is_some() => {
                let okind = kind_text(other);
                let code = l.response_code.as_deref().unwrap_or("98");
                let (what_zh, what_en) = if code == "00" {
                    (
                        "已批准，之后被冲正".to_owned(),
                        "was approved, then reversed".to_owned(),
                    )
                } else if l.state == TxnState::InFlight {
                    ("尚未得到应答".to_owned(), "has no answer yet".to_owned())
                } else {
                    (
                        format!("没有得到可用的应答（{code}）"),
                        format!("got no usable answer ({code})"),
                    )
                };
                let text = if doubt == Some(true) {
                    Both::new(
                        format!(
                            "{} {} {lamount}（RRN {lrrn}）{what_zh}，但{}拒绝了冲正：它可能已经生效，再次办理前请先凭证据包向发卡行核实",
                            lwho.zh, okind.zh, bank.zh
                        ),
                        format!(
                            "{} {} of {lamount} (RRN {lrrn}) {what_en}, but {} refused its \
                             reversal: it may stand; check with the issuer, with the evidence \
                             package, before doing it again",
                            lwho.en, okind.en, bank.en
                        ),
                    )
                } else {
                    Both::new(
                        format!(
                            "{} {} {lamount}（RRN {lrrn}）{what_zh}，冲正尚未得到发卡行确认：确认前请勿再次办理",
                            lwho.zh, okind.zh
                        ),
                        format!(
                            "{} {} of {lamount} (RRN {lrrn}) {what_en}; its reversal is not \
                             confirmed yet: do not do it again until it is",
                            lwho.en, okind.en
                        ),
                    )
                };
                steps.push(step(at, "linked_in_doubt", text));
            }
            // Approved, then undone (a completion voided, a refund or void reversed by its
            // terminal): it went through, and no longer stands.
            (other, false)
                if l.response_code.as_deref() == Some("00")
                    && matches!(l.state, TxnState::Voided | TxnState::Reversed) =>
            {
                let okind = kind_text(other);
                let (uzh, uen) = if l.state == TxnState::Voided {
                    ("撤销", "voided")
                } else {
                    ("冲正", "reversed")
                };
                steps.push(step(
                    at,
                    "linked",
                    Both::new(
                        format!(
                            "{} {} {lamount} 已批准（RRN {lrrn}），之后被{uzh}：不再有效",
                            lwho.zh, okind.zh
                        ),
                        format!(
                            "{} {} of {lamount} was approved (RRN {lrrn}), then {uen}: it no \
                             longer stands",
                            lwho.en, okind.en
                        ),
                    ),
                ));
            }
            (TxnKind::Refund, false) => {
                let code = code_title(l.response_code.as_deref().unwrap_or("??"));
                steps.push(step(
                    at,
                    "refund_declined",
                    Both::new(
                        format!("{} 退货 {lamount} 未成功：{}", lwho.zh, code.zh),
                        format!(
                            "{} refund of {lamount} did not go through: {}",
                            lwho.en, code.en
                        ),
                    ),
                ));
            }
            (TxnKind::PreAuthVoid, true) => {
                // Voided whenever the guest left, not only the same day.
                steps.push(step(
                    at,
                    "voided",
                    Both::new(
                        format!(
                            "{} 撤销了这笔预授权（RRN {lrrn}）：冻结已释放，不会扣款",
                            lwho.zh
                        ),
                        format!(
                            "pre-authorisation voided by {} (RRN {lrrn}): the hold is released, \
                             nothing is charged",
                            lwho.en
                        ),
                    ),
                ));
            }
            (TxnKind::PurchaseVoid | TxnKind::CompletionVoid, true) => {
                steps.push(step(
                    at,
                    "voided",
                    Both::new(
                        format!("{} 当天撤销了这笔交易（RRN {lrrn}）：不会扣款", lwho.zh),
                        format!(
                            "voided the same day by {} (RRN {lrrn}): nothing is charged",
                            lwho.en
                        ),
                    ),
                ));
            }
            (TxnKind::Completion, true) => {
                steps.push(step(
                    at,
                    "completed",
                    Both::new(
                        format!("预授权完成 {lamount}（RRN {lrrn}）：冻结转为扣款"),
                        format!("completed for {lamount} (RRN {lrrn}): the hold became a charge"),
                    ),
                ));
            }
            (other, _) => {
                let okind = kind_text(other);
                let code = code_title(l.response_code.as_deref().unwrap_or("??"));
                steps.push(step(
                    at,
                    "linked",
                    Both::new(
                        format!("{} {} {lamount} 未成功：{}", lwho.zh, okind.zh, code.zh),
                        format!(
                            "{} {} of {lamount} did not go through: {}",
                            lwho.en, okind.en, code.en
                        ),
                    ),
                ));
            }
        }
    }
    // Pre-authorisations hold money until completed or voided, for a limited time.
    let mut expired = false;
    if row.kind == TxnKind::PreAuth && row.state == TxnState::Approved {
        // The switch completes it while the clearing day (cut at 23:00) is within
        // `REFUND_DAYS_MAX` of the pre-authorisation's: it expires when clearing day
        // `day + REFUND_DAYS_MAX + 1` begins, at the cut-over the evening before.
        let cutover = switch::CUTOVER_MINUTE_DEFAULT;
        let day = switch::ClearingDay::of(row.received_at_ms, cutover).day_number;
        let before_midnight_ms = match cutover {
            0 => 0,
            minute => i64::from(24 * 60 - minute) * 60_000,
        };
        let expires_ms =
            (day + REFUND_DAYS_MAX + 1) * MS_PER_DAY - 8 * 3_600_000 - before_midnight_ms;
        if now_ms >= expires_ms {
            expired = true;
            steps.push(step(
                expires_ms,
                "pre_auth_expired",
                Both::new(
                    format!(
                        "{REFUND_DAYS_MAX} 天内没有完成或撤销，预授权已过期：{}释放冻结的 {amount}",
                        bank.zh
                    ),
                    format!(
                        "not completed or voided within {REFUND_DAYS_MAX} days: the \
                         pre-authorisation expired and {} releases the {amount} hold",
                        bank.en
                    ),
                ),
            ));
        } else {
            steps.push(step(
                now_ms,
                "pre_auth_hold",
                Both::new(
                    format!(
                        "持卡人账户上冻结 {amount}，直到完成或撤销，最迟 {}",
                        date(expires_ms - 1)
                    ),
                    format!(
                        "{amount} is held on the cardholder's account until completed or \
                         voided, at the latest until {}",
                        date(expires_ms - 1)
                    ),
                ),
            ));
        }
    }
    // A terminal's reversal accepted: what became of what it reversed (its summary too), not
    // an "approval".
    let reversed = if row.kind == TxnKind::Reversal && row.state == TxnState::Approved {
        let (text, at_ms, step_kind) = reversal_result(store, &bank, original.as_ref())?;
        steps.push(step(
            at_ms.unwrap_or(row.answered_at_ms.unwrap_or(row.received_at_ms)),
            step_kind,
            text.clone(),
        ));
        Some(text)
    } else {
        None
    };
    steps.sort_by_key(|s| s.at_ms);
    // A step on another day than the request's (a refund weeks later, a reversal retried over
    // days, a pre-authorisation's expiry) shows its date too.
    let day = switch::LocalTime::from_ms(row.received_at_ms).day_number;
    for s in &mut steps {
        if switch::LocalTime::from_ms(s.at_ms).day_number != day {
            s.time = date_time(s.at_ms);
        }
    }

    let refunded = row.refunded_fen;
    // A reversal refused with 25 undid as much as an acknowledged one: nothing stands.
    let acked = reversal.as_ref().is_some_and(SafItem::undone);
    let refused = reversal.as_ref().is_some_and(SafItem::refused_standing);
    let outcome = match row.state {
        TxnState::InFlight => Outcome::InProgress,
        TxnState::Reversed | TxnState::TimedOut | TxnState::Failed if refused => {
            Outcome::ReversalRefused
        }
        TxnState::Approved if expired => Outcome::PreAuthExpired,
        TxnState::Approved if refunded >= row.amount_fen && refunded > 0 => Outcome::Refunded,
        TxnState::Approved if refunded > 0 => Outcome::PartlyRefunded,
        TxnState::Approved => Outcome::Approved,
        TxnState::Completed => Outcome::Completed,
        TxnState::Voided => Outcome::Voided,
        TxnState::Declined => Outcome::Declined,
        TxnState::Reversed if approved_at.is_some() && (acked || reversal.is_none()) => {
            Outcome::ApprovedThenReversed
        }
        TxnState::Reversed if approved_at.is_some() => Outcome::ApprovedReversalPending,
        // Reversed by its terminal while at the issuer: acknowledged only once it is.
        TxnState::Reversed if reversal.is_some() && !acked => Outcome::ReversalPending,
        TxnState::Reversed if timed_out || acked => Outcome::NoAnswerReversed,
        TxnState::Reversed => Outcome::Declined,
        TxnState::TimedOut | TxnState::Failed if reversal.is_some() && !acked => {
            Outcome::ReversalPending
        }
        // Nothing was queued (a balance inquiry moves no money): not "reversed".
        TxnState::TimedOut if reversal.is_none() => Outcome::Failed,
        TxnState::TimedOut => Outcome::NoAnswerReversed,
        TxnState::Failed => Outcome::Failed,
    };
    let summary = match reversed {
        Some(text) if outcome == Outcome::Approved => text,
        _ => summary_text(outcome, &bank, row, reversal.is_some(), rule),
    };
    let by_code = |otherwise: &str| {
        failure_of(row, reversal.is_some()).map_or_else(
            || diagnosis::diagnose_str(row.response_code.as_deref().unwrap_or(otherwise)),
            diagnosis::diagnose_failure,
        )
    };
    let diagnosis = match outcome {
        // A terminal's reversal refused 25 whose original stands (from another day): nothing
        // was undone. One whose original was reversed already (by the switch, after a 98)
        // keeps the code's entry.
        Outcome::Declined
            if row.kind == TxnKind::Reversal
                && row.response_code.as_deref() == Some("25")
                && original
                    .as_ref()
                    .is_some_and(|o| o.state == TxnState::Approved) =>
        {
            Some(diagnosis::diagnose_failure(FailureKind::ReversalNotTaken))
        }
        Outcome::Declined => Some(rule.map_or_else(|| by_code("96"), diagnosis::diagnose_failure)),
        Outcome::Failed => Some(by_code("96")),
        Outcome::NoAnswerReversed | Outcome::ReversalPending => Some(by_code("98")),
        // Its terminal never saw the approval: for a void or refund, the original stands and
        // the customer has not been paid back (not a sale's "you were not charged").
        Outcome::ApprovedThenReversed | Outcome::ApprovedReversalPending
            if gives_back(row.kind) =>
        {
            Some(diagnosis::diagnose_failure(FailureKind::ReturnNoAnswer))
        }
        // Its terminal reversed it because the answer's MAC failed (field 39 of its reversal,
        // A0): the keys differ, and every approval will go the same way until it signs in.
        Outcome::ApprovedThenReversed | Outcome::ApprovedReversalPending
            if reversal.as_ref().is_some_and(|r| r.reason == "A0") =>
        {
            Some(diagnosis::diagnose_failure(FailureKind::BadResponseMac))
        }
        // Reversed by the host after the terminal was told 96: the terminal got an answer, a
        // system error, not none.
        Outcome::ApprovedThenReversed | Outcome::ApprovedReversalPending if host_reversed => {
            Some(diagnosis::diagnose_str("96"))
        }
        Outcome::ApprovedThenReversed | Outcome::ApprovedReversalPending => {
            Some(diagnosis::diagnose_failure(FailureKind::NoAnswer))
        }
        Outcome::ReversalRefused if gives_back(row.kind) => Some(diagnosis::diagnose_failure(
            FailureKind::ReturnReversalRefused,
        )),
        Outcome::ReversalRefused => Some(diagnosis::diagnose_failure(FailureKind::ReversalRefused)),
        _ => None,
    };
    Ok(Explanation {
        txn: TxnSummary::with_card_of(directory, row, card),
        outcome,
        summary,
        steps,
        diagnosis,
        original_rrn,
    })
}

/// What a terminal's reversal that was accepted (answered 00) did, from its original and the
/// original's reversal to the issuer: the words, when the issuer settled it (if it has), and
/// the step's key.
fn reversal_result(
    store: &dyn Store,
    bank: &Both,
    original: Option<&TxnRow>,
) -> Result<(Both, Option<i64>, &'static str), store::StoreError> {
    let Some(o) = original else {
        return Ok((
            // Not "nothing was charged": a terminal moved to another merchant reverses its
            // old merchant's sale in vain.
            Both::new(
                "冲正已受理：本商户没有找到这笔冲正对应的原交易，没有可撤回的",
                "reversal accepted: no original of this merchant's was found for it, so nothing \
                 was undone",
            ),
            None,
            "reversal_nothing",
        ));
    };
    if o.kind == TxnKind::BalanceInquiry {
        return Ok((
            Both::new(
                "冲正已受理：余额查询不涉及资金，没有需要撤回的",
                "reversal accepted: a balance inquiry moves no money, so there was nothing to \
                 undo",
            ),
            None,
            "reversal_nothing",
        ));
    }
    let okind = kind_text(o.kind);
    let what_zh = format!(
        "{} {}（RRN {}）",
        okind.zh,
        yuan(o.amount_fen),
        o.rrn.as_deref().unwrap_or("-")
    );
    let what_en = format!(
        "the {} of {} (RRN {})",
        okind.en,
        yuan(o.amount_fen),
        o.rrn.as_deref().unwrap_or("-")
    );
    let Some(r) = store.reversal(o.id)? else {
        return Ok((
            Both::new(
                format!("冲正已受理：原{what_zh}没有成功，发卡行那边没有需要撤回的"),
                format!(
                    "reversal accepted: {what_en} had not gone through, so there was nothing \
                     to undo at the issuer"
                ),
            ),
            None,
            "reversal_nothing",
        ));
    };
    let (zh, en, key) = if r.undone() && o.kind == TxnKind::Completion {
        (
            format!(
                "冲正成功，{}已确认：原{what_zh}已撤回，这笔不扣款；预授权恢复冻结，可再次完成或撤销",
                bank.zh
            ),
            format!(
                "reversal accepted and acknowledged by {}: {what_en} is undone and nothing is \
                 charged for it; the pre-authorisation's hold stands again, to be completed or \
                 voided",
                bank.en
            ),
            "reversal_acknowledged",
        )
    } else if r.undone() && gives_back(o.kind) {
        (
            format!(
                "冲正成功，{}已确认：原{what_zh}不成立，它的原交易仍然有效",
                bank.zh
            ),
            format!(
                "reversal accepted and acknowledged by {}: {what_en} does not stand, and its \
                 own original still does",
                bank.en
            ),
            "reversal_acknowledged",
        )
    } else if r.undone() {
        (
            format!(
                "冲正成功，{}已确认：原{what_zh}已撤回，持卡人不会被扣款",
                bank.zh
            ),
            format!(
                "reversal accepted and acknowledged by {}: {what_en} is undone and the \
                 cardholder is not charged",
                bank.en
            ),
            "reversal_acknowledged",
        )
    } else if r.refused_standing() {
        (
            format!(
                "冲正已受理，但{}拒绝了冲正：原{what_zh}可能仍然有效，见原交易的说明",
                bank.zh
            ),
            format!(
                "reversal accepted here, but {} refused it: {what_en} may still stand; see \
                 the original's explanation",
                bank.en
            ),
            "reversal_refused",
        )
    } else {
        (
            format!(
                "冲正已受理：原{what_zh}已在本系统撤回，{}尚未确认，收单系统会继续重发冲正",
                bank.zh
            ),
            format!(
                "reversal accepted: {what_en} is undone here; {} has not acknowledged it yet \
                 and shoudan keeps resending the reversal",
                bank.en
            ),
            "reversal_pending",
        )
    };
    // When the issuer settled it (acknowledged or refused): not yet, while it is pending.
    let settled_at = if r.undone() || r.refused_standing() {
        store
            .events(o.id)?
            .iter()
            .rev()
            .find(|e| e.kind == "reversal_done")
            .map(|e| e.at_ms)
    } else {
        None
    };
    Ok((Both::new(zh, en), settled_at, key))
}

/// The risk rule a "declined" event names, when shoudan's own rules declined the request
/// (`switch::risk` writes "risk rule KIND \"ID\": ... (diagnosis KEY)").
pub(crate) fn rule_of_decline(detail: &str) -> Option<FailureKind> {
    if !detail.contains("risk rule ") {
        return None;
    }
    let (_, after) = detail.rsplit_once("(diagnosis ")?;
    let key = after.strip_suffix(')')?;
    FailureKind::from_key(key)
}

/// The entry a transaction that failed is diagnosed by where its response code alone would
/// say the wrong thing (the explanation, the evidence package and the declined webhook use
/// it): a linked request shoudan refused for another card than its original's (14), a refund
/// over what is left (61), shoudan's own 91 (its line to the issuer down: no answer came), a
/// void or refund sent and not answered (reversed: the original stands), an inquiry not
/// answered (nothing moved). `reversal_queued`: the row has a reversal in the queue. `None`:
/// the code's own entry.
pub fn failure_of(row: &TxnRow, reversal_queued: bool) -> Option<FailureKind> {
    let code = row.response_code.as_deref()?;
    // Refused by shoudan itself, before anything went to the issuer.
    let by_host = row.sent_at_ms.is_none();
    match (code, row.kind) {
        // Only the linked-request check names the original before refusing 14.
        ("14", _) if by_host && row.original_id.is_some() => Some(FailureKind::NotOriginalCard),
        ("61", TxnKind::Refund) if by_host => Some(FailureKind::RefundOverOriginal),
        ("91", _) if row.issuer_answered_at_ms.is_none() => Some(FailureKind::IssuerLinkDown),
        ("98" | "96" | "68", kind) if gives_back(kind) && !by_host && reversal_queued => {
            Some(FailureKind::ReturnNoAnswer)
        }
        ("98" | "68", TxnKind::BalanceInquiry) if !by_host => Some(FailureKind::InquiryNoAnswer),
        // A terminal's reversal refused for another amount than its original's, or an
        // original followed by a void or refund: the code's own entry speaks of a request,
        // where here the original stands and may have been paid twice. (Its 25 is the
        // explanation's to judge: an original from another day stands, one reversed already
        // does not.)
        ("64" | "12", TxnKind::Reversal) => Some(FailureKind::ReversalNotTaken),
        // The issuer's decline of money going back, where its code's advice is a sale's
        // (another card, a smaller amount, never again) and here the original stands and the
        // customer awaits the refund. Not a decline to retry later (the issuer busy), a
        // pre-authorisation's void (its hold lapses by itself), a duplicate (94: the issuer may
        // hold it already), a code to correct and send again (a PIN, an amount), or a card its
        // bank flagged (the code's keep-the-card steps stand).
        (code, kind) if gives_back(kind) && kind != TxnKind::PreAuthVoid && !by_host => {
            use diagnosis::{Action, Retry};
            let own = diagnosis::diagnose_str(code);
            let for_a_sale = matches!(
                own.retry,
                Retry::Never
                    | Retry::AfterAction(
                        Action::OtherCard
                            | Action::OtherCardOrSmallerAmount
                            | Action::SmallerAmount
                    )
            );
            let refused = matches!(
                own.category,
                diagnosis::Category::C | diagnosis::Category::D
            );
            (refused && for_a_sale && code != "94" && !own.flags_the_card())
                .then_some(FailureKind::ReturnDeclined)
        }
        _ => None,
    }
}

/// Whether a linked request (a refund, a void) may have gone through at the issuer without the
/// journal counting it: `Some(false)` while its reversal is queued and not acknowledged (or,
/// none queued yet, it is in flight or timed out), `Some(true)` when the issuer refused the
/// reversal other than with 25 (it may stand), `None` when its outcome is known.
fn linked_doubt(store: &dyn Store, l: &TxnRow) -> Result<Option<bool>, store::StoreError> {
    Ok(match store.reversal(l.id)? {
        // Refused with 25: the issuer never had the request (`docs/issuer-link.md`), so it
        // did not go through there either.
        Some(r) => (!r.undone()).then_some(r.refused_standing()),
        None => matches!(l.state, TxnState::InFlight | TxnState::TimedOut).then_some(false),
    })
}

/// A void or refund gives money back (or releases a hold): when it fails, its original still
/// stands.
pub(crate) fn gives_back(kind: TxnKind) -> bool {
    matches!(
        kind,
        TxnKind::PurchaseVoid | TxnKind::Refund | TxnKind::PreAuthVoid | TxnKind::CompletionVoid
    )
}

fn summary_text(
    outcome: Outcome,
    bank: &Both,
    row: &TxnRow,
    reversal_queued: bool,
    rule: Option<FailureKind>,
) -> Both {
    let amount = yuan(row.amount_fen);
    let refunded = yuan(row.refunded_fen);
    match outcome {
        Outcome::InProgress => Both::new("正在等待发卡行应答", "waiting for the issuer's answer"),
        Outcome::Approved => Both::new(
            format!("成功，{}批准 {amount}", bank.zh),
            format!("approved by {} for {amount}", bank.en),
        ),
        Outcome::PartlyRefunded => Both::new(
            format!("成功 {amount}，已部分退货 {refunded}"),
            format!("approved for {amount}, {refunded} refunded since"),
        ),
        Outcome::Refunded => Both::new(
            format!("成功 {amount}，已全额退货"),
            format!("approved for {amount}, refunded in full since"),
        ),
        Outcome::Voided if row.kind == TxnKind::PreAuth => Both::new(
            "预授权已撤销：冻结已释放，不扣款",
            "pre-authorisation voided: the hold is released, nothing is charged",
        ),
        Outcome::Voided => Both::new(
            "当天已撤销：不扣款",
            "voided the same day: nothing is charged",
        ),
        Outcome::Completed => Both::new(
            "预授权已完成（见完成交易的金额）",
            "pre-authorisation completed (see the completion's amount)",
        ),
        Outcome::PreAuthExpired => Both::new(
            "预授权已过期：冻结已释放，不扣款",
            "pre-authorisation expired: the hold is released, nothing is charged",
        ),
        Outcome::Declined => {
            let title = row_code_title(row, reversal_queued, rule);
            Both::new(
                format!("失败：{}", title.zh),
                format!("declined: {}", title.en),
            )
        }
        Outcome::ApprovedThenReversed if gives_back(row.kind) => Both::new(
            format!(
                "{}批准了这笔{}，随后被冲正并得到确认：它不再有效，原交易仍然有效，顾客的钱没有退回",
                bank.zh,
                kind_text(row.kind).zh
            ),
            format!(
                "{} approved this {}, then it was reversed and the reversal acknowledged: it \
                 no longer stands, the original still does, and the customer has not been paid \
                 back",
                bank.en,
                kind_text(row.kind).en
            ),
        ),
        Outcome::ApprovedThenReversed => Both::new(
            format!(
                "刷卡时{}批准了，但随后被冲正：持卡人不会被扣款，冻结或扣款由发卡行退回",
                bank.zh
            ),
            format!(
                "approved by {} at first, then reversed: the cardholder is not charged; any \
                 hold or debit is returned by the issuer",
                bank.en
            ),
        ),
        Outcome::ApprovedReversalPending if gives_back(row.kind) => Both::new(
            format!(
                "{}批准了这笔{}，随后被冲正，冲正尚未得到发卡行确认：确认前卡上可能显示这笔退款，确认后会被收回；收单系统会继续重发冲正",
                bank.zh,
                kind_text(row.kind).zh
            ),
            format!(
                "{} approved this {}, then it was reversed; the issuer has not acknowledged the \
                 reversal yet: until it does the card may show the money back, which is taken \
                 back once it does; shoudan keeps resending the reversal",
                bank.en,
                kind_text(row.kind).en
            ),
        ),
        Outcome::ApprovedReversalPending => Both::new(
            format!(
                "{}批准后被冲正，冲正尚未得到发卡行确认：确认前卡上可能显示这笔扣款，确认后退回；收单系统会继续重发冲正",
                bank.zh
            ),
            format!(
                "approved by {}, then reversed; the issuer has not acknowledged the reversal yet: \
                 until it does the card may show the charge, which is returned once it does; \
                 shoudan keeps resending the reversal",
                bank.en
            ),
        ),
        Outcome::NoAnswerReversed if gives_back(row.kind) => Both::new(
            format!(
                "{}没有及时应答，这笔{}已冲正并得到确认：没有成功，原交易仍然有效，顾客的钱还没有退回",
                bank.zh,
                kind_text(row.kind).zh
            ),
            format!(
                "no answer from {} in time; this {} was reversed and the reversal acknowledged: \
                 it did not happen, the original still stands and the customer has not been \
                 paid back",
                bank.en,
                kind_text(row.kind).en
            ),
        ),
        // A reversal acknowledged, or answered 25 (the issuer never had the request): nothing
        // stands either way.
        Outcome::NoAnswerReversed => Both::new(
            format!(
                "{}没有及时应答，收单系统已冲正并得到发卡行确认：交易不成立，即使卡上显示过扣款也会退回",
                bank.zh
            ),
            format!(
                "no answer from {} in time; shoudan reversed it and the issuer confirmed nothing \
                 stands: the sale did not happen, and any charge the card shows is returned",
                bank.en
            ),
        ),
        Outcome::ReversalPending => Both::new(
            format!("{}没有及时应答，冲正尚未确认，收单系统会继续重发", bank.zh),
            format!(
                "no answer from {} in time; the reversal is not acknowledged yet and shoudan \
                 keeps resending it",
                bank.en
            ),
        ),
        Outcome::ReversalRefused if gives_back(row.kind) => Both::new(
            format!(
                "本系统已冲正这笔{}，但{}拒绝了冲正：它可能已在发卡行生效（顾客可能已收到退款）；再次退货或撤销前请先凭证据包向发卡行核实",
                kind_text(row.kind).zh,
                bank.zh
            ),
            format!(
                "this {} was reversed here, but {} refused the reversal: it may stand at the \
                 issuer (the customer may have been paid back); check with the issuer, with the \
                 evidence package, before refunding or voiding again",
                kind_text(row.kind).en,
                bank.en
            ),
        ),
        Outcome::ReversalRefused => Both::new(
            format!(
                "本系统已冲正（商户不入账），但{}拒绝了冲正：持卡人卡上的扣款可能没有退回，如仍有扣款请凭证据包联系发卡行",
                bank.zh
            ),
            format!(
                "reversed here (the merchant is not paid), but {} refused the reversal: the \
                 card may still show the charge; if it does, the issuer must return it (give \
                 them the evidence package)",
                bank.en
            ),
        ),
        Outcome::Failed => {
            let title = row_code_title(row, reversal_queued, rule);
            Both::new(
                format!("交易未完成：{}", title.zh),
                format!("did not complete: {}", title.en),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use store::{Record, SqliteConfig, SqliteStore};

    use super::*;

    #[test]
    fn a_risk_rules_decline_is_read_from_its_event() {
        // As `switch::risk` writes it (its risk_e2e test holds the form).
        let detail = "declined by shoudan at 10:00:01: 59 risk rule card-testing \"testing\": \
                      5 declines within 60 s (diagnosis card-testing)";
        assert_eq!(rule_of_decline(detail), Some(FailureKind::CardTesting));
        assert_eq!(
            rule_of_decline("declined by ICBC: 51 Insufficient funds"),
            None
        );
        assert_eq!(
            rule_of_decline("risk rule x \"y\": z (diagnosis no-such-thing)"),
            None
        );
    }

    fn row(id: i64, tid: &str, mid: &str, kind: TxnKind, original_id: Option<i64>) -> TxnRow {
        TxnRow {
            id,
            tid: tid.into(),
            mid: mid.into(),
            batch_no: 1,
            stan: u32::try_from(id).unwrap(),
            kind,
            mti: "0200".into(),
            processing_code: "000000".into(),
            condition_code: "00".into(),
            amount_fen: 1_000,
            currency: "156".into(),
            pan: None,
            issuer: Some("ICBC".into()),
            rrn: Some(format!("{id:012}")),
            host_trace: None,
            auth_code: None,
            response_code: Some(if original_id.is_some() { "25" } else { "00" }.into()),
            state: if original_id.is_some() {
                TxnState::Declined
            } else {
                TxnState::Approved
            },
            request_hash: vec![0],
            original_id,
            refunded_fen: 0,
            field60: None,
            host_date: None,
            clearing_date: "20260310".into(),
            settlement_date: None,
            received_at_ms: 1_773_108_000_000 + id,
            sent_at_ms: None,
            issuer_answered_at_ms: None,
            answered_at_ms: None,
        }
    }

    /// The issuer's decline of a void or refund is diagnosed as money not yet back (the
    /// original stands), not by the code's advice for a sale; one to retry later (the issuer
    /// busy), shoudan's own refusals and a sale's declines keep their codes'.
    #[test]
    fn an_issuers_decline_of_a_refund_is_a_refund_declined() {
        let answered = |kind: TxnKind, code: &str, sent: bool| TxnRow {
            response_code: Some(code.into()),
            sent_at_ms: sent.then_some(1),
            ..row(9, "10000001", "898110048990001", kind, Some(7))
        };
        for code in ["05", "54", "57", "62"] {
            for kind in [
                TxnKind::Refund,
                TxnKind::PurchaseVoid,
                TxnKind::CompletionVoid,
            ] {
                assert_eq!(
                    failure_of(&answered(kind, code, true), false),
                    Some(FailureKind::ReturnDeclined),
                    "{kind:?} {code}"
                );
            }
            assert_eq!(
                failure_of(&answered(TxnKind::Purchase, code, true), false),
                None
            );
        }
        // The issuer busy: its code says to try again later; a duplicate, a wrong PIN, a card
        // its bank flagged keep their codes' advice, and so does a pre-authorisation's void.
        for code in ["96", "94", "55", "43", "41"] {
            let refund = answered(TxnKind::Refund, code, true);
            assert_eq!(failure_of(&refund, false), None, "{code}");
        }
        let hold_void = answered(TxnKind::PreAuthVoid, "05", true);
        assert_eq!(failure_of(&hold_void, false), None);
        // shoudan's own refusal before sending keeps its code's entry.
        assert_eq!(
            failure_of(&answered(TxnKind::PurchaseVoid, "12", false), false),
            None
        );
    }

    /// A sale a merchant's own limit declined 61 is told as that, in the summary and the
    /// timeline as in the diagnosis: not as the code's own "exceeds amount limit", which
    /// sends the cardholder to the issuer, who was never asked.
    #[test]
    fn a_risk_rules_decline_is_named_by_its_rule_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let sale = TxnRow {
            response_code: Some("61".into()),
            state: TxnState::Declined,
            ..row(7, "10000001", "898110048990001", TxnKind::Purchase, None)
        };
        store
            .submit(vec![
                Record::InsertTxn(Box::new(sale.clone())),
                Record::Event(store::EventRow {
                    txn_id: 7,
                    at_ms: sale.received_at_ms + 1,
                    kind: "declined".into(),
                    detail: "declined by shoudan at 10:00:01: 61 risk rule amount-max \"cap\": \
                             10,000.00 over 5,000.00 (diagnosis merchant-limit)"
                        .into(),
                }),
            ])
            .unwrap()
            .wait()
            .unwrap();
        let directory = IssuerDirectory::embedded().unwrap();
        let e = explain_txn(&store, &directory, &sale, sale.received_at_ms).unwrap();
        let rule = diagnosis::diagnose_failure(FailureKind::MerchantLimit);
        let code = diagnosis::diagnose_str("61");
        assert_ne!(rule.title.en, code.title.en);
        assert!(e.summary.en.contains(rule.title.en), "{}", e.summary.en);
        assert!(e.summary.zh.contains(rule.title.zh), "{}", e.summary.zh);
        let declined = e.steps.iter().find(|s| s.kind == "declined").unwrap();
        assert!(
            declined.text.en.contains(rule.title.en),
            "{}",
            declined.text.en
        );
        let shown = serde_json::to_string(&e).unwrap();
        assert!(!shown.contains(code.title.en), "{shown}");
    }

    /// An approval whose outcome reached the journal after the terminal was answered 96, which
    /// the host then reversed itself: told as that, not as the terminal's reversal of a
    /// request it got no answer to.
    #[test]
    fn the_hosts_own_reversal_is_not_told_as_the_terminals() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let directory = IssuerDirectory::embedded().unwrap();
        // A sale approved, reversed with reason 96 and an event `reversed` saying `by` (none:
        // no such event), as the switch writes them; its explanation.
        let explained = |id: i64, by: Option<String>| {
            let sale = TxnRow {
                response_code: Some("00".into()),
                state: TxnState::Reversed,
                sent_at_ms: Some(1_773_108_000_010),
                issuer_answered_at_ms: Some(1_773_108_000_200),
                ..row(id, "10000001", "898110048990001", TxnKind::Purchase, None)
            };
            let event = |at_ms: i64, kind: &str, detail: String| {
                Record::Event(store::EventRow {
                    txn_id: id,
                    at_ms,
                    kind: kind.into(),
                    detail,
                })
            };
            let mut records = vec![
                Record::InsertTxn(Box::new(sale.clone())),
                event(
                    1_773_108_000_200,
                    "approved",
                    format!("approved by ICBC at 10:00:00, auth code 12345{id} (purchase)"),
                ),
            ];
            records.extend(by.map(|detail| event(1_773_108_003_300, "reversed", detail)));
            records.push(Record::SafEnqueue {
                txn_id: id,
                issuer: "ICBC".into(),
                reason: "96".into(),
                next_attempt_ms: 0,
            });
            store.submit(records).unwrap().wait().unwrap();
            explain_txn(&store, &directory, &sale, sale.received_at_ms).unwrap()
        };
        let host_96 = diagnosis::diagnose_str("96").title.en;
        let e = explained(
            7,
            Some(format!(
                "outcome written after the terminal was answered 96 (the journal answered \
                 late): {} at 10:00:03; reversal queued to ICBC",
                switch::REVERSED_BY_HOST
            )),
        );
        assert!(
            e.steps.iter().any(|s| s.kind == "reversed_by_host"),
            "{:?}",
            e.steps
        );
        assert!(
            !e.steps.iter().any(|s| s.kind == "reversed_by_terminal"),
            "{:?}",
            e.steps
        );
        assert_eq!(e.diagnosis.unwrap().title.en, host_96);
        // A terminal's own reversal with reason 96 (it could not complete: the printer) is
        // the terminal's, and not diagnosed as the host's 96.
        let e = explained(
            8,
            Some("reversed by terminal 10000001 at 10:00:03; reversal queued to ICBC".into()),
        );
        assert!(
            e.steps.iter().any(|s| s.kind == "reversed_by_terminal"),
            "{:?}",
            e.steps
        );
        assert_ne!(e.diagnosis.unwrap().title.en, host_96);
        // The host's reversal of an approval whose outcome's commit it took for failed,
        // though it landed: reason 96 and no "reversed" event. The terminal was told 96.
        assert_eq!(explained(9, None).diagnosis.unwrap().title.en, host_96);
    }

    /// A refusal linked to another merchant's sale, as the switch once recorded a refund that
    /// named it: neither explanation shows the other merchant's transaction.
    #[test]
    fn a_link_to_another_merchants_transaction_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let sale = row(7, "10000001", "898110048990001", TxnKind::Purchase, None);
        let refund = row(9, "20000002", "898110048990002", TxnKind::Refund, Some(7));
        store
            .submit(vec![
                Record::InsertTxn(Box::new(sale.clone())),
                Record::InsertTxn(Box::new(refund.clone())),
            ])
            .unwrap()
            .wait()
            .unwrap();
        let directory = IssuerDirectory::embedded().unwrap();
        let shown = |r: &TxnRow| {
            let e = explain_txn(&store, &directory, r, r.received_at_ms).unwrap();
            (serde_json::to_string(&e).unwrap(), e.original_rrn)
        };
        let (refund_shown, original_rrn) = shown(&refund);
        assert_eq!(original_rrn, None);
        assert!(!refund_shown.contains("000000000007"), "{refund_shown}");
        assert!(!refund_shown.contains("10000001"), "{refund_shown}");
        let (sale_shown, _) = shown(&sale);
        assert!(!sale_shown.contains("000000000009"), "{sale_shown}");
        assert!(!sale_shown.contains("20000002"), "{sale_shown}");
    }

    /// A pre-authorisation expires as the switch stops completing it: when the clearing day
    /// (cut at 23:00 China time) 31 days on begins, not at a calendar midnight.
    #[test]
    fn a_pre_authorisation_expires_at_the_cut_over_its_completions_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let hour = 3_600_000;
        // 2026-03-10 23:30 China time (15:30 UTC): clearing day 2026-03-11.
        let at = 1_773_100_800_000 + 15 * hour + hour / 2;
        let hold = TxnRow {
            kind: TxnKind::PreAuth,
            received_at_ms: at,
            ..row(3, "10000001", "898110048990001", TxnKind::PreAuth, None)
        };
        store
            .submit(vec![Record::InsertTxn(Box::new(hold.clone()))])
            .unwrap()
            .wait()
            .unwrap();
        let directory = IssuerDirectory::embedded().unwrap();
        let outcome = |now_ms| {
            explain_txn(&store, &directory, &hold, now_ms)
                .unwrap()
                .outcome
        };
        let day = 86_400_000;
        // 31 calendar days on, 00:30: clearing day 2026-04-10, the 30th after its own.
        assert_eq!(outcome(at + 31 * day - 23 * hour), Outcome::Approved);
        // That evening, 22:59 and then 23:00, when the 31st clearing day begins.
        assert_eq!(
            outcome(at + 31 * day - hour / 2 - 60_000),
            Outcome::Approved
        );
        assert_eq!(outcome(at + 31 * day - hour / 2), Outcome::PreAuthExpired);
    }
}
