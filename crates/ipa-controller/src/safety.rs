//! The last check before anything touches the cluster, after `ipa_core::guard`: the policy's hard bounds and
//! "no scale-down on missing inputs", enforced once more in the controller. The guardrails already do this;
//! repeating the few invariants that make a change *unsafe* costs nothing and keeps them true whatever the
//! guard (or a future change to it) does.

use ipa_core::{
    Bytes, ContainerRecommendation, CpuMillis, GuardrailNote, MetricsSnapshot, ResolvedPolicy, Rule,
};

/// The decision that may be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Safe {
    pub replicas: u32,
    pub containers: Vec<ContainerRecommendation>,
    pub notes: Vec<GuardrailNote>,
}

fn clamp_cpu(v: Option<CpuMillis>, p: &ResolvedPolicy) -> Option<CpuMillis> {
    v.map(|v| v.clamp(p.min_cpu, p.max_cpu))
}

fn clamp_memory(v: Option<Bytes>, p: &ResolvedPolicy) -> Option<Bytes> {
    v.map(|v| v.clamp(p.min_memory, p.max_memory))
}

pub fn enforce(
    replicas: u32,
    containers: &[ContainerRecommendation],
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
) -> Safe {
    let mut notes = Vec::new();
    let mut safe_replicas = replicas.clamp(policy.min_replicas, policy.max_replicas);
    if safe_replicas != replicas {
        let rule = if replicas > policy.max_replicas {
            Rule::MaxReplicas
        } else {
            Rule::MinReplicas
        };
        notes.push(GuardrailNote::new(
            rule,
            format!("controller bound: {replicas} replicas clamped to {safe_replicas}"),
        ));
    }
    if snapshot.has_missing_inputs()
        && safe_replicas < snapshot.replicas
        && snapshot.replicas <= policy.max_replicas
    {
        notes.push(GuardrailNote::new(
            Rule::MissingInputs,
            format!(
                "controller bound: no scale-down to {safe_replicas} while inputs are missing ({})",
                snapshot.missing.join(", ")
            ),
        ));
        safe_replicas = snapshot.replicas;
    }

    let mut safe_containers = Vec::new();
    if policy.vertical {
        for c in containers {
            if !policy.manages(&c.name) || !snapshot.containers.iter().any(|s| s.name == c.name) {
                notes.push(GuardrailNote::new(
                    Rule::UnknownContainer,
                    format!(
                        "controller bound: container {:?} is not managed; left alone",
                        c.name
                    ),
                ));
                continue;
            }
            let mut out = ContainerRecommendation {
                name: c.name.clone(),
                requests: ipa_core::Resources {
                    cpu: clamp_cpu(c.requests.cpu, policy),
                    memory: clamp_memory(c.requests.memory, policy),
                },
                limits: ipa_core::Resources {
                    cpu: clamp_cpu(c.limits.cpu, policy),
                    memory: clamp_memory(c.limits.memory, policy),
                },
            };
            if out != *c {
                notes.push(GuardrailNote::new(
                    Rule::ResourceBounds,
                    format!(
                        "controller bound: resources of {:?} clamped to policy bounds",
                        c.name
                    ),
                ));
            }
            // A limit below its request is rejected by the apiserver: raise the limit.
            if let (Some(r), Some(l)) = (out.requests.cpu, out.limits.cpu)
                && l < r
            {
                out.limits.cpu = Some(r);
                notes.push(GuardrailNote::new(
                    Rule::LimitBelowRequest,
                    format!("{}: cpu limit raised to request", c.name),
                ));
            }
            if let (Some(r), Some(l)) = (out.requests.memory, out.limits.memory)
                && l < r
            {
                out.limits.memory = Some(r);
                notes.push(GuardrailNote::new(
                    Rule::LimitBelowRequest,
                    format!("{}: memory limit raised to request", c.name),
                ));
            }
            safe_containers.push(out);
        }
    } else if !containers.is_empty() {
        notes.push(GuardrailNote::new(
            Rule::VerticalDisabled,
            "controller bound: vertical scaling is off; resources left alone",
        ));
    }
    Safe {
        replicas: safe_replicas,
        containers: safe_containers,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::{ContainerSnapshot, Policy, Resources, SeriesStats, TargetRef};

    fn snapshot(replicas: u32, with_cpu: bool) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "n".into(),
                deployment: "d".into(),
            },
            0,
            replicas,
        );
        if with_cpu {
            s.cpu_per_pod = Some(SeriesStats::default());
        } else {
            s.missing.push("cpu".into());
        }
        s.containers.push(ContainerSnapshot {
            name: "app".into(),
            requests: Resources::default(),
            limits: Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        });
        s
    }

    fn policy() -> ResolvedPolicy {
        Policy {
            min_replicas: Some(1),
            max_replicas: Some(10),
            max_memory: Some(Bytes::from_mib(1024)),
            ..Policy::default()
        }
        .resolve()
    }

    #[test]
    fn absurd_replicas_are_bounded() {
        let safe = enforce(1_000_000_000, &[], &snapshot(2, true), &policy());
        assert_eq!(safe.replicas, 10);
        assert_eq!(safe.notes[0].rule, Rule::MaxReplicas);
        assert_eq!(enforce(0, &[], &snapshot(2, true), &policy()).replicas, 1);
    }

    #[test]
    fn no_scale_down_on_missing_inputs() {
        assert_eq!(enforce(1, &[], &snapshot(4, false), &policy()).replicas, 4);
        assert_eq!(enforce(6, &[], &snapshot(4, false), &policy()).replicas, 6);
        assert_eq!(enforce(1, &[], &snapshot(4, true), &policy()).replicas, 1);
    }

    #[test]
    fn resources_are_bounded_and_consistent() {
        let want = ContainerRecommendation {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(1)),
                memory: Some(Bytes::from_mib(100_000)),
            },
            limits: Resources {
                cpu: Some(CpuMillis(5)),
                memory: Some(Bytes::from_mib(64)),
            },
        };
        let ghost = ContainerRecommendation {
            name: "ghost".into(),
            ..want.clone()
        };
        let safe = enforce(2, &[want, ghost], &snapshot(2, true), &policy());
        assert_eq!(safe.containers.len(), 1);
        let c = &safe.containers[0];
        assert_eq!(c.requests.cpu, Some(CpuMillis(10)));
        assert_eq!(c.requests.memory, Some(Bytes::from_mib(1024)));
        assert_eq!(c.limits.memory, Some(Bytes::from_mib(1024)));
        assert!(safe.notes.iter().any(|n| n.rule == Rule::UnknownContainer));
    }
}
