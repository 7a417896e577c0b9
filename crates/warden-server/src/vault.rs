//! Target admin credentials: sealed at rest under the master key, set by administrators, and
//! rotated to a random password only Warden knows.
//!
//! A rotation stores the new password beside the old one before it changes the target. If it
//! cannot tell whether the target took the change (a crash, no answer), both stay stored, and
//! the next use of the credential settles it by finishing the rotation, never by undoing it:
//! the change Warden sent may still be on its way (a network that held it past Warden's
//! timeout delivers it later), and a Warden gone back to the old password would then be locked
//! out. A new login decides, never a connection kept from before: if the target takes the new
//! password, it is stored alone; if it refuses it, Warden logs in with the old one, sets the
//! new one itself, and stores it alone once a new login with it works (a late delivery of the
//! first change then sets the same password again). Until then both stay stored and each use
//! tries again. Rotations, settlements and stored credentials of one target take turns, so
//! none stores a password another has just made stale.

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
        // Not while a rotation or a settlement changes the password at the target.
        let _rotating = self.rotations.lock(target.clone()).await;
        if verify {
            let admin = AdminCredential {
                username: username.to_owned(),
                password: Secret::new(password.to_owned()),
            };
            // A new login first: a connection kept from before the target's password changed
            // would take a password the target no longer does.
            let verified = match logs_in_afresh(&t, issuer.as_ref(), &admin).await {
                Ok(()) => logs_in(&t, issuer.as_ref(), &admin).await,
                Err(e) => Err(e),
            };
            if let Err(e) = verified {
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

    /// The credential the target takes, settling an interrupted rotation by finishing it (see
    /// the module documentation): the new password once a new login with it works, stored
    /// alone. Until then both stay stored and this fails, to be tried again at the next use.
    /// Run holding `rotations`.
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
        let interrupted = interrupted(target);
        let finished = match logs_in_afresh(&t, issuer.as_ref(), &new).await {
            Ok(()) => false,
            // The target refuses the new password, so far: Warden sets it.
            Err(warden_issuers::Error::Login(_)) => {
                self.finish_rotation(target, &t, issuer.as_ref(), &current, &new)
                    .await?
            }
            Err(e) => {
                return Err(Error::Issuer(format!(
                    "{interrupted}, and whether the target took the new password could not be told: {e}; {BOTH_KEPT}"
                )));
            }
        };
        let mut ev = Event::new(Code::TargetRootRotated, Actor::system(), now()).details(
            serde_json::json!({
                "username": new.username,
                "settled": "an interrupted rotation",
                "kept": "new",
                "finished": finished,
            }),
        );
        ev.target = Some(target.clone());
        let sealed = self.seal_credential(&new.username, new.password.expose())?;
        self.store
            .set_target_credential(target, sealed, vec![ev])
            .await?;
        tracing::info!(%target, finished, "an interrupted rotation of the admin password was settled: the new password is kept");
        Ok(Some(new))
    }

    /// Finishes an interrupted rotation at a target that refused the new password at a new
    /// login: logged in with the old password, sets the new one, and checks that a new login
    /// with it works. Whether Warden set it (`false`: the change sent before landed meanwhile),
    /// or why the new password cannot be kept yet. Changes made are audited with their outcome.
    async fn finish_rotation(
        &self,
        target: &TargetName,
        t: &warden_policy::Target,
        issuer: &dyn warden_issuers::Issuer,
        old: &AdminCredential,
        new: &AdminCredential,
    ) -> Result<bool, Error> {
        let interrupted = interrupted(target);
        let set = crate::broker::within_timeout(issuer.rotate_root(RotateRootRequest {
            target,
            connection: &t.connection,
            admin: old,
            new_password: &new.password,
        }))
        .await;
        let why = match set {
            Ok(()) => match logs_in_afresh(t, issuer, new).await {
                Ok(()) => return Ok(true),
                Err(e) => format!(
                    "{interrupted}; logged in with the old password, Warden set the new one, but a new login with the new one failed: {e}; {BOTH_KEPT}"
                ),
            },
            // The old password is refused too: the change sent before may just have landed.
            Err(refused @ warden_issuers::Error::Login(_)) => {
                return match logs_in_afresh(t, issuer, new).await {
                    Ok(()) => Ok(false),
                    Err(_) => Err(not_working(
                        &refused,
                        format!(
                            "{interrupted}, and {target} takes neither the new admin password nor the old one: {refused}. If the password was changed there by hand, store it with `warden target set-credential {target}`"
                        ),
                    )),
                };
            }
            // Nothing was sent: the target is out of reach, which the next use may find back.
            Err(e @ warden_issuers::Error::Unreached(_)) => {
                return Err(Error::Issuer(format!(
                    "{interrupted}, and finishing it failed: {e}; {BOTH_KEPT}"
                )));
            }
            Err(e) => format!(
                "{interrupted}, and finishing it (setting the new password, logged in with the old one) failed: {e}; {BOTH_KEPT}"
            ),
        };
        let mut ev = Event::new(Code::TargetRootRotated, Actor::system(), now())
            .details(serde_json::json!({
                "username": new.username, "settled": "an interrupted rotation", "kept": "both",
            }))
            .failed("settle_failed", why.clone());
        ev.target = Some(target.clone());
        self.store.append(vec![ev]).await?;
        Err(Error::Issuer(why))
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
            // The target may have taken the new password, or take it later: both stay stored
            // until the next use finishes the rotation.
            Err(e) => {
                self.store
                    .append(vec![ev.failed("rotate_unsettled", e.to_string())])
                    .await?;
                Err(Error::Issuer(format!(
                    "{e}; it is not known whether {target} took the new password, so Warden keeps both and finishes the rotation at the next use (it never goes back to the old password, which the change sent may still replace)"
                )))
            }
        }
    }
}

/// How a message about an interrupted rotation of `target`'s admin password begins.
fn interrupted(target: &TargetName) -> String {
    format!("a rotation of {target}'s admin password was interrupted")
}

/// How a message about an interrupted rotation not settled yet ends.
const BOTH_KEPT: &str = "Warden keeps both passwords and tries again at the next use";

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

/// Whether target `t` takes `admin`'s password now: a new login, never a kept connection.
async fn logs_in_afresh(
    t: &warden_policy::Target,
    issuer: &dyn warden_issuers::Issuer,
    admin: &AdminCredential,
) -> Result<(), warden_issuers::Error> {
    crate::broker::within_timeout(issuer.log_in(ListRequest {
        target: &t.name,
        connection: &t.connection,
        admin: Some(admin),
    }))
    .await
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
