//! `shoudan iso`: decode a CUP POS message to JSON and encode JSON back to a message.
//! Decode never shows a full PAN, track data or a PIN block; encode is its inverse otherwise.

use std::io::Read;

use iso8583::{
    CUP_POS, DecodeError, Field48, Format, Frame, FrameHead, Header, KeySlot, Message,
    MessageBuilder, Mti, Tpdu, TxnKind,
};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::CliResult;

#[derive(clap::Subcommand)]
pub enum IsoCmd {
    /// Decode a message given as hex (whitespace allowed) and print it as JSON.
    Decode(DecodeArgs),
    /// Encode a message from JSON (the shape `decode` prints, full values) and print its hex.
    Encode(EncodeArgs),
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The message as hex, or `-` to read it from standard input.
    pub hex: String,
    /// The input starts at the MTI (no length, TPDU or header).
    #[arg(long, conflicts_with_all = ["no_length", "body"])]
    pub no_frame: bool,
    /// The input starts at the TPDU (the 2-byte length is not included).
    #[arg(long, conflicts_with = "body")]
    pub no_length: bool,
    /// The input starts at the bitmap; give the MTI with `--mti`.
    #[arg(long, requires = "mti")]
    pub body: bool,
    /// MTI of a `--body` input, e.g. 0200.
    #[arg(long, requires = "body")]
    pub mti: Option<String>,
    /// The input is a MAC input block: bit 64 may be set with the MAC absent.
    #[arg(long)]
    pub mac_input: bool,
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    /// JSON file to read; standard input if absent or `-`.
    pub file: Option<String>,
}

pub fn run(cmd: IsoCmd) -> CliResult {
    match cmd {
        IsoCmd::Decode(args) => decode(args),
        IsoCmd::Encode(args) => encode(args),
    }
}

fn read_input(arg: &str) -> Result<String, Box<dyn std::error::Error>> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("stdin: {e}"))?;
        Ok(text)
    } else {
        Ok(arg.to_owned())
    }
}

fn unhex(text: &str, what: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if let Some(pos) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
        let ch = digits.get(pos).map_or('?', |b| char::from(*b));
        return Err(format!("{what}: {ch:?} at {pos} is not a hex digit"));
    }
    if digits.len() % 2 == 1 {
        return Err(format!(
            "{what}: odd number of hex digits ({})",
            digits.len()
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| pair.iter().fold(0u8, |acc, d| (acc << 4) | hex_value(*d)))
        .collect())
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A JSON object that keeps insertion order (field numbers ascending, sub-fields in wire
/// order); `serde_json::Map` would sort its keys as strings.
#[derive(Default)]
struct Ordered(Vec<(String, Node)>);

enum Node {
    Leaf(Value),
    Object(Ordered),
}

impl Ordered {
    fn put(&mut self, key: &str, value: impl Into<Node>) {
        self.0.push((key.to_owned(), value.into()));
    }
}

impl From<Value> for Node {
    fn from(v: Value) -> Self {
        Node::Leaf(v)
    }
}

impl From<Ordered> for Node {
    fn from(o: Ordered) -> Self {
        Node::Object(o)
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Leaf(v) => v.serialize(serializer),
            Node::Object(o) => o.serialize(serializer),
        }
    }
}

#[derive(Serialize)]
struct Decoded {
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpdu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    mti: String,
    fields: Ordered,
    subfields: Ordered,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

fn decode(args: DecodeArgs) -> CliResult {
    let bytes = unhex(&read_input(&args.hex)?, "input")?;
    let mut body_with_mti = Vec::new();
    let message_input: &[u8] = if let Some(mti) = &args.mti {
        let mti: Mti = mti.parse().map_err(|e| format!("--mti: {e}"))?;
        body_with_mti.extend_from_slice(&mti.to_bcd());
        body_with_mti.extend_from_slice(&bytes);
        &body_with_mti
    } else {
        &bytes
    };
    let decode_message = |input| -> Result<Message<'_>, DecodeError> {
        if args.mac_input {
            Message::decode_mac_input(input)
        } else {
            Message::decode(input)
        }
    };
    let hinted = |err: DecodeError| format!("{err}{}", start_hint(&args, &bytes));
    let out = if args.no_frame || args.body {
        let message = decode_message(message_input).map_err(hinted)?;
        describe(None, None, &message)
    } else if args.no_length {
        let frame = Frame::decode_unprefixed(&bytes).map_err(hinted)?;
        describe(None, Some(&frame), &frame.message)
    } else {
        let frame = Frame::decode(&bytes).map_err(hinted)?;
        describe(Some(bytes.len() - 2), Some(&frame), &frame.message)
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Where a decode input starts, as the flags of `iso decode` say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The 2-byte length prefix (no flag).
    LengthPrefix,
    /// The TPDU (`--no-length`).
    Tpdu,
    /// The MTI (`--no-frame`).
    Mti,
    /// The MTI of a MAC input block (`--no-frame --mac-input`).
    MacInput,
}

impl Start {
    /// Tried in this order for a hint: a whole message before a MAC input block.
    const ALL: [Start; 4] = [
        Start::LengthPrefix,
        Start::Tpdu,
        Start::Mti,
        Start::MacInput,
    ];

    /// What the flags ask for; `None` for `--body`, whose MTI is given apart. `--mac-input` is
    /// read only with `--no-frame`: a MAC input block has no frame.
    fn of(args: &DecodeArgs) -> Option<Start> {
        match (args.body, args.no_frame, args.no_length, args.mac_input) {
            (true, ..) => None,
            (false, true, _, true) => Some(Start::MacInput),
            (false, true, _, false) => Some(Start::Mti),
            (false, false, true, _) => Some(Start::Tpdu),
            (false, false, false, _) => Some(Start::LengthPrefix),
        }
    }

    fn reads(self, bytes: &[u8]) -> bool {
        match self {
            Start::LengthPrefix => Frame::decode(bytes).is_ok(),
            Start::Tpdu => Frame::decode_unprefixed(bytes).is_ok(),
            Start::Mti => Message::decode(bytes).is_ok(),
            Start::MacInput => Message::decode_mac_input(bytes).is_ok(),
        }
    }
}

/// A hint after a decode error when the input reads whole from another start than the flags
/// said: a frame copied from a log without its length prefix (`--no-length`) and a MAC input
/// block (`--no-frame --mac-input`) are the usual mix-ups, and their errors (a TPDU's first
/// byte, a field 64 cut short) do not say so. Empty when no other start reads it.
fn start_hint(args: &DecodeArgs, bytes: &[u8]) -> &'static str {
    let Some(asked) = Start::of(args) else {
        return "";
    };
    let Some(reads) = Start::ALL
        .into_iter()
        .find(|start| *start != asked && start.reads(bytes))
    else {
        return "";
    };
    match (reads, asked) {
        (Start::LengthPrefix, Start::Tpdu) => " (starts at the length prefix? drop --no-length)",
        (Start::LengthPrefix, Start::Mti) => " (starts at the length prefix? drop --no-frame)",
        (Start::LengthPrefix, _) => {
            " (starts at the length prefix? drop --no-frame and --mac-input)"
        }
        (Start::Tpdu, Start::LengthPrefix) => " (starts at the TPDU? try --no-length)",
        (Start::Tpdu, _) => " (starts at the TPDU? try --no-length instead of --no-frame)",
        (Start::Mti, Start::MacInput) => " (not a MAC input? drop --mac-input)",
        (Start::Mti, Start::Tpdu) => " (starts at the MTI? try --no-frame instead of --no-length)",
        (Start::Mti, _) => " (starts at the MTI? try --no-frame)",
        (Start::MacInput, Start::Mti) => " (a MAC input? try --mac-input)",
        (Start::MacInput, Start::Tpdu) => {
            " (a MAC input? try --no-frame --mac-input instead of --no-length)"
        }
        (Start::MacInput, _) => " (a MAC input? try --no-frame --mac-input)",
    }
}

fn describe(length: Option<usize>, frame: Option<&Frame<'_>>, m: &Message<'_>) -> Decoded {
    let mut fields = Ordered::default();
    for f in m.fields() {
        fields.put(&f.number().to_string(), field_json(&f));
    }
    let mut subfields = Ordered::default();
    let mut sub = |n: &str, r: Result<Option<Node>, DecodeError>| match r {
        Ok(Some(node)) => subfields.0.push((n.to_owned(), node)),
        Ok(None) => {}
        Err(e) => subfields.put(n, json!({ "error": e.to_string() })),
    };
    sub("48", m.field48().map(|f| f.map(f48_json)));
    sub(
        "53",
        m.security_control().map(|s| {
            s.map(|s| {
                let mut o = Ordered::default();
                o.put("pin_format", json!(s.pin_format));
                o.put("key_type", json!(s.key_type));
                o.put("track_encrypted", json!(s.track_encrypted));
                o.into()
            })
        }),
    );
    sub(
        "60",
        m.field60().map(|f| {
            f.map(|f| {
                let mut o = Ordered::default();
                o.put("message_type", json!(format!("{:02}", f.message_type)));
                let mut opt = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        o.put(k, json!(v));
                    }
                };
                opt("batch", f.batch.map(|v| format!("{v:06}")));
                opt(
                    "network_management_code",
                    f.network_code.map(|v| format!("{v:03}")),
                );
                opt("read_capability", f.read_capability.map(|v| v.to_string()));
                opt("ic_condition", f.ic_condition.map(|v| v.to_string()));
                opt(
                    "extra",
                    (!f.extra.is_empty()).then(|| f.extra.as_str().to_owned()),
                );
                o.into()
            })
        }),
    );
    sub(
        "61",
        m.field61().map(|f| {
            f.map(|f| {
                let mut o = Ordered::default();
                o.put("original_batch", json!(format!("{:06}", f.batch)));
                if let Some(t) = f.trace {
                    o.put("original_trace", json!(format!("{t:06}")));
                }
                if let Some(d) = f.date {
                    o.put("original_date", json!(format!("{d:04}")));
                }
                if !f.extra.is_empty() {
                    o.put("extra", json!(f.extra.as_str()));
                }
                o.into()
            })
        }),
    );
    let slot = |s: KeySlot<'_>| json!({ "key": hex(s.key), "kcv": hex(&s.kcv) });
    sub(
        "62",
        m.working_keys().map(|k| {
            k.map(|k| {
                let mut o = Ordered::default();
                o.put("layout", json!(format!("{:?}", k.layout()).to_lowercase()));
                o.put("pik", slot(k.pik));
                o.put("mak", slot(k.mak));
                if let Some(t) = k.tdk {
                    o.put("tdk", slot(t));
                }
                o.into()
            })
        }),
    );
    Decoded {
        length,
        tpdu: frame.map(|f| f.head.tpdu.to_string()),
        routing: frame.and_then(|f| f.routing).map(hex),
        header: frame.map(|f| f.head.header.to_string()),
        mti: m.mti().to_string(),
        fields,
        subfields,
        kind: m.txn_kind().map(kind_name),
    }
}

/// First 6 and last 4 digits, the rest starred; shorter than a card number (13 digits), all
/// starred, since ten shown digits and a Luhn digit would leave little to guess.
fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n < 13 {
        return "*".repeat(n);
    }
    pan.chars()
        .enumerate()
        .map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' })
        .collect()
}

fn field_json(f: &iso8583::Field<'_>) -> Value {
    let n = f.number();
    let spec = f.spec();
    match (n, spec.format) {
        (2, _) => json!(mask_pan(
            &f.digits().map(|d| d.to_string()).unwrap_or_default()
        )),
        (35 | 36, _) | (_, Format::Z) => {
            json!(format!(
                "<track {} data, {} digits>",
                if n == 36 { 3 } else { 2 },
                f.len()
            ))
        }
        (52, _) => json!(format!("<PIN block, {} bytes>", f.len())),
        // The card's expiry, hidden as its copy in field 55 (tag 5F24) is.
        (14, _) => json!("<expiry>"),
        (48, _) => {
            let digits = f.digits().map(|d| d.to_string()).unwrap_or_default();
            json!(mask_batch_pans(&digits))
        }
        (55, _) => ic_data_json(f.data()),
        (_, Format::N) => json!(f.digits().map(|d| d.to_string()).unwrap_or_default()),
        (_, Format::B) => json!(hex(f.data())),
        (_, Format::An | Format::Ans) => match f.text() {
            Some(text) => json!(text),
            None => json!({ "hex": hex(f.data()) }),
        },
    }
}

/// EMV tags that carry the card number, track data, the expiry or the cardholder's name.
const IC_TAGS_HIDDEN: &[u32] = &[
    0x56, 0x57, 0x5A, 0x5F20, 0x5F24, 0x9F0B, 0x9F1F, 0x9F20, 0x9F6B,
];

/// Field 55 (IC data, BER-TLV) tag by tag, templates (constructed tags) opened, with the
/// values of `IC_TAGS_HIDDEN` replaced by their length; data that is not TLV is not shown at
/// all, since it may be anything.
fn ic_data_json(data: &[u8]) -> Value {
    tlv_json(data, 0).unwrap_or_else(|| {
        json!(format!(
            "<IC data, {} bytes, not TLV: not shown>",
            data.len()
        ))
    })
}

/// Templates nest this deep at most (EMV uses two levels).
const TLV_DEPTH_MAX: u8 = 4;

fn tlv_json(data: &[u8], depth: u8) -> Option<Value> {
    if depth > TLV_DEPTH_MAX {
        return None;
    }
    let mut items = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (tag, value, after) = next_tlv(rest)?;
        let number = tag.iter().fold(0u32, |n, &b| n << 8 | u32::from(b));
        let constructed = tag.first().is_some_and(|b| b & 0x20 != 0);
        let shown = if IC_TAGS_HIDDEN.contains(&number) {
            json!(format!("<{} bytes, not shown>", value.len()))
        } else if constructed {
            tlv_json(value, depth + 1)?
        } else {
            json!(hex(value))
        };
        items.push(json!({ "tag": hex(tag), "value": shown }));
        rest = after;
    }
    Some(json!(items))
}

/// One BER-TLV item: its tag bytes (up to 3), its value and what follows it.
fn next_tlv(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let first = *data.first()?;
    let mut tag_len = 1;
    if first & 0x1F == 0x1F {
        while tag_len < 3 {
            let next = *data.get(tag_len)?;
            tag_len += 1;
            if next & 0x80 == 0 {
                break;
            }
        }
    }
    let (tag, mut rest) = data.split_at_checked(tag_len)?;
    let (&len, after) = rest.split_first()?;
    rest = after;
    let len = match len {
        0x00..=0x7F => usize::from(len),
        0x81 => {
            let (&n, after) = rest.split_first()?;
            rest = after;
            usize::from(n)
        }
        0x82 => {
            let (n, after) = rest.split_at_checked(2)?;
            rest = after;
            usize::from(u16::from_be_bytes([*n.first()?, *n.get(1)?]))
        }
        _ => return None,
    };
    let (value, after) = rest.split_at_checked(len)?;
    Some((tag, value, after))
}

/// Field 48 of a batch upload carries PANs: mask each record's PAN in place. The settlement
/// totals (62 digits) are shown; any other layout is not, since its PANs cannot be found.
fn mask_batch_pans(digits: &str) -> String {
    if digits.len() == 62 {
        return digits.to_owned();
    }
    let is_upload = digits.len() >= 2 && (digits.len() - 2).is_multiple_of(40);
    if !is_upload {
        return format!(
            "<{} digits, not a batch-upload layout: not shown>",
            digits.len()
        );
    }
    let mut out = String::with_capacity(digits.len());
    out.push_str(digits.get(..2).unwrap_or_default());
    let mut rest = digits.get(2..).unwrap_or_default();
    while let (Some(head), Some(pan), Some(tail)) =
        (rest.get(..8), rest.get(8..28), rest.get(28..40))
    {
        let significant = pan.trim_start_matches('0');
        let zeros = pan.len() - significant.len();
        out.push_str(head);
        out.push_str(&"0".repeat(zeros));
        out.push_str(&mask_pan(significant));
        out.push_str(tail);
        rest = rest.get(40..).unwrap_or_default();
    }
    out
}

fn f48_json(f: Field48) -> Node {
    let totals = |t: iso8583::Totals| {
        json!({
            "debit_amount": t.debit_amount,
            "debit_count": t.debit_count,
            "credit_amount": t.credit_amount,
            "credit_count": t.credit_count,
            "result": t.result.0,
        })
    };
    match f {
        Field48::Totals(t) => json!({
            "settlement_totals": { "domestic": totals(t.domestic), "foreign": totals(t.foreign) }
        })
        .into(),
        Field48::Upload(u) => {
            let records: Vec<Value> = u
                .records()
                .map(|r| {
                    json!({
                        "organisation": format!("{:02}", r.organisation.0),
                        "trace": format!("{:06}", r.trace),
                        "pan": mask_pan(r.pan()),
                        "amount": r.amount,
                    })
                })
                .collect();
            json!({ "batch_upload": { "count": u.len(), "records": records } }).into()
        }
        Field48::UploadEnd(e) => json!({ "batch_upload_end": { "count": e.count } }).into(),
    }
}

fn kind_name(kind: TxnKind) -> String {
    use iso8583::{BatchUploadKind, Financial, SignInKeys};
    let financial = |f: Financial| match f {
        Financial::BalanceInquiry => "balance inquiry",
        Financial::Purchase => "purchase",
        Financial::PurchaseVoid => "purchase void",
        Financial::Refund => "refund",
        Financial::PreAuthorisation => "pre-authorisation",
        Financial::PreAuthorisationVoid => "pre-authorisation void",
        Financial::PreAuthorisationCompletion => "pre-authorisation completion",
        Financial::CompletionVoid => "completion void",
    };
    match kind {
        TxnKind::Financial(f) => financial(f).to_owned(),
        TxnKind::Reversal(f) => format!("reversal of {}", financial(f)),
        TxnKind::SignIn(keys) => format!(
            "sign-in ({})",
            match keys {
                SignInKeys::Single => "single-length keys",
                SignInKeys::Double => "double-length keys",
                SignInKeys::DoubleWithTrackKey => "double-length keys + track key",
                SignInKeys::Sm4 => "SM4 keys",
            }
        ),
        TxnKind::SignOff => "sign-off".to_owned(),
        TxnKind::EchoTest => "echo test".to_owned(),
        TxnKind::Settlement => "settlement".to_owned(),
        TxnKind::BatchUpload(k) => format!(
            "batch upload ({})",
            match k {
                BatchUploadKind::Magstripe => "magstripe",
                BatchUploadKind::IcBalanced => "IC, balanced",
                BatchUploadKind::IcUnbalanced => "IC, unbalanced",
            }
        ),
        TxnKind::BatchUploadEnd { network_code } => format!("batch upload end ({network_code:03})"),
    }
}

fn encode(args: EncodeArgs) -> CliResult {
    let text = match args.file.as_deref() {
        None | Some("-") => read_input("-")?,
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
    };
    let json: Value = serde_json::from_str(&text).map_err(|e| format!("input JSON: {e}"))?;
    let obj = json.as_object().ok_or("input JSON: not an object")?;
    let mti: Mti = obj
        .get("mti")
        .and_then(Value::as_str)
        .ok_or("input JSON: \"mti\" missing or not a string")?
        .parse()
        .map_err(|e| format!("mti: {e}"))?;
    let mut builder = MessageBuilder::new(mti);
    let fields = match obj.get("fields") {
        None => None,
        Some(v) => Some(v.as_object().ok_or("fields: not an object")?),
    };
    for (key, value) in fields.into_iter().flatten() {
        let number: u8 = key
            .parse()
            .map_err(|_| format!("fields: {key:?} is not a field number"))?;
        set_field(&mut builder, number, value)?;
    }
    let text_of = |k: &str| {
        obj.get(k)
            .map(|v| v.as_str().ok_or(format!("{k}: not a string")))
    };
    let mut out = Vec::new();
    match (text_of("tpdu").transpose()?, text_of("header").transpose()?) {
        (Some(tpdu), Some(header)) => {
            let tpdu: [u8; 5] = unhex(tpdu, "tpdu")?
                .try_into()
                .map_err(|_| "tpdu: must be 5 bytes (10 hex digits)")?;
            let header: [u8; 6] = unhex(header, "header")?
                .try_into()
                .map_err(|_| "header: must be 6 bytes (12 hex digits)")?;
            let head = FrameHead {
                tpdu: Tpdu::from_bytes(tpdu)?,
                header: Header::from_bytes(header)?,
            };
            builder.encode_frame(&head, &mut out)?;
        }
        (None, None) => builder.encode(&mut out),
        _ => return Err("give both \"tpdu\" and \"header\" for a frame, or neither".into()),
    }
    println!("{}", hex(&out));
    Ok(())
}

/// IC data given as decode shows it, `[{"tag": "9F26", "value": "<hex>"}, ...]`, as BER-TLV.
fn tlv_bytes(number: u8, items: &[Value]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for item in items {
        let tag = item.get("tag").and_then(Value::as_str);
        let Some(tag) = tag else {
            return Err(format!("field {number}: each item needs \"tag\" and \"value\"").into());
        };
        let value = match item.get("value") {
            // A template: its items, encoded in turn.
            Some(Value::Array(inner)) => tlv_bytes(number, inner)?,
            Some(Value::String(value)) if value.starts_with('<') => {
                return Err(format!(
                    "field {number}: tag {tag} is a hidden value from decode; give the full value"
                )
                .into());
            }
            Some(Value::String(value)) => unhex(value, &format!("field {number} tag {tag}"))?,
            _ => {
                return Err(
                    format!("field {number}: each item needs \"tag\" and \"value\"").into(),
                );
            }
        };
        out.extend(unhex(tag, &format!("field {number} tag"))?);
        match u8::try_from(value.len()) {
            Ok(len @ 0..=0x7F) => out.push(len),
            Ok(len) => out.extend([0x81, len]),
            Err(_) => {
                let len = u16::try_from(value.len())
                    .map_err(|_| format!("field {number} tag {tag}: value too long"))?;
                out.push(0x82);
                out.extend(len.to_be_bytes());
            }
        }
        out.extend(value);
    }
    Ok(out)
}

fn set_field(builder: &mut MessageBuilder, number: u8, value: &Value) -> CliResult {
    let spec = CUP_POS
        .field(number)
        .ok_or(format!("field {number}: not defined in this dialect"))?;
    if let Some(hex_text) = value.get("hex").and_then(Value::as_str) {
        builder.set_bytes(number, &unhex(hex_text, &format!("field {number}"))?)?;
        return Ok(());
    }
    if let Some(items) = value.as_array() {
        builder.set_binary(number, &tlv_bytes(number, items)?)?;
        return Ok(());
    }
    let text = value
        .as_str()
        .ok_or(format!("field {number}: not a string or {{\"hex\": ...}}"))?;
    if text.starts_with('<') || (spec.format == Format::N && text.contains('*')) {
        return Err(format!(
            "field {number}: {text:?} is a masked value from decode; give the full value"
        )
        .into());
    }
    match spec.format {
        Format::N => builder.set_digits(number, text)?,
        Format::Z => builder.set_track(number, text)?,
        Format::B => builder.set_binary(number, &unhex(text, &format!("field {number}"))?)?,
        Format::An | Format::Ans => builder.set_text(number, text)?,
    };
    Ok(())
}
