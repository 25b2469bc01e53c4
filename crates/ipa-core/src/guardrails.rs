//! Deterministic guardrails: what may touch the cluster. Every intervention is recorded as a note.
//!
//! Whatever proposed the change — an LLM, the built-in recommender, a person's agent — passes through the same
//! rules here, in the controller, never trusting the network. HPA's behaviour is the reference for replicas
//! (bounds, tolerance, stabilization windows, per-period step limits); for resources, a template change
//! restarts every pod, so it must be worth it (threshold) and not too frequent (interval), except when safety
//! demands more memory (OOM kill, usage above the request).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{ResolvedPolicy, ResolvedRules};
use crate::quantity::{Bytes, CpuMillis};
use crate::recommendation::{ContainerRecommendation, GuardrailNote, Recommendation, Rule, Source};
use crate::recommender::oom_bump;
use crate::snapshot::{ContainerSnapshot, MetricsSnapshot, Resources};

/// What the guardrails remember between cycles. It is serialisable so the controller can keep it in the
/// CR's status and a restart forgets nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardState {
    /// Recent (unix seconds, recommended replicas) pairs, oldest first, pruned to the longest window.
    #[serde(default)]
    pub recommendations: Vec<(i64, u32)>,
    /// Recent (unix seconds, replicas before, replicas after) scale events, for the per-period step limits.
    #[serde(default)]
    pub scale_events: Vec<(i64, u32, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resize_at: Option<i64>,
    /// The advisor's replica floor for the current interval (pre-scaling), held by the guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
    /// While the running pods are grown in place ahead of new replicas ([`crate::bridge`]): the size they
    /// return to, which the rules size by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Vec<ContainerRecommendation>>,
}

/// A replica floor an advisor set: the fast loop does not go below it until `until` (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Floor {
    pub replicas: u32,
    pub until: i64,
    /// Set by a pod shrink waiting for the replicas the smaller pods need (not an advisor's: not capped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub for_shrink: bool,
}

/// The guarded decision: what to apply now, why, and what the guard remembers for next time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas to set (may equal the current count).
    pub replicas: u32,
    /// Container resources to set; empty when resources stay as they are.
    pub containers: Vec<ContainerRecommendation>,
    /// Sizes for the pods serving now, in place only, leaving the template and new pods at `containers` (or
    /// as they are): the [`crate::bridge`] while new replicas start, or its end. Empty: no such resize.
    pub running: Vec<ContainerRecommendation>,
    /// Sizes for the pods still starting while the bridge grows the serving ones, in place only: the base with
    /// the grown pods' memory limits. Empty: pods starting keep their size (or take `containers`).
    pub born: Vec<ContainerRecommendation>,
    pub notes: Vec<GuardrailNote>,
    pub state: GuardState,
    /// What shaped the decision: the built-in rules, a model's advice, or the built-in standing in for a
    /// failed advisor.
    pub source: Source,
    /// The reasoning, in words (the fast rule's arithmetic, the advisor's, what the guard changed).
    pub rationale: String,
}

impl Decision {
    pub fn scales(&self, current: u32) -> bool {
        self.replicas != current
    }
    pub fn resizes(&self) -> bool {
        !self.containers.is_empty()
    }
}

/// [`guard_with_need`] without a load need (the guard layer's own tests).
#[cfg(test)]
pub(crate) fn guard(
    proposal: &Recommendation,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &GuardState,
    now: i64,
) -> Decision {
    guard_with_need(proposal, snapshot, policy, state, now, None)
}

/// Applies the guard layer to a proposal whose replicas are the fast rule's and whose containers are already held
/// near the evidence: bounds, stabilization windows, the advisor's floor, missing inputs, rollouts, step limits,
/// node capacity, and the resource rules. `need` is what the load needs now in replicas' worth (unrounded, before
/// the tolerance holds the count): an advisor's floor is capped by it. `decide` is the only caller.
pub(crate) fn guard_with_need(
    proposal: &Recommendation,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &GuardState,
    now: i64,
    need: Option<f64>,
) -> Decision {
    let mut notes = Vec::new();
    let mut state = state.clone();
    let containers = guard_resources(proposal, snapshot, policy, &state, now, &mut notes);
    let replicas = guard_replicas(
        (proposal.replicas, need),
        snapshot,
        policy,
        &mut state,
        &containers,
        now,
        &mut notes,
    );
    record(
        &mut state,
        snapshot.replicas,
        replicas,
        !containers.is_empty(),
        policy,
        now,
    );
    Decision {
        replicas,
        containers,
        running: Vec::new(),
        born: Vec::new(),
        notes,
        state,
        source: proposal.source,
        rationale: proposal.rationale.clone(),
    }
}

/// Remembers a decision: its scale event and resize, pruned to the longest window that reads them. Times
/// from the network (a guard state kept in status) may be anything: the arithmetic saturates.
fn record(
    state: &mut GuardState,
    current: u32,
    replicas: u32,
    resized: bool,
    policy: &ResolvedPolicy,
    now: i64,
) {
    if replicas != current {
        state.scale_events.push((now, current, replicas));
    }
    if resized {
        state.last_resize_at = Some(now);
    }
    let keep = i64::from(
        policy
            .scale_down
            .stabilization_window_seconds
            .max(policy.scale_up.stabilization_window_seconds)
            .max(policy.scale_down.period_seconds)
            .max(policy.scale_up.period_seconds),
    );
    let period = i64::from(
        policy
            .scale_up
            .period_seconds
            .max(policy.scale_down.period_seconds),
    );
    state
        .recommendations
        .retain(|(t, _)| now.saturating_sub(*t) < keep);
    state
        .scale_events
        .retain(|(t, _, _)| now.saturating_sub(*t) < period);
    if state.floor.is_some_and(|f| f.until <= now) {
        state.floor = None;
    }
}

/// How far an advisor's advice may stray from what the metrics support (the built-in recommender's answer on the
/// same snapshot), for replicas (as a floor) and for each request and limit: at most this share above it, or
/// below it by the same factor (÷ 1.2). An advisor shapes the decision inside that band; it cannot overrule the
/// metrics. The band bounds what any advisor, however wrong, can cost: `ipa bench --advisor random` measures it.
pub const ADVICE_HEADROOM: f64 = 0.2;

/// A proposal's requests and limits, held within [`ADVICE_HEADROOM`] of the evidence. Policy bounds alone let a
/// model that misreads the prompt ask for 64-core pods to serve 0.1 cores (Gemma 270M did); its advice may shape
/// the decision, not overrule the metrics. Every proposal from outside the process is held, whatever it says
/// its source is. (Replicas are held by the floor rule in `decide`.)
pub(crate) fn plausible_resources(
    proposal: &Recommendation,
    evidence: &Recommendation,
    snapshot: &MetricsSnapshot,
    notes: &mut Vec<GuardrailNote>,
) -> Vec<ContainerRecommendation> {
    // A container the advisor says nothing about is sized as the evidence sizes it: a silent advisor leaves
    // right-sizing to the built-in recommender.
    let mut held = proposal.containers.clone();
    held.extend(
        evidence
            .containers
            .iter()
            .filter(|e| proposal.container(&e.name).is_none())
            .cloned(),
    );
    let no = Resources::default();
    for container in &mut held {
        let current = snapshot
            .containers
            .iter()
            .find(|c| c.name == container.name);
        let supported = evidence
            .containers
            .iter()
            .find(|c| c.name == container.name);
        let (now_requests, now_limits) = current.map_or((&no, &no), |c| (&c.requests, &c.limits));
        let (supported_requests, supported_limits) =
            supported.map_or((&no, &no), |c| (&c.requests, &c.limits));
        let name = truncate(&container.name);
        hold_resource(
            &name,
            "CPU",
            (&mut container.requests.cpu, &mut container.limits.cpu),
            (now_requests.cpu, now_limits.cpu),
            (supported_requests.cpu, supported_limits.cpu),
            (|v| v.0, CpuMillis),
            notes,
        );
        hold_resource(
            &name,
            "memory",
            (&mut container.requests.memory, &mut container.limits.memory),
            (now_requests.memory, now_limits.memory),
            (supported_requests.memory, supported_limits.memory),
            (|v| v.0, Bytes),
            notes,
        );
    }
    held
}

/// Where a model may take a value that is `current` now, given the `evidence`: only in the direction the evidence
/// moves it, and at most [`ADVICE_HEADROOM`] past or short of the evidence; within that band of the evidence
/// when unset. A band around the evidence alone would ratchet where the recommender holds (its evidence is then
/// the current value): in `LLM=1 make demo`, Gemma doubled replicas every cycle (1 → 2 → 4 → 8) and halved the
/// CPU request.
fn band(current: Option<u64>, evidence: u64) -> (u64, u64) {
    let factor = 1.0 + ADVICE_HEADROOM;
    let scaled = |f: f64| {
        let v = (evidence as f64 * f).round();
        if v.is_finite() {
            v.clamp(0.0, u64::MAX as f64) as u64
        } else {
            evidence
        }
    };
    let (low, high) = (
        scaled(1.0 / factor).min(evidence),
        scaled(factor).max(evidence),
    );
    match current {
        None => (low, high),
        Some(c) if evidence > c => (low.max(c), high),
        Some(c) if evidence < c => (low, high.min(c)),
        Some(c) => (c, c),
    }
}

/// How a quantity type converts to and from its integer units (millicores, bytes).
type Units<T> = (fn(T) -> u64, fn(u64) -> T);

/// Holds a model's (request, limit) of one resource near what the metrics support: each within [`band`] of the
/// recommender's value (the current one where it has none). Limits are the owner's: a model may scale one that
/// exists, never add one (a CPU limit a model added at the policy's 10m floor throttled the demo's app to a
/// standstill).
fn hold_resource<T: Copy + std::fmt::Display>(
    name: &str,
    resource: &str,
    (request, limit): (&mut Option<T>, &mut Option<T>),
    (now_request, now_limit): (Option<T>, Option<T>),
    (supported_request, supported_limit): (Option<T>, Option<T>),
    (raw, make): Units<T>,
    notes: &mut Vec<GuardrailNote>,
) {
    if now_limit.is_none() && limit.take().is_some() {
        notes.push(GuardrailNote::new(
            Rule::Implausible,
            format!("{name}: no {resource} limit is set; the proposed one is not added"),
        ));
    }
    let fields = [
        (
            request,
            now_request,
            supported_request.or(now_request),
            "request",
        ),
        (limit, now_limit, supported_limit.or(now_limit), "limit"),
    ];
    for (value, now, evidence, what) in fields {
        let (Some(v), Some(e)) = (*value, evidence.map(raw).filter(|e| *e > 0)) else {
            continue;
        };
        let (low, high) = band(now.map(raw), e);
        let held = raw(v).clamp(low, high);
        if held != raw(v) {
            notes.push(GuardrailNote::new(
                Rule::Implausible,
                format!(
                    "{name}: {resource} {what} {v} is not supported by the metrics (they support {}); held at {}",
                    make(e),
                    make(held)
                ),
            ));
            *value = Some(make(held));
        }
    }
}

/// Replicas after the guard: bounds, stabilization, the advisor's floor, the scale-down holds, step limits and
/// node capacity, in that order. `need` caps an advisor's floor (see [`apply_floor`]).
#[allow(clippy::too_many_arguments)]
fn guard_replicas(
    (proposed, need): (u32, Option<f64>),
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &mut GuardState,
    containers: &[ContainerRecommendation],
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) -> u32 {
    let current = snapshot.replicas;
    let desired = bound(proposed, policy, notes);
    let desired = stabilize(desired, current, policy, state, now, notes);
    let need = need.unwrap_or(f64::from(desired));
    let desired = apply_floor(desired, need, state, now, notes).min(policy.max_replicas);
    let desired = hold_scale_down(desired, snapshot, policy, notes);
    let desired = limit_steps(desired, snapshot, policy, state, containers, now, notes);
    // The bounds win over everything (a Deployment outside them is brought inside at once).
    bound(desired, policy, &mut Vec::new())
}

/// HPA's stabilization: remember every (bounded) recommendation; scale down only to the highest of the window,
/// scale up only to the lowest of the up-window.
fn stabilize(
    desired: u32,
    current: u32,
    policy: &ResolvedPolicy,
    state: &mut GuardState,
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) -> u32 {
    state.recommendations.push((now, desired));
    let (rules, pick, rule, which) = if desired < current {
        (
            &policy.scale_down,
            u32::max as fn(u32, u32) -> u32,
            Rule::ScaleDownStabilization,
            "highest",
        )
    } else if desired > current {
        (
            &policy.scale_up,
            u32::min as fn(u32, u32) -> u32,
            Rule::ScaleUpStabilization,
            "lowest",
        )
    } else {
        return desired;
    };
    let window = i64::from(rules.stabilization_window_seconds);
    let extreme = window_extreme(&state.recommendations, now, window, pick).unwrap_or(desired);
    // Between the current count and the desired one, whichever way the change goes.
    let stabilized = extreme.clamp(desired.min(current), desired.max(current));
    if stabilized != desired {
        let direction = if desired < current {
            "scale-down"
        } else {
            "scale-up"
        };
        notes.push(GuardrailNote::new(
            rule,
            format!("{direction} to {desired} held at {stabilized}: {which} recommendation in the last {window}s"),
        ));
    }
    stabilized
}

/// No scale-down on partial data, or while a rollout swaps old pods for new ones of an unproven size.
fn hold_scale_down(
    desired: u32,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    notes: &mut Vec<GuardrailNote>,
) -> u32 {
    let current = snapshot.replicas;
    if desired >= current {
        return desired;
    }
    let why = if snapshot.has_missing_inputs() && current <= policy.max_replicas {
        (
            Rule::MissingInputs,
            format!("while inputs are missing ({})", missing_list(snapshot)),
        )
    } else if snapshot.rollout.is_some() {
        (Rule::Rollout, "while a rollout runs".to_string())
    } else {
        return desired;
    };
    notes.push(GuardrailNote::new(
        why.0,
        format!("no scale-down to {desired} {}", why.1),
    ));
    current
}

/// Per-period step limits, measured from the replica count at the start of the period, and the nodes' room.
fn limit_steps(
    desired: u32,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &GuardState,
    containers: &[ContainerRecommendation],
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) -> u32 {
    let current = snapshot.replicas;
    let mut desired = desired;
    if desired > current {
        let base = period_start(state, now, policy.scale_up.period_seconds, current);
        let limit = step_up_limit(base, &policy.scale_up);
        if desired > limit {
            notes.push(GuardrailNote::new(
                Rule::ScaleUpStep,
                format!("scale-up to {desired} limited to {limit} this period"),
            ));
            desired = limit.max(current);
        }
        let fit = node_capacity_limit(snapshot, containers, current);
        if let Some(fit) = fit.filter(|fit| desired > *fit) {
            notes.push(GuardrailNote::new(
                Rule::NodeCapacity,
                format!("scale-up to {desired} limited to {fit}: the nodes' free capacity holds no more pods"),
            ));
            desired = fit.max(current);
        }
    } else if desired < current {
        let base = period_start(state, now, policy.scale_down.period_seconds, current);
        let limit = step_down_limit(base, &policy.scale_down);
        if desired < limit {
            notes.push(GuardrailNote::new(
                Rule::ScaleDownStep,
                format!("scale-down to {desired} limited to {limit} this period"),
            ));
            desired = limit.min(current);
        }
    }
    desired
}

/// The fast rule's count, raised to the advisor's floor while it holds. Applied after the stabilization windows,
/// which remember the fast rule's counts only: a floor ends with its interval instead of lingering in a window.
pub(crate) fn apply_floor(
    replicas: u32,
    need: f64,
    state: &GuardState,
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) -> u32 {
    // An advisor's floor never exceeds what the load needs now (before the tolerance holds the count) by more
    // than the advice headroom, so a pre-scale the load has since left behind costs no more than that.
    let cap = |f: Floor| {
        if f.for_shrink {
            f.replicas
        } else {
            let headroom = (need * (1.0 + ADVICE_HEADROOM)).floor();
            f.replicas
                .min(replicas.max(headroom.clamp(0.0, f64::from(u32::MAX)) as u32))
        }
    };
    match state.floor.map(|f| Floor {
        replicas: cap(f),
        ..f
    }) {
        Some(floor) if floor.until > now && floor.replicas > replicas => {
            notes.push(GuardrailNote::new(
                Rule::AdvisorFloor,
                format!(
                    "{replicas} raised to the advisor's floor of {} (for {}s more)",
                    floor.replicas,
                    floor.until.saturating_sub(now)
                ),
            ));
            floor.replicas
        }
        _ => replicas,
    }
}

fn bound(replicas: u32, policy: &ResolvedPolicy, notes: &mut Vec<GuardrailNote>) -> u32 {
    if replicas < policy.min_replicas {
        notes.push(GuardrailNote::new(
            Rule::MinReplicas,
            format!("{replicas} raised to minReplicas {}", policy.min_replicas),
        ));
        policy.min_replicas
    } else if replicas > policy.max_replicas {
        notes.push(GuardrailNote::new(
            Rule::MaxReplicas,
            format!("{replicas} lowered to maxReplicas {}", policy.max_replicas),
        ));
        policy.max_replicas
    } else {
        replicas
    }
}

fn window_extreme(
    recs: &[(i64, u32)],
    now: i64,
    window: i64,
    pick: fn(u32, u32) -> u32,
) -> Option<u32> {
    // HPA's window: the samples of the last `window` seconds, its boundary excluded.
    recs.iter()
        .filter(|(t, _)| now.saturating_sub(*t) < window)
        .map(|(_, r)| *r)
        .reduce(pick)
}

/// Replicas at the start of the current period: before the earliest scale event inside it.
fn period_start(state: &GuardState, now: i64, period: u32, current: u32) -> u32 {
    state
        .scale_events
        .iter()
        .find(|(t, _, _)| now.saturating_sub(*t) < i64::from(period))
        .map_or(current, |(_, before, _)| *before)
}

/// HPA's default select policy `Max`: the most permissive of "pods" and "percent".
fn step_up_limit(base: u32, rules: &ResolvedRules) -> u32 {
    let by_pods = base.saturating_add(rules.max_pods);
    let by_percent = (f64::from(base) * (1.0 + f64::from(rules.max_percent) / 100.0)).ceil() as u32;
    by_pods.max(by_percent).max(1)
}

fn step_down_limit(base: u32, rules: &ResolvedRules) -> u32 {
    let by_pods = base.saturating_sub(rules.max_pods);
    let by_percent = (f64::from(base) * (1.0 - f64::from(rules.max_percent) / 100.0))
        .floor()
        .max(0.0) as u32;
    by_pods.min(by_percent)
}

/// Most replicas the nodes can hold: current + what fits into the free CPU and memory, per pod request.
fn node_capacity_limit(
    snapshot: &MetricsSnapshot,
    containers: &[ContainerRecommendation],
    current: u32,
) -> Option<u32> {
    let pod_cpu: u64 = pod_total(snapshot, containers, |r| r.cpu.map(|c| c.0));
    let pod_mem: u64 = pod_total(snapshot, containers, |r| r.memory.map(|m| m.0));
    let extra_by =
        |free: Option<u64>, per_pod: u64| free.filter(|_| per_pod > 0).map(|f| f / per_pod);
    let extra = [
        extra_by(snapshot.cluster.free_cpu.map(|c| c.0), pod_cpu),
        extra_by(snapshot.cluster.free_memory_bytes.map(|m| m.0), pod_mem),
    ]
    .into_iter()
    .flatten()
    .min()?;
    Some(current.saturating_add(extra.min(u64::from(u32::MAX)) as u32))
}

/// A pod's total request of one resource, using the new requests where a resize is decided.
fn pod_total(
    snapshot: &MetricsSnapshot,
    containers: &[ContainerRecommendation],
    get: impl Fn(&Resources) -> Option<u64>,
) -> u64 {
    snapshot
        .containers
        .iter()
        .map(|c| {
            containers
                .iter()
                .find(|r| r.name == c.name)
                .and_then(|r| get(&r.requests))
                .or_else(|| get(&c.requests))
                .unwrap_or(0)
        })
        .fold(0u64, u64::saturating_add)
}

fn missing_list(snapshot: &MetricsSnapshot) -> String {
    let mut missing = snapshot.missing.clone();
    if snapshot.cpu_per_pod.is_none() && !missing.iter().any(|m| m == "cpu") {
        missing.push("cpu".into());
    }
    missing.join(", ")
}

/// Guards requests/limits. Returns the containers to change (complete requests and limits), or nothing.
fn guard_resources(
    proposal: &Recommendation,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &GuardState,
    now: i64,
    notes: &mut Vec<GuardrailNote>,
) -> Vec<ContainerRecommendation> {
    if proposal.containers.is_empty() {
        return Vec::new();
    }
    if !policy.vertical {
        notes.push(GuardrailNote::new(
            Rule::VerticalDisabled,
            "vertical scaling is off: resources left as they are",
        ));
        return Vec::new();
    }
    let missing = snapshot.has_missing_inputs();
    let mut guarded = Vec::new();
    let mut significant = false;
    let mut urgent = false;
    for rec in &proposal.containers {
        let Some(current) = snapshot.containers.iter().find(|c| c.name == rec.name) else {
            notes.push(GuardrailNote::new(
                Rule::UnknownContainer,
                format!(
                    "container {:?} is not in the pod template: ignored",
                    truncate(&rec.name)
                ),
            ));
            continue;
        };
        if !policy.manages(&current.name) {
            continue;
        }
        let (container, needs_more_memory) =
            guard_container(rec, current, snapshot, policy, missing, notes);
        urgent |= needs_more_memory;
        significant |= differs(
            &container.requests,
            &current.requests,
            policy.resize_threshold,
        ) || differs(&container.limits, &current.limits, policy.resize_threshold);
        guarded.push(container);
    }
    if guarded.is_empty()
        || guarded.iter().all(|g| {
            snapshot
                .containers
                .iter()
                .any(|c| c.name == g.name && c.requests == g.requests && c.limits == g.limits)
        })
    {
        return Vec::new();
    }
    if !significant && !urgent {
        notes.push(GuardrailNote::new(
            Rule::ResizeThreshold,
            format!(
                "resource change below the {:.0}% threshold: not worth restarting pods",
                policy.resize_threshold * 100.0
            ),
        ));
        return Vec::new();
    }
    if let Some(last) = state.last_resize_at {
        let since = now.saturating_sub(last);
        if !urgent && since < i64::from(policy.min_resize_interval_seconds) {
            notes.push(GuardrailNote::new(
                Rule::ResizeInterval,
                format!(
                    "last resize {since}s ago; next allowed after {}s",
                    policy.min_resize_interval_seconds
                ),
            ));
            return Vec::new();
        }
    }
    guarded
}

/// Guards one container. Returns it complete, and whether safety requires a higher memory limit than it has now
/// (after an OOM kill, or a limit below the observed peak + margin): that resize may not wait.
fn guard_container(
    rec: &ContainerRecommendation,
    current: &ContainerSnapshot,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    missing: bool,
    notes: &mut Vec<GuardrailNote>,
) -> (ContainerRecommendation, bool) {
    let name = &current.name;
    // Fields the proposal leaves out keep their current value.
    let mut req = Resources {
        cpu: rec.requests.cpu.or(current.requests.cpu),
        memory: rec.requests.memory.or(current.requests.memory),
    };
    let mut lim = Resources {
        cpu: rec.limits.cpu.or(current.limits.cpu),
        memory: rec.limits.memory.or(current.limits.memory),
    };

    if missing {
        // No shrinking on partial data.
        let keep_cpu = max_opt(req.cpu, current.requests.cpu);
        let keep_mem = max_opt(req.memory, current.requests.memory);
        if keep_cpu != req.cpu || keep_mem != req.memory {
            notes.push(GuardrailNote::new(
                Rule::MissingInputs,
                format!("{name}: no resource decrease while inputs are missing"),
            ));
        }
        req.cpu = keep_cpu;
        req.memory = keep_mem;
        lim.cpu = max_opt(lim.cpu, current.limits.cpu);
        lim.memory = max_opt(lim.memory, current.limits.memory);
    }

    clamp_field(
        &mut req.cpu,
        policy.min_cpu,
        policy.max_cpu,
        name,
        "CPU request",
        notes,
    );
    clamp_field(
        &mut lim.cpu,
        policy.min_cpu,
        policy.max_cpu,
        name,
        "CPU limit",
        notes,
    );
    clamp_field(
        &mut req.memory,
        policy.min_memory,
        policy.max_memory,
        name,
        "memory request",
        notes,
    );
    clamp_field(
        &mut lim.memory,
        policy.min_memory,
        policy.max_memory,
        name,
        "memory limit",
        notes,
    );

    // Memory never below the observed peak plus margin; after an OOM kill, at least VPA's bump.
    let mut needs_more_memory = false;
    let peak = current
        .memory_bytes
        .map(|s| s.max.max(s.current))
        .filter(|p| p.is_finite() && *p > 0.0);
    if let Some(peak) = peak {
        let floor = Bytes::from_f64(peak * (1.0 + policy.request_margin))
            .round_up_mib()
            .min(policy.max_memory);
        if req.memory.is_some_and(|m| m < floor) {
            notes.push(GuardrailNote::new(
                Rule::MemoryBelowPeak,
                format!(
                    "{name}: memory request raised to {floor} (peak {} + margin)",
                    Bytes::from_f64(peak).round_up_mib()
                ),
            ));
            // Not urgent by itself: a request below usage is an accounting problem; the limit is what kills.
            req.memory = Some(floor);
        }
        if lim.memory.is_some_and(|m| m < floor) {
            notes.push(GuardrailNote::new(
                Rule::MemoryBelowPeak,
                format!("{name}: memory limit raised to {floor} (peak + margin)"),
            ));
            lim.memory = Some(floor);
            needs_more_memory |= current.limits.memory.is_none_or(|m| m < floor);
        }
    }
    let died_at = [current.limits.memory, current.requests.memory]
        .into_iter()
        .flatten()
        .max();
    if let Some(died_at) = died_at.filter(|_| snapshot.oom_kills > 0) {
        let bumped = oom_bump(died_at).min(policy.max_memory);
        if lim.memory.is_some_and(|m| m < bumped) {
            notes.push(GuardrailNote::new(
                Rule::OomBump,
                format!("{name}: OOM kill seen, memory limit raised to {bumped}"),
            ));
            lim.memory = Some(bumped);
        }
        needs_more_memory |= lim.memory.is_some_and(|m| Some(m) > current.limits.memory);
    }

    // Limits never below requests.
    if let (Some(l), Some(r)) = (lim.cpu, req.cpu)
        && l < r
    {
        notes.push(GuardrailNote::new(
            Rule::LimitBelowRequest,
            format!("{name}: CPU limit {l} raised to the request {r}"),
        ));
        lim.cpu = Some(r);
    }
    if let (Some(l), Some(r)) = (lim.memory, req.memory)
        && l < r
    {
        notes.push(GuardrailNote::new(
            Rule::LimitBelowRequest,
            format!("{name}: memory limit {l} raised to the request {r}"),
        ));
        lim.memory = Some(r);
    }
    (
        ContainerRecommendation {
            name: name.clone(),
            requests: req,
            limits: lim,
        },
        needs_more_memory,
    )
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

trait Quantity: Copy + Ord + std::fmt::Display {}
impl Quantity for CpuMillis {}
impl Quantity for Bytes {}

fn clamp_field<T: Quantity>(
    field: &mut Option<T>,
    min: T,
    max: T,
    name: &str,
    what: &str,
    notes: &mut Vec<GuardrailNote>,
) {
    if let Some(v) = *field {
        let clamped = v.clamp(min, max);
        if clamped != v {
            notes.push(GuardrailNote::new(
                Rule::ResourceBounds,
                format!("{name}: {what} {v} clamped to {clamped} (policy [{min}, {max}])"),
            ));
            *field = Some(clamped);
        }
    }
}

/// A change worth a restart: a value appears, disappears or moves by more than `threshold` (relative).
fn differs(new: &Resources, old: &Resources, threshold: f64) -> bool {
    fn rel(new: Option<u64>, old: Option<u64>, threshold: f64) -> bool {
        match (new, old) {
            (Some(n), Some(o)) => (n as f64 - o as f64).abs() > threshold * (o.max(1) as f64),
            (None, None) => false,
            _ => true,
        }
    }
    rel(new.cpu.map(|c| c.0), old.cpu.map(|c| c.0), threshold)
        || rel(new.memory.map(|m| m.0), old.memory.map(|m| m.0), threshold)
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::quantity::MIB;
    use crate::recommendation::Source;
    use crate::snapshot::{ClusterCapacity, SeriesStats, TargetRef};
    use proptest::prelude::*;

    fn flat(v: f64) -> SeriesStats {
        SeriesStats::constant(v, 20)
    }

    fn snapshot(replicas: u32) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::new(
            TargetRef {
                namespace: "ns".into(),
                deployment: "app".into(),
            },
            0,
            replicas,
        );
        s.cpu_per_pod = Some(flat(0.3));
        s.containers.push(ContainerSnapshot {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(500)),
                memory: Some(Bytes(256 * MIB)),
            },
            limits: Resources {
                cpu: Some(CpuMillis(1000)),
                memory: Some(Bytes(512 * MIB)),
            },
            cpu_cores: Some(flat(0.3)),
            memory_bytes: Some(flat(200.0 * MIB as f64)),
        });
        s
    }

    /// A built-in proposal: the rules below apply to every source; the plausibility band only to a model's.
    fn rec(replicas: u32) -> Recommendation {
        Recommendation::new(replicas, Source::Builtin)
    }

    fn with_resources(replicas: u32, cpu: u64, mem_mib: u64) -> Recommendation {
        let mut r = rec(replicas);
        r.containers.push(ContainerRecommendation {
            name: "app".into(),
            requests: Resources {
                cpu: Some(CpuMillis(cpu)),
                memory: Some(Bytes(mem_mib * MIB)),
            },
            limits: Resources {
                cpu: Some(CpuMillis(cpu * 2)),
                memory: Some(Bytes(mem_mib * 2 * MIB)),
            },
        });
        r
    }

    fn has(d: &Decision, rule: Rule) -> bool {
        d.notes.iter().any(|n| n.rule == rule)
    }

    #[test]
    fn bounds_clamp_absurd_replicas() {
        let p = Policy {
            max_replicas: Some(10),
            ..Policy::default()
        }
        .resolve();
        let d = guard(
            &rec(1_000_000_000),
            &snapshot(10),
            &p,
            &GuardState::default(),
            0,
        );
        assert_eq!(d.replicas, 10);
        assert!(has(&d, Rule::MaxReplicas));
        let d = guard(&rec(0), &snapshot(1), &p, &GuardState::default(), 0);
        assert_eq!(d.replicas, 1);
    }

    #[test]
    fn scale_up_is_immediate_but_step_limited() {
        let p = Policy::default().resolve();
        let d = guard(&rec(5), &snapshot(2), &p, &GuardState::default(), 0);
        assert_eq!(d.replicas, 5);
        // 2 → 20 in one period: limited to max(2 + 4, 2 × 2) = 6.
        let d = guard(&rec(20), &snapshot(2), &p, &GuardState::default(), 0);
        assert_eq!(d.replicas, 6);
        assert!(has(&d, Rule::ScaleUpStep));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let p = Policy {
            scale_down: Some(crate::ScalingRules {
                stabilization_window_seconds: Some(300),
                ..Default::default()
            }),
            ..Policy::default()
        }
        .resolve();
        let mut state = GuardState::default();
        // At 10 replicas, recommendations stay 10 for a while, then drop to 4.
        let d = guard(&rec(10), &snapshot(10), &p, &state, 0);
        state = d.state;
        for t in [60, 120, 180, 240, 299] {
            let d = guard(&rec(4), &snapshot(10), &p, &state, t);
            assert_eq!(d.replicas, 10, "held at t={t}");
            assert!(has(&d, Rule::ScaleDownStabilization));
            state = d.state;
        }
        // 300 s after the last "10", the window only holds 4s (its boundary excluded, as in HPA).
        let d = guard(&rec(4), &snapshot(10), &p, &state, 300);
        assert_eq!(d.replicas, 4);
    }

    #[test]
    fn no_scale_down_on_missing_inputs() {
        let p = Policy {
            scale_down: Some(crate::ScalingRules {
                stabilization_window_seconds: Some(0),
                ..Default::default()
            }),
            ..Policy::default()
        }
        .resolve();
        let mut s = snapshot(6);
        s.cpu_per_pod = None;
        s.missing.push("cpu".into());
        let d = guard(&rec(2), &s, &p, &GuardState::default(), 0);
        assert_eq!(d.replicas, 6);
        assert!(has(&d, Rule::MissingInputs));
        // Scaling up is still allowed.
        assert_eq!(
            guard(&rec(8), &s, &p, &GuardState::default(), 0).replicas,
            8
        );
    }

    #[test]
    fn node_capacity_limits_scale_up() {
        let p = Policy::default().resolve();
        let mut s = snapshot(2);
        s.cluster = ClusterCapacity {
            free_cpu: Some(CpuMillis(1200)),
            free_memory_bytes: None,
        };
        let d = guard(&rec(6), &s, &p, &GuardState::default(), 0);
        assert_eq!(d.replicas, 4, "1200m free / 500m per pod = 2 more pods");
        assert!(has(&d, Rule::NodeCapacity));
    }

    #[test]
    fn small_resource_changes_are_not_applied() {
        let p = Policy::default().resolve();
        let d = guard(
            &with_resources(2, 520, 256),
            &snapshot(2),
            &p,
            &GuardState::default(),
            0,
        );
        assert!(d.containers.is_empty());
        assert!(has(&d, Rule::ResizeThreshold));
    }

    #[test]
    fn large_resource_changes_are_applied_but_not_too_often() {
        let p = Policy::default().resolve();
        let d = guard(
            &with_resources(2, 1000, 400),
            &snapshot(2),
            &p,
            &GuardState::default(),
            1000,
        );
        assert_eq!(d.containers.len(), 1);
        assert_eq!(d.state.last_resize_at, Some(1000));
        let d2 = guard(
            &with_resources(2, 1500, 400),
            &snapshot(2),
            &p,
            &d.state,
            1100,
        );
        assert!(d2.containers.is_empty());
        assert!(has(&d2, Rule::ResizeInterval));
    }

    #[test]
    fn memory_below_peak_is_raised_and_limits_cover_requests() {
        let p = Policy::default().resolve();
        let mut r = with_resources(2, 500, 64);
        r.containers[0].limits.cpu = Some(CpuMillis(100));
        let d = guard(&r, &snapshot(2), &p, &GuardState::default(), 0);
        let c = &d.containers[0];
        assert_eq!(
            c.requests.memory,
            Some(Bytes(230 * MIB)),
            "200Mi peak + 15%"
        );
        assert_eq!(c.limits.cpu, Some(CpuMillis(500)));
        assert!(has(&d, Rule::MemoryBelowPeak) && has(&d, Rule::LimitBelowRequest));
    }

    #[test]
    fn oom_kill_bumps_the_limit_even_inside_the_interval() {
        let p = Policy::default().resolve();
        let mut s = snapshot(2);
        s.oom_kills = 1;
        let state = GuardState {
            last_resize_at: Some(0),
            ..GuardState::default()
        };
        let d = guard(&with_resources(2, 500, 256), &s, &p, &state, 10);
        assert_eq!(d.containers.len(), 1);
        // The limit was 512Mi: max(512Mi × 1.2, 512Mi + 100Mi), rounded up to whole MiB.
        assert_eq!(d.containers[0].limits.memory, Some(Bytes(615 * MIB)));
        assert!(has(&d, Rule::OomBump));
    }

    #[test]
    fn vertical_off_drops_resource_changes() {
        let p = Policy {
            vertical: Some(false),
            ..Policy::default()
        }
        .resolve();
        let d = guard(
            &with_resources(2, 2000, 1024),
            &snapshot(2),
            &p,
            &GuardState::default(),
            0,
        );
        assert!(d.containers.is_empty());
        assert!(has(&d, Rule::VerticalDisabled));
    }

    #[test]
    fn unknown_containers_are_ignored() {
        let p = Policy::default().resolve();
        let mut r = with_resources(2, 2000, 1024);
        r.containers[0].name = "sidecar-from-nowhere".into();
        let d = guard(&r, &snapshot(2), &p, &GuardState::default(), 0);
        assert!(d.containers.is_empty());
        assert!(has(&d, Rule::UnknownContainer));
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            prop::option::of(0u64..10_000_000),
            prop::option::of(0u64..1u64 << 45),
        )
            .prop_map(|(c, m)| Resources {
                cpu: c.map(CpuMillis),
                memory: m.map(Bytes),
            })
    }

    proptest! {
        /// Whatever is proposed, the decision is within policy: replicas in bounds, step-limited,
        /// resources in bounds and limits ≥ requests.
        #[test]
        fn any_proposal_ends_within_policy(
            proposed in any::<u32>(), current in 0u32..500, min in 1u32..10, span in 0u32..100,
            requests in arb_resources(), limits in arb_resources(), oom in 0u32..2, missing in any::<bool>(),
            now in 0i64..1_000_000, last_resize in prop::option::of(0i64..1_000_000),
        ) {
            let p = Policy { min_replicas: Some(min), max_replicas: Some(min + span), ..Policy::default() }.resolve();
            let mut s = snapshot(current);
            s.oom_kills = oom;
            if missing { s.cpu_per_pod = None; }
            let mut r = rec(proposed);
            r.containers.push(ContainerRecommendation { name: "app".into(), requests, limits });
            let state = GuardState { last_resize_at: last_resize, ..GuardState::default() };
            let d = guard(&r, &s, &p, &state, now);
            prop_assert!(d.replicas >= p.min_replicas && d.replicas <= p.max_replicas);
            if current >= p.min_replicas && current <= p.max_replicas && d.replicas > current {
                prop_assert!(d.replicas <= step_up_limit(current, &p.scale_up));
            }
            if missing && current <= p.max_replicas { prop_assert!(d.replicas >= current.max(p.min_replicas)); }
            for c in &d.containers {
                prop_assert!(c.limits.cpu >= c.requests.cpu || c.limits.cpu.is_none());
                prop_assert!(c.limits.memory >= c.requests.memory || c.limits.memory.is_none());
                for cpu in [c.requests.cpu, c.limits.cpu].into_iter().flatten() {
                    prop_assert!(cpu >= p.min_cpu && cpu <= p.max_cpu);
                }
                for m in [c.requests.memory, c.limits.memory].into_iter().flatten() {
                    prop_assert!(m >= p.min_memory && m <= p.max_memory);
                }
            }
        }
    }
}
