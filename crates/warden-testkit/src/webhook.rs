//! A webhook receiver on 127.0.0.1: answers every POST with a status the test chooses (200
//! by default), remembers the JSON bodies it accepted, and can be stopped and started again on
//! the same port to play a receiver that is down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::process::POLL;

#[derive(Debug, Default)]
struct Inbox {
    /// Bodies answered with 2xx, in arrival order.
    accepted: Vec<serde_json::Value>,
    /// POSTs answered otherwise.
    refused: usize,
    status: u16,
}

/// A running receiver; stopped when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    port: u16,
    inbox: Arc<Mutex<Inbox>>,
    running: Option<Arc<AtomicBool>>,
}

impl WebhookReceiver {
    /// Starts on a free port, answering 200.
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a webhook port");
        let port = listener.local_addr().expect("local address").port();
        let mut r = WebhookReceiver {
            port,
            inbox: Arc::new(Mutex::new(Inbox {
                status: 200,
                ..Inbox::default()
            })),
            running: None,
        };
        r.serve(listener);
        r
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Answers every further POST with `status` (e.g. 500), or 200 again.
    pub fn answer(&self, status: u16) {
        self.inbox.lock().unwrap().status = status;
    }

    /// Stops listening and drops open connections: connections are refused until
    /// [`WebhookReceiver::resume`].
    pub fn stop(&mut self) {
        if let Some(flag) = self.running.take() {
            flag.store(false, Ordering::SeqCst);
            // Wait for the accept loop to see it and close the listener.
            thread::sleep(POLL * 4);
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "the receiver is running");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, self.port))
            .unwrap_or_else(|e| panic!("rebinding webhook port {}: {e}", self.port));
        self.serve(listener);
    }

    /// The JSON bodies accepted so far, in arrival order.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.inbox.lock().unwrap().accepted.clone()
    }

    /// How many POSTs were answered with something other than 2xx.
    pub fn refused(&self) -> usize {
        self.inbox.lock().unwrap().refused
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let running = Arc::new(AtomicBool::new(true));
        self.running = Some(running.clone());
        let inbox = self.inbox.clone();
        thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (inbox, running) = (inbox.clone(), running.clone());
                        thread::spawn(move || {
                            let _ = serve_posts(conn, &inbox, &running);
                        });
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
        });
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(flag) = self.running.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

fn serve_posts(conn: TcpStream, inbox: &Mutex<Inbox>, running: &AtomicBool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        // Idle keep-alive connections close once the receiver stops.
        loop {
            match reader.read_line(&mut request_line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !running.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let (mut length, mut close) = (0, false);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        if !running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let status = {
            let mut inbox = inbox.lock().unwrap();
            let status = inbox.status;
            if (200..300).contains(&status) {
                let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                });
                inbox.accepted.push(v);
            } else {
                inbox.refused += 1;
            }
            status
        };
        writer.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
