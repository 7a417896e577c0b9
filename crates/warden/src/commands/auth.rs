//! `login`, `logout`, `whoami`, `mfa`, `user`, `hash-password`.

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use super::read_secret;
use super::requests::s;
use crate::client::{self, Client, Saved, segment};
use crate::exit::{self, Failure};
use crate::output::{Output, count, fields, instant, joined, table, to_the_second};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Your user name.
    #[arg(long)]
    user: String,
    /// Read the password from stdin instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// A TOTP code, once you have enrolled MFA.
    #[arg(long, value_parser = super::totp_code)]
    totp: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Start enrolment: prints an otpauth:// URI for your authenticator app.
    Enroll {
        /// A current code, when replacing an existing factor.
        #[arg(long, value_parser = super::totp_code)]
        totp: Option<String>,
    },
    /// Finish enrolment with the first code the authenticator shows.
    Confirm {
        /// The 6-digit code the authenticator shows now.
        #[arg(value_parser = super::totp_code)]
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Change your own password (anyone; no NAME, or your own), or set another user's
    /// (administrators), ending that user's sessions: their tokens, live SSH sessions and
    /// registered SSH keys. Your own takes your current password too, and a fresh code once
    /// you have a second factor.
    SetPassword {
        /// The user, as the directory names them; without it, yourself.
        name: Option<String>,
        /// Read the passwords from stdin instead of prompting: for your own, two lines (your
        /// current password, then the new one); for another user's, one line (the new one).
        #[arg(long)]
        password_stdin: bool,
        /// A fresh code of your own second factor, once you have enrolled one: for your own
        /// password (asked for at a terminal when missing), or another user's.
        #[arg(long, value_parser = super::totp_code)]
        totp: Option<String>,
    },
    /// List the users locked after wrong passwords or TOTP codes in a row, and until when
    /// (administrators and audit readers).
    Locked,
    /// Lift a user's lockout and keep their password (administrators). `set-password` lifts
    /// it too, with a new one.
    Unlock {
        /// The user, as the directory names them.
        name: String,
    },
    /// Remove a user's second factor and end their sessions, live SSH sessions and registered
    /// SSH keys included (administrators, for others): for a lost authenticator, or one
    /// someone else bound to the account. They sign in with their password and enrol again
    /// with `warden mfa enroll`.
    ResetMfa {
        /// The user, as the directory names them.
        name: String,
        /// A fresh code of your own second factor, once you have enrolled one.
        #[arg(long, value_parser = super::totp_code)]
        totp: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
struct LoginResponse {
    token: String,
    user: String,
    expires_at: String,
}

/// How long `warden login` tries to revoke the saved login it replaces at another server.
const REVOKE_REPLACED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn login(server: Option<String>, a: LoginArgs, out: Output) -> anyhow::Result<()> {
    let password = read_secret("password", a.password_stdin)?;
    let _turn = client::lock_logins()?;
    let c = Client::new(server)?;
    let attempt = async |totp: Option<String>| {
        let body = json!({ "user": a.user, "password": password, "totp": totp });
        c.post_anonymous::<LoginResponse>("/v1/auth/login", &body)
            .await
    };
    let r = match attempt(a.totp.clone()).await {
        // At a terminal, ask for the code rather than send the user back to type it all again.
        Err(e) if a.totp.is_none() && !a.password_stdin && totp_required(&e) => {
            let code = read_secret("TOTP code", false)?;
            let code = super::totp_code(&code).map_err(|why| Failure::new(exit::USAGE, why))?;
            attempt(Some(code)).await?
        }
        r => r?,
    };
    // The saved login this one replaces is revoked, not left working for hours in no one's
    // hands (one expired or that its server no longer takes has nothing to revoke), at this
    // server or at the one it was for; one that cannot be revoked is said to work on. The new
    // one is saved first: a login that cannot be saved leaves the old one as it was.
    let replaced = c
        .other_login()
        .and_then(|other| Client::new(Some(other.to_owned())).ok());
    let saved = client::save(&Saved {
        server: c.server.clone(),
        user: r.user.clone(),
        token: r.token.clone(),
        expires_at: r.expires_at.clone(),
    });
    if let Err(e) = saved {
        // Nobody would hold the token: it is revoked rather than left working for hours.
        let revoked =
            tokio::time::timeout(REVOKE_REPLACED_WITHIN, revoke_saved(&c.with_token(r.token)))
                .await;
        let token = if matches!(revoked, Ok(Ok(_))) {
            "the new login was revoked"
        } else {
            "the new login could not be revoked, and works until it expires"
        };
        return Err(e.context(format!(
            "your login could not be saved ({}), so {token}",
            client::HOME_HINT
        )));
    }
    for previous in replaced.iter().chain([&c]).filter(|p| p.logged_in()) {
        let revoked = tokio::time::timeout(REVOKE_REPLACED_WITHIN, revoke_saved(previous)).await;
        if !matches!(revoked, Ok(Ok(_))) && previous.server != c.server {
            eprintln!(
                "Warning: the login for {} this one replaces could not be revoked there; its token works until it expires.",
                previous.server
            );
        }
    }
    if out.json {
        out.json(&json!({ "user": r.user, "server": c.server, "expires_at": r.expires_at }))
    } else {
        println!(
            "Logged in to {} as {} until {}.",
            c.server,
            r.user,
            to_the_second(&r.expires_at)
        );
        Ok(())
    }
}

/// Revokes the token of `c`'s saved login at its server: `true` when revoked, `false` when the
/// server no longer takes it (expired, revoked: nothing is left to revoke).
async fn revoke_saved(c: &Client) -> anyhow::Result<bool> {
    match c.post::<Value>("/v1/auth/logout", &json!({})).await {
        Ok(_) => Ok(true),
        Err(e)
            if e.downcast_ref::<crate::exit::Failure>()
                .is_some_and(|f| f.api_code.as_deref() == Some("unauthenticated")) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Removes what the client keeps of grants that have ended (passwords, certificates, generated
/// keys): a logout leaves nothing behind that is no more use, whether or not there was a login
/// to revoke. Done before the login is touched, so that a refusal here (a folder others may
/// write to) leaves the login as it was, not revoked behind an error.
fn forget_expired() -> anyhow::Result<()> {
    super::db::forget_expired()?;
    super::requests::forget_expired_certificates()
}

pub async fn logout(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    if !c.logged_in() {
        if let Some(other) = c.other_login() {
            return Err(Failure::new(
                exit::UNAUTHENTICATED,
                format!(
                    "not logged in to {}: your saved login is for {other}; log out of it with `warden logout --server {other}`",
                    c.server
                ),
            )
            .into());
        }
        // Nothing to revoke; a damaged or expired saved login can only be removed.
        let said = if c.damaged() {
            Some("Removed the damaged saved login (its token, if any, works until it expires).")
        } else if c.expired() {
            Some("Removed the expired saved login.")
        } else {
            None
        };
        forget_expired()?;
        client::forget()?;
        if out.json {
            return out.json(&json!({ "logged_out": said.is_some(), "revoked": false }));
        }
        println!("{}", said.unwrap_or("Not logged in."));
        return Ok(());
    }
    forget_expired()?;
    // Revoked at the server before the login is forgotten. Any failure but a token it no
    // longer takes leaves a token that works until it expires, so it is kept for another try
    // and the user told.
    let revoked = revoke_saved(&c).await.map_err(|e| {
        e.context(
            "the token was not revoked and works until it expires; it is kept so that `warden logout` can try again",
        )
    })?;
    client::forget()?;
    if out.json {
        out.json(&json!({ "logged_out": true, "revoked": revoked }))
    } else {
        println!(
            "{}",
            if revoked {
                "Logged out."
            } else {
                "Logged out (the server no longer took the token)."
            }
        );
        Ok(())
    }
}

pub async fn whoami(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let v: Value = Client::new(server)?.get("/v1/auth/whoami").await?;
    if out.json {
        return out.json(&v);
    }
    let groups = joined(&v["groups"], ", ");
    fields(&[
        ("user", v["user"].as_str().unwrap_or_default().to_owned()),
        ("groups", groups),
        (
            "manager",
            v["manager"].as_str().unwrap_or_default().to_owned(),
        ),
        ("admin", v["admin"].to_string()),
        (
            "mfa",
            if v["mfa_enrolled"].as_bool() == Some(true) {
                "enrolled".into()
            } else {
                "not enrolled (warden mfa enroll)".into()
            },
        ),
        ("signed in until", instant(&v, "token_expires_at")),
    ]);
    Ok(())
}

pub async fn mfa(server: Option<String>, cmd: MfaCommand, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        MfaCommand::Enroll { totp } => {
            let v: Value = c
                .post("/v1/auth/mfa/enroll", &json!({ "totp": totp }))
                .await?;
            if out.json {
                return out.json(&v);
            }
            println!(
                "Add this to your authenticator app (it contains your TOTP secret; keep it private):"
            );
            println!("{}", v["otpauth_uri"].as_str().unwrap_or_default());
            println!("Then finish with: warden mfa confirm CODE");
            Ok(())
        }
        MfaCommand::Confirm { code } => {
            let _: Value = c
                .post("/v1/auth/mfa/confirm", &json!({ "code": code }))
                .await?;
            if out.json {
                out.json(&json!({ "mfa_enrolled": true }))
            } else {
                println!("MFA enrolled. Logins and step-up now need a code.");
                Ok(())
            }
        }
    }
}

/// The current and the new password of a change of one's own: asked for without echo, or read
/// from stdin as two lines, the current one first (a password holds no line break).
fn own_passwords(from_stdin: bool) -> anyhow::Result<(String, String)> {
    if !from_stdin {
        let current = read_secret("current password", false)?;
        return Ok((current, read_secret("new password", false)?));
    }
    let both = read_secret("current and new passwords", true)?;
    let mut lines = both.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    match (lines.next(), lines.next(), lines.next()) {
        (Some(current), Some(new), None) if !current.is_empty() && !new.is_empty() => {
            Ok((current.to_owned(), new.to_owned()))
        }
        _ => Err(Failure::new(
            exit::USAGE,
            "to change your own password, --password-stdin reads two lines: your current password, then the new one",
        )
        .into()),
    }
}

/// Whether the server refused a change only for want of a fresh TOTP code.
fn mfa_required(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>()
        .is_some_and(|f| f.api_code.as_deref() == Some("mfa_required"))
}

/// Whether the server refused a sign-in only for want of a TOTP code.
fn totp_required(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>()
        .is_some_and(|f| f.api_code.as_deref() == Some("totp_required"))
}

pub async fn user(server: Option<String>, cmd: UserCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        UserCommand::SetPassword {
            name,
            password_stdin,
            totp,
        } => {
            let c = Client::new(server)?;
            if !c.logged_in() {
                // Refused before anything is asked for, saying why (no login, one expired or
                // for another server).
                c.get::<Value>("/v1/auth/whoami").await?;
            }
            let me = c.user().map(str::to_owned);
            let own = name.is_none() || name == me;
            let Some(name) = name.or(me) else {
                return Err(Failure::new(
                    exit::UNAUTHENTICATED,
                    "not logged in: run `warden login --user NAME` first",
                )
                .into());
            };
            let (current, password) = if own {
                let (current, new) = own_passwords(password_stdin)?;
                (Some(current), new)
            } else {
                (None, read_secret("new password", password_stdin)?)
            };
            let path = format!("/v1/users/{}/password", segment(&name));
            let attempt = async |totp: Option<String>| {
                let body =
                    json!({ "password": password, "current_password": current, "totp": totp });
                c.put::<Value>(&path, &body).await
            };
            let v = match attempt(totp.clone()).await {
                // At a terminal, ask for the code rather than send the user back to type it all
                // again.
                Err(e) if own && totp.is_none() && !password_stdin && mfa_required(&e) => {
                    let code = read_secret("TOTP code", false)?;
                    let code =
                        super::totp_code(&code).map_err(|why| Failure::new(exit::USAGE, why))?;
                    attempt(Some(code)).await?
                }
                r => r?,
            };
            // A new password ends the user's sessions, this one too when it is theirs.
            if own {
                client::forget()?;
            }
            if out.json {
                let mut v = v;
                v["password_set"] = true.into();
                v["signed_out"] = own.into();
                return out.json(&v);
            }
            if own {
                println!(
                    "Password set for {name}. Your sessions were ended with it: sign in again with `warden login`."
                );
            } else {
                println!(
                    "Password set for {name}. Their sessions were ended with it{}.",
                    live_sessions_ended(&v)
                );
            }
            say_keys_removed(&v);
            Ok(())
        }
        UserCommand::Locked => {
            let v: Value = Client::new(server)?.get("/v1/users/locked").await?;
            if out.json {
                return out.json(&v);
            }
            let rows: Vec<Vec<String>> = v["locked"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| vec![s(l, "user"), s(l, "refuses"), instant(l, "until")])
                .collect();
            if rows.is_empty() {
                println!("No user is locked.");
            } else {
                table(&["USER", "REFUSES", "LOCKED UNTIL"], &rows);
            }
            Ok(())
        }
        UserCommand::Unlock { name } => {
            let v: Value = Client::new(server)?
                .post(&format!("/v1/users/{}/unlock", segment(&name)), &json!({}))
                .await?;
            if out.json {
                return out.json(&v);
            }
            match v["was_locked_until"].as_str() {
                Some(until) => println!("Unlocked {name} (locked until {}).", to_the_second(until)),
                None => println!("{name} was not locked."),
            }
            Ok(())
        }
        UserCommand::ResetMfa { name, totp } => {
            let v: Value = Client::new(server)?
                .post(
                    &format!("/v1/users/{}/mfa/reset", segment(&name)),
                    &json!({ "totp": totp }),
                )
                .await?;
            if out.json {
                return out.json(&v);
            }
            let sessions = live_sessions_ended(&v);
            if v["had_factor"].as_bool() == Some(true) {
                println!(
                    "Removed {name}'s second factor and ended their sessions{sessions}: they sign in with their password and enrol again with `warden mfa enroll`."
                );
            } else {
                println!("{name} had no second factor; their sessions were ended{sessions}.");
            }
            say_keys_removed(&v);
            if let Some(until) = v["was_locked_until"].as_str() {
                println!(
                    "Their lock (until {}) was lifted with it.",
                    to_the_second(until)
                );
            }
            Ok(())
        }
    }
}

/// How many live SSH sessions an administrator's change of a user's credentials ended, as
/// said after "their sessions were ended": nothing when there were none.
fn live_sessions_ended(v: &Value) -> String {
    match v["sessions_ended"].as_u64().unwrap_or(0) {
        0 => String::new(),
        n => format!(
            " ({} on the SSH proxy among them)",
            count(usize::try_from(n).unwrap_or(usize::MAX), "live session")
        ),
    }
}

/// Says which SSH keys an administrator's change of a user's credentials removed: a key
/// registered with a stolen token would sign its holder in to the SSH proxy.
fn say_keys_removed(v: &Value) {
    if let Some(n) = v["ssh_keys_removed"].as_u64().filter(|n| *n > 0) {
        println!(
            "{} registered to them removed with it: they register theirs again with `warden keys add`.",
            count(usize::try_from(n).unwrap_or(usize::MAX), "SSH key")
        );
    }
}

/// `warden hash-password`: at a terminal the password is asked for without echo, as `login`
/// and `user set-password` ask; piped in, it is read from stdin.
pub fn hash_password(out: Output) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let password = read_secret("password", !std::io::stdin().is_terminal())?;
    warden_domain::password::check(&password)
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let phc = warden_server::auth::hash_password(&password)?;
    if out.json {
        out.json(&json!({ "password_hash": phc }))
    } else {
        println!("{phc}");
        Ok(())
    }
}
