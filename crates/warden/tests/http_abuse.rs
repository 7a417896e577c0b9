//! The API's HTTP front under clients that send no request worth the name: empty lines without
//! end, heads that never end, and more connections from one address than a client needs. Each
//! is refused at its limit, cheaply, while everyone else is served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use warden_testkit::http_get;

/// What the server says on `s` before it closes it, read for at most `limit`: `Ok` with what
/// it said (perhaps nothing) once it closed, `Err` if it kept the connection open that long.
fn said_before_closing(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        match s.read(&mut piece) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&piece[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            Err(e) => {
                return Err(format!(
                    "still open after {limit:?} ({e}), having said {:?}",
                    String::from_utf8_lossy(&out)
                ));
            }
        }
    }
}

/// Sends `bytes` on a new connection in pieces, as far as the server takes them, then what it
/// says before closing (read for at most 20 s).
fn send_then_read(port: u16, bytes: &[u8]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    for piece in bytes.chunks(1000) {
        // A server that refused the head closes the connection: the rest is not taken.
        if s.write_all(piece).is_err() {
            break;
        }
    }
    said_before_closing(&mut s, Duration::from_secs(20))
}

#[test]
fn empty_lines_and_endless_heads_are_refused_at_their_limit_while_others_are_served() {
    // Longer than any deadline below: what closes the bad connections is their size, not
    // the time they take.
    let env = Env::start_configured("http_read_timeout = \"60s\"\n");
    let port = env.server.port();
    let blank = vec![b'\n'; 200_000];
    let mut endless = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec();
    endless.resize(100_000, b'p');
    std::thread::scope(|s| {
        let flood: Vec<_> = (0..2)
            .map(|_| s.spawn(|| send_then_read(port, &blank)))
            .chain([s.spawn(|| send_then_read(port, &endless))])
            .collect();
        // Meanwhile everyone else is answered, within http_get's own 10 s.
        for _ in 0..3 {
            let health = http_get(port, "/healthz").expect("/healthz during the flood");
            assert_eq!(health.status, 200, "{}", health.body);
            std::thread::sleep(Duration::from_millis(200));
        }
        for bad in flood {
            let said = bad.join().unwrap().unwrap();
            assert!(
                said.is_empty() || said.starts_with("HTTP/1.1 431"),
                "{said}"
            );
        }
    });
    // A real sign-in goes through.
    env.login("alice");
}

/// A connection to the API at `port` from loopback address `source` (127.0.0.0/8 is all
/// loopback), as a client on another host would come.
fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Sends `GET path` on `s`, keeping it open, and reads the answer: its status line and body.
fn get_on(s: &mut TcpStream, path: &str) -> (String, String) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let n = s.read(&mut piece).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&piece[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a length");
        if body.len() >= length {
            let status = head.lines().next().unwrap().to_owned();
            return (status, body.to_owned());
        }
    }
}

/// Signs `user` in from `source`, on a connection of its own: the status.
fn sign_in_from(source: [u8; 4], port: u16, user: &str) -> u16 {
    let mut s = connect_from(source, port);
    let body = format!(r#"{{"user":"{user}","password":"{PASSWORD}"}}"#);
    write!(
        s,
        "POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let said = said_before_closing(&mut s, Duration::from_secs(30)).unwrap();
    said.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The value of the series `line` names in `/metrics`, read from `source`.
fn metric_from(source: [u8; 4], port: u16, series: &str) -> f64 {
    let mut s = connect_from(source, port);
    let (status, text) = get_on(&mut s, "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}

#[test]
fn one_address_holds_only_so_many_connections_and_others_still_get_in() {
    let env = Env::start_configured("http_read_timeout = \"60s\"\n");
    let port = env.server.port();
    // The caps the server set from its descriptor limit, as it logged them at start.
    let log = env.server.stderr();
    let start = log
        .lines()
        .find(|l| l.contains("open file limit"))
        .unwrap_or_else(|| panic!("no open file limit in the log: {log}"));
    let per_address: usize = start
        .split_once("api_connections_per_address=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{start}"));
    assert_eq!(per_address, warden_server::http::PER_ADDRESS, "{start}");

    // As many as one address may hold, each answered and then left open.
    let here = [127, 0, 0, 1];
    let mut held: Vec<TcpStream> = (0..per_address)
        .map(|_| {
            let mut s = connect_from(here, port);
            let (status, _) = get_on(&mut s, "/healthz");
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            s
        })
        .collect();
    // One more from that address is closed unanswered, at once (well within the read timeout
    // a connection held open would have), and so are the next ones.
    let refusals = 20;
    for _ in 0..refusals {
        let mut extra = connect_from(here, port);
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let said = said_before_closing(&mut extra, Duration::from_secs(20)).unwrap();
        assert_eq!(said, "", "a connection past the cap was answered");
    }
    // Another address is served, a sign-in included.
    let elsewhere = [127, 0, 0, 2];
    let mut other = connect_from(elsewhere, port);
    let (status, body) = get_on(&mut other, "/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    assert_eq!(sign_in_from(elsewhere, port, "alice"), 200);
    // Counted, and told in the log once, not once each.
    let refused = metric_from(
        elsewhere,
        port,
        "warden_api_connections_refused_total{reason=\"address\"}",
    );
    assert!(refused >= f64::from(refusals), "{refused}");
    let open = metric_from(elsewhere, port, "warden_api_connections");
    assert!(open >= per_address as f64, "{open}");
    let told = env
        .server
        .stderr()
        .lines()
        .filter(|l| l.contains("API connections refused"))
        .count();
    assert_eq!(told, 1, "{}", env.server.stderr());
    // A connection closed makes room for another from the same address.
    drop(held.pop());
    wait_until(
        "a connection from the capped address to be served again",
        Duration::from_secs(20),
        || {
            let mut s = connect_from(here, port);
            let _ = s.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            said_before_closing(&mut s, Duration::from_secs(20))
                .is_ok_and(|said| said.starts_with("HTTP/1.1 200"))
        },
    );
    drop(held);
}
