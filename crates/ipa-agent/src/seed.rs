//! The seed's protocol: its controller sends `{"metrics": "<text>"}` where the text is five Prometheus
//! `query_range` answers (replicas, per-pod CPU rate, average memory, node available memory, ingress request
//! rate), a line of resource requests/limits and the pods' events. Its Go client strips every `"` and `\` from
//! the Prometheus JSON before sending, so the text is JSON-like, not JSON.
//!
//! `parse_metrics` extracts what it can into a `MetricsSnapshot` (best effort: anything it cannot read is listed
//! in `missing`); `to_seed_recommendation` renders a recommendation the way the seed's controller applies it
//! (`resource.MustParse` on four strings, so they must always be valid quantities).

use std::fmt::Write as _;

use ipa_core::quantity::{Bytes, CpuMillis, MIB};
use ipa_core::stats::summarize;
use ipa_core::{
    ContainerSnapshot, EventSummary, MetricsSnapshot, Recommendation, Resources,
    SeedRecommendation, TargetRef,
};

/// Name given to the seed's single (unnamed) container.
pub const SEED_CONTAINER: &str = "main";
/// Longest metrics text parsed; beyond that the rest is ignored.
pub const MAX_SEED_TEXT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Replicas,
    Cpu,
    Memory,
    NodeMemory,
    RequestRate,
    Resources,
    Events,
}

const HEADERS: [(&str, Section); 7] = [
    ("deployment replicas", Section::Replicas),
    ("cpu usage", Section::Cpu),
    ("ram usage", Section::Memory),
    ("node available memory", Section::NodeMemory),
    ("http request rate", Section::RequestRate),
    ("resource requests and limits", Section::Resources),
    ("events of the pods", Section::Events),
];

/// One series of a query_range answer: its labels (as text) and (timestamp, value) samples.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    labels: String,
    samples: Vec<(f64, f64)>,
}

/// Builds a snapshot from the seed's metrics text; `now` is used when the text carries no timestamps.
pub fn parse_metrics(text: &str, now: i64) -> MetricsSnapshot {
    let text = truncate_at_char(text, MAX_SEED_TEXT);
    let mut sections: Vec<(Section, String)> = Vec::new();
    for line in text.lines() {
        let header = line
            .trim()
            .trim_end_matches(['-', ':'])
            .trim()
            .to_ascii_lowercase();
        if let Some((_, section)) = HEADERS.iter().find(|(h, _)| *h == header) {
            sections.push((*section, String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let body = |s: Section| {
        sections
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, b)| b.as_str())
    };

    let replicas_text = body(Section::Replicas).unwrap_or_default();
    let target = TargetRef {
        namespace: label_value(replicas_text, "namespace").unwrap_or_else(|| "unknown".into()),
        deployment: label_value(replicas_text, "deployment").unwrap_or_else(|| "unknown".into()),
    };
    let replica_series = series_of(replicas_text);
    let last_ts = replica_series
        .iter()
        .chain(series_of(body(Section::Cpu).unwrap_or_default()).iter())
        .filter_map(|s| s.samples.last().map(|(t, _)| *t))
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.max(t)))
        });
    let replicas = replica_series
        .first()
        .and_then(|s| s.samples.last())
        .map(|(_, v)| v.round().clamp(0.0, 1e6) as u32);
    let mut snapshot = MetricsSnapshot::new(
        target,
        last_ts.map_or(now, |t| t as i64),
        replicas.unwrap_or(1),
    );
    let mut missing = Vec::new();
    if replicas.is_none() {
        missing.push("replicas".to_string());
    }

    // CPU: one or more series per pod (containers, the pod cgroup); per pod and timestamp take the largest
    // (the pod-level series covers its containers), then average over pods.
    let cpu_series = series_of(body(Section::Cpu).unwrap_or_default());
    let step = infer_step(&cpu_series).unwrap_or(60.0);
    let cpu = per_pod_average(&cpu_series);
    snapshot.cpu_per_pod = summarize(&cpu, step);
    if snapshot.cpu_per_pod.is_none() {
        missing.push("cpu".into());
    }
    let memory = series_of(body(Section::Memory).unwrap_or_default());
    snapshot.memory_per_pod = memory
        .first()
        .and_then(|s| summarize(&s.samples.iter().map(|(_, v)| *v).collect::<Vec<_>>(), step));
    if snapshot.memory_per_pod.is_none() {
        missing.push("memory".into());
    }
    let node_free: f64 = series_of(body(Section::NodeMemory).unwrap_or_default())
        .iter()
        .filter_map(|s| s.samples.last().map(|(_, v)| *v))
        .filter(|v| v.is_finite() && *v >= 0.0)
        .sum();
    if node_free > 0.0 {
        snapshot.cluster.free_memory_bytes = Some(Bytes::from_f64(node_free));
    }
    snapshot.request_rate = series_of(body(Section::RequestRate).unwrap_or_default())
        .first()
        .and_then(|s| summarize(&s.samples.iter().map(|(_, v)| *v).collect::<Vec<_>>(), step));
    if snapshot.request_rate.is_none() {
        missing.push("request_rate".into());
    }

    let (requests, limits) = parse_resources(body(Section::Resources).unwrap_or_default());
    snapshot.containers.push(ContainerSnapshot {
        name: SEED_CONTAINER.into(),
        requests,
        limits,
        cpu_cores: snapshot.cpu_per_pod,
        memory_bytes: snapshot.memory_per_pod,
    });
    snapshot.events = parse_events(body(Section::Events).unwrap_or_default());
    snapshot.oom_kills = snapshot
        .events
        .iter()
        .filter(|e| e.reason.eq_ignore_ascii_case("OOMKilled"))
        .map(|e| e.count)
        .sum();
    snapshot.missing = missing;
    snapshot
}

fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The value of `label=value` (or `label:value`, as in the de-quoted JSON) in a section.
fn label_value(text: &str, label: &str) -> Option<String> {
    let clean = text.replace(['"', '\\'], "");
    for sep in ['=', ':'] {
        let needle = format!("{label}{sep}");
        let mut from = 0;
        while let Some(pos) = clean[from..].find(&needle) {
            let start = from + pos;
            from = start + needle.len();
            // Whole label names only (`namespace` must not match `kubernetes_namespace`).
            let prev = clean[..start].chars().next_back();
            if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let value: String = clean[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .collect();
            if !value.is_empty() {
                return Some(value);
            }
        }
    }
    None
}

/// Every `values:[[t,v],...]` block of a section, with the labels text before it.
fn series_of(text: &str) -> Vec<Series> {
    let clean = text.replace(['"', '\\'], "");
    let mut out = Vec::new();
    let mut rest = clean.as_str();
    while let Some(pos) = rest.find("values:[") {
        let labels = rest[..pos]
            .rsplit("metric:")
            .next()
            .unwrap_or_default()
            .to_string();
        let after = &rest[pos + "values:[".len()..];
        let (samples, consumed) = parse_pairs(after);
        out.push(Series { labels, samples });
        rest = &after[consumed..];
    }
    out
}

/// Parses `[t,v],[t,v]]` and returns the samples and the bytes consumed.
fn parse_pairs(text: &str) -> (Vec<(f64, f64)>, usize) {
    let mut samples = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'[' {
            break;
        }
        let Some(close) = text[i..].find(']') else {
            break;
        };
        let pair = &text[i + 1..i + close];
        if let Some((t, v)) = pair.split_once(',') {
            let value = match v.trim() {
                "NaN" => f64::NAN,
                "+Inf" | "Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().unwrap_or(f64::NAN),
            };
            if let Ok(t) = t.trim().parse::<f64>() {
                samples.push((t, value));
            }
        }
        i += close + 1;
    }
    (samples, i)
}

fn infer_step(series: &[Series]) -> Option<f64> {
    series.iter().find_map(|s| {
        s.samples
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .find(|d| *d > 0.0 && d.is_finite())
    })
}

fn per_pod_average(series: &[Series]) -> Vec<f64> {
    use std::collections::BTreeMap;
    // pod → timestamp(ms) → largest value
    let mut pods: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for s in series {
        let pod = label_value(&s.labels, "pod").unwrap_or_else(|| s.labels.clone());
        let entry = pods.entry(pod).or_default();
        for (t, v) in &s.samples {
            if !v.is_finite() {
                continue;
            }
            let slot = entry.entry((t * 1000.0) as i64).or_insert(*v);
            *slot = slot.max(*v);
        }
    }
    let mut by_time: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
    for samples in pods.values() {
        for (t, v) in samples {
            let slot = by_time.entry(*t).or_insert((0.0, 0));
            slot.0 += v;
            slot.1 += 1;
        }
    }
    by_time
        .values()
        .map(|(sum, n)| sum / f64::from(*n))
        .collect()
}

/// `CPU Resource Requests: 200m, CPU Resource Limits: 500m, Memory Resource Requests: 64Mi, ...`; `0` = unset.
fn parse_resources(text: &str) -> (Resources, Resources) {
    let field = |name: &str| -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let pos = lower.find(&name.to_ascii_lowercase())?;
        let value = text[pos + name.len()..]
            .trim_start_matches([':', ' '])
            .split([',', '\n'])
            .next()?
            .trim()
            .to_string();
        Some(value)
    };
    let cpu = |name: &str| {
        field(name)
            .and_then(|v| v.parse::<CpuMillis>().ok())
            .filter(|v| v.0 > 0)
    };
    let mem = |name: &str| {
        field(name)
            .and_then(|v| v.parse::<Bytes>().ok())
            .filter(|v| v.0 > 0)
    };
    (
        Resources {
            cpu: cpu("CPU Resource Requests"),
            memory: mem("Memory Resource Requests"),
        },
        Resources {
            cpu: cpu("CPU Resource Limits"),
            memory: mem("Memory Resource Limits"),
        },
    )
}

/// `Pod Name: p, Event Type: Warning, Event Reason: OOMKilled, Event Message: ...` per line.
fn parse_events(text: &str) -> Vec<EventSummary> {
    let mut events: Vec<EventSummary> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(1000) {
        let part = |name: &str, next: Option<&str>| -> String {
            let Some(pos) = line.find(name) else {
                return String::new();
            };
            let rest = &line[pos + name.len()..];
            let end = next.and_then(|n| rest.find(n)).unwrap_or(rest.len());
            rest[..end].trim().trim_end_matches(',').trim().to_string()
        };
        let kind = part("Event Type:", Some(", Event Reason:"));
        let reason = part("Event Reason:", Some(", Event Message:"));
        let message = part("Event Message:", None);
        if kind.is_empty() && reason.is_empty() && message.is_empty() {
            continue;
        }
        if let Some(e) = events
            .iter_mut()
            .find(|e| e.kind == kind && e.reason == reason && e.message == message)
        {
            e.count = e.count.saturating_add(1);
        } else {
            events.push(EventSummary {
                kind,
                reason,
                message,
                count: 1,
                last_seen: 0,
            });
        }
    }
    events
}

/// Used when neither the recommendation nor the snapshot has a value: modest, always-valid quantities.
const DEFAULT_CPU_REQUEST: CpuMillis = CpuMillis(100);
const DEFAULT_MEMORY_REQUEST: Bytes = Bytes(128 * MIB);

/// The seed's flat answer: one set of resources for the deployment's containers. Falls back to the snapshot's
/// current values, then to defaults, so each string is a valid quantity and limit ≥ request.
pub fn to_seed_recommendation(
    rec: &Recommendation,
    snapshot: &MetricsSnapshot,
) -> SeedRecommendation {
    let first_rec = rec.containers.first();
    let current = snapshot.containers.first();
    let cpu_request = first_rec
        .and_then(|c| c.requests.cpu)
        .or_else(|| current.and_then(|c| c.requests.cpu))
        .unwrap_or(DEFAULT_CPU_REQUEST);
    let memory_request = first_rec
        .and_then(|c| c.requests.memory)
        .or_else(|| current.and_then(|c| c.requests.memory))
        .unwrap_or(DEFAULT_MEMORY_REQUEST);
    let cpu_limit = first_rec
        .and_then(|c| c.limits.cpu)
        .or_else(|| current.and_then(|c| c.limits.cpu))
        .unwrap_or(CpuMillis(cpu_request.0.saturating_mul(2)))
        .max(cpu_request);
    let memory_limit = first_rec
        .and_then(|c| c.limits.memory)
        .or_else(|| current.and_then(|c| c.limits.memory))
        .unwrap_or(Bytes(memory_request.0.saturating_mul(2)))
        .max(memory_request);
    SeedRecommendation {
        replicas: rec.replicas.max(1),
        cpu_request: format!("{}m", cpu_request.0),
        cpu_limit: format!("{}m", cpu_limit.0),
        memory_request: memory_request.to_string(),
        memory_limit: memory_limit.to_string(),
    }
}

/// Per-pod input for `render_metrics`.
#[derive(Debug, Clone)]
pub struct SeedPod {
    pub name: String,
    /// CPU cores, one sample per step.
    pub cpu: Vec<f64>,
    /// Memory bytes, one sample per step.
    pub memory: Vec<f64>,
}

/// One deployment as the seed's controller would see it over a window.
#[derive(Debug, Clone)]
pub struct SeedScenario {
    pub namespace: String,
    pub deployment: String,
    /// Unix seconds of the first sample.
    pub start: i64,
    pub step: i64,
    pub pods: Vec<SeedPod>,
    pub request_rate: Vec<f64>,
    pub node_available: Vec<f64>,
    /// CPU request, CPU limit, memory request, memory limit as the Go client prints them.
    pub resources: [String; 4],
    /// (pod, type, reason, message)
    pub events: Vec<[String; 4]>,
}

/// Renders the seed controller's metrics text (after its quote stripping) for one deployment — the baseline of
/// the prompt-size benchmark and the input of the seed-protocol tests. Labels follow what cAdvisor,
/// kube-state-metrics and node-exporter attach in a Helm-installed Prometheus on minikube — the label set of the
/// seed's own recorded example — so the baseline is the seed's real payload shape.
pub fn render_metrics(scenario: &SeedScenario) -> String {
    let SeedScenario {
        namespace,
        deployment,
        start,
        step,
        pods,
        request_rate,
        node_available,
        resources,
        events,
    } = scenario;
    let (start, step) = (*start, *step);
    let n = pods.first().map_or(0, |p| p.cpu.len());
    let values = |series: &dyn Fn(usize) -> String| -> String {
        let items: Vec<String> = (0..n)
            .map(|i| format!("[{},{}]", start + step * i as i64, series(i)))
            .collect();
        items.join(",")
    };
    let wrap = |results: Vec<String>| {
        format!(
            "{{status:success,data:{{resultType:matrix,result:[{}]}}}}",
            results.join(",")
        )
    };
    let pod_names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    let pod_regex = pod_names.join("|");
    let mut out = String::new();

    let ksm = format!(
        "__name__:kube_deployment_spec_replicas,app_kubernetes_io_component:metrics,app_kubernetes_io_instance:prometheus,app_kubernetes_io_managed_by:Helm,app_kubernetes_io_name:kube-state-metrics,app_kubernetes_io_part_of:kube-state-metrics,app_kubernetes_io_version:2.15.0,deployment:{deployment},helm_sh_chart:kube-state-metrics-5.27.0,instance:10.244.0.135:8080,job:kubernetes-service-endpoints,namespace:{namespace},node:node-1,service:prometheus-kube-state-metrics"
    );
    let replicas = pods.len();
    let _ = write!(
        out,
        "Deployment Replicas-\nPromQL: kube_deployment_spec_replicas{{deployment={deployment}, namespace={namespace}}} Metrics: {}\n",
        wrap(vec![format!(
            "{{metric:{{{ksm}}},values:[{}]}}",
            values(&|_| replicas.to_string())
        )])
    );
    let cpu_results: Vec<String> = pods
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let labels = format!(
                "beta_kubernetes_io_arch:amd64,beta_kubernetes_io_os:linux,cpu:total,id:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{k:08x}_4e40_457e_b9ea_9ccb589a54ad.slice,instance:minikube,job:kubernetes-nodes-cadvisor,kubernetes_io_arch:amd64,kubernetes_io_hostname:minikube,kubernetes_io_os:linux,minikube_k8s_io_commit:210b148df93a80eb872ecbeb7e35281b3c582c61,minikube_k8s_io_name:minikube,minikube_k8s_io_primary:true,minikube_k8s_io_updated_at:2024_11_25T17_14_33_0700,minikube_k8s_io_version:v1.34.0,namespace:{namespace},pod:{}",
                p.name
            );
            format!("{{metric:{{{labels}}},values:[{}]}}", values(&|i| p.cpu[i].to_string()))
        })
        .collect();
    let _ = write!(
        out,
        "CPU Usage-\nPromQL: rate(container_cpu_usage_seconds_total{{pod=~{pod_regex}, namespace={namespace}}}[2m]) Metrics: {}\n",
        wrap(cpu_results)
    );
    let avg_mem =
        |i: usize| pods.iter().map(|p| p.memory[i]).sum::<f64>() / pods.len().max(1) as f64;
    let _ = write!(
        out,
        "RAM Usage-\nPromQL: avg(container_memory_usage_bytes{{pod=~{pod_regex}, namespace={namespace}}}) Metrics: {}\n",
        wrap(vec![format!(
            "{{metric:{{}},values:[{}]}}",
            values(&|i| format!("{}", avg_mem(i).round()))
        )])
    );
    let node = "__name__:node_memory_MemAvailable_bytes,app_kubernetes_io_component:metrics,app_kubernetes_io_instance:prometheus,app_kubernetes_io_managed_by:Helm,app_kubernetes_io_name:prometheus-node-exporter,app_kubernetes_io_part_of:prometheus-node-exporter,app_kubernetes_io_version:1.8.2,helm_sh_chart:prometheus-node-exporter-4.42.0,instance:192.168.49.2:9100,job:kubernetes-service-endpoints,namespace:default,node:node-1,service:prometheus-prometheus-node-exporter";
    let _ = write!(
        out,
        "Node Available Memory-\nPromQL: node_memory_MemAvailable_bytes Metrics: {}\n",
        wrap(vec![format!(
            "{{metric:{{{node}}},values:[{}]}}",
            values(&|i| format!("{}", node_available.get(i).copied().unwrap_or(0.0).round()))
        )])
    );
    let _ = write!(
        out,
        "HTTP Request Rate-\nPromQL: sum(rate(nginx_ingress_controller_requests{{ingress={deployment}}}[2m])) Metrics: {}\n",
        wrap(vec![format!(
            "{{metric:{{}},values:[{}]}}",
            values(&|i| request_rate.get(i).copied().unwrap_or(0.0).to_string())
        )])
    );
    let _ = write!(
        out,
        "Resource requests and limits-\nCPU Resource Requests: {}, CPU Resource Limits: {}, Memory Resource Requests: {}, Memory Resource Limits: {}\n",
        resources[0], resources[1], resources[2], resources[3]
    );
    out.push_str("Events of the pods-\n");
    for [pod, kind, reason, message] in events {
        let _ = writeln!(
            out,
            "Pod Name: {pod}, Event Type: {kind}, Event Reason: {reason}, Event Message: {message}"
        );
    }
    out
}

/// The seed agent's prompt around the metrics text (its `Prompt.prompt_builder`), for the size benchmark.
pub fn seed_prompt(metrics: &str) -> String {
    format!("{SEED_PROMPT_HEAD}{metrics}\n        ")
}

/// The instructions of the seed agent's prompt (paraphrase-free copy of its wording is not needed for the
/// benchmark: what matters is its length, which this matches within a few tokens).
const SEED_PROMPT_HEAD: &str = "You are given a set of metrics for a Kubernetes deployment, including the current replica count, CPU usage per pod, memory usage per pod, node available memory and events of the pods. Your task is to determine the optimal number of replicas and resource requests/limits to ensure the deployment operates efficiently without running out of resources or being OOM-killed. The goal is to maximize resource efficiency while ensuring stability, scalability, and resilience to workload spikes.

Steps to Follow:
Analyze Resource Usage:

Evaluate the average, peak, and spike CPU and memory usage of all existing pods over a suitable time range.
If available, consider the 90th or 95th percentile usage to account for transient spikes.
Check if the current resource requests and limits for CPU and memory are appropriate based on both observed utilization and expected workload variability.
Adjust Resource Requests and Limits Conservatively:

Memory Requests and Limits:
Set memory requests based on the peak observed usage with an additional safety margin (e.g., +20%-50%).
Set memory limits to at least 2x the request to allow flexibility for spikes.
Ensure the memory request is not too low (e.g., minimum 50Mi) and does not exceed node capacity.
CPU Requests and Limits:
Set CPU requests based on the average observed usage with a safety margin.
Set CPU limits to at least 2x the request to accommodate workload spikes.
Avoid setting CPU requests and limits too low, which can lead to throttling and degraded performance.
Determine Replica Count:

Ensure the combined workload can be handled by the specified number of replicas without over-utilizing resources.
Reduce replicas only if the remaining pods can handle the workload within the adjusted resource limits.
Add replicas if necessary to distribute the workload, ensuring no single pod exceeds 80% of its allocated resources under peak usage.
Account for Node Resource Availability:

Ensure the combined resource requests of all pods (including replicas) do not exceed the node's available resources.
Leave room for other workloads and Kubernetes system components.
Output Format:
Return the following configuration in JSON format:

\"replicas\": <minimum number of replicas required (positive integer)>,
\"cpu_limit\": <CPU limit per pod (string, in millicores, e.g., \"100m\")>,
\"memory_limit\": <Memory limit per pod (string, in Mebibytes, e.g., \"100Mi\")>,
\"cpu_request\": <CPU request per pod (string, in millicores, e.g., \"50m\")>,
\"memory_request\": <Memory request per pod (string, in Mebibytes, e.g., \"50Mi\")>

Notes:
Prioritize horizontal scaling over vertical scaling to ensure optimal growth and flexibility.
Avoid reducing resource requests and limits excessively to prevent under-provisioning.
Add a buffer margin for resource requests and limits to handle unexpected spikes and workload variability.
If the application still fails, consider reviewing its code for memory or CPU-intensive operations, or assess whether the workload is appropriate for a Kubernetes deployment.
This prompt ensures that resource requests and limits are configured with safety margins, significantly reducing the likelihood of OOM kills or resource throttling while maintaining efficient resource utilization.

Metrics-


";

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::recommendation::Source;

    pub(crate) fn sample_text() -> String {
        let pods: Vec<SeedPod> = (0..3)
            .map(|k| SeedPod {
                name: format!("web-7d4b9c-{k}abcd"),
                cpu: (0..6)
                    .map(|i| 0.1 + 0.01 * i as f64 + 0.05 * k as f64)
                    .collect(),
                memory: (0..6).map(|_| 200.0 * MIB as f64).collect(),
            })
            .collect();
        render_metrics(&SeedScenario {
            namespace: "shop".into(),
            deployment: "web".into(),
            start: 1_735_644_842,
            step: 60,
            pods,
            request_rate: vec![100.0, 110.0, 120.0, 130.0, 140.0, 150.0],
            node_available: vec![8.0e9; 6],
            resources: ["250m", "500m", "256Mi", "512Mi"].map(String::from),
            events: vec![
                [
                    "web-7d4b9c-0abcd",
                    "Warning",
                    "OOMKilled",
                    "Container app exceeded its memory limit",
                ]
                .map(String::from),
                [
                    "web-7d4b9c-1abcd",
                    "Warning",
                    "OOMKilled",
                    "Container app exceeded its memory limit",
                ]
                .map(String::from),
                ["web-7d4b9c-1abcd", "Normal", "Pulled", "Image pulled"].map(String::from),
            ],
        })
    }

    #[test]
    fn parses_the_seed_text_into_a_snapshot() {
        let s = parse_metrics(&sample_text(), 0);
        assert_eq!(s.target.to_string(), "shop/web");
        assert_eq!(s.replicas, 3);
        assert_eq!(s.timestamp, 1_735_644_842 + 300);
        let cpu = s.cpu_per_pod.unwrap_or_default();
        assert_eq!(cpu.samples, 6);
        assert!((cpu.current - (0.15 + 0.05)).abs() < 1e-9, "{cpu:?}");
        assert!((s.memory_per_pod.unwrap_or_default().max - 200.0 * MIB as f64).abs() < 1.0);
        assert_eq!(s.request_rate.unwrap_or_default().current, 150.0);
        assert_eq!(s.cluster.free_memory_bytes, Some(Bytes(8_000_000_000)));
        assert_eq!(s.containers[0].requests.cpu, Some(CpuMillis(250)));
        assert_eq!(s.containers[0].limits.memory, Some(Bytes(512 * MIB)));
        assert_eq!(s.oom_kills, 2);
        assert_eq!(s.events.len(), 2);
        assert!(s.missing.is_empty(), "{:?}", s.missing);
    }

    #[test]
    fn quoted_prometheus_json_parses_too() {
        let text = "Deployment Replicas-\nPromQL: kube_deployment_spec_replicas{deployment=\"api\", namespace=\"prod\"} Metrics: {\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"deployment\":\"api\"},\"values\":[[1,\"4\"],[61,\"5\"]]}]}}\n";
        let s = parse_metrics(text, 99);
        assert_eq!(s.target.to_string(), "prod/api");
        assert_eq!(s.replicas, 5);
        assert!(s.missing.contains(&"cpu".to_string()));
    }

    #[test]
    fn garbage_gives_a_snapshot_with_everything_missing() {
        for text in [
            "",
            "hello",
            "values:[[[[",
            "CPU Usage-\nvalues:[[1,x],[2,",
            "\u{0}\u{ffff}",
        ] {
            let s = parse_metrics(text, 7);
            assert_eq!(s.replicas, 1);
            assert!(s.missing.contains(&"replicas".to_string()));
        }
    }

    proptest::proptest! {
        /// The text comes from the network: any input gives a snapshot, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,600}") {
            let s = parse_metrics(&text, 0);
            let seed = to_seed_recommendation(&Recommendation::new(s.replicas, Source::Builtin), &s);
            proptest::prop_assert!(seed.cpu_request.parse::<CpuMillis>().is_ok());
        }

        #[test]
        fn mangled_seed_text_never_panics(cut in 0usize..8000, junk in "[\\[\\],:{}0-9a-z. -]{0,40}") {
            let text = sample_text();
            let cut = cut.min(text.len());
            let mut mangled: String = text.chars().take(cut).collect();
            mangled.push_str(&junk);
            mangled.extend(text.chars().skip(cut + junk.len()));
            let _ = parse_metrics(&mangled, 0);
        }
    }

    #[test]
    fn seed_answer_is_always_four_valid_quantities() {
        let snapshot = parse_metrics("", 0);
        let rec = Recommendation::new(0, Source::Builtin);
        let seed = to_seed_recommendation(&rec, &snapshot);
        assert_eq!(seed.replicas, 1);
        for q in [&seed.cpu_request, &seed.cpu_limit] {
            assert!(q.parse::<CpuMillis>().is_ok(), "{q}");
        }
        for q in [&seed.memory_request, &seed.memory_limit] {
            assert!(q.parse::<Bytes>().is_ok(), "{q}");
        }
        let current = parse_metrics(&sample_text(), 0);
        let seed = to_seed_recommendation(&rec, &current);
        assert_eq!(seed.cpu_request, "250m");
        assert_eq!(seed.memory_limit, "512Mi");
    }
}
