//! The `warden` server as a child process on a free port of 127.0.0.1, with
//! its output captured to files and its readiness awaited on `/readyz`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cli::{Cli, scrub_warden_env};
use crate::process::{POLL, read_lossy, signal, wait_until};
use crate::{free_port, http_get};

const READY_LIMIT: Duration = Duration::from_secs(20);
const STOP_LIMIT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;

/// A running `warden` server, killed when dropped.
///
/// Started as `BIN ARGS... --listen 127.0.0.1:PORT --data-dir DIR`, with the
/// caller's environment variables and none of the `WARDEN_*` ones the test
/// process itself happens to have. Stdout and stderr go to files in a
/// temporary directory, appended to across [`Server::restart`]s.
#[derive(Debug)]
pub struct Server {
    dir: TempDir,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    data_dir: PathBuf,
    port: u16,
    /// The current process; `None` only while being launched.
    child: Option<Child>,
}

/// Why a started server did not become ready.
enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

impl Server {
    /// Starts the server with a fresh data directory, `<tempdir>/data` (not
    /// created beforehand), and waits until `GET /readyz` answers 200.
    /// Panics with the server's output if that does not happen within 20 s.
    pub fn start(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let dir = temp_dir();
        let data_dir = dir.path().join("data");
        Server::launch(dir, bin, data_dir, args, envs)
    }

    /// Like [`Server::start`], but on the caller's data directory, e.g. one
    /// kept from an earlier server to test what survives a restart.
    pub fn start_in(bin: &Path, data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::launch(temp_dir(), bin, data_dir.to_path_buf(), args, envs)
    }

    fn launch(
        dir: TempDir,
        bin: &Path,
        data_dir: PathBuf,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let mut server = Server {
            dir,
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            data_dir,
            port: 0,
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            server.spawn();
            match server.wait_ready() {
                Ok(()) => return server,
                // Another process took the port between free_port() and bind.
                Err(NotReady::Exited(_)) if attempt < PORT_ATTEMPTS && server.lost_port_race() => {
                    continue;
                }
                Err(why) => server.fail(why),
            }
        }
        unreachable!("every attempt either returns, retries or panics")
    }

    /// Starts the server again on the same port, data directory, arguments
    /// and environment, after [`Server::kill_hard`] or [`Server::terminate`],
    /// and waits until it is ready. Panics if the old process still runs.
    pub fn restart(&mut self) {
        assert!(
            self.exit_status().is_some(),
            "restart() needs the server stopped first (kill_hard or terminate)"
        );
        self.spawn();
        if let Err(why) = self.wait_ready() {
            self.fail(why);
        }
    }

    /// Like [`Server::restart`], for a server expected to serve while it says it is not ready:
    /// waits until `/readyz` answers at all, whatever its status.
    pub fn restart_unready(&mut self) {
        assert!(
            self.exit_status().is_some(),
            "restart_unready() needs the server stopped first (kill_hard or terminate)"
        );
        self.spawn();
        let deadline = Instant::now() + READY_LIMIT;
        while http_get(self.port, "/readyz").is_err() {
            if let Some(status) = self.exit_status() {
                self.fail(NotReady::Exited(status));
            }
            if Instant::now() >= deadline {
                self.fail(NotReady::TimedOut);
            }
            thread::sleep(POLL);
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the SSH proxy listens on, from the line the server prints at start.
    /// Panics if it printed none.
    pub fn ssh_port(&self) -> u16 {
        let out = self.stdout();
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("Warden SSH proxy listening on 127.0.0.1:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the server printed no SSH proxy address\n{out}"))
    }

    /// The data directory passed as `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id of the current server process.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The exit status if the server process has exited, `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Everything the server has written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout.log"))
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    /// A CLI client of this server that uses the same binary.
    pub fn cli(&self) -> Cli {
        Cli::new(&self.bin, &self.url())
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to 10 s for the server to exit, returning
    /// its exit status. Panics (after SIGKILL) if it is still running then.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        let child = self
            .child
            .as_mut()
            .expect("a launched server has a process");
        signal(child.id(), "TERM");
        match wait_until(child, STOP_LIMIT) {
            Some(status) => status,
            None => {
                self.kill_hard();
                panic!(
                    "warden server did not exit within {} s of SIGTERM\n{}",
                    STOP_LIMIT.as_secs(),
                    self.output_report()
                );
            }
        }
    }

    fn spawn(&mut self) {
        let log = |name: &str| -> File {
            let path = self.dir.path().join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            // Tests run side by side: the SSH proxy takes any free port too.
            .arg("--ssh-listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        scrub_warden_env(&mut cmd);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display())),
        );
    }

    fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(NotReady::Exited(status));
            }
            if http_get(self.port, "/readyz").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            thread::sleep(POLL);
        }
    }

    fn child(&self) -> &Child {
        self.child
            .as_ref()
            .expect("a launched server has a process")
    }

    fn lost_port_race(&self) -> bool {
        let err = self.stderr();
        err.contains("Address already in use") || err.contains("AddrInUse")
    }

    fn fail(&mut self, why: NotReady) -> ! {
        let what = match why {
            NotReady::Exited(status) => format!("exited before it was ready ({status})"),
            NotReady::TimedOut => {
                self.kill_hard();
                format!(
                    "did not answer 200 on GET /readyz within {} s",
                    READY_LIMIT.as_secs()
                )
            }
        };
        panic!(
            "warden server {} on {} {what}\n{}",
            self.bin.display(),
            self.url(),
            self.output_report()
        );
    }

    fn output_report(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("warden-server-")
        .tempdir()
        .expect("creating a temp dir for the server")
}
