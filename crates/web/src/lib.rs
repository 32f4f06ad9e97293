//! The web layer (issue 6): the JSON API with its OpenAPI document, the merchant portal and the
//! operator console (server-rendered HTML, Chinese first), users and sessions, metrics.
//!
//! Everything reads the journal through [`store::Store`] and the `resolve` crate; nothing here
//! sits on the authorisation path. A merchant user sees only its own merchant: every handler
//! goes through [`auth::Principal::sees`] before it reads a merchant's data, and answers 404 for
//! another merchant's rows (the row's existence is not confirmed either).

#![forbid(unsafe_code)]
// The OpenAPI document is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

pub mod api;
pub mod auth;
mod chart;
pub mod clients;
pub mod error;
mod html;
pub mod metrics;
pub mod openapi;
pub mod ops;
mod pages;
pub mod password;
mod query;
mod turns;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use domain::IssuerDirectory;
use paycrypto::Hsm;
use resolve::Resolver;
use resolve::cases::{CaseService, RefundExecutor};
use store::Store;
use switch::Clock;
use tokio::sync::watch;

pub use auth::{Principal, create_user, hash_password, issue_api_token, verify_password};
pub use error::ApiError;
pub use store::web::Role;

/// Everything a handler needs, shared by all requests.
#[derive(Clone)]
pub struct Web {
    pub store: Arc<dyn Store>,
    /// Seals bound account numbers, as PANs are.
    pub hsm: Arc<dyn Hsm>,
    pub directory: Arc<IssuerDirectory>,
    pub clock: Arc<dyn Clock>,
    pub resolver: Resolver,
    pub cases: CaseService,
    pub metrics: Arc<metrics::HttpMetrics>,
    /// The running switch's latest metrics snapshot, when this process has a switch; kept
    /// fresh by whoever owns the switch (see [`metrics::SwitchMetricsCell`]).
    pub switch_metrics: Option<Arc<metrics::SwitchMetricsCell>>,
    /// Whether cookies carry `Secure` (the portal is served over TLS, directly or by a proxy):
    /// a browser then never sends the session over plain HTTP. Off by default for the demo on
    /// `http://127.0.0.1`; `shoudan serve` turns it on unless configured otherwise.
    pub secure_cookies: bool,
    /// Rows a transaction search reads at most for one page, across every merchant it
    /// searches ([`query::SEARCH_SCAN_MAX`]).
    pub search_scan_max: usize,
    /// Each searcher's own turn for a transaction search ([`query::Searchers`]).
    pub searchers: Arc<query::Searchers>,
    /// Proxies whose `X-Forwarded-For` names the client ([`clients::ClientAddr`]).
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Wrong sign-ins by client address ([`clients::ClientFailures`]).
    pub client_failures: Arc<clients::ClientFailures>,
}

impl Web {
    /// Runs `work` as a task of its own, to its end even if the request that started it is
    /// dropped (a closed tab, a client's timeout): for work whose every step must happen once
    /// begun (a refund approved, then its case and audit row written). A stop waits for such
    /// work ([`Web::wait_for_work_run_to_end`]).
    pub(crate) async fn run_to_end<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, error::ApiError>> + Send + 'static,
    ) -> Result<T, error::ApiError> {
        let running = metrics::Running::new(Arc::clone(&self.metrics));
        tokio::spawn(async move {
            let _running = running;
            work.await
        })
        .await
        .map_err(|_| error::ApiError::internal("the work stopped part-way"))?
    }

    /// At a stop, after the HTTP side has stopped taking requests: waits up to `within` for
    /// the work [`Web::run_to_end`] started; returns how much is still running.
    pub async fn wait_for_work_run_to_end(&self, within: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let running = self.metrics.running();
            if running == 0 || tokio::time::Instant::now() >= deadline {
                return running;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// At a stop: the audit rows of changes made that the journal has still not taken (tried
    /// again in the background) are given up on, each logged whole at error level and
    /// counted lost, rather than dropped with the runtime unsaid. Returns how many.
    pub fn give_up_unwritten_audit_rows(&self) -> usize {
        let rows = self.metrics.audit_pending_take_all();
        for row in &rows {
            auth::log_audit_row_lost(row, "the process stopped before the journal took it");
        }
        self.metrics
            .audit_rows_lost
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        rows.len()
    }

    pub fn new(
        store: Arc<dyn Store>,
        hsm: Arc<dyn Hsm>,
        directory: Arc<IssuerDirectory>,
        clock: Arc<dyn Clock>,
        refunds: Arc<dyn RefundExecutor>,
    ) -> Web {
        let resolver = Resolver::new(
            Arc::clone(&store),
            Arc::clone(&hsm),
            Arc::clone(&directory),
            Arc::clone(&clock),
        );
        let cases = CaseService::new(
            Arc::clone(&store),
            Arc::clone(&directory),
            refunds,
            Arc::clone(&clock),
        );
        Web {
            store,
            hsm,
            directory,
            clock,
            resolver,
            cases,
            metrics: Arc::new(metrics::HttpMetrics::default()),
            switch_metrics: None,
            secure_cookies: false,
            search_scan_max: query::SEARCH_SCAN_MAX,
            searchers: Arc::default(),
            trusted_proxies: Arc::new([]),
            client_failures: Arc::default(),
        }
    }

    /// The same, taking the client's address from `X-Forwarded-For` when the connection comes
    /// from one of `proxies` (the TLS proxy in front of the portal).
    pub fn with_trusted_proxies(mut self, proxies: Vec<std::net::IpAddr>) -> Web {
        self.trusted_proxies = proxies.into();
        self
    }

    /// The same, letting merchants point webhooks at `destinations` (public addresses only
    /// unless the operator allows more; the notifier applies the same rule at delivery).
    pub fn with_webhook_destinations(
        mut self,
        destinations: resolve::webhook::Destinations,
    ) -> Web {
        self.resolver.webhook_destinations = destinations;
        self
    }

    /// The same, with cookies marked `Secure` when `secure`.
    pub fn with_secure_cookies(mut self, secure: bool) -> Web {
        self.secure_cookies = secure;
        self
    }

    /// The attributes every cookie of this portal carries after its value and path.
    pub fn cookie_attributes(&self) -> &'static str {
        if self.secure_cookies {
            "; SameSite=Strict; Secure"
        } else {
            "; SameSite=Strict"
        }
    }

    /// The same, reporting the switch's own metrics from `cell`.
    pub fn with_switch_metrics(mut self, cell: Arc<metrics::SwitchMetricsCell>) -> Web {
        self.switch_metrics = Some(cell);
        self
    }

    /// The application merchants and operators use: API, portal, console, `/healthz`.
    /// `/metrics` is not in it: volumes and response codes of every merchant are the
    /// operator's, served by `router_with_metrics` (the demo, on loopback) or by
    /// `metrics_router` on a listener of their own.
    pub fn router(&self) -> Router {
        self.app(api::router().merge(pages::router()))
    }

    /// The application with `/metrics` beside it, on one listener.
    pub fn router_with_metrics(&self) -> Router {
        self.app(
            api::router()
                .merge(pages::router())
                .merge(metrics::router()),
        )
    }

    /// `/metrics` and `/healthz` alone, for the operator network's own listener.
    pub fn metrics_router(&self) -> Router {
        metrics::router()
            .merge(metrics::health_router())
            .with_state(self.clone())
    }

    fn app(&self, routes: Router<Web>) -> Router {
        routes
            .merge(metrics::health_router())
            .layer(axum::middleware::from_fn(error::plain_rejections))
            .layer(axum::middleware::from_fn(error::refuse_nul))
            .layer(axum::middleware::from_fn(no_store))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                transport_security,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                metrics::track,
            ))
            .with_state(self.clone())
    }
}

/// Every answer is kept by no cache and read as the type it says, unless its handler said
/// otherwise: the API's answers hold bearer tokens, transactions and bound accounts, as the
/// pages do.
async fn no_store(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// A portal served behind TLS (its cookies `Secure`) tells browsers to come back only over
/// TLS for a year: without it, a later visit typed as `http://` could be led elsewhere before
/// the redirect to TLS. (A browser's very first visit is not covered.)
async fn transport_security(
    axum::extract::State(web): axum::extract::State<Web>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    if web.secure_cookies {
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// [`serve`] on `runtime`, the HTTP side's own: the listener, bound on the caller's runtime, is
/// taken over by that one, and so are the connections it accepts. The handlers read the store
/// synchronously (a transaction search reads up to `SEARCH_SCAN_MAX` rows); on a runtime of
/// their own they hold only each other up, never a switch's terminals and issuer timers.
pub fn spawn_serve(
    runtime: &tokio::runtime::Handle,
    app: Router,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = listener.into_std()?;
    Ok(runtime
        .spawn(async move { serve(app, tokio::net::TcpListener::from_std(listener)?, stop).await }))
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // With each connection's peer, for the sign-in limits by client (`clients`).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Binds `addr` and serves the application with `/metrics` in a task; returns the bound
/// address.
pub async fn spawn(
    web: Web,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((
        local,
        tokio::spawn(serve(web.router_with_metrics(), listener, stop)),
    ))
}
