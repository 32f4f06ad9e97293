//! Files the commands keep beside a data directory's databases (the demo's key store, a
//! terminal's next trace number), written so that a crash never leaves half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` whole or not at all: a new file beside it (created with `mode`,
/// never through a link planted at its name: one there is removed, not followed), synced, then
/// renamed over the old, so a crash leaves the old file or the new one.
pub fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    let temporary = path.with_file_name(name);
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
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
        let temporary = dir.path().join("hsm.store.new");
        std::os::unix::fs::symlink(&victim, &temporary).expect("link");

        write_whole(&path, b"new keys", 0o600).expect("written");

        assert_eq!(std::fs::read(&path).expect("read"), b"new keys");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temporary.exists());
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
