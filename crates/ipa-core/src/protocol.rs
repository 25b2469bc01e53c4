//! Wire types between the controller and the agent, shared so both ends agree by construction.
//!
//! Two protocols: ours (`POST /v1/recommend`, a structured snapshot in, a `Recommendation` out) and the seed's
//! (`POST /askllm` or `/llmagent` with `{"metrics": "<text>"}`, replying with one set of resources).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::snapshot::MetricsSnapshot;

/// Body of `POST /v1/recommend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecommendRequest {
    pub snapshot: MetricsSnapshot,
    #[serde(default)]
    pub policy: Policy,
}

/// Body of the seed's `POST /askllm` / `POST /llmagent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SeedRequest {
    pub metrics: String,
}

/// The seed's reply: `{"status": "success", "message": "...", "text": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SeedResponse {
    pub status: String,
    pub message: String,
    pub text: SeedRecommendation,
}

/// The seed's recommendation: one replica count and one set of resources for the deployment's containers.
/// Quantities are strings, as the seed's Go controller parses them with `resource.MustParse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SeedRecommendation {
    pub replicas: u32,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}
