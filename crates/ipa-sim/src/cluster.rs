//! The cluster model: one Deployment's pods, their lifecycle, and what they serve in each step.
//!
//! Deterministic and time-stepped. Per step, in this order: pods whose start-up or restart delay ended become
//! ready; the ready pods serve the step's demand (split evenly, as a round-robin Service does), each capped by
//! its CPU; a pod whose working set passes its memory limit is OOM-killed (what it was serving in that step is
//! lost) and is out for `restart_seconds`; the policy observes and acts; the Deployment controller reconciles
//! (scale, or a rolling update with a Deployment's default 25 % surge / 25 % unavailable when the pod template
//! changed). A policy may ask for an in-place resize (`pods/resize`, stable in Kubernetes 1.35); where the
//! cluster does not allow it (`in_place_resize: false`, clusters before 1.33) the same change rolls the pods.

use ipa_core::{Bytes, CpuMillis};
use serde::Serialize;

use crate::model::{AppModel, split_load};

/// Requests and limits of the (single) application container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PodTemplate {
    pub cpu_request: CpuMillis,
    pub cpu_limit: Option<CpuMillis>,
    pub memory_request: Bytes,
    pub memory_limit: Option<Bytes>,
}

impl PodTemplate {
    /// CPU cores the pod can use: its limit; without a limit, its request × `burst_allowance` (the node is
    /// assumed to have that much idle CPU).
    pub fn cpu_cap_cores(&self, burst_allowance: f64) -> f64 {
        match self.cpu_limit {
            Some(limit) => limit.as_cores(),
            None => self.cpu_request.as_cores() * burst_allowance,
        }
    }
}

/// Parameters of the cluster model. One set for every policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClusterConfig {
    pub model: AppModel,
    pub step_seconds: f64,
    /// CPU a pod without a CPU limit may use, as a multiple of its request.
    pub burst_allowance: f64,
    /// Replicas the Deployment is clamped to (every policy, the oracle included).
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// A rolling update's `maxSurge` and `maxUnavailable`, in percent of `replicas` (Kubernetes rounds the surge
    /// up and the unavailability down; both 25 % by default).
    pub max_surge_percent: u32,
    pub max_unavailable_percent: u32,
    /// The cluster resizes running pods in place when a policy asks for it; off, every resize is a rollout.
    pub in_place_resize: bool,
    /// The largest CPU request a pod may have (what a node can hold). Every policy and the oracle are bound by it.
    pub max_pod_cpu: CpuMillis,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            model: AppModel::default(),
            step_seconds: crate::trace::STEP_SECONDS,
            burst_allowance: 1.5,
            min_replicas: 1,
            max_replicas: 40,
            max_surge_percent: 25,
            max_unavailable_percent: 25,
            in_place_resize: true,
            max_pod_cpu: CpuMillis(4000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Created; serves from `ready_at` (unix seconds, fractional).
    Starting {
        ready_at: f64,
    },
    Ready,
    /// OOM-killed; serves again from `ready_at`.
    Restarting {
        ready_at: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pod {
    generation: u64,
    template: PodTemplate,
    phase: Phase,
    created_at: f64,
}

impl Pod {
    fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }
}

/// What one pod looks like to a policy after a step (what metrics-server and kube-state-metrics would show).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodView {
    pub ready: bool,
    pub age_seconds: f64,
    pub template: PodTemplate,
    /// Usage in the last step (0 when not ready).
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    /// True when this pod is of the Deployment's current template.
    pub current: bool,
    /// Seconds until a starting or restarting pod serves (0 when ready). Only the oracle reads this.
    pub seconds_until_ready: f64,
}

/// Everything that happened in one step, for scoring and for the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub demand_rps: f64,
    pub served_rps: f64,
    pub dropped_rps: f64,
    /// Requests/s the ready pods could serve at their CPU caps.
    pub capacity_rps: f64,
    pub cpu_used_cores: f64,
    pub cpu_requested_cores: f64,
    /// What the pods cost: each pod's CPU request, or its usage where it used more (bursting above a request
    /// takes a node's spare CPU, which someone pays for). Without it a policy could buy serving capacity for free
    /// by raising limits while keeping requests low.
    pub cpu_charged_cores: f64,
    pub memory_requested_bytes: f64,
    pub memory_used_bytes: f64,
    pub ready_pods: u32,
    pub total_pods: u32,
    pub oom_kills: u32,
    pub pods: Vec<PodView>,
}

/// What a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Action {
    pub replicas: Option<u32>,
    pub template: Option<PodTemplate>,
    /// Apply the template to running pods without restarting them (in-place resize), where the cluster allows it.
    pub in_place: bool,
    /// Resize the ready pods of the current template in place to this size, leaving the template (and every
    /// pod created later) as it is: IPA's bridge while new replicas start. Ignored where the cluster has no
    /// in-place resize.
    pub resize_ready: Option<PodTemplate>,
    /// Resize the pods of the current template still starting in place to this size (IPA's bridge: a pod
    /// born while the serving ones are grown takes their load once ready). Ignored without in-place resize.
    pub resize_starting: Option<PodTemplate>,
}

/// Counters from applying actions and reconciling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// The action changed the replica count or the template.
    pub scale_action: bool,
    /// Pods replaced by a rolling update in this step.
    pub resize_restarts: u32,
}

/// One Deployment and its pods.
#[derive(Debug, Clone)]
pub struct Cluster {
    config: ClusterConfig,
    replicas: u32,
    template: PodTemplate,
    generation: u64,
    pods: Vec<Pod>,
}

impl Cluster {
    /// A Deployment whose `replicas` pods are already ready at time `now`.
    pub fn new(config: ClusterConfig, replicas: u32, template: PodTemplate, now: f64) -> Self {
        let replicas = replicas.clamp(
            config.min_replicas,
            config.max_replicas.max(config.min_replicas),
        );
        let pods = (0..replicas)
            .map(|_| Pod {
                generation: 0,
                template,
                phase: Phase::Ready,
                created_at: now - config.model.startup_seconds,
            })
            .collect();
        Self {
            config,
            replicas,
            template,
            generation: 0,
            pods,
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }
    pub fn replicas(&self) -> u32 {
        self.replicas
    }
    pub fn template(&self) -> PodTemplate {
        self.template
    }
    /// `maxSurge` (rounded up) and `maxUnavailable` (rounded down) in pods; never both zero.
    fn rolling_update_bounds(&self) -> (usize, usize) {
        let replicas = self.replicas as usize;
        let surge = (replicas * self.config.max_surge_percent as usize).div_ceil(100);
        let unavailable = replicas * self.config.max_unavailable_percent as usize / 100;
        if surge == 0 && unavailable == 0 {
            (1, 0)
        } else {
            (surge, unavailable)
        }
    }

    /// True while pods of an older template are still running.
    pub fn rollout_in_progress(&self) -> bool {
        self.pods.iter().any(|p| p.generation != self.generation)
    }

    /// Serves `demand_rps` for one step starting at `now`.
    pub fn step(&mut self, now: f64, demand_rps: f64) -> StepOutcome {
        let demand_rps = if demand_rps.is_finite() {
            demand_rps.max(0.0)
        } else {
            0.0
        };
        self.ready_due(now);
        let burst = self.config.burst_allowance;
        let model = self.config.model;
        let ready_idx: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].ready())
            .collect();
        let limits: Vec<(Option<f64>, Option<f64>)> = ready_idx
            .iter()
            .map(|&i| {
                let t = self.pods[i].template;
                (
                    Some(t.cpu_cap_cores(burst)),
                    t.memory_limit.map(Bytes::as_f64),
                )
            })
            .collect();
        let loads = split_load(&model, demand_rps, &limits);
        let mut usage = vec![(0.0f64, 0.0f64); self.pods.len()];
        let (mut served, mut capacity, mut cpu_used, mut memory_used) = (0.0, 0.0, 0.0, 0.0);
        let mut oom_kills = 0u32;
        for (&i, (load, limit)) in ready_idx.iter().zip(loads.iter().zip(&limits)) {
            capacity += model.capacity_rps(limit.0.unwrap_or(f64::INFINITY));
            usage[i] = (load.cpu_cores, load.memory_bytes);
            cpu_used += load.cpu_cores;
            memory_used += load.memory_bytes;
            if load.oom_killed {
                oom_kills += 1;
                self.pods[i].phase = Phase::Restarting {
                    ready_at: now + model.restart_seconds,
                };
            } else {
                served += load.served_rps;
            }
        }
        let served = served.min(demand_rps);
        let (mut cpu_requested, mut cpu_charged, mut memory_requested) = (0.0, 0.0, 0.0);
        for (pod, &(cpu, _)) in self.pods.iter().zip(&usage) {
            let request = pod.template.cpu_request.as_cores();
            cpu_requested += request;
            cpu_charged += request.max(cpu);
            memory_requested += pod.template.memory_request.as_f64();
        }
        let pods = self.views(now, &usage);
        StepOutcome {
            demand_rps,
            served_rps: served,
            dropped_rps: (demand_rps - served).max(0.0),
            capacity_rps: capacity,
            cpu_used_cores: cpu_used,
            cpu_requested_cores: cpu_requested,
            cpu_charged_cores: cpu_charged,
            memory_requested_bytes: memory_requested,
            memory_used_bytes: memory_used,
            ready_pods: ready_idx.len() as u32 - oom_kills,
            total_pods: self.pods.len() as u32,
            oom_kills,
            pods,
        }
    }

    /// Pods whose start-up or restart is over by `now` become ready.
    fn ready_due(&mut self, now: f64) {
        for pod in &mut self.pods {
            match pod.phase {
                Phase::Starting { ready_at } | Phase::Restarting { ready_at }
                    if ready_at <= now + 1e-9 =>
                {
                    pod.phase = Phase::Ready;
                }
                _ => {}
            }
        }
    }

    /// What each pod looks like at `now`, with its (CPU cores, memory bytes) used this step.
    fn views(&self, now: f64, usage: &[(f64, f64)]) -> Vec<PodView> {
        self.pods
            .iter()
            .zip(usage)
            .map(|(pod, &(cpu, memory))| PodView {
                ready: pod.ready(),
                age_seconds: now - pod.created_at,
                template: pod.template,
                cpu_cores: cpu,
                memory_bytes: memory,
                current: pod.generation == self.generation,
                seconds_until_ready: match pod.phase {
                    Phase::Ready => 0.0,
                    Phase::Starting { ready_at } | Phase::Restarting { ready_at } => {
                        (ready_at - now).max(0.0)
                    }
                },
            })
            .collect()
    }

    /// Applies a policy's action at `now` and reconciles the Deployment.
    pub fn apply(&mut self, action: &Action, now: f64) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        if let Some(replicas) = action.replicas {
            let replicas = replicas.clamp(
                self.config.min_replicas,
                self.config.max_replicas.max(self.config.min_replicas),
            );
            if replicas != self.replicas {
                self.replicas = replicas;
                outcome.scale_action = true;
            }
        }
        if let Some(template) = action.template
            && template != self.template
        {
            self.template = template;
            outcome.scale_action = true;
            if action.in_place && self.config.in_place_resize {
                for pod in &mut self.pods {
                    pod.template = template;
                }
            } else {
                self.generation += 1;
            }
        }
        if self.config.in_place_resize {
            let generation = self.generation;
            for pod in self.pods.iter_mut().filter(|p| p.generation == generation) {
                let size = if pod.ready() {
                    action.resize_ready
                } else {
                    action.resize_starting
                };
                if let Some(size) = size
                    && pod.template != size
                {
                    pod.template = size;
                    outcome.scale_action = true;
                }
            }
        }
        outcome.resize_restarts = self.reconcile(now);
        outcome
    }

    /// The Deployment controller: scale to `replicas`; roll pods of an old template with `maxSurge` and
    /// `maxUnavailable` as a Deployment's `RollingUpdate` strategy does. Returns how many old-template pods were
    /// replaced.
    fn reconcile(&mut self, now: f64) -> u32 {
        let generation = self.generation;
        let replicas = self.replicas as usize;
        let (surge, unavailable) = self.rolling_update_bounds();
        let mut replaced = 0u32;
        // Old pods that do not serve can go at once (they count for no availability).
        let before = self.pods.len();
        self.pods
            .retain(|p| p.generation == generation || p.ready());
        replaced += (before - self.pods.len()) as u32;
        // Old ready pods go while the ready pods that stay cover `replicas − maxUnavailable`.
        let min_available = replicas.saturating_sub(unavailable);
        loop {
            let ready = self.pods.iter().filter(|p| p.ready()).count();
            let old = self.pods.iter().rposition(|p| p.generation != generation);
            match old {
                Some(i) if ready > min_available => {
                    self.pods.remove(i);
                    replaced += 1;
                }
                _ => break,
            }
        }
        let old_left = self
            .pods
            .iter()
            .filter(|p| p.generation != generation)
            .count();
        let surge = if old_left > 0 { surge } else { 0 };
        let mut current = self.pods.len() - old_left;
        while current < replicas && self.pods.len() < replicas + surge {
            self.pods.push(Pod {
                generation,
                template: self.template,
                phase: Phase::Starting {
                    ready_at: now + self.config.model.startup_seconds,
                },
                created_at: now,
            });
            current += 1;
        }
        // Scale down the current template's pods: not-ready first, then the youngest.
        while current > replicas {
            let victim = self
                .pods
                .iter()
                .rposition(|p| p.generation == generation && !p.ready())
                .or_else(|| self.pods.iter().rposition(|p| p.generation == generation));
            match victim {
                Some(i) => {
                    self.pods.remove(i);
                    current -= 1;
                }
                None => break,
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(cpu_millis: u64) -> PodTemplate {
        PodTemplate {
            cpu_request: CpuMillis(cpu_millis),
            cpu_limit: Some(CpuMillis(cpu_millis)),
            memory_request: Bytes::from_mib(128),
            memory_limit: Some(Bytes::from_mib(192)),
        }
    }

    #[test]
    fn demand_beyond_capacity_is_dropped() {
        let config = ClusterConfig::default();
        let mut c = Cluster::new(config, 2, template(1000), 0.0);
        let cap = config.model.capacity_rps(1.0) * 2.0;
        let out = c.step(0.0, cap + 10.0);
        assert!((out.served_rps - cap).abs() < 1e-9);
        assert!((out.dropped_rps - 10.0).abs() < 1e-9);
        assert!((out.served_rps + out.dropped_rps - out.demand_rps).abs() < 1e-9);
    }

    #[test]
    fn new_pods_serve_after_startup() {
        let config = ClusterConfig::default();
        let mut c = Cluster::new(config, 1, template(1000), 0.0);
        let _ = c.apply(
            &Action {
                replicas: Some(3),
                ..Action::default()
            },
            0.0,
        );
        assert_eq!(c.step(15.0, 10.0).ready_pods, 1);
        assert_eq!(c.step(30.0, 10.0).ready_pods, 3);
    }

    #[test]
    fn template_change_rolls_with_surge_one_and_counts_restarts() {
        let config = ClusterConfig::default();
        let mut c = Cluster::new(config, 3, template(1000), 0.0);
        let mut restarts = 0;
        let mut max_pods = 0;
        let out = c.apply(
            &Action {
                template: Some(template(500)),
                ..Action::default()
            },
            0.0,
        );
        restarts += out.resize_restarts;
        let mut t = 0.0;
        while c.rollout_in_progress() {
            t += 15.0;
            let s = c.step(t, 10.0);
            assert!(s.ready_pods >= 3, "maxUnavailable 0 keeps 3 ready pods");
            max_pods = max_pods.max(s.total_pods);
            restarts += c.apply(&Action::default(), t).resize_restarts;
            assert!(t < 1000.0);
        }
        assert_eq!(restarts, 3);
        assert_eq!(max_pods, 4);
        assert!(
            c.step(t + 15.0, 10.0)
                .pods
                .iter()
                .all(|p| p.template.cpu_request == CpuMillis(500))
        );
    }

    /// Each pod's readiness and CPU request after a step.
    fn readiness_and_cpu(out: &StepOutcome) -> Vec<(bool, CpuMillis)> {
        out.pods
            .iter()
            .map(|p| (p.ready, p.template.cpu_request))
            .collect()
    }

    #[test]
    fn resizing_the_ready_pods_leaves_the_template_and_starting_pods() {
        let mut c = Cluster::new(ClusterConfig::default(), 2, template(500), 0.0);
        let grown = template(1500);
        let _ = c.apply(
            &Action {
                replicas: Some(3),
                resize_ready: Some(grown),
                ..Action::default()
            },
            0.0,
        );
        let sizes = readiness_and_cpu(&c.step(15.0, 10.0));
        assert_eq!(
            sizes,
            vec![
                (true, CpuMillis(1500)),
                (true, CpuMillis(1500)),
                (false, CpuMillis(500))
            ]
        );
        assert_eq!(c.template().cpu_request, CpuMillis(500));
        assert!(!c.rollout_in_progress(), "a resize in place is no rollout");
    }

    #[test]
    fn pods_still_starting_take_their_own_size_in_place() {
        let mut c = Cluster::new(ClusterConfig::default(), 1, template(500), 0.0);
        let _ = c.apply(
            &Action {
                replicas: Some(2),
                ..Action::default()
            },
            0.0,
        );
        let _ = c.apply(
            &Action {
                resize_ready: Some(template(1500)),
                resize_starting: Some(template(700)),
                ..Action::default()
            },
            1.0,
        );
        let sizes = readiness_and_cpu(&c.step(15.0, 10.0));
        assert_eq!(
            sizes,
            vec![(true, CpuMillis(1500)), (false, CpuMillis(700))]
        );
        assert_eq!(c.template().cpu_request, CpuMillis(500));
    }

    #[test]
    fn in_place_resize_restarts_nothing() {
        let mut c = Cluster::new(ClusterConfig::default(), 3, template(1000), 0.0);
        let out = c.apply(
            &Action {
                template: Some(template(500)),
                in_place: true,
                ..Action::default()
            },
            0.0,
        );
        assert_eq!(out.resize_restarts, 0);
        assert!(!c.rollout_in_progress());
        assert_eq!(c.step(15.0, 1.0).ready_pods, 3);
    }

    #[test]
    fn memory_over_limit_kills_and_pod_returns_after_restart_delay() {
        let config = ClusterConfig::default();
        let mut small = template(1000);
        small.memory_limit = Some(Bytes::from_mib(70));
        let mut c = Cluster::new(config, 1, small, 0.0);
        // 64 MiB base + 0.5 MiB per req/s: 20 req/s needs 74 MiB.
        let out = c.step(0.0, 20.0);
        assert_eq!(out.oom_kills, 1);
        assert_eq!(out.served_rps, 0.0);
        assert_eq!(c.step(15.0, 1.0).ready_pods, 0);
        assert_eq!(c.step(30.0, 1.0).ready_pods, 1);
    }

    proptest::proptest! {
        #[test]
        fn served_plus_dropped_is_demand(
            replicas in 1u32..12,
            cpu_millis in 10u64..4000,
            memory_mib in 16u64..512,
            demands in proptest::collection::vec(0.0f64..5000.0, 1..40),
            resize_at in 0usize..40,
        ) {
            let mut c = Cluster::new(ClusterConfig::default(), replicas, template(1000), 0.0);
            let small = PodTemplate {
                cpu_request: CpuMillis(cpu_millis),
                cpu_limit: Some(CpuMillis(cpu_millis)),
                memory_request: Bytes::from_mib(memory_mib),
                memory_limit: Some(Bytes::from_mib(memory_mib)),
            };
            for (k, &d) in demands.iter().enumerate() {
                let t = k as f64 * 15.0;
                let out = c.step(t, d);
                proptest::prop_assert!((out.served_rps + out.dropped_rps - out.demand_rps).abs() <= 1e-9 * d.max(1.0));
                proptest::prop_assert!(out.served_rps >= 0.0 && out.dropped_rps >= 0.0);
                proptest::prop_assert!(out.ready_pods <= out.total_pods);
                // maxSurge: 25 % of the replicas, rounded up.
                proptest::prop_assert!(out.total_pods <= c.replicas() + c.replicas().div_ceil(4));
                let action = if k == resize_at {
                    Action { template: Some(small), replicas: Some(replicas + 1), ..Action::default() }
                } else {
                    Action::default()
                };
                let _ = c.apply(&action, t);
            }
        }
    }

    #[test]
    fn no_limit_uses_the_burst_allowance() {
        let t = PodTemplate {
            cpu_limit: None,
            ..template(1000)
        };
        assert_eq!(t.cpu_cap_cores(1.5), 1.5);
    }
}
