//! Throttling guesses at a user's password and TOTP codes.
//!
//! A six-digit code has a million values and three of them pass at any moment (the current
//! time step and its neighbours), so a stolen API token that could try codes freely would pass
//! an MFA step-up within minutes. After [`MAX_FAILURES`] wrong answers in a row, every check of
//! the user's password or codes is refused for [`LOCKOUT`], which leaves a guesser a few hundred
//! tries a day (RFC 6238, section 5.2, asks verifiers to throttle).

use time::{Duration, OffsetDateTime};

/// Wrong passwords or codes in a row that lock a user's checks.
pub const MAX_FAILURES: u32 = 5;

/// How long a user's checks stay locked.
pub const LOCKOUT: Duration = Duration::minutes(15);

/// One user's run of wrong answers. A right answer ends it: the caller drops the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lockout {
    failures: u32,
    until: Option<OffsetDateTime>,
}

impl Lockout {
    /// The end of the lockout in force at `now`, if any.
    pub fn locked_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.until.filter(|until| *until > now)
    }

    /// A lockout in force until `until`, as one read back from the audit log after a restart.
    pub fn until(until: OffsetDateTime) -> Self {
        Self {
            failures: 0,
            until: Some(until),
        }
    }

    /// Counts a wrong answer given at `now`. Returns the end of the lockout it starts, if it
    /// is the one that reaches [`MAX_FAILURES`].
    pub fn failed(&mut self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.until.is_some_and(|until| until <= now) {
            // A lockout that ran out starts a fresh count.
            *self = Self::default();
        }
        self.failures += 1;
        if self.failures < MAX_FAILURES {
            return None;
        }
        let until = now + LOCKOUT;
        *self = Self {
            failures: 0,
            until: Some(until),
        };
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_wrong_answer_in_a_row_locks_for_fifteen_minutes() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut l = Lockout::default();
        for i in 0..MAX_FAILURES - 1 {
            assert_eq!(l.failed(t0 + Duration::seconds(i.into())), None);
            assert_eq!(l.locked_until(t0), None);
        }
        let at = t0 + Duration::seconds(10);
        assert_eq!(l.failed(at), Some(at + LOCKOUT));
        assert_eq!(
            l.locked_until(at + LOCKOUT - Duration::SECOND),
            Some(at + LOCKOUT)
        );
        assert_eq!(l.locked_until(at + LOCKOUT), None);
    }

    #[test]
    fn a_lockout_read_back_holds_until_its_end_then_counts_afresh() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let until = t0 + Duration::minutes(3);
        let mut l = Lockout::until(until);
        assert_eq!(l.locked_until(t0), Some(until));
        assert_eq!(l.locked_until(until), None);
        assert_eq!(l.failed(until), None);
    }

    #[test]
    fn after_a_lockout_the_count_starts_again() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut l = Lockout::default();
        for _ in 0..MAX_FAILURES {
            l.failed(t0);
        }
        let later = t0 + LOCKOUT;
        assert_eq!(l.failed(later), None);
        assert_eq!(l.locked_until(later), None);
        for _ in 0..MAX_FAILURES - 2 {
            assert_eq!(l.failed(later), None);
        }
        assert_eq!(l.failed(later), Some(later + LOCKOUT));
    }
}
