//! `breakglass`, `postmortem list|show|close`, `report drills` and `notify status`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::requests::{
    adopt_key, certifies_a_key, created_or_ended, ended_ungranted, finish, new_client_key,
    refused_if_ended, s, users_key,
};
use crate::client::{Client, query, segment};
use crate::output::{Output, fields, instant, table, to_the_second};

#[derive(Debug, Args)]
pub struct BreakglassArgs {
    /// The target, e.g. prod-web-1.
    target: String,
    /// A break-glass role (see `warden policy check`, which lists them).
    #[arg(long)]
    role: String,
    /// What the emergency is.
    #[arg(long)]
    reason: String,
    /// The incident id, when the break-glass rule demands one.
    #[arg(long)]
    ticket: Option<String>,
    /// How long: at most the rule's maximum.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// A fresh TOTP code: break-glass always requires one.
    #[arg(long, value_parser = super::totp_code)]
    totp: Option<String>,
    /// A drill: the same path, flagged as a drill everywhere.
    #[arg(long)]
    drill: bool,
    /// SSH public key to certify (default: a fresh key in WARDEN_HOME/ssh).
    #[arg(long)]
    public_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PostmortemCommand {
    /// List open postmortems (all of them for security and administrators).
    List {
        /// Closed ones too.
        #[arg(long)]
        all: bool,
        /// At most this many, newest first (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = super::postmortems_limit)]
        limit: usize,
        /// Only postmortems older than this one: the next page after a listing that ended there.
        #[arg(long, value_parser = super::request_id)]
        before: Option<String>,
    },
    /// Show one postmortem (its id is the break-glass grant's).
    Show {
        /// The break-glass grant's id.
        #[arg(value_parser = super::request_id)]
        id: String,
    },
    /// Close a postmortem with a link to the write-up and what was learned (security).
    Close {
        /// The break-glass grant's id.
        #[arg(value_parser = super::request_id)]
        id: String,
        /// The write-up's address (http or https).
        #[arg(long)]
        link: String,
        /// What was learned, in a sentence or two.
        #[arg(long)]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// The notification outbox: pending, retrying and delivered notifications (administrators).
    Status,
}

pub async fn breakglass(
    server: Option<String>,
    a: BreakglassArgs,
    out: Output,
) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    let (key_path, public_key, generated) = match &a.public_key {
        Some(p) => {
            let (private, text) = users_key(p)?;
            (private, text, false)
        }
        None => {
            let (k, p) = new_client_key()?;
            (Some(k), p, true)
        }
    };
    let body = json!({
        "target": a.target, "role": a.role, "reason": a.reason, "ticket": a.ticket,
        "ttl": a.ttl, "public_key": public_key, "totp": a.totp, "drill": a.drill,
    });
    let created = c.post("/v1/breakglass", &body).await;
    let v: Value = match created_or_ended(&c, created).await {
        Ok(v) => v,
        Err(e) => {
            if let (true, Some(k)) = (generated, &key_path) {
                let _ = std::fs::remove_file(k);
            }
            return Err(e);
        }
    };
    let key_path = match key_path {
        Some(k) if generated && !certifies_a_key(&v) => {
            std::fs::remove_file(&k).with_context(|| format!("removing {}", k.display()))?;
            None
        }
        Some(k) if generated => Some(adopt_key(&k, &s(&v, "id"))?),
        other => other,
    };
    if !out.json && !ended_ungranted(&v) {
        let told = if v["security_notified"] == false {
            "no one in security was notified (no [[notify]] sink on the server reaches them, or the security group has no one but you): tell whoever reviews break-glass access yourself"
        } else {
            "security is being notified"
        };
        // As the grant says: break-glass is recorded in full where Warden records sessions.
        let recorded = if v["recording"] == "full" {
            "granted at once, recorded in full"
        } else {
            "granted at once; sessions at this target are not recorded (Warden records SSH sessions only)"
        };
        println!(
            "BREAK-GLASS{}: {recorded}; {told}; postmortem {} is open.\n",
            if a.drill { " DRILL" } else { "" },
            s(&v, "id")
        );
    }
    finish(&v, key_path.as_deref(), true, out)?;
    refused_if_ended(&v)
}

fn print_postmortem(p: &Value) {
    fields(&[
        ("id", s(p, "id")),
        ("state", s(p, "state")),
        (
            "drill",
            if p["drill"] == true {
                "yes".into()
            } else {
                String::new()
            },
        ),
        ("requester", s(p, "requester")),
        ("target", s(p, "target")),
        ("role", s(p, "role")),
        ("reason", s(p, "reason")),
        ("opened", instant(p, "opened_at")),
        ("closed", instant(p, "closed_at")),
        ("closed by", s(p, "closed_by")),
        ("link", s(p, "link")),
        ("note", s(p, "note")),
    ]);
}

pub async fn postmortem(
    server: Option<String>,
    cmd: PostmortemCommand,
    out: Output,
) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        PostmortemCommand::List { all, limit, before } => {
            let q = query(&[
                ("all", all.then(|| "true".into())),
                ("limit", Some(limit.to_string())),
                ("before", before),
            ]);
            let v: Value = c.get(&format!("/v1/postmortems{q}")).await?;
            if out.json {
                return out.json(&v);
            }
            let rows: Vec<Vec<String>> = v["postmortems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(p, "id"),
                        s(p, "state"),
                        if p["drill"] == true {
                            "drill".into()
                        } else {
                            "-".into()
                        },
                        s(p, "requester"),
                        format!("{}/{}", s(p, "target"), s(p, "role")),
                        instant(p, "opened_at"),
                    ]
                })
                .collect();
            table(
                &["ID", "STATE", "DRILL", "REQUESTER", "ROLE", "OPENED"],
                &rows,
            );
            if rows.len() == limit
                && let Some(last) = rows.last().and_then(|r| r.first())
            {
                eprintln!(
                    "{} shown, newest first; more may follow: add --before {last}",
                    crate::output::count(limit, "postmortem")
                );
            }
            Ok(())
        }
        PostmortemCommand::Show { id } => {
            let v: Value = c.get(&format!("/v1/postmortems/{}", segment(&id))).await?;
            if out.json {
                return out.json(&v);
            }
            print_postmortem(&v);
            Ok(())
        }
        PostmortemCommand::Close { id, link, note } => {
            let v: Value = c
                .post(
                    &format!("/v1/postmortems/{}/close", segment(&id)),
                    &json!({ "link": link, "note": note }),
                )
                .await?;
            if out.json {
                return out.json(&v);
            }
            print_postmortem(&v);
            Ok(())
        }
    }
}

/// `warden report drills`: when each break-glass role was last drilled.
pub async fn drills(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    let v: Value = c.get("/v1/report/drills").await?;
    if out.json {
        return out.json(&v);
    }
    let rows: Vec<Vec<String>> = v["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(d, "target"),
                s(d, "role"),
                match d["last_drill"].as_str() {
                    Some(t) => to_the_second(t),
                    None => "never".into(),
                },
                if d["overdue"] == true {
                    "OVERDUE: no drill in the past 365 days".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    table(&["TARGET", "ROLE", "LAST DRILL", "STATUS"], &rows);
    Ok(())
}

pub async fn notify(server: Option<String>, cmd: NotifyCommand, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        NotifyCommand::Status => {
            let v: Value = c.get("/v1/notifications/status").await?;
            if out.json {
                return out.json(&v);
            }
            fields(&[
                ("pending", s(&v, "pending")),
                ("retrying", s(&v, "retrying")),
                ("delivered", s(&v, "delivered")),
                ("skipped (no longer applied)", s(&v, "skipped")),
                ("oldest pending", s(&v, "oldest_pending")),
            ]);
            let backlog: Vec<&Value> = v["backlog"].as_array().into_iter().flatten().collect();
            let of = |name: &str| backlog.iter().find(|b| b["sink"] == name).copied();
            let count = |b: Option<&Value>, k: &str| b.map_or(0, |b| b[k].as_u64().unwrap_or(0));
            let mut rows: Vec<Vec<String>> = v["sinks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let name = r["name"].as_str().unwrap_or_default();
                    let b = of(name);
                    vec![
                        name.to_owned(),
                        s(r, "kind"),
                        s(r, "destination"),
                        count(b, "pending").to_string(),
                        count(b, "retrying").to_string(),
                        b.and_then(|b| b["last_error"].as_str())
                            .unwrap_or_default()
                            .to_owned(),
                    ]
                })
                .collect();
            // Notifications for a sink the config no longer names wait until it is back.
            rows.extend(
                backlog
                    .iter()
                    .filter(|b| b["configured"] == false)
                    .map(|b| {
                        vec![
                            s(b, "sink"),
                            "(not configured)".into(),
                            "queued until a sink of this name is configured again".into(),
                            count(Some(b), "pending").to_string(),
                            count(Some(b), "retrying").to_string(),
                            String::new(),
                        ]
                    }),
            );
            println!();
            table(
                &[
                    "SINK",
                    "KIND",
                    "DESTINATION",
                    "PENDING",
                    "RETRYING",
                    "LAST ERROR",
                ],
                &rows,
            );
            Ok(())
        }
    }
}
