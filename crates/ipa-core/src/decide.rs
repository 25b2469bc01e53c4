//! `decide`: the one decision function. The controller's two loops, the simulator's `ipa` policy and the agent's
//! fallback all call it, so what the benchmark measures is what runs in a cluster.
//!
//! Two speeds, one function:
//! - the **fast loop** (`Advice::None`, every `syncPeriod`): replicas follow the load by the fast rule
//!   ([`crate::horizontal`]); no advisor is waited for, nothing is resized;
//! - the **advisory loop** (every `interval`): an advisor's proposal — a model's, or the built-in recommender's —
//!   may raise a replica floor for the next interval (pre-scaling for what it expects) and propose pod sizes.
//!   Both are held near what the metrics support whatever the proposal claims to be; a bad or absent advisor can
//!   only leave the fast loop alone in charge.
//!
//! Then one guard layer applies the policy's bounds, stabilization windows, step limits and resource rules.

use crate::bridge;
use crate::guardrails::{
    ADVICE_HEADROOM, Decision, Floor, GuardState, guard_with_need, plausible_resources,
};
use crate::horizontal::{to_replicas, wanted_replicas};
use crate::policy::ResolvedPolicy;
use crate::recommendation::{GuardrailNote, Recommendation, Rule, Source};
use crate::recommender::{recommend, vertical_memory_only};
use crate::snapshot::MetricsSnapshot;

/// What the advisory side brings to a decision.
#[derive(Debug, Clone, Copy)]
pub enum Advice<'a> {
    /// The fast loop: no advisor this time.
    None,
    /// The advisory loop with the built-in recommender as the advisor (no LLM configured).
    Builtin,
    /// The advisory loop with a proposal from outside the process (an agent, a model).
    Proposal(&'a Recommendation),
    /// The advisory loop whose advisor failed (timeout, garbage, refusal): the built-in stands in.
    Failed(&'a str),
}

/// The decision for one target at `now` (unix seconds).
pub fn decide(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    advice: Advice<'_>,
    state: &GuardState,
    now: i64,
) -> Decision {
    let observed = snapshot;
    // While the pods are grown in place ahead of new replicas, every rule reads them at their own size.
    let based = state
        .bridge
        .as_deref()
        .map(|b| bridge::at_base(snapshot, b));
    let snapshot = based.as_ref().unwrap_or(snapshot);
    let mut notes = Vec::new();
    let mut why = Vec::new();
    let mut state = state.clone();
    let wanted = wanted_replicas(snapshot, policy);
    let mut proposal = Recommendation::new(
        wanted.as_ref().map_or(snapshot.replicas, |w| w.replicas),
        Source::Builtin,
    );
    match &wanted {
        Some(w) => why.push(w.why.clone()),
        None => why.push(format!(
            "{} replicas held: CPU usage or the pod's CPU request is unknown",
            snapshot.replicas
        )),
    }
    if matches!(advice, Advice::None) && new_oom_kill(snapshot, &state) {
        // Safety does not wait for the advisory interval: one memory bump per new OOM kill, in the fast loop.
        proposal.containers = vertical_memory_only(snapshot, policy, &mut why);
    }
    if let Some(advised) = advise(snapshot, policy, advice, &mut notes, &mut why) {
        proposal.source = advised.source;
        proposal.containers = advised.containers;
        state.floor = Some(Floor {
            replicas: advised.replicas,
            until: now.saturating_add(i64::from(policy.interval_seconds)),
            for_shrink: false,
        });
    }
    defer_unready_shrink(&mut proposal, snapshot, policy, &mut state, now, &mut notes);
    proposal.rationale = why.join("; ");
    let need = wanted.as_ref().map(|w| w.exact);
    let mut decision = guard_with_need(&proposal, snapshot, policy, &state, now, need);
    notes.append(&mut decision.notes);
    decision.notes = notes;
    bridge::bridge(&mut decision, observed, policy, wanted.as_ref());
    decision
}

/// The advisory side's proposal, held: replicas as a floor within [`ADVICE_HEADROOM`] of the evidence, requests
/// and limits near it. `None` in the fast loop.
fn advise(
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    advice: Advice<'_>,
    notes: &mut Vec<GuardrailNote>,
    why: &mut Vec<String>,
) -> Option<Recommendation> {
    if matches!(advice, Advice::None) {
        return None;
    }
    let evidence = recommend(snapshot, policy);
    let mut advised = match advice {
        Advice::None | Advice::Builtin => evidence.clone(),
        Advice::Failed(reason) => {
            why.push(format!(
                "advisor failed ({}): the built-in recommender stands in",
                crate::guardrails::truncate(reason)
            ));
            Recommendation {
                source: Source::Fallback,
                ..evidence.clone()
            }
        }
        Advice::Proposal(p) => {
            let mut held = p.clone();
            // Never trusted: whatever `source` a proposal claims, it is held like a model's.
            held.source = if p.source == Source::Builtin {
                Source::Builtin
            } else {
                Source::Llm
            };
            held.containers = plausible_resources(p, &evidence, snapshot, notes);
            held.replicas = hold_floor(p.replicas, evidence.replicas, notes);
            held
        }
    };
    if !evidence.rationale.is_empty() && advised.source != Source::Llm {
        why.push(format!("advisor: {}", evidence.rationale));
    }
    advised.replicas = advised
        .replicas
        .clamp(policy.min_replicas, policy.max_replicas);
    Some(advised)
}

/// An OOM kill newer than the last resize (which, if it came after the kill, already bumped memory).
fn new_oom_kill(snapshot: &MetricsSnapshot, state: &GuardState) -> bool {
    snapshot.oom_kills > 0
        && snapshot
            .events
            .iter()
            .filter(|e| e.reason.starts_with("OOM"))
            .map(|e| e.last_seen)
            .max()
            .is_some_and(|seen| state.last_resize_at.is_none_or(|r| seen > r))
}

/// An advisor's replicas as a floor: at most [`ADVICE_HEADROOM`] above the evidence (never below it is asked:
/// a floor under the fast rule does nothing).
fn hold_floor(proposed: u32, evidence: u32, notes: &mut Vec<GuardrailNote>) -> u32 {
    let high = evidence.max((f64::from(evidence) * (1.0 + ADVICE_HEADROOM)).floor() as u32);
    if proposed > high {
        notes.push(GuardrailNote::new(
            Rule::Implausible,
            format!(
                "{proposed} replicas are not supported by the metrics (they support {evidence}); floor held at {high}"
            ),
        ));
        return high;
    }
    proposed
}

/// Smaller pods need more of them: a CPU-request shrink waits until the replicas the smaller pods need are
/// ready, and asks for them now (as a floor), so capacity never dips while pods are resized.
fn defer_unready_shrink(
    proposal: &mut Recommendation,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &mut GuardState,
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) {
    let (Some(old), Some(cpu)) = (snapshot.pod_cpu_request(), snapshot.cpu_per_pod) else {
        return;
    };
    let new: u64 = snapshot
        .containers
        .iter()
        .map(|c| {
            proposal
                .container(&c.name)
                .and_then(|r| r.requests.cpu)
                .or(c.requests.cpu)
                .map_or(0, |v| v.0)
        })
        .fold(0u64, u64::saturating_add);
    if new == 0 || new >= old.0 {
        return;
    }
    let ready = snapshot.ready_replicas.unwrap_or(snapshot.replicas);
    let used = cpu.current * f64::from(ready);
    let needed = to_replicas(used / (new as f64 / 1000.0 * policy.target_utilization))
        .clamp(policy.min_replicas, policy.max_replicas);
    proposal.replicas = proposal.replicas.max(needed);
    if ready < needed {
        notes.push(GuardrailNote::new(
            Rule::ShrinkDeferred,
            format!("pods shrink once the {needed} replicas the smaller pods need are ready ({ready} now)"),
        ));
        for c in &mut proposal.containers {
            let current = snapshot.containers.iter().find(|s| s.name == c.name);
            c.requests.cpu = current.and_then(|s| s.requests.cpu);
            c.limits.cpu = current.and_then(|s| s.limits.cpu);
        }
        // Until past the next advisory cycle, which resizes once the pods are ready.
        let until = policy
            .interval_seconds
            .saturating_add(policy.sync_period_seconds);
        state.floor = Some(Floor {
            replicas: needed,
            until: now.saturating_add(i64::from(until)),
            for_shrink: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::quantity::{Bytes, CpuMillis, MIB};
    use crate::snapshot::{ContainerSnapshot, Resources, SeriesStats, TargetRef};

    /// One pod template: 100m CPU request, 200m limit, 64Mi memory (the test bed's app).
    fn snapshot(
        replicas: u32,
        ready: u32,
        cpu_per_pod: SeriesStats,
        rate: SeriesStats,
    ) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "bed".into(),
                deployment: "app".into(),
            },
            0,
            replicas,
        );
        s.ready_replicas = Some(ready);
        s.cpu_per_pod = Some(cpu_per_pod);
        s.memory_per_pod = Some(SeriesStats::constant(40.0 * MIB as f64, 20));
        s.request_rate = Some(rate);
        s.containers.push(ContainerSnapshot {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(100)),
                memory: Some(Bytes(64 * MIB)),
            },
            limits: Resources {
                cpu: Some(CpuMillis(200)),
                memory: Some(Bytes(128 * MIB)),
            },
            cpu_cores: Some(cpu_per_pod),
            memory_bytes: Some(SeriesStats::constant(40.0 * MIB as f64, 20)),
        });
        s
    }

    /// Statistics of a series that rose linearly from `from` to `to` over its window, as `rate()` shows a value
    /// that changed a minute ago.
    fn ramp(from: f64, to: f64) -> SeriesStats {
        SeriesStats {
            current: to,
            mean: (from + to) / 2.0,
            p50: (from + to) / 2.0,
            p90: to,
            p95: to,
            max: to,
            trend_per_min: (to - from) / 5.0,
            recent_trend_per_min: (to - from) / 5.0,
            samples: 20,
        }
    }

    fn advice_at(t: i64) -> Advice<'static> {
        if t % 60 == 0 {
            Advice::Builtin
        } else {
            Advice::None
        }
    }

    #[test]
    fn a_pod_replaced_at_flat_load_is_no_reason_to_scale_up() {
        // The bed's case: 2 req/s on one pod; the pod was replaced, and its CPU climbs out of `rate()`'s window
        // (0.01 → 0.043 cores) while the request rate stays flat. The old trend term read this as growth.
        let p = Policy::default().resolve();
        let mut state = GuardState::default();
        for (k, cpu) in [0.01, 0.02, 0.03, 0.04, 0.043, 0.043, 0.043, 0.043]
            .into_iter()
            .enumerate()
        {
            let t = k as i64 * 15;
            let s = snapshot(1, 1, ramp(cpu / 4.0, cpu), SeriesStats::constant(2.0, 20));
            let d = decide(&s, &p, advice_at(t), &state, t);
            assert_eq!(d.replicas, 1, "t={t}: {}", d.rationale);
            state = d.state;
        }
    }

    #[test]
    fn after_a_step_replicas_settle_within_ten_percent_of_the_need() {
        // 5 → 40 req/s at 10 ms of CPU each (0.4 cores): 0.4 / (100m × 70 %) = 5.7 → 6 pods are enough. Pods
        // serve 30 s after they are asked for; `rate()` shows the step as a one-minute ramp.
        let p = Policy::default().resolve();
        let (cost, step_at) = (0.01, 120);
        let rate_seen = |t: i64| {
            let since = (t - step_at).clamp(0, 60) as f64 / 60.0;
            5.0 + 35.0 * since
        };
        let mut state = GuardState::default();
        let (mut replicas, mut asked_at) = (1u32, Vec::<(i64, u32)>::new());
        let mut history = Vec::new();
        for k in 0..80 {
            let t = k * 15;
            let ready = asked_at
                .iter()
                .rev()
                .find(|(at, _)| t - at >= 30)
                .map_or(1, |(_, r)| *r)
                .min(replicas);
            let rate = rate_seen(t);
            let earlier = rate_seen(t - 30);
            let per_pod = (rate * cost / f64::from(ready)).min(0.2);
            let rate_stats = SeriesStats {
                recent_trend_per_min: (rate - earlier) * 2.0,
                ..SeriesStats::constant(rate, 20)
            };
            let s = snapshot(
                replicas,
                ready,
                SeriesStats::constant(per_pod, 20),
                rate_stats,
            );
            let d = decide(&s, &p, advice_at(t), &state, t);
            if d.replicas != replicas {
                asked_at.push((t, d.replicas));
                replicas = d.replicas;
            }
            history.push(replicas);
            state = d.state;
        }
        let settled = &history[history.len() - 20..];
        assert!(
            settled.iter().all(|r| (6..=6).contains(r)),
            "settled at {settled:?} (all: {history:?})"
        );
        // The lead meets `rate()`'s one-minute ramp ahead; the window lets the excess go within ~2 minutes.
        assert!(
            history.iter().max().is_some_and(|m| *m <= 9),
            "overshoot: {history:?}"
        );
    }

    #[test]
    fn a_model_can_raise_a_floor_only_a_little_and_never_scale_down() {
        let p = Policy::default().resolve();
        // 4 pods at 70 %: the metrics support 4.
        let s = snapshot(
            4,
            4,
            SeriesStats::constant(0.07, 20),
            SeriesStats::constant(28.0, 20),
        );
        let wild = Recommendation::new(400, Source::Llm);
        let d = decide(&s, &p, Advice::Proposal(&wild), &GuardState::default(), 0);
        assert_eq!(d.replicas, 4, "4 × 1.2 = 4.8: no whole pod of headroom");
        assert!(d.notes.iter().any(|n| n.rule == Rule::Implausible));
        let s10 = snapshot(
            10,
            10,
            SeriesStats::constant(0.07, 20),
            SeriesStats::constant(70.0, 20),
        );
        let d = decide(&s10, &p, Advice::Proposal(&wild), &GuardState::default(), 0);
        assert_eq!(d.replicas, 12, "a floor at most 20 % above the evidence");
        let low = Recommendation::new(1, Source::Llm);
        let d = decide(&s10, &p, Advice::Proposal(&low), &GuardState::default(), 0);
        assert_eq!(d.replicas, 10, "an advisor cannot scale down");
        // The floor holds through the interval, then ends.
        let d2 = decide(
            &s10,
            &p,
            Advice::None,
            &decide(&s10, &p, Advice::Proposal(&wild), &GuardState::default(), 0).state,
            30,
        );
        assert_eq!(d2.replicas, 12);
        let d3 = decide(&s10, &p, Advice::None, &d2.state, 60);
        assert!(d3.state.floor.is_none());
    }

    #[test]
    fn a_claimed_source_buys_no_trust() {
        let p = Policy::default().resolve();
        let s = snapshot(
            10,
            10,
            SeriesStats::constant(0.07, 20),
            SeriesStats::constant(70.0, 20),
        );
        let mut claims_builtin = Recommendation::new(400, Source::Builtin);
        claims_builtin
            .containers
            .push(crate::ContainerRecommendation {
                name: "app".into(),
                requests: Resources {
                    cpu: Some(CpuMillis(64_000)),
                    memory: Some(Bytes(1 << 40)),
                },
                limits: Resources {
                    cpu: Some(CpuMillis(64_000)),
                    memory: Some(Bytes(1 << 40)),
                },
            });
        let d = decide(
            &s,
            &p,
            Advice::Proposal(&claims_builtin),
            &GuardState::default(),
            0,
        );
        assert_eq!(d.replicas, 12);
        assert!(
            d.containers
                .iter()
                .all(|c| c.requests.cpu <= Some(CpuMillis(120)))
        );
    }

    proptest::proptest! {
        /// A guard state kept in status and quantities from the network may hold anything: times far in the
        /// past or future, u64::MAX requests. No decision panics (debug) or wraps (release), and the bounds hold.
        #[test]
        fn crafted_state_and_quantities_never_panic(
            t in proptest::prelude::any::<i64>(), now in proptest::prelude::any::<i64>(),
            cpu in proptest::prelude::any::<u64>(), memory in proptest::prelude::any::<u64>(),
            replicas in proptest::prelude::any::<u32>(), per_pod in 0.0f64..1e12,
        ) {
            let p = Policy::default().resolve();
            let mut s = snapshot(replicas.max(1), replicas.max(1), SeriesStats::constant(per_pod, 20), SeriesStats::constant(per_pod, 20));
            s.containers[0].requests = Resources { cpu: Some(CpuMillis(cpu)), memory: Some(Bytes(memory)) };
            s.containers.push(s.containers[0].clone());
            let state = GuardState {
                recommendations: vec![(t, replicas)],
                scale_events: vec![(t, replicas, replicas)],
                last_resize_at: Some(t),
                floor: Some(Floor { replicas, until: t, for_shrink: t % 2 == 0 }),
                bridge: None,
            };
            for advice in [Advice::None, Advice::Builtin, Advice::Failed("x")] {
                let d = decide(&s, &p, advice, &state, now);
                proptest::prop_assert!(d.replicas >= p.min_replicas && d.replicas <= p.max_replicas);
            }
        }
    }

    #[test]
    fn a_failed_advisor_leaves_the_fast_rule_and_the_builtin_in_charge() {
        let p = Policy::default().resolve();
        let s = snapshot(
            4,
            4,
            SeriesStats::constant(0.14, 20),
            SeriesStats::constant(56.0, 20),
        );
        let failed = decide(&s, &p, Advice::Failed("timeout"), &GuardState::default(), 0);
        let builtin = decide(&s, &p, Advice::Builtin, &GuardState::default(), 0);
        assert_eq!(failed.replicas, 8);
        assert_eq!(failed.replicas, builtin.replicas);
        assert_eq!(failed.source, Source::Fallback);
        assert!(failed.rationale.contains("timeout"));
    }
}
