//! `MetricsSnapshot`: the compact, per-target summary of what the controller observed in one cycle.
//!
//! This is what crosses the wire to the agent and what the prompt is built from — window statistics, not raw
//! Prometheus JSON. Every measured value is an `Option`: an empty Prometheus result is *missing data*, never
//! zero, and the guardrails refuse to scale down on missing data.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, CpuMillis};

/// Which Deployment a snapshot or decision is about.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct TargetRef {
    pub namespace: String,
    pub deployment: String,
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.deployment)
    }
}

/// Window statistics of one series. `trend_per_min` is the least-squares slope in units per minute over the
/// window; `recent_trend_per_min` the same over its last [`crate::stats::RECENT_SECONDS`] only (the fast loop's
/// short-horizon signal: a ramp shows there long before it moves a 5-minute slope).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
pub struct SeriesStats {
    pub current: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub max: f64,
    pub trend_per_min: f64,
    #[serde(default)]
    pub recent_trend_per_min: f64,
    pub samples: u32,
}

impl SeriesStats {
    /// Statistics of a series that held `value` for `samples` samples (tests, fixtures, synthetic inputs).
    pub fn constant(value: f64, samples: u32) -> Self {
        Self {
            current: value,
            mean: value,
            p50: value,
            p90: value,
            p95: value,
            max: value,
            trend_per_min: 0.0,
            recent_trend_per_min: 0.0,
            samples,
        }
    }
}

/// Requests or limits of one container. `None` means "not set" (Kubernetes' default), not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

/// One container of the target's pod template with its current settings and observed usage per pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerSnapshot {
    pub name: String,
    #[serde(default)]
    pub requests: Resources,
    #[serde(default)]
    pub limits: Resources,
    /// CPU cores used by this container in one pod (per-pod values pooled over the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<SeriesStats>,
    /// Working-set bytes of this container in one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<SeriesStats>,
}

/// A deduplicated Kubernetes Event about the target or its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventSummary {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub count: u32,
    /// Unix seconds of the last occurrence.
    #[serde(default)]
    pub last_seen: i64,
}

/// Free capacity of the nodes the target can run on.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ClusterCapacity {
    /// Sum of `node_memory_MemAvailable_bytes` over the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_bytes: Option<Bytes>,
    /// Allocatable CPU not yet requested by any pod, over the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_cpu: Option<CpuMillis>,
}

/// A longer, regularly stepped history of the target's demand for forecasting (oldest first).
/// Gaps are `None`. Either series may be empty when it is not available.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DemandHistory {
    pub step_seconds: u32,
    /// Total CPU cores used by all pods of the target.
    #[serde(default)]
    pub cpu_cores: Vec<Option<f64>>,
    /// Total requests per second at the target's ingress.
    #[serde(default)]
    pub request_rate: Vec<Option<f64>>,
}

/// Everything the controller knows about one target in one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricsSnapshot {
    pub target: TargetRef,
    /// Unix seconds at which the snapshot was taken.
    pub timestamp: i64,
    /// Length of the window the statistics cover.
    pub window_seconds: u32,
    /// Desired replicas (`spec.replicas`).
    pub replicas: u32,
    /// Ready replicas, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<u32>,
    /// CPU cores used per pod (all managed containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_pod: Option<SeriesStats>,
    /// Working-set bytes per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_per_pod: Option<SeriesStats>,
    /// Requests per second at the target's ingress (all pods together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<SeriesStats>,
    /// Container restarts during the window, over all pods.
    #[serde(default)]
    pub restarts: u32,
    /// OOM kills during the window, over all pods.
    #[serde(default)]
    pub oom_kills: u32,
    #[serde(default)]
    pub containers: Vec<ContainerSnapshot>,
    #[serde(default)]
    pub cluster: ClusterCapacity,
    #[serde(default)]
    pub events: Vec<EventSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<DemandHistory>,
    /// Names of inputs that were expected but missing this cycle (e.g. `cpu`, `memory`, `request_rate`).
    #[serde(default)]
    pub missing: Vec<String>,
    /// Set while a rollout runs (pods of more than one template): replicas are then sized from the smaller pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A rollout in progress: pods of the old and the new template serve side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Rollout {
    /// The smallest per-pod CPU request among the running pods, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest_pod_cpu_request: Option<CpuMillis>,
}

impl MetricsSnapshot {
    /// A snapshot with only identity and replica count; fill in what was observed.
    pub fn new(target: TargetRef, timestamp: i64, replicas: u32) -> Self {
        Self {
            target,
            timestamp,
            window_seconds: 300,
            replicas,
            ready_replicas: None,
            cpu_per_pod: None,
            memory_per_pod: None,
            request_rate: None,
            restarts: 0,
            oom_kills: 0,
            containers: Vec::new(),
            cluster: ClusterCapacity::default(),
            events: Vec::new(),
            history: None,
            missing: Vec::new(),
            rollout: None,
        }
    }

    /// True when any input the decision depends on is missing.
    pub fn has_missing_inputs(&self) -> bool {
        !self.missing.is_empty() || self.cpu_per_pod.is_none()
    }

    /// Sum of the CPU requests of the containers of one pod, when every container has one. The sums saturate:
    /// quantities come from the network, and a crafted snapshot must not wrap (release) or panic (debug).
    pub fn pod_cpu_request(&self) -> Option<CpuMillis> {
        self.containers
            .iter()
            .map(|c| c.requests.cpu.map(|v| v.0))
            .try_fold(0u64, |sum, v| v.map(|v| sum.saturating_add(v)))
            .map(CpuMillis)
    }

    /// Sum of the CPU limits of the containers of one pod, when every container has one.
    pub fn pod_cpu_limit(&self) -> Option<CpuMillis> {
        self.containers
            .iter()
            .map(|c| c.limits.cpu.map(|v| v.0))
            .try_fold(0u64, |sum, v| v.map(|v| sum.saturating_add(v)))
            .map(CpuMillis)
    }

    /// The per-pod CPU request replicas are sized by: the template's, or during a rollout the smaller of it and
    /// the smallest running pod's (sizing by the bigger pod would under-provision while smaller pods serve).
    pub fn sizing_pod_cpu_request(&self) -> Option<CpuMillis> {
        let template = self.pod_cpu_request().filter(|r| r.0 > 0)?;
        let running = self
            .rollout
            .and_then(|r| r.smallest_pod_cpu_request)
            .filter(|r| r.0 > 0);
        Some(running.map_or(template, |r| r.min(template)))
    }

    /// Sum of the memory requests of the containers of one pod, when every container has one.
    pub fn pod_memory_request(&self) -> Option<Bytes> {
        self.containers
            .iter()
            .map(|c| c.requests.memory.map(|v| v.0))
            .try_fold(0u64, |sum, v| v.map(|v| sum.saturating_add(v)))
            .map(Bytes)
    }
}
