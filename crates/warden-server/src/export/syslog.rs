//! The syslog sink: RFC 5424 messages, octet-counted over TCP (RFC 6587) or one per UDP
//! datagram (RFC 5426).
//!
//! ```text
//! <86>1 2025-01-02T03:04:05.123Z host warden 4242 W1000 [warden@32473 seq="12" leafHash="…"] {"seq":12,…}
//! ```
//!
//! Facility authpriv (10); severity info for allowed events, warning for denied, err for
//! failed. MSGID is the event code, the structured data carries the sequence number and leaf
//! hash (32473 is the enterprise number RFC 5612 reserves for examples; Warden has none of its
//! own), and MSG is the event JSON exactly as hashed into the log. MSG starts with a UTF-8 BOM
//! only when it holds non-ASCII text, as RFC 5424 asks.
//!
//! Syslog has no acknowledgements. Over TCP, bytes the kernel took, or even the receiver's
//! kernel, may still never reach the receiver: a receiver that is stopped, or dies with unread
//! data in its socket, loses them. So each batch goes on a connection of its own, Warden closes
//! its end after the last frame, and the batch counts as delivered only once the receiver has
//! closed its end too, which it does once it has read everything before Warden's (rsyslog,
//! syslog-ng and other receivers do). A receiver that does not within [`IO_LIMIT`], or resets
//! the connection (closing it with data unread), fails the batch, which is sent again: the
//! receiver may see it twice. What the receiver has read and then loses (it crashes before
//! writing it) is lost: for delivery that the destination acknowledges, use the webhook sink
//! (its HTTP status) or the file sink. Over UDP a message counts as delivered once sent, whether
//! or not it arrives. Receivers limit message size (rsyslog: 8 KiB unless `maxMessageSize` is
//! raised); UDP messages are cut at 65 000 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warden_domain::audit::{Event, Outcome};
use warden_store::Leaf;

use super::Sink;
use super::config::{SyslogConfig, Transport};

/// Leaves per batch.
const BATCH: usize = 500;
/// Facility authpriv: security and authorisation messages.
const FACILITY: u8 = 10;
/// Limit on connecting, and on delivering one batch: from its first byte written to the
/// receiver's closing the connection.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// Longest UDP message: a datagram's payload cannot exceed 65 507 bytes over IPv4.
const MAX_DATAGRAM: usize = 65_000;

/// Sends RFC 5424 messages to one receiver.
#[derive(Debug)]
pub struct SyslogSink {
    address: String,
    transport: Transport,
    app_name: String,
    hostname: String,
    procid: String,
    /// The UDP socket; dropped after an error and made again.
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    pub fn new(c: &SyslogConfig) -> Self {
        Self {
            address: c.address.clone(),
            transport: c.transport,
            app_name: c.app_name.clone(),
            hostname: hostname(),
            procid: std::process::id().to_string(),
            udp: None,
        }
    }

    /// The RFC 5424 message for `leaf`.
    fn message(&self, leaf: &Leaf) -> Vec<u8> {
        // Leaves are Warden's own events; should one not parse, it still goes out, with
        // nil fields, rather than block the export.
        let event: Option<Event> = serde_json::from_str(&leaf.data).ok();
        let severity = match event.as_ref().map(|e| &e.outcome) {
            Some(Outcome::Allowed) => 6,
            Some(Outcome::Denied { .. }) => 4,
            Some(Outcome::Failed { .. }) => 3,
            None => 5,
        };
        // RFC 5424 takes up to six decimals: the event's own time, as Warden writes times.
        let timestamp = event
            .as_ref()
            .map_or_else(|| "-".to_owned(), |e| warden_domain::rfc3339(e.time));
        let msgid = event.map_or_else(|| "-".to_owned(), |e| e.code.to_string());
        let bom = if leaf.data.is_ascii() { "" } else { "\u{feff}" };
        format!(
            "<{}>1 {timestamp} {} {} {} {msgid} [warden@32473 seq=\"{}\" leafHash=\"{}\"] {bom}{}",
            FACILITY * 8 + severity,
            self.hostname,
            self.app_name,
            self.procid,
            param_value(&leaf.seq.to_string()),
            param_value(&hex::encode(leaf.hash)),
            leaf.data,
        )
        .into_bytes()
    }

    /// Sends `frames` on a connection of their own and waits for the receiver to close it,
    /// having read them all (see the module's documentation).
    async fn send_tcp(&self, frames: &[u8]) -> std::io::Result<()> {
        let mut stream = limit(TcpStream::connect(&self.address)).await??;
        limit(async {
            stream.write_all(frames).await?;
            stream.shutdown().await?;
            read_until_closed(&mut stream).await
        })
        .await?
    }

    async fn send_udp(&mut self, messages: &[Vec<u8>]) -> std::io::Result<()> {
        let socket = match self.udp.take() {
            Some(s) => s,
            None => {
                let peer = limit(tokio::net::lookup_host(&self.address))
                    .await??
                    .next()
                    .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
                let socket = UdpSocket::bind(local_for(peer)).await?;
                socket.connect(peer).await?;
                socket
            }
        };
        let socket = self.udp.insert(socket);
        for m in messages {
            socket.send(&m[..m.len().min(MAX_DATAGRAM)]).await?;
        }
        Ok(())
    }
}

impl Sink for SyslogSink {
    fn batch(&self) -> usize {
        BATCH
    }

    async fn deliver(&mut self, leaves: &[Leaf]) -> Result<(), String> {
        let messages: Vec<Vec<u8>> = leaves.iter().map(|l| self.message(l)).collect();
        let sent = match self.transport {
            Transport::Tcp => {
                let mut frames = Vec::new();
                for m in &messages {
                    frames.extend_from_slice(format!("{} ", m.len()).as_bytes());
                    frames.extend_from_slice(m);
                }
                self.send_tcp(&frames).await
            }
            Transport::Udp => {
                let sent = self.send_udp(&messages).await;
                if sent.is_err() {
                    self.udp = None;
                }
                sent
            }
        };
        sent.map_err(|e| format!("syslog {}: {e}", self.address))
    }
}

/// Runs `f` within [`IO_LIMIT`].
async fn limit<T>(f: impl Future<Output = T>) -> std::io::Result<T> {
    tokio::time::timeout(IO_LIMIT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
}

/// Reads, and drops, whatever the receiver sends until it closes its end. A reset (the
/// receiver closed with data unread) is an error.
async fn read_until_closed(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut discarded = [0u8; 512];
    while stream.read(&mut discarded).await? > 0 {}
    Ok(())
}

/// The local address to send from: loopback for a loopback receiver, else any.
fn local_for(peer: SocketAddr) -> SocketAddr {
    let ip = match (peer.ip().is_loopback(), peer.is_ipv4()) {
        (true, true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, false) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (false, true) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// This machine's name as RFC 5424 HOSTNAME: printable ASCII, at most 255 characters, or the
/// nil value when unknown.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

/// A structured-data parameter value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn param_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn sink() -> SyslogSink {
        SyslogSink::new(&SyslogConfig {
            name: "s".into(),
            address: "127.0.0.1:514".into(),
            transport: Transport::Tcp,
            app_name: "warden".into(),
        })
    }

    #[test]
    fn escapes_parameter_values() {
        assert_eq!(param_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }

    #[test]
    fn formats_rfc5424_with_severity_from_the_outcome() {
        let s = sink();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let event = Event::new(
            warden_domain::audit::Code::LoginFailed,
            Default::default(),
            time,
        )
        .denied("bad_password", "nope");
        let data = serde_json::to_string(&event).unwrap();
        let leaf = Leaf {
            seq: 3,
            data: data.clone(),
            hash: [1; 32],
        };
        let m = String::from_utf8(s.message(&leaf)).unwrap();
        let expected = format!(
            "<84>1 2023-11-14T22:13:20.123Z {} warden {} W1001 [warden@32473 seq=\"3\" leafHash=\"{}\"] {data}",
            s.hostname,
            std::process::id(),
            "01".repeat(32)
        );
        assert_eq!(m, expected);
        let bad = Leaf {
            seq: 4,
            data: "{\"é\":1}".into(),
            hash: [0; 32],
        };
        let m = String::from_utf8(s.message(&bad)).unwrap();
        assert!(
            m.starts_with("<85>1 - ") && m.contains(" - [warden@32473 seq=\"4\""),
            "{m}"
        );
        assert!(m.ends_with("] \u{feff}{\"é\":1}"), "{m}");
    }
}
