//! `policy check|test|explain|reload|schema`.
//!
//! `check` and `test` run locally on a directory, so a policy repository's CI needs only the
//! `warden` binary; `explain` and `reload` ask the server.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output::{Output, count, fields, joined};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory; reports every problem with file and line.
    Check {
        /// The policy directory (targets, Cedar rules, tests/).
        dir: PathBuf,
    },
    /// Run the fixture cases in DIR/tests against the policy in DIR.
    Test {
        /// The policy directory; its cases are in DIR/tests/*.toml.
        dir: PathBuf,
    },
    /// Show what the live policy decides for a would-be request, and which rules decided it.
    Explain {
        /// The target, as `warden targets` names it.
        target: String,
        /// The role on it.
        #[arg(long)]
        role: String,
        /// Explain for another user (administrators).
        #[arg(long)]
        user: Option<String>,
        /// The TTL the request would ask for.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The ticket it would carry.
        #[arg(long)]
        ticket: Option<String>,
        /// Explain break-glass access under the break-glass rules.
        #[arg(long)]
        breakglass: bool,
    },
    /// Make the server reload its policy directory (administrators).
    Reload,
    /// Print the Cedar schema policies are validated against.
    Schema,
}

/// Every problem `report` holds, and its warnings, as `file:line:column: message` lines
/// (`warning: ` before a warning's message) or, with `--json`, as `{"valid": false,
/// "diagnostics": [...]}`, each with its `severity`; then the failure.
fn problems(
    report: &warden_policy::Report,
    dir: &std::path::Path,
    out: Output,
) -> anyhow::Result<()> {
    if out.json {
        out.json(&json!({ "valid": false, "diagnostics": report.diagnostics }))?;
    } else {
        eprintln!("{report}");
    }
    let errors = report.errors().diagnostics.len();
    let warnings = report.diagnostics.len() - errors;
    let also = if warnings > 0 {
        format!(" (and {})", count(warnings, "warning"))
    } else {
        String::new()
    };
    Err(Failure::new(
        exit::FAILURE,
        format!("{}{also} in {}", count(errors, "problem"), dir.display()),
    )
    .into())
}

pub async fn run(server: Option<String>, cmd: PolicyCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { dir } => {
            // What a server would refuse the directory for whatever it says is only a warning
            // here: the copy checked (in CI, often writable by its group) is not the one served.
            let open = warden_server::state::open_to_others(&dir, warden_policy::Severity::Warning);
            match warden_server::state::check_policy(&dir) {
                Ok(p) => {
                    let breakglass: Vec<String> = p
                        .breakglass_roles()
                        .iter()
                        .map(|(t, r)| format!("{t}/{r}"))
                        .collect();
                    // Warnings keep the policy valid: they are shown, and the exit status is 0.
                    let mut warnings = p.warnings().to_vec();
                    warnings.extend(open);
                    if out.json {
                        out.json(&json!({ "valid": true, "digest": p.digest(), "rules": p.rule_count(), "targets": p.targets().iter().count(), "breakglass_roles": breakglass, "diagnostics": warnings }))
                    } else {
                        for w in &warnings {
                            eprintln!("{w}");
                        }
                        let noted = if warnings.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", count(warnings.len(), "warning"))
                        };
                        println!(
                            "OK: {}, {}{noted} (digest {})",
                            count(p.rule_count(), "rule"),
                            count(p.targets().iter().count(), "target"),
                            p.digest()
                        );
                        if !breakglass.is_empty() {
                            println!("Break-glass roles: {}", breakglass.join(", "));
                        }
                        Ok(())
                    }
                }
                Err(mut report) => {
                    report.diagnostics.extend(open);
                    problems(&report, &dir, out)
                }
            }
        }
        PolicyCommand::Test { dir } => {
            let report = match warden_server::state::test_policy(&dir) {
                Ok(r) => r,
                Err(report) => return problems(&report, &dir, out),
            };
            if out.json {
                out.json(&serde_json::json!({
                    "cases": report.cases,
                    "passed": report.passed(),
                    "failed": report.failed(),
                }))?;
            } else {
                for c in &report.cases {
                    let mark = if c.passed { "PASS" } else { "FAIL" };
                    println!("{mark}  {}:{}: {}", c.file, c.line, c.name);
                    if let Some(m) = &c.message {
                        println!("      {m}");
                    }
                }
                println!("{} passed, {} failed", report.passed(), report.failed());
            }
            if report.failed() > 0 {
                return Err(Failure::new(
                    exit::FAILURE,
                    format!("{} policy test case(s) failed", report.failed()),
                )
                .into());
            }
            // A CI job that tests nothing must not pass as if it had.
            if report.cases.is_empty() {
                return Err(Failure::new(
                    exit::FAILURE,
                    format!(
                        "no test cases in {}: write them in tests/*.toml (the demo policy's tests/access.toml shows every key)",
                        dir.join("tests").display()
                    ),
                )
                .into());
            }
            Ok(())
        }
        PolicyCommand::Explain {
            target,
            role,
            user,
            ttl,
            ticket,
            breakglass,
        } => {
            let v: Value = Client::new(server)?
                .post("/v1/policy/explain", &json!({ "user": user, "target": target, "role": role, "ttl": ttl, "ticket": ticket, "breakglass": breakglass }))
                .await?;
            if out.json {
                return out.json(&v);
            }
            let d = &v["decision"];
            let list = |k: &str| joined(&d[k], ", ");
            let allowed = d["allowed"] == true;
            let refused = v["refusals"].as_array().is_some_and(|r| !r.is_empty());
            fields(&[
                ("user", v["user"].as_str().unwrap_or_default().into()),
                (
                    "request",
                    format!(
                        "{}{} --role {} --ttl {ttl}{}",
                        if breakglass { "breakglass " } else { "" },
                        v["target"].as_str().unwrap_or_default(),
                        v["role"].as_str().unwrap_or_default(),
                        ticket
                            .as_deref()
                            .map(|t| format!(" --ticket {}", t.trim()))
                            .unwrap_or_default()
                    ),
                ),
                (
                    "decision",
                    // The rules' verdict, and whether this request as asked would pass it.
                    match (allowed, refused) {
                        (true, false) => "allow".into(),
                        (true, true) => {
                            "allow for the role, but this request would be refused (below)".into()
                        }
                        (false, _) => "deny".into(),
                    },
                ),
                (
                    "rules",
                    if list("rules").is_empty() {
                        "(no rule matched)".into()
                    } else {
                        list("rules")
                    },
                ),
                (
                    "tier",
                    if allowed {
                        d["tier"].as_str().unwrap_or_default().into()
                    } else {
                        String::new()
                    },
                ),
                (
                    "max ttl",
                    if allowed {
                        d["max_ttl"].as_str().unwrap_or_default().into()
                    } else {
                        String::new()
                    },
                ),
                ("ticket", list("ticket_patterns")),
                (
                    "decided at",
                    v["rules_time"].as_str().unwrap_or_default().into(),
                ),
                (
                    "mfa",
                    if d["mfa"] == true {
                        "required".into()
                    } else {
                        String::new()
                    },
                ),
                (
                    "recording",
                    if allowed {
                        d["recording"].as_str().unwrap_or_default().into()
                    } else {
                        String::new()
                    },
                ),
                (
                    "times out",
                    // Nothing waits for an approval of an automatic or break-glass grant.
                    match d["pending_timeout"].as_str() {
                        Some(t) if allowed => format!("{t} after the request, unless approved"),
                        _ => String::new(),
                    },
                ),
                ("would refuse", joined(&v["refusals"], "; ")),
            ]);
            Ok(())
        }
        PolicyCommand::Reload => {
            let v: Value = Client::new(server)?
                .post("/v1/policy/reload", &json!({}))
                .await?;
            if out.json {
                out.json(&v)
            } else {
                println!(
                    "Policy reloaded (digest {}).",
                    v["digest"].as_str().unwrap_or_default()
                );
                if let Some(notice) = v["notice"].as_str() {
                    eprintln!("Note: {notice}");
                }
                Ok(())
            }
        }
        PolicyCommand::Schema => out.document("schema", warden_policy::SCHEMA),
    }
}
