//! What the server's own log keeps of a request's path: never a name no user has where a user
//! name goes (it may be a password typed there, which the audit log withholds too), and never
//! more than the start of a path however long it is and whatever characters it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

/// `user set-password`, `user unlock` and `revoke --user … --all` on names no user has: the
/// access log's line of each refusal says the name's length, not the name; a user of the
/// directory is named as sent.
#[test]
fn a_name_no_user_has_in_a_user_path_is_not_logged() {
    let env = Env::start();
    let admin = env.login("admin");
    let set = admin.run(
        &[
            "user",
            "set-password",
            "hunter2-secret-pass",
            "--password-stdin",
        ],
        Some("a long new password 1"),
    );
    assert_eq!(set.code, 4, "{set:?}");
    fails(&admin, &["user", "unlock", "correct-horse-battery"], 4);
    fails(&admin, &["revoke", "--user", "tr0ub4dor-and-3", "--all"], 4);
    // Refused too (an administrator lifts no lock of their own), and so logged at info level.
    fails(&admin, &["user", "unlock", "admin"], 3);

    let log = || env.server.stderr();
    wait_until("the access log's lines", Duration::from_secs(5), || {
        log().contains("/v1/users/admin/unlock")
    });
    let log = log();
    for typed in [
        "hunter2-secret-pass",
        "correct-horse-battery",
        "tr0ub4dor-and-3",
    ] {
        assert!(!log.contains(typed), "{typed} in the log:\n{log}");
    }
    for withheld in [
        "/v1/users/(no such user, 19 characters)/password",
        "/v1/users/(no such user, 21 characters)/unlock",
        "/v1/users/(no such user, 15 characters)/revoke-all",
    ] {
        assert!(log.contains(withheld), "{withheld} not in the log:\n{log}");
    }
}

/// A path far over the limit, with a two-byte character across the log's 256-byte cap, is
/// refused (414) and logged with the start of its path only.
#[test]
fn a_long_path_is_logged_cut_whatever_character_stands_at_the_cap() {
    let env = Env::start();
    // Within the 32 KiB a request head may take, so that the API sees it and answers.
    let path = format!("/v1/{}é{}", "a".repeat(251), "b".repeat(20_000));
    let answer = warden_testkit::http_get(env.server.port(), &path).unwrap();
    assert_eq!(answer.status, 414, "{answer:?}");
    let log = || env.server.stderr();
    wait_until("the refusal's log line", Duration::from_secs(5), || {
        log().contains(&"a".repeat(251))
    });
    let log = log();
    assert!(!log.contains("é"), "{log}");
    assert!(!log.contains("bbbb"), "the path was logged whole");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a log line of {longest} bytes");
}
