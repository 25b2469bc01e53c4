//! One cycle for one IPA, in five stages that follow the data: read (the API and Prometheus) → summarize (a
//! snapshot per target) → ask (the advisory loop, once per interval) → decide (the core's `decide`) → write
//! (apply, Events, status). A target that is missing or broken gets its own status and never stops the others.
//!
//! The cycle runs every `syncPeriod` (the fast loop: replicas follow the load); the agent is asked once per
//! `interval` in a task of its own, so a slow LLM never delays a scale-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::ask::advisory::Advisories;
use crate::ask::agent::AgentClient;
use crate::clock::{now_unix, parse_rfc3339};
use crate::conditions::{self, Want};
use crate::crd::{GroupStatus, IPA, IpaStatus};
use crate::http::CaClients;
use crate::metrics::Metrics;
use crate::read::metrics::Frame;
use crate::summarize::Summary;
use crate::urls::{Refusal, UrlPolicy};
use crate::write::events;
use crate::write::status::{self, Detail, GroupOutcome, STATUS_BUDGET_BYTES, Served};
use crate::{Error, ask, decide, read, summarize, tenancy, write};

/// Field manager / reporting controller name.
pub const MANAGER: &str = "ipa-controller";

/// Tunables of the collector (flags of `ipa controller`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Window the snapshot's statistics cover (seconds).
    pub stats_window: u64,
    /// History for the forecast (seconds).
    pub history: u64,
    /// `rate()` range (seconds).
    pub rate_window: u64,
    /// Maximum agent requests in flight per IPA.
    pub agent_concurrency: usize,
    /// Events older than this are not reported (seconds).
    pub events_window: u64,
    pub prometheus_timeout: Duration,
    /// `--allow-cross-namespace`: an IPA may manage Deployments in any namespace.
    pub allow_cross_namespace: bool,
    /// `--allow-demand-query`: run the PromQL of `demandQuery` fields.
    pub allow_demand_query: bool,
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    /// Clients trusting the private CAs IPAs name for their Prometheus.
    pub ca_clients: Arc<CaClients>,
    pub agent: AgentClient,
    pub metrics: Arc<Metrics>,
    /// Which `prometheusUri`/`llmAgent` URLs an IPA may use.
    pub urls: UrlPolicy,
    /// The advisory loop's answers not yet used.
    pub advisories: Arc<Advisories>,
    /// Autoscaler CRDs (VPA, KEDA) the apiserver does not serve, not asked for again for a while.
    pub absent_kinds: Arc<crate::conflicts::AbsentKinds>,
    /// The token of the agent installed with the controller (`IPA_AGENT_TOKEN`), sent only to that agent.
    pub install_token: Option<String>,
    /// The admission webhook this process serves, when it does.
    pub webhook: Option<Arc<crate::webhook::WebhookState>>,
    pub settings: Settings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Seconds until the next cycle is due, or `None` when it is due now. Status writes and unrelated metadata
/// changes wake the controller too; this keeps the cadence unless the spec changed.
pub fn not_due_for(
    status: Option<&IpaStatus>,
    generation: Option<i64>,
    period: Duration,
    now: i64,
) -> Option<u64> {
    let status = status?;
    if status.observed_generation != generation {
        return None;
    }
    let last = parse_rfc3339(status.last_reconcile_time.as_deref()?)?;
    let due = last.saturating_add(period.as_secs() as i64);
    // A second of slack so a requeue that fires a little early still runs.
    (due - now > 1).then(|| (due - now) as u64)
}

/// Entry point for the runtime `Controller`.
pub async fn reconcile(ipa: Arc<IPA>, ctx: Arc<Context>) -> Result<Action, Error> {
    let sync = ipa.spec.metadata.sync_period();
    let now = now_unix();
    if let Some(wait) = not_due_for(ipa.status.as_ref(), ipa.metadata.generation, sync, now) {
        return Ok(Action::requeue(Duration::from_secs(wait)));
    }
    let span = info_span!("reconcile", ipa = %ipa.name_any(), namespace = ?ipa.namespace(), targets = ipa.spec.metadata.ipa_group.len());
    let started = Instant::now();
    let result = cycle(&ipa, &ctx, now).instrument(span).await;
    ctx.metrics.reconciled(started.elapsed());
    result.map(|()| Action::requeue(sync))
}

/// The runtime's error hook: count, log, and retry after a short pause (never a tight loop).
pub fn error_policy(ipa: Arc<IPA>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.category());
    warn!(ipa = %ipa.name_any(), error = %error, "reconcile failed");
    Action::requeue(ipa.spec.metadata.interval().min(Duration::from_secs(30)))
}

/// One cycle: the five stages.
pub async fn cycle(ipa: &IPA, ctx: &Context, now: i64) -> Result<(), Error> {
    if ipa.namespace().is_none() {
        let reason = "IPA has no namespace".into();
        return Err(Error::InvalidSpec {
            name: ipa.name_any(),
            reason,
        });
    }
    let no_status = IpaStatus::default();
    let previous = ipa.status.as_ref().unwrap_or(&no_status);
    let refused = refused_urls(&ctx.urls, &ipa.spec.metadata);
    if !refused.is_empty() {
        return refuse_urls(ctx, ipa, previous, &refused, now).await;
    }
    let frame = frame(ipa, ctx.settings, now);
    let reading = read::read(ctx, ipa, frame).await;
    let summary = summarize::summarize(ipa, reading, frame, ctx.settings);
    warn_refused_targets(ctx, ipa, &summary).await;
    let mut advice = ask::ask(ctx, ipa, previous, &summary, now).await;
    let outcomes = decide_and_write(ctx, ipa, previous, &summary, &mut advice, now).await;
    let mut status = status::ipa_status(ipa, previous, &outcomes, &summary.metric_errors, now);
    if advice.due {
        status.last_advice_time = crate::clock::rfc3339(now);
    }
    let detail = status::fit_status(&mut status, STATUS_BUDGET_BYTES);
    if detail != Detail::Full {
        info!(
            ?detail,
            groups = status.groups.len(),
            "status trimmed to fit the object size limit"
        );
    }
    status::write(ctx, ipa, &status).await?;
    info!(decision = %status.last_decision, "cycle done");
    Ok(())
}

/// The cycle's time frame: Prometheus steps of 5–15 s, the collector's windows.
fn frame(ipa: &IPA, settings: Settings, now: i64) -> Frame {
    Frame {
        now,
        step: ipa.spec.metadata.interval().as_secs().clamp(5, 15),
        stats_window: settings.stats_window,
        history: settings.history,
    }
}

/// Decides and writes each served target on its own; every listed target gets an outcome, in spec order.
async fn decide_and_write(
    ctx: &Context,
    ipa: &IPA,
    previous: &IpaStatus,
    summary: &Summary,
    advice: &mut ask::Advice,
    now: i64,
) -> Vec<GroupOutcome> {
    // Last cycle's group statuses by target, looked up once per group (not a scan per group).
    let previous_groups: HashMap<(&str, &str), &GroupStatus> = previous
        .groups
        .iter()
        .map(|g| ((g.namespace.as_str(), g.deployment.as_str()), g))
        .collect();
    let spec = &ipa.spec.metadata;
    let prev_of = |ns: &str, name: &str| previous_groups.get(&(ns, name)).copied();
    let mut outcomes: Vec<Option<GroupOutcome>> = vec![None; spec.ipa_group.len()];
    for why in &summary.unserved {
        let group = &spec.ipa_group[why.index];
        let prev = prev_of(&group.namespace, &group.deployment);
        let mode = spec.mode_of(group).as_str();
        outcomes[why.index] = Some(status::unserved(
            group,
            mode,
            why,
            prev,
            ipa.metadata.generation,
        ));
    }
    for (found, snapshot) in summary.found.iter().zip(&summary.snapshots) {
        let target = &found.info.target;
        let prev = prev_of(&target.namespace, &target.deployment);
        let guard = prev
            .map(|p| ipa_core::GuardState::from(&p.guard_state))
            .unwrap_or_default();
        let plan = decide::plan(found, snapshot, advice.take(target), guard, now);
        ctx.metrics.decision(plan.decision.source);
        plan.decision
            .notes
            .iter()
            .for_each(|n| ctx.metrics.intervention(n.rule));
        warn_new_conflict(ctx, ipa, found, prev).await;
        let mut written = write::apply(ctx, found, &plan, now).await;
        written.webhook = webhook_want(ctx, found, &written, now);
        let served = Served {
            found,
            snapshot,
            plan,
            written,
            prev,
        };
        outcomes[found.index] = Some(status::served(ipa, served, &summary.metric_errors, now));
    }
    outcomes.into_iter().flatten().collect()
}

/// Whether an in-place target's new pods are sized at admission (see `webhook::availability`).
/// `None` for a target whose pods are not sized at admission.
fn webhook_want(
    ctx: &Context,
    found: &summarize::Found,
    written: &write::Written,
    now: i64,
) -> Option<Want> {
    let target = found.info.target.to_string();
    let Some(webhook) = ctx.webhook.as_ref() else {
        let not_served = crate::webhook::availability(false, None, None, &[]);
        return (!written.pod_size.is_empty()).then_some(not_served);
    };
    if written.pod_size.is_empty() {
        webhook.forget_size(&target);
        return None;
    }
    // Named from this cycle's status on, which is written at the end of the cycle.
    let sized_since = webhook.sized_since(&target, now);
    let configured = webhook.configured_since();
    Some(crate::webhook::availability(
        true,
        configured,
        Some(sized_since),
        &found.pods,
    ))
}

/// A Warning Event when another autoscaler is first seen on a target (not every cycle it stays).
async fn warn_new_conflict(
    ctx: &Context,
    ipa: &IPA,
    found: &summarize::Found,
    prev: Option<&GroupStatus>,
) {
    let was_refused = prev.is_some_and(|p| {
        p.conditions
            .iter()
            .any(|c| c.type_ == crate::conflicts::CONDITION && c.status == "False")
    });
    if !found.sole.ok && !was_refused {
        events::warn_ipa(
            ctx,
            ipa,
            crate::conflicts::REASON_CONFLICT,
            &found.sole.message,
        )
        .await;
    }
}

async fn warn_refused_targets(ctx: &Context, ipa: &IPA, summary: &Summary) {
    let refused: Vec<&str> = summary.refused().collect();
    let Some(first) = refused.first() else {
        return;
    };
    warn!(refused = refused.len(), "cross-namespace targets refused");
    let note = if refused.len() == 1 {
        first.to_string()
    } else {
        let ns = ipa.namespace().unwrap_or_default();
        format!(
            "{} targets outside namespace {ns} were not read or changed (see status); first: {first}",
            refused.len()
        )
    };
    events::warn_ipa(ctx, ipa, tenancy::REFUSED_REASON, &note).await;
}

/// Condition (and Event) reason for an IPA whose URLs are outside the allow-list.
pub const URL_NOT_ALLOWED: &str = "URLNotAllowed";

/// The URL checks of one IPA: `(field, refusal)` for each refused URL.
fn refused_urls(urls: &UrlPolicy, spec: &crate::crd::IpaMetadata) -> Vec<(&'static str, Refusal)> {
    let mut refused = Vec::new();
    if let Err(r) = urls.check(&spec.prometheus_uri) {
        refused.push(("spec.metadata.prometheusUri", r));
    }
    if !spec.llm_agent.trim().is_empty()
        && let Err(r) = urls.check(&spec.llm_agent)
    {
        refused.push(("spec.metadata.llmAgent", r));
    }
    refused
}

/// An IPA with a refused URL: nothing is read, queried, asked or applied; status says which field and why,
/// without the URL or anything from the network. The groups' guard state is kept.
async fn refuse_urls(
    ctx: &Context,
    ipa: &IPA,
    previous: &IpaStatus,
    refused: &[(&'static str, Refusal)],
    now: i64,
) -> Result<(), Error> {
    let what: Vec<String> = refused
        .iter()
        .map(|(field, why)| format!("{field} {why}"))
        .collect();
    let message = format!("{}; nothing was queried or changed", what.join("; "));
    warn!(refused = %what.join("; "), "IPA refused: URL not allowed");
    let mut wanted = vec![Want::new(
        conditions::READY,
        false,
        URL_NOT_ALLOWED,
        message.clone(),
    )];
    for (field, _) in refused {
        wanted.push(match *field {
            "spec.metadata.prometheusUri" => {
                let why = "prometheusUri is not allowed; not queried";
                Want::new(conditions::METRICS_AVAILABLE, false, URL_NOT_ALLOWED, why)
            }
            _ => {
                let why = "llmAgent is not allowed; not contacted";
                Want::new(conditions::AGENT_AVAILABLE, false, URL_NOT_ALLOWED, why)
            }
        });
    }
    let status = status::refused(ipa, previous, &wanted, "refused: URL not allowed", now);
    events::warn_ipa(ctx, ipa, URL_NOT_ALLOWED, &message).await;
    status::write(ctx, ipa, &status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339;

    #[test]
    fn cadence_is_the_interval_unless_the_spec_changed() {
        let status = IpaStatus {
            observed_generation: Some(3),
            last_reconcile_time: rfc3339(1000),
            ..IpaStatus::default()
        };
        let i = Duration::from_secs(60);
        assert_eq!(not_due_for(Some(&status), Some(3), i, 1010), Some(50));
        assert_eq!(not_due_for(Some(&status), Some(3), i, 1059), None);
        assert_eq!(not_due_for(Some(&status), Some(4), i, 1010), None);
        assert_eq!(not_due_for(None, Some(3), i, 1010), None);
    }
}
