//! The `[[sinks]]` tables of the configuration file: where the audit log is exported to.
//!
//! Sinks are configured only here, never through the API, so that whoever can call the API
//! cannot redirect or silence the export. Every sink is checked when the file is read: a typo
//! stops start-up with a message naming the sink, instead of quietly exporting nowhere.
//!
//! ```toml
//! [[sinks]]
//! name = "siem-file"        # unique; the sink's cursor is stored under this name
//! kind = "file"
//! path = "/var/log/warden/audit.jsonl"
//! max_bytes = 104857600     # then audit.jsonl becomes audit.jsonl.1, … (default 100 MiB)
//! keep = 10                 # rotated files kept (default 10)
//!
//! [[sinks]]
//! name = "siem-syslog"
//! kind = "syslog"
//! address = "127.0.0.1:6514"
//! transport = "tcp"         # or "udp" (default "tcp")
//! app_name = "warden"       # RFC 5424 APP-NAME (default "warden")
//!
//! [[sinks]]
//! name = "siem-webhook"
//! kind = "webhook"
//! url = "https://siem.example.com/ingest"
//! batch = 100               # events per POST (default 100)
//! header = { "Authorization" = { env = "WARDEN_SIEM_AUTHORIZATION" } }   # or "Bearer …" inline
//! ca_file = "/etc/warden/siem-ca.pem"   # trust only this CA (default: the system's roots)
//! ```
//!
//! A sink's cursor is stored under its name: renaming a sink exports the whole log to it
//! again.
//!
//! What could only fail at every batch is refused at start too: a file sink's `path` that is a
//! directory, or the file (or one of the rotated files) of another file sink, and a syslog
//! `address` with port 0.
//!
//! A webhook `header` usually holds a credential. Given inline, it makes the configuration file
//! a secret, readable only by Warden's user; given as `{ file = "…" }` or `{ env = "…" }` (see
//! [`crate::config_secret`]), it is read from there when the configuration is. Header values
//! never appear in logs, the status or error messages.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config_secret::ConfigSecret;

/// Largest webhook batch; bigger POSTs gain nothing and risk receivers' body limits.
const MAX_BATCH: usize = 10_000;

/// One export destination: a `[[sinks]]` table, its `kind` saying which.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    File(FileConfig),
    Syslog(SyslogConfig),
    Webhook(WebhookConfig),
}

/// JSON lines appended to a local file, rotated by size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: String,
    pub path: PathBuf,
    /// The file is rotated before it would grow past this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How many rotated files (`PATH.1` … `PATH.keep`) are kept; older ones are deleted.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

/// RFC 5424 messages to a syslog receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub name: String,
    /// `host:port` of the receiver.
    pub address: String,
    #[serde(default)]
    pub transport: Transport,
    /// The RFC 5424 APP-NAME.
    #[serde(default = "default_app_name")]
    pub app_name: String,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 6587 octet-counted frames over one TCP connection.
    #[default]
    Tcp,
    /// One message per datagram (RFC 5426). Nothing acknowledges a datagram, so a receiver
    /// that is down loses what was sent meanwhile: prefer TCP for an audit trail.
    Udp,
}

/// Batches of records POSTed as JSON to an HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// `https://` (or `http://` to a receiver on a trusted network).
    pub url: String,
    /// Events per POST.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Extra request headers, typically a credential.
    #[serde(default)]
    pub header: Headers,
    /// PEM file of the only CA certificates trusted for an `https://` receiver, for a private
    /// CA; without it, the system's trusted roots.
    pub ca_file: Option<PathBuf>,
}

/// Webhook headers. Their values are usually secrets, so `Debug` shows only the names, an error
/// names the header and never its value, and each may be given as `{ file = "…" }` or
/// `{ env = "…" }` (see [`ConfigSecret`]).
#[derive(Clone, Default)]
pub struct Headers(pub BTreeMap<String, ConfigSecret>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read whole first, so that no value of any shape reaches an error message.
        let toml::Value::Table(table) = toml::Value::deserialize(d)? else {
            // One value, which is likely the credential itself: refused without it.
            return Err(de::Error::custom(
                r#"write it as a table of header names and values, e.g. { "Authorization" = { env = "VARIABLE" } }"#,
            ));
        };
        let mut headers = BTreeMap::new();
        for (name, value) in table {
            let value = ConfigSecret::deserialize(value)
                .map_err(|e| de::Error::custom(format!("`{name}`: {}", e.message())))?;
            headers.insert(name, value);
        }
        Ok(Headers(headers))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> u32 {
    10
}
fn default_app_name() -> String {
    "warden".to_owned()
}
fn default_batch() -> usize {
    100
}

impl SinkConfig {
    /// The sink's unique name, under which its cursor is stored.
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::File(c) => &c.name,
            SinkConfig::Syslog(c) => &c.name,
            SinkConfig::Webhook(c) => &c.name,
        }
    }

    /// `file`, `syslog` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Syslog(_) => "syslog",
            SinkConfig::Webhook(_) => "webhook",
        }
    }

    /// Where the sink delivers, safe to show: a webhook URL loses its credentials and query.
    pub fn destination(&self) -> String {
        match self {
            SinkConfig::File(c) => c.path.display().to_string(),
            SinkConfig::Syslog(c) => {
                let t = match c.transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                };
                format!("{t}://{}", c.address)
            }
            SinkConfig::Webhook(c) => match reqwest::Url::parse(&c.url) {
                Ok(u) => shown_url(&u),
                Err(_) => String::new(),
            },
        }
    }

    /// Why this sink cannot work, if it cannot.
    fn check(&self) -> Result<(), String> {
        check_name(self.name())?;
        match self {
            SinkConfig::File(c) => {
                if c.path.as_os_str().is_empty() {
                    return Err("`path` is empty".into());
                }
                // Opening a directory to append to fails at every batch, for good.
                if c.path.is_dir() {
                    return Err(format!(
                        "`path` {} is a directory: give the path of a file in it, e.g. {}",
                        c.path.display(),
                        c.path.join("audit.jsonl").display()
                    ));
                }
                // The file is made at the first export, its directory never: a typo would
                // otherwise only show as an export failing for good.
                let dir = c.path.parent().filter(|d| !d.as_os_str().is_empty());
                if let Some(dir) = dir.filter(|d| !d.is_dir()) {
                    return Err(format!(
                        "`path`'s directory {} is not there: create it, writable by the server's user, or correct the path",
                        dir.display()
                    ));
                }
                if c.max_bytes == 0 {
                    return Err("`max_bytes` must be at least 1".into());
                }
                if c.keep == 0 {
                    return Err("`keep` must be at least 1 (rotated files to keep)".into());
                }
            }
            SinkConfig::Syslog(c) => {
                check_address(&c.address)?;
                let printable = c.app_name.bytes().all(|b| (33..=126).contains(&b));
                if c.app_name.is_empty() || c.app_name.len() > 48 || !printable {
                    return Err(format!(
                        "`app_name` {:?} must be 1 to 48 printable ASCII characters without spaces (RFC 5424)",
                        c.app_name
                    ));
                }
            }
            SinkConfig::Webhook(c) => {
                crate::webhook::check(&c.url, &c.header, c.ca_file.as_deref())?;
                if c.batch == 0 || c.batch > MAX_BATCH {
                    return Err(format!(
                        "`batch` must be between 1 and {MAX_BATCH}, not {}",
                        c.batch
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A URL as messages, the status and the audit log show it: its scheme, host and port only.
/// User name, password and query may be credentials, and so may the path (a Slack or Teams
/// incoming webhook's path is its secret), so a path is shown as `/…`.
pub fn shown_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if url.path() == "/" { "/" } else { "/…" };
    format!("{}://{host}{port}{path}", url.scheme())
}

/// Checks a sink name: it keys stored state, so it is short and plain.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`name` {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Accepts `ip:port`, `[ipv6]:port` and `hostname:port`, the port not 0 (no receiver listens
/// there: every batch would fail); a host name is resolved at each connection, so a receiver
/// may move.
fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("`address` {address:?} must be host:port, e.g. \"127.0.0.1:6514\"");
    if let Ok(at) = address.parse::<SocketAddr>() {
        return match at.port() {
            0 => Err(format!(
                "`address` {address:?} has port 0, where no receiver listens: give the receiver's port, e.g. \"{}\"",
                SocketAddr::new(at.ip(), 6514)
            )),
            _ => Ok(()),
        };
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A kind of configured sink (`[[sinks]]`, `[[notify]]`), as [`read_sinks`] reads a list of
/// them.
pub trait SinkTable: Sized {
    /// How an error names one sink, e.g. `notify sink`, before its number and name.
    const CALLED: &'static str;
    /// The kinds there are, as an error lists them, e.g. `"webhook" or "smtp"`.
    const KINDS: &'static str;
    /// The sink of `kind` that `fields` configure, unchecked; `None` if there is no such kind.
    fn read(kind: &str, fields: Fields) -> Option<Result<Self, String>>;
    /// The sink's unique name.
    fn name(&self) -> &str;
    /// Why this sink cannot work, if it cannot.
    fn check(&self) -> Result<(), String>;
    /// Why this sink cannot work beside `other`, a sink configured before it that is called
    /// `called` (e.g. `sink 1 ("a")`), if it cannot: both would write one file, say.
    fn clash(&self, _other: &Self, _called: &str) -> Option<String> {
        None
    }
}

impl SinkTable for SinkConfig {
    const CALLED: &'static str = "sink";
    const KINDS: &'static str = r#""file", "syslog" or "webhook""#;

    fn read(kind: &str, fields: Fields) -> Option<Result<Self, String>> {
        Some(match kind {
            "file" => fields.read().map(SinkConfig::File),
            "syslog" => fields.read().map(SinkConfig::Syslog),
            "webhook" => fields.read().map(SinkConfig::Webhook),
            _ => return None,
        })
    }

    fn name(&self) -> &str {
        SinkConfig::name(self)
    }

    fn check(&self) -> Result<(), String> {
        SinkConfig::check(self)
    }

    /// Two file sinks writing one file, or one rotating its file onto the other's, would mix
    /// and overwrite each other's records, and their rollback marks (the last record) would
    /// contradict each other.
    fn clash(&self, other: &Self, called: &str) -> Option<String> {
        let (SinkConfig::File(me), SinkConfig::File(them)) = (self, other) else {
            return None;
        };
        let (mine, theirs) = (file_key(&me.path), file_key(&them.path));
        let fix = "give each file sink a path of its own";
        if mine == theirs {
            return Some(format!(
                "`path` {} is the file of {called} too: {fix}",
                me.path.display()
            ));
        }
        if let Some(n) = rotated_as(&theirs, them.keep, &mine) {
            return Some(format!(
                "`path` {} is where {called} rotates its file {} to (as its number {n}; it keeps {}): {fix}",
                me.path.display(),
                them.path.display(),
                them.keep
            ));
        }
        if let Some(n) = rotated_as(&mine, me.keep, &theirs) {
            return Some(format!(
                "this sink would rotate its file {} to {}, the file of {called} (as its number {n}; `keep` is {}): {fix}",
                me.path.display(),
                them.path.display(),
                me.keep
            ));
        }
        None
    }
}

/// The file `path` names, as far as it can be told before the file exists: the path with its
/// directory's links resolved (the directory exists: [`SinkConfig::check`]), and the file's
/// own link too when it exists.
fn file_key(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_owned(),
    }
}

/// Which of the rotated files of `file` that a sink keeping `keep` of them makes (`FILE.1` …
/// `FILE.keep`) is `other`, if one is.
fn rotated_as(file: &Path, keep: u32, other: &Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    if file.parent() != other.parent() {
        return None;
    }
    let name = file.file_name()?.as_bytes();
    let suffix = other.file_name()?.as_bytes().strip_prefix(name)?;
    let n: u32 = std::str::from_utf8(suffix.strip_prefix(b".")?)
        .ok()?
        .parse()
        .ok()?;
    ((1..=keep).contains(&n) && format!(".{n}").as_bytes() == suffix).then_some(n)
}

/// Deserializes the `sinks` list; see [`read_sinks`]. Names are unique since a name identifies
/// a sink's stored cursor.
pub fn sinks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SinkConfig>, D::Error> {
    read_sinks(d)
}

/// Deserializes a list of sinks, each read and checked on its own as it comes, so that an
/// error names the sink (its number and name) and the field, never a value, and the parser
/// places it at that sink's table; no two may share a name.
pub fn read_sinks<'de, D: Deserializer<'de>, T: SinkTable>(d: D) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(SinkList(PhantomData))
}

/// Reads a list of sinks' tables in order.
struct SinkList<T>(PhantomData<T>);

impl<'de, T: SinkTable> Visitor<'de> for SinkList<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of {}s", T::CALLED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut sinks = Vec::new();
        while let Some(sink) = seq.next_element_seed(OneSink { before: &sinks })? {
            sinks.push(sink);
        }
        Ok(sinks)
    }
}

/// One sink's table, after the sinks `before` it. It is read whole, then made a sink: an error
/// made then is the table's, which the parser places at its `[[…]]` line.
struct OneSink<'a, T> {
    before: &'a [T],
}

impl<'de, T: SinkTable> DeserializeSeed<'de> for OneSink<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: SinkTable> Visitor<'de> for OneSink<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} table", T::CALLED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut table = toml::Table::new();
        while let Some((key, value)) = map.next_entry::<String, toml::Value>()? {
            table.insert(key, value);
        }
        let number = self.before.len() + 1;
        let which = match table.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("{} {number} ({name:?})", T::CALLED),
            None => format!("{} {number}", T::CALLED),
        };
        self.sink(table)
            .map_err(|m| de::Error::custom(format!("{which}: {m}")))
    }
}

impl<T: SinkTable> OneSink<'_, T> {
    /// The sink `table` configures, checked.
    fn sink(&self, mut table: toml::Table) -> Result<T, String> {
        let kind = table.remove("kind");
        let sink = match &kind {
            Some(toml::Value::String(k)) => T::read(k, Fields::new(table)),
            Some(_) => None,
            None => return Err(format!("missing field `kind`: {}", T::KINDS)),
        };
        let Some(sink) = sink else {
            let kind = kind.map(|k| k.to_string()).unwrap_or_default();
            return Err(format!("`kind` {kind} is not {}", T::KINDS));
        };
        let sink = sink?;
        sink.check()?;
        if self.before.iter().any(|s| s.name() == sink.name()) {
            return Err("the name is used by another sink; names must be unique".into());
        }
        for (n, other) in self.before.iter().enumerate() {
            let called = format!("{} {} ({:?})", T::CALLED, n + 1, other.name());
            if let Some(why) = sink.clash(other, &called) {
                return Err(why);
            }
        }
        Ok(sink)
    }
}

/// A sink's fields, as its kind's struct reads them: an error in one names the field.
pub struct Fields {
    entries: toml::map::IntoIter<String, toml::Value>,
    value: Option<(String, toml::Value)>,
}

impl Fields {
    fn new(table: toml::Table) -> Self {
        Self {
            entries: table.into_iter(),
            value: None,
        }
    }

    /// The fields read as a `T`, e.g. one kind's settings.
    pub fn read<T: for<'de> Deserialize<'de>>(self) -> Result<T, String> {
        T::deserialize(MapAccessDeserializer::new(self)).map_err(|e| e.message().to_owned())
    }
}

/// Shows nothing of the fields, some of which are secrets.
impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fields").finish_non_exhaustive()
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = toml::de::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let read = seed.deserialize(key.clone().into_deserializer())?;
        self.value = Some((key, value));
        Ok(Some(read))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(value)
            .map_err(|e| de::Error::custom(format!("`{key}`: {}", e.message())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default, deserialize_with = "sinks")]
        sinks: Vec<SinkConfig>,
    }

    fn parse(text: &str) -> Result<Vec<SinkConfig>, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.sinks)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_kind_with_defaults() {
        let sinks = parse(
            r#"
            [[sinks]]
            name = "f"
            kind = "file"
            path = "/tmp/a.jsonl"
            [[sinks]]
            name = "s"
            kind = "syslog"
            address = "localhost:514"
            transport = "udp"
            [[sinks]]
            name = "w"
            kind = "webhook"
            url = "http://u:pw@127.0.0.1:9/in?key=k"
            header = { "Authorization" = "Bearer secret" }
            "#,
        )
        .unwrap();
        let SinkConfig::File(f) = &sinks[0] else {
            panic!()
        };
        assert_eq!((f.max_bytes, f.keep), (100 * 1024 * 1024, 10));
        let SinkConfig::Syslog(s) = &sinks[1] else {
            panic!()
        };
        assert_eq!(
            (s.transport, s.app_name.as_str()),
            (Transport::Udp, "warden")
        );
        let SinkConfig::Webhook(w) = &sinks[2] else {
            panic!()
        };
        assert_eq!(w.batch, 100);
        assert_eq!(sinks[2].destination(), "http://127.0.0.1:9/…");
        let debug = format!("{sinks:?}");
        assert!(
            debug.contains("Authorization") && !debug.contains("secret"),
            "{debug}"
        );
    }

    #[test]
    fn refuses_bad_sinks_with_clear_messages() {
        let cases = [
            (
                "kind = \"file\"\nname = \"a\"\npath = \"\"",
                "`path` is empty",
            ),
            (
                "kind = \"file\"\nname = \"a\"\npath = \"/nonexistent/dir/a.jsonl\"",
                "`path`'s directory /nonexistent/dir is not there",
            ),
            (
                "kind = \"file\"\nname = \"a\"\npath = \"/x\"\nmax_bytes = 0",
                "max_bytes",
            ),
            (
                "kind = \"file\"\nname = \"a\"\npath = \"/x\"\nsize = 3",
                "unknown field `size`",
            ),
            (
                "kind = \"syslog\"\nname = \"a\"\naddress = \"nowhere\"",
                "must be host:port",
            ),
            (
                "kind = \"syslog\"\nname = \"a\"\naddress = \"h:0\"",
                "must be host:port",
            ),
            (
                "kind = \"syslog\"\nname = \"a\"\naddress = \"h:1\"\ntransport = \"tls\"",
                "tls",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"http://h/\"\nbatch = 0",
                "`batch`",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"ftp://h/\"",
                "use https://",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"http://h/\"\nca_file = \"/etc/hostname\"",
                "`ca_file` is only for an https:// `url`",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"https://h/\"\nca_file = \"/nonexistent/ca.pem\"",
                "cannot read `ca_file` /nonexistent/ca.pem",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"https://h/\"\nca_file = \"/etc/hostname\"",
                "`ca_file` /etc/hostname holds no PEM certificate",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"not a url\"",
                "not a valid URL",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"http://h/\"\nheader = { \"X\" = \"a\\nb\" }",
                "not valid in HTTP",
            ),
            ("kind = \"pigeon\"\nname = \"a\"", "pigeon"),
            ("kind = \"file\"\nname = \"a b\"\npath = \"/x\"", "`name`"),
        ];
        for (body, expected) in cases {
            let err = parse(&format!("[[sinks]]\n{body}\n")).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let dup = "[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"/x\"\n\
                   [[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"/y\"\n";
        assert!(parse(dup).unwrap_err().contains("names must be unique"));
    }

    /// Mistakes that would only show as a sink failing at every batch, for good, are refused
    /// when the file is read, placed at the sink's `[[sinks]]` line like every sink error.
    #[test]
    fn sinks_that_could_never_deliver_are_refused_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let first = format!("[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"{d}/a.jsonl\"\n\n");
        let cases = [
            (
                "kind = \"syslog\"\naddress = \"127.0.0.1:0\"".to_owned(),
                r#"sink 2 ("b"): `address` "127.0.0.1:0" has port 0, where no receiver listens: give the receiver's port, e.g. "127.0.0.1:6514""#.to_owned(),
            ),
            (
                "kind = \"syslog\"\naddress = \"[::1]:0\"".to_owned(),
                r#"sink 2 ("b"): `address` "[::1]:0" has port 0"#.to_owned(),
            ),
            (
                format!("kind = \"file\"\npath = \"{d}\""),
                format!("sink 2 (\"b\"): `path` {d} is a directory: give the path of a file in it, e.g. {d}/audit.jsonl"),
            ),
            (
                format!("kind = \"file\"\npath = \"{d}/a.jsonl\""),
                format!("sink 2 (\"b\"): `path` {d}/a.jsonl is the file of sink 1 (\"a\") too: give each file sink a path of its own"),
            ),
            // The same file by another spelling.
            (
                format!("kind = \"file\"\npath = \"{d}/./a.jsonl\""),
                format!("sink 2 (\"b\"): `path` {d}/./a.jsonl is the file of sink 1 (\"a\") too"),
            ),
            (
                format!("kind = \"file\"\npath = \"{d}/a.jsonl.3\""),
                format!("sink 2 (\"b\"): `path` {d}/a.jsonl.3 is where sink 1 (\"a\") rotates its file {d}/a.jsonl to (as its number 3; it keeps 10)"),
            ),
        ];
        let cases = cases
            .into_iter()
            .map(|(body, expected)| (first.clone(), body, expected));
        // The other way round: the later sink's rotated files would overwrite the earlier's.
        let before =
            format!("[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"{d}/c.log.2\"\n\n");
        let rotating = (
            before,
            format!("kind = \"file\"\npath = \"{d}/c.log\"\nkeep = 2"),
            format!(
                "sink 2 (\"b\"): this sink would rotate its file {d}/c.log to {d}/c.log.2, the file of sink 1 (\"a\") (as its number 2; `keep` is 2): give each file sink a path of its own"
            ),
        );
        for (first, body, expected) in cases.chain([rotating]) {
            let text = format!("{first}[[sinks]]\nname = \"b\"\n{body}\n");
            let e = toml::from_str::<Doc>(&text).unwrap_err();
            let message = e.message();
            assert!(message.starts_with(&expected), "{message}");
            let at = e.span().expect("an error placed in the file").start;
            assert_eq!(text[..at].matches('\n').count() + 1, 6, "{message}");
        }
        // Files that are not each other's pass: another name, a rotated number past `keep`,
        // or one that is no rotation's (`.01`).
        for path in ["b.jsonl", "a.jsonl.11", "a.jsonl.01", "a.jsonl.x"] {
            let text =
                format!("{first}[[sinks]]\nname = \"b\"\nkind = \"file\"\npath = \"{d}/{path}\"\n");
            assert!(toml::from_str::<Doc>(&text).is_ok(), "{path}");
        }
    }

    /// A header value of the wrong type, likely the credential itself, is refused naming the
    /// sink, `header` and the header, never the value, and placed at the sink's `[[sinks]]`.
    #[test]
    fn a_bad_header_names_its_sink_and_header_and_never_the_value() {
        let first = "[[sinks]]\nname = \"f\"\nkind = \"file\"\npath = \"/x\"\n\n";
        let webhook = "[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n\
                       url = \"https://siem.example.com/x\"\n";
        let cases = [
            (
                r#"header = { "Authorization" = 987654321987 }"#,
                r#"sink 2 ("w"): `header`: `Authorization`: a secret is text"#,
            ),
            (
                r#"header = { "Authorization" = ["SECRETHDR"] }"#,
                r#"sink 2 ("w"): `header`: `Authorization`: invalid type: sequence"#,
            ),
            (
                r#"header = "Bearer SECRETHDR""#,
                r#"sink 2 ("w"): `header`: write it as a table of header names and values"#,
            ),
        ];
        for (header, expected) in cases {
            let text = format!("{first}{webhook}{header}\n");
            let e = toml::from_str::<Doc>(&text).unwrap_err();
            let message = e.message();
            assert!(message.starts_with(expected), "{message}");
            assert!(
                !message.contains("987654321987") && !message.contains("SECRETHDR"),
                "{message}"
            );
            let at = e.span().expect("an error placed in the file").start;
            assert_eq!(text[..at].matches('\n').count() + 1, 6, "{message}");
        }
    }
}
