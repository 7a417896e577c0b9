//! A recording file written around the page cache.
//!
//! A recording is written once and seldom read, yet every byte written through the page cache
//! costs a copy into a freshly zeroed page, dirty-page bookkeeping, and a writeback later that
//! competes with the sessions still running: a gigabyte of output leaves a gigabyte of dirty
//! pages behind. So whole blocks go to the disk with `O_DIRECT`, straight from an aligned
//! buffer, queued for a thread of their own while the recorder fills the next buffer; only the
//! partial last block of each flush goes through the page cache, which keeps the file exactly
//! as long as what was written. Where the file system refuses `O_DIRECT` (tmpfs, for one), the
//! file is written the ordinary way.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;

/// Alignment of direct writes: of the buffer, the length and the file offset.
const BLOCK: usize = 4096;

/// Bytes buffered before a direct write. On this kind of disk a 1 MiB direct write streams at
/// about 1.7 GB/s, a 256 KiB one at about 1.0 GB/s; a bulk session holds at most [`DEPTH`] + 1
/// such buffers, and a quiet one goes back to a single block at its next flush.
const CAPACITY: usize = 256 * BLOCK;

/// A buffer whose bytes from `start` on sit at a [`BLOCK`]-aligned address. It never grows past
/// the capacity it was made with, so it never moves.
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl Aligned {
    fn new(capacity: usize) -> Self {
        let mut bytes: Vec<u8> = Vec::with_capacity(capacity + BLOCK);
        let start = bytes.as_ptr().align_offset(BLOCK);
        bytes.resize(start, 0);
        Self {
            bytes,
            start,
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn is_full(&self) -> bool {
        self.len() == self.capacity
    }

    /// The leading whole blocks.
    fn blocks(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len() / BLOCK * BLOCK]
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Appends as much of `data` as fits; returns how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.len());
        self.bytes.extend_from_slice(&data[..n]);
        n
    }

    fn clear(&mut self) {
        self.bytes.truncate(self.start);
    }

    /// Keeps only what follows the leading whole blocks, moved to the front.
    fn drop_blocks(&mut self) {
        let whole = self.len() / BLOCK * BLOCK;
        self.bytes.copy_within(self.start + whole.., self.start);
        self.bytes.truncate(self.bytes.len() - whole);
    }
}

/// Full buffers handed to the writer thread and not yet written back, at most. With one, the
/// recorder waited for each write before it could hand over the next buffer, blocking a
/// runtime thread: 0.7–1.0 s of a 3 s exec of 1 GiB on two busy cores. With a queue the disk is
/// kept busy and the recorder waits only when the disk falls this many buffers behind (with
/// 1 MiB buffers, 0.07–0.09 s of the same exec).
const DEPTH: usize = 2;

/// A thread doing one direct write at a time, handing each buffer back when it is written.
struct BlockWriter {
    jobs: mpsc::SyncSender<(Aligned, u64)>,
    done: mpsc::Receiver<(Aligned, io::Result<()>)>,
    in_flight: usize,
}

impl BlockWriter {
    /// Starts the thread writing through `direct`, or through `cached` should a file system
    /// that opened `direct` refuse its writes.
    fn start(direct: File, cached: File) -> io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel::<(Aligned, u64)>(DEPTH);
        let (tx, done) = mpsc::sync_channel(DEPTH);
        std::thread::Builder::new()
            .name("warden-recording".into())
            .spawn(move || {
                let mut file = &direct;
                for (buf, offset) in rx {
                    let mut written = file.write_all_at(buf.blocks(), offset);
                    if matches!(&written, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
                        file = &cached;
                        written = file.write_all_at(buf.blocks(), offset);
                    }
                    if tx.send((buf, written)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            jobs,
            done,
            in_flight: 0,
        })
    }

    /// A buffer whose write has finished, if there is one; waits for one only when [`DEPTH`]
    /// writes are in flight.
    fn reclaim(&mut self) -> io::Result<Option<Aligned>> {
        let finished = if self.in_flight == DEPTH {
            self.done.recv().map_err(|_| stopped())?
        } else {
            match self.done.try_recv() {
                Ok(finished) => finished,
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => return Err(stopped()),
            }
        };
        self.written_back(finished).map(Some)
    }

    /// Waits until every write in flight has finished.
    fn settle(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            let finished = self.done.recv().map_err(|_| stopped())?;
            self.written_back(finished)?;
        }
        Ok(())
    }

    /// Counts a write handed back as finished; its buffer, if it succeeded.
    fn written_back(&mut self, (buf, written): (Aligned, io::Result<()>)) -> io::Result<Aligned> {
        self.in_flight -= 1;
        written.map(|()| buf)
    }

    fn send(&mut self, buf: Aligned, offset: u64) -> io::Result<()> {
        self.jobs.send((buf, offset)).map_err(|_| stopped())?;
        self.in_flight += 1;
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::other("the recording's writer thread stopped")
}

/// How whole blocks are written.
enum Blocks {
    /// Through the page cache, like the partial last block.
    Cached,
    /// With `O_DIRECT`, by a thread that starts with the first full buffer.
    Unstarted(File),
    Direct(BlockWriter),
}

pub(crate) struct DirectFile {
    cached: File,
    blocks: Blocks,
    buf: Aligned,
    /// Where `buf`'s data goes in the file; always a multiple of [`BLOCK`].
    offset: u64,
}

impl DirectFile {
    /// Creates `path` (mode 0600); fails if it exists.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Self::open(path, true)
    }

    /// [`DirectFile::create`], trying `O_DIRECT` only when `direct`.
    fn open(path: &Path, direct: bool) -> io::Result<Self> {
        let cached = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let opened = direct.then(|| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
        });
        let blocks = match opened {
            Some(Ok(file)) => Blocks::Unstarted(file),
            Some(Err(_)) | None => Blocks::Cached,
        };
        Ok(Self {
            cached,
            blocks,
            // One block to begin with: most sessions are interactive, and hundreds may be
            // open; a bulk transfer gets full-sized buffers once it fills this one.
            buf: Aligned::new(BLOCK),
            offset: 0,
        })
    }

    /// Sends the buffer's whole blocks on their way, keeping the partial last one.
    fn write_blocks(&mut self) -> io::Result<()> {
        let whole = self.buf.blocks().len();
        if whole == 0 {
            return Ok(());
        }
        self.start_writer();
        let written_back = match &mut self.blocks {
            Blocks::Direct(writer) => writer.reclaim()?,
            Blocks::Cached | Blocks::Unstarted(_) => {
                self.cached.write_all_at(self.buf.blocks(), self.offset)?;
                None
            }
        };
        let direct = matches!(self.blocks, Blocks::Direct(_));
        if direct || self.buf.capacity < CAPACITY {
            // The next buffer starts with the partial last block: a buffer the writer has
            // handed back, or a new one of full size.
            let mut next = written_back
                .filter(|b| b.capacity == CAPACITY)
                .unwrap_or_else(|| Aligned::new(CAPACITY));
            next.clear();
            next.fill(&self.buf.data()[whole..]);
            let full = std::mem::replace(&mut self.buf, next);
            if let Blocks::Direct(writer) = &mut self.blocks {
                writer.send(full, self.offset)?;
            }
        } else {
            self.buf.drop_blocks();
        }
        self.offset += whole as u64;
        Ok(())
    }

    /// Starts the thread for direct writes if it is not running yet; without one, the file is
    /// written through the page cache.
    fn start_writer(&mut self) {
        let direct = match std::mem::replace(&mut self.blocks, Blocks::Cached) {
            Blocks::Unstarted(direct) => direct,
            running_or_cached => {
                self.blocks = running_or_cached;
                return;
            }
        };
        match self
            .cached
            .try_clone()
            .and_then(|cached| BlockWriter::start(direct, cached))
        {
            Ok(writer) => self.blocks = Blocks::Direct(writer),
            Err(e) => {
                tracing::warn!(error = %e, "recording through the page cache: no thread for direct writes");
            }
        }
    }

    /// Waits until every direct write sent is on disk.
    fn settle(&mut self) -> io::Result<()> {
        match &mut self.blocks {
            Blocks::Direct(writer) => writer.settle(),
            Blocks::Cached | Blocks::Unstarted(_) => Ok(()),
        }
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.buf.fill(data);
        if self.buf.is_full() {
            self.write_blocks()?;
        }
        Ok(n)
    }

    /// Everything written so far reaches the file: whole blocks directly, the partial last
    /// block through the page cache (written again, directly, once it is whole).
    fn flush(&mut self) -> io::Result<()> {
        self.write_blocks()?;
        self.settle()?;
        if self.buf.len() > 0 {
            self.cached.write_all_at(self.buf.data(), self.offset)?;
        }
        // What is left is less than a block: a session gone quiet after bulk output need not
        // keep a full buffer; the next burst gets one again after its first block.
        if self.buf.capacity > BLOCK {
            let mut small = Aligned::new(BLOCK);
            small.fill(self.buf.data());
            self.buf = small;
        }
        Ok(())
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn the_file_holds_exactly_what_was_written_after_each_flush() {
        for direct in [true, false] {
            writes_exactly(direct);
        }
    }

    fn writes_exactly(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        let mut f = DirectFile::open(&path, direct).unwrap();
        let data = pattern(5 * CAPACITY + 1234);
        let mut written = 0;
        // Uneven pieces, with flushes between some, cross every boundary case.
        for (i, piece) in data.chunks(70_001).enumerate() {
            f.write_all(piece).unwrap();
            written += piece.len();
            if i % 3 == 0 {
                f.flush().unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), data[..written]);
            }
        }
        f.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(
            f.buf.capacity, BLOCK,
            "a flush gives back the full-sized buffer"
        );
        f.write_all(b"tail").unwrap();
        drop(f);
        let mut expected = data;
        expected.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        std::fs::write(&path, b"kept").unwrap();
        assert!(DirectFile::create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }
}
