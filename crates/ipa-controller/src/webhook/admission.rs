//! The admission decision, pure: a Pod CREATE review in, a JSON patch out. A pod of a Deployment that an IPA
//! resizes in place is born at the size the controller last brought that Deployment's running pods to, so a
//! scale-up or a replaced pod does not start at the template's size (which IPA never writes in place) and need a
//! resize a moment later.
//!
//! Rules, and why:
//! - a pod is matched to its Deployment through its controlling ReplicaSet's name, which the Deployment
//!   controller makes `<deployment>-<pod-template-hash>`: no API call on the admission path;
//! - only the containers IPA manages, and only the fields it sets, are changed; everything else is the template's;
//! - a pod whose merged requests would exceed its limits is left at the template's size: an invalid pod is
//!   refused by the apiserver after the webhook, and `failurePolicy: Ignore` does not cover that;
//! - every pod of a sized target gets the annotation [`ANNOTATION`] saying what was done (also when nothing
//!   had to change), which is how the controller tells a pod the webhook saw from one it did not;
//! - the answer is always "allowed": the webhook sizes pods, it never refuses one.

use ipa_core::{ContainerRecommendation, Resources};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Map, Value, json};

use crate::in_place::{Sizes, pod_sizes};

/// The annotation the webhook puts on every pod of a sized target: which IPA sized it, and what changed.
pub const ANNOTATION: &str = "ipa.shafinhasnat.me/admission";

/// The size new pods of one target get, and which IPA says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSize {
    /// `<namespace>/<name>` of the IPA.
    pub ipa: String,
    /// The managed containers' requests/limits; a field left `None` is the template's.
    pub containers: Vec<ContainerRecommendation>,
}

/// The Deployment a pod belongs to: its controlling ReplicaSet's name minus `-<pod-template-hash>`.
pub fn deployment_of(pod: &Pod) -> Option<&str> {
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")?;
    owner
        .name
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
}

/// What the webhook does with one container: its merged size and a word on what changed, or `None` when it has
/// nothing to change.
fn sized_container(
    container: &Container,
    desired: &ContainerRecommendation,
) -> Option<(Sizes, String)> {
    let template = container
        .resources
        .as_ref()
        .map(pod_sizes)
        .unwrap_or_default();
    let merge = |d: Resources, t: Resources| Resources {
        cpu: d.cpu.or(t.cpu),
        memory: d.memory.or(t.memory),
    };
    let merged = Sizes {
        requests: merge(desired.requests, template.requests),
        limits: merge(desired.limits, template.limits),
    };
    if merged == template {
        return None;
    }
    let words = changes(&template, &merged);
    Some((merged, format!("{}: {}", container.name, words.join(", "))))
}

/// One field of a container's size, as the API writes it.
type Field = fn(&Sizes) -> Option<String>;

/// `field from→to` for each field `merged` changes.
fn changes(template: &Sizes, merged: &Sizes) -> Vec<String> {
    let fields: [(&str, Field); 4] = [
        ("requests.cpu", |s| s.requests.cpu.map(|v| v.to_string())),
        ("requests.memory", |s| {
            s.requests.memory.map(|v| v.to_string())
        }),
        ("limits.cpu", |s| s.limits.cpu.map(|v| v.to_string())),
        ("limits.memory", |s| s.limits.memory.map(|v| v.to_string())),
    ];
    fields
        .iter()
        .filter_map(|(field, get)| {
            let (from, to) = (get(template), get(merged));
            (from != to).then(|| {
                let from = from.unwrap_or_else(|| "unset".into());
                format!("{field} {from}→{}", to.unwrap_or_default())
            })
        })
        .collect()
}

/// True when no request exceeds its limit (the apiserver refuses such a pod).
fn valid(s: &Sizes) -> bool {
    let cpu_ok = match (s.requests.cpu, s.limits.cpu) {
        (Some(r), Some(l)) => r <= l,
        _ => true,
    };
    let memory_ok = match (s.requests.memory, s.limits.memory) {
        (Some(r), Some(l)) => r <= l,
        _ => true,
    };
    cpu_ok && memory_ok
}

fn quantities(r: &Resources) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(cpu) = r.cpu {
        m.insert("cpu".into(), Value::String(cpu.to_string()));
    }
    if let Some(memory) = r.memory {
        m.insert("memory".into(), Value::String(memory.to_string()));
    }
    m
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The operations that set one container's requests and limits to `merged`. `add` on an existing member
/// replaces it, so each quantity is one operation, and a missing map is added whole.
fn container_ops(index: usize, container: &Container, merged: &Sizes) -> Vec<PatchOperation> {
    let base = ["spec".to_string(), "containers".into(), index.to_string()];
    let path = |tail: &[&str]| {
        PointerBuf::from_tokens(base.iter().map(String::as_str).chain(tail.iter().copied()))
    };
    let Some(resources) = container.resources.as_ref() else {
        let mut whole = Map::new();
        for (side, values) in [("requests", &merged.requests), ("limits", &merged.limits)] {
            let q = quantities(values);
            if !q.is_empty() {
                whole.insert(side.into(), Value::Object(q));
            }
        }
        return vec![add(path(&["resources"]), Value::Object(whole))];
    };
    let mut ops = Vec::new();
    for (side, values, present) in [
        ("requests", &merged.requests, resources.requests.is_some()),
        ("limits", &merged.limits, resources.limits.is_some()),
    ] {
        let q = quantities(values);
        if q.is_empty() {
            continue;
        }
        if !present {
            ops.push(add(path(&["resources", side]), Value::Object(q)));
            continue;
        }
        for (name, value) in q {
            ops.push(add(path(&["resources", side, &name]), value));
        }
    }
    ops
}

/// The patch that sizes `pod` to `size`, and the annotation's text. Containers whose merged size would be
/// invalid leave the whole pod at the template's size (a partial resize could change its QoS class).
pub fn size_pod(pod: &Pod, size: &PodSize) -> (Vec<PatchOperation>, String) {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut ops = Vec::new();
    let mut words = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let Some(desired) = size.containers.iter().find(|d| d.name == container.name) else {
            continue;
        };
        let Some((merged, word)) = sized_container(container, desired) else {
            continue;
        };
        if !valid(&merged) {
            let why = format!(
                "not sized by IPA {}: {} would request more than its limit; template size kept",
                size.ipa, container.name
            );
            return (Vec::new(), why);
        }
        ops.extend(container_ops(index, container, &merged));
        words.push(word);
    }
    let note = if words.is_empty() {
        format!("sized by IPA {}: already at its size", size.ipa)
    } else {
        format!("sized by IPA {}: {}", size.ipa, words.join("; "))
    };
    (ops, note)
}

/// The operation that records `note` in the pod's [`ANNOTATION`].
fn annotation_op(pod: &Pod, note: String) -> PatchOperation {
    if pod.metadata.annotations.is_none() {
        let path = PointerBuf::from_tokens(["metadata", "annotations"]);
        return add(path, json!({ ANNOTATION: note }));
    }
    add(
        PointerBuf::from_tokens(["metadata", "annotations", ANNOTATION]),
        Value::String(note),
    )
}

/// The webhook's answer to one review: always allowed; for a pod of a sized target, with the patch that sizes
/// it and records what was done. `size_of(namespace, deployment)` says what size a target's new pods get.
pub fn admit(
    request: &AdmissionRequest<Pod>,
    size_of: impl Fn(&str, &str) -> Option<PodSize>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation != Operation::Create {
        return response;
    }
    let Some(pod) = request.object.as_ref() else {
        return response;
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref());
    let size = namespace
        .zip(deployment_of(pod))
        .and_then(|(ns, deployment)| size_of(ns, deployment));
    let Some(size) = size else {
        return response;
    };
    let (mut ops, note) = size_pod(pod, &size);
    ops.push(annotation_op(pod, note));
    match response.clone().with_patch(Patch(ops)) {
        Ok(patched) => patched,
        Err(e) => {
            tracing::warn!(error = %e, "admission patch could not be serialised; pod admitted unchanged");
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::{Bytes, CpuMillis};
    use serde_json::json;

    fn review(
        pod: Value,
        operation: &str,
    ) -> Result<AdmissionRequest<Pod>, Box<dyn std::error::Error>> {
        let review: kube::core::admission::AdmissionReview<Pod> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod, "dryRun": false
            }
        }))?;
        Ok(review.try_into()?)
    }

    fn pod(resources: Value, annotations: Option<Value>) -> Value {
        let mut metadata = json!({
            "generateName": "web-7d9f8b6c5-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
                                 "uid": "1", "controller": true}]
        });
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        json!({"metadata": metadata, "spec": {"containers": [
            {"name": "sidecar", "image": "s", "resources": {"requests": {"cpu": "10m"}}},
            {"name": "app", "image": "a", "resources": resources}
        ]}})
    }

    fn size(cpu: u64, memory_mib: u64, limit_mib: Option<u64>) -> PodSize {
        PodSize {
            ipa: "shop/ipa".into(),
            containers: vec![ContainerRecommendation {
                name: "app".into(),
                requests: Resources {
                    cpu: Some(CpuMillis(cpu)),
                    memory: Some(Bytes::from_mib(memory_mib)),
                },
                limits: Resources {
                    cpu: None,
                    memory: limit_mib.map(Bytes::from_mib),
                },
            }],
        }
    }

    fn sized_web(ns: &str, deployment: &str, s: &PodSize) -> Option<PodSize> {
        (ns == "shop" && deployment == "web").then(|| s.clone())
    }

    /// The patch of a response, applied to `pod`.
    fn patched(
        pod: &Value,
        response: &AdmissionResponse,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        let ops: Patch = serde_json::from_slice(response.patch.as_deref().ok_or("no patch")?)?;
        let mut out = pod.clone();
        json_patch::patch(&mut out, &ops)?;
        Ok(out)
    }

    #[test]
    fn a_new_pod_gets_the_managed_containers_size_and_an_annotation()
    -> Result<(), Box<dyn std::error::Error>> {
        let original = pod(
            json!({"requests": {"cpu": "200m", "memory": "80Mi"}, "limits": {"memory": "160Mi"}}),
            None,
        );
        let want = size(400, 96, Some(192));
        let response = admit(&review(original.clone(), "CREATE")?, |ns, d| {
            sized_web(ns, d, &want)
        });
        assert!(response.allowed);
        let pod = patched(&original, &response)?;
        assert_eq!(
            pod["spec"]["containers"][1]["resources"],
            json!({"requests": {"cpu": "400m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}})
        );
        assert_eq!(
            pod["spec"]["containers"][0], original["spec"]["containers"][0],
            "unmanaged container"
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "sized by IPA shop/ipa: app: requests.cpu 200m→400m, requests.memory 80Mi→96Mi, limits.memory 160Mi→192Mi"
        );
        Ok(())
    }

    #[test]
    fn missing_maps_are_added_and_existing_annotations_kept()
    -> Result<(), Box<dyn std::error::Error>> {
        for resources in [json!(null), json!({}), json!({"requests": {"cpu": "100m"}})] {
            let mut original = pod(resources.clone(), Some(json!({"keep": "me"})));
            if resources.is_null() {
                original["spec"]["containers"][1]
                    .as_object_mut()
                    .ok_or("container")?
                    .remove("resources");
            }
            let want = size(300, 64, None);
            let response = admit(&review(original.clone(), "CREATE")?, |ns, d| {
                sized_web(ns, d, &want)
            });
            let pod = patched(&original, &response)?;
            assert_eq!(
                pod["spec"]["containers"][1]["resources"]["requests"],
                json!({"cpu": "300m", "memory": "64Mi"}),
                "{resources}"
            );
            assert_eq!(pod["metadata"]["annotations"]["keep"], "me");
            assert!(pod["metadata"]["annotations"][ANNOTATION].is_string());
        }
        Ok(())
    }

    #[test]
    fn a_pod_already_at_size_is_only_annotated() -> Result<(), Box<dyn std::error::Error>> {
        let original = pod(json!({"requests": {"cpu": "400m", "memory": "96Mi"}}), None);
        let want = size(400, 96, None);
        let response = admit(&review(original.clone(), "CREATE")?, |ns, d| {
            sized_web(ns, d, &want)
        });
        let pod = patched(&original, &response)?;
        assert_eq!(pod["spec"], original["spec"]);
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "sized by IPA shop/ipa: already at its size"
        );
        Ok(())
    }

    #[test]
    fn a_request_above_the_templates_limit_keeps_the_template_size()
    -> Result<(), Box<dyn std::error::Error>> {
        let original = pod(
            json!({"requests": {"memory": "80Mi"}, "limits": {"memory": "100Mi"}}),
            None,
        );
        // 128Mi requested, no new limit: the template's 100Mi limit would be below it.
        let want = size(400, 128, None);
        let response = admit(&review(original.clone(), "CREATE")?, |ns, d| {
            sized_web(ns, d, &want)
        });
        let pod = patched(&original, &response)?;
        assert_eq!(pod["spec"], original["spec"]);
        let note = pod["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap_or_default();
        assert!(
            note.starts_with("not sized by IPA shop/ipa: app would request more than its limit"),
            "{note}"
        );
        Ok(())
    }

    #[test]
    fn other_pods_and_operations_pass_untouched() -> Result<(), Box<dyn std::error::Error>> {
        let want = size(400, 96, None);
        let sized = |ns: &str, d: &str| sized_web(ns, d, &want);
        let original = pod(json!({}), None);
        // Not a target.
        let none = |_: &str, _: &str| None;
        assert!(
            admit(&review(original.clone(), "CREATE")?, none)
                .patch
                .is_none()
        );
        // Not a CREATE.
        assert!(
            admit(&review(original.clone(), "UPDATE")?, sized)
                .patch
                .is_none()
        );
        // A bare pod (no ReplicaSet), and a ReplicaSet whose name does not end in the hash.
        let mut bare = original.clone();
        bare["metadata"]
            .as_object_mut()
            .ok_or("metadata")?
            .remove("ownerReferences");
        assert!(admit(&review(bare, "CREATE")?, sized).patch.is_none());
        let mut other = original;
        other["metadata"]["ownerReferences"][0]["name"] = json!("web-other");
        assert!(admit(&review(other, "CREATE")?, sized).patch.is_none());
        Ok(())
    }

    #[test]
    fn the_deployment_is_the_replica_sets_name_without_the_hash() -> Result<(), serde_json::Error> {
        let pod: Pod = serde_json::from_value(pod(json!({}), None))?;
        assert_eq!(deployment_of(&pod), Some("web"));
        let mut p = pod.clone();
        if let Some(o) = p.metadata.owner_references.as_mut() {
            o[0].name = "my-web-app-7d9f8b6c5".into();
        }
        assert_eq!(deployment_of(&p), Some("my-web-app"));
        if let Some(o) = p.metadata.owner_references.as_mut() {
            o[0].controller = None;
        }
        assert_eq!(deployment_of(&p), None, "not controlled by it");
        Ok(())
    }
}
