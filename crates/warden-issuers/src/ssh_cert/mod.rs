//! OpenSSH user certificates signed by Warden's user CA.
//!
//! A grant for an `ssh` role signs the requester's public key with the CA: its principals are
//! the role's accounts scoped to the target, `TARGET:ACCOUNT`, the validity window is the grant's, the key id is the grant's id and the serial is
//! derived from it, so sshd's log lines lead back to the request. The SSH proxy's own
//! certificates for the grant's sessions are told apart from it in sshd's log and in a key
//! revocation list: their key id is the grant's id followed by [`PROXY_KEY_ID_SUFFIX`], and
//! their serial is the grant's with its top bit flipped ([`proxy_serial`]). The revocation list
//! of a grant names both key ids ([`krl`]). sshd checks validity at
//! login, so an expired certificate opens no new session; closing sessions that are already
//! open is the SSH proxy's job. Revoking is a no-op that reports
//! [`RevokeResponse::AlreadyGone`]: the certificate dies on its own at `valid_before`.
//!
//! A grant whose sessions policy records (`@recording` `sampled` or `full`, break-glass
//! included) or whose role has controls the proxy enforces gets a certificate for Warden's SSH
//! proxy only: its one principal, `warden-proxy:USER`, can be no Unix account (`:` cannot be in a
//! user name), so sshd refuses it at every target. Only the proxy's own certificates, minted
//! per session and never shown to anyone, carry the role's principals then.
//!
//! A bare account name would log in at every host that trusts the CA and has that account,
//! whatever that host's own target demands (approval, recording). Scoped, a certificate logs in
//! only where the host names its target: each host's sshd has
//! `AuthorizedPrincipalsCommand /bin/echo TARGET:%u` (and `AuthorizedPrincipalsCommandUser
//! nobody`), so it takes `TARGET:U` and nothing else for local user `U`.
//!
//! Role settings:
//! ```toml
//! principals = ["root"]                       # required: the Unix users the certificate may log in as
//! extensions = ["permit-pty", "permit-agent-forwarding"]   # optional; default ["permit-pty"]
//! # Critical options, enforced by the host's sshd (optional):
//! source_address = ["10.0.0.0/8", "192.0.2.7"] # where the user may sign in from (addresses, CIDRs)
//! force_command = "/usr/local/bin/run-report"  # the one command sessions run, whatever is asked
//! # Controls the SSH proxy enforces (a role with any of them is reached through the proxy only):
//! deny_commands = ["^rm -rf", "shutdown"]     # regexes; matching exec requests and shell lines are blocked
//! file_transfer = false                       # scp/sftp through the proxy; default true
//! record_input = true                         # record keystrokes too; default false
//! ```
//!
//! Target connection (optional: where Warden's SSH proxy reaches the host, and where the ssh
//! command printed for a grant points):
//! ```toml
//! host = "10.0.0.7"
//! port = 22                                   # default 22
//! host_key = "ssh-ed25519 AAAA..."            # the host's public key, pinned
//! ```
//! `warden target pin-host-key TARGET` fetches the key and stores it after the fingerprint
//! was confirmed, instead of `host_key`.
//!
//! # Critical options and the SSH proxy
//!
//! `source_address` (the `source-address` critical option) says where the *user* may be:
//! it is written in every certificate handed to the user (one for the host, and one for the
//! proxy alone), and never in the certificates the proxy signs for itself to log in upstream.
//! Those come from the proxy's own address (127.0.0.1 when it runs beside the host), which no
//! user's list need name: written there, the option would either break every proxied session or
//! make administrators add the proxy's address, which lets in anyone who reaches the proxy. The
//! proxy enforces the role's list itself instead, against the address the user's connection
//! comes from, for every session it opens (whatever the user signed in with: the proxy's SSH
//! library does not read critical options). So a role's `source_address` holds wherever the
//! user connects, and a security team's list never has to name Warden's own address.
//!
//! `force_command` (the `force-command` critical option) says what *runs at the target*: it
//! is written in every certificate, the proxy's upstream ones included, so the host's sshd runs
//! that command and nothing else however the session is reached. The proxy still checks what
//! the user asked for against the role's controls (`deny_commands`, `file_transfer`), and the
//! forced command against its deny rules, and records the session as usual; events and
//! recordings name that command as `forced_command`.

mod ca;
#[cfg(test)]
mod key_tests;
pub mod krl;

use async_trait::async_trait;
use ssh_key::PublicKey;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::{EcdsaPublicKey, KeyData};
use warden_domain::net::AddressBlock;

pub use ca::{CaError, UserCa};
use warden_domain::Recording;

use crate::settings::{Problems, SettingProblem, string_list};
use crate::{
    Error, Holder, IssueRequest, IssueResponse, Issuer, RevokeRequest, RevokeResponse, Settings,
};

/// Extensions OpenSSH understands on user certificates.
const KNOWN_EXTENSIONS: [&str; 5] = [
    "permit-pty",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-user-rc",
];

/// Longest `force_command` accepted, in bytes: a command, not a script.
const MAX_FORCE_COMMAND: usize = 4096;

/// What follows the grant's id in the key id of the SSH proxy's own certificates for it, so
/// that sshd's log and a revocation list tell them from the certificate handed to the user.
pub const PROXY_KEY_ID_SUFFIX: &str = ":proxy";

/// The key id of the SSH proxy's own certificates for `grant` (the user's is the grant's id).
pub fn proxy_key_id(grant: &str) -> String {
    format!("{grant}{PROXY_KEY_ID_SUFFIX}")
}

/// The serial of a certificate handed to the user for `grant`: the low 64 bits of its id,
/// random in a UUIDv7 (unique enough for KRLs) and always with the top two bits `10`, the UUID
/// variant.
pub fn user_serial(grant: warden_domain::RequestId) -> u64 {
    grant.as_u128() as u64
}

/// The serial of the SSH proxy's own certificates for `grant`: the user's with its top bit
/// flipped. It is never the user's, nor (the variant bits differing) any grant's user serial.
pub fn proxy_serial(grant: warden_domain::RequestId) -> u64 {
    user_serial(grant) ^ (1 << 63)
}

/// Most principals a certificate may name: OpenSSH refuses a certificate with more
/// (`SSHKEY_CERT_MAX_PRINCIPALS`), so a role with more is refused when the policy is checked.
const MAX_PRINCIPALS: usize = 256;

/// The most entries a role's `source_address` may list. Each is written into every
/// certificate, and OpenSSH drops a login whose certificate passes its packet limit (about
/// 7000 IPv6 addresses did; 1000 still logged in): a bound well inside it, as for principals.
const MAX_SOURCE_ADDRESSES: usize = 256;

/// Clock skew tolerated between Warden and targets: certificates are valid from this long
/// before the grant starts, and a revoked one stays in the revocation list this long after its
/// end. Their end is never moved.
pub const SKEW_SECS: i64 = 30;

/// Signs user certificates with Warden's SSH user CA.
#[derive(Debug)]
pub struct SshCertIssuer {
    ca: UserCa,
}

/// A role's settings as the SSH proxy needs them.
#[derive(Debug, Clone)]
pub struct RoleSettings {
    pub principals: Vec<String>,
    pub extensions: Vec<String>,
    /// Regular expressions (checked at load time).
    pub deny_commands: Vec<String>,
    pub file_transfer: bool,
    pub record_input: bool,
    /// Where the user may use a grant from (`source-address`); `None`: anywhere.
    pub source_address: Option<Vec<AddressBlock>>,
    /// The one command a session runs at the target (`force-command`); `None`: as asked.
    pub force_command: Option<String>,
}

impl RoleSettings {
    /// Whether the role has controls only the SSH proxy can enforce.
    pub fn controls_sessions(&self) -> bool {
        !self.deny_commands.is_empty() || !self.file_transfer || self.record_input
    }
}

/// The one principal of a certificate that logs in to Warden's SSH proxy only.
fn proxy_principal(user: &warden_domain::UserName) -> String {
    format!("{}:{user}", warden_domain::names::PROXY_SCOPE)
}

/// Where an ssh target's sshd listens, from its `connection` table.
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    /// The pinned host key, if configured in the policy.
    pub host_key: Option<PublicKey>,
}

/// The role settings of an ssh role.
pub fn role_settings(s: &Settings) -> Result<RoleSettings, Error> {
    parse_settings(s)
}

/// The connection of an ssh target; `None` when it has none (not reachable through the proxy).
pub fn connection(c: &Settings) -> Result<Option<Connection>, Error> {
    let mut problems = Problems::default();
    let read = read_connection(c, &mut problems);
    problems.or_first(read)
}

/// Reads an ssh target's connection, noting every problem in `problems`; `None` when it has
/// none, or has a problem.
fn read_connection(c: &Settings, problems: &mut Problems) -> Option<Connection> {
    for k in c
        .keys()
        .filter(|k| !matches!(k.as_str(), "host" | "port" | "host_key"))
    {
        problems.add(
            Some(k),
            format!(
                "unknown connection setting `{k}` for an ssh target; known: host, port, host_key"
            ),
        );
    }
    let host = match c.get("host") {
        None if c.is_empty() => None,
        None => {
            problems.add(
                None,
                "an ssh target's connection needs `host` (port and host_key are optional)".into(),
            );
            None
        }
        Some(host) => problems.check(
            "host",
            host.as_str()
                .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
                .map(str::to_owned)
                .ok_or_else(|| Error::Settings("`host` must be a host name or address".into())),
        ),
    };
    let port = match c.get("port") {
        None => Ok(22),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Settings("`port` must be a number from 1 to 65535".into())),
    };
    let port = problems.check("port", port);
    let host_key = match c.get("host_key") {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|t| PublicKey::from_openssh(t.trim()).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::Settings(
                    "`host_key` must be an OpenSSH public key line, e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub".into(),
                )
            }),
    };
    let host_key = problems.check("host_key", host_key);
    Some(Connection {
        host: host?,
        port: port?,
        host_key: host_key?,
    })
}

/// The settings an ssh role may have.
const ROLE_KEYS: [&str; 7] = [
    "principals",
    "extensions",
    "deny_commands",
    "file_transfer",
    "record_input",
    "source_address",
    "force_command",
];

fn parse_settings(s: &Settings) -> Result<RoleSettings, Error> {
    let mut problems = Problems::default();
    let read = read_settings(s, &mut problems);
    problems.or_first(read)
}

/// Reads a role's settings, noting every problem in `problems` (what could not be read takes
/// its default meanwhile).
fn read_settings(s: &Settings, problems: &mut Problems) -> RoleSettings {
    for k in s.keys().filter(|k| !ROLE_KEYS.contains(&k.as_str())) {
        problems.add(
            Some(k),
            format!(
                "unknown setting `{k}` for an ssh role; known: {}",
                ROLE_KEYS.join(", ")
            ),
        );
    }
    let deny_commands = problems
        .check("deny_commands", strings(s, "deny_commands"))
        .flatten()
        .unwrap_or_default();
    for p in &deny_commands {
        if let Err(e) = regex::Regex::new(p) {
            problems.add(
                Some("deny_commands"),
                format!(
                    "deny_commands pattern {p:?} is not a valid regular expression: {}",
                    warden_domain::decision::regex_mistake(&e)
                ),
            );
        }
    }
    let principals = match problems.check("principals", strings(s, "principals")) {
        Some(Some(p)) if !p.is_empty() => p,
        Some(_) => {
            problems.add(
                s.contains_key("principals").then_some("principals"),
                "an ssh role needs `principals = [\"user\", ...]`".into(),
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let principals = first_of_each(principals);
    if principals.len() > MAX_PRINCIPALS {
        problems.add(
            Some("principals"),
            format!(
                "the role lists {} principals, but OpenSSH refuses a certificate naming more than {MAX_PRINCIPALS}, so no grant of such a role could log in: split its accounts between roles of at most {MAX_PRINCIPALS} each",
                principals.len()
            ),
        );
    }
    for p in principals.iter().filter(|p| {
        p.is_empty()
            || p.len() > 64
            || p.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':')
    }) {
        problems.add(
            Some("principals"),
            format!(
                "principal {p:?} is not a valid login name (a Unix account: no spaces, control characters, ',' or ':')"
            ),
        );
    }
    let extensions = problems
        .check("extensions", strings(s, "extensions"))
        .flatten()
        .unwrap_or_else(|| vec!["permit-pty".to_owned()]);
    for e in extensions
        .iter()
        .filter(|e| !KNOWN_EXTENSIONS.contains(&e.as_str()))
    {
        problems.add(
            Some("extensions"),
            format!(
                "unknown certificate extension {e:?}; known: {}",
                KNOWN_EXTENSIONS.join(", ")
            ),
        );
    }
    for e in listed_again(&extensions) {
        problems.add(
            Some("extensions"),
            format!(
                "certificate extension {e:?} is listed more than once; list it once (a certificate holds each extension once)"
            ),
        );
    }
    RoleSettings {
        principals,
        extensions,
        deny_commands,
        file_transfer: problems
            .check("file_transfer", flag(s, "file_transfer", true))
            .unwrap_or(true),
        record_input: problems
            .check("record_input", flag(s, "record_input", false))
            .unwrap_or(false),
        source_address: read_source_address(s, problems),
        force_command: read_force_command(s, problems),
    }
}

/// The role's `source_address`, noting each problem: a list of one or more IPv4 or IPv6
/// addresses or networks (CIDR), as sshd reads a certificate's `source-address`. An empty list
/// is refused rather than read as "anywhere" or "nowhere": neither is what writing it says.
fn read_source_address(s: &Settings, problems: &mut Problems) -> Option<Vec<AddressBlock>> {
    let listed = problems
        .check("source_address", strings(s, "source_address"))
        .flatten()?;
    if listed.is_empty() {
        problems.add(
            Some("source_address"),
            "`source_address` is empty: list the addresses or networks grants may be used from (e.g. [\"10.0.0.0/8\", \"192.0.2.7\"]), or leave the setting out to allow any".into(),
        );
        return None;
    }
    if listed.len() > MAX_SOURCE_ADDRESSES {
        problems.add(
            Some("source_address"),
            format!(
                "`source_address` lists {} entries, but a certificate holding that many is too large for OpenSSH to carry through a login: list at most {MAX_SOURCE_ADDRESSES}, joining hosts into networks (e.g. 10.0.0.0/8)",
                listed.len()
            ),
        );
        return None;
    }
    let mut blocks = Vec::new();
    let mut unread = false;
    for entry in &listed {
        match entry.parse::<AddressBlock>() {
            Ok(b) if !blocks.contains(&b) => blocks.push(b),
            // Listed twice lets in no more: dropped, as a repeated principal is.
            Ok(_) => {}
            Err(e) => {
                unread = true;
                problems.add(Some("source_address"), format!("source_address entry {e}"));
            }
        }
    }
    (!unread).then_some(blocks)
}

/// The critical options of a certificate held by `holder` for a role with `settings`, by name
/// (see the module's doc: the proxy's own certificates carry no `source-address`).
fn critical_options(settings: &RoleSettings, holder: Holder) -> Vec<(&'static str, String)> {
    let mut options = Vec::new();
    if let Some(command) = &settings.force_command {
        options.push(("force-command", command.clone()));
    }
    if let (Some(blocks), Holder::Requester(_)) = (&settings.source_address, holder) {
        let list: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        options.push(("source-address", list.join(",")));
    }
    options
}

/// The role's `force_command`, noting each problem: one line of visible text, at most
/// [`MAX_FORCE_COMMAND`] bytes.
fn read_force_command(s: &Settings, problems: &mut Problems) -> Option<String> {
    let command = match s.get("force_command")? {
        serde_json::Value::String(c) => c,
        _ => {
            problems.add(
                Some("force_command"),
                "`force_command` must be a string: the command sessions of this role run, e.g. \"/usr/local/bin/report\"".into(),
            );
            return None;
        }
    };
    let problem = if !command.chars().any(warden_domain::text::visible) {
        Some("`force_command` is empty: give the command sessions of this role run, or leave the setting out".to_owned())
    } else if command.len() > MAX_FORCE_COMMAND {
        Some(format!(
            "`force_command` is {} bytes long, more than the {MAX_FORCE_COMMAND} allowed: put the commands in a script on the host and force that",
            command.len()
        ))
    } else {
        command
            .char_indices()
            .find(|(_, c)| warden_domain::text::hidden(*c))
            .map(|(at, c)| {
                format!(
                    "`force_command` holds {} (U+{:04X}) at byte {at}: it must be one line of visible text; put multi-line commands in a script on the host",
                    warden_domain::text::hidden_kind(c),
                    u32::from(c)
                )
            })
    };
    match problem {
        Some(p) => {
            problems.add(Some("force_command"), p);
            None
        }
        None => Some(command.clone()),
    }
}

/// `items` in the order first listed, each once. A principal listed twice logs in as nothing
/// more than once, so the repeat is dropped rather than refused: a role that loaded before
/// still loads, and its certificates and `logins` name each account once.
fn first_of_each(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// Each item of `items` listed after an equal one, once per value, in the order first
/// repeated. A repeated extension is refused, not dropped: no certificate can hold one twice,
/// so such a role would fail every grant, and `policy check` says so at its line instead.
fn listed_again(items: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    let mut again = Vec::new();
    for i in items {
        if !seen.insert(i) && !again.contains(&i) {
            again.push(i);
        }
    }
    again
}

/// Setting `key` of `s` as a list of strings, if present.
fn strings(s: &Settings, key: &str) -> Result<Option<Vec<String>>, Error> {
    string_list(s, key, &format!("`{key}`"))
}

/// Setting `key` of `s` as true or false, `default` when absent.
fn flag(s: &Settings, key: &str, default: bool) -> Result<bool, Error> {
    match s.get(key) {
        None => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::Settings(format!("`{key}` must be true or false"))),
    }
}

/// Every problem with an ssh target's connection (optional: only the proxy needs it).
pub fn check_connection(connection: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_connection(connection, &mut problems);
    problems.into_vec()
}

/// Every problem with an ssh role's settings.
pub fn check_role(settings: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_settings(settings, &mut problems);
    problems.into_vec()
}

fn parse_public_key(text: Option<&str>, ca: &UserCa) -> Result<PublicKey, Error> {
    let text = text.ok_or_else(|| {
        Error::Input("an ssh role needs your public key (OpenSSH format, e.g. the contents of ~/.ssh/id_ed25519.pub)".into())
    })?;
    let key = user_key(text).map_err(Error::Input)?;
    if key.fingerprint(ssh_key::HashAlg::Sha256).to_string() == ca.fingerprint() {
        return Err(Error::Input(
            "that is Warden's own user CA key, not yours: send the public key of your key pair"
                .into(),
        ));
    }
    Ok(key)
}

/// Whether `holder`'s certificate logs in to Warden's SSH proxy only: a requester's whose
/// sessions are recorded, or controlled by the role's settings, which only the proxy does.
fn proxy_only(settings: &RoleSettings, holder: Holder) -> bool {
    match holder {
        Holder::Proxy => false,
        Holder::Requester(recording) => {
            recording != Recording::Metadata || settings.controls_sessions()
        }
    }
}

/// Refuses a key the proxy does not sign users in with, for a certificate that logs in there
/// only: the proxy takes Ed25519 and ECDSA keys, and a certificate for any other would be a
/// grant that works nowhere.
fn check_proxy_key(key: &PublicKey, proxy_only: bool) -> Result<(), Error> {
    if proxy_only && matches!(key.algorithm(), ssh_key::Algorithm::Rsa { .. }) {
        return Err(Error::Input(
            "this role is reached through Warden's SSH proxy, which signs users in with Ed25519 and ECDSA keys, not RSA: request it with an Ed25519 key (ssh-keygen -t ed25519), or without --public-key".into(),
        ));
    }
    Ok(())
}

/// The key a request was made with. [`user_key`] judged it when the request was made and
/// again as it is granted (`check_request`, which every request passes before it is stored, and
/// the broker runs once more before the issue, so that a key stored before a stricter check is
/// refused): it is read here, not judged a third time.
fn request_key(text: Option<&str>) -> Result<PublicKey, Error> {
    text.and_then(|t| PublicKey::from_openssh(t.trim()).ok())
        .ok_or_else(|| Error::Internal("the request holds no OpenSSH public key".into()))
}

/// The length in bits of the big-endian number `n` (the key's own size counts whole bytes).
fn modulus_bits(n: &[u8]) -> u32 {
    let n = n.iter().position(|b| *b != 0).map_or(&[][..], |i| &n[i..]);
    match n.first() {
        Some(top) => u32::try_from(n.len() * 8).unwrap_or(u32::MAX) - top.leading_zeros(),
        None => 0,
    }
}

/// Shortest RSA modulus accepted, as NIST and OpenSSH's own `ssh-keygen` default have it.
const RSA_MIN_BITS: u32 = 2048;

/// Longest RSA modulus accepted: OpenSSH reads no longer key (`SSH_RSA_MAXIMUM_MODULUS_SIZE`),
/// so a certificate for one would be a grant that works nowhere.
const RSA_MAX_BITS: u32 = 16384;

/// A user's OpenSSH public key line, for a certificate or the SSH proxy: nothing hidden in it,
/// no key too weak to stand for a person (RSA under 2048 bits, DSA), and none OpenSSH cannot
/// read (RSA over 16384 bits, an ECDSA point compressed or off its curve, a security key's
/// included); nor a security key whose application string OpenSSH's ssh-keygen would not make.
pub fn user_key(text: &str) -> Result<PublicKey, String> {
    let line = warden_domain::text::key_line(text)?;
    let key = PublicKey::from_openssh(line).map_err(|_| {
        if line.split_whitespace().next().is_some_and(|t| t.contains("-cert-v01@openssh.com")) {
            "that is a certificate, not a public key: pass the key's own .pub file (e.g. ~/.ssh/id_ed25519.pub, not id_ed25519-cert.pub)".to_owned()
        } else {
            "not an OpenSSH public key line (e.g. the contents of ~/.ssh/id_ed25519.pub)".to_owned()
        }
    })?;
    if let Some(rsa) = key.key_data().rsa() {
        let bits = modulus_bits(rsa.n().as_positive_bytes().unwrap_or_default());
        if bits < RSA_MIN_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; at least {RSA_MIN_BITS} are needed (an Ed25519 key is better: ssh-keygen -t ed25519)"
            ));
        }
        if bits > RSA_MAX_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; OpenSSH reads RSA keys of at most {RSA_MAX_BITS}, so no host would take its certificate: use a smaller key (ssh-keygen -t rsa -b 4096) or, better, an Ed25519 key (ssh-keygen -t ed25519)"
            ));
        }
        // An exponent of 1 makes every signature forgeable, an even one is no RSA key at all;
        // ssh-keygen makes 65537.
        let e = rsa.e().as_positive_bytes().unwrap_or_default();
        let small = (e.len() <= 8).then(|| e.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)));
        if small.is_some_and(|e| e < 3) || e.last().is_none_or(|b| b % 2 == 0) {
            return Err(
                "the RSA key's public exponent is unusable (ssh-keygen makes 65537; an Ed25519 key is better: ssh-keygen -t ed25519)".into(),
            );
        }
    }
    // A point of small order (the all-zero key, the identity) is no key pair's: OpenSSH accepts
    // signatures made without any private key for it, so its certificate would be a bearer
    // credential for whoever holds the certificate.
    let ed25519 = match key.key_data() {
        KeyData::Ed25519(k) => Some(k.0),
        KeyData::SkEd25519(k) => Some(k.public_key().0),
        _ => None,
    };
    if let Some(bytes) = ed25519
        && ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .is_none_or(|k| k.is_weak())
    {
        return Err(
            "the Ed25519 key is not a point any key pair has (all zero, or of small order): send the public key ssh-keygen made with your private key".into(),
        );
    }
    let ecdsa = match key.key_data() {
        KeyData::Ecdsa(k) => Some(*k),
        KeyData::SkEcdsaSha2NistP256(k) => Some(EcdsaPublicKey::NistP256(*k.ec_point())),
        _ => None,
    };
    if let Some(problem) = ecdsa.as_ref().and_then(ecdsa_problem) {
        return Err(problem.into());
    }
    let application = match key.key_data() {
        KeyData::SkEd25519(k) => Some(k.application()),
        KeyData::SkEcdsaSha2NistP256(k) => Some(k.application()),
        _ => None,
    };
    if let Some(problem) = application.and_then(application_problem) {
        return Err(problem);
    }
    // A type ssh-key parses without knowing it (`NAME@DOMAIN`), such as no OpenSSH reads.
    if key.key_data().other().is_some() {
        return Err(
            "that key type is not one OpenSSH reads: send an Ed25519 key (ssh-keygen -t ed25519), or an ECDSA, RSA or security-key (ed25519-sk, ecdsa-sk) one".into(),
        );
    }
    if key.key_data().dsa().is_some() {
        return Err("DSA keys are too weak; use an Ed25519 key (ssh-keygen -t ed25519)".into());
    }
    Ok(key)
}

/// What keeps OpenSSH from reading an ECDSA public key (plain or a security key's), if any: a
/// certificate for it would be refused by every sshd, a grant that works nowhere. OpenSSH reads
/// uncompressed points only, and of those only a point of its curve (not the identity) whose
/// coordinates both have more bits than half the group order's and are below the order less
/// one (`sshkey_ec_validate_public`): every key pair ssh-keygen makes has such a point.
fn ecdsa_problem(key: &EcdsaPublicKey) -> Option<&'static str> {
    let (on_curve, in_range): (bool, fn(&[u8]) -> bool) = match key {
        EcdsaPublicKey::NistP256(_) => (
            p256::ecdsa::VerifyingKey::try_from(key).is_ok(),
            coordinates_in_range::<p256::Scalar>,
        ),
        EcdsaPublicKey::NistP384(_) => (
            p384::ecdsa::VerifyingKey::try_from(key).is_ok(),
            coordinates_in_range::<p384::Scalar>,
        ),
        EcdsaPublicKey::NistP521(_) => (
            p521::ecdsa::VerifyingKey::try_from(key).is_ok(),
            coordinates_in_range::<p521::Scalar>,
        ),
    };
    match key.as_sec1_bytes().split_first() {
        Some((2 | 3, _)) => Some(
            "the ECDSA key's point is compressed, which OpenSSH does not read: send the public key line as ssh-keygen writes it (ssh-keygen -y -f YOUR_PRIVATE_KEY prints it)",
        ),
        Some((4, xy)) if on_curve && in_range(xy) => None,
        Some((4, _)) if on_curve => Some(
            "the ECDSA key is a point OpenSSH refuses (a coordinate too small, or not below the curve's order), which no key pair ssh-keygen makes has: send the public key ssh-keygen made with your private key",
        ),
        _ => Some(
            "the ECDSA key is not a point of its curve: send the public key ssh-keygen made with your private key",
        ),
    }
}

/// Whether both coordinates of `xy`, an uncompressed point's (x then y, big-endian, each as wide
/// as the field's scalars `S`), are in the range OpenSSH takes: more bits than half the group
/// order's, and below the order less one. (The order is odd, so the order less one has as many
/// bits as the order.)
fn coordinates_in_range<S: p256::elliptic_curve::PrimeField>(xy: &[u8]) -> bool {
    let last = (-S::ONE).to_repr();
    let last = last.as_ref();
    let half = modulus_bits(last) / 2;
    xy.len() == 2 * last.len()
        && xy
            .chunks(last.len())
            // Of equal length, big-endian numbers order as their bytes do.
            .all(|c| modulus_bits(c) > half && c < last)
}

/// What is wrong with a security key's FIDO application string, if anything. OpenSSH reads any
/// string without a NUL byte, but ssh-keygen makes no key whose string does not begin `ssh:`
/// (it refuses `-O application=` otherwise), so one that does not was made for something else
/// (a web site's login) or forged, and is refused. So is a control or invisible character,
/// which could forge a log line or terminal output wherever the string is shown. The message
/// never quotes the string.
fn application_problem(application: &str) -> Option<String> {
    if let Some(c) = application
        .chars()
        .find(|c| warden_domain::text::hidden(*c))
    {
        return Some(format!(
            "the security key's application string holds {} (U+{:04X}), which no key ssh-keygen makes has: send the public key line ssh-keygen wrote for your security key (e.g. ~/.ssh/id_ed25519_sk.pub)",
            warden_domain::text::hidden_kind(c),
            u32::from(c)
        ));
    }
    if !application.starts_with("ssh:") {
        return Some(
            "the security key's application string does not begin with \"ssh:\", as every key ssh-keygen makes does (a key made for a web site's login is not an SSH key): make an SSH key on your security key with ssh-keygen -t ed25519-sk and send its .pub file".into(),
        );
    }
    None
}

impl SshCertIssuer {
    /// An issuer signing with `ca`.
    pub fn new(ca: UserCa) -> Self {
        Self { ca }
    }
}

fn unix(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// Warden records this kind's sessions: a recorded grant's certificate logs in to Warden's SSH
/// proxy only, which records every session ([`Issuer::records_sessions`]).
pub const RECORDS_SESSIONS: bool = true;

#[async_trait]
impl Issuer for SshCertIssuer {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn records_sessions(&self) -> bool {
        RECORDS_SESSIONS
    }

    fn check_request(
        &self,
        settings: &Settings,
        public_key: Option<&str>,
        holder: Holder,
    ) -> Result<(), Error> {
        let settings = parse_settings(settings)?;
        let key = parse_public_key(public_key, &self.ca)?;
        check_proxy_key(&key, proxy_only(&settings, holder))
    }

    async fn issue(&self, req: IssueRequest<'_>) -> Result<IssueResponse, Error> {
        let settings = parse_settings(req.settings)?;
        let key = request_key(req.public_key)?;
        let reach = connection(req.connection)?;
        let proxy_only = proxy_only(&settings, req.holder);
        check_proxy_key(&key, proxy_only)?;
        let (principals, extensions) = if proxy_only {
            (vec![proxy_principal(req.user)], Vec::new())
        } else {
            let scoped = settings
                .principals
                .iter()
                .map(|account| format!("{}:{account}", req.target))
                .collect();
            (scoped, settings.extensions.clone())
        };
        let valid_after = unix(req.valid_after - time::Duration::seconds(SKEW_SECS));
        let valid_before = unix(req.valid_before);
        let options = critical_options(&settings, req.holder);
        // The user's certificate and the proxy's own are told apart in sshd's log and a KRL.
        let (serial, key_id) = match req.holder {
            Holder::Requester(_) => (user_serial(req.grant), req.grant.to_string()),
            Holder::Proxy => (
                proxy_serial(req.grant),
                proxy_key_id(&req.grant.to_string()),
            ),
        };
        let mut rng = rand::rng();
        let mut build = || -> Result<_, ssh_key::Error> {
            let mut b = Builder::new_with_random_nonce(
                &mut rng,
                key.key_data().clone(),
                valid_after,
                valid_before,
            )?;
            b.serial(serial)?
                .cert_type(CertType::User)?
                .key_id(key_id.clone())?
                .comment(format!("warden grant {} for {}", req.grant, req.user))?;
            for p in &principals {
                b.valid_principal(p.clone())?;
            }
            for e in &extensions {
                b.extension(e.clone(), "")?;
            }
            for (name, value) in &options {
                b.critical_option(*name, value.clone())?;
            }
            Ok(b)
        };
        let builder = build().map_err(|e| Error::Internal(format!("building certificate: {e}")))?;
        let cert = self
            .ca
            .sign(builder)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut public = serde_json::json!({
            "kind": "ssh-certificate",
            "certificate": cert,
            "principals": principals,
            // The Unix accounts the grant reaches at the target, and whether only through
            // the proxy.
            "logins": settings.principals,
            "proxy_only": proxy_only,
            // In decimal text: a 64-bit number is more than JSON numbers hold exactly in
            // many clients (JavaScript's).
            "serial": serial.to_string(),
            "key_id": key_id,
            "ca_fingerprint": self.ca.fingerprint(),
            // The certified key, as sshd logs it at each login.
            "key_fingerprint": key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        });
        // What sshd enforces beyond the principals, for the grant's view and audit event.
        if !options.is_empty() {
            public["critical_options"] = options
                .iter()
                .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(value.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        // Where the certificate logs in, when the target names its host and the certificate
        // is for the host itself.
        if let Some(c) = reach.filter(|_| !proxy_only) {
            public["host"] = c.host.into();
            public["port"] = c.port.into();
        }
        Ok(IssueResponse {
            public,
            secret: None,
        })
    }

    async fn revoke(&self, _req: RevokeRequest<'_>) -> Result<RevokeResponse, Error> {
        Ok(RevokeResponse::AlreadyGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{Algorithm, Certificate, PrivateKey};
    use time::macros::datetime;
    use warden_domain::RequestId;

    fn settings(v: serde_json::Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn signs_a_certificate_sshd_would_accept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        let (ca, created) = UserCa::load_or_create(&path).unwrap();
        assert!(created);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = UserCa::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), ca.public_key());
        // A damaged key is said to be what it is, with the way out.
        let damaged = dir.path().join("damaged");
        for (text, said) in [
            ("", "it is empty"),
            (
                "garbage\n",
                "it does not begin -----BEGIN OPENSSH PRIVATE KEY-----",
            ),
        ] {
            std::fs::write(&damaged, text).unwrap();
            std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = UserCa::load_or_create(&damaged).unwrap_err().to_string();
            assert!(e.contains(said) && e.contains("backup"), "{e}");
        }

        let user_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let issuer = SshCertIssuer::new(ca.clone());
        let grant = RequestId::from_uuid(uuid::Uuid::from_u128(0xabc));
        let s = settings(serde_json::json!({"principals": ["root", "deploy"]}));
        let pk = user_key.public_key().to_openssh().unwrap();
        let out = issuer
            .issue(IssueRequest {
                grant,
                user: &"alice".parse().unwrap(),
                target: &"web".parse().unwrap(),
                role: &"admin".parse().unwrap(),
                connection: &Settings::new(),
                settings: &s,
                valid_after: datetime!(2026-01-01 10:00 UTC),
                valid_before: datetime!(2026-01-01 11:00 UTC),
                public_key: Some(&pk),
                account: None,
                password: None,
                admin: None,
                holder: Holder::Requester(Recording::Metadata),
            })
            .await
            .unwrap();
        assert!(out.secret.is_none());
        let text = out.public["certificate"].as_str().unwrap();
        let cert = Certificate::from_openssh(text).unwrap();
        // Scoped to the target: no other host's sshd takes them.
        assert_eq!(
            cert.valid_principals(),
            ["web:root".to_owned(), "web:deploy".to_owned()]
        );
        assert_eq!(out.public["logins"], serde_json::json!(["root", "deploy"]));
        assert_eq!(cert.key_id(), grant.to_string());
        assert_eq!(
            cert.valid_before(),
            datetime!(2026-01-01 11:00 UTC).unix_timestamp() as u64
        );
        let ca_fp = ssh_key::PublicKey::from_openssh(ca.public_key())
            .unwrap()
            .fingerprint(ssh_key::HashAlg::Sha256);
        cert.validate_at(
            datetime!(2026-01-01 10:30 UTC).unix_timestamp() as u64,
            [&ca_fp],
        )
        .unwrap();
        assert!(
            cert.validate_at(
                datetime!(2026-01-01 11:00 UTC).unix_timestamp() as u64,
                [&ca_fp]
            )
            .is_err()
        );
    }

    #[test]
    fn settings_are_checked() {
        let issuer_err =
            |v: serde_json::Value| parse_settings(&settings(v)).unwrap_err().to_string();
        assert!(issuer_err(serde_json::json!({})).contains("needs `principals"));
        assert!(issuer_err(serde_json::json!({"principals": []})).contains("needs `principals"));
        for bad in ["a b", "a:b", "ro\u{7}ot", "x\u{0}y"] {
            assert!(
                issuer_err(serde_json::json!({"principals": [bad]})).contains("not a valid login"),
                "{bad:?}"
            );
        }
        assert!(
            issuer_err(serde_json::json!({"principals": ["a"], "x": 1}))
                .contains("unknown setting `x`")
        );
        assert!(
            issuer_err(serde_json::json!({"principals": ["a"], "extensions": ["permit-foo"]}))
                .contains("unknown certificate extension")
        );
        // The parser's drawing of the pattern is left out: one line says what is wrong.
        let bad_pattern =
            issuer_err(serde_json::json!({"principals": ["a"], "deny_commands": ["(unclosed"]}));
        assert!(
            bad_pattern.ends_with(
                "deny_commands pattern \"(unclosed\" is not a valid regular expression: unclosed group"
            ),
            "{bad_pattern}"
        );
        assert!(
            issuer_err(serde_json::json!({"principals": ["a"], "file_transfer": "no"}))
                .contains("true or false")
        );
        let r = role_settings(&settings(serde_json::json!({
            "principals": ["a"], "deny_commands": ["^rm"], "file_transfer": false, "record_input": true
        })))
        .unwrap();
        assert_eq!(r.deny_commands, ["^rm"]);
        assert!(!r.file_transfer && r.record_input);
    }

    #[test]
    fn connections_are_checked() {
        let conn = |v: serde_json::Value| connection(&settings(v));
        assert!(conn(serde_json::json!({})).unwrap().is_none());
        let c = conn(serde_json::json!({"host": "127.0.0.1", "port": 2200}))
            .unwrap()
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 2200));
        assert!(c.host_key.is_none());
        let err = |v| conn(v).unwrap_err().to_string();
        assert!(err(serde_json::json!({"port": 22})).contains("needs `host`"));
        assert!(err(serde_json::json!({"host": "h", "port": 0})).contains("`port`"));
        assert!(err(serde_json::json!({"host": "h", "host_key": "nope"})).contains("host_key"));
        assert!(err(serde_json::json!({"host": "h", "user": "x"})).contains("unknown connection"));
        // Every problem at once, each with its setting.
        let problems = check_connection(&settings(
            serde_json::json!({"user": "x", "port": 0, "host_key": "nope"}),
        ));
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_deref()).collect();
        assert_eq!(
            keys,
            [Some("user"), None, Some("port"), Some("host_key")],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("needs `host`"), "{problems:?}");
    }

    #[tokio::test]
    async fn a_proxy_only_grant_takes_no_rsa_key() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = UserCa::load_or_create(&dir.path().join("ca")).unwrap();
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCvnmQQGEABpj0lcnePikew8P4+p07WOBHbveLfr33ztpxndjxPf2xDFOp3X+nHNvjuLL+DT096PObqA/u4Mfthbo3NWQIF1BiNINWr2JmMlckkrPCCyuGv1v920rCogIq694CXfPWBwIbJZ84yZkMWzLeynqgn0EKL/KEl+tAcoVvsj+ODbS7YjW+z0WcV8vbeL+R9XiTmDUzHSD6FX+L+XPqLbtHKpk4VgH9dpTO6Iil5rFCIFebGNoLMPxyfoUsYkbXTxvWFitMel1q/hrLjCW2njug8cdtwBhYkVnLOvgw68VsPiKGcughRVWi3sD4gDuisAilAb6DhsAu7+0W/";
        let issuer = SshCertIssuer::new(ca);
        // Refused when the request is made, before it is stored or a code spent on it.
        let role = settings(serde_json::json!({"principals": ["root"]}));
        let made = issuer.check_request(&role, Some(rsa), Holder::Requester(Recording::Full));
        assert!(made.unwrap_err().to_string().contains("not RSA"));
        assert!(
            issuer
                .check_request(&role, Some(rsa), Holder::Requester(Recording::Metadata))
                .is_ok()
        );
        let out = issuer
            .issue(IssueRequest {
                grant: RequestId::from_uuid(uuid::Uuid::from_u128(0xabd)),
                user: &"alice".parse().unwrap(),
                target: &"web".parse().unwrap(),
                role: &"admin".parse().unwrap(),
                connection: &Settings::new(),
                settings: &settings(serde_json::json!({"principals": ["root"]})),
                valid_after: datetime!(2026-01-01 10:00 UTC),
                valid_before: datetime!(2026-01-01 11:00 UTC),
                public_key: Some(rsa),
                account: None,
                password: None,
                admin: None,
                holder: Holder::Requester(Recording::Full),
            })
            .await;
        let why = out.unwrap_err();
        assert!(why.left_target_untouched());
        assert!(why.to_string().contains("not RSA"), "{why}");
    }

    #[test]
    fn weak_user_keys_are_refused() {
        let weak = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDNm0SALAjUA6Hc+hTSCls69q2hZSznWSoX+pzlQ0nsJRy7JDmLlqNFmDtm36bdDPVmJTqVCoPhBDTz87yhuMTwz/yNfwx143DwhmJq9BigqhyxehiwE371QV4xW6KkEqn0WJqa9VciBji2TYtFeKHDlSUOl4oHJS8SQeqzwohegQ== weak";
        let why = user_key(weak).unwrap_err();
        assert!(why.contains("1024 bits"), "{why}");
        // Counted in bits, not whole bytes.
        let odd = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAAF2j4NXAuVbn/c38ogcJN9W4MyFPfV6N4B0rTGwAWFWrCQ6konWzUM5YTqwDYsoeAdS2kcyfiI+ZRZX9V0xYxxZZhHWYx28ewjX1HOQF+AZCRamGQ+GymLAuR1KT3eAXoNFSrd5ONnnsCfzQiI39kzVoc8pgA9hWc/m+K/DtB90PnTzUqbWMwHjCvc5FsZL1/Cde78YtfMJGIOeDlWqYTp09DkeDlYXIXaPUZlDD+H8esvT96fUIR1E2Rg2oPSMU9plloa/GlHrCYRIzwNSYS3CMwGQS1yOmwWxOD4e8gX4piFi75VHY3bE77GwXdMsXe8gXeJKRRqCuKkzJdBdXac= odd";
        let why = user_key(odd).unwrap_err();
        assert!(why.contains("2041 bits"), "{why}");
        // A 2048-bit modulus with exponent `e`.
        let with_e = |e: &[u8]| rsa_line(e, &[[0u8].as_slice(), &[0xC5; 256]].concat());
        for e in [&[1u8][..], &[1, 0, 0]] {
            let why = user_key(&with_e(e)).unwrap_err();
            assert!(why.contains("exponent"), "{why}");
        }
        assert!(user_key(&with_e(&[1, 0, 1])).is_ok());
        let good = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let line = good.public_key().to_openssh().unwrap();
        assert!(user_key(&format!("{line}\n")).is_ok());
        assert!(user_key("ssh-ed25519 notbase64").is_err());
        // Ed25519 keys that are no key pair's: all zero, the identity, a point of order 8.
        let ed25519 = |point: [u8; 32]| {
            use base64::Engine;
            let mut wire = Vec::new();
            for field in [&b"ssh-ed25519"[..], &point] {
                wire.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
                wire.extend_from_slice(field);
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
            format!("ssh-ed25519 {b64} degenerate")
        };
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut order8 = [0u8; 32];
        order8[..8].copy_from_slice(&[0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f]);
        order8[8..16].copy_from_slice(&[0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f]);
        order8[16..24].copy_from_slice(&[0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6]);
        order8[24..].copy_from_slice(&[0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a]);
        for point in [[0u8; 32], identity, order8] {
            let why = user_key(&ed25519(point)).unwrap_err();
            assert!(why.contains("small order"), "{why}");
        }
        let mut genuine = [0u8; 32];
        genuine.copy_from_slice(good.public_key().key_data().ed25519().unwrap().as_ref());
        assert!(user_key(&ed25519(genuine)).is_ok());
        // An ECDSA point off its curve is refused; a real key of each curve is taken.
        let off_curve = {
            use base64::Engine;
            let mut wire = Vec::new();
            let point = [[4u8].as_slice(), &[1; 32], &[2; 32]].concat();
            for field in [&b"ecdsa-sha2-nistp256"[..], b"nistp256", &point] {
                wire.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
                wire.extend_from_slice(field);
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
            format!("ecdsa-sha2-nistp256 {b64} off")
        };
        let why = user_key(&off_curve).unwrap_err();
        assert!(why.contains("not a point of its curve"), "{why}");
        for curve in [
            ssh_key::EcdsaCurve::NistP256,
            ssh_key::EcdsaCurve::NistP384,
            ssh_key::EcdsaCurve::NistP521,
        ] {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ecdsa { curve }).unwrap();
            assert!(
                user_key(&key.public_key().to_openssh().unwrap()).is_ok(),
                "{curve:?}"
            );
        }
    }

    /// An `ssh-rsa` key line with exponent `e` and modulus `n` (big-endian, as an mpint holds
    /// it), in the wire format.
    fn rsa_line(e: &[u8], n: &[u8]) -> String {
        use base64::Engine;
        let mut wire = Vec::new();
        for field in [&b"ssh-rsa"[..], e, n] {
            wire.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
            wire.extend_from_slice(field);
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
        format!("ssh-rsa {b64} e")
    }

    #[test]
    fn rsa_keys_longer_than_openssh_reads_are_refused() {
        let e = [1, 0, 1];
        // 16384 bits: the top bit of 2048 bytes, behind the sign byte.
        let longest = [[0u8].as_slice(), &[0xC5; 2048]].concat();
        assert!(user_key(&rsa_line(&e, &longest)).is_ok());
        let longer = [[1u8].as_slice(), &[0xC5; 2048]].concat();
        let why = user_key(&rsa_line(&e, &longer)).unwrap_err();
        assert!(
            why.contains("16385 bits") && why.contains("at most 16384"),
            "{why}"
        );
    }

    #[test]
    fn a_repeated_extension_is_refused_and_a_repeated_principal_dropped() {
        let role = settings(serde_json::json!({
            "principals": ["warden-viewer", "ops", "warden-viewer"],
            "extensions": ["permit-pty", "permit-agent-forwarding", "permit-pty", "permit-pty"],
        }));
        assert_eq!(
            check_role(&role),
            [SettingProblem {
                key: Some("extensions".into()),
                message: "certificate extension \"permit-pty\" is listed more than once; list it once (a certificate holds each extension once)".into(),
            }]
        );
        let role = settings(serde_json::json!({
            "principals": ["warden-viewer", "ops", "warden-viewer"],
            "extensions": ["permit-pty", "permit-agent-forwarding"],
        }));
        assert_eq!(
            role_settings(&role).unwrap().principals,
            ["warden-viewer", "ops"]
        );
    }

    #[test]
    fn critical_option_settings_are_checked_each_where_it_is() {
        let problems = |v: serde_json::Value| -> Vec<(Option<String>, String)> {
            check_role(&settings(v))
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect()
        };
        let with = |key: &str, value: serde_json::Value| {
            let mut role = serde_json::json!({"principals": ["root"]});
            role[key] = value;
            problems(role)
        };
        let one = |key: &str, value: serde_json::Value| {
            let found = with(key, value.clone());
            assert_eq!(found.len(), 1, "{value}: {found:?}");
            assert_eq!(found[0].0.as_deref(), Some(key), "{found:?}");
            found[0].1.clone()
        };
        // Good ones.
        for ok in [
            serde_json::json!(["127.0.0.1/32"]),
            serde_json::json!(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]),
        ] {
            assert!(with("source_address", ok.clone()).is_empty(), "{ok}");
        }
        assert!(with("force_command", "echo forced".into()).is_empty());
        // The setting and the entry named, with what to write instead.
        let empty = one("source_address", serde_json::json!([]));
        assert!(empty.contains("`source_address` is empty"), "{empty}");
        let not_list = one("source_address", "10.0.0.0/8".into());
        assert!(not_list.contains("must be a list of strings"), "{not_list}");
        let bad = one("source_address", serde_json::json!(["10.0.0.0/8", "web01"]));
        assert!(
            bad.starts_with("source_address entry \"web01\" is not an IPv4 or IPv6 address"),
            "{bad}"
        );
        let prefix = one("source_address", serde_json::json!(["10.0.0.0/40"]));
        assert!(
            prefix.contains("\"10.0.0.0/40\"") && prefix.contains("from 0 to 32"),
            "{prefix}"
        );
        let host_bits = one("source_address", serde_json::json!(["10.1.2.3/8"]));
        assert!(host_bits.contains("10.0.0.0/8"), "{host_bits}");
        // A list too long for a certificate OpenSSH carries through a login; the bound itself passes.
        let hosts = |n: u32| {
            serde_json::Value::from(
                (0..n)
                    .map(|i| {
                        std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).to_string()
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let many = one("source_address", hosts(MAX_SOURCE_ADDRESSES as u32 + 1));
        assert!(
            many.contains("lists 257 entries") && many.contains("at most 256"),
            "{many}"
        );
        assert!(with("source_address", hosts(MAX_SOURCE_ADDRESSES as u32)).is_empty());
        // Each bad entry is its own problem.
        assert_eq!(
            with(
                "source_address",
                serde_json::json!(["x", "10.0.0.0/8", "y"])
            )
            .len(),
            2
        );
        for (value, said) in [
            (serde_json::json!(""), "`force_command` is empty"),
            (serde_json::json!("   "), "`force_command` is empty"),
            (serde_json::json!(["echo"]), "must be a string"),
            (
                serde_json::json!("echo a\nrm -rf /"),
                "a control character (U+000A) at byte 6",
            ),
            (
                serde_json::json!("echo\u{202e}x"),
                "an invisible or text-reordering character",
            ),
            (
                serde_json::json!("x".repeat(MAX_FORCE_COMMAND + 1)),
                "4097 bytes long, more than the 4096 allowed",
            ),
        ] {
            let found = one("force_command", value.clone());
            assert!(found.contains(said), "{value}: {found}");
        }
        assert!(with("force_command", "x".repeat(MAX_FORCE_COMMAND).into()).is_empty());
        let read = role_settings(&settings(serde_json::json!({
            "principals": ["root"],
            "source_address": ["192.0.2.7", "10.0.0.0/8", "192.0.2.7/32"],
            "force_command": "echo forced",
        })))
        .unwrap();
        let listed: Vec<String> = read
            .source_address
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(listed, ["192.0.2.7/32", "10.0.0.0/8"]);
        assert_eq!(read.force_command.as_deref(), Some("echo forced"));
    }

    /// A certificate issued for `holder` of a grant of a role with `role`'s settings.
    async fn issued(
        ca: &UserCa,
        grant: RequestId,
        role: serde_json::Value,
        holder: Holder,
    ) -> (Certificate, serde_json::Value) {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let pk = key.public_key().to_openssh().unwrap();
        let out = SshCertIssuer::new(ca.clone())
            .issue(IssueRequest {
                grant,
                user: &"alice".parse().unwrap(),
                target: &"web".parse().unwrap(),
                role: &"admin".parse().unwrap(),
                connection: &Settings::new(),
                settings: &settings(role),
                valid_after: time::OffsetDateTime::now_utc(),
                valid_before: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                public_key: Some(&pk),
                account: None,
                password: None,
                admin: None,
                holder,
            })
            .await
            .unwrap();
        let text = out.public["certificate"].as_str().unwrap();
        (Certificate::from_openssh(text).unwrap(), out.public)
    }

    #[tokio::test]
    async fn critical_options_are_written_where_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = UserCa::load_or_create(&dir.path().join("ca")).unwrap();
        let grant = RequestId::from_uuid(uuid::Uuid::now_v7());
        let role = serde_json::json!({
            "principals": ["root"],
            "source_address": ["10.0.0.0/8", "192.0.2.7"],
            "force_command": "echo forced",
        });
        let options = |c: &Certificate| -> Vec<(String, String)> {
            c.critical_options()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let both = [
            ("force-command".to_owned(), "echo forced".to_owned()),
            (
                "source-address".to_owned(),
                "10.0.0.0/8,192.0.2.7/32".to_owned(),
            ),
        ];
        // Handed to the user, for the host or for the proxy alone: both options.
        for recording in [Recording::Metadata, Recording::Full] {
            let (cert, public) =
                issued(&ca, grant, role.clone(), Holder::Requester(recording)).await;
            assert_eq!(options(&cert), both, "{recording:?}");
            assert_eq!(
                public["critical_options"],
                serde_json::json!({"force-command": "echo forced", "source-address": "10.0.0.0/8,192.0.2.7/32"})
            );
        }
        // The proxy's own, which log in from the proxy's address: the command alone.
        let (cert, _) = issued(&ca, grant, role.clone(), Holder::Proxy).await;
        assert_eq!(options(&cert), both[..1]);
        // None set, none written, none shown.
        let (cert, public) = issued(
            &ca,
            grant,
            serde_json::json!({"principals": ["root"]}),
            Holder::Requester(Recording::Metadata),
        )
        .await;
        assert!(cert.critical_options().is_empty());
        assert!(public.get("critical_options").is_none(), "{public}");
    }

    #[tokio::test]
    async fn the_proxys_certificates_are_told_apart_and_revoked_with_the_grant() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = UserCa::load_or_create(&dir.path().join("ca")).unwrap();
        let grant = RequestId::from_uuid(uuid::Uuid::now_v7());
        let other = RequestId::from_uuid(uuid::Uuid::now_v7());
        let role = serde_json::json!({"principals": ["root"]});
        let (user, public) = issued(
            &ca,
            grant,
            role.clone(),
            Holder::Requester(Recording::Metadata),
        )
        .await;
        let (proxy, proxy_public) = issued(&ca, grant, role.clone(), Holder::Proxy).await;
        let (others, _) = issued(
            &ca,
            other,
            role.clone(),
            Holder::Requester(Recording::Metadata),
        )
        .await;
        assert_eq!(user.key_id(), grant.to_string());
        assert_eq!(proxy.key_id(), format!("{grant}:proxy"));
        assert_eq!(user.serial(), grant.as_u128() as u64);
        assert_ne!(proxy.serial(), user.serial());
        // Never any grant's user serial: those all carry the UUID variant in their top bits.
        assert_eq!(user.serial() >> 62, 0b10);
        assert_eq!(proxy.serial() >> 62, 0b00);
        assert_eq!(public["serial"], user.serial().to_string());
        assert_eq!(proxy_public["key_id"], proxy.key_id());
        assert_eq!(proxy_public["serial"], proxy.serial().to_string());
        // The revocation list of the grant revokes both, as OpenSSH reads it, and no other.
        let krl = dir.path().join("krl");
        std::fs::write(&krl, ca.revocation_list(&[grant.to_string()], 1).unwrap()).unwrap();
        let revoked = |cert: &Certificate| {
            let path = dir.path().join("c-cert.pub");
            std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
            let out = std::process::Command::new("ssh-keygen")
                .arg("-Q")
                .arg("-f")
                .arg(&krl)
                .arg(&path)
                .output()
                .expect("ssh-keygen (OpenSSH) is needed to read the revocation list");
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(said.contains("REVOKED") || said.contains(": ok"), "{out:?}");
            said.contains("REVOKED")
        };
        assert!(revoked(&user));
        assert!(revoked(&proxy));
        assert!(!revoked(&others));
    }

    #[test]
    fn a_certificate_given_for_a_public_key_is_named() {
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let user = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand::rng(),
            user.public_key(),
            0,
            u64::MAX,
        )
        .unwrap();
        builder.valid_principal("x").unwrap();
        let cert = builder.sign(&ca).unwrap();
        let why = user_key(&cert.to_openssh().unwrap()).unwrap_err();
        assert!(
            why.contains("that is a certificate, not a public key"),
            "{why}"
        );
    }
}
