//! Warden's SSH proxy: the one door to SSH targets.
//!
//! A user connects with the stock OpenSSH client as `WARDEN_USER:TARGET[:LOGIN]@warden-host`
//! and authenticates with a public key registered to their Warden account; the sign-in is
//! refused unless the user holds an active grant for the target, and within the [`Limits`] on
//! what one user or address may hold. For every session channel the proxy asks the [`Backend`]
//! again whether the user holds an active grant for the target *now*, connects upstream with a fresh key and a certificate valid only for that grant
//! (the user never sees either), checks the upstream host key against the pinned one, and
//! relays the channel while recording it ([`recording`], written beside the relay by its own
//! task), enforcing the role's command and file-transfer rules ([`rules`], [`sftp`]) and
//! obeying live control ([`SessionRegistry`]): kill, watch, and the end of the grant.
//!
//! The crate knows neither HTTP nor SQL: everything durable goes through [`Backend`].

mod backend;
mod direct_file;
mod error;
mod exec_reading;
mod inbox;
mod limits;
mod recorder;
pub mod recording;
mod registry;
pub mod rules;
mod server;
mod session;
pub mod sftp;
mod upstream;

pub use backend::{Backend, BackendError, Certified, Denied, Grant, Upstream};
pub use error::Error;
pub use limits::Limits;
pub use recording::{FsRecordings, Recordings};
pub use registry::{SessionInfo, SessionRegistry};
pub use rules::Rules;
pub use server::{Listener, ProxyConfig, SIGN_IN_DEADLINE, load_or_create_host_key};
pub use upstream::fetch_host_key;
