//! A loaded, validated policy and the decision it makes for a would-be request.
//!
//! Everything that can be checked is checked at load time, so [`Policy::decide`] only builds the
//! per-request context (and the entities, unless a recent decision had the same), runs Cedar,
//! and folds the matching rules' terms together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use cedar_policy::{Authorizer, Effect, Entities, PolicyId, PolicySet, Request};
use warden_domain::{Decision, Directory, RoleName, TargetName, User};

use crate::diagnostics::{Diagnostic, Place, Report};
use crate::entities::{self, EntitySets, TargetEntities, Vocabulary};
use crate::fixtures;
use crate::load::{self, TargetCheck};
use crate::principals::{self, Mention};
use crate::reach::{Applies, Reach};
use crate::rules::{self, Terms};
use crate::targets::Targets;
use crate::{Action, Context};

/// A policy directory, loaded and validated. Immutable; share it behind an `Arc` and swap the
/// whole value on reload.
pub struct Policy {
    pub(crate) digest: String,
    pub(crate) targets: Targets,
    /// The targets whose sessions Warden does not record (their kind's issuer says so: see
    /// [`TargetCheck::records_sessions`]).
    pub(crate) unrecorded: BTreeSet<TargetName>,
    pub(crate) set: PolicySet,
    /// The terms of every `permit`, by rule id. Forbids have none.
    pub(crate) terms: HashMap<PolicyId, Terms>,
    pub(crate) entities: BTreeMap<TargetName, TargetEntities>,
    pub(crate) vocab: Vocabulary,
    pub(crate) authorizer: Authorizer,
    pub(crate) entity_sets: EntitySets,
    /// What loading found valid but doubtful, in reading order.
    pub(crate) warnings: Vec<Diagnostic>,
    /// The rules' `User::` and `Group::` literals and their `@approval` groups, for
    /// [`Policy::directory_warnings`].
    pub(crate) mentions: Vec<Mention>,
}

impl fmt::Debug for Policy {
    // The full Cedar policy set would drown a log line; the digest identifies the policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("digest", &self.digest)
            .field("targets", &self.targets.len())
            .field("rules", &self.rule_count())
            .finish_non_exhaustive()
    }
}

/// Why a decision could not even be attempted: the request names something `targets.toml`
/// does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown target `{target}`; known targets: {}", list(.known))]
    UnknownTarget {
        target: TargetName,
        known: Vec<String>,
    },
    #[error("target `{target}` has no role `{role}`; its roles: {}", list(.known))]
    UnknownRole {
        target: TargetName,
        role: RoleName,
        known: Vec<String>,
    },
}

/// How many known names an error lists before summarising: enough to spot a typo, short enough
/// for one line.
const LISTED: usize = 20;

/// `known`, comma-separated, at most [`LISTED`] of them.
pub(crate) fn list(known: &[String]) -> String {
    if known.is_empty() {
        return "none".to_owned();
    }
    let mut s = known
        .iter()
        .take(LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if known.len() > LISTED {
        s.push_str(&format!(" and {} more", known.len() - LISTED));
    }
    s
}

impl Policy {
    /// Loads and validates a directory: `targets.toml` and every `*.cedar` file at its top
    /// level, with `check`'s problems with the targets (a target kind's own settings). On
    /// failure returns every problem found, not just the first.
    pub fn load_dir(dir: &Path, check: TargetCheck<'_>) -> Result<Policy, Report> {
        let (files, problems) = load::read_dir(dir, false);
        if problems.is_empty() {
            return load::load(&files, check);
        }
        Err(load::with_unread(&files, problems, |files| {
            load::load(files, check)
        }))
    }

    /// Validates a directory for `warden policy check`: loads it as [`Policy::load_dir`]
    /// does, and also reads every fixture file in its `tests/` (without running the cases),
    /// reporting their problems with the policy's, so that a CI job that only checks is not
    /// told OK beside a fixture file `policy test` cannot read. A server loads with
    /// `load_dir`: fixtures decide nothing, so a broken one must not keep a policy from going
    /// live.
    pub fn check_dir(dir: &Path, check: TargetCheck<'_>) -> Result<Policy, Report> {
        let (files, problems) = load::read_dir(dir, true);
        if problems.is_empty() {
            return fixtures::check_files(&files, check);
        }
        Err(load::with_unread(&files, problems, |files| {
            fixtures::check_files(files, check)
        }))
    }

    /// Loads from in-memory files given as (name relative to the policy directory, contents),
    /// e.g. the embedded demo policy, with no checks beyond this crate's: no issuer is asked
    /// about the targets, so every kind is taken to have its sessions recorded (a server loads
    /// with [`Policy::load_dir`] and its issuers' answers). Files other than `targets.toml` and
    /// top-level `*.cedar` files (such as `tests/*.toml`) are ignored.
    pub fn from_files(files: &[(String, String)]) -> Result<Policy, Report> {
        load::load(
            files,
            TargetCheck {
                problems: &|_| Vec::new(),
                records_sessions: &|_| true,
            },
        )
    }

    /// Hex SHA-256 over the names and contents of the files that make up the policy
    /// (`targets.toml` and the `*.cedar` files), in name order. Fixture files do not change any
    /// decision, so they do not change the digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The targets and their roles.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// What loading found valid but most likely not meant, in reading order: values compared
    /// that no target has, times out of range (see `warden policy check`).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Warnings about the rules' `User::"…"` and `Group::"…"` literals that name no user of
    /// `directory`, nor a group any of its users is in: such a rule applies to no one (a
    /// forbid refuses no one), most likely by a typo; and about the groups an `@approval` takes
    /// approvers from that no user is in. Only the server knows the directory, so it asks at
    /// start and at each reload.
    pub fn directory_warnings(&self, directory: &Directory) -> Vec<Diagnostic> {
        principals::warnings(&self.mentions, directory)
    }

    /// Number of rules (Cedar policies) loaded.
    pub fn rule_count(&self) -> usize {
        self.set.num_of_policies()
    }

    /// `now` as rules deciding for `target` read it (`context.now`, in the target's time zone):
    /// e.g. `Sunday 19:58 (context.now: hour 19, minute 58, weekday 6; Europe/Paris)`, for
    /// whoever wonders why a time window let a request through or not. `None` for a target
    /// the policy does not define, or a time outside the zone database's range.
    pub fn now_seen_by_rules(
        &self,
        target: &TargetName,
        now: time::OffsetDateTime,
    ) -> Option<String> {
        let t = self.entities.get(target)?;
        let local = entities::local(now, &t.timezone).ok()?;
        Some(format!(
            "{:?} {:02}:{:02} (context.now: hour {}, minute {}, weekday {}; {})",
            local.weekday(),
            local.hour(),
            local.minute(),
            local.hour(),
            local.minute(),
            local.weekday().to_monday_zero_offset(),
            t.timezone.iana_name().unwrap_or("UTC")
        ))
    }

    /// Decides a would-be request by `user` for `role` on `target`; see the crate documentation
    /// for how rules combine. Fails only when the target or role is unknown.
    pub fn decide(
        &self,
        action: Action,
        user: &User,
        target: &TargetName,
        role: &RoleName,
        ctx: &Context,
    ) -> Result<Decision, LookupError> {
        let t = self
            .entities
            .get(target)
            .ok_or_else(|| LookupError::UnknownTarget {
                target: target.clone(),
                known: self.entities.keys().map(ToString::to_string).collect(),
            })?;
        let role_entity = t.roles.get(role).ok_or_else(|| LookupError::UnknownRole {
            target: target.clone(),
            role: role.clone(),
            known: t.roles.keys().map(ToString::to_string).collect(),
        })?;
        // None of the steps below can fail for inputs built here; if one ever does, nothing is
        // granted.
        let Some(response) = self.evaluate(action, user, t, role_entity, ctx) else {
            return Ok(Decision::deny(Vec::new()));
        };
        let diagnostics = response.diagnostics();
        let denied = response.decision() == cedar_policy::Decision::Deny;
        // Sorted, so decisions (and the combined terms) do not depend on Cedar's report order.
        let mut matched: Vec<&PolicyId> = diagnostics.reason().collect();
        // A permit without an action constraint is about the normal flow; break-glass is
        // decided by break-glass permits alone. Forbids (which have no terms) apply to both.
        let breakglass = action == Action::Breakglass;
        let takes_part = |id: &PolicyId| {
            self.terms
                .get(id)
                .is_none_or(|t| t.breakglass == breakglass)
        };
        // Only the rules that could take part in this decision: a permit of the other flow
        // that cannot be evaluated could neither grant nor set terms here.
        let failures: Vec<(&PolicyId, String)> = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                    (p.policy_id(), p.inner().to_string())
                }
            })
            .filter(|(id, _)| takes_part(id))
            .collect();
        if !failures.is_empty() {
            // A rule that cannot be evaluated might have been a forbid, or a permit of this
            // flow demanding stricter terms: fail closed, naming the broken rules, and why each
            // failed, and any forbids that matched anyway.
            let mut erroring: Vec<&PolicyId> = failures.iter().map(|(id, _)| *id).collect();
            if denied {
                erroring.extend(matched);
            }
            let forbid_reasons = failures
                .iter()
                .map(|(id, why)| {
                    (
                        id.to_string(),
                        format!("it could not be evaluated ({why}), and a rule that cannot be read refuses"),
                    )
                })
                .collect();
            return Ok(Decision {
                forbid_reasons,
                ..Decision::deny(ids(erroring))
            });
        }
        if denied {
            let forbid_reasons = matched
                .iter()
                .filter_map(|id| {
                    let why = self.set.policy(id)?.annotation("reason")?;
                    Some((id.to_string(), why.to_owned()))
                })
                .collect();
            return Ok(Decision {
                forbid_reasons,
                ..Decision::deny(ids(matched))
            });
        }
        matched.sort();
        matched.dedup();
        matched.retain(|id| takes_part(id));
        if matched.is_empty() {
            return Ok(Decision::deny(Vec::new()));
        }
        let terms: Option<Vec<&Terms>> = matched.iter().map(|id| self.terms.get(*id)).collect();
        // Every permit has terms; a match without them would be a bug, so grant nothing.
        let Some(terms) = terms else {
            return Ok(Decision::deny(Vec::new()));
        };
        if self.unrecorded.contains(target) {
            return Ok(self.unrecorded_decision(target, role, breakglass, &matched, &terms));
        }
        Ok(rules::combine(ids(matched), &terms))
    }

    /// The decision at a target whose sessions Warden does not record, by the permits
    /// `matched` with their `terms`. A break-glass grant is still the emergency way in, but
    /// its decision says what it gets: `metadata`, not the recording break-glass has where
    /// Warden records. A request whose rules demand a recording is refused, naming those
    /// rules and why, rather than granted unrecorded: no grant under them could be recorded.
    fn unrecorded_decision(
        &self,
        target: &TargetName,
        role: &RoleName,
        breakglass: bool,
        matched: &[&PolicyId],
        terms: &[&Terms],
    ) -> Decision {
        if breakglass {
            return Decision {
                recording: warden_domain::Recording::Metadata,
                ..rules::combine(ids(matched.to_vec()), terms)
            };
        }
        let demanding: Vec<(&PolicyId, warden_domain::Recording)> = matched
            .iter()
            .zip(terms)
            .filter(|(_, t)| t.recording != warden_domain::Recording::Metadata)
            .map(|(id, t)| (*id, t.recording))
            .collect();
        if demanding.is_empty() {
            return rules::combine(ids(matched.to_vec()), terms);
        }
        let kind = self.targets.get(target).map_or("", |t| t.kind.as_str());
        let forbid_reasons = demanding
            .iter()
            .map(|(id, recording)| (id.to_string(), unrecordable(*recording, target, role, kind)))
            .collect();
        Decision {
            forbid_reasons,
            ..Decision::deny(ids(demanding.into_iter().map(|(id, _)| id).collect()))
        }
    }

    /// Warnings, at each request permit's `@recording` (`recording_at`, by rule), about the
    /// roles it can grant at targets whose sessions Warden does not record: a request for one
    /// that the rule matches is refused ([`Policy::decide`]), since no grant under the rule
    /// could be recorded as it demands.
    pub(crate) fn unrecordable_warnings(
        &self,
        recording_at: &HashMap<PolicyId, Place>,
    ) -> Vec<Diagnostic> {
        if self.unrecorded.is_empty() || recording_at.is_empty() {
            return Vec::new();
        }
        let nobody = self.vocab.nobody();
        let action = self.vocab.action(Action::Request);
        let mut out = Vec::new();
        for p in self.set.policies() {
            let (Some(at), Some(terms)) = (recording_at.get(p.id()), self.terms.get(p.id())) else {
                continue;
            };
            let reach = Reach::of(p);
            for name in &self.unrecorded {
                let (Some(t), Some(target)) = (self.entities.get(name), self.targets.get(name))
                else {
                    continue;
                };
                for (role, entity) in &t.roles {
                    if reach.applies(&self.authorizer, &nobody, action, t, entity) != Applies::Never
                    {
                        out.push(at.warning(format!(
                            "permit {}: {}",
                            p.id(),
                            unrecordable(terms.recording, name, role, &target.kind)
                        )));
                    }
                }
            }
        }
        out
    }

    /// Warnings about roles whose `record_input = true` no rule that can grant them honours:
    /// keystrokes are kept in a session's recording only, and a rule that records nothing
    /// (`@recording("metadata")`, the default) keeps none, whatever the role says.
    pub(crate) fn unrecorded_input(&self) -> Vec<Diagnostic> {
        let asks = |r: &crate::targets::Role| {
            r.settings.get("record_input") == Some(&serde_json::Value::Bool(true))
        };
        // Each rule is read in full only when some role asks for keystrokes.
        if !self.targets.iter().any(|(_, t)| t.roles.values().any(asks)) {
            return Vec::new();
        }
        let permits: Vec<(Reach, &Terms)> = self
            .set
            .policies()
            .filter(|p| p.effect() == Effect::Permit)
            .filter_map(|p| Some((Reach::of(p), self.terms.get(p.id())?)))
            .collect();
        let nobody = self.vocab.nobody();
        let mut out = Vec::new();
        for (name, t) in &self.entities {
            let Some(target) = self.targets.get(name) else {
                continue;
            };
            for (role, entity) in &t.roles {
                let Some(def) = target.roles.get(role) else {
                    continue;
                };
                if !asks(def) {
                    continue;
                }
                let records = permits.iter().any(|(reach, terms)| {
                    let action = self.vocab.action(if terms.breakglass {
                        Action::Breakglass
                    } else {
                        Action::Request
                    });
                    terms.recording != warden_domain::Recording::Metadata
                        && reach.applies(&self.authorizer, &nobody, action, t, entity)
                            != Applies::Never
                });
                if !records {
                    let at = def.settings_at.get("record_input").unwrap_or(&def.at);
                    out.push(at.warning(format!(
                        "target {name} role {role}: record_input = true keeps no keystrokes, since no rule that can grant the role records its sessions: give such a rule @recording(\"full\") or @recording(\"sampled\")"
                    )));
                }
            }
        }
        out
    }

    /// The roles some break-glass permit can grant, by target and role name: those people may
    /// break the glass for, and should drill. A permit counts for a role when its scope covers
    /// the role and none of its conditions that read only the role (`resource.name == "root"`)
    /// rules the role out; one that reads who asks or when cannot be told without a request,
    /// so a role it might allow is listed. A role a forbid refuses to everyone, always, is not.
    pub fn breakglass_roles(&self) -> Vec<(TargetName, RoleName)> {
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        for p in self.set.policies() {
            match p.effect() {
                Effect::Forbid => forbids.push(Reach::of(p)),
                Effect::Permit if self.terms.get(p.id()).is_some_and(|t| t.breakglass) => {
                    permits.push(Reach::of(p));
                }
                Effect::Permit => {}
            }
        }
        let nobody = self.vocab.nobody();
        let action = self.vocab.action(Action::Breakglass);
        let mut out = Vec::new();
        for (name, t) in &self.entities {
            for (role, entity) in &t.roles {
                let applies = |r: &Reach| r.applies(&self.authorizer, &nobody, action, t, entity);
                if permits.iter().any(|r| applies(r) != Applies::Never)
                    && !forbids.iter().any(|r| applies(r) == Applies::Always)
                {
                    out.push((name.clone(), role.clone()));
                }
            }
        }
        out
    }

    fn evaluate(
        &self,
        action: Action,
        user: &User,
        target: &entities::TargetEntities,
        role: &cedar_policy::Entity,
        ctx: &Context,
    ) -> Option<cedar_policy::Response> {
        let request = Request::new(
            self.vocab.user_uid(user),
            self.vocab.action(action).clone(),
            role.uid(),
            entities::context(ctx, &target.timezone).ok()?,
            None,
        )
        .ok()?;
        let entities = self.entity_sets.get(user, role, || {
            let principal = self.vocab.user(user);
            Entities::from_entities([principal, target.target.clone(), role.clone()], None).ok()
        })?;
        Some(
            self.authorizer
                .is_authorized(&request, &self.set, &entities),
        )
    }
}

/// Why a rule demanding `recording` cannot have it for `role` of `target`, of kind `kind`, and
/// what to do about it.
fn unrecordable(
    recording: warden_domain::Recording,
    target: &TargetName,
    role: &RoleName,
    kind: &str,
) -> String {
    format!(
        "it demands @recording(\"{recording}\") for role {role} of target {target}, whose sessions Warden does not record (kind {kind}: Warden records SSH sessions only; database sessions are not recorded by Warden), so a request it matches there is refused: scope the rule to SSH targets (e.g. `when {{ resource.target.kind == \"ssh\" }}`) or drop its @recording"
    )
}

/// Rule ids as decisions report them: sorted and distinct.
fn ids(policies: Vec<&PolicyId>) -> Vec<String> {
    let mut ids: Vec<String> = policies.into_iter().map(ToString::to_string).collect();
    ids.sort();
    ids.dedup();
    ids
}
