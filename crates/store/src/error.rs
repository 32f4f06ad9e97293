//! Store errors. They are `Clone` because one failed group commit fails every waiter in it.

/// Why a read or write did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write queue is at `WRITE_QUEUE_MAX`: shed load rather than wait.
    #[error("write queue full")]
    QueueFull,
    /// The writer thread has stopped (shutdown or a fatal error).
    #[error("journal writer stopped")]
    WriterGone,
    /// The disk or the database's page quota is full.
    #[error("storage full: {message}")]
    Full { message: String },
    /// A uniqueness or reference rule refused the write (e.g. an RRN used twice).
    #[error("constraint violated: {message}")]
    Constraint { message: String },
    /// The journal refused a void, completion or refund for what its original already has
    /// (see [`LinkRefusal`]).
    #[error("linked transaction refused: {0}")]
    LinkRefused(LinkRefusal),
    /// Another node has journalled a request under the same terminal key in the same batch
    /// ([`crate::Record::ClaimKey`]): row `id`, whose answer is this request's.
    #[error("request key already taken by transaction {id}")]
    KeyTaken { id: i64 },
    /// A request and its reversal crossed between nodes sharing one journal
    /// ([`crate::Record::ClaimKey`] with `alone`): row `id`, the other of the two, was
    /// journalled first. Nothing of this job was written.
    #[error("request and its reversal crossed: transaction {id} came first")]
    KeyCrossed { id: i64 },
    /// Any other failure of the database engine.
    #[error("database: {message}")]
    Backend { message: String },
    /// A stored value that no longer parses.
    #[error("corrupt {what} in database: {value:?}")]
    Corrupt { what: &'static str, value: String },
    /// The database was written by a newer schema than this build knows.
    #[error("database schema version {found} is newer than this build's {known}")]
    SchemaTooNew { found: i64, known: i64 },
}

/// Why the journal refused a void, completion or refund its original cannot take. Several
/// nodes share one journal, and each checks only what it holds; the journal has it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    /// The original is not approved in the journal: voided, completed, reversed since.
    #[error("the original is no longer approved")]
    NotApproved,
    /// A void or completion of the original is approved or in flight, or (for a void) a
    /// refund of it is.
    #[error("the original is taken by another void, completion or refund")]
    Taken,
    /// Refunds approved or in flight, with this one, would exceed the original's amount.
    #[error("refunds would exceed the original's amount")]
    ExceedsAmount,
    /// Refused only for a reversal the issuer has not yet acknowledged (it may have acted
    /// on the request): of a void, completion or refund of the original, or of the original
    /// itself. To be tried again later.
    #[error("a reversal of the original, or of another request on it, awaits the issuer")]
    ReversalPending,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        // A PostgreSQL failure passed through the rusqlite-shaped shim keeps its class.
        if let rusqlite::Error::ToSqlConversionFailure(inner) = &error
            && let Some(carried) = inner.downcast_ref::<crate::pg::shim::Carried>()
        {
            return carried.0.clone();
        }
        let message = error.to_string();
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full { message },
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Constraint { message },
            _ => StoreError::Backend { message },
        }
    }
}
