//! The `warden` binary run as a CLI client with a home directory of its own,
//! pointed at a test server through `WARDEN_SERVER` and `WARDEN_HOME`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::run_bounded;

const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A CLI client: the `warden` binary, the server it talks to, and a private
/// `WARDEN_HOME` (a temporary directory) where it keeps what it keeps.
#[derive(Debug)]
pub struct Cli {
    bin: PathBuf,
    server_url: String,
    home: TempDir,
}

/// What one CLI run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    /// The exit code; -1 if the process was ended by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Whether the exit code was 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl Cli {
    /// A client of the server at `server_url`, with a new empty home.
    pub fn new(bin: &Path, server_url: &str) -> Cli {
        let home = tempfile::Builder::new()
            .prefix("warden-cli-")
            .tempdir()
            .expect("creating a temp dir for WARDEN_HOME");
        Cli {
            bin: bin.to_path_buf(),
            server_url: server_url.to_owned(),
            home,
        }
    }

    /// The directory passed as `WARDEN_HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The server URL passed as `WARDEN_SERVER`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Runs `warden ARGS...`, feeding `stdin` if given (otherwise stdin is
    /// empty). Panics, after killing it, if it runs longer than 30 s.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        scrub_warden_env(&mut cmd);
        cmd.env("WARDEN_SERVER", &self.server_url)
            .env("WARDEN_HOME", self.home.path());
        let out = run_bounded(
            &mut cmd,
            stdin,
            RUN_LIMIT,
            &format!("warden {}", args.join(" ")),
        );
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `warden ARGS... --json`, asserts it exited 0 and parses its
    /// stdout as JSON. Panics with the command's stderr otherwise.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, None);
        assert!(
            out.success(),
            "`warden {}` exited {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            all.join(" "),
            out.code,
            out.stderr,
            out.stdout
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`warden {}` printed no valid JSON ({e})\n--- stdout ---\n{}",
                all.join(" "),
                out.stdout
            )
        })
    }
}

/// Removes from `cmd`'s environment every `WARDEN_*` variable inherited from
/// the test process, so a developer's own settings never leak into a test.
pub(crate) fn scrub_warden_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            cmd.env_remove(key);
        }
    }
}
