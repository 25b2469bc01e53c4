//! The test-bed harness: a connection to the bed `make testbed-up` started, described by `testbed/.env`
//! (`set -a; source testbed/.env; set +a`), and the operations both end-to-end suites perform on it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::TestResult;

/// One sample of an instant-query result: labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// A variable of `testbed/.env`; the error says how to get it, since a missing bed is the usual cause.
pub fn env(name: &str) -> TestResult<String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: run `make testbed-up` and source testbed/.env").into()
    })
}

/// The bed's Prometheus scrape interval (`TESTBED_SCRAPE_INTERVAL`, 2 s unless the bed was started otherwise).
pub fn scrape_interval() -> TestResult<Duration> {
    let scrape = std::env::var("TESTBED_SCRAPE_INTERVAL").unwrap_or_else(|_| "2s".into());
    let seconds: f64 = scrape.trim_end_matches('s').parse()?;
    Ok(Duration::from_secs_f64(seconds))
}

/// The running test bed: its API server, Prometheus and load simulator.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct TestBed {
    pub client: Client,
    pub http: reqwest::Client,
    pub prometheus: String,
    pub loadsim: String,
    /// How often the `wait_for*` helpers poll: each suite keeps the pace its timings were measured with.
    poll_every: Duration,
}

impl TestBed {
    /// Connects with the environment of `testbed/.env`; fails (the tests do not skip) when it is missing.
    pub async fn connect(poll_every: Duration) -> TestResult<Self> {
        env("KUBECONFIG")?;
        Ok(Self {
            client: Client::try_default().await?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            prometheus: env("PROMETHEUS_URL")?,
            loadsim: env("LOADSIM_URL")?,
            poll_every,
        })
    }

    /// Polls `check` until it returns `Ok(Ok(value))` or `timeout` passes; the error names `what` and the
    /// last state (`Ok(Err(state))`) or error seen.
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> TestResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = TestResult<Result<T, String>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check().await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(state)) => state,
                Err(err) => format!("error: {err}"),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last: {last}"
                )
                .into());
            }
            tokio::time::sleep(self.poll_every).await;
        }
    }

    /// [`Self::wait_for`] for a check that answers `Some(value)` once done and `None` until then.
    pub async fn wait_for_some<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> TestResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = TestResult<Option<T>>>,
    {
        self.wait_for(what, timeout, || {
            let pending = check();
            async move { Ok(pending.await?.ok_or_else(|| "not yet".to_owned())) }
        })
        .await
    }

    /// An instant query's samples.
    pub async fn query(&self, promql: &str) -> TestResult<Vec<Sample>> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/query", self.prometheus))
            .query(&[("query", promql)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let results = body["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("bad answer to {promql}: {body}"))?;
        let mut samples = Vec::new();
        for r in results {
            let labels = serde_json::from_value(r["metric"].clone())?;
            let value: f64 = r["value"][1].as_str().ok_or("no value")?.parse()?;
            samples.push((labels, value));
        }
        Ok(samples)
    }

    /// The first sample's value of an instant query, if there is one.
    pub async fn first_value(&self, promql: &str) -> TestResult<Option<f64>> {
        Ok(self.query(promql).await?.first().map(|(_, value)| *value))
    }

    /// Runs a range query over the last five minutes at a 60 s step, as the seed's controller does; returns the
    /// number of series with at least one point.
    pub async fn query_range_5m(&self, promql: &str) -> TestResult<usize> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let (start, end) = ((end - 300).to_string(), end.to_string());
        let body: Value = self
            .http
            .get(format!("{}/api/v1/query_range", self.prometheus))
            .query(&[
                ("query", promql),
                ("start", &start),
                ("end", &end),
                ("step", "60s"),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let series = body["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("bad answer to {promql}: {body}"))?;
        Ok(series
            .iter()
            .filter(|s| s["values"].as_array().is_some_and(|v| !v.is_empty()))
            .count())
    }

    /// Waits until Prometheus shows `app`'s pods using more than `cores` (the app has been serving for a while
    /// before the IPA arrives, as in a real cluster, so the first sizing sees real usage).
    pub async fn wait_for_cpu(&self, ns: &str, app: &str, cores: f64) -> TestResult {
        let cpu = format!(
            "sum(rate(container_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=~\"{app}-.*\"}}[10s]))"
        );
        self.wait_for_some(
            "base-load CPU in Prometheus",
            Duration::from_secs(90),
            || async { Ok(self.first_value(&cpu).await?.filter(|v| *v > cores)) },
        )
        .await
        .map(drop)
    }

    /// `PUT /load` on the load simulator with `body`; returns its answer.
    pub async fn put_load(&self, body: Value) -> TestResult<Value> {
        let response = self
            .http
            .put(format!("{}/load", self.loadsim))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("PUT /load {body}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Offers `rps` to `deployment`, through `ingress` when named.
    pub async fn load(
        &self,
        ns: &str,
        deployment: &str,
        rps: f64,
        ingress: Option<&str>,
    ) -> TestResult {
        let mut body = json!({"namespace": ns, "deployment": deployment, "rps": rps});
        if let Some(i) = ingress {
            body["ingress"] = json!(i);
        }
        self.put_load(body).await.map(drop)
    }

    /// Stops the load on `deployment`.
    pub async fn delete_load(&self, ns: &str, deployment: &str) -> TestResult {
        self.http
            .delete(format!("{}/load", self.loadsim))
            .query(&[("namespace", ns), ("deployment", deployment)])
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn create_namespace(&self, ns: &str) -> TestResult {
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        Ok(())
    }

    /// Deletes the namespace if a previous run left it (whatever the deletion answers), then creates it empty.
    pub async fn fresh_namespace(&self, ns: &str) -> TestResult {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
        self.wait_until_gone(&namespaces, ns, "old namespace gone")
            .await?;
        self.create_namespace(ns).await
    }

    /// Deletes the namespace, if it exists, in the foreground (its contents first) and waits until it is gone.
    pub async fn delete_namespace(&self, ns: &str) -> TestResult {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if namespaces.get_opt(ns).await?.is_none() {
            return Ok(());
        }
        namespaces.delete(ns, &DeleteParams::foreground()).await?;
        self.wait_until_gone(&namespaces, ns, "namespace deletion")
            .await
    }

    async fn wait_until_gone(
        &self,
        namespaces: &Api<Namespace>,
        ns: &str,
        what: &str,
    ) -> TestResult {
        self.wait_for(what, Duration::from_secs(90), || async {
            Ok(match namespaces.get_opt(ns).await? {
                None => Ok(()),
                Some(_) => Err("still there".to_owned()),
            })
        })
        .await
    }

    /// Best effort, so a test's own outcome is what it reports: stops the load on `deployments` and deletes the
    /// namespace without waiting.
    pub async fn cleanup(&self, ns: &str, deployments: &[&str]) {
        for d in deployments {
            let _ = self.delete_load(ns, d).await;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }

    /// A Deployment like the seed's test app (`kubectl create deployment testapp --image=shafinhasnat/cpuload
    /// --port=8080`, one replica), optionally with resources; its Service `<name>svc` (`kubectl expose ...
    /// --port=8001 --target-port=8080`); and, when named, an Ingress to it (`kubectl create ingress ...
    /// --class=nginx --rule=cpuload.shafinhasnat.me/*=<name>svc:8001`).
    pub async fn create_app(
        &self,
        ns: &str,
        name: &str,
        resources: Option<Value>,
        ingress: Option<&str>,
    ) -> TestResult {
        let mut container = json!({"name": "cpuload", "image": "shafinhasnat/cpuload", "ports": [{"containerPort": 8080}]});
        if let Some(r) = resources {
            container["resources"] = r;
        }
        let deployment = json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}},
        });
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(deployment)?)
            .await?;
        let service = json!({"metadata": {"name": format!("{name}svc")},
            "spec": {"type": "ClusterIP", "selector": {"app": name},
                     "ports": [{"port": 8001, "targetPort": 8080, "protocol": "TCP"}]}});
        Api::<Service>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(service)?)
            .await?;
        if let Some(ingress) = ingress {
            let ing = json!({"metadata": {"name": ingress},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "cpuload.shafinhasnat.me", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": format!("{name}svc"), "port": {"number": 8001}}}}]}}]}});
            Api::<Ingress>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), &serde_json::from_value(ing)?)
                .await?;
        }
        Ok(())
    }

    /// Sets `spec.replicas` through the scale subresource, as `kubectl scale` does.
    pub async fn scale(&self, ns: &str, deployment: &str, replicas: i32) -> TestResult {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch_scale(
                deployment,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
        Ok(())
    }

    pub async fn deployment(&self, ns: &str, name: &str) -> TestResult<Deployment> {
        Ok(Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get(name)
            .await?)
    }

    /// The Deployment's `spec.replicas` (1 when unset, as the API defaults it).
    pub async fn replicas(&self, ns: &str, name: &str) -> TestResult<i32> {
        Ok(self.deployment(ns, name).await?.spec.replicas.unwrap_or(1))
    }

    /// The pods matching the label `selector`, as the API shows them.
    pub async fn pods(&self, ns: &str, selector: &str) -> TestResult<Vec<Pod>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(selector))
            .await?;
        Ok(pods.items)
    }

    /// Names of the pods matching `selector` that run and are not being deleted.
    pub async fn running_pods(&self, ns: &str, selector: &str) -> TestResult<Vec<String>> {
        Ok(self
            .pods(ns, selector)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name)
            .collect())
    }
}
