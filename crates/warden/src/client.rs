//! The API client and the token it keeps in `WARDEN_HOME` (default `~/.config/warden`).

use std::path::PathBuf;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exit::{self, Failure};

/// Default server address: the loopback listener of `warden serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8443";

/// What `warden login` saves.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub server: String,
    pub user: String,
    pub token: String,
    pub expires_at: String,
}

/// Where the client keeps its files.
pub fn home() -> anyhow::Result<PathBuf> {
    if let Ok(h) = std::env::var("WARDEN_HOME") {
        return Ok(PathBuf::from(h));
    }
    let base = std::env::var("HOME").context("HOME is not set; set WARDEN_HOME")?;
    Ok(PathBuf::from(base).join(".config").join("warden"))
}

/// Creates the client's home directory, private to the user.
pub fn ensure_home() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let h = home()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&h)
        .with_context(|| format!("creating {}", h.display()))?;
    Ok(h)
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
/// to replace it, and only calls that need the token say it is damaged.
fn load_saved() -> anyhow::Result<SavedLogin> {
    let path = saved_path()?;
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

/// Saves a login with mode 0600.
pub fn save(s: &Saved) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    ensure_home()?;
    let path = saved_path()?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(s)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
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
        let server = server
            .or_else(|| saved.as_ref().map(|s| s.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
            .trim_end_matches('/')
            .to_owned();
        let url_ok = reqwest::Url::parse(&server)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !url_ok {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "the server {server:?} (--server or WARDEN_SERVER) is not a URL: write it as http://HOST:PORT or https://HOST"
                ),
            )
            .into());
        }
        let (token, user, other_login) = match saved {
            Some(s) if s.server == server => (Some(s.token), Some(s.user), None),
            Some(s) => (None, None, Some(s.server)),
            None => (None, None, None),
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            server,
            token,
            user,
            other_login,
            damaged,
        })
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
                let message = match (&self.damaged, &self.other_login) {
                    (Some(why), _) => why.clone(),
                    (None, Some(other)) => format!(
                        "not logged in to {} (your saved login is for {other}, a different URL): run `warden login --user NAME --server {}` or use that URL",
                        self.server, self.server
                    ),
                    (None, None) => {
                        "not logged in: run `warden login --user NAME` first".to_owned()
                    }
                };
                return Err(Failure::new(exit::UNAUTHENTICATED, message).into());
            }
            _ => req,
        };
        let resp = req.send().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach the Warden server at {}: {e}", self.server),
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::new(exit::UNREACHABLE, format!("reading the response: {e}")))?;
        if status.is_success() {
            let text = if bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(text)
                .context("the server sent a response this client does not understand");
        }
        let (api_code, message, diagnostics) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (Some(b.error.code), b.error.message, b.error.diagnostics),
            Err(_) => (None, format!("server answered {status}"), None),
        };
        Err(Failure {
            diagnostics,
            ..Failure::from_status(status.as_u16(), api_code, message)
        }
        .into())
    }

    /// GET with the token.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path)), true).await
    }

    /// GET without a token, returning text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        String::from_utf8(self.get_bytes(path).await?)
            .map_err(|_| anyhow::anyhow!("the server sent text that is not UTF-8"))
    }

    /// GET without a token, returning the body's bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.http.get(self.url(path)).send().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach the Warden server at {}: {e}", self.server),
            )
        })?;
        if !resp.status().is_success() {
            return Err(Failure::from_status(
                resp.status().as_u16(),
                None,
                format!("server answered {}", resp.status()),
            )
            .into());
        }
        Ok(resp.bytes().await?.to_vec())
    }

    /// GET text with the token.
    pub async fn get_text_authed(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.get_authed(&self.http, path).await?.text().await?)
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
        let token = self.token.as_deref().ok_or_else(|| {
            Failure::new(
                exit::UNAUTHENTICATED,
                self.damaged.clone().unwrap_or_else(|| {
                    "not logged in: run `warden login --user NAME` first".into()
                }),
            )
        })?;
        let resp = http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    exit::UNREACHABLE,
                    format!("cannot reach the Warden server at {}: {e}", self.server),
                )
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let (code, message) = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| (Some(b.error.code), b.error.message))
                .unwrap_or_else(|_| (None, format!("server answered {status}")));
            return Err(Failure::from_status(status.as_u16(), code, message).into());
        }
        Ok(resp)
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
