//! `db connect`, `target set-credential|rotate-root|pin-host-key`, `revoke --user --all`, and handing over
//! database credentials.
//!
//! A database credential's secret is shown once. The client keeps it in
//! `WARDEN_HOME/grants/ID.json` (mode 0600) so `warden db connect` can use it for the grant's
//! life; it is passed to `psql`/`mariadb` in the environment, never on the command line. A
//! password is no use once its grant has ended, so it is not kept past that: the client forgets
//! the secrets of expired grants whenever it keeps or reads one and at `logout`, and a grant's
//! at once when this client revokes it. Being handed over once, a password is kept by one
//! client only: `db connect` connects under a grant whose password it keeps, not one made on
//! another machine.
//!
//! An extension of a database grant is a new account with a new password: the old account,
//! and the sessions opened with it, end at the old grant's expiry. `request extend` says so.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::read_secret;
use crate::client::{Client, ensure_home, remove_if_present, segment};
use crate::exit::{self, Failure};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Store the admin account Warden uses to create accounts at TARGET (sealed at rest).
    SetCredential {
        /// The database target, as the policy names it.
        target: String,
        /// The admin account's user name at the target.
        #[arg(long)]
        username: String,
        /// Read the password from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Store it without logging in to the target first (one that does not work fails
        /// every issue and revocation).
        #[arg(long)]
        no_verify: bool,
    },
    /// Change TARGET's admin password to a random one only Warden knows.
    RotateRoot {
        /// The database target, as the policy names it.
        target: String,
    },
    /// Fetch an ssh TARGET's host key, show its fingerprint, and pin it once confirmed.
    PinHostKey {
        /// The ssh target, as the policy names it.
        target: String,
        /// Confirm non-interactively: pin only if the key has this fingerprint (SHA256:…).
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Run psql or mariadb with your active grant's credential for TARGET.
    Connect {
        /// The database target you hold a grant for.
        target: String,
        /// Which role's grant, when you hold several.
        #[arg(long)]
        role: Option<String>,
        /// The grant to connect under, by its request id, when you hold several for the target
        /// (default: of those whose password this client keeps, the one that ends last; else
        /// the first whose password is still to be handed over).
        #[arg(long, value_parser = super::request_id)]
        request: Option<String>,
        /// Extra arguments for the client, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
        /// Print a failure found before the client starts (no grant for TARGET, not logged
        /// in) as JSON; the session itself is the client's.
        // The global option under its own words: the client's output is no table.
        #[arg(long)]
        json: bool,
    },
}

/// `WARDEN_HOME/grants`, where grants' passwords are kept, refused when there unless it is
/// the user's alone.
fn grants_dir() -> anyhow::Result<PathBuf> {
    let dir = ensure_home()?.join("grants");
    crate::client::check_dir(&dir, crate::client::Place::Folder)?;
    Ok(dir)
}

fn grant_file(id: &str) -> anyhow::Result<PathBuf> {
    Ok(grants_dir()?.join(format!("{id}.json")))
}

/// Keeps the secret of grant `v` for `db connect`, readable only by the user, until the
/// grant's expiry.
pub fn save_secret(v: &Value, secret: &Value) -> anyhow::Result<PathBuf> {
    forget_expired()?;
    let path = grant_file(v["id"].as_str().unwrap_or_default())?;
    if let Some(dir) = path.parent() {
        crate::client::private_dir(dir, crate::client::Place::Folder)?;
    }
    let kept = json!({
        "credential": v["credential"],
        "secret": secret,
        "expires_at": v["expires_at"],
        "extends": v["extends"],
    });
    crate::client::write_private(&path, serde_json::to_string_pretty(&kept)?.as_bytes())?;
    Ok(path)
}

/// Whether this client keeps the secret of grant `id`.
pub fn keeps_secret(id: &str) -> anyhow::Result<bool> {
    Ok(grant_file(id)?.exists())
}

/// Removes the kept secrets of grants past their expiry. A file without a readable expiry
/// (kept by an earlier client) stays: what it holds may still be in use.
pub fn forget_expired() -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    for (path, v) in kept()? {
        let expires = v["expires_at"].as_str().and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        });
        if expires.is_some_and(|at| at <= now) {
            remove_if_present(&path)?;
        }
    }
    Ok(())
}

/// The kept secrets' files, each with what it holds (unreadable ones left out).
fn kept() -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let dir = grants_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if let Some(v) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            out.push((path, v));
        }
    }
    Ok(out)
}

/// Removes the kept secret of request `v` once it has ended, by anyone's hand or by its time:
/// its account is gone from the target.
pub fn forget_if_ended(v: &Value) -> anyhow::Result<()> {
    let id = v["id"].as_str().unwrap_or_default();
    if v["ended_at"].is_null() || !super::requests::id_like(id) || !grant_file(id)?.exists() {
        return Ok(());
    }
    forget_secret(id)
}

/// Removes the kept secrets of grant `id` and of its extensions, if any: revoking a grant
/// revokes them with it.
pub fn forget_secret(id: &str) -> anyhow::Result<()> {
    remove_if_present(&grant_file(id)?)?;
    let mut ended = vec![id.to_owned()];
    while let Some(original) = ended.pop() {
        for (path, v) in kept()? {
            if v["extends"].as_str() == Some(original.as_str()) {
                remove_if_present(&path)?;
                if let Some(name) = path.file_stem().and_then(|n| n.to_str()) {
                    ended.push(name.to_owned());
                }
            }
        }
    }
    Ok(())
}

/// Fetches a grant's secret from the server (once) and keeps it.
pub async fn pickup(c: &Client, v: &Value) -> anyhow::Result<Option<Value>> {
    let id = v["id"].as_str().unwrap_or_default();
    let secret: Value = c
        .post(
            &format!("/v1/requests/{}/credential", segment(id)),
            &json!({}),
        )
        .await?;
    save_secret(v, &secret)?;
    Ok(Some(secret))
}

/// Says on stderr that `extension`, as `request extend` returned it, of a database grant
/// is a new account, so that the sessions opened under the old one end at its expiry, and how
/// to go on. Stderr in `--json` mode too: stdout stays the request's JSON for scripts, while
/// the person running it still learns that their sessions will end. The grant extended is read
/// for its expiry (and, while the extension waits for approval and has no credential, for its
/// kind); one that cannot be read leaves the kind or the time unsaid, the extension being made.
pub async fn say_extension_is_a_new_account(c: &Client, extension: &Value) {
    let path = format!(
        "/v1/requests/{}",
        segment(extension["extends"].as_str().unwrap_or_default())
    );
    let original: Value = c.get(&path).await.unwrap_or(Value::Null);
    if let Some(note) = extension_note(extension, &original) {
        eprintln!("{note}");
    }
}

/// What [`say_extension_is_a_new_account`] says of `extension`, of the grant `original`, if it
/// is of a database target and granted or waiting to be.
fn extension_note(extension: &Value, original: &Value) -> Option<String> {
    let kind = extension
        .pointer("/credential/kind")
        .or_else(|| original.pointer("/credential/kind"));
    if !matches!(kind.and_then(Value::as_str), Some("postgres" | "mariadb")) {
        return None;
    }
    let field = |k: &str| extension[k].as_str().unwrap_or_default().to_owned();
    let (new, old, target) = (field("id"), field("extends"), field("target"));
    let ends = match crate::output::instant(original, "expires_at") {
        at if at.is_empty() => "when it expires".to_owned(),
        at => format!("at its expiry, {at}"),
    };
    let account = "a new database account with its own password, not more time on the old one";
    let sessions = format!("connections made under grant {old} end {ends}");
    match extension["state"].as_str() {
        Some("active") => Some(format!(
            "Note: the extension {new} is {account}: {sessions}. Reconnect with `warden db connect {target} --role {}` (it picks the extension) before then.",
            field("role")
        )),
        Some("pending") => Some(format!(
            "Note: the extension {new}, once approved, will be {account}: {sessions}. Reconnect with `warden db connect {target} --request {new}` after the approval, before then."
        )),
        _ => None,
    }
}

/// The CAs a database grant's server certificate is checked against (`tls_ca` in its public
/// credential, when the target names a `tls_ca_file`), kept in `WARDEN_HOME/grants` under a name
/// of their digest for the database client to read; none when the target names none.
pub fn keep_ca(public: &Value) -> anyhow::Result<Option<PathBuf>> {
    use sha2::Digest as _;
    let Some(pem) = public["tls_ca"].as_str() else {
        return Ok(None);
    };
    let dir = grants_dir()?;
    crate::client::private_dir(&dir, crate::client::Place::Folder)?;
    let digest = hex::encode(sha2::Sha256::digest(pem.as_bytes()));
    let path = dir.join(format!("ca-{}.pem", &digest[..16]));
    crate::client::write_private(&path, pem.as_bytes())?;
    Ok(Some(path))
}

/// Environment lines for a database credential (`PGPASSWORD=…` style), with its target's TLS
/// mode and, when there is one, the CA file [`keep_ca`] kept.
pub fn env_lines(public: &Value, secret: &Value, ca: Option<&Path>) -> Vec<(String, String)> {
    let s = |v: &Value, k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match public["kind"].as_str() {
        Some("postgres") => {
            let mut lines = vec![
                ("PGHOST".into(), s(public, "host")),
                ("PGPORT".into(), s(public, "port")),
                ("PGDATABASE".into(), s(public, "database")),
                ("PGUSER".into(), s(public, "username")),
                ("PGPASSWORD".into(), s(secret, "password")),
            ];
            // libpq's modes bear the setting's names; `verify-full` without a CA file is
            // checked against the system's CAs, as Warden checks it.
            if let Some(mode) = public["tls"].as_str() {
                lines.push(("PGSSLMODE".into(), mode.to_owned()));
                if mode == "verify-full" {
                    let roots = ca.map_or_else(|| "system".to_owned(), |p| p.display().to_string());
                    lines.push(("PGSSLROOTCERT".into(), roots));
                }
            }
            lines
        }
        Some("mariadb") => vec![
            ("MYSQL_HOST".into(), s(public, "host")),
            ("MYSQL_TCP_PORT".into(), s(public, "port")),
            ("MYSQL_PWD".into(), s(secret, "password")),
        ],
        _ => Vec::new(),
    }
}

/// The database client and its arguments for a credential, given [`env_lines`] in its
/// environment. `mariadb` reads its option files (`~/.my.cnf`) over the environment, so a
/// `host`, `port` or `password` line there would send the grant's login elsewhere, or the wrong
/// password: it reads none (`--no-defaults`, which must come first) and gets the address, the
/// user name and the target's TLS mode here (`ca`: the CA file [`keep_ca`] kept).
pub fn client_command(public: &Value, ca: Option<&Path>) -> (&'static str, Vec<String>) {
    let s = |k: &str| match &public[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match public["kind"].as_str() {
        Some("mariadb") => {
            let mut args = vec![
                "--no-defaults".to_owned(),
                "--protocol=TCP".to_owned(),
                format!("--host={}", s("host")),
                format!("--port={}", s("port")),
                format!("--user={}", s("username")),
            ];
            match public["tls"].as_str() {
                Some("disable") => args.push("--skip-ssl".to_owned()),
                Some("require") => args.push("--ssl".to_owned()),
                Some("verify-full") => {
                    args.extend(["--ssl".to_owned(), "--ssl-verify-server-cert".to_owned()]);
                    args.extend(ca.map(|p| format!("--ssl-ca={}", p.display())));
                }
                _ => {}
            }
            args.extend(public["database"].as_str().map(str::to_owned));
            ("mariadb", args)
        }
        _ => ("psql", Vec::new()),
    }
}

/// The shell lines that log in with a database credential, as `request create` prints them:
/// an `export` of each of [`env_lines`], for `psql` an `unset` of [`PSQL_OVERRIDES`], then the
/// [`client_command`]. Every value and argument is one shell word ([`shell_word`]), so pasted or
/// run with `eval` the client gets exactly them, whatever the database name or `WARDEN_HOME`
/// holds (a space, a quote, a `$`).
///
/// [`shell_word`]: crate::output::shell_word
pub fn shell_lines(public: &Value, secret: &Value, ca: Option<&Path>) -> Vec<String> {
    use crate::output::shell_word;
    let mut lines: Vec<String> = env_lines(public, secret, ca)
        .into_iter()
        .map(|(k, v)| format!("export {k}={}", shell_word(&v)))
        .collect();
    let (program, args) = client_command(public, ca);
    if program == "psql" {
        lines.push(format!("unset {}", PSQL_OVERRIDES.join(" ")));
    }
    let words = std::iter::once(program.to_owned()).chain(args.iter().map(|a| shell_word(a)));
    lines.push(words.collect::<Vec<_>>().join(" "));
    lines
}

/// Variables of the caller's environment that would make `psql` connect elsewhere than the
/// grant's host (`PGHOSTADDR` wins over `PGHOST`) or take settings from a service file.
pub const PSQL_OVERRIDES: [&str; 3] = ["PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE"];

pub async fn target(server: Option<String>, cmd: TargetCommand, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        TargetCommand::SetCredential {
            target,
            username,
            password_stdin,
            no_verify,
        } => {
            let password = read_secret("admin password", password_stdin)?;
            let _: Value = c
                .put(
                    &format!("/v1/targets/{}/credential", segment(&target)),
                    &json!({ "username": username, "password": password, "verify": !no_verify }),
                )
                .await?;
            if out.json {
                out.json(&json!({ "target": target, "credential_set": true }))
            } else {
                println!("Credential for {target} stored (sealed).");
                Ok(())
            }
        }
        TargetCommand::PinHostKey {
            target,
            fingerprint,
        } => super::ssh::pin_host_key(&c, &target, fingerprint, out).await,
        TargetCommand::RotateRoot { target } => {
            let _: Value = c
                .post(
                    &format!("/v1/targets/{}/rotate-root", segment(&target)),
                    &json!({}),
                )
                .await?;
            if out.json {
                out.json(&json!({ "target": target, "rotated": true }))
            } else {
                println!("{target}'s admin password was rotated; only Warden knows it now.");
                Ok(())
            }
        }
    }
}

pub async fn revoke_all(server: Option<String>, user: String, out: Output) -> anyhow::Result<()> {
    let v: Value = Client::new(server)?
        .post(
            &format!("/v1/users/{}/revoke-all", segment(&user)),
            &json!({}),
        )
        .await?;
    if out.json {
        out.json(&v)
    } else {
        println!(
            "{user}: {} request(s) ended, tokens revoked, password disabled (to let them back in: `warden user set-password {user}`).",
            v["requests_ended"]
        );
        Ok(())
    }
}

pub async fn db(server: Option<String>, cmd: DbCommand) -> anyhow::Result<()> {
    let DbCommand::Connect {
        target,
        role,
        request,
        args,
        json: _,
    } = cmd;
    let c = Client::new(server)?;
    let (_, held) = super::active_grants(&c, &target, request.as_deref()).await?;
    let held: Vec<&Value> = held.iter().collect();
    refuse_unless_database(&target, &held)?;
    let found = chosen(&target, &held, role.as_deref(), request.as_deref())?;
    forget_expired()?;
    let (grant, secret) = with_secret(&c, &target, &found).await?;
    let public = &grant["credential"];
    let ca = keep_ca(public)?;
    let (program, own_args) = client_command(public, ca.as_deref());
    let mut cmd = std::process::Command::new(program);
    for name in PSQL_OVERRIDES {
        cmd.env_remove(name);
    }
    cmd.envs(env_lines(public, &secret, ca.as_deref()))
        .args(own_args)
        .args(args);
    // exec replaces this process: the client's exit status is ours.
    Err(cmd.exec()).context("starting the database client (is psql/mariadb installed?)")
}

/// Refuses `held` (the caller's grants for `target`, at least one) unless a database client
/// can use them: a target has one kind, so before any question of which role or grant.
fn refuse_unless_database(target: &str, held: &[&Value]) -> anyhow::Result<()> {
    let kind = held[0]["credential"]["kind"].as_str().unwrap_or_default();
    if matches!(kind, "postgres" | "mariadb") {
        return Ok(());
    }
    Err(Failure::new(
        exit::USAGE,
        format!("{target} is not a database target (its grants are {kind} credentials)"),
    )
    .into())
}

/// The role names of `grants`, sorted, each once.
fn roles(grants: &[&Value]) -> Vec<String> {
    let mut names: Vec<String> = grants
        .iter()
        .filter_map(|r| r["role"].as_str().map(str::to_owned))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Of `held` (the caller's active grants for `target`, the one that ends last first), those
/// `--role` and `--request` leave to connect under, in the same order: all of one role, or
/// a refusal that says what the caller holds.
fn chosen<'a>(
    target: &str,
    held: &[&'a Value],
    role: Option<&str>,
    request: Option<&str>,
) -> anyhow::Result<Vec<&'a Value>> {
    let mut found: Vec<&Value> = held
        .iter()
        .copied()
        .filter(|r| role.is_none_or(|ro| r["role"] == ro))
        .collect();
    if let Some(role) = role
        && found.is_empty()
    {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "you hold no active grant for {target} as {role}; you hold: {}",
                roles(held).join(", ")
            ),
        )
        .into());
    }
    // One grant has one role: no question of which is left.
    if let Some(id) = request {
        found.retain(|r| r["id"] == id);
        if found.is_empty() {
            let role = role.map(|ro| format!(" as {ro}")).unwrap_or_default();
            return Err(Failure::new(
                exit::NOT_FOUND,
                format!("{id} is none of your active grants for {target}{role} (`warden request list --state active` lists them)"),
            )
            .into());
        }
        return Ok(found);
    }
    let found_roles = roles(&found);
    if found_roles.len() > 1 {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "you hold active grants for {target} as {}: pick one with --role (or a grant with --request ID)",
                found_roles.join(", ")
            ),
        )
        .into());
    }
    Ok(found)
}

/// The grant of `found` (one role's grants, the one that ends last first) to connect under,
/// with its secret. Its password is shown once, to one client: a grant whose password this
/// client keeps comes first, the one that ends last of those; else the first whose password
/// is still to be handed over, picked up now and kept. One handed over to another client
/// (made or picked up there) is of no use here, so it is passed over, and when every one was,
/// the refusal names them and says where their passwords are.
async fn with_secret<'a>(
    c: &Client,
    target: &str,
    found: &[&'a Value],
) -> anyhow::Result<(&'a Value, Value)> {
    for grant in found {
        if let Some(secret) = kept_secret(grant)? {
            return Ok((grant, secret));
        }
    }
    for grant in found {
        match pickup(c, grant).await {
            Ok(secret) => return Ok((grant, secret.unwrap_or(Value::Null))),
            Err(e) if handed_over(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Err(handed_over_elsewhere(target, found).into())
}

/// The secret this client keeps for `grant`, if any, its file made private first if found
/// wider. An unreadable file counts as none: the password may still be handed over.
fn kept_secret(grant: &Value) -> anyhow::Result<Option<Value>> {
    let id = grant["id"].as_str().unwrap_or_default();
    let kept = grant_file(id)?;
    if !kept.exists() {
        return Ok(None);
    }
    crate::client::keep_private(
        &kept,
        &format!("If anyone else could read it, end the grant: `warden request revoke {id}`."),
        &format!("end the grant (`warden request revoke {id}`): its password is handed over once"),
    )?;
    Ok(std::fs::read_to_string(&kept)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| v["secret"].clone()))
}

/// Whether `e` is the server's refusal to hand over a password it handed over already.
fn handed_over(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>()
        .is_some_and(|f| f.api_code.as_deref() == Some("already_picked_up"))
}

/// The refusal when each of `grants` (one role's, at `target`) had its password handed over
/// to another client: they are named, with their ends, and where to connect instead.
fn handed_over_elsewhere(target: &str, grants: &[&Value]) -> Failure {
    let role = grants[0]["role"].as_str().unwrap_or_default();
    let listed: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "{} (ends {})",
                g["id"].as_str().unwrap_or_default(),
                crate::output::instant(g, "expires_at")
            )
        })
        .collect();
    let which = if grants.len() == 1 {
        format!(
            "the password of your grant for {target} as {role}, {}, is not kept in this WARDEN_HOME: it was",
            listed[0]
        )
    } else {
        format!(
            "the passwords of your grants for {target} as {role}, {}, are not kept in this WARDEN_HOME: each was",
            listed.join(", ")
        )
    };
    Failure::new(
        exit::CONFLICT,
        format!(
            "{which} handed over to another client already (a password is shown once). Connect from the machine that has it, where the grant was made or its password picked up (`warden request credential ID`), with `warden db connect {target} --request ID`; or request a new grant here: `warden request create {target} --role {role} --reason ... --ttl TTL`"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `lines`, then `check`, in bash; its standard output.
    fn in_bash(lines: &[String], check: &str) -> String {
        let script = format!("set -e; {}; {check}", lines.join("; "));
        let out = std::process::Command::new("bash")
            .args(["--norc", "-c", &script])
            .env_remove("BASH_ENV")
            // To be unset by the lines, for psql.
            .env("PGSERVICE", "elsewhere")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// What the shell lines set reaches the client exactly, whatever the database's name, the
    /// password or the CA file's path hold.
    #[test]
    fn the_printed_shell_lines_hand_the_client_exact_values() {
        let odd = "odd db'x $HOME `id` \"q\" \\ *";
        let password = "p'w $(id)";
        let secret = json!({ "password": password });
        let ca = Path::new("/tmp/warden home's $x/grants/ca-1.pem");

        let public = json!({
            "kind": "postgres", "username": "w_a_000000000001", "host": "/tmp/pg sock",
            "port": 5432, "database": odd, "tls": "verify-full",
        });
        let lines = shell_lines(&public, &secret, Some(ca));
        assert_eq!(lines.last().map(String::as_str), Some("psql"), "{lines:?}");
        let said = in_bash(
            &lines[..lines.len() - 1],
            "printf '%s\\0' \"$PGHOST\" \"$PGPORT\" \"$PGDATABASE\" \"$PGUSER\" \"$PGPASSWORD\" \
             \"$PGSSLMODE\" \"$PGSSLROOTCERT\" \"${PGSERVICE-unset}\"",
        );
        let said: Vec<&str> = said.split_terminator('\0').collect();
        assert_eq!(
            said,
            [
                "/tmp/pg sock",
                "5432",
                odd,
                "w_a_000000000001",
                password,
                "verify-full",
                ca.to_str().unwrap(),
                "unset",
            ]
        );

        let public = json!({
            "kind": "mariadb", "username": "w_a_000000000001", "host": "127.0.0.1",
            "port": 3306, "database": odd, "tls": "verify-full",
        });
        let lines = shell_lines(&public, &secret, Some(ca));
        let (program, args) = client_command(&public, Some(ca));
        // The command's words, as the client would get them.
        let (command, exports) = lines.split_last().unwrap();
        let command = command
            .strip_prefix(&format!("{program} "))
            .unwrap_or_else(|| panic!("{command}"));
        let said = in_bash(exports, &format!("printf '%s\\0' \"$MYSQL_PWD\" {command}"));
        let said: Vec<&str> = said.split_terminator('\0').collect();
        assert_eq!(said[0], password);
        assert_eq!(said[1..], args);
        assert!(
            args.contains(&format!("--ssl-ca={}", ca.display())) && args.last().unwrap() == odd,
            "{args:?}"
        );
    }

    fn grant(id: &str, role: &str) -> Value {
        json!({"id": id, "role": role, "expires_at": "2026-12-04T18:41:20.5Z",
            "credential": {"kind": "postgres"}})
    }

    fn ids(grants: &[&Value]) -> Vec<String> {
        grants
            .iter()
            .map(|g| g["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn a_request_picks_its_grant_and_a_role_or_one_held_the_rest() {
        let held = [grant("a", "read"), grant("b", "write"), grant("c", "write")];
        let held: Vec<&Value> = held.iter().collect();
        let write = chosen("pg", &held, Some("write"), None).unwrap();
        assert_eq!(ids(&write), ["b", "c"]);
        let one = chosen("pg", &held, None, Some("c")).unwrap();
        assert_eq!(ids(&one), ["c"]);
        let e = chosen("pg", &held, None, None).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::USAGE);
        assert!(e.to_string().contains("--request ID"), "{e}");
        let e = chosen("pg", &held, Some("read"), Some("c")).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::NOT_FOUND);
        assert!(
            e.to_string()
                .starts_with("c is none of your active grants for pg as read"),
            "{e}"
        );
    }

    #[test]
    fn grants_handed_over_elsewhere_are_named_with_their_ends() {
        let (a, b) = (grant("a", "write"), grant("b", "write"));
        let one = handed_over_elsewhere("pg", &[&a]).message;
        assert!(
            one.starts_with("the password of your grant for pg as write, a (ends 2026-12-04T18:41:20Z), is not kept in this WARDEN_HOME: it was handed over"),
            "{one}"
        );
        let both = handed_over_elsewhere("pg", &[&a, &b]).message;
        assert!(
            both.contains("as write, a (ends 2026-12-04T18:41:20Z), b (ends 2026-12-04T18:41:20Z), are not kept"),
            "{both}"
        );
        assert!(
            both.contains("`warden db connect pg --request ID`")
                && both.contains("`warden request create pg --role write"),
            "{both}"
        );
    }

    #[test]
    fn a_database_extension_is_said_to_be_a_new_account() {
        let original = grant("a", "write");
        let mut extension = json!({"id": "b", "extends": "a", "target": "pg", "role": "write",
            "state": "active", "credential": {"kind": "mariadb"}});
        let note = extension_note(&extension, &original).unwrap();
        assert!(
            note.contains("the extension b is a new database account")
                && note.contains("under grant a end at its expiry, 2026-12-04T18:41:20Z")
                && note.contains("`warden db connect pg --role write`"),
            "{note}"
        );
        // Waiting for approval it has no credential yet: the grant extended tells its kind.
        extension["state"] = json!("pending");
        extension["credential"] = Value::Null;
        let note = extension_note(&extension, &original).unwrap();
        assert!(
            note.contains("`warden db connect pg --request b`"),
            "{note}"
        );
        assert!(extension_note(&extension, &Value::Null).is_none());
        extension["state"] = json!("denied");
        assert!(extension_note(&extension, &original).is_none());
        extension["state"] = json!("active");
        extension["credential"] = json!({"kind": "ssh"});
        assert!(extension_note(&extension, &original).is_none());
    }
}
