//! Session recordings: asciicast v2 written as the session runs, behind a storage trait.
//!
//! A recording is one JSON header line, then one `[seconds, "o"|"i"|"r", data]` line per
//! event. Output is buffered and flushed at least every second, so a crash loses at most the
//! last second; the SHA-256 of every byte written is computed on the way and goes into the
//! session-end audit event (after a crash, the server cuts the file back to its last complete
//! line and hashes what it then holds instead).
//! Terminal output that is not valid UTF-8 is written with U+FFFD in place of the bad bytes (a
//! sequence split between two chunks is kept whole).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How often buffered recording data reaches the store, at least.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Where recordings are kept. Implementations: [`FsRecordings`].
pub trait Recordings: Send + Sync + std::fmt::Debug {
    /// Creates the recording of session `id` for writing; fails if it cannot be written. What
    /// is written may be buffered: it is in the store once `flush` returns.
    fn create(&self, id: &str) -> io::Result<Box<dyn Write + Send>>;

    /// Reads a finished (or still running) recording.
    fn read(&self, id: &str) -> io::Result<Vec<u8>>;

    /// Removes the recording of a session that never started (its header, nothing relayed).
    fn discard(&self, id: &str) -> io::Result<()>;

    /// Closes the recording of session `id`, whose end a crash kept from being recorded: cuts
    /// it back, durably, to its last complete line (a crash can cut the last line written in
    /// half, or leave zeros past it), so that what is certified is an asciicast players read,
    /// and returns the SHA-256 and length of what it then holds, as its `session.ended` event
    /// records them, and how many bytes were cut; `None` if there is none.
    fn close_cut(&self, id: &str) -> io::Result<Option<CutRecording>>;
}

/// A recording a crash cut short, as [`Recordings::close_cut`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutRecording {
    /// The SHA-256 (hex) of what the recording holds.
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// How many bytes were cut from its end: a line the crash cut off, and any zeros after it.
    pub dropped: u64,
}

/// Recordings as files `<dir>/<session id>.cast`, mode 0600.
#[derive(Debug, Clone)]
pub struct FsRecordings {
    dir: PathBuf,
}

impl FsRecordings {
    /// Recordings under `dir`, created (0700) on first write.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a session id is letters, digits and dashes",
            ));
        }
        Ok(self.dir.join(format!("{id}.cast")))
    }
}

impl Recordings for FsRecordings {
    fn create(&self, id: &str) -> io::Result<Box<dyn Write + Send>> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.path(id)?;
        // Said with the path: the operator who reads it fixes that directory.
        let at = |e: io::Error, what: &std::path::Path| {
            io::Error::new(e.kind(), format!("{}: {e}", what.display()))
        };
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| at(e, &self.dir))?;
        }
        let file = crate::direct_file::DirectFile::create(&path).map_err(|e| at(e, &path))?;
        Ok(Box::new(file))
    }

    fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id)?)
    }

    fn discard(&self, id: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(id)?)
    }

    fn close_cut(&self, id: &str) -> io::Result<Option<CutRecording>> {
        let path = self.path(id)?;
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let whole = whole_lines(&mut file)?;
        let len = file.metadata()?.len();
        let dropped = len.saturating_sub(whole.bytes);
        if dropped > 0 {
            tracing::warn!(
                session = %id,
                dropped,
                "the recording of a session a crash cut short ended in a partial line or zeros: cut back to its last complete line"
            );
            let cut = || {
                let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(whole.bytes)?;
                file.sync_all()
            };
            cut().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{}: cutting it back to its last complete line: {e}",
                        path.display()
                    ),
                )
            })?;
        } else {
            // What the digest certifies is on disk, should the host go down next.
            file.sync_all()?;
        }
        Ok(Some(CutRecording {
            sha256: whole.sha256,
            bytes: whole.bytes,
            dropped,
        }))
    }
}

/// The SHA-256 and length of the leading complete lines of a recording: up to its last newline
/// before its first zero byte. A recording never holds a zero byte (JSON escapes it), so one is
/// padding or a block the disk never got, not data.
fn whole_lines(file: &mut impl io::Read) -> io::Result<WholeLines> {
    // `running` hashes every byte read; `whole` is its state at the last newline.
    let mut running = Sha256::new();
    let mut whole = running.clone();
    let mut whole_bytes = 0u64;
    let mut read = 0u64;
    let mut piece = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let zero = piece[..n].iter().position(|&b| b == 0);
        let data = &piece[..zero.unwrap_or(n)];
        if let Some(last) = data.iter().rposition(|&b| b == b'\n') {
            running.update(&data[..=last]);
            whole = running.clone();
            whole_bytes = read + last as u64 + 1;
            running.update(&data[last + 1..]);
        } else {
            running.update(data);
        }
        read += data.len() as u64;
        if zero.is_some() {
            break;
        }
    }
    Ok(WholeLines {
        sha256: hex::encode(whole.finalize()),
        bytes: whole_bytes,
    })
}

struct WholeLines {
    sha256: String,
    bytes: u64,
}

/// The kinds of asciicast events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Output,
    Input,
    Resize,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Output => "o",
            Kind::Input => "i",
            Kind::Resize => "r",
        }
    }
}

/// Buffered recording data is written once there is this much of it (or a flush is due):
/// writing the page cache in big pieces costs the kernel far less per byte than in small ones.
const WRITE_AT: usize = 256 * 1024;

/// An asciicast v2 recording being written.
pub struct Asciicast {
    out: Box<dyn Write + Send>,
    /// Event lines not written yet (already hashed); grows only as far as bulk output needs.
    pending: Vec<u8>,
    hasher: Sha256,
    start: Instant,
    last_flush: Instant,
    /// Bytes of an incomplete UTF-8 sequence, per stream (output, input).
    carry: [Vec<u8>; 2],
    bytes: u64,
}

impl std::fmt::Debug for Asciicast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asciicast")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// What a recording's header says.
#[derive(Debug, Clone)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub timestamp: i64,
    pub title: String,
    pub term: Option<String>,
    /// The command the client asked for, if any.
    pub command: Option<String>,
    /// The role's `force_command`, which the target runs instead of whatever was asked: the
    /// header says so, so that a recording of one command is not read as another's.
    pub forced_command: Option<String>,
}

impl Asciicast {
    /// Starts a recording on `out` and writes its header.
    pub fn start(out: Box<dyn Write + Send>, header: &Header) -> io::Result<Self> {
        let mut rec = Self {
            out,
            pending: Vec::new(),
            hasher: Sha256::new(),
            start: Instant::now(),
            last_flush: Instant::now(),
            carry: [Vec::new(), Vec::new()],
            bytes: 0,
        };
        let mut h = serde_json::json!({
            "version": 2,
            "width": header.width.max(1),
            "height": header.height.max(1),
            "timestamp": header.timestamp,
            "title": header.title,
        });
        // The terminal type the client asked for; the target's shell is not known here, so
        // the header names none.
        if let Some(term) = &header.term {
            h["env"] = serde_json::json!({ "TERM": term });
        }
        if let Some(command) = &header.command {
            h["command"] = serde_json::json!(command);
        }
        if let Some(forced) = &header.forced_command {
            h["forced_command"] = serde_json::json!(forced);
        }
        writeln!(rec.pending, "{h}")?;
        rec.appended(0)?;
        rec.flush()?;
        Ok(rec)
    }

    /// Hashes and counts what was appended to `pending` from `from` on; writes `pending` out
    /// once it is big enough.
    fn appended(&mut self, from: usize) -> io::Result<()> {
        let line = &self.pending[from..];
        self.hasher.update(line);
        self.bytes += line.len() as u64;
        if self.pending.len() >= WRITE_AT {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let written = self.out.write_all(&self.pending);
        self.pending.clear();
        written
    }

    /// Appends terminal data of `kind`.
    pub fn data(&mut self, kind: Kind, data: &[u8]) -> io::Result<()> {
        let slot = usize::from(kind == Kind::Input);
        if self.carry[slot].is_empty() {
            // The common case: no partial sequence waiting, so no copy.
            let keep = incomplete_tail(data);
            let (whole, tail) = data.split_at(data.len() - keep);
            self.carry[slot].extend_from_slice(tail);
            if whole.is_empty() {
                return Ok(());
            }
            return self.event(kind, &text(whole));
        }
        let mut bytes = std::mem::take(&mut self.carry[slot]);
        bytes.extend_from_slice(data);
        let keep = incomplete_tail(&bytes);
        self.carry[slot] = bytes.split_off(bytes.len() - keep);
        if bytes.is_empty() {
            return Ok(());
        }
        self.event(kind, &text(&bytes))
    }

    /// Appends a terminal resize.
    pub fn resize(&mut self, width: u32, height: u32) -> io::Result<()> {
        self.event(Kind::Resize, &format!("{width}x{height}"))
    }

    fn event(&mut self, kind: Kind, text: &str) -> io::Result<()> {
        let t = self.start.elapsed().as_secs_f64();
        let from = self.pending.len();
        write!(self.pending, "[{t:.6}, \"{}\", ", kind.code())?;
        json_string(&mut self.pending, text);
        self.pending.extend_from_slice(b"]\n");
        self.appended(from)?;
        self.flush_if_due()
    }

    /// Flushes when the last flush is a second old or more.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.write_pending()?;
        // A session that went quiet after bulk output need not keep a big buffer.
        self.pending.shrink_to(WRITE_AT / 4);
        self.out.flush()
    }

    /// Writes what is buffered and returns the SHA-256 (hex) and size of the recording.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        for slot in 0..2 {
            let rest = std::mem::take(&mut self.carry[slot]);
            if !rest.is_empty() {
                let kind = if slot == 0 { Kind::Output } else { Kind::Input };
                self.event(kind, &text(&rest))?;
            }
        }
        self.flush()?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it. This is the recorder's
/// hottest loop: terminal output is nearly all plain text, so it is checked a block at a time
/// for anything to escape (a control character, `"` or `\\`), in a form the compiler turns
/// into vector compares, and copied in runs between the few bytes that need escaping.
fn json_string(out: &mut Vec<u8>, text: &str) {
    const BLOCK: usize = 32;
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    for (n, block) in blocks.iter().enumerate() {
        let mut mask = escape_mask(block);
        while mask != 0 {
            let i = n * BLOCK + mask.trailing_zeros() as usize;
            out.extend_from_slice(&bytes[start..i]);
            escape(out, bytes[i]);
            start = i + 1;
            mask &= mask - 1;
        }
    }
    for (i, &b) in bytes.iter().enumerate().skip(bytes.len() - rest.len()) {
        if needs_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            escape(out, b);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Bit `i` is set when `block[i]` needs escaping. The flags are computed byte by byte with no
/// branches, which compiles to vector compares; each eight flags (0 or 1) are then gathered
/// into eight bits with one multiplication.
fn escape_mask(block: &[u8; 32]) -> u32 {
    let flags = block.map(|b| u8::from(needs_escape(b)));
    let (words, _) = flags.as_chunks::<8>();
    words.iter().enumerate().fold(0, |mask, (n, word)| {
        let bits = (u64::from_le_bytes(*word).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32;
        mask | bits << (8 * n)
    })
}

/// Appends the JSON escape of `b`, one of the bytes [`needs_escape`] picks.
fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

/// `b` as text: borrowed when it is valid UTF-8 (nearly always, and checked far faster than a
/// lossy conversion walks it), with invalid bytes replaced otherwise.
fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A recording store in memory that the test keeps a handle on.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_header_names_the_terminal_and_no_shell_it_does_not_know() {
        let out = Shared::default();
        let header = Header {
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: "alice on web".into(),
            term: Some("xterm-256color".into()),
            command: None,
            forced_command: None,
        };
        Asciicast::start(Box::new(out.clone()), &header).unwrap();
        let written = out.0.lock().unwrap().clone();
        let first = written.split(|&b| b == b'\n').next().unwrap();
        let h: serde_json::Value = serde_json::from_slice(first).unwrap();
        assert_eq!(h["env"], serde_json::json!({ "TERM": "xterm-256color" }));
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80)
            .map(|b| format!("ab{}cdefghij", b as char))
            .collect();
        cases.extend(
            [
                "",
                "plain ascii that is longer than eight bytes",
                "\u{20ac} \u{fffd} caf\u{e9}",
                "\"\\\"\\",
                "line\r\nnext\tcol\u{1b}[0m",
                "\u{7f}\u{80}\u{ffff}",
            ]
            .map(String::from),
        );
        // Every byte that needs escaping at every offset of the first blocks and the tail.
        for pos in 0..70 {
            for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                let mut text: String = "x".repeat(70);
                text.replace_range(pos..=pos, &special.to_string());
                text.push_str("\u{e9}\"");
                cases.push(text);
            }
        }
        for text in cases {
            let mut out = Vec::new();
            json_string(&mut out, &text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn writes_asciicast_v2_with_its_digest() {
        let buf = Shared::default();
        let header = Header {
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: "alice on web".into(),
            term: Some("xterm".into()),
            command: None,
            forced_command: None,
        };
        let mut rec = Asciicast::start(Box::new(buf.clone()), &header).unwrap();
        rec.data(Kind::Output, b"hello \xe2\x82").unwrap();
        rec.data(Kind::Output, b"\xac \xff\n").unwrap();
        rec.resize(100, 30).unwrap();
        rec.data(Kind::Input, b"ls\r").unwrap();
        let (digest, size) = rec.finish().unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(digest, hex::encode(Sha256::digest(&bytes)));
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        // The euro sign split across chunks is whole; the stray byte became U+FFFD.
        assert_eq!(lines[2][2], "\u{20ac} \u{fffd}\n");
        assert_eq!(lines[3][1], "r");
        assert_eq!(lines[3][2], "100x30");
        assert_eq!(lines[4][1], "i");
    }

    /// A recording a crash cut short: a header and two whole lines, then `tail`.
    fn cut_recording(tail: &[u8]) -> (tempfile::TempDir, FsRecordings, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRecordings::new(dir.path().to_owned());
        let whole = b"{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.100000, \"o\", \"1\\r\\n2\\r\\n\"]\n[0.200000, \"o\", \"3\\r\\n\"]\n".to_vec();
        let mut bytes = whole.clone();
        bytes.extend_from_slice(tail);
        std::fs::write(dir.path().join("s-1.cast"), &bytes).unwrap();
        (dir, store, whole)
    }

    #[test]
    fn a_recording_a_crash_cut_is_closed_at_its_last_complete_line() {
        let partial = b"[0.300000, \"o\", \"4\\r\\n5\\r".as_slice();
        let padded = |tail: &[u8], to: usize| {
            let mut v = tail.to_vec();
            v.resize(to, 0);
            v
        };
        let cases: [(&str, Vec<u8>); 6] = [
            ("a partial line", partial.to_vec()),
            ("zero padding", padded(b"", 4000)),
            ("a partial line and zero padding", padded(partial, 4000)),
            (
                "a whole line cut before its newline",
                b"[0.3, \"o\", \"x\"]".to_vec(),
            ),
            // Zeros where a block never reached the disk, and lines after them.
            ("zeros, then lines", {
                let mut v = padded(partial, 4096);
                v.extend_from_slice(b"\", \"x\"]\n[0.4, \"o\", \"y\"]\n");
                v
            }),
            ("nothing", Vec::new()),
        ];
        for (what, tail) in cases {
            let (dir, store, whole) = cut_recording(&tail);
            let closed = store.close_cut("s-1").unwrap().unwrap();
            let kept = std::fs::read(dir.path().join("s-1.cast")).unwrap();
            assert_eq!(kept, whole, "{what}");
            assert_eq!(closed.bytes, kept.len() as u64, "{what}");
            assert_eq!(closed.sha256, hex::encode(Sha256::digest(&kept)), "{what}");
            assert_eq!(closed.dropped, tail.len() as u64, "{what}");
            for line in kept.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\n"), "{what}");
                serde_json::from_slice::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("{what}: {e}: {line:?}"));
            }
            // Closed again (a start that stopped before recording the end), it stays so.
            let again = store.close_cut("s-1").unwrap().unwrap();
            assert_eq!((again.sha256, again.dropped), (closed.sha256, 0), "{what}");
        }
    }

    #[test]
    fn a_recording_cut_inside_its_header_is_closed_empty_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRecordings::new(dir.path().to_owned());
        let torn = b"{\"version\": 2, \"wid";
        std::fs::write(dir.path().join("s-1.cast"), torn).unwrap();
        let closed = store.close_cut("s-1").unwrap().unwrap();
        assert_eq!((closed.bytes, closed.dropped), (0, torn.len() as u64));
        assert_eq!(closed.sha256, hex::encode(Sha256::digest(b"")));
        assert_eq!(std::fs::read(dir.path().join("s-1.cast")).unwrap(), b"");
        assert_eq!(store.close_cut("s-2").unwrap(), None);
        assert!(store.close_cut("../s-1").is_err());
    }

    /// A recording written by the recorder and cut at every length closes at the last
    /// complete line before the cut.
    #[test]
    fn a_recording_cut_anywhere_closes_at_the_line_before_the_cut() {
        let buf = Shared::default();
        let header = Header {
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: "alice on web".into(),
            term: None,
            command: None,
            forced_command: None,
        };
        let mut rec = Asciicast::start(Box::new(buf.clone()), &header).unwrap();
        for i in 0..40 {
            rec.data(Kind::Output, format!("line {i}\r\n\"\u{e9}").as_bytes())
                .unwrap();
        }
        rec.finish().unwrap();
        let full = buf.0.lock().unwrap().clone();
        for cut in 0..=full.len() {
            let dir = tempfile::tempdir().unwrap();
            let store = FsRecordings::new(dir.path().to_owned());
            std::fs::write(dir.path().join("s-1.cast"), &full[..cut]).unwrap();
            let closed = store.close_cut("s-1").unwrap().unwrap();
            let want = full[..cut]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            assert_eq!(closed.bytes, want as u64, "cut at {cut}");
            assert_eq!(closed.dropped, (cut - want) as u64, "cut at {cut}");
            assert_eq!(closed.sha256, hex::encode(Sha256::digest(&full[..want])));
        }
    }

    #[test]
    fn the_filesystem_store_refuses_odd_ids_and_unwritable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRecordings::new(dir.path().join("rec"));
        assert!(store.create("../x").is_err());
        let mut w = store.create("abc-1").unwrap();
        w.write_all(b"x").unwrap();
        w.flush().unwrap();
        assert_eq!(store.read("abc-1").unwrap(), b"x");
        drop(w);
        store.discard("abc-1").unwrap();
        assert!(store.read("abc-1").is_err());
        assert!(store.discard("../x").is_err());
        // A file where the directory should be: nothing can be written.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        assert!(FsRecordings::new(blocked).create("abc-2").is_err());
    }
}
