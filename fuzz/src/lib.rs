//! What the fuzz targets share: small fixtures and the invariants every recommendation and decision must hold
//! whatever came in from outside. A broken invariant panics, which is how libFuzzer learns of it.

use ipa_core::quantity::{Bytes, CpuMillis, MIB};
use ipa_core::{
    ContainerRecommendation, ContainerSnapshot, Decision, MetricsSnapshot, Policy, ResolvedPolicy,
    Resources, SeriesStats, TargetRef,
};

/// A policy picked by four input bytes: replica bounds, vertical on or off, every container or only `app`.
pub fn policy_from(knobs: [u8; 4]) -> Policy {
    Policy {
        min_replicas: Some(u32::from(knobs[0] % 8)),
        max_replicas: Some(u32::from(knobs[1]) * 4),
        vertical: Some(knobs[2] & 1 == 0),
        containers: (knobs[2] & 2 != 0).then(|| vec!["app".to_string()]),
        min_cpu: (knobs[3] & 1 != 0).then_some(CpuMillis(100)),
        max_cpu: (knobs[3] & 2 != 0).then_some(CpuMillis(2_000)),
        min_memory: (knobs[3] & 4 != 0).then_some(Bytes(64 * MIB)),
        max_memory: (knobs[3] & 8 != 0).then_some(Bytes(4_096 * MIB)),
        ..Policy::default()
    }
}

/// A Deployment `ns/web` with containers `app` and `sidecar`, both with requests and limits, at `replicas`.
pub fn two_container_snapshot(replicas: u32) -> MetricsSnapshot {
    let mut snapshot = MetricsSnapshot::new(
        TargetRef {
            namespace: "ns".into(),
            deployment: "web".into(),
        },
        1_800_000_000,
        replicas,
    );
    for name in ["app", "sidecar"] {
        snapshot.containers.push(ContainerSnapshot {
            name: name.into(),
            requests: resources(250, 256),
            limits: resources(500, 512),
            cpu_cores: Some(SeriesStats::constant(0.2, 20)),
            memory_bytes: Some(SeriesStats::constant(200.0 * MIB as f64, 20)),
        });
    }
    snapshot.cpu_per_pod = Some(SeriesStats::constant(0.4, 20));
    snapshot.memory_per_pod = Some(SeriesStats::constant(400.0 * MIB as f64, 20));
    snapshot
}

fn resources(cpu_millis: u64, memory_mib: u64) -> Resources {
    Resources {
        cpu: Some(CpuMillis(cpu_millis)),
        memory: Some(Bytes(memory_mib * MIB)),
    }
}

/// Replicas within the policy's bounds.
pub fn assert_replicas_within(replicas: u32, policy: &ResolvedPolicy) {
    assert!(
        (policy.min_replicas..=policy.max_replicas).contains(&replicas),
        "replicas {replicas} outside {}..={}",
        policy.min_replicas,
        policy.max_replicas
    );
}

/// Every container is one of the snapshot's, managed, named once, with each value it sets inside the policy's
/// bounds and no limit it sets below its request. A value equal to the container's current one is not set but
/// left as it is (the recommender keeps the CPU request it has no evidence to change), so it may lie anywhere.
pub fn assert_containers_within(
    containers: &[ContainerRecommendation],
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
) {
    for (i, c) in containers.iter().enumerate() {
        let Some(current) = snapshot.containers.iter().find(|s| s.name == c.name) else {
            panic!("container {:?} is not the target's", c.name);
        };
        assert!(
            policy.manages(&c.name),
            "container {:?} is not managed",
            c.name
        );
        assert!(
            containers[..i].iter().all(|o| o.name != c.name),
            "container {:?} twice",
            c.name
        );
        let cpu = [
            (c.requests.cpu, current.requests.cpu),
            (c.limits.cpu, current.limits.cpu),
        ];
        for (value, now) in cpu {
            if let Some(v) = value.filter(|_| value != now) {
                assert!(
                    (policy.min_cpu..=policy.max_cpu).contains(&v),
                    "cpu {v} outside the policy: {c:?}"
                );
            }
        }
        let memory = [
            (c.requests.memory, current.requests.memory),
            (c.limits.memory, current.limits.memory),
        ];
        for (value, now) in memory {
            if let Some(v) = value.filter(|_| value != now) {
                assert!(
                    (policy.min_memory..=policy.max_memory).contains(&v),
                    "memory {v} outside the policy: {c:?}"
                );
            }
        }
        if let (Some(request), Some(limit)) = (c.requests.cpu, c.limits.cpu)
            && (c.requests.cpu, c.limits.cpu) != (current.requests.cpu, current.limits.cpu)
        {
            assert!(limit >= request, "cpu limit below request: {c:?}");
        }
        if let (Some(request), Some(limit)) = (c.requests.memory, c.limits.memory)
            && (c.requests.memory, c.limits.memory)
                != (current.requests.memory, current.limits.memory)
        {
            assert!(limit >= request, "memory limit below request: {c:?}");
        }
    }
}

/// A guarded decision within the policy. Vertical off means no resource change at all.
pub fn assert_decision_within(
    decision: &Decision,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
) {
    assert_replicas_within(decision.replicas, policy);
    assert_containers_within(&decision.containers, snapshot, policy);
    if !policy.vertical {
        assert!(decision.containers.is_empty(), "resized with vertical off");
    }
}

/// A resolved policy is self-consistent whatever the user wrote.
pub fn assert_policy_sane(policy: &ResolvedPolicy) {
    assert!(1 <= policy.min_replicas, "min replicas 0");
    assert!(
        policy.min_replicas <= policy.max_replicas,
        "min > max replicas"
    );
    assert!(
        policy.max_replicas <= ipa_core::policy::HARD_MAX_REPLICAS,
        "max replicas too high"
    );
    assert!(policy.min_cpu <= policy.max_cpu, "min cpu > max cpu");
    assert!(
        policy.min_memory <= policy.max_memory,
        "min memory > max memory"
    );
    for (name, value) in [
        ("target_utilization", policy.target_utilization),
        ("tolerance", policy.tolerance),
        ("resize_threshold", policy.resize_threshold),
    ] {
        assert!(value.is_finite() && value >= 0.0, "{name} = {value}");
    }
    assert!(policy.target_utilization > 0.0, "target utilization 0");
}

/// A seed-protocol answer the seed's controller would apply: at least one replica, and every limit at or above
/// its request, each quantity parseable.
pub fn assert_seed_answer_sane(answer: &ipa_core::SeedRecommendation) {
    let cpu = |s: &str| {
        s.parse::<CpuMillis>()
            .unwrap_or_else(|e| panic!("cpu {s:?}: {e}"))
    };
    let memory = |s: &str| {
        s.parse::<Bytes>()
            .unwrap_or_else(|e| panic!("memory {s:?}: {e}"))
    };
    assert!(answer.replicas >= 1, "{answer:?}");
    assert!(
        cpu(&answer.cpu_limit) >= cpu(&answer.cpu_request),
        "{answer:?}"
    );
    assert!(
        memory(&answer.memory_limit) >= memory(&answer.memory_request),
        "{answer:?}"
    );
}
