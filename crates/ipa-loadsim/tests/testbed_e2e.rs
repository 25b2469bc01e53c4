//! End-to-end test of the test bed itself (`make testbed-up` first; `make test` does it): the seed's test
//! application is created the way its article does, its pods run on KWOK's fake nodes, every PromQL query the
//! seed's controller sends returns data for it, a load step through the load simulator shows in CPU and request
//! rate within three scrape intervals, and scaling changes the pod count, the per-pod CPU split and
//! `kube_deployment_spec_replicas`.

use std::time::{Duration, Instant};

use ipa_sim::model::AppModel;
use ipa_test_support::TestResult;
use ipa_test_support::bed::{TestBed, scrape_interval};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

const NAMESPACE: &str = "ipaapp";
const DEPLOYMENT: &str = "testapp";
const INGRESS: &str = "testappingress";
const POD_SELECTOR: &str = r#"namespace="ipaapp",pod=~"testapp-.*""#;

/// How often these tests poll the bed: a load step must show within three 2 s scrape intervals.
const POLL: Duration = Duration::from_millis(250);

async fn running_pods(bed: &TestBed) -> TestResult<Vec<String>> {
    bed.running_pods(NAMESPACE, "app=testapp").await
}

/// The article's commands: `kubectl create namespace ipaapp`, `kubectl create deployment testapp
/// --image=shafinhasnat/cpuload --replicas=1 --port=8080`, `kubectl expose ... --name=testappsvc --port=8001
/// --target-port=8080`, `kubectl create ingress testappingress --class=nginx --rule=cpuload.shafinhasnat.me/*=...:8001`.
/// (The article exposes and routes to a `cpuload` Service that its own commands never create; here the Ingress
/// routes to `testappsvc`, which is what the article means.)
async fn create_test_app(bed: &TestBed) -> TestResult {
    bed.create_namespace(NAMESPACE).await?;
    bed.create_app(NAMESPACE, DEPLOYMENT, None, Some(INGRESS))
        .await
}

/// Waits until `replicas` pods run, `kube_deployment_spec_replicas` says so, and Prometheus has CPU series for
/// exactly those pods, each near `expected_cores` (the model's share of the load); returns the per-pod cores.
async fn wait_for_split(
    bed: &TestBed,
    replicas: usize,
    expected_cores: f64,
) -> TestResult<Vec<f64>> {
    bed.wait_for(
        &format!("{replicas} running pods"),
        Duration::from_secs(180),
        || async {
            let pods = running_pods(bed).await?;
            Ok(if pods.len() == replicas {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            })
        },
    )
    .await?;
    let spec = format!(
        r#"kube_deployment_spec_replicas{{namespace="{NAMESPACE}",deployment="{DEPLOYMENT}"}}"#
    );
    bed.wait_for(
        "kube_deployment_spec_replicas to follow",
        Duration::from_secs(30),
        || async {
            let samples = bed.query(&spec).await?;
            Ok(match samples.as_slice() {
                [(_, v)] if *v == replicas as f64 => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    let cpu = format!("irate(container_cpu_usage_seconds_total{{{POD_SELECTOR}}}[1m])");
    bed.wait_for(
        &format!("CPU split over {replicas} pods"),
        Duration::from_secs(90),
        || async {
            let running = running_pods(bed).await?;
            let samples = bed.query(&cpu).await?;
            let per_pod: Vec<f64> = samples
                .iter()
                .filter(|(labels, _)| labels.get("pod").is_some_and(|p| running.contains(p)))
                .map(|(_, v)| *v)
                .collect();
            let near = |v: f64| (v - expected_cores).abs() <= 0.1 * expected_cores;
            Ok(
                if per_pod.len() == replicas
                    && samples.len() == replicas
                    && per_pod.iter().all(|v| near(*v))
                {
                    Ok(per_pod)
                } else {
                    Err(format!(
                        "expected {replicas} × {expected_cores:.3} cores, got {samples:?}"
                    ))
                },
            )
        },
    )
    .await
}

async fn scenario(bed: &TestBed) -> TestResult {
    let model = AppModel::default();
    let scrape = scrape_interval()?;
    create_test_app(bed).await?;
    bed.wait_for(
        "the test app's pod to run",
        Duration::from_secs(180),
        || async {
            let pods = running_pods(bed).await?;
            Ok(if pods.len() == 1 {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            })
        },
    )
    .await?;

    // A base load; the Ingress is found through the Service (not given).
    let base_rps = 10.0;
    let answer = bed
        .put_load(json!({"namespace": NAMESPACE, "deployment": DEPLOYMENT, "rps": base_rps}))
        .await?;
    assert_eq!(answer["current_rps"], json!(base_rps), "{answer}");

    // Every query the seed's controller sends returns data for the app.
    // The seed controller's queries, verbatim (internal/agent/agent.go: range queries over the last 5 minutes,
    // step 60 s, pods listed by name), each with data for the app.
    let pods = running_pods(bed).await?.join("|");
    let seed_queries = [
        format!(
            r#"kube_deployment_spec_replicas{{deployment="{DEPLOYMENT}", namespace="{NAMESPACE}"}}"#
        ),
        format!(
            r#"rate(container_cpu_usage_seconds_total{{pod=~"{pods}", namespace="{NAMESPACE}"}}[2m])"#
        ),
        format!(r#"avg(container_memory_usage_bytes{{pod=~"{pods}", namespace="{NAMESPACE}"}})"#),
        "node_memory_MemAvailable_bytes".to_owned(),
        format!(r#"sum(rate(nginx_ingress_controller_requests{{ingress="{INGRESS}"}}[2m]))"#),
    ];
    for q in &seed_queries {
        bed.wait_for(
            &format!("data for {q}"),
            Duration::from_secs(60),
            || async {
                Ok(if bed.query_range_5m(q).await? == 0 {
                    Err("empty".to_owned())
                } else {
                    Ok(())
                })
            },
        )
        .await?;
    }
    // And what IPA itself reads beyond the seed (see ipa-controller's promql.rs).
    let more_queries = [
        format!(
            r#"kube_deployment_status_replicas{{namespace="{NAMESPACE}",deployment="{DEPLOYMENT}"}}"#
        ),
        format!("container_memory_working_set_bytes{{{POD_SELECTOR}}}"),
        format!(r#"kube_pod_container_status_restarts_total{{{POD_SELECTOR}}}"#),
    ];
    for q in &more_queries {
        bed.wait_for(
            &format!("data for {q}"),
            Duration::from_secs(60),
            || async {
                Ok(if bed.query(q).await?.is_empty() {
                    Err("empty".to_owned())
                } else {
                    Ok(())
                })
            },
        )
        .await?;
    }
    // One node_memory_MemAvailable_bytes series per node the API has (other tests may add nodes).
    let node_api = Api::<Node>::all(bed.client.clone());
    bed.wait_for(
        "a free-memory series per node",
        Duration::from_secs(30),
        || async {
            let mut in_api: Vec<String> = node_api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect();
            let mut in_prometheus: Vec<String> = bed
                .query("node_memory_MemAvailable_bytes")
                .await?
                .into_iter()
                .filter_map(|(labels, _)| labels.get("node").cloned())
                .collect();
            in_api.sort();
            in_prometheus.sort();
            Ok(if !in_api.is_empty() && in_api == in_prometheus {
                Ok(())
            } else {
                Err(format!("API {in_api:?}, Prometheus {in_prometheus:?}"))
            })
        },
    )
    .await?;

    // Steady at the base load (the pod serves once past its start-up delay).
    let cpu_irate = format!("sum(irate(container_cpu_usage_seconds_total{{{POD_SELECTOR}}}[1m]))");
    let requests_irate = format!(
        r#"sum(irate(nginx_ingress_controller_requests{{namespace="{NAMESPACE}",ingress="{INGRESS}",status="200"}}[1m]))"#
    );
    let base_cores = model.cpu_demand_cores(base_rps);
    bed.wait_for("CPU at the base load", Duration::from_secs(60), || async {
        let cpu = bed.query(&cpu_irate).await?;
        Ok(match cpu.as_slice() {
            [(_, v)] if (v - base_cores).abs() < 0.1 * base_cores => Ok(()),
            other => Err(format!("{other:?}, want {base_cores}")),
        })
    })
    .await?;

    // The load step shows in CPU and request rate within three scrape intervals.
    let step_rps = 60.0;
    let step_cores = model.cpu_demand_cores(step_rps);
    bed.put_load(json!({"namespace": NAMESPACE, "deployment": DEPLOYMENT, "rps": step_rps, "ingress": INGRESS}))
        .await?;
    let stepped = Instant::now();
    let budget = scrape * 3;
    bed.wait_for(
        "the load step in CPU and request rate",
        budget + Duration::from_secs(1),
        || async {
            let cpu = bed.query(&cpu_irate).await?;
            let requests = bed.query(&requests_irate).await?;
            let cpu_up = cpu
                .first()
                .is_some_and(|(_, v)| *v > (base_cores + step_cores) / 2.0);
            let requests_up = requests
                .first()
                .is_some_and(|(_, v)| *v > (base_rps + step_rps) / 2.0);
            Ok(if cpu_up && requests_up {
                Ok(())
            } else {
                Err(format!("cpu {cpu:?} requests {requests:?}"))
            })
        },
    )
    .await?;
    let took = stepped.elapsed();
    println!(
        "load step visible after {took:?} (scrape interval {:?})",
        scrape
    );
    assert!(
        took <= budget + Duration::from_millis(500),
        "step took {took:?} > 3 scrape intervals"
    );

    // Scaling out splits the load; scaling back concentrates it; kube_deployment_spec_replicas follows.
    let single = wait_for_split(bed, 1, step_cores).await?;
    bed.scale(NAMESPACE, DEPLOYMENT, 3).await?;
    let three = wait_for_split(bed, 3, model.cpu_demand_cores(step_rps / 3.0)).await?;
    println!("per-pod CPU: 1 pod {single:?}, 3 pods {three:?}");
    assert!(
        three.iter().all(|v| *v < single[0] / 2.0),
        "the load is split: {single:?} vs {three:?}"
    );
    bed.scale(NAMESPACE, DEPLOYMENT, 2).await?;
    wait_for_split(bed, 2, model.cpu_demand_cores(step_rps / 2.0)).await?;

    let status: Value = bed
        .http
        .get(format!("{}/load", bed.loadsim))
        .send()
        .await?
        .json()
        .await?;
    let target = status
        .as_array()
        .and_then(|targets| {
            targets
                .iter()
                .find(|t| t["namespace"] == NAMESPACE && t["deployment"] == DEPLOYMENT)
        })
        .ok_or_else(|| format!("GET /load lacks the target: {status}"))?;
    assert_eq!(target["status"]["serving_pods"], json!(2), "{target}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn testbed_serves_the_seed_test_app() -> TestResult {
    let bed = TestBed::connect(POLL).await?;
    bed.delete_namespace(NAMESPACE).await?;
    let outcome = scenario(&bed).await;
    // Clean up whatever happened: no load, no app.
    let reset = bed.delete_load(NAMESPACE, DEPLOYMENT).await;
    let deleted = bed.delete_namespace(NAMESPACE).await;
    outcome?;
    reset?;
    deleted
}

const OOM_NAMESPACE: &str = "loadsim-oom";

/// A pod whose working set passes its memory limit is OOM-killed the way a node reports it: a Warning Event
/// `OOMKilling`, and a restart with `lastState.terminated.reason = OOMKilled` that kube-state-metrics exports.
async fn oom_scenario(bed: &TestBed) -> TestResult {
    let pp = PostParams::default();
    bed.create_namespace(OOM_NAMESPACE).await?;
    let deployment = json!({
        "metadata": {"name": "mem"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "mem"}},
            "template": {
                "metadata": {"labels": {"app": "mem"}},
                "spec": {"containers": [{"name": "app", "image": "app",
                                          "resources": {"limits": {"cpu": "1", "memory": "80Mi"}}}]},
            },
        },
    });
    Api::<Deployment>::namespaced(bed.client.clone(), OOM_NAMESPACE)
        .create(&pp, &serde_json::from_value(deployment)?)
        .await?;
    let pod = bed
        .wait_for("the pod to run", Duration::from_secs(60), || async {
            let pods = bed.running_pods(OOM_NAMESPACE, "app=mem").await?;
            Ok(match pods.as_slice() {
                [one] => Ok(one.clone()),
                other => Err(format!("{other:?}")),
            })
        })
        .await?;
    // The model's working set at 100 req/s is 64 MiB + 50 MiB > 80 MiB.
    bed.put_load(json!({"namespace": OOM_NAMESPACE, "deployment": "mem", "rps": 100}))
        .await?;

    let events =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(bed.client.clone(), OOM_NAMESPACE);
    bed.wait_for(
        "an OOMKilling event on the pod",
        Duration::from_secs(30),
        || async {
            // As the seed's controller lists them: by involvedObject.name.
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
                .await?;
            Ok(
                if list.items.iter().any(|e| {
                    e.reason.as_deref() == Some("OOMKilling")
                        && e.type_.as_deref() == Some("Warning")
                        && e.involved_object.name.as_deref() == Some(pod.as_str())
                }) {
                    Ok(())
                } else {
                    Err(format!("{} events, none OOMKilling", list.items.len()))
                },
            )
        },
    )
    .await?;
    let pods = Api::<Pod>::namespaced(bed.client.clone(), OOM_NAMESPACE);
    let status = pods
        .get_status(&pod)
        .await?
        .status
        .ok_or("pod without status")?;
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "app")
        .ok_or("no status for the container")?;
    assert!(container.restart_count >= 1, "{container:?}");
    let reason = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.reason.as_deref());
    assert_eq!(reason, Some("OOMKilled"), "{container:?}");

    for q in [
        format!(
            r#"kube_pod_container_status_restarts_total{{namespace="{OOM_NAMESPACE}",pod="{pod}"}} >= 1"#
        ),
        format!(
            r#"kube_pod_container_status_last_terminated_reason{{namespace="{OOM_NAMESPACE}",pod="{pod}",reason="OOMKilled"}} == 1"#
        ),
        format!(
            r#"loadsim_container_restarts_total{{namespace="{OOM_NAMESPACE}",pod="{pod}"}} >= 1"#
        ),
    ] {
        bed.wait_for(
            &format!("data for {q}"),
            Duration::from_secs(30),
            || async {
                let samples = bed.query(&q).await?;
                Ok(if samples.is_empty() {
                    Err("empty".to_owned())
                } else {
                    Ok(())
                })
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test bed (make test)"]
async fn testbed_reports_oom_kills() -> TestResult {
    let bed = TestBed::connect(POLL).await?;
    bed.delete_namespace(OOM_NAMESPACE).await?;
    let outcome = oom_scenario(&bed).await;
    let reset = bed.delete_load(OOM_NAMESPACE, "mem").await;
    let deleted = bed.delete_namespace(OOM_NAMESPACE).await;
    outcome?;
    reset?;
    deleted
}
