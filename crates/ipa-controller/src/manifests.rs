//! `deploy/install.yaml`, generated: namespace, CRD, RBAC, the controller and agent Deployments, the agent
//! Service, the agent's token Secret and its NetworkPolicy. RBAC is written out by hand here (not derived) so a
//! reviewer reads exactly what is granted.
//!
//! The agent's bearer token lives in the Secret `ipa-agent-token` (key `token`), read by both the agent
//! (`IPA_AGENT_TOKEN`) and the controller (`IPA_AGENT_TOKEN`, sent only to `--agent-url`). The committed
//! `deploy/install.yaml` cannot carry a token (it is public), so its Secret has no data: the agent refuses to listen
//! without one and says how to set it; `ipa manifests --generate-agent-token` fills in a fresh random token.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::Error;
use crate::crd::IPA;

/// Options of `ipa manifests`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestOptions {
    /// Container image of the `ipa` binary.
    #[arg(long, default_value = concat!("ghcr.io/ipa/ipa:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Namespace for the controller and the agent.
    #[arg(long, default_value = "ipa-system")]
    pub namespace: String,
    /// Put a fresh random agent token into the `ipa-agent-token` Secret (re-applying rotates it; restart both
    /// Deployments afterwards). Without it the Secret is empty and must be filled in (see docs/operator.md).
    #[arg(long)]
    pub generate_agent_token: bool,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            image: concat!("ghcr.io/ipa/ipa:", env!("CARGO_PKG_VERSION")).into(),
            namespace: "ipa-system".into(),
            generate_agent_token: false,
        }
    }
}

const CONTROLLER: &str = "ipa-controller";
const AGENT: &str = "ipa-agent";
/// The Secret with the agent's bearer token (key `token`).
pub const AGENT_TOKEN_SECRET: &str = "ipa-agent-token";
const AGENT_PORT: u16 = 8000;
/// The admission webhook: its configuration (which the controller writes the `caBundle` of), Service, port,
/// and the Secret with its certificates.
pub const WEBHOOK_CONFIGURATION: &str = "ipa-controller";
const WEBHOOK_SERVICE: &str = "ipa-controller-webhook";
const WEBHOOK_SECRET: &str = "ipa-controller-webhook-tls";
const WEBHOOK_PORT: u16 = 9443;
/// The name of the one webhook in the configuration.
pub const WEBHOOK_NAME: &str = "pods.ipa.shafinhasnat.me";
/// Seconds the apiserver waits for the webhook before creating the pod without it.
pub const WEBHOOK_TIMEOUT_SECONDS: u32 = 3;

/// 32 random bytes from the OS, hex-encoded.
fn random_token() -> Result<String, Error> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Config(format!("cannot read /dev/urandom for a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn token_env() -> Value {
    json!({ "name": "IPA_AGENT_TOKEN",
            "valueFrom": { "secretKeyRef": { "name": AGENT_TOKEN_SECRET, "key": "token", "optional": true } } })
}

fn labels(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": "ipa", "app.kubernetes.io/component": component })
}

/// The rules the controller needs, and no more: read its CRs and write their status; read, scale and patch
/// Deployments; list ReplicaSets and pods (metadata, for pod → Deployment; in full, for in-place resizes) and
/// Events; resize pods in place (`pods/resize`, which can change nothing but a pod's requests and limits); evict a
/// pod whose node cannot fit its resize (`updateMode: InPlaceOrRecreate`; an eviction respects
/// PodDisruptionBudgets, a delete would not); publish Events; read a target Namespace's
/// `ipa.shafinhasnat.me/allow-from` annotation (cross-namespace opt-in); list the other autoscalers that may act on
/// a target (HPAs, and VPAs and KEDA ScaledObjects where installed), so IPA leaves their side alone; write the
/// `caBundle` of its own webhook configuration, and no other. Rules for CRDs that are not installed are harmless.
pub fn controller_rules() -> Value {
    json!([
        { "apiGroups": ["ipa.shafinhasnat.me"], "resources": ["ipas"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["ipa.shafinhasnat.me"], "resources": ["ipas/status"], "verbs": ["get", "patch"] },
        { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"] },
        { "apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"] },
        { "apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"] },
        { "apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"] },
        { "apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"] },
        { "apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"] },
        { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"] },
        { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
        { "apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"] },
        { "apiGroups": ["autoscaling.k8s.io"], "resources": ["verticalpodautoscalers"], "verbs": ["list"] },
        { "apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"] },
        { "apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
          "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "patch"] }
    ])
}

/// The rules the controller needs in its own namespace: its Lease, and the Secret with the webhook's
/// certificates (created once, then read and replaced on rotation; `create` cannot be limited to a name).
pub fn controller_namespace_rules() -> Value {
    json!([
        { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
          "verbs": ["get", "list", "watch", "create", "patch", "update"] },
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] },
        { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [WEBHOOK_SECRET], "verbs": ["get", "update"] }
    ])
}

/// The webhook configuration: Pod CREATE only; `failurePolicy: Ignore` and a short timeout, so a webhook that is
/// down costs a pod its size at birth, never its creation; only pods of Deployments (`pod-template-hash`) outside
/// the system namespaces and the controller's own, so the webhook sees only pods it might size and never the
/// controller's. `client_config` is where the apiserver calls (a Service, or a URL on a test bed).
pub fn webhook_configuration(
    name: &str,
    client_config: Value,
    exclude_namespaces: &[&str],
) -> Value {
    json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": name, "labels": labels("controller") },
            "webhooks": [{
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
                "reinvocationPolicy": "Never",
                "matchPolicy": "Equivalent",
                "clientConfig": client_config,
                "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                            "resources": ["pods"], "scope": "Namespaced" }],
                "objectSelector": { "matchExpressions": [{ "key": "pod-template-hash", "operator": "Exists" }] },
                "namespaceSelector": { "matchExpressions": [{ "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn", "values": exclude_namespaces }] }
            }] })
}

/// The webhook's Service and configuration as install.yaml has them.
fn webhook_objects(ns: &str) -> Vec<Value> {
    let service = json!({ "service": { "name": WEBHOOK_SERVICE, "namespace": ns,
                                        "path": crate::webhook::PATH, "port": 443 } });
    vec![
        json!({ "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": WEBHOOK_SERVICE, "namespace": ns, "labels": labels("controller") },
                "spec": { "selector": labels("controller"),
                          "ports": [{ "name": "webhook", "port": 443, "targetPort": "webhook" }] } }),
        webhook_configuration(
            WEBHOOK_CONFIGURATION,
            service,
            &["kube-system", "kube-public", "kube-node-lease", ns],
        ),
    ]
}

fn security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" }
    })
}

fn objects(o: &ManifestOptions) -> Result<Vec<Value>, Error> {
    let ns = o.namespace.as_str();
    let crd = serde_json::to_value(IPA::crd()).map_err(|e| Error::Yaml(e.to_string()))?;
    let mut token_secret = json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": AGENT_TOKEN_SECRET, "namespace": ns, "labels": labels("agent"),
                      "annotations": { "ipa.shafinhasnat.me/note":
                          "bearer token of the agent (key: token), read by the agent and the controller; the agent does not start without it" } },
        "type": "Opaque" });
    if o.generate_agent_token {
        token_secret["stringData"] = json!({ "token": random_token()? });
    }
    let mut objects = vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels("namespace") } }),
        crd,
    ];
    objects.extend(controller_rbac(ns));
    objects.push(controller_deployment(o));
    objects.extend(webhook_objects(ns));
    objects.extend(agent_objects(o));
    objects.push(token_secret);
    objects.push(agent_network_policy(ns));
    Ok(objects)
}

/// The controller's ServiceAccount and what it may do: cluster-wide rules, and a Lease in its namespace.
fn controller_rbac(ns: &str) -> Vec<Value> {
    vec![
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": CONTROLLER, "namespace": ns, "labels": labels("controller") } }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": CONTROLLER, "labels": labels("controller") },
                "rules": controller_rules() }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": CONTROLLER, "labels": labels("controller") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER },
                "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": { "name": CONTROLLER, "namespace": ns, "labels": labels("controller") },
                "rules": controller_namespace_rules() }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": { "name": CONTROLLER, "namespace": ns, "labels": labels("controller") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER },
                "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }] }),
    ]
}

fn controller_deployment(o: &ManifestOptions) -> Value {
    let ns = o.namespace.as_str();
    let agent_url = format!("--agent-url=http://{AGENT}.{ns}");
    json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": CONTROLLER, "namespace": ns, "labels": labels("controller") },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": labels("controller") },
                "template": {
                    "metadata": { "labels": labels("controller") },
                    "spec": {
                        "serviceAccountName": CONTROLLER,
                        "containers": [{
                            "name": "controller",
                            "image": o.image,
                            "args": ["controller", "--metrics-listen=0.0.0.0:8080", "--leader-election", agent_url,
                                     format!("--webhook-listen=0.0.0.0:{WEBHOOK_PORT}")],
                            "env": [
                                { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                                { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                                { "name": "IPA_LOG_FORMAT", "value": "json" },
                                token_env()
                            ],
                            "ports": [{ "name": "metrics", "containerPort": 8080 },
                                      { "name": "webhook", "containerPort": WEBHOOK_PORT }],
                            "livenessProbe": { "httpGet": { "path": "/healthz", "port": "metrics" } },
                            "readinessProbe": { "httpGet": { "path": "/readyz", "port": "metrics" } },
                            "resources": { "requests": { "cpu": "50m", "memory": "64Mi" },
                                           "limits": { "memory": "128Mi" } },
                            "securityContext": security_context()
                        }]
                    }
                }
            } })
}

/// The agent's ServiceAccount, Deployment and Service.
fn agent_objects(o: &ManifestOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    vec![
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": AGENT, "namespace": ns, "labels": labels("agent") },
                "automountServiceAccountToken": false }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": AGENT, "namespace": ns, "labels": labels("agent") },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": labels("agent") },
                    "template": {
                        "metadata": { "labels": labels("agent") },
                        "spec": {
                            "serviceAccountName": AGENT,
                            "containers": [{
                                "name": "agent",
                                "image": o.image,
                                "args": ["agent", format!("--listen=0.0.0.0:{AGENT_PORT}")],
                                "env": [{ "name": "GEMINI_API_KEY",
                                          "valueFrom": { "secretKeyRef": { "name": "ipa-agent", "key": "GEMINI_API_KEY", "optional": true } } },
                                        token_env()],
                                "ports": [{ "name": "http", "containerPort": AGENT_PORT }],
                                "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                                "resources": { "requests": { "cpu": "50m", "memory": "64Mi" },
                                               "limits": { "memory": "256Mi" } },
                                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                                "workingDir": "/data",
                                "securityContext": security_context()
                            }],
                            "volumes": [{ "name": "data", "emptyDir": { "sizeLimit": "256Mi" } }]
                        }
                    }
                } }),
        json!({ "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": AGENT, "namespace": ns, "labels": labels("agent") },
                "spec": { "selector": labels("agent"),
                          "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] } }),
    ]
}

fn agent_network_policy(ns: &str) -> Value {
    // Only the controller's pods reach the agent. Kubelet probes come from the node, which NetworkPolicy
    // implementations allow for a pod's own node.
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": AGENT, "namespace": ns, "labels": labels("agent") },
            "spec": { "podSelector": { "matchLabels": labels("agent") },
                      "policyTypes": ["Ingress"],
                      "ingress": [{ "from": [{ "podSelector": { "matchLabels": labels("controller") } }],
                                    "ports": [{ "protocol": "TCP", "port": AGENT_PORT }] }] } })
}

/// The full install manifest as a multi-document YAML string.
pub fn install_yaml(o: &ManifestOptions) -> Result<String, Error> {
    let mut out = String::from(
        "# Generated by `ipa manifests`; do not edit (scripts/check-generated.sh checks for drift).\n",
    );
    for object in objects(o)? {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object).map_err(|e| Error::Yaml(e.to_string()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_has_every_part() -> Result<(), Error> {
        let yaml = install_yaml(&ManifestOptions::default())?;
        for kind in [
            "kind: Namespace",
            "kind: CustomResourceDefinition",
            "kind: ClusterRole",
            "kind: ClusterRoleBinding",
            "kind: Role",
            "kind: RoleBinding",
            "kind: Deployment",
            "kind: Service",
            "kind: Secret",
            "kind: NetworkPolicy",
            "kind: MutatingWebhookConfiguration",
        ] {
            assert!(yaml.contains(kind), "{kind}");
        }
        assert_eq!(yaml.matches("\n---\n").count() + 1, 16);
        Ok(())
    }

    #[test]
    fn the_agent_token_is_wired_to_both_sides_and_never_committed() -> Result<(), Error> {
        let objects = objects(&ManifestOptions::default())?;
        let secret = objects
            .iter()
            .find(|o| o["kind"] == "Secret")
            .cloned()
            .unwrap_or_default();
        assert_eq!(secret["metadata"]["name"], AGENT_TOKEN_SECRET);
        assert!(secret.get("data").is_none() && secret.get("stringData").is_none());
        for name in [CONTROLLER, AGENT] {
            let deployment = objects
                .iter()
                .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
                .cloned()
                .unwrap_or_default();
            let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
            let token = env
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "IPA_AGENT_TOKEN")
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                token["valueFrom"]["secretKeyRef"]["name"], AGENT_TOKEN_SECRET,
                "{name}"
            );
        }
        let generated = objects_with_token()?;
        let a = generated["stringData"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let b = objects_with_token()?["stringData"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        Ok(())
    }

    fn objects_with_token() -> Result<Value, Error> {
        let o = ManifestOptions {
            generate_agent_token: true,
            ..ManifestOptions::default()
        };
        Ok(objects(&o)?
            .into_iter()
            .find(|o| o["kind"] == "Secret")
            .unwrap_or_default())
    }

    #[test]
    fn only_the_controller_reaches_the_agent() -> Result<(), Error> {
        let objects = objects(&ManifestOptions::default())?;
        let policy = objects
            .iter()
            .find(|o| o["kind"] == "NetworkPolicy")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            labels("agent")
        );
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
            labels("controller")
        );
        assert_eq!(policy["spec"]["ingress"].as_array().map(Vec::len), Some(1));
        Ok(())
    }

    #[test]
    fn pods_are_resized_through_the_subresource_only() {
        let rules = controller_rules();
        let verbs_on = |resource: &str| -> Vec<String> {
            rules
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    r["resources"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == resource))
                })
                .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(verbs_on("pods/resize"), ["patch"]);
        // The pods themselves stay read-only: no update, patch or delete of a whole pod.
        assert_eq!(verbs_on("pods"), ["list"]);
    }

    #[test]
    fn the_webhook_never_blocks_pod_creation_and_sees_only_deployment_pods() -> Result<(), Error> {
        let objects = objects(&ManifestOptions::default())?;
        let config = objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .cloned()
            .unwrap_or_default();
        let webhook = &config["webhooks"][0];
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["sideEffects"], "None");
        assert!(webhook["timeoutSeconds"].as_u64().is_some_and(|t| t <= 5));
        assert_eq!(webhook["rules"][0]["operations"], json!(["CREATE"]));
        assert_eq!(webhook["rules"][0]["resources"], json!(["pods"]));
        assert_eq!(
            webhook["objectSelector"]["matchExpressions"][0]["key"],
            "pod-template-hash"
        );
        let excluded = &webhook["namespaceSelector"]["matchExpressions"][0]["values"];
        for ns in ["kube-system", "ipa-system"] {
            assert!(
                excluded
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x == ns)),
                "{ns}"
            );
        }
        assert!(
            webhook["clientConfig"].get("caBundle").is_none(),
            "written at run time"
        );
        let rules = controller_rules();
        let rule = rules
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resources"][0] == "mutatingwebhookconfigurations")
            .cloned()
            .unwrap_or_default();
        assert_eq!(rule["resourceNames"], json!([config["metadata"]["name"]]));
        assert_eq!(rule["verbs"], json!(["get", "patch"]));
        Ok(())
    }

    #[test]
    fn secrets_only_in_the_controllers_namespace_and_only_its_own_by_name() {
        let rules = controller_namespace_rules();
        for rule in rules.as_array().into_iter().flatten() {
            if rule["resources"][0] == "secrets" && rule["verbs"] != json!(["create"]) {
                assert_eq!(rule["resourceNames"], json!([WEBHOOK_SECRET]));
            }
        }
    }

    #[test]
    fn rbac_grants_no_secrets_and_no_wildcards() {
        let rules = controller_rules().to_string();
        assert!(!rules.contains("secrets"));
        assert!(!rules.contains('*'));
        assert!(!rules.contains("delete"));
    }

    #[test]
    fn rbac_reads_the_other_autoscalers_and_nothing_more() {
        let rules = controller_rules();
        for (group, resource) in [
            ("autoscaling", "horizontalpodautoscalers"),
            ("autoscaling.k8s.io", "verticalpodautoscalers"),
            ("keda.sh", "scaledobjects"),
        ] {
            let rule = rules
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["apiGroups"][0] == group && r["resources"][0] == resource)
                .cloned()
                .unwrap_or_default();
            assert_eq!(rule["verbs"], json!(["list"]), "{group}/{resource}");
        }
    }
}
