//! Secrets in the configuration file: the metrics bearer token, SMTP passwords, webhook header
//! values. Each is given inline, or by reference to a file or an environment variable, read
//! when the configuration is read, so that the configuration itself can live in git:
//!
//! ```toml
//! password = "…"                                 # inline: the file is then a secret too
//! password = { file = "/run/secrets/smtp" }      # the file's contents, less one final newline
//! password = { env = "WARDEN_SMTP_PASSWORD" }    # a variable in `warden serve`'s environment
//! ```
//!
//! A file that cannot be read, an unset variable or an empty value fails the configuration,
//! naming the file or variable and never a value.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A secret from the configuration file. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSecret(String);

impl ConfigSecret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a referenced secret is read from.
enum Source {
    File(PathBuf),
    Env(String),
}

impl Source {
    fn read(&self) -> Result<String, String> {
        let value = match self {
            Source::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_owned()
            }
            Source::Env(name) => std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    format!("environment variable {name} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("environment variable {name} is not valid UTF-8")
                }
            })?,
        };
        if value.is_empty() {
            return Err(match self {
                Source::File(path) => format!("secret file {} is empty", path.display()),
                Source::Env(name) => format!("environment variable {name} is empty"),
            });
        }
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

fn unquoted<E: de::Error>() -> E {
    E::custom(
        r#"a secret is text: write it in quotes, or as { file = "PATH" } or { env = "VARIABLE" }"#,
    )
}

const REFERENCES: &[&str] = &["file", "env"];

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = ConfigSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { file = "PATH" } or { env = "VARIABLE" }"#)
    }

    // A secret written unquoted reads as a number or a boolean: refused without quoting it, as
    // serde's own message would.
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ConfigSecret, E> {
        Err(unquoted())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigSecret, E> {
        if v.is_empty() {
            return Err(E::custom("the secret is empty"));
        }
        Ok(ConfigSecret(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConfigSecret, A::Error> {
        let mut source = None;
        while let Some(key) = map.next_key::<String>()? {
            let next = match key.as_str() {
                "file" => Source::File(map.next_value()?),
                "env" => Source::Env(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, REFERENCES)),
            };
            if source.replace(next).is_some() {
                return Err(de::Error::custom(
                    "give the secret one way: `file` or `env`, not both",
                ));
            }
        }
        let source =
            source.ok_or_else(|| de::Error::custom("name the secret's `file` or `env`"))?;
        source.read().map(ConfigSecret).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        secret: ConfigSecret,
    }

    fn parse(toml_text: &str) -> Result<ConfigSecret, String> {
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.secret)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn inline_file_and_env() {
        assert_eq!(parse("secret = \"s3cret\"").unwrap().expose(), "s3cret");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let s = parse(&format!("secret = {{ file = {:?} }}", path)).unwrap();
        assert_eq!(s.expose(), "from-file");
        std::fs::write(&path, "crlf\r\n").unwrap();
        let s = parse(&format!("secret = {{ file = {:?} }}", path)).unwrap();
        assert_eq!(s.expose(), "crlf");

        // Every test process has a PATH; setting a variable here would need `unsafe`.
        let s = parse("secret = { env = \"PATH\" }").unwrap();
        assert_eq!(s.expose(), std::env::var("PATH").unwrap());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn bad_references_name_the_file_or_variable_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = parse(&format!("secret = {{ file = {:?} }}", missing)).unwrap_err();
        assert!(
            e.contains("cannot read secret file") && e.contains("missing"),
            "{e}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = parse(&format!("secret = {{ file = {:?} }}", empty)).unwrap_err();
        assert!(e.contains("is empty"), "{e}");

        let e = parse("secret = { env = \"WARDEN_TEST_SURELY_UNSET_VARIABLE\" }").unwrap_err();
        assert!(
            e.contains("environment variable WARDEN_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{e}"
        );

        let e = parse("secret = { env = \"PATH\", file = \"/x\" }").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("secret = { vault = \"x\" }").unwrap_err();
        assert!(e.contains("unknown field `vault`"), "{e}");
        let e = parse("secret = {}").unwrap_err();
        assert!(e.contains("`file` or `env`"), "{e}");
        let e = parse("secret = \"\"").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse("secret = 42").unwrap_err();
        assert!(e.contains("{ file = \"PATH\" }"), "{e}");
        // Unquoted, a secret is refused without being quoted back.
        // (The message: the config's loader gives where, never the line's text.)
        for unquoted in [
            "1234567890123456789",
            "55555555555555555555555",
            "-55555555555555555555555",
            "12.5",
            "true",
            "-7",
        ] {
            let e = toml::from_str::<Holder>(&format!("secret = {unquoted}")).unwrap_err();
            let message = e.message();
            assert!(
                message.contains("write it in quotes") && !message.contains(unquoted),
                "{message}"
            );
        }
    }
}
