//! Signed webhooks: the signature scheme (HMAC-SHA256 over `timestamp.body`, hex, in
//! `X-Shoudan-Signature: v1=...` with the timestamp in `X-Shoudan-Timestamp`) and a minimal
//! HTTP/1.1 POST over tokio to `https://` endpoints (rustls, the receiver's certificate checked
//! against [`Trust`] and the URL's host) and `http://` ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    // A hostile timestamp (i64::MIN) must neither overflow nor pass.
    if now_s.abs_diff(timestamp) > tolerance_s.unsigned_abs() {
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
    if !hex.len().is_multiple_of(2) {
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

/// Where webhooks may be delivered. The merchant names the URL, so without a check a merchant
/// could have the host POST into the network it runs in: services on loopback, the cloud
/// metadata address, private ranges (server-side request forgery).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destinations {
    /// Globally routable addresses only: production's default.
    Public,
    /// Loopback, private and link-local addresses too: a demo or test on one machine, or an
    /// operator whose merchants' receivers are on an internal network.
    AnyAddress,
}

impl Destinations {
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Destinations::Public => is_public(ip),
            Destinations::AnyAddress => true,
        }
    }
}

/// Whether an address is globally routable: not loopback, private, shared (CGNAT),
/// link-local, site-local, multicast, reserved, documentation or unspecified; IPv4 inside IPv6
/// (mapped, compatible, NAT64, 6to4) is judged as the IPv4 address it carries, and local-use
/// NAT64 (`64:ff9b:1::/48`, any of the site's networks behind it) is not public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    let first = segments.first().copied().unwrap_or(0);
    let last_32 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let [s0, s1, s2, s3, s4, s5, s6, s7] = segments;
    // 64:ff9b::/96, NAT64, and ::a.b.c.d, IPv4-compatible (routed to the IPv4 address by
    // a host with the `sit` device up): the IPv4 address is the last 32 bits.
    if [s0, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0]
        || ([s0, s1, s2, s3, s4, s5] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
    {
        return is_public_v4(last_32(s6, s7));
    }
    // 2002::/16, 6to4: the IPv4 address is bits 16 to 48.
    if s0 == 0x2002 {
        return is_public_v4(last_32(s1, s2));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // fec0::/10, site-local (deprecated, still routed inside some networks).
        || (first & 0xffc0) == 0xfec0
        // 64:ff9b:1::/48, NAT64 for local use: behind it, any IPv4 network of the site's.
        || (first == 0x64 && s1 == 0xff9b && s2 == 1)
        || (first == 0x2001 && s1 == 0x0db8))
}

/// The CA certificates an `https://` receiver's certificate must chain to.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// This host's, as its other TLS clients trust (`SSL_CERT_FILE` or `SSL_CERT_DIR` when
    /// set, else the system's bundle), read once per process when first needed.
    #[default]
    System,
    /// A set made by [`Trust::system_and`] or [`Trust::only`].
    Made(Roots),
}

/// A client configuration and how many CA certificates it trusts.
#[derive(Clone)]
pub struct Roots {
    config: Arc<rustls::ClientConfig>,
    count: usize,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roots({} CA certificates)", self.count)
    }
}

impl Trust {
    /// This host's CA certificates and those in the PEM file `extra` (a private CA some
    /// merchants' receivers use), read now; with how many of the host's there were.
    pub fn system_and(extra: &Path) -> Result<(Trust, usize), String> {
        let mut roots = system_roots();
        let count = roots.len();
        add_pem(&mut roots, extra)?;
        Ok((Trust::Made(roots_config(roots)?), count))
    }

    /// Only the CA certificates in the PEM file `pem`.
    pub fn only(pem: &Path) -> Result<Trust, String> {
        let mut roots = rustls::RootCertStore::empty();
        add_pem(&mut roots, pem)?;
        roots_config(roots).map(Trust::Made)
    }

    /// This host's CA certificates, read now (a start reads them once, off the request path);
    /// with how many there were, which a start warns of when none.
    pub fn system() -> Result<(Trust, usize), String> {
        let roots = system_roots();
        let count = roots.len();
        Ok((Trust::Made(roots_config(roots)?), count))
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        static SYSTEM: OnceLock<Result<Roots, String>> = OnceLock::new();
        let roots = match self {
            Trust::Made(roots) => roots,
            Trust::System => SYSTEM
                .get_or_init(|| roots_config(system_roots()))
                .as_ref()
                .map_err(String::clone)?,
        };
        if roots.count == 0 {
            return Err(NO_CA_CERTIFICATES.to_owned());
        }
        Ok(Arc::clone(&roots.config))
    }
}

/// Characters of a TLS error kept: a certificate not valid for the URL's host is named with
/// every name it carries, hundreds on a shared one, and the text goes to the delivery log.
const TLS_ERROR_CHARS: usize = 200;

/// `text`'s first `chars` characters, `…` after them when it was longer.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// Why an `https://` receiver cannot be checked on a host without CA certificates.
pub const NO_CA_CERTIFICATES: &str = "no CA certificates on this host to check an https:// \
    receiver against (install ca-certificates, or set SSL_CERT_FILE, then restart)";

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!(errors = ?found.errors, "some of this host's CA certificates could not be read");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

fn add_pem(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let before = roots.len();
    let certs =
        rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))?;
    for cert in certs {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
    }
    if roots.len() == before {
        return Err(unreadable(&"no certificate in it"));
    }
    Ok(())
}

fn roots_config(roots: rustls::RootCertStore) -> Result<Roots, String> {
    // ring, not aws-lc-rs (a large C build on every clean build); rustls marks ring's provider
    // deprecated for its want of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let count = roots.len();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Roots {
        config: Arc::new(config),
        count,
    })
}

/// An `https://host[:port]/path` or `http://host[:port]/path` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`: the POST goes over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// The host as a resolver or an address parser takes it: an IPv6 address without its
    /// brackets.
    fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The host when it is an address written out (`10.0.0.5`, `[::1]`), not a name.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.bare_host().parse().ok()
    }

    pub fn parse(url: &str) -> Option<Endpoint> {
        if url.len() > URL_LEN_MAX || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://")?),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i)?, rest.get(i..)?),
            None => (rest, "/"),
        };
        let (host, port) = if authority.starts_with('[') {
            // An IPv6 address in brackets, maybe with a port after them.
            let (inside, rest) = authority.split_once(']')?;
            let host = authority.get(..inside.len() + 1)?;
            match rest.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if rest.is_empty() => (host, default_port),
                None => return None,
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().ok()?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Endpoint {
            tls,
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

/// POSTs a signed JSON body to an address `destinations` allows, over TLS to an `https://`
/// endpoint whose certificate chains to `trust`; `timeout` bounds the whole exchange, name
/// resolution and the TLS handshake included.
pub async fn post(
    endpoint: &Endpoint,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    destinations: Destinations,
    trust: &Trust,
) -> PostResult {
    let exchanged = async {
        let stream = connect(endpoint, destinations).await?;
        if !endpoint.tls {
            return exchange(stream, endpoint, headers, body).await;
        }
        let config = trust.config()?;
        let name = ServerName::try_from(endpoint.bare_host().to_owned())
            .map_err(|e| format!("TLS: {} {e}", endpoint.host))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {}", cut(&e.to_string(), TLS_ERROR_CHARS)))?;
        exchange(stream, endpoint, headers, body).await
    };
    match tokio::time::timeout(timeout, exchanged).await {
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

/// Resolves the host once and connects to an address the policy allows, never resolving
/// again: a name that answers a public address to a check and a private one to the connection
/// (DNS rebinding) gets nowhere.
async fn connect(endpoint: &Endpoint, destinations: Destinations) -> Result<TcpStream, String> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((endpoint.bare_host(), endpoint.port))
        .await
        .map_err(|e| format!("resolve {}: {e}", endpoint.host))?
        .collect();
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| destinations.allows(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "{} is not a public address (loopback, private or link-local): webhooks are not \
             sent there",
            endpoint.host
        ));
    }
    let mut last_error = String::new();
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = format!("connect: {e}"),
        }
    }
    Err(last_error)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    endpoint: &Endpoint,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<u16, String> {
    // The port only when it is not the scheme's own, as browsers write it: some gateways
    // match virtual hosts on the header's text.
    let default_port = if endpoint.tls { 443 } else { 80 };
    let host = if endpoint.port == default_port {
        endpoint.host.clone()
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: shoudan-webhook/1\r\n",
        endpoint.path,
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
    // Over TLS, what rustls took may still wait in its buffer for the socket: sent before
    // the answer is read.
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
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
        // A hostile timestamp neither overflows nor passes.
        for ts in [i64::MIN, i64::MAX] {
            assert!(!verify(
                secret,
                ts,
                b"{}",
                &sign(secret, ts, b"{}"),
                1_700_000_000,
                300
            ));
        }
    }

    #[test]
    fn only_public_addresses_are_public() {
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "203.0.114.1",
            "100.128.0.1",
            "2400:3200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "::808:808",
            "2002:808:808::1",
        ];
        let not_public = [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            // IPv4-compatible, 6to4, local NAT64 and site-local forms of private networks.
            "::a9fe:a9fe",
            "::127.0.0.1",
            "2002:a9fe:a9fe::",
            "2002:a00:1::1",
            "64:ff9b:1::a9fe:a9fe",
            "fec0::1",
        ];
        for text in public {
            let ip: IpAddr = text.parse().unwrap();
            assert!(is_public(ip), "{text} is public");
            assert!(Destinations::Public.allows(ip));
        }
        for text in not_public {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!is_public(ip), "{text} is not public");
            assert!(!Destinations::Public.allows(ip));
            assert!(Destinations::AnyAddress.allows(ip));
        }
    }

    #[tokio::test]
    async fn a_private_destination_is_refused_before_any_connection() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://localhost:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            format!("https://127.0.0.1:{port}/hook"),
            format!("https://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let endpoint = Endpoint::parse(&url).unwrap();
            let result = post(
                &endpoint,
                &[],
                b"{}",
                Duration::from_secs(5),
                Destinations::Public,
                &Trust::System,
            )
            .await;
            assert_eq!(result.status, None, "{url}");
            let error = result.error.unwrap_or_default();
            assert!(
                error.contains("not a public address") || error.starts_with("resolve"),
                "{url}: {error}"
            );
        }
        // Nothing reached the listener.
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "a refused destination was connected to");
    }

    #[test]
    fn long_errors_are_cut_where_a_character_ends() {
        assert_eq!(cut("short", 200), "short");
        let long = "名".repeat(300);
        let kept = cut(&long, 200);
        assert_eq!(kept.chars().count(), 201);
        assert!(kept.ends_with("名…"));
    }

    /// An IPv6 receiver's certificate is checked for the address, not for a name.
    #[test]
    fn a_bracketed_address_is_checked_as_an_address() {
        let endpoint = Endpoint::parse("https://[2400:3200::1]:8443/h").unwrap();
        assert_eq!(endpoint.bare_host(), "2400:3200::1");
        let name = ServerName::try_from(endpoint.bare_host().to_owned()).unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)), "{name:?}");
    }

    #[test]
    fn literal_addresses_are_told_from_names() {
        let ip = |url: &str| Endpoint::parse(url).and_then(|e| e.ip_literal());
        assert_eq!(ip("http://10.0.0.5/h"), "10.0.0.5".parse().ok());
        assert_eq!(ip("http://[::1]:8080/h"), "::1".parse().ok());
        assert_eq!(ip("http://[::1]/h"), "::1".parse().ok());
        assert_eq!(Endpoint::parse("http://[::1]x/h"), None);
        assert_eq!(ip("http://hooks.example.com/h"), None);
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080/hooks/shoudan"),
            Some(Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hooks/shoudan".into()
            })
        );
        assert_eq!(
            Endpoint::parse("http://example.com").map(|e| e.port),
            Some(80)
        );
        assert_eq!(
            Endpoint::parse("https://hooks.example.com/shoudan"),
            Some(Endpoint {
                tls: true,
                host: "hooks.example.com".into(),
                port: 443,
                path: "/shoudan".into()
            })
        );
        assert_eq!(
            Endpoint::parse("https://[2400:3200::1]:8443").map(|e| (e.tls, e.port)),
            Some((true, 8443))
        );
        assert_eq!(Endpoint::parse("ftp://example.com/"), None);
        assert_eq!(Endpoint::parse("HTTPS://example.com/"), None);
        assert_eq!(Endpoint::parse("https://u@example.com/"), None);
        assert_eq!(Endpoint::parse("http://u@example.com/"), None);
        assert_eq!(Endpoint::parse("http://:80/"), None);
        assert_eq!(Endpoint::parse("http://a.com/x y"), None);
    }
}
