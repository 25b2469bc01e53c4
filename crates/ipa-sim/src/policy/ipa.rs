//! IPA as the controller runs it: every `syncPeriod` (15 s) the fast loop summarizes the observed window into a
//! `MetricsSnapshot` and calls `ipa_core::decide` without an advisor; every `interval` (60 s) the advisory loop
//! asks an `Advisor` (the built-in recommender by default) and hands its proposal to the same `decide`, with the
//! `GuardState` it keeps. Nothing here decides anything on its own: the decision is the core's.

use std::collections::VecDeque;

use ipa_core::{
    Advice, ContainerSnapshot, DemandHistory, EventSummary, GuardState, MetricsSnapshot, Policy,
    Recommendation, ResolvedPolicy, Resources, Rollout, TargetRef,
};

use crate::cluster::{Action, PodTemplate};
use crate::policy::{Autoscaler, Observation, SimSettings};

/// The container name the simulated Deployment has.
pub const CONTAINER: &str = "app";
/// Length of the statistics window in the snapshot.
pub const WINDOW_SECONDS: u32 = 300;
/// Step and length of the demand history handed to the forecaster.
pub const HISTORY_STEP_SECONDS: u32 = 300;
pub const HISTORY_SECONDS: u32 = 24 * 3600;

/// Who advises the advisory loop: the built-in recommender, a random or replayed advisor, or a live agent.
///
/// Synchronous on purpose: the simulator is single-threaded per run and deterministic. An advisor that talks to
/// an agent lives in a crate with an HTTP client (blocking, with a timeout); this crate does no IO.
pub trait Advisor: Send {
    fn name(&self) -> &str;
    /// `Ok(None)`: the built-in recommender advises. `Ok(Some(_))`: a proposal from outside the core, held like a
    /// model's. `Err(reason)`: the advisor failed, and the built-in stands in — exactly as in the controller.
    fn advise(
        &mut self,
        snapshot: &MetricsSnapshot,
        policy: &ResolvedPolicy,
    ) -> Result<Option<Recommendation>, String>;
}

/// The built-in recommender (`ipa_core::recommend`, through `Advice::Builtin`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinAdvisor;

impl Advisor for BuiltinAdvisor {
    fn name(&self) -> &str {
        "builtin"
    }
    fn advise(
        &mut self,
        _snapshot: &MetricsSnapshot,
        _policy: &ResolvedPolicy,
    ) -> Result<Option<Recommendation>, String> {
        Ok(None)
    }
}

/// One step's observation, as the collector would have scraped it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Mean CPU cores over ready pods (NaN when none is ready: missing, not zero).
    cpu_per_pod: f64,
    /// Highest working set over ready pods (NaN when none is ready).
    memory_per_pod: f64,
    request_rate: f64,
    oom_kills_total: u64,
}

pub struct Ipa {
    advisor: Box<dyn Advisor>,
    name: String,
    policy: ResolvedPolicy,
    state: GuardState,
    window: VecDeque<Sample>,
    window_steps: usize,
    /// Running sums for the current history bucket: (cpu, rate, samples).
    bucket: (f64, f64, u32),
    bucket_start: Option<i64>,
    history_cpu: VecDeque<Option<f64>>,
    history_rate: VecDeque<Option<f64>>,
    last_decision: Option<i64>,
    last_advice: Option<i64>,
    last_oom_at: Option<i64>,
}

impl std::fmt::Debug for Ipa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipa")
            .field("advisor", &self.advisor.name())
            .field("policy", &self.policy)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Ipa {
    /// IPA with the policy every simulated run uses: replicas within the cluster's bounds, start-up time from
    /// the application model, everything else at `Policy`'s defaults.
    pub fn new(settings: &SimSettings, advisor: Box<dyn Advisor>) -> Self {
        let policy = Policy {
            min_replicas: Some(settings.cluster.min_replicas),
            max_replicas: Some(settings.cluster.max_replicas),
            target_utilization: Some(settings.target_utilization),
            startup_seconds: Some(settings.cluster.model.startup_seconds.ceil() as u32),
            max_cpu: Some(settings.cluster.max_pod_cpu),
            ..Policy::default()
        }
        // The controller's `InPlace` update mode, where the cluster has it.
        .resolve_for(settings.cluster.in_place_resize);
        Self::with_policy(settings, advisor, policy)
    }

    pub fn with_policy(
        settings: &SimSettings,
        advisor: Box<dyn Advisor>,
        policy: ResolvedPolicy,
    ) -> Self {
        let step = settings.cluster.step_seconds.max(1.0);
        let name = if advisor.name() == "builtin" {
            "ipa".to_string()
        } else {
            format!("ipa+{}", advisor.name())
        };
        Self {
            advisor,
            name,
            policy,
            state: GuardState::default(),
            window: VecDeque::new(),
            window_steps: ((f64::from(WINDOW_SECONDS) / step).round() as usize).max(1),
            bucket: (0.0, 0.0, 0),
            bucket_start: None,
            history_cpu: VecDeque::new(),
            history_rate: VecDeque::new(),
            last_decision: None,
            last_advice: None,
            last_oom_at: None,
        }
    }

    fn record(&mut self, obs: &Observation<'_>) {
        let ready: Vec<_> = obs.outcome.pods.iter().filter(|p| p.ready).collect();
        let (cpu_per_pod, memory_per_pod) = if ready.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                ready.iter().map(|p| p.cpu_cores).sum::<f64>() / ready.len() as f64,
                ready.iter().map(|p| p.memory_bytes).fold(0.0, f64::max),
            )
        };
        if let Some(last) = self.window.back()
            && obs.oom_kills_total > last.oom_kills_total
        {
            self.last_oom_at = Some(obs.now);
        }
        self.window.push_back(Sample {
            cpu_per_pod,
            memory_per_pod,
            request_rate: obs.outcome.demand_rps,
            oom_kills_total: obs.oom_kills_total,
        });
        while self.window.len() > self.window_steps + 1 {
            self.window.pop_front();
        }
        // The 5-minute history for the forecaster.
        let step = i64::from(HISTORY_STEP_SECONDS);
        let start = obs.now - obs.now.rem_euclid(step);
        match self.bucket_start {
            Some(s) if s == start => {}
            Some(_) => {
                let (cpu, rate, n) = self.bucket;
                let mean = |sum: f64| (n > 0).then(|| sum / f64::from(n));
                self.history_cpu.push_back(mean(cpu));
                self.history_rate.push_back(mean(rate));
                let keep = (HISTORY_SECONDS / HISTORY_STEP_SECONDS) as usize;
                while self.history_cpu.len() > keep {
                    self.history_cpu.pop_front();
                    self.history_rate.pop_front();
                }
                self.bucket = (0.0, 0.0, 0);
                self.bucket_start = Some(start);
            }
            None => self.bucket_start = Some(start),
        }
        self.bucket.0 += obs.outcome.cpu_used_cores;
        self.bucket.1 += obs.outcome.demand_rps;
        self.bucket.2 += 1;
    }

    /// The snapshot the controller would build now.
    pub fn snapshot(&self, obs: &Observation<'_>) -> MetricsSnapshot {
        let step = obs.step_seconds;
        let samples: Vec<&Sample> = self
            .window
            .iter()
            .rev()
            .take(self.window_steps)
            .rev()
            .collect();
        let series = |f: fn(&Sample) -> f64| {
            let values: Vec<f64> = samples.iter().map(|s| f(s)).collect();
            ipa_core::stats::summarize(&values, step)
        };
        let cpu = series(|s| s.cpu_per_pod);
        let memory = series(|s| s.memory_per_pod);
        let rate = series(|s| s.request_rate);
        let oldest = self.window.front();
        let oom_kills = oldest.map_or(0, |o| obs.oom_kills_total.saturating_sub(o.oom_kills_total));
        // Container restarts as kube-state-metrics counts them: only OOM kills restart a container here; pods
        // replaced by a rolling update are new pods with a zero restart count.
        let restarts = oom_kills;
        let mut snapshot = MetricsSnapshot::new(
            TargetRef {
                namespace: "sim".to_string(),
                deployment: "app".to_string(),
            },
            obs.now,
            obs.replicas,
        );
        snapshot.window_seconds = WINDOW_SECONDS;
        snapshot.ready_replicas = Some(obs.outcome.ready_pods);
        snapshot.cpu_per_pod = cpu;
        snapshot.memory_per_pod = memory;
        snapshot.request_rate = rate;
        snapshot.oom_kills = u32::try_from(oom_kills).unwrap_or(u32::MAX);
        snapshot.restarts = u32::try_from(restarts).unwrap_or(u32::MAX);
        snapshot.containers = vec![container_snapshot(&serving_size(obs), cpu, memory)];
        if oom_kills > 0 {
            snapshot.events.push(EventSummary {
                kind: "Warning".to_string(),
                reason: "OOMKilling".to_string(),
                message: format!("container {CONTAINER} was OOM-killed (memory limit reached)"),
                count: snapshot.oom_kills,
                last_seen: self.last_oom_at.unwrap_or(obs.now),
            });
        }
        if obs.rollout_in_progress {
            snapshot.rollout = Some(Rollout {
                smallest_pod_cpu_request: obs
                    .outcome
                    .pods
                    .iter()
                    .map(|p| p.template.cpu_request)
                    .min(),
            });
        }
        if cpu.is_none() {
            snapshot.missing.push("cpu".to_string());
        }
        if memory.is_none() {
            snapshot.missing.push("memory".to_string());
        }
        if !self.history_cpu.is_empty() {
            snapshot.history = Some(DemandHistory {
                step_seconds: HISTORY_STEP_SECONDS,
                cpu_cores: self.history_cpu.iter().copied().collect(),
                request_rate: self.history_rate.iter().copied().collect(),
            });
        }
        snapshot
    }
}

/// The size the ready pods run at (in place, it may differ from the template's: the bridge), else the
/// template's — what the controller reads from the pods of an in-place target.
fn serving_size(obs: &Observation<'_>) -> PodTemplate {
    obs.outcome
        .pods
        .iter()
        .find(|p| p.ready && p.current)
        .map_or(obs.template, |p| p.template)
}

fn container_snapshot(
    template: &PodTemplate,
    cpu: Option<ipa_core::SeriesStats>,
    memory: Option<ipa_core::SeriesStats>,
) -> ContainerSnapshot {
    ContainerSnapshot {
        name: CONTAINER.to_string(),
        requests: Resources {
            cpu: Some(template.cpu_request),
            memory: Some(template.memory_request),
        },
        limits: Resources {
            cpu: template.cpu_limit,
            memory: template.memory_limit,
        },
        cpu_cores: cpu,
        memory_bytes: memory,
    }
}

/// The template after applying a decision's container resources; `None` fields leave the value as it is
/// (a strategic-merge patch that omits a field does not change it).
fn apply_container(
    template: &PodTemplate,
    requests: &Resources,
    limits: &Resources,
) -> PodTemplate {
    PodTemplate {
        cpu_request: requests.cpu.unwrap_or(template.cpu_request),
        cpu_limit: limits.cpu.or(template.cpu_limit),
        memory_request: requests.memory.unwrap_or(template.memory_request),
        memory_limit: limits.memory.or(template.memory_limit),
    }
}

impl Autoscaler for Ipa {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Action {
        self.record(obs);
        let due = |last: Option<i64>, every: u32| {
            last.is_none_or(|last| obs.now.saturating_sub(last) >= i64::from(every))
        };
        if !due(self.last_decision, self.policy.sync_period_seconds) {
            return Action::default();
        }
        self.last_decision = Some(obs.now);
        let snapshot = self.snapshot(obs);
        let advised = due(self.last_advice, self.policy.interval_seconds).then(|| {
            self.last_advice = Some(obs.now);
            self.advisor.advise(&snapshot, &self.policy)
        });
        let advice = match &advised {
            None => Advice::None,
            Some(Ok(None)) => Advice::Builtin,
            Some(Ok(Some(proposal))) => Advice::Proposal(proposal),
            Some(Err(reason)) => Advice::Failed(reason),
        };
        let decision = ipa_core::decide(&snapshot, &self.policy, advice, &self.state, obs.now);
        self.state = decision.state;
        let sized = |containers: &[ipa_core::ContainerRecommendation], from: &PodTemplate| {
            containers
                .iter()
                .find(|c| c.name == CONTAINER)
                .map(|c| apply_container(from, &c.requests, &c.limits))
                .filter(|t| t != from)
        };
        let serving = serving_size(obs);
        Action {
            replicas: (decision.replicas != obs.replicas).then_some(decision.replicas),
            template: sized(&decision.containers, &obs.template),
            // Resized in place where the cluster allows it (the controller's `InPlace` update mode).
            in_place: true,
            resize_ready: sized(&decision.running, &serving),
            resize_starting: sized(&decision.born, &obs.template),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{PodView, StepOutcome};

    fn outcome(ready: u32, cpu: f64) -> StepOutcome {
        let t = SimSettings::default().initial_template;
        StepOutcome {
            demand_rps: 10.0,
            served_rps: 10.0,
            dropped_rps: 0.0,
            capacity_rps: 100.0,
            cpu_used_cores: cpu * f64::from(ready),
            cpu_requested_cores: f64::from(ready),
            cpu_charged_cores: f64::from(ready),
            memory_requested_bytes: 0.0,
            memory_used_bytes: 0.0,
            ready_pods: ready,
            total_pods: ready,
            oom_kills: 0,
            pods: (0..ready)
                .map(|_| PodView {
                    ready: true,
                    age_seconds: 100.0,
                    template: t,
                    cpu_cores: cpu,
                    memory_bytes: 80.0 * 1024.0 * 1024.0,
                    current: true,
                    seconds_until_ready: 0.0,
                })
                .collect(),
        }
    }

    /// The simulator's `ipa` is `ipa_core::decide` and nothing else: at every step, what it applies is what
    /// `decide` returns for the snapshot it built, the advice of that step and the guard state it had — the
    /// same call the controller makes with its own snapshot.
    #[test]
    fn the_policy_applies_exactly_what_decide_returns() {
        let settings = SimSettings::default();
        let mut ipa = Ipa::new(&settings, Box::new(BuiltinAdvisor));
        let template = settings.initial_template;
        let mut replicas = 2u32;
        let mut changes = 0;
        for step in 0..240u32 {
            let cpu = 0.1 + 0.9 * (f64::from(step) / 25.0).sin().abs();
            let out = outcome(replicas, cpu);
            let now = 1_000_000 + i64::from(step) * 15;
            let obs = Observation {
                now,
                step: step as usize,
                step_seconds: 15.0,
                replicas,
                template,
                rollout_in_progress: false,
                outcome: &out,
                oom_kills_total: 0,
                restarts_total: 0,
            };
            let state_before = ipa.state.clone();
            let (decided_before, advised_before) = (ipa.last_decision, ipa.last_advice);
            let action = ipa.decide(&obs);
            if ipa.last_decision == decided_before {
                assert_eq!(
                    action,
                    Action::default(),
                    "no decision between sync periods"
                );
                continue;
            }
            let advice = if ipa.last_advice == advised_before {
                Advice::None
            } else {
                Advice::Builtin
            };
            let expected =
                ipa_core::decide(&ipa.snapshot(&obs), &ipa.policy, advice, &state_before, now);
            assert_eq!(
                action.replicas,
                (expected.replicas != replicas).then_some(expected.replicas),
                "step {step}"
            );
            assert_eq!(ipa.state, expected.state, "step {step}");
            if let Some(r) = action.replicas {
                replicas = r;
                changes += 1;
            }
        }
        assert!(
            changes > 2,
            "the load moved the replicas: {changes} changes"
        );
    }

    #[test]
    fn snapshot_summarizes_the_window_and_reports_missing_cpu() {
        let settings = SimSettings::default();
        let mut ipa = Ipa::new(&settings, Box::new(BuiltinAdvisor));
        let template = settings.initial_template;
        for step in 0..30 {
            let out = outcome(2, 0.5);
            let obs = Observation {
                now: 1_000_000 + step * 15,
                step: step as usize,
                step_seconds: 15.0,
                replicas: 2,
                template,
                rollout_in_progress: false,
                outcome: &out,
                oom_kills_total: 0,
                restarts_total: 0,
            };
            let _ = ipa.decide(&obs);
        }
        let out = outcome(0, 0.0);
        let obs = Observation {
            now: 1_000_000 + 30 * 15,
            step: 30,
            step_seconds: 15.0,
            replicas: 2,
            template,
            rollout_in_progress: false,
            outcome: &out,
            oom_kills_total: 1,
            restarts_total: 1,
        };
        ipa.record(&obs);
        let s = ipa.snapshot(&obs);
        assert_eq!(s.window_seconds, WINDOW_SECONDS);
        let cpu = s.cpu_per_pod.unwrap_or_default();
        assert_eq!(
            cpu.samples, 19,
            "the not-ready step is missing data, not zero"
        );
        assert!((cpu.mean - 0.5).abs() < 1e-9);
        assert_eq!(s.oom_kills, 1);
        assert_eq!(s.containers.len(), 1);
        assert_eq!(s.containers[0].requests.cpu, Some(template.cpu_request));
        assert!(s.history.is_some());
    }
}
