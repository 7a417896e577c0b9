//! A recording file written through.
//!
//! A session that must be recorded lets output through to its user only once the output's
//! write returned, so a write is never buffered here: each goes to the kernel at once, and a
//! full disk fails the write of the event that did not fit (an error named with the file's
//! path), before the user sees that event. (Whole blocks once went around the page cache with
//! `O_DIRECT`, from a buffer written later; that deferred a failed write past the output it
//! failed on.)
//!
//! The page cache takes the file's pages; the kernel writes them back in its own time, and
//! throttles a writer that gets too far ahead of the disk, which slows that session alone.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(crate) struct RecordingFile {
    file: File,
    path: PathBuf,
}

impl RecordingFile {
    /// Creates `path` (mode 0600); fails if it exists.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }
}

impl Write for RecordingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file
            .write(data)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }

    /// Nothing to do: every write went to the kernel.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn the_file_holds_exactly_what_was_written_after_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        let mut f = RecordingFile::create(&path).unwrap();
        let data = pattern(3_000_000);
        let mut written = 0;
        for (i, piece) in data.chunks(70_001).enumerate() {
            f.write_all(piece).unwrap();
            written += piece.len();
            // No flush: what a write took is in the file when it returns.
            if i % 17 == 0 {
                assert_eq!(std::fs::read(&path).unwrap(), data[..written]);
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        std::fs::write(&path, b"kept").unwrap();
        assert!(RecordingFile::create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }

    #[test]
    fn a_failed_write_fails_at_once_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        let mut f = RecordingFile::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        // The file opened for reading only put in its place: every write fails.
        f.file = File::open(&path).unwrap();
        let e = f.write_all(b"y").unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
