//! Throttling failed authentications by the address they come from.
//!
//! The per-user lockout ([`crate::lockout`]) stops guesses at one user's factors. It does
//! nothing against one guess at each of many users (password spraying), nor against a flood of
//! forged API tokens, each of whose refusals is a durable audit write. So every client address
//! also has a budget of failures: [`BURST`] at once, then one per [`REFILL`]. An address that
//! has spent it is refused before any check runs (no password hash, no audit write) until the
//! budget grows back by one failure.
//!
//! Budgets are counted on the monotonic clock ([`Instant`], read by the caller): a step of the
//! wall clock (an NTP correction, an operator setting it) neither throttles an address that
//! failed once nor frees one that is throttled.

use std::time::{Duration, Instant};

/// Failed authentications an address may make at once.
pub const BURST: u32 = 20;

/// How long an address waits for each further failure once it has spent its burst.
pub const REFILL: Duration = Duration::from_secs(3);

/// One address's spent budget, as the instant of the monotonic clock it is whole again (a
/// generic cell rate algorithm: each failure pushes that instant [`REFILL`] further).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureBudget {
    whole_at: Option<Instant>,
}

impl FailureBudget {
    /// The end of the throttle in force at `now`, if the budget is spent.
    pub fn throttled_until(&self, now: Instant) -> Option<Instant> {
        // One that would fall before the clock's origin has passed long ago.
        let until = self.whole_at?.checked_sub(REFILL * (BURST - 1))?;
        (until > now).then_some(until)
    }

    /// Counts a failure at `now`. Returns the end of the throttle it starts, if it is the
    /// failure that spends the budget.
    pub fn failed(&mut self, now: Instant) -> Option<Instant> {
        let was = self.throttled_until(now);
        let from = self.whole_at.filter(|t| *t > now).unwrap_or(now);
        self.whole_at = Some(from + REFILL);
        match (was, self.throttled_until(now)) {
            (None, Some(until)) => Some(until),
            _ => None,
        }
    }

    /// Whether no failure is counted any more at `now`, so the budget can be forgotten.
    pub fn is_whole(&self, now: Instant) -> bool {
        self.whole_at.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_and_the_failure_that_spends_it_starts_the_throttle() {
        let t0 = Instant::now();
        let mut b = FailureBudget::default();
        for _ in 0..BURST - 1 {
            assert_eq!(b.failed(t0), None);
            assert_eq!(b.throttled_until(t0), None);
        }
        assert_eq!(b.failed(t0), Some(t0 + REFILL));
        assert_eq!(b.throttled_until(t0), Some(t0 + REFILL));
        assert_eq!(b.throttled_until(t0 + REFILL), None);
    }

    #[test]
    fn a_spent_budget_grows_back_one_failure_per_refill() {
        let t0 = Instant::now();
        let mut b = FailureBudget::default();
        for _ in 0..BURST {
            b.failed(t0);
        }
        let later = t0 + REFILL;
        // One more failure is allowed, and it spends the budget again.
        assert_eq!(b.failed(later), Some(later + REFILL));
        // After a whole burst's worth of refills, a whole burst passes again.
        let much_later = later + REFILL * BURST;
        assert!(b.is_whole(much_later));
        for _ in 0..BURST - 1 {
            assert_eq!(b.failed(much_later), None);
        }
    }

    #[test]
    fn failures_slower_than_the_refill_are_never_throttled() {
        let t0 = Instant::now();
        let mut b = FailureBudget::default();
        for i in 0..1000 {
            let t = t0 + REFILL * i;
            assert_eq!(b.failed(t), None);
            assert_eq!(b.throttled_until(t), None);
        }
    }

    #[test]
    fn a_new_budget_is_whole() {
        let t0 = Instant::now();
        assert!(FailureBudget::default().is_whole(t0));
        let mut b = FailureBudget::default();
        b.failed(t0);
        assert!(!b.is_whole(t0));
        assert!(b.is_whole(t0 + REFILL));
    }

    /// An address that failed once, asked about a moment later: not throttled, whatever the
    /// wall clock did meanwhile (the budget never reads it). Under the wall clock, a step of
    /// ten minutes back put that moment before the failure, and the one failure throttled it
    /// for the ten minutes.
    #[test]
    fn one_failure_throttles_nothing_a_moment_later() {
        let t0 = Instant::now();
        let mut b = FailureBudget::default();
        assert_eq!(b.failed(t0), None);
        let moment = t0 + Duration::from_millis(500);
        assert_eq!(b.throttled_until(moment), None);
        assert!(!b.is_whole(moment));
        assert!(b.is_whole(t0 + REFILL));
    }
}
