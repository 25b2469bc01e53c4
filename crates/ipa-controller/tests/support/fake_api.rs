//! An in-memory Kubernetes API for scenario tests: a `tower` service behind a real `kube::Client`, so the
//! controller's own request building, paging, parsing and patch bodies run unchanged — only the network is gone.
//! It serves the few paths a cycle uses and records every request; anything else is a 404 the test will see.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct State {
    /// (namespace, name) → Deployment.
    deployments: BTreeMap<(String, String), Value>,
    /// (namespace, name) → Pod (metadata only is served).
    pods: BTreeMap<(String, String), Value>,
    replica_sets: BTreeMap<(String, String), Value>,
    namespaces: BTreeMap<String, Value>,
    secrets: BTreeMap<(String, String), Value>,
    hpas: BTreeMap<(String, String), Value>,
    /// Other IPAs in the cluster (the one under test is not listed).
    ipas: BTreeMap<(String, String), Value>,
    /// The last status written per IPA (namespace, name).
    statuses: BTreeMap<(String, String), Value>,
    seen: Vec<Seen>,
    next_rv: u64,
    /// Writes to the Deployment that the "deployment controller" makes after each scale (bumping its
    /// resourceVersion, as the real one does when it updates status).
    bump_after_scale: bool,
    /// A CPU request someone else sets on the template right after our next scale.
    their_cpu_after_scale: Option<String>,
}

/// The fake API server; clone it freely (all clones share one state).
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, body)
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    respond(code, body)
}

fn list(items: Vec<Value>) -> Value {
    json!({"metadata": {"resourceVersion": "1"}, "items": items})
}

impl FakeApi {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is still readable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `kube::Client` whose requests this fake serves.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.serve(request).await) }
        });
        kube::Client::new(service, "default")
    }

    pub fn bump_after_scale(&self) {
        self.state().bump_after_scale = true;
    }

    /// Someone else changes the template's CPU request right after our next scale (between our read and our
    /// resize), as a `kubectl set resources` racing the controller would.
    pub fn their_change_after_scale(&self, cpu: &str) {
        self.state().their_cpu_after_scale = Some(cpu.into());
    }

    fn next_rv(state: &mut State) -> String {
        state.next_rv += 1;
        state.next_rv.to_string()
    }

    pub fn add_namespace(&self, name: &str, annotations: Value) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations}});
        self.state().namespaces.insert(name.into(), ns);
    }

    /// A HorizontalPodAutoscaler (autoscaling/v2) on Deployment `deployment`.
    pub fn add_hpa(&self, ns: &str, name: &str, deployment: &str) {
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                "minReplicas": 1, "maxReplicas": 10}});
        self.state().hpas.insert((ns.into(), name.into()), hpa);
    }

    pub fn remove_hpa(&self, ns: &str, name: &str) {
        self.state().hpas.remove(&(ns.into(), name.into()));
    }

    /// Another IPA, created at `created` (RFC 3339), listing `deployment` in its group.
    pub fn add_other_ipa(&self, ns: &str, name: &str, deployment: &str, created: &str) {
        let ipa = json!({"apiVersion": "ipa.shafinhasnat.me/v1alpha1", "kind": "IPA",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"metadata": {"prometheusUri": "http://prometheus", "ipaGroup": [
                {"deployment": deployment, "namespace": ns}]}}});
        self.state().ipas.insert((ns.into(), name.into()), ipa);
    }

    /// A Secret with one key.
    pub fn add_secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        let data = k8s_openapi::ByteString(value.as_bytes().to_vec());
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "data": {key: data}});
        self.state()
            .secrets
            .insert((ns.into(), name.into()), secret);
    }

    /// A Deployment with one container `app` and its ReplicaSet and `replicas` ready pods.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: u32, cpu_request: &str) {
        let mut state = self.state();
        let rv = Self::next_rv(&mut state);
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": rv},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": "app", "image": "app", "resources": {
                        "requests": {"cpu": cpu_request, "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas}
        });
        state
            .deployments
            .insert((ns.into(), name.into()), deployment);
        let rs = format!("{name}-5d8f7c9b4");
        state
            .replica_sets
            .insert((ns.into(), rs.clone()), owned(ns, &rs, "Deployment", name));
        for i in 0..replicas {
            let pod = format!("{rs}-p{i}");
            state
                .pods
                .insert((ns.into(), pod.clone()), owned(ns, &pod, "ReplicaSet", &rs));
        }
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Value {
        self.state()
            .deployments
            .get(&(ns.into(), name.into()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn replicas(&self, ns: &str, name: &str) -> Option<u64> {
        self.deployment(ns, name)["spec"]["replicas"].as_u64()
    }

    pub fn cpu_request(&self, ns: &str, name: &str) -> Option<String> {
        let d = self.deployment(ns, name);
        let cpu = &d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"];
        cpu.as_str().map(str::to_string)
    }

    /// The last status written for an IPA.
    pub fn status(&self, ns: &str, name: &str) -> Value {
        self.state()
            .statuses
            .get(&(ns.into(), name.into()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Requests seen so far with `method` whose path ends with `suffix`.
    pub fn seen(&self, method: Method, suffix: &str) -> Vec<Seen> {
        let state = self.state();
        state
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .cloned()
            .collect()
    }

    async fn serve(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let mut state = self.state();
        state.seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        route(&mut state, &parts.method, &segments, body)
    }
}

/// Metadata of an object controlled by `kind/owner`.
fn owned(ns: &str, name: &str, kind: &str, owner: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true}]}})
}

fn in_namespace(map: &BTreeMap<(String, String), Value>, ns: &str) -> Vec<Value> {
    map.iter()
        .filter(|((n, _), _)| n == ns)
        .map(|(_, v)| v.clone())
        .collect()
}

fn route(state: &mut State, method: &Method, path: &[&str], body: Value) -> Response<Full<Bytes>> {
    match (method.as_str(), path) {
        ("GET", ["api", "v1", "namespaces", ns]) => match state.namespaces.get(*ns) {
            Some(n) => ok(n.clone()),
            None => status(StatusCode::NOT_FOUND, "NotFound", "namespace not found"),
        },
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "deployments"]) => {
            ok(list(in_namespace(&state.deployments, ns)))
        }
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "replicasets"]) => {
            ok(list(in_namespace(&state.replica_sets, ns)))
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => ok(list(in_namespace(&state.pods, ns))),
        ("GET", ["api", "v1", "namespaces", _, "events"]) => ok(list(Vec::new())),
        (
            "GET",
            [
                "apis",
                "autoscaling",
                "v2",
                "namespaces",
                ns,
                "horizontalpodautoscalers",
            ],
        ) => ok(list(in_namespace(&state.hpas, ns))),
        ("GET", ["apis", "ipa.shafinhasnat.me", "v1alpha1", "ipas"]) => {
            ok(list(state.ipas.values().cloned().collect()))
        }
        ("GET", ["api", "v1", "namespaces", ns, "secrets", name]) => {
            match state.secrets.get(&(ns.to_string(), name.to_string())) {
                Some(secret) => ok(secret.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound", "secret not found"),
            }
        }
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            match state.deployments.get(&(ns.to_string(), name.to_string())) {
                Some(d) => ok(d.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound", "deployment not found"),
            }
        }
        (
            "PATCH",
            [
                "apis",
                "apps",
                "v1",
                "namespaces",
                ns,
                "deployments",
                name,
                "scale",
            ],
        ) => scale(state, ns, name, &body),
        ("PATCH", ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            resize(state, ns, name, &body)
        }
        (
            "PATCH",
            [
                "apis",
                "ipa.shafinhasnat.me",
                "v1alpha1",
                "namespaces",
                ns,
                "ipas",
                name,
                "status",
            ],
        ) => {
            state
                .statuses
                .insert((ns.to_string(), name.to_string()), body["status"].clone());
            ok(json!({}))
        }
        ("POST" | "PATCH", ["apis", "events.k8s.io", "v1", "namespaces", ..]) => ok(body),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the fake API does not serve this path",
        ),
    }
}

/// A write whose `metadata.resourceVersion` is not the object's current one is a 409, as on a real apiserver.
fn stale(current: &Value, body: &Value) -> bool {
    let wanted = &body["metadata"]["resourceVersion"];
    !wanted.is_null() && *wanted != current["metadata"]["resourceVersion"]
}

fn conflict() -> Response<Full<Bytes>> {
    let message = "Operation cannot be fulfilled: the object has been modified";
    status(StatusCode::CONFLICT, "Conflict", message)
}

fn scale(state: &mut State, ns: &str, name: &str, body: &Value) -> Response<Full<Bytes>> {
    let key = (ns.to_string(), name.to_string());
    let Some(current) = state.deployments.get(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "deployment not found");
    };
    if stale(&current, body) {
        return conflict();
    }
    let replicas = body["spec"]["replicas"].clone();
    let rv = FakeApi::next_rv(state);
    let after = if state.bump_after_scale {
        FakeApi::next_rv(state)
    } else {
        rv.clone()
    };
    let theirs = state.their_cpu_after_scale.take();
    if let Some(d) = state.deployments.get_mut(&key) {
        d["spec"]["replicas"] = replicas.clone();
        d["metadata"]["resourceVersion"] = json!(after);
        if let Some(cpu) = theirs {
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
                json!(cpu);
        }
    }
    ok(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
        "spec": {"replicas": replicas}, "status": {"replicas": replicas}}))
}

/// Applies a strategic-merge patch of container resources (keyed on the container's name).
fn resize(state: &mut State, ns: &str, name: &str, body: &Value) -> Response<Full<Bytes>> {
    let key = (ns.to_string(), name.to_string());
    let Some(mut current) = state.deployments.get(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "deployment not found");
    };
    if stale(&current, body) {
        return conflict();
    }
    let patched = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(containers) = current["spec"]["template"]["spec"]["containers"].as_array_mut() {
        for p in &patched {
            if let Some(c) = containers.iter_mut().find(|c| c["name"] == p["name"]) {
                merge(&mut c["resources"], &p["resources"]);
            }
        }
    }
    current["metadata"]["resourceVersion"] = json!(FakeApi::next_rv(state));
    state.deployments.insert(key, current.clone());
    ok(current)
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}
