//! `ipa bench --advisor agent:URL`: the simulator's advisory loop asks a live agent (the test bed's llama-server
//! through `ipa agent`, or any agent) with the controller's own client, blocking on a small runtime of its own.
//! Slow — one LLM answer per simulated minute — so for short runs (`--limit-hours`).

use std::sync::Arc;
use std::time::Duration;

use ipa_controller::ask::agent::AgentClient;
use ipa_core::{MetricsSnapshot, Policy, RecommendRequest, Recommendation, ResolvedPolicy};
use ipa_sim::policy::Advisor;

/// How long one answer may take (Gemma 270M answers in ~10 s on two cores; a hosted LLM in up to 30 s).
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct AgentAdvisor {
    runtime: tokio::runtime::Runtime,
    client: AgentClient,
    url: String,
    token: Option<String>,
}

/// The advisor for `url`; the agent's token, if it needs one, comes from `IPA_AGENT_TOKEN`.
pub fn make(url: &str) -> Result<Box<dyn Advisor>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let http = ipa_controller::http_client().map_err(|e| e.to_string())?;
    let token = std::env::var("IPA_AGENT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    Ok(Box::new(AgentAdvisor {
        runtime,
        client: AgentClient::new(http, TIMEOUT, Arc::default()),
        url: url.to_string(),
        token,
    }))
}

impl Advisor for AgentAdvisor {
    fn name(&self) -> &str {
        "agent"
    }

    fn advise(
        &mut self,
        snapshot: &MetricsSnapshot,
        _policy: &ResolvedPolicy,
    ) -> Result<Option<Recommendation>, String> {
        let request = RecommendRequest {
            snapshot: snapshot.clone(),
            policy: Policy::default(),
        };
        self.runtime
            .block_on(
                self.client
                    .recommend(&self.url, self.token.as_deref(), &request),
            )
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
