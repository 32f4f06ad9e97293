//! An HTTPS webhook receiver for the tests, with the test certificates of `tests/tls/`.

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A file of `tests/tls/` (its README says what each is).
pub fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// An HTTPS receiver on `ip`, port 0, with the test CA's certificate for 127.0.0.1 and
/// localhost: answers each POST 204 and hands over what it read, headers and body, in turn.
pub async fn tls_receiver(
    ip: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    tls_receiver_reading_after(ip, std::time::Duration::ZERO).await
}

/// The same, reading each request only `after` its handshake (a slow receiver: the sender's
/// socket buffers fill meanwhile).
pub async fn tls_receiver_reading_after(
    ip: &str,
    after: std::time::Duration,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(tls_file("receiver.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(tls_file("receiver.key")).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let Ok(mut stream) = acceptor.accept(socket).await else {
                continue;
            };
            tokio::time::sleep(after).await;
            let mut read = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            // Headers, then the body its Content-Length gives.
            let mut whole_at = None;
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                read.extend_from_slice(&buf[..n]);
                if whole_at.is_none()
                    && let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let head = String::from_utf8_lossy(&read[..end]).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    whole_at = Some(end + 4 + len);
                }
                if n == 0 || whole_at.is_some_and(|at| read.len() >= at) {
                    break;
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
            let _ = got.send(String::from_utf8_lossy(&read).into_owned());
        }
    });
    (addr, requests)
}
