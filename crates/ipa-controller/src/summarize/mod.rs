//! Stage 2 of a cycle: from what was read to the targets that can be decided on, each with its snapshot, and
//! the targets that can't, each with why. Pure.

pub mod snapshot;
pub mod target;

use std::collections::BTreeSet;
use std::time::Duration;

use ipa_core::{MetricsSnapshot, ResolvedPolicy};
use kube::ResourceExt;

use crate::conditions::Want;
use crate::conflicts::{self, Me, Target, TargetConflicts};
use crate::crd::{IPA, IpaGroup, Mode, UpdateMode};
use crate::in_place::PodView;
use crate::read::Reading;
use crate::read::cluster::NamespaceView;
use crate::read::metrics::{CycleMetrics, Frame};
use crate::read::slim::DeploymentView;
use crate::reconcile::Settings;
use crate::tenancy;
use snapshot::{Indexed, TargetInfo};

/// A target that was found, with what the decision needs.
#[derive(Debug)]
pub struct Found {
    /// Its place in `spec.metadata.ipaGroup` (status keeps that order).
    pub index: usize,
    pub info: TargetInfo,
    pub deployment: DeploymentView,
    pub policy: ResolvedPolicy,
    pub mode: Mode,
    /// How resizes reach the pods.
    pub update_mode: UpdateMode,
    /// Its pods with their own sizes and resize state (in-place targets only).
    pub pods: Vec<PodView>,
    /// Other autoscalers acting on it, and the `SoleAutoscaler` condition that says so.
    pub conflicts: TargetConflicts,
    pub sole: Want,
}

/// A listed target that is not served this cycle, and why (a `TargetFound` condition's reason and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

/// The cycle's targets, summarized.
#[derive(Debug, Default)]
pub struct Summary {
    pub found: Vec<Found>,
    /// One per entry of `found`, in the same order.
    pub snapshots: Vec<MetricsSnapshot>,
    pub unserved: Vec<Unserved>,
    /// Prometheus queries that failed (their detail is in the log).
    pub metric_errors: Vec<String>,
}

impl Summary {
    /// The refusal messages of cross-namespace targets.
    pub fn refused(&self) -> impl Iterator<Item = &str> {
        self.unserved
            .iter()
            .filter(|u| u.reason == tenancy::REFUSED_REASON)
            .map(|u| u.message.as_str())
    }
}

/// The group's resolved policy: the IPA's interval and sync period win over any per-group one (the loops run per
/// IPA, and the default scale-down window is derived from the sync period).
pub fn policy_of(
    group: &IpaGroup,
    interval: Duration,
    sync: Duration,
    in_place: bool,
) -> ResolvedPolicy {
    let seconds = |d: Duration| Some(d.as_secs().min(u64::from(u32::MAX)) as u32);
    let mut policy = group.policy.clone();
    policy.interval_seconds = seconds(interval);
    policy.sync_period_seconds = seconds(sync);
    policy.resolve_for(in_place)
}

pub fn summarize(ipa: &IPA, mut reading: Reading, frame: Frame, settings: Settings) -> Summary {
    let mut summary = Summary::default();
    let mut seen = BTreeSet::new();
    let events_since = frame.now - settings.events_window as i64;
    for (index, group) in ipa.spec.metadata.ipa_group.iter().enumerate() {
        match find(ipa, index, group, &mut seen, &mut reading, events_since) {
            Ok(found) => summary.found.push(found),
            Err((reason, message)) => summary.unserved.push(Unserved {
                index,
                reason,
                message,
            }),
        }
    }
    other_autoscalers(
        ipa,
        &mut summary.found,
        &reading.autoscalers,
        settings.allow_cross_namespace,
    );
    summary.snapshots = snapshots(&mut summary.found, &reading.queried.metrics, frame);
    summary.metric_errors = reading.queried.errors;
    summary
}

/// One listed target: found, or why not. A Deployment listed twice is served once (the first entry wins).
fn find<'a>(
    ipa: &'a IPA,
    index: usize,
    group: &'a IpaGroup,
    seen: &mut BTreeSet<(&'a str, &'a str)>,
    reading: &mut Reading,
    events_since: i64,
) -> Result<Found, (&'static str, String)> {
    let (ns, name) = (group.namespace.as_str(), group.deployment.as_str());
    if !seen.insert((ns, name)) {
        let why = "this Deployment is listed twice; the first entry wins";
        return Err(("Duplicate", why.into()));
    }
    if !reading.allowed(ns) {
        let ipa_namespace = ipa.namespace().unwrap_or_default();
        let why = tenancy::refusal_message(&ipa_namespace, ns, name);
        return Err((tenancy::REFUSED_REASON, why));
    }
    // Taken, not cloned: a target is decided once per cycle (duplicates were skipped above).
    let deployment = match reading.views.get_mut(ns) {
        Some(NamespaceView {
            deployments: Some(deployments),
            ..
        }) => deployments.remove(name),
        other => {
            let why = other.and_then(|v| v.error.clone()).unwrap_or_default();
            return Err(("ReadFailed", why));
        }
    };
    let Some(deployment) = deployment else {
        return Err(("NotFound", format!("deployment {ns}/{name} does not exist")));
    };
    let spec = &ipa.spec.metadata;
    let update_mode = spec.update_mode_of(group);
    // Pods resized in place may carry a load step while new replicas start (`ipa_core::bridge`).
    let policy = policy_of(
        group,
        spec.interval(),
        spec.sync_period(),
        update_mode.in_place(),
    );
    let view = reading.views.get(ns);
    let managed = policy.containers.clone();
    let mut info = target::target_info(group, &deployment, view, managed, events_since);
    let pods: Vec<PodView> = match view {
        Some(v) if update_mode.in_place() => info
            .pods
            .iter()
            .filter_map(|p| v.pod_views.get(p))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    // In place, the template no longer says what runs: the pods do.
    target::running_sizes(&mut info.containers, &pods);
    Ok(Found {
        index,
        info,
        deployment,
        policy,
        mode: spec.mode_of(group),
        update_mode,
        pods,
        conflicts: TargetConflicts::default(),
        sole: Want::new(conflicts::CONDITION, true, conflicts::REASON_CLEAR, ""),
    })
}

/// Which found targets another autoscaler acts on (an HPA, a VPA, a ScaledObject, an older IPA).
fn other_autoscalers(
    ipa: &IPA,
    found: &mut [Found],
    sources: &conflicts::Sources,
    allow_cross: bool,
) {
    let spec = &ipa.spec.metadata;
    let targets: Vec<Target<'_>> = found
        .iter()
        .map(|f| Target::of(spec, &spec.ipa_group[f.index]))
        .collect();
    let results = conflicts::find_conflicts(&Me::of(ipa), &targets, sources, allow_cross);
    for ((f, target), result) in found.iter_mut().zip(&targets).zip(results) {
        f.sole = conflicts::condition(target, &result);
        f.conflicts = result;
    }
}

/// Each found target's snapshot. Where owner references could not be read, pods are attributed by name.
fn snapshots(found: &mut [Found], metrics: &CycleMetrics, frame: Frame) -> Vec<MetricsSnapshot> {
    for f in found.iter_mut().filter(|f| f.info.pods.is_empty()) {
        let names = metrics.cpu.iter().chain(metrics.memory.iter()).flatten();
        f.info.pods = names
            .filter(|s| s.labels.get("namespace") == Some(&f.info.target.namespace))
            .filter_map(|s| s.labels.get("pod"))
            .filter(|pod| snapshot::pod_name_matches(&f.info.target.deployment, pod))
            .cloned()
            .collect();
    }
    let index = Indexed::new(metrics);
    found
        .iter()
        .map(|f| snapshot::snapshot(&f.info, &index, frame))
        .collect()
}
