//! The in-place bridge: while new replicas start, the pods already serving grow in place to carry the load, and
//! return to their own size once the replicas are there.
//!
//! A scale-up buys capacity one pod start-up later (30 s and more); the step in between is served by the pods
//! that are ready now. HPA covers that gap with idle headroom it pays for all day (pods at a fraction of their
//! request), or not at all. Where the cluster resizes pods in place (`pods/resize`, on by default since
//! Kubernetes 1.33; the update modes `InPlace` and `InPlaceOrRecreate`), a CPU resize takes effect within
//! seconds and restarts nothing, so IPA pays for the extra capacity only while the new pods start: the
//! running pods' CPU request (and their limits, in proportion) is raised so that the ready pods carry the
//! demand the fast rule sees — lead included — at the target utilization; the template, and so every new pod,
//! keeps the pods' own size ("the base", remembered in [`crate::GuardState::bridge`]). At `maxReplicas` the
//! same rule grows the pods while a burst lasts and shrinks them after it, where a rare sizing would keep them
//! grown for a day.
//!
//! Where a node has no room, the kubelet defers the resize and the pods keep their size: the bridge is lost,
//! never the scale-up, which the fast rule decides on the base size as if there were no bridge.

use crate::guardrails::Decision;
use crate::horizontal::Wanted;
use crate::policy::ResolvedPolicy;
use crate::quantity::{Bytes, CpuMillis};
use crate::recommendation::ContainerRecommendation;
use crate::snapshot::{MetricsSnapshot, Resources};

/// The snapshot as the rules must read it while bridged: each container at its base size (the fast rule counts
/// replicas of base pods; the sizing rules size base pods).
pub fn at_base(snapshot: &MetricsSnapshot, base: &[ContainerRecommendation]) -> MetricsSnapshot {
    let mut based = snapshot.clone();
    for c in &mut based.containers {
        if let Some(b) = base.iter().find(|b| b.name == c.name) {
            c.requests = b.requests;
            c.limits = b.limits;
        }
    }
    based
}

/// The base sizes of the containers now: the remembered base while bridged, else what runs.
fn base_now(snapshot: &MetricsSnapshot, decision: &Decision) -> Vec<ContainerRecommendation> {
    decision.state.bridge.clone().unwrap_or_else(|| {
        snapshot
            .containers
            .iter()
            .map(|c| ContainerRecommendation {
                name: c.name.clone(),
                requests: c.requests,
                limits: c.limits,
            })
            .collect()
    })
}

/// Sets `decision.running` (sizes for the pods running now, in place) and the bridge state, from the fast rule's
/// `wanted` demand and the ready pods. `snapshot` is the observed one (the pods' actual sizes).
pub fn bridge(
    decision: &mut Decision,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    wanted: Option<&Wanted>,
) {
    // A new base size this cycle (an OOM kill's memory bump, a right-sizing) goes to every pod and the
    // template, and is the base from now on: the bridge, if the load still needs one, continues from it. Ending
    // it there, as it once did, shrank the serving pods to the base in the middle of the burst that had just
    // OOM-killed one of them.
    let rebased = !decision.containers.is_empty();
    let old_base = base_now(snapshot, decision);
    if rebased {
        decision.state.bridge = None;
    }
    if !policy.in_place || !policy.vertical {
        decision.state.bridge = None;
        return;
    }
    let Some(wanted) = wanted else {
        return;
    };
    let ready = snapshot.ready_replicas.unwrap_or(snapshot.replicas);
    if ready == 0 {
        return;
    }
    let base: Vec<ContainerRecommendation> = old_base
        .iter()
        .map(|c| {
            let new = decision.containers.iter().find(|n| n.name == c.name);
            new.unwrap_or(c).clone()
        })
        .collect();
    let (Some(old_cpu), Some(base_cpu)) = (
        pod_cpu(&old_base).filter(|c| c.0 > 0),
        pod_cpu(&base).filter(|c| c.0 > 0),
    ) else {
        return;
    };
    // The demand, counted by the fast rule in pods of the old base, in pods of the base; over the ready pods,
    // the factor each must grow by.
    let demand = wanted.exact * (old_cpu.as_cores() / base_cpu.as_cores());
    let factor = demand / f64::from(ready);
    let bridged = decision.state.bridge.is_some();
    if !factor.is_finite() || factor <= 1.0 + policy.tolerance {
        if bridged {
            decision.running = base;
            decision.state.bridge = None;
            decision.rationale.push_str(&format!(
                "; the {ready} ready pods carry the load at their own size ({base_cpu}): bridge ended"
            ));
        }
        return;
    }
    // Never past the largest pod the policy allows (a base already there cannot grow at all).
    let factor = factor.min(policy.max_cpu.as_cores() / base_cpu.as_cores());
    let current = snapshot.pod_cpu_request().unwrap_or(base_cpu).as_cores() / base_cpu.as_cores();
    let settled = bridged && (factor / current - 1.0).abs() <= policy.tolerance;
    if factor <= 1.0 || settled {
        return;
    }
    decision.running = scaled(&base, factor, policy);
    decision.state.bridge = Some(base);
    decision.rationale.push_str(&format!(
        "; the {ready} ready pods grow in place ×{factor:.2} from {base_cpu} to carry {demand:.2} pods' worth until \
         the replicas are there"
    ));
}

/// Sum of the containers' CPU requests (every container must have one).
fn pod_cpu(containers: &[ContainerRecommendation]) -> Option<CpuMillis> {
    containers
        .iter()
        .map(|c| c.requests.cpu.map(|v| v.0))
        .try_fold(0u64, |sum, v| v.map(|v| sum.saturating_add(v)))
        .map(CpuMillis)
}

/// The base grown by `factor`: CPU requests and limits, and memory limits (each pod takes `factor` times the
/// load, and its working set grows with it); memory requests stay (the bridge is short, the scheduler has
/// placed the pods already). Requests and limits stay within the policy's largest (`maxCpu`, `maxMemory`).
fn scaled(
    base: &[ContainerRecommendation],
    factor: f64,
    policy: &ResolvedPolicy,
) -> Vec<ContainerRecommendation> {
    let cpu = |v: Option<CpuMillis>| {
        v.map(|c| CpuMillis::from_cores_f64(c.as_cores() * factor).min(policy.max_cpu))
    };
    let memory = |v: Option<Bytes>| {
        v.map(|m| {
            Bytes((m.as_f64() * factor).min(u64::MAX as f64) as u64)
                .round_up_mib()
                .min(policy.max_memory)
        })
    };
    base.iter()
        .map(|c| ContainerRecommendation {
            name: c.name.clone(),
            requests: Resources {
                cpu: cpu(c.requests.cpu),
                memory: c.requests.memory,
            },
            limits: Resources {
                // A container without a CPU limit keeps none: a limit would throttle what was free to burst.
                cpu: cpu(c.limits.cpu).map(|l| l.max(cpu(c.requests.cpu).unwrap_or(l))),
                memory: memory(c.limits.memory),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Advice, decide};
    use crate::guardrails::GuardState;
    use crate::policy::Policy;
    use crate::quantity::MIB;
    use crate::test_support::hot_web_snapshot;
    use proptest::prelude::*;

    fn in_place() -> ResolvedPolicy {
        Policy::default().resolve_for(true)
    }

    /// 3 ready pods of 250m at `cpu` cores each, `replicas` asked for.
    fn load(cpu: f64, replicas: u32, ready: u32) -> MetricsSnapshot {
        let mut s = hot_web_snapshot("web");
        s.replicas = replicas;
        s.ready_replicas = Some(ready);
        s.cpu_per_pod = Some(crate::test_support::stats(cpu, cpu));
        s
    }

    /// The first decision on a 3-pod step to 0.5 cores each, with no state yet.
    fn first_step() -> Decision {
        decide(
            &load(0.5, 3, 3),
            &in_place(),
            Advice::None,
            &GuardState::default(),
            0,
        )
    }

    fn cpu_request(c: &[ContainerRecommendation]) -> Option<u64> {
        c.first().and_then(|c| c.requests.cpu).map(|v| v.0)
    }

    #[test]
    fn a_step_grows_the_ready_pods_in_place_and_keeps_the_template() {
        // 3 pods at 0.5 cores of 250m: 0.5 / 0.175 = 2.86 pods' worth each, 8.6 in all.
        let d = first_step();
        assert!(d.replicas > 3, "the scale-up is decided on the base size");
        assert!(d.containers.is_empty(), "the template keeps its size");
        let grown = cpu_request(&d.running).unwrap_or(0);
        assert!(
            (700..=730).contains(&grown),
            "grown to carry the load: {grown}m"
        );
        let limit = d.running[0].limits.cpu.map_or(0, |c| c.0);
        assert!(
            limit.abs_diff(grown * 2) <= 1,
            "the limit keeps its ratio: {limit}m"
        );
        assert_eq!(d.running[0].requests.memory, Some(Bytes(256 * MIB)));
        assert!(d.running[0].limits.memory > Some(Bytes(512 * MIB)));
        assert_eq!(
            cpu_request(d.state.bridge.as_deref().unwrap_or_default()),
            Some(250)
        );
    }

    #[test]
    fn a_container_without_a_cpu_limit_gets_none_from_the_bridge() {
        let mut s = load(0.5, 3, 3);
        s.containers[0].limits.cpu = None;
        let d = decide(&s, &in_place(), Advice::None, &GuardState::default(), 0);
        assert!(cpu_request(&d.running).is_some_and(|c| c > 250));
        assert_eq!(d.running[0].limits.cpu, None);
    }

    #[test]
    fn an_oom_kill_mid_bridge_bumps_the_base_and_the_bridge_goes_on_from_it() {
        let first = first_step();
        let grown = cpu_request(&first.running).unwrap_or(0);
        // The burst goes on; one serving pod was OOM-killed at its grown limit.
        let mut burst = load(0.5, first.replicas, 3);
        burst.containers[0].requests = first.running[0].requests;
        burst.containers[0].limits = first.running[0].limits;
        burst.oom_kills = 1;
        burst.events.push(crate::snapshot::EventSummary {
            kind: "Warning".into(),
            reason: "OOMKilling".into(),
            message: "Memory cgroup out of memory".into(),
            count: 1,
            last_seen: 10,
        });
        let d = decide(&burst, &in_place(), Advice::None, &first.state, 15);
        let base = d.state.bridge.as_deref().unwrap_or_default();
        assert!(!d.containers.is_empty(), "the memory bump is a new base");
        assert_eq!(base, d.containers.as_slice(), "the bridge goes on from it");
        assert!(
            base[0].limits.memory > Some(Bytes(512 * MIB)),
            "{:?}",
            base[0].limits
        );
        assert_eq!(cpu_request(base), Some(250), "CPU stays at the base");
        assert!(
            cpu_request(&d.running).is_some_and(|c| c.abs_diff(grown) <= 10),
            "the serving pods keep their grown CPU: {:?} vs {grown}m",
            cpu_request(&d.running)
        );
        assert!(
            d.running[0].limits.memory > first.running[0].limits.memory,
            "and get more memory than they died at"
        );
    }

    #[test]
    fn without_in_place_resize_there_is_no_bridge() {
        let policy = Policy::default().resolve();
        let d = decide(
            &load(0.5, 3, 3),
            &policy,
            Advice::None,
            &GuardState::default(),
            0,
        );
        assert!(d.running.is_empty() && d.state.bridge.is_none());
    }

    #[test]
    fn the_bridge_ends_when_the_replicas_are_ready() {
        let first = first_step();
        let replicas = first.replicas;
        // The new pods are ready; the load per pod is back under the target at the base size.
        let mut now = load(0.16, replicas, replicas);
        now.containers[0].requests = first.running[0].requests;
        now.containers[0].limits = first.running[0].limits;
        let d = decide(&now, &in_place(), Advice::None, &first.state, 15);
        assert_eq!(cpu_request(&d.running), Some(250), "back to the base size");
        assert!(d.state.bridge.is_none());
        assert_eq!(
            d.replicas, replicas,
            "the replicas are counted in base pods"
        );
    }

    #[test]
    fn a_bridge_within_the_tolerance_is_left_alone() {
        let first = first_step();
        let mut again = load(0.5, first.replicas, 3);
        again.containers[0].requests = first.running[0].requests;
        again.containers[0].limits = first.running[0].limits;
        let d = decide(&again, &in_place(), Advice::None, &first.state, 15);
        assert!(d.running.is_empty(), "{:?}", d.running);
        assert_eq!(d.state.bridge, first.state.bridge);
    }

    #[test]
    fn flat_load_within_the_target_is_never_bridged() {
        let d = decide(
            &load(0.17, 3, 3),
            &in_place(),
            Advice::None,
            &GuardState::default(),
            0,
        );
        assert!(d.running.is_empty() && d.state.bridge.is_none());
    }

    proptest! {
        /// Whatever the load, the bridge only grows (never below the base), never past the policy's largest pod,
        /// and the template is never changed by it.
        #[test]
        fn bridges_stay_between_the_base_and_the_largest_pod(
            cpu in 0.0f64..20.0, replicas in 1u32..30, ready_share in 0.0f64..=1.0,
        ) {
            let ready = ((f64::from(replicas) * ready_share) as u32).min(replicas);
            let policy = ResolvedPolicy { max_cpu: CpuMillis(2000), ..in_place() };
            let d = decide(&load(cpu, replicas, ready), &policy, Advice::None, &GuardState::default(), 0);
            if let Some(grown) = cpu_request(&d.running) {
                prop_assert!(grown > 250 && grown <= 2000, "{grown}");
                prop_assert!(ready > 0);
                let limit = d.running[0].limits.cpu.map_or(0, |c| c.0);
                prop_assert!(limit >= grown && limit <= 2000, "limit {limit}");
            }
            prop_assert!(d.containers.is_empty());
        }
    }
}
