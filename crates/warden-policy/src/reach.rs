//! Whether a rule can apply to a role, whoever asks and whenever they do.
//!
//! `warden policy check` lists the break-glass roles and the drill report expects a drill of
//! each, so the list must hold the roles some break-glass permit can grant, not every role its
//! scope covers: `permit (…, resource in Target::"prod-web") when { resource.name == "root" }`
//! grants one role of four. So each rule's conditions are evaluated against each role. What a
//! condition says of the principal or the context cannot be known without a request, so such a
//! condition is taken as one that may hold: the answer is then "maybe", an upper bound, and it
//! is one only where nothing better can be known.

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, PolicyId, PolicySet, Request,
};
use serde_json::json;

use crate::entities::TargetEntities;
use crate::est;

/// Whether a rule applies to a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applies {
    /// For no one, ever.
    Never,
    /// For someone, some time, perhaps.
    Maybe,
    /// For everyone, always.
    Always,
}

/// A rule reduced to what can be told of it from the role alone.
pub(crate) struct Reach {
    /// The rule with its action and resource scope and those of its conditions that read
    /// neither the principal nor the context, as a permit of anyone; `None` when it could not
    /// be reduced, and then it may apply to any role.
    reduced: Option<PolicySet>,
    /// Whether nothing was left out: no principal scope, no condition.
    whole: bool,
}

impl Reach {
    /// Reduces `policy`: its conditions are those that must all hold for it to apply (see
    /// [`est::conjuncts`]), so leaving some out can only make it apply more often.
    pub fn of(policy: &cedar_policy::Policy) -> Self {
        let Ok(mut rule) = policy.to_json() else {
            return Self {
                reduced: None,
                whole: false,
            };
        };
        let (kept, left_out): (Vec<_>, Vec<_>) = est::conjuncts(&rule)
            .into_iter()
            .partition(|c| !est::reads(c, "principal") && !est::reads(c, "context"));
        let whole = left_out.is_empty() && rule["principal"]["op"] == "All";
        rule["effect"] = json!("permit");
        rule["principal"] = json!({ "op": "All" });
        rule["conditions"] = kept
            .into_iter()
            .map(|body| json!({ "kind": "when", "body": body }))
            .collect();
        let reduced = cedar_policy::Policy::from_json(Some(PolicyId::new("reduced")), rule)
            .ok()
            .and_then(|p| PolicySet::from_policies([p]).ok());
        Self { reduced, whole }
    }

    /// Whether the rule applies to `role` of `target` when `action` is asked for. `nobody` is
    /// the principal of the evaluation, which the reduced rule does not read.
    pub fn applies(
        &self,
        authorizer: &Authorizer,
        nobody: &EntityUid,
        action: &EntityUid,
        target: &TargetEntities,
        role: &Entity,
    ) -> Applies {
        let Some(reduced) = &self.reduced else {
            return Applies::Maybe;
        };
        let request = Request::new(
            nobody.clone(),
            action.clone(),
            role.uid(),
            Context::empty(),
            None,
        );
        let entities = Entities::from_entities([target.target.clone(), role.clone()], None);
        let (Ok(request), Ok(entities)) = (request, entities) else {
            return Applies::Maybe;
        };
        match authorizer
            .is_authorized(&request, reduced, &entities)
            .decision()
        {
            Decision::Deny => Applies::Never,
            Decision::Allow if self.whole => Applies::Always,
            Decision::Allow => Applies::Maybe,
        }
    }
}
