//! What hyper does not tell: whether a request's head named both `Content-Length` and
//! `Transfer-Encoding`.
//!
//! hyper reads such a request by its chunked coding alone and drops the `Content-Length`
//! before the router sees the head (as RFC 9112 allows), so a proxy in front that read it by
//! its length would see another body, and the next request in another place. The API refuses
//! it (`400 bad_framing`), and learns of it from this reader of the connection's bytes: it
//! follows the requests' framing as hyper reads it (heads, bodies by length or by chunk) and
//! notes of each head, in order, whether it named both. The framing it cannot follow (a head
//! or chunk line hyper would refuse itself) ends its watch: hyper answers such a request and
//! closes the connection.
//!
//! Its cost is linear in the bytes read: each is looked at a bounded number of times, however
//! the bytes are cut into reads (empty lines before a request line are passed over once and
//! not kept), and it holds no more of a head than hyper does ([`HEAD_LIMIT`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head read, the empty lines before its request line included: hyper's
/// `max_buf_size`, so hyper refuses a longer one itself (`431`, and the connection closed), and
/// neither it nor this reader holds more of a head than this. Room for a request target at its
/// limit ([`URI_LIMIT`](crate::api::URI_LIMIT), 8 KiB) and headers at theirs
/// ([`HEADERS_LIMIT`](crate::api::HEADERS_LIMIT), 16 KiB), with 8 KiB to spare, so that a head
/// just over either limit still reaches the API, which tells what was too large and audits it.
pub const HEAD_LIMIT: usize = crate::api::URI_LIMIT + crate::api::HEADERS_LIMIT + 8 * 1024;
/// Longest chunk-size line (with its extensions) or trailer line followed.
const LINE_MAX: usize = 64 * 1024;

/// Of each request head read on one connection, in order, whether it named both
/// `Content-Length` and `Transfer-Encoding`; shared by the connection's reader and its requests.
#[derive(Debug, Clone, Default)]
pub struct Heads(Arc<Mutex<VecDeque<bool>>>);

impl Heads {
    /// Whether the next request hyper hands on named both lengths: each request takes its own
    /// head's answer, in the order they were read. `false` when the framing was not followed.
    pub fn next_framed_both_ways(&self) -> bool {
        self.0
            .lock()
            .map(|mut q| q.pop_front().unwrap_or(false))
            .unwrap_or(false)
    }

    fn push(&self, both: bool) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(both);
        }
    }
}

/// A request head read so far.
#[derive(Debug, Default)]
struct Head {
    /// Bytes of the empty lines before its request line (hyper skips them): counted towards
    /// [`HEAD_LIMIT`], not kept.
    blank: usize,
    /// The head from its request line on.
    kept: Vec<u8>,
}

/// Where in the stream of requests the reader is.
#[derive(Debug)]
enum At {
    /// In a head.
    Head(Head),
    /// In a body of this many more bytes.
    Body(u64),
    /// In a chunk-size line, kept so far.
    ChunkSize(Vec<u8>),
    /// In a chunk's data, this many bytes more, then its line end.
    ChunkData(u64),
    /// At the line end after a chunk's data.
    ChunkEnd,
    /// In the trailers after the last chunk: the current line so far.
    Trailers(Vec<u8>),
    /// Framing this reader does not follow (hyper refuses it): nothing more is noted.
    Lost,
}

/// `io`, whose bytes read are followed as requests ([`Heads`]).
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    at: At,
    heads: Heads,
}

impl<T> Watched<T> {
    /// `io`, noting into `heads` what its request heads name.
    pub fn new(io: T, heads: Heads) -> Self {
        Self {
            io,
            at: At::Head(Head::default()),
            heads,
        }
    }

    /// Follows `bytes`, the next read from the connection.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let at = std::mem::replace(&mut self.at, At::Lost);
            self.at = match at {
                At::Lost => return,
                At::Head(mut head) => {
                    if head.kept.is_empty() {
                        // Empty lines before a request line: passed over once, never kept.
                        let blank = blank_prefix(bytes);
                        head.blank += blank;
                        bytes = &bytes[blank..];
                    }
                    let taken = line_end(bytes).unwrap_or(bytes.len());
                    head.kept.extend_from_slice(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if head.blank + head.kept.len() > HEAD_LIMIT {
                        At::Lost
                    } else if head_complete(&head.kept) {
                        self.end_of_head(&head.kept)
                    } else {
                        At::Head(head)
                    }
                }
                At::Body(left) => match skip(&mut bytes, left) {
                    0 => At::Head(Head::default()),
                    more => At::Body(more),
                },
                At::ChunkSize(line) => match line_so_far(line, &mut bytes) {
                    Line::Ended(line) => match chunk_size(&line) {
                        Some(0) => At::Trailers(Vec::new()),
                        Some(size) => At::ChunkData(size),
                        None => At::Lost,
                    },
                    Line::Partial(line) => At::ChunkSize(line),
                    Line::TooLong => At::Lost,
                },
                At::ChunkData(left) => match skip(&mut bytes, left) {
                    0 => At::ChunkEnd,
                    more => At::ChunkData(more),
                },
                At::ChunkEnd => match bytes[0] {
                    b'\r' => {
                        bytes = &bytes[1..];
                        At::ChunkEnd
                    }
                    b'\n' => {
                        bytes = &bytes[1..];
                        At::ChunkSize(Vec::new())
                    }
                    _ => At::Lost,
                },
                At::Trailers(line) => match line_so_far(line, &mut bytes) {
                    Line::Ended(line) if trim_line(&line).is_empty() => At::Head(Head::default()),
                    Line::Ended(_) => At::Trailers(Vec::new()),
                    Line::Partial(line) => At::Trailers(line),
                    Line::TooLong => At::Lost,
                },
            };
        }
    }

    /// Notes what `head`, a whole request head from its request line on, names, and says where
    /// its body takes the reader.
    fn end_of_head(&mut self, head: &[u8]) -> At {
        examined(head.len());
        let mut lines = head.split(|b| *b == b'\n').map(trim_line);
        // The request line.
        if lines.next().is_none() {
            return At::Head(Head::default());
        }
        let mut lengths = Vec::new();
        let mut codings = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return At::Lost;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths.push(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                codings.extend(value.split(',').map(|c| c.trim().to_owned()));
            }
        }
        let te = !codings.is_empty();
        self.heads.push(te && !lengths.is_empty());
        if te {
            return match codings.last().map(String::as_str) {
                Some("chunked") => At::ChunkSize(Vec::new()),
                _ => At::Lost,
            };
        }
        let mut length = None;
        for v in lengths.iter().flat_map(|v| v.split(',')) {
            match (v.trim().parse::<u64>().ok(), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return At::Lost,
            }
        }
        match length {
            Some(n) if n > 0 => At::Body(n),
            _ => At::Head(Head::default()),
        }
    }
}

/// How many bytes of `bytes` up to and including the first line feed, if there is one.
fn line_end(bytes: &[u8]) -> Option<usize> {
    let end = bytes.iter().position(|b| *b == b'\n').map(|at| at + 1);
    examined(end.unwrap_or(bytes.len()));
    end
}

/// How many bytes `bytes` begins with that are carriage returns and line feeds.
fn blank_prefix(bytes: &[u8]) -> usize {
    let blank = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    examined((blank + 1).min(bytes.len()));
    blank
}

#[cfg(test)]
thread_local! {
    /// Bytes looked at by this thread's readers: the tests hold it to the bytes read.
    static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts `n` bytes looked at (in tests).
#[cfg(test)]
fn examined(n: usize) {
    EXAMINED.with(|e| e.set(e.get() + n));
}

#[cfg(not(test))]
fn examined(_: usize) {}

/// Passes over up to `left` bytes of `bytes` (a body's or a chunk's), saying how many are left.
fn skip(bytes: &mut &[u8], left: u64) -> u64 {
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
    *bytes = &bytes[n..];
    left - n as u64
}

/// A chunk-size or trailer line, read on from where an earlier read left it.
enum Line {
    Ended(Vec<u8>),
    Partial(Vec<u8>),
    /// Longer than [`LINE_MAX`] without ending: not followed further.
    TooLong,
}

/// `line` so far with what `bytes` holds of it taken from them.
fn line_so_far(mut line: Vec<u8>, bytes: &mut &[u8]) -> Line {
    let (taken, ended) = match line_end(bytes) {
        Some(n) => (n, true),
        None => (bytes.len(), false),
    };
    line.extend_from_slice(&bytes[..taken]);
    *bytes = &bytes[taken..];
    if ended {
        Line::Ended(line)
    } else if line.len() > LINE_MAX {
        Line::TooLong
    } else {
        Line::Partial(line)
    }
}

/// `line` without its line feed and carriage return.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `head`, read from its request line on, ends in the empty line that ends a request
/// head. Only its last bytes are looked at.
fn head_complete(head: &[u8]) -> bool {
    examined(head.len().min(3));
    head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n")
}

/// The size a chunk-size line gives, without its extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = trim_line(line);
    let digits = line.split(|b| *b == b';').next().unwrap_or(line);
    let digits = std::str::from_utf8(digits).ok()?.trim();
    u64::from_str_radix(digits, 16).ok()
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.follow(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followed(chunks: &[&[u8]]) -> Vec<bool> {
        let heads = Heads::default();
        let mut w = Watched::new((), heads.clone());
        for c in chunks {
            w.follow(c);
        }
        let q = heads.0.lock().unwrap();
        q.iter().copied().collect()
    }

    #[test]
    fn each_head_is_noted_in_order_through_bodies_of_either_framing() {
        let plain = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let both = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhe\r\nl\r\n0\r\nTrailer: t\r\n\r\n";
        let reversed =
            b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n";
        let get = b"\r\nGET /d HTTP/1.1\nHost: x\n\n";
        let all = [&plain[..], both, reversed, get, plain].concat();
        assert_eq!(followed(&[&all]), [false, true, true, false, false]);
        // However the bytes are cut into reads.
        let bytewise: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(followed(&bytewise), [false, true, true, false, false]);
    }

    #[test]
    fn framing_hyper_would_refuse_ends_the_watch() {
        let bad = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let next = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(followed(&[bad, next]), [false]);
        let heads = Heads::default();
        assert!(!heads.next_framed_both_ways());
    }

    #[test]
    fn empty_lines_before_a_request_line_are_looked_at_once_each_and_not_kept() {
        let heads = Heads::default();
        let mut w = Watched::new((), heads.clone());
        let request = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let blank = HEAD_LIMIT - request.len();
        EXAMINED.with(|e| e.set(0));
        // A line at a time, as a client trickling them sends them, then the head a byte at a
        // time: each read looks at its own bytes, not again at those before it.
        for _ in 0..blank {
            w.follow(b"\n");
        }
        assert!(matches!(&w.at, At::Head(h) if h.blank == blank && h.kept.capacity() == 0));
        for b in request {
            w.follow(std::slice::from_ref(b));
        }
        let looked = EXAMINED.with(std::cell::Cell::get);
        let read = blank + request.len();
        assert!(
            looked <= 3 * read,
            "{looked} bytes looked at for {read} read"
        );
        // A head of exactly the limit, empty lines included, is followed.
        assert!(heads.next_framed_both_ways());
    }

    #[test]
    fn a_head_longer_than_hyper_reads_is_let_go() {
        // Empty lines alone: at the limit still followed, past it let go.
        let mut w = Watched::new((), Heads::default());
        w.follow(&vec![b'\n'; HEAD_LIMIT]);
        assert!(matches!(&w.at, At::Head(h) if h.blank == HEAD_LIMIT));
        w.follow(b"\r\n");
        assert!(matches!(w.at, At::Lost));
        // A header line that never ends, read in pieces: nothing more is kept of it.
        let mut w = Watched::new((), Heads::default());
        w.follow(b"GET / HTTP/1.1\r\nX-Pad: ");
        for _ in 0..HEAD_LIMIT / 1024 {
            w.follow(&[b'p'; 1024]);
        }
        assert!(matches!(w.at, At::Lost));
        // Empty lines and a head past the limit together.
        let mut w = Watched::new((), Heads::default());
        w.follow(&vec![b'\n'; HEAD_LIMIT - 10]);
        w.follow(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(w.at, At::Lost));
    }
}
