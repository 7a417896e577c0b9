//! Session recordings: asciicast v2 written as the session runs, behind a storage trait.
//!
//! A recording is one JSON header line, then one `[seconds, "o"|"i"|"r", data]` line per
//! event. Output is buffered and flushed at least every second, so a crash loses at most the
//! last second; the SHA-256 of every byte written is computed on the way and goes into the
//! session-end audit event. Terminal output that is not valid UTF-8 is written with U+FFFD in
//! place of the bad bytes (a sequence split between two chunks is kept whole).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How often buffered recording data reaches the store, at least.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Where recordings are kept. Implementations: [`FsRecordings`].
pub trait Recordings: Send + Sync + std::fmt::Debug {
    /// Creates the recording of session `id` for writing; fails if it cannot be written.
    fn create(&self, id: &str) -> io::Result<Box<dyn Write + Send>>;

    /// Reads a finished (or still running) recording.
    fn read(&self, id: &str) -> io::Result<Vec<u8>>;
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
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.path(id)?;
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id)?)
    }
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

/// An asciicast v2 recording being written.
pub struct Asciicast {
    out: BufWriter<Box<dyn Write + Send>>,
    hasher: Sha256,
    start: Instant,
    last_flush: Instant,
    /// Bytes of an incomplete UTF-8 sequence, per stream (output, input).
    carry: [Vec<u8>; 2],
    bytes: u64,
    /// Reused for each event line.
    scratch: Vec<u8>,
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
    pub command: Option<String>,
}

impl Asciicast {
    /// Starts a recording on `out` and writes its header.
    pub fn start(out: Box<dyn Write + Send>, header: &Header) -> io::Result<Self> {
        let mut rec = Self {
            out: BufWriter::with_capacity(16 * 1024, out),
            hasher: Sha256::new(),
            start: Instant::now(),
            last_flush: Instant::now(),
            carry: [Vec::new(), Vec::new()],
            bytes: 0,
            scratch: Vec::new(),
        };
        let mut h = serde_json::json!({
            "version": 2,
            "width": header.width.max(1),
            "height": header.height.max(1),
            "timestamp": header.timestamp,
            "title": header.title,
        });
        if let Some(term) = &header.term {
            h["env"] = serde_json::json!({ "TERM": term, "SHELL": "/bin/sh" });
        }
        if let Some(command) = &header.command {
            h["command"] = serde_json::json!(command);
        }
        rec.line(format!("{h}\n").as_bytes())?;
        rec.flush()?;
        Ok(rec)
    }

    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        self.hasher.update(line);
        self.bytes += line.len() as u64;
        self.out.write_all(line)
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
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        write!(line, "[{t:.6}, \"{}\", ", kind.code())?;
        json_string(&mut line, text);
        line.extend_from_slice(b"]\n");
        let written = self.line(&line);
        self.scratch = line;
        written?;
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

/// Appends `text` as a JSON string, escaped as serde_json escapes it. Terminal output is nearly
/// all plain text, so eight bytes at a time are checked for anything to escape (a control
/// character, `"` or `\\`) and copied in runs; this is the recorder's hottest loop.
fn json_string(out: &mut Vec<u8>, text: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `w` is zero; never misses one (it may flag a word needlessly,
    // which only sends it down the byte-by-byte path).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let needs_escape = |w: u64| {
        has_zero(w & !(ONES * 0x1f)) || has_zero(w ^ (ONES * 0x22)) || has_zero(w ^ (ONES * 0x5c))
    };
    let bytes = text.as_bytes();
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
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

    #[test]
    fn the_filesystem_store_refuses_odd_ids_and_unwritable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRecordings::new(dir.path().join("rec"));
        assert!(store.create("../x").is_err());
        let mut w = store.create("abc-1").unwrap();
        w.write_all(b"x").unwrap();
        assert_eq!(store.read("abc-1").unwrap(), b"x");
        // A file where the directory should be: nothing can be written.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        assert!(FsRecordings::new(blocked).create("abc-2").is_err());
    }
}
