//! `Policy`: the user's bounds and behaviour for one target. Every field is optional; `resolve()` fills in
//! safe defaults (HPA's defaults where HPA has one) so the rest of the core works on concrete numbers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, CpuMillis, MIB};

/// Scaling behaviour in one direction, after HPA's `behavior` field.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// How long recommendations are remembered; the most conservative one in the window wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<u32>,
    /// At most this many pods added/removed per `periodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    /// At most this percentage of the current replicas added/removed per `periodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent: Option<u32>,
    /// The period `maxPods` and `maxPercent` count over; default 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
}

/// User-facing policy; what the CRD and the agent API accept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Fewest replicas ever set; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    /// Most replicas ever set; default 20 (or `minReplicas` when that is higher), never above 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Target CPU utilization of the CPU request (0.05–1.0); default 0.7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization: Option<f64>,
    /// Dead band around the current replicas within which nothing changes; default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// How fast replicas may grow; default: no stabilization, at most max(4 pods, 100 %) per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// How fast replicas may shrink; default: a window of twice (start-up + sync period), 60–300 s, and at most
    /// 100 % per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
    /// Manage requests/limits (vertical scaling); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<bool>,
    /// Containers to manage; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// Smallest CPU request or limit set on a managed container; default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cpu: Option<CpuMillis>,
    /// Largest CPU request or limit set on a managed container; default 64 cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<CpuMillis>,
    /// Smallest memory request or limit set on a managed container; default 16Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<Bytes>,
    /// Largest memory request or limit set on a managed container; default 256Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Bytes>,
    /// A requests/limits change smaller than this fraction is not applied (it would restart pods); default 0.15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_threshold: Option<f64>,
    /// Minimum time between two resource changes; default 600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resize_interval_seconds: Option<u32>,
    /// Pod start-up time assumed by the forecast horizon; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<u32>,
    /// The advisory loop's interval (the advisor is asked, pods are right-sized); default 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// The fast loop's period (replicas follow the load, no advisor); default 15 s, HPA's sync period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_period_seconds: Option<u32>,
}

/// The policy with every default applied and every value sanitised.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPolicy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_utilization: f64,
    pub tolerance: f64,
    pub scale_up: ResolvedRules,
    pub scale_down: ResolvedRules,
    pub vertical: bool,
    pub containers: Option<Vec<String>>,
    pub min_cpu: CpuMillis,
    pub max_cpu: CpuMillis,
    pub min_memory: Bytes,
    pub max_memory: Bytes,
    pub resize_threshold: f64,
    pub min_resize_interval_seconds: u32,
    pub startup_seconds: u32,
    pub interval_seconds: u32,
    pub sync_period_seconds: u32,
    /// Safety margin over observed usage for requests (VPA: 15 %).
    pub request_margin: f64,
    /// CPU usage percentile that sets the CPU request (VPA target: p90).
    pub cpu_percentile: f64,
    /// Limit = request × this (for CPU and memory).
    pub limit_ratio: f64,
    /// The cluster resizes the target's pods in place (update modes `InPlace`, `InPlaceOrRecreate`): the
    /// fast loop may grow the serving pods while new replicas start ([`crate::bridge`]). From the update mode
    /// ([`Policy::resolve_for`]), never from a policy field.
    pub in_place: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedRules {
    pub stabilization_window_seconds: u32,
    pub max_pods: u32,
    pub max_percent: u32,
    pub period_seconds: u32,
}

/// Upper bound on replicas whatever the policy says: a guard against absurd configuration.
pub const HARD_MAX_REPLICAS: u32 = 10_000;
pub const DEFAULT_MAX_REPLICAS: u32 = 20;

impl Policy {
    /// The policy with every default filled in, for a target whose pods are not resized in place.
    pub fn resolve(&self) -> ResolvedPolicy {
        self.resolve_for(false)
    }

    /// The policy with every default filled in; `in_place`: the cluster resizes the target's pods in place
    /// (update modes `InPlace`, `InPlaceOrRecreate`), which the bridge and the scale-down window's default
    /// depend on.
    pub fn resolve_for(&self, in_place: bool) -> ResolvedPolicy {
        let min_replicas = self.min_replicas.unwrap_or(1).clamp(1, HARD_MAX_REPLICAS);
        let max_replicas = self
            .max_replicas
            .unwrap_or(DEFAULT_MAX_REPLICAS.max(min_replicas))
            .clamp(min_replicas, HARD_MAX_REPLICAS);
        let finite_or = |v: Option<f64>, default: f64, lo: f64, hi: f64| {
            v.filter(|x| x.is_finite()).unwrap_or(default).clamp(lo, hi)
        };
        let startup_seconds = self.startup_seconds.unwrap_or(30).min(3600);
        let sync_period_seconds = self.sync_period_seconds.unwrap_or(15).clamp(5, 600);
        // HPA's step limits: up max(4 pods, 100 %) per 15 s, down 100 % per 15 s; no scale-up stabilization.
        // The scale-down window is where IPA departs from HPA's fixed 300 s: a pod removed must stay gone for
        // longer than it takes to bring its capacity back, so the window is twice that. A new pod takes
        // start-up + one sync period (90 s for a 30 s start-up, never under a minute); in place the bridge
        // grows the pods still serving at the next sync, so there it is twice the sync period. Holding longer
        // buys nothing the ratio tolerance does not, and costs every noisy workload the highest load of the
        // last 5 minutes.
        let restore_seconds = if in_place {
            sync_period_seconds
        } else {
            startup_seconds + sync_period_seconds
        };
        let down_window = (2 * restore_seconds).clamp(if in_place { 2 * 5 } else { 60 }, 300);
        let rules = |r: Option<ScalingRules>, window: u32, pods: u32, percent: u32| {
            let r = r.unwrap_or_default();
            ResolvedRules {
                stabilization_window_seconds: r
                    .stabilization_window_seconds
                    .unwrap_or(window)
                    .min(3600),
                max_pods: r.max_pods.unwrap_or(pods).max(1),
                max_percent: r.max_percent.unwrap_or(percent).max(1),
                period_seconds: r.period_seconds.unwrap_or(15).clamp(1, 1800),
            }
        };
        let min_cpu = self.min_cpu.unwrap_or(CpuMillis(10));
        let min_memory = self.min_memory.unwrap_or(Bytes(16 * MIB));
        ResolvedPolicy {
            min_replicas,
            max_replicas,
            target_utilization: finite_or(self.target_utilization, 0.7, 0.05, 1.0),
            tolerance: finite_or(self.tolerance, 0.1, 0.0, 0.5),
            scale_up: rules(self.scale_up, 0, 4, 100),
            scale_down: rules(self.scale_down, down_window, u32::MAX, 100),
            vertical: self.vertical.unwrap_or(true),
            containers: self.containers.clone(),
            min_cpu,
            max_cpu: self.max_cpu.unwrap_or(CpuMillis(64_000)).max(min_cpu),
            min_memory,
            max_memory: self
                .max_memory
                .unwrap_or(Bytes(256 * 1024 * MIB))
                .max(min_memory),
            resize_threshold: finite_or(self.resize_threshold, 0.15, 0.0, 10.0),
            min_resize_interval_seconds: self.min_resize_interval_seconds.unwrap_or(600),
            startup_seconds,
            interval_seconds: self.interval_seconds.unwrap_or(60).clamp(5, 3600),
            sync_period_seconds,
            request_margin: 0.15,
            cpu_percentile: 0.9,
            limit_ratio: 1.5,
            in_place,
        }
    }
}

impl ResolvedPolicy {
    /// Whether the policy manages this container.
    pub fn manages(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hpa_like() {
        let p = Policy::default().resolve();
        assert_eq!(p.min_replicas, 1);
        assert_eq!(p.max_replicas, DEFAULT_MAX_REPLICAS);
        assert_eq!(p.target_utilization, 0.7);
        assert_eq!(p.tolerance, 0.1);
        assert_eq!(p.scale_down.stabilization_window_seconds, 90);
        assert_eq!(p.sync_period_seconds, 15);
        assert_eq!(p.scale_up.stabilization_window_seconds, 0);
        assert_eq!(p.scale_up.max_pods, 4);
        assert!(!p.in_place);
    }

    #[test]
    fn in_place_the_scale_down_window_is_two_sync_periods_unless_set() {
        let p = Policy::default().resolve_for(true);
        assert!(p.in_place);
        assert_eq!(p.scale_down.stabilization_window_seconds, 30);
        let set = Policy {
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(120),
                ..ScalingRules::default()
            }),
            ..Policy::default()
        };
        assert_eq!(
            set.resolve_for(true)
                .scale_down
                .stabilization_window_seconds,
            120
        );
    }

    #[test]
    fn absurd_values_are_sanitised() {
        let p = Policy {
            min_replicas: Some(50),
            max_replicas: Some(3),
            target_utilization: Some(f64::NAN),
            tolerance: Some(-1.0),
            ..Policy::default()
        }
        .resolve();
        assert_eq!(p.min_replicas, 50);
        assert_eq!(p.max_replicas, 50);
        assert_eq!(p.target_utilization, 0.7);
        assert_eq!(p.tolerance, 0.0);
    }

    #[test]
    fn every_field_is_optional_in_json() {
        let p: Policy = serde_json::from_str("{}").unwrap_or_else(|_| Policy {
            min_replicas: Some(99),
            ..Policy::default()
        });
        assert_eq!(p, Policy::default());
    }
}
