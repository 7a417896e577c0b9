//! A terminal program driven through `tmux`: type with [`Tmux::send`], read the screen with
//! [`Tmux::screen`], wait for text with [`Tmux::wait_for`]. Each value has its own tmux
//! server socket, killed when dropped.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::POLL;

/// One tmux session running one command.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (run by the shell) in a detached 120×40 terminal.
    pub fn start(command: &str) -> Tmux {
        let socket = format!("warden-test-{}-{}", std::process::id(), crate::free_port());
        let t = Tmux { socket };
        let status = t
            .cmd()
            .args(["new-session", "-d", "-x", "120", "-y", "40", "-s", "t"])
            .arg(command)
            .status()
            .expect("running tmux (install it: scripts/test does)");
        assert!(status.success(), "tmux new-session failed");
        // Keep the pane after the command exits, so its last screen can be read.
        let _ = t
            .cmd()
            .args(["set-option", "-t", "t", "remain-on-exit", "on"])
            .status();
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Types `text` literally, then Enter.
    pub fn send_line(&self, text: &str) {
        let _ = self
            .cmd()
            .args(["send-keys", "-t", "t", "-l", text])
            .status();
        let _ = self.cmd().args(["send-keys", "-t", "t", "Enter"]).status();
    }

    /// The visible screen and its scrollback.
    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "capture-pane",
                "-p",
                "-J",
                "-S",
                "-200",
                "-t",
                "t",
            ])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Whether the command has exited.
    pub fn exited(&self) -> bool {
        let out = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "list-panes",
                "-t",
                "t",
                "-F",
                "#{pane_dead}",
            ])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
            .unwrap_or(true)
    }

    /// Waits until the screen shows `text` `times` times, at most `limit`; returns the
    /// screen, or panics with it.
    pub fn wait_for(&self, text: &str, times: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("the terminal did not show {text:?} {times}x within {limit:?}:\n{screen}");
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}
