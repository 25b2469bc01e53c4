//! What to write to a Deployment, and how. Pure: patch bodies and the "what changed" diff.
//!
//! Replicas go through the `scale` subresource; requests/limits through a strategic-merge patch whose
//! `containers` list is keyed on `name` by the apiserver. Neither body carries a selector or any other field
//! we don't own, and both carry the `resourceVersion` we decided on, so a concurrent change by someone else
//! turns our write into a 409 instead of silently overriding them.

use ipa_core::{ContainerRecommendation, ContainerSnapshot, Resources};
use serde_json::{Map, Value, json};

/// Merge patch for the scale subresource.
pub fn scale_patch(replicas: u32, resource_version: Option<&str>) -> Value {
    let mut patch = json!({ "spec": { "replicas": replicas } });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

fn resources_json(r: &Resources) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(cpu) = r.cpu {
        m.insert("cpu".into(), Value::String(cpu.to_string()));
    }
    if let Some(memory) = r.memory {
        m.insert("memory".into(), Value::String(memory.to_string()));
    }
    m
}

/// One container's entry of a strategic-merge `containers` list: its name (the merge key) and the requests and
/// limits that are set in `c`, nothing else. Shared by the template patch and the in-place resize.
pub(crate) fn container_resources(c: &ContainerRecommendation) -> Value {
    let mut resources = Map::new();
    let requests = resources_json(&c.requests);
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    let limits = resources_json(&c.limits);
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    json!({ "name": c.name, "resources": resources })
}

/// Strategic-merge patch setting requests/limits of the given containers (by name) and nothing else.
pub fn resources_patch(
    changes: &[ContainerRecommendation],
    resource_version: Option<&str>,
) -> Value {
    let containers: Vec<Value> = changes.iter().map(container_resources).collect();
    let mut patch = json!({ "spec": { "template": { "spec": { "containers": containers } } } });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

/// True when a field set in `desired` has another value in `current` (an unset field means "leave it").
pub(crate) fn differs(desired: &Resources, current: &Resources) -> bool {
    desired.cpu.is_some_and(|v| Some(v) != current.cpu)
        || desired.memory.is_some_and(|v| Some(v) != current.memory)
}

/// The subset of `desired` that differs from the Deployment's current settings, restricted to containers the
/// Deployment actually has. A field left `None` in `desired` means "leave as it is".
pub fn resource_changes(
    current: &[ContainerSnapshot],
    desired: &[ContainerRecommendation],
) -> Vec<ContainerRecommendation> {
    desired
        .iter()
        .filter_map(|d| {
            let c = current.iter().find(|c| c.name == d.name)?;
            (differs(&d.requests, &c.requests) || differs(&d.limits, &c.limits)).then(|| d.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::{Bytes, CpuMillis};

    fn container(name: &str, cpu: u64) -> ContainerSnapshot {
        ContainerSnapshot {
            name: name.into(),
            requests: Resources {
                cpu: Some(CpuMillis(cpu)),
                memory: Some(Bytes::from_mib(128)),
            },
            limits: Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        }
    }

    fn want(name: &str, cpu: u64) -> ContainerRecommendation {
        ContainerRecommendation {
            name: name.into(),
            requests: Resources {
                cpu: Some(CpuMillis(cpu)),
                memory: None,
            },
            limits: Resources {
                cpu: None,
                memory: Some(Bytes::from_mib(256)),
            },
        }
    }

    #[test]
    fn scale_patch_is_replicas_only() {
        assert_eq!(
            scale_patch(3, Some("42")),
            json!({"spec": {"replicas": 3}, "metadata": {"resourceVersion": "42"}})
        );
    }

    #[test]
    fn resources_patch_is_keyed_on_name_and_has_no_selector() {
        let patch = resources_patch(&[want("app", 250)], Some("7"));
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "7"},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}}
                ]}}}
            })
        );
        assert!(!patch.to_string().contains("selector"));
    }

    #[test]
    fn only_changed_known_containers_are_patched() {
        let current = vec![container("app", 250), container("sidecar", 100)];
        let desired = vec![
            ContainerRecommendation {
                name: "app".into(),
                requests: Resources {
                    cpu: Some(CpuMillis(250)),
                    memory: Some(Bytes::from_mib(128)),
                },
                limits: Resources::default(),
            },
            want("sidecar", 200),
            want("ghost", 1),
        ];
        let changes = resource_changes(&current, &desired);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "sidecar");
    }
}
