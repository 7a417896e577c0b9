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
