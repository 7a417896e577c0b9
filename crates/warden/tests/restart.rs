//! A deployment-style server (`--config FILE`) keeps all state across a restart, shuts down
//! cleanly on SIGTERM, and serves its health, readiness and OpenAPI endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use warden_testkit::{Server, http_get};

/// The test policy, written to `<dir>/policy` for a config's `policy_dir`.
fn test_policy(dir: &Path) -> std::path::PathBuf {
    let policy = dir.join("policy");
    write_policy(
        &policy,
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    policy
}

#[test]
fn state_survives_restart_and_sigterm_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = test_policy(dir.path());
    let hash = password_hash("alice-password-1");
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "policy_dir = {:?}\ntoken_ttl = \"1h\"\n\n[users.alice]\ngroups = [\"dev\"]\nmanager = \"mallory\"\npassword_hash = {:?}\n\n[users.mallory]\ngroups = [\"managers\"]\n\n[users.bob]\ngroups = [\"sre\"]\n",
            policy.display().to_string(),
            hash
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--config", &config],
        &[("WARDEN_BOOTSTRAP_PASSWORD", "admin-password-1")],
    );

    // Keys, and the database with its hashes and audit log, are private to the server's user.
    use std::os::unix::fs::PermissionsExt;
    for key in [
        "ssh_user_ca",
        "audit_signing.key",
        "master.key",
        "warden.db",
        "warden.db-wal",
        "warden.db-shm",
    ] {
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert!(!server.stdout().contains("admin-password-1"));

    let start_another =
        || serve_to_its_end(&["--config", &config, "--data-dir", data.to_str().unwrap()]);
    // A second server on the same data dir refuses to start, naming the one that holds it.
    let second = start_another();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by another warden (pid {})", server.pid())),
        "{stderr}"
    );
    // Nor once the lock file is deleted as if stale: the lock is the directory's.
    std::fs::remove_file(data.join("warden.lock")).unwrap();
    let third = start_another();
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");

    let alice = server.cli();
    assert!(
        alice
            .run(
                &["login", "--user", "alice", "--password-stdin"],
                Some("alice-password-1")
            )
            .success()
    );
    let admin = server.cli();
    assert!(
        admin
            .run(
                &["login", "--user", "admin", "--password-stdin"],
                Some("admin-password-1")
            )
            .success()
    );
    let active = id(&create(&alice, "web", "view", &[]));
    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-9"]));
    let events_before = ok(&admin, &["audit", "search", "--limit", "10000"])["events"]
        .as_array()
        .unwrap()
        .len();

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM should exit cleanly: {status:?}\n{}",
        server.stderr()
    );
    assert!(server.stdout().contains("Warden stopped."));
    // Stopped cleanly, the database file alone holds everything: a copy of it is a backup.
    let wal = std::fs::metadata(data.join("warden.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log was left with {wal} bytes");
    // Its audit signing key lost, the server does not sign on with a new one.
    let key = data.join("audit_signing.key");
    let aside = data.join("audit_signing.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let keyless = start_another();
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert_eq!(keyless.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("audit signing key") && stderr.contains("restore the key"),
        "{stderr}"
    );
    assert!(!key.exists());
    std::fs::rename(&aside, &key).unwrap();
    // A proxy host key others can read stops the server before it says it started.
    let host_key = data.join("ssh_host_ed25519_key");
    std::fs::set_permissions(&host_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = start_another();
    let stderr = String::from_utf8_lossy(&exposed.stderr);
    assert_eq!(exposed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&host_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A damaged one too, saying how to have it back.
    let kept = std::fs::read(&host_key).unwrap();
    std::fs::write(&host_key, "garbage\n").unwrap();
    let damaged = start_another();
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert_eq!(damaged.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restore it from your backup"), "{stderr}");
    std::fs::write(&host_key, kept).unwrap();
    server.restart();

    // Tokens, requests, grants and the audit log all survived.
    assert_eq!(state(&alice, &active), "active");
    let p = ok(&alice, &["request", "show", &pending]);
    assert!(p["state"] == "pending" || p["state"] == "timed-out", "{p}");
    let events = ok(&admin, &["audit", "search", "--limit", "10000"])["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(events.len() > events_before);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "audit sequence has gaps: {seqs:?}"
    );
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"server.stopped"), "{actions:?}");
    // One start before the restart and one after: the refused starts left no trace of starting.
    let starts = actions.iter().filter(|a| **a == "server.started").count();
    assert_eq!(starts, 2, "{actions:?}");
    // The bootstrap password is not reset on restart.
    assert!(!server.stdout().contains("Initial password"));
}

#[test]
fn health_readiness_and_openapi() {
    let env = Env::start();
    let port = env.server.port();
    assert_eq!(http_get(port, "/healthz").unwrap().status, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().status, 200);
    let doc = http_get(port, "/v1/openapi.json").unwrap();
    assert_eq!(doc.status, 200);
    let v: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/requests",
        "/v1/requests/{id}/approve",
        "/v1/auth/login",
        "/v1/policy/explain",
        "/v1/targets",
    ] {
        assert!(
            v["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    // Bodies whose every field is optional may be left out, and the document says so.
    for (path, required) in [
        ("/v1/requests/{id}/cancel", false),
        ("/v1/policy/reload", false),
        ("/v1/requests/{id}/approve", false),
        ("/v1/requests/{id}/revoke", false),
        ("/v1/auth/mfa/enroll", false),
        ("/v1/requests", true),
    ] {
        let body = &v["paths"][path]["post"]["requestBody"];
        assert_eq!(
            body["required"].as_bool().unwrap_or(false),
            required,
            "{path}: {body}"
        );
    }
    // Parameters are where the routes take them, and every response is described; a call
    // that needs a token declares the 401 it answers without one, every call the 400 of
    // framing it does not read (and `/v1` calls of a query they do not take); operation ids are unique, as code generators need them.
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in v["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let here = format!("{method} {path}");
            let op_id = op["operationId"].as_str().unwrap();
            assert!(
                operation_ids.insert(op_id),
                "{here}: operationId {op_id} used twice"
            );
            // Framing refused before any route, and oversize heads, everywhere.
            for status in ["400", "415", "417", "431", "501"] {
                assert!(op["responses"][status].is_object(), "{here}: {status}");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                let place = if in_path { "path" } else { "query" };
                assert_eq!(p["in"], place, "{here}: {p}");
                assert!(
                    !in_path || p["required"] == true,
                    "{here}: a path parameter is required: {p}"
                );
            }
            for template in path.split('/').filter(|s| s.starts_with('{')) {
                let name = template.trim_matches(['{', '}']);
                assert!(
                    op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{here}: {name} not declared"
                );
            }
            for (code, r) in op["responses"].as_object().unwrap() {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{here} {code}: {r}"
                );
            }
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                let unauthorized = &op["responses"]["401"];
                assert!(
                    unauthorized["headers"]["WWW-Authenticate"].is_object(),
                    "{here}"
                );
            }
            // A refusal that asks to be sent again later says when.
            for (code, r) in op["responses"].as_object().unwrap() {
                let later = r["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("sign_ins_busy"));
                if code == "429" || later {
                    assert!(r["headers"]["Retry-After"].is_object(), "{here} {code}");
                }
            }
        }
    }
    // Fields that take one of a few values list them.
    let states = &v["components"]["schemas"]["RequestView"]["properties"]["state"]["enum"];
    assert_eq!(states.as_array().map(Vec::len), Some(8), "{states}");
    assert!(
        states.as_array().unwrap().contains(&"timed-out".into()),
        "{states}"
    );
    // Times and ids say their format; bodies the limits the server holds their fields to.
    let schemas = &v["components"]["schemas"];
    let view = &schemas["RequestView"]["properties"];
    assert_eq!(view["created_at"]["format"], "date-time");
    assert_eq!(view["id"]["format"], "uuid");
    let create = &schemas["CreateBody"]["properties"];
    assert_eq!(create["reason"]["maxLength"], 1000);
    assert_eq!(create["ticket"]["maxLength"], 128);
    assert!(create["target"]["pattern"].is_string());
    assert_eq!(
        schemas["PasswordBody"]["properties"]["password"]["minLength"],
        12
    );
    assert!(schemas["LoginBody"]["properties"]["password"]["minLength"].is_null());
    // A body that arrives too slowly is 408; every operation's tag is described.
    assert!(v["paths"]["/v1/requests"]["post"]["responses"]["408"].is_object());
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for (path, item) in v["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for tag in op["tags"].as_array().into_iter().flatten() {
                assert!(
                    tags.contains(&tag.as_str().unwrap()),
                    "{method} {path}: {tag}"
                );
            }
        }
    }
    let missing = http_get(port, "/v1/nope").unwrap();
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("\"code\":\"no_route\""),
        "{}",
        missing.body
    );
}

#[test]
fn master_key_rotation_keeps_every_secret_usable() {
    let mut env = Env::start();
    let alice = env.login("alice");
    let uri = enroll_mfa(&alice);
    // A seed the store no longer holds: its bytes stay in the page's free space.
    enroll_mfa(&env.login("bob"));
    let out = env.login("admin").run(&["user", "reset-mfa", "bob"], None);
    assert!(out.success(), "{out:?}");
    let key_before = std::fs::read(env.server.data_dir().join("master.key")).unwrap();
    let offline = warden_testkit::Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let data = env.server.data_dir().to_str().unwrap().to_owned();

    // Not while the server runs: it would go on sealing under the old key. A conflict with
    // what runs now, not a failure.
    let out = offline.run(&["--json", "vault", "rewrap", "--data-dir", &data], None);
    assert_eq!(out.code, 6, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is in use by another warden (pid "),
        "{v}"
    );
    assert_eq!(
        std::fs::read(env.server.data_dir().join("master.key")).unwrap(),
        key_before
    );
    assert!(!env.server.data_dir().join("master.key.new").exists());

    env.server.terminate();
    // Every sealed value the database's bytes hold, live or left in free space.
    let sealed_in_files = || {
        let mut found = std::collections::BTreeSet::new();
        for name in ["warden.db", "warden.db-wal"] {
            let bytes = std::fs::read(env.server.data_dir().join(name)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for (at, _) in text.match_indices("v2.") {
                let token: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "+/=.".contains(*c))
                    .collect();
                if token.len() > 40 {
                    found.insert(token);
                }
            }
        }
        found
    };
    let before = sealed_in_files();
    assert!(!before.is_empty());
    // Not in a data dir others may change, which a server would refuse too.
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = env.server.data_dir();
        let mode = |m| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m));
        mode(0o777).unwrap();
        let out = offline.run(&["vault", "rewrap", "--data-dir", &data], None);
        mode(0o700).unwrap();
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("chmod go-w"), "{out:?}");
        assert!(!dir.join("master.key.new").exists());
        // A database others could read is made private, as a start makes it, and said so.
        let db = dir.join("warden.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let out = offline.run(&["--json", "vault", "rewrap", "--data-dir", &data], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("is made private now"), "{out:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let db = env.server.data_dir().join("warden.db");
        assert_eq!(
            std::fs::metadata(db).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["rewrapped"].as_u64().unwrap() >= 1, "{v}");
    let key_after = std::fs::read(env.server.data_dir().join("master.key")).unwrap();
    assert_ne!(key_before, key_after);
    // Nothing sealed under the old key is left in the files, not even in their free space.
    let after = sealed_in_files();
    assert!(
        before.is_disjoint(&after),
        "{:?}",
        before.intersection(&after)
    );

    // The TOTP seed sealed under the old key still works under the new one.
    env.server.restart();
    let login = sign_in(&env.server.cli(), "alice", PASSWORD, Some(&totp(&uri, 1)));
    assert!(login.success(), "{login:?}");
    assert!(env.server.terminate().success());

    // A server refuses a key that does not open its secrets, and a missing one, rather than
    // start unable to read them.
    let dir = env.server.data_dir().to_owned();
    let refused = |said: &str| {
        let out = serve_to_its_end(&["--dev", "--data-dir", &data]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
    };
    let (key, old, new) = (
        dir.join("master.key"),
        dir.join("master.key.old"),
        dir.join("master.key.new"),
    );
    // A rotation cut short after its commit, before its files were swapped: the old key in
    // place, the new one beside it. The server refuses; running the rotation again finishes it.
    std::fs::rename(&key, &new).unwrap();
    std::fs::rename(&old, &key).unwrap();
    refused("does not open the secrets");
    let out = offline.run(&["--json", "vault", "rewrap", "--data-dir", &data], None);
    assert!(out.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["finished"], true, "{v}");
    assert_eq!(std::fs::read(&key).unwrap(), key_after);
    std::fs::remove_file(&old).unwrap();
    std::fs::rename(&key, dir.join("aside")).unwrap();
    refused("is missing");
    std::fs::rename(dir.join("aside"), &key).unwrap();
    // With its key back it starts: the key opened the secrets, as the start checks.
    env.server.restart();
}

/// Without `WARDEN_BOOTSTRAP_PASSWORD`, the first start prints the administrator's password
/// once, naming how to change it; it logs in, and a restart neither prints nor resets it.
#[test]
fn the_bootstrap_password_is_printed_once_and_logs_in() {
    let mut server = Server::start(Path::new(BIN), &["serve"], &[]);
    let out = server.stdout();
    let line = out
        .lines()
        .find(|l| l.starts_with("Bootstrap admin 'admin' created."))
        .unwrap_or_else(|| panic!("no bootstrap line in {out}"));
    assert!(line.contains("warden user set-password admin"), "{line}");
    let password = line.rsplit(": ").next().unwrap().to_owned();
    let login = |server: &Server| {
        server
            .cli()
            .run(
                &["login", "--user", "admin", "--password-stdin"],
                Some(&password),
            )
            .success()
    };
    assert!(login(&server));
    assert!(server.terminate().success());
    server.restart();
    // The output of both starts: the line is there once.
    let out = server.stdout();
    assert_eq!(out.matches("Warden listening").count(), 2, "{out}");
    assert_eq!(out.matches("Bootstrap admin").count(), 1, "{out}");
    assert!(login(&server));
}

/// The demo password never reaches a real server: a data dir `--dev` made serves no real
/// server, `--dev` does not start on a real server's, nor on an address others can reach; and
/// a data dir others may write is refused.
#[test]
fn the_demo_password_stays_on_development_servers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], said: &str| {
        let out = serve_to_its_end(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(said), "{said}: {stderr}");
    };
    let dev = dir.path().join("dev");
    let mut server = Server::start_in(Path::new(BIN), &dev, &["serve", "--dev"], &[]);
    assert!(server.terminate().success());
    let dev_arg = dev.to_str().unwrap();
    refused(&["--data-dir", dev_arg], "was made by `warden serve --dev`");
    server.restart();
    assert!(server.terminate().success());
    // Its marker deleted, or left out of a copy, the log still tells.
    std::fs::remove_file(dev.join("DEV-SERVER")).unwrap();
    refused(&["--data-dir", dev_arg], "was made by `warden serve --dev`");

    let real = dir.path().join("real");
    let mut server = Server::start_in(Path::new(BIN), &real, &["serve"], &[]);
    assert!(server.terminate().success());
    let real_arg = real.to_str().unwrap();
    refused(
        &["--dev", "--data-dir", real_arg],
        "was made by a real server",
    );
    assert!(!real.join("DEV-SERVER").exists());

    let out = std::process::Command::new("timeout")
        .args(["20", BIN, "serve", "--dev", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    // A usage error: the address was given on the command line.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback addresses only"),
        "{out:?}"
    );
    // Nor does it replace a config's own demo-named users or policy without a word.
    let config = dir.path().join("warden.toml");
    let config_arg = config.to_str().unwrap();
    for (text, said) in [
        (
            "[users.mallory]\ngroups = [\"managers\", \"sre\"]\n",
            "defines mallory, which `--dev` defines as a demo user",
        ),
        ("policy_dir = \"/srv/policy\"\n", "sets `policy_dir`"),
    ] {
        std::fs::write(&config, text).unwrap();
        // Invalid input: the options contradict the config.
        let out = serve_to_its_end(&["--dev", "--config", config_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(said), "{said}: {stderr}");
    }

    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&["--data-dir", real_arg], "writable by group or others");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Nor one another user owns, who may open it at will.
    std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
    refused(&["--data-dir", real_arg], "owned by uid 65534");
    std::os::unix::fs::chown(&real, Some(0), None).unwrap();
    // Nor one holding a file of another user's, who could read or replace it.
    let key = real.join("master.key");
    std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
    refused(
        &["--data-dir", real_arg],
        "master.key is owned by uid 65534",
    );
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    // Nor one reached through a link others could point elsewhere.
    let open = real.with_file_name("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = open.join("data");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    refused(&["--data-dir", link.to_str().unwrap()], "holding the link");
    // A sticky directory, like /tmp, keeps others from replacing a link, not its owner.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
    refused(
        &["--data-dir", link.to_str().unwrap()],
        "can point it elsewhere",
    );
    // Nor through a link of the server's own that leads through that one.
    let chain = real.with_file_name("chain");
    std::os::unix::fs::symlink(&link, &chain).unwrap();
    refused(
        &["--data-dir", chain.to_str().unwrap()],
        "can point it elsewhere",
    );
    server.restart();
}

/// What would bring back revoked access, or grant what the policy never allowed, stops the
/// server at start, saying what to restore: a database older than the newest checkpoint the
/// server signed (restored from an older copy, or without its write-ahead log), a lost SSH user
/// CA, a lost policy directory. An address in use stops it before anything is printed.
#[test]
fn a_rolled_back_database_or_a_lost_ca_or_policy_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv").join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = std::process::Command::new("timeout")
        .args([
            "20",
            BIN,
            "serve",
            "--data-dir",
            &data_arg,
            "--ssh-listen",
            "127.0.0.1:0",
        ])
        .args(["--listen", &taken.local_addr().unwrap().to_string()])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        !String::from_utf8_lossy(&busy.stdout).contains("Bootstrap admin"),
        "{busy:?}"
    );
    drop(taken);
    // Nor does a bootstrap password that would be refused, nor a master key that cannot be
    // used. Each refusal takes away the data dir it made, and the parent it made for it: no
    // key, database, example policy or lock is left.
    let refused_with = |var: &str, value: &str| {
        let out = std::process::Command::new("timeout")
            .args(["20", BIN, "serve", "--data-dir", &data_arg])
            .args(["--ssh-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        out
    };
    let weak = refused_with("WARDEN_BOOTSTRAP_PASSWORD", "short");
    let bad_key = refused_with("WARDEN_MASTER_KEY", "not a key");
    assert!(
        !dir.path().join("srv").exists(),
        "{busy:?} {weak:?} {bad_key:?}"
    );
    // A data dir that was there before stays as it was, without a lock left in it; so does
    // one a path names through a directory the start made and `..`, which that start takes
    // away alone.
    std::fs::create_dir_all(&data).unwrap();
    refused_with("WARDEN_BOOTSTRAP_PASSWORD", "short");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    let through = dir.path().join("srv/new/../data");
    let out = std::process::Command::new("timeout")
        .args(["20", BIN, "serve", "--data-dir", through.to_str().unwrap()])
        .args(["--ssh-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .env("WARDEN_BOOTSTRAP_PASSWORD", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(data.is_dir(), "{out:?}");
    assert!(!dir.path().join("srv/new").exists(), "{out:?}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    // The initial password is still to be printed, by the start that serves.
    let mut server = Server::start_in(Path::new(BIN), &data, &["serve"], &[]);
    assert!(server.stdout().contains("Bootstrap admin 'admin' created."));
    assert!(server.terminate().success());

    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    let refused_without = |names: &[&str], says: &[&str]| {
        for n in names {
            std::fs::rename(data.join(n), aside.join(n)).unwrap();
        }
        let out = serve_to_its_end(&["--data-dir", &data_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        for s in says {
            assert!(stderr.contains(s), "{s}: {stderr}");
        }
        // A refused start makes no key or policy in place of a lost one.
        for n in names.iter().filter(|n| !n.starts_with("warden.db")) {
            assert!(
                !data.join(n).exists(),
                "{n} was made anew by a refused start"
            );
        }
        for e in std::fs::read_dir(&data).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.starts_with("warden.db") && names.iter().any(|n| n.starts_with("warden.db")) {
                std::fs::remove_file(data.join(name)).unwrap();
            }
        }
        for n in names {
            std::fs::rename(aside.join(n), data.join(n)).unwrap();
        }
    };
    let database: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("warden.db"))
        .collect();
    let database: Vec<&str> = database.iter().map(String::as_str).collect();
    // A database gone altogether is no restored backup: no advice to move the checkpoint
    // aside, which would start a new log over the lost one.
    refused_without(&database, &["warden.db is missing or empty", "Not started"]);
    // The database and the CA lost together: the checkpoint kept beside them still says this
    // data dir has served, so no new CA is made that a partial restore would then start with.
    let with_ca: Vec<&str> = database.iter().copied().chain(["ssh_user_ca"]).collect();
    refused_without(&with_ca, &["SSH user CA key", "restore the key"]);
    refused_without(&["ssh_user_ca"], &["SSH user CA key", "restore the key"]);
    refused_without(&["policy"], &["is missing", "restore the policy"]);
    // A refused start migrates nothing: a database the Warden before left (here, without
    // migration 0015) stays as that Warden can open it, until a start goes through.
    let schema = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
        c.execute_batch(sql).unwrap();
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    let current = schema("");
    schema(
        "DROP INDEX requests_revoked_until; ALTER TABLE requests DROP COLUMN revoked_until; \
         DROP TABLE live_sessions; ALTER TABLE outbox DROP COLUMN skipped; \
         ALTER TABLE user_secrets DROP COLUMN config_hash; DROP TABLE outbox_settled; \
         DROP TABLE write_probe; DROP TABLE ssh_user_ca; \
         ALTER TABLE user_secrets DROP COLUMN password_set_by; PRAGMA user_version = 14",
    );
    refused_without(&["policy"], &["is missing", "restore the policy"]);
    assert_eq!(schema(""), 14);
    server.restart();
    assert_eq!(schema(""), current);
    assert_eq!(http_get(server.port(), "/readyz").unwrap().status, 200);
    // A lost proxy host key is made anew, but said: clients pinned the old one.
    assert!(!server.stdout().contains("host key"));
    assert!(server.terminate().success());
    // The upgrade is on the record: the start says the schema it found and the one it left.
    let started: String = rusqlite::Connection::open(data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT body FROM audit WHERE body LIKE '%schema_upgraded_from%' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(
        (
            &started["details"]["schema_upgraded_from"],
            &started["details"]["schema"]
        ),
        (&serde_json::json!(14), &serde_json::json!(current)),
        "{started}"
    );
    std::fs::remove_file(data.join("ssh_host_ed25519_key")).unwrap();
    server.restart();
    assert!(
        server
            .stdout()
            .contains("Warning: the SSH proxy's host key"),
        "{}",
        server.stdout()
    );
    // A log whose checkpoints were all deleted (a restored backup carries its own) is refused,
    // and the operator is sent to check it, not to move the kept checkpoint aside.
    assert!(server.terminate().success());
    schema("DELETE FROM checkpoints; DELETE FROM audit_blocks");
    let out = serve_to_its_end(&["--data-dir", &data_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds no checkpoint at all") && !stderr.contains("move that file aside"),
        "{stderr}"
    );
}

/// A password hash changed in the config changes no password by itself (the config sets one
/// only for a user who has none): the reload or start that first reads the change names the
/// user, once.
#[test]
fn a_password_hash_changed_in_the_config_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy = test_policy(dir.path());
    let config = dir.path().join("warden.toml");
    let directory = |password: &str| {
        let text = format!(
            "policy_dir = {:?}\n\n[users.carol]\ngroups = [\"dev\"]\npassword_hash = {:?}\n",
            policy.display().to_string(),
            password_hash(password)
        );
        std::fs::write(&config, text).unwrap();
    };
    directory("carol-password-1");
    let mut server = Server::start_in(
        Path::new(BIN),
        &dir.path().join("data"),
        &["serve", "--config", config.to_str().unwrap()],
        &[("WARDEN_BOOTSTRAP_PASSWORD", "admin-password-1")],
    );
    let admin = server.cli();
    let login = admin.run(
        &["login", "--user", "admin", "--password-stdin"],
        Some("admin-password-1"),
    );
    assert!(login.success(), "{login:?}");
    let reload = || admin.run(&["policy", "reload"], None);
    assert!(!reload().stderr.contains("password_hash"));
    directory("carol-password-2");
    let noted = reload();
    assert!(
        noted.success() && noted.stderr.contains("password_hash of carol changed"),
        "{noted:?}"
    );
    assert!(!reload().stderr.contains("password_hash"));
    // Changed while the server is down: its start says so.
    assert!(server.terminate().success());
    directory("carol-password-3");
    server.restart();
    assert!(
        server.stderr().contains("password_hash of carol changed"),
        "{}",
        server.stderr()
    );
    let sign_in = |password: &str| {
        server.cli().run(
            &["login", "--user", "carol", "--password-stdin"],
            Some(password),
        )
    };
    assert!(sign_in("carol-password-1").success());
    assert_eq!(sign_in("carol-password-3").code, 5);
}

/// A user removed from the config while the server is down holds nothing once it is back:
/// their open requests, grants and tokens are revoked at start, by Warden, saying why.
#[test]
fn a_user_removed_from_the_directory_loses_their_grants_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = test_policy(dir.path());
    let hash = password_hash("carol-password-1");
    let config = dir.path().join("warden.toml");
    let write_directory = |with_carol: bool, group: &str| {
        let carol = format!(
            "[users.carol]\ngroups = [\"{group}\"]\npassword_hash = {:?}\n",
            hash
        );
        let text = format!(
            "policy_dir = {:?}\n\n[users.bob]\ngroups = [\"sre\"]\n\n[users.sam]\ngroups = [\"security\"]\n\n{}",
            policy.display().to_string(),
            if with_carol { carol.as_str() } else { "" }
        );
        std::fs::write(&config, text).unwrap();
    };
    let directory = |with_carol: bool| {
        write_directory(with_carol, "dev");
    };
    directory(true);
    let mut server = Server::start_in(
        Path::new(BIN),
        &dir.path().join("data"),
        &["serve", "--config", config.to_str().unwrap()],
        &[("WARDEN_BOOTSTRAP_PASSWORD", "admin-password-1")],
    );
    let carol = server.cli();
    let login = carol.run(
        &["login", "--user", "carol", "--password-stdin"],
        Some("carol-password-1"),
    );
    assert!(login.success(), "{login:?}");
    let active = id(&create(&carol, "web", "view", &[]));
    let pending = id(&create(&carol, "web", "root", &[]));

    // The directory is read at start: a reload says that the file's users changed, and when
    // they take effect.
    let early = server.cli();
    let login = early.run(
        &["login", "--user", "admin", "--password-stdin"],
        Some("admin-password-1"),
    );
    assert!(login.success(), "{login:?}");
    directory(false);
    let reload = early.run(&["policy", "reload"], None);
    assert!(reload.success(), "{reload:?}");
    assert!(
        reload.stderr.contains("take effect at its next start"),
        "{reload:?}"
    );
    ok(&carol, &["whoami"]);
    assert!(server.terminate().success());
    server.restart();
    let admin = server.cli();
    let login = admin.run(
        &["login", "--user", "admin", "--password-stdin"],
        Some("admin-password-1"),
    );
    assert!(login.success(), "{login:?}");
    for request in [&active, &pending] {
        let shown = ok(&admin, &["request", "show", request]);
        assert_eq!(shown["state"], "revoked", "{shown}");
    }
    // The grant is revoked, the request never granted is ended as such.
    let mut revoked = audit_events(&admin, "grant.revoked");
    let ended = audit_events(&admin, "request.revoked");
    assert_eq!(
        (revoked.len(), ended.len()),
        (1, 1),
        "{revoked:?} {ended:?}"
    );
    assert_eq!(revoked[0]["request_id"], active.as_str());
    assert_eq!(ended[0]["request_id"], pending.as_str());
    assert_eq!(ended[0]["details"]["was"], "pending");
    revoked.extend(ended);
    for e in &revoked {
        assert!(e["actor"]["user"].is_null(), "{e}");
        assert_eq!(
            e["details"]["comment"],
            "the requester is no longer in the directory"
        );
    }
    fails(&carol, &["whoami"], 5);
    let tokens = audit_events(&admin, "auth.tokens_revoked");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["details"]["user"], "carol");

    // Put back in the directory, carol signs in afresh: her old token stays revoked.
    assert!(server.terminate().success());
    directory(true);
    server.restart();
    fails(&carol, &["whoami"], 5);
    let login = carol.run(
        &["login", "--user", "carol", "--password-stdin"],
        Some("carol-password-1"),
    );
    assert!(login.success(), "{login:?}");
    ok(&carol, &["whoami"]);
    // The bootstrap admin is an administrator until the config names one who can sign in:
    // then it is gone like any user removed, its sessions with it, and the variable that
    // would have set its password is said to be ignored (as at every start once it has one).
    assert!(server.terminate().success());
    write_directory(true, "admins");
    server.restart();
    fails(&admin, &["whoami"], 5);
    let again = admin.run(
        &["login", "--user", "admin", "--password-stdin"],
        Some("admin-password-1"),
    );
    assert_eq!(again.code, 5, "{again:?}");
    assert!(ok(&carol, &["whoami"])["admin"].as_bool().unwrap());
    let log = server.stderr();
    assert!(
        log.contains("WARDEN_BOOTSTRAP_PASSWORD is ignored: the config names administrators"),
        "{log}"
    );
}

/// A `--dev` server on `rules` whose config adds carol to `sre` (with bob, two SREs), its
/// config file returned to change while it is down.
fn with_carol_in_sre(dir: &Path, rules: &str) -> (Server, std::path::PathBuf) {
    let data = dir.join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", rules)],
    );
    let config = dir.join("warden.toml");
    std::fs::write(&config, "[users.carol]\ngroups = [\"sre\"]\n").unwrap();
    let server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev", "--config", config.to_str().unwrap()],
        &[],
    );
    (server, config)
}

/// The test policy with deploys needing two SREs, and waiting an hour for them.
fn two_sres() -> String {
    let rules = RULES
        .replace(
            "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
            "@approval(\"peer(sre, 2)\")\n@max_ttl(\"4h\")",
        )
        .replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    assert_ne!(rules, RULES);
    rules
}

/// The audit events of `code` about request `rid`.
fn events_of(admin: &warden_testkit::Cli, code: &str, rid: &str) -> Vec<serde_json::Value> {
    audit_events(admin, code)
        .into_iter()
        .filter(|e| e["request_id"] == rid)
        .collect()
}

/// Pending requests whose tier a crash's restart finds relaxed (to what their approvals meet,
/// or to `auto`) are granted by Warden, each with its change of tier on the record first: the
/// tier it was made under and the one that granted it, and their rules.
#[test]
fn a_tier_relaxed_while_the_server_was_down_is_on_the_record_before_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let rules = two_sres();
    let (mut server, _) = with_carol_in_sre(dir.path(), &rules);
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    assert_eq!(
        ok(&bob, &["request", "approve", &deploy])["state"],
        "pending"
    );
    let root = id(&create(&alice, "web", "root", &[]));
    server.kill_hard();
    let relaxed = rules
        .replace("peer(sre, 2)", "peer(sre)")
        .replace("@approval(\"two-person(security)\")", "@approval(\"auto\")");
    assert_ne!(relaxed, rules.replace("peer(sre, 2)", "peer(sre)"));
    write_policy(
        &dir.path().join("data/policy"),
        &[("access.cedar", &relaxed)],
    );
    server.restart();
    let admin = login(&server, "admin");
    wait_until("both granted", std::time::Duration::from_secs(20), || {
        state(&admin, &deploy) == "active" && state(&admin, &root) == "active"
    });
    for (rid, before, after, rule) in [
        (&deploy, "peer(sre, 2)", "peer(sre)", "deploy-peer"),
        (&root, "two-person(security)", "auto", "root-two-person"),
    ] {
        let actions: Vec<String> = audit_actions(&admin, rid)
            .into_iter()
            .map(|(action, _)| action)
            .filter(|a| a.starts_with("request."))
            .collect();
        let reviewed = (rid == &deploy).then_some("request.reviewed");
        let expected: Vec<&str> = ["request.created"]
            .into_iter()
            .chain(reviewed)
            .chain(["request.requirement_changed", "request.approved"])
            .collect();
        assert_eq!(actions, expected, "{rid}");
        let changed = events_of(&admin, "request.requirement_changed", rid);
        let details = &changed[0]["details"];
        assert!(changed[0]["actor"]["user"].is_null(), "{changed:?}");
        assert_eq!(details["previous"], before, "{details}");
        assert_eq!(details["tier"], after, "{details}");
        assert_eq!(
            details["previous_rules"],
            serde_json::json!([rule]),
            "{details}"
        );
        assert_eq!(details["rules"], serde_json::json!([rule]), "{details}");
        // Granted at once, it is announced to no one.
        assert_eq!(details["told"], serde_json::json!([]), "{details}");
        let approved = events_of(&admin, "request.approved", rid);
        assert!(approved[0]["actor"]["user"].is_null(), "{approved:?}");
        assert_eq!(approved[0]["details"]["tier"], after, "{approved:?}");
        // It waited for approval, whatever tier granted it.
        let shown = ok(&alice, &["request", "show", rid]);
        assert!(shown["pending_deadline"].is_string(), "{shown}");
    }
}

/// A pending request that no one left in the directory can approve still names the place it
/// waits for, beside why no one may fill it: an empty list would read as nothing needed.
#[test]
fn a_request_no_one_left_can_approve_still_names_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, config) = with_carol_in_sre(dir.path(), &two_sres());
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    let half = ok(&bob, &["request", "approve", &deploy]);
    assert_eq!(
        half["still_needed"],
        serde_json::json!(["an approver from sre"]),
        "{half}"
    );
    // carol leaves: bob is the one SRE left, and he approved already.
    assert!(server.terminate().success());
    std::fs::write(&config, "").unwrap();
    server.restart();
    let alice = login(&server, "alice");
    let shown = ok(&alice, &["request", "show", &deploy]);
    assert_eq!(shown["state"], "pending", "{shown}");
    assert!(
        shown["unapprovable"]
            .as_str()
            .is_some_and(|w| w.contains("lacks an approver from sre")),
        "{shown}"
    );
    assert_eq!(
        shown["still_needed"],
        serde_json::json!(["an approver from sre"]),
        "{shown}"
    );
    let table = alice.run(&["request", "show", &deploy], None);
    assert!(table.success(), "{table:?}");
    assert!(table.stdout.contains("an approver from sre"), "{table:?}");
}

/// `warden serve ARGS` on free loopback ports, run to its end: for a start that is expected
/// to be refused (at most 20 s).
fn serve_to_its_end(args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["20", BIN, "serve"])
        .args(args)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", warden_testkit::free_port()),
        ])
        .args(["--ssh-listen", "127.0.0.1:0"])
        .output()
        .unwrap()
}

/// A server whose store cannot write (here its files may grow no larger, as on a full disk)
/// refuses the calls that would write, and says it is not ready, and why.
#[test]
fn a_server_that_cannot_write_is_not_ready() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let limited = dir.path().join("warden-limited");
    std::fs::write(
        &limited,
        format!("#!/bin/bash\nulimit -f 2048\ntrap '' XFSZ\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&limited, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let server = Server::start_in(&limited, &data, &["serve", "--dev"], &[]);
    let port = server.port();
    let login = warden_testkit::http_post_with(
        port,
        "/v1/auth/login",
        &[],
        &format!(r#"{{"user":"alice","password":"{PASSWORD}"}}"#),
    )
    .unwrap();
    let token: serde_json::Value = serde_json::from_str(&login.body).unwrap();
    assert_eq!(login.status, 200, "{}", login.body);
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let headers = [("Authorization", bearer.as_str())];
    let admin_login = warden_testkit::http_post_with(
        port,
        "/v1/auth/login",
        &[],
        &format!(r#"{{"user":"admin","password":"{PASSWORD}"}}"#),
    )
    .unwrap();
    let admin_token: serde_json::Value = serde_json::from_str(&admin_login.body).unwrap();
    let admin_bearer = format!("Bearer {}", admin_token["token"].as_str().unwrap());
    // Granted at once, so never counted among those one person may have waiting.
    let body = r#"{"target":"web","role":"view","reason":"fill the disk","ttl":"1h","public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxmtvG8m83DA/c2UFrNFWDQ+JU3Al2G3THZ1gNCOWIR"}"#;
    assert_eq!(http_get(port, "/readyz").unwrap().status, 200);
    let refused = (0..3000)
        .map(|_| warden_testkit::http_post_with(port, "/v1/requests", &headers, body).unwrap())
        .find(|r| r.status != 201)
        .expect("the store's files never reached their limit");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(error_code(&refused.body), "storage_unavailable");
    let ready = http_get(port, "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("the store cannot write"),
        "{}",
        ready.body
    );
    assert_eq!(error_code(&ready.body), "not_ready");
    // A valid policy that cannot go live on the record does not go live, and says why (the
    // reloads' own events fill what room the store's last pages had).
    let admin = [("Authorization", admin_bearer.as_str())];
    let reload = (0..500)
        .map(|_| warden_testkit::http_post_with(port, "/v1/policy/reload", &admin, "").unwrap())
        .find(|r| r.status != 200)
        .expect("every reload was stored");
    assert_eq!(reload.status, 503, "{}", reload.body);
    assert!(
        reload.body.contains("valid but was not made live"),
        "{}",
        reload.body
    );
}

/// A stop between the two commits of an ending (a grant's revocation stored, its extensions not
/// yet ended; a grant's expiry stored, its waiting extension not yet withdrawn) is finished at
/// the next start: no extension outlives a revoked grant, none waits on an expired one.
#[test]
fn extensions_stranded_by_a_stop_are_ended_at_start() {
    let mut env = Env::start();
    let (alice, bob) = (env.login("alice"), env.login("bob"));
    let revoked = id(&create(&alice, "web", "view", &["--ttl", "10m"]));
    let extension = ok(&alice, &["request", "extend", &revoked, "--ttl", "30m"]);
    assert_eq!(extension["state"], "active", "{extension}");
    let expired = id(&create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "CHG-1", "--ttl", "10m"],
    ));
    assert_eq!(
        ok(&bob, &["request", "approve", &expired])["state"],
        "active"
    );
    let waiting = ok(&alice, &["request", "extend", &expired, "--ttl", "1h"]);
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(env.server.terminate().success());
    // What the first commit of each ending leaves.
    let db = rusqlite::Connection::open(env.server.data_dir().join("warden.db")).unwrap();
    for (rid, state) in [(&revoked, "revoked"), (&expired, "expired")] {
        let n = db
            .execute(
                "UPDATE requests SET state = ?2, body = json_set(body, '$.state', ?2) WHERE id = ?1",
                [rid.as_str(), state],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    drop(db);
    env.server.restart();
    let alice = env.login("alice");
    for (rid, why) in [
        (id(&extension), "the grant it extends was revoked"),
        (
            id(&waiting),
            "the grant it extends expired before it was approved",
        ),
    ] {
        let v = ok(&alice, &["request", "show", &rid]);
        assert_eq!(v["state"], "revoked", "{v}");
        assert!(v.to_string().contains(why), "{v}");
    }
}

/// An audit signing key swapped for another (here another data dir's) is refused at start,
/// and the verifier key auditors hold is left as it was.
#[test]
fn another_audit_signing_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    for data in [&ours, &theirs] {
        let mut server = Server::start_in(Path::new(BIN), data, &["serve"], &[]);
        assert!(server.terminate().success());
    }
    let verifier = std::fs::read_to_string(ours.join("audit_verifier.pub")).unwrap();
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    std::fs::copy(
        ours.join("audit_signing.key"),
        aside.join("audit_signing.key"),
    )
    .unwrap();
    std::fs::copy(
        theirs.join("audit_signing.key"),
        ours.join("audit_signing.key"),
    )
    .unwrap();
    let out = serve_to_its_end(&["--data-dir", ours.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not the key that signed this log") && stderr.contains("backup"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(ours.join("audit_verifier.pub")).unwrap(),
        verifier
    );
    // The right key with a verifier file a stop left empty starts, and writes it anew.
    std::fs::copy(
        aside.join("audit_signing.key"),
        ours.join("audit_signing.key"),
    )
    .unwrap();
    std::fs::write(ours.join("audit_verifier.pub"), "").unwrap();
    let mut server = Server::start_in(Path::new(BIN), &ours, &["serve"], &[]);
    assert!(server.terminate().success());
    assert_eq!(
        std::fs::read_to_string(ours.join("audit_verifier.pub")).unwrap(),
        verifier
    );
    // A log renamed in the config is told to keep its name, not to restore its key.
    let config = dir.path().join("renamed.toml");
    std::fs::write(&config, "audit_origin = \"other.example/audit\"\n").unwrap();
    let out = serve_to_its_end(&[
        "--data-dir",
        ours.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("set `audit_origin` back"), "{stderr}");
}

/// A host key others can read, in a data dir about to be set up, stops the first start before
/// anything is made: no keys, no policy, no database are left behind.
#[test]
fn a_host_key_others_can_read_stops_a_first_start_before_anything_is_made() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = data.join("ssh_host_ed25519_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nssh_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("readable by group or others (mode 644)"),
        "{said}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "warden.lock"
        ]
    );
}

/// The example policy a first start writes appears whole or not at all: a start cut short while
/// writing it (here its files may grow no larger than 4 KiB, as on a full disk) leaves no
/// policy, and the next first start writes it whole, over what a kill would have left aside.
#[test]
fn an_example_policy_cut_short_is_written_whole_at_the_next_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let limited = dir.path().join("warden-limited");
    std::fs::write(
        &limited,
        format!("#!/bin/bash\nulimit -f 4\ntrap '' XFSZ\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&limited, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg(&limited)
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("File too large"), "{said}");
    assert!(!data.join("policy").exists(), "{said}");
    // What a kill while writing it leaves: the policy aside, its rules not yet written.
    let aside = data.join("policy.new");
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("access.cedar"), "").unwrap();
    let mut server = Server::start_in(Path::new(BIN), &data, &["serve"], &[]);
    assert!(
        server.stdout().contains("Wrote the example policy"),
        "{}",
        server.stdout()
    );
    for (name, text) in warden_policy::demo_files() {
        let written = std::fs::read_to_string(data.join("policy").join(&name)).unwrap();
        assert_eq!(written, text, "{name}");
    }
    assert!(!aside.exists());
    assert!(server.terminate().success());
}

/// The API and the SSH proxy set to one address are refused before anything is made, naming
/// both settings, and where they were set, rather than said to find the address in use.
#[test]
fn the_api_and_the_ssh_proxy_on_one_port_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = warden_testkit::free_port();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nssh_listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // A clash is invalid input (2), as every invalid config is, whether the config file sets
    // it or the command line makes it.
    let serve = |args: &[&str], code: i32| {
        let out = std::process::Command::new("timeout")
            .args(["20", BIN, "serve"])
            .args(args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{said}");
        assert!(
            said.contains("give them different ports") && !said.contains("already in use"),
            "{said}"
        );
        assert!(!data.exists(), "{said}");
        said
    };
    let said = serve(&["--config", config.to_str().unwrap()], 2);
    assert!(
        said.contains(&format!(
            "`listen` (127.0.0.1:{port}) and `ssh_listen` (127.0.0.1:{port}) in config file {}",
            config.display()
        )),
        "{said}"
    );
    let data_arg = data.to_str().unwrap();
    let all = format!("0.0.0.0:{port}");
    let one = format!("127.0.0.1:{port}");
    let said = serve(
        &[
            "--data-dir",
            data_arg,
            "--listen",
            &all,
            "--ssh-listen",
            &one,
        ],
        2,
    );
    assert!(
        said.contains(&format!("--listen ({all}) and --ssh-listen ({one}) are on")),
        "{said}"
    );
}

/// An empty data dir, or a policy dir that does not exist, is refused naming the setting and
/// the config file that set it, and saying how to fix it; the new data dir the refused start
/// made is not left behind.
#[test]
fn an_empty_data_dir_or_a_missing_policy_dir_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("warden.toml");
    let refused = |args: &[&str], says: &str| {
        let out = serve_to_its_end(args);
        let said = String::from_utf8_lossy(&out.stderr);
        // Invalid input: the config names no directory, or one that is not there.
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains(says), "{said}");
        assert!(!data.exists(), "{said}");
    };
    let config_arg = config.to_str().unwrap();
    std::fs::write(&config, "data_dir = \"\"\n").unwrap();
    refused(
        &["--config", config_arg],
        &format!(
            "error: config file {config_arg}: line 1, column 12: `data_dir` is empty: set it to the directory"
        ),
    );
    let nope = dir.path().join("nope");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\npolicy_dir = {:?}\n",
            data.display().to_string(),
            nope.display().to_string()
        ),
    )
    .unwrap();
    refused(
        &["--config", config_arg],
        &format!(
            "error: `policy_dir` {} in config file {config_arg} does not exist: create it with your policy",
            nope.display()
        ),
    );
}

/// A database found readable by others is made private, with a warning for each of its files
/// that was there: not for the log and index SQLite makes afresh like the database file where
/// there were none (a clean stop's database alone, restored by a copy that others may read).
#[test]
fn a_database_found_readable_is_warned_of_file_by_file_as_found() {
    use std::os::unix::fs::PermissionsExt;
    const WARNING: &str = "its password and token hashes may have been read";
    let mut env = Env::start();
    let db = env.server.data_dir().join("warden.db");
    let widen = |names: &[&str]| {
        for name in names {
            let file = db.with_file_name(name);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    };
    let warned = |env: &Env| -> Vec<String> {
        env.server
            .stderr()
            .lines()
            .filter(|l| l.contains(WARNING))
            .map(|l| l.split("file=").nth(1).unwrap_or_default().to_owned())
            .collect()
    };
    assert!(env.server.terminate().success());
    for name in ["warden.db-wal", "warden.db-shm"] {
        let _ = std::fs::remove_file(db.with_file_name(name));
    }
    widen(&["warden.db"]);
    env.server.restart();
    let found = warned(&env);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with(db.to_str().unwrap()), "{found:?}");
    assert!(
        !found[0].contains("-wal") && !found[0].contains("-shm"),
        "{found:?}"
    );
    for name in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        let mode = std::fs::metadata(db.with_file_name(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // After a crash the log and the index are still there, as readable as they were left.
    env.server.kill_hard();
    widen(&["warden.db", "warden.db-wal", "warden.db-shm"]);
    env.server.restart();
    assert_eq!(warned(&env).len(), 4, "{:?}", warned(&env));
}

/// A rotation from `WARDEN_MASTER_KEY` leaves the new key in `master.key`: a start with the
/// variable still at the old key says to set it to that file's key, not to rotate again.
#[test]
fn a_start_with_the_master_key_a_rotation_replaced_says_where_the_new_one_is() {
    let mut env = Env::start();
    enroll_mfa(&env.login("alice"));
    env.server.terminate();
    let data = env.server.data_dir().to_path_buf();
    let base64 = |file: &Path| {
        let out = std::process::Command::new("base64")
            .arg("-w0")
            .arg(file)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let old = base64(&data.join("master.key"));
    std::fs::remove_file(data.join("master.key")).unwrap();
    let rotated = std::process::Command::new("timeout")
        .args(["20", BIN, "vault", "rewrap", "--data-dir"])
        .arg(&data)
        .env("WARDEN_MASTER_KEY", &old)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    assert_ne!(base64(&data.join("master.key")), old);
    let started = std::process::Command::new("timeout")
        .args(["20", BIN, "serve", "--dev", "--data-dir"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
        .env("WARDEN_MASTER_KEY", &old)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(1), "{said}");
    assert!(
        said.contains("a finished `warden vault rewrap` left the new key there")
            && said.contains("base64 -w0"),
        "{said}"
    );
    // With the variable set to the new key, the copy left in the data dir is warned about.
    let new = base64(&data.join("master.key"));
    let mut server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev"],
        &[("WARDEN_MASTER_KEY", &new)],
    );
    assert!(
        server.stdout().contains("the master key is also in"),
        "{}",
        server.stdout()
    );
    assert!(server.terminate().success());
}

/// The files of data dir `data` and what they hold, but for the lock file (it names the pid of
/// each server that starts) and the database's log and index (a read of the stopped database
/// opens them, and they hold nothing then).
fn contents(data: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(dir: &Path, into: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, into);
            } else if !["warden.lock", "warden.db-wal", "warden.db-shm"].contains(&name.as_str()) {
                into.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = std::collections::BTreeMap::new();
    walk(data, &mut files);
    files
}

/// The SSH user CA the store of data dir `data` records (its fingerprint), if it records one.
fn recorded_ca(data: &Path) -> Option<String> {
    use rusqlite::OptionalExtension;
    rusqlite::Connection::open(data.join("warden.db"))
        .unwrap()
        .query_row("SELECT fingerprint FROM ssh_user_ca", [], |r| r.get(0))
        .optional()
        .unwrap()
}

/// The `ca_fingerprint` of the credentials the store of data dir `data` issued.
fn issued_by(data: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT DISTINCT json_extract(body, '$.credential.ca_fingerprint') FROM requests
             WHERE json_extract(body, '$.credential.ca_fingerprint') IS NOT NULL",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// An SSH user CA key made apart from data dir `data`'s (as another data dir's would be), put
/// in its place: with `with_public_half`, its public half replaces `ssh_user_ca.pub` too;
/// without, `ssh_user_ca.pub` is removed.
fn swap_ssh_user_ca(data: &Path, with_public_half: bool) {
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("ssh_user_ca");
    let made = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "warden-user-ca",
            "-f",
        ])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::copy(&other, data.join("ssh_user_ca")).unwrap();
    if with_public_half {
        std::fs::copy(other.with_extension("pub"), data.join("ssh_user_ca.pub")).unwrap();
    } else {
        std::fs::remove_file(data.join("ssh_user_ca.pub")).unwrap();
    }
}

/// A start on data dir `data` that must be refused for its SSH user CA, the one whose
/// fingerprint is `trusted` being this data dir's: it exits non-zero, names the key and the CA
/// to restore, and leaves the data dir as it found it (no public half written, no CA recorded,
/// the schema as it was).
fn refused_for_its_ca(data: &Path, trusted: &str) {
    let before = contents(data);
    let out = serve_to_its_end(&["--dev", "--data-dir", data.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let key = data.join("ssh_user_ca");
    for says in [
        "the SSH user CA key",
        key.to_str().unwrap(),
        trusted,
        "Restore the key with that fingerprint from your backup",
    ] {
        assert!(said.contains(says), "{says}: {said}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    assert_eq!(
        contents(data).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(
        contents(data) == before,
        "a refused start changed the data dir"
    );
}

/// Another SSH user CA put in place of a data dir's is refused, whether the public half kept
/// beside it is gone or replaced with the other's too: the store itself records the CA. Its
/// revocation list would name a CA no host trusts, and certificates the trusted one signed (a
/// revoked one here) would be revoked nowhere. A refused start changes nothing; with the key
/// put back, the server starts and writes the public half anew.
#[test]
fn another_ssh_user_ca_is_refused_at_start() {
    let mut env = Env::start();
    let data = env.server.data_dir().to_path_buf();
    let alice = env.login("alice");
    let granted = create(&alice, "web", "view", &[]);
    ok(&alice, &["request", "revoke", &id(&granted)]);
    let public_half = alice.run(&["ssh-ca"], None).stdout;
    assert!(public_half.starts_with("ssh-ed25519 "), "{public_half}");
    assert!(env.server.terminate().success());
    let trusted = recorded_ca(&data).expect("a started data dir records its SSH user CA");
    assert!(trusted.starts_with("SHA256:"), "{trusted}");
    // The same fingerprint as the certificates issued name.
    assert_eq!(issued_by(&data), std::slice::from_ref(&trusted));
    let kept = std::fs::read(data.join("ssh_user_ca")).unwrap();
    let kept_public = std::fs::read(data.join("ssh_user_ca.pub")).unwrap();

    // The key swapped, its public half removed: nothing beside the key says it is another.
    swap_ssh_user_ca(&data, false);
    refused_for_its_ca(&data, &trusted);
    assert!(!data.join("ssh_user_ca.pub").exists());
    // Both halves replaced.
    swap_ssh_user_ca(&data, true);
    refused_for_its_ca(&data, &trusted);
    // The key alone swapped.
    swap_ssh_user_ca(&data, false);
    std::fs::write(data.join("ssh_user_ca.pub"), &kept_public).unwrap();
    refused_for_its_ca(&data, &trusted);

    // The right key back, its public half still missing: the server starts, and writes it anew.
    std::fs::write(data.join("ssh_user_ca"), &kept).unwrap();
    std::fs::remove_file(data.join("ssh_user_ca.pub")).unwrap();
    env.server.restart();
    assert_eq!(
        std::fs::read(data.join("ssh_user_ca.pub")).unwrap(),
        kept_public
    );
    let alice = env.login("alice");
    assert_eq!(alice.run(&["ssh-ca"], None).stdout, public_half);
    assert!(env.server.terminate().success());
    assert_eq!(recorded_ca(&data).as_deref(), Some(trusted.as_str()));
    // A public half beside the right key that is another's is refused too, saying which file
    // is wrong.
    swap_ssh_user_ca(&data, true);
    std::fs::write(data.join("ssh_user_ca"), &kept).unwrap();
    let out = serve_to_its_end(&["--dev", "--data-dir", data.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("does not hold the public half of the SSH user CA key")
            && said.contains("restore"),
        "{said}"
    );
}

/// A data dir from before the store recorded its SSH user CA: the certificates it issued name
/// the CA that signed them, and another key is refused by them, its schema left as it was. With
/// the right key, the start records it.
#[test]
fn a_data_dir_from_before_the_record_is_checked_against_the_certificates_it_issued() {
    let mut env = Env::start();
    let data = env.server.data_dir().to_path_buf();
    let alice = env.login("alice");
    let granted = create(&alice, "web", "view", &[]);
    ok(&alice, &["request", "revoke", &id(&granted)]);
    assert!(env.server.terminate().success());
    let trusted = recorded_ca(&data).unwrap();
    let schema = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
        c.execute_batch(sql).unwrap();
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    let current = schema("");
    // As the Warden before this record (migration 0022) left it, without what came later.
    let before = schema(&format!(
        "DROP TABLE ssh_user_ca; ALTER TABLE user_secrets DROP COLUMN password_set_by; \
         PRAGMA user_version = {}",
        21
    ));
    let kept = std::fs::read(data.join("ssh_user_ca")).unwrap();

    swap_ssh_user_ca(&data, false);
    refused_for_its_ca(&data, &trusted);
    swap_ssh_user_ca(&data, true);
    refused_for_its_ca(&data, &trusted);
    assert_eq!(schema(""), before);

    std::fs::write(data.join("ssh_user_ca"), &kept).unwrap();
    std::fs::remove_file(data.join("ssh_user_ca.pub")).unwrap();
    env.server.restart();
    assert!(env.server.terminate().success());
    assert_eq!(schema(""), current);
    assert_eq!(recorded_ca(&data).as_deref(), Some(trusted.as_str()));
}

/// A new data dir records the CA it makes; and one whose key is missing while its public half
/// is still there is refused before any key is made.
#[test]
fn a_new_data_dir_records_its_ssh_user_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_in(Path::new(BIN), &data, &["serve", "--dev"], &[]);
    assert!(server.terminate().success());
    let recorded = recorded_ca(&data).unwrap();
    let listed = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(data.join("ssh_user_ca.pub"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&recorded),
        "{listed:?}"
    );
    // A plain restart goes through.
    server.restart();
    assert!(server.terminate().success());

    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(data.join("ssh_user_ca.pub"), fresh.join("ssh_user_ca.pub")).unwrap();
    let out = serve_to_its_end(&["--dev", "--data-dir", fresh.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("SSH user CA key") && said.contains("restore the key"),
        "{said}"
    );
    assert!(!fresh.join("ssh_user_ca").exists());
}
