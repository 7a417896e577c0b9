//! `db connect`, `target set-credential|rotate-root|pin-host-key`, `revoke --user --all`, and handing over
//! database credentials.
//!
//! A database credential's secret is shown once. The client keeps it in
//! `WARDEN_HOME/grants/ID.json` (mode 0600) so `warden db connect` can use it for the grant's
//! life; it is passed to `psql`/`mariadb` in the environment, never on the command line. A
//! password is no use once its grant has ended, so it is not kept past that: the client forgets
//! the secrets of expired grants whenever it keeps or reads one and at `logout`, and a grant's
//! at once when this client revokes it.

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
        /// Extra arguments for the client, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
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
    let DbCommand::Connect { target, role, args } = cmd;
    let c = Client::new(server)?;
    let (_, held) = super::active_grants(&c, &target).await?;
    let held: Vec<&Value> = held.iter().collect();
    // A target has one kind, and `active_grants` found at least one grant of it: before any
    // question of which role, whether a database client can use it.
    let kind = held[0]["credential"]["kind"].as_str().unwrap_or_default();
    if !matches!(kind, "postgres" | "mariadb") {
        return Err(Failure::new(
            exit::USAGE,
            format!("{target} is not a database target (its grants are {kind} credentials)"),
        )
        .into());
    }
    let found: Vec<&Value> = held
        .iter()
        .copied()
        .filter(|r| role.as_deref().is_none_or(|ro| r["role"] == ro))
        .collect();
    let roles = |grants: &[&Value]| {
        let mut names: Vec<String> = grants
            .iter()
            .filter_map(|r| r["role"].as_str().map(str::to_owned))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    if let Some(role) = &role
        && found.is_empty()
    {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "you hold no active grant for {target} as {role}; you hold: {}",
                roles(&held).join(", ")
            ),
        )
        .into());
    }
    let found_roles = roles(&found);
    if role.is_none() && found_roles.len() > 1 {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "you hold active grants for {target} as {}: pick one with --role",
                found_roles.join(", ")
            ),
        )
        .into());
    }
    let grant = found[0];
    let public = &grant["credential"];
    let id = grant["id"].as_str().unwrap_or_default();
    forget_expired()?;
    let kept = grant_file(id)?;
    if kept.exists() {
        crate::client::keep_private(
            &kept,
            &format!("If anyone else could read it, end the grant: `warden request revoke {id}`."),
            &format!(
                "end the grant (`warden request revoke {id}`): its password is handed over once"
            ),
        )?;
    }
    let saved = std::fs::read_to_string(&kept)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let secret = match saved {
        Some(s) => s["secret"].clone(),
        None => pickup(&c, grant).await?.unwrap_or(Value::Null),
    };
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
