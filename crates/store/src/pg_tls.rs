//! TLS to PostgreSQL: the URL's `sslmode=verify-full` with `sslrootcert=FILE`, read here
//! (tokio-postgres knows neither), and a rustls connector that checks the server's certificate
//! against those CA certificates and the host name the URL connects to.
//!
//! Only `verify-full` encrypts: `require` (and `verify-ca`) would encrypt to whoever answers
//! under any name, so they are refused with what to write instead. Without `sslmode`, or with
//! `disable` or `prefer`, connections are plain TCP (`prefer` finds no TLS here).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::error::StoreError;

/// What a URL asks of the connection's security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Security {
    /// Plain TCP (no `sslmode`, or `disable` or `prefer`).
    Plain,
    /// TLS, the server's certificate checked against the CA certificates in this PEM file and
    /// naming the host connected to.
    VerifyFull { roots: PathBuf },
}

fn refused(message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        message: format!("postgres URL: {}", message.into()),
    }
}

/// The URL without the settings read here (`sslmode`, `sslrootcert`), the mode tokio-postgres
/// is to use, and what was asked. A key=value connection string is passed on as it is, and
/// refused if it asks for TLS, whose settings are read from a `postgres://` URL only.
pub(crate) fn security_of(url: &str) -> Result<(String, Option<SslMode>, Security), StoreError> {
    let plain = || Ok((url.to_owned(), None, Security::Plain));
    let Some(after_scheme) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return key_value_security(url).and_then(|()| plain());
    };
    // The query starts at the first '?' after the credentials, which run to the first '@' (as
    // the client reads them: a password may hold a '?').
    let at = after_scheme.find('@');
    // An '@' in the query with no user before the host: the client would take all before it
    // for the user, settings and all, and connect in the clear to what follows.
    if let Some(credentials) = at.and_then(|at| after_scheme.get(..at))
        && credentials.contains('?')
        && (credentials.contains("sslmode") || credentials.contains("sslrootcert"))
    {
        return Err(refused(
            "an '@' after the TLS settings would make them part of the user name: write it %40",
        ));
    }
    let authority = url.len() - after_scheme.len() + at.map_or(0, |at| at + 1);
    let Some(mark) = url
        .get(authority..)
        .and_then(|rest| rest.find('?'))
        .map(|q| authority + q)
    else {
        return plain();
    };
    let (base, query) = url.split_at(mark);
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut kept = Vec::new();
    let mut mode = None;
    let mut roots = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match crate::pg::percent_decoded(key).as_str() {
            "sslmode" => mode = Some(crate::pg::percent_decoded(value)),
            "sslrootcert" => roots = Some(PathBuf::from(crate::pg::percent_decoded(value))),
            _ => kept.push(pair),
        }
    }
    let mut rest = base.to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    let security = match (mode.as_deref(), roots) {
        (Some("verify-full"), Some(roots)) if roots.as_os_str() == "system" => Err(
            "sslrootcert=system (the host's CA bundle) is not read here: name the file of the CA \
             certificates that signed the server's",
        ),
        (Some("verify-full"), Some(roots)) if !roots.as_os_str().is_empty() => {
            Ok((Some(SslMode::Require), Security::VerifyFull { roots }))
        }
        (Some("verify-full"), _) => Err(
            "sslmode=verify-full needs sslrootcert=FILE: the CA certificates (PEM) that signed the \
             server's",
        ),
        (Some("require" | "verify-ca"), _) => Err(
            "sslmode=require and verify-ca would encrypt to a server under any name: use \
             sslmode=verify-full with sslrootcert=FILE",
        ),
        (_, Some(_)) => Err("sslrootcert is read with sslmode=verify-full only"),
        (None, None) => Ok((None, Security::Plain)),
        (Some("disable"), None) => Ok((Some(SslMode::Disable), Security::Plain)),
        (Some("prefer"), None) => Ok((Some(SslMode::Prefer), Security::Plain)),
        (Some(_), None) => Err("sslmode: expected verify-full, prefer or disable"),
    };
    security
        .map(|(mode, security)| (rest, mode, security))
        .map_err(refused)
}

/// A key=value connection string is refused if it asks for TLS (`sslmode` other than
/// `disable` or `prefer`, or an `sslrootcert`): those settings are read from a URL only.
fn key_value_security(text: &str) -> Result<(), StoreError> {
    let asks_tls = text.split_whitespace().any(|token| {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        let value = value.trim_matches('\'');
        key == "sslrootcert" || key == "sslmode" && !matches!(value, "disable" | "prefer")
    });
    if asks_tls {
        return Err(refused(
            "TLS settings (sslmode=verify-full, sslrootcert) are read from a postgres:// URL only",
        ));
    }
    Ok(())
}

/// Refuses a verified connection with nothing to check the certificate's name against: a
/// Unix socket, or addresses (`hostaddr`) without a host name.
pub(crate) fn check_names(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    let hosts = config.get_hosts();
    let named = !hosts.is_empty()
        && hosts
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
    if named {
        Ok(())
    } else {
        Err(refused(
            "sslmode=verify-full needs the server's host name (or address) in the URL, which its \
             certificate must name: not a Unix socket, nor hostaddr alone",
        ))
    }
}

/// A connector checking the server against the CA certificates in `roots` (read at every
/// connection, so a renewed file is taken up without a restart).
pub(crate) fn connector(roots: &Path) -> Result<Rustls, StoreError> {
    let unreadable = |e: &dyn std::fmt::Display| StoreError::Backend {
        message: format!("postgres sslrootcert {}: {e}", roots.display()),
    };
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(roots).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        store.add(cert).map_err(|e| unreadable(&e))?;
    }
    if store.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    // ring, not aws-lc-rs (a large C build on every clean build): rustls marks ring's provider
    // deprecated for its want of post-quantum key exchange, which a link to the journal's own
    // database inside the acquirer's network does without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreadable(&e))?
        .with_root_certificates(store)
        .with_no_client_auth();
    // PostgreSQL 17's name for its protocol; earlier servers do not look at it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Rustls(Arc::new(config)))
}

/// Makes a TLS connection per server: rustls with the configured roots.
#[derive(Clone)]
pub(crate) struct Rustls(Arc<rustls::ClientConfig>);

/// One connection's handshake, to the server named.
pub(crate) struct Handshake {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Handshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        Ok(Handshake {
            config: Arc::clone(&self.0),
            name: ServerName::try_from(host.to_owned())?,
        })
    }
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, socket: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { Ok(Stream(connector.connect(self.name, socket).await?)) })
    }
}

/// A TLS session over a server's socket.
pub(crate) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    /// No channel binding: the certificate's check against the roots and the host name is what
    /// keeps a man in the middle out; SCRAM authenticates without binding.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(url: &str) -> Result<(String, Option<SslMode>, Security), String> {
        security_of(url).map_err(|e| e.to_string())
    }

    #[test]
    fn verify_full_is_taken_out_of_the_url_with_its_roots() {
        let (rest, mode, security) = read(
            "postgres://app@db.example:5433/shoudan?connect_timeout=5&sslmode=verify-full&\
             sslrootcert=%2Fetc%2Fshoudan%2Fdb-ca.pem&application_name=node1",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://app@db.example:5433/shoudan?connect_timeout=5&application_name=node1"
        );
        assert_eq!(mode, Some(SslMode::Require));
        assert_eq!(
            security,
            Security::VerifyFull {
                roots: PathBuf::from("/etc/shoudan/db-ca.pem")
            }
        );
        // What is left is the client's to read.
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());
    }

    /// The credentials run to the first '@', as the client reads them: a '?' in a password
    /// does not start the query.
    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, mode, security) =
            read("postgres://app:s3?t&mode=x@db/j?sslmode=verify-full&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://app:s3?t&mode=x@db/j");
        assert_eq!(mode, Some(SslMode::Require));
        assert_eq!(
            security,
            Security::VerifyFull {
                roots: PathBuf::from("/ca.pem")
            }
        );
        let plain = "postgres://app:a?b@db/j";
        assert_eq!(
            read(plain).unwrap(),
            (plain.to_owned(), None, Security::Plain)
        );
    }

    #[test]
    fn plain_urls_pass_as_they_are() {
        for url in [
            "postgres://app@db/shoudan",
            "postgres://app@db/shoudan?connect_timeout=5",
            "host=db user=app dbname=shoudan",
            "host=db user=app sslmode=prefer password=verify-me",
        ] {
            assert_eq!(read(url).unwrap(), (url.to_owned(), None, Security::Plain));
        }
        let (rest, mode, _) = read("postgres://app@db/shoudan?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), mode),
            ("postgres://app@db/shoudan", Some(SslMode::Disable))
        );
        let (_, mode, _) = read("postgres://app@db/shoudan?sslmode=prefer").unwrap();
        assert_eq!(mode, Some(SslMode::Prefer));
    }

    #[test]
    fn tls_without_a_check_of_the_server_is_refused_with_what_to_write() {
        for (url, says) in [
            ("postgres://db/s?sslmode=require", "use sslmode=verify-full"),
            (
                "postgres://db/s?sslmode=verify-ca&sslrootcert=/ca.pem",
                "use sslmode=verify-full",
            ),
            (
                "postgres://db/s?sslmode=verify-full",
                "needs sslrootcert=FILE",
            ),
            (
                "postgres://db/s?sslmode=verify-full&sslrootcert=",
                "needs sslrootcert=FILE",
            ),
            (
                "postgres://db/s?sslrootcert=/ca.pem",
                "with sslmode=verify-full only",
            ),
            (
                "postgres://db/s?sslmode=prefer&sslrootcert=/ca.pem",
                "with sslmode=verify-full only",
            ),
            (
                "postgres://db/s?sslmode=always",
                "expected verify-full, prefer or disable",
            ),
            (
                "host=db sslmode=verify-full sslrootcert=/ca.pem",
                "postgres:// URL only",
            ),
            ("host=db sslmode=require", "postgres:// URL only"),
            ("host=db sslrootcert='/ca.pem'", "postgres:// URL only"),
            (
                "postgres://db/s?sslmode=verify-full&sslrootcert=system",
                "sslrootcert=system",
            ),
            (
                "postgres://db/j?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x@n1",
                "write it %40",
            ),
        ] {
            let error = read(url).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn a_roots_file_without_certificates_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("shoudan-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = connector(&empty).err().unwrap().to_string();
        assert!(error.contains("empty.pem: no certificate in it"), "{error}");
        let missing = dir.join("missing.pem");
        let error = connector(&missing).err().unwrap().to_string();
        assert!(error.contains("missing.pem"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
