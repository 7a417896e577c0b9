//! The API client and the token it keeps in `WARDEN_HOME` (default `~/.config/warden`).

use std::path::PathBuf;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use warden_server::api::{API_MARK, API_MARK_VALUE};

use crate::exit::{self, Failure};

mod strict;

pub use strict::{Place, check_dir};

/// Default server address: the loopback listener of `warden serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8443";

/// How long a call may take from connecting to its whole answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `server` written one way (`--server`, `WARDEN_SERVER` or the saved login's): no spaces
/// around it, scheme and host in lower case, no default port, no trailing `/`; a path stays
/// (a server behind a proxy at a prefix). A user name or password in it is refused: it would
/// be printed and saved, and the client signs in with `warden login` instead.
pub fn normal_server(server: &str) -> anyhow::Result<String> {
    let bad = |why: &str| {
        Failure::new(
            exit::USAGE,
            format!(
                "the server {server:?} (--server or WARDEN_SERVER) {why}: write it as http://HOST:PORT or https://HOST"
            ),
        )
    };
    let url = reqwest::Url::parse(server.trim()).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not an http:// or https:// URL, the only kinds accepted").into());
    }
    if !url.has_host() {
        return Err(bad("names no host").into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: what it holds may be a password.
        return Err(Failure::new(
            exit::USAGE,
            "the server URL (--server or WARDEN_SERVER) holds a user name or password, which would be printed and saved: write it as http://HOST:PORT and sign in with `warden login`",
        )
        .into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment").into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether a connection error's innermost cause is a failed TLS handshake.
fn is_tls_failure(cause: &str) -> bool {
    [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
        "tls",
        "TLS",
    ]
    .iter()
    .any(|m| cause.contains(m))
}

/// What `warden login` saves.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub server: String,
    pub user: String,
    pub token: String,
    pub expires_at: String,
}

/// Where the client keeps its files, as an absolute path: the paths it prints (a key, a
/// certificate in an `ssh` command) must work from any directory. An empty `WARDEN_HOME` is
/// unset, as an empty `HOME` is to ssh.
pub fn home() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var("WARDEN_HOME") {
        Ok(h) if !h.is_empty() => PathBuf::from(h),
        _ => {
            let base = std::env::var("HOME")
                .ok()
                .filter(|h| !h.is_empty())
                .context("HOME is not set; set WARDEN_HOME")?;
            PathBuf::from(base).join(".config").join("warden")
        }
    };
    std::path::absolute(&dir).with_context(|| format!("finding {}", dir.display()))
}

/// Creates the client's home directory, private to the user; one already there is refused
/// unless it is the user's alone ([`strict`]).
pub fn ensure_home() -> anyhow::Result<PathBuf> {
    let h = home()?;
    private_dir(&h, Place::Home)?;
    Ok(h)
}

/// Creates directory `dir` (and those above it missing) with mode 0700, and refuses it unless
/// it is the user's alone ([`strict`]).
pub fn private_dir(dir: &std::path::Path, place: Place<'_>) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {} ({HOME_HINT})", dir.display()))?;
    strict::check_dir(dir, place)
}

/// Said when the client's home cannot be made or written.
pub const HOME_HINT: &str = "where the client keeps your login: make it writable for you, or set WARDEN_HOME to a directory of your own";

/// Takes `WARDEN_HOME`'s login lock, held while a login replaces the saved one: logins run at
/// once into one home (a CI job's parallel steps) take turns, so that each revokes the one it
/// replaced and none is left working unsaved. Released when the file is dropped.
pub fn lock_logins() -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = ensure_home()?.join("login.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {} ({HOME_HINT})", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn saved_path() -> anyhow::Result<PathBuf> {
    Ok(home()?.join("credentials.json"))
}

/// The login `warden login` saved.
enum SavedLogin {
    Missing,
    Usable(Saved),
    /// The file is there but cannot be used (edited, cut short): why, for the caller.
    Damaged(String),
}

/// Reads the saved login. A damaged one is not an error here: `warden login` must still run
/// to replace it, and only calls that need the token say it is damaged. One in a home, or a
/// file, that others could have written is refused, never read: it could name their server.
fn load_saved() -> anyhow::Result<SavedLogin> {
    check_dir(&home()?, Place::Home)?;
    let path = saved_path()?;
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedLogin::Missing),
        _ => keep_private(
            &path,
            "If anyone else could read it, run `warden logout` to revoke the token it held.",
            "sign in again with `warden login`",
        )?,
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedLogin::Missing),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let damaged = |what: &str| {
        SavedLogin::Damaged(format!(
            "your saved login ({}) is damaged: {what}; run `warden login --user NAME` again",
            path.display()
        ))
    };
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(_) => return Ok(damaged("it is not the JSON `warden login` writes")),
    };
    // A token Warden issued is its prefix and URL-safe characters, well under 256 bytes; one
    // edited by hand could not even be sent as a header.
    let token_ok = saved.token.len() <= 256
        && saved.token.starts_with("wdn_")
        && saved
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !token_ok {
        return Ok(damaged("its token is not one Warden issues"));
    }
    Ok(SavedLogin::Usable(saved))
}

/// Refuses a file of the client's secrets (the saved login, a grant's kept password) that
/// someone else owns or may write to, saying to remove it and then do `again` ([`strict`]);
/// makes it private again if someone widened its mode otherwise (a copied home, a umask of 0),
/// and says so, with `undo`: whoever could read it could use what it holds.
pub fn keep_private(saved: &std::path::Path, undo: &str, again: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(saved)?;
    // A link that leads nowhere yet is refused too: whoever may make what it names would
    // write the file.
    let leads = std::fs::metadata(saved)
        .with_context(|| format!("reading {} (where it leads)", saved.display()))?;
    strict::check_file(saved, &leads, again)?;
    if meta.file_type().is_symlink() {
        // Its mode is the target's, wherever that is: not ours to change.
        eprintln!(
            "Warning: {} is a link to another file; `warden login` replaces it with a private file of its own.",
            saved.display()
        );
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(saved, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", saved.display()))?;
        eprintln!(
            "Warning: {} was readable by others (mode {:o}); it is 600 now. {undo}",
            saved.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Saves a login with mode 0600.
pub fn save(s: &Saved) -> anyhow::Result<()> {
    ensure_home()?;
    write_private(&saved_path()?, serde_json::to_string_pretty(s)?.as_bytes())
}

/// Writes `bytes` to `path` as a new file only its owner may read: made afresh beside it
/// (never through a link, nor into a file already there, which would keep its mode) and then
/// renamed over it, so a reader finds the old contents or the new, and a link at `path` is
/// replaced rather than followed.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Named for this process and write alone: logins run at once into one home (a CI job's
    // parallel steps) each rename a whole file of their own.
    let tmp = path.with_extension(format!(
        "{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Forgets the saved login.
pub fn forget() -> anyhow::Result<()> {
    remove_if_present(&saved_path()?)
}

/// Removes the file at `path`; one already gone is no error.
pub fn remove_if_present(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// An API client for one server.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    pub server: String,
    token: Option<String>,
    /// Who the saved login is, when its token is the one used.
    user: Option<String>,
    /// The server the saved login is for, when it is another one.
    other_login: Option<String>,
    /// Why the saved login cannot be used, when it is damaged.
    damaged: Option<String>,
    /// When the saved login for this server expired, if it has: its token is not sent (the
    /// server would refuse it, and count the refusal against this address).
    expired: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    diagnostics: Option<serde_json::Value>,
    request_id: Option<String>,
}

impl Client {
    /// A client for `server` (or the saved/default one), with the saved token when it belongs
    /// to that server.
    pub fn new(server: Option<String>) -> anyhow::Result<Self> {
        let (saved, damaged) = match load_saved()? {
            SavedLogin::Missing => (None, None),
            SavedLogin::Usable(s) => (Some(s), None),
            SavedLogin::Damaged(why) => (None, Some(why)),
        };
        let server = normal_server(
            &server
                .or_else(|| saved.as_ref().map(|s| s.server.clone()))
                .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        )?;
        let mut expired = None;
        let (token, user, other_login) = match saved {
            // Logins saved before URLs were written one way are compared in that way too.
            Some(s) if normal_server(&s.server).is_ok_and(|saved| saved == server) => {
                let ended = time::OffsetDateTime::parse(&s.expires_at, &Rfc3339)
                    .is_ok_and(|at| at <= time::OffsetDateTime::now_utc());
                if ended {
                    expired = Some(s.expires_at);
                    (None, Some(s.user), None)
                } else {
                    (Some(s.token), Some(s.user), None)
                }
            }
            Some(s) => (None, None, Some(s.server)),
            None => (None, None, None),
        };
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            server,
            token,
            user,
            other_login,
            damaged,
            expired,
        })
    }

    /// Why there is no token to send: the saved login is damaged, expired, for another
    /// server, or there is none.
    fn not_logged_in(&self) -> String {
        match (&self.damaged, &self.expired, &self.other_login) {
            (Some(why), _, _) => why.clone(),
            (None, Some(at), _) => format!(
                "your login to {} expired at {at}: run `warden login --user {}` again",
                self.server,
                self.user.as_deref().unwrap_or("NAME")
            ),
            // A URL with a path is most likely the saved one with `/v1` pasted after it.
            (None, None, Some(other)) => match self.path_hint() {
                Some(hint) => format!("not logged in to {}{hint}", self.server),
                None => format!(
                    "not logged in to {} (your saved login is for {other}, a different URL): run `warden login --user NAME --server {}` or use that URL",
                    self.server, self.server
                ),
            },
            (None, None, None) => "not logged in: run `warden login --user NAME` first".to_owned(),
        }
    }

    /// This client sending `token`, one just issued and not saved, in place of the saved one.
    pub fn with_token(&self, token: String) -> Self {
        Self {
            http: self.http.clone(),
            server: self.server.clone(),
            token: Some(token),
            user: None,
            other_login: None,
            damaged: None,
            expired: None,
        }
    }

    /// `resp` when Warden sent it (it carries [`API_MARK`]). Anything else at that address (a
    /// portal's page, a health check's `200 {"status":"ok"}`, a proxy's own error) fails
    /// whatever its status, with an exit code of its own: never read as an approval done, nor
    /// taken for a policy's refusal or a missing request.
    fn warden_answer(&self, resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        let message = match resp.headers().get(API_MARK) {
            Some(v) if v == API_MARK_VALUE => return Ok(resp),
            Some(v) => format!(
                "{} speaks Warden's API {}, this client {API_MARK_VALUE}: use a client of the server's version",
                self.server,
                String::from_utf8_lossy(v.as_bytes())
            ),
            None => self.with_path_hint(
                status.as_u16(),
                None,
                format!(
                    "{} answered {status}, but not as a Warden server does: is it one (check --server or WARDEN_SERVER)?",
                    self.server
                ),
            ),
        };
        Err(Failure::new(exit::FAILURE, message).into())
    }

    /// Whether the saved login for this server has expired (and is used no more).
    pub fn expired(&self) -> bool {
        self.expired.is_some()
    }

    /// Whether a saved login's token is used for this server.
    pub fn logged_in(&self) -> bool {
        self.token.is_some()
    }

    /// The server of the saved login, when it is another one than this client's.
    pub fn other_login(&self) -> Option<&str> {
        self.other_login.as_deref()
    }

    /// Whether the saved login is damaged.
    pub fn damaged(&self) -> bool {
        self.damaged.is_some()
    }

    /// The signed-in user, when the saved login is for this server.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        auth: bool,
    ) -> anyhow::Result<T> {
        let req = match (&self.token, auth) {
            (Some(t), true) => req.bearer_auth(t),
            (None, true) => {
                return Err(Failure::new(exit::UNAUTHENTICATED, self.not_logged_in()).into());
            }
            _ => req,
        };
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let resp = self.warden_answer(resp)?;
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await.into());
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::new(exit::UNREACHABLE, format!("reading the response: {e}")))?;
        let text = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text)
            .context("the server sent a response this client does not understand")
    }

    /// The failure a non-2xx answer of Warden's stands for: the server's own error, or, from a
    /// server of another version, a word that it could not be read. A server error names the
    /// correlation id the server's log has its cause under.
    async fn refusal(&self, resp: reqwest::Response) -> Failure {
        let status = resp.status();
        let correlation = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.unwrap_or_default();
        let (api_code, message, diagnostics, request_id) = match serde_json::from_slice::<ErrorBody>(
            &body,
        ) {
            Ok(b) => (
                Some(b.error.code),
                b.error.message,
                b.error.diagnostics,
                b.error.request_id,
            ),
            Err(_) => (
                None,
                format!(
                    "{} answered {status} with an error this client cannot read: is the client of the server's version?",
                    self.server
                ),
                None,
                None,
            ),
        };
        let mut message = self.with_path_hint(status.as_u16(), api_code.as_deref(), message);
        if let Some(id) = correlation.filter(|_| status.is_server_error()) {
            message.push_str(&format!(" [x-request-id {id} in the server's log]"));
        }
        Failure {
            diagnostics,
            request_id,
            ..Failure::from_status(status.as_u16(), api_code, message)
        }
    }

    /// GET with the token.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path)), true).await
    }

    /// A success answer that does not hold the `what` asked for: something else may answer at
    /// this address (a proxy's or portal's page), and whatever the answer was written over
    /// must be left as it was.
    pub fn not_a(&self, what: &str) -> Failure {
        Failure::new(
            exit::FAILURE,
            format!(
                "{} answered with no {what}: is it a Warden server (check --server or WARDEN_SERVER)?",
                self.server
            ),
        )
    }

    /// GET without a token, returning text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        String::from_utf8(self.get_bytes(path).await?)
            .map_err(|_| anyhow::anyhow!("the server sent text that is not UTF-8"))
    }

    /// GET without a token, returning the body's bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let resp = self.warden_answer(resp)?;
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await.into());
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::new(exit::UNREACHABLE, format!("reading the response: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// GET text with the token.
    pub async fn get_text_authed(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.get_response_authed(path).await?.text().await?)
    }

    /// GET with the token, returning the response, for its headers as well as its body.
    pub async fn get_response_authed(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.get_authed(&self.http, path).await
    }

    /// GET with the token, returning the response to read as a stream (no overall timeout:
    /// a watched session lasts as long as it lasts).
    pub async fn get_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        self.get_authed(&http, path).await
    }

    /// GET `path` with the token through `http`; a non-2xx answer becomes the server's error.
    async fn get_authed(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| Failure::new(exit::UNAUTHENTICATED, self.not_logged_in()))?;
        let resp = http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let resp = self.warden_answer(resp)?;
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await.into());
        }
        Ok(resp)
    }

    /// `message` of a `status` answer, with a hint when the server URL has a path and the
    /// server knew no such endpoint: the client adds `/v1/...` itself, so a URL ending in `/v1`
    /// (pasted from an API call) reaches no endpoint at all.
    fn with_path_hint(&self, status: u16, code: Option<&str>, message: String) -> String {
        match self.path_hint() {
            Some(hint) if status == 404 && matches!(code, None | Some("no_route")) => {
                format!("{message}{hint}")
            }
            _ => message,
        }
    }

    /// Said of a server URL with a path: the client adds `/v1/...` itself.
    fn path_hint(&self) -> Option<String> {
        let path = reqwest::Url::parse(&self.server)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if path.is_empty() {
            return None;
        }
        let root = self
            .server
            .strip_suffix(path.as_str())
            .unwrap_or(&self.server);
        Some(format!(
            " (the server URL {} has a path, {path}: the client adds /v1/… itself, so write the server's address alone, e.g. {root}, unless it is served under that prefix)",
            self.server
        ))
    }

    /// Why the server could not be reached, from the innermost cause of `e` (refused, no
    /// such host, a TLS handshake with a plain-HTTP server, no answer in time).
    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let why = if e.is_timeout() {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else if self.server.starts_with("https:") && is_tls_failure(&cause.to_string()) {
            format!("{cause} (a server that speaks plain HTTP? then write http://)")
        } else {
            cause.to_string()
        };
        Failure::new(
            exit::UNREACHABLE,
            format!("cannot reach the Warden server at {}: {why}", self.server),
        )
    }

    /// The server's host name, from its URL.
    pub fn host(&self) -> Option<String> {
        let rest = self.server.split_once("://")?.1;
        let authority = rest.split('/').next()?;
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        Some(host.trim_matches(['[', ']']).to_owned())
    }

    /// POST JSON with the token.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).json(body), true)
            .await
    }

    /// DELETE with the token.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(self.url(path)), true).await
    }

    /// PUT JSON with the token.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.put(self.url(path)).json(body), true)
            .await
    }

    /// POST JSON without a token.
    pub async fn post_anonymous<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).json(body), false)
            .await
    }
}

/// Percent-encodes `s` for one path segment or query value of an API URL, so that a name or
/// id typed by the user can never reach another path (`../`) or add parameters.
pub fn segment(s: impl std::fmt::Display) -> String {
    s.to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?k=v&...` of the pairs that have a value, encoded; empty when none has.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_is_written_one_way() {
        for typed in [
            "http://127.0.0.1:8443",
            " http://127.0.0.1:8443/ ",
            "HTTP://127.0.0.1:8443",
        ] {
            assert_eq!(normal_server(typed).unwrap(), "http://127.0.0.1:8443");
        }
        assert_eq!(
            normal_server("https://Warden.Example.com:443/").unwrap(),
            "https://warden.example.com"
        );
        // A prefix a proxy serves Warden under stays.
        assert_eq!(
            normal_server("https://example.com/warden/").unwrap(),
            "https://example.com/warden"
        );
        for (bad, why) in [
            (
                "http://admin:secret@127.0.0.1:8443",
                "user name or password",
            ),
            ("http://127.0.0.1:8443/?x=1", "query"),
            ("127.0.0.1:8443", "not a URL"),
            ("ftp://example.com", "is not an http:// or https:// URL"),
            ("file:///etc/passwd", "is not an http:// or https:// URL"),
        ] {
            let e = normal_server(bad).unwrap_err();
            let e = e.downcast_ref::<Failure>().unwrap();
            assert_eq!(e.code, exit::USAGE);
            assert!(e.message.contains(why), "{bad}: {}", e.message);
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
    }
}
