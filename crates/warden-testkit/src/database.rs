//! What the database server harnesses share: a client session held open, to prove that
//! revoking ends it, and throwaway administrator passwords.

use std::fs::File;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::{POLL, signal, wait_until};

/// A database client that was started with a long-running query and is still connected,
/// stopped when dropped. It runs under `timeout`, which bounds it.
#[derive(Debug)]
pub struct OpenSession {
    child: Child,
}

impl OpenSession {
    /// Starts `cmd` with piped output, then waits up to 10 s for `is_visible` to say the server
    /// lists the session. Panics with the client's output if it exits or never shows up.
    pub(crate) fn start(cmd: &mut Command, what: &str, is_visible: impl Fn() -> bool) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut session = OpenSession { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_visible() {
            if let Some(out) = session.wait(Duration::ZERO) {
                panic!(
                    "{what} exited before its session was established ({})\n--- stderr ---\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not list the session of {what} within 10 s"
            );
            std::thread::sleep(POLL);
        }
        session
    }

    /// Waits at most `limit` for the client to exit. Returns its status and output, or `None`
    /// if it is still running.
    pub fn wait(&mut self, limit: Duration) -> Option<Output> {
        let status = wait_until(&mut self.child, limit)?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        // The client has exited, so its pipes are at their end.
        if let Some(pipe) = self.child.stdout.as_mut() {
            let _ = pipe.read_to_end(&mut stdout);
        }
        if let Some(pipe) = self.child.stderr.as_mut() {
            let _ = pipe.read_to_end(&mut stderr);
        }
        Some(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        if wait_until(&mut self.child, Duration::ZERO).is_some() {
            return;
        }
        // The child is `timeout`, which passes SIGTERM on to the client; a SIGKILL would
        // leave the client running.
        signal(self.child.id(), "TERM");
        if wait_until(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// 32 random hex digits from the kernel, for a test server's administrator password.
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` as an SQL string literal, for the harnesses' own setup and probe queries, whose
/// values never hold a backslash (which MariaDB would read as an escape).
pub(crate) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
