//! The issuers a server knows, by target kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Issuer, SettingProblem, Settings, mariadb, postgres, ssh_cert};

/// Issuers by the `kind` their targets name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_kind: BTreeMap<&'static str, Arc<dyn Issuer>>,
}

impl Registry {
    /// A registry holding `issuers`.
    pub fn new(issuers: impl IntoIterator<Item = Arc<dyn Issuer>>) -> Self {
        Self {
            by_kind: issuers.into_iter().map(|i| (i.kind(), i)).collect(),
        }
    }

    /// The issuer for a target kind.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Issuer>> {
        self.by_kind.get(kind)
    }
}

/// Kinds of target this build of Warden can issue credentials for.
pub const KINDS: &[&str] = &["ssh", "postgres", "mariadb"];

/// Every problem with a target's connection table for a target `kind`, each with the setting
/// it is in, found without a running issuer, so mistakes surface at `warden policy check` and
/// reload time rather than at the first request.
pub fn check_connection(kind: &str, connection: &Settings) -> Vec<SettingProblem> {
    match kind {
        "ssh" => ssh_cert::check_connection(connection),
        "postgres" => postgres::check_connection(connection),
        "mariadb" => mariadb::check_connection(connection),
        other => unknown_kind(other),
    }
}

/// Every problem with one role's settings for a target `kind`, each with the setting it is
/// in, like [`check_connection`].
pub fn check_role(kind: &str, settings: &Settings) -> Vec<SettingProblem> {
    match kind {
        "ssh" => ssh_cert::check_role(settings),
        "postgres" => postgres::check_role(settings),
        "mariadb" => mariadb::check_role(settings),
        other => unknown_kind(other),
    }
}

/// Whether Warden records the sessions of targets of `kind` ([`crate::Issuer::records_sessions`]),
/// known without a running issuer, so that a policy learns it when it is loaded. A kind this
/// build does not know records nothing.
pub fn records_sessions(kind: &str) -> bool {
    match kind {
        "ssh" => ssh_cert::RECORDS_SESSIONS,
        "postgres" => postgres::RECORDS_SESSIONS,
        "mariadb" => mariadb::RECORDS_SESSIONS,
        _ => false,
    }
}

/// A kind of target this build does not know, as the one problem of a table of its settings.
fn unknown_kind(kind: &str) -> Vec<SettingProblem> {
    vec![SettingProblem {
        key: None,
        message: format!(
            "unknown target kind {kind:?}; known kinds: {}",
            KINDS.join(", ")
        ),
    }]
}
