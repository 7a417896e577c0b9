//! Target admin credentials: sealed at rest under the master key, set by administrators, and
//! rotated to a random password only Warden knows.
//!
//! A rotation stores the new password beside the old one before it changes the target. If it
//! cannot tell whether the target took the change (a crash, no answer), both stay stored, and
//! the next use of the credential settles it: it logs in with the new password, else the old
//! one, and keeps the one the target takes. Rotations and settlements of one target run one at
//! a time, so none stores a password another has just made stale.

use warden_domain::TargetName;
use warden_domain::audit::{Actor, Code, Event};
use warden_issuers::{AdminCredential, ListRequest, RotateRootRequest, Secret};

use crate::broker::{Caller, Error};
use crate::state::{App, now};

/// Longest administrator user name and password of a target the vault stores, in bytes (the
/// user name is printable ASCII, so in characters too).
pub const MAX_USERNAME: usize = 128;
pub const MAX_PASSWORD: usize = 1024;

impl App {
    fn account_target(
        &self,
        target: &TargetName,
    ) -> Result<
        (
            warden_policy::Target,
            std::sync::Arc<dyn warden_issuers::Issuer>,
        ),
        Error,
    > {
        let policy = self.policy.load_full();
        let t = policy
            .targets()
            .get(target)
            .cloned()
            .ok_or_else(|| Error::not_in_policy(target))?;
        let issuer = self
            .issuers
            .get(&t.kind)
            .cloned()
            .ok_or_else(|| Error::Issuer(format!("no issuer for target kind {:?}", t.kind)))?;
        if !crate::broker::makes_accounts(issuer.as_ref()) {
            return Err(Error::Input {
                code: "no_admin_credential",
                message: format!(
                    "{target} is of kind {}, which Warden reaches with no admin credential: credentials and their rotation are for database targets",
                    t.kind
                ),
            });
        }
        Ok((t, issuer))
    }

    fn seal_credential(&self, username: &str, password: &str) -> Result<String, Error> {
        let plain =
            serde_json::to_vec(&serde_json::json!({ "username": username, "password": password }))
                .map_err(|e| Error::Issuer(e.to_string()))?;
        self.sealer
            .seal(&plain)
            .map_err(|e| Error::Issuer(e.to_string()))
    }

    fn require_admin(&self, caller: &Caller<'_>, what: &str) -> Result<(), Error> {
        if self.is_admin(caller.user) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("only administrators can {what}")))
        }
    }

    /// Stores the admin credential Warden uses to create accounts at `target`, once it logs in
    /// there with what Warden needs (when `verify`): one that cannot would fail every issue,
    /// and every revocation, from then on.
    pub async fn set_target_credential(
        &self,
        caller: Caller<'_>,
        target: &TargetName,
        username: &str,
        password: &str,
        verify: bool,
    ) -> Result<(), Error> {
        self.require_admin(&caller, "set target credentials")?;
        let (t, issuer) = self.account_target(target)?;
        if username.is_empty()
            || username.len() > MAX_USERNAME
            || password.is_empty()
            || password.len() > MAX_PASSWORD
        {
            return Err(Error::Input {
                code: "bad_credential",
                message: format!(
                    "username and password must be 1-{MAX_USERNAME} and 1-{MAX_PASSWORD} bytes"
                ),
            });
        }
        if !username.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Input {
                code: "bad_credential",
                message: "the username may hold printable ASCII only, no spaces".into(),
            });
        }
        if verify {
            let admin = AdminCredential {
                username: username.to_owned(),
                password: Secret::new(password.to_owned()),
            };
            if let Err(e) = logs_in(&t, issuer.as_ref(), &admin).await {
                // An account that logged in but lacks a privilege is told only what to grant.
                let check = if matches!(e, warden_issuers::Error::Privilege(_)) {
                    ""
                } else {
                    " Check that the target's connection in targets.toml (host, port, database) is right and reachable from Warden, and that this user name and password log in there."
                };
                let message = format!(
                    "nothing was stored: {e}.{check} Or store it anyway with `--no-verify` (`\"verify\": false` in the API; every issue and revocation at {target} will fail until it works)"
                );
                if !e.is_invalid_input() {
                    // A failure, which the API does not record as it does a refusal: on the
                    // record here, without the user name, which no target took (a password typed
                    // in its place would stay in the signed log), so without the target's words.
                    let mut ev =
                        Event::new(Code::TargetCredentialSet, caller_actor(&caller), now())
                            .details(serde_json::json!({ "verified": true }))
                            .failed(
                                "issuer_failed",
                                format!(
                                    "nothing was stored: {target} could not be reached, or failed"
                                ),
                            );
                    ev.target = Some(target.clone());
                    self.store.append(vec![ev]).await?;
                }
                return Err(not_working(&e, message));
            }
        }
        let sealed = self.seal_credential(username, password)?;
        let mut ev = Event::new(Code::TargetCredentialSet, caller_actor(&caller), now())
            .details(serde_json::json!({ "username": username, "verified": verify }));
        ev.target = Some(target.clone());
        self.store
            .set_target_credential(target, sealed, vec![ev])
            .await?;
        Ok(())
    }

    /// A target's admin credential from the vault, with an interrupted rotation settled first.
    pub async fn admin_credential(
        &self,
        target: &TargetName,
    ) -> Result<Option<AdminCredential>, Error> {
        match self.stored_credential(target).await? {
            Some((current, None)) => Ok(Some(current)),
            None => Ok(None),
            Some((_, Some(_))) => {
                let _rotating = self.rotations.lock(target.clone()).await;
                self.settled_credential(target).await
            }
        }
    }

    /// The stored credential and, after an interrupted rotation, the password it was setting.
    async fn stored_credential(
        &self,
        target: &TargetName,
    ) -> Result<Option<(AdminCredential, Option<Secret<String>>)>, Error> {
        let Some(sealed) = self.store.target_credential(target).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(&sealed).map_err(|e| {
            Error::Issuer(format!(
                "the stored credential for {target} does not open: {e}"
            ))
        })?;
        parse_credential(&plain).map(Some)
    }

    /// The credential the target takes, settling an interrupted rotation: the new password if
    /// it logs in, else the old one; that one is stored alone. Run holding `rotations`.
    async fn settled_credential(
        &self,
        target: &TargetName,
    ) -> Result<Option<AdminCredential>, Error> {
        let Some((current, next)) = self.stored_credential(target).await? else {
            return Ok(None);
        };
        let Some(next) = next else {
            return Ok(Some(current));
        };
        let (t, issuer) = self.account_target(target)?;
        let new = AdminCredential {
            username: current.username.clone(),
            password: next,
        };
        let unsettled = |e: warden_issuers::Error| {
            Error::Issuer(format!(
                "a rotation of {target}'s admin password was interrupted, and neither password could be tried: {e}"
            ))
        };
        let (kept, which) = match logs_in(&t, issuer.as_ref(), &new).await {
            Ok(()) => (new, "new"),
            Err(e) if e.left_target_untouched() => {
                match logs_in(&t, issuer.as_ref(), &current).await {
                    Ok(()) => (current, "old"),
                    Err(e) => return Err(unsettled(e)),
                }
            }
            Err(e) => return Err(unsettled(e)),
        };
        let mut ev = Event::new(Code::TargetRootRotated, Actor::system(), now()).details(
            serde_json::json!({ "username": kept.username, "settled": "an interrupted rotation", "kept": which }),
        );
        ev.target = Some(target.clone());
        let sealed = self.seal_credential(&kept.username, kept.password.expose())?;
        self.store
            .set_target_credential(target, sealed, vec![ev])
            .await?;
        tracing::info!(%target, kept = which, "an interrupted rotation of the admin password was settled");
        Ok(Some(kept))
    }

    /// Changes the admin password at `target` to a new random one that only Warden knows. The
    /// new password is sealed and stored next to the old one *before* the target is changed,
    /// so a crash in between loses neither (see the module documentation).
    pub async fn rotate_root(&self, caller: Caller<'_>, target: &TargetName) -> Result<(), Error> {
        self.require_admin(&caller, "rotate target credentials")?;
        let (t, issuer) = self.account_target(target)?;
        let _rotating = self.rotations.lock(target.clone()).await;
        let Some(admin) = self.settled_credential(target).await? else {
            return Err(Error::Input {
                code: "no_credential",
                message: format!(
                    "no admin credential for {target}: run `warden target set-credential {target}` first"
                ),
            });
        };
        let new_password =
            Secret::new(crate::auth::random_password() + &crate::auth::random_password());
        let pending = serde_json::to_vec(&serde_json::json!({
            "username": admin.username, "password": admin.password.expose(), "next_password": new_password.expose(),
        }))
        .map_err(|e| Error::Issuer(e.to_string()))?;
        let sealed = self
            .sealer
            .seal(&pending)
            .map_err(|e| Error::Issuer(e.to_string()))?;
        self.store
            .set_target_credential(target, sealed, Vec::new())
            .await?;
        let rotated = crate::broker::within_timeout(issuer.rotate_root(RotateRootRequest {
            target,
            connection: &t.connection,
            admin: &admin,
            new_password: &new_password,
        }))
        .await;
        let mut ev = Event::new(Code::TargetRootRotated, caller_actor(&caller), now())
            .details(serde_json::json!({ "username": admin.username }));
        ev.target = Some(target.clone());
        match rotated {
            Ok(()) => {
                let sealed = self.seal_credential(&admin.username, new_password.expose())?;
                self.store
                    .set_target_credential(target, sealed, vec![ev])
                    .await?;
                Ok(())
            }
            // Nothing reached the target, or the target refused the change (a lock it waited
            // too long for, say), which then changed nothing: the old password stands.
            Err(e) if e.left_target_untouched() => {
                let sealed = self.seal_credential(&admin.username, admin.password.expose())?;
                self.store
                    .set_target_credential(
                        target,
                        sealed,
                        vec![ev.failed("rotate_failed", e.to_string())],
                    )
                    .await?;
                Err(not_working(
                    &e,
                    format!(
                        "{e}; {target} keeps its current admin password, which Warden goes on using (if it is the one refused above, store a working one with `warden target set-credential {target}`)"
                    ),
                ))
            }
            // The target may have taken the new password: both stay stored until a login
            // tells which.
            Err(e) => {
                self.store
                    .append(vec![ev.failed("rotate_unsettled", e.to_string())])
                    .await?;
                Err(Error::Issuer(format!(
                    "{e}; it is not known whether {target} took the new password, so Warden keeps both and settles it at the next use"
                )))
            }
        }
    }
}

/// `message` on `e`, a target's credential that did not work: invalid input
/// (`credential_not_working`) when what was given is at fault (a login the target refused, a
/// setting that is wrong, a privilege missing), a failure when the target could not be reached
/// (or failed), whose credential may be right.
fn not_working(e: &warden_issuers::Error, message: String) -> Error {
    if e.is_invalid_input() {
        Error::Input {
            code: "credential_not_working",
            message,
        }
    } else {
        Error::Issuer(message)
    }
}

/// Whether `admin` logs in to target `t` with what Warden needs: tried by listing its
/// accounts, as reconciliation does.
async fn logs_in(
    t: &warden_policy::Target,
    issuer: &dyn warden_issuers::Issuer,
    admin: &AdminCredential,
) -> Result<(), warden_issuers::Error> {
    crate::broker::within_timeout(issuer.list_accounts(ListRequest {
        target: &t.name,
        connection: &t.connection,
        admin: Some(admin),
    }))
    .await
    .map(|_| ())
}

fn caller_actor(c: &Caller<'_>) -> Actor {
    Actor::user(c.user.name.clone(), c.source.clone())
}

/// Reads a sealed credential: the current password, or (after a crash mid-rotation) the one
/// the rotation was setting, which the caller may try next.
pub fn parse_credential(plain: &[u8]) -> Result<(AdminCredential, Option<Secret<String>>), Error> {
    let v: serde_json::Value =
        serde_json::from_slice(plain).map_err(|e| Error::Issuer(e.to_string()))?;
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    Ok((
        AdminCredential {
            username: s("username").unwrap_or_default(),
            password: Secret::new(s("password").unwrap_or_default()),
        },
        s("next_password").map(Secret::new),
    ))
}
