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
pub mod names;
pub mod notice;
pub mod postmortem;
pub mod report;
pub mod request;
pub mod text;
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
pub use ttl::Ttl;
