//! The issuer link on the wire (docs/issuer-link.md): decoded requests become typed requests,
//! replies become frames. What cannot be understood but can be matched is answered with a code.

use domain::Pan;
use iso8583::{
    EncodeError, Financial, Frame, FrameHead, Message, MessageBuilder, Mti, TxnKind as WireKind,
};
use paycrypto::EncryptedPinBlock;

use crate::model::{AuthRequest, OriginalRef, Reply, ResponseCode, ReversalRequest, Rrn, TxnKind};
use crate::time::YearMonth;

/// Network management code of the echo test (60.3).
pub const ECHO_NETWORK_CODE: u16 = 301;
/// Field 61 on the issuer link: original RRN n12 + original date MMDD n4.
const FIELD61_LEN: usize = 16;

/// A request from the switch, understood.
#[derive(Debug)]
pub enum Inbound {
    Auth(AuthRequest),
    Reversal(ReversalRequest),
    Echo,
}

fn kind_of(financial: Financial) -> TxnKind {
    match financial {
        Financial::BalanceInquiry => TxnKind::BalanceInquiry,
        Financial::Purchase => TxnKind::Purchase,
        Financial::PurchaseVoid => TxnKind::PurchaseVoid,
        Financial::Refund => TxnKind::Refund,
        Financial::PreAuthorisation => TxnKind::PreAuth,
        Financial::PreAuthorisationVoid => TxnKind::PreAuthVoid,
        Financial::PreAuthorisationCompletion => TxnKind::Completion,
        Financial::CompletionVoid => TxnKind::CompletionVoid,
    }
}

/// Field 2, else track 2 left of the separator.
fn pan_of(message: &Message<'_>) -> Result<Pan, ResponseCode> {
    let mut digits = zeroize::Zeroizing::new(String::with_capacity(19));
    let source = message
        .digits(2)
        .or_else(|| message.digits(35))
        .ok_or(ResponseCode::FormatError)?;
    for c in source.chars() {
        if c == '=' || c == 'D' {
            break;
        }
        if digits.len() > 19 {
            return Err(ResponseCode::InvalidCard);
        }
        digits.push(c);
    }
    digits.parse::<Pan>().map_err(|_| ResponseCode::InvalidCard)
}

/// Field 14, else the YYMM after the separator in track 2.
fn expiry_of(message: &Message<'_>) -> Result<Option<YearMonth>, ResponseCode> {
    let mut text = String::with_capacity(4);
    if let Some(d) = message.digits(14) {
        d.write_to(&mut text)
            .map_err(|_| ResponseCode::FormatError)?;
    } else if let Some(track) = message.digits(35) {
        let mut after = track.chars().skip_while(|c| *c != '=' && *c != 'D').skip(1);
        text.extend(after.by_ref().take(4));
        if text.len() != 4 {
            return Ok(None);
        }
    } else {
        return Ok(None);
    }
    YearMonth::parse_yymm(&text)
        .map(Some)
        .map_err(|_| ResponseCode::FormatError)
}

fn digits_string(message: &Message<'_>, number: u8) -> Option<String> {
    let mut text = String::new();
    message.digits(number)?.write_to(&mut text).ok()?;
    Some(text)
}

fn original_of(message: &Message<'_>) -> Result<Option<OriginalRef>, ResponseCode> {
    let Some(text) = digits_string(message, 61) else {
        return Ok(None);
    };
    let (rrn, date) = text
        .get(..FIELD61_LEN)
        .and_then(|t| t.split_at_checked(Rrn::LEN))
        .ok_or(ResponseCode::FormatError)?;
    let rrn = Rrn::parse(rrn).map_err(|_| ResponseCode::FormatError)?;
    Ok(Some(OriginalRef {
        rrn,
        date: date.to_owned(),
    }))
}

/// Reads a request. `Err` carries the code to answer with when the request cannot be served.
pub fn decode(message: &Message<'_>) -> Result<Inbound, ResponseCode> {
    let kind = message.txn_kind().ok_or(ResponseCode::InvalidTransaction)?;
    let (financial, reversal) = match kind {
        WireKind::EchoTest => return Ok(Inbound::Echo),
        WireKind::Financial(f) => (f, false),
        WireKind::Reversal(f) => (f, true),
        WireKind::SignIn(_)
        | WireKind::SignOff
        | WireKind::Settlement
        | WireKind::BatchUpload(_)
        | WireKind::BatchUploadEnd { .. } => return Err(ResponseCode::InvalidTransaction),
    };
    let kind = kind_of(financial);
    let trace = message.stan().ok_or(ResponseCode::FormatError)?;
    let rrn = message.text(37).ok_or(ResponseCode::FormatError)?;
    let rrn = Rrn::parse(rrn).map_err(|_| ResponseCode::FormatError)?;
    let pan = pan_of(message)?;
    let amount = match (message.amount(), kind) {
        (Some(amount), _) => amount,
        (None, TxnKind::BalanceInquiry) => 0,
        (None, _) => return Err(ResponseCode::FormatError),
    };
    if reversal {
        let reason = message.text(39).unwrap_or("98").to_owned();
        return Ok(Inbound::Reversal(ReversalRequest {
            kind,
            pan,
            amount,
            trace,
            rrn,
            reason,
        }));
    }
    let pin_block = match message.bytes(52) {
        Some(bytes) => {
            Some(EncryptedPinBlock::from_bytes(bytes).map_err(|_| ResponseCode::PinFormatError)?)
        }
        None => None,
    };
    Ok(Inbound::Auth(AuthRequest {
        kind,
        pan,
        amount,
        trace,
        rrn,
        date: digits_string(message, 13),
        expiry: expiry_of(message)?,
        pin_block,
        original: original_of(message)?,
    }))
}

/// Field 54: account type n2 (00 unspecified), amount type n2 (02 available), currency n3,
/// sign C/D, amount n12.
pub fn balance_field(available: i64) -> String {
    let sign = if available < 0 { 'D' } else { 'C' };
    format!("0002156{sign}{:012}", available.unsigned_abs())
}

/// Builds the reply to `request` (MTI + 10, fields 11 and 37 echoed) into `out` as a frame.
pub fn encode_reply(
    head: &FrameHead,
    request: &Message<'_>,
    reply: &Reply,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mti = request.mti().response().unwrap_or(Mti::FINANCIAL_RESPONSE);
    let mut builder = MessageBuilder::new(mti);
    builder.copy_from(request, 11)?;
    builder.set_digits(15, &reply.settlement_date.mmdd())?;
    builder.copy_from(request, 37)?;
    if let Some(auth) = &reply.auth_code {
        builder.set_text(38, auth)?;
    }
    builder.set_text(39, reply.code.as_str())?;
    if mti == Mti::NETWORK_ADVICE_RESPONSE {
        builder.copy_from(request, 60)?;
    }
    if let Some(balance) = reply.balance {
        builder.set_text(54, &balance_field(balance))?;
    }
    builder.encode_frame(&head.reply(), out)
}

/// Decodes one frame body (after the length prefix).
pub fn decode_frame(body: &[u8]) -> Result<Frame<'_>, iso8583::DecodeError> {
    Frame::decode_unprefixed(body)
}

#[cfg(test)]
mod tests {
    use super::balance_field;

    #[test]
    fn balance_field_layout() {
        assert_eq!(balance_field(123_456), "0002156C000000123456");
        assert_eq!(balance_field(-5), "0002156D000000000005");
        assert_eq!(balance_field(0).len(), 20);
    }
}
