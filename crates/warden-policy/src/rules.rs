//! What Warden reads from a Cedar policy's annotations: its rule id and, for a `permit`, what a
//! grant under it takes (approval tier, maximum TTL, ticket, MFA, recording, pending timeout).
//!
//! Cedar decides *whether* a request may happen; the annotations say *on what terms*. They are
//! parsed once at load time, so a typo is a load error rather than a surprise at request time,
//! and nothing security-relevant is defaulted silently: a permit must state its approval tier and
//! maximum TTL.

use std::collections::BTreeSet;

use warden_domain::decision::TicketPattern;
use warden_domain::{Decision, Recording, Requirement, Ttl};

/// Annotations allowed on a `permit`.
const PERMIT_KEYS: [&str; 7] = [
    "id",
    "approval",
    "max_ttl",
    "ticket",
    "mfa",
    "recording",
    "pending_timeout",
];
/// Annotations allowed on a `forbid`: a forbid only denies, so terms would mean nothing there.
const FORBID_KEYS: [&str; 2] = ["id", "reason"];
/// Annotations allowed on a break-glass `permit`: its other terms are fixed (granted at once,
/// MFA step-up, full recording where Warden records sessions), so they cannot be written.
const BREAKGLASS_KEYS: [&str; 3] = ["id", "max_ttl", "ticket"];
/// The longest break-glass grant a policy may allow: emergency access is short, and more time
/// goes through the normal flow.
pub(crate) const BREAKGLASS_MAX_TTL: &str = "4h";

/// How long a request may wait for approval when a permit does not say: a day, so a request
/// made at the end of one working day can still be approved the next.
fn default_pending_timeout() -> Ttl {
    // A day is far below the TTL ceiling, so the fallback is never taken.
    Ttl::from_secs(24 * 3600).unwrap_or(Ttl::MIN)
}

/// The terms of one `permit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Terms {
    pub requirement: Requirement,
    pub max_ttl: Ttl,
    pub ticket: Option<TicketPattern>,
    pub mfa: bool,
    pub recording: Recording,
    pub pending_timeout: Ttl,
    /// Whether the permit is for `Action::"breakglass"`.
    pub breakglass: bool,
}

/// A problem with one annotation (`key`), or with the policy as a whole (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnnotationError {
    pub key: Option<String>,
    pub message: String,
}

fn problem(key: Option<&str>, message: String) -> AnnotationError {
    AnnotationError {
        key: key.map(str::to_owned),
        message,
    }
}

/// Checks a rule id: ids appear in decisions, audit events and test expectations, so they are
/// short, printable and unambiguous.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'.' | b'_' | b'-' | b':'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid @id {:?}: use 1-128 characters from A-Z, a-z, 0-9, '.', '_', '-' and ':', starting with a letter or digit",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// Reads the terms of a `permit` from its annotations, reporting every problem.
/// `id` names the permit in messages.
pub(crate) fn permit_terms<'a>(
    id: &str,
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Terms, Vec<AnnotationError>> {
    let annotations: Vec<(&str, &str)> = annotations.collect();
    let mut errors = unknown(&annotations, &PERMIT_KEYS, "permit");
    let get = |key: &str| annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);

    let requirement = match get("approval") {
        None => {
            errors.push(problem(
                None,
                format!("permit {id} has no @approval; write @approval(\"auto\") to grant without approval"),
            ));
            None
        }
        Some(v) => Requirement::written(v)
            .map_err(|e| errors.push(problem(Some("approval"), format!("@approval: {e}"))))
            .ok(),
    };
    let max_ttl = match get("max_ttl") {
        None => {
            errors.push(problem(
                None,
                format!("permit {id} has no @max_ttl; say how long a grant may last, e.g. @max_ttl(\"1h\")"),
            ));
            None
        }
        Some(v) => ttl("max_ttl", v, &mut errors),
    };
    let pending_timeout = match get("pending_timeout") {
        None => Some(default_pending_timeout()),
        Some(v) => ttl("pending_timeout", v, &mut errors),
    };
    let ticket = get("ticket").and_then(|v| {
        TicketPattern::new(v)
            .map_err(|e| errors.push(problem(Some("ticket"), format!("@ticket: {e}"))))
            .ok()
    });
    let mfa = match get("mfa") {
        None => false,
        Some("required") => true,
        Some(other) => {
            errors.push(problem(
                Some("mfa"),
                format!("@mfa({other:?}) is not understood: the only value is @mfa(\"required\")"),
            ));
            false
        }
    };
    let recording = match get("recording") {
        None => Some(Recording::default()),
        Some(v) => v
            .parse::<Recording>()
            .map_err(|e| errors.push(problem(Some("recording"), format!("@recording: {e}"))))
            .ok(),
    };

    match (requirement, max_ttl, pending_timeout, recording) {
        (Some(requirement), Some(max_ttl), Some(pending_timeout), Some(recording))
            if errors.is_empty() =>
        {
            Ok(Terms {
                requirement,
                max_ttl,
                ticket,
                mfa,
                recording,
                pending_timeout,
                breakglass: false,
            })
        }
        _ => Err(errors),
    }
}

/// Why a term cannot be written on a break-glass permit.
fn fixed_for_breakglass(key: &str) -> Option<&'static str> {
    match key {
        "approval" => Some(
            "a break-glass permit grants at once, without approval: remove @approval (each use is reviewed afterwards in its postmortem)",
        ),
        "mfa" => Some("break-glass always requires MFA step-up: remove @mfa"),
        "recording" => Some(
            "break-glass sessions are always recorded in full where Warden records sessions (SSH targets): remove @recording",
        ),
        "pending_timeout" => {
            Some("break-glass grants at once, so nothing waits: remove @pending_timeout")
        }
        _ => None,
    }
}

/// Reads the terms of a break-glass `permit` (`action == Action::"breakglass"`): a required
/// `@max_ttl` of at most [`BREAKGLASS_MAX_TTL`] and an optional `@ticket`. Granted at once,
/// always with MFA step-up and full recording (`metadata` at a target whose sessions Warden does
/// not record, which the decision says).
pub(crate) fn breakglass_terms<'a>(
    id: &str,
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Terms, Vec<AnnotationError>> {
    let annotations: Vec<(&str, &str)> = annotations.collect();
    let mut errors: Vec<AnnotationError> = annotations
        .iter()
        .filter_map(|(k, _)| fixed_for_breakglass(k).map(|m| problem(Some(k), m.to_owned())))
        .collect();
    let others: Vec<(&str, &str)> = annotations
        .iter()
        .copied()
        .filter(|(k, _)| fixed_for_breakglass(k).is_none())
        .collect();
    errors.extend(unknown(&others, &BREAKGLASS_KEYS, "break-glass permit"));
    let get = |key: &str| annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let ceiling: Ttl = BREAKGLASS_MAX_TTL.parse().unwrap_or(Ttl::MIN);
    let max_ttl = match get("max_ttl") {
        None => {
            errors.push(problem(
                None,
                format!("break-glass permit {id} has no @max_ttl; say how long emergency access lasts, e.g. @max_ttl(\"1h\")"),
            ));
            None
        }
        Some(v) => ttl("max_ttl", v, &mut errors).and_then(|t| {
            if t > ceiling {
                errors.push(problem(
                    Some("max_ttl"),
                    format!("@max_ttl(\"{v}\") is too long for break-glass: at most {BREAKGLASS_MAX_TTL}; longer access goes through the normal flow"),
                ));
                None
            } else {
                Some(t)
            }
        }),
    };
    let ticket = get("ticket").and_then(|v| {
        TicketPattern::new(v)
            .map_err(|e| errors.push(problem(Some("ticket"), format!("@ticket: {e}"))))
            .ok()
    });
    match max_ttl {
        Some(max_ttl) if errors.is_empty() => Ok(Terms {
            requirement: Requirement::auto(),
            max_ttl,
            ticket,
            mfa: true,
            recording: Recording::Full,
            pending_timeout: Ttl::MIN,
            breakglass: true,
        }),
        _ => Err(errors),
    }
}

/// Checks that a `forbid` carries only the annotations that mean something on it.
pub(crate) fn check_forbid<'a>(
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), Vec<AnnotationError>> {
    let annotations: Vec<(&str, &str)> = annotations.collect();
    let errors = unknown(&annotations, &FORBID_KEYS, "forbid");
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn unknown(annotations: &[(&str, &str)], allowed: &[&str], effect: &str) -> Vec<AnnotationError> {
    annotations
        .iter()
        .filter(|(k, _)| !allowed.contains(k))
        .map(|(k, _)| {
            let hint = if effect == "forbid" && PERMIT_KEYS.contains(k) {
                " (a forbid only denies, so it has no terms)".to_owned()
            } else {
                String::new()
            };
            problem(
                Some(k),
                format!(
                    "unknown annotation @{k} on a {effect}{hint}; allowed: {}",
                    allowed
                        .iter()
                        .map(|a| format!("@{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
        .collect()
}

fn ttl(key: &str, value: &str, errors: &mut Vec<AnnotationError>) -> Option<Ttl> {
    value
        .parse::<Ttl>()
        .map_err(|e| errors.push(problem(Some(key), e.of(&format!("@{key}")))))
        .ok()
}

/// The decision when the permits with `terms` (ids `rules`, sorted) all match: the strictest of
/// each setting applies, as the crate documentation describes.
pub(crate) fn combine(rules: Vec<String>, terms: &[&Terms]) -> Decision {
    let Some((first, rest)) = terms.split_first() else {
        return Decision::deny(Vec::new());
    };
    let mut requirement = first.requirement.clone();
    let mut max_ttl = first.max_ttl;
    let mut pending_timeout = first.pending_timeout;
    let mut mfa = first.mfa;
    let mut recording = first.recording;
    for t in rest {
        requirement = requirement.and(&t.requirement);
        max_ttl = max_ttl.min(t.max_ttl);
        pending_timeout = pending_timeout.min(t.pending_timeout);
        mfa |= t.mfa;
        recording = recording.max(t.recording);
    }
    let mut seen = BTreeSet::new();
    let ticket_patterns = terms
        .iter()
        .filter_map(|t| t.ticket.as_ref())
        .filter(|p| seen.insert(p.as_str()))
        .cloned()
        .collect();
    Decision {
        allowed: true,
        rules,
        requirement,
        max_ttl,
        ticket_patterns,
        mfa,
        recording,
        pending_timeout,
        forbid_reasons: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(annotations: &[(&'static str, &'static str)]) -> Result<Terms, Vec<String>> {
        permit_terms("x", annotations.iter().copied())
            .map_err(|es| es.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn reads_terms_with_defaults() {
        let t = terms(&[("id", "x"), ("approval", "manager"), ("max_ttl", "4h")]).unwrap();
        assert_eq!(t.requirement.to_string(), "manager");
        assert_eq!(t.max_ttl.to_string(), "4h");
        assert_eq!(t.pending_timeout.to_string(), "1d");
        assert_eq!(t.recording, Recording::Metadata);
        assert!(!t.mfa);
        assert!(t.ticket.is_none());
    }

    #[test]
    fn approval_and_max_ttl_are_required() {
        let errs = terms(&[("id", "x")]).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0],
            "permit x has no @approval; write @approval(\"auto\") to grant without approval"
        );
        assert!(errs[1].contains("no @max_ttl"), "{errs:?}");
    }

    #[test]
    fn reports_every_bad_value() {
        let errs = terms(&[
            ("approval", "boss"),
            ("max_ttl", "forever"),
            ("ticket", "("),
            ("mfa", "yes"),
            ("recording", "all"),
            ("pending_timeout", "0s"),
            ("aproval", "auto"),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 7, "{errs:?}");
        assert!(errs[0].starts_with("unknown annotation @aproval on a permit"));
    }

    #[test]
    fn breakglass_terms_are_fixed_but_the_ttl() {
        let t = breakglass_terms("bg", [("id", "bg"), ("max_ttl", "1h")].into_iter()).unwrap();
        assert!(t.breakglass && t.mfa && t.requirement.is_auto());
        assert_eq!(t.recording, Recording::Full);
        let errs = breakglass_terms(
            "bg",
            [
                ("approval", "auto"),
                ("mfa", "required"),
                ("recording", "metadata"),
                ("max_ttl", "8h"),
                ("color", "red"),
            ]
            .into_iter(),
        )
        .unwrap_err();
        let messages: Vec<&str> = errors_text(&errs);
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(messages[0].contains("remove @approval"));
        assert!(messages[1].contains("always requires MFA"));
        assert!(messages[2].contains("recorded in full"));
        assert!(messages[3].starts_with("unknown annotation @color on a break-glass permit"));
        assert!(messages[4].contains("at most 4h"));
        let errs = breakglass_terms("bg", [("id", "bg")].into_iter()).unwrap_err();
        assert!(errs[0].message.contains("has no @max_ttl"));
    }

    fn errors_text(errs: &[AnnotationError]) -> Vec<&str> {
        errs.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn forbids_take_only_id_and_reason() {
        assert!(check_forbid([("id", "x"), ("reason", "why")].into_iter()).is_ok());
        let errs = check_forbid([("id", "x"), ("max_ttl", "1h")].into_iter()).unwrap_err();
        assert_eq!(errs[0].key.as_deref(), Some("max_ttl"));
        assert!(errs[0].message.contains("has no terms"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("sre-prod-admin").is_ok());
        assert!(check_id("Team:DB.admin_2").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
