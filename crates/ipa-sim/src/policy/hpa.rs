//! Kubernetes HPA (autoscaling/v2) on CPU utilization, as `replica_calculator.go` and `horizontal.go` do it:
//! 15 s sync, target 70 % of the CPU request, tolerance 0.1, unready pods added back at 0 % on a scale-up,
//! scale-down stabilization (the highest recommendation in the last 300 s), scale-up limited to
//! max(+4 pods, +100 %) per 15 s, scale-down to −100 % per 15 s. Requests never change.

use std::collections::VecDeque;

use crate::cluster::Action;
use crate::policy::{Autoscaler, Observation, SimSettings};

#[derive(Debug, Clone)]
pub struct Hpa {
    target: f64,
    tolerance: f64,
    sync_seconds: i64,
    downscale_window_seconds: i64,
    min_replicas: u32,
    max_replicas: u32,
    /// (unix seconds, desired replicas before stabilization).
    recommendations: VecDeque<(i64, u32)>,
    last_sync: Option<i64>,
}

impl Hpa {
    pub fn new(settings: &SimSettings) -> Self {
        Self {
            target: settings.target_utilization,
            tolerance: 0.1,
            sync_seconds: 15,
            downscale_window_seconds: 300,
            min_replicas: settings.cluster.min_replicas,
            max_replicas: settings.cluster.max_replicas,
            recommendations: VecDeque::new(),
            last_sync: None,
        }
    }

    /// The replica calculator: `None` when no ready pod has a metric (the HPA reports an error and waits).
    fn desired_replicas(&self, obs: &Observation<'_>) -> Option<u32> {
        let current = obs.replicas;
        let pods = &obs.outcome.pods;
        let (mut usage, mut request, mut ready) = (0.0f64, 0.0f64, 0u32);
        let (mut unready_request, mut unready) = (0.0f64, 0u32);
        for pod in pods {
            if pod.ready {
                usage += pod.cpu_cores;
                request += pod.template.cpu_request.as_cores();
                ready += 1;
            } else {
                unready_request += pod.template.cpu_request.as_cores();
                unready += 1;
            }
        }
        if ready == 0 || request <= 0.0 {
            return None;
        }
        let ratio = usage / request / self.target;
        let scale_up_with_unready = unready > 0 && ratio > 1.0;
        if !scale_up_with_unready {
            if (1.0 - ratio).abs() <= self.tolerance {
                return Some(current);
            }
            return Some((ratio * f64::from(ready)).ceil() as u32);
        }
        // Unready pods count at 0 % usage on a scale-up.
        let new_ratio = usage / (request + unready_request) / self.target;
        if (1.0 - new_ratio).abs() <= self.tolerance || new_ratio < 1.0 {
            return Some(current);
        }
        let new_replicas = (new_ratio * f64::from(ready + unready)).ceil() as u32;
        if new_replicas < current {
            return Some(current);
        }
        Some(new_replicas)
    }
}

impl Autoscaler for Hpa {
    fn name(&self) -> &str {
        "hpa"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Action {
        let now = obs.now;
        if self
            .last_sync
            .is_some_and(|last| now - last < self.sync_seconds)
        {
            return Action::default();
        }
        self.last_sync = Some(now);
        let Some(desired) = self.desired_replicas(obs) else {
            return Action::default();
        };
        let current = obs.replicas;
        // Stabilization: scale-up window 0 (the current recommendation), scale-down window 300 s (the highest).
        self.recommendations.push_back((now, desired));
        while self
            .recommendations
            .front()
            .is_some_and(|&(t, _)| t <= now - self.downscale_window_seconds)
        {
            self.recommendations.pop_front();
        }
        let down = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(desired);
        let mut stabilized = current;
        if desired > current {
            stabilized = desired;
        }
        if down < current {
            stabilized = down;
        }
        // Rate limits per 15 s period: up max(+4, ×2); down −100 %; then min/max replicas.
        let up_limit = (current + 4).max(current.saturating_mul(2));
        let replicas = stabilized
            .min(up_limit)
            .clamp(self.min_replicas, self.max_replicas.max(self.min_replicas));
        if replicas == current {
            Action::default()
        } else {
            Action {
                replicas: Some(replicas),
                ..Action::default()
            }
        }
    }
}
