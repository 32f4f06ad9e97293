//! The knowledge base itself: one entry per response code, per failure without a code and per
//! payout failure. Written for a cashier and a small merchant: short, concrete, no jargon.

use super::Action::{
    CorrectOriginal, FixTerminal, OtherCard, OtherCardOrSmallerAmount, ReKeyAmount,
    ResolveWithBank, Reversal, SignIn, SmallerAmount, UpdateSettlementAccount, UploadBatch,
};
use super::Category::{A, B, C, D, E};
use super::ContactIssuer::{IfCardLooksFine, IfPersists, IfRepeated, No, Optional, Yes};
use super::Retry::{AfterAction, Later, Never, NotNeeded, Now, Once, Tomorrow};
use super::WhoActs::{
    Acquirer, Cardholder, CardholderAndIssuer, Issuer, Merchant, Network, Nobody, Operator,
    Terminal,
};
use super::{Diagnosis, FailureKind, PayoutFailure, Subject, Text};

const fn t(zh: &'static str, en: &'static str) -> Text {
    Text::new(zh, en)
}

const fn code(wire: &[u8; 2]) -> Subject {
    Subject::Code(*wire)
}

// Texts several entries share. Shared only where the situation really is the same.

const CALL_ISSUER: Text = t(
    "需要：请持卡人拨打卡片背面的发卡行客服电话询问原因并处理。",
    "Yes: the cardholder calls the service number on the back of the card to ask why and fix it.",
);
const NO_CONTACT: Text = t(
    "不需要：问题不在发卡行。",
    "No: the problem is not on the issuer's side.",
);
/// One bank timing out again and again is for the acquirer to take up with it.
const TIMEOUTS_PERSIST_CONTACT: Text = t(
    "仅在同一家银行持续超时的情况下；通常由收单机构跟进。",
    "Only if one bank keeps timing out; the acquirer usually follows up.",
);
const STEP_OTHER_BANK_OR_LATER: Text = t(
    "请顾客换一张其他银行的卡，或稍后再试。",
    "Ask for a card from another bank, or try again later.",
);
/// Refused by shoudan before it went out.
const NOT_SENT_CONTACT: Text = t(
    "不需要：发卡行没有收到这笔请求。",
    "No: the issuer never received this request.",
);
const NO_CONTACT_TERMINAL: Text = t(
    "不需要：这是终端与收单系统之间的问题，与发卡行无关。",
    "No: this is between the terminal and the acquirer's host; the issuer is not involved.",
);
const PAYOUT_NO_CUSTOMER: Text = t(
    "与顾客无关：顾客的付款已经成功，这是商户结算款的问题，无需对顾客说明。",
    "Nothing to tell the customer: their payment succeeded; this is about the merchant's own \
     settlement.",
);

const STEP_OTHER_PAYMENT: Text = t(
    "请顾客换一张卡或用其他方式付款。",
    "Ask the customer for another card or another way to pay.",
);
const STEP_NO_GOODS: Text = t(
    "交易未成功，不要交付商品或服务。",
    "The payment did not go through: do not hand over goods or services.",
);
const STEP_NO_REPEAT: Text = t(
    "不要用同一张卡反复重试：结果不会变，还可能触发发卡行风控。",
    "Do not retry the same card again and again: the answer will not change and repeated tries \
     can trigger the issuer's fraud controls.",
);
const STEP_SIGN_IN: Text = t(
    "在终端上做一次签到（管理 → 签到），成功后重新发起交易。",
    "Sign the terminal in again (Management → Sign in), then start the transaction again.",
);
const STEP_SIGN_IN_FAILS: Text = t(
    "若签到后仍然出现，联系收单机构检查终端密钥。",
    "If it happens again after signing in, ask the acquirer to check the terminal's keys.",
);
const STEP_CHECK_FIRST: Text = t(
    "重试前先在交易查询或商户后台确认上一笔没有成功，避免重复扣款。",
    "Before retrying, check the transaction list or merchant portal that the earlier attempt did \
     not succeed, so the customer is not charged twice.",
);

const STEP_KEEP_CARD: Text = t(
    "若能安全做到，礼貌地暂扣此卡，不要与持卡人争执；人身安全第一。",
    "If it is safe, politely keep the card; do not argue with the holder. Personal safety comes \
     first.",
);
const STEP_CARD_TO_ACQUIRER: Text = t(
    "把暂扣的卡剪角后交给收单机构，并记下时间、终端号和交易金额。",
    "Cut a corner off the kept card and hand it to the acquirer, noting the time, terminal ID \
     and amount.",
);
const STEP_CALL_SECURITY_NOW: Text = t(
    "现在就致电收单机构安全（风控）部门，报上终端号、交易参考号和金额，按其指示处理。",
    "Call the acquirer's security (risk) team now with the terminal ID, reference number and \
     amount, and do as they say.",
);

/// Steps for the pick-up codes (04, 07, 34, 41, 43, 67): the issuer asks the merchant to keep
/// the card. Safety first; the card goes to the acquirer, never back across the counter.
const PICK_UP_STEPS: &[Text] = &[
    STEP_NO_GOODS,
    STEP_KEEP_CARD,
    STEP_CARD_TO_ACQUIRER,
    t(
        "如有可疑情况（冒用、伪卡），可向收单机构风控部门或公安报告。",
        "If anything looks suspicious (someone else's card, a counterfeit), report it to the \
         acquirer's risk team or the police.",
    ),
];
/// 35 and 37: keep the card and call the acquirer's security team now.
const PICK_UP_CALL_SECURITY_STEPS: &[Text] = &[
    STEP_NO_GOODS,
    STEP_CALL_SECURITY_NOW,
    STEP_KEEP_CARD,
    STEP_CARD_TO_ACQUIRER,
];
pub(crate) const PICK_UP_CUSTOMER: Text = t(
    "发卡银行要求暂停使用这张卡，这笔无法完成。请您联系发卡银行，或用其他方式付款。",
    "Your bank has asked us not to accept this card, so this payment cannot go through. Please \
     contact your bank, or pay another way.",
);
const PICK_UP_CONTACT: Text = t(
    "需要：由持卡人本人联系发卡行（卡背面客服电话）；商户把卡交收单机构即可，不必自己联系发卡行。",
    "Yes, by the cardholder (service number on the back of the card); the merchant only hands \
     the card to the acquirer.",
);

/// Steps for "no such account / card record" (39, 42, 44, 52, 53, 56).
const NO_ACCOUNT_STEPS: &[Text] = &[
    STEP_OTHER_PAYMENT,
    t(
        "先确认卡号没有输错（手工输入时）或卡片没有拿错。",
        "Check the number was not mistyped (manual entry) and it is the right card.",
    ),
    t(
        "这不是终端故障，不要反复重试。",
        "This is not a terminal fault; do not keep retrying.",
    ),
];
const NO_ACCOUNT_CUSTOMER: Text = t(
    "银行查不到这张卡对应的账户，可能卡已换新或账户已销户。请您联系发卡银行，或换一张卡。",
    "Your bank cannot find the account for this card; it may have been replaced or closed. \
     Please contact your bank, or use another card.",
);

/// Steps for security refusals (59, 60, 63, 66).
const SECURITY_STEPS: &[Text] = &[
    STEP_NO_GOODS,
    STEP_NO_REPEAT,
    STEP_OTHER_PAYMENT,
    t(
        "若同一终端短时间内多次出现，联系收单机构风控部门。",
        "If the terminal gets this several times in a short while, call the acquirer's risk team.",
    ),
];
/// 60 and 66: the issuer asks the merchant to reach the acquirer's security team now, not only
/// when it repeats.
const CALL_SECURITY_STEPS: &[Text] = &[STEP_NO_GOODS, STEP_CALL_SECURITY_NOW, STEP_NO_REPEAT];
/// A decline by the acquirer's own risk rules on the terminal (card testing, PIN guessing):
/// the issuer never saw the payment, so the customer is not sent to the bank, and nothing is
/// said that would tell a card tester which check stopped them.
const TERMINAL_HELD_CUSTOMER: Text = t(
    "这台刷卡机暂时不能收款，与您的卡无关。请用其他方式付款。",
    "This card machine cannot take payments right now; it is not your card. Please pay another \
     way.",
);
const SECURITY_CUSTOMER: Text = t(
    "银行的安全检查没有通过这笔交易。请您联系发卡银行确认，或换一种方式付款。",
    "The bank's security checks did not pass this payment. Please check with your bank, or pay \
     another way.",
);

const SYSTEM_BUSY_CUSTOMER: Text = t(
    "银行系统暂时无法处理，这笔没有成功。请稍等几分钟再试，或换一张其他银行的卡。",
    "The bank's system cannot take payments right now, so this one did not go through. Please \
     try again in a few minutes, or use a card from another bank.",
);

const STEP_CHECK_EXPIRY: Text = t(
    "看卡面有效期（月/年）确认已过期。",
    "Check the expiry date (month/year) on the card.",
);
const EXPIRED_STEPS: &[Text] = &[
    STEP_CHECK_EXPIRY,
    STEP_OTHER_PAYMENT,
    t(
        "提醒持卡人到发卡行领取或申请新卡。",
        "Remind the cardholder to collect or request a new card from the bank.",
    ),
];
const EXPIRED_CUSTOMER: Text = t(
    "这张卡已过有效期。请您用另一张卡付款，并联系发卡银行换新卡。",
    "This card has expired. Please use another card, and ask your bank for a new one.",
);

const RESTRICTED_STEPS: &[Text] = &[
    STEP_OTHER_PAYMENT,
    STEP_NO_REPEAT,
    t(
        "常见原因是发卡行设置了非柜面交易限制或账户管控，只有持卡人本人能在银行解除。",
        "A common cause is a bank restriction on non-counter transactions or an account control; \
         only the cardholder can lift it at the bank.",
    ),
];
const RESTRICTED_CUSTOMER: Text = t(
    "发卡银行限制了这张卡的使用。请您换一张卡，并联系发卡银行解除限制。",
    "Your bank has restricted this card. Please use another card, and contact your bank to lift \
     the restriction.",
);

const STEP_NO_MORE_PIN: Text = t(
    "不要再让顾客输入密码：今天这张卡已被锁定。",
    "Do not ask for the PIN again: the card is locked for today.",
);
const PIN_LOCKED_STEPS: &[Text] = &[STEP_NO_MORE_PIN, STEP_OTHER_PAYMENT];
const PIN_LOCKED_CUSTOMER: Text = t(
    "密码输错次数太多，这张卡今天暂时不能用密码交易。请您换一张卡，或联系发卡银行重置密码。",
    "The PIN was entered wrongly too many times, so this card cannot be used with a PIN today. \
     Please use another card, or contact your bank to reset the PIN.",
);

const NOT_ALLOWED_CARD_STEPS: &[Text] = &[
    STEP_OTHER_PAYMENT,
    t(
        "例如预授权不能用借记卡、某些预付卡不能在本类商户使用；换卡或换交易类型即可。",
        "For example, pre-authorisation on a debit card, or a prepaid card not valid for this \
         kind of merchant; another card or another transaction type works.",
    ),
];
const NOT_ALLOWED_CARD_CUSTOMER: Text = t(
    "这张卡不支持这种交易。请您换一张卡，具体原因可问发卡银行。",
    "This card does not allow this kind of payment. Please use another card; your bank can tell \
     you why.",
);

const NOT_ACCEPTED_HERE_CUSTOMER: Text = t(
    "这张卡在本店无法受理。请您换一张卡或用其他方式付款。",
    "We cannot accept this card here. Please use another card or another way to pay.",
);

const TERMINAL_OUT_OF_STEP_CUSTOMER: Text = t(
    "终端需要重新连接银行，请稍等一下，马上为您重新刷卡。",
    "The terminal needs to reconnect to the bank; one moment and we will try your card again.",
);

const IN_DOUBT_CUSTOMER: Text = t(
    "银行没有及时回复，这笔按失败处理。如果您收到扣款通知，款项会自动退回；请稍等，我们确认后再请您重新付款。",
    "The bank did not answer in time, so this payment counts as failed. If you get a debit \
     notice, the money is returned automatically; please wait a moment while we check, then we \
     will ask you to pay again.",
);

const STEP_LET_REVERSAL_RUN: Text = t(
    "终端会自动发送冲正（撤回这笔）；保持终端开机联网，直到冲正成功。",
    "The terminal sends a reversal (cancels the attempt) by itself; keep it on and connected \
     until the reversal is answered.",
);
const REVERSAL_STEPS: &[Text] = &[
    STEP_NO_GOODS,
    STEP_LET_REVERSAL_RUN,
    STEP_CHECK_FIRST,
    t(
        "顾客若已收到扣款短信：冲正后通常当天退回，个别银行要几个工作日才显示；把交易参考号给顾客以便查询。",
        "If the customer got a debit message: after the reversal the money usually comes back the \
         same day, though some banks take a few working days to show it; give the customer the \
         reference number.",
    ),
];

const SETTLEMENT_ONLY_CUSTOMER: Text = t(
    "与顾客无关：这是终端结算的问题，已完成的交易不受影响。",
    "Nothing to tell the customer: this is about the terminal's settlement; completed payments \
     are not affected.",
);

const PAYOUT_STEP_RESUBMIT: Text = t(
    "在商户后台重新提交结算账户（账户无误也需重新提交），收单机构复核通过后，下一次出款时自动重新出款。",
    "Submit the settlement account again in the merchant portal (the same account too, if it \
     was right); once the acquirer has checked it, the next payout run pays it again by \
     itself.",
);

const PAYOUT_STEP_PORTAL: Text = t(
    "在商户后台查看出款失败的说明和金额，资金仍在商户待结算余额中，不会丢失。",
    "See the failed payout's reason and amount in the merchant portal; the money stays in the \
     merchant's balance and is not lost.",
);

pub(super) const UNKNOWN_CODE: Diagnosis = Diagnosis {
    subject: Subject::UnknownCode,
    title: t("未知应答码", "Unknown response code"),
    meaning: t(
        "这个应答码不在 shoudan 的表中：我们不知道它的确切含义。除 00 外任何应答码都表示交易没有成功。",
        "This response code is not in shoudan's table: we do not know exactly what it means. Any \
         code other than 00 means the payment did not go through.",
    ),
    category: C,
    who_acts: Acquirer,
    retry: Once,
    contact_issuer: IfPersists,
    contact_when: t(
        "若持卡人换终端或换时间仍被拒，请持卡人联系发卡行。",
        "If the card is refused again elsewhere or later, the cardholder contacts the issuer.",
    ),
    customer_message: t(
        "这笔没有成功，原因暂不明确。请您换一张卡或用其他方式付款。",
        "This payment did not go through and the reason is not clear yet. Please use another \
         card or another way to pay.",
    ),
    merchant_steps: &[
        STEP_NO_GOODS,
        t(
            "最多再试一次；再失败就请顾客换卡或换支付方式。",
            "Try once more at most; if it fails again, ask for another card or payment method.",
        ),
        t(
            "把应答码、时间和终端号告诉收单机构，以便补充到知识库。",
            "Tell the acquirer the code, the time and the terminal ID so it can be added to the \
             table.",
        ),
    ],
};

/// Every entry, response codes in wire order first, then failures without a code, then payouts.
pub static TABLE: &[Diagnosis] = &[
    Diagnosis {
        subject: code(b"00"),
        title: t("交易成功", "Approved"),
        meaning: t(
            "发卡行批准了这笔交易。",
            "The issuer approved the transaction.",
        ),
        category: A,
        who_acts: Nobody,
        retry: NotNeeded,
        contact_issuer: No,
        contact_when: t("不需要。", "No need."),
        customer_message: t(
            "支付成功，请您在签购单上签名并收好凭条。",
            "Payment successful. Please sign the slip and keep your receipt.",
        ),
        merchant_steps: &[
            t(
                "核对签购单金额，请持卡人签名（免签交易除外），交付商品。",
                "Check the amount on the slip, have the cardholder sign (unless exempt), hand \
                 over the goods.",
            ),
            t(
                "商户联保存好，用于日后查询或退货。",
                "Keep the merchant copy for enquiries or refunds later.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"01"),
        title: t("请持卡人与发卡行联系", "Refer to card issuer"),
        meaning: t(
            "发卡行拒绝了这笔交易，原因只有发卡行知道（常见为风控或卡片状态）。",
            "The issuer declined and keeps the reason to itself (often fraud controls or the \
             card's status).",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: t(
            "银行没有批准这笔交易，原因需要您向发卡银行查询。请拨打卡背面的客服电话，或换一张卡。",
            "Your bank did not approve this payment and only the bank can tell you why. Please \
             call the number on the back of the card, or use another card.",
        ),
        merchant_steps: &[
            STEP_NO_REPEAT,
            STEP_OTHER_PAYMENT,
            t(
                "这不是终端或商户的问题，无需联系收单机构。",
                "This is not a terminal or merchant problem; no need to call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"02"),
        title: t(
            "请持卡人与发卡行联系（特殊条件）",
            "Refer to card issuer, special condition",
        ),
        meaning: t(
            "发卡行因卡片的特殊条件拒绝了交易，需要持卡人与发卡行确认。",
            "The issuer declined because of a special condition on the card; the cardholder has \
             to sort it out with the issuer.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: t(
            "银行要求您先与发卡银行联系才能用这张卡。请拨打卡背面的客服电话，或换一张卡。",
            "Your bank asks you to contact it before this card can be used. Please call the \
             number on the back of the card, or use another card.",
        ),
        merchant_steps: &[STEP_NO_REPEAT, STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: code(b"03"),
        title: t("无效商户", "Invalid merchant"),
        meaning: t(
            "收单系统或发卡行不认可这个商户：商户号未登记、未审核通过或已被停用。",
            "The merchant is not recognised: its merchant ID is not registered, not approved, or \
             suspended.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "本店的刷卡服务暂时有问题，与您的卡无关。请用其他方式付款。",
            "Our card service has a problem right now; it is not your card. Please pay another \
             way.",
        ),
        merchant_steps: &[
            t(
                "所有卡都会失败：暂停刷卡收款，改用其他收款方式。",
                "Every card will fail: stop taking cards for now and use another way to collect.",
            ),
            t(
                "联系收单机构，报上商户号和终端号，确认商户状态（入网审核、停用、资料过期）。",
                "Call the acquirer with the merchant ID and terminal ID and ask about the \
                 merchant's status (approval, suspension, expired documents).",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"04"),
        title: t("没收卡", "Pick up card"),
        meaning: t(
            "发卡行要求没收此卡（可能挂失、冒用或风险卡）。",
            "The issuer asks the merchant to keep the card (it may be reported, misused or high \
             risk).",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"05"),
        title: t(
            "不予承兑（持卡人认证失败）",
            "Do not honour (cardholder authentication failed)",
        ),
        meaning: t(
            "发卡行拒绝了交易，常见原因是持卡人身份验证没通过或发卡行风控拦截。",
            "The issuer refused, usually because the cardholder's verification failed or its \
             fraud controls stopped it.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: t(
            "发卡银行没有批准这笔交易。请您联系发卡银行确认，或换一张卡。",
            "Your bank did not approve this payment. Please check with your bank, or use \
             another card.",
        ),
        merchant_steps: &[STEP_NO_REPEAT, STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: code(b"06"),
        title: t("发卡行出错", "Issuer error"),
        meaning: t(
            "发卡行处理时出错，交易没有完成；终端会发冲正撤回这笔。",
            "The issuer hit an error and the transaction did not complete; the terminal sends a \
             reversal to cancel it.",
        ),
        category: E,
        who_acts: Issuer,
        retry: Later,
        contact_issuer: IfRepeated,
        contact_when: t(
            "仅在同一张卡反复出现时：请持卡人联系发卡行。",
            "Only if it keeps happening with the same card: the cardholder contacts the issuer.",
        ),
        customer_message: t(
            "银行系统处理出错，这笔没有成功。请稍后再试，或换一张卡。",
            "The bank's system had an error and this payment did not go through. Please try \
             again shortly, or use another card.",
        ),
        merchant_steps: &[
            STEP_CHECK_FIRST,
            t(
                "几分钟后再试；若其他银行的卡正常，只是这家银行的问题。",
                "Try again in a few minutes; if other banks' cards work, only this issuer is \
                 affected.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"07"),
        title: t("特殊条件下没收卡", "Pick up card, special condition"),
        meaning: t(
            "发卡行在特殊条件下要求没收此卡（通常是风险卡）。",
            "The issuer asks the merchant to keep the card under a special condition (usually a \
             high-risk card).",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"09"),
        title: t("交易处理中，请稍后", "Request in progress, try later"),
        meaning: t(
            "同一笔请求还在处理中，结果尚未确定。",
            "The same request is still being processed; the outcome is not known yet.",
        ),
        category: B,
        who_acts: Nobody,
        retry: Later,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "银行还在处理，请稍等一两分钟，我们确认结果后再告诉您。",
            "The bank is still processing; please wait a minute or two while we confirm the \
             result.",
        ),
        merchant_steps: &[
            t(
                "等一两分钟，不要立即重刷。",
                "Wait a minute or two; do not swipe again straight away.",
            ),
            STEP_CHECK_FIRST,
        ],
    },
    Diagnosis {
        subject: code(b"12"),
        title: t("无效交易", "Invalid transaction"),
        meaning: t(
            "这种交易不能这样做：交易类型不对，或要撤销/退货的原交易已撤销、已冲正。",
            "This transaction cannot be done this way: wrong transaction type, or the original to \
             void/refund was already voided or reversed.",
        ),
        category: C,
        who_acts: Operator,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "这项操作无法完成，我们核对后再为您处理。",
            "This operation cannot be completed; we will check and sort it out for you.",
        ),
        merchant_steps: &[
            t(
                "确认选对了交易类型（消费、撤销、退货、预授权完成）。",
                "Check the right transaction type was chosen (purchase, void, refund, \
                 pre-auth completion).",
            ),
            t(
                "撤销或退货时，在交易查询中确认原交易还没有被撤销、冲正或退过款。",
                "For a void or refund, check in the transaction list that the original was not \
                 already voided, reversed or refunded.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"13"),
        title: t("无效金额", "Invalid amount"),
        meaning: t(
            "金额不被接受（例如为零或格式不对）。",
            "The amount was not accepted (e.g. zero or malformed).",
        ),
        category: B,
        who_acts: Operator,
        retry: AfterAction(ReKeyAmount),
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "金额输入有误，我们重新输入一次。",
            "The amount was entered wrongly; we will key it in again.",
        ),
        merchant_steps: &[
            t(
                "重新输入金额（以元为单位，注意小数点），与顾客确认后再刷卡。",
                "Re-key the amount (in yuan, mind the decimal point), confirm it with the \
                 customer, then try again.",
            ),
            t(
                "金额正确仍失败时，联系收单机构检查终端设置。",
                "If a correct amount still fails, ask the acquirer to check the terminal's \
                 setup.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"14"),
        title: t("无效卡号", "Invalid card number"),
        meaning: t(
            "发卡行找不到这个卡号：卡号输错、磁条或芯片读错，或卡片损坏。",
            "The issuer does not know this card number: it was mistyped, misread from the \
             stripe or chip, or the card is damaged.",
        ),
        category: B,
        who_acts: Cardholder,
        retry: Once,
        contact_issuer: IfCardLooksFine,
        contact_when: t(
            "仅当卡片完好、重试仍失败时：请持卡人联系发卡行。",
            "Only if the card looks undamaged and the retry fails too: the cardholder contacts \
             the issuer.",
        ),
        customer_message: t(
            "卡号没有读对，我们再试一次。如果还不行，请您换一张卡。",
            "The card number was not read correctly; let us try once more. If that fails, please \
             use another card.",
        ),
        merchant_steps: &[
            t(
                "再试一次：插卡优先，手工输入时逐位核对卡号。",
                "Try once more: insert the chip if possible; if keying in, check each digit.",
            ),
            t(
                "再失败就请顾客换卡，不要继续重试。",
                "If it fails again, ask for another card; do not keep trying.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"15"),
        title: t("无此发卡行", "No such issuer"),
        meaning: t(
            "网络找不到这张卡的发卡行，这张卡在这里无法受理。",
            "The network cannot find this card's issuer; the card cannot be accepted here.",
        ),
        category: C,
        who_acts: Nobody,
        retry: Never,
        contact_issuer: No,
        contact_when: t("不需要：换卡即可。", "No: another card is the answer."),
        customer_message: NOT_ACCEPTED_HERE_CUSTOMER,
        merchant_steps: &[STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: code(b"21"),
        title: t("卡未激活或为睡眠卡", "Card not activated"),
        meaning: t(
            "卡片还没有激活，或账户长期未用被列为睡眠/久悬账户。",
            "The card has not been activated, or the account is dormant after long disuse.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: t(
            "需要：持卡人到发卡行网点或通过发卡行客服激活卡片、恢复账户。",
            "Yes: the cardholder activates the card or revives the account at a branch or \
             through the issuer's service line.",
        ),
        customer_message: t(
            "这张卡还没有激活或已长期未用。请您联系发卡银行激活，今天请换一张卡。",
            "This card is not activated or has been dormant. Please ask your bank to activate \
             it; for today, please use another card.",
        ),
        merchant_steps: &[STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: code(b"22"),
        title: t(
            "操作有误，请重新签到",
            "Suspected operation error, sign in again",
        ),
        meaning: t(
            "终端与主机不同步（批次、流水号或日期对不上），多见于终端长时间未签到。",
            "The terminal is out of step with the host (batch, trace number or date), often \
             after a long time without signing in.",
        ),
        category: C,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: TERMINAL_OUT_OF_STEP_CUSTOMER,
        merchant_steps: &[
            STEP_SIGN_IN,
            t(
                "检查终端日期和时间是否正确。",
                "Check the terminal's date and time are right.",
            ),
            STEP_SIGN_IN_FAILS,
        ],
    },
    Diagnosis {
        subject: code(b"25"),
        title: t("找不到原始交易", "Original transaction not found"),
        meaning: t(
            "撤销或退货找不到可用的原交易：参考号、流水号、批次号或日期不对，或已超过可撤销/退货期限；冲正得到 25 表示原交易已冲正过或不是当天的（冲正找不到原交易时主机回 00）。",
            "The void or refund cannot find an original it may act on: wrong reference, trace, \
             batch or date, or past the void/refund window. A reversal gets 25 when its \
             original was already reversed or is from another day (one whose original is not \
             found is answered 00).",
        ),
        category: C,
        who_acts: Operator,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "系统没找到原来那笔交易，我们核对凭条后再为您处理。",
            "We could not find the original payment; we will check the receipt and then take \
             care of it.",
        ),
        merchant_steps: &[
            t(
                "对照原签购单核对参考号、凭证号（流水号）、批次号和交易日期。",
                "Check the reference number, trace number, batch and date against the original \
                 slip.",
            ),
            t(
                "撤销只能当天、在结算前做；隔天请改做退货（30 天内）。",
                "A void works only on the same day before settlement; after that, do a refund \
                 (within 30 days).",
            ),
            t(
                "仍找不到时，带原签购单联系收单机构人工处理。",
                "If it still cannot be found, contact the acquirer with the original slip.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"30"),
        title: t("报文格式错误", "Format error"),
        meaning: t(
            "终端发出的报文格式不对，通常是终端程序或参数问题。",
            "The terminal sent a malformed message, usually a terminal software or parameter \
             problem.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: t(
            "终端出了技术问题，与您的卡无关。请用其他方式付款。",
            "The terminal has a technical problem; it is not your card. Please pay another way.",
        ),
        merchant_steps: &[
            t(
                "先签到一次再试；若仍出现，停止用此终端收款。",
                "Sign in once and try again; if it persists, stop taking cards on this terminal.",
            ),
            t(
                "联系收单机构，报上终端号、终端型号和程序版本，要求更新程序或参数。",
                "Call the acquirer with the terminal ID, model and software version and ask for \
                 a software or parameter update.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"31"),
        title: t("此卡不能受理（交换中心不支持该银行）", "Bank not supported"),
        meaning: t(
            "网络不支持这家发卡行，这张卡在这里无法受理。",
            "The network does not support this issuer; the card cannot be accepted here.",
        ),
        category: C,
        who_acts: Nobody,
        retry: Never,
        contact_issuer: No,
        contact_when: t("不需要：换卡即可。", "No: another card is the answer."),
        customer_message: NOT_ACCEPTED_HERE_CUSTOMER,
        merchant_steps: &[STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: code(b"33"),
        title: t("过期卡，请没收", "Expired card, pick up"),
        meaning: t(
            "卡片已过有效期，发卡行要求没收。",
            "The card has expired and the issuer asks the merchant to keep it.",
        ),
        category: D,
        who_acts: Cardholder,
        retry: Never,
        contact_issuer: Yes,
        contact_when: t(
            "需要：持卡人向发卡行申请新卡。",
            "Yes: the cardholder asks the issuer for a new card.",
        ),
        customer_message: EXPIRED_CUSTOMER,
        merchant_steps: &[
            STEP_CHECK_EXPIRY,
            t(
                "若能安全做到，暂扣此卡并交给收单机构；不要争执。",
                "If it is safe, keep the card and hand it to the acquirer; do not argue.",
            ),
            STEP_OTHER_PAYMENT,
        ],
    },
    Diagnosis {
        subject: code(b"34"),
        title: t("有作弊嫌疑，请没收", "Suspected fraud, pick up"),
        meaning: t(
            "发卡行怀疑这是欺诈交易，要求没收此卡。",
            "The issuer suspects fraud and asks the merchant to keep the card.",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"35"),
        title: t(
            "请没收卡并联系收单行安全部门",
            "Pick up, call acquirer security",
        ),
        meaning: t(
            "发卡行要求没收此卡，并请商户联系收单机构安全部门。",
            "The issuer asks the merchant to keep the card and to call the acquirer's security \
             team.",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_CALL_SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"36"),
        title: t("受限制的卡，请没收", "Restricted card, pick up"),
        meaning: t(
            "这张卡被发卡行限制使用，并要求没收。",
            "The issuer has restricted this card and asks the merchant to keep it.",
        ),
        category: D,
        who_acts: CardholderAndIssuer,
        retry: AfterAction(OtherCard),
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: RESTRICTED_CUSTOMER,
        merchant_steps: &[
            t(
                "若能安全做到，暂扣此卡并交给收单机构；不要争执。",
                "If it is safe, keep the card and hand it to the acquirer; do not argue.",
            ),
            STEP_OTHER_PAYMENT,
        ],
    },
    Diagnosis {
        subject: code(b"37"),
        title: t(
            "请没收卡并联系收单行安全部门",
            "Pick up, call acquirer security",
        ),
        meaning: t(
            "发卡行要求没收此卡，并请商户致电收单机构安全部门。",
            "The issuer asks the merchant to keep the card and phone the acquirer's security \
             team.",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_CALL_SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"38"),
        title: t("密码错误次数超限，请没收", "PIN tries exceeded, pick up"),
        meaning: t(
            "密码输错次数超过限制，发卡行锁定了这张卡的密码交易，并要求没收。",
            "Too many wrong PINs: the issuer has locked PIN use on this card and asks the \
             merchant to keep it.",
        ),
        category: D,
        who_acts: CardholderAndIssuer,
        retry: Tomorrow,
        contact_issuer: Yes,
        contact_when: t(
            "需要：持卡人联系发卡行解锁或重置密码（很多银行次日自动解锁）。",
            "Yes: the cardholder asks the issuer to unlock or reset the PIN (many banks unlock \
             it the next day).",
        ),
        customer_message: t(
            "密码输错次数太多，发卡银行要求暂停使用这张卡。请您换一张卡付款，并到发卡银行重置密码。",
            "The PIN was entered wrongly too many times and your bank has asked us not to \
             accept this card. Please pay with another card, and have your bank reset the PIN.",
        ),
        merchant_steps: &[
            STEP_NO_MORE_PIN,
            t(
                "若能安全做到，暂扣此卡并交给收单机构；不要争执。",
                "If it is safe, keep the card and hand it to the acquirer; do not argue.",
            ),
            STEP_OTHER_PAYMENT,
        ],
    },
    Diagnosis {
        subject: code(b"39"),
        title: t("无此信用卡账户", "No credit account"),
        meaning: t(
            "发卡行查不到这张卡对应的信用卡账户。",
            "The issuer finds no credit account for this card.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"40"),
        title: t("请求的功能不支持", "Function not supported"),
        meaning: t(
            "发卡行不支持这种交易（例如这类卡不能做预授权或退货）。",
            "The issuer does not support this transaction (e.g. this kind of card cannot do \
             pre-authorisation or refunds).",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: AfterAction(OtherCard),
        contact_issuer: Yes,
        contact_when: t(
            "需要时：持卡人可向发卡行了解这张卡支持哪些交易；当下换卡即可。",
            "If wanted: the cardholder can ask the issuer what the card supports; for now, \
             another card works.",
        ),
        customer_message: NOT_ALLOWED_CARD_CUSTOMER,
        merchant_steps: NOT_ALLOWED_CARD_STEPS,
    },
    Diagnosis {
        subject: code(b"41"),
        title: t("挂失卡，请没收", "Lost card, pick up"),
        meaning: t(
            "这张卡已被挂失，发卡行要求没收。",
            "This card has been reported lost; the issuer asks the merchant to keep it.",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"42"),
        title: t("无此账户", "No such account"),
        meaning: t(
            "发卡行查不到这张卡对应的账户。",
            "The issuer finds no account for this card.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"43"),
        title: t("被窃卡，请没收", "Stolen card, pick up"),
        meaning: t(
            "这张卡已被报告被盗，发卡行要求没收。",
            "This card has been reported stolen; the issuer asks the merchant to keep it.",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"44"),
        title: t("无此投资账户", "No investment account"),
        meaning: t(
            "发卡行查不到这张卡对应的投资账户。",
            "The issuer finds no investment account for this card.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"51"),
        title: t("余额不足", "Insufficient funds"),
        meaning: t(
            "卡内余额（信用卡为可用额度）不够支付这笔金额。",
            "The balance (for a credit card, the available credit) does not cover the amount.",
        ),
        category: C,
        who_acts: Cardholder,
        retry: AfterAction(OtherCardOrSmallerAmount),
        contact_issuer: No,
        contact_when: t(
            "不需要：卡片正常，只是余额或额度不够。",
            "No: the card is fine; the balance or credit is short.",
        ),
        customer_message: t(
            "卡里的余额（或信用额度）不够这笔金额。您可以换一张卡；如果知道卡里还有多少，也可以用这张卡付不超过余额的部分，其余用其他方式付。",
            "There is not enough on this card (balance or credit) for the amount. You can use \
             another card; or, if you know what is left on it, pay up to that with this card \
             and the rest another way.",
        ),
        merchant_steps: &[
            t("小声告知顾客，避免尴尬。", "Tell the customer discreetly."),
            t(
                "按顾客意愿换卡；或在顾客确认卡内可用余额后，用本卡支付不超过该余额的部分，其余换方式支付。",
                "As the customer prefers: another card; or, once the customer has confirmed what \
                 is left on the card, at most that on this card and the rest another way.",
            ),
            t(
                "不要逐步降低金额反复试刷：连续的小额拒绝会被当作测卡，终端可能被暂停受理。",
                "Do not keep retrying with ever smaller amounts: a run of small declines looks \
                 like card testing, and the terminal may be suspended.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"52"),
        title: t("无此支票账户", "No cheque account"),
        meaning: t(
            "发卡行查不到这张卡对应的支票账户。",
            "The issuer finds no cheque account for this card.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"53"),
        title: t("无此储蓄卡账户", "No savings account"),
        meaning: t(
            "发卡行查不到这张卡对应的储蓄账户。",
            "The issuer finds no savings account for this card.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"54"),
        title: t("过期卡", "Expired card"),
        meaning: t(
            "卡片已过有效期，或输入/读取的有效期不对。",
            "The card has expired, or the expiry date entered or read is wrong.",
        ),
        category: C,
        who_acts: Cardholder,
        retry: Never,
        contact_issuer: Yes,
        contact_when: t(
            "需要：持卡人向发卡行申请新卡。",
            "Yes: the cardholder asks the issuer for a new card.",
        ),
        customer_message: EXPIRED_CUSTOMER,
        merchant_steps: EXPIRED_STEPS,
    },
    Diagnosis {
        subject: code(b"55"),
        title: t("密码错误", "Incorrect PIN"),
        meaning: t(
            "持卡人输入的密码不对。",
            "The cardholder entered the wrong PIN.",
        ),
        category: C,
        who_acts: Cardholder,
        retry: Now,
        contact_issuer: No,
        contact_when: t(
            "不需要；若持卡人忘记密码，由其本人到发卡行重置。",
            "No; if the cardholder has forgotten the PIN, they reset it with the issuer \
             themselves.",
        ),
        customer_message: t(
            "密码错误，请您重新输入。连续输错次数过多，卡片会被锁定。",
            "The PIN was not correct; please enter it again. Too many wrong tries in a row will \
             lock the card.",
        ),
        merchant_steps: &[
            t(
                "请顾客重新输入密码，输入时遮挡键盘、不要旁观。",
                "Ask the customer to enter the PIN again; shield the keypad and look away.",
            ),
            t(
                "连续错两次后建议顾客换卡，避免被锁卡。",
                "After two wrong tries, suggest another card so this one is not locked.",
            ),
            t(
                "不要替顾客输入密码，也不要询问密码。",
                "Never enter or ask for the customer's PIN.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"56"),
        title: t("无此卡记录", "No card record"),
        meaning: t(
            "发卡行没有这张卡的记录（可能是新卡未生效、旧卡已换新）。",
            "The issuer has no record of this card (a new card not yet live, or an old one \
             replaced).",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: NO_ACCOUNT_CUSTOMER,
        merchant_steps: NO_ACCOUNT_STEPS,
    },
    Diagnosis {
        subject: code(b"57"),
        title: t("不允许持卡人进行的交易", "Not allowed for this card"),
        meaning: t(
            "发卡行不允许这张卡做这种交易（例如卡种或用途限制）。",
            "The issuer does not allow this card to make this transaction (card type or usage \
             limits).",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: AfterAction(OtherCard),
        contact_issuer: Yes,
        contact_when: t(
            "需要时：持卡人可向发卡行开通相应功能；当下换卡即可。",
            "If wanted: the cardholder can ask the issuer to enable it; for now, another card \
             works.",
        ),
        customer_message: NOT_ALLOWED_CARD_CUSTOMER,
        merchant_steps: NOT_ALLOWED_CARD_STEPS,
    },
    Diagnosis {
        subject: code(b"58"),
        title: t("不允许终端进行的交易", "Not allowed for this terminal"),
        meaning: t(
            "本终端或商户没有开通这种交易或这类卡（例如未开通预授权、退货或外卡）。",
            "This terminal or merchant is not set up for this transaction or card (e.g. \
             pre-authorisation, refunds or foreign cards not enabled).",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "本店暂不支持这种交易或这类卡。请您换一张卡或用其他方式付款。",
            "We cannot do this kind of transaction or take this kind of card yet. Please use \
             another card or another way to pay.",
        ),
        merchant_steps: &[
            STEP_OTHER_PAYMENT,
            t(
                "如果需要这项功能，联系收单机构申请开通（报上商户号、终端号和交易类型）。",
                "If you need this function, ask the acquirer to enable it (give the merchant ID, \
                 terminal ID and transaction type).",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"59"),
        title: t("有作弊嫌疑（卡片校验失败）", "Suspected fraud"),
        meaning: t(
            "卡片校验没通过（如芯片密文或校验值不对），发卡行怀疑欺诈。",
            "Card verification failed (e.g. chip cryptogram or check value), so the issuer \
             suspects fraud.",
        ),
        category: C,
        who_acts: Issuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: SECURITY_CUSTOMER,
        merchant_steps: SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"60"),
        title: t("请联系收单行安全部门", "Contact acquirer security"),
        meaning: t(
            "发卡行要求商户与收单机构安全部门联系后再处理。",
            "The issuer asks the merchant to contact the acquirer's security team.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: SECURITY_CUSTOMER,
        merchant_steps: CALL_SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"61"),
        title: t("超出金额限制", "Exceeds amount limit"),
        meaning: t(
            "金额超过了这张卡的单笔或当日限额（或商户对单卡设置的限额）。",
            "The amount is over the card's per-transaction or daily limit (or the merchant's \
             per-card limit).",
        ),
        category: C,
        who_acts: Cardholder,
        retry: AfterAction(SmallerAmount),
        contact_issuer: Optional,
        contact_when: t(
            "可选：持卡人可通过发卡行 App 或客服电话临时提高限额。",
            "Optional: the cardholder can raise the limit through the bank's app or service \
             line.",
        ),
        customer_message: t(
            "金额超过了这张卡的限额。您可以在银行 App 提高限额后再付，或换一张卡。",
            "The amount is over this card's limit. You can raise the limit in your bank's app \
             and pay again, or use another card.",
        ),
        merchant_steps: &[
            t(
                "不要把一笔拆成多笔来绕过限额：这违反银联规定，可能导致商户被处罚。",
                "Do not split one sale into several to get round the limit: it breaks card \
                 scheme rules and can get the merchant penalised.",
            ),
            t(
                "可以请顾客提高限额后重付，或用其他卡/方式支付超出部分。",
                "The customer can raise the limit and pay again, or pay the excess with another \
                 card or method.",
            ),
            t(
                "若很多卡在同一金额都被拒，联系收单机构确认商户限额。",
                "If many cards fail at the same amount, ask the acquirer about the merchant's \
                 limits.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"62"),
        title: t("受限制的卡", "Restricted card"),
        meaning: t(
            "发卡行限制了这张卡的使用（如仅限境内、账户管控、非柜面交易限制）。",
            "The issuer has restricted this card (domestic use only, account controls, limits \
             on non-counter transactions).",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: AfterAction(OtherCard),
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: RESTRICTED_CUSTOMER,
        merchant_steps: RESTRICTED_STEPS,
    },
    Diagnosis {
        subject: code(b"63"),
        title: t("违反安全规定", "Security violation"),
        meaning: t(
            "交易没通过安全检查（如密钥或安全信息不符），被发卡行或网络拒绝。",
            "The transaction failed a security check (keys or security data did not match) and \
             was refused.",
        ),
        category: C,
        who_acts: Issuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: SECURITY_CUSTOMER,
        merchant_steps: SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"64"),
        title: t("原始金额不正确", "Original amount incorrect"),
        meaning: t(
            "撤销、冲正或预授权完成的金额与原交易不符。",
            "The amount of the void, reversal or pre-auth completion does not match the \
             original.",
        ),
        category: C,
        who_acts: Operator,
        retry: AfterAction(CorrectOriginal),
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "金额和原交易对不上，我们核对一下再为您处理。",
            "The amount does not match the original payment; we will check and redo it.",
        ),
        merchant_steps: &[
            t(
                "对照原签购单核对金额：撤销必须等于原金额，预授权完成不能超过预授权金额。",
                "Check the amount against the original slip: a void must equal it, a pre-auth \
                 completion may not exceed the pre-auth.",
            ),
            t(
                "只退一部分时，请做退货而不是撤销。",
                "To return only part of the amount, do a refund, not a void.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"65"),
        title: t("超出交易次数限制", "Exceeds frequency limit"),
        meaning: t(
            "这张卡今天的交易次数已达到发卡行的上限。",
            "The card has reached the issuer's limit on the number of transactions today.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Tomorrow,
        contact_issuer: Optional,
        contact_when: t(
            "可选：持卡人可向发卡行询问或调整次数限制。",
            "Optional: the cardholder can ask the issuer about or adjust the limit.",
        ),
        customer_message: t(
            "这张卡今天的交易次数已用完。请您换一张卡，明天这张卡可以再用。",
            "This card has used up today's number of transactions. Please use another card; \
             this one works again tomorrow.",
        ),
        merchant_steps: &[STEP_OTHER_PAYMENT, STEP_NO_REPEAT],
    },
    Diagnosis {
        subject: code(b"66"),
        title: t("请致电收单行安全部门", "Call acquirer security"),
        meaning: t(
            "发卡行要求商户致电收单机构安全部门。",
            "The issuer asks the merchant to phone the acquirer's security team.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: SECURITY_CUSTOMER,
        merchant_steps: CALL_SECURITY_STEPS,
    },
    Diagnosis {
        subject: code(b"67"),
        title: t("没收卡", "Capture card"),
        meaning: t(
            "发卡行要求没收此卡（常见于 ATM，POS 上同样处理）。",
            "The issuer asks for the card to be kept (mostly an ATM code; handle it the same \
             way at a POS).",
        ),
        category: D,
        who_acts: Operator,
        retry: Never,
        contact_issuer: Yes,
        contact_when: PICK_UP_CONTACT,
        customer_message: PICK_UP_CUSTOMER,
        merchant_steps: PICK_UP_STEPS,
    },
    Diagnosis {
        subject: code(b"68"),
        title: t(
            "交易超时，冲正后再试",
            "Response too late, retry after the reversal",
        ),
        meaning: t(
            "网络等发卡行的回复超时了，交易按失败处理，终端会发冲正撤回。",
            "The network waited too long for the issuer; the transaction counts as failed and \
             the terminal sends a reversal.",
        ),
        category: C,
        who_acts: Network,
        retry: AfterAction(Reversal),
        contact_issuer: No,
        contact_when: t(
            "不需要：冲正会撤回可能发生的扣款。",
            "No: the reversal undoes any debit that may have happened.",
        ),
        customer_message: IN_DOUBT_CUSTOMER,
        merchant_steps: REVERSAL_STEPS,
    },
    Diagnosis {
        subject: code(b"75"),
        title: t("密码错误次数超限", "PIN tries exceeded"),
        meaning: t(
            "密码输错次数超过限制，发卡行今天锁定了这张卡的密码交易。",
            "Too many wrong PINs: the issuer has locked PIN use on this card for today.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Tomorrow,
        contact_issuer: Yes,
        contact_when: t(
            "需要：持卡人联系发卡行解锁或重置密码（很多银行次日自动解锁）。",
            "Yes: the cardholder asks the issuer to unlock or reset the PIN (many banks unlock \
             it the next day).",
        ),
        customer_message: PIN_LOCKED_CUSTOMER,
        merchant_steps: PIN_LOCKED_STEPS,
    },
    Diagnosis {
        subject: code(b"77"),
        title: t(
            "批次号不一致，请重新签到",
            "Batch out of step, sign in again",
        ),
        meaning: t(
            "终端的批次号与主机不一致，需要重新签到同步。",
            "The terminal's batch number differs from the host's; it must sign in again to \
             resynchronise.",
        ),
        category: D,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: TERMINAL_OUT_OF_STEP_CUSTOMER,
        merchant_steps: &[
            t(
                "先结算（如有未结算交易），再签到，然后重新发起交易。",
                "Settle first if there are unsettled transactions, then sign in, then start the \
                 transaction again.",
            ),
            STEP_SIGN_IN_FAILS,
        ],
    },
    Diagnosis {
        subject: code(b"79"),
        title: t("脱机交易对账不平", "Offline reconciliation unbalanced"),
        meaning: t(
            "终端与主机的脱机交易对不上账，需要终端重新上送。",
            "The terminal's offline transactions do not match the host's; the terminal must \
             upload them again.",
        ),
        category: C,
        who_acts: Terminal,
        retry: AfterAction(UploadBatch),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: SETTLEMENT_ONLY_CUSTOMER,
        merchant_steps: &[
            t(
                "在终端上执行批上送（或重新结算，终端会自动上送）。",
                "Run the batch upload on the terminal (or settle again; the terminal uploads by \
                 itself).",
            ),
            t(
                "不要删除终端里的交易记录；仍不平时联系收单机构并报上批次号。",
                "Do not delete the terminal's transactions; if it still does not balance, call \
                 the acquirer with the batch number.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"90"),
        title: t("日切处理中，请稍后", "Cut-over in progress, try later"),
        meaning: t(
            "银行系统正在做日终切换，几分钟内不能交易。",
            "The bank's system is switching to the next business day; no transactions for a few \
             minutes.",
        ),
        category: C,
        who_acts: Nobody,
        retry: Later,
        contact_issuer: No,
        contact_when: t(
            "不需要：几分钟后自动恢复。",
            "No: it recovers by itself in minutes.",
        ),
        customer_message: t(
            "银行系统正在日终处理，请稍等几分钟再付。",
            "The bank is doing its end-of-day processing; please wait a few minutes and pay \
             again.",
        ),
        merchant_steps: &[
            t(
                "等几分钟后重试（通常在午夜前后）。",
                "Try again in a few minutes (this usually happens around midnight).",
            ),
            STEP_CHECK_FIRST,
        ],
    },
    Diagnosis {
        subject: code(b"91"),
        title: t("发卡行不能操作", "Issuer unavailable"),
        meaning: t(
            "发卡行系统暂时不可用（维护或故障）。",
            "The issuer's system is temporarily unavailable (maintenance or a fault).",
        ),
        category: C,
        who_acts: Issuer,
        retry: Later,
        contact_issuer: IfPersists,
        contact_when: t(
            "仅在长时间（数小时）持续时：持卡人可向发卡行确认；收单机构也会跟进。",
            "Only if it lasts for hours: the cardholder can check with the issuer; the acquirer \
             follows up too.",
        ),
        customer_message: SYSTEM_BUSY_CUSTOMER,
        merchant_steps: &[STEP_OTHER_BANK_OR_LATER, STEP_CHECK_FIRST],
    },
    Diagnosis {
        subject: code(b"92"),
        title: t("发卡行或网络无法到达", "Issuer or network unreachable"),
        meaning: t(
            "交易送不到发卡行：网络或线路中断。",
            "The transaction could not reach the issuer: a network or line is down.",
        ),
        category: C,
        who_acts: Network,
        retry: Later,
        contact_issuer: IfPersists,
        contact_when: t(
            "仅在长时间持续时；通常由收单机构与网络处理。",
            "Only if it lasts; the acquirer and the network usually handle it.",
        ),
        customer_message: SYSTEM_BUSY_CUSTOMER,
        merchant_steps: &[
            t(
                "稍后再试，或请顾客换一张其他银行的卡。",
                "Try again later, or ask for a card from another bank.",
            ),
            t(
                "若所有卡都失败，检查终端网络，并联系收单机构。",
                "If every card fails, check the terminal's network and call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"93"),
        title: t("交易违法，不能完成", "Violation of law or rules"),
        meaning: t(
            "这笔交易违反法规或卡组织规定，发卡行拒绝。",
            "The transaction would break the law or card scheme rules, so the issuer refused.",
        ),
        category: C,
        who_acts: CardholderAndIssuer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: CALL_ISSUER,
        customer_message: t(
            "银行按规定不能完成这笔交易。具体原因请您向发卡银行查询。",
            "The bank cannot complete this payment under its rules. Please ask your bank for \
             the reason.",
        ),
        merchant_steps: &[
            STEP_NO_REPEAT,
            t(
                "若多张卡都出现，联系收单机构确认商户类别（MCC）和经营范围是否登记正确。",
                "If several cards get this, ask the acquirer whether the merchant's category \
                 (MCC) and business are registered correctly.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"94"),
        title: t("重复交易", "Duplicate transaction"),
        meaning: t(
            "主机已有一笔同一终端、同一批次、同一流水号的交易，但内容与这次不同，这次被拒，没有扣款。原样重发的请求会得到第一次的结果，不会是 94；出现 94 多半是终端流水号回退（重置、恢复或两台终端用了同一个终端号）。",
            "The host already holds a transaction with this terminal, batch and trace number, \
             but with other contents, so this one is refused and charged nothing. A request \
             resent unchanged gets the first one's answer, never 94; 94 usually means the \
             terminal's trace counter went back (reset, restored, or two terminals with one \
             terminal ID).",
        ),
        category: C,
        who_acts: Operator,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "这次没有扣款。请稍等，我们核对一下上一笔，避免重复收您的钱。",
            "This attempt charged nothing. One moment while we check the earlier payment, so \
             you are not charged twice.",
        ),
        merchant_steps: &[
            t(
                "在交易查询或商户后台找同一流水号的那笔：只有卡号后四位和金额都与这位顾客相同且已成功，才算已付款，不要再收；否则那是另一笔交易，不能当作这位顾客已付。",
                "Find the transaction with the same trace number in the transaction list or \
                 merchant portal: only if its card's last four digits and amount are this \
                 customer's and it succeeded is this payment made (do not charge again); \
                 otherwise it is another sale and this customer has not paid.",
            ),
            t(
                "反复出现时，终端流水号在回退：先结算并重新签到（换新批次）再交易，并联系收单机构检查终端。",
                "If it keeps happening, the terminal's trace counter is going back: settle and \
                 sign in again (a new batch) before the next transaction, and ask the acquirer \
                 to check the terminal.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"95"),
        title: t("对账错误", "Reconciliation error"),
        meaning: t(
            "收单系统对账出错，交易没有完成。",
            "The acquirer's reconciliation hit an error; the transaction did not complete.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Later,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "系统暂时出错，这笔没有成功。请稍后再试或用其他方式付款。",
            "The system had an error and this payment did not go through. Please try again \
             shortly or pay another way.",
        ),
        merchant_steps: &[
            STEP_CHECK_FIRST,
            t(
                "稍后重试；持续出现时联系收单机构并报上时间和终端号。",
                "Try again later; if it persists, call the acquirer with the time and terminal \
                 ID.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"96"),
        title: t("系统异常", "System malfunction"),
        meaning: t(
            "收单系统或网络内部出错，交易没有完成；终端会发冲正撤回。",
            "An internal error at the acquirer or network; the transaction did not complete and \
             the terminal sends a reversal.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Later,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "系统暂时出错，这笔没有成功；如有扣款会自动退回。请稍后再试或用其他方式付款。",
            "The system had an error and this payment did not go through; any debit is returned \
             automatically. Please try again shortly or pay another way.",
        ),
        merchant_steps: &[
            STEP_CHECK_FIRST,
            t(
                "稍后重试；持续出现时联系收单机构并报上时间和终端号。",
                "Try again later; if it persists, call the acquirer with the time and terminal \
                 ID.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"97"),
        title: t("终端未登记", "Terminal not registered"),
        meaning: t(
            "主机不认识这个终端号：终端未登记、已注销或参数配错。",
            "The host does not know this terminal ID: not registered, deregistered, or \
             misconfigured.",
        ),
        category: D,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: t(
            "终端暂时不能收款，与您的卡无关。请用其他方式付款。",
            "This terminal cannot take payments right now; it is not your card. Please pay \
             another way.",
        ),
        merchant_steps: &[
            t(
                "所有卡都会失败：暂停用此终端收款。",
                "Every card will fail: stop taking cards on this terminal.",
            ),
            t(
                "联系收单机构，报上终端号（终端设置里可查），确认终端已登记并下载正确参数。",
                "Call the acquirer with the terminal ID (in the terminal's settings) to have it \
                 registered and its parameters downloaded.",
            ),
        ],
    },
    Diagnosis {
        subject: code(b"98"),
        title: t("发卡行超时", "Issuer did not answer in time"),
        meaning: t(
            "网络没有等到发卡行的回复，交易结果不确定；终端会自动冲正，撤回可能的扣款。",
            "The network got no answer from the issuer in time, so the outcome is uncertain; the \
             terminal reverses automatically to undo any debit.",
        ),
        category: E,
        who_acts: Network,
        retry: AfterAction(Reversal),
        contact_issuer: IfPersists,
        contact_when: TIMEOUTS_PERSIST_CONTACT,
        customer_message: IN_DOUBT_CUSTOMER,
        merchant_steps: REVERSAL_STEPS,
    },
    Diagnosis {
        subject: code(b"99"),
        title: t("密码格式错，请重新签到", "PIN format error, sign in again"),
        meaning: t(
            "主机解不开密码块，通常是终端的密码密钥与主机不一致。",
            "The host could not read the PIN block, usually because the terminal's PIN key no \
             longer matches the host's.",
        ),
        category: B,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: TERMINAL_OUT_OF_STEP_CUSTOMER,
        merchant_steps: &[STEP_SIGN_IN, STEP_SIGN_IN_FAILS],
    },
    Diagnosis {
        subject: code(b"A0"),
        title: t(
            "MAC 校验错，请重新签到",
            "MAC verification failed, sign in again",
        ),
        meaning: t(
            "报文校验码（MAC）不对，通常是终端的 MAC 密钥与主机不一致；交易按失败处理并冲正。",
            "The message authentication code did not verify, usually because the terminal's MAC \
             key no longer matches the host's; the transaction counts as failed and is reversed.",
        ),
        category: B,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: TERMINAL_OUT_OF_STEP_CUSTOMER,
        merchant_steps: &[STEP_SIGN_IN, STEP_CHECK_FIRST, STEP_SIGN_IN_FAILS],
    },
    // Failures that never get a response code.
    Diagnosis {
        subject: Subject::Failure(FailureKind::NoAnswer),
        title: t("交易超时，无应答", "No answer from the host"),
        meaning: t(
            "终端发出交易后没有收到回复，不知道是否已扣款；终端会自动冲正，撤回可能的扣款。",
            "The terminal sent the transaction and got no reply, so it cannot know whether the \
             card was charged; it reverses automatically to undo any debit.",
        ),
        category: E,
        who_acts: Network,
        retry: AfterAction(Reversal),
        contact_issuer: No,
        contact_when: t(
            "不需要：冲正会撤回可能发生的扣款；冲正一直不成功时联系收单机构。",
            "No: the reversal undoes any debit; if the reversal never succeeds, call the \
             acquirer.",
        ),
        customer_message: IN_DOUBT_CUSTOMER,
        merchant_steps: &[
            STEP_NO_GOODS,
            t(
                "检查终端网络（网线、Wi-Fi、SIM 卡信号）。",
                "Check the terminal's connection (cable, Wi-Fi, SIM signal).",
            ),
            STEP_LET_REVERSAL_RUN,
            STEP_CHECK_FIRST,
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::BadResponseMac),
        title: t("应答 MAC 校验失败", "Response failed its MAC check"),
        meaning: t(
            "终端收到了回复，但回复的校验码（MAC）不对，不能信任；终端按失败处理并冲正（A0）。",
            "The reply arrived but its MAC did not verify, so it cannot be trusted; the terminal \
             treats the transaction as failed and reverses it (A0).",
        ),
        category: B,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: IN_DOUBT_CUSTOMER,
        merchant_steps: &[
            STEP_NO_GOODS,
            STEP_LET_REVERSAL_RUN,
            STEP_SIGN_IN,
            STEP_CHECK_FIRST,
            STEP_SIGN_IN_FAILS,
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ConnectionRefused),
        title: t("无法连接收单主机", "Cannot connect to the host"),
        meaning: t(
            "终端连不上收单主机：网络不通、地址端口配错，或主机暂停服务。没有发出交易，不会扣款。",
            "The terminal cannot reach the acquirer's host: no network, a wrong address or port, \
             or the host is down. Nothing was sent, so nothing was charged.",
        ),
        category: E,
        who_acts: Merchant,
        retry: Later,
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: t(
            "刷卡机暂时连不上网络，没有扣您的钱。请稍等，或用其他方式付款。",
            "The card terminal cannot connect right now and you have not been charged. Please \
             wait a moment, or pay another way.",
        ),
        merchant_steps: &[
            t(
                "检查终端网络：网线、路由器、Wi-Fi 或 SIM 卡信号；重启终端。",
                "Check the terminal's network: cable, router, Wi-Fi or SIM signal; restart the \
                 terminal.",
            ),
            t(
                "其他设备能上网而终端仍连不上时，联系收单机构确认主机地址和服务状态。",
                "If other devices are online but the terminal still cannot connect, ask the \
                 acquirer to check the host address and service status.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ConnectionDropped),
        title: t("交易中连接中断", "Connection dropped mid-transaction"),
        meaning: t(
            "交易发出后连接断开，不知道是否已扣款；终端恢复连接后会自动冲正。",
            "The connection broke after the transaction was sent, so its outcome is unknown; \
             the terminal reverses it once it reconnects.",
        ),
        category: E,
        who_acts: Network,
        retry: AfterAction(Reversal),
        contact_issuer: No,
        contact_when: t(
            "不需要：冲正会撤回可能发生的扣款。",
            "No: the reversal undoes any debit that may have happened.",
        ),
        customer_message: IN_DOUBT_CUSTOMER,
        merchant_steps: &[
            STEP_NO_GOODS,
            t(
                "恢复网络后保持终端开机，让它完成冲正。",
                "Restore the connection and keep the terminal on so it completes the reversal.",
            ),
            STEP_CHECK_FIRST,
            t(
                "经常断线时检查网络质量，或联系收单机构。",
                "If it drops often, check the network quality or call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ClockSkew),
        title: t("终端时间不准", "Terminal clock is wrong"),
        meaning: t(
            "终端时钟与主机相差太多，会导致交易日期错误、当日撤销失败和结算对不上。",
            "The terminal's clock is far from the host's, which puts wrong dates on \
             transactions, makes same-day voids fail and throws settlement off.",
        ),
        category: D,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: t("不影响您这笔付款。", "This does not affect your payment."),
        merchant_steps: &[
            t(
                "签到一次：签到回复会带上主机时间，多数终端会自动校准。",
                "Sign in once: the sign-in reply carries the host's time and most terminals set \
                 their clock from it.",
            ),
            t(
                "仍不准时在终端设置里手工调整日期时间；反复变回去说明时钟电池坏了，联系收单机构维修。",
                "If still wrong, set the date and time in the terminal's settings; if it keeps \
                 drifting back, its clock battery is failing — ask the acquirer for a repair.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::RepeatedFallback),
        title: t(
            "芯片卡反复降级为刷磁条",
            "Repeated chip-to-magstripe fallback",
        ),
        meaning: t(
            "芯片读不出来，终端改刷磁条。偶尔是卡片芯片坏了；同一终端反复出现多半是读卡器故障；故意弄坏芯片逼迫刷磁条也是伪卡常用手法。",
            "The chip could not be read and the terminal fell back to the stripe. Now and then \
             the card's chip is damaged; on one terminal again and again it is usually the \
             reader; forcing fallback by damaging the chip is also a counterfeit-card trick.",
        ),
        category: D,
        who_acts: Operator,
        retry: AfterAction(FixTerminal),
        contact_issuer: IfRepeated,
        contact_when: t(
            "同一张卡在别处也读不出芯片时：请持卡人向发卡行换卡。",
            "If the same card's chip fails elsewhere too: the cardholder asks the issuer for a \
             replacement.",
        ),
        customer_message: t(
            "这台刷卡机现在读不了芯片，多半不是您的卡的问题。请用其他方式付款，或稍后再试。",
            "This card machine cannot read chips right now; it is most likely not your card. \
             Please pay another way, or try again later.",
        ),
        merchant_steps: &[
            t(
                "清洁读卡槽，确认插卡方向正确、插到底。",
                "Clean the card slot and check the card goes in the right way and all the way.",
            ),
            t(
                "多张芯片卡都读不出：读卡器故障，联系收单机构维修或换机。",
                "If many chip cards fail: the reader is faulty — call the acquirer to repair or \
                 replace the terminal.",
            ),
            t(
                "只有某张卡读不出：请顾客换卡；芯片有明显划痕或被破坏时要提高警惕。",
                "If only one card fails: ask for another card; be wary if the chip looks \
                 scratched or tampered with.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::BatchUnbalanced),
        title: t("结算不平", "Settlement does not balance"),
        meaning: t(
            "终端的批次总额与主机记录不一致，批上送后仍不平。",
            "The terminal's batch totals differ from the host's records, even after the batch \
             upload.",
        ),
        category: D,
        who_acts: Acquirer,
        retry: AfterAction(UploadBatch),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: SETTLEMENT_ONLY_CUSTOMER,
        merchant_steps: &[
            t(
                "不要删除或清空终端里的交易记录。",
                "Do not delete or clear the terminal's transactions.",
            ),
            t(
                "打印终端交易明细，与商户后台的交易列表逐笔核对（重点看冲正、撤销和超时的交易）。",
                "Print the terminal's transaction list and compare it line by line with the \
                 merchant portal (look at reversals, voids and timed-out transactions).",
            ),
            t(
                "带上批次号和差异明细联系收单机构；入账以主机记录为准。",
                "Call the acquirer with the batch number and the differences; crediting follows \
                 the host's records.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::NotSignedIn),
        title: t("终端未签到", "Terminal not signed in"),
        meaning: t(
            "终端还没有签到（或签到已失效）就发起了交易，主机没有它的工作密钥。",
            "The terminal sent a transaction without signing in first (or its sign-in expired), \
             so the host has no working keys for it.",
        ),
        category: D,
        who_acts: Terminal,
        retry: AfterAction(SignIn),
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: TERMINAL_OUT_OF_STEP_CUSTOMER,
        merchant_steps: &[
            STEP_SIGN_IN,
            t(
                "每天开始营业时先签到；签到失败时联系收单机构。",
                "Sign in at the start of each business day; if sign-in fails, call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::MerchantNotApproved),
        title: t("商户未开通或已停用", "Merchant not approved"),
        meaning: t(
            "商户还没有通过审核，或已被暂停受理（资料过期、风险核查等）。",
            "The merchant has not been approved yet, or card acceptance is suspended (expired \
             documents, a risk review, ...).",
        ),
        category: D,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "本店的刷卡服务暂时有问题，与您的卡无关。请用其他方式付款。",
            "Our card service has a problem right now; it is not your card. Please pay another \
             way.",
        ),
        merchant_steps: &[
            t(
                "暂停刷卡收款，改用其他收款方式。",
                "Stop taking cards for now and collect another way.",
            ),
            t(
                "联系收单机构确认审核进度或暂停原因，按要求补交资料。",
                "Ask the acquirer about the approval or why acceptance is suspended, and supply \
                 what it asks for.",
            ),
        ],
    },
    // Declines by the acquirer's own risk controls (issue 7): the issuer never saw these.
    Diagnosis {
        subject: Subject::Failure(FailureKind::MerchantIdMismatch),
        title: t(
            "商户号与终端不符",
            "Merchant ID does not match the terminal",
        ),
        meaning: t(
            "终端上送的商户号不是它登记所属的商户。一台终端只能为登记的商户收款；常见原因是终端参数被改动或终端被挪到别的商户使用（跳码、移机）。",
            "The terminal sent a merchant ID other than the one it is registered to. A terminal \
             may only take payments for its registered merchant; usually its settings were \
             changed or it was moved to another business.",
        ),
        category: D,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT_TERMINAL,
        customer_message: t(
            "本店的刷卡终端设置有问题，与您的卡无关。请用其他方式付款。",
            "Our card terminal is not set up correctly; it is not your card. Please pay another \
             way.",
        ),
        merchant_steps: &[
            t(
                "停止用这台终端收款，不要自行修改终端参数。",
                "Stop taking payments on this terminal and do not change its settings yourself.",
            ),
            t(
                "联系收单机构核对终端登记的商户；终端只能在登记的商户和地点使用。",
                "Call the acquirer to check which merchant the terminal is registered to; a \
                 terminal may only be used by that merchant, at that place.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::CardNotAccepted),
        title: t("本商户不受理此类卡", "Card type not accepted here"),
        meaning: t(
            "按收单机构为本商户设定的受理范围，这类卡（境内借记卡、贷记卡或境外卡）在这里不能使用。卡本身没有问题。",
            "This merchant is set up to accept only some kinds of card (domestic debit, credit, \
             foreign); this card is not one of them. Nothing is wrong with the card.",
        ),
        category: C,
        who_acts: Cardholder,
        retry: AfterAction(OtherCard),
        contact_issuer: No,
        contact_when: t(
            "不需要：这是本商户的受理范围，发卡行无法改变。",
            "No: this is the merchant's acceptance setting; the issuer cannot change it.",
        ),
        customer_message: NOT_ACCEPTED_HERE_CUSTOMER,
        merchant_steps: &[
            STEP_OTHER_PAYMENT,
            t(
                "如需受理这类卡（例如境外卡），向收单机构申请开通。",
                "To accept this kind of card (foreign cards, say), ask the acquirer to enable it.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::MerchantLimit),
        title: t("超出商户限额", "Over the merchant's limit"),
        meaning: t(
            "金额超过收单机构为本商户设定的单笔或当日累计限额。",
            "The amount is over the per-transaction or daily limit the acquirer set for this \
             merchant.",
        ),
        category: C,
        who_acts: Merchant,
        retry: AfterAction(SmallerAmount),
        contact_issuer: No,
        contact_when: t(
            "不需要：这是商户的限额，不是持卡人的。",
            "No: this is the merchant's limit, not the cardholder's.",
        ),
        customer_message: t(
            "这笔金额超出了本店的收款限额。请您用其他方式支付。",
            "This amount is over our shop's card limit. Please pay another way.",
        ),
        merchant_steps: &[
            t(
                "不得把一笔交易拆成几笔来绕过限额，拆单会被风控识别并可能导致暂停受理。",
                "Do not split one sale into several to get round the limit: splitting is \
                 detected and can get card acceptance suspended.",
            ),
            t(
                "经营需要更高限额时，带上经营资料向收单机构申请调整。",
                "If the business needs a higher limit, ask the acquirer with documents of the \
                 business.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::CardVelocity),
        title: t("同一张卡交易过于频繁", "Card used too often"),
        meaning: t(
            "同一张卡在很短时间内尝试或被拒绝的次数过多，收单机构的风控暂时拒绝它在本商户继续交易。",
            "This card was tried, or declined, too many times in a short while; the acquirer's \
             risk controls refuse it here for now.",
        ),
        category: C,
        who_acts: Cardholder,
        retry: Later,
        contact_issuer: No,
        contact_when: t(
            "不需要：限制来自收单机构，不在发卡行。",
            "No: the limit is the acquirer's, not the issuer's.",
        ),
        customer_message: t(
            "这张卡短时间内交易次数太多，暂时不能再刷。请稍后再试，或用其他方式付款。",
            "This card has been used too many times in a short while. Please try again later, \
             or pay another way.",
        ),
        merchant_steps: &[STEP_CHECK_FIRST, STEP_NO_REPEAT, STEP_OTHER_PAYMENT],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::CardTesting),
        title: t("疑似测卡，已拦截", "Suspected card testing"),
        meaning: t(
            "这台终端短时间内出现多笔小额失败交易，像是有人在用盗取的卡号试卡。收单机构暂时拒绝这台终端上的小额交易。",
            "This terminal had many small declined attempts in a short while, the pattern of \
             someone testing stolen card numbers. The acquirer refuses small payments on it \
             for now.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: t(
            "不需要：由收单机构风控部门处理。",
            "No: the acquirer's risk team deals with it.",
        ),
        customer_message: TERMINAL_HELD_CUSTOMER,
        merchant_steps: &[
            STEP_NO_GOODS,
            t(
                "检查终端是否被他人使用过，收银员是否见过同一人反复刷不同的卡。",
                "Check whether anyone else used the terminal, and whether a cashier saw one \
                 person try card after card.",
            ),
            t(
                "联系收单机构风控部门说明情况；核查完成前小额交易会继续被拒绝。",
                "Call the acquirer's risk team; small payments stay refused until they have \
                 looked.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::RepeatedWrongPin),
        title: t("多张卡密码错误，已拦截", "Wrong PINs on several cards"),
        meaning: t(
            "这台终端短时间内有多张不同的卡输错密码，像是有人在用别人的卡猜密码。收单机构暂时拒绝这台终端的交易。",
            "Several different cards had wrong PINs on this terminal in a short while, the \
             pattern of someone guessing the PINs of other people's cards. The acquirer \
             refuses payments on it for now.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: t(
            "不需要：由收单机构风控部门处理。",
            "No: the acquirer's risk team deals with it.",
        ),
        customer_message: TERMINAL_HELD_CUSTOMER,
        merchant_steps: &[
            STEP_NO_GOODS,
            t(
                "如有人拿多张卡反复试密码，不要交付商品；在安全的前提下记下情况并报告。",
                "If someone tries PINs on several cards, do not hand over goods; note what \
                 happened and report it, if it is safe to.",
            ),
            t(
                "联系收单机构风控部门恢复受理。",
                "Call the acquirer's risk team to have acceptance restored.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::UnusualMerchantPattern),
        title: t("终端使用异常", "Terminal used unusually"),
        meaning: t(
            "终端从平时以外的网络地点接入，或交易金额与登记的商户类别明显不符，像是终端被挪用或套用其他商户类别（跳码、移机）。",
            "The terminal connects from somewhere other than usual, or its sales do not fit the \
             merchant's registered category: the pattern of a terminal moved or used for \
             another business.",
        ),
        category: D,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: No,
        contact_when: NO_CONTACT,
        customer_message: t(
            "本店的刷卡服务暂时有问题，与您的卡无关。请用其他方式付款。",
            "Our card service has a problem right now; it is not your card. Please pay another \
             way.",
        ),
        merchant_steps: &[
            t(
                "终端只能在登记的地址、为登记的经营范围收款；换了地址或网络请先告知收单机构。",
                "A terminal may only be used at its registered address for the registered \
                 business; tell the acquirer before moving it or changing its network.",
            ),
            t(
                "联系收单机构风控部门说明情况。",
                "Call the acquirer's risk team and explain.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::NotOriginalCard),
        title: t("不是原交易所用的卡", "Not the card of the original"),
        meaning: t(
            "撤销、退货或预授权完成必须使用原交易的同一张卡，这次刷的卡与原交易的卡号不同，收单系统没有送往发卡行（14）。",
            "A void, refund or pre-authorisation completion must use the same card as its \
             original; the card presented has another number, so shoudan did not send it to \
             the issuer (14).",
        ),
        category: C,
        who_acts: Merchant,
        retry: AfterAction(CorrectOriginal),
        contact_issuer: No,
        contact_when: NOT_SENT_CONTACT,
        customer_message: t(
            "这笔需要使用您原来付款（或预授权）时的那张卡。如果那张卡已换新或遗失，我们会通过其他方式为您办理。",
            "This needs the card you paid (or were pre-authorised) with. If that card was \
             replaced or lost, we will find another way.",
        ),
        merchant_steps: &[
            t(
                "请顾客出示付款时用的那张卡再做一次；换一张卡只会再次失败。",
                "Ask for the card the customer paid with and do it again; another card fails \
                 again.",
            ),
            t(
                "撤销或退货而原卡已换新或遗失（新卡卡号不同）：在商户后台提交退货申请，由收单机构处理。",
                "A void or refund whose card was replaced or lost (the new card has another \
                 number): apply for the refund in the merchant portal and the acquirer handles \
                 it.",
            ),
            t(
                "预授权完成：请用原卡完成；原卡不能用时，撤销原预授权，再用新卡消费。",
                "A pre-authorisation completion: complete it with the card it was made with; if \
                 that card cannot be used, void the pre-authorisation and take the sale on the \
                 new card.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::RefundOverOriginal),
        title: t("退货金额超过可退金额", "Refund over what is left to refund"),
        meaning: t(
            "这笔退货加上原交易已经退过的金额，超过了原交易的金额，收单系统没有送往发卡行（61）。",
            "This refund, with what was already refunded on the original sale, comes to more \
             than the original amount, so shoudan did not send it to the issuer (61).",
        ),
        category: C,
        who_acts: Merchant,
        retry: AfterAction(CorrectOriginal),
        contact_issuer: No,
        contact_when: NOT_SENT_CONTACT,
        customer_message: t(
            "退款金额超过了原来付款还可退的部分，我们核对后再为您办理。",
            "The refund is more than what is left of your payment to refund; we will check and \
             do it again.",
        ),
        merchant_steps: &[
            t(
                "在商户后台打开原交易，查看已退金额，按剩余可退金额重新退货。",
                "Open the original sale in the merchant portal, see what was already refunded, \
                 and refund at most what is left.",
            ),
            t(
                "一笔原交易只能累计退到原金额为止；不要拆到其他交易上退。",
                "A sale can only be refunded up to its own amount; do not refund the rest \
                 against another sale.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ReturnNoAnswer),
        title: t("撤销或退货没有完成", "Void or refund did not complete"),
        meaning: t(
            "发卡行没有及时回复这笔撤销或退货，按失败处理并已冲正：原消费仍然有效，顾客的钱还没有退回。",
            "The issuer did not answer this void or refund in time; it counts as failed and is \
             reversed: the original sale still stands and the customer has not been paid back.",
        ),
        category: E,
        who_acts: Network,
        retry: AfterAction(Reversal),
        contact_issuer: IfPersists,
        contact_when: TIMEOUTS_PERSIST_CONTACT,
        customer_message: t(
            "这笔撤销或退货没有完成，原来的交易仍然有效。系统确认后我们会为您重新办理。",
            "This void or refund did not go through and the original transaction still stands. \
             Once the system confirms, we will do it again for you.",
        ),
        merchant_steps: &[
            t(
                "等冲正得到确认（交易详情里显示）后再重新撤销或退货；先确认上一笔没有成功，避免重复退款。",
                "Wait until the reversal is acknowledged (the transaction's page shows it), then \
                 void or refund again; check first that the last one did not go through, so the \
                 customer is not refunded twice.",
            ),
            t(
                "当天未能撤销的消费，次日起只能做退货。",
                "From tomorrow, a sale not voided today can only be refunded.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ReturnDeclined),
        title: t(
            "发卡行拒绝了撤销或退货",
            "The issuer declined the void or refund",
        ),
        meaning: t(
            "发卡行拒绝了这笔撤销或退货（应答码说明原因，例如卡已注销、换卡或受限）：原消费仍然有效，顾客的钱还没有退回。",
            "The issuer declined this void or refund (the code says why: the card closed, \
             replaced or restricted, say): the original sale still stands and the customer has \
             not been paid back.",
        ),
        category: C,
        who_acts: Merchant,
        retry: Never,
        contact_issuer: Optional,
        contact_when: t(
            "可选：原因不明时，凭证据包向发卡行询问这张卡为何不能退款。",
            "Optional: if the reason is unclear, ask the issuer with the evidence package why \
             the card cannot take the refund.",
        ),
        customer_message: t(
            "退款没能退到这张卡上，原来的付款仍然有效。我们会通过其他方式为您办理退款。",
            "The refund could not go back to this card, and the original payment still stands. \
             We will refund you another way.",
        ),
        merchant_steps: &[
            t(
                "不要用同一张卡反复重试：发卡行的拒绝原样重试不会通过。",
                "Do not try again on the same card: the issuer's refusal will not change.",
            ),
            t(
                "在商户后台为原交易提交退货申请，说明卡已无法退款；收单机构确认后另行安排。",
                "Open a refund application for the original sale in the portal, saying the card \
                 cannot take the refund; the acquirer arranges another way once it has checked.",
            ),
            t(
                "如需当场退现金，先确认原交易仍然有效，并保留顾客签收。",
                "If you refund in cash on the spot, first check the original sale still stands, \
                 and keep the customer's signed receipt.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ReversalNotTaken),
        title: t(
            "冲正未被受理：原交易仍然有效",
            "Reversal not taken: the original stands",
        ),
        meaning: t(
            "终端的冲正指向的交易不能被冲正（不是当天的交易、金额不符，或已被撤销、退货），收单系统没有撤回任何交易：原交易如果成功，仍然有效，顾客已被扣款。",
            "The terminal's reversal named a transaction that cannot be reversed (from another \
             day, of another amount, or voided or refunded since), so nothing was undone: an \
             original that was approved stands, and the customer was charged.",
        ),
        category: C,
        who_acts: Merchant,
        retry: Never,
        contact_issuer: No,
        contact_when: t(
            "不需要：原交易在收单系统中的状态就是准确的。",
            "No: the original's state in the acquirer's records is what stands.",
        ),
        customer_message: t(
            "您原来的付款仍然有效。如果您因此又付了一次，我们会为您退还其中一笔。",
            "Your original payment stands. If you paid again because of this, we will refund one \
             of the two.",
        ),
        merchant_steps: &[
            t(
                "在交易详情里查看原交易：成功的仍然有效，不要把它当作已撤回。",
                "Look up the original on the transaction page: if it was approved it stands; do \
                 not treat it as undone.",
            ),
            t(
                "如果顾客因为终端没有显示结果而又付了一次，对其中一笔办理退货。",
                "If the customer paid again because the terminal showed no result, refund one of \
                 the two.",
            ),
            t(
                "当天以前的交易只能退货，不能冲正或撤销。",
                "A transaction from an earlier day can only be refunded, not reversed or voided.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::InquiryNoAnswer),
        title: t("余额查询没有应答", "Balance inquiry not answered"),
        meaning: t(
            "发卡行没有及时回复余额查询。查询不动用资金，不会扣款，也不需要冲正。",
            "The issuer did not answer the balance inquiry in time. An inquiry moves no money: \
             nothing was charged and nothing needs reversing.",
        ),
        category: B,
        who_acts: Network,
        retry: Later,
        contact_issuer: IfPersists,
        contact_when: TIMEOUTS_PERSIST_CONTACT,
        customer_message: t(
            "银行暂时没有回复查询，您的卡没有被扣款。请稍后再查。",
            "The bank did not answer the inquiry; nothing was taken from your card. Please try \
             again later.",
        ),
        merchant_steps: &[t(
            "稍后再查；同一家银行持续超时请告知收单机构。",
            "Try again later; if one bank keeps timing out, tell the acquirer.",
        )],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::IssuerLinkDown),
        title: t("与发卡行的线路中断", "Line to the issuer down"),
        meaning: t(
            "收单系统与这家发卡行的线路暂时中断，交易没有送出，没有扣款（91）。",
            "shoudan's line to this issuer was down, so the transaction was not sent and nothing \
             was charged (91).",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Later,
        contact_issuer: No,
        contact_when: t(
            "不需要：交易没有送到发卡行；由收单机构恢复线路。",
            "No: the transaction never reached the issuer; the acquirer restores the line.",
        ),
        customer_message: SYSTEM_BUSY_CUSTOMER,
        merchant_steps: &[
            STEP_OTHER_BANK_OR_LATER,
            t(
                "持续失败请联系收单机构。",
                "If it goes on, call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ReversalRefused),
        title: t("发卡行拒绝冲正", "The issuer refused the reversal"),
        meaning: t(
            "这笔交易在收单系统已冲正，商户不会入账；但发卡行拒绝了冲正报文，持卡人卡上的扣款可能没有退回。",
            "The transaction was reversed here and the merchant is not paid for it, but the \
             issuer refused the reversal message: the charge on the cardholder's card may not \
             have been returned.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: t(
            "持卡人卡上仍显示这笔扣款时：凭证据包请发卡行退回；收单机构也会就被拒的冲正与发卡行核对。",
            "If the card still shows the charge: ask the issuer to return it, with the evidence \
             package; the acquirer also takes the refused reversal up with the issuer.",
        ),
        customer_message: t(
            "这笔付款已取消，本店没有收到款项。如果您的卡上仍显示扣款，请凭我们提供的交易凭证联系发卡行退回。",
            "This payment was cancelled and we did not receive the money. If your card still \
             shows the charge, contact your bank with the receipt we give you to have it \
             returned.",
        ),
        merchant_steps: &[
            t(
                "不要因此再次向顾客收款：先请顾客确认卡上是否仍有这笔扣款。",
                "Do not charge the customer again for it yet: first ask whether their card \
                 still shows this charge.",
            ),
            t(
                "仍有扣款时，下载这笔交易的证据包交给顾客，或在商户后台开立发卡行查询工单。",
                "If it does, download this transaction's evidence package for the customer, or \
                 open an issuer inquiry case in the portal.",
            ),
            t(
                "扣款退回前，不要再次交付商品，也不要重复收款。",
                "Until the charge is returned, do not hand over the goods again or take a \
                 second payment.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Failure(FailureKind::ReturnReversalRefused),
        title: t(
            "发卡行拒绝了撤销或退货的冲正",
            "The issuer refused the reversal of a void or refund",
        ),
        meaning: t(
            "这笔撤销或退货在收单系统已冲正（原交易仍按有效处理），但发卡行拒绝了冲正：撤销或退货可能已在发卡行生效，顾客可能已收到退款。",
            "This void or refund was reversed here (the original counts as standing), but the \
             issuer refused the reversal: the void or refund may stand at the issuer, and the \
             customer may have been paid back.",
        ),
        category: C,
        who_acts: Acquirer,
        retry: Never,
        contact_issuer: Yes,
        contact_when: t(
            "再次撤销或退货之前：凭证据包向发卡行核实这笔撤销或退货是否已生效。",
            "Before voiding or refunding again: ask the issuer, with the evidence package, \
             whether this void or refund stands.",
        ),
        customer_message: t(
            "您的退款（或撤销、解冻）可能已经生效，我们正在与银行核实；核实之前不会重复办理。",
            "Your refund (or the cancellation, or the released hold) may already have reached \
             your card; we are checking with the bank, and will not do it twice meanwhile.",
        ),
        merchant_steps: &[
            t(
                "不要再次撤销或退货：先请顾客查看卡上是否已收到退款。",
                "Do not void or refund again: first ask the customer whether the refund has \
                 reached their card.",
            ),
            t(
                "已收到：告知收单机构，以便更正系统里的记录；没有收到：在商户后台开立发卡行查询工单。",
                "If it has, tell the acquirer so that the records here are corrected; if not, \
                 open an issuer inquiry case in the portal.",
            ),
        ],
    },
    // Payouts to the merchant's settlement account.
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::InvalidAccountNumber),
        title: t("结算账号无效", "Settlement account number invalid"),
        meaning: t(
            "收款银行找不到这个账号：账号填错或位数不对。",
            "The receiving bank cannot find this account number: it is wrong or has the wrong \
             length.",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(UpdateSettlementAccount),
        contact_issuer: No,
        contact_when: t(
            "一般不需要：先核对账号；账号确认无误仍失败时再问开户行。",
            "Usually not: check the number first; ask the account's bank only if a correct \
             number still fails.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "对照银行卡或开户资料核对结算账号，在商户后台重新提交账户。",
                "Check the settlement account number against the card or account papers and \
                 submit the account again in the merchant portal.",
            ),
            PAYOUT_STEP_RESUBMIT,
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::HolderNameMismatch),
        title: t("户名与账号不符", "Account holder name mismatch"),
        meaning: t(
            "登记的收款户名与银行记录的开户名不一致。",
            "The registered payee name differs from the name the bank holds for the account.",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(UpdateSettlementAccount),
        contact_issuer: Optional,
        contact_when: t(
            "可选：不确定开户名时向开户行查询准确户名（含全称、括号等）。",
            "Optional: if unsure, ask the account's bank for the exact registered name \
             (full name, brackets included).",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "按开户名原样更正户名：对公账户用营业执照上的全称，对私账户用法人或经营者本人姓名。",
                "Correct the name exactly as the bank has it: the full registered company name \
                 for a business account, the owner's own name for a personal one.",
            ),
            PAYOUT_STEP_RESUBMIT,
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::AccountFrozen),
        title: t("结算账户被冻结", "Settlement account frozen"),
        meaning: t(
            "收款账户被银行或有权机关冻结，不能入账。",
            "The receiving account has been frozen by the bank or an authority and cannot take \
             credits.",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(ResolveWithBank),
        contact_issuer: Yes,
        contact_when: t(
            "需要：商户本人联系开户行，问清冻结原因和解冻办法。",
            "Yes: the merchant contacts the account's bank to learn why it is frozen and how to \
             lift it.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "联系开户行了解冻结原因并处理；解冻后在商户后台重新提交这个账户（同一账户也要重新提交），收单机构确认后重新出款。",
                "Contact the account's bank about the freeze and resolve it; once it is lifted, \
                 submit the account again in the portal (the same account too), and the payout \
                 is made again when the acquirer confirms it.",
            ),
            t(
                "短期无法解冻时，在商户后台换绑另一个本人或本公司账户。",
                "If it cannot be lifted soon, bind another account in the merchant's (or \
                 owner's) own name in the portal.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::AccountClosedOrLost),
        title: t(
            "结算账户已销户或挂失",
            "Settlement account closed or card reported lost",
        ),
        meaning: t(
            "收款账户已销户、已换卡，或绑定的银行卡已挂失，不能入账。",
            "The receiving account is closed or replaced, or the bound card has been reported \
             lost, so it cannot take credits.",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(UpdateSettlementAccount),
        contact_issuer: Optional,
        contact_when: t(
            "可选：挂失补卡后账号可能改变，可向开户行确认新账号。",
            "Optional: a replacement card may have a new number; the bank can confirm it.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "在商户后台绑定新的结算账户（挂失补卡的，填新卡号）。",
                "Bind a new settlement account in the portal (after a lost-card replacement, the \
                 new card number).",
            ),
            t(
                "新账户经收单机构确认后重新出款。",
                "The payout is made again once the acquirer confirms the new account.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::OverAccountLimit),
        title: t("超过账户收款限额", "Over the account's limit"),
        meaning: t(
            "金额超过收款账户的单笔或当日入账限额（常见于二类、三类账户）。",
            "The amount is over what the account may receive per transaction or per day \
             (typical of class II and III accounts).",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(UpdateSettlementAccount),
        contact_issuer: Yes,
        contact_when: t(
            "需要：商户向开户行申请提高限额或升级为一类账户。",
            "Yes: the merchant asks the bank to raise the limit or upgrade to a class I \
             account.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "向开户行提高收款限额或升级为一类账户，或换绑一类账户/对公账户。",
                "Have the bank raise the limit or upgrade the account to class I, or bind a class \
                 I or business account instead.",
            ),
            t(
                "处理后在商户后台重新提交账户（同一账户也要重新提交），收单机构确认后重新出款。",
                "Then submit the account again in the portal (the same account too); the \
                 payout is made again when the acquirer confirms it.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::BankSystemError),
        title: t("收款银行系统故障", "Receiving bank system error"),
        meaning: t(
            "收款银行系统暂时出错，出款没有完成，资金没有丢失。",
            "The receiving bank's system had an error; the payout did not complete and no money \
             is lost.",
        ),
        category: E,
        who_acts: Acquirer,
        retry: Later,
        contact_issuer: No,
        contact_when: t(
            "不需要：收单机构会自动重试出款。",
            "No: the acquirer retries the payout by itself.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "无需操作，系统会稍后自动重新出款；超过一个工作日仍未到账时联系收单机构。",
                "Nothing to do; the payout is retried automatically. If it has not arrived after \
                 a working day, call the acquirer.",
            ),
        ],
    },
    Diagnosis {
        subject: Subject::Payout(PayoutFailure::ReturnedLater),
        title: t("出款被退回（退汇）", "Payout returned days later"),
        meaning: t(
            "出款当时显示成功，几天后被收款银行退回（账户状态、户名或限额问题）。退回的钱回到商户待结算余额。",
            "The payout first looked successful and the receiving bank returned it days later \
             (account status, name or limit). The money is back in the merchant's balance.",
        ),
        category: D,
        who_acts: Merchant,
        retry: AfterAction(UpdateSettlementAccount),
        contact_issuer: Yes,
        contact_when: t(
            "需要：退回原因不清楚时，商户向开户行查询为什么退回。",
            "Yes: if the reason is unclear, the merchant asks the account's bank why it was \
             returned.",
        ),
        customer_message: PAYOUT_NO_CUSTOMER,
        merchant_steps: &[
            PAYOUT_STEP_PORTAL,
            t(
                "向开户行查询退回原因（账户状态、户名或限额），处理后核对或更换结算账户。",
                "Ask the account's bank why it was returned (account status, name or limit), \
                 then check or replace the settlement account.",
            ),
            PAYOUT_STEP_RESUBMIT,
        ],
    },
];
