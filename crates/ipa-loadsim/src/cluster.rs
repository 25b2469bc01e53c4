//! The cluster side: reflectors over the objects the simulation needs, their reduction to observations
//! (pure functions), and what the simulator writes back when a container is OOM-killed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use ipa_core::quantity::{Bytes, CpuMillis};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, Node, Pod, PodCondition, ResourceRequirements,
    Service,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::load::DeploymentId;
use crate::resize::{
    Amounts, ContainerView, PendingReason, PodView, ResizeConditions, Sizes, Step,
};
use crate::sim::{NodeObservation, OomKill, PodId, PodObservation};

/// Read-only caches of the cluster objects the simulator watches.
#[derive(Debug, Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
}

fn reflect<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(err) = item {
                tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
            }
        }
    });
    reader
}

impl Stores {
    /// Starts watching all namespaces.
    pub fn start(client: &Client) -> Self {
        Self {
            pods: reflect(client),
            nodes: reflect(client),
            deployments: reflect(client),
            services: reflect(client),
            ingresses: reflect(client),
        }
    }

    /// Waits for every cache's first full list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.ingresses.wait_until_ready().await
    }
}

fn unix_seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// The Deployment that owns a pod through its ReplicaSet: a ReplicaSet named `<deployment>-<pod-template-hash>`.
fn owning_deployment(pod: &Pod) -> Option<String> {
    let hash = pod.labels().get("pod-template-hash")?;
    pod.owner_references()
        .iter()
        .filter(|o| o.kind == "ReplicaSet")
        .find_map(|o| o.name.strip_suffix(hash.as_str())?.strip_suffix('-'))
        .map(str::to_owned)
}

/// Reduces a pod to what the simulation needs; `None` for a pod without a name or containers.
pub fn observe_pod(pod: &Pod) -> Option<PodObservation> {
    let namespace = pod.namespace()?;
    let spec = pod.spec.as_ref()?;
    let container = spec.containers.first()?;
    let status = pod.status.as_ref();
    let container_status = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container.name));
    // Throttling and OOM kills follow what the container runs with: the resources the node reports in its
    // status (which an in-place resize changes only once the node has applied it), else the spec's (a pod KWOK
    // has just started, before the node's first report). The spec alone is only what was asked for.
    let limits = match container_status.and_then(|c| c.resources.as_ref()) {
        Some(actual) => actual.limits.as_ref(),
        None => container.resources.as_ref().and_then(|r| r.limits.as_ref()),
    };
    let limit = |name: &str| limits.and_then(|l| l.get(name)).map(|q| q.0.as_str());
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none();
    let started =
        container_status.and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref());
    let running_since = running.then(|| {
        started
            .or(status.and_then(|s| s.start_time.as_ref()))
            .or(pod.metadata.creation_timestamp.as_ref())
            .map_or(0.0, unix_seconds)
    });
    Some(PodObservation {
        id: PodId {
            namespace,
            name: pod.metadata.name.clone()?,
        },
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: spec.node_name.clone(),
        deployment: owning_deployment(pod),
        container: container.name.clone(),
        cpu_limit_cores: limit("cpu")
            .and_then(|q| CpuMillis::from_str(q).ok())
            .map(CpuMillis::as_cores),
        memory_limit_bytes: limit("memory")
            .and_then(|q| Bytes::from_str(q).ok())
            .map(Bytes::as_f64),
        running_since,
    })
}

/// A node's memory capacity (allocatable if set, else capacity).
pub fn observe_node(node: &Node) -> Option<NodeObservation> {
    let status = node.status.as_ref()?;
    let memory = status
        .allocatable
        .as_ref()
        .and_then(|a| a.get("memory"))
        .or_else(|| status.capacity.as_ref()?.get("memory"))?;
    Some(NodeObservation {
        name: node.metadata.name.clone()?,
        memory_capacity_bytes: Bytes::from_str(&memory.0).ok()?.as_f64(),
    })
}

/// The pod condition a node sets while it applies a resize it admitted.
pub const RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
/// The pod condition a node sets on a resize it did not admit (reason `Infeasible` or `Deferred`).
pub const RESIZE_PENDING: &str = "PodResizePending";

/// CPU and memory of a resource map. An entry that does not parse is left unset: the apiserver validated the
/// quantities, so that would be a resource the simulation does not model.
fn amounts(map: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    let get = |name: &str| map.and_then(|m| m.get(name)).map(|q| q.0.as_str());
    Amounts {
        cpu: get("cpu").and_then(|q| CpuMillis::from_str(q).ok()),
        memory: get("memory").and_then(|q| Bytes::from_str(q).ok()),
    }
}

fn sizes(resources: Option<&ResourceRequirements>) -> Sizes {
    Sizes {
        requests: amounts(resources.and_then(|r| r.requests.as_ref())),
        limits: amounts(resources.and_then(|r| r.limits.as_ref())),
    }
}

/// A node's allocatable CPU and memory (its capacity where allocatable is not set).
pub fn node_allocatable(node: &Node) -> Option<(String, Amounts)> {
    let status = node.status.as_ref()?;
    let quantity = |name: &str| {
        status
            .allocatable
            .as_ref()
            .and_then(|a| a.get(name))
            .or_else(|| status.capacity.as_ref()?.get(name))
            .map(|q| q.0.as_str())
    };
    Some((
        node.metadata.name.clone()?,
        Amounts {
            cpu: quantity("cpu").and_then(|q| CpuMillis::from_str(q).ok()),
            memory: quantity("memory").and_then(|q| Bytes::from_str(q).ok()),
        },
    ))
}

/// Reduces a pod to what the node's resize handling needs; `None` without a name, namespace or spec.
pub fn observe_resize(pod: &Pod) -> Option<PodView> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let mut reported = true;
    let containers = spec
        .containers
        .iter()
        .map(|c| {
            let status = statuses.iter().find(|s| s.name == c.name);
            reported &= status.is_some();
            let actual = status.and_then(|s| s.resources.as_ref());
            ContainerView {
                name: c.name.clone(),
                desired: sizes(c.resources.as_ref()),
                // A node that reports resources reports the allocated requests too; none means it allocated
                // nothing (a container without requests).
                allocated: actual
                    .map(|_| amounts(status.and_then(|s| s.allocated_resources.as_ref()))),
                actual: actual.map(|r| sizes(Some(r))),
                usage: None,
            }
        })
        .collect();
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    // A condition set for an older generation of the spec says nothing about this one: the kubelet looks at
    // the new spec again and sets it anew (with the new `observedGeneration`), even where its answer is the same.
    let generation = pod.metadata.generation;
    let current = |type_: &str| {
        conditions.iter().find(|c| {
            c.type_ == type_
                && c.status == "True"
                && c.observed_generation
                    .zip(generation)
                    .is_none_or(|(observed, spec)| observed >= spec)
        })
    };
    let in_progress = current(RESIZE_IN_PROGRESS).map(|c| {
        let error =
            (c.reason.as_deref() == Some("Error")).then(|| c.message.clone().unwrap_or_default());
        (
            c.last_transition_time.as_ref().map_or(0.0, unix_seconds),
            error,
        )
    });
    let pending = current(RESIZE_PENDING).map(|c| {
        // The KEP asks readers to take an unknown reason as Deferred.
        let reason = match c.reason.as_deref() {
            Some("Infeasible") => PendingReason::Infeasible,
            _ => PendingReason::Deferred,
        };
        (reason, c.message.clone().unwrap_or_default())
    });
    Some(PodView {
        id: PodId {
            namespace: pod.namespace()?,
            name: pod.metadata.name.clone()?,
        },
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: spec.node_name.clone(),
        // A container the node has not reported on yet has no status to write to: wait for it.
        active: phase == Some("Running") && pod.metadata.deletion_timestamp.is_none() && reported,
        holds_resources: !matches!(phase, Some("Succeeded" | "Failed")),
        containers,
        conditions: ResizeConditions {
            in_progress,
            pending,
        },
    })
}

/// Replaces the condition of `type_` (keeping its transition time while it stays true), or adds it.
fn set_condition(
    conditions: &mut Vec<PodCondition>,
    type_: &str,
    reason: Option<&str>,
    message: Option<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let since = existing
        .map(|i| &conditions[i])
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let condition = PodCondition {
        type_: type_.to_owned(),
        status: "True".into(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(since),
        observed_generation: generation,
        ..PodCondition::default()
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The status patch that records a node's resize `step` on `pod`, as a kubelet writes it: allocated requests
/// and actual resources per container, and the resize conditions. It carries the pod's `resourceVersion`, so
/// it fails (409) rather than overwrite a status that changed since the cache saw it. `None` when it would
/// change nothing.
pub fn resize_patch(pod: &Pod, step: &Step, now: &Time) -> Option<serde_json::Value> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let before = status.container_statuses.clone().unwrap_or_default();
    let mut statuses = before.clone();
    let allocate = !matches!(step, Step::Pending { .. });
    let apply = matches!(step, Step::Done);
    for container_status in &mut statuses {
        let Some(container) = spec
            .containers
            .iter()
            .find(|c| c.name == container_status.name)
        else {
            continue;
        };
        let desired = container.resources.clone().unwrap_or_default();
        if allocate {
            container_status
                .allocated_resources
                .clone_from(&desired.requests);
        }
        if apply {
            container_status.resources = Some(ResourceRequirements {
                claims: None,
                ..desired
            });
        }
    }
    let before_conditions = status.conditions.clone().unwrap_or_default();
    let mut conditions = before_conditions.clone();
    let generation = pod.metadata.generation;
    match step {
        Step::Done => {
            conditions.retain(|c| c.type_ != RESIZE_IN_PROGRESS && c.type_ != RESIZE_PENDING);
        }
        Step::InProgress => {
            conditions.retain(|c| c.type_ != RESIZE_PENDING);
            set_condition(
                &mut conditions,
                RESIZE_IN_PROGRESS,
                None,
                None,
                generation,
                now,
            );
        }
        Step::Blocked(message) => {
            conditions.retain(|c| c.type_ != RESIZE_PENDING);
            let message = Some(message.clone());
            set_condition(
                &mut conditions,
                RESIZE_IN_PROGRESS,
                Some("Error"),
                message,
                generation,
                now,
            );
        }
        Step::Pending { reason, message } => {
            let message = Some(message.clone());
            set_condition(
                &mut conditions,
                RESIZE_PENDING,
                Some(reason.as_str()),
                message,
                generation,
                now,
            );
        }
    }
    if statuses == before && conditions == before_conditions {
        return None;
    }
    Some(serde_json::json!({
        "metadata": { "resourceVersion": pod.metadata.resource_version },
        "status": { "containerStatuses": statuses, "conditions": conditions },
    }))
}

/// Writes a [`resize_patch`] to the pod's status.
pub async fn report_resize(
    client: &Client,
    pod: &PodId,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    Api::<Pod>::namespaced(client.clone(), &pod.namespace)
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A Service an Ingress routes to: its pod selector and that Ingress.
type RoutedService<'a> = (&'a BTreeMap<String, String>, &'a String);

/// For each Deployment, the Ingress in front of it: one whose backend is a Service selecting the Deployment's
/// pods (the first by name when several do).
pub fn discover_ingresses(
    deployments: &[Arc<Deployment>],
    services: &[Arc<Service>],
    ingresses: &[Arc<Ingress>],
) -> BTreeMap<DeploymentId, String> {
    // (namespace, Service) → the first Ingress (by name) routing to it.
    let mut routed: BTreeMap<(String, String), String> = BTreeMap::new();
    for ingress in ingresses {
        let (Some(namespace), Some(name)) = (ingress.namespace(), ingress.metadata.name.as_ref())
        else {
            continue;
        };
        for backend in ingress_backends(ingress) {
            let entry = routed
                .entry((namespace.clone(), backend))
                .or_insert_with(|| name.clone());
            if name < entry {
                entry.clone_from(name);
            }
        }
    }
    if routed.is_empty() {
        return BTreeMap::new();
    }
    // Services with a selector that an Ingress routes to, by namespace.
    let mut routed_services: BTreeMap<String, Vec<RoutedService<'_>>> = BTreeMap::new();
    for service in services {
        let (Some(namespace), Some(name)) = (service.namespace(), service.metadata.name.clone())
        else {
            continue;
        };
        let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if let Some(ingress) = routed.get(&(namespace.clone(), name))
            && !selector.is_empty()
        {
            routed_services
                .entry(namespace)
                .or_default()
                .push((selector, ingress));
        }
    }

    let mut found = BTreeMap::new();
    let empty = BTreeMap::new();
    for deployment in deployments {
        let (Some(namespace), Some(name)) =
            (deployment.namespace(), deployment.metadata.name.clone())
        else {
            continue;
        };
        let Some(candidates) = routed_services.get(&namespace) else {
            continue;
        };
        let pod_labels = deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(&empty);
        let ingress = candidates
            .iter()
            .filter(|(selector, _)| selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
            .map(|(_, ingress)| *ingress)
            .min();
        if let Some(ingress) = ingress {
            found.insert(
                DeploymentId {
                    namespace,
                    deployment: name,
                },
                ingress.clone(),
            );
        }
    }
    found
}

/// Names of the Services an Ingress routes to.
fn ingress_backends(ingress: &Ingress) -> Vec<String> {
    let Some(spec) = &ingress.spec else {
        return Vec::new();
    };
    let default = spec
        .default_backend
        .iter()
        .filter_map(|b| b.service.as_ref());
    let rules = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| &h.paths)
        .filter_map(|p| p.backend.service.as_ref());
    default.chain(rules).map(|s| s.name.clone()).collect()
}

/// The message node-problem-detector/kubelet log for a cgroup OOM kill.
fn oom_message(kill: &OomKill) -> String {
    format!(
        "Memory cgroup out of memory: Killed process of container {} in pod {}/{} (working set {} MiB > limit {} MiB)",
        kill.container,
        kill.pod.namespace,
        kill.pod.name,
        (kill.working_set_bytes / 1048576.0).round(),
        (kill.limit_bytes / 1048576.0).round()
    )
}

/// Records an OOM kill the way a node does: a Warning Event `OOMKilling` on the pod, and the container's
/// status showing the restart (`restartCount`, `lastState.terminated.reason = OOMKilled`), so
/// kube-state-metrics' restart counter moves too.
pub async fn report_oom_kill(
    client: &Client,
    pods: &Store<Pod>,
    kill: &OomKill,
) -> Result<(), kube::Error> {
    let key = reflector::ObjectRef::<Pod>::new(&kill.pod.name).within(&kill.pod.namespace);
    let Some(pod) = pods.get(&key) else {
        return Ok(());
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubelet".into(),
            instance: kill.node.clone(),
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "OOMKilling".into(),
                note: Some(oom_message(kill)),
                action: "Killing".into(),
                secondary: None,
            },
            &pod.object_ref(&()),
        )
        .await?;

    let Some(mut statuses) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
    else {
        return Ok(());
    };
    let now = Time(jiff::Timestamp::now());
    for status in statuses.iter_mut().filter(|s| s.name == kill.container) {
        status.restart_count += 1;
        status.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                finished_at: Some(now.clone()),
                started_at: status
                    .state
                    .as_ref()
                    .and_then(|s| s.running.as_ref()?.started_at.clone()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
    }
    let patch = serde_json::json!({ "status": { "containerStatuses": statuses } });
    Api::<Pod>::namespaced(client.clone(), &kill.pod.namespace)
        .patch_status(
            &kill.pod.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(phase: &str) -> Result<Pod, serde_json::Error> {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "testapp-7d9f8-abcde", "namespace": "ipaapp", "uid": "u1",
                "labels": {"app": "testapp", "pod-template-hash": "7d9f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "testapp-7d9f8", "uid": "rs"}],
            },
            "spec": {"nodeName": "kwok-node-0", "containers": [{
                "name": "cpuload", "image": "x",
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            }]},
            "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z", "containerStatuses": [{
                "name": "cpuload", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:10Z"}},
            }]},
        }))?;
        pod.metadata.annotations = None;
        Ok(pod)
    }

    #[test]
    fn running_pod_observation() -> Result<(), Box<dyn std::error::Error>> {
        let obs = observe_pod(&pod("Running")?).ok_or("no observation")?;
        assert_eq!(obs.id.name, "testapp-7d9f8-abcde");
        assert_eq!(obs.deployment.as_deref(), Some("testapp"));
        assert_eq!(obs.node.as_deref(), Some("kwok-node-0"));
        assert_eq!(obs.container, "cpuload");
        assert_eq!(obs.cpu_limit_cores, Some(0.5));
        assert_eq!(obs.memory_limit_bytes, Some(128.0 * 1048576.0));
        assert_eq!(obs.running_since, Some(1_767_225_610.0));
        Ok(())
    }

    #[test]
    fn pending_or_terminating_pods_do_not_run() -> Result<(), serde_json::Error> {
        assert_eq!(
            observe_pod(&pod("Pending")?).and_then(|o| o.running_since),
            None
        );
        let mut deleting = pod("Running")?;
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(observe_pod(&deleting).and_then(|o| o.running_since), None);
        Ok(())
    }

    #[test]
    fn the_model_follows_the_resources_the_container_runs_with()
    -> Result<(), Box<dyn std::error::Error>> {
        // Resized to 250m/64Mi in its spec; the node still runs it at the limits it reports.
        let mut pod = pod("Running")?;
        let status = pod.status.as_mut().ok_or("no status")?;
        status.container_statuses.as_mut().ok_or("no statuses")?[0].resources = Some(
            serde_json::from_value(serde_json::json!({"limits": {"cpu": "1", "memory": "256Mi"}}))?,
        );
        let obs = observe_pod(&pod).ok_or("no observation")?;
        assert_eq!(obs.cpu_limit_cores, Some(1.0));
        assert_eq!(obs.memory_limit_bytes, Some(256.0 * 1048576.0));
        Ok(())
    }

    /// A running pod whose spec asks for 200m/96Mi (limit 192Mi) and whose node reports 100m/64Mi (128Mi).
    fn resized_pod() -> Result<Pod, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u1", "resourceVersion": "9", "generation": 2},
            "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"cpu": "200m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}}}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                    "allocatedResources": {"cpu": "100m", "memory": "64Mi"},
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
        }))
    }

    #[test]
    fn resize_view_reads_spec_status_and_conditions() -> Result<(), Box<dyn std::error::Error>> {
        let mut pod = resized_pod()?;
        let view = observe_resize(&pod).ok_or("no view")?;
        assert!(view.active && view.holds_resources);
        let c = &view.containers[0];
        assert_eq!(c.desired.requests.cpu, Some(CpuMillis(200)));
        assert_eq!(c.allocated.and_then(|a| a.cpu), Some(CpuMillis(100)));
        assert_eq!(
            c.actual.and_then(|a| a.limits.memory),
            Some(Bytes(128 << 20))
        );
        assert_eq!(view.conditions, ResizeConditions::default());
        let conditions = pod
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .ok_or("no conditions")?;
        conditions.push(serde_json::from_value(
            serde_json::json!({"type": "PodResizePending", "status": "True",
            "reason": "Infeasible", "message": "too big"}),
        )?);
        conditions.push(serde_json::from_value(serde_json::json!({"type": "PodResizeInProgress", "status": "True",
            "reason": "Error", "message": "below usage", "lastTransitionTime": "2026-01-01T00:00:00Z"}))?);
        let view = observe_resize(&pod).ok_or("no view")?;
        assert_eq!(
            view.conditions,
            ResizeConditions {
                in_progress: Some((1_767_225_600.0, Some("below usage".into()))),
                pending: Some((PendingReason::Infeasible, "too big".into())),
            }
        );
        // Conditions set for an older spec say nothing about a newer one: the node looks again.
        pod.metadata.generation = Some(3);
        if let Some(cs) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs.iter_mut().for_each(|c| c.observed_generation = Some(2));
        }
        let view = observe_resize(&pod).ok_or("no view")?;
        assert_eq!(view.conditions, ResizeConditions::default());
        // A node that reported nothing yet: no allocation known, and a container without a status waits.
        let mut fresh = resized_pod()?;
        if let Some(cs) = fresh
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs[0].resources = None;
            cs[0].allocated_resources = None;
        }
        let view = observe_resize(&fresh).ok_or("no view")?;
        assert_eq!(
            (view.containers[0].allocated, view.containers[0].actual),
            (None, None)
        );
        if let Some(status) = fresh.status.as_mut() {
            status.container_statuses = None;
        }
        assert!(!observe_resize(&fresh).ok_or("no view")?.active);
        Ok(())
    }

    #[test]
    fn resize_steps_become_status_patches() -> Result<(), Box<dyn std::error::Error>> {
        let pod = resized_pod()?;
        let now = Time(jiff::Timestamp::from_second(1_767_225_700)?);
        let patch = resize_patch(&pod, &Step::InProgress, &now).ok_or("no patch")?;
        assert_eq!(patch["metadata"]["resourceVersion"], "9");
        let status = &patch["status"]["containerStatuses"][0];
        assert_eq!(
            status["allocatedResources"],
            serde_json::json!({"cpu": "200m", "memory": "96Mi"})
        );
        assert_eq!(
            status["resources"]["requests"]["cpu"], "100m",
            "not applied yet"
        );
        let conditions = &patch["status"]["conditions"];
        assert_eq!(conditions[0]["type"], "Ready", "other conditions are kept");
        assert_eq!(
            conditions[1],
            serde_json::json!({"type": "PodResizeInProgress", "status": "True", "observedGeneration": 2,
                               "lastTransitionTime": "2026-01-01T00:01:40Z"})
        );

        let done = resize_patch(&pod, &Step::Done, &now).ok_or("no patch")?;
        let status = &done["status"]["containerStatuses"][0];
        assert_eq!(
            status["resources"],
            serde_json::json!({"requests": {"cpu": "200m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}})
        );
        assert_eq!(
            done["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );

        let pending = Step::Pending {
            reason: PendingReason::Deferred,
            message: "no room".into(),
        };
        let patch = resize_patch(&pod, &pending, &now).ok_or("no patch")?;
        assert_eq!(
            patch["status"]["containerStatuses"][0]["allocatedResources"]["cpu"],
            "100m"
        );
        assert_eq!(patch["status"]["conditions"][1]["reason"], "Deferred");
        assert_eq!(patch["status"]["conditions"][1]["message"], "no room");

        // Applied already: nothing to write.
        let mut applied = pod.clone();
        let merged: Pod = serde_json::from_value({
            let mut v = serde_json::to_value(&applied)?;
            v["status"]["containerStatuses"] = done["status"]["containerStatuses"].clone();
            v
        })?;
        applied.status = merged.status;
        assert_eq!(resize_patch(&applied, &Step::Done, &now), None);
        Ok(())
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() -> Result<(), Box<dyn std::error::Error>> {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"capacity": {"memory": "16Gi", "cpu": "4"}, "allocatable": {"cpu": "3500m"}},
        }))?;
        let (name, allocatable) = node_allocatable(&node).ok_or("no allocatable")?;
        assert_eq!(name, "n");
        assert_eq!(allocatable.cpu, Some(CpuMillis(3500)));
        assert_eq!(allocatable.memory, Some(Bytes(16 << 30)));
        Ok(())
    }

    #[test]
    fn bare_pods_have_no_deployment_or_limits() -> Result<(), &'static str> {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("solo".into()),
                namespace: Some("default".into()),
                owner_references: Some(vec![OwnerReference {
                    kind: "Job".into(),
                    name: "x".into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements::default()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(vec![ContainerStatus::default()]),
                ..PodStatus::default()
            }),
        };
        let obs = observe_pod(&pod).ok_or("no observation")?;
        assert_eq!(obs.deployment, None);
        assert_eq!((obs.cpu_limit_cores, obs.memory_limit_bytes), (None, None));
        assert_eq!(obs.running_since, Some(0.0));
        Ok(())
    }

    #[test]
    fn node_capacity() -> Result<(), Box<dyn std::error::Error>> {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"capacity": {"memory": "16Gi", "cpu": "4"}},
        }))?;
        let obs = observe_node(&node).ok_or("no observation")?;
        assert_eq!(obs.memory_capacity_bytes, 16.0 * 1024.0 * 1048576.0);
        let mut node = node;
        if let Some(status) = node.status.as_mut() {
            status.allocatable = Some(BTreeMap::from([("memory".into(), Quantity("8Gi".into()))]));
        }
        assert_eq!(
            observe_node(&node).map(|o| o.memory_capacity_bytes),
            Some(8.0 * 1024.0 * 1048576.0)
        );
        Ok(())
    }

    #[test]
    fn ingress_found_through_the_selecting_service() -> Result<(), serde_json::Error> {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "testapp", "namespace": "ipaapp"},
            "spec": {"selector": {"matchLabels": {"app": "testapp"}},
                     "template": {"metadata": {"labels": {"app": "testapp"}}}},
        }))?;
        let service = |name: &str, app: &str| -> Result<Arc<Service>, serde_json::Error> {
            Ok(Arc::new(serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ipaapp"},
                "spec": {"selector": {"app": app}},
            }))?))
        };
        let ingress = |name: &str, svc: &str| -> Result<Arc<Ingress>, serde_json::Error> {
            Ok(Arc::new(serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ipaapp"},
                "spec": {"rules": [{"host": "h", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": svc, "port": {"number": 8001}}}}]}}]},
            }))?))
        };
        let deployment = Arc::new(deployment);
        let found = discover_ingresses(
            &[Arc::clone(&deployment)],
            &[
                service("testappsvc", "testapp")?,
                service("other", "other")?,
            ],
            &[
                ingress("zzz", "other")?,
                ingress("testappingress", "testappsvc")?,
            ],
        );
        let id = DeploymentId {
            namespace: "ipaapp".into(),
            deployment: "testapp".into(),
        };
        assert_eq!(found.get(&id).map(String::as_str), Some("testappingress"));
        let two = discover_ingresses(
            &[Arc::clone(&deployment)],
            &[service("testappsvc", "testapp")?],
            &[
                ingress("testappingress", "testappsvc")?,
                ingress("aaa", "testappsvc")?,
            ],
        );
        assert_eq!(
            two.get(&id).map(String::as_str),
            Some("aaa"),
            "first by name"
        );
        let none = discover_ingresses(&[], &[], &[ingress("a", "b")?]);
        assert!(none.is_empty());
        Ok(())
    }
}
