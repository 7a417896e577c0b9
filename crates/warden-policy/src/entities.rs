//! The Cedar side of a decision: entities for users, targets and roles, the action, and the
//! request context, shaped as `schema.cedarschema` declares.
//!
//! Target and role entities only change when the policy directory does, so they are built once
//! at load time; a decision's entity set (its user, target and role) is kept for the next
//! decision with the same inputs ([`EntitySets`]); only the context is new each time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{
    Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema,
};
use warden_domain::{RoleName, TargetName, User};

use crate::targets::Targets;
use crate::{Action, Context};

/// Entity type names and action ids, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Vocabulary {
    user: EntityTypeName,
    group: EntityTypeName,
    target: EntityTypeName,
    role: EntityTypeName,
    request: EntityUid,
    breakglass: EntityUid,
}

impl Vocabulary {
    pub fn new() -> Result<Self, String> {
        let ty = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| format!("entity type {name}: {e}"))
        };
        let action = ty("Action")?;
        let uid = |id: &str| EntityUid::from_type_name_and_id(action.clone(), EntityId::new(id));
        Ok(Self {
            user: ty("User")?,
            group: ty("Group")?,
            target: ty("Target")?,
            role: ty("Role")?,
            request: uid(Action::Request.as_str()),
            breakglass: uid(Action::Breakglass.as_str()),
        })
    }

    pub fn action(&self, action: Action) -> &EntityUid {
        match action {
            Action::Request => &self.request,
            Action::Breakglass => &self.breakglass,
        }
    }

    pub fn is_target(&self, uid: &EntityUid) -> bool {
        uid.type_name() == &self.target
    }

    pub fn is_role(&self, uid: &EntityUid) -> bool {
        uid.type_name() == &self.role
    }

    pub fn is_user(&self, uid: &EntityUid) -> bool {
        uid.type_name() == &self.user
    }

    pub fn is_group(&self, uid: &EntityUid) -> bool {
        uid.type_name() == &self.group
    }

    fn target_uid(&self, target: &TargetName) -> EntityUid {
        EntityUid::from_type_name_and_id(self.target.clone(), EntityId::new(target.as_str()))
    }

    /// The role's entity id is `<target>/<role>`: names cannot contain `/`, so it is unambiguous.
    fn role_uid(&self, target: &TargetName, role: &RoleName) -> EntityUid {
        EntityUid::from_type_name_and_id(
            self.role.clone(),
            EntityId::new(format!("{target}/{role}")),
        )
    }

    /// The user as a member of their groups. Group entities themselves are not needed: Cedar's
    /// `in` only follows the user's parent links.
    pub fn user(&self, user: &User) -> Entity {
        let groups: HashSet<EntityUid> = user
            .groups
            .iter()
            .map(|g| {
                EntityUid::from_type_name_and_id(self.group.clone(), EntityId::new(g.as_str()))
            })
            .collect();
        Entity::new_no_attrs(self.user_uid(user), groups)
    }

    /// A principal no directory can hold (no name is empty), for evaluating what does not
    /// depend on who asks.
    pub fn nobody(&self) -> EntityUid {
        EntityUid::from_type_name_and_id(self.user.clone(), EntityId::new(""))
    }

    pub fn user_uid(&self, user: &User) -> EntityUid {
        EntityUid::from_type_name_and_id(self.user.clone(), EntityId::new(user.name.as_str()))
    }
}

/// Entity sets of recent decisions, by everything they are built from: the user's name and
/// groups, the target and the role.
///
/// Building a set computes the transitive closure of its parent links, about a tenth of a
/// decision's work, yet the same user asks for the same role again and again. The cache lives
/// in the loaded policy, so a reload starts afresh; a change of the user's groups changes the
/// key. It holds at most [`CACHED_SETS`] sets and is emptied when full.
#[derive(Debug, Default)]
pub(crate) struct EntitySets {
    sets: Mutex<HashMap<String, Arc<Entities>>>,
}

/// Entity sets cached at most: a few megabytes.
const CACHED_SETS: usize = 4096;

impl EntitySets {
    /// The set of `user` with `role` (and the role's target), built by `build` when not
    /// cached. `None` when `build` fails (nothing is cached then).
    pub fn get(
        &self,
        user: &User,
        role: &Entity,
        build: impl FnOnce() -> Option<Entities>,
    ) -> Option<Arc<Entities>> {
        // The role's id is `<target>/<role>`. Names are restricted to a-z, 0-9 and `._-`, so
        // spaces and newlines separate them unambiguously.
        let mut key = format!("{}\n{}", role.uid().id().unescaped(), user.name);
        for group in &user.groups {
            let _ = write!(key, " {group}");
        }
        let cached = self.lock().get(&key).cloned();
        if cached.is_some() {
            return cached;
        }
        let built = Arc::new(build()?);
        let mut sets = self.lock();
        if sets.len() >= CACHED_SETS {
            sets.clear();
        }
        sets.insert(key, Arc::clone(&built));
        Some(built)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entities>>> {
        // A panic while holding the lock leaves the map as it was between two operations.
        self.sets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A target's entity and its roles', ready to be cloned into a decision.
#[derive(Debug, Clone)]
pub(crate) struct TargetEntities {
    pub target: Entity,
    pub roles: BTreeMap<RoleName, Entity>,
    /// Where the target's time windows are read.
    pub timezone: jiff::tz::TimeZone,
}

/// Builds every target's and role's entity, checking them against the schema so that a
/// mismatch between this code and the schema surfaces at load time, not as evaluation errors.
pub(crate) fn build(
    vocab: &Vocabulary,
    targets: &Targets,
    schema: &Schema,
) -> Result<BTreeMap<TargetName, TargetEntities>, String> {
    let mut built = BTreeMap::new();
    for (name, t) in targets.iter() {
        let target_uid = vocab.target_uid(name);
        let target = Entity::new(
            target_uid.clone(),
            HashMap::from([
                (
                    "environment".to_owned(),
                    RestrictedExpression::new_string(t.environment.clone()),
                ),
                (
                    "kind".to_owned(),
                    RestrictedExpression::new_string(t.kind.clone()),
                ),
                (
                    "labels".to_owned(),
                    RestrictedExpression::new_set(
                        t.labels
                            .iter()
                            .cloned()
                            .map(RestrictedExpression::new_string),
                    ),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("target {name}: {e}"))?;
        let mut roles = BTreeMap::new();
        for role in t.roles.keys() {
            let entity = Entity::new(
                vocab.role_uid(name, role),
                HashMap::from([
                    (
                        "name".to_owned(),
                        RestrictedExpression::new_string(role.to_string()),
                    ),
                    (
                        "target".to_owned(),
                        RestrictedExpression::new_entity_uid(target_uid.clone()),
                    ),
                ]),
                HashSet::from([target_uid.clone()]),
            )
            .map_err(|e| format!("role {name}/{role}: {e}"))?;
            roles.insert(role.clone(), entity);
        }
        let timezone = t
            .timezone
            .as_ref()
            .map_or(jiff::tz::TimeZone::UTC, |z| z.tz().clone());
        built.insert(
            name.clone(),
            TargetEntities {
                target,
                roles,
                timezone,
            },
        );
    }
    let all = built
        .values()
        .flat_map(|t| std::iter::once(t.target.clone()).chain(t.roles.values().cloned()));
    cedar_policy::Entities::from_entities(all, Some(schema))
        .map_err(|e| format!("target entities do not match the schema: {e}"))?;
    Ok(built)
}

/// `now` in `tz` (a target's time zone), as rules read it in `context.now`.
pub(crate) fn local(
    now: time::OffsetDateTime,
    tz: &jiff::tz::TimeZone,
) -> Result<jiff::ZonedDateTime, String> {
    Ok(jiff::Timestamp::from_nanosecond(now.unix_timestamp_nanos())
        .map_err(|e| e.to_string())?
        .to_zoned_datetime(tz.clone()))
}

/// The request context: what was asked for, and the time in `tz` (the target's time zone)
/// for time windows.
pub(crate) fn context(
    ctx: &Context,
    tz: &jiff::tz::TimeZone,
) -> Result<cedar_policy::Context, String> {
    let now = local(ctx.now, tz)?;
    let long = |v: i8| RestrictedExpression::new_long(i64::from(v));
    let ttl_seconds = i64::try_from(ctx.ttl.as_secs()).unwrap_or(i64::MAX);
    let now_record = RestrictedExpression::new_record([
        ("hour".to_owned(), long(now.hour())),
        ("minute".to_owned(), long(now.minute())),
        (
            "weekday".to_owned(),
            long(now.weekday().to_monday_zero_offset()),
        ),
    ])
    .map_err(|e| e.to_string())?;
    cedar_policy::Context::from_pairs([
        (
            "ttl_seconds".to_owned(),
            RestrictedExpression::new_long(ttl_seconds),
        ),
        (
            "has_ticket".to_owned(),
            RestrictedExpression::new_bool(ctx.ticket.is_some()),
        ),
        (
            "ticket".to_owned(),
            RestrictedExpression::new_string(
                ctx.ticket
                    .as_ref()
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
            ),
        ),
        ("now".to_owned(), now_record),
    ])
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn context_matches_the_schema() {
        let (schema, _) = Schema::from_cedarschema_str(crate::SCHEMA).unwrap();
        let vocab = Vocabulary::new().unwrap();
        let ctx = Context {
            // A Sunday evening in New York is Monday 01:30 in UTC.
            now: datetime!(2026-01-04 20:30 -5),
            ttl: "1h".parse().unwrap(),
            ticket: Some(warden_domain::Ticket::parse("INC-1").unwrap()),
        };
        let cedar = context(&ctx, &jiff::tz::TimeZone::UTC).unwrap();
        let user = User {
            name: "alice".parse().unwrap(),
            groups: ["dev".parse().unwrap()].into(),
            manager: None,
        };
        let role = vocab.role_uid(&"t".parse().unwrap(), &"r".parse().unwrap());
        cedar_policy::Request::new(
            vocab.user(&user).uid(),
            vocab.action(Action::Breakglass).clone(),
            role,
            cedar.clone(),
            Some(&schema),
        )
        .unwrap();
        let now = cedar.get("now").unwrap().to_string();
        assert!(
            now.contains("\"weekday\": 0") && now.contains("\"hour\": 1"),
            "{now}"
        );
    }
}
