//! Duplicate payments: the same card (keyed fingerprint), the same amount and the same merchant
//! within a configurable window, both approved. The later one is flagged with what to do: void
//! it the same day (nothing is charged), or refund it once the day has closed.

use std::ops::ControlFlow;

use domain::IssuerDirectory;
use serde::Serialize;
use store::resolve::DuplicateRow;
use store::{Store, TxnKind, TxnRow, TxnState};
use switch::{CUTOVER_MINUTE_DEFAULT, ClearingDay, REFUND_DAYS_MAX};

use crate::ResolveError;
use crate::explain::TxnSummary;
use crate::text::{Both, yuan};

/// Ten minutes: a customer who "paid twice" at a counter does so within minutes.
pub const DUPLICATE_WINDOW_MS_DEFAULT: i64 = 10 * 60_000;
/// The widest window accepted: beyond a day, equal amounts are regular customers.
pub const DUPLICATE_WINDOW_MS_MAX: i64 = 86_400_000;

fn is_payment(row: &TxnRow) -> bool {
    matches!(row.kind, TxnKind::Purchase | TxnKind::Completion)
}

/// The pairs `row` makes with other approved payments by the same card at the same merchant
/// for the same amount within `window_ms`: with the latest earlier one (then `row` is the
/// second), and with the earliest later one already approved (the earlier payment waited on a
/// slow issuer while the customer paid again, perhaps at another terminal: `row` is then the
/// first). Both when both are there: the later payment, approved while `row` was still at its
/// issuer, found no pair then. The second of a pair is always the one received later, the one
/// to undo; the pair with an earlier payment comes first.
pub fn find_for(
    store: &dyn Store,
    row: &TxnRow,
    window_ms: i64,
) -> Result<Vec<DuplicateRow>, ResolveError> {
    let window_ms = window_ms.clamp(0, DUPLICATE_WINDOW_MS_MAX);
    let Some(pan) = row.pan.as_ref() else {
        return Ok(Vec::new());
    };
    // A payment refunded in full charged the card nothing: with it there is no duplicate
    // (the store's pairing reads leave such payments out likewise).
    if !is_payment(row)
        || row.state != TxnState::Approved
        || pan.fingerprint.is_empty()
        || row.refunded_fen >= row.amount_fen
    {
        return Ok(Vec::new());
    }
    let flagged_at_ms = row.answered_at_ms.unwrap_or(row.received_at_ms);
    let pair = |first: &TxnRow, second: &TxnRow| DuplicateRow {
        first_txn_id: first.id,
        second_txn_id: second.id,
        mid: row.mid.clone(),
        amount_fen: row.amount_fen,
        gap_ms: second.received_at_ms - first.received_at_ms,
        flagged_at_ms,
    };
    let earlier = store.latest_payment_of_card(
        &pan.fingerprint,
        &row.mid,
        row.amount_fen,
        row.received_at_ms.saturating_sub(window_ms),
        (row.received_at_ms, row.id),
    )?;
    let later = store.earliest_payment_of_card_after(
        &pan.fingerprint,
        &row.mid,
        row.amount_fen,
        (row.received_at_ms, row.id),
        row.received_at_ms.saturating_add(window_ms),
    )?;
    Ok(earlier
        .map(|first| pair(&first, row))
        .into_iter()
        .chain(later.map(|second| pair(row, &second)))
        .collect())
}

/// Every suspected duplicate among a merchant's payments received in `[from_ms, to_ms)`.
pub fn scan(
    store: &dyn Store,
    mid: &str,
    from_ms: i64,
    to_ms: i64,
    window_ms: i64,
) -> Result<Vec<DuplicateRow>, ResolveError> {
    let mut found = Vec::new();
    let mut seconds = std::collections::HashSet::new();
    store::each_txn_of_merchant(
        store,
        mid,
        from_ms,
        to_ms,
        |row| -> Result<_, ResolveError> {
            // Each pair is found from both of its payments: keep it once.
            for d in find_for(store, &row, window_ms)? {
                if seconds.insert(d.second_txn_id) {
                    found.push(d);
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    found.reverse();
    Ok(found)
}

/// What to do about the second payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuggestedAction {
    /// Same day: void it at the terminal, nothing is charged.
    VoidSecondToday,
    /// The day has closed: refund it.
    RefundSecond,
    /// One of the two is already voided, refunded or reversed: the customer paid once.
    NothingLeft,
    /// A void or refund of one of the two has no known outcome yet (no answer, its reversal
    /// not yet taken): it may have given the money back already, so nothing more until it is
    /// settled.
    WaitForReturn,
    /// A void or refund of one of the two may stand at the issuer for good (it refused the
    /// reversal): the customer may have been paid back; the acquirer takes it up.
    AskAcquirer,
}

/// A suspected duplicate as the merchant sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DuplicateFlag {
    pub first: TxnSummary,
    pub second: TxnSummary,
    pub gap_ms: i64,
    pub suggested_action: SuggestedAction,
    pub advice: Both,
}

/// The merchant's view of a stored flag, as of `now_ms`; `None` if a transaction is gone.
pub fn describe(
    store: &dyn Store,
    directory: &IssuerDirectory,
    flag: &DuplicateRow,
    now_ms: i64,
) -> Result<Option<DuplicateFlag>, ResolveError> {
    let (Some(first), Some(second)) = (
        store.txn(flag.first_txn_id)?,
        store.txn(flag.second_txn_id)?,
    ) else {
        return Ok(None);
    };
    // "Today" is the clearing day, as the switch judges a void: after the 23:00 cut-over a
    // void of the day before is refused (once its grace has passed), and a payment made after
    // the cut-over may still be voided until the next one.
    let now_day = ClearingDay::of(now_ms, CUTOVER_MINUTE_DEFAULT);
    let second_day = ClearingDay::of(second.received_at_ms, CUTOVER_MINUTE_DEFAULT).day_number;
    let same_day = now_day.same_day(second_day);
    let left = second.amount_fen - second.refunded_fen;
    let stands = |t: &TxnRow| {
        matches!(t.state, TxnState::Approved | TxnState::Completed) && t.refunded_fen < t.amount_fen
    };
    // The first payment undone since the flag (the customer paid three times and the middle
    // one was voided): the second may still pair with an earlier one that stands, which is
    // then the flag's first. (The window is the default, which is what the tailer flags by.)
    let first = if !stands(&first) && stands(&second) {
        match find_for(store, &second, DUPLICATE_WINDOW_MS_DEFAULT)?.first() {
            Some(pair) if pair.second_txn_id == second.id && pair.first_txn_id != first.id => {
                store.txn(pair.first_txn_id)?.unwrap_or(first)
            }
            _ => first,
        }
    } else {
        first
    };
    let gap_ms = second.received_at_ms - first.received_at_ms;
    // The customer paid once if the first payment was undone (voided, reversed, refunded in
    // full): the second is then the one that stands.
    let first_stands = stands(&first);
    // Past the refund limit the switch refuses a refund: the acquirer has to act.
    let refundable = now_day.day_number - second_day <= REFUND_DAYS_MAX;
    // A void or refund of either still in doubt may have given the money back: advising
    // another could pay the customer back twice.
    use crate::cases::{ReturnDoubt, return_doubt};
    let doubt = match return_doubt(store, second.id)? {
        ReturnDoubt::None if first_stands => return_doubt(store, first.id)?,
        doubt => doubt,
    };
    let action = match second.state {
        _ if doubt == ReturnDoubt::Pending => SuggestedAction::WaitForReturn,
        _ if doubt == ReturnDoubt::Kept => SuggestedAction::AskAcquirer,
        _ if !first_stands => SuggestedAction::NothingLeft,
        TxnState::Approved if left <= 0 => SuggestedAction::NothingLeft,
        TxnState::Approved if same_day && second.refunded_fen == 0 => {
            SuggestedAction::VoidSecondToday
        }
        TxnState::Approved | TxnState::Completed => SuggestedAction::RefundSecond,
        _ => SuggestedAction::NothingLeft,
    };
    let rrn = second.rrn.clone().unwrap_or_else(|| "-".to_owned());
    let tid = second.tid.as_str();
    let advice = match action {
        SuggestedAction::VoidSecondToday => Both::new(
            format!(
                "疑似重复付款（同一张卡、相同金额）：请先与顾客核实是否只买了一次。确认重复后，今天在终端 {tid}（第二笔付款的终端）上用同一张卡撤销第二笔（RRN {rrn}），撤销后不扣款"
            ),
            format!(
                "possibly paid twice (same card, same amount): first check with the customer \
                 that they bought only once. If so, void the second payment (RRN {rrn}) today \
                 at terminal {tid}, where it was made, with the same card, and it is not charged"
            ),
        ),
        SuggestedAction::RefundSecond if !refundable => Both::new(
            format!(
                "疑似重复付款（同一张卡、相同金额）：请先与顾客核实是否只买了一次。第二笔（RRN {rrn}）已超过 {REFUND_DAYS_MAX} 天的退货期限，终端和工单都不能再退，请联系收单机构处理"
            ),
            format!(
                "possibly paid twice (same card, same amount): first check with the customer \
                 that they bought only once. The second payment (RRN {rrn}) is past the \
                 {REFUND_DAYS_MAX}-day refund limit, so neither a terminal nor a case can refund \
                 it: ask the acquirer"
            ),
        ),
        SuggestedAction::RefundSecond if second.refunded_fen > 0 => {
            let left = yuan(left);
            Both::new(
                format!(
                    "疑似重复付款（同一张卡、相同金额）：请先与顾客核实是否只买了一次。确认重复后，对第二笔（RRN {rrn}）退还剩余的 {left}"
                ),
                format!(
                    "possibly paid twice (same card, same amount): first check with the \
                     customer that they bought only once. If so, refund the {left} left on the \
                     second payment (RRN {rrn})"
                ),
            )
        }
        SuggestedAction::RefundSecond => Both::new(
            format!(
                "疑似重复付款（同一张卡、相同金额）：请先与顾客核实是否只买了一次。确认重复后，对第二笔（RRN {rrn}）办理退货"
            ),
            format!(
                "possibly paid twice (same card, same amount): first check with the customer \
                 that they bought only once. If so, refund the second payment (RRN {rrn})"
            ),
        ),
        SuggestedAction::WaitForReturn => Both::new(
            "疑似重复付款（同一张卡、相同金额）：其中一笔的撤销或退货还没有确定结果（没有收到应答，正在冲正），钱可能已经退回，请先不要再撤销或退货，等结果确定后再来查看",
            "possibly paid twice (same card, same amount): a void or refund of one of the two \
             has no known outcome yet (no answer came, it is being reversed) and may already \
             have given the money back: do not void or refund again until it is settled, then \
             look again",
        ),
        SuggestedAction::AskAcquirer => Both::new(
            "疑似重复付款（同一张卡、相同金额）：其中一笔的撤销或退货在发卡行可能已经生效（发卡行拒绝了它的冲正），顾客可能已经拿回了钱。请不要再撤销或退货，请联系收单机构向发卡行核实",
            "possibly paid twice (same card, same amount): a void or refund of one of the two \
             may stand at the issuer (it refused the reversal), so the customer may have been \
             paid back already: do not void or refund again; ask the acquirer, who checks with \
             the issuer",
        ),
        SuggestedAction::NothingLeft => Both::new(
            "其中一笔已撤销、冲正或全额退货，顾客只付了一次，无需处理",
            "one of the two payments is already voided, reversed or refunded in full: the \
             customer paid once, nothing to do",
        ),
    };
    Ok(Some(DuplicateFlag {
        first: TxnSummary::of(directory, &first),
        second: TxnSummary::of(directory, &second),
        gap_ms,
        suggested_action: action,
        advice,
    }))
}

/// The flags stored for a merchant (by the notification tailer) whose second payment's id is
/// below `before_id` (from the newest when `None`), newest first, at most `limit`, described as
/// of `now_ms`.
pub fn flagged(
    store: &dyn Store,
    directory: &IssuerDirectory,
    mid: &str,
    (before_id, limit): (Option<i64>, u32),
    now_ms: i64,
) -> Result<Vec<DuplicateFlag>, ResolveError> {
    let rows = store.duplicates_of_merchant(mid, before_id, limit)?;
    describe_all(store, directory, &rows, now_ms)
}

/// The flags raised for a merchant at or after `since_ms`, the newest flagged first, at most
/// `limit`, described as of `now_ms`.
pub fn flagged_since(
    store: &dyn Store,
    directory: &IssuerDirectory,
    mid: &str,
    (since_ms, limit): (i64, u32),
    now_ms: i64,
) -> Result<Vec<DuplicateFlag>, ResolveError> {
    let rows = store.duplicates_flagged_since(mid, since_ms, limit)?;
    describe_all(store, directory, &rows, now_ms)
}

fn describe_all(
    store: &dyn Store,
    directory: &IssuerDirectory,
    rows: &[DuplicateRow],
    now_ms: i64,
) -> Result<Vec<DuplicateFlag>, ResolveError> {
    let mut out = Vec::new();
    for row in rows {
        if let Some(flag) = describe(store, directory, row, now_ms)? {
            out.push(flag);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use store::{PanAtRest, Record, SqliteConfig, SqliteStore};

    use super::*;

    const MID: &str = "898110048990001";
    const MINUTE_MS: i64 = 60_000;

    /// A purchase of 25.00 by one card, received at `minute`, in `state`.
    fn payment(id: i64, minute: i64, state: TxnState) -> TxnRow {
        TxnRow {
            id,
            tid: "10000001".into(),
            mid: MID.into(),
            batch_no: 1,
            stan: u32::try_from(id).unwrap(),
            kind: TxnKind::Purchase,
            mti: "0200".into(),
            processing_code: "000000".into(),
            condition_code: "00".into(),
            amount_fen: 2_500,
            currency: "156".into(),
            pan: Some(PanAtRest {
                sealed: vec![1],
                fingerprint: vec![7; 32],
                masked: "622202*********0123".into(),
                last4: "0123".into(),
                bin: "622202".into(),
            }),
            issuer: Some("ICBC".into()),
            rrn: Some(format!("{id:012}")),
            host_trace: None,
            auth_code: None,
            response_code: None,
            state,
            request_hash: vec![u8::try_from(id).unwrap()],
            original_id: None,
            refunded_fen: 0,
            field60: None,
            host_date: None,
            clearing_date: "20261207".into(),
            settlement_date: None,
            received_at_ms: 1_796_000_000_000 + minute * MINUTE_MS,
            sent_at_ms: None,
            issuer_answered_at_ms: None,
            answered_at_ms: None,
        }
    }

    /// Z at 0:00, A at 0:05 (its issuer slow), B at 0:12 approved before A, whose approval
    /// comes last: B found no pair when it was approved (A in flight, Z out of its window);
    /// A, approved, pairs with Z before it and with B after it, and both are flagged.
    #[test]
    fn a_payment_approved_last_pairs_with_the_payments_on_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let (z, a, b) = (
            payment(1, 0, TxnState::Approved),
            payment(2, 5, TxnState::InFlight),
            payment(3, 12, TxnState::Approved),
        );
        store
            .submit(vec![
                Record::InsertTxn(Box::new(z.clone())),
                Record::InsertTxn(Box::new(a.clone())),
                Record::InsertTxn(Box::new(b.clone())),
            ])
            .unwrap()
            .wait()
            .unwrap();
        let window = 10 * MINUTE_MS;
        assert!(find_for(&store, &b, window).unwrap().is_empty());
        store
            .submit(vec![Record::State {
                id: a.id,
                state: TxnState::Approved,
            }])
            .unwrap()
            .wait()
            .unwrap();
        let a = store.txn(a.id).unwrap().unwrap();
        let pairs: Vec<(i64, i64)> = find_for(&store, &a, window)
            .unwrap()
            .iter()
            .map(|d| (d.first_txn_id, d.second_txn_id))
            .collect();
        assert_eq!(pairs, [(z.id, a.id), (a.id, b.id)]);
        // The scan of the day finds both, each once.
        let found = scan(&store, MID, z.received_at_ms, b.received_at_ms + 1, window).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
    }

    /// Two payments a day apart from now: the second is to be refunded, unless a refund of it
    /// (or a void of the first) has no known outcome yet: advising another refund then could
    /// pay the customer back twice. Once that refund's reversal is taken, refund again.
    #[test]
    fn no_refund_is_advised_while_a_return_of_either_payment_is_in_doubt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let directory = IssuerDirectory::embedded().unwrap();
        let (first, second) = (
            payment(1, 0, TxnState::Approved),
            payment(2, 3, TxnState::Approved),
        );
        let refund = TxnRow {
            kind: TxnKind::Refund,
            original_id: Some(second.id),
            rrn: Some("000000000099".into()),
            ..payment(3, 60, TxnState::InFlight)
        };
        store
            .submit(vec![
                Record::InsertTxn(Box::new(first.clone())),
                Record::InsertTxn(Box::new(second.clone())),
            ])
            .unwrap()
            .wait()
            .unwrap();
        let flag = find_for(&store, &second, DUPLICATE_WINDOW_MS_DEFAULT)
            .unwrap()
            .remove(0);
        let later = second.received_at_ms + 2 * 86_400_000;
        let action = || {
            describe(&store, &directory, &flag, later)
                .unwrap()
                .unwrap()
                .suggested_action
        };
        assert_eq!(action(), SuggestedAction::RefundSecond);
        store
            .submit(vec![Record::InsertTxn(Box::new(refund.clone()))])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(action(), SuggestedAction::WaitForReturn);
        // Timed out, its reversal queued and not yet taken: still in doubt.
        store
            .submit(vec![
                Record::State {
                    id: refund.id,
                    state: TxnState::TimedOut,
                },
                Record::SafEnqueue {
                    txn_id: refund.id,
                    issuer: "ICBC".into(),
                    reason: "98".into(),
                    next_attempt_ms: 0,
                },
            ])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(action(), SuggestedAction::WaitForReturn);
        // The issuer refused the reversal with 12: the refund may stand there for good, and
        // the acquirer takes it up (not "wait", which would never end).
        let answered = |state: store::SafState, code: &str| {
            store
                .submit(vec![Record::SafDone {
                    txn_id: refund.id,
                    state,
                    at_ms: 1,
                    answer: Some(code.into()),
                }])
                .unwrap()
                .wait()
                .unwrap();
        };
        answered(store::SafState::Refused, "12");
        assert_eq!(action(), SuggestedAction::AskAcquirer);
        // Refused with 25 (the issuer never had it) or taken: the refund never stood, and
        // refunding is advised again.
        answered(store::SafState::Refused, "25");
        assert_eq!(action(), SuggestedAction::RefundSecond);
        answered(store::SafState::Acked, "00");
        assert_eq!(action(), SuggestedAction::RefundSecond);
    }
}
