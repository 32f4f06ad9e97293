//! Settlement end to end on the demo: a day of traffic through the real switch and issuer
//! simulators over TCP (background traffic plus a void, a refund and a reversal), settled twice
//! (the second run changes nothing), the ledger balanced, each merchant's payout equal to its
//! captures − voids − refunds − fees, a payout to a frozen card held, the merchant re-binding,
//! an operator confirming, and the payout going out exactly once; then reconciliation against
//! the issuers' clearing files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use iso8583::{
    BatchRecord, BatchUpload, BatchUploadEnd, CardOrganisation, Frame, FrameHead, Header,
    MessageBuilder, Mti, SettleResult, SettlementTotals, Totals, Tpdu,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shoudan");

struct Demo(Option<Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &Path, traffic: bool) -> Demo {
    let _ = std::fs::remove_file(dir.join("fixtures.json"));
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--terminal-port", "0", "--http-port", "0"]);
    if traffic {
        cmd.args(["--traffic", "40"]);
    }
    let child = cmd
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let demo = Demo(Some(child));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.join("fixtures.json").exists() {
        assert!(Instant::now() < deadline, "demo did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    demo
}

fn stop(mut demo: Demo) {
    let mut child = demo.0.take().unwrap();
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shoudan(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let mut text = String::from_utf8(out.stdout).unwrap();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), text)
}

fn json(args: &[&str], dir: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out) = shoudan(&all, dir);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// A Luhn-valid 19-digit ICBC debit card number.
fn card(seed: u64) -> String {
    let payload = format!("622202{seed:012}");
    let check = domain::luhn_check_digit(payload.as_bytes()).unwrap();
    format!("{payload}{}", char::from(check))
}

#[test]
fn a_day_of_demo_traffic_is_settled_paid_and_reconciled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = start(dir, true);
    let fixtures = json(&["fixtures"], dir);
    let pan = fixtures["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bank"] == "ICBC" && c["label"] == "healthy")
        .unwrap()["pan"]
        .as_str()
        .unwrap()
        .to_owned();
    let terminal = |args: &[&str]| {
        let mut all = vec!["terminal", "--tid", "10000001"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--card", &pan]);
        json(&all, dir)
    };
    // A purchase voided, one partly refunded, one reversed.
    let p1 = terminal(&["purchase", "--amount", "12.34"]);
    let void = terminal(&[
        "void",
        "--amount",
        "12.34",
        "--orig-rrn",
        p1["rrn"].as_str().unwrap(),
        "--orig-stan",
        &p1["stan"].to_string(),
    ]);
    assert_eq!(void["code"], "00", "{void}");
    let p2 = terminal(&["purchase", "--amount", "50.00"]);
    let mmdd = p2["host_date"].as_str().map(str::to_owned);
    let mut refund_args = vec![
        "refund".to_owned(),
        "--amount".into(),
        "20.00".into(),
        "--orig-rrn".into(),
        p2["rrn"].as_str().unwrap().into(),
    ];
    if let Some(mmdd) = mmdd {
        refund_args.extend(["--orig-date".into(), mmdd]);
    }
    let refund_args: Vec<&str> = refund_args.iter().map(String::as_str).collect();
    let refund = terminal(&refund_args);
    assert_eq!(refund["code"], "00", "{refund}");
    let p3 = terminal(&["purchase", "--amount", "7.00"]);
    let reversal = terminal(&[
        "reversal",
        "--amount",
        "7.00",
        "--orig-stan",
        &p3["stan"].to_string(),
    ]);
    assert_eq!(reversal["code"], "00", "{reversal}");
    std::thread::sleep(Duration::from_secs(2));
    stop(demo);

    // Settle every clearing date the day produced (two if it crossed the 23:00 cut-over).
    let db = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
    let dates: Vec<String> = db
        .prepare("SELECT DISTINCT clearing_date FROM transactions ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // The day is still open: refused, unless a demo asks to see it at once.
    let open = switch::clearing_date_of(
        switch::Clock::now_ms(&switch::SystemClock),
        switch::CUTOVER_MINUTE_DEFAULT,
    );
    let (code, text) = shoudan(&["settle", "--date", &open], dir);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("{open} has not closed")), "{text}");
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for date in &dates {
        let first = json(&["settle", "--date", date, "--before-close"], dir);
        assert_eq!(first["changed"], true, "{first}");
        let second = json(&["settle", "--date", date, "--before-close"], dir);
        assert_eq!(second["changed"], false, "{second}");
        let (_, text) = shoudan(&["settle", "--date", date, "--before-close"], dir);
        assert!(text.contains("nothing changed"), "{text}");
        for m in second["merchants"].as_array().unwrap() {
            let captures = m["captures_fen"].as_i64().unwrap();
            let voids = m["voids_fen"].as_i64().unwrap();
            let refunds = m["refunds_fen"].as_i64().unwrap();
            let fees = m["fees_fen"].as_i64().unwrap();
            assert_eq!(
                m["net_fen"].as_i64().unwrap(),
                captures - voids - refunds - fees
            );
            *net.entry(m["mid"].as_str().unwrap().to_owned())
                .or_default() += m["net_fen"].as_i64().unwrap();
        }
    }
    // The demo merchant of terminal 10000001 saw the void and the refund.
    let counted: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM clearing_lines WHERE kind IN ('purchase_void', 'refund')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(counted >= 2);
    let ledger = json(&["ledger", "balance"], dir);
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(ledger["total_fen"], 0);

    // Bind every paid merchant; the first one's card is frozen at the bank.
    let mids: Vec<String> = net
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, _)| m.clone())
        .collect();
    assert!(!mids.is_empty());
    let frozen = card(1);
    let mut bank = serde_json::Map::new();
    bank.insert(frozen.clone(), "frozen".into());
    std::fs::write(dir.join("sim-bank.json"), Value::Object(bank).to_string()).unwrap();
    for (i, mid) in mids.iter().enumerate() {
        let number = if i == 0 {
            frozen.clone()
        } else {
            card(100 + u64::try_from(i).unwrap())
        };
        let bound = json(
            &[
                "account",
                "bind",
                "--mid",
                mid,
                "--card",
                &number,
                "--name",
                "王小明",
            ],
            dir,
        );
        assert_eq!(bound["outcome"], "active", "{bound}");
    }

    let last = dates.last().unwrap();
    // T+1 after the last clearing date: everything is due.
    let payout_day = settlement::dates::add_days(last, 1).unwrap();
    // A simulated bank's file that exists but cannot be read is an error, not an empty one
    // (every payout would then simulate as normal).
    let bank_file = dir.join("sim-bank.json");
    let kept = std::fs::read(&bank_file).unwrap();
    std::fs::remove_file(&bank_file).unwrap();
    std::fs::create_dir(&bank_file).unwrap();
    let (code, out) = shoudan(&["payouts", "--run", &payout_day], dir);
    assert_ne!(code, 0);
    assert!(out.contains("sim-bank.json"), "{out}");
    std::fs::remove_dir(&bank_file).unwrap();
    std::fs::write(&bank_file, kept).unwrap();
    // A run for a day to come (a mistyped year) is refused, and pays nothing.
    let (code, out) = shoudan(&["payouts", "--run", "2099-11-24"], dir);
    assert_ne!(code, 0);
    assert!(out.contains("never one to come"), "{out}");
    assert!(!dir.join("sim-bank-memory.json").exists(), "{out}");
    let first_run = json(&["payouts", "--run", &payout_day], dir);
    assert!(
        dir.join("sim-bank-memory.json").exists(),
        "the simulated bank keeps what it did for the next run"
    );
    assert_eq!(
        first_run["run"]["held"].as_array().unwrap().len(),
        1,
        "{first_run}"
    );
    let listed = json(&["payouts"], dir);
    let payouts = listed["payouts"].as_array().unwrap();
    let held_key = format!("{}:{payout_day}", mids[0]);
    for p in payouts {
        let mid = p["mid"].as_str().unwrap();
        assert_eq!(p["amount_fen"].as_i64(), net.get(mid).copied(), "{p}");
        if p["key"] == held_key.as_str() {
            assert_eq!(p["state"], "held");
            assert_eq!(p["failure"], "payout-account-frozen");
        } else {
            assert_eq!(p["state"], "sent", "{p}");
        }
    }
    assert_eq!(payouts.len(), mids.len());

    // Re-binding after the failure needs a second person. The card number comes on standard
    // input (`--card -`), out of the shell history and the process list.
    let pending = {
        let mut child = Command::new(BIN)
            .args([
                "account",
                "bind",
                "--mid",
                &mids[0],
                "--card",
                "-",
                "--name",
                "王小明",
                "--json",
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("{}\n", card(2)).as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(pending["outcome"], "pending_confirmation", "{pending}");
    let change = pending["change_id"].to_string();
    let (code, _) = shoudan(
        &[
            "account", "confirm", "--change", &change, "--by", "merchant",
        ],
        dir,
    );
    assert_ne!(code, 0, "the maker cannot confirm");
    json(
        &["account", "confirm", "--change", &change, "--by", "ops-li"],
        dir,
    );
    let run = json(&["payouts", "--run", &payout_day], dir);
    assert_eq!(run["run"]["released"][0], held_key.as_str(), "{run}");
    assert_eq!(run["run"]["sent"][0], held_key.as_str(), "{run}");
    let again = json(&["payouts", "--run", &payout_day], dir);
    assert_eq!(again["run"]["sent"].as_array().unwrap().len(), 0, "{again}");
    let sent_events: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM payout_events WHERE payout_key = ?1 AND kind = 'sent'",
            [&held_key],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sent_events, 1);
    let ledger = json(&["ledger", "balance"], dir);
    assert_eq!(ledger["balanced"], true, "{ledger}");
    for a in ledger["accounts"].as_array().unwrap() {
        let name = a["account"].as_str().unwrap();
        if name.starts_with("merchant_payable:") || name.starts_with("held:") {
            assert_eq!(a["balance_fen"], 0, "{a}");
        }
    }

    terminal_settlement(dir, &pan);

    // Reconciliation against the issuers' clearing files.
    for date in &dates {
        let reports = json(&["reconcile", "--date", date], dir);
        let reports = reports.as_array().unwrap();
        assert!(reports.len() >= 6);
        let matched: u64 = reports.iter().map(|r| r["matched"].as_u64().unwrap()).sum();
        assert!(matched > 0);
        for r in reports {
            assert_eq!(r["findings"].as_array().unwrap().len(), 0, "{r}");
        }
    }
    // A difference exits 1, its report printed all the same: an issuer's file that claims one
    // fen more for a sale the journal holds.
    {
        let date = dates.first().unwrap();
        let reports = json(&["reconcile", "--date", date], dir);
        // An issuer's file, of its own day, that holds an approved sale of the clearing date:
        // the issuers' days end at midnight, the host's at 23:00, so between the two the
        // clearing date's sales are in the issuer's file of the day before.
        let issuer_lines = |bank: &str, issuer_date: &str| -> Vec<String> {
            let day = issuer_sim::Date::from_days_since_epoch(
                settlement::dates::day_number(issuer_date).unwrap(),
            );
            let ledger = issuer_sim::ledger::Ledger::open(&issuer_sim::LedgerLocation::File(
                dir.join("issuers").join(format!("{bank}.db")),
            ))
            .unwrap();
            let records = ledger.transactions(Some(day), true).unwrap();
            ledger.close().unwrap();
            let mut csv = Vec::new();
            issuer_sim::clearing::write_csv(&records, &mut csv).unwrap();
            String::from_utf8(csv)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        let approved_sale = |l: &String| {
            l.split(',').nth(1) == Some("purchase") && l.split(',').nth(3) == Some("approved")
        };
        let day_before = settlement::dates::add_days(date, -1).unwrap();
        let (bank, issuer_date, mut lines, row) = reports
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["matched"].as_u64().unwrap() > 0)
            .map(|r| r["issuer"].as_str().unwrap().to_owned())
            .flat_map(|bank| {
                [date.clone(), day_before.clone()]
                    .into_iter()
                    .map(move |d| (bank.clone(), d))
            })
            .find_map(|(bank, d)| {
                let lines = issuer_lines(&bank, &d);
                let row = lines.iter().position(approved_sale)?;
                Some((bank, d, lines, row))
            })
            .unwrap_or_else(|| panic!("no issuer file holds an approved sale of {date}"));
        let mut fields: Vec<String> = lines[row].split(',').map(str::to_owned).collect();
        let rrn = fields[0].clone();
        fields[2] = (fields[2].parse::<i64>().unwrap() + 1).to_string();
        lines[row] = fields.join(",");
        let path = dir
            .join("clearing")
            .join(format!("{bank}-{issuer_date}.csv"));
        let kept = std::fs::read(&path).ok();
        std::fs::create_dir_all(dir.join("clearing")).unwrap();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (code, out) = shoudan(&["reconcile", "--date", date, "--json"], dir);
        assert_eq!(code, 1, "{out}");
        let reports: Value = serde_json::from_str(&out).unwrap();
        let findings: Vec<&Value> = reports
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["findings"].as_array().unwrap())
            .collect();
        assert_eq!(findings.len(), 1, "{out}");
        assert_eq!(findings[0]["kind"], "amount_differs", "{out}");
        assert_eq!(findings[0]["rrn"], rrn.as_str(), "{out}");
        let (code, text) = shoudan(&["reconcile", "--date", date], dir);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("differences 1"), "{text}");
        match kept {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        json(&["reconcile", "--date", date], dir);
    }
    // A day still open is reconciled as the issuers see it now, but its files are not kept:
    // a later run must see the day's later transactions. The simulated issuers' days end at
    // midnight (not at the host's 23:00 cut-over), then a grace for reversals on their way.
    let now_ms = switch::Clock::now_ms(&switch::SystemClock);
    let closed_through = switch::LocalTime::from_ms(now_ms - switch::CUTOVER_GRACE_MS).yyyymmdd();
    let kept: Vec<String> = std::fs::read_dir(dir.join("clearing"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for name in &kept {
        let date = name.trim_end_matches(".csv").rsplit('-').next().unwrap();
        assert!(
            date < closed_through.as_str(),
            "{name} kept for an open day"
        );
    }
}

/// One request to the demo's terminal port, its response body (settlement and batch upload
/// carry no MAC).
fn exchange(stream: &mut std::net::TcpStream, out: &MessageBuilder) -> Vec<u8> {
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    };
    let mut bytes = Vec::new();
    out.encode_frame(&head, &mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut body).unwrap();
    body
}

fn code(body: &[u8]) -> String {
    Frame::decode_unprefixed(body)
        .unwrap()
        .message
        .text(39)
        .unwrap()
        .to_owned()
}

/// Host totals as the journal has them: (debit fen, count, credit fen, count).
/// The batch a settlement of `batch` counts, before it is sent: the rows under the number, or
/// those received since its last settlement when there are any (the number opened again).
fn journal_totals(db: &rusqlite::Connection, tid: &str, batch: i64) -> (u64, u16, u64, u16) {
    let mut totals = (0, 0, 0, 0);
    let mut stmt = db
        .prepare(
            "SELECT kind, amount_fen FROM transactions WHERE tid = ?1 AND batch_no = ?2
             AND state IN ('approved', 'voided', 'completed')
             AND kind IN ('purchase', 'completion', 'purchase_void', 'completion_void', 'refund')
             AND received_at_ms > CASE WHEN EXISTS (
                 SELECT 1 FROM transactions t, batch_settlements s
                 WHERE t.tid = ?1 AND t.batch_no = ?2 AND s.tid = ?1 AND s.batch_no = ?2
                 AND t.received_at_ms > s.settled_at_ms)
             THEN (SELECT settled_at_ms FROM batch_settlements WHERE tid = ?1 AND batch_no = ?2)
             ELSE 0 END",
        )
        .unwrap();
    let rows = stmt
        .query_map(rusqlite::params![tid, batch], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap();
    for row in rows {
        let (kind, amount) = row.unwrap();
        let amount = u64::try_from(amount).unwrap();
        if kind == "purchase" || kind == "completion" {
            totals.0 += amount;
            totals.1 += 1;
        } else {
            totals.2 += amount;
            totals.3 += 1;
        }
    }
    totals
}

fn settlement_message(tid: &str, mid: &str, batch: i64, t: (u64, u16, u64, u16)) -> MessageBuilder {
    let mut out = MessageBuilder::new(Mti::SETTLEMENT);
    out.set_stan(999).unwrap();
    out.set_text(41, tid).unwrap().set_text(42, mid).unwrap();
    out.set_composed(&SettlementTotals {
        domestic: Totals {
            debit_amount: t.0,
            debit_count: t.1,
            credit_amount: t.2,
            credit_count: t.3,
            result: SettleResult::REQUEST,
        },
        foreign: Totals::default(),
    })
    .unwrap();
    out.set_text(49, "156").unwrap();
    out.set_digits(60, &format!("00{batch:06}201")).unwrap();
    out.set_text(63, "001").unwrap();
    out
}

/// Terminal 10000001 (domestic cards only) settles its batch: balanced. Then it claims one fen
/// more than it has and uploads its batch with one transaction mistyped and one left out: the
/// host answers unbalanced and the upload shows exactly those two.
fn terminal_settlement(dir: &Path, pan: &str) {
    let demo = start(dir, false);
    let fixtures = json(&["fixtures"], dir);
    let addr = format!(
        "{}:{}",
        fixtures["host"].as_str().unwrap(),
        fixtures["port"].as_u64().unwrap()
    );
    let tid = "10000001";
    let mid = fixtures["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == tid)
        .unwrap()["mid"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = rusqlite::Connection::open(dir.join("switch.db")).unwrap();
    let batch_of = |db: &rusqlite::Connection| -> i64 {
        db.query_row(
            "SELECT batch_no FROM terminals WHERE tid = ?1",
            [tid],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // Balanced: totals as the journal has them (the void and the refund in the credits).
    let batch = batch_of(&db);
    let totals = journal_totals(&db, tid, batch);
    assert!(totals.1 >= 2 && totals.3 >= 2, "{totals:?}");
    let body = exchange(&mut stream, &settlement_message(tid, &mid, batch, totals));
    assert_eq!(code(&body), "00");
    let answer = Frame::decode_unprefixed(&body).unwrap();
    let host = SettlementTotals::parse(answer.message.digits(48).unwrap()).unwrap();
    assert_eq!(host.domestic.result, SettleResult::BALANCED);
    assert_eq!(batch_of(&db), batch + 1, "the batch closed");

    // Two more purchases. (The CLI terminal signs in with its own batch number, which the
    // host adopts, so they may open a number settled before: the host then counts what came
    // since that settlement, and the upload covers that.)
    let mut stans = Vec::new();
    let mut next = 0;
    for amount in ["3.00", "4.00"] {
        let r = json(
            &[
                "terminal", "--tid", tid, "purchase", "--amount", amount, "--card", pan,
            ],
            dir,
        );
        assert_eq!(r["code"], "00", "{r}");
        next = r["batch"].as_i64().unwrap();
        stans.push(u32::try_from(r["stan"].as_u64().unwrap()).unwrap());
    }
    let mut totals = journal_totals(&db, tid, next);
    totals.0 += 1;
    let body = exchange(&mut stream, &settlement_message(tid, &mid, next, totals));
    let answer = Frame::decode_unprefixed(&body).unwrap();
    let host = SettlementTotals::parse(answer.message.digits(48).unwrap()).unwrap();
    assert_eq!(host.domestic.result, SettleResult::UNBALANCED);
    assert_eq!(host.domestic.debit_amount + 1, totals.0);

    // Upload every counted transaction of the batch, but the 3.00 purchase mistyped as 3.01
    // and the 4.00 one left out; eight records per message.
    // (Since where the batch started, kept with its settlement.)
    let rows: Vec<(u32, i64)> = db
        .prepare(
            "SELECT stan, amount_fen FROM transactions WHERE tid = ?1 AND batch_no = ?2
             AND state IN ('approved', 'voided', 'completed')
             AND kind IN ('purchase', 'completion', 'purchase_void', 'completion_void', 'refund')
             AND received_at_ms > COALESCE((SELECT opened_after_ms FROM batch_settlements
                                            WHERE tid = ?1 AND batch_no = ?2), 0)
             ORDER BY stan",
        )
        .unwrap()
        .query_map(rusqlite::params![tid, next], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let uploaded: Vec<(u32, u64)> = rows
        .iter()
        .filter(|(stan, _)| *stan != stans[1])
        .map(|(stan, amount)| {
            let amount = u64::try_from(*amount).unwrap();
            (
                *stan,
                if *stan == stans[0] {
                    amount + 1
                } else {
                    amount
                },
            )
        })
        .collect();
    for (n, chunk) in uploaded.chunks(8).enumerate() {
        let mut upload = BatchUpload::new();
        for (stan, amount) in chunk {
            upload
                .push(BatchRecord::new(CardOrganisation::DOMESTIC, *stan, pan, *amount).unwrap())
                .unwrap();
        }
        let mut out = MessageBuilder::new(Mti::BATCH_UPLOAD);
        out.set_stan(900 + u32::try_from(n).unwrap()).unwrap();
        out.set_text(41, tid).unwrap().set_text(42, &mid).unwrap();
        out.set_composed(&upload).unwrap();
        out.set_digits(60, &format!("00{next:06}201")).unwrap();
        assert_eq!(code(&exchange(&mut stream, &out)), "00");
    }
    let mut end = MessageBuilder::new(Mti::BATCH_UPLOAD);
    end.set_stan(997).unwrap();
    end.set_text(41, tid).unwrap().set_text(42, &mid).unwrap();
    end.set_composed(&BatchUploadEnd {
        count: u16::try_from(uploaded.len()).unwrap(),
    })
    .unwrap();
    end.set_digits(60, &format!("00{next:06}207")).unwrap();
    assert_eq!(code(&exchange(&mut stream, &end)), "00");
    let diffs: Vec<(u32, String, Option<i64>, Option<i64>)> = db
        .prepare(
            "SELECT stan, kind, host_amount_fen, terminal_amount_fen FROM batch_differences
             WHERE tid = ?1 AND batch_no = ?2 ORDER BY stan",
        )
        .unwrap()
        .query_map(rusqlite::params![tid, next], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        diffs,
        vec![
            (stans[0], "amount_differs".to_owned(), Some(300), Some(301)),
            (stans[1], "missing_at_terminal".to_owned(), Some(400), None),
        ]
    );
    stop(demo);
}
