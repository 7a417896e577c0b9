//! Warden's access rules as code: who may ask for which role on which target, and on what terms.
//!
//! A policy directory, kept in git and reviewed like any code, holds:
//!
//! - `targets.toml`: the targets and the roles each offers (see [`Targets`]);
//! - any number of `*.cedar` files at its top level: Cedar
//!   policies, validated in strict mode against [`SCHEMA`];
//! - `tests/*.toml`: fixture cases that [`run_tests`] checks, so the policy repository can have
//!   its own CI ([`Policy::check_dir`] reads them too, without running them).
//!
//! [`Policy::load_dir`] parses and validates everything once and reports every problem with its
//! file, line and column; [`Policy::decide`] is then cheap enough to call on every request.
//!
//! # Annotations
//!
//! Every policy needs a unique `@id("...")`: it names the rule in decisions and audit events.
//! A `permit` also states its terms: `@approval("peer(sre) & manager")` (the approval tier,
//! `auto` for none — never implied) and `@max_ttl("4h")` are required; `@ticket("INC-[0-9]+")`
//! (an anchored pattern the ticket must match), `@mfa("required")`,
//! `@recording("full" | "sampled" | "metadata")` (default `metadata`; Warden records the
//! sessions of SSH targets only, so a rule demanding a recording must not reach others, see
//! below) and `@pending_timeout("1h")` (default 24h) are optional. A `forbid` takes only `@id`
//! and an optional `@reason`. Any other annotation is an error, so a typo cannot silently drop a
//! term.
//! Annotations, like the descriptions, environments, kinds and labels of `targets.toml`, are
//! shown to people (a forbid's reason in its refusals): a control character (a line break
//! included) or an invisible or text-reordering character in one is an error, naming it.
//!
//! A permit whose scope says `action == Action::"breakglass"` is a break-glass permit: its terms
//! are fixed (granted at once, MFA step-up, full recording where Warden records sessions), so it
//! takes only `@id`, a required `@max_ttl` of at most 4h and an optional `@ticket`. A permit
//! naming both actions is refused.
//!
//! # How a decision is made
//!
//! Cedar evaluates every policy for the request: principal `User::"<name>"` (a member of its
//! groups), action `Action::"request"` or `Action::"breakglass"`, resource
//! `Role::"<target>/<role>"` (a member of its target), and a context with the requested TTL,
//! the ticket, and the current time as read in the target's `timezone` (UTC if it has none),
//! for time windows. Then:
//!
//! 1. If a policy that could take part in this decision fails to evaluate, the request is
//!    **denied** and the decision's rules name the failing policies (with any matching
//!    forbids): a broken rule must never grant access, and it might have been a forbid or
//!    demanded stricter terms. Those are every `forbid`, and the permits of the request's own
//!    kind: break-glass permits for a break-glass request, ordinary permits (those without an
//!    action constraint included) for an ordinary one. A failing permit of the other kind could
//!    never take part, so it is ignored here, though it still denies every request of its own
//!    kind.
//! 2. If any `forbid` matches, the request is **denied**; the decision names the forbids.
//! 3. If no `permit` matches, the request is **denied** with no rules.
//! 4. Otherwise it is **allowed**; the decision names every matching permit (sorted), and when
//!    several match the strictest terms apply: approval requirements are combined with AND,
//!    the smallest maximum TTL and pending timeout win, MFA is required if any permit requires
//!    it, the most complete recording tier wins, and the ticket must match every pattern.
//! 5. But at a target whose sessions Warden does not record (a database: which kinds it records
//!    is their issuers' to say, through [`TargetCheck::records_sessions`]), a request that
//!    matching permits demand `@recording("full")` or `("sampled")` of is **denied**, naming
//!    those permits and why: granted, it would go unrecorded. `warden policy check` warns at
//!    the `@recording` of each such permit, for each role it can grant there.
//!
//! A break-glass decision considers break-glass permits only: an ordinary permit, even one
//! without an action constraint, never grants emergency access, nor refuses it by failing to
//! evaluate (forbids still apply, a failing one included). At a target whose sessions Warden
//! does not record, break-glass is still allowed, as the way in for an emergency, and its
//! decision says what is recorded: `metadata`.
//!
//! Whether a concrete request (its TTL, ticket and MFA proof) meets an allowed decision is
//! [`warden_domain::Decision::check`]'s job; who must approve it is the approval tier's.

// In tests a panic is a failure report, so unwrapping is the clearest way to say "must work".
// Library code is still linted without this, in the non-test build.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cedar_text;
mod diagnostics;
mod entities;
mod est;
mod fixtures;
mod free_text;
mod literals;
mod load;
mod policy;
mod principals;
mod reach;
mod rules;
mod targets;
mod toml_doc;

use time::OffsetDateTime;
use warden_domain::{Ticket, Ttl};

pub use diagnostics::{Diagnostic, Place, Report, Severity};
pub use fixtures::{CaseResult, Mismatch, TestReport, run_tests};
pub use load::{TargetCheck, is_policy_file};
pub use policy::{LookupError, Policy};
pub use targets::{Role, Target, Targets};

/// The Cedar schema every policy is validated against; `warden policy schema` prints it.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Access through the normal approval flow.
    Request,
    /// Emergency access that bypasses the normal flow and is reviewed afterwards.
    Breakglass,
}

impl Action {
    /// The Cedar action id: policies write `action == Action::"request"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Breakglass => "breakglass",
        }
    }
}

/// The circumstances of a would-be request, which policies can test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// When the decision is made; policies see it (`context.now`) in the target's `timezone`,
    /// or in UTC when the target has none.
    pub now: OffsetDateTime,
    /// The TTL asked for.
    pub ttl: Ttl,
    pub ticket: Option<Ticket>,
}

/// The demo policy directory, as (file name, contents): used by `warden serve --dev` and
/// written as the example policy of a fresh data directory.
pub fn demo_files() -> Vec<(String, String)> {
    [
        ("targets.toml", include_str!("../demo/targets.toml")),
        ("access.cedar", include_str!("../demo/access.cedar")),
        (
            "tests/access.toml",
            include_str!("../demo/tests/access.toml"),
        ),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests;
