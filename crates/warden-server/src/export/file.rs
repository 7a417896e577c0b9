//! The file sink: one JSON record per line (see `json_record`), appended to a file that is
//! rotated by size — `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, … and the oldest
//! beyond `keep` is dropped. A batch counts as delivered once it is written and fsynced, and,
//! when the file was made for it, once the directory was fsynced too.
//!
//! Rotation renames from the oldest down, each rename atomic, so a crash part-way leaves at
//! worst a missing number, never a lost or overwritten newer file. A line torn by a crash is
//! ended with a newline before appending, so it cannot swallow the record after it; the torn
//! record itself is sent again because the cursor had not moved past it. A file moved away or
//! deleted by someone else (logrotate, say) is noticed before the next batch, which goes to a
//! new file at the path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use warden_store::Leaf;

use super::config::FileConfig;
use super::{Sink, json_record};

/// Leaves per write and fsync.
const BATCH: usize = 1000;

/// Appends JSON lines to a rotating file.
#[derive(Debug)]
pub struct FileSink {
    target: Target,
    /// The open file, kept between batches; `None` after an error, so it is reopened.
    out: Option<Output>,
}

#[derive(Debug, Clone)]
struct Target {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

#[derive(Debug)]
struct Output {
    file: File,
    size: u64,
}

impl FileSink {
    pub fn new(c: &FileConfig) -> Self {
        Self {
            target: Target {
                path: c.path.clone(),
                max_bytes: c.max_bytes,
                keep: c.keep,
            },
            out: None,
        }
    }
}

impl Sink for FileSink {
    fn batch(&self) -> usize {
        BATCH
    }

    async fn deliver(&mut self, leaves: &[Leaf]) -> Result<(), String> {
        let lines: Vec<String> = leaves.iter().map(|l| json_record(l) + "\n").collect();
        let target = self.target.clone();
        let out = self.out.take();
        let written = tokio::task::spawn_blocking(move || target.write(out, &lines))
            .await
            .map_err(|e| format!("file writer crashed: {e}"))?;
        match written {
            Ok(o) => {
                self.out = Some(o);
                Ok(())
            }
            Err(e) => Err(format!("{}: {e}", self.target.path.display())),
        }
    }
}

impl Target {
    /// Writes `lines`, rotating whenever the next line would take the file past `max_bytes`
    /// (a single longer line gets a file of its own), then fsyncs. Returns the file to keep
    /// appending to.
    fn write(&self, out: Option<Output>, lines: &[String]) -> std::io::Result<Output> {
        let mut o = match out {
            Some(o) if self.still_at_path(&o)? => o,
            _ => self.open()?,
        };
        let mut buf = Vec::new();
        for line in lines {
            let pending = o.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_bytes {
                o.file.write_all(&buf)?;
                o.file.sync_data()?;
                buf.clear();
                drop(o);
                self.rotate()?;
                o = self.open()?;
            }
            buf.extend_from_slice(line.as_bytes());
        }
        o.file.write_all(&buf)?;
        o.size += buf.len() as u64;
        o.file.sync_data()?;
        Ok(o)
    }

    /// Whether the open file is still the one at the path: moved away (logrotate, a hand
    /// clean-up) or deleted, records written to it would be in no file the path names.
    fn still_at_path(&self, o: &Output) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = o.file.metadata()?;
        Ok(match std::fs::metadata(&self.path) {
            Ok(at_path) => at_path.dev() == open.dev() && at_path.ino() == open.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        })
    }

    /// Opens the file at the path to append to, making it if there is none (the first export,
    /// after a rotation, after another tool moved it away); a file made is made durable in its
    /// directory before anything written to it counts as delivered, or a crash could lose the
    /// file, and the batches synced into it, with the directory's entry.
    fn open(&self) -> std::io::Result<Output> {
        let open = |new: bool| {
            OpenOptions::new()
                .create_new(new)
                .read(true)
                .append(true)
                .mode(0o640)
                .open(&self.path)
        };
        let mut file = match open(true) {
            Ok(file) => {
                self.sync_dir()?;
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(false)?,
            Err(e) => return Err(e),
        };
        let mut size = file.metadata()?.len();
        if size > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(size - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        Ok(Output { file, size })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&self) -> std::io::Result<()> {
        for n in (1..self.keep).rev() {
            rename_if_present(&self.rotated(n), &self.rotated(n + 1))?;
        }
        rename_if_present(&self.path, &self.rotated(1))?;
        // Make the renames themselves durable.
        self.sync_dir()
    }

    /// Makes the entries of the file's directory (files made, renamed) durable.
    fn sync_dir(&self) -> std::io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(seqs: std::ops::Range<u64>) -> Vec<String> {
        seqs.map(|i| format!("{{\"seq\":{i}}}\n")).collect()
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn a_file_moved_or_deleted_by_someone_else_is_not_written_to() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            path: dir.path().join("a.jsonl"),
            max_bytes: 1 << 20,
            keep: 2,
        };
        let out = t.write(None, &lines(1..3)).unwrap();
        let moved = dir.path().join("moved.jsonl");
        std::fs::rename(&t.path, &moved).unwrap();
        let out = t.write(Some(out), &lines(3..5)).unwrap();
        assert_eq!(read(moved.clone()), lines(1..3).concat());
        assert_eq!(read(t.path.clone()), lines(3..5).concat());
        std::fs::remove_file(&t.path).unwrap();
        t.write(Some(out), &lines(5..6)).unwrap();
        assert_eq!(read(t.path.clone()), lines(5..6).concat());
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            path: dir.path().join("a.jsonl"),
            max_bytes: 30,
            keep: 2,
        };
        // Lines of 10 bytes up to seq 9, then 11: three, then two, to a file.
        let mut out = None;
        for batch in [1..4, 4..10, 10..13] {
            out = Some(t.write(out, &lines(batch)).unwrap());
        }
        assert_eq!(read(t.rotated(2)), lines(7..10).concat());
        assert_eq!(read(t.rotated(1)), lines(10..12).concat());
        assert_eq!(read(t.path.clone()), lines(12..13).concat());
        assert!(!t.rotated(3).exists());
    }

    #[test]
    fn a_torn_line_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            path: dir.path().join("a.jsonl"),
            max_bytes: 1000,
            keep: 1,
        };
        std::fs::write(&t.path, "{\"seq\":1}\n{\"se").unwrap();
        t.write(None, &lines(2..3)).unwrap();
        assert_eq!(read(t.path.clone()), "{\"seq\":1}\n{\"se\n{\"seq\":2}\n");
    }
}
