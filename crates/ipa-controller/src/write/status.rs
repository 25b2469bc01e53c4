//! Status: each target's decision, conditions and guard state, the IPA's summary conditions, trimmed to fit the
//! object size limit, written as one merge patch of the status subresource.

use std::collections::BTreeSet;

use ipa_core::{ContainerRecommendation, MetricsSnapshot, Source};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::core::Request;
use kube::{Resource, ResourceExt};

use crate::Error;
use crate::clock::rfc3339;
use crate::conditions::{self, Want};
use crate::crd::{ContainerResources, GroupStatus, GuardStateStatus, IPA, IpaGroup, IpaStatus};
use crate::decide::Plan;
use crate::reconcile::Context;
use crate::summarize::{Found, Unserved};
use crate::tenancy;
use crate::write::{Written, remembered, time_of};

/// One target's part of the cycle, as the IPA's summary needs it.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub status: GroupStatus,
    pub changes: Vec<String>,
    pub apply_failed: bool,
    pub agent_error: Option<String>,
    /// The advisory loop spoke for this target this cycle.
    pub advised: bool,
}

/// Rationale kept per target in status.
const RATIONALE_CHARS: usize = 1024;

fn merged(
    previous: Option<&GroupStatus>,
    wanted: &[Want],
    generation: Option<i64>,
) -> Vec<Condition> {
    let previous = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    conditions::merge(previous, wanted, generation, jiff::Timestamp::now())
}

/// A previous condition of `type_`, to be kept as it was.
fn carried(conditions: &[Condition], type_: &'static str) -> Option<Want> {
    let c = conditions.iter().find(|c| c.type_ == type_)?;
    Some(Want::new(
        type_,
        c.status == "True",
        c.reason.clone(),
        c.message.clone(),
    ))
}

fn resources_of(containers: &[ContainerRecommendation]) -> Vec<ContainerResources> {
    containers
        .iter()
        .map(|c| ContainerResources {
            name: c.name.clone(),
            requests: c.requests.into(),
            limits: c.limits.into(),
        })
        .collect()
}

/// A listed target not served this cycle: its previous decision and guard state are kept.
pub fn unserved(
    group: &IpaGroup,
    mode: &str,
    why: &Unserved,
    prev: Option<&GroupStatus>,
    generation: Option<i64>,
) -> GroupOutcome {
    let wanted = [Want::new(
        conditions::TARGET_FOUND,
        false,
        why.reason,
        why.message.clone(),
    )];
    let status = GroupStatus {
        namespace: group.namespace.clone(),
        deployment: group.deployment.clone(),
        mode: mode.into(),
        guard_state: prev.map(|p| p.guard_state.clone()).unwrap_or_default(),
        last_scale_time: prev.and_then(|p| p.last_scale_time.clone()),
        last_resize_time: prev.and_then(|p| p.last_resize_time.clone()),
        conditions: merged(prev, &wanted, generation),
        ..GroupStatus::default()
    };
    GroupOutcome {
        status,
        changes: Vec::new(),
        apply_failed: false,
        agent_error: None,
        advised: false,
    }
}

/// What one served target's status says after its decision and writes.
#[derive(Debug)]
pub struct Served<'a> {
    pub found: &'a Found,
    pub snapshot: &'a MetricsSnapshot,
    pub plan: Plan,
    pub written: Written,
    pub prev: Option<&'a GroupStatus>,
}

pub fn served(ipa: &IPA, s: Served<'_>, metric_errors: &[String], now: i64) -> GroupOutcome {
    let Served {
        found,
        snapshot: snap,
        plan,
        written,
        prev,
    } = s;
    let mut wanted = vec![
        Want::new(conditions::TARGET_FOUND, true, "Found", "deployment exists"),
        metrics_want(snap, metric_errors),
        agent_want(ipa, &plan, prev),
        found.sole.clone(),
        written.applied.clone(),
    ];
    wanted.extend(written.webhook.clone());
    let rec = &plan.recommended;
    let status = GroupStatus {
        namespace: found.info.target.namespace.clone(),
        deployment: found.info.target.deployment.clone(),
        mode: found.mode.as_str().into(),
        current_replicas: Some(snap.replicas),
        recommended_replicas: Some(rec.replicas),
        desired_replicas: Some(plan.decision.replicas),
        current_resources: found
            .info
            .containers
            .iter()
            .map(|c| ContainerResources {
                name: c.name.clone(),
                requests: c.requests.into(),
                limits: c.limits.into(),
            })
            .collect(),
        recommended_resources: resources_of(&rec.containers),
        desired_resources: resources_of(&plan.decision.containers),
        pod_resources: resources_of(&written.pod_size),
        source: Some(rec.source),
        rationale: rec.rationale.chars().take(RATIONALE_CHARS).collect(),
        guardrail_notes: plan.decision.notes.clone(),
        missing_inputs: snap.missing.clone(),
        last_scale_time: time_of(
            written.scaled_at,
            prev.and_then(|p| p.last_scale_time.as_ref()),
        ),
        last_resize_time: time_of(
            written.resized_at,
            prev.and_then(|p| p.last_resize_time.as_ref()),
        ),
        last_decision_time: rfc3339(now),
        guard_state: GuardStateStatus::from(&remembered(&plan, &written, now)),
        conditions: merged(prev, &wanted, ipa.metadata.generation),
    };
    GroupOutcome {
        status,
        changes: written.changes,
        apply_failed: written.failed,
        agent_error: plan.agent_error,
        advised: plan.advised,
    }
}

/// The IPA's `WebhookAvailable`, when any target is resized in place: false while any such target's is, naming
/// the first.
fn ipa_webhook_want(groups: &[GroupStatus]) -> Option<Want> {
    let webhook = crate::webhook::CONDITION;
    let mut with = groups.iter().filter_map(|g| {
        let c = g.conditions.iter().find(|c| c.type_ == webhook)?;
        Some((g, c))
    });
    let first = with.next()?;
    let missed = std::iter::once(first)
        .chain(with)
        .find(|(_, c)| c.status == "False");
    Some(match missed {
        Some((g, c)) => {
            let why = format!("{}/{}: {}", g.namespace, g.deployment, c.message);
            Want::new(webhook, false, c.reason.clone(), why)
        }
        None => Want::new(
            webhook,
            true,
            "Available",
            "new pods of in-place targets are sized at admission",
        ),
    })
}

fn metrics_want(snap: &MetricsSnapshot, metric_errors: &[String]) -> Want {
    if !snap.has_missing_inputs() {
        return Want::new(
            conditions::METRICS_AVAILABLE,
            true,
            "Collected",
            "all inputs present",
        );
    }
    let detail = if metric_errors.is_empty() {
        String::new()
    } else {
        format!(
            "; Prometheus query failed for {} (see controller logs)",
            metric_errors.join(", ")
        )
    };
    let message = format!("missing: {}{detail}", snap.missing.join(", "));
    Want::new(
        conditions::METRICS_AVAILABLE,
        false,
        "MissingInputs",
        message,
    )
}

fn agent_want(ipa: &IPA, plan: &Plan, prev: Option<&GroupStatus>) -> Want {
    let with_agent = crate::ask::with_agent(ipa);
    if !plan.advised && with_agent {
        // A fast cycle asked nobody: the agent's last word stands.
        let previous = prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
        return carried(previous, conditions::AGENT_AVAILABLE).unwrap_or_else(asking);
    }
    match (&plan.agent_error, plan.recommended.source) {
        (Some(e), _) => {
            let message = format!("{e}; built-in recommender used");
            Want::new(conditions::AGENT_AVAILABLE, false, "AgentFailed", message)
        }
        (None, Source::Builtin) if !with_agent => builtin(),
        (None, _) => Want::new(
            conditions::AGENT_AVAILABLE,
            true,
            "Answered",
            "agent answered",
        ),
    }
}

fn asking() -> Want {
    let message = "the agent is asked once per interval; no answer yet";
    Want::new(conditions::AGENT_AVAILABLE, true, "Asking", message)
}

fn builtin() -> Want {
    let message = "no agent configured; built-in recommender";
    Want::new(
        conditions::AGENT_AVAILABLE,
        true,
        "BuiltinRecommender",
        message,
    )
}

fn key(g: &GroupStatus) -> String {
    format!("{}/{}", g.namespace, g.deployment)
}

fn conflicted(g: &GroupStatus) -> bool {
    g.conditions
        .iter()
        .any(|c| c.type_ == crate::conflicts::CONDITION && c.status == "False")
}

fn refused_target(g: &GroupStatus) -> bool {
    let refused =
        |c: &Condition| c.type_ == conditions::TARGET_FOUND && c.reason == tenancy::REFUSED_REASON;
    g.conditions.iter().any(refused)
}

/// The IPA's status after a cycle: its summary conditions over every target's outcome.
pub fn ipa_status(
    ipa: &IPA,
    previous: &IpaStatus,
    outcomes: &[GroupOutcome],
    metric_errors: &[String],
    now: i64,
) -> IpaStatus {
    let groups: Vec<GroupStatus> = outcomes.iter().map(|o| o.status.clone()).collect();
    let found = groups
        .iter()
        .filter(|g| conditions::is_true(&g.conditions, conditions::TARGET_FOUND))
        .count();
    let apply_failed = outcomes.iter().filter(|o| o.apply_failed).count();
    let refused: Vec<String> = groups
        .iter()
        .filter(|g| refused_target(g))
        .map(key)
        .collect();
    let not_found: Vec<String> = groups
        .iter()
        .filter(|g| {
            !conditions::is_true(&g.conditions, conditions::TARGET_FOUND) && !refused_target(g)
        })
        .map(key)
        .collect();
    let conflicted = groups.iter().filter(|g| conflicted(g)).count();
    let ready = not_found.is_empty()
        && refused.is_empty()
        && apply_failed == 0
        && conflicted == 0
        && found > 0;
    let (ready_reason, listed) = match (ready, found) {
        (true, _) => ("Reconciled", outcomes.len()),
        (false, 0) => ("NoTargets", outcomes.len()),
        (false, _) => ("Degraded", outcomes.len()),
    };
    let mut served = format!("{found}/{listed} targets served, {apply_failed} write(s) failed");
    if conflicted > 0 {
        served.push_str(&format!(", {conflicted} shared with another autoscaler"));
    }
    let mut wanted = vec![
        found_want(found, &not_found),
        ipa_metrics_want(&groups, metric_errors),
        ipa_agent_want(ipa, previous, outcomes),
        allowed_want(&ipa.namespace().unwrap_or_default(), &refused),
        Want::new(conditions::READY, ready, ready_reason, served),
    ];
    wanted.extend(ipa_webhook_want(&groups));
    IpaStatus {
        observed_generation: ipa.metadata.generation,
        targets: format!("{found}/{listed}"),
        mode: ipa.spec.metadata.mode.unwrap_or_default().as_str().into(),
        last_decision: last_decision(outcomes),
        last_reconcile_time: rfc3339(now),
        last_advice_time: previous.last_advice_time.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            &wanted,
            ipa.metadata.generation,
            jiff::Timestamp::now(),
        ),
        groups,
    }
}

fn found_want(found: usize, not_found: &[String]) -> Want {
    if not_found.is_empty() {
        return Want::new(
            conditions::TARGET_FOUND,
            true,
            "AllFound",
            format!("{found} target(s) found"),
        );
    }
    let message = format!("not found: {}", not_found.join(", "));
    Want::new(conditions::TARGET_FOUND, false, "TargetsMissing", message)
}

fn ipa_metrics_want(groups: &[GroupStatus], metric_errors: &[String]) -> Want {
    let missing: Vec<String> = groups
        .iter()
        .filter(|g| {
            g.current_replicas.is_some()
                && !conditions::is_true(&g.conditions, conditions::METRICS_AVAILABLE)
        })
        .map(key)
        .collect();
    if missing.is_empty() && metric_errors.is_empty() {
        return Want::new(
            conditions::METRICS_AVAILABLE,
            true,
            "Collected",
            "every query answered",
        );
    }
    let mut message = Vec::new();
    if !metric_errors.is_empty() {
        message.push(format!(
            "Prometheus query failed for {} (see controller logs)",
            metric_errors.join(", ")
        ));
    }
    if !missing.is_empty() {
        message.push(format!("inputs missing for {}", missing.join(", ")));
    }
    let reason = if metric_errors.is_empty() {
        "MissingInputs"
    } else {
        "QueryFailed"
    };
    Want::new(
        conditions::METRICS_AVAILABLE,
        false,
        reason,
        message.join("; "),
    )
}

fn ipa_agent_want(ipa: &IPA, previous: &IpaStatus, outcomes: &[GroupOutcome]) -> Want {
    if !crate::ask::with_agent(ipa) {
        return builtin();
    }
    if !outcomes.iter().any(|o| o.advised) {
        // A fast cycle asked nobody: the agent's last word stands.
        return carried(&previous.conditions, conditions::AGENT_AVAILABLE).unwrap_or_else(asking);
    }
    match outcomes.iter().find_map(|o| o.agent_error.as_deref()) {
        Some(e) => {
            let message = format!("{e}; built-in recommender used as fallback");
            Want::new(conditions::AGENT_AVAILABLE, false, "AgentFailed", message)
        }
        None => Want::new(
            conditions::AGENT_AVAILABLE,
            true,
            "Answered",
            "agent answered",
        ),
    }
}

fn allowed_want(ipa_namespace: &str, refused: &[String]) -> Want {
    if refused.is_empty() {
        let message = "every target is in this IPA's namespace or one that allows it";
        return Want::new(conditions::TARGETS_ALLOWED, true, "AllAllowed", message);
    }
    let message = format!(
        "not read or changed, outside namespace {ipa_namespace}: {}; to allow, annotate the target namespace with {}={ipa_namespace} (or start the controller with --allow-cross-namespace)",
        refused.join(", "),
        tenancy::ALLOW_FROM_ANNOTATION
    );
    Want::new(
        conditions::TARGETS_ALLOWED,
        false,
        tenancy::REFUSED_REASON,
        message,
    )
}

/// The IPA's `lastDecision`: the changes made, or the sources that decided "no change".
fn last_decision(outcomes: &[GroupOutcome]) -> String {
    let changes: Vec<&str> = outcomes
        .iter()
        .flat_map(|o| o.changes.iter().map(String::as_str))
        .collect();
    if changes.is_empty() {
        let sources: BTreeSet<&str> = outcomes
            .iter()
            .filter_map(|o| o.status.source.map(Source::as_str))
            .collect();
        return format!(
            "no change ({})",
            sources.into_iter().collect::<Vec<_>>().join(",")
        );
    }
    let text = changes.join("; ");
    if text.len() > 200 {
        format!("{} change(s)", changes.len())
    } else {
        text
    }
}

/// An IPA refused before anything was read: the refusal in its conditions, every target's last status kept.
pub fn refused(
    ipa: &IPA,
    previous: &IpaStatus,
    wanted: &[Want],
    decision: &str,
    now: i64,
) -> IpaStatus {
    IpaStatus {
        observed_generation: ipa.metadata.generation,
        targets: format!("0/{}", ipa.spec.metadata.ipa_group.len()),
        mode: ipa.spec.metadata.mode.unwrap_or_default().as_str().into(),
        last_decision: decision.into(),
        last_reconcile_time: rfc3339(now),
        last_advice_time: previous.last_advice_time.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            wanted,
            ipa.metadata.generation,
            jiff::Timestamp::now(),
        ),
        groups: previous.groups.clone(),
    }
}

/// Budget for the serialized status: etcd refuses objects over ~1.5 MiB, and the spec needs room too.
pub const STATUS_BUDGET_BYTES: usize = 1024 * 1024;

/// How much per-group detail a status kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    Full,
    /// Rationale cut to a line.
    ShortRationale,
    /// Also without current/recommended resources and condition messages.
    Compact,
    /// Also without rationale and guardrail-note messages: decisions, conditions and guard state only.
    Minimal,
}

fn status_size(status: &IpaStatus) -> usize {
    serde_json::to_vec(status).map_or(usize::MAX, |v| v.len())
}

/// Drops per-group detail, least important first, until the status fits `budget` bytes. The guard state and
/// the decisions are never dropped: they are what the next cycle needs.
pub fn fit_status(status: &mut IpaStatus, budget: usize) -> Detail {
    if status_size(status) <= budget {
        return Detail::Full;
    }
    for g in &mut status.groups {
        if g.rationale.len() > 160 {
            g.rationale = format!("{}…", g.rationale.chars().take(160).collect::<String>());
        }
    }
    if status_size(status) <= budget {
        return Detail::ShortRationale;
    }
    for g in &mut status.groups {
        g.current_resources.clear();
        g.recommended_resources.clear();
        g.conditions.iter_mut().for_each(|c| c.message.clear());
    }
    if status_size(status) <= budget {
        return Detail::Compact;
    }
    for g in &mut status.groups {
        g.rationale.clear();
        g.guardrail_notes.iter_mut().for_each(|n| n.message.clear());
    }
    Detail::Minimal
}

/// The status write's body, serialized straight from the status (no intermediate JSON tree of ~1 MB).
#[derive(Debug, serde::Serialize)]
struct StatusPatch<'a> {
    status: &'a IpaStatus,
}

pub async fn write(ctx: &Context, ipa: &IPA, status: &IpaStatus) -> Result<(), Error> {
    let (namespace, name) = (ipa.namespace().unwrap_or_default(), ipa.name_any());
    ctx.metrics.kube_request("patch");
    // The apiserver answers with the whole IPA (spec and status, ~1 MB at 1,000 targets); it is skipped, not
    // parsed.
    let patch = Patch::Merge(StatusPatch { status });
    let request = Request::new(IPA::url_path(&(), Some(&namespace)))
        .patch_subresource("status", &name, &PatchParams::default(), &patch)
        .map_err(kube::Error::BuildRequest);
    let written = match request {
        Ok(request) => ctx
            .client
            .request::<serde::de::IgnoredAny>(request)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    written.map_err(Error::kube(format!("writing status of {namespace}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_statuses_are_trimmed_but_keep_decisions_and_guard_state() {
        let group = GroupStatus {
            namespace: "n".into(),
            deployment: "d".into(),
            desired_replicas: Some(3),
            rationale: "x".repeat(1000),
            current_resources: vec![ContainerResources {
                name: "c".repeat(200),
                ..ContainerResources::default()
            }],
            guard_state: GuardStateStatus {
                last_resize_at: Some(1),
                ..GuardStateStatus::default()
            },
            ..GroupStatus::default()
        };
        let mut status = IpaStatus {
            groups: vec![group; 1000],
            ..IpaStatus::default()
        };
        assert_eq!(fit_status(&mut status.clone(), usize::MAX), Detail::Full);
        assert_eq!(fit_status(&mut status, 500_000), Detail::Compact);
        assert!(status_size(&status) <= 500_000);
        assert!(
            status
                .groups
                .iter()
                .all(|g| g.desired_replicas == Some(3) && g.guard_state.last_resize_at == Some(1))
        );
    }
}
