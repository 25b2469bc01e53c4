//! `/metrics`: the simulation's state under the names and labels real clusters use (cAdvisor, ingress-nginx,
//! node-exporter), rendered fresh on every scrape so series of deleted pods disappear with them.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::load::DeploymentId;
use crate::sim::{PodId, Simulation};

/// Renders a [`Simulation`] on each scrape.
#[derive(Debug)]
pub struct SimulationCollector {
    sim: Arc<Mutex<Simulation>>,
}

/// A registry holding the simulation collector.
pub fn registry(sim: Arc<Mutex<Simulation>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SimulationCollector { sim }));
    registry
}

/// Encodes `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// Label sets borrow from the locked simulation; the families live no longer than the lock.
fn container_labels<'a>(id: &'a PodId, container: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("namespace", id.namespace.as_str()),
        ("pod", id.name.as_str()),
        ("container", container),
    ]
}

fn deployment_labels(id: &DeploymentId) -> Vec<(&'static str, &str)> {
    vec![
        ("namespace", id.namespace.as_str()),
        ("deployment", id.deployment.as_str()),
    ]
}

/// One metric family: its samples as (labels, value).
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: MetricType,
    samples: Vec<(Vec<(&'a str, &'a str)>, f64)>,
}

impl Family<'_> {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = family.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                _ => ConstGauge::new(*value).encode(sample)?,
            }
        }
        Ok(())
    }
}

impl Collector for SimulationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        let pods = sim.pods();
        let mut families = vec![
            Family {
                // Counters get `_total` appended by the encoder.
                name: "container_cpu_usage_seconds",
                help: "Cumulative CPU time consumed by the container in core-seconds (simulated, cAdvisor name).",
                kind: MetricType::Counter,
                samples: pods
                    .iter()
                    .map(|(id, s)| (container_labels(id, &s.container), s.cpu_seconds_total))
                    .collect(),
            },
            Family {
                name: "container_memory_working_set_bytes",
                help: "Current working set of the container in bytes (simulated, cAdvisor name).",
                kind: MetricType::Gauge,
                samples: pods
                    .iter()
                    .map(|(id, s)| (container_labels(id, &s.container), s.working_set_bytes))
                    .collect(),
            },
            Family {
                name: "container_memory_usage_bytes",
                help: "Current memory usage of the container in bytes, page cache included (simulated, cAdvisor name).",
                kind: MetricType::Gauge,
                samples: pods
                    .iter()
                    .map(|(id, s)| (container_labels(id, &s.container), s.usage_bytes()))
                    .collect(),
            },
            Family {
                name: "loadsim_container_restarts",
                help: "Restarts of the container after simulated OOM kills (the load simulator's own counter).",
                kind: MetricType::Counter,
                samples: pods
                    .iter()
                    .map(|(id, s)| (container_labels(id, &s.container), s.restarts as f64))
                    .collect(),
            },
            Family {
                name: "loadsim_pod_serving",
                help: "1 when the pod is Running, past its start-up delay and not restarting.",
                kind: MetricType::Gauge,
                samples: pods
                    .iter()
                    .map(|(id, s)| {
                        (
                            container_labels(id, &s.container),
                            f64::from(u8::from(s.serving)),
                        )
                    })
                    .collect(),
            },
            Family {
                name: "node_memory_MemAvailable_bytes",
                help: "Memory available on the node: capacity minus the simulated pods' usage (node-exporter name).",
                kind: MetricType::Gauge,
                samples: sim
                    .node_available_bytes()
                    .iter()
                    .map(|(node, bytes)| (vec![("node", node.as_str())], *bytes))
                    .collect(),
            },
        ];
        let mut requests = Vec::new();
        for (id, counters) in sim.requests() {
            let labels = |status| {
                vec![
                    ("namespace", id.namespace.as_str()),
                    ("ingress", id.ingress.as_str()),
                    ("status", status),
                ]
            };
            requests.push((labels("200"), counters.served.floor()));
            requests.push((labels("503"), counters.dropped.floor()));
        }
        families.push(Family {
            // ingress-nginx's counter has no `_total` suffix; OpenMetrics only allows that for untyped series.
            name: "nginx_ingress_controller_requests",
            help: "Requests through the Ingress by status: 503 = no serving pod could take it (ingress-nginx name).",
            kind: MetricType::Unknown,
            samples: requests,
        });
        let deployments = sim.deployments();
        // The application's own counter, for demand that no ingress-nginx sees (`demandQuery`): only for
        // Deployments that have had load, as an idle app's client library would have nothing to count yet.
        let mut app_requests = Vec::new();
        for (id, status) in deployments.iter().filter(|(_, s)| {
            s.offered_rps > 0.0 || s.requests.served > 0.0 || s.requests.dropped > 0.0
        }) {
            let labels = |code| {
                let mut labels = deployment_labels(id);
                labels.push(("code", code));
                labels
            };
            app_requests.push((labels("200"), status.requests.served));
            app_requests.push((labels("503"), status.requests.dropped));
        }
        families.push(Family {
            name: "app_http_requests",
            help: "Requests the Deployment's application counted, by status code: 503 = dropped (the app's own counter, as a Prometheus client library exports it).",
            kind: MetricType::Counter,
            samples: app_requests,
        });
        families.push(Family {
            name: "loadsim_offered_requests_per_second",
            help: "Requests/s offered to the Deployment by the load simulator.",
            kind: MetricType::Gauge,
            samples: deployments
                .iter()
                .map(|(id, s)| (deployment_labels(id), s.offered_rps))
                .collect(),
        });
        families.push(Family {
            name: "loadsim_served_requests_per_second",
            help: "Requests/s the Deployment's serving pods served.",
            kind: MetricType::Gauge,
            samples: deployments
                .iter()
                .map(|(id, s)| (deployment_labels(id), s.served_rps))
                .collect(),
        });
        for family in &families {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ipa_sim::model::AppModel;

    use super::*;
    use crate::sim::{Demand, NodeObservation, PodObservation, SimConfig};

    #[test]
    fn renders_real_metric_names_and_labels() -> Result<(), std::fmt::Error> {
        let mut sim = Simulation::new(SimConfig {
            model: AppModel::default(),
            startup_seconds: 0.0,
            restart_seconds: 1.0,
        });
        let pod = PodObservation {
            id: PodId {
                namespace: "ipaapp".into(),
                name: "testapp-1".into(),
            },
            uid: "u".into(),
            node: Some("n0".into()),
            deployment: Some("testapp".into()),
            container: "cpuload".into(),
            cpu_limit_cores: None,
            memory_limit_bytes: None,
            running_since: Some(0.0),
        };
        let id = DeploymentId {
            namespace: "ipaapp".into(),
            deployment: "testapp".into(),
        };
        let demand = BTreeMap::from([(
            id,
            Demand {
                rps: 10.0,
                ingress: Some("testappingress".into()),
            },
        )]);
        let nodes = [NodeObservation {
            name: "n0".into(),
            memory_capacity_bytes: 1e9,
        }];
        sim.step(1.0, 1.0, &[pod], &nodes, &demand);
        let text = render(&registry(Arc::new(Mutex::new(sim))))?;
        for expected in [
            "# TYPE container_cpu_usage_seconds counter",
            r#"container_cpu_usage_seconds_total{namespace="ipaapp",pod="testapp-1",container="cpuload"} 0.205"#,
            r#"container_memory_working_set_bytes{namespace="ipaapp",pod="testapp-1",container="cpuload"} "#,
            r#"container_memory_usage_bytes{namespace="ipaapp",pod="testapp-1",container="cpuload"} "#,
            r#"loadsim_container_restarts_total{namespace="ipaapp",pod="testapp-1",container="cpuload"} 0"#,
            r#"nginx_ingress_controller_requests{namespace="ipaapp",ingress="testappingress",status="200"} 10"#,
            r#"nginx_ingress_controller_requests{namespace="ipaapp",ingress="testappingress",status="503"} 0"#,
            r#"node_memory_MemAvailable_bytes{node="n0"} "#,
            r#"loadsim_offered_requests_per_second{namespace="ipaapp",deployment="testapp"} 10"#,
            "# TYPE app_http_requests counter",
            r#"app_http_requests_total{namespace="ipaapp",deployment="testapp",code="200"} 10"#,
            r#"app_http_requests_total{namespace="ipaapp",deployment="testapp",code="503"} 0"#,
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        Ok(())
    }
}
