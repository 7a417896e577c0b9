//! `report`: the zero-standing-privilege scorecard of a period, as a table showing where each
//! figure stands against its target band, or as JSON.

use clap::{Args, Subcommand};
use warden_domain::report::{Band, Figure, Scorecard, Standing};

use crate::client::{Client, query};
use crate::output::{Output, table};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    other: Option<ReportCommand>,
    /// Start of the period, RFC 3339 (default: 30 days before --to).
    #[arg(long)]
    from: Option<String>,
    /// End of the period, RFC 3339, exclusive (default: now).
    #[arg(long)]
    to: Option<String>,
}

/// Reports other than the scorecard.
#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// When each break-glass role was last drilled; flags any not drilled within a year.
    Drills,
}

/// How a figure's value reads.
#[derive(Clone, Copy)]
enum Unit {
    Share,
    Seconds,
    Count,
}

fn duration(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.2} s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, sec) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Seconds => duration(v),
        Unit::Count => format!("{v}"),
    }
}

fn band(b: &Band, unit: Unit) -> String {
    match (b.min, b.max) {
        (None, None) => "-".into(),
        (Some(lo), Some(hi)) => format!("{} to {}", value(lo, unit), value(hi, unit)),
        (Some(lo), None) => format!(">= {}", value(lo, unit)),
        (None, Some(0.0)) => "0".into(),
        (None, Some(hi)) => format!("<= {}", value(hi, unit)),
    }
}

fn row(name: &str, f: &Figure, unit: Unit) -> Vec<String> {
    let shown = match (f.value, f.of) {
        (None, _) => "no data".into(),
        (Some(v), Some(of)) => format!("{} ({} of {of})", value(v, unit), f.count),
        (Some(v), None) if matches!(unit, Unit::Seconds) => {
            format!("{} (n={})", value(v, unit), f.count)
        }
        (Some(v), None) => value(v, unit),
    };
    let standing = match f.standing {
        Standing::Untargeted => "",
        Standing::Within => "on target",
        Standing::Below => "BELOW",
        Standing::Above => "ABOVE",
        Standing::NoData => "no data",
    };
    vec![
        name.to_owned(),
        shown,
        band(&f.band, unit),
        standing.to_owned(),
    ]
}

pub async fn run(server: Option<String>, a: ReportArgs, out: Output) -> anyhow::Result<()> {
    if let Some(ReportCommand::Drills) = a.other {
        return super::breakglass::drills(server, out).await;
    }
    let client = Client::new(server)?;
    let path = format!("/v1/report{}", query(&[("from", a.from), ("to", a.to)]));
    let card: Scorecard = client.get(&path).await?;
    if out.json {
        return out.json(&card);
    }
    // To the millisecond where a bound has one (a period of under a second would otherwise
    // read as empty), else to the second.
    let time = |t| warden_domain::rfc3339(warden_domain::to_millisecond(t));
    println!(
        "Zero-standing-privilege scorecard, {} to {}",
        time(card.from),
        time(card.to)
    );
    let states: Vec<String> = card
        .requests
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let total: u64 = card.requests.values().sum();
    println!(
        "Requests created: {total}{}{}; grants: {}",
        if states.is_empty() { "" } else { " — " },
        states.join(", "),
        card.grants
    );
    println!();
    table(
        &["FIGURE", "VALUE", "TARGET", "STANDING"],
        &[
            row("just-in-time share", &card.jit_share, Unit::Share),
            row("with ticket or incident", &card.ticket_share, Unit::Share),
            row(
                "mean privilege duration",
                &card.privilege_seconds,
                Unit::Seconds,
            ),
            row(
                "approval time, median",
                &card.approval_median_seconds,
                Unit::Seconds,
            ),
            row(
                "approval time, p90",
                &card.approval_p90_seconds,
                Unit::Seconds,
            ),
            row("break-glass uses", &card.breakglass_uses, Unit::Count),
            row("postmortems open", &card.postmortems_open, Unit::Count),
            row(
                "revocation time, mean",
                &card.revocation_mean_seconds,
                Unit::Seconds,
            ),
            row(
                "revocation time, max",
                &card.revocation_max_seconds,
                Unit::Seconds,
            ),
            row(
                "revocation failures",
                &card.revocation_failures,
                Unit::Count,
            ),
        ],
    );
    println!();
    println!("Break-glass drills: {}", card.breakglass_drills);
    match card.standing_accounts {
        Some(n) => println!("Standing privileged accounts at targets: {n}"),
        None => println!(
            "Standing privileged accounts at targets: not measured (discovery is not available yet); the just-in-time share counts only access Warden saw."
        ),
    }
    Ok(())
}
