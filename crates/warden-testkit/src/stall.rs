//! A TCP relay that holds back what a client sends while it contains a given byte string, then
//! delivers it late: a network partition that outlasts the sender's patience, after which the
//! kernel's retransmission still lands the statement Warden gave up on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// A relay on 127.0.0.1 to a local port. While stalling, a chunk a client sends that contains
/// the relay's pattern is held for the relay's hold time, and so is everything the client
/// sends after it on that connection (TCP delivers in order), then passed on, even if the
/// client has gone meanwhile. Plaintext protocols only: the pattern is looked for in what goes
/// over the wire.
#[derive(Debug)]
pub struct StallingRelay {
    port: u16,
    stalling: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    delivered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl StallingRelay {
    /// Starts a relay to `127.0.0.1:to` that, while stalling (not at first), holds chunks
    /// containing `pattern` for `hold`.
    pub fn start(to: u16, pattern: &[u8], hold: Duration) -> StallingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay's port");
        let relay = StallingRelay {
            port: listener.local_addr().expect("the relay's address").port(),
            stalling: Arc::default(),
            held: Arc::default(),
            delivered: Arc::default(),
            stop: Arc::default(),
        };
        let ways = Ways {
            pattern: Arc::from(pattern),
            hold,
            stalling: relay.stalling.clone(),
            held: relay.held.clone(),
            delivered: relay.delivered.clone(),
        };
        let stop = relay.stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                ways.relay(client, server);
            }
        });
        relay
    }

    /// The port clients connect to, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts or stops holding chunks that contain the pattern. A chunk already held is
    /// delivered when its hold time is up either way.
    pub fn stall(&self, on: bool) {
        self.stalling.store(on, Ordering::SeqCst);
    }

    /// How many chunks were held so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// How many held chunks were delivered so far, after their hold.
    pub fn delivered(&self) -> usize {
        self.delivered.load(Ordering::SeqCst)
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What the relay's connections share.
#[derive(Clone)]
struct Ways {
    pattern: Arc<[u8]>,
    hold: Duration,
    stalling: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    delivered: Arc<AtomicUsize>,
}

impl Ways {
    /// Passes `client`'s bytes on to `server`, holding those that match, and `server`'s back.
    fn relay(&self, client: TcpStream, server: TcpStream) {
        let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        let ways = self.clone();
        thread::spawn(move || ways.forward(client_in, server_out));
        thread::spawn(move || back(server, client));
    }

    /// Client to server, in order, holding each chunk that contains the pattern while
    /// stalling. Once the client is done, so is the server's side, after what was held.
    fn forward(&self, mut from: TcpStream, mut into: TcpStream) {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let hold = self.stalling.load(Ordering::SeqCst)
                && chunk
                    .windows(self.pattern.len())
                    .any(|w| w == &*self.pattern);
            if hold {
                self.held.fetch_add(1, Ordering::SeqCst);
                thread::sleep(self.hold);
            }
            let written = into.write_all(chunk);
            if hold {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            if written.is_err() {
                break;
            }
        }
        let _ = into.shutdown(Shutdown::Write);
    }
}

/// Server to client, until either end is done.
fn back(mut from: TcpStream, mut into: TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port that answers each chunk with itself.
    fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[test]
    fn a_matching_chunk_is_held_then_delivered_even_after_the_client_left() {
        let port = echo();
        let relay = StallingRelay::start(port, b"ALTER", Duration::from_millis(600));
        let mut c = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        c.write_all(b"SELECT 1").unwrap();
        let mut buf = [0u8; 8];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"SELECT 1", "nothing is held while not stalling");

        relay.stall(true);
        let started = Instant::now();
        c.write_all(b"ALTER x").unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(500));
        // The echo can come back before the relay's thread counts its write as delivered.
        let deadline = Instant::now() + Duration::from_secs(5);
        while relay.delivered() < 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!((relay.held(), relay.delivered()), (1, 1));

        // Held while its client gives up and goes: delivered all the same.
        c.write_all(b"ALTER y").unwrap();
        drop(c);
        thread::sleep(Duration::from_millis(100));
        assert_eq!((relay.held(), relay.delivered()), (2, 1));
        thread::sleep(Duration::from_millis(800));
        assert_eq!(relay.delivered(), 2);
    }
}
