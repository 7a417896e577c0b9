//! `targets.toml`: the systems Warden grants access to and the roles each one offers.
//!
//! Policies name targets and roles, issuers turn a granted role into a credential, and the UI
//! lists what can be requested; all three read this one definition. Role settings other than
//! `description` belong to the issuer (`kind`), so they are kept as JSON for it to validate.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use toml::de::{DeTable, DeValue};
use warden_domain::{RoleName, TargetName};

use crate::diagnostics::{Diagnostic, Place, Source};
use crate::toml_doc::{self, Key};

/// The file name, relative to the policy directory.
pub(crate) const FILE: &str = "targets.toml";

/// Every target, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Targets(BTreeMap<TargetName, Target>);

impl Targets {
    /// Looks a target up by name.
    pub fn get(&self, name: &TargetName) -> Option<&Target> {
        self.0.get(name)
    }

    /// Every target, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&TargetName, &Target)> {
        self.0.iter()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no target is defined.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A system Warden grants access to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub name: TargetName,
    /// Which credential issuer handles the target, e.g. `ssh`.
    pub kind: String,
    /// Free-form environment name such as `production`; policies match on it.
    pub environment: String,
    pub description: Option<String>,
    pub labels: BTreeSet<String>,
    /// Where the issuer reaches the target (e.g. `host`, `port`, `database`): the
    /// `[targets.NAME.connection]` table, kept as JSON for the issuer to validate. Secrets never
    /// go here; admin credentials live in Warden's encrypted vault.
    pub connection: serde_json::Map<String, serde_json::Value>,
    /// Where `context.now` is read for time windows on this target's roles; UTC if unset.
    pub timezone: Option<Zone>,
    pub roles: BTreeMap<RoleName, Role>,
    /// Where `kind` is written.
    #[serde(skip)]
    pub kind_at: Place,
    /// Where the connection table is written (where `kind` is, without one).
    #[serde(skip)]
    pub connection_at: Place,
    /// Where each of the connection's settings is written, so that a problem with one is
    /// reported at its line rather than at the table's.
    #[serde(skip)]
    pub connection_settings_at: BTreeMap<String, Place>,
}

/// An IANA time zone, e.g. `Europe/Paris`, from the database built into Warden: the same
/// policy gives the same decision on every machine, daylight saving time included.
#[derive(Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Zone {
    name: String,
    #[serde(skip)]
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// Looks `name` up; `None` if the database has no such zone.
    pub fn get(name: &str) -> Option<Zone> {
        let tz = jiff::tz::TimeZone::get(name).ok()?;
        Some(Zone {
            name: name.to_owned(),
            tz,
        })
    }

    pub(crate) fn tz(&self) -> &jiff::tz::TimeZone {
        &self.tz
    }
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A level of access on a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Role {
    pub name: RoleName,
    pub description: Option<String>,
    /// Issuer-specific settings: every key of the role's table except `description`.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Where the role's table is named.
    #[serde(skip)]
    pub at: Place,
    /// Where each of its settings is written, so that a problem the issuer finds in one is
    /// reported there.
    #[serde(skip)]
    pub settings_at: BTreeMap<String, Place>,
}

const TARGET_KEYS: [&str; 7] = [
    "kind",
    "environment",
    "description",
    "labels",
    "connection",
    "timezone",
    "roles",
];

/// The names `targets.toml` gives targets and roles, as written, whether or not their
/// definitions read whole: a rule naming a target whose definition has a problem (reported in
/// targets.toml) is not also said to name an unknown target, while a rule naming one the file
/// has nowhere still is, in the same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    /// Each target's name, with its roles' names; `None` when which roles it has cannot be
    /// told (its table or its `roles` is no table).
    targets: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Whether `targets` names every target the file may define: not when `targets` itself is
    /// no table.
    complete: bool,
}

/// What [`Named`] can tell of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// The file names it; for a target, with these roles, when they can be told.
    Named(Option<&'a BTreeSet<String>>),
    /// The file names no such target.
    Unnamed,
    /// Whether the file names it cannot be told.
    Unknown,
}

impl Named {
    /// Whether the file names target `name`, and its roles.
    pub fn target(&self, name: &str) -> Lookup<'_> {
        match self.targets.get(name) {
            Some(roles) => Lookup::Named(roles.as_ref()),
            None if self.complete => Lookup::Unnamed,
            None => Lookup::Unknown,
        }
    }

    /// Notes target `name`, with the role names `roles` (`None`: they cannot be told); a name
    /// seen twice keeps every role either time gave, or `None`.
    fn add(&mut self, name: &str, roles: Option<BTreeSet<String>>) {
        let entry = self
            .targets
            .entry(name.to_owned())
            .or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), roles) {
            (Some(known), Some(more)) => known.extend(more),
            _ => *entry = None,
        }
    }
}

/// Reads `targets.toml`, appending every problem to `out`: every target whose name and kind
/// read, with those of its roles that read whole (with any problem reported, no policy is built
/// from them, but the issuers still check them), and the names of all the file gives (see
/// [`Named`]); `None` if the file is no TOML at all.
pub(crate) fn parse(text: &str, out: &mut Vec<Diagnostic>) -> Option<(Targets, Named)> {
    let src = Source::new(FILE, text);
    let doc = toml_doc::parse(src, out)?;
    let mut targets = BTreeMap::new();
    let mut named = Named {
        targets: BTreeMap::new(),
        complete: true,
    };
    for (key, item) in &doc {
        if key.get_ref() != "targets" {
            out.push(at_key(
                src,
                key,
                format!(
                    "unknown top-level key `{}`; targets.toml holds only [targets.NAME] tables",
                    key.get_ref()
                ),
            ));
            // `[target.web]`: meant as targets, maybe; rules naming them are not said to name
            // unknown ones.
            if let DeValue::Table(table) = item.get_ref() {
                for name in table.keys() {
                    named.add(name.get_ref(), None);
                }
            }
            continue;
        }
        let Some(table) = toml_doc::table(src, "`targets`", item, out) else {
            named.complete = false;
            continue;
        };
        for (name_key, item) in table {
            let name = parse_name::<TargetName>(src, name_key, out).filter(|n| {
                let reserved = n.as_str() == warden_domain::names::PROXY_SCOPE;
                if reserved {
                    out.push(at_key(src, name_key, format!(
                        "the target name `{}` is reserved: the certificates that log in to Warden's SSH proxy only carry the principal `{}:USER`, which the hosts of a target of that name would let in; name the target otherwise",
                        n, n
                    )));
                }
                !reserved
            });
            let what = format!("target `{}`", name_key.get_ref());
            let Some(body) = toml_doc::table(src, &what, item, out) else {
                named.add(name_key.get_ref(), None);
                continue;
            };
            named.add(name_key.get_ref(), role_names(body));
            if let Some(target) = target(src, name_key, name, body, out) {
                targets.insert(target.name.clone(), target);
            }
        }
    }
    Some((Targets(targets), named))
}

/// The names of a target's roles as written: the keys of its `roles` table and of any table
/// under a key it does not know (`[targets.web.role.admin]`, a typo, still names `admin`);
/// `None` when `roles` is there but no table.
fn role_names(body: &DeTable<'_>) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (key, item) in body {
        let known = TARGET_KEYS.contains(&key.get_ref().as_ref());
        match item.get_ref() {
            DeValue::Table(t) if !known || key.get_ref() == "roles" => {
                names.extend(t.keys().map(|k| k.get_ref().to_string()));
            }
            _ if key.get_ref() == "roles" => return None,
            _ => {}
        }
    }
    Some(names)
}

fn target(
    src: Source<'_>,
    name_key: &Key<'_>,
    name: Option<TargetName>,
    body: &DeTable<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Target> {
    let shown = name_key.get_ref();
    let mut kind = None;
    let mut kind_at = Place::default();
    let mut environment = None;
    let mut description = None;
    let mut labels = BTreeSet::new();
    let mut connection = serde_json::Map::new();
    let mut connection_at = None;
    let mut connection_settings_at = BTreeMap::new();
    let mut timezone = None;
    let mut roles = BTreeMap::new();
    for (key, item) in body {
        let what = format!("`{}` of target `{shown}`", key.get_ref());
        match key.get_ref().as_ref() {
            "kind" => {
                kind = non_empty(src, &what, item, out);
                kind_at = src.place(item.span().start);
            }
            "environment" => environment = non_empty(src, &what, item, out),
            "description" => {
                description = toml_doc::text(src, &what, item, out).map(str::to_owned);
            }
            "labels" => {
                let found = toml_doc::strings(src, &what, item, out).unwrap_or_default();
                for (label, span) in &found {
                    toml_doc::check_shown(src, &format!("each entry of {what}"), label, span, out);
                }
                labels = found.into_iter().map(|(s, _)| s.to_owned()).collect();
            }
            "connection" => match toml_doc::to_json(item.get_ref()) {
                Ok(serde_json::Value::Object(map)) => {
                    connection = map;
                    connection_at = Some(src.place(key.span().start));
                    connection_settings_at = key_places(src, item);
                }
                Ok(_) => out.push(toml_doc::at(
                    src,
                    item.span(),
                    format!("{what} must be a table"),
                )),
                Err(e) => out.push(toml_doc::at(src, item.span(), format!("{what}: {e}"))),
            },
            "timezone" => {
                if let Some(name) = toml_doc::string(src, &what, item, out) {
                    timezone = Zone::get(name);
                    if timezone.is_none() {
                        out.push(toml_doc::at(
                            src,
                            item.span(),
                            format!(
                                "{what}: unknown time zone {name:?}; use an IANA name such as \"Europe/Paris\" or \"America/New_York\""
                            ),
                        ));
                    }
                }
            }
            "roles" => {
                if let Some(table) = toml_doc::table(src, &what, item, out) {
                    roles = parse_roles(src, shown, name_key, table, out);
                }
            }
            _ => out.push(toml_doc::unknown_key(
                src,
                key,
                &format!("in target `{shown}`"),
                &TARGET_KEYS,
            )),
        }
    }
    let missing = |field: &str, example: &str| {
        at_key(
            src,
            name_key,
            format!("target `{shown}` has no `{field}`: add one, e.g. {example}"),
        )
    };
    if kind.is_none() && !body.contains_key("kind") {
        out.push(missing(
            "kind",
            "kind = \"ssh\" (what issues its credentials)",
        ));
    }
    if environment.is_none() && !body.contains_key("environment") {
        out.push(missing("environment", "environment = \"production\""));
    }
    if !body.contains_key("roles") {
        out.push(at_key(
            src,
            name_key,
            format!(
                "target `{shown}` has no roles: add at least one [targets.{}.roles.NAME] table",
                toml_key(shown)
            ),
        ));
    }
    // Kept whatever else is wrong, with the roles that read whole, so that the issuer of its
    // kind checks them (and the kind itself) in the same run; the policy is not built from it.
    Some(Target {
        name: name?,
        kind: kind?,
        // Reported above when missing or blank; the rest of the target is still checked.
        environment: environment.unwrap_or_default(),
        description,
        labels,
        connection,
        timezone,
        roles,
        connection_at: connection_at.unwrap_or_else(|| kind_at.clone()),
        connection_settings_at,
        kind_at,
    })
}

/// Where each key of the table `item` is written.
fn key_places(src: Source<'_>, item: &toml_doc::Item<'_>) -> BTreeMap<String, Place> {
    match item.get_ref() {
        DeValue::Table(table) => table
            .keys()
            .map(|k| (k.get_ref().to_string(), src.place(k.span().start)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The roles of a target that read whole, reporting every problem of each: one role's
/// problem leaves the others to be checked by the issuer, in the same run.
fn parse_roles(
    src: Source<'_>,
    target: &str,
    target_key: &Key<'_>,
    table: &DeTable<'_>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<RoleName, Role> {
    if table.is_empty() {
        out.push(at_key(
            src,
            target_key,
            format!(
                "target `{target}` has no roles: add at least one [targets.{}.roles.NAME] table",
                toml_key(target)
            ),
        ));
    }
    table
        .iter()
        .filter_map(|(key, item)| parse_role(src, target, key, item, out))
        .map(|role| (role.name.clone(), role))
        .collect()
}

/// One role; `None` when its name is invalid or one of its settings could not be read, since
/// the issuer would then find a setting missing that is only unreadable. A problem with its
/// description is reported but keeps it: the issuer never reads that.
fn parse_role(
    src: Source<'_>,
    target: &str,
    key: &Key<'_>,
    item: &toml_doc::Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Role> {
    let name = parse_name::<RoleName>(src, key, out);
    let what = format!("role `{}` of target `{target}`", key.get_ref());
    let body = toml_doc::table(src, &what, item, out)?;
    let mut description = None;
    let mut settings = serde_json::Map::new();
    let mut settings_at = BTreeMap::new();
    let mut unread = false;
    for (k, v) in body {
        if k.get_ref() == "description" {
            let what = format!("`description` of {what}");
            description = toml_doc::text(src, &what, v, out).map(str::to_owned);
            continue;
        }
        match toml_doc::to_json(v.get_ref()) {
            Ok(json) => {
                settings.insert(k.get_ref().to_string(), json);
                settings_at.insert(k.get_ref().to_string(), src.place(k.span().start));
            }
            Err(e) => {
                unread = true;
                out.push(toml_doc::at(
                    src,
                    v.span(),
                    format!("`{}` of {what}: {e}", k.get_ref()),
                ));
            }
        }
    }
    if unread {
        return None;
    }
    Some(Role {
        name: name?,
        description,
        settings,
        at: src.place(key.span().start),
        settings_at,
    })
}

/// A target or role name from a table key, checked against the domain's naming rules.
fn parse_name<T: std::str::FromStr<Err = warden_domain::names::NameError>>(
    src: Source<'_>,
    key: &Key<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    key.get_ref()
        .parse()
        .map_err(|e: warden_domain::names::NameError| out.push(at_key(src, key, e.to_string())))
        .ok()
}

fn non_empty(
    src: Source<'_>,
    what: &str,
    item: &toml_doc::Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<String> {
    let s = toml_doc::text(src, what, item, out)?;
    if s.trim().is_empty() {
        out.push(toml_doc::at(
            src,
            item.span(),
            format!("{what} may not be empty"),
        ));
        return None;
    }
    Some(s.to_owned())
}

/// `name` as a key of a TOML table header: bare when TOML reads it so (letters, digits, `_`
/// and `-`), else quoted, since `[targets.b.c]` is target `b`'s table `c` where
/// `[targets."b.c"]` is target `b.c`. Hidden characters are escaped, so that the hint reads as
/// what it holds and can be copied as it is.
pub(crate) fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if warden_domain::text::hidden(c) => {
                out.push_str(&format!("\\U{:08X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn at_key(src: Source<'_>, key: &Key<'_>, message: impl Into<String>) -> Diagnostic {
    toml_doc::at(src, key.span(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        parse(text, &mut out);
        let report = crate::Report::from_diagnostics(out).unwrap();
        report.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_targets_and_keeps_issuer_settings() {
        let text = r#"
[targets.prod-web-1]
kind = "ssh"
environment = "production"
description = "Production web server"
labels = ["web", "eu"]

[targets.prod-web-1.roles.admin]
description = "root shell"
principals = ["root"]
extensions = { permit-pty = true }
"#;
        let mut out = Vec::new();
        let (targets, _) = parse(text, &mut out).unwrap();
        assert!(out.is_empty());
        let t = targets.get(&"prod-web-1".parse().unwrap()).unwrap();
        assert_eq!(t.kind, "ssh");
        assert_eq!(t.environment, "production");
        assert_eq!(t.labels.len(), 2);
        let admin = &t.roles[&"admin".parse().unwrap()];
        assert_eq!(admin.description.as_deref(), Some("root shell"));
        assert_eq!(
            serde_json::Value::Object(admin.settings.clone()),
            serde_json::json!({"principals": ["root"], "extensions": {"permit-pty": true}})
        );
    }

    #[test]
    fn a_duplicate_table_is_named() {
        let text = "[targets.web]\nkind = \"ssh\"\nenvironment = \"t\"\n[targets.web.roles.view]\nprincipals = [\"x\"]\n[targets.web]\nkind = \"ssh\"\n";
        let found = problems(text);
        assert_eq!(
            found[0], "targets.toml:6:10: duplicate key: `web`",
            "{found:?}"
        );
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let got = problems(
            r#"targts = 1
[targets.Prod]
kind = "ssh"
environment = "production"
[targets.Prod.roles.admin]

[targets.web]
kind = 7
enviroment = "staging"
[targets.web.roles."bad role"]
"#,
        );
        assert_eq!(
            got,
            vec![
                "targets.toml:1:1: unknown top-level key `targts`; targets.toml holds only [targets.NAME] tables",
                "targets.toml:2:10: invalid target name \"Prod\": use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
                "targets.toml:7:10: target `web` has no `environment`: add one, e.g. environment = \"production\"",
                "targets.toml:8:8: `kind` of target `web` must be a string, not integer",
                "targets.toml:9:1: unknown key `enviroment` in target `web`; allowed keys: kind, environment, description, labels, connection, timezone, roles",
                "targets.toml:10:20: invalid role name \"bad role\": use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            ]
        );
    }

    #[test]
    fn a_target_needs_roles() {
        let got = problems("[targets.web]\nkind = \"ssh\"\nenvironment = \"x\"\n");
        assert_eq!(
            got,
            vec![
                "targets.toml:1:10: target `web` has no roles: add at least one [targets.web.roles.NAME] table"
            ]
        );
    }

    #[test]
    fn a_hint_quotes_a_target_name_as_toml_needs() {
        for (text, at) in [
            (
                "[targets.\"b.c\"]\nkind = \"ssh\"\nenvironment = \"x\"\n",
                "1:10",
            ),
            (
                "[targets.\"b.c\"]\nkind = \"ssh\"\nenvironment = \"x\"\n[targets.\"b.c\".roles]\n",
                "1:10",
            ),
        ] {
            assert_eq!(
                problems(text),
                vec![format!(
                    "targets.toml:{at}: target `b.c` has no roles: add at least one [targets.\"b.c\".roles.NAME] table"
                )]
            );
        }
        assert_eq!(toml_key("web-1_a"), "web-1_a");
        assert_eq!(toml_key("a b\"\\\u{202E}"), "\"a b\\\"\\\\\\U0000202E\"");
        // What it writes, TOML reads back as the same key.
        for name in ["b.c", "a b\"\\x", "é"] {
            let doc: toml::Table = format!("[t.{}]\n", toml_key(name)).parse().unwrap();
            assert!(doc["t"].as_table().unwrap().contains_key(name), "{name}");
        }
    }
}
