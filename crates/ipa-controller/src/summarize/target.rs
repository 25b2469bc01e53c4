//! One target as the API shows it: its replicas, containers, pods and recent Events.

use std::collections::{BTreeMap, BTreeSet};

use ipa_core::{Bytes, ContainerSnapshot, CpuMillis, EventSummary, Resources, TargetRef};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::IpaGroup;
use crate::in_place::{PodView, Sizes};
use crate::read::cluster::NamespaceView;
use crate::read::slim::{DeploymentView, EventView};
use crate::reconcile::MANAGER;
use crate::summarize::snapshot::TargetInfo;

fn parse_resources(r: Option<&BTreeMap<String, Quantity>>) -> Resources {
    Resources {
        cpu: r
            .and_then(|m| m.get("cpu"))
            .and_then(|q| q.0.parse::<CpuMillis>().ok()),
        memory: r
            .and_then(|m| m.get("memory"))
            .and_then(|q| q.0.parse::<Bytes>().ok()),
    }
}

/// The pod template's containers with their requests and limits (usage is filled in from Prometheus later).
pub fn containers_of(d: &DeploymentView) -> Vec<ContainerSnapshot> {
    d.containers()
        .iter()
        .map(|c| {
            let res = c.resources.as_ref();
            ContainerSnapshot {
                name: c.name.clone(),
                requests: parse_resources(res.and_then(|r| r.requests.as_ref())),
                limits: parse_resources(res.and_then(|r| r.limits.as_ref())),
                cpu_cores: None,
                memory_bytes: None,
            }
        })
        .collect()
}

/// Each container's requests and limits as most of the running pods have them (ties: the larger request), where
/// pods were read; the template's where not. In place, pods and template part ways, and the replica rule must
/// divide usage by what the pods really request.
pub fn running_sizes(containers: &mut [ContainerSnapshot], pods: &[PodView]) {
    for c in containers.iter_mut() {
        let mut counts: Vec<(Sizes, usize)> = Vec::new();
        let sizes = pods
            .iter()
            .filter(|p| !p.terminating)
            .flat_map(|p| &p.containers);
        for size in sizes.filter(|pc| pc.name == c.name).map(|pc| pc.spec) {
            match counts.iter_mut().find(|(s, _)| *s == size) {
                Some((_, n)) => *n += 1,
                None => counts.push((size, 1)),
            }
        }
        let most = counts
            .into_iter()
            .max_by_key(|(s, n)| (*n, s.requests.cpu, s.requests.memory));
        if let Some((size, _)) = most {
            c.requests = size.requests;
            c.limits = size.limits;
        }
    }
}

/// The names of the Deployment's ReplicaSets and pods, from the owner references read this cycle.
fn owned_objects(
    view: Option<&NamespaceView>,
    deployment: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let Some(NamespaceView {
        replica_sets: Some(rs),
        pods: Some(p),
        ..
    }) = view
    else {
        return Default::default();
    };
    let replica_sets: BTreeSet<String> = rs
        .get(deployment)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let pods = replica_sets
        .iter()
        .filter_map(|r| p.get(r))
        .flatten()
        .cloned()
        .collect();
    (replica_sets, pods)
}

/// What the API says about one found target.
pub fn target_info(
    group: &IpaGroup,
    deployment: &DeploymentView,
    view: Option<&NamespaceView>,
    managed: Option<Vec<String>>,
    events_since: i64,
) -> TargetInfo {
    let (replica_sets, pods) = owned_objects(view, &group.deployment);
    let mut objects = pods.clone();
    objects.extend(replica_sets);
    let events = view
        .map(|v| {
            let relevant = std::iter::once(&group.deployment)
                .chain(objects.iter())
                .filter_map(|name| v.events.get(name))
                .flatten();
            events_for(relevant, &group.deployment, &objects, events_since)
        })
        .unwrap_or_default();
    let status = deployment.status.as_ref();
    TargetInfo {
        target: TargetRef {
            namespace: group.namespace.clone(),
            deployment: group.deployment.clone(),
        },
        ingress: group.ingress.clone().filter(|i| !i.is_empty()),
        custom_demand: group.demand_query().is_some(),
        replicas: deployment.spec.replicas.unwrap_or(1).max(0) as u32,
        ready_replicas: status.map(|s| s.ready_replicas.unwrap_or(0).max(0) as u32),
        containers: containers_of(deployment),
        managed,
        pods,
        events,
    }
}

/// Events about the Deployment, its ReplicaSets and its pods within the window, deduplicated by
/// (type, reason, message with the object's name replaced) and newest first.
pub fn events_for<'a>(
    events: impl IntoIterator<Item = &'a EventView>,
    deployment: &str,
    objects: &BTreeSet<String>,
    since: i64,
) -> Vec<EventSummary> {
    let mut merged: BTreeMap<(String, String, String), EventSummary> = BTreeMap::new();
    for e in events {
        if e.reporting_component.as_deref() == Some(MANAGER) {
            continue; // our own "Scaled"/"Resized" events are not evidence about the workload
        }
        let object = e.involved_object.name.as_deref().unwrap_or("");
        let last_seen = e.last_seen();
        if (object != deployment && !objects.contains(object)) || last_seen < since {
            continue;
        }
        let kind = e.type_.clone().unwrap_or_else(|| "Normal".into());
        let reason = e.reason.clone().unwrap_or_default();
        let message: String = e
            .message
            .clone()
            .unwrap_or_default()
            .replace(object, "<pod>")
            .chars()
            .take(200)
            .collect();
        let count = e.count.unwrap_or(1).max(1) as u32;
        merged
            .entry((kind.clone(), reason.clone(), message.clone()))
            .and_modify(|s| {
                s.count = s.count.saturating_add(count);
                s.last_seen = s.last_seen.max(last_seen);
            })
            .or_insert(EventSummary {
                kind,
                reason,
                message,
                count,
                last_seen,
            });
    }
    let mut out: Vec<EventSummary> = merged.into_values().collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    out.truncate(10);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deduplicated_and_filtered() {
        let ev = |object: &str, reason: &str, msg: &str, count: i32, at: i64| EventView {
            involved_object: crate::read::slim::InvolvedObject {
                name: Some(object.into()),
            },
            reason: Some(reason.into()),
            message: Some(msg.replace("{}", object)),
            count: Some(count),
            type_: Some("Warning".into()),
            last_timestamp: jiff::Timestamp::from_second(at)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            ..Default::default()
        };
        let events = vec![
            ev("app-1-a", "OOMKilling", "container in {} killed", 1, 100),
            ev("app-1-b", "OOMKilling", "container in {} killed", 2, 120),
            ev("other-1-a", "OOMKilling", "x", 1, 120),
            ev("app-1-a", "Old", "old", 1, 10),
        ];
        let objects: BTreeSet<String> = ["app-1-a".to_string(), "app-1-b".to_string()].into();
        let out = events_for(&events, "app", &objects, 50);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 3);
        assert_eq!(out[0].last_seen, 120);
        assert_eq!(out[0].message, "container in <pod> killed");
    }
}

#[cfg(test)]
mod running_sizes_tests {
    use super::*;
    use crate::in_place::PodContainer;

    fn pod(name: &str, cpu: u64, terminating: bool) -> PodView {
        let spec = Sizes {
            requests: Resources {
                cpu: Some(CpuMillis(cpu)),
                memory: None,
            },
            limits: Resources::default(),
        };
        PodView {
            name: name.into(),
            terminating,
            containers: vec![PodContainer {
                name: "app".into(),
                spec,
                actual: None,
            }],
            ..PodView::default()
        }
    }

    #[test]
    fn the_size_most_pods_run_wins_over_the_template() {
        let template = ContainerSnapshot {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(100)),
                memory: None,
            },
            limits: Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        };
        let mut containers = vec![template.clone()];
        let pods = [
            pod("a", 300, false),
            pod("b", 300, false),
            pod("c", 100, false),
            pod("d", 900, true),
        ];
        running_sizes(&mut containers, &pods);
        assert_eq!(containers[0].requests.cpu, Some(CpuMillis(300)));
        let mut untouched = vec![template.clone()];
        running_sizes(&mut untouched, &[]);
        assert_eq!(untouched, vec![template]);
    }
}
