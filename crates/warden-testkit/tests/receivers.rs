//! Exercises [`WebhookReceiver`] and [`SmtpSink`] with plain clients: Python's `smtplib` and a
//! raw HTTP/1.1 POST, so the notification tests rest on receivers that are proven to work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use warden_testkit::{SmtpSink, WebhookReceiver};

/// POSTs `body` and returns the status code, or `None` when the connection is refused.
fn post(port: u16, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn webhook_receiver_accepts_fails_stops_and_resumes() {
    let mut r = WebhookReceiver::start();
    let port = port_of(&r.url());
    assert_eq!(post(port, r#"{"id":1}"#), Some(200));
    r.answer(500);
    assert_eq!(post(port, r#"{"id":2}"#), Some(500));
    r.stop();
    assert_eq!(
        post(port, r#"{"id":3}"#),
        None,
        "a stopped receiver refuses connections"
    );
    r.resume();
    r.answer(200);
    assert_eq!(post(port, r#"{"id":4}"#), Some(200));
    let ids: Vec<u64> = r
        .accepted()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 4]);
    assert_eq!(r.refused(), 1);
}

#[test]
fn smtp_sink_keeps_each_message() {
    let smtp = SmtpSink::start();
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {})\ns.ehlo()\n\
         s.sendmail('w@example.com', ['a@example.com'], 'Subject: it\\'s one\\r\\n\\r\\nfirst body\\r\\n')\n\
         s.sendmail('w@example.com', ['b@example.com'], 'Subject: two\\r\\n\\r\\nsecond body\\r\\n')\n\
         s.quit()\n",
        smtp.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("Subject: it's one") && messages[0].contains("first body"));
    assert!(messages[1].contains("Subject: two") && messages[1].contains("second body"));
}
