//! The journal's PostgreSQL server out of reach while the switch runs: the link to it goes
//! through a loopback relay the test cuts (every connection dropped, new ones refused) and
//! restores. While it is cut the switch approves nothing it cannot record: each purchase is
//! answered 96, quickly. Once it is back, the writer and the reads reconnect and the very next
//! purchase is approved, also after a blip no request saw; nothing is left in flight. Skipped, loudly, without `SHOUDAN_PG_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{IssuerLog, Req, Terminal, card, new_hsm, pg_url, start_issuer};
use domain::IssuerDirectory;
use paycrypto::Hsm;
use store::{PgConfig, PgStore, Store, TxnState};
use switch::{IssuerEndpoint, Switch, SwitchConfig, SystemClock};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A loopback relay to the database that the test can cut and restore.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_cut, accept_links) = (Arc::clone(&cut), Arc::clone(&links));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                // Under the lock `cut` takes: a link is either refused or in the list it drops.
                let mut links = accept_links.lock().unwrap();
                if accept_cut.load(Ordering::SeqCst) {
                    // Refused: the connection is closed at once.
                    continue;
                }
                let target = target.clone();
                links.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Relay { addr, cut, links }
    }

    /// Drops every connection through the relay and refuses new ones.
    fn cut(&self) {
        let mut links = self.links.lock().unwrap();
        self.cut.store(true, Ordering::SeqCst);
        for link in links.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `url` with its `host:port` replaced by `addr`; returns the new URL and the old `host:port`.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |at| at + 1);
    let end = url[start..]
        .find('/')
        .map_or(url.len(), |slash| start + slash);
    let target = url[start..end].to_owned();
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
}

#[test]
fn a_database_out_of_reach_is_answered_96_and_approvals_resume_when_it_returns() {
    let Some(url) = pg_url() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("switch_outage_{}", std::process::id());
    runtime.block_on(async {
        let (_, target) = through(&url, "127.0.0.1:1".parse().unwrap());
        let relay = Relay::start(target).await;
        let (relayed, _) = through(&url, relay.addr);
        let config = PgConfig {
            url: relayed,
            schema: Some(schema.clone()),
        };
        let issuer = start_issuer(Arc::new(IssuerLog::default())).await;
        let (hsm, zpk) = new_hsm();
        let store = Arc::new(PgStore::open(&config).unwrap());
        common::provision(store.as_ref(), &hsm, &[common::TID]).await;
        let mut switch_config = SwitchConfig::new("127.0.0.1:0".parse().unwrap());
        switch_config.issuers = HashMap::from([(
            "SIM".to_owned(),
            IssuerEndpoint {
                addr: issuer,
                zpk,
                timeout: Duration::from_millis(500),
            },
        )]);
        switch_config.default_issuer = Some("SIM".to_owned());
        // As `shoudan serve` runs on PostgreSQL: every new request is also looked up there.
        switch_config.shared_journal = true;
        let handle = Switch::start(
            switch_config,
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&hsm) as Arc<dyn Hsm>,
            Arc::new(IssuerDirectory::embedded().unwrap()),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let mut terminal = Terminal::connect(handle.local_addr(), common::TID).await;
        assert_eq!(terminal.sign_in().await.code(), "00");
        let pan = card("622202");
        let mut stan = 0;
        let mut buy = async |terminal: &mut Terminal| {
            stan += 1;
            let asked = Instant::now();
            let code = terminal
                .send(&Req::purchase(&pan, 1_000 + u64::from(stan), stan))
                .await
                .code();
            (code, asked.elapsed())
        };
        for _ in 0..5 {
            assert_eq!(buy(&mut terminal).await.0, "00");
        }

        relay.cut();
        for n in 0..5 {
            let (code, took) = buy(&mut terminal).await;
            assert_eq!(
                code, "96",
                "purchase {n} while the database is out of reach"
            );
            assert!(took < Duration::from_secs(2), "96 took {took:?}");
        }

        relay.restore();
        for n in 0..5 {
            let (code, _) = buy(&mut terminal).await;
            assert_eq!(code, "00", "purchase {n} after the database returned");
        }
        // A blip while no request is under way: connections kept open across it (the reads'
        // pool, the writer's) are dead, and must not cost the next purchases a 96 each.
        relay.cut();
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.restore();
        for n in 0..5 {
            let (code, _) = buy(&mut terminal).await;
            assert_eq!(code, "00", "purchase {n} after a blip");
        }
        assert!(store.txns_in_state(TxnState::InFlight).unwrap().is_empty());
        let approved = store.txns_in_state(TxnState::Approved).unwrap().len();
        assert_eq!(approved, 15, "the five before, and the five after each cut");
        handle.shutdown().await;
    });
    drop(runtime);
    let _ = PgStore::drop_schema(&url, &schema);
}
