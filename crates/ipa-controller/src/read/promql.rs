//! PromQL for one cycle of one IPA: one query per metric for all of its targets, never one per Deployment.
//!
//! Selectors narrow by namespace and pod-name prefix (`<deployment>-.*`) with regex alternations; the exact
//! pod → Deployment mapping is done afterwards from the API's owner references, so a prefix shared by two
//! Deployments costs a few extra series, never a wrong attribution.

use std::collections::BTreeSet;

/// The targets of one cycle, as PromQL sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub namespaces: BTreeSet<String>,
    pub deployments: BTreeSet<String>,
    pub ingresses: BTreeSet<String>,
}

/// Durations (seconds) the queries are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// `rate()` range.
    pub rate: u64,
    /// Window the snapshot's statistics cover.
    pub stats: u64,
}

/// Escapes a literal for a RE2 regex inside a PromQL double-quoted string.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        } else if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn alternation<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(|s| regex_literal(s))
        .collect::<Vec<_>>()
        .join("|")
}

impl Selection {
    fn namespace_matcher(&self) -> String {
        format!("namespace=~\"{}\"", alternation(&self.namespaces))
    }

    fn pod_matcher(&self) -> String {
        format!("pod=~\"({})-.*\"", alternation(&self.deployments))
    }

    fn container_selector(&self) -> String {
        format!(
            "{{{},{},container!=\"\",container!=\"POD\"}}",
            self.namespace_matcher(),
            self.pod_matcher()
        )
    }

    /// CPU cores per container and pod (range query).
    pub fn cpu(&self, w: Windows) -> String {
        format!(
            "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{}[{}s]))",
            self.container_selector(),
            w.rate
        )
    }

    /// Working-set bytes per container and pod (range query).
    pub fn memory(&self) -> String {
        format!(
            "max by (namespace, pod, container) (container_memory_working_set_bytes{})",
            self.container_selector()
        )
    }

    /// Requests per second per ingress (range query); `None` when no target has an ingress.
    pub fn request_rate(&self, w: Windows) -> Option<String> {
        if self.ingresses.is_empty() {
            return None;
        }
        Some(format!(
            "sum by (namespace, ingress) (rate(nginx_ingress_controller_requests{{{},ingress=~\"{}\"}}[{}s]))",
            self.namespace_matcher(),
            alternation(&self.ingresses),
            w.rate
        ))
    }

    /// Container restarts per pod during the stats window (instant query).
    pub fn restarts(&self, w: Windows) -> String {
        format!(
            "sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{},{}}}[{}s]))",
            self.namespace_matcher(),
            self.pod_matcher(),
            w.stats
        )
    }

    /// Restarts whose last termination was an OOM kill, per pod (instant query).
    pub fn oom_kills(&self, w: Windows) -> String {
        format!(
            "sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{ns},{pod}}}[{s}s]) \
             and on (namespace, pod, container) \
             (kube_pod_container_status_last_terminated_reason{{{ns},{pod},reason=\"OOMKilled\"}} == 1))",
            ns = self.namespace_matcher(),
            pod = self.pod_matcher(),
            s = w.stats
        )
    }
}

/// Free memory over all nodes (instant query).
pub const FREE_MEMORY: &str = "sum(node_memory_MemAvailable_bytes)";

/// Allocatable CPU cores not yet requested by any pod (instant query, kube-state-metrics).
pub const FREE_CPU: &str = "sum(kube_node_status_allocatable{resource=\"cpu\"}) - \
     sum(kube_pod_container_resource_requests{resource=\"cpu\"})";

#[cfg(test)]
mod tests {
    use super::*;

    fn selection() -> Selection {
        Selection {
            namespaces: ["ipaapp".to_string(), "b".to_string()].into(),
            deployments: ["testapp".to_string(), "web.v2".to_string()].into(),
            ingresses: ["testappingress".to_string()].into(),
        }
    }

    const W: Windows = Windows {
        rate: 60,
        stats: 300,
    };

    #[test]
    fn one_query_covers_every_target() {
        assert_eq!(
            selection().cpu(W),
            "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total\
             {namespace=~\"b|ipaapp\",pod=~\"(testapp|web\\\\.v2)-.*\",container!=\"\",container!=\"POD\"}[60s]))"
        );
    }

    #[test]
    fn request_rate_only_with_ingresses() {
        let mut s = selection();
        assert!(
            s.request_rate(W)
                .is_some_and(|q| q.contains("ingress=~\"testappingress\""))
        );
        s.ingresses.clear();
        assert_eq!(s.request_rate(W), None);
    }

    #[test]
    fn quotes_cannot_break_out() {
        assert_eq!(regex_literal("a\"b"), "a\\\"b");
    }
}
