//! Scale benchmark on the test bed (`make test` runs it; figures are printed, not asserted): one IPA with 10,
//! 100 and 1,000 target Deployments on KWOK's fake nodes. Per reconcile cycle it reports the Prometheus queries,
//! the Kubernetes API requests, the wall time, and the resident memory of this process (which is the controller:
//! the reconciler runs here, exactly as `ipa controller` runs it).
//!
//! Goals from the issue: O(1) Prometheus queries per cycle in the number of targets, a 1,000-target cycle
//! ≤ 10 s, RSS ≤ 64 MiB.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipa_controller::IPA;
use ipa_controller::ask::agent::AgentClient;
use ipa_controller::metrics::Metrics;
use ipa_controller::reconcile::{self, Context, Settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NS: &str = "ipa-bench";
const EXTRA_NODES: usize = 6;

fn env(name: &str) -> TestResult<String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: run `make testbed-up` and source testbed/.env").into()
    })
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> TestResult<bool>,
) -> TestResult {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Fake nodes so 1,000 pods fit (the bed's own nodes hold 110 pods each).
async fn add_nodes(client: &Client) -> TestResult {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..EXTRA_NODES {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("kwok-bench-{i}"),
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/hostname": format!("kwok-bench-{i}")}},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                       "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"}}
        });
        nodes
            .patch(
                &format!("kwok-bench-{i}"),
                &PatchParams::apply("ipa-bench").force(),
                &Patch::Apply(node),
            )
            .await?;
    }
    Ok(())
}

async fn remove_nodes(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..EXTRA_NODES {
        let _ = nodes
            .delete(&format!("kwok-bench-{i}"), &DeleteParams::default())
            .await;
    }
}

async fn ensure_deployments(client: &Client, n: usize) -> TestResult {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let existing = api.list_metadata(&ListParams::default()).await?.items.len();
    for i in existing..n {
        let name = format!("app-{i:04}");
        let d = json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "shafinhasnat/cpuload",
                                           "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
        });
        api.create(&PostParams::default(), &serde_json::from_value(d)?)
            .await?;
    }
    wait_until("pods ready", Duration::from_secs(300), async || {
        let ready = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    > 0
            })
            .count();
        Ok(ready * 10 >= n * 9)
    })
    .await
}

fn ipa(n: usize, prometheus: &str) -> TestResult<IPA> {
    let groups: Vec<_> = (0..n)
        .map(|i| json!({"deployment": format!("app-{i:04}"), "namespace": NS}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "ipa.shafinhasnat.me/v1alpha1", "kind": "IPA",
        "metadata": {"name": format!("bench-{n}"), "namespace": NS},
        "spec": {"metadata": {"prometheusUri": prometheus, "llmAgent": "", "interval": "60s", "mode": "Recommend",
                              "ipaGroup": groups}}
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test bed (make test)"]
async fn scale_benchmark() -> TestResult {
    env("KUBECONFIG")?;
    let prometheus = env("PROMETHEUS_URL")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            "ipas.ipa.shafinhasnat.me",
            &PatchParams::apply("ipa-e2e").force(),
            &Patch::Apply(IPA::crd()),
        )
        .await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A namespace left by an earlier run may still be terminating: wait until it is gone, then start afresh.
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
    wait_until("old namespace gone", Duration::from_secs(300), async || {
        Ok(namespaces.get_opt(NS).await?.is_none())
    })
    .await?;
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    add_nodes(&client).await?;

    let metrics = Arc::new(Metrics::default());
    let http = reqwest::Client::new();
    let ctx = Arc::new(Context {
        advisories: Arc::default(),
        absent_kinds: Arc::default(),
        ca_clients: Arc::default(),
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: reconcile::MANAGER.into(),
                instance: None,
            },
        ),
        http: http.clone(),
        agent: AgentClient::new(http, Duration::from_secs(10), metrics.clone()),
        metrics: metrics.clone(),
        urls: ipa_controller::urls::UrlPolicy::new(&[], None)?,
        install_token: None,
        webhook: None,
        settings: Settings {
            stats_window: 300,
            history: 1800,
            rate_window: 30,
            agent_concurrency: 8,
            events_window: 900,
            prometheus_timeout: Duration::from_secs(30),
            allow_cross_namespace: false,
            allow_demand_query: false,
        },
    });
    let ipas: Api<IPA> = Api::namespaced(client.clone(), NS);
    let mut rows = Vec::new();
    let result: TestResult = async {
        for n in [10usize, 100, 1000] {
            let setup = Instant::now();
            ensure_deployments(&client, n).await?;
            let object = ipa(n, &prometheus)?;
            ipas.patch(
                &format!("bench-{n}"),
                &PatchParams::apply("ipa-bench").force(),
                &Patch::Apply(&object),
            )
            .await?;
            let mut fetched = ipas.get(&format!("bench-{n}")).await?;
            println!("{n} targets ready after {:?}", setup.elapsed());
            // Warm-up cycle, then the measured one (status cleared so the cycle is due).
            for measured in [false, true] {
                fetched.status = None;
                let q0 = metrics.prometheus_query_total.load(Ordering::Relaxed);
                let k0 = metrics.kube_request_total.load(Ordering::Relaxed);
                let t0 = Instant::now();
                reconcile::reconcile(Arc::new(fetched.clone()), ctx.clone()).await?;
                let took = t0.elapsed();
                if measured {
                    rows.push((
                        n,
                        metrics.prometheus_query_total.load(Ordering::Relaxed) - q0,
                        metrics.kube_request_total.load(Ordering::Relaxed) - k0,
                        took,
                        rss_mib(),
                    ));
                }
            }
            let prom_seconds: f64 = metrics
                .encode()
                .lines()
                .filter(|l| l.starts_with("ipa_controller_prometheus_query_duration_seconds_sum"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            println!("  Prometheus time so far (all cycles, queries run concurrently): {prom_seconds:.2} s");
            let status = ipas
                .get(&format!("bench-{n}"))
                .await?
                .status
                .unwrap_or_default();
            println!(
                "  status: targets {} — {}",
                status.targets, status.last_decision
            );
        }
        Ok(())
    }
    .await;
    // The controller's own memory: the `ipa controller` binary, alone in its process, reconciling the three
    // IPAs above (1,110 targets) until each has run a cycle.
    let process_rss = match &result {
        Ok(()) => controller_process_rss(&ipas).await,
        Err(_) => Ok(None),
    };

    let build = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    println!("\nscale benchmark ({build}; Recommend mode, built-in recommender, no ingress):");
    println!(
        "{:>8} {:>18} {:>16} {:>12} {:>10}",
        "targets", "prom queries/cycle", "api requests/cycle", "cycle (s)", "test RSS (MiB)"
    );
    for (n, q, k, took, rss) in &rows {
        println!(
            "{n:>8} {q:>18} {k:>16} {:>12.2} {rss:>10.1}",
            took.as_secs_f64()
        );
    }
    match &process_rss {
        Ok(Some((hwm, rss))) => println!(
            "`ipa controller` process ({}) with all three IPAs (1,110 targets): peak RSS {hwm:.1} MiB, RSS {rss:.1} MiB",
            std::env::var("IPA_BIN").unwrap_or_default()
        ),
        Ok(None) => {}
        Err(e) => println!("`ipa controller` process measurement failed: {e}"),
    }
    if std::env::var_os("IPA_BENCH_KEEP").is_some() {
        // For profiling `ipa controller` by hand against the same 1,110 targets (docs/operator.md#scale).
        println!("IPA_BENCH_KEEP is set: namespace {NS} and the extra nodes are left in place");
        result?;
        return process_rss.map(|_| ());
    }
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
    // Leave the bed as we found it: tests that run after this one need a controller-manager that is not still
    // garbage-collecting 1,000 Deployments.
    let cleaned = wait_until(
        "the benchmark namespace to be deleted",
        Duration::from_secs(300),
        async || Ok(namespaces.get_opt(NS).await?.is_none()),
    )
    .await;
    remove_nodes(&client).await;
    result?;
    cleaned?;
    process_rss.map(|_| ())
}

fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}

/// Runs `$IPA_BIN controller` on the benchmark namespace until every IPA has had a new cycle; returns its
/// (peak RSS, RSS) in MiB.
async fn controller_process_rss(ipas: &Api<IPA>) -> TestResult<Option<(f64, f64)>> {
    let bin = env("IPA_BIN")?;
    let before: Vec<(String, Option<String>)> = ipas
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|i| {
            (
                i.metadata.name.clone().unwrap_or_default(),
                i.status.and_then(|s| s.last_reconcile_time),
            )
        })
        .collect();
    let mut child = tokio::process::Command::new(bin)
        .args(["controller", "--namespace", NS, "--rate-window", "30s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("controller exited at once")?;
    let waited = wait_until(
        "a cycle of every IPA by the controller process",
        Duration::from_secs(150),
        async || {
            let now = ipas.list(&ListParams::default()).await?.items;
            Ok(before.iter().all(|(name, t)| {
                now.iter().any(|i| {
                    i.metadata.name.as_deref() == Some(name.as_str())
                        && i.status
                            .as_ref()
                            .and_then(|s| s.last_reconcile_time.clone())
                            != *t
                })
            }))
        },
    )
    .await;
    let figures = proc_status_mib(pid, "VmHWM:").zip(proc_status_mib(pid, "VmRSS:"));
    let _ = child.kill().await;
    waited?;
    Ok(figures)
}
