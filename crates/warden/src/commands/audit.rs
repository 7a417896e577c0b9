//! `audit search`.

use clap::Subcommand;
use serde_json::Value;

use crate::client::Client;
use crate::output::{Output, table};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search events by user, target, request, code and time (RFC 3339).
    Search {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        request: Option<String>,
        /// Event code (W2000) or name (request.created).
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(server: Option<String>, cmd: AuditCommand, out: Output) -> anyhow::Result<()> {
    let AuditCommand::Search {
        user,
        target,
        request,
        code,
        from,
        to,
        limit,
    } = cmd;
    let q = query(&[
        ("user", user),
        ("target", target),
        ("request", request),
        ("code", code),
        ("from", from),
        ("to", to),
        ("limit", Some(limit.to_string())),
    ]);
    let v: Value = Client::new(server)?.get(&format!("/v1/audit{q}")).await?;
    if out.json {
        return out.json(&v);
    }
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let ev = &e["event"];
            let s = |p: &str| {
                ev.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            vec![
                e["seq"].to_string(),
                s("/time"),
                s("/code"),
                s("/action"),
                s("/actor/user"),
                s("/target"),
                s("/request_id"),
                s("/outcome/result"),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "TIME", "CODE", "ACTION", "USER", "TARGET", "REQUEST", "OUTCOME",
        ],
        &rows,
    );
    Ok(())
}
