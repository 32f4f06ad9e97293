//! One issuer host: the book behind a lock, its clock, its PIN verifier and its ledger. This is
//! what the TCP server calls per request and what `shoudan audit` queries afterwards.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::book::{Book, BookConfig, BookError, PinVerifier};
use crate::clearing;
use crate::ledger::{Ledger, LedgerError, LedgerLocation};
use crate::model::{
    AccountSpec, AuthRequest, CardStatus, Pan, Posting, Reply, ResponseCode, ReversalRequest, Rrn,
    TxnRecord,
};
use crate::time::{Clock, Date, LocalTime};

/// A daily window, in local minutes since midnight, when the issuer answers 91. A window whose
/// start is after its end runs over midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl MaintenanceWindow {
    pub fn contains(self, minute: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// Bank code as in data/bin (e.g. `ICBC`).
    pub bank_code: String,
    pub ledger: LedgerLocation,
    pub book: BookConfig,
    pub maintenance: Option<MaintenanceWindow>,
}

impl IssuerConfig {
    /// An in-memory issuer with default policy: unit tests and throwaway demos.
    pub fn in_memory(bank_code: &str) -> Self {
        Self {
            bank_code: bank_code.to_owned(),
            ledger: LedgerLocation::Memory,
            book: BookConfig::default(),
            maintenance: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Book(#[from] BookError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("clearing file: {0}")]
    Clearing(String),
}

/// A simulated issuer host.
pub struct Issuer {
    bank_code: String,
    book: Mutex<Book>,
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    pins: Arc<dyn PinVerifier>,
    window: Option<MaintenanceWindow>,
    maintenance: AtomicBool,
    closed: AtomicBool,
    /// Answers leave only once the ledger holds what they decided (`set_durable_answers`).
    durable: AtomicBool,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("bank_code", &self.bank_code)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the issuer's accounts and resumes from its ledger if it has one.
    pub fn open(
        config: IssuerConfig,
        accounts: Vec<AccountSpec>,
        pins: Arc<dyn PinVerifier>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IssuerError> {
        let mut book = Book::new(config.book, accounts)?;
        let ledger = Ledger::open(&config.ledger)?;
        let since = clock.now().date.add_days(-config.book.held_days());
        book.restore(ledger.restore(since)?);
        Ok(Self {
            bank_code: config.bank_code,
            book: Mutex::new(book),
            ledger,
            clock,
            pins,
            window: config.maintenance,
            maintenance: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            durable: AtomicBool::new(false),
        })
    }

    pub fn bank_code(&self) -> &str {
        &self.bank_code
    }

    pub fn now(&self) -> LocalTime {
        self.clock.now()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // The book asserts its invariants; after such a panic the state is still the last
        // consistent one, as every change is made before it is published.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts the issuer in or out of maintenance (91) regardless of its configured window.
    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.store(on, Ordering::Relaxed);
    }

    pub fn in_maintenance(&self, now: LocalTime) -> bool {
        self.maintenance.load(Ordering::Relaxed)
            || self.window.is_some_and(|w| w.contains(now.minute_of_day()))
    }

    fn system_error(now: LocalTime) -> Reply {
        Reply {
            code: ResponseCode::SystemError,
            auth_code: None,
            balance: None,
            settlement_date: now.date,
        }
    }

    fn unavailable(&self, now: LocalTime) -> Option<Reply> {
        let code = if self.closed.load(Ordering::Relaxed) {
            ResponseCode::SystemError
        } else if self.in_maintenance(now) {
            ResponseCode::IssuerUnavailable
        } else {
            return None;
        };
        Some(Reply {
            code,
            auth_code: None,
            balance: None,
            settlement_date: now.date,
        })
    }

    /// Decides a 0100/0200/0220 request.
    pub fn authorise(&self, req: &AuthRequest) -> Reply {
        let now = self.clock.now();
        if let Some(reply) = self.unavailable(now) {
            return reply;
        }
        let mut ops = Vec::with_capacity(4);
        let mut book = self.book();
        if !self.catch_up(&mut book, req.original.as_ref().map(|o| &o.rrn), now.date) {
            return Self::system_error(now);
        }
        let reply = book.authorise(req, now, self.pins.as_ref(), &mut ops);
        // Sent under the lock so the writer sees changes to one account in the order made.
        self.persist(ops);
        reply
    }

    /// Applies a 0400. During maintenance the issuer cannot reverse either (91): the switch
    /// keeps the reversal in store-and-forward until the issuer is back.
    pub fn reverse(&self, req: &ReversalRequest) -> Reply {
        let now = self.clock.now();
        if let Some(reply) = self.unavailable(now) {
            return reply;
        }
        let mut ops = Vec::with_capacity(4);
        let mut book = self.book();
        if !self.catch_up(&mut book, Some(&req.rrn), now.date) {
            return Self::system_error(now);
        }
        let reply = book.reverse(req, now, &mut ops);
        self.persist(ops);
        reply
    }

    /// Under the book's lock, before a request of `today`: lets go of the transactions older
    /// than `BookConfig::held_days` (a file ledger only; an in-memory one is for runs short
    /// enough to hold everything), once the ledger has committed their last changes, then
    /// brings back from the ledger the transaction the request names and the original it
    /// stands on (a reversal's transaction, a linked request's original) if the book has let
    /// them go. All under one lock, so nothing the request needs can leave between. A read is
    /// a lookup by key on the ledger's reading connection. `false` if the ledger could not be
    /// read: the request is answered 96 rather than taken for one about an RRN never seen (a
    /// reversal would then be recorded over the transaction it names).
    fn catch_up(&self, book: &mut Book, rrn: Option<&Rrn>, today: Date) -> bool {
        if !self.ledger.recalls() {
            return true;
        }
        if book.would_let_go(today) {
            // Once a day: what leaves memory must be in the ledger as last changed. A ledger
            // that failed a write keeps the day's old transactions in memory instead (the
            // book answers from memory, as it did before letting go), and is not asked again
            // until the next day. The wait is one commit, once a day, under the book's lock.
            if self.ledger.flush().is_ok() {
                book.let_go(today);
            } else {
                book.hold_on(today);
            }
        }
        let mut next = rrn.cloned();
        // The transaction, then the original it stands on: a chain is never longer.
        for _ in 0..2 {
            let Some(rrn) = next.take() else { break };
            next = match book.txn(&rrn) {
                Some(held) => held.original.clone(),
                None => match self.ledger.txn(&rrn) {
                    Ok(Some(record)) => {
                        let original = record.original.clone();
                        book.adopt(record);
                        original
                    }
                    Ok(None) => None,
                    Err(_) => return false,
                },
            };
        }
        true
    }

    fn persist(&self, ops: Vec<crate::book::LedgerOp>) {
        if self.ledger.write(ops).is_err() {
            // Only after `close`; later requests are refused with 96 by `unavailable`.
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Changes a card's status at run time (reported lost, frozen, ...).
    pub fn set_card_status(&self, pan: &Pan, status: CardStatus) {
        let mut ops = Vec::new();
        let mut book = self.book();
        book.set_status(pan, status, &mut ops);
        self.persist(ops);
    }

    /// (balance, holds) in fen.
    pub fn balance(&self, pan: &Pan) -> Option<(i64, i64)> {
        self.book().balance(pan)
    }

    pub fn pin_tries(&self, pan: &Pan) -> Option<u8> {
        self.book().pin_tries(pan)
    }

    pub fn knows(&self, pan: &Pan) -> bool {
        self.book().knows(pan)
    }

    /// The transaction as the issuer holds it now: in memory, no wait for the ledger, or
    /// from the ledger if the book has let it go.
    pub fn txn(&self, rrn: &Rrn) -> Option<TxnRecord> {
        let held = self.book().txn(rrn).cloned();
        held.or_else(|| self.ledger.txn(rrn).ok().flatten())
    }

    /// How many transactions the book holds in memory.
    pub fn held_transactions(&self) -> usize {
        self.book().held()
    }

    /// Durable answers: the server flushes the ledger before it sends answers, as a real
    /// issuer host records a decision before announcing it, so a crash (of this process, or
    /// of the switch sharing it) loses no approval the switch was told of. Off by default: the
    /// ledger is then write-behind, which load tests prefer.
    pub fn set_durable_answers(&self, on: bool) {
        self.durable.store(on, Ordering::Relaxed);
        self.ledger.set_linger(!on);
    }

    pub fn durable_answers(&self) -> bool {
        self.durable.load(Ordering::Relaxed)
    }

    /// Waits until every change so far is committed to the ledger.
    pub fn flush(&self) -> Result<(), IssuerError> {
        Ok(self.ledger.flush()?)
    }

    /// Every transaction the issuer approved, whatever became of it since (voided, reversed,
    /// refunded, completed), by RRN: what the audit compares with the acquirer's journal.
    pub fn approvals(&self) -> Result<Vec<TxnRecord>, IssuerError> {
        Ok(self.ledger.transactions(None, true)?)
    }

    /// The approvals of one business day (see `approvals`).
    pub fn approvals_for_day(&self, day: Date) -> Result<Vec<TxnRecord>, IssuerError> {
        Ok(self.ledger.transactions(Some(day), true)?)
    }

    /// Every transaction of a business day, declines and reversal tombstones included.
    pub fn transactions_for_day(&self, day: Date) -> Result<Vec<TxnRecord>, IssuerError> {
        Ok(self.ledger.transactions(Some(day), false)?)
    }

    /// Every posting of a business day, in order, with the balance and holds each left.
    pub fn entries_for_day(&self, day: Date) -> Result<Vec<Posting>, IssuerError> {
        Ok(self.ledger.entries_for_day(day)?)
    }

    /// Writes the clearing file of a business day (see `clearing`).
    pub fn write_clearing(&self, day: Date, out: &mut dyn Write) -> Result<usize, IssuerError> {
        let records = self.ledger.transactions(Some(day), true)?;
        clearing::write_csv(&records, out).map_err(|e| IssuerError::Clearing(e.to_string()))
    }

    /// Writes the clearing file of a business day to `path`.
    pub fn write_clearing_file(&self, day: Date, path: &Path) -> Result<usize, IssuerError> {
        let file = std::fs::File::create(path).map_err(|e| IssuerError::Clearing(e.to_string()))?;
        let mut out = std::io::BufWriter::new(file);
        let rows = self.write_clearing(day, &mut out)?;
        out.flush()
            .map_err(|e| IssuerError::Clearing(e.to_string()))?;
        Ok(rows)
    }

    /// Commits everything and stops the ledger writer; later requests are answered 96.
    pub fn close(&self) -> Result<(), IssuerError> {
        self.closed.store(true, Ordering::Relaxed);
        // Taking the lock waits out any request still applying its changes.
        let _book = self.book();
        Ok(self.ledger.close()?)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.ledger.close();
    }
}

#[cfg(test)]
mod tests {
    use super::MaintenanceWindow;

    #[test]
    fn maintenance_window_within_a_day_and_over_midnight() {
        let day = MaintenanceWindow {
            start_minute: 120,
            end_minute: 180,
        };
        assert!(!day.contains(119) && day.contains(120) && day.contains(179) && !day.contains(180));
        let night = MaintenanceWindow {
            start_minute: 23 * 60,
            end_minute: 60,
        };
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(59));
        assert!(!night.contains(60) && !night.contains(22 * 60));
        let empty = MaintenanceWindow {
            start_minute: 60,
            end_minute: 60,
        };
        assert!((0..1440).all(|m| !empty.contains(m)));
    }
}
