//! Warden's domain: the vocabulary every other crate speaks.
//!
//! Everything here is pure — no clocks, no randomness, no files, no network. Callers pass the
//! current time and fresh identifiers in, so every rule below is a plain function that tests can
//! drive with fixed inputs.

pub mod approval;
pub mod audit;
pub mod decision;
pub mod directory;
pub mod lease;
pub mod lockout;
pub mod names;
pub mod net;
pub mod notice;
pub mod password;
pub mod postmortem;
pub mod report;
pub mod request;
pub mod text;
pub mod throttle;
pub mod timestamp;
pub mod ttl;

pub use approval::{Clause, Requirement};
pub use decision::{Decision, Recording, Refusal};
pub use directory::{Directory, User};
pub use lease::{Lease, LeaseState};
pub use names::{GroupName, RoleName, TargetName, UserName};
pub use notice::{Audience, Notice};
pub use postmortem::{Link, Postmortem};
pub use request::{BreakGlass, Request, RequestId, State};
pub use text::{Comment, Reason, Ticket};
pub use timestamp::rfc3339;
pub use ttl::Ttl;

/// `t` to the millisecond, the one precision of every time Warden stores and shows: a
/// request's id carries its creation's millisecond and the store keeps milliseconds, so a time
/// read from the clock is cut to that before it goes anywhere.
pub fn to_millisecond(t: time::OffsetDateTime) -> time::OffsetDateTime {
    t.replace_nanosecond(u32::from(t.millisecond()) * 1_000_000)
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn times_are_cut_to_the_millisecond() {
        assert_eq!(
            super::to_millisecond(datetime!(2026-01-01 10:00:00.123_456_789 UTC)),
            datetime!(2026-01-01 10:00:00.123 UTC)
        );
    }
}
