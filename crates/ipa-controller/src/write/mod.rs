//! Stage 5 of a cycle: apply what was decided (the scale subresource, then the template's resources), publish an
//! Event per change, and write status. Writes carry the `resourceVersion` the decision was made on, so a
//! concurrent change by someone else is a 409, not an overwrite.

pub mod events;
pub mod patches;
pub mod status;

use ipa_core::GuardState;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{GetParams, Patch, PatchParams};
use kube::core::Request;
use kube::{Api, Resource};
use tracing::{info, warn};

use crate::clock::rfc3339;
use crate::conditions::{self, Want};
use crate::crd::{Mode, UpdateMode};
use crate::decide::Plan;
use crate::error::is_conflict;
use crate::read::slim::DeploymentView;
use crate::reconcile::{Context, MANAGER};
use crate::summarize::Found;
use crate::summarize::target::containers_of;

/// What the writes for one target did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Unix seconds of a scale write that succeeded.
    pub scaled_at: Option<i64>,
    /// Unix seconds of a resize write that succeeded.
    pub resized_at: Option<i64>,
    /// `<target> <what>` per change, for the IPA's `lastDecision`.
    pub changes: Vec<String>,
    /// The `Applied` condition.
    pub applied: Want,
    pub failed: bool,
}

impl Written {
    fn nothing(applied: Want) -> Self {
        Self {
            scaled_at: None,
            resized_at: None,
            changes: Vec::new(),
            applied,
            failed: false,
        }
    }
}

/// Writes to Deployments are attributed to us (managedFields), never forced over someone else's fields.
fn write_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Applies one target's plan: replicas first (the fast need), then resources.
pub async fn apply(ctx: &Context, found: &Found, plan: &Plan, now: i64) -> Written {
    let (scale, resize) = (plan.scales(), !plan.resize.is_empty());
    if !scale && !resize && !plan.held_back.is_empty() {
        let why = format!(
            "another autoscaler owns the {}; IPA leaves them alone (see {})",
            plan.held_back.words(),
            crate::conflicts::CONDITION
        );
        let reason = crate::conflicts::REASON_CONFLICT;
        return Written::nothing(Want::new(conditions::APPLIED, false, reason, why));
    }
    if resize && found.update_mode != UpdateMode::Template && !scale {
        return Written::nothing(resize_not_applied(found.update_mode));
    }
    if !scale && !resize {
        return Written::nothing(Want::new(
            conditions::APPLIED,
            true,
            "NoChange",
            "nothing to change",
        ));
    }
    if found.mode == Mode::Recommend {
        let why = "mode is Recommend; the Deployment is left as it is";
        return Written::nothing(Want::new(conditions::APPLIED, false, "RecommendMode", why));
    }
    let target = &found.info.target;
    let object = found.deployment.object_ref(&target.namespace);
    let mut written = Written::nothing(Want::new(conditions::APPLIED, true, "Applied", ""));
    let mut messages = Vec::new();
    let mut rv = found.deployment.metadata.resource_version.clone();
    if scale {
        match write_scale(ctx, found, plan.decision.replicas, rv.as_deref()).await {
            Ok(new_rv) => {
                rv = new_rv;
                ctx.metrics.change("scale");
                written.scaled_at = Some(now);
                let what = format!(
                    "replicas {} → {}",
                    plan.current_replicas, plan.decision.replicas
                );
                events::changed(ctx, &object, ("Scaled", "Scale"), &what, &plan.recommended).await;
                written.changes.push(format!("{target} {what}"));
                messages.push(what);
            }
            Err(e) => return failed(ctx, written, &e, "scale"),
        }
    }
    if resize && found.update_mode != UpdateMode::Template {
        written.applied = resize_not_applied(found.update_mode);
        return written;
    }
    if resize {
        match write_resources(ctx, found, plan, rv).await {
            Ok(()) => {
                ctx.metrics.change("resize");
                written.resized_at = Some(now);
                let names: Vec<&str> = plan.resize.iter().map(|c| c.name.as_str()).collect();
                let what = format!("resources of {}", names.join(", "));
                events::changed(
                    ctx,
                    &object,
                    ("Resized", "Resize"),
                    &what,
                    &plan.recommended,
                )
                .await;
                written.changes.push(format!("{target} {what}"));
                messages.push(what);
            }
            Err(e) => return failed(ctx, written, &e, "resize"),
        }
    }
    written.applied = Want::new(conditions::APPLIED, true, "Applied", messages.join("; "));
    written
}

/// The `Applied` condition of a resize the update mode keeps in status.
fn resize_not_applied(mode: UpdateMode) -> Want {
    let why = match mode {
        UpdateMode::Off => {
            "updateMode is Off: new requests/limits are in status, not applied".to_string()
        }
        other => format!(
            "updateMode {} is not applied by this version yet: new requests/limits are in status only (use Template for a rolling update)",
            other.as_str()
        ),
    };
    Want::new(conditions::APPLIED, false, "ResizeNotApplied", why)
}

/// Sets replicas through the scale subresource; the new resourceVersion on success.
async fn write_scale(
    ctx: &Context,
    found: &Found,
    replicas: u32,
    rv: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    let target = &found.info.target;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &target.namespace);
    ctx.metrics.kube_request("patch");
    let body = patches::scale_patch(replicas, rv);
    let scale = deployments
        .patch_scale(&target.deployment, &write_params(), &Patch::Merge(&body))
        .await?;
    Ok(scale.metadata.resource_version)
}

/// Sets the template's requests and limits. On a 409 it reads the Deployment again and retries once when the
/// containers' resources are still the ones the decision saw: the Deployment moved on (our own scale write bumps
/// it, and so does its controller) but nobody changed what we write.
async fn write_resources(
    ctx: &Context,
    found: &Found,
    plan: &Plan,
    rv: Option<String>,
) -> Result<(), kube::Error> {
    let target = &found.info.target;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let patch = |rv: Option<String>| {
        let body = patches::resources_patch(&plan.resize, rv.as_deref());
        ctx.metrics.kube_request("patch");
        let api = deployments.clone();
        async move {
            api.patch(
                &target.deployment,
                &write_params(),
                &Patch::Strategic(&body),
            )
            .await
            .map(drop)
        }
    };
    match patch(rv).await {
        Err(e) if is_conflict(&e) => {
            let fresh = get_deployment(ctx, &target.namespace, &target.deployment).await?;
            if containers_of(&fresh) != found.info.containers {
                return Err(e);
            }
            info!(target = %target, "deployment moved on since it was read; resizing on its fresh state");
            patch(fresh.metadata.resource_version).await
        }
        other => other,
    }
}

async fn get_deployment(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<DeploymentView, kube::Error> {
    ctx.metrics.kube_request("get");
    let request = Request::new(Deployment::url_path(&(), Some(namespace)))
        .get(name, &GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    ctx.client.request::<DeploymentView>(request).await
}

/// A write that failed: the `Applied` condition says why; the writes before it stand.
fn failed(ctx: &Context, mut written: Written, e: &kube::Error, what: &'static str) -> Written {
    written.failed = true;
    written.applied = if is_conflict(e) {
        ctx.metrics.change("conflict");
        info!(
            what,
            "deployment changed concurrently; deciding again next cycle"
        );
        let why = format!("{what}: the Deployment changed concurrently; deciding again next cycle");
        Want::new(conditions::APPLIED, false, "Conflict", why)
    } else {
        warn!(what, error = %e, "applying failed");
        Want::new(
            conditions::APPLIED,
            false,
            "ApplyFailed",
            format!("{what}: {e}"),
        )
    };
    written
}

/// The guard state to keep: the decision's, minus what was not written. A scale that succeeded keeps its event
/// (and so its stabilization window) even when the resize after it failed; a write that failed or was never
/// made (Recommend mode) is forgotten.
pub fn remembered(plan: &Plan, written: &Written, now: i64) -> GuardState {
    let mut state = plan.decision.state.clone();
    if written.scaled_at.is_none() {
        state.scale_events.retain(|e| e.0 != now);
    }
    if written.resized_at.is_none() {
        state.last_resize_at = plan.guard_before.last_resize_at;
    }
    state
}

/// The RFC 3339 time of a write that succeeded, else the previous one.
pub fn time_of(at: Option<i64>, previous: Option<&String>) -> Option<String> {
    at.and_then(rfc3339).or_else(|| previous.cloned())
}
