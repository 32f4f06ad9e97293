//! A POS terminal client over TCP, as a real terminal behaves: signs in (0800, field 62 under
//! the TMK with its KCVs checked), keeps STAN and batch, MACs every financial request with its
//! MAK, sends PIN blocks under its PIK, verifies the response MAC and reverses what it could not
//! complete. Used by the CLI, the demo's background traffic and load generation.

use std::net::SocketAddr;
use std::time::Duration;

use domain::Pan;
use iso8583::{Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};
use paycrypto::{Key, KeyScheme, MacAlgorithm, PanDigits, WorkingKeys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Largest response frame accepted (after the length prefix).
pub const FRAME_LEN_MAX: usize = iso8583::FRAME_LEN_MAX;
/// STANs run 000001..=999999 and then wrap.
pub const STAN_MAX: u32 = 999_999;
/// How long a terminal waits for an answer by default (a real terminal waits about 60 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a terminal operation failed. Host answers other than `00` are not errors: they come back
/// as a [`Response`] with their code.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the host")]
    Closed,
    #[error("response frame of {0} bytes is over the limit")]
    FrameTooLong(usize),
    #[error("cannot encode request: {0}")]
    Encode(#[from] iso8583::EncodeError),
    #[error("cannot decode response: {0}")]
    Decode(#[from] iso8583::DecodeError),
    #[error("response {got} does not answer request {sent} (STAN {stan:06})")]
    Unmatched { sent: Mti, got: Mti, stan: u32 },
    #[error("response carries no response code (field 39)")]
    NoResponseCode,
    #[error("sign-in refused with response code {0}")]
    SignInRefused(String),
    #[error("sign-in response has no working keys (field 62)")]
    NoWorkingKeys,
    #[error("working keys: {0}")]
    Keys(#[from] paycrypto::Field62Error),
    #[error("not signed in")]
    NotSignedIn,
    #[error("MAC: {0}")]
    Mac(#[from] paycrypto::MacError),
    #[error("response MAC does not verify")]
    ResponseMac,
    #[error("PIN block: {0}")]
    Pin(#[from] paycrypto::PinError),
    #[error("{0} needs the original transaction (RRN, and batch/trace or date)")]
    NoOriginal(TxnType),
}

/// The financial transactions a terminal can start (PROTOCOL.md, Transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnType {
    BalanceInquiry,
    Purchase,
    PurchaseVoid,
    Refund,
    PreAuth,
    PreAuthVoid,
    Completion,
    CompletionVoid,
}

impl TxnType {
    pub const ALL: [TxnType; 8] = [
        Self::BalanceInquiry,
        Self::Purchase,
        Self::PurchaseVoid,
        Self::Refund,
        Self::PreAuth,
        Self::PreAuthVoid,
        Self::Completion,
        Self::CompletionVoid,
    ];

    /// (MTI, field 3, field 25, 60.1).
    pub const fn wire(self) -> (Mti, &'static str, &'static str, &'static str) {
        match self {
            Self::BalanceInquiry => (Mti::FINANCIAL, "310000", "00", "01"),
            Self::Purchase => (Mti::FINANCIAL, "000000", "00", "22"),
            Self::PurchaseVoid => (Mti::FINANCIAL, "200000", "00", "23"),
            Self::Refund => (Mti::ADVICE, "200000", "00", "25"),
            Self::PreAuth => (Mti::AUTHORISATION, "030000", "06", "10"),
            Self::PreAuthVoid => (Mti::AUTHORISATION, "200000", "06", "11"),
            Self::Completion => (Mti::FINANCIAL, "000000", "06", "20"),
            Self::CompletionVoid => (Mti::FINANCIAL, "200000", "06", "21"),
        }
    }

    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BalanceInquiry => "balance",
            Self::Purchase => "purchase",
            Self::PurchaseVoid => "void",
            Self::Refund => "refund",
            Self::PreAuth => "preauth",
            Self::PreAuthVoid => "preauth-void",
            Self::Completion => "completion",
            Self::CompletionVoid => "completion-void",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Whether the request names an original (field 37 and 61).
    pub const fn is_linked(self) -> bool {
        matches!(
            self,
            Self::PurchaseVoid
                | Self::Refund
                | Self::PreAuthVoid
                | Self::Completion
                | Self::CompletionVoid
        )
    }
}

impl std::fmt::Display for TxnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a terminal is provisioned: what the host knows it by and the keys it holds.
#[derive(Clone)]
pub struct TerminalConfig {
    pub addr: SocketAddr,
    pub tid: String,
    pub mid: String,
    /// The terminal master key, in clear (it lives in the terminal's secure element).
    pub tmk: Key,
    pub scheme: KeyScheme,
    pub mac: MacAlgorithm,
    pub batch: u32,
    /// The first STAN to use (1 for a fresh terminal; the saved counter otherwise).
    pub next_stan: u32,
    pub timeout: Duration,
}

impl std::fmt::Debug for TerminalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalConfig")
            .field("addr", &self.addr)
            .field("tid", &self.tid)
            .field("mid", &self.mid)
            .field("scheme", &self.scheme)
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

/// The card presented: number, expiry (YYMM) and the PIN the cardholder keys in.
#[derive(Clone)]
pub struct Card {
    pub pan: Pan,
    pub expiry: Option<String>,
    pub pin: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("pan", &self.pan)
            .field("pin_entered", &self.pin.is_some())
            .finish_non_exhaustive()
    }
}

/// The original a linked transaction names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Original {
    pub rrn: String,
    pub batch: u32,
    /// 0 when unknown: the host then finds the original by RRN.
    pub stan: u32,
    /// MMDD, for refunds.
    pub date: Option<String>,
    pub auth_code: Option<String>,
}

impl Original {
    /// The original of a response to `saved`.
    pub fn of(saved: &SavedRequest, response: &Response) -> Option<Original> {
        Some(Original {
            rrn: response.rrn.clone()?,
            batch: saved.batch,
            stan: saved.stan,
            date: response.host_date.clone(),
            auth_code: response.auth_code.clone(),
        })
    }
}

/// What a financial request carries.
#[derive(Clone, Debug)]
pub struct Request {
    pub txn: TxnType,
    pub card: Card,
    /// In fen; 0 for a balance inquiry.
    pub amount: u64,
    pub original: Option<Original>,
}

/// A request as sent, kept so it can be reversed (it holds no PIN or track data). Its `Debug`
/// leaves out the card's expiry (`Pan`'s own shows it masked).
#[derive(Clone)]
pub struct SavedRequest {
    pub txn: TxnType,
    pub pan: Pan,
    pub expiry: Option<String>,
    pub amount: u64,
    pub stan: u32,
    pub batch: u32,
    pub field61: Option<String>,
    /// Field 22 as sent: `011` with a PIN, `012` without.
    pub entry_mode: &'static str,
    /// Field 38 as sent (a void's original authorisation code).
    pub auth_code: Option<String>,
}

impl std::fmt::Debug for SavedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedRequest")
            .field("txn", &self.txn)
            .field("pan", &self.pan)
            .field("expiry", &self.expiry.as_ref().map(|_| ".."))
            .field("amount", &self.amount)
            .field("stan", &self.stan)
            .field("batch", &self.batch)
            .field("field61", &self.field61)
            .field("entry_mode", &self.entry_mode)
            .field("auth_code", &self.auth_code)
            .finish()
    }
}

/// A host response, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub mti: Mti,
    pub stan: Option<u32>,
    /// Field 39.
    pub code: String,
    pub rrn: Option<String>,
    pub auth_code: Option<String>,
    /// Available balance in fen (field 54), signed.
    pub balance: Option<i64>,
    /// Field 13 (MMDD): the host's date, which refunds quote.
    pub host_date: Option<String>,
    pub settlement_date: Option<String>,
    /// Whether the response carried a MAC (it verified, or the call would have failed).
    pub mac_verified: bool,
}

impl Response {
    pub fn approved(&self) -> bool {
        self.code == "00"
    }

    fn parse(frame: &Frame<'_>) -> Result<Response, TerminalError> {
        let m = &frame.message;
        let text = |n: u8| m.text(n).map(|t| t.trim().to_owned());
        Ok(Response {
            mti: m.mti(),
            stan: m.stan(),
            code: text(39).ok_or(TerminalError::NoResponseCode)?,
            rrn: text(37),
            auth_code: text(38),
            balance: m.text(54).and_then(parse_balance),
            host_date: m.digits(13).map(|d| d.to_string()),
            settlement_date: m.digits(15).map(|d| d.to_string()),
            mac_verified: false,
        })
    }
}

/// Field 54: account type n2, amount type n2, currency n3, sign C/D, amount n12. The first
/// available-balance (amount type 02) entry wins, else the first entry.
pub fn parse_balance(field: &str) -> Option<i64> {
    let bytes = field.as_bytes();
    let mut first = None;
    for entry in bytes.chunks(20) {
        if entry.len() != 20 {
            break;
        }
        let sign = match entry.get(7) {
            Some(b'C') => 1,
            Some(b'D') => -1,
            _ => return None,
        };
        let amount: i64 = std::str::from_utf8(entry.get(8..20)?).ok()?.parse().ok()?;
        let value = sign * amount;
        if entry.get(2..4) == Some(b"02") {
            return Some(value);
        }
        first.get_or_insert(value);
    }
    first
}

fn head() -> Result<FrameHead, TerminalError> {
    Ok(FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0])?,
    })
}

/// One terminal's connection and session.
pub struct Terminal {
    config: TerminalConfig,
    stream: TcpStream,
    keys: Option<WorkingKeys>,
    batch: u32,
    next_stan: u32,
    last: Option<SavedRequest>,
    buf: Vec<u8>,
    /// A send or receive failed (timed out, cut off): the stream may hold half a frame, or a
    /// late answer to a request given up on. The next request goes out on a new connection.
    broken: bool,
}

impl Terminal {
    /// Connects (no sign-in yet).
    pub async fn connect(config: TerminalConfig) -> Result<Terminal, TerminalError> {
        let stream = open(&config).await?;
        Ok(Terminal {
            batch: config.batch,
            next_stan: config.next_stan.clamp(1, STAN_MAX),
            config,
            stream,
            keys: None,
            last: None,
            buf: Vec::new(),
            broken: false,
        })
    }

    pub fn tid(&self) -> &str {
        &self.config.tid
    }

    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// The STAN the next request will carry (persist it to resume without duplicates).
    pub fn next_stan(&self) -> u32 {
        self.next_stan
    }

    pub fn is_signed_in(&self) -> bool {
        self.keys.is_some()
    }

    /// The last financial request sent (what `reverse_last` reverses).
    pub fn last_request(&self) -> Option<&SavedRequest> {
        self.last.as_ref()
    }

    fn take_stan(&mut self) -> u32 {
        let stan = self.next_stan;
        self.next_stan = if stan >= STAN_MAX { 1 } else { stan + 1 };
        stan
    }

    /// Signs in with the configured key scheme; on `00` decodes field 62 under the TMK and
    /// checks every KCV. A refusal is an error: a terminal cannot trade without keys.
    pub async fn sign_in(&mut self) -> Result<Response, TerminalError> {
        let stan = self.take_stan();
        let mut out = MessageBuilder::new(Mti::NETWORK);
        out.set_stan(stan)?;
        out.set_text(41, &self.config.tid)?
            .set_text(42, &self.config.mid)?;
        out.set_digits(
            60,
            &format!("00{:06}{}", self.batch, self.config.scheme.code()),
        )?;
        out.set_text(63, "001")?;
        let mut bytes = Vec::new();
        out.encode_frame(&head()?, &mut bytes)?;
        self.send(&bytes).await?;
        // Once the host has the sign-in, the keys held before it may be done with: the host
        // drops them as it issues new ones, and a request MACed with them would only be
        // refused A0. Only a refusal that changed nothing (any but 96, which may have been
        // recorded late) gives them back.
        let before = self.keys.take();
        let body = self.receive().await?;
        let frame = Frame::decode_unprefixed(&body)?;
        check_match(Mti::NETWORK, stan, &frame)?;
        let response = Response::parse(&frame)?;
        if !response.approved() {
            if response.code != "96" {
                self.keys = before;
            }
            return Err(TerminalError::SignInRefused(response.code));
        }
        let f62 = frame
            .message
            .bytes(62)
            .ok_or(TerminalError::NoWorkingKeys)?;
        self.keys = Some(paycrypto::decode_field62(
            &self.config.tmk,
            self.config.scheme,
            f62,
        )?);
        // The host may move the terminal to its own batch number (60.2).
        if let Some(batch) = frame
            .message
            .digits(60)
            .and_then(|d| d.to_string().get(2..8).and_then(|b| b.parse().ok()))
        {
            self.batch = batch;
        }
        Ok(response)
    }

    /// Echo test (0820/301).
    pub async fn echo(&mut self) -> Result<Response, TerminalError> {
        let stan = self.take_stan();
        let mut out = MessageBuilder::new(Mti::NETWORK_ADVICE);
        out.set_stan(stan)?;
        out.set_text(41, &self.config.tid)?
            .set_text(42, &self.config.mid)?;
        out.set_digits(60, &format!("00{:06}301", self.batch))?;
        let mut bytes = Vec::new();
        out.encode_frame(&head()?, &mut bytes)?;
        self.send(&bytes).await?;
        let body = self.receive().await?;
        let frame = Frame::decode_unprefixed(&body)?;
        check_match(Mti::NETWORK_ADVICE, stan, &frame)?;
        Response::parse(&frame)
    }

    /// Sends a financial request and waits for its answer. The request is remembered as the
    /// last one (for [`Terminal::reverse_last`]) before it goes out, so a timeout can be
    /// reversed.
    pub async fn transact(&mut self, request: &Request) -> Result<Response, TerminalError> {
        let keys = self.keys.clone().ok_or(TerminalError::NotSignedIn)?;
        let (mti, processing, condition, message_type) = request.txn.wire();
        let original = match (&request.original, request.txn.is_linked()) {
            (Some(o), true) => Some(o),
            (None, true) => return Err(TerminalError::NoOriginal(request.txn)),
            (_, false) => None,
        };
        let stan = self.take_stan();
        let pan = request.card.pan.expose_digits();
        let mut out = MessageBuilder::with_dialect(dialect(self.config.scheme), mti);
        out.set_digits(2, pan)?;
        out.set_digits(3, processing)?;
        out.set_amount(request.amount)?;
        out.set_stan(stan)?;
        if let Some(expiry) = &request.card.expiry {
            out.set_digits(14, expiry)?;
        }
        let pin_block = match &request.card.pin {
            Some(pin) => Some(paycrypto::pin::encrypt(
                &keys.pik,
                pin,
                &PanDigits::from_pan(pan)?,
            )?),
            None => None,
        };
        let entry_mode = if pin_block.is_some() { "011" } else { "012" };
        out.set_digits(22, entry_mode)?;
        out.set_digits(25, condition)?;
        if pin_block.is_some() {
            out.set_digits(26, "12")?;
        }
        let field61 = original.map(|o| {
            format!(
                "{:06}{:06}{}",
                o.batch,
                o.stan,
                o.date.as_deref().unwrap_or("")
            )
        });
        if let Some(o) = original {
            // A completion by authorisation code names no RRN.
            if !o.rrn.is_empty() {
                out.set_text(37, &o.rrn)?;
            }
            if let Some(auth) = &o.auth_code {
                out.set_text(38, auth)?;
            }
        }
        out.set_text(41, &self.config.tid)?
            .set_text(42, &self.config.mid)?;
        out.set_text(49, "156")?;
        if let Some(block) = &pin_block {
            out.set_binary(52, block.as_bytes())?;
            out.set_digits(53, security_control(self.config.scheme))?;
        }
        out.set_digits(60, &format!("{message_type}{:06}", self.batch))?;
        if let Some(f61) = &field61 {
            out.set_digits(61, f61)?;
        }
        self.last = Some(SavedRequest {
            txn: request.txn,
            pan: request.card.pan.clone(),
            expiry: request.card.expiry.clone(),
            amount: request.amount,
            stan,
            batch: self.batch,
            field61,
            entry_mode,
            auth_code: original.and_then(|o| o.auth_code.clone()),
        });
        self.exchange_maced(&out, mti, stan, &keys).await
    }

    /// Reverses the last financial request (reason 98: no answer, 96/06: could not complete).
    pub async fn reverse_last(&mut self, reason: &str) -> Result<Response, TerminalError> {
        let saved = self
            .last
            .clone()
            .ok_or(TerminalError::NoOriginal(TxnType::Purchase))?;
        self.reverse(&saved, reason).await
    }

    /// Sends a reversal (0400) of a saved request: its fields without PIN, tracks or RRN.
    pub async fn reverse(
        &mut self,
        saved: &SavedRequest,
        reason: &str,
    ) -> Result<Response, TerminalError> {
        let keys = self.keys.clone().ok_or(TerminalError::NotSignedIn)?;
        let (_, processing, condition, message_type) = saved.txn.wire();
        let mut out = MessageBuilder::new(Mti::REVERSAL);
        out.set_digits(2, saved.pan.expose_digits())?;
        out.set_digits(3, processing)?;
        out.set_amount(saved.amount)?;
        out.set_stan(saved.stan)?;
        if let Some(expiry) = &saved.expiry {
            out.set_digits(14, expiry)?;
        }
        // As the original, less its PIN, tracks and RRN (PROTOCOL.md): its entry mode, and a
        // void's authorisation code.
        out.set_digits(22, saved.entry_mode)?;
        out.set_digits(25, condition)?;
        if let Some(auth) = &saved.auth_code {
            out.set_text(38, auth)?;
        }
        out.set_text(39, reason)?;
        out.set_text(41, &self.config.tid)?
            .set_text(42, &self.config.mid)?;
        out.set_text(49, "156")?;
        out.set_digits(60, &format!("{message_type}{:06}", saved.batch))?;
        if let Some(f61) = &saved.field61 {
            out.set_digits(61, f61)?;
        }
        self.exchange_maced(&out, Mti::REVERSAL, saved.stan, &keys)
            .await
    }

    async fn exchange_maced(
        &mut self,
        out: &MessageBuilder,
        mti: Mti,
        stan: u32,
        keys: &WorkingKeys,
    ) -> Result<Response, TerminalError> {
        let algorithm = self.config.mac;
        let mut bytes = Vec::new();
        out.encode_frame_with_mac(&head()?, &mut bytes, |data| {
            paycrypto::mac::compute(algorithm, &keys.mak, data).map_err(TerminalError::from)
        })?;
        self.send(&bytes).await?;
        let body = self.receive().await?;
        let frame = Frame::decode_unprefixed(&body)?;
        check_match(mti, stan, &frame)?;
        let mut response = Response::parse(&frame)?;
        if let Some(mac) = frame.message.mac() {
            paycrypto::mac::verify(algorithm, &keys.mak, frame.message.mac_input(), mac)
                .map_err(|_| TerminalError::ResponseMac)?;
            response.mac_verified = true;
        }
        // An approval must prove it came from the host: one without a MAC may have had its
        // 39 rewritten on the way. A refusal without one (the host could not MAC it: A0, a
        // terminal it does not know) moves no money and stands.
        if response.approved() && !response.mac_verified {
            return Err(TerminalError::ResponseMac);
        }
        // A0: the host could not check our MAC; our keys are stale and must be renewed.
        if response.code == "A0" || response.code == "77" {
            self.keys = None;
        }
        Ok(response)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), TerminalError> {
        if self.broken {
            self.stream = open(&self.config).await?;
            self.broken = false;
        }
        let timeout = self.config.timeout;
        let written = tokio::time::timeout(timeout, self.stream.write_all(bytes)).await;
        let written =
            written.unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        if let Err(error) = written {
            self.broken = true;
            return Err(if error.kind() == std::io::ErrorKind::TimedOut {
                TerminalError::Timeout(timeout)
            } else {
                error.into()
            });
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Vec<u8>, TerminalError> {
        let timeout = self.config.timeout;
        let stream = &mut self.stream;
        let buf = &mut self.buf;
        let received = tokio::time::timeout(timeout, async move {
            let mut prefix = [0u8; 2];
            match stream.read_exact(&mut prefix).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(TerminalError::Closed);
                }
                Err(e) => return Err(e.into()),
            }
            let len = usize::from(u16::from_be_bytes(prefix));
            if len > FRAME_LEN_MAX {
                return Err(TerminalError::FrameTooLong(len));
            }
            buf.clear();
            buf.resize(len, 0);
            stream.read_exact(buf).await?;
            Ok(buf.clone())
        })
        .await;
        let received = received.unwrap_or(Err(TerminalError::Timeout(timeout)));
        // Timed out, cut off or reset: what is left of the stream cannot be trusted.
        self.broken |= received.is_err();
        received
    }
}

/// Field 53: format 2 (ANSI X9.8 with PAN), key length (0 single, 6 double; SM4 keys are
/// double-length too), track data not encrypted.
/// The dialect whose field 52 fits a block of this scheme's PIK: 16 bytes under SM4, 8 under
/// DES. The tables differ in nothing else.
fn dialect(scheme: KeyScheme) -> &'static iso8583::Dialect {
    match scheme {
        KeyScheme::Sm4 => &iso8583::CUP_POS_SM4,
        KeyScheme::Single | KeyScheme::Double | KeyScheme::DoubleWithTdk => &iso8583::CUP_POS,
    }
}

fn security_control(scheme: KeyScheme) -> &'static str {
    match scheme {
        KeyScheme::Single => "2000000000000000",
        KeyScheme::Double | KeyScheme::DoubleWithTdk | KeyScheme::Sm4 => "2600000000000000",
    }
}

/// A connection to the host, within the configured timeout.
async fn open(config: &TerminalConfig) -> Result<TcpStream, TerminalError> {
    let addr = config.addr;
    let stream = tokio::time::timeout(config.timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| TerminalError::Timeout(config.timeout))?
        .map_err(|error| TerminalError::Connect { addr, error })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn check_match(sent: Mti, stan: u32, frame: &Frame<'_>) -> Result<(), TerminalError> {
    let got = frame.message.mti();
    if sent.response().ok() != Some(got) || frame.message.stan() != Some(stan) {
        return Err(TerminalError::Unmatched { sent, got, stan });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_field_parses_sign_and_amount_type() {
        assert_eq!(parse_balance("0002156C000000123456"), Some(123_456));
        assert_eq!(parse_balance("0002156D000000000005"), Some(-5));
        assert_eq!(
            parse_balance("0001156C0000000000010002156C000000000002"),
            Some(2)
        );
        assert_eq!(parse_balance("0002156X000000000005"), None);
        assert_eq!(parse_balance("short"), None);
    }

    #[test]
    fn txn_names_round_trip_and_links() {
        for t in TxnType::ALL {
            assert_eq!(TxnType::parse(t.as_str()), Some(t));
        }
        assert!(TxnType::Refund.is_linked() && !TxnType::Purchase.is_linked());
        assert_eq!(TxnType::Refund.wire().0, Mti::ADVICE);
    }
}
