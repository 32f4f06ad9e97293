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
    /// address in `X-Forwarded-For` (the rightmost entries are the nearest).
    pub fn of(peer: Option<IpAddr>, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> Self {
        let Some(peer) = peer else {
            return ClientAddr(None);
        };
        if !trusted.contains(&peer) {
            return ClientAddr(Some(peer));
        }
        let Some(forwarded) = forwarded_for else {
            return ClientAddr(Some(peer));
        };
        let mut nearest = peer;
        for hop in forwarded.rsplit(',') {
            let Ok(addr) = hop.trim().parse::<IpAddr>() else {
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
}

impl FromRequestParts<Web> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddr::of(peer, forwarded, &web.trusted_proxies))
    }
}

/// Wrong sign-ins by client address (see the module).
#[derive(Debug, Default)]
pub struct ClientFailures {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started_ms: i64,
    failures: u32,
}

impl ClientFailures {
    /// When `client` may try again, if it has had [`CLIENT_FAILURES_MAX`] wrong sign-ins in
    /// its window, which has not ended at `now_ms`.
    pub fn refused_until(&self, client: ClientAddr, now_ms: i64) -> Option<i64> {
        let addr = client.0?;
        let windows = self.lock();
        let window = windows.get(&addr)?;
        let ends_ms = window.started_ms.saturating_add(CLIENT_WINDOW_MS);
        (window.failures >= CLIENT_FAILURES_MAX && ends_ms > now_ms).then_some(ends_ms)
    }

    /// Counts a wrong sign-in from `client` at `now_ms`.
    pub fn failed(&self, client: ClientAddr, now_ms: i64) {
        let Some(addr) = client.0 else {
            return;
        };
        let mut windows = self.lock();
        let ended = |w: &Window| w.started_ms.saturating_add(CLIENT_WINDOW_MS) <= now_ms;
        if windows.len() >= CLIENTS_MAX && !windows.contains_key(&addr) {
            windows.retain(|_, w| !ended(w));
            if windows.len() >= CLIENTS_MAX {
                return;
            }
        }
        let window = windows.entry(addr).or_insert(Window {
            started_ms: now_ms,
            failures: 0,
        });
        if ended(window) {
            *window = Window {
                started_ms: now_ms,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_names_it() {
        let proxy = ip("10.0.0.1");
        let client = ip("203.0.113.7");
        // Not through a trusted proxy: what the header says is the client's own claim.
        assert_eq!(
            ClientAddr::of(Some(client), Some("198.51.100.1"), &[proxy]),
            ClientAddr(Some(client))
        );
        assert_eq!(
            ClientAddr::of(Some(proxy), Some("198.51.100.1, 203.0.113.7"), &[proxy]),
            ClientAddr(Some(client)),
            "the nearest address the trusted proxy names, not one the client put first"
        );
        // Two proxies in a row, both trusted.
        let inner = ip("10.0.0.2");
        assert_eq!(
            ClientAddr::of(Some(proxy), Some("203.0.113.7, 10.0.0.2"), &[proxy, inner]),
            ClientAddr(Some(client))
        );
        // A trusted proxy that names no one, or garbage: the last address vouched for.
        assert_eq!(
            ClientAddr::of(Some(proxy), None, &[proxy]),
            ClientAddr(Some(proxy))
        );
        assert_eq!(
            ClientAddr::of(Some(proxy), Some("203.0.113.7, junk"), &[proxy]),
            ClientAddr(Some(proxy))
        );
        assert_eq!(
            ClientAddr::of(None, Some("203.0.113.7"), &[]),
            ClientAddr(None)
        );
    }

    #[test]
    fn a_client_is_refused_for_the_rest_of_its_window_after_too_many() {
        let failures = ClientFailures::default();
        let a = ClientAddr(Some(ip("203.0.113.7")));
        let b = ClientAddr(Some(ip("203.0.113.8")));
        for n in 0..CLIENT_FAILURES_MAX {
            assert_eq!(failures.refused_until(a, 1_000), None, "after {n}");
            failures.failed(a, 1_000 + i64::from(n));
        }
        let until = 1_000 + CLIENT_WINDOW_MS;
        assert_eq!(failures.refused_until(a, 2_000), Some(until));
        assert_eq!(failures.refused_until(b, 2_000), None, "another client");
        assert_eq!(failures.refused_until(a, until), None, "the window ended");
        // A new window starts with the next wrong one.
        failures.failed(a, until);
        assert_eq!(failures.refused_until(a, until + 1), None);
        // Without an address nothing is counted.
        failures.failed(ClientAddr(None), 1_000);
        assert_eq!(failures.refused_until(ClientAddr(None), 1_000), None);
    }
}
