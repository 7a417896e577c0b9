//! Values a rule compares that no target has, and times out of their range: warnings.
//!
//! `resource.target.environment == "prod"` where every target says `production` is valid
//! Cedar, and strict validation cannot tell it from what was meant: the comparison simply
//! comes out the same for every target. In a `forbid` that is access quietly granted. So each
//! literal a rule compares a target's environment, kind or labels, or a role's name with, is
//! looked up among those `targets.toml` defines, and each literal compared with a field of
//! `context.now` is checked against the field's range. (Targets and roles named by
//! `Target::"…"` and `Role::"…"` are checked as errors, with the other references.)
//!
//! They are warnings, not errors: a value no target has yet may be meant for one to come.
//! Attributes are recognised by what they are read from, as the schema types it: `resource` is
//! a role (every action applies to roles), a role's `target` a target, and `Role::"…"` and
//! `Target::"…"` what they name; a time's fields are read from `context.now`. The same name
//! read from anything else (`principal.name`, which the schema refuses) is none of these, and
//! is left to validation.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::est::{self, node, operand};
use crate::targets::Targets;

/// The values `targets.toml` gives the attributes rules compare with literals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    environments: BTreeSet<String>,
    kinds: BTreeSet<String>,
    labels: BTreeSet<String>,
    roles: BTreeSet<String>,
}

impl Known {
    pub fn of(targets: &Targets) -> Self {
        let mut known = Self::default();
        for (_, t) in targets.iter() {
            known.environments.insert(t.environment.clone());
            known.kinds.insert(t.kind.clone());
            known.labels.extend(t.labels.iter().cloned());
            known.roles.extend(t.roles.keys().map(ToString::to_string));
        }
        known
    }

    /// What the warning about attribute `attr` says, and the values it has; `None` for an
    /// attribute whose values targets.toml does not give.
    fn of_attr(&self, attr: Attr) -> Option<(Holder, &BTreeSet<String>)> {
        let (holder, values) = match attr {
            Attr::Target("environment") => (ENVIRONMENT, &self.environments),
            Attr::Target("kind") => (KIND, &self.kinds),
            Attr::Target("labels") => (LABEL, &self.labels),
            Attr::Role("name") => (ROLE_NAME, &self.roles),
            _ => return None,
        };
        Some((holder, values))
    }
}

/// How a warning names what holds an attribute, and how to fix it.
#[derive(Debug, Clone, Copy)]
struct Holder {
    /// `target` or `role`.
    what: &'static str,
    /// How one with a value is said to have it: `has environment`.
    has: &'static str,
    /// The values' name, in a list of them.
    plural: &'static str,
    fix: &'static str,
}

const ENVIRONMENT: Holder = Holder {
    what: "target",
    has: "has environment",
    plural: "environments",
    fix: "define a target with that environment",
};
const KIND: Holder = Holder {
    what: "target",
    has: "is of kind",
    plural: "kinds",
    fix: "define a target of that kind",
};
const LABEL: Holder = Holder {
    what: "target",
    has: "has label",
    plural: "labels",
    fix: "give a target that label",
};
const ROLE_NAME: Holder = Holder {
    what: "role",
    has: "is named",
    plural: "role names",
    fix: "define a role of that name",
};

/// The fields of `context.now`: name, range, and what the range means when it is not plain.
const NOW_FIELDS: [(&str, i64, i64, &str); 3] = [
    ("hour", 0, 23, ""),
    ("minute", 0, 59, ""),
    ("weekday", 0, 6, " (0 = Monday, 6 = Sunday)"),
];

/// One warning about a rule: what to say, and the text to point at in the rule (the literal as
/// written, or the attribute it is compared with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub message: String,
    pub at: Locator,
}

/// How a finding's place in the rule's text is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Locator {
    /// A string literal, as Cedar writes it (quoted).
    Text(String),
    /// Attribute `attr` compared with the number `value`.
    Number { attr: String, value: i64 },
}

/// Every warning about rule `id` (`policy`, in Cedar's JSON form): see the module's
/// documentation.
pub(crate) fn check(id: &str, policy: &Value, known: &Known) -> Vec<Finding> {
    let mut out = Vec::new();
    for condition in policy["conditions"].as_array().into_iter().flatten() {
        est::each(&condition["body"], &mut |op, args| {
            out.extend(check_node(id, op, args, known));
        });
    }
    out
}

/// The warnings about one expression, `op` over `args`.
fn check_node(id: &str, op: &str, args: &Value, known: &Known) -> Vec<Finding> {
    let left = operand(args, "left");
    let right = operand(args, "right");
    match (op, left, right) {
        ("==" | "!=" | "<" | "<=" | ">" | ">=", Some(l), Some(r)) => {
            let (attr, literal, op) = match (attr(l), attr(r)) {
                (Some(a), None) => (a, r, op),
                (None, Some(a)) => (a, l, flipped(op)),
                _ => return Vec::new(),
            };
            compared(id, attr, op, literal, known).into_iter().collect()
        }
        ("contains", Some(l), Some(r)) => match attr(r) {
            // `["production", "staging"].contains(resource.target.environment)`
            Some(a) => set_items(l)
                .filter_map(|item| compared(id, a, "==", item, known))
                .collect(),
            // `resource.target.labels.contains("pci")`
            None => compared_with(l, [r], id, known),
        },
        // `resource.target.labels.containsAny(["pci", "sox"])`
        ("containsAny" | "containsAll", Some(l), Some(r)) => {
            compared_with(l, set_items(r), id, known)
        }
        ("like", Some(l), None) => like(id, l, &args["pattern"], known).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The warnings about `items`, each tested for in what `receiver` reads (labels).
fn compared_with<'a>(
    receiver: &Value,
    items: impl IntoIterator<Item = &'a Value>,
    id: &str,
    known: &Known,
) -> Vec<Finding> {
    let Some(a) = attr(receiver) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| compared(id, a, "==", item, known))
        .collect()
}

/// An attribute a rule reads, by what it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr<'a> {
    /// Of a role: `resource.name`.
    Role(&'a str),
    /// Of a target: `resource.target.environment`.
    Target(&'a str),
    /// A field of the time of the decision: `context.now.hour`.
    Now(&'a str),
}

/// The attribute `expr` reads, if it is read from a role, a target or `context.now`.
fn attr(expr: &Value) -> Option<Attr<'_>> {
    let (".", args) = node(expr)? else {
        return None;
    };
    let name = args["attr"].as_str()?;
    let object = &args["left"];
    match entity_type(object) {
        Some("Role") => Some(Attr::Role(name)),
        Some("Target") => Some(Attr::Target(name)),
        _ if is_now(object) => Some(Attr::Now(name)),
        _ => None,
    }
}

/// The entity type `expr` is, as the schema tells it: `resource` is a role, a role's `target`
/// a target, and an entity literal of the type it names.
fn entity_type(expr: &Value) -> Option<&str> {
    match node(expr)? {
        ("Var", var) if var == "resource" => Some("Role"),
        ("Value", value) => value["__entity"]["type"].as_str(),
        (".", args) if args["attr"] == "target" && entity_type(&args["left"]) == Some("Role") => {
            Some("Target")
        }
        _ => None,
    }
}

/// Whether `expr` is `context.now`.
fn is_now(expr: &Value) -> bool {
    matches!(node(expr), Some((".", args))
        if args["attr"] == "now"
            && matches!(node(&args["left"]), Some(("Var", var)) if var == "context"))
}

/// The literal `expr` is.
fn literal(expr: &Value) -> Option<&Value> {
    match node(expr)? {
        ("Value", value) => Some(value),
        _ => None,
    }
}

/// The items of a set literal `[a, b]` (none for anything else).
fn set_items(expr: &Value) -> impl Iterator<Item = &Value> {
    let items = match node(expr) {
        Some(("Set", Value::Array(items))) => items.as_slice(),
        _ => &[],
    };
    items.iter()
}

/// The operator that compares the same with its operands swapped: `7 > x` is `x < 7`.
fn flipped(op: &str) -> &str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        same => same,
    }
}

/// The warning about comparing attribute `attr` with `expr` by `op` (as in `attr op expr`),
/// if any.
fn compared(id: &str, attr: Attr, op: &str, expr: &Value, known: &Known) -> Option<Finding> {
    let value = literal(expr)?;
    if let Some(text) = value.as_str() {
        let (holder, values) = known.of_attr(attr)?;
        if values.contains(text) {
            return None;
        }
        let shown = quoted(text);
        return Some(Finding {
            message: unknown(id, holder, &shown, values),
            at: Locator::Text(shown),
        });
    }
    let n = value.as_i64()?;
    let Attr::Now(attr) = attr else {
        return None;
    };
    let (field, min, max, meaning) = NOW_FIELDS.into_iter().find(|(f, ..)| *f == attr)?;
    let outcome = out_of_range(op, n, min, max)?;
    Some(Finding {
        message: format!(
            "policy {id}: context.now.{field} runs from {min} to {max}{meaning}, so context.now.{field} {op} {n} {outcome}: correct the value"
        ),
        at: Locator::Number {
            attr: field.to_owned(),
            value: n,
        },
    })
}

/// What is wrong with comparing a value of `min..=max` by `op` with `n`: that it never holds,
/// or that `n` is out of range (then it holds for every value or none). `x < max + 1` and
/// `x > min - 1` bound the range exactly, as `hour < 24` is written to mean "until midnight".
fn out_of_range(op: &str, n: i64, min: i64, max: i64) -> Option<&'static str> {
    let holds = |v: i64| match op {
        "==" => v == n,
        "!=" => v != n,
        "<" => v < n,
        "<=" => v <= n,
        ">" => v > n,
        _ => v >= n,
    };
    let holding = (min..=max).filter(|v| holds(*v)).count();
    let bound = (op == "<" && n == max + 1) || (op == ">" && n == min - 1);
    if holding == 0 {
        Some("is never true")
    } else if !(min..=max).contains(&n) && !bound {
        Some("is always true")
    } else {
        None
    }
}

/// The warning about `resource.… like "pattern"` when no known value matches it.
fn like(id: &str, receiver: &Value, pattern: &Value, known: &Known) -> Option<Finding> {
    let (holder, values) = known.of_attr(attr(receiver)?)?;
    let pattern = Pattern::of(pattern)?;
    if values.iter().any(|v| pattern.matches(v)) {
        return None;
    }
    let shown = format!("like {}", pattern.written);
    Some(Finding {
        message: unknown(id, holder, &shown, values),
        at: Locator::Text(pattern.written),
    })
}

/// What a warning about a value no target or role has says: which value, which exist, and
/// what it means.
fn unknown(id: &str, holder: Holder, shown: &str, values: &BTreeSet<String>) -> String {
    let values: Vec<String> = values.iter().cloned().collect();
    format!(
        "policy {id}: no {what} in targets.toml {has} {shown} ({plural}: {list}), so this test comes out the same for every {what}: correct the value, or {fix}",
        what = holder.what,
        has = holder.has,
        plural = holder.plural,
        list = crate::policy::list(&values),
        fix = holder.fix,
    )
}

/// A string as a Cedar rule writes it.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.escape_debug())
}

/// A `like` pattern: characters, and `None` for each `*` wildcard.
struct Pattern {
    elements: Vec<Option<char>>,
    /// As a rule writes it, quoted.
    written: String,
}

impl Pattern {
    /// From Cedar's JSON form: `["Wildcard", {"Literal": "prod"}]`.
    fn of(json: &Value) -> Option<Self> {
        let mut elements = Vec::new();
        let mut written = String::from("\"");
        for element in json.as_array()? {
            if element == "Wildcard" {
                elements.push(None);
                written.push('*');
                continue;
            }
            let text = element["Literal"].as_str()?;
            elements.extend(text.chars().map(Some));
            let escaped = text.escape_debug().to_string();
            written.push_str(&escaped.replace('*', "\\*"));
        }
        written.push('"');
        Some(Self { elements, written })
    }

    /// Whether `text` matches, as Cedar's `like` does: in time proportional to the pattern's
    /// length times the text's, however many wildcards.
    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // `reach[i]`: whether the pattern so far can match the first `i` characters.
        let mut reach = vec![false; text.len() + 1];
        reach[0] = true;
        for element in &self.elements {
            match element {
                None => {
                    for i in 1..=text.len() {
                        reach[i] |= reach[i - 1];
                    }
                }
                Some(c) => {
                    for i in (1..=text.len()).rev() {
                        reach[i] = reach[i - 1] && text[i - 1] == *c;
                    }
                    reach[0] = false;
                }
            }
        }
        reach[text.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(conditions: &str) -> Vec<String> {
        let known = Known {
            environments: ["production".into(), "staging".into()].into(),
            kinds: ["ssh".into()].into(),
            labels: ["pci".into()].into(),
            roles: ["admin".into(), "root".into()].into(),
        };
        let text = format!("permit (principal, action, resource) when {{ {conditions} }};");
        let policy = cedar_policy::Policy::parse(None, text).unwrap();
        check("p", &policy.to_json().unwrap(), &known)
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn values_no_target_has_are_named() {
        assert_eq!(
            findings("resource.target.environment == \"prod\""),
            [
                "policy p: no target in targets.toml has environment \"prod\" (environments: production, staging), so this test comes out the same for every target: correct the value, or define a target with that environment"
            ]
        );
        assert_eq!(
            findings("\"rooot\" != resource.name"),
            [
                "policy p: no role in targets.toml is named \"rooot\" (role names: admin, root), so this test comes out the same for every role: correct the value, or define a role of that name"
            ]
        );
        let got = findings(
            "resource.target.labels.contains(\"PCI\") || resource.target.labels.containsAny([\"pci\", \"sox\"]) || [\"production\", \"prd\"].contains(resource.target.environment) || resource.target.kind == \"shh\"",
        );
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].contains("has label \"PCI\" (labels: pci)"),
            "{}",
            got[0]
        );
        assert!(got[1].contains("has label \"sox\""), "{}", got[1]);
        assert!(got[2].contains("has environment \"prd\""), "{}", got[2]);
        assert!(
            got[3].contains("is of kind \"shh\" (kinds: ssh)"),
            "{}",
            got[3]
        );
        // A pattern is matched as Cedar matches it.
        assert!(
            findings("resource.target.environment like \"prod*\" || resource.name like \"*o*t\"")
                .is_empty()
        );
        let got = findings("resource.target.environment like \"prd*\"");
        assert!(got[0].contains("has environment like \"prd*\""), "{got:?}");
        // What is known raises nothing.
        assert!(findings("resource.target.environment == \"production\" && [\"root\"].contains(resource.name) && context.ticket == \"x\"").is_empty());
    }

    /// A `name`, an `environment` or an `hour` read from anything but a role, a target or
    /// `context.now` (which the schema refuses) is none of theirs, and gets no warning about
    /// them beside its error.
    #[test]
    fn only_attributes_of_roles_targets_and_now_are_looked_up() {
        assert_eq!(
            findings(
                "principal.name == \"bob\" || resource.target.name == \"web\" || principal.environment == \"prod\" || context.name == \"x\" || principal.labels.contains(\"sox\") || context.hour == 25"
            ),
            Vec::<String>::new()
        );
        // A role or a target named by its id is one too, and so is a role's target.
        let got = findings(
            "Role::\"web/a\".name == \"x\" || Target::\"web\".labels.contains(\"sox\") || Role::\"web/a\".target.kind == \"k\"",
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].contains("no role in targets.toml is named \"x\""),
            "{}",
            got[0]
        );
        assert!(got[1].contains("has label \"sox\""), "{}", got[1]);
        assert!(got[2].contains("is of kind \"k\""), "{}", got[2]);
    }

    #[test]
    fn times_out_of_range_are_named() {
        assert_eq!(
            findings("context.now.weekday == 7"),
            [
                "policy p: context.now.weekday runs from 0 to 6 (0 = Monday, 6 = Sunday), so context.now.weekday == 7 is never true: correct the value"
            ]
        );
        let got = findings(
            "context.now.hour <= 24 || 60 < context.now.minute || context.now.hour > 23 || context.now.hour < 0 || [5, 7].contains(context.now.weekday)",
        );
        let ends: Vec<&str> = got
            .iter()
            .map(|m| m.split(", so ").nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            ends,
            [
                "context.now.hour <= 24 is always true: correct the value",
                "context.now.minute > 60 is never true: correct the value",
                "context.now.hour > 23 is never true: correct the value",
                "context.now.hour < 0 is never true: correct the value",
                "context.now.weekday == 7 is never true: correct the value",
            ]
        );
        // The bounds of a range, as windows are written, raise nothing.
        assert!(findings("context.now.hour >= 18 && context.now.hour < 24 && context.now.weekday < 5 && context.now.minute >= 0 && context.now.minute != 30").is_empty());
    }

    #[test]
    fn patterns_match_as_cedar_matches() {
        let pattern = |elements: Value| Pattern::of(&elements).unwrap();
        let p = pattern(serde_json::json!(["Wildcard", {"Literal": "a*b"}, "Wildcard"]));
        assert_eq!(p.written, "\"*a\\*b*\"");
        assert!(p.matches("xa*by") && p.matches("a*b") && !p.matches("ab"));
        let p = pattern(serde_json::json!([{"Literal": "prod"}]));
        assert!(p.matches("prod") && !p.matches("production"));
    }
}
