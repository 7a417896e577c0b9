//! The API's HTTP/1.1 server: the accept loop, with the limits on connections that
//! `axum::serve` leaves unset.
//!
//! A client has `read_timeout` to send a request's headers and as long again for its body, and
//! a connection idle between two requests is closed after the same time (hyper starts its
//! header timer whenever it waits for a request), so slow or silent clients cannot hold
//! connections, file descriptors and handlers. Nor can one that stops reading its answers: see
//! [`WriteStall`].
//!
//! Connections run without Nagle's algorithm: a watched session's output is many small writes,
//! and each would otherwise wait for the acknowledgement of the one before.
//!
//! A request head is read up to [`framing::HEAD_LIMIT`] (32 KiB) and answered `431` past it,
//! so a connection holds little memory before it has sent a request, and each address, and all
//! of them together, may hold only so many connections open ([`Caps`]): no client without an
//! account can take the descriptors, memory or time everyone else's requests need.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::add_extension::AddExtension;
use tower_http::timeout::RequestBodyDeadline;

use crate::forwarded::TrustedProxies;
use crate::metrics;
use crate::state::Shared;
use crate::write_stall::WriteStall;

pub mod framing;

/// How long an accept error that is not one connection's (out of file descriptors, say) stops
/// the loop before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long requests in flight at shutdown get to finish. A watched session's stream or a
/// stalled upload could run on indefinitely; past this they are cut, so that the server still
/// writes its final audit checkpoint before a supervisor's kill.
const DRAIN: Duration = Duration::from_secs(5);

/// Send buffer of every API connection (the kernel doubles it for its own bookkeeping). A
/// writer learns it may write again only once a good part of the buffer has drained, and with
/// the buffer the kernel would grow to on its own (megabytes) a client reading slowly but
/// steadily would seem to read nothing for longer than [`WriteStall`] allows (a 5 MB export
/// read at 64 KiB/s was cut after 4 MB). With this one a reader of some 10 KB/s shows progress
/// within the read timeout; it is ample for the loopback or LAN hop from the TLS proxy in front.
const SEND_BUFFER: u32 = 64 * 1024;

/// Most API connections one address (an IPv6 client's /64, the block one host usually holds)
/// may hold open at once. A command-line call holds one, a browser six; a script that opens
/// more than this at once is refused the extra ones, and an address cannot take the
/// connections everyone else needs. A trusted proxy (`trusted_proxies`), which brings every
/// client's connections, is held to the total alone ([`Caps::total`]).
pub const PER_ADDRESS: usize = 128;

/// Most API connections open at once, however many descriptors the process may hold: one
/// that sends a head slowly holds up to [`framing::HEAD_LIMIT`] of it twice (hyper's buffer
/// and the framing reader's copy), some 70 KB all told, so a server full of them holds some
/// 300 MB.
const TOTAL_MAX: usize = 4096;

/// The fewest API connections the total allows, however few descriptors there are.
const TOTAL_MIN: usize = 16;

/// Descriptors left aside, out of the process's limit, for what is not a listener's
/// connection: the store's files, session recordings, the audit log's exports, and connections
/// to targets and notification sinks.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How often refused connections are summed up in the server's log: at most one line each
/// time, never one per refusal.
const REFUSALS_TOLD_EVERY: Duration = Duration::from_secs(60);

/// How many API connections may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// From one address ([`PER_ADDRESS`]).
    pub per_address: usize,
    /// From all addresses together.
    pub total: usize,
}

impl Caps {
    /// The caps of a process that may hold `descriptors` open files: the total is half of what
    /// [`RESERVED_DESCRIPTORS`] leaves (the other half is the SSH proxy's, whose sessions
    /// hold two each), between [`TOTAL_MIN`] and [`TOTAL_MAX`].
    pub fn for_descriptors(descriptors: u64) -> Self {
        let half = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2;
        let total = usize::try_from(half)
            .unwrap_or(usize::MAX)
            .clamp(TOTAL_MIN, TOTAL_MAX);
        Self {
            per_address: PER_ADDRESS.min(total),
            total,
        }
    }
}

/// Why a connection was refused: the label of `warden_api_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its address held [`Caps::per_address`] connections already.
    Address,
    /// All addresses together held [`Caps::total`].
    Total,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Total => "total",
        }
    }
}

/// The key an address's connections are counted under: an IPv4 address (one mapped into IPv6
/// too) as it is, an IPv6 one by its /64 network.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// The API connections open now, by address and in all.
struct Open {
    caps: Caps,
    /// Held to the total alone.
    trusted: TrustedProxies,
    counts: Mutex<Counts>,
    /// Told how many are open after each change (`warden_api_connections`).
    tell_open: Box<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("caps", &self.caps)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection counted in [`Open`] until dropped.
#[derive(Debug)]
struct Admitted {
    open: Arc<Open>,
    /// Its address's key; `None` for a trusted proxy's, not counted by address.
    key: Option<IpAddr>,
}

impl Open {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `peer`, unless its address or all of them hold as many as
    /// they may.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let key = (!self.trusted.trusts(peer)).then(|| address_key(peer));
        let mut counts = self.counts();
        if counts.total >= self.caps.total {
            return Err(Refusal::Total);
        }
        if let Some(key) = key {
            let here = counts.by_address.entry(key).or_default();
            if *here >= self.caps.per_address {
                return Err(Refusal::Address);
            }
            *here += 1;
        }
        counts.total += 1;
        (self.tell_open)(counts.total);
        Ok(Admitted {
            open: self.clone(),
            key,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.open.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(n) = counts.by_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&key);
            }
        }
        (self.open.tell_open)(counts.total);
    }
}

/// Connections refused since the server's log last said so.
#[derive(Debug, Default)]
struct Refused {
    address: u64,
    total: u64,
    /// The address of the last one refused for its address's cap.
    last_address: Option<IpAddr>,
    /// When the log last said so.
    told: Option<tokio::time::Instant>,
}

impl Refused {
    fn note(&mut self, why: Refusal, peer: IpAddr) {
        match why {
            Refusal::Address => {
                self.address += 1;
                self.last_address = Some(peer);
            }
            Refusal::Total => self.total += 1,
        }
    }

    /// Says in the server's log how many connections were refused since it last did, unless it
    /// did less than [`REFUSALS_TOLD_EVERY`] ago or none was.
    fn tell(&mut self, caps: Caps) {
        let now = tokio::time::Instant::now();
        if self.address + self.total == 0
            || self
                .told
                .is_some_and(|t| now.duration_since(t) < REFUSALS_TOLD_EVERY)
        {
            return;
        }
        let last = self
            .last_address
            .map_or_else(String::new, |a| format!(", the last from {a}"));
        tracing::warn!(
            over_address_cap = self.address,
            over_total_cap = self.total,
            "API connections refused and closed unread: {} from addresses that held {} open already{last}, {} while all addresses together held {}; counted in warden_api_connections_refused_total, and said here at most once a minute",
            self.address,
            caps.per_address,
            self.total,
            caps.total,
        );
        *self = Self {
            told: Some(now),
            ..Self::default()
        };
    }
}

/// Listens for API connections on `addr`, each with [`SEND_BUFFER`] (set on the listening
/// socket, which the accepted ones take it from).
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `router` on `listener` until `shutdown` completes, then gives the requests in flight
/// `DRAIN` (5 s) to finish and returns. A connection past `caps` is closed as soon as it is
/// accepted, unread and unanswered: counted in `warden_api_connections_refused_total`, and
/// summed up in the log at most once a minute.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    app: Shared,
    caps: Caps,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(framing::HEAD_LIMIT);
    for why in [Refusal::Address, Refusal::Total] {
        app.metrics
            .add(&metrics::API_CONNECTIONS_REFUSED, &[why.label()], 0);
    }
    app.metrics.set(&metrics::API_CONNECTIONS, &[], 0.0);
    let gauge = app.clone();
    let open = Arc::new(Open {
        caps,
        trusted: app.config.trusted_proxies.clone(),
        counts: Mutex::default(),
        tell_open: Box::new(move |n| {
            gauge.metrics.set(&metrics::API_CONNECTIONS, &[], n as f64);
        }),
    });
    let mut refused = Refused::default();
    let mut tell = tokio::time::interval(REFUSALS_TOLD_EVERY);
    tell.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tell.tick() => {
                refused.tell(caps);
                continue;
            }
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept API connections; retrying in a second");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let admitted = match open.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                // Closed at once: no task, no buffer, no line of its own in the log.
                drop(tcp);
                app.metrics
                    .add(&metrics::API_CONNECTIONS_REFUSED, &[why.label()], 1);
                refused.note(why, peer.ip());
                refused.tell(caps);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn off Nagle's algorithm on a connection");
        }
        // What `ConnectInfo<SocketAddr>` extracts: the client's address for the audit log;
        // and what the connection's request heads named that hyper does not hand on.
        let heads = framing::Heads::default();
        let service = RequestBodyDeadline::new(
            AddExtension::new(
                AddExtension::new(router.clone(), ConnectInfo::<SocketAddr>(peer)),
                heads.clone(),
            ),
            read_timeout,
        );
        let io = WriteStall::new(
            TokioIo::new(framing::Watched::new(tcp, heads)),
            read_timeout,
        );
        let connection =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "API connection ended");
            }
            drop(admitted);
        });
    }
    refused.told = None;
    refused.tell(caps);
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "API requests still in flight {} s into shutdown are cut",
            DRAIN.as_secs()
        );
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(caps: Caps, trusted: &[&str]) -> Arc<Open> {
        let trusted: Vec<String> = trusted.iter().map(|t| (*t).to_owned()).collect();
        Arc::new(Open {
            caps,
            trusted: TrustedProxies::try_from(trusted).unwrap(),
            counts: Mutex::default(),
            tell_open: Box::new(|_| {}),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_total_is_half_of_what_the_reserve_leaves_within_bounds() {
        let caps = Caps::for_descriptors;
        assert_eq!(
            caps(1024),
            Caps {
                per_address: 128,
                total: 384
            }
        );
        assert_eq!(caps(20_000).total, 4096);
        assert_eq!(caps(u64::MAX).total, 4096);
        // However few descriptors, a few connections; never more from one address than in all.
        assert_eq!(
            caps(100),
            Caps {
                per_address: 16,
                total: 16
            }
        );
    }

    #[test]
    fn each_address_and_all_of_them_hold_only_so_many_and_a_closed_one_makes_room() {
        let open = open(
            Caps {
                per_address: 2,
                total: 5,
            },
            &["10.0.0.0/8"],
        );
        let a = ip("192.0.2.1");
        let first: Vec<_> = (0..2).map(|_| open.admit(a).unwrap()).collect();
        assert_eq!(open.admit(a).unwrap_err(), Refusal::Address);
        // One IPv6 host's /64 is one address; another /64 is another.
        let v6 = open.admit(ip("2001:db8::1")).unwrap();
        let _v6 = open.admit(ip("2001:db8::ffff:1")).unwrap();
        assert_eq!(open.admit(ip("2001:db8::2")).unwrap_err(), Refusal::Address);
        // A trusted proxy brings many clients: held to the total alone.
        let _proxy = open.admit(ip("10.1.2.3")).unwrap();
        assert_eq!(open.admit(ip("10.1.2.3")).unwrap_err(), Refusal::Total);
        assert_eq!(open.admit(ip("198.51.100.7")).unwrap_err(), Refusal::Total);
        drop(v6);
        let _other = open.admit(ip("198.51.100.7")).unwrap();
        drop(first);
        let _again = open.admit(a).unwrap();
        let counts = open.counts();
        assert_eq!(counts.total, 4);
        assert_eq!(counts.by_address.get(&a), Some(&1));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4_and_ipv6_by_their_64() {
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
