//! Stage 4 of a cycle: the core's [`ipa_core::decide`] for one target — the same function the simulator and the
//! agent's seed route call — and what of its decision differs from the Deployment. Pure.

use ipa_core::{
    Advice, ContainerRecommendation, Decision, GuardState, MetricsSnapshot, Recommendation,
};

use crate::ask::Asked;
use crate::conflicts::Sides;
use crate::summarize::Found;
use crate::write::patches;

/// One target's decision and what must be written for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub decision: Decision,
    /// What status shows as recommended: the advisor's proposal as it came, or the built-in's decision.
    pub recommended: Recommendation,
    /// The guard state read from status, kept where a write fails.
    pub guard_before: GuardState,
    /// Why asking the agent failed, for status.
    pub agent_error: Option<String>,
    /// The advisory loop spoke for this target this cycle.
    pub advised: bool,
    /// Replicas before the decision.
    pub current_replicas: u32,
    /// The containers whose requests or limits change, with their new values.
    pub resize: Vec<ContainerRecommendation>,
    /// Sides the decision would change that another autoscaler owns: left alone.
    pub held_back: Sides,
}

impl Plan {
    pub fn scales(&self) -> bool {
        self.decision.scales(self.current_replicas) && !self.held_back.replicas
    }
}

/// Decides for one found target. Every reply from an agent is held by `decide` whatever `source` it claims: it
/// came from the network.
pub fn plan(
    found: &Found,
    snap: &MetricsSnapshot,
    asked: Asked,
    guard_before: GuardState,
    now: i64,
) -> Plan {
    let advised = asked != Asked::Nothing;
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
    let decision = ipa_core::decide(snap, &found.policy, advice, &guard_before, now);
    let recommended = proposal.unwrap_or_else(|| Recommendation {
        containers: decision.containers.clone(),
        rationale: decision.rationale.clone(),
        ..Recommendation::new(decision.replicas, decision.source)
    });
    let mut resize = patches::resource_changes(&found.info.containers, &decision.containers);
    let blocked = found.conflicts.blocked();
    let held_back = Sides {
        replicas: blocked.replicas && decision.scales(snap.replicas),
        resources: blocked.resources && !resize.is_empty(),
    };
    if held_back.resources {
        resize.clear();
    }
    Plan {
        decision,
        recommended,
        guard_before,
        agent_error,
        advised,
        current_replicas: snap.replicas,
        resize,
        held_back,
    }
}
