//! Audit export to SIEM sinks, end to end against the real binary: JSON lines in rotating
//! files, RFC 5424 syslog to a real rsyslogd over TCP and UDP, and an HTTP webhook that goes
//! down and comes back, with the server killed mid-export. Every sink must end up with every
//! sequence number from 1 to the latest: duplicates are allowed, gaps never.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{BIN, audit_records, login, refused_requests, token};
use serde_json::Value;
use warden_testkit::{Cli, Server, free_port};

/// How long any one awaited condition may take.
const WAIT: Duration = Duration::from_secs(20);

/// Starts `warden serve --dev --config DIR/warden.toml` with `sinks` as the whole config.
fn start(dir: &Path, sinks: &str) -> Server {
    let config = dir.join("warden.toml");
    std::fs::write(&config, sinks).unwrap();
    Server::start_in(
        Path::new(BIN),
        &dir.join("data"),
        &["serve", "--dev", "--config", config.to_str().unwrap()],
        &[("WARDEN_TEST_SIEM_AUTHORIZATION", "Bearer header-secret")],
    )
}

/// Every event's leaf hash by sequence number, from the audit search API.
fn leaf_hashes(admin: &Cli) -> BTreeMap<u64, String> {
    let v = admin.json(&["audit", "search", "--limit", "10000"]);
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["leaf_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn latest_seq(admin: &Cli) -> u64 {
    *leaf_hashes(admin).keys().last().unwrap()
}

/// The named sink's row of `warden audit status --json`.
fn sink_status(admin: &Cli, name: &str) -> Value {
    let v = admin.json(&["audit", "status"]);
    v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {v}"))
        .clone()
}

/// Polls `check` until it returns true; panics naming `what` after [`WAIT`].
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `seqs` holds every number in 1..=`latest`.
fn complete(seqs: &BTreeSet<u64>, latest: u64) -> bool {
    (1..=latest).all(|s| seqs.contains(&s))
}

#[test]
fn file_sink_writes_contiguous_json_lines_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let mut server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem-file\"\nkind = \"file\"\npath = {:?}\nmax_bytes = 2048\nkeep = 1000\n",
            out.to_str().unwrap()
        ),
    );
    let admin = login(&server, "admin");
    assert_eq!(refused_requests(server.port(), &token(&admin), 40), 40);
    let latest = latest_seq(&admin);
    let hashes = leaf_hashes(&admin);

    let read_all = || -> Vec<(PathBuf, String)> {
        let mut files: Vec<PathBuf> = (1..)
            .map(|n| PathBuf::from(format!("{}.{n}", out.display())))
            .take_while(|p| p.exists())
            .collect();
        files.reverse(); // oldest first
        files.push(out.clone());
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                (p, text)
            })
            .collect()
    };
    let seqs_in = |files: &[(PathBuf, String)]| -> Vec<u64> {
        files
            .iter()
            .flat_map(|(_, text)| text.lines())
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    wait_for("the file sink to catch up", || {
        complete(&seqs_in(&read_all()).into_iter().collect(), latest)
    });

    let files = read_all();
    assert!(
        files.len() > 3,
        "expected rotations, got {} file(s)",
        files.len()
    );
    for (path, text) in &files {
        assert!(
            text.len() <= 2048,
            "{} has {} bytes",
            path.display(),
            text.len()
        );
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let seq = record["seq"].as_u64().unwrap();
            assert_eq!(record["event"]["seq"].as_u64(), Some(seq), "{line}");
            assert_eq!(
                record["leaf_hash"].as_str(),
                Some(hashes[&seq].as_str()),
                "{line}"
            );
        }
    }
    // In order from 1, with nothing missing and nothing repeated, across every file.
    let seqs = seqs_in(&files);
    assert_eq!(
        seqs[..latest as usize],
        (1..=latest).collect::<Vec<_>>()[..]
    );

    // Shutdown exports the last events, the stop itself included.
    assert!(server.terminate().success());
    let last_line = read_all().pop().unwrap().1;
    let last: Value = serde_json::from_str(last_line.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"]["action"], "server.stopped", "{last}");

    // A log rolled back under the sink (an older backup restored on purpose, its checkpoint
    // file moved aside as the README says) is said at once, and what is written since is
    // exported too, beside what the sink holds of the old history.
    let data = dir.path().join("data");
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let cut: i64 = db
        .query_row(
            "SELECT MAX(size) FROM checkpoints WHERE size <= ?1",
            [i64::try_from(latest - 5).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    db.execute_batch(&format!(
        "DELETE FROM audit WHERE seq > {cut}; DELETE FROM checkpoints WHERE size > {cut};"
    ))
    .unwrap();
    drop(db);
    std::fs::remove_file(data.join("audit_checkpoint.note")).unwrap();
    let cut = u64::try_from(cut).unwrap();
    server.restart();
    let lines = || -> Vec<Value> {
        read_all()
            .iter()
            .flat_map(|(_, text)| text.lines().map(|l| serde_json::from_str(l).unwrap()))
            .collect()
    };
    wait_for("the rollback to be exported", || {
        lines()
            .iter()
            .any(|l| l["event"]["outcome"]["code"] == "log_rolled_back")
    });
    let again = lines().iter().filter(|l| l["seq"] == cut + 1).count();
    assert_eq!(again, 2, "both histories' event {}", cut + 1);
}

/// A private rsyslogd on 127.0.0.1 writing every message's raw text to one file.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start(tcp_port: u16, udp_port: u16) -> Rsyslog {
        let bin = ["/usr/sbin/rsyslogd", "/usr/bin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("rsyslogd is not installed (apt-get install rsyslog; scripts/test does it)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let out = dir.path().join("received.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\" maxMessageSize=\"64k\")\n\
                 module(load=\"imtcp\")\n\
                 module(load=\"imudp\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\")\n\
                 action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
                out.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("rsyslogd.log")).unwrap();
        let child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut r = Rsyslog {
            child,
            out,
            _dir: dir,
        };
        wait_for("rsyslogd to listen", || {
            assert!(r.child.try_wait().unwrap().is_none(), "rsyslogd exited");
            TcpStream::connect(("127.0.0.1", tcp_port)).is_ok()
        });
        r
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received RFC 5424 message, taken apart.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    timestamp: String,
    app: String,
    procid: String,
    msgid: String,
    seq: u64,
    leaf_hash: String,
    msg: Value,
}

fn parse_syslog(line: &str) -> Syslog {
    let (head, rest) = line
        .split_once(" [warden@32473 ")
        .unwrap_or_else(|| panic!("no structured data: {line}"));
    let h: Vec<&str> = head.splitn(6, ' ').collect();
    assert_eq!(h.len(), 6, "{line}");
    let pri = h[0]
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix(">1"))
        .unwrap_or_else(|| panic!("bad PRI/VERSION: {line}"));
    let (sd, msg) = rest.split_once("] ").unwrap();
    let param = |name: &str| -> String {
        let start = sd.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        sd[start..].split('"').next().unwrap().to_owned()
    };
    Syslog {
        pri: pri.parse().unwrap(),
        timestamp: h[1].to_owned(),
        app: h[3].to_owned(),
        procid: h[4].to_owned(),
        msgid: h[5].to_owned(),
        seq: param("seq").parse().unwrap(),
        leaf_hash: param("leafHash"),
        msg: serde_json::from_str(msg).unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {line}")),
    }
}

#[test]
fn syslog_sink_sends_rfc5424_to_rsyslog_over_tcp_and_udp() {
    let tcp_port = free_port();
    let udp_port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let rsyslog = Rsyslog::start(tcp_port, udp_port);
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem-tcp\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tcp_port}\"\ntransport = \"tcp\"\napp_name = \"warden-tcp\"\n\n\
             [[sinks]]\nname = \"siem-udp\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{udp_port}\"\ntransport = \"udp\"\napp_name = \"warden-udp\"\n"
        ),
    );
    let admin = login(&server, "admin");
    assert_eq!(refused_requests(server.port(), &token(&admin), 5), 5);
    let latest = latest_seq(&admin);
    let hashes = leaf_hashes(&admin);

    let received = |app: &str| -> Vec<Syslog> {
        rsyslog
            .lines()
            .iter()
            // rsyslogd's own notices land in the same file.
            .filter(|l| l.contains(" [warden@32473 "))
            .map(|l| parse_syslog(l))
            .filter(|m| m.app == app)
            .collect()
    };
    wait_for("rsyslogd to receive every event over TCP", || {
        complete(
            &received("warden-tcp").iter().map(|m| m.seq).collect(),
            latest,
        )
    });
    let tcp = received("warden-tcp");
    let pid = server.pid().to_string();
    let mut severities = BTreeSet::new();
    for m in &tcp {
        assert_eq!(m.msg["seq"].as_u64(), Some(m.seq), "{m:?}");
        assert_eq!(m.leaf_hash, hashes[&m.seq], "{m:?}");
        assert_eq!(m.msgid, m.msg["code"].as_str().unwrap(), "{m:?}");
        assert_eq!(m.procid, pid);
        assert_eq!(m.timestamp, m.msg["time"].as_str().unwrap(), "{m:?}");
        // Facility authpriv; info when allowed, warning when denied.
        let expected = match m.msg["outcome"]["result"].as_str().unwrap() {
            "allowed" => 86,
            "denied" => 84,
            other => panic!("unexpected outcome {other}"),
        };
        assert_eq!(m.pri, expected, "{m:?}");
        severities.insert(m.pri);
    }
    assert_eq!(severities, BTreeSet::from([84, 86]));

    wait_for("a message over UDP", || !received("warden-udp").is_empty());
    let udp = received("warden-udp");
    assert_eq!(udp[0].leaf_hash, hashes[&udp[0].seq], "{:?}", udp[0]);
    assert_eq!(sink_status(&admin, "siem-udp")["failures"], 0);
}

/// A TCP syslog receiver that is stopped takes the bytes into its socket but reads none: no
/// batch counts as delivered to it, the sink shows the failure and its lag, and once it is
/// killed with the batch unread and started again, the batch is sent again and nothing is
/// missing.
#[test]
fn tcp_syslog_delivers_nothing_to_a_stopped_receiver() {
    let tcp_port = free_port();
    let udp_port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let first = Rsyslog::start(tcp_port, udp_port);
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tcp_port}\"\ntransport = \"tcp\"\n"
        ),
    );
    let admin = login(&server, "admin");
    let seqs = |r: &Rsyslog| -> BTreeSet<u64> {
        r.lines()
            .iter()
            .filter(|l| l.contains(" [warden@32473 "))
            .map(|l| parse_syslog(l).seq)
            .collect()
    };
    assert_eq!(refused_requests(server.port(), &token(&admin), 3), 3);
    let latest = latest_seq(&admin);
    wait_for("rsyslogd to receive every event", || {
        complete(&seqs(&first), latest)
    });

    let signal = |name: &str, pid: u32| {
        let sent = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {pid}");
    };
    signal("-STOP", first.child.id());
    let before = seqs(&first);
    assert_eq!(refused_requests(server.port(), &token(&admin), 3), 3);
    let latest = latest_seq(&admin);
    wait_for("the sink to fail", || {
        sink_status(&admin, "siem")["failures"].as_u64() > Some(0)
    });
    let status = sink_status(&admin, "siem");
    assert!(status["lag"].as_u64() > Some(0), "{status}");
    let failed = common::audit_events(&admin, "audit.export_failed");
    assert!(
        failed.iter().any(|e| e["details"]["sink"] == "siem"),
        "{failed:?}"
    );

    drop(first);
    let second = Rsyslog::start(tcp_port, udp_port);
    wait_for("the restarted rsyslogd to receive every event", || {
        let mut all = before.clone();
        all.extend(seqs(&second));
        complete(&all, latest)
    });
    wait_for("the sink to catch up", || {
        sink_status(&admin, "siem")["failures"] == 0
    });
}

/// What the stand-in webhook receiver has seen.
#[derive(Debug, Default)]
struct Inbox {
    /// Sequence numbers accepted (answered 200), in arrival order.
    seqs: Vec<u64>,
    posts: usize,
    largest_batch: usize,
    /// While true, every POST is answered 503.
    down: bool,
    /// While true, POSTs are answered 502 and 200 by turns, 502 first.
    flap: bool,
    /// POSTs answered 502 while flapping.
    flapped: usize,
    /// Pause before answering, to keep deliveries in flight.
    delay: Duration,
    /// Request lines or headers that were not as configured.
    wrong: Vec<String>,
}

impl Inbox {
    fn seqs(inbox: &Mutex<Inbox>) -> BTreeSet<u64> {
        inbox.lock().unwrap().seqs.iter().copied().collect()
    }
}

/// Brings the receiver back up and waits until it has every event up to the newest, which it
/// returns.
fn back_up(inbox: &Mutex<Inbox>, admin: &Cli) -> u64 {
    inbox.lock().unwrap().down = false;
    let latest = latest_seq(admin);
    wait_for("the sink to catch up", || {
        complete(&Inbox::seqs(inbox), latest)
    });
    latest
}

/// A webhook receiver on 127.0.0.1, one thread per connection, keep-alive supported.
fn webhook_receiver() -> (u16, Arc<Mutex<Inbox>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let shared = inbox.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let inbox = shared.clone();
            thread::spawn(move || {
                let _ = serve_posts(conn, &inbox);
            });
        }
    });
    (port, inbox)
}

fn serve_posts(conn: TcpStream, inbox: &Mutex<Inbox>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut length, mut authorization, mut content_type) = (0, String::new(), String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "authorization" => authorization = value.trim().to_owned(),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let (status, delay) = {
            let mut inbox = inbox.lock().unwrap();
            if request_line != "POST /ingest?key=query-secret HTTP/1.1\r\n"
                || authorization != "Bearer header-secret"
                || content_type != "application/json"
            {
                inbox.wrong.push(format!(
                    "{request_line:?} {authorization:?} {content_type:?}"
                ));
            }
            let flop = inbox.flap && (inbox.posts + inbox.flapped).is_multiple_of(2);
            if inbox.down {
                ("503 Service Unavailable", inbox.delay)
            } else if flop {
                inbox.flapped += 1;
                ("502 Bad Gateway", inbox.delay)
            } else {
                let v: Value = serde_json::from_slice(&body).unwrap();
                let events = v["events"].as_array().unwrap();
                for e in events {
                    let seq = e["seq"].as_u64().unwrap();
                    assert_eq!(e["event"]["seq"].as_u64(), Some(seq));
                    assert_eq!(e["leaf_hash"].as_str().unwrap().len(), 64);
                    inbox.seqs.push(seq);
                }
                inbox.posts += 1;
                inbox.largest_batch = inbox.largest_batch.max(events.len());
                ("200 OK", inbox.delay)
            }
        };
        thread::sleep(delay);
        writer.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
    }
}

#[test]
fn webhook_sink_survives_an_outage_and_a_crash_without_gaps() {
    let (port, inbox) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem-webhook\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{port}/ingest?key=query-secret\"\nbatch = 5\n\
             header = {{ \"Authorization\" = {{ env = \"WARDEN_TEST_SIEM_AUTHORIZATION\" }} }}\n"
        ),
    );
    let admin = login(&server, "admin");

    // Delivered in batches.
    assert_eq!(refused_requests(server.port(), &token(&admin), 12), 12);
    let latest = latest_seq(&admin);
    wait_for("the first events", || {
        complete(&Inbox::seqs(&inbox), latest)
    });
    assert_eq!(inbox.lock().unwrap().largest_batch, 5);

    // Only administrators see the export's status.
    let alice = login(&server, "alice");
    let refused = alice.run(&["audit", "status"], None);
    assert_eq!(refused.code, 3, "{refused:?}");

    // The receiver goes down: events wait, the status shows lag and failures without the
    // URL's query or the header's secret, and the outage is audited once.
    inbox.lock().unwrap().down = true;
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    wait_for("failures in the status", || {
        let s = sink_status(&admin, "siem-webhook");
        s["failures"].as_u64().unwrap() >= 2 && s["lag"].as_u64().unwrap() >= 20
    });
    let down = sink_status(&admin, "siem-webhook");
    let error = down["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "{down}");
    assert!(!down.to_string().contains("secret"), "{down}");
    assert_eq!(down["destination"], format!("http://127.0.0.1:{port}/…"));
    let table = admin.run(&["audit", "status"], None);
    assert!(
        table.stdout.contains("siem-webhook") && table.stdout.contains("LAG"),
        "{table:?}"
    );

    back_up(&inbox, &admin);
    wait_for("lag 0 in the status", || {
        let s = sink_status(&admin, "siem-webhook");
        s["lag"] == 0 && s["failures"] == 0 && s["last_success"].is_string()
    });
    let failures = admin.json(&["audit", "search", "--code", "audit.export_failed"]);
    let failures = failures["events"].as_array().unwrap();
    assert_eq!(
        failures.len(),
        1,
        "one event per failure streak: {failures:?}"
    );
    assert_eq!(failures[0]["event"]["details"]["sink"], "siem-webhook");

    // Killed with SIGKILL while a burst is being exported: after a restart the receiver ends
    // with every event.
    // A slow receiver (at most 50 events/s) keeps the export behind the burst.
    inbox.lock().unwrap().delay = Duration::from_millis(100);
    let before = inbox.lock().unwrap().seqs.len();
    let api = server.port();
    let bearer = token(&admin);
    let burst = thread::spawn(move || refused_requests(api, &bearer, 300));
    wait_for("the burst to be exporting", || {
        inbox.lock().unwrap().seqs.len() >= before + 20
    });
    server.kill_hard();
    let made = burst.join().unwrap();
    let at_kill = Inbox::seqs(&inbox);
    inbox.lock().unwrap().delay = Duration::ZERO;
    server.restart();
    let latest = latest_seq(&admin);
    assert!(latest as usize >= made, "{latest} < {made}");
    let started = Instant::now();
    wait_for("catch-up after the crash", || {
        complete(&Inbox::seqs(&inbox), latest)
    });
    eprintln!(
        "{made} events in the burst; {} of {latest} delivered at the kill; all {latest} after {:?}",
        at_kill.len(),
        started.elapsed()
    );
    // The restart's first event marks what the killed server had logged.
    let starts = admin.json(&["audit", "search", "--code", "server.started"]);
    let restart = starts["events"][1]["seq"].as_u64().unwrap();
    assert!(
        !complete(&at_kill, restart - 1),
        "the kill should have interrupted the export"
    );
    let inbox = inbox.lock().unwrap();
    assert!(inbox.wrong.is_empty(), "{:?}", inbox.wrong);
    assert!(inbox.largest_batch <= 5);
}

#[test]
fn bad_sinks_stop_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"{d}/x\"\n\n\
             [[sinks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n"
        ),
    )
    .unwrap();
    let out = common::serve_refusing(&config, &dir.path().join("data"));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("names must be unique"), "{out:?}");

    // Sinks that would fail at every batch, for good: refused at the line of their table.
    let first = format!("[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"{d}/a.jsonl\"\n\n");
    for (second, expected) in [
        (
            "kind = \"syslog\"\naddress = \"127.0.0.1:0\"".to_owned(),
            "line 6, column 1: sink 2 (\"b\"): `address` \"127.0.0.1:0\" has port 0".to_owned(),
        ),
        (
            format!("kind = \"file\"\npath = \"{d}\""),
            format!("line 6, column 1: sink 2 (\"b\"): `path` {d} is a directory"),
        ),
        (
            format!("kind = \"file\"\npath = \"{d}/a.jsonl\""),
            format!(
                "line 6, column 1: sink 2 (\"b\"): `path` {d}/a.jsonl is the file of sink 1 (\"a\") too"
            ),
        ),
    ] {
        std::fs::write(
            &config,
            format!("{first}[[sinks]]\nname = \"b\"\n{second}\n"),
        )
        .unwrap();
        let out = common::serve_refusing(&config, &dir.path().join("data"));
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains(&expected), "{expected}: {out:?}");
    }
}

/// A receiver that fails every other POST (a flapping one) makes a failure event at the
/// first failure, and no more for a while: each event is exported through that very sink, so
/// an event per failure, or per streak of failures, would fail again and never stop coming.
#[test]
fn a_flapping_webhook_does_not_flood_the_audit_log() {
    let (port, inbox) = webhook_receiver();
    inbox.lock().unwrap().flap = true;
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"flapping\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{port}/ingest\"\nbatch = 5\n"
        ),
    );
    let admin = login(&server, "admin");
    // Several deliveries, each failing first.
    for _ in 0..4 {
        assert_eq!(refused_requests(server.port(), &token(&admin), 1), 1);
        thread::sleep(Duration::from_millis(500));
    }
    let caught_up = || {
        let latest = latest_seq(&admin);
        complete(&Inbox::seqs(&inbox), latest)
            && sink_status(&admin, "flapping")["cursor"].as_u64() == Some(latest)
    };
    wait_for("the sink to catch up", caught_up);
    // With nobody doing anything, the log stays as it is.
    let settled = latest_seq(&admin);
    thread::sleep(Duration::from_secs(3));
    assert_eq!(latest_seq(&admin), settled, "the log kept growing");
    let flapped = inbox.lock().unwrap().flapped;
    assert!(flapped >= 4, "only {flapped} POSTs were refused");
    let failed = common::audit_events(&admin, "audit.export_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["details"]["sink"], "flapping");
    assert_eq!(failed[0]["details"]["failures"], 1);
    let reason = failed[0]["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("answered 502"), "{reason}");
}

/// The newest signed checkpoint's size (its note's second line).
fn checkpoint_size(admin: &Cli) -> u64 {
    let note = admin.run(&["audit", "checkpoint"], None).stdout;
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// The verifier key, as `warden audit verifier-key` prints it.
fn verifier_key(admin: &Cli) -> String {
    let out = admin.run(&["audit", "verifier-key"], None);
    assert!(out.success(), "{out:?}");
    out.stdout.trim().to_owned()
}

/// `warden audit verify --bundle DIR --verifier-key KEY`.
fn verify_bundle(admin: &Cli, bundle: &Path, key: &str) -> warden_testkit::CliOutput {
    admin.run(
        &[
            "audit",
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--verifier-key",
            key,
        ],
        None,
    )
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// An event's time is taken before the log numbers it, so under load some events are numbered
/// after others timed later (made here through the store, as the server's writer does it under
/// load). A range by time is exported as the run of events from the first in it to the last,
/// with those between whose times are just outside it, so that the untouched bundle verifies:
/// a gap would be read as events taken out.
#[test]
fn a_bundle_of_a_time_range_holds_the_events_numbered_within_it_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "checkpoint_interval = \"1s\"\n");
    let admin = login(&server, "admin");
    let key = verifier_key(&admin);
    assert!(server.terminate().success());

    // Ten minutes ago, before anything the server wrote: nothing else is in the range.
    let from = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        - time::Duration::minutes(10);
    let to = from + time::Duration::seconds(1);
    let ms = time::Duration::milliseconds;
    // In the order the log numbers them: before, in, early, early, in, late, in (the last of
    // the range), late.
    let times = [
        from - ms(5),
        from + ms(10),
        from - ms(2),
        from - ms(1),
        from + ms(20),
        to + ms(1),
        to - ms(1),
        to + ms(5),
    ];
    let appended = {
        use warden_domain::audit::{Actor, Code, Event};
        use warden_store::Store;
        let store = warden_store::SqliteStore::open(&dir.path().join("data/warden.db")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let first = store.last_seq().await.unwrap() + 1;
            for (n, t) in times.iter().enumerate() {
                let event = Event::new(Code::ActionRefused, Actor::system(), *t)
                    .denied("test", format!("timed out of order, {n}"));
                store.append(vec![event]).await.unwrap();
            }
            store.flush_log().await.unwrap();
            first
        })
    };
    let seq = |n: u64| appended + n;

    server.restart();
    let admin = login(&server, "admin");
    wait_for("a checkpoint of the appended events", || {
        checkpoint_size(&admin) >= seq(7)
    });
    let bundle = dir.path().join("bundle");
    let out = admin.run(
        &[
            "--json",
            "audit",
            "export",
            bundle.to_str().unwrap(),
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let written: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(written["held_back"].is_null(), "{written}");
    let held: Vec<u64> = std::fs::read_to_string(bundle.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(held, (seq(1)..=seq(6)).collect::<Vec<_>>());
    let note = std::fs::read_to_string(bundle.join("checkpoint.note")).unwrap();
    assert!(
        note.contains(&format!("\nexport {} {} 6\n", seq(1), seq(6))),
        "{note}"
    );
    assert!(
        note.contains(&format!(
            "\nexport-period {} {}\n",
            warden_domain::rfc3339(from),
            warden_domain::rfc3339(to)
        )),
        "{note}"
    );

    let verified = verify_bundle(&admin, &bundle, &key);
    assert!(verified.success(), "{verified:?}");
    assert!(
        verified.stdout.contains(&format!(
            "period: events from the first at or after {} to the last before {}, and every event between them",
            warden_domain::rfc3339(from),
            warden_domain::rfc3339(to)
        )),
        "{verified:?}"
    );
    // A gap is still events taken out.
    let events = std::fs::read_to_string(bundle.join("events.jsonl")).unwrap();
    let gapped: String = events
        .lines()
        .enumerate()
        .filter(|(n, _)| *n != 2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(bundle.join("events.jsonl"), gapped).unwrap();
    let broken = verify_bundle(&admin, &bundle, &key);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken
            .stdout
            .contains(&format!("event {} is missing from the bundle", seq(3))),
        "{broken:?}"
    );
}

/// Events of the range that no checkpoint covers yet are not in the bundle, and the export
/// says how many and when the next checkpoint, which will cover them, is due.
#[test]
fn an_export_says_which_events_of_its_range_no_checkpoint_covers_yet() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "checkpoint_interval = \"1h\"\n");
    let from = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(1));
    let admin = login(&server, "admin");
    let key = verifier_key(&admin);
    // The start's checkpoint, then events it does not cover for an hour.
    wait_for("the first checkpoint", || checkpoint_size(&admin) > 0);
    let signed = checkpoint_size(&admin);
    assert_eq!(refused_requests(server.port(), &token(&admin), 3), 3);
    let latest = latest_seq(&admin);
    assert!(latest > signed, "{latest} after {signed}");

    let bundle = dir.path().join("bundle");
    let out = admin.run(
        &["audit", "export", bundle.to_str().unwrap(), "--from", &from],
        None,
    );
    assert!(out.success(), "{out:?}");
    let uncovered = latest - signed;
    assert!(
        out.stderr.contains(&format!(
            "note: {uncovered} events of the range, from {} on, are not in the bundle: no signed checkpoint covers them yet; the next, due by ",
            signed + 1
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "(one is signed every 3600 s while events come), will: export again after it"
        ),
        "{out:?}"
    );
    let events = std::fs::read_to_string(bundle.join("events.jsonl")).unwrap();
    let last: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"].as_u64(), Some(signed));
    let verified = verify_bundle(&admin, &bundle, &key);
    assert!(verified.success(), "{verified:?}");
    assert!(
        verified
            .stdout
            .contains(&format!("held_back: {uncovered} later events")),
        "{verified:?}"
    );

    // Likewise with --json, the time the next checkpoint is due by in the future.
    let again = dir.path().join("again");
    let v = admin.json(&["audit", "export", again.to_str().unwrap(), "--from", &from]);
    assert_eq!(v["held_back"]["events"], uncovered, "{v}");
    assert_eq!(v["held_back"]["from_seq"], signed + 1, "{v}");
    let by = time::OffsetDateTime::parse(
        v["held_back"]["next_checkpoint_by"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(by > time::OffsetDateTime::now_utc(), "{v}");
}

/// Archives `warden audit archive --before NOW`.
fn archive_now(admin: &Cli) -> warden_testkit::CliOutput {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    admin.run(&["--json", "audit", "archive", "--before", &now], None)
}

/// A bundle whose period reaches back before the live log leaves the archived events out, and
/// its signed note says from which event on it holds the period: `verify` names the events
/// left out as in archive segments, not in the bundle, and a note with that line taken out or
/// changed fails its signature.
#[test]
fn a_bundle_signs_that_the_archived_events_of_its_period_are_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let server = start(dir.path(), "checkpoint_interval = \"1s\"\n");
    let admin = login(&server, "admin");
    let key = verifier_key(&admin);
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    let before = latest_seq(&admin);
    wait_for("a checkpoint of the first events", || {
        checkpoint_size(&admin) >= before
    });
    let archived = archive_now(&admin);
    assert!(archived.success(), "{archived:?}");
    let to = serde_json::from_str::<Value>(&archived.stdout).unwrap()["to"]
        .as_u64()
        .unwrap();
    assert!(to > 1, "{archived:?}");
    assert_eq!(refused_requests(server.port(), &token(&admin), 5), 5);
    let latest = latest_seq(&admin);
    wait_for("a checkpoint of the later events", || {
        checkpoint_size(&admin) >= latest
    });

    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let period = [
        "--from".to_owned(),
        rfc3339(from),
        "--to".to_owned(),
        rfc3339(until),
    ];
    for (name, range) in [("period", &period[..]), ("whole", &[][..])] {
        let bundle = dir.path().join(name);
        let mut args = vec!["audit", "export", bundle.to_str().unwrap()];
        args.extend(range.iter().map(String::as_str));
        let out = admin.run(&args, None);
        assert!(out.success(), "{out:?}");
        let note = std::fs::read_to_string(bundle.join("checkpoint.note")).unwrap();
        assert!(
            note.contains(&format!("\nexport-archived-before {}\n", to + 1)),
            "{note}"
        );
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(bundle.join("events.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["seq"].as_u64(), Some(to + 1), "{first}");

        let verified = verify_bundle(&admin, &bundle, &key);
        assert!(verified.success(), "{verified:?}");
        let start = if range.is_empty() {
            "the log's start".to_owned()
        } else {
            warden_domain::rfc3339(from)
        };
        assert!(
            verified.stdout.contains(&format!(
                "period: events from the first at or after {start} to the last before {}, except those before event {}, which were archived",
                if range.is_empty() {
                    "the checkpoint".to_owned()
                } else {
                    warden_domain::rfc3339(until)
                },
                to + 1
            )),
            "{verified:?}"
        );
        assert!(
            verified.stdout.contains(&format!(
                "the events of the period before event {} are in the server's archive segments and NOT in this bundle",
                to + 1
            )),
            "{verified:?}"
        );
        assert!(
            !verified.stdout.contains("and every event between them"),
            "{verified:?}"
        );
        let v = admin.json(&[
            "audit",
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--verifier-key",
            &key,
        ]);
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["archived_before_seq"], to + 1, "{v}");

        // The line taken out, or naming another event, is not what was signed.
        let line = format!("export-archived-before {}\n", to + 1);
        for (how, tampered) in [
            ("taken out", note.replace(&line, "")),
            (
                "changed",
                note.replace(&line, &format!("export-archived-before {}\n", 1)),
            ),
        ] {
            assert_ne!(tampered, note, "{how}");
            std::fs::write(bundle.join("checkpoint.note"), &tampered).unwrap();
            let broken = verify_bundle(&admin, &bundle, &key);
            assert_eq!(broken.code, 1, "{how}: {broken:?}");
            assert!(
                broken
                    .stderr
                    .contains("the bundle's checkpoint is not validly signed"),
                "{how}: {broken:?}"
            );
        }
        std::fs::write(bundle.join("checkpoint.note"), &note).unwrap();
    }
}

#[test]
fn the_archive_keeps_what_a_sink_has_not_delivered() {
    let (port, inbox) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "checkpoint_interval = \"1s\"\n\n[[sinks]]\nname = \"siem-webhook\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{port}/ingest\"\nbatch = 5\n"
        ),
    );
    let admin = login(&server, "admin");
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    let delivered = latest_seq(&admin);
    wait_for("the first events", || {
        complete(&Inbox::seqs(&inbox), delivered)
    });
    wait_for("a checkpoint of them", || {
        checkpoint_size(&admin) >= delivered
    });

    // The receiver goes down; later events are checkpointed but not delivered.
    inbox.lock().unwrap().down = true;
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    let latest = latest_seq(&admin);
    wait_for("a checkpoint of the later events", || {
        checkpoint_size(&admin) >= latest
    });
    let cursor = sink_status(&admin, "siem-webhook")["cursor"]
        .as_u64()
        .unwrap();
    assert!(cursor < latest, "cursor {cursor}, latest {latest}");

    let held = archive_now(&admin);
    assert!(held.success(), "{held:?}");
    let held: Value = serde_json::from_str(&held.stdout).unwrap();
    assert_eq!(held["held_back_by"], "siem-webhook", "{held}");
    let to = held["to"].as_u64().unwrap();
    assert!(
        (delivered..=cursor).contains(&to),
        "{held}, cursor {cursor}"
    );

    // Nothing more can go while the sink is behind: refused, naming it.
    let refused = archive_now(&admin);
    assert!(!refused.success(), "{refused:?}");
    let error: Value = serde_json::from_str(&refused.stderr).unwrap();
    assert_eq!(error["error"]["code"], "sink_behind", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("export sink \"siem-webhook\" has delivered"),
        "{message}"
    );

    // Once it has caught up, every event reached it, and the rest is archived.
    let latest = back_up(&inbox, &admin);
    wait_for("a checkpoint of what it caught up on", || {
        checkpoint_size(&admin) >= latest
            && sink_status(&admin, "siem-webhook")["cursor"].as_u64() >= Some(latest)
    });
    let rest = archive_now(&admin);
    assert!(rest.success(), "{rest:?}");
    let rest: Value = serde_json::from_str(&rest.stdout).unwrap();
    assert_eq!(rest["from"], to + 1, "{rest}");
    assert!(rest["held_back_by"].is_null(), "{rest}");
    assert!(server.terminate().success());

    // A sink added after the archive (here one that is down) owes nothing of what was
    // archived: it starts at the live log, and its lag counts live events only.
    let archived = rest["to"].as_u64().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "checkpoint_interval = \"1s\"\n\n[[sinks]]\nname = \"siem-webhook\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{port}/ingest\"\nbatch = 5\n\n[[sinks]]\nname = \"late\"\n\
             kind = \"webhook\"\nurl = \"http://127.0.0.1:1/ingest\"\n"
        ),
    );
    let admin = login(&server, "admin");
    wait_for("the new sink's first try", || {
        sink_status(&admin, "late")["cursor"].as_u64() >= Some(archived)
    });
}

/// A whole data dir put back from a copy taken earlier (a restored backup, as the README
/// describes it) brings back the sink's cursor stored in the database with the log it belongs
/// to, so only the cursor kept beside the database can tell that the sink already holds events
/// the log has lost: the rollback is said, and what is written since is exported beside them.
#[test]
fn a_restored_backup_of_the_data_dir_is_a_rollback_under_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let data = dir.path().join("data");
    let backup = dir.path().join("data-bk");
    let mut server = start(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem\"\nkind = \"file\"\npath = {:?}\n",
            out.to_str().unwrap()
        ),
    );
    let records = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp").arg("-a").arg(from).arg(to).status();
        assert!(status.unwrap().success());
    };

    let admin = login(&server, "admin");
    assert_eq!(refused_requests(server.port(), &token(&admin), 3), 3);
    assert!(server.terminate().success());
    copy(&data, &backup);
    let backed_up = records().last().unwrap()["seq"].as_u64().unwrap();

    server.restart();
    let admin = login(&server, "admin");
    assert_eq!(refused_requests(server.port(), &token(&admin), 6), 6);
    assert!(server.terminate().success());
    let delivered = records().last().unwrap()["seq"].as_u64().unwrap();
    assert!(delivered > backed_up + 6, "{delivered} after {backed_up}");

    std::fs::remove_dir_all(&data).unwrap();
    copy(&backup, &data);
    server.restart();
    let admin = login(&server, "admin");

    let rolled_back = wait_for_rollback(&admin);
    assert_eq!(rolled_back["event"]["details"]["sink"], "siem");
    assert_eq!(
        rolled_back["event"]["details"]["cursor"].as_u64(),
        Some(delivered)
    );
    let ends_at = rolled_back["event"]["details"]["log_ends_at"]
        .as_u64()
        .unwrap();
    assert!(ends_at >= backed_up && ends_at < delivered, "{rolled_back}");
    let why = rolled_back["event"]["outcome"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("rolled back"), "{rolled_back}");

    // The sink gets the rollback itself and what follows, beside the history it already holds.
    wait_for("the rollback to be exported", || {
        records()
            .iter()
            .any(|r| r["event"]["outcome"]["code"] == "log_rolled_back")
    });
    let hashes = leaf_hashes(&admin);
    let again: Vec<Value> = records()
        .into_iter()
        .filter(|r| r["seq"] == ends_at + 1)
        .collect();
    assert_eq!(again.len(), 2, "both histories' event {}", ends_at + 1);
    assert_ne!(again[0]["leaf_hash"], again[1]["leaf_hash"]);
    assert_eq!(
        again[1]["leaf_hash"].as_str(),
        Some(hashes[&(ends_at + 1)].as_str())
    );

    // Said once: the next start finds the sink's cursor in step with the log again.
    assert!(server.terminate().success());
    server.restart();
    let admin = login(&server, "admin");
    assert_eq!(audit_records(&admin, "audit.export_failed").len(), 1);
}

/// The one `audit.export_failed` record of a rollback, once it is stored.
fn wait_for_rollback(admin: &Cli) -> Value {
    let mut found = Vec::new();
    wait_for("the rollback to be audited", || {
        found = audit_records(admin, "audit.export_failed");
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event"]["outcome"]["code"], "log_rolled_back");
    found.remove(0)
}
