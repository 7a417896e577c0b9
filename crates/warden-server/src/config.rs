//! The server's configuration file (`warden serve --config warden.toml`): see [`EXAMPLE`] for
//! every setting.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warden_domain::directory::DirectoryError;
use warden_domain::{Directory, GroupName, Ttl, User, UserName};

use crate::config_secret::ConfigSecret;

/// A configuration file with every setting, each with an example value: errors about a setting
/// quote its line here to show how it is written.
pub const EXAMPLE: &str = r#"listen = "127.0.0.1:8443"        # API address; loopback by default
http_read_timeout = "10s"        # how long a client has to send a request's headers, then its body
trusted_proxies = ["127.0.0.1"]  # proxies whose X-Forwarded-For names the client
ssh_listen = "127.0.0.1:2222"    # the SSH proxy (ssh -p 2222 alice:TARGET@host)
session_viewers = "security"     # may list, watch, kill and replay everyone's sessions
audit_readers = "security"       # may search and export everyone's audit events, read-only
data_dir = "/var/lib/warden"     # database, keys, default policy
policy_dir = "/etc/warden/policy" # a git checkout of your policy repo
token_ttl = "8h"                 # lifetime of API tokens from `warden login`
admin_group = "admins"           # members may reload policy and manage users
bootstrap_admin = "admin"        # created with a generated password, printed once, on first start
security_group = "security"      # told of break-glass; closes postmortems; reads `warden report`
# metrics_token = { file = "/etc/warden/metrics-token" }  # optional: bearer token `GET /metrics` then requires
audit_origin = "warden.example.com/audit"  # the audit log's name in its signed checkpoints
checkpoint_interval = "10s"      # how often a signed checkpoint of the audit log is written
audit_retention_days = 400       # days events stay in the live log before they are archived
public_url = "https://warden.example.com"  # what links in notifications point at
expiry_warning = "10m"           # requesters are told this long before a grant ends

[[notify]]                       # notification sinks: see `crate::notify`
name = "chat"
kind = "webhook"
url = "http://127.0.0.1:9000/hooks/warden"

[users.alice]
groups = ["dev"]
manager = "mallory"

[users.mallory]
groups = ["managers"]
"#;

/// The configuration file's contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this configuration was read from, when a server runs with one (not in
    /// development mode, whose directory is the demo's): read again at each policy reload to
    /// say when its users changed, which take effect at the next start.
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
    /// API listen address. Warden speaks plain HTTP: keep it on loopback or put a TLS
    /// terminating proxy in front.
    #[serde(default = "default_listen", deserialize_with = "address")]
    pub listen: SocketAddr,
    /// How long an API client has to send a request's headers, and then its body; a connection
    /// idle that long between two requests is closed. Default 10s.
    #[serde(default = "default_http_read_timeout", deserialize_with = "duration")]
    pub http_read_timeout: Ttl,
    /// The TLS-terminating proxies in front of the API (addresses or CIDR blocks), whose
    /// `X-Forwarded-For` names the client for the audit log and the per-address throttle.
    /// Empty by default: the header is ignored and the connection's peer is the client.
    #[serde(default)]
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// The SSH proxy's listen address. Users connect with `ssh -p PORT USER:TARGET@HOST`.
    #[serde(default = "default_ssh_listen", deserialize_with = "address")]
    pub ssh_listen: SocketAddr,
    /// Members of this group (and administrators) may list, watch, terminate and replay
    /// everyone's SSH sessions. Recordings can hold secrets typed or shown on screen.
    #[serde(default = "default_session_viewers")]
    pub session_viewers: GroupName,
    /// Members of this group (and administrators) may search everyone's audit events, read
    /// proofs, export bundles and the export's status, see every request and replay recorded
    /// sessions: read-only, for security teams and auditors who should not administer Warden
    /// (nor watch or end live sessions, which is `session_viewers`').
    #[serde(default = "default_audit_readers")]
    pub audit_readers: GroupName,
    /// Where the database, keys and (by default) the policy live. Default `./warden-data`.
    #[serde(default = "default_data_dir", deserialize_with = "data_dir")]
    pub data_dir: PathBuf,
    /// The policy directory. Default `<data_dir>/policy`, seeded with an example on first start.
    pub policy_dir: Option<PathBuf>,
    /// Lifetime of API tokens.
    #[serde(default = "default_token_ttl", deserialize_with = "duration")]
    pub token_ttl: Ttl,
    /// Members of this group may reload policy, set passwords and see every request.
    #[serde(default = "default_admin_group")]
    pub admin_group: GroupName,
    /// The administrator created on first start; their generated password is printed once
    /// (or taken from `WARDEN_BOOTSTRAP_PASSWORD`).
    #[serde(default = "default_bootstrap_admin")]
    pub bootstrap_admin: UserName,
    /// Its members are told of every break-glass use and failed revocation, may close
    /// postmortems, and may read the zero-standing-privilege report, as administrators may.
    #[serde(default = "default_security_group")]
    pub security_group: GroupName,
    /// When set, `GET /metrics` requires `Authorization: Bearer <metrics_token>`; unset, it is
    /// open to anyone who reaches the API listener (it shows counts, never names or ids).
    /// A secret: give it as `{ file = "…" }` or `{ env = "…" }` to keep it out of the file.
    pub metrics_token: Option<BearerToken>,
    /// The audit log's name in its signed checkpoints (C2SP `origin`); make it unique per
    /// deployment, e.g. `warden.example.com/audit`.
    #[serde(default = "default_audit_origin")]
    pub audit_origin: String,
    /// How often a signed checkpoint of the audit log is written (also on shutdown).
    #[serde(default = "default_checkpoint_interval", deserialize_with = "duration")]
    pub checkpoint_interval: Ttl,
    /// Days audit events stay in the live log before they are sealed into archive segments
    /// under `<data_dir>/archive` (checked daily). Unset: the live log keeps everything.
    #[serde(default, deserialize_with = "retention_days")]
    pub audit_retention_days: Option<u32>,
    /// The directory: who exists, their groups and managers.
    #[serde(default)]
    pub users: BTreeMap<UserName, UserConfig>,
    /// Where the audit log is exported (`[[sinks]]`); see [`crate::export`]. Only here, never
    /// through the API, so an API caller cannot redirect or silence the export.
    #[serde(default, deserialize_with = "crate::export::sinks")]
    pub sinks: Vec<crate::export::SinkConfig>,
    /// Where notifications go (`[[notify]]`); see [`crate::notify`]. Only here, never through
    /// the API.
    #[serde(default, deserialize_with = "crate::notify::sinks")]
    pub notify: Vec<crate::notify::NotifyConfig>,
    /// The address people reach Warden at, for the links in notifications, e.g.
    /// `https://warden.example.com`. Default `http://` and the listen address.
    #[serde(default, deserialize_with = "public_url")]
    pub public_url: Option<String>,
    /// How long before a grant ends its requester is told (only for grants longer than this).
    #[serde(default = "default_expiry_warning", deserialize_with = "duration")]
    pub expiry_warning: Ttl,
}

/// One user in the directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub groups: BTreeSet<GroupName>,
    pub manager: Option<UserName>,
    /// An argon2id PHC hash (from `warden hash-password`), used as the initial password.
    /// Passwords changed later through the API are kept in the database instead.
    #[serde(default, deserialize_with = "password_hash")]
    pub password_hash: Option<String>,
}

/// Reads a `password_hash`, refusing anything but an argon2id hash: a password written there
/// by mistake would be stored as it is, and never quoted back in the error.
fn password_hash<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    match crate::auth::argon2id_hash_problem(&text) {
        None => Ok(Some(text)),
        Some(why) => Err(serde::de::Error::custom(format!(
            "`password_hash` takes an argon2id hash, as `warden hash-password` prints it (it begins `$argon2id$`), never the password itself: {why}"
        ))),
    }
}

/// Reads a setting that takes a duration; its problems are said of the value (its line and
/// column locate the setting), not of a TTL.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ttl, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<Ttl>()
        .map_err(|e| serde::de::Error::custom(e.of("the value")))
}

/// Reads `public_url`: an `http://` or `https://` address with a host, and nothing every
/// notification's links must not carry, or that would break them: no user name or password
/// (notifications never carry credentials), no query or fragment (the link's path comes after
/// it), no space or control character. The value is never said back: it may hold a password.
fn public_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    match public_url_problem(&text) {
        None => Ok(Some(text)),
        Some(why) => Err(serde::de::Error::custom(format!(
            "`public_url` {why}, e.g. public_url = \"https://warden.example.com\" (a path may follow, as in \"https://example.com/warden\")"
        ))),
    }
}

/// What is wrong with `url` as `public_url`, if anything.
fn public_url_problem(url: &str) -> Option<&'static str> {
    let rest = ["https://", "http://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    });
    let Some(rest) = rest else {
        return Some("must start with http:// or https://");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(
            "holds a space or control character, which a link cannot: percent-encode it (a space is %20)",
        );
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Some(
            "holds a user name or password (before an `@`), which every notification's links would carry to everyone told: give the address without them",
        );
    }
    if authority.split(':').next().is_none_or(str::is_empty) {
        return Some("has no host: give the host people reach Warden at");
    }
    if rest.contains(['?', '#']) {
        return Some(
            "has a query or fragment (from a `?` or `#`), which the path of every link would come after: give the address without it",
        );
    }
    None
}

/// Reads a listen address: an IP address and a port, never a host name to resolve.
fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port: write e.g. \"127.0.0.1:8443\" or \"[::1]:8443\" (host names are not looked up)"
        ))
    })
}

/// Reads `data_dir`, refusing an empty one (which names no directory, and would be reported
/// as one that cannot be read).
fn data_dir<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let dir = PathBuf::deserialize(d)?;
    if dir.as_os_str().is_empty() {
        return Err(serde::de::Error::custom(
            "`data_dir` is empty: set it to the directory for the database, keys and policy, e.g. data_dir = \"/var/lib/warden\"",
        ));
    }
    Ok(dir)
}

/// Longest `audit_retention_days`: a century.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// Reads `audit_retention_days`: at most [`MAX_RETENTION_DAYS`] (0 archives every event, and
/// lets every segment be deleted, at once).
fn retention_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let days = u32::deserialize(d)?;
    if days <= MAX_RETENTION_DAYS {
        Ok(Some(days))
    } else {
        Err(serde::de::Error::custom(format!(
            "`audit_retention_days` must be 0 to {MAX_RETENTION_DAYS} days, or left out to keep every event in the live log"
        )))
    }
}

/// A bearer token set in the config file (inline, or from a file or the environment: see
/// [`ConfigSecret`]). `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(try_from = "ConfigSecret")]
pub struct BearerToken(ConfigSecret);

impl TryFrom<ConfigSecret> for BearerToken {
    type Error = String;
    fn try_from(s: ConfigSecret) -> Result<Self, String> {
        // A scraper sends it in an `Authorization` header, where only visible ASCII is safe;
        // which also makes its length in bytes its length in characters.
        let token = s.expose();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be at least 16 characters long, each visible ASCII (no spaces); generate one with `openssl rand -hex 32`".into());
        }
        Ok(Self(s))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Whether `presented` is this token. Compares SHA-256 digests, so the time taken says
    /// nothing about how much of the token was right.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.expose().as_bytes()) == Sha256::digest(presented.as_bytes())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_ssh_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2222))
}
fn default_session_viewers() -> GroupName {
    "security"
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_audit_readers() -> GroupName {
    default_session_viewers()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("warden-data")
}
fn default_token_ttl() -> Ttl {
    Ttl::from_secs(8 * 3600).unwrap_or(Ttl::MIN)
}
fn default_audit_origin() -> String {
    "warden.local/audit".to_owned()
}
fn default_http_read_timeout() -> Ttl {
    Ttl::from_secs(10).unwrap_or(Ttl::MIN)
}
fn default_checkpoint_interval() -> Ttl {
    Ttl::from_secs(10).unwrap_or(Ttl::MIN)
}
fn default_admin_group() -> GroupName {
    "admins"
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_security_group() -> GroupName {
    "security"
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_expiry_warning() -> Ttl {
    Ttl::from_secs(600).unwrap_or(Ttl::MIN)
}
fn default_bootstrap_admin() -> UserName {
    "admin"
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            file: None,
            listen: default_listen(),
            ssh_listen: default_ssh_listen(),
            session_viewers: default_session_viewers(),
            audit_readers: default_audit_readers(),
            data_dir: default_data_dir(),
            policy_dir: None,
            token_ttl: default_token_ttl(),
            admin_group: default_admin_group(),
            bootstrap_admin: default_bootstrap_admin(),
            security_group: default_security_group(),
            metrics_token: None,
            audit_origin: default_audit_origin(),
            checkpoint_interval: default_checkpoint_interval(),
            http_read_timeout: default_http_read_timeout(),
            trusted_proxies: Default::default(),
            audit_retention_days: None,
            users: BTreeMap::new(),
            sinks: Vec::new(),
            notify: Vec::new(),
            public_url: None,
            expiry_warning: default_expiry_warning(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `source`: the message holds it, and error chains would print it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file is fine, but others than the server's user may change it: refused as a data
    /// dir or policy open to others is, for what this machine lets happen, not for what the
    /// file says.
    #[error("config file {path}: {why}")]
    OpenToOthers { path: PathBuf, why: String },
    // Not a `source`: the message already holds it, and error chains would print it twice.
    #[error("config file {path}: {problem}")]
    Directory {
        path: PathBuf,
        problem: DirectoryError,
    },
}

impl ConfigError {
    /// Whether the file given is the problem (it cannot be read, or says something invalid),
    /// which a start reports as invalid input, rather than the machine it is on.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, Self::OpenToOthers { .. })
    }
}

/// A TOML error as `line L, column C: message`, without the quoted line the parser would show:
/// a secret written inline on it (a token, a header) must not reach the terminal or a log.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let message = e.message().trim_end();
            // A setting written below a `[table]` belongs to that table in TOML: the usual
            // reason a top-level setting is called unknown.
            let table = before
                .lines()
                .rev()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .find(|l| l.starts_with('['));
            let at = format!("line {line}, column {column}");
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let source_line = text[line_start..].lines().next().unwrap_or_default();
            if message == "duplicate key" {
                // A key, never a value: keys are not secrets.
                let key = text
                    .get(span)
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && k.len() <= 100 && !k.contains('\n'));
                return match key {
                    Some(_) if source_line.trim_start().starts_with('[') => format!(
                        "{at}: {} is declared twice: keep one, with the settings of both",
                        source_line.split('#').next().unwrap_or_default().trim()
                    ),
                    Some(key) => {
                        let within = table.map_or_else(String::new, |t| format!(" in {t}"));
                        format!("{at}: `{key}` is set twice{within}: keep one")
                    }
                    None => format!("{at}: {message}"),
                };
            }
            if let Some(expected) = expected_in_words(message) {
                return match setting(source_line) {
                    Some(key) => {
                        let example = example_of(key)
                            .map_or_else(String::new, |line| format!(", e.g. {line}"));
                        format!("{at}: `{key}` takes {expected} here{example}")
                    }
                    None => format!("{at}: {expected} goes here"),
                };
            }
            match table {
                Some(table) if message.starts_with("unknown field") && top_level(message) => {
                    format!(
                        "{at}: {message}; the line is read as part of {table}, the table above it: a top-level setting goes above the first [table]"
                    )
                }
                _ => format!("{at}: {message}"),
            }
        }
        None => e.message().trim_end().to_owned(),
    }
}

/// What a value of the wrong kind should have been, in plain words, from serde's "invalid type:
/// …, expected TYPE" (or "invalid value"), whose value is left unsaid: it may be a secret.
fn expected_in_words(message: &str) -> Option<&'static str> {
    let (found, expected) = message.split_once(", expected ")?;
    if !(found.starts_with("invalid type:") || found.starts_with("invalid value:")) {
        return None;
    }
    Some(match expected {
        "a string" | "path string" => "a quoted string",
        "a sequence" => "a list in square brackets",
        "a boolean" => "true or false",
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        _ => return None,
    })
}

/// The setting a config line sets: the key before its `=`, when it is one (a bare or dotted
/// key); never anything after it, where a secret may be.
fn setting(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

/// The line of [`EXAMPLE`] that sets `key` (the last part of a dotted one), without its comment.
fn example_of(key: &str) -> Option<&'static str> {
    let name = key.rsplit('.').next()?;
    EXAMPLE
        .lines()
        .find(|l| setting(l) == Some(name))
        .map(|l| l.split(" #").next().unwrap_or(l).trim())
}

/// Whether the field an "unknown field `NAME`" message names is a top-level setting: one that
/// the config's own parser, given it alone, does not call unknown.
fn top_level(message: &str) -> bool {
    let Some(name) = message.split('`').nth(1) else {
        return false;
    };
    let alone = format!("{} = 0\n", toml::Value::String(name.to_owned()));
    match toml::from_str::<Config>(&alone) {
        Ok(_) => true,
        Err(e) => !e.message().starts_with("unknown field"),
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // It names the administrators and their first passwords: whoever else may change it
        // may make themselves one.
        if let Some(why) = crate::owner_only::others_may_change(path, None) {
            return Err(ConfigError::OpenToOthers {
                path: path.into(),
                why,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: parse_error(&text, &e),
        })?;
        if !warden_audit::valid_key_name(&config.audit_origin) {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: format!(
                    "`audit_origin` {:?} cannot name the audit log's signing key: write it without spaces, `+` or control characters, e.g. \"warden.example.com\"",
                    config.audit_origin
                ),
            });
        }
        config
            .directory(&[])
            .map_err(|problem| ConfigError::Directory {
                path: path.into(),
                problem,
            })?;
        Ok(config)
    }

    /// The policy directory in effect.
    pub fn policy_dir(&self) -> PathBuf {
        self.policy_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policy"))
    }

    /// The directory the config declares, with the bootstrap admin added to the admin group.
    pub fn directory(&self, offboarded: &[UserName]) -> Result<Directory, DirectoryError> {
        let mut users: BTreeMap<UserName, User> = self
            .users
            .iter()
            .map(|(name, u)| {
                (
                    name.clone(),
                    User {
                        name: name.clone(),
                        groups: u.groups.clone(),
                        manager: u.manager.clone(),
                    },
                )
            })
            .collect();
        // The bootstrap admin gets a first instance managed. Once the config names an
        // administrator of its own who can sign in (an initial `password_hash`), it has what
        // the config gives it: nothing, if it is not declared (it is then gone, its sessions
        // ended at start, like any user removed), so no standing administrator stays behind.
        // One offboarded (and given no password since) cannot sign in, whatever the config says.
        let admins_declared = self.users.iter().any(|(name, u)| {
            *name != self.bootstrap_admin
                && u.password_hash.is_some()
                && u.groups.contains(&self.admin_group)
                && !offboarded.contains(name)
        });
        if !admins_declared {
            users
                .entry(self.bootstrap_admin.clone())
                .or_insert_with(|| User {
                    name: self.bootstrap_admin.clone(),
                    groups: BTreeSet::new(),
                    manager: None,
                })
                .groups
                .insert(self.admin_group.clone());
        }
        Directory::new(users.into_values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_others_may_change_or_a_bad_audit_origin_is_refused_on_reading() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "[users.eve]\ngroups = [\"admins\"]\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(
            said.contains("writable by group or others (mode 666)") && said.contains("chmod go-w"),
            "{said}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        Config::load(&p).unwrap();
        std::fs::write(&p, "audit_origin = \"bad origin\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(
            said.contains("`audit_origin` \"bad origin\" cannot name"),
            "{said}"
        );
    }

    #[test]
    fn metrics_token_is_long_and_never_shown() {
        let short: Result<Config, _> = toml::from_str("metrics_token = \"short\"\n");
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("at least 16 characters")
        );
        // A file's error says where, without the line: a secret written on it stays unsaid.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "\nmetrics_token = \"hunter2secret\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(
            said.contains("line 2, column 17: the token must be at least 16"),
            "{said}"
        );
        assert!(!said.contains("hunter2"), "{said}");
        // Nine two-byte characters are eighteen bytes, and still too short; a space is no
        // token character.
        for odd in ["\u{e9}".repeat(9), "0123456789 abcdef".into()] {
            let said = toml::from_str::<Config>(&format!("metrics_token = \"{odd}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(said.contains("each visible ASCII"), "{said}");
        }
        let c: Config = toml::from_str("metrics_token = \"0123456789abcdef-x\"\n").unwrap();
        let token = c.metrics_token.as_ref().unwrap();
        assert!(token.matches("0123456789abcdef-x"));
        assert!(!token.matches("0123456789abcdef-"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn only_a_top_level_setting_below_a_table_is_said_to_belong_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "[users.alice]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(said.contains("goes above the first [table]"), "{said}");
        std::fs::write(&p, "[users.alice]\nmanagr = \"bob\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(said.contains("unknown field `managr`"), "{said}");
        assert!(!said.contains("goes above"), "{said}");
    }

    #[test]
    fn a_password_hash_is_a_hash_and_retention_is_in_days() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        // A password where its hash belongs is refused, and not quoted back.
        std::fs::write(
            &p,
            "[users.alice]\npassword_hash = \"plaintextLeakPw-123456\"\n",
        )
        .unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(
            said.contains("warden hash-password") && !said.contains("LeakPw"),
            "{said}"
        );
        let hash = crate::auth::hash_password("a long enough password").unwrap();
        std::fs::write(&p, format!("[users.alice]\npassword_hash = {hash:?}\n")).unwrap();
        Config::load(&p).unwrap();
        // Costs argon2 refuses, cheaper than Warden's own, or dear enough to exhaust it.
        let salt_and_hash = hash.split('$').skip(4).collect::<Vec<_>>().join("$");
        for (cost, said) in [
            ("m=1,t=1,p=1", "not valid argon2"),
            ("m=4096,t=1,p=1", "outside"),
            ("m=4194304,t=3,p=1", "outside"),
        ] {
            let weak = format!("$argon2id$v=19${cost}${salt_and_hash}");
            std::fs::write(&p, format!("[users.alice]\npassword_hash = {weak:?}\n")).unwrap();
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains(said), "{cost}: {e}");
        }
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        std::fs::write(&p, format!("[users.alice]\npassword_hash = {bcrypt:?}\n")).unwrap();
        assert!(
            Config::load(&p)
                .unwrap_err()
                .to_string()
                .contains("warden hash-password")
        );
        for days in ["36501", "4294967295"] {
            std::fs::write(&p, format!("audit_retention_days = {days}\n")).unwrap();
            let said = Config::load(&p).unwrap_err().to_string();
            assert!(said.contains("must be 0 to 36500 days"), "{said}");
        }
        std::fs::write(&p, "audit_retention_days = 365\n").unwrap();
        assert_eq!(Config::load(&p).unwrap().audit_retention_days, Some(365));
    }

    #[test]
    fn durations_and_addresses_are_explained_as_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        for (line, says) in [
            (
                "checkpoint_interval = \"0s\"",
                "the value must be longer than zero",
            ),
            ("expiry_warning = \"365d\"", "the value 365d is above"),
            (
                "listen = \"localhost:8443\"",
                "host names are not looked up",
            ),
        ] {
            std::fs::write(&p, format!("{line}\n")).unwrap();
            let said = Config::load(&p).unwrap_err().to_string();
            assert!(
                said.contains(says) && !said.contains("TTL"),
                "{line}: {said}"
            );
        }
    }

    /// `public_url` is refused, at its line and never quoted back, when its links would carry a
    /// user name or password, or be broken by a query or fragment.
    #[test]
    fn a_public_url_with_credentials_a_query_or_a_fragment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        for (url, says) in [
            (
                "https://admin:PUBURLSECRET@warden.example.com",
                "holds a user name or password",
            ),
            (
                "https://PUBURLSECRET@warden.example.com/path",
                "holds a user name or password",
            ),
            (
                "https://warden.example.com/?token=PUBURLSECRET",
                "has a query or fragment",
            ),
            (
                "https://warden.example.com#PUBURLSECRET",
                "has a query or fragment",
            ),
            (
                "ftp://PUBURLSECRET.example.com",
                "must start with http:// or https://",
            ),
            ("https://:PUBURLSECRET", "has no host"),
            (
                "https://warden.example.com/PUBURL SECRET",
                "holds a space or control character",
            ),
        ] {
            std::fs::write(&p, format!("token_ttl = \"8h\"\npublic_url = {url:?}\n")).unwrap();
            let said = Config::load(&p).unwrap_err().to_string();
            assert!(
                said.contains(&format!("line 2, column 14: `public_url` {says}"))
                    && said.contains("e.g. public_url = \"https://warden.example.com\""),
                "{url}: {said}"
            );
            assert!(!said.contains("PUBURL"), "{url}: {said}");
        }
        for url in [
            "https://warden.example.com",
            "HTTP://warden.example.com:8443/",
            "https://example.com/warden",
            "http://[::1]:8443",
        ] {
            std::fs::write(&p, format!("public_url = {url:?}\n")).unwrap();
            assert_eq!(Config::load(&p).unwrap().public_url.as_deref(), Some(url));
        }
        std::fs::write(&p, "token_ttl = \"8h\"\n").unwrap();
        assert_eq!(Config::load(&p).unwrap().public_url, None);
    }

    #[test]
    fn the_example_config_is_one() {
        let example: Config = toml::from_str(EXAMPLE).unwrap();
        example.directory(&[]).unwrap();
        assert_eq!(example.audit_retention_days, Some(400));
    }

    #[test]
    fn a_key_set_twice_or_a_value_of_the_wrong_kind_is_named_with_how_to_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        for (text, says) in [
            (
                "listen = \"127.0.0.1:1\"\n\nlisten = \"127.0.0.1:2\"\n",
                "line 3, column 1: `listen` is set twice: keep one",
            ),
            (
                "[users.alice]\ngroups = []\n[users.alice]\n",
                "line 3, column 8: [users.alice] is declared twice: keep one",
            ),
            (
                "[users.alice]\nmanager = \"bob\"\nmanager = \"carl\"\n",
                "`manager` is set twice in [users.alice]: keep one",
            ),
            (
                "audit_retention_days = -1\n",
                "line 1, column 24: `audit_retention_days` takes a whole number of 0 or more here, e.g. audit_retention_days = 400",
            ),
            (
                "token_ttl = 5\n",
                "`token_ttl` takes a quoted string here, e.g. token_ttl = \"8h\"",
            ),
            (
                "trusted_proxies = \"127.0.0.1\"\n",
                "`trusted_proxies` takes a list in square brackets here, e.g. trusted_proxies = [\"127.0.0.1\"]",
            ),
            (
                "[users.alice]\ngroups = \"dev\"\n",
                "`groups` takes a list in square brackets here, e.g. groups = [\"dev\"]",
            ),
            (
                "users.alice.manager = 7\n",
                "`users.alice.manager` takes a quoted string here, e.g. manager = \"mallory\"",
            ),
            // A value on a line of its own is not said to be a setting's.
            (
                "trusted_proxies = [\n  1,\n]\n",
                "line 2, column 3: a quoted string goes here",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let said = Config::load(&p).unwrap_err().to_string();
            assert!(said.contains(says), "{text}: {said}");
            assert!(!said.contains("expected"), "{text}: {said}");
        }
        // The value given is never said back: it may be a secret written in the wrong place.
        std::fs::write(&p, "audit_retention_days = \"hunter2-secret\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(!said.contains("hunter2"), "{said}");
    }

    #[test]
    fn rejects_unknown_fields_and_managers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "listn = \"127.0.0.1:1\"\n").unwrap();
        assert!(
            Config::load(&p)
                .unwrap_err()
                .to_string()
                .contains("unknown field `listn`")
        );
        // Below a table, a top-level setting is that table's: the error says so.
        std::fs::write(&p, "[users.alice]\n\npublic_url = \"https://w.example\"\n").unwrap();
        let said = Config::load(&p).unwrap_err().to_string();
        assert!(
            said.contains("unknown field `public_url`")
                && said.contains("read as part of [users.alice]"),
            "{said}"
        );
        std::fs::write(&p, "[users.alice]\nmanager = \"ghost\"\n").unwrap();
        assert!(Config::load(&p).unwrap_err().to_string().contains("ghost"));
        std::fs::write(&p, "[users.alice]\ngroups = [\"dev\"]\n").unwrap();
        let c = Config::load(&p).unwrap();
        let d = c.directory(&[]).unwrap();
        let (admin, admins) = ("admin".parse().unwrap(), "admins".parse().unwrap());
        assert!(d.get(&admin).unwrap().in_group(&admins));
        // Even declared in other groups, the bootstrap admin administers while no one else
        // does; once the config names administrators, it has what the config gives it.
        std::fs::write(&p, "[users.admin]\ngroups = [\"dev\"]\n").unwrap();
        let d = Config::load(&p).unwrap().directory(&[]).unwrap();
        assert!(d.get(&admin).unwrap().in_group(&admins));
        // One who cannot sign in yet (no initial password) is no replacement.
        std::fs::write(&p, "[users.carol]\ngroups = [\"admins\"]\n").unwrap();
        let d = Config::load(&p).unwrap().directory(&[]).unwrap();
        assert!(d.get(&admin).unwrap().in_group(&admins));
        let carol = format!(
            "[users.carol]\ngroups = [\"admins\"]\npassword_hash = \"{}\"\n",
            crate::auth::hash_password("carol's first password").unwrap()
        );
        std::fs::write(&p, format!("{carol}[users.admin]\ngroups = [\"dev\"]\n")).unwrap();
        let d = Config::load(&p).unwrap().directory(&[]).unwrap();
        assert!(!d.get(&admin).unwrap().in_group(&admins));
        std::fs::write(&p, &carol).unwrap();
        let d = Config::load(&p).unwrap().directory(&[]).unwrap();
        assert!(d.get(&admin).is_none());
        // Nor is one offboarded since (their stored password is disabled, whatever the config
        // says): the bootstrap admin stays, so that someone can still administer.
        let d = Config::load(&p)
            .unwrap()
            .directory(&["carol".parse().unwrap()])
            .unwrap();
        assert!(d.get(&admin).unwrap().in_group(&admins));
    }
}
