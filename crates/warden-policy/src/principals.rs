//! `User::"…"` and `Group::"…"` literals in rules and the groups their `@approval` takes
//! approvers from, kept with where they are written so that the server, which alone knows the
//! directory, can warn about those naming no one in it.
//!
//! `forbid (principal in Group::"contractor", …)` where the directory's group is `contractors`
//! is valid Cedar, and refuses no one: a typo that grants what the rule was written to refuse.
//! Loading can only tell that a name could be one (`Group::"Dev"` is an error: names are
//! lower case); whether anyone has it is known where the directory is. These stay warnings,
//! since a group may be filled after the rule is written.

use std::collections::BTreeSet;

use warden_domain::Directory;

use crate::diagnostics::{Diagnostic, Place};

/// Which kind of principal a literal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
    /// A group a permit's `@approval` takes approvers from (`peer(sre)`,
    /// `two-person(security)`): with no one in it, none of its approvers can come from there,
    /// and a clause whose groups are all empty makes the permit's requests impossible to grant.
    Approvers,
}

/// One `User::` or `Group::` literal of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mention {
    pub kind: Kind,
    pub name: String,
    /// The rule's id.
    pub rule: String,
    pub forbid: bool,
    /// Whether the literal is the rule's principal scope (`principal in Group::"sre"`): the
    /// rule then applies to no one without it. Elsewhere only the tests of it are false.
    pub scope: bool,
    pub place: Place,
}

/// The warnings about the literals of `mentions` that name no user of `directory`, nor a group
/// any of its users is in.
pub(crate) fn warnings(mentions: &[Mention], directory: &Directory) -> Vec<Diagnostic> {
    let groups: BTreeSet<String> = directory
        .users()
        .flat_map(|u| u.groups.iter().map(ToString::to_string))
        .collect();
    let users: BTreeSet<String> = directory.users().map(|u| u.name.to_string()).collect();
    mentions
        .iter()
        .filter_map(|m| {
            let known = match m.kind {
                Kind::User => &users,
                Kind::Group | Kind::Approvers => &groups,
            };
            (!known.contains(&m.name)).then(|| m.place.warning(m.message(&groups)))
        })
        .collect()
}

impl Mention {
    /// What the warning about this literal naming no one says; `groups` are the directory's.
    fn message(&self, groups: &BTreeSet<String>) -> String {
        let name = &self.name;
        let known: Vec<String> = groups.iter().cloned().collect();
        let (kind, literal, test, missing, fix) = match self.kind {
            Kind::Approvers => {
                return format!(
                    "permit {} takes approvers from group `{name}` in its @approval, but no user in the directory is in that group (its groups: {}): none of its approvers can come from there; correct the name, or put the approvers it is meant for in that group",
                    self.rule,
                    crate::policy::list(&known)
                );
            }
            Kind::Group => (
                "group",
                format!("Group::\"{name}\""),
                "is in",
                format!(
                    "no user in the directory is in group `{name}` (its groups: {})",
                    crate::policy::list(&known)
                ),
                "put the users it is meant for in that group",
            ),
            Kind::User => (
                "user",
                format!("User::\"{name}\""),
                "is",
                format!("the directory has no user `{name}`"),
                "add the user",
            ),
        };
        let effect = if self.forbid { "forbid" } else { "permit" };
        let outcome = match (self.scope, self.forbid) {
            (true, true) => format!(
                "this rule can never apply to anyone until such a {kind} exists, so it refuses no one"
            ),
            (true, false) => {
                format!("this rule can never apply to anyone until such a {kind} exists")
            }
            (false, _) => format!(
                "a test that the principal {test} {literal} is false for everyone until such a {kind} exists"
            ),
        };
        format!(
            "{effect} {} names {literal}, but {missing}: {outcome}; correct the name, or {fix}",
            self.rule
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_domain::User;

    fn directory() -> Directory {
        Directory::new([User {
            name: "alice".parse().unwrap(),
            groups: ["contractors".parse().unwrap(), "dev".parse().unwrap()].into(),
            manager: None,
        }])
        .unwrap()
    }

    fn mention(kind: Kind, name: &str, forbid: bool, scope: bool) -> Mention {
        Mention {
            kind,
            name: name.to_owned(),
            rule: "r".to_owned(),
            forbid,
            scope,
            place: Place {
                file: "a.cedar".to_owned(),
                line: 2,
                column: 5,
            },
        }
    }

    #[test]
    fn literals_naming_no_one_are_warned_about() {
        let got: Vec<String> = warnings(
            &[
                mention(Kind::Group, "contractor", true, true),
                mention(Kind::Group, "contractors", true, true),
                mention(Kind::Group, "sre", false, false),
                mention(Kind::User, "bob", false, true),
                mention(Kind::User, "alice", false, true),
            ],
            &directory(),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            got,
            [
                "a.cedar:2:5: warning: forbid r names Group::\"contractor\", but no user in the directory is in group `contractor` (its groups: contractors, dev): this rule can never apply to anyone until such a group exists, so it refuses no one; correct the name, or put the users it is meant for in that group",
                "a.cedar:2:5: warning: permit r names Group::\"sre\", but no user in the directory is in group `sre` (its groups: contractors, dev): a test that the principal is in Group::\"sre\" is false for everyone until such a group exists; correct the name, or put the users it is meant for in that group",
                "a.cedar:2:5: warning: permit r names User::\"bob\", but the directory has no user `bob`: this rule can never apply to anyone until such a user exists; correct the name, or add the user",
            ]
        );
    }
}
