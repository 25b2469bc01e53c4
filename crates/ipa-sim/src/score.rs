//! Scoring: cost, SLO, disruption and the SPEC RG elasticity metrics, from the per-step outcomes of a run.
//!
//! The SLO is fixed and the same for every policy: a minute violates it when, in any of its steps, the ready
//! pods were offered more than `SLO_UTILIZATION` of what they can serve at their CPU caps (the latency knee),
//! or dropped any request.
//!
//! Elasticity metrics (Herbst et al., "Ready for Rain?", arXiv:1604.03470) in serving-capacity units:
//! demand `d_t` = offered requests/s ÷ `SLO_UTILIZATION` (the capacity that keeps the pods at the knee),
//! supply `s_t` = the requests/s the ready pods can serve. Over the T steps with `d_t > 0`:
//! θ_U = 100/T Σ max(d−s, 0)/d, θ_O = 100/T Σ max(s−d, 0)/d, τ_U = 100/T Σ [d > s], τ_O = 100/T Σ [s > d].
//! Jitter = (E_S − E_D) per hour, where E_S and E_D count the steps at which supply and demand, in whole
//! reference pods (the serving capacity of a 1-core pod), changed.

use serde::Serialize;

use crate::cluster::{ApplyOutcome, StepOutcome};
use crate::model::AppModel;
use crate::trace::REFERENCE_POD_CORES;

/// The latency knee: above this fraction of serving capacity a minute violates the SLO.
pub const SLO_UTILIZATION: f64 = 0.9;

/// One row of `ipa bench`: exactly these field names, in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub trace: String,
    pub policy: String,
    pub minutes: f64,
    pub cpu_core_hours: f64,
    pub memory_gib_hours: f64,
    pub slo_violation_minutes: u64,
    pub dropped_requests: f64,
    pub oom_kills: u64,
    pub restarts: u64,
    pub scale_actions: u64,
    pub slack: f64,
    pub theta_u: f64,
    pub theta_o: f64,
    pub tau_u: f64,
    pub tau_o: f64,
    pub jitter: f64,
}

/// Accumulates a run's score step by step.
#[derive(Debug, Clone)]
pub struct ScoreAccumulator {
    step_seconds: f64,
    steps: u64,
    reference_pod_rps: f64,
    cpu_core_seconds: f64,
    memory_byte_seconds: f64,
    violated_minutes: u64,
    current_minute: Option<u64>,
    current_minute_violated: bool,
    dropped_requests: f64,
    oom_kills: u64,
    restarts: u64,
    scale_actions: u64,
    slack_sum: f64,
    slack_steps: u64,
    theta_u: f64,
    theta_o: f64,
    tau_u: u64,
    tau_o: u64,
    demand_steps: u64,
    last_units: Option<(i64, i64)>,
    supply_changes: u64,
    demand_changes: u64,
}

impl ScoreAccumulator {
    pub fn new(model: &AppModel, step_seconds: f64) -> Self {
        Self {
            step_seconds,
            steps: 0,
            reference_pod_rps: model.capacity_rps(REFERENCE_POD_CORES).max(1e-9),
            cpu_core_seconds: 0.0,
            memory_byte_seconds: 0.0,
            violated_minutes: 0,
            current_minute: None,
            current_minute_violated: false,
            dropped_requests: 0.0,
            oom_kills: 0,
            restarts: 0,
            scale_actions: 0,
            slack_sum: 0.0,
            slack_steps: 0,
            theta_u: 0.0,
            theta_o: 0.0,
            tau_u: 0,
            tau_o: 0,
            demand_steps: 0,
            last_units: None,
            supply_changes: 0,
            demand_changes: 0,
        }
    }

    /// Whether a step violates the SLO.
    pub fn step_violates(out: &StepOutcome) -> bool {
        let dropped = out.dropped_rps > 1e-9 * out.demand_rps.max(1.0);
        let over_knee = out.demand_rps > SLO_UTILIZATION * out.capacity_rps + 1e-9;
        dropped || over_knee
    }

    /// Adds the step `step` (0-based) that served `out`, followed by the policy's `applied` action.
    pub fn add(&mut self, step: u64, out: &StepOutcome, applied: &ApplyOutcome) {
        let dt = self.step_seconds;
        self.steps += 1;
        self.cpu_core_seconds += out.cpu_charged_cores * dt;
        self.memory_byte_seconds += out.memory_requested_bytes * dt;
        self.dropped_requests += out.dropped_rps * dt;
        self.oom_kills += u64::from(out.oom_kills);
        self.restarts += u64::from(out.oom_kills) + u64::from(applied.resize_restarts);
        self.scale_actions += u64::from(applied.scale_action);

        let minute = (step as f64 * dt / 60.0).floor() as u64;
        if self.current_minute != Some(minute) {
            self.close_minute();
            self.current_minute = Some(minute);
        }
        self.current_minute_violated |= Self::step_violates(out);

        if out.cpu_requested_cores > 0.0 {
            self.slack_sum +=
                (out.cpu_requested_cores - out.cpu_used_cores) / out.cpu_requested_cores;
            self.slack_steps += 1;
        }

        let demand = out.demand_rps / SLO_UTILIZATION;
        let supply = out.capacity_rps;
        if demand > 0.0 {
            self.demand_steps += 1;
            self.theta_u += (demand - supply).max(0.0) / demand;
            self.theta_o += (supply - demand).max(0.0) / demand;
            self.tau_u += u64::from(demand > supply);
            self.tau_o += u64::from(supply > demand);
        }
        let units = (
            (supply / self.reference_pod_rps - 1e-9).ceil() as i64,
            (demand / self.reference_pod_rps - 1e-9).ceil() as i64,
        );
        if let Some((s, d)) = self.last_units {
            self.supply_changes += u64::from(s != units.0);
            self.demand_changes += u64::from(d != units.1);
        }
        self.last_units = Some(units);
    }

    fn close_minute(&mut self) {
        if self.current_minute.is_some() && self.current_minute_violated {
            self.violated_minutes += 1;
        }
        self.current_minute_violated = false;
    }

    pub fn finish(mut self, trace: &str, policy: &str) -> Score {
        self.close_minute();
        let seconds = self.steps as f64 * self.step_seconds;
        let hours = seconds / 3600.0;
        let per_demand_step = |v: f64| {
            if self.demand_steps > 0 {
                100.0 * v / self.demand_steps as f64
            } else {
                0.0
            }
        };
        Score {
            trace: trace.to_string(),
            policy: policy.to_string(),
            minutes: seconds / 60.0,
            cpu_core_hours: self.cpu_core_seconds / 3600.0,
            memory_gib_hours: self.memory_byte_seconds / 3600.0 / (1024.0 * 1024.0 * 1024.0),
            slo_violation_minutes: self.violated_minutes,
            dropped_requests: self.dropped_requests,
            oom_kills: self.oom_kills,
            restarts: self.restarts,
            scale_actions: self.scale_actions,
            slack: if self.slack_steps > 0 {
                self.slack_sum / self.slack_steps as f64
            } else {
                0.0
            },
            theta_u: per_demand_step(self.theta_u),
            theta_o: per_demand_step(self.theta_o),
            tau_u: per_demand_step(self.tau_u as f64),
            tau_o: per_demand_step(self.tau_o as f64),
            jitter: if hours > 0.0 {
                (self.supply_changes as f64 - self.demand_changes as f64) / hours
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(demand: f64, capacity: f64, requested: f64, used: f64) -> StepOutcome {
        let served = demand.min(capacity);
        StepOutcome {
            demand_rps: demand,
            served_rps: served,
            dropped_rps: demand - served,
            capacity_rps: capacity,
            cpu_used_cores: used,
            cpu_requested_cores: requested,
            cpu_charged_cores: requested.max(used),
            memory_requested_bytes: 1024.0 * 1024.0 * 1024.0,
            memory_used_bytes: 0.0,
            ready_pods: 1,
            total_pods: 1,
            oom_kills: 0,
            pods: Vec::new(),
        }
    }

    #[test]
    fn a_minute_with_one_bad_step_is_one_violation_minute() {
        let model = AppModel::default();
        let mut acc = ScoreAccumulator::new(&model, 15.0);
        let none = ApplyOutcome::default();
        for step in 0..8 {
            let demand = if step == 5 { 95.0 } else { 50.0 };
            acc.add(step, &out(demand, 100.0, 2.0, 1.0), &none);
        }
        let s = acc.finish("t", "p");
        assert_eq!(s.minutes, 2.0);
        assert_eq!(s.slo_violation_minutes, 1);
        assert_eq!(s.dropped_requests, 0.0);
        assert!((s.cpu_core_hours - 2.0 * 120.0 / 3600.0).abs() < 1e-12);
        assert!((s.memory_gib_hours - 120.0 / 3600.0).abs() < 1e-12);
        assert!((s.slack - 0.5).abs() < 1e-12);
    }

    #[test]
    fn elasticity_metrics_match_the_definitions() {
        let model = AppModel::default();
        let mut acc = ScoreAccumulator::new(&model, 15.0);
        let none = ApplyOutcome::default();
        // d = 90/0.9 = 100; supply 50 (under by 50 %), then 200 (over by 100 %).
        acc.add(0, &out(90.0, 50.0, 1.0, 1.0), &none);
        acc.add(1, &out(90.0, 200.0, 1.0, 1.0), &none);
        let s = acc.finish("t", "p");
        assert!((s.theta_u - 25.0).abs() < 1e-9);
        assert!((s.theta_o - 50.0).abs() < 1e-9);
        assert!((s.tau_u - 50.0).abs() < 1e-9);
        assert!((s.tau_o - 50.0).abs() < 1e-9);
        assert!((s.dropped_requests - 40.0 * 15.0).abs() < 1e-9);
    }
}
