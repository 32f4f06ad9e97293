//! Test support: one storage test runs on each backend, SQLite in a temp dir and PostgreSQL in
//! a fresh schema of the server at `SHOUDAN_PG_URL`, so tests stay parallel and independent.
//!
//! Without `SHOUDAN_PG_URL` the PostgreSQL runs are skipped, loudly; with `SHOUDAN_REQUIRE_PG`
//! set (scripts/test sets it and provisions a server) a missing server fails the test instead.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use store::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store};

/// An open store of either kind.
pub enum Opened {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl Deref for Opened {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        match self {
            Opened::Sqlite(s) => s,
            Opened::Pg(s) => s,
        }
    }
}

impl Opened {
    pub fn close(&self) {
        match self {
            Opened::Sqlite(s) => s.close(),
            Opened::Pg(s) => s.close(),
        }
    }
}

/// Where one test's database lives; dropped, it is removed.
pub struct Db {
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL server for tests, or `None` (after saying so) when none is configured.
pub fn pg_url() -> Option<String> {
    match std::env::var("SHOUDAN_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("SHOUDAN_REQUIRE_PG").is_some() {
                panic!("SHOUDAN_REQUIRE_PG is set but SHOUDAN_PG_URL is not");
            }
            eprintln!("SKIPPED on PostgreSQL: SHOUDAN_PG_URL is not set (scripts/test sets it)");
            None
        }
    }
}

/// The test server's CA certificate and one that signed nothing there (PEM files, from
/// `SHOUDAN_PG_CA` and `SHOUDAN_PG_OTHER_CA`, which scripts/pg sets for the server it starts),
/// or `None` (after saying so) when they are not given, or when the wall clock is moved
/// (scripts/test-clock: the certificates, made at the server's start, may not be valid yet).
/// A missing pair fails the test where scripts/pg started the server (`SHOUDAN_REQUIRE_PG_TLS`).
pub fn pg_cas() -> Option<(String, String)> {
    if std::env::var_os("FAKETIME").is_some() {
        eprintln!("SKIPPED on PostgreSQL over TLS: the clock is moved (FAKETIME)");
        return None;
    }
    match (
        std::env::var("SHOUDAN_PG_CA"),
        std::env::var("SHOUDAN_PG_OTHER_CA"),
    ) {
        (Ok(ca), Ok(other)) if !ca.is_empty() && !other.is_empty() => Some((ca, other)),
        _ => {
            if std::env::var_os("SHOUDAN_REQUIRE_PG_TLS").is_some() {
                panic!(
                    "SHOUDAN_REQUIRE_PG_TLS is set but SHOUDAN_PG_CA and SHOUDAN_PG_OTHER_CA are \
                     not (scripts/pg sets them for its server's TLS)"
                );
            }
            eprintln!("SKIPPED on PostgreSQL over TLS: SHOUDAN_PG_CA is not set");
            None
        }
    }
}

/// A schema name no other test (in any test process) uses.
pub fn fresh_schema() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

impl Db {
    pub fn sqlite() -> Db {
        Db {
            dir: tempfile::tempdir().unwrap(),
            pg: None,
        }
    }

    pub fn postgres() -> Option<Db> {
        let url = pg_url()?;
        Some(Db {
            dir: tempfile::tempdir().unwrap(),
            pg: Some((url, fresh_schema())),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    pub fn pg_config(&self) -> Option<PgConfig> {
        self.pg.as_ref().map(|(url, schema)| PgConfig {
            url: url.clone(),
            schema: Some(schema.clone()),
        })
    }

    /// The SQLite journal's file (there even when the test runs on PostgreSQL).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("shoudan.db")
    }

    /// Opens (again) this test's database.
    pub fn open(&self) -> Opened {
        match self.pg_config() {
            Some(config) => Opened::Pg(PgStore::open(&config).unwrap()),
            None => {
                Opened::Sqlite(SqliteStore::open(&SqliteConfig::new(self.sqlite_path())).unwrap())
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.pg {
            let _ = PgStore::drop_schema(url, schema);
        }
    }
}

/// Runs each named `fn(&Db)` once per backend: `mod on_sqlite` and `mod on_postgres`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                super::$name(&$crate::backend::Db::sqlite());
            })+
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                if let Some(db) = $crate::backend::Db::postgres() {
                    super::$name(&db);
                }
            })+
        }
    };
}

/// As `on_both!` for `async fn(&Db)` tests.
#[macro_export]
macro_rules! on_both_async {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&$crate::backend::Db::sqlite()).await;
            })+
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(db) = $crate::backend::Db::postgres() {
                    super::$name(&db).await;
                }
            })+
        }
    };
}
