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

use crate::guardrails::{ADVICE_HEADROOM, Decision, Floor, GuardState, guard, plausible_resources};
use crate::horizontal::{to_replicas, wanted_replicas};
use crate::policy::ResolvedPolicy;
use crate::recommendation::{GuardrailNote, Recommendation, Rule, Source};
use crate::recommender::recommend;
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
    if let Some(advised) = advise(snapshot, policy, advice, &mut notes, &mut why) {
        proposal.source = advised.source;
        proposal.containers = advised.containers;
        state.floor = Some(Floor {
            replicas: advised.replicas,
            until: now.saturating_add(i64::from(policy.interval_seconds)),
        });
    }
    defer_unready_shrink(&mut proposal, snapshot, policy, &mut state, now, &mut notes);
    proposal.rationale = why.join("; ");
    let mut decision = guard(&proposal, snapshot, policy, &state, now);
    notes.append(&mut decision.notes);
    decision.notes = notes;
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
    let evidence = match advice {
        Advice::None => return None,
        _ => recommend(snapshot, policy),
    };
    let mut advised = match advice {
        Advice::None => return None,
        Advice::Builtin => evidence.clone(),
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
        .sum();
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
        });
    }
}
