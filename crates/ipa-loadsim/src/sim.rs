//! The pure simulation step: given the pods the API shows and each Deployment's offered load, decide which
//! pods serve, split the load over them with the shared [`AppModel`], integrate CPU and request counters,
//! and detect OOM kills. No IO; time is passed in.

use std::collections::{BTreeMap, BTreeSet};

use ipa_sim::model::{AppModel, split_load};

use crate::load::DeploymentId;

/// Identifies a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
}

/// What the API says about a pod, reduced to what the simulation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PodObservation {
    pub id: PodId,
    pub uid: String,
    pub node: Option<String>,
    /// The Deployment owning the pod (through its ReplicaSet), if any.
    pub deployment: Option<String>,
    /// The application container: the pod's first container.
    pub container: String,
    pub cpu_limit_cores: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    /// Unix seconds the container started running; `None` while the pod is not Running (or is terminating).
    pub running_since: Option<f64>,
}

/// A node and its memory capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObservation {
    pub name: String,
    pub memory_capacity_bytes: f64,
}

/// Load offered to one Deployment in this step.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub rps: f64,
    /// The Ingress whose counters record the requests; none = no request counters.
    pub ingress: Option<String>,
}

/// Timing of the simulated application, in real seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    pub model: AppModel,
    /// From container start until the pod serves (the app's warm-up).
    pub startup_seconds: f64,
    /// How long an OOM-killed container is out before it serves again.
    pub restart_seconds: f64,
}

/// Page cache a container holds on top of its working set, as a share of the working set: cAdvisor's
/// `container_memory_usage_bytes` includes it, `container_memory_working_set_bytes` does not.
pub const PAGE_CACHE_SHARE: f64 = 0.1;

/// The simulated state of one running pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub uid: String,
    pub node: Option<String>,
    pub deployment: Option<String>,
    pub container: String,
    /// Integrated CPU usage since the container was first seen (`container_cpu_usage_seconds_total`).
    pub cpu_seconds_total: f64,
    pub cpu_cores: f64,
    pub working_set_bytes: f64,
    pub restarts: u64,
    /// Out after an OOM kill until this Unix time.
    pub down_until: Option<f64>,
    pub serving: bool,
    pub served_rps: f64,
}

impl PodState {
    pub fn usage_bytes(&self) -> f64 {
        self.working_set_bytes * (1.0 + PAGE_CACHE_SHARE)
    }
}

/// Request counters per status code: of one Ingress, as ingress-nginx keeps them, or of one Deployment's
/// application.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RequestCounters {
    /// Requests answered (status 200).
    pub served: f64,
    /// Requests no serving pod could take (status 503).
    pub dropped: f64,
}

/// The ingress a request counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngressId {
    pub namespace: String,
    pub ingress: String,
}

/// A Deployment's state after a step, for `GET /load`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DeploymentStatus {
    pub offered_rps: f64,
    pub served_rps: f64,
    pub dropped_rps: f64,
    pub running_pods: usize,
    pub serving_pods: usize,
    pub oom_kills: u64,
    /// The application's own request counters (served, dropped), kept while the Deployment has load: what a
    /// Prometheus client library in the app would count, whatever fronts it (`app_http_requests_total`).
    pub requests: RequestCounters,
}

/// An OOM kill to report (Event + restart).
#[derive(Debug, Clone, PartialEq)]
pub struct OomKill {
    pub pod: PodId,
    pub uid: String,
    pub node: Option<String>,
    pub container: String,
    pub working_set_bytes: f64,
    pub limit_bytes: f64,
}

/// Everything the load simulator knows and exports.
#[derive(Debug, Clone)]
pub struct Simulation {
    config: SimConfig,
    pods: BTreeMap<PodId, PodState>,
    requests: BTreeMap<IngressId, RequestCounters>,
    deployments: BTreeMap<DeploymentId, DeploymentStatus>,
    /// Node name → available memory bytes.
    node_available: BTreeMap<String, f64>,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            pods: BTreeMap::new(),
            requests: BTreeMap::new(),
            deployments: BTreeMap::new(),
            node_available: BTreeMap::new(),
        }
    }

    pub fn pods(&self) -> &BTreeMap<PodId, PodState> {
        &self.pods
    }

    pub fn requests(&self) -> &BTreeMap<IngressId, RequestCounters> {
        &self.requests
    }

    pub fn deployments(&self) -> &BTreeMap<DeploymentId, DeploymentStatus> {
        &self.deployments
    }

    pub fn node_available_bytes(&self) -> &BTreeMap<String, f64> {
        &self.node_available
    }

    /// Advances the simulation by `dt` seconds ending at Unix time `now`. `demand` holds every Deployment
    /// with load or an Ingress; Deployments without an entry get no requests. Returns the OOM kills.
    pub fn step(
        &mut self,
        now: f64,
        dt: f64,
        pods: &[PodObservation],
        nodes: &[NodeObservation],
        demand: &BTreeMap<DeploymentId, Demand>,
    ) -> Vec<OomKill> {
        let dt = dt.max(0.0);
        let running: Vec<(&PodObservation, f64)> = pods
            .iter()
            .filter_map(|p| p.running_since.map(|since| (p, since)))
            .collect();

        // Forget pods that stopped running or were replaced by a pod of the same name.
        let live: BTreeMap<&PodId, &str> = running
            .iter()
            .map(|(p, _)| (&p.id, p.uid.as_str()))
            .collect();
        self.pods
            .retain(|id, state| live.get(id).is_some_and(|uid| *uid == state.uid));
        for &(pod, since) in &running {
            let state = self.pods.entry(pod.id.clone()).or_insert_with(|| PodState {
                uid: pod.uid.clone(),
                node: None,
                deployment: None,
                container: String::new(),
                cpu_seconds_total: 0.0,
                cpu_cores: 0.0,
                working_set_bytes: 0.0,
                restarts: 0,
                down_until: None,
                serving: false,
                served_rps: 0.0,
            });
            state.node.clone_from(&pod.node);
            state.deployment.clone_from(&pod.deployment);
            state.container.clone_from(&pod.container);
            if state.down_until.is_some_and(|until| until <= now) {
                state.down_until = None;
            }
            state.serving =
                now - since >= self.config.startup_seconds && state.down_until.is_none();
        }

        // Group the running pods by Deployment; pods without one idle.
        let mut groups: BTreeMap<DeploymentId, Vec<&PodObservation>> = BTreeMap::new();
        for (pod, _) in &running {
            if let Some(deployment) = &pod.deployment {
                groups
                    .entry(DeploymentId {
                        namespace: pod.id.namespace.clone(),
                        deployment: deployment.clone(),
                    })
                    .or_default()
                    .push(pod);
            }
        }
        let targets: BTreeSet<&DeploymentId> = groups.keys().chain(demand.keys()).collect();

        let idle = (
            self.config.model.cpu_demand_cores(0.0),
            self.config.model.memory_bytes(0.0),
        );
        for state in self.pods.values_mut() {
            state.cpu_cores = idle.0;
            state.working_set_bytes = idle.1;
            state.served_rps = 0.0;
        }

        let mut kills = Vec::new();
        let mut statuses = BTreeMap::new();
        for id in targets {
            let group = groups.get(id).map(Vec::as_slice).unwrap_or_default();
            let offered = demand.get(id).map_or(0.0, |d| d.rps.max(0.0));
            let serving: Vec<&PodObservation> = group
                .iter()
                .copied()
                .filter(|p| self.pods.get(&p.id).is_some_and(|s| s.serving))
                .collect();
            let limits: Vec<(Option<f64>, Option<f64>)> = serving
                .iter()
                .map(|p| (p.cpu_limit_cores, p.memory_limit_bytes))
                .collect();
            let loads = split_load(&self.config.model, offered, &limits);
            let mut served_total = 0.0;
            let mut status = DeploymentStatus {
                offered_rps: offered,
                running_pods: group.len(),
                serving_pods: serving.len(),
                oom_kills: self.deployments.get(id).map_or(0, |s| s.oom_kills),
                requests: self
                    .deployments
                    .get(id)
                    .map_or_else(RequestCounters::default, |s| s.requests.clone()),
                ..DeploymentStatus::default()
            };
            for (pod, load) in serving.iter().zip(&loads) {
                let Some(state) = self.pods.get_mut(&pod.id) else {
                    continue;
                };
                if load.oom_killed {
                    // The kernel kills the container at its limit; the restarted one starts from its idle
                    // working set and serves nothing until it is back.
                    kills.push(OomKill {
                        pod: pod.id.clone(),
                        uid: pod.uid.clone(),
                        node: pod.node.clone(),
                        container: pod.container.clone(),
                        working_set_bytes: load.memory_bytes,
                        limit_bytes: pod.memory_limit_bytes.unwrap_or(load.memory_bytes),
                    });
                    state.restarts += 1;
                    state.down_until = Some(now + self.config.restart_seconds);
                    state.serving = false;
                    status.oom_kills += 1;
                    status.serving_pods = status.serving_pods.saturating_sub(1);
                    continue;
                }
                state.cpu_cores = load.cpu_cores;
                state.working_set_bytes = load.memory_bytes;
                state.served_rps = load.served_rps;
                served_total += load.served_rps;
            }
            status.served_rps = served_total;
            status.dropped_rps = (offered - served_total).max(0.0);
            status.requests.served += served_total * dt;
            status.requests.dropped += status.dropped_rps * dt;

            if let Some(ingress) = demand.get(id).and_then(|d| d.ingress.clone()) {
                let counters = self
                    .requests
                    .entry(IngressId {
                        namespace: id.namespace.clone(),
                        ingress,
                    })
                    .or_default();
                counters.served += served_total * dt;
                counters.dropped += status.dropped_rps * dt;
            }
            statuses.insert(id.clone(), status);
        }
        self.deployments = statuses;
        // An Ingress no Deployment routes to any more (deleted, or its load removed) stops being exported.
        self.requests.retain(|id, _| {
            demand.iter().any(|(d, demand)| {
                d.namespace == id.namespace
                    && demand.ingress.as_deref() == Some(id.ingress.as_str())
            })
        });

        for state in self.pods.values_mut() {
            state.cpu_seconds_total += state.cpu_cores * dt;
        }

        let mut used: BTreeMap<&str, f64> = BTreeMap::new();
        for state in self.pods.values() {
            if let Some(node) = &state.node {
                *used.entry(node.as_str()).or_default() += state.usage_bytes();
            }
        }
        self.node_available = nodes
            .iter()
            .map(|n| {
                let used = used.get(n.name.as_str()).copied().unwrap_or_default();
                (n.name.clone(), (n.memory_capacity_bytes - used).max(0.0))
            })
            .collect();
        kills
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn config() -> SimConfig {
        SimConfig {
            model: AppModel::default(),
            startup_seconds: 5.0,
            restart_seconds: 10.0,
        }
    }

    fn pod(name: &str, since: Option<f64>, cpu: Option<f64>, mem: Option<f64>) -> PodObservation {
        PodObservation {
            id: PodId {
                namespace: "ipaapp".into(),
                name: name.into(),
            },
            uid: format!("uid-{name}"),
            node: Some("node-0".into()),
            deployment: Some("testapp".into()),
            container: "app".into(),
            cpu_limit_cores: cpu,
            memory_limit_bytes: mem,
            running_since: since,
        }
    }

    fn target() -> DeploymentId {
        DeploymentId {
            namespace: "ipaapp".into(),
            deployment: "testapp".into(),
        }
    }

    fn demand(rps: f64) -> BTreeMap<DeploymentId, Demand> {
        BTreeMap::from([(
            target(),
            Demand {
                rps,
                ingress: Some("testappingress".into()),
            },
        )])
    }

    fn nodes() -> Vec<NodeObservation> {
        vec![NodeObservation {
            name: "node-0".into(),
            memory_capacity_bytes: 16.0 * 1024.0 * MIB,
        }]
    }

    fn cpu(sim: &Simulation, name: &str) -> f64 {
        sim.pods()
            .iter()
            .find(|(id, _)| id.name == name)
            .map_or(f64::NAN, |(_, s)| s.cpu_cores)
    }

    #[test]
    fn pods_serve_only_after_startup_and_split_the_load() {
        let mut sim = Simulation::new(config());
        let pods = vec![
            pod("a", Some(100.0), None, None),
            pod("b", Some(103.0), None, None),
        ];
        sim.step(104.0, 1.0, &pods, &nodes(), &demand(100.0));
        // Nobody serves yet: everything is dropped and both pods idle.
        let status = &sim.deployments()[&target()];
        assert_eq!((status.running_pods, status.serving_pods), (2, 0));
        assert_eq!(status.dropped_rps, 100.0);
        assert_eq!(cpu(&sim, "a"), AppModel::default().idle_cpu_cores);

        sim.step(105.0, 1.0, &pods, &nodes(), &demand(100.0));
        assert_eq!(sim.deployments()[&target()].serving_pods, 1);
        assert!((cpu(&sim, "a") - AppModel::default().cpu_demand_cores(100.0)).abs() < 1e-9);

        sim.step(108.0, 3.0, &pods, &nodes(), &demand(100.0));
        assert_eq!(sim.deployments()[&target()].serving_pods, 2);
        assert!((cpu(&sim, "a") - cpu(&sim, "b")).abs() < 1e-12);
        assert!((cpu(&sim, "a") - AppModel::default().cpu_demand_cores(50.0)).abs() < 1e-9);

        let counters = &sim.requests()[&IngressId {
            namespace: "ipaapp".into(),
            ingress: "testappingress".into(),
        }];
        assert!(
            (counters.dropped - 100.0).abs() < 1e-9,
            "first second dropped"
        );
        assert!(
            (counters.served - 400.0).abs() < 1e-9,
            "then 100 rps for 4 s"
        );
    }

    #[test]
    fn cpu_counter_integrates_usage_and_limits_throttle() -> Result<(), &'static str> {
        let mut sim = Simulation::new(config());
        let pods = vec![pod("a", Some(0.0), Some(0.5), None)];
        sim.step(10.0, 0.0, &pods, &nodes(), &demand(1000.0));
        for t in 11..=20 {
            sim.step(f64::from(t), 1.0, &pods, &nodes(), &demand(1000.0));
        }
        let state = sim.pods().values().next().ok_or("pod missing")?;
        assert!((state.cpu_cores - 0.5).abs() < 1e-9, "capped at the limit");
        assert!((state.cpu_seconds_total - 5.0).abs() < 1e-9);
        let status = &sim.deployments()[&target()];
        assert!(status.dropped_rps > 900.0, "throttled pod cannot keep up");
        Ok(())
    }

    #[test]
    fn memory_over_limit_kills_and_restarts_after_back_off() {
        let mut sim = Simulation::new(config());
        // 64 MiB base + 0.5 MiB per rps: 100 rps needs 114 MiB.
        let pods = vec![pod("a", Some(0.0), None, Some(100.0 * MIB))];
        let kills = sim.step(10.0, 1.0, &pods, &nodes(), &demand(100.0));
        assert_eq!(kills.len(), 1);
        assert_eq!(kills[0].pod.name, "a");
        assert_eq!(kills[0].limit_bytes, 100.0 * MIB);
        let status = &sim.deployments()[&target()];
        assert_eq!((status.serving_pods, status.oom_kills), (0, 1));
        assert_eq!(status.served_rps, 0.0);
        // Down while restarting, then killed again at the same load.
        assert!(
            sim.step(15.0, 5.0, &pods, &nodes(), &demand(100.0))
                .is_empty()
        );
        assert_eq!(sim.deployments()[&target()].serving_pods, 0);
        assert_eq!(
            sim.step(20.0, 5.0, &pods, &nodes(), &demand(100.0)).len(),
            1
        );
        assert_eq!(sim.pods().values().map(|s| s.restarts).sum::<u64>(), 2);
        // Lower load fits the limit: serves normally.
        sim.step(30.0, 10.0, &pods, &nodes(), &demand(10.0));
        assert_eq!(sim.deployments()[&target()].served_rps, 10.0);
    }

    #[test]
    fn node_memory_and_pod_replacement() {
        let mut sim = Simulation::new(config());
        let mut pods = vec![pod("a", Some(0.0), None, None)];
        sim.step(10.0, 1.0, &pods, &nodes(), &demand(0.0));
        let used = sim.pods().values().map(PodState::usage_bytes).sum::<f64>();
        assert_eq!(
            sim.node_available_bytes()["node-0"],
            16.0 * 1024.0 * MIB - used
        );
        sim.step(11.0, 1.0, &pods, &nodes(), &demand(0.0));
        assert!(sim.pods().values().all(|s| s.cpu_seconds_total > 0.0));
        // Same name, new uid: a new pod with fresh counters.
        pods[0].uid = "uid-new".into();
        sim.step(12.0, 1.0, &pods, &nodes(), &demand(0.0));
        assert!(sim.pods().values().all(|s| s.uid == "uid-new"));
        // A pod that stops running disappears from the metrics.
        pods[0].running_since = None;
        sim.step(13.0, 1.0, &pods, &nodes(), &demand(0.0));
        assert!(sim.pods().is_empty());
        assert_eq!(sim.node_available_bytes()["node-0"], 16.0 * 1024.0 * MIB);
    }

    #[test]
    fn the_application_counts_its_requests_without_an_ingress() {
        let mut sim = Simulation::new(config());
        let pods = vec![pod("a", Some(0.0), None, None)];
        let no_ingress = BTreeMap::from([(
            target(),
            Demand {
                rps: 20.0,
                ingress: None,
            },
        )]);
        // Not serving yet (start-up): dropped; then served, and the counters keep counting across steps.
        sim.step(1.0, 1.0, &pods, &nodes(), &no_ingress);
        sim.step(10.0, 2.0, &pods, &nodes(), &no_ingress);
        assert!(sim.requests().is_empty(), "no ingress, no ingress counter");
        let counters = &sim.deployments()[&target()].requests;
        assert_eq!((counters.served, counters.dropped), (40.0, 20.0));
    }

    #[test]
    fn scaling_to_zero_drops_everything_but_keeps_counters() {
        let mut sim = Simulation::new(config());
        sim.step(10.0, 1.0, &[], &nodes(), &demand(20.0));
        let counters = &sim.requests()[&IngressId {
            namespace: "ipaapp".into(),
            ingress: "testappingress".into(),
        }];
        assert_eq!((counters.served, counters.dropped), (0.0, 20.0));
        // Without demand for it (the Deployment and its Ingress are gone) the series goes away.
        sim.step(11.0, 1.0, &[], &nodes(), &BTreeMap::new());
        assert!(sim.requests().is_empty());
    }
}
