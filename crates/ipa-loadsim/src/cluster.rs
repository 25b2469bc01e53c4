//! The cluster side: reflectors over the objects the simulation needs, their reduction to observations
//! (pure functions), and what the simulator writes back when a container is OOM-killed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use ipa_core::quantity::{Bytes, CpuMillis};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Node, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::load::DeploymentId;
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
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |name: &str| limits.and_then(|l| l.get(name)).map(|q| q.0.as_str());
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none();
    let started = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container.name))
        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref());
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
