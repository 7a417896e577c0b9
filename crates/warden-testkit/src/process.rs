//! Running child processes with a time bound, and sending them signals.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a waiting loop looks at a child or a port again.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// Waits until something accepts connections on 127.0.0.1:`port`, for at most 10 s. Panics if
/// `child` (a server just started, `what`) exits meanwhile, or at the deadline.
pub(crate) fn wait_listening(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 10 s"
        );
        thread::sleep(POLL);
    }
}

/// Runs `cmd` to completion with piped stdio, feeding it `stdin` if given.
///
/// Panics, after killing the child, if it is still running after `limit`;
/// `what` names the command in that message.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&str>,
    limit: Duration,
    what: &str,
) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));

    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_owned();
        // A child that exits without reading its input closes the pipe: not an error here.
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        })
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = wait_until(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {} s and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            limit.as_secs(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr),
        ),
    }
}

/// Reads a pipe to its end on a thread of its own, so a chatty child never blocks.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit for at most `limit`; `None` if it is still running.
pub(crate) fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => return None,
            Err(e) => panic!("waiting for child process {}: {e}", child.id()),
        }
    }
}

/// Sends the named signal (`TERM`, `KILL`, ...) to a process with `kill(1)`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("running kill -s {name} {pid}: {e}"));
    assert!(status.success(), "kill -s {name} {pid} failed: {status}");
}

/// Reads a file written by a child as text; empty if it does not exist yet.
pub(crate) fn read_lossy(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_feeds_stdin_and_collects_output() {
        let out = run_bounded(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Some("hello"),
            Duration::from_secs(10),
            "sh",
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    #[should_panic(expected = "did not finish within 1 s")]
    fn run_bounded_kills_a_hung_child() {
        run_bounded(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_secs(1),
            "sleep",
        );
    }
}
