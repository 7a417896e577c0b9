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

use crate::exit::{self, Failure};

/// Parses a request id argument before anything is sent: a malformed one is a usage error
/// (an empty one would even name another endpoint).
pub fn request_id(arg: &str) -> Result<String, String> {
    arg.parse::<warden_domain::RequestId>()
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

/// Reads a secret from stdin (piped) or prompts for it without echo (terminal).
pub fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let s = if from_stdin {
        let mut s = String::new();
        std::io::stdin().take(4096).read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password(prompt).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("cannot prompt for a password ({e}); pass --password-stdin"),
            )
        })?
    };
    if s.is_empty() {
        return Err(Failure::new(exit::USAGE, "the password is empty").into());
    }
    Ok(s)
}

/// Longest public key file read: an RSA key line of 16384 bits is under 3 KiB.
const PUBLIC_KEY_FILE_MAX: u64 = 16 * 1024;

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
