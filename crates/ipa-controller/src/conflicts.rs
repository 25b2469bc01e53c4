//! Other autoscalers on IPA's targets: HorizontalPodAutoscalers, VerticalPodAutoscalers, KEDA ScaledObjects and
//! other IPAs that act on the same Deployment.
//!
//! Two autoscalers writing the same field undo each other every sync period, and each one's guardrails then
//! reason about a state the other made. So before a cycle acts, it reads these objects ([`read_conflict_sources`],
//! the IO part) and asks [`find_conflicts`] (pure) which *side* of each target someone else owns: the replicas
//! (an HPA, a ScaledObject) or the requests/limits (a VPA whose `updateMode` is not `Off`). Another IPA owns
//! whatever sides it manages, and of two IPAs the older one keeps working. IPA leaves a side that someone else
//! owns alone, and [`condition`] says which object owns it, the way KEDA refuses a second scaler.
//!
//! Running IPA for one side next to another autoscaler for the other side is an explicit choice in the target's
//! policy (`vertical: false` leaves resources to a VPA); such neighbours are reported, not refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipa_core::Policy;
use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscaler};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::Request;
use kube::{Api, Client, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::conditions::Want;
use crate::crd::{IPA, IpaGroup, IpaMetadata, Mode};
use crate::read::slim::{self, Owner};
use crate::tenancy;

/// Per-group condition: `True` when nobody else acts on what IPA manages for this target.
pub const CONDITION: &str = "SoleAutoscaler";
/// Reason (and Event reason) when another object owns a side IPA would manage.
pub const REASON_CONFLICT: &str = "ConflictingAutoscaler";
/// Reason when nothing else acts on what IPA manages.
pub const REASON_CLEAR: &str = "NoConflict";
/// Reason when no conflict was found but some kind could not be listed: the check is partial.
pub const REASON_INCOMPLETE: &str = "CheckIncomplete";

/// The two things an autoscaler can own on a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sides {
    /// `spec.replicas` (through the scale subresource).
    pub replicas: bool,
    /// The containers' requests and limits.
    pub resources: bool,
}

impl Sides {
    pub const NONE: Self = Self {
        replicas: false,
        resources: false,
    };
    pub const REPLICAS: Self = Self {
        replicas: true,
        resources: false,
    };
    pub const RESOURCES: Self = Self {
        replicas: false,
        resources: true,
    };
    pub const BOTH: Self = Self {
        replicas: true,
        resources: true,
    };

    /// What IPA manages for a target with this policy.
    pub fn of(policy: &Policy) -> Self {
        switches(policy.vertical)
    }

    pub fn and(self, other: Self) -> Self {
        Self {
            replicas: self.replicas && other.replicas,
            resources: self.resources && other.resources,
        }
    }

    pub fn or(self, other: Self) -> Self {
        Self {
            replicas: self.replicas || other.replicas,
            resources: self.resources || other.resources,
        }
    }

    pub fn without(self, other: Self) -> Self {
        Self {
            replicas: self.replicas && !other.replicas,
            resources: self.resources && !other.resources,
        }
    }

    pub fn is_empty(self) -> bool {
        !self.replicas && !self.resources
    }

    /// Words for a message: "replicas", "requests and limits", or both.
    pub fn words(self) -> &'static str {
        match (self.replicas, self.resources) {
            (true, true) => "replicas, requests and limits",
            (true, false) => "replicas",
            (false, true) => "requests and limits",
            (false, false) => "nothing",
        }
    }
}

/// The sides a policy's switches turn on. One function for this IPA's policy and for other IPAs' slim views,
/// so both read the switches alike. There is no switch for the horizontal side yet: IPA always manages replicas.
fn switches(vertical: Option<bool>) -> Sides {
    Sides {
        replicas: true,
        resources: vertical.unwrap_or(true),
    }
}

/// The kinds of object that can act on a Deployment besides this IPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    HorizontalPodAutoscaler,
    ScaledObject,
    VerticalPodAutoscaler,
    Ipa,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Self::ScaledObject => "ScaledObject",
            Self::VerticalPodAutoscaler => "VerticalPodAutoscaler",
            Self::Ipa => "IPA",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscalers",
            Self::ScaledObject => "ScaledObjects",
            Self::VerticalPodAutoscaler => "VerticalPodAutoscalers",
            Self::Ipa => "IPAs",
        }
    }

    /// The sides an object of this kind can own; a list failure of a kind matters only to targets where IPA
    /// manages one of them.
    fn reach(self) -> Sides {
        match self {
            Self::HorizontalPodAutoscaler | Self::ScaledObject => Sides::REPLICAS,
            Self::VerticalPodAutoscaler => Sides::RESOURCES,
            Self::Ipa => Sides::BOTH,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Slim views: the few fields the check reads. Full objects carry managedFields and (for IPAs) a status that
// reaches a megabyte at 1,000 targets; serde skips what is not named here without allocating.

/// Identity, age and controlling owner.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
    #[serde(default)]
    pub owner_references: Option<Vec<Owner>>,
}

impl ObjectMeta {
    fn controlled_by(&self, kind: &str) -> Option<&str> {
        self.owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == kind && o.controller == Some(true))
            .map(|o| o.name.as_str())
    }
}

/// A `targetRef`/`scaleTargetRef` whose fields may be absent (KEDA defaults them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// `autoscaling/v2` HorizontalPodAutoscaler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HpaView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HpaSpecView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpecView {
    #[serde(default)]
    pub scale_target_ref: Option<CrossVersionObjectReference>,
}

/// `autoscaling.k8s.io/v1` VerticalPodAutoscaler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VpaView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VpaSpecView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpaSpecView {
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub update_policy: Option<VpaUpdatePolicy>,
    #[serde(default)]
    pub resource_policy: Option<VpaResourcePolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpaUpdatePolicy {
    #[serde(default)]
    pub update_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpaResourcePolicy {
    #[serde(default)]
    pub container_policies: Vec<VpaContainerPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpaContainerPolicy {
    /// A container name, or `*` for every container without a policy of its own.
    #[serde(default)]
    pub container_name: Option<String>,
    /// `Auto` (the default) or `Off`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `keda.sh/v1alpha1` ScaledObject.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ScaledObjectView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ScaledObjectSpecView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpecView {
    #[serde(default)]
    pub scale_target_ref: Option<TargetRef>,
}

/// Another IPA: its targets, their modes and switches; its status is skipped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpaView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IpaSpecView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpaSpecView {
    #[serde(default)]
    pub metadata: IpaMetadataView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpaMetadataView {
    /// Text, not `crd::Mode`: a mode this build does not know must not make the whole list unreadable.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ipa_group: Vec<IpaGroupView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpaGroupView {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub deployment: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub vertical: Option<bool>,
}

/// Why a list failed, in words fit for a status (the full error goes to the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFailure {
    /// 403: the controller's RBAC lacks `list` (an install older than this check).
    Forbidden,
    /// Anything else: timeout, 5xx, an unreadable body.
    Failed,
}

impl ListFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Failed => "failed, see controller logs",
        }
    }
}

/// A kind that could not be listed; the check is incomplete where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub kind: Kind,
    /// The namespace listed, or `None` for a cluster-wide list (IPAs).
    pub namespace: Option<String>,
    pub failure: ListFailure,
}

/// Everything the check reads in one cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub hpas: Vec<HpaView>,
    pub vpas: Vec<VpaView>,
    pub scaled_objects: Vec<ScaledObjectView>,
    /// Every IPA in the cluster: another namespace's IPA may target the same Deployment.
    pub ipas: Vec<IpaView>,
    /// `ipa.shafinhasnat.me/allow-from` of each target namespace that an IPA of another namespace names (`None`:
    /// absent or unreadable), so such an IPA counts only where it may act.
    pub allow_from: BTreeMap<String, Option<String>>,
    /// Kinds the cluster does not serve (VPA or KEDA not installed): not an error.
    pub absent: BTreeSet<Kind>,
    pub errors: Vec<SourceError>,
    /// API requests made, for the caller's request metrics.
    pub requests: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// The pure part.

/// The IPA being reconciled: excluded from the other IPAs, and its age decides between two IPAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<jiff::Timestamp>,
}

impl<'a> Me<'a> {
    pub fn of(ipa: &'a IPA) -> Self {
        Self {
            namespace: ipa.metadata.namespace.as_deref().unwrap_or_default(),
            name: ipa.metadata.name.as_deref().unwrap_or_default(),
            created: ipa.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// One target as the check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub deployment: &'a str,
    /// What IPA manages here.
    pub sides: Sides,
    /// The containers IPA resizes (`None`: all), to match a VPA's per-container policies.
    pub containers: Option<&'a [String]>,
    /// IPA applies its decisions here (mode `Auto`); in `Recommend` it yields to every other IPA.
    pub applies: bool,
}

impl<'a> Target<'a> {
    pub fn of(spec: &IpaMetadata, group: &'a IpaGroup) -> Self {
        Self {
            namespace: &group.namespace,
            deployment: &group.deployment,
            sides: Sides::of(&group.policy),
            containers: group.policy.containers.as_deref(),
            applies: spec.mode_of(group) == Mode::Auto,
        }
    }
}

/// Another object acting on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The sides it owns that matter here: for a conflict those IPA would manage, for a neighbour the others.
    pub sides: Sides,
    /// A VPA's update mode, or why another IPA goes first.
    pub detail: Option<String>,
}

/// What the check found for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetConflicts {
    /// Objects that own a side IPA would manage: IPA must leave that side alone.
    pub conflicts: Vec<Conflict>,
    /// Objects acting on the side IPA does not manage (the explicit split: e.g. `vertical: false` next to a VPA).
    pub neighbours: Vec<Conflict>,
    /// Kinds that could not be listed for this target: a conflict with them would go unseen.
    pub unchecked: Vec<SourceError>,
}

impl TargetConflicts {
    /// The sides IPA must not touch this cycle.
    pub fn blocked(&self) -> Sides {
        self.conflicts
            .iter()
            .fold(Sides::NONE, |acc, c| acc.or(c.sides))
    }
}

/// Whether `reference` (defaults applied by the caller) names the Deployment `deployment`.
fn names_deployment(api_version: Option<&str>, kind: &str, name: &str, deployment: &str) -> bool {
    // `apps/v1` today; any `apps/` version is the same object. A Deployment-kinded object of another group
    // (`kind: Deployment` of some CRD) is not ours.
    kind == "Deployment"
        && name == deployment
        && api_version.is_none_or(|v| v.is_empty() || v.starts_with("apps/"))
}

/// The VPA mode that changes nothing: it only publishes recommendations.
const VPA_OFF: &str = "Off";

/// The VPA's update mode, `Auto` when absent (VPA's default).
fn vpa_mode(vpa: &VpaView) -> &str {
    vpa.spec
        .update_policy
        .as_ref()
        .and_then(|p| p.update_mode.as_deref())
        .unwrap_or("Auto")
}

/// Whether a VPA changes the resources of any container IPA manages. `Initial` counts: VPA's admission controller
/// sets requests on every new pod, which overrides what IPA writes to the template (or sets in its own webhook).
fn vpa_acts_on(vpa: &VpaView, containers: Option<&[String]>) -> bool {
    if vpa_mode(vpa) == VPA_OFF {
        return false;
    }
    let policies = vpa
        .spec
        .resource_policy
        .as_ref()
        .map(|p| p.container_policies.as_slice())
        .unwrap_or_default();
    let off = |p: &VpaContainerPolicy| p.mode.as_deref() == Some(VPA_OFF);
    let wildcard_off = policies
        .iter()
        .find(|p| p.container_name.as_deref() == Some("*"))
        .is_some_and(off);
    let acts_on = |container: &str| match policies
        .iter()
        .find(|p| p.container_name.as_deref() == Some(container))
    {
        Some(p) => !off(p),
        None => !wildcard_off,
    };
    match containers {
        Some(names) => names.iter().any(|c| acts_on(c)),
        // IPA manages every container, whose names the check does not know: those without a policy of their
        // own follow `*`; the named ones follow theirs.
        None => {
            !wildcard_off
                || policies
                    .iter()
                    .any(|p| p.container_name.as_deref() != Some("*") && !off(p))
        }
    }
}

/// Ordering key of an IPA's age: older first; one without a creation time (never seen from an apiserver) last;
/// then namespace and name, so two IPAs created in the same second still agree on who goes first.
fn age_key<'a>(
    created: Option<jiff::Timestamp>,
    namespace: &'a str,
    name: &'a str,
) -> (bool, Option<jiff::Timestamp>, &'a str, &'a str) {
    (created.is_none(), created, namespace, name)
}

/// Splits an object's `owned` sides into the conflict (what IPA would manage) and the neighbour part.
fn record(found: &mut TargetConflicts, target: &Target<'_>, owned: Sides, conflict: Conflict) {
    let clash = owned.and(target.sides);
    let beside = owned.without(target.sides);
    if !clash.is_empty() {
        found.conflicts.push(Conflict {
            sides: clash,
            ..conflict.clone()
        });
    }
    if !beside.is_empty() {
        found.neighbours.push(Conflict {
            sides: beside,
            ..conflict
        });
    }
}

/// For each target (in order), the other objects acting on it. `allow_cross_namespace` is the controller's
/// `--allow-cross-namespace`: another IPA counts only on targets it may act on under the tenancy rule, so an IPA
/// in a namespace that was not let in cannot block this one.
pub fn find_conflicts(
    me: &Me<'_>,
    targets: &[Target<'_>],
    sources: &Sources,
    allow_cross_namespace: bool,
) -> Vec<TargetConflicts> {
    // KEDA drives its ScaledObject through an HPA it owns (`keda-hpa-<name>`): name the ScaledObject, not both.
    let scaled_objects: BTreeSet<(&str, &str)> = sources
        .scaled_objects
        .iter()
        .map(|s| (s.metadata.namespace.as_str(), s.metadata.name.as_str()))
        .collect();
    targets
        .iter()
        .map(|t| {
            let mut found = TargetConflicts::default();
            hpas(&mut found, t, sources, &scaled_objects);
            scaled_objects_on(&mut found, t, sources);
            vpas(&mut found, t, sources);
            other_ipas(&mut found, t, me, sources, allow_cross_namespace);
            found.unchecked = sources
                .errors
                .iter()
                .filter(|e| e.namespace.as_deref().is_none_or(|ns| ns == t.namespace))
                .filter(|e| !e.kind.reach().and(t.sides).is_empty())
                .cloned()
                .collect();
            found
        })
        .collect()
}

/// HPAs on the target, except those KEDA owns for a ScaledObject that was listed.
fn hpas(
    found: &mut TargetConflicts,
    t: &Target<'_>,
    sources: &Sources,
    scaled_objects: &BTreeSet<(&str, &str)>,
) {
    for hpa in sources
        .hpas
        .iter()
        .filter(|h| h.metadata.namespace == t.namespace)
    {
        let Some(r) = &hpa.spec.scale_target_ref else {
            continue;
        };
        if !names_deployment(r.api_version.as_deref(), &r.kind, &r.name, t.deployment) {
            continue;
        }
        if let Some(owner) = hpa.metadata.controlled_by("ScaledObject")
            && scaled_objects.contains(&(t.namespace, owner))
        {
            continue;
        }
        record(
            found,
            t,
            Sides::REPLICAS,
            conflict(Kind::HorizontalPodAutoscaler, &hpa.metadata, None),
        );
    }
}

fn scaled_objects_on(found: &mut TargetConflicts, t: &Target<'_>, sources: &Sources) {
    for so in sources
        .scaled_objects
        .iter()
        .filter(|s| s.metadata.namespace == t.namespace)
    {
        let Some(r) = &so.spec.scale_target_ref else {
            continue;
        };
        // KEDA's defaults: `apps/v1`, `Deployment`.
        let kind = r
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("Deployment");
        if names_deployment(r.api_version.as_deref(), kind, &r.name, t.deployment) {
            record(
                found,
                t,
                Sides::REPLICAS,
                conflict(Kind::ScaledObject, &so.metadata, None),
            );
        }
    }
}

fn vpas(found: &mut TargetConflicts, t: &Target<'_>, sources: &Sources) {
    for vpa in sources
        .vpas
        .iter()
        .filter(|v| v.metadata.namespace == t.namespace)
    {
        let Some(r) = &vpa.spec.target_ref else {
            continue;
        };
        let kind = r.kind.as_deref().unwrap_or_default();
        if names_deployment(r.api_version.as_deref(), kind, &r.name, t.deployment)
            && vpa_acts_on(vpa, t.containers)
        {
            let detail = format!("updateMode {}", vpa_mode(vpa));
            record(
                found,
                t,
                Sides::RESOURCES,
                conflict(Kind::VerticalPodAutoscaler, &vpa.metadata, Some(detail)),
            );
        }
    }
}

/// Other IPAs listing the target, where the tenancy rule lets them act: the older one (or one that applies, when
/// this one only recommends) keeps the shared sides.
fn other_ipas(
    found: &mut TargetConflicts,
    t: &Target<'_>,
    me: &Me<'_>,
    sources: &Sources,
    allow_cross: bool,
) {
    let my_age = age_key(me.created, me.namespace, me.name);
    for other in &sources.ipas {
        let m = &other.metadata;
        if (m.namespace.as_str(), m.name.as_str()) == (me.namespace, me.name) {
            continue;
        }
        let allow_from = sources
            .allow_from
            .get(t.namespace)
            .and_then(|a| a.as_deref());
        if !tenancy::access(&m.namespace, t.namespace, allow_from, allow_cross).allowed() {
            continue;
        }
        let spec = &other.spec.metadata;
        // An IPA that lists the target twice acts on the union of both entries.
        let owned = spec
            .ipa_group
            .iter()
            .filter(|g| g.namespace == t.namespace && g.deployment == t.deployment)
            .filter(|g| {
                g.mode.as_deref().or(spec.mode.as_deref()) != Some(Mode::Recommend.as_str())
            })
            .fold(Sides::NONE, |acc, g| acc.or(switches(g.vertical)));
        if owned.is_empty() {
            continue;
        }
        let theirs = age_key(
            m.creation_timestamp.as_ref().map(|t| t.0),
            &m.namespace,
            &m.name,
        );
        // The older IPA keeps working and the newer one yields; both sides compute the same answer from
        // the same objects. An IPA that only recommends yields to every IPA that applies.
        let why = if theirs < my_age {
            Some("it is older")
        } else if !t.applies {
            Some("this IPA only recommends")
        } else {
            None
        };
        match why {
            Some(why) => record(
                found,
                t,
                owned,
                conflict(Kind::Ipa, m, Some(why.to_string())),
            ),
            None => {
                // It yields the shared sides to this IPA; what it manages beyond them is a neighbour.
                let beside = owned.without(t.sides);
                if !beside.is_empty() {
                    found.neighbours.push(Conflict {
                        sides: beside,
                        ..conflict(Kind::Ipa, m, None)
                    });
                }
            }
        }
    }
}

fn conflict(kind: Kind, meta: &ObjectMeta, detail: Option<String>) -> Conflict {
    Conflict {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        sides: Sides::NONE,
        detail,
    }
}

/// One sentence about another object on `target`: what it does, and (for a conflict) what IPA leaves alone.
fn sentence(c: &Conflict, target: &Target<'_>, is_conflict: bool) -> String {
    let who = format!("{} {}/{}", c.kind.as_str(), c.namespace, c.name);
    let what = format!("deployment {}/{}", target.namespace, target.deployment);
    let does = match c.kind {
        Kind::HorizontalPodAutoscaler => format!("{who} already scales {what}"),
        Kind::ScaledObject => format!("KEDA {who} already scales {what}"),
        Kind::VerticalPodAutoscaler => format!(
            "{who} ({}) already sets the requests of {what}",
            c.detail.as_deref().unwrap_or("updateMode Auto")
        ),
        Kind::Ipa => match &c.detail {
            Some(why) => format!(
                "{who} already manages the {} of {what} ({why})",
                c.sides.words()
            ),
            None => format!("{who} manages the {} of {what}", c.sides.words()),
        },
    };
    if !is_conflict {
        return does;
    }
    let mut out = format!("{does}; IPA leaves its {} alone", c.sides.words());
    // The one explicit switch there is: saying so makes the split a choice rather than a standing refusal.
    if c.sides.resources && c.kind == Kind::VerticalPodAutoscaler {
        out.push_str(" (set vertical: false on this target to leave them to it on purpose)");
    }
    out
}

/// The group's [`CONDITION`]: `False` naming every object that owns a side IPA would manage; `True` otherwise,
/// naming neighbours on the other side and kinds that could not be checked.
pub fn condition(target: &Target<'_>, found: &TargetConflicts) -> Want {
    let unchecked = found
        .unchecked
        .iter()
        .map(|e| match &e.namespace {
            Some(ns) => format!(
                "Could not check for {} in {ns} ({})",
                e.kind.plural(),
                e.failure.as_str()
            ),
            None => format!(
                "Could not check for {} ({})",
                e.kind.plural(),
                e.failure.as_str()
            ),
        })
        .collect::<Vec<_>>();
    if !found.conflicts.is_empty() {
        let mut parts: Vec<String> = found
            .conflicts
            .iter()
            .map(|c| sentence(c, target, true))
            .collect();
        parts.extend(unchecked);
        return Want::new(CONDITION, false, REASON_CONFLICT, parts.join(". "));
    }
    let mut parts = vec![format!(
        "IPA manages the {} of deployment {}/{}",
        target.sides.words(),
        target.namespace,
        target.deployment
    )];
    parts.extend(found.neighbours.iter().map(|c| sentence(c, target, false)));
    let reason = if unchecked.is_empty() {
        REASON_CLEAR
    } else {
        REASON_INCOMPLETE
    };
    parts.extend(unchecked);
    Want::new(CONDITION, true, reason, parts.join(". "))
}

// ---------------------------------------------------------------------------------------------------------------
// The IO part.

fn vpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler"),
        "verticalpodautoscalers",
    )
}

fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// How a failed list is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 404: the apiserver does not serve this resource (the CRD is not installed). For a group it does not know
    /// it answers a plain-text `404 page not found`, which kube turns into a `Status` with code 404 but no
    /// `NotFound` reason, so the code decides. A list in a namespace that does not exist is an empty list, not
    /// a 404, so this never hides a missing namespace.
    Absent,
    Failed(ListFailure),
}

fn classify(err: &kube::Error) -> Outcome {
    match err {
        kube::Error::Api(status) if status.code == 404 || status.is_not_found() => Outcome::Absent,
        kube::Error::Api(status) if status.code == 403 || status.is_forbidden() => {
            Outcome::Failed(ListFailure::Forbidden)
        }
        _ => Outcome::Failed(ListFailure::Failed),
    }
}

/// Gives the views' metadata to the shared list code, which fills in a missing namespace.
trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! has_meta {
    ($($view:ty),*) => {
        $(impl HasMeta for $view {
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        })*
    };
}
has_meta!(HpaView, VpaView, ScaledObjectView, IpaView);

/// Every page of the collection at `url`, as slim items, each in `namespace` where the list left it out.
async fn list_all<T: DeserializeOwned + HasMeta + Send>(
    client: &Client,
    url: String,
    namespace: Option<&str>,
    requests: &mut u64,
) -> Result<Vec<T>, kube::Error> {
    let mut items: Vec<T> = Vec::new();
    let keep = |mut item: T| {
        if let Some(ns) = namespace
            && item.meta_mut().namespace.is_empty()
        {
            item.meta_mut().namespace = ns.to_string();
        }
        items.push(item);
    };
    slim::list_every_page(client, &Request::new(url), false, requests, keep).await?;
    Ok(items)
}

/// How long an autoscaler CRD found missing (a 404) is not asked for again: VPA and KEDA are rarely installed,
/// and without this every cycle of every IPA would ask twice per namespace only to hear 404. One installed
/// meanwhile counts from the next cycle after the pause.
pub const ABSENT_RECHECK: Duration = Duration::from_secs(300);

/// The autoscaler kinds the apiserver did not serve, and until when that answer stands. Shared by every cycle.
#[derive(Debug, Default)]
pub struct AbsentKinds {
    until: Mutex<HashMap<Kind, Instant>>,
}

impl AbsentKinds {
    fn known_absent(&self, kind: Kind) -> bool {
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        until.get(&kind).is_some_and(|t| Instant::now() < *t)
    }

    fn record(&self, kind: Kind, absent: bool) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if absent {
            until.insert(kind, Instant::now() + ABSENT_RECHECK);
        } else {
            until.remove(&kind);
        }
    }
}

/// One kind, listed namespace by namespace.
struct Listing<T> {
    items: Vec<T>,
    absent: bool,
    errors: Vec<SourceError>,
    requests: u64,
}

async fn list_kind<T: DeserializeOwned + HasMeta + Send>(
    client: &Client,
    kind: Kind,
    url_of: impl Fn(&str) -> String,
    namespaces: &BTreeSet<&str>,
    absent: &AbsentKinds,
) -> Listing<T> {
    let mut out = Listing {
        items: Vec::new(),
        absent: absent.known_absent(kind),
        errors: Vec::new(),
        requests: 0,
    };
    if out.absent {
        return out;
    }
    for ns in namespaces {
        match list_all::<T>(client, url_of(ns), Some(ns), &mut out.requests).await {
            Ok(items) => out.items.extend(items),
            Err(e) => match classify(&e) {
                Outcome::Absent => {
                    // A resource type is served cluster-wide or not at all: no need to ask the other namespaces.
                    debug!(
                        kind = kind.as_str(),
                        "not served by the apiserver; nothing to check"
                    );
                    out.absent = true;
                    out.items.clear();
                    out.errors.clear();
                    break;
                }
                Outcome::Failed(failure) => {
                    warn!(kind = kind.as_str(), namespace = ns, error = %e, "cannot list; conflicts with it go unseen this cycle");
                    out.errors.push(SourceError {
                        kind,
                        namespace: Some((*ns).to_string()),
                        failure,
                    });
                }
            },
        }
    }
    absent.record(kind, out.absent);
    out
}

/// Reads what [`find_conflicts`] needs: HPAs, VPAs and ScaledObjects in `namespaces` (the namespaces of the
/// targets the IPA may act on — never pass a refused one), every IPA in the cluster, and the `allow-from`
/// annotation of the target namespaces that an IPA of another namespace names. VPA and KEDA count only where
/// their CRDs are installed. A list that fails does not stop the cycle: the rest is returned with a
/// [`SourceError`] per failed list.
pub async fn read_conflict_sources(
    client: &Client,
    namespaces: &BTreeSet<&str>,
    absent: &AbsentKinds,
) -> Sources {
    let vpa = vpa_resource();
    let keda = scaled_object_resource();
    let (hpas, vpas, scaled_objects, ipas) = futures::join!(
        list_kind::<HpaView>(
            client,
            Kind::HorizontalPodAutoscaler,
            |ns| HorizontalPodAutoscaler::url_path(&(), Some(ns)),
            namespaces,
            absent,
        ),
        list_kind::<VpaView>(
            client,
            Kind::VerticalPodAutoscaler,
            |ns| DynamicObject::url_path(&vpa, Some(ns)),
            namespaces,
            absent,
        ),
        list_kind::<ScaledObjectView>(
            client,
            Kind::ScaledObject,
            |ns| DynamicObject::url_path(&keda, Some(ns)),
            namespaces,
            absent,
        ),
        async {
            let mut requests = 0;
            let listed =
                list_all::<IpaView>(client, IPA::url_path(&(), None), None, &mut requests).await;
            (listed, requests)
        },
    );
    let mut sources = merge(hpas, vpas, scaled_objects);
    sources.requests += ipas.1;
    ipas_into(&mut sources, ipas.0);
    let mut gets = 0;
    sources.allow_from = read_allow_from(client, &sources, namespaces, &mut gets).await;
    sources.requests += gets;
    sources
}

/// The namespaced lists, as one [`Sources`] (IPAs and `allow-from` still to come).
fn merge(
    hpas: Listing<HpaView>,
    vpas: Listing<VpaView>,
    scaled_objects: Listing<ScaledObjectView>,
) -> Sources {
    let mut sources = Sources {
        requests: hpas.requests + vpas.requests + scaled_objects.requests,
        ..Sources::default()
    };
    for (kind, absent, errors) in [
        (Kind::HorizontalPodAutoscaler, hpas.absent, hpas.errors),
        (Kind::VerticalPodAutoscaler, vpas.absent, vpas.errors),
        (
            Kind::ScaledObject,
            scaled_objects.absent,
            scaled_objects.errors,
        ),
    ] {
        if absent {
            sources.absent.insert(kind);
        }
        sources.errors.extend(errors);
    }
    sources.hpas = hpas.items;
    sources.vpas = vpas.items;
    sources.scaled_objects = scaled_objects.items;
    sources
}

/// Every IPA in the cluster, or the failure to list them. The IPA CRD is this controller's own, so even a 404
/// is a failure here.
fn ipas_into(sources: &mut Sources, listed: Result<Vec<IpaView>, kube::Error>) {
    match listed {
        Ok(items) => sources.ipas = items,
        Err(e) => {
            let failure = match classify(&e) {
                Outcome::Failed(failure) => failure,
                Outcome::Absent => ListFailure::Failed,
            };
            warn!(error = %e, "cannot list IPAs; a second IPA on the same deployment goes unseen this cycle");
            sources.errors.push(SourceError {
                kind: Kind::Ipa,
                namespace: None,
                failure,
            });
        }
    }
}

/// The `allow-from` annotation of the target namespaces another namespace's IPA names. Such an IPA acts on a
/// target only if the target's namespace lets it in; the answer is read only where such an IPA exists (rare),
/// as the tenancy check does for the IPA's own targets.
async fn read_allow_from(
    client: &Client,
    sources: &Sources,
    namespaces: &BTreeSet<&str>,
    requests: &mut u64,
) -> BTreeMap<String, Option<String>> {
    let claimed: BTreeSet<&str> = sources
        .ipas
        .iter()
        .flat_map(|ipa| {
            ipa.spec
                .metadata
                .ipa_group
                .iter()
                .filter(move |g| g.namespace != ipa.metadata.namespace)
                .map(|g| g.namespace.as_str())
        })
        .filter(|ns| namespaces.contains(ns))
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    let mut allow_from = BTreeMap::new();
    for ns in claimed {
        *requests += 1;
        let annotation = match api.get_metadata_opt(ns).await {
            Ok(meta) => meta.and_then(|m| {
                m.metadata
                    .annotations
                    .and_then(|mut a| a.remove(tenancy::ALLOW_FROM_ANNOTATION))
            }),
            Err(e) => {
                // Unreadable means not opted in, as in the tenancy check: such an IPA then does not count.
                warn!(namespace = ns, error = %e, "cannot read the namespace's allow-from annotation");
                None
            }
        };
        allow_from.insert(ns.to_string(), annotation);
    }
    allow_from
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use serde_json::{Value, json};

    fn view<T: DeserializeOwned + Default>(value: Value) -> T {
        // A fixture that does not parse is a broken test; an empty view then fails its assertions loudly.
        serde_json::from_value(value).unwrap_or_default()
    }

    fn meta(ns: &str, name: &str) -> Value {
        json!({ "namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z" })
    }

    fn hpa(ns: &str, name: &str, kind: &str, target: &str) -> HpaView {
        view(json!({ "metadata": meta(ns, name),
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": kind, "name": target },
                      "minReplicas": 1, "maxReplicas": 5 } }))
    }

    fn vpa(ns: &str, name: &str, target: &str, mode: Option<&str>) -> VpaView {
        let mut v = json!({ "metadata": meta(ns, name),
            "spec": { "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": target } } });
        if let Some(mode) = mode {
            v["spec"]["updatePolicy"] = json!({ "updateMode": mode });
        }
        view(v)
    }

    fn scaled_object(ns: &str, name: &str, target_ref: Value) -> ScaledObjectView {
        view(json!({ "metadata": meta(ns, name), "spec": { "scaleTargetRef": target_ref } }))
    }

    fn ipa(ns: &str, name: &str, created: &str, groups: Value) -> IpaView {
        view(
            json!({ "metadata": { "namespace": ns, "name": name, "creationTimestamp": created },
            "spec": { "metadata": { "prometheusUri": "http://p", "ipaGroup": groups } },
            "status": { "groups": [{ "namespace": ns, "deployment": "web", "mode": "Auto" }] } }),
        )
    }

    fn at(text: &str) -> Option<jiff::Timestamp> {
        text.parse().ok()
    }

    const ME: Me<'static> = Me {
        namespace: "default",
        name: "mine",
        created: None,
    };

    fn me_at(created: &str) -> Me<'static> {
        Me {
            created: at(created),
            ..ME
        }
    }

    fn web(sides: Sides) -> Target<'static> {
        Target {
            namespace: "default",
            deployment: "web",
            sides,
            containers: None,
            applies: true,
        }
    }

    fn one(me: &Me<'_>, target: Target<'_>, sources: &Sources) -> TargetConflicts {
        find_conflicts(me, &[target], sources, false)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    fn names(list: &[Conflict]) -> Vec<(Kind, String, Sides)> {
        list.iter()
            .map(|c| (c.kind, format!("{}/{}", c.namespace, c.name), c.sides))
            .collect()
    }

    #[test]
    fn sides_follow_the_vertical_switch() {
        assert_eq!(Sides::of(&Policy::default()), Sides::BOTH);
        let vertical_off = Policy {
            vertical: Some(false),
            ..Policy::default()
        };
        assert_eq!(Sides::of(&vertical_off), Sides::REPLICAS);
    }

    #[test]
    fn an_hpa_owns_the_replicas_of_its_deployment_only() {
        let sources = Sources {
            hpas: vec![
                hpa("default", "web-hpa", "Deployment", "web"),
                hpa("default", "api-hpa", "Deployment", "api"),
                hpa("default", "web-sts", "StatefulSet", "web"),
                hpa("other", "web-elsewhere", "Deployment", "web"),
            ],
            ..Sources::default()
        };
        let found = one(&ME, web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![(
                Kind::HorizontalPodAutoscaler,
                "default/web-hpa".into(),
                Sides::REPLICAS
            )]
        );
        assert_eq!(found.blocked(), Sides::REPLICAS);
        let want = condition(&web(Sides::BOTH), &found);
        assert!(!want.ok);
        assert_eq!(want.reason, REASON_CONFLICT);
        assert_eq!(
            want.message,
            "HorizontalPodAutoscaler default/web-hpa already scales deployment default/web; IPA leaves its \
             replicas alone"
        );
        // Same name, another namespace: the HPA's scaleTargetRef is always in its own namespace.
        let elsewhere = Target {
            namespace: "third",
            ..web(Sides::BOTH)
        };
        assert!(one(&ME, elsewhere, &sources).conflicts.is_empty());
    }

    #[test]
    fn an_hpa_conflicts_only_where_ipa_manages_replicas() {
        let sources = Sources {
            hpas: vec![hpa("default", "web-hpa", "Deployment", "web")],
            ..Sources::default()
        };
        // Vertical-only (no switch for it yet, but the rule is ready): the HPA is a neighbour, not a conflict.
        let found = one(&ME, web(Sides::RESOURCES), &sources);
        assert!(found.conflicts.is_empty());
        assert_eq!(found.neighbours.len(), 1);
        let want = condition(&web(Sides::RESOURCES), &found);
        assert!(want.ok);
        assert_eq!(want.reason, REASON_CLEAR);
        assert!(want.message.contains("IPA manages the requests and limits"));
        assert!(
            want.message
                .contains("HorizontalPodAutoscaler default/web-hpa already scales")
        );
    }

    #[test]
    fn a_reference_of_another_api_group_is_not_the_deployment() {
        let mut foreign = hpa("default", "rollout", "Deployment", "web");
        if let Some(r) = foreign.spec.scale_target_ref.as_mut() {
            r.api_version = Some("example.com/v1".into());
        }
        let sources = Sources {
            hpas: vec![foreign],
            ..Sources::default()
        };
        assert!(one(&ME, web(Sides::BOTH), &sources).conflicts.is_empty());
    }

    #[test]
    fn a_scaled_object_defaults_to_a_deployment_and_stands_for_its_hpa() {
        let keda_hpa: HpaView = view(json!({
            "metadata": { "namespace": "default", "name": "keda-hpa-web-so", "ownerReferences": [
                { "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "web-so", "uid": "u", "controller": true }] },
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" } } }));
        let mut sources = Sources {
            hpas: vec![keda_hpa],
            scaled_objects: vec![
                scaled_object("default", "web-so", json!({ "name": "web" })),
                scaled_object(
                    "default",
                    "job-so",
                    json!({ "name": "web", "kind": "StatefulSet", "apiVersion": "apps/v1" }),
                ),
            ],
            ..Sources::default()
        };
        let found = one(&ME, web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![(Kind::ScaledObject, "default/web-so".into(), Sides::REPLICAS)]
        );
        let want = condition(&web(Sides::BOTH), &found);
        assert!(want.message.starts_with(
            "KEDA ScaledObject default/web-so already scales deployment default/web; IPA leaves its replicas alone"
        ));
        // Without the ScaledObjects (not installed, or not listable), KEDA's HPA still shows who scales.
        sources.scaled_objects.clear();
        let found = one(&ME, web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![(
                Kind::HorizontalPodAutoscaler,
                "default/keda-hpa-web-so".into(),
                Sides::REPLICAS
            )]
        );
    }

    #[test]
    fn a_vpa_owns_resources_unless_it_is_off() {
        for (mode, conflicts) in [
            (None, true),
            (Some("Auto"), true),
            (Some("Recreate"), true),
            (Some("InPlaceOrRecreate"), true),
            // Initial still sizes every new pod at admission, over what IPA sets.
            (Some("Initial"), true),
            (Some("Off"), false),
        ] {
            let sources = Sources {
                vpas: vec![vpa("default", "web-vpa", "web", mode)],
                ..Sources::default()
            };
            let found = one(&ME, web(Sides::BOTH), &sources);
            assert_eq!(!found.conflicts.is_empty(), conflicts, "{mode:?}");
            if conflicts {
                assert_eq!(found.blocked(), Sides::RESOURCES, "{mode:?}");
                let want = condition(&web(Sides::BOTH), &found);
                assert_eq!(
                    want.message,
                    format!(
                        "VerticalPodAutoscaler default/web-vpa (updateMode {}) already sets the requests of \
                         deployment default/web; IPA leaves its requests and limits alone (set vertical: false on \
                         this target to leave them to it on purpose)",
                        mode.unwrap_or("Auto")
                    )
                );
            }
        }
    }

    #[test]
    fn vertical_off_next_to_a_vpa_is_the_explicit_split() {
        let sources = Sources {
            vpas: vec![vpa("default", "web-vpa", "web", Some("Auto"))],
            ..Sources::default()
        };
        let found = one(&ME, web(Sides::REPLICAS), &sources);
        assert!(found.conflicts.is_empty());
        assert_eq!(found.blocked(), Sides::NONE);
        let want = condition(&web(Sides::REPLICAS), &found);
        assert!(want.ok);
        assert_eq!(
            want.message,
            "IPA manages the replicas of deployment default/web. VerticalPodAutoscaler default/web-vpa (updateMode \
             Auto) already sets the requests of deployment default/web"
        );
    }

    #[test]
    fn a_vpa_with_its_containers_off_leaves_ipas_containers_alone() {
        let mut v = vpa("default", "web-vpa", "web", Some("Auto"));
        v.spec.resource_policy = Some(view(json!({ "containerPolicies": [
            { "containerName": "app", "mode": "Off" },
            { "containerName": "sidecar", "mode": "Auto" }] })));
        let sources = Sources {
            vpas: vec![v.clone()],
            ..Sources::default()
        };
        let app = ["app".to_string()];
        let sidecar = ["sidecar".to_string()];
        // `app` is off in the VPA; IPA managing only `app` is alone on it.
        let only_app = Target {
            containers: Some(&app),
            ..web(Sides::BOTH)
        };
        assert!(one(&ME, only_app, &sources).conflicts.is_empty());
        let only_sidecar = Target {
            containers: Some(&sidecar),
            ..web(Sides::BOTH)
        };
        assert_eq!(one(&ME, only_sidecar, &sources).blocked(), Sides::RESOURCES);
        // IPA managing every container shares `sidecar` (and any unnamed one) with the VPA.
        assert_eq!(
            one(&ME, web(Sides::BOTH), &sources).blocked(),
            Sides::RESOURCES
        );
        // Every container off (`*` and the named ones): the VPA only recommends.
        v.spec.resource_policy = Some(view(json!({ "containerPolicies": [
            { "containerName": "*", "mode": "Off" }, { "containerName": "app", "mode": "Off" }] })));
        let sources = Sources {
            vpas: vec![v],
            ..Sources::default()
        };
        assert!(one(&ME, web(Sides::BOTH), &sources).conflicts.is_empty());
    }

    #[test]
    fn of_two_ipas_the_older_keeps_working() {
        let groups = json!([{ "namespace": "default", "deployment": "web" }]);
        let sources = Sources {
            ipas: vec![
                ipa("default", "older", "2026-01-01T00:00:00Z", groups.clone()),
                ipa("default", "mine", "2026-01-02T00:00:00Z", groups.clone()),
            ],
            ..Sources::default()
        };
        let me = me_at("2026-01-02T00:00:00Z");
        let found = one(&me, web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![(Kind::Ipa, "default/older".into(), Sides::BOTH)]
        );
        let want = condition(&web(Sides::BOTH), &found);
        assert_eq!(
            want.message,
            "IPA default/older already manages the replicas, requests and limits of deployment default/web (it is \
             older); IPA leaves its replicas, requests and limits alone"
        );
        // Seen from the older one, the newer yields: nothing to refuse, and the newer one is not listed as acting.
        let older = Me {
            namespace: "default",
            name: "older",
            created: at("2026-01-01T00:00:00Z"),
        };
        let found = one(&older, web(Sides::BOTH), &sources);
        assert_eq!(found, TargetConflicts::default());
    }

    #[test]
    fn ipas_created_in_the_same_second_are_ordered_by_name() {
        let groups = json!([{ "namespace": "default", "deployment": "web" }]);
        let same = "2026-01-01T00:00:00Z";
        let sources = Sources {
            ipas: vec![
                ipa("default", "alpha", same, groups.clone()),
                ipa("default", "mine", same, groups.clone()),
                ipa("default", "zulu", same, groups),
            ],
            ..Sources::default()
        };
        let found = one(&me_at(same), web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![(Kind::Ipa, "default/alpha".into(), Sides::BOTH)]
        );
    }

    #[test]
    fn an_ipa_that_only_recommends_yields_and_is_yielded_to() {
        let recommending =
            json!([{ "namespace": "default", "deployment": "web", "mode": "Recommend" }]);
        let sources = Sources {
            ipas: vec![ipa(
                "default",
                "older",
                "2026-01-01T00:00:00Z",
                recommending,
            )],
            ..Sources::default()
        };
        let me = me_at("2026-01-02T00:00:00Z");
        assert!(one(&me, web(Sides::BOTH), &sources).conflicts.is_empty());
        // The IPA-wide mode counts too, and a group's own mode wins over it.
        let mut wide = ipa(
            "default",
            "older",
            "2026-01-01T00:00:00Z",
            json!([{ "namespace": "default", "deployment": "web" }]),
        );
        wide.spec.metadata.mode = Some("Recommend".into());
        let sources = Sources {
            ipas: vec![wide.clone()],
            ..Sources::default()
        };
        assert!(one(&me, web(Sides::BOTH), &sources).conflicts.is_empty());
        wide.spec.metadata.ipa_group[0].mode = Some("Auto".into());
        let sources = Sources {
            ipas: vec![wide],
            ..Sources::default()
        };
        assert_eq!(one(&me, web(Sides::BOTH), &sources).conflicts.len(), 1);
        // This IPA only recommends: a newer IPA that applies goes first.
        let newer = Sources {
            ipas: vec![ipa(
                "default",
                "newer",
                "2026-01-03T00:00:00Z",
                json!([{ "namespace": "default", "deployment": "web" }]),
            )],
            ..Sources::default()
        };
        let recommend_only = Target {
            applies: false,
            ..web(Sides::BOTH)
        };
        let found = one(&me, recommend_only, &newer);
        assert_eq!(found.conflicts.len(), 1);
        assert_eq!(
            found.conflicts[0].detail.as_deref(),
            Some("this IPA only recommends")
        );
    }

    #[test]
    fn ipas_share_a_deployment_by_sides() {
        let vertical_off =
            json!([{ "namespace": "default", "deployment": "web", "vertical": false }]);
        let sources = Sources {
            ipas: vec![ipa(
                "default",
                "older",
                "2026-01-01T00:00:00Z",
                vertical_off,
            )],
            ..Sources::default()
        };
        let me = me_at("2026-01-02T00:00:00Z");
        let found = one(&me, web(Sides::BOTH), &sources);
        assert_eq!(found.blocked(), Sides::REPLICAS);
        // The older IPA, seen from there: the newer one yields the replicas and keeps the resources.
        let both = json!([{ "namespace": "default", "deployment": "web" }]);
        let sources = Sources {
            ipas: vec![ipa("default", "newer", "2026-01-03T00:00:00Z", both)],
            ..Sources::default()
        };
        let found = one(&me, web(Sides::REPLICAS), &sources);
        assert!(found.conflicts.is_empty());
        assert_eq!(
            names(&found.neighbours),
            vec![(Kind::Ipa, "default/newer".into(), Sides::RESOURCES)]
        );
    }

    #[test]
    fn another_namespaces_ipa_counts_only_where_it_may_act() {
        let claim = json!([{ "namespace": "default", "deployment": "web" }]);
        let mut sources = Sources {
            ipas: vec![ipa("tenant-b", "older", "2026-01-01T00:00:00Z", claim)],
            ..Sources::default()
        };
        let me = me_at("2026-01-02T00:00:00Z");
        // Not let in: it never acts on default/web, so it cannot block this IPA.
        assert!(one(&me, web(Sides::BOTH), &sources).conflicts.is_empty());
        // The admin flag lets every IPA in.
        let admin = find_conflicts(&me, &[web(Sides::BOTH)], &sources, true);
        assert_eq!(admin.first().map(|f| f.conflicts.len()), Some(1));
        // The namespace lets tenant-b in.
        sources
            .allow_from
            .insert("default".into(), Some("x, tenant-b".into()));
        assert_eq!(one(&me, web(Sides::BOTH), &sources).blocked(), Sides::BOTH);
    }

    #[test]
    fn this_ipa_and_other_targets_are_not_conflicts() {
        let sources = Sources {
            ipas: vec![
                ipa(
                    "default",
                    "mine",
                    "2026-01-01T00:00:00Z",
                    json!([{ "namespace": "default", "deployment": "web" },
                           { "namespace": "default", "deployment": "web" }]),
                ),
                ipa(
                    "default",
                    "api",
                    "2025-01-01T00:00:00Z",
                    json!([{ "namespace": "default", "deployment": "api" },
                           { "namespace": "other", "deployment": "web" }]),
                ),
            ],
            ..Sources::default()
        };
        let found = one(&me_at("2026-01-01T00:00:00Z"), web(Sides::BOTH), &sources);
        assert_eq!(found, TargetConflicts::default());
    }

    #[test]
    fn failed_lists_make_the_check_incomplete_where_they_apply() {
        let sources = Sources {
            errors: vec![
                SourceError {
                    kind: Kind::HorizontalPodAutoscaler,
                    namespace: Some("default".into()),
                    failure: ListFailure::Forbidden,
                },
                SourceError {
                    kind: Kind::HorizontalPodAutoscaler,
                    namespace: Some("other".into()),
                    failure: ListFailure::Failed,
                },
                SourceError {
                    kind: Kind::VerticalPodAutoscaler,
                    namespace: Some("default".into()),
                    failure: ListFailure::Failed,
                },
            ],
            ..Sources::default()
        };
        let found = one(&ME, web(Sides::REPLICAS), &sources);
        // Only the HPA list of this namespace matters to a target whose resources IPA does not manage.
        assert_eq!(found.unchecked.len(), 1);
        let want = condition(&web(Sides::REPLICAS), &found);
        assert!(want.ok);
        assert_eq!(want.reason, REASON_INCOMPLETE);
        assert_eq!(
            want.message,
            "IPA manages the replicas of deployment default/web. Could not check for HorizontalPodAutoscalers in \
             default (forbidden)"
        );
        let clear = condition(&web(Sides::REPLICAS), &TargetConflicts::default());
        assert_eq!((clear.ok, clear.reason.as_str()), (true, REASON_CLEAR));
    }

    #[test]
    fn every_conflict_is_named_in_one_message() {
        let sources = Sources {
            hpas: vec![hpa("default", "web-hpa", "Deployment", "web")],
            vpas: vec![vpa("default", "web-vpa", "web", None)],
            ..Sources::default()
        };
        let found = one(&ME, web(Sides::BOTH), &sources);
        assert_eq!(found.blocked(), Sides::BOTH);
        let want = condition(&web(Sides::BOTH), &found);
        assert!(
            want.message
                .contains("HorizontalPodAutoscaler default/web-hpa")
        );
        assert!(
            want.message
                .contains(". VerticalPodAutoscaler default/web-vpa")
        );
    }

    #[test]
    fn views_read_only_their_fields_from_full_objects() -> Result<(), serde_json::Error> {
        let page: slim::Page<HpaView> = serde_json::from_str(
            r#"{"kind":"HorizontalPodAutoscalerList","apiVersion":"autoscaling/v2","metadata":{"continue":"c"},
              "items":[{"metadata":{"name":"h","namespace":"n","uid":"u","creationTimestamp":"2026-01-01T00:00:00Z",
                "managedFields":[{"manager":"kubectl","operation":"Update","fieldsV1":{"f:spec":{}}}]},
                "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"maxReplicas":5,
                  "metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":60}}}]},
                "status":{"currentReplicas":2,"desiredReplicas":2}}]}"#,
        )?;
        assert_eq!(page.items[0].metadata.namespace, "n");
        assert_eq!(
            page.items[0]
                .spec
                .scale_target_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("web")
        );
        let ipa: IpaView = serde_json::from_str(
            r#"{"metadata":{"name":"i","namespace":"n"},"spec":{"metadata":{"prometheusUri":"http://p","mode":"SomethingNew",
              "ipaGroup":[{"deployment":"web","namespace":"n","minReplicas":2,"vertical":false,"scaleUp":{"maxPods":3}}]}},
              "status":{"groups":[{"namespace":"n","deployment":"web","guardState":{"recent":[1,2,3]}}]}}"#,
        )?;
        assert_eq!(ipa.spec.metadata.mode.as_deref(), Some("SomethingNew"));
        assert_eq!(ipa.spec.metadata.ipa_group[0].vertical, Some(false));
        Ok(())
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn a_404_means_not_installed_and_other_errors_are_reported() {
        // A served group without the resource: a JSON Status.
        let not_found = api_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        assert_eq!(classify(&not_found), Outcome::Absent);
        // A group the apiserver does not serve: plain text, rebuilt by kube without the reason.
        let plain = api_error(404, "Failed to parse error data", "404 page not found");
        assert_eq!(classify(&plain), Outcome::Absent);
        let forbidden = api_error(
            403,
            "Forbidden",
            "verticalpodautoscalers.autoscaling.k8s.io is forbidden",
        );
        assert_eq!(
            classify(&forbidden),
            Outcome::Failed(ListFailure::Forbidden)
        );
        let broken = api_error(500, "InternalError", "etcd timed out");
        assert_eq!(classify(&broken), Outcome::Failed(ListFailure::Failed));
        assert_eq!(
            classify(&kube::Error::LinesCodecMaxLineLengthExceeded),
            Outcome::Failed(ListFailure::Failed)
        );
    }

    /// A loopback stand-in for the apiserver: HPAs over two pages in `default`, forbidden in `locked`; VPA's
    /// group unknown (plain-text 404), KEDA's resource unknown (JSON 404); one IPA of another namespace that
    /// `default` lets in.
    async fn fake_apiserver(
        uri: axum::http::Uri,
    ) -> (
        axum::http::StatusCode,
        [(axum::http::header::HeaderName, &'static str); 1],
        String,
    ) {
        use axum::http::{StatusCode, header::CONTENT_TYPE};
        let json_body = |code: StatusCode, body: Value| {
            (code, [(CONTENT_TYPE, "application/json")], body.to_string())
        };
        let status = |code: u16, reason: &str, message: &str| {
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                    "message": message })
        };
        let hpa_item = |name: &str| {
            json!({ "metadata": { "name": name, "namespace": "default" },
                    "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name } } })
        };
        let continued = uri.query().unwrap_or_default().contains("continue=");
        match uri.path() {
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers" if !continued => {
                json_body(
                    StatusCode::OK,
                    json!({ "metadata": { "continue": "page-2" }, "items": [hpa_item("web")] }),
                )
            }
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers" => json_body(
                StatusCode::OK,
                json!({ "metadata": {}, "items": [hpa_item("api")] }),
            ),
            "/apis/autoscaling/v2/namespaces/locked/horizontalpodautoscalers" => json_body(
                StatusCode::FORBIDDEN,
                status(
                    403,
                    "Forbidden",
                    "horizontalpodautoscalers.autoscaling is forbidden",
                ),
            ),
            path if path.starts_with("/apis/autoscaling.k8s.io/") => (
                StatusCode::NOT_FOUND,
                [(CONTENT_TYPE, "text/plain")],
                "404 page not found\n".into(),
            ),
            "/apis/ipa.shafinhasnat.me/v1alpha1/ipas" => json_body(
                StatusCode::OK,
                json!({ "metadata": {}, "items": [{
                    "metadata": { "name": "theirs", "namespace": "tenant-b", "creationTimestamp": "2025-01-01T00:00:00Z" },
                    "spec": { "metadata": { "prometheusUri": "http://p",
                        "ipaGroup": [{ "namespace": "default", "deployment": "web" }] } } }] }),
            ),
            "/api/v1/namespaces/default" => json_body(
                StatusCode::OK,
                json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": { "name": "default",
                                      "annotations": { tenancy::ALLOW_FROM_ANNOTATION: "tenant-b" } } }),
            ),
            _ => json_body(
                StatusCode::NOT_FOUND,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
        }
    }

    #[tokio::test]
    async fn reads_what_is_there_and_reports_what_is_not() -> Result<(), Box<dyn std::error::Error>>
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, axum::Router::new().fallback(fake_apiserver)).await;
        });
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n"
        ))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = Client::try_from(config)?;
        let namespaces = BTreeSet::from(["default", "locked"]);
        let absent = AbsentKinds::default();
        let sources = read_conflict_sources(&client, &namespaces, &absent).await;
        // The next cycle does not ask again for what is not there: 5 requests, still reported absent.
        let again = read_conflict_sources(&client, &namespaces, &absent).await;
        server.abort();
        assert_eq!(again.requests, 5);
        assert_eq!(again.absent, sources.absent);

        let hpas: Vec<&str> = sources
            .hpas
            .iter()
            .map(|h| h.metadata.name.as_str())
            .collect();
        assert_eq!(hpas, ["web", "api"]);
        assert_eq!(
            sources.errors,
            [SourceError {
                kind: Kind::HorizontalPodAutoscaler,
                namespace: Some("locked".into()),
                failure: ListFailure::Forbidden,
            }]
        );
        assert_eq!(
            sources.absent,
            BTreeSet::from([Kind::ScaledObject, Kind::VerticalPodAutoscaler])
        );
        assert_eq!(sources.ipas.len(), 1);
        assert_eq!(
            sources.allow_from.get("default"),
            Some(&Some("tenant-b".to_string()))
        );
        // HPAs: two pages in default, one refusal in locked; VPA and KEDA: one 404 each, then no more; IPAs: one
        // list; one namespace read.
        assert_eq!(sources.requests, 7);

        let me = me_at("2026-01-01T00:00:00Z");
        let found = one(&me, web(Sides::BOTH), &sources);
        assert_eq!(
            names(&found.conflicts),
            vec![
                (
                    Kind::HorizontalPodAutoscaler,
                    "default/web".into(),
                    Sides::REPLICAS
                ),
                (Kind::Ipa, "tenant-b/theirs".into(), Sides::BOTH),
            ]
        );
        Ok(())
    }
}
