//! What policy decided about a would-be request, and whether a concrete request meets it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::approval::Requirement;
use crate::text::Ticket;
use crate::ttl::Ttl;

/// How much of a session is recorded. Ordered from least to most, so the strictest of several
/// matching rules is the maximum.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Recording {
    /// Only session start and end.
    #[default]
    Metadata,
    /// Full recording for a random share of sessions.
    Sampled,
    /// Every session recorded in full.
    Full,
}

impl Recording {
    /// Every setting, weakest first.
    pub const ALL: [Recording; 3] = [Recording::Metadata, Recording::Sampled, Recording::Full];
}

impl FromStr for Recording {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "metadata" => Ok(Self::Metadata),
            "sampled" => Ok(Self::Sampled),
            "full" => Ok(Self::Full),
            other => Err(format!(
                "unknown recording tier {other:?}: use metadata, sampled or full"
            )),
        }
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Metadata => "metadata",
            Self::Sampled => "sampled",
            Self::Full => "full",
        })
    }
}

/// What is wrong with a policy's regular expression, on one line: the parser's message draws
/// the pattern with a caret under the problem, over several lines, and its last line says what
/// the problem is.
pub fn regex_mistake(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text)
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => format!(
            "the pattern is too large once compiled (over {} KiB): `\\d` and `\\w` match every Unicode digit or letter, and a counted repeat multiplies them; write [0-9] or [A-Za-z0-9_], or fewer repeats",
            limit / 1024
        ),
        other => other.to_string(),
    }
}

/// The most memory a compiled ticket pattern may take: room for any pattern a ticket system's
/// ids call for (`INC-\\d{1,20}`, Unicode classes included), none for one that would make a
/// policy's load take much memory.
const PATTERN_SIZE: usize = 1 << 20;

/// A ticket pattern from a policy: an anchored regular expression.
#[derive(Debug, Clone)]
pub struct TicketPattern(regex::Regex);

impl TicketPattern {
    /// Compiles `pattern`, anchoring it at both ends so `INC-[0-9]+` cannot match `xINC-1y`.
    pub fn new(pattern: &str) -> Result<Self, String> {
        // Compiled as written first, so that a mistake is described in the policy's own terms
        // (the anchored form would show the `^(?:` … `)$` around it).
        let build = |p: &str| regex::RegexBuilder::new(p).size_limit(PATTERN_SIZE).build();
        let invalid =
            |e: regex::Error| format!("invalid ticket pattern {pattern:?}: {}", regex_mistake(&e));
        if pattern.trim().is_empty() {
            // Anchored, it matches only the empty text, which no ticket is.
            return Err(
                "an empty ticket pattern matches no ticket: remove @ticket, or write one such as INC-[0-9]+".into(),
            );
        }
        build(pattern).map_err(invalid)?;
        Ok(Self(build(&format!("^(?:{pattern})$")).map_err(invalid)?))
    }

    /// The pattern as the policy wrote it.
    pub fn as_str(&self) -> &str {
        let s = self.0.as_str();
        &s[4..s.len() - 2]
    }

    /// Whether `ticket` matches.
    pub fn matches(&self, ticket: &Ticket) -> bool {
        self.0.is_match(ticket.as_str())
    }
}

impl PartialEq for TicketPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TicketPattern {}

/// The outcome of evaluating policy for one (user, target, role) at one moment.
///
/// When several permit rules match, the strictest of each setting applies: approval
/// requirements are combined with AND, the smallest maximum TTL and pending timeout win, MFA is
/// required if any rule requires it, the most complete recording tier wins, and the ticket must
/// match every pattern. A matching forbid rule, or no matching permit, denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether any access is allowed at all.
    pub allowed: bool,
    /// Ids of the rules that produced the decision: the matching permits when allowed; when
    /// denied, the rules that refused (matching forbids, rules that could not be evaluated,
    /// permits whose demands cannot be met there), or none when nothing permitted.
    pub rules: Vec<String>,
    pub requirement: Requirement,
    pub max_ttl: Ttl,
    pub ticket_patterns: Vec<TicketPattern>,
    pub mfa: bool,
    pub recording: Recording,
    /// How long a request may wait for approval before it times out.
    pub pending_timeout: Ttl,
    /// Why each refusing rule refused, by rule id, to show people: a matching forbid's
    /// `@reason` when it gives one, or what kept a rule from being evaluated or met.
    pub forbid_reasons: Vec<(String, String)>,
}

/// Why a concrete request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{}", not_permitted(.0))]
    NotPermitted(Vec<String>),
    #[error(
        "no break-glass rule lets you break the glass for this role: `warden targets` lists your break-glass roles"
    )]
    NoBreakGlassRule,
    #[error(
        "no request rule lets you extend this role now: an extension is decided as a new request (a break-glass grant is extended by breaking the glass again)"
    )]
    NoExtensionRule,
    #[error("requested TTL {requested} is above the maximum of {max} for this role")]
    TtlAboveMax { requested: Ttl, max: Ttl },
    #[error("a ticket is required for this role; it must match {0}")]
    TicketRequired(String),
    /// The caller reads their ticket quoted back; the audit log keeps only its length
    /// ([`Refusal::recorded`]).
    #[error("{}", ticket_mismatch(&format!("{ticket:?}"), pattern))]
    TicketMismatch { ticket: String, pattern: String },
    #[error(
        "this role requires MFA step-up: pass the TOTP code your authenticator shows now as `totp` (`--totp CODE` from the CLI)"
    )]
    MfaRequired,
    /// MFA step-up is required of someone who has no second factor to step up with.
    #[error(
        "this role requires MFA step-up, and the requester has no second factor: enrol one first with `warden mfa enroll` and `warden mfa confirm CODE`"
    )]
    NoSecondFactor,
    #[error(
        "no one in the directory can give the approval this request needs ({tier}): with the requester left out and each person counted once, it lacks {}; ask an administrator to change the directory or the policy",
        unfilled.join(" and ")
    )]
    NoApprovers {
        /// The approval the request needs.
        tier: String,
        /// The places no one in the directory can fill.
        unfilled: Vec<String>,
    },
}

impl Refusal {
    /// This refusal as said of a break-glass attempt or an extension: where no rule at all
    /// matched, which rules were looked at, since a role another flow permits would otherwise
    /// read as refused for no reason.
    pub fn in_flow(self, breakglass: bool, extension: bool) -> Self {
        match self {
            Refusal::NotPermitted(rules) if rules.is_empty() && breakglass => {
                Refusal::NoBreakGlassRule
            }
            Refusal::NotPermitted(rules) if rules.is_empty() && extension => {
                Refusal::NoExtensionRule
            }
            other => other,
        }
    }

    /// This refusal as the audit log records it: a ticket that matched no pattern only by its
    /// length, as the refusal of any other value the caller typed is
    /// ([`crate::text::unquoted`]), since a token or password typed in its place would
    /// otherwise stay in the signed log for good. The caller's own answer still quotes it.
    pub fn recorded(&self) -> String {
        match self {
            Refusal::TicketMismatch { ticket, pattern } => {
                ticket_mismatch(&crate::text::unquoted(&format!("{ticket:?}")), pattern)
            }
            other => other.to_string(),
        }
    }

    /// Why a request made earlier no longer passes, in words about that request: its requester
    /// would have to ask again, and the advice for someone asking now would mislead whoever
    /// reviews it.
    pub fn of_request_made(&self) -> String {
        match self {
            Refusal::MfaRequired | Refusal::NoSecondFactor => {
                "this role requires MFA step-up now, and the request was made without it".into()
            }
            other => other.to_string(),
        }
    }
}

/// The refusal of a ticket, `shown` as quoted or as its length, that does not match `pattern`.
fn ticket_mismatch(shown: &str, pattern: &str) -> String {
    format!("ticket {shown} does not match: it must match {pattern}")
}

/// Why a request is not permitted: no permit matched, or the rules that refused it. Those may
/// be forbids, but also permits (one that could not be evaluated, or whose demand cannot be
/// met at the target), so the message says "refused", not "forbidden": an auditor must not go
/// looking for a forbid that does not exist.
fn not_permitted(refusing: &[String]) -> String {
    if refusing.is_empty() {
        "no policy rule permits this request: `warden targets` lists what you may request"
            .to_owned()
    } else {
        let rules = if refusing.len() == 1 { "rule" } else { "rules" };
        format!("refused by policy {rules} {}", refusing.join("; "))
    }
}

impl Refusal {
    /// A stable machine-readable code for API errors and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotPermitted(_) | Self::NoBreakGlassRule | Self::NoExtensionRule => {
                "not_permitted"
            }
            Self::TtlAboveMax { .. } => "ttl_above_max",
            Self::TicketRequired(_) => "ticket_required",
            Self::TicketMismatch { .. } => "ticket_mismatch",
            Self::MfaRequired => "mfa_required",
            Self::NoSecondFactor => "no_second_factor",
            Self::NoApprovers { .. } => "no_approvers",
        }
    }
}

impl Decision {
    /// A denial with the ids of the rules that caused it (empty when nothing permitted).
    pub fn deny(rules: Vec<String>) -> Self {
        Self {
            allowed: false,
            rules,
            requirement: Requirement::auto(),
            max_ttl: Ttl::MIN,
            ticket_patterns: Vec::new(),
            mfa: false,
            recording: Recording::default(),
            pending_timeout: Ttl::MIN,
            forbid_reasons: Vec::new(),
        }
    }

    /// The refusal of a request this decision does not allow: the rules that refuse it, each
    /// with its reason when there is one.
    pub fn not_permitted(&self) -> Refusal {
        Refusal::NotPermitted(
            self.rules
                .iter()
                .map(
                    |id| match self.forbid_reasons.iter().find(|(rule, _)| rule == id) {
                        Some((_, why)) => format!("{id}: {why}"),
                        None => id.clone(),
                    },
                )
                .collect(),
        )
    }

    /// Whether the people of the directory, `everyone`, could together give the approval the
    /// decision requires of a request by `requester`: one that no one could approve would only
    /// wait out its timeout.
    pub fn approvable<'a>(
        &self,
        requester: &crate::User,
        everyone: impl IntoIterator<Item = &'a crate::User>,
    ) -> Result<(), Refusal> {
        let progress = self.requirement.progress(requester, everyone);
        if progress.satisfied {
            Ok(())
        } else {
            Err(Refusal::NoApprovers {
                tier: self.requirement.to_string(),
                unfilled: progress.missing,
            })
        }
    }

    /// Checks a concrete request against the decision. `mfa_verified` says whether the
    /// requester proved a fresh second factor with this request.
    pub fn check(
        &self,
        ttl: Ttl,
        ticket: Option<&Ticket>,
        mfa_verified: bool,
    ) -> Result<(), Refusal> {
        match self.refusals(ttl, ticket, mfa_verified).into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Every reason the decision refuses a concrete request, in the order [`check`](Self::check)
    /// meets them (empty when it is allowed), so that an explanation can name them all.
    pub fn refusals(&self, ttl: Ttl, ticket: Option<&Ticket>, mfa_verified: bool) -> Vec<Refusal> {
        if !self.allowed {
            return vec![self.not_permitted()];
        }
        let mut out = Vec::new();
        if ttl > self.max_ttl {
            out.push(Refusal::TtlAboveMax {
                requested: ttl,
                max: self.max_ttl,
            });
        }
        // Every rule that applies may ask for its own pattern, and the ticket must match them
        // all: one refusal names them together, so that fixing one does not meet the next.
        let patterns = || {
            let all: Vec<&str> = self
                .ticket_patterns
                .iter()
                .map(TicketPattern::as_str)
                .collect();
            match all.as_slice() {
                [one] => (*one).to_owned(),
                _ => format!("each of {}", all.join(" and ")),
            }
        };
        match ticket {
            None if !self.ticket_patterns.is_empty() => {
                out.push(Refusal::TicketRequired(patterns()));
            }
            Some(t) if self.ticket_patterns.iter().any(|p| !p.matches(t)) => {
                out.push(Refusal::TicketMismatch {
                    ticket: t.as_str().to_owned(),
                    pattern: patterns(),
                });
            }
            _ => {}
        }
        if self.mfa && !mfa_verified {
            out.push(Refusal::MfaRequired);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_with_no_rule_at_all_names_the_flow_whose_rules_were_read() {
        let none = || Refusal::NotPermitted(Vec::new());
        assert_eq!(none().in_flow(true, false), Refusal::NoBreakGlassRule);
        assert_eq!(none().in_flow(false, true), Refusal::NoExtensionRule);
        assert_eq!(none().in_flow(false, false), none());
        let forbidden = Refusal::NotPermitted(vec!["no-prod".into()]);
        assert_eq!(forbidden.clone().in_flow(true, false), forbidden);
        assert_eq!(Refusal::NoBreakGlassRule.code(), "not_permitted");
    }

    fn allowed() -> Decision {
        Decision {
            allowed: true,
            rules: vec!["r1".into()],
            requirement: Requirement::auto(),
            max_ttl: "1h".parse().unwrap(),
            ticket_patterns: vec![TicketPattern::new("INC-[0-9]+").unwrap()],
            mfa: true,
            recording: Recording::Full,
            pending_timeout: "1h".parse().unwrap(),
            forbid_reasons: Vec::new(),
        }
    }

    #[test]
    fn a_bad_ticket_pattern_is_described_in_the_policy_s_terms() {
        let e = TicketPattern::new("(INC|CHG-[0-9]+").unwrap_err();
        assert_eq!(
            e,
            "invalid ticket pattern \"(INC|CHG-[0-9]+\": unclosed group"
        );
        // Unicode classes repeated, as ticket ids are written, fit; a pattern past reason is
        // told how to write it smaller.
        assert!(TicketPattern::new(r"INC-\d{1,20}").is_ok());
        assert!(TicketPattern::new(r"(?i)\w{3}-\d{3,12}").is_ok());
        let e = TicketPattern::new(r"\w{1000}").unwrap_err();
        assert!(
            e.contains("too large once compiled") && e.contains("[0-9]"),
            "{e}"
        );
        let p = TicketPattern::new("INC-[0-9]+").unwrap();
        assert_eq!(p.as_str(), "INC-[0-9]+");
        assert!(p.matches(&Ticket::parse("INC-42").unwrap()));
        assert!(!p.matches(&Ticket::parse("xINC-42").unwrap()));
        assert!(
            TicketPattern::new("")
                .unwrap_err()
                .contains("matches no ticket")
        );
    }

    #[test]
    fn checks_in_order() {
        let d = allowed();
        let t = |s: &str| Ticket::parse(s).unwrap();
        let h = |s: &str| s.parse::<Ttl>().unwrap();
        assert_eq!(
            d.check(h("2h"), None, true),
            Err(Refusal::TtlAboveMax {
                requested: h("2h"),
                max: h("1h")
            })
        );
        assert_eq!(
            d.check(h("1h"), None, true),
            Err(Refusal::TicketRequired("INC-[0-9]+".into()))
        );
        assert!(matches!(
            d.check(h("1h"), Some(&t("xINC-1")), true),
            Err(Refusal::TicketMismatch { .. })
        ));
        assert_eq!(
            d.check(h("1h"), Some(&t("INC-1")), false),
            Err(Refusal::MfaRequired)
        );
        assert_eq!(d.check(h("1h"), Some(&t("INC-1")), true), Ok(()));
        let msg = Decision::deny(vec!["no-prod".into()])
            .check(h("1h"), None, true)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "refused by policy rule no-prod");
    }

    #[test]
    fn a_ticket_refusal_names_every_pattern_it_must_match() {
        let mut d = allowed();
        d.ticket_patterns
            .push(TicketPattern::new("[A-Z]+-4[0-9]").unwrap());
        let t = |s: &str| Ticket::parse(s).unwrap();
        let h = "1h".parse::<Ttl>().unwrap();
        let both = "each of INC-[0-9]+ and [A-Z]+-4[0-9]";
        assert_eq!(
            d.refusals(h, None, true),
            [Refusal::TicketRequired(both.into())]
        );
        for half in ["INC-50", "ABC-42"] {
            assert_eq!(
                d.check(h, Some(&t(half)), true).unwrap_err().to_string(),
                format!("ticket \"{half}\" does not match: it must match {both}")
            );
        }
        assert_eq!(d.check(h, Some(&t("INC-42")), true), Ok(()));
    }

    #[test]
    fn a_mismatched_ticket_is_recorded_by_its_length_alone() {
        let d = allowed();
        let h = "1h".parse::<Ttl>().unwrap();
        let token = "wdn_d2itSECRET\\\"x";
        let refusal = d
            .check(h, Some(&Ticket::parse(token).unwrap()), true)
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            format!("ticket {token:?} does not match: it must match INC-[0-9]+")
        );
        assert_eq!(
            refusal.recorded(),
            "ticket (a value of 17 characters, not kept) does not match: it must match INC-[0-9]+"
        );
        assert_eq!(
            Refusal::MfaRequired.recorded(),
            Refusal::MfaRequired.to_string()
        );
    }
}
