//! Webhooks to `https://` receivers: the receiver's certificate checked against the trusted
//! CA certificates and the URL's host before anything of the event is sent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use resolve::webhook::{Destinations, Endpoint, PostResult, SIGNATURE_HEADER, Trust, post, sign};

#[path = "support/tls.rs"]
mod tls;
use tls::{tls_file, tls_receiver, tls_receiver_reading_after};

async fn post_to(url: &str, trust: &Trust, body: &[u8]) -> PostResult {
    let endpoint = Endpoint::parse(url).unwrap();
    let headers = [(SIGNATURE_HEADER, sign(b"k", 1_700_000_000, body))];
    post(
        &endpoint,
        &headers,
        body,
        Duration::from_secs(30),
        Destinations::AnyAddress,
        trust,
    )
    .await
}

const EVENT: &[u8] = br#"{"event":"payment.declined"}"#;

/// An `https://` receiver whose certificate chains to the trusted CA and names the URL's host
/// gets the signed POST over TLS; one chaining to another CA, or named otherwise, is refused at
/// the handshake, before any of the event is sent.
#[tokio::test]
async fn https_receivers_get_the_event_only_when_their_certificate_checks_out() {
    let ours = Trust::only(&tls_file("ca.pem")).unwrap();
    let (addr, mut requests) = tls_receiver("127.0.0.1").await;
    let url = format!("https://127.0.0.1:{}/hook", addr.port());
    let result = post_to(&url, &ours, EVENT).await;
    assert_eq!(result.status, Some(204), "{:?}", result.error);
    let got = requests.recv().await.unwrap();
    assert!(got.starts_with("POST /hook HTTP/1.1\r\n"), "{got}");
    assert!(
        got.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", addr.port())),
        "{got}"
    );
    assert!(got.contains("X-Shoudan-Signature: v1="), "{got}");
    assert!(got.ends_with(r#"{"event":"payment.declined"}"#), "{got}");
    // By name too: the certificate names localhost.
    let by_name = post_to(
        &format!("https://localhost:{}/hook", addr.port()),
        &ours,
        EVENT,
    )
    .await;
    assert_eq!(by_name.status, Some(204), "{:?}", by_name.error);
    assert!(requests.recv().await.is_some());

    let theirs = Trust::only(&tls_file("other-ca.pem")).unwrap();
    let refused = post_to(&url, &theirs, EVENT).await;
    assert_eq!(refused.status, None);
    let error = refused.error.unwrap_or_default();
    assert!(
        error.starts_with("TLS: invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    // Another loopback address, which the certificate does not name.
    let (elsewhere, mut elsewhere_got) = tls_receiver("127.0.0.2").await;
    let renamed = post_to(
        &format!("https://127.0.0.2:{}/hook", elsewhere.port()),
        &ours,
        EVENT,
    )
    .await;
    let error = renamed.error.unwrap_or_default();
    assert!(error.contains("certificate not valid for name"), "{error}");
    // Neither refused exchange got as far as a request.
    for got in [&mut requests, &mut elsewhere_got] {
        let none = tokio::time::timeout(Duration::from_millis(200), got.recv()).await;
        assert!(none.is_err(), "an event was sent to a receiver not checked");
    }
}

/// A body larger than the socket's buffers reaches a slow receiver whole over TLS.
#[tokio::test]
async fn a_large_event_is_sent_whole_over_tls() {
    let ours = Trust::only(&tls_file("ca.pem")).unwrap();
    let (addr, mut requests) =
        tls_receiver_reading_after("127.0.0.1", Duration::from_millis(500)).await;
    let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(4 << 20));
    let result = post_to(
        &format!("https://localhost:{}/hook", addr.port()),
        &ours,
        body.as_bytes(),
    )
    .await;
    assert_eq!(result.status, Some(204), "{:?}", result.error);
    let got = requests.recv().await.unwrap();
    assert!(got.ends_with(&body), "{} bytes read", got.len());
}

#[test]
fn a_trust_file_without_certificates_is_refused_by_name() {
    let error = Trust::only(&tls_file("README.md")).unwrap_err();
    assert!(
        error.ends_with("README.md: no certificate in it"),
        "{error}"
    );
    let error = Trust::only(&tls_file("missing.pem")).unwrap_err();
    assert!(error.contains("missing.pem"), "{error}");
    let (_, host_cas) = Trust::system_and(&tls_file("ca.pem")).unwrap();
    assert_eq!(Trust::system().unwrap().1, host_cas);
}
