//! One cycle for one IPA: read the targets, query Prometheus once per metric, ask the agent, guard, apply,
//! report. A target that is missing or broken gets its own status and never stops the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipa_core::{
    Advice, Bytes, ContainerSnapshot, CpuMillis, EventSummary, MetricsSnapshot, RecommendRequest,
    Recommendation, ResolvedPolicy, Resources, Source, TargetRef,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::Request;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::advisory::{self, Advisories};
use crate::agent::AgentClient;
use crate::collect::{self, CycleMetrics, Frame, TargetInfo};
use crate::conditions::{self, Want};
use crate::crd::{
    ContainerResources, GroupStatus, GuardStateStatus, IPA, IpaGroup, IpaStatus, Mode,
};
use crate::metrics::Metrics;
use crate::prometheus::Prometheus;
use crate::promql::{self, Selection, Windows};
use crate::slim::{self, DeploymentView, EventView, MetaOnly};
use crate::tenancy::{self, Access};
use crate::urls::{Refusal, UrlPolicy};
use crate::{Error, apply};

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
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    pub agent: AgentClient,
    pub metrics: Arc<Metrics>,
    /// Which `prometheusUri`/`llmAgent` URLs an IPA may use.
    pub urls: UrlPolicy,
    /// The advisory loop's answers not yet used.
    pub advisories: Arc<Advisories>,
    /// The token of the agent installed with the controller (`IPA_AGENT_TOKEN`), sent only to that agent.
    pub install_token: Option<String>,
    pub settings: Settings,
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(unix: i64) -> Option<String> {
    jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Seconds until the next cycle is due, or `None` when it is due now. Status writes and unrelated metadata
/// changes wake the controller too; this keeps the cadence at `interval` unless the spec changed.
pub fn not_due_for(
    status: Option<&IpaStatus>,
    generation: Option<i64>,
    interval: Duration,
    now: i64,
) -> Option<u64> {
    let status = status?;
    if status.observed_generation != generation {
        return None;
    }
    let last = parse_rfc3339(status.last_reconcile_time.as_deref()?)?;
    let due = last.saturating_add(interval.as_secs() as i64);
    // A second of slack so a requeue that fires a little early still runs.
    (due - now > 1).then(|| (due - now) as u64)
}

/// Everything decided about one group this cycle.
#[derive(Debug, Clone)]
struct GroupOutcome {
    status: GroupStatus,
    changes: Vec<String>,
    apply_failed: bool,
    agent_error: Option<String>,
    /// The advisory loop spoke for this group this cycle.
    advised: bool,
}

/// Entry point for the runtime `Controller`.
pub async fn reconcile(ipa: Arc<IPA>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ipa.name_any();
    let namespace = ipa.namespace().unwrap_or_default();
    // The fast loop's cadence; the advisory loop runs inside it once per `interval`.
    let sync = ipa.spec.metadata.sync_period();
    let now = now_unix();
    if let Some(wait) = not_due_for(ipa.status.as_ref(), ipa.metadata.generation, sync, now) {
        return Ok(Action::requeue(Duration::from_secs(wait)));
    }
    let span = info_span!("reconcile", ipa = %name, namespace = %namespace, targets = ipa.spec.metadata.ipa_group.len());
    let started = Instant::now();
    let result = reconcile_cycle(&ipa, &ctx, now).instrument(span).await;
    ctx.metrics.reconciled(started.elapsed());
    result.map(|()| Action::requeue(sync))
}

/// The runtime's error hook: count, log, and retry after a short pause (never a tight loop).
pub fn error_policy(ipa: Arc<IPA>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.category());
    warn!(ipa = %ipa.name_any(), error = %error, "reconcile failed");
    Action::requeue(ipa.spec.metadata.interval().min(Duration::from_secs(30)))
}

/// What the API says about one namespace this cycle.
#[derive(Debug, Default)]
struct NamespaceView {
    deployments: Option<HashMap<String, DeploymentView>>,
    /// Deployment name → its ReplicaSets.
    replica_sets: Option<HashMap<String, Vec<String>>>,
    /// ReplicaSet name → its pods.
    pods: Option<HashMap<String, Vec<String>>>,
    /// Events by the name of the object they are about.
    events: HashMap<String, Vec<EventView>>,
    error: Option<String>,
}

/// Names of objects grouped by the name of their controlling owner of `kind`.
fn children_by_owner(items: Vec<MetaOnly>, kind: &str) -> HashMap<String, Vec<String>> {
    let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
    for m in items {
        if let Some(parent) = m.metadata.controller_of_kind(kind) {
            by_owner
                .entry(parent.to_string())
                .or_default()
                .push(m.metadata.name);
        }
    }
    by_owner
}

/// Objects per list page: peak memory is a page, not a namespace.
const PAGE_SIZE: u32 = 250;

/// Lists every page of `$request`'s collection as slim items, handing each to `$keep`; evaluates to the first
/// error, if any. (A macro rather than a generic fn over an async closure: such futures are not yet provably
/// `Send`.)
macro_rules! paged {
    ($ctx:expr, $request:expr, $metadata_only:expr, $keep:expr $(,)?) => {{
        let mut keep = $keep;
        let mut params = ListParams::default().limit(PAGE_SIZE);
        loop {
            $ctx.metrics.kube_request("list");
            match slim::list_page(&$ctx.client, &$request, &params, $metadata_only).await {
                Ok(page) => {
                    let next = page.metadata.continue_token.filter(|c| !c.is_empty());
                    page.items.into_iter().for_each(&mut keep);
                    match next {
                        Some(token) => params = params.continue_token(&token),
                        None => break Ok::<(), kube::Error>(()),
                    }
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Whether an object name can belong to one of `deployments`: the Deployment itself, one of its ReplicaSets
/// (`<deployment>-<hash>`) or pods (`<deployment>-<hash>-<suffix>`).
fn may_belong(name: &str, deployments: &BTreeSet<&str>) -> bool {
    let mut candidate = name;
    for _ in 0..3 {
        if deployments.contains(candidate) {
            return true;
        }
        match candidate.rsplit_once('-') {
            Some((head, _)) => candidate = head,
            None => return false,
        }
    }
    false
}

async fn read_namespace(
    ctx: &Context,
    ns: &str,
    targets: &BTreeSet<&str>,
    events_since: i64,
) -> NamespaceView {
    let deployments = Request::new(Deployment::url_path(&(), Some(ns)));
    let replica_sets = Request::new(ReplicaSet::url_path(&(), Some(ns)));
    let pods = Request::new(Pod::url_path(&(), Some(ns)));
    let events = Request::new(CoreEvent::url_path(&(), Some(ns)));
    let mut view = NamespaceView::default();

    let mut found = HashMap::new();
    let listed = paged!(ctx, deployments, false, |d: DeploymentView| {
        if targets.contains(d.metadata.name.as_str()) {
            found.insert(d.metadata.name.clone(), d);
        }
    });
    match listed {
        Ok(()) => view.deployments = Some(found),
        Err(e) => view.error = Some(format!("listing deployments in {ns}: {e}")),
    }
    // Owners inverted once per namespace, so each target's lookups are O(its own objects).
    let mut rs_items = Vec::new();
    let listed = paged!(ctx, replica_sets, true, |m: MetaOnly| {
        if may_belong(&m.metadata.name, targets) {
            rs_items.push(m);
        }
    });
    view.replica_sets = listed
        .ok()
        .map(|()| children_by_owner(rs_items, "Deployment"));
    let mut pod_items = Vec::new();
    let listed = paged!(ctx, pods, true, |m: MetaOnly| {
        if may_belong(&m.metadata.name, targets) {
            pod_items.push(m);
        }
    });
    view.pods = listed
        .ok()
        .map(|()| children_by_owner(pod_items, "ReplicaSet"));
    let listed = paged!(ctx, events, false, |event: EventView| {
        let object = event.involved_object.name.clone().unwrap_or_default();
        if may_belong(&object, targets)
            && event.last_seen() >= events_since
            && event.reporting_component.as_deref() != Some(MANAGER)
        {
            view.events.entry(object).or_default().push(event);
        }
    });
    if let Err(e) = listed {
        warn!(namespace = ns, error = %e, "cannot list events");
    }
    view
}

fn parse_resources(
    r: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Resources {
    Resources {
        cpu: r
            .and_then(|m| m.get("cpu"))
            .and_then(|q| q.0.parse::<CpuMillis>().ok()),
        memory: r
            .and_then(|m| m.get("memory"))
            .and_then(|q| q.0.parse::<Bytes>().ok()),
    }
}

fn containers_of(d: &DeploymentView) -> Vec<ContainerSnapshot> {
    d.containers()
        .iter()
        .map(|c| {
            let res = c.resources.as_ref();
            ContainerSnapshot {
                name: c.name.clone(),
                requests: parse_resources(res.and_then(|r| r.requests.as_ref())),
                limits: parse_resources(res.and_then(|r| r.limits.as_ref())),
                cpu_cores: None,
                memory_bytes: None,
            }
        })
        .collect()
}

/// Events about the Deployment, its ReplicaSets and its pods within the window, deduplicated by
/// (type, reason, message with the object's name replaced) and newest first.
fn events_for<'a>(
    events: impl IntoIterator<Item = &'a EventView>,
    deployment: &str,
    objects: &BTreeSet<String>,
    since: i64,
) -> Vec<EventSummary> {
    let mut merged: BTreeMap<(String, String, String), EventSummary> = BTreeMap::new();
    for e in events {
        if e.reporting_component.as_deref() == Some(MANAGER) {
            continue; // our own "Scaled"/"Resized" events are not evidence about the workload
        }
        let object = e.involved_object.name.as_deref().unwrap_or("");
        if object != deployment && !objects.contains(object) {
            continue;
        }
        let last_seen = e.last_seen();
        if last_seen < since {
            continue;
        }
        let kind = e.type_.clone().unwrap_or_else(|| "Normal".into());
        let reason = e.reason.clone().unwrap_or_default();
        let message: String = e
            .message
            .clone()
            .unwrap_or_default()
            .replace(object, "<pod>")
            .chars()
            .take(200)
            .collect();
        let count = e.count.unwrap_or(1).max(1) as u32;
        merged
            .entry((kind.clone(), reason.clone(), message.clone()))
            .and_modify(|s| {
                s.count = s.count.saturating_add(count);
                s.last_seen = s.last_seen.max(last_seen);
            })
            .or_insert(EventSummary {
                kind,
                reason,
                message,
                count,
                last_seen,
            });
    }
    let mut out: Vec<EventSummary> = merged.into_values().collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    out.truncate(10);
    out
}

/// The group's resolved policy: the CR's interval wins over any per-group one.
fn policy_of(group: &IpaGroup, interval: Duration) -> ResolvedPolicy {
    let mut policy = group.policy.clone();
    policy.interval_seconds = Some(interval.as_secs().min(u64::from(u32::MAX)) as u32);
    policy.resolve()
}

fn resources_status(containers: &[ipa_core::ContainerRecommendation]) -> Vec<ContainerResources> {
    containers
        .iter()
        .map(|c| ContainerResources {
            name: c.name.clone(),
            requests: c.requests.into(),
            limits: c.limits.into(),
        })
        .collect()
}

/// The bearer token for the IPA's agent: the IPA's own Secret when it names one, else the install's token when
/// (and only when) the IPA's agent is the agent installed with the controller.
async fn agent_token(ipa: &IPA, ctx: &Context, agent: Option<&reqwest::Url>) -> Option<String> {
    let Some(r) = ipa.spec.metadata.agent_token_secret_ref.as_ref() else {
        return agent
            .filter(|url| ctx.urls.is_install_agent(url))
            .and_then(|_| ctx.install_token.clone());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ipa.namespace()?);
    ctx.metrics.kube_request("get");
    match secrets.get(&r.name).await {
        Ok(secret) => secret
            .data
            .and_then(|d| d.get(&r.key).cloned())
            .and_then(|v| String::from_utf8(v.0).ok())
            .map(|t| t.trim().to_string()),
        Err(e) => {
            warn!(secret = %r.name, error = %e, "cannot read the agent token");
            None
        }
    }
}

/// Runs every metric query of the cycle concurrently; a failed query leaves its metric `None`.
async fn query_all(
    prom: &Prometheus,
    sel: &Selection,
    w: Windows,
    frame: Frame,
) -> (CycleMetrics, Vec<String>) {
    let start = frame.now - frame.history as i64;
    let stats_start = frame.now - frame.stats_window as i64;
    let cpu_q = sel.cpu(w);
    let mem_q = sel.memory();
    let rate_q = sel.request_rate(w);
    let restarts_q = sel.restarts(w);
    let oom_q = sel.oom_kills(w);
    let rate = async {
        match &rate_q {
            Some(q) => Some(prom.query_range(q, start, frame.now, frame.step).await),
            None => None,
        }
    };
    let (cpu, mem, rate, restarts, oom, free_mem, free_cpu) = tokio::join!(
        prom.query_range(&cpu_q, start, frame.now, frame.step),
        prom.query_range(&mem_q, stats_start, frame.now, frame.step),
        rate,
        prom.query(&restarts_q, frame.now),
        prom.query(&oom_q, frame.now),
        prom.query(promql::FREE_MEMORY, frame.now),
        prom.query(promql::FREE_CPU, frame.now),
    );
    let mut errors = Vec::new();
    // The detail (URL, HTTP status, "timed out") goes to the log only: status is readable by whoever may read the
    // IPA, and must not become a network probe.
    fn keep<T>(errors: &mut Vec<String>, what: &str, r: Result<T, Error>) -> Option<T> {
        r.map_err(|e| {
            warn!(query = what, error = %e, "prometheus query failed");
            errors.push(what.to_string());
        })
        .ok()
    }
    let metrics = CycleMetrics {
        cpu: keep(&mut errors, "cpu", cpu),
        memory: keep(&mut errors, "memory", mem),
        request_rate: rate.and_then(|r| keep(&mut errors, "request_rate", r)),
        restarts: keep(&mut errors, "restarts", restarts),
        oom_kills: keep(&mut errors, "oom_kills", oom),
        free_memory: keep(&mut errors, "free_memory", free_mem),
        free_cpu: keep(&mut errors, "free_cpu", free_cpu),
    };
    (metrics, errors)
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Asks the agent for one target: its proposal, or what status may say about its failure (the built-in then
/// stands in, in the core).
async fn ask(
    agent: &AgentClient,
    agent_url: &str,
    token: Option<&str>,
    group: &IpaGroup,
    snapshot: &MetricsSnapshot,
) -> Result<Recommendation, String> {
    let request = RecommendRequest {
        snapshot: snapshot.clone(),
        policy: group.policy.clone(),
    };
    agent
        .recommend(agent_url, token, &request)
        .await
        .map_err(|e| {
            // The detail (URL, HTTP status, reply) goes to the log only, never to status or Events.
            warn!(target = %snapshot.target, error = %e, "agent failed; built-in recommender used");
            AGENT_FAILED.to_string()
        })
}

/// What status says when the agent failed: no URL, status code or error text (see [`ask`]).
const AGENT_FAILED: &str = "agent request failed or its reply was invalid (see controller logs)";

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

/// Reads whether each namespace other than the IPA's lets it in. One metadata read per foreign namespace per
/// cycle; an unreadable (or missing) namespace has not opted in, and says so in the same words as one that did
/// not (no namespace-existence oracle).
async fn namespace_access<'a>(
    ctx: &Context,
    ipa_namespace: &str,
    namespaces: &BTreeSet<&'a str>,
) -> HashMap<&'a str, Access> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let mut out = HashMap::new();
    for ns in namespaces {
        let annotation = if *ns == ipa_namespace || ctx.settings.allow_cross_namespace {
            None
        } else {
            ctx.metrics.kube_request("get");
            match api.get_metadata_opt(ns).await {
                Ok(meta) => meta.and_then(|m| {
                    m.metadata
                        .annotations
                        .and_then(|mut a| a.remove(tenancy::ALLOW_FROM_ANNOTATION))
                }),
                Err(e) => {
                    warn!(namespace = ns, error = %e, "cannot read the target namespace; refusing it");
                    None
                }
            }
        };
        let access = tenancy::access(
            ipa_namespace,
            ns,
            annotation.as_deref(),
            ctx.settings.allow_cross_namespace,
        );
        out.insert(*ns, access);
    }
    out
}

async fn warn_ipa(ctx: &Context, ipa: &IPA, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics.kube_request("create");
    if let Err(e) = ctx.recorder.publish(&event, &ipa.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// An IPA with a refused URL: nothing is read, queried, asked or applied; status says which field and why,
/// without the URL or anything from the network. The groups' guard state is kept.
async fn refuse_urls(
    ipa: &IPA,
    ctx: &Context,
    previous: &IpaStatus,
    refused: &[(&'static str, Refusal)],
    now: i64,
) -> Result<(), Error> {
    let name = ipa.name_any();
    let namespace = ipa.namespace().unwrap_or_default();
    let what = refused
        .iter()
        .map(|(field, why)| format!("{field} {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("{what}; nothing was queried or changed");
    warn!(refused = %what, "IPA refused: URL not allowed");
    let fields: Vec<&str> = refused.iter().map(|(f, _)| *f).collect();
    let mut wanted = vec![Want::new(
        conditions::READY,
        false,
        URL_NOT_ALLOWED,
        message.clone(),
    )];
    if fields.contains(&"spec.metadata.prometheusUri") {
        wanted.push(Want::new(
            conditions::METRICS_AVAILABLE,
            false,
            URL_NOT_ALLOWED,
            "prometheusUri is not allowed; not queried",
        ));
    }
    if fields.contains(&"spec.metadata.llmAgent") {
        wanted.push(Want::new(
            conditions::AGENT_AVAILABLE,
            false,
            URL_NOT_ALLOWED,
            "llmAgent is not allowed; not contacted",
        ));
    }
    let status = IpaStatus {
        observed_generation: ipa.metadata.generation,
        targets: format!("0/{}", ipa.spec.metadata.ipa_group.len()),
        mode: ipa.spec.metadata.mode.unwrap_or_default().as_str().into(),
        last_decision: "refused: URL not allowed".into(),
        last_reconcile_time: rfc3339(now),
        last_advice_time: previous.last_advice_time.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            &wanted,
            ipa.metadata.generation,
            jiff::Timestamp::now(),
        ),
        groups: previous.groups.clone(),
    };
    warn_ipa(ctx, ipa, URL_NOT_ALLOWED, &message).await;
    write_status(ctx, &namespace, &name, &status).await
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &IpaStatus,
) -> Result<(), Error> {
    ctx.metrics.kube_request("patch");
    // The apiserver answers with the whole IPA (spec and status, ~1 MB at 1,000 targets); it is skipped, not
    // parsed.
    let write = Request::new(IPA::url_path(&(), Some(namespace)))
        .patch_subresource(
            "status",
            name,
            &PatchParams::default(),
            &Patch::Merge(StatusPatch { status }),
        )
        .map_err(kube::Error::BuildRequest);
    let written = match write {
        Ok(request) => ctx
            .client
            .request::<serde::de::IgnoredAny>(request)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    written.map_err(Error::kube(format!("writing status of {namespace}/{name}")))
}

/// What the advisory side brought a target this cycle.
#[derive(Debug, Clone)]
enum Asked {
    /// A fast cycle: nobody was asked.
    Nothing,
    /// The advisory cycle without an agent: the built-in advises.
    Builtin,
    /// The agent's proposal.
    Proposal(Recommendation),
    /// Asking the agent failed (the detail is in the controller's log).
    Failed(String),
}

/// Asks the agent for every target of one IPA, storing each answer as it comes for the next cycle to use.
async fn ask_all(
    agent: AgentClient,
    advisories: Arc<Advisories>,
    key: String,
    agent_url: String,
    token: Option<String>,
    requests: Vec<(IpaGroup, MetricsSnapshot)>,
    concurrency: usize,
) {
    futures::stream::iter(requests)
        .map(|(group, snap)| {
            let (agent, url, token) = (&agent, &agent_url, token.as_deref());
            async move {
                let answer = ask(agent, url, token, &group, &snap).await;
                (snap.target, answer)
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|(target, answer)| {
            advisories.put(&key, target, answer);
            std::future::ready(())
        })
        .await;
    advisories.finish(&key);
}

fn with_agent(ipa: &IPA) -> bool {
    !ipa.spec.metadata.llm_agent.trim().is_empty()
}

/// A group's previous condition of `type_`, to be kept as it was.
fn carried(prev: Option<&GroupStatus>, type_: &'static str) -> Option<Want> {
    prev.and_then(|p| want_of(&p.conditions, type_))
}

/// The IPA's previous condition of `type_`, to be kept as it was.
fn carried_ipa(previous: &IpaStatus, type_: &'static str) -> Option<Want> {
    want_of(&previous.conditions, type_)
}

fn want_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &'static str,
) -> Option<Want> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| {
        Want::new(
            type_,
            c.status == "True",
            c.reason.clone(),
            c.message.clone(),
        )
    })
}

/// A target that was found, with what it needs for the decision.
struct Found {
    index: usize,
    info: TargetInfo,
    deployment: DeploymentView,
    policy: ResolvedPolicy,
    mode: Mode,
}

async fn reconcile_cycle(ipa: &IPA, ctx: &Context, now: i64) -> Result<(), Error> {
    let name = ipa.name_any();
    let namespace = ipa.namespace().ok_or_else(|| Error::InvalidSpec {
        name: name.clone(),
        reason: "IPA has no namespace".into(),
    })?;
    let spec = &ipa.spec.metadata;
    let interval = spec.interval();
    let no_status = IpaStatus::default();
    let previous = ipa.status.as_ref().unwrap_or(&no_status);
    // Last cycle's group statuses by target, looked up once per group (not a scan per group).
    let previous_groups: HashMap<(&str, &str), &GroupStatus> = previous
        .groups
        .iter()
        .map(|g| ((g.namespace.as_str(), g.deployment.as_str()), g))
        .collect();
    let s = ctx.settings;

    // 0. URLs outside the allow-list: the IPA is refused before anything is read or sent.
    let refused = refused_urls(&ctx.urls, spec);
    if !refused.is_empty() {
        return refuse_urls(ipa, ctx, previous, &refused, now).await;
    }

    // 1. Read the API, one list per kind per namespace (not one call per target) — only in namespaces this IPA
    //    may act on: its own, and those that opted in.
    let namespaces: BTreeSet<&str> = spec
        .ipa_group
        .iter()
        .map(|g| g.namespace.as_str())
        .collect();
    let access = namespace_access(ctx, &namespace, &namespaces).await;
    let readable: BTreeSet<&str> = namespaces
        .iter()
        .copied()
        .filter(|ns| access.get(ns).is_some_and(|a| a.allowed()))
        .collect();
    let events_since = now - s.events_window as i64;
    let mut views: HashMap<&str, NamespaceView> =
        futures::future::join_all(readable.iter().map(|ns| {
            let targets: BTreeSet<&str> = spec
                .ipa_group
                .iter()
                .filter(|g| g.namespace == *ns)
                .map(|g| g.deployment.as_str())
                .collect();
            async move { (*ns, read_namespace(ctx, ns, &targets, events_since).await) }
        }))
        .await
        .into_iter()
        .collect();

    let mut outcomes: Vec<Option<GroupOutcome>> = vec![None; spec.ipa_group.len()];
    let mut found: Vec<Found> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut refused_targets: Vec<String> = Vec::new();
    for (index, group) in spec.ipa_group.iter().enumerate() {
        let mode = spec.mode_of(group);
        let base = GroupStatus {
            namespace: group.namespace.clone(),
            deployment: group.deployment.clone(),
            mode: mode.as_str().into(),
            ..GroupStatus::default()
        };
        let prev = previous_groups
            .get(&(group.namespace.as_str(), group.deployment.as_str()))
            .copied();
        let missing = |reason: &str, message: String| GroupOutcome {
            status: GroupStatus {
                guard_state: prev.map(|p| p.guard_state.clone()).unwrap_or_default(),
                last_scale_time: prev.and_then(|p| p.last_scale_time.clone()),
                last_resize_time: prev.and_then(|p| p.last_resize_time.clone()),
                conditions: conditions::merge(
                    prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]),
                    &[Want::new(conditions::TARGET_FOUND, false, reason, message)],
                    ipa.metadata.generation,
                    jiff::Timestamp::now(),
                ),
                ..base.clone()
            },
            changes: Vec::new(),
            apply_failed: false,
            agent_error: None,
            advised: false,
        };
        if !seen.insert((group.namespace.clone(), group.deployment.clone())) {
            outcomes[index] = Some(missing(
                "Duplicate",
                "this Deployment is listed twice; the first entry wins".into(),
            ));
            continue;
        }
        if !access
            .get(group.namespace.as_str())
            .is_some_and(|a| a.allowed())
        {
            let message = tenancy::refusal_message(&namespace, &group.namespace, &group.deployment);
            refused_targets.push(message.clone());
            outcomes[index] = Some(missing(tenancy::REFUSED_REASON, message));
            continue;
        }
        // Taken, not cloned: a target is decided once per cycle (duplicates were skipped above).
        let deployment = match views.get_mut(group.namespace.as_str()) {
            Some(NamespaceView {
                deployments: Some(deployments),
                ..
            }) => deployments.remove(&group.deployment),
            other => {
                let why = other.and_then(|v| v.error.clone()).unwrap_or_default();
                outcomes[index] = Some(missing("ReadFailed", why));
                continue;
            }
        };
        let view = views.get(group.namespace.as_str());
        let Some(deployment) = deployment else {
            outcomes[index] = Some(missing(
                "NotFound",
                format!(
                    "deployment {}/{} does not exist",
                    group.namespace, group.deployment
                ),
            ));
            continue;
        };
        let policy = policy_of(group, interval);
        let mut pods = BTreeSet::new();
        let mut replica_sets = BTreeSet::new();
        if let Some(NamespaceView {
            replica_sets: Some(rs),
            pods: Some(p),
            ..
        }) = view
        {
            replica_sets = rs
                .get(&group.deployment)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            pods = replica_sets
                .iter()
                .filter_map(|r| p.get(r))
                .flatten()
                .cloned()
                .collect();
        }
        let mut objects = pods.clone();
        objects.extend(replica_sets);
        let events = view
            .map(|v| {
                let relevant = std::iter::once(&group.deployment)
                    .chain(objects.iter())
                    .filter_map(|name| v.events.get(name))
                    .flatten();
                events_for(
                    relevant,
                    &group.deployment,
                    &objects,
                    now - s.events_window as i64,
                )
            })
            .unwrap_or_default();
        let status = deployment.status.as_ref();
        let info = TargetInfo {
            target: TargetRef {
                namespace: group.namespace.clone(),
                deployment: group.deployment.clone(),
            },
            ingress: group.ingress.clone().filter(|i| !i.is_empty()),
            replicas: deployment.spec.replicas.unwrap_or(1).max(0) as u32,
            ready_replicas: status.map(|s| s.ready_replicas.unwrap_or(0).max(0) as u32),
            containers: containers_of(&deployment),
            managed: policy.containers.clone(),
            pods,
            events,
        };
        found.push(Found {
            index,
            info,
            deployment,
            policy,
            mode,
        });
    }

    if !refused_targets.is_empty() {
        warn!(
            refused = refused_targets.len(),
            "cross-namespace targets refused"
        );
        let note = if refused_targets.len() == 1 {
            refused_targets[0].clone()
        } else {
            format!(
                "{} targets outside namespace {namespace} were not read or changed (see status); first: {}",
                refused_targets.len(),
                refused_targets[0]
            )
        };
        warn_ipa(ctx, ipa, tenancy::REFUSED_REASON, &note).await;
    }

    // 2. Prometheus: one query per metric for every found target of this IPA.
    let step = interval.as_secs().clamp(5, 15);
    let frame = Frame {
        now,
        step,
        stats_window: s.stats_window,
        history: s.history,
    };
    let windows = Windows {
        rate: s.rate_window,
        stats: s.stats_window,
    };
    let (cycle_metrics, metric_errors) = if found.is_empty() {
        (CycleMetrics::default(), Vec::new())
    } else {
        let selection = Selection {
            namespaces: found
                .iter()
                .map(|f| f.info.target.namespace.clone())
                .collect(),
            deployments: found
                .iter()
                .map(|f| f.info.target.deployment.clone())
                .collect(),
            ingresses: found
                .iter()
                .filter_map(|f| f.info.ingress.clone())
                .collect(),
        };
        let prom = Prometheus::new(
            ctx.http.clone(),
            &spec.prometheus_uri,
            s.prometheus_timeout,
            ctx.metrics.clone(),
        );
        query_all(&prom, &selection, windows, frame).await
    };
    // Where owner references could not be read, attribute pods by name.
    for f in &mut found {
        if f.info.pods.is_empty() {
            let names = cycle_metrics
                .cpu
                .iter()
                .chain(cycle_metrics.memory.iter())
                .flatten();
            f.info.pods = names
                .filter(|s| s.labels.get("namespace") == Some(&f.info.target.namespace))
                .filter_map(|s| s.labels.get("pod"))
                .filter(|pod| collect::pod_name_matches(&f.info.target.deployment, pod))
                .cloned()
                .collect();
        }
    }
    let index = collect::Indexed::new(&cycle_metrics);
    let snapshots: Vec<MetricsSnapshot> = found
        .iter()
        .map(|f| collect::snapshot(&f.info, &index, frame))
        .collect();

    // 3. Ask: the advisory loop, once per interval. The agent is asked in a task of its own and this cycle
    // waits only briefly; later answers are used by the next fast cycle. Without an agent the built-in advises.
    // Fast cycles read no Secret and copy no snapshot.
    let key = format!("{namespace}/{name}");
    let last_advice = previous.last_advice_time.as_deref().and_then(parse_rfc3339);
    let advisory_due = advisory::due(last_advice, interval, now);
    let with_agent = with_agent(ipa);
    if advisory_due && with_agent && !found.is_empty() && ctx.advisories.start(&key) {
        let agent_url = ctx.urls.check(&spec.llm_agent).ok();
        let token = agent_token(ipa, ctx, agent_url.as_ref()).await;
        // Owned inputs: the task outlives this cycle.
        let requests = found
            .iter()
            .zip(&snapshots)
            .map(|(f, snap)| (spec.ipa_group[f.index].clone(), snap.clone()))
            .collect();
        let asking = ask_all(
            ctx.agent.clone(),
            ctx.advisories.clone(),
            key.clone(),
            spec.llm_agent.clone(),
            token,
            requests,
            s.agent_concurrency.max(1),
        );
        let _ = tokio::time::timeout(advisory::WAIT_FOR_ANSWERS, tokio::spawn(asking)).await;
    }
    let mut answers = ctx.advisories.take(&key);

    // 4. Guard, apply, report — per target, each on its own.
    for (f, snap) in found.iter().zip(&snapshots) {
        let advice = match answers.remove(&f.info.target) {
            Some(Ok(rec)) => Asked::Proposal(rec),
            Some(Err(e)) => Asked::Failed(e),
            None if advisory_due && !with_agent => Asked::Builtin,
            None => Asked::Nothing,
        };
        let prev = previous_groups
            .get(&(
                f.info.target.namespace.as_str(),
                f.info.target.deployment.as_str(),
            ))
            .copied();
        let outcome = decide_and_apply(ipa, ctx, f, snap, advice, prev, now, &metric_errors).await;
        outcomes[f.index] = Some(outcome);
    }

    // 5. Status.
    let outcomes: Vec<GroupOutcome> = outcomes.into_iter().flatten().collect();
    let mut status = ipa_status(ipa, previous, &outcomes, &metric_errors, now);
    if advisory_due {
        status.last_advice_time = rfc3339(now);
    }
    let detail = fit_status(&mut status, STATUS_BUDGET_BYTES);
    if detail != Detail::Full {
        info!(
            ?detail,
            groups = status.groups.len(),
            "status trimmed to fit the object size limit"
        );
    }
    write_status(ctx, &namespace, &name, &status).await?;
    info!(decision = %status.last_decision, "cycle done");
    Ok(())
}

/// The status write's body, serialized straight from the status (no intermediate JSON tree of ~1 MB).
#[derive(Debug, serde::Serialize)]
struct StatusPatch<'a> {
    status: &'a IpaStatus,
}

#[allow(clippy::too_many_arguments)]
async fn decide_and_apply(
    ipa: &IPA,
    ctx: &Context,
    f: &Found,
    snap: &MetricsSnapshot,
    asked: Asked,
    prev: Option<&GroupStatus>,
    now: i64,
    metric_errors: &[String],
) -> GroupOutcome {
    let target = &f.info.target;
    let guard_state = prev
        .map(|p| ipa_core::GuardState::from(&p.guard_state))
        .unwrap_or_default();
    let advised = !matches!(asked, Asked::Nothing);
    let (proposal, agent_error) = match asked {
        Asked::Proposal(p) => (Some(p), None),
        Asked::Failed(e) => (None, Some(e)),
        Asked::Builtin | Asked::Nothing => (None, None),
    };
    let advice = match (&proposal, &agent_error) {
        (_, Some(e)) => Advice::Failed(e),
        (Some(p), None) => Advice::Proposal(p),
        (None, None) if advised => Advice::Builtin,
        (None, None) => Advice::None,
    };
    // Every reply from an agent is held by `decide` whatever `source` it claims: it came from the network.
    let safe = ipa_core::decide(snap, &f.policy, advice, &guard_state, now);
    let notes = safe.notes.clone();
    // What status shows as "recommended": the advisor's proposal as it came, or the built-in's decision.
    let rec = proposal.unwrap_or_else(|| Recommendation {
        containers: safe.containers.clone(),
        rationale: safe.rationale.clone(),
        ..Recommendation::new(safe.replicas, safe.source)
    });
    ctx.metrics.decision(safe.source);
    for n in &notes {
        ctx.metrics.intervention(n.rule);
    }
    let resize = apply::resource_changes(&f.info.containers, &safe.containers);
    let scale = safe.replicas != snap.replicas;

    let mut changes = Vec::new();
    let mut applied = Want::new(conditions::APPLIED, true, "NoChange", "nothing to change");
    let mut last_scale_time = prev.and_then(|p| p.last_scale_time.clone());
    let mut last_resize_time = prev.and_then(|p| p.last_resize_time.clone());
    let mut apply_failed = false;
    let (mut scale_failed, mut resize_failed) = (false, !resize.is_empty());
    if f.mode == Mode::Recommend {
        if scale || !resize.is_empty() {
            applied = Want::new(
                conditions::APPLIED,
                false,
                "RecommendMode",
                "mode is Recommend; the Deployment is left as it is",
            );
        }
    } else if scale || !resize.is_empty() {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &target.namespace);
        let mut rv = f.deployment.metadata.resource_version.clone();
        let mut messages = Vec::new();
        if scale {
            ctx.metrics.kube_request("patch");
            let body = apply::scale_patch(safe.replicas, rv.as_deref());
            match deployments
                .patch_scale(&target.deployment, &write_params(), &Patch::Merge(&body))
                .await
            {
                Ok(scale_obj) => {
                    rv = scale_obj.metadata.resource_version;
                    ctx.metrics.change("scale");
                    last_scale_time = rfc3339(now);
                    let what = format!("replicas {} → {}", snap.replicas, safe.replicas);
                    publish(
                        ctx,
                        &f.deployment.object_ref(&target.namespace),
                        "Scaled",
                        "Scale",
                        &what,
                        &rec,
                    )
                    .await;
                    changes.push(format!("{target} {what}"));
                    messages.push(what);
                }
                Err(e) => {
                    apply_failed = true;
                    scale_failed = true;
                    applied = failed_write(ctx, &e, "scale");
                }
            }
        }
        if !resize.is_empty() && !apply_failed {
            resize_failed = false;
            ctx.metrics.kube_request("patch");
            let body = apply::resources_patch(&resize, rv.as_deref());
            match deployments
                .patch(
                    &target.deployment,
                    &write_params(),
                    &Patch::Strategic(&body),
                )
                .await
            {
                Ok(_) => {
                    ctx.metrics.change("resize");
                    last_resize_time = rfc3339(now);
                    let what = format!(
                        "resources of {}",
                        resize
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    publish(
                        ctx,
                        &f.deployment.object_ref(&target.namespace),
                        "Resized",
                        "Resize",
                        &what,
                        &rec,
                    )
                    .await;
                    changes.push(format!("{target} {what}"));
                    messages.push(what);
                }
                Err(e) => {
                    apply_failed = true;
                    resize_failed = true;
                    applied = failed_write(ctx, &e, "resize");
                }
            }
        }
        if !apply_failed {
            applied = Want::new(conditions::APPLIED, true, "Applied", messages.join("; "));
        }
    }

    let missing_metrics = snap.has_missing_inputs();
    let wanted = vec![
        Want::new(conditions::TARGET_FOUND, true, "Found", "deployment exists"),
        if missing_metrics {
            let detail = if metric_errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; Prometheus query failed for {} (see controller logs)",
                    metric_errors.join(", ")
                )
            };
            Want::new(
                conditions::METRICS_AVAILABLE,
                false,
                "MissingInputs",
                format!("missing: {}{detail}", snap.missing.join(", ")),
            )
        } else {
            Want::new(
                conditions::METRICS_AVAILABLE,
                true,
                "Collected",
                "all inputs present",
            )
        },
        match (&agent_error, rec.source) {
            // A fast cycle asked nobody: the agent's last word stands.
            _ if !advised && with_agent(ipa) => carried(prev, conditions::AGENT_AVAILABLE)
                .unwrap_or_else(|| {
                    Want::new(
                        conditions::AGENT_AVAILABLE,
                        true,
                        "Asking",
                        "the agent is asked once per interval; no answer yet",
                    )
                }),
            (Some(e), _) => Want::new(
                conditions::AGENT_AVAILABLE,
                false,
                "AgentFailed",
                format!("{e}; built-in recommender used"),
            ),
            (None, Source::Builtin) if ipa.spec.metadata.llm_agent.trim().is_empty() => Want::new(
                conditions::AGENT_AVAILABLE,
                true,
                "BuiltinRecommender",
                "no agent configured; built-in recommender",
            ),
            (None, _) => Want::new(
                conditions::AGENT_AVAILABLE,
                true,
                "Answered",
                "agent answered",
            ),
        },
        applied,
    ];
    // The guard remembers what was written: a scale that succeeded keeps its event (and so its stabilization
    // window) even when the resize after it failed; a write that failed is forgotten.
    let mut state = safe.state.clone();
    if scale_failed || f.mode == Mode::Recommend {
        state.scale_events.retain(|e| e.0 != now);
    }
    if resize_failed || f.mode == Mode::Recommend {
        state.last_resize_at = guard_state.last_resize_at;
    }
    let status = GroupStatus {
        namespace: target.namespace.clone(),
        deployment: target.deployment.clone(),
        mode: f.mode.as_str().into(),
        current_replicas: Some(snap.replicas),
        recommended_replicas: Some(rec.replicas),
        desired_replicas: Some(safe.replicas),
        current_resources: f
            .info
            .containers
            .iter()
            .map(|c| ContainerResources {
                name: c.name.clone(),
                requests: c.requests.into(),
                limits: c.limits.into(),
            })
            .collect(),
        recommended_resources: resources_status(&rec.containers),
        desired_resources: resources_status(&safe.containers),
        source: Some(rec.source),
        rationale: rec.rationale.chars().take(1024).collect(),
        guardrail_notes: notes,
        missing_inputs: snap.missing.clone(),
        last_scale_time,
        last_resize_time,
        last_decision_time: rfc3339(now),
        guard_state: GuardStateStatus::from(&state),
        conditions: conditions::merge(
            prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]),
            &wanted,
            ipa.metadata.generation,
            jiff::Timestamp::now(),
        ),
    };
    GroupOutcome {
        status,
        changes,
        apply_failed,
        agent_error,
        advised,
    }
}

/// Writes to Deployments are attributed to us (managedFields), never forced over someone else's fields.
fn write_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

fn failed_write(ctx: &Context, e: &kube::Error, what: &'static str) -> Want {
    if crate::error::is_conflict(e) {
        ctx.metrics.change("conflict");
        info!(
            what,
            "deployment changed concurrently; deciding again next cycle"
        );
        Want::new(
            conditions::APPLIED,
            false,
            "Conflict",
            format!("{what}: the Deployment changed concurrently; deciding again next cycle"),
        )
    } else {
        warn!(what, error = %e, "applying failed");
        Want::new(
            conditions::APPLIED,
            false,
            "ApplyFailed",
            format!("{what}: {e}"),
        )
    }
}

async fn publish(
    ctx: &Context,
    deployment: &k8s_openapi::api::core::v1::ObjectReference,
    reason: &str,
    action: &str,
    what: &str,
    rec: &Recommendation,
) {
    let note: String = format!("{what} (source {}): {}", rec.source.as_str(), rec.rationale)
        .chars()
        .take(1000)
        .collect();
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.metrics.kube_request("create");
    if let Err(e) = ctx.recorder.publish(&event, deployment).await {
        warn!(error = %e, "could not publish event");
    }
}

fn ipa_status(
    ipa: &IPA,
    previous: &IpaStatus,
    outcomes: &[GroupOutcome],
    metric_errors: &[String],
    now: i64,
) -> IpaStatus {
    let spec = &ipa.spec.metadata;
    let listed = outcomes.len();
    let groups: Vec<GroupStatus> = outcomes.iter().map(|o| o.status.clone()).collect();
    let found = groups
        .iter()
        .filter(|g| conditions::is_true(&g.conditions, conditions::TARGET_FOUND))
        .count();
    let refused_group = |g: &GroupStatus| {
        g.conditions
            .iter()
            .any(|c| c.type_ == conditions::TARGET_FOUND && c.reason == tenancy::REFUSED_REASON)
    };
    let refused: Vec<String> = groups
        .iter()
        .filter(|g| refused_group(g))
        .map(|g| format!("{}/{}", g.namespace, g.deployment))
        .collect();
    let not_found: Vec<String> = groups
        .iter()
        .filter(|g| {
            !conditions::is_true(&g.conditions, conditions::TARGET_FOUND) && !refused_group(g)
        })
        .map(|g| format!("{}/{}", g.namespace, g.deployment))
        .collect();
    let metrics_missing: Vec<String> = groups
        .iter()
        .filter(|g| {
            g.current_replicas.is_some()
                && !conditions::is_true(&g.conditions, conditions::METRICS_AVAILABLE)
        })
        .map(|g| format!("{}/{}", g.namespace, g.deployment))
        .collect();
    let agent_errors: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.agent_error.as_deref())
        .collect();
    let apply_failed = outcomes.iter().filter(|o| o.apply_failed).count();
    let changes: Vec<&str> = outcomes
        .iter()
        .flat_map(|o| o.changes.iter().map(String::as_str))
        .collect();

    let mut wanted = Vec::new();
    wanted.push(if not_found.is_empty() {
        Want::new(
            conditions::TARGET_FOUND,
            true,
            "AllFound",
            format!("{found} target(s) found"),
        )
    } else {
        Want::new(
            conditions::TARGET_FOUND,
            false,
            "TargetsMissing",
            format!("not found: {}", not_found.join(", ")),
        )
    });
    wanted.push(if metrics_missing.is_empty() && metric_errors.is_empty() {
        Want::new(
            conditions::METRICS_AVAILABLE,
            true,
            "Collected",
            "every query answered",
        )
    } else {
        let mut msg = Vec::new();
        if !metric_errors.is_empty() {
            msg.push(format!(
                "Prometheus query failed for {} (see controller logs)",
                metric_errors.join(", ")
            ));
        }
        if !metrics_missing.is_empty() {
            msg.push(format!("inputs missing for {}", metrics_missing.join(", ")));
        }
        Want::new(
            conditions::METRICS_AVAILABLE,
            false,
            if metric_errors.is_empty() {
                "MissingInputs"
            } else {
                "QueryFailed"
            },
            msg.join("; "),
        )
    });
    wanted.push(if spec.llm_agent.trim().is_empty() {
        Want::new(
            conditions::AGENT_AVAILABLE,
            true,
            "BuiltinRecommender",
            "no agent configured; built-in recommender",
        )
    } else if !outcomes.iter().any(|o| o.advised) {
        // A fast cycle asked nobody: the agent's last word stands.
        carried_ipa(previous, conditions::AGENT_AVAILABLE).unwrap_or_else(|| {
            Want::new(
                conditions::AGENT_AVAILABLE,
                true,
                "Asking",
                "the agent is asked once per interval; no answer yet",
            )
        })
    } else if let Some(e) = agent_errors.first() {
        Want::new(
            conditions::AGENT_AVAILABLE,
            false,
            "AgentFailed",
            format!("{e}; built-in recommender used as fallback"),
        )
    } else {
        Want::new(
            conditions::AGENT_AVAILABLE,
            true,
            "Answered",
            "agent answered",
        )
    });
    let ipa_namespace = ipa.namespace().unwrap_or_default();
    wanted.push(if refused.is_empty() {
        Want::new(
            conditions::TARGETS_ALLOWED,
            true,
            "AllAllowed",
            "every target is in this IPA's namespace or one that allows it",
        )
    } else {
        Want::new(
            conditions::TARGETS_ALLOWED,
            false,
            tenancy::REFUSED_REASON,
            format!(
                "not read or changed, outside namespace {ipa_namespace}: {}; to allow, annotate the target namespace with {}={ipa_namespace} (or start the controller with --allow-cross-namespace)",
                refused.join(", "),
                tenancy::ALLOW_FROM_ANNOTATION
            ),
        )
    });
    let ready = not_found.is_empty() && refused.is_empty() && apply_failed == 0 && found > 0;
    wanted.push(Want::new(
        conditions::READY,
        ready,
        if ready {
            "Reconciled"
        } else if found == 0 {
            "NoTargets"
        } else {
            "Degraded"
        },
        format!("{found}/{listed} targets served, {apply_failed} write(s) failed"),
    ));

    let last_decision = if changes.is_empty() {
        let sources: BTreeSet<&str> = groups
            .iter()
            .filter_map(|g| g.source.map(Source::as_str))
            .collect();
        format!(
            "no change ({})",
            sources.into_iter().collect::<Vec<_>>().join(",")
        )
    } else {
        let mut text = changes.join("; ");
        if text.len() > 200 {
            text = format!("{} change(s)", changes.len());
        }
        text
    };
    IpaStatus {
        observed_generation: ipa.metadata.generation,
        targets: format!("{found}/{listed}"),
        mode: spec.mode.unwrap_or_default().as_str().into(),
        last_decision,
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
        for c in &mut g.conditions {
            c.message.clear();
        }
    }
    if status_size(status) <= budget {
        return Detail::Compact;
    }
    for g in &mut status.groups {
        g.rationale.clear();
        for n in &mut g.guardrail_notes {
            n.message.clear();
        }
    }
    Detail::Minimal
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

    #[test]
    fn object_names_are_attributed_to_their_deployment() {
        let targets: BTreeSet<&str> = ["web", "api-v2"].into();
        assert!(may_belong("web", &targets));
        assert!(may_belong("web-5d8f7c9b4", &targets));
        assert!(may_belong("web-5d8f7c9b4-x2x9z", &targets));
        assert!(may_belong("api-v2-5d8f7c9b4-x2x9z", &targets));
        assert!(!may_belong("webapp-5d8f7c9b4-x2x9z", &targets));
        assert!(!may_belong("other", &targets));
    }

    #[test]
    fn events_are_deduplicated_and_filtered() {
        let ev = |object: &str, reason: &str, msg: &str, count: i32, at: i64| EventView {
            involved_object: slim::InvolvedObject {
                name: Some(object.into()),
            },
            reason: Some(reason.into()),
            message: Some(msg.replace("{}", object)),
            count: Some(count),
            type_: Some("Warning".into()),
            last_timestamp: jiff::Timestamp::from_second(at)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            ..Default::default()
        };
        let events = vec![
            ev("app-1-a", "OOMKilling", "container in {} killed", 1, 100),
            ev("app-1-b", "OOMKilling", "container in {} killed", 2, 120),
            ev("other-1-a", "OOMKilling", "x", 1, 120),
            ev("app-1-a", "Old", "old", 1, 10),
        ];
        let objects: BTreeSet<String> = ["app-1-a".to_string(), "app-1-b".to_string()].into();
        let out = events_for(&events, "app", &objects, 50);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 3);
        assert_eq!(out[0].last_seen, 120);
        assert_eq!(out[0].message, "container in <pod> killed");
    }
}
