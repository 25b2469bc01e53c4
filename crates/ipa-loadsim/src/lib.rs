//! `ipa loadsim`: the test bed's workload simulator. Pods on KWOK's fake nodes run no code, so this process
//! stands in for the application: it watches the cluster's pods, plays a request rate per Deployment (constant,
//! a `timestamp,value` trace or a synthetic pattern, optionally time-compressed), splits it over the serving pods
//! with the application model shared with the offline simulator, and exposes what cAdvisor, ingress-nginx and
//! node-exporter would for Prometheus to scrape. An OOM kill becomes an Event and a restart. In-place resizes
//! (`pods/resize`) are admitted, applied or refused as a kubelet would ([`resize`]), and the model follows the
//! resources the pod runs with.
//!
//! HTTP: `GET /metrics`, `GET /load`, `PUT /load` (a [`load::LoadRequest`]),
//! `DELETE /load?namespace=..&deployment=..`, `GET /healthz`.

pub mod cluster;
pub mod load;
pub mod metrics;
pub mod resize;
pub mod sim;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipa_sim::model::AppModel;
use kube::Client;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::Instrument;

use crate::cluster::Stores;
use crate::load::{DeploymentId, LoadEntry, LoadError, LoadRequest, LoadTable, SourceView};
use crate::sim::{Demand, DeploymentStatus, SimConfig, Simulation};

/// Arguments of `ipa loadsim`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadsimArgs {
    /// Address to serve /metrics and /load on.
    #[arg(long, env = "LOADSIM_LISTEN", default_value = "127.0.0.1:9102")]
    pub listen: SocketAddr,
    /// Seconds between simulation steps.
    #[arg(long, default_value_t = 0.5)]
    pub tick_seconds: f64,
    /// Seconds from container start until a pod serves [default: the model's].
    #[arg(long)]
    pub startup_seconds: Option<f64>,
    /// Seconds an OOM-killed container is out before it serves again [default: the model's].
    #[arg(long)]
    pub restart_seconds: Option<f64>,
    /// JSON file with the application model (`ipa_sim::model::AppModel`) [default: the built-in one].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seconds an in-place resize the node admitted stays in progress before the node applies it.
    #[arg(long, default_value_t = 1.0)]
    pub resize_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("reading the application model {path}: {source}")]
    ReadModel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the application model {path}: {source}")]
    ParseModel {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("`--{0}` must be a finite number >= 0")]
    BadArgument(&'static str),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("the cluster watches stopped before their first list")]
    WatchStopped,
}

/// Shared by the simulation loop and the HTTP handlers.
#[derive(Debug)]
struct AppState {
    loads: Mutex<LoadTable>,
    sim: Arc<Mutex<Simulation>>,
    registry: Registry,
    ready: AtomicBool,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn non_negative(name: &'static str, value: Option<f64>, default: f64) -> Result<f64, Error> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(Error::BadArgument(name)),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn sim_config(args: &LoadsimArgs) -> Result<SimConfig, Error> {
    let model = match &args.model {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ReadModel {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| Error::ParseModel {
                path: path.clone(),
                source,
            })?
        }
        None => AppModel::default(),
    };
    Ok(SimConfig {
        model,
        startup_seconds: non_negative(
            "startup-seconds",
            args.startup_seconds,
            model.startup_seconds,
        )?,
        restart_seconds: non_negative(
            "restart-seconds",
            args.restart_seconds,
            model.restart_seconds,
        )?,
    })
}

/// Each Deployment's demand at `now`: its configured load (none = 0 rps) and its Ingress (configured, else
/// discovered). Deployments with neither are left out; their pods idle.
pub fn build_demand(
    loads: &LoadTable,
    discovered_ingresses: &BTreeMap<DeploymentId, String>,
    now: f64,
) -> BTreeMap<DeploymentId, Demand> {
    let mut demand: BTreeMap<DeploymentId, Demand> = discovered_ingresses
        .iter()
        .map(|(id, ingress)| {
            (
                id.clone(),
                Demand {
                    rps: 0.0,
                    ingress: Some(ingress.clone()),
                },
            )
        })
        .collect();
    for (id, entry) in loads {
        let ingress = entry
            .ingress
            .clone()
            .or_else(|| discovered_ingresses.get(id).cloned());
        demand.insert(
            id.clone(),
            Demand {
                rps: entry.rps_at(now),
                ingress,
            },
        );
    }
    demand
}

/// Runs the load simulator until the process is stopped.
pub async fn run(args: LoadsimArgs) -> Result<(), Error> {
    let config = sim_config(&args)?;
    let resize_seconds = non_negative("resize-seconds", Some(args.resize_seconds), 1.0)?;
    let tick = Duration::from_secs_f64(args.tick_seconds.clamp(0.05, 60.0));
    let client = Client::try_default().await?;
    let stores = Stores::start(&client);
    let sim = Arc::new(Mutex::new(Simulation::new(config)));
    let state = Arc::new(AppState {
        loads: Mutex::new(LoadTable::new()),
        registry: metrics::registry(Arc::clone(&sim)),
        sim,
        ready: AtomicBool::new(false),
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, ?config, "load simulator listening");
    let app = axum::Router::new()
        .route("/metrics", get(get_metrics))
        .route("/load", get(get_load).put(put_load).delete(delete_load))
        .route("/healthz", get(healthz))
        .with_state(Arc::clone(&state));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    stores.ready().await.map_err(|_| Error::WatchStopped)?;
    state.ready.store(true, Ordering::Release);
    tracing::info!("cluster caches synced; simulating");

    let simulation = simulate(client, stores, Arc::clone(&state), tick, resize_seconds);
    tokio::select! {
        served = server => match served {
            Ok(result) => result.map_err(Error::Serve),
            Err(join) => Err(Error::Serve(std::io::Error::other(join))),
        },
        () = simulation => Ok(()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}

/// The simulation loop: one step per tick over what the caches show, then what the nodes do with resizes.
async fn simulate(
    client: Client,
    stores: Stores,
    state: Arc<AppState>,
    tick: Duration,
    resize_seconds: f64,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = unix_now();
    loop {
        interval.tick().await;
        let now = unix_now();
        let dt = now - last;
        last = now;
        let all_pods = stores.pods.state();
        let all_nodes = stores.nodes.state();
        let pods: Vec<_> = all_pods
            .iter()
            .filter_map(|p| cluster::observe_pod(p))
            .collect();
        let nodes: Vec<_> = all_nodes
            .iter()
            .filter_map(|n| cluster::observe_node(n))
            .collect();
        let discovered = cluster::discover_ingresses(
            &stores.deployments.state(),
            &stores.services.state(),
            &stores.ingresses.state(),
        );
        let demand = {
            let loads = state.loads.lock().unwrap_or_else(PoisonError::into_inner);
            build_demand(&loads, &discovered, now)
        };
        let (resized, views): (Vec<_>, Vec<_>) = all_pods
            .iter()
            .filter_map(|p| Some((Arc::clone(p), cluster::observe_resize(p)?)))
            .unzip();
        let mut views = views;
        let kills = {
            let mut sim = state.sim.lock().unwrap_or_else(PoisonError::into_inner);
            let kills = sim.step(now, dt, &pods, &nodes, &demand);
            // The memory guard of a resize compares the new limit with what the container uses now.
            for view in &mut views {
                let Some(simulated) = sim.pods().get(&view.id).filter(|s| s.uid == view.uid) else {
                    continue;
                };
                for container in view
                    .containers
                    .iter_mut()
                    .filter(|c| c.name == simulated.container)
                {
                    container.usage = Some(ipa_core::quantity::Bytes(
                        simulated.working_set_bytes as u64,
                    ));
                }
            }
            kills
        };
        for kill in kills {
            let span = tracing::info_span!("oom_kill", namespace = %kill.pod.namespace, pod = %kill.pod.name);
            let (client, pods) = (client.clone(), stores.pods.clone());
            tokio::spawn(
                async move {
                    tracing::info!(
                        working_set = kill.working_set_bytes,
                        limit = kill.limit_bytes,
                        "container OOM-killed"
                    );
                    if let Err(err) = cluster::report_oom_kill(&client, &pods, &kill).await {
                        tracing::warn!(error = %err, "could not record the OOM kill in the API");
                    }
                }
                .instrument(span),
            );
        }
        let allocatable = all_nodes
            .iter()
            .filter_map(|n| cluster::node_allocatable(n))
            .collect();
        act_on_resizes(&client, &resized, &views, &allocatable, now, resize_seconds);
    }
}

/// Writes what the nodes decided about each pod whose resize state changes (see [`resize::plan`]), each in a
/// task of its own like the OOM kills, so a slow apiserver never delays the simulation.
fn act_on_resizes(
    client: &Client,
    pods: &[Arc<k8s_openapi::api::core::v1::Pod>],
    views: &[resize::PodView],
    allocatable: &BTreeMap<String, resize::Amounts>,
    now: f64,
    resize_seconds: f64,
) {
    let time =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    for (index, step) in resize::plan(views, allocatable, now, resize_seconds) {
        let (Some(pod), Some(view)) = (pods.get(index), views.get(index)) else {
            continue;
        };
        let Some(patch) = cluster::resize_patch(pod, &step, &time) else {
            continue;
        };
        let span =
            tracing::info_span!("resize", namespace = %view.id.namespace, pod = %view.id.name);
        // A container's first report is routine; the steps of an actual resize are worth a line each.
        let resizing = view.conditions != resize::ResizeConditions::default()
            || view
                .containers
                .iter()
                .any(|c| c.actual.is_some_and(|a| a != c.desired));
        let (client, id) = (client.clone(), view.id.clone());
        tokio::spawn(
            async move {
                if resizing {
                    tracing::info!(?step, "node acts on a resize");
                } else {
                    tracing::debug!("node reports the container resources");
                }
                match cluster::report_resize(&client, &id, &patch).await {
                    Ok(()) => {}
                    // The status changed since the cache saw it; the next tick decides again on the new one.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        tracing::debug!("pod changed meanwhile; retried next tick");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not record the resize in the API")
                    }
                }
            }
            .instrument(span),
        );
    }
}

async fn get_metrics(State(state): State<Arc<AppState>>) -> Response {
    match metrics::render(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the cluster caches",
        )
            .into_response()
    }
}

/// One target as `GET /load` shows it.
#[derive(Debug, Serialize)]
pub struct TargetView {
    pub namespace: String,
    pub deployment: String,
    /// Where its load comes from; none = no load configured (0 rps).
    pub source: Option<SourceView>,
    pub time_scale: Option<f64>,
    pub ingress: Option<String>,
    pub current_rps: f64,
    /// Result of the last simulation step.
    pub status: Option<DeploymentStatus>,
}

fn target_view(
    id: &DeploymentId,
    entry: Option<&LoadEntry>,
    sim: &Simulation,
    now: f64,
) -> TargetView {
    TargetView {
        namespace: id.namespace.clone(),
        deployment: id.deployment.clone(),
        source: entry.map(|e| SourceView::from(&e.source)),
        time_scale: entry.map(|e| e.time_scale),
        ingress: entry.and_then(|e| e.ingress.clone()),
        current_rps: entry.map_or(0.0, |e| e.rps_at(now)),
        status: sim.deployments().get(id).cloned(),
    }
}

#[tracing::instrument(skip(state))]
async fn get_load(State(state): State<Arc<AppState>>) -> Json<Vec<TargetView>> {
    let now = unix_now();
    let loads = state
        .loads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let sim = state.sim.lock().unwrap_or_else(PoisonError::into_inner);
    let mut ids: Vec<&DeploymentId> = loads.keys().chain(sim.deployments().keys()).collect();
    ids.sort();
    ids.dedup();
    Json(
        ids.into_iter()
            .map(|id| target_view(id, loads.get(id), &sim, now))
            .collect(),
    )
}

#[tracing::instrument(skip(state, request), fields(namespace = %request.namespace, deployment = %request.deployment))]
async fn put_load(
    State(state): State<Arc<AppState>>,
    Json(request): Json<LoadRequest>,
) -> Response {
    let now = unix_now();
    // Reading a trace file is blocking IO; it is small and rare, but keep it off the async workers.
    let parsed = tokio::task::spawn_blocking(move || LoadEntry::from_request(&request, now)).await;
    let (id, entry) = match parsed {
        Ok(Ok(ok)) => ok,
        Ok(Err(err)) => return bad_request(&err),
        Err(join) => return (StatusCode::INTERNAL_SERVER_ERROR, join.to_string()).into_response(),
    };
    tracing::info!(source = ?SourceView::from(&entry.source), time_scale = entry.time_scale, "load set");
    state
        .loads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), entry.clone());
    let sim = state.sim.lock().unwrap_or_else(PoisonError::into_inner);
    Json(target_view(&id, Some(&entry), &sim, now)).into_response()
}

/// Which target `DELETE /load` removes.
#[derive(Debug, serde::Deserialize)]
struct TargetQuery {
    namespace: String,
    deployment: String,
}

#[tracing::instrument(skip(state))]
async fn delete_load(
    State(state): State<Arc<AppState>>,
    Query(target): Query<TargetQuery>,
) -> StatusCode {
    let id = DeploymentId {
        namespace: target.namespace,
        deployment: target.deployment,
    };
    let removed = state
        .loads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    if removed.is_some() {
        tracing::info!("load removed");
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn bad_request(err: &LoadError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": err.to_string() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadSource;

    #[test]
    fn demand_uses_configured_then_discovered_ingress() {
        let id = |d: &str| DeploymentId {
            namespace: "ns".into(),
            deployment: d.into(),
        };
        let entry = |ingress: Option<&str>| LoadEntry {
            source: LoadSource::Constant(7.0),
            time_scale: 1.0,
            ingress: ingress.map(str::to_owned),
            started_at: 0.0,
        };
        let loads = LoadTable::from([(id("a"), entry(Some("explicit"))), (id("b"), entry(None))]);
        let discovered = BTreeMap::from([
            (id("a"), "found-a".to_owned()),
            (id("b"), "found-b".to_owned()),
            (id("c"), "found-c".to_owned()),
        ]);
        let demand = build_demand(&loads, &discovered, 10.0);
        assert_eq!(demand[&id("a")].ingress.as_deref(), Some("explicit"));
        assert_eq!(demand[&id("b")].ingress.as_deref(), Some("found-b"));
        assert_eq!(demand[&id("b")].rps, 7.0);
        assert_eq!(demand[&id("c")].rps, 0.0);
        assert_eq!(demand.len(), 3);
    }

    #[test]
    fn arguments_are_validated() {
        let args = LoadsimArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tick_seconds: 0.5,
            startup_seconds: Some(-1.0),
            restart_seconds: None,
            model: None,
            resize_seconds: 1.0,
        };
        assert!(matches!(
            sim_config(&args),
            Err(Error::BadArgument("startup-seconds"))
        ));
        let ok = LoadsimArgs {
            startup_seconds: Some(2.0),
            ..args
        };
        assert!(matches!(
            sim_config(&ok),
            Ok(SimConfig {
                startup_seconds: 2.0,
                ..
            })
        ));
    }
}
