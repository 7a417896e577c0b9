//! A rule as Cedar's JSON form of a policy (its EST) shows it: for the checks that read what a
//! rule's conditions compare ([`crate::literals`]).
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
