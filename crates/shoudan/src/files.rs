//! Files the commands keep beside a data directory's databases (the demo's key store, a
//! terminal's next trace number), written so that a crash never leaves half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files written by this process, told apart.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` whole or not at all: a new file beside it, of its own name (two
/// writers at once never share one), created with `mode` and never through a link planted at
/// its name (one there is removed, not followed), synced, renamed over the old, and the
/// directory synced, so a crash or a power cut leaves the old file or the new one.
pub fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".new.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = path.with_file_name(name);
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
}

/// The permission bits of `path` (as `0o644`) when its group or others have any access to
/// it, `None` when only its owner has: keys and data directories must be the owner's.
pub fn open_to_others(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    Ok((mode & 0o077 != 0).then_some(mode & 0o777))
}

/// A temporary data directory only its owner may read (the bench's own demo environment):
/// it will hold keys, sealed card numbers and password hashes.
pub fn private_temp_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("shoudan-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

/// Takes the lock that says a node runs on the SQLite journal at `db` (`<db>.node-lock`, beside
/// it), held until the returned file is dropped; or says that another holds it. Two nodes on
/// one SQLite file would share a node id's place: each start takes the other's requests in
/// flight for its own, times them out and reverses them. (On PostgreSQL nodes claim their
/// place in the database: `PgStore::claim_node`.)
pub fn lock_sqlite_journal(db: &Path) -> Result<std::fs::File, String> {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".node-lock");
    let path = db.with_file_name(name);
    try_lock(&path, || {
        format!(
            "the journal {} is in use by another node (a `shoudan serve` or `demo` holds {}): \
             stop it first",
            db.display(),
            path.display()
        )
    })
}

/// Takes an exclusive lock on the file at `path` (made, the owner's alone, if missing), held
/// until the returned file is dropped; `in_use` says why not when another process holds it.
pub fn try_lock(path: &Path, in_use: impl FnOnce() -> String) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use()),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::write_whole;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_its_mode_and_ignores_a_planted_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hsm.store");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").expect("victim");
        std::fs::write(&path, b"old").expect("old store");
        // Links planted at the next temporary names this process would use.
        let next = super::WRITES.load(std::sync::atomic::Ordering::Relaxed);
        let planted: Vec<_> = (next..next + 8)
            .map(|n| {
                let name = format!("hsm.store.new.{}.{n}", std::process::id());
                let link = dir.path().join(name);
                std::os::unix::fs::symlink(&victim, &link).expect("link");
                link
            })
            .collect();

        write_whole(&path, b"new keys", 0o600).expect("written");

        assert_eq!(std::fs::read(&path).expect("read"), b"new keys");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hsm.store.new") && !planted.iter().any(|p| p.ends_with(n)))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn writers_at_once_each_leave_a_whole_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("10000001.stan");
        std::thread::scope(|scope| {
            for writer in 0..8_u32 {
                let path = &path;
                scope.spawn(move || {
                    for n in 0..50_u32 {
                        let text = format!("{:06}", writer * 1000 + n + 1);
                        write_whole(path, text.as_bytes(), 0o600).expect("written");
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 6, "{text:?}");
        assert!(text.parse::<u32>().is_ok(), "{text:?}");
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(files, 1, "temporary files left");
    }

    #[test]
    fn a_private_temp_dir_is_its_owners_alone() {
        let dir = super::private_temp_dir().expect("temp dir");
        let mode = std::fs::metadata(dir.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
