//! What one user or address may hold of the proxy: connections waiting to sign in, connections
//! signed in, and sessions on one connection; and the refusals past those limits, counted for
//! the metrics and logged as a summary at most once a minute per reason, never once each.
//!
//! Each connection holds a file descriptor, each session one or two more (its upstream
//! connection, its recording): unbounded, one user or address could leave none for anyone,
//! the API's clients included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use warden_domain::UserName;

/// The proxy's limits. [`Limits::default`] is what the server runs with; tests take less.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections not yet signed in, from one address ([`address_key`]).
    pub waiting_per_address: usize,
    /// Connections not yet signed in, from all addresses.
    pub waiting_total: usize,
    /// Connections signed in as one Warden user, from anywhere.
    pub signed_in_per_user: usize,
    /// Connections signed in from one address, whoever signed in.
    pub signed_in_per_address: usize,
    /// Connections signed in, in all.
    pub signed_in_total: usize,
    /// Session channels open at once on one connection (OpenSSH's `MaxSessions` default).
    pub sessions_per_connection: usize,
    /// How long a signed-in connection may go without a session channel (since it signed in,
    /// or since its last session ended), and a session channel without asking for a shell, a
    /// command or a subsystem, before it is closed.
    pub idle: Duration,
}

/// See [`Limits`].
pub const WAITING_PER_ADDRESS: usize = 32;
pub const WAITING_TOTAL: usize = 1024;
pub const SIGNED_IN_PER_USER: usize = 64;
pub const SIGNED_IN_PER_ADDRESS: usize = 128;
pub const SIGNED_IN_TOTAL: usize = 2048;
pub const SESSIONS_PER_CONNECTION: usize = 10;
pub const IDLE_DEADLINE: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Self {
            waiting_per_address: WAITING_PER_ADDRESS,
            waiting_total: WAITING_TOTAL,
            signed_in_per_user: SIGNED_IN_PER_USER,
            signed_in_per_address: SIGNED_IN_PER_ADDRESS,
            signed_in_total: SIGNED_IN_TOTAL,
            sessions_per_connection: SESSIONS_PER_CONNECTION,
            idle: IDLE_DEADLINE,
        }
    }
}

/// The key an address is counted under: an IPv6 address by its /64 network, the block one
/// host usually holds (as the sign-in throttle counts it), an IPv4-mapped one as IPv4.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection (or a session channel) was refused or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    WaitingPerAddress,
    WaitingTotal,
    SignedInPerUser,
    SignedInPerAddress,
    SignedInTotal,
    SessionsPerConnection,
    Idle,
    AcceptFailed,
}

impl Reason {
    const ALL: [Reason; 8] = [
        Reason::WaitingPerAddress,
        Reason::WaitingTotal,
        Reason::SignedInPerUser,
        Reason::SignedInPerAddress,
        Reason::SignedInTotal,
        Reason::SessionsPerConnection,
        Reason::Idle,
        Reason::AcceptFailed,
    ];

    /// The metric's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::WaitingPerAddress => "waiting_per_address",
            Reason::WaitingTotal => "waiting_total",
            Reason::SignedInPerUser => "signed_in_per_user",
            Reason::SignedInPerAddress => "signed_in_per_address",
            Reason::SignedInTotal => "signed_in_total",
            Reason::SessionsPerConnection => "sessions_per_connection",
            Reason::Idle => "idle",
            Reason::AcceptFailed => "accept_failed",
        }
    }

    /// What the summary line says of it.
    fn said(self) -> &'static str {
        match self {
            Reason::WaitingPerAddress => {
                "ssh connections refused: their address had as many waiting to sign in as one may"
            }
            Reason::WaitingTotal => {
                "ssh connections refused: as many were waiting to sign in as the proxy takes"
            }
            Reason::SignedInPerUser => {
                "ssh sign-ins refused: their user had as many connections signed in as one may"
            }
            Reason::SignedInPerAddress => {
                "ssh sign-ins refused: their address had as many connections signed in as one may"
            }
            Reason::SignedInTotal => {
                "ssh sign-ins refused: as many connections were signed in as the proxy takes"
            }
            Reason::SessionsPerConnection => {
                "ssh session channels refused: their connection had as many open as one may"
            }
            Reason::Idle => "ssh connections closed: signed in, with no session for too long",
            Reason::AcceptFailed => "ssh connections not accepted",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// How often at most one summary line per reason is logged.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What was refused (or closed) for each [`Reason`] since start, and since the last summary line.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    totals: [AtomicU64; Reason::ALL.len()],
    log: Mutex<[Unlogged; Reason::ALL.len()]>,
}

#[derive(Debug, Default, Clone)]
struct Unlogged {
    /// When the last summary line of this reason was logged.
    logged_at: Option<Instant>,
    count: u64,
    /// The last error, for a reason that has one (an accept that failed).
    detail: Option<String>,
}

impl Refusals {
    /// Counts one; logs a summary line now if none was for `reason` in the last
    /// [`SUMMARY_INTERVAL`]. Returns whether it did.
    pub(crate) fn count(&self, reason: Reason, detail: Option<&dyn std::fmt::Display>) -> bool {
        self.totals[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut log = lock(&self.log);
        let u = &mut log[reason.index()];
        u.count += 1;
        if let Some(d) = detail {
            u.detail = Some(d.to_string());
        }
        Self::summarize_one(reason, u, Instant::now())
    }

    /// Logs the summary line of every reason with refusals not logged yet, when its last one
    /// is [`SUMMARY_INTERVAL`] old.
    pub(crate) fn summarize(&self) {
        let now = Instant::now();
        let mut log = lock(&self.log);
        for reason in Reason::ALL {
            Self::summarize_one(reason, &mut log[reason.index()], now);
        }
    }

    fn summarize_one(reason: Reason, u: &mut Unlogged, now: Instant) -> bool {
        if u.count == 0
            || u.logged_at
                .is_some_and(|at| now.saturating_duration_since(at) < SUMMARY_INTERVAL)
        {
            return false;
        }
        let count = u.count;
        let since = u
            .logged_at
            .map(|at| now.saturating_duration_since(at).as_secs());
        let detail = u.detail.take();
        u.count = 0;
        u.logged_at = Some(now);
        let what = reason.said();
        match (since, detail) {
            (None, Some(error)) => {
                tracing::warn!(count, reason = reason.label(), %error, "{what} (further ones are summed up at most once a minute)");
            }
            (None, None) => {
                tracing::warn!(
                    count,
                    reason = reason.label(),
                    "{what} (further ones are summed up at most once a minute)"
                );
            }
            (Some(secs), Some(error)) => {
                tracing::warn!(count, reason = reason.label(), %error, "{what}: {count} in the last {secs} s");
            }
            (Some(secs), None) => {
                tracing::warn!(
                    count,
                    reason = reason.label(),
                    "{what}: {count} in the last {secs} s"
                );
            }
        }
        true
    }

    /// How many were refused (or closed) since start, by reason's label.
    pub(crate) fn totals(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .map(|r| (r.label(), self.totals[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

/// Connections not yet signed in, by address.
#[derive(Debug)]
pub(crate) struct Unsigned {
    per_address: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection counted in [`Unsigned`] until dropped.
#[derive(Debug)]
pub(crate) struct Waiting {
    unsigned: Arc<Unsigned>,
    address: IpAddr,
}

impl Unsigned {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            per_address: limits.waiting_per_address,
            total: limits.waiting_total,
            counts: Mutex::default(),
        }
    }

    /// Counts a new connection from `address`, unless that address or all of them have as many
    /// as they may.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Waiting, Reason> {
        let address = address_key(address);
        let mut c = lock(&self.counts);
        if c.total >= self.total {
            return Err(Reason::WaitingTotal);
        }
        let here = c.by_address.entry(address).or_default();
        if *here >= self.per_address {
            return Err(Reason::WaitingPerAddress);
        }
        *here += 1;
        c.total += 1;
        Ok(Waiting {
            unsigned: self.clone(),
            address,
        })
    }
}

/// Decrements `key`'s count in `map`, forgetting it at zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut c = lock(&self.unsigned.counts);
        c.total = c.total.saturating_sub(1);
        release(&mut c.by_address, &self.address);
    }
}

/// Connections signed in, by user and by address.
#[derive(Debug)]
pub(crate) struct Signed {
    per_user: usize,
    per_address: usize,
    total: usize,
    counts: Mutex<SignedCounts>,
}

#[derive(Debug, Default)]
struct SignedCounts {
    total: usize,
    by_user: HashMap<UserName, usize>,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection counted in [`Signed`] until dropped.
#[derive(Debug)]
pub(crate) struct SignedIn {
    signed: Arc<Signed>,
    user: UserName,
    address: IpAddr,
}

impl Signed {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            per_user: limits.signed_in_per_user,
            per_address: limits.signed_in_per_address,
            total: limits.signed_in_total,
            counts: Mutex::default(),
        }
    }

    /// Counts a connection signing in as `user` from `address`, unless the user, the address
    /// or all of them have as many as they may; the refusal says which, and what to do.
    pub(crate) fn admit(
        self: &Arc<Self>,
        user: &UserName,
        address: IpAddr,
    ) -> Result<SignedIn, (Reason, String)> {
        let key = address_key(address);
        let mut c = lock(&self.counts);
        if c.by_user.get(user).copied().unwrap_or(0) >= self.per_user {
            return Err((
                Reason::SignedInPerUser,
                format!(
                    "{user} has {} connections signed in to Warden's SSH proxy, the most one user may: close some, or run several sessions over one connection (ssh -o ControlMaster=auto -o ControlPath=~/.ssh/warden-%C)",
                    self.per_user
                ),
            ));
        }
        if c.by_address.get(&key).copied().unwrap_or(0) >= self.per_address {
            return Err((
                Reason::SignedInPerAddress,
                format!(
                    "your address has {} connections signed in to Warden's SSH proxy, the most one address may: close some, or run several sessions over one connection",
                    self.per_address
                ),
            ));
        }
        if c.total >= self.total {
            return Err((
                Reason::SignedInTotal,
                format!(
                    "Warden's SSH proxy has {} connections signed in, the most it takes: try again in a while",
                    self.total
                ),
            ));
        }
        c.total += 1;
        *c.by_user.entry(user.clone()).or_default() += 1;
        *c.by_address.entry(key).or_default() += 1;
        Ok(SignedIn {
            signed: self.clone(),
            user: user.clone(),
            address: key,
        })
    }
}

impl Drop for SignedIn {
    fn drop(&mut self) {
        let mut c = lock(&self.signed.counts);
        c.total = c.total.saturating_sub(1);
        release(&mut c.by_user, &self.user);
        release(&mut c.by_address, &self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_not_signed_in_are_capped_by_address_and_in_all() {
        let limits = Limits::default();
        let unsigned = Arc::new(Unsigned::new(&limits));
        let one = ip("127.0.0.1");
        let held: Vec<_> = (0..WAITING_PER_ADDRESS)
            .map(|_| unsigned.admit(one).unwrap())
            .collect();
        assert_eq!(
            unsigned.admit(one).unwrap_err(),
            Reason::WaitingPerAddress,
            "one address over its share"
        );
        assert!(
            unsigned.admit(ip("127.0.0.2")).is_ok(),
            "another address still gets in"
        );
        drop(held);
        assert!(
            unsigned.admit(one).is_ok(),
            "freed once they sign in or close"
        );
        let many: Vec<_> = (0..WAITING_TOTAL)
            .filter_map(|i| {
                let a = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
                unsigned.admit(a).ok()
            })
            .collect();
        assert_eq!(many.len(), WAITING_TOTAL);
        assert_eq!(
            unsigned.admit(ip("10.9.9.9")).unwrap_err(),
            Reason::WaitingTotal,
            "all over the total"
        );
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_network() {
        let limits = Limits {
            waiting_per_address: 2,
            ..Limits::default()
        };
        let unsigned = Arc::new(Unsigned::new(&limits));
        let _a = unsigned.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = unsigned.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(unsigned.admit(ip("2001:db8:1:2::77")).is_err());
        assert!(unsigned.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn signed_in_connections_are_capped_by_user_by_address_and_in_all() {
        let limits = Limits {
            signed_in_per_user: 3,
            signed_in_per_address: 5,
            signed_in_total: 8,
            ..Limits::default()
        };
        let signed = Arc::new(Signed::new(&limits));
        let alice: UserName = "alice".parse().unwrap();
        let bob: UserName = "bob".parse().unwrap();
        let carol: UserName = "carol".parse().unwrap();
        let here = ip("192.0.2.1");
        let mut held: Vec<_> = (0..3)
            .map(|_| signed.admit(&alice, here).unwrap())
            .collect();
        let (reason, said) = signed.admit(&alice, ip("192.0.2.200")).unwrap_err();
        assert_eq!(reason, Reason::SignedInPerUser, "from anywhere");
        assert!(said.contains("alice has 3 connections"), "{said}");
        assert!(said.contains("ControlMaster"), "{said}");
        // Another user still gets in, up to the address's share.
        held.extend((0..2).map(|_| signed.admit(&bob, here).unwrap()));
        let (reason, _) = signed.admit(&carol, here).unwrap_err();
        assert_eq!(reason, Reason::SignedInPerAddress);
        // Elsewhere, up to the total.
        held.extend((0..3).map(|i| {
            signed
                .admit(&carol, IpAddr::from([198, 51, 100, i]))
                .unwrap()
        }));
        let (reason, _) = signed
            .admit(&"dave".parse().unwrap(), ip("203.0.113.1"))
            .unwrap_err();
        assert_eq!(reason, Reason::SignedInTotal);
        // A closed connection frees its place.
        held.remove(0);
        assert!(signed.admit(&alice, ip("203.0.113.1")).is_ok());
    }

    #[test]
    fn refusals_are_counted_each_and_logged_at_most_once_a_minute() {
        let r = Refusals::default();
        assert!(
            r.count(Reason::WaitingPerAddress, None),
            "the first is told at once"
        );
        let logged = (0..10_000)
            .filter(|_| r.count(Reason::WaitingPerAddress, None))
            .count();
        assert_eq!(logged, 0, "the rest wait for the summary");
        assert!(
            r.count(Reason::AcceptFailed, Some(&"Too many open files")),
            "each reason has its own line"
        );
        r.summarize();
        let totals: HashMap<_, _> = r.totals().into_iter().collect();
        assert_eq!(totals["waiting_per_address"], 10_001);
        assert_eq!(totals["accept_failed"], 1);
        assert_eq!(totals["idle"], 0);
        // A minute on, the summary says how many since.
        {
            let mut log = lock(&r.log);
            let u = &mut log[Reason::WaitingPerAddress.index()];
            assert_eq!(u.count, 10_000);
            u.logged_at = Some(Instant::now() - SUMMARY_INTERVAL);
        }
        r.summarize();
        assert_eq!(lock(&r.log)[Reason::WaitingPerAddress.index()].count, 0);
    }
}
