//! Turns one cycle's query results and API reads into a `MetricsSnapshot` per target. Pure: the IO happens in
//! `read`; this is where "an empty result is missing data, never zero" is decided.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipa_core::stats::summarize;
use ipa_core::{
    Bytes, ClusterCapacity, ContainerSnapshot, CpuMillis, DemandHistory, EventSummary,
    MetricsSnapshot, TargetRef,
};

use crate::read::metrics::{CycleMetrics, Frame};
use crate::read::prometheus::{Sample, Series};

/// What the API says about one target this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    pub target: TargetRef,
    pub ingress: Option<String>,
    /// Demand comes from the target's own `demandQuery`, not from `ingress`.
    pub custom_demand: bool,
    pub replicas: u32,
    pub ready_replicas: Option<u32>,
    /// Containers of the pod template with their current requests/limits (usage filled in here).
    pub containers: Vec<ContainerSnapshot>,
    /// Containers the policy manages (`None`: all).
    pub managed: Option<Vec<String>>,
    /// Names of the pods that belong to the Deployment.
    pub pods: BTreeSet<String>,
    pub events: Vec<EventSummary>,
}

impl TargetInfo {
    fn manages(&self, container: &str) -> bool {
        self.managed
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == container))
    }
}

type Key<'a> = (&'a str, &'a str);

/// One cycle's results indexed by (namespace, pod) — or (namespace, ingress) — once, so building every
/// target's snapshot is linear in the number of series, not targets × series.
#[derive(Debug)]
pub struct Indexed<'a> {
    metrics: &'a CycleMetrics,
    cpu: HashMap<Key<'a>, Vec<&'a Series>>,
    memory: HashMap<Key<'a>, Vec<&'a Series>>,
    request_rate: HashMap<Key<'a>, Vec<&'a Series>>,
    restarts: HashMap<Key<'a>, f64>,
    oom_kills: HashMap<Key<'a>, f64>,
}

fn index_series<'a>(
    series: &'a Option<Vec<Series>>,
    second: &str,
) -> HashMap<Key<'a>, Vec<&'a Series>> {
    let mut map: HashMap<Key<'a>, Vec<&'a Series>> = HashMap::new();
    for s in series.iter().flatten() {
        map.entry((label(&s.labels, "namespace"), label(&s.labels, second)))
            .or_default()
            .push(s);
    }
    map
}

fn index_samples(samples: &Option<Vec<Sample>>) -> HashMap<Key<'_>, f64> {
    let mut map = HashMap::new();
    for s in samples.iter().flatten() {
        *map.entry((label(&s.labels, "namespace"), label(&s.labels, "pod")))
            .or_default() += s.value;
    }
    map
}

impl<'a> Indexed<'a> {
    pub fn new(metrics: &'a CycleMetrics) -> Self {
        Self {
            metrics,
            cpu: index_series(&metrics.cpu, "pod"),
            memory: index_series(&metrics.memory, "pod"),
            request_rate: index_series(&metrics.request_rate, "ingress"),
            restarts: index_samples(&metrics.restarts),
            oom_kills: index_samples(&metrics.oom_kills),
        }
    }
}

fn label<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map(String::as_str).unwrap_or("")
}

/// Whether `pod` looks like a pod of Deployment `deployment` by name alone (`<deployment>-<hash>-<suffix>`);
/// the fallback when owner references can't be read.
pub fn pod_name_matches(deployment: &str, pod: &str) -> bool {
    pod.strip_prefix(deployment)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('-').collect();
            parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
        })
}

/// (timestamp → pod → container → value) for the target's series.
type Grid = BTreeMap<i64, BTreeMap<String, BTreeMap<String, f64>>>;

fn grid_for(index: &HashMap<Key<'_>, Vec<&Series>>, info: &TargetInfo) -> Grid {
    let mut grid = Grid::new();
    for pod in &info.pods {
        let Some(series) = index.get(&(info.target.namespace.as_str(), pod.as_str())) else {
            continue;
        };
        for s in series {
            let container = label(&s.labels, "container");
            if !info.manages(container) {
                continue;
            }
            for &(t, v) in &s.points {
                *grid
                    .entry(t.round() as i64)
                    .or_default()
                    .entry(pod.clone())
                    .or_default()
                    .entry(container.to_string())
                    .or_default() += v;
            }
        }
    }
    grid
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Per-pod value at each timestamp: the pod's containers summed, averaged over pods.
fn per_pod(grid: &Grid) -> Vec<(i64, f64)> {
    grid.iter()
        .filter_map(|(&t, pods)| {
            mean(pods.values().map(|c| c.values().sum::<f64>())).map(|v| (t, v))
        })
        .collect()
}

/// All pods together at each timestamp.
fn total(grid: &Grid) -> Vec<(i64, f64)> {
    grid.iter()
        .map(|(&t, pods)| (t, pods.values().flat_map(|c| c.values()).sum::<f64>()))
        .collect()
}

/// One container, averaged over pods, at each timestamp.
fn per_container(grid: &Grid, container: &str) -> Vec<(i64, f64)> {
    grid.iter()
        .filter_map(|(&t, pods)| {
            mean(pods.values().filter_map(|c| c.get(container).copied())).map(|v| (t, v))
        })
        .collect()
}

fn window_stats(points: &[(i64, f64)], frame: Frame) -> Option<ipa_core::SeriesStats> {
    let since = frame.now - frame.stats_window as i64;
    let values: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= since)
        .map(|&(_, v)| v)
        .collect();
    summarize(&values, frame.step as f64)
}

/// Values on the regular grid `[now - history, now]`, gaps as `None`.
fn history_grid(points: &[(i64, f64)], frame: Frame) -> Vec<Option<f64>> {
    if points.is_empty() || frame.step == 0 {
        return Vec::new();
    }
    let by_time: BTreeMap<i64, f64> = points.iter().copied().collect();
    let step = frame.step as i64;
    let slots = (frame.history / frame.step) as i64;
    let start = frame.now - slots * step;
    (0..=slots)
        .map(|i| {
            let t = start + i * step;
            // Prometheus aligns to its own step grid: accept the nearest sample within half a step.
            by_time
                .range(t - step / 2..=t + step / 2)
                .next()
                .map(|(_, v)| *v)
        })
        .collect()
}

/// Sum over the target's pods; `None` when the query failed (`present` is false).
fn sum_for(present: bool, index: &HashMap<Key<'_>, f64>, info: &TargetInfo) -> Option<f64> {
    present.then(|| {
        info.pods
            .iter()
            .filter_map(|pod| index.get(&(info.target.namespace.as_str(), pod.as_str())))
            .sum()
    })
}

fn scalar(samples: &Option<Vec<Sample>>) -> Option<f64> {
    samples
        .as_ref()?
        .first()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
}

/// Cluster-wide free capacity (the same for every target).
pub fn cluster_capacity(metrics: &CycleMetrics) -> ClusterCapacity {
    ClusterCapacity {
        free_memory_bytes: scalar(&metrics.free_memory)
            .filter(|v| *v >= 0.0)
            .map(Bytes::from_f64),
        free_cpu: scalar(&metrics.free_cpu)
            .filter(|v| *v >= 0.0)
            .map(CpuMillis::from_cores_f64),
    }
}

/// The target's requests per second over the history: its `demandQuery`'s series summed per step, or its
/// ingress's series; `None` when it has neither (then demand is not expected), empty when the query failed.
fn demand_points(info: &TargetInfo, index: &Indexed<'_>) -> Option<Vec<(i64, f64)>> {
    let as_points = |s: &Series| {
        s.points
            .iter()
            .map(|&(t, v)| (t.round() as i64, v))
            .collect::<Vec<_>>()
    };
    if info.custom_demand {
        let mut summed: BTreeMap<i64, f64> = BTreeMap::new();
        let series = index
            .metrics
            .demand
            .get(&info.target)
            .and_then(Option::as_ref);
        for (t, v) in series.into_iter().flatten().flat_map(as_points) {
            *summed.entry(t).or_default() += v;
        }
        return Some(summed.into_iter().collect());
    }
    let ingress = info.ingress.as_ref()?;
    let series = index
        .request_rate
        .get(&(info.target.namespace.as_str(), ingress.as_str()));
    Some(
        series
            .into_iter()
            .flatten()
            .flat_map(|s| as_points(s))
            .collect(),
    )
}

/// Builds the snapshot of one target.
pub fn snapshot(info: &TargetInfo, index: &Indexed<'_>, frame: Frame) -> MetricsSnapshot {
    let metrics = index.metrics;
    let mut snap = MetricsSnapshot::new(info.target.clone(), frame.now, info.replicas);
    snap.window_seconds = frame.stats_window.min(u64::from(u32::MAX)) as u32;
    snap.ready_replicas = info.ready_replicas;
    snap.cluster = cluster_capacity(metrics);
    snap.events = info.events.clone();

    let cpu_grid = grid_for(&index.cpu, info);
    let mem_grid = grid_for(&index.memory, info);
    snap.cpu_per_pod = window_stats(&per_pod(&cpu_grid), frame);
    snap.memory_per_pod = window_stats(&per_pod(&mem_grid), frame);
    if snap.cpu_per_pod.is_none() {
        snap.missing.push("cpu".into());
    }
    if snap.memory_per_pod.is_none() {
        snap.missing.push("memory".into());
    }

    snap.containers = info
        .containers
        .iter()
        .filter(|c| info.manages(&c.name))
        .map(|c| ContainerSnapshot {
            cpu_cores: window_stats(&per_container(&cpu_grid, &c.name), frame),
            memory_bytes: window_stats(&per_container(&mem_grid, &c.name), frame),
            ..c.clone()
        })
        .collect();

    let mut history = DemandHistory {
        step_seconds: frame.step.min(u64::from(u32::MAX)) as u32,
        cpu_cores: history_grid(&total(&cpu_grid), frame),
        request_rate: Vec::new(),
    };
    if let Some(points) = demand_points(info, index) {
        snap.request_rate = window_stats(&points, frame);
        if snap.request_rate.is_none() {
            snap.missing.push("request_rate".into());
        }
        history.request_rate = history_grid(&points, frame);
    }
    if !history.cpu_cores.is_empty() || !history.request_rate.is_empty() {
        snap.history = Some(history);
    }

    // Restarts and OOM kills: a failed query is missing input; an empty result means no restarts
    // (kube-state-metrics may simply not be installed, and that must not block scaling forever).
    match sum_for(metrics.restarts.is_some(), &index.restarts, info) {
        Some(v) => snap.restarts = v.round().clamp(0.0, f64::from(u32::MAX)) as u32,
        None => snap.missing.push("restarts".into()),
    }
    if let Some(v) = sum_for(metrics.oom_kills.is_some(), &index.oom_kills, info) {
        snap.oom_kills = v.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    }
    let oom_events = info
        .events
        .iter()
        .filter(|e| e.reason.contains("OOM"))
        .map(|e| e.count)
        .sum::<u32>();
    snap.oom_kills = snap.oom_kills.max(oom_events);
    snap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::prometheus::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn info() -> TargetInfo {
        TargetInfo {
            target: TargetRef {
                namespace: "ns".into(),
                deployment: "app".into(),
            },
            ingress: Some("ing".into()),
            custom_demand: false,
            replicas: 2,
            ready_replicas: Some(2),
            containers: vec![ContainerSnapshot {
                name: "main".into(),
                requests: ipa_core::Resources {
                    cpu: Some(CpuMillis(500)),
                    memory: None,
                },
                limits: ipa_core::Resources::default(),
                cpu_cores: None,
                memory_bytes: None,
            }],
            managed: None,
            pods: ["app-1-a".to_string(), "app-1-b".to_string()].into(),
            events: Vec::new(),
        }
    }

    const FRAME: Frame = Frame {
        now: 1000,
        step: 10,
        stats_window: 60,
        history: 100,
    };

    fn cpu_series(pod: &str, ns: &str, v: f64) -> Series {
        Series {
            labels: labels(&[("namespace", ns), ("pod", pod), ("container", "main")]),
            points: (0..=10).map(|i| (900.0 + 10.0 * f64::from(i), v)).collect(),
        }
    }

    #[test]
    fn pods_are_averaged_and_foreign_series_ignored() {
        let metrics = CycleMetrics {
            cpu: Some(vec![
                cpu_series("app-1-a", "ns", 0.2),
                cpu_series("app-1-b", "ns", 0.4),
                cpu_series("app-1-c", "ns", 9.0), // not one of the Deployment's pods
                cpu_series("app-1-a", "other", 9.0), // another namespace
            ]),
            restarts: Some(Vec::new()),
            ..CycleMetrics::default()
        };
        let snap = snapshot(&info(), &Indexed::new(&metrics), FRAME);
        let cpu = snap.cpu_per_pod.unwrap_or_default();
        assert!((cpu.current - 0.3).abs() < 1e-9);
        assert_eq!(cpu.samples, 7); // 940..=1000
        assert!((snap.containers[0].cpu_cores.unwrap_or_default().current - 0.3).abs() < 1e-9);
        let history = snap.history.unwrap_or_default();
        assert_eq!(history.cpu_cores.len(), 11);
        assert!(
            history
                .cpu_cores
                .iter()
                .all(|v| v.is_some_and(|v| (v - 0.6).abs() < 1e-9))
        );
        assert_eq!(
            snap.missing,
            vec!["memory".to_string(), "request_rate".to_string()]
        );
    }

    #[test]
    fn failed_queries_are_missing_never_zero() {
        let snap = snapshot(&info(), &Indexed::new(&CycleMetrics::default()), FRAME);
        assert_eq!(snap.cpu_per_pod, None);
        assert_eq!(snap.request_rate, None);
        assert!(snap.has_missing_inputs());
        for what in ["cpu", "memory", "request_rate", "restarts"] {
            assert!(snap.missing.iter().any(|m| m == what), "{what}");
        }
        assert_eq!(snap.cluster, ClusterCapacity::default());
    }

    #[test]
    fn request_rate_and_capacity() {
        let metrics = CycleMetrics {
            request_rate: Some(vec![Series {
                labels: labels(&[("namespace", "ns"), ("ingress", "ing")]),
                points: vec![(990.0, 10.0), (1000.0, 20.0)],
            }]),
            free_memory: Some(vec![Sample {
                labels: Labels::new(),
                value: 1024.0,
            }]),
            ..CycleMetrics::default()
        };
        let snap = snapshot(&info(), &Indexed::new(&metrics), FRAME);
        assert_eq!(snap.request_rate.map(|s| s.current), Some(20.0));
        assert_eq!(snap.cluster.free_memory_bytes, Some(Bytes(1024)));
    }

    #[test]
    fn pod_names() {
        assert!(pod_name_matches("web", "web-5d8f7c9b4-x2x9z"));
        assert!(!pod_name_matches("web", "web-api-5d8f7c9b4-x2x9z"));
        assert!(!pod_name_matches("web", "webapp-5d8f7c9b4-x2x9z"));
        assert!(!pod_name_matches("web", "web-5d8f7c9b4"));
    }
}
