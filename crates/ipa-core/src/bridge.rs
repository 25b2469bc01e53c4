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
//! Run downwards it is the trim: when the serving pods are more than the load needs (whole pods rounded up, a
//! ratio inside the tolerance, a scale-down window holding), their CPU request is trimmed to what they carry at
//! the target utilization, their limits left as they are: what they reserve follows the load, what they can
//! burst to does not move.
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
    // The demand, counted by the fast rule in pods of the old base, in pods of the base; over the pods that will
    // serve it (the ready ones, fewer if replicas go), the factor each must be sized by.
    let demand = wanted.exact * (old_cpu.as_cores() / base_cpu.as_cores());
    size_the_born(decision, &base, demand, policy);
    let ready = snapshot.ready_replicas.unwrap_or(snapshot.replicas);
    if ready == 0 {
        // Every pod is starting (or restarting after an OOM kill): nothing serves to grow, but the pods that
        // will serve can be born for their share of the load.
        if !decision.born.is_empty() {
            decision.state.bridge = Some(base);
        }
        return;
    }
    let serving = ready.min(decision.replicas).max(1);
    let factor = demand / f64::from(serving);
    let current = snapshot.pod_cpu_request().unwrap_or(base_cpu).as_cores() / base_cpu.as_cores();
    let fit = Fit::of(factor, policy, base_cpu);
    if fit == Fit::Base {
        if decision.state.bridge.is_some() {
            decision.running = base;
            decision.state.bridge = None;
            decision.rationale.push_str(&format!(
                "; the {serving} serving pods carry the load at their own size ({base_cpu}): bridge ended"
            ));
        }
        return;
    }
    // A change within the tolerance is not worth a resize, as a ratio within it is not worth a replica (a new
    // base always is: the pods take it, fitted).
    if !rebased && (fit.factor() / current - 1.0).abs() <= policy.tolerance {
        return;
    }
    decision
        .rationale
        .push_str(&fit.describe(serving, demand, base_cpu));
    decision.running = match fit {
        Fit::Trimmed(f) => trimmed(&base, f, policy),
        _ => scaled(&base, fit.factor(), policy),
    };
    decision.state.bridge = Some(base);
}

/// Sets `decision.born` for the pods still starting: their share of `demand` (in base pods) once every replica
/// decided serves, and says so in the rationale.
fn size_the_born(
    decision: &mut Decision,
    base: &[ContainerRecommendation],
    demand: f64,
    policy: &ResolvedPolicy,
) {
    let share = demand / f64::from(decision.replicas.max(1));
    decision.born = born(base, share, policy);
    if !decision.born.is_empty() {
        decision.rationale.push_str(&format!(
            "; pods starting get memory limits ×{share:.2} for their share of {demand:.2} pods' worth"
        ));
    }
}

/// The size the serving pods should run at, relative to their base.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fit {
    /// Within the tolerance above the base, or no demand known: the base.
    Base,
    /// Above the tolerance: grown by this factor (at most to the policy's largest pod).
    Grown(f64),
    /// Below the base: the CPU request trimmed by this factor (at least [`MIN_TRIM`]).
    Trimmed(f64),
}

impl Fit {
    fn of(factor: f64, policy: &ResolvedPolicy, base_cpu: CpuMillis) -> Self {
        let largest = policy.max_cpu.as_cores() / base_cpu.as_cores();
        if !factor.is_finite() {
            Fit::Base
        } else if factor < 1.0 {
            Fit::Trimmed(factor.max(MIN_TRIM))
        } else if factor > 1.0 + policy.tolerance && largest > 1.0 {
            Fit::Grown(factor.min(largest))
        } else {
            Fit::Base
        }
    }

    fn describe(self, serving: u32, demand: f64, base_cpu: CpuMillis) -> String {
        match self {
            Fit::Grown(f) => format!(
                "; the {serving} serving pods grow in place ×{f:.2} from {base_cpu} to carry {demand:.2} pods' \
                 worth until the replicas are there"
            ),
            Fit::Trimmed(f) => format!(
                "; the {serving} serving pods need {demand:.2} pods' worth: their CPU request is trimmed in place \
                 ×{f:.2} from {base_cpu} (their limit stays)"
            ),
            Fit::Base => String::new(),
        }
    }

    fn factor(self) -> f64 {
        match self {
            Fit::Base => 1.0,
            Fit::Grown(f) | Fit::Trimmed(f) => f,
        }
    }
}

/// The deepest trim: a pod's CPU request never goes under half its base, so the base (what new pods are born
/// with and what the scheduler placed) stays a fair estimate of what each pod reserves.
const MIN_TRIM: f64 = 0.5;

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

/// The size for pods still starting when, once every replica serves, each carries `factor` (> 1 + tolerance)
/// base pods' worth: the base with its memory limits grown by it. A new pod takes its share of the load as
/// soon as it is ready, before the next sync can resize it; at the base's memory limit it was OOM-killed there
/// (five new pods, ready after the one serving pod had been OOM-killed, on the simulator's network-in burst).
/// Memory limits only: they reserve nothing, where a grown CPU request would be paid for all the while the pod
/// starts, and a CPU limit only throttles. Empty when the factor is within the tolerance.
fn born(
    base: &[ContainerRecommendation],
    factor: f64,
    policy: &ResolvedPolicy,
) -> Vec<ContainerRecommendation> {
    if !factor.is_finite() || factor <= 1.0 + policy.tolerance {
        return Vec::new();
    }
    scaled(base, factor, policy)
        .into_iter()
        .zip(base)
        .map(|(grown, b)| ContainerRecommendation {
            limits: Resources {
                memory: grown.limits.memory,
                ..b.limits
            },
            ..b.clone()
        })
        .collect()
}

/// The base with its CPU requests trimmed by `factor` (< 1). Limits stay, so a trimmed pod can still burst to
/// what it could before until the next sync grows it back; only where request = limit (a Guaranteed pod) the
/// limit follows, as a resize may not change a pod's QoS class. Memory is left alone: a working set does not
/// shrink with a trim, and a lower memory limit risks an OOM kill.
fn trimmed(
    base: &[ContainerRecommendation],
    factor: f64,
    policy: &ResolvedPolicy,
) -> Vec<ContainerRecommendation> {
    scaled(base, factor, policy)
        .into_iter()
        .zip(base)
        .map(|(mut t, b)| {
            if b.limits.cpu != b.requests.cpu {
                t.limits.cpu = b.limits.cpu;
            }
            t.requests.memory = b.requests.memory;
            t.limits.memory = b.limits.memory;
            t
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

    /// The fast loop's first decision on `s` in place, with no state yet.
    fn fresh(s: &MetricsSnapshot) -> Decision {
        decide(s, &in_place(), Advice::None, &GuardState::default(), 0)
    }

    /// The first decision on a 3-pod step to 0.5 cores each, with no state yet.
    fn first_step() -> Decision {
        fresh(&load(0.5, 3, 3))
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

    /// The base's memory limit, in bytes.
    fn memory_limit(c: &[ContainerRecommendation]) -> f64 {
        c.first()
            .and_then(|c| c.limits.memory)
            .map_or(0.0, Bytes::as_f64)
    }

    #[test]
    fn pods_born_during_a_bridge_get_memory_limits_for_their_share_and_the_base_cpu() {
        // 8.6 pods' worth on the replicas decided: each takes more than a base pod's once ready.
        let d = first_step();
        let base = d.state.bridge.clone().unwrap_or_default();
        assert!(d.replicas < 8, "{} replicas: {}", d.replicas, d.rationale);
        let factor = memory_limit(&d.born) / memory_limit(&base);
        let expected = 0.5 * 3.0 / 0.175 / f64::from(d.replicas);
        assert!(
            (factor - expected).abs() < 0.01,
            "×{factor:.3}, not ×{expected:.3}"
        );
        assert_eq!(
            d.born[0].requests, base[0].requests,
            "requests stay at the base"
        );
        assert_eq!(d.born[0].limits.cpu, base[0].limits.cpu);
        // Settled (the same factor again), the serving pods are left; pods born since get their share of the
        // replicas decided now, or the base once that is within the tolerance.
        let mut again = load(0.5, d.replicas, 3);
        again.containers[0].requests = d.running[0].requests;
        again.containers[0].limits = d.running[0].limits;
        let settled = decide(&again, &in_place(), Advice::None, &d.state, 15);
        assert!(settled.running.is_empty());
        let share = 0.5 * 3.0 / 0.175 / f64::from(settled.replicas);
        assert_eq!(settled.born.is_empty(), share <= 1.1, "×{share:.2}");
        let trim = fresh(&load(0.14, 3, 3));
        assert!(trim.born.is_empty(), "a trim leaves new pods at the base");
    }

    #[test]
    fn with_every_pod_starting_the_new_ones_are_born_for_the_load_the_rate_shows() {
        // The one pod was OOM-killed under a burst: no pod reports usage, the request rate says 20 × more.
        let mut s = load(0.2, 1, 0);
        s.cpu_per_pod = None;
        s.request_rate = Some(crate::test_support::stats(2400.0, 2400.0));
        s.history = Some(crate::snapshot::DemandHistory {
            step_seconds: 300,
            cpu_cores: vec![Some(0.2); 24],
            request_rate: vec![Some(120.0); 24],
        });
        let d = fresh(&s);
        assert!(d.replicas > 1, "{}", d.rationale);
        assert!(d.running.is_empty(), "nothing serves to grow");
        assert!(
            d.rationale.contains("pods starting get memory limits"),
            "{}",
            d.rationale
        );
        let base = d.state.bridge.clone().unwrap_or_default();
        assert!(
            memory_limit(&d.born) > 1.5 * memory_limit(&base),
            "born {:?}, base {:?}",
            d.born,
            base
        );
    }

    #[test]
    fn a_container_without_a_cpu_limit_gets_none_from_the_bridge() {
        let mut s = load(0.5, 3, 3);
        s.containers[0].limits.cpu = None;
        let d = fresh(&s);
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
        // The new pods are ready; the load per pod is back near the target at the base size (0.18 of 0.175).
        let mut now = load(0.18, replicas, replicas);
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
    fn fewer_pods_worth_than_replicas_trims_the_cpu_request_and_keeps_the_limits() {
        // 3 pods at 0.14 cores: 0.8 pods' worth each of 250m at 70 %, within the fast rule's tolerance.
        let d = fresh(&load(0.14, 3, 3));
        assert_eq!(d.replicas, 3);
        assert!(d.containers.is_empty(), "the template keeps its size");
        assert!(
            cpu_request(&d.running).is_some_and(|c| (200..=201).contains(&c)),
            "{}",
            d.rationale
        );
        let base = d.state.bridge.as_deref().unwrap_or_default();
        assert_eq!(cpu_request(base), Some(250));
        assert_eq!(d.running[0].limits, base[0].limits, "the limits stay");
        assert_eq!(d.running[0].requests.memory, base[0].requests.memory);
        assert!(d.rationale.contains("trimmed"), "{}", d.rationale);
    }

    #[test]
    fn a_guaranteed_pod_is_trimmed_with_its_limit_so_its_qos_class_stays() {
        let mut s = load(0.14, 3, 3);
        s.containers[0].limits.cpu = s.containers[0].requests.cpu;
        let d = fresh(&s);
        let trimmed = cpu_request(&d.running);
        assert!(trimmed.is_some_and(|c| (200..=201).contains(&c)));
        assert_eq!(d.running[0].limits.cpu.map(|c| c.0), trimmed);
    }

    #[test]
    fn a_trim_within_the_tolerance_is_not_worth_a_resize_and_an_idle_pod_keeps_half() {
        // 0.16 cores: 0.91 pods' worth, 9 % under the base.
        let near = fresh(&load(0.16, 3, 3));
        assert!(near.running.is_empty() && near.state.bridge.is_none());
        let mut idle = load(0.001, 3, 3);
        idle.replicas = 1;
        idle.ready_replicas = Some(1);
        let d = fresh(&idle);
        assert_eq!(cpu_request(&d.running), Some(125), "{}", d.rationale);
    }

    #[test]
    fn flat_load_within_the_target_is_never_bridged() {
        let d = fresh(&load(0.17, 3, 3));
        assert!(d.running.is_empty() && d.state.bridge.is_none());
    }

    proptest! {
        /// Whatever the load, the serving pods stay between half their base and the policy's largest pod, a
        /// limit never under its request, and the template is never changed by it.
        #[test]
        fn fitted_pods_stay_between_half_the_base_and_the_largest_pod(
            cpu in 0.0f64..20.0, replicas in 1u32..30, ready_share in 0.0f64..=1.0,
        ) {
            let ready = ((f64::from(replicas) * ready_share) as u32).min(replicas);
            let policy = ResolvedPolicy { max_cpu: CpuMillis(2000), ..in_place() };
            let d = decide(&load(cpu, replicas, ready), &policy, Advice::None, &GuardState::default(), 0);
            if let Some(fitted) = cpu_request(&d.running) {
                prop_assert!((125..=2000).contains(&fitted) && fitted != 250, "{fitted}");
                prop_assert!(ready > 0);
                let limit = d.running[0].limits.cpu.map_or(0, |c| c.0);
                prop_assert!(limit >= fitted && limit <= 2000, "limit {limit}");
                prop_assert!(limit >= 500 || fitted > 250, "a trim keeps the limit: {limit}");
            }
            prop_assert!(d.containers.is_empty());
        }
    }
}
