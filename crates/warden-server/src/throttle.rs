//! Failed authentications counted by client address ([`warden_domain::throttle`]): wrong
//! passwords and codes at sign-in, and invalid API or metrics tokens.
//!
//! Only failures count, and a valid token is honoured whatever its address has done, so
//! users who share an address with a guesser (a NAT, the TLS proxy when `trusted_proxies` is
//! unset) keep working with the tokens they have; only their sign-ins wait. Attempts refused
//! while throttled are counted in `warden_auth_throttled_total`, not audited one by one: the
//! throttle's start is (`auth.source_throttled`), with each failure that led to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::throttle::{BURST, FailureBudget, REFILL};

use crate::auth::AuthError;
use crate::metrics;
use crate::state::{App, now};

/// Most addresses tracked at once. Past it, spent budgets are kept and whole ones dropped; if
/// every tracked address is still throttled, new addresses go uncounted (the per-user lockout
/// still holds), so a flood of addresses cannot grow the server's memory without bound.
const MAX_ADDRESSES: usize = 65_536;

/// Each address's budget of failures. IPv6 addresses count by their /64 network, the block
/// one host usually holds.
#[derive(Debug, Default)]
pub struct SourceThrottles {
    map: Mutex<Budgets>,
}

#[derive(Debug, Default)]
struct Budgets {
    by_address: HashMap<IpAddr, FailureBudget>,
    /// When a full table was last swept of whole budgets. Budgets grow back one failure per
    /// [`REFILL`], so a sweep sooner than that after one that freed too little would free
    /// hardly more, at the cost of a pass over the whole table for every newcomer of a flood.
    swept_at: Option<Instant>,
}

/// A moment as both clocks read it: budgets are counted on the monotonic clock, which no step
/// of the wall clock moves, and the throttles they start are told (audited, and sent as
/// `Retry-After`) in wall-clock time, as the same distance from `wall`.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    mono: Instant,
    wall: OffsetDateTime,
}

impl Clocks {
    fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: now(),
        }
    }

    /// The wall-clock time of `at`, a monotonic instant no earlier than this moment.
    fn wall_at(&self, at: Instant) -> OffsetDateTime {
        self.wall + at.saturating_duration_since(self.mono)
    }
}

/// The key an address is counted under, or `None` for an unknown one.
fn key(source: Option<&str>) -> Option<IpAddr> {
    match source?.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => Some(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
        },
        v4 => Some(v4),
    }
}

impl SourceThrottles {
    fn budgets(&self) -> MutexGuard<'_, Budgets> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn throttled_until(&self, source: Option<&str>, at: Clocks) -> Option<OffsetDateTime> {
        let key = key(source)?;
        let until = self
            .budgets()
            .by_address
            .get(&key)?
            .throttled_until(at.mono)?;
        Some(at.wall_at(until))
    }

    /// Counts a failure; returns the end of the throttle it starts, if it spends the budget.
    fn failed(&self, source: Option<&str>, at: Clocks) -> Option<OffsetDateTime> {
        let key = key(source)?;
        let t = at.mono;
        let mut b = self.budgets();
        if b.by_address.len() >= MAX_ADDRESSES && !b.by_address.contains_key(&key) {
            if b.swept_at.is_some_and(|at| t < at + REFILL) {
                return None;
            }
            b.swept_at = Some(t);
            b.by_address.retain(|_, budget| !budget.is_whole(t));
            if b.by_address.len() >= MAX_ADDRESSES {
                return None;
            }
        }
        let until = b.by_address.entry(key).or_default().failed(t)?;
        Some(at.wall_at(until))
    }
}

impl App {
    /// Refuses an authentication attempt from an address that has spent its failures.
    pub(crate) fn check_source(&self, source: Option<&str>) -> Result<(), AuthError> {
        match self.throttles.throttled_until(source, Clocks::now()) {
            Some(until) => {
                self.metrics.add(&metrics::AUTH_THROTTLED, &[], 1);
                Err(AuthError::Throttled(until))
            }
            None => Ok(()),
        }
    }

    /// Audits a failed authentication and counts it against its actor's address; the failure
    /// that spends the address's budget is audited with the throttle it starts, in the same
    /// commit.
    pub(crate) async fn auth_failed(&self, event: Event) -> Result<(), AuthError> {
        let source = event.actor.source.clone();
        let mut events = vec![event];
        let at = Clocks::now();
        let t = at.wall;
        if let Some(until) = self.throttles.failed(source.as_deref(), at) {
            events.push(
                Event::new(
                    Code::SourceThrottled,
                    Actor {
                        source,
                        ..Actor::default()
                    },
                    t,
                )
                .details(serde_json::json!({
                    "failures": BURST,
                    "until": warden_domain::rfc3339(until),
                })),
            );
        }
        self.store.append(events).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_network_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            key(Some("2001:db8:1:2:aaaa::1")),
            key(Some("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(key(Some("2001:db8:1:2::1")), key(Some("2001:db8:1:3::1")));
        assert_eq!(key(Some("::ffff:192.0.2.7")), key(Some("192.0.2.7")));
        assert_ne!(key(Some("192.0.2.7")), key(Some("192.0.2.8")));
        assert_eq!(key(None), None);
        assert_eq!(key(Some("not an address")), None);
    }

    #[test]
    fn a_full_table_drops_whole_budgets_and_leaves_new_addresses_uncounted_while_all_are_spent() {
        let throttles = SourceThrottles::default();
        let at = Clocks::now();
        let t = at.mono;
        {
            let mut b = throttles.budgets();
            let mut spent = FailureBudget::default();
            for _ in 0..BURST {
                spent.failed(t);
            }
            for i in 0..MAX_ADDRESSES as u32 {
                b.by_address.insert(IpAddr::V4(i.into()), spent);
            }
        }
        let newcomer = Some("203.0.113.9");
        for _ in 0..BURST {
            assert_eq!(throttles.failed(newcomer, at), None);
        }
        assert_eq!(throttles.throttled_until(newcomer, at), None);
        // The table was swept once, not once per failure.
        assert_eq!(throttles.budgets().swept_at, Some(t));
        // Once the others' budgets are whole again, the newcomer is counted.
        let later = Clocks {
            mono: t + REFILL * BURST,
            wall: at.wall + REFILL * BURST,
        };
        throttles.failed(newcomer, later);
        assert_eq!(throttles.budgets().by_address.len(), 1);
    }

    /// The wall clock stepped ten minutes back between an address's failures and its next
    /// attempt, a second later: one failure throttles it for nothing, and a spent budget for
    /// the two seconds left of its refill, not for the step.
    #[test]
    fn a_step_back_of_the_wall_clock_neither_throttles_nor_lengthens_a_throttle() {
        let throttles = SourceThrottles::default();
        let before = Clocks::now();
        let after = Clocks {
            mono: before.mono + std::time::Duration::from_secs(1),
            wall: before.wall - time::Duration::minutes(10) + time::Duration::seconds(1),
        };
        let once = Some("198.51.100.1");
        assert_eq!(throttles.failed(once, before), None);
        assert_eq!(throttles.throttled_until(once, after), None);

        let spent = Some("198.51.100.2");
        for _ in 0..BURST - 1 {
            assert_eq!(throttles.failed(spent, before), None);
        }
        assert_eq!(
            throttles.failed(spent, before),
            Some(before.wall + REFILL),
            "the throttle ends a refill after the failure that started it"
        );
        assert_eq!(
            throttles.throttled_until(spent, after),
            Some(after.wall + time::Duration::seconds(2))
        );
        let whole = Clocks {
            mono: before.mono + REFILL,
            wall: after.wall + time::Duration::seconds(2),
        };
        assert_eq!(throttles.throttled_until(spent, whole), None);
    }
}
