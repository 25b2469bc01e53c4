//! What a kubelet does with an in-place pod resize (KEP-1287, as of Kubernetes 1.34), as pure functions, so the
//! test bed's fake nodes act on the `pods/resize` subresource like real ones. KWOK's kubelet does nothing with a
//! resize: the pod's spec changes and its status never follows. Worse, the apiserver refuses to resize a running
//! pod whose container statuses carry no `resources` ("Pod running on node without support for resize"), and
//! KWOK never reports them.
//!
//! The kubelet's steps, which [`decide`] follows:
//! 1. a running container reports the resources it runs with (`status.containerStatuses[].resources`) and the
//!    requests the node allocated to it (`allocatedResources`); that is what tells the apiserver the node can
//!    resize;
//! 2. when the spec (desired) differs from what is allocated, the node admits the resize if the pod's new
//!    requests fit its allocatable next to the other pods' allocated requests: allocated := desired, condition
//!    `PodResizeInProgress`. A pod whose requests alone exceed the node's allocatable is `PodResizePending` with
//!    reason `Infeasible` (not retried until the spec changes); one that only lacks room beside the other pods
//!    is `PodResizePending`/`Deferred` (retried on every sync, here every tick);
//! 3. the runtime applies the allocated resources: `resources` := desired, and the conditions are cleared. A
//!    memory limit lowered below what the container uses is not applied: `PodResizeInProgress` with reason
//!    `Error` stays until the usage fits (1.34's best-effort guard against an OOM kill by resize).
//!
//! Simplifications: only CPU and memory of regular containers count (no init containers, pod overhead or
//! pod-level resources), and a new resize that arrives while an earlier one is being applied replaces it.

use std::collections::BTreeMap;

use ipa_core::quantity::{Bytes, CpuMillis};

use crate::sim::PodId;

/// CPU and memory amounts; `None` = not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu: Option<CpuMillis>,
    pub memory: Option<Bytes>,
}

impl Amounts {
    /// Sums, saturating; an unset side counts as zero.
    fn plus(self, other: Self) -> Self {
        fn add<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            }
        }
        Self {
            cpu: add(self.cpu, other.cpu, |a, b| {
                CpuMillis(a.0.saturating_add(b.0))
            }),
            memory: add(self.memory, other.memory, |a, b| {
                Bytes(a.0.saturating_add(b.0))
            }),
        }
    }

    /// Subtracts, saturating at zero.
    fn minus(self, other: Self) -> Self {
        Self {
            cpu: self
                .cpu
                .map(|a| CpuMillis(a.0.saturating_sub(other.cpu.map_or(0, |b| b.0)))),
            memory: self
                .memory
                .map(|a| Bytes(a.0.saturating_sub(other.memory.map_or(0, |b| b.0)))),
        }
    }

    /// The resources of `self` that exceed `capacity`, as (name, wanted, capacity); an unknown capacity is
    /// unbounded, an unset amount is zero.
    fn excess(self, capacity: Self) -> Vec<(&'static str, String, String)> {
        let mut over = Vec::new();
        if let (Some(want), Some(cap)) = (self.cpu, capacity.cpu)
            && want > cap
        {
            over.push(("cpu", want.to_string(), cap.to_string()));
        }
        if let (Some(want), Some(cap)) = (self.memory, capacity.memory)
            && want > cap
        {
            over.push(("memory", want.to_string(), cap.to_string()));
        }
        over
    }
}

/// Requests and limits of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub requests: Amounts,
    pub limits: Amounts,
}

/// One container of a pod: what the spec asks for and what the status says the node did.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    /// `spec.containers[].resources`: what the pod (or whoever resized it) wants.
    pub desired: Sizes,
    /// `status.containerStatuses[].allocatedResources`: the requests the node admitted.
    pub allocated: Option<Amounts>,
    /// `status.containerStatuses[].resources`: what the container runs with.
    pub actual: Option<Sizes>,
    /// Memory the container uses now (the simulation's working set), for the memory-limit guard.
    pub usage: Option<Bytes>,
}

impl ContainerView {
    /// The requests this container holds on its node: the allocated ones, else the actual, else the spec's
    /// (a pod the node has not reported on yet was admitted with its spec).
    fn held(&self) -> Amounts {
        self.allocated
            .or(self.actual.map(|a| a.requests))
            .unwrap_or(self.desired.requests)
    }

    fn is_allocated(&self) -> bool {
        self.allocated == Some(self.desired.requests)
    }
}

/// Why a resize waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingReason {
    /// The pod's requests exceed the node's allocatable: never fits on this node.
    Infeasible,
    /// No room beside the other pods now; retried.
    Deferred,
}

impl PendingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infeasible => "Infeasible",
            Self::Deferred => "Deferred",
        }
    }
}

/// The pod's resize conditions as the API shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResizeConditions {
    /// `PodResizeInProgress`: Unix seconds it became true, and its `Error` message if the runtime refused.
    pub in_progress: Option<(f64, Option<String>)>,
    /// `PodResizePending`: reason and message.
    pub pending: Option<(PendingReason, String)>,
}

/// A pod as the node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub id: PodId,
    pub uid: String,
    pub node: Option<String>,
    /// Running and not terminating: the node acts on its resizes.
    pub active: bool,
    /// Not finished (`Succeeded`/`Failed`): its allocated requests still count on the node.
    pub holds_resources: bool,
    pub containers: Vec<ContainerView>,
    pub conditions: ResizeConditions,
}

impl PodView {
    fn held(&self) -> Amounts {
        self.containers
            .iter()
            .fold(Amounts::default(), |sum, c| sum.plus(c.held()))
    }

    fn desired_requests(&self) -> Amounts {
        self.containers
            .iter()
            .fold(Amounts::default(), |sum, c| sum.plus(c.desired.requests))
    }
}

/// What the node does with a pod in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Report the spec's resources as allocated and actual, and no resize conditions: the pod is at its desired
    /// size (also a container's first report, and the end of a resize).
    Done,
    /// The resize is admitted: allocated := desired, `PodResizeInProgress`; applied after `actuate_after`.
    InProgress,
    /// Admitted but not applied: `PodResizeInProgress` with reason `Error` and this message.
    Blocked(String),
    /// Not admitted: `PodResizePending` with this reason and message.
    Pending {
        reason: PendingReason,
        message: String,
    },
}

fn list(
    excess: &[(&str, String, String)],
    what: impl Fn(&(&str, String, String)) -> String,
) -> String {
    excess.iter().map(what).collect::<Vec<_>>().join(", ")
}

/// The node's decision for one pod: `allocatable` is the node's, `others` the requests the node's other pods
/// hold, `now` and `actuate_after` in seconds (how long a resize stays in progress before it is applied).
pub fn decide(
    pod: &PodView,
    allocatable: Amounts,
    others: Amounts,
    now: f64,
    actuate_after: f64,
) -> Step {
    // A container without reported resources: the node reports them now, with the spec as admitted at start.
    if pod.containers.iter().any(|c| c.actual.is_none()) {
        return Step::Done;
    }
    let at_size = pod
        .containers
        .iter()
        .all(|c| c.actual == Some(c.desired) && c.is_allocated());
    if at_size {
        return Step::Done;
    }
    if pod.containers.iter().all(ContainerView::is_allocated) {
        // Admitted earlier: the runtime applies it once the in-progress time has passed.
        let since = pod.conditions.in_progress.as_ref().map(|(since, _)| *since);
        if since.is_none_or(|since| now - since < actuate_after) {
            return Step::InProgress;
        }
        return match memory_below_usage(pod) {
            Some(message) => Step::Blocked(message),
            None => Step::Done,
        };
    }
    let wanted = pod.desired_requests();
    let excess = wanted.excess(allocatable);
    if !excess.is_empty() {
        return Step::Pending {
            reason: PendingReason::Infeasible,
            message: format!(
                "the pod requests more than the node's allocatable: {}",
                list(&excess, |(name, want, cap)| format!(
                    "{name} {want} > {cap}"
                ))
            ),
        };
    }
    let free = allocatable.minus(others);
    let excess = wanted.excess(free);
    if !excess.is_empty() {
        return Step::Pending {
            reason: PendingReason::Deferred,
            message: format!(
                "not enough free resources on the node now: {}",
                list(&excess, |(name, want, free)| format!(
                    "{name} {want} requested, {free} free"
                ))
            ),
        };
    }
    Step::InProgress
}

/// The kubelet's guard: a memory limit lowered (or set where there was none) below the container's usage.
fn memory_below_usage(pod: &PodView) -> Option<String> {
    pod.containers.iter().find_map(|c| {
        let limit = c.desired.limits.memory?;
        let lowered = c
            .actual
            .and_then(|a| a.limits.memory)
            .is_none_or(|old| limit < old);
        let usage = c.usage?;
        (lowered && usage > limit).then(|| {
            format!(
                "memory limit {limit} of container {} is below its usage {}",
                c.name,
                Bytes(usage.0.div_ceil(1 << 20) << 20)
            )
        })
    })
}

/// Whether `step` changes what the API shows for `pod` (a step that changes nothing is not written).
pub fn changes(pod: &PodView, step: &Step) -> bool {
    let allocated = pod.containers.iter().all(ContainerView::is_allocated);
    match step {
        Step::Done => {
            !allocated
                || pod.containers.iter().any(|c| c.actual != Some(c.desired))
                || pod.conditions != ResizeConditions::default()
        }
        Step::InProgress => {
            !allocated
                || pod.conditions.pending.is_some()
                || !matches!(pod.conditions.in_progress, Some((_, None)))
        }
        Step::Blocked(message) => {
            !allocated
                || pod.conditions.pending.is_some()
                || pod
                    .conditions
                    .in_progress
                    .as_ref()
                    .and_then(|(_, m)| m.as_ref())
                    != Some(message)
        }
        Step::Pending { reason, message } => {
            pod.conditions.pending.as_ref() != Some(&(*reason, message.clone()))
        }
    }
}

/// Every node's decisions for this tick: the index of each active pod whose status must change, and its step.
/// Pods are taken in order, and an admitted resize counts against its node for the pods after it, so two pods
/// never share the same free room.
pub fn plan(
    pods: &[PodView],
    allocatable: &BTreeMap<String, Amounts>,
    now: f64,
    actuate_after: f64,
) -> Vec<(usize, Step)> {
    let mut held: BTreeMap<&str, Amounts> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.holds_resources) {
        if let Some(node) = pod.node.as_deref() {
            let sum = held.entry(node).or_default();
            *sum = sum.plus(pod.held());
        }
    }
    let mut steps = Vec::new();
    for (index, pod) in pods.iter().enumerate().filter(|(_, p)| p.active) {
        // A pod on a node we don't know has no kubelet here to act for it.
        let Some((node, capacity)) = pod
            .node
            .as_deref()
            .and_then(|n| allocatable.get_key_value(n))
        else {
            continue;
        };
        let own = pod.held();
        let others = held
            .get(node.as_str())
            .copied()
            .unwrap_or_default()
            .minus(own);
        let step = decide(pod, *capacity, others, now, actuate_after);
        if step == Step::InProgress {
            held.insert(node.as_str(), others.plus(pod.desired_requests()));
        }
        if changes(pod, &step) {
            steps.push((index, step));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn amounts(cpu: u64, memory_mib: u64) -> Amounts {
        Amounts {
            cpu: Some(CpuMillis(cpu)),
            memory: Some(Bytes(memory_mib * MIB)),
        }
    }

    fn sizes(cpu: u64, memory_mib: u64, memory_limit_mib: u64) -> Sizes {
        Sizes {
            requests: amounts(cpu, memory_mib),
            limits: Amounts {
                cpu: None,
                memory: Some(Bytes(memory_limit_mib * MIB)),
            },
        }
    }

    /// A running pod at `actual` on node-0 whose spec asks for `desired`.
    fn pod(name: &str, actual: Sizes, desired: Sizes) -> PodView {
        PodView {
            id: PodId {
                namespace: "ns".into(),
                name: name.into(),
            },
            uid: format!("uid-{name}"),
            node: Some("node-0".into()),
            active: true,
            holds_resources: true,
            containers: vec![ContainerView {
                name: "app".into(),
                desired,
                allocated: Some(actual.requests),
                actual: Some(actual),
                usage: Some(Bytes(70 * MIB)),
            }],
            conditions: ResizeConditions::default(),
        }
    }

    fn node() -> Amounts {
        amounts(4000, 16 * 1024)
    }

    #[test]
    fn a_pod_at_its_size_is_done_and_unchanged() {
        let p = pod("a", sizes(100, 64, 128), sizes(100, 64, 128));
        assert_eq!(decide(&p, node(), Amounts::default(), 0.0, 1.0), Step::Done);
        assert!(!changes(&p, &Step::Done));
    }

    #[test]
    fn unreported_resources_are_reported_first() {
        let mut p = pod("a", sizes(100, 64, 128), sizes(100, 64, 128));
        p.containers[0].actual = None;
        p.containers[0].allocated = None;
        assert_eq!(decide(&p, node(), Amounts::default(), 0.0, 1.0), Step::Done);
        assert!(changes(&p, &Step::Done), "the first report is written");
    }

    #[test]
    fn a_resize_that_fits_goes_in_progress_then_done() {
        let mut p = pod("a", sizes(100, 64, 128), sizes(200, 96, 192));
        let step = decide(&p, node(), amounts(1000, 1024), 10.0, 1.0);
        assert_eq!(step, Step::InProgress);
        assert!(changes(&p, &step));
        // The node allocated it: in progress until the runtime has had its second.
        p.containers[0].allocated = Some(p.containers[0].desired.requests);
        p.conditions.in_progress = Some((10.0, None));
        let step = decide(&p, node(), amounts(1000, 1024), 10.5, 1.0);
        assert_eq!(step, Step::InProgress);
        assert!(!changes(&p, &step), "nothing to write while it waits");
        let step = decide(&p, node(), amounts(1000, 1024), 11.0, 1.0);
        assert_eq!(step, Step::Done);
        assert!(changes(&p, &step));
        // Applied, conditions cleared: nothing more.
        p.containers[0].actual = Some(p.containers[0].desired);
        p.conditions = ResizeConditions::default();
        assert_eq!(
            decide(&p, node(), amounts(1000, 1024), 12.0, 1.0),
            Step::Done
        );
        assert!(!changes(&p, &Step::Done));
    }

    #[test]
    fn requests_beyond_the_node_are_infeasible() {
        let p = pod("a", sizes(100, 64, 128), sizes(8000, 64, 128));
        let step = decide(&p, node(), Amounts::default(), 0.0, 1.0);
        let message = "the pod requests more than the node's allocatable: cpu 8 > 4".to_owned();
        assert_eq!(
            step,
            Step::Pending {
                reason: PendingReason::Infeasible,
                message: message.clone()
            }
        );
        let mut reported = p.clone();
        reported.conditions.pending = Some((PendingReason::Infeasible, message));
        assert!(changes(&p, &step));
        assert!(!changes(&reported, &step), "written once");
    }

    #[test]
    fn requests_beside_full_neighbours_are_deferred_then_admitted() {
        let p = pod("a", sizes(100, 64, 128), sizes(2000, 64, 128));
        let step = decide(&p, node(), amounts(3000, 1024), 0.0, 1.0);
        assert_eq!(
            step,
            Step::Pending {
                reason: PendingReason::Deferred,
                message: "not enough free resources on the node now: cpu 2 requested, 1 free"
                    .into()
            }
        );
        // A neighbour went away: retried and admitted.
        assert_eq!(
            decide(&p, node(), amounts(1000, 1024), 5.0, 1.0),
            Step::InProgress
        );
    }

    #[test]
    fn a_memory_limit_below_usage_is_not_applied() {
        // Usage 70 MiB; the limit goes 128 → 64 MiB.
        let mut p = pod("a", sizes(100, 64, 128), sizes(100, 48, 64));
        p.containers[0].allocated = Some(p.containers[0].desired.requests);
        p.conditions.in_progress = Some((0.0, None));
        let step = decide(&p, node(), Amounts::default(), 5.0, 1.0);
        assert_eq!(
            step,
            Step::Blocked("memory limit 64Mi of container app is below its usage 70Mi".into())
        );
        assert!(changes(&p, &step));
        // Usage fell below the new limit: applied.
        p.containers[0].usage = Some(Bytes(50 * MIB));
        assert_eq!(decide(&p, node(), Amounts::default(), 6.0, 1.0), Step::Done);
    }

    #[test]
    fn plan_counts_admitted_resizes_against_the_node() {
        // Two pods each want 2 of the node's 4 CPUs, beside a third holding 1: only the first fits.
        let pods = vec![
            pod("a", sizes(500, 64, 128), sizes(2000, 64, 128)),
            pod("b", sizes(500, 64, 128), sizes(2000, 64, 128)),
            PodView {
                active: false,
                ..pod("c", sizes(1000, 64, 128), sizes(1000, 64, 128))
            },
            PodView {
                node: Some("elsewhere".into()),
                ..pod("d", sizes(100, 64, 128), sizes(200, 64, 128))
            },
        ];
        let nodes = BTreeMap::from([("node-0".to_owned(), node())]);
        let steps = plan(&pods, &nodes, 0.0, 1.0);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[0], (0, Step::InProgress));
        assert!(matches!(
            &steps[1],
            (
                1,
                Step::Pending {
                    reason: PendingReason::Deferred,
                    ..
                }
            )
        ));
    }

    #[test]
    fn finished_pods_hold_nothing() {
        let pods = vec![
            pod("a", sizes(500, 64, 128), sizes(3000, 64, 128)),
            PodView {
                active: false,
                holds_resources: false,
                ..pod("done", sizes(3000, 64, 128), sizes(3000, 64, 128))
            },
        ];
        let nodes = BTreeMap::from([("node-0".to_owned(), node())]);
        assert_eq!(plan(&pods, &nodes, 0.0, 1.0), vec![(0, Step::InProgress)]);
    }
}
