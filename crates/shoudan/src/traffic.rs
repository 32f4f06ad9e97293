//! The demo's background traffic: the traffic terminals run a mix of approvals and every kind
//! of failure (declined cards, wrong PINs, voids, refunds, reversals, pre-authorisations).

use std::path::PathBuf;
use std::time::Duration;

use terminal::{Card, Original, Request, Terminal, TxnType};
use tokio::sync::watch;

use crate::fixtures::{CardFixture, Fixtures, TerminalFixture};
use crate::terminal_cmd::{config_of, load_stan, save_stan};

/// A small xorshift: traffic only needs variety, not secrecy.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

pub async fn run(dir: PathBuf, fixtures: Fixtures, rate: f64, stop: watch::Receiver<bool>) {
    let terminals: Vec<TerminalFixture> = fixtures
        .terminals
        .iter()
        .filter(|t| t.traffic)
        .cloned()
        .collect();
    let count = terminals.len().max(1);
    let pause = Duration::from_secs_f64((count as f64 / rate).clamp(0.001, 60.0));
    let mut tasks = Vec::new();
    for (i, fixture) in terminals.into_iter().enumerate() {
        tasks.push(tokio::spawn(one_terminal(
            dir.clone(),
            fixture,
            fixtures.cards.clone(),
            pause,
            0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
            stop.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn card_of(c: &CardFixture, pin: Option<&str>) -> Option<Card> {
    Some(Card {
        pan: c.pan.parse().ok()?,
        expiry: Some(c.expiry.clone()),
        pin: pin.map(|p| zeroize::Zeroizing::new(p.to_owned())),
    })
}

async fn one_terminal(
    dir: PathBuf,
    fixture: TerminalFixture,
    cards: Vec<CardFixture>,
    pause: Duration,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng(seed);
    // Only the traffic's own healthy cards (the last of each bank) and declines that do not
    // change with use, so the fixtures' stated outcomes stay true for people driving the demo.
    let healthy: Vec<&CardFixture> = cards
        .iter()
        .filter(|c| c.label == "healthy" && c.purchase_code == "00")
        .collect();
    let declines: Vec<&CardFixture> = cards
        .iter()
        .filter(|c| c.purchase_code != "00" && !c.label.contains("pin"))
        .collect();
    let mut session: Option<Terminal> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if session.is_none() {
            let stan = match load_stan(&dir, &fixture.tid) {
                Ok(stan) => stan,
                Err(error) => {
                    tracing::warn!(tid = %fixture.tid, "demo traffic stopped: {error}");
                    return;
                }
            };
            let config = match config_of(&fixture, stan) {
                Ok(config) => config,
                Err(error) => {
                    tracing::warn!(tid = %fixture.tid, "demo traffic not started: {error}");
                    return;
                }
            };
            if let Ok(mut t) = Terminal::connect(config).await
                && t.sign_in().await.is_ok()
            {
                session = Some(t);
            }
        }
        if let Some(t) = session.as_mut() {
            let ok = scenario(t, &mut rng, &healthy, &declines).await;
            let _ = save_stan(&dir, &fixture.tid, t.next_stan());
            if !ok {
                session = None;
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One customer at the till. False when the connection is no longer usable.
async fn scenario(
    t: &mut Terminal,
    rng: &mut Rng,
    healthy: &[&CardFixture],
    declines: &[&CardFixture],
) -> bool {
    let pick = rng.next(100);
    let amount = 100 + u64::try_from(rng.next(20_000)).unwrap_or(0);
    let Some(good) = healthy.get(rng.next(healthy.len())) else {
        return true;
    };
    let purchase = |c: &CardFixture, pin: &str| -> Option<Request> {
        Some(Request {
            txn: TxnType::Purchase,
            card: card_of(c, Some(pin))?,
            amount,
            original: None,
        })
    };
    let send =
        async |t: &mut Terminal, req: Option<Request>| -> Result<Option<terminal::Response>, ()> {
            let Some(req) = req else { return Ok(None) };
            match t.transact(&req).await {
                Ok(r) => Ok(Some(r)),
                Err(terminal::TerminalError::Timeout(_)) => {
                    let _ = t.reverse_last("98").await;
                    Ok(None)
                }
                Err(_) => Err(()),
            }
        };
    let result = match pick {
        0..40 => send(t, purchase(good, &good.pin)).await.map(|_| ()),
        40..52 => match declines.get(rng.next(declines.len())) {
            Some(c) => send(t, purchase(c, &c.pin)).await.map(|_| ()),
            None => Ok(()),
        },
        52..57 => {
            async {
                // Wrong PIN once, then the right one (which also resets the issuer's PIN count).
                send(t, purchase(good, "000000")).await?;
                send(t, purchase(good, &good.pin)).await.map(|_| ())
            }
            .await
        }
        57..87 => {
            async {
                let Some(r) = send(t, purchase(good, &good.pin)).await? else {
                    return Ok(());
                };
                let Some(saved) = t.last_request().cloned() else {
                    return Ok(());
                };
                if !r.approved() {
                    return Ok(());
                }
                let original = Original::of(&saved, &r);
                let follow = match pick {
                    57..67 => Some((TxnType::PurchaseVoid, amount)),
                    67..77 => Some((TxnType::Refund, amount / 2)),
                    _ => None,
                };
                match follow {
                    Some((txn, amt)) => send(
                        t,
                        card_of(good, Some(&good.pin)).map(|card| Request {
                            txn,
                            card,
                            amount: amt,
                            original,
                        }),
                    )
                    .await
                    .map(|_| ()),
                    // The till could not print the slip: the terminal reverses.
                    None => t.reverse(&saved, "96").await.map(|_| ()).map_err(|_| ()),
                }
            }
            .await
        }
        87..92 => send(
            t,
            card_of(good, Some(&good.pin)).map(|card| Request {
                txn: TxnType::BalanceInquiry,
                card,
                amount: 0,
                original: None,
            }),
        )
        .await
        .map(|_| ()),
        _ => {
            async {
                let req = card_of(good, Some(&good.pin)).map(|card| Request {
                    txn: TxnType::PreAuth,
                    card,
                    amount,
                    original: None,
                });
                let Some(r) = send(t, req).await? else {
                    return Ok(());
                };
                let Some(saved) = t.last_request().cloned() else {
                    return Ok(());
                };
                if !r.approved() {
                    return Ok(());
                }
                let (txn, amt) = if pick.is_multiple_of(2) {
                    (TxnType::Completion, amount)
                } else {
                    (TxnType::PreAuthVoid, amount)
                };
                send(
                    t,
                    card_of(good, Some(&good.pin)).map(|card| Request {
                        txn,
                        card,
                        amount: amt,
                        original: Original::of(&saved, &r),
                    }),
                )
                .await
                .map(|_| ())
            }
            .await
        }
    };
    result.is_ok() && t.is_signed_in()
}
