//! IPA's decision core. Pure: no IO, no async, no clock — time comes in as an argument.
//!
//! Every other part of IPA stands on this crate: the agent (prompt, reply parser, built-in provider), the
//! controller (guardrails, fallback recommender) and the simulator (the `ipa` policy runs exactly this code).

pub mod bridge;
pub mod decide;
pub mod forecast;
pub mod guardrails;
pub mod horizontal;
pub mod policy;
pub mod prompt;
pub mod protocol;
pub mod quantity;
pub mod recommendation;
pub mod recommender;
pub mod reply;
pub mod snapshot;
pub mod stats;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use decide::{Advice, decide};
pub use guardrails::{Decision, Floor, GuardState};
pub use policy::{Policy, ResolvedPolicy, ScalingRules};
pub use protocol::{RecommendRequest, SeedRecommendation, SeedRequest, SeedResponse};
pub use quantity::{Bytes, CpuMillis, QuantityError};
pub use recommendation::{ContainerRecommendation, GuardrailNote, Recommendation, Rule, Source};
pub use recommender::recommend;
pub use snapshot::{
    ClusterCapacity, ContainerSnapshot, DemandHistory, EventSummary, MetricsSnapshot, Resources,
    Rollout, SeriesStats, TargetRef,
};
