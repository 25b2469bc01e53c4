//! `deploy/install.yaml`, generated: namespace, CRD, RBAC, the controller and agent Deployments and the agent
//! Service. RBAC is written out by hand here (not derived) so a reviewer reads exactly what is granted.

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
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            image: concat!("ghcr.io/ipa/ipa:", env!("CARGO_PKG_VERSION")).into(),
            namespace: "ipa-system".into(),
        }
    }
}

const CONTROLLER: &str = "ipa-controller";
const AGENT: &str = "ipa-agent";

fn labels(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": "ipa", "app.kubernetes.io/component": component })
}

/// The rules the controller needs, and no more: read its CRs and write their status; read, scale and patch
/// Deployments; list ReplicaSets and pods (metadata, for pod → Deployment) and Events; publish Events.
pub fn controller_rules() -> Value {
    json!([
        { "apiGroups": ["ipa.shafinhasnat.me"], "resources": ["ipas"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["ipa.shafinhasnat.me"], "resources": ["ipas/status"], "verbs": ["get", "patch"] },
        { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"] },
        { "apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"] },
        { "apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"] },
        { "apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"] },
        { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] }
    ])
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
    Ok(vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels("namespace") } }),
        crd,
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
                "metadata": { "name": "ipa-controller-leader-election", "namespace": ns, "labels": labels("controller") },
                "rules": [{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                            "verbs": ["get", "list", "watch", "create", "patch", "update"] }] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": { "name": "ipa-controller-leader-election", "namespace": ns, "labels": labels("controller") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ipa-controller-leader-election" },
                "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }] }),
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
                                "args": ["controller", "--metrics-listen=0.0.0.0:8080", "--leader-election"],
                                "env": [
                                    { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                                    { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                                    { "name": "IPA_LOG_FORMAT", "value": "json" }
                                ],
                                "ports": [{ "name": "metrics", "containerPort": 8080 }],
                                "livenessProbe": { "httpGet": { "path": "/healthz", "port": "metrics" } },
                                "readinessProbe": { "httpGet": { "path": "/readyz", "port": "metrics" } },
                                "resources": { "requests": { "cpu": "50m", "memory": "64Mi" },
                                               "limits": { "memory": "128Mi" } },
                                "securityContext": security_context()
                            }]
                        }
                    }
                } }),
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
                                "args": ["agent", "--listen=0.0.0.0:8000"],
                                "env": [{ "name": "GEMINI_API_KEY",
                                          "valueFrom": { "secretKeyRef": { "name": "ipa-agent", "key": "GEMINI_API_KEY", "optional": true } } }],
                                "ports": [{ "name": "http", "containerPort": 8000 }],
                                "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                                "resources": { "requests": { "cpu": "50m", "memory": "64Mi" },
                                               "limits": { "memory": "256Mi" } },
                                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                                "workingDir": "/data",
                                "securityContext": security_context()
                            }],
                            "volumes": [{ "name": "data", "emptyDir": {} }]
                        }
                    }
                } }),
        json!({ "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": AGENT, "namespace": ns, "labels": labels("agent") },
                "spec": { "selector": labels("agent"),
                          "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] } }),
    ])
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
        ] {
            assert!(yaml.contains(kind), "{kind}");
        }
        assert_eq!(yaml.matches("\n---\n").count() + 1, 12);
        Ok(())
    }

    #[test]
    fn rbac_grants_no_secrets_and_no_wildcards() {
        let rules = controller_rules().to_string();
        assert!(!rules.contains("secrets"));
        assert!(!rules.contains('*'));
        assert!(!rules.contains("delete"));
    }
}
