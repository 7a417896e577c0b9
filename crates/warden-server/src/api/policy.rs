//! `/v1/targets` and `/v1/policy`: what the caller may request, decisions explained, reloads.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_domain::{Ttl, UserName};

use super::views::DecisionView;
use super::{
    ApiError, Authed, ErrorBody, JsonBody, NoFields, OptionalJson, body, field, refuse,
    refuse_at_target,
};
use crate::state::{ReloadError, Shared};

/// One role the caller may request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetOption {
    pub target: String,
    pub role: String,
    pub kind: String,
    pub environment: String,
    pub description: Option<String>,
    pub decision: DecisionView,
    /// Why a request for it would be refused now although policy permits it: no one in the
    /// directory can give the approval its tier needs (an administrator must change the
    /// directory or the policy). Null when someone can, and for break-glass access.
    #[schema(required = true)]
    pub unapprovable: Option<String>,
}

/// Roles the caller may request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetList {
    pub targets: Vec<TargetOption>,
    /// Roles the caller may take in an emergency with `warden breakglass`.
    pub breakglass: Vec<TargetOption>,
}

/// The live policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyStatus {
    /// SHA-256 over the policy files.
    pub digest: String,
    pub rules: usize,
    pub targets: usize,
}

/// A would-be request to explain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    /// Whose request; default the caller. Explaining for others is for administrators.
    pub user: Option<String>,
    pub target: String,
    pub role: String,
    /// Default 1h.
    pub ttl: Option<String>,
    pub ticket: Option<String>,
    /// Explain break-glass access (`Action::"breakglass"`) instead of a normal request.
    #[serde(default)]
    pub breakglass: bool,
}

/// The decision and whether the given details would pass it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    pub user: String,
    pub target: String,
    pub role: String,
    /// `request` or `breakglass`: which rules decided.
    pub action: String,
    pub decision: DecisionView,
    /// Every reason the request as given would be refused (MFA aside); empty if it would not.
    pub refusals: Vec<String>,
    /// The time of the decision as the rules read it (`context.now`, in the target's time
    /// zone), e.g. `Sunday 19:58 (context.now: hour 19, minute 58, weekday 6; Europe/Paris)`:
    /// what a time window was judged against.
    pub rules_time: Option<String>,
}

/// Outcome of a reload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReloadResult {
    pub digest: String,
    /// The new policy's warnings, one a line (a value no target has, a group no user is in:
    /// most likely typos), then a note when the config file's users, groups or managers
    /// changed, which a reload does not apply: they take effect at the next start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// Every role the caller may request, with its tier, maximum TTL and MFA requirement.
#[utoipa::path(get, path = "/v1/targets", security(("token" = [])), responses((status = 200, body = TargetList)))]
pub async fn targets(State(app): State<Shared>, who: Authed) -> Json<TargetList> {
    let allowed = |action| {
        let (policy, options) = app.options(action, &who.user);
        options
            .iter()
            .filter(|(_, _, d)| d.allowed)
            .filter_map(|(t, r, d)| {
                let target = policy.targets().get(t)?;
                Some(TargetOption {
                    target: t.to_string(),
                    role: r.to_string(),
                    kind: target.kind.clone(),
                    environment: target.environment.clone(),
                    description: target
                        .roles
                        .get(r)
                        .and_then(|ro| ro.description.clone())
                        .or_else(|| target.description.clone()),
                    decision: DecisionView::of(d, action),
                    unapprovable: match action {
                        warden_policy::Action::Request => {
                            app.approvable(d, &who.user).err().map(|r| r.to_string())
                        }
                        warden_policy::Action::Breakglass => None,
                    },
                })
            })
            .collect()
    };
    Json(TargetList {
        targets: allowed(warden_policy::Action::Request),
        breakglass: allowed(warden_policy::Action::Breakglass),
    })
}

/// The live policy's digest and size.
#[utoipa::path(get, path = "/v1/policy", operation_id = "policy_status", security(("token" = [])), responses((status = 200, body = PolicyStatus)))]
pub async fn status(State(app): State<Shared>, _who: Authed) -> Json<PolicyStatus> {
    let p = app.policy.load();
    Json(PolicyStatus {
        digest: p.digest().to_owned(),
        rules: p.rule_count(),
        targets: p.targets().iter().count(),
    })
}

/// Explains what policy would decide for a request, naming the rules.
#[utoipa::path(post, path = "/v1/policy/explain", request_body = ExplainBody, security(("token" = [])),
    responses((status = 200, body = Explanation), (status = 400, description = "`bad_user`, `bad_target`, `bad_role`, `bad_ttl`, `bad_ticket` (a field that does not parse)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: another user's decisions, by a non-administrator", body = ErrorBody),
        (status = 404, description = "`unknown_user` (the user is not in the directory), `unknown_target`, `unknown_role`", body = ErrorBody)))]
pub async fn explain(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<ExplainBody>, ApiError>,
) -> Result<Json<Explanation>, ApiError> {
    let b = body(&app, &who, "policy.explain", raw).await?;
    let parsed = (|| {
        let user = match b.user.as_deref() {
            None => who.user.clone(),
            Some(name) => {
                let name: UserName = field("bad_user", name.parse())?;
                if name != who.user.name && !app.is_admin(&who.user) {
                    return Err(ApiError::forbidden(
                        "only administrators can explain decisions for other users",
                    ));
                }
                app.user(&name)
                    .cloned()
                    .ok_or_else(|| super::session::not_in_directory(&name))?
            }
        };
        let ttl: Ttl = match b.ttl.as_deref() {
            Some(t) => field("bad_ttl", t.parse())?,
            None => {
                Ttl::from_secs(3600).map_err(|e| ApiError::bad_request("bad_ttl", e.to_string()))?
            }
        };
        let ticket = super::requests::ticket(b.ticket.as_deref())?;
        Ok((
            user,
            field("bad_target", b.target.parse())?,
            field("bad_role", b.role.parse())?,
            ttl,
            ticket,
        ))
    })();
    let (user, target, role, ttl, ticket) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(refuse(&app, &who, "policy.explain", e).await),
    };
    let action = if b.breakglass {
        warden_policy::Action::Breakglass
    } else {
        warden_policy::Action::Request
    };
    let (decision, refusals, rules_time) = match app
        .explain(action, &user, &target, &role, ttl, ticket.as_ref())
        .await
    {
        Ok(explained) => explained,
        Err(e) => {
            return Err(refuse_at_target(&app, &who, "policy.explain", &target, e.into()).await);
        }
    };
    let decision = DecisionView::of(&decision, action);
    Ok(Json(Explanation {
        user: user.name.to_string(),
        target: target.to_string(),
        role: role.to_string(),
        action: action.as_str().to_owned(),
        decision,
        refusals: refusals.iter().map(ToString::to_string).collect(),
        rules_time,
    }))
}

/// Reloads the policy directory. An invalid policy is rejected with every problem listed, and
/// the live policy stays. Administrators only.
#[utoipa::path(post, path = "/v1/policy/reload", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = ReloadResult), (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 422, description = "`invalid_policy`: the new policy was rejected, each problem in `diagnostics`; the previous one stays live", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn reload(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<ReloadResult>, ApiError> {
    let NoFields {} = body(&app, &who, "policy.reload", raw).await?;
    if !app.is_admin(&who.user) {
        return Err(refuse(
            &app,
            &who,
            "policy.reload",
            ApiError::forbidden("only administrators can reload policy"),
        )
        .await);
    }
    // Each outcome is in the server's log too, as a SIGHUP's is: the caller's terminal is not
    // the record. (A refusal's problems are bounded by the reload.)
    let by = &who.user.name;
    match app.reload_policy(who.actor()).await {
        Ok((digest, warnings)) => {
            tracing::info!(%digest, %by, "policy reloaded over the API");
            crate::broker::grant_met_requests_later(&app);
            let drift = app.directory_drift().await;
            // (The reload logged the policy's warnings.)
            if let Some(n) = &drift {
                tracing::warn!("{n}");
            }
            let notes: Vec<String> = warnings
                .iter()
                .map(ToString::to_string)
                .chain(drift)
                .collect();
            let notice = (!notes.is_empty()).then(|| notes.join("\n"));
            Ok(Json(ReloadResult { digest, notice }))
        }
        Err(ReloadError::Invalid(report)) => {
            tracing::error!(error = %report, %by, "policy reload over the API refused; the previous policy stays live");
            Err(ApiError {
                diagnostics: Some(Box::new(
                    report.diagnostics.iter().map(Into::into).collect(),
                )),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_policy",
                    format!(
                        "the new policy was rejected and the previous one stays live:\n{report}"
                    ),
                )
            })
        }
        Err(e @ ReloadError::Unstored(_)) => {
            tracing::error!(error = %e, %by, "policy reload over the API failed; the previous policy stays live");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!("{e}; the previous policy stays live: reload again once the store works"),
            ))
        }
    }
}
