//! IPA controller: the Kubernetes operator behind `ipa controller`.
//!
//! Per IPA and `interval`: read the target Deployments (one list per kind per namespace), query Prometheus once
//! per metric for all targets, build a `MetricsSnapshot` per target, ask the agent (or the built-in recommender),
//! run the guardrails with the state kept in status, apply only what changed (scale subresource; a
//! strategic-merge patch keyed on container name), and report status, conditions and Events.

pub mod ask;
pub mod clock;
pub mod conditions;
pub mod conflicts;
pub mod crd;
pub mod decide;
mod error;
pub mod http;
pub mod in_place;
pub mod manifests;
pub mod metrics;
pub mod read;
pub mod reconcile;
pub mod server;
pub mod summarize;
pub mod tenancy;
pub mod urls;
pub mod webhook;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use crd::{IPA, IpaSpec, IpaStatus};
pub use error::Error;
pub use http::http_client;

pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    crd::parse_duration(text).map(Duration::from)
}

/// Arguments of `ipa controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:8080). Off when absent.
    #[arg(long, env = "IPA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Connect with this kubeconfig instead of the in-cluster ServiceAccount or `KUBECONFIG` (e.g. a
    /// ServiceAccount token's kubeconfig, to run with exactly the install's RBAC).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Only watch IPAs in this namespace (default: all namespaces).
    #[arg(long, env = "IPA_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Run only while holding a Lease, so several replicas can run for availability.
    #[arg(long, env = "IPA_LEADER_ELECTION")]
    pub leader_election: bool,
    #[arg(long, default_value = "ipa-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ipa-system")]
    pub lease_namespace: String,
    /// Identity in the Lease and in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Timeout of one agent request (Go duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub agent_timeout: Duration,
    /// Agent requests in flight per IPA.
    #[arg(long, default_value_t = 8)]
    pub agent_concurrency: usize,
    /// Timeout of one Prometheus query.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub prometheus_timeout: Duration,
    /// `rate()` range for counters; at least two scrape intervals.
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub rate_window: Duration,
    /// Window the snapshot statistics cover.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub window: Duration,
    /// Demand history sent for forecasting.
    #[arg(long, default_value = "30m", value_parser = duration)]
    pub history: Duration,
    /// Pod and Deployment Events younger than this are reported.
    #[arg(long, default_value = "15m", value_parser = duration)]
    pub events_window: Duration,
    /// IPAs reconciled in parallel.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
    /// Let an IPA manage Deployments in any namespace (admin opt-in). Without it, an IPA manages only its own
    /// namespace, plus namespaces annotated `ipa.shafinhasnat.me/allow-from: <ipa namespace>[,...]` or `*`.
    #[arg(long, env = "IPA_ALLOW_CROSS_NAMESPACE")]
    pub allow_cross_namespace: bool,
    /// Run the PromQL of IPAs' `demandQuery` fields (admin opt-in). Off by default: IPA's own queries only read
    /// the IPA's allowed namespaces, while a free-form query can read any series the controller's Prometheus
    /// credentials can, and its value shows in the IPA's decisions.
    #[arg(long, env = "IPA_ALLOW_DEMAND_QUERY")]
    pub allow_demand_query: bool,
    /// Allowed `prometheusUri`/`llmAgent` URLs: a URL prefix (`https://prom.example.com/`), a host
    /// (`prom.example.com`) or a host suffix (`*.example.com`). Repeatable. Default: cluster-internal service hosts
    /// (`*.svc`, `*.svc.cluster.local`, hosts without a dot) and loopback. The `--agent-url` is always allowed.
    #[arg(
        long = "allowed-url-prefix",
        env = "IPA_ALLOWED_URL_PREFIXES",
        value_delimiter = ','
    )]
    pub allowed_url_prefixes: Vec<String>,
    /// The agent installed with the controller (e.g. `http://ipa-agent.ipa-system`). The token in the
    /// controller's `IPA_AGENT_TOKEN` environment variable is sent only to this agent.
    #[arg(long, env = "IPA_AGENT_URL")]
    pub agent_url: Option<String>,
    #[command(flatten)]
    pub webhook: webhook::WebhookArgs,
}

/// Waits for SIGINT or SIGTERM.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs the controller until SIGINT/SIGTERM (or, with leader election, until the lease is lost).
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    run_until(args, termination()).await
}

/// Runs the controller until `stop` completes (tests and embedders), SIGINT/SIGTERM aside.
pub async fn run_until(
    args: ControllerArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // kube and reqwest share one rustls; pick its crypto provider once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    {
        let tx = shutdown_tx.clone();
        tokio::spawn(async move {
            stop.await;
            info!("shutting down");
            let _ = tx.send(true);
        });
    }
    let server_task = match args.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, &metrics, &ready, shutdown_rx.clone()).await?),
        None => None,
    };
    if args.allow_cross_namespace {
        warn!("--allow-cross-namespace: every IPA may manage Deployments in any namespace");
    }
    let ipas: Api<IPA> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    ipas.list(&ListParams::default().limit(1))
        .await
        .map_err(Error::kube(
            "listing IPAs (is the CRD installed? `ipa crd | kubectl apply -f -`)",
        ))?;
    // Every replica serves the webhook, the standbys too: the apiserver calls whichever the Service picks.
    let scope = (args.lease_namespace.as_str(), args.namespace.as_deref());
    let webhook = webhook::start(client.clone(), &args.webhook, scope, shutdown_rx.clone());
    ready.store(true, Ordering::Relaxed);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("ipa-controller-{}", std::process::id()));
    let leadership = if args.leader_election {
        match lead(&client, &args, &identity, &shutdown_tx, shutdown_rx.clone()).await? {
            Some(leadership) => Some(leadership),
            None => return Ok(()), // stopped before it led
        }
    } else {
        None
    };
    let mut ctx = context(client, &args, metrics, identity)?;
    ctx.webhook = webhook;
    let ctx = Arc::new(ctx);
    info!("controller running");
    Controller::new(ipas, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(args.concurrency.max(1)))
        .graceful_shutdown_on(wait_true(shutdown_rx.clone()))
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    let _ = shutdown_tx.send(true);
    if let Some(task) = server_task {
        let _ = task.await;
    }
    // Dropping the receiver makes the lease task release the Lease so a standby takes over at once.
    drop(shutdown_rx);
    let Some(leadership) = leadership else {
        info!("stopped");
        return Ok(());
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), leadership.task).await;
    if leadership.lost.load(Ordering::Relaxed) {
        return Err(Error::LostLeadership);
    }
    info!("stopped");
    Ok(())
}

/// The API client: from `--kubeconfig` when given, else the in-cluster ServiceAccount or `KUBECONFIG`.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<Client, Error> {
    let Some(path) = kubeconfig else {
        return Client::try_default().await.map_err(Error::KubeConfig);
    };
    let unreadable = |e: kube::config::KubeconfigError| {
        Error::Config(format!("kubeconfig {}: {e}", path.display()))
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(unreadable)?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(unreadable)?;
    Client::try_from(config).map_err(Error::KubeConfig)
}

/// Serves /metrics, /healthz and /readyz until `stop`.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: &Arc<metrics::Metrics>,
    ready: &Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let serve_error = |source| Error::Serve {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(serve_error)?;
    let local = listener.local_addr().map_err(serve_error)?;
    info!(addr = %local, "serving /metrics, /healthz, /readyz");
    let app = server::router(server::ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(wait_true(stop))
            .await
        {
            warn!(error = %e, "metrics server stopped");
        }
    }))
}

/// A Lease held: the task that renews it, and whether it was lost.
struct Leadership {
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    lost: Arc<AtomicBool>,
}

/// Waits until this replica holds the Lease (`None` when stopped first); losing it later stops the controller.
async fn lead(
    client: &Client,
    args: &ControllerArgs,
    identity: &str,
    shutdown_tx: &Arc<watch::Sender<bool>>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<Option<Leadership>, Error> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(Error::Lease)?;
    let (mut leader, task) = manager.watch().await;
    info!(lease = %args.lease_name, identity = %identity, "waiting for leadership");
    let mut stop = shutdown_rx.clone();
    tokio::select! {
        r = leader.wait_for(|v| *v) => {
            if r.is_err() {
                return Err(Error::LostLeadership);
            }
        }
        _ = stop.wait_for(|v| *v) => return Ok(None),
    }
    info!("leading");
    let (tx, lost) = (shutdown_tx.clone(), Arc::new(AtomicBool::new(false)));
    let lost_flag = lost.clone();
    let mut stop = shutdown_rx;
    tokio::spawn(async move {
        tokio::select! {
            _ = leader.wait_for(|v| !*v) => {
                lost_flag.store(true, Ordering::Relaxed);
                warn!("lost leadership");
                let _ = tx.send(true);
            }
            _ = stop.wait_for(|v| *v) => {}
        }
        // `leader` is dropped here: the lease task then releases the Lease.
    });
    Ok(Some(Leadership { task, lost }))
}

/// What every reconcile shares, from the flags and the environment.
fn context(
    client: Client,
    args: &ControllerArgs,
    metrics: Arc<metrics::Metrics>,
    identity: String,
) -> Result<reconcile::Context, Error> {
    let urls = urls::UrlPolicy::new(&args.allowed_url_prefixes, args.agent_url.as_deref())
        .map_err(Error::Config)?;
    // Secrets come from the environment only, never flags.
    let install_token = std::env::var("IPA_AGENT_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if install_token.is_some() && args.agent_url.is_none() {
        warn!("IPA_AGENT_TOKEN is set but --agent-url is not: the token is never sent");
    }
    let http = http_client()?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: reconcile::MANAGER.into(),
            instance: Some(identity),
        },
    );
    Ok(reconcile::Context {
        advisories: Arc::default(),
        absent_kinds: Arc::default(),
        ca_clients: Arc::default(),
        client,
        recorder,
        http: http.clone(),
        agent: ask::agent::AgentClient::new(http, args.agent_timeout, metrics.clone()),
        metrics,
        urls,
        install_token,
        webhook: None,
        settings: reconcile::Settings {
            stats_window: args.window.as_secs().max(30),
            history: args.history.as_secs().max(args.window.as_secs()),
            rate_window: args.rate_window.as_secs().max(1),
            agent_concurrency: args.agent_concurrency.max(1),
            events_window: args.events_window.as_secs(),
            prometheus_timeout: args.prometheus_timeout,
            allow_cross_namespace: args.allow_cross_namespace,
            allow_demand_query: args.allow_demand_query,
        },
    })
}
