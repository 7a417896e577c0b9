//! A rule as Cedar's JSON form of a policy (its EST) shows it: for the checks that read what a
//! rule's conditions compare ([`crate::literals`]), and for telling which roles a rule can
//! apply to ([`crate::reach`]).
//!
//! Cedar's API offers no walk over a policy's expressions; its JSON form is complete and
//! documented. Each expression there is an object with one key, its operator (`==`, `.`, `&&`,
//! `Value`, `Var`, …), whose value holds its operands.

use serde_json::Value;

/// An expression's operator and operands: `{"==": {"left": …, "right": …}}` gives `==` and
/// the object holding `left` and `right`.
pub(crate) fn node(expr: &Value) -> Option<(&str, &Value)> {
    let object = expr.as_object()?;
    let mut entries = object.iter();
    let (op, args) = entries.next()?;
    entries.next().is_none().then_some((op.as_str(), args))
}

/// Operand `name` of an expression's operands (`left`, `right`, `arg`).
pub(crate) fn operand<'a>(args: &'a Value, name: &str) -> Option<&'a Value> {
    args.as_object()?.get(name)
}

/// A rule's conditions, each of which must hold for it to apply: each `when` body and the
/// negation of each `unless` body, split at their top-level `&&`s.
pub(crate) fn conjuncts(policy: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for condition in policy["conditions"].as_array().into_iter().flatten() {
        let body = condition["body"].clone();
        if condition["kind"] == "unless" {
            out.push(serde_json::json!({ "!": { "arg": body } }));
        } else {
            split_and(body, &mut out);
        }
    }
    out
}

fn split_and(expr: Value, out: &mut Vec<Value>) {
    match node(&expr) {
        Some(("&&", args)) => {
            let (left, right) = (args["left"].clone(), args["right"].clone());
            split_and(left, out);
            split_and(right, out);
        }
        _ => out.push(expr),
    }
}

/// Calls `visit` with the operator and operands of `expr` and of every expression in it,
/// outer first. A literal is not walked into: a record literal's keys are no operators.
pub(crate) fn each<'a>(expr: &'a Value, visit: &mut impl FnMut(&'a str, &'a Value)) {
    let Some((op, args)) = node(expr) else {
        return;
    };
    visit(op, args);
    if op == "Value" {
        return;
    }
    let operands: Box<dyn Iterator<Item = &Value>> = match args {
        Value::Object(fields) => Box::new(fields.values()),
        Value::Array(items) => Box::new(items.iter()),
        _ => return,
    };
    for operand in operands {
        match operand {
            Value::Array(items) => items.iter().for_each(|item| each(item, visit)),
            _ => each(operand, visit),
        }
    }
}

/// Whether `expr` reads variable `var` (`principal`, `context`, …).
pub(crate) fn reads(expr: &Value, var: &str) -> bool {
    let mut found = false;
    each(expr, &mut |op, args| found |= op == "Var" && args == var);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Value {
        cedar_policy::Policy::parse(None, text)
            .unwrap()
            .to_json()
            .unwrap()
    }

    #[test]
    fn conditions_split_into_what_must_all_hold() {
        let p = policy(
            "permit (principal, action, resource) when { resource.name == \"a\" && (context.ttl_seconds < 60 || principal == User::\"x\") } unless { context.has_ticket };",
        );
        let parts = conjuncts(&p);
        assert_eq!(parts.len(), 3, "{parts:#?}");
        assert!(!reads(&parts[0], "principal") && reads(&parts[0], "resource"));
        assert!(reads(&parts[1], "principal") && reads(&parts[1], "context"));
        assert_eq!(node(&parts[2]).map(|(op, _)| op), Some("!"));
        assert!(reads(&parts[2], "context"));
        // A record literal's keys are no operators, nor a string a variable.
        let p = policy(
            "permit (principal, action, resource) when { {Var: \"principal\"} == {Var: \"context\"} };",
        );
        assert!(!conjuncts(&p).iter().any(|c| reads(c, "principal")));
    }
}
