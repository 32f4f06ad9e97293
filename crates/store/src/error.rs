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

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        // A PostgreSQL failure passed through the rusqlite-shaped shim keeps its class.
        if let rusqlite::Error::ToSqlConversionFailure(inner) = &error {
            if let Some(carried) = inner.downcast_ref::<crate::pg::shim::Carried>() {
                return carried.0.clone();
            }
        }
        let message = error.to_string();
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full { message },
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Constraint { message },
            _ => StoreError::Backend { message },
        }
    }
}
