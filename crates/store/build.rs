//! Derives the PostgreSQL backend's statements from the SQLite backend's source, so the SQL text
//! (portable by rule, see src/schema.rs) exists once: src/pg.rs includes the generated files.
//!
//! The SQLite code is written against a small part of rusqlite's API (`prepare_cached`,
//! `execute`, `query_row`, `query_map`, `Row::get`, `params!`) and `execute_any`
//! (`group::ExecuteAny`, for a write whose count it does not read); src/pg_shim.rs offers the
//! same API over a PostgreSQL connection. Generation only renames: `rusqlite::` becomes the shim,
//! `SqliteStore` becomes `PgStore`, `sqlite_<area>` becomes `pg_<area>`. Left out: the SQLite
//! claim of reversals (PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, in src/pg.rs) and the
//! SQLite-only read-only opener.

use std::error::Error;
use std::fs;
use std::path::Path;

/// The area files whose statements the PostgreSQL backend shares.
const AREAS: &[&str] = &["resolve", "risk", "settlement", "web"];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = std::env::var("OUT_DIR")?;
    let out = Path::new(&out_dir);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/sqlite.rs");
    let core = fs::read_to_string("src/sqlite.rs")?;
    let lines: Vec<&str> = core.lines().collect();
    let mut generated = String::new();
    // The trait implementation: every read and the queueing of writes.
    let start = find(&lines, 0, |l| l.starts_with("impl Store for SqliteStore"))?;
    let end = block_end(&lines, start)?;
    generated.push_str(&lines.get(start..=end).unwrap_or_default().join("\n"));
    generated.push('\n');
    // Everything from the write helpers on, less the SQLite claim.
    let helpers = find(&lines, end, |l| l.starts_with("fn expect_one("))?;
    let claim = find(&lines, helpers, |l| l.starts_with("fn claim("))?;
    let claim_end = block_end(&lines, claim)?;
    generated.push_str(&lines.get(helpers..claim).unwrap_or_default().join("\n"));
    generated.push('\n');
    generated.push_str(&lines.get(claim_end + 1..).unwrap_or_default().join("\n"));
    fs::write(out.join("pg_core.rs"), translate(&generated))?;

    for area in AREAS {
        let path = format!("src/sqlite_{area}.rs");
        println!("cargo:rerun-if-changed={path}");
        let source = fs::read_to_string(&path)?;
        let kept = drop_sqlite_only(&source)?;
        fs::write(out.join(format!("pg_{area}.rs")), translate(&kept))?;
    }
    Ok(())
}

fn find(lines: &[&str], from: usize, what: impl Fn(&str) -> bool) -> Result<usize, Box<dyn Error>> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| what(l))
        .map(|(i, _)| i)
        .ok_or_else(|| "build.rs: src/sqlite.rs no longer has the expected shape".into())
}

/// The closing line of a top-level item (rustfmt puts it alone at column 0).
fn block_end(lines: &[&str], start: usize) -> Result<usize, Box<dyn Error>> {
    find(lines, start, |l| l == "}")
}

/// Removes top-level `impl SqliteStore` blocks that open SQLite files directly.
fn drop_sqlite_only(source: &str) -> Result<String, Box<dyn Error>> {
    let lines: Vec<&str> = source.lines().collect();
    let mut kept = Vec::with_capacity(lines.len());
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        if line.starts_with("impl SqliteStore") {
            let end = block_end(&lines, i)?;
            let block = lines.get(i..=end).unwrap_or_default();
            if block.iter().any(|l| l.contains("fn open_read_only")) {
                i = end + 1;
                continue;
            }
        }
        kept.push(*line);
        i += 1;
    }
    Ok(kept.join("\n"))
}

fn translate(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        if line.starts_with("//!") {
            continue;
        }
        let line = line
            .replace("rusqlite::", "crate::pg::shim::")
            .replace("SqliteStore", "PgStore")
            .replace("sqlite_", "pg_");
        out.push_str(&line);
        out.push('\n');
    }
    out
}
