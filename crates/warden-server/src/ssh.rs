//! The SSH proxy's side of the server: the [`Backend`] it talks to (keys, grants, signing,
//! audit), registered user keys, pinned host keys, and live session control.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use russh::keys::ssh_key::{self, Certificate, HashAlg, PublicKey, SshSig};
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::{RequestId, State, TargetName, User, UserName};
use warden_issuers::ssh_cert;
use warden_issuers::{Holder, IssueRequest};
use warden_ssh_proxy::{
    Backend, BackendError, Certified, Denied, Grant, Rules, SessionInfo, Upstream,
};
use warden_store::{RequestFilter, SshKey};

use crate::broker::{Caller, Error};
use crate::state::{App, Shared, now};

/// The proxy's backend: this server.
#[derive(Debug, Clone)]
pub struct ProxyBackend(pub Shared);

fn store_err(e: warden_store::Error) -> BackendError {
    BackendError(format!("storage: {e}"))
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The SSH signature namespace of a key registration's proof (`ssh-keygen -Y sign -n`), so that
/// no signature made for another purpose (git, files) counts as one.
pub const KEY_PROOF_NAMESPACE: &str = "warden-ssh-key";

/// What a key registration's proof signs: the user the key is registered to. Without a proof
/// anyone could register another's public key, and that person's sign-ins at the proxy would
/// then run as the registrant; one made for a user registers the key to no one else.
pub fn key_proof_message(user: &str) -> String {
    format!("register this SSH key to Warden user {user}\n")
}

/// The key of an OpenSSH public key line that users may sign in to the SSH proxy with, or why
/// not; the client checks a file with it before it asks for the key's proof.
pub fn registrable_key(text: &str) -> Result<PublicKey, String> {
    let key = ssh_cert::user_key(text)?;
    if key.key_data().rsa().is_some() {
        return Err("the SSH proxy signs users in with Ed25519 and ECDSA keys, not RSA: register an Ed25519 key (ssh-keygen -t ed25519)".into());
    }
    Ok(key)
}

/// Checks that `proof` is `key`'s signature over [`key_proof_message`] for `user`.
fn check_key_proof(key: &PublicKey, user: &str, proof: &str) -> Result<(), String> {
    let how = format!(
        "`warden keys add` makes one with `ssh-keygen -Y sign -n {KEY_PROOF_NAMESPACE}`, over the line \"{}\" ending in a newline (`printf '%s\\n' '…'`)",
        key_proof_message(user).trim_end()
    );
    let sig = SshSig::from_pem(proof.trim()).map_err(|_| {
        format!("the proof is not an SSH signature (-----BEGIN SSH SIGNATURE-----); {how}")
    })?;
    key.verify(KEY_PROOF_NAMESPACE, key_proof_message(user).as_bytes(), &sig)
        .map_err(|e| match e {
            ssh_key::Error::PublicKey => format!(
                "the proof is signed by another key than the one to register; sign with the key's own private half: {how}"
            ),
            ssh_key::Error::Namespace => format!(
                "the proof was signed for another purpose (namespace {:?}); {how}",
                sig.namespace()
            ),
            _ => format!(
                "the proof does not verify for this key and user {user}, so it does not show you hold the private key; {how}"
            ),
        })
}

#[async_trait]
impl Backend for ProxyBackend {
    async fn authenticate(
        &self,
        key: &PublicKey,
        source: IpAddr,
    ) -> Result<Option<UserName>, BackendError> {
        let found = self
            .0
            .store
            .ssh_key(&fingerprint(key))
            .await
            .map_err(store_err)?;
        // A key of someone no longer in the directory logs nobody in.
        let Some(owner) = found.map(|k| k.user).filter(|u| self.0.user(u).is_some()) else {
            return Ok(None);
        };
        // Nor one of someone offboarded (a key kept from before offboarding removed keys): on
        // the record as their other refused sign-ins are, and counted as they are.
        if self.0.offboarded(&owner) {
            let claimed = Actor {
                claimed: Some(owner.to_string()),
                source: Some(source.to_string()),
                ..Actor::default()
            };
            let refused = Event::new(Code::LoginFailed, claimed, now())
                .denied(
                    "offboarded",
                    format!("{owner} was offboarded: their SSH keys sign no one in"),
                )
                .details(serde_json::json!({ "via": "ssh", "fingerprint": fingerprint(key) }));
            self.refused_sign_in(refused).await?;
            return Ok(None);
        }
        Ok(Some(owner))
    }

    fn is_user(&self, name: &UserName) -> bool {
        self.0.user(name).is_some()
    }

    /// The API's throttle: an address that spent its budget of failed sign-ins, at the API or
    /// here, is refused here too, before any check, each try counted in
    /// `warden_auth_throttled_total`.
    fn throttled(&self, source: IpAddr) -> Option<Denied> {
        match self.0.check_source(Some(&source.to_string())) {
            Err(throttled) => Some(Denied {
                code: "source_throttled",
                message: throttled.to_string(),
            }),
            Ok(()) => None,
        }
    }

    /// Counted against the address's budget as the API's failed sign-ins are; an address that
    /// has spent it is not audited once per refusal (the throttle's start is, with the failure
    /// that spent it), only counted in `warden_auth_throttled_total`.
    async fn refused_sign_in(&self, event: Event) -> Result<(), BackendError> {
        if self.0.check_source(event.actor.source.as_deref()).is_err() {
            return Ok(());
        }
        self.0
            .auth_failed(event)
            .await
            .map_err(|e| BackendError(format!("audit: {e}")))
    }

    fn is_target(&self, name: &str) -> bool {
        name.parse::<TargetName>()
            .is_ok_and(|t| self.0.policy.load().targets().get(&t).is_some())
    }

    fn is_login(&self, target: &str, login: &str) -> bool {
        let Ok(name) = target.parse::<TargetName>() else {
            return false;
        };
        let policy = self.0.policy.load();
        policy
            .targets()
            .get(&name)
            .is_some_and(|t| names_login(t, login))
    }

    async fn authenticate_certificate(
        &self,
        cert: &Certificate,
    ) -> Result<Certified, BackendError> {
        let ca = PublicKey::from_openssh(self.0.ca.public_key())
            .map_err(|e| BackendError(format!("the user CA key: {e}")))?;
        // Signed by Warden's CA, whether or not it is valid now: a refusal of one Warden
        // issued is audited, and the user is told why.
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::User
            || cert
                .validate_at(cert.valid_after(), [&ca.fingerprint(HashAlg::Sha256)])
                .is_err()
        {
            return Ok(Certified::Foreign);
        }
        // The key id names the grant it was issued for.
        let grant = cert
            .key_id()
            .parse::<uuid::Uuid>()
            .ok()
            .map(RequestId::from_uuid);
        let refused = |code, message| {
            Ok(Certified::Refused {
                grant,
                denied: Denied { code, message },
            })
        };
        let Some(id) = grant else {
            return refused(
                "unknown_grant",
                "the certificate names no grant of Warden's".into(),
            );
        };
        // The SSH library refuses such a certificate before this is asked (its key alone,
        // offered next, is how the refusal is audited: `expired_certificate`); checked here
        // all the same, so that no grant's end rests on the library alone.
        if !valid_now(cert) {
            let Denied { code, message } = certificate_expired(id);
            return refused(code, message);
        }
        let Some(r) = self.0.store.request(id).await.map_err(store_err)? else {
            return refused("unknown_grant", format!("grant {id} is unknown to Warden"));
        };
        if r.state != State::Active {
            let code = match r.state {
                State::Revoked => "grant_revoked",
                State::Expired => "grant_expired",
                _ => "grant_not_active",
            };
            return refused(
                code,
                format!(
                    "grant {id} is {}: request new access with `warden request create`",
                    r.state
                ),
            );
        }
        if self.0.user(&r.requester).is_none() {
            return refused(
                "user_not_in_directory",
                format!(
                    "grant {id} is of {}, who is no longer in the directory",
                    r.requester
                ),
            );
        }
        Ok(Certified::Active {
            user: r.requester,
            grant: r.id,
        })
    }

    async fn expired_certificate(
        &self,
        user: &UserName,
        key: &PublicKey,
    ) -> Result<Option<(RequestId, Denied)>, BackendError> {
        // The grant whose certificate of this key ended last, however many requests the user
        // made since (an extension certifies its original's key anew).
        let last = self
            .0
            .store
            .key_certified_last(user, &fingerprint(key))
            .await
            .map_err(store_err)?;
        match last {
            // One of its certificates is valid still: the key alone was offered for itself.
            Some((_, ends)) if ends > now() => Ok(None),
            Some((id, _)) => Ok(Some((id, certificate_expired(id)))),
            None => Ok(None),
        }
    }

    async fn authorize(
        &self,
        user: &UserName,
        target: &str,
        login: Option<&str>,
        grant: Option<RequestId>,
        source: IpAddr,
    ) -> Result<Result<Grant, Denied>, BackendError> {
        self.0
            .authorize_ssh(user, target, login, grant, source)
            .await
    }

    async fn still_active(&self, grant: RequestId) -> Result<bool, BackendError> {
        let r = self.0.store.request(grant).await.map_err(store_err)?;
        Ok(r.is_some_and(|r| r.state == State::Active && r.expires_at.is_none_or(|at| at > now())))
    }

    async fn sign(&self, grant: &Grant, key: &PublicKey) -> Result<Certificate, BackendError> {
        let policy = self.0.policy.load();
        let target = policy
            .targets()
            .get(&grant.target)
            .ok_or_else(|| BackendError(format!("target {} left the policy", grant.target)))?;
        let role = target
            .roles
            .get(&grant.role)
            .ok_or_else(|| BackendError(format!("role {} left the policy", grant.role)))?;
        let settings = grant_settings(grant, role);
        let issuer = self
            .0
            .issuers
            .get("ssh")
            .ok_or_else(|| BackendError("no ssh issuer".into()))?;
        let public = key
            .to_openssh()
            .map_err(|e| BackendError(format!("encoding the session key: {e}")))?;
        let out = issuer
            .issue(IssueRequest {
                grant: grant.id,
                user: &grant.user,
                target: &grant.target,
                role: &grant.role,
                connection: &target.connection,
                settings: &settings,
                valid_after: now(),
                valid_before: grant.expires_at,
                public_key: Some(&public),
                account: None,
                password: None,
                admin: None,
                holder: Holder::Proxy,
            })
            .await
            .map_err(|e| BackendError(format!("signing the upstream certificate: {e}")))?;
        let text = out.public["certificate"]
            .as_str()
            .ok_or_else(|| BackendError("the ssh issuer returned no certificate".into()))?;
        Certificate::from_openssh(text).map_err(|e| BackendError(format!("certificate: {e}")))
    }

    async fn audit(&self, events: Vec<Event>) -> Result<(), BackendError> {
        // Sessions are kept track of from start to end, so that the end of one a crash cut
        // short is recorded at the next start (`App::close_cut_sessions`).
        let store = &self.0.store;
        let started = events.iter().find(|e| e.code == Code::SessionStarted);
        let ended = events
            .iter()
            .find(|e| e.code == Code::SessionEnded)
            .and_then(|e| e.session_id.clone());
        match (started.cloned(), ended) {
            (Some(started), _) => store.session_started(&started, events).await,
            (None, Some(id)) => store.session_ended(&id, events).await,
            (None, None) => store.append(events).await,
        }
        .map_err(store_err)
    }
}

/// The settings the proxy's certificate for a session under `grant` (of `role`) is issued
/// with: the role's, held to the grant's terms ([`App::authorize_ssh`]), so that it logs in as
/// no account, runs no other command and carries no extension the grant was not issued with,
/// whatever a reload gave the role since.
fn grant_settings(grant: &Grant, role: &warden_policy::Role) -> warden_issuers::Settings {
    let mut settings = role.settings.clone();
    settings.insert("principals".into(), serde_json::json!(grant.principals));
    settings.insert("extensions".into(), serde_json::json!(grant.extensions));
    match &grant.force_command {
        Some(command) => settings.insert("force_command".into(), command.clone().into()),
        None => settings.remove("force_command"),
    };
    settings
}

/// Whether `cert` is within its validity now.
fn valid_now(cert: &Certificate) -> bool {
    let at = u64::try_from(now().unix_timestamp()).unwrap_or(0);
    cert.valid_after() <= at && at < cert.valid_before()
}

/// The refusal of a sign-in with the certificate of grant `id` outside its validity.
fn certificate_expired(id: RequestId) -> Denied {
    Denied {
        code: "certificate_expired",
        message: format!(
            "the certificate of grant {id} is not valid now: request new access with `warden request create`"
        ),
    }
}

/// Active grants of one user at one target read per query when a registered key signs in
/// ([`App::longest_grant`]), and most such queries one sign-in makes: one holds a page at a
/// time, and reads at most 10,000 rows through the state index.
const ACTIVE_GRANTS_PAGE: usize = 1000;
const ACTIVE_GRANTS_PAGES: usize = 10;

/// What [`App::longest_grant`] found.
enum Longest {
    Found(warden_domain::Request),
    /// Active grants there are, but none that logs in as this now; one that was issued to,
    /// before its role stopped naming it, if any.
    NoneLogsIn(String, Option<warden_domain::Request>),
    /// Only grants of a role the policy no longer defines there: the newest of them.
    RoleGone(warden_domain::Request),
    /// More active grants than are read, and none read suits.
    TooMany,
    None,
}

/// Whether some role of target `t` logs in as `login`: only then is a login the SSH user name
/// asks for named in a refusal and its audit event, else by its length alone, since a text no
/// role names is as likely a password typed into the wrong field.
fn names_login(t: &warden_policy::Target, login: &str) -> bool {
    t.kind == "ssh"
        && t.roles.values().any(|role| {
            ssh_cert::role_settings(&role.settings)
                .is_ok_and(|s| s.principals.iter().any(|p| p == login))
        })
}

/// `login` as a refusal at target `t` quotes it: named when some role of `t` logs in as it
/// ([`names_login`]), else by its length alone.
fn shown_login(t: &warden_policy::Target, login: &str) -> String {
    if names_login(t, login) {
        format!("{login:?}")
    } else {
        format!("(no such login, {} characters)", login.chars().count())
    }
}

/// What an active grant was issued with, as its credential records it: the accounts it logs
/// in as and its certificate's critical options (for extensions, see [`extensions`]). The
/// deny rules, `file_transfer` and `record_input` in force at issue are not recorded.
struct Issued {
    logins: Vec<String>,
    force_command: Option<String>,
    source_address: Option<Vec<warden_domain::net::AddressBlock>>,
}

/// Why grant `id`'s recorded terms cannot be read: it opens nothing, since what it may do
/// could not be kept within what it was issued for.
fn terms_unknown(id: RequestId, what: &str) -> Denied {
    Denied {
        code: "grant_terms_unknown",
        message: format!(
            "grant {id} does not record {what}, so Warden cannot keep its sessions within what it was issued for: request new access with `warden request create`"
        ),
    }
}

/// What grant `r` was issued with (see [`Issued`]).
fn issued(r: &warden_domain::Request) -> Result<Issued, Denied> {
    let credential = r
        .credential
        .as_ref()
        .ok_or_else(|| terms_unknown(r.id, "the credential it was issued"))?;
    let logins = credential["logins"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .map(|l| l.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| terms_unknown(r.id, "the accounts it was issued for"))?;
    // Options written into its certificate, recorded since roles could have any: a
    // credential without them was issued without them.
    let options = &credential["critical_options"];
    let force_command = match &options["force-command"] {
        serde_json::Value::Null => None,
        v => Some(
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| terms_unknown(r.id, "a readable force-command"))?,
        ),
    };
    let source_address = match &options["source-address"] {
        serde_json::Value::Null => None,
        v => Some(
            v.as_str()
                .and_then(|list| {
                    list.split(',')
                        .map(|b| b.parse::<warden_domain::net::AddressBlock>().ok())
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| terms_unknown(r.id, "a readable source-address"))?,
        ),
    };
    Ok(Issued {
        logins,
        force_command,
        source_address,
    })
}

/// Of the certificate extensions `role` gives now, those grant `r` was issued with too: its
/// certificate's, when it logs in to hosts itself; a certificate for the proxy only holds
/// none, so then the role's own (those at issue are not recorded). Read only for the grant a
/// session runs under: a certificate is not parsed for every grant looked through.
fn extensions(role: &[String], r: &warden_domain::Request) -> Result<Vec<String>, Denied> {
    let credential = r.credential.as_ref();
    let certificate = credential
        .filter(|c| c["proxy_only"] == false)
        .and_then(|c| c["certificate"].as_str());
    let Some(text) = certificate else {
        return Ok(role.to_vec());
    };
    let given = Certificate::from_openssh(text)
        .map_err(|_| terms_unknown(r.id, "a readable certificate"))?;
    Ok(role
        .iter()
        .filter(|e| given.extensions().contains_key(*e))
        .cloned()
        .collect())
}

/// What an active grant may do now (see [`terms`]).
struct Terms {
    /// Its role's settings as they apply to it.
    settings: ssh_cert::RoleSettings,
    /// The accounts it was issued for that its role no longer names.
    dropped: Vec<String>,
}

impl Terms {
    /// Whether the grant logs in as `login` now.
    fn logs_in_as(&self, login: &str) -> bool {
        self.settings.principals.iter().any(|p| p == login)
    }

    /// Whether the grant was issued to log in as `login` and its role no longer names it.
    fn dropped(&self, login: &str) -> bool {
        self.dropped.iter().any(|d| d == login)
    }

    /// Whether the grant may be used only from other addresses than `source`.
    fn used_only_elsewhere(&self, source: IpAddr) -> bool {
        self.settings
            .source_address
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|b| b.contains(source)))
    }
}

/// The addresses both `a` and `b` allow (`None`: anywhere). Two networks either hold one
/// another or share no address, so each pair gives the narrower one or nothing.
fn both_allow(
    a: Option<Vec<warden_domain::net::AddressBlock>>,
    b: Option<Vec<warden_domain::net::AddressBlock>>,
) -> Option<Vec<warden_domain::net::AddressBlock>> {
    use warden_domain::net::AddressBlock;
    let holds = |wide: &AddressBlock, narrow: &AddressBlock| {
        wide.prefix() <= narrow.prefix() && wide.contains(narrow.network())
    };
    match (a, b) {
        (None, other) | (other, None) => other,
        (Some(a), Some(b)) => {
            let mut both: Vec<AddressBlock> = Vec::new();
            for x in &a {
                for y in &b {
                    let narrower = if holds(x, y) {
                        Some(*y)
                    } else if holds(y, x) {
                        Some(*x)
                    } else {
                        None
                    };
                    if let Some(n) = narrower.filter(|n| !both.contains(n)) {
                        both.push(n);
                    }
                }
            }
            Some(both)
        }
    }
}

/// What active grant `r` of `role` may do now: what it was issued with ([`issued`]), narrowed
/// by what its role says now, so that a reload only ever narrows a grant. It logs in as the
/// accounts it was issued for that the role still names (the first still the default), runs
/// the `force_command` it was issued with (the role's, if it had none and the role gained
/// one), and is used only from addresses both its issued and the role's `source_address`
/// allow. Deny rules, `file_transfer` and `record_input` are the role's: those in force at
/// issue are not recorded. Its certificate extensions are the role's here, narrowed by
/// [`extensions`] for the grant a session runs under.
fn terms(
    role: &warden_policy::Role,
    r: &warden_domain::Request,
) -> Result<Result<Terms, Denied>, BackendError> {
    let now = ssh_cert::role_settings(&role.settings)
        .map_err(|e| BackendError(format!("role {}: {e}", r.role)))?;
    let issued = match issued(r) {
        Ok(issued) => issued,
        Err(denied) => return Ok(Err(denied)),
    };
    let (principals, dropped): (Vec<String>, Vec<String>) = issued
        .logins
        .into_iter()
        .partition(|l| now.principals.contains(l));
    Ok(Ok(Terms {
        settings: ssh_cert::RoleSettings {
            principals,
            source_address: both_allow(issued.source_address, now.source_address.clone()),
            force_command: issued.force_command.or(now.force_command.clone()),
            ..now
        },
        dropped,
    }))
}

fn denied<T>(code: &'static str, message: String) -> Result<Result<T, Denied>, BackendError> {
    Ok(Err(Denied { code, message }))
}

/// `target` as the policy defines it, if it is an ssh target. A target of another kind is
/// the caller's mistake, not a missing one: the answer names its kind so it is not looked for.
fn ssh_target<'p>(
    targets: &'p warden_policy::Targets,
    target: &TargetName,
) -> Result<&'p warden_policy::Target, Error> {
    let t = targets
        .get(target)
        .ok_or_else(|| Error::not_in_policy(target))?;
    if t.kind != "ssh" {
        return Err(Error::Input {
            code: "not_an_ssh_target",
            message: format!(
                "{target} is a {} target: only ssh targets have host keys",
                t.kind
            ),
        });
    }
    Ok(t)
}

impl App {
    /// The grant under which `user` may open an SSH session on `target` now: `grant`, whose
    /// certificate they signed in with, if given; else the active one that lasts longest among
    /// those that log in as `login` (any, if none was asked for), preferring those that may be
    /// used from `source`, the client's address. Refusals say what to request instead.
    async fn authorize_ssh(
        &self,
        user: &UserName,
        target: &str,
        login: Option<&str>,
        grant: Option<RequestId>,
        source: IpAddr,
    ) -> Result<Result<Grant, Denied>, BackendError> {
        let policy = self.policy.load();
        // Text that is no name is not quoted: a password typed there would stay in the log.
        let Ok(asked) = target.parse::<TargetName>() else {
            return denied(
                "unknown_target",
                format!(
                    "the target in the SSH user name ({} characters) is no target's name: names are lowercase letters, digits, '.', '_' and '-'; `warden targets` lists them",
                    target.chars().count()
                ),
            );
        };
        let Some((name, t)) = policy.targets().get(&asked).map(|t| (asked.clone(), t)) else {
            return denied(
                "unknown_target",
                format!("unknown target {asked}: `warden targets` lists the ones you may request"),
            );
        };
        if t.kind != "ssh" {
            return denied(
                "not_ssh",
                format!("{name} is not an ssh target (its kind is {})", t.kind),
            );
        }
        let now = now();
        let live = |r: &warden_domain::Request| {
            r.state == State::Active && r.expires_at.is_some_and(|e| e > now)
        };
        // A grant of a role a reload removed stays active until it ends, and opens nothing.
        let role_gone = |r: &warden_domain::Request| {
            denied(
                "role_not_in_policy",
                format!(
                    "your grant {} is for role {}, which the policy no longer defines for {name}: no session opens for it (ask for one of the roles `warden targets` lists)",
                    r.id, r.role
                ),
            )
        };
        let r = if let Some(id) = grant {
            // The certificate names its grant: that one is read, however many others its
            // holder has.
            let found = self.store.request(id).await.map_err(store_err)?;
            let Some(r) = found.filter(|r| r.requester == *user) else {
                return denied(
                    "certificate_not_for_target",
                    format!(
                        "the certificate you signed in with is for grant {id}, which is no grant of yours: sign in with {name}'s certificate or your registered key"
                    ),
                );
            };
            if r.target != name {
                return denied(
                    "certificate_not_for_target",
                    format!(
                        "the certificate you signed in with is for grant {id}, which is for {}, not {name}: sign in with {name}'s certificate (`warden ssh {name}`) or your registered key",
                        r.target
                    ),
                );
            }
            if !live(&r) {
                return denied(
                    "grant_not_active",
                    format!(
                        "your grant {id} for {name} has ended ({}): request new access with `warden request create`",
                        r.state
                    ),
                );
            }
            if !t.roles.contains_key(&r.role) {
                return role_gone(&r);
            }
            r
        } else {
            match self
                .longest_grant(user, &name, t, login, source, now)
                .await?
            {
                Longest::Found(r) => r,
                Longest::RoleGone(r) => return role_gone(&r),
                Longest::NoneLogsIn(login, dropped) => {
                    let shown = shown_login(t, &login);
                    let why = match dropped {
                        Some(g) => format!(
                            "your grant {} for {name} was issued to log in as {shown}, but the policy no longer grants that: role {} does not log in as it now, and none of your other active grants for {name} does",
                            g.id, g.role
                        ),
                        None => {
                            format!("none of your active grants for {name} logs in as {shown}")
                        }
                    };
                    return denied(
                        "login_not_granted",
                        format!("{why}: request a role that does (`warden targets`)"),
                    );
                }
                Longest::TooMany => {
                    return denied(
                        "too_many_grants",
                        format!(
                            "you hold more than {} active grants for {name}, more than a sign-in with a registered key looks through, and none of those read suits it: sign in with the certificate of the grant to use (`warden ssh {name} --request ID`), or revoke the grants you no longer need",
                            ACTIVE_GRANTS_PAGE * ACTIVE_GRANTS_PAGES
                        ),
                    );
                }
                Longest::None => {
                    return denied(
                        "no_active_grant",
                        format!(
                            "{user} has no active grant for {name}. Request one: warden request create {name} --role ROLE --reason \"…\" --ttl TTL   (`warden targets` lists the roles you may request and their longest TTL)"
                        ),
                    );
                }
            }
        };
        let role = t
            .roles
            .get(&r.role)
            .ok_or_else(|| BackendError("role vanished".into()))?;
        // What it was issued with, narrowed by what its role says now: a reload never widens
        // it.
        let terms = match terms(role, &r)? {
            Ok(terms) => terms,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if terms.settings.principals.is_empty() {
            let issued: Vec<String> = terms.dropped.iter().map(|l| shown_login(t, l)).collect();
            return denied(
                "login_not_granted",
                format!(
                    "your grant {} for {name} was issued to log in as {}, and the policy no longer grants any of that: role {} logs in as none of those now, so no session opens for the grant; request access again (`warden targets` lists the roles)",
                    r.id,
                    issued.join(", "),
                    r.role
                ),
            );
        }
        // A login the grant does not give is refused here, at sign-in, so that it is never
        // taken further (nor quoted, unless some role of the target names it).
        if let Some(login) = login.filter(|l| !terms.logs_in_as(l)) {
            let now_as = terms.settings.principals.join(", ");
            let shown = shown_login(t, login);
            let why = if terms.dropped(login) {
                format!(
                    "your grant {} for {name} was issued to log in as {shown}, but the policy no longer grants that: role {} logs in as {now_as} now",
                    r.id, r.role
                )
            } else {
                format!(
                    "your grant {} for {name} (role {}) logs in as {now_as}, not as {shown}",
                    r.id, r.role
                )
            };
            return denied(
                "login_not_granted",
                format!(
                    "{why}: sign in as one of those, or request a role that logs in as you asked (`warden targets`)"
                ),
            );
        }
        if terms
            .settings
            .source_address
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return denied(
                "source_address_not_allowed",
                format!(
                    "your grant {} for {name} was issued for use from addresses that role {}'s source_address no longer allows, and no address is in both: no session opens for the grant; request access again (`warden request create`)",
                    r.id, r.role
                ),
            );
        }
        let extensions = match extensions(&terms.settings.extensions, &r) {
            Ok(extensions) => extensions,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // How the target is reached is told only to those holding a grant for it.
        let upstream = match self.upstream(&name, &t.connection).await? {
            Ok(upstream) => upstream,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let settings = terms.settings;
        let rules = Rules::new(
            &settings.deny_commands,
            settings.file_transfer,
            settings.record_input,
        )
        .map_err(|e| BackendError(format!("role {}: {e}", r.role)))?;
        Ok(Ok(Grant {
            extensions,
            id: r.id,
            user: user.clone(),
            target: name,
            role: r.role.clone(),
            expires_at: r.expires_at.unwrap_or(now),
            principals: settings.principals,
            upstream,
            rules,
            recording: r.recording,
            source_address: settings.source_address,
            force_command: settings.force_command,
        }))
    }

    /// The active grant of `user` at `name` (`t` in the policy) that lasts longest, of those
    /// that log in as `login` when one is asked for and whose role may be used from `source`
    /// (its `source_address`): what a sign-in with a registered key runs under. A grant usable
    /// only from elsewhere never stands in the way of one the client may use; when every one
    /// is, the longest of them is chosen, for the session to refuse naming why. Past the pages
    /// read, only a grant usable from `source` is chosen. All of the user's active grants
    /// there are looked through, a page at a time and keeping only the best so far, up to
    /// [`ACTIVE_GRANTS_PAGES`] pages.
    async fn longest_grant(
        &self,
        user: &UserName,
        name: &TargetName,
        t: &warden_policy::Target,
        login: Option<&str>,
        source: IpAddr,
        now: time::OffsetDateTime,
    ) -> Result<Longest, BackendError> {
        let mut filter = RequestFilter {
            requester: Some(user.clone()),
            target: Some(name.clone()),
            states: vec![State::Active],
            before: None,
            limit: ACTIVE_GRANTS_PAGE,
        };
        let mut live = false;
        let mut best: Option<warden_domain::Request> = None;
        let mut role_gone = None;
        let mut elsewhere = None;
        let mut dropped = None;
        let mut unusable = None;
        for _ in 0..ACTIVE_GRANTS_PAGES {
            let page = self
                .store
                .requests(filter.clone())
                .await
                .map_err(store_err)?;
            let full = page.len() == ACTIVE_GRANTS_PAGE;
            filter.before = page.last().map(|r| r.id);
            for r in page {
                if r.state != State::Active || r.expires_at.is_none_or(|e| e <= now) {
                    continue;
                }
                if !t.roles.contains_key(&r.role) {
                    role_gone.get_or_insert(r);
                    continue;
                }
                live = true;
                // Its terms, read once: what it logs in as now, and from where.
                let terms = t
                    .roles
                    .get(&r.role)
                    .and_then(|role| terms(role, &r).ok()?.ok());
                let Some(usable) = terms.as_ref().filter(|x| !x.settings.principals.is_empty())
                else {
                    // No account left to log in as, or terms that do not read: chosen only
                    // when no other is, to be refused naming why.
                    if login.is_some_and(|l| terms.as_ref().is_some_and(|x| x.dropped(l))) {
                        dropped.get_or_insert_with(|| r.clone());
                    }
                    unusable.get_or_insert(r);
                    continue;
                };
                if let Some(l) = login.filter(|l| !usable.logs_in_as(l)) {
                    if usable.dropped(l) {
                        dropped.get_or_insert(r);
                    }
                    continue;
                }
                // Newest first: of those ending together, the oldest.
                let kept = if usable.used_only_elsewhere(source) {
                    &mut elsewhere
                } else {
                    &mut best
                };
                if kept.as_ref().is_none_or(|b| r.expires_at >= b.expires_at) {
                    *kept = Some(r);
                }
            }
            if !full {
                // None usable from here: the longest of those usable elsewhere, which the
                // session then refuses, naming its role's addresses and the client's.
                let chosen = best
                    .or(elsewhere)
                    .or_else(|| unusable.filter(|_| login.is_none()));
                return Ok(match (chosen, login, role_gone) {
                    (Some(r), _, _) => Longest::Found(r),
                    (None, Some(login), _) if live => {
                        Longest::NoneLogsIn(login.to_owned(), dropped)
                    }
                    (None, _, Some(r)) => Longest::RoleGone(r),
                    (None, _, None) => Longest::None,
                });
            }
        }
        // Past the pages read, a grant that suits may be among those not read.
        Ok(best.map_or(Longest::TooMany, Longest::Found))
    }

    /// Where target `name`, whose policy gives it `connection`, is reached, and the host key
    /// it must show.
    async fn upstream(
        &self,
        name: &TargetName,
        connection: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Result<Upstream, Denied>, BackendError> {
        let connection = match ssh_cert::connection(connection) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return denied(
                    "no_connection",
                    format!(
                        "{name} has no `connection.host` in the policy: Warden cannot reach it"
                    ),
                );
            }
            Err(e) => return denied("bad_connection", format!("{name}: {e}")),
        };
        let host_key = match connection.host_key {
            Some(k) => k,
            None => match self.store.host_key(name).await.map_err(store_err)? {
                Some(text) => PublicKey::from_openssh(&text)
                    .map_err(|e| BackendError(format!("pinned host key of {name}: {e}")))?,
                None => {
                    return denied(
                        "host_key_not_pinned",
                        format!(
                            "{name} has no pinned host key; an administrator must run `warden target pin-host-key {name}` (or set connection.host_key)"
                        ),
                    );
                }
            },
        };
        Ok(Ok(Upstream {
            host: connection.host,
            port: connection.port,
            host_key,
        }))
    }

    /// Registers a public key to the caller for logging in to the SSH proxy, once `proof` (an
    /// SSH signature by that key over [`key_proof_message`]) shows the caller holds its private
    /// half.
    pub async fn add_ssh_key(
        &self,
        caller: Caller<'_>,
        text: &str,
        proof: &str,
    ) -> Result<SshKey, Error> {
        let input = |message: String| Error::Input {
            code: "bad_public_key",
            message,
        };
        let key = registrable_key(text).map_err(input)?;
        if fingerprint(&key) == self.ca.fingerprint() {
            return Err(input(
                "that is Warden's own user CA key, not yours: register the public key of your key pair".into(),
            ));
        }
        check_key_proof(&key, caller.user.name.as_str(), proof).map_err(|message| {
            Error::Input {
                code: "bad_key_proof",
                message,
            }
        })?;
        let record = SshKey {
            fingerprint: fingerprint(&key),
            user: caller.user.name.clone(),
            public_key: key
                .to_openssh()
                .map_err(|e| input(format!("cannot encode the key: {e}")))?,
            added_at: now(),
        };
        let event = Event::new(Code::SshKeyAdded, caller.actor(), now()).details(
            serde_json::json!({ "fingerprint": record.fingerprint, "algorithm": key.algorithm().to_string() }),
        );
        match self.store.add_ssh_key(&record, vec![event]).await {
            Ok(()) => Ok(record),
            // Its owner is told it is theirs; anyone else only that it is taken, not by whom.
            Err(warden_store::Error::Conflict) => {
                let mine = self
                    .store
                    .ssh_keys(&caller.user.name)
                    .await?
                    .iter()
                    .any(|k| k.fingerprint == record.fingerprint);
                let message = if mine {
                    format!(
                        "the key {} is registered to you already: `warden keys list` shows it",
                        record.fingerprint
                    )
                } else {
                    format!(
                        "the key {} is registered to another account: register a key pair of your own (`ssh-keygen -t ed25519` makes one)",
                        record.fingerprint
                    )
                };
                Err(Error::Conflict {
                    code: "key_registered",
                    message,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes one of the caller's keys.
    pub async fn remove_ssh_key(&self, caller: Caller<'_>, fingerprint: &str) -> Result<(), Error> {
        if fingerprint.parse::<ssh_key::Fingerprint>().is_err() {
            return Err(Error::Input {
                code: "bad_fingerprint",
                message: format!(
                    "{} is not a key's fingerprint (SHA256: and 43 more characters): `warden keys list` shows yours",
                    warden_domain::text::shown(fingerprint, 60)
                ),
            });
        }
        let event = Event::new(Code::SshKeyRemoved, caller.actor(), now())
            .details(serde_json::json!({ "fingerprint": fingerprint }));
        if self
            .store
            .remove_ssh_key(&caller.user.name, fingerprint, vec![event])
            .await?
        {
            Ok(())
        } else {
            Err(Error::Missing {
                code: "no_such_key",
                message: format!("you have no key {fingerprint}; `warden keys list` shows yours"),
            })
        }
    }

    /// What `target`'s sshd presents as its host key, for an administrator to confirm.
    pub async fn scan_host_key(
        &self,
        caller: Caller<'_>,
        target: &TargetName,
    ) -> Result<(String, String), Error> {
        if !self.is_admin(caller.user) {
            return Err(Error::Forbidden("only administrators pin host keys".into()));
        }
        let policy = self.policy.load();
        let t = ssh_target(policy.targets(), target)?;
        let conn = ssh_cert::connection(&t.connection)
            .map_err(|e| Error::Issuer(e.to_string()))?
            .ok_or_else(|| Error::Input {
                code: "no_connection",
                message: format!("{target} has no connection.host in the policy"),
            })?;
        let key = warden_ssh_proxy::fetch_host_key(&conn.host, conn.port)
            .await
            .map_err(|e| Error::Issuer(e.to_string()))?;
        let text = key.to_openssh().map_err(|e| Error::Issuer(e.to_string()))?;
        Ok((text, fingerprint(&key)))
    }

    /// Pins `target`'s host key, after the administrator confirmed its fingerprint.
    pub async fn pin_host_key(
        &self,
        caller: Caller<'_>,
        target: &TargetName,
        key: &str,
        confirmed: &str,
    ) -> Result<String, Error> {
        if !self.is_admin(caller.user) {
            return Err(Error::Forbidden("only administrators pin host keys".into()));
        }
        let policy = self.policy.load();
        let t = ssh_target(policy.targets(), target)?;
        // The policy's key is the one the proxy checks: a pin stored beside it would never be.
        if ssh_cert::connection(&t.connection)
            .ok()
            .flatten()
            .is_some_and(|c| c.host_key.is_some())
        {
            return Err(Error::Conflict {
                code: "host_key_in_policy",
                message: format!(
                    "the policy pins {target}'s host key (connection.host_key), and that is the key the proxy checks: change it there, or take it out of the policy to pin one here"
                ),
            });
        }
        let key = PublicKey::from_openssh(key.trim()).map_err(|_| Error::Input {
            code: "bad_public_key",
            message: "the host key is not an OpenSSH public key line".into(),
        })?;
        let fp = fingerprint(&key);
        if fp != confirmed {
            return Err(Error::Input {
                code: "fingerprint_mismatch",
                message: format!(
                    "the key's fingerprint is {fp}, not the confirmed {}",
                    warden_domain::text::shown(confirmed, 60)
                ),
            });
        }
        let text = key.to_openssh().map_err(|e| Error::Input {
            code: "bad_public_key",
            message: e.to_string(),
        })?;
        let mut event = Event::new(Code::HostKeyPinned, caller.actor(), now())
            .details(serde_json::json!({ "fingerprint": fp }));
        event.target = Some(target.clone());
        self.store.set_host_key(target, text, vec![event]).await?;
        Ok(fp)
    }

    /// Whether `user` may list, watch, kill and replay sessions of others.
    pub fn may_oversee_sessions(&self, user: &User) -> bool {
        self.is_admin(user) || user.in_group(&self.config.session_viewers)
    }

    /// Live sessions the caller may see: all for overseers, their own otherwise.
    pub fn sessions(&self, user: &User) -> Vec<SessionInfo> {
        let all = self.sessions.list();
        if self.may_oversee_sessions(user) {
            all
        } else {
            all.into_iter().filter(|s| s.user == user.name).collect()
        }
    }

    /// Ends a live session; audited with who did it.
    pub async fn kill_session(&self, caller: Caller<'_>, id: &str) -> Result<(), Error> {
        let info = self.oversee(&caller, id)?;
        // Ended first, once: of two kills at once the second is told so, and one is audited.
        // Its `session.ended` names who ended it, should this event fail to be stored.
        if !self
            .sessions
            .kill(id, &format!("terminated by {}", caller.user.name))
        {
            return Err(Error::Conflict {
                code: "already_ending",
                message: format!("session {id} is being ended already"),
            });
        }
        let mut event = Event::new(Code::SessionKilled, caller.actor(), now())
            .details(serde_json::json!({ "user": info.user }));
        event.session_id = Some(id.to_owned());
        event.request_id = Some(info.grant);
        event.target = Some(info.target.clone());
        self.store.append(vec![event]).await?;
        Ok(())
    }

    /// Checks that the caller may oversee live session `id`.
    /// The right comes first: to anyone else every id gets the same answer, so none can be
    /// probed for a live session.
    pub fn oversee(&self, caller: &Caller<'_>, id: &str) -> Result<SessionInfo, Error> {
        if !self.may_oversee_sessions(caller.user) {
            return Err(Error::Forbidden(
                "only administrators and session viewers may watch or end sessions".into(),
            ));
        }
        self.sessions.get(id).ok_or_else(|| Error::Missing {
            code: "no_such_session",
            message: format!("no live session {id}; `warden sessions` lists them"),
        })
    }

    /// Records the end of every SSH session a stop cut short (its `session.started` stored, its
    /// `session.ended` never): ended by Warden, with the digest of what its recording holds, so
    /// that the recording can be checked against the log like any other. Run at start, before
    /// the proxy takes sessions; returns how many there were.
    pub async fn close_cut_sessions(&self) -> Result<usize, Error> {
        let cut = self.store.live_sessions().await?;
        for started in &cut {
            let Some(id) = started.session_id.clone() else {
                continue;
            };
            let recordings = self.recordings.clone();
            let rid = id.clone();
            // Cut back to its last complete line first: a crash can tear the last one.
            let digest = tokio::task::spawn_blocking(move || recordings.close_cut(&rid))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let recording = match digest {
                Ok(Some(r)) => serde_json::json!({
                    "sha256": r.sha256, "bytes": r.bytes, "dropped_bytes": r.dropped,
                }),
                Ok(None) => serde_json::Value::Null,
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            let mut ended = Event::new(Code::SessionEnded, started.actor.clone(), now());
            ended.request_id = started.request_id;
            ended.target.clone_from(&started.target);
            ended.role.clone_from(&started.role);
            ended.session_id = Some(id.clone());
            let ended = ended.details(serde_json::json!({
                "kind": started.details.get("kind"),
                "ended_by": "warden",
                "reason": "Warden stopped without ending the session; its end is recorded at the next start",
                "exit_status": null,
                "started_at": warden_domain::rfc3339(started.time),
                "recording": recording,
            }));
            self.store.session_ended(&id, vec![ended]).await?;
        }
        Ok(cut.len())
    }

    /// Ends the live sessions of a grant that just ended.
    pub fn end_sessions(&self, grant: RequestId, why: &str) {
        let n = self.sessions.end_grant(grant, why);
        if n > 0 {
            tracing::info!(%grant, sessions = n, "ended the sessions of an ended grant");
        }
    }
}

/// The SSH proxy's listener, bound with its host key, not yet accepting.
pub struct Bound {
    listener: warden_ssh_proxy::Listener,
    host_key: String,
}

/// Takes the proxy's address, first thing at start with the API's: one in use stops the server
/// before anything is made.
pub async fn listen(config: &crate::config::Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.ssh_listen)
        .await
        .map_err(|e| {
            crate::serve::listen_refused(config.ssh_listen, "--ssh-listen or `ssh_listen`", &e)
        })
}

/// Refuses a host key the proxy would refuse at [`bind`] (one others can read, one damaged),
/// first thing at start, before anything else is made: `bind` comes once the store is open.
pub fn check_host_key(config: &crate::config::Config) -> anyhow::Result<()> {
    let key_path = config.data_dir.join("ssh_host_ed25519_key");
    if key_path.exists() {
        warden_ssh_proxy::load_or_create_host_key(&key_path)?;
    }
    Ok(())
}

/// Loads (or makes) the host key for the proxy on `tcp`: done before the server says it
/// started, so that a host key others can read stops it first. A key made anew for a data dir
/// that `has_served` is said out loud: clients pinned the lost one.
pub fn bind(
    config: &crate::config::Config,
    tcp: tokio::net::TcpListener,
    has_served: bool,
) -> anyhow::Result<Bound> {
    let key_path = config.data_dir.join("ssh_host_ed25519_key");
    let (host_key, created) = warden_ssh_proxy::load_or_create_host_key(&key_path)?;
    if created && has_served {
        let said = format!(
            "the SSH proxy's host key {} was missing and a new one was made: clients that pinned the old one refuse this one until they pin it anew (restore the old key from your backup to spare them)",
            key_path.display()
        );
        tracing::warn!("{said}");
        say!("Warning: {said}");
    }
    let public = host_key.public_key().to_openssh()?;
    let listener = warden_ssh_proxy::Listener::new(tcp, host_key);
    Ok(Bound {
        listener,
        host_key: public,
    })
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// Starts accepting connections until `stop`; returns the bound address.
    pub fn start(
        self,
        app: &Shared,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let addr = self.listener.local_addr()?;
        let _ = app.ssh_proxy.set(crate::state::SshProxy {
            addr,
            host_key: self.host_key,
        });
        let config = warden_ssh_proxy::ProxyConfig {
            backend: Arc::new(ProxyBackend(app.clone())),
            registry: app.sessions.clone(),
            recordings: app.recordings.clone(),
            sign_in_deadline: warden_ssh_proxy::SIGN_IN_DEADLINE,
            limits: warden_ssh_proxy::Limits::default(),
        };
        let listener = self.listener;
        tokio::spawn(async move {
            let mut stop = stop;
            listener
                .run(config, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(list: &[&str]) -> Option<Vec<warden_domain::net::AddressBlock>> {
        Some(list.iter().map(|b| b.parse().unwrap()).collect())
    }

    #[test]
    fn a_grants_addresses_are_those_both_lists_allow() {
        assert_eq!(both_allow(None, None), None);
        assert_eq!(
            both_allow(blocks(&["10.0.0.0/8"]), None),
            blocks(&["10.0.0.0/8"])
        );
        assert_eq!(both_allow(None, blocks(&["::1"])), blocks(&["::1"]));
        assert_eq!(
            both_allow(
                blocks(&["127.0.0.2", "127.0.4.0/24", "2001:db8::/32"]),
                blocks(&["127.0.4.7", "127.0.0.0/30", "10.0.0.0/8", "2001:db8:1::/48"]),
            ),
            blocks(&["127.0.0.2/32", "127.0.4.7/32", "2001:db8:1::/48"])
        );
        // Nothing in common: no address at all, not any.
        assert_eq!(
            both_allow(blocks(&["10.0.0.0/8"]), blocks(&["192.0.2.7"])),
            Some(Vec::new())
        );
    }
}
