//! A real SMTP server on 127.0.0.1 that keeps what it receives: Python's `smtpd`
//! `DebuggingServer` (Python 3.11), which prints every message it accepts. Killed when
//! dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::process::{POLL, read_lossy};

const READY_LIMIT: Duration = Duration::from_secs(10);

/// A running SMTP sink.
#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    child: Child,
    out: PathBuf,
    _dir: TempDir,
}

impl SmtpSink {
    /// Starts `python3 -m smtpd -n -c DebuggingServer` on a free port and waits until it
    /// accepts connections.
    pub fn start() -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("warden-smtp-")
            .tempdir()
            .expect("a temp dir for the SMTP sink");
        let out = dir.path().join("messages.log");
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-u",
                "-W",
                "ignore",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("the SMTP sink's log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m smtpd (Python 3.11's SMTP server)");
        let mut sink = SmtpSink {
            port,
            child,
            out,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_LIMIT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("the SMTP sink exited at start ({status}); it needs Python 3.11's smtpd");
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink did not listen within 10 s"
            );
            thread::sleep(POLL);
        }
        sink
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, headers and body, as text.
    pub fn messages(&self) -> Vec<String> {
        let log = read_lossy(&self.out);
        let mut out = Vec::new();
        let mut current: Option<Vec<String>> = None;
        for line in log.lines() {
            if line.starts_with("---------- MESSAGE FOLLOWS") {
                current = Some(Vec::new());
            } else if line.starts_with("------------ END MESSAGE") {
                if let Some(m) = current.take() {
                    out.push(m.join("\n"));
                }
            } else if let Some(m) = current.as_mut() {
                m.push(unquote(line));
            }
        }
        out
    }
}

/// The server prints each line as a Python bytes literal, `b'...'`.
fn unquote(line: &str) -> String {
    let inner = line
        .strip_prefix("b'")
        .or_else(|| line.strip_prefix("b\""))
        .and_then(|l| l.strip_suffix('\'').or_else(|| l.strip_suffix('"')))
        .unwrap_or(line);
    inner.replace("\\'", "'").replace("\\\\", "\\")
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquotes_printed_lines() {
        assert_eq!(unquote("b'Subject: it\\'s'"), "Subject: it's");
        assert_eq!(unquote("b\"don't\""), "don't");
        assert_eq!(unquote("plain"), "plain");
    }
}
