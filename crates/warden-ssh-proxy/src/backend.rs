//! What the proxy needs from the rest of Warden, as one small trait.

use std::net::IpAddr;

use async_trait::async_trait;
use russh::keys::ssh_key::{Certificate, PublicKey};
use time::OffsetDateTime;
use warden_domain::audit::Event;
use warden_domain::net::AddressBlock;
use warden_domain::{Recording, RequestId, RoleName, TargetName, UserName};

use crate::Rules;

/// A failure of the backend (storage, signing): the session is refused or ended.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Why a user may not open a session, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// A stable machine-readable code for the audit event.
    pub code: &'static str,
    /// Shown to the user: what is missing and what to request.
    pub message: String,
}

/// What a certificate presented at sign-in (its key's ownership verified) is to Warden.
#[derive(Debug, Clone)]
pub enum Certified {
    /// Not a user certificate Warden's user CA signed: nothing of Warden's to speak of.
    Foreign,
    /// Issued to `user` for `grant`, which is active now.
    Active { user: UserName, grant: RequestId },
    /// Issued by Warden, for `grant` when its key id names one, and letting no one in now:
    /// why, with what to do about it.
    Refused {
        grant: Option<RequestId>,
        denied: Denied,
    },
}

/// Where the target's sshd is, and the host key it must present.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// Pinned: configured in the policy or confirmed by an administrator, never learnt on
    /// first use.
    pub host_key: PublicKey,
}

/// An active grant that lets a user open sessions on a target.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: RequestId,
    pub user: UserName,
    pub target: TargetName,
    pub role: RoleName,
    pub expires_at: OffsetDateTime,
    /// The Unix accounts the upstream certificate may log in as; the first is the default.
    pub principals: Vec<String>,
    pub upstream: Upstream,
    pub rules: Rules,
    pub recording: Recording,
    /// The certificate extensions its sessions' upstream certificates carry: those both its
    /// issue and its role give.
    pub extensions: Vec<String>,
    /// Where the user may use the grant from (the role's `source_address`); `None`: anywhere.
    /// The proxy checks the address the user's connection comes from against it: its upstream
    /// certificates carry no `source-address`, as they come from the proxy's own address.
    pub source_address: Option<Vec<AddressBlock>>,
    /// The role's `force_command`: the one command the target runs, whatever is asked (its
    /// sshd runs it from the upstream certificate). Events and recordings name it beside what
    /// was asked, and the deny rules judge it too.
    pub force_command: Option<String>,
}

impl Grant {
    /// Whether it gives a terminal (`permit-pty`): the target refuses one otherwise.
    pub fn terminal(&self) -> bool {
        self.extensions.iter().any(|e| e == "permit-pty")
    }
}

/// The server side of the proxy: identity, authorization, signing and the audit log.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The Warden user a verified public key, offered from `source`, is registered to, if
    /// any. A key that signs no one in for a reason worth the record (its owner offboarded) is
    /// put on it as [`Backend::refused_sign_in`] puts refusals.
    async fn authenticate(
        &self,
        key: &PublicKey,
        source: IpAddr,
    ) -> Result<Option<UserName>, BackendError>;

    /// Why sign-ins from `source` are refused before any check, if they are: the address has
    /// spent its budget of failed sign-ins (the API's and the proxy's together). Each call that
    /// says so counts one refused attempt (in the metrics, not the audit log). A backend that
    /// throttles nothing says nothing.
    fn throttled(&self, _source: IpAddr) -> Option<Denied> {
        None
    }

    /// Puts a refused sign-in (`auth.login_failed`, its actor's source set) on the record and
    /// counts it against its address's budget of failed sign-ins; once that is spent, further
    /// refusals are counted in the metrics and not recorded one by one (the throttle's start
    /// is). By default, recorded as any event.
    async fn refused_sign_in(&self, event: Event) -> Result<(), BackendError> {
        self.audit(vec![event]).await
    }

    /// Whether `name` is a user in Warden's directory: a refused sign-in's audit event keeps
    /// the name it claimed as typed only then, else by its length alone, since a name no one
    /// has is as likely a password typed there. A backend that cannot tell says no.
    fn is_user(&self, _name: &UserName) -> bool {
        false
    }

    /// Whether `name` is a target in the policy: a refused sign-in's audit event keeps the
    /// target its SSH user name names as typed only then, else by its length alone, as it
    /// keeps a user name no user has. A backend that cannot tell says no.
    fn is_target(&self, _name: &str) -> bool {
        false
    }

    /// Whether some role of target `target` logs in as `login`: a refused sign-in's audit
    /// event keeps the login its SSH user name asks for as typed only then, else by its length
    /// alone, as it keeps a target no policy has. A backend that cannot tell says no.
    fn is_login(&self, _target: &str, _login: &str) -> bool {
        false
    }

    /// Whom a certificate (ownership verified) was issued to and for which grant, if Warden's
    /// user CA signed it and it is valid now; why it is not, if Warden signed it.
    async fn authenticate_certificate(&self, cert: &Certificate)
    -> Result<Certified, BackendError>;

    /// Why `key`, registered to no one, signs `user` in nowhere when Warden certified it for a
    /// grant of theirs and every such certificate is past its end: that grant (the one that
    /// ended last) and the refusal. The SSH library refuses a certificate past its end before
    /// [`Backend::authenticate_certificate`] could see it; clients then offer its key alone,
    /// which is where such a sign-in shows. A backend that certifies no keys has none.
    async fn expired_certificate(
        &self,
        _user: &UserName,
        _key: &PublicKey,
    ) -> Result<Option<(RequestId, Denied)>, BackendError> {
        Ok(None)
    }

    /// The grant under which `user`, connected from `source`, may open a session on `target`
    /// now: `grant` when the user signed in with that grant's certificate, else one that logs
    /// in as `login` when one was asked for, one that may be used from `source` (its role's
    /// `source_address`) before any that may not, so that a grant usable only from elsewhere
    /// never stands in the way of one usable here (the session refuses one usable only from
    /// elsewhere, naming why). Asked at sign-in (a refusal signs no one in) and again for
    /// every session.
    async fn authorize(
        &self,
        user: &UserName,
        target: &str,
        login: Option<&str>,
        grant: Option<RequestId>,
        source: IpAddr,
    ) -> Result<Result<Grant, Denied>, BackendError>;

    /// Whether `grant` is still active now: asked once more after a session registers, since
    /// a revocation between its authorization and its registration ended the grant's other
    /// sessions but could not see this one.
    async fn still_active(&self, grant: RequestId) -> Result<bool, BackendError>;

    /// A certificate for `key`, signed by Warden's user CA, valid only for `grant`.
    async fn sign(&self, grant: &Grant, key: &PublicKey) -> Result<Certificate, BackendError>;

    /// Appends events to the audit log; returns once they are durable.
    async fn audit(&self, events: Vec<Event>) -> Result<(), BackendError>;
}
