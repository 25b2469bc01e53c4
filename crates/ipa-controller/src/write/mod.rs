//! Stage 5 of a cycle: apply what was decided (the scale subresource, then the template's resources), publish an
//! Event per change, and write status. Writes carry the `resourceVersion` the decision was made on, so a
//! concurrent change by someone else is a 409, not an overwrite.

pub mod events;
pub mod patches;
pub mod status;

use ipa_core::ContainerRecommendation;
use ipa_core::GuardState;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{GetParams, Patch, PatchParams};
use kube::core::Request;
use kube::{Api, Resource};
use tracing::{info, warn};

use crate::clock::rfc3339;
use crate::conditions::{self, Want};
use crate::crd::{Mode, UpdateMode};
use crate::decide::Plan;
use crate::error::is_conflict;
use crate::in_place;
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
    /// In-place targets: the size their pods are brought to, which new pods get at admission.
    pub pod_size: Vec<ContainerRecommendation>,
    /// In-place targets: the `WebhookAvailable` condition.
    pub webhook: Option<Want>,
}

impl Written {
    fn nothing(applied: Want) -> Self {
        Self {
            scaled_at: None,
            resized_at: None,
            changes: Vec::new(),
            applied,
            failed: false,
            pod_size: Vec::new(),
            webhook: None,
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

/// Applies one target's plan: replicas first (the fast need), then resources — to the template, or in place
/// to the running pods.
pub async fn apply(ctx: &Context, found: &Found, plan: &Plan, now: i64) -> Written {
    let pod_size = pod_size(found, plan);
    let mut written = apply_plan(ctx, found, plan, now).await;
    written.pod_size = pod_size.unwrap_or_default();
    written
}

/// The size an in-place target's pods are brought to, and new pods get at admission: the decision's, or
/// without a resize decided the size most of them run. `None` when the target is not resized in place by IPA.
fn pod_size(found: &Found, plan: &Plan) -> Option<Vec<ContainerRecommendation>> {
    if !found.update_mode.in_place()
        || found.mode == Mode::Recommend
        || !found.policy.vertical
        || found.pods.is_empty()
        || found.conflicts.blocked().resources
    {
        return None;
    }
    if !plan.resize.is_empty() {
        return Some(plan.decision.containers.clone());
    }
    if let Some(base) = &plan.decision.state.bridge {
        // The bridge is for the pods serving now: a pod created meanwhile is born at the base size.
        return Some(base.clone());
    }
    if !plan.decision.running.is_empty() {
        // The bridge ends this cycle: every pod goes back to the base. Most pods still run grown or trimmed
        // (as read), and a pod born now at that size could land on a node the base does not fit.
        return Some(plan.decision.running.clone());
    }
    Some(current_pod_size(found))
}

/// The managed containers at the size most of the target's pods run.
fn current_pod_size(found: &Found) -> Vec<ContainerRecommendation> {
    let managed = |name: &str| {
        found
            .info
            .managed
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == name))
    };
    found
        .info
        .containers
        .iter()
        .filter(|c| managed(&c.name))
        .map(|c| ContainerRecommendation {
            name: c.name.clone(),
            requests: c.requests,
            limits: c.limits,
        })
        .collect()
}

async fn apply_plan(ctx: &Context, found: &Found, plan: &Plan, now: i64) -> Written {
    let pods = pods_plan(found, plan);
    // A pod off size, or one its node will not resize (reported, and under InPlaceOrRecreate recreated), needs
    // the in-place step even without a new decision.
    let drift = pods.as_ref().is_some_and(|p| {
        !p.resizes.is_empty() || p.outcomes.iter().any(|o| in_place::stuck(&o.state, now))
    });
    let (scale, resize) = (plan.scales(), !plan.resize.is_empty());
    if let Some(why) = nothing_to_write(found, plan, scale, resize || drift) {
        return Written::nothing(why);
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
    if !resize && !drift {
        written.applied = Want::new(conditions::APPLIED, true, "Applied", messages.join("; "));
        return written;
    }
    let resized = match (found.update_mode, pods) {
        (UpdateMode::Off, _) => Err(resize_not_applied(UpdateMode::Off)),
        (mode, Some(pods)) if mode.in_place() => {
            in_place_resize(ctx, found, pods, bridging(plan), now).await
        }
        (mode, None) if mode.in_place() => Err(pods_unread()),
        _ => match write_resources(ctx, found, plan, rv).await {
            Ok(()) => {
                let names: Vec<&str> = plan.resize.iter().map(|c| c.name.as_str()).collect();
                Ok(format!("resources of {}", names.join(", ")))
            }
            Err(e) => return failed(ctx, written, &e, "resize"),
        },
    };
    match resized {
        Ok(what) => {
            ctx.metrics.change("resize");
            // A drifted pod brought back to size is not a new decision: the resize interval is not restarted.
            written.resized_at = resize.then_some(now);
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
            written.applied = Want::new(conditions::APPLIED, true, "Applied", messages.join("; "));
        }
        Err(why) => written.applied = why,
    }
    written
}

/// Why nothing is written for this target, if nothing is.
fn nothing_to_write(found: &Found, plan: &Plan, scale: bool, resize: bool) -> Option<Want> {
    if !scale && !resize && !plan.held_back.is_empty() {
        let why = format!(
            "another autoscaler owns the {}; IPA leaves them alone (see {})",
            plan.held_back.words(),
            crate::conflicts::CONDITION
        );
        return Some(Want::new(
            conditions::APPLIED,
            false,
            crate::conflicts::REASON_CONFLICT,
            why,
        ));
    }
    if !scale && !resize {
        return Some(Want::new(
            conditions::APPLIED,
            true,
            "NoChange",
            "nothing to change",
        ));
    }
    if found.mode == Mode::Recommend {
        let why = "mode is Recommend; the Deployment is left as it is";
        return Some(Want::new(conditions::APPLIED, false, "RecommendMode", why));
    }
    if !scale && found.update_mode == UpdateMode::Off {
        return Some(resize_not_applied(UpdateMode::Off));
    }
    None
}

/// For an in-place target: which of its pods to resize to the decision's size — or, without a resize decided,
/// back to the size most of them run (a pod created since, at the template's size, or one that drifted).
/// `None` when the target is not in place, its pods were not read, or another autoscaler owns its resources.
fn pods_plan(found: &Found, plan: &Plan) -> Option<in_place::ResizePlan> {
    // `vertical: false` leaves requests and limits to others: not even a drifted pod is brought back.
    if !found.update_mode.in_place()
        || !found.policy.vertical
        || found.pods.is_empty()
        || found.conflicts.blocked().resources
    {
        return None;
    }
    if !plan.decision.running.is_empty() {
        let ending = plan.decision.state.bridge.is_none();
        return Some(in_place::bridge_plan(
            &plan.decision.running,
            &plan.decision.born,
            &plan.decision.containers,
            ending,
            &found.pods,
        ));
    }
    if plan.resize.is_empty() && plan.decision.state.bridge.is_some() {
        // Mid-bridge the pods run at two sizes on purpose: the serving ones are kept at the size most of them
        // run (and one its node refuses is reported), those still starting are left at the base — or take
        // the grown pods' memory limits (`born`) while the bridge grows.
        return Some(in_place::bridge_plan(
            &current_pod_size(found),
            &plan.decision.born,
            &[],
            false,
            &found.pods,
        ));
    }
    let desired = if plan.resize.is_empty() {
        current_pod_size(found)
    } else {
        plan.decision.containers.clone()
    };
    Some(in_place::plan(&desired, &found.pods))
}

/// Resizes the target's pods through `pods/resize`: what changed, or why not all of it did. A pod its node
/// cannot resize is reported (a Warning Event and the `Applied` condition); under `InPlaceOrRecreate` one such
/// pod at a time is evicted, so its ReplicaSet recreates it at the new size.
async fn in_place_resize(
    ctx: &Context,
    found: &Found,
    pods: in_place::ResizePlan,
    bridging: bool,
    now: i64,
) -> Result<String, Want> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &found.info.target.namespace);
    ctx.metrics
        .kube_requests_n("patch", pods.resizes.len() as u64);
    let results = in_place::apply(&api, &pods.resizes).await;
    let accepted = results
        .iter()
        .filter(|r| matches!(r.outcome, in_place::ResizeOutcome::Accepted))
        .count();
    let mut problems: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            in_place::ResizeOutcome::Accepted => None,
            in_place::ResizeOutcome::Conflict(m)
            | in_place::ResizeOutcome::Rejected(m)
            | in_place::ResizeOutcome::NotFound(m) => Some(format!("{}: {m}", r.pod)),
            in_place::ResizeOutcome::Failed(e) => Some(format!("{}: {e}", r.pod)),
        })
        .collect();
    let stuck = node_refusals(&pods.outcomes, now);
    problems.extend(pods.outcomes.iter().filter_map(|o| match &o.state {
        in_place::PodState::QosChange { .. } => {
            Some(format!("{}: the resize would change its QoS class", o.pod))
        }
        _ => None,
    }));
    let names: Vec<&str> = found
        .info
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let what = format!(
        "resources of {} in place on {accepted} pod(s)",
        names.join(", ")
    );
    if !stuck.is_empty() && bridging {
        return Err(bridge_refused(&what, &stuck));
    }
    if !stuck.is_empty() {
        return Err(stuck_pods(
            ctx,
            found,
            &api,
            &pods.outcomes,
            (&what, &stuck, &problems),
            now,
        )
        .await);
    }
    if problems.is_empty() && accepted > 0 {
        return Ok(what);
    }
    if problems.is_empty() {
        // Every pod was already asked for this size; the nodes are applying it.
        return Err(Want::new(
            conditions::APPLIED,
            true,
            "ResizeInProgress",
            "pods are being resized in place",
        ));
    }
    warn!(target = %found.info.target, problems = ?problems, "in-place resize incomplete");
    let why = format!("{what}; not resized: {}", problems.join("; "));
    Err(Want::new(
        conditions::APPLIED,
        false,
        "ResizeIncomplete",
        why,
    ))
}

/// `<pod> infeasible|deferred: <the node's message>` for each pod whose node will not resize it (see
/// `in_place::stuck`).
fn node_refusals(outcomes: &[in_place::PodOutcome], now: i64) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| in_place::stuck(&o.state, now))
        .filter_map(|o| match &o.state {
            in_place::PodState::Infeasible { message, .. } => {
                Some(format!("{} infeasible: {message}", o.pod))
            }
            in_place::PodState::Deferred { message, .. } => {
                Some(format!("{} deferred too long: {message}", o.pod))
            }
            _ => None,
        })
        .collect()
}

/// True while the bridge (`ipa_core::bridge`) holds the serving pods above their base size.
fn bridging(plan: &Plan) -> bool {
    plan.decision.state.bridge.is_some()
}

/// A node without room for the bridge: the bridge is lost on that pod, never the pod. It serves at its size
/// until the new replicas are ready; evicting it (as `InPlaceOrRecreate` does for a base size that cannot fit)
/// would take capacity away exactly when it is short.
fn bridge_refused(what: &str, stuck: &[String]) -> Want {
    let why = format!(
        "{what}; the bridge does not fit on the node: {}; those pods keep their size until the new replicas serve",
        stuck.join("; ")
    );
    Want::new(conditions::APPLIED, true, "BridgeDeferred", why)
}

/// Pods whose node cannot fit their resize: a Warning Event; under `InPlace` they are left (the condition says
/// so), under `InPlaceOrRecreate` one of them is evicted (see `in_place::to_recreate`).
async fn stuck_pods(
    ctx: &Context,
    found: &Found,
    api: &Api<Pod>,
    outcomes: &[in_place::PodOutcome],
    (what, stuck, problems): (&str, &[String], &[String]),
    now: i64,
) -> Want {
    let object = found.deployment.object_ref(&found.info.target.namespace);
    let refused = stuck.join("; ");
    events::warn(ctx, &object, ("ResizeInfeasible", "Resize"), &refused).await;
    let mut why = format!("{what}; the node cannot fit: {refused}");
    if !problems.is_empty() {
        why.push_str(&format!("; not resized: {}", problems.join("; ")));
    }
    if found.update_mode != UpdateMode::InPlaceOrRecreate {
        why.push_str(
            "; updateMode InPlace leaves them as they are (InPlaceOrRecreate would recreate them)",
        );
        return Want::new(conditions::APPLIED, false, "ResizeInfeasible", why);
    }
    let Some(pod) = in_place::to_recreate(outcomes, now) else {
        why.push_str("; recreating one pod at a time: waiting until every pod is ready and another can serve");
        return Want::new(conditions::APPLIED, false, "Recreating", why);
    };
    match evict(ctx, api, pod).await {
        Ok(()) => {
            let note = format!(
                "evicted {} so that it is recreated at the new size",
                pod.pod
            );
            events::warn(ctx, &object, ("Recreated", "Evict"), &note).await;
            why.push_str(&format!("; {note}"));
        }
        Err(e) => why.push_str(&format!("; evicting {} refused: {e}", pod.pod)),
    }
    Want::new(conditions::APPLIED, false, "Recreating", why)
}

/// Evicts one pod (policy/v1 Eviction: PodDisruptionBudgets are respected; 429 when one forbids it), only if it
/// is still the pod that was read (its UID).
async fn evict(ctx: &Context, api: &Api<Pod>, pod: &in_place::PodOutcome) -> Result<(), String> {
    ctx.metrics.kube_request("create");
    let params = kube::api::EvictParams {
        delete_options: Some(kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..kube::api::DeleteParams::default()
        }),
        ..kube::api::EvictParams::default()
    };
    match api.evict(&pod.pod, &params).await {
        Ok(_) => {
            info!(pod = %pod.pod, "evicted: its node cannot fit the resize");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 429 => {
            Err("a PodDisruptionBudget allows no disruption now".into())
        }
        Err(e) => {
            warn!(pod = %pod.pod, error = %e, "eviction failed");
            Err(e.to_string())
        }
    }
}

fn pods_unread() -> Want {
    let why = "the target's pods could not be read; the in-place resize waits for the next cycle";
    Want::new(conditions::APPLIED, false, "ResizeDeferred", why)
}

/// The `Applied` condition of a resize the update mode keeps in status.
fn resize_not_applied(mode: UpdateMode) -> Want {
    let why = match mode {
        UpdateMode::Off => {
            "updateMode is Off: new requests/limits are in status, not applied".to_string()
        }
        other => format!(
            "updateMode {}: new requests/limits are in status only",
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
