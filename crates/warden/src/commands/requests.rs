//! `targets` and `request create|list|show|approve|deny|cancel|revoke|extend`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, Place, ensure_home, query, segment};
use crate::exit::{self, Failure};
use crate::output::{Output, fields, instant, joined, table};

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Request access to a role on a target.
    Create(CreateArgs),
    /// List requests you can see (yours, those you may review; all for administrators and
    /// audit readers).
    List {
        /// Only this state: pending, approved, active, expired, revoked, denied, cancelled, timed-out.
        /// A grant whose expiry has passed is expired, whether or not the server has recorded it
        /// yet.
        #[arg(long)]
        state: Option<String>,
        /// Only requests by this user.
        #[arg(long)]
        requester: Option<String>,
        /// Only pending requests waiting for your review: those whose tier names you (a
        /// member of its groups, the requester's manager) and still has a place your approval
        /// would fill.
        #[arg(long)]
        reviewable: bool,
        /// At most this many, newest first (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = super::requests_limit)]
        limit: usize,
        /// Only requests older than this one: the next page after a listing that ended there.
        #[arg(long, value_parser = super::request_id)]
        before: Option<String>,
    },
    /// Show one request.
    Show {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
    },
    /// Approve a pending request.
    Approve {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
        /// A note for the requester, audited.
        #[arg(long, default_value = "")]
        comment: String,
        /// A fresh TOTP code, when the role requires MFA.
        #[arg(long, value_parser = super::totp_code)]
        totp: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
        /// Why, shown to the requester and audited (optional, as in the API, but a requester
        /// told why can ask better next time).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Withdraw your pending request.
    Cancel {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
    },
    /// End an active grant now (or withdraw a pending request as one of its reviewers).
    Revoke {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
        /// Why, for the requester and the audit log.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Receive your grant's secret (database password), once; kept for `warden db connect`.
    Credential {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
    },
    /// Ask for more time on an active grant (a new, linked request).
    Extend {
        /// The request's id (as `request list` shows it).
        #[arg(value_parser = super::request_id)]
        id: String,
        /// How much longer, from when the extension is granted (e.g. 30m, 2h).
        #[arg(long)]
        ttl: String,
        /// Why (default: "extension of ID: " and the original request's reason).
        #[arg(long)]
        reason: Option<String>,
        /// A fresh TOTP code, when the role requires MFA.
        #[arg(long, value_parser = super::totp_code)]
        totp: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The target, e.g. prod-web-1.
    target: String,
    /// The role to request.
    #[arg(long)]
    role: String,
    /// Why you need access.
    #[arg(long)]
    reason: String,
    /// Ticket or incident id.
    #[arg(long)]
    ticket: Option<String>,
    /// How long, once granted: 30m, 1h, 1h30m.
    #[arg(long)]
    ttl: String,
    /// SSH public key to certify (default: a key Warden's client generates in WARDEN_HOME/ssh).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// A fresh TOTP code, for roles that require MFA step-up.
    #[arg(long, value_parser = super::totp_code)]
    totp: Option<String>,
    #[command(flatten)]
    wait: Wait,
}

/// Waiting for a request's decision, for `create` and `extend`.
#[derive(Debug, Args)]
pub struct Wait {
    /// Wait until the request is decided (approved, denied, timed out), through a restart of
    /// the server.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (e.g. 90s, 10m, 2h; bare seconds too): exit 1, the
    /// request still pending.
    #[arg(long, default_value = "1h", value_parser = wait_seconds, requires = "wait")]
    wait_timeout: u64,
}

/// `WARDEN_HOME/ssh`, where grants' keys and certificates are kept, created private to the
/// user if missing, and refused unless it is theirs alone.
pub(super) fn ssh_dir() -> anyhow::Result<PathBuf> {
    let dir = ensure_home()?.join("ssh");
    crate::client::private_dir(&dir, Place::Folder)?;
    Ok(dir)
}

/// Removes what `WARDEN_HOME/ssh` keeps for grants past their end: each certificate whose
/// validity is over, and each key that only such certificates certified (an extension certifies
/// its original's key, which stays while either lives; a link to the user's own key goes, never
/// the key it leads to). A key no certificate names yet, of a request still pending, stays.
pub(super) fn forget_expired_certificates() -> anyhow::Result<()> {
    let dir = ssh_dir()?;
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let fingerprint = |k: &ssh_key::public::KeyData| k.fingerprint(ssh_key::HashAlg::Sha256);
    let entries = || -> anyhow::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect())
    };
    let (mut live, mut ended) = (Vec::new(), Vec::new());
    for path in entries()? {
        if !path.to_string_lossy().ends_with("-cert.pub") {
            continue;
        }
        let Some(cert) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| ssh_key::Certificate::from_openssh(t.trim()).ok())
        else {
            continue;
        };
        if cert.valid_before() <= now {
            crate::client::remove_if_present(&path)?;
            ended.push(fingerprint(cert.public_key()));
        } else {
            live.push(fingerprint(cert.public_key()));
        }
    }
    if ended.is_empty() {
        return Ok(());
    }
    for path in entries()? {
        let key = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| ssh_key::PrivateKey::from_openssh(t).ok());
        if let Some(key) = key {
            let fp = fingerprint(key.public_key().key_data());
            if ended.contains(&fp) && !live.contains(&fp) {
                crate::client::remove_if_present(&path)?;
            }
        }
    }
    Ok(())
}

/// Whether request `v` ended without ever being granted: denied, cancelled, timed out, or
/// revoked or failed before its credential was issued.
pub(super) fn ended_ungranted(v: &Value) -> bool {
    !v["ended_at"].is_null() && v["activated_at"].is_null()
}

/// Removes what `WARDEN_HOME/ssh` keeps under the name of request `v` once no certificate can
/// come of it: it ended ungranted, or its grant holds another credential (a database account).
/// The private key generated for it, or the link to the user's own key or to the key of the
/// grant it extends (never the key a link leads to), would certify nothing. A request seen here
/// that is someone else's has nothing under its name.
pub(super) fn forget_unneeded_key(v: &Value) -> anyhow::Result<()> {
    let id = s(v, "id");
    let no_certificate =
        v.pointer("/credential/kind").is_some() && v.pointer("/credential/certificate").is_none();
    if !(ended_ungranted(v) || no_certificate) || !id_like(&id) {
        return Ok(());
    }
    crate::client::remove_if_present(&ssh_dir()?.join(id))
}

/// A fresh SSH key pair for one request, in `WARDEN_HOME/ssh`. The private key never leaves
/// this machine, and because every grant has its own key, revoking a grant early can list
/// exactly its key in sshd's `RevokedKeys` without cutting off other grants.
pub(super) fn new_client_key() -> anyhow::Result<(PathBuf, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = ssh_dir()?;
    let key = ssh_key::PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519)?;
    let public = key.public_key().to_openssh()?;
    let name = format!(
        "pending-{}",
        &key.public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()[7..19]
            .replace(['/', '+'], "_")
    );
    let private = dir.join(name);
    let pem = key.to_openssh(ssh_key::LineEnding::LF)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)?;
    std::io::Write::write_all(&mut f, pem.as_bytes())?;
    Ok((private, public))
}

/// Whether request `v` may still certify the key it was sent with: not once it ended without a
/// grant, nor once it is active with a credential that is no certificate (a database account),
/// which a generated key is useless to.
pub(super) fn certifies_a_key(v: &Value) -> bool {
    !ended_ungranted(v)
        && (v["state"] != "active" || v.pointer("/credential/certificate").is_some())
}

/// The public key line in `file` (never a private key: refused before anything is sent) and
/// the private key beside it, when there is one: conventionally the `.pub` file without its
/// extension.
pub(super) fn users_key(file: &Path) -> anyhow::Result<(Option<PathBuf>, String)> {
    let text = super::read_public_key(file)?;
    let private = (file.extension() == Some("pub".as_ref()))
        .then(|| file.with_extension(""))
        .filter(|k| k.exists());
    Ok((private, text))
}

/// Names a request's key after the request, next to its certificate.
pub(super) fn adopt_key(key: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let named = key.with_file_name(id);
    std::fs::rename(key, &named).with_context(|| format!("renaming {}", key.display()))?;
    Ok(named)
}

/// Whether `id` is made only of what a request id is made of: ids name files in
/// `WARDEN_HOME/ssh`, so nothing else (a `/`, `..`) may.
pub(super) fn id_like(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Links a request's name in `WARDEN_HOME/ssh` to the caller's own private `key`, so that
/// `warden ssh` finds the key of the grant as it finds a generated one.
fn link_key(key: &Path, id: &str) -> anyhow::Result<()> {
    if !id_like(id) {
        return Ok(());
    }
    let key = std::fs::canonicalize(key).with_context(|| format!("finding {}", key.display()))?;
    let own = ssh_dir()?.join(id);
    std::os::unix::fs::symlink(&key, &own)
        .with_context(|| format!("linking {} to {}", own.display(), key.display()))
}

/// Writes an active grant's certificate to `WARDEN_HOME/ssh/ID-cert.pub` and returns its path.
pub(super) fn save_certificate(v: &Value) -> anyhow::Result<Option<PathBuf>> {
    let Some(cert) = v.pointer("/credential/certificate").and_then(Value::as_str) else {
        return Ok(None);
    };
    // Named after the request: only an id makes a file name that stays in the folder.
    let Some(id) = v["id"].as_str().filter(|id| id_like(id)) else {
        return Ok(None);
    };
    let path = ssh_dir()?.join(format!("{id}-cert.pub"));
    std::fs::write(&path, format!("{cert}\n"))?;
    // After the new certificate is in place: the key it certifies is a live one's, kept even
    // when an expired certificate of the same key goes.
    forget_expired_certificates()?;
    Ok(Some(path))
}

pub(super) fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_request(v: &Value) {
    let reviews = v["reviews"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            // A withdrawn approval says why: its giver may approve afresh.
            let void = match (r["void"] == true, r["withdrawn"].as_str()) {
                (_, Some(why)) => format!(" (withdrawn: {why}; no longer counts)"),
                (true, None) => " (no longer counts)".to_owned(),
                (false, None) => String::new(),
            };
            format!(
                "{} {}{void} {}",
                s(r, "reviewer"),
                s(r, "verdict"),
                s(r, "comment")
            )
            .trim()
            .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ");
    let needed = joined(&v["still_needed"], ", ");
    fields(&[
        ("id", s(v, "id")),
        ("state", s(v, "state")),
        ("requester", s(v, "requester")),
        ("target", s(v, "target")),
        ("role", s(v, "role")),
        ("reason", s(v, "reason")),
        ("ticket", s(v, "ticket")),
        ("ttl", s(v, "ttl")),
        ("tier", s(v, "tier")),
        (
            "break-glass",
            match (v["breakglass"] == true, v["drill"] == true) {
                (true, true) => "yes (drill)".to_owned(),
                (true, false) => "yes".to_owned(),
                _ => String::new(),
            },
        ),
        ("recording", s(v, "recording")),
        ("rules", joined(&v["rules"], ", ")),
        ("still needed", needed),
        ("unapprovable", s(v, "unapprovable")),
        ("reviews", reviews),
        ("created", instant(v, "created_at")),
        (
            "times out",
            if v["state"] == "pending" {
                instant(v, "pending_deadline")
            } else {
                String::new()
            },
        ),
        ("activated", instant(v, "activated_at")),
        ("expires", instant(v, "expires_at")),
        ("ended", instant(v, "ended_at")),
        ("ended by", s(v, "ended_by")),
        ("why", s(v, "end_comment")),
        ("extends", s(v, "extends")),
        ("account", removal(v)),
    ]);
}

/// How the removal of an ended grant's database account stands, in words: whether the account
/// is still at the target, which the grant's state alone does not say.
fn removal(v: &Value) -> String {
    let r = &v["revocation"];
    let (account, target) = (s(r, "account"), s(v, "target"));
    match r["state"].as_str() {
        Some("pending") => format!("{account} is still at {target}; Warden is removing it"),
        Some("failing") => format!(
            "{account} is still at {target}; Warden keeps trying to remove it ({} attempt(s) failed, the last: {}; next at {})",
            s(r, "attempts"),
            s(r, "last_error"),
            instant(r, "next_attempt_at")
        ),
        Some("done") => format!(
            "{account} removed from {target} at {}",
            instant(r, "removed_at")
        ),
        _ => String::new(),
    }
}

/// `--wait-timeout`: a duration as TTLs are written, or bare seconds as before; at most 30 days
/// (Warden's ceiling on durations, longer than any pending timeout a policy could sensibly set).
fn wait_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bare = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let written = if bare {
        format!("{text}s")
    } else {
        text.to_owned()
    };
    written
        .parse::<warden_domain::Ttl>()
        .map(warden_domain::Ttl::as_secs)
        .map_err(|e| e.of("the wait"))
}

/// Polls request `created` until it is no longer pending; after `timeout` seconds, or on Ctrl-C
/// or SIGTERM, it stops (exit 1) and says the request is still pending, printing it with
/// `--json` (as last seen, when the server does not answer then). With `--json` it says
/// nothing else while it waits: stderr holds the failure alone.
async fn wait_decided(
    c: &Client,
    created: &Value,
    timeout: u64,
    out: Output,
) -> anyhow::Result<Value> {
    let id = &s(created, "id");
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let stopped = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    // A server that hangs (rather than refuses) holds a poll until the client's call timeout:
    // the wait's own deadline stops it all the same.
    let overdue = tokio::time::sleep(Duration::from_secs(timeout) + LAST_LOOK);
    tokio::select! {
        v = poll_decided(c, id, timeout, out) => v,
        () = overdue => still_pending(
            created,
            id,
            &format!("stopped waiting after {timeout}s (the server does not answer: shown as last seen)"),
            out,
        ),
        () = stopped => {
            // A last look, brief: the user asked to stop now.
            let path = format!("/v1/requests/{}", segment(id));
            match tokio::time::timeout(LAST_LOOK, c.get::<Value>(&path)).await {
                Ok(Ok(v)) if v["state"] != "pending" => Ok(v),
                Ok(Ok(v)) => still_pending(&v, id, "stopped waiting", out),
                _ => still_pending(
                    created,
                    id,
                    "stopped waiting (the server did not answer: shown as last seen)",
                    out,
                ),
            }
        }
    }
}

/// How long a wait stopped by the user looks at the request a last time.
const LAST_LOOK: Duration = Duration::from_secs(3);

/// The failure of a wait that ended with request `v` still pending, printed first with `--json`
/// (a script still gets the request as it stands).
fn still_pending(v: &Value, id: &str, why: &str, out: Output) -> anyhow::Result<Value> {
    if out.json {
        out.json(v)?;
    }
    Err(Failure::new(
        exit::FAILURE,
        format!(
            "{why}: request {id} is still pending (see `warden request show {id}`; `warden request cancel {id}` withdraws it)"
        ),
    )
    .into())
}

/// [`wait_decided`]'s polling.
async fn poll_decided(c: &Client, id: &str, timeout: u64, out: Output) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let mut announced = false;
    let mut told_unreachable = false;
    loop {
        // The server may be restarting: the request waits on, and so does the client, until
        // its own deadline ([`wait_decided`] stops it there).
        let v: Value = match c.get(&format!("/v1/requests/{}", segment(id))).await {
            Ok(v) => v,
            Err(e) if exit::code_of(&e) == exit::UNREACHABLE => {
                if !told_unreachable && !out.json {
                    eprintln!("The server does not answer ({e:#}); still waiting...");
                    told_unreachable = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        told_unreachable = false;
        if v["state"] != "pending" {
            return Ok(v);
        }
        if !announced && !out.json {
            // Named, so an approver can be told which request to approve.
            eprintln!(
                "Request {id} waits for approval ({}); Ctrl-C stops waiting and leaves it pending...",
                joined(&v["still_needed"], ", ")
            );
            announced = true;
        }
        if std::time::Instant::now() >= deadline {
            return still_pending(&v, id, &format!("stopped waiting after {timeout}s"), out);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints request `v` and keeps what its grant hands over: the certificate beside the `key` it
/// certifies, or, for a request made here (`asked_here`) with a key whose private half is
/// elsewhere (an agent's, a hardware key's), on its own. Its requester (`asked_here`) shown an
/// active database grant without its password, which this client does not keep either, is told
/// how to get it.
pub(super) fn finish(
    v: &Value,
    key: Option<&Path>,
    asked_here: bool,
    out: Output,
) -> anyhow::Result<()> {
    forget_unneeded_key(v)?;
    // A key this client generated for the request is named after it, or after the request it
    // extends (an extension certifies the same key).
    let own_key = if ended_ungranted(v) {
        None
    } else {
        generated_key(v)?
    };
    // Named as the user typed it, a key is found only from where they typed it; the printed
    // command should work from anywhere.
    let typed = key.map(std::path::absolute).transpose()?;
    let key = typed.as_deref().or(own_key.as_deref());
    // Kept beside the key it certifies: not for a grant seen here without its key (someone
    // else's, shown to an approver or an administrator).
    let cert = if v["state"] == "active" && (key.is_some() || asked_here) {
        save_certificate(v)?
    } else {
        None
    };
    let secret = v["secret"].as_object().map(|_| &v["secret"]);
    if let Some(secret) = secret {
        super::db::save_secret(v, secret)?;
    }
    if out.json {
        let mut v = v.clone();
        if let (Some(obj), Some(c)) = (v.as_object_mut(), &cert) {
            obj.insert("certificate_file".into(), c.display().to_string().into());
            if let Some(k) = key {
                obj.insert("private_key_file".into(), k.display().to_string().into());
            }
        }
        return out.json(&v);
    }
    print_request(v);
    if let Some(secret) = secret {
        println!();
        println!("Credential (shown once; kept in WARDEN_HOME for `warden db connect`):");
        if let Some(url) = secret["url"].as_str() {
            println!("  {url}");
        }
        let ca = super::db::keep_ca(&v["credential"])?;
        for line in super::db::shell_lines(&v["credential"], secret, ca.as_deref()) {
            println!("  {line}");
        }
    } else if asked_here && v["state"] == "active" && has_password(v) {
        let id = s(v, "id");
        if id_like(&id) && !super::db::keeps_secret(&id)? {
            println!();
            println!("{}", pickup_hint(v));
        }
    }
    if let Some(c) = cert {
        let principals = v
            .pointer("/credential/logins")
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(Value::as_str)
            .unwrap_or("USER");
        println!();
        println!("SSH certificate saved to {}", c.display());
        if v.pointer("/credential/proxy_only") == Some(&Value::Bool(true)) {
            println!(
                "Connect through Warden's SSH proxy (the role's sessions are recorded or filtered there; the certificate logs in nowhere else): warden ssh {} --request {}",
                s(v, "target"),
                s(v, "id")
            );
            return Ok(());
        }
        // The target's host and port when its policy names them.
        let host = v
            .pointer("/credential/host")
            .and_then(Value::as_str)
            .unwrap_or("HOST");
        let port = match v.pointer("/credential/port").and_then(Value::as_u64) {
            Some(p) if p != 22 => format!("-p {p} "),
            _ => String::new(),
        };
        let word = |p: &Path| crate::output::shell_word(&p.display().to_string());
        // Without its key, known only to the client that made the request, the certificate
        // logs in nowhere: the command says which key it takes rather than leave it out.
        let identity = key.map_or_else(|| "KEY".to_owned(), word);
        println!(
            "Connect: ssh {port}-i {identity} -o {} {principals}@{host}",
            crate::output::shell_word(&certificate_option(&c))
        );
        if key.is_none() {
            println!(
                "Replace KEY with the private key whose public half was sent with the request (it is not on this client; with the key in ssh-agent, its public key file will do), or connect with `warden ssh {} --request {} -i KEY`",
                s(v, "target"),
                s(v, "id")
            );
        }
    }
    Ok(())
}

/// How the requester of active database grant `v` gets its password. The server does not say
/// whether it was handed over already (to another client: this one keeps none), so neither
/// does this.
fn pickup_hint(v: &Value) -> String {
    let (id, target) = (s(v, "id"), s(v, "target"));
    format!(
        "Password: if not yet picked up, get it (shown once) with `warden request credential {id}`, or connect with `warden db connect {target} --request {id}`"
    )
}

/// Whether grant `v`'s credential has a password handed over apart from it, once: a database
/// account's.
fn has_password(v: &Value) -> bool {
    matches!(
        v.pointer("/credential/kind").and_then(Value::as_str),
        Some("postgres" | "mariadb")
    )
}

/// `CertificateFile=PATH` as ssh reads an `-o` value: it splits the value again, so a path with
/// spaces, quotes or backslashes goes in double quotes, its own quotes and backslashes escaped.
fn certificate_option(cert: &Path) -> String {
    let path = cert.display().to_string();
    if path.contains(|c: char| c.is_whitespace() || "\"'\\".contains(c)) {
        let escaped = path.replace('\\', "\\\\").replace('"', "\\\"");
        format!("CertificateFile=\"{escaped}\"")
    } else {
        format!("CertificateFile={path}")
    }
}

/// The key this client generated for request `v`: `WARDEN_HOME/ssh/ID`, or the one of the
/// request it extends, then linked under this request's id too so that its own extension finds
/// it.
fn generated_key(v: &Value) -> anyhow::Result<Option<PathBuf>> {
    let (id, extends) = (s(v, "id"), s(v, "extends"));
    if !id_like(&id) {
        return Ok(None);
    }
    let dir = ssh_dir()?;
    let own = dir.join(&id);
    if own.exists() {
        return Ok(Some(own));
    }
    let original = dir.join(&extends);
    if !id_like(&extends) || !original.exists() {
        return Ok(None);
    }
    // Named relative to the link's own directory, where both live, so the link holds however
    // WARDEN_HOME was written (a relative path too); one left dangling is made afresh.
    if own.symlink_metadata().is_ok() {
        std::fs::remove_file(&own).with_context(|| format!("removing {}", own.display()))?;
    }
    std::os::unix::fs::symlink(&extends, &own)
        .with_context(|| format!("linking {} to {}", own.display(), original.display()))?;
    Ok(Some(own))
}

/// What a call that creates a request answered: the request, or, when it was granted at once
/// and its credential could not be issued, the request as it ended, to be shown and refused
/// as any request that ended without a grant; any other error as it was.
pub(super) async fn created_or_ended(
    c: &Client,
    created: anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    let unissued = created.as_ref().err().and_then(|e| {
        e.downcast_ref::<Failure>()
            .and_then(|f| f.request_id.clone())
    });
    match unissued {
        Some(id) => c
            .get(&format!("/v1/requests/{}", segment(&id)))
            .await
            .or(created),
        None => created,
    }
}

/// After waiting for a decision: a request that ended without a grant is a refusal, but for one
/// whose credential the target failed to issue, which fails as approving it did.
pub(super) fn refused_if_ended(v: &Value) -> anyhow::Result<()> {
    let state = v["state"].as_str().unwrap_or_default();
    let comment = v["end_comment"].as_str().unwrap_or_default();
    if ended_ungranted(v) && comment.starts_with(warden_domain::request::UNISSUED) {
        return Err(Failure {
            api_code: Some("issuer_failed".into()),
            request_id: Some(s(v, "id")),
            ..Failure::new(
                exit::FAILURE,
                format!("request {} ended {state}: {comment}", s(v, "id")),
            )
        }
        .into());
    }
    let how = match state {
        "denied" => "was denied".to_owned(),
        "cancelled" => "was cancelled".to_owned(),
        "timed-out" => "timed out waiting for approval".to_owned(),
        // Revoked, or its credential could not be issued: no access came of it.
        _ if ended_ungranted(v) => match v["end_comment"].as_str().filter(|w| !w.is_empty()) {
            Some(why) => format!("ended {state} without a grant: {why}"),
            None => format!("ended {state} without a grant"),
        },
        _ => return Ok(()),
    };
    Err(Failure::new(exit::REFUSED, format!("request {} {how}", s(v, "id"))).into())
}

/// Picks up the database credential of request `v`, active after a wait, into `v["secret"]`:
/// the password is handed over once, to its requester.
async fn pick_up_after_wait(c: &Client, v: &mut Value) -> anyhow::Result<()> {
    if v["state"] == "active" && has_password(v) && v.get("secret").is_none_or(Value::is_null) {
        v["secret"] = super::db::pickup(c, v).await?.unwrap_or(Value::Null);
    }
    Ok(())
}

/// Posts one action on a request and prints the request as it now stands.
async fn act(c: &Client, id: &str, action: &str, body: Value, out: Output) -> anyhow::Result<()> {
    let v: Value = c
        .post(&format!("/v1/requests/{}/{action}", segment(id)), &body)
        .await?;
    forget_unneeded_key(&v)?;
    if out.json {
        out.json(&v)
    } else {
        print_request(&v);
        Ok(())
    }
}

pub async fn run(server: Option<String>, cmd: RequestCommand, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        RequestCommand::Create(a) => {
            let (key_path, public_key) = match &a.public_key {
                Some(p) => users_key(p)?,
                None => {
                    let (k, p) = new_client_key()?;
                    (Some(k), p)
                }
            };
            let generated = a.public_key.is_none();
            let body = json!({
                "target": a.target, "role": a.role, "reason": a.reason, "ticket": a.ticket,
                "ttl": a.ttl, "public_key": public_key, "totp": a.totp,
            });
            let created = c.post("/v1/requests", &body).await;
            let mut v = match created_or_ended(&c, created).await {
                Ok(v) => v,
                Err(e) => {
                    if let (true, Some(k)) = (generated, &key_path) {
                        let _ = std::fs::remove_file(k);
                    }
                    return Err(e);
                }
            };
            let key_path = match (generated, key_path) {
                (true, Some(k)) if !certifies_a_key(&v) => {
                    std::fs::remove_file(&k)
                        .with_context(|| format!("removing {}", k.display()))?;
                    None
                }
                (true, Some(k)) => Some(adopt_key(&k, &s(&v, "id"))?),
                (false, Some(k)) => {
                    link_key(&k, &s(&v, "id"))?;
                    Some(k)
                }
                (_, None) => None,
            };
            if a.wait.wait && v["state"] == "pending" {
                v = wait_decided(&c, &v, a.wait.wait_timeout, out).await?;
                pick_up_after_wait(&c, &mut v).await?;
            }
            finish(&v, key_path.as_deref(), true, out)?;
            refused_if_ended(&v)
        }
        RequestCommand::List {
            state,
            requester,
            reviewable,
            limit,
            before,
        } => {
            let q = query(&[
                ("state", state),
                ("requester", requester),
                ("reviewable", reviewable.then(|| "true".into())),
                ("limit", Some(limit.to_string())),
                ("before", before),
            ]);
            let v: Value = c.get(&format!("/v1/requests{q}")).await?;
            for r in v["requests"].as_array().into_iter().flatten() {
                forget_unneeded_key(r)?;
                super::db::forget_if_ended(r)?;
            }
            if out.json {
                return out.json(&v);
            }
            let rows: Vec<Vec<String>> = v["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        s(r, "id"),
                        s(r, "state"),
                        s(r, "requester"),
                        s(r, "target"),
                        s(r, "role"),
                        s(r, "ttl"),
                        s(r, "tier"),
                        // An ended grant's end, not the expiry it no longer has.
                        if r["ended_at"].is_null() {
                            instant(r, "expires_at")
                        } else {
                            instant(r, "ended_at")
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "STATE",
                    "REQUESTER",
                    "TARGET",
                    "ROLE",
                    "TTL",
                    "TIER",
                    "END",
                ],
                &rows,
            );
            if rows.len() == limit
                && let Some(last) = rows.last().and_then(|r| r.first())
            {
                eprintln!(
                    "{} shown, newest first; more may follow: add --before {last}",
                    crate::output::count(limit, "request")
                );
            }
            Ok(())
        }
        RequestCommand::Show { id } => {
            let v: Value = c.get(&format!("/v1/requests/{}", segment(&id))).await?;
            super::db::forget_if_ended(&v)?;
            // Its requester keeps the certificate of a grant approved since, whether or not
            // this client holds the key (one in ssh-agent or on a token is not here).
            let mine = c.user().is_some_and(|me| v["requester"] == me);
            finish(&v, None, mine, out)
        }
        RequestCommand::Approve { id, comment, totp } => {
            act(
                &c,
                &id,
                "approve",
                json!({ "comment": comment, "totp": totp }),
                out,
            )
            .await
        }
        RequestCommand::Deny { id, comment } => {
            act(&c, &id, "deny", json!({ "comment": comment }), out).await
        }
        RequestCommand::Cancel { id } => act(&c, &id, "cancel", json!({}), out).await,
        RequestCommand::Revoke { id, comment } => {
            act(&c, &id, "revoke", json!({ "comment": comment }), out).await?;
            super::db::forget_secret(&id)
        }
        RequestCommand::Credential { id } => {
            let v: Value = c.get(&format!("/v1/requests/{}", segment(&id))).await?;
            let secret = super::db::pickup(&c, &v).await?;
            let mut v = v;
            v["secret"] = secret.unwrap_or(Value::Null);
            finish(&v, None, false, out)
        }
        RequestCommand::Extend {
            id,
            ttl,
            reason,
            totp,
            wait,
        } => {
            let mut v: Value = c
                .post(
                    &format!("/v1/requests/{}/extend", segment(&id)),
                    &json!({ "ttl": ttl, "reason": reason, "totp": totp }),
                )
                .await?;
            if wait.wait && v["state"] == "pending" {
                v = wait_decided(&c, &v, wait.wait_timeout, out).await?;
                pick_up_after_wait(&c, &mut v).await?;
            }
            // The extension certifies the original grant's key.
            let original_key = ssh_dir()?.join(&id);
            finish(
                &v,
                original_key.exists().then_some(original_key.as_path()),
                true,
                out,
            )?;
            super::db::say_extension_is_a_new_account(&c, &v).await;
            refused_if_ended(&v)
        }
    }
}

pub async fn targets(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let v: Value = Client::new(server)?.get("/v1/targets").await?;
    if out.json {
        return out.json(&v);
    }
    let rows: Vec<Vec<String>> = v["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let d = &t["decision"];
            vec![
                s(t, "target"),
                s(t, "role"),
                s(t, "kind"),
                match t["unapprovable"] {
                    Value::Null => s(d, "tier"),
                    _ => format!("{} (no approver)", s(d, "tier")),
                },
                s(d, "max_ttl"),
                if d["mfa"] == true {
                    "required".into()
                } else {
                    "-".into()
                },
                Some(joined(&d["ticket_patterns"], " and "))
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "-".into()),
                s(t, "description"),
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "ROLE",
            "KIND",
            "TIER",
            "MAX TTL",
            "MFA",
            "TICKET",
            "DESCRIPTION",
        ],
        &rows,
    );
    for t in v["targets"].as_array().into_iter().flatten() {
        if let Some(why) = t["unapprovable"].as_str() {
            println!("{} as {}: {why}", s(t, "target"), s(t, "role"));
        }
    }
    let emergency: Vec<Vec<String>> = v["breakglass"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let d = &t["decision"];
            vec![
                s(t, "target"),
                s(t, "role"),
                s(d, "max_ttl"),
                joined(&d["ticket_patterns"], " and "),
            ]
        })
        .collect();
    if !emergency.is_empty() {
        println!();
        println!(
            "Break-glass (`warden breakglass TARGET --role ROLE`; MFA, recorded in full at SSH targets, security notified):"
        );
        table(&["TARGET", "ROLE", "MAX TTL", "TICKET"], &emergency);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_grants_account_is_said_to_be_still_at_its_target_until_it_is_gone() {
        let grant = |revocation: Value| json!({"target": "app-db", "revocation": revocation});
        assert_eq!(removal(&json!({"target": "app-db"})), "");
        assert_eq!(
            removal(&grant(
                json!({"state": "pending", "account": "w_alice_1", "attempts": 0})
            )),
            "w_alice_1 is still at app-db; Warden is removing it"
        );
        let failing = removal(&grant(json!({
            "state": "failing", "account": "w_alice_1", "attempts": 3,
            "last_error": "the target could not be reached or refused the login: no answer within 5 s",
            "next_attempt_at": "2026-12-04T18:41:20.281Z",
        })));
        assert_eq!(
            failing,
            "w_alice_1 is still at app-db; Warden keeps trying to remove it (3 attempt(s) failed, \
             the last: the target could not be reached or refused the login: no answer within 5 s; \
             next at 2026-12-04T18:41:20Z)"
        );
        assert_eq!(
            removal(&grant(json!({
                "state": "done", "account": "w_alice_1", "attempts": 3,
                "removed_at": "2026-12-04T18:41:21.5Z",
            }))),
            "w_alice_1 removed from app-db at 2026-12-04T18:41:21Z"
        );
    }

    #[test]
    fn the_list_says_who_sees_every_request() {
        use clap::Subcommand as _;
        let mut request = RequestCommand::augment_subcommands(clap::Command::new("request"));
        let list = request.find_subcommand_mut("list").unwrap();
        let about = list
            .get_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            about.contains("all for administrators and audit readers"),
            "{about}"
        );
    }

    #[test]
    fn a_wait_is_a_duration_or_bare_seconds() {
        assert_eq!(wait_seconds("90"), Ok(90));
        assert_eq!(wait_seconds("10m"), Ok(600));
        assert_eq!(wait_seconds(" 1h30m"), Ok(5400));
        let why = wait_seconds("2x").unwrap_err();
        assert!(why.contains("the wait \"2x\" is not a duration"), "{why}");
        // One ceiling, said one way, however the wait is written; zero likewise.
        for (given, said) in [
            ("31d", "above Warden's ceiling of 30d"),
            ("2592001", "above Warden's ceiling of 30d"),
            ("99999999999999999999", "above Warden's ceiling of 30d"),
            ("0", "must be longer than zero"),
            ("0s", "must be longer than zero"),
        ] {
            let why = wait_seconds(given).unwrap_err();
            assert!(why.contains(said), "{given}: {why}");
        }
    }

    #[test]
    fn the_certificate_option_reads_back_as_the_path_in_ssh() {
        for path in [
            "/home/a/.config/warden/ssh/x-cert.pub",
            "/tmp/a b/it's \"q\"\\x-cert.pub",
        ] {
            let option = certificate_option(std::path::Path::new(path));
            let out = std::process::Command::new("ssh")
                .args(["-G", "-o", &option, "example.invalid"])
                .output()
                .unwrap();
            let config = String::from_utf8_lossy(&out.stdout);
            assert!(
                config
                    .lines()
                    .any(|l| l == format!("certificatefile {path}")),
                "{option}: {config}"
            );
        }
    }
}
