//! Who is who: users, their groups and their managers.
//!
//! The directory is a snapshot handed to the domain; where it comes from (a config file today,
//! OIDC claims later) is the server's business.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names::{GroupName, UserName};

/// A person (or, later, a machine identity) Warden knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    pub groups: BTreeSet<GroupName>,
    pub manager: Option<UserName>,
}

impl User {
    /// Whether the user belongs to `group`.
    pub fn in_group(&self, group: &GroupName) -> bool {
        self.groups.contains(group)
    }
}

/// All users, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    users: BTreeMap<UserName, User>,
}

/// Why a set of users does not form a consistent directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("user {0} is declared twice")]
    Duplicate(UserName),
    #[error("user {user} names manager {manager}, who is not a declared user")]
    UnknownManager { user: UserName, manager: UserName },
    #[error("user {0} names themself as manager")]
    SelfManaged(UserName),
    /// Managers that lead back to where they started (`alice, bob, alice`): no one is at the
    /// chain's top, and its users approve each other's manager-tier requests.
    #[error(
        "users {} name each other as manager in a cycle: a chain of managers must end with someone who has none; remove `manager` from one of them, or name someone outside the cycle",
        .0.iter().map(UserName::as_str).collect::<Vec<_>>().join(" \u{2192} ")
    )]
    ManagerCycle(Vec<UserName>),
}

impl Directory {
    /// Builds a directory, checking that every manager is a known user, and that no chain of
    /// managers comes back to where it started.
    pub fn new(users: impl IntoIterator<Item = User>) -> Result<Self, DirectoryError> {
        let mut map = BTreeMap::new();
        for u in users {
            if map.contains_key(&u.name) {
                return Err(DirectoryError::Duplicate(u.name));
            }
            map.insert(u.name.clone(), u);
        }
        for u in map.values() {
            if let Some(m) = &u.manager {
                if m == &u.name {
                    return Err(DirectoryError::SelfManaged(u.name.clone()));
                }
                if !map.contains_key(m) {
                    return Err(DirectoryError::UnknownManager {
                        user: u.name.clone(),
                        manager: m.clone(),
                    });
                }
            }
        }
        if let Some(cycle) = manager_cycle(&map) {
            return Err(DirectoryError::ManagerCycle(cycle));
        }
        Ok(Self { users: map })
    }

    /// Looks a user up by name.
    pub fn get(&self, name: &UserName) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// This directory without `gone`. Approvals are counted against the directory as it is
    /// now, so an approval given by one of them no longer fills a place; a user who names one
    /// of them as manager keeps the name, which no approval can then come from.
    pub fn without<'a>(&self, gone: impl IntoIterator<Item = &'a UserName>) -> Self {
        let mut users = self.users.clone();
        for name in gone {
            users.remove(name);
        }
        Self { users }
    }
}

/// The first chain of managers (in the order of user names) that comes back to a user it went
/// through, from that user round to them again: `alice, bob, alice`.
fn manager_cycle(users: &BTreeMap<UserName, User>) -> Option<Vec<UserName>> {
    // Users whose chain of managers is known to end.
    let mut ends = BTreeSet::new();
    for start in users.keys() {
        let mut chain: Vec<&UserName> = Vec::new();
        let mut at = Some(start);
        while let Some(name) = at.filter(|n| !ends.contains(*n)) {
            if let Some(first) = chain.iter().position(|n| *n == name) {
                let mut cycle: Vec<UserName> =
                    chain[first..].iter().map(|n| (*n).clone()).collect();
                cycle.push(name.clone());
                return Some(cycle);
            }
            chain.push(name);
            at = users.get(name).and_then(|u| u.manager.as_ref());
        }
        ends.extend(chain);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, manager: Option<&str>) -> User {
        User {
            name: name.parse().unwrap(),
            groups: BTreeSet::new(),
            manager: manager.map(|m| m.parse().unwrap()),
        }
    }

    #[test]
    fn managers_that_lead_back_to_their_start_are_refused_naming_the_cycle() {
        let two = Directory::new([user("alice", Some("bob")), user("bob", Some("alice"))]);
        let said = two.unwrap_err().to_string();
        assert!(
            said.starts_with("users alice \u{2192} bob \u{2192} alice name each other as manager")
                && said.contains("remove `manager` from one of them"),
            "{said}"
        );
        // Entered from outside, the cycle is named from where the chain came into it.
        let three = Directory::new([
            user("ann", Some("carol")),
            user("carol", Some("dave")),
            user("dave", Some("erin")),
            user("erin", Some("carol")),
        ]);
        assert_eq!(
            three.unwrap_err(),
            DirectoryError::ManagerCycle(
                ["carol", "dave", "erin", "carol"]
                    .map(|n| n.parse().unwrap())
                    .to_vec()
            )
        );
        // Chains that end, one shared by several users, are fine.
        Directory::new([
            user("alice", Some("mallory")),
            user("bob", Some("mallory")),
            user("mallory", Some("sam")),
            user("sam", None),
        ])
        .unwrap();
    }
}
