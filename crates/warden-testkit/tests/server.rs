//! Exercises [`Server`] and [`Cli`] against small stand-ins for the `warden`
//! binary (a Python HTTP server and a shell script), so the harness is proven
//! before the real server exists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use warden_testkit::{Cli, Server, http_get};

/// A stand-in server: answers `/readyz`, echoes an env var and counts its
/// starts in the data dir; `FAKE_MODE=exit` makes it exit at once.
const FAKE_SERVER: &str = r#"
import http.server, os, signal, sys
args = sys.argv[1:]
if os.environ.get("FAKE_MODE") == "exit":
    print("refusing to start", file=sys.stderr, flush=True)
    sys.exit(3)
listen = args[args.index("--listen") + 1]
data = args[args.index("--data-dir") + 1]
os.makedirs(data, exist_ok=True)
starts_file = os.path.join(data, "starts")
starts = int(open(starts_file).read()) + 1 if os.path.exists(starts_file) else 1
open(starts_file, "w").write(str(starts))
host, port = listen.rsplit(":", 1)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bodies = {"/readyz": "ready", "/env": os.environ.get("FAKE_GREETING", ""), "/starts": str(starts),
                  "/leak": os.environ.get("WARDEN_LEAK", "none")}
        body = bodies.get(self.path)
        self.send_response(404 if body is None else 200)
        payload = (body or "not found").encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass

def stop(*_):
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
server = http.server.HTTPServer((host, int(port)), Handler)
print(f"listening on {listen} args={' '.join(args)}", flush=True)
print("hello from stderr", file=sys.stderr, flush=True)
server.serve_forever()
"#;

/// A stand-in CLI: prints its environment, arguments and input as JSON.
const FAKE_CLI: &str = r#"
input=$(cat)
case " $* " in *" fail "*) echo "it failed" >&2; exit 4;; esac
printf '{"server":"%s","home":"%s","args":"%s","stdin":"%s"}\n' "$WARDEN_SERVER" "$WARDEN_HOME" "$*" "$input"
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn get(server: &Server, path: &str) -> String {
    let response = http_get(server.port(), path).unwrap();
    assert_eq!(response.status, 200, "GET {path}");
    response.body
}

#[test]
fn server_starts_on_a_free_port_and_terminates() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "server.py", FAKE_SERVER);
    let mut server = Server::start(
        Path::new("python3"),
        &[&script, "serve"],
        &[("FAKE_GREETING", "hi")],
    );
    assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.port()));
    assert_eq!(get(&server, "/env"), "hi");
    assert_eq!(get(&server, "/leak"), "none");
    let stdout = server.stdout();
    assert!(
        stdout.contains(&format!(
            "listening on 127.0.0.1:{} args=serve --listen",
            server.port()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("--data-dir {}", server.data_dir().display())),
        "{stdout}"
    );
    assert!(server.stderr().contains("hello from stderr"));
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM should end the stand-in cleanly: {status}"
    );
}

#[test]
fn server_restarts_on_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "server.py", FAKE_SERVER);
    let mut server = Server::start(Path::new("python3"), &[&script], &[]);
    assert_eq!(get(&server, "/starts"), "1");
    let port = server.port();
    server.kill_hard();
    assert!(server.exit_status().is_some());
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(get(&server, "/starts"), "2");

    let data = dir.path().join("kept-data");
    drop(Server::start_in(
        Path::new("python3"),
        &data,
        &[&script],
        &[],
    ));
    let again = Server::start_in(Path::new("python3"), &data, &[&script], &[]);
    assert_eq!(again.data_dir(), data);
    assert_eq!(get(&again, "/starts"), "2");
}

#[test]
#[should_panic(expected = "exited before it was ready")]
fn server_that_exits_early_fails_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "server.py", FAKE_SERVER);
    Server::start(Path::new("python3"), &[&script], &[("FAKE_MODE", "exit")]);
}

#[test]
fn cli_runs_with_its_own_home_and_server() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "cli.sh", FAKE_CLI);
    let cli = Cli::new(Path::new("sh"), "http://127.0.0.1:9");

    let out = cli.run(&[&script, "whoami"], Some("typed"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(r#""stdin":"typed""#), "{}", out.stdout);

    let value = cli.json(&[&script, "request", "list"]);
    assert_eq!(value["server"], "http://127.0.0.1:9");
    assert_eq!(value["home"], cli.home().to_str().unwrap());
    assert_eq!(value["args"], "request list --json");

    let failed = cli.run(&[&script, "fail"], None);
    assert_eq!((failed.code, failed.stderr.as_str()), (4, "it failed\n"));
}

#[test]
#[should_panic(expected = "it failed")]
fn cli_json_panics_with_stderr_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "cli.sh", FAKE_CLI);
    Cli::new(Path::new("sh"), "http://127.0.0.1:9").json(&[&script, "fail"]);
}
