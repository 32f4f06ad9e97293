//! Signed webhooks: the signature scheme (HMAC-SHA256 over `timestamp.body`, hex, in
//! `X-Shoudan-Signature: v1=...` with the timestamp in `X-Shoudan-Timestamp`) and a minimal
//! HTTP/1.1 POST over tokio to `http://` endpoints. TLS is out of scope (docs/architecture.md).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SIGNATURE_HEADER: &str = "X-Shoudan-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Shoudan-Timestamp";
pub const EVENT_ID_HEADER: &str = "X-Shoudan-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "X-Shoudan-Event-Type";
/// Bytes of the response read to find its status line; the rest is not our business.
pub const RESPONSE_HEAD_MAX: usize = 1_024;
/// Longest endpoint URL accepted.
pub const URL_LEN_MAX: usize = 512;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length: this never fails, but no panic path is kept for it.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The header value: `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    if let Some(mac) = mac(secret, timestamp, body) {
        for byte in mac.finalize().into_bytes().iter() {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out
}

/// What a receiver checks: the signature matches (in constant time) and the timestamp is
/// within `tolerance_s` of `now_s` (so a captured request cannot be replayed later).
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    if (now_s - timestamp).abs() > tolerance_s {
        return false;
    }
    let Some(hex) = header.trim().strip_prefix("v1=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&tag).is_ok())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let digits: Vec<u8> = hex
        .chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    Some(
        digits
            .chunks(2)
            .map(|pair| match pair {
                [hi, lo] => hi * 16 + lo,
                _ => 0,
            })
            .collect(),
    )
}

/// An `http://host[:port]/path` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Option<Endpoint> {
        if url.len() > URL_LEN_MAX || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i)?, rest.get(i..)?),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 80),
        };
        if host.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Endpoint {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// What one POST came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostResult {
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl PostResult {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// POSTs a signed JSON body; `timeout` bounds the whole exchange.
pub async fn post(
    endpoint: &Endpoint,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> PostResult {
    match tokio::time::timeout(timeout, exchange(endpoint, headers, body)).await {
        Ok(Ok(status)) => PostResult {
            status: Some(status),
            error: None,
        },
        Ok(Err(error)) => PostResult {
            status: None,
            error: Some(error),
        },
        Err(_) => PostResult {
            status: None,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}

async fn exchange(
    endpoint: &Endpoint,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<u16, String> {
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: shoudan-webhook/1\r\n",
        endpoint.path,
        endpoint.host,
        endpoint.port,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; RESPONSE_HEAD_MAX];
    let mut filled = 0;
    while let Some(space) = buf.get_mut(filled..) {
        if space.is_empty() {
            break;
        }
        let n = stream
            .read(space)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        filled += n;
        if buf
            .get(..filled)
            .is_some_and(|b| b.windows(2).any(|w| w == b"\r\n"))
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(buf.get(..filled).unwrap_or_default());
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| format!("bad status line: {line:.80}")),
        _ => Err(format!("bad status line: {line:.80}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_tamper() {
        let secret = b"merchant secret";
        let sig = sign(secret, 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1=") && sig.len() == 67);
        assert!(verify(
            secret,
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            b"{\"a\":2}",
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"other",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_001_000,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            b"{\"a\":1}",
            "v1=zz",
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080/hooks/shoudan"),
            Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hooks/shoudan".into()
            })
        );
        assert_eq!(
            Endpoint::parse("http://example.com").map(|e| e.port),
            Some(80)
        );
        assert_eq!(Endpoint::parse("https://example.com/"), None);
        assert_eq!(Endpoint::parse("http://u@example.com/"), None);
        assert_eq!(Endpoint::parse("http://:80/"), None);
        assert_eq!(Endpoint::parse("http://a.com/x y"), None);
    }
}
