//! Rows and write records: the plain shapes the store persists. Nothing here knows SQL; the
//! spellings returned by `as_str` are the stable column values shared by every backend.

use std::fmt;

use crate::error::StoreError;

macro_rules! column_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling stored in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses a stored spelling; anything else is a corrupt row.
            pub fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Corrupt {
                        what: stringify!($name),
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// The store's text-column enums (the row modules of every area use it).
pub(crate) use column_enum;

column_enum!(
    /// What a journalled terminal request was.
    TxnKind {
        BalanceInquiry => "balance_inquiry",
        Purchase => "purchase",
        PurchaseVoid => "purchase_void",
        Refund => "refund",
        PreAuth => "pre_auth",
        PreAuthVoid => "pre_auth_void",
        Completion => "completion",
        CompletionVoid => "completion_void",
        Reversal => "reversal",
    }
);

column_enum!(
    /// Where a transaction is in its life. `InFlight` rows found at start-up are in doubt: the
    /// issuer may have approved them, so recovery queues a reversal for each.
    TxnState {
        InFlight => "in_flight",
        Approved => "approved",
        Declined => "declined",
        TimedOut => "timed_out",
        Failed => "failed",
        Voided => "voided",
        Reversed => "reversed",
        Completed => "completed",
    }
);

column_enum!(
    /// A merchant's or terminal's standing.
    Status {
        Active => "active",
        Suspended => "suspended",
        Closed => "closed",
    }
);

column_enum!(
    /// Store-and-forward reversal state.
    SafState {
        Pending => "pending",
        Acked => "acked",
        Refused => "refused",
    }
);

/// A merchant as registered with the acquirer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantRow {
    pub mid: String,
    pub name: String,
    pub status: Status,
    pub mcc: String,
}

/// What a terminal's frames last said about it: the header's application type and software
/// version, and its clock against the host's (written only when one of them changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalHealthRow {
    pub tid: String,
    /// Header n2: 60 magstripe, 61 IC.
    pub application_type: u32,
    /// Header n2 software version and n6 sub-version.
    pub software_version: u32,
    pub sub_version: u32,
    /// Terminal local time (fields 12/13) less host China time, in seconds; `None` until a
    /// request carried both fields.
    pub clock_drift_s: Option<i64>,
    pub seen_at_ms: i64,
    /// Requests read by magstripe from a chip card (60.5 = 2) since health was kept.
    pub fallbacks: u32,
}

/// A terminal: its keys are stored only wrapped (encrypted by the HSM), never in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct TerminalRow {
    pub tid: String,
    pub mid: String,
    /// The TMK as the HSM lets it leave: a wrapped key or a key handle, never clear.
    pub tmk_wrapped: Vec<u8>,
    /// Sign-in scheme of 60.3: "001", "003", "004" or "006".
    pub key_scheme: String,
    /// paycrypto's spelling: "cup-ecb", "x919" or "sm4".
    pub mac_algorithm: String,
    pub status: Status,
    pub batch_no: u32,
    pub last_sign_in_ms: Option<i64>,
    pub working_keys: Option<WrappedKeys>,
}

impl fmt::Debug for TerminalRow {
    // Wrapped keys are ciphertext, but they are still nobody's business in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalRow")
            .field("tid", &self.tid)
            .field("mid", &self.mid)
            .field("key_scheme", &self.key_scheme)
            .field("mac_algorithm", &self.mac_algorithm)
            .field("status", &self.status)
            .field("batch_no", &self.batch_no)
            .field("last_sign_in_ms", &self.last_sign_in_ms)
            .field("signed_in", &self.working_keys.is_some())
            .finish_non_exhaustive()
    }
}

/// Working keys of a signed-in terminal, each wrapped by the HSM.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKeys {
    pub pik: Vec<u8>,
    pub mak: Vec<u8>,
    pub tdk: Option<Vec<u8>>,
}

/// One journalled transaction. Inserted whole once, then changed only through the narrow
/// update records so that concurrent writers never overwrite each other's columns.
#[derive(Clone, PartialEq, Eq)]
pub struct TxnRow {
    pub id: i64,
    pub tid: String,
    pub mid: String,
    pub batch_no: u32,
    pub stan: u32,
    pub kind: TxnKind,
    pub mti: String,
    pub processing_code: String,
    pub condition_code: String,
    pub amount_fen: i64,
    pub currency: String,
    pub pan: Option<PanAtRest>,
    pub issuer: Option<String>,
    pub rrn: Option<String>,
    pub host_trace: Option<u32>,
    pub auth_code: Option<String>,
    pub response_code: Option<String>,
    pub state: TxnState,
    /// Digest of the request's content, to tell a retry from a different request reusing a key.
    pub request_hash: Vec<u8>,
    pub original_id: Option<i64>,
    pub refunded_fen: i64,
    /// Field 60 as sent, kept so a reversal can be rebuilt after a restart.
    pub field60: Option<String>,
    /// Host date (MMDD, field 13) the request went to the issuer with.
    pub host_date: Option<String>,
    /// Clearing day, `YYYYMMDD`.
    pub clearing_date: String,
    pub settlement_date: Option<String>,
    pub received_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub issuer_answered_at_ms: Option<i64>,
    pub answered_at_ms: Option<i64>,
}

impl fmt::Debug for TxnRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxnRow")
            .field("id", &self.id)
            .field("tid", &self.tid)
            .field("batch_no", &self.batch_no)
            .field("stan", &self.stan)
            .field("kind", &self.kind)
            .field("amount_fen", &self.amount_fen)
            .field("pan", &self.pan.as_ref().map(|p| p.masked.as_str()))
            .field("rrn", &self.rrn)
            .field("response_code", &self.response_code)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A PAN as it may be kept: sealed by the HSM, a keyed fingerprint for equality checks, and the
/// parts that are not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PanAtRest {
    pub sealed: Vec<u8>,
    pub fingerprint: Vec<u8>,
    /// `622202******0123`
    pub masked: String,
    pub last4: String,
    pub bin: String,
}

/// A merchant's transactions counted in the database: those of one terminal, kind, state and
/// response code received in one hour (counted from the start of the range asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnTally {
    pub tid: String,
    pub kind: TxnKind,
    pub state: TxnState,
    pub response_code: Option<String>,
    pub hour: i64,
    /// Whether these rows went to their issuer: a refusal of the host's own (a risk rule, the
    /// merchant's or terminal's set-up, an unrouteable card) never did.
    pub sent: bool,
    pub count: i64,
    pub amount_fen: i64,
}

/// A terminal batch's transactions over a span of clearing dates: the last such date and the
/// range of their STANs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    pub tid: String,
    pub batch_no: u32,
    pub last_clearing_date: String,
    pub stan_min: u32,
    pub stan_max: u32,
}

/// One line of a transaction's timeline ("approved by ICBC at 14:02:11").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub txn_id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

/// A reversal waiting to reach its issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafItem {
    pub txn_id: i64,
    pub issuer: String,
    /// Field 39 of the reversal: the switch's "98", "06" or "96", or the terminal's own for
    /// a reversal it sent.
    pub reason: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub state: SafState,
    pub last_error: Option<String>,
    /// When the issuer last gave it a final answer (acknowledged or refused).
    pub done_at_ms: Option<i64>,
}

impl SafItem {
    /// Refused with 25 (no such original): the issuer never had the request, so nothing of
    /// it stands there, as if the reversal had been acknowledged (docs/issuer-link.md). Any
    /// other refusal means what the issuer did stands.
    pub fn never_had_original(&self) -> bool {
        self.state == SafState::Refused && self.last_error.as_deref() == Some("25")
    }

    /// Refused other than with 25: what the issuer did stands, for someone to take up.
    pub fn refused_standing(&self) -> bool {
        self.state == SafState::Refused && !self.never_had_original()
    }

    /// Settled with nothing standing at the issuer: acknowledged, or refused with 25.
    pub fn undone(&self) -> bool {
        self.state == SafState::Acked || self.never_had_original()
    }
}

/// The issuer's side of an exchange, recorded together with the answer to the terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub id: i64,
    pub state: TxnState,
    pub response_code: String,
    pub auth_code: Option<String>,
    pub settlement_date: Option<String>,
    pub issuer_answered_at_ms: Option<i64>,
    pub answered_at_ms: i64,
}

/// One write. A submission of several records commits atomically, and all submissions in a
/// group share one commit.
#[derive(Clone, Debug)]
pub enum Record {
    UpsertMerchant(MerchantRow),
    UpsertTerminal(Box<TerminalRow>),
    /// A terminal that must be new: a TID already held fails the submission (a constraint
    /// error), so two provisionings of one TID at once cannot both write it, the second
    /// replacing the first's key and batch.
    InsertTerminal(Box<TerminalRow>),
    /// A successful sign-in: new wrapped working keys and the batch in force.
    SignIn {
        tid: String,
        at_ms: i64,
        batch_no: u32,
        keys: WrappedKeys,
    },
    /// A terminal's software version or clock drift changed (see [`TerminalHealthRow`]).
    TerminalHealth(TerminalHealthRow),
    /// Sign-off forgets the working keys.
    SignOff {
        tid: String,
    },
    /// A new batch number for a terminal (after settlement).
    Batch {
        tid: String,
        batch_no: u32,
    },
    InsertTxn(Box<TxnRow>),
    /// Several nodes on one journal: the terminal request key (TID, batch, STAN, reversal or
    /// not) is free in the batch open under that number (rows cleared on `since` or later,
    /// received after the number's last settlement closed an earlier batch), else the job
    /// fails with [`crate::StoreError::KeyTaken`]. Written before the request's own row in
    /// the same job; it takes the lock of the terminal ID's `key_locks` row first (made if
    /// missing), so that two nodes claiming one key at once are judged one after the other.
    /// `alone`: the job also fails, with [`crate::StoreError::KeyCrossed`], if a row of the
    /// other kind is under the key: a request must find no reversal of itself there (the
    /// terminal reversed it before it arrived), and a reversal that found no original must
    /// still find none (the original arrived at another node meanwhile).
    ClaimKey {
        tid: String,
        batch_no: u32,
        stan: u32,
        reversal: bool,
        alone: bool,
        since: String,
    },
    Outcome(Outcome),
    /// A later state change (voided, reversed, completed).
    State {
        id: i64,
        state: TxnState,
    },
    /// `State`, written only if the journal still holds the row in state `from`; else the
    /// submission fails (`Constraint`). How a node changes a row it read in a state another
    /// node may move it out of meanwhile (a void in flight there, approved and taking its
    /// original while this node reverses it).
    StateFrom {
        id: i64,
        from: TxnState,
        state: TxnState,
    },
    /// A reversed void or completion gives its original back: approved again if the journal
    /// holds it voided or completed, whatever the writer's memory said (another node, or a
    /// commit whose answer was lost, may have voided it there), and no other void or
    /// completion of it stands approved (the same reversal acknowledged twice, after the
    /// original was voided again); nothing otherwise.
    GiveBack {
        id: i64,
    },
    /// What an approved void or completion (`by`) does to its original: `state` (voided,
    /// completed), written only if the journal holds `by` approved. A terminal's reversal of
    /// it taken by another node while the issuer decided has left it reversed, and its
    /// original approved.
    TakeOriginal {
        id: i64,
        by: i64,
        state: TxnState,
    },
    /// A reversed completion void's pre-authorisation (`id`) completed again by its completion
    /// (`by`): only while the journal holds the pre-authorisation approved and the completion
    /// approved again; a pre-authorisation completed again or voided since keeps that.
    CompleteAgain {
        id: i64,
        by: i64,
    },
    /// The balance (field 54, as sent) a balance inquiry was answered with.
    BalanceAnswer {
        id: i64,
        field54: String,
    },
    /// Sets an original's refunded total to the sum of its approved refunds, as the journal
    /// has them: written after a refund's outcome or its reversal. Recomputed rather than
    /// carried, so a replay is harmless and two nodes refunding one original both count.
    Refunded {
        id: i64,
    },
    Event(EventRow),
    SafEnqueue {
        txn_id: i64,
        issuer: String,
        reason: String,
        next_attempt_ms: i64,
    },
    SafRetry {
        txn_id: i64,
        next_attempt_ms: i64,
        last_error: String,
    },
    /// The issuer acknowledged (`Acked`) or refused (`Refused`) the reversal: stop resending.
    SafDone {
        txn_id: i64,
        state: SafState,
        at_ms: i64,
        /// The issuer's answer (field 39), kept as the row's `last_error`: a refusal other
        /// than 25 (it never had the request) leaves what the issuer did standing.
        answer: Option<String>,
    },
    /// Cases, outbox, webhooks, back-office keys, duplicate flags (store/src/resolve.rs).
    Resolve(crate::resolve::ResolveRecord),
    /// Merchant onboarding and risk alerts (issue 7).
    Risk(crate::risk::RiskRecord),
    /// Web users, sessions, API tokens and the audit log (issue 6).
    Web(crate::web::WebRecord),
    /// Batches, clearing, ledger, bound accounts and payouts (issue 5).
    Settlement(crate::settlement::SettlementRecord),
}

impl fmt::Debug for WrappedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrappedKeys(..)")
    }
}

impl fmt::Debug for PanAtRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}
