//! Shared test inputs.
#![allow(dead_code)]

use ipa_core::quantity::{Bytes, CpuMillis, MIB};
use ipa_core::{ContainerSnapshot, MetricsSnapshot, Resources, SeriesStats, TargetRef};

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

/// A web deployment running hot on CPU.
pub fn snapshot(deployment: &str) -> MetricsSnapshot {
    let mut s = MetricsSnapshot::new(
        TargetRef {
            namespace: "shop".into(),
            deployment: deployment.into(),
        },
        1_795_000_000,
        3,
    );
    s.ready_replicas = Some(3);
    s.cpu_per_pod = Some(stats(0.2, 0.3));
    s.memory_per_pod = Some(stats(200.0 * MIB as f64, 220.0 * MIB as f64));
    s.request_rate = Some(stats(120.0, 150.0));
    s.containers = vec![ContainerSnapshot {
        name: "app".into(),
        requests: Resources {
            cpu: Some(CpuMillis(250)),
            memory: Some(Bytes(256 * MIB)),
        },
        limits: Resources {
            cpu: Some(CpuMillis(500)),
            memory: Some(Bytes(512 * MIB)),
        },
        cpu_cores: Some(stats(0.2, 0.3)),
        memory_bytes: Some(stats(200.0 * MIB as f64, 220.0 * MIB as f64)),
    }];
    s
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| format!("cannot read {path}: {e}"))
}
