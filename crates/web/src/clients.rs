//! Wrong sign-ins counted by the client's address, beside the per-user lock (`auth`): one
//! password tried across many usernames (spraying), or names that do not exist, never lock a
//! user, and a client sending wrong passwords as fast as the two hash turns take them would
//! hold those turns from everyone else. A client address with [`CLIENT_FAILURES_MAX`] wrong
//! sign-ins within [`CLIENT_WINDOW_MS`] is answered 429 without a check until the window
//! ends. The address is the connection's peer, or, when that peer is a proxy the operator
//! trusts (`trusted_proxies`), the nearest address the proxy chain names in
//! `X-Forwarded-For` that is not itself a trusted proxy: a client cannot name itself another
//! address through a proxy the operator did not list. Counts are per node, in memory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::Web;

/// Wrong sign-ins from one client address within [`CLIENT_WINDOW_MS`] after which it is
/// refused until the window ends: well above a person's mistakes, or an office's behind one
/// address (a user locks at ten), far below what spraying needs (400 an hour, against the
/// tens of thousands the hash turns would take).
pub const CLIENT_FAILURES_MAX: u32 = 100;
/// The window the wrong sign-ins of a client address are counted in, from its first.
pub const CLIENT_WINDOW_MS: i64 = 15 * 60_000;
/// Client addresses counted at most; past it, windows that ended are dropped, then new
/// addresses are not counted until room is made (memory stays bounded under a flood of
/// addresses, which a per-address count cannot stop anyway).
const CLIENTS_MAX: usize = 100_000;

/// The address a request came from, as [`ClientAddr::of`] reads it; `None` when the server
/// was not given the connection's peer (a router driven in process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The client's address: the peer, or through trusted proxies the nearest untrusted
    /// address `forwarded_for` names (every `X-Forwarded-For` value in order, the rightmost
    /// entries the nearest: a proxy that adds a header of its own after the client's, or
    /// appends to the client's, is read alike). IPv4-mapped IPv6 addresses are taken as IPv4.
    pub fn of(peer: Option<IpAddr>, forwarded_for: &[&[u8]], trusted: &[IpAddr]) -> Self {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return ClientAddr(None);
        };
        if !trusted.contains(&peer) {
            return ClientAddr(Some(peer));
        }
        let mut nearest = peer;
        let hops = forwarded_for
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(|b| *b == b','));
        for hop in hops {
            let Some(addr) = forwarded_addr(hop) else {
                // Not an address: what lies beyond it cannot be vouched for.
                break;
            };
            nearest = addr;
            if !trusted.contains(&addr) {
                break;
            }
        }
        ClientAddr(Some(nearest))
    }

    /// The key wrong sign-ins are counted under: the address, or an IPv6 address's /64 (one
    /// host is given a whole /64 and may use any address in it).
    fn key(self) -> Option<IpAddr> {
        self.0.map(|addr| match addr {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                for octet in octets.iter_mut().skip(8) {
                    *octet = 0;
                }
                IpAddr::from(octets)
            }
            v4 @ IpAddr::V4(_) => v4,
        })
    }
}

/// An address as one entry of `X-Forwarded-For` gives it: bare, with a port
/// (`203.0.113.7:51234`), or an IPv6 one in brackets (`[2001:db8::1]`, with or without a port).
fn forwarded_addr(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let addr = if let Some(rest) = text.strip_prefix('[') {
        rest.split_once(']')?
            .0
            .parse::<std::net::Ipv6Addr>()
            .ok()?
            .into()
    } else if let Ok(addr) = text.parse::<IpAddr>() {
        addr
    } else {
        let (host, port) = text.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse::<std::net::Ipv4Addr>().ok()?.into()
    };
    Some(addr.to_canonical())
}

impl FromRequestParts<Web> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded: Vec<&[u8]> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        Ok(ClientAddr::of(peer, &forwarded, &web.trusted_proxies))
    }
}

/// Wrong sign-ins by client address (see the module).
#[derive(Debug, Default)]
pub struct ClientFailures {
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    by_client: HashMap<IpAddr, Window>,
    /// When windows that ended were last dropped to make room (a full table is swept at most
    /// once a second, not at each new address).
    swept_ms: i64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started_ms: i64,
    failures: u32,
    /// Its first refusal has been reported ([`Refused::first`]).
    refused: bool,
}

/// A client refused for the rest of its window ([`ClientFailures::begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// When the window ends.
    pub until_ms: i64,
    /// Whether this is the window's first refusal: logged once, not at each request.
    pub first: bool,
}

impl Window {
    fn ended(&self, now_ms: i64) -> bool {
        self.started_ms.saturating_add(CLIENT_WINDOW_MS) <= now_ms
    }
}

/// A sign-in under way from a client, counted as a wrong one until it is known right
/// ([`ClientFailures::begin`]): a burst of sign-ins at once cannot all pass the limit before any
/// of them is counted.
#[must_use]
pub struct Attempt<'a> {
    failures: &'a ClientFailures,
    key: Option<(IpAddr, i64)>,
}

impl Attempt<'_> {
    /// The password was right: not a wrong sign-in after all.
    pub fn succeeded(self) {
        let Some((key, started_ms)) = self.key else {
            return;
        };
        let mut windows = self.failures.lock();
        if let Some(window) = windows.by_client.get_mut(&key)
            && window.started_ms == started_ms
        {
            window.failures = window.failures.saturating_sub(1);
        }
    }
}

impl ClientFailures {
    /// Starts a sign-in from `client` at `now_ms`, counted as wrong until
    /// [`Attempt::succeeded`]; or, when the client has had [`CLIENT_FAILURES_MAX`] in its
    /// window, when it may try again.
    pub fn begin(&self, client: ClientAddr, now_ms: i64) -> Result<Attempt<'_>, Refused> {
        let Some(key) = client.key() else {
            return Ok(Attempt {
                failures: self,
                key: None,
            });
        };
        let mut windows = self.lock();
        if windows.by_client.len() >= CLIENTS_MAX && !windows.by_client.contains_key(&key) {
            if windows.swept_ms.saturating_add(1_000) <= now_ms {
                windows.by_client.retain(|_, w| !w.ended(now_ms));
                windows.swept_ms = now_ms;
            }
            if windows.by_client.len() >= CLIENTS_MAX {
                return Ok(Attempt {
                    failures: self,
                    key: None,
                });
            }
        }
        let fresh = Window {
            started_ms: now_ms,
            failures: 0,
            refused: false,
        };
        let window = windows.by_client.entry(key).or_insert(fresh);
        if window.ended(now_ms) {
            *window = fresh;
        }
        if window.failures >= CLIENT_FAILURES_MAX {
            let first = !window.refused;
            window.refused = true;
            return Err(Refused {
                until_ms: window.started_ms.saturating_add(CLIENT_WINDOW_MS),
                first,
            });
        }
        window.failures += 1;
        Ok(Attempt {
            failures: self,
            key: Some((key, window.started_ms)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn of(peer: &str, headers: &[&str], trusted: &[IpAddr]) -> ClientAddr {
        let headers: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        ClientAddr::of(Some(ip(peer)), &headers, trusted)
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_names_it() {
        let proxy = ip("10.0.0.1");
        let client = Some(ip("203.0.113.7"));
        // Not through a trusted proxy: what the header says is the client's own claim.
        assert_eq!(
            of("203.0.113.7", &["198.51.100.1"], &[proxy]),
            ClientAddr(client)
        );
        assert_eq!(
            of("10.0.0.1", &["198.51.100.1, 203.0.113.7"], &[proxy]),
            ClientAddr(client),
            "the nearest address the trusted proxy names, not one the client put first"
        );
        // A proxy that adds a header of its own after the client's.
        assert_eq!(
            of("10.0.0.1", &["198.51.100.1", "203.0.113.7"], &[proxy]),
            ClientAddr(client)
        );
        // Two proxies in a row, both trusted.
        let inner = ip("10.0.0.2");
        assert_eq!(
            of("10.0.0.1", &["203.0.113.7, 10.0.0.2"], &[proxy, inner]),
            ClientAddr(client)
        );
        // Ports, brackets, IPv4-mapped addresses.
        for entry in ["203.0.113.7:51234", "::ffff:203.0.113.7"] {
            assert_eq!(
                of("10.0.0.1", &[entry], &[proxy]),
                ClientAddr(client),
                "{entry}"
            );
        }
        let v6 = Some(ip("2001:db8::1"));
        for entry in ["[2001:db8::1]", "[2001:db8::1]:443", "2001:db8::1"] {
            assert_eq!(
                of("10.0.0.1", &[entry], &[proxy]),
                ClientAddr(v6),
                "{entry}"
            );
        }
        assert_eq!(
            of("::ffff:10.0.0.1", &["203.0.113.7"], &[proxy]),
            ClientAddr(client),
            "a proxy seen on a dual-stack listener"
        );
        // A client's own garbage before the proxy's entry is never reached.
        let garbage: &[u8] = b"\xff\xfe, unknown";
        let headers: [&[u8]; 2] = [garbage, b"203.0.113.7"];
        assert_eq!(
            ClientAddr::of(Some(proxy), &headers, &[proxy]),
            ClientAddr(client)
        );
        // A trusted proxy that names no one, or garbage: the last address vouched for.
        assert_eq!(of("10.0.0.1", &[], &[proxy]), ClientAddr(Some(proxy)));
        assert_eq!(
            of("10.0.0.1", &["203.0.113.7, junk"], &[proxy]),
            ClientAddr(Some(proxy))
        );
        assert_eq!(ClientAddr::of(None, &[], &[]), ClientAddr(None));
    }

    #[test]
    fn a_client_is_refused_for_the_rest_of_its_window_after_too_many() {
        let failures = ClientFailures::default();
        let a = ClientAddr(Some(ip("203.0.113.7")));
        let b = ClientAddr(Some(ip("203.0.113.8")));
        // Right ones are not counted.
        for _ in 0..3 * CLIENT_FAILURES_MAX {
            failures.begin(a, 1_000).map(Attempt::succeeded).unwrap();
        }
        // Attempts under way count at once: a burst cannot all pass.
        let mut under_way = Vec::new();
        for n in 0..CLIENT_FAILURES_MAX {
            under_way.push(failures.begin(a, 1_000 + i64::from(n)).unwrap());
        }
        let until = 1_000 + CLIENT_WINDOW_MS;
        let refused = |first| {
            Some(Refused {
                until_ms: until,
                first,
            })
        };
        assert_eq!(failures.begin(a, 2_000).err(), refused(true));
        assert_eq!(
            failures.begin(a, 2_001).err(),
            refused(false),
            "reported once"
        );
        assert!(failures.begin(b, 2_000).is_ok(), "another client");
        drop(under_way);
        assert!(failures.begin(a, until).is_ok(), "the window ended");
        // Without an address nothing is counted.
        for _ in 0..2 * CLIENT_FAILURES_MAX {
            drop(failures.begin(ClientAddr(None), 1_000).unwrap());
        }
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let failures = ClientFailures::default();
        for n in 0..CLIENT_FAILURES_MAX {
            let addr = ClientAddr(Some(ip(&format!("2001:db8:0:1::{n:x}"))));
            drop(failures.begin(addr, 1_000).unwrap());
        }
        let next = ClientAddr(Some(ip("2001:db8:0:1:ffff::1")));
        assert!(failures.begin(next, 1_001).is_err());
        let other = ClientAddr(Some(ip("2001:db8:0:2::1")));
        assert!(failures.begin(other, 1_001).is_ok());
    }
}
