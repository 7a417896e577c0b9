//! Files the server writes whole beside its database (the checkpoint note, the public keys, the
//! lock's pid, the example policy): written aside, synced, renamed over the old one and the
//! directory synced, so a crash leaves the old file or the new one, never a torn one; with the
//! mode given, whatever the umask.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`, made with `mode`.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let aside = aside(path);
    let written = write_synced(&aside, bytes, mode)
        .and_then(|()| std::fs::rename(&aside, path))
        .and_then(|()| sync_parent(path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// Makes directory `path`, which must not exist, holding `files` (each a path inside it and
/// its contents), whole or not at all: its directories made with `dir_mode`, its files with
/// `file_mode`. A crash while it is written leaves `<path>.new` beside it, never `path`: the
/// next call writes that one anew.
pub(crate) fn create_dir(
    path: &Path,
    files: &[(String, String)],
    dir_mode: u32,
    file_mode: u32,
) -> anyhow::Result<()> {
    let aside = aside(path);
    let written = write_dir(&aside, files, dir_mode, file_mode)
        .and_then(|()| std::fs::rename(&aside, path))
        .and_then(|()| sync_parent(path));
    written.map_err(|e| {
        let _ = std::fs::remove_dir_all(&aside);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// Where `path` is written before it is renamed into place.
fn aside(path: &Path) -> PathBuf {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    PathBuf::from(aside)
}

/// Writes directory `dir` afresh with `files`, each file and directory synced.
fn write_dir(
    dir: &Path,
    files: &[(String, String)],
    dir_mode: u32,
    file_mode: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::DirBuilder::new().mode(dir_mode).create(dir)?;
    let mut dirs = vec![dir.to_owned()];
    for (name, text) in files {
        let file = dir.join(name);
        if let Some(parent) = file.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(parent)?;
            for made in parent.ancestors().take_while(|a| *a != dir) {
                if !dirs.iter().any(|d| d == made) {
                    dirs.push(made.to_owned());
                }
            }
        }
        write_synced(&file, text.as_bytes(), file_mode)?;
    }
    dirs.iter()
        .try_for_each(|d| std::fs::File::open(d).and_then(|d| d.sync_all()))
}

/// Writes `path` with `bytes`, made with `mode`, and syncs it.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
}

/// Syncs the directory `path` is in, so that its rename into place lasts.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
        None => Ok(()),
    }
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

    #[test]
    fn a_directory_is_made_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy");
        let files = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| ((*n).to_owned(), format!("{n}\n")))
                .collect()
        };
        // A write that fails half-way (its second file cannot be made) leaves nothing.
        let failed = create_dir(&path, &files(&["a.toml", "a.toml/b"]), 0o755, 0o644);
        assert!(failed.unwrap_err().to_string().contains("writing"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // What a crash left aside is written anew, and the directory appears whole.
        std::fs::create_dir(dir.path().join("policy.new")).unwrap();
        std::fs::write(dir.path().join("policy.new/a.toml"), "").unwrap();
        std::fs::write(dir.path().join("policy.new/stale"), "").unwrap();
        create_dir(
            &path,
            &files(&["a.toml", "tests/deep/c.toml"]),
            0o755,
            0o644,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(path.join("a.toml")).unwrap(),
            "a.toml\n"
        );
        assert_eq!(
            std::fs::read_to_string(path.join("tests/deep/c.toml")).unwrap(),
            "tests/deep/c.toml\n"
        );
        assert!(!path.join("stale").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
