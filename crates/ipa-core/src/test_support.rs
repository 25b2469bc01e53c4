//! Builders for the snapshots tests decide on, shared by the core's unit tests and (through the `test-support`
//! feature, re-exported by `ipa-test-support`) other crates' tests. Not part of the product: compiled only for
//! tests or with the feature.

use crate::quantity::{Bytes, CpuMillis, MIB};
use crate::snapshot::{ContainerSnapshot, MetricsSnapshot, Resources, SeriesStats, TargetRef};

/// Window statistics that sit at `current` with a p95 and a peak of `max`, no trend, 20 samples.
pub fn stats(current: f64, max: f64) -> SeriesStats {
    SeriesStats {
        current,
        mean: current,
        p50: current,
        p90: current,
        p95: max,
        max,
        trend_per_min: 0.0,
        recent_trend_per_min: 0.0,
        samples: 20,
    }
}

/// Requests or limits with both CPU and memory set.
pub fn resources(cpu_millis: u64, memory_mib: u64) -> Resources {
    Resources {
        cpu: Some(CpuMillis(cpu_millis)),
        memory: Some(Bytes(memory_mib * MIB)),
    }
}

/// A container with these settings and no observed usage.
pub fn container(name: &str, requests: Resources, limits: Resources) -> ContainerSnapshot {
    ContainerSnapshot {
        name: name.into(),
        requests,
        limits,
        cpu_cores: None,
        memory_bytes: None,
    }
}

/// An empty snapshot of `namespace/deployment` at `replicas`, taken at time 0: no series, no containers.
pub fn snapshot(namespace: &str, deployment: &str, replicas: u32) -> MetricsSnapshot {
    MetricsSnapshot::new(
        TargetRef {
            namespace: namespace.into(),
            deployment: deployment.into(),
        },
        0,
        replicas,
    )
}

/// `shop/<deployment>`: a web deployment of 3 ready pods running hot on CPU (0.2 cores of a 250m request, up to
/// 0.3) at 120 req/s, one container `app` at 250m/256Mi requests and 500m/512Mi limits.
pub fn hot_web_snapshot(deployment: &str) -> MetricsSnapshot {
    let mut s = snapshot("shop", deployment, 3);
    s.timestamp = 1_795_000_000;
    s.ready_replicas = Some(3);
    s.cpu_per_pod = Some(stats(0.2, 0.3));
    s.memory_per_pod = Some(stats(200.0 * MIB as f64, 220.0 * MIB as f64));
    s.request_rate = Some(stats(120.0, 150.0));
    s.containers = vec![ContainerSnapshot {
        cpu_cores: Some(stats(0.2, 0.3)),
        memory_bytes: Some(stats(200.0 * MIB as f64, 220.0 * MIB as f64)),
        ..container("app", resources(250, 256), resources(500, 512))
    }];
    s
}
