//! The SSH proxy from the client: `keys`, `ssh TARGET`, `sessions`, `replay`, and
//! `target pin-host-key`.

use std::io::{IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Client, segment};
use crate::exit::{self, Failure};
use crate::output::{Output, instant, table};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Register a public key (e.g. ~/.ssh/id_ed25519.pub) to log in to Warden's SSH proxy.
    /// Its private half signs a proof that the key is yours, with `ssh-keygen -Y sign` (the
    /// private key file beside FILE, or ssh-agent).
    Add {
        /// The public key file (`.pub`).
        file: PathBuf,
        /// A proof signed already (`ssh-keygen -Y sign -n warden-ssh-key` over `register this
        /// SSH key to Warden user NAME` and a newline), e.g. on the machine holding the key.
        #[arg(long)]
        proof: Option<PathBuf>,
    },
    /// List your registered keys.
    List,
    /// Remove a key by its fingerprint (SHA256:…).
    Remove {
        /// The key's fingerprint, as `keys list` shows it.
        fingerprint: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions (yours; everyone's for administrators and session viewers).
    List,
    /// Stream a live session's terminal output until it ends.
    Watch {
        /// The session's id, as `sessions list` shows it.
        #[arg(value_parser = super::session_id)]
        id: String,
        // The global `--json`, which a live terminal has no form for: hidden from this
        // command's help under its own, and refused.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// End a live session at once.
    Kill {
        /// The session's id, as `sessions list` shows it.
        #[arg(value_parser = super::session_id)]
        id: String,
    },
}

pub async fn keys(server: Option<String>, cmd: KeysCommand, out: Output) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    match cmd {
        KeysCommand::Add { file, proof } => {
            let text = super::read_public_key(&file)?;
            // Checked before ssh-keygen is asked to sign with it: a key the proxy cannot take
            // is said so, not taken for one whose private half is missing.
            warden_server::ssh::registrable_key(&text)
                .map_err(|why| Failure::new(exit::USAGE, format!("{}: {why}", file.display())))?;
            let proof = match proof {
                Some(p) => std::fs::read_to_string(&p).map_err(|e| {
                    Failure::new(exit::USAGE, format!("cannot read {}: {e}", p.display()))
                })?,
                None => {
                    let me: Value = c.get("/v1/auth/whoami").await?;
                    sign_key_proof(&file, me["user"].as_str().unwrap_or_default())?
                }
            };
            let v: Value = c
                .post(
                    "/v1/ssh/keys",
                    &json!({ "public_key": text, "proof": proof }),
                )
                .await?;
            if out.json {
                out.json(&v)
            } else {
                println!(
                    "Registered {}.",
                    v["fingerprint"].as_str().unwrap_or_default()
                );
                Ok(())
            }
        }
        KeysCommand::List => {
            let v: Value = c.get("/v1/ssh/keys").await?;
            if out.json {
                return out.json(&v);
            }
            let rows: Vec<Vec<String>> = v["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    vec![
                        k["fingerprint"].as_str().unwrap_or_default().to_owned(),
                        instant(k, "added_at"),
                    ]
                })
                .collect();
            table(&["FINGERPRINT", "ADDED"], &rows);
            Ok(())
        }
        KeysCommand::Remove { fingerprint } => {
            let path = format!("/v1/ssh/keys/{}", segment(&fingerprint));
            let _: Value = c.delete(&path).await?;
            if out.json {
                out.json(&json!({ "removed": fingerprint }))
            } else {
                println!("Removed {fingerprint}.");
                Ok(())
            }
        }
    }
}

/// Signs the proof that the caller holds `public`'s private key, with `ssh-keygen -Y sign`: it
/// reads the private key beside `public` (asking for its passphrase itself), or, with none
/// there, asks ssh-agent to sign with `public`.
fn sign_key_proof(public: &std::path::Path, user: &str) -> anyhow::Result<String> {
    let private = public
        .to_str()
        .and_then(|p| p.strip_suffix(".pub"))
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let key = private.as_deref().unwrap_or(public);
    let mut child = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", warden_server::ssh::KEY_PROOF_NAMESPACE, "-f"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("cannot run ssh-keygen to sign the key's proof ({e}): install the OpenSSH client, or pass a proof made elsewhere with --proof"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // ssh-keygen may exit before reading (no private key found): its status below says
        // so, where this write's broken pipe would not.
        if let Err(e) = stdin.write_all(warden_server::ssh::key_proof_message(user).as_bytes())
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    let signed = child.wait_with_output()?;
    if !signed.status.success() {
        let why = String::from_utf8_lossy(&signed.stderr);
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "ssh-keygen could not sign with {} ({}): registering a key needs its private half, in the file beside the public key or in ssh-agent",
                key.display(),
                why.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        )
        .into());
    }
    String::from_utf8(signed.stdout).context("ssh-keygen printed no signature")
}

pub async fn sessions(
    server: Option<String>,
    cmd: SessionsCommand,
    out: Output,
) -> anyhow::Result<()> {
    // What streams is the session's terminal, which no JSON document can hold.
    if matches!(cmd, SessionsCommand::Watch { .. }) && out.json {
        return Err(Failure::new(
            exit::USAGE,
            "`sessions watch` streams the live terminal and has no --json form: for a session's events as JSON, use `warden --json replay ID` once it ends",
        )
        .into());
    }
    let c = Client::new(server)?;
    match cmd {
        SessionsCommand::List => {
            let v: Value = c.get("/v1/sessions").await?;
            if out.json {
                return out.json(&v);
            }
            let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let rows: Vec<Vec<String>> = v["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(x, "id"),
                        s(x, "user"),
                        s(x, "target"),
                        s(x, "login"),
                        s(x, "kind"),
                        instant(x, "started_at"),
                        instant(x, "grant_expires_at"),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "USER",
                    "TARGET",
                    "LOGIN",
                    "KIND",
                    "STARTED",
                    "GRANT EXPIRES",
                ],
                &rows,
            );
            Ok(())
        }
        SessionsCommand::Watch { id, json: _ } => {
            // Whether it is recorded, as the live sessions say as the watch begins: the stream
            // does not say, and once it ends the session is no longer listed.
            let recorded = match c.get::<Value>("/v1/sessions").await {
                Ok(v) => recorded_as_listed(&v, &id),
                Err(_) => None,
            };
            let mut resp = c
                .get_stream(&format!("/v1/sessions/{}/watch", segment(&id)))
                .await?;
            let mut stdout = std::io::stdout();
            while let Some(chunk) = resp.chunk().await.context("reading the live stream")? {
                stdout.write_all(&chunk)?;
                stdout.flush()?;
            }
            // The stream ends with the session: said, so a watcher is not left guessing.
            eprintln!("\r\n{}", watch_ended(&id, recorded));
            Ok(())
        }
        SessionsCommand::Kill { id } => {
            let _: Value = c
                .post(&format!("/v1/sessions/{}/kill", segment(&id)), &json!({}))
                .await?;
            if out.json {
                out.json(&json!({ "killed": id }))
            } else {
                println!("Session {id} ended.");
                Ok(())
            }
        }
    }
}

/// Whether live session `id` is recorded, as the session list `listed` (`GET /v1/sessions`)
/// says; `None` when it does not list it.
fn recorded_as_listed(listed: &Value, id: &str) -> Option<bool> {
    listed["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(id)))?["recorded"]
        .as_bool()
}

/// What `sessions watch` says once session `id` ended: where to see it whole, if it was
/// `recorded`, else where its end is on record. Not known whether it was (`None`), it offers
/// no replay that may not be there.
fn watch_ended(id: &str, recorded: Option<bool>) -> String {
    match recorded {
        Some(true) => format!(
            "Session {id} ended: `warden replay {id}` plays it whole, and its session.ended event (`warden audit search --code session.ended`) says how it ended."
        ),
        Some(false) => format!(
            "Session {id} ended. It was not recorded (its role records sessions' start and end only, or a share of them this one was not in, or it was an sftp session), so there is nothing to replay: `warden audit search --code session.ended` shows how it ended."
        ),
        None => format!(
            "Session {id} ended: `warden audit search --code session.ended` shows how it ended and whether it was recorded (if it was, `warden replay {id}` plays it whole)."
        ),
    }
}

/// A new file at `path` that only the user may read, as the server keeps its recordings:
/// what was typed and shown may hold secrets. A file already there is left as it is, and
/// made before the recording is fetched, so that nothing is read for nothing.
fn new_private_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Failure::new(
            exit::USAGE,
            format!(
                "{} exists: a recording is saved only to a new file; name another, or remove that one first",
                path.display()
            ),
        )
        .into()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Fetches a recording; saves it to `out_file` or plays it on the terminal.
pub async fn replay(
    server: Option<String>,
    id: String,
    out_file: Option<PathBuf>,
    pace: Pace,
    even_if_altered: bool,
    out: Output,
) -> anyhow::Result<()> {
    let c = Client::new(server)?;
    let file = out_file.as_deref().map(new_private_file).transpose()?;
    let fetched = fetch_recording(&c, &id, even_if_altered).await;
    if let (Some(path), Some(mut file)) = (out_file, file) {
        use std::io::Write as _;
        let written = fetched.and_then(|(cast, check)| {
            file.write_all(cast.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))
                .map(|()| check)
        });
        let check = match written {
            Ok(check) => check,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        if out.json {
            return out.json(&json!({
                "saved": path.display().to_string(),
                "check": check.state,
                "sha256": check.sha256,
            }));
        }
        println!(
            "Saved to {} (play it with `asciinema play`); {}.",
            path.display(),
            check.said()
        );
        return Ok(());
    }
    let (cast, check) = fetched?;
    if check.state != "intact" {
        eprintln!("warden: {}", check.said());
    }
    if out.json {
        // The recording is JSON lines already: its header, then one event per line.
        print!("{cast}");
        return Ok(());
    }
    let mut stdout = std::io::stdout();
    let mut last = 0.0f64;
    for line in cast.lines().skip(1) {
        let Ok(Value::Array(ev)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(t), Some(kind), Some(data)) = (
            ev.first().and_then(Value::as_f64),
            ev.get(1).and_then(Value::as_str),
            ev.get(2).and_then(Value::as_str),
        ) else {
            continue;
        };
        if kind != "o" {
            continue;
        }
        let wait = ((t - last).max(0.0)).min(pace.idle_limit) / pace.speed;
        last = t;
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        stdout.write_all(data.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

/// How fast a recording plays.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub speed: f64,
    /// Longest pause, in seconds.
    pub idle_limit: f64,
}

/// How the server found a recording against the SHA-256 its session's end recorded.
#[derive(Debug)]
struct Checked {
    /// `intact`, `altered`, `live` or `unchecked` (the `warden-recording` header).
    state: String,
    sha256: String,
}

impl Checked {
    fn said(&self) -> &'static str {
        match self.state.as_str() {
            "intact" => "it matches the SHA-256 its session's end recorded in the audit log",
            "altered" => {
                "WARNING: it does NOT match the SHA-256 its session's end recorded in the audit log: it was changed after the session ended"
            }
            "live" => {
                "the session is still running: its end, and the digest to check it against, are yet to come"
            }
            _ => {
                "it could not be checked: the audit log holds no digest of it (its session's end was archived, or its recording failed)"
            }
        }
    }
}

/// Fetches session `id`'s recording and how it checked; an altered one is refused unless
/// `even_if_altered`.
async fn fetch_recording(
    c: &Client,
    id: &str,
    even_if_altered: bool,
) -> anyhow::Result<(String, Checked)> {
    let resp = c
        .get_response_authed(&format!("/v1/sessions/{}/recording", segment(id)))
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let check = Checked {
        state: header("warden-recording"),
        sha256: header("warden-recording-sha256"),
    };
    if check.state == "altered" && !even_if_altered {
        return Err(Failure::new(
            exit::FAILURE,
            format!(
                "the recording of session {id} does not match the SHA-256 its session.ended event recorded in the audit log (served: {}): it was changed, cut or added to after the session ended, and the read is audited. Check the log itself with `warden audit verify`; pass --even-if-altered to play or save it anyway",
                check.sha256
            ),
        )
        .into());
    }
    Ok((resp.text().await?, check))
}

/// Where `warden ssh` goes: the target, the account on it, and the grant to log in under.
#[derive(Debug)]
pub struct To {
    pub target: String,
    pub login: Option<String>,
    pub request: Option<String>,
}

/// Runs `ssh` to TARGET through Warden's SSH proxy, with its host key pinned; with a terminal
/// for `command` too when `terminal` (ssh's `-t`).
pub async fn ssh(
    server: Option<String>,
    to: To,
    identity: Option<PathBuf>,
    terminal: bool,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let To {
        target,
        login,
        request,
    } = to;
    if let Some(key) = identity.as_ref().filter(|k| !k.is_file()) {
        return Err(Failure::new(
            exit::USAGE,
            format!("-i {}: no such key file", key.display()),
        )
        .into());
    }
    let c = Client::new(server)?;
    // Refused here with the documented exit codes, before ssh runs (its own are 255 or the
    // remote command's).
    let (user, mut grants) = super::active_grants(&c, &target, request.as_deref()).await?;
    if let Some(l) = &login {
        grants = grants_logging_in_as(grants, &target, l)?;
    }
    let proxy: Value = c.get("/v1/ssh/proxy").await?;
    let addr: std::net::SocketAddr = proxy["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Failure::new(exit::FAILURE, "the server runs no SSH proxy"))?;
    let host_key = proxy["host_key"].as_str().unwrap_or_default();
    // A proxy listening on all addresses is reached where the API is.
    let host = if addr.ip().is_unspecified() {
        c.host().unwrap_or_else(|| "127.0.0.1".into())
    } else {
        addr.ip().to_string()
    };
    let dir = super::requests::ssh_dir()?;
    let known = dir.join("warden_known_hosts");
    std::fs::write(&known, format!("[{host}]:{} {host_key}\n", addr.port()))?;
    let mut name = format!("{user}:{target}");
    if let Some(l) = login {
        name = format!("{name}:{l}");
    }
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-p")
        .arg(addr.port().to_string())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-o")
        .arg("StrictHostKeyChecking=yes")
        .arg("-o")
        .arg(format!("HostKeyAlias=[{host}]:{}", addr.port()));
    // The certificate of the grant `--request` names logs in with the key it certifies, or
    // nothing does. Else the certificate of the caller's grant for the target, if this client
    // saved it, logs in with its key, or with the key named if the grant certifies it (a
    // registered key is ssh's own default otherwise).
    let certified = match (&request, identity) {
        (Some(id), key) => {
            // The one grant of that id: `grants` holds nothing else by now.
            let grant = grants.first().filter(|g| g["id"] == id.as_str());
            let (key, cert) = requested_certificate(&dir, id, grant, key)?;
            Some((key, Some(cert)))
        }
        (None, Some(key)) => {
            let cert = grant_certificate(&grants, &dir, Some(&key));
            Some((key, cert.map(|(_, cert)| cert)))
        }
        (None, None) => grant_certificate(&grants, &dir, None).map(|(key, cert)| (key, Some(cert))),
    };
    if let Some((key, cert)) = certified {
        cmd.arg("-o").arg("IdentitiesOnly=yes").arg("-i").arg(key);
        if let Some(cert) = cert {
            cmd.arg("-o")
                .arg(format!("CertificateFile={}", cert.display()));
        }
    }
    if terminal {
        cmd.arg("-t");
    }
    cmd.arg(format!("{name}@{host}")).args(command);
    Err(cmd.exec()).context("starting ssh (is the OpenSSH client installed?)")
}

/// Of `grants` (the caller's active grants for `target`), those that log in as `login`: the
/// certificate of another would be refused by the proxy for that login.
fn grants_logging_in_as(
    grants: Vec<Value>,
    target: &str,
    login: &str,
) -> anyhow::Result<Vec<Value>> {
    let logins = |r: &Value| -> Vec<String> {
        r["credential"]["logins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect()
    };
    let (reaching, others): (Vec<Value>, Vec<Value>) = grants
        .into_iter()
        .partition(|r| logins(r).iter().any(|l| l == login));
    if reaching.is_empty() {
        let mut held: Vec<String> = Vec::new();
        for r in &others {
            let line = format!(
                "role {} logs in as {}",
                r["role"].as_str().unwrap_or_default(),
                logins(r).join(", ")
            );
            if !held.contains(&line) {
                held.push(line);
            }
        }
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "none of your grants for {target} logs in as {login:?} ({}): leave out --login, or request a role that does",
                held.join("; ")
            ),
        )
        .into());
    }
    Ok(reaching)
}

/// The key and certificate `warden request create` saved in `dir` for the first of `grants`
/// (the caller's active grants for the target, the one that ends last first) it saved them
/// for; with `key`, of the grant that certifies it.
fn grant_certificate(
    grants: &[Value],
    dir: &std::path::Path,
    key: Option<&std::path::Path>,
) -> Option<(PathBuf, PathBuf)> {
    let public = key.and_then(public_half);
    if key.is_some() && public.is_none() {
        return None;
    }
    grants.iter().find_map(|r| {
        let id = r["id"].as_str().filter(|id| super::requests::id_like(id))?;
        let cert = dir.join(format!("{id}-cert.pub"));
        match (key, &public) {
            (Some(key), Some(public)) => {
                (certified_key(&cert).as_ref() == Some(public)).then(|| (key.into(), cert))
            }
            _ => {
                let key = dir.join(id);
                (key.exists() && cert.exists()).then_some((key, cert))
            }
        }
    })
}

/// The key and certificate that sign in under grant `id`, which `--request` named: its
/// certificate, saved in `dir` from the server's answer (`grant`) if this client had not yet,
/// with `key` or, without one, the key saved beside it. Refused when the key is missing or the
/// certificate does not certify it: a key signing in without the grant's certificate would
/// leave the proxy to pick among the caller's grants, not necessarily the one named.
fn requested_certificate(
    dir: &std::path::Path,
    id: &str,
    grant: Option<&Value>,
    key: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{id}-cert.pub"));
    if certified_key(&cert).is_none()
        && let Some(grant) = grant
    {
        super::requests::save_certificate(grant)?;
    }
    let Some(certified) = certified_key(&cert) else {
        return Err(Failure::new(
            exit::FAILURE,
            format!("the server gave no SSH certificate for grant {id}: `warden ssh` signs in to targets of kind ssh"),
        )
        .into());
    };
    let fingerprint = certified.fingerprint(ssh_key::HashAlg::Sha256);
    let saved = dir.join(id);
    let saved_here = public_half(&saved).as_ref() == Some(&certified);
    let refusal = match key {
        Some(key) if public_half(&key).as_ref() == Some(&certified) => return Ok((key, cert)),
        Some(key) => {
            // Where the certified key is: saved beside the certificate, or named by the user.
            let instead = if saved_here {
                "leave out -i to sign in with that key".to_owned()
            } else {
                format!(
                    "name that key's private half with -i (it is not saved on this client at {})",
                    saved.display()
                )
            };
            format!(
                "-i {} does not hold the certificate of grant {id}, which certifies the key {fingerprint}: {instead}, or leave out --request to sign in with {} under the grant the proxy picks",
                key.display(),
                key.display()
            )
        }
        None if saved_here => return Ok((saved, cert)),
        None => format!(
            "the key grant {id} certifies ({fingerprint}) is not on this client at {}: name it with -i KEY",
            saved.display()
        ),
    };
    Err(Failure::new(exit::USAGE, refusal).into())
}

/// The public half of the private key in `key`: from `KEY.pub` or the key file itself.
fn public_half(key: &std::path::Path) -> Option<ssh_key::public::KeyData> {
    let mut pub_file = key.as_os_str().to_owned();
    pub_file.push(".pub");
    ssh_key::PublicKey::read_openssh_file(std::path::Path::new(&pub_file))
        .map(|k| k.key_data().clone())
        .or_else(|_| {
            ssh_key::PrivateKey::read_openssh_file(key).map(|k| k.public_key().key_data().clone())
        })
        .ok()
}

/// The key the certificate in `cert` certifies.
fn certified_key(cert: &std::path::Path) -> Option<ssh_key::public::KeyData> {
    std::fs::read_to_string(cert)
        .ok()
        .and_then(|text| ssh_key::Certificate::from_openssh(text.trim()).ok())
        .map(|c| c.public_key().clone())
}

/// An OpenSSH key revocation list starts so (`PROTOCOL.krl`).
const KRL_MAGIC: &[u8] = b"SSHKRL\n\0";

/// The server's revocation list, checked to be one: sshd reading an empty file revokes nothing,
/// and one that is no list refuses every certificate.
async fn fetch_revocation_list(server: Option<String>) -> anyhow::Result<Vec<u8>> {
    let client = Client::new(server)?;
    let krl = client.get_bytes("/v1/ssh/revoked-keys").await?;
    if !krl.starts_with(KRL_MAGIC) {
        return Err(client.not_a("OpenSSH key revocation list").into());
    }
    Ok(krl)
}

/// `warden ssh-ca`: the user CA's public key, for sshd's `TrustedUserCAKeys`, checked to be one.
pub async fn ca(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let client = Client::new(server)?;
    let key = client.get_text("/v1/ssh/ca").await?;
    if ssh_key::PublicKey::from_openssh(key.trim()).is_err() {
        return Err(client.not_a("SSH public key").into());
    }
    if out.json {
        // The key line alone: its line break is for a file, not part of the key.
        return out.json(&json!({ "ca_public_key": key.trim_end() }));
    }
    out.document("ca_public_key", &key)
}

/// Fetches the key revocation list and writes it to `file`, through a temporary file renamed
/// over it (sshd never reads half a list), or to standard output.
pub async fn revoked_keys(
    server: Option<String>,
    file: Option<&std::path::Path>,
    out: Output,
) -> anyhow::Result<()> {
    let Some(file) = file else {
        if out.json {
            return Err(Failure::new(
                exit::USAGE,
                "the revocation list is binary (an OpenSSH KRL), which --json cannot print: pass --out FILE",
            )
            .into());
        }
        if std::io::stdout().is_terminal() {
            return Err(Failure::new(
                exit::USAGE,
                "the revocation list is binary (an OpenSSH KRL): pass --out FILE, or redirect it to a file",
            )
            .into());
        }
        std::io::stdout().write_all(&fetch_revocation_list(server).await?)?;
        return Ok(());
    };
    // Refused before the server is asked: the rename over it would fail only at the end.
    if file.is_dir() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "--out names the file to write the revocation list to (the one sshd's RevokedKeys names), and {} is a directory: give a file in it, e.g. --out {}",
                file.display(),
                crate::output::shell_word(&file.join("revoked_keys").to_string_lossy())
            ),
        )
        .into());
    }
    let krl = fetch_revocation_list(server).await?;
    replace_file(file, &krl).with_context(|| format!("writing {}", file.display()))?;
    if out.json {
        out.json(&json!({ "file": file.display().to_string(), "bytes": krl.len() }))
    } else {
        println!(
            "Wrote the revocation list to {} ({} bytes).",
            file.display(),
            krl.len()
        );
        Ok(())
    }
}

/// Replaces `file` with `bytes` through a file of this run's own beside it, renamed over it:
/// sshd never reads half a list, and runs at once (cron and someone by hand) each rename a
/// whole list of their own instead of moving one another's away. The new file is made as
/// `File::create` makes one, so the list keeps the mode it always had.
fn replace_file(file: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{:016x}.new",
        std::process::id(),
        rand::random::<u64>()
    ));
    let staged = file.with_file_name(name);
    let written = write_new(&staged, bytes).and_then(|()| {
        std::fs::rename(&staged, file)
            .with_context(|| format!("renaming {} over it", staged.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// Writes `bytes` to `path`, a file that must not exist yet, and flushes them to disk.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            return Err(anyhow::anyhow!(
                "the directory {} does not exist: create it, or pass --out a file in one that does",
                dir.unwrap_or(std::path::Path::new(".")).display()
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("saving {}", path.display()))
}

/// Refuses a `--fingerprint` that is no SHA-256 key fingerprint as `ssh-keygen -l` prints one
/// (`SHA256:` and 43 characters of unpadded base64): a typo is a usage error, not a key that
/// did not match.
fn check_fingerprint(f: &str) -> anyhow::Result<()> {
    let hash = f.strip_prefix("SHA256:").unwrap_or_default();
    let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    if hash.len() == 43 && hash.chars().all(base64) {
        return Ok(());
    }
    Err(Failure::new(
        exit::USAGE,
        format!(
            "--fingerprint {} is not an SSH key fingerprint: give it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the host, SHA256: and 43 characters",
            warden_domain::text::shown(f, 64)
        ),
    )
    .into())
}

/// Fetches TARGET's host key, shows its fingerprint, and pins it once confirmed.
pub async fn pin_host_key(
    c: &Client,
    target: &str,
    fingerprint: Option<String>,
    out: Output,
) -> anyhow::Result<()> {
    if let Some(f) = &fingerprint {
        check_fingerprint(f)?;
    }
    let scan: Value = c
        .post(
            &format!("/v1/targets/{}/host-key/scan", segment(target)),
            &json!({}),
        )
        .await?;
    let key = scan["public_key"].as_str().unwrap_or_default();
    let seen = scan["fingerprint"].as_str().unwrap_or_default();
    let confirmed = match fingerprint {
        Some(f) => f,
        // A confirmation piped in (`yes |` in a script) is no one comparing anything.
        None if !std::io::stdin().is_terminal() => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "{target} presents the host key {seen}, and there is no terminal to confirm it on: compare it with the fingerprint on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there) and pass that as `--fingerprint SHA256:...`"
                ),
            )
            .into());
        }
        None => {
            eprintln!("{target} presents the host key {seen}");
            eprint!(
                "Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host. Pin it? [y/N] "
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(Failure::new(exit::REFUSED, "not pinned").into());
            }
            seen.to_owned()
        }
    };
    if confirmed != seen {
        return Err(Failure::new(
            exit::REFUSED,
            format!("{target} presents {seen}, not the confirmed {confirmed}: not pinned"),
        )
        .into());
    }
    let v: Value = c
        .put(
            &format!("/v1/targets/{}/host-key", segment(target)),
            &json!({ "public_key": key, "fingerprint": confirmed }),
        )
        .await?;
    if out.json {
        out.json(&v)
    } else {
        println!("Pinned {confirmed} for {target}.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch offers the replay of a session only when the session list said it is recorded:
    /// a metadata-only one points to its end in the audit log instead.
    #[test]
    fn a_watch_offers_a_replay_only_of_a_recorded_session() {
        let id = "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60";
        let listed = json!({"sessions": [
            {"id": "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f61", "recorded": true},
            {"id": id, "recorded": false},
        ]});
        assert_eq!(recorded_as_listed(&listed, id), Some(false));
        assert_eq!(recorded_as_listed(&listed, &id.to_uppercase()), Some(false));
        assert_eq!(
            recorded_as_listed(&listed, "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f61"),
            Some(true)
        );
        assert_eq!(
            recorded_as_listed(&listed, "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f62"),
            None
        );
        assert_eq!(recorded_as_listed(&json!({}), id), None);

        let replay = format!("`warden replay {id}`");
        let search = "`warden audit search --code session.ended`";
        let recorded = watch_ended(id, Some(true));
        assert!(
            recorded.contains(&format!("{replay} plays it whole")),
            "{recorded}"
        );
        let metadata = watch_ended(id, Some(false));
        assert!(!metadata.contains("warden replay"), "{metadata}");
        assert!(metadata.contains("not recorded"), "{metadata}");
        assert!(metadata.contains(search), "{metadata}");
        let unknown = watch_ended(id, None);
        assert!(unknown.contains(search), "{unknown}");
        assert!(unknown.contains("if it was"), "{unknown}");
    }

    fn grant(id: &str, role: &str, logins: &[&str]) -> Value {
        json!({"id": id, "role": role, "credential": {"logins": logins}})
    }

    #[test]
    fn a_login_picks_the_grants_that_reach_it_in_their_order() {
        let grants = vec![
            grant("a", "viewer", &["warden-viewer"]),
            grant("b", "deploy", &["warden-deploy", "warden-viewer"]),
            grant("c", "deploy", &["warden-deploy"]),
        ];
        let ids = |gs: Vec<Value>| gs.iter().map(|g| g["id"].clone()).collect::<Vec<_>>();
        let deploy = grants_logging_in_as(grants.clone(), "web", "warden-deploy").unwrap();
        assert_eq!(ids(deploy), [json!("b"), json!("c")]);
        let viewer = grants_logging_in_as(grants.clone(), "web", "warden-viewer").unwrap();
        assert_eq!(ids(viewer), [json!("a"), json!("b")]);
        let none = grants_logging_in_as(grants, "web", "root").unwrap_err();
        let none = none.downcast_ref::<Failure>().unwrap();
        assert_eq!(none.code, exit::REFUSED);
        assert!(
            none.message.contains(
                "none of your grants for web logs in as \"root\" (role viewer logs in as warden-viewer; role deploy logs in as warden-deploy, warden-viewer; role deploy logs in as warden-deploy)"
            ),
            "{}",
            none.message
        );
    }

    #[test]
    fn runs_at_once_each_replace_the_list_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked_keys");
        let lists: Vec<Vec<u8>> = (0u8..8).map(|i| vec![i; 4096]).collect();
        let start = std::sync::Barrier::new(lists.len());
        std::thread::scope(|s| {
            for list in &lists {
                let (file, start) = (&file, &start);
                s.spawn(move || {
                    start.wait();
                    for _ in 0..50 {
                        replace_file(file, list).unwrap();
                    }
                });
            }
        });
        assert!(lists.contains(&std::fs::read(&file).unwrap()));
        // Nothing is left beside it, and it has the mode a file made afresh has.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        let fresh = dir.path().join("fresh");
        std::fs::File::create(&fresh).unwrap();
        assert_eq!(mode(&file), mode(&fresh));
    }

    #[test]
    fn a_list_for_a_missing_directory_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let e = replace_file(&missing.join("revoked_keys"), b"x").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "the directory {} does not exist: create it, or pass --out a file in one that does",
                missing.display()
            )
        );
    }

    #[test]
    fn a_fingerprint_must_look_like_one() {
        let real = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert!(check_fingerprint(real).is_ok());
        for bad in ["bogus", "SHA256:short", "MD5:aa:bb", &real[7..]] {
            let e = check_fingerprint(bad).unwrap_err();
            assert_eq!(exit::code_of(&e), exit::USAGE, "{bad}");
            assert!(e.to_string().contains("43 characters"), "{e}");
        }
    }
}
