//! Problems in a table of settings (a role's, or a target's connection), each kept with the
//! setting it is in, so that `warden policy check` reports every one of them where it is
//! written, and an issue refuses with the first.

use crate::{Error, Settings};

/// Setting `key` of `settings` as a list of strings, if present; `named` is how the error
/// names it.
pub(crate) fn string_list(
    settings: &Settings,
    key: &str,
    named: &str,
) -> Result<Option<Vec<String>>, Error> {
    let wrong = || Error::Settings(format!("{named} must be a list of strings"));
    match settings.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// A problem with a table of settings: the setting it is in (`None`: the table as a whole,
/// such as a setting it lacks), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: Option<String>,
    pub message: String,
}

/// The problems found while reading one table of settings.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<SettingProblem>);

impl Problems {
    /// Notes a problem in setting `key` (`None`: in the table as a whole).
    pub(crate) fn add(&mut self, key: Option<&str>, message: String) {
        self.0.push(SettingProblem {
            key: key.map(str::to_owned),
            message,
        });
    }

    /// `read`'s value, or `None` with its error noted as a problem in setting `key`.
    pub(crate) fn check<T>(&mut self, key: &str, read: Result<T, Error>) -> Option<T> {
        read.map_err(|e| {
            let message = match e {
                Error::Settings(m) => m,
                other => other.to_string(),
            };
            self.add(Some(key), message);
        })
        .ok()
    }

    /// `read` when no problem was found, else the first problem as the error.
    pub(crate) fn or_first<T>(self, read: T) -> Result<T, Error> {
        match self.0.into_iter().next() {
            None => Ok(read),
            Some(p) => Err(Error::Settings(p.message)),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<SettingProblem> {
        self.0
    }
}
