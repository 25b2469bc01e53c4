//! `Recommendation`: what a provider (LLM or built-in) proposes, and what the guardrails made of it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::snapshot::Resources;

/// Who produced a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A language model's reply that passed the parser.
    Llm,
    /// The built-in recommender, used by choice (no LLM configured).
    Builtin,
    /// The built-in recommender, used because the LLM or the agent failed.
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Builtin => "builtin",
            Self::Fallback => "fallback",
        }
    }
}

/// Requests and limits for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerRecommendation {
    pub name: String,
    pub requests: Resources,
    pub limits: Resources,
}

/// Which guardrail acted. Stable names: they are metric labels and status fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    MinReplicas,
    MaxReplicas,
    ScaleUpStep,
    ScaleDownStep,
    ScaleDownStabilization,
    ScaleUpStabilization,
    Tolerance,
    MissingInputs,
    NodeCapacity,
    ResizeThreshold,
    ResizeInterval,
    LimitBelowRequest,
    MemoryBelowPeak,
    OomBump,
    ResourceBounds,
    VerticalDisabled,
    UnknownContainer,
    ReplyClamped,
    Implausible,
    /// An advisor's replica floor raised the fast rule's count (pre-scaling), or was held.
    AdvisorFloor,
    /// No scale-down while a rollout runs.
    Rollout,
    /// A pod shrink waits until the replicas the smaller pods need are ready.
    ShrinkDeferred,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MinReplicas => "min_replicas",
            Self::MaxReplicas => "max_replicas",
            Self::ScaleUpStep => "scale_up_step",
            Self::ScaleDownStep => "scale_down_step",
            Self::ScaleDownStabilization => "scale_down_stabilization",
            Self::ScaleUpStabilization => "scale_up_stabilization",
            Self::Tolerance => "tolerance",
            Self::MissingInputs => "missing_inputs",
            Self::NodeCapacity => "node_capacity",
            Self::ResizeThreshold => "resize_threshold",
            Self::ResizeInterval => "resize_interval",
            Self::LimitBelowRequest => "limit_below_request",
            Self::MemoryBelowPeak => "memory_below_peak",
            Self::OomBump => "oom_bump",
            Self::ResourceBounds => "resource_bounds",
            Self::VerticalDisabled => "vertical_disabled",
            Self::UnknownContainer => "unknown_container",
            Self::ReplyClamped => "reply_clamped",
            Self::Implausible => "implausible",
            Self::AdvisorFloor => "advisor_floor",
            Self::Rollout => "rollout",
            Self::ShrinkDeferred => "shrink_deferred",
        }
    }
}

/// One intervention: which rule changed what, in words a person can read in status or on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuardrailNote {
    pub rule: Rule,
    pub message: String,
}

impl GuardrailNote {
    pub fn new(rule: Rule, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

/// A provider's proposal, or (after the guardrails) the decision to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Recommendation {
    pub replicas: u32,
    /// Per-container requests/limits. Empty means "leave resources as they are".
    #[serde(default)]
    pub containers: Vec<ContainerRecommendation>,
    #[serde(default)]
    pub rationale: String,
    pub source: Source,
    #[serde(default)]
    pub notes: Vec<GuardrailNote>,
    /// Provider metadata, when an LLM was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl Recommendation {
    pub fn new(replicas: u32, source: Source) -> Self {
        Self {
            replicas,
            containers: Vec::new(),
            rationale: String::new(),
            source,
            notes: Vec::new(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
        }
    }

    pub fn container(&self, name: &str) -> Option<&ContainerRecommendation> {
        self.containers.iter().find(|c| c.name == name)
    }
}
