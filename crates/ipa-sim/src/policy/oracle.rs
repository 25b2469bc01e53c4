//! Perfect foresight: at every step, the least replicas and right-sized requests that keep CPU at the target
//! utilization of the request for the highest demand until a pod started now would be ready. Pods are at
//! most one reference pod (1 core of request) unless `max_replicas` forces bigger ones, and never bigger than the
//! cluster's `max_pod_cpu` (the bound every policy has). Resizes are applied in place where the cluster allows it
//! (no restart); the only delay the oracle pays is pod start-up. Memory request = the working set at
//! that demand; limits keep the initial template's limit/request ratios. In place, the CPU request reserves
//! only for the step the pods serve (it can follow every step) and the limit keeps the look-ahead size.

use ipa_core::{Bytes, CpuMillis};

use crate::cluster::{Action, PodTemplate};
use crate::model::AppModel;
use crate::policy::{Autoscaler, Observation, SimSettings};
use crate::trace::{REFERENCE_POD_CORES, Workload};

/// The smallest requests the oracle sets (the built-in policy's defaults: 10m CPU, 16 MiB memory).
const MIN_CPU_CORES: f64 = 0.010;
const MIN_MEMORY_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone)]
pub struct Oracle {
    /// For each step, the highest demand over the steps a decision taken then has to cover.
    lookahead_peak: Vec<f64>,
    /// For each step, the demand of the next step (served by the pods ready by then).
    next_demand: Vec<f64>,
    step_seconds: f64,
    model: AppModel,
    target: f64,
    min_replicas: u32,
    max_replicas: u32,
    /// The largest pod CPU request the cluster allows (`ClusterConfig::max_pod_cpu`), as for every policy.
    max_pod_cpu_cores: f64,
    cpu_limit_ratio: Option<f64>,
    memory_limit_ratio: Option<f64>,
    /// The cluster resizes pods in place: the request may follow each step.
    in_place: bool,
}

impl Oracle {
    pub fn new(settings: &SimSettings, workload: &Workload) -> Self {
        let model = settings.cluster.model;
        let step = workload.step_seconds.max(1.0);
        // A pod created after step k serves from step k + ceil(startup / step); replicas chosen at step k must
        // also cover every step before that (later decisions cover later steps).
        let horizon = ((model.startup_seconds / step).ceil() as usize).max(1);
        let demand = &workload.demand_rps;
        let lookahead_peak = (0..demand.len())
            .map(|k| {
                let end = (k + horizon).min(demand.len().saturating_sub(1));
                demand[(k + 1).min(end)..=end]
                    .iter()
                    .copied()
                    .fold(0.0, f64::max)
            })
            .collect();
        let next_demand = (0..demand.len())
            .map(|k| demand.get(k + 1).copied().unwrap_or(0.0))
            .collect();
        let t = settings.initial_template;
        let ratio =
            |limit: Option<f64>, request: f64| limit.filter(|_| request > 0.0).map(|l| l / request);
        Self {
            lookahead_peak,
            next_demand,
            step_seconds: step,
            model,
            target: settings.target_utilization,
            min_replicas: settings.cluster.min_replicas,
            max_replicas: settings.cluster.max_replicas,
            max_pod_cpu_cores: settings.cluster.max_pod_cpu.as_cores(),
            cpu_limit_ratio: ratio(
                t.cpu_limit.map(CpuMillis::as_cores),
                t.cpu_request.as_cores(),
            ),
            memory_limit_ratio: ratio(t.memory_limit.map(Bytes::as_f64), t.memory_request.as_f64()),
            in_place: settings.cluster.in_place_resize,
        }
    }

    /// Replicas and template for a peak demand `demand_rps` over the look-ahead. `next` = (the next step's
    /// demand, the pods that will serve it): while new pods start, the pods already serving are sized for it.
    pub fn plan(&self, demand_rps: f64, next: Option<(f64, u32)>) -> (u32, PodTemplate) {
        let per_pod_at_target = self.model.capacity_rps(REFERENCE_POD_CORES * self.target);
        let wanted = if per_pod_at_target > 0.0 {
            (demand_rps / per_pod_at_target).ceil()
        } else {
            1.0
        };
        let replicas = (wanted.max(0.0) as u32)
            .clamp(self.min_replicas, self.max_replicas.max(self.min_replicas));
        let mut per_pod_rps = demand_rps / f64::from(replicas.max(1));
        let mut reserved_rps = per_pod_rps;
        if let Some((next_demand, serving)) = next {
            let serving = serving.min(replicas).max(1);
            let next_share = next_demand / f64::from(serving);
            per_pod_rps = per_pod_rps.max(next_share);
            // In place, the request can follow each step: it reserves for the step served, and the limit,
            // sized as ever for the look-ahead peak, serves the rest.
            reserved_rps = if self.in_place {
                next_share
            } else {
                per_pod_rps
            };
        }
        let cpu = (self.model.cpu_demand_cores(per_pod_rps) / self.target)
            .clamp(MIN_CPU_CORES, self.max_pod_cpu_cores);
        let reserved =
            (self.model.cpu_demand_cores(reserved_rps) / self.target).clamp(MIN_CPU_CORES, cpu);
        let memory = self.model.memory_bytes(per_pod_rps).max(MIN_MEMORY_BYTES);
        let template = PodTemplate {
            cpu_request: CpuMillis::from_cores_f64(reserved),
            cpu_limit: self
                .cpu_limit_ratio
                .map(|r| CpuMillis::from_cores_f64(cpu * r)),
            memory_request: Bytes::from_f64(memory).round_up_mib(),
            memory_limit: self
                .memory_limit_ratio
                .map(|r| Bytes::from_f64(memory * r).round_up_mib()),
        };
        (replicas, template)
    }

    /// The plan for the first step, used as the oracle's starting state.
    pub fn initial(&self, first_demand_rps: f64) -> (u32, PodTemplate) {
        let peak = self
            .lookahead_peak
            .first()
            .copied()
            .unwrap_or(0.0)
            .max(first_demand_rps);
        self.plan(peak, None)
    }
}

impl Autoscaler for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Action {
        let peak = self.lookahead_peak.get(obs.step).copied().unwrap_or(0.0);
        let next_demand = self.next_demand.get(obs.step).copied().unwrap_or(0.0);
        let serving_next = obs
            .outcome
            .pods
            .iter()
            .filter(|p| p.seconds_until_ready <= self.step_seconds + 1e-9)
            .count();
        let serving_next = u32::try_from(serving_next).unwrap_or(u32::MAX);
        let (replicas, template) = self.plan(peak, Some((next_demand, serving_next)));
        Action {
            replicas: (replicas != obs.replicas).then_some(replicas),
            template: (template != obs.template).then_some(template),
            in_place: true,
            ..Action::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Pattern, synthetic};

    #[test]
    fn in_place_the_request_reserves_for_the_step_served_and_the_limit_for_the_look_ahead() {
        let mut settings = SimSettings::default();
        let w = synthetic(Pattern::Constant, 1.0, &settings.cluster.model);
        let (replicas, ahead) = Oracle::new(&settings, &w).plan(300.0, Some((100.0, 3)));
        let per_pod = |rps: f64| {
            CpuMillis::from_cores_f64(settings.cluster.model.cpu_demand_cores(rps) / 0.7)
        };
        assert_eq!(ahead.cpu_request, per_pod(100.0 / 3.0));
        let limit = ahead.cpu_limit.map_or(0, |l| l.0);
        assert!(
            limit >= per_pod(300.0 / f64::from(replicas)).0,
            "the limit holds the look-ahead: {limit}m"
        );
        settings.cluster.in_place_resize = false;
        let (_, rolled) = Oracle::new(&settings, &w).plan(300.0, Some((100.0, 3)));
        assert_eq!(
            rolled.cpu_request,
            per_pod((300.0 / f64::from(replicas)).max(100.0 / 3.0)),
            "without in-place resize the request holds the look-ahead"
        );
    }
}
