//! The slice of rusqlite's API that the shared statement code uses, over a PostgreSQL client:
//! parameters and columns pass through rusqlite's own `ToSql`/`FromSql` conversions.
//!
//! Parameters are encoded for the type PostgreSQL inferred for each placeholder (an integer
//! bound to an `INTEGER` context goes as int4, to `BOOLEAN` as a bool), and columns of any
//! integer, text, byte, boolean or numeric type decode to rusqlite values, so the row mappers
//! written for SQLite work unchanged. `?N` placeholders become `$N`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use tokio_postgres::types::{
    FromSql as PgFromSql, IsNull, Kind, ToSql as PgToSql, Type, to_sql_checked,
};

use crate::error::StoreError;

pub use rusqlite::{Error, OptionalExtension, Result, ToSql, params};

/// The names the shared code imports from `rusqlite::types`. The text-enum conversions it
/// defines are rusqlite's already; the copies generated for this backend implement these
/// stand-in traits instead, which nothing calls.
#[allow(dead_code)]
pub mod types {
    pub use rusqlite::types::{FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};

    pub trait ToSql {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>>;
    }

    pub trait FromSql: Sized {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self>;
    }
}

/// Prepared statements kept per connection at most; the store uses a few dozen.
const STATEMENT_CACHE_MAX: usize = 512;
/// Pipelined statements in flight at most: past it, their answers are read before the next
/// is sent.
const PIPELINE_DEPTH_MAX: usize = 1_024;
/// Attempts at typing a statement's uninferable placeholders before giving up.
const PREPARE_GUESSES_MAX: usize = 16;

/// A PostgreSQL failure carried through rusqlite's error type, recovered by
/// `StoreError::from(rusqlite::Error)`.
#[derive(Debug)]
pub struct Carried(pub StoreError);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for Carried {}

pub fn carry(error: StoreError) -> Error {
    Error::ToSqlConversionFailure(Box::new(Carried(error)))
}

/// Classifies a PostgreSQL error as the store's errors do for SQLite.
pub fn store_error(error: &tokio_postgres::Error) -> StoreError {
    // The driver's own text for a server error is only "db error": name the server's.
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => with_causes(error),
    };
    let code = error.code().map(|c| c.code().to_owned());
    match code.as_deref() {
        // integrity_constraint_violation class (unique, foreign key, check, not null)
        Some(c) if c.starts_with("23") => StoreError::Constraint { message },
        // disk_full, insufficient_resources
        Some("53100" | "53000") => StoreError::Full { message },
        _ => StoreError::Backend { message },
    }
}

/// The driver's text for an error followed by its causes' ("error connecting to server:
/// Connection refused", "error performing TLS handshake: invalid peer certificate: ..."): its
/// own names only the kind. A connection's causes quote no part of the connection string; a
/// parse error's name an option it does not know (`client_config` leaves those out of a URL
/// holding a password).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn pg(error: tokio_postgres::Error) -> Error {
    carry(store_error(&error))
}

/// A pipelined statement's answer, not yet read.
type Answer = Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send>>;

/// A statement sent while pipelining.
struct Sent {
    answer: Answer,
    /// Sent by `execute_any`: any row count is as granted.
    any_count: bool,
}

/// A connection with the rusqlite-style calls the shared code makes.
pub struct Connection {
    client: Arc<tokio_postgres::Client>,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// While pipelining (see [`Connection::start_pipeline`]).
    pipeline: RefCell<Option<Pipeline>>,
}

struct Pipeline {
    /// The statements sent and not yet answered, in the order sent.
    sent: Vec<Sent>,
    /// The first answer not as taken for granted, if any. Kept until the finish, so that code
    /// that goes on after a failed call cannot get a group committed.
    unexpected: Option<Unexpected>,
}

/// The first pipelined answer that was not as taken for granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unexpected {
    /// A row count other than one: the statements after it ran on a state that statement-by-
    /// statement execution, which sees the count, might not have had.
    Count,
    /// An error, every answer before it as granted: statement-by-statement execution would
    /// have met the same error at the same statement. `lock_timeout` when it was the lock
    /// timeout (55P03): a row another session holds, which the writer's careful run then waits
    /// for only briefly.
    Error { lock_timeout: bool },
}

impl Connection {
    pub fn new(client: tokio_postgres::Client) -> Self {
        Connection {
            client: Arc::new(client),
            statements: RefCell::new(HashMap::new()),
            pipeline: RefCell::new(None),
        }
    }

    /// From here until [`Connection::finish_pipeline`], `execute` sends its statement without
    /// waiting for the answer and takes one changed row for granted (any count for
    /// `execute_any`, whose caller does not read it), so a group's writes reach the server back
    /// to back instead of one round trip each. The answers are read, in order, before anything
    /// that waits for the server (a query, a prepare, a batch such as COMMIT) and at the
    /// finish; an error or a count not as granted fails that call. The writer
    /// commits a pipelined group only if the finish succeeds, that is only if every statement
    /// answered what was taken for granted, so what it commits is what running the statements
    /// one at a time would have; otherwise it rolls back and runs the group again (see
    /// `commit_group` in pg.rs).
    ///
    /// Start it inside a transaction whose BEGIN has been answered: each pipelined statement is
    /// its own protocol exchange, so had a pipelined BEGIN failed, the statements after it would
    /// each have committed on their own.
    pub fn start_pipeline(&self) {
        *self.pipeline.borrow_mut() = Some(Pipeline {
            sent: Vec::new(),
            unexpected: None,
        });
    }

    /// Hands a pipelined statement to the connection task (the first poll does: it sends
    /// requests in the order they were handed over) and keeps it for `settle`.
    fn send(&self, mut sent: Sent) -> Result<()> {
        let waker = thread_waker();
        match sent.answer.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(answer) => self.granted(answer, sent.any_count),
            Poll::Pending => {
                let depth = match self.pipeline.borrow_mut().as_mut() {
                    Some(pipeline) => {
                        pipeline.sent.push(sent);
                        pipeline.sent.len()
                    }
                    None => 0,
                };
                // A job of many statements (a day's clearing lines) does not keep them all
                // in flight, and their answers in memory, until its COMMIT.
                if depth >= PIPELINE_DEPTH_MAX {
                    return self.settle();
                }
                Ok(())
            }
        }
    }

    /// Reads the answers still outstanding and ends pipelining; fails with the first answer,
    /// read now or before, that was not what was taken for granted.
    pub fn finish_pipeline(&self) -> std::result::Result<(), Unexpected> {
        // A failure here is recorded in the pipeline, read just below.
        let _ = self.settle();
        match self.pipeline.borrow_mut().take() {
            Some(Pipeline {
                unexpected: Some(unexpected),
                ..
            }) => Err(unexpected),
            _ => Ok(()),
        }
    }

    /// Reads the pipelined statements' answers, in order; at the first one not taken for
    /// granted, the rest are dropped unread (the server still runs them, and the writer rolls
    /// the transaction back).
    fn settle(&self) -> Result<()> {
        let sent = match self.pipeline.borrow_mut().as_mut() {
            Some(pipeline) => std::mem::take(&mut pipeline.sent),
            None => return Ok(()),
        };
        for sent in sent {
            self.granted(block_on(sent.answer), sent.any_count)?;
        }
        Ok(())
    }

    /// A pipelined statement's answer as `execute` took it for granted: one row changed, or
    /// any count for `execute_any`. A failure marks the pipeline failed.
    fn granted(
        &self,
        answer: std::result::Result<u64, tokio_postgres::Error>,
        any_count: bool,
    ) -> Result<()> {
        let (result, kind) = match answer {
            Ok(1) => return Ok(()),
            Ok(_) if any_count => return Ok(()),
            Ok(changed) => (
                Err(carry(StoreError::Backend {
                    message: format!("a pipelined statement changed {changed} rows, not 1"),
                })),
                Unexpected::Count,
            ),
            Err(error) => {
                let lock_timeout =
                    error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
                (Err(pg(error)), Unexpected::Error { lock_timeout })
            }
        };
        if let Some(pipeline) = self.pipeline.borrow_mut().as_mut() {
            pipeline.unexpected.get_or_insert(kind);
        }
        result
    }

    fn pipelining(&self) -> bool {
        self.pipeline.borrow().is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(Statement {
                conn: self,
                statement: statement.clone(),
            });
        }
        self.settle()?;
        let statement = self.prepare_server_side(&placeholders(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(sql.to_owned(), statement.clone());
        Ok(Statement {
            conn: self,
            statement,
        })
    }

    /// Prepares a statement, typing the placeholders PostgreSQL cannot infer on its own
    /// (`?2 IS NULL OR value_date <= ?2` with `?2` seen first by `IS NULL`): such a parameter
    /// is tried as text, then as a 64-bit integer, the only kinds the schema uses in them.
    fn prepare_server_side(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        const CANDIDATES: [Type; 2] = [Type::TEXT, Type::INT8];
        let unspecified = || Type::new(String::new(), 0, Kind::Simple, String::new());
        let mut types: Vec<Type> = Vec::new();
        // (parameter index, candidate index) of the guess being tried.
        let mut guess: Option<(usize, usize)> = None;
        for _ in 0..PREPARE_GUESSES_MAX {
            let error = match block_on(self.client.prepare_typed(sql, &types)) {
                Ok(statement) => return Ok(statement),
                Err(error) => error,
            };
            let code = error.code().map(|c| c.code().to_owned());
            let undetermined = error
                .as_db_error()
                .filter(|_| code.as_deref() == Some("42P08"))
                .and_then(|db| db.message().rsplit('$').next()?.parse::<usize>().ok());
            let next = match (undetermined, guess) {
                (Some(n), _) if n >= 1 => (n - 1, 0),
                // The guess made the statement ill-typed: try the next kind for it.
                (None, Some((index, candidate))) if candidate + 1 < CANDIDATES.len() => {
                    (index, candidate + 1)
                }
                _ => return Err(pg(error)),
            };
            while types.len() <= next.0 {
                types.push(unspecified());
            }
            if let (Some(slot), Some(kind)) = (types.get_mut(next.0), CANDIDATES.get(next.1)) {
                *slot = kind.clone();
            }
            guess = Some(next);
        }
        Err(carry(StoreError::Backend {
            message: format!("cannot type the parameters of {sql}"),
        }))
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P: Params, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.settle()?;
        block_on(self.client.batch_execute(sql)).map_err(pg)
    }
}

pub struct Statement<'c> {
    conn: &'c Connection,
    statement: tokio_postgres::Statement,
}

impl Statement<'_> {
    fn run(&mut self, params: &[Value]) -> Result<Vec<tokio_postgres::Row>> {
        self.conn.settle()?;
        let refs: Vec<&(dyn PgToSql + Sync)> =
            params.iter().map(|p| p as &(dyn PgToSql + Sync)).collect();
        block_on(self.conn.client.query(&self.statement, &refs)).map_err(pg)
    }

    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values()?;
        if self.conn.pipelining() {
            self.send(values, false)?;
            return Ok(1);
        }
        let refs: Vec<&(dyn PgToSql + Sync)> =
            values.iter().map(|p| p as &(dyn PgToSql + Sync)).collect();
        let changed = block_on(self.conn.client.execute(&self.statement, &refs)).map_err(pg)?;
        usize::try_from(changed).map_err(|_| {
            carry(StoreError::Backend {
                message: format!("{changed} rows changed"),
            })
        })
    }

    /// Pipelined: hands the statement to the connection with what its answer may be.
    fn send(&self, values: Vec<Value>, any_count: bool) -> Result<()> {
        let client = Arc::clone(&self.conn.client);
        let statement = self.statement.clone();
        self.conn.send(Sent {
            answer: Box::pin(async move { client.execute_raw(&statement, values).await }),
            any_count,
        })
    }

    pub fn query_row<T, P: Params, F>(&mut self, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let rows = self.run(&params.values()?)?;
        match rows.first() {
            Some(row) => f(&Row { row }),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    pub fn query_map<T, P: Params, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let rows = self.run(&params.values()?)?;
        let mapped: Vec<Result<T>> = rows.iter().map(|row| f(&Row { row })).collect();
        Ok(mapped.into_iter())
    }
}

impl<P: Params> crate::group::ExecuteAny<P> for Statement<'_> {
    type Error = Error;

    fn execute_any(&mut self, params: P) -> Result<()> {
        if self.conn.pipelining() {
            return self.send(params.values()?, true);
        }
        self.execute(params).map(drop)
    }
}

/// A result row; columns convert with rusqlite's `FromSql`.
pub struct Row<'r> {
    row: &'r tokio_postgres::Row,
}

impl Row<'_> {
    pub fn get<I: ColumnIndex, T: rusqlite::types::FromSql>(&self, index: I) -> Result<T> {
        let index = index.index(self.row)?;
        let value: Value = self.row.try_get(index).map_err(pg)?;
        let value_ref = value.as_ref();
        T::column_result(value_ref).map_err(|e| match e {
            rusqlite::types::FromSqlError::InvalidType => {
                Error::InvalidColumnType(index, String::new(), value_ref.data_type())
            }
            rusqlite::types::FromSqlError::OutOfRange(i) => {
                Error::IntegralValueOutOfRange(index, i)
            }
            other => Error::FromSqlConversionFailure(index, value_ref.data_type(), Box::new(other)),
        })
    }
}

pub trait ColumnIndex {
    fn index(&self, row: &tokio_postgres::Row) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn index(&self, _: &tokio_postgres::Row) -> Result<usize> {
        Ok(*self)
    }
}

impl ColumnIndex for &str {
    fn index(&self, row: &tokio_postgres::Row) -> Result<usize> {
        row.columns()
            .iter()
            .position(|c| c.name() == *self)
            .ok_or_else(|| Error::InvalidColumnName((*self).to_owned()))
    }
}

/// Statement parameters, as rusqlite accepts them.
pub trait Params {
    fn values(&self) -> Result<Vec<Value>>;
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Result<Vec<Value>> {
        self.iter().map(|p| Value::of(*p)).collect()
    }
}

impl<const N: usize> Params for &[&dyn ToSql; N] {
    fn values(&self) -> Result<Vec<Value>> {
        self.iter().map(|p| Value::of(*p)).collect()
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn values(&self) -> Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

macro_rules! array_params {
    ($($n:literal)+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Result<Vec<Value>> {
                self.iter().map(|p| Value::of(p)).collect()
            }
        }
    )+};
}

array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// One owned value, either way.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn of(param: &dyn ToSql) -> Result<Value> {
        use rusqlite::types::{ToSqlOutput, Value as Owned, ValueRef};
        let from_ref = |v: ValueRef<'_>| match v {
            ValueRef::Null => Ok(Value::Null),
            ValueRef::Integer(i) => Ok(Value::Integer(i)),
            ValueRef::Real(r) => Ok(Value::Real(r)),
            ValueRef::Text(t) => String::from_utf8(t.to_vec())
                .map(Value::Text)
                .map_err(|e| Error::ToSqlConversionFailure(Box::new(e))),
            ValueRef::Blob(b) => Ok(Value::Blob(b.to_vec())),
        };
        match param.to_sql()? {
            ToSqlOutput::Borrowed(v) => from_ref(v),
            ToSqlOutput::Owned(Owned::Null) => Ok(Value::Null),
            ToSqlOutput::Owned(Owned::Integer(i)) => Ok(Value::Integer(i)),
            ToSqlOutput::Owned(Owned::Real(r)) => Ok(Value::Real(r)),
            ToSqlOutput::Owned(Owned::Text(t)) => Ok(Value::Text(t)),
            ToSqlOutput::Owned(Owned::Blob(b)) => Ok(Value::Blob(b)),
            _ => Err(carry(StoreError::Backend {
                message: "unsupported parameter kind for PostgreSQL".to_owned(),
            })),
        }
    }

    fn as_ref(&self) -> rusqlite::types::ValueRef<'_> {
        use rusqlite::types::ValueRef;
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

/// The error names the kind of value, never the value: it may be a note, a name or a sealed
/// card number, and errors reach logs and answers.
fn mismatch(value: &Value, ty: &Type) -> BoxError {
    let kind = match value {
        Value::Null => "null",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("cannot send {kind} as PostgreSQL {ty}").into()
}

impl PgToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => PgToSql::to_sql(i, ty, out),
            (Value::Integer(i), &Type::INT4) => PgToSql::to_sql(&i32::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::INT2) => PgToSql::to_sql(&i16::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::BOOL) => PgToSql::to_sql(&(*i != 0), ty, out),
            (Value::Integer(i), &Type::FLOAT8) => {
                PgToSql::to_sql(&format!("{i}").parse::<f64>()?, ty, out)
            }
            (Value::Integer(i), &Type::TEXT | &Type::VARCHAR | &Type::UNKNOWN) => {
                PgToSql::to_sql(&i.to_string(), &Type::TEXT, out)
            }
            (Value::Real(r), &Type::FLOAT8) => PgToSql::to_sql(r, ty, out),
            (Value::Text(t), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                PgToSql::to_sql(&t.as_str(), ty, out)
            }
            (Value::Text(t), &Type::UNKNOWN) => PgToSql::to_sql(&t.as_str(), &Type::TEXT, out),
            (Value::Blob(b), &Type::BYTEA) => PgToSql::to_sql(&b.as_slice(), ty, out),
            _ => Err(mismatch(self, ty)),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> PgFromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Integer(numeric_to_i64(raw)?),
            _ => Value::Text(String::from_sql(&Type::TEXT, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes a whole-number NUMERIC (what `SUM` over BIGINT returns) in binary form: a header of
/// digit count, weight, sign and scale, then base-10000 digits.
fn numeric_to_i64(raw: &[u8]) -> std::result::Result<i64, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("short NUMERIC")?;
        Ok(i16::from_be_bytes([
            *bytes.first().ok_or("short NUMERIC")?,
            *bytes.get(1).ok_or("short NUMERIC")?,
        ]))
    };
    let ndigits = usize::try_from(word(0)?)?;
    let weight = i32::from(word(1)?);
    let sign = u16::from_be_bytes(word(2)?.to_be_bytes());
    let mut value: i64 = 0;
    for i in 0..ndigits {
        let position = i32::try_from(i)?;
        if position > weight {
            // Fractional digits: a sum of integers has none that are not zero.
            if word(4 + i)? != 0 {
                return Err("NUMERIC with a fraction where an integer was expected".into());
            }
            continue;
        }
        let digit = i64::from(word(4 + i)?);
        value = value
            .checked_mul(10_000)
            .and_then(|v| v.checked_add(digit))
            .ok_or("NUMERIC out of range")?;
    }
    // Trailing zero digit groups are not sent: scale up to the weight.
    let sent = i32::try_from(ndigits)?;
    for _ in sent..=weight {
        value = value.checked_mul(10_000).ok_or("NUMERIC out of range")?;
    }
    match sign {
        0x0000 => Ok(value),
        0x4000 => value
            .checked_neg()
            .ok_or_else(|| "NUMERIC out of range".into()),
        _ => Err("NUMERIC NaN or infinity".into()),
    }
}

/// Waits for a future on the calling thread. The client's futures only exchange messages with
/// the connection task, which runs on the store's own runtime; so unlike a nested tokio
/// `block_on`, this works on any thread, inside an async runtime too (it blocks that thread,
/// as a SQLite read does).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = thread_waker();
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

/// A waker that unparks the calling thread.
fn thread_waker() -> Waker {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    Waker::from(Arc::new(Unpark(std::thread::current())))
}

/// Rewrites SQLite's `?N` (and bare `?`) placeholders as PostgreSQL's `$N`, outside quotes,
/// and SQLite's `rowid` as PostgreSQL's `ctid`: the last tie-break of the two append-only
/// tables without an id of their own, `events` and `merchant_reviews`, for their rows written
/// before `seq` (`crate::next_write_seq`), whose order `ctid` does not keep (a row moved by an
/// update or a table rewrite lies elsewhere).
pub fn placeholders(sql: &str) -> String {
    let sql = rowid_as_ctid(sql);
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut next_bare = 1u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next_bare.to_string());
                    next_bare += 1;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn rowid_as_ctid(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("rowid") {
        let (before, after) = rest.split_at(at);
        let word_before = before
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let tail = after.get(5..).unwrap_or_default();
        let word_after = tail
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(before);
        out.push_str(if word_before || word_after {
            "rowid"
        } else {
            "ctid"
        });
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::group::ExecuteAny;

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_kind_not_quoted() {
        let error = mismatch(&Value::Text("6222020200112345679".into()), &Type::INT4);
        let text = error.to_string();
        assert!(text.contains("text") && text.contains("int4"), "{text}");
        assert!(!text.contains("6222020200112345679"), "{text}");
    }

    /// A connection to the server scripts/test provides (`SHOUDAN_PG_URL`), or `None`, said.
    pub(crate) fn connect() -> Option<(tokio::runtime::Runtime, Connection)> {
        let url = match std::env::var("SHOUDAN_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var_os("SHOUDAN_REQUIRE_PG").is_none(),
                    "SHOUDAN_REQUIRE_PG is set but SHOUDAN_PG_URL is not"
                );
                eprintln!("SKIPPED on PostgreSQL: SHOUDAN_PG_URL is not set");
                return None;
            }
        };
        let runtime = crate::pg::runtime().unwrap();
        let conn = crate::pg::connect(runtime.handle(), &crate::pg::PgConfig::new(url)).unwrap();
        Some((runtime, conn))
    }

    fn count(conn: &Connection) -> Result<i64> {
        conn.query_row("SELECT COUNT(*) FROM pipelined", params![], |r| r.get(0))
    }

    /// An answer not as taken for granted fails the call that reads it and, even if the code
    /// that made the call goes on regardless, the finish: the writer never commits that group.
    #[test]
    fn an_answer_not_as_granted_fails_the_finish_whatever_the_caller_did() {
        let Some((_runtime, conn)) = connect() else {
            return;
        };
        conn.execute_batch("CREATE TEMP TABLE pipelined (id BIGINT PRIMARY KEY)")
            .unwrap();

        conn.execute_batch("BEGIN").unwrap();
        conn.start_pipeline();
        let insert = "INSERT INTO pipelined (id) VALUES (?1)";
        assert_eq!(conn.execute(insert, params![1_i64]).unwrap(), 1);
        // Changes no row, yet answers 1 at once; unless the answer was in before `execute`
        // looked (a busy machine can pause the thread between sending and looking), in which
        // case that call fails.
        let touch = "UPDATE pipelined SET id = id WHERE id = ?1";
        if conn.execute(touch, params![2_i64]).is_ok() {
            assert!(count(&conn).is_err(), "the read settles the pipeline");
        }
        assert_eq!(conn.finish_pipeline(), Err(Unexpected::Count));
        conn.execute_batch("ROLLBACK").unwrap();

        // A duplicate key: the error reaches the finish too.
        conn.execute_batch("BEGIN").unwrap();
        conn.start_pipeline();
        assert_eq!(conn.execute(insert, params![5_i64]).unwrap(), 1);
        // Ok at once, or the error itself if its answer was already in.
        let _ = conn.execute(insert, params![5_i64]);
        assert_eq!(
            conn.finish_pipeline(),
            Err(Unexpected::Error {
                lock_timeout: false
            })
        );
        conn.execute_batch("ROLLBACK").unwrap();

        // Sent by `execute_any`, a count of none is as granted.
        conn.execute_batch("BEGIN").unwrap();
        conn.start_pipeline();
        conn.prepare_cached(insert)
            .unwrap()
            .execute_any(params![6_i64])
            .unwrap();
        conn.prepare_cached(touch)
            .unwrap()
            .execute_any(params![7_i64])
            .unwrap();
        assert_eq!(conn.finish_pipeline(), Ok(()));
        conn.execute_batch("ROLLBACK").unwrap();

        // Every answer as granted: reads see the writes sent before them, in order.
        conn.execute_batch("BEGIN").unwrap();
        conn.start_pipeline();
        for id in 10..20_i64 {
            conn.execute(insert, params![id]).unwrap();
        }
        conn.execute(touch, params![10_i64]).unwrap();
        assert_eq!(count(&conn).unwrap(), 10);
        assert_eq!(conn.finish_pipeline(), Ok(()));
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(count(&conn).unwrap(), 10);
    }
}
