//! Target admin credentials: sealed at rest under the master key, set by administrators, and
//! rotated to a random password only Warden knows.

use warden_domain::TargetName;
use warden_domain::audit::{Actor, Code, Event};
use warden_issuers::{AdminCredential, RotateRootRequest, Secret};

use crate::broker::{Caller, Error};
use crate::state::{App, now};

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
            .ok_or_else(|| Error::unknown_target(format!("unknown target {target}")))?;
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

    /// Stores the admin credential Warden uses to create accounts at `target`.
    pub async fn set_target_credential(
        &self,
        caller: Caller<'_>,
        target: &TargetName,
        username: &str,
        password: &str,
    ) -> Result<(), Error> {
        self.require_admin(&caller, "set target credentials")?;
        self.account_target(target)?;
        if username.is_empty()
            || username.len() > 128
            || password.is_empty()
            || password.len() > 1024
        {
            return Err(Error::Input {
                code: "bad_credential",
                message: "username and password must be 1-128 and 1-1024 characters".into(),
            });
        }
        if !username.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Input {
                code: "bad_credential",
                message: "the username may hold printable ASCII only, no spaces".into(),
            });
        }
        let sealed = self.seal_credential(username, password)?;
        let mut ev = Event::new(Code::TargetCredentialSet, caller_actor(&caller), now())
            .details(serde_json::json!({ "username": username }));
        ev.target = Some(target.clone());
        self.store
            .set_target_credential(target, sealed, vec![ev])
            .await?;
        Ok(())
    }

    /// Changes the admin password at `target` to a new random one that only Warden knows. The
    /// new password is sealed and stored next to the old one *before* the target is changed,
    /// so a crash in between loses neither.
    pub async fn rotate_root(&self, caller: Caller<'_>, target: &TargetName) -> Result<(), Error> {
        self.require_admin(&caller, "rotate target credentials")?;
        let (t, issuer) = self.account_target(target)?;
        let Some(admin) = self.admin_credential(target).await? else {
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
        let rotated = issuer
            .rotate_root(RotateRootRequest {
                target,
                connection: &t.connection,
                admin: &admin,
                new_password: &new_password,
            })
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
            Err(e) => {
                let sealed = self.seal_credential(&admin.username, admin.password.expose())?;
                self.store
                    .set_target_credential(
                        target,
                        sealed,
                        vec![ev.failed("rotate_failed", e.to_string())],
                    )
                    .await?;
                Err(Error::Issuer(e.to_string()))
            }
        }
    }
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
