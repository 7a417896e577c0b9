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
}

impl Directory {
    /// Builds a directory, checking that every manager is a known user.
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
