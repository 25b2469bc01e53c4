//! Scenario tests' harness: one IPA over a fake API server, a fake Prometheus and (optionally) a fake agent,
//! driven one cycle at a time with the controller's own `reconcile::cycle`.
#![allow(dead_code)] // each test binary uses part of it

pub mod fake_api;
pub mod fake_http;

use std::sync::Arc;
use std::time::Duration;

use ipa_controller::ask::agent::AgentClient;
use ipa_controller::metrics::Metrics;
use ipa_controller::reconcile::{self, Context, MANAGER, Settings};
use ipa_controller::urls::UrlPolicy;
use ipa_controller::{Error, IPA, IpaStatus};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

pub use fake_api::FakeApi;
pub use fake_http::Workload;

pub const NS: &str = "apps";

/// One IPA and the fakes around it.
pub struct Scenario {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    pub ipa: IPA,
}

/// The flags' defaults of `ipa controller`.
pub fn settings() -> Settings {
    Settings {
        stats_window: 300,
        history: 1800,
        rate_window: 120,
        agent_concurrency: 8,
        events_window: 900,
        prometheus_timeout: Duration::from_secs(5),
        allow_cross_namespace: false,
        allow_demand_query: true,
    }
}

/// An IPA in [`NS`] from the `spec.metadata` given as JSON.
pub fn ipa(metadata: Value) -> Result<IPA, serde_json::Error> {
    let mut ipa: IPA = serde_json::from_value(json!({
        "apiVersion": "ipa.shafinhasnat.me/v1alpha1", "kind": "IPA",
        "metadata": {"name": "web-ipa", "namespace": NS, "generation": 1,
            "creationTimestamp": "2026-06-01T00:00:00Z"},
        "spec": {"metadata": metadata}
    }))?;
    ipa.metadata.namespace = Some(NS.into());
    Ok(ipa)
}

impl Scenario {
    pub fn new(api: FakeApi, ipa: IPA) -> Result<Self, Error> {
        let client = api.client();
        let metrics = Arc::new(Metrics::default());
        let http = ipa_controller::http_client()?;
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: None,
        };
        let ctx = Context {
            absent_kinds: Arc::default(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            agent: AgentClient::new(http.clone(), Duration::from_secs(30), metrics.clone()),
            http,
            metrics,
            urls: UrlPolicy::new(&[], None).map_err(Error::Config)?,
            advisories: Arc::default(),
            ca_clients: Arc::default(),
            install_token: None,
            webhook: None,
            settings: settings(),
        };
        Ok(Self {
            api,
            ctx: Arc::new(ctx),
            ipa,
        })
    }

    /// The same scenario with the controller's settings changed (e.g. a flag off).
    pub fn with_settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            change(&mut ctx.settings);
        }
        self
    }

    /// Runs one cycle at `now`, then hands the IPA the status it wrote (as the next watch event would).
    pub async fn cycle(&mut self, now: i64) -> Result<IpaStatus, Error> {
        reconcile::cycle(&self.ipa, &self.ctx, now).await?;
        let written = self.api.status(NS, "web-ipa");
        let status: IpaStatus =
            serde_json::from_value(written).map_err(|e| Error::Config(e.to_string()))?;
        self.ipa.status = Some(status.clone());
        Ok(status)
    }
}

/// A workload of `pods` pods of Deployment `web` using `cores` each.
pub fn workload(pods: u32, cores: f64) -> Workload {
    Workload {
        namespace: NS.into(),
        pods: (0..pods).map(|i| format!("web-5d8f7c9b4-p{i}")).collect(),
        cores,
        memory: 64.0 * 1024.0 * 1024.0,
    }
}
