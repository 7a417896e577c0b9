//! Throttling guesses at a user's password and TOTP codes.
//!
//! A six-digit code has a million values and three of them pass at any moment (the current
//! time step and its neighbours), so a stolen API token that could try codes freely would pass
//! an MFA step-up within minutes. After [`MAX_FAILURES`] wrong answers in a row, checks of the
//! user's password or codes are refused for [`LOCKOUT`], which leaves a guesser a few hundred
//! tries a day (RFC 6238, section 5.2, asks verifiers to throttle).
//!
//! Wrong answers are counted, and lock, apart by where they were given ([`Kind`]): anyone who
//! knows a user's name can send wrong passwords at sign-in, so those lock the user's sign-in
//! only, never the step-ups of a session they already hold (break-glass included); wrong codes
//! at a step-up come from someone holding one of the user's tokens, which suggests it was
//! stolen, so those lock step-ups and sign-ins both.

use time::{Duration, OffsetDateTime};

/// Wrong passwords or codes in a row that lock a user's checks.
pub const MAX_FAILURES: u32 = 5;

/// How long a user's checks stay locked.
pub const LOCKOUT: Duration = Duration::minutes(15);

/// Where a password or code was checked, and so what a lock of wrong answers there refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// At sign-in (a wrong password, or a wrong code after the right password): sent by
    /// anyone, so its lock refuses sign-ins only.
    SignIn,
    /// At a step-up (a re-enrolment, or a change of one's own password) by a caller signed in
    /// as the user: its lock refuses step-ups and sign-ins.
    StepUp,
}

impl Kind {
    /// The name the audit log gives a lock of this kind (`kind` of `auth.user_locked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::StepUp => "step_up",
        }
    }

    /// The kind of a lock as the audit log recorded it: none (an event of a version that locked
    /// every check at once) or one not known reads as [`Kind::StepUp`], which refuses every
    /// check, as those locks did.
    pub fn recorded(name: Option<&str>) -> Self {
        match name {
            Some("sign_in") => Self::SignIn,
            _ => Self::StepUp,
        }
    }

    /// What a lock of this kind refuses, as said to people.
    pub fn refuses(self) -> &'static str {
        match self {
            Self::SignIn => "sign-ins",
            Self::StepUp => "step-ups and sign-ins",
        }
    }
}

/// One kind of wrong answers in a row, and the lock they began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Run {
    failures: u32,
    until: Option<OffsetDateTime>,
}

impl Run {
    fn locked_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.until.filter(|until| *until > now)
    }

    fn failed(&mut self, now: OffsetDateTime) -> Option<OffsetDateTime> {
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

/// One user's runs of wrong answers, one of each [`Kind`], and the locks they began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lockout {
    sign_in: Run,
    step_up: Run,
}

impl Lockout {
    fn run(&mut self, kind: Kind) -> &mut Run {
        match kind {
            Kind::SignIn => &mut self.sign_in,
            Kind::StepUp => &mut self.step_up,
        }
    }

    /// The lock that refuses a check of `kind` at `now`, if any, with its own kind: a
    /// step-up's lock refuses sign-ins too. Of two in force, the one that ends last.
    pub fn refusing(&self, kind: Kind, now: OffsetDateTime) -> Option<(Kind, OffsetDateTime)> {
        let step_up = self.step_up.locked_until(now).map(|u| (Kind::StepUp, u));
        let sign_in = match kind {
            Kind::SignIn => self.sign_in.locked_until(now).map(|u| (Kind::SignIn, u)),
            Kind::StepUp => None,
        };
        match (sign_in, step_up) {
            (Some(s), Some(u)) => Some(if s.1 > u.1 { s } else { u }),
            (s, u) => s.or(u),
        }
    }

    /// The end of the lockout that refuses a check of `kind` at `now`, if any.
    pub fn locked_until(&self, kind: Kind, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.refusing(kind, now).map(|(_, until)| until)
    }

    /// The locks in force at `now`, by kind.
    pub fn locks(&self, now: OffsetDateTime) -> Vec<(Kind, OffsetDateTime)> {
        [Kind::SignIn, Kind::StepUp]
            .into_iter()
            .filter_map(|kind| {
                let run = match kind {
                    Kind::SignIn => &self.sign_in,
                    Kind::StepUp => &self.step_up,
                };
                Some((kind, run.locked_until(now)?))
            })
            .collect()
    }

    /// A lockout of `kind` in force until `until`, as one read back from the audit log after a
    /// restart.
    pub fn until(kind: Kind, until: OffsetDateTime) -> Self {
        let mut lockout = Self::default();
        lockout.lock(kind, until);
        lockout
    }

    /// Adds a lock of `kind` until `until` (read back from the audit log); of two of one kind,
    /// the later end holds.
    pub fn lock(&mut self, kind: Kind, until: OffsetDateTime) {
        let run = self.run(kind);
        run.until = run.until.max(Some(until));
    }

    /// Counts a wrong answer to a check of `kind` given at `now`. Returns the end of the
    /// lockout of that kind it starts, if it is the one that reaches [`MAX_FAILURES`].
    pub fn failed(&mut self, kind: Kind, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.run(kind).failed(now)
    }

    /// A right answer to a check of `kind`: ends the run of wrong ones of that kind (a lock in
    /// force stays, and the other kind's run goes on).
    pub fn succeeded(&mut self, kind: Kind) {
        self.run(kind).failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_wrong_answer_in_a_row_locks_for_fifteen_minutes() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        for kind in [Kind::SignIn, Kind::StepUp] {
            let mut l = Lockout::default();
            for i in 0..MAX_FAILURES - 1 {
                assert_eq!(l.failed(kind, t0 + Duration::seconds(i.into())), None);
                assert_eq!(l.locked_until(kind, t0), None);
            }
            let at = t0 + Duration::seconds(10);
            assert_eq!(l.failed(kind, at), Some(at + LOCKOUT));
            assert_eq!(
                l.locked_until(kind, at + LOCKOUT - Duration::SECOND),
                Some(at + LOCKOUT)
            );
            assert_eq!(l.locked_until(kind, at + LOCKOUT), None);
        }
    }

    #[test]
    fn wrong_sign_ins_lock_sign_in_only_and_wrong_step_ups_lock_both() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut l = Lockout::default();
        for _ in 0..MAX_FAILURES {
            l.failed(Kind::SignIn, t0);
        }
        assert_eq!(
            l.refusing(Kind::SignIn, t0),
            Some((Kind::SignIn, t0 + LOCKOUT))
        );
        assert_eq!(l.refusing(Kind::StepUp, t0), None);
        assert_eq!(l.locks(t0), [(Kind::SignIn, t0 + LOCKOUT)]);

        // Wrong sign-ins do not bring a step-up's lock nearer, nor the reverse.
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(l.failed(Kind::StepUp, t0), None);
        }
        l.succeeded(Kind::StepUp);
        assert_eq!(l.failed(Kind::StepUp, t0), None);
        let later = t0 + Duration::minutes(1);
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(Kind::StepUp, later);
        }
        assert_eq!(
            l.refusing(Kind::StepUp, later),
            Some((Kind::StepUp, later + LOCKOUT))
        );
        // The lock ending last is the one that refuses a sign-in.
        assert_eq!(
            l.refusing(Kind::SignIn, later),
            Some((Kind::StepUp, later + LOCKOUT))
        );
        assert_eq!(
            l.locks(later),
            [
                (Kind::SignIn, t0 + LOCKOUT),
                (Kind::StepUp, later + LOCKOUT)
            ]
        );
        // A right answer ends a run, not a lock.
        l.succeeded(Kind::StepUp);
        assert_eq!(l.locked_until(Kind::StepUp, later), Some(later + LOCKOUT));
    }

    #[test]
    fn a_lockout_read_back_holds_until_its_end_then_counts_afresh() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let until = t0 + Duration::minutes(3);
        let mut l = Lockout::until(Kind::StepUp, until);
        assert_eq!(l.locked_until(Kind::StepUp, t0), Some(until));
        assert_eq!(l.locked_until(Kind::SignIn, t0), Some(until));
        assert_eq!(l.locked_until(Kind::StepUp, until), None);
        assert_eq!(l.failed(Kind::StepUp, until), None);
        let l = Lockout::until(Kind::SignIn, until);
        assert_eq!(l.locked_until(Kind::SignIn, t0), Some(until));
        assert_eq!(l.locked_until(Kind::StepUp, t0), None);
    }

    #[test]
    fn a_lock_recorded_without_its_kind_refuses_everything() {
        assert_eq!(Kind::recorded(None), Kind::StepUp);
        assert_eq!(Kind::recorded(Some("something else")), Kind::StepUp);
        for kind in [Kind::SignIn, Kind::StepUp] {
            assert_eq!(Kind::recorded(Some(kind.as_str())), kind);
        }
    }

    #[test]
    fn after_a_lockout_the_count_starts_again() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut l = Lockout::default();
        for _ in 0..MAX_FAILURES {
            l.failed(Kind::SignIn, t0);
        }
        let later = t0 + LOCKOUT;
        assert_eq!(l.failed(Kind::SignIn, later), None);
        assert_eq!(l.locked_until(Kind::SignIn, later), None);
        for _ in 0..MAX_FAILURES - 2 {
            assert_eq!(l.failed(Kind::SignIn, later), None);
        }
        assert_eq!(l.failed(Kind::SignIn, later), Some(later + LOCKOUT));
    }
}
