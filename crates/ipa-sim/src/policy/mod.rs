//! Policies: every autoscaler runs through the same trait and the same cluster model.

use ipa_core::{Bytes, CpuMillis};
use serde::Serialize;

use crate::cluster::{Action, ClusterConfig, PodTemplate, StepOutcome};
use crate::trace::{REFERENCE_POD_CORES, Workload};

pub mod advisors;
pub mod hpa;
pub mod ipa;
pub mod oracle;
pub mod vpa;

pub use hpa::Hpa;
pub use ipa::{Advisor, BuiltinAdvisor, Ipa};
pub use oracle::Oracle;
pub use vpa::Vpa;

/// What a policy sees after each step: what a controller could read from the metrics pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Unix seconds at the start of the step just served.
    pub now: i64,
    pub step: usize,
    pub step_seconds: f64,
    /// Desired replicas (`spec.replicas`).
    pub replicas: u32,
    /// The Deployment's current pod template.
    pub template: PodTemplate,
    pub rollout_in_progress: bool,
    pub outcome: &'a StepOutcome,
    /// Cumulative counters since the start of the run.
    pub oom_kills_total: u64,
    pub restarts_total: u64,
}

/// An autoscaling policy. Called once per simulator step (15 s); a policy with a longer interval keeps its
/// own clock and returns `Action::default()` in between.
pub trait Autoscaler: Send {
    fn name(&self) -> &str;
    fn decide(&mut self, obs: &Observation<'_>) -> Action;
}

/// The policies `ipa simulate` and `ipa bench` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Ipa,
    Hpa,
    Vpa,
    Static,
    Oracle,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Ipa,
        PolicyKind::Hpa,
        PolicyKind::Vpa,
        PolicyKind::Static,
        PolicyKind::Oracle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Ipa => "ipa",
            PolicyKind::Hpa => "hpa",
            PolicyKind::Vpa => "vpa",
            PolicyKind::Static => "static",
            PolicyKind::Oracle => "oracle",
        }
    }
}

/// The settings every policy shares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimSettings {
    pub cluster: ClusterConfig,
    /// The template every policy starts from (and HPA/static keep): 1 core request, 1.5 core limit,
    /// 128 MiB request, 192 MiB limit.
    pub initial_template: PodTemplate,
    /// Target CPU utilization of the request (HPA's target, IPA's policy default, the oracle's sizing).
    pub target_utilization: f64,
    /// Replicas VPA runs with (its updater never evicts fewer than 2).
    pub vpa_replicas: u32,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            cluster: ClusterConfig::default(),
            initial_template: PodTemplate {
                cpu_request: CpuMillis((REFERENCE_POD_CORES * 1000.0) as u64),
                cpu_limit: Some(CpuMillis((REFERENCE_POD_CORES * 1500.0) as u64)),
                memory_request: Bytes::from_mib(128),
                memory_limit: Some(Bytes::from_mib(192)),
            },
            target_utilization: 0.7,
            vpa_replicas: 2,
        }
    }
}

impl SimSettings {
    /// Requests/s one pod of `template` serves at the target utilization of its CPU request.
    pub fn rps_at_target(&self, template: &PodTemplate) -> f64 {
        self.cluster
            .model
            .capacity_rps(template.cpu_request.as_cores() * self.target_utilization)
    }

    /// Replicas of the initial template that serve `demand_rps` at the target utilization.
    pub fn replicas_for(&self, demand_rps: f64) -> u32 {
        let per_pod = self.rps_at_target(&self.initial_template);
        let n = if per_pod > 0.0 {
            (demand_rps / per_pod).ceil()
        } else {
            1.0
        };
        (n.max(0.0) as u32).clamp(self.cluster.min_replicas, self.cluster.max_replicas)
    }

    /// Replicas a policy starts with: enough initial-template pods for the first step's demand at the target
    /// (static and VPA override this).
    pub fn initial_replicas(&self, kind: PolicyKind, workload: &Workload) -> u32 {
        match kind {
            PolicyKind::Static => {
                self.replicas_for(workload.demand_rps.iter().copied().fold(0.0, f64::max))
            }
            PolicyKind::Vpa => self
                .vpa_replicas
                .clamp(self.cluster.min_replicas, self.cluster.max_replicas),
            _ => self.replicas_for(workload.demand_rps.first().copied().unwrap_or(0.0)),
        }
    }

    /// Builds the policy `kind` for `workload` (the oracle reads the workload's future; nothing else does).
    pub fn build(&self, kind: PolicyKind, workload: &Workload) -> Box<dyn Autoscaler> {
        match kind {
            PolicyKind::Ipa => Box::new(Ipa::new(self, Box::new(BuiltinAdvisor))),
            PolicyKind::Hpa => Box::new(Hpa::new(self)),
            PolicyKind::Vpa => Box::new(Vpa::new(self)),
            PolicyKind::Static => Box::new(Static),
            PolicyKind::Oracle => Box::new(Oracle::new(self, workload)),
        }
    }
}

/// Fixed replicas and resources: whatever the run started with (sized for the trace's peak).
#[derive(Debug, Clone, Copy, Default)]
pub struct Static;

impl Autoscaler for Static {
    fn name(&self) -> &str {
        "static"
    }
    fn decide(&mut self, _obs: &Observation<'_>) -> Action {
        Action::default()
    }
}
