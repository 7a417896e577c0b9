//! The client's input on its way to the target.
//!
//! A connection's messages are read in order by one loop, which stops reading the connection
//! altogether while a channel's reader lags; the client's window adjustments, end of file and
//! close are among those messages. So the relay reads what the client sends as soon as it
//! arrives, whatever the target is doing, and keeps here what the target has not taken yet:
//! were it to wait for the target's window before reading on, the target's output would wait
//! for a window the client had opened but nobody read, the target would stop reading its
//! input, and the two directions would wait for each other for ever.
//!
//! The library opens the client's window again as soon as data arrives, so what may wait here
//! is bounded by each session instead: once it holds [`BACKLOG`] bytes the client is given a
//! window of [`TRICKLE`] bytes at a time on that channel ([`window`]) until its target catches
//! up (the connection's other channels go on at full speed), and a session that holds
//! [`LIMIT`] bytes all the same (a target taking none of the input its client goes on sending)
//! is ended.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use russh::Sig;
use tokio::sync::Notify;

/// Bytes a session may hold for its target before its client is slowed down.
const BACKLOG: usize = 4 * 1024 * 1024;
/// The window given while a session is over its [`BACKLOG`]: the least the library still
/// opens again once the client has used it (it does so when less than half is left). Small, so
/// that a target that reads its input late (`sleep 2; cat > f`) gets it all rather than its
/// session ended at [`LIMIT`]; the price is a stream of tiny packets while it does not read.
const TRICKLE: u32 = 2;
/// Bytes one session may hold for its target: what the client sends after it was slowed down
/// to [`TRICKLE`], if its target still takes nothing for a long while.
pub(crate) const LIMIT: usize = 64 * 1024 * 1024;
/// Data pieces are joined up to this size, so that a trickle of small messages costs its bytes
/// and not a queue entry each.
const PIECE: usize = 32 * 1024;

/// The window to give the client next, for a session holding `backlog` bytes for its target:
/// `open` (the configured window) until it holds [`BACKLOG`].
pub(crate) fn window(backlog: &AtomicUsize, open: u32) -> u32 {
    if backlog.load(Ordering::Acquire) < BACKLOG {
        open
    } else {
        TRICKLE
    }
}

/// What the client sent for the target, in order, and what Warden tells the client about it.
#[derive(Debug)]
pub(crate) enum Up {
    Data(BytesMut),
    Eof,
    WindowChange {
        cols: u32,
        rows: u32,
        px: u32,
        py: u32,
    },
    Signal(Sig),
    /// A notice for the user (a blocked line), shown once what was typed before it went on.
    Notice(Bytes),
}

/// One session's queue, counted in bytes (also in the count its channel's window is judged by).
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: std::sync::Mutex<Queue>,
    ready: Notify,
    held: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Up>,
    /// Data bytes queued or being sent, not yet taken by the target.
    bytes: usize,
}

impl Inbox {
    /// An empty queue of a session whose channel's window is judged by `held`.
    pub(crate) fn new(held: Arc<AtomicUsize>) -> Self {
        Self {
            queue: std::sync::Mutex::new(Queue::default()),
            ready: Notify::new(),
            held,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item` without waiting; false once the session holds more than [`LIMIT`] bytes.
    pub(crate) fn push(&self, item: Up) -> bool {
        let mut queue = self.lock();
        match item {
            Up::Data(data) => {
                queue.bytes += data.len();
                self.held.fetch_add(data.len(), Ordering::AcqRel);
                match queue.items.back_mut() {
                    Some(Up::Data(last)) if last.len() + data.len() <= PIECE => {
                        last.extend_from_slice(&data);
                    }
                    _ => queue.items.push_back(Up::Data(data)),
                }
            }
            other => queue.items.push_back(other),
        }
        let within = queue.bytes <= LIMIT;
        drop(queue);
        self.ready.notify_one();
        within
    }

    /// The next item, once there is one. Data stays counted until [`Inbox::taken`].
    pub(crate) async fn next(&self) -> Up {
        loop {
            if let Some(item) = self.lock().items.pop_front() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    /// Counts `bytes` of data as taken by the target.
    pub(crate) fn taken(&self, bytes: usize) {
        let mut queue = self.lock();
        queue.bytes -= bytes;
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Drop for Inbox {
    /// A session that ends gives back what it held.
    fn drop(&mut self) {
        let held = self.lock().bytes;
        self.held.fetch_sub(held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Up {
        Up::Data(BytesMut::from(&vec![7u8; n][..]))
    }

    #[tokio::test]
    async fn small_pieces_are_joined_and_counted_until_taken() {
        let connection = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox::new(connection.clone());
        for _ in 0..1000 {
            assert!(inbox.push(data(2)));
        }
        assert!(inbox.push(Up::Eof));
        assert_eq!(connection.load(Ordering::Acquire), 2000);
        let Up::Data(joined) = inbox.next().await else {
            panic!("data first")
        };
        assert_eq!(joined.len(), 2000, "one piece for a trickle of messages");
        assert!(matches!(inbox.next().await, Up::Eof));
        assert_eq!(connection.load(Ordering::Acquire), 2000, "until taken");
        inbox.taken(2000);
        assert_eq!(connection.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn the_client_is_slowed_down_past_the_backlog_and_a_session_ended_past_its_limit() {
        let connection = Arc::new(AtomicUsize::new(0));
        let one = Inbox::new(connection.clone());
        assert_eq!(window(&connection, 1 << 21), 1 << 21);
        for _ in 0..BACKLOG / PIECE {
            assert!(one.push(data(PIECE)));
        }
        assert_eq!(window(&connection, 1 << 21), TRICKLE);
        // Another session's count is its own.
        let other = Arc::new(AtomicUsize::new(0));
        let two = Inbox::new(other.clone());
        assert!(two.push(data(10)));
        assert_eq!(window(&other, 1 << 21), 1 << 21);
        drop(one);
        assert_eq!(
            connection.load(Ordering::Acquire),
            0,
            "an ended session gives back"
        );
        while two.push(data(PIECE)) {}
        assert!(two.lock().bytes > LIMIT);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let inbox = Arc::new(Inbox::new(Arc::new(AtomicUsize::new(0))));
        let reader = tokio::spawn({
            let inbox = inbox.clone();
            async move { matches!(inbox.next().await, Up::Signal(Sig::INT)) }
        });
        tokio::task::yield_now().await;
        assert!(inbox.push(Up::Signal(Sig::INT)));
        assert!(reader.await.unwrap());
    }
}
