//! The `IPA` custom resource (`ipa.shafinhasnat.me/v1alpha1`).
//!
//! The spec keeps the seed's shape exactly — `spec.metadata.{prometheusUri, llmAgent, ipaGroup[]}` — so the seed's
//! manifests apply unchanged. Everything IPA adds is optional with a safe default: `interval`, `mode`, an agent
//! token, and per group the `ipa_core::Policy` fields (flattened, camelCase) plus a per-group `mode`.

use ipa_core::{Bytes, CpuMillis, GuardState, GuardrailNote, Policy, Source};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod prometheus_auth;
pub mod schema;
pub use prometheus_auth::{BasicAuth, PrometheusAuth};

/// Default decision interval when `spec.metadata.interval` is absent.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 60;
/// Bounds on the interval: faster would hammer Prometheus and the agent, slower is not autoscaling.
pub const MIN_INTERVAL_SECONDS: u64 = 5;
/// Default fast-loop period when `spec.metadata.syncPeriod` is absent: HPA's.
pub const DEFAULT_SYNC_PERIOD_SECONDS: u64 = 15;
pub const MAX_INTERVAL_SECONDS: u64 = 3600;

/// `spec` of an IPA: the seed kept everything under `spec.metadata`, and so do we.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ipa.shafinhasnat.me",
    version = "v1alpha1",
    kind = "IPA",
    plural = "ipas",
    singular = "ipa",
    // `ipa` is also the singular; as a short name it shows in `kubectl api-resources` and wins kubectl's
    // shortcut expansion. `pa` would clash with Istio's PeerAuthentication.
    shortname = "ipa",
    namespaced,
    status = "IpaStatus",
    category = "autoscaling",
    doc = "Intelligent Pod Autoscaler: scales the listed Deployments horizontally and vertically.",
    printcolumn = r#"{"name":"Targets","type":"string","description":"Targets found / listed","jsonPath":".status.targets"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.mode"}"#,
    printcolumn = r#"{"name":"Last Decision","type":"string","jsonPath":".status.lastDecision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct IpaSpec {
    pub metadata: IpaMetadata,
}

/// The seed's `spec.metadata` plus IPA's optional additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::metadata)]
pub struct IpaMetadata {
    /// Base URL of the Prometheus server, e.g. `http://prometheus-server.default.svc`.
    pub prometheus_uri: String,
    /// Credentials and headers for a Prometheus that requires them (bearer token or basic auth from Secrets, a
    /// private CA, a tenant header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_auth: Option<PrometheusAuth>,
    /// Base URL of the IPA agent. Empty: use the built-in recommender in the controller.
    #[serde(default)]
    pub llm_agent: String,
    /// The Deployments to scale.
    pub ipa_group: Vec<IpaGroup>,
    /// The advisory loop's interval (the agent is asked, pods are right-sized) as a Go duration (`30s`, `1m`);
    /// default `60s`, from `5s` to `1h`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_duration"
    )]
    pub interval: Option<kube::core::Duration>,
    /// The fast loop's period (replicas follow the load; no agent is waited for) as a Go duration; default
    /// `15s` (HPA's sync period), from `5s` to `interval`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_duration"
    )]
    pub sync_period: Option<kube::core::Duration>,
    /// `Auto` (apply decisions, the default) or `Recommend` (status only). A group's own `mode` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// How new requests/limits reach the pods: `Template` (the default: a rolling update, the seed's behaviour),
    /// `InPlace` (the running pods are resized, nothing restarts, the template is not written), `"Off"`, or
    /// `InPlaceOrRecreate` (served as `InPlace` by this version). A group's own `updateMode` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mode: Option<UpdateMode>,
    /// A key of a Secret in the IPA's namespace whose value is sent to the agent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_secret_ref: Option<SecretKeyRef>,
}

/// One target Deployment and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::group)]
pub struct IpaGroup {
    /// Name of the Deployment to scale.
    pub deployment: String,
    /// Namespace of the Deployment: the IPA's own, or one whose `ipa.shafinhasnat.me/allow-from` annotation
    /// names the IPA's namespace (or `*`).
    pub namespace: String,
    /// Name of the Ingress in front of the Deployment (ingress-nginx request metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// PromQL giving this Deployment's demand in requests per second (its series are summed), for demand that
    /// does not come through ingress-nginx: a Gateway API / Envoy, Istio or application counter. Used instead of
    /// `ingress`. Runs only when the controller allows it (`--allow-demand-query`): a query is not confined to
    /// the IPA's namespace the way IPA's own queries are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_query: Option<String>,
    /// `Auto` or `Recommend` for this Deployment; default the IPA-wide `mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Overrides the IPA-wide `updateMode` for this Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mode: Option<UpdateMode>,
    /// Bounds and behaviour: minReplicas, maxReplicas, targetUtilization, scaleUp/scaleDown, vertical,
    /// containers, minCpu/maxCpu/minMemory/maxMemory, resizeThreshold, minResizeIntervalSeconds, ….
    #[serde(flatten)]
    pub policy: Policy,
}

/// Whether decisions are applied or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Apply decisions to the Deployment.
    #[default]
    Auto,
    /// Compute and report decisions in status; never change the Deployment (like VPA's `Off`).
    Recommend,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "Auto",
            Self::Recommend => "Recommend",
        }
    }
}

/// How a change of requests/limits reaches a target's pods (replicas are not affected): `Template` (the default),
/// `InPlace`, `InPlaceOrRecreate` or `"Off"` (quoted: YAML 1.1 reads a bare Off as false). A group's own value
/// overrides the IPA's. Under both in-place modes the admission webhook gives new pods the current size
/// (docs/operator.md, Update modes and The admission webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum UpdateMode {
    /// Resize the running pods through `pods/resize`; never restart one. A resize the node cannot fit stays
    /// pending, and a condition says so.
    InPlace,
    /// Resize in place; a pod whose node reports the resize `Infeasible`, or keeps it `Deferred` for 5
    /// minutes, is evicted, one at a time (respecting PodDisruptionBudgets, never the last ready replica), and
    /// recreated at the new size.
    InPlaceOrRecreate,
    /// Patch the Deployment's pod template: a rolling update of every pod (the seed's behaviour).
    #[default]
    Template,
    /// Recommend requests/limits in status; never change them.
    Off,
}

impl UpdateMode {
    /// Resizes go to the running pods (`pods/resize`), not to the template.
    pub fn in_place(self) -> bool {
        matches!(self, Self::InPlace | Self::InPlaceOrRecreate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InPlace => "InPlace",
            Self::InPlaceOrRecreate => "InPlaceOrRecreate",
            Self::Template => "Template",
            Self::Off => "Off",
        }
    }
}

/// A key in a Secret of the IPA's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret (the controller needs `get` on it).
    pub name: String,
    /// Key in the Secret whose value is the token; default `token`.
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_string()
}

impl IpaGroup {
    /// The target's own demand query, when it has a non-blank one.
    pub fn demand_query(&self) -> Option<&str> {
        self.demand_query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
    }
}

impl IpaMetadata {
    /// The interval to requeue with, defaulted and bounded (the CRD refuses values out of bounds, but an object
    /// stored before it did may still hold one).
    pub fn interval(&self) -> std::time::Duration {
        let wanted = self
            .interval
            .map(|d| std::time::Duration::from(d).as_secs())
            .unwrap_or(DEFAULT_INTERVAL_SECONDS);
        std::time::Duration::from_secs(wanted.clamp(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS))
    }

    /// The fast loop's period to requeue with, defaulted and bounded by the interval.
    pub fn sync_period(&self) -> std::time::Duration {
        let interval = self.interval();
        self.sync_period
            .map(std::time::Duration::from)
            .unwrap_or(std::time::Duration::from_secs(DEFAULT_SYNC_PERIOD_SECONDS))
            .clamp(
                std::time::Duration::from_secs(MIN_INTERVAL_SECONDS),
                interval,
            )
    }

    /// The mode of one group: its own, else the IPA's, else `Auto`.
    pub fn mode_of(&self, group: &IpaGroup) -> Mode {
        group.mode.or(self.mode).unwrap_or_default()
    }

    /// The update mode of one group: its own, else the IPA's, else `InPlaceOrRecreate`.
    pub fn update_mode_of(&self, group: &IpaGroup) -> UpdateMode {
        group.update_mode.or(self.update_mode).unwrap_or_default()
    }
}

/// `status` of an IPA.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::status)]
pub struct IpaStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `found/listed` targets, for `kubectl get`.
    #[serde(default)]
    pub targets: String,
    /// The IPA-wide mode, for `kubectl get`.
    #[serde(default)]
    pub mode: String,
    /// One line about the latest cycle, for `kubectl get`.
    #[serde(default)]
    pub last_decision: String,
    /// RFC 3339 time the latest cycle finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<String>,
    /// RFC 3339 time the advisory loop last asked the agent (or the built-in recommender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_advice_time: Option<String>,
    /// `Ready`, `AgentAvailable`, `MetricsAvailable`, `TargetFound` over all groups.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub groups: Vec<GroupStatus>,
}

/// What happened to one target in the latest cycle, and what the guardrails remember about it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub namespace: String,
    pub deployment: String,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_replicas: Option<u32>,
    /// Replicas after the guardrails: what is (or in `Recommend` mode would be) applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    #[serde(default)]
    pub current_resources: Vec<ContainerResources>,
    /// The provider's proposal for requests/limits (before the guardrails).
    #[serde(default)]
    pub recommended_resources: Vec<ContainerResources>,
    /// Requests/limits after the guardrails; empty when resources stay as they are.
    #[serde(default)]
    pub desired_resources: Vec<ContainerResources>,
    /// In-place targets: the requests/limits the running pods are brought to, which the admission webhook gives
    /// new pods at creation. Empty for other update modes, in `Recommend` mode, and where another autoscaler owns
    /// the resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_resources: Vec<ContainerResources>,
    /// `llm`, `builtin` or `fallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default)]
    pub rationale: String,
    #[serde(default)]
    pub guardrail_notes: Vec<GuardrailNote>,
    /// Inputs that were missing this cycle (e.g. `cpu`, `request_rate`).
    #[serde(default)]
    pub missing_inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resize_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision_time: Option<String>,
    /// The guardrails' memory (stabilization history, scale events, last resize).
    #[serde(default)]
    pub guard_state: GuardStateStatus,
    /// `TargetFound`, `MetricsAvailable`, `AgentAvailable`, `Applied` for this target.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Requests and limits of one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    pub name: String,
    #[serde(default)]
    pub requests: ResourceValues,
    #[serde(default)]
    pub limits: ResourceValues,
}

/// CPU and memory quantities; absent means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ResourceValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

impl From<ResourceValues> for ipa_core::Resources {
    fn from(r: ResourceValues) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
        }
    }
}

impl From<ipa_core::Resources> for ResourceValues {
    fn from(r: ipa_core::Resources) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
        }
    }
}

/// `ipa_core::GuardState` in a structural-schema shape (the core keeps tuples, which a CRD schema can't
/// describe).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardStateStatus {
    /// Recent recommendations (unix seconds, replicas), oldest first.
    #[serde(default)]
    pub recommendations: Vec<TimedReplicas>,
    /// Recent scale changes, oldest first.
    #[serde(default)]
    pub scale_events: Vec<ScaleEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resize_at: Option<i64>,
    /// The advisor's replica floor for the current interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<ipa_core::Floor>,
    /// While the serving pods are grown in place ahead of new replicas: the size they return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Vec<ContainerResources>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TimedReplicas {
    pub at: i64,
    pub replicas: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ScaleEvent {
    pub at: i64,
    pub from: u32,
    pub to: u32,
}

impl From<&GuardStateStatus> for GuardState {
    fn from(s: &GuardStateStatus) -> Self {
        Self {
            recommendations: s
                .recommendations
                .iter()
                .map(|t| (t.at, t.replicas))
                .collect(),
            scale_events: s
                .scale_events
                .iter()
                .map(|e| (e.at, e.from, e.to))
                .collect(),
            last_resize_at: s.last_resize_at,
            floor: s.floor,
            bridge: s.bridge.as_ref().map(|b| {
                b.iter()
                    .map(|c| ipa_core::ContainerRecommendation {
                        name: c.name.clone(),
                        requests: c.requests.into(),
                        limits: c.limits.into(),
                    })
                    .collect()
            }),
        }
    }
}

impl From<&GuardState> for GuardStateStatus {
    fn from(s: &GuardState) -> Self {
        let timed = |v: &[(i64, u32)]| {
            v.iter()
                .map(|&(at, replicas)| TimedReplicas { at, replicas })
                .collect()
        };
        Self {
            recommendations: timed(&s.recommendations),
            scale_events: s
                .scale_events
                .iter()
                .map(|&(at, from, to)| ScaleEvent { at, from, to })
                .collect(),
            last_resize_at: s.last_resize_at,
            floor: s.floor,
            bridge: s.bridge.as_ref().map(|b| {
                b.iter()
                    .map(|c| ContainerResources {
                        name: c.name.clone(),
                        requests: c.requests.into(),
                        limits: c.limits.into(),
                    })
                    .collect()
            }),
        }
    }
}

/// Longest duration text taken, and most digits in one number of it: with at most 9 integer digits per number
/// and 32 numbers, no sum can overflow (the CRD's own rule allows 5 s to 1 h anyway).
const MAX_DURATION_TEXT: usize = 64;
const MAX_DURATION_DIGITS: usize = 9;

/// Parses a Go duration (`90s`, `1m30s`) without panicking. kube's parser panics on a number whose product with
/// its unit overflows (`"90922337203685477580710s"`, found by the `crd_spec` fuzz target), on a negative number
/// after the first (`"1s-5s"`) and on a sum beyond `u64::MAX` seconds; such text is refused here first. An
/// object the API server stored before the CRD's duration rule, or with the rule bypassed, would otherwise
/// panic the controller's watch.
pub fn parse_duration(text: &str) -> Result<kube::core::Duration, String> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let plausible = text.len() <= MAX_DURATION_TEXT
        && !body.contains(['-', '+'])
        && body
            .split(|c: char| !c.is_ascii_digit())
            .all(|digits| digits.len() <= MAX_DURATION_DIGITS);
    if !plausible {
        return Err(format!(
            "{:?} is not a duration (at most {MAX_DURATION_TEXT} characters, {MAX_DURATION_DIGITS} digits per \
             number, one leading sign)",
            crate::conditions::cut(text, 40)
        ));
    }
    text.parse()
        .map_err(|e: kube::core::duration::ParseError| e.to_string())
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<kube::core::Duration>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// The CRD as YAML, as `ipa crd` prints it and `deploy/crd.yaml` holds it.
pub fn crd_yaml() -> Result<String, crate::Error> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&IPA::crd()).map_err(|e| crate::Error::Yaml(e.to_string()))
}

/// The CRD as the Helm chart's template (`templates/crd.yaml`): a template, not a file in `crds/`, so `helm
/// upgrade` upgrades it; `helm.sh/resource-policy: keep`, so `helm uninstall` does not delete it and with it
/// every IPA; skipped with `crds.install=false` where CRDs are managed elsewhere.
pub fn crd_helm_template() -> Result<String, crate::Error> {
    use kube::CustomResourceExt;
    let mut crd = IPA::crd();
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("helm.sh/resource-policy".into(), "keep".into());
    let yaml = serde_saphyr::to_string(&crd).map_err(|e| crate::Error::Yaml(e.to_string()))?;
    Ok(format!(
        "# Generated by `ipa crd --helm`; do not edit (scripts/check-generated.sh checks for drift).\n\
         {{{{- if .Values.crds.install }}}}\n{yaml}{{{{- end }}}}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_MANIFEST: &str = r#"
apiVersion: ipa.shafinhasnat.me/v1alpha1
kind: IPA
metadata:
  name: ipa
spec:
  metadata:
    prometheusUri: http://prometheus-server.default.svc
    llmAgent: https://ipaagent.shafinhasnat.me
    ipaGroup:
      - deployment: testapp
        namespace: ipaapp
        ingress: testappingress
"#;

    #[test]
    fn seed_manifest_parses_with_defaults() -> Result<(), Box<dyn std::error::Error>> {
        let ipa: IPA = serde_saphyr::from_str(SEED_MANIFEST)?;
        let m = &ipa.spec.metadata;
        assert_eq!(m.prometheus_uri, "http://prometheus-server.default.svc");
        assert_eq!(m.ipa_group.len(), 1);
        assert_eq!(m.ipa_group[0].ingress.as_deref(), Some("testappingress"));
        assert_eq!(m.interval(), std::time::Duration::from_secs(60));
        assert_eq!(m.mode_of(&m.ipa_group[0]), Mode::Auto);
        assert_eq!(m.update_mode_of(&m.ipa_group[0]), UpdateMode::Template);
        assert_eq!(m.ipa_group[0].policy, Policy::default());
        Ok(())
    }

    #[test]
    fn optional_fields_parse() -> Result<(), Box<dyn std::error::Error>> {
        let ipa: IPA = serde_saphyr::from_str(
            r#"
apiVersion: ipa.shafinhasnat.me/v1alpha1
kind: IPA
metadata: {name: x}
spec:
  metadata:
    prometheusUri: http://p
    llmAgent: ""
    interval: 1s
    mode: Recommend
    updateMode: Template
    agentTokenSecretRef: {name: agent}
    ipaGroup:
      - deployment: a
        namespace: n
        mode: Auto
        updateMode: InPlace
        minReplicas: 2
        maxReplicas: 9
        maxCpu: "2"
        scaleDown: {stabilizationWindowSeconds: 30}
      - deployment: b
        namespace: n
"#,
        )?;
        let m = &ipa.spec.metadata;
        assert_eq!(
            m.interval(),
            std::time::Duration::from_secs(MIN_INTERVAL_SECONDS)
        );
        assert_eq!(m.mode_of(&m.ipa_group[0]), Mode::Auto);
        // A group's updateMode wins over the IPA's, like mode.
        assert_eq!(m.update_mode_of(&m.ipa_group[0]), UpdateMode::InPlace);
        assert_eq!(m.update_mode_of(&m.ipa_group[1]), UpdateMode::Template);
        assert_eq!(
            m.agent_token_secret_ref.as_ref().map(|r| r.key.as_str()),
            Some("token")
        );
        let p = &m.ipa_group[0].policy;
        assert_eq!((p.min_replicas, p.max_replicas), (Some(2), Some(9)));
        assert_eq!(p.max_cpu, Some(CpuMillis(2000)));
        Ok(())
    }

    #[test]
    fn schema_is_structural_enough() -> Result<(), Box<dyn std::error::Error>> {
        let yaml = crd_yaml()?;
        // Constructs the apiserver rejects in a structural schema.
        for bad in ["prefixItems", "$ref", "anyOf: []", "additionalItems"] {
            assert!(!yaml.contains(bad), "CRD contains {bad}");
        }
        assert!(!yaml.contains("intervalSeconds"));
        assert!(yaml.contains("minReplicas"));
        // updateMode is offered IPA-wide and per group, with its four values (YAML may quote `Off`, a YAML 1.1
        // boolean, so the schema is read as JSON).
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(IPA::crd())?;
        let metadata = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["metadata"]["properties"];
        let modes = serde_json::json!(["InPlace", "InPlaceOrRecreate", "Template", "Off"]);
        assert_eq!(metadata["updateMode"]["enum"], modes);
        assert_eq!(
            metadata["ipaGroup"]["items"]["properties"]["updateMode"]["enum"],
            modes
        );
        assert!(yaml.contains("subresources"));
        Ok(())
    }

    fn example_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
    }

    /// Every `deploy/examples/*.yaml`, sorted, with its text.
    fn examples() -> Result<Vec<(std::path::PathBuf, String)>, Box<dyn std::error::Error>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(example_dir())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)?;
                found.push((path, text));
            }
        }
        found.sort();
        Ok(found)
    }

    fn spec_schema() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(IPA::crd())?;
        Ok(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone())
    }

    /// Paths in `value` that the schema does not declare (serde ignores them; the apiserver prunes them).
    fn undeclared(
        path: &str,
        value: &serde_json::Value,
        schema: &serde_json::Value,
    ) -> Vec<String> {
        match value {
            serde_json::Value::Object(fields) => fields
                .iter()
                .flat_map(|(name, field)| {
                    let path = format!("{path}.{name}");
                    match schema["properties"].get(name) {
                        Some(declared) => undeclared(&path, field, declared),
                        // A map (`headers`): any key, each value of the declared schema.
                        None if schema["additionalProperties"].is_object() => {
                            undeclared(&path, field, &schema["additionalProperties"])
                        }
                        None => vec![path],
                    }
                })
                .collect(),
            serde_json::Value::Array(items) => items
                .iter()
                .flat_map(|item| undeclared(&format!("{path}[]"), item, &schema["items"]))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Paths the schema declares that none of `values` sets (list items are pooled).
    fn unset(path: &str, schema: &serde_json::Value, values: &[&serde_json::Value]) -> Vec<String> {
        let Some(properties) = schema["properties"].as_object() else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for (name, property) in properties {
            let path = format!("{path}.{name}");
            let set: Vec<&serde_json::Value> = values.iter().filter_map(|v| v.get(name)).collect();
            if set.is_empty() {
                missing.push(path);
            } else if property["items"]["properties"].is_object() {
                let items: Vec<&serde_json::Value> = set
                    .iter()
                    .filter_map(|list| list.as_array())
                    .flatten()
                    .collect();
                missing.extend(unset(&format!("{path}[]"), &property["items"], &items));
            } else {
                missing.extend(unset(&path, property, &set));
            }
        }
        missing
    }

    #[test]
    fn every_example_parses_into_an_ipa_with_only_declared_fields()
    -> Result<(), Box<dyn std::error::Error>> {
        let schema = spec_schema()?;
        let examples = examples()?;
        let names: Vec<_> = examples
            .iter()
            .filter_map(|(path, _)| path.file_name()?.to_str())
            .collect();
        assert!(
            names.contains(&"seed.yaml") && names.contains(&"every-option.yaml"),
            "{names:?}"
        );
        for (path, text) in &examples {
            let file = path.display();
            assert!(text.starts_with("# "), "{file}: no comment header");
            let ipa: IPA = serde_saphyr::from_str(text).map_err(|e| format!("{file}: {e}"))?;
            assert!(
                !ipa.spec.metadata.ipa_group.is_empty(),
                "{file}: no targets"
            );
            let value: serde_json::Value = serde_saphyr::from_str(text)?;
            let typos = undeclared("spec", &value["spec"], &schema);
            assert!(
                typos.is_empty(),
                "{file}: fields the CRD does not declare: {typos:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_seed_example_is_the_seeds_manifest_unchanged() -> Result<(), Box<dyn std::error::Error>>
    {
        let file = std::fs::read_to_string(example_dir().join("seed.yaml"))?;
        let example: serde_json::Value = serde_saphyr::from_str(&file)?;
        let seed: serde_json::Value = serde_saphyr::from_str(SEED_MANIFEST)?;
        assert_eq!(example, seed);
        Ok(())
    }

    #[test]
    fn the_every_option_example_sets_every_field() -> Result<(), Box<dyn std::error::Error>> {
        let file = std::fs::read_to_string(example_dir().join("every-option.yaml"))?;
        let example: serde_json::Value = serde_saphyr::from_str(&file)?;
        // Alternatives: basic auth is the other way to authenticate to Prometheus than the bearer token set there.
        let alternatives = ["spec.metadata.prometheusAuth.basicAuth"];
        let mut missing = unset("spec", &spec_schema()?, &[&example["spec"]]);
        missing.retain(|m| !alternatives.contains(&m.as_str()));
        assert!(
            missing.is_empty(),
            "every-option.yaml does not set {missing:?}"
        );
        let ipa: IPA = serde_json::from_value(example)?;
        let m = &ipa.spec.metadata;
        assert_eq!(m.interval(), std::time::Duration::from_secs(120));
        assert_eq!(m.sync_period(), std::time::Duration::from_secs(20));
        assert_eq!(m.mode_of(&m.ipa_group[1]), Mode::Recommend);
        Ok(())
    }

    /// Found by the `crd_spec` fuzz target: kube's duration parser panicked on these.
    #[test]
    fn durations_that_would_overflow_are_refused_not_a_panic() {
        for text in [
            "90922337203685477580710s",
            "1s-5s",
            "1.00000000000000000001s",
        ] {
            let json =
                format!(r#"{{"prometheusUri": "http://p", "ipaGroup": [], "interval": {text:?}}}"#);
            assert!(
                serde_json::from_str::<IpaMetadata>(&json).is_err(),
                "{text}"
            );
        }
        // The longest numbers taken still add up without overflow.
        assert!(parse_duration("999999999h999999999h999999999h999999999h").is_ok());
        assert_eq!(
            parse_duration("1m30s").map(std::time::Duration::from),
            Ok(std::time::Duration::from_secs(90))
        );
        assert!(parse_duration("-15s").is_ok());
    }

    #[test]
    fn guard_state_round_trips() {
        let state = GuardState {
            recommendations: vec![(1, 2), (3, 4)],
            scale_events: vec![(5, 6, 7)],
            last_resize_at: Some(7),
            floor: Some(ipa_core::Floor {
                replicas: 3,
                until: 60,
                for_shrink: false,
            }),
            bridge: Some(vec![ipa_core::ContainerRecommendation {
                name: "app".into(),
                requests: ipa_core::Resources {
                    cpu: Some(ipa_core::CpuMillis(250)),
                    memory: None,
                },
                limits: ipa_core::Resources::default(),
            }]),
        };
        let status = GuardStateStatus::from(&state);
        assert_eq!(GuardState::from(&status), state);
    }
}
