//! The fast loop's replica rule, run every `syncPeriod` without an advisor: HPA's replica calculator on CPU
//! (ratio of usage to the target share of the request, a tolerance on that *ratio*, unready pods at 0 % on the
//! way up and missing pods at 100 % on the way down), plus one thing HPA does not have: a short-horizon lead
//! from the demand signal's recent slope, so a ramp is met where it will be when new pods are ready rather
//! than where it was.
//!
//! The lead reads the request rate, never CPU: CPU lags and saturates, and a replaced pod's CPU rising out of
//! `rate()`'s window looks like growth (on the test bed the old trend term turned exactly that into a scale-up
//! at flat load).

use crate::policy::ResolvedPolicy;
use crate::recommender::SATURATION;
use crate::snapshot::MetricsSnapshot;

/// What the load needs now, in replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// Replicas to run (before bounds, stabilization and step limits).
    pub replicas: u32,
    /// The demand in replicas' worth, unrounded (with the lead).
    pub exact: f64,
    /// The lead's share of the demand (0 when the demand is flat or falling).
    pub lead: f64,
    /// The ratio was within the tolerance: `replicas` is the current count.
    pub within_tolerance: bool,
    pub why: String,
}

/// Largest lead: the demand expected one reaction time ahead is at most this multiple of the demand now. A
/// 30 s slope extrapolates badly past a doubling, and HPA's step limit allows +100 % per period anyway.
const MAX_LEAD: f64 = 1.0;

/// Replicas the load needs now, or `None` when CPU usage or the pod's CPU request is unknown (then the fast
/// loop holds: no data is not zero load).
pub fn wanted_replicas(snapshot: &MetricsSnapshot, policy: &ResolvedPolicy) -> Option<Wanted> {
    let pod_request = snapshot.sizing_pod_cpu_request()?;
    let current = snapshot.replicas;
    let ready = snapshot.ready_replicas.unwrap_or(current).min(current);
    if current == 0 {
        return None;
    }
    let cpu = snapshot
        .cpu_per_pod
        .filter(|s| s.current.is_finite() && s.current >= 0.0 && ready > 0);
    let (cores, how) = match cpu {
        Some(cpu) => demand_cores(snapshot, cpu.current, ready),
        // No pod reports usage (all starting, or crash-looping under the load): only the request rate can
        // say what the load wants, and only upward. Holding would leave one OOM-killed pod taking it all.
        None => (from_rate(snapshot)?, Demand::RateOnly),
    };
    if how == Demand::RateOnly
        && cores / (pod_request.as_cores() * policy.target_utilization) <= f64::from(current)
    {
        return None;
    }
    let per_pod = pod_request.as_cores() * policy.target_utilization;
    let used = cores / per_pod;
    let lead = lead(snapshot, policy);
    let exact = used * (1.0 + lead);
    let (current_f, ready_f) = (f64::from(current), f64::from(ready));
    let tolerance = policy.tolerance;
    // Up: unready pods count at 0 % (they will serve soon); down: missing pods count at 100 % of the target
    // (they may be busy), as HPA does.
    let (ratio, basis) = if exact > ready_f {
        (exact / current_f, exact)
    } else {
        let basis = exact + (current_f - ready_f);
        (basis / current_f, basis)
    };
    let within_tolerance = (ratio - 1.0).abs() <= tolerance;
    let replicas = if within_tolerance || !basis.is_finite() {
        current
    } else {
        to_replicas(basis)
    };
    let why = format!(
        "{:.3} cores {} on {ready} ready pods{} = {exact:.2} pods of {pod_request} at {:.0}%: {}",
        cores,
        match how {
            Demand::Used => "used",
            Demand::Saturated => "wanted (pods at their CPU limit: from the request rate)",
            Demand::RateOnly => "wanted (no pod reports usage: from the request rate)",
        },
        if lead > 0.0 {
            format!(", +{:.0}% for the demand's ramp", lead * 100.0)
        } else {
            String::new()
        },
        policy.target_utilization * 100.0,
        if within_tolerance {
            format!(
                "ratio {ratio:.2} within the {:.0}% tolerance, {current} kept",
                tolerance * 100.0
            )
        } else {
            format!("ratio {ratio:.2}, {replicas} replicas")
        },
    );
    Some(Wanted {
        replicas,
        exact,
        lead,
        within_tolerance,
        why,
    })
}

/// The CPU the load wants now, in cores, and whether the pods are saturated. Pods at their CPU limit use what
/// they may, not what the load wants: then the request rate times the cores a request took over the history
/// (the pods' usage no longer shows the demand; the rate does). HPA sees at most limit ÷ request of the target
/// per step; a burst of 5× takes it several periods.
fn demand_cores(snapshot: &MetricsSnapshot, cpu_per_pod: f64, ready: u32) -> (f64, Demand) {
    let used = cpu_per_pod * f64::from(ready);
    let saturated = snapshot
        .pod_cpu_limit()
        .is_some_and(|l| l.0 > 0 && cpu_per_pod >= SATURATION * l.as_cores());
    match from_rate(snapshot).filter(|_| saturated) {
        Some(w) if w > used => (w, Demand::Saturated),
        _ => (used, Demand::Used),
    }
}

/// Where the demand in cores came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Demand {
    Used,
    Saturated,
    RateOnly,
}

/// The request rate now times the cores a request took over the history.
fn from_rate(snapshot: &MetricsSnapshot) -> Option<f64> {
    let rate = snapshot
        .request_rate
        .map(|r| r.current)
        .filter(|r| r.is_finite() && *r > 0.0)?;
    Some(rate * cores_per_request(snapshot)?)
}

/// CPU cores per request/s over the demand history: Σ cores ÷ Σ requests/s over the steps that have both.
/// `None` with fewer than [`MIN_COST_SAMPLES`] such steps.
fn cores_per_request(snapshot: &MetricsSnapshot) -> Option<f64> {
    let history = snapshot.history.as_ref()?;
    let (mut cores, mut rate, mut n) = (0.0, 0.0, 0usize);
    for (c, r) in history.cpu_cores.iter().zip(&history.request_rate) {
        if let (Some(c), Some(r)) = (c, r)
            && c.is_finite()
            && r.is_finite()
            && *r > 0.0
            && *c >= 0.0
        {
            cores += c;
            rate += r;
            n += 1;
        }
    }
    (n >= MIN_COST_SAMPLES && rate > 0.0).then(|| cores / rate)
}

/// History steps needed before the cost of a request is trusted (an hour of 5-minute steps).
const MIN_COST_SAMPLES: usize = 12;

/// The demand's expected growth over one reaction time (pod start-up + one sync period), as a fraction of the
/// demand now, from the request rate's recent slope. Only a rise counts: the way down is the stabilization
/// window's business.
fn lead(snapshot: &MetricsSnapshot, policy: &ResolvedPolicy) -> f64 {
    let Some(rate) = snapshot
        .request_rate
        .filter(|r| r.current.is_finite() && r.current > 0.0)
    else {
        return 0.0;
    };
    let slope = rate.recent_trend_per_min;
    if !slope.is_finite() || slope <= 0.0 {
        return 0.0;
    }
    let reaction_minutes = f64::from(
        policy
            .startup_seconds
            .saturating_add(policy.sync_period_seconds),
    ) / 60.0;
    let lead = (slope * reaction_minutes / rate.current).clamp(0.0, MAX_LEAD);
    // A rise the tolerance would absorb is no ramp: acting on it only buys pods early.
    if lead <= policy.tolerance {
        return 0.0;
    }
    lead
}

/// Replicas for an unrounded count: the next whole pod, ignoring float dust (3.0000000001 is 3).
pub fn to_replicas(exact: f64) -> u32 {
    if !exact.is_finite() || exact <= 0.0 {
        return 0;
    }
    (exact - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::quantity::CpuMillis;
    use crate::snapshot::{ContainerSnapshot, Resources, Rollout, SeriesStats, TargetRef};
    use proptest::prelude::*;

    fn snapshot(replicas: u32, ready: u32, cpu_per_pod: f64) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ns".into(),
                deployment: "app".into(),
            },
            0,
            replicas,
        );
        s.ready_replicas = Some(ready);
        s.cpu_per_pod = Some(SeriesStats::constant(cpu_per_pod, 20));
        s.containers.push(ContainerSnapshot {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(1000)),
                memory: None,
            },
            limits: Resources::default(),
            cpu_cores: None,
            memory_bytes: None,
        });
        s
    }

    #[test]
    fn tolerance_is_on_the_ratio_not_on_the_pod_count() {
        let p = Policy::default().resolve();
        // 2 pods at 75 % of the request: ratio 1.07 — HPA waits; +1 pod would be +50 %.
        let w = wanted_replicas(&snapshot(2, 2, 0.75), &p).unwrap_or_else(|| unreachable!());
        assert_eq!(w.replicas, 2);
        assert!(w.within_tolerance);
        // 2 pods at 80 %: ratio 1.14 → ceil(2.29) = 3.
        let w = wanted_replicas(&snapshot(2, 2, 0.8), &p).unwrap_or_else(|| unreachable!());
        assert_eq!(w.replicas, 3);
    }

    #[test]
    fn unready_pods_count_at_zero_up_and_missing_pods_at_target_down() {
        let p = Policy::default().resolve();
        // 4 wanted, 2 ready at 1.4 cores each (2.8 cores = 4 pods' worth): 4 are already there.
        let w = wanted_replicas(&snapshot(4, 2, 1.4), &p).unwrap_or_else(|| unreachable!());
        assert_eq!(w.replicas, 4);
        // 4 wanted, 2 ready and idle: the 2 missing may be busy, so not below 2 + what the ready need.
        let w = wanted_replicas(&snapshot(4, 2, 0.0), &p).unwrap_or_else(|| unreachable!());
        assert_eq!(w.replicas, 2);
    }

    #[test]
    fn a_ramp_in_the_request_rate_is_met_ahead() {
        let p = Policy::default().resolve();
        let mut s = snapshot(4, 4, 0.7);
        let flat = wanted_replicas(&s, &p).unwrap_or_else(|| unreachable!());
        assert_eq!(flat.replicas, 4);
        s.request_rate = Some(SeriesStats {
            recent_trend_per_min: 40.0,
            ..SeriesStats::constant(100.0, 20)
        });
        // +40 req/s per minute over 45 s: +30 % → 5.2 pods.
        let w = wanted_replicas(&s, &p).unwrap_or_else(|| unreachable!());
        assert!((w.lead - 0.3).abs() < 1e-9);
        assert_eq!(w.replicas, 6);
    }

    #[test]
    fn a_rollout_sizes_replicas_by_the_smaller_pod() {
        let p = Policy::default().resolve();
        let mut s = snapshot(4, 4, 0.35);
        s.rollout = Some(Rollout {
            smallest_pod_cpu_request: Some(CpuMillis(500)),
        });
        // 1.4 cores / (0.5 × 0.7) = 4 pods of the smaller size.
        assert_eq!(
            wanted_replicas(&s, &p).map(|w| w.replicas),
            Some(4),
            "sized by the 500m pods"
        );
        s.rollout = None;
        assert_eq!(wanted_replicas(&s, &p).map(|w| w.replicas), Some(2));
    }

    #[test]
    fn no_usage_or_no_request_holds() {
        let p = Policy::default().resolve();
        let mut s = snapshot(3, 3, 0.5);
        s.cpu_per_pod = None;
        assert!(wanted_replicas(&s, &p).is_none());
        let mut s = snapshot(3, 3, 0.5);
        s.containers[0].requests.cpu = None;
        assert!(wanted_replicas(&s, &p).is_none());
    }

    proptest! {
        #[test]
        fn wanted_is_finite_and_lead_bounded(
            replicas in 1u32..500, ready in 0u32..500, cpu in 0.0f64..100.0,
            rate in 0.0f64..1e6, slope in -1e6f64..1e6,
        ) {
            let p = Policy::default().resolve();
            let mut s = snapshot(replicas, ready, cpu);
            s.request_rate = Some(SeriesStats { recent_trend_per_min: slope, ..SeriesStats::constant(rate, 20) });
            if let Some(w) = wanted_replicas(&s, &p) {
                prop_assert!(w.exact.is_finite());
                prop_assert!((0.0..=MAX_LEAD).contains(&w.lead));
                prop_assert!(f64::from(w.replicas) <= w.exact.max(f64::from(replicas)) + 1.0);
            }
        }
    }
}
