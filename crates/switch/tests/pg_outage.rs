//! The journal's PostgreSQL server out of reach while the switch runs: the link to it goes
//! through a loopback relay the test cuts (every connection dropped, new ones refused) and
//! restores. While it is cut the switch approves nothing it cannot record: each purchase is
//! answered 96, quickly. Once it is back, the writer and the reads reconnect and the very next
//! purchase is approved, also after a blip no request saw; nothing is left in flight.
//!
//! Or the relay freezes: connections stay open, bytes are taken and go nowhere until it thaws,
//! as with a database host whose disk stalls. Terminals are answered 96 within the switch's
//! `journal_wait`, and what the journal writes after their 96 is settled when it thaws: a
//! request row lands failed, an approval lands and is reversed by the host (a void's original
//! approved again). Or it freezes on an approval's COMMIT, the writer's statements run: the
//! terminal is then given no answer (its connection closed) rather than 96, and the host's
//! reversal lands after the thaw. Skipped, loudly, without `SHOUDAN_PG_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    IssuerLog, Req, SLOW_AMOUNT, TID, Terminal, card, eventually, new_hsm, pg_url, runtime,
    start_issuer,
};
use domain::IssuerDirectory;
use paycrypto::Hsm;
use store::{PgConfig, PgStore, Store, TxnState};
use switch::{IssuerEndpoint, Switch, SwitchConfig, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loopback relay to the database that the test can cut and restore, or freeze and thaw. It
/// runs on a runtime of its own: the test reads the store synchronously on its runtime's
/// workers, and a relay starved by those reads would hold them for good.
struct Relay {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    frozen: Arc<watch::Sender<bool>>,
    commit_trap: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Armed, freezes the relay before the server gets the next `COMMIT` a client sends after
/// statements naming an approval (an outcome's event, `approved`): the reversal queue's claims,
/// also committed every `saf_interval`, pass.
#[derive(Clone)]
struct CommitTrap {
    armed: Arc<AtomicBool>,
    frozen: Arc<watch::Sender<bool>>,
}

/// Copies `from` to `to`; while frozen, what it read waits with it. With a trap, the `COMMIT`
/// it is armed for freezes the relay first.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    trap: Option<CommitTrap>,
) {
    let mut buf = vec![0; 16 * 1024];
    let mut approval_sent = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(trap) = &trap
            && trap.armed.load(Ordering::SeqCst)
        {
            let read = buf.get(..n).unwrap_or_default();
            let has = |text: &[u8]| read.windows(text.len()).any(|w| w == text);
            if approval_sent && has(b"COMMIT") && trap.armed.swap(false, Ordering::SeqCst) {
                trap.frozen.send_replace(true);
            }
            approval_sent = approval_sent || has(b"approved");
        } else {
            approval_sent = false;
        }
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to
            .write_all(buf.get(..n).unwrap_or_default())
            .await
            .is_err()
        {
            return;
        }
    }
}

impl Relay {
    fn start(target: String) -> Relay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(watch::channel(false).0);
        let commit_trap = Arc::new(AtomicBool::new(false));
        let trap = CommitTrap {
            armed: Arc::clone(&commit_trap),
            frozen: Arc::clone(&frozen),
        };
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept_frozen = Arc::clone(&frozen);
        let (accept_cut, accept_links) = (Arc::clone(&cut), Arc::clone(&links));
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                // Under the lock `cut` takes: a link is either refused or in the list it drops.
                let mut links = accept_links.lock().unwrap();
                if accept_cut.load(Ordering::SeqCst) {
                    // Refused: the connection is closed at once.
                    continue;
                }
                let target = target.clone();
                let (up, down) = (accept_frozen.subscribe(), accept_frozen.subscribe());
                let trap = trap.clone();
                links.push(tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        tokio::join!(
                            pump(from_client, to_server, up, Some(trap)),
                            pump(from_server, to_client, down, None)
                        );
                    }
                }));
            }
        });
        Relay {
            runtime: Some(runtime),
            addr,
            cut,
            frozen,
            commit_trap,
            links,
        }
    }

    /// Freezes at the next `COMMIT` a client sends: the writer's commit of what it has taken
    /// into a group then waits, its statements run.
    fn freeze_at_commit(&self) {
        self.commit_trap.store(true, Ordering::SeqCst);
    }

    /// Holds every byte in either direction, connections kept open, until `thaw`.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
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

/// A switch on a PostgreSQL journal reached through a relay, and one signed-in terminal.
struct Outage {
    relay: Relay,
    store: Arc<PgStore>,
    handle: switch::SwitchHandle,
    terminal: Terminal,
}

impl Outage {
    async fn start(
        url: &str,
        schema: &str,
        issuer: SocketAddr,
        journal_wait: Duration,
        shared_journal: bool,
    ) -> Outage {
        let (_, target) = through(url, "127.0.0.1:1".parse().unwrap());
        let relay = Relay::start(target);
        let (relayed, _) = through(url, relay.addr);
        let config = PgConfig {
            url: relayed,
            schema: Some(schema.to_owned()),
        };
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
        switch_config.shared_journal = shared_journal;
        switch_config.journal_wait = journal_wait;
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
        Outage {
            relay,
            store,
            handle,
            terminal,
        }
    }
}

#[test]
fn a_database_out_of_reach_is_answered_96_and_approvals_resume_when_it_returns() {
    let Some(url) = pg_url() else { return };
    let runtime = runtime();
    let schema = format!("switch_outage_{}", std::process::id());
    runtime.block_on(async {
        let issuer = start_issuer(Arc::new(IssuerLog::default())).await;
        let Outage {
            relay,
            store,
            handle,
            mut terminal,
            // As `shoudan serve` runs on PostgreSQL: every new request is also looked up there.
        } = Outage::start(&url, &schema, issuer, switch::JOURNAL_WAIT_DEFAULT, true).await;
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
        // Reads try the database again at most every `PG_READ_CONNECT_PAUSE` while it is down
        // (not once per request): the first purchase after one has passed is approved.
        tokio::time::sleep(store::PG_READ_CONNECT_PAUSE).await;
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

#[test]
fn a_database_that_stops_answering_is_answered_96_and_what_lands_late_is_settled() {
    let Some(url) = pg_url() else { return };
    let runtime = runtime();
    let schema = format!("switch_frozen_{}", std::process::id());
    runtime.block_on(async {
        let log = Arc::new(IssuerLog::default());
        log.answer_reversals.store(true, Ordering::SeqCst);
        let issuer = start_issuer(Arc::clone(&log)).await;
        let wait = Duration::from_millis(500);
        // One node: a new request reads nothing, so the first wait is the request's own row.
        let Outage {
            relay,
            store,
            handle,
            mut terminal,
        } = Outage::start(&url, &schema, issuer, wait, false).await;
        let row = |stan: u32| store.txns_by_key(TID, 1, stan).unwrap().into_iter().next();
        let pan = card("622202");
        // The issuer holds `SLOW_AMOUNT` 150 ms: the relay freezes while it decides.
        let (log, relay) = (&log, &relay);
        let asked = |requests: usize| async move {
            while log.requests.load(Ordering::SeqCst) == requests {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            relay.freeze();
        };
        let sale = terminal.send(&Req::purchase(&pan, SLOW_AMOUNT, 1)).await;
        assert_eq!(sale.code(), "00");
        let sale_rrn = sale.text(37).unwrap();

        // Frozen before the request: its row cannot be written, so the issuer is not asked.
        relay.freeze();
        let requests = log.requests.load(Ordering::SeqCst);
        let started = Instant::now();
        let code = terminal.send(&Req::purchase(&pan, 2_000, 2)).await.code();
        let took = started.elapsed();
        assert_eq!(code, "96");
        assert!(
            took >= wait && took < Duration::from_secs(2),
            "96 took {took:?}"
        );
        // A chip card read as a stripe (60.5 = 2) is news of the terminal's health, written
        // before the request: within the same wait, not held until the journal thaws.
        let started = Instant::now();
        let fallback = Req {
            f60_tail: "00052",
            ..Req::purchase(&pan, 2_000, 20)
        };
        let code = terminal.send(&fallback).await.code();
        let took = started.elapsed();
        assert_eq!(code, "96");
        assert!(took < Duration::from_secs(2), "96 took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.thaw();
        // The row lands after its 96 and is settled as what the terminal was told.
        let settled = eventually(10, || {
            row(2).is_some_and(|r| {
                r.state == TxnState::Failed && r.response_code.as_deref() == Some("96")
            })
        })
        .await;
        assert!(settled, "late request row: {:?}", row(2));
        assert_eq!(log.requests.load(Ordering::SeqCst), requests);

        // Frozen while the issuer approves a purchase: the outcome is written after the 96.
        let requests = log.requests.load(Ordering::SeqCst);
        let started = Instant::now();
        let purchase = Req::purchase(&pan, SLOW_AMOUNT, 3);
        let (late, ()) = tokio::join!(terminal.send(&purchase), asked(requests));
        let took = started.elapsed();
        assert_eq!(late.code(), "96");
        assert!(took < Duration::from_secs(2), "96 took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.thaw();
        let late_rrn = row(3).unwrap().rrn.unwrap();
        let reversed = eventually(10, || {
            let acked = store
                .reversal(row(3).unwrap().id)
                .unwrap()
                .is_some_and(|q| q.state == store::SafState::Acked);
            acked && row(3).unwrap().state == TxnState::Reversed
        })
        .await;
        assert!(reversed, "late approval: {:?}", row(3));
        assert!(
            log.reversals
                .lock()
                .unwrap()
                .iter()
                .any(|(_, rrn)| rrn.trim() == late_rrn),
            "the issuer got the reversal of the approval the terminal was told 96 for"
        );

        // Frozen while the issuer approves a void: written late, reversed by the host, and
        // the sale it voided is approved again, in the journal and in memory; once the issuer
        // has taken that reversal, it can be voided again.
        let requests = log.requests.load(Ordering::SeqCst);
        let void = Req::void(&pan, SLOW_AMOUNT, 4, 1, &sale_rrn);
        let (void, ()) = tokio::join!(terminal.send(&void), asked(requests));
        assert_eq!(void.code(), "96");
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.thaw();
        let reversed = eventually(10, || {
            row(4).is_some_and(|r| {
                r.state == TxnState::Reversed
                    && store
                        .reversal(r.id)
                        .unwrap()
                        .is_some_and(|q| q.state == store::SafState::Acked)
            }) && row(1).is_some_and(|r| r.state == TxnState::Approved)
        })
        .await;
        assert!(reversed, "late void {:?}, its sale {:?}", row(4), row(1));
        let again = terminal
            .send(&Req::void(&pan, SLOW_AMOUNT, 5, 1, &sale_rrn))
            .await;
        assert_eq!(again.code(), "00", "the sale can be voided again");
        assert_eq!(row(1).unwrap().state, TxnState::Voided);

        let settled = eventually(10, || {
            store.txns_in_state(TxnState::InFlight).unwrap().is_empty()
        })
        .await;
        assert!(settled, "nothing left in flight");

        // Frozen as the approval's outcome is committed (its COMMIT held on the way, its
        // statements run): the writer took it into a commit before the wait ran out, so the
        // host's reversal cannot ride in it. The terminal is given no answer at all (its
        // connection closed, not 96), so that it reverses the sale itself whatever becomes of
        // the switch; the host's reversal, written apart, lands once the journal thaws.
        let requests = log.requests.load(Ordering::SeqCst);
        let purchase = Req::purchase(&pan, SLOW_AMOUNT, 7);
        let bytes = terminal.encode(&purchase, false);
        let trap = async {
            while log.requests.load(Ordering::SeqCst) == requests {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            relay.freeze_at_commit();
        };
        let unanswered = async {
            terminal.stream.write_all(&bytes).await.unwrap();
            let mut prefix = [0u8; 2];
            tokio::time::timeout(
                Duration::from_secs(10),
                terminal.stream.read_exact(&mut prefix),
            )
            .await
            .expect("neither answered nor closed in 10 s")
            .is_err()
        };
        let (unanswered, ()) = tokio::join!(unanswered, trap);
        assert!(unanswered, "answered while its outcome was being committed");
        relay.thaw();
        let reversed = eventually(10, || {
            row(7).is_some_and(|r| {
                r.state == TxnState::Reversed
                    && r.response_code.as_deref() == Some("00")
                    && store
                        .reversal(r.id)
                        .unwrap()
                        .is_some_and(|q| q.state == store::SafState::Acked)
            })
        })
        .await;
        assert!(reversed, "sale committed unanswered: {:?}", row(7));
        // The terminal, given no answer, reverses it on a new connection: already reversed
        // (25, PROTOCOL.md), and nothing more is sent to the issuer.
        terminal = Terminal::connect(handle.local_addr(), TID).await;
        assert_eq!(terminal.sign_in().await.code(), "00");
        let reversal = terminal.send(&Req::reversal_of(&purchase)).await;
        assert_eq!(reversal.code(), "25");
        assert_eq!(row(7).unwrap().state, TxnState::Reversed);
        let sale_rrn = row(7).unwrap().rrn.unwrap();
        let sent = log
            .reversals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, rrn)| rrn.trim() == sale_rrn)
            .count();
        assert_eq!(sent, 1, "one reversal of the sale sent to the issuer");

        // A stop while an approval's outcome waits on the frozen journal: the stop waits, within
        // its bound, for the outcome to land and be reversed by the host.
        let requests = log.requests.load(Ordering::SeqCst);
        let purchase = Req::purchase(&pan, SLOW_AMOUNT, 6);
        let (late, ()) = tokio::join!(terminal.send(&purchase), asked(requests));
        assert_eq!(late.code(), "96");
        let thaw = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            relay.thaw();
        };
        tokio::join!(handle.shutdown(), thaw);
        let stopped = row(6).unwrap();
        assert_eq!(stopped.state, TxnState::Reversed, "{stopped:?}");
        assert!(store.reversal(stopped.id).unwrap().is_some());
    });
    drop(runtime);
    let _ = PgStore::drop_schema(&url, &schema);
}
