//! The simulation loop: a workload, a policy, the cluster model and the scorer.

use serde::Serialize;

use crate::cluster::{Cluster, PodTemplate};
use crate::policy::{Autoscaler, Observation, Oracle, PolicyKind, SimSettings};
use crate::score::{Score, ScoreAccumulator};
use crate::trace::Workload;

/// Series of one run for the report's charts: one point per `seconds_per_point`, each the mean over the
/// steps it covers (runs longer than `report::CHART_POINTS` steps are bucketed while they run, so a
/// seven-month trace does not keep millions of points per policy).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSeries {
    pub seconds_per_point: f64,
    pub demand_rps: Vec<f64>,
    pub capacity_rps: Vec<f64>,
    /// Desired replicas.
    pub replicas: Vec<f64>,
    pub ready_pods: Vec<f64>,
    pub cpu_requested_cores: Vec<f64>,
    pub cpu_used_cores: Vec<f64>,
    pub memory_requested_gib: Vec<f64>,
}

/// Accumulates bucket means for `RunSeries`.
#[derive(Debug, Clone)]
struct SeriesRecorder {
    bucket: usize,
    filled: usize,
    sums: [f64; 7],
    series: RunSeries,
}

impl SeriesRecorder {
    fn new(steps: usize, step_seconds: f64) -> Self {
        let bucket = steps.div_ceil(crate::report::CHART_POINTS).max(1);
        Self {
            bucket,
            filled: 0,
            sums: [0.0; 7],
            series: RunSeries {
                seconds_per_point: bucket as f64 * step_seconds,
                ..RunSeries::default()
            },
        }
    }

    fn push(&mut self, values: [f64; 7]) {
        for (sum, v) in self.sums.iter_mut().zip(values) {
            *sum += v;
        }
        self.filled += 1;
        if self.filled == self.bucket {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.filled == 0 {
            return;
        }
        let n = self.filled as f64;
        let [d, c, r, rp, cr, cu, mr] = self.sums.map(|v| v / n);
        let s = &mut self.series;
        s.demand_rps.push(d);
        s.capacity_rps.push(c);
        s.replicas.push(r);
        s.ready_pods.push(rp);
        s.cpu_requested_cores.push(cr);
        s.cpu_used_cores.push(cu);
        s.memory_requested_gib.push(mr);
        self.sums = [0.0; 7];
        self.filled = 0;
    }

    fn finish(mut self) -> RunSeries {
        self.flush();
        self.series
    }
}

/// A finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub score: Score,
    pub series: Option<RunSeries>,
}

/// How often the progress callback is called, in steps.
pub const PROGRESS_EVERY: u64 = 2048;

/// Runs policy `kind` over `workload`. `record` keeps per-step series; `progress` is called with the number of
/// steps done since the last call.
pub fn run(
    workload: &Workload,
    settings: &SimSettings,
    kind: PolicyKind,
    record: bool,
    progress: &mut dyn FnMut(u64),
) -> RunResult {
    let (replicas, template, mut policy): (u32, PodTemplate, Box<dyn Autoscaler>) = match kind {
        PolicyKind::Oracle => {
            let oracle = Oracle::new(settings, workload);
            let (replicas, template) =
                oracle.initial(workload.demand_rps.first().copied().unwrap_or(0.0));
            (replicas, template, Box::new(oracle))
        }
        _ => (
            settings.initial_replicas(kind, workload),
            settings.initial_template,
            settings.build(kind, workload),
        ),
    };
    run_policy(
        workload,
        settings,
        policy.as_mut(),
        replicas,
        template,
        record,
        progress,
    )
}

/// Runs any policy from a given starting Deployment.
pub fn run_policy(
    workload: &Workload,
    settings: &SimSettings,
    policy: &mut dyn Autoscaler,
    replicas: u32,
    template: PodTemplate,
    record: bool,
    progress: &mut dyn FnMut(u64),
) -> RunResult {
    let step_seconds = workload.step_seconds;
    let mut cluster = Cluster::new(
        settings.cluster,
        replicas,
        template,
        workload.start_unix as f64,
    );
    let mut acc = ScoreAccumulator::new(&settings.cluster.model, step_seconds);
    let mut series = record.then(|| SeriesRecorder::new(workload.demand_rps.len(), step_seconds));
    let (mut oom_total, mut restarts_total) = (0u64, 0u64);
    let mut pending = 0u64;
    for (k, &demand) in workload.demand_rps.iter().enumerate() {
        let now = workload.start_unix as f64 + k as f64 * step_seconds;
        let out = cluster.step(now, demand);
        oom_total += u64::from(out.oom_kills);
        restarts_total += u64::from(out.oom_kills);
        let obs = Observation {
            now: now.floor() as i64,
            step: k,
            step_seconds,
            replicas: cluster.replicas(),
            template: cluster.template(),
            rollout_in_progress: cluster.rollout_in_progress(),
            outcome: &out,
            oom_kills_total: oom_total,
            restarts_total,
        };
        let action = policy.decide(&obs);
        let applied = cluster.apply(&action, now);
        restarts_total += u64::from(applied.resize_restarts);
        acc.add(k as u64, &out, &applied);
        if let Some(s) = series.as_mut() {
            s.push([
                out.demand_rps,
                out.capacity_rps,
                f64::from(cluster.replicas()),
                f64::from(out.ready_pods),
                out.cpu_requested_cores,
                out.cpu_used_cores,
                out.memory_requested_bytes / (1024.0 * 1024.0 * 1024.0),
            ]);
        }
        pending += 1;
        if pending >= PROGRESS_EVERY {
            progress(pending);
            pending = 0;
        }
    }
    if pending > 0 {
        progress(pending);
    }
    RunResult {
        score: acc.finish(&workload.name, policy.name()),
        series: series.map(SeriesRecorder::finish),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppModel;
    use crate::trace::{Pattern, synthetic};
    use proptest::prelude::*;

    fn quiet(_: u64) {}

    #[test]
    fn long_runs_are_bucketed_for_charts() {
        let settings = SimSettings::default();
        let w = synthetic(Pattern::Sine, 24.0 * 7.0, &AppModel::default());
        let s = run(&w, &settings, PolicyKind::Hpa, true, &mut quiet)
            .series
            .unwrap_or_default();
        assert!(s.demand_rps.len() <= crate::report::CHART_POINTS);
        assert!(s.demand_rps.len() * 40 >= crate::report::CHART_POINTS * 39);
        let mean_in = w.demand_rps.iter().sum::<f64>() / w.demand_rps.len() as f64;
        let mean_out = s.demand_rps.iter().sum::<f64>() / s.demand_rps.len() as f64;
        // Bucket means of equal buckets (the last one partial) keep the mean.
        assert!((mean_in - mean_out).abs() < 1e-3 * mean_in);
        assert_eq!(s.seconds_per_point, 34.0 * 15.0);
    }

    #[test]
    fn runs_are_deterministic() {
        let settings = SimSettings::default();
        let w = synthetic(Pattern::Spike, 4.0, &AppModel::default());
        for kind in PolicyKind::ALL {
            let a = run(&w, &settings, kind, true, &mut quiet);
            let b = run(&w, &settings, kind, true, &mut quiet);
            assert_eq!(a, b, "{kind:?}");
        }
    }

    #[test]
    fn oracle_costs_no_more_than_static_at_peak_and_meets_the_slo() {
        let settings = SimSettings::default();
        for pattern in [
            Pattern::Sine,
            Pattern::Step,
            Pattern::Spike,
            Pattern::Constant,
        ] {
            let w = synthetic(pattern, 6.0, &AppModel::default());
            let oracle = run(&w, &settings, PolicyKind::Oracle, false, &mut quiet).score;
            let fixed = run(&w, &settings, PolicyKind::Static, false, &mut quiet).score;
            assert!(oracle.cpu_core_hours <= fixed.cpu_core_hours, "{pattern:?}");
            assert_eq!(oracle.slo_violation_minutes, 0, "{pattern:?}");
            assert_eq!(oracle.restarts, 0, "{pattern:?}");
            assert_eq!(fixed.scale_actions, 0);
        }
    }

    #[test]
    fn hpa_scales_up_under_a_step_and_back_down() {
        let settings = SimSettings::default();
        let w = synthetic(Pattern::Step, 3.0, &AppModel::default());
        let r = run(&w, &settings, PolicyKind::Hpa, true, &mut quiet);
        let s = r.series.unwrap_or_default();
        let peak = s.replicas.iter().copied().fold(0.0, f64::max);
        assert!(peak >= 8.0, "peak replicas {peak}");
        assert!(s.replicas.last().copied().unwrap_or(0.0) < peak);
        assert_eq!(r.score.restarts, 0, "HPA never resizes");
    }

    #[test]
    fn in_place_the_serving_pods_carry_a_spike_while_new_pods_start() {
        let w = synthetic(Pattern::Spike, 6.0, &AppModel::default());
        let mut settings = SimSettings::default();
        let bridged = run(&w, &settings, PolicyKind::Ipa, false, &mut quiet).score;
        settings.cluster.in_place_resize = false;
        let rolled = run(&w, &settings, PolicyKind::Ipa, false, &mut quiet).score;
        assert!(
            bridged.slo_violation_minutes < rolled.slo_violation_minutes,
            "in place {} vs not {}",
            bridged.slo_violation_minutes,
            rolled.slo_violation_minutes
        );
        assert_eq!(bridged.restarts, 0);
    }

    #[test]
    fn vpa_with_one_replica_never_resizes() {
        let settings = SimSettings {
            vpa_replicas: 1,
            ..SimSettings::default()
        };
        let w = synthetic(Pattern::Sine, 6.0, &AppModel::default());
        let r = run(&w, &settings, PolicyKind::Vpa, false, &mut quiet);
        assert_eq!(r.score.scale_actions, 0);
    }

    #[test]
    fn vpa_with_two_replicas_right_sizes() {
        let mut settings = SimSettings::default();
        let w = synthetic(Pattern::Constant, 3.0, &AppModel::default());
        let r = run(&w, &settings, PolicyKind::Vpa, false, &mut quiet);
        assert!(r.score.scale_actions >= 1);
        assert_eq!(r.score.restarts, 0, "InPlaceOrRecreate resizes in place");
        settings.cluster.in_place_resize = false;
        let r = run(&w, &settings, PolicyKind::Vpa, false, &mut quiet);
        assert!(r.score.restarts >= 2, "recreated where in place is off");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Within the replica bounds (peak ≤ 40 one-core pods at the target), perfect foresight never costs more
        /// CPU than provisioning for the peak, and never violates the SLO.
        #[test]
        fn oracle_beats_static_at_peak(demand in prop::collection::vec(0.0f64..1300.0, 1..300)) {
            let settings = SimSettings::default();
            let mut w = synthetic(Pattern::Constant, 0.01, &AppModel::default());
            w.demand_rps = demand;
            let oracle = run(&w, &settings, PolicyKind::Oracle, false, &mut quiet).score;
            let fixed = run(&w, &settings, PolicyKind::Static, false, &mut quiet).score;
            // 0.2 %: requests are rounded up to whole millicores.
            prop_assert!(oracle.cpu_core_hours <= fixed.cpu_core_hours * 1.002 + 1e-9,
                "oracle {} static {}", oracle.cpu_core_hours, fixed.cpu_core_hours);
            prop_assert_eq!(oracle.slo_violation_minutes, 0);
            prop_assert_eq!(oracle.restarts, 0);
        }

        #[test]
        fn conservation_and_non_negative_costs(
            demand in prop::collection::vec(0.0f64..1500.0, 1..200),
            kind in prop::sample::select(PolicyKind::ALL.to_vec()),
        ) {
            let settings = SimSettings::default();
            let mut w = synthetic(Pattern::Constant, 0.01, &AppModel::default());
            w.demand_rps = demand.clone();
            let r = run(&w, &settings, kind, true, &mut quiet);
            let s = r.score;
            prop_assert!(s.cpu_core_hours >= 0.0 && s.memory_gib_hours >= 0.0);
            prop_assert!(s.dropped_requests >= 0.0);
            prop_assert!(s.theta_u >= 0.0 && s.theta_o >= 0.0);
            prop_assert!(s.tau_u + s.tau_o <= 100.0 + 1e-9);
            prop_assert!(s.slo_violation_minutes as f64 <= s.minutes.ceil());
            prop_assert!(s.restarts >= s.oom_kills);
            let total_demand: f64 = demand.iter().sum::<f64>() * w.step_seconds;
            prop_assert!(s.dropped_requests <= total_demand + 1e-6);
            let series = r.series.unwrap_or_default();
            for (k, &d) in series.demand_rps.iter().enumerate() {
                prop_assert!((d - demand[k]).abs() < 1e-9);
            }
        }
    }
}
