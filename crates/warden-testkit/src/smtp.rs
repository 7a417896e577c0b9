//! A real SMTP server on 127.0.0.1 that keeps what it receives: Python's `smtpd`
//! `DebuggingServer` (Python 3.11), which prints every message it accepts, or for a relay that
//! demands TLS and a login, Debian's `aiosmtpd` with a [`TestCa`] certificate. Killed when
//! dropped.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::process::{read_lossy, wait_listening};
use crate::{TestCa, free_port};

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
        let (dir, out, port) = files();
        let mut python = Command::new("python3");
        python
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
            .arg(format!("127.0.0.1:{port}"));
        spawn(
            python,
            dir,
            out,
            port,
            "python3 -m smtpd (Python 3.11's SMTP server)",
        )
    }

    /// Starts `aiosmtpd` demanding TLS (STARTTLS before anything else, or TLS from the first
    /// byte) with `ca`'s certificate, and a login as `user` with `password` before any mail.
    /// Each kept message starts with `X-Sink-TLS: yes|no` and `X-Sink-Login: USER|-`.
    pub fn start_secure(tls: SmtpTls, ca: &TestCa, user: &str, password: &str) -> SmtpSink {
        aiosmtpd(RELAY, |python, port, out| {
            python
                .arg(match tls {
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Tls => "tls",
                })
                .arg(port.to_string())
                .arg(ca.cert_file())
                .arg(ca.key_file())
                .args([user, password])
                .arg(out);
        })
    }

    /// Starts `aiosmtpd` (plain, no login) refusing for good (`550 5.1.1`) every recipient in
    /// `unknown`, as a relay does a mailbox it does not know, and keeping the rest. Each kept
    /// message starts with `X-Sink-To: ADDRESS,...`, the envelope's recipients.
    pub fn start_refusing(unknown: &[&str]) -> SmtpSink {
        Self::start_refusing_some(unknown, &[])
    }

    /// Like [`SmtpSink::start_refusing`], and refusing for now (`451 4.2.1`) every recipient
    /// in `busy` until [`SmtpSink::take_busy`] is called; [`SmtpSink::refused_for_now`]
    /// counts those answers.
    pub fn start_refusing_some(unknown: &[&str], busy: &[&str]) -> SmtpSink {
        aiosmtpd(REFUSING, |python, port, out| {
            std::fs::write(busy_flag(out), "").expect("the relay's busy flag");
            python
                .arg(port.to_string())
                .arg(out)
                .arg(busy_flag(out))
                .args(unknown.iter().map(|a| format!("550:{a}")))
                .args(busy.iter().map(|a| format!("451:{a}")));
        })
    }

    /// From now on, a [`SmtpSink::start_refusing_some`] relay takes the recipients it refused
    /// for now.
    pub fn take_busy(&self) {
        std::fs::remove_file(busy_flag(&self.out)).expect("removing the relay's busy flag");
    }

    /// How many recipients a [`SmtpSink::start_refusing_some`] relay refused for now so far.
    pub fn refused_for_now(&self) -> usize {
        read_lossy(&self.out)
            .lines()
            .filter(|l| l.starts_with("REFUSED-FOR-NOW "))
            .count()
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

/// How a [`SmtpSink::start_secure`] relay protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain at first; STARTTLS required before a login or a message.
    Starttls,
    /// TLS from the first byte ("SMTPS").
    Tls,
}

/// The file whose presence has a refusing relay refuse its busy recipients for now.
fn busy_flag(out: &std::path::Path) -> PathBuf {
    out.with_file_name("busy")
}

/// A temp dir, the log file in it, and a free port.
fn files() -> (TempDir, PathBuf, u16) {
    let dir = tempfile::Builder::new()
        .prefix("warden-smtp-")
        .tempdir()
        .expect("a temp dir for the SMTP sink");
    let out = dir.path().join("messages.log");
    (dir, out, free_port())
}

/// Runs `script` with Debian's Python (where python3-aiosmtpd is installed), its arguments
/// given by `args` from the port and the log file, and waits until it accepts connections.
fn aiosmtpd(script: &str, args: impl FnOnce(&mut Command, u16, &std::path::Path)) -> SmtpSink {
    let (dir, out, port) = files();
    let path = dir.path().join("relay.py");
    std::fs::write(&path, script).expect("writing the relay's script");
    let mut python = Command::new("/usr/bin/python3");
    python.arg("-u").arg(&path);
    args(&mut python, port, &out);
    spawn(
        python,
        dir,
        out,
        port,
        "aiosmtpd (Debian's python3-aiosmtpd)",
    )
}

/// Starts `command` with its output to `out` and waits until it accepts connections on `port`.
fn spawn(mut command: Command, dir: TempDir, out: PathBuf, port: u16, what: &str) -> SmtpSink {
    let child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("the SMTP sink's log"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut sink = SmtpSink {
        port,
        child,
        out,
        _dir: dir,
    };
    wait_listening(&mut sink.child, port, &format!("the SMTP sink ({what})"));
    sink
}

/// The relay demanding TLS and a login: keeps each message in the `DebuggingServer` log's
/// format, after two lines saying whether it came over TLS and who logged in.
const RELAY: &str = r#"
import ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, user, password, out = sys.argv[1:]

class Keep:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.decode() if session.authenticated else "-"
        tls = mode == "tls" or session.ssl is not None
        lines = ["X-Sink-TLS: " + ("yes" if tls else "no"),
                 "X-Sink-Login: " + login]
        lines += envelope.content.decode("utf-8", "replace").splitlines()
        with open(out, "a") as f:
            f.write("---------- MESSAGE FOLLOWS ----------\n" + "\n".join(lines)
                    + "\n------------ END MESSAGE ------------\n")
        return "250 OK"

def check(server, session, envelope, mechanism, data):
    ok = (isinstance(data, LoginPassword) and data.login == user.encode()
          and data.password == password.encode())
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
common = dict(hostname="127.0.0.1", port=int(port), authenticator=check, auth_required=True)
if mode == "starttls":
    relay = Controller(Keep(), tls_context=ctx, require_starttls=True, **common)
else:
    # The listener speaks only TLS, which aiosmtpd does not count as TLS for AUTH.
    relay = Controller(Keep(), ssl_context=ctx, auth_require_tls=False, **common)
relay.start()
threading.Event().wait()
"#;

/// The relay refusing some recipients for good (`550:ADDRESS` arguments), and some for now
/// (`451:ADDRESS`) while the busy flag file exists, logging a line for each of those: keeps
/// each message in the `DebuggingServer` log's format, after a line naming the envelope's
/// recipients.
const REFUSING: &str = r#"
import os, sys, threading
from aiosmtpd.controller import Controller

port, out, busy_flag, *refused = sys.argv[1:]
unknown = [a[4:] for a in refused if a.startswith("550:")]
busy = [a[4:] for a in refused if a.startswith("451:")]

class Keep:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in unknown:
            return "550 5.1.1 no such user"
        if address in busy and os.path.exists(busy_flag):
            with open(out, "a") as f:
                f.write("REFUSED-FOR-NOW " + address + "\n")
            return "451 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        lines = ["X-Sink-To: " + ",".join(envelope.rcpt_tos)]
        lines += envelope.content.decode("utf-8", "replace").splitlines()
        with open(out, "a") as f:
            f.write("---------- MESSAGE FOLLOWS ----------\n" + "\n".join(lines)
                    + "\n------------ END MESSAGE ------------\n")
        return "250 OK"

relay = Controller(Keep(), hostname="127.0.0.1", port=int(port))
relay.start()
threading.Event().wait()
"#;

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
