//! Prometheus metrics of the agent (`GET /metrics`, OpenMetrics text).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenLabels {
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s: the built-in path is sub-millisecond, an LLM call takes seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The agent's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub decisions: Family<SourceLabels, Counter>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ipa_agent");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let decisions = Family::<SourceLabels, Counter>::default();
        let provider_errors = Family::<ProviderErrorLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_duration.clone(),
        );
        registry.register(
            "decisions",
            "Recommendations by source (llm, builtin, fallback)",
            decisions.clone(),
        );
        registry.register(
            "provider_errors",
            "LLM provider failures by kind",
            provider_errors.clone(),
        );
        registry.register(
            "llm_tokens",
            "LLM tokens used (prompt, completion)",
            tokens.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            request_duration,
            decisions,
            provider_errors,
            tokens,
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    pub fn observe_decision(&self, provider: &str, outcome: &crate::engine::Outcome) {
        let rec = &outcome.recommendation;
        self.decisions
            .get_or_create(&SourceLabels {
                source: rec.source.as_str().into(),
            })
            .inc();
        for kind in &outcome.provider_errors {
            self.provider_errors
                .get_or_create(&ProviderErrorLabels {
                    provider: provider.into(),
                    kind: (*kind).into(),
                })
                .inc();
        }
        for (kind, n) in [
            ("prompt", rec.prompt_tokens),
            ("completion", rec.completion_tokens),
        ] {
            if let Some(n) = n {
                self.tokens
                    .get_or_create(&TokenLabels { kind: kind.into() })
                    .inc_by(u64::from(n));
            }
        }
    }
}
