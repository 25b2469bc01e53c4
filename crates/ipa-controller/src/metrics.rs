//! The controller's own Prometheus metrics. Every label value is a `&'static str` from a closed set (sources,
//! guardrail rules, error categories, outcomes), so cardinality is bounded by construction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

fn histogram() -> Histogram {
    // 5 ms … ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconcile_errors: Family<Label, Counter>,
    decisions: Family<Label, Counter>,
    interventions: Family<Label, Counter>,
    changes: Family<Label, Counter>,
    agent_duration: Histogram,
    agent_requests: Family<Label, Counter>,
    prometheus_duration: Family<Label, Histogram, fn() -> Histogram>,
    prometheus_queries: Family<Labels2, Counter>,
    kube_requests: Family<Label, Counter>,
    /// Plain totals for the benchmark and tests (the same numbers as the counters above).
    pub prometheus_query_total: AtomicU64,
    pub kube_request_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ipa_controller");
        let reconcile_duration = histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile of one IPA",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<Label, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            reconcile_errors.clone(),
        );
        let decisions = Family::<Label, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by source (llm, builtin, fallback)",
            decisions.clone(),
        );
        let interventions = Family::<Label, Counter>::default();
        registry.register(
            "guardrail_interventions",
            "Guardrail interventions by rule",
            interventions.clone(),
        );
        let changes = Family::<Label, Counter>::default();
        registry.register(
            "changes",
            "Changes applied to Deployments by kind (scale, resize) and conflicts",
            changes.clone(),
        );
        let agent_duration = histogram();
        registry.register(
            "agent_request_duration_seconds",
            "Latency of agent requests",
            agent_duration.clone(),
        );
        let agent_requests = Family::<Label, Counter>::default();
        registry.register(
            "agent_requests",
            "Agent requests by outcome (ok, unreachable, invalid_reply)",
            agent_requests.clone(),
        );
        let prometheus_duration =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "prometheus_query_duration_seconds",
            "Latency of Prometheus queries by kind (instant, range)",
            prometheus_duration.clone(),
        );
        let prometheus_queries = Family::<Labels2, Counter>::default();
        registry.register(
            "prometheus_queries",
            "Prometheus queries by kind and outcome",
            prometheus_queries.clone(),
        );
        let kube_requests = Family::<Label, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API requests made by reconciles, by verb",
            kube_requests.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            decisions,
            interventions,
            changes,
            agent_duration,
            agent_requests,
            prometheus_duration,
            prometheus_queries,
            kube_requests,
            prometheus_query_total: AtomicU64::new(0),
            kube_request_total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&[("category", category)])
            .inc();
    }

    pub fn decision(&self, source: ipa_core::Source) {
        self.decisions
            .get_or_create(&[("source", source.as_str())])
            .inc();
    }

    pub fn intervention(&self, rule: ipa_core::Rule) {
        self.interventions
            .get_or_create(&[("rule", rule.as_str())])
            .inc();
    }

    pub fn change(&self, kind: &'static str) {
        self.changes.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn agent_request(&self, outcome: &'static str, took: Duration) {
        self.agent_duration.observe(took.as_secs_f64());
        self.agent_requests
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    pub fn prometheus_query(&self, kind: &'static str, ok: bool, took: Duration) {
        self.prometheus_query_total.fetch_add(1, Ordering::Relaxed);
        self.prometheus_duration
            .get_or_create(&[("kind", kind)])
            .observe(took.as_secs_f64());
        let outcome = if ok { "ok" } else { "error" };
        self.prometheus_queries
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }

    pub fn kube_request(&self, verb: &'static str) {
        self.kube_requests_n(verb, 1);
    }

    /// `n` API requests of one verb, made elsewhere and counted at once.
    pub fn kube_requests_n(&self, verb: &'static str, n: u64) {
        self.kube_request_total.fetch_add(n, Ordering::Relaxed);
        self.kube_requests
            .get_or_create(&[("verb", verb)])
            .inc_by(n);
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_bounded_families() {
        let m = Metrics::default();
        m.decision(ipa_core::Source::Fallback);
        m.intervention(ipa_core::Rule::MaxReplicas);
        m.prometheus_query("range", true, Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("ipa_controller_decisions_total{source=\"fallback\"} 1"));
        assert!(
            text.contains("ipa_controller_guardrail_interventions_total{rule=\"max_replicas\"} 1")
        );
        assert!(
            text.contains(
                "ipa_controller_prometheus_queries_total{kind=\"range\",outcome=\"ok\"} 1"
            )
        );
        assert_eq!(m.prometheus_query_total.load(Ordering::Relaxed), 1);
    }
}
