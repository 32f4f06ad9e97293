//! Web test environment: the real switch and issuer simulator on loopback (the switch's own test
//! harness), a SQLite journal in a temp dir, two merchants with users, an operator and an admin,
//! the web app on 127.0.0.1:0, and a small HTTP/1.1 client on a plain TCP socket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

#[path = "../../../switch/tests/common/mod.rs"]
pub mod common;

use std::net::SocketAddr;
use std::sync::Arc;

pub use common::*;
use issuer_sim::{DemoCard, HsmPinVerifier, IssuerSim, LedgerLocation, ServerHandle, demo_issuer};
use paycrypto::Hsm;
use resolve::cases::RefundExecutor;
use store::{MerchantRow, Record, Status, Store};
use switch::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use web::auth::NewUser;
use web::{Role, Web};

pub const OTHER_MID: &str = "898110059420002";
pub const PASSWORD: &str = "demo-pass-1";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a test scenario: boxed (its future is large in a debug build) on a worker thread with
/// room to poll it; a panic inside is re-raised here.
pub fn run(scenario: impl std::future::Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap();
    let scenario: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(scenario);
    if let Err(e) = runtime.block_on(async { tokio::spawn(scenario).await }) {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub struct Env {
    pub h: Harness,
    pub sim: IssuerSim,
    _server: ServerHandle,
    pub cards: Vec<DemoCard>,
    pub t: Terminal,
    pub stan: u32,
    _ledger_dir: tempfile::TempDir,
    pub web: Web,
    pub http: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// `web` served on a loopback port of its own until the returned sender is dropped (or sends
/// true): its address.
pub async fn serve(web: Web) -> (SocketAddr, watch::Sender<bool>) {
    let (stop, stop_rx) = watch::channel(false);
    let (http, _task) = web::spawn(web, "127.0.0.1:0".parse().unwrap(), stop_rx)
        .await
        .unwrap();
    (http, stop)
}

pub async fn start() -> Env {
    let (hsm, zpk) = new_hsm();
    let pins = HsmPinVerifier::new(Arc::clone(&hsm) as Arc<dyn Hsm>, zpk);
    let ledger_dir = tempfile::tempdir().unwrap();
    let (issuer, cards) = demo_issuer(
        "ICBC",
        4,
        pins,
        LedgerLocation::File(ledger_dir.path().join("issuer.db")),
        Arc::new(issuer_sim::SystemClock),
    )
    .unwrap();
    let sim = IssuerSim::new(Arc::new(issuer), 7);
    let server = sim
        .serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let h = Harness::with_hsm(server.local_addr(), Arc::default(), hsm, zpk).await;
    h.store
        .submit(vec![Record::UpsertMerchant(MerchantRow {
            mid: OTHER_MID.into(),
            name: "Bookshop".into(),
            status: Status::Active,
            mcc: "5942".into(),
        })])
        .unwrap()
        .await
        .unwrap();
    let mut t = h.terminal().await;
    assert_eq!(t.sign_in().await.code(), "00");
    let switch = h.switch.as_ref().unwrap();
    let web = Web::new(
        Arc::clone(&h.store) as Arc<dyn Store>,
        Arc::clone(&h.hsm) as Arc<dyn Hsm>,
        Arc::clone(&h.directory),
        Arc::new(SystemClock),
        Arc::new(switch.back_office()) as Arc<dyn RefundExecutor>,
    );
    for (username, role, mid) in [
        ("teahouse", Role::Merchant, Some(MID)),
        ("bookshop", Role::Merchant, Some(OTHER_MID)),
        ("ops", Role::Operator, None),
        ("admin", Role::Admin, None),
    ] {
        web::create_user(
            &web,
            "test:setup",
            NewUser {
                username: username.to_owned(),
                password: PASSWORD.to_owned().into(),
                role,
                mid: mid.map(str::to_owned),
                display_name: username.to_owned(),
            },
        )
        .await
        .unwrap();
    }
    let (http, stop) = serve(web.clone()).await;
    Env {
        h,
        sim,
        _server: server,
        cards,
        t,
        stan: 1,
        _ledger_dir: ledger_dir,
        web,
        http,
        _stop: stop,
    }
}

impl Env {
    pub fn card(&self, label: &str) -> DemoCard {
        self.cards
            .iter()
            .find(|c| c.label == label)
            .unwrap()
            .clone()
    }

    /// A purchase from the terminal; (response code, RRN).
    pub async fn purchase(&mut self, card: &DemoCard, amount: u64) -> (String, String) {
        self.stan += 1;
        let req = Req {
            pin: Some(card.pin().to_owned()),
            ..Req::purchase(card.pan.expose_digits(), amount, self.stan)
        };
        let r = self.t.send(&req).await;
        (r.code(), r.text(37).unwrap_or_default())
    }

    pub fn txn_id(&self, rrn: &str) -> i64 {
        self.h.store.txn_by_rrn(rrn).unwrap().unwrap().id
    }

    /// A bearer token for `username`.
    pub async fn token(&self, username: &str) -> String {
        self.token_as(username, PASSWORD).await
    }

    /// A bearer token for `username` with `password`.
    pub async fn token_as(&self, username: &str, password: &str) -> String {
        let r = request(
            self.http,
            "POST",
            "/api/tokens",
            &[("content-type", "application/json")],
            &serde_json::json!({ "username": username, "password": password }).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_owned()
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // Read until the body is complete by its length (some servers, chromedriver among them,
    // announce `Connection: close` and keep the socket open), else to the end of the stream.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| raw.len() >= split + 4 + len) {
                break;
            }
            if head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    }
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A browser-like session over raw HTTP: signs in through the login form (with its CSRF
/// cookie) and keeps the session cookie.
pub struct PageSession {
    pub addr: SocketAddr,
    pub cookie: String,
}

impl PageSession {
    pub async fn login(addr: SocketAddr, username: &str) -> PageSession {
        Self::login_as(addr, username, PASSWORD).await
    }

    /// Signs `username` in with `password`, which must be right.
    pub async fn login_as(addr: SocketAddr, username: &str, password: &str) -> PageSession {
        let r = Self::attempt(addr, username, password).await;
        assert_eq!(r.status, 303, "{}", r.body);
        Self::opened_by(addr, &r)
    }

    /// The session an answer's `Set-Cookie` opened (its cookie `HttpOnly` and `SameSite=Strict`).
    pub fn opened_by(addr: SocketAddr, r: &Resp) -> PageSession {
        let set = r
            .headers_named("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("shoudan_session=") || c.starts_with("__Host-shoudan_session="))
            .expect("a new session's cookie")
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        PageSession {
            addr,
            cookie: set.split(';').next().unwrap().to_owned(),
        }
    }

    /// The login form sent as a browser sends it (its CSRF cookie first): the answer.
    pub async fn attempt(addr: SocketAddr, username: &str, password: &str) -> Resp {
        Self::attempt_with(addr, &[], username, password).await
    }

    /// `attempt` through a proxy that names the client `forwarded_for` (`X-Forwarded-For`).
    pub async fn attempt_from(
        addr: SocketAddr,
        forwarded_for: &str,
        username: &str,
        password: &str,
    ) -> Resp {
        let header = [("x-forwarded-for", forwarded_for)];
        Self::attempt_with(addr, &header, username, password).await
    }

    async fn attempt_with(
        addr: SocketAddr,
        extra: &[(&str, &str)],
        username: &str,
        password: &str,
    ) -> Resp {
        let form = request(addr, "GET", "/login", extra, "").await;
        assert_eq!(form.status, 200);
        let csrf_cookie = form
            .headers_named("set-cookie")
            .into_iter()
            .find(|c| {
                c.starts_with("shoudan_login_csrf=") || c.starts_with("__Host-shoudan_login_csrf=")
            })
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let csrf = csrf_cookie.split_once('=').unwrap().1.to_owned();
        let mut headers = vec![
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", csrf_cookie.as_str()),
        ];
        headers.extend_from_slice(extra);
        request(
            addr,
            "POST",
            "/login",
            &headers,
            &format!("csrf={csrf}&username={username}&password={password}"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[("cookie", &self.cookie)], "").await
    }

    pub async fn post(&self, path: &str, form: &str) -> Resp {
        request(
            self.addr,
            "POST",
            path,
            &[
                ("cookie", &self.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form,
        )
        .await
    }

    /// The CSRF token on a page's forms.
    pub fn csrf_of(page: &str) -> String {
        let at = page.find("name=\"csrf\" value=\"").expect("no csrf field") + 19;
        page[at..].split('"').next().unwrap().to_owned()
    }
}
