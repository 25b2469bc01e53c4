//! The application model shared by the offline simulator and the test bed's workload simulator (`ipa loadsim`),
//! so both agree on what a request costs. One model, the same parameters for every policy.

use serde::{Deserialize, Serialize};

/// How one replica of the application behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AppModel {
    /// CPU core-seconds one request costs.
    pub cpu_seconds_per_request: f64,
    /// CPU a pod burns with no traffic (runtime, GC, probes), in cores.
    pub idle_cpu_cores: f64,
    /// Working set of an idle pod, in bytes.
    pub base_memory_bytes: f64,
    /// Extra working set per request/s the pod serves (buffers, sessions), in bytes.
    pub memory_bytes_per_rps: f64,
    /// Time from a pod's creation until it serves (image pull, start, readiness).
    pub startup_seconds: f64,
    /// Time an OOM-killed container is out before it serves again (restart + back-off).
    pub restart_seconds: f64,
}

impl Default for AppModel {
    /// A small web service: 20 ms of CPU per request, 64 MiB idle + 0.5 MiB per req/s, 30 s start-up.
    fn default() -> Self {
        Self {
            cpu_seconds_per_request: 0.02,
            idle_cpu_cores: 0.005,
            base_memory_bytes: 64.0 * 1024.0 * 1024.0,
            memory_bytes_per_rps: 0.5 * 1024.0 * 1024.0,
            startup_seconds: 30.0,
            restart_seconds: 30.0,
        }
    }
}

impl AppModel {
    /// CPU cores a pod would use to serve `rps` requests/s, without any limit.
    pub fn cpu_demand_cores(&self, rps: f64) -> f64 {
        self.idle_cpu_cores + self.cpu_seconds_per_request * rps.max(0.0)
    }

    /// Requests/s a pod can serve when its CPU is capped at `cpu_cores` (its limit); beyond it, it throttles.
    pub fn capacity_rps(&self, cpu_cores: f64) -> f64 {
        ((cpu_cores - self.idle_cpu_cores) / self.cpu_seconds_per_request).max(0.0)
    }

    /// Working-set bytes of a pod serving `rps` requests/s.
    pub fn memory_bytes(&self, rps: f64) -> f64 {
        self.base_memory_bytes + self.memory_bytes_per_rps * rps.max(0.0)
    }
}

/// What one serving pod does in a step: the load it takes, what it uses, whether it is OOM-killed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodLoad {
    /// Requests/s offered to this pod.
    pub offered_rps: f64,
    /// Requests/s it serves (offered, capped by its CPU limit).
    pub served_rps: f64,
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    /// The working set passed the memory limit: the kernel kills the container.
    pub oom_killed: bool,
}

/// Splits `total_rps` evenly over serving pods with the given CPU and memory limits (None = unlimited),
/// as a round-robin Service would, and computes each pod's usage.
pub fn split_load(
    model: &AppModel,
    total_rps: f64,
    pods: &[(Option<f64>, Option<f64>)],
) -> Vec<PodLoad> {
    if pods.is_empty() {
        return Vec::new();
    }
    let per_pod = total_rps.max(0.0) / pods.len() as f64;
    pods.iter()
        .map(|&(cpu_limit, memory_limit)| {
            let served_rps = match cpu_limit {
                Some(limit) => per_pod.min(model.capacity_rps(limit)),
                None => per_pod,
            };
            let cpu_cores = model.cpu_demand_cores(served_rps);
            let memory_bytes = model.memory_bytes(per_pod);
            let oom_killed = memory_limit.is_some_and(|limit| memory_bytes > limit);
            PodLoad {
                offered_rps: per_pod,
                served_rps,
                cpu_cores,
                memory_bytes,
                oom_killed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limit_throttles_and_memory_limit_kills() {
        let m = AppModel::default();
        let pods = [(Some(0.5), Some(64.0 * 1024.0 * 1024.0)), (None, None)];
        let loads = split_load(&m, 100.0, &pods);
        assert_eq!(loads.len(), 2);
        assert!(loads[0].served_rps < 50.0);
        assert!((loads[0].cpu_cores - 0.5).abs() < 1e-9);
        assert!(loads[0].oom_killed);
        assert!((loads[1].served_rps - 50.0).abs() < 1e-9);
        assert!(!loads[1].oom_killed);
    }
}
