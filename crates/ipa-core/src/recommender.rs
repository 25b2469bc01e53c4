//! The built-in recommender: the advisor when no LLM is configured, the stand-in when the LLM or the agent fails,
//! and the evidence a model's advice is held against.
//!
//! Replicas: what the fast rule wants now ([`crate::horizontal`]), raised by what yesterday's demand did over the
//! next interval (a seasonal pre-scale; the fast loop handles today's ramps itself, so no window trend is
//! extrapolated here — at a 15 s loop a trend term buys nothing and over-provisions).
//!
//! Horizontal and vertical scaling fed by the same CPU signal have no unique answer (4 pods of 1 core or 8 of
//! 0.5 serve the same load), and naively combined they chase each other — HPA's and VPA's docs forbid using both
//! on CPU. IPA resolves it with one rule: **replicas own CPU; the pod's CPU request is a unit of capacity, set
//! rarely from a long window's peak**. It shrinks when a whole day's peak fits in far fewer pods than the design
//! point, grows only when even `maxReplicas` cannot hold the sustained demand, and each change must be at least
//! a factor [`RESIZE_HYSTERESIS`] — never on a burst. Memory is per pod and right-sized from its peak, VPA-style.

use crate::forecast::seasonal_ratio;
use crate::horizontal::{to_replicas, wanted_replicas};
use crate::policy::ResolvedPolicy;
use crate::quantity::{Bytes, CpuMillis, MIB};
use crate::recommendation::{ContainerRecommendation, Recommendation, Source};
use crate::snapshot::{ContainerSnapshot, MetricsSnapshot, Resources, SeriesStats};

/// Fraction of a CPU limit above which a pod counts as throttled (its true demand is unknown, and higher).
pub const SATURATION: f64 = 0.9;
/// VPA's OOM bump: +20 %, at least +100 MiB.
pub const OOM_BUMP_RATIO: f64 = 1.2;
pub const OOM_BUMP_MIN: Bytes = Bytes(100 * MIB);
/// The pod size's design point: the long window's peak should need about this many pods (never more than half
/// of `maxReplicas`, so the load can double past its peak before pods must grow). Ten pods keep the rounding
/// to whole pods near 5 % at the peak; more pods buy little and multiply each pod's fixed overhead.
pub const PODS_AT_PEAK: u32 = 10;
/// A pod's CPU request changes only when the design point is at least this factor away from it.
pub const RESIZE_HYSTERESIS: f64 = 2.0;

/// Recommends replicas and per-container resources for one target.
pub fn recommend(snapshot: &MetricsSnapshot, policy: &ResolvedPolicy) -> Recommendation {
    // Held replicas are held within the policy too, as the guard would hold them: 0 replicas with CPU usage
    // unknown came back as 0 under `minReplicas: 1` (found by the `seed_metrics` fuzz target).
    let held = snapshot
        .replicas
        .clamp(policy.min_replicas, policy.max_replicas);
    let mut rec = Recommendation::new(held, Source::Builtin);
    let mut why = Vec::new();
    let Some(cpu) = snapshot.cpu_per_pod.filter(|s| s.current.is_finite()) else {
        why.push("CPU usage is missing: holding replicas".to_string());
        rec.containers = vertical_memory_only(snapshot, policy, &mut why);
        rec.rationale = why.join("; ");
        return rec;
    };
    let Some(pod_request) = snapshot.pod_cpu_request().filter(|r| r.0 > 0) else {
        // No CPU request: there is no capacity unit to scale by. Size one from usage and keep the replicas.
        why.push("no CPU request set: sizing one from usage, replicas held".to_string());
        rec.containers = vertical(snapshot, policy, None, &mut why);
        rec.rationale = why.join("; ");
        return rec;
    };
    let mut replicas = snapshot.replicas;
    if let Some(wanted) = wanted_replicas(snapshot, policy) {
        why.push(wanted.why);
        replicas = wanted.replicas;
    }
    if let Some(expected) = seasonal_replicas(snapshot, policy, &cpu, pod_request, &mut why) {
        replicas = replicas.max(expected);
    }
    rec.replicas = replicas.clamp(policy.min_replicas, policy.max_replicas);
    let pods = snapshot
        .ready_replicas
        .filter(|r| *r > 0)
        .unwrap_or(snapshot.replicas)
        .max(1);
    let resize = right_size_cpu(snapshot, policy, &cpu, pods, pod_request, &mut why);
    rec.containers = vertical(snapshot, policy, resize.map(|n| (pod_request, n)), &mut why);
    rec.rationale = why.join("; ");
    rec
}

/// Replicas for what yesterday's demand did over the next start-up + interval, when it grew: the advisor's
/// pre-scale for a daily ramp (a floor for one interval, never a reason to scale down).
fn seasonal_replicas(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    cpu: &SeriesStats,
    pod_request: CpuMillis,
    why: &mut Vec<String>,
) -> Option<u32> {
    let history = snapshot.history.as_ref()?;
    let horizon = policy
        .startup_seconds
        .saturating_add(policy.interval_seconds);
    let series = if history.request_rate.is_empty() {
        &history.cpu_cores
    } else {
        &history.request_rate
    };
    let ratio = seasonal_ratio(series, history.step_seconds, horizon).filter(|r| *r > 1.0)?;
    let ready = snapshot.ready_replicas.unwrap_or(snapshot.replicas);
    let per_pod = pod_request.as_cores() * policy.target_utilization;
    let expected = to_replicas(cpu.current * f64::from(ready) * ratio / per_pod);
    why.push(format!(
        "yesterday the demand grew ×{ratio:.2} over the next {horizon}s: {expected} replicas expected"
    ));
    Some(expected)
}

/// The pod CPU request the design point asks for, when it is at least [`RESIZE_HYSTERESIS`] away from the
/// current one: a shrink once a whole day's peak fits in far fewer than [`PODS_AT_PEAK`] pods; a growth when
/// `maxReplicas` cannot hold the window's sustained (median) demand.
fn right_size_cpu(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    cpu: &SeriesStats,
    pods: u32,
    pod_request: CpuMillis,
    why: &mut Vec<String>,
) -> Option<CpuMillis> {
    let target = policy.target_utilization;
    let pods_f = f64::from(pods);
    // Per-pod window statistics pool samples taken at other pod counts: only `current` scales to a total.
    let window_peak = cpu.current * pods_f;
    let sustained = cpu.p50 * pods_f;
    let design = (policy.max_replicas / 2)
        .clamp(1, PODS_AT_PEAK)
        .max(policy.min_replicas);
    let size_for = |peak: f64| {
        CpuMillis::from_cores_f64(peak / (f64::from(design) * target))
            .clamp(policy.min_cpu, policy.max_cpu)
    };
    let current = pod_request.as_cores();
    let capped = sustained / (current * target) > f64::from(policy.max_replicas);
    if capped && policy.in_place {
        // In place, a burst past `maxReplicas` is the bridge's (the pods grow while it lasts and shrink after
        // it): the pods' own size only has to hold the sustained demand on `maxReplicas` pods. Sized for the
        // burst's peak, as without in-place resize, they would stay grown for a day after it.
        let needed =
            CpuMillis::from_cores_f64(sustained / (f64::from(policy.max_replicas) * target))
                .clamp(policy.min_cpu, policy.max_cpu);
        if needed > pod_request {
            why.push(format!(
                "{sustained:.2} cores sustained need more than maxReplicas {} pods of {pod_request}: pod CPU request → {needed}",
                policy.max_replicas
            ));
            return Some(needed);
        }
        return None;
    }
    if capped {
        // A ramp is met where it is going (CPU's 30 s slope over one reaction time), so pods grow once rather
        // than step by step behind `rate()` (the bed's vertical test saw three resizes for one load step).
        let reaction_minutes = f64::from(
            policy
                .startup_seconds
                .saturating_add(policy.sync_period_seconds),
        ) / 60.0;
        let rising = cpu.recent_trend_per_min.max(0.0) * reaction_minutes * pods_f;
        // At most a doubling, as the fast rule's lead: a 30 s slope extrapolates badly past that.
        let ahead = window_peak
            + if rising.is_finite() {
                rising.min(window_peak)
            } else {
                0.0
            };
        let peak = long_history_peak(snapshot).map_or(ahead, |p| p.max(ahead));
        let needed = size_for(peak).max(CpuMillis::from_cores_f64(
            sustained / (f64::from(policy.max_replicas) * target),
        ));
        if needed > pod_request {
            why.push(format!(
                "{sustained:.2} cores sustained need more than maxReplicas {} pods of {pod_request}: pod CPU request → {needed}",
                policy.max_replicas
            ));
            return Some(needed.min(policy.max_cpu));
        }
        return None;
    }
    let peak = long_history_peak(snapshot)?.max(window_peak);
    let size = size_for(peak);
    (size.as_cores() * RESIZE_HYSTERESIS <= current).then(|| {
        why.push(format!(
            "a day's peak of {peak:.2} cores fits {design} pods of {size}: pod CPU request {pod_request} → {size}"
        ));
        size
    })
}

/// The day's peak a pod is sized by: the top 1 % of a day's 5-minute means (its busiest quarter of an hour) is
/// left to replicas and to growth at `maxReplicas`, so one burst does not keep pods big for a day.
pub const SIZING_PEAK_QUANTILE: f64 = 0.99;

/// The day's peak total CPU demand ([`SIZING_PEAK_QUANTILE`] of the history), when the history covers at least
/// a day without gaps.
fn long_history_peak(snapshot: &MetricsSnapshot) -> Option<f64> {
    let history = snapshot.history.as_ref()?;
    let covered = history.cpu_cores.len() as u64 * u64::from(history.step_seconds);
    if covered < MIN_HISTORY_FOR_SHRINK_SECONDS {
        return None;
    }
    let mut values = history
        .cpu_cores
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect::<Option<Vec<f64>>>()?;
    values.sort_by(f64::total_cmp);
    crate::stats::percentile_sorted(&values, SIZING_PEAK_QUANTILE)
}

/// History needed before pods are shrunk: a whole day (less one 5-minute step), so an on/off or daily workload
/// is never shrunk in its quiet hours only to restart every pod when the load comes back.
const MIN_HISTORY_FOR_SHRINK_SECONDS: u64 = 86_400 - 300;

/// Per-container requests and limits. `pod_cpu` = (current pod CPU request, wanted pod CPU request) when the
/// CPU request must change; `None` keeps CPU as it is unless it is unset.
fn vertical(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    pod_cpu: Option<(CpuMillis, CpuMillis)>,
    why: &mut Vec<String>,
) -> Vec<ContainerRecommendation> {
    if !policy.vertical {
        return Vec::new();
    }
    snapshot
        .containers
        .iter()
        .filter(|c| policy.manages(&c.name))
        .map(|c| {
            let cpu_request = match (pod_cpu, c.requests.cpu) {
                (Some((old, new)), Some(current)) if old.0 > 0 => Some(CpuMillis(
                    ((current.0 as u128 * new.0 as u128) / old.0 as u128).min(u64::MAX as u128)
                        as u64,
                )),
                (_, Some(current)) => Some(current),
                (_, None) => cpu_from_usage(c, policy),
            };
            let cpu_request = cpu_request.map(|r| r.clamp(policy.min_cpu, policy.max_cpu));
            let memory_request = memory_from_usage(c, snapshot.oom_kills > 0, policy, why);
            let cpu_limit = cpu_request.and_then(|request| {
                scale_limit(
                    c.limits.cpu.map(|v| v.0),
                    c.requests.cpu.map(|v| v.0),
                    request.0,
                    policy,
                )
                .map(|l| CpuMillis(l).min(policy.max_cpu).max(request))
            });
            let memory_limit = memory_request.and_then(|m| {
                scale_limit(
                    c.limits.memory.map(|v| v.0),
                    c.requests.memory.map(|v| v.0),
                    m.0,
                    policy,
                )
                .map(|l| Bytes(l).round_up_mib().min(policy.max_memory).max(m))
            });
            ContainerRecommendation {
                name: c.name.clone(),
                requests: Resources {
                    cpu: cpu_request,
                    memory: memory_request.or(c.requests.memory),
                },
                limits: Resources {
                    cpu: cpu_limit.or(c.limits.cpu),
                    memory: memory_limit.or(c.limits.memory),
                },
            }
        })
        .collect()
}

/// Memory only (CPU untouched): used when CPU usage is missing, and by the fast loop after an OOM kill, so an
/// OOM gets its bump without waiting for the advisory interval.
pub fn vertical_memory_only(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    why: &mut Vec<String>,
) -> Vec<ContainerRecommendation> {
    if snapshot.oom_kills == 0 {
        return Vec::new();
    }
    vertical(snapshot, policy, None, why)
        .into_iter()
        .zip(&snapshot.containers)
        .map(|(mut rec, current)| {
            rec.requests.cpu = current.requests.cpu;
            rec.limits.cpu = current.limits.cpu;
            rec
        })
        .collect()
}

/// CPU request from usage when none is set: p90 per-pod usage at the target utilization. `None` while there is
/// no usage to size from (e.g. the pods are still starting): the floor would be a guess, not a measurement.
fn cpu_from_usage(c: &ContainerSnapshot, policy: &ResolvedPolicy) -> Option<CpuMillis> {
    let usage = c
        .cpu_cores
        .map(|s| s.p90.max(s.current))
        .filter(|u| u.is_finite() && *u > 0.0)?;
    Some(CpuMillis::from_cores_f64(usage / policy.target_utilization))
}

/// VPA-like memory request: the window's peak + margin, bumped after an OOM kill (max(+20 %, +100 MiB) over
/// what the container was allowed when it died).
fn memory_from_usage(
    c: &ContainerSnapshot,
    oom: bool,
    policy: &ResolvedPolicy,
    why: &mut Vec<String>,
) -> Option<Bytes> {
    let peak = c
        .memory_bytes
        .map(|s| s.max.max(s.current))
        .filter(|p| p.is_finite() && *p > 0.0);
    let mut request = peak.map(|p| {
        let target = Bytes::from_f64(p * (1.0 + policy.request_margin));
        // VPA-like bounds: a current request between the target (peak + margin) and 2 × the target is good
        // enough — changing it would restart every pod for little gain. Below it, grow with 20 % headroom so the
        // next small rise of the peak does not trigger another restart.
        match c.requests.memory {
            Some(current)
                if current >= target
                    && current.as_f64() <= target.as_f64() * MEMORY_UPPER_BOUND =>
            {
                current
            }
            Some(current) if current < target => {
                Bytes::from_f64(target.as_f64() * MEMORY_GROWTH_HEADROOM)
            }
            _ => target,
        }
    });
    if oom {
        let used = [
            c.limits.memory,
            c.requests.memory,
            peak.map(Bytes::from_f64),
        ]
        .into_iter()
        .flatten()
        .max()?;
        let bumped = oom_bump(used);
        why.push(format!("{}: OOM kill seen, memory ≥ {bumped}", c.name));
        request = Some(request.map_or(bumped, |r| r.max(bumped)));
    }
    request.map(|r| r.round_up_mib().clamp(policy.min_memory, policy.max_memory))
}

/// A memory request up to this multiple of its target is left alone.
const MEMORY_UPPER_BOUND: f64 = 2.0;
/// Headroom added when the memory request must grow.
const MEMORY_GROWTH_HEADROOM: f64 = 1.2;

/// VPA's OOM bump-up of a memory amount.
pub fn oom_bump(used: Bytes) -> Bytes {
    Bytes::from_f64(used.as_f64() * OOM_BUMP_RATIO)
        .max(Bytes(used.0.saturating_add(OOM_BUMP_MIN.0)))
        .round_up_mib()
}

/// A limit for `request` that keeps the container's current limit/request ratio (VPA's `RequestsAndLimits`),
/// or the policy's default ratio when the container has a limit but no request. Never below the request. The
/// caller holds it to the policy's maximum: a request at the maximum times a ratio of 1.5 gave a 96-core limit
/// under a 64-core `maxCpu`, and a current limit of 1000000Mi a 16 EiB one (found by the `seed_metrics` fuzz
/// target).
/// `None` when the container has no limit: as with VPA, a limit is its owner's choice (a CPU limit throttles, a
/// memory limit OOM-kills), and adding one would also restart every pod for a change nobody asked for.
fn scale_limit(
    limit: Option<u64>,
    old_request: Option<u64>,
    request: u64,
    policy: &ResolvedPolicy,
) -> Option<u64> {
    let ratio = match (limit?, old_request) {
        (l, Some(r)) if r > 0 && l >= r => l as f64 / r as f64,
        _ => policy.limit_ratio,
    };
    let limit = (request as f64 * ratio).ceil();
    Some(if limit.is_finite() {
        (limit.min(u64::MAX as f64) as u64).max(request)
    } else {
        request
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::snapshot::{DemandHistory, TargetRef};
    use proptest::prelude::*;

    fn flat(v: f64) -> SeriesStats {
        SeriesStats::constant(v, 20)
    }

    fn snapshot(replicas: u32, cpu_per_pod: f64, mem_per_pod: f64) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ipaapp".into(),
                deployment: "testapp".into(),
            },
            0,
            replicas,
        );
        s.cpu_per_pod = Some(flat(cpu_per_pod));
        s.memory_per_pod = Some(flat(mem_per_pod));
        s.containers.push(ContainerSnapshot {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(500)),
                memory: Some(Bytes(128 * MIB)),
            },
            limits: Resources {
                cpu: Some(CpuMillis(1000)),
                memory: Some(Bytes(256 * MIB)),
            },
            cpu_cores: Some(flat(cpu_per_pod)),
            memory_bytes: Some(flat(mem_per_pod)),
        });
        s
    }

    #[test]
    fn scales_out_in_proportion_to_utilization() {
        // 4 pods at 0.7 cores of a 0.5-core request (140 %) → 2.8 cores / 0.35 = 8 pods.
        let rec = recommend(
            &snapshot(4, 0.7, 100.0 * MIB as f64),
            &Policy::default().resolve(),
        );
        assert_eq!(rec.replicas, 8);
        assert_eq!(rec.source, Source::Builtin);
        // Replicas own CPU: the CPU request is untouched.
        assert_eq!(rec.containers[0].requests.cpu, Some(CpuMillis(500)));
    }

    #[test]
    fn scales_in_when_idle_down_to_min() {
        // 6 × 0.05 = 0.3 cores fit one pod at 70 % of 0.5 cores.
        let rec = recommend(
            &snapshot(6, 0.05, 80.0 * MIB as f64),
            &Policy::default().resolve(),
        );
        assert_eq!(rec.replicas, 1);
    }

    #[test]
    fn grows_pods_when_replicas_are_capped() {
        let policy = Policy {
            max_replicas: Some(4),
            ..Policy::default()
        }
        .resolve();
        let rec = recommend(&snapshot(4, 0.7, 100.0 * MIB as f64), &policy);
        assert_eq!(rec.replicas, 4);
        let cpu = rec.containers[0].requests.cpu.unwrap_or_default();
        assert_eq!(
            cpu,
            CpuMillis(2000),
            "2.8 cores / (2 × 0.7): the peak fits half of maxReplicas"
        );
        assert_eq!(
            rec.containers[0].limits.cpu,
            Some(CpuMillis(4000)),
            "limit keeps the 2:1 ratio"
        );
    }

    #[test]
    fn memory_follows_peak_with_margin_and_oom_bumps() {
        let mut s = snapshot(2, 0.3, 200.0 * MIB as f64);
        let rec = recommend(&s, &Policy::default().resolve());
        // 128Mi is below 200Mi peak + 15 % = 230Mi: grow, with 20 % headroom.
        assert_eq!(rec.containers[0].requests.memory, Some(Bytes(276 * MIB)));
        assert!(rec.containers[0].limits.memory >= rec.containers[0].requests.memory);
        s.oom_kills = 1;
        let rec = recommend(&s, &Policy::default().resolve());
        // Limit was 256Mi: bump = max(256 × 1.2, 256 + 100) = 356Mi.
        assert_eq!(rec.containers[0].requests.memory, Some(Bytes(356 * MIB)));
    }

    #[test]
    fn limits_are_scaled_where_set_and_never_added() {
        let policy = Policy {
            max_replicas: Some(4),
            ..Policy::default()
        }
        .resolve();
        // Requests must grow (capped replicas, peak memory above the request), but the container has no limits.
        let mut s = snapshot(4, 0.7, 200.0 * MIB as f64);
        s.containers[0].limits = Resources::default();
        let rec = recommend(&s, &policy);
        assert_eq!(rec.containers[0].requests.cpu, Some(CpuMillis(2000)));
        assert_eq!(rec.containers[0].requests.memory, Some(Bytes(276 * MIB)));
        assert_eq!(rec.containers[0].limits, Resources::default());
        // A limit without a request takes the policy's ratio over the new request.
        s.containers[0].limits.memory = Some(Bytes(512 * MIB));
        s.containers[0].requests.memory = None;
        let rec = recommend(&s, &policy);
        assert_eq!(rec.containers[0].limits.cpu, None);
        assert_eq!(
            rec.containers[0].limits.memory,
            Some(Bytes(345 * MIB)),
            "230Mi × 1.5"
        );
    }

    #[test]
    fn no_cpu_request_is_sized_from_usage_but_never_from_nothing() {
        let mut s = snapshot(2, 0.35, 100.0 * MIB as f64);
        s.containers[0].requests.cpu = None;
        s.containers[0].limits.cpu = None;
        let rec = recommend(&s, &Policy::default().resolve());
        assert_eq!(
            rec.containers[0].requests.cpu,
            Some(CpuMillis(500)),
            "0.35 cores at 70 %"
        );
        s.containers[0].cpu_cores = None;
        let rec = recommend(&s, &Policy::default().resolve());
        assert_eq!(
            rec.containers[0].requests.cpu, None,
            "no usage yet: no request invented"
        );
    }

    #[test]
    fn missing_cpu_holds_replicas() {
        let mut s = snapshot(3, 0.3, 100.0);
        s.cpu_per_pod = None;
        let rec = recommend(&s, &Policy::default().resolve());
        assert_eq!(rec.replicas, 3);
        assert!(rec.rationale.contains("missing"));
    }

    #[test]
    fn rising_request_rate_scales_ahead_of_cpu() {
        let mut s = snapshot(4, 0.35, 100.0 * MIB as f64);
        s.request_rate = Some(SeriesStats {
            recent_trend_per_min: 40.0,
            ..flat(100.0)
        });
        let rec = recommend(&s, &Policy::default().resolve());
        // 1.4 cores now; rate +30 % over the 45 s reaction time → 1.82 cores / 0.35 → 6 pods.
        assert_eq!(rec.replicas, 6);
    }

    #[test]
    fn daily_profile_anticipates_the_morning_ramp() {
        let mut s = snapshot(4, 0.35, 100.0 * MIB as f64);
        let mut cpu = vec![Some(1.4); 291];
        let then = cpu.len() - 1 - 288;
        for step in 1..=3 {
            cpu[then + step] = Some(2.8);
        }
        s.history = Some(DemandHistory {
            step_seconds: 300,
            cpu_cores: cpu,
            request_rate: Vec::new(),
        });
        let rec = recommend(&s, &Policy::default().resolve());
        assert_eq!(rec.replicas, 8);
        assert!(rec.rationale.contains("yesterday"));
    }

    /// Found by the `seed_metrics` fuzz target: the seed's text said `CPU Resource Requests: 1e3` (1,000 cores)
    /// and `Memory Resource Limits: 1000000Mi`; the request was held at the policy's 64 cores but the limit kept
    /// the ratio (96 cores) and the memory limit overflowed to 16 EiB.
    #[test]
    fn limits_stay_within_the_policy_whatever_the_current_ratio() {
        let policy = Policy::default().resolve();
        let mut s = snapshot(3, 0.6, 400.0 * MIB as f64);
        for c in &mut s.containers {
            c.requests = Resources {
                cpu: Some(CpuMillis(1_000_000)),
                memory: Some(Bytes(MIB / 2)),
            };
            c.limits = Resources {
                cpu: Some(CpuMillis(500)),
                memory: Some(Bytes(1_000_000 * MIB)),
            };
        }
        let rec = recommend(&s, &policy);
        assert!(!rec.containers.is_empty());
        for c in &rec.containers {
            assert!(c.limits.cpu.is_some_and(|l| l <= policy.max_cpu), "{c:?}");
            assert!(
                c.limits.memory.is_some_and(|l| l <= policy.max_memory),
                "{c:?}"
            );
            assert!(
                c.limits.cpu >= c.requests.cpu && c.limits.memory >= c.requests.memory,
                "{c:?}"
            );
        }
    }

    #[test]
    fn held_replicas_are_within_the_policy() {
        let policy = Policy::default().resolve();
        for replicas in [0, 500] {
            let mut s = snapshot(replicas, 0.5, 400.0 * MIB as f64);
            s.cpu_per_pod = None;
            let rec = recommend(&s, &policy);
            assert_eq!(rec.replicas, replicas.clamp(1, 20), "{}", rec.rationale);
        }
    }

    proptest! {
        #[test]
        fn always_within_policy(
            replicas in 0u32..200, cpu in 0.0f64..64.0, mem in 0.0f64..1e11, oom in 0u32..3,
            min in 1u32..5, span in 0u32..50,
        ) {
            let policy = Policy { min_replicas: Some(min), max_replicas: Some(min + span), ..Policy::default() }.resolve();
            let mut s = snapshot(replicas, cpu, mem);
            s.oom_kills = oom;
            let rec = recommend(&s, &policy);
            prop_assert!(rec.replicas >= policy.min_replicas && rec.replicas <= policy.max_replicas);
            for c in &rec.containers {
                prop_assert!(c.limits.cpu >= c.requests.cpu);
                prop_assert!(c.limits.memory >= c.requests.memory);
                for cpu in [c.requests.cpu, c.limits.cpu].into_iter().flatten() { prop_assert!(cpu >= policy.min_cpu && cpu <= policy.max_cpu); }
                for m in [c.requests.memory, c.limits.memory].into_iter().flatten() { prop_assert!(m >= policy.min_memory && m <= policy.max_memory); }
            }
        }
    }
}
