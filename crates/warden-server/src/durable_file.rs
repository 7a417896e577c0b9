//! Files the server writes whole beside its database (the checkpoint note, the public keys, the
//! lock's pid): written aside, synced, renamed over the old one and the directory synced, so a
//! crash leaves the old file or the new one, never a torn one; with the mode given, whatever
//! the umask.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Replaces `path` with `bytes`, made with `mode`.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = std::path::PathBuf::from(aside);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&aside)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&aside, path))
        .and_then(|()| match path.parent() {
            Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
            None => Ok(()),
        });
    written.map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("note");
        replace(&path, b"one", 0o644).unwrap();
        replace(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(replace(&dir.path().join("missing/note"), b"x", 0o644).is_err());
    }
}
