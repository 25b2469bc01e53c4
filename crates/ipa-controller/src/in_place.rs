//! In-place vertical scaling: new requests/limits go to a Deployment's running pods through the `pods/resize`
//! subresource (on by default since Kubernetes 1.33, GA in 1.35), so no pod restarts and the Deployment's template
//! is never written (a GitOps tool sees no drift). The write stage uses it for `updateMode: InPlace` and
//! `InPlaceOrRecreate`.
//!
//! [`plan`] is pure: from the desired container resources and the Deployment's pods it says which pods to
//! resize now, with one body each, and where every other pod stands according to the node (the pod's
//! `PodResizePending` / `PodResizeInProgress` conditions). [`apply`] sends the bodies and turns every answer,
//! a refusal included, into a per-pod result.
//!
//! What the planner decides, and why:
//! - every pod whose spec differs from the desired size is resized in the same cycle: an in-place resize
//!   restarts nothing, and the node admits each pod on its own, so there is nothing to gain by waiting;
//! - a pod whose spec is already at the desired size is never patched again, whatever its node said: the same
//!   spec gets the same answer. Its conditions become its outcome, which is how the write stage learns that a
//!   resize is `Infeasible` (for `InPlaceOrRecreate`: recreate that pod) or `Deferred` and since when;
//! - a condition set for an older generation of the pod (`observedGeneration`) describes an older resize and
//!   is ignored;
//! - a resize that would change the pod's QoS class is not sent: the apiserver refuses it (422) whatever the
//!   node, so the planner says so instead of asking every cycle;
//! - terminating or finished pods are left alone.

use std::str::FromStr;

use futures::StreamExt;
use ipa_core::{Bytes, ContainerRecommendation, CpuMillis, Resources};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::Error;
use crate::write::patches::{container_resources, differs};

/// The pod condition a node sets on a resize it has not admitted (reason `Infeasible` or `Deferred`).
pub const RESIZE_PENDING: &str = "PodResizePending";
/// The pod condition a node sets while it applies a resize it admitted (reason `Error` when that failed).
pub const RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";

/// Requests and limits of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub requests: Resources,
    pub limits: Resources,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    pub name: String,
    /// `spec.containers[].resources`: what the pod asks for (after a resize: what was asked last).
    pub spec: Sizes,
    /// `status.containerStatuses[].resources`: what the container runs with; `None` when the node does not
    /// report it.
    pub actual: Option<Sizes>,
}

/// A resize condition of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResizeCondition {
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Unix seconds of its last transition.
    pub since: Option<i64>,
    /// The pod generation it was set for.
    pub observed_generation: Option<i64>,
}

/// A pod of the target Deployment, reduced to what the planner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// Sent with the resize, so a pod that changed since it was read refuses it (409) instead of being
    /// overwritten.
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub ready: bool,
    /// Being deleted, or finished (`Succeeded`/`Failed`).
    pub terminating: bool,
    /// Every container of the pod, managed or not (the QoS class depends on all of them).
    pub containers: Vec<PodContainer>,
    /// `PodResizePending`, when true.
    pub pending: Option<ResizeCondition>,
    /// `PodResizeInProgress`, when true.
    pub in_progress: Option<ResizeCondition>,
    /// Unix seconds of its creation.
    pub created: Option<i64>,
    /// It carries the admission webhook's annotation: the webhook saw it at creation.
    pub admitted: bool,
}

fn resources(map: Option<&std::collections::BTreeMap<String, Quantity>>) -> Resources {
    let get = |name: &str| map.and_then(|m| m.get(name)).map(|q| q.0.as_str());
    Resources {
        cpu: get("cpu").and_then(|q| CpuMillis::from_str(q).ok()),
        memory: get("memory").and_then(|q| Bytes::from_str(q).ok()),
    }
}

/// The CPU and memory requests/limits of a container's `resources`.
pub fn pod_sizes(r: &k8s_openapi::api::core::v1::ResourceRequirements) -> Sizes {
    Sizes {
        requests: resources(r.requests.as_ref()),
        limits: resources(r.limits.as_ref()),
    }
}

fn resize_condition(c: &PodCondition) -> ResizeCondition {
    ResizeCondition {
        reason: c.reason.clone(),
        message: c.message.clone(),
        since: c.last_transition_time.as_ref().map(|t| t.0.as_second()),
        observed_generation: c.observed_generation,
    }
}

impl PodView {
    /// Reads a pod from the API; `None` without a name or spec. A quantity that does not parse counts as
    /// unset (the apiserver validated it, so it is a form IPA does not manage).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        let status = pod.status.as_ref();
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let condition = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
        };
        let phase = status.and_then(|s| s.phase.as_deref());
        Some(Self {
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            resource_version: pod.metadata.resource_version.clone(),
            generation: pod.metadata.generation,
            ready: condition("Ready").is_some(),
            terminating: pod.metadata.deletion_timestamp.is_some()
                || matches!(phase, Some("Succeeded" | "Failed")),
            containers: spec
                .containers
                .iter()
                .map(|c| PodContainer {
                    name: c.name.clone(),
                    spec: c.resources.as_ref().map(pod_sizes).unwrap_or_default(),
                    actual: statuses
                        .iter()
                        .find(|s| s.name == c.name)
                        .and_then(|s| s.resources.as_ref())
                        .map(pod_sizes),
                })
                .collect(),
            pending: condition(RESIZE_PENDING).map(resize_condition),
            in_progress: condition(RESIZE_IN_PROGRESS).map(resize_condition),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            admitted: pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::webhook::admission::ANNOTATION)),
        })
    }

    /// A condition for the pod's current generation (one set for an older resize is stale).
    fn current<'a>(&self, condition: Option<&'a ResizeCondition>) -> Option<&'a ResizeCondition> {
        condition.filter(|c| match (c.observed_generation, self.generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => true,
        })
    }
}

/// A pod's Quality of Service class, which a resize may not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// The QoS class the apiserver computes: `BestEffort` without any CPU or memory request or limit,
/// `Guaranteed` when every container limits both and the pod's summed requests equal its summed limits,
/// else `Burstable`. Zero quantities count as unset, as there.
pub fn qos_class(containers: &[Sizes]) -> QosClass {
    fn cpu(r: &Resources) -> Option<u64> {
        r.cpu.map(|v| v.0).filter(|&v| v > 0)
    }
    fn memory(r: &Resources) -> Option<u64> {
        r.memory.map(|v| v.0).filter(|&v| v > 0)
    }
    let kinds: [fn(&Resources) -> Option<u64>; 2] = [cpu, memory];
    let total = |kind: fn(&Resources) -> Option<u64>, side: fn(&Sizes) -> &Resources| {
        containers
            .iter()
            .filter_map(|c| kind(side(c)))
            .reduce(u64::saturating_add)
    };
    let requests = kinds.map(|kind| total(kind, |c| &c.requests));
    let limits = kinds.map(|kind| total(kind, |c| &c.limits));
    let every_limit = containers
        .iter()
        .all(|c| kinds.iter().all(|kind| kind(&c.limits).is_some()));
    if requests.iter().chain(&limits).all(Option::is_none) {
        QosClass::BestEffort
    } else if every_limit
        && requests
            .iter()
            .zip(&limits)
            .all(|(r, l)| r.is_none() || r == l)
    {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// Where a pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Its spec is at the desired size and its node reports it applied (or reports nothing to compare).
    AtSize,
    /// Resized now: its body is in [`ResizePlan::resizes`].
    Resize,
    /// Its spec is at the desired size; the node has not acted on it yet.
    Requested,
    /// The node admitted the resize and is applying it (`PodResizeInProgress`).
    InProgress { since: Option<i64> },
    /// The node admitted it but could not apply it (`PodResizeInProgress`, reason `Error`); it retries.
    Failed { since: Option<i64>, message: String },
    /// The pod's requests exceed what its node can ever give (`PodResizePending`, reason `Infeasible`).
    Infeasible { since: Option<i64>, message: String },
    /// No room on the node now (`PodResizePending`, reason `Deferred`, or a reason this version does not
    /// know, which the KEP says to read as `Deferred`); the node retries.
    Deferred { since: Option<i64>, message: String },
    /// Being deleted or finished: left alone.
    Terminating,
    /// The resize would change the pod's QoS class, which the apiserver refuses: not sent.
    QosChange { from: QosClass, to: QosClass },
}

/// One pod's outcome in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOutcome {
    pub pod: String,
    pub uid: String,
    pub ready: bool,
    pub state: PodState,
}

/// One resize to send: a strategic-merge patch for the pod's `resize` subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct PodResize {
    pub pod: String,
    pub uid: String,
    pub body: Value,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResizePlan {
    /// The pods to resize now, one body each.
    pub resizes: Vec<PodResize>,
    /// Every pod, in the order given.
    pub outcomes: Vec<PodOutcome>,
}

impl ResizePlan {
    /// True when every pod that is not terminating is at the desired size.
    pub fn settled(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| matches!(o.state, PodState::AtSize | PodState::Terminating))
    }
}

/// The strategic-merge patch for the `resize` subresource: the changed containers, keyed by name, with the
/// requests and limits set in `desired`, and the pod's `resourceVersion` as a precondition.
pub fn resize_body(changes: &[&ContainerRecommendation], resource_version: Option<&str>) -> Value {
    let containers: Vec<Value> = changes.iter().map(|c| container_resources(c)).collect();
    let mut body = json!({ "spec": { "containers": containers } });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({ "resourceVersion": rv });
    }
    body
}

/// A container's size once `desired` is applied to it (a field left `None` in `desired` stays as it is).
fn resized(current: Sizes, desired: &ContainerRecommendation) -> Sizes {
    let merge = |d: Resources, c: Resources| Resources {
        cpu: d.cpu.or(c.cpu),
        memory: d.memory.or(c.memory),
    };
    Sizes {
        requests: merge(desired.requests, current.requests),
        limits: merge(desired.limits, current.limits),
    }
}

fn state_of(pod: &PodView, desired: &[ContainerRecommendation]) -> PodState {
    let message = |c: &ResizeCondition| c.message.clone().unwrap_or_default();
    if let Some(c) = pod.current(pod.pending.as_ref()) {
        return match c.reason.as_deref() {
            Some("Infeasible") => PodState::Infeasible {
                since: c.since,
                message: message(c),
            },
            _ => PodState::Deferred {
                since: c.since,
                message: message(c),
            },
        };
    }
    if let Some(c) = pod.current(pod.in_progress.as_ref()) {
        return match c.reason.as_deref() {
            Some("Error") => PodState::Failed {
                since: c.since,
                message: message(c),
            },
            _ => PodState::InProgress { since: c.since },
        };
    }
    // No word from the node: compare what the managed containers run with against the desired size (only the
    // fields IPA sets; a runtime may report others in its own rounding).
    let applied = pod.containers.iter().all(|c| {
        let Some(d) = desired.iter().find(|d| d.name == c.name) else {
            return true;
        };
        c.actual.is_none_or(|actual| {
            !differs(&d.requests, &actual.requests) && !differs(&d.limits, &actual.limits)
        })
    });
    if applied {
        PodState::AtSize
    } else {
        PodState::Requested
    }
}

/// The bridge's resizes (`ipa_core::bridge`): the ready pods to `running`, which carries the load while new
/// ones start; pods still starting keep their size — or take `born` (the grown pods' memory limits, for the
/// load they take once ready) or `new_base` (an OOM kill's memory bump this cycle) at once, before they serve.
/// At its `ending` every pod goes to `running`, the base.
pub fn bridge_plan(
    running: &[ContainerRecommendation],
    born: &[ContainerRecommendation],
    new_base: &[ContainerRecommendation],
    ending: bool,
    pods: &[PodView],
) -> ResizePlan {
    let (serving, starting): (Vec<PodView>, Vec<PodView>) =
        pods.iter().cloned().partition(|p| ending || p.ready);
    let mut result = plan(running, &serving);
    // `born` is drawn from the new base where there is one.
    let starting_size = if born.is_empty() { new_base } else { born };
    if !starting_size.is_empty() {
        let based = plan(starting_size, &starting);
        result.resizes.extend(based.resizes);
        result.outcomes.extend(based.outcomes);
    }
    result
}

/// Which pods to resize to `desired` now, and where every pod stands. `desired` holds only the containers IPA
/// manages; a field left `None` there is left as it is, and a container a pod does not have is ignored.
pub fn plan(desired: &[ContainerRecommendation], pods: &[PodView]) -> ResizePlan {
    let mut result = ResizePlan::default();
    for pod in pods {
        let changes: Vec<&ContainerRecommendation> = desired
            .iter()
            .filter(|d| {
                pod.containers.iter().any(|c| {
                    c.name == d.name
                        && (differs(&d.requests, &c.spec.requests)
                            || differs(&d.limits, &c.spec.limits))
                })
            })
            .collect();
        let state = if pod.terminating {
            PodState::Terminating
        } else if changes.is_empty() {
            state_of(pod, desired)
        } else {
            let before: Vec<Sizes> = pod.containers.iter().map(|c| c.spec).collect();
            let after: Vec<Sizes> = pod
                .containers
                .iter()
                .map(|c| match changes.iter().find(|d| d.name == c.name) {
                    Some(d) => resized(c.spec, d),
                    None => c.spec,
                })
                .collect();
            let (from, to) = (qos_class(&before), qos_class(&after));
            if from == to {
                result.resizes.push(PodResize {
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    body: resize_body(&changes, pod.resource_version.as_deref()),
                });
                PodState::Resize
            } else {
                PodState::QosChange { from, to }
            }
        };
        result.outcomes.push(PodOutcome {
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            ready: pod.ready,
            state,
        });
    }
    result
}

/// How long a resize may stay `Deferred` before `InPlaceOrRecreate` recreates its pod: the node retries a
/// deferred resize whenever room frees up, so a short wait often suffices, but not forever.
pub const DEFERRED_TIMEOUT_SECS: i64 = 300;

/// True when the pod's node will not get it to the desired size: `Infeasible`, or `Deferred` for
/// [`DEFERRED_TIMEOUT_SECS`].
pub fn stuck(state: &PodState, now: i64) -> bool {
    match state {
        PodState::Infeasible { .. } => true,
        PodState::Deferred { since, .. } => {
            since.is_some_and(|s| now.saturating_sub(s) >= DEFERRED_TIMEOUT_SECS)
        }
        _ => false,
    }
}

/// The pod `InPlaceOrRecreate` evicts now, so its ReplicaSet recreates it at the new size (the admission
/// webhook sizes it, and the scheduler finds it a node that fits): the stuck pod (see [`stuck`]) stuck longest.
/// One at a time: none while any pod of the target is terminating or not ready (an earlier eviction's
/// replacement is still starting). Never the last ready replica: there must be another ready pod. The eviction
/// itself respects PodDisruptionBudgets.
pub fn to_recreate(outcomes: &[PodOutcome], now: i64) -> Option<&PodOutcome> {
    let settling = outcomes
        .iter()
        .any(|o| matches!(o.state, PodState::Terminating) || !o.ready);
    if settling {
        return None;
    }
    let since = |o: &PodOutcome| match &o.state {
        PodState::Infeasible { since, .. } | PodState::Deferred { since, .. } => {
            since.unwrap_or(now)
        }
        _ => now,
    };
    let candidate = outcomes
        .iter()
        .filter(|o| stuck(&o.state, now))
        .min_by_key(|o| since(o))?;
    let other_ready = outcomes
        .iter()
        .filter(|o| o.ready && o.uid != candidate.uid)
        .count();
    (other_ready > 0).then_some(candidate)
}

/// How the apiserver answered one resize.
#[derive(Debug)]
pub enum ResizeOutcome {
    /// Accepted: the pod's spec has the new size; its node admits and applies it (see [`PodState`] next cycle).
    Accepted,
    /// 409: the pod changed since it was read; decide again on the next cycle.
    Conflict(String),
    /// 422 or 400: refused, e.g. a QoS change, a limit below its request, or a node that reports no resources
    /// ("Pod running on node without support for resize").
    Rejected(String),
    /// 404: the pod is gone, or the cluster has no `pods/resize` (before 1.33, or with the feature off).
    NotFound(String),
    /// Anything else: transport, permission (403 without the RBAC rule), server errors.
    Failed(Error),
}

/// The answer for one pod.
#[derive(Debug)]
pub struct ResizeResult {
    pub pod: String,
    pub uid: String,
    pub outcome: ResizeOutcome,
}

/// Resizes in flight at once: a Deployment may have hundreds of pods, and one patch each is cheap for the
/// apiserver, but a burst of hundreds is not.
const CONCURRENCY: usize = 8;

/// Sends each resize to its pod's `resize` subresource (`pods` is the Deployment's namespace), at most
/// [`CONCURRENCY`] at a time, and returns one result per resize in the same order. A refusal is a result, never an
/// error: one pod's 409 or 422 does not stop the others.
pub async fn apply(pods: &Api<Pod>, resizes: &[PodResize]) -> Vec<ResizeResult> {
    let params = PatchParams {
        field_manager: Some(crate::reconcile::MANAGER.into()),
        ..PatchParams::default()
    };
    // Owned items: a stream of futures borrowing from a slice is not provably `Send` for every lifetime, which
    // the controller's reconcile future must be.
    futures::stream::iter(resizes.to_vec())
        .map(|resize| {
            let params = &params;
            async move {
                let answer = pods
                    .patch_subresource("resize", &resize.pod, params, &Patch::Strategic(&resize.body))
                    .await;
                let outcome = match answer {
                    Ok(_) => ResizeOutcome::Accepted,
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        ResizeOutcome::Conflict(status.message)
                    }
                    Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
                        ResizeOutcome::Rejected(status.message)
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        ResizeOutcome::NotFound(status.message)
                    }
                    Err(source) => ResizeOutcome::Failed(Error::Kube {
                        what: format!("resize pod {}", resize.pod),
                        source,
                    }),
                };
                match &outcome {
                    ResizeOutcome::Accepted => tracing::info!(pod = %resize.pod, "pod resized in place"),
                    ResizeOutcome::Failed(err) => {
                        tracing::warn!(pod = %resize.pod, error = %err, "in-place resize failed")
                    }
                    refused => tracing::info!(pod = %resize.pod, outcome = ?refused, "in-place resize refused"),
                }
                ResizeResult {
                    pod: resize.pod.clone(),
                    uid: resize.uid.clone(),
                    outcome,
                }
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: Option<u64>, memory_mib: Option<u64>) -> Resources {
        Resources {
            cpu: cpu.map(CpuMillis),
            memory: memory_mib.map(Bytes::from_mib),
        }
    }

    fn sizes(requests: Resources, limits: Resources) -> Sizes {
        Sizes { requests, limits }
    }

    /// A ready pod with one `app` container at 100m/64Mi requests and a 128Mi memory limit, applied.
    fn pod(name: &str) -> PodView {
        let spec = sizes(res(Some(100), Some(64)), res(None, Some(128)));
        PodView {
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: Some("7".into()),
            generation: Some(1),
            ready: true,
            terminating: false,
            containers: vec![PodContainer {
                name: "app".into(),
                spec,
                actual: Some(spec),
            }],
            pending: None,
            in_progress: None,
            created: None,
            admitted: false,
        }
    }

    fn want(cpu: u64, memory_mib: u64, memory_limit_mib: u64) -> ContainerRecommendation {
        ContainerRecommendation {
            name: "app".into(),
            requests: res(Some(cpu), Some(memory_mib)),
            limits: res(None, Some(memory_limit_mib)),
        }
    }

    fn state(plan: &ResizePlan, pod: &str) -> Option<PodState> {
        plan.outcomes
            .iter()
            .find(|o| o.pod == pod)
            .map(|o| o.state.clone())
    }

    #[test]
    fn the_bridge_grows_the_ready_pods_and_the_starting_ones_take_a_new_base_or_the_grown_memory() {
        let mut starting = pod("starting");
        starting.ready = false;
        let pods = [pod("serving"), starting];
        let (grown, base) = ([want(300, 64, 384)], [want(100, 64, 160)]);
        let only_grown = bridge_plan(&grown, &[], &[], false, &pods);
        assert_eq!(state(&only_grown, "serving"), Some(PodState::Resize));
        assert_eq!(state(&only_grown, "starting"), None, "left at its size");
        let rebased = bridge_plan(&grown, &[], &base, false, &pods);
        assert_eq!(rebased.resizes.len(), 2);
        assert_eq!(state(&rebased, "starting"), Some(PodState::Resize));
        let born = [want(100, 64, 384)];
        let growing = bridge_plan(&grown, &born, &base, false, &pods);
        assert_eq!(state(&growing, "starting"), Some(PodState::Resize));
        assert!(
            growing.resizes.iter().any(|r| r.pod == "starting"),
            "a pod starting takes the grown memory limit before it serves"
        );
        let ending = bridge_plan(&grown, &[], &[], true, &pods);
        assert_eq!(
            ending.resizes.len(),
            2,
            "at its end every pod goes to the base"
        );
    }

    #[test]
    fn pods_off_size_get_one_body_each_keyed_by_container_name() {
        let mut sidecar = pod("b");
        sidecar.containers.push(PodContainer {
            name: "sidecar".into(),
            spec: sizes(res(Some(10), Some(16)), Resources::default()),
            actual: None,
        });
        let plan = plan(&[want(200, 96, 192)], &[pod("a"), sidecar]);
        assert_eq!(plan.resizes.len(), 2);
        assert_eq!(
            plan.resizes[0].body,
            json!({
                "metadata": {"resourceVersion": "7"},
                "spec": {"containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "200m", "memory": "96Mi"},
                                                  "limits": {"memory": "192Mi"}}}
                ]}
            })
        );
        // The sidecar IPA does not manage is not in the body.
        assert_eq!(plan.resizes[1].body, plan.resizes[0].body);
        assert_eq!(state(&plan, "a"), Some(PodState::Resize));
        assert!(!plan.settled());
    }

    #[test]
    fn pods_at_size_are_left_alone() {
        let plan = plan(&[want(100, 64, 128)], &[pod("a")]);
        assert!(plan.resizes.is_empty());
        assert_eq!(state(&plan, "a"), Some(PodState::AtSize));
        assert!(plan.settled());
        // A field left unset in the desired size is not compared.
        let partial = ContainerRecommendation {
            name: "app".into(),
            requests: res(Some(100), None),
            limits: Resources::default(),
        };
        assert!(super::plan(&[partial], &[pod("a")]).resizes.is_empty());
        // Nor is a container the pod does not have.
        let ghost = ContainerRecommendation {
            name: "ghost".into(),
            ..want(1, 1, 1)
        };
        assert!(super::plan(&[ghost], &[pod("a")]).settled());
    }

    #[test]
    fn the_nodes_word_becomes_the_outcome_and_nothing_is_sent_again() {
        let target = [want(200, 96, 192)];
        let mut resized = pod("a");
        resized.containers[0].spec = sizes(res(Some(200), Some(96)), res(None, Some(192)));
        resized.generation = Some(2);
        // Asked, not yet seen by the node.
        assert_eq!(
            state(&plan(&target, &[resized.clone()]), "a"),
            Some(PodState::Requested)
        );

        let condition = |reason: Option<&str>, generation| ResizeCondition {
            reason: reason.map(str::to_owned),
            message: Some("m".into()),
            since: Some(100),
            observed_generation: Some(generation),
        };
        let mut in_progress = resized.clone();
        in_progress.in_progress = Some(condition(None, 2));
        assert_eq!(
            state(&plan(&target, &[in_progress.clone()]), "a"),
            Some(PodState::InProgress { since: Some(100) })
        );
        in_progress.in_progress = Some(condition(Some("Error"), 2));
        assert_eq!(
            state(&plan(&target, &[in_progress]), "a"),
            Some(PodState::Failed {
                since: Some(100),
                message: "m".into()
            })
        );

        let mut infeasible = resized.clone();
        infeasible.pending = Some(condition(Some("Infeasible"), 2));
        let p = plan(&target, &[infeasible.clone()]);
        assert!(p.resizes.is_empty(), "the same spec gets the same answer");
        assert_eq!(
            state(&p, "a"),
            Some(PodState::Infeasible {
                since: Some(100),
                message: "m".into()
            })
        );
        let mut deferred = resized.clone();
        deferred.pending = Some(condition(Some("SomethingNew"), 2));
        assert_eq!(
            state(&plan(&target, &[deferred]), "a"),
            Some(PodState::Deferred {
                since: Some(100),
                message: "m".into()
            })
        );

        // A condition about an older generation says nothing about this resize.
        infeasible.pending = Some(condition(Some("Infeasible"), 1));
        assert_eq!(
            state(&plan(&target, &[infeasible.clone()]), "a"),
            Some(PodState::Requested)
        );
        // Applied: at size.
        infeasible.pending = None;
        infeasible.containers[0].actual = Some(infeasible.containers[0].spec);
        assert_eq!(
            state(&plan(&target, &[infeasible]), "a"),
            Some(PodState::AtSize)
        );
    }

    #[test]
    fn a_new_size_is_sent_even_where_the_last_one_was_infeasible() {
        let mut p = pod("a");
        p.pending = Some(ResizeCondition {
            reason: Some("Infeasible".into()),
            ..ResizeCondition::default()
        });
        let plan = plan(&[want(200, 96, 192)], &[p]);
        assert_eq!(plan.resizes.len(), 1);
    }

    #[test]
    fn terminating_pods_and_qos_changes_are_not_resized() {
        let mut leaving = pod("a");
        leaving.terminating = true;
        // Requests equal to limits for CPU and memory would make the Burstable pod Guaranteed.
        let guaranteed = ContainerRecommendation {
            name: "app".into(),
            requests: res(Some(200), Some(128)),
            limits: res(Some(200), Some(128)),
        };
        let plan = plan(&[guaranteed], &[leaving, pod("b")]);
        assert!(plan.resizes.is_empty());
        assert_eq!(state(&plan, "a"), Some(PodState::Terminating));
        assert_eq!(
            state(&plan, "b"),
            Some(PodState::QosChange {
                from: QosClass::Burstable,
                to: QosClass::Guaranteed
            })
        );
    }

    #[test]
    fn qos_classes_follow_the_apiserver() {
        let none = Resources::default();
        assert_eq!(qos_class(&[sizes(none, none)]), QosClass::BestEffort);
        let both = res(Some(500), Some(256));
        assert_eq!(qos_class(&[sizes(both, both)]), QosClass::Guaranteed);
        // Limits only: the apiserver defaults the requests to them.
        assert_eq!(qos_class(&[sizes(none, both)]), QosClass::Guaranteed);
        assert_eq!(
            qos_class(&[sizes(res(Some(250), Some(256)), both)]),
            QosClass::Burstable
        );
        // One container without a memory limit makes the pod Burstable.
        assert_eq!(
            qos_class(&[
                sizes(both, both),
                sizes(res(Some(1), None), res(Some(1), None))
            ]),
            QosClass::Burstable
        );
        // Zero counts as unset.
        assert_eq!(
            qos_class(&[sizes(res(Some(0), Some(0)), none)]),
            QosClass::BestEffort
        );
    }

    #[test]
    fn pods_are_read_from_the_api() -> Result<(), Box<dyn std::error::Error>> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "uid": "u1", "resourceVersion": "42", "generation": 3},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]},
            "status": {"phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodResizePending", "status": "True", "reason": "Deferred", "message": "full",
                     "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3},
                    {"type": "PodResizeInProgress", "status": "False"}
                ],
                "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": true,
                    "restartCount": 0, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"}}}]}
        }))?;
        let view = PodView::from_pod(&pod).ok_or("no view")?;
        assert_eq!((view.name.as_str(), view.uid.as_str()), ("web-1", "u1"));
        assert_eq!(view.resource_version.as_deref(), Some("42"));
        assert!(view.ready && !view.terminating);
        assert_eq!(view.containers[0].spec.requests, res(Some(250), Some(128)));
        assert_eq!(
            view.containers[0].actual.map(|a| a.requests),
            Some(res(Some(100), Some(128)))
        );
        let pending = view.pending.clone().ok_or("no pending condition")?;
        assert_eq!(pending.reason.as_deref(), Some("Deferred"));
        assert_eq!(pending.since, Some(1_767_225_600));
        assert_eq!(view.in_progress, None, "a false condition is no condition");
        assert_eq!(
            state(&plan(&[want(250, 128, 256)], &[view]), "web-1"),
            Some(PodState::Deferred {
                since: Some(1_767_225_600),
                message: "full".into()
            })
        );
        Ok(())
    }

    fn outcome(name: &str, ready: bool, state: PodState) -> PodOutcome {
        PodOutcome {
            pod: name.into(),
            uid: format!("uid-{name}"),
            ready,
            state,
        }
    }

    fn infeasible(since: i64) -> PodState {
        PodState::Infeasible {
            since: Some(since),
            message: "too big".into(),
        }
    }

    #[test]
    fn recreation_takes_the_longest_stuck_pod_one_at_a_time_never_the_last_ready() {
        let now = 10_000;
        let name = |o: Option<&PodOutcome>| o.map(|o| o.pod.clone());
        let deferred = |since: i64| PodState::Deferred {
            since: Some(since),
            message: "no room".into(),
        };
        let at_size = outcome("c", true, PodState::AtSize);
        // The longest-infeasible pod first.
        let pods = [
            outcome("a", true, infeasible(now - 10)),
            outcome("b", true, infeasible(now - 60)),
            at_size.clone(),
        ];
        assert_eq!(name(to_recreate(&pods, now)), Some("b".into()));
        // Deferred only past the timeout.
        let pods = [outcome("a", true, deferred(now - 10)), at_size.clone()];
        assert_eq!(name(to_recreate(&pods, now)), None);
        let pods = [
            outcome("a", true, deferred(now - DEFERRED_TIMEOUT_SECS)),
            at_size.clone(),
        ];
        assert_eq!(name(to_recreate(&pods, now)), Some("a".into()));
        // One at a time: not while an earlier one is terminating or its replacement is not ready yet.
        let pods = [
            outcome("a", true, infeasible(now - 10)),
            outcome("b", false, PodState::Terminating),
        ];
        assert_eq!(name(to_recreate(&pods, now)), None);
        let pods = [
            outcome("a", true, infeasible(now - 10)),
            outcome("new", false, PodState::AtSize),
        ];
        assert_eq!(name(to_recreate(&pods, now)), None);
        // Never the last ready replica.
        let pods = [outcome("a", true, infeasible(now - 10))];
        assert_eq!(name(to_recreate(&pods, now)), None);
        // Nothing stuck, nothing to do.
        assert_eq!(name(to_recreate(&[at_size], now)), None);
    }
}
