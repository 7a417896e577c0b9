//! One module per command group.

pub mod audit;
mod audit_verify;
pub mod auth;
pub mod breakglass;
pub mod db;
pub mod policy;
pub mod report;
pub mod requests;
pub mod ssh;
pub mod vault;

use std::io::Read;

use serde_json::Value;
use warden_server::api::{EVENTS_AT_ONCE, POSTMORTEMS_AT_ONCE, REQUESTS_AT_ONCE};

use crate::client::{Client, segment};
use crate::exit::{self, Failure};

/// Active grants read per page of the listing [`active_grants`] follows, and most pages it
/// reads: a target's grants past these are reached with `--request ID`.
const GRANT_PAGE: usize = REQUESTS_AT_ONCE;
const GRANT_PAGES: usize = 10;

/// The caller's active grants for `target`, the one that ends last first; with `request`,
/// that grant alone, read by its id. None is a refusal with the documented exit codes: no
/// active grant for a target they may request (3), no such target or no such grant of theirs
/// for it (4).
pub(crate) async fn active_grants(
    c: &Client,
    target: &str,
    request: Option<&str>,
) -> anyhow::Result<(String, Vec<Value>)> {
    let me: Value = c.get("/v1/auth/whoami").await?;
    let user = me["user"].as_str().unwrap_or_default().to_owned();
    if let Some(id) = request {
        let grant = requested_grant(c, &user, target, id).await?;
        return Ok((user, vec![grant]));
    }
    let mut grants: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    let mut read_all = false;
    for _ in 0..GRANT_PAGES {
        let mut path = format!(
            "/v1/requests?state=active&requester={}&target={}&limit={GRANT_PAGE}",
            segment(&user),
            segment(target)
        );
        if let Some(id) = &before {
            path.push_str(&format!("&before={}", segment(id)));
        }
        let list: Value = c.get(&path).await?;
        let page = list["requests"].as_array().cloned().unwrap_or_default();
        before = page
            .last()
            .and_then(|r| r["id"].as_str())
            .map(str::to_owned);
        let full = page.len() == GRANT_PAGE && before.is_some();
        grants.extend(page.into_iter().filter(|r| r["target"] == target));
        if !full {
            read_all = true;
            break;
        }
    }
    if !read_all {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "you hold more than {} active grants for {target}, more than are looked through to pick one: name the grant to use with --request ID (`warden request list --state active` lists them), or revoke those you no longer need",
                GRANT_PAGE * GRANT_PAGES
            ),
        )
        .into());
    }
    grants.sort_by_key(|r| {
        std::cmp::Reverse(r["expires_at"].as_str().unwrap_or_default().to_owned())
    });
    if !grants.is_empty() {
        return Ok((user, grants));
    }
    let targets: Value = c.get("/v1/targets").await?;
    let known = targets["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["target"] == target);
    Err(if known {
        Failure::new(exit::REFUSED, format!("you hold no active grant for {target}: request one with `warden request create {target} --role ROLE --reason ... --ttl TTL` (`warden targets` lists the roles you may request and their longest TTL)"))
    } else {
        // The client sees only what the caller may request, so it cannot tell a target the
        // policy lacks from one hidden from them; the code is the server's for a missing one.
        Failure {
            api_code: Some("unknown_target".to_owned()),
            ..Failure::new(exit::NOT_FOUND, format!("no target {target} that you may request: `warden targets` lists them"))
        }
    }
    .into())
}

/// Grant `id` of `user`'s for `target`, read by its id, if it is an active one; else a
/// refusal saying what it is instead.
async fn requested_grant(c: &Client, user: &str, target: &str, id: &str) -> anyhow::Result<Value> {
    let not_yours = || -> anyhow::Error {
        Failure::new(
            exit::NOT_FOUND,
            format!("{id} is none of your active grants for {target} (`warden request list --state active` lists them)"),
        )
        .into()
    };
    let r: Value = match c.get(&format!("/v1/requests/{}", segment(id))).await {
        Ok(r) => r,
        Err(e)
            if e.downcast_ref::<Failure>()
                .is_some_and(|f| f.code == exit::NOT_FOUND) =>
        {
            return Err(not_yours());
        }
        Err(e) => return Err(e),
    };
    if r["requester"] != user {
        return Err(not_yours());
    }
    if r["target"] != target {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "{id} is your grant for {}, not {target}: name a grant for {target} (`warden request list --state active` lists them)",
                r["target"].as_str().unwrap_or_default()
            ),
        )
        .into());
    }
    if r["state"] != "active" {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "{id} is {}, not active: request new access with `warden request create {target} --role ROLE --reason ... --ttl TTL`",
                r["state"].as_str().unwrap_or_default()
            ),
        )
        .into());
    }
    Ok(r)
}

/// `DIR/warden.db`, the database an offline command reads, or a usage error saying that `dir`
/// is no server's data directory.
pub(crate) fn database_in(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let db = dir.join("warden.db");
    if db.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is empty, with no Warden database in it: most likely copied without its warden.db-wal; copy the data directory whole, or restore it from a backup",
                db.display()
            ),
        )
        .into());
    }
    if db.is_file() {
        return Ok(db);
    }
    Err(Failure::new(
        exit::USAGE,
        format!(
            "{} holds no Warden database (warden.db): pass the server's data directory with --data-dir",
            dir.display()
        ),
    )
    .into())
}

/// Parses a request id argument before anything is sent: a malformed one is a usage error
/// (an empty one would even name another endpoint).
pub fn request_id(arg: &str) -> Result<String, String> {
    arg.parse::<warden_domain::RequestId>()
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

/// Parses a session id argument, as [`request_id`] does a request's: the whole id `warden
/// sessions` shows (in any letter case), else a usage error.
pub fn session_id(arg: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(arg.trim())
        .map(|id| id.to_string())
        .map_err(|_| {
            format!("{arg:?} is not a session id: give the whole id, as `warden sessions` shows a live one and `warden audit search --code session.started` any")
        })
}

/// A TOTP code as typed (`--totp`, `mfa confirm`, the login prompt): its 6 digits, checked
/// here so that a slip is a usage error, not a wrong code counted towards a lockout.
pub fn totp_code(code: &str) -> Result<String, String> {
    let digits = code.trim();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_owned())
    } else if digits.is_empty() {
        Err("the TOTP code is empty: type the 6 digits your authenticator shows".into())
    } else {
        Err("a TOTP code is the 6 digits your authenticator shows".into())
    }
}

/// Reads a secret (`what`: "password", "TOTP code") from stdin or a prompt without echo.
pub fn read_secret(what: &str, from_stdin: bool) -> anyhow::Result<String> {
    let s = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut s)
            .map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::InvalidData {
                    "it is not UTF-8 text".to_owned()
                } else {
                    e.to_string()
                };
                Failure::new(
                    exit::USAGE,
                    format!("cannot read the {what} from stdin: {why}"),
                )
            })?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let mut prompt = format!("{what}: ");
        if let Some(first) = prompt.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        rpassword::prompt_password(prompt).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("cannot prompt for the {what} ({e}); pass --password-stdin"),
            )
        })?
    };
    if s.is_empty() {
        return Err(Failure::new(exit::USAGE, format!("the {what} is empty")).into());
    }
    Ok(s)
}

/// A whole number as typed, or `None`: digits only (no sign), within `u64`.
fn whole_number(text: &str) -> Option<u64> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A `--limit` of a listing that returns at most `max` at once: a whole number from 1 to it.
fn limit_of(text: &str, max: usize, what: &str, more: &str) -> Result<usize, String> {
    whole_number(text)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            format!("--limit takes a whole number from 1 to {max}: the most {what} shown at once ({more})")
        })
}

/// `request list --limit`.
pub fn requests_limit(text: &str) -> Result<usize, String> {
    limit_of(
        text,
        REQUESTS_AT_ONCE,
        "requests",
        "--before ID shows those older than ID",
    )
}

/// `postmortem list --limit`.
pub fn postmortems_limit(text: &str) -> Result<usize, String> {
    limit_of(
        text,
        POSTMORTEMS_AT_ONCE,
        "postmortems",
        "--before ID shows those older than ID",
    )
}

/// `audit search --limit`.
pub fn events_limit(text: &str) -> Result<usize, String> {
    limit_of(
        text,
        EVENTS_AT_ONCE,
        "events",
        "--after SEQ shows those after event SEQ",
    )
}

/// An event's sequence number (`audit prove SEQ`, `audit search --after`).
pub fn sequence_number(text: &str) -> Result<u64, String> {
    whole_number(text).ok_or_else(|| {
        "an event's sequence number is a whole number, as `warden audit search` shows it in its SEQ column".to_owned()
    })
}

/// The size of the log at a checkpoint (`audit prove --size`, `audit prove-consistency`).
pub fn log_size(text: &str) -> Result<u64, String> {
    whole_number(text).ok_or_else(|| {
        "a checkpoint's size is a whole number of events: the second line of a checkpoint, as `warden audit checkpoint` prints it".to_owned()
    })
}

/// Longest public key file read: an RSA key line of 16384 bits is under 3 KiB.
const PUBLIC_KEY_FILE_MAX: u64 = 16 * 1024;

/// A replay's `--speed`: a finite factor from 0.01 (a hundred times slower) to 100.
pub fn playback_speed(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.01..=100.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "the speed is a factor from 0.01 to 100 (2 plays twice as fast), not {text:?}"
        )),
    }
}

/// A replay's `--idle-limit`: the longest pause, from 0 to 3600 seconds.
pub fn idle_limit(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=3600.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "the idle limit is a number of seconds from 0 to 3600, not {text:?}"
        )),
    }
}

/// Reads the OpenSSH public key line in `file` for the server, refusing a private key before
/// anything leaves this machine: `keys add ~/.ssh/id_ed25519` is an easy slip.
pub fn read_public_key(file: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(PUBLIC_KEY_FILE_MAX).read_to_string(&mut text))
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
    if ["PRIVATE KEY", "PuTTY-User-Key-File", "Private-Lines"]
        .iter()
        .any(|mark| text.contains(mark))
    {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is a private key, which never leaves your machine: pass its public half ({}.pub)",
                file.display(),
                file.display()
            ),
        )
        .into());
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_totp_code_is_six_digits() {
        assert_eq!(totp_code(" 012345\n"), Ok("012345".into()));
        for bad in ["12345", "1234567", "12ab56", "１２３４５６"] {
            assert!(totp_code(bad).unwrap_err().contains("6 digits"), "{bad}");
        }
        assert!(totp_code("").unwrap_err().contains("empty"));
    }

    #[test]
    fn numbers_say_what_they_take() {
        assert_eq!(requests_limit("1000"), Ok(1000));
        assert_eq!(events_limit(" 10000 "), Ok(10_000));
        for bad in [
            "-1",
            "0",
            "1001",
            "abc",
            "",
            "+5",
            "1e3",
            "99999999999999999999999",
        ] {
            let why = requests_limit(bad).unwrap_err();
            assert!(why.contains("from 1 to 1000"), "{bad}: {why}");
        }
        assert_eq!(sequence_number("0"), Ok(0));
        assert!(sequence_number("abc").unwrap_err().contains("SEQ column"));
        assert!(log_size("-3").unwrap_err().contains("checkpoint"));
    }

    #[test]
    fn a_replay_plays_at_a_bounded_pace() {
        assert_eq!(playback_speed("2"), Ok(2.0));
        assert_eq!(idle_limit("0"), Ok(0.0));
        for bad in ["NaN", "inf", "0", "1e-320", "-1", "101", "fast"] {
            assert!(playback_speed(bad).is_err(), "{bad}");
        }
        for bad in ["NaN", "-5", "3601", "inf"] {
            assert!(idle_limit(bad).is_err(), "{bad}");
        }
    }
}
